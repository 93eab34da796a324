"""Backbone backends behind one small interface, created by name from a registry.

    backbone = create_backbone("onnxruntime", "models/resnet9_f16_strided_32.onnx")
    features = backbone.features(batch)          # (N, 3, H, W) float32 -> (N, D) float32

Backends: "onnxruntime" (default on a CPU), "opencv" (cv2.dnn: the CPU fallback on PYNQ's
armv7 images, where onnxruntime has no wheel), "torch" (TorchScript beside the ONNX file,
only where torch is installed, never on the board path), "tensil" (the FPGA: the overlay's
TCU through tensil.driver), "tensil-emu" (the compiled model on the bit-exact emulator) and
"auto" (tensil on a board with a loaded Tensil overlay, else onnxruntime, else opencv; the
backbone's `selection` says which and why). Compiled models sit beside the ONNX file as
`<model file name, . as _>_<arch stem>.tmodel, Tensil's naming` (`tmodel_path`). Every backend reads the model card
first, so the preprocessing and the feature size come from one place.
"""

import importlib
import pathlib
import warnings
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np

from fedcore.registry import Registry
from tensil.driver import TensilDriver
from tensil.errors import ArchMismatch, DriverError, TensilError
from tensil.hwh import read_design
from tensil.layout import from_vectors, given_name, input_vector_count, input_vectors, vector_count
from tensil.tmodel import TensilModel, load_tmodel, model_name

from .board import require_pynq
from .errors import BackendError, ModelError
from .model_card import ModelCard, load_card

__all__ = ["BACKENDS", "DEFAULT_TENSIL_ARCH", "Backbone", "OnnxRuntimeBackend", "OpenCvBackend",
           "TensilBackend", "TensilEmulatorBackend", "TorchBackend", "auto_backbone",
           "choose_backend", "create_backbone", "find_tmodel", "list_backends",
           "register_backend", "tmodel_path"]

PathLike = Union[str, pathlib.Path]
BACKENDS: "Registry[Callable[..., Backbone]]" = Registry("backend", error=BackendError)


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


@register_backend("opencv")
class OpenCvBackend(Backbone):
    """The ONNX model through OpenCV's DNN module (cv2.dnn.readNetFromONNX): the CPU fallback
    where onnxruntime has no wheel (PYNQ's armv7 images ship OpenCV)."""

    name = "opencv"

    def __init__(self, card: ModelCard, threads: Optional[int] = None):
        super().__init__(card)
        cv2 = _import_optional("cv2", "device", "opencv")
        if not hasattr(cv2, "dnn"):
            raise BackendError("the opencv backend needs OpenCV's dnn module, which this cv2 "
                               "(%s) lacks" % getattr(cv2, "__version__", "?"))
        if threads is not None:
            cv2.setNumThreads(threads)
        try:
            self.net = cv2.dnn.readNetFromONNX(str(card.model_path))
        except cv2.error as exc:
            raise ModelError("%s: OpenCV cannot load the model (%s)" % (
                card.model_path, str(exc).strip().splitlines()[-1])) from None
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        outputs = list(self.net.getUnconnectedOutLayersNames())
        if card.output_name not in outputs:
            raise ModelError("%s: OpenCV finds the outputs %s; the card %s names %r" % (
                card.model_path, outputs, card.path.name, card.output_name))

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        self.net.setInput(x, self.card.input.name)
        out = self.net.forward(self.card.output_name)
        return self._check_output(np.asarray(out, dtype=np.float32))


# --------------------------------------------------------------------------- Tensil

DEFAULT_TENSIL_ARCH = "pynqz1_perf"   # tensil_arch/pynqz1_perf.tarch: PEFSL's 12x12 TCU


def tmodel_path(card: ModelCard, arch_stem: str) -> pathlib.Path:
    """Where the model compiled for the architecture `arch_stem` lives: beside the ONNX file,
    under Tensil's name (models/resnet9_f16_strided_32_onnx_pynqz1_perf.tmodel)."""
    return card.model_path.parent / (model_name(card.model_path, arch_stem + ".tarch") + ".tmodel")


