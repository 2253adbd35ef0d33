"""Table tests of Plan (pure): weights, SLO, load cost, quality floor, exploration."""

from __future__ import annotations

import dataclasses

import pytest

from calm_edge.analyze import Prediction
from calm_edge.plan import (
    CandidateInput,
    CascadeOption,
    NoModelAvailable,
    PlanParams,
    RequestInput,
    Weights,
    adjust_quality,
    plan_request,
)

BALANCED = Weights(1.0, 0.5, 0.2)
QUALITY = Weights(1.0, 0.05, 0.02)
FAST = Weights(1.0, 1.5, 0.2)
ECO = Weights(1.0, 0.2, 1.5)
NO_EXPLORE = PlanParams(explore_epsilon=0.0, probe_degraded_every=0)


def cand(name: str, q: float, latency_ms: float, energy_j: float, *, resident: bool = True,
         load_ms: float = 0.0, fits: bool = True, available: bool = True, n: int = 50,
         degraded: bool = False, since_used: int = 0) -> CandidateInput:
    pred = Prediction(quality=q, quality_std=0.05, ttft_ms=latency_ms / 10,
                      latency_ms=latency_ms, energy_mj=energy_j * 1000, completion_tokens=50,
                      observations=n, model_observations=n, degraded=degraded)
    return CandidateInput(name, available, None if available else "file missing", resident,
                          0.0 if resident else load_ms, fits, pred, since_used)


# A small fast model, a mid code model, a large accurate one (figures like the real fleet).
FLEET = [cand("small", 0.53, 600, 6), cand("coder", 0.70, 2500, 25),
         cand("large", 0.87, 6000, 60)]


def req(mode: str = "balanced", w: Weights = BALANCED, *, slo_ms: float | None = 20000,
        floor: float = 0.0, domain: str = "factual", difficulty: float | None = None,
        energy_budget_j: float | None = None, model: str = "auto") -> RequestInput:
    return RequestInput(model, domain, difficulty, mode, w, slo_ms, floor,
                        None if energy_budget_j is None else energy_budget_j * 1000)


@pytest.mark.parametrize(("mode", "weights", "expected"), [
    ("fast", FAST, "small"),
    ("balanced", BALANCED, "small"),
    ("eco", ECO, "small"),
    ("quality", QUALITY, "large"),
])
def test_plan_mode_weights_change_the_choice(mode: str, weights: Weights, expected: str) -> None:
    plan = plan_request(req(mode, weights), FLEET, NO_EXPLORE, draw=0.5)
    assert plan.model == expected
    assert mode in plan.reason and plan.model in {s.model for s in plan.scores}
    assert plan.scores[0].model == expected  # scores are sorted by utility
    assert set(plan.fallbacks) == {"small", "coder", "large"} - {expected}


def test_plan_code_domain_prefers_the_code_model() -> None:
    fleet = [cand("small", 0.30, 600, 6), cand("coder", 0.90, 2500, 25),
             cand("large", 0.97, 6000, 60)]
    assert plan_request(req(domain="code"), fleet, NO_EXPLORE, 0.5).model == "coder"
    assert plan_request(req("quality", QUALITY, domain="code"), fleet, NO_EXPLORE,
                        0.5).model == "large"


def test_plan_slo_excludes_a_slow_model() -> None:
    plan = plan_request(req("quality", QUALITY, slo_ms=3000), FLEET, NO_EXPLORE, 0.5)
    assert plan.model == "coder"
    large = next(s for s in plan.scores if s.model == "large")
    assert large.excluded is not None and "SLO" in large.excluded
    # An SLO nothing meets: relaxed, and the reason says so.
    plan = plan_request(req("quality", QUALITY, slo_ms=100), FLEET, NO_EXPLORE, 0.5)
    assert plan.model == "large" and plan.reason.startswith("no model meets the SLO")


def test_plan_load_cost_tips_toward_resident_model() -> None:
    a = cand("a", 0.80, 3000, 30, resident=True)
    b_warm = cand("b", 0.82, 3000, 30, resident=True)
    b_cold = cand("b", 0.82, 3000, 30, resident=False, load_ms=4000)
    assert plan_request(req(), [a, b_warm], NO_EXPLORE, 0.5).model == "b"
    plan = plan_request(req(), [a, b_cold], NO_EXPLORE, 0.5)
    assert plan.model == "a"
    cold = next(s for s in plan.scores if s.model == "b")
    assert cold.latency_ms == 7000 and not cold.resident


def test_plan_quality_floor_excludes_weak_model() -> None:
    plan = plan_request(req(floor=0.6), FLEET, NO_EXPLORE, 0.5)
    assert plan.model == "coder"
    small = next(s for s in plan.scores if s.model == "small")
    assert small.excluded is not None and "floor" in small.excluded
    plan = plan_request(req(floor=0.99), FLEET, NO_EXPLORE, 0.5)
    assert plan.reason.startswith("no model meets the quality floor")
    # Relaxed, the floor is what the strongest reaches (less 10%), not nothing: the weak
    # small model, the balanced favourite without a floor, is still out.
    assert plan.model == "large" and "kept the strongest (quality >= 0.78)" in plan.reason
    small = next(s for s in plan.scores if s.model == "small")
    assert small.excluded is not None and "floor 0.78" in small.excluded


