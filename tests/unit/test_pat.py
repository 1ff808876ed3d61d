"""The numpy PAT encoder against the original Keras architecture (tests/fixtures/pat), its loader, the
positional table, input normalisation and the trained-head gate. Runs without TensorFlow."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import lzma
import re
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from prediction_worker.pat import (
    NORMALISATIONS,
    HeadRefused,
    PatEncoder,
    PatWeightsError,
    PopulationStats,
    file_sha256,
    load_encoder,
    load_head,
    load_population_stats,
    normalisation_label,
    normalise,
    positional_encoding,
)
from prediction_worker.pat.encoder import _DIV_TERM, div_term_arguments, tensor_shapes
from prediction_worker.pat.weights import read_encoder_tensors

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pat"
MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())
MODELS = {"PAT-S": "pat_s", "PAT-M": "pat_m"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's .h5 files, unpacked from .xz into a temporary folder."""
    folder = tmp_path_factory.mktemp("pat")
    for packed in FIXTURE.glob("*.h5.xz"):
        (folder / packed.name.removesuffix(".xz")).write_bytes(lzma.decompress(packed.read_bytes()))
    return folder


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as data:
        return {key: data[key] for key in data}


def float64_table(n: int) -> np.ndarray:
    position = np.arange(n, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, 96, 2) * -(np.log(10000.0) / 96))
    return np.concatenate([np.sin(position * div), np.cos(position * div)], axis=-1)


def interleaved_table(n: int) -> np.ndarray:
    position = np.arange(n, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, 96, 2) * -(np.log(10000.0) / 96))
    return np.stack([np.sin(position * div), np.cos(position * div)], axis=-1).reshape(n, 96)


def max_error(encoder: PatEncoder, reference: dict[str, np.ndarray], stem: str) -> tuple[float, float]:
    x = reference["inputs"]
    embedding = encoder.embed(x)
    hidden = encoder.hidden_states(x[reference[f"{stem}/hidden_inputs"]])
    return (float(np.abs(embedding - reference[f"{stem}/embedding"]).max()),
            float(np.abs(hidden - reference[f"{stem}/hidden"]).max()))


# --- forward pass against Keras ------------------------------------------------------------------------

