"""flannelctl's pure parts: the per-peer verdict, reservations, doctor's checks, the docs."""

from __future__ import annotations

import argparse
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from backends import peerstate
from backends.desired import Outcome, PeerEntries, combine
from backends.state import RouteSpec, Tables
from core.lease import decode_attrs, encode_attrs
from flanneld.ctl import doctor, ipam, leases
from flanneld.ctl._common import add_options, options

VX = PeerEntries(("10.5.34.0", "0e:7a:19:3b:d0:0f"), ("0e:7a:19:3b:d0:0f", "192.168.64.4"),
                 ("10.5.34.0/24", RouteSpec("10.5.34.0", 7, onlink=True)))


def kernel(route: bool = True, neigh: str | None = "0e:7a:19:3b:d0:0f",
           fdb: str | None = "192.168.64.4") -> Tables:
    t = Tables()
    if route:
        t.routes["10.5.34.0/24"] = (RouteSpec("10.5.34.0", 7, onlink=True),)
    if neigh:
        t.neighs["10.5.34.0"] = neigh
    if fdb:
        t.fdb["0e:7a:19:3b:d0:0f"] = (fdb,)
    return t


def test_peer_verdicts() -> None:
    assert peerstate.check_entries(VX, kernel()) == (peerstate.PROGRAMMED, ())
    state, problems = peerstate.check_entries(VX, kernel(route=False))
    assert state == peerstate.PARTIAL and problems == (
        "route 10.5.34.0/24 via 10.5.34.0 dev #7 onlink missing",)
    assert peerstate.check_entries(VX, kernel(False, None, None))[0] == peerstate.MISSING
    state, problems = peerstate.check_entries(VX, kernel(fdb="192.168.64.9"))
    assert state == peerstate.STALE
    assert problems == ("FDB entry 0e:7a:19:3b:d0:0f points at 192.168.64.9; want 192.168.64.4",)
    assert peerstate.check_entries(VX, kernel(neigh="aa:bb:cc:dd:ee:ff"))[0] == peerstate.STALE


def test_check_peers_and_strays() -> None:
    desired = combine([("10.5.34.0-24", Outcome(VX)), ("10.5.9.0-24", Outcome(None, "bad MAC"))])
    have = kernel()
    have.routes["10.5.99.0/24"] = (RouteSpec("10.5.99.0", 7, onlink=True),)
    have.fdb["0e:00:00:00:00:99"] = ("192.168.64.99",)
    checks = peerstate.check_peers(desired, have)
    assert checks["10.5.34.0-24"].state == peerstate.PROGRAMMED
    assert checks["10.5.34.0-24"].kind == "vxlan"
    assert checks["10.5.9.0-24"].state == peerstate.SKIPPED
    assert peerstate.strays(desired, have) == [
        "FDB entry 0e:00:00:00:00:99 dst 192.168.64.99",
        "route 10.5.99.0/24 via 10.5.99.0 dev #7 onlink"]
    assert peerstate.summary(checks.values()) == {"programmed": 1, "skipped": 1}


def test_ip_json_tables_match_netlink_semantics() -> None:
    view = peerstate.IpJson(
        routes=[{"dst": "10.5.34.0/24", "gateway": "10.5.34.0", "dev": "flannel.1",
                 "flags": ["onlink"]}, {"dst": "default", "gateway": "192.168.64.1"}],
        neighs=[{"dst": "10.5.34.0", "dev": "flannel.1", "lladdr": "0E:7A:19:3B:D0:0F",
                 "state": ["PERMANENT"]}],
        fdb=[{"mac": "0e:7a:19:3b:d0:0f", "ifname": "flannel.1", "dst": "192.168.64.4",
              "flags": ["self"], "state": "permanent"}],
        links=[{"ifname": "flannel.1", "ifindex": 7}])
    assert peerstate.check_entries(VX, peerstate.tables_from_ip_json(view, "flannel.1")) == (
        peerstate.PROGRAMMED, ())


