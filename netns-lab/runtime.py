"""A container runtime's side of CNI, as the lab needs it: a pod is a namespace plus CNI ADD.

The plugin is exec'd exactly as containerd or CRI-O would: from the host's
network and mount namespaces, with CNI_* in the environment and the network config on
stdin, one plugin of the host's conflist at a time (chained with prevResult).
Nothing here configures a pod's network itself.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CNI_SYSTEM_DIR = Path("/usr/lib/cni")
CONFLIST_NAME = "10-flannel.conflist"


class CniError(RuntimeError):
    """A plugin's error result (code, msg, details) or a plugin that would not run."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        self.code = code
        self.msg = msg
        self.details = details
        extra = f": {details}" if details else ""
        super().__init__(f"CNI {command} via {plugin} failed (code {code}): {msg}{extra}")


def flannel_conflist(host_dir: Path) -> dict[str, Any]:
    """kube-flannel's conflist, with the host's own subnet.env and state directories."""
    return {
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [{
            "type": "flannel",
            "subnetFile": str(host_dir / "subnet.env"),
            "dataDir": str(host_dir / "cni-flannel"),
            # flannel merges this into the delegate's host-local IPAM config.
            "ipam": {"dataDir": str(host_dir / "ipam")},
            "delegate": {"hairpinMode": True, "isDefaultGateway": True},
        }],
    }


def write_conflist(host_dir: Path) -> Path:
    path = host_dir / "cni" / CONFLIST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(flannel_conflist(host_dir), indent=2) + "\n")
    return path


def find_plugin(plugin_type: str, cni_path: Sequence[Path]) -> Path:
    for d in cni_path:
        cand = d / plugin_type
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    raise CniError(plugin_type, "lookup", 0, f"plugin {plugin_type!r} not found in "
                   f"{':'.join(map(str, cni_path))}",
                   "is the flannel CNI plugin installed (flannelctl install-cni)?")


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in version.split("."))
    except ValueError:
        return (0,)


class Runtime:
    """CNI invocations for one host: its namespace, conflist and CNI_PATH; `enter` is the
    argv prefix that runs a plugin on the host (default: `ip netns exec <host_ns>`)."""

    def __init__(self, host_ns: str, conflist: Path, cni_path: Sequence[Path], *,
                 enter: Sequence[str] | None = None) -> None:
        self.host_ns = host_ns
        self.conflist_path = conflist
        self.cni_path = list(cni_path)
        self.enter = list(enter) if enter is not None else ["ip", "netns", "exec", host_ns]

    def conflist(self) -> dict[str, Any]:
        return json.loads(self.conflist_path.read_text())

    def exec_plugin(self, plugin_type: str, command: str, conf: dict[str, Any], *,
                    container_id: str, netns_path: str, ifname: str,
                    cni_args: str = "") -> dict[str, Any] | None:
        exe = find_plugin(plugin_type, self.cni_path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
                    "CNI_NETNS": netns_path, "CNI_IFNAME": ifname,
                    "CNI_PATH": ":".join(map(str, self.cni_path))})
        if cni_args:
            env["CNI_ARGS"] = cni_args
        try:
            proc = subprocess.run([*self.enter, str(exe)],
                                  input=json.dumps(conf), capture_output=True, text=True,
                                  env=env, timeout=60)
        except subprocess.TimeoutExpired:
            raise CniError(plugin_type, command, 0, "plugin timed out after 60 s") from None
        out = proc.stdout.strip()
        if proc.returncode != 0:
            try:
                err = json.loads(out)
                raise CniError(plugin_type, command, int(err.get("code", 0)),
                               str(err.get("msg", "")), str(err.get("details", "")))
            except (ValueError, AttributeError):
                raise CniError(plugin_type, command, proc.returncode,
                               out or proc.stderr.strip() or "no output") from None
        if not out:
            return None
        try:
            return json.loads(out)
        except ValueError:
            raise CniError(plugin_type, command, 0, f"output is not JSON: {out[:200]}") from None

    def _plugin_conf(self, conflist: dict[str, Any], plugin: dict[str, Any],
                     prev: dict[str, Any] | None) -> dict[str, Any]:
        conf = dict(plugin)
        conf["name"] = conflist["name"]
        conf["cniVersion"] = conflist["cniVersion"]
        if prev is not None:
            conf["prevResult"] = prev
        return conf

    def add(self, container_id: str, netns_path: str, ifname: str = "eth0",
            pod_name: str = "") -> dict[str, Any]:
        conflist = self.conflist()
        args = cni_args(container_id, pod_name)
        result: dict[str, Any] | None = None
        for plugin in conflist["plugins"]:
            result = self.exec_plugin(plugin["type"], "ADD",
                                      self._plugin_conf(conflist, plugin, result),
                                      container_id=container_id, netns_path=netns_path,
                                      ifname=ifname, cni_args=args) or result
        if result is None:
            raise CniError("conflist", "ADD", 0, "no plugin returned a result")
        return result

    def delete(self, container_id: str, netns_path: str, ifname: str = "eth0",
               pod_name: str = "", prev_result: dict[str, Any] | None = None) -> None:
        conflist = self.conflist()
        # prevResult on DEL exists from CNI 0.4.0 on.
        prev = prev_result if _version_tuple(conflist["cniVersion"]) >= (0, 4, 0) else None
        for plugin in reversed(conflist["plugins"]):
            self.exec_plugin(plugin["type"], "DEL", self._plugin_conf(conflist, plugin, prev),
                             container_id=container_id, netns_path=netns_path,
                             ifname=ifname, cni_args=cni_args(container_id, pod_name))


def cni_args(container_id: str, pod_name: str) -> str:
    """CNI_ARGS as a Kubernetes runtime sends them."""
    return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id}")


def result_address(result: dict[str, Any], version: int) -> str:
    """The pod's first address of IP `version` (without prefix length) in an ADD result;
    "" if it has none of that family."""
    for entry in result.get("ips", []):
        addr = str(entry.get("address", ""))
        if addr and (":" in addr) == (version == 6):
            return addr.split("/")[0]
    return ""


def result_ipv4(result: dict[str, Any]) -> str:
    """The pod's IPv4 address (without prefix length) from an ADD result."""
    addr = result_address(result, 4)
    if not addr:
        raise CniError("result", "ADD", 0,
                       f"no IPv4 address in result: {json.dumps(result)[:300]}")
    return addr
