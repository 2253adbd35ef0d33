"""FieldMonitor: samples the board's field conditions (power mode and caps, thermal zones,
battery or period budget) into one frozen `FieldObservation`.

Machinery owned by the event loop (the orchestrator calls `poll`, which reads a few sysfs
files at most every `[field] poll_s`). It keeps only what measuring needs across polls: the
period ledger, the battery's discharge, the recent spend for the spend rate. Decisions
(rescaling speeds, the effective mode) are pure functions the orchestrator applies
(calm_edge.analyze.rescale_speeds, calm_edge.field.pacing.pace_mode). Every seam is
injected: the sysfs root, both clocks, the board energy meter, the `nvpmodel -q` runner.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_edge.config import EnergyConfig, FieldConfig
from calm_edge.field.pacing import (
    BudgetView,
    Discharge,
    PacingParams,
    PeriodLedger,
    battery_view,
    period_ledger,
    period_view,
)
from calm_edge.field.state import PowerState, ThermalHeadroom, thermal_headroom
from calm_edge.field.sysfs import (
    Battery,
    ThermalZone,
    read_battery,
    read_cpufreq,
    read_devfreq,
    read_nvpmodel,
    read_thermal,
)

log = logging.getLogger("calm_edge.field")

NVPMODEL_QUERY_EVERY_S = 30.0


def local_utc_offset_s(wall_s: float) -> float:
    """Seconds east of UTC at `wall_s`, in this process's time zone."""
    return float(time.localtime(wall_s).tm_gmtoff)


@dataclass(frozen=True)
class FieldObservation:
    ts_s: float                         # when it was read (the monitor's monotonic clock)
    wall_s: float
    power: PowerState | None            # None: power mode input off (or nothing readable)
    zones: tuple[ThermalZone, ...]
    headroom: ThermalHeadroom | None    # the trip point closest to being reached
    battery: Battery | None
    budget: BudgetView | None           # None: nothing to pace (no budget, plugged in)
    notes: tuple[str, ...]              # inputs turned off, and why

    def to_status(self) -> dict[str, Any]:
        h = self.headroom
        return {
            "power": None if self.power is None else self.power.to_status(),
            "thermal": {
                "zones": [{"zone": z.name, "temp_c": z.temp_c,
                           "trips": [{"temp_c": t.temp_c, "type": t.kind} for t in z.trips]}
                          for z in self.zones],
                "closest_trip": None if h is None else {
                    "zone": h.zone, "temp_c": h.temp_c, "trip_c": h.trip_c,
                    "type": h.trip_kind, "margin_c": round(h.margin_c, 2)}},
            "battery": None if self.battery is None else {
                "name": self.battery.name, "status": self.battery.status,
                "capacity_percent": self.battery.capacity_percent,
                "energy_wh": _r(self.battery.energy_wh), "power_w": _r(self.battery.power_w)},
            "notes": list(self.notes),
        }


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


