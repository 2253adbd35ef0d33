"""Field conditions (calm_edge.field): power mode and frequency caps, thermal trip points
and energy budgets, on fake sysfs trees and fake clocks. Readers, the pure parts (power
state changes, thermal pressure, the pacing controller as a table), Analyze's rescale,
Plan near a trip point, and the loop end to end with fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from calm_edge.analyze import (
    ALL,
    Estimate,
    Health,
    Knowledge,
    PageHinkley,
    Prediction,
    Stat,
    rescale_speeds,
    speed_ratio,
)
from calm_edge.calibration.results import ModeSpeed, summarize
from calm_edge.config import (
    ConfigError,
    EnergyConfig,
    FieldConfig,
    Settings,
    profile_from_mapping,
)
from calm_edge.field import (
    Battery,
    BudgetView,
    FieldMonitor,
    PacingParams,
    PowerState,
    battery_view,
    pace_mode,
    parse_nvpmodel_conf,
    parse_nvpmodel_query,
    parse_nvpmodel_status,
    period_bounds,
    period_ledger,
    period_view,
    power_change,
    read_battery,
    read_cpufreq,
    read_devfreq,
    read_nvpmodel,
    read_thermal,
    thermal_headroom,
    thermal_pressure,
)
from calm_edge.fleet import load_fleet, verify
from calm_edge.metrics import Metrics
from calm_edge.orchestrator import Orchestrator
from calm_edge.plan import (
    BudgetExhausted,
    CandidateInput,
    PlanParams,
    RequestInput,
    Weights,
    plan_request,
)
from calm_edge.runtime import Core, build_core, close_core
from calm_edge.status import field_gauges
from calm_edge.testing.fake_sysfs import FakeSysfs, Policy
from calm_edge.testing.fakes import FakeFactory, FixedClassifier, chat_request, serve_to_end
from tests.conftest import model_entry

# -- fake trees -----------------------------------------------------------------------------

def jetson(tmp_path: Path, mode: str = "25W") -> FakeSysfs:
    """An Orin-like tree: 25 W = 6 cores at 1.5 GHz, 7 W = 4 cores at 1.125 GHz (half)."""
    fs = FakeSysfs(tmp_path / "root")
    fs.power_mode(mode)
    return fs


def set_mode(fs: FakeSysfs, mode: str) -> None:
    fs.power_mode(mode)


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- readers ---------------------------------------------------------------------------------

def test_nvpmodel_parsers() -> None:
    assert parse_nvpmodel_status("pmode:0003 fmode:quiet\n") == 3
    assert parse_nvpmodel_status("garbage") is None
    names, default = parse_nvpmodel_conf(
        "# c\n< POWER_MODEL ID=0 NAME=15W >\nCPU_A78_0 MAX_FREQ 1497600\n"
        "< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n< PM_CONFIG DEFAULT=2 >\n")
    assert names == {0: "15W", 2: "MAXN_SUPER"} and default == 2
    # A recorded `nvpmodel -q` (fan mode first, the id on the line after the name).
    assert parse_nvpmodel_query("NV Fan Mode:cool\nNV Power Mode: MODE_30W_4CORE\n5\n") == \
        ("MODE_30W_4CORE", 5)
    assert parse_nvpmodel_query("NV Power Mode: MAXN\n") == ("MAXN", None)
    assert parse_nvpmodel_query("NVPM ERROR: failed\n") is None


def test_nvpmodel_from_status_file_conf_and_recorded_query(tmp_path: Path) -> None:
    fs = jetson(tmp_path, "7W")
    nvp, notes = read_nvpmodel(fs.root, "var/lib/nvpmodel/status", "etc/nvpmodel.conf")
    assert nvp is not None and (nvp.mode_id, nvp.name, nvp.source) == (3, "7W", "status file")
    assert notes == ()
    fs.remove("etc/nvpmodel.conf")  # no table: the mode goes by its id
    nvp, _ = read_nvpmodel(fs.root, "var/lib/nvpmodel/status", "etc/nvpmodel.conf")
    assert nvp is not None and nvp.name == "mode 3"
    fs.remove("var/lib/nvpmodel/status")
    nvp, _ = read_nvpmodel(fs.root, "var/lib/nvpmodel/status", "etc/nvpmodel.conf",
                           query=lambda: "NV Fan Mode:quiet\nNV Power Mode: 25W\n1\n")
    assert nvp is not None and (nvp.mode_id, nvp.name, nvp.source) == (1, "25W", "nvpmodel -q")


def test_nvpmodel_missing_or_nonsense_turns_power_mode_off_with_a_note(tmp_path: Path) -> None:
    fs = FakeSysfs(tmp_path)
    nvp, notes = read_nvpmodel(fs.root, "var/lib/nvpmodel/status", "etc/nvpmodel.conf")
    assert nvp is None and "not a Jetson" in notes[0] and "no power mode name" in notes[0]
    fs.write("var/lib/nvpmodel/status", "\x00\xff junk")
    nvp, notes = read_nvpmodel(fs.root, "var/lib/nvpmodel/status", "etc/nvpmodel.conf",
                               query=lambda: None)
    assert nvp is None and "names no mode" in notes[0] and "gave no mode" in notes[0]


def test_cpufreq_capacity_counts_online_cpus_and_caps(tmp_path: Path) -> None:
    fs = jetson(tmp_path, "25W")
    cpus, notes = read_cpufreq(fs.root)
    assert notes == () and [p.online_cpus for p in cpus] == [4, 2]
    assert PowerState(cpus=cpus).cpu_capacity_khz == 6 * 1_500_000
    set_mode(fs, "7W")  # cluster 4 offline (empty affected_cpus), cluster 0 capped
    cpus, notes = read_cpufreq(fs.root)
    state = PowerState(cpus=cpus)
    assert notes == () and state.cpu_capacity_khz == 4 * 1_125_000
    assert state.cap_ratios()["cpu"] == pytest.approx(1_125_000 / 1_728_000)


@pytest.mark.parametrize(("max_khz", "hw_khz", "why"), [
    ("1500000", "1000000", "implausible"),   # a cap above the hardware's maximum
    ("-5", "1000000", "implausible"),
    ("fast", "1000000", "not a number"),
])
def test_cpufreq_nonsense_turns_cpu_caps_off(tmp_path: Path, max_khz: str, hw_khz: str,
                                            why: str) -> None:
    fs = jetson(tmp_path)
    fs.write("sys/devices/system/cpu/cpufreq/policy4/scaling_max_freq", max_khz)
    fs.write("sys/devices/system/cpu/cpufreq/policy4/cpuinfo_max_freq", hw_khz)
    cpus, notes = read_cpufreq(fs.root)
    assert cpus == () and why in notes[0] and "CPU frequency caps off" in notes[0]
    cpus, notes = read_cpufreq(tmp_path / "nowhere")
    assert cpus == () and "no sys/devices/system/cpu/cpufreq/policy*" in notes[0]


def test_devfreq_reads_gpu_caps_by_name_and_skips_nonsense(tmp_path: Path) -> None:
    fs = FakeSysfs(tmp_path)
    fs.devfreq("17000000.ga10b", 612_000_000, [306_000_000, 612_000_000, 1_020_000_000])
    fs.devfreq("3d00000.pcie", 500_000_000)  # not a GPU: ignored unless named
    fs.devfreq("57000000.gpu", 9_000_000_000, [76_800_000, 921_600_000])  # above its max
    gpus, notes = read_devfreq(fs.root)
    assert [g.name for g in gpus] == ["17000000.ga10b"]
    assert gpus[0].hw_max_hz == 1_020_000_000 and "57000000.gpu" in notes[0]
    state = PowerState(gpus=gpus)
    assert state.capacity(use_gpu=True) == (612_000_000.0, "gpu")
    assert state.cap_ratios()["gpu"] == pytest.approx(0.6)
    gpus, notes = read_devfreq(fs.root, ["3d00000.pcie", "missing"])
    assert [g.name for g in gpus] == ["3d00000.pcie"] and "missing" in notes[0]


def test_thermal_zones_trip_points_and_junk(tmp_path: Path) -> None:
    fs = FakeSysfs(tmp_path)
    fs.thermal_zone(0, "cpu-thermal", 71.5, [(50.0, "active"), (85.0, "passive"),
                                             (104.5, "critical")])
    fs.thermal_zone(1, "gpu-thermal", 60.0, [(95.0, "passive"), (-273.0, "hot")])
    fs.thermal_zone(2, "junk", -273.15)
    fs.write("sys/class/thermal/thermal_zone3/type", "broken")  # no temp file
    zones, notes = read_thermal(fs.root)
    assert [z.name for z in zones] == ["cpu-thermal", "gpu-thermal"]
    assert [t.kind for t in zones[1].trips] == ["passive"]  # the disabled trip is left out
    assert len(notes) == 2 and any("junk" in n for n in notes)
    h = thermal_headroom(zones, ["passive", "hot", "critical"])
    assert h is not None and (h.zone, h.trip_c, h.trip_kind) == ("cpu-thermal", 85.0, "passive")
    assert h.margin_c == pytest.approx(13.5)
    active = thermal_headroom(zones, ["active"])  # a fan stage, when asked for
    assert active is not None and active.margin_c < 0 and "above" in active.describe()
    assert thermal_headroom(zones, ["passive"], ["gpu-thermal"]).trip_c == 95.0  # type: ignore[union-attr]
    zones, notes = read_thermal(tmp_path / "nowhere")
    assert zones == () and "thermal input off" in notes[0]


def test_thermal_pressure_grows_to_one_at_the_trip_point(tmp_path: Path) -> None:
    fs = FakeSysfs(tmp_path)
    fs.thermal_zone(0, "cpu-thermal", 70.0, [(85.0, "passive")])
    for temp, closeness in ((70.0, None), (80.0, 0.0), (82.5, 0.5), (85.0, 1.0), (90.0, 1.0)):
        fs.temperature(0, temp)
        zones, _ = read_thermal(fs.root)
        p = thermal_pressure(thermal_headroom(zones, ["passive"]), 5.0, 1.5)
        if closeness is None:
            assert p is None
        elif closeness == 0.0:
            assert p is None  # exactly the margin away: not yet
        else:
            assert p is not None and p.closeness == pytest.approx(closeness)
            assert p.extra_energy_weight == pytest.approx(1.5 * closeness)


def test_battery_readings_and_bad_values(tmp_path: Path) -> None:
    fs = FakeSysfs(tmp_path)
    fs.mains()
    bat, notes = read_battery(fs.root)
    assert bat is None and "plugged-in behaviour" in notes[0]
    fs.battery(energy_wh=30.0, energy_full_wh=60.0, power_w=7.5)
    bat, notes = read_battery(fs.root)
    assert bat is not None and notes == () and bat.discharging
    assert (bat.energy_wh, bat.energy_full_wh, bat.capacity_percent, bat.power_w) == \
        (30.0, 60.0, 50.0, 7.5)
    # charge_now x voltage (uAh x uV), as many batteries report it
    fs.remove_battery()
    fs.write("sys/class/power_supply/BAT1/type", "Battery")
    fs.write("sys/class/power_supply/BAT1/status", "Charging")
    fs.write("sys/class/power_supply/BAT1/charge_now", "2000000")     # 2 Ah
    fs.write("sys/class/power_supply/BAT1/voltage_now", "12000000")   # 12 V
    bat, _ = read_battery(fs.root)
    assert bat is not None and bat.energy_wh == pytest.approx(24.0) and not bat.discharging
    # capacity (%) only: needs the profile's capacity
    fs.remove_battery("BAT1")
    fs.battery(capacity_percent=40)
    bat, notes = read_battery(fs.root)
    assert bat is not None and bat.energy_wh is None and "reports no energy" in notes[0]
    bat, _ = read_battery(fs.root, capacity_wh=50.0)
    assert bat is not None and bat.energy_wh == pytest.approx(20.0)
    # nonsense: a capacity of 250 %
    fs.battery(capacity_percent=250, energy_wh=10.0)
    bat, notes = read_battery(fs.root)
    assert bat is not None and bat.capacity_percent is None and "250" in notes[0]
    bat, notes = read_battery(fs.root, name="BAT9")
    assert bat is None and "BAT9" in notes[0]


# -- power state changes and Analyze's rescale -------------------------------------------------

def test_power_change_on_mode_or_caps_beyond_min_change(tmp_path: Path) -> None:
    fs = jetson(tmp_path, "25W")

    def state() -> PowerState:
        nvp, _ = read_nvpmodel(fs.root, "var/lib/nvpmodel/status", "etc/nvpmodel.conf")
        return PowerState(nvp, read_cpufreq(fs.root)[0])

    a = state()
    set_mode(fs, "7W")
    b = state()
    ch = power_change(a, b, use_gpu=False, min_change=0.05)
    assert ch is not None and ch.frequency_ratio == pytest.approx(2.0)
    assert ch.capacity_kind == "cpu" and "25W -> 7W" in ch.describe()
    assert power_change(b, b, use_gpu=False, min_change=0.05) is None
    # A 3% cap change within a mode is noise; 10% is a change.
    fs.cpufreq({0: Policy([0, 1, 2, 3], 1_091_250, 1_728_000), 4: Policy([], 0, 0)})
    assert power_change(b, state(), use_gpu=False, min_change=0.05) is None
    fs.cpufreq({0: Policy([0, 1, 2, 3], 1_012_500, 1_728_000), 4: Policy([], 0, 0)})
    ch = power_change(b, state(), use_gpu=False, min_change=0.05)
    assert ch is not None and ch.old_mode == ch.new_mode == "7W"
    assert ch.frequency_ratio == pytest.approx(1 / 0.9)


def test_rescale_speeds_moves_estimates_and_baselines_at_once() -> None:
    est = Estimate("m", ALL, decode_ms_per_token=Stat(20, 10.0, 4.0),
                   prefill_ms_per_token=Stat(20, 1.0, 0.01), energy_mj_per_token=Stat(5, 3.0))
    dom = Estimate("m", "code", decode_ms_per_token=Stat(8, 12.0, 1.0))
    other = Estimate("o", ALL, decode_ms_per_token=Stat(5, 7.0))
    h = Health("m", detector=PageHinkley(4, 0.1, 0.9, 0.0), healthy_decode_ms=Stat(10, 10.0),
               baseline_decode_ms=9.0)
    k = Knowledge({("m", ALL): est, ("m", "code"): dom, ("o", ALL): other}, {"m": h})
    k2 = rescale_speeds(k, {"m": 2.0})
    e2 = k2.estimate("m", ALL)
    assert e2.decode_ms_per_token == Stat(20, 20.0, 16.0)
    assert e2.prefill_ms_per_token.mean == pytest.approx(2.0)
    assert e2.energy_mj_per_token == est.energy_mj_per_token  # follows the next answers
    assert k2.estimate("m", "code").decode_ms_per_token.mean == 24.0
    assert k2.estimate("o", ALL) == other
    h2 = k2.health_of("m")
    assert h2.healthy_decode_ms.mean == 20.0 and h2.baseline_decode_ms == 18.0
    assert h2.detector == PageHinkley()
    # A guessed factor (the frequency ratio) leaves the estimate few observations' weight.
    k3 = rescale_speeds(k, {"m": 2.0}, guessed={"m"})
    assert k3.estimate("m", ALL).decode_ms_per_token == Stat(2, 20.0, 16.0)
    assert k3.estimate("m", ALL).decode_ms_per_token.update(16.0, 0.2).mean == \
        pytest.approx(20.0 - 4.0 / 3)


def test_speed_ratio_prefers_calibrated_then_measured_then_frequency() -> None:
    assert speed_ratio((10.0, 25.0), (10.0, 30.0), 2.0).source == "calibrated"
    r = speed_ratio((10.0, None), (10.0, 30.0), 2.0)
    assert (r.factor, r.source) == (3.0, "measured")
    assert speed_ratio((None, None), (None, 30.0), 2.0).factor == 2.0
    assert speed_ratio((None, None), (None, None), None).source == "unknown"


# -- Plan near a thermal trip point ------------------------------------------------------------

def cand(name: str, q: float, latency_ms: float, energy_j: float) -> CandidateInput:
    pred = Prediction(quality=q, quality_std=0.05, ttft_ms=latency_ms / 10,
                      latency_ms=latency_ms, energy_mj=energy_j * 1000, completion_tokens=50,
                      observations=50, model_observations=50, degraded=False)
    return CandidateInput(name, True, None, True, 0.0, True, pred, 0)


def test_plan_prefers_cheaper_models_near_a_trip_point_and_says_so(tmp_path: Path) -> None:
    fleet = [cand("small", 0.50, 600, 6), cand("large", 0.87, 6000, 60)]
    balanced = RequestInput("auto", "factual", None, "balanced", Weights(1.0, 0.25, 0.1),
                            20000, 0.0)
    params = PlanParams(explore_epsilon=0.0, probe_degraded_every=0)
    cool = plan_request(balanced, fleet, params, 0.5)
    assert cool.model == "large" and "thermal" not in cool.reason
    fs = FakeSysfs(tmp_path)
    fs.thermal_zone(0, "cpu-thermal", 83.0, [(85.0, "passive")])
    zones, _ = read_thermal(fs.root)
    hot = dataclasses.replace(balanced, thermal=thermal_pressure(
        thermal_headroom(zones, ["passive"]), 5.0, 1.5))
    plan = plan_request(hot, fleet, params, 0.5)
    assert plan.model == "small"
    assert "near a thermal trip point (cpu-thermal at 83.0 C, 2.0 C below its passive trip " \
           "point (85.0 C)): preferring cheaper models (small over large)" in plan.reason
    # Barely inside the margin, the nudge is too small to change this choice; the reason
    # still says the pressure is there.
    fs.temperature(0, 80.1)
    zones, _ = read_thermal(fs.root)
    mild = dataclasses.replace(balanced, thermal=thermal_pressure(
        thermal_headroom(zones, ["passive"]), 5.0, 1.5))
    plan = plan_request(mild, fleet, params, 0.5)
    assert plan.model == "large" and "preferring cheaper models;" in plan.reason


# -- the pacing controller (pure) ---------------------------------------------------------------

PACING = PacingParams(balanced_below=0.9, eco_below=0.6, hysteresis=0.1)


def view(pace: float, remaining_wh: float = 10.0) -> BudgetView:
    """A day's 24 Wh budget (1 W even rate) with `pace` times that affordable."""
    remaining_s = remaining_wh * 3600 / pace if pace > 0 else 3600.0
    return BudgetView("period", 24.0, remaining_wh, remaining_s, 86400.0, None, remaining_s)


