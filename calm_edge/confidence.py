"""Signals after the answer: how sure a model was, and whether to keep its answer. Pure.

A cheap model answers first; its answer is kept when a calibrated P(correct | signals) for
its (model, domain) clears the mode's threshold, else the query escalates to the plan's
stronger model (a cascade). The signals come from what llama.cpp already gives, computed
without running anything the model wrote:

- the chosen tokens' log-probabilities: mean, minimum, 10% quantile;
- whether the answer ended by itself or ran to max_tokens;
- for code, whether its code block parses (`ast.parse`) and defines a function.

`Acceptor`s (one per model and domain) are fitted offline on graded answers
(scripts/train_cascade.py: logistic regression, out-of-fold AUROC) and stored with their
thresholds per mode and the accept rate and precision those give: what the planner needs
to weigh a cascade against answering directly.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calm_edge.backends.base import GenerationStats
from calm_edge.instructions import format_met
from calm_edge.paths import bundled_dir

FEATURES = ("mean_logprob", "min_logprob", "p10_logprob", "stopped", "code_parses",
            "log_tokens", "format_met")
_FENCE = re.compile(r"```[ \t]*[\w+-]*[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Signals:
    mean_logprob: float
    min_logprob: float
    p10_logprob: float
    stopped: bool              # ended by itself, not at max_tokens
    code_parses: bool | None   # code answers: the code parses and defines a function
    tokens: int
    format_met: bool | None = None  # the format instructions recognized in the prompt are
                                    # met (calm_edge.instructions); None: none recognized

    def vector(self) -> list[float]:
        def tri(b: bool | None) -> float:
            return 0.5 if b is None else float(b)
        return [self.mean_logprob, max(self.min_logprob, -30.0), self.p10_logprob,
                float(self.stopped), tri(self.code_parses), math.log1p(self.tokens),
                tri(self.format_met)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Signals:
        cp, fm = d.get("code_parses"), d.get("format_met")
        return cls(float(d["mean_logprob"]), float(d["min_logprob"]), float(d["p10_logprob"]),
                   bool(d["stopped"]), None if cp is None else bool(cp), int(d["tokens"]),
                   None if fm is None else bool(fm))


def code_parses(text: str) -> bool:
    """The answer's code (its first fenced block, else all of it) is Python that parses and
    defines a function. Never executed."""
    m = _FENCE.search(text)
    code = m.group(1) if m else text
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(tree))


def signals_of(text: str, stats: GenerationStats, domain: str,
               prompt: str = "") -> Signals | None:
    """The signals of one answer to `prompt` (the last user message); None when the backend
    gave no log-probabilities."""
    c = stats.confidence
    if c is None:
        return None
    return Signals(c.mean_logprob, c.min_logprob, c.p10_logprob,
                   stats.finish_reason == "stop", code_parses(text) if domain == "code"
                   else None, stats.completion_tokens, format_met(prompt, text))


# -- fitting (offline) --------------------------------------------------------------------

def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0,
                 iters: int = 50) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularized logistic regression by Newton's method on standardized features.
    Returns (weights, bias, mean, scale) to apply as sigmoid(((x - mean) / scale) @ w + b)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    n, d = z.shape
    a = np.hstack([z, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a @ w)))
        grad = a.T @ (p - y) + reg * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return w[:-1], float(w[-1]), mean, scale


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (0.5: no signal), ties counted half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return 0.5
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return float(wins / (len(pos) * len(neg)))


@dataclass(frozen=True)
class ModeCut:
    """A threshold on P(correct), and what it gives on the data it was chosen on."""

    threshold: float
    accept_rate: float    # share of answers kept
    precision: float      # share of kept answers that were right


@dataclass(frozen=True)
class Acceptor:
    """P(correct | signals) for one (model, domain), with a cut per mode."""

    model: str
    domain: str
    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    auroc: float                     # out of fold, on the fitting data
    n: int
    base_rate: float                 # share right on that data
    cuts: Mapping[str, ModeCut] = field(default_factory=dict)
    escalate_to: str = ""            # the model the cuts were chosen against
    target_quality: float = 0.0      # its share right on the same queries

    def p_correct(self, s: Signals) -> float:
        z = (np.asarray(s.vector()) - np.asarray(self.mean)) / np.asarray(self.scale)
        return float(1.0 / (1.0 + math.exp(-(float(z @ np.asarray(self.weights)) + self.bias))))

    def decide(self, s: Signals, mode: str) -> tuple[bool, float, float]:
        """(keep the answer, P(correct), the threshold it was held to)."""
        cut = self.cuts.get(mode) or self.cuts.get("balanced")
        p = self.p_correct(s)
        threshold = cut.threshold if cut is not None else 1.0
        return p >= threshold, p, threshold


def choose_cut(p: Sequence[float], right: Sequence[bool], target: float) -> ModeCut:
    """The lowest threshold whose kept answers are right at least `target` of the time
    (escalating everything when none is). Pure; `p` are out-of-fold probabilities."""
    pairs = sorted(zip(p, right, strict=True), key=lambda t: -t[0])
    best = ModeCut(1.01, 0.0, 0.0)
    kept_right = 0
    for i, (pi, yi) in enumerate(pairs, 1):
        kept_right += int(yi)
        precision = kept_right / i
        if precision >= target and (i == len(pairs) or pairs[i][0] < pi):
            best = ModeCut(float(pi), i / len(pairs), precision)
    return best


def choose_cascade_cut(p: Sequence[float], right: Sequence[bool],
                       then_right: Sequence[bool], share: float | None) -> ModeCut:
    """The lowest threshold at which the cascade (keep the answers at or above it, give the
    rest to the stronger model) is right at least `share` x as often as the stronger model
    alone, on the same queries; with `share` None, the threshold at which the cascade is
    right most often (the lowest of equals). Pure; `p` are out-of-fold probabilities,
    `then_right` the stronger model's grades."""
    rows = sorted(zip(p, right, then_right, strict=True), key=lambda t: -t[0])
    n = len(rows)
    total_then = sum(then_right)
    goal = (share * total_then / n if n else 0.0) if share is not None else -1.0
    best, best_q = ModeCut(1.01, 0.0, 0.0), total_then / n if n else 0.0
    kept_right, gave_up = 0, 0   # right among the kept; stronger-model rights given up
    for i, (pi, yi, ti) in enumerate(rows, 1):
        kept_right += int(yi)
        gave_up += int(ti)
        q = (kept_right + total_then - gave_up) / n
        if i < n and rows[i][0] >= pi:
            continue  # a threshold keeps all answers of equal probability
        if (share is not None and q >= goal) or (share is None and q >= best_q):
            best, best_q = ModeCut(float(pi), i / n, kept_right / i), q
    return best


