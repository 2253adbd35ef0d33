"""Energy integrator: samples a PowerReader in a background thread and answers
"how many joules between t0 and t1?" for request windows.

Threads: one daemon sampling thread (started by `start()`) calls `reader.read()` every
1/sample_hz s, paced with `threading.Event.wait` (no busy loop), and appends to a ring
buffer. Any thread (normally the event loop) may call `energy_between`, `total_energy`,
`latest` and `rail_energy_mj`. One lock guards the ring; the reader is called outside it
and every critical section is O(1) or O(log n) (no loop over samples under the lock).

Integration: power between consecutive samples is taken as linear (trapezoidal rule).
The ring stores, per sample, time, total power and the cumulative energy since the first
sample, so the energy up to any instant E(t) comes from one binary search plus the partial
trapezoid inside the bracketing interval, and energy_between(t0, t1) = E(t1) − E(t0),
partial intervals at both edges included. Outside the sampled span power is held constant:
after the newest sample (at most one period old while the thread runs) at the newest power,
before the oldest retained sample at the oldest power. A window reaching more than two
periods past the newest sample, or before the oldest retained sample, is flagged
`complete=False`.

History: the ring keeps `history_s` seconds (default 600 s: 6,000 samples at 10 Hz;
capped at 2**20 samples, 24 MiB). A request window older than that still gets a figure,
but its old part is estimated by holding the oldest retained power (`complete=False`).
Skipped reads (PowerReadError, or any exception from the reader) leave a gap that the
trapezoid bridges linearly; they are counted in `read_errors`.

Concurrent requests sharing a window: the board's energy in an interval is one number, so
it is split. Cut the time axis at every request start and end; each elementary segment's
energy is shared among the requests active in it in proportion to their work in it, the
work measured as the request's CPU time (time.thread_time() of its generation thread) or
its generated tokens, assumed uniform over the request's own window, or equally when no
weight is known. `attribute_energy()` does exactly that given the windows and weights;
`split_energy()` is the per-segment split. Energy while no request runs is idle energy and
is attributed to none (it stays in `total_energy()`).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from calm_edge.energy.base import PowerReader, PowerSample, energy_kind

log = logging.getLogger("calm_edge.energy")

MAX_RING_SAMPLES = 1 << 20


@dataclass(frozen=True)
class EnergyReading:
    """Energy over [t0_s, t1_s] (monotonic seconds) and where the figure comes from."""

    energy_mj: float
    measured: bool
    source: str
    t0_s: float
    t1_s: float
    samples: int  # samples taken inside the window
    complete: bool  # False: part of the window lies outside the retained samples

    @property
    def energy_j(self) -> float:
        return self.energy_mj / 1000.0

    @property
    def duration_s(self) -> float:
        return max(0.0, self.t1_s - self.t0_s)

    @property
    def mean_power_mw(self) -> float:
        d = self.duration_s
        return self.energy_mj / d if d > 0 else 0.0  # mJ / s = mW

    @property
    def kind(self) -> str:
        """'measured' or 'estimated', for API responses and metrics labels."""
        return energy_kind(self.measured)


class _Ring:
    """Fixed-capacity ring of (t_s, power_mw, cumulative energy_mj) in flat double arrays.

    Not thread-safe; the integrator's lock guards it.
    """

    def __init__(self, capacity: int) -> None:
        self.cap = capacity
        self.t = array("d", bytes(8 * capacity))
        self.p = array("d", bytes(8 * capacity))
        self.e = array("d", bytes(8 * capacity))
        self.start = 0
        self.n = 0

    def append(self, t_s: float, p_mw: float, e_mj: float) -> None:
        if self.n < self.cap:
            k = (self.start + self.n) % self.cap
            self.n += 1
        else:
            k = self.start
            self.start = (self.start + 1) % self.cap
        self.t[k], self.p[k], self.e[k] = t_s, p_mw, e_mj

    def k(self, i: int) -> int:
        return (self.start + i) % self.cap

    def index_after(self, t_s: float, *, inclusive: bool = True) -> int:
        """Number of samples with time <= t_s (< t_s when not inclusive): a bisect over
        the logical order."""
        lo, hi = 0, self.n
        t, start, cap = self.t, self.start, self.cap
        while lo < hi:
            mid = (lo + hi) // 2
            v = t[(start + mid) % cap]
            if v < t_s or (inclusive and v == t_s):
                lo = mid + 1
            else:
                hi = mid
        return lo

    def energy_at(self, t_s: float) -> float:
        """Cumulative energy (mJ) at t_s: trapezoid inside, constant power outside."""
        first, last = self.k(0), self.k(self.n - 1)
        if t_s <= self.t[first]:
            return self.e[first] - self.p[first] * (self.t[first] - t_s)
        if t_s >= self.t[last]:
            return self.e[last] + self.p[last] * (t_s - self.t[last])
        i = self.index_after(t_s) - 1
        a, b = self.k(i), self.k(i + 1)
        ta, pa = self.t[a], self.p[a]
        p_t = pa + (self.p[b] - pa) * (t_s - ta) / (self.t[b] - ta)
        return self.e[a] + (pa + p_t) / 2.0 * (t_s - ta)


class EnergyIntegrator:
    """Samples `reader` at `sample_hz` in a daemon thread; integrates power over windows.

    `clock` must be the clock the reader stamps samples with (time.monotonic unless both
    are injected). The integrator does not own the reader: close it after `stop()`.
    Tests drive it synchronously with `sample_once()` instead of `start()`.
    """

    def __init__(self, reader: PowerReader, sample_hz: float, *,
                 clock: Callable[[], float] = time.monotonic, history_s: float = 600.0) -> None:
        if not sample_hz > 0:
            raise ValueError(f"sample_hz must be > 0, got {sample_hz}")
        self.reader = reader
        self.sample_hz = float(sample_hz)
        self.period_s = 1.0 / self.sample_hz
        self._clock = clock
        capacity = min(MAX_RING_SAMPLES, math.ceil(history_s * self.sample_hz) + 2)
        self._ring = _Ring(max(2, capacity))
        self._lock = threading.Lock()
        self._latest: PowerSample | None = None
        self._rail_energy_mj: dict[str, float] = {}
        self._cum_mj = 0.0
        self._started_s: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_cpu_s = 0.0
        self.samples_taken = 0
        self.read_errors = 0
        self.last_error = ""
        self._error_kinds: set[str] = set()

    # -- sampling (sampling thread, or the test driving it) --------------------------------

    def sample_once(self) -> PowerSample | None:
        """Read one sample and append it. Called by one thread at a time. Never raises:
        a failed read is counted, logged once per kind, and skipped."""
        try:
            s = self.reader.read()
        except Exception as e:
            self._read_failed(e)
            return None
        if not (math.isfinite(s.t_s) and math.isfinite(s.total_mw)):
            self._read_failed(ValueError(f"non-finite sample {s}"))
            return None
        prev = self._latest
        if prev is not None and s.t_s <= prev.t_s:
            log.debug("power sample at %.6f not after %.6f; dropped", s.t_s, prev.t_s)
            return None
        if prev is None:
            cum = 0.0
            rails = {r: 0.0 for r in s.rails_mw}
        else:
            dt = s.t_s - prev.t_s
            cum = self._cum_mj + (prev.total_mw + s.total_mw) / 2.0 * dt
            rails = dict(self._rail_energy_mj)
            for r, p in s.rails_mw.items():
                q = prev.rails_mw.get(r)
                rails[r] = rails.get(r, 0.0) + (0.0 if q is None else (q + p) / 2.0 * dt)
        with self._lock:
            self._ring.append(s.t_s, s.total_mw, cum)
            self._cum_mj = cum
            self._rail_energy_mj = rails
            self._latest = s
            self.samples_taken += 1
            if self._started_s is None:
                self._started_s = s.t_s
        return s

    def _read_failed(self, e: Exception) -> None:
        self.read_errors += 1
        self.last_error = f"{type(e).__name__}: {e}"
        kind = type(e).__name__ + ":" + str(e)[:60]
        if kind not in self._error_kinds and len(self._error_kinds) < 32:
            self._error_kinds.add(kind)
            log.warning("power sample skipped (%s source): %s", self.reader.source,
                        self.last_error)
        else:
            log.debug("power sample skipped: %s", self.last_error)

    def _run(self) -> None:
        period = self.period_s
        next_s = time.monotonic()
        try:
            while True:
                self.sample_once()
                self._thread_cpu_s = time.thread_time()
                next_s += period
                now = time.monotonic()
                delay = next_s - now
                if delay < 0:  # fell behind (slow read, suspended): skip missed ticks
                    next_s = now + period
                    delay = period
                if self._stop.wait(delay):
                    break
        finally:
            self._thread_cpu_s = time.thread_time()

    def start(self) -> None:
        """Start the daemon sampling thread; its first sample is taken at once.
        Idempotent while running. Not blocking."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="calm-edge-power", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the sampling thread and wait for it (at most one read plus `timeout_s`)."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout_s)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def sampler_cpu_s(self) -> float:
        """CPU seconds the sampling thread has used (time.thread_time, updated per sample)."""
        return self._thread_cpu_s

    # -- queries (any thread) --------------------------------------------------------------

    def energy_between(self, t0_s: float, t1_s: float) -> EnergyReading:
        """Energy over [t0_s, t1_s] (monotonic seconds; t1_s may be now). Never blocks for
        long: O(log n) under the lock. A reversed window gives 0 mJ."""
        r = self.reader
        if t1_s < t0_s:
            t0_s, t1_s = t1_s, t0_s
        with self._lock:
            ring = self._ring
            if ring.n == 0:
                return EnergyReading(0.0, r.measured, r.source, t0_s, t1_s, 0, False)
            e_mj = ring.energy_at(t1_s) - ring.energy_at(t0_s)
            inside = ring.index_after(t1_s) - ring.index_after(t0_s, inclusive=False)
            first_t = ring.t[ring.k(0)]
            last_t = ring.t[ring.k(ring.n - 1)]
        complete = t0_s >= first_t and t1_s <= last_t + 2.0 * self.period_s
        return EnergyReading(max(0.0, e_mj), r.measured, r.source, t0_s, t1_s, inside,
                             complete)

    def total_energy(self, now_s: float | None = None) -> EnergyReading:
        """Cumulative energy since the first sample, up to `now_s` (default: the clock)."""
        now = self._clock() if now_s is None else now_s
        r = self.reader
        with self._lock:
            ring, started, taken = self._ring, self._started_s, self.samples_taken
            if ring.n == 0 or started is None:
                return EnergyReading(0.0, r.measured, r.source, now, now, 0, False)
            last = ring.k(ring.n - 1)
            e_mj = ring.e[last] + ring.p[last] * max(0.0, now - ring.t[last])
            last_t = ring.t[last]
        return EnergyReading(e_mj, r.measured, r.source, started, max(now, started), taken,
                             now <= last_t + 2.0 * self.period_s)

    def latest(self) -> PowerSample | None:
        """The newest sample (total and per-rail power), or None before the first."""
        with self._lock:
            return self._latest

    def rail_energy_mj(self) -> dict[str, float]:
        """Cumulative energy per rail since the first sample, up to the newest sample, mJ.

        Unlike the total, a rail missing from a sample (a bad reading) contributes nothing
        to the intervals on either side of it: per-rail figures are for display, the total
        is what requests are charged."""
        with self._lock:
            return dict(self._rail_energy_mj)


