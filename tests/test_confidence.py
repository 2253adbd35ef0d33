"""Signals after the answer and the acceptors calibrated on them (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calm_edge.backends.base import GenerationStats, TokenConfidence
from calm_edge.confidence import (
    Acceptor,
    ModeCut,
    Signals,
    acceptor_to_json,
    auroc,
    choose_cascade_cut,
    choose_cut,
    code_parses,
    fit_logistic,
    load_acceptors,
    signals_of,
)


def stats(finish: str = "stop", lps: list[float] | None = None) -> GenerationStats:
    lps = [-0.1, -0.2, -2.0] if lps is None else lps
    return GenerationStats(10, len(lps), finish, 0.1, 0.5,  # type: ignore[arg-type]
                           TokenConfidence.of(lps))


def test_confidence_token_summary() -> None:
    c = TokenConfidence.of([-0.1] * 9 + [-5.0])
    assert c is not None and c.tokens == 10
    assert c.min_logprob == -5.0 and c.mean_logprob == pytest.approx(-0.59)
    assert c.p10_logprob == -0.1 and TokenConfidence.of([]) is None


@pytest.mark.parametrize(("text", "ok"), [
    ("```python\ndef f(x):\n    return x + 1\n```", True),
    ("def f(x):\n    return x + 1\n", True),
    ("```python\ndef f(x):\n    return x +\n```", False),       # a syntax error
    ("```python\nx = 1\n```", False),                           # parses, defines nothing
    ("The answer is 42.", False),
])
def test_confidence_code_parses_without_running(text: str, ok: bool) -> None:
    assert code_parses(text) is ok


def test_confidence_signals_of_an_answer() -> None:
    s = signals_of("```python\ndef f():\n    pass\n```", stats(), "code")
    assert s is not None and s.code_parses is True and s.stopped and s.tokens == 3
    assert signals_of("Paris", stats("length"), "factual") == Signals(
        pytest.approx(-0.7667, abs=1e-3), -2.0, -2.0, False, None, 3)  # type: ignore[arg-type]
    # A format instruction in the prompt is checked against the answer.
    upper = signals_of("PARIS", stats(), "factual", "Answer in all capital letters.")
    lower = signals_of("Paris", stats(), "factual", "Answer in all capital letters.")
    assert upper is not None and upper.format_met is True
    assert lower is not None and lower.format_met is False
    no_lp = GenerationStats(1, 1, "stop", 0.1, 0.1)
    assert signals_of("x", no_lp, "factual") is None  # a backend without log-probabilities


def test_confidence_logistic_and_auroc_separate_right_from_wrong() -> None:
    rng = np.random.default_rng(0)
    right = rng.normal(-0.2, 0.1, (60, 1))
    wrong = rng.normal(-1.5, 0.3, (60, 1))
    x = np.vstack([right, wrong])
    y = np.array([1.0] * 60 + [0.0] * 60)
    w, b, mean, scale = fit_logistic(x, y)
    p = 1 / (1 + np.exp(-(((x - mean) / scale) @ w + b)))
    assert auroc(list(p), [bool(v) for v in y]) > 0.99
    assert auroc([0.5, 0.5], [True, False]) == 0.5 and auroc([1.0], [True]) == 0.5


@pytest.mark.parametrize(("target", "threshold", "rate", "precision"), [
    (0.9, 0.6, 0.6, 1.0),     # the top three are right, the fourth wrong: keep three
    (0.75, 0.4, 0.8, 0.75),   # three right of the top four
    (1.01, 1.01, 0.0, 0.0),   # nothing is good enough: escalate everything
])
def test_confidence_choose_cut_table(target: float, threshold: float, rate: float,
                                     precision: float) -> None:
    p = [0.9, 0.8, 0.6, 0.4, 0.1]
    right = [True, True, True, False, False]
    assert choose_cut(p, right, target) == ModeCut(threshold, rate, precision)


@pytest.mark.parametrize(("share", "threshold", "rate"), [
    # The stronger model is right on all but the fourth query (0.8). Keeping the top two
    # costs nothing (both right); keeping the third loses one the stronger model had right.
    (1.0, 0.8, 0.4),
    (0.75, 0.4, 0.8),     # 3 of 5 right = 0.75 x 0.8; the fourth is free (both wrong)
    (0.5, 0.1, 1.0),      # everything kept: the small model alone is right 2 of 5
    (None, 0.8, 0.4),     # the most right (4 of 5), keeping the most answers that gives
])
def test_confidence_choose_cascade_cut_compares_on_the_same_queries(
        share: float | None, threshold: float, rate: float) -> None:
    p = [0.9, 0.8, 0.6, 0.4, 0.1]
    right = [True, True, False, False, False]
    then_right = [True, True, True, False, True]
    cut = choose_cascade_cut(p, right, then_right, share)
    assert (cut.threshold, cut.accept_rate) == (threshold, rate)


def test_confidence_acceptor_round_trip_and_decision(tmp_path: Path) -> None:
    acc = Acceptor("small", "factual", (1.0, 0, 0, 0, 0, 0, 0), 0.0, (0.0,) * 7, (1.0,) * 7,
                   0.8, 100, 0.7, {"balanced": ModeCut(0.6, 0.5, 0.95)}, "big", 0.9)
    path = tmp_path / "cascade.json"
    path.write_text(json.dumps({"acceptors": [acceptor_to_json(acc)]}))
    loaded = load_acceptors(path)[("small", "factual")]
    assert loaded == acc
    sure = Signals(2.0, -0.1, -0.1, True, None, 3)
    unsure = Signals(-1.0, -3.0, -2.0, True, None, 3)
    assert acc.decide(sure, "balanced")[0] and not acc.decide(unsure, "balanced")[0]
    assert acc.decide(sure, "fast")[2] == 0.6  # an unknown mode uses balanced's cut
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a cascade artifact"):
        load_acceptors(path)
