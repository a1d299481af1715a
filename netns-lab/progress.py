"""A step-by-step progress display: one line per step, with what it did and how long it took."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO


class Step:
    def __init__(self, title: str) -> None:
        self.title = title
        self.detail = ""


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = time.monotonic()
        self.tty = self.stream.isatty()
        utf8 = (getattr(self.stream, "encoding", "") or "").lower().replace("-", "") == "utf8"
        self.ok, self.bad = ("✓", "✗") if utf8 else ("+", "x")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Step]:
        step = Step(title)
        start = time.monotonic()
        if self.tty and not self.quiet:
            self.stream.write(f"  … {title}")
            self.stream.flush()
        try:
            yield step
        except BaseException:
            self._end(self.bad, step, start)
            raise
        self._end(self.ok, step, start)

    def _end(self, mark: str, step: Step, start: float) -> None:
        if self.quiet:
            return
        detail = f": {step.detail}" if step.detail else ""
        prefix = "\r\033[K" if self.tty else ""
        self.stream.write(f"{prefix}  {mark} {step.title}{detail} "
                          f"[{time.monotonic() - start:.2f}s]\n")
        self.stream.flush()
