#!/usr/bin/env python3
"""Benchmark the query classifier's artifacts through every importable runtime.

    .venv/bin/python scripts/bench_classifier.py [--model-dir models/classifier] [--json out.json]

Prints, per runtime: load time, classify() latency p50/p99 in microseconds (features +
inference, one query at a time over the test split, after a warm-up), test accuracy and
macro-F1, HumanEval accuracy (all 164 prompts should be `code`), fresh-query accuracy, and
the TF-Lite vs ONNX argmax agreement on the test split. The targets from issue 4 are
printed next to the numbers; this script only reports, it does not fail on a miss.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from calm_edge.classifier import evaluation
from calm_edge.classifier.runtime import (
    RUNTIME_ORDER,
    ClassifierError,
    QueryClassifier,
    load_classifier,
)

TARGETS = {"test_accuracy": 0.92, "macro_f1": 0.90, "p99_us": 300.0, "agreement": 0.995}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--runtimes", default=",".join(RUNTIME_ORDER))
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model_dir = args.model_dir or evaluation_dir()

    test = evaluation.read_jsonl(model_dir / "test.jsonl")
    texts = [str(r["text"]) for r in test]
    he = evaluation.humaneval_prompts()
    fresh_path = model_dir / evaluation.FRESH_FILE
    fresh = evaluation.read_jsonl(fresh_path) if fresh_path.exists() else []
    lengths = sorted(len(t) for t in texts)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
        f"python={platform.python_version()}"
    )
    print(
        f"test split: {len(texts)} queries, length p50={lengths[len(lengths) // 2]} "
        f"max={lengths[-1]} chars; HumanEval: {len(he)}; fresh: {len(fresh)}"
    )
    print()

    results: dict[str, Any] = {}
    loaded: dict[str, QueryClassifier] = {}
    for runtime in args.runtimes.split(","):
        start = time.perf_counter()
        try:
            clf = load_classifier(model_dir, prefer=runtime)
        except ClassifierError as exc:
            print(f"{runtime:15s} unavailable: {exc}")
            results[runtime] = {"unavailable": str(exc)}
            continue
        load_ms = (time.perf_counter() - start) * 1000.0
        loaded[runtime] = clf
        lat = evaluation.latency_us(clf, texts)
        metrics = evaluation.evaluate_records(clf, test)
        he_r = evaluation.evaluate_labeled_texts(clf, he, ["code"] * len(he)) if he else None
        fr_r = (
            evaluation.evaluate_labeled_texts(
                clf, [str(r["text"]) for r in fresh], [str(r["domain"]) for r in fresh]
            )
            if fresh
            else None
        )
        results[runtime] = {
            "load_ms": round(load_ms, 1),
            "latency": lat,
            "test_accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "difficulty": metrics["difficulty"],
            "humaneval": he_r and {k: he_r[k] for k in ("n", "correct", "accuracy")},
            "fresh": fr_r and {k: fr_r[k] for k in ("n", "correct", "accuracy")},
        }
        he_s = f"{he_r['correct']}/{he_r['n']}" if he_r else "n/a"
        fr_s = f"{fr_r['correct']}/{fr_r['n']}" if fr_r else "n/a"
        print(
            f"{runtime:15s} load {load_ms:8.1f} ms | classify p50 {lat['p50_us']:6.1f} us  "
            f"p99 {lat['p99_us']:6.1f} us  (max {lat['max_us']:.0f}) | "
            f"test acc {metrics['accuracy']:.4f} "
            f"macro-F1 {metrics['macro_f1']:.4f} | HumanEval {he_s} | fresh {fr_s}"
        )

    tflite = next(
        (loaded[r] for r in ("litert", "tflite_runtime", "tensorflow") if r in loaded), None
    )
    if tflite is not None and "onnx" in loaded:
        agree = evaluation.agreement(tflite, loaded["onnx"], texts)
        results["agreement"] = agree
        print(
            f"\nTF-Lite ({tflite.runtime}) vs ONNX argmax agreement on test: "
            f"{agree['argmax_agreement']:.4f} (max |dp| {agree['max_abs_prob_diff']}) "
            f"target >= {TARGETS['agreement']}"
        )
    print(
        f"targets: test accuracy >= {TARGETS['test_accuracy']}, macro-F1 >= {TARGETS['macro_f1']}, "
        f"p99 <= {TARGETS['p99_us']:.0f} us, HumanEval all code"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def evaluation_dir() -> Path:
    from calm_edge.classifier.runtime import default_model_dir

    return default_model_dir()


if __name__ == "__main__":
    main()
