"""Load the bundled query classifier and classify text in tens of microseconds.

Runtimes, in the order `prefer="auto"` tries them (the first importable one wins):

    litert          ai_edge_litert (LiteRT, the maintained successor of tflite-runtime)
    tflite_runtime  tflite_runtime (only with numpy < 2; detected before importing it)
    tensorflow      tensorflow.lite (heavy; a dev install)
    onnx            onnxruntime, on the .onnx twin

All of them are imported lazily, inside functions: this module imports with numpy alone.
Every check (label map, feature spec version, artifact present and matching its recorded
sha256, tensor names and shapes) happens in `load_classifier`, which raises
`ClassifierError` naming the file and the problem; `classify` itself does not fail on a
well-formed string.

A loaded classifier is not thread-safe (one input buffer, one interpreter): its owner (the
event loop) serializes calls, or each thread loads its own.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np

from calm_edge.classifier import features
from calm_edge.domains import DOMAINS, Domain
from calm_edge.paths import bundled_dir

log = logging.getLogger("calm_edge.classifier")

RuntimeName = Literal["litert", "tflite_runtime", "tensorflow", "onnx"]
Prefer = Literal["auto", "litert", "tflite_runtime", "tensorflow", "onnx"]
RUNTIME_ORDER: tuple[RuntimeName, ...] = ("litert", "tflite_runtime", "tensorflow", "onnx")

LABELS_FILE = "labels.json"
LABELS_FORMAT_VERSION = 1
SIGNATURE_KEY = "serving_default"
INPUT_NAME = "features"
DOMAIN_OUTPUT = "domain_probs"
DIFFICULTY_OUTPUT = "difficulty"


class ClassifierError(RuntimeError):
    """The classifier cannot be loaded: missing or mismatched artifact, or no runtime."""


class _RuntimeUnavailable(Exception):
    """A runtime cannot be imported here; `auto` moves on to the next one."""


@dataclass(frozen=True)
class Classification:
    """What the classifier says about one query.

    probabilities: domain -> probability (sums to ~1), for every domain of the model.
    difficulty: in [0, 1], higher = harder (P(a small model gets it wrong), once the corpus
    carries outcome labels; until then a heuristic easy/hard label).
    """

    domain: Domain
    probabilities: dict[str, float]
    difficulty: float

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly: {"domain": str, "probabilities": {str: float}, "difficulty": float}."""
        return {
            "domain": self.domain,
            "probabilities": dict(self.probabilities),
            "difficulty": self.difficulty,
        }


class QueryClassifier(Protocol):
    runtime: str  # which runtime runs the model, e.g. "litert"

    def classify(self, text: str) -> Classification: ...


@dataclass(frozen=True)
class LabelMap:
    """labels.json, validated against this code's feature spec."""

    path: Path
    domains: tuple[Domain, ...]
    feature_dim: int
    input_name: str
    output_names: tuple[str, str]  # (domain probabilities, difficulty)
    artifacts: dict[
        str, tuple[str, str]
    ]  # kind ("tflite", "tflite_float", "onnx") -> (file, sha256)


def default_model_dir() -> Path:
    return bundled_dir("models") / "classifier"


