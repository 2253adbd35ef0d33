"""The daemon's Prometheus metrics, exposed through prometheus_client's text format.

Counters the daemon increments are prometheus_client counters; totals that other parts
keep (loads per model, the board's energy since start) are set from a snapshot before each
scrape and exposed as counters by a collector. Label names are sorted, so series read the
same as before (`calm_edge_completions_total{domain="code",model="..."}`). Update from the
event loop only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

PREFIX = "calm_edge_"
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)

# No *_created series: a restart shows in the uptime.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


class _Counter:
    def __init__(self, registry: CollectorRegistry, name: str, help_: str,
                 labels: Sequence[str] = ()) -> None:
        self._m = prometheus_client.Counter(PREFIX + name, help_, sorted(labels),
                                            registry=registry)
        self._labelled = bool(labels)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        (self._m.labels(**labels) if self._labelled else self._m).inc(amount)


class _Gauge:
    def __init__(self, registry: CollectorRegistry, name: str, help_: str,
                 labels: Sequence[str] = ()) -> None:
        self._m = prometheus_client.Gauge(PREFIX + name, help_, sorted(labels),
                                          registry=registry)
        self._labelled = bool(labels)

    def set(self, value: float, **labels: str) -> None:
        (self._m.labels(**labels) if self._labelled else self._m).set(value)

    def clear(self) -> None:
        self._m.clear()


class _Histogram:
    def __init__(self, registry: CollectorRegistry, name: str, help_: str,
                 labels: Sequence[str], buckets: Sequence[float]) -> None:
        self._m = prometheus_client.Histogram(PREFIX + name, help_, sorted(labels),
                                              buckets=buckets, registry=registry)

    def observe(self, value: float, **labels: str) -> None:
        self._m.labels(**labels).observe(value)


class _Total(Collector):
    """A counter whose value another part keeps: set before each scrape."""

    def __init__(self, registry: CollectorRegistry, name: str, help_: str,
                 labels: Sequence[str]) -> None:
        self._name, self._help, self._labels = PREFIX + name, help_, sorted(labels)
        self._values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def set_total(self, value: float, **labels: str) -> None:
        self._values[tuple(labels[k] for k in self._labels)] = value

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily(self._name, self._help, labels=self._labels)
        for key, value in sorted(self._values.items()):
            family.add_metric(list(key), value)
        yield family


class Metrics:
    """The daemon's metrics, by name."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = _Counter(r, "requests_total", "Requests by route and HTTP status.",
                                 ("route", "status"))
        self.completions = _Counter(r, "completions_total",
                                    "Answered requests by model and domain.",
                                    ("model", "domain"))
        self.decisions = _Counter(r, "decisions_total",
                                  "Routing decisions by chosen model, domain and mode.",
                                  ("model", "domain", "mode"))
        self.explorations = _Counter(r, "explorations_total", "Decisions that explored.",
                                     ("model",))
        self.fallbacks = _Counter(r, "fallbacks_total", "Failed attempts that fell back.",
                                  ("model",))
        self.tokens = _Counter(r, "tokens_total", "Tokens by model and kind "
                               "(prompt/completion).", ("model", "kind"))
        self.energy = _Counter(r, "energy_joules_total", "Energy attributed to requests, by "
                               "model and kind (measured/estimated).", ("model", "kind"))
        self.latency = _Histogram(r, "request_latency_seconds",
                                  "End-to-end latency of answered requests.",
                                  ("model", "domain"), LATENCY_BUCKETS_S)
        self.ttft = _Histogram(r, "time_to_first_token_seconds", "Time to first token.",
                               ("model", "domain"), LATENCY_BUCKETS_S)
        self.cascades = _Counter(r, "cascades_total", "Cascade first answers, kept or "
                                 "escalated, by model and domain.",
                                 ("model", "domain", "outcome"))
        self.slo_breaches = _Counter(r, "slo_breaches_total", "Answers slower than their "
                                     "latency SLO, by model.", ("model",))
        self.degraded = _Gauge(r, "model_degraded", "1 while drift detection flags a model.",
                               ("model",))
        self.resident = _Gauge(r, "model_resident", "1 if the model is loaded.", ("model",))
        self.model_bytes = _Gauge(r, "model_footprint_bytes",
                                  "Footprint charged to the budget.", ("model",))
        self.budget = _Gauge(r, "ram_budget_bytes", "RAM budget for resident models.")
        self.budget_used = _Gauge(r, "ram_budget_used_bytes", "Budget in use.")
        self.rss = _Gauge(r, "process_resident_bytes", "Resident set of the daemon.")
        self.loads = _Total(r, "model_loads_total", "Model loads.", ("model",))
        self.unloads = _Total(r, "model_unloads_total", "Model unloads.", ("model",))
        self.evictions = _Total(r, "model_evictions_total",
                                "Unloads forced by the RAM budget (to make room or fit).",
                                ("model",))
        self.load_seconds = _Total(r, "model_load_seconds_total",
                                   "Time spent loading (swap time), by model.", ("model",))
        self.prefetches = _Counter(r, "prefetches_total", "Prefetches by model and kind "
                                   "(load ahead / warm file pages).", ("model", "kind"))
        self.cache_hits = _Counter(r, "cache_hits_total", "Response cache hits (exact/near).",
                                   ("kind",))
        self.cache_entries = _Gauge(r, "cache_entries", "Answers in the response cache.")
        self.power = _Gauge(r, "power_milliwatts", "Latest power sample by rail.", ("rail",))
        self.board_energy = _Total(r, "board_energy_joules_total",
                                   "Energy integrated since start, whole board.", ("kind",))
        self.in_flight = _Gauge(r, "requests_in_flight", "Requests being served.")
        self.queue_waiting = _Gauge(r, "queue_waiting",
                                    "Requests waiting for a generation place.")
        self.predicted_wait = _Gauge(r, "queue_predicted_wait_seconds",
                                     "Predicted wait of a new request.")
        self.temperature = _Gauge(r, "max_temperature_celsius", "Hottest thermal zone.")
        # Field conditions (calm_edge.field).
        self.speed_rescales = _Counter(r, "speed_rescales_total", "Rescales of every speed "
                                       "estimate after a power mode or frequency cap change.")
        self.power_mode = _Gauge(r, "power_mode_info", "1 for the power mode in force "
                                 "(Jetson nvpmodel).", ("mode",))
        self.cap_ratio = _Gauge(r, "frequency_cap_ratio", "Frequency cap over the hardware "
                                "maximum (online CPUs; GPU devfreq).", ("kind",))
        self.thermal_margin = _Gauge(r, "thermal_margin_celsius", "Degrees below the closest "
                                     "watched thermal trip point (negative: past it).")
        self.thermal_pressure = _Gauge(r, "thermal_pressure", "How close to the trip point "
                                       "Plan leans to cheaper models (0..1).")
        self.effective_mode = _Gauge(r, "effective_mode", "1 for the mode requests without "
                                     "calm.mode run in (energy pacing, else the default).",
                                     ("mode",))
        self.budget_wh = _Gauge(r, "energy_budget_watt_hours", "Energy budget of the current "
                                "period, or a discharging battery's usable charge.")
        self.budget_remaining_wh = _Gauge(r, "energy_budget_remaining_watt_hours",
                                          "What is left of the energy budget.")
        self.spend_rate = _Gauge(r, "energy_spend_rate_watts", "Recent spending against the "
                                 "energy budget.")
        self.pace = _Gauge(r, "energy_pace_ratio", "Remaining budget per remaining time over "
                           "the even rate (1 = on track).")
        self.budget_exhausted = _Gauge(r, "energy_budget_exhausted", "1 while the energy "
                                       "budget is exhausted.")
        self.battery = _Gauge(r, "battery_capacity_percent", "Charge of the followed battery.")
        self.client_tokens = _Total(r, "client_tokens_total", "Tokens generated per quota "
                                    "client (peer identity).", ("client",))
        self.client_gen_seconds = _Total(r, "client_generation_seconds_total",
                                         "Inference-lane time per quota client.", ("client",))
        self.quota_refusals = _Total(r, "quota_refusals_total", "Requests refused (429) "
                                     "because their client was over a quota, by quota.",
                                     ("client", "quota"))

    def render(self) -> str:
        return prometheus_client.generate_latest(self.registry).decode()
