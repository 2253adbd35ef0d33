"""Power readers against fake sysfs trees, the integrator on replayed traces, fair splits.

Every reader and the integrator take an injected clock; nothing here sleeps except the one
test of the real sampling thread (~0.1 s).
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from calm_edge.config import PowerConfig, profile_from_mapping
from calm_edge.energy import (
    CpuTimeEstimator,
    EnergyIntegrator,
    HwmonReader,
    JtopReader,
    PowerReader,
    PowerReadError,
    PowerSample,
    PowerTrace,
    RaplReader,
    ReaderUnavailable,
    ReplayReader,
    RequestWindow,
    attribute_energy,
    describe_reader,
    parse_proc_stat_cpu,
    select_reader,
    split_energy,
)

DATA = Path(__file__).parent / "data" / "power"
NANO_RAILS = ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
AGX_RAILS = ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]


class FakeClock:
    def __init__(self, t_s: float = 100.0) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s

    def set(self, t_s: float) -> None:
        self.t_s = t_s


def _write(path: Path, text: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")


# -- fake sysfs trees ------------------------------------------------------------------------


def make_ina3221(root: Path, device: str, hwmon: str, labels: Sequence[str | None],
                 *, class_link: bool = True) -> Path:
    """An INA3221 as a Jetson exposes it: under the I2C driver, linked from /sys/class."""
    d = root / "sys/bus/i2c/drivers/ina3221" / device / "hwmon" / hwmon
    _write(d / "name", "ina3221")
    for i, label in enumerate(labels, start=1):
        if label is not None:
            _write(d / f"in{i}_label", label)
        _write(d / f"in{i}_input", 5000)
        _write(d / f"curr{i}_input", 0)
        _write(d / f"in{i + 3}_input", 1200)  # shunt voltage (µV): never a rail
    _write(d / "in7_label", "sum of shunt voltages")
    _write(d / "in7_input", 3600)
    _write(d / "curr4_input", 0)  # summation channel: never a rail
    if class_link:
        link = root / "sys/class/hwmon" / hwmon
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(d)
    return d


def set_channel(d: Path, index: int, volt_mv: object, curr_ma: object) -> None:
    _write(d / f"in{index}_input", volt_mv)
    _write(d / f"curr{index}_input", curr_ma)


def nano_tree(root: Path) -> Path:
    d = make_ina3221(root, "1-0040", "hwmon1", NANO_RAILS)
    set_channel(d, 1, 5080, 906)  # VDD_IN 4602.48 mW
    set_channel(d, 2, 5072, 122)  # VDD_CPU_GPU_CV 618.784 mW
    set_channel(d, 3, 5080, 266)  # VDD_SOC 1351.28 mW
    return d


def make_rapl_zone(root: Path, zone: str, name: str, energy_uj: int,
                   max_uj: int | None = 262143328850) -> Path:
    d = root / "sys/class/powercap" / zone
    _write(d / "name", name)
    _write(d / "energy_uj", energy_uj)
    if max_uj is not None:
        _write(d / "max_energy_range_uj", max_uj)
    return d


def write_proc_stat(root: Path, busy: float, total: float) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    idle = total - busy
    _write(root / "proc/stat", f"cpu  {int(busy)} 0 0 {int(idle)} 0 0 0 0 0 0\n"
                               f"cpu0 {int(busy)} 0 0 {int(idle)} 0 0 0 0 0 0\nintr 12345 0 0")


class FakeJtop:
    """jtop's public surface the reader uses: start(), close(), is_alive(), `power`."""

    def __init__(self, power: Mapping[str, Any], fail: Exception | None = None) -> None:
        self.power = power
        self.fail = fail
        self.started = self.closed = False

    def start(self) -> None:
        if self.fail is not None:
            raise self.fail
        self.started = True

    def is_alive(self) -> bool:
        return self.started and not self.closed

    def close(self) -> None:
        self.closed = True


class JtopException(Exception):
    """Stands in for jtop.JtopException (same name, not imported)."""


def jtop_power(vdd_in: float, cpu_gpu: float, soc: float) -> dict[str, Any]:
    def entry(mw: float, volt: int) -> dict[str, Any]:
        return {"online": True, "type": "I2C", "status": "ok", "volt": volt,
                "curr": int(mw * 1000 / volt), "warn": 32760, "crit": 32760,
                "power": int(mw), "avg": int(mw)}

    tot = entry(vdd_in, 5080) | {"name": "VDD_IN"}
    return {"rail": {"VDD_CPU_GPU_CV": entry(cpu_gpu, 5072), "VDD_SOC": entry(soc, 5080)},
            "tot": tot}


