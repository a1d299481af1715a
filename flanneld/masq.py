"""Masquerade and forward rules with nftables, in a table of our own: `table ip pyflannel`.

Semantics are those of flannel's iptables mode (compat §5.2, vector E), which
differ from flannel's nftables mode in two places, deliberately:

* rule 4 is `ip saddr != <Network> ip daddr <pod> return` (iptables' `! -s Network
  -d pod`). flannel-nft writes `ip saddr != <pod> ip daddr <Network> return`,
  which returns early for host -> remote-pod traffic, so its last masquerade
  rule can only ever match traffic from the local pod CIDR;
* rule 1 tests the kube-proxy mark bit (`meta mark & 0x4000 == 0x4000`), like
  iptables' `--mark 0x4000/0x4000`, not the whole mark for equality.

The whole table is replaced in one `nft -f -` transaction (`add table; delete
table; table {...}`), so there is no window without rules and nothing else in
the host's ruleset is touched. `render_table` prints exactly what `nft list table`
prints back, so a listing tells at once whether our rules are intact.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Network

TABLE = "pyflannel"
MULTICAST = IPv4Network("224.0.0.0/4")
MASQ_COMMENT = "flanneld masq"
FWD_COMMENT = "flanneld forward"


class NftError(RuntimeError):
    """`nft` failed; the message carries its stderr."""


@dataclass(frozen=True)
class RuleParams:
    network: IPv4Network  # the whole overlay (FLANNEL_NETWORK)
    subnet: IPv4Network  # this node's pod CIDR (FLANNEL_SUBNET, as a network)
    masquerade: bool = False
    forward: bool = True
    fully_random: bool = True


def masq_rules(p: RuleParams) -> list[str]:
    """The postrouting rules in order (vector E, with iptables' rule 1 and rule 4)."""
    net, pod = p.network, p.subnet
    masq = "masquerade fully-random" if p.fully_random else "masquerade"
    rules = [
        "meta mark & 0x00004000 == 0x00004000 return",  # kube-proxy marked: it NATs
        f"ip saddr {pod} ip daddr {net} return",  # pod -> overlay: keep the source
        f"ip saddr {net} ip daddr {pod} return",  # overlay -> local pod
        f"ip saddr != {net} ip daddr {pod} return",  # outside -> local pod (flannel#734)
        f"ip saddr {net} ip daddr != {MULTICAST} {masq}",  # overlay -> outside
        f"ip saddr != {net} ip daddr {net} {masq}",  # host/outside -> remote pods
    ]
    return [f'{r} comment "{MASQ_COMMENT}"' for r in rules]


def forward_rules(p: RuleParams) -> list[str]:
    return [f'ip saddr {p.network} accept comment "{FWD_COMMENT}"',
            f'ip daddr {p.network} accept comment "{FWD_COMMENT}"']


def render_table(p: RuleParams) -> str | None:
    """Our table as `nft list table ip pyflannel` prints it; None if no rules are wanted."""
    if not (p.masquerade or p.forward):
        return None
    out = [f"table ip {TABLE} {{", '\tcomment "rules for pyflannel (flanneld)"']
    chains: list[str] = []
    if p.masquerade:
        chains.append(_chain("postrtg", "chain to manage traffic masquerading by flannel",
                             "nat hook postrouting priority srcnat", masq_rules(p)))
    if p.forward:
        chains.append(_chain("forward", "chain to accept flannel traffic",
                             "filter hook forward priority filter", forward_rules(p)))
    out.append("\n\n".join(chains))
    out.append("}")
    return "\n".join(out) + "\n"


def _chain(name: str, comment: str, hook: str, rules: list[str]) -> str:
    return "\n".join([f"\tchain {name} {{", f'\t\tcomment "{comment}"',
                      f"\t\ttype {hook}; policy accept;", *(f"\t\t{r}" for r in rules),
                      "\t}"])


def render_transaction(p: RuleParams) -> str:
    """One `nft -f` script replacing our table atomically (or removing it if unwanted)."""
    head = f"add table ip {TABLE}\ndelete table ip {TABLE}\n"
    table = render_table(p)
    return head + (table or "")


def normalize(listing: str) -> list[str]:
    """A listing's lines without indentation, blank lines or rule handles."""
    lines = []
    for line in listing.splitlines():
        line = line.strip()
        if line:
            lines.append(line.split(" # handle ")[0])
    return lines


def is_intact(listing: str | None, p: RuleParams) -> bool:
    """Whether `nft list table` output shows exactly the rules we want."""
    want = render_table(p)
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


def list_table() -> str | None:
    """Our table as nft lists it, or None if it does not exist."""
    proc = _nft(["list", "table", "ip", TABLE])
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr:
            return None
        raise NftError(f"nft list table ip {TABLE}: {proc.stderr.strip()}")
    return proc.stdout


def apply(p: RuleParams) -> None:
    """Replace our table in one transaction."""
    proc = _nft(["-f", "-"], render_transaction(p))
    if proc.returncode != 0:
        raise NftError(f"nft -f (table ip {TABLE}): {proc.stderr.strip()}")


def ensure(p: RuleParams) -> bool:
    """Apply the rules unless they are already intact; True if anything was (re)written."""
    if is_intact(list_table(), p):
        return False
    apply(p)
    return True
