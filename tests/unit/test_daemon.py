"""Pure helpers of the daemon: the keepalive period from TTL and renew margin."""

from __future__ import annotations

from flanneld.daemon import renew_interval


def test_renew_interval_honours_the_margin() -> None:
    assert renew_interval(86400, 60) == 300.0  # TTL/3 capped at 5 min; margin far away
    assert renew_interval(30, 60) == 10.0  # margin longer than the TTL: TTL/3
    assert renew_interval(3600, 58) == 120.0  # only 2 min of room before the margin
    assert renew_interval(600, 1) == 200.0
