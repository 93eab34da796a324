"""The `.tmodel` manifest of a compiled Tensil model: strict reader and writer.

A `.tmodel` is compact JSON with exactly the keys Tensil's PYNQ driver unpacks
(drivers/tcu_pynq/model.py: `Model(**d)`, `Program(**)`, `Consts(**)`, `Vars(**)`), in
Tensil's order:

    name                  the model name
    prog                  {file_name, size}: the `.tprog` beside it, size in bytes
    consts                [{file_name, base, size}]: `.tdata` images of DRAM1, in vectors
    inputs, outputs       [{name, base, size}]: DRAM0 regions in vectors (an output may be
                          split into several entries with the same name; an input named
                          `<name>/columns(kw=K,left=L)` is one the host packs: tensil.layout)
    arch                  the 11 `.tarch` fields
    load_consts_to_local  whether the driver copies the consts to local memory first

`load_tmodel` checks every field, that the regions fit the architecture's memories, and
(by default) that the files exist beside it with the sizes the manifest gives.
"""

import dataclasses
import json
import pathlib
import re
from typing import Any, Dict, List, Optional, Tuple, Union

from fedcore import safejson as sj
from fedcore.errors import JSONError

from .arch import ARCH_FIELDS, Architecture
from .errors import ArchError, TmodelError
from .layout import column_packing

__all__ = ["ARCH_FIELDS", "TMODEL_KEYS", "ConstsFile", "ProgramFile", "TensilModel", "Vars",
           "load_tmodel", "model_name", "parse_tmodel", "write_tmodel"]

def model_name(model_path: Union[str, pathlib.Path], arch_path: Union[str, pathlib.Path]) -> str:
    """Tensil's name for a compiled model, the stem of its three files: the model's file name
    with every character outside [a-zA-Z0-9 whitespace :] made "_", then "_" and the .tarch
    stem (`resnet9.onnx` + `pynqz1.tarch` -> `resnet9_onnx_pynqz1`). Compiler and board agree."""
    stem = re.sub(r"[^a-zA-Z0-9\s:]", "_", pathlib.Path(model_path).name)
    return "%s_%s" % (stem, pathlib.Path(arch_path).stem)


TMODEL_KEYS = ("name", "prog", "consts", "inputs", "outputs", "arch", "load_consts_to_local")
_MAX_MANIFEST_BYTES = 1 << 20
# A program the driver reads whole into memory (the ResNet-9's is about 200 KiB): a manifest may
# not declare more, so a huge or sparse .tprog is refused before anything reads it.
MAX_PROGRAM_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class ProgramFile:
    file_name: str
    size: int   # bytes


@dataclasses.dataclass(frozen=True)
class ConstsFile:
    file_name: str
    base: int   # DRAM1 vector
    size: int   # vectors


@dataclasses.dataclass(frozen=True)
class Vars:
    name: str
    base: int   # DRAM0 vector
    size: int   # vectors


@dataclasses.dataclass(frozen=True)
class TensilModel:
    """A validated `.tmodel`; `path` (not part of the JSON) is where it was read from."""

    name: str
    prog: ProgramFile
    consts: Tuple[ConstsFile, ...]
    inputs: Tuple[Vars, ...]
    outputs: Tuple[Vars, ...]
    arch: Architecture
    load_consts_to_local: bool
    path: Optional[pathlib.Path] = None

    @property
    def folder(self) -> pathlib.Path:
        return self.path.parent if self.path is not None else pathlib.Path(".")

    @property
    def prog_path(self) -> pathlib.Path:
        return self.folder / self.prog.file_name

    @property
    def const_paths(self) -> List[pathlib.Path]:
        return [self.folder / c.file_name for c in self.consts]

    def to_dict(self) -> Dict[str, Any]:
        """Tensil's keys in Tensil's order."""
        return {
            "name": self.name,
            "prog": {"file_name": self.prog.file_name, "size": self.prog.size},
            "consts": [dataclasses.asdict(c) for c in self.consts],
            "inputs": [dataclasses.asdict(v) for v in self.inputs],
            "outputs": [dataclasses.asdict(v) for v in self.outputs],
            "arch": self.arch.to_dict(),
            "load_consts_to_local": self.load_consts_to_local,
        }

    def to_json(self) -> str:
        """Compact JSON like Tensil's upickle output."""
        return json.dumps(self.to_dict(), separators=(",", ":"))


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _Checker:
    def __init__(self, where: str):
        self.where = where

    def need(self, condition: bool, field: str, problem: str) -> None:
        if not condition:
            raise TmodelError("%s: field %r %s" % (self.where, field, problem))

    def keys(self, raw: Any, field: str, keys: Tuple[str, ...]) -> None:
        self.need(isinstance(raw, dict), field, "must be an object {%s}" % ", ".join(keys))
        unknown = sorted(set(raw) - set(keys))
        self.need(not unknown, field, "has unknown key(s) %s; Tensil's driver unpacks exactly "
                  "%s" % (", ".join(map(repr, unknown)), ", ".join(keys)))
        missing = [k for k in keys if k not in raw]
        self.need(not missing, field, "misses key(s) %s" % ", ".join(map(repr, missing)))

    def file_name(self, value: Any, field: str) -> str:
        self.need(isinstance(value, str) and value not in ("", ".", "..") and len(value.encode("utf-8", "replace")) <= 255
                  and "/" not in value and "\\" not in value and "\0" not in value, field,
                  "must be a file name (at most 255 bytes) beside the .tmodel")
        return value

    def natural(self, value: Any, field: str) -> int:
        self.need(_natural(value), field, "must be a non-negative integer")
        return value

    def region(self, raw: Any, field: str, keys: Tuple[str, str, str], depth: int,
               memory: str) -> Tuple[Any, int, int]:
        self.keys(raw, field, keys)
        first = raw[keys[0]]
        if keys[0] == "file_name":
            first = self.file_name(first, field + ".file_name")
        else:
            self.need(isinstance(first, str) and first != "", field + ".name",
                      "must be a non-empty string")
        base = self.natural(raw["base"], field + ".base")
        size = self.natural(raw["size"], field + ".size")
        self.need(base + size <= depth, field, "vectors %d..%d exceed %s depth %d" % (
            base, base + size - 1, memory, depth))
        return first, base, size


