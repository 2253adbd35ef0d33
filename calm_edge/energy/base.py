"""The `PowerReader` Protocol, the sample type, and helpers shared by the power sources.

Contract of every reader:
- `read()` is blocking but short (a few sysfs reads or one dict lookup, well under a
  millisecond) and is called from one thread at a time: the integrator's sampling thread.
- It returns instantaneous board power in mW stamped with the reader's injected monotonic
  clock, or raises `PowerReadError` when this one sample cannot be formed (the integrator
  skips it). Bad values on a single rail never raise: that rail is left out of the sample
  and a warning is logged once per rail and problem.
- Construction raises `ReaderUnavailable` when the source does not work on this machine;
  its message says why, and `select_reader` shows it in `selection_notes`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

log = logging.getLogger("calm_edge.energy")

SourceName = Literal["jtop", "hwmon", "rapl", "estimate", "replay"]

# Plausibility bounds for one rail of an edge board (an AGX Orin peaks near 60 W in MAXN;
# an x86 package near a few hundred W). Readings outside them are sensor or parse errors.
MAX_RAIL_POWER_MW = 1_000_000.0  # 1 kW
MAX_RAIL_VOLTAGE_MV = 60_000.0  # 60 V
MAX_RAIL_CURRENT_MA = 100_000.0  # 100 A


class ReaderUnavailable(RuntimeError):
    """This power source does not work here; the message says why (shown in status)."""


class PowerReadError(RuntimeError):
    """One sample could not be formed (e.g. the total rail is unreadable right now)."""


@dataclass(frozen=True)
class PowerSample:
    """Board power at one instant.

    `t_s` is on the reader's monotonic clock (`time.monotonic` unless injected).
    `total_mw` is the whole-board figure the integrator integrates; `rails_mw` holds the
    per-rail figures that were valid in this sample (treat it as read-only).
    """

    t_s: float
    total_mw: float
    rails_mw: Mapping[str, float] = field(default_factory=dict)


def energy_kind(measured: bool) -> str:
    """How every energy figure says where it came from: 'measured' or 'estimated'."""
    return "measured" if measured else "estimated"


@runtime_checkable
class PowerReader(Protocol):
    """A source of instantaneous power. See the module docstring for the contract."""

    # Why this source was chosen and what was tried before it (set by select_reader; shown
    # by describe_reader).
    selection_notes: tuple[str, ...]

    @property
    def source(self) -> str:
        """'jtop', 'hwmon', 'rapl', 'estimate' or 'replay'."""
        ...

    @property
    def measured(self) -> bool:
        """False only for estimates: every energy figure derived from it carries this."""
        ...

    @property
    def rails(self) -> tuple[str, ...]:
        """Names of the rails `read()` reports (a sample may lack a rail that read badly)."""
        ...

    def read(self) -> PowerSample:
        """Blocking, short; one caller thread at a time. May raise PowerReadError."""
        ...

    def close(self) -> None:
        """Release files and connections. Idempotent."""
        ...


def describe_reader(reader: PowerReader) -> dict[str, object]:
    """What status shows about the chosen source: name, measured, rails, selection notes."""
    notes: Sequence[str] = reader.selection_notes
    return {
        "source": reader.source,
        "measured": reader.measured,
        "kind": energy_kind(reader.measured),
        "rails": list(reader.rails),
        "selection_notes": list(notes),
    }


class WarnOnce:
    """Logs a warning the first time a (rail, problem) key is seen, then debug only.

    Used from the sampling thread only; not thread-safe by itself.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, rail: str, problem: str, detail: str) -> None:
        key = (rail, problem)
        if key in self._seen:
            log.debug("%s: %s: %s (%s)", self._prefix, rail, problem, detail)
            return
        self._seen.add(key)
        log.warning("%s: rail %s: %s (%s); skipping it in affected samples "
                    "(logged once)", self._prefix, rail, problem, detail)


class SysfsValue:
    """One sysfs/procfs attribute kept open and re-read with pread(2) at offset 0.

    sysfs and procfs regenerate an attribute on each read at offset 0, so one syscall per
    sample suffices. A failed read closes the descriptor; the next read reopens it.
    Not thread-safe; owned by one reader.
    """

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def read_text(self, size: int = 128) -> str:
        """Raises OSError (missing, permission, device gone)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(self._fd, size, 0)
        except OSError:
            self.close()
            raise
        return data.decode("ascii", errors="replace")

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


def parse_number(text: str) -> float:
    """First whitespace-separated token as a finite float; raises ValueError otherwise."""
    parts = text.split()
    if not parts:
        raise ValueError("empty")
    value = float(parts[0])
    if not math.isfinite(value):
        raise ValueError(f"not finite: {parts[0]!r}")
    return value


def read_text_file(path: Path) -> str | None:
    """A small sysfs file's stripped text, or None when it is absent or unreadable."""
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def unique_name(name: str, taken: Iterable[str]) -> str:
    """`name`, or `name#2`, `name#3`, ... when already taken (two chips, same label)."""
    used = set(taken)
    if name not in used:
        return name
    n = 2
    while f"{name}#{n}" in used:
        n += 1
    return f"{name}#{n}"


def choose_rails(available: Sequence[str], wanted: Sequence[str], total_rail: str,
                 source: str) -> tuple[tuple[str, ...], str, list[str]]:
    """(rails to report, total rail or '', notes) from the profile's `rails`/`total_rail`.

    Pure. Empty `wanted` means every available rail. Raises ReaderUnavailable when none of
    the wanted rails exists. A configured total rail that is absent is dropped with a note
    (the total becomes the sum of the reported rails).
    """
    notes: list[str] = []
    if wanted:
        missing = [r for r in wanted if r not in available]
        rails = tuple(r for r in wanted if r in available)
        if not rails:
            raise ReaderUnavailable(
                f"none of the configured rails {list(wanted)} exist "
                f"(found: {', '.join(available) or 'none'})")
        if missing:
            notes.append(f"{source}: configured rails not found: {', '.join(missing)} "
                         f"(found: {', '.join(available)})")
    else:
        rails = tuple(available)
    if total_rail and total_rail not in available:
        notes.append(f"{source}: total rail {total_rail!r} not found; total = sum of "
                     f"{', '.join(rails)} (may miss parts of the board)")
        total_rail = ""
    return rails, total_rail, notes


def form_total_mw(rails_mw: Mapping[str, float], total_rail: str,
                  summed: Sequence[str]) -> float:
    """The sample's total: the total rail's reading, else the sum of the valid `summed` rails.

    Raises PowerReadError when the total rail, or every summed rail, read badly. A summed
    rail that read badly is left out of this sample's sum (its reading is unknown, and the
    usual cause, a near-zero rail reading slightly negative, contributes ~0 anyway).
    """
    if total_rail:
        value = rails_mw.get(total_rail)
        if value is None:
            raise PowerReadError(f"total rail {total_rail} has no valid reading")
        return value
    present = [rails_mw[r] for r in summed if r in rails_mw]
    if not present:
        raise PowerReadError(f"no valid reading on any of {', '.join(summed)}")
    return float(sum(present))


def check_power_mw(value: float) -> str | None:
    """Why a rail power reading is implausible, or None when it is fine."""
    if not math.isfinite(value):
        return "not a finite number"
    if value < 0:
        return "negative power"
    if value > MAX_RAIL_POWER_MW:
        return f"above {MAX_RAIL_POWER_MW:g} mW"
    return None
