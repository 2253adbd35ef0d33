"""What the readings mean for the loop: the power state and its speed capacity, a change of
power state, the thermal headroom and the pressure it puts on Plan. Pure: values in,
values out; no I/O, no clocks, no logging."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from calm_edge.field.sysfs import CpuPolicy, Devfreq, NvpModel, ThermalZone


@dataclass(frozen=True)
class PowerState:
    """The power mode and frequency caps in force. Any part may be unknown (its input is
    off); a state with no part known is not a state (see `known`)."""

    nvpmodel: NvpModel | None = None
    cpus: tuple[CpuPolicy, ...] = ()
    gpus: tuple[Devfreq, ...] = ()

    @property
    def known(self) -> bool:
        return self.nvpmodel is not None or bool(self.cpus) or bool(self.gpus)

    @property
    def mode(self) -> str | None:
        return self.nvpmodel.name if self.nvpmodel is not None else None

    @property
    def cpu_capacity_khz(self) -> int | None:
        """Online CPUs x their cap, summed over policies: what decode on the CPUs scales
        with (Jetson power modes turn cores off as well as capping clocks)."""
        return sum(p.online_cpus * p.max_khz for p in self.cpus) if self.cpus else None

    @property
    def gpu_capacity_hz(self) -> int | None:
        return sum(g.max_hz for g in self.gpus) if self.gpus else None

    def capacity(self, use_gpu: bool) -> tuple[float, str] | None:
        """(capacity, "gpu" | "cpu") that speed scales with: the GPU's caps when layers are
        offloaded and they are known, else the CPUs'."""
        if use_gpu and self.gpu_capacity_hz:
            return float(self.gpu_capacity_hz), "gpu"
        if self.cpu_capacity_khz:
            return float(self.cpu_capacity_khz), "cpu"
        return None

    @property
    def key(self) -> str:
        """Names this state (calibrated and measured speeds are kept per key)."""
        return (f"{self.mode or '-'}|cpu={self.cpu_capacity_khz or '-'}kHz"
                f"|gpu={self.gpu_capacity_hz or '-'}Hz")

    def to_status(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "nvpmodel": None if self.nvpmodel is None else {
                "id": self.nvpmodel.mode_id, "name": self.nvpmodel.name,
                "source": self.nvpmodel.source},
            "cpu_capacity_khz": self.cpu_capacity_khz,
            "cpu": [{"policy": p.name, "online_cpus": p.online_cpus, "max_khz": p.max_khz,
                     "hw_max_khz": p.hw_max_khz} for p in self.cpus],
            "gpu": [{"device": g.name, "max_hz": g.max_hz, "hw_max_hz": g.hw_max_hz}
                    for g in self.gpus],
        }

    def cap_ratios(self) -> dict[str, float]:
        """Cap over hardware maximum, for the CPUs (online ones) and the GPU: 1.0 = no cap."""
        out = {}
        online = [p for p in self.cpus if p.online_cpus]
        if online:
            total = sum(p.online_cpus * p.hw_max_khz for p in online)
            out["cpu"] = sum(p.online_cpus * p.max_khz for p in online) / total
        known = [g for g in self.gpus if g.hw_max_hz]
        if known:
            out["gpu"] = sum(g.max_hz for g in known) / sum(g.hw_max_hz or 0 for g in known)
        return out


@dataclass(frozen=True)
class PowerChange:
    """A change of power state big enough to rescale speeds."""

    old_key: str
    new_key: str
    old_mode: str | None
    new_mode: str | None
    frequency_ratio: float | None   # old capacity / new capacity: > 1 means slower now
    capacity_kind: str | None       # "cpu" | "gpu": which caps the ratio is of

    def describe(self) -> str:
        parts = []
        if self.old_mode != self.new_mode:
            parts.append(f"power mode {self.old_mode or '?'} -> {self.new_mode or '?'}")
        if self.frequency_ratio is not None:
            parts.append(f"{self.capacity_kind} frequency capacity x"
                         f"{1 / self.frequency_ratio:.2f}")
        return ", ".join(parts) or "power state changed"


def power_change(old: PowerState, new: PowerState, *, use_gpu: bool, min_change: float,
                 ) -> PowerChange | None:
    """The change from `old` to `new` that rescales speeds, or None: a new power mode
    always; new caps when the capacity speed scales with moved by at least `min_change`
    (a share). Parts unknown on either side do not count."""
    mode_changed = old.mode is not None and new.mode is not None and old.mode != new.mode
    a, b = old.capacity(use_gpu), new.capacity(use_gpu)
    ratio = kind = None
    if a is not None and b is not None and a[1] == b[1]:
        ratio, kind = a[0] / b[0], a[1]
    caps_changed = ratio is not None and abs(1.0 / ratio - 1.0) >= min_change
    if not mode_changed and not caps_changed:
        return None
    return PowerChange(old.key, new.key, old.mode, new.mode, ratio, kind)


# -- thermals ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ThermalHeadroom:
    """The trip point closest to being reached."""

    zone: str
    temp_c: float
    trip_c: float
    trip_kind: str

    @property
    def margin_c(self) -> float:
        return self.trip_c - self.temp_c

    def describe(self) -> str:
        where = "above" if self.margin_c < 0 else "below"
        return (f"{self.zone} at {self.temp_c:.1f} C, {abs(self.margin_c):.1f} C {where} "
                f"its {self.trip_kind} trip point ({self.trip_c:.1f} C)")


def thermal_headroom(zones: Sequence[ThermalZone], trip_kinds: Sequence[str],
                     zone_names: Sequence[str] = ()) -> ThermalHeadroom | None:
    """The smallest margin to a trip point of `trip_kinds` over the zones (those named in
    `zone_names`, or all); None when no zone has such a trip point."""
    best: ThermalHeadroom | None = None
    for z in zones:
        if zone_names and z.name not in zone_names:
            continue
        for t in z.trips:
            if t.kind not in trip_kinds:
                continue
            h = ThermalHeadroom(z.name, z.temp_c, t.temp_c, t.kind)
            if best is None or (h.margin_c, h.zone) < (best.margin_c, best.zone):
                best = h
    return best


@dataclass(frozen=True)
class ThermalPressure:
    """How hard Plan leans toward cheap models: `closeness` runs from 0 (the margin away
    from the trip point) to 1 (at or past it); the energy weight grows by closeness x
    `weight`."""

    closeness: float
    weight: float
    note: str

    @property
    def extra_energy_weight(self) -> float:
        return self.closeness * self.weight


def thermal_pressure(h: ThermalHeadroom | None, margin_c: float, weight: float,
                     ) -> ThermalPressure | None:
    """None unless the headroom is under `margin_c` (and the weight does something)."""
    if h is None or weight <= 0 or margin_c <= 0 or h.margin_c >= margin_c:
        return None
    closeness = min(max(1.0 - h.margin_c / margin_c, 0.0), 1.0)
    return ThermalPressure(closeness, weight, h.describe())
