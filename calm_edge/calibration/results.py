"""What a calibration measured, and what the loop takes from it. Pure: no I/O.

A calibration is a set of *items* per (device, model file): one `load` item (cold and warm
load time, measured footprint) and one item per canary answered (its grade, token counts
and timings). Items are stored as they finish, so an interrupted run resumes where it
stopped. `summarize` folds the items of one model into a `ModelCalibration`; `device_priors`
turns that into what Plan and Analyze start from: speeds, answer lengths and quality per
domain, and the domains where the model is demoted on this device.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from calm_edge.analyze import BetaQuality, SpeedPrior


@dataclass(frozen=True)
class LoadResult:
    cold_load_s: float | None      # file pages dropped first; None where that was not done
    warm_load_s: float | None      # file pages already in the page cache
    measured_bytes: int | None     # memory growth from load + first generation
    memory_source: str = "rss"     # what measured it (calm_edge.memory.DeviceMemory)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LoadResult:
        def num(key: str) -> float | None:
            v = d.get(key)
            return None if v is None else float(v)

        mb = d.get("measured_bytes")
        return cls(num("cold_load_s"), num("warm_load_s"), None if mb is None else int(mb),
                   str(d.get("memory_source", "rss")))


@dataclass(frozen=True)
class CanaryResult:
    canary_id: str
    domain: str
    passed: bool
    detail: str                # the grader's few words
    prompt_tokens: int
    completion_tokens: int
    max_tokens: int
    finish_reason: str         # "stop" | "length" | "cancelled"
    ttft_s: float
    total_s: float

    @property
    def hit_limit(self) -> bool:
        return self.finish_reason == "length" or self.completion_tokens >= self.max_tokens

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CanaryResult:
        return cls(str(d["canary_id"]), str(d["domain"]), bool(d["passed"]), str(d["detail"]),
                   int(d["prompt_tokens"]), int(d["completion_tokens"]), int(d["max_tokens"]),
                   str(d["finish_reason"]), float(d["ttft_s"]), float(d["total_s"]))


@dataclass(frozen=True)
class ModeSpeed:
    """A model's speed in one power state (the item `speed@<power state key>`): the same
    short greedy answer timed in every state, so the ratio between two states is the
    model's own (calm_edge.analyze.speed_ratio)."""

    prefill_ms_per_token: float | None
    decode_ms_per_token: float
    capacity: float | None = None       # the state's frequency capacity, where known
    capacity_kind: str | None = None    # "cpu" (kHz) | "gpu" (Hz)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModeSpeed:
        def num(key: str) -> float | None:
            v = d.get(key)
            return None if v is None else float(v)

        decode = num("decode_ms_per_token")
        if decode is None or decode <= 0:
            raise ValueError("a speed item without decode_ms_per_token")
        kind = d.get("capacity_kind")
        return cls(num("prefill_ms_per_token"), decode, num("capacity"),
                   None if kind is None else str(kind))


SPEED_ITEM = "speed@"  # + the power state's key (calm_edge.field.PowerState.key)


@dataclass(frozen=True)
class DomainScore:
    passed: int
    total: int
    natural_tokens: float      # mean answer length of the answers that ended by themselves
    limit_share: float         # share of answers that ran to max_tokens

    @property
    def rate(self) -> float:
        return self.passed / self.total if self.total else 0.0


@dataclass(frozen=True)
class ModelCalibration:
    model: str
    sha256: str
    device_key: str
    load: LoadResult | None
    domains: Mapping[str, DomainScore]
    canaries: int                      # canaries answered
    prefill_ms_per_token: float | None
    decode_ms_per_token: float | None
    complete: bool                     # every planned item is done
    quick: bool                        # the plan was the --quick subset
    finished_ts: float | None          # Unix time the last item finished
    speeds_by_mode: Mapping[str, ModeSpeed] = field(default_factory=dict)  # per power state

    def to_status(self, priors: DevicePriors | None = None) -> dict[str, Any]:
        """For /calm/status and the CLI; with `priors`, each domain says if it is demoted."""
        demoted = {d: p.demoted for d, p in priors.domains.items()} if priors else {}
        return {
            "state": ("quick" if self.quick else "full") if self.complete else "partial",
            "finished_ts": self.finished_ts, "canaries": self.canaries,
            "cold_load_s": _r(self.load.cold_load_s if self.load else None, 3),
            "warm_load_s": _r(self.load.warm_load_s if self.load else None, 3),
            "measured_bytes": self.load.measured_bytes if self.load else None,
            "memory_source": self.load.memory_source if self.load else None,
            "prefill_ms_per_token": _r(self.prefill_ms_per_token, 3),
            "decode_ms_per_token": _r(self.decode_ms_per_token, 2),
            "speeds_by_mode": {k: {"decode_ms_per_token": round(v.decode_ms_per_token, 2),
                                   "prefill_ms_per_token": _r(v.prefill_ms_per_token, 3)}
                               for k, v in sorted(self.speeds_by_mode.items())},
            "domains": {d: {"passed": s.passed, "total": s.total,
                            "answer_tokens": round(s.natural_tokens, 1),
                            "limit_share": round(s.limit_share, 2),
                            "demoted": demoted.get(d)}
                        for d, s in sorted(self.domains.items())},
        }


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(x, nd)


