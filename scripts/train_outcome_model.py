#!/usr/bin/env python3
"""Train the per-query outcome model: P(model answers correctly | query), one head per model.

    .venv/bin/python scripts/train_outcome_model.py [--seed 20260802] [--no-write]

Inputs: models/router/outcome_corpus.jsonl (scripts/build_outcome_corpus.py) and
models/router/outcomes.jsonl (scripts/label_outcomes.py). Outputs, in models/router:
outcome_model.npz + outcome_model.json (read by calm_edge.outcome) and REPORT.md (also
printed).

Per model, an L2-regularized logistic regression in numpy (Newton's method; the bias is not
penalized in effect) on the inputs the runtime will have: the classifier's feature vector of
the query (calm_edge.outcome.query_features) and a one-hot of the domain the runtime
classifier predicts for it (calm_edge.classifier.load_classifier(); calm_edge.domains.DOMAINS
order). Protocol:

1. a stratified, seeded split of the QUERIES into train (75%) and validation (25%), strata =
   (true domain, how many of the models labeled on every query passed it), so the same query
   is held out for every model;
2. per model, the L2 strength is chosen by stratified 4-fold cross-validated log-loss on the
   train part (the validation part stays untouched for the figures);
3. validation figures for the head fitted on train: AUC, Brier score, log-loss against the
   base-rate predictor (train pass rate) and against a domain-only predictor (train pass
   rate per predicted domain), the classifier's heuristic difficulty head as a ranking
   baseline, and calibration (reliability bins and precision at thresholds);
4. the head is refitted on all of the model's labels with the chosen strength; that is what
   is saved.

Also in the report: pass rates per model and domain, and a routing estimate from
out-of-fold predictions on the queries every model answered (send a query to the cheapest
model whose predicted P(correct) clears a threshold, else to the largest).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calm_edge.bench.workload import Query, load_workload
from calm_edge.classifier import features
from calm_edge.domains import DOMAINS
from calm_edge.outcome import NPZ_FILE, OutcomeModel, query_features

ROOT = Path(__file__).resolve().parent.parent
ROUTER_DIR = ROOT / "models" / "router"
DEFAULT_SEED = 20260802
VAL_SHARE = 0.25
CV_FOLDS = 4
LAMBDAS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
BIAS_LAMBDA = 1e-4  # a token penalty on the bias: keeps Newton's system definite
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
EPS = 1e-7

F64 = npt.NDArray[np.float64]


# -- numerics ----------------------------------------------------------------------------------

def sigmoid(z: F64) -> F64:
    """Overflow-free logistic function."""
    out: F64 = np.exp(-np.logaddexp(0.0, -z))
    return out


def fit_logistic(x: F64, y: F64, lam: float, *, max_iter: int = 100, tol: float = 1e-8,
                 ) -> tuple[F64, float]:
    """Minimize sum_i logloss(y_i, sigmoid(x_i.w + b)) + lam/2 |w|^2 (+ BIAS_LAMBDA/2 b^2)
    by damped Newton steps. x: (n, d), y in {0, 1}. Returns (w, b).

    The Newton system (P + Xa^T S Xa) d = g has d + 1 unknowns but rank-n data, so it is
    solved in n dimensions (Woodbury): with Z = S^1/2 Xa, H^-1 g = P^-1 g -
    P^-1 Z^T (I + Z P^-1 Z^T)^-1 Z P^-1 g. Deterministic.
    """
    n, d = x.shape
    xa = np.hstack([x, np.ones((n, 1))])
    pen = np.full(d + 1, float(lam))
    pen[-1] = BIAS_LAMBDA
    pinv = 1.0 / pen
    theta = np.zeros(d + 1)
    rate = float(np.clip(y.mean(), 0.01, 0.99)) if n else 0.5
    theta[-1] = math.log(rate / (1.0 - rate))

    def objective(t: F64) -> float:
        z = xa @ t
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(pen * t * t))

    f = objective(theta)
    for _ in range(max_iter):
        z = xa @ theta
        p = sigmoid(z)
        g = xa.T @ (p - y) + pen * theta
        zs = np.sqrt(p * (1.0 - p))[:, None] * xa
        u = pinv * g
        k = np.eye(n) + (zs * pinv) @ zs.T
        step = u - pinv * (zs.T @ np.linalg.solve(k, zs @ u))
        t = 1.0
        while True:
            cand = theta - t * step
            f_new = objective(cand)
            if f_new <= f + 1e-12 or t < 1e-6:
                break
            t *= 0.5
        theta, f_old, f = cand, f, f_new
        if float(np.max(np.abs(t * step))) < tol or f_old - f < tol * max(1.0, abs(f)):
            break
    return theta[:-1].copy(), float(theta[-1])


def predict_proba(x: F64, w: F64, b: float) -> F64:
    return sigmoid(x @ w + b)


def auc(y: F64, s: F64) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); nan with one class."""
    pos = y > 0.5
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def brier(y: F64, p: F64) -> float:
    return float(np.mean((p - y) ** 2))


