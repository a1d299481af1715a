"""A step-by-step progress display: one line per step, with what it did and how long it took.

A long step says how far it is (`step.update("120/250 ready")`): on a terminal its line
is rewritten in place, at most 10 times a second; to a file or pipe a line goes out every
NOTE_EVERY seconds, so a log of a long bring-up shows it moving.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO

NOTE_EVERY = 10.0  # seconds between progress lines of a long step, when not on a terminal


class Step:
    def __init__(self, title: str, progress: Progress | None = None) -> None:
        self.title = title
        self.detail = ""
        self.notes: list[str] = []  # lines printed under the step's line
        self._progress = progress
        self.start = time.monotonic()
        self._shown = 0.0

    def update(self, text: str) -> None:
        """How far the step is, shown while it runs (not part of its final line)."""
        p = self._progress
        if p is None or p.quiet:
            return
        now = time.monotonic()
        if now - self._shown < (0.1 if p.tty else NOTE_EVERY):
            return
        self._shown = now
        took = f"[{now - self.start:.0f}s]"
        if p.tty:
            p.stream.write(f"\r\033[K  … {self.title}: {text} {took}")
        else:
            p.stream.write(f"    … {self.title}: {text} {took}\n")
        p.stream.flush()


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

    def announce(self, text: str) -> None:
        """What must be seen even when quiet (a change to the host): to stderr then."""
        print(text, file=sys.stderr if self.quiet else self.stream, flush=True)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Step]:
        step = Step(title, self)
        start = step.start
        step._shown = start  # a first note only after NOTE_EVERY (or 0.1 s on a terminal)
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
            if step.notes:  # (only announcements have notes: they are shown anyway)
                print(f"netns-lab: {step.title}: {step.detail}", file=sys.stderr)
                for note in step.notes:
                    print(note, file=sys.stderr)
            return
        detail = f": {step.detail}" if step.detail else ""
        prefix = "\r\033[K" if self.tty else ""
        self.stream.write(f"{prefix}  {mark} {step.title}{detail} "
                          f"[{time.monotonic() - start:.2f}s]\n")
        self.stream.writelines(note + "\n" for note in step.notes)
        self.stream.flush()
