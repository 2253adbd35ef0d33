"""The on-device query classifier: text -> domain probabilities and a difficulty score.

`load_classifier()` loads the bundled model through the first importable runtime (LiteRT,
tflite_runtime, tensorflow.lite, ONNX Runtime); `features` turns text into the model's input
and is shared with training (scripts/train_classifier.py). Importing this package needs
numpy only.
"""

from __future__ import annotations

from calm_edge.classifier.features import FEATURE_DIM, FEATURE_SPEC_VERSION
from calm_edge.classifier.runtime import (
    RUNTIME_ORDER,
    Classification,
    ClassifierError,
    QueryClassifier,
    default_model_dir,
    load_classifier,
)

__all__ = [
    "FEATURE_DIM",
    "FEATURE_SPEC_VERSION",
    "RUNTIME_ORDER",
    "Classification",
    "ClassifierError",
    "QueryClassifier",
    "default_model_dir",
    "load_classifier",
]
