"""A small terminal progress bar for long work: bytes (downloads, assembly, hashing) or
items (bench queries, outcome labels)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from calm_edge.units import format_bytes

BYTES = "bytes"


class Progress:
    """Progress of `total` units on a stream, with a rate and an ETA: a bar redrawn in place
    on a terminal (at most every `min_interval_s`), otherwise a line at each quarter of the
    work and at least every `line_every_s` while it goes on.

    `unit` is BYTES (sizes shown as KiB/MiB, the rate per second) or a noun for items
    ("query": counts shown as numbers, the rate as seconds per query). `done` is what was
    already done before this run (a resumed job): it counts toward the bar, not the rate.
    Blocking, single-threaded; the caller owns it.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None, *,
                 done: int = 0, unit: str = BYTES, min_interval_s: float = 0.1,
                 line_every_s: float = 30.0) -> None:
        self.label, self.total, self.done, self.unit = label, max(total, 1), done, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._start = time.monotonic()
        self._start_done = done
        self._last_draw = self._start  # the first periodic line comes line_every_s in
        self._min_interval_s, self._line_every_s = min_interval_s, line_every_s
        self._last_quarter = self._quarter()

    def set_label(self, label: str) -> None:
        """A new stage of the work (e.g. the next run): redraws at once."""
        self.label = label
        self._draw(time.monotonic())

    def update(self, n: int = 1) -> None:
        """`n` more units done."""
        self.done += n
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= self._min_interval_s:
                self._draw(now)
            return
        quarter = self._quarter()
        if (quarter > self._last_quarter and quarter < 4) or \
                now - self._last_draw >= self._line_every_s:
            self._last_quarter = max(quarter, self._last_quarter)
            self._draw(now)

    def close(self) -> None:
        """Draw the final state and end the line."""
        self._draw(time.monotonic())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _quarter(self) -> int:
        return min(4, self.done * 4 // self.total)

    def _amount(self, n: float) -> str:
        return format_bytes(int(n)) if self.unit == BYTES else str(int(n))

    def _draw(self, now: float) -> None:
        self._last_draw = now
        frac = min(1.0, self.done / self.total)
        width = 24
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        elapsed = max(now - self._start, 1e-6)
        new = self.done - self._start_done
        left = max(self.total - self.done, 0)
        if self.unit == BYTES:
            rate = f"{format_bytes(int(new / elapsed))}/s"
            eta = _fmt_s(left * elapsed / new) if new > 0 else "?"
        else:
            rate = f"{elapsed / new:.1f} s/{self.unit}" if new > 0 else f"? s/{self.unit}"
            eta = _fmt_s(left * elapsed / new) if new > 0 else "?"
        line = (f"{self.label} [{bar}] {frac * 100:5.1f}% "
                f"{self._amount(self.done)}/{self._amount(self.total)} · "
                f"{_fmt_s(elapsed)} elapsed · {rate} · eta {eta}")
        self.stream.write(f"\r{line}\x1b[K" if self.tty else line + "\n")
        self.stream.flush()


def _fmt_s(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
