"""Masquerade and forward rules with nftables, in a table of our own: `table ip pyflannel`.

Semantics are those of flannel's iptables mode (compat §5.2, vector E), which
differ from flannel's nftables mode in two places, deliberately:

* rule 4 is `ip saddr != <Network> ip daddr <pod> return` (iptables' `! -s Network
  -d pod`). flannel-nft writes `ip saddr != <pod> ip daddr <Network> return`,
  which returns early for host -> remote-pod traffic, so its last masquerade
  rule can only ever match traffic from the local pod CIDR;
* rule 1 tests the kube-proxy mark bit (`meta mark & 0x4000 == 0x4000`), like
  iptables' `--mark 0x4000/0x4000`, not the whole mark for equality.

IPv6 (dual stack or IPv6-only) gets the same two chains in `table ip6 pyflannel`,
with the cluster's IPv6Network and this node's IPv6 subnet, `ip6 saddr/daddr` and
`ff00::/8` for multicast: flannel's ip6tables list (compat §6.1), the same two
deliberate differences from its `ip6 flannel-ipv6` nft table. A family the node
does not run has no table (a stale one, left from before a switch, is removed).

Each family's table is replaced in one `nft -f -` transaction (`add table; delete
table; table {...}`), so there is no window without rules and nothing else in
the host's ruleset is touched. `render_table` prints exactly what `nft list table`
prints back, so a listing tells at once whether our rules are intact.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

TABLE = "pyflannel"
MULTICAST = IPv4Network("224.0.0.0/4")
MULTICAST6 = IPv6Network("ff00::/8")
MASQ_COMMENT = "flanneld masq"
FWD_COMMENT = "flanneld forward"
FAMILIES = (4, 6)
_NFT_FAMILY = {4: "ip", 6: "ip6"}


class NftError(RuntimeError):
    """`nft` failed; the message carries its stderr."""


@dataclass(frozen=True)
class RuleParams:
    network: IPv4Network | None  # the whole overlay (FLANNEL_NETWORK); None: IPv6-only
    subnet: IPv4Network | None  # this node's pod CIDR (FLANNEL_SUBNET, as a network)
    masquerade: bool = False
    forward: bool = True
    fully_random: bool = True
    ipv6_network: IPv6Network | None = None  # FLANNEL_IPV6_NETWORK (dual stack, IPv6-only)
    ipv6_subnet: IPv6Network | None = None  # FLANNEL_IPV6_SUBNET, as a network

    def pair(self, family: int) -> tuple[IPv4Network, IPv4Network] | \
            tuple[IPv6Network, IPv6Network] | None:
        """(cluster network, pod subnet) of one family, None if the node does not run it."""
        if family == 4:
            if self.network is not None and self.subnet is not None:
                return self.network, self.subnet
            return None
        if self.ipv6_network is not None and self.ipv6_subnet is not None:
            return self.ipv6_network, self.ipv6_subnet
        return None

    def families(self) -> list[int]:
        return [f for f in FAMILIES if self.pair(f) is not None]


def table_name(family: int = 4) -> str:
    """`ip pyflannel` or `ip6 pyflannel`, as nft names it."""
    return f"{_NFT_FAMILY[family]} {TABLE}"


def _pair(p: RuleParams, family: int) -> tuple[IPv4Network | IPv6Network,
                                               IPv4Network | IPv6Network]:
    pair = p.pair(family)
    if pair is None:
        raise ValueError(f"RuleParams has no IPv{family} network and subnet")
    return pair


def masq_rules(p: RuleParams, family: int = 4) -> list[str]:
    """The postrouting rules in order (vector E, with iptables' rule 1 and rule 4)."""
    net, pod = _pair(p, family)
    ip, mcast = ("ip", MULTICAST) if family == 4 else ("ip6", MULTICAST6)
    masq = "masquerade fully-random" if p.fully_random else "masquerade"
    rules = [
        "meta mark & 0x00004000 == 0x00004000 return",  # kube-proxy marked: it NATs
        f"{ip} saddr {pod} {ip} daddr {net} return",  # pod -> overlay: keep the source
        f"{ip} saddr {net} {ip} daddr {pod} return",  # overlay -> local pod
        f"{ip} saddr != {net} {ip} daddr {pod} return",  # outside -> local pod (flannel#734)
        f"{ip} saddr {net} {ip} daddr != {mcast} {masq}",  # overlay -> outside
        f"{ip} saddr != {net} {ip} daddr {net} {masq}",  # host/outside -> remote pods
    ]
    return [f'{r} comment "{MASQ_COMMENT}"' for r in rules]


def forward_rules(p: RuleParams, family: int = 4) -> list[str]:
    net, _pod = _pair(p, family)
    ip = _NFT_FAMILY[family]
    return [f'{ip} saddr {net} accept comment "{FWD_COMMENT}"',
            f'{ip} daddr {net} accept comment "{FWD_COMMENT}"']


def render_table(p: RuleParams, family: int = 4) -> str | None:
    """One family's table as `nft list table ip[6] pyflannel` prints it; None if no rules
    are wanted or the node does not run that family."""
    if not (p.masquerade or p.forward) or p.pair(family) is None:
        return None
    out = [f"table {table_name(family)} {{", '\tcomment "rules for pyflannel (flanneld)"']
    chains: list[str] = []
    if p.masquerade:
        chains.append(_chain("postrtg", "chain to manage traffic masquerading by flannel",
                             "nat hook postrouting priority srcnat", masq_rules(p, family)))
    if p.forward:
        chains.append(_chain("forward", "chain to accept flannel traffic",
                             "filter hook forward priority filter", forward_rules(p, family)))
    out.append("\n\n".join(chains))
    out.append("}")
    return "\n".join(out) + "\n"


def _chain(name: str, comment: str, hook: str, rules: list[str]) -> str:
    return "\n".join([f"\tchain {name} {{", f'\t\tcomment "{comment}"',
                      f"\t\ttype {hook}; policy accept;", *(f"\t\t{r}" for r in rules),
                      "\t}"])


def render_transaction(p: RuleParams, families: tuple[int, ...] | None = None) -> str:
    """One `nft -f` script replacing our table of each of `families` (default: those the
    node runs) atomically, or removing it where unwanted: a family the node does not run
    has no table."""
    out = []
    for family in families or tuple(p.families()) or (4,):
        name = table_name(family)
        out.append(f"add table {name}\ndelete table {name}\n{render_table(p, family) or ''}")
    return "".join(out)


def normalize(listing: str) -> list[str]:
    """A listing's lines without indentation, blank lines or rule handles."""
    lines = []
    for line in listing.splitlines():
        line = line.strip()
        if line:
            lines.append(line.split(" # handle ")[0])
    return lines


def is_intact(listing: str | None, p: RuleParams, family: int = 4) -> bool:
    """Whether `nft list table` output of one family shows exactly the rules we want."""
    want = render_table(p, family)
    if want is None:
        return listing is None
    return listing is not None and normalize(listing) == normalize(want)


# -- I/O: run nft in this process's network namespace ------------------------------------

def _nft(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True,
                              timeout=30)
    except FileNotFoundError:
        raise NftError("nft not found: install the nftables package") from None


def list_table(family: int = 4) -> str | None:
    """One family's table as nft lists it, or None if it does not exist."""
    proc = _nft(["list", "table", _NFT_FAMILY[family], TABLE])
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr:
            return None
        raise NftError(f"nft list table {table_name(family)}: {proc.stderr.strip()}")
    return proc.stdout


def apply(p: RuleParams, families: tuple[int, ...] | None = None) -> None:
    """Replace our tables (of `families`, default those the node runs) in one transaction."""
    families = families or tuple(p.families()) or (4,)
    proc = _nft(["-f", "-"], render_transaction(p, families))
    if proc.returncode != 0:
        names = " and ".join(f"table {table_name(f)}" for f in families)
        raise NftError(f"nft -f ({names}): {proc.stderr.strip()}")


def ensure(p: RuleParams) -> list[str]:
    """Re-apply each family's table unless it is already intact (an unwanted one must be
    absent); the names of the tables (re)written or removed, [] if all were intact."""
    stale = tuple(f for f in FAMILIES if not is_intact(list_table(f), p, f))
    if stale:
        apply(p, stale)
    return [table_name(f) for f in stale]
