"""Priors for models not yet measured here, scaled from those that are (calm_edge.scaling):
table tests of the pure functions, then a fresh loop with fake backends of known speeds
that predicts an unmeasured model from the measured ones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from calm_edge.config import Settings
from calm_edge.fleet import load_fleet, verify
from calm_edge.scaling import (
    AnswerLength,
    MeasuredSpeed,
    borrowed_length,
    interpolate,
    scaled_load_s,
    scaled_speed,
)
from calm_edge.testing.fakes import FakeFactory
from calm_edge.testing.tiny_gguf import write_tiny_gguf
from tests.conftest import model_entry
from tests.test_loop import Loop

MB = 1_000_000


@pytest.mark.parametrize(("x", "points", "expected", "used"), [
    (100, [], None, ()),                                        # nothing measured
    (100, [(100, 7.0, "a")], 7.0, ("a",)),                      # the same size
    (200, [(100, 7.0, "a")], 14.0, ("a",)),                     # one point: proportional
    (50, [(100, 7.0, "a")], 3.5, ("a",)),
    (200, [(100, 10.0, "a"), (400, 40.0, "b")], 20.0, ("a", "b")),  # log-log between
    (200, [(100, 10.0, "a"), (400, 80.0, "b")], 28.284, ("a", "b")),  # exponent 1.5
    (800, [(100, 10.0, "a"), (400, 80.0, "b")], 160.0, ("b",)),  # above: nearest, in
    (50, [(100, 10.0, "a"), (400, 80.0, "b")], 5.0, ("a",)),     # proportion
    (200, [(100, 10.0, "a"), (150, 12.0, "c"), (400, 80.0, "b")], 20.933, ("c", "b")),
    (100, [(100, 6.0, "a"), (100, 8.0, "b")], 7.0, ("a", "b")),  # same size: the mean
    (100, [(0, 5.0, "z"), (50, -1.0, "n")], None, ()),          # no usable point
])
def test_scaling_interpolate_table(x: float, points: list[tuple[float, float, str]],
                                   expected: float | None, used: tuple[str, ...]) -> None:
    got = interpolate(x, points)
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert got[0] == pytest.approx(expected, rel=1e-3)
    assert got[1] == used


@pytest.mark.parametrize(("weights", "measured", "decode", "prefill"), [
    # One model measured: the others in proportion to their weight bytes.
    (1000 * MB, [MeasuredSpeed("s", 100 * MB, 8.0, 0.5)], 80.0, 5.0),
    # Two measured: between them on a log-log line; prompt speed only where measured.
    (400 * MB, [MeasuredSpeed("s", 100 * MB, 8.0, None),
                MeasuredSpeed("l", 1600 * MB, 128.0, 2.0)], 32.0, 0.5),
    # A Q8 model of 250M parameters has the bytes of a Q4 model of 500M: the same speed.
    (500 * MB, [MeasuredSpeed("q4-500m", 500 * MB, 40.0, 1.0)], 40.0, 1.0),
    (100 * MB, [], None, None),
])
def test_scaling_speed_table(weights: int, measured: list[MeasuredSpeed],
                             decode: float | None, prefill: float | None) -> None:
    got = scaled_speed(weights, measured)
    if decode is None:
        assert got is None
        return
    assert got is not None
    assert got.decode_ms_per_token == pytest.approx(decode, rel=1e-3)
    if prefill is None:
        assert got.prefill_ms_per_token is None
    else:
        assert got.prefill_ms_per_token == pytest.approx(prefill, rel=1e-3)
    assert got.source.startswith("scaled from ")


def test_scaling_load_time_and_borrowed_length_table() -> None:
    assert scaled_load_s(500 * MB, []) is None
    assert scaled_load_s(500 * MB, [("a", 1000 * MB, 2.0)]) == pytest.approx(1.0)
    assert scaled_load_s(500 * MB, [("a", 250 * MB, 0.5), ("b", 1000 * MB, 2.0)]) == \
        pytest.approx(1.0)
    assert borrowed_length([]) is None
    got = borrowed_length([AnswerLength(4.0, 0.0), AnswerLength(12.0, 0.1),
                           AnswerLength(5.0, 0.5)])
    assert got == AnswerLength(5.0, 0.1)


def sized_fleet(tmp_path: Path) -> tuple[Path, Path]:
    """Three chat models of growing weight bytes: 'small', 'mid' and 'large'."""
    models = tmp_path / "sized"
    models.mkdir()
    sizes = {"small": 64, "mid": 128, "large": 256}
    body = 'default_model = "large"\n'
    for name, dim in sizes.items():
        path = write_tiny_gguf(models / f"{name}.gguf", n_embd=dim, seed=dim)
        body += model_entry(name, f"{name}.gguf", path,
                            quality="{ code = 0.5, factual = 0.5 }",
                            extra="answer_tokens = { factual = 3 }\n"
                                  "limit_share = { factual = 0.1 }" if name == "mid" else "")
    fleet = tmp_path / "sized.toml"
    fleet.write_text(body)
    for spec in load_fleet(fleet).models:
        verify(models, spec)
    return fleet, models


def test_loop_cold_start_predicts_an_unmeasured_model_from_the_measured_ones(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """Fake backends whose decode time per token is proportional to weight bytes. A fresh
    loop knows nothing: it predicts from the profile's per-MiB guess. After 'small' and
    'large' answer, 'mid' (never run) is predicted between them by weight bytes, within a
    few percent of its true speed, and the load time from the two loads timed; the answer
    length of a domain comes from the manifest where it has one, else from the models that
    answered there."""
    fleet_path, models = sized_fleet(tmp_path)
    s = make_settings("[loop]\nexplore_epsilon = 0.0\ndecode_ms_per_weight_mib = 50.0\n",
                      paths={"fleet": str(fleet_path), "models_dir": str(models)})
    factory = FakeFactory(answer_tokens=6)

    async def main() -> None:
        loop = Loop(s, factory, None)
        orch = await loop.start()
        res = loop.residency
        weights = {n: sl.footprint.weights_bytes for n, sl in res.slots.items()
                   if sl.footprint is not None}
        assert set(weights) == {"small", "mid", "large"}
        assert weights["small"] < weights["mid"] < weights["large"]
        per_mib_ms = 0.2  # the fakes' true speed: 0.2 ms per token per MiB of weights
        for name, b in weights.items():
            factory.sim_token_ms[name] = per_mib_ms * b / (1 << 20)
        true_mid = factory.sim_token_ms["mid"]

        def mid_prior(domain: str = "code") -> float:
            return orch._speed_prior("mid", domain).decode_ms_per_token

        # Nothing measured: the profile's guess (50 ms per MiB here: far off).
        assert orch.measured_speeds() == []
        assert mid_prior() == pytest.approx(50.0 * weights["mid"] / (1 << 20))
        for i, name in enumerate(("small", "large")):
            await loop.ask(i=i, model=name)
        measured = {m.model for m in orch.measured_speeds()}
        assert measured == {"small", "large"}
        assert mid_prior() == pytest.approx(true_mid, rel=0.05)
        # The plan's prediction for 'mid' on a code query uses it too: the answer length
        # comes from the two models that answered code (6 tokens each).
        pred = {c.name: c.prediction for c in orch.candidates("code", 20, 64)}
        assert pred["mid"].completion_tokens == pytest.approx(6.0)
        assert pred["mid"].latency_ms == pytest.approx(
            20 * orch._speed_prior("mid", "code").prefill_ms_per_token + 5 * true_mid, rel=0.05)
        # Load time: scaled by file size between the two loads timed from the same tier.
        timed = {n: res.slots[n].last_load_s for n in ("small", "large")}
        assert all(t is not None for t in timed.values())
        load_ms = orch._load_ms("mid")
        lo, hi = sorted(t * 1000 for t in timed.values() if t is not None)
        assert lo * 0.5 <= load_ms <= hi * 2
        # The manifest's length for factual (its own, measured elsewhere); a domain nobody
        # answered and the manifest does not cover keeps the default length.
        factual = orch._speed_prior("mid", "factual")
        assert (factual.completion_tokens, factual.limit_share) == (3.0, 0.1)
        assert factual.length_n == orch.analyze_params.manifest_length_n
        instruct = orch._speed_prior("mid", "instruct")
        assert instruct.length_n == 0.0 and instruct.completion_tokens == 96.0
        await loop.stop()

    asyncio.run(main())
