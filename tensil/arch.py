"""Tensil architectures: the strict `.tarch` reader and the instruction layout derived from it.

A `.tarch` is a JSON object with exactly the 11 keys of Tensil's `Architecture`
(common/src/tensil/Architecture.scala), in this order: data_type, array_size, dram0_depth,
dram1_depth, local_depth, accumulator_depth, simd_registers_depth, stride0_depth,
stride1_depth, number_of_threads, thread_queue_depth. Depths count vectors of
`array_size` scalars.

`instruction_layout(arch)` is the one place that derives the widths of the instruction word
(Tensil's InstructionLayout.scala): the encoder, decoder, emulator, estimator and compiler
all ask it; nothing else hard-codes "8 bytes".
"""

import dataclasses
import functools
import json
import pathlib
from typing import Any, Dict, List, Sequence, Tuple, Union

from fedcore import safejson as sj
from fedcore.errors import JSONError

from .errors import ArchError

__all__ = ["ARCH_FIELDS", "DATA_TYPES", "Architecture", "InstructionLayout", "format_table",
           "instruction_layout", "load_tarch", "log2_ceil", "parse_tarch", "summary"]

ARCH_FIELDS = ("data_type", "array_size", "dram0_depth", "dram1_depth", "local_depth",
               "accumulator_depth", "simd_registers_depth", "stride0_depth", "stride1_depth",
               "number_of_threads", "thread_queue_depth")
# Tensil's ArchitectureDataType names; FLOAT32 compiles but has no RTL.
DATA_TYPES = ("FP8BP4", "FP16BP8", "FP18BP10", "FP32BP16", "FLOAT32")
_SIZE_BYTES = {"FP8BP4": 1, "FP16BP8": 2, "FP18BP10": 4, "FP32BP16": 4, "FLOAT32": 4}
_SCALAR_BITS = {"FP8BP4": 8, "FP16BP8": 16, "FP18BP10": 18, "FP32BP16": 32, "FLOAT32": 32}  # in the RTL's memories
_INT_MAX = (1 << 31) - 1   # Scala Int fields
_LONG_MAX = (1 << 63) - 1  # Scala Long fields (the depths)
# field -> (largest value, what the value means)
_LIMITS = {
    "array_size": (256, "the systolic array is array_size x array_size"),
    "dram0_depth": (_LONG_MAX, "vectors"),
    "dram1_depth": (_LONG_MAX, "vectors"),
    "local_depth": (_LONG_MAX, "vectors"),
    "accumulator_depth": (_LONG_MAX, "vectors"),
    "simd_registers_depth": (_INT_MAX, "registers per ALU lane"),
    "stride0_depth": (_INT_MAX, "strides 2^0..2^(depth-1)"),
    "stride1_depth": (_INT_MAX, "strides 2^0..2^(depth-1)"),
    "number_of_threads": (2, "Tensil's compiler backend supports 1 or 2"),
    "thread_queue_depth": (_INT_MAX, "estimates queued per thread"),
}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A validated Tensil architecture; the attributes are the `.tarch` keys."""

    data_type: str
    array_size: int
    dram0_depth: int
    dram1_depth: int
    local_depth: int
    accumulator_depth: int
    simd_registers_depth: int
    stride0_depth: int
    stride1_depth: int
    number_of_threads: int
    thread_queue_depth: int

    def __post_init__(self) -> None:
        _check_fields(dataclasses.asdict(self), "Architecture")

    @classmethod
    def from_dict(cls, raw: Any, where: str = "architecture") -> "Architecture":
        """Build from a parsed `.tarch` object: exactly the 11 keys, each checked."""
        if not isinstance(raw, dict):
            raise ArchError("%s: must be a JSON object with the .tarch fields" % where)
        unknown = sorted(set(raw) - set(ARCH_FIELDS))
        if unknown:
            raise ArchError("%s: unknown field(s) %s; a .tarch has exactly %s" % (
                where, ", ".join(repr(k) for k in unknown), ", ".join(ARCH_FIELDS)))
        missing = [k for k in ARCH_FIELDS if k not in raw]
        if missing:
            raise ArchError("%s: missing field(s) %s" % (where, ", ".join(repr(k) for k in missing)))
        _check_fields(raw, where)
        _check_capacity(raw, where)
        return cls(**{k: raw[k] for k in ARCH_FIELDS})

    def to_dict(self) -> Dict[str, Any]:
        """The 11 `.tarch` keys in Tensil's order."""
        return {k: getattr(self, k) for k in ARCH_FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=4) + "\n"

    @property
    def layout(self) -> "InstructionLayout":
        return instruction_layout(self)

    @property
    def scalar_bits(self) -> int:
        """Bits per scalar in the RTL's memories (a vector is array_size of them)."""
        return _SCALAR_BITS[self.data_type]

    @property
    def scalar_bytes(self) -> int:
        """Bytes per scalar in `.tdata` files and on the DRAM buses."""
        return _SIZE_BYTES[self.data_type]

    @property
    def vector_bytes(self) -> int:
        return self.array_size * self.scalar_bytes

    @property
    def thread_local_depth(self) -> int:
        return self.local_depth // self.number_of_threads


