#!/usr/bin/env python3
"""Train the query classifier and write its artifacts (dev only: needs the `train` extra).

    .venv/bin/python scripts/train_classifier.py [--seed 7] [--hidden 16]

Reads models/classifier/{train,val,test}.jsonl (scripts/build_classifier_corpus.py), trains
features -> Dense(hidden, relu) -> {softmax over domains, sigmoid difficulty} with Keras,
and writes into models/classifier/:

    classifier.tflite        float32 TF-Lite
    classifier_int8.tflite   dynamic-range quantized TF-Lite (int8 weights): the default
    classifier.onnx          ONNX twin of the quantized model (int8 weights + DequantizeLinear)
    labels.json              label map, feature spec, tensor names/shapes, artifact sha256
    report.json, REPORT.md   test-split metrics, HumanEval and fresh-query accuracy

Reproducible: the seed fixes the weight init, the shuffling and TF's op determinism; the
same corpus, seed and TensorFlow version give the same weights.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from calm_edge.classifier import evaluation, features
from calm_edge.classifier.runtime import (
    DIFFICULTY_OUTPUT,
    DOMAIN_OUTPUT,
    INPUT_NAME,
    LABELS_FILE,
    LABELS_FORMAT_VERSION,
    SIGNATURE_KEY,
    load_classifier,
)
from calm_edge.domains import DOMAINS

MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "classifier"
TFLITE_FLOAT = "classifier.tflite"
TFLITE_INT8 = "classifier_int8.tflite"
ONNX_FILE = "classifier.onnx"


def load_split(model_dir: Path, name: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    recs = evaluation.read_jsonl(model_dir / f"{name}.jsonl")
    texts = [str(r["text"]) for r in recs]
    y_domain = np.array([DOMAINS.index(r["domain"]) for r in recs], dtype=np.int64)
    y_diff = np.array([float(r["difficulty_score"]) for r in recs], dtype=np.float32)
    return texts, y_domain, y_diff


def _tensorflow() -> Any:
    """TensorFlow (the `train` extra), imported lazily and typed Any (no type stubs)."""
    return importlib.import_module("tensorflow")


def train(
    args: argparse.Namespace, data: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> list[np.ndarray]:
    tf = _tensorflow()

    tf.keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    reg = tf.keras.regularizers.l2(args.l2)
    inp = tf.keras.Input(shape=(features.FEATURE_DIM,), name=INPUT_NAME)
    x = tf.keras.layers.Dropout(args.input_dropout)(inp)
    h = tf.keras.layers.Dense(
        args.hidden, activation="relu", kernel_regularizer=reg, name="hidden"
    )(x)
    h = tf.keras.layers.Dropout(args.dropout)(h)
    dom = tf.keras.layers.Dense(len(DOMAINS), activation="softmax", name=DOMAIN_OUTPUT)(h)
    dif = tf.keras.layers.Dense(1, activation="sigmoid", name=DIFFICULTY_OUTPUT)(h)
    model = tf.keras.Model(inp, {DOMAIN_OUTPUT: dom, DIFFICULTY_OUTPUT: dif})
    model.compile(
        optimizer=tf.keras.optimizers.Adam(args.lr),
        loss={
            DOMAIN_OUTPUT: "sparse_categorical_crossentropy",
            DIFFICULTY_OUTPUT: "binary_crossentropy",
        },
        loss_weights={DOMAIN_OUTPUT: 1.0, DIFFICULTY_OUTPUT: args.difficulty_weight},
        metrics={DOMAIN_OUTPUT: ["accuracy"], DIFFICULTY_OUTPUT: ["binary_accuracy"]},
    )
    xtr, ytr, dtr = data["train"]
    xva, yva, dva = data["val"]
    model.fit(
        xtr,
        {DOMAIN_OUTPUT: ytr, DIFFICULTY_OUTPUT: dtr},
        validation_data=(xva, {DOMAIN_OUTPUT: yva, DIFFICULTY_OUTPUT: dva}),
        epochs=args.epochs,
        batch_size=args.batch_size,
        shuffle=True,
        verbose=2,
        # The difficulty head overfits first; keep the epoch with the best validation loss.
        callbacks=[
            tf.keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=args.patience, restore_best_weights=True
            )
        ],
    )
    weights = [
        model.get_layer(n).get_weights() for n in ("hidden", DOMAIN_OUTPUT, DIFFICULTY_OUTPUT)
    ]
    return [np.asarray(w, dtype=np.float32) for pair in weights for w in pair]


def to_tflite(weights: list[np.ndarray], quantize: bool) -> bytes:
    """Convert the dense net to TF-Lite with a single `serving_default` signature whose input
    is INPUT_NAME [1, FEATURE_DIM] and outputs DOMAIN_OUTPUT [1, n] and DIFFICULTY_OUTPUT [1, 1]."""
    tf = _tensorflow()
    w1, b1, w2, b2, w3, b3 = (tf.constant(w) for w in weights)

    def serve(x: Any) -> dict[str, Any]:
        h = tf.nn.relu(tf.matmul(x, w1) + b1)
        return {
            DOMAIN_OUTPUT: tf.nn.softmax(tf.matmul(h, w2) + b2),
            DIFFICULTY_OUTPUT: tf.sigmoid(tf.matmul(h, w3) + b3),
        }

    spec = tf.TensorSpec([1, features.FEATURE_DIM], tf.float32, name=INPUT_NAME)
    module = tf.Module()
    module.serve = tf.function(serve, input_signature=[spec])
    fn = module.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], module)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no dataset: dynamic range
    return bytes(converter.convert())


def quantize_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (axis 1 of a [in, out] matrix), like TF-Lite's
    dynamic-range quantization: w ~= q * scale[col]."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def to_onnx(weights: list[np.ndarray], quantize: bool) -> bytes:
    """The ONNX twin, written from the trained weights with the onnx helper API (exact tensor
    names, and an int8 weight layout that mirrors the TF-Lite quantization; no tf2onnx).
    With quantize, the first (large) matrix is stored as int8 + per-column scale and
    DequantizeLinear'd in the graph: a quarter of the float file, and measured as fast as the
    float twin with ONNX Runtime on this model."""
    onnx = importlib.import_module("onnx")  # the `train` extra; no type stubs
    helper, numpy_helper, tensor_proto = onnx.helper, onnx.numpy_helper, onnx.TensorProto

    w1, b1, w2, b2, w3, b3 = weights
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in ((b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (b3, "b3"))
    ]
    nodes = []
    if quantize:
        q, scale = quantize_per_channel(w1)
        inits += [
            numpy_helper.from_array(q, "w1_q"),
            numpy_helper.from_array(scale, "w1_scale"),
            numpy_helper.from_array(np.zeros_like(q[0]), "w1_zero"),
        ]
        nodes.append(
            helper.make_node("DequantizeLinear", ["w1_q", "w1_scale", "w1_zero"], ["w1"], axis=1)
        )
    else:
        inits.append(numpy_helper.from_array(w1, "w1"))
    nodes += [
        helper.make_node("MatMul", [INPUT_NAME, "w1"], ["h_mm"]),
        helper.make_node("Add", ["h_mm", "b1"], ["h_pre"]),
        helper.make_node("Relu", ["h_pre"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["d_mm"]),
        helper.make_node("Add", ["d_mm", "b2"], ["d_logits"]),
        helper.make_node("Softmax", ["d_logits"], [DOMAIN_OUTPUT], axis=-1),
        helper.make_node("MatMul", ["h", "w3"], ["k_mm"]),
        helper.make_node("Add", ["k_mm", "b3"], ["k_logit"]),
        helper.make_node("Sigmoid", ["k_logit"], [DIFFICULTY_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "calm_edge_query_classifier",
        [helper.make_tensor_value_info(INPUT_NAME, tensor_proto.FLOAT, [1, features.FEATURE_DIM])],
        [
            helper.make_tensor_value_info(DOMAIN_OUTPUT, tensor_proto.FLOAT, [1, len(DOMAINS)]),
            helper.make_tensor_value_info(DIFFICULTY_OUTPUT, tensor_proto.FLOAT, [1, 1]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="calm_edge scripts/train_classifier.py",
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.11
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=30, help="at most; early stopping on val loss")
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--l2", type=float, default=1e-5)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--input-dropout", type=float, default=0.1)
    ap.add_argument("--difficulty-weight", type=float, default=0.5)
    ap.add_argument("--no-report", action="store_true", help="write the artifacts only")
    args = ap.parse_args()
    model_dir: Path = args.model_dir

    t0 = time.perf_counter()
    data = {}
    for name in ("train", "val", "test"):
        texts, y, d = load_split(model_dir, name)
        data[name] = (features.extract_batch(texts), y, d)
    print(
        f"features: {sum(len(v[1]) for v in data.values())} texts "
        f"in {time.perf_counter() - t0:.1f} s"
    )

    weights = train(args, data)
    blobs = {
        TFLITE_FLOAT: to_tflite(weights, quantize=False),
        TFLITE_INT8: to_tflite(weights, quantize=True),
        ONNX_FILE: to_onnx(weights, quantize=True),
    }
    for name, blob in blobs.items():
        (model_dir / name).write_bytes(blob)
        print(f"wrote {name}: {len(blob)} bytes")

    tf = _tensorflow()
    corpus_sha = hashlib.sha256(
        b"".join((model_dir / f"{s}.jsonl").read_bytes() for s in ("train", "val", "test"))
    ).hexdigest()
    labels = {
        "format_version": LABELS_FORMAT_VERSION,
        "domains": list(DOMAINS),
        "feature_spec_version": features.FEATURE_SPEC_VERSION,
        "feature_dim": features.FEATURE_DIM,
        "hash_dim": features.HASH_DIM,
        "char_ngram_sizes": list(features.CHAR_NGRAM_SIZES),
        "max_chars": features.MAX_CHARS,
        "dense_features": list(features.DENSE_FEATURES),
        "signature": SIGNATURE_KEY,
        "input": {"name": INPUT_NAME, "shape": [1, features.FEATURE_DIM], "dtype": "float32"},
        "outputs": {
            DOMAIN_OUTPUT: {
                "shape": [1, len(DOMAINS)],
                "meaning": "softmax over domains, in `domains` order",
            },
            DIFFICULTY_OUTPUT: {
                "shape": [1, 1],
                "meaning": "P(hard) in [0, 1]; trained on difficulty_score",
            },
        },
        "artifacts": {
            "tflite": {
                "file": TFLITE_INT8,
                "sha256": sha256(blobs[TFLITE_INT8]),
                "quantization": "dynamic_range_int8",
            },
            "tflite_float": {
                "file": TFLITE_FLOAT,
                "sha256": sha256(blobs[TFLITE_FLOAT]),
                "quantization": "none",
            },
            "onnx": {
                "file": ONNX_FILE,
                "sha256": sha256(blobs[ONNX_FILE]),
                "quantization": "int8_weights_dequantized",
            },
        },
        "training": {
            "seed": args.seed,
            "hidden_units": args.hidden,
            "max_epochs": args.epochs,
            "patience": args.patience,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "l2": args.l2,
            "dropout": args.dropout,
            "input_dropout": args.input_dropout,
            "difficulty_loss_weight": args.difficulty_weight,
            "tensorflow": tf.__version__,
            "corpus_sha256": corpus_sha,
            "train_records": len(data["train"][1]),
        },
    }
    (model_dir / LABELS_FILE).write_text(json.dumps(labels, indent=2) + "\n")
    print(f"wrote {LABELS_FILE}")
    if args.no_report:
        return

    # Evaluate the artifacts as shipped, through the runtime the daemon uses.
    clf = load_classifier(model_dir, prefer="litert")
    report = evaluation.full_report(clf, model_dir)
    onnx_clf = load_classifier(model_dir, prefer="onnx")
    report["tflite_onnx_argmax_agreement_test"] = evaluation.agreement(
        clf, onnx_clf, [str(r["text"]) for r in evaluation.read_jsonl(model_dir / "test.jsonl")]
    )
    report["artifact_bytes"] = {name: len(blob) for name, blob in blobs.items()}
    report["training"] = labels["training"]
    (model_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (model_dir / "REPORT.md").write_text(evaluation.report_markdown(report))
    print(evaluation.report_markdown(report))


if __name__ == "__main__":
    main()
