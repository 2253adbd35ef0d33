"""`calm-edge calibrate` without a daemon: the same Residency, Executor and knowledge store
the daemon uses, in this process, one model at a time under the profile's RAM budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from calm_edge.backends.base import BackendFactory
from calm_edge.bench.workload import Query
from calm_edge.calibration.device import DeviceIdentity
from calm_edge.calibration.results import ModelCalibration
from calm_edge.calibration.runner import CalibrationEvent
from calm_edge.classifier import Classification
from calm_edge.config import Settings
from calm_edge.fleet import Fleet
from calm_edge.knowledge import KnowledgeStore
from calm_edge.memory import MemoryProbe, process_rss_bytes


class _Unrouted:
    """Calibration routes nothing: a classifier that says so if asked."""

    runtime = "none"

    def classify(self, text: str) -> Classification:
        raise RuntimeError("calibration does not classify queries")


@dataclass(frozen=True)
class LocalRun:
    identity: DeviceIdentity
    results: dict[str, ModelCalibration]       # every model's calibration after the run
    failed: dict[str, str]                     # models that could not be calibrated: why


async def calibrate_locally(settings: Settings, fleet: Fleet, factory: BackendFactory,
                            build: str, models: Sequence[str], *, quick: bool,
                            restart: bool = False,
                            on_event: Callable[[CalibrationEvent], None] | None = None,
                            canaries: Sequence[Query] | None = None,
                            root: Path = Path("/"),
                            memory_probe: MemoryProbe = process_rss_bytes) -> LocalRun:
    """Calibrate `models` (all available ones if empty) and store the results in the
    knowledge store of `settings.state_dir`, where the daemon reads them."""
    from calm_edge.runtime import build_core, close_core, device_memory_for

    p = settings.profile
    store = KnowledgeStore(settings.state_dir / "knowledge.db",
                           retention_days=p.knowledge.retention_days,
                           max_requests=p.knowledge.max_requests,
                           max_db_bytes=p.knowledge.max_db_bytes)
    await store.open()
    core = build_core(settings, fleet, factory, _Unrouted(), store=store,
                      memory_probe=memory_probe, backend_build=build, sysfs_root=root,
                      device_memory=device_memory_for(settings, root))
    calibrator = core.calibrator
    assert calibrator is not None
    if canaries is not None:
        calibrator.canaries = list(canaries)
    failed: dict[str, str] = {}
    try:
        await core.residency.scan()
        names = list(models) or list(core.residency.slots)
        per_domain = p.calibration.quick_per_domain if quick else \
            p.calibration.canaries_per_domain
        for name in names:
            reason = core.residency.slots[name].unavailable_reason(0.0)
            if reason is not None:
                failed[name] = reason
                continue
            if restart:
                await store.clear_calibration(name)
            try:
                await calibrator.run([name], per_domain, quick=quick, on_event=on_event)
            except Exception as e:  # one model's failure must not lose the others'
                failed[name] = f"{type(e).__name__}: {e}"
            await core.scheduler.unload(name)  # one model in RAM at a time
        results = await calibrator.results()
    finally:
        await close_core(core)
        store.close()
    return LocalRun(calibrator.identity, results, failed)
