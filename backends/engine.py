"""The reconcile loop shared by the backends: dump, diff, apply in batches, remember.

full=True (start, periodic resync, after errors): dump the kernel's main
table (and, for vxlan, the device's neighbours and FDB), diff against the
desired state, apply the difference. Entries we had programmed before and
find missing or altered count as repairs.

full=False (watch events): diff the desired state against the cache of what
we last applied, without dumping anything, so one new lease among a thousand
costs one small batch. Any failure there falls back to a full run at once.

`reconcile(own, peers)` takes the whole peer list and finds what changed (O(N));
`reconcile_changes(own, changes)` is told (lease key -> new lease, None: gone), as
the daemon's lease events tell it, and then does only O(changes) work: nothing in
an incremental run walks every peer.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from ipaddress import IPv4Network
from typing import Any, overload

from backends.base import ExternalInterface, OnceLog, ReconcileResult
from backends.desired import (
    Desired,
    MainRoute,
    Outcome,
    PeerContext,
    PeerEntries,
)
from backends.memo import DesiredMemo, PeerSet
from backends.state import (
    Plan,
    RouteScope,
    RouteSpec,
    Tables,
    apply_plan,
    diff,
    route_matches,
    share_entries,
)
from core.lease import Lease, LeaseAttrs
from netlink import messages as m
from netlink.rtnl import Result, RtNetlink

log = logging.getLogger("pyflannel.backends")

REPLACE = m.NLM_F_CREATE | m.NLM_F_REPLACE
GONE = (errno.ENOENT, errno.ESRCH)  # deleting what is already gone is fine


class Engine:
    """Subclasses set `backend_type`, implement `_outcome`, and may manage a device."""

    backend_type = ""
    drift_unannounced = False  # every kernel change we own is announced on rtnetlink

    def __init__(self, network: IPv4Network | None, ext: ExternalInterface,
                 netns: str | None) -> None:
        # None: IPv6-only (EnableIPv4 false). The IPv4 engine then programs nothing and a
        # backend's IPv6 plane does all the work.
        self.ipv4 = network is not None
        self._network = network
        self.ext = ext
        self.netns = netns
        self.nl = RtNetlink(netns)
        self._lock = threading.Lock()
        self.dev_index = 0  # our device (vxlan); 0: none
        self._applied: Tables | None = None  # what the kernel holds of ours, as last seen/applied
        self._main: tuple[MainRoute, ...] = ()  # routes we do not own, for on-link decisions
        self._own_key: str | None = None
        self._peers = PeerSet()  # every lease we were last given, ours included
        self._memo: DesiredMemo[PeerContext] = DesiredMemo(self._decide4)
        self._unprogrammed: set[str] = set()  # desired peers with an entry that failed
        self._failed: set[tuple[str, Any]] = set()  # ops that failed on the last run
        self._skip_log = OnceLog()
        self._unreach_log = OnceLog()
        # What the results report of the desired state's notes, rebuilt when they change.
        self._notes_rev = 0
        self._skipped: list[tuple[str, str]] = []
        self._unreachable: list[tuple[str, str]] = []
        self._unreach_found = False  # the last run found unreachable routes while applying
        # Told the MACs of FDB entries just before we write them: the vxlan driver's FDB
        # notifications carry port id 0, so a kernel watcher cannot tell they are ours.
        self.on_fdb_write: Callable[[list[str]], None] | None = None
        # Told our new lease value when the backend had to change it (vxlan: a peer held
        # our VtepMAC); the daemon publishes it. Called on the netlink thread.
        self.on_lease_attrs: Callable[[LeaseAttrs], object] | None = None

    # --- hooks --------------------------------------------------------------------------

    def _outcome(self, lease: Lease, ctx: PeerContext) -> Outcome:
        raise NotImplementedError

    def _decide4(self, lease: Lease, ctx: PeerContext) -> Outcome | None:
        # An IPv6-only peer (a node not yet dual-stack) is the IPv6 plane's alone.
        return None if lease.ipv4_subnet is None else self._outcome(lease, ctx)

    def _context(self, own: Lease) -> PeerContext:
        return PeerContext(network=self.network, own_key=own.key,
                           own_public_ip=str(self.ext.public), ext_index=self.ext.index,
                           ext_name=self.ext.name, main_routes=self._main)

    def _prepare(self, own: Lease, result: ReconcileResult) -> bool:
        """Bring the device in line before a full run; False if peers cannot be programmed."""
        return True

    def _dump_neighbours(self, tables: Tables, like: Tables | None = None
                         ) -> list[tuple[str, None]]:
        """Fill neighbour/FDB tables (vxlan); return FDB deletes to do first."""
        return []

    def _forget(self) -> None:
        """After a run that failed outright: dump at the next one and decide every lease
        again (the run may have ended before its changes reached every plane's memo)."""
        self._applied = self._desired = None

    # --- the public entry point ---------------------------------------------------------

    def reconcile(self, own: Lease, peers: Iterable[Lease], *,
                  full: bool = True) -> ReconcileResult:
        with self._lock:
            return self._guarded(own, self._peers.replace(peers), full)

    def reconcile_changes(self, own: Lease, changes: Mapping[str, Lease | None]
                          ) -> ReconcileResult:
        """An incremental run told only what changed since the last run (lease key -> its
        new lease, None: gone); the peers it does not name are as they were."""
        with self._lock:
            return self._guarded(own, self._peers.apply(changes), False)

    def _guarded(self, own: Lease, changes: dict[str, Lease | None],
                 full: bool) -> ReconcileResult:
        try:
            return self._reconcile(own, changes, full=full)
        except OSError as exc:  # a dump or a device operation failed outright
            self._forget()  # the next run starts from a dump
            log.warning("%s reconcile failed: %s", self.backend_type, exc)
            return ReconcileResult(full=full, errors=[f"{self.backend_type}: {exc}"])

    @property
    def _desired(self) -> Desired | None:
        return self._memo.desired

    @_desired.setter
    def _desired(self, value: Desired | None) -> None:
        if value is None:
            self._memo.forget()  # and every lease is decided again: a failed run may
            # not have brought the last changes to the memo
        else:
            self._memo.desired = value

    @property
    def network(self) -> IPv4Network:
        if self._network is None:
            raise RuntimeError(f"{self.backend_type}: IPv6-only, there is no IPv4 Network")
        return self._network

    def _reconcile(self, own: Lease, changes: dict[str, Lease | None], *,
                   full: bool) -> ReconcileResult:
        """`changes` since the last run (self._peers holds them all); each reaches the
        memo exactly once, so a second run in the same call passes {}."""
        if not self.ipv4:
            return ReconcileResult(full=full)
        if not full and self._applied is not None and own.key == self._own_key:
            result = self._run(own, changes, full=False)
            if not result.errors:
                return result
            log.warning("incremental reconcile failed (%s); doing a full one", result.errors[0])
            again = self._run(own, {}, full=True)
            for bucket in ("added", "removed", "repaired"):
                for kind, n in getattr(result, bucket).items():
                    again.count(bucket, kind, n)
            return again
        return self._run(own, changes, full=True)

    @property
    def netlink_portid(self) -> int:
        """See RtNetlink.portid (vxlan FDB notifications carry 0, not this)."""
        return self.nl.portid

    def close(self) -> None:
        with self._lock:
            self.nl.close()

    # --- one run ------------------------------------------------------------------------

    def _run(self, own: Lease, changes: dict[str, Lease | None], *,
             full: bool) -> ReconcileResult:
        result = ReconcileResult(full=full)
        previous = self._applied
        pre_deletes: list[tuple[str, None]] = []
        if full:
            if own.key != self._own_key:
                previous = None  # a new subnet: nothing we see is a "repair"
            if not self._prepare(own, result):
                self._applied = self._desired = None
                return result
            base, pre_deletes = self._dump()
        else:
            assert previous is not None
            base = previous
        self._own_key = own.key
        desired, keys, changed = self._memo.apply(own, changes, self._peers.leases,
                                                  self._context(own), full=full)
        plan = diff(desired.tables, base, keys)
        plan.fdb_del[:0] = pre_deletes
        if full:
            self._failed = set()
        else:  # do not hammer the kernel with what just failed; the next full run retries
            _drop_failed(plan, self._failed)
        done = self._execute(plan, desired, previous, result)
        found_unreachable = bool(result.unreachable)  # routes the kernel refused just now
        self._applied = apply_plan(base, done, inplace=True, like=desired.tables)
        if keys is None:  # the dump's copies of entries we want: ours are kept instead
            share_entries(self._applied, desired.tables)
        # After the plan, the kernel matches the desired state except where an op failed
        # (or, incrementally, was not retried): only those peers are not programmed.
        bad = {(kind, op if kind == "neigh-" else op[0]) for kind, op in self._failed}
        if keys is None:
            self._unprogrammed = {key for key, e in desired.peers.items()
                                  if _hits(e, bad)} if bad else set()
        else:
            for key in changed:
                e = desired.peers.get(key)
                if e is not None and bad and _hits(e, bad):
                    self._unprogrammed.add(key)
                else:
                    self._unprogrammed.discard(key)
        result.programmed_peers = len(desired.peers) - len(self._unprogrammed)
        self._report(result, desired, found_unreachable)
        return result

    def _report(self, result: ReconcileResult, desired: Desired, found: bool) -> None:
        """Skipped and unreachable peers into the result and the log. The sorted lists are
        made again only when the notes changed, so an event costs the same with 5000
        skipped peers as with none. `found`: this run met unreachable routes itself."""
        notes_changed = desired.notes_rev != self._notes_rev
        if notes_changed:
            self._notes_rev = desired.notes_rev
            self._skipped = sorted(desired.skipped.items())
            self._unreachable = sorted(desired.unreachable.items())
            self._skip_log.update(self._skipped, f"{self.backend_type}: skipping lease")
        result.skipped = self._skipped
        result.unreachable += self._unreachable
        if notes_changed or found or self._unreach_found:
            self._unreach_log.update(result.unreachable, f"{self.backend_type}: peer unreachable")
        self._unreach_found = found

    def _dump(self) -> tuple[Tables, list[tuple[str, None]]]:
        """Our entries as the kernel has them, and the main-table routes we do not own.
        Values equal to the last desired state's are its own objects (see `like`)."""
        like = self._desired.tables if self._desired is not None else None
        tables, self._main = dump_routes(self.nl, RouteScope(self.network, self.dev_index,
                                                             self.ext.index), like)
        return tables, self._dump_neighbours(tables, like)

    # --- applying a plan ----------------------------------------------------------------

    def _execute(self, plan: Plan, desired: Desired, previous: Tables | None,
                 result: ReconcileResult) -> Plan:
        """Apply `plan` in two batches (routes last); return the part that succeeded.

        The batches are the plan's own lists, one kind each (no (kind, op) pair per
        operation: among thousands of peers those are megabytes a first run frees again)."""
        first: list[tuple[str, list[Any]]] = [
            ("route-", plan.route_del), ("neigh-", plan.neigh_del), ("fdb-", plan.fdb_del),
            ("neigh", plan.neigh_set), ("fdb", plan.fdb_set)]
        done = Plan()
        if self.on_fdb_write is not None:
            macs = [op[0] for op in plan.fdb_del] + [op[0] for op in plan.fdb_set]
            if macs:
                self.on_fdb_write(macs)
        failed_neigh: set[str] = set()
        failed_fdb: set[str] = set()
        for (kind, op), res in zip(_each(first), self._send(first), strict=True):
            if res[0] and not (kind.endswith("-") and res[0] in GONE):
                self._fail(result, kind, op, res)
                if kind == "neigh":
                    failed_neigh.add(op[0])
                elif kind == "fdb":
                    failed_fdb.add(op[0])
                continue
            _record(done, kind, op)
            bucket = "removed" if kind.endswith("-") else (
                "repaired" if _was_programmed(previous, kind, op) else "added")
            result.count(bucket, kind.rstrip("-"))

        routes = []
        for op in plan.route_set:
            cidr, spec = op
            mac = desired.tables.neighs.get(spec.gateway, "") if spec.onlink else ""
            if spec.gateway in failed_neigh or mac in failed_fdb:
                result.errors.append(f"route {cidr} via {spec.gateway} not added: its "
                                     "neighbour or FDB entry failed (see above)")
                self._failed.add(("route", op))
                continue
            routes.append(op)
        for op, res in zip(routes, self._send([("route", routes)]), strict=True):
            cidr, spec = op
            if res[0] == errno.ENETUNREACH and not spec.onlink:
                key = next((k for k, e in desired.peers.items() if e.route[0] == cidr), cidr)
                result.unreachable.append((key, f"route {cidr} via "
                                           f"{spec.gateway}: the kernel says network unreachable"))
                self._failed.add(("route", op))
            elif res[0]:
                self._fail(result, "route", op, res)
            else:
                _record(done, "route", op)
                result.count("repaired" if _was_programmed(previous, "route", op) else "added",
                             "route")
        return done

    def _send(self, batch: list[tuple[str, list[Any]]]) -> list[Result]:
        """One netlink batch of (kind, its ops) segments; a result per op, in order."""
        encoded = _Encoded(self.dev_index, batch)
        return self.nl.apply(encoded) if len(encoded) else []

    def _fail(self, result: ReconcileResult, kind: str, op: Any, res: Result) -> None:
        self._failed.add((kind, op))
        what = {"route-": "delete route", "neigh-": "delete neighbour", "fdb-": "delete FDB entry",
                "neigh": "neighbour", "fdb": "FDB entry", "route": "route"}[kind]
        text = f" ({res[1]})" if res[1] else ""
        result.errors.append(f"{what} {_show(op)}: {os.strerror(res[0])}{text}")


def dump_routes(nl: RtNetlink, scope: RouteScope, like: Tables | None = None
                ) -> tuple[Tables, tuple[MainRoute, ...]]:
    """The main table: routes `scope` owns as Tables, the others for on-link decisions.

    `like`: tables (the last desired state) whose values are taken instead of new equal
    ones, so that a resync among thousands of peers does not build a second copy of
    every route first (`share_entries` then shares the keys too)."""
    tables = Tables()
    main: list[MainRoute] = []
    known = like.routes if like is not None else {}

    def take(r: m.RouteRow) -> None:
        if r.table != m.RT_TABLE_MAIN:
            return
        if r.rtype == m.RTN_UNICAST and not r.multipath and scope.owns(
                r.dst, r.dst_len, r.oif, r.gateway is not None):
            spec = RouteSpec(r.gateway or "0.0.0.0", r.oif, bool(r.flags & m.RTNH_F_ONLINK),
                             r.priority, r.proto)
            cidr = r.cidr
            have = tables.routes.get(cidr, ())
            want = known.get(cidr)
            tables.routes[cidr] = want if not have and want is not None and want == (spec,) \
                else (*have, spec)
        else:
            main.append(MainRoute(r.dst, r.dst_len, r.oif, r.gateway is not None or r.multipath,
                                  r.rtype, r.priority))

    def restart() -> None:
        tables.routes.clear()
        main.clear()

    nl.dump_into(m.RTM_GETROUTE, m.route_dump_body(), m.parse_route, m.RTM_NEWROUTE, take,
                 restart)
    return tables, tuple(main)


class _Encoded(Sequence[tuple[int, int, bytes]]):
    """The requests of a batch of (kind, ops) segments, encoded as the socket takes them
    (one chunk at a time): a first run among thousands of peers never holds every
    encoded message at once."""

    def __init__(self, dev: int, segments: list[tuple[str, list[Any]]]) -> None:
        self.dev, self.segments = dev, segments
        self.starts: list[int] = []
        total = 0
        for _, ops in segments:
            self.starts.append(total)
            total += len(ops)
        self.total = total

    def __len__(self) -> int:
        return self.total

    @overload
    def __getitem__(self, i: int) -> tuple[int, int, bytes]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[int, int, bytes]]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.total))]
        if not 0 <= i < self.total:
            raise IndexError(i)
        seg = bisect_right(self.starts, i) - 1
        kind, ops = self.segments[seg]
        return _encode(self.dev, kind, ops[i - self.starts[seg]])


