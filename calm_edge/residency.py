"""Which fleet models are in RAM: model slots, loading and unloading, eviction under the
byte budget, and each model's tier.

Tiers: **ready** (loaded), **warm** (not loaded, its file in the page cache: a load costs
the copy and the repack, ~0.3-1 s here) and **cold** (a load reads the file from flash).
Unloading leaves a model warm unless the profile drops its pages (`memory.
drop_page_cache_on_evict`, on for boards where the page cache and the models share RAM);
the page cache may drop it to cold later, which `refresh_tiers` notices.

The scheduler (calm_edge.scheduler) is its one user during serving: it decides when a
model is loaded, used, evicted or prefetched, and keeps `slot.in_use` and `expected_use`
current; this module carries those decisions out and does the budget arithmetic (the
eviction policy itself is pure, in calm_edge.memory). Every method runs on the loop
thread; slow work (hashing, closing) runs in the injected thread pool, a load on the
inference lane the caller passes; both are awaited. One load at a time.

State transitions are those of `ModelState`; `ensure_ready()` is idempotent:
READY returns at once; LOADING/UNLOADING waits for that transition and re-checks;
UNLOADED (or FAILED past its back-off) starts one load that concurrent callers share;
FAILED within its back-off raises ModelUnavailable with the time left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm_edge.backends.base import Backend, BackendFactory, ModelState
from calm_edge.config import RuntimeConfig
from calm_edge.fleet import (
    FileStatus,
    Fleet,
    ModelSpec,
    cached_status,
    model_footprint,
    model_path,
    verify,
)
from calm_edge.gguf_meta import Footprint, GGUFError, read_gguf
from calm_edge.memory import (
    DeviceMemoryReader,
    MemoryProbe,
    ResidentModel,
    choose_evictions,
    model_growth_bytes,
    page_cache_share,
    process_rss_bytes,
)
from calm_edge.units import format_bytes

log = logging.getLogger("calm_edge.residency")

WARM_SHARE = 0.9  # a file this much in the page cache loads warm
_BACKOFF_BASE_S = 5.0
_BACKOFF_MAX_S = 300.0


@dataclass(frozen=True)
class ResidencyView:
    budget_bytes: int
    used_bytes: int
    resident: tuple[str, ...]
    models: tuple[dict[str, Any], ...]  # one row per fleet model, in fleet order


class ModelUnavailable(RuntimeError):
    """A model cannot serve now; `retry_after_s` is set when waiting may help."""

    def __init__(self, name: str, reason: str, retry_after_s: float | None = None) -> None:
        self.name, self.reason, self.retry_after_s = name, reason, retry_after_s
        super().__init__(f"model {name!r} unavailable: {reason}")


@dataclass
class ModelSlot:
    spec: ModelSpec
    path: Path
    state: ModelState = ModelState.UNLOADED
    file_status: FileStatus = FileStatus.MISSING
    footprint: Footprint | None = None
    header_error: str | None = None
    backend: Backend | None = None
    in_use: int = 0
    pinned: bool = False
    last_used_s: float = 0.0
    measured_bytes: int | None = None  # memory growth attributed to this model (load + warm-up)
    memory_source: str = "rss"         # what measured it: rss, rss+nvml, memavailable, or
                                       # "estimate": GPU layers and no reading of GPU memory
    rss_before_load: int = 0
    device_before_load: int | None = None
    load_epoch: int = 0                # Residency.load_epoch when this model was loaded
    loads: int = 0
    unloads: int = 0
    evictions: int = 0                 # unloads forced to make room or fit a new budget
    prefetch_loads: int = 0
    prefetch_warms: int = 0
    load_seconds_total: float = 0.0
    generations: int = 0  # since the last load; the first one pays for faulting weights in
    last_load_s: float | None = None
    last_error: str | None = None
    failures: int = 0
    retry_at_s: float = 0.0
    transition: asyncio.Future[None] | None = None
    reserved: bool = False  # holds budget: from room made for its load until it is unloaded
    retired: bool = False   # removed or replaced by a reload: unloaded once nobody uses it
    cached_share: float | None = None  # share of the file in the page cache (last looked)
    last_load_tier: str | None = None  # the tier the last load started from

    @property
    def tier(self) -> str:
        """'ready' (loaded or loading), 'warm' (file pages cached) or 'cold'."""
        if self.state in (ModelState.READY, ModelState.LOADING, ModelState.UNLOADING):
            return "ready"
        return "warm" if (self.cached_share or 0.0) >= WARM_SHARE else "cold"

    @property
    def holds_budget(self) -> bool:
        """Counted against the budget: loaded, or loading with room already made."""
        return self.reserved and self.state in (ModelState.LOADING, ModelState.READY,
                                                ModelState.UNLOADING)

    @property
    def weights_bytes(self) -> int:
        """The weights' bytes from the header, else the file's size."""
        return self.footprint.weights_bytes if self.footprint is not None else \
            self.spec.size_bytes

    @property
    def estimated_bytes(self) -> int:
        if self.footprint is not None:
            return self.footprint.total_bytes
        return int(self.spec.size_bytes * 1.3)  # header unreadable: a rough upper bound

    @property
    def charged_bytes(self) -> int:
        """What this model counts against the budget while resident: the GGUF estimate (an
        upper bound by construction), corrected upward when measurement saw more."""
        measured = int(self.measured_bytes * 1.05) if self.measured_bytes else 0
        return max(self.estimated_bytes, measured)

    def unavailable_reason(self, now_s: float) -> str | None:
        """Why this model cannot be loaded now, or None if it can."""
        if self.file_status in (FileStatus.MISSING, FileStatus.WRONG_SIZE,
                                FileStatus.HASH_MISMATCH):
            return f"model file {self.file_status.value}: {self.path}"
        if self.retired:
            return "removed from the fleet by a reload"
        if self.header_error:
            return self.header_error
        if self.state is ModelState.FAILED and now_s < self.retry_at_s:
            return f"failed to load ({self.last_error}); retrying in " \
                   f"{self.retry_at_s - now_s:.0f}s"
        return None


class Residency:
    def __init__(
        self,
        fleet: Fleet,
        models_dir: Path,
        runtime: RuntimeConfig,
        budget_bytes: int,
        factory: BackendFactory,
        pool: Executor,
        *,
        clock: Callable[[], float] = time.monotonic,
        memory_probe: MemoryProbe = process_rss_bytes,
        device_memory: DeviceMemoryReader | None = None,
        drop_page_cache_on_evict: bool = False,
        page_cache: Callable[[Path], float | None] = page_cache_share,
    ) -> None:
        """`device_memory` measures what RSS misses when layers are offloaded to a GPU
        (calm_edge.memory.select_device_memory); unused for CPU-only runtimes."""
        self.fleet, self.models_dir, self.runtime = fleet, models_dir, runtime
        self.device_memory = device_memory
        self._page_cache = page_cache
        self.budget_bytes = budget_bytes
        self._factory, self._pool = factory, pool
        self._clock, self._probe = clock, memory_probe
        self._drop_pages = drop_page_cache_on_evict
        self.slots: dict[str, ModelSlot] = {
            m.name: ModelSlot(spec=m, path=model_path(models_dir, m)) for m in fleet.models}
        self._load_lock = asyncio.Lock()
        self._retired: list[ModelSlot] = []  # replaced by a reload, still loaded and in use
        self.load_epoch = 0
        # Share of the coming requests each model is expected to serve (the scheduler's
        # demand forecast): eviction keeps what is likely needed soon.
        self.expected_use: Mapping[str, float] = {}

    # -- inspection ---------------------------------------------------------------------

    def _scan_one(self, slot: ModelSlot) -> tuple[FileStatus, Footprint | None, str | None]:
        status = cached_status(self.models_dir, slot.spec)
        if status in (FileStatus.MISSING, FileStatus.WRONG_SIZE):
            return status, None, None
        try:
            info = read_gguf(slot.path)
        except GGUFError as e:
            return status, None, str(e)
        return status, model_footprint(info, slot.spec, self.runtime), None

    async def scan(self) -> None:
        """Check every model file (stat + sidecar + GGUF header; no hashing) and its tier."""
        loop = asyncio.get_running_loop()
        for slot in self.slots.values():
            status, fp, err = await loop.run_in_executor(self._pool, self._scan_one, slot)
            slot.file_status, slot.footprint, slot.header_error = status, fp, err
            if err or not (status is FileStatus.VERIFIED or status is FileStatus.UNVERIFIED):
                log.warning("model %s not loadable: %s", slot.spec.name,
                            err or f"file {status.value} ({slot.path})")
        await self.refresh_tiers()

    async def refresh_tiers(self) -> None:
        """Look again at how much of each unloaded model's file the page cache holds (it
        may have dropped pages under memory pressure). Blocking work in the pool."""
        loop = asyncio.get_running_loop()
        for slot in list(self.slots.values()):
            if slot.state is ModelState.UNLOADED and slot.file_status is not FileStatus.MISSING:
                slot.cached_share = await loop.run_in_executor(self._pool, self._page_cache,
                                                               slot.path)

    async def rescan_unavailable(self) -> None:
        """Re-check files that were missing or the wrong size (e.g. pulled after start)."""
        loop = asyncio.get_running_loop()
        for slot in self.slots.values():
            if slot.file_status in (FileStatus.MISSING, FileStatus.WRONG_SIZE) \
                    and slot.state is ModelState.UNLOADED:
                status, fp, err = await loop.run_in_executor(self._pool, self._scan_one, slot)
                if status is not slot.file_status:
                    log.info("model %s file is now %s", slot.spec.name, status.value)
                slot.file_status, slot.footprint, slot.header_error = status, fp, err

    def used_bytes(self) -> int:
        return sum(s.charged_bytes for s in (*self.slots.values(), *self._retired)
                   if s.holds_budget)

    async def apply_fleet(self, fleet: Fleet, models_dir: Path, runtime: RuntimeConfig,
                          ) -> dict[str, list[str]]:
        """Switch to a reloaded fleet without dropping requests: new models get slots,
        removed or changed ones are retired (unloaded now if idle, else when released).
        Runtime settings apply to loads from now on."""
        self.runtime = runtime
        old, self.fleet, self.models_dir = self.slots, fleet, models_dir
        slots: dict[str, ModelSlot] = {}
        added: list[str] = []
        changed: list[str] = []
        for spec in fleet.models:
            prev = old.get(spec.name)
            path = model_path(models_dir, spec)
            if prev is not None and prev.spec == spec and prev.path == path:
                slots[spec.name] = prev
                continue
            (changed if prev is not None else added).append(spec.name)
            slots[spec.name] = ModelSlot(spec=spec, path=path)
        removed = [n for n in old if n not in slots]
        self.slots = slots
        for name, prev in old.items():
            if slots.get(name) is not prev:
                prev.retired = True
                if prev.state is ModelState.READY and not prev.in_use:
                    await self._unload(prev)
                elif prev.state is not ModelState.UNLOADED:
                    self._retired.append(prev)
        self._retired = [s for s in self._retired if s.state is not ModelState.UNLOADED]
        loop = asyncio.get_running_loop()
        for name in (*added, *changed):
            slot = slots[name]
            slot.file_status, slot.footprint, slot.header_error = await loop.run_in_executor(
                self._pool, self._scan_one, slot)
        return {"added": added, "removed": removed, "changed": changed}

    def resident(self) -> list[str]:
        return [n for n, s in self.slots.items() if s.state is ModelState.READY]

    def snapshot(self) -> ResidencyView:
        """What status, /metrics and `calm-edge top` show of the models and the budget."""
        now = self._clock()
        models = tuple({
            "name": name, "state": slot.state.value, "tier": slot.tier,
            "file": slot.file_status.value,
            "page_cache_share": None if slot.cached_share is None
            else round(slot.cached_share, 3),
            "unavailable": slot.unavailable_reason(now),
            "estimated_bytes": slot.estimated_bytes, "measured_bytes": slot.measured_bytes,
            "charged_bytes": slot.charged_bytes, "memory_source": slot.memory_source,
            "pinned": slot.pinned, "in_use": slot.in_use, "loads": slot.loads,
            "unloads": slot.unloads, "evictions": slot.evictions,
            "prefetch_loads": slot.prefetch_loads, "prefetch_warms": slot.prefetch_warms,
            "last_load_s": slot.last_load_s,
            "load_seconds_total": round(slot.load_seconds_total, 3),
            "expected_use": round(self.expected_use.get(name, 0.0), 3),
            "last_error": slot.last_error, "format": slot.spec.format,
            "tags": list(slot.spec.tags), "origin": "added" if slot.spec.added else "fleet",
        } for name, slot in self.slots.items())
        return ResidencyView(self.budget_bytes, self.used_bytes(), tuple(self.resident()),
                             models)

    def _device_reader(self) -> DeviceMemoryReader | None:
        return self.device_memory if self.runtime.n_gpu_layers != 0 else None

    def _device_used(self) -> int | None:
        reader = self._device_reader()
        return reader.used_bytes() if reader is not None else None

    def _growth(self, slot: ModelSlot) -> int:
        """Memory grown since `slot` started loading: RSS, plus what the device reader sees
        when layers are offloaded. Sets `slot.memory_source` to say how it was measured."""
        reader = self._device_reader()
        rss_delta = self._probe() - slot.rss_before_load
        now = self._device_used()
        if reader is None:
            slot.memory_source = "estimate" if self.runtime.n_gpu_layers != 0 else "rss"
            return max(rss_delta, 0)
        if now is None or slot.device_before_load is None:
            slot.memory_source = "estimate"  # the reading failed: the estimate stays charged
            return max(rss_delta, 0)
        slot.memory_source = reader.source if reader.unified else f"rss+{reader.source}"
        return model_growth_bytes(rss_delta, now - slot.device_before_load, reader)

    def measure_after_generation(self, slot: ModelSlot) -> None:
        """Call after a model's first generation since load: page faults and buffers are
        in RSS (and GPU memory) now. Attributes the growth since its load if no other load
        happened since."""
        if slot.load_epoch == self.load_epoch and slot.state is ModelState.READY:
            slot.measured_bytes = max(slot.measured_bytes or 0, self._growth(slot))

    async def after_use(self, slot: ModelSlot) -> None:
        """The last lease on `slot` ended: unload it if a reload retired it; fit the budget
        if it was lowered while the model was busy."""
        if slot.in_use:
            return
        if slot.retired and slot.state is ModelState.READY:
            await self._unload(slot)
        elif self.used_bytes() > self.budget_bytes:
            await self.enforce_budget()

    async def drop_file_pages(self, name: str) -> None:
        """Drop `name`'s file pages from the page cache (for a cold-load measurement). Only
        pages nobody maps go: call while the model is unloaded."""
        slot = self.slots[name]
        await asyncio.get_running_loop().run_in_executor(self._pool, _dontneed, slot.path)
        slot.cached_share = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._page_cache, slot.path)

    async def ensure_ready(self, name: str, lane: Executor,
                           protect: Collection[str] = ()) -> ModelSlot:
        """`name` loaded (on `lane`, evicting idle models if the budget needs it, those in
        `protect` only as a last resort), or ModelUnavailable."""
        slot = self.slots[name]
        while True:
            if slot.state is ModelState.READY:
                return slot
            if slot.transition is not None:
                await asyncio.shield(slot.transition)
                continue
            reason = slot.unavailable_reason(self._clock())
            if reason is not None:
                retry = (slot.retry_at_s - self._clock()
                         if slot.state is ModelState.FAILED else None)
                raise ModelUnavailable(name, reason, retry)
            await self._transition(slot, ModelState.LOADING, self._load(slot, lane, protect))
            if slot.state is ModelState.FAILED:
                raise ModelUnavailable(name, f"failed to load: {slot.last_error}",
                                       slot.retry_at_s - self._clock())

    async def _transition(self, slot: ModelSlot, during: ModelState,
                          work: Coroutine[Any, Any, None]) -> None:
        """Run `work` with the slot in state `during`; waiters on the slot wake after it."""
        slot.state = during
        slot.transition = asyncio.get_running_loop().create_future()
        try:
            await work
        finally:
            fut, slot.transition = slot.transition, None
            fut.set_result(None)

    async def _load(self, slot: ModelSlot, lane: Executor, protect: Collection[str] = (),
                    ) -> None:
        """LOADING -> READY, or -> FAILED with back-off. Never raises for load errors."""
        loop = asyncio.get_running_loop()
        name = slot.spec.name
        try:
            async with self._load_lock:
                if slot.file_status is not FileStatus.VERIFIED:
                    log.info("verifying %s (sha256)", name)
                    slot.file_status = await loop.run_in_executor(
                        self._pool, verify, self.models_dir, slot.spec)
                    if slot.file_status is not FileStatus.VERIFIED:
                        raise _FileRejected(f"model file {slot.file_status.value}: {slot.path}")
                await self._make_room(slot, protect)
                slot.reserved = True
                slot.last_load_tier = "warm" if (slot.cached_share or 0.0) >= WARM_SHARE \
                    else "cold"
                rss0, dev0 = self._probe(), self._device_used()
                t0 = self._clock()
                backend = await loop.run_in_executor(
                    lane, self._factory, slot.spec, slot.path, self.runtime)
                slot.last_load_s = self._clock() - t0
                slot.load_seconds_total += slot.last_load_s
                slot.rss_before_load, slot.device_before_load = rss0, dev0
                slot.measured_bytes = self._growth(slot)
                self.load_epoch += 1
                slot.load_epoch = self.load_epoch
        except _NoRoom as e:
            slot.state = ModelState.UNLOADED
            slot.last_error = str(e)
            raise ModelUnavailable(name, str(e), retry_after_s=1.0) from None
        except Exception as e:  # a load error must not take the daemon down
            slot.reserved = False
            slot.failures += 1
            slot.state = ModelState.FAILED
            slot.last_error = f"{type(e).__name__}: {e}" if not isinstance(e, _FileRejected) \
                else str(e)
            backoff = min(_BACKOFF_BASE_S * 2 ** (slot.failures - 1), _BACKOFF_MAX_S)
            slot.retry_at_s = self._clock() + backoff
            log.error("loading %s failed: %s (retry in %.0fs)", name, slot.last_error, backoff)
            return
        slot.backend = backend
        slot.state = ModelState.READY
        slot.cached_share = 1.0  # read whole to load: cached, unless dropped on unload
        slot.loads += 1
        slot.generations = 0
        slot.last_error = None
        log.info("loaded %s in %.2fs (estimated %s, measured %s +%s; %s of %s budget used)",
                 name, slot.last_load_s, format_bytes(slot.estimated_bytes),
                 slot.memory_source, format_bytes(slot.measured_bytes or 0),
                 format_bytes(self.used_bytes()), format_bytes(self.budget_bytes))

    async def _make_room(self, slot: ModelSlot, protect: Collection[str] = ()) -> None:
        need = slot.charged_bytes
        if need > self.budget_bytes:
            raise _NoRoom(f"needs {format_bytes(need)} but the RAM budget is "
                          f"{format_bytes(self.budget_bytes)}")
        others = self._resident_view(exclude=slot)
        # Models with requests waiting for them stay if anything else can go: evicting one
        # only to load it again a moment later is the thrash to avoid.
        guarded = [dataclasses.replace(m, in_use=True) if m.name in protect else m
                   for m in others]
        victims = choose_evictions(guarded, need, self.budget_bytes)
        if victims is None:
            victims = choose_evictions(others, need, self.budget_bytes)
        if victims is None:
            busy = ", ".join(m.name for m in others if m.in_use or m.pinned)
            raise _NoRoom(f"needs {format_bytes(need)}; the budget is held by models in "
                          f"use or pinned ({busy})")
        for victim in victims:
            v = self.slots[victim]
            if v.state is not ModelState.READY or v.in_use:
                continue  # leased (or taken out) while an earlier victim was unloading
            log.info("evicting %s to make room for %s", victim, slot.spec.name)
            await self._unload(v, evicted=True)
        if self.used_bytes() + need > self.budget_bytes:
            await self._make_room(slot, protect)  # a victim was leased meanwhile: choose again

    def _resident_view(self, exclude: ModelSlot | None = None) -> list[ResidentModel]:
        return [ResidentModel(s.spec.name, s.charged_bytes, s.in_use > 0, s.pinned,
                              s.last_used_s, self.expected_use.get(s.spec.name, 0.0),
                              s.last_load_s if s.last_load_s is not None else 1.0)
                for s in self.slots.values() if s is not exclude and s.holds_budget]

    async def enforce_budget(self) -> list[str]:
        """Evict idle models until the resident set fits the budget (after it shrank).
        Models in use or pinned stay; returns the names evicted."""
        if self.used_bytes() <= self.budget_bytes:
            return []
        resident = [m for m in self._resident_view() if m.name in self.resident()]
        over = self.used_bytes() - self.budget_bytes
        victims = choose_evictions(resident, over, sum(m.charged_bytes for m in resident)) \
            or []
        if not victims:  # cannot fit now: take every idle, unpinned model out
            victims = [m.name for m in resident if not m.in_use and not m.pinned]
        for name in victims:
            if self.slots[name].state is ModelState.READY and not self.slots[name].in_use:
                log.info("evicting %s to fit the RAM budget of %s", name,
                         format_bytes(self.budget_bytes))
                await self._unload(self.slots[name], evicted=True)
        return victims

    async def set_budget(self, budget_bytes: int) -> list[str]:
        """Change the RAM budget at run time; evicts idle models if the new one is smaller."""
        self.budget_bytes = budget_bytes
        log.info("RAM budget set to %s", format_bytes(budget_bytes))
        return await self.enforce_budget()

    def pin(self, name: str, pinned: bool = True) -> None:
        """A pinned model is never evicted (it may still be unloaded explicitly)."""
        self.slots[name].pinned = pinned

    def free_bytes(self) -> int:
        return self.budget_bytes - self.used_bytes()

    async def prefetch(self, name: str, lane: Executor) -> str | None:
        """Get `name` ready ahead of need without ever exceeding the budget: load it if it
        fits in the free budget as things stand (no eviction), else warm its file pages
        (readahead into the page cache). Returns "load", "warm" or None (nothing done)."""
        slot = self.slots[name]
        if slot.state is not ModelState.UNLOADED or slot.unavailable_reason(self._clock()):
            return None
        if slot.charged_bytes <= self.free_bytes() and not self._load_lock.locked():
            slot.prefetch_loads += 1
            await self._transition(slot, ModelState.LOADING, self._load(slot, lane))
            return "load" if self.slots[name].state is ModelState.READY else None
        slot.prefetch_warms += 1
        await asyncio.get_running_loop().run_in_executor(self._pool, _willneed, slot.path)
        slot.cached_share = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._page_cache, slot.path)
        return "warm"

    async def _unload(self, slot: ModelSlot, evicted: bool = False) -> None:
        backend, slot.backend = slot.backend, None

        async def work() -> None:
            if backend is not None:
                await asyncio.get_running_loop().run_in_executor(self._pool, self._close, slot,
                                                                 backend)
            slot.state = ModelState.UNLOADED
            slot.reserved = False
            slot.unloads += 1
            slot.evictions += int(evicted)

        await self._transition(slot, ModelState.UNLOADING, work())

    def _close(self, slot: ModelSlot, backend: Backend) -> None:
        backend.close()
        if self._drop_pages:
            _dontneed(slot.path)
            slot.cached_share = self._page_cache(slot.path)

    async def mark_unhealthy(self, name: str, error: str) -> None:
        """A generation failed inside the backend: take the model out (its state may be
        broken) and keep it out for a growing back-off; the others keep serving. Call when
        nobody uses it (the scheduler does, once the failing lease is released)."""
        slot = self.slots[name]
        slot.failures += 1
        slot.last_error = error
        backoff = min(_BACKOFF_BASE_S * 2 ** (slot.failures - 1), _BACKOFF_MAX_S)
        log.error("model %s failed while generating (%s); unhealthy for %.0fs", name, error,
                  backoff)
        while slot.transition is not None:
            await asyncio.shield(slot.transition)
        if slot.state is ModelState.READY:
            await self._unload(slot)
        slot.state = ModelState.FAILED
        slot.retry_at_s = self._clock() + backoff

    async def unload(self, name: str) -> bool:
        """Unload an idle model; False if it was not loaded or is in use."""
        slot = self.slots[name]
        if slot.state is not ModelState.READY or slot.in_use:
            return False
        await self._unload(slot)
        return True

    async def close_all(self) -> None:
        for slot in self.slots.values():
            if slot.transition is not None:
                await asyncio.shield(slot.transition)
            if slot.state is ModelState.READY:
                await self._unload(slot)


def _dontneed(path: Path) -> None:
    """Ask the kernel to drop the file's clean, unmapped pages from the page cache."""
    with contextlib.suppress(OSError), path.open("rb") as fh:
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _willneed(path: Path) -> None:
    """Ask the kernel to read the file into the page cache (blocking, returns quickly)."""
    with contextlib.suppress(OSError), path.open("rb") as fh:
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_WILLNEED)


class _NoRoom(Exception):
    pass


class _FileRejected(Exception):
    pass
