"""Memory per lab host, as smem counts it: RSS and PSS of the host's process set.

A host's processes are its flanneld, the holder of its mount namespace (`sleep`) and,
on a wireguard lab with userspace devices, its wireguard-go processes. Both figures come
from /proc/<pid>/smaps_rollup: RSS counts every page a process maps, so pages shared
with other processes (the interpreter's, and with the lab's fork server the preloaded
modules') count again in each; PSS divides each shared page among its sharers, so
summed over processes it counts each page once. Lab-wide processes (etcd) are shown
apart.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns_lab import observe
from netns_lab.lab import Lab
from netns_lab.netns import netns_pids


@dataclass
class Usage:
    rss_kb: int = 0
    pss_kb: int = 0
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # process -> (rss, pss)

    def add(self, name: str, rss: int, pss: int) -> None:
        self.rss_kb += rss
        self.pss_kb += pss
        old = self.parts.get(name, (0, 0))
        self.parts[name] = (old[0] + rss, old[1] + pss)


def rollup(pid: int) -> tuple[int, int] | None:
    """(RSS kB, PSS kB) of one process; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            vals[key] = int(rest.split()[0])
    return (vals["Rss"], vals["Pss"]) if "Rss" in vals and "Pss" in vals else None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def host_pids(lab: Lab, host: str) -> dict[str, list[int]]:
    """The host's process set: flanneld, its mount-namespace holder, wireguard-go."""
    out: dict[str, list[int]] = {}
    fl = lab.sandbox.pid(f"flanneld-{host}")
    if fl is not None:
        out["flanneld"] = [fl]
    mnt = lab.sandbox.pid(lab.sandbox.mount_ns_proc(lab.ns(host)))
    if mnt is not None:
        out["mount-ns holder"] = [mnt]
    if lab.topology.backend_type.lower() == "wireguard":
        wg = [p for p in netns_pids(lab.ns(host)) if _comm(p) == "wireguard-go"]
        if wg:
            out["wireguard-go"] = wg
    return out


def host_usage(lab: Lab, host: str) -> Usage:
    u = Usage()
    for name, pids in host_pids(lab, host).items():
        for pid in pids:
            got = rollup(pid)
            if got is not None:
                u.add(name, *got)
    return u


def collect(lab: Lab) -> dict[str, Any]:
    """Per host its usage, the median and the largest, and the lab-wide processes."""
    hosts = lab.topology.host_names
    usages = dict(zip(hosts, observe.parallel(lambda h: host_usage(lab, h), hosts),
                      strict=True))
    live = [u for u in usages.values() if u.rss_kb]
    lab_wide: dict[str, tuple[int, int]] = {}
    for m in lab.topology.etcd:
        pid = lab.sandbox.pid(f"etcd-{m.name}")
        got = rollup(pid) if pid is not None else None
        if got is not None:
            lab_wide["etcd" if m.name == "etcd" else f"etcd {m.name}"] = got
    parts = sorted({name for u in live for name in u.parts})
    return {
        "hosts": {h: {"rss_kb": u.rss_kb, "pss_kb": u.pss_kb,
                      "parts": {n: {"rss_kb": r, "pss_kb": p} for n, (r, p) in u.parts.items()}}
                  for h, u in usages.items()},
        "processes": parts,
        "measured_hosts": len(live),
        "rss_kb_median": int(statistics.median(u.rss_kb for u in live)) if live else 0,
        "rss_kb_max": max((u.rss_kb for u in live), default=0),
        "pss_kb_median": int(statistics.median(u.pss_kb for u in live)) if live else 0,
        "pss_kb_max": max((u.pss_kb for u in live), default=0),
        "pss_kb_total": sum(u.pss_kb for u in live),
        "flanneld_rss_kb_median": int(statistics.median(
            u.parts["flanneld"][0] for u in live if "flanneld" in u.parts)) if any(
            "flanneld" in u.parts for u in live) else 0,
        "flanneld_pss_kb_median": int(statistics.median(
            u.parts["flanneld"][1] for u in live if "flanneld" in u.parts)) if any(
            "flanneld" in u.parts for u in live) else 0,
        "lab_wide": {n: {"rss_kb": r, "pss_kb": p} for n, (r, p) in lab_wide.items()},
    }


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f} MB"


def render(data: dict[str, Any]) -> str:
    """One line: per host RSS and PSS (median, max), what they count, the lab-wide rest."""
    if not data["measured_hosts"]:
        return "memory: no host process running"
    line = (f"memory per host ({' + '.join(data['processes'])}): RSS {mb(data['rss_kb_median'])}"
            f" (max {mb(data['rss_kb_max'])}), PSS {mb(data['pss_kb_median'])} (max "
            f"{mb(data['pss_kb_max'])}); flanneld alone RSS "
            f"{mb(data['flanneld_rss_kb_median'])}, PSS {mb(data['flanneld_pss_kb_median'])}; "
            f"{data['measured_hosts']} hosts together PSS {mb(data['pss_kb_total'])}")
    if data["lab_wide"]:
        line += "; " + ", ".join(f"{n} RSS {mb(v['rss_kb'])}, PSS {mb(v['pss_kb'])}"
                                 for n, v in data["lab_wide"].items())
    return line + " (PSS counts a shared page once, RSS in every process that maps it)"
