"""An incremental run touches only the leases that changed (issue 14: flat per-event cost).

Not timing tests: each one fails if the incremental path looks at a lease it was not
told about (a peer map that raises when walked, a decide function that counts), or if
what it keeps drifts from a rebuild from scratch.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator, Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from backends.base import Backend, ReconcileResult
from backends.desired import (
    Outcome,
    PeerContext,
    combine,
    desired_state,
    patch,
    vxlan_outcome,
)
from backends.memo import DesiredMemo, PeerSet
from core.lease import Lease, LeaseAttrs, PeerKey, vxlan_backend_data
from flanneld.events import LeaseEvent, apply_event, diff_leases, note_change
from flanneld.metrics import Metrics
from flanneld.options import parse_options
from flanneld.reconciler import Reconciler

CTX = PeerContext(network=IPv4Network("10.5.0.0/16"), own_key="10.5.0.0-24",
                  own_public_ip="192.168.64.1", ext_index=2, ext_name="eth0", vni=1,
                  dev_index=7)


def lease(n: int, mac: int | None = None, rev: int = 0, v6: bool = False) -> Lease:
    m = n if mac is None else mac
    attrs = LeaseAttrs(IPv4Address(f"192.168.{64 + n // 250}.{n % 250 + 2}"), "vxlan",
                       vxlan_backend_data(1, f"0e:00:00:00:{m // 256:02x}:{m % 256:02x}"))
    return Lease(IPv4Network(f"10.5.{n // 256}.{n % 256}/32"), attrs, mod_revision=rev,
                 ipv6_subnet=IPv6Network(f"fc00:5:0:{n:x}::/64") if v6 else None)


OWN = Lease(IPv4Network("10.5.0.0/24"), LeaseAttrs(IPv4Address("192.168.64.1"), "vxlan",
                                                   vxlan_backend_data(1, "0e:ff:00:00:00:01")))


class Untouchable(Mapping[str, Lease]):
    """Every lease, for a memo that must not look at them on an incremental run."""

    def __init__(self, leases: Mapping[str, Lease]) -> None:
        self.leases = leases

    def __getitem__(self, key: str) -> Lease:
        raise AssertionError(f"an incremental run read lease {key}")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("an incremental run walked every lease")

    def __len__(self) -> int:
        raise AssertionError("an incremental run counted every lease")


# --- PeerSet ---------------------------------------------------------------------------


def test_peerset_replace_names_exactly_what_changed() -> None:
    ps = PeerSet()
    a, b, c = lease(1), lease(2), lease(3)
    assert ps.replace([OWN, a, b]) == {OWN.key: OWN, a.key: a, b.key: b}
    b2 = lease(2, rev=9)  # a new object for the same key: it changed (maybe a renewal)
    assert ps.replace([OWN, a, b2, c]) == {b2.key: b2, c.key: c}
    assert ps.replace([OWN, c]) == {a.key: None, b2.key: None}
    assert ps.replace([OWN, c]) == {}


def test_peerset_apply_keeps_what_it_is_not_told_and_drops_no_ops() -> None:
    ps = PeerSet()
    a, b = lease(1), lease(2)
    ps.replace([a, b])
    assert ps.apply({lease(5).key: None, a.key: a}) == {}  # gone before, and the same object
    b2 = lease(2, rev=3)
    assert ps.apply({b.key: b2, a.key: None}) == {b.key: b2, a.key: None}
    assert ps.leases == {b.key: b2}


# --- the memo ------------------------------------------------------------------------


def counting_memo() -> tuple[DesiredMemo[PeerContext], list[str]]:
    decided: list[str] = []

    def decide(le: Lease, ctx: PeerContext) -> Outcome:
        decided.append(le.key)
        return vxlan_outcome(le, ctx)
    return DesiredMemo(decide), decided


def test_an_incremental_apply_decides_and_touches_only_the_changed_leases() -> None:
    memo, decided = counting_memo()
    peers = {le.key: le for le in [OWN, *(lease(i) for i in range(1, 2001))]}
    d, keys, _ = memo.apply(OWN, peers, peers, CTX, full=True)
    assert keys is None and len(d.peers) == 2000 and len(decided) == 2000
    decided.clear()
    new, gone = lease(2001), lease(7)
    peers[new.key] = new
    del peers[gone.key]
    d, keys, changed = memo.apply(OWN, {new.key: new, gone.key: None}, Untouchable(peers),
                                  CTX, full=False)
    assert decided == [new.key]
    assert set(changed) == {new.key, gone.key}
    assert keys is not None
    assert keys.routes == {"10.5.7.209/32", "10.5.0.7/32"}
    assert keys.neighs == {"10.5.7.209", "10.5.0.7"}
    assert keys.fdb == {"0e:00:00:00:07:d1", "0e:00:00:00:00:07"}
    assert d.tables == desired_state(OWN, peers.values(), CTX, "vxlan").tables


def test_a_renewal_with_the_same_value_touches_nothing() -> None:
    memo, _ = counting_memo()
    a = lease(3)
    memo.apply(OWN, {a.key: a}, {a.key: a}, CTX, full=True)
    renewed = lease(3, rev=77)
    d, keys, changed = memo.apply(OWN, {a.key: renewed}, Untouchable({}), CTX, full=False)
    assert changed == {} and keys is not None and not (keys.routes or keys.fdb or keys.neighs)
    assert a.key in d.peers


EVENTS = st.lists(st.tuples(st.sampled_from(["add", "del", "mac", "bad"]),
                            st.integers(1, 30)), min_size=1, max_size=50)


@settings(max_examples=80, deadline=None)
@given(EVENTS)
def test_changes_given_keep_the_same_state_as_lists_given(events: list[tuple[str, int]]
                                                          ) -> None:
    """Told only the changes (never walking the peers), the memo ends where the list API
    ends after the same events, and where a rebuild from scratch does."""
    by_changes, _ = counting_memo()
    by_list, _ = counting_memo()
    current = {n: lease(n) for n in range(1, 9)}
    start = {le.key: le for le in [OWN, *current.values()]}
    by_changes.apply(OWN, start, start, CTX, full=True)
    by_list.update(OWN, start.values(), CTX, full=True)
    for op, n in events:
        before = current.get(n)
        if op == "add":
            current[n] = lease(n)
        elif op == "del":
            current.pop(n, None)
        elif op == "mac" and n in current:
            current[n] = lease(n, mac=(n * 7) % 11 + 1)  # clashes happen
        elif op == "bad" and n in current:
            current[n] = current[n].with_attrs(LeaseAttrs(current[n].attrs.public_ip,
                                                          "vxlan", {"VNI": 1}))
        now = current.get(n)
        if now is before:
            continue
        key = (now or before).key  # type: ignore[union-attr]
        peers = {le.key: le for le in [OWN, *current.values()]}
        d1, _, _ = by_changes.apply(OWN, {key: now}, Untouchable(peers), CTX, full=False)
        d2, _, _ = by_list.update(OWN, peers.values(), CTX, full=False)
        assert d1.tables == d2.tables and d1.peers == d2.peers
        assert d1.skipped == d2.skipped and d1.conflicts == d2.conflicts


# --- patch ---------------------------------------------------------------------------


def test_a_patch_that_meets_a_clash_leaves_the_desired_state_as_it_was() -> None:
    outs = {le.key: vxlan_outcome(le, CTX) for le in (lease(1), lease(2), lease(3))}
    desired = combine(outs.items())
    before = copy.deepcopy(desired)
    clashing = lease(9, mac=2)  # lease 2's VtepMAC
    changes: dict[str, Outcome | None] = {lease(1).key: None, lease(4).key: vxlan_outcome(
        lease(4), CTX), clashing.key: vxlan_outcome(clashing, CTX)}
    assert patch(desired, changes) is None
    assert desired.tables == before.tables and desired.peers == before.peers
    assert desired.skipped == before.skipped and desired.notes_rev == before.notes_rev


def test_a_standing_clash_blocks_only_the_patches_that_involve_it() -> None:
    a, b, c = lease(1), lease(2, mac=1), lease(3)  # b has a's VtepMAC and loses
    desired = combine((le.key, vxlan_outcome(le, CTX)) for le in (a, b, c))
    assert desired.conflicts == {a.key, b.key} and b.key in desired.skipped
    # a peer outside the clash still patches, and says which keys it touched
    new = lease(4)
    keys = patch(desired, {new.key: vxlan_outcome(new, CTX), c.key: None})
    assert keys is not None and keys.routes == {"10.5.0.4/32", "10.5.0.3/32"}
    # the winner leaving (b may get in now) or the loser changing: only combine knows
    assert patch(desired, {a.key: None}) is None
    assert patch(desired, {b.key: vxlan_outcome(lease(2), CTX)}) is None


def test_notes_rev_moves_only_when_skipped_or_unreachable_change() -> None:
    desired = combine([(lease(1).key, vxlan_outcome(lease(1), CTX))])
    rev = desired.notes_rev
    patch(desired, {lease(2).key: vxlan_outcome(lease(2), CTX)})
    assert desired.notes_rev == rev
    odd = Outcome(None, skipped="bad")
    patch(desired, {lease(3).key: odd})
    assert desired.notes_rev != rev
    rev = desired.notes_rev
    patch(desired, {lease(3).key: None})
    assert desired.notes_rev != rev and desired.skipped == {}


# --- the daemon's side: events -> changes -> backend -------------------------------------


def test_note_change_records_what_each_event_does() -> None:
    view: dict[PeerKey, Lease] = {}
    changes: dict[str, Lease | None] = {}
    a = lease(1)
    for ev in (LeaseEvent("added", a),):
        note_change(changes, view, ev)
        apply_event(view, ev)
    assert changes == {a.key: a}
    changes.clear()
    dual = lease(1, v6=True)  # the same subnet under another key (it became dual-stack)
    ev = LeaseEvent("changed", dual)
    note_change(changes, view, ev)
    apply_event(view, ev)
    assert changes == {a.key: None, dual.key: dual}
    ev = LeaseEvent("removed", dual)
    note_change(changes, view, ev)
    assert changes == {a.key: None, dual.key: None}
    changes.clear()
    note_change(changes, view, LeaseEvent("snapshot", snapshot=(a,)))
    assert changes == {}


VIEWS = st.lists(st.dictionaries(st.integers(1, 12), st.tuples(st.integers(0, 3),
                                                                 st.booleans()), max_size=12),
                 min_size=1, max_size=8)


@settings(max_examples=80, deadline=None)
@given(VIEWS)
def test_changes_from_events_bring_a_peer_set_to_the_view(views: list[dict[int, tuple[int, bool]]]
                                                          ) -> None:
    """Whatever the events, a backend's PeerSet fed only the recorded changes holds what a
    full list of the consumer's view would give it."""
    ps = PeerSet()
    view: dict[PeerKey, Lease] = {}
    for spec in views:
        new = {(le := lease(n, rev=r, v6=v6)).peer_key: le for n, (r, v6) in spec.items()}
        changes: dict[str, Lease | None] = {}
        for ev in diff_leases(view, new):
            note_change(changes, view, ev)
            apply_event(view, ev)
        ps.apply(changes)
        assert ps.leases == {le.key: le for le in view.values()}


