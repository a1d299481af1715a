"""nftables masquerade rules: the golden text, and the same verdicts as flannel's iptables mode.

The verdict test evaluates vector E's iptables rules and our nft rules over every
combination of source, destination and mark, and requires identical results;
it also shows that flannel's own nft rules (vector E) differ, which is why ours
do not copy them.
"""

from __future__ import annotations

import itertools
import re
from ipaddress import IPv4Address, IPv4Network

from flanneld.masq import (
    RuleParams,
    forward_rules,
    is_intact,
    masq_rules,
    normalize,
    render_table,
    render_transaction,
)

NET, POD = IPv4Network("10.5.0.0/16"), IPv4Network("10.5.52.0/24")
PARAMS = RuleParams(NET, POD, masquerade=True)

# Vector E, verbatim from flannel's e2e/rules.go (the FLANNEL-POSTRTG chain).
IPTABLES_E = """\
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.5.52.0/24 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.52.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.52.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
"""  # noqa: E501
FLANNEL_NFT_E = """\
meta mark 0x00004000 return
ip saddr 10.5.52.0/24 ip daddr 10.5.0.0/16 return
ip saddr 10.5.0.0/16 ip daddr 10.5.52.0/24 return
ip saddr != 10.5.52.0/24 ip daddr 10.5.0.0/16 return
ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random
"""

GOLDEN = """\
table ip pyflannel {
\tcomment "rules for pyflannel (flanneld)"
\tchain postrtg {
\t\tcomment "chain to manage traffic masquerading by flannel"
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tmeta mark & 0x00004000 == 0x00004000 return comment "flanneld masq"
\t\tip saddr 10.5.52.0/24 ip daddr 10.5.0.0/16 return comment "flanneld masq"
\t\tip saddr 10.5.0.0/16 ip daddr 10.5.52.0/24 return comment "flanneld masq"
\t\tip saddr != 10.5.0.0/16 ip daddr 10.5.52.0/24 return comment "flanneld masq"
\t\tip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random comment "flanneld masq"
\t\tip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random comment "flanneld masq"
\t}

\tchain forward {
\t\tcomment "chain to accept flannel traffic"
\t\ttype filter hook forward priority filter; policy accept;
\t\tip saddr 10.5.0.0/16 accept comment "flanneld forward"
\t\tip daddr 10.5.0.0/16 accept comment "flanneld forward"
\t}
}
"""


def test_golden_table() -> None:
    assert render_table(PARAMS) == GOLDEN


def test_transaction_replaces_only_our_table() -> None:
    script = render_transaction(PARAMS)
    assert script.startswith("add table ip pyflannel\ndelete table ip pyflannel\n")
    assert script.endswith(GOLDEN)
    assert "flush ruleset" not in script and "inet" not in script


def test_variants() -> None:
    no_masq = render_table(RuleParams(NET, POD))
    assert no_masq is not None and "postrtg" not in no_masq and "chain forward" in no_masq
    only_masq = render_table(RuleParams(NET, POD, masquerade=True, forward=False,
                                        fully_random=False))
    assert only_masq is not None and "chain forward" not in only_masq
    assert "fully-random" not in only_masq and "masquerade comment" in only_masq
    assert render_table(RuleParams(NET, POD, forward=False)) is None
    # Nothing wanted: the transaction just removes our table.
    assert render_transaction(RuleParams(NET, POD, forward=False)) == (
        "add table ip pyflannel\ndelete table ip pyflannel\n")
    assert forward_rules(PARAMS)[0] == 'ip saddr 10.5.0.0/16 accept comment "flanneld forward"'


def test_intact_check_ignores_layout_and_handles() -> None:
    listing = GOLDEN.replace("\t", "    ").replace(
        'return comment "flanneld masq"\n', 'return comment "flanneld masq" # handle 7\n', 1)
    assert normalize(listing) == normalize(GOLDEN)
    assert is_intact(listing, PARAMS)
    assert not is_intact(None, PARAMS)
    missing_rule = "\n".join(line for line in GOLDEN.splitlines() if "224.0.0.0" not in line)
    assert not is_intact(missing_rule, PARAMS)
    assert not is_intact(GOLDEN, RuleParams(NET, IPv4Network("10.5.53.0/24"), masquerade=True))
    assert is_intact(None, RuleParams(NET, POD, forward=False))


