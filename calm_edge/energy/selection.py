"""Choosing the power source from the profile: explicit, or `auto` = first that works of
jtop, hwmon, rapl, estimate. Why each earlier source was skipped is logged and kept in the
chosen reader's `selection_notes` (see `describe_reader`) so status can show it.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

from calm_edge.config import PowerConfig
from calm_edge.energy.base import PowerReader, ReaderUnavailable, energy_kind, log
from calm_edge.energy.estimator import CpuTimeEstimator
from calm_edge.energy.hwmon import HwmonReader
from calm_edge.energy.jtop_reader import JtopFactory, JtopReader, default_jtop_factory
from calm_edge.energy.rapl import RaplReader

AUTO_ORDER = ("jtop", "hwmon", "rapl", "estimate")
JTOP_SOCKET = "run/jtop.sock"  # jetson-stats 4.x service socket, relative to the root


def _jtop(cfg: PowerConfig, sysfs_root: Path, jtop_factory: JtopFactory | None,
          clock: Callable[[], float], auto: bool) -> JtopReader:
    factory = jtop_factory
    if factory is None:
        # Checked without importing jtop: the import alone switches multiprocessing to fork.
        if importlib.util.find_spec("jtop") is None:
            raise ReaderUnavailable("jetson-stats is not installed (pip install "
                                    "'calm-edge[jetson]')")
        if auto and not (sysfs_root / JTOP_SOCKET).exists():
            raise ReaderUnavailable(f"jtop.service is not running (no /{JTOP_SOCKET}); "
                                    "start it with: sudo systemctl enable --now jtop.service")
        factory = default_jtop_factory(interval_s=max(0.5, 1.0 / cfg.sample_hz))
    return JtopReader(factory, rails=cfg.rails, total_rail=cfg.total_rail, clock=clock)


def _estimator(cfg: PowerConfig, sysfs_root: Path,
               clock: Callable[[], float]) -> CpuTimeEstimator:
    return CpuTimeEstimator(
        idle_power_mw=cfg.idle_power_mw, active_power_mw=cfg.active_power_mw,
        sysfs_root=sysfs_root, clock=clock, gpu_load_path=cfg.gpu_load_path,
        gpu_load_full_scale=cfg.gpu_load_full_scale,
        gpu_active_power_mw=cfg.gpu_active_power_mw)


def build_reader(name: str, cfg: PowerConfig, *, sysfs_root: Path = Path("/"),
                 jtop_factory: JtopFactory | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 auto: bool = False) -> PowerReader:
    """Construct one named source; raises ReaderUnavailable with the reason."""
    if name == "jtop":
        return _jtop(cfg, sysfs_root, jtop_factory, clock, auto)
    if name == "hwmon":
        return HwmonReader(sysfs_root=sysfs_root, rails=cfg.rails, total_rail=cfg.total_rail,
                           clock=clock)
    if name == "rapl":
        return RaplReader(sysfs_root=sysfs_root, rails=cfg.rails, total_rail=cfg.total_rail,
                          clock=clock)
    if name == "estimate":
        return _estimator(cfg, sysfs_root, clock)
    raise ValueError(f"unknown power source {name!r}")


def select_reader(cfg: PowerConfig, *, sysfs_root: Path = Path("/"),
                  jtop_factory: JtopFactory | None = None,
                  clock: Callable[[], float] = time.monotonic,
                  strict: bool = False) -> PowerReader:
    """The reader the profile asks for. Blocking (probes sysfs, may start a jtop client);
    call once at daemon start, off the event loop if the loop is already running.

    `auto` tries jtop, hwmon, rapl, then the estimator (which always works). An explicit
    source that does not work falls back to the estimator with a note, so a board whose
    jtop.service is down still reports (estimated) energy; with `strict=True` it raises
    ReaderUnavailable instead. The returned reader's `selection_notes` explain the choice.
    """
    auto = cfg.source == "auto"
    order = AUTO_ORDER if auto else (cfg.source,)
    notes: list[str] = []
    for name in order:
        try:
            reader = build_reader(name, cfg, sysfs_root=sysfs_root, jtop_factory=jtop_factory,
                                  clock=clock, auto=auto)
        except ReaderUnavailable as e:
            notes.append(f"{name}: {e}")
            log.info("power source %s skipped: %s", name, e)
            continue
        return _chosen(reader, notes, why="auto" if auto else "profile")
    if strict:
        raise ReaderUnavailable("; ".join(notes))
    log.warning("configured power source %r unavailable; energy will be estimated",
                cfg.source)
    notes.append(f"configured source {cfg.source!r} unavailable: falling back to estimate")
    return _chosen(_estimator(cfg, sysfs_root, clock), notes, why="fallback")


def _chosen(reader: PowerReader, skipped: list[str], why: str) -> PowerReader:
    notes = (*skipped, *reader.selection_notes, f"chosen: {reader.source} ({why}; "
             f"{energy_kind(reader.measured)}; rails: {', '.join(reader.rails) or 'none'})")
    reader.selection_notes = notes
    log.info("power source: %s", notes[-1])
    return reader
