"""Calibration: the pure summaries and demotion, the canary set, a resumable run on the
tiny real GGUF, the planner starting from calibrated priors, and demotion end to end with a
fake backend that answers every canary wrong."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from calm_edge.analyze import (
    ALL,
    AnalyzeParams,
    BetaQuality,
    Knowledge,
    OutcomeFit,
    feedback,
    seed_priors,
)
from calm_edge.backends.base import (
    Backend,
    ChatMessage,
    GenerationRequest,
    GenerationStats,
    SamplingParams,
)
from calm_edge.backends.llama_cpp import llama_cpp_factory
from calm_edge.bench.graders import grade, normalize
from calm_edge.bench.workload import DEFAULT_WORKLOAD, Query, corpus_overlap, load_workload
from calm_edge.calibration import (
    CalibrationEvent,
    CalibrationParams,
    CanaryResult,
    LoadResult,
    Preempted,
    device_priors,
    identify,
    load_canaries,
)
from calm_edge.calibration.local import calibrate_locally
from calm_edge.calibration.results import (
    DomainScore,
    ModelCalibration,
    binomial_cdf,
    demotion,
    summarize,
)
from calm_edge.config import RuntimeConfig, Settings
from calm_edge.domains import DOMAINS
from calm_edge.events import Delta, Final
from calm_edge.fleet import ModelSpec, load_fleet, verify
from calm_edge.knowledge import KnowledgeStore, estimate_from_json, estimate_to_json
from calm_edge.orchestrator import Answer, Orchestrator, canary_fits
from calm_edge.paths import bundled_dir
from calm_edge.testing.fakes import FakeFactory, FixedClassifier
from tests.conftest import model_entry
from tests.test_loop import Loop

PARAMS = CalibrationParams(prior_strength=10.0, demote_ratio=0.5, demote_p=0.05)


def canary(domain: str, passed: bool, tokens: int = 10, max_tokens: int = 32,
           finish: str = "stop", i: int = 0) -> CanaryResult:
    return CanaryResult(f"{domain}-{i}-{passed}", domain, passed, "", 20, tokens, max_tokens,
                        finish, 0.02, 0.02 + 0.01 * (tokens - 1))


# -- pure -----------------------------------------------------------------------------------

def test_calibration_summary_pools_speed_and_splits_length_by_domain() -> None:
    items = [canary("factual", True, tokens=5, i=i) for i in range(4)] + [
        canary("math", False, tokens=32, finish="length", i=i) for i in range(2)]
    cal = summarize("m", "sha", "dev", LoadResult(1.0, 0.2, 100), items, complete=True,
                    quick=False, finished_ts=1.0)
    assert cal.decode_ms_per_token == pytest.approx(10.0)    # 0.01 s per token after the first
    assert cal.prefill_ms_per_token == pytest.approx(1.0)    # 20 ms / 20 prompt tokens
    assert cal.domains["factual"] == DomainScore(4, 4, 5.0, 0.0)
    assert cal.domains["math"].limit_share == 1.0 and cal.domains["math"].natural_tokens == 0
    prior = device_priors(cal, {"factual": 0.5, "math": 0.5}, PARAMS)
    assert prior.domains["math"].answer_tokens is None       # runs to max_tokens
    assert prior.domains["factual"].quality.mean == pytest.approx((5 + 4) / 14)


@pytest.mark.parametrize(("passed", "total", "prior", "demoted"), [
    (2, 10, 0.53, True),     # SmolLM2 failing its factual canaries
    (4, 10, 0.53, False),    # worse than promised, but chance could give it
    (0, 4, 0.90, False),     # too few answers to judge
    (1, 10, 0.05, False),    # a weak model doing what its prior says
    (3, 10, 0.90, True),
])
def test_calibration_demotion_table(passed: int, total: int, prior: float,
                                    demoted: bool) -> None:
    why = demotion(prior, DomainScore(passed, total, 5.0, 0.0), PARAMS, "factual")
    assert (why is not None) is demoted
    if why:
        assert f"{passed}/{total} factual canaries" in why and "demoted" in why


def test_calibration_binomial_tail() -> None:
    assert binomial_cdf(10, 10, 0.3) == pytest.approx(1.0)
    assert binomial_cdf(0, 10, 0.5) == pytest.approx(0.5 ** 10)
    assert binomial_cdf(2, 10, 0.53) == pytest.approx(0.0356, abs=1e-3)


def test_calibration_reseeding_keeps_what_feedback_taught() -> None:
    p = AnalyzeParams(quality_prior_strength=10.0)
    k = seed_priors(Knowledge(), {"m": {"factual": 0.5}}, p)
    k = feedback(k, "m", "factual", 1.0)            # one pass on top of Beta(5, 5)
    calibrated = BetaQuality(5.0 + 2, 5.0 + 8)      # 2 of 10 canaries passed
    k2 = seed_priors(k, {"m": {"factual": calibrated}}, p)
    q = k2.estimate("m", "factual").quality
    assert (q.alpha, q.beta) == pytest.approx((8.0, 13.0))
    assert seed_priors(k2, {"m": {"factual": calibrated}}, p) == k2  # idempotent
    # An estimate stored before priors were recorded: the manifest's is assumed inside it.
    legacy = dataclasses.replace(k.estimate("m", "factual"), quality_prior=None)
    k3 = seed_priors(Knowledge({("m", "factual"): legacy}, {}), {"m": {"factual": calibrated}},
                     p, baseline={"m": {"factual": 0.5}})
    assert k3.estimate("m", "factual").quality == q
    back = estimate_from_json(estimate_to_json(k3.estimate("m", "factual")))
    assert back == k3.estimate("m", "factual")


# -- the canary set -------------------------------------------------------------------------

def test_canaries_about_ten_per_graded_domain_and_disjoint_from_bench_and_outcome() -> None:
    canaries = load_canaries()
    per_domain: dict[str, int] = {}
    for q in canaries:
        per_domain[q.domain] = per_domain.get(q.domain, 0) + 1
    assert per_domain == {"code": 10, "math": 10, "factual": 10, "instruct": 10}
    outcome = bundled_dir("models") / "router" / "outcome_corpus.jsonl"
    others = load_workload(DEFAULT_WORKLOAD) + load_workload(outcome)
    texts = [q.text for q in others]
    # The same query, even reworded in case or punctuation (the instructions around code
    # and math tasks are shared on purpose, so word shingles do not count here).
    assert [o for o in corpus_overlap(canaries, texts) if o[1] != "shingle"] == []
    functions = {q.grader_args["entry_point"] for q in others if q.grader == "code"}
    assert not functions & {q.grader_args["entry_point"] for q in canaries
                            if q.grader == "code"}
    # No factual canary asks about a fact the bench or the outcome corpus asks about.
    facts = [normalize(q.text + " " + " ".join(q.grader_args["answers"])) for q in others
             if q.domain == "factual"]
    for q in canaries:
        if q.domain == "factual":
            for answer in q.grader_args["answers"]:
                word = f" {normalize(str(answer))} "
                assert len(word) <= 4 or not any(word in f" {f} " for f in facts), \
                    (q.id, answer)


def test_canaries_references_pass_their_graders() -> None:
    for q in load_canaries():
        assert q.reference is not None
        ok, detail = grade(q.grader, q.reference, q.grader_args)
        assert ok, (q.id, detail)


# -- device identity ------------------------------------------------------------------------

def test_calibration_device_key_follows_cpu_build_and_runtime(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(
        "model name\t: Test CPU\nflags\t\t: fpu sse avx avx2 fma\n")
    rt = RuntimeConfig()
    a = identify(tmp_path, "build 1", rt, 2)
    assert a.cpu == "Test CPU" and a.cpu_flags == "avx avx2 fma" and a.gpu == "none"
    assert identify(tmp_path, "build 1", rt, 2).key == a.key
    assert identify(tmp_path, "build 2", rt, 2).key != a.key
    assert identify(tmp_path, "build 1", rt, 4).key != a.key
    (tmp_path / "proc" / "cpuinfo").write_text("model name\t: Test CPU\nflags\t: avx avx2\n")
    assert identify(tmp_path, "build 1", rt, 2).key != a.key   # no FMA: other kernels
    gpus = tmp_path / "proc" / "driver" / "nvidia" / "gpus" / "0000:01:00.0"
    gpus.mkdir(parents=True)
    (gpus / "information").write_text("Model: \t\t NVIDIA H200\nIRQ: 1\n")
    assert identify(tmp_path, "build 1", rt, 2).gpu == "NVIDIA H200"


# -- a run on the tiny real GGUF: stored, used, resumed ---------------------------------------

@dataclasses.dataclass
class Counting:
    """A factory wrapper that counts loads and generations of the real backend."""

    loads: int = 0
    generations: int = 0

    def __call__(self, spec: ModelSpec, path: Path, runtime: RuntimeConfig) -> Backend:
        self.loads += 1
        inner = llama_cpp_factory(spec, path, runtime)
        outer = self

        class Wrapped:
            supports_confidence = True

            def generate(self, request: GenerationRequest, should_stop: Callable[[], bool],
                         ) -> Iterator[Delta | Final[GenerationStats]]:
                outer.generations += 1
                return inner.generate(request, should_stop)

            def count_tokens(self, text: str) -> int:
                return inner.count_tokens(text)

            def close(self) -> None:
                inner.close()

        return Wrapped()


def few_canaries(per_domain: int = 2) -> list[Query]:
    out: list[Query] = []
    for d in ("code", "math", "factual", "instruct"):
        out += [dataclasses.replace(q, max_tokens=8) for q in load_canaries()
                if q.domain == d][:per_domain]
    return out


def test_calibration_on_the_tiny_gguf_stores_priors_and_a_rerun_resumes(
        make_settings: Callable[..., Settings]) -> None:
    s = make_settings()
    fleet = load_fleet(s.fleet_path)
    name = fleet.models[0].name
    canaries = few_canaries()
    counting = Counting()
    events: list[CalibrationEvent] = []

    run = asyncio.run(calibrate_locally(s, fleet, counting, "test-build", [name], quick=False,
                                        on_event=events.append, canaries=canaries))
    assert not run.failed, run.failed
    cal = run.results[name]
    assert cal.complete and not cal.quick and cal.canaries == len(canaries)
    assert cal.load is not None and cal.load.cold_load_s and cal.load.warm_load_s
    assert cal.load.measured_bytes is not None and cal.load.memory_source == "rss"
    assert cal.decode_ms_per_token and cal.prefill_ms_per_token
    assert set(cal.domains) == {"code", "math", "factual", "instruct"}
    assert counting.loads == 2                       # cold, then warm
    assert counting.generations == 1 + len(canaries)  # warm-up + canaries
    assert events[0].phase == "start" and events[-1].phase == "done"

    # A rerun finds everything done: no load, no generation.
    again = Counting()
    run2 = asyncio.run(calibrate_locally(s, fleet, again, "test-build", [name], quick=False,
                                         canaries=canaries))
    assert (again.loads, again.generations) == (0, 0)
    assert run2.results[name] == cal

    # Another build of the backend is another device: calibrated afresh.
    other = Counting()
    asyncio.run(calibrate_locally(s, fleet, other, "other-build", [name], quick=True,
                                  canaries=canaries))
    assert other.loads == 2


def test_calibration_interrupted_run_keeps_its_items_and_resumes(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """A request preempts the run after 3 canaries; the next run answers only the rest."""
    from concurrent.futures import ThreadPoolExecutor

    from calm_edge.calibration import Calibrator
    from calm_edge.execute import Executor
    from calm_edge.residency import Residency
    from calm_edge.scheduler import Scheduler

    s = make_settings()
    fleet = load_fleet(s.fleet_path)
    name = fleet.models[0].name
    canaries = few_canaries()

    async def run(factory: Counting, stop_after: int | None) -> tuple[int, bool]:
        answered: list[CalibrationEvent] = []
        pool = ThreadPoolExecutor(2)
        res = Residency(fleet, s.models_dir, s.profile.runtime, 1 << 30, factory, pool)
        sched = Scheduler(res, lanes=1, capacity=8, prefetch=False)
        await res.scan()
        store = KnowledgeStore(tmp_path / "k.db", retention_days=1, max_requests=1000)
        await store.open()
        ident = identify(Path("/"), "b", s.profile.runtime, 1)
        cal = Calibrator(res, sched, Executor(res), store, ident, pool, canaries=canaries,
                         busy=lambda: stop_after is not None and len(answered) >= stop_after)
        preempted = False
        try:
            await cal.run([name], 2, quick=False, on_event=lambda e: answered.append(e)
                          if e.phase == "canary" else None)
        except Preempted:
            preempted = True
        results = await cal.results()
        await sched.aclose()
        await res.close_all()
        sched.shutdown()
        store.close()
        pool.shutdown()
        return results[name].canaries, preempted

    first = Counting()
    answered, preempted = asyncio.run(run(first, stop_after=3))
    assert preempted and answered == 3
    second = Counting()
    answered, preempted = asyncio.run(run(second, stop_after=None))
    assert not preempted and answered == len(canaries)
    assert second.generations == len(canaries) - 3 and second.loads == 1  # no load item again


# -- the planner starts from the calibration ------------------------------------------------

def fleet_with_priors(tmp_path: Path, tiny_gguf: Path) -> tuple[Path, Path]:
    """'small' (manifest: the best at facts) and 'large' (nearly as good; the same file,
    so the same size-based speed guess)."""
    models = tmp_path / "calmodels"
    models.mkdir()
    for name in ("small", "large"):
        shutil.copy(tiny_gguf, models / f"{name}.gguf")
    fleet = tmp_path / "calfleet.toml"
    fleet.write_text(
        'default_model = "large"\n'
        + model_entry("small", "small.gguf", models / "small.gguf",
                      quality="{ factual = 0.90, code = 0.5 }")
        + model_entry("large", "large.gguf", models / "large.gguf",
                      quality="{ factual = 0.85, code = 0.9 }"))
    for spec in load_fleet(fleet).models:
        verify(models, spec)
    return fleet, models


def fake_canaries() -> list[Query]:
    """Factual canaries that only 'large''s fake answer ("large-0 large-1 ...") passes."""
    q = next(q for q in load_canaries() if q.domain == "factual")
    return [dataclasses.replace(q, id=f"fake-{i}", grader_args={"answers": ["large 0"]})
            for i in range(10)]


