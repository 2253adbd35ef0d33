#!/usr/bin/env python3
"""Field conditions (calm_edge.field), measured with fakes only (no models; well under a
minute):

1. A power mode change: a fake fleet on an Orin-like fake sysfs tree; nvpmodel switches
   25 W -> 7 W mid-run (half the CPU capacity) and every fake model decodes at half speed.
   How many requests until the loop's predicted latency of the answering model is within
   10% of the answer's again: with the power-mode input (every speed estimate rescaled at
   once) and without it (today's drift-only path). Also: a slowdown the frequency ratio
   misjudges (1.6x for a 2x capacity drop), and a return to a state the loop measured.
2. A battery day: a fake battery, a fake clock over 24 h, requests arriving through the day
   (busier at noon); each answer drains the battery by the energy of the model that
   answered, the board idles in between. With energy pacing: the effective mode over time
   (PNG) and how the charge lasts; without (the profile's default mode, quality all day):
   when the battery reaches its reserve, and when it is empty.

    python scripts/bench_field.py [--out docs/bench/field]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calm_edge.config import Settings, load_settings
from calm_edge.field import FieldMonitor
from calm_edge.fleet import Fleet, fleet_from_mapping, verify
from calm_edge.orchestrator import Answer, Orchestrator
from calm_edge.runtime import Core, build_core, close_core
from calm_edge.testing.fake_sysfs import FakeSysfs
from calm_edge.testing.fakes import FakeFactory, FixedClassifier, chat_request, serve_to_end
from calm_edge.testing.tiny_gguf import write_tiny_gguf

# 76 characters: the loop estimates 20 prompt tokens, what the fake backend reports.
PROMPT = "code: write a function that sorts a list of numbers and returns the median!!"
MATCH = 0.10         # a prediction within 10% of the answer's latency matches
SETTLED_RUN = 5      # ... and the loop has settled after this many matches in a row


class Clock:
    """One fake clock for the monitor's polls and the wall (budgets, periods)."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_fleet(tmp: Path, models: Sequence[tuple[str, float]], default: str) -> Fleet:
    gguf = write_tiny_gguf(tmp / "tiny.gguf")
    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    raw = {"default_model": default, "model": [
        {"name": n, "file": "tiny.gguf", "sha256": sha, "size_bytes": gguf.stat().st_size,
         "n_ctx": 512, "quality": {"code": q}} for n, q in models]}
    fleet = fleet_from_mapping(raw, tmp / "fleet.toml")
    for spec in fleet.models:
        verify(tmp, spec)
    return fleet


def make_settings(tmp: Path, **sections: dict[str, str]) -> Settings:
    cli: dict[str, dict[str, str]] = {
        "paths": {"state_dir": str(tmp / "state"), "models_dir": str(tmp)},
        "loop": {"explore_epsilon": "0", "probe_degraded_every": "10"},
        "cache": {"enabled": "false"}}
    for sec, values in sections.items():
        cli.setdefault(sec, {}).update(values)
    return load_settings("x86-dev", env={}, cli=cli)


async def start(settings: Settings, fleet: Fleet, factory: FakeFactory,
                field: FieldMonitor) -> Core:
    core = build_core(settings, fleet, factory, FixedClassifier("code"), budget_bytes=1 << 30,
                      rng=random.Random(0), memory_probe=lambda: 0, field=field)
    await core.residency.scan()
    return core


# -- 1. a power mode change ------------------------------------------------------------------

SPEEDS = {"fast": 10.0, "backup": 14.0}


def prediction_error(a: Answer) -> float:
    predicted = next(float(c["latency_ms"]) for c in a.candidates  # type: ignore[arg-type]
                     if c["model"] == a.model)
    actual = a.stats.total_s * 1000.0
    return abs(predicted - actual) / actual


def until_match(errors: Sequence[float]) -> tuple[int | None, int | None]:
    """(requests until the first prediction within MATCH, until SETTLED_RUN in a row);
    1 = the first request after the change was already predicted right."""
    first = next((i + 1 for i, e in enumerate(errors) if e <= MATCH), None)
    settled = next((i + 1 for i in range(len(errors) - SETTLED_RUN + 1)
                    if all(e <= MATCH for e in errors[i:i + SETTLED_RUN])), None)
    return first, settled


