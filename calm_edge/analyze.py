"""Analyze: running QoS estimates per (model, domain), SLO breaches and drift. Pure.

Everything here is a frozen value and a function from (old value, observation) to a new
value: no I/O, no clocks (times come in the observation), no logging. The orchestrator
owns the current `Knowledge` and swaps it for the updated one after each request.

Estimates are kept at two levels: per model (domain "*": speed and power are properties of
the model on this device) and per (model, domain) (verbosity and quality, plus speed when
enough of that domain was seen). Predictions shrink the per-domain figure toward the
per-model one while the domain has few observations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

ALL = "*"  # the per-model (all domains) estimate


@dataclass(frozen=True)
class Stat:
    """Exponentially weighted mean and variance; `n` counts observations.

    The step is 1/(n+1) until it reaches `alpha_min`, so early observations average
    exactly and later ones track change with memory ~1/alpha_min.
    """

    n: int = 0
    mean: float = 0.0
    var: float = 0.0

    def update(self, x: float, alpha_min: float) -> Stat:
        alpha = max(1.0 / (self.n + 1), alpha_min)
        delta = x - self.mean
        mean = self.mean + alpha * delta
        var = (1.0 - alpha) * (self.var + alpha * delta * delta)
        return Stat(self.n + 1, mean, var)

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def reset_to(self, x: float) -> Stat:
        """Forget the past (after drift): one observation at x."""
        return Stat(1, x, 0.0)


@dataclass(frozen=True)
class BetaQuality:
    """Beta posterior of the probability of a good answer; prior from the manifest."""

    alpha: float
    beta: float

    @classmethod
    def prior(cls, mean: float, strength: float) -> BetaQuality:
        m = min(max(mean, 0.01), 0.99)
        return cls(m * strength, (1.0 - m) * strength)

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def n(self) -> float:
        return self.alpha + self.beta

    @property
    def std(self) -> float:
        a, b = self.alpha, self.beta
        return math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))

    def update(self, score: float) -> BetaQuality:
        s = min(max(score, 0.0), 1.0)
        return BetaQuality(self.alpha + s, self.beta + 1.0 - s)


@dataclass(frozen=True)
class PageHinkley:
    """Page-Hinkley test for an upward shift in the mean of x (here: log slowdown).

    Alarms when the cumulative deviation above the running mean (less `delta`) exceeds
    `lam` (the threshold) over its minimum so far.
    """

    n: int = 0
    mean: float = 0.0
    cum: float = 0.0
    cum_min: float = 0.0

    def update(self, x: float, delta: float) -> PageHinkley:
        n = self.n + 1
        mean = self.mean + (x - self.mean) / n
        cum = self.cum + x - mean - delta
        return PageHinkley(n, mean, cum, min(self.cum_min, cum))

    @property
    def statistic(self) -> float:
        return self.cum - self.cum_min


@dataclass(frozen=True)
class Estimate:
    """QoS estimates of one model, for one domain or for all (`domain == "*"`)."""

    model: str
    domain: str
    prefill_ms_per_token: Stat = Stat()   # TTFT / prompt tokens
    decode_ms_per_token: Stat = Stat()    # (latency - TTFT) / (completion tokens - 1)
    completion_tokens: Stat = Stat()      # verbosity, when not cut by max_tokens
    energy_mj_per_token: Stat = Stat()    # energy / decode-equivalent tokens
    quality: BetaQuality = BetaQuality(1.0, 1.0)
    requests: int = 0
    errors: int = 0
    slo_breaches: int = 0
    last_ts: float = 0.0
    limit_share: Stat = Stat()            # 1 for an answer cut by max_tokens, else 0
    # The outcome model on this device: its P(correct) for the answers a client graded
    # (`fit_predicted`) against their scores (`fit_observed`), over the same requests.
    fit_observed: Stat = Stat()
    fit_predicted: Stat = Stat()
    quality_prior: BetaQuality | None = None  # the prior inside `quality` (None: stored
                                              # before priors were recorded)
    # Prompt tokens the model really read minus the request's estimate from its characters
    # (the chat template and system prompt the estimate cannot see).
    prompt_overhead: Stat = Stat()


@dataclass(frozen=True)
class Health:
    """Per-model drift state. `degraded` is set by a Page-Hinkley alarm on the slowdown
    (observed / expected decode time per token), or when the running estimate exceeds
    `recover_ratio` x the healthy speed; it is cleared once the recent slowdown is back
    within `recover_ratio`. Plan probes degraded models so that recovery is seen."""

    model: str
    detector: PageHinkley = PageHinkley()
    healthy_decode_ms: Stat = Stat()      # speed while the detector is quiet
    baseline_decode_ms: float = 0.0       # healthy speed when the alarm went off
    recent_ratio: Stat = Stat()           # latest observed / baseline while degraded
    degraded: bool = False
    degraded_since_ts: float = 0.0
    alarms: int = 0
    recoveries: int = 0


@dataclass(frozen=True)
class AnalyzeParams:
    alpha_min: float = 0.2            # EWMA memory ~ 5 observations
    shrink_n: float = 5.0             # per-domain weight reaches 1/2 at this many requests
    ph_delta: float = 0.05            # tolerated log-slowdown per observation
    ph_lambda: float = 1.0            # alarm threshold (log units: ~3 obs at 1.5x)
    recover_ratio: float = 1.25       # back to normal when recent slowdown < this
    quality_prior_strength: float = 10.0
    # The outcome model's recalibration on this device (per_query_quality): the memory of
    # its running means (~1/fit_alpha_min grades) and the pseudo-grades that shrink it.
    fit_alpha_min: float = 0.02
    fit_prior_n: float = 5.0
    # A canary counts as this many grades: canaries are hand-written, ten a domain, and
    # need not resemble this device's queries as a client's graded answers do.
    fit_canary_weight: float = 0.5
    # An answer length from the manifest (the model's, measured elsewhere) or borrowed from
    # other models in a domain here (calm_edge.scaling) counts as this many of the model's
    # own answers there.
    manifest_length_n: float = 1.0
    borrowed_length_n: float = 1.0
    # An answer cut by a max_tokens below this (a warm-up, a one-token probe) says nothing
    # about how often answers run to their limit.
    limit_min_tokens: int = 16


@dataclass(frozen=True)
class Observation:
    """One finished request, as Monitor measured it."""

    model: str
    domain: str
    ts: float
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float            # generation start to first token (model already loaded)
    latency_ms: float         # generation start to last token
    max_tokens: int
    energy_mj: float | None = None
    slo_ms: float | None = None
    error: bool = False
    cold: bool = False        # first generation after a load: its TTFT includes page faults
    prompt_tokens_est: int | None = None  # Monitor's estimate for the request


@dataclass(frozen=True)
class Knowledge:
    """The loop's learned state: estimates by (model, domain) and health by model."""

    estimates: Mapping[tuple[str, str], Estimate] = field(default_factory=dict)
    health: Mapping[str, Health] = field(default_factory=dict)

    def estimate(self, model: str, domain: str) -> Estimate:
        return self.estimates.get((model, domain)) or Estimate(model, domain)

    def health_of(self, model: str) -> Health:
        return self.health.get(model) or Health(model)


