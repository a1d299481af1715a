"""Is each lease's WireGuard peer programmed? Pure verdicts over a device's `get` reply.

What a peer lease should have on a device is the backend's own answer
(`backends.wg_desired.desired_peers`: its public key, endpoint `PublicIP:Port`, allowed
IPs = its subnet(s)); what the device has is its UAPI `get` reply, parsed by
`backends.wg_uapi.parse_get`. `judge` compares one pair:

- programmed: the key is there, its allowed IPs are exactly the lease's subnet(s), and
  its endpoint is the lease's, or another one while the peer is live (WireGuard moves
  the endpoint to wherever the peer's packets come from: roaming is not drift, as in
  the backend's `plan_peers`);
- partial: the key is there with other allowed IPs, or a dead peer's endpoint differs;
- missing: the key is not on the device; skipped: the backend does not use the lease.

Handshake age and transfer counters ride along. A peer is `quiet` when its last
handshake is older than 180 s (WireGuard re-handshakes every 2 minutes while traffic
flows), or it never had one although we have known it for over a minute. Quiet is a
warning, not a fault: without PersistentKeepaliveInterval an idle peer never
handshakes. `read_uapi` (the one piece of I/O here) sends `get=1` to a UAPI socket.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, Protocol

from backends.peerstate import MISSING, PARTIAL, PROGRAMMED, SKIPPED, PeerCheck

KIND = "wg"
LIVE_SECONDS = 180.0  # REJECT_AFTER_TIME: a session older than this carries nothing
KNOWN_SECONDS = 60.0  # a peer known this long should have handshaken if traffic flowed
SOCKET_DIR = Path("/var/run/wireguard")


class PeerLike(Protocol):
    """A desired peer (WgPeer) or a device's peer (ActualPeer): what both have."""

    @property
    def public_key(self) -> str: ...
    @property
    def endpoint(self) -> Any: ...
    @property
    def allowed_ips(self) -> Any: ...


class ActualLike(PeerLike, Protocol):
    @property
    def last_handshake(self) -> float: ...
    @property
    def rx_bytes(self) -> int: ...
    @property
    def tx_bytes(self) -> int: ...


@dataclass(frozen=True)
class WgVerdict:
    key: str  # the lease's key
    device: str
    state: str
    problems: tuple[str, ...] = ()
    public_key: str = ""
    endpoint: str = ""  # what the device has ("" none)
    roamed: bool = False
    handshake_age: float | None = None  # seconds; None: never
    rx_bytes: int = 0
    tx_bytes: int = 0
    quiet: bool = False

    def check(self) -> PeerCheck:
        """As `backends.peerstate` verdicts are, so doctor's peer findings take it."""
        return PeerCheck(self.key, self.state, KIND if self.state == PROGRAMMED else "",
                         self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "device": self.device, "state": self.state,
                "problems": list(self.problems), "public_key": self.public_key,
                "endpoint": self.endpoint or None, "roamed": self.roamed,
                "handshake_age": self.handshake_age, "rx_bytes": self.rx_bytes,
                "tx_bytes": self.tx_bytes, "quiet": self.quiet}


def endpoint_text(value: Any) -> str:
    """An endpoint in one canonical spelling: `1.2.3.4:51820`, `[fd00::1]:51821`; "" none."""
    if value is None or value == "":
        return ""
    if isinstance(value, tuple):
        host, port = str(value[0]), int(value[1])
    else:
        text = str(value)
        host, _, port_text = text.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            return text
    host = host.strip("[]")
    try:
        addr = ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    return f"[{addr.compressed}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def nets(values: Iterable[Any]) -> frozenset[str]:
    out = set()
    for v in values:
        try:
            out.add(str(ip_network(str(v), strict=False)))
        except ValueError:
            out.add(str(v))
    return frozenset(out)