def logloss(y: F64, p: F64) -> float:
    q = np.clip(p, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log(1.0 - q)))


def reliability(y: F64, p: F64) -> list[dict[str, Any]]:
    """Per probability bin: count, mean predicted, observed pass rate."""
    out = []
    for lo, hi in itertools.pairwise(BINS):
        m = (p >= lo) & ((p < hi) if hi < 1.0 else (p <= hi))
        out.append({"bin": [lo, hi], "n": int(m.sum()),
                    "mean_p": _num(float(p[m].mean())) if m.any() else None,
                    "observed": _num(float(y[m].mean())) if m.any() else None})
    return out


def at_thresholds(y: F64, p: F64) -> list[dict[str, Any]]:
    """For "trust the model when P >= t": how many queries clear t, how many of those it
    got right (precision), and the share of all its correct answers they hold (recall)."""
    out = []
    total_pos = float(y.sum())
    for t in THRESHOLDS:
        m = p >= t
        out.append({"t": t, "n": int(m.sum()),
                    "precision": _num(float(y[m].mean())) if m.any() else None,
                    "recall": _num(float(y[m].sum() / total_pos)) if total_pos else None})
    return out


def _num(v: float, digits: int = 4) -> float | None:
    return None if not math.isfinite(v) else round(v, digits)


# -- splits ------------------------------------------------------------------------------------

def proportional_pick(ordered: Sequence[str], share: float) -> set[str]:
    """Every 1/share-th element of `ordered` (systematic sampling): a stratified sample when
    `ordered` lists the members of each stratum together."""
    return {qid for i, qid in enumerate(ordered)
            if math.floor((i + 1) * share) > math.floor(i * share)}


def stratified_order(ids: Iterable[str], strata: Mapping[str, str], seed: str) -> list[str]:
    """Members of each stratum together (strata sorted), shuffled within, seeded."""
    groups: dict[str, list[str]] = defaultdict(list)
    for qid in sorted(ids):
        groups[strata[qid]].append(qid)
    rng = np.random.default_rng(hash_seed(seed))
    out: list[str] = []
    for key in sorted(groups):
        members = groups[key]
        out.extend(members[i] for i in rng.permutation(len(members)))
    return out


