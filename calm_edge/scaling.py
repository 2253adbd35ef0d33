"""Priors for a model not yet measured on this device, from the models that are. Pure.

Speed: generating a token reads every weight once (and a prompt token costs in proportion
too), so time per token grows with the model's weight bytes: parameters x bytes per weight,
so that the quantization counts as much as the parameter count. A model not measured here
takes the speeds of the measured ones, interpolated by weight bytes on a log-log scale
between its nearest measured neighbours below and above, or, outside their range, the
nearest one's scaled in proportion to the bytes. Load time likewise by file size, within
one tier (warm or cold). Answer length is no matter of size: a model with no answers in a
domain takes the median length of the models that answered there.

Nothing here is a constant of some CPU: every figure comes from measurements passed in.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MeasuredSpeed:
    """One model's speed as measured on this device (calibration or answers), in the power
    state in force."""

    model: str
    weights_bytes: int
    decode_ms_per_token: float
    prefill_ms_per_token: float | None = None


@dataclass(frozen=True)
class ScaledSpeed:
    decode_ms_per_token: float
    prefill_ms_per_token: float | None   # None: no measured model has a prompt speed
    source: str                          # "scaled from a, b by weight bytes"


def interpolate(x: float, points: Sequence[tuple[float, float, str]],
                ) -> tuple[float, tuple[str, ...]] | None:
    """y at `x` from (x, y, name) points with x, y > 0: log-log linear between the nearest
    points below and above `x`, else proportional (y ~ x) to the nearest one; None without
    points. Also the names of the points used. Points at the same x are averaged."""
    pts = sorted((px, py, n) for px, py, n in points if px > 0 and py > 0)
    if not pts or x <= 0:
        return None
    same = [(py, n) for px, py, n in pts if px == x]
    if same:
        return statistics.fmean(y for y, _ in same), tuple(n for _, n in same)
    below = [p for p in pts if p[0] < x]
    above = [p for p in pts if p[0] > x]
    if below and above:
        (x0, y0, n0), (x1, y1, n1) = below[-1], above[0]
        t = math.log(x / x0) / math.log(x1 / x0)
        return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0))), (n0, n1)
    x0, y0, n0 = below[-1] if below else above[0]
    return y0 * x / x0, (n0,)


def scaled_speed(weights_bytes: int, measured: Sequence[MeasuredSpeed]) -> ScaledSpeed | None:
    """Decode and prompt time per token of a model of `weights_bytes` from the models
    measured here (the model itself must not be among them); None when none is."""
    decode = interpolate(weights_bytes, [(m.weights_bytes, m.decode_ms_per_token, m.model)
                                         for m in measured])
    if decode is None:
        return None
    prefill = interpolate(weights_bytes, [(m.weights_bytes, m.prefill_ms_per_token, m.model)
                                          for m in measured
                                          if m.prefill_ms_per_token is not None])
    return ScaledSpeed(decode[0], prefill[0] if prefill is not None else None,
                       f"scaled from {', '.join(decode[1])} by weight bytes")


def scaled_load_s(size_bytes: int, measured: Sequence[tuple[str, int, float]]) -> float | None:
    """Load time of a model file of `size_bytes` from (model, file bytes, load seconds) of
    loads timed here from the same tier; None without any."""
    got = interpolate(size_bytes, [(b, s, n) for n, b, s in measured])
    return got[0] if got is not None else None


@dataclass(frozen=True)
class AnswerLength:
    natural_tokens: float   # mean length of answers that ended by themselves
    limit_share: float      # share of answers cut by max_tokens


def borrowed_length(measured: Sequence[AnswerLength]) -> AnswerLength | None:
    """Answer length in a domain for a model with no answers there: the median natural
    length and the median share cut by max_tokens of the models that have some."""
    if not measured:
        return None
    return AnswerLength(statistics.median(m.natural_tokens for m in measured),
                        statistics.median(m.limit_share for m in measured))