def find_tmodel(card: ModelCard, tmodel: Optional[PathLike] = None,
                arch_stem: Optional[str] = None) -> pathlib.Path:
    """The `.tmodel` to run: the one given, else the one named for `arch_stem`, else the only
    model compiled for any architecture beside the model."""
    if tmodel:
        return pathlib.Path(tmodel)
    if arch_stem and tmodel_path(card, arch_stem).is_file():
        return tmodel_path(card, arch_stem)
    found = sorted(card.model_path.parent.glob(model_name(card.model_path, "*") + ".tmodel"))
    if len(found) == 1:
        return found[0]
    wanted = tmodel_path(card, arch_stem or "<arch>")
    if not found:
        raise ModelError("%s: Tensil model file not found (no compiled model beside %s; compile "
                         "the ONNX for the .tarch, or pass --tmodel)" % (wanted, card.model_path.name))
    raise ModelError("%s: not found, and %d other compiled models are beside %s (%s): pass "
                     "--tmodel" % (wanted, len(found), card.model_path.name,
                                   ", ".join(p.name for p in found)))


def _compiled_model(card: ModelCard, path: pathlib.Path) -> TensilModel:
    """The `.tmodel`, checked against the card: one input of the card's shape, the output."""
    try:
        model = load_tmodel(path)
    except TensilError as exc:
        raise ModelError(str(exc)) from None
    n = model.arch.array_size
    inputs = [(given_name(v.name), v.size) for v in model.inputs]   # packed by the host or not
    var = next((v.name for v in model.inputs if given_name(v.name) == card.input.name), card.input.name)
    try:
        wanted = (card.input.name, input_vector_count(var, card.input.shape, n))
    except ValueError as exc:   # a packed image the card does not describe as one
        raise ModelError("%s: %s; the card %s says shape %s" % (path, exc, card.path.name,
                                                                list(card.input.shape))) from None
    if inputs != [wanted]:
        raise ModelError("%s: inputs %s (name, vectors); the card %s says one input %r of shape "
                         "%s, %d vectors of %d lanes" % (path, inputs, card.path.name, wanted[0],
                                                         list(card.input.shape), wanted[1], n))
    vectors = sum(v.size for v in model.outputs if v.name == card.output_name)
    if vectors != vector_count((1, card.feature_dim), n):
        raise ModelError("%s: output %r takes %d vectors; the card's %d features take %d" % (
            path, card.output_name, vectors, card.feature_dim,
            vector_count((1, card.feature_dim), n)))
    return model


@register_backend("tensil-emu")
class TensilEmulatorBackend(Backbone):
    """The compiled model on the bit-exact Tensil emulator: the FP16BP8 features the board
    computes, on any machine (default architecture: pynqz1_perf, PEFSL's 12x12)."""

    name = "tensil-emu"

    def __init__(self, card: ModelCard, tmodel: Optional[PathLike] = None,
                 arch: Optional[str] = None):
        super().__init__(card)
        from tensil.emulator import run_model
        from tensil.isa import decode_program

        self.tmodel = _compiled_model(card, find_tmodel(card, tmodel, arch or DEFAULT_TENSIL_ARCH))
        try:
            self.program = decode_program(self.tmodel.prog_path.read_bytes(), self.tmodel.arch)
        except TensilError as exc:
            raise ModelError("%s: %s" % (self.tmodel.prog_path, exc)) from None
        self._run_model = run_model
        self.saturated_inputs = 0   # input values that saturated in FP16BP8, all frames

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        n = self.tmodel.arch.array_size
        var = self.tmodel.inputs[0].name
        outputs, report = self._run_model(self.tmodel, {var: input_vectors(var, x, n)},
                                          program=self.program)
        self.saturated_inputs += report.saturated_inputs
        values = from_vectors(outputs[self.card.output_name], (1, self.feature_dim), n)
        return self._check_output(values.astype(np.float32))