async def mode_change(feature: bool, slowdown: float, *, revisit: bool = False,
                      after: int = 40) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="calm-field-"))
    fleet = make_fleet(tmp, [("fast", 0.80), ("backup", 0.75)], "fast")
    settings = make_settings(tmp, field={"power_mode": str(feature).lower(),
                                         "thermal": "false", "poll_s": "0"})
    fs = FakeSysfs(tmp / "root")
    fs.power_mode("25W")
    clock = Clock()
    p = settings.profile
    field = FieldMonitor(p.field, p.energy, sysfs_root=fs.root, clock=clock, wall_clock=clock)
    factory = FakeFactory(answer_tokens=20, sim_token_ms=dict(SPEEDS))
    core = await start(settings, fleet, factory, field)
    orch = core.orchestrator
    n = 0

    async def ask(model: str = "auto") -> Answer:
        nonlocal n
        n += 1
        clock.t += 1.0
        return await serve_to_end(orch, chat_request(f"r{n}", PROMPT, model=model))

    def switch(mode: str, factor: float) -> None:
        fs.power_mode(mode)
        for m in SPEEDS:
            factory.sim_token_ms[m] = SPEEDS[m] * factor

    for m in SPEEDS:  # every model measured at 25 W
        for _ in range(6):
            await ask(m)
    for _ in range(10):
        await ask()
    if revisit:  # a first visit to 7 W and back, so that both states are measured
        switch("7W", slowdown)
        for _ in range(10):
            await ask()
        for m in SPEEDS:
            for _ in range(3):
                await ask(m)
        switch("25W", 1.0)
        for _ in range(10):
            await ask()
    alarms_before = sum(h.alarms for h in orch.knowledge.health.values())
    switch("7W", slowdown)
    answers = [await ask() for _ in range(after)]
    errors = [prediction_error(a) for a in answers]
    first, settled = until_match(errors)
    out = {
        "feature": feature, "slowdown": slowdown, "revisit": revisit,
        "requests_until_first_match": first, "requests_until_settled": settled,
        "error_first_request": round(errors[0], 3),
        "mean_error_first_10": round(sum(errors[:10]) / 10, 3),
        "mean_error": round(sum(errors) / len(errors), 3),
        "drift_alarms": sum(h.alarms for h in orch.knowledge.health.values()) - alarms_before,
        "answered_by": {m: sum(a.model == m for a in answers) for m in SPEEDS},
        "rescale": orch.rescales[0] if orch.rescales else None,
    }
    await close_core(core)
    return out


# -- 2. a battery day -------------------------------------------------------------------------

DAY_S = 86400.0
BATTERY_FULL_WH = 60.0
RESERVE_PERCENT = 10.0
IDLE_W = 0.8
# Energy of one answer by the model that gave it (what a 1.5B / 0.5B / 135M answer costs
# a small board, roughly), and each model's prior quality on the fake workload.
ANSWER_J = {"large": 120.0, "mid": 50.0, "small": 15.0}
QUALITY = {"large": 0.85, "mid": 0.75, "small": 0.60}
DAY_SPEEDS = {"large": 30.0, "mid": 12.0, "small": 4.0}
MEAN_RATE_PER_S = 1 / 60.0   # one request a minute on average, busier at noon


def arrival_rate(t: float) -> float:
    return MEAN_RATE_PER_S * (1.0 + 0.8 * math.sin(2 * math.pi * (t / DAY_S - 0.25)))