def parse_tmodel(raw: Any, where: str = "<tmodel>",
                 path: Optional[pathlib.Path] = None) -> TensilModel:
    """Validate a parsed `.tmodel` object (files are not looked at)."""
    check = _Checker(where)
    check.keys(raw, "<root>", TMODEL_KEYS)
    check.need(isinstance(raw["name"], str) and raw["name"] != "", "name",
               "must be a non-empty string")
    try:
        arch = Architecture.from_dict(raw["arch"], "%s: field 'arch'" % where)
    except ArchError as exc:
        raise TmodelError(str(exc)) from None
    check.keys(raw["prog"], "prog", ("file_name", "size"))
    prog = ProgramFile(check.file_name(raw["prog"]["file_name"], "prog.file_name"),
                       check.natural(raw["prog"]["size"], "prog.size"))
    step = arch.layout.instruction_bytes
    check.need(prog.size % step == 0, "prog.size", "is %d bytes, not a whole number of %d-byte "
               "instructions" % (prog.size, step))
    check.need(prog.size <= MAX_PROGRAM_BYTES, "prog.size", "is %d bytes; a program may have at most %d"
               % (prog.size, MAX_PROGRAM_BYTES))
    check.need(isinstance(raw["consts"], list), "consts", "must be a list")
    consts = tuple(ConstsFile(*check.region(c, "consts[%d]" % i, ("file_name", "base", "size"),
                                            arch.dram1_depth, "DRAM1"))
                   for i, c in enumerate(raw["consts"]))
    variables = {}
    for key in ("inputs", "outputs"):
        check.need(isinstance(raw[key], list) and raw[key] != [], key, "must be a non-empty list")
        variables[key] = tuple(
            Vars(*check.region(v, "%s[%d]" % (key, i), ("name", "base", "size"),
                               arch.dram0_depth, "DRAM0"))
            for i, v in enumerate(raw[key]))
    for i, var in enumerate(variables["inputs"]):
        try:
            column_packing(var.name)
        except ValueError as exc:
            check.need(False, "inputs[%d].name" % i, str(exc))
    check.need(isinstance(raw["load_consts_to_local"], bool), "load_consts_to_local",
               "must be true or false")
    return TensilModel(raw["name"], prog, consts, variables["inputs"], variables["outputs"], arch,
                       raw["load_consts_to_local"], path)


def load_tmodel(path: Union[str, pathlib.Path], check_files: bool = True) -> TensilModel:
    """Read a `.tmodel`; with `check_files`, the `.tprog`/`.tdata` beside it must match it."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise TmodelError("%s: Tensil model file not found" % path)
    size = path.stat().st_size
    if size > _MAX_MANIFEST_BYTES:
        raise TmodelError("%s: %d bytes is too large for a .tmodel manifest" % (path, size))
    try:  # bounded: a deep or huge document is refused by a scan, never by a RecursionError
        raw = sj.loads(path.read_bytes(), sj.Limits(max_bytes=_MAX_MANIFEST_BYTES, max_depth=6))
    except (OSError, JSONError) as exc:
        raise TmodelError("%s: not a readable .tmodel JSON file (%s)" % (path, exc)) from None
    model = parse_tmodel(raw, str(path), path)
    if check_files:
        _check_files(model)
    return model


def _check_files(model: TensilModel) -> None:
    check = _Checker(str(model.path))
    expected = [("prog.file_name", model.prog_path, model.prog.size)]
    expected += [("consts[%d].file_name" % i, p, c.size * model.arch.vector_bytes)
                 for i, (p, c) in enumerate(zip(model.const_paths, model.consts))]
    for field, target, size in expected:
        try:
            actual = target.stat().st_size if target.is_file() else None
        except OSError as exc:  # a name the file system refuses, a folder we may not read
            actual = None
            check.need(False, field, "names a file that cannot be read: %s (%s)" % (target, exc.strerror))
        check.need(actual is not None, field, "names a missing file: %s" % target)
        check.need(actual == size, field, "names %s of %s bytes; the manifest says %d" % (
            target.name, actual, size))


def write_tmodel(model: TensilModel, path: Union[str, pathlib.Path]) -> pathlib.Path:
    """Write the manifest (compact JSON, Tensil's key order); returns the path."""
    path = pathlib.Path(path)
    parse_tmodel(model.to_dict(), str(path))   # the writer never writes what the reader refuses
    path.write_text(model.to_json(), encoding="utf-8")
    return path
