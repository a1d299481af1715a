"""The subnet manager seam: what the daemon needs from whoever keeps the leases.

flannel's seam too (its subnet.Manager). EtcdSubnetManager is the one we ship; a
Kubernetes-API manager would be another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import IPv4Network, IPv6Network
from typing import Protocol

from core.config import NetworkConfig
from core.lease import Lease, LeaseAttrs, PeerKey
from flanneld.events import LeaseEvent
from flanneld.subnet_store import ManagerStatus


class SubnetManager(Protocol):
    status: ManagerStatus  # plain data for /readyz, /metrics and flannelctl
    lease: Lease | None  # ours, once acquired; None while (re)acquiring

    async def get_network_config(self) -> NetworkConfig:
        """The cluster's network config, waiting until it exists."""
        ...

    async def acquire(self, attrs: LeaseAttrs, previous: IPv4Network | None = None, *,
                      previous_ipv6: IPv6Network | None = None) -> Lease:
        """Lease a subnet (preferring `previous`, `previous_ipv6`), retrying until one is had."""
        ...

    async def hold(self, attrs: LeaseAttrs,
                   on_change: Callable[[Lease], Awaitable[None] | None]) -> None:
        """Keep our lease forever; `on_change` hears of every re-acquisition."""
        ...

    def republish(self, attrs: LeaseAttrs) -> None:
        """Our lease value changed: write it to our key (while still ours) and keep it."""
        ...

    def watch(self, own_subnet: Callable[[], PeerKey | None]
              ) -> AsyncIterator[LeaseEvent]:
        """Peer lease events: a snapshot, then added/changed/removed; ours is never one."""
        ...

    async def close(self) -> None:
        ...
