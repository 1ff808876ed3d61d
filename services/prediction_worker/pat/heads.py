"""A trained classification head on PAT embeddings, admitted only with its provenance.

The paper's head is GlobalAveragePooling1D → Dropout → Dense(128, relu) → Dense(1, sigmoid); the pooling is
``PatEncoder.embed``. No trained heads are published, and a randomly initialised one outputs noise, so the
only way to a score is ``load_head``: an ``.npz`` of the two Dense layers plus a JSON sidecar of the same stem
(``depression.npz`` + ``depression.json``) stating the task, the training data, the AUC, the encoder model id
and the sha256 of the ``.npz``. A head whose sidecar is missing, incomplete or whose hash does not match is
refused, as is one whose arrays are not all finite (NaN, ±inf, or beyond float32's range).

npz arrays: ``hidden/kernel`` (96, 128), ``hidden/bias`` (128,), ``output/kernel`` (128, 1), ``output/bias`` (1,).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .encoder import EMBED_DIM
from .weights import as_float32, file_sha256, non_finite

HIDDEN_UNITS = 128
REQUIRED_METADATA = ("task", "training_data", "auc", "model_id", "sha256")
_SHAPES = {"hidden/kernel": (EMBED_DIM, HIDDEN_UNITS), "hidden/bias": (HIDDEN_UNITS,),
           "output/kernel": (HIDDEN_UNITS, 1), "output/bias": (1,)}


class HeadRefused(ValueError):
    """The head file or its metadata does not establish what the head was trained for; no score from it."""


@dataclass(frozen=True)
class TrainedHead:
    task: str
    training_data: str
    auc: float
    model_id: str
    sha256: str
    hidden_kernel: np.ndarray
    hidden_bias: np.ndarray
    output_kernel: np.ndarray
    output_bias: np.ndarray

    def provenance(self) -> dict[str, object]:
        """To publish with every score."""
        return {"task": self.task, "training_data": self.training_data, "auc": self.auc,
                "model_id": self.model_id, "head_sha256": self.sha256}

    def score(self, embedding: np.ndarray) -> float:
        """Sigmoid output for one finite (96,) embedding.

        NaN if the float32 arithmetic overflows (weights far beyond a trained head's): callers check it.
        """
        e = np.asarray(embedding, dtype=np.float32)
        if e.shape != (EMBED_DIM,) or not np.isfinite(e).all():
            raise ValueError(f"expected one finite embedding of shape ({EMBED_DIM},), got {e.shape}")
        hidden = np.maximum(e @ self.hidden_kernel + self.hidden_bias, 0)
        logit = float((hidden @ self.output_kernel + self.output_bias)[0])
        return 1.0 / (1.0 + math.exp(-logit)) if logit >= 0 else math.exp(logit) / (1.0 + math.exp(logit))


def metadata_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def load_head(path: str | Path, *, model_id: str | None = None) -> TrainedHead:
    """The head in the ``.npz`` at ``path``, checked against its JSON sidecar (and ``model_id`` if given)."""
    path = Path(path)
    sidecar = metadata_path(path)
    if not sidecar.is_file():
        raise HeadRefused(f"{path}: no metadata {sidecar.name}; a head needs task, training data, AUC, "
                          f"model id and sha256 beside it")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HeadRefused(f"{sidecar}: unreadable metadata: {exc}") from exc
    if not isinstance(meta, dict):
        raise HeadRefused(f"{sidecar}: metadata must be a JSON object")
    problems = [f"missing {key!r}" for key in REQUIRED_METADATA if key not in meta]
    problems += [f"{key!r} must be a non-empty string" for key in ("task", "training_data", "model_id", "sha256")
                 if key in meta and not (isinstance(meta[key], str) and meta[key].strip())]
    auc = meta.get("auc")
    if "auc" in meta and (isinstance(auc, bool) or not isinstance(auc, int | float) or not 0.0 <= auc <= 1.0):
        problems.append("'auc' must be a number between 0 and 1")
    if isinstance(meta.get("sha256"), str) and not re.fullmatch(r"[0-9a-f]{64}", meta["sha256"].lower()):
        problems.append("'sha256' must be 64 hex digits")
    if problems:
        raise HeadRefused(f"{sidecar}: {'; '.join(problems)}")
    actual = file_sha256(path)
    if actual != meta["sha256"].lower():
        raise HeadRefused(f"{path}: sha256 {actual} does not match the metadata's {meta['sha256']}")
    if model_id is not None and meta["model_id"] != model_id:
        raise HeadRefused(f"{path}: trained on {meta['model_id']} embeddings, not {model_id}")
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: as_float32(data[name]) for name in _SHAPES if name in data}
    wrong = [f"{name} {arrays[name].shape if name in arrays else 'missing'} (expected {shape})"
             for name, shape in _SHAPES.items() if name not in arrays or arrays[name].shape != shape]
    if wrong:
        raise HeadRefused(f"{path}: bad head arrays: {'; '.join(wrong)}")
    bad = non_finite(arrays)
    if bad:
        raise HeadRefused(f"{path}: non-finite head weights in {len(bad)} array(s): {'; '.join(bad)}")
    return TrainedHead(task=meta["task"], training_data=meta["training_data"], auc=float(meta["auc"]),
                       model_id=meta["model_id"], sha256=actual,
                       hidden_kernel=arrays["hidden/kernel"], hidden_bias=arrays["hidden/bias"],
                       output_kernel=arrays["output/kernel"], output_bias=arrays["output/bias"])
