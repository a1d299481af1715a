"""Exec'ing a real delegate plugin from CNI_PATH, as flannel does (invoke.DelegateAdd/Del).

Used for delegate types we do not serve in-process (anything but `bridge`) and
for DEL of attachments that flannel itself made before a node moved to
pyflannel (their scratch file names the delegate config to tear down).
"""

from __future__ import annotations

import json
import os

from cni import state
from cni.delegate import FlannelConf, scratch_bytes
from cni.protocol import INTERNAL, INVALID_CONFIG, CniError, Request, shown

TYPE_CHECKING = False  # typing costs ~2 ms to import: annotations only
if TYPE_CHECKING:
    from typing import Any


def find_plugin(kind: str, cni_path: str) -> str:
    if not kind or "/" in kind:
        raise CniError(INVALID_CONFIG, f"delegate type {shown(kind)} is not a plugin name")
    for directory in (cni_path or "").split(":"):
        if directory:
            candidate = os.path.join(directory, kind)
            if os.access(candidate, os.X_OK):
                return candidate
    raise CniError(INTERNAL, f'failed to find plugin "{kind}" in path [{cni_path}]',
                   "set CNI_PATH to the directory holding the delegate plugin")


def run_plugin(req: Request, command: str, conf: bytes) -> bytes:
    """Exec a plugin with the request's env (CNI_COMMAND replaced); its error passes through."""
    import subprocess
    kind = json.loads(conf).get("type", "")
    exe = find_plugin(kind, req.path)
    env = dict(os.environ)
    env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": req.container_id,
                "CNI_NETNS": req.netns, "CNI_IFNAME": req.ifname, "CNI_PATH": req.path})
    proc = subprocess.run([exe], input=conf, capture_output=True, env=env, timeout=120)
    if proc.returncode == 0:
        return proc.stdout
    try:
        err = json.loads(proc.stdout)
        raise CniError(int(err.get("code", INTERNAL)), str(err.get("msg", "delegate failed")),
                       str(err.get("details", "")))
    except (ValueError, AttributeError, TypeError):
        raise CniError(INTERNAL, f"delegate {kind} failed (exit {proc.returncode})",
                       proc.stderr.decode(errors="replace").strip()) from None


def delegate_add(req: Request, fc: FlannelConf, d: dict[str, Any]) -> bytes:
    data = scratch_bytes(d)
    state.save_scratch(fc.data_dir, req.container_id, data)
    return run_plugin(req, "ADD", data)


def delegate_check(req: Request, fc: FlannelConf, d: dict[str, Any], prev: dict[str, Any]
                   ) -> None:
    run_plugin(req, "CHECK", scratch_bytes(dict(d, prevResult=prev)))


def delegate_del(req: Request, fc: FlannelConf, scratch: bytes) -> None:
    """flannel's doCmdDel: an unparsable scratch file is left alone and DEL succeeds."""
    try:
        json.loads(scratch)
    except ValueError:
        return
    run_plugin(req, "DEL", scratch)
