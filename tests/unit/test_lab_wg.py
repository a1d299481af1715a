"""The lab's WireGuard pieces, pure, on hand-written UAPI `get` replies (as wireguard-go
prints them): a peer counts as "wg" when a device holds its lease's key with its subnet;
observe's peer verdicts, `all_peers_ok` and the status PEERS cell take it; the socket is
reached through the host's mount namespace."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from netns_lab import observe, status, wgview

from backends.wg_uapi import parse_get
from core.lease import decode_lease

KEY_B = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
KEY_C = "hBqVSJaGhMJdcmPU8jXC9UwVFNhF+Jty3gg0Y1HZr1E="
PRIV = "11" * 32


def lease(key: str, subnet: str, ip: str, public_key: str, port: int | None = 51820) -> Any:
    data = f'{{"PublicKey":"{public_key}"' + (f',"Port":{port}}}' if port else "}")
    return decode_lease(key, f'{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":'
                             f'"wireguard","BackendData":{data}}}')


LB = lease("10.244.23.0-24", "10.244.23.0/24", "192.168.100.11", KEY_B)
LC = lease("10.244.33.0-24", "10.244.33.0/24", "192.168.100.12", KEY_C, port=None)


def hexkey(b64: str) -> str:
    return base64.b64decode(b64).hex()


def peer(b64: str, allowed: list[str], endpoint: str = "192.168.100.11:51820",
         handshake: int = 1700000000) -> str:
    return (f"public_key={hexkey(b64)}\npreshared_key={'0' * 64}\nprotocol_version=1\n"
            f"endpoint={endpoint}\nlast_handshake_time_sec={handshake}\n"
            "last_handshake_time_nsec=5\ntx_bytes=1184\nrx_bytes=920\n"
            "persistent_keepalive_interval=0\n"
            + "".join(f"allowed_ip={a}\n" for a in allowed))


def device(*peers: str) -> Any:
    return parse_get(f"private_key={PRIV}\nlisten_port=51820\n{''.join(peers)}errno=0\n\n")


def test_a_lease_is_wg_when_its_key_holds_its_subnet() -> None:
    devs = {"flannel-wg": device(peer(KEY_B, ["10.244.23.0/24"]),
                                 peer(KEY_C, ["10.244.99.0/24"], "192.168.100.12:51820"))}
    assert wgview.wg_state(LB, devs) == "wg"
    assert wgview.wg_state(LC, devs) == "partial"  # its key, another subnet
    assert wgview.wg_state(LC, {"flannel-wg": device(peer(KEY_B, ["10.244.23.0/24"]))}) == \
        "missing"
    assert wgview.wg_state(LB, {}) == "missing"
    assert wgview.wg_state(LB, devs, version=6) == "missing"  # no IPv6 subnet in the lease


def test_observe_dispatches_on_the_wireguard_view() -> None:
    devs = {"flannel-wg": device(peer(KEY_B, ["10.244.23.0/24"]))}
    assert observe.peer_state(LB, observe.KernelView(wg=devs)) == "wg"
    assert observe.peer_state(LC, observe.KernelView(wg=devs)) == "missing"
    # without the WireGuard view a wireguard lease is judged as routes, and is not there
    assert observe.peer_state(LB, observe.KernelView()) == "missing"
    assert "wg" in observe.OK_PEER and status.OK_PEER == observe.OK_PEER


def test_status_cell_says_wg() -> None:
    row = {"host": "h1", "flanneld": "ready",
           "peers": {"10.244.23.0/24": "wg", "10.244.33.0/24": "wg"}}
    assert status._peers_cell(row) == "2/2 (wg)"
    row["peers"]["10.244.33.0/24"] = "partial"
    assert status._peers_cell(row) == "1/2 (wg) missing 10.244.33.0/24"


class FakeSandbox:
    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def mount_ns_pid(self, netns: str) -> int | None:
        return self.pid


class FakeLab:
    def __init__(self, pid: int | None, tmp: Path) -> None:
        self.sandbox, self.tmp = FakeSandbox(pid), tmp

    def ns(self, host: str) -> str:
        return f"pfl-x-{host}"

    def host_dir(self, host: str) -> Path:
        return self.tmp / host


def test_the_socket_is_reached_through_the_hosts_mount_namespace(tmp_path: Path) -> None:
    lab: Any = FakeLab(4242, tmp_path)
    assert wgview.wg_root(lab, "h1") == Path("/proc/4242/root/run/wireguard")
    path = str(wgview.wg_root(lab, "h1") / "flannel-wg-v6.sock")
    assert len(path) < 108  # a unix socket path's limit
    assert wgview.wg_root(FakeLab(None, tmp_path), "h1") == tmp_path / "h1" / "run-wireguard"
    assert wgview.read_devices(FakeLab(None, tmp_path), "h1") == {}  # no socket: no device
