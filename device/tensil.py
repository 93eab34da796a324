"""Tensil compiled models: strict reading of the `.tmodel` JSON the Tensil compiler writes.

A `.tmodel` names the program (`prog`: {file_name, size}), the constants (`consts`:
[{file_name, base, size}]), the input and output vectors ([{name, base, size}]), the
accelerator architecture (`arch`, the `.tarch` fields) and `load_consts_to_local`.
`load_tmodel` checks every field and that the files it names exist beside it.
"""

import json
import pathlib
from typing import Any, Dict, List, Union

from .errors import ModelError

__all__ = ["ARCH_FIELDS", "TensilModel", "load_tmodel"]

ARCH_FIELDS = ("data_type", "array_size", "dram0_depth", "dram1_depth", "local_depth",
               "accumulator_depth", "simd_registers_depth", "stride0_depth", "stride1_depth",
               "number_of_threads", "thread_queue_depth")
_DATA_TYPES = ("FP16BP8", "FP32B16", "FP8BP4")


class TensilModel:
    """A validated `.tmodel`: its JSON and the paths of the files it needs."""

    def __init__(self, path: pathlib.Path, raw: Dict[str, Any]):
        self.path = path
        self.raw = raw
        self.name: str = raw["name"]
        self.prog_path = path.parent / raw["prog"]["file_name"]
        self.const_paths: List[pathlib.Path] = [path.parent / c["file_name"] for c in raw["consts"]]
        self.inputs: List[Dict[str, Any]] = raw["inputs"]
        self.outputs: List[Dict[str, Any]] = raw["outputs"]
        self.arch: Dict[str, Any] = raw["arch"]


def load_tmodel(path: Union[str, pathlib.Path]) -> TensilModel:
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelError("%s: Tensil model file not found" % path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError("%s: not a readable .tmodel JSON file (%s)" % (path, exc)) from None
    where = str(path)
    _need(isinstance(raw, dict), where, "<root>", "must be a JSON object")
    _need(isinstance(raw.get("name"), str) and raw["name"] != "", where, "name",
          "must be a non-empty string")
    prog = raw.get("prog")
    _need(isinstance(prog, dict), where, "prog", "must be an object {file_name, size}")
    _file_entry(prog, where, "prog", path.parent, ("file_name", "size"))
    _need(isinstance(raw.get("consts"), list), where, "consts", "must be a list")
    for key in ("inputs", "outputs"):
        _need(isinstance(raw.get(key), list) and raw[key] != [], where, key,
              "must be a non-empty list")
    for i, const in enumerate(raw["consts"]):
        _file_entry(const, where, "consts[%d]" % i, path.parent, ("file_name", "base", "size"))
    for key in ("inputs", "outputs"):
        for i, vec in enumerate(raw[key]):
            field = "%s[%d]" % (key, i)
            _need(isinstance(vec, dict) and isinstance(vec.get("name"), str), where, field,
                  "must be an object with a string name")
            for num in ("base", "size"):
                _need(_natural(vec.get(num)), where, field + "." + num,
                      "must be a non-negative integer")
    _check_arch(raw.get("arch"), where)
    _need(isinstance(raw.get("load_consts_to_local"), bool), where, "load_consts_to_local",
          "must be true or false")
    return TensilModel(path, raw)


def _check_arch(arch: Any, where: str) -> None:
    _need(isinstance(arch, dict), where, "arch", "must be an object with the .tarch fields")
    for key in ARCH_FIELDS:
        if key == "data_type":
            _need(arch.get(key) in _DATA_TYPES, where, "arch.data_type",
                  "must be one of %s" % ", ".join(_DATA_TYPES))
        else:
            _need(_natural(arch.get(key)) and arch[key] > 0, where, "arch." + key,
                  "must be a positive integer")


def _file_entry(entry: Any, where: str, field: str, folder: pathlib.Path, keys: tuple) -> None:
    _need(isinstance(entry, dict), where, field, "must be an object")
    _need(isinstance(entry.get("file_name"), str) and entry["file_name"] != ""
          and "/" not in entry["file_name"], where, field + ".file_name",
          "must be a file name beside the .tmodel")
    for key in keys[1:]:
        _need(_natural(entry.get(key)), where, field + "." + key, "must be a non-negative integer")
    target = folder / entry["file_name"]
    _need(target.is_file(), where, field + ".file_name", "names a missing file: %s" % target)


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _need(condition: bool, where: str, field: str, problem: str) -> None:
    if not condition:
        raise ModelError("%s: field %r %s" % (where, field, problem))
