"""WireGuard's cross-platform UAPI text protocol (wireguard.com/xplatform), pure.

A `get=1` reply is `key=value` lines, device first and then one block per peer
opened by `public_key=`, closed by `errno=N` and a blank line. A `set=1` request
has the same shape; keys travel as hex. wireguard-go speaks it on
/var/run/wireguard/<dev>.sock; `backends.wg_device` translates kernel WireGuard
(generic netlink) into the same text, so the backend sees one protocol.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from ipaddress import ip_network

from backends.wg_desired import ActualPeer, PeerPlan, WgPeer, canonical_endpoint

ZERO_KEY = bytes(32)


class UapiError(ValueError):
    """A reply that is not UAPI, or that reports an error (errno != 0)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass
class DeviceState:
    private_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: dict[str, ActualPeer] = field(default_factory=dict)  # by base64 public key


def hex_key(b64: str) -> str:
    return base64.b64decode(b64).hex()


def _key32(hexed: str) -> bytes:
    raw = bytes.fromhex(hexed)
    if len(raw) != 32:
        raise UapiError(f"a key of {len(raw)} bytes")
    return raw


def b64_key(hexed: str) -> str:
    return base64.b64encode(_key32(hexed)).decode("ascii")


def _errno(lines: list[str]) -> int:
    for line in reversed(lines):
        if line.startswith("errno="):
            try:
                return int(line[6:])
            except ValueError:
                raise UapiError(f"malformed UAPI reply: {line[:60]!r}") from None
    raise UapiError("no errno line: not a complete UAPI reply")


def check_reply(text: str) -> None:
    """A `set` reply: UapiError unless errno=0."""
    code = _errno([ln for ln in text.split("\n") if ln])
    if code:
        raise UapiError(f"the device refused the change (errno={code})", code)


def parse_get(text: str) -> DeviceState:
    lines = [ln for ln in text.split("\n") if ln]
    code = _errno(lines)
    if code:
        raise UapiError(f"get failed (errno={code})", code)
    state = DeviceState()
    peer: dict[str, object] | None = None
    blocks: list[dict[str, object]] = []
    try:
        for line in lines:
            k, sep, v = line.partition("=")
            if not sep:
                raise UapiError(f"not key=value: {line[:60]!r}")
            if k == "public_key":
                peer = {"public_key": b64_key(v), "allowed_ips": []}
                blocks.append(peer)
            elif peer is None:
                if k == "private_key":
                    raw = _key32(v)
                    state.private_key = None if raw == ZERO_KEY else raw
                elif k == "listen_port":
                    state.listen_port = int(v)
                elif k == "fwmark":
                    state.fwmark = int(v)
            elif k == "allowed_ip":
                # one spelling: a ::/96 prefix comes dotted from the kernel, not from us
                net = str(ip_network(v, strict=False))
                peer["allowed_ips"].append(net)  # type: ignore[attr-defined]
            else:
                peer[k] = v
        for b in blocks:
            psk = _key32(str(b.get("preshared_key", "00" * 32)))
            when = int(str(b.get("last_handshake_time_sec", 0))) + \
                int(str(b.get("last_handshake_time_nsec", 0))) / 1e9
            p = ActualPeer(str(b["public_key"]), canonical_endpoint(str(b.get("endpoint", ""))),
                           tuple(sorted(b["allowed_ips"])),  # type: ignore[call-overload]
                           None if psk == ZERO_KEY else psk,
                           int(str(b.get("persistent_keepalive_interval", 0))), when,
                           int(str(b.get("rx_bytes", 0))), int(str(b.get("tx_bytes", 0))))
            state.peers[p.public_key] = p
    except ValueError as exc:
        if isinstance(exc, UapiError):
            raise
        raise UapiError(f"malformed UAPI reply: {exc}") from None
    return state


def _peer_lines(p: WgPeer) -> list[str]:
    out = [f"public_key={hex_key(p.public_key)}", "replace_allowed_ips=true"]
    out += [f"allowed_ip={a}" for a in p.allowed_ips]
    out.append(f"endpoint={p.endpoint}")
    out.append(f"preshared_key={(p.psk or ZERO_KEY).hex()}")
    out.append(f"persistent_keepalive_interval={p.keepalive}")
    return out


def render_set(*, private_key: bytes | None = None, listen_port: int | None = None,
               plan: PeerPlan | None = None, replace_peers: bool = False,
               prime: tuple[str, ...] = ()) -> str:
    """One `set=1` request: device fields, then removals, then upserts.

    `prime`: peers (base64 keys) to start a handshake with now. Turning a peer's
    persistent keepalive on from 0 makes WireGuard (kernel and wireguard-go alike)
    send a keepalive at once, which needs a session, so it initiates one; a second
    block turns it off again. Without this, a peer whose first handshake reached us
    before we knew it retries only after REKEY_TIMEOUT (5 s): a new node's traffic
    would stall that long."""
    lines = ["set=1"]
    if private_key is not None:
        lines.append(f"private_key={private_key.hex()}")
    if listen_port is not None:
        lines.append(f"listen_port={listen_port}")
    if replace_peers:
        lines.append("replace_peers=true")
    if plan is not None:
        for k in plan.remove:
            lines += [f"public_key={hex_key(k)}", "remove=true"]
        for p in plan.upsert:
            lines += _peer_lines(p)
    for k in prime:
        hexed = hex_key(k)
        # update_only: a peer removed meanwhile (by a resync, by hand) is not made again
        lines += [f"public_key={hexed}", "update_only=true", "persistent_keepalive_interval=1",
                  f"public_key={hexed}", "update_only=true", "persistent_keepalive_interval=0"]
    return "\n".join(lines) + "\n\n"
