"""The Tensil instruction set: instructions as small dataclasses, `.tprog` bytes and `.tasm` text.

Every width comes from `instruction_layout(arch)`. An instruction word is, from its least
significant bit: operand0 (address, stride, padding), operand1 (address, stride, padding),
operand2 (size or SIMD sub-instruction, padding), then the header byte (flags in the low
nibble, opcode in the high nibble). `.tprog` files are the words back to back,
little-endian (so the header is the last byte of each instruction).

Opcodes decode on 4 bits like the RTL (Configure = 0xF; Tensil's compiler calls it 0x7 and
never emits it). Sizes are "vectors - 1"; strides are exponents: step 2^stride vectors.

`.tasm`, one instruction a line, `;` starts a comment:

    NoOp
    MatMul local=0x100 acc=0x10 size=7
    MatMul local=0x0 acc=0x7ff:2 size=3 accumulate zeroes     ; acc step 2 (stride 1)
    DataMove dram0->local local=0x0 dram0=0x12345 size=1023
    DataMove local->acc local=0x1000 acc=0x5 size=15 accumulate
    LoadWeights local=0x200 size=8
    LoadWeights local=0x0 size=0 zeroes
    SIMD r1=Zero(in,in)
    SIMD out=Max(in,r1) wacc=0x20 racc=0x10 read write
    Configure dram0_offset=0x1234

`format_instruction` writes the canonical line and `parse_instruction` reads it back to the
same instruction; both check it against the architecture like the encoder does.

`KIND_FIELDS` is the one description of each kind's fields: which operand holds which address
(and stride, and what memory it indexes), where the size sits, the flag bits, and when the
instruction reads or writes what a field addresses. Checking, encoding, both decoders, the text
form and `footprint` (what an instruction touches: the emulator's accumulator port, the
compiler's local-memory rule, the driver's DRAM reach via `extent`) all read it.

Decoding has two policies. `strict=True` (the default, for untrusted `.tprog` files) refuses
every word whose meaning on the RTL differs from its face value: reserved opcodes and DataMove
kinds, flag bits the RTL ignores, non-zero padding, addresses past a memory. `strict=False`
decodes every word the way the RTL's decoder does (checked on the 12x12 RTL in co-simulation):
flag bits outside the defined ones are ignored (MatMul 0x4 is a plain MatMul, LoadWeights 0x3
is Zeroes), padding and bits above an address are dropped (addresses wrap modulo the memory's
address bits, sizes modulo 2^operand2_address_bits, LoadWeights' size modulo
2^local_bits), NoOp ignores its operands, Configure its flags and the bits above argument
bit 31, and reserved opcodes, DataMove kinds and Configure registers become `Skipped`, which
the RTL consumes without effect.
"""

import dataclasses
import enum
import functools
import re
import types
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from .arch import Architecture, InstructionLayout, instruction_layout
from .errors import ProgramError

__all__ = ["CONFIG_VALUE_BITS", "SIMD_OPS_USING_RIGHT", "ConfigRegister", "Configure",
           "DataMove", "DataMoveKind", "Instruction", "LoadWeights", "MatMul", "NoOp", "Opcode",
           "SIMD", "SimdOp", "Skipped", "KIND_FIELDS", "AddressField", "KindFields", "Touch", "extent", "footprint",
           "check_instruction", "decode_instruction", "decode_program", "encode_instruction",
           "encode_program", "format_instruction", "format_program", "iter_program", "mnemonic",
           "parse_instruction", "parse_program", "skipped_reason"]


class Opcode(enum.IntEnum):
    NOOP = 0x0
    MATMUL = 0x1
    DATAMOVE = 0x2
    LOAD_WEIGHTS = 0x3
    SIMD = 0x4
    CONFIGURE = 0xF   # 0x5 (LoadLUT, docs only) .. 0xE are reserved


class DataMoveKind(enum.IntEnum):
    DRAM0_TO_LOCAL = 0x0
    LOCAL_TO_DRAM0 = 0x1
    DRAM1_TO_LOCAL = 0x2
    LOCAL_TO_DRAM1 = 0x3
    ACC_TO_LOCAL = 0xC
    LOCAL_TO_ACC = 0xD
    LOCAL_TO_ACC_ACCUMULATE = 0xF   # 0x4..0xB and 0xE are reserved


class SimdOp(enum.IntEnum):
    NOOP = 0
    ZERO = 1
    MOVE = 2
    NOT = 3
    AND = 4
    OR = 5
    INCREMENT = 6
    DECREMENT = 7
    ADD = 8
    SUBTRACT = 9
    MULTIPLY = 10
    ABS = 11
    GREATER_THAN = 12
    GREATER_THAN_EQUAL = 13
    MIN = 14
    MAX = 15


# The ALU ops whose result depends on the right source (the others ignore it).
SIMD_OPS_USING_RIGHT = frozenset({SimdOp.AND, SimdOp.OR, SimdOp.ADD, SimdOp.SUBTRACT,
                                  SimdOp.MULTIPLY, SimdOp.GREATER_THAN,
                                  SimdOp.GREATER_THAN_EQUAL, SimdOp.MIN, SimdOp.MAX})


