"""Real containers: podman (CNI backend) on a network whose conflist uses our plugin.

kube-flannel's conflist (flannel + portmap, cniVersion 0.3.1) with our paths added.
Podman runs in our host netns (nsenter --net, not `ip netns exec`, which
remounts /sys), with runc, vfs storage and a private containers.conf in temp
dirs; the image is a busybox rootfs imported from the Debian busybox-static
binary, so no registry is involved.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cnihelp import Node
from netns_lab.netns import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow]

IMAGE = "localhost/pyflannel-busybox:latest"
APPLETS = ("sh", "ping", "sleep", "ip", "true", "cat")


def _unusable() -> str:
    for tool in ("podman", "runc", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (dev.sh installs it)"
    if not Path("/bin/busybox").exists():
        return "/bin/busybox missing: install busybox-static (in dev.sh's APT_PACKAGES)"
    return ""


class Podman:
    def __init__(self, node: Node, root: Path) -> None:
        self.node = node
        self.root = root
        self.runroot = tempfile.mkdtemp(prefix="pfpm", dir="/tmp")  # podman: <= 50 characters
        (root / "net.d").mkdir(parents=True)
        nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
        # No CAP_SYS_RESOURCE here: limits must not exceed ours, or runc's setrlimit fails.
        (root / "containers.conf").write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile=1024:1024", "nproc={nproc}:{nproc}"]\n'
            "[network]\n"
            'network_backend = "cni"\n'
            f'network_config_dir = "{root / "net.d"}"\n'
            f'cni_plugin_dirs = ["{node.bin_dir}", "/usr/lib/cni"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n')
        flannel = {k: v for k, v in node.conf("0.3.1").items() if k not in ("cniVersion", "name")}
        conflist = {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
            flannel, {"type": "portmap", "capabilities": {"portMappings": True}}]}
        (root / "net.d" / "10-flannel.conflist").write_text(json.dumps(conflist))

    def __call__(self, *args: str, check: bool = True, timeout: float = 120
                 ) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--net=/run/netns/{self.node.host}", "podman",
                "--root", str(self.root / "root"), "--runroot", self.runroot,
                "--storage-driver", "vfs", *args]
        env = dict(os.environ, CONTAINERS_CONF=str(self.root / "containers.conf"))
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: rc={proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def import_busybox(self) -> None:
        rootfs = self.root / "rootfs"
        for d in ("bin", "proc", "sys", "dev", "etc", "tmp"):
            (rootfs / d).mkdir(parents=True)
        shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        tar = self.root / "busybox.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        self("import", str(tar), IMAGE)


@pytest.fixture
def podman(served: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    reason = _unusable()
    if reason:
        pytest.skip(reason)
    had_var_lib_cni = Path("/var/lib/cni").exists()
    pm = Podman(served, tmp_path_factory.mktemp("podman"))
    pm.import_busybox()
    try:
        yield pm
    finally:
        pm("rm", "--all", "--force", "--time", "0", check=False)
        shutil.rmtree(pm.runroot, ignore_errors=True)
        if not had_var_lib_cni:  # libcni's result cache; remove what it created, if empty
            for d in ("/var/lib/cni/results", "/var/lib/cni"):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def test_two_containers_ping_and_rm_leaves_nothing(podman: Podman) -> None:
    node = podman.node
    podman("run", "-d", "--name", "a", "--network", "cbr0", IMAGE, "sleep", "600")
    ip_a = podman("inspect", "a", "--format",
                  "{{.NetworkSettings.Networks.cbr0.IPAddress}}").stdout.strip()
    assert ip_a.startswith("10.5.52.")
    owner = node.reservations()[ip_a]
    assert owner.split("\r\n")[1] == "eth0" and len(owner.split("\r\n")[0]) == 64  # podman id
    ping = podman("run", "--rm", "--network", "cbr0", "--cap-add", "NET_RAW", IMAGE,
                  "ping", "-c", "2", "-W", "2", ip_a)
    assert "2 packets received" in ping.stdout, ping.stdout
    assert list(node.reservations()) == [ip_a]  # --rm released the second container's
    podman("rm", "--force", "--time", "0", "a")
    assert node.reservations() == {}
    wait_for(lambda: node.host_veths() == [], 20, what="host veths gone")


def test_podman_static_ip_and_mac_via_cni_args(podman: Podman) -> None:
    out = podman("run", "--rm", "--network", "cbr0", "--ip", "10.5.52.99",
                 "--mac-address", "0a:58:0a:05:34:63", IMAGE, "ip", "addr", "show", "eth0")
    assert "10.5.52.99/24" in out.stdout and "0a:58:0a:05:34:63" in out.stdout
    assert podman.node.reservations() == {}


def test_podman_without_flanneld_uses_the_fallback(podman: Podman) -> None:
    podman.node.stop_server()
    out = podman("run", "--rm", "--network", "cbr0", IMAGE, "ip", "-4", "addr", "show", "eth0")
    assert "10.5.52." in out.stdout
    assert podman.node.reservations() == {}