@pytest.mark.parametrize(("pace", "previous", "expected"), [
    (1.5, None, "quality"), (1.0, None, "quality"), (0.9, None, "quality"),
    (0.89, None, "balanced"), (0.6, None, "balanced"), (0.59, None, "eco"), (0.1, None, "eco"),
    # stepping down happens at once ...
    (0.85, "quality", "balanced"), (0.5, "quality", "eco"), (0.5, "balanced", "eco"),
    # ... stepping up needs the hysteresis above the threshold
    (0.95, "balanced", "balanced"), (0.99, "balanced", "balanced"), (1.0, "balanced", "quality"),
    (0.65, "eco", "eco"), (0.7, "eco", "balanced"), (1.2, "eco", "quality"),
    (0.95, "quality", "quality"), (0.65, "balanced", "balanced"),
    # a mode outside the ladder (fast) counts as none
    (0.7, "fast", "balanced"),
])
def test_pace_mode_table(pace: float, previous: str | None, expected: str) -> None:
    p = pace_mode(view(pace), previous, PACING)  # type: ignore[arg-type]
    assert p is not None and p.mode == expected and not p.exhausted
    assert p.pace == pytest.approx(pace)


def test_pace_mode_exhausted_and_nothing_to_pace() -> None:
    p = pace_mode(view(1.0, remaining_wh=0.0), "quality", PACING)
    assert p is not None and p.exhausted and p.mode == "eco"
    assert p.reason == "energy budget exhausted (24.0 Wh budget of this period spent)"
    assert pace_mode(None, "eco", PACING) is None


