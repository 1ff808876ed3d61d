"""Reading PAT encoder weights from Keras .h5 files (and population statistics from .npz).

Four layouts are accepted, detected from the file's tree:
- Keras 2 full model (how the weights were published): ``model_weights/<layer>/<layer>/<name>:0``, e.g.
  ``model_weights/encoder_layer_1_transformer/encoder_layer_1_attention/query/kernel:0``;
- Keras 2 weights only (``save_weights`` to ``.h5``): the same tree at the root;
- Keras 3: a full model saved as .h5 (the tree above, names without ``:0``) or a ``.weights.h5`` file,
  whose groups are named after the layer classes in model order (``layers/dense/vars/0``,
  ``layers/functional/layers/multi_head_attention/query_dense/vars/0``, …);
- tf_keras 2.x ``.weights.h5`` (``save_weights`` in the "saving v3" format): the Keras 3 tree, except that
  tf_keras names a child layer by the attribute that holds it, so MultiHeadAttention's projections are
  ``_query_dense``, ``_key_dense``, ``_value_dense`` and ``_output_dense`` (leading underscore).
A tensor may have more than one candidate path (the two spellings above); the first that exists is read.
Any tensor found at none of them is named in the error, with every path it was looked for at.

Every tensor must be finite: a file holding NaN or ±inf (or values beyond float32's range, which become
±inf as float32) is refused, naming each such tensor and how many of its values are non-finite. Population
statistics are refused likewise, and when an SD is not positive.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from .encoder import PatEncoder, PopulationStats, tensor_names

# canonical tensor name → the paths (relative to the layout's base group) it may be stored at, in order
Locations = dict[str, tuple[str, ...]]

# MultiHeadAttention's projections: (our name, Keras 3's child name); tf_keras 2.x prefixes the child with "_"
_ATTENTION = (("query", "query_dense"), ("key", "key_dense"), ("value", "value_dense"),
              ("attention_output", "output_dense"))
_TF_KERAS_ATTENTION = frozenset(f"_{child}" for _, child in _ATTENTION)


class PatWeightsError(ValueError):
    """The file is not usable: unknown layout, or missing, malformed or non-finite tensors or statistics."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def as_float32(value: object) -> np.ndarray:
    """``value`` as a float32 array; values beyond float32's range become ±inf (which ``non_finite`` reports)."""
    with np.errstate(over="ignore"):
        return np.asarray(value, dtype=np.float32)