def summarize(model: str, sha256: str, device_key: str, load: LoadResult | None,
              canaries: Iterable[CanaryResult], *, complete: bool, quick: bool,
              finished_ts: float | None,
              speeds_by_mode: Mapping[str, ModeSpeed] | None = None) -> ModelCalibration:
    """Fold one model's items into speeds, and scores and answer lengths per domain.

    Speeds are pooled over all answers (a model's speed per token is one number on a
    device; only answer length and quality vary by domain): prefill = sum of TTFT / sum of
    prompt tokens, decode = decode time / tokens after the first."""
    by_domain: dict[str, list[CanaryResult]] = {}
    prefill_s = decode_s = 0.0
    prompt_tok = decode_tok = 0
    n = 0
    for c in canaries:
        if c.finish_reason == "cancelled":
            continue
        n += 1
        by_domain.setdefault(c.domain, []).append(c)
        if c.prompt_tokens > 0 and c.ttft_s > 0:
            prefill_s += c.ttft_s
            prompt_tok += c.prompt_tokens
        if c.completion_tokens > 1:
            decode_s += max(c.total_s - c.ttft_s, 0.0)
            decode_tok += c.completion_tokens - 1
    domains = {}
    for d, rs in by_domain.items():
        natural = [r.completion_tokens for r in rs if not r.hit_limit]
        domains[d] = DomainScore(
            passed=sum(r.passed for r in rs), total=len(rs),
            natural_tokens=sum(natural) / len(natural) if natural else 0.0,
            limit_share=sum(r.hit_limit for r in rs) / len(rs))
    return ModelCalibration(
        model=model, sha256=sha256, device_key=device_key, load=load, domains=domains,
        canaries=n,
        prefill_ms_per_token=prefill_s * 1000 / prompt_tok if prompt_tok else None,
        decode_ms_per_token=decode_s * 1000 / decode_tok if decode_tok else None,
        complete=complete, quick=quick, finished_ts=finished_ts,
        speeds_by_mode=dict(speeds_by_mode or {}))


# -- what the loop starts from --------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationParams:
    prior_strength: float = 10.0    # pseudo-observations behind the manifest's prior
    demote_ratio: float = 0.5       # demoted below this share of the manifest's prior ...
    demote_p: float = 0.05          # ... when that is this unlikely under the prior
    min_canaries: int = 5           # fewer answers in a domain never demote


@dataclass(frozen=True)
class DomainPrior:
    """One (model, domain) on this device, as calibration found it."""

    quality: BetaQuality             # manifest prior + canary passes and failures
    answer_tokens: float | None      # mean natural answer length; None: none ended
    limit_share: float               # share of answers that ran to max_tokens
    demoted: str | None = None       # why the model is kept off this domain here


@dataclass(frozen=True)
class DevicePriors:
    """What Plan and Analyze take from one model's calibration."""

    prefill_ms_per_token: float | None
    decode_ms_per_token: float | None
    cold_load_s: float | None
    warm_load_s: float | None
    domains: Mapping[str, DomainPrior] = field(default_factory=dict)
    speeds_by_mode: Mapping[str, ModeSpeed] = field(default_factory=dict)

    def domain_length(self, domain: str, prior: SpeedPrior) -> SpeedPrior:
        """`prior` with the answer length measured here in `domain` and the share of
        answers cut by max_tokens, when canaries of that domain were answered. (Speeds are
        the orchestrator's to choose: they depend on the power state in force.)"""
        dom = self.domains.get(domain)
        if dom is None:
            return prior
        return dataclasses.replace(
            prior, completion_tokens=dom.answer_tokens if dom.answer_tokens is not None
            else prior.completion_tokens, limit_share=dom.limit_share, calibrated=True)

    def load_s(self) -> float | None:
        """A load's duration to expect before one was timed in this process: the cold one
        (the file may not be in the page cache)."""
        return self.cold_load_s or self.warm_load_s


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    p = min(max(p, 0.0), 1.0)
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(0, k + 1))


def demotion(manifest_prior: float, score: DomainScore, params: CalibrationParams,
             domain: str) -> str | None:
    """Why a model is demoted in a domain, or None: it passed clearly fewer canaries than
    its manifest prior promises, by a margin chance alone would rarely give."""
    if score.total < params.min_canaries:
        return None
    if score.rate >= params.demote_ratio * manifest_prior:
        return None
    tail = binomial_cdf(score.passed, score.total, manifest_prior)
    if tail >= params.demote_p:
        return None
    return (f"demoted on this device: {score.passed}/{score.total} {domain} canaries passed "
            f"(manifest prior {manifest_prior:.2f}, P={tail:.3f})")


def device_priors(cal: ModelCalibration, manifest: Mapping[str, float],
                  params: CalibrationParams) -> DevicePriors:
    """Priors for one model from its calibration and its manifest quality priors."""
    domains: dict[str, DomainPrior] = {}
    for d, score in cal.domains.items():
        m = manifest.get(d)
        if m is None:
            continue
        base = BetaQuality.prior(m, params.prior_strength)
        q = BetaQuality(base.alpha + score.passed, base.beta + score.total - score.passed)
        domains[d] = DomainPrior(
            quality=q, answer_tokens=score.natural_tokens if score.limit_share < 1 else None,
            limit_share=score.limit_share, demoted=demotion(m, score, params, d))
    load = cal.load
    return DevicePriors(cal.prefill_ms_per_token, cal.decode_ms_per_token,
                        load.cold_load_s if load else None, load.warm_load_s if load else None,
                        domains, dict(cal.speeds_by_mode))
