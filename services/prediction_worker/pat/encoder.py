"""The PAT (Pretrained Actigraphy Transformer) encoder forward pass in numpy. Pure: no I/O.

What it computes is fixed by the published Keras models (Ruan et al., arXiv 2411.15240, and the authors'
notebooks in njacobsonlab/Pretrained-Actigraphy-Transformer): a participant-week of 10,080 minute values
is cut into patches, each patch embedded by one Dense(96), a fixed sinusoidal table added, then L post-norm
transformer blocks (Keras MultiHeadAttention with 96-wide heads, LayerNorm eps 1e-6, Dense(256, relu) →
Dense(96)). Everything is float32, as in the original graph; the weights come in as a
mapping from the canonical tensor names below (see ``weights.load_encoder`` for reading .h5 files).

Input normalisation lives here too, as named pure functions: the encoder was pretrained on values
standardised per minute-of-week across participants, and whatever stands in for that must be named in every
result that the embedding feeds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

SEQUENCE_MINUTES = 10_080
EMBED_DIM = 96
FF_DIM = 256
LAYER_NORM_EPSILON = 1e-6
# model id: (patch size, heads, layers), from the paper's table
SIZES: dict[str, tuple[int, int, int]] = {"PAT-S": (18, 6, 1), "PAT-M": (18, 12, 2), "PAT-L": (9, 12, 4)}

_BLOCK_TENSORS = (
    "attention/query/kernel", "attention/query/bias", "attention/key/kernel", "attention/key/bias",
    "attention/value/kernel", "attention/value/bias",
    "attention/attention_output/kernel", "attention/attention_output/bias",
    "norm1/gamma", "norm1/beta", "ff1/kernel", "ff1/bias", "ff2/kernel", "ff2/bias", "norm2/gamma", "norm2/beta",
)


def tensor_names(num_layers: int) -> list[str]:
    """Canonical tensor names of an encoder: the Keras layer/weight names without the ``:0``."""
    names = ["dense/kernel", "dense/bias"]
    for i in range(1, num_layers + 1):
        names += [f"encoder_layer_{i}_{suffix}" for suffix in _BLOCK_TENSORS]
    return names


def tensor_shapes(patch_size: int, num_heads: int, num_layers: int) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of an encoder of this size."""
    h, d = num_heads, EMBED_DIM
    block = {
        "attention/query/kernel": (d, h, d), "attention/query/bias": (h, d),
        "attention/key/kernel": (d, h, d), "attention/key/bias": (h, d),
        "attention/value/kernel": (d, h, d), "attention/value/bias": (h, d),
        "attention/attention_output/kernel": (h, d, d), "attention/attention_output/bias": (d,),
        "norm1/gamma": (d,), "norm1/beta": (d,), "ff1/kernel": (d, FF_DIM), "ff1/bias": (FF_DIM,),
        "ff2/kernel": (FF_DIM, d), "ff2/bias": (d,), "norm2/gamma": (d,), "norm2/beta": (d,),
    }
    shapes: dict[str, tuple[int, ...]] = {"dense/kernel": (patch_size, d), "dense/bias": (d,)}
    for i in range(1, num_layers + 1):
        shapes |= {f"encoder_layer_{i}_{suffix}": shape for suffix, shape in block.items()}
    return shapes


def size_of(patch_size: int, num_heads: int, num_layers: int) -> str | None:
    """"PAT-S" / "PAT-M" / "PAT-L" when the shape is one of the paper's table, else None."""
    for model_id, size in SIZES.items():
        if size == (patch_size, num_heads, num_layers):
            return model_id
    return None


# div[k] = exp(2k · −(ln 10000 / 96)), k = 0..47, as the float32 values TensorFlow's tf.exp (Eigen, CPU)
# returns in the original graph. np.exp rounds 18 of the 48 one ulp differently (neither is correctly rounded),
# and one ulp of div times a position of up to 1,119 moves sin/cos by up to 6e-5, as much as a float64 table
# would; so the exponentials are constants here and the rest is computed. tests/unit/test_pat.py checks them
# bit for bit against tf.exp (from the fixture) and to one ulp against np.exp of the same arguments.
_DIV_TERM = np.array([
    1.0, 0.8254042, 0.6812921, 0.56234133, 0.4641589, 0.3831187, 0.31622776, 0.26101574,
    0.21544348, 0.17782794, 0.14677994, 0.121152766, 0.1, 0.082540415, 0.06812922, 0.056234136,
    0.04641589, 0.03831187, 0.031622775, 0.026101576, 0.02154435, 0.017782796, 0.014677993, 0.012115276,
    0.01, 0.008254041, 0.00681292, 0.005623415, 0.00464159, 0.0038311877, 0.0031622783, 0.0026101575,
    0.0021544348, 0.0017782795, 0.0014677993, 0.0012115276, 9.999999e-04, 8.254041e-04, 6.8129227e-04,
    5.623415e-04, 4.64159e-04, 3.8311875e-04, 3.1622782e-04, 2.6101575e-04, 2.1544348e-04, 1.7782794e-04,
    1.4677992e-04, 1.21152756e-04,
], dtype=np.float32)


