"""PeerWatch: every other node's lease, as a snapshot and then added/changed/removed.

The watch re-lists after every reconnect or compaction and emits the diff,
attributes included; a bad key or value is skipped with one warning (flannel
turns it into "remove every peer"). The diff itself is pure
(flanneld.events.PeerView); this module only does the etcd I/O around it.
It also wakes the lease keeper at once when it sees our own key change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from ipaddress import IPv4Network
from typing import Any

import aetcd

from core.config import NetworkConfig
from core.lease import Lease, PeerKey, check_peer_lease
from flanneld.backoff import Backoff
from flanneld.etcd import is_retryable
from flanneld.events import LeaseEvent, PeerView
from flanneld.subnet_store import SubnetStore

log = logging.getLogger("flanneld.subnet")


class PeerWatch(SubnetStore):
    """The peer watch half of EtcdSubnetManager."""

    async def watch(self, own_subnet: Callable[[], PeerKey | None]
                    ) -> AsyncIterator[LeaseEvent]:
        """Peer lease events: a snapshot first, then added/changed/removed, forever."""
        config = self.config or await self.get_network_config()
        view = PeerView(self.subnets_prefix, partial(self._check_peer, config), log.warning)
        prefix = self.subnets_prefix.encode()
        backoff = Backoff(0.1, 5.0)
        while True:
            started = time.monotonic()
            watched: int | None = None  # the etcd client generation under the watch
            try:
                listing = await self._list()
                revision = listing.header.revision
                events = view.reset(((kv.key.decode("utf-8", "replace"), kv.value, kv.lease,
                                      kv.mod_revision) for kv in listing), own_subnet())
                # Not kept while we watch: the listing holds every key and value twice
                # (gRPC's message and aetcd's objects), a few hundred bytes per peer.
                del listing
                events.reverse()
                while events:  # none stays referenced from this frame once handed over
                    yield events.pop()
                self.status.rejected_leases = view.rejected
                self._watch_ok = True
                self._update_state()
                watch = await self.etcd.watch_prefix(prefix, revision + 1)
                watched = self.etcd.generation
                try:
                    async for ev in self._events_or_lease_changes(watch):
                        own = own_subnet()
                        if ev is None:  # we re-acquired: re-judge our old and new subnet
                            events = view.set_own(own)
                        elif ev.kind == "DELETE":
                            self._note_own_key(ev.kv.key, ev)
                            events = view.delete(ev.kv.key.decode("utf-8", "replace"), own)
                        else:
                            self._note_own_key(ev.kv.key, ev)
                            events = view.put(ev.kv.key.decode("utf-8", "replace"),
                                              ev.kv.value, ev.kv.lease, ev.kv.mod_revision, own)
                        self.status.rejected_leases = view.rejected
                        for event in events:
                            yield event
                finally:
                    await _cancel_quietly(watch)
                # aetcd ends the iterator without an error when its client is reset
                log.info("lease watch ended (etcd client reset); re-listing")
                self.status.watch_restarts += 1
            except aetcd.exceptions.RevisionCompactedError as exc:
                log.info("lease watch: %s; re-listing", exc)
                self.status.watch_restarts += 1
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                self.status.watch_restarts += 1
                if watched is not None and self.etcd.generation != watched:
                    # its client was closed under it (another request failed over):
                    # no outage of its own, so no backoff and no warning
                    log.info("lease watch ended (etcd client reset: %s); re-listing",
                             exc or type(exc).__name__)
                    continue
                self._watch_ok = False
                problem = self._etcd_failed("lease watch failed", exc)
                if time.monotonic() - started > 10:
                    backoff.reset()
                delay = backoff.next()
                log.warning("%s; re-listing in %.1f s", problem, delay)
                await asyncio.sleep(delay)

    def _check_peer(self, config: NetworkConfig, lease: Lease,
                    own: PeerKey | None) -> None:
        own_ips = [ip for ip in (self._attrs.public_ip, self._attrs.public_ipv6)
                   if ip is not None] if self._attrs else []
        own6 = self.lease.ipv6_subnet if self.lease is not None else None
        own4 = own if isinstance(own, IPv4Network) else None
        check_peer_lease(lease, config.ipv4_network, own_subnet=own4, own_public_ips=own_ips,
                         ipv6_network=config.ipv6_network, own_ipv6_subnet=own6)

    async def _events_or_lease_changes(self, watch: Any) -> AsyncIterator[Any]:
        """The watch's events, and None whenever our own lease changed meanwhile."""
        it = watch.__aiter__()
        pending: asyncio.Future[Any] | None = None
        waiter: asyncio.Future[Any] | None = None
        try:
            while True:
                # never cancel a pending __anext__: that would close aetcd's iterator
                pending = pending or asyncio.ensure_future(it.__anext__())
                waiter = asyncio.ensure_future(self._lease_changed.wait())
                done, _ = await asyncio.wait({pending, waiter},
                                             return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if waiter in done:
                    self._lease_changed.clear()
                    yield None
                if pending in done:
                    try:
                        ev = pending.result()
                    except StopAsyncIteration:
                        return
                    pending = None
                    yield ev
        finally:
            for fut in (pending, waiter):
                if fut is not None:
                    fut.cancel()

    def _note_own_key(self, raw_key: bytes, ev: Any) -> None:
        lease = self.lease
        key = raw_key.decode("utf-8", "replace")
        if lease is not None and key == self.key_of(lease.ipv4_subnet, lease.ipv6_subnet):
            if ev.kind == "DELETE" or ev.kv.mod_revision != lease.mod_revision:
                self._own_changed.set()  # wake hold() to check at once


async def _cancel_quietly(watch: Any) -> None:
    try:
        await asyncio.wait_for(watch.cancel(), 2)
    except Exception as exc:  # the stream may already be gone
        log.debug("cancelling lease watch: %r", exc)
