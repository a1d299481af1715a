"""Every pod pings every other pod; the result is a matrix, rows = source, columns = target."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from netns_lab import observe
from netns_lab.lab import Lab, Pod
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


def ping_once(lab: Lab, src: Pod, dst: Pod, timeout: float, attempts: int) -> PingResult:
    ns = lab.plan.pod_ns(src.host, src.name)
    err = ""
    for _ in range(attempts):
        proc = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W",
                               str(max(1, round(timeout))), dst.ip],
                              capture_output=True, text=True, timeout=timeout + 10)
        if proc.returncode == 0:
            return PingResult(label(src), label(dst), True, _rtt(proc.stdout))
        err = (proc.stdout.strip().splitlines() or [proc.stderr.strip()])[-1]
    return PingResult(label(src), label(dst), False, error=err)


def _rtt(out: str) -> float | None:
    # "rtt min/avg/max/mdev = 0.051/0.051/0.051/0.000 ms"
    for line in out.splitlines():
        if "min/avg/max" in line:
            try:
                return float(line.split("=")[1].split("/")[1])
            except (IndexError, ValueError):
                return None
    return None


def ping_all(lab: Lab, timeout: float = 2.0, attempts: int = 2,
             sources: list[Pod] | None = None) -> list[PingResult]:
    pods = [p for p in lab.all_pods() if p.ip]
    srcs = sources if sources is not None else pods
    pairs = [(s, d) for s in srcs for d in pods if (s.host, s.name) != (d.host, d.name)]
    return observe.parallel(lambda sd: ping_once(lab, sd[0], sd[1], timeout, attempts), pairs)


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
