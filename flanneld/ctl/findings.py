"""What `flannelctl doctor` checks and what it finds: plain data, shared by every check.

A check's module (doctor itself, ipam for the address store) returns Findings; the
table of checks is also the source of the generated docs/troubleshooting table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backends.peerstate import MISSING, PARTIAL, SKIPPED, STALE, UNREACHABLE, PeerCheck

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"


@dataclass(frozen=True)
class Check:
    name: str
    what: str  # what it looks at
    means: str  # what a failure means
    fix: str  # the one-line fix


CHECKS = (
    Check("etcd", "every --etcd-endpoints answers a read of the lease prefix",
          "flanneld can neither renew its lease nor learn about peers (the data plane keeps "
          "working on what it has)",
          "check --etcd-endpoints and the TLS/auth flags, then `etcdctl endpoint health`"),
    Check("network-config", "`<prefix>/config` exists and parses",
          "flanneld waits at start-up and never becomes ready",
          "etcdctl put <prefix>/config '{\"Network\":\"10.5.0.0/16\",\"Backend\":"
          "{\"Type\":\"vxlan\"}}' (see docs/configuration.md)"),
    Check("subnet-env", "--subnet-file exists and is valid",
          "the CNI plugin cannot start pods (code 11)",
          "start flanneld (it writes the file once every peer is programmed); check "
          "--subnet-file"),
    Check("lease", "etcd holds a lease for subnet.env's subnet with this node's PublicIP",
          "another node may take this subnet; pods here would then clash with its pods",
          "restart flanneld: it re-acquires the same subnet if it is free"),
    Check("v6-lease", "IPv6 enabled: our lease's IPv6 subnet is subnet.env's "
          "FLANNEL_IPV6_SUBNET, it has a PublicIPv6, and (vxlan) its BackendV6Data VtepMAC is "
          "flannel-v6.N's MAC",
          "peers cannot reach this node's IPv6 pods, or send their traffic to a MAC nobody has",
          "restart flanneld: with EnableIPv6 it leases an IPv6 subnet and publishes its "
          "PublicIPv6 and VtepMAC (the interface needs a global IPv6 address, or "
          "--public-ipv6)"),
    Check("flanneld", "flanneld's /readyz on --healthz-ip:--healthz-port",
          "flanneld is down or not ready; /readyz's text says why",
          "systemctl status flanneld; journalctl -u flanneld (or run with --healthz-port)"),
    Check("peers", "each peer's route (and vxlan neighbour and FDB entry) against its lease; "
          "wireguard: its peer on flannel-wg (public key, allowed IPs = its subnet(s), "
          "endpoint = PublicIP:Port, or roamed while the peer is live)",
          "pods on this node cannot reach pods on the peers listed",
          "wait one --resync-interval (flanneld repairs drift); if it stays, read flanneld's "
          "log and restart it"),
    Check("skipped", "leases flanneld cannot use (wrong backend, bad VtepMAC, not on-link...)",
          "those nodes are not reachable from here, by design",
          "fix the lease or the node named in the detail (same Backend on every node)"),
    Check("strays", "kernel entries in flanneld's scope that no lease wants",
          "traffic to a deleted node's subnet may go to a stale address",
          "wait one --resync-interval; flanneld removes them in a full reconcile"),
    Check("v6-device", "vxlan with IPv6: flannel-v6.N exists and is up, MTU = underlay MTU - "
          "70, local = our PublicIPv6, our IPv6 subnet's address as a /128, accept_ra 0",
          "IPv6 pod traffic to other nodes is dropped (no device, down, wrong local address), "
          "full-size IPv6 packets are (MTU above underlay - 70), or router advertisements "
          "add addresses and routes to it",
          "wait one --resync-interval (flanneld re-creates and repairs the device); the "
          "finding names each repair by hand"),
    Check("v6-peers", "IPv6 enabled: each peer's IPv6 route (vxlan: and neighbour and FDB "
          "entry on flannel-v6.N; host-gw: via its PublicIPv6) against its lease",
          "pods on this node cannot reach pods on the peers listed over IPv6",
          "wait one --resync-interval (flanneld repairs drift, counted as route6/neigh6/fdb6 "
          "in flanneld_repairs_total); if it stays, read flanneld's log and restart it"),
    Check("v6-skipped", "leases whose IPv6 half flanneld cannot use (no IPv6 subnet, "
          "PublicIPv6 or BackendV6Data yet, outside IPv6Network, not on-link)",
          "those nodes are reached over IPv4 only, or not at all over IPv6",
          "enable IPv6 on the node named (a global IPv6 address on its interface, then "
          "restart its flanneld), or fix its lease"),
    Check("v6-strays", "IPv6 kernel entries in flanneld's scope that no lease wants",
          "IPv6 traffic to a deleted node's subnet may go to a stale address",
          "wait one --resync-interval; flanneld removes them in a full reconcile"),
    Check("wg-key", "wireguard: the private key file (/run/flannel/wgkey or "
          "$WIREGUARD_KEY_FILE) has mode 0400 and parses, and its public key is our lease's "
          "PublicKey and the devices'",
          "others on the node can read the key (anyone holding it can impersonate the node), "
          "or peers encrypt to a key this node no longer has: its pods are cut off",
          "chmod 0400 the file; for a mismatch restart flanneld (it sets the devices' key and "
          "publishes its public key); never replace a key by hand while peers know it"),
    Check("wg-device", "wireguard: flannel-wg (and flannel-wg-v6) exists, is up, answers on "
          "/var/run/wireguard/<dev>.sock, listens on ListenPort (ListenPortV6), MTU = "
          "interface MTU - 80",
          "no pod traffic to or from other nodes (no device, down, wireguard-go gone, peers "
          "sending to another port), or full-size packets dropped (MTU too large)",
          "wait one --resync-interval (flanneld adopts or re-creates the device and repairs "
          "its port and MTU); else read flanneld's log (--wireguard-userspace, wireguard-go)"),
    Check("wg-handshake", "wireguard: each peer's last handshake is under 180 s old (or it is "
          "new: known for under a minute)",
          "no traffic has gone to that peer lately, or it cannot be reached: its endpoint "
          "(PublicIP:Port) is filtered or wrong, or it has another key than its lease says; "
          "an idle peer without PersistentKeepaliveInterval never handshakes, so this warns",
          "ping a pod on that node; if the handshake stays old, open UDP to its listen port "
          "between the nodes and compare `flannelctl leases` with its key"),
    Check("mtu", "underlay, flannel devices, subnet.env and CNI bridge MTUs agree; "
          "FLANNEL_MTU fits every family (VXLAN costs 50 bytes over IPv4, 70 over IPv6; "
          "WireGuard 80)",
          "large packets are dropped or fragmented between pods (TCP stalls)",
          "restart flanneld after changing the underlay MTU; then re-create pods"),
    Check("ip-forward", "net.ipv4.ip_forward is 1",
          "the host does not forward pod traffic at all",
          "sysctl -w net.ipv4.ip_forward=1 (persist it in /etc/sysctl.d/)"),
    Check("ip6-forward", "IPv6 enabled: net.ipv6.conf.all.forwarding is 1",
          "the host does not forward IPv6 pod traffic at all",
          "sysctl -w net.ipv6.conf.all.forwarding=1 (persist it in /etc/sysctl.d/)"),
    Check("rp-filter", "rp_filter is not strict (1) on the flannel device or the CNI bridge",
          "replies arriving on another interface than the route back are dropped",
          "sysctl -w net.ipv4.conf.all.rp_filter=2 (loose), and the same for the device"),
    Check("neigh-table", "the kernel's neighbour tables (`ip ntable show`: gc_thresh1-3, shared "
          "by every namespace) against one underlay entry per peer plus headroom",
          "past gc_thresh3 the kernel refuses new neighbour entries (\"neighbor table "
          "overflow\" in dmesg): peers go unreachable though every route is programmed "
          "(flannel#928)",
          "raise net.ipv4.neigh.default.gc_thresh1/2/3 (and net.ipv6...) to the values the "
          "detail names; persist them in /etc/sysctl.d/"),
    Check("vxlan-csum", "kernel version and `ethtool -k flannel.N` tx-checksum-ip-generic",
          "kernels before 5.7 corrupt checksums of NATed VXLAN packets (63 s delays; "
          "flannel#1279)",
          "ethtool -K flannel.N tx-checksum-ip-generic off (or a kernel >= 5.7)"),
    Check("ipam", "each pod address reservation has a pod (netns, veth) that still exists",
          "leaked addresses: the pool runs out, new pods fail with code 11",
          "flannelctl ipam gc --yes"),
)
BY_NAME = {ch.name: ch for ch in CHECKS}


@dataclass
class Finding:
    check: str
    status: str
    detail: str
    lines: tuple[str, ...] = ()
    fix: str = ""  # this finding's own what-to-do (naming the device, the value), else the check's

    @property
    def what_to_do(self) -> str:
        return self.fix or BY_NAME[self.check].fix

    def as_dict(self) -> dict[str, Any]:
        fix = self.what_to_do if self.status in (WARN, FAIL) else None
        return {"check": self.check, "status": self.status, "detail": self.detail,
                "lines": list(self.lines), "fix": fix}


def peer_findings(checks: dict[str, PeerCheck], strays: list[str],
                  names: tuple[str, str, str] = ("peers", "skipped", "strays"),
                  family: str = "") -> list[Finding]:
    """The peers / skipped / strays findings of one family's verdicts."""
    bad = {k: ch for k, ch in checks.items() if ch.state in (MISSING, PARTIAL, STALE)}
    odd = {k: ch for k, ch in checks.items() if ch.state in (SKIPPED, UNREACHABLE)}
    good = len(checks) - len(bad) - len(odd)
    sfx = f" for {family}" if family else ""

    def lines(found: dict[str, PeerCheck]) -> tuple[str, ...]:
        return tuple(f"{k}: {ch.state}: {'; '.join(ch.problems)}"
                     for k, ch in sorted(found.items()))

    return [Finding(names[0], FAIL if bad else OK,
                    f"{len(bad)} of {len(checks)} peers not programmed{sfx}" if bad
                    else f"{good} peers programmed{sfx}", lines(bad)),
            Finding(names[1], WARN if odd else OK,
                    f"{len(odd)} leases not used{sfx}" if odd else "every lease is used",
                    lines(odd)),
            Finding(names[2], WARN if strays else OK,
                    f"{len(strays)} entries no lease wants" if strays else "none",
                    tuple(strays))]
