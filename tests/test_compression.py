"""Pruning, sparsification, error feedback, per-kind codec policy, Compressor configs."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcore import (
    CodecPolicy,
    CompressionConfig,
    Compressor,
    ConfigError,
    ErrorFeedback,
    TensorCodec,
    decode_message,
    magnitude_prune,
    tensor_kind,
    topk_sparsify,
)


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv1.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "bn1.weight": rng.standard_normal(8).astype(np.float32),
        "bn1.bias": rng.standard_normal(8).astype(np.float32),
        "fc.weight": rng.standard_normal((10, 72)).astype(np.float32),
        "fc.bias": rng.standard_normal(10).astype(np.float32),
    }


def test_tensor_kinds():
    kinds = {n: tensor_kind(n, a.shape) for n, a in _model().items()}

    assert kinds == {"conv1.weight": "conv", "bn1.weight": "norm", "bn1.bias": "norm",
                     "fc.weight": "linear", "fc.bias": "bias"}


@given(rate=st.floats(0, 1), seed=st.integers(0, 1000))
def test_global_pruning_zeroes_exactly_the_requested_share(rate, seed):
    model = _model(seed)
    prunable = model["conv1.weight"].size + model["fc.weight"].size

    pruned = magnitude_prune(model, rate, scope="global")

    zeros = sum(int((pruned[n] == 0).sum()) for n in ("conv1.weight", "fc.weight"))
    assert zeros == int(round(rate * prunable))
    for name in ("bn1.weight", "bn1.bias", "fc.bias"):
        np.testing.assert_array_equal(pruned[name], model[name])
    # One threshold for the model: every kept weight is at least every pruned one.
    kept = np.concatenate([np.abs(model[n][pruned[n] != 0]) for n in ("conv1.weight", "fc.weight")])
    gone = np.concatenate([np.abs(model[n][pruned[n] == 0]) for n in ("conv1.weight", "fc.weight")])
    if kept.size and gone.size:
        assert kept.min() >= gone.max()


@given(rate=st.floats(0, 1))
def test_layer_pruning_zeroes_the_share_of_each_layer(rate):
    model = _model()

    pruned = magnitude_prune(model, rate, scope="layer")

    for name in ("conv1.weight", "fc.weight"):
        assert int((pruned[name] == 0).sum()) == int(round(rate * model[name].size))


def test_pruning_does_not_modify_its_input():
    model = _model()
    before = {n: a.copy() for n, a in model.items()}

    magnitude_prune(model, 0.9)

    for name in model:
        np.testing.assert_array_equal(model[name], before[name])


def test_topk_keeps_the_largest_share():
    update = {"w": np.arange(-50, 50, dtype=np.float32).reshape(10, 10)}

    sparse = topk_sparsify(update, keep=0.15)["w"]

    assert int((sparse != 0).sum()) == 15
    assert np.abs(sparse[sparse != 0]).min() >= 43


@pytest.mark.parametrize("kwargs, reason", [
    ({"rate": 1.5}, "prune rate"),
    ({"rate": float("nan")}, "prune rate"),
    ({"rate": 0.5, "scope": "model"}, "scope"),
    ({"rate": 0.5, "kinds": ["dense"]}, "unknown layer kind"),
])
def test_prune_rejects_bad_settings(kwargs, reason):
    with pytest.raises(ConfigError, match=reason):
        magnitude_prune(_model(), **kwargs)


def test_error_feedback_loses_nothing():
    """What was sent over all rounds plus the residual equals the sum of the updates."""
    rng = np.random.default_rng(0)
    compressor = Compressor(CompressionConfig.from_dict(
        {"sparsify": {"keep": 0.1}, "error_feedback": True, "wire": {"bits": 4}}))
    total_update = np.zeros((20, 30))
    total_sent = np.zeros((20, 30))

    for round_ in range(5):
        update = {"fc.weight": rng.standard_normal((20, 30)).astype(np.float32)}
        blob, _ = compressor.compress(update, round=round_, kind="delta")
        total_update += update["fc.weight"]
        total_sent += decode_message(blob).tensors["fc.weight"]

    residual = compressor.feedback.residual["fc.weight"]
    np.testing.assert_allclose(total_sent + residual, total_update, atol=1e-4)


def test_error_feedback_starts_from_nothing():
    feedback = ErrorFeedback()
    update = {"w": np.ones(3, np.float32)}

    np.testing.assert_array_equal(feedback.compensate(update)["w"], update["w"])
    feedback.record(update, {"w": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(feedback.compensate(update)["w"], 2 * update["w"])


def test_policy_by_kind_and_override():
    policy = CodecPolicy.from_dict({
        "bits": 4, "entropy": "deflate",
        "kinds": {"conv": {"bits": 8}},
        "overrides": {"fc.*": {"bits": 2}},
    })
    model = _model()

    chosen = {n: policy(n, a) for n, a in model.items()}

    assert chosen["conv1.weight"].bits == 8
    assert chosen["fc.weight"].bits == 2
    assert chosen["fc.bias"].bits == 2  # the override matches the bias too
    assert chosen["bn1.weight"] == TensorCodec(entropy="deflate")  # norms stay float32


def test_compressor_reports_exact_bytes_and_prunes():
    config = CompressionConfig.from_dict({
        "prune": {"rate": 0.5, "scope": "global"},
        "wire": {"bits": 8, "entropy": "deflate"},
    })

    blob, report = Compressor(config).compress(_model(), round=3, sender="b1", num_samples=7)

    decoded = decode_message(blob)
    assert report.encoded_bytes == len(blob) and report.ratio > 2
    prunable = decoded.tensors["conv1.weight"].size + decoded.tensors["fc.weight"].size
    zeros = sum(int((decoded.tensors[n] == 0).sum()) for n in ("conv1.weight", "fc.weight"))
    assert zeros == round(0.5 * prunable)
    assert (decoded.round, decoded.sender, decoded.num_samples) == (3, "b1", 7)


@pytest.mark.parametrize("settings, reason", [
    ({"pruning": {}}, r"unknown key\(s\) \['pruning'\]"),
    ({"prune": {"rate": 2}}, "prune rate"),
    ({"prune": {"ratio": 0.5}}, r"\[prune\]: unknown key\(s\) \['ratio'\]"),
    ({"prune": 0.5}, "must be a table"),
    ({"sparsify": {"keep": -0.1}}, "sparsify keep"),
    ({"error_feedback": "yes"}, "true or false"),
    ({"wire": {"bits": 12}}, "1..8"),
    ({"wire": {"entropy": "zip"}}, "entropy must be"),
    ({"wire": {"sparse": "csr"}}, "sparse must be"),
    ({"wire": {"kinds": {"attention": {}}}}, "unknown layer kind"),
    ({"wire": {"stochastic": True}}, "needs bits"),
])
def test_config_errors_are_clear(settings, reason):
    with pytest.raises(ConfigError, match=reason):
        CompressionConfig.from_dict(settings)


@given(
    prune=st.none() | st.floats(0, 0.95),
    keep=st.none() | st.floats(0.05, 1),
    feedback=st.booleans(),
    bits=st.none() | st.integers(1, 8),
    sparse=st.sampled_from(["auto", "bitmap", "delta", "dense"]),
    entropy=st.sampled_from([None, "deflate", "lzma"]),
    seed=st.integers(0, 100),
)
def test_every_combination_round_trips(prune, keep, feedback, bits, sparse, entropy, seed):
    settings = {"error_feedback": feedback, "wire": {"bits": bits, "sparse": sparse, "entropy": entropy}}
    if prune is not None:
        settings["prune"] = {"rate": prune}
    if keep is not None:
        settings["sparsify"] = {"keep": keep}
    compressor = Compressor(CompressionConfig.from_dict(settings))
    model = _model(seed)

    for round_ in range(2):
        expected = compressor.transform(compressor.feedback.compensate(model) if feedback else model)
        blob, report = compressor.compress(model, round=round_)
        decoded = decode_message(blob).tensors

        assert report.encoded_bytes == len(blob)
        for name, value in expected.items():
            assert decoded[name].shape == value.shape
            # Zeros chosen by pruning or sparsification are transmitted as exact zeros.
            assert np.all(decoded[name][value == 0] == 0)
            if bits is None:
                np.testing.assert_array_equal(decoded[name], value)
