"""Plan: choose the model for a request. Pure: a frozen snapshot in, a decision out.

For `model: "auto"` every available candidate gets a utility

    U = w_q * quality - w_l * latency / latency_max - w_e * energy / energy_max

where quality is the predicted probability of a good answer (adjusted for the query's
difficulty), latency includes loading the model if it is not resident, and both cost
terms are normalised by the largest prediction among the candidates (so the weights mean
the same on a Raspberry Pi and on an AGX Orin). Weights come from the request's mode (the
energy pacing's effective mode when the request names none: `mode_note` says why). Near a
thermal trip point (`RequestInput.thermal`) the energy weight grows by the closeness to it
x its weight: cheaper, cooler models win, and the reason says so and which model lost.

Hard constraints: predicted latency within the SLO, the model fits the RAM budget (after
evicting models not in use), predicted quality at or above the domain's floor, the model
is not demoted in the domain by its calibration on this device, predicted energy within
the per-query budget and mean power under the power cap when those are set. If no
candidate meets them all they are relaxed in that order of importance (energy, SLO, then
quality floor and demotion: the floor lowered to 0.9 x the best predicted quality, so the
choice stays among the strongest) and the reason says so. A model added by the user and
not yet calibrated on this device (`untrusted`) is left out of `auto` routing altogether
(pinned requests reach it) unless nothing else is available. Exploration: a degraded model
is probed every `probe_degraded_every` requests so recovery is noticed; otherwise with
probability `explore_epsilon` the least-observed feasible candidate is tried. Every plan
carries the scores and a readable reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from calm_edge.analyze import Prediction
from calm_edge.field.state import ThermalPressure


@dataclass(frozen=True)
class Weights:
    quality: float
    latency: float
    energy: float


@dataclass(frozen=True)
class RequestInput:
    requested_model: str          # "auto" or a fleet model name
    domain: str
    difficulty: float | None      # 0 easy .. 1 hard; None when unknown
    mode: str
    weights: Weights
    slo_ms: float | None
    quality_floor: float
    energy_budget_mj: float | None = None
    power_cap_mw: float | None = None
    thermal: ThermalPressure | None = None  # near a trip point: energy weighs more
    mode_note: str | None = None            # why `mode` is what it is (energy pacing)


@dataclass(frozen=True)
class CandidateInput:
    name: str
    available: bool
    unavailable_reason: str | None
    resident: bool
    load_ms: float                # predicted time to load it; 0 when resident
    fits_budget: bool             # loadable without evicting models in use or pinned
    prediction: Prediction
    since_used: int               # requests served since this model last answered one
    per_query_quality: bool = False  # quality already judged for this query (no difficulty
                                     # adjustment on top)
    demoted: str | None = None    # why calibration keeps it off this domain on this device
    size_bytes: int = 0           # the model file: in quality mode, near-ties go to the larger
    untrusted: str | None = None  # why `auto` may not route to it yet (an added model not
                                  # calibrated on this device); pinned requests still reach it


@dataclass(frozen=True)
class PlanParams:
    explore_epsilon: float = 0.05
    probe_degraded_every: int = 10
    difficulty_slope: float = 2.0


@dataclass(frozen=True)
class CandidateScore:
    model: str
    utility: float
    quality: float
    latency_ms: float             # including load
    energy_mj: float
    resident: bool
    excluded: str | None          # why it was not eligible, if it was not

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "utility": round(self.utility, 4),
                "quality": round(self.quality, 3), "latency_ms": round(self.latency_ms, 1),
                "energy_j": round(self.energy_mj / 1000, 3), "resident": self.resident,
                "excluded": self.excluded}


@dataclass(frozen=True)
class Plan:
    model: str
    fallbacks: tuple[str, ...]
    reason: str
    scores: tuple[CandidateScore, ...] = ()
    explored: bool = False
    cascade: CascadeOption | None = None  # `model` answers first; escalate to cascade.then


@dataclass(frozen=True)
class CascadeOption:
    """A cheap model answers first and its answer is kept when its calibrated confidence
    clears `threshold`; otherwise the query escalates to `then`. `accept_rate` and
    `precision` are what that threshold gave on graded answers of this domain."""

    first: str
    then: str
    threshold: float
    accept_rate: float
    precision: float


class NoModelAvailable(RuntimeError):
    pass


class BudgetExhausted(NoModelAvailable):
    """The energy budget is spent and the profile says refuse (503). `retry_after_s`: when
    a period budget starts afresh, or None (a battery: when it charges)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def adjust_quality(q: float, difficulty: float | None, slope: float) -> float:
    """Shift the success probability in logit space by the query's difficulty."""
    if difficulty is None or slope == 0:
        return q
    q = min(max(q, 1e-4), 1 - 1e-4)
    z = math.log(q / (1 - q)) + slope * (0.5 - difficulty)
    return 1.0 / (1.0 + math.exp(-z))


