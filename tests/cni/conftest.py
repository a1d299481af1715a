"""Fixtures for CNI tests: a node (host netns + installed plugin), with or without a server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cnihelp import Node
from netns_lab.netns import Sandbox


@pytest.fixture
def node(sandbox: Sandbox, tmp_path: Path) -> Iterator[Node]:
    """A node whose plugin works in-process (no server): the fallback path."""
    n = Node(sandbox, tmp_path)
    try:
        yield n
    finally:
        n.cleanup()


@pytest.fixture(params=["server", "fallback"])
def any_node(request: pytest.FixtureRequest, node: Node) -> Node:
    """The same test through flanneld's socket and through the in-process fallback."""
    if request.param == "server":
        node.start_server()
    return node


@pytest.fixture
def served(node: Node) -> Node:
    node.start_server()
    return node
