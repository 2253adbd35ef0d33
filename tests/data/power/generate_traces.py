"""Regenerate the synthetic power traces in this folder (deterministic: fixed seeds).

    .venv/bin/python tests/data/power/generate_traces.py

The traces are synthetic but shaped like public figures (see README.md): an idle phase, a
short prefill spike, a decode plateau with ripple, a ramp back to idle. Values are integer
mW (what jtop and the INA3221 driver report) or integer µJ counters (RAPL).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
RATE_HZ = 10.0


def _phase(t_s: float, idle: float, prefill: float, decode: float, *, start_s: float,
           prefill_s: float, end_s: float, ramp_s: float) -> float:
    """Piecewise power shape of one LLM request: idle → prefill → decode → ramp → idle."""
    if t_s < start_s:
        return idle
    if t_s < start_s + prefill_s:
        return prefill
    if t_s < end_s:
        return decode
    if t_s < end_s + ramp_s:
        return decode + (idle - decode) * (t_s - end_s) / ramp_s
    return idle


def _rows(duration_s: float) -> list[float]:
    n = round(duration_s * RATE_HZ)
    return [round(k / RATE_HZ, 3) for k in range(n + 1)]


def _write(path: Path, meta: Mapping[str, str], header: list[str],
           rows: list[list[object]]) -> None:
    lines = [f"# {k}: {v}" for k, v in meta.items()]
    lines.append(",".join(header))
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _jetson(path: Path, meta: Mapping[str, str], rails: Mapping[str, tuple[float, float, float]],
            total: Callable[[dict[str, int]], int], seed: int) -> None:
    rng = random.Random(seed)
    rows: list[list[object]] = []
    for t in _rows(30.0):
        ripple = math.sin(2 * math.pi * 1.7 * t)  # token-rate ripple during decode
        values: dict[str, int] = {}
        for name, (idle, prefill, decode) in rails.items():
            p = _phase(t, idle, prefill, decode, start_s=5.0, prefill_s=0.6, end_s=20.0,
                       ramp_s=1.0)
            busy = 5.6 <= t < 20.0
            p *= 1.0 + (0.025 * ripple if busy else 0.0) + rng.gauss(0.0, 0.01)
            values[name] = round(p)
        rows.append([t, total(values), *values.values()])
    _write(path, meta, ["t_s", "total_mw", *(f"{r}_mw" for r in rails)], rows)


def orin_nano() -> None:
    # (idle, prefill, decode) mW per rail; VDD_IN is the module input = the total.
    rails = {"VDD_IN": (4600.0, 13800.0, 11800.0),
             "VDD_CPU_GPU_CV": (620.0, 7200.0, 5600.0),
             "VDD_SOC": (1350.0, 2500.0, 2250.0)}
    _jetson(HERE / "jetson-orin-nano-ina3221.csv",
            {"source": "hwmon", "device": "Jetson Orin Nano 8GB devkit, 15 W mode (synthetic)",
             "measured": "true", "total_rail": "VDD_IN",
             "workload": "idle 5 s; one llama.cpp CUDA request: 0.6 s prefill, 14.4 s decode; "
                         "1 s ramp; idle"},
            rails, lambda v: v["VDD_IN"], seed=5)


def agx_orin() -> None:
    rails = {"VDD_GPU_SOC": (3300.0, 24000.0, 17500.0),
             "VDD_CPU_CV": (850.0, 3200.0, 2400.0),
             "VIN_SYS_5V0": (3700.0, 4800.0, 4500.0),
             "VDDQ_VDD2_1V8AO": (600.0, 3400.0, 2900.0)}
    _jetson(HERE / "jetson-agx-orin-ina3221.csv",
            {"source": "jtop", "device": "Jetson AGX Orin 64GB devkit, MAXN (synthetic)",
             "measured": "true", "total_rail": "(none: total = sum of the rails)",
             "workload": "idle 5 s; one llama.cpp CUDA request: 0.6 s prefill, 14.4 s decode; "
                         "1 s ramp; idle"},
            rails, lambda v: sum(v.values()), seed=7)


RAPL_MAX_UJ = {"package-0": 262143328850, "dram": 65712999613}
RAPL_UNIT_UJ = 1e6 / 2**14  # 61.03515625 µJ: the usual RAPL energy status unit


def rapl() -> None:
    rng = random.Random(11)
    zones = {"package-0": (5500.0, 31000.0, 27000.0), "dram": (1400.0, 3100.0, 2800.0)}
    # package-0 starts 60 J below its range, so it wraps about 6 s into the burst.
    exact = {"package-0": RAPL_MAX_UJ["package-0"] - 60e6, "dram": 1_234_567_890.0}
    rows: list[list[object]] = []
    prev_t = 0.0
    for t in _rows(20.0):
        if t > 0:
            for name, (idle, prefill, decode) in zones.items():
                p = _phase(t, idle, prefill, decode, start_s=4.0, prefill_s=0.5, end_s=14.0,
                           ramp_s=0.5)
                p *= 1.0 + rng.gauss(0.0, 0.015)
                exact[name] += p * (t - prev_t) * 1000.0  # mW × s = mJ; × 1000 = µJ
        counters = []
        for name in zones:
            e = exact[name] % (RAPL_MAX_UJ[name] + 1)
            counters.append(int(e // RAPL_UNIT_UJ * RAPL_UNIT_UJ))
        rows.append([t, *counters])
        prev_t = t
    _write(HERE / "rapl-x86.csv",
           {"source": "rapl", "device": "x86 desktop, 1 socket (synthetic)",
            "measured": "true",
            "max_energy_range_uj": " ".join(f"{k}={v}" for k, v in RAPL_MAX_UJ.items()),
            "columns": "energy_uj counters as read from intel-rapl:0 (package-0) and "
                       "intel-rapl:0:0 (dram); quantized to 2^-14 J",
            "workload": "idle 4 s; CPU llama.cpp request 10 s; idle"},
           ["t_s", "package-0_energy_uj", "dram_energy_uj"], rows)


def estimate() -> None:
    """Replays the estimator on a synthetic /proc/stat: x86-dev profile, 2 CPUs."""
    rng = random.Random(13)
    idle_mw, active_mw, cpus, user_hz = 6000.0, 24000.0, 2, 100
    busy, total = 52_000, 400_000  # ticks at boot + some uptime
    rows: list[list[object]] = []
    prime = (0.0, busy, total)
    prev_t = 0.0
    for t in _rows(20.0)[1:]:
        ticks = round((t - prev_t) * user_hz * cpus)
        util = 0.95 if 3.0 <= t < 15.0 else 0.05
        b = max(0, min(ticks, round(ticks * util + rng.gauss(0.0, 0.6))))
        busy += b
        total += ticks
        u = b / ticks
        cpu_mw = (active_mw - idle_mw) * u
        rows.append([round((prev_t + t) / 2, 3), round(idle_mw + cpu_mw, 3), idle_mw,
                     round(cpu_mw, 3), t, busy, total, round(u, 4)])
        prev_t = t
    _write(HERE / "estimate-x86-dev.csv",
           {"source": "estimate", "device": "x86-dev profile, 2 CPUs (synthetic /proc/stat)",
            "measured": "false",
            "model": f"idle {idle_mw:g} mW + ({active_mw:g} - {idle_mw:g}) mW x CPU utilization",
            "prime": f"read_t_s={prime[0]} busy_ticks={prime[1]} total_ticks={prime[2]}",
            "columns": "t_s = interval midpoint (estimator stamp); read_t_s, busy_ticks, "
                       "total_ticks = /proc/stat at each read",
            "workload": "idle 3 s; 2-thread CPU decode 12 s; idle"},
           ["t_s", "total_mw", "baseline_mw", "cpu_mw", "read_t_s", "busy_ticks",
            "total_ticks", "cpu_util"], rows)


if __name__ == "__main__":
    orin_nano()
    agx_orin()
    rapl()
    estimate()