def _each(segments: list[tuple[str, list[Any]]]) -> Iterator[tuple[str, Any]]:
    for kind, ops in segments:
        for op in ops:
            yield kind, op


def _encode(dev: int, kind: str, op: Any) -> tuple[int, int, bytes]:
    if kind == "neigh":
        return m.RTM_NEWNEIGH, REPLACE, m.neigh_body(dev, op[0], op[1])
    if kind == "fdb":
        return m.RTM_NEWNEIGH, REPLACE, m.fdb_body(dev, op[0], op[1])
    if kind == "route":
        return m.RTM_NEWROUTE, REPLACE, _route(op[0], op[1], False)
    if kind == "neigh-":
        return m.RTM_DELNEIGH, 0, m.neigh_body(dev, op, None)
    if kind == "fdb-":
        return m.RTM_DELNEIGH, 0, m.fdb_body(dev, op[0], op[1])
    return m.RTM_DELROUTE, 0, _route(op[0], op[1], True)


def _route(cidr: str, spec: RouteSpec, delete: bool) -> bytes:
    ip, length = cidr.split("/")
    return m.route_body(ip, int(length), spec.gateway, spec.oif, onlink=spec.onlink,
                        priority=spec.priority, proto=spec.proto if delete else 3, delete=delete)


def _show(op: Any) -> str:
    if isinstance(op, tuple):
        if len(op) == 2 and isinstance(op[1], RouteSpec):
            spec = op[1]
            dev = f" dev #{spec.oif}" if spec.oif else ""
            return f"{op[0]} via {spec.gateway}{dev}{' onlink' if spec.onlink else ''}"
        return " -> ".join(str(x) for x in op if x is not None)
    return str(op)


