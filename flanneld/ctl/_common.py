"""What flannelctl's subcommands share: flanneld's node options, etcd, and this node's view.

The node options are flanneld's own flag definitions (`flanneld.options.FLAGS`),
read the way flanneld reads them: command line > FLANNELD_* environment >
--config YAML > default, with one more source before the default: the runtime
file that a running flanneld writes (`flanneld.runtime_file`). So on a node
flannelctl needs no flags at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Any, TypeVar

from core.lease import Lease, LeaseAttrs, LeaseError, decode_lease, join_key
from flanneld import options as opts
from flanneld import runtime_file

T = TypeVar("T")
ETCD_FLAGS = ("etcd-endpoints", "etcd-prefix", "etcd-cafile", "etcd-certfile", "etcd-keyfile",
              "etcd-username", "etcd-password")
NODE_FLAGS = ("subnet-file", "state-dir", "healthz-ip", "healthz-port")


def add_options(parser: argparse.ArgumentParser, names: Sequence[str] = ETCD_FLAGS + NODE_FLAGS,
                *, json_flag: bool = True, nested: bool = False) -> None:
    """flanneld's flags `names` (plus --config), each also FLANNELD_<NAME> in the environment.

    `nested`: for a sub-subcommand, whose defaults must not hide the parent's values."""
    group = parser.add_argument_group("node options (as flanneld's; also FLANNELD_* env, "
                                      "--config YAML)")
    for name in (*names, "config"):
        flag = next(f for f in opts.FLAGS if f.name == name)
        default = f"; default {flag.shown_default()}" if flag.shown_default() else ""
        group.add_argument(f"--{name}", dest=f"opt_{flag.attr}", metavar=flag.metavar or None,
                           help=f"{flag.help} (${flag.env}{default})",
                           default=argparse.SUPPRESS if nested else None)
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def options(args: argparse.Namespace, env: dict[str, str] | None = None) -> opts.Options:
    """flanneld's Options: flag > FLANNELD_* env > --config YAML > runtime file > default.

    The runtime file is the one a running flanneld wrote next to its subnet file
    (`/run/flannel/flanneld.json` by default); it is skipped when --config is given."""
    env = dict(os.environ) if env is None else dict(env)
    argv = [f"--{f.name}={getattr(args, 'opt_' + f.attr)}" for f in opts.FLAGS
            if getattr(args, "opt_" + f.attr, None) is not None]
    try:
        first = opts.load_options(argv, env)
        if opts.config_path(argv, env) is None:
            info = _runtime_info(runtime_file.path_for(first.subnet_file))
            if info is not None:
                return opts.load_options(argv, runtime_env(env, argv, info))
        return first
    except opts.OptionsError as exc:
        raise SystemExit(f"flannelctl: {exc}") from None


def runtime_env(env: dict[str, str], argv: Sequence[str],
                info: runtime_file.RuntimeInfo) -> dict[str, str]:
    """`env` plus FLANNELD_* values from the runtime file, for settings no flag or env gives."""
    given = {a[2:].split("=", 1)[0] for a in argv}
    by_name = {f.name: f for f in opts.FLAGS}
    out = dict(env)
    for name, value in runtime_file.flag_values(info).items():
        flag = by_name.get(name)
        if flag is not None and name not in given and flag.env not in env:
            out[flag.env] = value
    return out


