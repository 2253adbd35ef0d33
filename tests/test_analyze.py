"""Table tests of Analyze (pure): running estimates, drift, quality, predictions."""

from __future__ import annotations

import dataclasses
import math

import pytest

from calm_edge.analyze import (
    ALL,
    AnalyzeParams,
    BetaQuality,
    Estimate,
    Knowledge,
    Observation,
    OutcomeFit,
    PageHinkley,
    SpeedPrior,
    Stat,
    feedback,
    observe,
    per_query_quality,
    predict,
    seed_priors,
)

P = AnalyzeParams()
PRIOR = SpeedPrior(decode_ms_per_token=50.0, prefill_ms_per_token=5.0, power_mw=10_000.0)


def obs(model: str = "m", domain: str = "code", *, decode_ms: float = 10.0, n_out: int = 21,
        n_in: int = 100, ttft_ms: float = 200.0, energy_mj: float | None = None,
        max_tokens: int = 256, slo_ms: float | None = None, error: bool = False,
        ts: float = 0.0) -> Observation:
    return Observation(model, domain, ts, n_in, n_out, ttft_ms,
                       ttft_ms + decode_ms * (n_out - 1), max_tokens, energy_mj, slo_ms, error)


def test_analyze_stat_is_exact_average_then_ewma() -> None:
    s = Stat()
    for x in (1.0, 2.0, 3.0):
        s = s.update(x, alpha_min=0.2)
    assert s.n == 3 and s.mean == pytest.approx(2.0)
    for _ in range(50):
        s = s.update(10.0, alpha_min=0.2)
    assert s.mean == pytest.approx(10.0, abs=1e-3)
    assert s.reset_to(4.0) == Stat(1, 4.0, 0.0)


def test_analyze_beta_quality() -> None:
    q = BetaQuality.prior(0.8, strength=10)
    assert q.mean == pytest.approx(0.8) and q.n == pytest.approx(10)
    for _ in range(10):
        q = q.update(0.0)
    assert q.mean == pytest.approx(0.4)
    assert 0 < q.std < 0.2


def test_analyze_observe_updates_model_and_domain_levels() -> None:
    k = Knowledge()
    for _ in range(3):
        k = observe(k, obs(energy_mj=2000.0, slo_ms=100.0), P)
    for dom in (ALL, "code"):
        e = k.estimate("m", dom)
        assert e.requests == 3 and e.slo_breaches == 3
        assert e.decode_ms_per_token.mean == pytest.approx(10.0)
        assert e.prefill_ms_per_token.mean == pytest.approx(2.0)
        assert e.completion_tokens.mean == pytest.approx(21.0)
        assert e.energy_mj_per_token.mean > 0
    assert k.estimate("m", "math").requests == 0
    # Answers cut by max_tokens say nothing about how long answers are.
    k2 = observe(k, obs(n_out=256, max_tokens=256), P)
    assert k2.estimate("m", "code").completion_tokens.n == 3
    assert k2.estimate("m", "code").limit_share.mean > 0
    # ... and one cut by a tiny max_tokens (a warm-up) says nothing about how often
    # answers run to their limit either.
    k4 = observe(k, obs(n_out=1, max_tokens=1), P)
    assert k4.estimate("m", "code").limit_share == k.estimate("m", "code").limit_share
    k3 = observe(k, obs(error=True), P)
    assert k3.estimate("m", "code").errors == 1
    assert k3.estimate("m", "code").decode_ms_per_token == k.estimate("m", "code") \
        .decode_ms_per_token


def test_analyze_a_domain_length_prior_anchors_the_first_answers() -> None:
    """A length prior that is this domain's (borrowed or the manifest's: `length_n`
    answers' worth) is shrunk toward the domain's own answers; without one, the domain
    borrows the model's other domains."""
    k = Knowledge()
    for _ in range(3):
        k = observe(k, obs(domain="code", n_out=201), P)
    k = observe(k, obs(domain="math", n_out=7), P)
    plain = predict(k, "m", "factual", 100, 256, PRIOR, P)
    assert plain.completion_tokens == pytest.approx((3 * 201 + 7) / 4, rel=0.05)
    anchored = dataclasses.replace(PRIOR, completion_tokens=4.0, length_n=1.0)
    assert predict(k, "m", "factual", 100, 256, anchored, P).completion_tokens == \
        pytest.approx(4.0)
    assert predict(k, "m", "math", 100, 256, dataclasses.replace(
        anchored, completion_tokens=100.0), P).completion_tokens == pytest.approx(53.5)


def test_analyze_predict_adds_the_prompt_overhead_the_model_showed() -> None:
    """The request's prompt estimate misses the model's template and system prompt: the
    difference seen in its answers is added to the next predictions."""
    k = Knowledge()
    for _ in range(3):
        k = observe(k, dataclasses.replace(obs(n_in=130, ttft_ms=260.0),
                                           prompt_tokens_est=100), P)
    assert k.estimate("m", ALL).prompt_overhead.mean == pytest.approx(30.0)
    pred = predict(k, "m", "math", prompt_tokens=20, max_tokens=256, prior=PRIOR, p=P)
    assert pred.ttft_ms == pytest.approx(2.0 * 50)  # 2 ms a token, 20 + 30 tokens


