"""Hand freed heap memory back to the system after a big run (glibc's malloc_trim).

A full run among thousands of peers allocates and frees megabytes (dict tables as
they grow, the etcd listing, netlink batches). glibc keeps what was freed for later;
the daemon's RSS then stays at the run's high-water mark. `release()` asks glibc to
give it back (measured: ~0.7 KB per peer of RSS, 3.5 MB with 5000 peers). Where there
is no malloc_trim (musl), it does nothing. ctypes (~200 KB) is loaded on first use,
so a small node never pays for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("flanneld")

MIN_PEERS = 256  # below this a full run frees too little to be worth a call
_trim: Callable[[int], int] | None = None
_missing = False


def release(peers: int) -> bool:
    """malloc_trim(0) after a full run over `peers` peers; True if it was called."""
    global _trim, _missing
    if peers < MIN_PEERS or _missing:
        return False
    if _trim is None:
        try:
            import ctypes

            _trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError) as exc:  # not glibc
            log.debug("no malloc_trim (%s): freed memory stays with the allocator", exc)
            _missing = True
            return False
    _trim(0)
    return True