def test_period_budget_prorates_a_late_start_and_resets_each_period() -> None:
    day = 86400.0
    midnight = 20_000 * day  # a UTC midnight; local time = UTC here
    assert period_bounds(midnight + 3600 * 13.5, "day", 0.0) == (midnight, midnight + day)
    assert period_bounds(midnight + 5400, "hour", 0.0) == (midnight + 3600, midnight + 7200)
    assert period_bounds(midnight + 3600, "day", 7200.0)[0] == midnight - 7200  # UTC+2
    # Started at noon: half the day's budget for the half left; spend is counted from here.
    led = period_ledger(None, midnight + day / 2, board_wh=5.0, budget_wh=24.0, period="day",
                        utc_offset_s=0.0)
    v = period_view(led, midnight + day / 2, 5.0, None)
    assert (v.budget_wh, v.remaining_wh, v.even_rate_w, v.pace) == (12.0, 12.0, 1.0, 1.0)
    v = period_view(led, midnight + day * 0.75, 5.0 + 9.0, 1.5)   # 9 Wh in 6 h: ahead
    assert v.remaining_wh == pytest.approx(3.0) and v.pace == pytest.approx(0.5)
    assert v.resets_in_s == pytest.approx(day / 4) and v.spend_rate_w == 1.5
    assert period_ledger(led, midnight + day * 0.75, 14.0, 24.0, "day", 0.0) is led
    # The next day starts afresh with the whole budget.
    nxt = period_ledger(led, midnight + day + 60, 20.0, 24.0, "day", 0.0)
    v = period_view(nxt, midnight + day + 60, 20.0, None)
    assert v.budget_wh == 24.0 and v.remaining_wh == 24.0 and nxt.counted_from_s == midnight + day


