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


# --- dual stack: both devices, as status shows them -----------------------------------

DS_LEASE = decode_lease(
    "10.246.6.0-24&fc00:246:0:61::-64",
    '{"PublicIP":"192.168.46.11","PublicIPv6":"fd10:46::11","BackendType":"wireguard",'
    f'"BackendData":{{"PublicKey":"{KEY_B}","Port":51820}},'
    f'"BackendV6Data":{{"PublicKey":"{KEY_B}","Port":51821}}}}')


def device6(*peers: str, port: int = 51821) -> Any:
    return parse_get(f"private_key={PRIV}\nlisten_port={port}\n{''.join(peers)}errno=0\n\n")


def separate_devices() -> dict[str, Any]:
    return {"flannel-wg": device(peer(KEY_B, ["10.246.6.0/24"], "192.168.46.11:51820")),
            "flannel-wg-v6": device6(peer(KEY_B, ["fc00:246:0:61::/64"],
                                          "[fd10:46::11]:51821"))}


def test_separate_mode_each_family_on_its_own_device() -> None:
    devs = separate_devices()
    assert wgview.wg_state(DS_LEASE, devs, 4) == "wg"
    assert wgview.wg_state(DS_LEASE, devs, 6) == "wg"
    view = observe.KernelView(wg=devs)
    assert (observe.peer_state(DS_LEASE, view), observe.peer_state6(DS_LEASE, view)) == \
        ("wg", "wg")
    only4 = {"flannel-wg": devs["flannel-wg"]}  # flannel-wg-v6 gone (its wireguard-go died)
    assert observe.peer_state6(DS_LEASE, observe.KernelView(wg=only4)) == "partial"
    assert observe.peer_state6(DS_LEASE, observe.KernelView(wg={})) == "missing"


def test_auto_mode_one_device_holds_both_families() -> None:
    devs = {"flannel-wg": device(peer(KEY_B, ["10.246.6.0/24", "fc00:246:0:61::/64"],
                                      "192.168.46.11:51820"))}
    assert wgview.wg_state(DS_LEASE, devs, 4) == wgview.wg_state(DS_LEASE, devs, 6) == "wg"
    v4_only = {"flannel-wg": device(peer(KEY_B, ["10.246.6.0/24"]))}
    assert wgview.wg_state(DS_LEASE, v4_only, 6) == "partial"  # the key, not the v6 subnet


def test_device_summary_names_port_key_peers_and_allowed_ips() -> None:
    from core.wgkey import encode_key, public_key

    pub = encode_key(public_key(bytes.fromhex(PRIV)))
    s = wgview.device_summary(separate_devices())
    assert list(s) == ["flannel-wg", "flannel-wg-v6"]
    assert s["flannel-wg"] == {"listen_port": 51820, "public_key": pub, "peers": 1,
                               "allowed_ips": ["10.246.6.0/24"]}
    assert s["flannel-wg-v6"]["listen_port"] == 51821
    assert s["flannel-wg-v6"]["public_key"] == pub  # one key file, both devices
    assert s["flannel-wg-v6"]["allowed_ips"] == ["fc00:246:0:61::/64"]
    assert wgview.device_summary({}) == {}


def test_devices_line_says_every_host_or_host_by_host() -> None:
    devs = wgview.device_summary(separate_devices())
    same = [{"host": h, "wg_devices": devs} for h in ("h1", "h2", "h3")]
    assert wgview.devices_line(same) == (
        "wireguard: flannel-wg (port 51820, 1 peer), flannel-wg-v6 (port 51821, 1 peer) "
        "on every host")
    differ: list[dict[str, Any]] = [same[0], {"host": "h2", "wg_devices": {}},
                                    {"host": "h3"}]  # h3: no namespace
    assert wgview.devices_line(differ) == (
        "wireguard: h1 flannel-wg (port 51820, 1 peer), flannel-wg-v6 (port 51821, 1 peer); "
        "h2 no device answers")
    assert wgview.devices_line([{"host": "h1", "peers": {}}]) == ""  # not a wireguard lab


def test_status_renders_the_devices_line() -> None:
    host = {"host": "h1", "public_ip": "192.168.46.10", "public_ipv6": "fd10:46::10",
            "subnet": "10.246.23.0/24", "subnet6": "fc00:246:0:35::/64", "subnet_from": "etcd",
            "backend": "wireguard", "flanneld": "ready",
            "peers": {"10.246.6.0/24": "wg"}, "peers6": {"fc00:246:0:61::/64": "wg"},
            "pods": {}, "pods6": {}, "wg_devices": wgview.device_summary(separate_devices())}
    data = {"lab": "x", "description": "", "backend": "wireguard", "network": "10.246.0.0/16",
            "network6": "fc00:246::/48", "families": [4, 6], "etcd_error": "", "etcd": [],
            "hosts": [host], "stale_leases": [], "partitions": [], "world": None}
    text = status.render(data)
    assert "1/1 (wg)" in text and text.count("1/1 (wg)") == 2  # PEERS and PEERS6
    assert "wireguard: h1 flannel-wg (port 51820, 1 peer), flannel-wg-v6 (port 51821" in text


def test_the_dual_stack_example_runs_separate_mode_over_both_families() -> None:
    from netns_lab import topology

    t = topology.load("wireguard-dual-stack")
    assert t.backend_type == "wireguard" and t.families == (4, 6)
    assert t.underlay_versions == (4, 6) and len(t.hosts) == 3
    assert "Mode" not in t.network["Backend"]  # flannel's default, separate
    root = Path(__file__).resolve().parents[2]
    assert (root / "examples" / "wireguard-dual-stack.yaml").resolve() == \
        root / "netns-lab" / "examples" / "wireguard-dual-stack.yaml"
