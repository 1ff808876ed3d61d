"""Generate the PAT encoder test fixture with the ORIGINAL Keras 2 architecture.

Runs ONLY in a separate TensorFlow virtualenv, never in the project's (TensorFlow is no dependency of
circadia):

    python3.11 -m venv /tmp/pat-tfenv
    /tmp/pat-tfenv/bin/pip install tensorflow-cpu tf-keras h5py numpy
    /tmp/pat-tfenv/bin/python tools/pat/make_fixture.py --out tests/fixtures/pat

The encoder is built as in the authors' notebooks (njacobsonlab/Pretrained-Actigraphy-Transformer,
Pretraining/PAT_Pretraining.ipynb): reshape into patches, Dense(96) `dense`, a sinusoidal positional
table computed in the graph in float32 (sin half, then cos half), L post-norm transformer blocks that are
sub-models `encoder_layer_{i}_transformer`, outputs [hidden states] + per-layer attention scores. It is saved
with Keras 2 (tf-keras) so the .h5 has the published layout (`model_weights/<layer>/<layer>/<name>:0`).

The weights are RANDOM (fixed seed), not the published ones. They are drawn from a coarse grid
(small integers times a power of two) so that the .h5 files, which Keras writes uncompressed, shrink under
xz to a size that can be committed. Values on a grid are exact in float32; the forward pass is not.

Outputs (all in --out):
- pat_s.h5.xz, pat_m.h5.xz      Keras 2 full-model files (xz of the exact bytes Keras wrote)
- pat_s_keras3.weights.h5.xz    the PAT-S weights saved by Keras 3 (`save_weights`, native Keras 3 layout)
- pat_s_keras3.h5.xz            the PAT-S model saved by Keras 3 `model.save(".h5")` (its legacy-h5 layout)
- reference.npz                 inputs, Keras hidden states and embeddings, rows of the TF positional table
                                and TF's float32 div term
- manifest.json                 configs, seeds, sha256 of every uncompressed file, library versions
"""

from __future__ import annotations

import os

# Keras 2 must be chosen before TensorFlow is imported.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import lzma  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

SEQUENCE = 10_080
EMBED = 96
FF = 256
SEED = 20_241_123
# name: (patch, heads, layers). PAT-L (patch 9, 12 heads, 4 layers, ~2 M parameters) is left out: with its
# reference outputs it would not fit the fixture budget; PAT-M exercises layer stacking at 12 heads.
CONFIGS = {"PAT-S": (18, 6, 1), "PAT-M": (18, 12, 2)}
FILES = {"PAT-S": "pat_s", "PAT-M": "pat_m"}
# Full hidden states are 215 kB per input at 560 patches; keep those of a few inputs, embeddings of all.
HIDDEN_INPUTS = {"PAT-S": [0, 1], "PAT-M": [1]}
TABLE_POSITIONS = np.unique(np.concatenate([np.arange(8), np.arange(0, 1120, 7), [559, 1119]]))


# --- the original architecture ---------------------------------------------------------------------------

def div_term(embed_dim: int = EMBED) -> tf.Tensor:
    return tf.exp(tf.range(0, embed_dim, 2, dtype=tf.float32) * -(tf.math.log(10000.0) / embed_dim))


def positional_embeddings(num_patches: int, embed_dim: int) -> tf.Tensor:
    position = tf.range(num_patches, dtype=tf.float32)[:, tf.newaxis]
    div = div_term(embed_dim)
    return tf.concat([tf.sin(position * div), tf.cos(position * div)], axis=-1)


def add_positional(patch_embeddings: tf.Tensor) -> tf.Tensor:
    return patch_embeddings + positional_embeddings(patch_embeddings.shape[1], patch_embeddings.shape[2])