def test_battery_budget_capacity_falling_charging_and_missing() -> None:
    def bat(wh: float, status: str = "Discharging") -> Battery:
        return Battery("BAT0", status, None, wh, 100.0, None)

    kw = {"hours": 10.0, "reserve_percent": 10.0, "spend_rate_w": None}
    v, d = battery_view(bat(90.0), None, 0.0, **kw)  # type: ignore[arg-type]
    assert d is not None and v is not None and d.start_wh == 90.0
    assert (v.budget_wh, v.remaining_wh, v.even_rate_w, v.pace) == (80.0, 80.0, 8.0, 1.0)
    # Falling: 40 Wh in 2 h (twice the even rate): the pace drops and the mode with it.
    v, d = battery_view(bat(50.0), d, 7200.0, **kw)  # type: ignore[arg-type]
    assert v is not None and v.pace == pytest.approx((40 / 8) / 8)
    assert pace_mode(v, "quality", PACING).mode == "balanced"  # type: ignore[union-attr]
    # Down to the reserve: exhausted.
    v, d = battery_view(bat(10.0), d, 9000.0, **kw)  # type: ignore[arg-type]
    assert v is not None and v.exhausted
    # Charging: plugged-in behaviour, and the next discharge starts afresh.
    assert battery_view(bat(12.0, "Charging"), d, 9500.0, **kw) == (None, None)  # type: ignore[arg-type]
    assert battery_view(None, d, 9500.0, **kw) == (None, None)  # type: ignore[arg-type]


# -- FieldMonitor ----------------------------------------------------------------------------

def monitor(fs: FakeSysfs, clock: FakeClock, *, board: list[float] | None = None,
            **energy: object) -> FieldMonitor:
    return FieldMonitor(FieldConfig(poll_s=1.0), EnergyConfig(**energy),  # type: ignore[arg-type]
                        sysfs_root=fs.root, clock=clock, wall_clock=clock,
                        board_energy_wh=(lambda: board[0]) if board is not None else None,
                        utc_offset_s=lambda _: 0.0)