def read_label_map(model_dir: Path) -> LabelMap:
    """Parse and validate `model_dir/labels.json`; raises ClassifierError."""
    path = model_dir / LABELS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClassifierError(f"{path}: missing (the classifier's label map)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassifierError(f"{path}: unreadable: {exc}") from exc
    try:
        fmt = raw["format_version"]
        if fmt != LABELS_FORMAT_VERSION:
            raise ClassifierError(
                f"{path}: format_version {fmt!r}, this code reads {LABELS_FORMAT_VERSION}"
            )
        spec = raw["feature_spec_version"]
        if spec != features.FEATURE_SPEC_VERSION:
            raise ClassifierError(
                f"{path}: feature_spec_version {spec!r} but this code extracts features version "
                f"{features.FEATURE_SPEC_VERSION}; retrain with scripts/train_classifier.py or "
                f"install the matching calm_edge"
            )
        dim = raw["feature_dim"]
        if dim != features.FEATURE_DIM:
            raise ClassifierError(
                f"{path}: feature_dim {dim!r} but the features have {features.FEATURE_DIM}"
            )
        domains = tuple(raw["domains"])
        unknown = [d for d in domains if d not in DOMAINS]
        if not domains or unknown or len(set(domains)) != len(domains):
            raise ClassifierError(
                f"{path}: domains {list(domains)} must be distinct members of {list(DOMAINS)}"
            )
        out_names = tuple(raw["outputs"])
        if set(out_names) != {DOMAIN_OUTPUT, DIFFICULTY_OUTPUT}:
            raise ClassifierError(
                f"{path}: outputs {list(out_names)}, "
                f"expected {DOMAIN_OUTPUT!r} and {DIFFICULTY_OUTPUT!r}"
            )
        artifacts = {
            str(k): (str(v["file"]), str(v["sha256"])) for k, v in raw["artifacts"].items()
        }
        input_name = str(raw["input"]["name"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ClassifierError(f"{path}: malformed label map ({type(exc).__name__}: {exc})") from exc
    return LabelMap(
        path,
        cast(tuple[Domain, ...], domains),
        int(dim),
        input_name,
        (DOMAIN_OUTPUT, DIFFICULTY_OUTPUT),
        artifacts,
    )


def _artifact(labels: LabelMap, kind: str) -> bytes:
    """The bytes of one artifact, checked against the sha256 that labels.json recorded."""
    if kind not in labels.artifacts:
        raise ClassifierError(f"{labels.path}: no {kind!r} artifact listed")
    name, digest = labels.artifacts[kind]
    path = labels.path.parent / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ClassifierError(
            f"{path}: missing ({kind} model listed in {labels.path.name})"
        ) from None
    except OSError as exc:
        raise ClassifierError(f"{path}: unreadable: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ClassifierError(
            f"{path}: sha256 {actual[:12]}... does not match {labels.path.name} "
            f"({digest[:12]}...): "
            f"the model and its label map come from different training runs"
        )
    return data


def _check_shape(path: Path, what: str, actual: Iterable[object], expected: list[int]) -> None:
    # ONNX Runtime reports a symbolic dimension as a str (or None): never equal to an int.
    shape = [int(v) if isinstance(v, (int, np.integer)) else v for v in actual]
    if shape != expected:
        raise ClassifierError(f"{path}: {what} has shape {shape}, expected {expected}")


# --- engines: one per runtime -----------------------------------------------------------


class _Engine(Protocol):
    def infer(self, text: str) -> tuple[list[float], float]:
        """Features + inference: (domain probabilities in label order, difficulty)."""
        ...


class _TFLiteEngine:
    """A TF-Lite interpreter with the input and output tensors resolved once."""

    def __init__(
        self, interpreter_cls: Callable[..., Any], data: bytes, labels: LabelMap, path: Path
    ) -> None:
        try:
            interp = interpreter_cls(model_content=data, num_threads=1)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ClassifierError(f"{path}: not a loadable TF-Lite model: {exc}") from exc
        ins = {d["index"]: d for d in interp.get_input_details()}
        outs = {d["index"]: d for d in interp.get_output_details()}
        by_name_in, by_name_out = self._signature_indices(interp)
        if len(ins) != 1:
            raise ClassifierError(f"{path}: {len(ins)} inputs, expected 1 ({labels.input_name})")
        in_idx = by_name_in.get(labels.input_name, next(iter(ins)))
        detail = ins[in_idx]
        _check_shape(path, f"input {labels.input_name!r}", detail["shape"], [1, labels.feature_dim])
        if np.dtype(detail["dtype"]) != np.float32:
            raise ClassifierError(
                f"{path}: input dtype {np.dtype(detail['dtype'])}, expected float32"
            )
        dom_idx = by_name_out.get(labels.output_names[0])
        dif_idx = by_name_out.get(labels.output_names[1])
        if dom_idx is None or dif_idx is None:
            raise ClassifierError(
                f"{path}: signature {SIGNATURE_KEY!r} lacks outputs {list(labels.output_names)} "
                f"(has {sorted(by_name_out)})"
            )
        _check_shape(
            path,
            f"output {labels.output_names[0]!r}",
            outs[dom_idx]["shape"],
            [1, len(labels.domains)],
        )
        _check_shape(path, f"output {labels.output_names[1]!r}", outs[dif_idx]["shape"], [1, 1])
        self._interp = interp
        # tensor(i) returns a function giving a numpy view of the tensor's own buffer: the
        # features are written in place (no set_tensor copy) and the outputs read without
        # get_tensor's copy. A view must be dropped before invoke(), which refuses to run
        # while one is alive; the code below only ever holds them as temporaries.
        self._in = interp.tensor(in_idx)
        self._dom = interp.tensor(dom_idx)
        self._dif = interp.tensor(dif_idx)
        self._invoke = interp.invoke

    @staticmethod
    def _signature_indices(interp: Any) -> tuple[dict[str, int], dict[str, int]]:
        try:
            runner = interp.get_signature_runner(SIGNATURE_KEY)
        except ValueError:
            return {}, {}
        ins = {str(k): int(v["index"]) for k, v in runner.get_input_details().items()}
        outs = {str(k): int(v["index"]) for k, v in runner.get_output_details().items()}
        return ins, outs

    def infer(self, text: str) -> tuple[list[float], float]:
        features.extract_into(text, self._in()[0])
        self._invoke()
        return self._dom()[0].tolist(), float(self._dif()[0, 0])


class _OnnxEngine:
    def __init__(self, data: bytes, labels: LabelMap, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ClassifierError(f"{path}: not a loadable ONNX model: {exc}") from exc
        ins = sess.get_inputs()
        if len(ins) != 1 or ins[0].name != labels.input_name:
            raise ClassifierError(
                f"{path}: inputs {[i.name for i in ins]}, expected [{labels.input_name!r}]"
            )
        _check_shape(path, f"input {labels.input_name!r}", ins[0].shape, [1, labels.feature_dim])
        if ins[0].type != "tensor(float)":
            raise ClassifierError(f"{path}: input type {ins[0].type}, expected tensor(float)")
        outs = {o.name: o for o in sess.get_outputs()}
        expected = ([1, len(labels.domains)], [1, 1])
        for name, shape in zip(labels.output_names, expected, strict=True):
            if name not in outs:
                raise ClassifierError(f"{path}: no output {name!r} (has {sorted(outs)})")
            _check_shape(path, f"output {name!r}", outs[name].shape, shape)
        self._sess = sess
        self._x = np.zeros((1, labels.feature_dim), dtype=np.float32)
        self._feed = {labels.input_name: self._x}
        self._outs = list(labels.output_names)

    def infer(self, text: str) -> tuple[list[float], float]:
        features.extract_into(text, self._x[0])
        dom, dif = self._sess.run(self._outs, self._feed)
        return cast("list[float]", dom[0].tolist()), float(dif[0, 0])


# --- runtime discovery -------------------------------------------------------------------


def _installed(module: str) -> bool:
    """Whether `module` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None (blocked)
        return False


def _numpy_major() -> int:
    return int(np.__version__.split(".")[0])


def _interpreter_class(runtime: RuntimeName) -> Callable[..., Any]:
    """The Interpreter class of a TF-Lite runtime; raises _RuntimeUnavailable."""
    if runtime == "litert":
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise _RuntimeUnavailable(
                f"ai_edge_litert not importable ({exc}); pip install 'calm-edge[tflite]'"
            ) from exc
        return cast(Callable[..., Any], Interpreter)
    if runtime == "tflite_runtime":
        if not _installed("tflite_runtime"):
            raise _RuntimeUnavailable("tflite_runtime is not installed")
        if _numpy_major() >= 2:
            # Its wheels are built against numpy 1.x; importing one under numpy 2 fails with a
            # long traceback, so say what is wrong before trying.
            raise _RuntimeUnavailable(
                f"tflite_runtime is installed but needs numpy < 2, and numpy {np.__version__} is "
                f"installed; fix: pip install 'calm-edge[tflite]' (ai-edge-litert works with "
                f"numpy 2), "
                f"or pin 'numpy<2'"
            )
        try:
            from tflite_runtime.interpreter import Interpreter as TfliteInterpreter
        except ImportError as exc:
            raise _RuntimeUnavailable(f"tflite_runtime not importable ({exc})") from exc
        return cast(Callable[..., Any], TfliteInterpreter)
    if runtime == "tensorflow":
        if not _installed("tensorflow"):
            raise _RuntimeUnavailable("tensorflow is not installed")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tf = importlib.import_module("tensorflow")  # heavy; no type stubs
        except ImportError as exc:
            raise _RuntimeUnavailable(f"tensorflow not importable ({exc})") from exc
        tf_interpreter = tf.lite.Interpreter

        def make(**kwargs: Any) -> Any:
            with warnings.catch_warnings():  # tf.lite.Interpreter warns that it is deprecated
                warnings.simplefilter("ignore")
                return tf_interpreter(**kwargs)

        return make
    raise AssertionError(runtime)


def _build_engine(runtime: RuntimeName, labels: LabelMap) -> _Engine:
    """Import the runtime (raises _RuntimeUnavailable), then load and check the artifact
    (raises ClassifierError)."""
    if runtime == "onnx":
        if not _installed("onnxruntime"):
            raise _RuntimeUnavailable("onnxruntime is not installed; pip install 'calm-edge[onnx]'")
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise _RuntimeUnavailable(f"onnxruntime not importable ({exc})") from exc
        data = _artifact(labels, "onnx")
        return _OnnxEngine(data, labels, labels.path.parent / labels.artifacts["onnx"][0])
    interpreter_cls = _interpreter_class(runtime)
    data = _artifact(labels, "tflite")
    return _TFLiteEngine(
        interpreter_cls, data, labels, labels.path.parent / labels.artifacts["tflite"][0]
    )


class _Classifier:
    """QueryClassifier over one engine. Not thread-safe (see the module doc)."""

    def __init__(self, engine: _Engine, labels: LabelMap, runtime: RuntimeName) -> None:
        self.runtime: str = runtime
        self.labels = labels
        self._infer = engine.infer
        self._domains = labels.domains

    def classify(self, text: str) -> Classification:
        values, difficulty = self._infer(text)
        return Classification(
            self._domains[values.index(max(values))],
            dict(zip(self._domains, values, strict=True)),
            min(1.0, max(0.0, difficulty)),
        )

    def __repr__(self) -> str:
        return (
            f"QueryClassifier(runtime={self.runtime!r}, model_dir={str(self.labels.path.parent)!r})"
        )


def load_classifier(
    model_dir: Path | None = None, prefer: Prefer | str = "auto"
) -> QueryClassifier:
    """Load the classifier from `model_dir` (default: the bundled models/classifier).

    prefer: "auto" tries RUNTIME_ORDER and takes the first importable runtime; a runtime name
    forces that one. Blocking (reads and checks the artifact: milliseconds with LiteRT or
    ONNX Runtime, seconds for the tensorflow import). Raises ClassifierError on a missing
    or mismatched artifact (whatever the runtime) or when no runtime is usable.
    """
    if prefer != "auto" and prefer not in RUNTIME_ORDER:
        raise ClassifierError(
            f"unknown classifier runtime {prefer!r}; choose auto or one of {list(RUNTIME_ORDER)}"
        )
    directory = model_dir if model_dir is not None else default_model_dir()
    labels = read_label_map(directory)
    if prefer != "auto":
        runtime = prefer
        try:
            engine = _build_engine(runtime, labels)
        except _RuntimeUnavailable as exc:
            raise ClassifierError(f"classifier runtime {runtime!r} is unavailable: {exc}") from None
        log.info("query classifier: runtime=%s (forced) model_dir=%s", runtime, directory)
        return _Classifier(engine, labels, runtime)
    reasons: list[str] = []
    for runtime in RUNTIME_ORDER:
        try:
            engine = _build_engine(runtime, labels)
        except _RuntimeUnavailable as exc:
            reasons.append(f"{runtime}: {exc}")
            if runtime == "tflite_runtime" and "numpy < 2" in str(exc):
                log.warning("query classifier: skipping %s", exc)
            continue
        log.info("query classifier: runtime=%s model_dir=%s", runtime, directory)
        return _Classifier(engine, labels, runtime)
    raise ClassifierError("no usable classifier runtime: " + "; ".join(reasons))