def div_term_arguments() -> np.ndarray:
    """The float32 arguments of the exponentials, op for op as the graph forms them."""
    scale = -(np.log(np.float32(10000.0)) / np.float32(EMBED_DIM))
    return np.arange(0, EMBED_DIM, 2, dtype=np.float32) * scale


def positional_encoding(num_patches: int) -> np.ndarray:
    """The fixed sinusoidal table, (num_patches, 96) float32: sin half first, then cos half (not interleaved).

    Computed in float32 as the original graph does: the product position × div is rounded to float32 before
    sin/cos, which a float64 table does not do (it differs by up to ~8e-5 at PAT-L's 1,120 patches).
    """
    angle = np.arange(num_patches, dtype=np.float32)[:, None] * _DIV_TERM
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=-1)


@dataclass(frozen=True)
class _Block:
    """One transformer block, kernels flattened for 2-D matmuls; q/k/v fused into one (96, 3·H·96)."""

    qkv_kernel: np.ndarray
    qkv_bias: np.ndarray
    output_kernel: np.ndarray  # (H·96, 96)
    output_bias: np.ndarray
    norm1_gamma: np.ndarray
    norm1_beta: np.ndarray
    ff1_kernel: np.ndarray
    ff1_bias: np.ndarray
    ff2_kernel: np.ndarray
    ff2_bias: np.ndarray
    norm2_gamma: np.ndarray
    norm2_beta: np.ndarray


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = np.mean(np.square(centred), axis=-1, keepdims=True)
    centred *= 1.0 / np.sqrt(variance + np.float32(LAYER_NORM_EPSILON))
    centred *= gamma
    centred += beta
    return centred


