"""Energy: power readers (jtop, INA3221/INA238 hwmon, RAPL, CPU-time estimator, replay)
and an integrator that gives joules per request window (README: Energy).

Typical use by the daemon (blocking calls at start-up, cheap queries afterwards)::

    reader = select_reader(profile.power)                  # once, at start
    integ = EnergyIntegrator(reader, profile.power.sample_hz,
                             history_s=profile.power.history_s)
    integ.start()
    ...
    reading = integ.energy_between(t0_s, time.monotonic())  # per request, any thread
    reading.energy_j, reading.kind                           # ('measured' | 'estimated')
    ...
    integ.stop(); reader.close()                             # at shutdown

Importing this package never imports `jtop`.
"""

from __future__ import annotations

from calm_edge.energy.base import (
    PowerReader,
    PowerReadError,
    PowerSample,
    ReaderUnavailable,
    SourceName,
    describe_reader,
    energy_kind,
)
from calm_edge.energy.estimator import CpuTimeEstimator, parse_proc_stat_cpu
from calm_edge.energy.hwmon import HwmonChannel, HwmonReader, discover_channels
from calm_edge.energy.integrator import (
    EnergyIntegrator,
    EnergyReading,
    RequestWindow,
    attribute_energy,
    split_energy,
)
from calm_edge.energy.jtop_reader import JtopFactory, JtopReader, default_jtop_factory
from calm_edge.energy.rapl import RaplReader, RaplZone, discover_zones
from calm_edge.energy.replay import PowerTrace, ReplayReader
from calm_edge.energy.selection import AUTO_ORDER, build_reader, select_reader

__all__ = [
    "AUTO_ORDER",
    "CpuTimeEstimator",
    "EnergyIntegrator",
    "EnergyReading",
    "HwmonChannel",
    "HwmonReader",
    "JtopFactory",
    "JtopReader",
    "PowerReadError",
    "PowerReader",
    "PowerSample",
    "PowerTrace",
    "RaplReader",
    "RaplZone",
    "ReaderUnavailable",
    "ReplayReader",
    "RequestWindow",
    "SourceName",
    "attribute_energy",
    "build_reader",
    "default_jtop_factory",
    "describe_reader",
    "discover_channels",
    "discover_zones",
    "energy_kind",
    "parse_proc_stat_cpu",
    "select_reader",
    "split_energy",
]