QualityPriors = Mapping[str, Mapping[str, float | BetaQuality]]


def _as_beta(q: float | BetaQuality, params: AnalyzeParams) -> BetaQuality:
    return q if isinstance(q, BetaQuality) else BetaQuality.prior(q, params.quality_prior_strength)


def rebase_quality(q: BetaQuality, old_prior: BetaQuality, new_prior: BetaQuality,
                   ) -> BetaQuality:
    """Swap the prior inside a posterior: what feedback added to `old_prior` stays."""
    return BetaQuality(max(q.alpha - old_prior.alpha + new_prior.alpha, 1e-3),
                       max(q.beta - old_prior.beta + new_prior.beta, 1e-3))


def seed_priors(knowledge: Knowledge, priors: QualityPriors, params: AnalyzeParams,
                baseline: QualityPriors | None = None) -> Knowledge:
    """Give every (model, domain) its prior quality (a mean, at the params' strength, or a
    Beta). An estimate already seeded from another prior (the manifest's, before this
    device was calibrated) keeps what feedback taught it: the old prior is swapped for the
    new one. `baseline` is the prior assumed inside estimates that did not record theirs."""
    est = dict(knowledge.estimates)
    for model, by_domain in priors.items():
        for domain, q in by_domain.items():
            key, prior = (model, domain), _as_beta(q, params)
            e = est.get(key)
            if e is None:
                est[key] = Estimate(model, domain, quality=prior, quality_prior=prior)
                continue
            old = e.quality_prior
            if old is None:
                base = (baseline or priors).get(model, {}).get(domain)
                old = _as_beta(base, params) if base is not None else prior
            if old != prior or e.quality_prior is None:
                est[key] = dataclasses.replace(
                    e, quality=rebase_quality(e.quality, old, prior), quality_prior=prior)
    return dataclasses.replace(knowledge, estimates=est)