def test_field_monitor_polls_at_most_every_poll_s_and_notes_what_is_off(tmp_path: Path,
                                                                         ) -> None:
    fs = jetson(tmp_path, "25W")
    clock = FakeClock()
    mon = monitor(fs, clock)
    a = mon.poll()
    assert a.power is not None and a.power.mode == "25W"
    assert any("thermal input off" in n for n in a.notes)  # this tree has no zones
    set_mode(fs, "7W")
    clock.t += 0.5
    assert mon.poll() is a  # cached within poll_s
    clock.t += 0.6
    b = mon.poll()
    assert b is not a and b.power is not None and b.power.mode == "7W"
    assert mon.poll(force=True) is not b
    # `nvpmodel -q` runs only where the status file fails, at most every 30 s.
    calls: list[float] = []

    def query() -> str:
        calls.append(clock.t)
        return "NV Power Mode: 25W\n1\n"

    q_mon = FieldMonitor(FieldConfig(poll_s=0.0), EnergyConfig(), sysfs_root=fs.root,
                         clock=clock, wall_clock=clock, nvpmodel_query=query)
    assert q_mon.poll().power.mode == "7W" and calls == []  # type: ignore[union-attr]
    fs.remove("var/lib/nvpmodel/status")
    for _ in range(3):
        clock.t += 10
        assert q_mon.poll().power.nvpmodel.source == "nvpmodel -q"  # type: ignore[union-attr]
    assert len(calls) == 1
    clock.t += 30
    q_mon.poll()
    assert len(calls) == 2
    # Nothing readable at all: the power input is off, not a crash.
    bare = monitor(FakeSysfs(tmp_path / "bare"), clock).poll()
    assert bare.power is None and bare.budget is None
    assert any("nvpmodel" in n for n in bare.notes) and any("cpufreq" in n for n in bare.notes)
    status = bare.to_status()
    assert status["power"] is None and status["notes"] == list(bare.notes)


def test_field_monitor_battery_spend_rate_and_a_battery_that_disappears(tmp_path: Path,
                                                                       ) -> None:
    fs = FakeSysfs(tmp_path)
    fs.battery(energy_wh=50.0, energy_full_wh=50.0)
    clock = FakeClock()
    mon = monitor(fs, clock, battery=True, battery_hours=10.0, battery_reserve_percent=10.0)
    first = mon.poll()
    assert first.budget is not None and first.budget.kind == "battery"
    assert first.budget.spend_rate_w is None  # one reading: no rate yet
    clock.t += 1800
    fs.battery(energy_wh=47.0, energy_full_wh=50.0)  # 3 Wh in half an hour
    b = mon.poll().budget
    assert b is not None and b.spend_rate_w == pytest.approx(6.0)
    assert b.remaining_wh == pytest.approx(42.0) and b.remaining_s == pytest.approx(9.5 * 3600)
    fs.remove_battery()
    clock.t += 10
    gone = mon.poll()
    assert gone.budget is None and gone.battery is None
    assert any("plugged-in behaviour" in n for n in gone.notes)


def test_field_monitor_period_budget_from_the_board_meter(tmp_path: Path) -> None:
    clock = FakeClock(20_000 * 86400.0)  # midnight
    board = [100.0]
    mon = monitor(FakeSysfs(tmp_path), clock, board=board, budget_wh=24.0)
    b = mon.poll().budget
    assert b is not None and (b.kind, b.budget_wh, b.remaining_wh) == ("period", 24.0, 24.0)
    clock.t += 3600
    board[0] += 2.0  # twice the even rate for an hour
    b = mon.poll().budget
    assert b is not None and b.remaining_wh == pytest.approx(22.0)
    assert b.spend_rate_w == pytest.approx(2.0) and b.pace == pytest.approx(22 / 23)
    no_meter = monitor(FakeSysfs(tmp_path), clock, budget_wh=24.0).poll()
    assert no_meter.budget is None and any("no board energy meter" in n
                                           for n in no_meter.notes)


# -- config ------------------------------------------------------------------------------

def test_config_field_and_energy_sections_are_checked() -> None:
    p = profile_from_mapping({"energy": {"budget_wh": 40, "period": "hour"},
                              "field": {"thermal_margin_c": 3}}, where="p.toml")
    assert (p.energy.budget_wh, p.energy.period, p.field.thermal_margin_c) == (40.0, "hour", 3.0)
    with pytest.raises(ConfigError, match=r"p.toml: \[energy\] pace_eco_below: must be below"):
        profile_from_mapping({"energy": {"pace_eco_below": 0.9}}, where="p.toml")
    with pytest.raises(ConfigError, match=r"\[field\] thermal_trip_types: unknown trip type"):
        profile_from_mapping({"field": {"thermal_trip_types": ["warm"]}}, where="p.toml")
    with pytest.raises(ConfigError, match=r"\[energy\] period"):
        profile_from_mapping({"energy": {"period": "week"}}, where="p.toml")
    with pytest.raises(ConfigError, match="CALM_EDGE_ENERGY_BUDGET_WH"):
        profile_from_mapping({}, where="p.toml", env={"CALM_EDGE_ENERGY_BUDGET_WH": "-1"})


# -- the loop with fakes --------------------------------------------------------------------

def three_model_fleet(tmp_path: Path, tiny_gguf: Path) -> tuple[Path, Path]:
    """'large' (best), 'mid', 'small' (cheapest): the same tiny file, told apart by their
    fake speeds."""
    models = tmp_path / "fieldmodels"
    models.mkdir()
    for name in ("large", "mid", "small"):
        shutil.copy(tiny_gguf, models / f"{name}.gguf")
    fleet = tmp_path / "fieldfleet.toml"
    fleet.write_text(
        'default_model = "large"\n'
        + model_entry("large", "large.gguf", models / "large.gguf", quality="{ code = 0.85 }")
        + model_entry("mid", "mid.gguf", models / "mid.gguf", quality="{ code = 0.75 }")
        + model_entry("small", "small.gguf", models / "small.gguf", quality="{ code = 0.60 }"))
    for spec in load_fleet(fleet).models:
        verify(models, spec)
    return fleet, models


