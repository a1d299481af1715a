"""The pure parts of the chaos scenarios: ping output, figures, the report table."""

from __future__ import annotations

from pathlib import Path

import pytest
from netns_lab import scenarios
from netns_lab.measure import entries_changed, parse_ping, ping_figures
from netns_lab.scenario_kit import with_ipv6
from netns_lab.scenario_report import BEGIN, END, merge, render_report, render_result
from netns_lab.topology import parse


def ping_output(sent: int, answered: list[int], errors: str = "") -> str:
    lines = ["PING 10.244.2.2 (10.244.2.2) 56(84) bytes of data."]
    lines += [f"[1700000000.{seq * 10000:06d}] 64 bytes from 10.244.2.2: icmp_seq={seq} ttl=62 "
              f"time=0.1 ms" for seq in answered]
    lines += ["", "--- 10.244.2.2 ping statistics ---",
              f"{sent} packets transmitted, {len(answered)} received{errors}, "
              f"{100 * (sent - len(answered)) // sent}% packet loss, time 1000ms"]
    return "\n".join(lines) + "\n"


def test_all_answered() -> None:
    s = parse_ping(ping_output(50, list(range(1, 51))), "a", "b")
    assert (s.sent, s.received, s.lost, s.in_flight) == (50, 50, 0, 0)
    assert s.longest_gap_s == pytest.approx(0.01, abs=1e-6)


def test_the_last_requests_are_in_flight_not_lost() -> None:
    s = parse_ping(ping_output(50, list(range(1, 49))))
    assert (s.lost, s.in_flight) == (0, 2)


def test_losses_in_the_middle_and_a_long_tail_count() -> None:
    answered = [n for n in range(1, 41) if not 10 <= n < 20]
    s = parse_ping(ping_output(50, answered, ", +3 errors"))
    assert (s.received, s.lost, s.in_flight) == (30, 20, 0)  # 10 lost + a 10-packet tail
    assert s.longest_gap_s == pytest.approx(0.11, abs=1e-6)


def test_no_summary_is_an_error() -> None:
    with pytest.raises(ValueError, match="no ping summary"):
        parse_ping("PING 10.0.0.1\n")


def test_figures_sum_the_pings() -> None:
    a = parse_ping(ping_output(50, list(range(1, 51))), "h1/p1", "h2/p1")
    b = parse_ping(ping_output(20, list(range(1, 16))), "h2/p1", "h1/p1")
    f = ping_figures([a, b])
    assert (f["packets_sent"], f["packets_lost"]) == (70, 5)
    assert [p["src"] for p in f["pings"]] == ["h1/p1", "h2/p1"]


def test_entries_changed_counts_each_difference() -> None:
    before = {"routes": ["r1", "r2"], "neighs": ["n1"], "fdb": ["f1"],
              "devices": {"flannel.1": (5, "0e:00:00:00:00:01", 1450)}}
    after = {"routes": ["r1", "r3"], "neighs": ["n1"], "fdb": [],
             "devices": {"flannel.1": (6, "0e:00:00:00:00:01", 1450)}}
    assert entries_changed(before, before) == 0
    assert entries_changed(before, after) == 4  # r2 gone, r3 new, f1 gone, device new


def test_every_scenario_has_a_valid_topology_and_a_goal() -> None:
    names = scenarios.names()
    assert {"etcd-outage", "etcd-failover", "etcd-compaction", "flanneld-kill9",
            "flanneld-kill9-all", "lease-deleted", "host-removed", "kernel-drift", "cloned-state",
            "join-20", "network-full"} <= set(names)
    for name in names:
        sc = scenarios.get(name)
        topo = parse(sc.topology, name)
        assert sc.goal and sc.summary
        assert any(h.pods for h in topo.hosts)


def result(name: str, ok: bool = True, lost: int = 0) -> dict[str, object]:
    return {"scenario": name, "summary": "a fault", "goal": "a goal", "hosts": 3,
            "lab_up_s": 2.0, "packets_sent": 100, "packets_lost": lost, "longest_gap_s": 0.02,
            "recovery_s": 1.5, "data_lost": 0, "extra": {"x": 1},
            "checks": [{"check": "no packet lost", "ok": ok, "detail": f"{lost} lost"}],
            "error": "", "ok": ok, "took_s": 5.0}


def test_result_and_report_rendering(tmp_path: Path) -> None:
    text = render_result(result("flanneld-kill9", ok=False, lost=3))
    assert "FAIL" in text and "3 of 100" in text and "extra" in text
    doc = tmp_path / "reliability.md"
    doc.write_text("# Reliability\n\nintro\n\n" + BEGIN + "\nold\n" + END + "\n\nafter\n")
    render_report(doc, [result("a"), result("b", ok=False, lost=2)])
    out = doc.read_text()
    assert out.startswith("# Reliability\n\nintro\n") and out.endswith("\nafter\n")
    assert "old" not in out and "| `a` | a fault | 0 / 100 |" in out and "**not met**" in out


def test_merge_replaces_by_scenario_and_keeps_order() -> None:
    merged = merge([result("a"), result("b")], [result("b", lost=1), result("c")])
    assert [r["scenario"] for r in merged] == ["a", "b", "c"]
    assert merged[1]["packets_lost"] == 1


def test_every_scenario_also_parses_as_a_dual_stack_lab() -> None:
    for name in scenarios.names():
        raw = scenarios.get(name).topology
        topo = parse(with_ipv6(raw), name)
        assert topo.families == (4, 6), name
        assert all(s.subnet6 is not None for s in topo.segments), name
        assert parse(raw, name).families == (4,)  # the scenario's own stays IPv4
