"""Calibration on the device itself: what each model's speed, load time, footprint and
answers are *here*, so the loop starts from this device's truth and not from figures
measured on another machine.

Modules: `results` (pure: items, summaries, the priors the loop takes, demotion),
`device` (which device a calibration belongs to), `runner` (runs items over Residency and
Executor, resumable), `local` (`calm-edge calibrate` without a daemon). The canary set is
`data/canaries.jsonl` (see `data/DATA_CARD.md`).
"""

from calm_edge.calibration.device import DeviceIdentity, identify
from calm_edge.calibration.results import (
    CalibrationParams,
    CanaryResult,
    DevicePriors,
    DomainPrior,
    LoadResult,
    ModelCalibration,
    device_priors,
)
from calm_edge.calibration.runner import CalibrationEvent, Calibrator, Preempted, load_canaries

__all__ = [
    "CalibrationEvent", "CalibrationParams", "Calibrator", "CanaryResult", "DeviceIdentity",
    "DevicePriors", "DomainPrior", "LoadResult", "ModelCalibration", "Preempted",
    "device_priors", "identify", "load_canaries",
]