SPEEDS = {"large": 30.0, "mid": 12.0, "small": 4.0}
LOOP = "[loop]\nexplore_epsilon = 0.0\nprobe_degraded_every = 0\n"


class FieldLoop:
    def __init__(self, make_settings: Callable[..., Settings], tmp_path: Path, tiny_gguf: Path,
                 fs: FakeSysfs, extra: str = "", *, board: list[float] | None = None,
                 clock: FakeClock | None = None) -> None:
        fleet, models = three_model_fleet(tmp_path, tiny_gguf)
        self.settings = make_settings(LOOP + extra,
                                      paths={"fleet": str(fleet), "models_dir": str(models)})
        self.factory = FakeFactory(answer_tokens=20, sim_token_ms=dict(SPEEDS))
        self.clock = clock or FakeClock()
        self.fs = fs
        p = self.settings.profile
        self.field = FieldMonitor(p.field, p.energy, sysfs_root=fs.root, clock=self.clock,
                                  wall_clock=self.clock, utc_offset_s=lambda _: 0.0,
                                  board_energy_wh=(lambda: board[0]) if board else None)
        self.core: Core | None = None
        self.i = 0

    async def start(self) -> Orchestrator:
        self.core = build_core(self.settings, load_fleet(self.settings.fleet_path),
                               self.factory, FixedClassifier("code"), memory_probe=lambda: 0,
                               rng=random.Random(1), budget_bytes=1 << 30, field=self.field)
        await self.core.residency.scan()
        return self.core.orchestrator

    async def ask(self, model: str = "auto", **kw: object):  # type: ignore[no-untyped-def]
        assert self.core is not None
        self.i += 1
        self.clock.t += 2.0  # past poll_s: every request reads the tree
        return await serve_to_end(self.core.orchestrator,
                                  chat_request(f"r{self.i}", "code: sort", model=model,
                                               **kw))  # type: ignore[arg-type]

    async def warm_up(self) -> None:
        for name in SPEEDS:  # every model measured: predictions come from estimates
            for _ in range(4):
                await self.ask(model=name)

    def predicted_decode_ms(self, model: str) -> float:
        assert self.core is not None
        return self.core.orchestrator.knowledge.estimate(model, ALL).decode_ms_per_token.mean

    async def stop(self) -> None:
        assert self.core is not None
        await close_core(self.core)


def test_loop_rescales_every_speed_estimate_at_once_on_a_power_mode_change(
        make_settings: Callable[..., Settings], tmp_path: Path, tiny_gguf: Path) -> None:
    fs = jetson(tmp_path, "25W")

    async def main() -> None:
        loop = FieldLoop(make_settings, tmp_path, tiny_gguf, fs)
        orch = await loop.start()
        await loop.warm_up()
        assert loop.predicted_decode_ms("mid") == pytest.approx(12.0)
        # nvpmodel drops to 7 W: half the CPU capacity, and the fakes run half as fast.
        set_mode(fs, "7W")
        for m in SPEEDS:
            loop.factory.sim_token_ms[m] = SPEEDS[m] * 2
        first = await loop.ask()
        # Rescaled before this request was planned, for every model, not only the one
        # that answered; no drift alarm (the slowdown was expected).
        for m in SPEEDS:
            assert loop.predicted_decode_ms(m) == pytest.approx(SPEEDS[m] * 2, rel=0.01)
        assert not orch.knowledge.health_of(first.model).degraded
        ev = orch.rescales[0]
        assert ev["change"].startswith("power mode 25W -> 7W")
        assert {v["source"] for v in ev["models"].values()} == {"frequency"}
        assert ev["models"]["large"]["factor"] == pytest.approx(2.0)
        status = orch.field_status()
        assert status is not None and status["power"]["nvpmodel"]["name"] == "7W"
        assert status["speed_state"] == fs_key(fs)
        await loop.stop()

    asyncio.run(main())


def test_loop_a_misjudged_frequency_ratio_is_corrected_within_a_few_answers(
        make_settings: Callable[..., Settings], tmp_path: Path, tiny_gguf: Path) -> None:
    """Decode often slows less than the clocks (memory-bound): 1.6x for a 2x capacity
    drop. The guessed rescale weighs like 2 observations, so 3 answers bring the estimate
    within 10% (the estimate's full weight would need 5)."""
    fs = jetson(tmp_path, "25W")

    async def main() -> None:
        loop = FieldLoop(make_settings, tmp_path, tiny_gguf, fs)
        await loop.start()
        await loop.warm_up()
        set_mode(fs, "7W")
        loop.factory.sim_token_ms["mid"] = SPEEDS["mid"] * 1.6
        await loop.ask(model="mid")
        assert loop.predicted_decode_ms("mid") > SPEEDS["mid"] * 1.6 * 1.1
        for _ in range(2):
            await loop.ask(model="mid")
        assert loop.predicted_decode_ms("mid") == pytest.approx(SPEEDS["mid"] * 1.6, rel=0.1)
        await loop.stop()

    asyncio.run(main())


def fs_key(fs: FakeSysfs) -> str:
    nvp, _ = read_nvpmodel(fs.root, "var/lib/nvpmodel/status", "etc/nvpmodel.conf")
    return PowerState(nvp, read_cpufreq(fs.root)[0]).key