def test_calibration_priors_drive_predictions_and_demotion_reroutes(
        make_settings: Callable[..., Settings], tmp_path: Path, tiny_gguf: Path) -> None:
    """'small' answers every canary wrong, so it is demoted on factual, where its manifest
    promised 0.90; the planner sends factual questions to 'large' and says why. Calibrated
    speeds and answer lengths replace the size-based guesses."""
    fleet_path, models = fleet_with_priors(tmp_path, tiny_gguf)
    s = make_settings("[loop]\nexplore_epsilon = 0.0\n",
                      paths={"fleet": str(fleet_path), "models_dir": str(models)})
    fleet = load_fleet(fleet_path)
    factory = FakeFactory(answer_tokens=6, sim_token_ms={"small": 5.0, "large": 50.0})
    canaries = fake_canaries()

    run = asyncio.run(calibrate_locally(s, fleet, factory, "fake", [], quick=False,
                                        canaries=canaries, memory_probe=lambda: 0))
    assert not run.failed
    small = run.results["small"]
    assert small.domains["factual"].passed == 0 and small.domains["factual"].total == 10
    assert small.decode_ms_per_token == pytest.approx(5.0)
    assert small.domains["factual"].natural_tokens == 6.0

    async def main() -> tuple[Answer, Answer, dict[str, Any], Orchestrator]:
        loop = Loop(s, factory, None)
        loop_orch = await loop.start()
        loop_orch.classifier = FixedClassifier("factual")
        before = await loop.ask("What is the capital of Qatar?", i=0)
        loop_orch.apply_calibration(run.results)
        preds = {c.name: c.prediction for c in loop_orch.candidates("factual", 20, 256)}
        after = await loop.ask("What is the capital of Qatar?", i=1)
        await loop.stop()
        return before, after, preds, loop_orch

    before, after, by, orch = asyncio.run(main())
    assert before.model == "small"     # the manifest alone prefers the cheap model
    assert after.model == "large", after.reason
    assert "small demoted on this device: 0/10 factual canaries passed" in after.reason
    excluded = {c["model"]: c["excluded"] for c in after.candidates}
    assert "demoted" in str(excluded["small"])
    # Predictions come from the calibration: 'large' prefills and decodes at 50 ms/token
    # and answers in 6 tokens: 20 x 50 + 5 x 50 ms (the size-based guess was ~0.1 ms).
    assert by["large"].completion_tokens == pytest.approx(6.0)
    assert by["large"].latency_ms == pytest.approx(1250.0, rel=0.05)
    # 'small' answered once: the prompt tokens it read beyond the request's estimate (its
    # template) are added to the 20 estimated.
    overhead = round(orch.knowledge.estimate("small", ALL).prompt_overhead.mean)
    assert by["small"].latency_ms == pytest.approx((20 + overhead) * 5.0 + 25.0, rel=0.05)
    table = orch.calibration_table()
    assert table["small"] is not None and table["small"]["domains"]["factual"]["demoted"]
    assert orch.knowledge.estimate("small", "factual").quality.mean < 0.5
    assert orch.knowledge.estimate("small", ALL).quality.mean < 0.85


