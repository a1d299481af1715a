"""Our result through the reference chained plugins (portmap, tuning, bandwidth), as a runtime
chains them: ADD in order with prevResult, CHECK, DEL in reverse. They parse our result and
fail on anything malformed, so they double as a result-shape validator.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cnihelp import Node

pytestmark = pytest.mark.netns

CHAIN: list[dict[str, Any]] = [
    {"type": "portmap", "capabilities": {"portMappings": True},
     "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80,
                                         "protocol": "tcp"}]}},
    {"type": "tuning", "mac": "0a:58:0a:05:34:99", "sysctl": {"net.core.somaxconn": "512"}},
    {"type": "bandwidth", "capabilities": {"bandwidth": True},
     "runtimeConfig": {"bandwidth": {"ingressRate": 8000000, "ingressBurst": 80000}}},
]


@pytest.mark.parametrize("version", ["0.3.1", "1.0.0"])
def test_reference_chained_plugins_accept_our_result(served: Node, version: str) -> None:
    node = served
    conf = node.conf(version)
    netns = node.pod()
    result = node.add(conf, "c1", netns).ok().json
    for plugin in CHAIN:
        pconf = dict(plugin, cniVersion=version, name="cbr0", prevResult=result)
        out = node.call(node.env("ADD", "c1", netns), pconf, exe=f"/usr/lib/cni/{plugin['type']}")
        result = out.ok().json
        assert result["ips"][0]["address"] == "10.5.52.2/24"
    # tuning changed the MAC and says so in the result; the kernel agrees
    pod_if = next(i for i in result["interfaces"] if i.get("sandbox"))
    assert pod_if["mac"] == "0a:58:0a:05:34:99"
    link = node.ipj("link", "show", "dev", "eth0", netns=netns)[0]
    assert link["address"] == "0a:58:0a:05:34:99"
    assert "dport 18080" in node.nft()  # portmap's iptables-nft rules in our host netns
    if version >= "0.4.0":
        node.check(conf, "c1", netns, result).ok()  # allows the later plugins' changes
        # Debian's portmap 1.1.1 CHECK always looks for an IPv6 DNAT chain and fails on
        # IPv4-only pods, with the reference bridge just the same: check the others.
        for plugin in CHAIN[1:]:
            pconf = dict(plugin, cniVersion=version, name="cbr0", prevResult=result)
            node.call(node.env("CHECK", "c1", netns), pconf,
                      exe=f"/usr/lib/cni/{plugin['type']}").ok()
    for plugin in reversed(CHAIN):
        pconf = dict(plugin, cniVersion=version, name="cbr0")
        if version >= "0.4.0":
            pconf["prevResult"] = result
        node.call(node.env("DEL", "c1", netns), pconf, exe=f"/usr/lib/cni/{plugin['type']}").ok()
    node.delete(conf, "c1", netns, prev=result if version >= "0.4.0" else None).ok()
    assert node.reservations() == {}
    assert "18080" not in node.nft()


def test_result_is_valid_json_for_libcni_040_and_100(served: Node) -> None:
    """The fields libcni's types/040 and types/100 require, per version group."""
    node = served
    for version in ("0.3.0", "0.3.1", "0.4.0", "1.0.0"):
        res = node.add(node.conf(version), f"v{version}", node.pod()).ok().json
        assert res["cniVersion"] == version
        for ip in res["ips"]:
            assert ("version" in ip) == (version != "1.0.0")
            assert res["interfaces"][ip["interface"]].get("sandbox")
        json.dumps(res)
