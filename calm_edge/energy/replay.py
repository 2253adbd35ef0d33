"""Replay a recorded power trace (CSV) against an injected clock, for deterministic tests.

Trace format: optional leading comment lines `# key: value` (metadata, e.g.
`# measured: false`, `# source: estimate`, `# device: ...`), then a header row with `t_s`,
`total_mw` and any number of `<rail>_mw` columns; other columns (e.g. `cpu_util`) are kept
out of the samples. Times are seconds, strictly or weakly increasing; a repeated time
encodes a step (the later row wins from that instant on).

Interpolation between rows is linear by default (the trace is taken as piecewise linear,
so the exact energy of a trace is its trapezoidal integral, `PowerTrace.energy_mj`) or a
zero-order hold ("hold": each row's value holds until the next row). Before the first row
the first row's values apply; after the last row the last row's values, or, with `loop`,
the trace starts again.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from calm_edge.energy.base import PowerSample

Interpolation = Literal["linear", "hold"]


@dataclass(frozen=True)
class PowerTrace:
    """A recorded trace: times (s, trace clock), total and per-rail power (mW)."""

    t_s: tuple[float, ...]
    total_mw: tuple[float, ...]
    rails_mw: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.t_s)
        if n == 0:
            raise ValueError("empty trace")
        if len(self.total_mw) != n or any(len(v) != n for v in self.rails_mw.values()):
            raise ValueError("trace columns differ in length")
        if any(b < a for a, b in itertools.pairwise(self.t_s)):
            raise ValueError("trace times must not decrease")
        if not all(math.isfinite(v) for v in (*self.t_s, *self.total_mw)):
            raise ValueError("trace has non-finite values")

    @classmethod
    def from_csv(cls, path: Path) -> PowerTrace:
        """Parse a trace file; raises ValueError naming the file and line on bad input."""
        meta: dict[str, str] = {}
        with path.open(newline="", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        body_start = 0
        for i, line in enumerate(lines):
            if line.startswith("#"):
                key, sep, value = line[1:].partition(":")
                if sep:
                    meta[key.strip()] = value.strip()
                continue
            if line.strip():
                body_start = i
                break
        rows = list(csv.reader(ln for ln in lines[body_start:] if ln.strip()))
        if not rows:
            raise ValueError(f"{path}: no header")
        header = [h.strip() for h in rows[0]]
        if "t_s" not in header or "total_mw" not in header:
            raise ValueError(f"{path}: header needs t_s and total_mw, got {header}")
        rail_cols = {h[:-3]: i for i, h in enumerate(header)
                     if h.endswith("_mw") and h != "total_mw"}
        it, ip = header.index("t_s"), header.index("total_mw")
        t: list[float] = []
        total: list[float] = []
        rails: dict[str, list[float]] = {r: [] for r in rail_cols}
        for n, row in enumerate(rows[1:], start=body_start + 2):
            try:
                t.append(float(row[it]))
                total.append(float(row[ip]))
                for r, i in rail_cols.items():
                    rails[r].append(float(row[i]))
            except (IndexError, ValueError) as e:
                raise ValueError(f"{path}:{n}: {e}") from None
        return cls(tuple(t), tuple(total), {r: tuple(v) for r, v in rails.items()}, meta)

    @property
    def duration_s(self) -> float:
        return self.t_s[-1] - self.t_s[0]

    def at(self, t_s: float, interpolation: Interpolation = "linear"
           ) -> tuple[float, dict[str, float]]:
        """(total_mw, rails_mw) at trace time `t_s`. Pure."""
        i = bisect.bisect_right(self.t_s, t_s)
        if i == 0:
            return self.total_mw[0], {r: v[0] for r, v in self.rails_mw.items()}
        if i == len(self.t_s) or interpolation == "hold":
            j = i - 1
            return self.total_mw[j], {r: v[j] for r, v in self.rails_mw.items()}
        t0, t1 = self.t_s[i - 1], self.t_s[i]
        f = (t_s - t0) / (t1 - t0)

        def lerp(v: Sequence[float]) -> float:
            return v[i - 1] + (v[i] - v[i - 1]) * f

        return lerp(self.total_mw), {r: lerp(v) for r, v in self.rails_mw.items()}

    def energy_mj(self, rail: str = "") -> float:
        """Exact energy of the whole trace under linear interpolation (trapezoid), mJ."""
        p = self.rails_mw[rail] if rail else self.total_mw
        return sum((p[k] + p[k + 1]) / 2.0 * (self.t_s[k + 1] - self.t_s[k])
                   for k in range(len(p) - 1))


class ReplayReader:
    """Plays a `PowerTrace` as a PowerReader.

    Trace time = first row's time + (clock() − clock at construction) (+ `offset_s`), so
    with an injected fake clock the readings are deterministic. Samples are stamped with
    `clock()`. `measured` defaults to the trace's `# measured:` metadata (true if absent).
    """

    source = "replay"

    def __init__(self, trace: PowerTrace | Path, *, clock: Callable[[], float] = time.monotonic,
                 interpolation: Interpolation = "linear", loop: bool = False,
                 offset_s: float = 0.0, measured: bool | None = None) -> None:
        self.trace = trace if isinstance(trace, PowerTrace) else PowerTrace.from_csv(trace)
        self._clock = clock
        self._interp: Interpolation = interpolation
        self._loop = loop and self.trace.duration_s > 0
        self._origin_s = clock() - offset_s
        if measured is None:
            measured = self.trace.meta.get("measured", "true").lower() not in ("false", "no", "0")
        self.measured: bool = measured
        self.rails: tuple[str, ...] = tuple(self.trace.rails_mw)
        recorded = self.trace.meta.get("source", "")
        self.selection_notes: tuple[str, ...] = (
            (f"replay of a recorded {recorded} trace",) if recorded else ())

    def trace_time_s(self, t_s: float) -> float:
        elapsed = t_s - self._origin_s
        if self._loop:
            elapsed %= self.trace.duration_s
        return self.trace.t_s[0] + elapsed

    def read(self) -> PowerSample:
        """Pure computation; never blocks."""
        t_s = self._clock()
        total, rails = self.trace.at(self.trace_time_s(t_s), self._interp)
        return PowerSample(t_s, total, rails)

    def close(self) -> None:
        """Nothing to release."""
