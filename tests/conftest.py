"""Shared fixtures: a real etcd on loopback, and a throwaway sandbox of namespaces.

Nothing is mocked: integration tests talk to a real etcd server and the real
kernel. Every namespace a test makes carries this run's prefix and is removed
at teardown, by the reaper if the run is killed, or by the next run's sweep.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# pytest puts tests/ on sys.path; the repo root must be there too, or tests/cni/ (a
# directory without __init__) would shadow the `cni` package as a namespace package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netns_lab.etcd import EtcdMember
from netns_lab.netns import Sandbox


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "netns" in item.keywords or "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """One sandbox per test process (xdist worker); namespaces inside are per test."""
    box = Sandbox.scratch()
    try:
        yield box
    finally:
        box.cleanup()


@pytest.fixture(scope="session")
def etcd_server(sandbox: Sandbox) -> Iterator[EtcdMember]:
    """A real etcd on a free loopback port, shared by the tests of one process."""
    member = EtcdMember(sandbox, "e0").start()
    try:
        yield member
    finally:
        member.stop()


@pytest.fixture
def etcd_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of its own for each test, so tests sharing one etcd never collide."""
    name = request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    return f"/pyflannel-test/{os.getpid()}/{name}/network"