_FLOOR = "quality "  # how an exclusion by the quality floor (a preference) begins


def _exclusion(c: CandidateInput, q: float, lat: float, e: float, req: RequestInput,
               level: int, floor: float) -> str | None:
    """Constraint check; `level` relaxes: 0 all, 1 no energy, 2 no SLO, 3 the floor
    lowered to what the strongest candidate reaches (`floor`)."""
    if not c.fits_budget:
        return "does not fit the RAM budget"
    if level < 1 and req.energy_budget_mj is not None and e > req.energy_budget_mj:
        return f"predicted {e / 1000:.1f} J > energy budget {req.energy_budget_mj / 1000:.1f} J"
    if level < 1 and req.power_cap_mw is not None and lat > 0 \
            and e / lat * 1000 > req.power_cap_mw:
        return f"predicted {e / lat:.1f} W > power cap {req.power_cap_mw / 1000:.1f} W"
    if level < 2 and req.slo_ms is not None and lat > req.slo_ms:
        return f"predicted {lat:.0f} ms > SLO {req.slo_ms:.0f} ms"
    if level < 3 and c.demoted:
        return c.demoted
    if q < floor:
        return f"{_FLOOR}{q:.2f} < floor {floor:.2f} for {req.domain}"
    return None


# Quality mode: predicted qualities this close are a tie, and the larger model takes it (a
# per-query estimate that puts a 270M model level with a 1.5B one on an easy question is
# within its error, and quality mode asked for the safer answer).
QUALITY_TIE = 0.03

# Exploration tries only models predicted at least this share of the best one's quality.
EXPLORE_MIN_SHARE = 0.5

# When no model reaches the quality floor, the floor drops to this share of the best
# predicted quality: the choice stays among the strongest models (a faster one that is
# nearly as good may win), never the cheapest of the weak ones.
RELAXED_FLOOR_SHARE = 0.9

_RELAXED = ("", "no model meets the energy budget or power cap; ", "no model meets the SLO; ",
            "no model meets the quality floor; ")


