"""`flannelctl doctor`'s IPv6 checks, pure: each broken thing found, said, and its fix named."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Network, IPv6Network

import pytest
from ctl_v6_data import (
    EXT,
    NET6,
    OWN6,
    PEER_MAC6,
    device6,
    lease,
    node,
    peer_lease,
    vxlan6_kernel,
)

from backends.plane6 import Connected6
from backends.state import Tables
from core.subnetenv import SubnetEnv
from flanneld.ctl import _checks6 as v6
from flanneld.ctl import doctor
from flanneld.ctl.findings import BY_NAME, FAIL, OK, SKIP, WARN, Finding


def test_a_healthy_dual_stack_vxlan_node() -> None:
    _, view = node([peer_lease()], kernel=vxlan6_kernel())
    lease6 = v6.check_lease6(view)
    assert (lease6.status, lease6.detail) == (
        OK, "fc00:9:0:5::/64, PublicIPv6 fd7c::1, VtepMAC 0e:00:00:00:00:02")
    device = v6.check_device6(view, None)
    assert device is not None and device.status == OK
    assert device.detail == ("flannel-v6.1 up, MTU 1430, local fd7c::1, fc00:9:0:5::/128, "
                             "accept_ra 0")
    assert [f.status for f in v6.check_peers6(view)] == [OK, OK, OK]
    assert v6.check_peers6(view)[0].detail == "1 peers programmed for IPv6"
    assert v6.check_forward6("1").status == OK


def test_forwarding_off_is_a_failure_with_its_sysctl() -> None:
    f = v6.check_forward6("0")
    assert (f.status, f.detail) == (FAIL, "net.ipv6.conf.all.forwarding = 0")
    assert f.as_dict()["fix"] == "sysctl -w net.ipv6.conf.all.forwarding=1 (persist it in " \
                                 "/etc/sysctl.d/)"


def test_a_v6_route_deleted_by_hand() -> None:
    kernel = vxlan6_kernel()
    kernel.routes.clear()
    _, view = node([peer_lease()], kernel=kernel)
    peers, skipped, strays = v6.check_peers6(view)
    assert (peers.status, peers.detail) == (FAIL, "1 of 1 peers not programmed for IPv6")
    assert peers.lines == (f"{peer_lease().key}: partial: route fc00:9:0:7::/64 via "
                           "fc00:9:0:7:: dev #11 onlink missing",)
    assert "route6/neigh6/fdb6" in peers.as_dict()["fix"]
    assert (skipped.status, strays.status) == (OK, OK)


def test_device_problems_each_with_their_repair() -> None:
    _, view = node([peer_lease()], kernel=vxlan6_kernel(),
                   device=device6(mtu=1450, up=False, local="fd7c::9"),
                   addresses=("fc00:9:0:33::/128",), accept_ra="2")
    f = v6.check_device6(view, None)
    assert f is not None and f.status == FAIL
    assert f.detail.split("; ") == [
        "flannel-v6.1 is DOWN",
        "flannel-v6.1 MTU 1450, want 1430 (eth0 1500 - 70 for VXLAN over IPv6)",
        "flannel-v6.1 sends from fd7c::9, but our lease's PublicIPv6 is fd7c::1",
        "flannel-v6.1 lacks its address fc00:9:0:5::/128 (our IPv6 subnet's)",
        "flannel-v6.1 also has fc00:9:0:33::/128, which is not ours",
        "flannel-v6.1 accept_ra is 2, want 0 (router advertisements would add addresses and "
        "routes to it)"]
    fix = f.as_dict()["fix"]
    for step in ("ip link set flannel-v6.1 up", "ip link set flannel-v6.1 mtu 1430",
                 "ip -6 addr add fc00:9:0:5::/128 dev flannel-v6.1 nodad",
                 "ip -6 addr del fc00:9:0:33::/128 dev flannel-v6.1",
                 "sysctl -w net.ipv6.conf.flannel-v6/1.accept_ra=0", v6.REPAIRS):
        assert step in fix
    assert f"fix: {fix}" in doctor.render([f])


def test_a_missing_device_and_a_configured_mtu() -> None:
    _, view = node([peer_lease()], device=None)
    f = v6.check_device6(view, None)
    assert f is not None and (f.status, f.detail) == (
        FAIL, "flannel-v6.1 does not exist: no IPv6 pod traffic leaves this node")
    assert "no global IPv6 address on eth0" in f.as_dict()["fix"]
    _, view = node([peer_lease()], device=device6(mtu=1330))
    f = v6.check_device6(view, 1400)  # Backend.MTU 1400: the device gets 1400 - 70
    assert f is not None and f.status == OK
    _, view = node([peer_lease()], device=device6(mtu=1430))
    f = v6.check_device6(view, 1400)
    assert f is not None and (f.status, f.detail) == (FAIL, "flannel-v6.1 MTU 1430, want 1330")
    _, host_gw = node([peer_lease("host-gw")], "host-gw")
    assert v6.check_device6(host_gw, None) is None  # host-gw has no IPv6 device


def test_lease_problems() -> None:
    _, view = node([peer_lease()])
    assert view.own is not None and view.own.lease is not None
    own = view.own.lease
    view.own.lease = dataclasses.replace(own, attrs=dataclasses.replace(
        own.attrs, backend_v6_data={"VNI": 1, "VtepMAC": "0e:00:00:00:00:77"}))
    f = v6.check_lease6(view)
    assert f.status == FAIL and "BackendV6Data VtepMAC is 0e:00:00:00:00:77, but " \
        "flannel-v6.1 has MAC 0e:00:00:00:00:02" in f.detail
    view.own.lease = dataclasses.replace(own, attrs=dataclasses.replace(own.attrs,
                                                                        public_ipv6=None))
    f = v6.check_lease6(view)
    assert f.status == FAIL and "PublicIPv6 null" in f.detail
    assert f.as_dict()["fix"].startswith("give eth0 a global IPv6 address")
    view.own.lease = dataclasses.replace(own, ipv6_subnet=None)
    assert "has IPv6 subnet none; subnet.env says fc00:9:0:5::/64" in v6.check_lease6(view).detail
    assert view.subnet_env is not None
    view.subnet_env = dataclasses.replace(view.subnet_env, ipv6_network=None, ipv6_subnet=None)
    f = v6.check_lease6(view)
    assert (f.status, f.detail) == (FAIL, "subnet.env has no FLANNEL_IPV6_SUBNET, but the "
                                          "network config enables IPv6 (IPv6Network "
                                          "fc00:9::/48)")


def test_skipped_and_stray_v6_entries_warn() -> None:
    not_yet = lease(IPv4Network("10.9.60.0/24"), None, "192.168.100.4", None)
    _, view = node([peer_lease(), not_yet], kernel=vxlan6_kernel())
    _, skipped, _ = v6.check_peers6(view)
    assert (skipped.status, skipped.detail) == (WARN, "1 leases not used for IPv6")
    assert skipped.lines[0].startswith(f"{not_yet.key}: skipped: has no IPv6 subnet")
    assert BY_NAME["v6-skipped"].fix in skipped.as_dict()["fix"]


def test_host_gw_v6_routes() -> None:
    on_link = (Connected6(IPv6Network("fd7c::/64"), EXT),)
    _, view = node([peer_lease("host-gw")], "host-gw", Tables(), connected=on_link)
    peers, _, _ = v6.check_peers6(view)
    assert peers.status == FAIL and "route fc00:9:0:7::/64 via fd7c::2 dev #2 missing" in \
        peers.lines[0]


@pytest.mark.parametrize(("env_mtu", "overhead6", "ok"), [
    (1430, 70, True), (1450, 70, False), (1450, None, True), (1500, 0, False)])
def test_flannel_mtu_fits_both_families(env_mtu: int, overhead6: int | None, ok: bool) -> None:
    _, view = node([peer_lease()])
    assert view.subnet_env is not None
    view.subnet_env = dataclasses.replace(view.subnet_env, mtu=env_mtu)
    view.device = device6(name="flannel.1", mtu=1450, local="192.168.100.1")
    f = doctor.check_mtu(view, 50, None, None, overhead6)
    assert (f.status == OK) is ok, f
    if env_mtu == 1450 and overhead6 == 70:
        assert f.detail == ("FLANNEL_MTU 1450, want 1430 (VXLAN over IPv6 costs 70 bytes; one "
                            "pod MTU must fit both families)")
    if ok:
        assert "flannel-v6.1 1430" in f.detail


def test_ipv6_only_nodes_skip_the_ipv4_checks() -> None:
    _, view = node([peer_lease()])
    view.config_ipv4 = False
    assert [f.status for f in doctor.check_peers(view)] == [SKIP] * 3
    forward, _ = doctor.check_sysctls(None, {}, ipv4=False)
    assert forward.status == SKIP
    view.subnet_env = SubnetEnv.for_lease(None, None, 1430, False, NET6, OWN6)
    cl, _ = node([])
    findings = doctor.check_lease(cl, view)
    assert findings[0].detail == "FLANNEL_IPV6_SUBNET=fc00:9:0:5::1/64, FLANNEL_MTU=1430"
    view.ext_index = 0
    assert {(f.status, f.detail) for f in v6.check_peers6(view)} == {
        (SKIP, "external interface not found (no device, no interface with our address)")}


def test_network_config_names_both_networks() -> None:
    cl, _ = node([])
    assert doctor.check_cluster(cl)[1].detail == (
        "network 10.9.0.0/16, IPv6 network fc00:9::/48, backend vxlan")
    assert cl.config is not None
    cl.config = dataclasses.replace(cl.config, ipv4_network=None, enable_ipv4=False)
    assert doctor.check_cluster(cl)[1].detail == "IPv6 network fc00:9::/48, backend vxlan"


def test_every_v6_check_is_documented() -> None:
    for name in ("v6-lease", "v6-device", "v6-peers", "v6-skipped", "v6-strays", "ip6-forward"):
        assert name in BY_NAME and len(name) <= 14  # the column doctor prints
    assert Finding("mtu", FAIL, "x").as_dict()["fix"] == BY_NAME["mtu"].fix
    assert Finding("mtu", FAIL, "x", fix="do this").as_dict()["fix"] == "do this"
    assert Finding("mtu", OK, "x", fix="do this").as_dict()["fix"] is None
    assert PEER_MAC6  # the fixture's peer is dual-stack
