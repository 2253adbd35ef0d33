"""The composition root of the loop: its parts, built and wired in one place.

`build_core` makes what serves requests (the residency, the scheduler, the executor, the
orchestrator, the calibrator) from settings, a fleet and the environment's seams; the
daemon adds sockets, HTTP and the service around it, `calm-edge calibrate` and the tools
use it as it is, and so do the loop's tests. `close_core` takes it down in order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from calm_edge.analyze import Knowledge
from calm_edge.backends.base import BackendFactory
from calm_edge.calibration import Calibrator, identify
from calm_edge.calibration.background import BackgroundCalibration
from calm_edge.classifier import QueryClassifier
from calm_edge.confidence import Acceptor
from calm_edge.config import Settings
from calm_edge.energy import EnergyIntegrator
from calm_edge.execute import Executor
from calm_edge.field import FieldMonitor
from calm_edge.fleet import Fleet
from calm_edge.knowledge import KnowledgeStore
from calm_edge.memory import (
    DeviceMemoryReader,
    MemoryProbe,
    process_rss_bytes,
    select_device_memory,
)
from calm_edge.metrics import Metrics
from calm_edge.orchestrator import Orchestrator, OutcomePredictor
from calm_edge.residency import Residency
from calm_edge.scheduler import Scheduler


@dataclass
class Core:
    settings: Settings
    fleet: Fleet
    pool: ThreadPoolExecutor      # blocking I/O (hashing, closing, grading): not inference
    residency: Residency
    scheduler: Scheduler
    executor: Executor
    orchestrator: Orchestrator
    calibrator: Calibrator | None  # None without a knowledge store
    # The daemon's own calibration (run by the daemon; None without a calibrator).
    background: BackgroundCalibration | None = None


def resolved_threads(settings: Settings) -> int:
    """The profile's n_threads, 0 meaning every usable CPU."""
    from calm_edge.backends.llama_cpp import usable_cpus

    return settings.profile.runtime.n_threads or usable_cpus()


def device_memory_for(settings: Settings, root: Path) -> DeviceMemoryReader | None:
    """The reader of memory RSS misses, where layers are offloaded to a GPU."""
    p = settings.profile
    if p.runtime.n_gpu_layers == 0:
        return None
    return select_device_memory(p.memory.gpu_memory_source,
                                unified_board=p.device.board == "jetson", root=root)


def build_core(settings: Settings, fleet: Fleet, factory: BackendFactory,
               classifier: QueryClassifier, *, store: KnowledgeStore | None = None,
               knowledge: Knowledge | None = None, energy: EnergyIntegrator | None = None,
               metrics: Metrics | None = None, outcome: OutcomePredictor | None = None,
               acceptors: Mapping[tuple[str, str], Acceptor] | None = None,
               memory_probe: MemoryProbe = process_rss_bytes,
               device_memory: DeviceMemoryReader | None = None,
               rng: random.Random | None = None, backend_build: str = "unknown",
               sysfs_root: Path = Path("/"), budget_bytes: int | None = None,
               clock: Callable[[], float] = time.monotonic,
               field: FieldMonitor | None = None) -> Core:
    """Wire the loop's parts. Nothing is loaded or started: scan the residency and open
    the store (if any) before serving. `field` reads power mode, caps, thermals and the
    energy budget (calm_edge.field; the daemon makes one, tests and tools may)."""
    p = settings.profile
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="calm-io")
    residency = Residency(fleet, settings.models_dir, p.runtime,
                          p.memory.ram_budget_bytes if budget_bytes is None else budget_bytes,
                          factory, pool, clock=clock, memory_probe=memory_probe,
                          device_memory=device_memory,
                          drop_page_cache_on_evict=p.memory.drop_page_cache_on_evict)
    scheduler = Scheduler(residency, p.runtime.max_parallel, p.server.max_queue,
                          collate_max_bypass=p.residency.collate_max_bypass,
                          collate_max_wait_s=p.residency.collate_max_wait_s,
                          demand_alpha=p.residency.mix_alpha, prefetch=p.residency.prefetch,
                          prefetch_min_share=p.residency.prefetch_min_share,
                          fair=p.quotas.enabled, clock=clock)
    executor = Executor(residency)
    orchestrator = Orchestrator(settings, fleet, residency, scheduler, executor, classifier,
                                store=store, knowledge=knowledge, energy=energy,
                                metrics=metrics, outcome=outcome, acceptors=acceptors,
                                rng=rng, clock=clock, field=field)
    scheduler.on_prefetch = lambda model, kind: orchestrator.metrics.prefetches.inc(
        1, model=model, kind=kind)
    calibrator = None
    if store is not None:
        calibrator = Calibrator(
            residency, scheduler, executor, store,
            identify(sysfs_root, backend_build, p.runtime, resolved_threads(settings)), pool,
            canary_timeout_s=p.calibration.canary_timeout_s,
            power_state=orchestrator.power_key)
    core = Core(settings, fleet, pool, residency, scheduler, executor, orchestrator,
                calibrator)
    if calibrator is not None:
        core.background = BackgroundCalibration(
            calibrator, orchestrator, residency, lambda: core.settings.profile.calibration,
            busy=scheduler.busy, clock=clock)
    return core


async def close_core(core: Core) -> None:
    """Stop serving: background work ends, models are closed, lanes and the pool stop."""
    await core.scheduler.aclose()
    await core.orchestrator.aclose()
    await core.residency.close_all()
    core.scheduler.shutdown()
    core.pool.shutdown(wait=True, cancel_futures=True)
