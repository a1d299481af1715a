"""The reconcile loop's decision (flanneld.loop_plan), without root, etcd or a clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flanneld.backoff import Backoff
from flanneld.loop_plan import FORCE_FULL_EVERY, RETRY_FIRST, Wake, looks_at_kernel, next_tick, plan

QUIET = dict(tick=False, since_full=0.0, interval=5.0, full_needed=False, pending=False)


def wake(**kw: object) -> Wake:
    return Wake(**{**QUIET, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("facts", "run"), [
    ({}, "none"),  # woken for nothing (rules, subnet.env)
    ({"pending": True}, "incremental"),  # lease events: from the cache
    ({"tick": True}, "skip"),  # a quiet resync tick: no dump
    ({"tick": True, "pending": True}, "incremental"),
    ({"tick": True, "kernel_changed": True}, "full"),  # drift announced: dump and repair
    ({"full_needed": True}, "full"),  # start-up, snapshot, failure
    ({"full_needed": True, "pending": True}, "full"),
    ({"tick": True, "since_full": FORCE_FULL_EVERY * 5.0}, "full"),  # overdue
    ({"since_full": FORCE_FULL_EVERY * 5.0}, "none"),  # overdue only counts at a tick
])
def test_run_mode(facts: dict[str, object], run: str) -> None:
    assert plan(wake(**facts)).run == run


@pytest.mark.parametrize(("facts", "rules"), [
    ({}, False),
    ({"nft_changed": True}, False),  # announced changes wait for the tick
    ({"tick": True, "nft_changed": True}, True),
    ({"tick": True}, False),
    ({"tick": True, "since_full": FORCE_FULL_EVERY * 5.0}, True),  # overdue: re-assert
    ({"rules_stale": True}, True),  # our subnet changed: at once
])
def test_rules(facts: dict[str, object], rules: bool) -> None:
    assert plan(wake(**facts)).rules is rules


def test_kernel_flag_is_read_only_when_it_matters() -> None:
    assert looks_at_kernel(tick=True, full_needed=False)
    assert looks_at_kernel(tick=False, full_needed=True)
    assert not looks_at_kernel(tick=False, full_needed=False)  # events alone: leave it set


@given(st.booleans(), st.booleans(), st.booleans(), st.booleans(),
       st.floats(0, 1e6), st.floats(0.01, 3600))
def test_full_whenever_owed(tick: bool, full_needed: bool, pending: bool, changed: bool,
                            since: float, interval: float) -> None:
    p = plan(Wake(tick=tick, since_full=since, interval=interval, full_needed=full_needed,
                  pending=pending, kernel_changed=changed))
    if full_needed or changed:
        assert p.run == "full"
    if p.run == "skip":
        assert tick and not pending
    if pending:
        assert p.run in ("full", "incremental")  # events are never dropped


def test_retry_soon_after_failure() -> None:
    assert next_tick(100.0, 10.0, 5.0, ok=True) == 100.0
    assert next_tick(100.0, 10.0, 5.0, ok=False) == 10.0 + RETRY_FIRST
    assert next_tick(100.0, 10.0, 0.2, ok=False) == pytest.approx(10.2)  # a fast resync wins
    assert next_tick(10.5, 10.0, 5.0, ok=False) == 10.5  # the tick is sooner anyway


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(1.0, 10.0, jitter=0.0)
    assert [b.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    b.reset()
    assert b.next() == 1.0


def test_backoff_jitter_stays_in_bounds() -> None:
    b = Backoff(2.0, 2.0, jitter=0.25, rng=random.Random(7))
    delays = [b.next() for _ in range(200)]
    assert all(1.5 <= d <= 2.5 for d in delays) and len(set(delays)) > 100


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(0, 1)
    with pytest.raises(ValueError, match="cap"):
        Backoff(5, 1)