def _record(plan: Plan, kind: str, op: Any) -> None:
    getattr(plan, {"route-": "route_del", "neigh-": "neigh_del", "fdb-": "fdb_del",
                   "neigh": "neigh_set", "fdb": "fdb_set", "route": "route_set"}[kind]).append(op)


def _was_programmed(previous: Tables | None, kind: str, op: Any) -> bool:
    """Did we have this exact entry in place before (so re-adding it is a repair)?"""
    if previous is None:
        return False
    if kind == "neigh":
        ip, mac = op
        return previous.neighs.get(ip) == mac
    if kind == "fdb":
        mac, dst = op
        return previous.fdb.get(mac) == (dst,)
    if kind == "route":
        cidr, spec = op
        return any(route_matches(spec, h) for h in previous.routes.get(cidr, ()))
    return False


def _hits(e: PeerEntries, bad: set[tuple[str, Any]]) -> bool:
    return (("route", e.route[0]) in bad or (e.neigh is not None and ("neigh", e.neigh[0]) in bad)
            or (e.fdb is not None and ("fdb", e.fdb[0]) in bad))


def _drop_failed(plan: Plan, failed: set[tuple[str, Any]]) -> None:
    if not failed:
        return
    plan.neigh_set[:] = [op for op in plan.neigh_set if ("neigh", op) not in failed]
    plan.fdb_set[:] = [op for op in plan.fdb_set if ("fdb", op) not in failed]
    plan.route_set[:] = [op for op in plan.route_set if ("route", op) not in failed]
