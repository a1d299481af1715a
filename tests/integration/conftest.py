"""Fixtures for the etcd integration tests (helpers live in etcd_helpers.py)."""

from __future__ import annotations

import pytest
from etcd_helpers import put_config
from netns_lab.etcd import EtcdMember


@pytest.fixture
def prefix(etcd_server: EtcdMember, etcd_prefix: str) -> str:
    """A test's own key prefix with the default vxlan network config in place."""
    put_config(etcd_server, etcd_prefix)
    return etcd_prefix