class FieldMonitor:
    def __init__(self, field: FieldConfig, energy: EnergyConfig, *,
                 sysfs_root: Path = Path("/"), use_gpu: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 board_energy_wh: Callable[[], float | None] | None = None,
                 nvpmodel_query: Callable[[], str | None] | None = None,
                 utc_offset_s: Callable[[float], float] = local_utc_offset_s) -> None:
        """`board_energy_wh` is the board's energy meter (the power reader's integral since
        start, Wh): period budgets count from it. `nvpmodel_query` returns `nvpmodel -q`
        output (recorded, or `calm_edge.field.sysfs.run_nvpmodel_query`)."""
        self.root, self.use_gpu = sysfs_root, use_gpu
        self._clock, self._wall, self._offset = clock, wall_clock, utc_offset_s
        self._board_wh, self._query = board_energy_wh, nvpmodel_query
        self._last: FieldObservation | None = None
        self._ledger: PeriodLedger | None = None
        self._discharge: Discharge | None = None
        self._spent: collections.deque[tuple[float, float]] = collections.deque()
        self._spent_kind: str | None = None
        self._query_text: str | None = None
        self._query_at: float | None = None
        self._logged: set[str] = set()
        self.configure(field, energy)

    def configure(self, field: FieldConfig, energy: EnergyConfig) -> None:
        """Take new settings (at start and on reload); the next poll reads afresh."""
        self.field, self.energy = field, energy
        self.pacing_params = PacingParams(energy.pace_balanced_below, energy.pace_eco_below,
                                          energy.pace_hysteresis)
        self._last = None

    @property
    def last(self) -> FieldObservation | None:
        return self._last

    def poll(self, *, force: bool = False) -> FieldObservation:
        """The latest observation: the cached one while younger than `poll_s`."""
        now = self._clock()
        last = self._last
        if not force and last is not None and now - last.ts_s < self.field.poll_s:
            return last
        obs = self._read(now)
        for note in obs.notes:  # once each: status shows them while they hold
            if note not in self._logged:
                if len(self._logged) > 256:  # notes that carry changing values
                    self._logged.clear()
                self._logged.add(note)
                log.info("%s", note)
        self._last = obs
        return obs

    # -- reading ---------------------------------------------------------------------------

    def _nvpmodel_query(self, now: float) -> Callable[[], str | None] | None:
        """`nvpmodel -q` for the reader to call where the status file fails: run at most
        every NVPMODEL_QUERY_EVERY_S (a subprocess), its output kept in between."""
        query = self._query
        if query is None:
            return None

        def cached() -> str | None:
            if self._query_at is None or now - self._query_at >= NVPMODEL_QUERY_EVERY_S:
                self._query_text, self._query_at = query(), now
            return self._query_text

        return cached

    def _read(self, now: float) -> FieldObservation:
        f, e, root = self.field, self.energy, self.root
        notes: list[str] = []
        power = None
        if f.power_mode:
            nvp, n1 = read_nvpmodel(root, f.nvpmodel_status, f.nvpmodel_conf,
                                    self._nvpmodel_query(now))
            cpus, n2 = read_cpufreq(root)
            gpus, n3 = read_devfreq(root, f.gpu_devfreq) if self.use_gpu or f.gpu_devfreq \
                else ((), ())
            notes += [*n1, *n2, *n3]
            state = PowerState(nvp, cpus, gpus)
            power = state if state.known else None
        zones: tuple[ThermalZone, ...] = ()
        headroom = None
        if f.thermal:
            zones, n4 = read_thermal(root)
            notes += n4
            headroom = thermal_headroom(zones, f.thermal_trip_types, f.thermal_zones)
            if zones and headroom is None:
                notes.append("thermal: no watched zone has a trip point of type "
                             f"{', '.join(f.thermal_trip_types)}: thermal pressure off")
        wall = self._wall()
        battery = None
        budget = None
        if e.battery:
            battery, n5 = read_battery(root, e.battery_name, e.battery_capacity_wh)
            notes += n5
            budget, self._discharge = battery_view(
                battery, self._discharge, wall, hours=e.battery_hours,
                reserve_percent=e.battery_reserve_percent,
                spend_rate_w=self._spend_rate("battery", now, battery))
        if budget is None and e.budget_wh > 0:
            board = self._board_wh() if self._board_wh is not None else None
            if board is None:
                notes.append("energy: no board energy meter: period budget off")
            else:
                self._ledger = period_ledger(self._ledger, wall, board, e.budget_wh, e.period,
                                             self._offset(wall))
                budget = period_view(self._ledger, wall, board,
                                     self._spend_rate("period", now, board))
        if budget is None:
            self._spent.clear()
            self._spent_kind = None
        return FieldObservation(now, wall, power, zones, headroom, battery, budget,
                                tuple(notes))

    def _spend_rate(self, kind: str, now: float, reading: Battery | float | None,
                    ) -> float | None:
        """Spending over the last `spend_window_s`, in W: the fall of the battery's energy,
        or the rise of the board's meter. None until two readings span some time."""
        if isinstance(reading, Battery):
            if reading.energy_wh is None or not reading.discharging:
                return None
            spent = -reading.energy_wh
        elif reading is None:
            return None
        else:
            spent = reading
        if self._spent_kind != kind:
            self._spent.clear()
            self._spent_kind = kind
        q = self._spent
        q.append((now, spent))
        while len(q) > 2 and now - q[1][0] >= self.energy.spend_window_s:
            q.popleft()
        t0, s0 = q[0]
        if now - t0 <= 0:
            return None
        return max(spent - s0, 0.0) / (now - t0) * 3600.0
