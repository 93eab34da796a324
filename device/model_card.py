"""Model cards: the JSON that travels with every bundled backbone (see models/ and README).

This module is the one definition of the contract: the board reads cards with it and
training (`training/fewshot/export.py`) writes them with it.

`load_card(path)` reads a card, checks every field the contract defines and the
sha256 of the ONNX file it names; each problem raises `ModelError` naming the
card (or the model file) and the field. `find_card(path)` accepts either the
card or the model and returns the card's path (same stem, `.json`). `write_card`
validates a card the same way before it writes it.
"""

import hashlib
import json
import math
import pathlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from fedcore.atomic import atomic_write

from .errors import ModelError

__all__ = ["CARD_FORMAT", "CARD_VERSION", "InputSpec", "ModelCard", "find_card", "load_card",
           "parse_card", "sha256_file", "write_card"]

CARD_FORMAT = "pynq-fewshot-model-card"
CARD_VERSION = 1
_CROPS = ("center-square", "none")
_RESIZES = ("area",)

PathLike = Union[str, pathlib.Path]


@dataclass
class InputSpec:
    """How a frame becomes the backbone's input tensor (the card's "input" object)."""

    name: str
    shape: Tuple[int, int, int, int]
    crop: str
    resize: str
    scale: float
    mean: List[float]
    std: List[float]

    @property
    def height(self) -> int:
        return self.shape[2]

    @property
    def width(self) -> int:
        return self.shape[3]