def _update_estimate(e: Estimate, o: Observation, p: AnalyzeParams,
                     health_reset: bool) -> Estimate:
    a = p.alpha_min
    if o.error:
        return dataclasses.replace(e, requests=e.requests + 1, errors=e.errors + 1,
                                   last_ts=o.ts)
    prefill, decode = e.prefill_ms_per_token, e.decode_ms_per_token
    overhead = e.prompt_overhead
    if o.prompt_tokens > 0 and o.prompt_tokens_est is not None:
        overhead = overhead.update(float(o.prompt_tokens - o.prompt_tokens_est), a)
    if o.prompt_tokens > 0 and o.ttft_ms > 0 and not o.cold:
        prefill = prefill.update(_clip(o.ttft_ms / o.prompt_tokens, prefill), a)
    if o.completion_tokens > 1:
        per_tok = (o.latency_ms - o.ttft_ms) / (o.completion_tokens - 1)
        decode = decode.reset_to(per_tok) if health_reset else decode.update(per_tok, a)
    verbosity, limit = e.completion_tokens, e.limit_share
    if o.completion_tokens < o.max_tokens:  # only natural endings say how long answers are
        verbosity = verbosity.update(float(o.completion_tokens), a)
    cut = o.completion_tokens >= o.max_tokens
    if o.completion_tokens > 0 and (not cut or o.max_tokens >= p.limit_min_tokens):
        limit = limit.update(float(cut), a)
    energy = e.energy_mj_per_token
    if o.energy_mj is not None and o.energy_mj > 0:
        eq = decode_equivalent_tokens(o.prompt_tokens, o.completion_tokens, prefill, decode)
        if eq > 0:
            energy = energy.update(o.energy_mj / eq, a)
    breach = o.slo_ms is not None and o.latency_ms > o.slo_ms
    return dataclasses.replace(
        e, prefill_ms_per_token=prefill, decode_ms_per_token=decode,
        completion_tokens=verbosity, limit_share=limit, energy_mj_per_token=energy,
        prompt_overhead=overhead, requests=e.requests + 1,
        slo_breaches=e.slo_breaches + int(breach), last_ts=o.ts)


def _clip(x: float, s: Stat, factor: float = 4.0) -> float:
    """Bound one observation to [mean/factor, mean*factor] once the mean is established,
    so a single stall (another process, a page-cache miss) cannot dominate the estimate.
    Sustained change still gets through: the mean follows step by step, and drift
    detection resets decode speed outright."""
    if s.n < 3 or s.mean <= 0:
        return x
    return min(max(x, s.mean / factor), s.mean * factor)


def decode_equivalent_tokens(prompt_tokens: int, completion_tokens: int, prefill: Stat,
                             decode: Stat) -> float:
    """Prompt tokens weighted by their relative cost, plus completion tokens."""
    ratio = prefill.mean / decode.mean if decode.mean > 0 and prefill.n else 0.1
    return completion_tokens + prompt_tokens * ratio