@register_backend("tensil")
class TensilBackend(Backbone):
    """The backbone on the FPGA: the overlay's TCU through tensil.driver.

    `overlay` is the loaded Tensil overlay (or `bitstream` names the `.bit` to load). Its
    `.hwh` (and the build's JSON beside it) must describe a TCU the `.tmodel` fits: a
    mismatch is refused naming both values, as is a TCU whose vectors the driver's self-test
    finds of another size. The `.tmodel` is the one given, else the one named for the
    bitstream's architecture beside the model (`tmodel_path`). `driver_options` go to
    TensilDriver (timeout_s, cacheable, ...).
    """

    name = "tensil"

    def __init__(self, card: ModelCard, tmodel: Optional[PathLike] = None, overlay: Any = None,
                 bitstream: Optional[PathLike] = None, **driver_options: Any):
        super().__init__(card)
        if overlay is None:
            if bitstream is None:
                raise BackendError("the tensil backend needs the Tensil overlay: pass its .bit "
                                   "(--overlay bitstreams/<name>/<name>.bit)")
            overlay = require_pynq().Overlay(str(bitstream))
        bitfile = getattr(overlay, "bitfile_name", None) or str(bitstream)
        try:
            self.design = read_design(bitfile)
        except TensilError as exc:
            raise BackendError("the overlay %s is no Tensil overlay this backend can use: %s"
                               % (bitfile, exc)) from None
        self.tmodel = _compiled_model(card, find_tmodel(card, tmodel, self.design.arch_stem))
        self.note = self.design.name_note(self.tmodel)
        try:
            self.driver = TensilDriver.from_overlay(overlay, self.tmodel, design=self.design,
                                                    **driver_options)
        except ArchMismatch as exc:
            raise ModelError(str(exc)) from None
        except DriverError as exc:
            raise BackendError(str(exc)) from None
        self.saturated_inputs = 0

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        name, output = self.card.input.name, self.card.output_name
        try:
            out = self.driver.run({name: x}, {output: (1, self.feature_dim)})[output]
        except DriverError as exc:
            raise BackendError(str(exc)) from None
        self.saturated_inputs += sum(self.driver.last_run.saturated.values())
        return self._check_output(out)

    def close(self) -> None:
        self.driver.close()


# --------------------------------------------------------------------------- auto

def _loaded_tensil_overlay(overlay: Any) -> Tuple[Any, str]:
    """(the overlay to use or None, why) for the tensil step of `auto`."""
    if overlay is None:
        try:
            pynq = importlib.import_module("pynq")
        except ImportError:
            return None, "pynq is not installed (not a PYNQ board)"
        bitfile: Optional[str] = getattr(getattr(pynq, "PL", None), "bitfile_name", None)
        if not bitfile:
            return None, "no bitstream is loaded in the FPGA"
        try:
            design = read_design(bitfile)
        except TensilError as exc:
            return None, "the loaded bitstream %s has no usable Tensil TCU (%s)" % (bitfile, exc)
        return pynq.Overlay(bitfile, download=False), "the loaded bitstream %s has the Tensil " \
            "TCU %s" % (bitfile, design.tcu_module)
    bitfile = getattr(overlay, "bitfile_name", "?")
    if not overlay.is_loaded():
        return None, "the overlay %s is not loaded" % bitfile
    try:
        design = read_design(bitfile)
    except TensilError as exc:
        return None, "the overlay %s has no usable Tensil TCU (%s)" % (bitfile, exc)
    return overlay, "the overlay %s has the Tensil TCU %s" % (bitfile, design.tcu_module)


def choose_backend(card: ModelCard, overlay: Any = None,
                   tmodel: Optional[PathLike] = None) -> Tuple[str, Any, str]:
    """`auto`'s choice: (backend name, the overlay for tensil or None, the reason).

    tensil on a board with a loaded Tensil overlay and a .tmodel for it; else onnxruntime where
    it is installed; else opencv (PYNQ's armv7 images, where onnxruntime has no wheel)."""
    reasons = []
    found, why = _loaded_tensil_overlay(overlay)
    if found is not None:
        try:
            design = read_design(found.bitfile_name)
            path = find_tmodel(card, tmodel, design.arch_stem)
            design.check_model(_compiled_model(card, path))
            return "tensil", found, "%s and %s is compiled for it" % (why, path.name)
        except (TensilError, ModelError) as exc:
            why = "%s, but %s" % (why, exc)
    reasons.append("not tensil: " + why)
    for module, backend in (("onnxruntime", "onnxruntime"), ("cv2", "opencv")):
        try:
            importlib.import_module(module)
        except ImportError:
            reasons.append("not %s: the Python package %s is not installed" % (backend, module))
            continue
        return backend, None, "; ".join(reasons + ["%s is installed" % module])
    raise BackendError("--backend auto found no backend: " + "; ".join(reasons))


@register_backend("auto")
def auto_backbone(card: ModelCard, overlay: Any = None, tmodel: Optional[PathLike] = None,
                  threads: int = 1, **driver_options: Any) -> Backbone:
    """The backend `choose_backend` picks; `backbone.selection` says which and why."""
    name, found, why = choose_backend(card, overlay, tmodel)
    if name == "tensil":
        backbone: Backbone = TensilBackend(card, tmodel, overlay=found, **driver_options)
    else:
        backbone = BACKENDS.get(name)(card, threads=threads)
    backbone.selection = "auto: %s (%s)" % (name, why)  # type: ignore[attr-defined]
    return backbone