def transformer_block(embed_dim: int, num_heads: int, ff_dim: int, rate: float, name_prefix: str):
    inputs = tf_keras.layers.Input(shape=(None, embed_dim))
    attention = tf_keras.layers.MultiHeadAttention(
        num_heads=num_heads, key_dim=embed_dim, name=f"{name_prefix}_attention")
    attn_output, attn_scores = attention(inputs, inputs, return_attention_scores=True)
    attn_output = tf_keras.layers.Dropout(rate, name=f"{name_prefix}_dropout1")(attn_output)
    out1 = tf_keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name_prefix}_norm1")(inputs + attn_output)
    ff = tf_keras.layers.Dense(ff_dim, activation="relu", name=f"{name_prefix}_ff1")(out1)
    ff = tf_keras.layers.Dense(embed_dim, name=f"{name_prefix}_ff2")(ff)
    ff = tf_keras.layers.Dropout(rate, name=f"{name_prefix}_dropout2")(ff)
    out2 = tf_keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name_prefix}_norm2")(out1 + ff)
    return tf_keras.Model(inputs=[inputs], outputs=[out2, attn_scores], name=f"{name_prefix}_transformer")


def build_encoder(patch: int, heads: int, layers: int) -> tf_keras.Model:
    num_patches = SEQUENCE // patch
    inputs = tf_keras.layers.Input(shape=(SEQUENCE,), name="inputs")
    reshaped = tf_keras.layers.Reshape((num_patches, patch), name="reshape")(inputs)
    x = tf_keras.layers.Dense(EMBED, name="dense")(reshaped)
    # In a Lambda the table is computed in the graph at run time; a bare `x + table` would make Keras write
    # the 53,760-float table into model_config as JSON text (about 1 MB per file), with the same result.
    x = tf_keras.layers.Lambda(add_positional, name="positional_encoding")(x)
    scores = []
    for i in range(1, layers + 1):
        x, attn = transformer_block(EMBED, heads, FF, 0.1, f"encoder_layer_{i}")(x)
        scores.append(attn)
    return tf_keras.Model(inputs=inputs, outputs=[x, *scores], name="encoder")


# --- random weights on a coarse grid ---------------------------------------------------------------------

def grid(rng: np.random.Generator, shape: tuple[int, ...], std: float, levels: int = 1) -> np.ndarray:
    """Integers in [-levels, levels] times the power of two that brings their SD nearest to ``std``."""
    ints = rng.integers(-levels, levels + 1, size=shape)
    int_sd = np.sqrt(levels * (levels + 1) / 3)
    step = 2.0 ** np.round(np.log2(std / int_sd))
    return (ints * step).astype(np.float32)


def randomise(model: tf_keras.Model, rng: np.random.Generator) -> None:
    for weight in sorted(model.weights, key=lambda w: w.name):
        name, shape = weight.name, tuple(weight.shape)
        if name.endswith("gamma:0"):
            value = 1.0 + grid(rng, shape, 0.1)
        elif name.endswith(("beta:0", "bias:0")):
            value = grid(rng, shape, 0.1)
        else:
            fan_in = shape[0] if "attention_output" not in name else shape[0] * shape[1]
            # query/key twice the Glorot-like SD so attention is peaked, not near-uniform: the softmax and
            # the 1/sqrt(96) scale must then be right to pass.
            boost = 2.0 if ("/query/" in name or "/key/" in name) else 1.0
            value = grid(rng, shape, boost / np.sqrt(fan_in))
        weight.assign(value)


