"""The CNI wire protocol: environment and stdin validation, errors, result shapes per version.

Pure and stdlib-only. Versions 0.3.0 to 1.1.0 are served; results always carry
`ips` (0.3.0's `ip` was a typo that every implementation ignores), `ips[].version`
only below 1.0.0, and the request's own `cniVersion`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from cni.versions import SUPPORTED_VERSIONS, version_for, version_reply
from core.clip import clipped, shown

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# Well-known error codes (CNI spec "Error" section; 8 is libcni's ErrInvalidNetNS).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999  # libcni's ErrInternal: any failure not covered by a well-known code

_ID_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
# Which variables each command requires (CNI_NETNS is optional for DEL).
_REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
}
_MIN_VERSION = {"CHECK": (0, 4, 0), "STATUS": (1, 1, 0), "GC": (1, 1, 0)}

ABOUT = ("pyflannel CNI plugin (drop-in for flannel's `flannel` plugin)\n"
         f"CNI protocol versions supported: {', '.join(SUPPORTED_VERSIONS)}\n")


class CniError(Exception):
    """A failure reported to the runtime as the CNI error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


@dataclass
class Request:
    command: str
    version: str
    conf: dict[str, Any]
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    path: str = ""
    args: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.conf.get("name", ""))


def parse_cni_args(raw: str) -> dict[str, str]:
    """CNI_ARGS `K=V;K2=V2`; unknown keys are kept (and ignored by callers)."""
    out: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or "=" in value or not key:
            raise CniError(INVALID_ENV, f"CNI_ARGS: invalid pair {shown(pair)}",
                           "CNI_ARGS must be KEY=VALUE pairs separated by ';'")
        out[key] = value
    return out


# Both become file names (<dataDir>/<name>/..., <dataDir>/.pyflannel/<name>/<id>@<ifname>,
# <dataDir>/<id>): bounded so that every such name fits NAME_MAX (255) with room to spare.
MAX_NAME = 128
MAX_CONTAINER_ID = 255 - 1 - 15  # "<id>@<ifname>", ifname up to 15 bytes


def validate_id(value: str, what: str, code: int, limit: int) -> None:
    if not _ID_RE.fullmatch(value):
        raise CniError(code, f"invalid characters in {what}: {shown(value)}",
                       "it must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")
    if len(value) > limit:
        raise CniError(code, f"{what} is {len(value)} characters long, at most {limit} "
                       f"are allowed: {shown(value)}")


def validate_ifname(value: str) -> None:
    bad = (not value or len(value.encode()) > 15 or value in (".", "..")
           or any(c in value for c in "/:") or any(c.isspace() for c in value))
    if bad:
        raise CniError(INVALID_ENV, f"invalid CNI_IFNAME {shown(value)}",
                       "it must be 1-15 bytes, not '.' or '..', without '/', ':' or whitespace")


def decode_conf(stdin: bytes) -> dict[str, Any]:
    try:
        conf = json.loads(stdin)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(DECODE_FAILURE, f"error unmarshalling network config from stdin: {exc}"
                       ) from None
    if not isinstance(conf, dict):
        raise CniError(DECODE_FAILURE, "network config on stdin must be a JSON object, "
                       f"not {type(conf).__name__}")
    return conf


def parse_request(env: dict[str, str], stdin: bytes) -> Request:
    """Validate the invocation; CniError with the spec's code for anything wrong.

    VERSION ignores every variable but CNI_COMMAND and tolerates empty stdin.
    """
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENV, f"unknown CNI_COMMAND: {clipped(command)}",
                       f"CNI_COMMAND must be one of {', '.join(COMMANDS)}")
    if command == "VERSION":
        try:
            requested = json.loads(stdin or b"{}").get("cniVersion")
        except (ValueError, AttributeError, UnicodeDecodeError):
            requested = None
        return Request(command, version_for(requested), {})
    missing = [k for k in _REQUIRED.get(command, ()) if not env.get(k)]
    if missing:
        raise CniError(INVALID_ENV, f"required env variables [{','.join(missing)}] missing",
                       f"CNI_COMMAND={command} needs {', '.join(_REQUIRED[command])}")
    conf = decode_conf(stdin)
    raw_version = conf.get("cniVersion")
    if not isinstance(raw_version, str) or not raw_version:
        raise CniError(INCOMPATIBLE_VERSION, "cniVersion is missing from the network config",
                       f"set it to one of {', '.join(SUPPORTED_VERSIONS)}")
    version = raw_version
    if version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f'config is "{clipped(version)}", '
                       f"plugin supports {list(SUPPORTED_VERSIONS)}")
    if command in _MIN_VERSION and version_tuple(version) < _MIN_VERSION[command]:
        minimum = ".".join(map(str, _MIN_VERSION[command]))
        raise CniError(INCOMPATIBLE_VERSION, f"config version does not allow {command}",
                       f'cniVersion "{version}": {command} needs {minimum} or later')
    name = conf.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_CONFIG, "missing network name", "set \"name\" in the config")
    validate_id(name, "network name", INVALID_CONFIG, MAX_NAME)
    req = Request(command, version, conf, path=env.get("CNI_PATH", ""))
    if command in _REQUIRED:
        req.container_id = env["CNI_CONTAINERID"]
        validate_id(req.container_id, "CNI_CONTAINERID", INVALID_ENV, MAX_CONTAINER_ID)
        req.ifname = env["CNI_IFNAME"]
        validate_ifname(req.ifname)
        req.netns = env.get("CNI_NETNS", "")
        req.args = parse_cni_args(env.get("CNI_ARGS", ""))
    return req


# output ----------------------------------------------------------------------

def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def error_bytes(err: CniError, version: str | None) -> bytes:
    body: dict[str, Any] = {}
    if version:
        body["cniVersion"] = version
    body["code"] = err.code
    body["msg"] = err.msg
    if err.details:
        body["details"] = err.details
    return dumps(body)


def version_bytes(version: str) -> bytes:
    return version_reply(version)


@dataclass
class Result:
    """Version-neutral ADD result; `render` applies the shape of one cniVersion."""

    interfaces: list[dict[str, Any]] = field(default_factory=list)
    ips: list[dict[str, Any]] = field(default_factory=list)   # address, gateway?, interface?
    routes: list[dict[str, Any]] = field(default_factory=list)
    dns: dict[str, Any] = field(default_factory=dict)

    def render(self, version: str) -> dict[str, Any]:
        v = version_tuple(version)
        ifaces = []
        for iface in self.interfaces:
            keep = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID") if v >= (1, 1) \
                else ("name", "mac", "sandbox")
            ifaces.append({k: iface[k] for k in keep if iface.get(k) not in (None, "")})
        ips = []
        for entry in self.ips:
            out: dict[str, Any] = {}
            if v < (1, 0):
                out["version"] = "6" if ":" in entry["address"] else "4"
            for k in ("interface", "address", "gateway"):
                if entry.get(k) is not None:
                    out[k] = entry[k]
            ips.append(out)
        route_keys = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope") \
            if v >= (1, 1) else ("dst", "gw")
        routes = [{k: r[k] for k in route_keys if r.get(k) is not None} for r in self.routes]
        out_all: dict[str, Any] = {"cniVersion": version}
        if ifaces:
            out_all["interfaces"] = ifaces
        out_all["ips"] = ips
        if routes:
            out_all["routes"] = routes
        out_all["dns"] = self.dns
        return out_all
