"""ipMasq with nftables: one table of our own, one atomic transaction per change.

    table ip pyflannel-cni {
        map masq { type ipv4_addr : verdict; }
        chain postrouting { type nat hook postrouting priority srcnat; ip saddr vmap @masq }
        chain n<net>-<attachment> {                  # one per attachment
            ip daddr <pod subnet> accept
            ip daddr != 224.0.0.0/4 masquerade
        }
    }

The same rules as the reference bridge's iptables chain (CNI-<hash>), keyed by
the pod address through a verdict map, so a DEL removes exactly its own chain
and element without listing handles. `ip6` is the same shape for IPv6.
Commands go through libnftables (in-process, no exec) when it loads, else
`nft -f -`.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import threading
from collections.abc import Iterable, Sequence

try:
    from _sha256 import sha256  # built in; hashlib would load OpenSSL
except ImportError:  # pragma: no cover (3.12+: _sha2)
    from hashlib import sha256

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

TABLE = "pyflannel-cni"
_MCAST = {4: "224.0.0.0/4", 6: "ff00::/8"}
_FAMILY = {4: "ip", 6: "ip6"}
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}


class NftError(RuntimeError):
    pass


class _Nft:
    """libnftables when available (one context, serialised), else the nft binary."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lib: ctypes.CDLL | None = None
        self.ctx: int | None = None
        try:
            lib = _load_libnftables()
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
                getattr(lib, fn).argtypes = [ctypes.c_void_p]
            for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
                getattr(lib, fn).argtypes = [ctypes.c_void_p]
                getattr(lib, fn).restype = ctypes.c_char_p
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            self.ctx = lib.nft_ctx_new(0)
            lib.nft_ctx_buffer_output(self.ctx)
            lib.nft_ctx_buffer_error(self.ctx)
            self.lib = lib
        except (OSError, AttributeError):
            self.lib = None

    def run(self, script: str, json_out: bool = False) -> str:
        with self.lock:
            if self.lib is None:
                import subprocess
                argv = ["nft", "-j", "-f", "-"] if json_out else ["nft", "-f", "-"]
                proc = subprocess.run(argv, input=script, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise NftError(proc.stderr.strip() or f"nft exited {proc.returncode}")
                return proc.stdout
            self.lib.nft_ctx_output_set_flags(self.ctx, 1 << 4 if json_out else 0)
            rc = self.lib.nft_run_cmd_from_buffer(self.ctx, script.encode())
            out = self.lib.nft_ctx_get_output_buffer(self.ctx) or b""
            err = self.lib.nft_ctx_get_error_buffer(self.ctx) or b""
            if rc != 0:
                raise NftError(err.decode(errors="replace").strip() or f"nft failed ({rc})")
            return out.decode(errors="replace")


def _load_libnftables() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libnftables.so.1")
    except OSError:
        from ctypes.util import find_library  # runs ldconfig: only if the usual name fails
        found = find_library("nftables")
        if found is None:
            raise
        return ctypes.CDLL(found)


_nft: _Nft | None = None


def nft() -> _Nft:
    """The process's nft runner; create it in the host netns (its socket stays there)."""
    global _nft
    if _nft is None:
        _nft = _Nft()
    return _nft


def network_tag(network: str) -> str:
    return "n" + sha256(network.encode()).hexdigest()[:8]


def chain_name(network: str, container_id: str, ifname: str) -> str:
    key = f"{network}\0{container_id}\0{ifname}".encode()
    return f"{network_tag(network)}-{sha256(key).hexdigest()[:16]}"


def _base(version: int) -> list[str]:
    fam = f"{_FAMILY[version]} {TABLE}"
    return [f"add table {fam}",
            f"add map {fam} masq {{ type {_ADDR_TYPE[version]} : verdict ; }}",
            f"add chain {fam} postrouting {{ type nat hook postrouting priority srcnat ; "
            "policy accept ; }",
            f"flush chain {fam} postrouting",
            f"add rule {fam} postrouting {_FAMILY[version]} saddr vmap @masq"]


def add_script(chain: str, network: str, container_id: str,
               addrs: Sequence[tuple[str, str]]) -> str:
    """addrs: (pod ip, pod subnet) pairs. Idempotent: re-adding rewrites the chain."""
    lines: list[str] = []
    # For humans only (the chain name is the key); nft caps comments at 128 characters.
    comment = '"' + f"name: {network} id: {container_id}"[:120] + '"'  # [A-Za-z0-9_.-] only
    for version in sorted({ipaddress.ip_address(ip).version for ip, _ in addrs}):
        fam = f"{_FAMILY[version]} {TABLE}"
        lines += _base(version)
        lines += [f"add chain {fam} {chain}", f"flush chain {fam} {chain}"]
        for ip, subnet in addrs:
            if ipaddress.ip_address(ip).version != version:
                continue
            lines += [f"add rule {fam} {chain} {_FAMILY[version]} daddr {subnet} accept "
                      f"comment {comment}",
                      f"add rule {fam} {chain} {_FAMILY[version]} daddr != {_MCAST[version]} "
                      f"masquerade comment {comment}",
                      f"add element {fam} masq {{ {ip} : jump {chain} }}"]
    return "\n".join(lines) + "\n"


def del_script(chain: str, ips: Iterable[str], with_elements: bool = True) -> str:
    """Idempotent removal: each object is added first, so deleting it cannot fail as missing."""
    lines: list[str] = []
    ips = list(ips)
    present = {ipaddress.ip_address(ip).version for ip in ips} or {4}
    for version in (4, 6):
        mine = [ip for ip in ips if ipaddress.ip_address(ip).version == version]
        fam = f"{_FAMILY[version]} {TABLE}"
        if version not in present:  # an IPv6-only pod has nothing in `ip`, and v.v.
            continue
        lines += [f"add table {fam}", f"add map {fam} masq {{ type {_ADDR_TYPE[version]} : "
                  "verdict ; }", f"add chain {fam} {chain}"]
        if with_elements:
            for ip in mine:
                lines += [f"add element {fam} masq {{ {ip} : jump {chain} }}",
                          f"delete element {fam} masq {{ {ip} }}"]
        lines += [f"flush chain {fam} {chain}", f"delete chain {fam} {chain}"]
    return "\n".join(lines) + "\n"


def setup(chain: str, network: str, container_id: str, addrs: Sequence[tuple[str, str]]) -> None:
    nft().run(add_script(chain, network, container_id, addrs))


def teardown(chain: str, ips: Iterable[str]) -> None:
    ips = list(ips)
    try:
        nft().run(del_script(chain, ips))
    except NftError:
        # An element for one of these addresses points elsewhere (the address now
        # belongs to someone else): leave the map alone, drop only our chain.
        nft().run(del_script(chain, ips, with_elements=False))


def chains_present(chain: str, ips: Iterable[str] = ()) -> bool:
    """CHECK: the attachment's chain holds its masquerade rule in every family it has an
    address of (`ip` and/or `ip6`), and each address jumps to it."""
    ips = list(ips)
    for version in sorted({ipaddress.ip_address(ip).version for ip in ips} or {4}):
        fam = f"{_FAMILY[version]} {TABLE}"
        try:
            rules = nft().run(f"list chain {fam} {chain}\n")
            elements = nft().run(f"list map {fam} masq\n")
        except NftError:
            return False
        if "masquerade" not in rules:
            return False
        for ip in ips:
            if ipaddress.ip_address(ip).version == version and \
                    f"{ip} : jump {chain}" not in elements:
                return False
    return True


def listing(version: int) -> dict[str, Any]:
    """{chain name: [element ips jumping to it]} for every chain of the table."""
    try:
        out = nft().run(f"list table {_FAMILY[version]} {TABLE}\n", json_out=True)
    except NftError:
        return {}
    chains: dict[str, list[str]] = {}
    for item in json.loads(out or "{}").get("nftables", []):
        if "chain" in item:
            chains.setdefault(item["chain"]["name"], [])
        elem_list = item.get("map", {}).get("elem") if "map" in item else None
        for elem in elem_list or []:
            key, verdict = elem
            target = verdict.get("jump", {}).get("target") if isinstance(verdict, dict) else None
            if isinstance(key, str) and target:
                chains.setdefault(target, []).append(key)
    chains.pop("postrouting", None)
    return chains


def collect(network: str, keep: set[str]) -> list[str]:
    """GC: drop this network's chains (and their elements) that are not in `keep`."""
    dropped = []
    prefix = network_tag(network) + "-"
    for version in (4, 6):
        for chain, ips in listing(version).items():
            if chain.startswith(prefix) and chain not in keep:
                fam = f"{_FAMILY[version]} {TABLE}"
                lines = [f"delete element {fam} masq {{ {ip} }}" for ip in ips]
                lines += [f"flush chain {fam} {chain}", f"delete chain {fam} {chain}"]
                nft().run("\n".join(lines) + "\n")
                dropped.append(chain)
    return dropped
