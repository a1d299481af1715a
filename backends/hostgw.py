"""The host-gw backend: a route `S via P dev <ext>` per peer, nothing else.

As in flannel it needs every node on one L2 segment. Unlike flannel, a peer
whose PublicIP is not in a directly connected subnet of the external
interface is not handed to the kernel again and again: it is reported in
`ReconcileResult.unreachable` with the reason (logged once per change), and
re-evaluated from the kernel's routes on every full reconcile, so it is
programmed as soon as it becomes reachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from backends.base import ExternalInterface, ReconcileResult
from backends.desired import Outcome, PeerContext, hostgw_outcome
from backends.engine import Engine, log
from backends.plane6 import Route6Plane
from core.lease import Lease, LeaseAttrs

if TYPE_CHECKING:
    from core.config import NetworkConfig


class HostGwBackend(Engine):
    backend_type = "host-gw"

    def __init__(self, config: NetworkConfig, ext: ExternalInterface, state_dir: Path,
                 netns: str | None = None) -> None:
        if config.enable_ipv4 and ext.public != ext.address:
            raise ValueError(
                f"host-gw: the public IP {ext.public} differs from {ext.name}'s address "
                f"{ext.address}; peers route to the public IP directly, which cannot work "
                "behind NAT: drop --public-ip or use the vxlan backend")
        super().__init__(config.ipv4_network if config.enable_ipv4 else None, ext, netns)
        self.mtu = ext.mtu
        self.plane6: Route6Plane | None = None
        if config.enable_ipv6 and config.ipv6_network is not None:
            if ext.public_ipv6 is None:
                raise ValueError(f"host-gw: IPv6 is enabled but {ext.name} has no public "
                                 "IPv6 address: give it one, or pass --public-ipv6")
            self.plane6 = Route6Plane(self.nl, config.ipv6_network, ext.index, ext.name)

    def lease_attrs(self) -> LeaseAttrs:
        # flannel's dual-stack host-gw lease: PublicIPv6, and no BackendData in either family
        return LeaseAttrs(public_ip=self.ext.public, backend_type="host-gw",
                          public_ipv6=self.ext.public_ipv6 if self.plane6 else None)

    def _reconcile(self, own: Lease, changes: dict[str, Lease | None], *,
                   full: bool) -> ReconcileResult:
        result = super()._reconcile(own, changes, full=full)
        if self.plane6 is None or own.ipv6_subnet is None:
            return result
        try:
            self.plane6.reconcile(own, changes, self._peers.leases, result, full=result.full)
        except OSError as exc:
            self.plane6.forget()
            log.warning("host-gw IPv6 reconcile failed: %s", exc)
            result.errors.append(f"host-gw IPv6: {exc}")
        else:
            if not self.ipv4:  # the IPv6 routes are the whole data plane
                result.programmed_peers = self.plane6.programmed
                result.skipped = self.plane6.skipped
        return result

    def _forget(self) -> None:
        super()._forget()
        if self.plane6 is not None:
            self.plane6.forget()

    def _outcome(self, lease: Lease, ctx: PeerContext) -> Outcome:
        return hostgw_outcome(lease, ctx)
