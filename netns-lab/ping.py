"""Every pod pings every other pod; the result is a matrix, rows = source, columns = target."""

from __future__ import annotations

import random
import select
import socket
import struct
import time
from dataclasses import dataclass

from netns_lab import observe
from netns_lab.lab import Lab, Pod
from netns_lab.netns import in_netns
from netns_lab.status import table


@dataclass(frozen=True)
class PingResult:
    src: str
    dst: str
    ok: bool
    rtt_ms: float | None = None
    error: str = ""


def label(pod: Pod) -> str:
    return f"{pod.host}/{pod.name}"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = struct.pack("!d", time.monotonic()) + b"netns-lab"
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(head + payload), ident, seq) + payload


def parse_echo_reply(packet: bytes, ident: int) -> tuple[str, float] | None:
    """(source address, rtt ms) of one of our echo replies in a raw IPv4 packet, else None."""
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:]
    if len(icmp) < 16:
        return None
    kind, _, _, pid, _ = struct.unpack("!BBHHH", icmp[:8])
    if kind != 0 or pid != ident:
        return None
    (sent,) = struct.unpack("!d", icmp[8:16])
    return socket.inet_ntoa(packet[12:16]), (time.monotonic() - sent) * 1000


def ping_from(netns: str, targets: list[str], timeout: float,
              attempts: int) -> dict[str, float | None]:
    """ICMP echo from inside `netns` to every target at once: rtt in ms, None if no reply."""
    got: dict[str, float | None] = dict.fromkeys(targets)

    def work() -> None:
        ident = random.randrange(1, 0xFFFF)
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            for attempt in range(attempts):
                pending = {t for t, rtt in got.items() if rtt is None}
                if not pending:
                    return
                for i, target in enumerate(sorted(pending)):
                    sock.sendto(echo_request(ident, attempt * 1024 + i), (target, 0))
                deadline = time.monotonic() + timeout
                while pending and (left := deadline - time.monotonic()) > 0:
                    ready, _, _ = select.select([sock], [], [], left)
                    if not ready:
                        break
                    reply = parse_echo_reply(sock.recv(2048), ident)
                    if reply and reply[0] in pending:
                        got[reply[0]] = reply[1]
                        pending.discard(reply[0])

    in_netns(netns, work)
    return got


def ping_all(lab: Lab, timeout: float = 2.0, attempts: int = 2,
             sources: list[Pod] | None = None) -> list[PingResult]:
    """Every source pod pings every other pod (raw ICMP echo from the pod's namespace)."""
    pods = [p for p in lab.all_pods() if p.ip]
    srcs = sources if sources is not None else pods

    def one_source(src: Pod) -> list[PingResult]:
        dsts = [d for d in pods if (d.host, d.name) != (src.host, src.name)]
        rtts = ping_from(lab.plan.pod_ns(src.host, src.name), sorted({d.ip for d in dsts}),
                         timeout, attempts)
        return [PingResult(label(src), label(d), rtts[d.ip] is not None, rtts[d.ip],
                           "" if rtts[d.ip] is not None else f"no reply in {attempts} x "
                           f"{timeout:g}s") for d in dsts]

    return [r for rs in observe.parallel(one_source, srcs) for r in rs]


def render(lab: Lab, results: list[PingResult], ok_mark: str = "ok", bad_mark: str = "FAIL") -> str:
    pods = [label(p) for p in lab.all_pods() if p.ip]
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