def test_calibration_ignored_for_a_changed_model_file(
        make_settings: Callable[..., Settings], tmp_path: Path, tiny_gguf: Path) -> None:
    fleet_path, models = fleet_with_priors(tmp_path, tiny_gguf)
    s = make_settings(paths={"fleet": str(fleet_path), "models_dir": str(models)})
    fleet = load_fleet(fleet_path)
    factory = FakeFactory(answer_tokens=4)
    canaries = [q for q in load_canaries() if q.domain == "factual"][:5]
    run = asyncio.run(calibrate_locally(s, fleet, factory, "fake", ["small"], quick=True,
                                        canaries=canaries, memory_probe=lambda: 0))
    assert "small" in run.results
    # The manifest now names another file (new hash): the old calibration no longer applies.
    text = fleet_path.read_text()
    old_sha = fleet.by_name["small"].sha256
    fleet_path.write_text(text.replace(old_sha, "0" * 64, 1))
    changed = load_fleet(fleet_path)

    async def main() -> dict[str, Any]:
        loop = Loop(s, factory, None)
        loop.fleet = changed
        orch = await loop.start()
        orch.apply_calibration(run.results)
        await loop.stop()
        return orch.calibration_table()

    assert asyncio.run(main())["small"] is None


def test_calibration_status_in_the_daemon(make_settings: Callable[..., Settings]) -> None:
    """The daemon calibrates an uncalibrated model when idle (here: at once) and status
    shows it; a request preempts it."""
    from tests.conftest import run_daemon, uds_client

    s = make_settings("", calibration={"auto": "true", "idle_s": "0",
                                       "canaries_per_domain": "1"})
    factory = FakeFactory(answer_tokens=3, token_delay_s=0.001)
    with run_daemon(s, factory, memory_probe=lambda: 0) as daemon, uds_client(s) as c:
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = c.get("/calm/status").json()["calibration"]
            if all(m and m["state"] == "full" for m in st["models"].values()):
                break
            time.sleep(0.1)
        assert all(m and m["state"] == "full" for m in st["models"].values()), st
        assert st["auto"] is True and st["device"]["key"]
        r = c.post("/v1/chat/completions", json={
            "model": "auto", "max_tokens": 4,
            "messages": [{"role": "user", "content": "hello"}]})
        assert r.status_code == 200
        assert daemon.orchestrator is not None
        assert set(daemon.orchestrator.calibration) == {m.name for m in daemon.fleet.models}
    for m in load_fleet(s.fleet_path).models:
        assert m.name in st["models"]
    assert json.dumps(st)  # serialisable