def make_inputs(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Three participant-weeks: Gaussian noise, a z-scored synthetic activity week, and all zeros."""
    noise = np.round(rng.standard_normal(SEQUENCE) * 256) / 256
    minute_of_day = np.arange(SEQUENCE) % 1440
    awake = (minute_of_day >= 7 * 60) & (minute_of_day < 23 * 60)
    counts = np.where(awake, rng.gamma(0.6, 400.0, SEQUENCE), rng.poisson(0.3, SEQUENCE) * 20.0).round()
    activity = np.round((counts - counts.mean()) / counts.std() * 1024) / 1024
    names = ["gaussian", "activity", "zeros"]
    return names, np.stack([noise, activity, np.zeros(SEQUENCE)]).astype(np.float32)


# --- Keras 3 copies of the PAT-S weights -----------------------------------------------------------------

def save_keras3(k2_model: tf_keras.Model, patch: int, heads: int, layers: int, x: np.ndarray,
                expected: np.ndarray, h5_path: Path, weights_path: Path) -> str:
    import keras  # Keras 3, installed alongside TensorFlow 2.21

    num_patches = SEQUENCE // patch

    def block(i: int) -> keras.Model:
        p = f"encoder_layer_{i}"
        inputs = keras.layers.Input(shape=(None, EMBED))
        attn_out, attn = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=EMBED, name=f"{p}_attention")(
            inputs, inputs, return_attention_scores=True)
        out1 = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{p}_norm1")(inputs + attn_out)
        ff = keras.layers.Dense(FF, activation="relu", name=f"{p}_ff1")(out1)
        ff = keras.layers.Dense(EMBED, name=f"{p}_ff2")(ff)
        out2 = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{p}_norm2")(out1 + ff)
        return keras.Model(inputs=inputs, outputs=[out2, attn], name=f"{p}_transformer")

    inputs = keras.layers.Input(shape=(SEQUENCE,), name="inputs")
    h = keras.layers.Reshape((num_patches, patch), name="reshape")(inputs)
    h = keras.layers.Dense(EMBED, name="dense")(h)
    h = keras.layers.Lambda(add_positional, output_shape=(num_patches, EMBED), name="positional_encoding")(h)
    scores = []
    for i in range(1, layers + 1):
        h, attn = block(i)(h)
        scores.append(attn)
    model = keras.Model(inputs=inputs, outputs=[h, *scores], name="encoder")
    for layer in k2_model.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
    got = model.predict(x, verbose=0)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)  # the copy computes what the Keras 2 model does
    model.save(h5_path)
    model.save_weights(weights_path)
    return keras.__version__


# --- files -----------------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compress(path: Path, out_dir: Path) -> dict[str, object]:
    """Write ``<name>.xz`` of the exact bytes and describe both."""
    raw = path.read_bytes()
    packed = lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)
    (out_dir / f"{path.name}.xz").write_bytes(packed)
    return {"file": f"{path.name}.xz", "h5": path.name, "sha256": hashlib.sha256(raw).hexdigest(),
            "bytes": len(raw), "xz_bytes": len(packed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/pat"))
    parser.add_argument("--no-keras3", action="store_true", help="skip the Keras 3 copies of PAT-S")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)

    input_names, x = make_inputs(rng)
    table = positional_embeddings(1120, EMBED).numpy()
    reference: dict[str, np.ndarray] = {
        "inputs": x, "input_names": np.array(input_names),
        "table_positions": TABLE_POSITIONS.astype(np.int32), "table_rows": table[TABLE_POSITIONS],
        "div_term": div_term().numpy(),
    }
    manifest: dict[str, object] = {
        "seed": SEED, "weights": "random (coarse grid), NOT the published PAT weights",
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "tf_keras": tf_keras.__version__, "h5py": h5py.__version__, "numpy": np.__version__},
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model_id, (patch, heads, layers) in CONFIGS.items():
            model = build_encoder(patch, heads, layers)
            randomise(model, rng)
            outputs = model.predict(x, verbose=0)
            hidden = outputs[0]
            # the paper's head pools with GlobalAveragePooling1D; compute it the same way, in TF float32
            embedding = tf_keras.layers.GlobalAveragePooling1D()(tf.constant(hidden)).numpy()
            stem = FILES[model_id]
            reference[f"{stem}/hidden"] = hidden[HIDDEN_INPUTS[model_id]]
            reference[f"{stem}/hidden_inputs"] = np.array(HIDDEN_INPUTS[model_id], dtype=np.int32)
            reference[f"{stem}/embedding"] = embedding
            peak = float(np.mean(np.max(outputs[1], axis=-1)))
            path = work / f"{stem}.h5"
            model.save(path)  # Keras 2 full model: model_weights/<layer>/<layer>/<name>:0
            entry = compress(path, args.out)
            entry |= {"patch": patch, "heads": heads, "layers": layers, "params": int(model.count_params()),
                      "mean_max_attention_layer1": round(peak, 4)}
            manifest["models"][model_id] = entry
            if model_id == "PAT-S" and not args.no_keras3:
                k3 = work / f"{stem}_keras3.h5"
                k3w = work / f"{stem}_keras3.weights.h5"
                version = save_keras3(model, patch, heads, layers, x, hidden, k3, k3w)
                manifest["versions"]["keras3"] = version
                manifest["keras3"] = {"model_id": model_id, "legacy_h5": compress(k3, args.out),
                                      "weights_h5": compress(k3w, args.out)}
    np.savez_compressed(args.out / "reference.npz", **reference)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
