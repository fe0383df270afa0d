"""A progress line on a terminal: ``verify: 125/1000 probes sent and traced``, rewritten in place.

Owns :class:`ProgressLine`, shared by the commands that work through many items (``lab verify``'s probes,
``drift --rules DIR``'s dumps). Written only when the stream is a terminal, so a pipe or a CI log never
sees it.
"""

from __future__ import annotations

import time
from typing import IO


class ProgressLine:
    """``LABEL: 125/1000 UNIT`` rewritten in place on ``stream``, only when it is a terminal (at most
    every PROGRESS_INTERVAL seconds, and always for the last item), and erased when done."""

    PROGRESS_INTERVAL = 0.1

    def __init__(self, stream: IO[str], label: str, unit: str) -> None:
        self.stream = stream
        self.label = label
        self.unit = unit
        self.live = stream.isatty()
        self.shown = False
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.live or (now - self.last < self.PROGRESS_INTERVAL and done < total):
            return
        self.last = now
        self.stream.write(f"\r{self.label}: {done}/{total} {self.unit}")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


__all__ = ["ProgressLine"]
