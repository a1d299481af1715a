"""flanneld's runtime file: where a running flanneld tells flannelctl its settings.

flanneld writes `<directory of --subnet-file>/flanneld.json` (so
`/run/flannel/flanneld.json` by default, and a lab node with its own
/run/flannel gets its own) at start-up, rewrites it once ready (adding the
backend and the public IP), and removes it on a clean exit if it still names
its pid. Mode 0600, written atomically (temp file in the same directory,
fsync, rename). It holds paths and addresses only, never key material or the
etcd password:

    {"version": 1, "pid": 1234, "flanneld_version": "0.1.0",
     "started_at": "2025-01-01T12:00:00Z",
     "etcd_endpoints": ["https://10.0.0.10:2379"], "etcd_prefix": "/coreos.com/network",
     "etcd_cafile": "/etc/pyflannel/ca.pem", "etcd_certfile": null, "etcd_keyfile": null,
     "subnet_file": "/run/flannel/subnet.env", "state_dir": "/var/lib/pyflannel",
     "healthz_ip": "127.0.0.1", "healthz_port": 8471, "cni_socket": "/run/flannel/cni.sock",
     "iface": ["eth0"], "public_ip": "192.168.64.3", "backend": "vxlan"}

`version` is the schema's (a reader refuses a version it does not know); keys
it does not know are ignored, so later versions may add keys freely. The
setting keys are the attribute names of flanneld's flags (`flanneld.flags`).

Pure functions build, render and parse; `write`, `read`, `remove` and
`pid_alive` are the I/O edge. Imports nothing of ours but core.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.subnetenv import write_file_atomic

if TYPE_CHECKING:
    from flanneld.options import Options

SCHEMA_VERSION = 1
FILE_NAME = "flanneld.json"
DEFAULT_PATH = Path("/run/flannel") / FILE_NAME
MODE = 0o600


class RuntimeFileError(ValueError):
    """The runtime file is not one we can read; the message names the file and the fault."""


@dataclass(frozen=True)
class RuntimeInfo:
    pid: int
    flanneld_version: str
    started_at: str  # ISO 8601, UTC
    etcd_endpoints: tuple[str, ...]
    etcd_prefix: str
    subnet_file: str
    state_dir: str
    healthz_ip: str
    healthz_port: int
    etcd_cafile: str | None = None
    etcd_certfile: str | None = None
    etcd_keyfile: str | None = None
    cni_socket: str | None = None
    iface: tuple[str, ...] = ()
    public_ip: str | None = None
    backend: str | None = None
    version: int = field(default=SCHEMA_VERSION)


def path_for(subnet_file: str | Path) -> Path:
    """The runtime file that goes with a subnet file: same directory, `flanneld.json`."""
    return Path(subnet_file).parent / FILE_NAME


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_options(o: Options, *, pid: int, flanneld_version: str, started_at: str,
                 public_ip: str | None = None, backend: str | None = None) -> RuntimeInfo:
    """What flanneld writes, from its options (and, once ready, its backend and public IP)."""

    def s(p: Any) -> str | None:
        return str(p) if p is not None else None

    return RuntimeInfo(
        pid=pid, flanneld_version=flanneld_version, started_at=started_at,
        etcd_endpoints=tuple(o.etcd_endpoints), etcd_prefix=o.etcd_prefix,
        etcd_cafile=s(o.etcd_cafile), etcd_certfile=s(o.etcd_certfile),
        etcd_keyfile=s(o.etcd_keyfile), subnet_file=str(o.subnet_file),
        state_dir=str(o.state_dir), healthz_ip=o.healthz_ip, healthz_port=o.healthz_port,
        cni_socket=s(o.cni_socket), iface=tuple(o.iface),
        public_ip=public_ip or s(o.public_ip), backend=backend)


def render(info: RuntimeInfo) -> str:
    d = asdict(info)
    ordered = {"version": d.pop("version"), **d}
    return json.dumps(ordered, indent=2) + "\n"


_STR, _OPT_STR = "string", "string or null"
_FIELDS: dict[str, str] = {
    "pid": "int", "flanneld_version": _STR, "started_at": _STR, "etcd_endpoints": "list",
    "etcd_prefix": _STR, "subnet_file": _STR, "state_dir": _STR, "healthz_ip": _STR,
    "healthz_port": "int", "etcd_cafile": _OPT_STR, "etcd_certfile": _OPT_STR,
    "etcd_keyfile": _OPT_STR, "cni_socket": _OPT_STR, "iface": "list", "public_ip": _OPT_STR,
    "backend": _OPT_STR,
}
_REQUIRED = ("pid", "etcd_endpoints", "etcd_prefix", "subnet_file")


def _check(key: str, value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == _STR:
        return isinstance(value, str)
    return value is None or isinstance(value, str)


def parse(text: str | bytes, source: str = str(DEFAULT_PATH)) -> RuntimeInfo:
    """RuntimeInfo from the file's text; RuntimeFileError naming `source` if it is not one."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RuntimeFileError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RuntimeFileError(f"{source}: must be a JSON object, got {type(doc).__name__}")
    version = doc.get("version")
    if version != SCHEMA_VERSION:
        raise RuntimeFileError(f"{source}: schema version {version!r} is not supported "
                               f"(this flannelctl reads version {SCHEMA_VERSION})")
    for key in _REQUIRED:
        if key not in doc:
            raise RuntimeFileError(f"{source}: {key!r} is missing")
    values: dict[str, Any] = {}
    for key, kind in _FIELDS.items():
        if key not in doc:
            continue
        value = doc[key]
        if not _check(key, value, kind):
            raise RuntimeFileError(f"{source}: {key}={value!r}: must be a {kind}")
        values[key] = tuple(value) if kind == "list" else value
    if not values["etcd_endpoints"]:
        raise RuntimeFileError(f"{source}: 'etcd_endpoints' is empty")
    if values["pid"] <= 0:
        raise RuntimeFileError(f"{source}: pid={values['pid']!r}: must be positive")
    if not 0 <= values.get("healthz_port", 0) <= 65535:
        raise RuntimeFileError(f"{source}: healthz_port={values['healthz_port']!r}: "
                               "must be 0-65535")
    values.setdefault("flanneld_version", "")
    values.setdefault("started_at", "")
    values.setdefault("state_dir", "")
    values.setdefault("healthz_ip", "")
    values.setdefault("healthz_port", 0)
    return RuntimeInfo(**values)


