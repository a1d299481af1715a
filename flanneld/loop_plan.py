"""What the reconcile loop does on one wake-up: a pure decision over plain facts.

The loop (flanneld.reconciler) gathers the facts (was it a resync tick, is a full run
owed, did the kernel or nftables announce a change, are lease events waiting) and
does what `plan` says; after a run, `next_tick` says when to look again. Keeping the
decision here lets it be tested without root, etcd or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Run = Literal["full", "incremental", "skip", "none"]
# full: dump the kernel and repair everything; incremental: apply lease events from the
# cache; skip: a resync tick with nothing announced (counted, no dump); none: no tick,
# no events (a wake-up for rules or subnet.env only).

FORCE_FULL_EVERY = 30  # resync ticks: a full dump at least this often, changes or not


@dataclass(frozen=True)
class Wake:
    """The facts at one wake-up of the loop."""

    tick: bool  # the resync interval has passed
    since_full: float  # seconds since the last full run started
    interval: float  # --resync-interval
    full_needed: bool  # start-up, a snapshot, our lease changed, or the last run failed
    pending: bool  # lease events not yet in the kernel
    kernel_changed: bool = False  # routing netlink announced a change we did not make
    nft_changed: bool = False  # nftables announced a change
    rules_stale: bool = False  # the rules we applied are not the ones our lease wants

    @property
    def overdue(self) -> bool:
        return self.tick and self.since_full >= FORCE_FULL_EVERY * self.interval


@dataclass(frozen=True)
class Plan:
    run: Run
    rules: bool  # (re)apply the nftables rules


def looks_at_kernel(tick: bool, full_needed: bool) -> bool:
    """Whether to read (and clear) the kernel's change flag now: it must be taken
    before a dump, so that changes during the dump mark it again."""
    return tick or full_needed


def plan(w: Wake) -> Plan:
    if w.full_needed or w.overdue or w.kernel_changed:
        run: Run = "full"
    elif w.pending:
        run = "incremental"
    elif w.tick:
        run = "skip"
    else:
        run = "none"
    rules = (w.tick and (w.nft_changed or w.overdue)) or w.rules_stale
    return Plan(run, rules)


RETRY_FIRST = 1.0  # a failed run is retried (in full) this soon; start-up retries begin here


def next_tick(scheduled: float, now: float, interval: float, ok: bool) -> float:
    """When to wake without an event: the scheduled tick, or soon after a failed run."""
    return scheduled if ok else min(scheduled, now + min(RETRY_FIRST, interval))