class ConfigRegister(enum.IntEnum):
    DRAM0_OFFSET = 0x0      # DRAM0 base = value << 16 (64 KiB units)
    DRAM0_CACHE = 0x1       # AXI AxCACHE of DRAM0
    DRAM1_OFFSET = 0x4
    DRAM1_CACHE = 0x5
    TIMEOUT = 0x8           # decoder timeout (debug)
    TRACEPOINT = 0x9
    PROGRAM_COUNTER = 0xA
    SAMPLE_INTERVAL = 0xB


# The RTL decodes Configure from the low 32 argument bits: register [3:0], value [31:4];
# each register keeps this many bits of the value (Decoder.scala).
CONFIG_VALUE_BITS = {
    ConfigRegister.DRAM0_OFFSET: 16, ConfigRegister.DRAM0_CACHE: 4,
    ConfigRegister.DRAM1_OFFSET: 16, ConfigRegister.DRAM1_CACHE: 4,
    ConfigRegister.TIMEOUT: 16, ConfigRegister.TRACEPOINT: 28,
    ConfigRegister.PROGRAM_COUNTER: 28, ConfigRegister.SAMPLE_INTERVAL: 16,
}
_CONFIG_ARGUMENT_BITS = 32


@dataclasses.dataclass(frozen=True)
class NoOp:
    """Consumed at once; eight zero bytes on pynqz1."""


@dataclasses.dataclass(frozen=True)
class MatMul:
    """acc[acc + i*2^acc_stride] (+)= bias + local[local + i*2^local_stride] x W, i = 0..size.

    With `zeroes` the input vectors are zeros (the result is the bias row) and local is not read.
    """

    local_address: int
    acc_address: int
    size: int
    local_stride: int = 0
    acc_stride: int = 0
    accumulate: bool = False
    zeroes: bool = False


@dataclasses.dataclass(frozen=True)
class DataMove:
    """Copies size+1 vectors between local memory and DRAM0, DRAM1 or the accumulators."""

    kind: DataMoveKind
    local_address: int
    address: int
    size: int
    local_stride: int = 0
    stride: int = 0


@dataclasses.dataclass(frozen=True)
class LoadWeights:
    """Pushes local[a + size*step], ..., local[a] into the array (zero vectors with `zeroes`)."""

    local_address: int
    size: int
    local_stride: int = 0
    zeroes: bool = False


@dataclasses.dataclass(frozen=True)
class SIMD:
    """One ALU op per lane: sources/dest 0 = the accumulator input/output, k = register k."""

    op: SimdOp
    left: int = 0
    right: int = 0
    dest: int = 0
    write_address: int = 0
    read_address: int = 0
    read: bool = False
    write: bool = False
    accumulate: bool = False