async def battery_day(pacing: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="calm-battery-"))
    fleet = make_fleet(tmp, list(QUALITY.items()), "large")
    settings = make_settings(
        tmp, field={"power_mode": "false", "thermal": "false", "poll_s": "60"},
        qos={"default_mode": "quality"},
        energy={"battery": str(pacing).lower(), "battery_hours": "24",
                "battery_reserve_percent": str(RESERVE_PERCENT)})
    fs = FakeSysfs(tmp / "root")
    wh = BATTERY_FULL_WH
    fs.battery(energy_wh=wh, energy_full_wh=BATTERY_FULL_WH)
    clock = Clock()
    p = settings.profile
    field = FieldMonitor(p.field, p.energy, sysfs_root=fs.root, clock=clock, wall_clock=clock)
    factory = FakeFactory(answer_tokens=20, sim_token_ms=dict(DAY_SPEEDS))
    core = await start(settings, fleet, factory, field)
    orch: Orchestrator = core.orchestrator
    for m in QUALITY:  # measured before the day starts (the clock stands still)
        for i in range(4):
            await serve_to_end(orch, chat_request(f"w{m}{i}", PROMPT, model=m))
    rng = random.Random(7)
    reserve_wh = BATTERY_FULL_WH * RESERVE_PERCENT / 100
    samples: list[tuple[float, float, str, float | None]] = []
    by_mode: dict[str, int] = {}
    quality_sum, served, switches, last_mode = 0.0, 0, 0, None
    reserve_at = empty_at = None
    next_sample = 0.0
    t = 0.0
    while t < DAY_S:
        dt = rng.expovariate(max(arrival_rate(t), 1e-6))
        while next_sample <= min(t + dt, DAY_S):  # the idle stretch, sampled every 5 min
            drained = wh - IDLE_W * (next_sample - t) / 3600
            mode = orch.pacing.mode if orch.pacing is not None else \
                settings.profile.qos.default_mode
            samples.append((next_sample, max(drained, 0.0), mode,
                            orch.pacing.pace if orch.pacing is not None else None))
            next_sample += 300.0
        wh -= IDLE_W * dt / 3600
        t += dt
        if t >= DAY_S:
            break
        if reserve_at is None and wh <= reserve_wh:
            reserve_at = t
        if wh <= 0:
            empty_at, wh = t, 0.0
            break
        clock.t = t
        fs.battery(energy_wh=wh, energy_full_wh=BATTERY_FULL_WH)
        served += 1
        a = await serve_to_end(orch, chat_request(f"r{served}", PROMPT))
        wh -= ANSWER_J[a.model] / 3600
        by_mode[a.mode] = by_mode.get(a.mode, 0) + 1
        quality_sum += QUALITY[a.model]
        if last_mode is not None and a.mode != last_mode:
            switches += 1
        last_mode = a.mode
    await close_core(core)
    return {"pacing": pacing, "requests": served, "by_mode": by_mode,
            "mode_switches": switches,
            "mean_quality": round(quality_sum / served, 3) if served else None,
            "battery_end_wh": round(max(wh, 0.0), 2),
            "battery_end_percent": round(100 * max(wh, 0.0) / BATTERY_FULL_WH, 1),
            "reserve_reached_h": None if reserve_at is None else round(reserve_at / 3600, 2),
            "empty_h": None if empty_at is None else round(empty_at / 3600, 2),
            "samples": samples}


