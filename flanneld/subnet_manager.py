"""EtcdSubnetManager: lease a subnet in etcd, keep it, and watch every other node's lease.

Wire-compatible with flannel (same keys and values, see core.lease), and
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
only does the etcd I/O around them: acquire and hold here, the etcd side
(keys, config, guarded writes, status) in flanneld.subnet_store, the watch in
flanneld.peer_watch.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Network, IPv6Network

import aetcd

from core.config import NetworkConfig
from core.lease import Lease, LeaseAttrs, LeaseError, decode_attrs, encode_attrs, subnet_key
from flanneld.allocator import AcquirePlan, Occupied, plan_acquire
from flanneld.backoff import Backoff
from flanneld.etcd import is_retryable
from flanneld.peer_watch import PeerWatch
from flanneld.subnet_store import ManagerStatus

__all__ = ["EtcdSubnetManager", "ManagerStatus", "OutOfSubnets"]

log = logging.getLogger("flanneld.subnet")


class OutOfSubnets(Exception):
    pass


class EtcdSubnetManager(PeerWatch):
    """Acquire and hold our lease; the watch is PeerWatch, state and etcd are SubnetStore."""

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
            self._lease_checked = time.monotonic()
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
                            self._rng, public_ipv6=attrs.public_ipv6)
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
        if plan.replace is not None:
            return await self._migrate(config, plan, attrs)
        return await self._create(config, plan, attrs)

    def _out_of_subnets_message(self, config: NetworkConfig, plan: AcquirePlan) -> str:
        if plan.full == "IPv6":
            total = config.ipv6_subnet_count()
            where = (f"IPv6Network {config.ipv6_network} has {total} "
                     f"subnet{'' if total == 1 else 's'} of /{config.ipv6_subnet_len} between "
                     f"{config.ipv6_subnet_min} and {config.ipv6_subnet_max}")
            bigger = "IPv6Network / longer IPv6SubnetLen"
        else:
            total = config.subnet_count()
            where = (f"network {config.network} has {total} "
                     f"subnet{'' if total == 1 else 's'} of /{config.subnet_len} between "
                     f"{config.subnet_min} and {config.subnet_max}")
            bigger = "Network / longer SubnetLen"
        in_use = (f" and {plan.in_use} {'is' if plan.in_use == 1 else 'are'} in use"
                  if plan.full != "IPv6" or not config.enable_ipv4 else ", all in use")
        return (f"out of subnets: {where}{in_use}; free some (etcdctl del "
                f"{self.subnets_prefix}<key>) or use a bigger {bigger}")

    async def _reuse(self, lease: Lease, attrs: LeaseAttrs) -> Lease | None:
        """Step 1: keep our lease; a reservation stays one, never gets a TTL."""
        key = self.key_of(lease.ipv4_subnet, lease.ipv6_subnet)
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
        """Steps 2/3: create the key only if no key for this IPv4 subnet exists
        (IPv6-only: no key of this name; the IPv6 subnet is checked after the write)."""
        key = self.key_of(plan.subnet, plan.ipv6_subnet)
        lease_id = await self._ensure_etcd_lease()
        # The guard covers every key of this IPv4 subnet ("10.5.52.0-24" and any
        # "10.5.52.0-24&<v6>"), so two dual-stack nodes cannot share it.
        kv = await self.etcd.create(key, encode_attrs(attrs), lease_id,
                                    unless_prefix=self._guard(plan.subnet, key))
        if kv is None:
            log.info("subnet %s was taken by another node just now; trying again",
                     plan.subnet or plan.ipv6_subnet)
            return None
        lease = Lease(plan.subnet, attrs, plan.ipv6_subnet, lease_id=kv.lease,
                      mod_revision=kv.mod_revision)
        if config.enable_ipv6 and not await self._ipv6_unique(lease):
            await self._delete_if_unchanged(lease)
            return None
        log.info("leased subnet %s (%s; etcd lease %x, TTL %d s)", _both(lease),
                 {"previous": "same as before the restart",
                  "random": "new"}.get(plan.source, plan.source), lease_id, self.ttl)
        return lease

    def _guard(self, subnet: IPv4Network | None, key: str) -> str:
        """What a create must find empty: every key of this IPv4 subnet, else the key."""
        return self.key_of(subnet) if subnet is not None else key

    async def _migrate(self, config: NetworkConfig, plan: AcquirePlan,
                       attrs: LeaseAttrs) -> Lease | None:
        """Step 2: our lease fits one family but not the other (the network config gained
        or lost IPv6, or one Network moved): one transaction writes the new key, keeping
        the part that fits, and deletes the old one, only if the old one is unchanged."""
        old = plan.replace
        assert old is not None
        old_key = self.key_of(old.ipv4_subnet, old.ipv6_subnet)
        key = self.key_of(plan.subnet, plan.ipv6_subnet)
        lease_id = await self._ensure_etcd_lease()  # reservations are never migrated
        kept4 = plan.subnet is not None and plan.subnet == old.ipv4_subnet
        # a kept IPv4 subnet is guarded by our old key itself (only the new key must not
        # exist yet); a new one like a create
        guard = None if kept4 else self._guard(plan.subnet, key)
        kv = await self.etcd.replace_key(old_key, old.mod_revision, key, encode_attrs(attrs),
                                         lease_id, unless_prefix=guard)
        if kv is None:
            log.info("could not move %s to %s (changed or taken just now); trying again",
                     old.key, subnet_key(plan.subnet, plan.ipv6_subnet))
            return None
        lease = Lease(plan.subnet, attrs, plan.ipv6_subnet, lease_id=kv.lease,
                      mod_revision=kv.mod_revision)
        if config.enable_ipv6 and plan.ipv6_subnet != old.ipv6_subnet \
                and not await self._ipv6_unique(lease):
            # lost the IPv6 subnet to an older key: put the old key back (our IPv4
            # subnet stays ours all along) and try another IPv6 subnet
            back = await self.etcd.replace_key(key, lease.mod_revision, old_key,
                                               encode_attrs(old.attrs), lease_id)
            if back is None:
                log.warning("could not put %s back after losing its IPv6 subnet", old.key)
            return None
        kept = [str(s) for s in (plan.subnet, plan.ipv6_subnet)
                if s is not None and s in (old.ipv4_subnet, old.ipv6_subnet)]
        log.warning("moved our lease %s to %s: the network config's families changed; "
                    "kept %s (etcd lease %x)", old.key, lease.key, " and ".join(kept),
                    lease_id)
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
                return False
        return True

    # -- hold -------------------------------------------------------------

    async def hold(self, attrs: LeaseAttrs,
                   on_change: Callable[[Lease], Awaitable[None] | None]) -> None:
        """Keep our lease forever: keepalive, ownership checks, re-acquire when lost."""
        self._attrs = self._republished or attrs  # a restarted hold keeps what was republished
        if self.lease is None:
            await _maybe_await(on_change(await self.acquire(self._attrs)))
        while True:
            reason = await self._keep(attrs)
            old = self.lease
            assert old is not None
            log.error("LOST our subnet lease %s: %s; re-acquiring a subnet", old.key, reason)
            self.lease = None
            self._lease_ok = False
            self.status.reacquisitions += 1
            self.status.last_error = f"lost lease {old.key}: {reason}"
            new = await self.acquire(self._attrs or attrs, previous=old.ipv4_subnet,
                                     previous_ipv6=old.ipv6_subnet)
            if (new.ipv4_subnet, new.ipv6_subnet) != (old.ipv4_subnet, old.ipv6_subnet):
                log.error("our subnet CHANGED from %s to %s: pods still using addresses of "
                          "%s must be restarted", _both(old), _both(new), _both(old))
            else:
                log.warning("got our subnet %s back", _both(new))
            await _maybe_await(on_change(new))
            self._lease_changed.set()  # once more, now that on_change has seen it

    def republish(self, attrs: LeaseAttrs) -> None:
        """Our lease value changed (vxlan: a new VtepMAC): hold() rewrites our key with it
        now, only while the key is still ours, and keeps it from then on."""
        self._attrs = self._republished = attrs
        self._own_changed.set()

    async def _keep(self, attrs: LeaseAttrs) -> str:
        """Renew until the lease is lost; returns why.

        The first renewal comes one interval after acquire wrote or checked the lease (or
        at once when our key changes): renewing right away cost every node a keepalive and
        a read more at every start of the cluster."""
        down = Backoff(0.1, 5.0)
        since = time.monotonic() - self._lease_checked
        wait = min(max(self.renew_interval - since, 0.0), self.renew_interval)
        while True:
            try:
                await asyncio.wait_for(self._own_changed.wait(), wait)
            except TimeoutError:
                pass
            self._own_changed.clear()
            lease = self.lease
            assert lease is not None
            wait = self.renew_interval
            try:
                reason = await self._renew_once(lease, self._attrs or attrs)
                if reason is not None:
                    return reason
                self._lease_ok = True
                self._lease_checked = time.monotonic()
                self.status.renewals += 1
                down.reset()
                self._update_state()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                self.status.keepalive_failures += 1
                log.warning("%s", self._etcd_failed(f"cannot renew lease {lease.key}", exc))
                wait = min(down.next(), self.renew_interval)

    async def _renew_once(self, lease: Lease, attrs: LeaseAttrs) -> str | None:
        key = lease.key
        full_key = self.key_of(lease.ipv4_subnet, lease.ipv6_subnet)
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


def _both(lease: Lease) -> str:
    return " and ".join(str(s) for s in (lease.ipv4_subnet, lease.ipv6_subnet) if s is not None)


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if inspect.isawaitable(result):
        await result