CASCADE_FILE = "cascade.json"


def default_cascade_path() -> Path:
    return bundled_dir("models") / "router" / CASCADE_FILE


def load_acceptors(path: Path) -> dict[tuple[str, str], Acceptor]:
    """The acceptors in a cascade artifact (models/router/cascade.json), by (model, domain).
    Raises ValueError naming the file when it is malformed."""
    try:
        doc = json.loads(path.read_text())
        out = {}
        for a in doc["acceptors"]:
            cuts = {m: ModeCut(float(c["threshold"]), float(c["accept_rate"]),
                               float(c["precision"])) for m, c in a["cuts"].items()}
            acc = Acceptor(a["model"], a["domain"], tuple(map(float, a["weights"])),
                           float(a["bias"]), tuple(map(float, a["mean"])),
                           tuple(map(float, a["scale"])), float(a["auroc"]), int(a["n"]),
                           float(a["base_rate"]), cuts, str(a.get("escalate_to", "")),
                           float(a.get("target_quality", 0.0)))
            if not len(acc.weights) == len(acc.mean) == len(acc.scale) == len(FEATURES):
                raise ValueError(f"{a['model']}/{a['domain']}: {len(acc.weights)} weights, "
                                 f"{len(acc.mean)} means, {len(acc.scale)} scales; expected "
                                 f"{len(FEATURES)} each")
            if not acc.escalate_to:
                raise ValueError(f"{a['model']}/{a['domain']}: no escalate_to")
            out[(acc.model, acc.domain)] = acc
        return out
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a cascade artifact: {e}") from None


def acceptor_to_json(a: Acceptor) -> dict[str, Any]:
    d = asdict(a)
    d["cuts"] = {m: asdict(c) for m, c in a.cuts.items()}
    return d
