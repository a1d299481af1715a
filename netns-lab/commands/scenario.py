"""Replay a chaos scenario: its own lab, a fault under a pod ping at 100/s, the figures.

`scenario NAME` brings up the lab the scenario needs (named by --name), runs the
fault, waits for the recovery and prints packets lost, time to recover and data
lost, then each goal as passed or failed; the lab is taken down afterwards
(--keep leaves it). `--dual-stack` runs it on a dual-stack lab, pinging in both
families. `--list` names the scenarios, `--all` runs every one, and `--report FILE`
writes the table of docs/reliability.md there, with the figures as JSON beside it
(and into --json-out). The scale scenarios (join-250, flanneld-restart-all-250,
etcd-leader-kill-250: 250 hosts each) run by name, or with --all --scale. Exit 1 if any
goal failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from netns_lab import scenarios
from netns_lab.lab import LabError
from netns_lab.scenario_report import render_report, render_result, save_results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenarios", nargs="*", metavar="NAME", help="scenario(s) to run")
    p.add_argument("--list", action="store_true", help="list the scenarios and their goals")
    p.add_argument("--all", action="store_true",
                   help="run every scenario, one after another (without the scale ones: "
                        "add --scale)")
    p.add_argument("--scale", action="store_true",
                   help="with --all: also the scale scenarios (250 hosts: minutes each, and "
                        "`up` raises host-wide kernel settings for them)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--report", metavar="FILE", type=Path,
                   help="write the figures table into FILE (a markdown file; the part between "
                        "its report markers is replaced)")
    p.add_argument("--json-out", metavar="FILE", type=Path, action="append", default=[],
                   help="also save the figures as JSON here (repeatable)")
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    p.add_argument("--dual-stack", action="store_true",
                   help="run the scenario on a dual-stack lab, pinging in both families")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in scenarios.names():
            sc = scenarios.get(name)
            tag = " [scale]" if sc.scale else ""
            print(f"{name:20} {sc.summary}{tag}\n{'':20} goal: {sc.goal}")
        return 0
    names = ([n for n in scenarios.names() if args.scale or not scenarios.get(n).scale]
             if args.all else args.scenarios)
    if not names:
        raise LabError("name a scenario (`netns-lab scenario --list`), or --all")
    if args.keep and len(names) > 1:
        raise LabError("--keep keeps one scenario's lab: name just one scenario")
    for name in names:
        scenarios.get(name)  # unknown names fail before any lab is built
    results = []
    for name in names:
        result = scenarios.run_scenario(name, args.name, sys.stderr, quiet=args.quiet,
                                           keep=args.keep, dual_stack=args.dual_stack)
        results.append(result)
        if not args.json:
            print(render_result(result), flush=True)
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    merged = results  # with --json-out, the table also shows earlier runs of other scenarios
    for path in args.json_out:
        merged = save_results(path, results)
    if args.report is not None:
        render_report(args.report, merged)
        print(f"report written to {args.report}", file=sys.stderr)
    return 0 if all(r["ok"] for r in results) else 1