def test_analyze_predict_uses_priors_then_measurements() -> None:
    k = seed_priors(Knowledge(), {"m": {"code": 0.9, ALL: 0.6}}, P)
    cold = predict(k, "m", "code", prompt_tokens=100, max_tokens=256, prior=PRIOR, p=P)
    assert cold.quality == pytest.approx(0.9)
    assert cold.ttft_ms == pytest.approx(500.0)
    assert cold.latency_ms == pytest.approx(500.0 + 50.0 * (PRIOR.completion_tokens - 1))
    assert cold.energy_mj == pytest.approx(10_000.0 * cold.latency_ms / 1000)
    for _ in range(10):
        k = observe(k, obs(decode_ms=10.0, n_out=41), P)
    warm = predict(k, "m", "code", 100, 256, PRIOR, P)
    assert warm.latency_ms == pytest.approx(200.0 + 10.0 * 40, rel=0.01)
    assert warm.observations == 10
    assert predict(k, "m", "code", 100, 8, PRIOR, P).completion_tokens == 8  # capped
    # A domain never seen borrows the model-level speed.
    other = predict(k, "m", "writing", 100, 256, PRIOR, P)
    assert other.latency_ms == pytest.approx(warm.latency_ms, rel=0.01)


def test_analyze_drift_flags_then_recovers() -> None:
    k = Knowledge()
    for i in range(10):
        k = observe(k, obs(decode_ms=10.0, ts=i), P)
    assert not k.health_of("m").degraded
    flagged_after = None
    for i in range(10):
        k = observe(k, obs(decode_ms=30.0, ts=10 + i), P)  # throttled: 3x slower
        if k.health_of("m").degraded:
            flagged_after = i + 1
            break
    assert flagged_after is not None and flagged_after <= 3
    h = k.health_of("m")
    assert h.baseline_decode_ms == pytest.approx(10.0, rel=0.05) and h.alarms == 1
    # The speed estimate forgets the past at once: predictions show the slowdown now.
    assert k.estimate("m", ALL).decode_ms_per_token.mean == pytest.approx(30.0)
    for i in range(5):
        k = observe(k, obs(decode_ms=30.0, ts=20 + i), P)
    assert k.health_of("m").degraded
    for i in range(5):
        k = observe(k, obs(decode_ms=10.5, ts=30 + i), P)
        if not k.health_of("m").degraded:
            break
    assert not k.health_of("m").degraded and k.health_of("m").recoveries == 1
    assert k.estimate("m", ALL).decode_ms_per_token.mean < 12.0


def test_analyze_noise_does_not_alarm() -> None:
    k = Knowledge()
    for i in range(200):
        jitter = 1.0 + 0.15 * math.sin(i * 1.7)  # +-15% noise
        k = observe(k, obs(decode_ms=10.0 * jitter, ts=i), P)
    assert k.health_of("m").alarms == 0


def test_analyze_a_slowdown_within_the_recovery_band_never_raises_the_alarm() -> None:
    # 20% slower for a long while (contention, not throttling) builds up the Page-Hinkley
    # statistic, but an answer the detector would call recovered (< recover_ratio x the
    # healthy speed) must not flag the model either: it would flap back on the next one.
    k = Knowledge()
    for i in range(10):
        k = observe(k, obs(decode_ms=10.0, ts=i), P)
    for i in range(40):
        k = observe(k, obs(decode_ms=12.0, ts=10 + i), P)
        assert not k.health_of("m").degraded, i
    assert k.health_of("m").alarms == 0


def test_analyze_page_hinkley_statistic() -> None:
    ph = PageHinkley()
    for x in (0.0, 0.0, 0.0, 1.0, 1.0):
        ph = ph.update(x, delta=0.0)
    assert ph.statistic > 1.0


def test_analyze_feedback_moves_quality() -> None:
    k = seed_priors(Knowledge(), {"m": {"code": 0.5, ALL: 0.5}}, P)
    for _ in range(10):
        k = feedback(k, "m", "code", 1.0)
    assert k.estimate("m", "code").quality.mean == pytest.approx(0.75)
    assert k.estimate("m", ALL).quality.mean == pytest.approx(0.75)


def test_per_query_quality_recalibrates_the_outcome_model_in_the_large() -> None:
    # Nothing graded here: the outcome model's figure stands.
    assert per_query_quality(0.7, OutcomeFit(), 5.0) == 0.7
    # Graded answers that went as predicted leave it alone.
    assert per_query_quality(0.7, OutcomeFit(40, 0.6, 0.6), 5.0) == pytest.approx(0.7)
    # Predicted 0.8 where 0.4 came: every query of that (model, domain) comes down, in
    # logit space (a query the model finds easy stays above a hard one).
    fit = OutcomeFit(40, 0.4, 0.8)
    easy, hard = per_query_quality(0.9, fit, 5.0), per_query_quality(0.5, fit, 5.0)
    assert easy < 0.9 - 0.2 and hard < 0.5 - 0.2 and easy > hard
    # Few grades move it less than many (shrunk toward the prediction).
    assert per_query_quality(0.9, OutcomeFit(2, 0.4, 0.8), 5.0) > easy


def test_feedback_with_the_routing_time_prediction_updates_the_fit() -> None:
    k = Knowledge()
    for score in (1.0, 0.0, 0.0, 0.0):
        k = feedback(k, "m", "math", score, 0.8, 0.02)
    k = feedback(k, "m", "math", 1.0)  # no prediction (e.g. found after a restart): no fit
    fit = OutcomeFit.of(k.estimate("m", "math"), 0.02)
    assert (fit.n, fit.observed) == (4.0, 0.25) and fit.predicted == pytest.approx(0.8)
    assert k.estimate("m", "math").quality.n == pytest.approx(
        Knowledge().estimate("m", "math").quality.n + 5)
    assert OutcomeFit.of(k.estimate("m", ALL), 0.02).n == 0  # per domain only
    both = fit + OutcomeFit(4.0, 0.75, 0.6)
    assert (both.n, both.observed) == (8.0, 0.5) and both.predicted == pytest.approx(0.7)
    assert OutcomeFit.of(Estimate("m", "math", fit_observed=Stat(500, 0.5, 0.0)), 0.02).n == 50
