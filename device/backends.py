"""Backbone backends behind one small interface, created by name from a registry.

    backbone = create_backbone("onnxruntime", "models/resnet9_f16_strided_32.onnx")
    features = backbone.features(batch)          # (N, 3, H, W) float32 -> (N, D) float32

Backends: "onnxruntime" (default on a CPU), "torch" (TorchScript beside the ONNX file,
only where torch is installed, never on the board path) and "tensil" (the FPGA seam:
validates the `.tmodel` and needs pynq and the Tensil driver). Every backend reads the
model card first, so the preprocessing and the feature size come from one place.
"""

import importlib
import pathlib
import warnings
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np

from fedcore.registry import Registry
from tensil.errors import TensilError
from tensil.tmodel import TensilModel, load_tmodel

from .board import require_pynq, require_tensil_driver
from .errors import BackendError, ModelError
from .model_card import ModelCard, load_card

__all__ = ["BACKENDS", "Backbone", "OnnxRuntimeBackend", "TensilBackend", "TorchBackend",
           "create_backbone", "list_backends", "register_backend"]

PathLike = Union[str, pathlib.Path]
BACKENDS = Registry("backend", error=BackendError)


class Backbone:
    """A frozen feature extractor: `features` maps preprocessed inputs to (N, D) float32."""

    name = "backbone"

    def __init__(self, card: ModelCard):
        self.card = card
        self.input_shape: Tuple[int, ...] = tuple(card.input.shape)
        self.feature_dim: int = card.feature_dim

    def features(self, batch: np.ndarray) -> np.ndarray:
        batch = self._check_batch(batch)
        out = np.empty((batch.shape[0], self.feature_dim), dtype=np.float32)
        for i in range(batch.shape[0]):  # bundled models have a fixed batch of 1
            out[i] = self._run_one(batch[i:i + 1]).reshape(-1)
        return out

    def close(self) -> None:
        """Release what the backend holds (sessions, accelerator buffers)."""

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        expected = self.input_shape[1:]
        if (not isinstance(batch, np.ndarray) or batch.ndim != 4
                or tuple(batch.shape[1:]) != expected):
            raise ValueError("%s backbone expects (N, %s) float32, got %s" % (
                self.name, ", ".join(map(str, expected)), getattr(batch, "shape", type(batch))))
        return np.ascontiguousarray(batch, dtype=np.float32)

    def _check_output(self, out: np.ndarray) -> np.ndarray:
        if out.size != self.feature_dim:
            raise ModelError("%s: the model produced %d features, its card says %d" % (
                self.card.model_path, out.size, self.feature_dim))
        return out


def register_backend(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Class decorator: make a backend creatable by `name` (a taken name is a ValueError)."""
    return BACKENDS.register(name)


def list_backends(pattern: str = "*") -> List[str]:
    """Backend names matching a shell-style pattern, sorted."""
    return BACKENDS.names(pattern)


def create_backbone(name: str, model: PathLike, **options: Any) -> Backbone:
    """The backend `name` for the model (its card or its ONNX file); options go to the backend."""
    factory = BACKENDS.get(name)  # an unknown name: BackendError listing the known ones
    return factory(load_card(model), **options)


def _import_optional(module: str, extra: str, backend: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError("the %s backend needs the Python package %r, which is not installed "
                           "(%s); install it, e.g. pip install -e '.[%s]'"
                           % (backend, module, exc, extra)) from None


def _dims_match(actual: List[Any], expected: Tuple[int, ...]) -> bool:
    """Static dimensions equal; a symbolic batch dimension (a string or None) is accepted."""
    if len(actual) != len(expected):
        return False
    return all(a == e or (i == 0 and not isinstance(a, int)) for i, (a, e)
               in enumerate(zip(actual, expected)))


@register_backend("onnxruntime")
class OnnxRuntimeBackend(Backbone):
    """The ONNX model through onnxruntime's CPU provider."""

    name = "onnxruntime"

    def __init__(self, card: ModelCard, threads: int = 1):
        super().__init__(card)
        ort = _import_optional("onnxruntime", "device", "onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # a 32x32 ResNet-9 is fastest on one thread
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(card.model_path), sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own classes for every parse failure
            raise ModelError("%s: onnxruntime cannot load the model (%s)"
                             % (card.model_path, str(exc).strip().splitlines()[0])) from None
        self._check_signature()
        self._input_name = card.input.name

    def _check_signature(self) -> None:
        path, card = self.card.model_path, self.card
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != card.input.name:
            raise ModelError("%s: model inputs are %s; the card %s expects one input named %r"
                             % (path, [i.name for i in inputs], card.path.name, card.input.name))
        if not _dims_match(list(inputs[0].shape), card.input.shape):
            raise ModelError("%s: input %r has shape %s; the card %s says %s" % (
                path, inputs[0].name, list(inputs[0].shape), card.path.name,
                list(card.input.shape)))
        named = [o for o in outputs if o.name == card.output_name]
        if not named:
            raise ModelError("%s: no output named %r (outputs: %s), as the card %s says"
                             % (path, card.output_name, [o.name for o in outputs],
                                card.path.name))
        if not _dims_match(list(named[0].shape), (1, card.feature_dim)):
            raise ModelError("%s: output %r has shape %s; the card %s says [1, %d]" % (
                path, card.output_name, list(named[0].shape), card.path.name, card.feature_dim))

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.card.output_name], {self._input_name: x})[0]
        return self._check_output(np.asarray(out, dtype=np.float32))


@register_backend("torch")
class TorchBackend(Backbone):
    """A TorchScript export beside the ONNX file (same stem, `.pt`), where torch is installed.

    torch is imported only when this backend is created: never on the board path.
    """

    name = "torch"

    def __init__(self, card: ModelCard, script: Optional[PathLike] = None, threads: int = 1):
        super().__init__(card)
        self._torch = _import_optional("torch", "train", "torch")
        self._torch.set_num_threads(threads)
        path = pathlib.Path(script) if script else card.model_path.with_suffix(".pt")
        if not path.is_file():
            raise ModelError("%s: TorchScript file not found (the torch backend runs the "
                             "TorchScript export beside %s)" % (path, card.model_path.name))
        try:
            with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = self._torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as exc:
            raise ModelError("%s: torch cannot load it as TorchScript (%s)"
                             % (path, str(exc).strip().splitlines()[0])) from None
        self.script_path = path

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            out = self.module(self._torch.from_numpy(x))
        if isinstance(out, (tuple, list)):  # EASY models return (logits, features)
            out = out[-1]
        return self._check_output(out.numpy().astype(np.float32))


@register_backend("tensil")
class TensilBackend(Backbone):
    """The backbone on the FPGA through a Tensil accelerator (the seam; the runner comes later).

    It validates the `.tmodel` (default: beside the card, same stem) and requires pynq and
    the Tensil PYNQ driver; where they are missing it raises a HardwareError naming them.
    """

    name = "tensil"

    def __init__(self, card: ModelCard, tmodel: Optional[PathLike] = None,
                 overlay: Any = None):
        super().__init__(card)
        path = pathlib.Path(tmodel) if tmodel else card.model_path.with_suffix(".tmodel")
        try:
            self.tmodel: TensilModel = load_tmodel(path)
        except TensilError as exc:
            raise ModelError(str(exc)) from None
        self.pynq = require_pynq()
        self.driver = require_tensil_driver()
        self.overlay = overlay
        raise BackendError(
            "%s: pynq and the Tensil driver are present, but the .tmodel runner is not part of "
            "this release yet (it arrives with the Tensil toolchain issue); use --backend "
            "onnxruntime meanwhile" % path)
