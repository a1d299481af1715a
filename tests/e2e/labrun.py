"""Driving a lab from a test, through the real `netns-lab` command.

A `LabRun` owns one uniquely named lab (`t<pid>x<tag>`): a crashed test run's
labs are removed by the next run's sweep (`sweep_stale_test_sandboxes`), and a
reaper removes them at once if the test process is killed. `close()` runs
`netns-lab down` and reports anything it left behind.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netns_lab.build import leftovers
from netns_lab.lab import Lab
from netns_lab.netns import Sandbox, owned_lab_name, pid_alive, sweep_stale_test_sandboxes
from netns_lab.plan import lab_prefix


def cli_argv() -> list[str]:
    exe = Path(sys.executable).parent / "netns-lab"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "netns_lab.cli"]


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


class LabRun:
    def __init__(self, tag: str) -> None:
        sweep_stale_test_sandboxes()
        self.name = owned_lab_name(tag)
        self.box = Sandbox(lab_prefix(self.name))
        self.box.start_reaper()
        self.root_links_before = root_links()
        self.up_seconds = 0.0
        self.pids: list[int] = []
        self.closed = False

    def cli(self, *args: str, check: bool = True,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*cli_argv(), "--name", self.name, *args], capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"netns-lab {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def up(self, topology: str, *extra: str) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        proc = self.cli("up", topology, *extra)
        self.up_seconds = time.monotonic() - start
        self.pids = self.tracked_pids()
        return proc

    def lab(self) -> Lab:
        return Lab.load(self.name)

    def tracked_pids(self) -> list[int]:
        out = []
        for pf in self.box.state_dir.glob("*.pid"):
            try:
                out.append(int(pf.read_text()))
            except ValueError:
                continue
        return out

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)

    def ping(self, *args: str, check: bool = True) -> list[dict[str, Any]]:
        proc = self.cli("ping", "--json", *args, check=check)
        return json.loads(proc.stdout)

    def capture(self, host: str, action: Callable[[], object], count: int,
                timeout: float = 20) -> list[dict[str, Any]]:
        """Packets decoded on `host` while `action` runs (started once capture listens)."""
        proc = subprocess.Popen([*cli_argv(), "--name", self.name, "capture", host, "-c",
                                 str(count), "--timeout", str(timeout), "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        seen = ""
        while "capturing on" not in seen:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError(f"capture never started: {seen}{proc.stderr.read()}")
            if sel.select(timeout=0.5):
                seen += proc.stderr.readline()
        sel.close()
        try:
            action()
            out, err = proc.communicate(timeout=timeout + 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise AssertionError(f"capture exited {proc.returncode}: {err}")
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def pod_exec(self, pod: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli("exec", pod, "--", *cmd, check=check)

    def close(self) -> dict[str, list[str]]:
        """`netns-lab down`, then what it left behind (empty when all is well)."""
        left: dict[str, list[str]] = {}
        if self.closed:
            return left
        self.closed = True
        try:
            self.cli("down", timeout=120)
            left = {k: v for k, v in leftovers(self.name).items() if v}
            alive = [str(p) for p in self.pids if pid_alive(p)]
            if alive:
                left["tracked processes alive"] = alive
            new_links = sorted(root_links() - self.root_links_before)
            ours = [n for n in new_links if n.startswith(("to-", "br0", "cni0", "flannel", "eth"))]
            if ours:
                left["root namespace links"] = ours
        finally:
            self.box.cleanup()  # belt and braces; also stops the reaper
        return left


@contextmanager
def lab_up(topology: str, tag: str = "") -> Iterator[LabRun]:
    """A lab brought up for a test; its `down` must then leave nothing behind."""
    run = LabRun(tag)
    try:
        run.up(topology)
        yield run
    finally:
        left = run.close()
    assert left == {}, f"`netns-lab down` left behind: {left}"
