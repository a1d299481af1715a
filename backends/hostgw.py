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

from backends.base import ExternalInterface
from backends.desired import Outcome, PeerContext, hostgw_outcome
from backends.engine import Engine
from core.lease import Lease, LeaseAttrs

if TYPE_CHECKING:
    from core.config import NetworkConfig


class HostGwBackend(Engine):
    backend_type = "host-gw"

    def __init__(self, config: NetworkConfig, ext: ExternalInterface, state_dir: Path,
                 netns: str | None = None) -> None:
        if ext.public != ext.address:
            raise ValueError(
                f"host-gw: the public IP {ext.public} differs from {ext.name}'s address "
                f"{ext.address}; peers route to the public IP directly, which cannot work "
                "behind NAT: drop --public-ip or use the vxlan backend")
        super().__init__(config.network, ext, netns)
        self.mtu = ext.mtu

    def lease_attrs(self) -> LeaseAttrs:
        return LeaseAttrs(public_ip=self.ext.public, backend_type="host-gw")

    def _outcome(self, lease: Lease, ctx: PeerContext) -> Outcome:
        return hostgw_outcome(lease, ctx)
