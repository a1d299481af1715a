"""The change flag behind skipped resyncs: cleared by take(), set by marks, blind = always."""

from __future__ import annotations

import struct

from flanneld.kwatch import RTM_DELNEIGH, RTM_NEWNEIGH, ChangeFlag, relevant


def test_flag_take_clears_and_mark_sets() -> None:
    flag = ChangeFlag()
    assert flag.take()  # blind until subscribed: always "changed"
    flag.blind = False
    flag.mark()
    assert flag.take() and not flag.take()
    flag.mark()
    flag.mark()
    assert flag.take() and not flag.take()


def _neigh(kind: int, state: int, family: int = 2) -> bytes:
    body = struct.pack("=BxxxiHBB", family, 5, state, 0, 1) + b"\0" * 8  # + one attribute
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_only_dynamic_neighbour_churn_is_ignored() -> None:
    reachable, stale, permanent = 0x02, 0x04, 0x80
    assert not relevant(_neigh(RTM_NEWNEIGH, reachable))
    assert not relevant(_neigh(RTM_NEWNEIGH, stale) + _neigh(RTM_DELNEIGH, reachable, 7))
    assert relevant(_neigh(RTM_DELNEIGH, permanent))  # one of ours (neighbour or FDB)
    assert relevant(_neigh(RTM_NEWNEIGH, stale) + _neigh(RTM_DELNEIGH, permanent, 7))
    assert not relevant(_neigh(RTM_DELNEIGH, permanent, 10))  # IPv6: never ours
    assert not relevant(_neigh(RTM_DELNEIGH, 0x40))  # NOARP multicast entries age out
    route = struct.pack("=IHHII", 28, 25, 0, 0, 0) + b"\0" * 12  # RTM_DELROUTE
    assert relevant(route)
    assert relevant(b"\x01\x00")  # truncated: be safe