@pytest.mark.parametrize("model_id", MODELS)
def test_numpy_encoder_matches_keras(unpacked: Path, reference: dict[str, np.ndarray], model_id: str) -> None:
    stem = MODELS[model_id]
    encoder = load_encoder(unpacked / f"{stem}.h5")
    config = MANIFEST["models"][model_id]
    assert encoder.model_id == model_id
    assert (encoder.patch_size, encoder.num_heads, encoder.num_layers) == (
        config["patch"], config["heads"], config["layers"])
    x = reference["inputs"]
    embedding = encoder.embed(x)
    hidden = encoder.hidden_states(x[reference[f"{stem}/hidden_inputs"]])
    assert embedding.dtype == np.float32 and embedding.shape == (3, 96)
    assert hidden.dtype == np.float32 and hidden.shape == (len(reference[f"{stem}/hidden_inputs"]), 560, 96)
    np.testing.assert_allclose(embedding, reference[f"{stem}/embedding"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(hidden, reference[f"{stem}/hidden"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("model_id", MODELS)
def test_only_the_float32_sin_then_cos_table_matches_keras_closely(
        unpacked: Path, reference: dict[str, np.ndarray], model_id: str) -> None:
    stem = MODELS[model_id]
    tensors, _ = read_encoder_tensors(unpacked / f"{stem}.h5")
    ours = max_error(PatEncoder(tensors, weights_sha256="-"), reference, stem)
    as_float64 = max_error(PatEncoder(tensors, weights_sha256="-", positional=float64_table(560)), reference, stem)
    interleaved = max_error(PatEncoder(tensors, weights_sha256="-", positional=interleaved_table(560)),
                            reference, stem)
    # measured: ours ≤ 7e-6 on hidden states; a float64 table 4e-5..6e-5; interleaved is another model
    assert ours[1] < 2e-5
    assert as_float64[1] > 2e-5
    assert interleaved[0] > 1e-2 and interleaved[1] > 1e-1


def test_embedding_is_the_mean_of_hidden_states(unpacked: Path, reference: dict[str, np.ndarray]) -> None:
    encoder = load_encoder(unpacked / "pat_s.h5")
    x = reference["inputs"][:2]
    np.testing.assert_allclose(encoder.embed(x), encoder.hidden_states(x).mean(axis=1), atol=1e-7)
    # batch rows are independent
    np.testing.assert_array_equal(encoder.embed(x)[1], encoder.embed(x[1:2])[0])


def test_input_must_be_finite_weeks(unpacked: Path) -> None:
    encoder = load_encoder(unpacked / "pat_s.h5")
    with pytest.raises(ValueError, match="10080"):
        encoder.embed(np.zeros(10_080))
    with pytest.raises(ValueError, match="10080"):
        encoder.embed(np.zeros((1, 10_000)))
    week = np.zeros((1, 10_080))
    week[0, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        encoder.embed(week)


# --- positional table ----------------------------------------------------------------------------------

def test_positional_table_is_sin_half_then_cos_half() -> None:
    table = positional_encoding(1120)
    assert table.dtype == np.float32 and table.shape == (1120, 96)
    np.testing.assert_array_equal(table[0], np.r_[np.zeros(48), np.ones(48)])
    angle = np.float32(7) * _DIV_TERM
    np.testing.assert_allclose(table[7, :48], np.sin(angle), atol=2e-7)
    np.testing.assert_allclose(table[7, 48:], np.cos(angle), atol=2e-7)


def test_positional_table_matches_tensorflow_float32(reference: dict[str, np.ndarray]) -> None:
    rows, tf_rows = reference["table_positions"], reference["table_rows"]
    assert rows.max() == 1119  # PAT-L's last patch
    error = lambda table: float(np.abs(table[rows].astype(np.float32) - tf_rows).max())  # noqa: E731
    assert error(positional_encoding(1120)) < 1e-6
    # what a port gets wrong, each measured against the same TensorFlow table
    assert error(float64_table(1120)) > 2e-5
    angle = np.arange(1120, dtype=np.float32)[:, None] * np.exp(div_term_arguments())
    assert error(np.concatenate([np.sin(angle), np.cos(angle)], axis=-1)) > 2e-5  # np.exp's rounding
    assert error(interleaved_table(1120)) > 0.5


def test_div_term_is_tensorflows_exp_and_within_one_ulp_of_numpys(reference: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(_DIV_TERM.view(np.int32), reference["div_term"].view(np.int32))
    ulps = np.abs(np.exp(div_term_arguments()).view(np.int32) - _DIV_TERM.view(np.int32))
    assert ulps.max() <= 1


# --- loader ----------------------------------------------------------------------------------------------

def test_keras2_full_model_layout_and_sha256(unpacked: Path) -> None:
    path = unpacked / "pat_s.h5"
    with h5py.File(path) as f:
        assert f["model_weights/encoder_layer_1_transformer/encoder_layer_1_attention/query/kernel:0"].shape == (
            96, 6, 96)
        assert f["model_weights/dense/dense/kernel:0"].shape == (18, 96)
    _, layout = read_encoder_tensors(path)
    encoder = load_encoder(path)
    assert layout == "Keras 2 full model"
    assert encoder.weights_sha256 == MANIFEST["models"]["PAT-S"]["sha256"]
    assert encoder.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    assert encoder.describe()["weights_sha256"] == encoder.weights_sha256


def test_keras2_weights_only_layout(unpacked: Path, reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    """``save_weights`` writes the ``model_weights`` tree at the root of the file."""
    source, target = unpacked / "pat_m.h5", tmp_path / "pat_m.weights.h5"
    with h5py.File(source) as src, h5py.File(target, "w") as dst:
        for key, value in src["model_weights"].attrs.items():
            dst.attrs[key] = value
        for name in src["model_weights"]:
            src.copy(src[f"model_weights/{name}"], dst, name=name)
    tensors, layout = read_encoder_tensors(target)
    assert layout == "Keras 2 weights only"
    encoder = load_encoder(target)
    assert (encoder.model_id, encoder.num_layers) == ("PAT-M", 2)
    assert encoder.weights_sha256 == file_sha256(target) != file_sha256(source)
    x = reference["inputs"]
    np.testing.assert_array_equal(encoder.embed(x), load_encoder(source).embed(x))


@pytest.mark.parametrize(("file", "layout"), [
    ("pat_s_keras3.h5", "Keras 3 full model (.h5)"),
    ("pat_s_keras3.weights.h5", "Keras 3 weights (.weights.h5)"),
])
def test_keras3_layouts(unpacked: Path, reference: dict[str, np.ndarray], file: str, layout: str) -> None:
    keras2, _ = read_encoder_tensors(unpacked / "pat_s.h5")
    keras3, found = read_encoder_tensors(unpacked / file)
    assert found == layout
    assert keras3.keys() == keras2.keys()
    for name in keras2:
        np.testing.assert_array_equal(keras3[name], keras2[name], err_msg=name)
    encoder = load_encoder(unpacked / file)
    assert encoder.model_id == "PAT-S"
    entry = MANIFEST["keras3"]["weights_h5" if file.endswith(".weights.h5") else "legacy_h5"]
    assert encoder.weights_sha256 == entry["sha256"]


def test_missing_tensors_are_each_named(unpacked: Path, tmp_path: Path) -> None:
    path = tmp_path / "broken.h5"
    shutil.copy(unpacked / "pat_m.h5", path)
    with h5py.File(path, "a") as f:
        del f["model_weights/encoder_layer_2_transformer/encoder_layer_2_attention/key/bias:0"]
        del f["model_weights/dense/dense/kernel:0"]
    with pytest.raises(PatWeightsError) as error:
        load_encoder(path)
    message = str(error.value)
    assert "lacks 2 tensor(s)" in message
    assert "encoder_layer_2_attention/key/bias (at /model_weights/encoder_layer_2_transformer/" in message
    assert "dense/kernel (at /model_weights/dense/dense/kernel:0)" in message


def test_missing_tensor_in_keras3_weights_file_is_named(unpacked: Path, tmp_path: Path) -> None:
    path = tmp_path / "broken.weights.h5"
    shutil.copy(unpacked / "pat_s_keras3.weights.h5", path)
    with h5py.File(path, "a") as f:
        del f["layers/functional/layers/layer_normalization_1/vars/1"]
    with pytest.raises(PatWeightsError, match=re.escape(
            "encoder_layer_1_norm2/beta (at /layers/functional/layers/layer_normalization_1/vars/1)")):
        load_encoder(path)


def write_tf_keras_weights(unpacked: Path, target: Path) -> Path:
    """The Keras 3 ``.weights.h5`` fixture respelt as tf_keras 2.x writes it: its saving_lib names a child layer
    by the attribute holding it, so MultiHeadAttention's projections get a leading underscore."""
    shutil.copy(unpacked / "pat_s_keras3.weights.h5", target)
    with h5py.File(target, "a") as f:
        attention = f["layers/functional/layers/multi_head_attention"]
        for child in ("query_dense", "key_dense", "value_dense", "output_dense"):
            attention.move(child, f"_{child}")
    return target


def test_tf_keras_weights_layout(unpacked: Path, reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    keras3_path = unpacked / "pat_s_keras3.weights.h5"
    path = write_tf_keras_weights(unpacked, tmp_path / "pat_s_tf_keras.weights.h5")
    with h5py.File(path) as f:
        assert f["layers/functional/layers/multi_head_attention/_query_dense/vars/0"].shape == (96, 6, 96)
        assert "layers/functional/layers/multi_head_attention/query_dense" not in f
    keras3, _ = read_encoder_tensors(keras3_path)
    tensors, layout = read_encoder_tensors(path)
    assert layout == "tf_keras 2.x weights (.weights.h5)"
    assert tensors.keys() == keras3.keys()
    for name in keras3:
        np.testing.assert_array_equal(tensors[name], keras3[name], err_msg=name)
    encoder = load_encoder(path)
    assert encoder.model_id == "PAT-S" and encoder.weights_sha256 == file_sha256(path)
    x = reference["inputs"]
    np.testing.assert_array_equal(encoder.embed(x), load_encoder(keras3_path).embed(x))


def test_missing_tensor_in_tf_keras_weights_file_names_both_spellings(unpacked: Path, tmp_path: Path) -> None:
    path = write_tf_keras_weights(unpacked, tmp_path / "broken.weights.h5")
    with h5py.File(path, "a") as f:
        del f["layers/functional/layers/multi_head_attention/_key_dense/vars/1"]
    g = "/layers/functional/layers/multi_head_attention"
    with pytest.raises(PatWeightsError) as error:
        load_encoder(path)
    message = str(error.value)
    assert "(tf_keras 2.x weights (.weights.h5)) lacks 1 tensor(s)" in message
    assert f"encoder_layer_1_attention/key/bias (at {g}/key_dense/vars/1 or {g}/_key_dense/vars/1)" in message


def test_non_finite_weights_are_refused_naming_each_tensor(unpacked: Path, tmp_path: Path) -> None:
    path = tmp_path / "non_finite.h5"
    shutil.copy(unpacked / "pat_s.h5", path)
    layer = "model_weights/encoder_layer_1_transformer/encoder_layer_1_"
    with h5py.File(path, "a") as f:
        bias = f[f"{layer}ff1/bias:0"]
        bias[3], bias[7] = np.nan, np.inf
        gamma = f[f"{layer}norm2/gamma:0"]
        gamma[0] = -np.inf
        # stored as float64, beyond float32's range: ±inf once read as float32
        del f["model_weights/dense/dense/bias:0"]
        f["model_weights/dense/dense/bias:0"] = np.r_[1e39, np.zeros(95)]
    with pytest.raises(PatWeightsError) as error:
        load_encoder(path)
    message = str(error.value)
    assert "(Keras 2 full model) has non-finite weights in 3 tensor(s)" in message
    assert "encoder_layer_1_ff1/bias (2 of 256 values non-finite: 1 NaN, 1 ±inf)" in message
    assert "encoder_layer_1_norm2/gamma (1 of 96 values non-finite: 0 NaN, 1 ±inf)" in message
    assert "dense/bias (1 of 96 values non-finite: 0 NaN, 1 ±inf)" in message
    with pytest.raises(PatWeightsError, match="non-finite weights"):
        read_encoder_tensors(path)


def test_non_finite_weights_in_a_weights_h5_file_are_refused(unpacked: Path, tmp_path: Path) -> None:
    path = write_tf_keras_weights(unpacked, tmp_path / "nan.weights.h5")
    with h5py.File(path, "a") as f:
        f["layers/functional/layers/multi_head_attention/_value_dense/vars/0"][0, 0, :5] = np.nan
    with pytest.raises(PatWeightsError, match=re.escape(
            "encoder_layer_1_attention/value/kernel (5 of 55296 values non-finite: 5 NaN, 0 ±inf)")):
        load_encoder(path)


def test_wrong_shapes_and_sizes_are_refused(unpacked: Path, tmp_path: Path) -> None:
    with pytest.raises(PatWeightsError, match="does not match the weights"):
        load_encoder(unpacked / "pat_s.h5", model_id="PAT-L")
    assert load_encoder(unpacked / "pat_s.h5", model_id="PAT-S-29k").model_id == "PAT-S-29k"
    path = tmp_path / "odd.h5"
    shutil.copy(unpacked / "pat_s.h5", path)
    with h5py.File(path, "a") as f:
        name = "model_weights/encoder_layer_1_transformer/encoder_layer_1_ff2/bias:0"
        del f[name]
        f[name] = np.zeros(95, dtype=np.float32)
    with pytest.raises(PatWeightsError, match=re.escape("encoder_layer_1_ff2/bias (95,) (expected (96,))")):
        load_encoder(path)


def test_files_that_are_not_pat_encoders(tmp_path: Path) -> None:
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(PatWeightsError, match="not a readable HDF5"):
        load_encoder(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["something/else"] = np.zeros(3)
    with pytest.raises(PatWeightsError, match="no PAT encoder layout"):
        load_encoder(other)
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "absent.h5")


def test_size_is_read_from_shapes_and_unknown_sizes_need_an_id() -> None:
    rng = np.random.default_rng(0)
    tensors = {name: rng.standard_normal(shape).astype(np.float32) * 0.05
               for name, shape in tensor_shapes(9, 12, 4).items()}
    encoder = PatEncoder(tensors, weights_sha256="-")
    assert (encoder.model_id, encoder.num_patches) == ("PAT-L", 1120)
    assert encoder.embed(np.zeros((1, 10_080))).shape == (1, 96)
    small = {name: value for name, value in tensors.items()
             if not name.startswith(("encoder_layer_3_", "encoder_layer_4_"))}
    with pytest.raises(ValueError, match="pass model_id"):
        PatEncoder(small, weights_sha256="-")
    assert PatEncoder(small, weights_sha256="-", model_id="pat-9x12x2").num_layers == 2


# --- normalisation ---------------------------------------------------------------------------------------

def test_normalisation_methods_and_their_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.gamma(0.5, 300.0, size=(2, 10_080))
    x[1] = 42.0
    assert set(NORMALISATIONS) == {"none", "per-sequence-zscore", "population"}
    assert "approximation" in normalisation_label("per-sequence-zscore")
    assert "minute-of-week across participants" in normalisation_label("per-sequence-zscore")

    np.testing.assert_array_equal(normalise(x, "none"), x.astype(np.float32))
    z = normalise(x, "per-sequence-zscore")
    assert z.dtype == np.float32
    np.testing.assert_allclose([z[0].mean(), z[0].std()], [0.0, 1.0], atol=1e-5)
    np.testing.assert_array_equal(z[1], 0.0)  # a constant week has no spread: zeros, not NaN

    mean, sd = x.mean(axis=0), np.linspace(1.0, 2.0, 10_080)
    np.savez(tmp_path / "population.npz", mean=mean, sd=sd)
    stats = load_population_stats(tmp_path / "population.npz")
    np.testing.assert_allclose(normalise(x, "population", stats), (x - mean) / sd, rtol=1e-6, atol=1e-5)
    label = normalisation_label("population", stats)
    assert label.startswith("population") and file_sha256(tmp_path / "population.npz") in label

    with pytest.raises(ValueError, match="needs PopulationStats"):
        normalise(x, "population")
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise(x, "minmax")
    with pytest.raises(ValueError, match="10080 finite values"):
        PopulationStats(mean=np.zeros(10), sd=np.ones(10), source="-")


def test_per_sequence_zscore_of_any_finite_week_is_finite() -> None:
    rng = np.random.default_rng(4)
    ordinary = rng.gamma(0.5, 300.0, size=(2, 10_080))
    # dividing by a power of two is exact: ordinary weeks give the plain formula's values bit for bit
    plain = (ordinary - ordinary.mean(axis=1, keepdims=True)) / ordinary.std(axis=1, keepdims=True)
    np.testing.assert_array_equal(normalise(ordinary, "per-sequence-zscore"), plain.astype(np.float32))
    largest = np.finfo(np.float64).max
    spiky = rng.gamma(0.5, 300.0, size=10_080)
    spiky[::1000] = largest
    weeks = np.stack([np.full(10_080, 1e308), np.where(np.arange(10_080) % 2, 1e308, 0.0),
                      np.full(10_080, largest), spiky, -spiky, np.full(10_080, 5e-324), np.full(10_080, 0.1)])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no inf or NaN on the way
        z = normalise(weeks, "per-sequence-zscore")
    assert np.isfinite(z).all() and np.abs(z).max() < np.sqrt(10_080)
    np.testing.assert_array_equal(z[[0, 2, 5, 6]], 0.0)  # constant weeks: zeros, even where the mean rounds
    np.testing.assert_array_equal(np.abs(z[1]), 1.0)  # two values, equally often: ±1
    np.testing.assert_array_equal(z[4], -z[3])


def test_normalisation_refuses_what_it_cannot_make_finite() -> None:
    huge = np.full((1, 10_080), 1e308)
    with pytest.raises(ValueError, match=re.escape("normalisation 'none' leaves 10080 of 10080 value(s) beyond "
                                                   "float32's range")):
        normalise(huge, "none")
    stats = PopulationStats(mean=np.zeros(10_080), sd=np.full(10_080, 0.5), source="-")
    with pytest.raises(ValueError, match="normalisation 'population' leaves 10080 of 10080 value"):
        normalise(huge, "population", stats)
    holes = np.zeros((1, 10_080))
    holes[0, :3] = [np.nan, np.inf, -np.inf]
    for method in NORMALISATIONS:
        with pytest.raises(ValueError, match="input has 3 NaN or infinite value"):
            normalise(holes, method, stats)


@pytest.mark.parametrize(("mean", "sd", "message"), [
    ({0: np.nan, 9: np.nan}, {}, "mean (2 of 10080 values non-finite: 2 NaN, 0 ±inf)"),
    ({}, {5: np.inf}, "sd (1 of 10080 values non-finite: 0 NaN, 1 ±inf)"),
    ({}, {17: 0.0, 20: -1.0}, "sd (2 of 10080 values <= 0, the first at minute-of-week 17; an SD must be positive)"),
    ({1: -np.inf}, {2: 0.0}, "mean (1 of 10080 values non-finite: 0 NaN, 1 ±inf); sd (1 of 10080 values <= 0"),
])
def test_population_stats_must_be_finite_with_positive_sds(
        tmp_path: Path, mean: dict[int, float], sd: dict[int, float], message: str) -> None:
    arrays = {"mean": np.full(10_080, 20.0), "sd": np.full(10_080, 4.0)}
    for name, changes in (("mean", mean), ("sd", sd)):
        for index, value in changes.items():
            arrays[name][index] = value
    np.savez(tmp_path / "population.npz", **arrays)
    with pytest.raises(PatWeightsError, match="population statistics refused: " + re.escape(message)):
        load_population_stats(tmp_path / "population.npz")


def test_population_stats_built_directly_must_be_finite() -> None:
    mean = np.zeros(10_080)
    mean[[3, 4]] = [np.nan, np.inf]
    with pytest.raises(ValueError, match="population mean must be 10080 finite values, 2 are NaN or ±inf"):
        PopulationStats(mean=mean, sd=np.ones(10_080), source="-")


def test_population_stats_file_lacking_an_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "population.npz", mean=np.zeros(10_080))
    with pytest.raises(PatWeightsError, match="lacks array\\(s\\): sd"):
        load_population_stats(tmp_path / "population.npz")


# --- trained heads ---------------------------------------------------------------------------------------

def write_head(folder: Path, **meta_overrides: object) -> Path:
    """A head with random weights, made here for the test and never committed."""
    rng = np.random.default_rng(2)
    path = folder / "head.npz"
    np.savez(path, **{"hidden/kernel": rng.standard_normal((96, 128)).astype(np.float32) * 0.1,
                      "hidden/bias": np.zeros(128, np.float32),
                      "output/kernel": rng.standard_normal((128, 1)).astype(np.float32) * 0.1,
                      "output/bias": np.array([0.1], np.float32)})
    meta = {"task": "test-only", "training_data": "none: random weights for a unit test", "auc": 0.5,
            "model_id": "PAT-S", "sha256": file_sha256(path)} | meta_overrides
    path.with_suffix(".json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
    return path


def test_head_with_metadata_loads_and_scores(tmp_path: Path) -> None:
    path = write_head(tmp_path)
    head = load_head(path, model_id="PAT-S")
    embedding = np.random.default_rng(3).standard_normal(96).astype(np.float32)
    with np.load(path) as w:
        hidden = np.maximum(embedding @ w["hidden/kernel"] + w["hidden/bias"], 0)
        expected = 1 / (1 + np.exp(-(hidden @ w["output/kernel"] + w["output/bias"])[0]))
    score = head.score(embedding)
    assert isinstance(score, float) and 0 < score < 1
    assert score == pytest.approx(float(expected), abs=1e-6)
    assert head.provenance() == {"task": "test-only", "training_data": "none: random weights for a unit test",
                                 "auc": 0.5, "model_id": "PAT-S", "head_sha256": file_sha256(path)}


def test_head_without_metadata_is_refused(tmp_path: Path) -> None:
    path = write_head(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(HeadRefused, match="no metadata head.json"):
        load_head(path)


def test_head_with_wrong_hash_is_refused(tmp_path: Path) -> None:
    path = write_head(tmp_path, sha256="0" * 64)
    with pytest.raises(HeadRefused, match="does not match the metadata"):
        load_head(path)


@pytest.mark.parametrize(("override", "message"), [
    ({"auc": None}, "missing 'auc'"),
    ({"task": ""}, "'task' must be a non-empty string"),
    ({"training_data": None, "model_id": None}, "missing 'training_data'; missing 'model_id'"),
    ({"auc": 1.7}, "'auc' must be a number between 0 and 1"),
    ({"sha256": "abc"}, "'sha256' must be 64 hex digits"),
])
def test_head_with_incomplete_metadata_is_refused(tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(HeadRefused, match=re.escape(message)):
        load_head(write_head(tmp_path, **override))


def test_head_with_non_finite_weights_is_refused(tmp_path: Path) -> None:
    path = write_head(tmp_path)
    with np.load(path) as data:
        arrays = {name: data[name] for name in data}
    arrays["hidden/kernel"][0, :4] = np.nan
    arrays["output/bias"] = np.array([1e39])  # float64 beyond float32's range: inf as float32
    np.savez(path, **arrays)
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps(json.loads(sidecar.read_text()) | {"sha256": file_sha256(path)}))
    with pytest.raises(HeadRefused) as error:
        load_head(path)
    message = str(error.value)
    assert "non-finite head weights in 2 array(s)" in message
    assert "hidden/kernel (4 of 12288 values non-finite: 4 NaN, 0 ±inf)" in message
    assert "output/bias (1 of 1 values non-finite: 0 NaN, 1 ±inf)" in message


def test_head_for_another_encoder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HeadRefused, match="not PAT-L"):
        load_head(write_head(tmp_path), model_id="PAT-L")


# --- the fetch tool (offline: a file:// URL) --------------------------------------------------------------

def test_fetch_weights_downloads_checks_and_reports_the_size(
        unpacked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("fetch_weights", ROOT / "tools" / "pat" / "fetch_weights.py")
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    source, out = unpacked / "pat_s.h5", tmp_path / "weights" / "PAT-S.h5"
    assert fetch.main(["--url", source.as_uri(), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "njacobsonlab/Pretrained-Actigraphy-Transformer" in printed and "CC BY 4.0" in printed
    assert file_sha256(source) in printed and "model: PAT-S (patch 18" in printed
    assert fetch.main(["--out", str(out), "--sha256", file_sha256(source)]) == 0
    assert "sha256 verified" in capsys.readouterr().out
    refused = tmp_path / "refused.h5"
    assert fetch.main(["--url", source.as_uri(), "--out", str(refused), "--sha256", "0" * 64]) == 1
    assert not refused.exists() and not refused.with_name("refused.h5.part").exists()


# --- no deep-learning framework in the project ----------------------------------------------------------

def test_no_tensorflow_keras_or_torch_in_services_or_tests() -> None:
    framework = re.compile(r"^\s*(?:import|from)\s+(?:tensorflow|tf_keras|keras|torch)\b", re.MULTILINE)
    sources = [p for folder in ("services", "tests") for p in (ROOT / folder).rglob("*.py")]
    offenders = [str(p.relative_to(ROOT)) for p in sources
                 if framework.search(p.read_text(encoding="utf-8", errors="replace"))]
    assert offenders == []
    assert not {"tensorflow", "keras", "tf_keras", "torch"} & set(sys.modules)