def test_plan_energy_budget_and_ram_budget() -> None:
    plan = plan_request(req("quality", QUALITY, energy_budget_j=30), FLEET, NO_EXPLORE, 0.5)
    assert plan.model == "coder"
    # Power cap: large draws 60 J / 6 s = 10 W, coder 10 W, small 10 W; give large more.
    hungry = [*FLEET[:2], cand("large", 0.87, 6000, 120)]
    capped = dataclasses.replace(req("quality", QUALITY), power_cap_mw=15_000)
    plan = plan_request(capped, hungry, NO_EXPLORE, 0.5)
    assert plan.model == "coder"
    assert "power cap" in str(next(s for s in plan.scores if s.model == "large").excluded)
    fleet = [dataclasses.replace(FLEET[0], fits_budget=False), *FLEET[1:]]
    plan = plan_request(req(), fleet, NO_EXPLORE, 0.5)
    assert plan.model != "small" and "small" not in plan.fallbacks


def test_plan_difficulty_sends_hard_queries_up() -> None:
    # With the factual floor, an easy question stays small; a hard one is predicted to fail
    # on the small and mid models and goes to the large one.
    params = PlanParams(0.0, 0, difficulty_slope=3.0)
    easy = plan_request(req(difficulty=0.0, floor=0.5), FLEET, params, 0.5)
    hard = plan_request(req(difficulty=1.0, floor=0.5), FLEET, params, 0.5)
    assert easy.model == "small"
    assert hard.model == "large"
    assert next(s for s in hard.scores if s.model == "small").quality < 0.5
    assert adjust_quality(0.5, 0.5, 2.0) == pytest.approx(0.5)
    assert adjust_quality(0.5, 0.0, 2.0) > 0.5 > adjust_quality(0.5, 1.0, 2.0)


def test_plan_exploration_epsilon_and_degraded_probe() -> None:
    fleet = [cand("small", 0.53, 600, 6), cand("coder", 0.70, 2500, 25, n=2),
             cand("large", 0.87, 6000, 60, n=9)]
    params = PlanParams(explore_epsilon=0.1, probe_degraded_every=10)
    assert not plan_request(req(), fleet, params, draw=0.5).explored
    plan = plan_request(req(), fleet, params, draw=0.05)
    assert plan.explored and plan.model == "coder" and "exploring" in plan.reason
    # A degraded model unused for long enough is probed, deterministically.
    fleet[2] = cand("large", 0.87, 18000, 60, degraded=True, since_used=10)
    plan = plan_request(req(), fleet, params, draw=0.9)
    assert plan.model == "large" and plan.explored and "probing degraded" in plan.reason
    fleet[2] = cand("large", 0.87, 18000, 60, degraded=True, since_used=9)
    assert plan_request(req(), fleet, params, draw=0.9).model != "large"


def test_plan_pinned_and_unavailable() -> None:
    plan = plan_request(req(model="large"), FLEET, NO_EXPLORE, 0.5)
    assert (plan.model, plan.fallbacks, plan.reason) == ("large", (), "pinned by the request")
    fleet = [dataclasses.replace(FLEET[0], available=False), *FLEET[1:]]
    plan = plan_request(req(), fleet, NO_EXPLORE, 0.5)
    assert "small" not in (plan.model, *plan.fallbacks)
    gone = [cand(c.name, 0.5, 100, 1, available=False) for c in FLEET]
    with pytest.raises(NoModelAvailable, match="small: file missing"):
        plan_request(req(), gone, NO_EXPLORE, 0.5)


# -- cascades ----------------------------------------------------------------------------

def cascade(rate: float, precision: float = 0.95) -> CascadeOption:
    return CascadeOption("small", "large", threshold=0.6, accept_rate=rate,
                         precision=precision)


@pytest.mark.parametrize(("w", "option", "floor", "expected"), [
    # Half the answers kept at 95%: quality 0.91 > large's 0.87 at half large's time.
    (BALANCED, cascade(0.5), 0.0, "cascade"),
    # Keeps too few to pay for the cheap model's answer: the large model directly.
    (QUALITY, cascade(0.05, 0.8), 0.0, "large"),
    # In fast mode the small model alone is still best.
    (FAST, cascade(0.5), 0.0, "small"),
    # The floor: the small model alone misses it; the cascade's expected quality meets it.
    (BALANCED, cascade(0.5), 0.8, "cascade"),
    # A cascade whose precision is poor loses to the large model under a high floor.
    (BALANCED, cascade(0.6, 0.5), 0.8, "large"),
])
def test_plan_cascade_when_its_expected_utility_wins(w: Weights, option: CascadeOption,
                                                     floor: float, expected: str) -> None:
    plan = plan_request(req(w=w, floor=floor), FLEET, NO_EXPLORE, 0.5, cascades=[option])
    if expected == "cascade":
        assert plan.cascade == option and plan.model == "small"
        assert plan.fallbacks[0] == "large" and "cascade small -> large" in plan.reason
        assert "expected quality" in plan.reason
    else:
        assert plan.cascade is None and plan.model == expected