def plan_request(req: RequestInput, cands: Sequence[CandidateInput], params: PlanParams,
                 draw: float, cascades: Sequence[CascadeOption] = ()) -> Plan:
    """Choose a model, or a cascade of two when its expected utility is higher. `draw` is
    a uniform random number in [0, 1) for exploration.

    A cascade's expectations: quality = accept_rate x precision + (1 - accept_rate) x
    q(then); latency and energy = first's + (1 - accept_rate) x then's. It needs `then`
    eligible under the same constraints, `first` eligible except for the quality floor
    (the cascade's expected quality must meet it), and the worst case (both answer)
    within the SLO."""
    if req.requested_model != "auto":
        return Plan(req.requested_model, (), "pinned by the request")
    usable = [c for c in cands if c.available]
    if not usable:
        why = "; ".join(f"{c.name}: {c.unavailable_reason}" for c in cands)
        raise NoModelAvailable(f"no model of the fleet can serve ({why})")
    # Untrusted models are neither chosen, explored, cascaded nor fallbacks, unless no
    # other model is available at all (then serving beats refusing).
    untrusted = [c for c in usable if c.untrusted]
    trust_note = ""
    if len(untrusted) == len(usable):
        trust_note = "only models not yet calibrated here are available: " + ", ".join(
            f"{c.name} ({c.untrusted})" for c in untrusted) + "; "
    elif untrusted:
        usable = [c for c in usable if not c.untrusted]
    w = req.weights
    thermal = req.thermal
    plain = w  # the weights without thermal pressure, to say what it changed
    if thermal is not None:
        w = Weights(w.quality, w.latency, w.energy + thermal.extra_energy_weight)
    rows = []
    for c in usable:
        q = c.prediction.quality if c.per_query_quality else adjust_quality(
            c.prediction.quality, req.difficulty, params.difficulty_slope)
        lat = c.prediction.latency_ms + (0.0 if c.resident else c.load_ms)
        rows.append((c, q, lat, c.prediction.energy_mj))
    best_q = max((q for c, q, _, _ in rows if c.fits_budget), default=0.0)
    for level in range(4):
        floor = req.quality_floor if level < 3 else \
            min(req.quality_floor, RELAXED_FLOOR_SHARE * best_q)
        excluded = {c.name: _exclusion(c, q, lat, e, req, level, floor)
                    for c, q, lat, e in rows}
        eligible = [r for r in rows if excluded[r[0].name] is None]
        if eligible:
            break
    else:
        eligible = rows
        level = 4
    # Latency and energy are scaled by the largest among the models that meet the hard
    # constraints (the quality floor aside): one that cannot be chosen (say one measured
    # while the CPU was busy, predicted past the SLO) does not flatten every other
    # difference.
    feasible = [r for r in rows if excluded[r[0].name] is None
                or str(excluded[r[0].name]).startswith(_FLOOR)] or eligible
    lat_max = max(r[2] for r in feasible) or 1.0
    e_max = max(r[3] for r in feasible) or 1.0
    utility = {c.name: w.quality * q - w.latency * lat / lat_max - w.energy * e / e_max
               for c, q, lat, e in rows}
    plain_u = {c.name: plain.quality * q - plain.latency * lat / lat_max
               - plain.energy * e / e_max for c, q, lat, e in rows}
    scores = tuple(sorted(
        (CandidateScore(c.name, utility[c.name], q, lat, e, c.resident, excluded.get(c.name))
         for c, q, lat, e in rows), key=lambda s: (-s.utility, s.latency_ms, s.model)))
    ranked = sorted(eligible, key=lambda r: (-utility[r[0].name], r[2], r[0].name))
    best = ranked[0]
    tie_note = ""
    if req.mode == "quality":
        q_top = max(r[1] for r in ranked)
        larger = max((r for r in ranked if r[1] >= q_top - QUALITY_TIE),
                     key=lambda r: (r[0].size_bytes, r[1]))
        if larger is not best and larger[0].size_bytes > best[0].size_bytes:
            tie_note = f"; {larger[0].name} over {best[0].name}: predicted quality within " \
                       f"{QUALITY_TIE:g}, the larger model takes a tie in quality mode"
            ranked.remove(larger)
            ranked.insert(0, larger)
            best = larger
    prefix = _RELAXED[level] if level < 4 else "nothing fits the RAM budget; "
    if level == 3:
        prefix += f"kept the strongest (quality >= {floor:.2f}); "
    if thermal is not None:
        unheated = min(eligible, key=lambda r: (-plain_u[r[0].name], r[2], r[0].name))
        prefix += f"near a thermal trip point ({thermal.note}): preferring cheaper models"
        if unheated is not best:
            prefix += f" ({best[0].name} over {unheated[0].name})"
        prefix += "; "
    if req.mode_note:
        prefix = f"{req.mode_note}; " + prefix
    prefix = trust_note + prefix

    chosen, explored = best, False
    reason = prefix + _why(best, ranked, req) + tie_note
    cascade = _best_cascade(cascades, rows, excluded, req, w, lat_max, e_max, floor, level)
    if cascade is not None and cascade[1] > utility[best[0].name]:
        option, _, q_c, lat_c = cascade
        fallbacks = (option.then, *(r[0].name for r in ranked
                                    if r[0].name not in (option.first, option.then)))
        return Plan(option.first, fallbacks,
                    prefix + f"cascade {option.first} -> {option.then} for {req.domain}: "
                    f"expected quality {q_c:.2f}, {lat_c:.0f} ms (keeps "
                    f"{option.accept_rate:.0%} of answers, {option.precision:.0%} right); "
                    f"best direct {best[0].name} (quality {best[1]:.2f}, {best[2]:.0f} ms)",
                    scores, False, option)
    demoted = [c.name for c, _, _, _ in rows if c.demoted and excluded[c.name] == c.demoted]
    if demoted:
        reason += "; " + "; ".join(f"{n} {excluded[n]}" for n in demoted)
    if untrusted and not trust_note:
        reason += "; not routed to " + ", ".join(f"{c.name} ({c.untrusted})"
                                                 for c in untrusted)
    probes = [r for r in ranked[1:] if r[0].prediction.degraded
              and params.probe_degraded_every > 0
              and r[0].since_used >= params.probe_degraded_every]
    if probes:
        chosen = max(probes, key=lambda r: (r[0].since_used, r[0].name))
        explored = True
        reason = f"probing degraded {chosen[0].name} for recovery " \
                 f"(unused for {chosen[0].since_used} requests)"
    elif draw < params.explore_epsilon and (hopeful := [
            r for r in ranked[1:] if r[1] >= EXPLORE_MIN_SHARE * best[1]]):
        # Only models with a fair chance: trying one the prior gives near-zero quality
        # (a base model on a math word problem) costs a wrong answer and teaches little.
        chosen = min(hopeful, key=lambda r: (r[0].prediction.observations, r[0].name))
        explored = True
        reason = f"exploring {chosen[0].name} ({chosen[0].prediction.observations} " \
                 f"observations for {req.domain}; epsilon {params.explore_epsilon:g})"
    fallbacks = tuple(r[0].name for r in ranked if r is not chosen) + tuple(
        r[0].name for r in rows if r not in ranked and r[0].fits_budget)
    return Plan(chosen[0].name, fallbacks, reason, scores, explored)


