"""Reading PAT encoder weights from Keras .h5 files (and population statistics from .npz).

Three layouts are accepted, detected from the file's tree:
- Keras 2 full model (how the weights were published): ``model_weights/<layer>/<layer>/<name>:0``, e.g.
  ``model_weights/encoder_layer_1_transformer/encoder_layer_1_attention/query/kernel:0``;
- Keras 2 weights only (``save_weights``): the same tree at the root;
- Keras 3: a full model saved as .h5 (the tree above, names without ``:0``) or a ``.weights.h5`` file,
  whose groups are named after the layer classes in model order (``layers/dense/vars/0``,
  ``layers/functional/layers/multi_head_attention/query_dense/vars/0``, …).
Any tensor that is not where the layout puts it is named in the error, with the path it was looked for at.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import h5py
import numpy as np

from .encoder import PatEncoder, PopulationStats, tensor_names


class PatWeightsError(ValueError):
    """The file is not a readable PAT encoder: unknown layout, missing or malformed tensors."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    """Canonical tensor name → float32 array, and the name of the layout found."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PAT weights file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise PatWeightsError(f"{path} is not a readable HDF5 file: {exc}") from exc
    with f:
        if "model_weights" in f:
            base: h5py.Group = f["model_weights"]
            suffix = ":0" if _has_colon_names(base) else ""
            layout = "Keras 2 full model" if suffix else "Keras 3 full model (.h5)"
            where = _legacy_paths(base, suffix)
        elif "layers" in f and isinstance(f["layers"], h5py.Group) and _is_keras3_weights(f["layers"]):
            base, layout = f, "Keras 3 weights (.weights.h5)"
            where = _keras3_paths(f["layers"])
        elif "dense" in f or any(k.startswith("encoder_layer_") for k in f):
            base = f
            suffix = ":0" if _has_colon_names(base) else ""
            layout = "Keras 2 weights only" if suffix else "Keras weights only (no ':0' names)"
            where = _legacy_paths(base, suffix)
        else:
            raise PatWeightsError(f"{path}: no PAT encoder layout found (top-level groups: {', '.join(f)})")
        tensors, missing = {}, []
        for name, location in where.items():
            node = base.get(location)
            if isinstance(node, h5py.Dataset):
                tensors[name] = np.asarray(node[()], dtype=np.float32)
            else:
                missing.append(f"{name} (at {base.name.rstrip('/')}/{location})")
    if missing:
        raise PatWeightsError(f"{path} ({layout}) lacks {len(missing)} tensor(s): {'; '.join(missing)}")
    return tensors, layout


def _has_colon_names(group: h5py.Group) -> bool:
    names: list[str] = []
    group.visit(names.append)
    return any(name.endswith(":0") for name in names)


def _legacy_paths(base: h5py.Group, suffix: str) -> dict[str, str]:
    names: list[str] = []
    base.visit(names.append)
    layers = max((int(m.group(1)) for n in names if (m := re.search(r"encoder_layer_(\d+)_", n))), default=0)
    where = {}
    for name in tensor_names(max(layers, 1)):
        block = re.match(r"encoder_layer_\d+", name)
        group = f"{block.group(0)}_transformer" if block else "dense"
        where[name] = f"{group}/{name}{suffix}"
    return where


def _is_keras3_weights(layers: h5py.Group) -> bool:
    return any(isinstance(g, h5py.Group) and ("vars" in g or "layers" in g) for g in layers.values())


def _ordinal(name: str) -> int:
    """Keras 3 names the n-th layer of a class ``dense``, ``dense_1``, ``dense_2``, …"""
    m = re.search(r"_(\d+)$", name)
    return int(m.group(1)) if m else 0


def _keras3_paths(layers: h5py.Group) -> dict[str, str]:
    blocks = sorted((k for k, g in layers.items() if isinstance(g, h5py.Group) and "layers" in g), key=_ordinal)
    where = {"dense/kernel": "layers/dense/vars/0", "dense/bias": "layers/dense/vars/1"}
    for i, block in enumerate(blocks or ["functional"], start=1):
        p, g = f"encoder_layer_{i}_", f"layers/{block}/layers"
        for ours, theirs in (("query", "query_dense"), ("key", "key_dense"), ("value", "value_dense"),
                             ("attention_output", "output_dense")):
            where[f"{p}attention/{ours}/kernel"] = f"{g}/multi_head_attention/{theirs}/vars/0"
            where[f"{p}attention/{ours}/bias"] = f"{g}/multi_head_attention/{theirs}/vars/1"
        for ours, theirs in (("norm1", "layer_normalization"), ("norm2", "layer_normalization_1")):
            where[f"{p}{ours}/gamma"] = f"{g}/{theirs}/vars/0"
            where[f"{p}{ours}/beta"] = f"{g}/{theirs}/vars/1"
        for ours, theirs in (("ff1", "dense"), ("ff2", "dense_1")):
            where[f"{p}{ours}/kernel"] = f"{g}/{theirs}/vars/0"
            where[f"{p}{ours}/bias"] = f"{g}/{theirs}/vars/1"
    return where


def load_population_stats(path: str | Path) -> PopulationStats:
    """Per minute-of-week means and SDs from an .npz with arrays ``mean`` and ``sd`` (10,080 each)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("mean", "sd") if k not in data]
        if missing:
            raise ValueError(f"{path} lacks array(s): {', '.join(missing)}")
        mean, sd = data["mean"].astype(np.float64), data["sd"].astype(np.float64)
    return PopulationStats(mean=mean, sd=sd, source=f"{path.name} sha256 {file_sha256(path)}")
