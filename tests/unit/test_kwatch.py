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
    assert relevant(_neigh(RTM_DELNEIGH, permanent, 10))  # IPv6: ours on flannel-v6.<VNI>
    assert not relevant(_neigh(RTM_NEWNEIGH, reachable, 10))  # neighbour discovery churn
    assert not relevant(_neigh(RTM_DELNEIGH, 0x40))  # NOARP multicast entries age out
    route = struct.pack("=IHHII", 28, 25, 0, 0, 0) + b"\0" * 12  # RTM_DELROUTE
    assert relevant(route)
    assert relevant(b"\x01\x00")  # truncated: be safe


def _fdb(kind: int, mac: str, pid: int = 0) -> bytes:
    attr = struct.pack("=HH", 10, 2) + bytes.fromhex(mac.replace(":", "")) + b"\0\0"
    body = struct.pack("=BxxxiHBB", 7, 5, 0x80, 2, 0) + attr
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, pid) + body


def test_own_writes_are_not_changes() -> None:
    permanent_neigh = _neigh(RTM_NEWNEIGH, 0x80)
    own = struct.pack("=IHHII", 16 + 20, RTM_NEWNEIGH, 0, 0, 4242) + permanent_neigh[16:]
    assert not relevant(own, own_pid=4242)
    assert relevant(own, own_pid=99)
    claimed = {"0e:00:00:00:00:01"}

    def own_fdb(mac: str) -> bool:
        if mac in claimed:
            claimed.discard(mac)  # consumed once, as KernelWatch does
            return True
        return False

    fdb = _fdb(RTM_NEWNEIGH, "0e:00:00:00:00:01")
    assert not relevant(fdb, own_fdb=own_fdb)
    assert relevant(fdb, own_fdb=own_fdb)  # the claim was used up
    assert relevant(own + _fdb(RTM_DELNEIGH, "0e:00:00:00:00:02"), 4242, own_fdb)


def test_expected_fdb_claims_expire() -> None:
    from flanneld import kwatch

    watch = kwatch.KernelWatch()
    watch.expect_fdb(["0e:00:00:00:00:01"])
    assert watch._is_own_fdb("0e:00:00:00:00:01")
    assert not watch._is_own_fdb("0e:00:00:00:00:01")
    watch._expected["0e:00:00:00:00:02"] = 0.0  # announced long ago
    assert not watch._is_own_fdb("0e:00:00:00:00:02")


def _from(pid: int, msg: bytes) -> bytes:
    return msg[:12] + struct.pack("=I", pid) + msg[16:]


def test_a_deleted_neighbour_on_our_device_counts() -> None:
    # `ip neigh del` of a permanent entry: RTM_NEWNEIGH with state FAILED from the
    # deleting port, then the entry's destruction, RTM_DELNEIGH FAILED from port 0
    failed = 0x20
    by_hand = _from(777, _neigh(RTM_NEWNEIGH, failed)) + _neigh(RTM_DELNEIGH, failed)
    assert relevant(by_hand, own_pid=4242, own_dev=5)
    assert relevant(_from(777, _neigh(RTM_NEWNEIGH, failed)), own_pid=4242, own_dev=5)
    assert not relevant(by_hand, own_pid=4242, own_dev=6)  # another device's
    assert not relevant(by_hand, own_pid=4242)


def test_our_own_neighbour_delete_is_not_drift() -> None:
    """Our delete of a lease's neighbour: the FAILED update carries our port, the
    destruction port 0. Counted, every lease removal made the next tick dump."""
    failed = 0x20
    ours = _from(4242, _neigh(RTM_NEWNEIGH, failed)) + _neigh(RTM_DELNEIGH, failed)
    assert not relevant(ours, own_pid=4242, own_dev=5)
    assert not relevant(_neigh(RTM_DELNEIGH, failed, 10), own_pid=4242, own_dev=5)  # IPv6
    # a permanent entry's destruction in any other state still counts
    assert relevant(_neigh(RTM_DELNEIGH, 0x80), own_pid=4242, own_dev=5)