def hash_seed(text: str) -> int:
    """A stable integer from a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def folds_of(ids: Sequence[str], strata: Mapping[str, str], k: int, seed: str,
             ) -> dict[str, int]:
    order = stratified_order(ids, strata, seed)
    return {qid: i % k for i, qid in enumerate(order)}


# -- training ----------------------------------------------------------------------------------

@dataclass
class Dataset:
    """What the trainer learns from. ids: query ids (row order of x). x: (n, FEATURE_DIM +
    len(domains)) float64 = query features + one-hot runtime domain. true_domain,
    runtime_domain: per id. labels: model -> id -> passed. strata: id -> split stratum."""

    ids: list[str]
    x: F64
    true_domain: dict[str, str]
    runtime_domain: dict[str, str]
    labels: dict[str, dict[str, bool]]
    strata: dict[str, str]
    difficulty: dict[str, float] = field(default_factory=dict)
    domains: tuple[str, ...] = tuple(DOMAINS)

    def rows(self, ids: Sequence[str]) -> npt.NDArray[np.intp]:
        index = {q: i for i, q in enumerate(self.ids)}
        return np.array([index[q] for q in ids], dtype=np.intp)


def make_dataset(texts: Mapping[str, str], true_domain: Mapping[str, str],
                 runtime_domain: Mapping[str, str], labels: Mapping[str, Mapping[str, bool]],
                 difficulty: Mapping[str, float] | None = None,
                 domains: Sequence[str] = DOMAINS) -> Dataset:
    """Build features and strata. Only queries with at least one label are kept."""
    ids = sorted(q for q in texts if any(q in lab for lab in labels.values()))
    x = np.zeros((len(ids), features.FEATURE_DIM + len(domains)))
    for i, qid in enumerate(ids):
        x[i, :features.FEATURE_DIM] = query_features(texts[qid])
        if runtime_domain[qid] in domains:
            x[i, features.FEATURE_DIM + list(domains).index(runtime_domain[qid])] = 1.0
    # strata: true domain x number of passes among the models labeled on every query
    full = [m for m, lab in labels.items() if all(q in lab for q in ids)]
    strata = {q: f"{true_domain[q]}:{sum(labels[m][q] for m in full)}" for q in ids}
    return Dataset(ids, x, dict(true_domain), dict(runtime_domain),
                   {m: dict(v) for m, v in labels.items()}, strata,
                   dict(difficulty or {}), tuple(domains))


def cv_logloss(ds: Dataset, ids: Sequence[str], y: F64, lam: float, seed: str) -> float:
    strata = {q: f"{ds.strata[q]}:{int(v)}" for q, v in zip(ids, y, strict=True)}
    fold = folds_of(ids, strata, CV_FOLDS, seed)
    x = ds.x[ds.rows(ids)]
    f = np.array([fold[q] for q in ids])
    losses = []
    for k in range(CV_FOLDS):
        tr, va = f != k, f == k
        if not va.any() or len(set(y[tr].tolist())) < 2:
            continue
        w, b = fit_logistic(x[tr], y[tr], lam)
        losses.append(logloss(y[va], predict_proba(x[va], w, b)) * va.sum())
    return float(sum(losses) / len(ids))


def oof_predictions(ds: Dataset, ids: Sequence[str], y: F64, lam: float, seed: str,
                    ) -> dict[str, float]:
    """Out-of-fold P(correct) for every id (each predicted by a head that never saw it)."""
    strata = {q: f"{ds.strata[q]}:{int(v)}" for q, v in zip(ids, y, strict=True)}
    fold = folds_of(ids, strata, CV_FOLDS, seed)
    x = ds.x[ds.rows(ids)]
    f = np.array([fold[q] for q in ids])
    out: dict[str, float] = {}
    for k in range(CV_FOLDS):
        tr, va = f != k, f == k
        w, b = fit_logistic(x[tr], y[tr], lam)
        for q, p in zip(np.asarray(ids)[va], predict_proba(x[va], w, b), strict=True):
            out[str(q)] = float(p)
    return out


def domain_rates(ds: Dataset, ids: Sequence[str], y: F64) -> tuple[dict[str, float], float]:
    """Pass rate per runtime domain on `ids` (shrunk toward the overall rate by two pseudo
    counts), and the overall rate: the domain-only predictor."""
    base = float(y.mean())
    n: Counter[str] = Counter()
    k: Counter[str] = Counter()
    for q, v in zip(ids, y, strict=True):
        n[ds.runtime_domain[q]] += 1
        k[ds.runtime_domain[q]] += int(v)
    return {d: (k[d] + 2 * base) / (n[d] + 2) for d in n}, base


@dataclass
class Head:
    model: str
    lam: float
    w: F64
    b: float
    metrics: dict[str, float | None]
    calibration: dict[str, Any]
    cv: dict[float, float]
    n: int
    oof: dict[str, float]
    oof_domain: dict[str, float]


def train_head(ds: Dataset, model: str, val_ids: set[str], seed: int,
               lambdas: Sequence[float] = LAMBDAS) -> Head:
    lab = ds.labels[model]
    ids = [q for q in ds.ids if q in lab]
    train_ids = [q for q in ids if q not in val_ids]
    valid_ids = [q for q in ids if q in val_ids]
    y_tr = np.array([float(lab[q]) for q in train_ids])
    y_va = np.array([float(lab[q]) for q in valid_ids])
    cv = {lam: cv_logloss(ds, train_ids, y_tr, lam, f"{seed}:{model}:cv") for lam in lambdas}
    lam = min(lambdas, key=lambda v: (cv[v], -v))  # ties: the stronger penalty
    w, b = fit_logistic(ds.x[ds.rows(train_ids)], y_tr, lam)
    p_va = predict_proba(ds.x[ds.rows(valid_ids)], w, b)
    base = float(np.clip(y_tr.mean(), EPS, 1 - EPS))
    p_base = np.full(len(valid_ids), base)
    rates, _ = domain_rates(ds, train_ids, y_tr)
    p_dom = np.array([rates.get(ds.runtime_domain[q], base) for q in valid_ids])
    ll, ll_base, ll_dom = logloss(y_va, p_va), logloss(y_va, p_base), logloss(y_va, p_dom)
    metrics: dict[str, float | None] = {
        "n": float(len(ids)), "n_train": float(len(train_ids)), "n_val": float(len(valid_ids)),
        "base_rate": _num(float(np.mean([float(lab[q]) for q in ids]))),
        "lambda": lam,
        "val_auc": _num(auc(y_va, p_va)),
        "val_brier": _num(brier(y_va, p_va)),
        "val_brier_base": _num(brier(y_va, p_base)),
        "val_logloss": _num(ll),
        "val_logloss_base": _num(ll_base),
        "val_logloss_skill": _num(1.0 - ll / ll_base) if ll_base > 0 else None,
        "val_auc_domain_only": _num(auc(y_va, p_dom)),
        "val_logloss_domain_only": _num(ll_dom),
    }
    if ds.difficulty:
        ease = np.array([1.0 - ds.difficulty[q] for q in valid_ids])
        metrics["val_auc_difficulty_head"] = _num(auc(y_va, ease))
    calibration = {"bins": reliability(y_va, p_va), "thresholds": at_thresholds(y_va, p_va)}
    y_all = np.array([float(lab[q]) for q in ids])
    w_all, b_all = fit_logistic(ds.x[ds.rows(ids)], y_all, lam)
    oof = oof_predictions(ds, ids, y_all, lam, f"{seed}:{model}:oof")
    # the domain-only predictor, out of fold over the same folds
    strata = {q: f"{ds.strata[q]}:{int(v)}" for q, v in zip(ids, y_all, strict=True)}
    fold = folds_of(ids, strata, CV_FOLDS, f"{seed}:{model}:oof")
    oof_dom: dict[str, float] = {}
    for k in range(CV_FOLDS):
        tr = [q for q in ids if fold[q] != k]
        rates, base_k = domain_rates(ds, tr, np.array([float(lab[q]) for q in tr]))
        for q in ids:
            if fold[q] == k:
                oof_dom[q] = rates.get(ds.runtime_domain[q], base_k)
    # out-of-fold figures over all labels: overall, and within each true domain (can the
    # head tell a domain's easy queries from its hard ones, beyond knowing the domain?)
    p_oof = np.array([oof[q] for q in ids])
    metrics["oof_auc"] = _num(auc(y_all, p_oof))
    metrics["oof_logloss"] = _num(logloss(y_all, p_oof))
    within = []
    for d in sorted({ds.true_domain[q] for q in ids}):
        m = np.array([ds.true_domain[q] == d for q in ids])
        metrics[f"base_rate.{d}"] = _num(float(y_all[m].mean()))
        a = auc(y_all[m], p_oof[m])
        metrics[f"oof_auc.{d}"] = _num(a)
        if math.isfinite(a):
            within.append(a)
    metrics["oof_auc_within_domain"] = _num(float(np.mean(within))) if within else None
    return Head(model, lam, w_all, b_all, metrics, calibration, cv, len(ids), oof, oof_dom)


def split(ds: Dataset, seed: int, share: float = VAL_SHARE) -> set[str]:
    return proportional_pick(stratified_order(ds.ids, ds.strata, f"{seed}:split"), share)


def train(ds: Dataset, models: Sequence[str], seed: int,
          lambdas: Sequence[float] = LAMBDAS) -> tuple[OutcomeModel, list[Head], set[str]]:
    """Fit every model's head (see the module doc); returns the model to save, the heads
    with their figures, and the validation ids."""
    val_ids = split(ds, seed)
    heads = [train_head(ds, m, val_ids, seed, lambdas) for m in models]
    w = np.stack([h.w for h in heads]).astype(np.float32)
    b = np.array([h.b for h in heads], dtype=np.float32)
    metrics = {h.model: {k: float(v) for k, v in h.metrics.items() if v is not None}
               for h in heads}
    model = OutcomeModel([h.model for h in heads], ds.domains, w, b, metrics=metrics,
                         calibration={h.model: h.calibration for h in heads},
                         n={h.model: h.n for h in heads})
    return model, heads, val_ids


# -- routing estimate --------------------------------------------------------------------------

def route_table(ids: Sequence[str], order: Sequence[str], big: str,
                labels: Mapping[str, Mapping[str, bool]],
                latency: Mapping[str, Mapping[str, float]],
                preds: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """Quality and latency on `ids` of "the first model in `order` (cheapest first) whose
    predicted P(correct) >= t, else `big`", for each threshold; plus always-X and the
    oracle (the cheapest correct model, else big)."""
    rows: list[dict[str, Any]] = []

    def summarize(name: str, choice: Mapping[str, str]) -> dict[str, Any]:
        q = float(np.mean([labels[choice[i]][i] for i in ids]))
        lat = float(np.mean([latency[choice[i]][i] for i in ids]))
        share = Counter(choice[i] for i in ids)
        return {"policy": name, "quality": q, "latency_ms": lat,
                "share": {m: share[m] / len(ids) for m in [*order, big] if share[m]}}

    for m in [*order, big]:
        rows.append(summarize(f"always {m}", {i: m for i in ids}))
    for t in THRESHOLDS:
        choice = {i: next((m for m in order if preds[m][i] >= t), big) for i in ids}
        rows.append(summarize(f"per-query P>={t:g}", choice))
    oracle = {i: next((m for m in order if labels[m][i]), big) for i in ids}
    rows.append(summarize("oracle", oracle))
    return rows


# -- I/O and report ----------------------------------------------------------------------------

def read_outcomes(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by an interrupted labeling run
    return out


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def f3(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def render_report(corpus: Sequence[Query], records: Sequence[dict[str, Any]],
                  ds: Dataset, heads: Sequence[Head], models: Sequence[str],
                  classifier_acc: dict[str, float], routes: list[dict[str, Any]] | None,
                  route_n: int, meta: Mapping[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    add("# Outcome model: report")
    add("")
    add(f"Trained {meta['trained']} by `scripts/train_outcome_model.py` (seed {meta['seed']}) "
        f"on `outcome_corpus.jsonl` ({len(corpus)} queries) and `outcomes.jsonl` "
        f"({len(records)} labeled answers). Feature spec version "
        f"{features.FEATURE_SPEC_VERSION}, {features.FEATURE_DIM} text features + a one-hot "
        f"of the classifier's predicted domain ({', '.join(ds.domains)}). Validation: "
        f"{len(meta['val_ids'])} of {len(ds.ids)} queries held out (stratified by domain and "
        f"outcome pattern); L2 strength chosen by {CV_FOLDS}-fold CV log-loss on the rest; "
        f"the saved heads are refitted on all labels.")
    add("")
    add("## Pass rates (all labeled answers)")
    add("")
    doms = [d for d in DOMAINS if any(q.domain == d for q in corpus)]
    add("| model | " + " | ".join(doms) + " | all | mean latency | mean tokens |")
    add("| --- | " + " | ".join("---:" for _ in doms) + " | ---: | ---: | ---: |")
    for m in models:
        rs = [r for r in records if r["model"] == m]
        cells = []
        for d in doms:
            rd = [r for r in rs if r["domain"] == d]
            cells.append(f"{pct(sum(r['passed'] for r in rd) / len(rd))} ({len(rd)})"
                         if rd else "–")
        lat = [r["latency_ms"] for r in rs if r.get("latency_ms") is not None]
        tok = [r["completion_tokens"] for r in rs if r.get("completion_tokens") is not None]
        add(f"| {m} | " + " | ".join(cells) +
            f" | {pct(sum(r['passed'] for r in rs) / len(rs)) if rs else '–'} ({len(rs)}) | "
            f"{np.mean(lat) / 1000 if lat else 0:.1f} s | {np.mean(tok) if tok else 0:.0f} |")
    add("")
    add("Cells: pass rate (answers). Latency measured at the client, model already loaded, "
        "2-core x86 VM.")
    add("")
    add("## Classifier domain on this corpus")
    add("")
    add("The heads see the runtime classifier's predicted domain, not the true one: "
        + ", ".join(f"{d} {pct(a)}" for d, a in classifier_acc.items()) + " correct.")
    add("")
    add("## Validation figures per head")
    add("")
    add("| model | n (train/val) | base rate | λ | AUC | AUC domain-only | AUC difficulty head "
        "| Brier (base) | log-loss | base-rate log-loss | domain-only log-loss | skill |")
    add("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for h in heads:
        mt = h.metrics
        add(f"| {h.model} | {int(mt['n'] or 0)} ({int(mt['n_train'] or 0)}/"
            f"{int(mt['n_val'] or 0)}) | {pct(mt['base_rate'])} | {h.lam:g} | "
            f"{f3(mt['val_auc'])} | {f3(mt['val_auc_domain_only'])} | "
            f"{f3(mt.get('val_auc_difficulty_head'))} | {f3(mt['val_brier'])} "
            f"({f3(mt['val_brier_base'])}) | {f3(mt['val_logloss'])} | "
            f"{f3(mt['val_logloss_base'])} | {f3(mt['val_logloss_domain_only'])} | "
            f"{f3(mt['val_logloss_skill'])} |")
    add("")
    add("skill = 1 − log-loss / base-rate log-loss (0: no better than always predicting the "
        "base rate; negative: worse). Domain-only = the train pass rate of the predicted "
        "domain. Difficulty head = the classifier's current (heuristic) difficulty output, "
        "as a ranking.")
    add("")
    add("## Within each domain (out-of-fold over all labels)")
    add("")
    add("Can a head tell a domain's easy queries from its hard ones? Pass rate, and AUC of "
        f"the {CV_FOLDS}-fold out-of-fold predictions among that domain's queries (0.5: no "
        "better than knowing the domain; – : the model passed all or none).")
    add("")
    add("| model | " + " | ".join(doms) + " | overall AUC | mean within-domain AUC |")
    add("| --- | " + " | ".join("---" for _ in doms) + " | ---: | ---: |")
    for h in heads:
        mt = h.metrics
        cells = [f"{pct(mt.get(f'base_rate.{d}'))} / {f3(mt.get(f'oof_auc.{d}'))}"
                 for d in doms]
        add(f"| {h.model} | " + " | ".join(cells) +
            f" | {f3(mt.get('oof_auc'))} | {f3(mt.get('oof_auc_within_domain'))} |")
    add("")
    add("## Calibration on the validation queries")
    add("")
    for h in heads:
        bins = " · ".join(
            f"[{b['bin'][0]:.1f},{b['bin'][1]:.1f}) n={b['n']}"
            + (f" p̄={b['mean_p']:.2f} obs={b['observed']:.2f}" if b["n"] else "")
            for b in h.calibration["bins"])
        ths = " · ".join(f"P≥{t['t']:g}: n={t['n']}, right {pct(t['precision'])}, "
                         f"recall {pct(t['recall'])}" for t in h.calibration["thresholds"])
        add(f"- **{h.model}**: {bins}")
        add(f"  - {ths}")
    add("")
    if routes is not None:
        add(f"## Routing estimate (out-of-fold predictions, {route_n} queries answered by "
            "every model)")
        add("")
        add("Policy: the cheapest model (by mean latency) whose predicted P(correct) ≥ t, "
            "else the largest. Each prediction comes from a head that did not see the query "
            f"({CV_FOLDS}-fold). Latency: the measured latency of the chosen model on that "
            "query (no load or swap costs).")
        add("")
        add("| policy | quality | mean latency | share of queries |")
        add("| --- | ---: | ---: | --- |")
        for r in routes:
            share = ", ".join(f"{m} {100 * s:.0f}%" for m, s in r["share"].items())
            add(f"| {r['policy']} | {pct(r['quality'])} | {r['latency_ms'] / 1000:.2f} s | "
                f"{share} |")
        add("")
    notes = meta.get("notes") or []
    if notes:
        add("## Notes")
        add("")
        lines.extend(f"- {n}" for n in notes)
        add("")
    return "\n".join(lines)


def compare_with_saved(model_dir: Path, ds: Dataset, heads: Sequence[Head],
                       records_all: Sequence[dict[str, Any]]) -> str:
    """The saved heads against the new ones on the labels the saved heads never saw (the
    records after the first `outcomes.records` of the file): the saved head's prediction
    against the new head's out-of-fold one, for the same queries. Empty when nothing is
    saved or every label was seen."""
    from calm_edge.outcome import JSON_FILE, OutcomeModel

    try:
        saved = OutcomeModel.load(model_dir)
        seen_n = int(json.loads((model_dir / JSON_FILE).read_text())["outcomes"]["records"])
    except (OSError, ValueError, KeyError):
        return ""
    if saved is None:
        return ""
    seen = {(r["query_id"], r["model"]) for r in records_all[:seen_n]}
    lines = ["## Against the saved heads (labels they never saw)", "",
             f"The saved model was trained on the first {seen_n} records. On the labels "
             "after those: the saved head's P(correct) against the new head's out-of-fold "
             "one (a head that did not see the query), same queries.", "",
             "| model | new labels | AUC saved | AUC new | log-loss saved | log-loss new "
             "| within-domain AUC saved | within-domain AUC new |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    rows = 0
    for h in heads:
        ids = [q for q in h.oof if (q, h.model) not in seen and h.model in saved.models]
        if len(ids) < 10:
            continue
        y = np.array([float(ds.labels[h.model][q]) for q in ids])
        x = ds.x[ds.rows(ids), :features.FEATURE_DIM].astype(np.float32)
        p_old = np.array([saved.predict(x[i], ds.runtime_domain[q])[h.model]
                          for i, q in enumerate(ids)])
        p_new = np.array([h.oof[q] for q in ids])

        def within(p: F64, ids: list[str] = ids, y: F64 = y) -> float:
            aucs = [auc(y[m], p[m]) for d in sorted({ds.true_domain[q] for q in ids})
                    if (m := np.array([ds.true_domain[q] == d for q in ids])).any()]
            finite = [a for a in aucs if math.isfinite(a)]
            return float(np.mean(finite)) if finite else float("nan")

        lines.append(f"| {h.model} | {len(ids)} | {f3(auc(y, p_old))} | {f3(auc(y, p_new))} "
                     f"| {f3(logloss(y, p_old))} | {f3(logloss(y, p_new))} "
                     f"| {f3(within(p_old))} | {f3(within(p_new))} |")
        rows += 1
    return "\n".join(lines) + "\n" if rows else ""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=ROUTER_DIR / "outcome_corpus.jsonl")
    ap.add_argument("--outcomes", type=Path, default=ROUTER_DIR / "outcomes.jsonl")
    ap.add_argument("--out-dir", type=Path, default=ROUTER_DIR)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--min-labels", type=int, default=40,
                    help="skip a model with fewer labeled queries than this")
    ap.add_argument("--no-write", action="store_true", help="print the report only")
    args = ap.parse_args(argv)

    from calm_edge.classifier import load_classifier
    from calm_edge.outcome import TEXT_TAIL_CHARS

    corpus = load_workload(args.corpus)
    by_id = {q.id: q for q in corpus}
    records_all = read_outcomes(args.outcomes)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records_all:
        if r["query_id"] in by_id:
            latest[(r["query_id"], r["model"])] = r  # the last record of a pair wins
    records = list(latest.values())
    counts = Counter(r["model"] for r in records)
    fleet_order = ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    models = [m for m in fleet_order if counts[m] >= args.min_labels] + sorted(
        m for m in counts if m not in fleet_order and counts[m] >= args.min_labels)
    if not models:
        print(f"error: no model has {args.min_labels} labels in {args.outcomes}",
              file=sys.stderr)
        return 1
    labels: dict[str, dict[str, bool]] = defaultdict(dict)
    latency: dict[str, dict[str, float]] = defaultdict(dict)
    for r in records:
        labels[r["model"]][r["query_id"]] = bool(r["passed"])
        if r.get("latency_ms") is not None:
            latency[r["model"]][r["query_id"]] = float(r["latency_ms"])

    classifier = load_classifier()
    runtime_domain, difficulty = {}, {}
    for q in corpus:
        c = classifier.classify(q.text[-TEXT_TAIL_CHARS:])
        runtime_domain[q.id], difficulty[q.id] = str(c.domain), float(c.difficulty)
    doms = [d for d in DOMAINS if any(q.domain == d for q in corpus)]
    classifier_acc: dict[str, float] = {d: float(np.mean([runtime_domain[q.id] == d for q in corpus
                                        if q.domain == d])) for d in doms}

    ds = make_dataset({q.id: q.text for q in corpus}, {q.id: q.domain for q in corpus},
                      runtime_domain, {m: labels[m] for m in models}, difficulty)
    model, heads, val_ids = train(ds, models, args.seed)

    # routing estimate on the queries every model answered (latency known for all)
    common = [q for q in ds.ids if all(q in labels[m] and q in latency[m] for m in models)]
    routes = None
    if len(models) >= 2 and common:
        mean_lat = {m: float(np.mean(list(latency[m].values()))) for m in models}
        big = max(models, key=lambda m: mean_lat[m])
        order = sorted((m for m in models if m != big), key=lambda m: mean_lat[m])
        preds = {h.model: h.oof for h in heads}
        routes = route_table(common, order, big, labels, latency, preds)
        dom_preds = {h.model: h.oof_domain for h in heads}
        for t in THRESHOLDS:
            choice = {i: next((m for m in order if dom_preds[m][i] >= t), big) for i in common}
            qual = float(np.mean([labels[choice[i]][i] for i in common]))
            lat = float(np.mean([latency[choice[i]][i] for i in common]))
            share = Counter(choice.values())
            routes.append({"policy": f"domain-only P>={t:g}", "quality": qual,
                           "latency_ms": lat,
                           "share": {m: share[m] / len(common) for m in [*order, big]
                                     if share[m]}})
    today = datetime.date.today().isoformat()
    notes = [f"{h.model}: λ by CV log-loss: " + ", ".join(f"{lam:g}→{v:.3f}"
                                                          for lam, v in h.cv.items())
             for h in heads]
    meta: dict[str, Any] = {"trained": today, "seed": args.seed, "val_ids": sorted(val_ids),
                            "notes": notes}
    report = render_report(corpus, records, ds, heads, models, classifier_acc, routes,
                           len(common), meta)
    comparison = compare_with_saved(args.out_dir, ds, heads, records_all)
    if comparison:
        report += "\n" + comparison
    print(report)
    if args.no_write:
        return 0
    extra = {
        "trained": today,
        "trainer": "scripts/train_outcome_model.py",
        "seed": args.seed,
        "corpus": {"file": args.corpus.name, "queries": len(corpus)},
        "outcomes": {"file": args.outcomes.name, "records": len(records)},
        "input": "query_features(text) ++ one-hot(classifier-predicted domain, `domains` "
                 "order); P = sigmoid(w.x + b)",
        "validation": {"share": VAL_SHARE, "cv_folds": CV_FOLDS, "lambdas": list(LAMBDAS),
                       "refit": "all labels, chosen lambda"},
        "classifier_domain_accuracy": {d: round(a, 4) for d, a in classifier_acc.items()},
    }
    npath, jpath = model.save(args.out_dir, extra)
    (args.out_dir / "REPORT.md").write_text(report + "\n", encoding="utf-8")
    print(f"\nwrote {npath} ({npath.stat().st_size} B), {jpath}, "
          f"{args.out_dir / 'REPORT.md'}", file=sys.stderr)
    assert npath.name == NPZ_FILE
    return 0


if __name__ == "__main__":
    sys.exit(main())
