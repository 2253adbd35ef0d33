"""The MAPE-K loop's owner, and the owner of each request from arrival to answer.

Runs on the event loop and is the one owner of the loop's mutable state (the current
`Knowledge` value, usage counters, recent decisions). `serve` carries one request through
every stage, in one place:

1. the response cache (a hit ends here);
2. Monitor: classify the query (or take `calm.domain`), size the prompt;
3. Plan (pure): predictions from the current Knowledge for every candidate, plus their
   residency and availability, go into `plan_request`;
4. Execute, as a sequence of attempts: the scheduler grants a lease on the planned model
   (queueing, loading, evicting as needed), the executor streams its answer; a model that
   fails before answering gives way to the plan's next candidate;
5. Analyze (pure): the completion (latency, tokens, energy over the generation window) is
   folded into the Knowledge; drift detection runs;
6. Knowledge: the request, the decision and the changed estimates are committed to the
   store before the last event goes out.

Field conditions (calm_edge.field; `observe_field`, when a request is routed and on the
housekeeping tick): a change of power mode or frequency cap rescales every speed estimate
at once (Analyze's `rescale_speeds`); a thermal trip point close by makes Plan lean to
cheaper models; an energy budget sets the effective mode of requests that name none
(the pure pacing controller), and an exhausted one forces eco or refuses.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from calm_edge.analyze import (
    ALL,
    AnalyzeParams,
    BetaQuality,
    Knowledge,
    Observation,
    OutcomeFit,
    SpeedPrior,
    SpeedRatio,
    Stat,
    feedback,
    observe,
    per_query_quality,
    predict,
    rescale_speeds,
    seed_priors,
    speed_ratio,
)
from calm_edge.backends.base import (
    ContextOverflowError,
    GenerationRequest,
    GenerationStats,
    ModelState,
)
from calm_edge.cache import CachedAnswer, ResponseCache
from calm_edge.calibration.results import (
    CalibrationParams,
    DevicePriors,
    ModelCalibration,
    device_priors,
)
from calm_edge.calibration.runner import load_canaries
from calm_edge.classifier import QueryClassifier
from calm_edge.confidence import Acceptor, signals_of
from calm_edge.config import Settings
from calm_edge.domains import DOMAINS
from calm_edge.energy import EnergyIntegrator, RequestWindow, attribute_energy, energy_kind
from calm_edge.events import Delta, Final
from calm_edge.execute import Abort, AllCandidatesFailed, Attempt, Executor, Generation
from calm_edge.field import (
    FieldMonitor,
    FieldObservation,
    Pacing,
    PowerChange,
    PowerState,
    ThermalPressure,
    pace_mode,
    power_change,
    thermal_pressure,
)
from calm_edge.fleet import Fleet
from calm_edge.knowledge import DecisionRecord, KnowledgeStore, RequestRecord
from calm_edge.metrics import Metrics
from calm_edge.monitor import CHARS_PER_TOKEN, QueryObservation, observe_query, query_text
from calm_edge.plan import (
    BudgetExhausted,
    CandidateInput,
    CascadeOption,
    NoModelAvailable,
    Plan,
    PlanParams,
    RequestInput,
    Weights,
    plan_request,
)
from calm_edge.quotas import Client
from calm_edge.residency import ModelUnavailable, Residency
from calm_edge.scaling import (
    AnswerLength,
    MeasuredSpeed,
    borrowed_length,
    scaled_load_s,
    scaled_speed,
)
from calm_edge.scheduler import Cancelled, Lease, Overloaded, QueueTimeout, Scheduler

log = logging.getLogger("calm_edge.loop")
MiB = 1 << 20
# Answers a model gives in one power state before its mean speed there counts as measured
# (a ratio for the next change between the same states): the plain mean of those answers
# (an EWMA over the last ~20), not the running estimate, which started from a rescaled
# guess on entering the state.
MEASURED_MIN_ANSWERS = 3
STATE_ALPHA_MIN = 0.05


class OutcomePredictor(Protocol):
    """P(correct) per model for one query (calm_edge.outcome.OutcomeModel)."""

    def predict_text(self, text: str, domain: str) -> dict[str, float]: ...


class CanaryQuery(Protocol):
    """A graded calibration query (calm_edge.bench.workload.Query)."""

    @property
    def domain(self) -> str: ...

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class EnergyFigure:
    energy_j: float
    measured: bool
    source: str

    @property
    def kind(self) -> str:
        return energy_kind(self.measured)


@dataclass(frozen=True)
class ServeRequest:
    """One request as the HTTP layer hands it over."""

    rid: str
    kind: str                    # "chat" | "completion"
    model: str                   # "auto" or a fleet model's name
    request: GenerationRequest
    mode: str | None = None      # None: the profile's default mode
    slo_ms: float | None = None
    domain: str | None = None    # skips the classifier
    use_cache: bool = True
    priority: int = 0
    deadline_s: float = math.inf  # on the orchestrator's clock (time.monotonic)
    owner: int | None = None     # the requesting peer's uid (None: unknown, e.g. TCP)
    cache_scope: str = ""        # whose cached answers this request may get and add to
    client: Client | None = None  # whose quota it counts against (None: the daemon's own)


@dataclass(frozen=True)
class Answer:
    """How a request was served: the `Final` of `Orchestrator.serve`."""

    model: str
    reason: str
    stats: GenerationStats
    failed_attempts: tuple[Attempt, ...]
    wait_s: float
    latency_s: float
    query: QueryObservation
    mode: str
    explored: bool
    candidates: tuple[dict[str, object], ...]
    energy: EnergyFigure | None
    cache: str = "miss"   # "hit" (exact), "near" (near-duplicate), "miss", "bypass", "off"
    text: str = ""        # set for cache hits (the answer is not streamed from a model)
    cascade: str | None = None  # what a cascade did, e.g. "gemma3-270m (P=0.41 < 0.62) ->
                                # qwen2.5-coder-1.5b"
    p_correct: float | None = None  # the outcome model's P(correct) for `model` (raw)


@dataclass(frozen=True)
class CascadeTry:
    """The first, cheap answer of a cascade, and what became of it."""

    first: str
    then: str
    gen: Generation
    waited_s: float
    accepted: bool
    p_correct: float | None     # None: the backend gave no log-probabilities
    threshold: float
    answered: bool = False      # it is the answer given (accepted, or the request ended)

    def describe(self) -> str:
        p = "no confidence signals" if self.p_correct is None else \
            f"P={self.p_correct:.2f} {'>=' if self.accepted else '<'} {self.threshold:.2f}"
        if self.answered:
            return f"{self.first} kept ({p})"
        return f"{self.first} ({p}) -> {self.then}"


@dataclass(frozen=True)
class Routed:
    """Monitor's observation and Plan's decision for one request, before execution."""

    query: QueryObservation
    request: RequestInput
    plan: Plan
    cache: str = "off"   # "miss" when the answer may be cached, "bypass", or "off"
    p_correct: Mapping[str, float] | None = None  # the outcome model's, per model (raw)


@dataclass(frozen=True)
class LoopView:
    """A snapshot of the loop for status."""

    classifier_runtime: str
    served: int
    cache: dict[str, Any] | None
    domain_mix: dict[str, float]
    estimates: tuple[dict[str, Any], ...]
    health: tuple[dict[str, Any], ...]
    calibration: dict[str, dict[str, Any] | None]
    decisions: tuple[dict[str, Any], ...]   # newest first, every peer's
    knowledge: dict[str, Any] | None
    degraded: tuple[str, ...]
    cascades: dict[str, dict[str, int]]  # "model/domain": accepted and escalated counts
    field_state: dict[str, Any] | None = None  # power state, thermals, energy pacing


class FeedbackError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Recent:
    decisions: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=50))
    # request id -> (model, domain, the outcome model's raw P(correct) for that answer)
    answered_by: collections.OrderedDict[str, tuple[str, str, float | None]] = field(
        default_factory=collections.OrderedDict)


def _status(finish: str, abort: Abort | None) -> int:
    """The HTTP status a finished generation is logged with."""
    if finish == "cancelled" and abort is not None:
        return {"deadline": 504, "disconnected": 499}.get(abort.reason or "", 499)
    return 200


def _failure(e: Exception, abort: Abort | None) -> tuple[int, str]:
    """(status, error) a request that failed with `e` is recorded with."""
    status = 500
    if isinstance(e, (AllCandidatesFailed, NoModelAvailable)):
        status = 503
    elif isinstance(e, Overloaded):
        status = 429
    elif isinstance(e, QueueTimeout):
        status = 504
    elif isinstance(e, Cancelled):
        return _unanswered(abort)
    elif isinstance(e, ContextOverflowError):
        status = 400
    return status, f"{type(e).__name__}: {e}"


def _unanswered(abort: Abort | None) -> tuple[int, str]:
    """(status, error) a request is recorded with when it ended before its answer."""
    reason = abort.reason if abort is not None else None
    if reason == "stalled":
        return 499, "abandoned: the client stopped reading the response"
    if reason == "deadline":
        return 504, "deadline exceeded before the answer was delivered"
    return 499, "client closed request"


def canary_fits(outcome: OutcomePredictor, canaries: Sequence[CanaryQuery],
                results: Mapping[str, ModelCalibration], weight: float = 1.0,
                ) -> dict[tuple[str, str], OutcomeFit]:
    """Per (model, domain): the canaries' grades against the outcome model's P(correct) for
    the same canaries (a domain's answered canaries are the first `total` of the set in
    order, as calibration plans them), each canary counting as `weight` grades. Pure."""
    by_domain: dict[str, list[str]] = {}
    for q in canaries:
        by_domain.setdefault(q.domain, []).append(q.text)
    fits: dict[tuple[str, str], OutcomeFit] = {}
    for name, result in results.items():
        for domain, score in result.domains.items():
            texts = by_domain.get(domain, [])[:score.total]
            if not texts or len(texts) < score.total:
                continue
            preds = [outcome.predict_text(t, domain).get(name) for t in texts]
            if any(p is None for p in preds):
                continue
            fits[(name, domain)] = OutcomeFit(weight * score.total, score.rate,
                                              sum(p for p in preds if p is not None)
                                              / len(preds))
    return fits


def fleet_fingerprint(fleet: Fleet) -> str:
    """Changes whenever a model's file or prompt handling changes (invalidates the cache)."""
    parts = [f"{m.name}:{m.sha256}:{m.format}:{m.prompt_template}:{m.system_prompt}:"
             f"{','.join(m.stop)}" for m in fleet.models]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class Orchestrator:
    def __init__(self, settings: Settings, fleet: Fleet, residency: Residency,
                 scheduler: Scheduler, executor: Executor, classifier: QueryClassifier, *,
                 store: KnowledgeStore | None = None, knowledge: Knowledge | None = None,
                 energy: EnergyIntegrator | None = None, metrics: Metrics | None = None,
                 outcome: OutcomePredictor | None = None,
                 acceptors: Mapping[tuple[str, str], Acceptor] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 field: FieldMonitor | None = None) -> None:
        """`residency` is read for planning (which models are loaded, their footprints);
        everything that changes what is loaded goes through `scheduler`. `field` reads the
        power mode, caps, thermal zones and energy budget (None: none of that)."""
        self.residency, self.scheduler, self.executor = residency, scheduler, executor
        self.outcome = outcome
        # Cascade acceptors by (cheap model, domain) (calm_edge.confidence); models whose
        # backend gave no log-probabilities are not cascaded.
        self.acceptors: Mapping[tuple[str, str], Acceptor] = acceptors or {}
        self._no_confidence: set[str] = set()
        self.cascade_counts: dict[str, dict[str, int]] = {}
        self.classifier, self.store, self.energy = classifier, store, energy
        self.metrics = metrics or Metrics()
        self._clock, self._wall, self._rng = clock, wall_clock, rng or random.Random()
        self.knowledge = knowledge or Knowledge()
        # This device's calibration per model (current model files only), and the priors
        # the loop takes from it (calm_edge.calibration).
        self.calibration: dict[str, ModelCalibration] = {}
        self.device_priors: dict[str, DevicePriors] = {}
        # (model, domain) -> the outcome model's fit on this device's canaries
        self._canary_fit: dict[tuple[str, str], OutcomeFit] = {}
        self._canaries: list[CanaryQuery] | None = None  # the shipped set, read on first use
        self.served = 0                       # requests answered since start
        self._last_request_s = clock()        # when a request last arrived or finished
        self._last_used: dict[str, int] = {}  # model -> value of `served` when it last answered
        self._recent = _Recent(collections.deque(
            maxlen=settings.profile.loop.recent_decisions))
        self.cache: ResponseCache | None = None
        self.domain_mix: dict[str, float] = {}     # EWMA of recent domain frequencies
        self.candidate_demand: dict[str, float] = {}  # EWMA: among a plan's top two
        self._tasks: set[asyncio.Task[Any]] = set()
        # Field conditions: the latest observation, the power state the speed estimates
        # are for, what was measured per state, and the energy pacing in force.
        self.field = field
        self._field_obs: FieldObservation | None = None
        self._power: PowerState | None = None
        self._state_decode: dict[str, Stat] = {}            # decode ms/token in this state
        self._mode_speeds: dict[tuple[str, str], float] = {}  # (model, state) -> decode ms
        self._prior_scale: dict[str, float] = {}            # on priors, since the first state
        self.rescales: collections.deque[dict[str, Any]] = collections.deque(maxlen=10)
        self.pacing: Pacing | None = None
        self.apply(settings, fleet)

    # -- Monitor + Plan ---------------------------------------------------------------------

    def _speed_prior(self, name: str, domain: str,
                     measured: Sequence[MeasuredSpeed] | None = None,
                     lengths: Mapping[str, AnswerLength] | None = None) -> SpeedPrior:
        """Speeds and answer length before `name` has answered here: this device's
        calibration; else speeds scaled by weight bytes from the models measured here
        (`measured`, default: measured_speeds()), else guessed from the model's size and
        the profile. The domain's answer length: calibrated here, else the manifest's
        (measured elsewhere), else borrowed from the models that answered in it here
        (`lengths`, default: all that did), else a default."""
        if measured is None:
            measured = self.measured_speeds()
        if lengths is None:
            lengths = self._measured_lengths(domain)
        slot = self.residency.slots[name]
        weights_bytes = slot.weights_bytes
        loop = self.settings.profile.loop
        scale = self._prior_scale.get(name, 1.0)
        guess = SpeedPrior(
            decode_ms_per_token=loop.decode_ms_per_weight_mib * weights_bytes / MiB * scale,
            prefill_ms_per_token=loop.prefill_ms_per_weight_mib * weights_bytes / MiB * scale,
            power_mw=self.settings.profile.power.active_power_mw)
        own = self._own_speed(name)
        if own is None:
            scaled = scaled_speed(weights_bytes, [m for m in measured if m.model != name])
            if scaled is not None:
                own = scaled.decode_ms_per_token, scaled.prefill_ms_per_token
        if own is not None:
            guess = dataclasses.replace(
                guess, decode_ms_per_token=own[0],
                prefill_ms_per_token=own[1] or guess.prefill_ms_per_token)
        dev = self.device_priors.get(name)
        if dev is not None and domain in dev.domains:
            return dev.domain_length(domain, guess)
        manifest = slot.spec.prior_length(domain)
        if manifest is not None:
            return dataclasses.replace(guess, completion_tokens=manifest[0],
                                       limit_share=manifest[1],
                                       length_n=self.analyze_params.manifest_length_n)
        borrowed = borrowed_length([v for m, v in lengths.items() if m != name])
        if borrowed is None:
            return guess
        return dataclasses.replace(guess, completion_tokens=borrowed.natural_tokens,
                                   limit_share=borrowed.limit_share,
                                   length_n=self.analyze_params.borrowed_length_n)

    def _own_speed(self, name: str) -> tuple[float, float | None] | None:
        """(decode, prefill) ms per token of `name` from its calibration here, in the power
        state in force; None when it has none."""
        here = self._calibrated_speed(name)
        if here is not None:
            return here
        dev = self.device_priors.get(name)
        if dev is None or not dev.decode_ms_per_token:
            return None
        scale = self._prior_scale.get(name, 1.0)
        return dev.decode_ms_per_token * scale, \
            dev.prefill_ms_per_token * scale if dev.prefill_ms_per_token else None

    def measured_speeds(self) -> list[MeasuredSpeed]:
        """Every model with a speed measured on this device, in the power state in force:
        from its answers here, else its calibration. A degraded model is left out: its
        slowdown is its own until others show it too."""
        out = []
        for name, slot in self.residency.slots.items():
            if self.knowledge.health_of(name).degraded:
                continue
            e = self.knowledge.estimate(name, ALL)
            own = self._own_speed(name)
            decode = e.decode_ms_per_token.mean if e.decode_ms_per_token.n else \
                own[0] if own is not None else None
            if decode is None or decode <= 0:
                continue
            prefill = e.prefill_ms_per_token.mean if e.prefill_ms_per_token.n else \
                own[1] if own is not None else None
            out.append(MeasuredSpeed(name, slot.weights_bytes, decode, prefill))
        return out

    def _measured_lengths(self, domain: str) -> dict[str, AnswerLength]:
        """Per model that answered in `domain` here (requests, else calibration canaries):
        its natural answer length and share cut by max_tokens there."""
        out = {}
        for name in self.residency.slots:
            e = self.knowledge.estimate(name, domain)
            if e.completion_tokens.n:
                out[name] = AnswerLength(e.completion_tokens.mean, e.limit_share.mean
                                         if e.limit_share.n else 0.0)
                continue
            dev = self.device_priors.get(name)
            dom = dev.domains.get(domain) if dev is not None else None
            if dom is not None and dom.answer_tokens is not None:
                out[name] = AnswerLength(dom.answer_tokens, dom.limit_share)
        return out

    def _calibrated_speed(self, name: str) -> tuple[float, float | None] | None:
        """(decode, prefill) ms per token of `name` in the power state in force, from its
        calibration: measured in this state, else in the calibrated state of the nearest
        frequency capacity, scaled by the capacity ratio. None without either."""
        dev, state = self.device_priors.get(name), self._power
        if dev is None or state is None or not dev.speeds_by_mode:
            return None
        here = dev.speeds_by_mode.get(state.key)
        if here is not None:
            return here.decode_ms_per_token, here.prefill_ms_per_token
        cap = state.capacity(self._use_gpu())
        near = [s for s in dev.speeds_by_mode.values()
                if cap is not None and s.capacity and s.capacity_kind == cap[1]]
        if cap is None or not near:
            return None
        s = min(near, key=lambda s: abs(math.log((s.capacity or 1.0) / cap[0])))
        f = (s.capacity or cap[0]) / cap[0]
        return s.decode_ms_per_token * f, \
            s.prefill_ms_per_token * f if s.prefill_ms_per_token else None

    def _load_ms(self, name: str) -> float:
        """Predicted load time from the model's tier (warm: its file is in the page cache;
        cold: read from flash): the last load from that tier in this process, else the
        calibrated one, else scaled by file size from the loads of other models timed here
        from that tier, else a guess from the file size."""
        slot = self.residency.slots[name]
        warm = slot.tier == "warm"
        if slot.last_load_s is not None and slot.last_load_tier == slot.tier:
            return slot.last_load_s * 1000.0
        dev = self.device_priors.get(name)
        if dev is not None:
            calibrated = (dev.warm_load_s if warm else dev.cold_load_s) or dev.load_s()
            if calibrated:
                return calibrated * 1000.0
        timed = []
        for other, s in self.residency.slots.items():
            if other == name:
                continue
            if s.last_load_s is not None and s.last_load_tier == slot.tier:
                timed.append((other, s.spec.size_bytes, s.last_load_s))
                continue
            d = self.device_priors.get(other)
            t = (d.warm_load_s if warm else d.cold_load_s) if d is not None else None
            if t:
                timed.append((other, s.spec.size_bytes, t))
        scaled = scaled_load_s(slot.spec.size_bytes, timed)
        if scaled is not None:
            return scaled * 1000.0
        mib_per_s = self.settings.profile.loop.load_mib_per_s * (4 if warm else 1)
        return slot.spec.size_bytes / MiB / mib_per_s * 1000 + 100.0

    def candidates(self, domain: str, prompt_tokens: int, max_tokens: int,
                   p_correct: Mapping[str, float] | None = None) -> list[CandidateInput]:
        now = self._clock()
        res = self.residency
        held = {n: s.charged_bytes for n, s in res.slots.items()
                if s.state is ModelState.READY and (s.in_use or s.pinned)}
        out = []
        measured, lengths = self.measured_speeds(), self._measured_lengths(domain)
        for name, slot in res.slots.items():
            pred = predict(self.knowledge, name, domain, prompt_tokens, max_tokens,
                           self._speed_prior(name, domain, measured, lengths),
                           self.analyze_params)
            per_query = p_correct is not None and name in p_correct
            if p_correct is not None and name in p_correct:
                fit = self._canary_fit.get((name, domain), OutcomeFit()) + OutcomeFit.of(
                    self.knowledge.estimate(name, domain), self.analyze_params.fit_alpha_min)
                pred = dataclasses.replace(pred, quality=per_query_quality(
                    p_correct[name], fit, self.analyze_params.fit_prior_n))
            reason = slot.unavailable_reason(now)
            resident = slot.state is ModelState.READY
            others_held = sum(b for n, b in held.items() if n != name)
            out.append(CandidateInput(
                name=name, available=reason is None, unavailable_reason=reason,
                resident=resident, load_ms=0.0 if resident else self._load_ms(name),
                fits_budget=resident or slot.charged_bytes + others_held <= res.budget_bytes,
                prediction=pred,
                since_used=self.served - self._last_used.get(name, -10**9),
                per_query_quality=per_query, demoted=self._demoted(name, domain),
                size_bytes=slot.spec.size_bytes, untrusted=self._untrusted(name)))
        return out

    def _untrusted(self, name: str) -> str | None:
        """Why `auto` may not route to `name` yet: a model added by the user (its quality
        is a guess) until a complete calibration on this device for its current file."""
        spec = self.fleet.get(name)
        if spec is None or spec.added is None:
            return None
        cal = self.calibration.get(name)
        if cal is not None and cal.complete:
            return None
        return "added, not calibrated on this device yet"

    def _demoted(self, name: str, domain: str) -> str | None:
        dev = self.device_priors.get(name)
        dom = dev.domains.get(domain) if dev is not None else None
        return dom.demoted if dom is not None else None

    def apply(self, settings: Settings, fleet: Fleet) -> None:
        """(Re)configure from settings and a fleet: at start and on reload. What was learned
        is kept; new models start from their manifest priors; the cache is emptied when
        the fleet or the cache settings changed."""
        self.settings, self.fleet = settings, fleet
        loop = settings.profile.loop
        self.analyze_params = AnalyzeParams(
            alpha_min=loop.ewma_alpha_min, ph_delta=loop.drift_delta,
            ph_lambda=loop.drift_lambda, recover_ratio=loop.recover_ratio,
            quality_prior_strength=loop.quality_prior_strength)
        self.plan_params = PlanParams(explore_epsilon=loop.explore_epsilon,
                                      probe_degraded_every=loop.probe_degraded_every,
                                      difficulty_slope=loop.difficulty_slope)
        if self.field is not None:
            self.field.configure(settings.profile.field, settings.profile.energy)
        self._seed_quality()
        c = settings.profile.cache
        if not c.enabled:
            self.cache = None
        elif self.cache is None or (self.cache.max_entries, self.cache.max_bytes,
                                    self.cache.ttl_s, self.cache.near_duplicate,
                                    self.cache.near_threshold, self.cache.near_max_chars,
                                    self.cache.sampled) != (
                c.max_entries, c.max_bytes, c.ttl_s, c.near_duplicate, c.near_threshold,
                c.near_max_chars, c.sampled):
            self.cache = ResponseCache(
                max_entries=c.max_entries, max_bytes=c.max_bytes, ttl_s=c.ttl_s,
                near_duplicate=c.near_duplicate, near_threshold=c.near_threshold,
                near_max_chars=c.near_max_chars, sampled=c.sampled, clock=self._clock)
        if self.cache is not None:
            self.cache.set_fingerprint(fleet_fingerprint(fleet))

    def apply_calibration(self, results: Mapping[str, ModelCalibration]) -> None:
        """Take this device's calibration as the loop's priors: speeds, answer lengths,
        load times, quality per domain (manifest prior + canary results; what feedback
        taught is kept) and demotions. Results for another model file are ignored."""
        cal = self.settings.profile.calibration
        params = CalibrationParams(self.analyze_params.quality_prior_strength,
                                   cal.demote_ratio, cal.demote_p)
        self.calibration, self.device_priors = {}, {}
        for name, result in results.items():
            spec = self.fleet.get(name)
            if spec is None or spec.sha256 != result.sha256:
                continue
            self.calibration[name] = result
            manifest = {str(d): q for d, q in spec.quality.items()}
            self.device_priors[name] = device_priors(result, manifest, params)
        self._canary_fit = {}
        if self.outcome is not None and self.calibration:
            if self._canaries is None:
                self._canaries = list(load_canaries())
            self._canary_fit = canary_fits(self.outcome, self._canaries, self.calibration,
                                           self.analyze_params.fit_canary_weight)
        self._seed_quality()

    def _seed_quality(self) -> None:
        """Quality priors per (model, domain): calibrated where known, else the manifest's;
        the model-level prior is the mean over domains."""
        s = self.analyze_params.quality_prior_strength
        priors: dict[str, dict[str, BetaQuality]] = {}
        manifest: dict[str, dict[str, BetaQuality]] = {}
        for m in self.fleet.models:
            dev = self.device_priors.get(m.name)
            manifest[m.name] = {d: BetaQuality.prior(m.prior_quality(d), s) for d in DOMAINS}
            priors[m.name] = {d: dev.domains[d].quality if dev and d in dev.domains
                              else manifest[m.name][d] for d in DOMAINS}
            mean = sum(q.mean for q in priors[m.name].values()) / len(DOMAINS)
            priors[m.name][ALL] = BetaQuality.prior(mean, s)
            manifest[m.name][ALL] = BetaQuality.prior(
                sum(m.prior_quality(d) for d in DOMAINS) / len(DOMAINS), s)
        self.knowledge = seed_priors(self.knowledge, priors, self.analyze_params,
                                     baseline=manifest)

    def calibration_table(self) -> dict[str, dict[str, Any] | None]:
        """Per fleet model: its calibration on this device for status, or None."""
        return {m.name: self.calibration[m.name].to_status(self.device_priors.get(m.name))
                if m.name in self.calibration else None for m in self.fleet.models}

    # -- field conditions: power state, thermals, energy pacing ------------------------------

    def _use_gpu(self) -> bool:
        return self.settings.profile.runtime.n_gpu_layers != 0

    def observe_field(self) -> FieldObservation | None:
        """Poll the field monitor (at most every `[field] poll_s`; a few sysfs reads) and
        act on what changed: a new power state rescales every speed estimate at once; the
        energy budget sets the effective mode. On the event loop: when a request is
        routed, and on the housekeeping tick."""
        if self.field is None:
            return None
        obs = self.field.poll()
        if obs is self._field_obs:
            return obs
        self._field_obs = obs
        if obs.power is not None:
            if self._power is None:
                self._power = obs.power
            else:
                change = power_change(self._power, obs.power, use_gpu=self._use_gpu(),
                                      min_change=self.settings.profile.field.rescale_min_change)
                if change is not None:
                    self._rescale(change, obs.power)
        before = self.pacing
        self.pacing = pace_mode(obs.budget, before.mode if before is not None else None,
                                self.field.pacing_params)
        now = self.pacing
        if (before is None) != (now is None) or (
                before is not None and now is not None
                and (before.mode, before.exhausted) != (now.mode, now.exhausted)):
            log.warning("energy pacing: %s", "off (no budget to pace)" if now is None else
                        f"effective mode {now.mode}: {now.reason}")
        return obs

    def _rescale(self, change: PowerChange, new: PowerState) -> None:
        """Rescale every model's speed estimates for the new power state: by its
        calibrated ratio between the two states, else the one measured online in both,
        else the frequency ratio (calm_edge.analyze.speed_ratio)."""
        for name, decode in self._state_decode.items():
            if decode.n >= MEASURED_MIN_ANSWERS:
                self._mode_speeds[(name, change.old_key)] = decode.mean
        ratios: dict[str, SpeedRatio] = {}
        for name in self.residency.slots:
            dev = self.device_priors.get(name)
            cal = dev.speeds_by_mode if dev is not None else {}
            c_old, c_new = cal.get(change.old_key), cal.get(change.new_key)
            # Measured: from what the loop predicts now to what it measured in the new
            # state on an earlier visit (the estimate lands on that, whatever error it
            # carried); a model never measured goes by its speeds in both states.
            now = self.knowledge.estimate(name, ALL).decode_ms_per_token
            ratios[name] = speed_ratio(
                (c_old.decode_ms_per_token if c_old else None,
                 c_new.decode_ms_per_token if c_new else None),
                (now.mean if now.n else self._mode_speeds.get((name, change.old_key)),
                 self._mode_speeds.get((name, change.new_key))),
                change.frequency_ratio)
        self.knowledge = rescale_speeds(
            self.knowledge, {n: r.factor for n, r in ratios.items()},
            guessed={n for n, r in ratios.items() if r.source == "frequency"})
        for n, r in ratios.items():
            self._prior_scale[n] = self._prior_scale.get(n, 1.0) * r.factor
        self._power, self._state_decode = new, {}
        self.rescales.appendleft({
            "wall_ts": round(self._wall(), 3), "change": change.describe(),
            "from": change.old_key, "to": change.new_key,
            "models": {n: {"factor": round(r.factor, 4), "source": r.source}
                       for n, r in sorted(ratios.items())}})
        self.metrics.speed_rescales.inc()
        log.warning("%s: speed estimates rescaled at once (%s)", change.describe(),
                    ", ".join(f"{n} x{r.factor:.2f} ({r.source})"
                              for n, r in sorted(ratios.items())))

    def power_key(self) -> tuple[str, float | None, str | None] | None:
        """(key, frequency capacity, "cpu" | "gpu") of the power state the speed estimates
        are for, or None where no power state is read (the calibrator's `power_state`)."""
        state = self._power
        if state is None:
            return None
        cap = state.capacity(self._use_gpu())
        return (state.key, cap[0], cap[1]) if cap is not None else (state.key, None, None)

    def _effective_mode(self, requested: str | None, *, refuse: bool = True,
                        ) -> tuple[str, str | None]:
        """(mode, why) for a request asking for `requested` (None: the default). The
        request's own mode wins over the pacing's, unless the budget is exhausted: then
        eco only, or BudgetExhausted (503) where the profile says refuse."""
        default = self.settings.profile.qos.default_mode
        pacing = self.pacing
        if pacing is None:
            return requested or default, None
        if pacing.exhausted:
            if refuse and self.settings.profile.energy.on_exhausted == "refuse":
                budget = self._field_obs.budget if self._field_obs is not None else None
                retry = budget.resets_in_s if budget is not None else None
                until = f"; the next period starts in {retry / 60:.0f} min" \
                    if retry is not None else "; until the battery charges"
                raise BudgetExhausted(f"{pacing.reason}: requests are refused "
                                      f"([energy] on_exhausted = 'refuse'){until}", retry)
            overridden = f" (calm.mode {requested} overridden)" \
                if requested not in (None, "eco") else ""
            return "eco", f"{pacing.reason}: eco only{overridden}"
        if requested:
            return requested, None
        return pacing.mode, f"energy pacing: {pacing.mode} mode ({pacing.reason})"

    def _thermal_pressure(self) -> ThermalPressure | None:
        f, obs = self.settings.profile.field, self._field_obs
        if obs is None or not f.thermal:
            return None
        return thermal_pressure(obs.headroom, f.thermal_margin_c, f.thermal_weight)

    def field_status(self) -> dict[str, Any] | None:
        """The field conditions for status and /metrics (None without a field monitor)."""
        if self.field is None:
            return None
        obs = self._field_obs
        out: dict[str, Any] = obs.to_status() if obs is not None else {
            "power": None, "thermal": {"zones": [], "closest_trip": None}, "battery": None,
            "notes": []}
        out["speed_state"] = self._power.key if self._power is not None else None
        out["cap_ratios"] = self._power.cap_ratios() if self._power is not None else {}
        out["rescales"] = list(self.rescales)
        pressure = self._thermal_pressure()
        out["thermal"]["pressure"] = None if pressure is None else round(pressure.closeness, 3)
        e = self.settings.profile.energy
        budget = obs.budget if obs is not None else None
        pacing = self.pacing
        out["energy"] = {
            "kind": budget.kind if budget is not None else None,
            "budget_wh": round(budget.budget_wh, 3) if budget is not None else None,
            "remaining_wh": round(budget.remaining_wh, 3) if budget is not None else None,
            "remaining_s": round(budget.remaining_s, 1) if budget is not None else None,
            "even_rate_w": round(budget.even_rate_w, 3) if budget is not None else None,
            "spend_rate_w": round(budget.spend_rate_w, 3)
            if budget is not None and budget.spend_rate_w is not None else None,
            "pace": round(pacing.pace, 3) if pacing is not None and math.isfinite(pacing.pace)
            else None,
            "effective_mode": pacing.mode if pacing is not None
            else self.settings.profile.qos.default_mode,
            "exhausted": pacing.exhausted if pacing is not None else False,
            "on_exhausted": e.on_exhausted,
            "reason": pacing.reason if pacing is not None else "no energy budget to pace",
        }
        return out

    # -- serving a request -------------------------------------------------------------------

    def idle_s(self) -> float:
        """Seconds since a request was last routed or answered."""
        return self._clock() - self._last_request_s

    async def serve(self, req: ServeRequest, abort: Abort,
                    ) -> AsyncGenerator[Delta | Final[Answer], None]:
        """Serve one request end to end: deltas, then one Final(Answer), recorded in the
        knowledge store before it is yielded. `abort` stops the request (the client went
        away or stopped reading); the request's deadline stops it too.

        Raises, before any delta: NoModelAvailable, Overloaded (the queue is full or the
        predicted wait exceeds the deadline), QueueTimeout, Cancelled (the client left
        while queued), ContextOverflowError, AllCandidatesFailed; a backend error after
        output began propagates as it is."""
        t0 = self._clock()
        hit = self._cache_hit(req, t0)
        if hit is not None:  # answered from memory: no queue, no deadline
            if hit.text:
                yield Delta(hit.text)
            yield Final(hit)
            return
        routed = self.route(req)
        timer = asyncio.get_running_loop().call_later(
            max(req.deadline_s - self._clock(), 0.0), abort.set, "deadline") \
            if not math.isinf(req.deadline_s) else None
        recorded = False
        try:
            attempts: list[Attempt] = []
            cascade = routed.plan.cascade
            first: CascadeTry | None = None
            for model in (routed.plan.model, *routed.plan.fallbacks):
                # A cascade's first answer is held back until it is judged.
                held = cascade is not None and first is None and model == cascade.first
                lease = await self._lease(req, routed, model, abort, attempts)
                if lease is None:
                    continue
                gen: Generation | None = None
                error: str | None = None
                produced = False
                request = dataclasses.replace(req.request, confidence=True) if held \
                    else req.request
                try:
                    async with contextlib.aclosing(
                            self.executor.stream(lease, request, abort)) as stream:
                        async for item in stream:
                            if isinstance(item, Final):
                                gen = item.value
                            elif not held:
                                produced = True
                                yield item
                except ContextOverflowError:
                    raise
                except Exception as e:
                    error = f"{type(e).__name__}: {e}"
                    if produced:
                        raise  # output went out: no other model can take over now
                    log.exception("model %s failed before answering", model)
                    attempts.append(Attempt(model, error))
                    continue
                finally:
                    self.scheduler.release(lease, error=error)
                if gen is None:  # pragma: no cover - the executor ends with a Final
                    raise RuntimeError(f"{model}: generation ended without a result")
                if held:
                    assert cascade is not None
                    first = self._judge(cascade, gen, lease, routed, req.request)
                    if not first.accepted and not abort.is_set():
                        continue  # escalate (never after the client left or the deadline)
                    if gen.text:
                        yield Delta(gen.text)
                    first = dataclasses.replace(first, answered=True)
                answer = await self._complete(req, routed, gen, lease, attempts, t0, abort,
                                              first)
                recorded = True
                yield Final(answer)
                return
            raise AllCandidatesFailed(attempts)
        except Exception as e:
            if not recorded:
                recorded = True
                await self._record_failure(req, routed, t0, *_failure(e, abort))
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if not recorded:  # the client went away, was dropped, or we are stopping
                await self._record_failure(req, routed, t0, *_unanswered(abort))

    async def _lease(self, req: ServeRequest, routed: Routed, model: str, abort: Abort,
                     attempts: list[Attempt]) -> Lease | None:
        """A lease on `model` from the scheduler, or None (noted in `attempts`) when the
        model cannot be loaded; the scheduler's refusals propagate."""
        predicted_s = next((sc.latency_ms / 1000 for sc in routed.plan.scores
                            if sc.model == model), 0.0)
        try:
            return await self.scheduler.acquire(
                model, priority=req.priority, deadline_s=req.deadline_s,
                predicted_s=predicted_s, gone=abort.gone, client=req.client)
        except ModelUnavailable as e:
            attempts.append(Attempt(model, e.reason))
            return None

    def _judge(self, option: CascadeOption, gen: Generation, lease: Lease,
               routed: Routed, request: GenerationRequest) -> CascadeTry:
        """Keep the cascade's first answer, or escalate: its signals against the
        acceptor's threshold for the request's mode. A backend that gives no
        log-probabilities is never cascaded again."""
        domain, mode = routed.query.domain, routed.request.mode
        signals = signals_of(gen.text, gen.stats, domain,
                             query_text(request.messages, request.prompt))
        acceptor = self.acceptors.get((option.first, domain))
        p: float | None
        if signals is None or acceptor is None:
            self._no_confidence.add(option.first)
            ok, p, threshold = False, None, option.threshold
        else:
            ok, p, threshold = acceptor.decide(signals, mode)
        counts = self.cascade_counts.setdefault(f"{option.first}/{domain}",
                                                {"accepted": 0, "escalated": 0})
        counts["accepted" if ok else "escalated"] += 1
        self.metrics.cascades.inc(model=option.first, domain=domain,
                                  outcome="accepted" if ok else "escalated")
        return CascadeTry(option.first, option.then, gen, lease.waited_s, ok, p, threshold)

    # -- the response cache ---------------------------------------------------------------

    def _cache_hit(self, req: ServeRequest, t0: float) -> Answer | None:
        """A cache hit within the request's scope as a finished Answer (recorded in the
        knowledge store in the background), or None. No classification or planning
        happens on a hit."""
        if self.cache is None or not req.use_cache:
            return None
        self.observe_field()
        mode, _ = self._effective_mode(req.mode, refuse=False)  # a hit costs no energy
        hit = self.cache.get(req.kind, req.model, mode, req.request, scope=req.cache_scope)
        if hit is None:
            return None
        c, how = hit
        query = QueryObservation(c.domain, "cache", {}, None, c.stats.prompt_tokens, 0)
        answer = Answer(c.model, f"cache {'hit' if how == 'exact' else 'near-duplicate hit'}"
                        f" (answered by {c.model})", c.stats, (), 0.0, self._clock() - t0,
                        query, mode, False, (), None, cache="hit" if how == "exact" else "near",
                        text=c.text)
        self.metrics.cache_hits.inc(1, kind=how)
        self._remember(req.rid, answer, req.owner)
        if self.store is not None and self.store.note(RequestRecord(
                id=req.rid, ts=self._wall(), kind=req.kind, model=c.model, domain=c.domain,
                domain_source="cache", difficulty=None, mode=mode,
                prompt_tokens=c.stats.prompt_tokens, completion_tokens=c.stats.completion_tokens,
                ttft_ms=answer.latency_s * 1000, latency_ms=answer.latency_s * 1000,
                wait_ms=0.0, energy_j=None, energy_measured=None, finish=c.stats.finish_reason,
                status=200, cache_hit=True)):
            self._background(self._flush_soon())
        return answer

    async def _flush_soon(self) -> None:
        """Write queued cache-hit rows in one batch, a moment after the first one."""
        await asyncio.sleep(0.5)
        if self.store is not None:
            await self.store.flush()

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Wait for background work (cache-hit records); write what is queued."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            await self.store.flush()

    def route(self, req: ServeRequest) -> Routed:
        """Monitor the query and plan it (pure planning over a snapshot). Raises
        NoModelAvailable."""
        self._last_request_s = self._clock()
        p = self.settings.profile
        request = req.request
        self.observe_field()
        mode, mode_note = self._effective_mode(req.mode)  # raises BudgetExhausted
        query = observe_query(self.classifier, request.messages, request.prompt, req.domain)
        w = p.qos.weights(mode)  # type: ignore[arg-type]
        budget_j = p.loop.energy_budget_j
        inp = RequestInput(
            requested_model=req.model, domain=query.domain, difficulty=query.difficulty,
            mode=mode, weights=Weights(w.quality, w.latency, w.energy),
            slo_ms=req.slo_ms if req.slo_ms is not None else p.slo.latency_ms,
            quality_floor=p.loop.quality_floor.floor(query.domain),
            energy_budget_mj=budget_j * 1000 if budget_j > 0 else None,
            power_cap_mw=p.loop.power_cap_w * 1000 if p.loop.power_cap_w > 0 else None,
            thermal=self._thermal_pressure(), mode_note=mode_note)
        p_correct = None
        if self.outcome is not None and req.model == "auto":
            p_correct = self.outcome.predict_text(
                query_text(request.messages, request.prompt), query.domain)
        cands = self.candidates(query.domain, query.prompt_tokens_est,
                                request.params.max_tokens, p_correct)
        options = self._cascade_options(query.domain, mode) if req.model == "auto" else []
        plan = plan_request(inp, cands, self.plan_params, self._rng.random(), options)
        blind = sorted(first for (first, dom) in self.acceptors
                       if dom == query.domain and first in self._no_confidence)
        if blind and req.model == "auto":
            plan = dataclasses.replace(plan, reason=f"{plan.reason}; no cascade from "
                                       f"{', '.join(blind)}: its backend gave no token "
                                       "log-probabilities")
        self._note_candidates(plan)
        cache = "off" if self.cache is None else (
            "miss" if req.use_cache and self.cache.cacheable(request) else "bypass")
        return Routed(query, inp, plan, cache, p_correct)

    def _note_candidates(self, plan: Plan) -> None:
        """The models routing is about to use: an EWMA of each model's presence among a
        plan's chosen model and next eligible candidate (calibrated first in the
        background)."""
        alpha = self.settings.profile.residency.mix_alpha
        top = [plan.model, *(sc.model for sc in plan.scores
                             if sc.excluded is None and sc.model != plan.model)][:2]
        for m in list(self.candidate_demand):
            self.candidate_demand[m] *= 1 - alpha
        for m in top:
            self.candidate_demand[m] = self.candidate_demand.get(m, 0.0) + alpha

    def predicted_ms(self, model: str, domain: str, text: str, max_tokens: int) -> float:
        """The loop's prediction of how long `model` takes to answer `text` in `domain`
        within `max_tokens`, once loaded (for background work that must stay short)."""
        tokens = max(1, round(len(text) / CHARS_PER_TOKEN))
        return predict(self.knowledge, model, domain, tokens, max_tokens,
                       self._speed_prior(model, domain), self.analyze_params).latency_ms

    def _cascade_options(self, domain: str, mode: str) -> list[CascadeOption]:
        """The cascades the planner may weigh for this domain and mode: an acceptor exists
        for the cheap model here, the model gives log-probabilities, and both models fit
        the budget together (a cascade that swaps costs more than it saves)."""
        res, out = self.residency, []
        for (first, dom), acc in self.acceptors.items():
            then = acc.escalate_to
            if dom != domain or first in self._no_confidence or first not in res.slots \
                    or then not in res.slots or first == then:
                continue
            if res.slots[first].charged_bytes + res.slots[then].charged_bytes \
                    > res.budget_bytes:
                continue
            cut = acc.cuts.get(mode)  # only the modes the cascade pays in (train_cascade)
            if cut is None or cut.accept_rate <= 0:
                continue
            out.append(CascadeOption(first, then, cut.threshold, cut.accept_rate,
                                     cut.precision))
        return out

    # -- Analyze + Knowledge ----------------------------------------------------------------

    def _energy(self, t0: float, t1: float) -> EnergyFigure | None:
        """Board energy over this generation's window. Where other generations overlapped
        it (max_parallel > 1), each stretch of time is split equally among the
        generations running in it (calm_edge.energy.attribute_energy)."""
        meter = self.energy
        if meter is None:
            return None
        reading = meter.energy_between(t0, t1)
        energy_mj = reading.energy_mj
        others = self.scheduler.overlapping(t0, t1)
        if others:
            windows = [RequestWindow(t0, t1, t1 - t0)] + [
                RequestWindow(a, b, b - a) for a, b in others]
            energy_mj = attribute_energy(
                windows, lambda a, b: float(meter.energy_between(a, b).energy_mj))[0]
        return EnergyFigure(energy_mj / 1000.0, reading.measured, reading.source)

    async def _complete(self, req: ServeRequest, routed: Routed, out: Generation, lease: Lease,
                        failed: list[Attempt], t0: float, abort: Abort,
                        first: CascadeTry | None = None) -> Answer:
        s, q, plan = out.stats, routed.query, routed.plan
        energy = self._energy(out.gen_start_s, out.gen_end_s)
        now_wall = self._wall()
        wait_s = lease.waited_s
        if first is not None and not first.answered:  # escalated: the first answer cost too
            fg = first.gen
            self.knowledge = observe(self.knowledge, Observation(
                fg.model, q.domain, now_wall, fg.stats.prompt_tokens,
                fg.stats.completion_tokens, fg.stats.ttft_s * 1000, fg.stats.total_s * 1000,
                req.request.params.max_tokens, cold=fg.cold,
                prompt_tokens_est=q.prompt_tokens_est), self.analyze_params)
            first_energy = self._energy(fg.gen_start_s, fg.gen_end_s)
            if energy is not None and first_energy is not None:
                energy = dataclasses.replace(energy,
                                             energy_j=energy.energy_j + first_energy.energy_j)
            wait_s += first.waited_s + fg.stats.total_s
        for a in failed:  # a failure is an observation too
            self.knowledge = observe(self.knowledge, Observation(
                a.model, q.domain, now_wall, 0, 0, 0.0, 0.0, 0, error=True),
                self.analyze_params)
            self.metrics.fallbacks.inc(model=a.model)
        obs = Observation(model=out.model, domain=q.domain, ts=now_wall,
                          prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens,
                          ttft_ms=s.ttft_s * 1000.0, latency_ms=s.total_s * 1000.0,
                          max_tokens=req.request.params.max_tokens,
                          energy_mj=energy.energy_j * 1000 if energy else None,
                          slo_ms=routed.request.slo_ms, cold=out.cold,
                          prompt_tokens_est=q.prompt_tokens_est)
        was_degraded = self.knowledge.health_of(out.model).degraded
        self.knowledge = observe(self.knowledge, obs, self.analyze_params)
        health = self.knowledge.health_of(out.model)
        if health.degraded != was_degraded:
            per_token_ms = (obs.latency_ms - obs.ttft_ms) / max(obs.completion_tokens - 1, 1)
            log.warning("model %s %s (this answer %.1f ms/token, healthy baseline %.1f)",
                        out.model, "DEGRADED" if health.degraded else "recovered",
                        per_token_ms, health.baseline_decode_ms)
        self.served += 1
        self._last_used[out.model] = self.served
        if s.completion_tokens > 1:  # this power state's own speed, apart from the estimate
            self._state_decode[out.model] = self._state_decode.get(out.model, Stat()).update(
                (obs.latency_ms - obs.ttft_ms) / (s.completion_tokens - 1), STATE_ALPHA_MIN)
        self._last_request_s = self._clock()
        latency_s = self._clock() - t0
        candidates = tuple(sc.to_dict() for sc in plan.scores[:4])
        reason = plan.reason if out.model == plan.model else \
            f"fallback after {', '.join(a.model for a in failed)} failed ({plan.reason})"
        if first is not None:
            reason = f"{plan.reason}; {first.describe()}"
        answer = Answer(out.model, reason, s, tuple(failed), max(wait_s, 0.0), latency_s, q,
                        routed.request.mode, plan.explored and out.model == plan.model,
                        candidates, energy, cache=routed.cache,
                        cascade=first.describe() if first is not None else None,
                        p_correct=routed.p_correct.get(out.model)
                        if routed.p_correct is not None else None)
        self._remember(req.rid, answer, req.owner)
        self._count(answer)
        if routed.request.slo_ms is not None and latency_s * 1000 > routed.request.slo_ms:
            self.metrics.slo_breaches.inc(model=out.model)
        self._note_domain(q.domain)
        if self.cache is not None and routed.cache == "miss" and s.finish_reason != "cancelled":
            self.cache.put(req.kind, routed.request.requested_model, routed.request.mode,
                           req.request, CachedAnswer(out.text, out.model, q.domain, s,
                                                     self._clock()), scope=req.cache_scope)
        if self.store is not None:
            models = {out.model, *(a.model for a in failed)}
            est = [self.knowledge.estimate(m, d) for m in models for d in (ALL, q.domain)]
            await self.store.record(
                RequestRecord(id=req.rid, ts=now_wall, kind=req.kind, model=out.model,
                              domain=q.domain, domain_source=q.domain_source,
                              difficulty=q.difficulty, mode=routed.request.mode,
                              prompt_tokens=s.prompt_tokens,
                              completion_tokens=s.completion_tokens,
                              ttft_ms=(answer.wait_s + s.ttft_s) * 1000,
                              latency_ms=latency_s * 1000, wait_ms=answer.wait_s * 1000,
                              energy_j=energy.energy_j if energy else None,
                              energy_measured=energy.measured if energy else None,
                              finish=s.finish_reason, status=_status(s.finish_reason, abort)),
                self._decision_record(req.rid, now_wall, routed, answer),
                est, [self.knowledge.health_of(m) for m in models])
        return answer

    def _note_domain(self, domain: str) -> None:
        alpha = self.settings.profile.residency.mix_alpha
        for d in list(self.domain_mix):
            self.domain_mix[d] *= 1 - alpha
        self.domain_mix[domain] = self.domain_mix.get(domain, 0.0) + alpha

    def _decision_record(self, rid: str, ts: float, routed: Routed, a: Answer,
                         ) -> DecisionRecord:
        return DecisionRecord(rid, ts, routed.query.domain, routed.query.difficulty,
                              routed.request.mode, a.model, a.reason, a.explored, a.candidates)

    def _remember(self, rid: str, a: Answer, owner: int | None) -> None:
        self._recent.decisions.appendleft({
            "request_id": rid, "uid": owner, "domain": a.query.domain,
            "difficulty": a.query.difficulty,
            "mode": a.mode, "chosen": a.model, "reason": a.reason, "explored": a.explored,
            "latency_ms": round(a.latency_s * 1000, 1), "candidates": list(a.candidates)})
        answered = self._recent.answered_by
        answered[rid] = (a.model, a.query.domain, a.p_correct)
        while len(answered) > 10_000:
            answered.popitem(last=False)

    def _count(self, a: Answer) -> None:
        m, s = self.metrics, a.stats
        labels = {"model": a.model, "domain": a.query.domain}
        m.completions.inc(1, **labels)
        m.decisions.inc(model=a.model, domain=a.query.domain, mode=a.mode)
        if a.explored:
            m.explorations.inc(model=a.model)
        m.tokens.inc(s.prompt_tokens, model=a.model, kind="prompt")
        m.tokens.inc(s.completion_tokens, model=a.model, kind="completion")
        m.latency.observe(a.latency_s, **labels)
        m.ttft.observe(a.wait_s + s.ttft_s, **labels)
        if a.energy is not None:
            m.energy.inc(a.energy.energy_j, model=a.model,
                         kind=a.energy.kind)

    async def _record_failure(self, req: ServeRequest, routed: Routed, t0: float, status: int,
                              error: str) -> None:
        if self.store is None:
            return
        q = routed.query
        await asyncio.shield(self.store.record(
            RequestRecord(id=req.rid, ts=self._wall(), kind=req.kind, model=None,
                          domain=q.domain, domain_source=q.domain_source,
                          difficulty=q.difficulty, mode=routed.request.mode, prompt_tokens=0,
                          completion_tokens=0, ttft_ms=None,
                          latency_ms=(self._clock() - t0) * 1000, wait_ms=None, energy_j=None,
                          energy_measured=None, finish=None, status=status, error=error),
            None, [], []))

    # -- Feedback and status -----------------------------------------------------------------

    async def feedback(self, rid: str, score: float) -> dict[str, Any]:
        """Fold a client's score for an answer into the quality estimate of its model."""
        found = self._recent.answered_by.get(rid)
        if found is None and self.store is not None:
            row = await self.store.lookup(rid)
            if row is not None and row[0] is not None and row[1] is not None:
                found = (row[0], row[1], None)  # the routing-time P is not stored
        if found is None:
            raise FeedbackError(404, f"no answered request {rid!r} is known")
        model, domain, p_correct = found
        self.knowledge = feedback(self.knowledge, model, domain, score, p_correct,
                                  self.analyze_params.fit_alpha_min)
        est = self.knowledge.estimate(model, domain)
        if self.store is not None:
            await self.store.record_feedback(rid, score, [est, self.knowledge.estimate(model,
                                                                                        ALL)])
        return {"request_id": rid, "model": model, "domain": domain, "score": score,
                "quality": round(est.quality.mean, 4), "quality_n": round(est.quality.n, 1)}

    def snapshot(self) -> LoopView:
        """What status shows of the loop (decisions unfiltered: the caller decides whose
        a peer may see)."""
        return LoopView(
            classifier_runtime=self.classifier.runtime, served=self.served,
            cache=self.cache.status() if self.cache is not None else None,
            domain_mix={d: round(v, 3) for d, v in self.domain_mix.items()},
            estimates=tuple(self.estimates_table()), health=tuple(self.health_table()),
            calibration=self.calibration_table(), decisions=tuple(self._recent.decisions),
            knowledge=self.store.status() if self.store is not None else None,
            cascades={k: dict(v) for k, v in self.cascade_counts.items()},
            degraded=tuple(m for m, h in self.knowledge.health.items() if h.degraded),
            field_state=self.field_status())

    def estimates_table(self) -> list[dict[str, Any]]:
        rows = []
        for (model, domain), e in sorted(self.knowledge.estimates.items()):
            rows.append({
                "model": model, "domain": domain, "requests": e.requests, "errors": e.errors,
                "slo_breaches": e.slo_breaches, "quality": round(e.quality.mean, 3),
                "quality_std": round(e.quality.std, 3),
                "decode_ms_per_token": round(e.decode_ms_per_token.mean, 2)
                if e.decode_ms_per_token.n else None,
                "prefill_ms_per_token": round(e.prefill_ms_per_token.mean, 3)
                if e.prefill_ms_per_token.n else None,
                "completion_tokens": round(e.completion_tokens.mean, 1)
                if e.completion_tokens.n else None,
                "energy_mj_per_token": round(e.energy_mj_per_token.mean, 2)
                if e.energy_mj_per_token.n else None,
            })
        return rows

    def health_table(self) -> list[dict[str, Any]]:
        return [{"model": m, "degraded": h.degraded, "alarms": h.alarms,
                 "recoveries": h.recoveries, "baseline_decode_ms": round(h.baseline_decode_ms, 2),
                 "recent_slowdown": round(h.recent_ratio.mean, 2) if h.degraded else None}
                for m, h in sorted(self.knowledge.health.items())]