def test_loop_uses_the_measured_ratio_back_in_a_known_power_state(
        make_settings: Callable[..., Settings], tmp_path: Path, tiny_gguf: Path) -> None:
    """The frequency ratio says 2x; the models really run 1.6x slower at 7 W. After the
    loop measured both states, the next change uses the measured ratio."""
    fs = jetson(tmp_path, "25W")

    async def main() -> None:
        loop = FieldLoop(make_settings, tmp_path, tiny_gguf, fs)
        orch = await loop.start()
        await loop.warm_up()
        set_mode(fs, "7W")
        for m in SPEEDS:
            loop.factory.sim_token_ms[m] = SPEEDS[m] * 1.6
        for _ in range(3):
            await loop.ask()
        for name in SPEEDS:
            for _ in range(5):
                await loop.ask(model=name)
        set_mode(fs, "25W")
        for m in SPEEDS:
            loop.factory.sim_token_ms[m] = SPEEDS[m]
        await loop.ask()
        back = orch.rescales[0]["models"]
        assert {v["source"] for v in back.values()} == {"measured"}
        assert back["mid"]["factor"] == pytest.approx(1 / 1.6, rel=0.05)
        set_mode(fs, "7W")
        await loop.ask()
        again = orch.rescales[0]["models"]
        assert again["small"]["source"] == "measured"
        assert loop.predicted_decode_ms("small") == pytest.approx(4.0 * 1.6, rel=0.05)
        await loop.stop()

    asyncio.run(main())


def test_loop_calibrated_ratio_per_power_state(
        make_settings: Callable[..., Settings], tmp_path: Path, tiny_gguf: Path) -> None:
    """Calibration times each model in each power state (item speed@<state>); a change
    between two calibrated states rescales by the model's own calibrated ratio."""
    from calm_edge.knowledge import KnowledgeStore

    fs = jetson(tmp_path, "25W")

    async def main() -> None:
        loop = FieldLoop(make_settings, tmp_path, tiny_gguf, fs)
        store = KnowledgeStore(tmp_path / "k.db", retention_days=1, max_requests=1000)
        await store.open()
        loop.core = build_core(loop.settings, load_fleet(loop.settings.fleet_path),
                               loop.factory, FixedClassifier("code"), memory_probe=lambda: 0,
                               rng=random.Random(1), budget_bytes=1 << 30, field=loop.field,
                               store=store)
        await loop.core.residency.scan()
        orch, cal = loop.core.orchestrator, loop.core.calibrator
        assert cal is not None
        orch.observe_field()
        s25 = await cal.measure_speed("mid")
        assert s25 is not None and s25.decode_ms_per_token == pytest.approx(12.0)
        assert s25.capacity == 9_000_000 and s25.capacity_kind == "cpu"
        set_mode(fs, "7W")
        loop.factory.sim_token_ms["mid"] = 12.0 * 2.5  # slower than the clocks say
        loop.clock.t += 5
        orch.observe_field()
        await cal.measure_speed("mid")
        results = await cal.results()
        assert set(results["mid"].speeds_by_mode) == {fs_key(fs), orch.rescales[0]["from"]}
        assert "speeds_by_mode" in results["mid"].to_status()
        orch.apply_calibration(results)
        # Before any answer here, the prior is the calibrated speed in this state.
        assert orch._speed_prior("mid", "code").decode_ms_per_token == pytest.approx(30.0)
        await loop.warm_up()  # at 7 W
        set_mode(fs, "25W")
        loop.factory.sim_token_ms["mid"] = 12.0
        loop.clock.t += 5
        orch.observe_field()
        ev = orch.rescales[0]["models"]
        assert ev["mid"]["source"] == "calibrated" and ev["mid"]["factor"] == pytest.approx(0.4)
        assert ev["large"]["source"] == "frequency"  # neither calibrated nor seen at 25 W
        assert loop.predicted_decode_ms("mid") == pytest.approx(12.0, rel=0.01)
        await loop.stop()
        store.close()

    asyncio.run(main())


def test_loop_near_a_trip_point_routes_to_a_cheaper_model(
        make_settings: Callable[..., Settings], tmp_path: Path, tiny_gguf: Path) -> None:
    fs = jetson(tmp_path, "25W")
    fs.thermal_zone(0, "cpu-thermal", 60.0, [(50.0, "active"), (85.0, "passive")])

    async def main() -> None:
        loop = FieldLoop(make_settings, tmp_path, tiny_gguf, fs)
        orch = await loop.start()
        await loop.warm_up()
        cool = await loop.ask(mode="quality")
        assert cool.model == "large" and "thermal" not in cool.reason
        fs.temperature(0, 84.5)
        hot = await loop.ask(mode="quality")
        assert hot.model != "large"
        assert "near a thermal trip point (cpu-thermal at 84.5 C, 0.5 C below its passive " \
               "trip point (85.0 C)): preferring cheaper models" in hot.reason
        assert f"({hot.model} over large)" in hot.reason
        status = orch.field_status()
        assert status is not None and status["thermal"]["pressure"] == pytest.approx(0.9)
        assert status["thermal"]["closest_trip"]["margin_c"] == pytest.approx(0.5)
        await loop.stop()

    asyncio.run(main())


def test_loop_energy_pacing_sets_the_effective_mode_and_calm_mode_still_wins(
        make_settings: Callable[..., Settings], tmp_path: Path, tiny_gguf: Path) -> None:
    fs = FakeSysfs(tmp_path / "root")
    fs.battery(energy_wh=100.0, energy_full_wh=100.0)
    extra = "[energy]\nbattery = true\nbattery_hours = 10.0\nbattery_reserve_percent = 10.0\n"

    async def main() -> None:
        loop = FieldLoop(make_settings, tmp_path, tiny_gguf, fs, extra)
        orch = await loop.start()
        await loop.warm_up()
        a = await loop.ask()
        assert a.mode == "quality" and a.model == "large"
        assert a.reason.startswith("energy pacing: quality mode (")
        # An hour later 45 Wh are gone (5x the even rate): pace 0.56, eco for requests
        # naming no mode.
        loop.clock.t += 3600
        fs.battery(energy_wh=55.0, energy_full_wh=100.0)
        b = await loop.ask()
        assert b.mode == "eco" and b.model == "small"
        assert "energy pacing: eco mode (45.0 Wh left for 9.0 h, pace 0.56" in b.reason
        c = await loop.ask(mode="quality")  # the request's own mode wins
        assert c.mode == "quality" and c.model == "large"
        # On external power: plugged-in behaviour (the profile's default mode).
        fs.battery(energy_wh=55.0, energy_full_wh=100.0, status="Charging")
        d = await loop.ask()
        assert d.mode == "balanced" and "energy" not in d.reason
        status = orch.field_status()
        assert status is not None and status["energy"]["kind"] is None
        assert status["energy"]["effective_mode"] == "balanced"
        await loop.stop()

    asyncio.run(main())