# -- verdicts: a tiny evaluator for both rule languages --------------------------------------

Packet = tuple[IPv4Address, IPv4Address, int]  # saddr, daddr, mark


def _iptables(rules: str) -> list[tuple[list, str]]:
    out = []
    for line in rules.splitlines():
        conds: list = []
        for neg, opt, val in re.findall(r"(! )?(-s|-d|--mark) (\S+)", line):
            if opt == "--mark":
                value, mask = (int(x, 16) for x in val.split("/"))
                conds.append(("mark", value, mask, False))
            else:
                conds.append((opt, IPv4Network(val), None, bool(neg)))
        out.append((conds, "masquerade" if "MASQUERADE" in line else "return"))
    return out


def _nft(rules: list[str]) -> list[tuple[list, str]]:
    out = []
    for line in rules:
        conds: list = []
        m = re.search(r"meta mark (?:& (0x[0-9a-f]+) == )?(0x[0-9a-f]+)", line)
        if m:
            mask = int(m.group(1), 16) if m.group(1) else 0xFFFFFFFF
            conds.append(("mark", int(m.group(2), 16), mask, False))
        for field, neg, val in re.findall(r"ip (saddr|daddr) (!= )?(\S+)", line):
            conds.append(("-s" if field == "saddr" else "-d", IPv4Network(val), None,
                          bool(neg)))
        out.append((conds, "masquerade" if "masquerade" in line else "return"))
    return out


def _verdict(chain: list[tuple[list, str]], pkt: Packet) -> str:
    src, dst, mark = pkt
    for conds, action in chain:
        ok = True
        for kind, value, mask, neg in conds:
            if kind == "mark":
                hit = mark & mask == value
            else:
                hit = (src if kind == "-s" else dst) in value
            ok = ok and hit != neg
        if ok:
            return action
    return "accept"  # end of chain: no NAT


ADDRS = [IPv4Address(a) for a in ("10.5.52.7", "10.5.34.2", "192.168.64.3", "8.8.8.8",
                                  "224.0.0.251", "10.6.0.1")]
PACKETS = [(s, d, m) for s, d in itertools.product(ADDRS, ADDRS) for m in (0, 0x4000, 0x4001)]


def test_same_verdicts_as_flannel_iptables_mode() -> None:
    ipt, ours = _iptables(IPTABLES_E), _nft(masq_rules(PARAMS))
    diffs = [p for p in PACKETS if _verdict(ipt, p) != _verdict(ours, p)]
    assert diffs == []
    # Sanity: the rules do something in both directions.
    assert _verdict(ours, (IPv4Address("10.5.52.7"), IPv4Address("8.8.8.8"), 0)) == "masquerade"
    assert _verdict(ours, (IPv4Address("10.5.52.7"), IPv4Address("10.5.34.2"), 0)) == "return"


def test_flannel_nft_rules_differ_where_documented() -> None:
    ipt, flannel_nft = _iptables(IPTABLES_E), _nft(FLANNEL_NFT_E.splitlines())
    host, remote_pod = IPv4Address("192.168.64.3"), IPv4Address("10.5.34.2")
    # Host -> remote pod: iptables masquerades (rule 6); flannel-nft returns at its rule 4.
    assert _verdict(ipt, (host, remote_pod, 0)) == "masquerade"
    assert _verdict(flannel_nft, (host, remote_pod, 0)) == "return"
    # A mark with other bits set: iptables tests the bit, flannel-nft the whole value.
    pod, out = IPv4Address("10.5.52.7"), IPv4Address("8.8.8.8")
    assert _verdict(ipt, (pod, out, 0x4001)) == "return"
    assert _verdict(flannel_nft, (pod, out, 0x4001)) == "masquerade"
