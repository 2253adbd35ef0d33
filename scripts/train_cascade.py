#!/usr/bin/env python3
"""Fit the cascade acceptors and say where a cascade pays.

    .venv/bin/python scripts/train_cascade.py [--labels models/router/confidence.jsonl]
        [--target qwen2.5-coder-1.5b] [--out models/router/cascade.json] [--min-auroc 0.65]

For each (small model, domain) with graded answers and confidence signals
(scripts/label_confidence.py): a logistic regression P(correct | signals), its AUROC out of
fold (5 folds), and per mode the lowest threshold whose kept answers are right at least as
often, with the rest escalated, as the escalation target alone on the same queries
(quality: as high as it goes, balanced: 0.97x, fast and eco: 0.9x of the target's rate; its
grades come from
models/router/outcomes.jsonl). Then, from the same labels, what the cascade would give
against answering with the target directly: quality, and latency with the cheap model's
time always paid and the target's time paid on escalation. Latencies are modelled from
token counts (prompt x prefill + completion x decode), the per-token times fitted per model
by least squares on outcomes.jsonl (one quiet run), so that labels taken on a busy machine
do not skew the comparison. Writes an acceptor for each pair whose AUROC reaches
--min-auroc, with the cuts of the modes where its cascade pays (quality mode: right more
often than the target; the others: at least their share of the target's quality, and
faster): the only (pair, mode) the planner may cascade. Prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from calm_edge.bench.workload import load_workload
from calm_edge.confidence import (
    FEATURES,
    Acceptor,
    ModeCut,
    Signals,
    acceptor_to_json,
    auroc,
    choose_cascade_cut,
    code_parses,
    fit_logistic,
)
from calm_edge.instructions import format_met
from calm_edge.paths import bundled_dir

# Per mode, the cascade's quality against the target's alone: None = as high as it goes.
MODES: dict[str, float | None] = {"quality": None, "balanced": 0.97, "fast": 0.9, "eco": 0.9}
ROUTER = bundled_dir("models") / "router"


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: int = 5) -> np.ndarray:
    p = np.zeros(len(y))
    idx = np.arange(len(y))
    for k in range(folds):
        test = idx % folds == k
        if test.all() or not test.any() or len(set(y[~test])) < 2:
            p[test] = y[~test].mean() if (~test).any() else 0.5
            continue
        w, b, mean, scale = fit_logistic(x[~test], y[~test])
        p[test] = 1.0 / (1.0 + np.exp(-(((x[test] - mean) / scale) @ w + b)))
    return p


def token_rates(outcomes: list[dict[str, Any]]) -> dict[str, tuple[float, float, float]]:
    """Per model: (ms per prompt token, ms per completion token, ms fixed), least squares."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in outcomes:
        by[r["model"]].append(r)
    out = {}
    for model, rs in by.items():
        a = np.array([[r["prompt_tokens"], r["completion_tokens"], 1.0] for r in rs])
        coef = np.linalg.lstsq(a, np.array([r["latency_ms"] for r in rs]), rcond=None)[0]
        out[model] = (max(float(coef[0]), 0.0), max(float(coef[1]), 0.0),
                      max(float(coef[2]), 0.0))
    return out


def modelled_s(rates: tuple[float, float, float], r: dict[str, Any]) -> float:
    pre, dec, fixed = rates
    return (pre * int(r["prompt_tokens"]) + dec * int(r["completion_tokens"]) + fixed) / 1000


