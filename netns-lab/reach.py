"""Does the data plane carry pod traffic? Pings between pods, chosen to cover every host.

Programmed peers are not a working data plane: with the host-wide neighbour table full a
64-host lab had every peer programmed and 3,200 of its 4,032 pod pairs silent. So `up`
pings a sample of pod pairs in which every host with pods is a source and a destination
(`sample_pairs`), and `status` pings from one pod of each host to one pod of every
other host (`unreachable_by_host`). The pings are `netns_lab.ping`'s raw ICMP echoes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from netns_lab import observe
from netns_lab.lab import Lab, Pod
from netns_lab.ping import PingResult, label, ping_from

Pair = tuple[str, str]  # (source pod, destination pod), as host/pod labels


def offsets(n: int, rounds: int = 2) -> list[int]:
    """Distinct offsets i -> i + k (mod n) that pair every host with another: 1 (the next
    host) and n // 2 (the farthest, so a segment's last hosts pair with its first)."""
    out: list[int] = []
    for k in (1, n // 2, n // 3, 2, n - 1):
        if 0 < k < n and k not in out and len(out) < rounds:
            out.append(k)
    return out


def sample_pairs(pods: Mapping[str, Sequence[str]], rounds: int = 2) -> list[Pair]:
    """Pod pairs across hosts in which every host with pods is, in each round, exactly once
    a source and once a destination (a permutation without fixed points). The pods used
    turn through each host's pods round by round. One host alone: its pods between
    themselves (nothing to sample with fewer than two)."""
    hosts = [h for h, ps in pods.items() if ps]
    n = len(hosts)
    if n == 1:
        ps = list(pods[hosts[0]])
        return [(f"{hosts[0]}/{a}", f"{hosts[0]}/{b}")
                for a, b in zip(ps, ps[1:] + ps[:1], strict=True) if a != b]
    out: list[Pair] = []
    for r, k in enumerate(offsets(n, rounds)):
        for i, src in enumerate(hosts):
            dst = hosts[(i + k) % n]
            sp, dp = pods[src], pods[dst]
            out.append((f"{src}/{sp[r % len(sp)]}", f"{dst}/{dp[(r + 1) % len(dp)]}"))
    return out


def covers(pairs: Sequence[Pair], hosts: Sequence[str]) -> tuple[set[str], set[str]]:
    """The hosts missing as a source and as a destination in `pairs`."""
    srcs = {s.split("/")[0] for s, _ in pairs}
    dsts = {d.split("/")[0] for _, d in pairs}
    return set(hosts) - srcs, set(hosts) - dsts


def ping_pairs(lab: Lab, pairs: Sequence[Pair], family: int, timeout: float = 1.0,
               attempts: int = 3) -> list[PingResult]:
    """Ping each pair (raw ICMP echo from the source pod), sources in parallel."""
    by_label = {label(p): p for p in lab.all_pods()}
    per_src: dict[str, list[Pod]] = {}
    for s, d in pairs:
        per_src.setdefault(s, []).append(by_label[d])

    def one(src: str) -> list[PingResult]:
        pod = by_label[src]
        dsts = [d for d in per_src[src] if d.address(family)]
        if not pod.address(family) or not dsts:
            return []
        rtts = ping_from(lab.plan.pod_ns(pod.host, pod.name),
                         sorted({d.address(family) for d in dsts}), timeout, attempts, family)
        return [PingResult(src, label(d), rtts[d.address(family)] is not None,
                           rtts[d.address(family)],
                           "" if rtts[d.address(family)] is not None else
                           f"no reply in {attempts} x {timeout:g}s", family) for d in dsts]

    return [r for rs in observe.parallel(one, sorted(per_src)) for r in rs]


@dataclass(frozen=True)
class Verdict:
    pairs: int
    failed: list[PingResult]
    unsampled: list[str]  # hosts with no pod: not covered by a pod ping

    @property
    def ok(self) -> bool:
        return not self.failed


def verify(lab: Lab, rounds: int = 2) -> Verdict:
    """Ping the sample (`sample_pairs`) in every family the pods have."""
    pods = {h: sorted(lab.pods.get(h, {})) for h in lab.topology.host_names}
    pairs = sample_pairs(pods, rounds)
    results: list[PingResult] = []
    for family in lab.topology.families:
        results += ping_pairs(lab, pairs, family)
    return Verdict(len(results), [r for r in results if not r.ok],
                   [h for h, ps in pods.items() if not ps])


def representative(lab: Lab, host: str) -> Pod | None:
    """The pod a host is probed from and to: its first (by name) with an address."""
    pods = sorted(lab.pods.get(host, {}).values(), key=lambda p: p.name)
    return next((p for p in pods if p.addresses), None)


PROBE_PEERS = 64  # status pings at most this many peers per host (all of them below 65 hosts)


def probe_targets(hosts: Sequence[str], per_host: int | None = PROBE_PEERS
                  ) -> dict[str, list[str]]:
    """Whom each host's pod pings: every other host, or with more than `per_host` peers
    the next `per_host` round the ring, so that each host is also pinged by exactly
    `per_host` others (250 hosts: 16,000 pings instead of 62,250)."""
    n = len(hosts)
    k = n - 1 if per_host is None else min(per_host, n - 1)
    return {h: [hosts[(i + j) % n] for j in range(1, k + 1)] for i, h in enumerate(hosts)}


def unreachable_by_host(lab: Lab, timeout: float = 1.0, attempts: int = 2,
                        per_host: int | None = PROBE_PEERS
                        ) -> dict[str, dict[str, list[str]]]:
    """Per host with a pod, per family: the hosts (with a pod) among its probe targets
    (`probe_targets`) its pod gets no echo reply from, and under "probed" how many it
    pinged. Hosts without a pod are absent: they cannot be probed this way."""
    reps = {h: p for h in lab.topology.host_names if (p := representative(lab, h))}
    targets = probe_targets(list(reps), per_host)
    out: dict[str, dict[str, list[str]]] = {h: {"probed": targets[h]} for h in reps}
    for family in lab.topology.families:
        pairs = [(label(reps[a]), label(reps[b])) for a in reps for b in targets[a]
                 if reps[a].address(family) and reps[b].address(family)]
        for r in ping_pairs(lab, pairs, family, timeout, attempts):
            if not r.ok:
                out[r.src.split("/")[0]].setdefault(str(family), []).append(
                    r.dst.split("/")[0])
    return out
