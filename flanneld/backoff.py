"""The one retry rhythm: exponential backoff with jitter, reset on success.

Every retrying loop of the daemon (etcd requests, the watch, the lease hold, start-up
steps) uses it, so they all back off the same way and can be reasoned about at once.
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """Delays first, 2*first, 4*first ... capped at `cap` seconds, each +/- `jitter`."""

    def __init__(self, first: float = 0.1, cap: float = 5.0, jitter: float = 0.2,
                 rng: random.Random | None = None) -> None:
        if not 0 < first <= cap:
            raise ValueError(f"backoff: need 0 < first ({first}) <= cap ({cap})")
        self.first, self.cap, self.jitter = first, cap, jitter
        self._rng = rng or random.Random()
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay * (1 + self._rng.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self._next = self.first

    async def sleep(self) -> float:
        delay = self.next()
        await asyncio.sleep(delay)
        return delay