def flag_values(info: RuntimeInfo) -> dict[str, str]:
    """The settings flannelctl takes from the file, as flanneld flag values (name -> raw).

    Empty values mean "not set in the file" and are left out, except cni-socket,
    where "" is flanneld's own spelling of "disabled"."""
    raw = {"etcd-endpoints": ",".join(info.etcd_endpoints), "etcd-prefix": info.etcd_prefix,
           "etcd-cafile": info.etcd_cafile or "", "etcd-certfile": info.etcd_certfile or "",
           "etcd-keyfile": info.etcd_keyfile or "", "subnet-file": info.subnet_file,
           "state-dir": info.state_dir, "healthz-ip": info.healthz_ip,
           "healthz-port": str(info.healthz_port) if info.healthz_port else ""}
    out = {k: v for k, v in raw.items() if v}
    out["cni-socket"] = info.cni_socket or ""
    return out


# -- the I/O edge ----------------------------------------------------------------------------

def write(path: str | Path, info: RuntimeInfo) -> None:
    """Atomically, mode 0600 (root-only when flanneld runs as root)."""
    write_file_atomic(path, render(info).encode(), mode=MODE)


def read(path: str | Path) -> RuntimeInfo:
    """Parse the file; OSError (PermissionError, FileNotFoundError ...) passes through."""
    return parse(Path(path).read_bytes(), str(path))


def remove(path: str | Path, pid: int) -> bool:
    """Remove the file if it still names `pid` (another flanneld may have taken it over)."""
    try:
        if read(path).pid != pid:
            return False
    except (OSError, RuntimeFileError):
        return False
    Path(path).unlink(missing_ok=True)
    return True


def pid_alive(pid: int, proc: Path = Path("/proc")) -> bool:
    """Is `pid` a running process, and (when /proc says) a flanneld, not a reused pid?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    except OSError:
        return False
    try:
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return True  # no /proc to ask: trust the signal check
    return b"flanneld" in cmdline