def _update_health(h: Health, o: Observation, before: Estimate, p: AnalyzeParams) -> Health:
    """Feed the slowdown of this observation into the drift detector."""
    if o.error or o.completion_tokens <= 1:
        return h
    per_tok = (o.latency_ms - o.ttft_ms) / (o.completion_tokens - 1)
    if not h.degraded:
        expected = before.decode_ms_per_token.mean
        if before.decode_ms_per_token.n < 3 or expected <= 0:
            return h
        det = h.detector.update(math.log(max(per_tok, 1e-6) / expected), p.ph_delta)
        healthy = h.healthy_decode_ms
        # Also degraded when the running estimate itself drifts past the recovery bound
        # (a model abandoned after one slow answer must still be probed to come back).
        current = before.decode_ms_per_token.update(per_tok, p.alpha_min).mean
        slow = healthy.n >= 3 and current > p.recover_ratio * healthy.mean
        base = healthy.mean if healthy.n >= 3 else expected
        # An alarm needs this answer itself to be slow: drift accumulated from small
        # excesses must not flag a model on an answer at normal speed (it would recover
        # on the very next one).
        alarm = det.statistic > p.ph_lambda and per_tok > p.recover_ratio * base
        if alarm or slow:
            return dataclasses.replace(
                h, detector=PageHinkley(), baseline_decode_ms=base, degraded=True,
                degraded_since_ts=o.ts, recent_ratio=Stat(), alarms=h.alarms + 1)
        if det.statistic < p.ph_lambda / 2:  # quiet: this observation is normal speed
            healthy = healthy.update(per_tok, p.alpha_min / 2)
        return dataclasses.replace(h, detector=det, healthy_decode_ms=healthy)
    # Recovery is judged on the latest answer alone: probes are rare, so waiting for an
    # average of several would keep a recovered model out for many probe intervals.
    ratio = h.recent_ratio.update(per_tok / h.baseline_decode_ms, 1.0)
    if ratio.mean < p.recover_ratio:
        return dataclasses.replace(h, detector=PageHinkley(), degraded=False,
                                   recent_ratio=Stat(), recoveries=h.recoveries + 1,
                                   healthy_decode_ms=Stat().update(per_tok, 1.0))
    return dataclasses.replace(h, recent_ratio=ratio)


def observe(k: Knowledge, o: Observation, p: AnalyzeParams) -> Knowledge:
    """Fold one finished request into the knowledge (model-level and domain-level)."""
    model_before = k.estimate(o.model, ALL)
    h_before = k.health_of(o.model)
    h_after = _update_health(h_before, o, model_before, p)
    changed = h_after.degraded != h_before.degraded  # drift or recovery: forget old speed
    est = dict(k.estimates)
    for dom in (ALL, o.domain):
        est[(o.model, dom)] = _update_estimate(k.estimate(o.model, dom), o, p, changed)
    health = dict(k.health)
    health[o.model] = h_after
    return Knowledge(est, health)


def _scaled(s: Stat, factor: float, max_n: int | None = None) -> Stat:
    n = s.n if max_n is None else min(s.n, max_n)
    return Stat(n, s.mean * factor, s.var * factor * factor)


# A speed estimate rescaled by a guessed factor (the frequency ratio) counts as this many
# observations: the next answers correct it within a few requests where the guess was off
# (decode is often memory-bound and slows less than the clocks), and leave it where it
# was right.
GUESSED_RESCALE_N = 2


def rescale_speeds(k: Knowledge, factors: Mapping[str, float],
                   guessed: Collection[str] = ()) -> Knowledge:
    """Every speed estimate of each model in `factors` times its factor (new time per
    token over old), at once: after a change of power mode or frequency cap the loop
    predicts the new speed from the next request on instead of waiting for drift
    detection. A factor measured for this model (calibrated or seen online) keeps the
    estimates' observation counts; one guessed (`guessed`: the frequency ratio) leaves
    them at most GUESSED_RESCALE_N, so the next answers weigh more. The healthy and
    degraded baselines move with it and the drift detector restarts, so the expected
    change raises no alarm while an unexpected one still does. Energy per token is left
    alone: it follows the next answers."""
    est = dict(k.estimates)
    for key, e in k.estimates.items():
        f = factors.get(e.model)
        if f is None or f == 1.0:
            continue
        cap = GUESSED_RESCALE_N if e.model in guessed else None
        est[key] = dataclasses.replace(
            e, prefill_ms_per_token=_scaled(e.prefill_ms_per_token, f, cap),
            decode_ms_per_token=_scaled(e.decode_ms_per_token, f, cap))
    health = dict(k.health)
    for model, h in k.health.items():
        f = factors.get(model)
        if f is None or f == 1.0:
            continue
        health[model] = dataclasses.replace(
            h, detector=PageHinkley(), healthy_decode_ms=_scaled(h.healthy_decode_ms, f),
            baseline_decode_ms=h.baseline_decode_ms * f)
    return Knowledge(est, health)