def _runtime_info(path: Any) -> runtime_file.RuntimeInfo | None:
    try:
        return runtime_file.read(path)
    except FileNotFoundError:
        return None
    except (OSError, runtime_file.RuntimeFileError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        hint = " (it is root-only: run as root)" if isinstance(exc, PermissionError) else ""
        print(f"flannelctl: ignoring {path}: {why}{hint}; using flags, env and defaults",
              file=sys.stderr)
        return None


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(fn())  # type: ignore[arg-type]


def etcd_client(o: opts.Options, timeout: float = 3.0) -> Any:
    from flanneld.etcd import EtcdClient

    def s(p: Any) -> str | None:
        return str(p) if p is not None else None

    return EtcdClient(list(o.etcd_endpoints), username=o.etcd_username,
                      password=o.etcd_password, cafile=s(o.etcd_cafile),
                      certfile=s(o.etcd_certfile), keyfile=s(o.etcd_keyfile), timeout=timeout)


@dataclass
class LeaseRow:
    """One key under <prefix>/subnets/: decoded if it can be, with its etcd lease."""

    key: str  # the last path element, e.g. 10.5.34.0-24
    lease: Lease | None
    problem: str = ""
    lease_id: int = 0
    ttl: int | None = None  # seconds left; None: a reservation (or unknown)
    mod_revision: int = 0
    raw: bytes = b""

    @property
    def reservation(self) -> bool:
        return self.lease_id == 0

    def as_dict(self) -> dict[str, Any]:
        """Both families: `subnet` is the IPv4 one (None for an IPv6-only lease)."""
        lease = self.lease
        attrs = lease.attrs if lease else None
        v4 = lease.ipv4_subnet if lease else None
        v6 = lease.ipv6_subnet if lease else None
        return {"key": self.key, "subnet": str(v4) if v4 else None,
                "ipv6_subnet": str(v6) if v6 else None,
                "public_ip": str(attrs.public_ip) if attrs else None,
                "public_ipv6": str(attrs.public_ipv6) if attrs and attrs.public_ipv6 else None,
                "backend_type": attrs.backend_type if attrs else None,
                "vtep_mac": attrs.vtep_mac if attrs else None,
                "vtep_mac_v6": vtep_mac_v6(attrs) if attrs else None,
                "reservation": self.reservation, "etcd_lease": f"{self.lease_id:x}",
                "ttl": self.ttl, "problem": self.problem or None}


def vtep_mac_v6(attrs: LeaseAttrs) -> str | None:
    """The VtepMAC in a lease's BackendV6Data (flannel-v6.<VNI>'s MAC), if it has one."""
    data = attrs.backend_v6_data
    if not isinstance(data, dict):
        return None
    mac = next((v for k, v in data.items() if isinstance(k, str) and k.lower() == "vtepmac"),
               None)  # Go matches JSON keys case-insensitively
    return mac if isinstance(mac, str) else None


@dataclass
class Cluster:
    """What etcd says: the network config and every lease."""

    prefix: str
    config: Any = None  # NetworkConfig, or None if missing/bad
    config_error: str = ""
    leases: list[LeaseRow] = field(default_factory=list)
    error: str = ""  # etcd unreachable (then nothing else is known)


async def read_cluster(o: opts.Options, *, ttls: bool = True) -> Cluster:
    from core.config import ConfigError, parse_network_config

    client = etcd_client(o)
    cluster = Cluster(join_key(o.etcd_prefix))
    try:
        kv = await client.get(join_key(o.etcd_prefix, "config"))
        if kv is None:
            cluster.config_error = f"{join_key(o.etcd_prefix, 'config')} does not exist"
        else:
            try:
                cluster.config = parse_network_config(kv.value)
            except ConfigError as exc:
                cluster.config_error = str(exc)
        prefix = join_key(o.etcd_prefix, "subnets") + "/"
        for kv in await client.list_prefix(prefix):
            key = kv.key.decode("utf-8", "replace")[len(prefix):]
            row = LeaseRow(key, None, lease_id=int(kv.lease), mod_revision=int(kv.mod_revision),
                           raw=bytes(kv.value))
            try:
                row.lease = decode_lease(key, kv.value, lease_id=int(kv.lease),
                                         mod_revision=int(kv.mod_revision))
            except LeaseError as exc:
                row.problem = str(exc)
            cluster.leases.append(row)
        if ttls:
            await _fill_ttls(client, cluster.leases)
    except Exception as exc:
        from flanneld.etcd import is_retryable

        if not is_retryable(exc):
            raise
        cluster.error = str(exc) or type(exc).__name__
    finally:
        await client.close()
    return cluster


async def _fill_ttls(client: Any, rows: list[LeaseRow]) -> None:
    ids = sorted({r.lease_id for r in rows if r.lease_id})

    async def ttl(lease_id: int) -> int:
        info = await client.call(lambda c: c.get_lease_info(lease_id))
        return int(info.TTL)

    found = dict(zip(ids, await asyncio.gather(*(ttl(i) for i in ids)), strict=True))
    for r in rows:
        if r.lease_id:
            r.ttl = found.get(r.lease_id)


def human_ttl(row: LeaseRow) -> str:
    if row.reservation:
        return "reservation"
    if row.ttl is None or row.ttl < 0:
        return "expired"
    d, rest = divmod(row.ttl, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{d}d{h}h" if d else f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s")


def readyz(o: opts.Options) -> tuple[bool | None, str]:
    """(ready?, text) from flanneld's /readyz; None when --healthz-port is unset."""
    if not o.healthz_port:
        return None, "unknown (no --healthz-port)"
    host = f"[{o.healthz_ip}]" if ":" in o.healthz_ip else o.healthz_ip
    url = f"http://{host}:{o.healthz_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return True, resp.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode(errors="replace").strip()
    except OSError as exc:
        return False, f"flanneld not answering on {url}: {getattr(exc, 'reason', exc)}"


def own_row(cluster: Cluster, subnet: IPv4Network | None,
            public_ip: IPv4Address | None = None, *,
            subnet6: IPv6Network | None = None) -> LeaseRow | None:
    """Our lease: by subnet.env's IPv4 subnet, else (IPv6-only) its IPv6 one, else by
    PublicIP."""
    for row in cluster.leases:
        lease = row.lease
        if lease is None:
            continue
        if subnet is not None:
            if lease.ipv4_subnet == subnet:
                return row
        elif subnet6 is not None:
            if lease.ipv4_subnet is None and lease.ipv6_subnet == subnet6:
                return row
        elif public_ip is not None and lease.attrs.public_ip == public_ip:
            return row
    return None


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
