"""Board power estimated from CPU (and optionally GPU) utilization: the fallback source.

Model (linear in utilization, the usual first-order model of a CPU-bound board):

    power_mw = idle_power_mw
             + (active_power_mw - idle_power_mw) × u_cpu
             + gpu_active_power_mw × u_gpu

- `u_cpu` is the system-wide CPU utilization over the interval since the previous read,
  from the first line of `<root>/proc/stat`: busy = user + nice + system + irq + softirq,
  total = busy + idle + iowait + steal (steal: time the hypervisor gave to others, not
  power burnt here). It is raised to this process's own utilization, Δprocess CPU time /
  (Δt × CPUs), when that is higher (the process's time is part of the system's, so this
  only matters when /proc/stat is unreadable or virtualized).
- `u_gpu` is `<root>/<gpu_load_path>` / `gpu_load_full_scale` (a Jetson's devfreq `load`
  file counts per mille), only when the profile sets `gpu_load_path`.
- `idle_power_mw` / `active_power_mw` come from the device profile (estimates, not
  measurements). The profile's `rails` / `total_rail` name physical rails and do not apply.

Rails reported: "baseline" (the idle power), "cpu" (the CPU-dependent part) and, when
configured, "gpu"; they add up to the total. Like RAPL, a sample is the mean over the
interval since the previous read, stamped at its midpoint; the constructor primes the
counters. A read with no new /proc/stat ticks (reads closer than one USER_HZ tick) repeats
the previous utilization. `measured` is False: every figure derived from it is an estimate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from calm_edge.energy.base import PowerSample, SysfsValue, WarnOnce, log, parse_number


def parse_proc_stat_cpu(text: str) -> tuple[float, float]:
    """(busy_ticks, total_ticks) from /proc/stat's aggregate "cpu" line. Raises ValueError."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            fields = [float(v) for v in line.split()[1:]]
            if len(fields) < 4:
                raise ValueError(f"short cpu line: {line!r}")
            fields += [0.0] * (8 - len(fields))
            user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
            busy = user + nice + system + irq + softirq
            return busy, busy + idle + iowait + steal
    raise ValueError("no aggregate 'cpu' line")


class CpuTimeEstimator:
    """Estimated board power from CPU (and GPU) utilization. Not measured.

    Blocking but cheap (one pread of /proc/stat, plus the GPU load file when configured);
    one thread at a time. `process_cpu_s` (default `time.process_time`, CPU seconds of all
    threads of this process) and `cpu_count` are injectable for tests.
    """

    source = "estimate"
    measured = False

    def __init__(self, *, idle_power_mw: float, active_power_mw: float,
                 sysfs_root: Path = Path("/"), clock: Callable[[], float] = time.monotonic,
                 process_cpu_s: Callable[[], float] = time.process_time,
                 cpu_count: int | None = None, gpu_load_path: str = "",
                 gpu_load_full_scale: float = 1000.0,
                 gpu_active_power_mw: float = 0.0) -> None:
        self._idle_mw = float(idle_power_mw)
        self._span_mw = max(0.0, float(active_power_mw) - float(idle_power_mw))
        self._clock = clock
        self._process_cpu_s = process_cpu_s
        self._cpus = max(1, cpu_count or os.cpu_count() or 1)
        self._warn = WarnOnce("estimate")
        self.notes: list[str] = []
        if active_power_mw < idle_power_mw:
            self.notes.append("estimate: active_power_mw < idle_power_mw; the CPU term is 0")
        self._stat = SysfsValue(sysfs_root / "proc/stat")
        self._gpu: SysfsValue | None = None
        self._gpu_scale = float(gpu_load_full_scale) if gpu_load_full_scale > 0 else 1000.0
        self._gpu_mw = float(gpu_active_power_mw)
        if gpu_load_path:
            self._gpu = SysfsValue(sysfs_root / gpu_load_path.lstrip("/"))
            try:
                parse_number(self._gpu.read_text())
            except (OSError, ValueError) as e:
                self.notes.append(f"estimate: GPU load file {self._gpu.path} unusable ({e}); "
                                  "GPU term is 0")
                self._gpu.close()
                self._gpu = None
        self.rails: tuple[str, ...] = ("baseline", "cpu") + (("gpu",) if self._gpu else ())
        t_s = clock()
        self._last_t_s = t_s
        self._last_proc_s = process_cpu_s()
        self._last_stat = self._read_stat()
        if self._last_stat is None:
            self.notes.append(f"estimate: {self._stat.path} unreadable; using this "
                              "process's CPU time only (misses other processes)")
        self._last_u_cpu = 0.0
        self.selection_notes: tuple[str, ...] = tuple(self.notes)
        log.info("power estimate: idle %.0f mW + %.0f mW x CPU utilization%s over %d CPUs",
                 self._idle_mw, self._span_mw,
                 f" + {self._gpu_mw:.0f} mW x GPU load" if self._gpu else "", self._cpus)

    def _read_stat(self) -> tuple[float, float] | None:
        try:
            return parse_proc_stat_cpu(self._stat.read_text(size=4096))
        except OSError as e:
            self._warn("cpu", "proc/stat unreadable", e.strerror or str(e))
        except ValueError as e:
            self._warn("cpu", "proc/stat unparsable", str(e))
        return None

    def _u_gpu(self) -> float | None:
        if self._gpu is None:
            return None
        try:
            return min(1.0, max(0.0, parse_number(self._gpu.read_text()) / self._gpu_scale))
        except OSError as e:
            self._warn("gpu", "load unreadable", e.strerror or str(e))
        except ValueError as e:
            self._warn("gpu", "load not a number", str(e))
        return None

    def read(self) -> PowerSample:
        """Mean estimated power since the previous read, stamped at the interval midpoint.
        Never raises for bad inputs: it falls back as documented in the module."""
        t_s = self._clock()
        proc_s = self._process_cpu_s()
        stat = self._read_stat()
        dt_s = t_s - self._last_t_s
        u_cpu = self._last_u_cpu
        stamp_s = (self._last_t_s + t_s) / 2.0
        if dt_s <= 0:
            stamp_s = t_s
        elif stat is not None and self._last_stat is not None:
            d_total = stat[1] - self._last_stat[1]
            if d_total > 0:
                u_proc = max(0.0, proc_s - self._last_proc_s) / (dt_s * self._cpus)
                u_sys = (stat[0] - self._last_stat[0]) / d_total
                u_cpu = min(1.0, max(0.0, u_sys, u_proc))
                self._last_t_s, self._last_proc_s, self._last_stat = t_s, proc_s, stat
            # else: no tick since the previous read: repeat the previous utilization and
            # keep the interval open so the next read spans at least one tick.
        else:  # /proc/stat unreadable: this process's CPU time is all we know
            u_cpu = min(1.0, max(0.0, proc_s - self._last_proc_s) / (dt_s * self._cpus))
            self._last_t_s, self._last_proc_s = t_s, proc_s
            if stat is not None:
                self._last_stat = stat
        self._last_u_cpu = u_cpu
        rails = {"baseline": self._idle_mw, "cpu": self._span_mw * u_cpu}
        if self._gpu is not None:
            rails["gpu"] = self._gpu_mw * (self._u_gpu() or 0.0)
        return PowerSample(stamp_s, sum(rails.values()), rails)

    def close(self) -> None:
        self._stat.close()
        if self._gpu is not None:
            self._gpu.close()

