"""pyflannel backends: the data-plane programmers (vxlan, host-gw, wireguard).

`create_backend` is the one entry point; backend modules are imported only
when chosen, so importing this package stays cheap.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from pathlib import Path

    from backends.base import Backend, ExternalInterface
    from core.config import NetworkConfig

SUPPORTED = ("vxlan", "host-gw", "wireguard")


def create_backend(config: NetworkConfig, ext: ExternalInterface, state_dir: Path,
                   netns: str | None = None, *, wireguard_userspace: str = "auto") -> Backend:
    """The backend for `config.backend_type`, driving `netns` (None: the current namespace).

    `wireguard_userspace`: flanneld's --wireguard-userspace (auto, never or a path)."""
    if config.backend_type == "vxlan":
        from backends.vxlan import VxlanBackend
        return VxlanBackend(config, ext, state_dir, netns)
    if config.backend_type == "host-gw":
        from backends.hostgw import HostGwBackend
        return HostGwBackend(config, ext, state_dir, netns)
    if config.backend_type == "wireguard":
        from backends.wireguard import WireguardBackend
        return WireguardBackend(config, ext, state_dir, netns, userspace=wireguard_userspace)
    raise ValueError(f"Backend.Type {config.backend_type!r} is not supported: "
                     f"use one of {', '.join(SUPPORTED)}")