# What any FPGA this toolchain targets can hold: an architecture read from a file (.tarch,
# .tmodel, a build's JSON) beyond these is refused before anything sizes a buffer from it.
MAX_ON_CHIP_BYTES = 64 << 20  # local or accumulator memory (the largest parts have tens of MiB)
MAX_DRAM_BYTES = 4 << 30      # each DRAM window: a Zynq-7000 AXI port addresses 32 bits


def _check_fields(raw: Dict[str, Any], where: str) -> None:
    if raw["data_type"] not in DATA_TYPES:
        raise ArchError("%s: field 'data_type' is %r; must be one of %s" % (
            where, raw["data_type"], ", ".join(DATA_TYPES)))
    for key in ARCH_FIELDS[1:]:
        value = raw[key]
        top, meaning = _LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArchError("%s: field %r is %r; must be an integer (%s)" % (
                where, key, value, meaning))
        if not 1 <= value <= top:
            raise ArchError("%s: field %r is %d; must be in 1..%d (%s)" % (
                where, key, value, top, meaning))


def _check_capacity(raw: Dict[str, Any], where: str) -> None:
    """Memories a real part can hold (Tensil's ISA allows more; a file may not ask for it)."""
    vector_bytes = raw["array_size"] * _SIZE_BYTES[raw["data_type"]]
    for key, most, what in (("local_depth", MAX_ON_CHIP_BYTES, "on-chip memory"),
                            ("accumulator_depth", MAX_ON_CHIP_BYTES, "on-chip memory"),
                            ("dram0_depth", MAX_DRAM_BYTES, "a 32-bit DRAM window"),
                            ("dram1_depth", MAX_DRAM_BYTES, "a 32-bit DRAM window")):
        if raw[key] * vector_bytes > most:
            raise ArchError("%s: field %r is %d vectors of %d bytes, %d MiB: more than %s holds (%d MiB)" % (
                where, key, raw[key], vector_bytes, raw[key] * vector_bytes >> 20, what, most >> 20))


def parse_tarch(text: Union[str, bytes], where: str = "<tarch>") -> Architecture:
    try:  # bounded: a deep or huge document is refused by a scan, never by a RecursionError
        raw = sj.loads(text, sj.Limits(max_bytes=1 << 16, max_depth=4))
    except JSONError as exc:
        raise ArchError("%s: not JSON (%s)" % (where, exc)) from None
    return Architecture.from_dict(raw, where)


def load_tarch(path: Union[str, pathlib.Path]) -> Architecture:
    """Read and validate a `.tarch` file."""
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArchError("%s: cannot read the architecture file (%s)" % (path, exc.strerror)) from None
    if len(data) > 1 << 16:
        raise ArchError("%s: %d bytes is too large for a .tarch" % (path, len(data)))
    return parse_tarch(data, str(path))


def log2_ceil(n: int) -> int:
    """Bits needed to address n items (Tensil's log2Ceil: bitlength(n - 1))."""
    if n < 1:
        raise ValueError("log2_ceil needs n >= 1, got %d" % n)
    return (n - 1).bit_length()


