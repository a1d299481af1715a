"""The machinery of the chaos scenarios (`netns_lab.scenarios` is the index of them).

A scenario is one fault under a continuous pod-to-pod ping. Each names the
topology it needs; `run_scenario` brings that lab up, runs the scenario's
function and takes the lab down again. The function injects the fault (through
`netns_lab.chaos` or by hand, always inside the lab's namespaces), waits for
the recovery on conditions, and fills in its figures:

- `packets_sent`, `packets_lost`, `longest_gap_s`: from `ping -i 0.01` (100/s) in a
  pod, started before the fault and stopped after the recovery;
- `recovery_s`: from the fault (or its end) to the state being whole again;
- `data_lost`: what the fault destroyed that should have survived (subnets
  changed, peers removed, events missed, kernel entries rewritten...), 0 is the goal;
- `checks`: the scenario's goals, each passed or failed.

`netns-lab scenario NAME` replays one, `netns-lab scenario --all --report FILE`
runs them all and writes the table of docs/reliability.md.

Imports run one way: the scenario modules (`scenarios_*`) import this kit and
register into `SCENARIOS` with `@scenario`; `netns_lab.scenarios` imports them
all and looks scenarios up by name; this module imports none of them.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from netns_lab import build, topology
from netns_lab.lab import Lab, LabError, lab_lock
from netns_lab.measure import Pinger, ping_figures
from netns_lab.progress import Progress, Step

Fn = Callable[["Run"], dict[str, Any]]  # a scenario: the lab -> its figures


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str  # one line: the fault
    goal: str  # the goal, in words
    topology: dict[str, Any]
    fn: Fn
    scale: bool = False  # a lab of hundreds of hosts: minutes; `--all` only with --scale


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, summary: str, goal: str, topo: dict[str, Any], *,
             scale: bool = False) -> Callable[[Fn], Fn]:
    def register(fn: Fn) -> Fn:
        SCENARIOS[name] = Scenario(name, summary, goal, topo, fn, scale)
        return fn
    return register


def lab_topology(hosts: int = 3, pods_on: tuple[str, ...] = ("h1", "h2", "h3"),
                 resync: int = 1, etcd_members: int = 1, network: dict[str, Any] | None = None,
                 per_host: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """One L2 segment, vxlan, `resync` s resync interval, one pod (p1) on `pods_on`."""
    per_host = per_host or {}
    return {
        "description": f"{hosts} hosts, vxlan, {etcd_members} etcd member(s)",
        "network": network or {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}},
        "etcd": {"members": etcd_members},
        "hosts": {f"h{i}": {"pods": 1 if f"h{i}" in pods_on else 0,
                            "flanneld_args": ["--resync-interval", str(resync),
                                              *per_host.get(f"h{i}", [])]}
                  for i in range(1, hosts + 1)},
    }


IPV6_NETWORK = "fc00:244::/48"


def with_ipv6(topo: dict[str, Any]) -> dict[str, Any]:
    """A scenario's lab made dual stack (`netns-lab scenario --dual-stack`): the network
    gets EnableIPv6 and an IPv6Network, the default segment then an IPv6 subnet too, and
    every ping of the scenario runs in both families."""
    net = dict(topo.get("network") or {})
    if not any(k.lower() == "enableipv6" for k in net):
        net["EnableIPv6"] = True
    if not any(k.lower() == "ipv6network" for k in net):
        net["IPv6Network"] = IPV6_NETWORK
    return {**topo, "network": net,
            "description": f"{topo.get('description', 'scenario lab')}, dual stack"}


@dataclass
class Run:
    """What a scenario function works with: the lab, a place for figures and checks."""

    lab: Lab
    say: Callable[[str], None]
    up_steps: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    _pingers: list[Pinger] = field(default_factory=list)

    def check(self, what: str, ok: bool, detail: Any = "") -> bool:
        self.checks.append({"check": what, "ok": bool(ok), "detail": str(detail)})
        self.say(f"  {'ok  ' if ok else 'FAIL'} {what}" + (f" ({detail})" if detail != "" else ""))
        return bool(ok)

    @contextlib.contextmanager
    def pinging(self, *pairs: tuple[str, str], into: dict[str, Any] | None = None
                ) -> Iterator[None]:
        """Pod pings (`("h1/p1", "h2/p1")`, ...) around the block; their figures go
        into `into` (default: the scenario's figures)."""
        pingers: list[Pinger] = []
        try:
            for src, dst in pairs:
                for family in self.lab.topology.families:  # a dual-stack lab: both, at once
                    pingers.append(Pinger(self.lab, src, dst, family=family))
            self._pingers += pingers
            yield
        finally:
            stats = [p.stop() for p in pingers]
            for p in pingers:
                self._pingers.remove(p)
            target = self.figures if into is None else into
            target.update(ping_figures(stats))
            two = len(self.lab.topology.families) > 1
            for p, s in zip(pingers, stats, strict=True):
                fam = f" (IPv{p.family})" if two else ""
                self.say(f"  ping {s.src} -> {s.dst}{fam}: {s.sent} sent, {s.lost} lost, "
                         f"longest gap {s.longest_gap_s:.2f}s, {s.pps:.0f}/s")

    def stop_pingers(self) -> None:
        for p in list(self._pingers):
            with contextlib.suppress(Exception):
                p.stop()
        self._pingers.clear()


class _Timed(Progress):
    """A Progress that also remembers how long each step took."""

    def __init__(self, stream: TextIO, quiet: bool) -> None:
        super().__init__(stream, quiet)
        self.times: dict[str, float] = {}

    def _end(self, mark: str, step: Step, start: float) -> None:
        self.times[step.title] = round(time.monotonic() - start, 3)
        super()._end(mark, step, start)


def run_scenario(sc: Scenario, lab_name: str, stream: TextIO = sys.stderr, *,
                 quiet: bool = False, keep: bool = False, dual_stack: bool = False
                 ) -> dict[str, Any]:
    """Bring the scenario's lab up, run it, take the lab down; its figures and checks."""
    name = sc.name
    topo = topology.parse(with_ipv6(sc.topology) if dual_stack else sc.topology,
                          f"scenario {name}")

    def say(text: str) -> None:
        if not quiet:
            print(text, file=stream, flush=True)

    say(f"scenario {name}: {sc.summary}")
    progress = _Timed(stream, quiet)
    t0 = time.monotonic()
    with lab_lock(lab_name):
        if Lab.exists(lab_name) or build.leftovers(lab_name)["namespaces"]:
            raise LabError(f"lab {lab_name!r} is up already: a scenario brings up its own "
                           f"lab; pick another --name or `netns-lab down --name {lab_name}`")
        lab = Lab.new(lab_name, topo, f"scenario {name}")
        try:
            build.up(lab, progress)
        except BaseException as exc:
            if not keep:
                build.down(lab_name)
            if isinstance(exc, Exception):
                raise LabError(f"scenario {name}: bringing up its lab failed: {exc}") from exc
            raise
    run = Run(lab, say, up_steps=progress.times)
    error = ""
    try:
        run.figures.update(sc.fn(run))
    except Exception as exc:  # a scenario that cannot finish is a failed one, with its figures
        error = f"{type(exc).__name__}: {exc}"
        say(f"  FAIL {error}")
        say(traceback.format_exc(limit=4))
    finally:
        run.stop_pingers()
        if not keep:
            for r in build.down(lab_name)[2]:  # host-wide settings `up` raised, put back
                say(f"  {r}")
    ok = not error and all(c["ok"] for c in run.checks)
    return {"scenario": name, "summary": sc.summary, "goal": sc.goal,
            "hosts": len(topo.hosts), "families": list(topo.families),
            "lab_up_s": round(sum(progress.times.values()), 2),
            **run.figures, "checks": run.checks, "error": error, "ok": ok,
            "took_s": round(time.monotonic() - t0, 1)}