# -- fair split of shared windows (pure) -----------------------------------------------------


def split_energy(total_mj: float, weights: Sequence[float]) -> list[float]:
    """Split `total_mj` in proportion to `weights` (CPU seconds, tokens, ...). Pure.

    All-zero weights split equally. The parts sum to `total_mj` exactly (the last part takes
    the rounding remainder). Raises ValueError for negative or non-finite weights.
    """
    if not weights:
        return []
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and >= 0, got {list(weights)}")
    s = math.fsum(weights)
    shares = [1.0 / len(weights)] * len(weights) if s <= 0 else [w / s for w in weights]
    parts = [total_mj * f for f in shares[:-1]]
    parts.append(total_mj - math.fsum(parts))
    return parts


@dataclass(frozen=True)
class RequestWindow:
    """A request's time window (monotonic s) and its work in it (CPU s, tokens; >= 0)."""

    t0_s: float
    t1_s: float
    weight: float = 1.0


def attribute_energy(windows: Sequence[RequestWindow],
                     energy_mj_between: Callable[[float, float], float]) -> list[float]:
    """Energy (mJ) of each window, sharing overlapping time fairly (see the module doc).

    Pure given `energy_mj_between(t0_s, t1_s)` (e.g. `lambda a, b:
    integrator.energy_between(a, b).energy_mj`). Each window's weight is spread uniformly
    over its duration; in each elementary segment the active windows split the segment's
    energy by weight rate (equally when all rates are 0). Non-overlapping windows get
    exactly their own energy.
    """
    out = [0.0] * len(windows)
    cuts = sorted({t for w in windows for t in (w.t0_s, w.t1_s)})
    for a, b in itertools.pairwise(cuts):
        if b <= a:
            continue
        active = [i for i, w in enumerate(windows) if w.t0_s <= a and w.t1_s >= b]
        if not active:
            continue
        rates = [windows[i].weight / (windows[i].t1_s - windows[i].t0_s) for i in active]
        for i, part in zip(active, split_energy(energy_mj_between(a, b), rates), strict=True):
            out[i] += part
    return out