@pytest.mark.parametrize("on_exhausted", ["eco", "refuse"])
def test_loop_exhausted_budget_eco_only_or_refused(
        make_settings: Callable[..., Settings], tmp_path: Path, tiny_gguf: Path,
        on_exhausted: str) -> None:
    fs = FakeSysfs(tmp_path / "root")
    board = [0.0]
    clock = FakeClock(20_000 * 86400.0)  # midnight: a whole day's budget
    extra = f'[energy]\nbudget_wh = 24.0\non_exhausted = "{on_exhausted}"\n'

    async def main() -> None:
        loop = FieldLoop(make_settings, tmp_path, tiny_gguf, fs, extra, board=board,
                         clock=clock)
        orch = await loop.start()
        await loop.warm_up()
        board[0] = 25.0  # the day's budget is spent
        if on_exhausted == "eco":
            a = await loop.ask(mode="quality")
            assert a.mode == "eco" and a.model == "small"
            assert "energy budget exhausted (24.0 Wh budget of this period spent): eco only " \
                   "(calm.mode quality overridden)" in a.reason
        else:
            with pytest.raises(BudgetExhausted) as e:
                await loop.ask(mode="quality")
            assert "requests are refused ([energy] on_exhausted = 'refuse')" in str(e.value)
            assert e.value.retry_after_s is not None and 0 < e.value.retry_after_s < 86400
            from calm_edge.server.app import _to_api_error

            err = _to_api_error(e.value)
            assert err.status == 503 and err.code == "energy_budget_exhausted"
            assert int(err.headers["Retry-After"]) == math.ceil(e.value.retry_after_s)
        # Status and /metrics show the budget, the spend rate and the effective mode.
        status = orch.field_status()
        assert status is not None
        e_ = status["energy"]
        assert (e_["kind"], e_["exhausted"], e_["effective_mode"]) == ("period", True, "eco")
        assert e_["budget_wh"] == pytest.approx(24.0, abs=0.01)  # counted from the 1st poll
        assert e_["spend_rate_w"] is not None and e_["spend_rate_w"] > 0
        m = Metrics()
        field_gauges(m, status)
        text = m.render()
        assert 'calm_edge_effective_mode{mode="eco"} 1.0' in text
        assert 'calm_edge_effective_mode{mode="quality"} 0.0' in text
        assert f"calm_edge_energy_budget_watt_hours {e_['budget_wh']}" in text
        assert "calm_edge_energy_budget_exhausted 1.0" in text
        assert "calm_edge_energy_spend_rate_watts" in text
        # The next day the budget starts afresh.
        clock.t += 86400
        b = await loop.ask()
        assert b.mode == "quality"
        await loop.stop()

    asyncio.run(main())


def test_calibration_speed_items_summarize_per_power_state() -> None:
    speeds = {"25W|cpu=9000000kHz|gpu=-Hz": ModeSpeed(1.0, 12.0, 9e6, "cpu")}
    cal = summarize("m", "sha", "dev", None, [], complete=True, quick=False, finished_ts=1.0,
                    speeds_by_mode=speeds)
    assert cal.speeds_by_mode == speeds
    assert ModeSpeed.from_json(speeds["25W|cpu=9000000kHz|gpu=-Hz"].to_json()) == \
        speeds["25W|cpu=9000000kHz|gpu=-Hz"]
    with pytest.raises(ValueError, match="without decode"):
        ModeSpeed.from_json({"prefill_ms_per_token": 1.0})


def test_daemon_field_status_metrics_and_a_refusal_over_the_socket(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """The daemon wires the field monitor to its sysfs root: /calm/status and /metrics show
    the power mode, the battery budget and the effective mode; with the battery at its
    reserve and on_exhausted = "refuse", a request gets 503 with the reason and
    Retry-After; on external power it is served again."""
    from calm_edge.testing.fakes import ConstantPowerReader
    from tests.conftest import run_daemon, uds_client

    fs = jetson(tmp_path, "7W")
    fs.thermal_zone(0, "cpu-thermal", 55.0, [(85.0, "passive")])
    fs.battery(energy_wh=5.0, energy_full_wh=50.0)  # under the 10% reserve
    s = make_settings('[field]\npoll_s = 0.0\n[energy]\nbattery = true\n'
                      'on_exhausted = "refuse"\n')
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    with run_daemon(s, FakeFactory(answer_tokens=3), classifier=FixedClassifier("code"),
                    power_reader=ConstantPowerReader(), sysfs_root=fs.root,
                    outcome_model=None, acceptors={}, housekeeping_interval_s=0.05), \
            uds_client(s) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "energy_budget_exhausted"
        assert "battery at its reserve" in err["message"] and "refused" in err["message"]
        assert r.headers["Retry-After"] == "60"
        field = c.get("/calm/status").json()["field"]
        assert field["power"]["nvpmodel"]["name"] == "7W"
        assert field["thermal"]["closest_trip"]["margin_c"] == pytest.approx(30.0)
        assert field["energy"]["kind"] == "battery" and field["energy"]["exhausted"]
        assert field["battery"]["capacity_percent"] == 10.0
        from calm_edge.field.report import field_lines

        lines = field_lines(field)
        assert lines[0].startswith("field: power mode 7W · cpu caps 65% · cpu-thermal 30.0 C "
                                   "below its passive trip (85 C) · effective mode eco "
                                   "(battery budget: ")
        assert lines[0].endswith("; EXHAUSTED)")
        metrics = c.get("/metrics").text
        assert 'calm_edge_power_mode_info{mode="7W"} 1.0' in metrics
        assert "calm_edge_energy_budget_exhausted 1.0" in metrics
        assert 'calm_edge_effective_mode{mode="eco"} 1.0' in metrics
        fs.battery(energy_wh=5.0, energy_full_wh=50.0, status="Charging")
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert c.get("/calm/status").json()["field"]["energy"]["exhausted"] is False
