"""Field conditions as inputs of the loop (README: Energy): the power mode and frequency
caps (Jetson nvpmodel, cpufreq, devfreq), thermal zones and their trip points, and an
energy budget over time (per period, or a battery's charge).

Modules: `sysfs` (readers under an injectable root; never raise, say what they turned
off), `state` (pure: power state, its change, thermal headroom and pressure), `pacing`
(pure: budgets and the pacing controller), `monitor` (FieldMonitor: polls the readers and
keeps what measuring needs across polls).
"""

from calm_edge.field.monitor import FieldMonitor, FieldObservation
from calm_edge.field.pacing import (
    LADDER,
    BudgetView,
    Pacing,
    PacingParams,
    battery_view,
    pace_mode,
    period_bounds,
    period_ledger,
    period_view,
)
from calm_edge.field.state import (
    PowerChange,
    PowerState,
    ThermalHeadroom,
    ThermalPressure,
    power_change,
    thermal_headroom,
    thermal_pressure,
)
from calm_edge.field.sysfs import (
    Battery,
    CpuPolicy,
    Devfreq,
    NvpModel,
    ThermalZone,
    TripPoint,
    parse_nvpmodel_conf,
    parse_nvpmodel_query,
    parse_nvpmodel_status,
    read_battery,
    read_cpufreq,
    read_devfreq,
    read_nvpmodel,
    read_thermal,
    run_nvpmodel_query,
)

__all__ = [
    "LADDER", "Battery", "BudgetView", "CpuPolicy", "Devfreq", "FieldMonitor",
    "FieldObservation", "NvpModel", "Pacing", "PacingParams", "PowerChange", "PowerState",
    "ThermalHeadroom", "ThermalPressure", "ThermalZone", "TripPoint", "battery_view",
    "pace_mode", "parse_nvpmodel_conf", "parse_nvpmodel_query", "parse_nvpmodel_status",
    "period_bounds", "period_ledger", "period_view", "power_change", "read_battery",
    "read_cpufreq", "read_devfreq", "read_nvpmodel", "read_thermal", "run_nvpmodel_query",
    "thermal_headroom", "thermal_pressure",
]
