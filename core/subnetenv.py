"""subnet.env (`/run/flannel/subnet.env`): flannel's exact format, written atomically.

    [FLANNEL_NETWORK=10.5.0.0/16]              IPv4 enabled
    [FLANNEL_SUBNET=10.5.52.1/24]
    [FLANNEL_IPV6_NETWORK=fd00:10:5::/48]      IPv6 enabled
    [FLANNEL_IPV6_SUBNET=fd00:10:5:52::1/64]
    FLANNEL_MTU=1450
    FLANNEL_IPMASQ=false

flannel's order; only the enabled families are written (at least one).
FLANNEL_SUBNET is the subnet's .1 address (the bridge gateway) with its prefix.
`SubnetEnv.network`/`.subnet` are the IPv4 pair and raise SubnetEnvError on an
IPv6-only file (code that may meet one reads `ipv4_network`/`ipv4_subnet`).
Stdlib only: the CNI plugin imports this module on its fallback path, where
start-up time matters. The parser is strict about values (errors name the
variable) and tolerant about form: CRLF, surrounding whitespace, comments,
`export `, quotes; unknown variables are ignored.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

DEFAULT_PATH = "/run/flannel/subnet.env"
_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool, as the CNI uses
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class SubnetEnvError(ValueError):
    """subnet.env is missing a variable or has a bad value; the message names it."""


@dataclass(frozen=True)
class SubnetEnv:
    ipv4_network: IPv4Network | None  # None (with ipv4_subnet): IPv6-only
    ipv4_subnet: IPv4Interface | None  # the .1 address with the subnet's prefix length
    mtu: int
    ipmasq: bool
    ipv6_network: IPv6Network | None = None
    ipv6_subnet: IPv6Interface | None = None

    @property
    def network(self) -> IPv4Network:
        """FLANNEL_NETWORK; SubnetEnvError on an IPv6-only file (see `ipv4_network`)."""
        if self.ipv4_network is None:
            raise SubnetEnvError("subnet.env is IPv6-only: it has no FLANNEL_NETWORK")
        return self.ipv4_network

    @property
    def subnet(self) -> IPv4Interface:
        """FLANNEL_SUBNET; SubnetEnvError on an IPv6-only file (see `ipv4_subnet`)."""
        if self.ipv4_subnet is None:
            raise SubnetEnvError("subnet.env is IPv6-only: it has no FLANNEL_SUBNET")
        return self.ipv4_subnet

    @classmethod
    def for_lease(cls, network: IPv4Network | None, subnet: IPv4Network | None, mtu: int,
                  ipmasq: bool, ipv6_network: IPv6Network | None = None,
                  ipv6_subnet: IPv6Network | None = None) -> SubnetEnv:
        """Build from the leased subnets: the gateway is the first address after the network.
        A family is written only with both its network and its subnet."""
        v4 = v6 = None
        if network is not None and subnet is not None:
            v4 = IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")
        if ipv6_network is not None and ipv6_subnet is not None:
            v6 = IPv6Interface(f"{ipv6_subnet.network_address + 1}/{ipv6_subnet.prefixlen}")
        if v4 is None and v6 is None:
            raise SubnetEnvError("subnet.env needs an IPv4 or an IPv6 network and subnet")
        return cls(network if v4 else None, v4, mtu, ipmasq, ipv6_network if v6 else None, v6)


def render_subnet_env(env: SubnetEnv) -> str:
    lines = []
    if env.ipv4_network is not None and env.ipv4_subnet is not None:
        lines += [f"FLANNEL_NETWORK={env.ipv4_network}", f"FLANNEL_SUBNET={env.ipv4_subnet}"]
    if env.ipv6_network is not None and env.ipv6_subnet is not None:
        lines += [f"FLANNEL_IPV6_NETWORK={env.ipv6_network}",
                  f"FLANNEL_IPV6_SUBNET={env.ipv6_subnet}"]
    lines += [f"FLANNEL_MTU={env.mtu}", f"FLANNEL_IPMASQ={'true' if env.ipmasq else 'false'}"]
    return "".join(line + "\n" for line in lines)


def parse_env_lines(text: str) -> dict[str, str]:
    """`KEY=value` lines to a dict; SubnetEnvError on a malformed line or a repeated key."""
    found: dict[str, str] = {}
    where: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise SubnetEnvError(f"subnet.env line {number}: {line[:60]!r} is not KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:  # a trailing comment after an unquoted value
            value = value.split(" #", 1)[0].rstrip()
        if key in found:
            raise SubnetEnvError(f"subnet.env: {key} is set twice (lines {where[key]} and "
                                 f"{number}); keep one")
        found[key], where[key] = value, number
    return found


def parse_subnet_env(text: str) -> SubnetEnv:
    values = parse_env_lines(text)

    def need(key: str) -> str:
        if key not in values:
            raise SubnetEnvError(f"subnet.env: {key} is missing (is flanneld running and "
                                 "has it acquired a subnet?)")
        return values[key]

    has4 = "FLANNEL_NETWORK" in values or "FLANNEL_SUBNET" in values
    has6 = "FLANNEL_IPV6_NETWORK" in values or "FLANNEL_IPV6_SUBNET" in values
    network = subnet = None
    if has4 or not has6:  # IPv4 (a file with neither family names the IPv4 variables)
        network = _parse(IPv4Network, "FLANNEL_NETWORK", need("FLANNEL_NETWORK"),
                         "10.5.0.0/16")
        subnet = _parse(IPv4Interface, "FLANNEL_SUBNET", need("FLANNEL_SUBNET"),
                        "10.5.52.1/24")
        if not subnet.network.subnet_of(network):
            raise SubnetEnvError(f"subnet.env: FLANNEL_SUBNET {subnet} is not inside "
                                 f"FLANNEL_NETWORK {network}")
    raw_mtu = need("FLANNEL_MTU")
    if not raw_mtu.isdigit() or not raw_mtu.isascii() or not 68 <= int(raw_mtu) <= 65535:
        raise SubnetEnvError(f"subnet.env: FLANNEL_MTU {raw_mtu!r} must be an integer "
                             "68..65535")
    raw_masq = need("FLANNEL_IPMASQ")
    if raw_masq not in _TRUE + _FALSE:
        raise SubnetEnvError(f"subnet.env: FLANNEL_IPMASQ {raw_masq!r} must be true or false")

    v6_net = v6_subnet = None
    if ("FLANNEL_IPV6_NETWORK" in values) != ("FLANNEL_IPV6_SUBNET" in values):
        raise SubnetEnvError("subnet.env: FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET must be "
                             "set together (dual stack or IPv6-only) or not at all")
    if "FLANNEL_IPV6_NETWORK" in values:
        v6_net = _parse(IPv6Network, "FLANNEL_IPV6_NETWORK", values["FLANNEL_IPV6_NETWORK"],
                        "fd00:10:5::/48")
        v6_subnet = _parse(IPv6Interface, "FLANNEL_IPV6_SUBNET", values["FLANNEL_IPV6_SUBNET"],
                           "fd00:10:5:52::1/64")
        if not v6_subnet.network.subnet_of(v6_net):
            raise SubnetEnvError(f"subnet.env: FLANNEL_IPV6_SUBNET {v6_subnet} is not inside "
                                 f"FLANNEL_IPV6_NETWORK {v6_net}")
    return SubnetEnv(network, subnet, int(raw_mtu), raw_masq in _TRUE, v6_net, v6_subnet)


def _parse(cls: Callable[[str], T], key: str, raw: str, example: str) -> T:
    if "/" not in raw:
        raise SubnetEnvError(f"subnet.env: {key} {raw!r} needs a prefix length, e.g. {example}")
    try:
        return cls(raw)
    except ValueError as exc:
        raise SubnetEnvError(f"subnet.env: {key} {raw!r} is not valid ({exc}); "
                             f"expected e.g. {example}") from None


def write_subnet_env(path: str | Path, env: SubnetEnv) -> None:
    """Write atomically (temp file, fsync, rename), mode 0644 whatever the umask."""
    write_file_atomic(path, render_subnet_env(env).encode())


def write_file_atomic(path: str | Path, data: bytes, mode: int = 0o644,
                      dir_mode: int = 0o755) -> None:
    target = Path(path)
    if not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, dir_mode)  # mkdir's mode is masked by the umask
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def read_subnet_env(path: str | Path = DEFAULT_PATH) -> SubnetEnv:
    """Read and parse; SubnetEnvError (naming the path) if missing or malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SubnetEnvError(f"{path} does not exist: is flanneld running?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SubnetEnvError(f"{path}: cannot read it: {exc}") from None
    try:
        return parse_subnet_env(text)
    except SubnetEnvError as exc:
        raise SubnetEnvError(f"{path}: {exc}") from None


def read_previous_subnets(path: str | Path = DEFAULT_PATH
                          ) -> tuple[IPv4Network | None, IPv6Network | None]:
    """The subnets a previous run leased (from FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET).

    Lenient, like flannel's start-up: a missing or damaged file just means
    "no previous subnet"; one good variable is used even if others are bad.
    """
    try:
        values = parse_env_lines(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SubnetEnvError):
        return None, None
    v4: IPv4Network | None = None
    v6: IPv6Network | None = None
    try:
        v4 = IPv4Interface(values["FLANNEL_SUBNET"]).network
    except (KeyError, ValueError):
        pass
    try:
        v6 = IPv6Interface(values["FLANNEL_IPV6_SUBNET"]).network
    except (KeyError, ValueError):
        pass
    return v4, v6


def read_previous_subnet(path: str | Path = DEFAULT_PATH) -> IPv4Network | None:
    return read_previous_subnets(path)[0]
