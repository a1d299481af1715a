"""Host-wide kernel settings a lab needs: sized at `up`, announced, restored at `down`.

Network namespaces share some kernel tables. The one a large lab outgrows is the
neighbour table (ARP for IPv4, NDISC for IPv6): one per family for the whole kernel,
with its limits only in the root namespace's /proc/sys
(`net.ipv4.neigh.default.gc_thresh1..3`). On one L2 segment every vxlan or host-gw
host resolves every other host's underlay address, so 64 hosts hold ~4,200 entries,
past the default gc_thresh3 of 1024: the kernel refuses new ones ("neighbour: arp_cache:
neighbor table overflow!") and 3,200 of 4,032 pod pairs could not ping although every
peer was programmed. 250 hosts hold ~63,000. (The permanent VTEP entries flanneld
writes on flannel.1 are exempt from the limits since Linux 4.19; they are not counted.)

`up` sizes them as flannel's own advice does (netlink.ntable.advice): for E entries,
gc_thresh1 = pow2(E), gc_thresh2 = 2 pow2(E), gc_thresh3 = 4 pow2(E), where E covers
every lab that holds the setting (they share the table). A value is only ever raised,
never lowered. Every measured other limit was far from reach at 250 hosts (see
docs/lab.md, "At scale"), so these are the only settings sized.

Several labs, crashes, other people: the registry (REGISTRY, under /run, which a reboot
clears as it resets the sysctls) records per setting its original value, the value the
labs set, and the labs that hold it (that raised it or rely on a raise). A lab's `down`
(also of a lab left behind by a crash: the registry names it) releases its holds; when
the last holder goes the original is written back, unless the value is no longer the
one the labs set: someone changed it since, and it is left alone (never lowered under
them). A holder whose state directory and namespaces are both gone is dropped as
released. The lab's own state also records what its `up` changed (`kernel.json`).

Pure: `entries_needed`, `wanted`, `plan`, `release_plan`. I/O: `acquire`, `release`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netns_lab.model import Topology

REGISTRY = Path(os.environ.get("NETNS_LAB_KERNEL_REGISTRY", "/run/netns-lab/kernel.json"))
PROC_SYS = Path("/proc/sys")
NEIGH = {4: "net.ipv4.neigh.default", 6: "net.ipv6.neigh.default"}
TABLE = {4: "IPv4 neighbour (ARP)", 6: "IPv6 neighbour (NDISC)"}
# Per pod: its entry for the gateway (cni0), cni0's for it; IPv6 also the link-locals.
POD_ENTRIES = {4: 2, 6: 4}
# Per pair of members of a segment, per direction: IPv6 learns link-locals as well.
UNDERLAY_ENTRIES = {4: 1, 6: 2}


class KernelSizingError(RuntimeError):
    """The lab needs host-wide settings it may not (or could not) change."""


@dataclass(frozen=True)
class Need:
    """A host-wide setting the lab needs at least `value` of, and why."""

    key: str
    value: int
    why: str


@dataclass(frozen=True)
class Change:
    key: str
    old: int
    new: int
    why: str

    def __str__(self) -> str:
        return f"{self.key} {self.old} -> {self.new}: {self.why}"


# -- what a lab needs (pure) ----------------------------------------------------------------


def entries_needed(t: Topology) -> dict[int, int]:
    """Neighbour entries the lab may hold at once, per IP family (only families it uses).

    Underlay: on a segment of m members (hosts, routers, etcd members, the world) each may
    resolve every other: m (m - 1); over IPv6 twice that, each neighbour's global address
    and its link-local (64 dual-stack hosts after a full ping matrix held 7,507 IPv6
    entries besides the permanent ones; this counts 8,576). Pods: each resolves its
    gateway and cni0 resolves it (IPv6: the link-locals too)."""
    out: dict[int, int] = {}
    pods = sum(len(h.pods) for h in t.hosts)
    for version in (4, 6):
        underlay = version in t.underlay_versions
        overlay = version in t.families
        if not (underlay or overlay):
            continue
        n = 0
        if underlay:
            for seg in t.segments:
                m = (sum(1 for h in t.hosts if h.segment == seg.name)
                     + sum(1 for e in t.etcd if e.segment == seg.name)
                     + sum(1 for r in t.routers if seg.name in r.segments)
                     + (1 if t.world and t.world.segment == seg.name else 0))
                n += UNDERLAY_ENTRIES[version] * m * (m - 1)
        if overlay:
            n += POD_ENTRIES[version] * pods
        out[version] = n
    return out


def pow2(n: int) -> int:
    return 1 << max(n - 1, 1).bit_length()


def wanted(entries: dict[int, int], what: str = "") -> list[Need]:
    """The neighbour thresholds for `entries` per family (flannel's advice: 1x, 2x, 4x the
    next power of two)."""
    out = []
    for version, n in sorted(entries.items()):
        base = pow2(n)
        why = (f"{TABLE[version]} table, shared by every namespace: ~{n:,} entries"
               + (f" ({what})" if what else ""))
        for i, factor in ((1, 1), (2, 2), (3, 4)):
            out.append(Need(f"{NEIGH[version]}.gc_thresh{i}", base * factor, why))
    return out


# -- the registry (pure over plain data) ----------------------------------------------------


def empty_registry() -> dict[str, Any]:
    return {"version": 1, "keys": {}, "labs": {}}


def plan(registry: dict[str, Any], lab_id: str, meta: dict[str, Any],
         entries: dict[int, int], current: dict[str, int], what: str = "",
         ) -> tuple[dict[str, Any], list[Change], list[Need]]:
    """What acquiring for lab `lab_id` (holding `entries` per family) does: the new
    registry, the changes to write (in order) and the needs still unmet by `current`
    (what a lab that may not change anything would be refused for).

    The thresholds are sized for every holding lab's entries together. A setting is
    held by this lab when it needs more than the setting's original value: it relies
    on the raise, whether it made it or not."""
    reg = json.loads(json.dumps(registry))  # (a copy)
    labs = reg.setdefault("labs", {})
    keys = reg.setdefault("keys", {})
    total = {v: n + sum(int(lab.get("entries", {}).get(str(v), 0))
                        for lid, lab in labs.items() if lid != lab_id)
             for v, n in entries.items()}
    labs[lab_id] = {**meta, "entries": {str(v): n for v, n in entries.items()}}
    changes: list[Change] = []
    unmet: list[Need] = []
    others = len({lid for lid in labs if lid != lab_id})
    note = what + (f"; with the {others} other lab(s) holding it" if others else "")
    for need in wanted(total, note):
        now = current[need.key]
        entry = keys.get(need.key)
        original = int(entry["original"]) if entry else now
        if need.value > original:
            if now < need.value:
                unmet.append(need)
                changes.append(Change(need.key, now, need.value, need.why))
                if entry is None:
                    entry = keys[need.key] = {"original": now, "holders": []}
                entry["set"] = need.value
            if entry is not None and lab_id not in entry["holders"]:
                entry["holders"].append(lab_id)
    if not any(lab_id in k["holders"] for k in keys.values()):
        del labs[lab_id]  # holds nothing: nothing to release
    return reg, changes, unmet


@dataclass(frozen=True)
class Restore:
    key: str
    value: int  # the value written back, or the one left
    note: str
    written: bool

    def __str__(self) -> str:
        return f"{self.key}: {self.note}"


def release_plan(registry: dict[str, Any], lab_ids: set[str], current: dict[str, int]
                 ) -> tuple[dict[str, Any], list[Restore]]:
    """Release the holds of `lab_ids`: the new registry, and per setting no lab holds any
    more what happens to it. Written back to its original only if it still has the value
    the labs set: otherwise someone changed it since, and it stays as they left it."""
    reg = json.loads(json.dumps(registry))
    keys = reg.setdefault("keys", {})
    for lid in lab_ids:
        reg.setdefault("labs", {}).pop(lid, None)
    out: list[Restore] = []
    for key in sorted(keys):
        entry = keys[key]
        entry["holders"] = [h for h in entry["holders"] if h not in lab_ids]
        if entry["holders"]:
            continue
        del keys[key]
        now, original, ours = current.get(key), int(entry["original"]), int(entry["set"])
        if now is None:
            continue
        if now == ours and now != original:
            out.append(Restore(key, original, f"{ours} -> {original} (restored)", True))
        elif now != original:
            out.append(Restore(key, now, f"left at {now}: changed since the lab set {ours} "
                                         f"(was {original} before)", False))
    return reg, out


# -- I/O ---------------------------------------------------------------------------------------


def sysctl_path(key: str) -> Path:
    return PROC_SYS / key.replace(".", "/")


def read_sysctl(key: str) -> int:
    return int(sysctl_path(key).read_text().split()[0])


def write_sysctl(key: str, value: int) -> None:
    sysctl_path(key).write_text(f"{value}\n")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[dict[str, Any]]:
    """The registry, read under its lock; written back (removed when empty) on the way out,
    also when the block raises (what it applied before must stay recorded)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            reg = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            reg = empty_registry()
        try:
            yield reg
        finally:
            _save(path, reg)


