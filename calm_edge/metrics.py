"""Prometheus text exposition (format 0.0.4) for counters, gauges and histograms.

Owned by the event loop: updates and rendering both happen there, so no locking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

LabelKey = tuple[tuple[str, str], ...]


def _labels(key: LabelKey, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [*key, *extra]
    if not pairs:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


@dataclass
class _Metric:
    name: str
    help: str
    kind: str
    values: dict[LabelKey, float] = field(default_factory=dict)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [f"{self.name}{_labels(k)} {_fmt(v)}" for k, v in sorted(self.values.items())]
        return lines


class Counter(_Metric):
    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def set_total(self, value: float, **labels: str) -> None:
        """For totals accumulated elsewhere (e.g. the energy integrator)."""
        self.values[tuple(sorted(labels.items()))] = value


class Gauge(_Metric):
    def set(self, value: float, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] = value

    def clear(self) -> None:
        self.values.clear()


@dataclass
class Histogram:
    name: str
    help: str
    buckets: Sequence[float]
    counts: dict[LabelKey, list[int]] = field(default_factory=dict)
    sums: dict[LabelKey, float] = field(default_factory=dict)

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        counts = self.counts.setdefault(key, [0] * (len(self.buckets) + 1))
        for i, b in enumerate(self.buckets):
            if value <= b:
                counts[i] += 1
        counts[-1] += 1
        self.sums[key] = self.sums.get(key, 0.0) + value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key in sorted(self.counts):
            counts = self.counts[key]
            for b, c in zip(self.buckets, counts, strict=False):
                lines.append(f"{self.name}_bucket{_labels(key, [('le', _fmt(b))])} {c}")
            lines.append(f"{self.name}_bucket{_labels(key, [('le', '+Inf')])} {counts[-1]}")
            lines.append(f"{self.name}_sum{_labels(key)} {_fmt(self.sums[key])}")
            lines.append(f"{self.name}_count{_labels(key)} {counts[-1]}")
        return lines


class Registry:
    def __init__(self, prefix: str = "calm_edge_") -> None:
        self.prefix = prefix
        self._metrics: list[_Metric | Histogram] = []

    def counter(self, name: str, help_: str) -> Counter:
        m = Counter(self.prefix + name, help_, "counter")
        self._metrics.append(m)
        return m

    def gauge(self, name: str, help_: str) -> Gauge:
        m = Gauge(self.prefix + name, help_, "gauge")
        self._metrics.append(m)
        return m

    def histogram(self, name: str, help_: str, buckets: Sequence[float]) -> Histogram:
        m = Histogram(self.prefix + name, help_, tuple(buckets))
        self._metrics.append(m)
        return m

    def render(self) -> str:
        lines: list[str] = []
        for m in self._metrics:
            lines += m.render()
        return "\n".join(lines) + "\n"


LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)


class Metrics:
    """The daemon's metrics, by name. Update from the event loop only."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = r.counter("requests_total", "Requests by route and HTTP status.")
        self.completions = r.counter("completions_total",
                                     "Answered requests by model and domain.")
        self.decisions = r.counter("decisions_total",
                                   "Routing decisions by chosen model, domain and mode.")
        self.explorations = r.counter("explorations_total", "Decisions that explored.")
        self.fallbacks = r.counter("fallbacks_total", "Failed attempts that fell back.")
        self.tokens = r.counter("tokens_total", "Tokens by model and kind (prompt/completion).")
        self.energy = r.counter("energy_joules_total",
                                "Energy attributed to requests, by model and kind "
                                "(measured/estimated).")
        self.latency = r.histogram("request_latency_seconds",
                                   "End-to-end latency of answered requests.",
                                   LATENCY_BUCKETS_S)
        self.ttft = r.histogram("time_to_first_token_seconds", "Time to first token.",
                                LATENCY_BUCKETS_S)
        self.slo_breaches = r.counter("slo_breaches_total", "Requests slower than their SLO.")
        self.degraded = r.gauge("model_degraded", "1 while drift detection flags a model.")
        self.resident = r.gauge("model_resident", "1 if the model is loaded.")
        self.model_bytes = r.gauge("model_footprint_bytes", "Footprint charged to the budget.")
        self.budget = r.gauge("ram_budget_bytes", "RAM budget for resident models.")
        self.budget_used = r.gauge("ram_budget_used_bytes", "Budget in use.")
        self.rss = r.gauge("process_resident_bytes", "Resident set of the daemon.")
        self.loads = r.counter("model_loads_total", "Model loads.")
        self.unloads = r.counter("model_unloads_total", "Model unloads.")
        self.evictions = r.counter("model_evictions_total",
                                   "Unloads forced by the RAM budget (to make room or fit).")
        self.load_seconds = r.counter("model_load_seconds_total", "Time spent loading (swap "
                                      "time), by model.")
        self.prefetches = r.counter("prefetches_total", "Prefetches by model and kind "
                                    "(load ahead / warm file pages).")
        self.cache_hits = r.counter("cache_hits_total", "Response cache hits (exact/near).")
        self.cache_entries = r.gauge("cache_entries", "Answers in the response cache.")
        self.power = r.gauge("power_milliwatts", "Latest power sample by rail.")
        self.board_energy = r.counter("board_energy_joules_total",
                                      "Energy integrated since start, whole board.")
        self.in_flight = r.gauge("requests_in_flight", "Requests being served.")
        self.queue_waiting = r.gauge("queue_waiting", "Requests waiting for a generation place.")
        self.predicted_wait = r.gauge("queue_predicted_wait_seconds",
                                      "Predicted wait of a new request.")
        self.temperature = r.gauge("max_temperature_celsius", "Hottest thermal zone.")

    def render(self) -> str:
        return self.registry.render()
