"""Overhead of the energy integrator's sampling thread, as % of one CPU core.

    .venv/bin/python scripts/bench_energy.py [--seconds 3] [--rates 10,100]

For each reader (the one `auto` selects on this machine, and a hwmon reader on a fake
INA3221 tree with the Orin Nano's three rails) and each rate, runs the real sampling thread
for `--seconds` and reports the CPU time that thread used (time.thread_time() measured
inside it) per second of wall time, the CPU time per sample, and the achieved rate. The
target is <= 1 % of one core at the default 10 Hz.

A fake tree lives on a regular filesystem, so its reads cost about what sysfs reads cost
(one pread each) but not the I2C transaction a real INA3221 read may trigger; the driver
caches conversions, so this is usually close.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from calm_edge.config import PowerConfig
from calm_edge.energy import EnergyIntegrator, HwmonReader, PowerReader, select_reader


def fake_ina3221_tree(root: Path) -> None:
    d = root / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"
    d.mkdir(parents=True)
    (d / "name").write_text("ina3221\n")
    for i, (label, mv, ma) in enumerate((("VDD_IN", 5080, 906), ("VDD_CPU_GPU_CV", 5072, 122),
                                         ("VDD_SOC", 5080, 266)), start=1):
        (d / f"in{i}_label").write_text(f"{label}\n")
        (d / f"in{i}_input").write_text(f"{mv}\n")
        (d / f"curr{i}_input").write_text(f"{ma}\n")


def measure(make_reader: Callable[[], PowerReader], rate_hz: float,
            seconds: float) -> dict[str, float]:
    reader = make_reader()
    integ = EnergyIntegrator(reader, rate_hz)
    try:
        t0 = time.monotonic()
        integ.start()
        time.sleep(seconds)
        integ.stop()
        wall_s = time.monotonic() - t0
    finally:
        reader.close()
    cpu_s = integ.sampler_cpu_s
    n = max(1, integ.samples_taken)
    return {"cpu_pct": 100.0 * cpu_s / wall_s, "us_per_sample": 1e6 * cpu_s / n,
            "achieved_hz": integ.samples_taken / wall_s, "errors": float(integ.read_errors)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="run per case (default 3)")
    ap.add_argument("--rates", default="10,100", help="sample rates in Hz (default 10,100)")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    auto = select_reader(PowerConfig())
    auto_name = f"auto -> {auto.source} ({'measured' if auto.measured else 'estimated'})"
    auto.close()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fake_ina3221_tree(root)
        cases: list[tuple[str, Callable[[], PowerReader]]] = [
            (auto_name, lambda: select_reader(PowerConfig())),
            ("hwmon, fake INA3221 (3 rails)",
             lambda: HwmonReader(sysfs_root=root, rails=["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"],
                                 total_rail="VDD_IN")),
        ]
        print(f"sampling-thread overhead, {args.seconds:g} s per case "
              "(CPU time of the thread / wall time; % of one core)")
        print(f"{'reader':<36} {'rate':>7} {'achieved':>9} {'CPU/sample':>11} {'overhead':>9}")
        for name, make in cases:
            for rate in rates:
                m = measure(make, rate, args.seconds)
                flag = "" if rate != 10.0 or m["cpu_pct"] <= 1.0 else "  > 1% target!"
                print(f"{name:<36} {rate:>5g}Hz {m['achieved_hz']:>7.1f}Hz "
                      f"{m['us_per_sample']:>9.0f}us {m['cpu_pct']:>8.3f}%{flag}")
                if m["errors"]:
                    print(f"  ({m['errors']:.0f} failed reads)")


if __name__ == "__main__":
    main()