Row = tuple[CandidateInput, float, float, float]  # candidate, quality, latency ms, energy mJ


def _best_cascade(options: Sequence[CascadeOption], rows: Sequence[Row],
                  excluded: dict[str, str | None],
                  req: RequestInput, w: Weights, lat_max: float, e_max: float, floor: float,
                  level: int) -> tuple[CascadeOption, float, float, float] | None:
    """The cascade with the highest expected utility that meets the constraints, with its
    (utility, expected quality, expected latency), or None."""
    by_name = {r[0].name: r for r in rows}
    best: tuple[CascadeOption, float, float, float] | None = None
    for o in options:
        a, b = by_name.get(o.first), by_name.get(o.then)
        if a is None or b is None or excluded.get(o.then) is not None:
            continue
        why_a = excluded.get(o.first)
        if why_a is not None and not why_a.startswith(_FLOOR):
            continue  # only the floor may exclude the first model: the cascade's counts
        keep = o.accept_rate
        q = keep * o.precision + (1 - keep) * b[1]
        lat = a[2] + (1 - keep) * b[2]
        e = a[3] + (1 - keep) * b[3]
        if q < floor or (level < 2 and req.slo_ms is not None and a[2] + b[2] > req.slo_ms):
            continue
        u = w.quality * q - w.latency * lat / lat_max - w.energy * e / e_max
        if best is None or u > best[1]:
            best = (o, u, q, lat)
    return best


def _why(best: tuple[CandidateInput, float, float, float],
         ranked: list[tuple[CandidateInput, float, float, float]], req: RequestInput) -> str:
    c, q, lat, e = best
    head = (f"best {req.mode} utility for {req.domain}: quality {q:.2f}, "
            f"{lat:.0f} ms, {e / 1000:.1f} J")
    if len(ranked) > 1:
        r = ranked[1]
        head += f"; next {r[0].name} (quality {r[1]:.2f}, {r[2]:.0f} ms, {r[3] / 1000:.1f} J)"
    if not c.resident:
        head += f"; includes a {c.load_ms:.0f} ms load"
    return head