def test_canary_request_is_greedy_chat() -> None:
    from calm_edge.calibration.runner import canary_request

    q = load_canaries()[0]
    r = canary_request(q)
    assert r.params.temperature == 0.0 and r.params.max_tokens == q.max_tokens
    assert r.messages == (ChatMessage("user", q.text),)
    assert isinstance(r.params, SamplingParams)
    assert all(d in DOMAINS for d in {x.domain for x in load_canaries()})


class _Outcome:
    """The outcome model as a table: P(correct) by model, for texts containing 'hard'."""

    def predict_text(self, text: str, domain: str) -> dict[str, float]:
        return {"m": 0.2 if "hard" in text else 0.8}


def test_canary_fits_pair_the_canaries_grades_with_the_outcome_models_predictions() -> None:
    canaries = [Query(f"c{i}", "math", None, text, "exact", {}, 32, "test", "CC0")
                for i, text in enumerate(("easy one", "hard one", "easy two", "hard two"))]
    canaries.append(Query("f0", "factual", None, "easy", "exact", {}, 32, "test", "CC0"))
    result = ModelCalibration(
        "m", "sha", "dev", None,
        {"math": DomainScore(1, 2, 10.0, 0.0),      # the first two math canaries answered
         "factual": DomainScore(1, 3, 10.0, 0.0)},  # more answered than the set holds
        canaries=5, prefill_ms_per_token=None, decode_ms_per_token=None, complete=False,
        quick=False, finished_ts=None)
    fits = canary_fits(_Outcome(), canaries, {"m": result})
    assert fits == {("m", "math"): OutcomeFit(2.0, 0.5, 0.5)}
    assert canary_fits(_Outcome(), canaries, {"x": dataclasses.replace(result, model="x")}) \
        == {}  # a model the outcome model has no head for
