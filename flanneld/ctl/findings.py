"""What `flannelctl doctor` checks and what it finds: plain data, shared by every check.

A check's module (doctor itself, ipam for the address store) returns Findings; the
table of checks is also the source of the generated docs/troubleshooting table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    Check("flanneld", "flanneld's /readyz on --healthz-ip:--healthz-port",
          "flanneld is down or not ready; /readyz's text says why",
          "systemctl status flanneld; journalctl -u flanneld (or run with --healthz-port)"),
    Check("peers", "each peer's route (and vxlan neighbour and FDB entry) against its lease",
          "pods on this node cannot reach pods on the peers listed",
          "wait one --resync-interval (flanneld repairs drift); if it stays, read flanneld's "
          "log and restart it"),
    Check("skipped", "leases flanneld cannot use (wrong backend, bad VtepMAC, not on-link...)",
          "those nodes are not reachable from here, by design",
          "fix the lease or the node named in the detail (same Backend on every node)"),
    Check("strays", "kernel entries in flanneld's scope that no lease wants",
          "traffic to a deleted node's subnet may go to a stale address",
          "wait one --resync-interval; flanneld removes them in a full reconcile"),
    Check("mtu", "underlay, flannel device, subnet.env and CNI bridge MTUs agree",
          "large packets are dropped or fragmented between pods (TCP stalls)",
          "restart flanneld after changing the underlay MTU; then re-create pods"),
    Check("ip-forward", "net.ipv4.ip_forward is 1",
          "the host does not forward pod traffic at all",
          "sysctl -w net.ipv4.ip_forward=1 (persist it in /etc/sysctl.d/)"),
    Check("rp-filter", "rp_filter is not strict (1) on the flannel device or the CNI bridge",
          "replies arriving on another interface than the route back are dropped",
          "sysctl -w net.ipv4.conf.all.rp_filter=2 (loose), and the same for the device"),
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

    def as_dict(self) -> dict[str, Any]:
        fix = BY_NAME[self.check].fix if self.status in (WARN, FAIL) else None
        return {"check": self.check, "status": self.status, "detail": self.detail,
                "lines": list(self.lines), "fix": fix}
