"""A small terminal progress bar for long work (downloads, assembly, hashing)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from calm_edge.units import format_bytes


class Progress:
    """Byte progress on a stream: a redrawn bar on a terminal, a line per quarter otherwise.

    Blocking, single-threaded; the caller owns it.
    """

    def __init__(self, label: str, total_bytes: int, stream: TextIO | None = None,
                 min_interval_s: float = 0.1) -> None:
        self.label, self.total_bytes = label, max(total_bytes, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.done_bytes = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._min_interval_s = min_interval_s
        self._last_quarter = -1

    def update(self, n_bytes: int) -> None:
        self.done_bytes += n_bytes
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= self._min_interval_s:
                self._draw(now, end="")
        else:
            quarter = min(4, self.done_bytes * 4 // self.total_bytes)
            if quarter > self._last_quarter and quarter < 4:
                self._last_quarter = quarter
                self._draw(now, end="\n")

    def _draw(self, now: float, end: str) -> None:
        self._last_draw = now
        frac = min(1.0, self.done_bytes / self.total_bytes)
        width = 28
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        elapsed = max(now - self._start, 1e-6)
        rate = self.done_bytes / elapsed
        eta = (self.total_bytes - self.done_bytes) / rate if rate > 0 else 0.0
        prefix = "\r" if self.tty else ""
        self.stream.write(
            f"{prefix}{self.label} [{bar}] {frac * 100:5.1f}% "
            f"{format_bytes(self.done_bytes)}/{format_bytes(self.total_bytes)} "
            f"{format_bytes(rate)}/s eta {eta:4.0f}s{end}")
        self.stream.flush()

    def close(self) -> None:
        self._draw(time.monotonic(), end="\n")