@dataclasses.dataclass(frozen=True)
class Configure:
    register: ConfigRegister
    value: int


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A word the RTL consumes without effect: a reserved opcode (0x5..0xE), a DataMove of a
    reserved kind (0x4..0xB, 0xE) or a Configure of a reserved register. Only the lenient
    decoder (`strict=False`) produces it; it encodes back to the same word."""

    opcode: int
    flags: int
    arguments: int


Instruction = Union[NoOp, MatMul, DataMove, LoadWeights, SIMD, Configure, Skipped]
_DIRECTIONS = {
    DataMoveKind.DRAM0_TO_LOCAL: ("dram0->local", "dram0"),
    DataMoveKind.LOCAL_TO_DRAM0: ("local->dram0", "dram0"),
    DataMoveKind.DRAM1_TO_LOCAL: ("dram1->local", "dram1"),
    DataMoveKind.LOCAL_TO_DRAM1: ("local->dram1", "dram1"),
    DataMoveKind.ACC_TO_LOCAL: ("acc->local", "acc"),
    DataMoveKind.LOCAL_TO_ACC: ("local->acc", "acc"),
    DataMoveKind.LOCAL_TO_ACC_ACCUMULATE: ("local->acc", "acc"),
}


def mnemonic(instruction: Instruction) -> str:
    """The kind name used in counts and estimates, e.g. `DataMove(dram0->local)`."""
    if isinstance(instruction, DataMove):
        name = _DIRECTIONS[instruction.kind][0]
        if instruction.kind == DataMoveKind.LOCAL_TO_ACC_ACCUMULATE:
            name += ",accumulate"
        return "DataMove(%s)" % name
    return type(instruction).__name__


# --------------------------------------------------------------------------- the field table
#
# Where each field of each kind sits in the word, what it addresses, and when the instruction
# reads or writes it: the one description that checking, encoding, both decoders, the `.tasm`
# text and `footprint` read. Configure and Skipped are one argument field (below), and SIMD's
# operand2 is its sub-instruction (`_simd_sub`).

Access = str  # "", "r", "w" or "rw": what an instruction does to the vectors a field addresses


@dataclasses.dataclass(frozen=True)
class AddressField:
    """An address in the low bits of operand0 or operand1; above it a stride field
    (`stride`), or nothing (its bits must be zero; `what` names the address in messages)."""

    address: str
    stride: Optional[str]
    memories: Tuple[str, ...]        # what it may address: "local", "acc", "dram0", "dram1"
    memory: Callable[[Any], str]     # which of them, given the instruction
    access: Callable[[Any], Access]  # what the instruction does there ("" when it touches nothing)
    what: str


@dataclasses.dataclass(frozen=True)
class KindFields:
    """The fields of one instruction kind: its address operands (operand0, operand1), where its
    size sits (operand 1 or 2, None without one) and its flag bits (bit 0 first); DataMove's flag
    nibble is its kind instead."""

    cls: type
    opcode: Opcode
    operands: Tuple[Optional[AddressField], Optional[AddressField]]
    size_operand: Optional[int]
    flags: Tuple[str, ...]


def _local(access: Callable[[Any], Access]) -> AddressField:
    return AddressField("local_address", "local_stride", ("local",), lambda i: "local", access, "local address")


def _datamove_memory(i: "DataMove") -> str:
    return _DIRECTIONS[i.kind][1]


def _datamove_local(i: "DataMove") -> Access:
    return "r" if i.kind in (DataMoveKind.LOCAL_TO_DRAM0, DataMoveKind.LOCAL_TO_DRAM1,
                             DataMoveKind.LOCAL_TO_ACC, DataMoveKind.LOCAL_TO_ACC_ACCUMULATE) else "w"


def _datamove_other(i: "DataMove") -> Access:
    if i.kind == DataMoveKind.LOCAL_TO_ACC_ACCUMULATE:
        return "rw"
    return "w" if _datamove_local(i) == "r" else "r"


KIND_FIELDS: Dict[type, KindFields] = {k.cls: k for k in (
    KindFields(NoOp, Opcode.NOOP, (None, None), None, ()),
    KindFields(MatMul, Opcode.MATMUL, (
        _local(lambda i: "" if i.zeroes else "r"),
        AddressField("acc_address", "acc_stride", ("acc",), lambda i: "acc",
                     lambda i: "rw" if i.accumulate else "w", "acc address")),
        2, ("accumulate", "zeroes")),
    KindFields(DataMove, Opcode.DATAMOVE, (
        _local(_datamove_local),
        AddressField("address", "stride", ("dram0", "dram1", "acc"), _datamove_memory, _datamove_other,
                     "address")), 2, ()),
    KindFields(LoadWeights, Opcode.LOAD_WEIGHTS, (_local(lambda i: "" if i.zeroes else "r"), None), 1,
               ("zeroes",)),
    KindFields(SIMD, Opcode.SIMD, (
        AddressField("write_address", None, ("acc",), lambda i: "acc",
                     lambda i: ("rw" if i.accumulate else "w") if i.write else "", "write address"),
        AddressField("read_address", None, ("acc",), lambda i: "acc", lambda i: "r" if i.read else "",
                     "read address")), None, ("read", "write", "accumulate")),
)}
_BY_OPCODE: Dict[int, KindFields] = {int(k.opcode): k for k in KIND_FIELDS.values()}


class Touch(NamedTuple):
    """Vectors an instruction reads or writes: `vectors` of them in `memory` from `address`, a
    step of 2^stride apart."""

    memory: str
    address: int
    vectors: int
    stride: int
    access: Access

    @property
    def last(self) -> int:
        """The furthest vector touched."""
        return self.address + (self.vectors - 1) * (1 << self.stride)


def footprint(instruction: Instruction) -> Tuple[Touch, ...]:
    """What `instruction` reads and writes, from the field table (Configure, NoOp and Skipped
    words touch no memory)."""
    kind = KIND_FIELDS.get(type(instruction))
    if kind is None:
        return ()
    count = instruction.size + 1 if kind.size_operand is not None else 1  # type: ignore[union-attr]
    touches = []
    for field in kind.operands:
        if field is None:
            continue
        access = field.access(instruction)
        if access:
            memory = field.memories[0] if len(field.memories) == 1 else field.memory(instruction)
            stride = getattr(instruction, field.stride) if field.stride else 0
            touches.append(Touch(memory, getattr(instruction, field.address), count, stride, access))
    return tuple(touches)


def extent(program: Iterable[Instruction], memory: str) -> int:
    """How many vectors of `memory`, from vector 0, a program reaches (its furthest + 1)."""
    kinds = tuple(cls for cls, kind in KIND_FIELDS.items()
                  if any(field is not None and memory in field.memories for field in kind.operands))
    far = 0
    for instruction in program:
        if isinstance(instruction, kinds):
            for touch in footprint(instruction):
                if touch.memory == memory and touch.last >= far:
                    far = touch.last + 1
    return far


def _simd_sub(instruction: "SIMD", lay: InstructionLayout) -> int:
    """SIMD's operand2: op, left, right, dest from the most significant end."""
    b = lay.simd_operand_bits
    return (instruction.dest | instruction.right << b | instruction.left << 2 * b
            | int(instruction.op) << 3 * b)


def _simd_from_sub(sub: int, lay: InstructionLayout, **fields: Any) -> "SIMD":
    b = lay.simd_operand_bits
    mask = (1 << b) - 1
    return SIMD(SimdOp(sub >> 3 * b & 0xF), left=sub >> 2 * b & mask, right=sub >> b & mask,
                dest=sub & mask, **fields)