class PatEncoder:
    """A PAT encoder with its weights; ``hidden_states`` and ``embed`` are the forward pass.

    Built from canonical tensors (``tensor_names``); the size (patch, heads, layers) is read from their shapes
    and checked against the paper's table when ``model_id`` names one of its sizes. ``positional`` replaces the
    sinusoidal table; it exists so tests can show that other tables do not reproduce Keras.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], *, weights_sha256: str,
                 model_id: str | None = None, positional: np.ndarray | None = None) -> None:
        layers = _count_layers(tensors)
        if "dense/kernel" not in tensors or "encoder_layer_1_attention/query/kernel" not in tensors:
            missing = [n for n in tensor_names(max(layers, 1)) if n not in tensors]
            raise ValueError(f"PAT tensors missing: {', '.join(missing)}")
        patch = int(tensors["dense/kernel"].shape[0])
        heads = int(tensors["encoder_layer_1_attention/query/kernel"].shape[1])
        expected = tensor_shapes(patch, heads, layers)
        missing = [name for name in expected if name not in tensors]
        if missing:
            raise ValueError(f"PAT tensors missing: {', '.join(missing)}")
        wrong = [f"{name} {tuple(tensors[name].shape)} (expected {shape})"
                 for name, shape in expected.items() if tuple(tensors[name].shape) != shape]
        if wrong:
            raise ValueError(f"PAT tensors of the wrong shape: {'; '.join(wrong)}")
        if SEQUENCE_MINUTES % patch:
            raise ValueError(f"patch size {patch} does not divide {SEQUENCE_MINUTES} minutes")
        self.patch_size, self.num_heads, self.num_layers = patch, heads, layers
        self.num_patches = SEQUENCE_MINUTES // patch
        self.model_id = _resolve_model_id(model_id, patch, heads, layers)
        self.weights_sha256 = weights_sha256
        self._positional = (positional_encoding(self.num_patches) if positional is None
                            else np.asarray(positional, dtype=np.float32))
        if self._positional.shape != (self.num_patches, EMBED_DIM):
            raise ValueError(f"positional table {self._positional.shape} != ({self.num_patches}, {EMBED_DIM})")
        t = {name: np.ascontiguousarray(tensors[name], dtype=np.float32) for name in expected}
        self._patch_kernel, self._patch_bias = t["dense/kernel"], t["dense/bias"]
        self._blocks = [self._block(t, i, heads) for i in range(1, layers + 1)]

    @staticmethod
    def _block(t: Mapping[str, np.ndarray], i: int, heads: int) -> _Block:
        p, width = f"encoder_layer_{i}_", heads * EMBED_DIM
        qkv = [t[f"{p}attention/{name}/kernel"].reshape(EMBED_DIM, width) for name in ("query", "key", "value")]
        bias = [t[f"{p}attention/{name}/bias"].reshape(width) for name in ("query", "key", "value")]
        return _Block(
            qkv_kernel=np.ascontiguousarray(np.concatenate(qkv, axis=1)),
            qkv_bias=np.concatenate(bias),
            output_kernel=t[f"{p}attention/attention_output/kernel"].reshape(width, EMBED_DIM),
            output_bias=t[f"{p}attention/attention_output/bias"],
            norm1_gamma=t[f"{p}norm1/gamma"], norm1_beta=t[f"{p}norm1/beta"],
            ff1_kernel=t[f"{p}ff1/kernel"], ff1_bias=t[f"{p}ff1/bias"],
            ff2_kernel=t[f"{p}ff2/kernel"], ff2_bias=t[f"{p}ff2/bias"],
            norm2_gamma=t[f"{p}norm2/gamma"], norm2_beta=t[f"{p}norm2/beta"],
        )

    def describe(self) -> dict[str, object]:
        """What produced an embedding, to travel with it."""
        return {"model_id": self.model_id, "weights_sha256": self.weights_sha256, "patch_size": self.patch_size,
                "num_heads": self.num_heads, "num_layers": self.num_layers}

    def hidden_states(self, x: np.ndarray) -> np.ndarray:
        """(batch, 10080) minute values, already normalised → (batch, patches, 96) float32."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != SEQUENCE_MINUTES:
            raise ValueError(f"expected shape (batch, {SEQUENCE_MINUTES}), got {x.shape}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise ValueError("input has NaN or infinite values; fill or reject missing minutes first")
        out = np.empty((x.shape[0], self.num_patches, EMBED_DIM), dtype=np.float32)
        # one participant-week at a time: the attention scores of PAT-L are 60 MB per week
        for row in range(x.shape[0]):
            out[row] = self._forward(x[row])
        return out

    def embed(self, x: np.ndarray) -> np.ndarray:
        """(batch, 10080) → (batch, 96) float32: the hidden states averaged over patches."""
        return self.hidden_states(x).mean(axis=1, dtype=np.float32)

    def _forward(self, week: np.ndarray) -> np.ndarray:
        h = week.reshape(self.num_patches, self.patch_size) @ self._patch_kernel
        h += self._patch_bias
        h += self._positional
        for block in self._blocks:
            h = self._attend(h, block)
        return h

    def _attend(self, h: np.ndarray, b: _Block) -> np.ndarray:
        n, heads, d = self.num_patches, self.num_heads, EMBED_DIM
        qkv = h @ b.qkv_kernel
        qkv += b.qkv_bias
        # (n, 3, heads, d) → (3, heads, n, d): one view per projection, heads batched in the matmuls below
        q, k, v = qkv.reshape(n, 3, heads, d).transpose(1, 2, 0, 3)
        # Keras scales the query, not the scores; the order matters in the last bits
        q = q * np.float32(1.0 / math.sqrt(d))
        scores = q @ k.transpose(0, 2, 1)  # (heads, n, n), queries × keys
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(1, 0, 2).reshape(n, heads * d)
        attention = context @ b.output_kernel
        attention += b.output_bias
        attention += h
        x1 = _layer_norm(attention, b.norm1_gamma, b.norm1_beta)
        ff = x1 @ b.ff1_kernel
        ff += b.ff1_bias
        np.maximum(ff, 0, out=ff)
        ff2 = ff @ b.ff2_kernel
        ff2 += b.ff2_bias
        ff2 += x1
        return _layer_norm(ff2, b.norm2_gamma, b.norm2_beta)


def _count_layers(tensors: Mapping[str, np.ndarray]) -> int:
    found = {int(m.group(1)) for name in tensors if (m := re.match(r"encoder_layer_(\d+)_", name))}
    return max(found, default=0)


def _resolve_model_id(model_id: str | None, patch: int, heads: int, layers: int) -> str:
    detected = size_of(patch, heads, layers)
    shape = f"patch {patch}, {heads} heads, {layers} layers"
    if model_id is None:
        if detected is None:
            raise ValueError(f"weights of {shape} match no PAT size of the paper; pass model_id explicitly")
        return detected
    named = re.match(r"PAT-([SML])(?![A-Za-z])", model_id)
    if named and f"PAT-{named.group(1)}" != detected:
        found = detected or "no PAT size"
        raise ValueError(f"model_id {model_id!r} does not match the weights ({shape}: {found})")
    return model_id


# --- input normalisation ---------------------------------------------------------------------------------

NORMALISATIONS: dict[str, str] = {
    "none": "none (values fed to the encoder as given)",
    "per-sequence-zscore": ("per-sequence-zscore (approximation: the paper standardised per minute-of-week "
                            "across participants)"),
    "population": "population (per minute-of-week mean and SD across participants, as in the paper)",
}


@dataclass(frozen=True)
class PopulationStats:
    """Means and SDs for each of the 10,080 minutes of the week, and where they came from."""

    mean: np.ndarray
    sd: np.ndarray
    source: str

    def __post_init__(self) -> None:
        for name in ("mean", "sd"):
            value = getattr(self, name)
            if value.shape != (SEQUENCE_MINUTES,):
                raise ValueError(f"population {name} must be {SEQUENCE_MINUTES} finite values, got {value.shape}")
            if not np.isfinite(value).all():
                raise ValueError(f"population {name} must be {SEQUENCE_MINUTES} finite values, "
                                 f"{np.count_nonzero(~np.isfinite(value))} are NaN or ±inf")
        if (self.sd < 0).any():
            raise ValueError("population SDs must not be negative")


def normalisation_label(method: str, population: PopulationStats | None = None) -> str:
    """The name string to put in every output computed from inputs normalised by ``method``."""
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {method!r}; one of {', '.join(NORMALISATIONS)}")
    if method == "population" and population is not None:
        return f"{NORMALISATIONS[method]}; statistics: {population.source}"
    return NORMALISATIONS[method]


def normalise(x: np.ndarray, method: str, population: PopulationStats | None = None) -> np.ndarray:
    """(batch, 10080) raw minute values → finite float32 input for the encoder, by the named ``method``.

    Finite input gives finite output, or a ValueError saying why it cannot: with ``per-sequence-zscore``
    always (see ``zscore_rows``); with ``none`` and ``population`` when a result exceeds float32's range.
    NaN or ±inf in the input is refused. A constant week becomes zeros (``zscore_rows``); a minute with no
    spread in the population (which ``load_population_stats`` refuses) divides by 1, as sklearn's
    StandardScaler does.
    """
    normalisation_label(method)  # rejects unknown methods
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != SEQUENCE_MINUTES:
        raise ValueError(f"expected shape (batch, {SEQUENCE_MINUTES}), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"input has {np.count_nonzero(~np.isfinite(x))} NaN or infinite value(s); "
                         f"fill or reject missing minutes first")
    if method == "none":
        return _encoder_input(x, method)
    if method == "per-sequence-zscore":
        return _encoder_input(zscore_rows(x), method)
    if population is None:
        raise ValueError("normalisation 'population' needs PopulationStats (10,080 means and SDs)")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes ±inf, refused below
        z = (x - population.mean[None, :]) / np.where(population.sd > 0, population.sd, 1.0)[None, :]
    return _encoder_input(z, method)


def zscore_rows(x: np.ndarray) -> np.ndarray:
    """Each row of finite float64 ``x`` minus its mean, over its SD; always finite.

    The mean and SD of values near float64's limit overflow (10,080 counts of 1e308 sum to inf), so each row
    is first divided by 2**e, the power of two just above its largest magnitude. A power of two changes only
    the exponent, and a z-score is scale-invariant: the result is bit for bit the unscaled formula's wherever
    that neither overflows nor underflows, and |z| stays below sqrt(10,080) ≈ 100 everywhere.

    A week whose SD is within the rounding error of its mean (10,080 · float64 eps of its largest magnitude)
    is constant to float64 precision and becomes zeros, as one whose SD is exactly 0 does (a week of 0.1 has
    a computed SD of 3e-17, and dividing by it would make it all ones).
    """
    _, exponent = np.frexp(np.abs(x).max(axis=1, keepdims=True))
    scaled = np.ldexp(x, -exponent)  # |scaled| < 1
    mean, sd = scaled.mean(axis=1, keepdims=True), scaled.std(axis=1, keepdims=True)
    rounding = x.shape[1] * np.finfo(np.float64).eps * np.abs(scaled).max(axis=1, keepdims=True)
    spread = sd > rounding
    return np.where(spread, (scaled - mean) / np.where(spread, sd, 1.0), 0.0)


def _encoder_input(z: np.ndarray, method: str) -> np.ndarray:
    """``z`` as float32, refused when a value is not finite there (beyond float32's ±3.4e38)."""
    with np.errstate(over="ignore"):
        out = z.astype(np.float32)
    bad = np.count_nonzero(~np.isfinite(out))
    if bad:
        raise ValueError(f"normalisation {method!r} leaves {bad} of {out.size} value(s) beyond float32's range "
                         f"(±{np.finfo(np.float32).max:.2g}); the encoder cannot take them")
    return out
