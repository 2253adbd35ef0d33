"""`calm-edge calibrate` without a daemon: the same Residency, Executor and knowledge store
the daemon uses, in this process, one model at a time under the profile's RAM budget."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from calm_edge.backends.base import BackendFactory
from calm_edge.bench.workload import Query
from calm_edge.calibration.device import DeviceIdentity, identify
from calm_edge.calibration.results import ModelCalibration
from calm_edge.calibration.runner import CalibrationEvent, Calibrator
from calm_edge.config import Settings
from calm_edge.execute import Executor
from calm_edge.fleet import Fleet
from calm_edge.knowledge import KnowledgeStore
from calm_edge.lanes import InferenceLanes
from calm_edge.memory import MemoryProbe, process_rss_bytes, select_device_memory
from calm_edge.residency import Residency


@dataclass(frozen=True)
class LocalRun:
    identity: DeviceIdentity
    results: dict[str, ModelCalibration]       # every model's calibration after the run
    failed: dict[str, str]                     # models that could not be calibrated: why


def resolved_threads(settings: Settings) -> int:
    from calm_edge.backends.llama_cpp import usable_cpus

    return settings.profile.runtime.n_threads or usable_cpus()


async def calibrate_locally(settings: Settings, fleet: Fleet, factory: BackendFactory,
                            build: str, models: Sequence[str], *, quick: bool,
                            restart: bool = False,
                            on_event: Callable[[CalibrationEvent], None] | None = None,
                            canaries: Sequence[Query] | None = None,
                            root: Path = Path("/"),
                            memory_probe: MemoryProbe = process_rss_bytes) -> LocalRun:
    """Calibrate `models` (all available ones if empty) and store the results in the
    knowledge store of `settings.state_dir`, where the daemon reads them."""
    p = settings.profile
    identity = identify(root, build, p.runtime, resolved_threads(settings))
    async with contextlib.AsyncExitStack() as stack:
        pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="calm-io")
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        store = KnowledgeStore(settings.state_dir / "knowledge.db",
                               retention_days=p.knowledge.retention_days,
                               max_requests=p.knowledge.max_requests,
                               max_db_bytes=p.knowledge.max_db_bytes)
        stack.callback(store.close)
        await store.open()
        lanes = InferenceLanes(1)
        stack.callback(lanes.shutdown)
        residency = Residency(
            fleet, settings.models_dir, p.runtime, p.memory.ram_budget_bytes, factory, pool,
            lanes, memory_probe=memory_probe, device_memory=select_device_memory(
                p.memory.gpu_memory_source, unified_board=p.device.board == "jetson",
                root=root))
        stack.push_async_callback(residency.close_all)
        await residency.scan()
        calibrator = Calibrator(residency, Executor(residency, lanes), store, identity, pool,
                                canaries=canaries,
                                canary_timeout_s=p.calibration.canary_timeout_s)
        names = list(models) or list(residency.slots)
        failed: dict[str, str] = {}
        per_domain = p.calibration.quick_per_domain if quick else \
            p.calibration.canaries_per_domain
        for name in names:
            reason = residency.slots[name].unavailable_reason(0.0)
            if reason is not None:
                failed[name] = reason
                continue
            if restart:
                await store.clear_calibration(name)
            try:
                await calibrator.run([name], per_domain, quick=quick, on_event=on_event)
            except Exception as e:  # one model's failure must not lose the others'
                failed[name] = f"{type(e).__name__}: {e}"
            await residency.unload(name)  # one model in RAM at a time
        results = await calibrator.results()
    return LocalRun(identity, results, failed)
