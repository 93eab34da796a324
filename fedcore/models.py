"""Small numpy models that a PYNQ-Z1's Cortex-A9 can train without torch.

Parameters follow PyTorch's ``nn.Linear`` layout (``fcN.weight`` is
(out, in), ``fcN.bias`` is (out,)) so a state dict moves unchanged between
the board, the coordinator and the PyTorch simulation.
"""

import math
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .checks import check_number
from .errors import ConfigError

__all__ = ["MLP"]

Layer = Tuple[np.ndarray, np.ndarray]  # (weight (out, in), bias (out,))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis, shifted by the max so exp never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> Tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    log_probs = _log_softmax(logits)
    rows = np.arange(len(labels))
    loss = -float(log_probs[rows, labels].astype(np.float64).mean())
    grad = np.exp(log_probs)
    grad[rows, labels] -= 1
    grad /= len(labels)
    return loss, grad



def _check_positive_int(value: object, name: str) -> int:
    return check_number(value, name, 1, integer=True)


def _check_float(value: object, name: str, low: float, high: float = math.inf) -> float:
    """A finite hyperparameter in [low, high)."""
    return check_number(value, name, low, high, open_high=True)


# 16 M parameters: 64 MiB of float32 weights, and as much again for gradients and momentum.
MAX_PARAMETERS = 1 << 24


