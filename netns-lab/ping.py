"""Every pod pings every other pod, in each IP family the pods have; the result is a
matrix per family, rows = source, columns = target."""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import time
from dataclasses import dataclass
from ipaddress import ip_address

from netns_lab import observe
from netns_lab.lab import Lab, Pod
from netns_lab.netns import in_netns
from netns_lab.texttable import table

ICMP_ECHO, ICMP_ECHO_REPLY = 8, 0
ICMP6_ECHO, ICMP6_ECHO_REPLY = 128, 129
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


@dataclass(frozen=True)
class PingResult:
    src: str
    dst: str
    ok: bool
    rtt_ms: float | None = None
    error: str = ""
    family: int = 4


def label(pod: Pod) -> str:
    return f"{pod.host}/{pod.name}"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, family: int = 4) -> bytes:
    """An ICMP (or ICMPv6) echo request carrying its send time. ICMPv6's checksum covers
    a pseudo-header the kernel knows: a raw ICMPv6 socket fills it in."""
    payload = struct.pack("!d", time.monotonic()) + b"netns-lab"
    if family == 6:
        return struct.pack("!BBHHH", ICMP6_ECHO, 0, 0, ident, seq) + payload
    head = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, _checksum(head + payload), ident, seq) + payload


def _parse_icmp(icmp: bytes, reply_type: int, ident: int) -> float | None:
    if len(icmp) < 16:
        return None
    kind, _, _, pid, _ = struct.unpack("!BBHHH", icmp[:8])
    if kind != reply_type or pid != ident:
        return None
    (sent,) = struct.unpack("!d", icmp[8:16])
    return (time.monotonic() - sent) * 1000


def parse_echo_reply(packet: bytes, ident: int) -> tuple[str, float] | None:
    """(source address, rtt ms) of one of our echo replies in a raw IPv4 packet, else None."""
    if len(packet) < 20:
        return None
    rtt = _parse_icmp(packet[(packet[0] & 0x0F) * 4:], ICMP_ECHO_REPLY, ident)
    return None if rtt is None else (socket.inet_ntoa(packet[12:16]), rtt)


def parse_echo6_reply(message: bytes, src: str, ident: int) -> tuple[str, float] | None:
    """The same for an ICMPv6 message (a raw ICMPv6 socket gets no IPv6 header; the
    source comes from recvfrom)."""
    rtt = _parse_icmp(message, ICMP6_ECHO_REPLY, ident)
    return None if rtt is None else (ip_address(src.split("%")[0]).compressed, rtt)


def ping_from(netns: str, targets: list[str], timeout: float,
              attempts: int, family: int = 4) -> dict[str, float | None]:
    """ICMP echo from inside `netns` to every target at once: rtt in ms, None if no reply."""
    norm = {ip_address(t).compressed: t for t in targets}
    got: dict[str, float | None] = dict.fromkeys(norm)

    def work() -> None:
        ident = random.randrange(1, 0xFFFF)
        af, proto = ((socket.AF_INET6, socket.IPPROTO_ICMPV6) if family == 6
                     else (socket.AF_INET, socket.IPPROTO_ICMP))
        with socket.socket(af, socket.SOCK_RAW, proto) as sock:
            # Room for every reply at once: a reply that crossed vxlan takes ~1.3 KB of the
            # receive buffer, so the default 208 KB held 167 of 249 and the rest waited a
            # retry. SO_RCVBUFFORCE (root) is not capped by the host-wide net.core.rmem_max.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE,
                                max(1 << 20, 4096 * len(targets)))
            for attempt in range(attempts):
                pending = {t for t, rtt in got.items() if rtt is None}
                if not pending:
                    return
                for i, target in enumerate(sorted(pending)):
                    sock.sendto(echo_request(ident, attempt * 1024 + i, family), (target, 0))
                deadline = time.monotonic() + timeout
                while pending and (left := deadline - time.monotonic()) > 0:
                    ready, _, _ = select.select([sock], [], [], left)
                    if not ready:
                        break
                    data, addr = sock.recvfrom(2048)
                    reply = (parse_echo6_reply(data, addr[0], ident) if family == 6
                             else parse_echo_reply(data, ident))
                    if reply and reply[0] in pending:
                        got[reply[0]] = reply[1]
                        pending.discard(reply[0])

    in_netns(netns, work)
    return {norm[t]: rtt for t, rtt in got.items()}


def families_of(pods: list[Pod]) -> list[int]:
    """The IP versions some pod has an address of, IPv4 first."""
    return [v for v in (4, 6) if any(p.address(v) for p in pods)]


def ping_all(lab: Lab, timeout: float = 2.0, attempts: int = 2,
             sources: list[Pod] | None = None,
             families: list[int] | None = None) -> list[PingResult]:
    """Every source pod pings every other pod (raw ICMP echo from the pod's namespace), in
    each family (default: every family the pods have), IPv4 results first."""
    pods = [p for p in lab.all_pods() if p.addresses]
    srcs = sources if sources is not None else pods
    fams = families if families is not None else families_of(pods)

    def one_source(job: tuple[int, Pod]) -> list[PingResult]:
        family, src = job
        if not src.address(family):
            return []
        dsts = [d for d in pods if (d.host, d.name) != (src.host, src.name) and d.address(family)]
        rtts = ping_from(lab.plan.pod_ns(src.host, src.name),
                         sorted({d.address(family) for d in dsts}), timeout, attempts, family)
        out = []
        for d in dsts:
            rtt = rtts[d.address(family)]
            out.append(PingResult(label(src), label(d), rtt is not None, rtt,
                                  "" if rtt is not None else
                                  f"no reply in {attempts} x {timeout:g}s", family))
        return out

    jobs = [(f, s) for f in fams for s in srcs]
    return [r for rs in observe.parallel(one_source, jobs) for r in rs]


def render(lab: Lab, results: list[PingResult], ok_mark: str = "ok", bad_mark: str = "FAIL") -> str:
    """One matrix and summary per family; a family's name heads it when there are two."""
    fams = sorted({r.family for r in results}) or [4]
    out: list[str] = []
    for family in fams:
        fam_results = [r for r in results if r.family == family]
        if len(fams) > 1:
            out += ([""] if out else []) + [f"IPv{family}"]
        out.append(_render_one(lab, family, fam_results, ok_mark, bad_mark))
    return "\n".join(out)


def _render_one(lab: Lab, family: int, results: list[PingResult], ok_mark: str,
                bad_mark: str) -> str:
    pods = [label(p) for p in lab.all_pods() if p.address(family)]
    by = {(r.src, r.dst): r for r in results}
    srcs = [p for p in pods if any(r.src == p for r in results)]
    rows = [[s] + [("." if s == d else (ok_mark if by[(s, d)].ok else bad_mark))
                   if (s, d) in by or s == d else "" for d in pods] for s in srcs]
    failed = [r for r in results if not r.ok]
    rtts = [r.rtt_ms for r in results if r.rtt_ms is not None]
    summary = f"{len(results) - len(failed)}/{len(results)} pod pairs reachable"
    if rtts:
        summary += f", rtt avg {sum(rtts) / len(rtts):.3f} ms"
    lines = [table(["FROM \\ TO", *pods], rows), "", summary]
    lines += [f"  {r.src} -> {r.dst}: {r.error or 'no reply'}" for r in failed]
    return "\n".join(lines)