def _save(path: Path, reg: dict[str, Any]) -> None:
    if not reg.get("keys") and not reg.get("labs"):
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(reg, indent=2) + "\n")
    os.replace(tmp, path)


def _keys_of(reg: dict[str, Any], extra: list[str]) -> list[str]:
    return sorted(set(reg.get("keys", {})) | set(extra))


def _read_all(keys: list[str]) -> dict[str, int]:
    out = {}
    for k in keys:
        with contextlib.suppress(OSError, ValueError):
            out[k] = read_sysctl(k)
    return out


def _gone(lab: dict[str, Any], netns: list[str]) -> bool:
    """A holder whose state directory and namespaces are both gone (removed by hand)."""
    prefix = str(lab.get("prefix", ""))
    state = lab.get("state_dir")
    return (not state or not Path(state).exists()) and not any(
        n.startswith(prefix + "-") for n in netns)


def _prune(reg: dict[str, Any], netns: list[str]) -> list[Restore]:
    """Release the holds of labs that are gone (state dir and namespaces removed)."""
    gone = {lid for lid, lab in reg.get("labs", {}).items() if _gone(lab, netns)}
    return _release(reg, gone) if gone else []


def _release(reg: dict[str, Any], lab_ids: set[str]) -> list[Restore]:
    """Release holds in `reg` (in place) and write back what goes back. Written before the
    registry is saved: a crash in between leaves a value at its original and a record
    that `release` later finds already restored. A neighbour limit goes back only once
    the table has drained (`wait_drained`)."""
    new, restores = release_plan(reg, lab_ids, _read_all(_keys_of(reg, [])))
    for version, prefix in NEIGH.items():
        going = [r for r in restores if r.written and r.key.startswith(prefix + ".")]
        thresh3 = next((r.value for r in going if r.key.endswith("gc_thresh3")), None)
        if thresh3 is not None:
            wait_drained(version, thresh3 // 2)
    for r in restores:
        if r.written:
            write_sysctl(r.key, r.value)
    reg.clear()
    reg.update(new)
    return restores


def acquire(lab_id: str, meta: dict[str, Any], entries: dict[int, int], *, change: bool,
            what: str = "", netns: Callable[[], list[str]] = lambda: [],
            registry: Path | None = None) -> tuple[list[Change], list[Restore]]:
    """Make the host-wide settings fit this lab (and the other labs holding them): the
    changes made, and what was restored for labs found gone. With `change` False nothing
    is raised: KernelSizingError names each setting that is too low, its value and the
    one needed."""
    path = registry or REGISTRY
    with _locked(path) as reg:
        restored = _prune(reg, netns())
        keys = [n.key for n in wanted({v: 1 for v in entries})]
        new, changes, unmet = plan(reg, lab_id, meta, entries,
                                   _read_all(_keys_of(reg, keys)), what)
        if unmet and not change:
            lines = "\n".join(f"{why}:\n" + "\n".join(
                f"  - {c.key} is {c.old}; this lab needs >= {c.new}"
                for c in changes if c.why == why) for why in dict.fromkeys(
                    c.why for c in changes))
            fix = " ".join(f"{n.key}={n.value}" for n in unmet)
            raise KernelSizingError(
                f"--no-kernel-sizing: {len(unmet)} host-wide setting(s) too low for this "
                f"lab; {lines}\nWithout them pods go unreachable although every peer is "
                f"programmed. Raise them yourself (sysctl -w {fix}) or let `up` do it "
                "(without --no-kernel-sizing: announced, and restored at `down`)")
        reg.clear()
        reg.update(new)
        _save(path, reg)  # the originals on disk before any value changes
        for c in changes:
            write_sysctl(c.key, c.new)
        return changes, restored


def release(lab_id: str, *, netns: Callable[[], list[str]] = lambda: [],
            registry: Path | None = None) -> list[Restore]:
    """Release this lab's holds (and those of labs found gone): what was written back, or
    deliberately left as someone else set it."""
    path = registry or REGISTRY
    if not path.exists():
        return []
    with _locked(path) as reg:
        mine = _release(reg, {lab_id})
        return mine + _prune(reg, netns())


_NTABLE = {4: "arp_cache", 6: "ndisc_cache"}
DRAIN_TIMEOUT = 30.0


def wait_drained(version: int, limit: int, timeout: float = DRAIN_TIMEOUT) -> bool:
    """Wait until the family's neighbour table holds at most `limit` entries. The kernel
    frees a removed namespace's entries seconds after `ip netns del` returns (128 hosts:
    38,000 entries, gone ~8 s later); a limit written back before that leaves the table
    over it, and meanwhile any namespace's new entry is refused (table_fulls). False if
    it did not drain in `timeout` (the limit goes back all the same)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            entries = neigh_stats().get(version, {}).get("entries", 0)
        except (OSError, subprocess.SubprocessError):
            return False
        if entries <= limit:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def neigh_stats() -> dict[int, dict[str, int]]:
    """Per family, the neighbour table's entries (all, permanent ones included),
    thresholds and table_fulls (refusals since boot), from `ip -s ntable show`."""
    out: dict[int, dict[str, int]] = {}
    for version, name in _NTABLE.items():
        proc = subprocess.run(["ip", "-s", "ntable", "show", "name", name],
                              capture_output=True, text=True, timeout=10)
        first = proc.stdout.split(f"inet{'6' if version == 6 else ''} {name}", 2)
        text = first[1] if len(first) > 1 else ""
        vals = {k: int(v) for k, v in re.findall(
            r"\b(thresh[123]|entries|table_fulls) (\d+)", text)}
        if vals:
            out[version] = vals
    return out


def neigh_diagnosis(before: dict[int, dict[str, int]] | None = None) -> str:
    """One sentence on whether the neighbour tables refused entries (for a failed ping):
    since `before` (a `neigh_stats`), else since boot."""
    try:
        stats = neigh_stats()
    except (OSError, subprocess.SubprocessError):
        return ""
    since = "meanwhile" if before is not None else "since boot"
    fulls = {v: st.get("table_fulls", 0) - (before or {}).get(v, {}).get("table_fulls", 0)
             for v, st in stats.items()}
    parts = []
    for version, st in sorted(stats.items()):
        parts.append(f"{TABLE[version]} table: {st.get('entries', 0):,} entries, gc_thresh3 "
                     f"{st.get('thresh3', 0)}, {fulls[version]} refusals {since}")
    full = [v for v, n in fulls.items() if n > 0]
    hint = (" The kernel has refused neighbour entries (dmesg: `neighbor table overflow`):"
            f" raise {NEIGH[full[0]]}.gc_thresh3, which `up` does unless --no-kernel-sizing."
            if full else "")
    return "; ".join(parts) + "." + hint if parts else ""


def holders(registry: Path | None = None) -> dict[str, Any]:
    """The registry as it is (for `list` and tests)."""
    try:
        return dict(json.loads((registry or REGISTRY).read_text()))
    except (FileNotFoundError, ValueError):
        return empty_registry()
