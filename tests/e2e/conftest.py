"""e2e fixtures: one underlay with a real etcd per test process, shared by the clusters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_cluster import Underlay
from netns_lab.netns import Sandbox


@pytest.fixture(scope="session")
def underlay(sandbox: Sandbox) -> Iterator[Underlay]:
    ul = Underlay.create(sandbox)
    try:
        yield ul
    finally:
        ul.stop()
