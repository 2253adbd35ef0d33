"""RAM accounting: process memory probes and the eviction policy (pure).

The residency manager charges each loaded model its footprint and keeps the sum within
the profile's budget. Which models to evict is decided here, without side effects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MemoryProbe = Callable[[], int]


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


_libc: Any = None


def release_free_heap() -> None:
    """Return free heap pages to the OS (glibc malloc_trim); no-op elsewhere. Blocking, ms.

    glibc raises its mmap threshold after large frees, so a closed model's KV cache and
    compute buffers would stay in RSS without this.
    """
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim  # noqa: B018 - probe: musl and others lack it
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


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
