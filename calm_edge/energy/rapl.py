"""Intel/AMD RAPL energy counters via the powercap sysfs class.

Zones are `<root>/sys/class/powercap/intel-rapl:*` (top level `intel-rapl:N`, subzones
`intel-rapl:N:M`), each with `name` (package-0, core, uncore, dram, psys),
`energy_uj` (a cumulative counter, µJ) and `max_energy_range_uj` (where it wraps to 0).

Power per zone = Δenergy_uj / 1000 / Δt_s (mW) between two reads; a negative delta is a
wrap and `max_energy_range_uj` is added. Each sample therefore carries the *mean* power of
the interval since the previous read and is stamped at the interval's midpoint (the best
single instant for a mean; the integrator's trapezoid then loses nothing on average).

Priming: the constructor reads every counter once, so the first `read()` already reports
the mean power since construction. A `read()` with no time elapsed since the previous one
raises PowerReadError (the integrator skips it) rather than inventing a zero.

Total (when the profile names no `total_rail`): `psys` when present (the whole SoC and
platform), else the sum of the `package-*` and `dram` zones among the reported rails;
`core`/`uncore` are parts of their package and are reported but never added.

Since Linux 5.10 (CVE-2020-8694) `energy_uj` is readable by root only; the daemon then
needs read access granted (e.g. a tmpfiles.d/udev rule) or falls through to the estimator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from calm_edge.energy.base import (
    PowerReadError,
    PowerSample,
    ReaderUnavailable,
    SysfsValue,
    WarnOnce,
    check_power_mw,
    choose_rails,
    form_total_mw,
    log,
    parse_number,
    read_text_file,
    unique_name,
)


@dataclass(frozen=True)
class RaplZone:
    rail: str
    zone_dir: Path
    max_energy_range_uj: float | None  # None: unknown, a wrap cannot be corrected


def _additive(rail: str) -> bool:
    base = rail.split("@", 1)[0]
    return base.startswith("package") or base == "dram"


class _Zone:
    __slots__ = ("energy", "last_t_s", "last_uj", "zone")

    def __init__(self, zone: RaplZone, energy_uj: float, t_s: float) -> None:
        self.zone = zone
        self.energy = SysfsValue(zone.zone_dir / "energy_uj")
        self.last_uj = energy_uj
        self.last_t_s = t_s


def discover_zones(sysfs_root: Path = Path("/")) -> tuple[list[RaplZone], list[str]]:
    """(readable zones, notes). Blocking; call once at start-up."""
    zones: list[RaplZone] = []
    notes: list[str] = []
    unreadable: list[str] = []
    for d in sorted((sysfs_root / "sys/class/powercap").glob("intel-rapl:*")):
        energy = d / "energy_uj"
        if not energy.exists():
            continue
        try:
            parse_number(energy.read_text(encoding="ascii"))
        except PermissionError:
            unreadable.append(d.name)
            continue
        except (OSError, ValueError) as e:
            notes.append(f"rapl: {d.name}/energy_uj unusable: {e}")
            continue
        name = read_text_file(d / "name") or d.name
        max_text = read_text_file(d / "max_energy_range_uj")
        try:
            max_uj: float | None = parse_number(max_text or "")
        except ValueError:
            max_uj = None
            notes.append(f"rapl: {d.name} has no max_energy_range_uj; a counter wrap "
                         "drops that interval")
        taken = [z.rail for z in zones]
        rail = name if name not in taken else unique_name(f"{name}@{d.name}", taken)
        zones.append(RaplZone(rail, d, max_uj if max_uj and max_uj > 0 else None))
    if unreadable:
        notes.append(f"rapl: energy_uj of {', '.join(unreadable)} is readable by root only "
                     "(Linux >= 5.10); grant the daemon read access to use RAPL")
    return zones, notes


class RaplReader:
    """Mean power per RAPL zone between consecutive reads. Measured. One thread at a time."""

    source = "rapl"
    measured = True

    def __init__(self, *, sysfs_root: Path = Path("/"), rails: Sequence[str] = (),
                 total_rail: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        found, notes = discover_zones(sysfs_root)
        if not found:
            why = "; ".join(notes) if notes else "no zones with energy_uj"
            raise ReaderUnavailable(
                f"no readable RAPL counters under {sysfs_root / 'sys/class/powercap'} ({why})")
        by_name = {z.rail: z for z in found}
        chosen, self._total_rail, more = choose_rails(list(by_name), rails, total_rail, "rapl")
        self.rails: tuple[str, ...] = chosen
        self.notes: list[str] = notes + more
        self.selection_notes: tuple[str, ...] = tuple(self.notes)
        if self._total_rail:
            self._summed: tuple[str, ...] = ()
        elif "psys" in chosen:
            self._total_rail = "psys"
            self._summed = ()
        else:
            self._summed = tuple(r for r in chosen if _additive(r)) or chosen
        names = list(chosen)
        if self._total_rail and self._total_rail not in names:
            names.append(self._total_rail)
        self._clock = clock
        self._warn = WarnOnce("rapl")
        t_s = clock()
        self._zones: list[_Zone] = []
        for n in names:
            z = _Zone(by_name[n], 0.0, t_s)
            z.last_uj = parse_number(z.energy.read_text())  # prime; readable per discovery
            self._zones.append(z)
        self._last_t_s = t_s
        log.info("rapl zones: %s; total: %s", ", ".join(names),
                 self._total_rail or "+".join(self._summed))

    def _zone_mw(self, z: _Zone, t_s: float) -> float | None:
        rail = z.zone.rail
        try:
            now_uj = parse_number(z.energy.read_text())
        except OSError as e:
            self._warn(rail, "unreadable", e.strerror or str(e))
            return None
        except ValueError as e:
            self._warn(rail, "not a number", str(e))
            return None
        dt_s = t_s - z.last_t_s
        delta_uj = now_uj - z.last_uj
        if delta_uj < 0:
            if z.zone.max_energy_range_uj is None:
                self._warn(rail, "counter wrapped, range unknown", f"{delta_uj:g} µJ")
                z.last_uj, z.last_t_s = now_uj, t_s
                return None
            delta_uj += z.zone.max_energy_range_uj
        z.last_uj, z.last_t_s = now_uj, t_s
        power_mw = delta_uj / 1000.0 / dt_s
        problem = check_power_mw(power_mw)
        if problem:  # e.g. a counter reset on resume from suspend
            self._warn(rail, problem, f"{power_mw:g} mW over {dt_s:.3f} s")
            return None
        return power_mw

    def read(self) -> PowerSample:
        """Blocking (one pread per zone). Mean power since the previous read, stamped at
        the interval midpoint. Raises PowerReadError when no time elapsed."""
        t_s = self._clock()
        prev_t_s = self._last_t_s
        if t_s <= prev_t_s:
            raise PowerReadError("no time elapsed since the previous RAPL read")
        values: dict[str, float] = {}
        for z in self._zones:
            if t_s <= z.last_t_s:  # pragma: no cover - guarded above
                continue
            p = self._zone_mw(z, t_s)
            if p is not None:
                values[z.zone.rail] = p
        self._last_t_s = t_s
        total_mw = form_total_mw(values, self._total_rail, self._summed)
        rails_mw = {r: values[r] for r in self.rails if r in values}
        return PowerSample((prev_t_s + t_s) / 2.0, total_mw, rails_mw)

    def close(self) -> None:
        for z in self._zones:
            z.energy.close()