@dataclass(frozen=True)
class SpeedRatio:
    """How much slower (> 1) or faster (< 1) a model is expected to decode after a change
    of power state, and where that figure comes from."""

    factor: float
    source: str   # "calibrated" | "measured" | "frequency" | "unknown"


def speed_ratio(calibrated: tuple[float | None, float | None],
                measured: tuple[float | None, float | None],
                frequency_ratio: float | None) -> SpeedRatio:
    """The factor to rescale a model's speeds by, from the old state to the new one: the
    ratio of its calibrated decode times in both states (`calibrated` = (old, new) ms per
    token), else of the decode times the loop measured (`measured` = (old: what it
    predicts now, new: what it measured in the new state before)), else the frequency
    ratio (old capacity / new), else none (1.0: drift detection will notice)."""
    for (old, new), source in ((calibrated, "calibrated"), (measured, "measured")):
        if old is not None and new is not None and old > 0 and new > 0:
            return SpeedRatio(new / old, source)
    if frequency_ratio is not None and frequency_ratio > 0:
        return SpeedRatio(frequency_ratio, "frequency")
    return SpeedRatio(1.0, "unknown")


def feedback(k: Knowledge, model: str, domain: str, score: float,
             p_predicted: float | None = None, alpha_min: float = 0.0) -> Knowledge:
    """A client's judgement of an answer (score in [0, 1]) updates the quality posterior;
    with `p_predicted` (the outcome model's P(correct) for that answer, taken when it was
    routed) it also updates how well the outcome model is calibrated here."""
    est = dict(k.estimates)
    for dom in (domain, ALL):
        e = k.estimate(model, dom)
        e = dataclasses.replace(e, quality=e.quality.update(score))
        if p_predicted is not None and dom == domain:
            e = dataclasses.replace(e, fit_observed=e.fit_observed.update(score, alpha_min),
                                    fit_predicted=e.fit_predicted.update(p_predicted,
                                                                          alpha_min))
        est[(model, dom)] = e
    return dataclasses.replace(k, estimates=est)


def _blend(domain_stat: Stat, model_stat: Stat, shrink_n: float) -> float | None:
    """Shrink the domain mean toward the model mean while the domain has few samples."""
    if domain_stat.n == 0 and model_stat.n == 0:
        return None
    if domain_stat.n == 0:
        return model_stat.mean
    if model_stat.n == 0:
        return domain_stat.mean
    w = domain_stat.n / (domain_stat.n + shrink_n)
    return w * domain_stat.mean + (1 - w) * model_stat.mean


@dataclass(frozen=True)
class Prediction:
    """What Plan needs about one model for one request. Units in the names."""

    quality: float
    quality_std: float
    ttft_ms: float
    latency_ms: float          # excluding any load
    energy_mj: float
    completion_tokens: float
    observations: int          # requests seen for this (model, domain)
    model_observations: int    # requests seen for this model, any domain
    degraded: bool


@dataclass(frozen=True)
class SpeedPrior:
    """Speeds to assume before a model has answered requests here: from its calibration on
    this device (`calibrated`), else scaled from the models measured here, else from its
    size. Answer length is per domain."""

    decode_ms_per_token: float
    prefill_ms_per_token: float
    power_mw: float
    completion_tokens: float = 96.0   # natural answer length (answers that stopped)
    limit_share: float = 0.0          # share of answers that run to max_tokens
    calibrated: bool = False          # completion_tokens/limit_share are this domain's
    # Answers the length above counts as when it is this domain's without being the
    # model's own calibration (borrowed from other models); 0: not this domain's.
    length_n: float = 0.0


def expected_tokens(natural: float, limit_share: float, max_tokens: int) -> float:
    """Expected answer length: natural endings (capped) plus runs to max_tokens."""
    share = min(max(limit_share, 0.0), 1.0)
    return (1 - share) * min(natural, float(max_tokens)) + share * float(max_tokens)


