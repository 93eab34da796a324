"""The numpy MLP: PyTorch-compatible state dicts, correct gradients, SGD that learns."""

import numpy as np
import pytest

from fedcore.errors import ConfigError
from fedcore.models import MLP


def _blobs(per_class: int = 100, seed: int = 0):
    """Three well separated Gaussian blobs in 4-D: a problem any MLP must solve."""
    rng = np.random.default_rng(seed)
    centres = np.array([[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0]], dtype=np.float32)
    x = np.concatenate([c + rng.normal(size=(per_class, 4)) for c in centres])
    y = np.repeat(np.arange(3), per_class)
    return x.astype(np.float32), y


def _reference_loss(state, x, y) -> float:
    """Independent float64 forward pass: ReLU hidden layers, mean cross-entropy."""
    layers = len(state) // 2
    h = x.astype(np.float64)
    for i in range(1, layers + 1):
        h = h @ state[f"fc{i}.weight"].T + state[f"fc{i}.bias"]
        if i < layers:
            h = np.maximum(h, 0.0)
    h = h - h.max(axis=1, keepdims=True)
    log_probs = h - np.log(np.exp(h).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


def test_state_dict_follows_pytorch_linear_convention():
    # Prepare / Execute
    state = MLP([784, 128, 10]).state_dict()

    # Assert
    assert list(state) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert state["fc1.weight"].shape == (128, 784)
    assert state["fc1.bias"].shape == (128,)
    assert state["fc2.weight"].shape == (10, 128)
    assert state["fc2.bias"].shape == (10,)
    assert all(array.dtype == np.float32 for array in state.values())


def test_softmax_regression_has_one_layer():
    state = MLP([784, 10]).state_dict()
    assert {name: a.shape for name, a in state.items()} == {
        "fc1.weight": (10, 784),
        "fc1.bias": (10,),
    }


def test_init_is_uniform_within_pytorch_bound_and_seeded():
    # Prepare / Execute
    state = MLP([400, 50, 10], seed=7).state_dict()

    # Assert: bound is 1/sqrt(fan_in) for weight and bias alike.
    assert np.abs(state["fc1.weight"]).max() <= 1 / 20
    assert np.abs(state["fc1.weight"]).max() > 0.9 / 20  # actually spans the range
    assert np.abs(state["fc2.bias"]).max() <= 1 / np.sqrt(50)
    again = MLP([400, 50, 10], seed=7).state_dict()
    other = MLP([400, 50, 10], seed=8).state_dict()
    np.testing.assert_array_equal(state["fc1.weight"], again["fc1.weight"])
    assert not np.array_equal(state["fc1.weight"], other["fc1.weight"])


def test_state_dict_returns_copies():
    model = MLP([4, 3])
    model.state_dict()["fc1.weight"][:] = 99.0
    assert not np.any(model.state_dict()["fc1.weight"] == 99.0)


def test_load_state_dict_round_trip_and_copies_input():
    # Prepare
    source, target = MLP([4, 5, 3], seed=1), MLP([4, 5, 3], seed=2)
    state = source.state_dict()

    # Execute
    target.load_state_dict(state)
    state["fc1.bias"][:] = 123.0  # must not leak into the loaded model

    # Assert
    for name, array in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name], array)


def test_load_state_dict_accepts_float64_and_stores_float32():
    model = MLP([2, 2])
    model.load_state_dict({"fc1.weight": np.eye(2), "fc1.bias": np.zeros(2)})
    assert model.state_dict()["fc1.weight"].dtype == np.float32


def test_load_state_dict_is_strict():
    model = MLP([4, 5, 3])
    good = model.state_dict()

    missing = dict(good)
    del missing["fc2.bias"]
    with pytest.raises(ConfigError, match=r"missing \['fc2.bias'\]"):
        model.load_state_dict(missing)

    extra = dict(good, **{"fc3.weight": np.zeros((3, 3))})
    with pytest.raises(ConfigError, match=r"unexpected \['fc3.weight'\]"):
        model.load_state_dict(extra)

    transposed = dict(good, **{"fc1.weight": good["fc1.weight"].T})
    with pytest.raises(ConfigError, match=r"fc1.weight: expected shape \(5, 4\), got \(4, 5\)"):
        model.load_state_dict(transposed)

    poisoned = dict(good, **{"fc2.bias": np.array([0, np.nan, 0])})
    with pytest.raises(ConfigError, match="fc2.bias: contains NaN"):
        model.load_state_dict(poisoned)


def test_failed_load_leaves_model_unchanged():
    model = MLP([4, 3])
    before = model.state_dict()
    with pytest.raises(ConfigError):
        model.load_state_dict({"fc1.weight": np.zeros((3, 4)), "fc1.bias": np.zeros(4)})
    np.testing.assert_array_equal(model.state_dict()["fc1.weight"], before["fc1.weight"])


