"""RAM accounting: process and device memory probes, and the eviction policy (pure).

The residency manager charges each loaded model its footprint and keeps the sum within
the profile's budget. Which models to evict is decided here, without side effects.

Process RSS does not see memory a GPU driver allocates (CUDA buffers of offloaded layers).
Where layers run on a GPU, a `DeviceMemoryReader` adds what RSS misses: on a unified-memory
board (Jetson) the GPU's memory is the board's RAM, so the drop of MemAvailable around a
load counts it; on a discrete NVIDIA GPU, NVML reports the device memory in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import mmap
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

log = logging.getLogger("calm_edge.memory")

MemoryProbe = Callable[[], int]
DeviceMemorySource = Literal["auto", "memavailable", "nvml", "none"]


def process_rss_bytes(proc_root: Path = Path("/proc"), pid: int | str = "self") -> int:
    """Resident set of a process (anonymous + mapped file pages), in bytes; 0 if unknown."""
    try:
        for line in (proc_root / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = int((proc_root / str(pid) / "statm").read_text().split()[1])
        import resource

        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


class DeviceMemoryReader(Protocol):
    """Memory in use that process RSS may not show, in bytes (device-wide)."""

    source: str       # "memavailable" (unified memory) or "nvml" (a discrete GPU)
    unified: bool     # True: the reading includes the process's RSS growth as well

    def used_bytes(self) -> int | None:
        """Bytes in use now, or None when the reading failed."""
        ...


@dataclass
class MemAvailableReader:
    """MemTotal - MemAvailable from `<root>/proc/meminfo`: on a unified-memory board the GPU
    allocates from the same RAM, so this sees CUDA buffers that RSS does not. Device-wide:
    other processes' allocations during a load are charged to the model too (an upward
    error only; the estimate stays the floor)."""

    root: Path = Path("/")
    source: str = "memavailable"
    unified: bool = True

    def used_bytes(self) -> int | None:
        total = avail = None
        try:
            for line in (self.root / "proc" / "meminfo").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key == "MemTotal":
                    total = int(rest.split()[0]) * 1024
                elif key == "MemAvailable":
                    avail = int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        if total is None or avail is None or not 0 <= avail <= total:
            return None
        return total - avail


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                ("used", ctypes.c_ulonglong)]


class NvmlReader:
    """Device memory in use on one NVIDIA GPU, through NVML (libnvidia-ml, which the driver
    installs). Construct with `NvmlReader.open()`; None where NVML is not there."""

    source = "nvml"
    unified = False

    def __init__(self, lib: Any, handle: Any) -> None:
        self._lib, self._handle = lib, handle

    @classmethod
    def open(cls, index: int = 0) -> NvmlReader | None:
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
            if lib.nvmlInit_v2() != 0:
                return None
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
                return None
        except (OSError, AttributeError):
            return None
        return cls(lib, handle)

    def used_bytes(self) -> int | None:
        info = _NvmlMemory()
        try:
            if self._lib.nvmlDeviceGetMemoryInfo(self._handle, ctypes.byref(info)) != 0:
                return None
        except (OSError, AttributeError):
            return None
        return int(info.used)


def select_device_memory(source: DeviceMemorySource, *, unified_board: bool,
                         root: Path = Path("/"),
                         nvml: Callable[[], DeviceMemoryReader | None] = NvmlReader.open,
                         ) -> DeviceMemoryReader | None:
    """The reader for memory RSS misses: `auto` takes MemAvailable on a unified-memory
    board, else NVML where a driver answers, else none."""
    if source == "none":
        return None
    if source == "memavailable" or (source == "auto" and unified_board):
        return MemAvailableReader(root)
    reader = nvml()
    if reader is None and source == "nvml":
        log.warning("memory.gpu_memory_source = nvml, but NVML is not available; GPU "
                    "memory is charged from the estimate only")
    return reader


def model_growth_bytes(rss_delta: int, device_delta: int | None,
                       reader: DeviceMemoryReader | None) -> int:
    """A model's memory from the growth of RSS and of the device reading around its load:
    unified memory sees both in one number; a discrete GPU adds to RSS."""
    rss_delta = max(rss_delta, 0)
    if reader is None or device_delta is None:
        return rss_delta
    device_delta = max(device_delta, 0)
    return max(rss_delta, device_delta) if reader.unified else rss_delta + device_delta


def page_cache_share(path: Path) -> float | None:
    """Share of `path`'s pages in the page cache now (mincore over a read-only mapping), or
    None where that cannot be read. Blocking, about 1 ms per GiB."""
    libc = _load_libc()
    if not libc:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 1.0
        page = os.sysconf("SC_PAGE_SIZE")
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            pages = (size + page - 1) // page
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
                return None
            return float((np.frombuffer(memoryview(vec), dtype=np.uint8) & 1).mean())
        finally:
            libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))
    finally:
        os.close(fd)


_libc: Any = None


def _load_libc() -> Any:
    """glibc (or the platform's libc) through ctypes; False where it cannot be loaded."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _libc = False
    return _libc


def release_free_heap() -> None:
    """Return free heap pages to the OS (glibc malloc_trim); no-op elsewhere. Blocking, ms.

    glibc raises its mmap threshold after large frees, so a closed model's KV cache and
    compute buffers would stay in RSS without this.
    """
    libc = _load_libc()
    trim = getattr(libc, "malloc_trim", None) if libc else None  # musl and others lack it
    if trim is not None:
        trim(0)


@dataclass(frozen=True)
class ResidentModel:
    """What the eviction policy sees of one loaded model."""

    name: str
    charged_bytes: int
    in_use: bool
    pinned: bool
    last_used_s: float        # monotonic time of the last request that used it
    expected_use: float = 0.0  # forecast share of the coming requests it will serve, 0..1
    reload_s: float = 1.0      # what it costs to bring it back (measured load time)

    @property
    def keep_value(self) -> float:
        """Expected reload time saved per GiB kept: use x reload cost / size."""
        return self.expected_use * self.reload_s / max(self.charged_bytes / (1 << 30), 1e-3)


def choose_evictions(resident: Sequence[ResidentModel], need_bytes: int,
                     budget_bytes: int) -> list[str] | None:
    """Names to evict so that `need_bytes` more fits in `budget_bytes`; None if impossible.

    Pure. Never picks a model in use or pinned. Evicts the lowest keep value first (unlikely
    to be needed soon, cheap to reload, large), then least recently used, then by name, and
    stops as soon as the new model fits.
    """
    used = sum(m.charged_bytes for m in resident)
    if used + need_bytes <= budget_bytes:
        return []
    candidates = sorted((m for m in resident if not m.in_use and not m.pinned),
                        key=lambda m: (m.keep_value, m.last_used_s, m.name))
    chosen: list[str] = []
    for m in candidates:
        chosen.append(m.name)
        used -= m.charged_bytes
        if used + need_bytes <= budget_bytes:
            return chosen
    return None
