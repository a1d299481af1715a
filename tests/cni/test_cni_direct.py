"""Direct invocation of the installed `flannel` executable, as a runtime does it.

Every operation, every version, every error path; through flanneld's socket
and through the in-process fallback (`any_node`), with the kernel state and
the on-disk store checked after each step.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cnihelp import Node
from netns_lab.netns import run, wait_for

from cni.protocol import SUPPORTED_VERSIONS

pytestmark = pytest.mark.netns


def pod_state(node: Node, netns: str, ifname: str = "eth0") -> dict[str, Any]:
    link = node.ipj("addr", "show", "dev", ifname, netns=netns)[0]
    routes = node.ipj("route", "show", netns=netns)
    return {"mtu": link["mtu"], "mac": link["address"], "up": "UP" in link["flags"],
            "addrs": [f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]
                      if a["family"] == "inet"],
            "routes": {(r["dst"], r.get("gateway")) for r in routes}}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_add_check_del_every_version(any_node: Node, version: str) -> None:
    node = any_node
    run(["ip", "netns", "exec", node.host, "sysctl", "-qw", "net.ipv4.ip_forward=0"])
    conf = node.conf(version)
    netns = node.pod()
    res = node.add(conf, "c1", netns).ok().json
    assert res["cniVersion"] == version
    bridge, hostveth, pod = res["interfaces"]
    assert bridge["name"] == "cni0" and pod == {"name": "eth0", "mac": pod["mac"],
                                                "sandbox": netns, **(
                                                    {"mtu": 1450} if version == "1.1.0" else {})}
    ip = res["ips"][0]
    assert ip["address"] == "10.5.52.2/24" and ip["gateway"] == "10.5.52.1"
    assert ip["interface"] == 2
    assert ("version" in ip) == (version < "1.0.0")
    assert res["routes"] == [{"dst": "10.5.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.5.52.1"}]
    # the kernel: pod side, host side, bridge gateway, hairpin, forwarding
    st = pod_state(node, netns)
    assert st["up"] and st["mtu"] == 1450 and st["mac"] == pod["mac"]
    assert st["addrs"] == ["10.5.52.2/24"]
    assert {("default", "10.5.52.1"), ("10.5.0.0/16", "10.5.52.1")} <= st["routes"]
    br = node.ipj("addr", "show", "dev", "cni0")[0]
    assert br["address"] == bridge["mac"]
    assert any(a["local"] == "10.5.52.1" and a["prefixlen"] == 24 for a in br["addr_info"])
    port = node.ipj("-d", "link", "show", hostveth["name"])[0]
    assert port["master"] == "cni0" and port["mtu"] == 1450
    assert port["linkinfo"]["info_slave_data"]["hairpin"] is True
    sysctl = ["ip", "netns", "exec", node.host, "sysctl", "-n", "net.ipv4.ip_forward"]
    assert run(sysctl).stdout.strip() == "1"
    # the store: host-local's format and place, and flannel's scratch file
    assert node.reservations() == {"10.5.52.2": "c1\r\neth0"}
    assert (node.ipam_dir / "cbr0" / "last_reserved_ip.0").read_text() == "10.5.52.2"
    wait_for((node.data_dir / "c1").exists, 10, what="flannel's scratch file (queued)")
    scratch = json.loads((node.data_dir / "c1").read_text())
    assert scratch["ipam"]["ranges"] == [[{"subnet": "10.5.52.0/24"}]]
    assert (node.data_dir / "c1").stat().st_mode & 0o777 == 0o600
    assert node.data_dir.stat().st_mode & 0o777 == 0o700  # as flannel makes it
    if version >= "0.4.0":
        node.check(conf, "c1", netns, res).ok()
    else:
        assert node.check(conf, "c1", netns, res).failed(1)["msg"].endswith("CHECK")
    node.delete(conf, "c1", netns, prev=res if version >= "0.4.0" else None).ok()
    assert node.reservations() == {}
    wait_for(lambda: not (node.data_dir / "c1").exists(), 10, what="scratch file removed")
    wait_for(lambda: not node.ipj("link", "show", netns=netns)[1:], 10, what="pod veth gone")


def test_del_is_idempotent_and_best_effort(any_node: Node) -> None:
    node = any_node
    conf = node.conf("1.0.0")
    netns = node.pod()
    res = node.add(conf, "c1", netns).ok().json
    node.delete(conf, "c1", netns, prev=res).ok()
    node.delete(conf, "c1", netns, prev=res).ok()               # repeated
    node.delete(conf, "c1", "").ok()                            # empty CNI_NETNS
    node.delete(conf, "c1", "/run/netns/does-not-exist").ok()   # netns gone
    node.delete(conf, "never-added", netns).ok()                # no prevResult, nothing there
    assert node.reservations() == {}


def test_del_after_netns_is_gone_releases_everything(any_node: Node) -> None:
    node = any_node
    node.write_subnet_env(ipmasq=False)  # so ADD also installs nft rules
    conf = node.conf("1.0.0")
    netns = node.pod()
    res = node.add(conf, "c1", netns).ok().json
    assert "masquerade" in node.nft()
    run(["ip", "netns", "del", netns.rsplit("/", 1)[1]])
    node.delete(conf, "c1", netns, prev=res).ok()
    assert node.reservations() == {}
    assert "masquerade" not in node.nft() and "10.5.52.2" not in node.nft()
    assert res["interfaces"][1]["name"] not in node.host_veths()


def test_second_add_fails_and_leaves_first_intact(any_node: Node) -> None:
    node = any_node
    conf = node.conf("1.0.0")
    netns = node.pod()
    res = node.add(conf, "c1", netns).ok().json
    err = node.add(conf, "c1", netns).failed()
    assert "duplicate" in err["msg"]
    other = node.add(conf, "c2", netns).failed()  # another container, same netns + ifname
    assert "already exists" in other["msg"]
    assert node.reservations() == {"10.5.52.2": "c1\r\neth0"}  # c2's address was released
    node.check(conf, "c1", netns, res).ok()
    assert pod_state(node, netns)["addrs"] == ["10.5.52.2/24"]


def test_failed_add_releases_what_it_took(node: Node) -> None:
    node.ip("link", "add", "cni0", "type", "veth", "peer", "name", "notabridge")
    conf = node.conf("1.0.0")
    err = node.add(conf, "c1", node.pod()).failed()
    assert "not a bridge" in err["msg"]
    assert node.reservations() == {}
    assert not list((node.data_dir / ".pyflannel" / "cbr0").iterdir())
    assert not (node.data_dir / "c1").exists()


def test_bridge_with_another_address(node: Node) -> None:
    node.ip("link", "add", "cni0", "type", "bridge")
    node.ip("addr", "add", "10.77.0.1/24", "dev", "cni0")
    conf = node.conf("1.0.0")
    err = node.add(conf, "c1", node.pod()).failed()
    assert "already has an IP address different from 10.5.52.1/24" in err["msg"]
    assert node.reservations() == {}
    forced = node.conf("1.0.0", delegate={"forceAddress": True, "isDefaultGateway": True})
    node.add(forced, "c2", node.pod()).ok()


def test_cni_args_and_runtime_config(any_node: Node) -> None:
    node = any_node
    conf = node.conf("1.0.0")
    netns = node.pod()
    res = node.add(conf, "c1", netns,
                   args="IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.5.52.77;MAC=0a:58:0a:05:34:4d"
                   ).ok().json
    assert res["ips"][0]["address"] == "10.5.52.77/24"
    assert res["interfaces"][2]["mac"] == "0a:58:0a:05:34:4d"
    assert pod_state(node, netns)["mac"] == "0a:58:0a:05:34:4d"
    # runtimeConfig.mac wins over CNI_ARGS MAC; runtimeConfig.ips is honoured
    rc = node.conf("1.0.0", runtimeConfig={"mac": "0a:58:00:00:00:01", "ips": ["10.5.52.88/24"]})
    res2 = node.add(rc, "c2", node.pod(), args="MAC=0a:58:00:00:00:02").ok().json
    assert res2["interfaces"][2]["mac"] == "0a:58:00:00:00:01"
    assert res2["ips"][0]["address"] == "10.5.52.88/24"
    taken = node.add(conf, "c3", node.pod(), args="IP=10.5.52.77").failed()
    assert "not available" in taken["msg"]
    # round robin resumes after the last reservation
    assert node.add(conf, "c4", node.pod()).ok().json["ips"][0]["address"] == "10.5.52.89/24"


@pytest.mark.parametrize(("env_over", "conf_over", "stdin", "code", "words"), [
    ({"CNI_CONTAINERID": ""}, {}, None, 4, "CNI_CONTAINERID"),
    ({"CNI_IFNAME": ""}, {}, None, 4, "CNI_IFNAME"),
    ({"CNI_NETNS": ""}, {}, None, 4, "CNI_NETNS"),
    ({"CNI_CONTAINERID": "bad id!"}, {}, None, 4, "CNI_CONTAINERID"),
    ({"CNI_IFNAME": "way-too-long-ifname"}, {}, None, 4, "CNI_IFNAME"),
    ({"CNI_COMMAND": "FROB"}, {}, None, 4, "FROB"),
    ({"CNI_ARGS": "IP"}, {}, None, 4, "CNI_ARGS"),
    ({"CNI_ARGS": "IP=notanip"}, {}, None, 4, "CNI_ARGS IP"),
    ({}, {}, b"{garbage", 6, "unmarshalling"),
    ({}, {"cniVersion": "0.2.0"}, None, 1, "incompatible"),
    ({}, {"name": ""}, None, 7, "network name"),
    ({}, {"delegate": {"name": "x"}}, None, 7, "'name'"),
    ({}, {"delegate": {"ipam": {}}}, None, 7, "'ipam'"),
    ({}, {"delegate": {"vlan": 3}}, None, 2, "vlan"),
    ({}, {"ipam": {"type": "dhcp"}}, None, 2, "dhcp"),
    ({}, {"subnetFile": "/nonexistent/subnet.env"}, None, 11, "subnet.env"),
    ({"CNI_NETNS": "/run/netns/nope"}, {}, None, 8, "nope"),
    ({"CNI_NETNS": "/proc/self/ns/net"}, {}, None, 8, "own network namespace"),
    ({"CNI_NETNS": "/etc/hostname"}, {}, None, 8, "not a network namespace"),
])
def test_error_paths(any_node: Node, env_over: dict[str, str], conf_over: dict[str, Any],
                     stdin: bytes | None, code: int, words: str) -> None:
    node = any_node
    env = node.env("ADD", "c1", node.pod())
    env.update(env_over)
    env = {k: v for k, v in env.items() if v}  # "" means: the runtime did not set it
    out = node.call(env, stdin if stdin is not None else node.conf("1.0.0", **conf_over))
    body = out.failed(code)
    assert words in body["msg"] + body.get("details", "")
    assert node.reservations() == {}


def test_no_command_prints_about_and_version_needs_no_stdin(any_node: Node) -> None:
    node = any_node
    about = node.call({"PATH": "/usr/bin"}, b"").ok()
    assert about.out == b"" and b"CNI protocol versions supported" in about.err
    probe = node.call({"CNI_COMMAND": "VERSION", "CNI_NETNS": "dummy", "CNI_IFNAME": "dummy",
                       "CNI_PATH": "dummy"}, b'{"cniVersion":"1.0.0"}').ok().json
    assert probe == {"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED_VERSIONS)}
    bare = node.call({"CNI_COMMAND": "VERSION"}, b"").ok().json
    assert bare["cniVersion"] == "1.1.0"


def test_check_failures(served: Node) -> None:
    node = served
    conf = node.conf("1.0.0")
    netns = node.pod()
    res = node.add(conf, "c1", netns).ok().json
    assert "prevResult" in node.call(node.env("CHECK", "c1", netns), conf).failed()["msg"]
    node.ip("addr", "flush", "dev", "eth0", netns=netns)
    assert "Failed to match addr 10.5.52.2/24" in node.check(conf, "c1", netns, res).failed()[
        "msg"]
    (node.ipam_dir / "cbr0" / "10.5.52.2").unlink()
    assert "Failed to find address" in node.check(conf, "c1", netns, res).failed()["msg"]
    res2 = node.add(conf, "c2", netns2 := node.pod()).ok().json
    node.ip("link", "del", "eth0", netns=netns2)
    assert "not found" in node.check(conf, "c2", netns2, res2).failed()["msg"]


def test_status(any_node: Node) -> None:
    node = any_node
    conf = node.conf("1.1.0")
    env = node.env("STATUS")
    node.call(env, conf).ok()
    node.write_subnet_env(subnet="10.5.52.1/29")  # .2-.6: five addresses
    for i in range(5):
        node.add(conf, f"c{i}", node.pod()).ok()
    body = node.call(env, conf).failed(50)
    assert "exhausted" in body["msg"]
    assert node.add(conf, "c9", node.pod()).failed(11)["msg"].startswith("no IP addresses")
    node.subnet_file.unlink()
    assert "subnet.env" in node.call(env, conf).failed(50)["msg"]


def test_gc_releases_all_but_valid(any_node: Node) -> None:
    node = any_node
    node.write_subnet_env(ipmasq=False)
    conf = node.conf("1.1.0")
    results = {cid: node.add(conf, cid, node.pod()).ok().json for cid in ("a", "b", "c")}
    # a stray reservation from host-local itself (no record of ours)
    (node.ipam_dir / "cbr0" / "10.5.52.200").write_text("stray\r\neth0")
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]})
    node.call(node.env("GC"), gc).ok()
    assert node.reservations() == {"10.5.52.2": "a\r\neth0"}
    ruleset = node.nft()
    assert "10.5.52.2" in ruleset and "10.5.52.3" not in ruleset and "10.5.52.4" not in ruleset
    assert sorted(p.name for p in node.data_dir.iterdir() if p.is_file()) == ["a"]

    def host_veth_gone(cid: str) -> bool:
        return results[cid]["interfaces"][1]["name"] not in node.host_veths()

    wait_for(
        lambda: host_veth_gone("b") and host_veth_gone("c"), 10, what="veths of b and c gone")
    assert not host_veth_gone("a")


def test_ipmasq_rules_follow_flannel_ipmasq(served: Node) -> None:
    node = served
    conf = node.conf("0.3.1")
    node.add(conf, "nomasq", node.pod()).ok()
    assert "masquerade" not in node.nft()
    node.write_subnet_env(ipmasq=False)
    netns = node.pod()
    node.add(conf, "masq", netns).ok()
    ruleset = node.nft()
    assert "ip daddr 10.5.52.0/24 accept" in ruleset
    assert "ip daddr != 224.0.0.0/4 masquerade" in ruleset and "10.5.52.3 : jump" in ruleset
    node.delete(conf, "masq", netns).ok()
    assert "masquerade" not in node.nft()


def test_exec_fallback_entry_point(node: Node) -> None:
    """What the front execs when it cannot import the implementation: same results."""
    code = ("import sys; sys.path.append(sys.argv[1]); from cni.plugin import main; "
            "sys.exit(main())")
    conf = node.conf("1.0.0")
    netns = node.pod()
    exe = ["nsenter", f"--net=/run/netns/{node.host}", sys.executable, "-c", code,
           str(Path(__file__).resolve().parents[2])]
    add = subprocess.run(exe, env=node.env("ADD", "x1", netns), input=json.dumps(conf).encode(),
                         capture_output=True, timeout=60)
    assert add.returncode == 0, add.stdout
    assert json.loads(add.stdout)["ips"][0]["address"] == "10.5.52.2/24"
    rm = subprocess.run(exe, env=node.env("DEL", "x1", netns), input=json.dumps(conf).encode(),
                        capture_output=True, timeout=60)
    assert rm.returncode == 0 and rm.stdout == b""
    assert node.reservations() == {}


def test_readd_right_after_del_in_the_same_netns(any_node: Node) -> None:
    """A network reconnect: DEL then ADD of the same pod at once. The server deletes the old
    veth in the background, so the ADD must wait for that rather than see eth0 still there."""
    node = any_node
    conf = node.conf("1.0.0")
    netns = node.pod()
    for _ in range(3):
        res = node.add(conf, "c1", netns).ok().json
        node.delete(conf, "c1", netns, prev=res).ok()
    res = node.add(conf, "c1", netns).ok().json
    assert res["ips"][0]["address"] == "10.5.52.5/24"  # round robin, never the old address
    assert node.reservations() == {"10.5.52.5": "c1\r\neth0"}


def test_bridge_recreated_behind_the_servers_back(served: Node) -> None:
    """The server caches the bridge; if someone deletes it, the next ADD recreates it."""
    node = served
    conf = node.conf("1.0.0")
    first = node.add(conf, "c1", node.pod()).ok().json
    node.ip("link", "del", "cni0")
    netns = node.pod()
    second = node.add(conf, "c2", netns).ok().json
    assert second["interfaces"][0]["mac"] != first["interfaces"][0]["mac"]  # a new bridge
    br = node.ipj("addr", "show", "dev", "cni0")[0]
    assert any(a["local"] == "10.5.52.1" for a in br["addr_info"])
    node.check(conf, "c2", netns, second).ok()