def _flag_text(kind: KindFields) -> str:
    return ", ".join("bit %d %s" % (bit, name) for bit, name in enumerate(kind.flags))


# --------------------------------------------------------------------------- checking

def _fits(name: str, value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ProgramError("%s is %r; must be an integer in 0..%d (%d bits)" % (
            name, value, (1 << bits) - 1, bits))


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ProgramError("%s is %r; must be True or False" % (name, value))


class _Widths:
    """The widths of one architecture's fields: of the word (`operand_address`, `stride`) and
    of what the RTL keeps (`memory`: an address's bits in the memory it indexes); the depths."""

    def __init__(self, arch: Architecture):
        self.arch = arch
        self.depths = {"local": arch.local_depth, "acc": arch.accumulator_depth,
                       "dram0": arch.dram0_depth, "dram1": arch.dram1_depth}
        self.lay = lay = instruction_layout(arch)
        self.memory = {"local": lay.local_bits, "acc": lay.accumulator_bits,
                       "dram0": lay.dram0_bits, "dram1": lay.dram1_bits}
        self.operand_address = (lay.operand0_address_bits, lay.operand1_address_bits)
        self.stride = (lay.stride0_bits, lay.stride1_bits)
        self.stride_depth = (arch.stride0_depth, arch.stride1_depth)
        self.size = {1: lay.local_bits, 2: lay.operand2_address_bits}  # LoadWeights' size: local_bits


_widths = functools.lru_cache(maxsize=16)(_Widths)  # one per architecture: checks run per instruction


def check_instruction(instruction: Instruction, arch: Architecture, strict: bool = True) -> None:
    """Raise ProgramError naming the field when `instruction` does not fit `arch`.

    `strict=False` accepts what the lenient decoder produces: every field within the width the
    RTL keeps of it (addresses may lie past a memory whose depth is not a power of two;
    strides up to the stride field's width) and `Skipped` words.
    """
    _check(instruction, _widths(arch), strict)


def _check(instruction: Instruction, widths: "_Widths", strict: bool) -> None:
    arch = widths.arch
    name = type(instruction).__name__
    if arch.number_of_threads != 1:
        raise ProgramError("%s: only 1-thread architectures have an instruction encoding the "
                           "RTL decodes (number_of_threads is %d)" % (name, arch.number_of_threads))
    kind = KIND_FIELDS.get(type(instruction))
    if kind is None:
        _check_arguments(instruction, arch, strict)
        return
    if isinstance(instruction, DataMove) and not isinstance(instruction.kind, DataMoveKind):
        raise ProgramError("DataMove.kind is %r; must be a DataMoveKind" % (instruction.kind,))
    if isinstance(instruction, SIMD):
        _check_simd_sub(instruction, arch)
    for number, field in enumerate(kind.operands):
        if field is None:
            continue
        memory = field.memory(instruction)
        _fits("%s.%s" % (name, field.address), getattr(instruction, field.address),
              widths.operand_address[number] if strict else widths.memory[memory])
        if field.stride is not None:
            label, value = "%s.%s" % (name, field.stride), getattr(instruction, field.stride)
            if not strict:
                _fits(label, value, widths.stride[number])
            elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < widths.stride_depth[number]:
                raise ProgramError("%s is %r; must be in 0..%d (the architecture has %d strides)" % (
                    label, value, widths.stride_depth[number] - 1, widths.stride_depth[number]))
    if kind.size_operand is not None:
        _fits(name + ".size", instruction.size, widths.size[kind.size_operand])  # type: ignore[union-attr]
    for flag in kind.flags:
        _flag("%s.%s" % (name, flag), getattr(instruction, flag))
    if strict:
        depths = widths.depths
        for field in kind.operands:
            if field is not None and field.access(instruction):
                memory, address = field.memory(instruction), getattr(instruction, field.address)
                if address >= depths[memory]:
                    raise ProgramError("%s: %s address %d exceeds %s depth %d" % (
                        name, memory, address, memory, depths[memory]))


def _check_simd_sub(instruction: "SIMD", arch: Architecture) -> None:
    if not isinstance(instruction.op, SimdOp):
        raise ProgramError("SIMD.op is %r; must be a SimdOp" % (instruction.op,))
    for field in ("left", "right", "dest"):
        value = getattr(instruction, field)
        if isinstance(value, bool) or not isinstance(value, int) or not (
                0 <= value <= arch.simd_registers_depth):
            raise ProgramError("SIMD.%s is %r; must be 0 (accumulator %s) or a register 1..%d" % (
                field, value, "output" if field == "dest" else "input",
                arch.simd_registers_depth))


def _check_arguments(instruction: Instruction, arch: Architecture, strict: bool) -> None:
    """Configure and Skipped: one argument field."""
    if isinstance(instruction, Configure):
        if not isinstance(instruction.register, ConfigRegister):
            raise ProgramError("Configure.register is %r; must be a ConfigRegister"
                               % (instruction.register,))
        _fits("Configure.value (%s)" % instruction.register.name.lower(), instruction.value,
              CONFIG_VALUE_BITS[instruction.register])
    elif isinstance(instruction, Skipped):
        if strict:
            raise ProgramError("Skipped (a word the RTL ignores) is refused by the strict "
                               "policy: %s" % skipped_reason(instruction))
        _fits("Skipped.arguments", instruction.arguments, instruction_layout(arch).operands_bits)
        _fits("Skipped.flags", instruction.flags, 4)
        if skipped_reason(instruction) is None:
            raise ProgramError("Skipped: opcode 0x%X flags 0x%X is an instruction the RTL "
                               "executes, not one it skips" % (instruction.opcode,
                                                               instruction.flags))
    else:
        raise ProgramError("not a Tensil instruction: %r" % (instruction,))


def skipped_reason(word: Skipped) -> Optional[str]:
    """Why the RTL skips this word, or None when it would execute it."""
    if isinstance(word.opcode, bool) or not isinstance(word.opcode, int):
        return None
    if 0x5 <= word.opcode <= 0xE:
        return "reserved opcode 0x%X" % word.opcode
    if word.opcode == Opcode.DATAMOVE and word.flags not in set(DataMoveKind):
        return "reserved DataMove kind 0x%X" % word.flags
    if word.opcode == Opcode.CONFIGURE and word.arguments & 0xF not in set(ConfigRegister):
        return "Configure of reserved register 0x%X" % (word.arguments & 0xF)
    return None


# --------------------------------------------------------------------------- encoding

def _operands(instruction: Instruction, widths: _Widths) -> Tuple[List[int], int]:
    """([operand0, operand1, operand2], flags) of a checked instruction."""
    lay = widths.lay
    kind = KIND_FIELDS.get(type(instruction))
    if kind is None:  # Configure, Skipped: one argument field
        if isinstance(instruction, Configure):
            arguments, flags = int(instruction.register) | instruction.value << 4, 0
        else:
            arguments, flags = instruction.arguments, instruction.flags  # type: ignore[union-attr]
        o0, o1 = lay.operand0_bits, lay.operand1_bits
        return [arguments & ((1 << o0) - 1), arguments >> o0 & ((1 << o1) - 1), arguments >> (o0 + o1)], flags
    fields = [0, 0, 0]
    for number, field in enumerate(kind.operands):
        if field is not None:
            stride = getattr(instruction, field.stride) if field.stride else 0
            fields[number] = getattr(instruction, field.address) | stride << widths.operand_address[number]
    if kind.size_operand is not None:
        fields[kind.size_operand] = instruction.size  # type: ignore[union-attr]
    if isinstance(instruction, SIMD):
        fields[2] = _simd_sub(instruction, lay)
    if isinstance(instruction, DataMove):
        return fields, int(instruction.kind)
    return fields, sum(int(getattr(instruction, flag)) << bit for bit, flag in enumerate(kind.flags))


def encode_instruction(instruction: Instruction, arch: Architecture, strict: bool = True) -> bytes:
    """The instruction's bytes (little-endian), after `check_instruction(.., strict)`."""
    return _encode(instruction, _widths(arch), strict)


def _encode(instruction: Instruction, widths: "_Widths", strict: bool) -> bytes:
    _check(instruction, widths, strict)
    lay = widths.lay
    (op0, op1, op2), flags = _operands(instruction, widths)
    if isinstance(instruction, Skipped):
        opcode = instruction.opcode
    elif isinstance(instruction, Configure):
        opcode = Opcode.CONFIGURE
    else:
        opcode = KIND_FIELDS[type(instruction)].opcode
    header = opcode << 4 | flags
    word = (op0 | op1 << lay.operand0_bits | op2 << (lay.operand0_bits + lay.operand1_bits)
            | header << lay.operands_bits)
    return word.to_bytes(lay.instruction_bytes, "little")


def encode_program(instructions: Sequence[Instruction], arch: Architecture,
                   strict: bool = True) -> bytes:
    out = bytearray()
    widths = _widths(arch)
    for i, instruction in enumerate(instructions):
        try:
            out += _encode(instruction, widths, strict)
        except ProgramError as exc:
            raise ProgramError("instruction %d: %s" % (i, exc)) from None
    return bytes(out)


# --------------------------------------------------------------------------- decoding

def decode_instruction(data: bytes, arch: Architecture, strict: bool = True) -> Instruction:
    """Decode one instruction word; ProgramError says which bits are wrong.

    `strict=False` decodes the word as the RTL's decoder does and never fails on a whole word
    (see the module docstring).
    """
    return _decode(data, _widths(arch), strict)


def _decode(data: bytes, widths: "_Widths", strict: bool) -> Instruction:
    lay = widths.lay
    if len(data) != lay.instruction_bytes:
        raise ProgramError("truncated instruction: %d of %d bytes" % (
            len(data), lay.instruction_bytes))
    word = int.from_bytes(data, "little")
    o0, o1, o2 = lay.operand0_bits, lay.operand1_bits, lay.operand2_bits
    operands = [word & ((1 << o0) - 1), word >> o0 & ((1 << o1) - 1), word >> (o0 + o1) & ((1 << o2) - 1)]
    header = word >> (o0 + o1 + o2)
    opcode, flags = header >> 4, header & 0xF
    instruction = (_decode_strict if strict else _decode_as_rtl)(opcode, flags, operands, widths)
    _check(instruction, widths, strict)
    return instruction


def _arguments(operands: List[int], lay: InstructionLayout) -> int:
    return operands[0] | operands[1] << lay.operand0_bits | operands[2] << (lay.operand0_bits + lay.operand1_bits)


def _decode_strict(opcode: int, flags: int, operands: List[int], widths: _Widths) -> Instruction:
    """The word at face value: every bit that the RTL would read otherwise is refused."""
    lay = widths.lay
    if opcode == Opcode.CONFIGURE:
        if flags:
            raise ProgramError("Configure: non-zero flags 0x%X" % flags)
        args = _arguments(operands, lay)
        if args >> _CONFIG_ARGUMENT_BITS:
            raise ProgramError("Configure: non-zero bits above argument bit 31")
        try:
            register = ConfigRegister(args & 0xF)
        except ValueError:
            raise ProgramError("Configure: reserved register 0x%X" % (args & 0xF)) from None
        return Configure(register, args >> 4 & ((1 << 28) - 1))
    kind = _BY_OPCODE.get(opcode)
    if kind is None:
        raise ProgramError("reserved opcode 0x%X" % opcode)
    name = kind.cls.__name__
    values: Dict[str, Any] = {}
    if kind.cls is DataMove:
        try:
            values["kind"] = DataMoveKind(flags)
        except ValueError:
            raise ProgramError("reserved DataMove kind 0x%X" % flags) from None
    elif flags >> len(kind.flags):
        if not kind.flags:
            raise ProgramError("%s: non-zero flags 0x%X" % (name, flags))
        raise ProgramError("%s flags 0x%X out of range (%s)" % (name, flags, _flag_text(kind)))
    else:
        values.update((flag, bool(flags >> bit & 1)) for bit, flag in enumerate(kind.flags))
    if kind.cls is NoOp and any(operands):
        raise ProgramError("NoOp: non-zero operand bits")
    address_bits, stride_bits = widths.operand_address, widths.stride
    for number, field in enumerate(kind.operands):
        raw = operands[number]
        if field is None:
            continue
        values[field.address] = raw & ((1 << address_bits[number]) - 1)
        above = raw >> address_bits[number]
        if field.stride is None:
            if above:
                raise ProgramError("%s: non-zero bits above the %s in operand%d" % (name, field.what, number))
            continue
        values[field.stride] = above & ((1 << stride_bits[number]) - 1)
        if above >> stride_bits[number]:
            raise ProgramError("%s: non-zero operand%d padding bits" % (name, number))
    if kind.size_operand is not None:
        bits = widths.size[kind.size_operand]
        raw = operands[kind.size_operand]
        values["size"] = raw & ((1 << bits) - 1)
        if raw >> bits:
            raise ProgramError("%s: non-zero %s" % (name, "operand2 padding bits" if kind.size_operand == 2 else
                                                    "bits above the size in operand1 (the RTL keeps %d bits)" % bits))
    if kind.cls is SIMD:
        if operands[2] >> lay.simd_instruction_bits:
            raise ProgramError("SIMD: non-zero bits above the sub-instruction in operand2")
        return _simd_from_sub(operands[2], lay, **values)
    for number in range(3):
        used = (number < 2 and kind.operands[number] is not None) or kind.size_operand == number
        if kind.cls is not NoOp and not used and operands[number]:
            raise ProgramError("%s: non-zero operand%d (unused by %s)" % (name, number, name))
    return kind.cls(**values)


def _decode_as_rtl(opcode: int, flags: int, operands: List[int], widths: _Widths) -> Instruction:
    """What the RTL's decoder makes of a word (Decoder.scala; checked in co-simulation): each
    field cut to the bits the RTL keeps, undefined flag bits ignored, words it does not execute
    `Skipped`."""
    def low(value: int, bits: int) -> int:
        return value & ((1 << bits) - 1)

    lay = widths.lay
    arguments = _arguments(operands, lay)
    skipped = Skipped(opcode, flags, arguments)
    if opcode == Opcode.CONFIGURE:
        args = low(arguments, _CONFIG_ARGUMENT_BITS)
        if args & 0xF not in set(ConfigRegister):
            return skipped
        register = ConfigRegister(args & 0xF)
        return Configure(register, low(args >> 4, CONFIG_VALUE_BITS[register]))
    kind = _BY_OPCODE.get(opcode)
    if kind is None:
        return skipped
    values: Dict[str, Any] = {flag: bool(flags >> bit & 1) for bit, flag in enumerate(kind.flags)}
    if kind.cls is DataMove:
        if flags not in set(DataMoveKind):
            return skipped
        values["kind"] = DataMoveKind(flags)
    known = types.SimpleNamespace(**values)  # DataMove's memory follows its kind
    for number, field in enumerate(kind.operands):
        if field is not None:
            values[field.address] = low(operands[number], widths.memory[field.memory(known)])
            if field.stride is not None:
                values[field.stride] = low(operands[number] >> widths.operand_address[number], widths.stride[number])
    if kind.size_operand is not None:
        values["size"] = low(operands[kind.size_operand], widths.size[kind.size_operand])
    if kind.cls is SIMD:
        return _simd_from_sub(operands[2], lay, **values)
    return kind.cls(**values)


def iter_program(data: bytes, arch: Architecture, strict: bool = True) -> Iterator[Instruction]:
    """Decode `.tprog` bytes one instruction at a time; errors name the byte offset."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProgramError("a program is bytes, got %s" % type(data).__name__)
    data = bytes(data)
    widths = _widths(arch)
    step = widths.lay.instruction_bytes
    for offset in range(0, len(data), step):
        chunk = data[offset:offset + step]
        try:
            yield _decode(chunk, widths, strict)
        except ProgramError as exc:
            raise ProgramError("offset %d (0x%X, instruction %d): %s" % (
                offset, offset, offset // step, exc)) from None


def decode_program(data: bytes, arch: Architecture, strict: bool = True) -> List[Instruction]:
    """All instructions of `.tprog` bytes; `strict=False` decodes like the RTL."""
    return list(iter_program(data, arch, strict))


# --------------------------------------------------------------------------- assembly text

def _operand(address: int, stride: int) -> str:
    return "0x%x" % address + (":%d" % (1 << stride) if stride else "")


def _source(value: int) -> str:
    return "in" if value == 0 else "r%d" % value


def format_instruction(instruction: Instruction, arch: Optional[Architecture] = None,
                       strict: bool = True) -> str:
    """The canonical `.tasm` line of an instruction (checked against `arch` when given)."""
    if arch is not None:
        check_instruction(instruction, arch, strict)
    kind = KIND_FIELDS.get(type(instruction))
    if isinstance(instruction, SIMD):
        dest = "out" if instruction.dest == 0 else "r%d" % instruction.dest
        words = ["SIMD", "%s=%s(%s,%s)" % (dest, _SIMD_NAMES[instruction.op],
                                           _source(instruction.left), _source(instruction.right))]
        if instruction.write_address:
            words.append("wacc=0x%x" % instruction.write_address)
        if instruction.read_address:
            words.append("racc=0x%x" % instruction.read_address)
        words += [f for f in kind.flags if getattr(instruction, f)]  # type: ignore[union-attr]
    elif isinstance(instruction, Configure):
        words = ["Configure", "%s=0x%x" % (instruction.register.name.lower(), instruction.value)]
    elif isinstance(instruction, Skipped):
        words = ["Skipped", "opcode=0x%x" % instruction.opcode, "flags=0x%x" % instruction.flags,
                 "arguments=0x%x" % instruction.arguments]
    elif kind is not None:
        words = [kind.cls.__name__]
        if isinstance(instruction, DataMove):
            words.append(_DIRECTIONS[instruction.kind][0])
        for field in kind.operands:
            if field is not None:
                stride = getattr(instruction, field.stride) if field.stride else 0
                words.append("%s=%s" % (field.memory(instruction),
                                        _operand(getattr(instruction, field.address), stride)))
        if kind.size_operand is not None:
            words.append("size=%d" % instruction.size)  # type: ignore[union-attr]
        words += [flag for flag in kind.flags if getattr(instruction, flag)]
        if isinstance(instruction, DataMove) and instruction.kind == DataMoveKind.LOCAL_TO_ACC_ACCUMULATE:
            words.append("accumulate")
    else:
        raise ProgramError("not a Tensil instruction: %r" % (instruction,))
    return " ".join(words)


_SIMD_NAMES = {op: "NoOp" if op == SimdOp.NOOP else "".join(
    p.capitalize() for p in op.name.split("_")) for op in SimdOp}
_SIMD_BY_NAME = {name: op for op, name in _SIMD_NAMES.items()}
_SIMD_EXPR = re.compile(r"^(out|r\d+)=([A-Za-z]+)\((in|r\d+),(in|r\d+)\)$")
_OPERAND = re.compile(r"^(0x[0-9a-fA-F]+|\d+)(?::(\d+))?$")


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ProgramError("%s %r is not an integer" % (what, text)) from None


def _parse_operand(text: str, what: str) -> Tuple[int, int]:
    match = _OPERAND.match(text)
    if not match:
        raise ProgramError("%s %r: expected ADDRESS or ADDRESS:STEP (e.g. 0x100:2)" % (what, text))
    step = int(match.group(2) or 1)
    if step < 1 or step & (step - 1):
        raise ProgramError("%s step %d is not a power of two" % (what, step))
    return int(match.group(1), 0), step.bit_length() - 1


def _register(text: str) -> int:
    return 0 if text in ("in", "out") else int(text[1:])


_Take = Callable[..., str]
_Flags = Callable[[Sequence[str]], Dict[str, bool]]


def parse_instruction(line: str, arch: Optional[Architecture] = None,
                      strict: bool = True) -> Optional[Instruction]:
    """Parse one `.tasm` line (None for a blank or comment line); with `arch`, checked under
    the `strict` policy (`strict=False` admits `Skipped` and the RTL's field widths)."""
    words = line.split(";", 1)[0].split()
    if not words:
        return None
    head, rest = words[0], words[1:]
    keys: Dict[str, str] = {}
    bare: List[str] = []
    for word in rest[1:] if head in ("DataMove", "SIMD") else rest:
        if "=" in word:
            key, _, value = word.partition("=")
            if key in keys:
                raise ProgramError("%s: %s given twice" % (head, key))
            keys[key] = value
        else:
            bare.append(word)

    def take(key: str, default: Optional[str] = None) -> str:
        if key not in keys:
            if default is None:
                raise ProgramError("%s needs %s=..." % (head, key))
            return default
        return keys.pop(key)

    def flags(allowed: Sequence[str]) -> Dict[str, bool]:
        unknown = [w for w in bare if w not in allowed]
        if unknown or len(set(bare)) != len(bare):
            raise ProgramError("%s: unexpected word(s) %s (flags: %s)" % (
                head, " ".join(unknown or bare), ", ".join(allowed) or "none"))
        return {f: f in bare for f in allowed}

    by_name = {kind.cls.__name__: kind for kind in KIND_FIELDS.values()}
    instruction: Instruction
    if head == "DataMove":
        instruction = _parse_datamove(rest, take, flags)
    elif head == "SIMD":
        instruction = _parse_simd(rest, take, flags)
    elif head in by_name:
        instruction = _parse_fields(by_name[head], {}, take, flags(by_name[head].flags))
    elif head == "Configure":
        if len(keys) != 1 or bare:
            raise ProgramError("Configure takes one REGISTER=VALUE, e.g. dram0_offset=0x1234")
        (key, value), = keys.items()
        keys.clear()
        try:
            register = ConfigRegister[key.upper()]
        except KeyError:
            raise ProgramError("Configure: unknown register %r (known: %s)" % (
                key, ", ".join(r.name.lower() for r in ConfigRegister))) from None
        instruction = Configure(register, _int(value, register.name.lower()))
    elif head == "Skipped":
        flags(())
        instruction = Skipped(_int(take("opcode"), "opcode"), _int(take("flags"), "flags"),
                              _int(take("arguments"), "arguments"))
    else:
        raise ProgramError("unknown mnemonic %r (NoOp, MatMul, DataMove, LoadWeights, SIMD, "
                           "Configure, Skipped)" % head)
    if keys:
        raise ProgramError("%s: unknown field(s) %s" % (head, ", ".join(sorted(keys))))
    if arch is not None:
        check_instruction(instruction, arch, strict)
    return instruction


def _parse_fields(kind: KindFields, values: Dict[str, Any], take: _Take, flags: Dict[str, bool]) -> Instruction:
    """An instruction of `kind` from its `.tasm` keys (memory=ADDRESS[:STEP], size=N) and flags."""
    values = dict(values, **flags)
    known = types.SimpleNamespace(**values)  # DataMove's memory follows its kind
    for field in kind.operands:
        if field is not None:
            memory = field.memory(known)
            values[field.address], stride = _parse_operand(take(memory), memory)
            if field.stride is not None:
                values[field.stride] = stride
    if kind.size_operand is not None:
        values["size"] = _int(take("size"), "size")
    return kind.cls(**values)


def _parse_datamove(rest: List[str], take: _Take, flags: _Flags) -> Instruction:
    if not rest:
        raise ProgramError("DataMove needs a direction, e.g. dram0->local")
    direction = rest[0]
    accumulate = flags(("accumulate",))["accumulate"]
    for kind, (name, _) in _DIRECTIONS.items():
        if name == direction and accumulate == (kind == DataMoveKind.LOCAL_TO_ACC_ACCUMULATE):
            return _parse_fields(KIND_FIELDS[DataMove], {"kind": kind}, take, {})
    known = sorted({name for name, _ in _DIRECTIONS.values()})
    if direction in known:
        raise ProgramError("DataMove %s takes no accumulate flag (only local->acc does)"
                           % direction)
    raise ProgramError("DataMove: unknown direction %r (known: %s)" % (direction, ", ".join(known)))


def _parse_simd(rest: List[str], take: _Take, flags: _Flags) -> SIMD:
    match = _SIMD_EXPR.match(rest[0]) if rest else None
    if not match:
        raise ProgramError("SIMD needs DEST=Op(LEFT,RIGHT) first, e.g. out=Max(in,r1)")
    dest, op_name, left, right = match.groups()
    if op_name not in _SIMD_BY_NAME:
        raise ProgramError("SIMD: unknown op %r (known: %s)" % (
            op_name, ", ".join(_SIMD_NAMES.values())))
    return SIMD(_SIMD_BY_NAME[op_name], _register(left), _register(right), _register(dest),
                write_address=_int(take("wacc", "0"), "wacc"),
                read_address=_int(take("racc", "0"), "racc"),
                **flags(KIND_FIELDS[SIMD].flags))


def parse_program(text: str, arch: Optional[Architecture] = None,
                  strict: bool = True) -> List[Instruction]:
    """Parse `.tasm` text; errors name the line."""
    out: List[Instruction] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            instruction = parse_instruction(line, arch, strict)
        except ProgramError as exc:
            raise ProgramError("line %d: %s" % (number, exc)) from None
        if instruction is not None:
            out.append(instruction)
    return out


def format_program(instructions: Sequence[Instruction], arch: Optional[Architecture] = None,
                   strict: bool = True) -> str:
    return "".join(format_instruction(i, arch, strict) + "\n" for i in instructions)