def test_plan_cascade_needs_its_escalation_target_and_the_slo() -> None:
    gone = [FLEET[0], FLEET[1], dataclasses.replace(FLEET[2], fits_budget=False)]
    assert plan_request(req(), gone, NO_EXPLORE, 0.5, cascades=[cascade(0.5)]).cascade is None
    # Worst case (both answer) 6.6 s over a 6.2 s SLO: not planned.
    tight = plan_request(req(slo_ms=6200), FLEET, NO_EXPLORE, 0.5, cascades=[cascade(0.5)])
    assert tight.cascade is None


def test_plan_exploration_skips_hopeless_models() -> None:
    """Exploration tries models with a fair chance only: never one the prior puts near
    zero next to the best."""
    fleet = [cand("best", 0.9, 600, 6, n=50), cand("hopeless", 0.05, 300, 3, n=0),
             cand("fair", 0.6, 500, 5, n=1)]
    params = PlanParams(explore_epsilon=1.0, probe_degraded_every=0)
    plan = plan_request(req(w=QUALITY), fleet, params, draw=0.0)
    assert plan.explored and plan.model == "fair"
    lone = plan_request(req(w=QUALITY), fleet[:2], params, draw=0.0)
    assert not lone.explored and lone.model == "best"


def test_plan_a_model_past_the_slo_does_not_set_the_scale() -> None:
    """A model predicted far past the SLO (say, measured while the CPU was busy) is out;
    it must not flatten the latency difference between the others either."""
    two = [cand("gemma", 0.82, 850, 8), cand("large", 0.94, 2100, 37)]
    outlier = cand("busy", 0.56, 41000, 560)
    w = Weights(1.0, 0.25, 0.1)
    alone = plan_request(req(w=w), two, NO_EXPLORE, draw=0.5)
    with_outlier = plan_request(req(w=w), [*two, outlier], NO_EXPLORE, draw=0.5)
    assert alone.model == with_outlier.model == "gemma"
    assert "busy" not in (with_outlier.model, *with_outlier.fallbacks[:1])


def test_plan_quality_mode_gives_a_near_tie_to_the_larger_model() -> None:
    small = dataclasses.replace(cand("gemma", 0.95, 400, 4), size_bytes=250 << 20)
    large = dataclasses.replace(cand("large", 0.96, 2500, 30), size_bytes=1100 << 20)
    plan = plan_request(req("quality", QUALITY), [small, large], NO_EXPLORE, draw=0.5)
    assert plan.model == "large" and "larger model takes a tie" in plan.reason
    # Not a tie: the smaller model is clearly better.
    better_small = dataclasses.replace(small, prediction=dataclasses.replace(
        small.prediction, quality=0.99))
    worse_large = dataclasses.replace(large, prediction=dataclasses.replace(
        large.prediction, quality=0.90))
    assert plan_request(req("quality", QUALITY), [better_small, worse_large], NO_EXPLORE,
                        draw=0.5).model == "gemma"
    # Balanced mode keeps its trade.
    assert plan_request(req("balanced", BALANCED), [small, large], NO_EXPLORE,
                        draw=0.5).model == "gemma"


def test_plan_untrusted_added_model_gets_only_pinned_requests() -> None:
    """An added model not yet calibrated here is never chosen, explored, cascaded to or a
    fallback for `auto`, however good its guessed quality; a pinned request reaches it; if
    it is the only available model it serves, and the reason says why."""
    why = "added, not calibrated on this device yet"
    added = dataclasses.replace(cand("mine", 0.99, 100, 1, since_used=1000), untrusted=why)
    fleet = [*FLEET, added]
    explore_always = PlanParams(explore_epsilon=1.0, probe_degraded_every=1)
    cascade = CascadeOption("mine", "large", 0.5, 0.9, 0.95)
    for mode, w in (("quality", QUALITY), ("fast", FAST), ("balanced", BALANCED)):
        for draw in (0.0, 0.5):
            plan = plan_request(req(mode, w), fleet, explore_always, draw, (cascade,))
            assert plan.model != "mine" and "mine" not in plan.fallbacks
            assert plan.cascade is None
            assert "mine" not in {s.model for s in plan.scores}
    plan = plan_request(req(), fleet, NO_EXPLORE, 0.5)
    assert f"not routed to mine ({why})" in plan.reason
    assert plan_request(req(model="mine"), fleet, NO_EXPLORE, 0.5).model == "mine"
    others_gone = [dataclasses.replace(c, available=False, unavailable_reason="file missing")
                   for c in FLEET]
    plan = plan_request(req(), [*others_gone, added], NO_EXPLORE, 0.5)
    assert plan.model == "mine" and "only models not yet calibrated here" in plan.reason
    trusted = dataclasses.replace(added, untrusted=None)
    assert plan_request(req("quality", QUALITY), [*FLEET, trusted], NO_EXPLORE, 0.5).model \
        == "mine"