# -- hwmon -----------------------------------------------------------------------------------


def test_hwmon_ina3221_reads_rails_and_total_rail(tmp_path: Path) -> None:
    nano_tree(tmp_path)
    clock = FakeClock(7.0)
    r = HwmonReader(sysfs_root=tmp_path, rails=NANO_RAILS, total_rail="VDD_IN", clock=clock)
    try:
        assert isinstance(r, PowerReader)
        assert r.rails == tuple(NANO_RAILS)  # class symlink and I2C path seen once
        s = r.read()
        assert s.t_s == 7.0
        assert s.total_mw == pytest.approx(5080 * 906 / 1000)
        assert s.rails_mw["VDD_CPU_GPU_CV"] == pytest.approx(5072 * 122 / 1000)
        assert s.rails_mw["VDD_SOC"] == pytest.approx(5080 * 266 / 1000)
        set_channel(tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1", 1, 5000, 2400)
        assert r.read().total_mw == pytest.approx(12000.0)  # re-read through the open fd
    finally:
        r.close()


def test_hwmon_agx_orin_sums_rails_and_skips_nc(tmp_path: Path) -> None:
    a = make_ina3221(tmp_path, "1-0040", "hwmon1", AGX_RAILS[:3])
    b = make_ina3221(tmp_path, "1-0041", "hwmon2", ["NC", AGX_RAILS[3], "NC"])
    set_channel(a, 1, 5000, 660)
    set_channel(a, 2, 5000, 170)
    set_channel(a, 3, 5000, 740)
    set_channel(b, 2, 5000, 120)
    r = HwmonReader(sysfs_root=tmp_path)  # no rails, no total: all channels, summed
    try:
        assert r.rails == tuple(AGX_RAILS)
        s = r.read()
        assert s.total_mw == pytest.approx(5 * (660 + 170 + 740 + 120))
        assert "NC" not in s.rails_mw
    finally:
        r.close()


def test_hwmon_ina238_uses_power_file_and_label_fallbacks(tmp_path: Path) -> None:
    for hw, label in (("hwmon3", None), ("hwmon4", "VDD_MAIN")):
        d = tmp_path / "sys/class/hwmon" / hw
        _write(d / "name", "ina238")
        _write(d / "in0_input", 3)  # shunt voltage, mV: not a rail
        _write(d / "in1_input", 12000)
        _write(d / "curr1_input", 1500)
        _write(d / "power1_input", 17_950_000)  # µW: preferred over 12 V × 1.5 A
        _write(d / "temp1_input", 41000)
        if label:
            _write(d / "label", label)
    r = HwmonReader(sysfs_root=tmp_path)
    try:
        assert r.rails == ("ina238@hwmon3", "VDD_MAIN")
        s = r.read()
        assert s.rails_mw == {"ina238@hwmon3": pytest.approx(17950.0),
                              "VDD_MAIN": pytest.approx(17950.0)}
        assert s.total_mw == pytest.approx(35900.0)
    finally:
        r.close()


def test_hwmon_bad_values_skip_the_rail_and_warn_once(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    d = nano_tree(tmp_path)
    r = HwmonReader(sysfs_root=tmp_path, rails=NANO_RAILS, total_rail="VDD_IN",
                    clock=FakeClock())
    caplog.set_level(logging.WARNING, logger="calm_edge.energy")
    try:
        (d / "curr3_input").unlink()  # files open on first read: this one is gone
        assert "VDD_SOC" not in r.read().rails_mw
        for bad in ("garbage", "garbage", -40, 10**9):
            set_channel(d, 3, 5080, bad)
            s = r.read()
            assert "VDD_SOC" not in s.rails_mw
            assert s.total_mw == pytest.approx(5080 * 906 / 1000)
        warnings = [m for m in caplog.messages if "VDD_SOC" in m]
        assert len(warnings) == 4  # unreadable, not a number, negative, implausible: once each
        set_channel(d, 3, 5080, 266)
        assert r.read().rails_mw["VDD_SOC"] == pytest.approx(1351.28)  # recovers
        set_channel(d, 1, "nan", 906)  # the total rail itself: this sample is unusable
        with pytest.raises(PowerReadError):
            r.read()
    finally:
        r.close()


def test_hwmon_unavailable_without_monitors(tmp_path: Path) -> None:
    _write(tmp_path / "sys/class/hwmon/hwmon0/name", "coretemp")
    with pytest.raises(ReaderUnavailable, match="no INA3221/INA238"):
        HwmonReader(sysfs_root=tmp_path)
    nano_tree(tmp_path)
    with pytest.raises(ReaderUnavailable, match="none of the configured rails"):
        HwmonReader(sysfs_root=tmp_path, rails=["VDD_GPU_SOC"])


# -- RAPL ------------------------------------------------------------------------------------


def test_rapl_counter_wrap_midpoint_stamp_and_total(tmp_path: Path) -> None:
    max_uj = 262143328850
    pkg = make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", max_uj - 2_000_000, max_uj)
    core = make_rapl_zone(tmp_path, "intel-rapl:0:0", "core", 10_000_000)
    dram = make_rapl_zone(tmp_path, "intel-rapl:0:1", "dram", 50_000_000)
    _write(tmp_path / "sys/class/powercap/intel-rapl-mmio:0/energy_uj", 1)  # not RAPL MSR
    clock = FakeClock(10.0)
    r = RaplReader(sysfs_root=tmp_path, clock=clock)  # primes the counters at t = 10
    try:
        assert r.rails == ("package-0", "core", "dram")
        _write(pkg / "energy_uj", 3_000_000)  # wrapped: 2 J before the wrap + 3 J after
        _write(core / "energy_uj", 12_000_000)
        _write(dram / "energy_uj", 50_500_000)
        clock.set(10.5)
        s = r.read()
        assert s.t_s == pytest.approx(10.25)  # mean over [10, 10.5], stamped at its middle
        assert s.rails_mw["package-0"] == pytest.approx(10_000.0)  # 5 J / 0.5 s
        assert s.rails_mw["core"] == pytest.approx(4_000.0)
        assert s.rails_mw["dram"] == pytest.approx(1_000.0)
        assert s.total_mw == pytest.approx(11_000.0)  # package + dram; core is inside package
        with pytest.raises(PowerReadError, match="no time elapsed"):
            r.read()
    finally:
        r.close()


def test_rapl_unavailable_without_zones(tmp_path: Path) -> None:
    (tmp_path / "sys/class/powercap").mkdir(parents=True)
    with pytest.raises(ReaderUnavailable, match="no readable RAPL"):
        RaplReader(sysfs_root=tmp_path)


def _rapl_rows() -> tuple[dict[str, str], list[list[float]]]:
    meta: dict[str, str] = {}
    rows: list[list[float]] = []
    for line in (DATA / "rapl-x86.csv").read_text().splitlines():
        if line.startswith("#"):
            k, _, v = line[1:].partition(":")
            meta[k.strip()] = v.strip()
        elif line and not line.startswith("t_s"):
            rows.append([float(x) for x in line.split(",")])
    return meta, rows


def test_rapl_recorded_trace_with_wrap_integrates_within_1_percent(tmp_path: Path) -> None:
    meta, rows = _rapl_rows()
    max_uj = dict(kv.split("=") for kv in meta["max_energy_range_uj"].split())
    pkg = make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", int(rows[0][1]),
                         int(max_uj["package-0"]))
    dram = make_rapl_zone(tmp_path, "intel-rapl:0:0", "dram", int(rows[0][2]),
                          int(max_uj["dram"]))
    clock = FakeClock(rows[0][0])
    reader = RaplReader(sysfs_root=tmp_path, clock=clock)
    integ = EnergyIntegrator(reader, 10.0, clock=clock)
    expected_uj = 0.0
    wraps = 0
    try:
        for prev, row in itertools.pairwise(rows):
            for col, zone, name in ((1, pkg, "package-0"), (2, dram, "dram")):
                delta = row[col] - prev[col]
                if delta < 0:
                    wraps += 1
                    delta += float(max_uj[name])
                expected_uj += delta
                _write(zone / "energy_uj", int(row[col]))
            clock.set(row[0])
            assert integ.sample_once() is not None
        assert wraps == 1
        got = integ.energy_between(rows[0][0], rows[-1][0])
        assert got.measured and got.source == "rapl"
        assert got.energy_mj == pytest.approx(expected_uj / 1000.0, rel=0.01)
        assert integ.read_errors == 0
    finally:
        reader.close()


# -- jtop ------------------------------------------------------------------------------------


def test_jtop_reads_power_dict_and_merges_named_total(tmp_path: Path) -> None:
    fake = FakeJtop(jtop_power(4600, 620, 1350))
    clock = FakeClock(3.0)
    r = JtopReader(lambda: fake, rails=NANO_RAILS, total_rail="VDD_IN", clock=clock)
    assert fake.started
    s = r.read()
    assert s == PowerSample(3.0, 4600.0, {"VDD_IN": 4600.0, "VDD_CPU_GPU_CV": 620.0,
                                          "VDD_SOC": 1350.0})
    fake.power = jtop_power(12100, 5800, 2300)  # jtop refreshed
    assert r.read().total_mw == 12100.0
    fake.power["rail"]["VDD_SOC"]["power"] = "n/a"
    assert "VDD_SOC" not in r.read().rails_mw  # a bad rail is skipped, not fatal
    r.close()
    assert fake.closed
    with pytest.raises(PowerReadError, match="stopped"):
        r.read()


def test_jtop_without_profile_rails_uses_jtop_total(tmp_path: Path) -> None:
    power = jtop_power(4600, 620, 1350)
    del power["tot"]["name"]  # AGX style: jtop's own sum, no named input rail
    power["tot"]["power"] = 1970
    r = JtopReader(lambda: FakeJtop(power), clock=FakeClock())
    try:
        assert r.rails == ("VDD_CPU_GPU_CV", "VDD_SOC")
        assert r.read().total_mw == 1970.0
    finally:
        r.close()


def test_jtop_service_absent_is_unavailable_and_auto_falls_through(tmp_path: Path) -> None:
    made: list[FakeJtop] = []

    def factory() -> FakeJtop:
        made.append(FakeJtop({}, fail=JtopException(
            "The jtop.service is not active. Please run:\nsudo systemctl restart jtop.service")))
        return made[-1]

    with pytest.raises(ReaderUnavailable, match=r"jtop did not start .*JtopException"):
        JtopReader(factory)
    assert made[-1].closed
    write_proc_stat(tmp_path, 1000, 10000)
    cfg = PowerConfig(source="auto", rails=NANO_RAILS, total_rail="VDD_IN")
    reader = select_reader(cfg, sysfs_root=tmp_path, jtop_factory=factory,
                           clock=FakeClock())
    try:
        info = describe_reader(reader)
        assert info["source"] == "estimate" and info["kind"] == "estimated"
        notes = info["selection_notes"]
        assert isinstance(notes, list)
        assert notes[0].startswith("jtop: jtop did not start")
        assert "jtop.service" in notes[0]
        assert notes[1].startswith("hwmon:") and notes[2].startswith("rapl:")
        assert notes[-1].startswith("chosen: estimate (auto")
    finally:
        reader.close()
    with pytest.raises(ReaderUnavailable):
        select_reader(PowerConfig(source="jtop"), sysfs_root=tmp_path, jtop_factory=factory,
                      strict=True)


def test_select_jtop_without_jetson_stats_falls_back_with_note(tmp_path: Path) -> None:
    reader = select_reader(PowerConfig(source="jtop"), sysfs_root=tmp_path)
    try:
        notes = describe_reader(reader)["selection_notes"]
        assert reader.source == "estimate" and not reader.measured
        assert isinstance(notes, list)
        assert any("jetson-stats is not installed" in n for n in notes)
        assert any("falling back to estimate" in n for n in notes)
    finally:
        reader.close()
    assert "jtop" not in sys.modules  # never imported by calm_edge.energy


# -- selection -------------------------------------------------------------------------------


def test_auto_on_bare_root_selects_the_estimator(tmp_path: Path) -> None:
    reader = select_reader(PowerConfig(), sysfs_root=tmp_path, clock=FakeClock())
    try:
        assert isinstance(reader, CpuTimeEstimator)
        assert not reader.measured
        notes = describe_reader(reader)["selection_notes"]
        assert isinstance(notes, list)
        assert [n.split(":")[0] for n in notes[:3]] == ["jtop", "hwmon", "rapl"]
        assert any("proc/stat unreadable" in n for n in notes)
    finally:
        reader.close()


def test_auto_prefers_hwmon_over_rapl(tmp_path: Path) -> None:
    nano_tree(tmp_path)
    make_rapl_zone(tmp_path, "intel-rapl:0", "package-0", 1000)
    cfg = PowerConfig(rails=NANO_RAILS, total_rail="VDD_IN")
    reader = select_reader(cfg, sysfs_root=tmp_path)
    try:
        assert reader.source == "hwmon" and reader.measured
        assert reader.read().total_mw == pytest.approx(4602.48)
    finally:
        reader.close()
    rapl = select_reader(PowerConfig(source="rapl"), sysfs_root=tmp_path)
    try:
        assert rapl.source == "rapl" and rapl.rails == ("package-0",)
    finally:
        rapl.close()


def test_power_config_new_fields_load_from_a_profile() -> None:
    prof = profile_from_mapping({"power": {"history_s": 120, "gpu_load_path": "sys/gpu/load",
                                           "gpu_active_power_mw": 4000}}, where="t.toml")
    assert prof.power.history_s == 120.0
    assert prof.power.gpu_load_path == "sys/gpu/load"
    assert prof.power.gpu_load_full_scale == 1000.0


# -- estimator -------------------------------------------------------------------------------


def test_parse_proc_stat_cpu_counts_busy_and_steal() -> None:
    busy, total = parse_proc_stat_cpu("cpu  10 2 3 80 5 1 1 4 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0")
    assert (busy, total) == (17.0, 106.0)
    with pytest.raises(ValueError):
        parse_proc_stat_cpu("intr 1 2 3")


def test_estimator_follows_a_proc_stat_sequence(tmp_path: Path) -> None:
    clock = FakeClock(0.0)
    cpu_s = [0.0]
    write_proc_stat(tmp_path, 1000, 10_000)
    est = CpuTimeEstimator(idle_power_mw=3000, active_power_mw=15000, sysfs_root=tmp_path,
                           clock=clock, process_cpu_s=lambda: cpu_s[0], cpu_count=2)
    try:
        assert est.rails == ("baseline", "cpu") and est.measured is False
        steps = [(1.0, 50, 200, 0.25), (2.0, 200, 200, 1.0), (3.0, 0, 200, 0.0)]
        busy, total = 1000, 10_000
        for t, d_busy, d_total, util in steps:
            busy, total = busy + d_busy, total + d_total
            write_proc_stat(tmp_path, busy, total)
            clock.set(t)
            s = est.read()
            assert s.t_s == pytest.approx(t - 0.5)
            assert s.total_mw == pytest.approx(3000 + 12000 * util)
            assert s.rails_mw["baseline"] + s.rails_mw["cpu"] == pytest.approx(s.total_mw)
        clock.set(3.05)  # no new tick: repeat the last utilization, keep the interval open
        assert est.read().total_mw == pytest.approx(3000.0)
        cpu_s[0] = 1.75  # this process used 1.75 CPU-s over [3, 4] while /proc/stat says idle
        write_proc_stat(tmp_path, busy, total + 200)
        clock.set(4.0)
        assert est.read().total_mw == pytest.approx(3000 + 12000 * 0.875)
    finally:
        est.close()


def test_estimator_without_proc_stat_uses_process_time_and_gpu_load(tmp_path: Path) -> None:
    _write(tmp_path / "sys/devices/platform/gpu.0/load", 500)
    clock = FakeClock(0.0)
    cpu_s = [0.0]
    est = CpuTimeEstimator(idle_power_mw=4000, active_power_mw=10000, sysfs_root=tmp_path,
                           clock=clock, process_cpu_s=lambda: cpu_s[0], cpu_count=4,
                           gpu_load_path="/sys/devices/platform/gpu.0/load",
                           gpu_active_power_mw=6000)
    try:
        assert est.rails == ("baseline", "cpu", "gpu")
        assert any("proc/stat" in n for n in est.notes)
        cpu_s[0] = 2.0  # 2 CPU-seconds over 1 s on 4 CPUs: 50 %
        clock.set(1.0)
        s = est.read()
        assert s.rails_mw == {"baseline": 4000.0, "cpu": pytest.approx(3000.0),
                              "gpu": pytest.approx(3000.0)}
        _write(tmp_path / "sys/devices/platform/gpu.0/load", "bogus")
        clock.set(2.0)
        assert est.read().rails_mw["gpu"] == 0.0  # unreadable load: GPU term 0, no crash
    finally:
        est.close()


def test_estimator_reproduces_the_recorded_estimate_trace(tmp_path: Path) -> None:
    trace = PowerTrace.from_csv(DATA / "estimate-x86-dev.csv")
    prime = dict(kv.split("=") for kv in trace.meta["prime"].split())
    write_proc_stat(tmp_path, float(prime["busy_ticks"]), float(prime["total_ticks"]))
    clock = FakeClock(float(prime["read_t_s"]))
    est = CpuTimeEstimator(idle_power_mw=6000, active_power_mw=24000, sysfs_root=tmp_path,
                           clock=clock, process_cpu_s=lambda: 0.0, cpu_count=2)
    rows = [ln.split(",") for ln in (DATA / "estimate-x86-dev.csv").read_text().splitlines()
            if ln and not ln.startswith(("#", "t_s"))]
    try:
        for row in rows:
            t_s, total_mw, read_t_s, busy, total = (float(row[i]) for i in (0, 1, 4, 5, 6))
            write_proc_stat(tmp_path, busy, total)
            clock.set(read_t_s)
            s = est.read()
            assert s.t_s == pytest.approx(t_s)
            assert s.total_mw == pytest.approx(total_mw, abs=1e-3)
    finally:
        est.close()
    replay = ReplayReader(trace, clock=FakeClock())
    assert replay.measured is False  # "# measured: false" in the trace


# -- replay ----------------------------------------------------------------------------------


def _steps_trace() -> PowerTrace:
    # 4 W idle, 1 s ramp to 12 W, 5 s plateau, 1 s ramp down, idle: 96 J over [0, 12].
    return PowerTrace((0.0, 2.0, 3.0, 8.0, 9.0, 12.0),
                      (4000.0, 4000.0, 12000.0, 12000.0, 4000.0, 4000.0),
                      {"board": (4000.0, 4000.0, 12000.0, 12000.0, 4000.0, 4000.0)})


def _exact_mj(t0: float, t1: float) -> float:
    """∫ of the steps trace over [t0, t1], by hand: piecewise-linear pieces."""

    def cumulative(t: float) -> float:
        pieces = [(0.0, 2.0, 4000.0, 4000.0), (2.0, 3.0, 4000.0, 12000.0),
                  (3.0, 8.0, 12000.0, 12000.0), (8.0, 9.0, 12000.0, 4000.0),
                  (9.0, 12.0, 4000.0, 4000.0)]
        e = 0.0
        for a, b, pa, pb in pieces:
            if t <= a:
                break
            u = min(t, b)
            p_u = pa + (pb - pa) * (u - a) / (b - a)
            e += (pa + p_u) / 2 * (u - a)
        return e

    return cumulative(t1) - cumulative(t0)


def test_replay_interpolates_linear_hold_and_loop() -> None:
    clock = FakeClock(50.0)
    lin = ReplayReader(_steps_trace(), clock=clock)
    hold = ReplayReader(_steps_trace(), clock=clock, interpolation="hold")
    loop = ReplayReader(_steps_trace(), clock=clock, loop=True)
    clock.set(52.5)
    assert lin.read() == PowerSample(52.5, 8000.0, {"board": 8000.0})
    assert hold.read().total_mw == 4000.0
    clock.set(50.0 + 12.0 + 2.5)
    assert lin.read().total_mw == 4000.0  # past the end: last row holds
    assert loop.read().total_mw == 8000.0
    assert lin.measured and lin.source == "replay"
    assert _steps_trace().energy_mj() == pytest.approx(96_000.0)


def test_replay_rejects_malformed_traces(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("t_s,total_mw\n0,100\n1,oops\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3"):
        PowerTrace.from_csv(p)
    p.write_text("time,power\n0,1\n")
    with pytest.raises(ValueError, match="t_s and total_mw"):
        PowerTrace.from_csv(p)
    with pytest.raises(ValueError, match="must not decrease"):
        PowerTrace((0.0, 2.0, 1.0), (1.0, 1.0, 1.0))


# -- integrator ------------------------------------------------------------------------------


def _drive(integ: EnergyIntegrator, clock: FakeClock, t0: float, t1: float,
           period: float) -> int:
    n = 0
    t = t0
    while t <= t1 + 1e-9:
        clock.set(t)
        integ.sample_once()
        n += 1
        t = t0 + n * period
    return n


def test_integrator_matches_the_analytic_energy_of_a_replayed_trace() -> None:
    clock = FakeClock(0.0)
    integ = EnergyIntegrator(ReplayReader(_steps_trace(), clock=clock), 10.0, clock=clock)
    _drive(integ, clock, 0.0, 12.0, 0.1)
    whole = integ.energy_between(0.0, 12.0)
    assert whole.energy_mj == pytest.approx(96_000.0, rel=1e-9)
    assert whole.energy_j == pytest.approx(96.0)
    assert whole.mean_power_mw == pytest.approx(8000.0)
    assert whole.samples == 121 and whole.complete and whole.measured
    assert whole.kind == "measured" and whole.source == "replay"

    clock = FakeClock(0.0)
    offset = ReplayReader(_steps_trace(), clock=clock)
    integ2 = EnergyIntegrator(offset, 10.0, clock=clock)
    _drive(integ2, clock, 0.037, 12.0, 0.1)  # samples off the trace's corners
    for t0, t1 in ((1.234, 10.567), (2.5, 2.55), (0.04, 3.0), (8.123, 8.923)):
        got = integ2.energy_between(t0, t1).energy_mj
        assert got == pytest.approx(_exact_mj(t0, t1), rel=0.01), (t0, t1)


def test_integrator_window_edges_interpolate_and_hold() -> None:
    clock = FakeClock(0.0)

    class TwoPoints:
        source, measured, rails = "fake", True, ()
        selection_notes: tuple[str, ...] = ()

        def read(self) -> PowerSample:
            return PowerSample(clock(), 1000.0 + 2000.0 * clock(), {})

        def close(self) -> None:
            pass

    integ = EnergyIntegrator(TwoPoints(), 10.0, clock=clock)
    assert integ.energy_between(0.0, 1.0).samples == 0  # nothing sampled yet
    assert not integ.energy_between(0.0, 1.0).complete
    for t in (0.0, 1.0):
        clock.set(t)
        integ.sample_once()
    mid = integ.energy_between(0.25, 0.75)
    assert mid.energy_mj == pytest.approx(1000.0)  # mean 2000 mW × 0.5 s
    assert mid.samples == 0 and mid.complete
    assert integ.energy_between(0.0, 1.0).energy_mj == pytest.approx(2000.0)
    assert integ.energy_between(0.0, 1.0).samples == 2
    tail = integ.energy_between(1.0, 1.1)  # past the newest sample: its power holds
    assert tail.energy_mj == pytest.approx(300.0) and tail.complete
    assert not integ.energy_between(1.0, 5.0).complete  # far past: sampler stalled
    head = integ.energy_between(-0.5, 0.0)  # before the first sample
    assert head.energy_mj == pytest.approx(500.0) and not head.complete
    assert integ.energy_between(0.75, 0.25).energy_mj == pytest.approx(1000.0)
    assert integ.total_energy(now_s=1.0).energy_mj == pytest.approx(2000.0)
    latest = integ.latest()
    assert latest is not None and latest.total_mw == 3000.0


def test_integrator_old_windows_are_flagged_and_totals_survive_the_ring() -> None:
    clock = FakeClock(0.0)
    reader = ReplayReader(PowerTrace((0.0, 100.0), (5000.0, 5000.0), {"r": (5000.0, 5000.0)}),
                          clock=clock)
    integ = EnergyIntegrator(reader, 10.0, clock=clock, history_s=1.0)  # ~12 samples kept
    _drive(integ, clock, 0.0, 20.0, 0.1)
    old = integ.energy_between(2.0, 3.0)
    assert not old.complete and old.energy_mj == pytest.approx(5000.0)  # held power
    recent = integ.energy_between(19.5, 20.0)
    assert recent.complete and recent.energy_mj == pytest.approx(2500.0)
    assert integ.total_energy(now_s=20.0).energy_mj == pytest.approx(100_000.0)
    assert integ.rail_energy_mj()["r"] == pytest.approx(100_000.0)


def test_integrator_on_recorded_jetson_traces_within_1_percent() -> None:
    for name, lo_w, hi_w in (("jetson-orin-nano-ina3221.csv", 10.0, 14.0),
                             ("jetson-agx-orin-ina3221.csv", 20.0, 40.0)):
        trace = PowerTrace.from_csv(DATA / name)
        clock = FakeClock(1000.0)
        integ = EnergyIntegrator(ReplayReader(trace, clock=clock), 10.0, clock=clock)
        _drive(integ, clock, 1000.0 + 0.05, 1000.0 + trace.duration_s, 0.1)
        got = integ.energy_between(1000.0, 1000.0 + trace.duration_s)
        assert got.energy_mj == pytest.approx(trace.energy_mj(), rel=0.01), name
        burst = integ.energy_between(1006.0, 1019.0)  # decoding
        assert lo_w * 1000 <= burst.mean_power_mw <= hi_w * 1000, name
        idle = integ.energy_between(1000.5, 1004.5)
        assert idle.mean_power_mw < 10_000, name
        s = integ.latest()
        assert s is not None
        rails_sum = sum(s.rails_mw.values())
        if "VDD_IN" in s.rails_mw:  # Orin Nano: VDD_IN is the total, the others are inside it
            assert s.total_mw == pytest.approx(s.rails_mw["VDD_IN"])
        else:  # AGX Orin: the total is the sum of the rails
            assert s.total_mw == pytest.approx(rails_sum, rel=1e-6)


def test_integrator_survives_failing_and_bad_reads(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    script: list[object] = [1000.0, PowerReadError("total rail VDD_IN has no valid reading"),
                            OSError(5, "Input/output error"), math.nan, 1000.0, 1000.0]

    class Scripted:
        source, measured, rails = "fake", True, ()
        selection_notes: tuple[str, ...] = ()

        def read(self) -> PowerSample:
            item = script.pop(0)
            if isinstance(item, Exception):
                raise item
            assert isinstance(item, float)
            return PowerSample(clock(), item, {})

        def close(self) -> None:
            pass

    integ = EnergyIntegrator(Scripted(), 10.0, clock=clock)
    caplog.set_level(logging.WARNING, logger="calm_edge.energy")
    for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.4):  # the last repeats a timestamp: dropped
        clock.set(t)
        integ.sample_once()
    assert integ.read_errors == 3 and integ.last_error.startswith("ValueError: non-finite")
    assert integ.samples_taken == 2
    assert integ.energy_between(0.0, 0.4).energy_mj == pytest.approx(400.0)  # gap bridged
    assert len(caplog.messages) == 3


def test_integrator_thread_samples_and_stops() -> None:
    trace = PowerTrace((0.0, 1.0), (2000.0, 2000.0))
    integ = EnergyIntegrator(ReplayReader(trace), 100.0)
    t0 = time.monotonic()
    integ.start()
    integ.start()  # idempotent
    time.sleep(0.1)
    integ.stop()
    t1 = time.monotonic()
    assert not integ.running
    assert integ.samples_taken >= 3
    reading = integ.energy_between(t0, t1)
    assert reading.energy_mj == pytest.approx(2000.0 * (t1 - t0), rel=0.05)
    assert 0.0 <= integ.sampler_cpu_s < (t1 - t0)
    with pytest.raises(ValueError):
        EnergyIntegrator(ReplayReader(trace), 0.0)


# -- fair split ------------------------------------------------------------------------------


def test_split_energy_is_proportional_and_exact() -> None:
    assert split_energy(900.0, [1.0, 2.0]) == pytest.approx([300.0, 600.0])
    assert split_energy(100.0, [0.0, 0.0, 0.0]) == pytest.approx([100 / 3] * 3)
    assert split_energy(5.0, []) == []
    parts = split_energy(1000.0, [0.1, 0.2, 0.3, 0.7])
    assert math.fsum(parts) == 1000.0
    with pytest.raises(ValueError):
        split_energy(1.0, [1.0, -1.0])
    with pytest.raises(ValueError):
        split_energy(1.0, [math.inf])


def test_attribute_energy_shares_overlaps_by_weight_rate() -> None:
    def constant_1w(a: float, b: float) -> float:
        return 1000.0 * (b - a)

    # A runs [0, 2] with 2 CPU-s of work, B runs [1, 3] with 1: in [1, 2] A works at
    # 1 /s and B at 0.5 /s, so A gets 2/3 of that second.
    a, b = attribute_energy([RequestWindow(0.0, 2.0, 2.0), RequestWindow(1.0, 3.0, 1.0)],
                            constant_1w)
    assert a == pytest.approx(1000.0 + 2000.0 / 3)
    assert b == pytest.approx(1000.0 + 1000.0 / 3)
    assert a + b == pytest.approx(3000.0)
    alone = attribute_energy([RequestWindow(0.0, 1.0), RequestWindow(5.0, 6.0, 0.0)],
                             constant_1w)
    assert alone == pytest.approx([1000.0, 1000.0])  # no overlap: each its own window
    assert attribute_energy([RequestWindow(1.0, 1.0)], constant_1w) == [0.0]


def test_readers_close_their_files(tmp_path: Path) -> None:
    nano_tree(tmp_path)
    fds = Path("/proc/self/fd")
    before = len(list(fds.iterdir()))
    r = HwmonReader(sysfs_root=tmp_path, rails=NANO_RAILS, total_rail="VDD_IN")
    r.read()
    assert len(list(fds.iterdir())) == before + 6  # two per rail, kept open for pread
    r.close()
    r.close()  # idempotent
    assert len(list(fds.iterdir())) == before
