"""backends.wg_device against the real wireguard-go, in a throwaway network namespace with
a mount namespace of its own (its /run/wireguard is private, as on a lab host).

Each step runs in a child Python entered into both namespaces, as flanneld runs on a
node: starting wireguard-go detached (its own session, output to a file, not a pipe),
setting peers with our UAPI encoder and reading them back with our parser, adopting the
running device from a second process (same pid), starting again after wireguard-go was
killed (its stale socket left behind), re-making a tun link that nothing serves, and
the errors for `never` on this kernel and for a path that is no executable.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_lab import wgview
from netns_lab.netns import Sandbox, ip, kill_pids, netns_pids, run, wait_for

from core.wgkey import clamp, encode_key, generate_private_key, public_key

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("wireguard-go") is None,
                                 reason="wireguard-go is not installed")]
ROOT = Path(__file__).resolve().parents[2]
PRELUDE = """
import json, os, sys, time
sys.path[:0] = [{root!r}, {lab!r}]
from backends import wg_device
from backends.wg_desired import PeerPlan, WgPeer
from backends.wg_uapi import parse_get, render_set
def out(**kw):
    print(json.dumps(kw))
"""


_count = itertools.count()


@pytest.fixture
def node(sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[Sandbox, str, Path]]:
    ns = sandbox.add_netns(f"wgdev{next(_count)}")
    run_dir, wg_dir = tmp_path / "run-flannel", tmp_path / "run-wireguard"
    run_dir.mkdir()
    wg_dir.mkdir()
    sandbox.add_mount_ns(ns, [(run_dir, "/run/flannel"), (wg_dir, "/run/wireguard")])
    try:
        yield sandbox, ns, run_dir
    finally:
        kill_pids(netns_pids(ns), signal.SIGKILL, 5)  # wireguard-go and the mount ns holder
        run(["ip", "netns", "del", ns], check=False)


def wireguard_go_pids(box: Sandbox, ns: str) -> list[int]:
    return wgview.wireguard_go_pids(ns)


def step(node: tuple[Sandbox, str, Path], body: str, check: bool = True) -> dict[str, Any]:
    box, ns, _ = node
    code = PRELUDE.format(root=str(ROOT), lab=str(ROOT / "netns-lab")) + textwrap.dedent(body)
    proc = subprocess.run([*box.enter(ns), sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"rc": proc.returncode, "stderr": proc.stderr}


def keys(n: int) -> list[str]:
    return [encode_key(public_key(generate_private_key())) for _ in range(n)]


def test_start_set_and_read_back(node: tuple[Sandbox, str, Path]) -> None:
    a, b, c = keys(3)
    got = step(node, f"""
        dev = wg_device.open_device("flannel-wg", netns=None, mtu=1420)
        peers = (WgPeer({a!r}, "192.0.2.11:51820", ("10.5.1.0/24",)),
                 WgPeer({b!r}, "[2001:db8::12]:51821", ("10.5.2.0/24", "fd00:5:2::/64"),
                        bytes(range(32)), 25),
                 WgPeer({c!r}, "192.0.2.13:51999", ("10.5.3.0/24",)))
        dev.set(render_set(private_key=bytes(range(1, 33)), listen_port=51820,
                           plan=PeerPlan(peers), prime=({a!r},)))
        dev.set(render_set(plan=PeerPlan((), ({c!r},))))
        state = parse_get(dev.get())
        sid, pgid = os.getsid(dev.info.pid), os.getpgid(dev.info.pid)
        out(info=vars(dev.info), sid=sid, my_sid=os.getsid(0), pgid=pgid,
            stdout=os.readlink(f"/proc/{{dev.info.pid}}/fd/1"), port=state.listen_port,
            key=state.private_key.hex(),
            peers={{k: [p.endpoint, list(p.allowed_ips), p.psk.hex() if p.psk else None,
                        p.keepalive] for k, p in state.peers.items()}})
    """)
    assert got["info"]["kind"] == "userspace" and not got["info"]["adopted"]
    pid = got["info"]["pid"]
    assert got["sid"] == pid != got["my_sid"] and got["pgid"] == pid  # a session of its own
    assert got["stdout"].endswith("/run/flannel/flannel-wg.wireguard-go.log")
    # the device holds the key as X25519 uses it: clamped (the backend compares it so)
    assert got["port"] == 51820 and got["key"] == clamp(bytes(range(1, 33))).hex()
    assert got["peers"] == {
        a: ["192.0.2.11:51820", ["10.5.1.0/24"], None, 0],  # primed, and its keepalive off again
        b: ["[2001:db8::12]:51821", ["10.5.2.0/24", "fd00:5:2::/64"], bytes(range(32)).hex(),
            25]}
    link = json.loads(ip("-j", "link", "show", "flannel-wg", netns=node[1]))[0]
    assert link["ifname"] == "flannel-wg"  # a tun link of the node's own namespace


def test_a_second_process_adopts_the_running_device(node: tuple[Sandbox, str, Path]) -> None:
    first = step(node, """
        dev = wg_device.open_device("flannel-wg", netns=None, mtu=1420)
        dev.set(render_set(listen_port=51820))
        out(info=vars(dev.info))
    """)["info"]
    again = step(node, """
        dev = wg_device.open_device("flannel-wg", netns=None, mtu=1420)
        out(info=vars(dev.info), port=parse_get(dev.get()).listen_port)
    """)
    assert again["info"] == {**first, "adopted": True} and again["port"] == 51820
    assert wireguard_go_pids(node[0], node[1]) == [first["pid"]]


def test_wireguard_go_killed_is_started_again(node: tuple[Sandbox, str, Path]) -> None:
    first = step(node, """
        dev = wg_device.open_device("flannel-wg", netns=None, mtu=1420)
        out(info=vars(dev.info))
    """)["info"]
    os.kill(first["pid"], 9)
    wait_for(lambda: not wireguard_go_pids(node[0], node[1]), 10, what="wireguard-go to exit")
    again = step(node, """
        dev = wg_device.open_device("flannel-wg", netns=None, mtu=1420)
        out(info=vars(dev.info), port=parse_get(dev.get()).listen_port)
    """)["info"]
    assert not again["adopted"] and again["pid"] != first["pid"]
    assert wireguard_go_pids(node[0], node[1]) == [again["pid"]]


def test_a_tun_nobody_serves_is_made_again(node: tuple[Sandbox, str, Path]) -> None:
    ip("tuntap", "add", "dev", "flannel-wg", "mode", "tun", netns=node[1])
    got = step(node, """
        dev = wg_device.open_device("flannel-wg", netns=None, mtu=1420)
        out(info=vars(dev.info), port=parse_get(dev.get()).listen_port)
    """)
    assert got["info"]["kind"] == "userspace" and got["info"]["pid"] > 0


def test_the_operator_choices_fail_clearly(node: tuple[Sandbox, str, Path],
                                           tmp_path: Path) -> None:
    if Path("/sys/module/wireguard").exists():
        pytest.skip("this kernel has WireGuard: `never` would succeed")
    never = step(node, """
        try:
            wg_device.open_device("flannel-wg", netns=None, mtu=1420, userspace="never")
        except wg_device.WgDeviceError as exc:
            out(error=str(exc))
    """)
    assert "no WireGuard" in never["error"] and "--wireguard-userspace=auto" in never["error"]
    bad = tmp_path / "not-wireguard-go"
    bad.write_text("")
    path = step(node, f"""
        try:
            wg_device.open_device("flannel-wg", netns=None, mtu=1420, userspace={str(bad)!r})
        except wg_device.WgDeviceError as exc:
            out(error=str(exc))
    """)
    assert "not an executable" in path["error"] and str(bad) in path["error"]
    assert not wireguard_go_pids(node[0], node[1])