class MLP:
    """Fully-connected ReLU network trained with minibatch SGD and momentum.

    ``MLP([784, 10])`` is softmax regression and ``MLP([784, 128, 10])`` is
    the MLP-128 of the seed study. Layers are numbered from 1 (``fc1``).
    All arithmetic is float32: it is about twice as fast as float64 on the A9.
    """

    def __init__(self, layer_sizes: Sequence[int], seed: int = 0) -> None:
        sizes = list(layer_sizes)
        if len(sizes) < 2:
            raise ConfigError(
                f"layer_sizes needs at least an input and an output size, got {sizes!r}"
            )
        self.layer_sizes: List[int] = [
            _check_positive_int(size, f"layer_sizes[{i}]") for i, size in enumerate(sizes)
        ]
        count = sum((a + 1) * b for a, b in zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        if count > MAX_PARAMETERS:  # before allocating: a typo must not take the board's memory
            raise ConfigError(f"MLP {self.layer_sizes}: {count:,} parameters ({4 * count / 2**20:,.0f} MiB "
                              f"of float32), at most {MAX_PARAMETERS:,} ({4 * MAX_PARAMETERS >> 20} MiB)")
        self._layers = self._init_layers(np.random.default_rng(seed))

    def _init_layers(self, rng: np.random.Generator) -> List[Layer]:
        """PyTorch's nn.Linear default: weight and bias uniform in +-1/sqrt(fan_in)."""
        layers = []
        for fan_in, fan_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            weight = rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(np.float32)
            bias = rng.uniform(-bound, bound, size=fan_out).astype(np.float32)
            layers.append((weight, bias))
        return layers

    @property
    def in_features(self) -> int:
        return self.layer_sizes[0]

    @property
    def num_classes(self) -> int:
        return self.layer_sizes[-1]

    def _shapes(self) -> Dict[str, Tuple[int, ...]]:
        shapes: Dict[str, Tuple[int, ...]] = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:])):
            shapes[f"fc{i + 1}.weight"] = (fan_out, fan_in)
            shapes[f"fc{i + 1}.bias"] = (fan_out,)
        return shapes

    # -- parameters ---------------------------------------------------------

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters, float32, named as in PyTorch (fc1.weight, ...)."""
        state: Dict[str, np.ndarray] = {}
        for i, (weight, bias) in enumerate(self._layers):
            state[f"fc{i + 1}.weight"] = weight.copy()
            state[f"fc{i + 1}.bias"] = bias.copy()
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace all parameters; names and shapes must match exactly."""
        expected = self._shapes()
        missing = [name for name in expected if name not in state]
        extra = [name for name in state if name not in expected]
        if missing or extra:
            raise ConfigError(
                f"state dict does not match MLP{self.layer_sizes}: "
                f"missing {missing}, unexpected {extra}"
            )
        loaded: Dict[str, np.ndarray] = {}
        for name, shape in expected.items():
            array = np.asarray(state[name])
            if array.shape != shape:
                raise ConfigError(f"{name}: expected shape {shape}, got {array.shape}")
            if array.dtype.kind not in "fiu":
                raise ConfigError(f"{name}: expected a real numeric array, got {array.dtype}")
            loaded[name] = np.array(array, dtype=np.float32)  # always a private copy
            if not np.isfinite(loaded[name]).all():
                raise ConfigError(f"{name}: contains NaN or inf")
        self._layers = [
            (loaded[f"fc{i}.weight"], loaded[f"fc{i}.bias"])
            for i in range(1, len(self.layer_sizes))
        ]

    # -- inference ----------------------------------------------------------

    def _check_inputs(self, x: object) -> np.ndarray:
        """Return x as (N, in_features) float32, flattening image dimensions."""
        array = np.asarray(x)
        if array.ndim < 2:
            raise ConfigError(
                f"inputs must have shape (N, {self.in_features}) or (N, ...), got {array.shape}"
            )
        if array.dtype.kind not in "fiub":
            raise ConfigError(f"inputs must be numeric, got dtype {array.dtype}")
        # An explicit feature count: reshape(N, -1) fails when N == 0.
        flat = array.reshape(len(array), int(np.prod(array.shape[1:])))
        if flat.shape[1] != self.in_features:
            raise ConfigError(
                f"inputs have {flat.shape[1]} features per sample "
                f"(shape {array.shape}); the model expects {self.in_features}"
            )
        return flat.astype(np.float32, copy=False)

    def _check_labels(self, y: object, num_samples: int) -> np.ndarray:
        labels = np.asarray(y)
        if labels.ndim != 1 or len(labels) != num_samples:
            raise ConfigError(f"labels must have shape ({num_samples},), got {labels.shape}")
        if labels.size and labels.dtype.kind not in "iu":
            raise ConfigError(f"labels must be integers, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ConfigError(
                f"labels must lie in [0, {self.num_classes}), "
                f"found range [{int(labels.min())}, {int(labels.max())}]"
            )
        return labels

    def _forward_cached(self, x: np.ndarray) -> List[np.ndarray]:
        """Activations of every layer, input first and logits last (kept for backprop)."""
        activations = [x]
        last = len(self._layers) - 1
        for i, (weight, bias) in enumerate(self._layers):
            out = activations[-1] @ weight.T + bias
            if i < last:
                np.maximum(out, 0, out=out)  # ReLU in place saves a copy
            activations.append(out)
        return activations

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits of shape (N, classes); x is (N, in) or (N, ...) and is flattened."""
        return self._forward_cached(self._check_inputs(x))[-1]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class per sample, int64."""
        return self.forward(x).argmax(axis=1).astype(np.int64)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> Tuple[float, float]:
        """Accuracy and mean cross-entropy, in batches to bound memory on the board."""
        inputs = self._check_inputs(x)
        labels = self._check_labels(y, len(inputs))
        batch_size = _check_positive_int(batch_size, "batch_size")
        if len(inputs) == 0:
            raise ConfigError("evaluate: no samples")
        correct, loss_sum = 0, 0.0
        for start in range(0, len(inputs), batch_size):
            logits = self._forward_cached(inputs[start : start + batch_size])[-1]
            batch_labels = labels[start : start + batch_size]
            correct += int(np.count_nonzero(logits.argmax(axis=1) == batch_labels))
            loss, _ = _softmax_cross_entropy(logits, batch_labels)
            loss_sum += loss * len(batch_labels)
        return correct / len(inputs), loss_sum / len(inputs)

    # -- training -----------------------------------------------------------

    def _backward(self, activations: List[np.ndarray], grad_logits: np.ndarray) -> List[Layer]:
        """Gradients of every (weight, bias), given d(loss)/d(logits)."""
        grads: List[Layer] = []
        delta = grad_logits
        for i in range(len(self._layers) - 1, -1, -1):
            weight, _ = self._layers[i]
            inputs = activations[i]
            grads.append((delta.T @ inputs, delta.sum(axis=0)))
            if i > 0:
                # ReLU passes gradient only where its output was positive.
                delta = (delta @ weight) * (inputs > 0)
        grads.reverse()
        return grads

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> Tuple[float, Dict[str, np.ndarray]]:
        """Mean cross-entropy on (x, y) and its gradient per parameter name."""
        inputs = self._check_inputs(x)
        labels = self._check_labels(y, len(inputs))
        if len(inputs) == 0:
            raise ConfigError("loss_and_grads: no samples")
        activations = self._forward_cached(inputs)
        loss, grad_logits = _softmax_cross_entropy(activations[-1], labels)
        grads: Dict[str, np.ndarray] = {}
        for i, (grad_w, grad_b) in enumerate(self._backward(activations, grad_logits)):
            grads[f"fc{i + 1}.weight"] = grad_w
            grads[f"fc{i + 1}.bias"] = grad_b
        return loss, grads

    def _sgd_step(
        self, grads: List[Layer], buffers: List[Layer], lr: float, momentum: float, decay: float,
        nesterov: bool = False,
    ) -> None:
        """PyTorch SGD: g += wd * p; buf = momentum * buf + g; p -= lr * buf
        (Nesterov: p -= lr * (g + momentum * buf))."""
        for (weight, bias), (grad_w, grad_b), (buf_w, buf_b) in zip(self._layers, grads, buffers):
            for param, grad, buf in ((weight, grad_w, buf_w), (bias, grad_b, buf_b)):
                if decay:
                    grad += np.float32(decay) * param
                buf *= np.float32(momentum)
                buf += grad
                step = grad + np.float32(momentum) * buf if nesterov else buf
                param -= np.float32(lr) * step

    def train_epochs(
        self,
        x: np.ndarray,
        y: np.ndarray,
        epochs: int = 1,
        batch_size: int = 32,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        seed: int = 0,
        nesterov: bool = False,
    ) -> float:
        """Minibatch SGD with momentum; returns the mean training loss over all samples seen.

        Momentum buffers start at zero on every call: a federated client begins
        each round fresh from the global model. The last batch of an epoch may be
        smaller (like PyTorch's DataLoader with drop_last=False).
        """
        inputs = self._check_inputs(x)
        labels = self._check_labels(y, len(inputs))
        epochs = _check_positive_int(epochs, "epochs")
        batch_size = _check_positive_int(batch_size, "batch_size")
        lr = _check_float(lr, "lr", 0.0)
        momentum = _check_float(momentum, "momentum", 0.0, 1.0)
        weight_decay = _check_float(weight_decay, "weight_decay", 0.0)
        if len(inputs) == 0:
            raise ConfigError("train_epochs: no samples")
        rng = np.random.default_rng(seed)
        buffers = [(np.zeros_like(w), np.zeros_like(b)) for w, b in self._layers]
        loss_sum, seen = 0.0, 0
        for _ in range(epochs):
            order = rng.permutation(len(inputs))
            for start in range(0, len(inputs), batch_size):
                batch = order[start : start + batch_size]
                activations = self._forward_cached(inputs[batch])
                loss, grad_logits = _softmax_cross_entropy(activations[-1], labels[batch])
                grads = self._backward(activations, grad_logits)
                self._sgd_step(grads, buffers, lr, momentum, weight_decay, bool(nesterov))
                loss_sum += loss * len(batch)
                seen += len(batch)
        return loss_sum / seen
