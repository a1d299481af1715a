"""The etcd side of the subnet manager: keys, the network config, guarded writes,
our one etcd lease, and the status.

SubnetStore is the base EtcdSubnetManager (flanneld.subnet_manager) builds on;
PeerWatch (flanneld.peer_watch) shares it. Every write to a lease key is a
compare-and-swap on its mod revision, so we never overwrite a key that is no
longer ours.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Literal

from core.config import ConfigError, NetworkConfig, parse_network_config
from core.lease import (
    DEFAULT_PREFIX,
    Lease,
    LeaseAttrs,
    LeaseError,
    encode_attrs,
    join_key,
    parse_subnet_key,
    subnet_key,
)
from flanneld.etcd import EtcdClient, is_connection_error, is_retryable

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


class SubnetStore:
    """The manager's state and its etcd plumbing; acquire, hold and watch build on it."""

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
        self._republished: LeaseAttrs | None = None  # our value as changed since start-up
        self._etcd_lease: int | None = None  # our one etcd lease, granted on first need
        self._etcd_lease_seen = 0.0  # monotonic time it was last known alive
        self._lease_checked = 0.0  # monotonic time our lease key was last written or checked
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

    def key_of(self, subnet: IPv4Network | None,
               ipv6_subnet: IPv6Network | None = None) -> str:
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
                    cfg = self.config
                    self.status.subnets_total = (cfg.subnet_count() if cfg.enable_ipv4
                                                 else cfg.ipv6_subnet_count())
                    self.status.last_error = None
                    return self.config
                problem = (f"network config {self.config_key} does not exist yet; create it, "
                           f"e.g. etcdctl put {self.config_key} "
                           "'{\"Network\":\"10.5.0.0/16\",\"Backend\":{\"Type\":\"vxlan\"}}'")
            if time.monotonic() - last_log >= CONFIG_LOG_EVERY:
                log.warning("waiting for the network config: %s", problem)
                last_log = time.monotonic()
            await asyncio.sleep(1)

    # -- etcd helpers -----------------------------------------------------

    async def _list(self) -> Any:
        return await self.etcd.list_prefix(self.subnets_prefix)

    def _parse_key(self, raw: bytes) -> tuple[IPv4Network | None, IPv6Network | None]:
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
        await self.etcd.delete_if_unchanged(self.key_of(lease.ipv4_subnet, lease.ipv6_subnet),
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