@dataclass
class ModelCard:
    """A validated model card; `model_path` is the ONNX file it describes."""

    path: pathlib.Path
    raw: Dict[str, Any]
    input: InputSpec
    output_name: str
    feature_dim: int
    feature_mean: Optional[List[float]]

    @property
    def model_path(self) -> pathlib.Path:
        return self.path.parent / self.raw["model"]

    @property
    def name(self) -> str:
        return pathlib.Path(self.raw["model"]).stem

    @property
    def placeholder(self) -> bool:
        return bool(self.raw["training"].get("placeholder", False))


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(str(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_card(path: PathLike) -> pathlib.Path:
    """The card of a model given as its card (.json) or its model file (same stem)."""
    path = pathlib.Path(path)
    card = path if path.suffix == ".json" else path.with_suffix(".json")
    if not card.is_file():
        raise ModelError("%s: model card not found (expected next to the model, same stem, .json)"
                         % card)
    return card


def load_card(path: PathLike, check_file: bool = True) -> ModelCard:
    """Read and validate a card; with check_file, also the model file's presence and sha256."""
    card_path = find_card(path)
    try:
        raw = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError("%s: not a readable JSON model card (%s)" % (card_path, exc)) from None
    card = parse_card(raw, card_path)
    if check_file:
        _check_model_file(card)
    return card


def write_card(raw: Dict[str, Any], path: PathLike) -> ModelCard:
    """Validate `raw` (every field, and the sha256 of the model file beside `path`), write
    it as UTF-8 JSON (sorted keys, indent 2) atomically, and return it as `load_card` reads it."""
    card_path = pathlib.Path(path)
    if card_path.suffix != ".json":
        raise ValueError("a model card is a .json file, not %s" % card_path)
    _check_model_file(parse_card(raw, card_path))
    atomic_write(card_path, json.dumps(raw, sort_keys=True, indent=2) + "\n")
    return load_card(card_path)


def _check_model_file(card: ModelCard) -> None:
    model = card.model_path
    if not model.is_file():
        raise ModelError("%s: model file named by the card is missing: %s" % (card.path, model))
    actual = sha256_file(model)
    if actual != card.raw["sha256"]:
        raise ModelError("%s: sha256 mismatch: the card %s says %s, the file is %s (corrupt "
                         "or replaced model)" % (model, card.path.name, card.raw["sha256"], actual))


def parse_card(raw: Any, card_path: pathlib.Path) -> ModelCard:
    """Check every field of an already parsed card."""
    where = str(card_path)
    _need(isinstance(raw, dict), where, "", "must be a JSON object")
    _field(raw, "format", str, where)
    _need(raw["format"] == CARD_FORMAT, where, "format", "must be %r" % CARD_FORMAT)
    _field(raw, "version", int, where)
    _need(raw["version"] == CARD_VERSION, where, "version", "unsupported (this device reads %d)"
          % CARD_VERSION)
    _field(raw, "model", str, where)
    model = raw["model"]
    _need(model.endswith(".onnx") and "/" not in model and "\\" not in model and model != ".onnx",
          where, "model", "must be an .onnx file name in the card's folder, not %r" % model)
    _field(raw, "sha256", str, where)
    _need(len(raw["sha256"]) == 64 and all(c in "0123456789abcdef" for c in raw["sha256"]),
          where, "sha256", "must be 64 lower-case hex digits")
    _check_architecture(raw, where)
    spec = _check_input(raw, where)
    output_name, dim = _check_output(raw, where)
    _field(raw, "opset", int, where)
    feature_mean = _check_feature_mean(raw, where, dim)
    _check_training(raw, where)
    _check_fewshot(raw, where)
    _field(raw, "parity", dict, where)
    for key, value in raw["parity"].items():
        _need(_is_number(value), where, "parity." + key, "must be a number")
    return ModelCard(card_path, raw, spec, output_name, dim, feature_mean)


def _check_architecture(raw: Dict[str, Any], where: str) -> None:
    arch = _field(raw, "architecture", dict, where)
    _field(arch, "name", str, where, "architecture.")
    for key in ("feature_maps", "parameters", "macs"):
        _field(arch, key, int, where, "architecture.")
    _field(arch, "strided", bool, where, "architecture.")
    widths = _field(arch, "widths", list, where, "architecture.")
    _need(len(widths) > 0 and all(_is_int(w) and w > 0 for w in widths), where,
          "architecture.widths", "must be a list of positive integers")


def _check_input(raw: Dict[str, Any], where: str) -> InputSpec:
    spec = _field(raw, "input", dict, where)
    name = _field(spec, "name", str, where, "input.")
    shape = _shape(spec, where, "input.", 4)
    _need(shape[0] == 1 and shape[1] == 3, where, "input.shape", "must be [1, 3, H, W], not %s"
          % list(shape))
    _need(_field(spec, "layout", str, where, "input.") == "NCHW", where, "input.layout",
          "must be 'NCHW'")
    _need(_field(spec, "color", str, where, "input.") == "RGB", where, "input.color",
          "must be 'RGB'")
    crop = _field(spec, "crop", str, where, "input.")
    _need(crop in _CROPS, where, "input.crop", "must be one of %s" % ", ".join(_CROPS))
    resize = _field(spec, "resize", str, where, "input.")
    _need(resize in _RESIZES, where, "input.resize", "must be one of %s" % ", ".join(_RESIZES))
    scale = spec.get("scale")
    _need(_is_number(scale) and scale > 0, where, "input.scale", "must be a positive number")
    mean = _floats(spec, "mean", where, "input.", 3)
    std = _floats(spec, "std", where, "input.", 3)
    _need(all(s > 0 for s in std), where, "input.std", "must be positive")
    return InputSpec(name, shape, crop, resize, float(scale), mean, std)  # type: ignore[arg-type]


def _check_output(raw: Dict[str, Any], where: str) -> Tuple[str, int]:
    spec = _field(raw, "output", dict, where)
    name = _field(spec, "name", str, where, "output.")
    shape = _shape(spec, where, "output.", 2)
    _need(shape[0] == 1, where, "output.shape", "must be [1, D]")
    return name, shape[1]


def _check_feature_mean(raw: Dict[str, Any], where: str, dim: int) -> Optional[List[float]]:
    _need("feature_mean" in raw, where, "feature_mean", "is missing (use null when unknown)")
    if raw["feature_mean"] is None:
        return None
    return _floats(raw, "feature_mean", where, "", dim)


def _check_training(raw: Dict[str, Any], where: str) -> None:
    training = _field(raw, "training", dict, where)
    _field(training, "dataset", str, where, "training.")
    for key in ("base_classes", "novel_classes"):
        values = _field(training, key, list, where, "training.")
        _need(all(isinstance(v, str) for v in values), where, "training." + key,
              "must be a list of class names")
    _field(training, "epochs", int, where, "training.")
    seeds = _field(training, "seeds", list, where, "training.")
    _need(all(_is_int(s) for s in seeds), where, "training.seeds", "must be integers")
    _field(training, "command", str, where, "training.")
    _field(training, "placeholder", bool, where, "training.")


def _check_fewshot(raw: Dict[str, Any], where: str) -> None:
    results = _field(raw, "fewshot", list, where)
    for i, entry in enumerate(results):
        prefix = "fewshot[%d]." % i
        _need(isinstance(entry, dict), where, prefix[:-1], "must be an object")
        _field(entry, "data", str, where, prefix)
        _field(entry, "classifier", str, where, prefix)
        for key in ("ways", "shots", "queries", "episodes"):
            _field(entry, key, int, where, prefix)
        accuracy = entry.get("accuracy")
        _need(_is_number(accuracy) and 0.0 <= accuracy <= 1.0, where, prefix + "accuracy",
              "must be a number in [0, 1]")
        _need(_is_number(entry.get("ci95")), where, prefix + "ci95", "must be a number")


# --- small checks -------------------------------------------------------------------------


def _need(condition: bool, where: str, field: str, problem: str) -> None:
    if not condition:
        raise ModelError("%s: field %r %s" % (where, field or "<root>", problem))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _field(obj: Dict[str, Any], key: str, kind: type, where: str, prefix: str = "") -> Any:
    _need(key in obj, where, prefix + key, "is missing")
    value = obj[key]
    ok = _is_int(value) if kind is int else isinstance(value, kind)
    _need(ok, where, prefix + key, "must be of type %s, not %s" % (kind.__name__,
                                                                  type(value).__name__))
    return value


def _shape(obj: Dict[str, Any], where: str, prefix: str, rank: int) -> Tuple[int, ...]:
    shape = _field(obj, "shape", list, where, prefix)
    _need(len(shape) == rank and all(_is_int(d) and d > 0 for d in shape), where,
          prefix + "shape", "must be %d positive integers, not %r" % (rank, shape))
    return tuple(shape)


def _floats(obj: Dict[str, Any], key: str, where: str, prefix: str, count: int) -> List[float]:
    values = _field(obj, key, list, where, prefix)
    _need(len(values) == count and all(_is_number(v) for v in values), where, prefix + key,
          "must be %d finite numbers" % count)
    return [float(v) for v in values]
