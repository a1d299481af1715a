"""EtcdSubnetManager: lease a subnet in etcd, keep it, and watch every other node's lease.

Wire-compatible with flannel (same keys and values, see flanneld.lease), and
more careful:
- a lost create race is retried (flannel exits), and so is "out of subnets",
  with backoff, visible in `status` for /readyz;
- one etcd lease per node, kept alive every TTL/3 (bounded), instead of a fresh
  24 h grant per renewal; nothing is written to renew, and any write to our key
  is a compare-and-swap on its mod revision, so we never overwrite a key that
  is no longer ours; losing it (deleted, taken, expired) means re-acquiring,
  logged loudly, instead of silently running on (or exiting 0 like flannel);
- reservations (keys without an etcd lease) stay reservations (flannel#1329);
- the watch re-lists after every reconnect or compaction and emits the diff,
  attributes included; a bad key or value is skipped with one warning
  (flannel turns it into "remove every peer").
Decisions are pure (flanneld.allocator, flanneld.events.PeerView); this module
only does the etcd I/O around them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Literal

import aetcd

from flanneld.allocator import AcquirePlan, Occupied, plan_acquire
from flanneld.config import ConfigError, NetworkConfig, parse_network_config
from flanneld.etcd import Backoff, EtcdClient, is_connection_error, is_retryable
from flanneld.events import LeaseEvent, PeerView
from flanneld.lease import (
    DEFAULT_PREFIX,
    Lease,
    LeaseAttrs,
    LeaseError,
    check_peer_lease,
    decode_attrs,
    encode_attrs,
    join_key,
    parse_subnet_key,
    subnet_key,
)

log = logging.getLogger("flanneld.subnet")

State = Literal["acquiring", "held", "out-of-subnets", "etcd-unreachable"]
DEFAULT_TTL = 86400
MAX_RENEW_INTERVAL = 300.0  # check ownership at least this often, even with a 24 h TTL
CONFIG_LOG_EVERY = 30.0


@dataclass
class ManagerStatus:
    """Plain data for /readyz, /metrics and flannelctl."""

    state: State = "acquiring"
    last_error: str | None = None
    watch_restarts: int = 0
    keepalive_failures: int = 0
    lease_expiry: float | None = None  # unix time; None for a reservation
    subnets_in_use: int = 0
    subnets_total: int = 0
    rejected_leases: int = 0
    renewals: int = 0  # successful keepalive + ownership checks
    reacquisitions: int = 0
    endpoint: str = ""


class OutOfSubnets(Exception):
    pass


class EtcdSubnetManager:
    def __init__(self, endpoints: Sequence[str] | str, prefix: str = DEFAULT_PREFIX, *,
                 ttl: int = DEFAULT_TTL, username: str | None = None,
                 password: str | None = None, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 renew_interval: float | None = None, rng: random.Random | None = None) -> None:
        if ttl < 1:
            raise ValueError(f"lease TTL {ttl}: must be at least 1 second")
        self.etcd = EtcdClient(endpoints, username=username, password=password, cafile=cafile,
                               certfile=certfile, keyfile=keyfile)
        self.prefix = join_key(prefix)
        self.ttl = ttl
        self.renew_interval = renew_interval or min(max(ttl / 3, 0.2), MAX_RENEW_INTERVAL)
        self.config: NetworkConfig | None = None
        self.lease: Lease | None = None
        self.status = ManagerStatus(endpoint=str(self.etcd.endpoint))
        self._rng = rng or random.Random()
        self._attrs: LeaseAttrs | None = None
        self._etcd_lease: int | None = None  # our one etcd lease, granted on first need
        self._etcd_lease_seen = 0.0  # monotonic time it was last known alive
        self._own_changed = asyncio.Event()  # the watch saw our key change: check it now
        self._lease_changed = asyncio.Event()  # self.lease moved: the watch re-judges it
        self._watch_ok = True
        self._lease_ok = True

    # -- keys -------------------------------------------------------------

    @property
    def config_key(self) -> str:
        return join_key(self.prefix, "config")

    @property
    def subnets_prefix(self) -> str:
        return join_key(self.prefix, "subnets") + "/"

    def key_of(self, subnet: IPv4Network, ipv6_subnet: IPv6Network | None = None) -> str:
        return self.subnets_prefix + subnet_key(subnet, ipv6_subnet)

    # -- config -----------------------------------------------------------

    async def get_network_config(self) -> NetworkConfig:
        """Read `<prefix>/config`, waiting (1 s polls) until it exists; ConfigError if bad."""
        last_log = -CONFIG_LOG_EVERY
        while True:
            problem = None
            try:
                kv = await self.etcd.get(self.config_key)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                problem = self._etcd_failed("cannot read the network config", exc)
            else:
                if kv is not None:
                    try:
                        self.config = parse_network_config(kv.value)
                    except ConfigError as exc:
                        raise ConfigError(f"{self.config_key}: {exc}") from None
                    self.status.subnets_total = self.config.subnet_count()
                    self.status.last_error = None
                    return self.config
                problem = (f"network config {self.config_key} does not exist yet; create it, "
                           f"e.g. etcdctl put {self.config_key} "
                           "'{\"Network\":\"10.5.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}'")
            if time.monotonic() - last_log >= CONFIG_LOG_EVERY:
                log.warning("waiting for the network config: %s", problem)
                last_log = time.monotonic()
            await asyncio.sleep(1)

    # -- acquire ----------------------------------------------------------

    async def acquire(self, attrs: LeaseAttrs, previous: IPv4Network | None = None, *,
                      previous_ipv6: IPv6Network | None = None) -> Lease:
        """Lease a subnet in flannel's order; retries races, outages and a full network."""
        self._attrs = attrs
        config = self.config or await self.get_network_config()
        self.status.state = "acquiring"
        race, full, down = Backoff(0.02, 1.0, jitter=0.5), Backoff(1.0, 30.0), Backoff(0.1, 5.0)
        while True:
            try:
                lease = await self._try_acquire(config, attrs, previous, previous_ipv6)
            except OutOfSubnets as exc:
                self.status.state = "out-of-subnets"
                self.status.last_error = str(exc)
                delay = full.next()
                log.error("%s; retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if "lease not found" in str(exc):
                    self._etcd_lease = None  # it expired behind our back: grant a new one
                log.warning("%s", self._etcd_failed("cannot acquire a subnet", exc))
                await down.sleep()
                continue
            if lease is None:  # somebody else got there first: look again
                self.status.state = "acquiring"
                await race.sleep()
                continue
            self.lease = lease
            self._lease_ok = True
            self.status.last_error = None
            if lease.is_reservation:
                self.status.lease_expiry = None
            self._update_state()
            self._lease_changed.set()
            return lease

    async def _try_acquire(self, config: NetworkConfig, attrs: LeaseAttrs,
                           previous: IPv4Network | None,
                           previous_ipv6: IPv6Network | None) -> Lease | None:
        listing = await self._list()
        occupied = []
        for kv in listing:
            try:
                v4, v6 = self._parse_key(kv.key)
            except LeaseError:
                continue  # not a subnet key: occupies nothing
            lease = None
            try:
                lease = Lease(v4, decode_attrs(kv.value), v6, lease_id=kv.lease,
                              mod_revision=kv.mod_revision)
            except LeaseError:
                pass  # a garbage value still occupies its subnet
            occupied.append(Occupied(v4, v6, lease))
        plan = plan_acquire(config, occupied, attrs.public_ip, previous, previous_ipv6,
                            self._rng)
        self.status.subnets_in_use = plan.in_use
        for lease in plan.ignored:
            log.warning("reservation %s carries our PublicIP %s but does not fit the network "
                        "config; leaving it alone and leasing another subnet",
                        lease.key, attrs.public_ip)
        for lease in plan.delete:
            log.warning("deleting our old lease %s: it does not fit the network config "
                        "any more", lease.key)
            await self._delete_if_unchanged(lease)
        if plan.out_of_subnets:
            raise OutOfSubnets(self._out_of_subnets_message(config, plan))
        if plan.reuse is not None:
            return await self._reuse(plan.reuse, attrs)
        assert plan.subnet is not None
        return await self._create(config, plan, attrs)

    def _out_of_subnets_message(self, config: NetworkConfig, plan: AcquirePlan) -> str:
        total = config.subnet_count()
        msg = (f"out of subnets: network {config.network} has {total} "
               f"subnet{'' if total == 1 else 's'} of /{config.subnet_len} between "
               f"{config.subnet_min} and {config.subnet_max} and {plan.in_use} "
               f"{'is' if plan.in_use == 1 else 'are'} in use")
        if config.enable_ipv6:
            msg += f" (or no IPv6 subnet is free in {config.ipv6_network})"
        return (msg + f"; free some (etcdctl del {self.subnets_prefix}<key>) or use a bigger "
                "Network / longer SubnetLen")

    async def _reuse(self, lease: Lease, attrs: LeaseAttrs) -> Lease | None:
        """Step 1: keep our lease; a reservation stays one, never gets a TTL."""
        key = self.key_of(lease.subnet, lease.ipv6_subnet)
        if lease.is_reservation and lease.attrs == attrs:
            log.info("using reservation %s for our PublicIP %s (no TTL)", key, attrs.public_ip)
            return lease
        lease_id = 0 if lease.is_reservation else await self._ensure_etcd_lease()
        new = await self._put_if(key, attrs, lease_id, lease.mod_revision)
        if new is not None:
            log.info("re-using our lease %s (PublicIP %s)%s", key, attrs.public_ip,
                     " as a reservation (no TTL)" if new.is_reservation else "")
            if lease.lease_id not in (0, lease_id):  # the previous run's etcd lease
                try:
                    await self.etcd.revoke(lease.lease_id, only_if_unused=True)
                except aetcd.ClientError as exc:  # best effort: it expires anyway
                    log.debug("revoking old etcd lease %x: %s", lease.lease_id, exc)
        return new

    async def _create(self, config: NetworkConfig, plan: AcquirePlan,
                      attrs: LeaseAttrs) -> Lease | None:
        """Steps 2/3: create the key only if no key for this IPv4 subnet exists."""
        assert plan.subnet is not None
        key = self.key_of(plan.subnet, plan.ipv6_subnet)
        lease_id = await self._ensure_etcd_lease()
        # The guard covers every key of this IPv4 subnet ("10.5.52.0-24" and any
        # "10.5.52.0-24&<v6>"), so two dual-stack nodes cannot share it.
        kv = await self.etcd.create(key, encode_attrs(attrs), lease_id,
                                    unless_prefix=self.key_of(plan.subnet))
        if kv is None:
            log.info("subnet %s was taken by another node just now; trying again", plan.subnet)
            return None
        lease = Lease(plan.subnet, attrs, plan.ipv6_subnet, lease_id=kv.lease,
                      mod_revision=kv.mod_revision)
        if config.enable_ipv6 and not await self._ipv6_unique(lease):
            return None
        log.info("leased subnet %s%s (%s; etcd lease %x, TTL %d s)", plan.subnet,
                 f" and {plan.ipv6_subnet}" if plan.ipv6_subnet else "",
                 {"previous": "same as before the restart",
                  "random": "new"}.get(plan.source, plan.source), lease_id, self.ttl)
        return lease

    async def _ipv6_unique(self, lease: Lease) -> bool:
        """An IPv6 subnet is not covered by the create guard: the older key keeps it."""
        assert lease.ipv6_subnet is not None
        for kv in await self._list():
            try:
                _, v6 = self._parse_key(kv.key)
            except LeaseError:
                continue
            if v6 is not None and v6.overlaps(lease.ipv6_subnet) \
                    and kv.create_revision < lease.mod_revision:
                log.info("IPv6 subnet %s was taken by another node just now; trying again",
                         lease.ipv6_subnet)
                await self._delete_if_unchanged(lease)
                return False
        return True

    # -- hold -------------------------------------------------------------

    async def hold(self, attrs: LeaseAttrs,
                   on_change: Callable[[Lease], Awaitable[None] | None]) -> None:
        """Keep our lease forever: keepalive, ownership checks, re-acquire when lost."""
        self._attrs = attrs
        if self.lease is None:
            await _maybe_await(on_change(await self.acquire(attrs)))
        while True:
            reason = await self._keep(attrs)
            old = self.lease
            assert old is not None
            log.error("LOST our subnet lease %s: %s; re-acquiring a subnet", old.key, reason)
            self.lease = None
            self._lease_ok = False
            self.status.reacquisitions += 1
            self.status.last_error = f"lost lease {old.key}: {reason}"
            new = await self.acquire(attrs, previous=old.subnet, previous_ipv6=old.ipv6_subnet)
            if new.subnet != old.subnet:
                log.error("our subnet CHANGED from %s to %s: pods still using addresses of "
                          "%s must be restarted", old.subnet, new.subnet, old.subnet)
            else:
                log.warning("got our subnet %s back", new.subnet)
            await _maybe_await(on_change(new))
            self._lease_changed.set()  # once more, now that on_change has seen it

    async def _keep(self, attrs: LeaseAttrs) -> str:
        """Renew until the lease is lost; returns why."""
        down = Backoff(0.1, 5.0)
        while True:
            self._own_changed.clear()
            lease = self.lease
            assert lease is not None
            wait = self.renew_interval
            try:
                reason = await self._renew_once(lease, attrs)
                if reason is not None:
                    return reason
                self._lease_ok = True
                self.status.renewals += 1
                down.reset()
                self._update_state()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                self.status.keepalive_failures += 1
                log.warning("%s", self._etcd_failed(f"cannot renew lease {lease.key}", exc))
                wait = min(down.next(), self.renew_interval)
            try:
                await asyncio.wait_for(self._own_changed.wait(), wait)
            except TimeoutError:
                pass

    async def _renew_once(self, lease: Lease, attrs: LeaseAttrs) -> str | None:
        key = lease.key
        full_key = self.key_of(lease.subnet, lease.ipv6_subnet)
        if not lease.is_reservation:
            ttl = await self.etcd.keepalive(lease.lease_id)
            self._etcd_lease_seen = time.monotonic()
            if ttl <= 0:
                self._etcd_lease = None  # expired: the next acquire grants a new one
                return (f"etcd lease {lease.lease_id:x} expired (etcd unreachable for longer "
                        f"than the {self.ttl} s TTL?), and {key} with it")
            self.status.lease_expiry = time.time() + ttl
        kv = await self.etcd.get(full_key)
        if kv is None:
            return f"{key} was deleted"
        if kv.mod_revision != lease.mod_revision:
            try:
                now = decode_attrs(kv.value)
                holder = f"PublicIP {now.public_ip}"
            except LeaseError:
                holder = "an unreadable value"
            return (f"{key} was rewritten by someone else (now {holder}, etcd lease "
                    f"{kv.lease:x})")
        if lease.attrs != attrs:  # our backend data changed: rewrite, only if still ours
            new = await self._put_if(full_key, attrs, lease.lease_id, lease.mod_revision)
            if new is None:
                return f"{key} changed while we were updating it"
            self.lease = new
        return None

    # -- watch ------------------------------------------------------------

    async def watch(self, own_subnet: Callable[[], IPv4Network | None]
                    ) -> AsyncIterator[LeaseEvent]:
        """Peer lease events: a snapshot first, then added/changed/removed, forever."""
        config = self.config or await self.get_network_config()
        view = PeerView(self.subnets_prefix, partial(self._check_peer, config), log.warning)
        prefix = self.subnets_prefix.encode()
        backoff = Backoff(0.1, 5.0)
        while True:
            started = time.monotonic()
            try:
                listing = await self._list()
                kvs = [(kv.key.decode("utf-8", "replace"), kv.value, kv.lease, kv.mod_revision)
                       for kv in listing]
                for event in view.reset(kvs, own_subnet()):
                    yield event
                self.status.rejected_leases = view.rejected
                self._watch_ok = True
                self._update_state()
                watch = await self.etcd.watch_prefix(prefix, listing.header.revision + 1)
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
                self._watch_ok = False
                problem = self._etcd_failed("lease watch failed", exc)
                if time.monotonic() - started > 10:
                    backoff.reset()
                delay = backoff.next()
                log.warning("%s; re-listing in %.1f s", problem, delay)
                await asyncio.sleep(delay)

    def _check_peer(self, config: NetworkConfig, lease: Lease,
                    own: IPv4Network | None) -> None:
        own_ips = [ip for ip in (self._attrs.public_ip, self._attrs.public_ipv6)
                   if ip is not None] if self._attrs else []
        own6 = self.lease.ipv6_subnet if self.lease is not None else None
        check_peer_lease(lease, config.network, own_subnet=own, own_public_ips=own_ips,
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
        if lease is not None and key == self.key_of(lease.subnet, lease.ipv6_subnet):
            if ev.kind == "DELETE" or ev.kv.mod_revision != lease.mod_revision:
                self._own_changed.set()  # wake hold() to check at once

    # -- etcd helpers -----------------------------------------------------

    async def _list(self) -> Any:
        return await self.etcd.list_prefix(self.subnets_prefix)

    def _parse_key(self, raw: bytes) -> tuple[IPv4Network, IPv6Network | None]:
        key = raw.decode("utf-8", "replace")
        name = key[len(self.subnets_prefix):]
        if not key.startswith(self.subnets_prefix) or "/" in name:
            raise LeaseError(f"lease key {key!r}: not directly under {self.subnets_prefix}")
        return parse_subnet_key(name)

    async def _ensure_etcd_lease(self) -> int:
        """Our etcd lease, granted on first need; re-checked if it may have run out
        (acquire can wait a long time, e.g. out of subnets, with nobody renewing)."""
        if self._etcd_lease is not None \
                and time.monotonic() - self._etcd_lease_seen > self.renew_interval:
            ttl = await self.etcd.keepalive(self._etcd_lease)
            self._etcd_lease = self._etcd_lease if ttl > 0 else None
        if self._etcd_lease is None:
            self._etcd_lease, granted = await self.etcd.grant(self.ttl)
            self.status.lease_expiry = time.time() + granted
            if granted != self.ttl:
                log.warning("etcd granted a TTL of %s s instead of %s s", granted, self.ttl)
        self._etcd_lease_seen = time.monotonic()
        return self._etcd_lease

    async def _put_if(self, key: str, attrs: LeaseAttrs, lease_id: int,
                      mod_revision: int) -> Lease | None:
        """Write our value only if the key is still at `mod_revision`."""
        kv = await self.etcd.put_if_unchanged(key, encode_attrs(attrs), lease_id, mod_revision)
        if kv is None:
            return None
        v4, v6 = self._parse_key(key.encode())
        return Lease(v4, attrs, v6, lease_id=kv.lease, mod_revision=kv.mod_revision)

    async def _delete_if_unchanged(self, lease: Lease) -> None:
        await self.etcd.delete_if_unchanged(self.key_of(lease.subnet, lease.ipv6_subnet),
                                            lease.mod_revision)

    # -- status -----------------------------------------------------------

    def _etcd_failed(self, context: str, exc: BaseException) -> str:
        """Record an etcd failure in the status; returns the message to log."""
        down = is_connection_error(exc)
        message = f"{context}: {'etcd unreachable: ' if down else 'etcd error: '}{exc}"
        self.status.last_error = message
        if down:
            self.status.state = "etcd-unreachable"
        return message

    def _update_state(self) -> None:
        self.status.endpoint = str(self.etcd.endpoint)
        if self.lease is None:
            return
        self.status.state = "held" if self._watch_ok and self._lease_ok else "etcd-unreachable"

    async def release(self) -> None:
        """Give the subnet back (decommission): delete our key if still ours, revoke the
        etcd lease. A reservation is left in place."""
        lease = self.lease
        if lease is not None and not lease.is_reservation:
            await self._delete_if_unchanged(lease)
        if self._etcd_lease is not None:
            await self.etcd.revoke(self._etcd_lease)
            self._etcd_lease = None
        self.lease = None

    async def close(self) -> None:
        await self.etcd.close()


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if inspect.isawaitable(result):
        await result


async def _cancel_quietly(watch: Any) -> None:
    try:
        await asyncio.wait_for(watch.cancel(), 2)
    except Exception as exc:  # the stream may already be gone
        log.debug("cancelling lease watch: %r", exc)
