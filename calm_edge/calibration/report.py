"""Text for calibration results and progress (the CLI's `calibrate` and `status`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from calm_edge.calibration.runner import CalibrationEvent
from calm_edge.units import format_bytes

DOMAIN_ORDER = ("code", "math", "factual", "instruct", "writing")


def calibration_table(models: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """One line per model from `/calm/status`'s calibration entries (None: never)."""
    head = (f"{'model':<22} {'state':<8} {'cold/warm load':>15} {'decode':>10} "
            f"{'prefill':>10} {'memory':>10}  canaries passed per domain")
    lines = [head]
    notes: list[str] = []
    for name, c in models.items():
        if not c:
            lines.append(f"{name:<22} {'never':<8}")
            continue

        def s(x: Any, unit: str, fmt: str = ".2f") -> str:
            return "-" if x is None else f"{format(x, fmt)}{unit}"

        load = f"{s(c.get('cold_load_s'), '')}/{s(c.get('warm_load_s'), ' s')}"
        mem = format_bytes(c["measured_bytes"]) if c.get("measured_bytes") else "-"
        doms = c.get("domains") or {}
        scores = []
        for d in sorted(doms, key=lambda d: DOMAIN_ORDER.index(d) if d in DOMAIN_ORDER
                        else 99):
            v = doms[d]
            mark = "*" if v.get("demoted") else ""
            scores.append(f"{d} {v['passed']}/{v['total']}{mark}")
            if v.get("demoted"):
                notes.append(f"  * {name}: {v['demoted']}")
        lines.append(f"{name:<22} {c['state']:<8} {load:>15} "
                     f"{s(c.get('decode_ms_per_token'), ' ms', '.1f'):>10} "
                     f"{s(c.get('prefill_ms_per_token'), ' ms', '.2f'):>10} {mem:>10}  "
                     f"{'  '.join(scores)}")
    return lines + notes


class ProgressPrinter:
    """Calibration progress on a stream: one redrawn line per model on a terminal, a line
    per finished phase otherwise. Single-threaded (called on the event loop)."""

    def __init__(self, stream: TextIO | None = None, n_models: int = 1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.n_models, self._index = n_models, 0
        self._started: dict[str, float] = {}

    def __call__(self, ev: CalibrationEvent) -> None:
        if ev.phase == "start":
            self._index += 1
            self._started[ev.model] = time.monotonic()
            self._line(f"==> {ev.model} ({self._index}/{self.n_models})", newline=True)
            return
        if ev.phase == "skipped":
            self._index += 1
            self._line(f"==> {ev.model}: {ev.detail}", newline=True)
            return
        elapsed = time.monotonic() - self._started.get(ev.model, time.monotonic())
        if ev.phase == "load":
            self._line(f"    {ev.detail}", newline=True)
        elif ev.phase == "canary":
            rate = elapsed / max(ev.done, 1)
            eta = rate * (ev.total - ev.done)
            width = 24
            bar = "#" * (width * ev.done // max(ev.total, 1))
            text = f"    [{bar:<{width}}] {ev.done}/{ev.total} items  {elapsed:5.0f} s  " \
                   f"eta {eta:4.0f} s  {ev.detail}"
            if self.tty:
                self._line(text[:110], newline=False)
            elif ev.done == ev.total or ev.done % 10 == 0:
                self._line(text, newline=True)
        elif ev.phase in ("done", "paused"):
            if self.tty:
                self.stream.write("\n")
            self._line(f"    {ev.phase} in {elapsed:.0f} s ({ev.done}/{ev.total} items)"
                       + (f": {ev.detail}" if ev.detail else ""), newline=True)

    def _line(self, text: str, *, newline: bool) -> None:
        if self.tty and not newline:
            self.stream.write("\r\x1b[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