def test_backward_matches_numerical_gradient():
    # Prepare: a tiny two-hidden-layer net; finite differences in float64.
    rng = np.random.default_rng(0)
    model = MLP([5, 4, 3, 3], seed=0)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    state = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    eps = 1e-6

    # Execute
    loss, grads = model.loss_and_grads(x, y)

    # Assert
    assert loss == pytest.approx(_reference_loss(state, x, y), rel=1e-5)
    for name, param in state.items():
        numeric = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            original = param[index]
            param[index] = original + eps
            plus = _reference_loss(state, x, y)
            param[index] = original - eps
            minus = _reference_loss(state, x, y)
            param[index] = original
            numeric[index] = (plus - minus) / (2 * eps)
        assert grads[name].shape == param.shape
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-3, atol=1e-5, err_msg=name)


def test_one_sgd_step_follows_pytorch_momentum_formula():
    # Prepare: full-batch steps, so each epoch is exactly one step.
    x, y = _blobs(per_class=5)
    model, manual = MLP([4, 3], seed=0), MLP([4, 3], seed=0)
    lr, momentum, decay = 0.1, 0.9, 0.01

    # Execute: two steps by train_epochs, two by hand.
    model.train_epochs(
        x, y, epochs=2, batch_size=len(x), lr=lr, momentum=momentum, weight_decay=decay
    )
    params = manual.state_dict()
    buffers = {name: np.zeros_like(p) for name, p in params.items()}
    for _ in range(2):
        manual.load_state_dict(params)
        _, grads = manual.loss_and_grads(x, y)
        for name in params:
            grad = grads[name] + decay * params[name]
            buffers[name] = momentum * buffers[name] + grad
            params[name] = params[name] - lr * buffers[name]

    # Assert
    for name, expected in params.items():
        np.testing.assert_allclose(model.state_dict()[name], expected, rtol=1e-5, atol=1e-6)


def test_training_learns_separable_blobs():
    # Prepare
    x_train, y_train = _blobs(seed=0)
    x_test, y_test = _blobs(per_class=50, seed=1)
    model = MLP([4, 16, 3], seed=0)
    _, loss_before = model.evaluate(x_test, y_test)

    # Execute
    train_loss = model.train_epochs(x_train, y_train, epochs=5, batch_size=16, lr=0.05)
    accuracy, loss_after = model.evaluate(x_test, y_test, batch_size=64)

    # Assert
    assert accuracy > 0.9
    assert loss_after < loss_before
    assert np.isfinite(train_loss) and train_loss > 0
    np.testing.assert_array_equal(
        model.predict(x_test) == y_test, model.forward(x_test).argmax(1) == y_test
    )


def test_same_seed_gives_identical_weights_after_training():
    x, y = _blobs(per_class=20)
    first, second = MLP([4, 8, 3], seed=3), MLP([4, 8, 3], seed=3)
    first.train_epochs(x, y, epochs=2, batch_size=7, seed=11)
    second.train_epochs(x, y, epochs=2, batch_size=7, seed=11)
    for name, array in first.state_dict().items():
        np.testing.assert_array_equal(second.state_dict()[name], array)
    third = MLP([4, 8, 3], seed=3)
    third.train_epochs(x, y, epochs=2, batch_size=7, seed=12)
    assert not np.array_equal(third.state_dict()["fc1.weight"], first.state_dict()["fc1.weight"])


def test_forward_flattens_images_and_stays_float32():
    model = MLP([12, 5])
    images = np.zeros((2, 3, 4), dtype=np.uint8)
    logits = model.forward(images)
    assert logits.shape == (2, 5)
    assert logits.dtype == np.float32


def test_huge_logits_give_finite_loss():
    # A numerically naive softmax would overflow exp() here.
    model = MLP([2, 2])
    model.load_state_dict({"fc1.weight": np.array([[1e4, 0], [0, 0]]), "fc1.bias": np.zeros(2)})
    accuracy, loss = model.evaluate(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([0, 1]))
    assert accuracy == 0.5
    assert np.isfinite(loss) and loss == pytest.approx(1e4 / 2, rel=1e-3)


@pytest.mark.parametrize("sizes", [[], [10], [10, 0], [10, 2.5], [10, True]])
def test_bad_layer_sizes_raise(sizes):
    with pytest.raises(ConfigError, match="layer_sizes"):
        MLP(sizes)


def test_bad_inputs_and_labels_raise():
    model = MLP([4, 3])
    x, y = _blobs(per_class=2)
    with pytest.raises(ConfigError, match="model expects 4"):
        model.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ConfigError, match="shape"):
        model.forward(np.zeros(4, np.float32))
    with pytest.raises(ConfigError, match=r"labels must have shape \(6,\)"):
        model.train_epochs(x, y[:5])
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 3\)"):
        model.evaluate(x, y + 1)
    with pytest.raises(ConfigError, match="labels must be integers"):
        model.train_epochs(x, y.astype(np.float32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -0.1}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, message):
    x, y = _blobs(per_class=2)
    with pytest.raises(ConfigError, match=message):
        MLP([4, 3]).train_epochs(x, y, **kwargs)
