"""What the daemon shows of itself: one `StatusView` assembled from the snapshots its parts
publish (the residency, the scheduler, the loop, the device, energy, calibration), and
the two renderings of it: the /calm/status document and the /metrics gauges. Pure: the
views are values; nothing here reaches into a running component."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from calm_edge.metrics import Metrics
from calm_edge.monitor import DeviceObservation
from calm_edge.orchestrator import LoopView
from calm_edge.residency import ResidencyView
from calm_edge.scheduler import SchedulerView


@dataclass(frozen=True)
class StatusView:
    profile_name: str
    profile_source: str
    socket: str
    fleet: str
    default_model: str
    residency: ResidencyView
    scheduler: SchedulerView
    loop: LoopView
    device: DeviceObservation
    energy: dict[str, Any] | None       # the power source, and joules since start
    calibration: dict[str, Any] | None  # the device, what runs now, per model (loop.calibration)
    in_flight: int


def status_document(v: StatusView, *, version: str, uptime_s: float, requests_total: int,
                    decisions: list[dict[str, Any]],
                    clients: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The /calm/status body. `decisions` and `clients` (usage per quota client) are those
    the asking peer may see (all clients when None)."""
    res, sched, loop = v.residency, v.scheduler, v.loop
    return {
        "version": version,
        "uptime_s": round(uptime_s, 1),
        "profile": {"name": v.profile_name, "source": v.profile_source},
        "socket": v.socket,
        "fleet": v.fleet,
        "default_model": v.default_model,
        "memory": {"budget_bytes": res.budget_bytes, "used_bytes": res.used_bytes,
                   "resident": list(res.resident)},
        "requests_total": requests_total,
        "in_flight": v.in_flight,
        "models": [dict(m) for m in res.models],
        "scheduler": {k: val for k, val in dataclasses.asdict(sched).items()
                      if k != "clients"},
        "quotas": {"enabled": sched.fair_share,
                   "clients": list(sched.clients) if clients is None else clients},
        "classifier": {"runtime": loop.classifier_runtime},
        "cache": loop.cache,
        "domain_mix": loop.domain_mix,
        "device": dataclasses.asdict(v.device),
        "energy": v.energy,
        "knowledge": loop.knowledge,
        "estimates": list(loop.estimates),
        "health": list(loop.health),
        "calibration": v.calibration,
        "cascades": loop.cascades,
        "field": loop.field_state,
        "recent_decisions": decisions[:10],
    }


def refresh_gauges(m: Metrics, v: StatusView) -> None:
    """Set the /metrics gauges from a view."""
    res = v.residency
    m.budget.set(res.budget_bytes)
    m.budget_used.set(res.used_bytes)
    m.in_flight.set(v.in_flight)
    m.queue_waiting.set(sum(1 for q in v.scheduler.queue if not q["background"]))
    m.predicted_wait.set(v.scheduler.predicted_wait_s)
    degraded = set(v.loop.degraded)
    for row in res.models:
        name = row["name"]
        m.resident.set(float(row["state"] == "ready"), model=name)
        m.model_bytes.set(row["charged_bytes"], model=name)
        m.degraded.set(float(name in degraded), model=name)
        m.loads.set_total(row["loads"], model=name)
        m.unloads.set_total(row["unloads"], model=name)
        m.evictions.set_total(row["evictions"], model=name)
        m.load_seconds.set_total(row["load_seconds_total"], model=name)
    if v.loop.cache is not None:
        m.cache_entries.set(v.loop.cache["entries"])
    dev = v.device
    m.rss.set(dev.rss_bytes)
    if dev.max_temp_c is not None:
        m.temperature.set(dev.max_temp_c)
    m.power.clear()
    for rail, mw in dev.power_rails_mw.items():
        m.power.set(mw, rail=rail)
    if dev.power_mw is not None:
        m.power.set(dev.power_mw, rail="total")
    if v.energy is not None:
        m.board_energy.set_total(v.energy["total_j"], kind=v.energy["kind"])
    if v.loop.field_state is not None:
        field_gauges(m, v.loop.field_state)
    for c in v.scheduler.clients:
        m.client_tokens.set_total(c["tokens"], client=c["client"])
        m.client_gen_seconds.set_total(c["gen_s"], client=c["client"])
        for quota, n in c["refused"].items():
            m.quota_refusals.set_total(n, client=c["client"], quota=quota)


_GAUGED_MODES = ("fast", "balanced", "quality", "eco")


def field_gauges(m: Metrics, f: dict[str, Any]) -> None:
    """The field conditions' gauges (Orchestrator.field_status); a figure not known reads
    NaN (an unlabelled series) or is left out (a labelled one), never 0."""
    power = f.get("power") or {}
    nvp = power.get("nvpmodel")
    m.power_mode.clear()
    if nvp is not None:
        m.power_mode.set(1.0, mode=str(nvp["name"]))
    m.cap_ratio.clear()
    for kind, ratio in (f.get("cap_ratios") or {}).items():
        m.cap_ratio.set(ratio, kind=kind)
    trip = f["thermal"].get("closest_trip")
    m.thermal_margin.set(trip["margin_c"] if trip is not None else math.nan)
    m.thermal_pressure.set(f["thermal"].get("pressure") or 0.0)
    e = f["energy"]
    for mode in _GAUGED_MODES:
        m.effective_mode.set(float(e["effective_mode"] == mode), mode=mode)
    for gauge, key in ((m.budget_wh, "budget_wh"), (m.budget_remaining_wh, "remaining_wh"),
                       (m.spend_rate, "spend_rate_w"), (m.pace, "pace")):
        gauge.set(e[key] if e.get(key) is not None else math.nan)
    m.budget_exhausted.set(float(bool(e["exhausted"])))
    bat = f.get("battery")
    m.battery.set(bat["capacity_percent"] if bat is not None
                  and bat.get("capacity_percent") is not None else math.nan)