def _answer_length(d: Estimate, m: Estimate, prior: SpeedPrior, p: AnalyzeParams,
                   ) -> tuple[float, float]:
    """(natural length, share cut by max_tokens) for a (model, domain). A prior that is
    this domain's (calibrated here: `shrink_n` answers' worth; borrowed: `length_n`)
    anchors the domain's few observations; without one the domain borrows from the
    model's other domains."""
    prior_n = p.shrink_n if prior.calibrated else prior.length_n
    if prior_n > 0:
        w = d.completion_tokens.n / (d.completion_tokens.n + prior_n)
        natural = w * d.completion_tokens.mean + (1 - w) * prior.completion_tokens
        w_l = d.limit_share.n / (d.limit_share.n + prior_n)
        share = w_l * d.limit_share.mean + (1 - w_l) * prior.limit_share
        return natural, share
    natural = _blend(d.completion_tokens, m.completion_tokens, p.shrink_n) \
        or prior.completion_tokens
    share = _blend(d.limit_share, m.limit_share, p.shrink_n) or prior.limit_share
    return natural, share


def predict(k: Knowledge, model: str, domain: str, prompt_tokens: int, max_tokens: int,
            prior: SpeedPrior, p: AnalyzeParams) -> Prediction:
    """`prompt_tokens` is Monitor's estimate: the model's learned template overhead is
    added to it."""
    d, m = k.estimate(model, domain), k.estimate(model, ALL)
    if m.prompt_overhead.n:
        prompt_tokens = max(1, round(prompt_tokens + m.prompt_overhead.mean))
    decode = _blend(d.decode_ms_per_token, m.decode_ms_per_token, p.shrink_n) \
        or prior.decode_ms_per_token
    prefill = _blend(d.prefill_ms_per_token, m.prefill_ms_per_token, p.shrink_n) \
        or prior.prefill_ms_per_token
    natural, share = _answer_length(d, m, prior, p)
    n_out = expected_tokens(natural, share, max_tokens)
    ttft = prefill * max(prompt_tokens, 1)
    latency = ttft + decode * max(n_out - 1, 0)
    e_tok = _blend(d.energy_mj_per_token, m.energy_mj_per_token, p.shrink_n)
    if e_tok is None:  # no measurement yet: the device's active power over the predicted time
        energy = prior.power_mw * latency / 1000.0
    else:
        eq = n_out + prompt_tokens * (prefill / decode if decode > 0 else 0.1)
        energy = e_tok * eq
    q = d.quality if d.quality.n > 2 else m.quality
    return Prediction(quality=q.mean, quality_std=q.std, ttft_ms=ttft, latency_ms=latency,
                      energy_mj=energy, completion_tokens=n_out, observations=d.requests,
                      model_observations=m.requests, degraded=k.health_of(model).degraded)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


@dataclass(frozen=True)
class OutcomeFit:
    """How the outcome model fared on graded queries of one (model, domain) on this device:
    `n` answers, their mean grade `observed` and the model's mean P(correct) `predicted`
    for the same queries (canaries at calibration, then client feedback)."""

    n: float = 0.0
    observed: float = 0.0
    predicted: float = 0.0

    def __add__(self, other: OutcomeFit) -> OutcomeFit:
        n = self.n + other.n
        if n <= 0:
            return OutcomeFit()
        return OutcomeFit(n, (self.n * self.observed + other.n * other.observed) / n,
                          (self.n * self.predicted + other.n * other.predicted) / n)

    @classmethod
    def of(cls, e: Estimate, alpha_min: float) -> OutcomeFit:
        """The feedback part stored in an estimate (its weight capped at the running
        means' memory, 1/alpha_min)."""
        n = float(e.fit_observed.n)
        return cls(min(n, 1.0 / alpha_min) if alpha_min > 0 else n, e.fit_observed.mean,
                   e.fit_predicted.mean)


def per_query_quality(p_correct: float, fit: OutcomeFit, prior_n: float) -> float:
    """The outcome model's P(correct) for one query, recalibrated in the large for this
    device: shifted in logit space by how far the graded answers here fell from what the
    model predicted for those same answers. The observed rate is shrunk toward the
    predicted one by `prior_n` pseudo-answers, so a few grades move it a little and none
    leave it unshifted. (The outcome model knows which queries are hard; the grades on
    this device say how its average is off here.)"""
    if fit.n <= 0:
        return p_correct
    observed = (fit.n * fit.observed + prior_n * fit.predicted) / (fit.n + prior_n)
    z = _logit(p_correct) + _logit(observed) - _logit(fit.predicted)
    return 1.0 / (1.0 + math.exp(-z))


def slo_breached(latency_ms: float, slo_ms: float | None) -> bool:
    return slo_ms is not None and latency_ms > slo_ms
