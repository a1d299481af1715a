"""A lab host's WireGuard devices, read through its own mount namespace; per-lease verdicts.

flanneld on a lab host runs wireguard-go, whose UAPI socket is
/run/wireguard/<dev>.sock *inside the host's mount namespace* (the lab binds the
host's own `run-wireguard/` there). From outside we reach it through the process
holding that namespace: /proc/<pid>/root/run/wireguard/<dev>.sock (a short path,
unlike the host directory, and a unix socket path has 108 bytes at most).

`wg_state` is pure: a lease is "wg" on a host when one of its devices has a peer with
the lease's public key (BackendData's, or BackendV6Data's for the IPv6 side) whose
allowed IPs hold the lease's subnet; "partial" when the key is there without the
subnet; else "missing". flannelctl's full verdicts (endpoint, roaming, handshakes)
are `flanneld.ctl.wgpeers`. `device_summary` is what `netns-lab status` shows of the
devices themselves (name, listen port, public key, peers, allowed IPs); `devices_line`
says it in one line.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from netns_lab.lab import Lab
from netns_lab.netns import netns_pids

from core.lease import Lease
from flanneld.ctl.wgpeers import lease_public_key, read_uapi, socket_path

DEVICES = ("flannel-wg", "flannel-wg-v6")


def wireguard_go_pids(netns: str, device: str = DEVICES[0]) -> list[int]:
    """The wireguard-go processes serving `device` in network namespace `netns`."""
    out = []
    for pid in netns_pids(netns):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # (gone meanwhile)
        if argv[0].endswith(b"wireguard-go") and device.encode() in argv[1:]:
            out.append(pid)
    return out


def wg_root(lab: Lab, host: str) -> Path:
    """Where `host`'s /run/wireguard is seen from here."""
    pid = lab.sandbox.mount_ns_pid(lab.ns(host))
    if pid is None:
        return lab.host_dir(host) / "run-wireguard"
    return Path(f"/proc/{pid}/root/run/wireguard")


def read_devices(lab: Lab, host: str) -> dict[str, Any]:
    """Each WireGuard device of `host` that answers on its socket: name -> DeviceState."""
    from backends.wg_uapi import parse_get

    root = wg_root(lab, host)
    out: dict[str, Any] = {}
    for dev in DEVICES:
        path = socket_path(dev, root)
        if not path.exists():
            continue
        try:
            out[dev] = parse_get(read_uapi(path))
        except (OSError, ValueError):
            continue  # (wireguard-go restarting): the device counts as absent this time
    return out


def device_summary(devices: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per device (a UAPI DeviceState): its listen port, public key, peer count and the
    allowed IPs it holds, sorted. Pure."""
    from core.wgkey import encode_key, public_key

    out: dict[str, dict[str, Any]] = {}
    for name, d in sorted(devices.items()):
        out[name] = {
            "listen_port": d.listen_port,
            "public_key": encode_key(public_key(d.private_key)) if d.private_key else "",
            "peers": len(d.peers),
            "allowed_ips": sorted({a for p in d.peers.values() for a in p.allowed_ips}),
        }
    return out


def devices_line(hosts: list[dict[str, Any]]) -> str:
    """The hosts' WireGuard devices in one line: "flannel-wg (port 51820, 2 peers),
    flannel-wg-v6 (port 51821, 2 peers) on every host", or host by host where they
    differ; "" when no host reports a device list."""
    cells: dict[str, str] = {}
    for h in hosts:
        devs = h.get("wg_devices")
        if devs is None:
            continue
        cells[h["host"]] = ", ".join(
            f"{n} (port {d['listen_port']}, {d['peers']} peer{'s' * (d['peers'] != 1)})"
            for n, d in devs.items()) or "no device answers"
    if not cells:
        return ""
    if len(cells) > 1 and len(set(cells.values())) == 1 and len(cells) == len(hosts):
        return f"wireguard: {next(iter(cells.values()))} on every host"
    return "wireguard: " + "; ".join(f"{h} {c}" for h, c in cells.items())


def _holds(allowed: Any, subnet: IPv4Network | IPv6Network) -> bool:
    for a in allowed:
        try:
            net = ip_network(str(a), strict=False)
        except ValueError:
            continue
        if net.version == subnet.version and subnet.subnet_of(net):  # type: ignore[arg-type]
            return True
    return False


def wg_state(lease: Lease, devices: dict[str, Any], version: int = 4) -> str:
    """How a host's WireGuard devices reach `lease`'s subnet of `version`: wg/partial/missing."""
    subnet = lease.ipv4_subnet if version == 4 else lease.ipv6_subnet
    if subnet is None:
        return "missing"
    keys = {k for k in (lease_public_key(lease.attrs, v6=version == 6),
                        lease_public_key(lease.attrs)) if k}
    found = [p for d in devices.values() for pub, p in d.peers.items() if pub in keys]
    if any(_holds(p.allowed_ips, subnet) for p in found):
        return "wg"
    return "partial" if found else "missing"