def non_finite(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """One entry per array holding NaN or ±inf: its name and how many of its values are non-finite."""
    found = []
    for name, array in arrays.items():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            nan = int(np.count_nonzero(np.isnan(array)))
            found.append(f"{name} ({bad} of {array.size} values non-finite: {nan} NaN, {bad - nan} ±inf)")
    return found


def load_encoder(path: str | Path, model_id: str | None = None) -> PatEncoder:
    """The encoder in the .h5 file at ``path``; its size is read from the tensor shapes.

    ``model_id`` defaults to the paper's size that the shapes match ("PAT-S", "PAT-M", "PAT-L"); a given id
    that names one of them ("PAT-L-29k") must agree with the shapes.
    """
    path = Path(path)
    tensors, layout = read_encoder_tensors(path)
    try:
        return PatEncoder(tensors, weights_sha256=file_sha256(path), model_id=model_id)
    except ValueError as exc:
        raise PatWeightsError(f"{path} ({layout}): {exc}") from exc


def read_encoder_tensors(path: str | Path) -> tuple[dict[str, np.ndarray], str]:
    """Canonical tensor name → finite float32 array, and the name of the layout found."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PAT weights file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise PatWeightsError(f"{path} is not a readable HDF5 file: {exc}") from exc
    with f:
        base, layout, where = _layout(path, f)
        tensors, missing = _read_tensors(base, where)
    if missing:
        raise PatWeightsError(f"{path} ({layout}) lacks {len(missing)} tensor(s): {'; '.join(missing)}")
    bad = non_finite(tensors)
    if bad:
        raise PatWeightsError(f"{path} ({layout}) has non-finite weights in {len(bad)} tensor(s): {'; '.join(bad)}")
    return tensors, layout


def _layout(path: Path, f: h5py.File) -> tuple[h5py.Group, str, Locations]:
    """The group the tensor paths are relative to, the layout's name, and where each tensor is."""
    if "model_weights" in f:
        base: h5py.Group = f["model_weights"]
        suffix = ":0" if _has_colon_names(base) else ""
        return base, "Keras 2 full model" if suffix else "Keras 3 full model (.h5)", _legacy_paths(base, suffix)
    if "layers" in f and isinstance(f["layers"], h5py.Group) and _is_saving_v3(f["layers"]):
        layers = f["layers"]
        layout = "tf_keras 2.x weights (.weights.h5)" if _has_tf_keras_names(layers) else (
            "Keras 3 weights (.weights.h5)")
        return f, layout, _saving_v3_paths(layers)
    if "dense" in f or any(k.startswith("encoder_layer_") for k in f):
        suffix = ":0" if _has_colon_names(f) else ""
        layout = "Keras 2 weights only" if suffix else "Keras weights only (no ':0' names)"
        return f, layout, _legacy_paths(f, suffix)
    raise PatWeightsError(f"{path}: no PAT encoder layout found (top-level groups: {', '.join(f)})")


def _read_tensors(base: h5py.Group, where: Locations) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each tensor from the first of its candidate paths that holds a dataset; the ones at none, described."""
    tensors, missing = {}, []
    prefix = base.name.rstrip("/")
    for name, candidates in where.items():
        node = next((n for n in map(base.get, candidates) if isinstance(n, h5py.Dataset)), None)
        if node is None:
            missing.append(f"{name} (at {' or '.join(f'{prefix}/{c}' for c in candidates)})")
        else:
            tensors[name] = as_float32(node[()])
    return tensors, missing


def _names(group: h5py.Group) -> list[str]:
    names: list[str] = []
    group.visit(names.append)
    return names


def _has_colon_names(group: h5py.Group) -> bool:
    return any(name.endswith(":0") for name in _names(group))


def _legacy_paths(base: h5py.Group, suffix: str) -> Locations:
    names = _names(base)
    layers = max((int(m.group(1)) for n in names if (m := re.search(r"encoder_layer_(\d+)_", n))), default=0)
    where: Locations = {}
    for name in tensor_names(max(layers, 1)):
        block = re.match(r"encoder_layer_\d+", name)
        group = f"{block.group(0)}_transformer" if block else "dense"
        where[name] = (f"{group}/{name}{suffix}",)
    return where


def _is_saving_v3(layers: h5py.Group) -> bool:
    """A Keras 3 or tf_keras 2.x ``.weights.h5`` tree: layer groups holding ``vars`` or nested ``layers``."""
    return any(isinstance(g, h5py.Group) and ("vars" in g or "layers" in g) for g in layers.values())


def _has_tf_keras_names(layers: h5py.Group) -> bool:
    """Whether MultiHeadAttention's projections are spelt as tf_keras 2.x does (``_query_dense``, …)."""
    return any(name.rsplit("/", 1)[-1] in _TF_KERAS_ATTENTION for name in _names(layers))


def _ordinal(name: str) -> int:
    """Keras names the n-th layer of a class ``dense``, ``dense_1``, ``dense_2``, …"""
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def _saving_v3_paths(layers: h5py.Group) -> Locations:
    """Where a Keras 3 or tf_keras 2.x ``.weights.h5`` keeps each tensor (both spellings of the attention)."""
    blocks = sorted((k for k, g in layers.items() if isinstance(g, h5py.Group) and "layers" in g), key=_ordinal)
    where: Locations = {"dense/kernel": ("layers/dense/vars/0",), "dense/bias": ("layers/dense/vars/1",)}
    for i, block in enumerate(blocks or ["functional"], start=1):
        p, g = f"encoder_layer_{i}_", f"layers/{block}/layers"
        for ours, theirs in _ATTENTION:
            for index, var in enumerate(("kernel", "bias")):
                where[f"{p}attention/{ours}/{var}"] = tuple(
                    f"{g}/multi_head_attention/{child}/vars/{index}" for child in (theirs, f"_{theirs}"))
        for ours, theirs, variables in (("norm1", "layer_normalization", ("gamma", "beta")),
                                        ("norm2", "layer_normalization_1", ("gamma", "beta")),
                                        ("ff1", "dense", ("kernel", "bias")), ("ff2", "dense_1", ("kernel", "bias"))):
            for index, var in enumerate(variables):
                where[f"{p}{ours}/{var}"] = (f"{g}/{theirs}/vars/{index}",)
    return where


def load_population_stats(path: str | Path) -> PopulationStats:
    """Per minute-of-week means and SDs from an .npz with arrays ``mean`` and ``sd`` (10,080 each).

    Refused (``PatWeightsError``) when an array is missing, a value is NaN or ±inf, or an SD is not positive.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("mean", "sd") if k not in data]
        if missing:
            raise PatWeightsError(f"{path} lacks array(s): {', '.join(missing)}")
        arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("mean", "sd")}
    problems = non_finite(arrays) + _not_positive(arrays["sd"])
    if problems:
        raise PatWeightsError(f"{path}: population statistics refused: {'; '.join(problems)}")
    return PopulationStats(mean=arrays["mean"], sd=arrays["sd"],
                           source=f"{path.name} sha256 {file_sha256(path)}")


def _not_positive(sd: np.ndarray) -> list[str]:
    """A description of the finite SDs that are zero or negative (none: an empty list)."""
    where = np.flatnonzero(np.isfinite(sd) & (sd <= 0))
    if not where.size:
        return []
    return [f"sd ({where.size} of {sd.size} values <= 0, the first at minute-of-week {int(where[0])}; "
            f"an SD must be positive)"]