def ns(**kw: object) -> argparse.Namespace:
    base = {"subnet": IPv4Network("10.5.77.0/24"), "public_ip": IPv4Address("192.168.64.3"),
            "backend_type": None, "vtep_mac": None, "vni": 1, "force": False}
    return argparse.Namespace(**{**base, **kw})


def test_reserve_plans() -> None:
    own = encode_attrs(decode_attrs('{"PublicIP":"192.168.64.3","BackendType":"vxlan",'
                                    '"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}}'))
    assert leases.plan_reserve(ns(), None) == (
        "create", b'{"PublicIP":"192.168.64.3","PublicIPv6":null}')
    # the node's own live lease: converted, keeping its value (peers see no change)
    assert leases.plan_reserve(ns(), {"value": own, "lease": 77, "mod": 5}) == ("convert", own)
    assert leases.plan_reserve(ns(), {"value": own, "lease": 0, "mod": 5}) == ("noop", own)
    other = ns(public_ip=IPv4Address("192.168.64.9"))
    with pytest.raises(leases.Refused, match=r"held by PublicIP 192\.168\.64\.3 \(a live lease\)"):
        leases.plan_reserve(other, {"value": own, "lease": 77, "mod": 5})
    forced = leases.plan_reserve(ns(public_ip=IPv4Address("192.168.64.9"), force=True),
                                 {"value": own, "lease": 77, "mod": 5})
    assert forced == ("convert", b'{"PublicIP":"192.168.64.9","PublicIPv6":null}')
    with_mac = ns(backend_type="vxlan", vtep_mac="0e:00:00:00:00:02")
    assert b'"VtepMAC":"0e:00:00:00:00:02"' in leases.plan_reserve(with_mac, None)[1]


def test_options_come_from_flanneld_env() -> None:
    p = argparse.ArgumentParser()
    add_options(p)
    o = options(p.parse_args([]), {"FLANNELD_ETCD_ENDPOINTS": "http://10.0.0.1:2379",
                                   "FLANNELD_SUBNET_FILE": "/x/subnet.env"})
    assert o.etcd_endpoints == ("http://10.0.0.1:2379",) and o.subnet_file == Path("/x/subnet.env")
    o = options(p.parse_args(["--etcd-prefix", "/p"]), {"FLANNELD_ETCD_PREFIX": "/env"})
    assert o.etcd_prefix == "/p"  # command line wins, as in flanneld
    with pytest.raises(SystemExit, match="--etcd-prefix='p'"):
        options(p.parse_args(["--etcd-prefix", "p"]), {})


def test_doctor_checks() -> None:
    assert [f.status for f in doctor.check_sysctls("0", {"flannel.1": 1, "cni0": 2})] == [
        doctor.FAIL, doctor.WARN]
    assert doctor.check_csum("5.4.0-42", "flannel.1", "on").status == doctor.WARN
    assert doctor.check_csum("5.4.0-42", "flannel.1", "off [requested off]").status == doctor.OK
    assert doctor.check_csum("6.1.0", "flannel.1", "on").status == doctor.OK
    assert doctor.kernel_at_least("5.7.0", (5, 7)) and not doctor.kernel_at_least("4.19", (5, 7))
    assert {c.name for c in doctor.CHECKS} == set(doctor.BY_NAME)
    assert ipam.judge("/run/netns/x", "veth1", False, True)[0] == "gone"
    assert ipam.judge("/run/netns/x", "veth1", True, False)[0] == "gone"
    assert ipam.judge("/run/netns/x", "veth1", True, True) == ("alive", "")


def test_troubleshooting_doc_is_generated_from_the_checks() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md").read_text()
    body = text.split(doctor.BEGIN)[1].split(doctor.END)[0]
    assert body == "\n" + doctor.render_markdown(), (
        "docs/troubleshooting.md is stale: run python -c 'from pathlib import Path; "
        "from flanneld.ctl import doctor; doctor.update_docs(Path(\"docs/troubleshooting.md\"))'")