class Recorder:
    """A backend that can be told only the changes; it records how it was called."""

    backend_type, mtu, dev_index, drift_unannounced = "vxlan", 1450, 0, False
    on_fdb_write = on_lease_attrs = None
    netlink_portid = 0

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def lease_attrs(self) -> LeaseAttrs:
        return OWN.attrs

    def reconcile(self, own: Lease, peers: Any, *, full: bool = True) -> ReconcileResult:
        self.calls.append(("reconcile", (len(list(peers)), full)))
        return ReconcileResult(full=full)

    def reconcile_changes(self, own: Lease, changes: Mapping[str, Lease | None]
                          ) -> ReconcileResult:
        self.calls.append(("changes", dict(changes)))
        return ReconcileResult(full=False)

    def close(self) -> None:
        pass


class NoWalk(dict[PeerKey, Lease]):
    def values(self) -> Any:
        raise AssertionError("the incremental path listed every peer")


def test_the_reconciler_hands_an_incremental_run_only_the_changes() -> None:
    opts = parse_options(["--etcd-endpoints", "http://127.0.0.1:2379"], env={})
    rec = Reconciler(opts, Metrics())
    backend = Recorder()
    rec.backend, rec.own = cast(Backend, backend), OWN
    a, b = lease(1), lease(2)
    rec.peers = {a.peer_key: a, b.peer_key: b}

    async def runs() -> None:
        assert await rec._reconcile(full=True)
        rec.peers = NoWalk(rec.peers)
        c = lease(3)
        for ev in (LeaseEvent("added", c), LeaseEvent("removed", a)):
            note_change(rec._changes, rec.peers, ev)
            apply_event(rec.peers, ev)
        assert await rec._reconcile(full=False)
        assert await rec._reconcile(full=False)  # nothing new: told nothing
    try:
        asyncio.run(runs())
    finally:
        rec._netlink.shutdown()
    assert backend.calls == [("reconcile", (2, True)), ("changes", {lease(3).key: lease(3),
                                                                      a.key: None}),
                             ("changes", {})]