def decision_cost(rows: list[dict[str, Any]], prompts: dict[str, str],
                  acceptors: list[Acceptor]) -> str:
    """What judging one answer costs at run time (the orchestrator's work after the cheap
    model's last token): the signals from the text (code parses, format instructions met)
    and the acceptor's decision, timed over every labelled answer that kept its text."""
    by_pair = {(a.model, a.domain): a for a in acceptors}
    times_ms = []
    for r in rows:
        acc = by_pair.get((r["model"], r["domain"]))
        if acc is None or "text" not in r or r["signals"] is None:
            continue
        s = Signals.from_json(r["signals"])
        t0 = time.perf_counter()
        sig = dataclasses.replace(
            s, code_parses=code_parses(r["text"]) if r["domain"] == "code" else None,
            format_met=format_met(prompts.get(r["query_id"], ""), r["text"]))
        acc.decide(sig, "balanced")
        times_ms.append((time.perf_counter() - t0) * 1000)
    if not times_ms:
        return "decision cost: no labelled answers with text for the acceptors"
    times_ms.sort()
    p99 = times_ms[min(len(times_ms) - 1, int(0.99 * len(times_ms)))]
    return (f"decision cost over {len(times_ms)} answers (signals from the text + the "
            f"acceptor): p50 {statistics.median(times_ms):.3f} ms, p99 {p99:.3f} ms, "
            f"max {times_ms[-1]:.3f} ms (target p99 < 1 ms)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=Path, default=ROUTER / "confidence.jsonl")
    ap.add_argument("--outcomes", type=Path, default=ROUTER / "outcomes.jsonl")
    ap.add_argument("--corpus", type=Path, default=ROUTER / "outcome_corpus.jsonl")
    ap.add_argument("--target", default="qwen2.5-coder-1.5b")
    ap.add_argument("--out", type=Path, default=ROUTER / "cascade.json")
    ap.add_argument("--min-auroc", type=float, default=0.65)
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.labels.read_text().splitlines() if line.strip()]
    prompts = {q.id: q.messages[-1]["content"] for q in load_workload(args.corpus)
               if q.messages}
    for r in rows:  # signals added after the labels were taken come from the stored text
        if r["signals"] is not None and "text" in r:
            s = Signals.from_json(r["signals"])
            r["signals"] = dataclasses.asdict(dataclasses.replace(
                s, format_met=format_met(prompts.get(r["query_id"], ""), r["text"])))
    outcomes = [json.loads(line) for line in args.outcomes.read_text().splitlines()
                if line.strip()]
    rates = token_rates(outcomes)
    print("per-token times fitted on outcomes.jsonl (prefill / decode / fixed ms): " + ", ".join(
        f"{m} {a:.2f}/{b:.1f}/{c:.0f}" for m, (a, b, c) in sorted(rates.items())))
    target = {r["query_id"]: r for r in outcomes if r["model"] == args.target}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["signals"] is not None and r["query_id"] in target:
            groups[(r["model"], r["domain"])].append(r)
    acceptors: list[Acceptor] = []
    print(f"{'model':<20} {'domain':<9} {'n':>4} {'right':>6} {'AUROC':>6} "
          f"{'mode':<9} {'kept':>5} {'prec':>5} | {'cascade q':>9} {'target q':>8} "
          f"{'cascade s':>9} {'target s':>8}  verdict")
    for (model, domain), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["query_id"])
        x = np.array([Signals.from_json(r["signals"]).vector() for r in rs])
        y = np.array([float(r["passed"]) for r in rs])
        t_right = [bool(target[r["query_id"]]["passed"]) for r in rs]
        t_lat = [modelled_s(rates[args.target], target[r["query_id"]]) for r in rs]
        a_lat = [modelled_s(rates[model], r) for r in rs]
        q_target = sum(t_right) / len(rs)
        if len(set(y)) < 2:
            p = np.full(len(y), y.mean())
            score = 0.5
        else:
            p = out_of_fold(x, y)
            score = auroc(list(p), [bool(v) for v in y])
        cuts = {m: choose_cascade_cut(list(p), [bool(v) for v in y], t_right, share)
                for m, share in MODES.items()}
        paying: dict[str, ModeCut] = {}
        for mode, cut in cuts.items():
            keep = p >= cut.threshold
            q = float(np.mean([a if k else t for a, t, k in
                               zip(y.astype(bool), t_right, keep, strict=True)]))
            lat = float(np.mean([al + (0 if k else tl) for al, tl, k in
                                 zip(a_lat, t_lat, keep, strict=True)]))
            t_mean = statistics.fmean(t_lat)
            # Quality mode: the cascade must be right more often than the target alone;
            # the others: as right as their share of it asks, and faster.
            share = MODES[mode]
            pays = score >= args.min_auroc and cut.accept_rate > 0 and (
                q > q_target if share is None else q >= share * q_target and lat < t_mean)
            if pays:
                paying[mode] = cut
            print(f"{model:<20} {domain:<9} {len(rs):>4} {y.mean():>6.2f} {score:>6.2f} "
                  f"{mode:<9} {cut.accept_rate:>5.2f} {cut.precision:>5.2f} | {q:>9.2f} "
                  f"{q_target:>8.2f} {lat:>9.2f} {t_mean:>8.2f}  "
                  f"{'CASCADE' if pays else 'direct'}")
        if paying:
            w, b, mean, scale = fit_logistic(x, y)
            acceptors.append(Acceptor(model, domain, tuple(map(float, w)), b,
                                      tuple(map(float, mean)), tuple(map(float, scale)),
                                      score, len(rs), float(y.mean()), paying, args.target,
                                      q_target))
    args.out.write_text(json.dumps({
        "features": list(FEATURES), "escalate_to": args.target,
        "labels": str(args.labels.name), "min_auroc": args.min_auroc,
        "acceptors": [acceptor_to_json(a) for a in acceptors]}, indent=1) + "\n")
    print(f"\n{len(acceptors)} acceptor(s) written to {args.out}")
    print(decision_cost(rows, prompts, acceptors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