def plot(paced: dict[str, Any], unpaced: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (the bench extra): no PNG", file=sys.stderr)
        return False
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    reserve = BATTERY_FULL_WH * RESERVE_PERCENT / 100
    for run, label, style in ((paced, "with energy pacing", "-"),
                              (unpaced, "without (quality all day)", "--")):
        hours = [s[0] / 3600 for s in run["samples"]]
        top.plot(hours, [s[1] for s in run["samples"]], style, label=label)
    top.plot([0, 24], [BATTERY_FULL_WH, reserve], ":", color="grey",
             label="even spending to the reserve")
    top.axhline(reserve, color="red", linewidth=0.8, label=f"reserve ({RESERVE_PERCENT:g}%)")
    top.set_ylabel("battery (Wh)")
    top.set_title("A battery day: 60 Wh, 24 h to last, one request a minute (busier at noon)")
    top.legend(loc="upper right")
    levels = {"eco": 0, "balanced": 1, "quality": 2}
    hours = [s[0] / 3600 for s in paced["samples"]]
    bottom.step(hours, [levels[s[2]] for s in paced["samples"]], where="post",
                label="effective mode")
    bottom.set_yticks([0, 1, 2], ["eco", "balanced", "quality"])
    bottom.set_ylabel("effective mode")
    bottom.set_xlabel("hour of the day")
    twin = bottom.twinx()
    twin.plot(hours, [s[3] if s[3] is not None else math.nan for s in paced["samples"]],
              color="tab:orange", linewidth=0.8, label="pace")
    twin.set_ylabel("pace (affordable / even rate)")
    twin.set_ylim(0, 2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def describe_change(r: dict[str, Any]) -> str:
    how = "power-mode input on (rescale at once)" if r["feature"] else \
        "power-mode input off (drift detection only)"
    first, settled = r["requests_until_first_match"], r["requests_until_settled"]
    return (f"  {how}: first prediction within {MATCH:.0%} at request {first}, settled "
            f"({SETTLED_RUN} in a row) from request {settled}; error of the first answer "
            f"{r['error_first_request']:.0%}, mean over the first 10 "
            f"{r['mean_error_first_10']:.0%}, over {sum(r['answered_by'].values())} "
            f"{r['mean_error']:.0%}; drift alarms {r['drift_alarms']}; answered by "
            + ", ".join(f"{m} {k}" for m, k in r["answered_by"].items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/bench/field"),
                    help="where battery.png, summary.txt and field.json go")
    ap.add_argument("--verbose", action="store_true",
                    help="show the loop's warnings (rescales, drift alarms, pacing)")
    args = ap.parse_args()
    if not args.verbose:
        logging.getLogger("calm_edge").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    runs = {
        "halved_on": asyncio.run(mode_change(True, 2.0)),
        "halved_off": asyncio.run(mode_change(False, 2.0)),
        "misjudged_on": asyncio.run(mode_change(True, 1.6)),
        "misjudged_off": asyncio.run(mode_change(False, 1.6)),
        "revisit_on": asyncio.run(mode_change(True, 1.6, revisit=True)),
    }
    paced = asyncio.run(battery_day(True))
    unpaced = asyncio.run(battery_day(False))
    lines = [
        "1. Power mode 25 W -> 7 W (half the CPU capacity), fake fleet 'fast' 10 ms/token and "
        "'backup' 14 ms/token, balanced mode; requests after the switch until the answering "
        "model's predicted latency is within 10% of the answer's:",
        " a) every model decodes 2x slower (the frequency ratio):",
        describe_change(runs["halved_on"]), describe_change(runs["halved_off"]),
        " b) every model decodes 1.6x slower (the frequency ratio says 2x):",
        describe_change(runs["misjudged_on"]), describe_change(runs["misjudged_off"]),
        " c) as b), back at 7 W after the loop measured both states (measured ratio):",
        describe_change(runs["revisit_on"]),
        "2. A battery day (60 Wh, reserve 10%, 24 h to last; idle 0.8 W; an answer costs "
        + ", ".join(f"{m} {j:g} J" for m, j in ANSWER_J.items()) + "):",
    ]
    for run, label in ((paced, "with energy pacing"),
                       (unpaced, "without pacing (quality all day)")):
        lines.append(
            f"  {label}: {run['requests']} requests, modes "
            + ", ".join(f"{m} {k}" for m, k in sorted(run["by_mode"].items()))
            + f"; mean prior quality of the answering models {run['mean_quality']}; "
            f"{run['mode_switches']} mode switches; battery at the end of the day "
            f"{run['battery_end_wh']} Wh ({run['battery_end_percent']}%); reserve reached "
            + (f"at {run['reserve_reached_h']} h" if run["reserve_reached_h"] is not None
               else "never")
            + (f"; empty at {run['empty_h']} h (the board stops)" if run["empty_h"] is not None
               else ""))
    png = args.out / "battery.png"
    if plot(paced, unpaced, png):
        lines.append(f"  effective mode over the day: {png}")
    lines.append(f"(all of this in {time.perf_counter() - t0:.1f} s of wall time)")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.txt").write_text(text + "\n")
    for run in (paced, unpaced):
        run["samples"] = run["samples"][::12]  # hourly in the JSON
    record = {"mode_change": runs, "battery_day": {"paced": paced, "unpaced": unpaced}}
    (args.out / "field.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "rescale"}
                      for k, v in runs.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