def lease_public_key(attrs: Any, v6: bool = False) -> str | None:
    """The PublicKey a lease publishes (BackendData, or BackendV6Data), as written; keys
    matched case-insensitively, as Go's JSON decoder does."""
    data = attrs.backend_v6_data if v6 else attrs.backend_data
    if not isinstance(data, dict):
        return None
    key = next((v for k, v in data.items() if isinstance(k, str) and k.lower() == "publickey"),
               None)
    return key if isinstance(key, str) else None


def handshake_age(last: float, now: float) -> float | None:
    return None if not last else max(0.0, now - last)


def judge(key: str, device: str, want: PeerLike | None, actual: ActualLike | None, *,
          now: float, known_for: float | None, skipped: str = "") -> WgVerdict:
    """One lease's peer on one device; `known_for`: how long this node could have had it
    (None: unknown, taken as long enough)."""
    if want is None:
        return WgVerdict(key, device, SKIPPED, (skipped or "the backend does not use it",))
    if actual is None:
        return WgVerdict(key, device, MISSING, (f"no peer with public key {want.public_key} "
                                                f"on {device}",), want.public_key)
    age = handshake_age(actual.last_handshake, now)
    live = age is not None and age <= LIVE_SECONDS
    problems = []
    have_ips, want_ips = nets(actual.allowed_ips), nets(want.allowed_ips)
    if have_ips != want_ips:
        problems.append(f"allowed IPs {', '.join(sorted(have_ips)) or 'none'}, want "
                        f"{', '.join(sorted(want_ips))}")
    have_ep, want_ep = endpoint_text(actual.endpoint), endpoint_text(want.endpoint)
    roamed = bool(have_ep) and have_ep != want_ep and live
    if have_ep != want_ep and not roamed:
        problems.append(f"endpoint {have_ep or 'none'}, want {want_ep}")
    old = (known_for is None or known_for > KNOWN_SECONDS)
    quiet = (age is not None and age > LIVE_SECONDS) or (age is None and old)
    return WgVerdict(key, device, PARTIAL if problems else PROGRAMMED, tuple(problems),
                     want.public_key, have_ep, roamed, age, actual.rx_bytes, actual.tx_bytes,
                     quiet)


def judge_device(device: str, wanted: dict[str, PeerLike], lease_keys: dict[str, str],
                 skipped: dict[str, str], actual: dict[str, ActualLike], *, now: float,
                 known_for: float | None) -> tuple[dict[str, WgVerdict], list[str]]:
    """Every lease's verdict on `device` (keyed by lease key), and the device's peers no
    lease wants (strays). `wanted`: desired peers by public key; `lease_keys`: public key
    -> lease key; `skipped`: lease key -> why the backend does not use it."""
    out = {key: judge(key, device, None, None, now=now, known_for=known_for, skipped=why)
           for key, why in skipped.items()}
    for pub, want in wanted.items():
        key = lease_keys.get(pub, pub)
        out[key] = judge(key, device, want, actual.get(pub), now=now, known_for=known_for)
    strays = [f"{device}: peer {pub} ({', '.join(sorted(nets(p.allowed_ips))) or 'no IPs'})"
              for pub, p in sorted(actual.items()) if pub not in wanted]
    return out, strays


def human_age(age: float | None) -> str:
    if age is None:
        return "never"
    s = int(age)
    return f"{s}s ago" if s < 120 else f"{s // 60}m{s % 60:02d}s ago" if s < 7200 else \
        f"{s // 3600}h{s % 3600 // 60:02d}m ago"


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


# --- the one piece of I/O -------------------------------------------------------------------


def socket_path(device: str, root: Path = SOCKET_DIR) -> Path:
    return root / f"{device}.sock"


def read_uapi(path: Path | str, timeout: float = 2.0) -> str:
    """A UAPI socket's reply to `get=1` (ends with `errno=N` and a blank line)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(b"get=1\n\n")
        chunks: list[bytes] = []
        tail = b""
        while True:  # the server keeps the connection open for more requests: read to the end
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if b"\n\n" in tail + chunk:
                break
            tail = chunk[-1:]
    return b"".join(chunks).decode("utf-8", "replace")
