"""A vxlan device's persisted MAC (`<state_dir>/vtep-mac.<device>`): the I/O edge.

The format and the node binding are `backends.vtep_mac`'s (pure). Both vxlan devices,
`flannel.<VNI>` and `flannel-v6.<VNI>`, keep theirs here, so a device lost with a
reboot comes back with the MAC its peers already know.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from backends import vtep_mac

log = logging.getLogger("pyflannel.backends.vxlan")


class MacStore:
    def __init__(self, path: Path, identity: str) -> None:
        self.path, self.identity = path, identity

    def load(self) -> str | None:
        """The file's MAC if it is ours to use (bound to this node, or the old format)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        f = vtep_mac.read_mac_file(text, self.identity)
        if f.status == "invalid":
            log.warning("ignoring %s: %s", self.path, f.detail)
        elif f.status == "foreign":
            log.warning("not reusing the VtepMAC in %s: it was written by another node (%s; "
                        "we are %s), a state directory cloned or copied; drawing a new one",
                        self.path, f.detail, self.identity)
        elif f.status == "legacy":
            log.info("adopting %s (old format, not bound to a node); rewriting it bound to "
                     "this node", self.path)
        return f.mac

    def keep(self, mac: str) -> None:
        """Write the file unless it already holds `mac` bound to this node."""
        want = vtep_mac.render_mac_file(mac, self.identity)
        try:
            if self.path.read_text() == want:
                return
        except FileNotFoundError:
            pass
        self.write(mac)

    def write(self, mac: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(vtep_mac.render_mac_file(mac, self.identity))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
