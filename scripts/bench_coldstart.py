#!/usr/bin/env python3
"""How far off a fresh daemon's latency predictions are: the first bench queries on an empty
state directory, predicted against measured.

Starts `calm-edge serve` (its own calibration left on, as users run it) on an empty state
directory (or a copy of `--state DIR`), loads the fleet's default model with the bench's
warm-up request, then sends the first `--queries` queries of the bench workload in the
bench's arrival order (`calm-edge bench`: steady pattern, seed 0, balanced mode), one at a
time, `model: "auto"`. Per query it prints the model chosen, the planner's predicted latency
for it (the `calm.candidates` entry, load time included), the latency measured at the
client, and the ratio predicted / measured (and the same without the time the request
queued behind the daemon's own background work, which the planner does not predict:
`calm.wait_ms` less the loads this query caused, from `/calm/status`); then how many are
within 2x, the worst ratio, and each model's calibration state at the end (what the daemon
measured meanwhile). A query whose stream ended without its `calm` object counts as not
within 2x.

    nice -n 10 .venv/bin/python scripts/bench_coldstart.py [--queries 20] [--out DIR]
        [--profile x86-dev] [--state DIR] [--no-warm-up] [--fleet F --models-dir D]
        [--daemon-env PYTHONPATH=<another checkout>]

Blocking; one request in flight at a time. Takes a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from calm_edge.bench.daemon import ask, serve_daemon, warm_up
from calm_edge.bench.workload import arrange, load_workload, select
from calm_edge.config import load_settings
from calm_edge.fleet import load_fleet


def off_by(predicted_ms: float, measured_ms: float) -> float:
    """How many times off a prediction is, either way (>= 1)."""
    if predicted_ms <= 0 or measured_ms <= 0:
        return math.inf
    r = predicted_ms / measured_ms
    return max(r, 1 / r)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--profile", default="x86-dev")
    ap.add_argument("--mode", default="balanced")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pattern", default="steady")
    ap.add_argument("--state", type=Path, help="start from a copy of this state directory")
    ap.add_argument("--out", type=Path, help="keep the log, state and results.json here")
    ap.add_argument("--no-warm-up", action="store_true",
                    help="no warm-up request: the first query loads its model")
    ap.add_argument("--fleet", type=Path)
    ap.add_argument("--models-dir", type=Path)
    ap.add_argument("--daemon-env", action="append", default=[], metavar="KEY=VALUE",
                    help="set in the daemon's environment, e.g. PYTHONPATH=<another "
                    "checkout> to compare before and after a change")
    args = ap.parse_args()
    for kv in args.daemon_env:
        key, sep, value = kv.partition("=")
        if not sep:
            ap.error(f"--daemon-env {kv!r}: expected KEY=VALUE")
        os.environ[key] = value  # the daemon subprocess inherits it

    out = args.out or Path(tempfile.mkdtemp(prefix="coldstart-"))
    state = out / "state"
    if state.exists():
        shutil.rmtree(state)
    if args.state is not None:
        shutil.copytree(args.state, state)
    state.mkdir(parents=True, exist_ok=True)
    cli = ["--profile", args.profile, "--state-dir", str(state), "--log-level", "info"]
    if args.fleet:
        cli += ["--fleet", str(args.fleet)]
    if args.models_dir:
        cli += ["--models-dir", str(args.models_dir)]
    settings = load_settings(args.profile, cli={"paths": {
        k: str(v) for k, v in (("fleet", args.fleet), ("models_dir", args.models_dir))
        if v is not None}})
    default_model = load_fleet(settings.fleet_path).default_model
    queries = arrange(select(load_workload()), args.pattern, args.seed)[:args.queries]

    rows: list[dict[str, Any]] = []
    t_start = time.monotonic()
    with serve_daemon(sys.executable, cli, out / "serve.log", ready_timeout_s=300,
                      request_timeout_s=1800, calibrate=True) as d:
        if not args.no_warm_up:
            warm_up(d.client, default_model)
        print(f"{'#':>2} {'query':<22} {'domain':<8} {'model':<20} {'pred ms':>8} "
              f"{'meas ms':>8} {'ratio':>6} {'tok':>4} {'queue':>6} {'ratio-q':>7}")
        loads = load_seconds(d.client.get("/calm/status"))
        for i, q in enumerate(queries, 1):
            reply = ask(d.client, q, "auto", {"mode": args.mode})
            status = d.client.get("/calm/status")
            now = load_seconds(status)
            load_ms = 1000 * sum(now[m] - loads.get(m, 0.0) for m in now)
            loads = now
            calm = reply.calm
            model = str(calm.get("model"))
            cand = next((c for c in calm.get("candidates") or () if c.get("model") == model),
                        None)
            predicted = float(cand["latency_ms"]) if cand is not None else math.nan
            queue_ms = max(float(calm.get("wait_ms") or 0.0) - load_ms, 0.0)
            served_ms = reply.latency_ms - queue_ms
            row = {"i": i, "query": q.id, "domain": calm.get("domain"), "model": model,
                   "predicted_ms": predicted, "measured_ms": round(reply.latency_ms, 1),
                   "ratio": round(predicted / reply.latency_ms, 3),
                   "off_by": round(off_by(predicted, reply.latency_ms), 3),
                   "queue_ms": round(queue_ms, 1),
                   "off_by_without_queue": round(off_by(predicted, served_ms), 3),
                   "completion_tokens": calm.get("completion_tokens"),
                   "finish": calm.get("finish_reason"), "wait_ms": calm.get("wait_ms"),
                   "load_ms": round(load_ms, 1),
                   "resident": cand.get("resident") if cand is not None else None,
                   "cache": calm.get("cache"),
                   "error": None if calm else "the stream ended without its calm object"}
            rows.append(row)
            print(f"{i:>2} {q.id[:22]:<22} {row['domain']!s:<8} {model[:20]:<20} "
                  f"{predicted:>8.0f} {reply.latency_ms:>8.0f} {row['ratio']:>6.2f} "
                  f"{row['completion_tokens']!s:>4} {queue_ms:>6.0f} "
                  f"{predicted / served_ms:>7.2f}", flush=True)
    wall_s = time.monotonic() - t_start

    def figures(key: str) -> tuple[int, float, float]:
        offs = [r[key] if math.isfinite(r[key]) else math.inf for r in rows]
        return sum(1 for x in offs if x <= 2.0), max(offs), statistics.median(offs)

    within, worst, median = figures("off_by")
    within_q, worst_q, median_q = figures("off_by_without_queue")
    summary = {"queries": len(rows), "within_2x": within, "worst_off_by": round(worst, 3),
               "median_off_by": round(median, 3), "within_2x_without_queue": within_q,
               "worst_off_by_without_queue": round(worst_q, 3),
               "median_off_by_without_queue": round(median_q, 3),
               "errors": sum(1 for r in rows if r["error"]),
               "queued_ms_total": round(sum(r["queue_ms"] for r in rows), 1),
               "under_load_items": (status.get("calibration") or {}).get("under_load_items"),
               "wall_s": round(wall_s, 1), "warm_up": not args.no_warm_up,
               "profile": args.profile, "mode": args.mode}
    print(f"\nwithin 2x: {within}/{len(rows)}; worst {worst:.1f}x off; median {median:.2f}x"
          f" (without the queue behind background work: {within_q}/{len(rows)}, worst "
          f"{worst_q:.1f}x, median {median_q:.2f}x); wall {wall_s:.0f} s")
    calibration = (status.get("calibration") or {}).get("models") or {}
    print("calibration at the end:")
    for name, c in calibration.items():
        print(f"  {name:<20} " + ("none" if c is None else
                                  f"{c['state']}, {c['canaries']} canaries, decode "
                                  f"{c['decode_ms_per_token']} ms/token"))
    (out / "results.json").write_text(json.dumps(
        {"summary": summary, "rows": rows, "calibration": calibration}, indent=2) + "\n")
    print(json.dumps(summary))
    print(f"results in {out}")
    return 0


def load_seconds(status: dict[str, Any]) -> dict[str, float]:
    """Each model's load seconds so far, from /calm/status."""
    return {m["name"]: float(m.get("load_seconds_total") or 0.0)
            for m in status.get("models") or ()}


if __name__ == "__main__":
    raise SystemExit(main())