def _round8(bits: int) -> int:
    return -(-bits // 8) * 8


@dataclasses.dataclass(frozen=True)
class InstructionLayout:
    """Every width of the instruction word of one architecture (bits unless named bytes).

    The word, from its least significant bit: operand0 (address, stride, padding), operand1
    (address, stride, padding), operand2 (address/size or SIMD sub-instruction, padding),
    then the header byte (flags in the low nibble, opcode in the high nibble).
    """

    tid_bits: int
    header_bits: int
    local_bits: int
    dram0_bits: int
    dram1_bits: int
    accumulator_bits: int
    stride0_bits: int
    stride1_bits: int
    simd_op_bits: int
    simd_operand_bits: int
    simd_instruction_bits: int
    operand0_address_bits: int
    operand0_bits: int
    operand0_padding: int
    operand1_address_bits: int
    operand1_bits: int
    operand1_padding: int
    operand2_address_bits: int
    operand2_bits: int
    operand2_padding: int
    instruction_bytes: int

    @property
    def operands_bits(self) -> int:
        return self.operand0_bits + self.operand1_bits + self.operand2_bits


@functools.lru_cache(maxsize=64)
def instruction_layout(arch: Architecture) -> InstructionLayout:
    """Tensil's InstructionLayout for `arch` (common/src/tensil/InstructionLayout.scala)."""
    tid = log2_ceil(arch.number_of_threads)
    header = _round8(tid + 3 + tid)  # Tensil's formula: 8 bits for 1 or 2 threads
    local, acc = log2_ceil(arch.local_depth), log2_ceil(arch.accumulator_depth)
    dram0, dram1 = log2_ceil(arch.dram0_depth), log2_ceil(arch.dram1_depth)
    stride0, stride1 = log2_ceil(arch.stride0_depth), log2_ceil(arch.stride1_depth)
    simd_op, simd_operand = log2_ceil(16), log2_ceil(arch.simd_registers_depth + 1)
    simd_instruction = 3 * simd_operand + simd_op
    op0_address = max(local, acc)
    op0 = _round8(op0_address + stride0)
    op1_address = max(local, dram0, dram1, acc)
    op1 = _round8(op1_address + stride1)
    op2_address = max(min(local, acc), min(local, dram0), min(local, dram1), simd_instruction)
    op2 = _round8(op2_address)
    return InstructionLayout(
        tid_bits=tid, header_bits=header, local_bits=local, dram0_bits=dram0, dram1_bits=dram1,
        accumulator_bits=acc, stride0_bits=stride0, stride1_bits=stride1, simd_op_bits=simd_op,
        simd_operand_bits=simd_operand, simd_instruction_bits=simd_instruction,
        operand0_address_bits=op0_address, operand0_bits=op0,
        operand0_padding=op0 - op0_address - stride0,
        operand1_address_bits=op1_address, operand1_bits=op1,
        operand1_padding=op1 - op1_address - stride1,
        operand2_address_bits=op2_address, operand2_bits=op2, operand2_padding=op2 - op2_address,
        instruction_bytes=(header + op0 + op1 + op2) // 8)


def _cell(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def format_table(title: str, rows: Sequence[Tuple[Any, ...]]) -> str:
    """A table in the shape of Tensil's TablePrinter: rules, a title, `name:` and value columns."""
    cells: List[List[str]] = [[str(row[0]) + ":"] + [_cell(v) for v in row[1:]] for row in rows]
    columns = max(len(r) for r in cells)
    widths = [max(len(r[i]) + 1 for r in cells if i < len(r)) for i in range(columns)]
    rule = "-" * max(sum(widths), len(title))
    lines = [rule, title, rule]
    for row in cells:
        lines.append("".join(c.ljust(widths[i]) if i < len(row) - 1 else c
                             for i, c in enumerate(row)))
    lines.append(rule)
    return "\n".join(lines) + "\n"


def summary(arch: Architecture, title: str = "ARCHITECTURE SUMMARY") -> str:
    """Tensil's architecture summary lines (InstructionLayout.addTableLines), with bytes added.

    Tensil prints the DRAM1 address bits on the DRAM0 line (a copy-paste slip); this prints
    each memory's own bits.
    """
    lay = instruction_layout(arch)
    n, size = arch.array_size, arch.scalar_bytes

    def memory(name: str, depth: int, bits: int) -> Tuple[Any, ...]:
        return ("%s memory size (vectors/scalars/bytes/bits)" % name, depth, depth * n,
                depth * n * size, bits)

    rows = [
        ("Data type", arch.data_type),
        ("Array size", n),
        memory("DRAM0", arch.dram0_depth, lay.dram0_bits),
        memory("DRAM1", arch.dram1_depth, lay.dram1_bits),
        memory("Local", arch.local_depth, lay.local_bits),
        memory("Accumulator", arch.accumulator_depth, lay.accumulator_bits),
        ("Stride #0 size (bits)", lay.stride0_bits),
        ("Stride #1 size (bits)", lay.stride1_bits),
        ("Operand #0 size (address/stride/padding bits)", lay.operand0_bits,
         lay.operand0_address_bits, lay.stride0_bits, lay.operand0_padding),
        ("Operand #1 size (address/stride/padding bits)", lay.operand1_bits,
         lay.operand1_address_bits, lay.stride1_bits, lay.operand1_padding),
        ("Operand #2 size (address/padding bits)", lay.operand2_bits, lay.operand2_address_bits,
         lay.operand2_padding),
        ("Instruction size (bytes)", lay.instruction_bytes),
    ]
    return format_table(title, rows)
