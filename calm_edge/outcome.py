"""Per-query outcome model: P(model answers this query correctly), for every fleet model.

Routing by domain alone gains almost nothing on the default fleet (README: Choosing the
model): the gain is per query, and which queries a small model gets right must be learned
from outcome labels.
scripts/train_outcome_model.py fits one L2-regularized logistic regression per model on the
classifier's feature vector (calm_edge.classifier.features) plus a one-hot of the query's
domain as the runtime knows it (the classifier's prediction, or the request's calm.domain),
and writes two artifacts, read here:

    outcome_model.npz    weights: float32 (n_models, feature_dim + len(domains))
                         bias: float32 (n_models,)
                         models: str (n_models,)      (cross-check with the JSON)
    outcome_model.json   format_version, feature_spec_version, feature_dim, text_tail_chars,
                         domains (one-hot order), models (row order), npz {file, sha256},
                         n {model: labeled queries}, metrics {model: {name: float}},
                         calibration {model: ...}, trained (date), and training notes

Contract of a prediction: P(correct) = sigmoid(w_text . features + w_domain[domain] + bias),
per model. `predict` is pure numpy on a prepared vector: one (n_models x feature_dim)
matrix-vector product and a sigmoid over n_models values; it allocates only the small
result. Thread-safe: a loaded model is immutable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calm_edge.classifier import features as feature_spec
from calm_edge.paths import bundled_dir

log = logging.getLogger("calm_edge.outcome")

FORMAT_VERSION = 1
NPZ_FILE = "outcome_model.npz"
JSON_FILE = "outcome_model.json"
# The runtime reads the tail of the query as the Monitor does (the question is at the end of
# a conversation); feature_spec.extract then reads the first MAX_CHARS of that tail.
TEXT_TAIL_CHARS = 2000

FloatArray = npt.NDArray[np.float32]


def default_model_dir() -> Path:
    return bundled_dir("models") / "router"


def query_features(text: str) -> FloatArray:
    """The text part of the model's input: features of the query's tail. Training and run
    time both go through here."""
    return feature_spec.extract(text[-TEXT_TAIL_CHARS:])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class OutcomeModel:
    """Loaded per-model outcome heads. Immutable after construction.

    models: model names, in row order. domains: the one-hot order. n: labeled queries per
    model. metrics: per model, the trainer's figures, for the planner to decide how far to
    trust each head (absent keys: not computable, e.g. an AUC where every answer passed):
      on the held-out validation queries: `val_auc`, `val_brier` (`val_brier_base`),
      `val_logloss`, `val_logloss_base` (the train base rate as predictor),
      `val_logloss_skill` = 1 - val_logloss / val_logloss_base (<= 0: no better than the
      base rate), `val_auc_domain_only`, `val_logloss_domain_only`;
      out of fold over all labels: `oof_auc`, `oof_logloss`, `oof_auc.<domain>` (ranking
      within one true domain) and `oof_auc_within_domain` (their mean);
      `base_rate`, `base_rate.<domain>`, `n`, `n_train`, `n_val`, `lambda`.
    calibration: per model, the trainer's reliability tables (JSON as written).
    """

    def __init__(self, models: Sequence[str], domains: Sequence[str],
                 weights: npt.ArrayLike, bias: npt.ArrayLike, *,
                 metrics: Mapping[str, Mapping[str, float]] | None = None,
                 calibration: Mapping[str, Any] | None = None,
                 n: Mapping[str, int] | None = None,
                 source: Path | None = None) -> None:
        w = np.asarray(weights, dtype=np.float32)
        b = np.asarray(bias, dtype=np.float32)
        where = str(source) if source is not None else "outcome model"
        n_models, n_dom = len(models), len(domains)
        if len(set(models)) != n_models or len(set(domains)) != n_dom or not n_models:
            raise ValueError(f"{where}: models and domains must be non-empty and distinct")
        if w.shape != (n_models, feature_spec.FEATURE_DIM + n_dom):
            raise ValueError(f"{where}: weights have shape {w.shape}, expected "
                             f"{(n_models, feature_spec.FEATURE_DIM + n_dom)}")
        if b.shape != (n_models,):
            raise ValueError(f"{where}: bias has shape {b.shape}, expected {(n_models,)}")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise ValueError(f"{where}: weights or bias are not finite")
        self.models: tuple[str, ...] = tuple(models)
        self.domains: tuple[str, ...] = tuple(domains)
        self.metrics: dict[str, dict[str, float]] = {
            m: dict((metrics or {}).get(m, {})) for m in self.models}
        self.calibration: dict[str, Any] = dict(calibration or {})
        self.n: dict[str, int] = {m: int((n or {}).get(m, 0)) for m in self.models}
        self.source = source
        # Split once so that predict is one matrix-vector product plus a row lookup:
        # _w_text (n_models, FEATURE_DIM), C-contiguous; _offset[k] = bias + w_domain[k];
        # _offset[n_dom] = bias alone (a domain the model was not trained with).
        self._w_text = np.ascontiguousarray(w[:, :feature_spec.FEATURE_DIM])
        offsets = w[:, feature_spec.FEATURE_DIM:].T + b[None, :]
        self._offset = np.vstack([offsets, b[None, :]]).astype(np.float32)
        self._domain_index = {d: i for i, d in enumerate(self.domains)}
        self._weights, self._bias = w, b

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, model_dir: Path | None = None) -> OutcomeModel | None:
        """Read the artifacts from `model_dir` (default: the bundled models/router).

        Returns None (and logs why) when neither file exists: routing then falls back to the
        fleet's priors. Raises ValueError naming the file when one of them is missing,
        malformed, inconsistent with the other, or made for another feature spec version.
        Blocking (reads two small files).
        """
        directory = model_dir if model_dir is not None else default_model_dir()
        jpath, npath = directory / JSON_FILE, directory / NPZ_FILE
        if not jpath.exists() and not npath.exists():
            log.warning("outcome model: no %s / %s in %s; per-query outcome predictions are "
                        "off (train one with scripts/train_outcome_model.py)",
                        JSON_FILE, NPZ_FILE, directory)
            return None
        for path in (jpath, npath):
            if not path.exists():
                raise ValueError(f"{path}: missing (the outcome model needs both {JSON_FILE} "
                                 f"and {NPZ_FILE})")
        try:
            meta = json.loads(jpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{jpath}: unreadable: {exc}") from exc
        try:
            fmt = meta["format_version"]
            if fmt != FORMAT_VERSION:
                raise ValueError(f"{jpath}: format_version {fmt!r}, this code reads "
                                 f"{FORMAT_VERSION}")
            spec = meta["feature_spec_version"]
            if spec != feature_spec.FEATURE_SPEC_VERSION:
                raise ValueError(
                    f"{jpath}: feature_spec_version {spec!r} but this code extracts features "
                    f"version {feature_spec.FEATURE_SPEC_VERSION}; retrain with "
                    f"scripts/train_outcome_model.py or install the matching calm_edge")
            dim = meta["feature_dim"]
            if dim != feature_spec.FEATURE_DIM:
                raise ValueError(f"{jpath}: feature_dim {dim!r} but the features have "
                                 f"{feature_spec.FEATURE_DIM}")
            tail = meta.get("text_tail_chars", TEXT_TAIL_CHARS)
            if tail != TEXT_TAIL_CHARS:
                raise ValueError(f"{jpath}: text_tail_chars {tail!r}, this code reads "
                                 f"{TEXT_TAIL_CHARS}")
            models = [str(m) for m in meta["models"]]
            domains = [str(d) for d in meta["domains"]]
            digest = str(meta["npz"]["sha256"])
            metrics = {str(m): {str(k): float(v) for k, v in ms.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)}
                       for m, ms in (meta.get("metrics") or {}).items()}
            n = {str(m): int(v) for m, v in (meta.get("n") or {}).items()}
            calibration = dict(meta.get("calibration") or {})
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{jpath}: malformed ({type(exc).__name__}: {exc})") from exc
        actual = _sha256(npath)
        if actual != digest:
            raise ValueError(f"{npath}: sha256 {actual[:12]}... does not match {jpath.name} "
                             f"({digest[:12]}...): the two files come from different "
                             f"training runs")
        try:
            with np.load(npath, allow_pickle=False) as npz:
                weights, bias = npz["weights"], npz["bias"]
                npz_models = [str(m) for m in npz["models"]]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{npath}: malformed ({type(exc).__name__}: {exc})") from exc
        if npz_models != models:
            raise ValueError(f"{npath}: models {npz_models} differ from {jpath.name}'s "
                             f"{models}")
        # the constructor's ValueError names npath (source) already
        model = cls(models, domains, weights, bias, metrics=metrics, calibration=calibration,
                    n=n, source=npath)
        log.info("outcome model: %d heads (%s) from %s", len(models), ", ".join(models),
                 directory)
        return model

    # -- prediction ------------------------------------------------------------------------

    def predict(self, features: npt.NDArray[np.float32], domain: str) -> dict[str, float]:
        """P(correct) per model for one query, given its feature vector (`query_features`,
        shape (FEATURE_DIM,)) and its domain as the runtime knows it. A domain the model
        was not trained with contributes nothing (bias only). Pure; microseconds; raises
        ValueError only on a wrongly shaped vector."""
        if features.shape != (feature_spec.FEATURE_DIM,):
            raise ValueError(f"features have shape {features.shape}, expected "
                             f"({feature_spec.FEATURE_DIM},)")
        z = self._w_text @ features
        z += self._offset[self._domain_index.get(domain, len(self.domains))]
        return {m: 1.0 / (1.0 + math.exp(-v)) for m, v in zip(self.models, z.tolist(),
                                                                strict=True)}

    def predict_text(self, text: str, domain: str) -> dict[str, float]:
        """`predict` on the features of `text` (its last TEXT_TAIL_CHARS characters):
        tens of microseconds, most of it feature extraction."""
        return self.predict(query_features(text), domain)

    def __repr__(self) -> str:
        return f"OutcomeModel(models={list(self.models)}, source={str(self.source)!r})"

    # -- writing (used by the trainer; kept here so reader and writer agree) ----------------

    def save(self, model_dir: Path, extra: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
        """Write outcome_model.npz and outcome_model.json into `model_dir` (created if
        needed) and return their paths. `extra` adds fields to the JSON (training notes,
        date); the fields `load` checks are always written from this object."""
        model_dir.mkdir(parents=True, exist_ok=True)
        npath, jpath = model_dir / NPZ_FILE, model_dir / JSON_FILE
        # Each file is written beside its final name and renamed into place, the JSON last,
        # so a daemon starting meanwhile reads a whole pair (at worst the new npz with the
        # old JSON for an instant, which `load` refuses by sha256 rather than misreading).
        tmp_npz = npath.with_name(npath.name + ".tmp")
        with tmp_npz.open("wb") as f:
            np.savez_compressed(f, weights=self._weights, bias=self._bias,
                                models=np.array(self.models, dtype=np.str_))
        digest = _sha256(tmp_npz)
        tmp_npz.replace(npath)
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "feature_spec_version": feature_spec.FEATURE_SPEC_VERSION,
            "feature_dim": feature_spec.FEATURE_DIM,
            "text_tail_chars": TEXT_TAIL_CHARS,
            "domains": list(self.domains),
            "models": list(self.models),
            "npz": {"file": NPZ_FILE, "sha256": digest},
            "n": dict(self.n),
            "metrics": {m: dict(v) for m, v in self.metrics.items()},
            "calibration": dict(self.calibration),
        }
        meta.update({k: v for k, v in (extra or {}).items() if k not in meta})
        tmp_json = jpath.with_name(jpath.name + ".tmp")
        tmp_json.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        tmp_json.replace(jpath)
        return npath, jpath
