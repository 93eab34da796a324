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
import re
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .arch import Architecture, InstructionLayout, instruction_layout
from .errors import ProgramError

__all__ = ["CONFIG_VALUE_BITS", "SIMD_OPS_USING_RIGHT", "ConfigRegister", "Configure",
           "DataMove", "DataMoveKind", "Instruction", "LoadWeights", "MatMul", "NoOp", "Opcode",
           "SIMD", "SimdOp", "Skipped", "check_instruction", "decode_instruction", "decode_program",
           "encode_instruction", "encode_program", "format_instruction", "format_program",
           "iter_program", "mnemonic", "parse_instruction", "parse_program", "skipped_reason"]


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
_OPCODES = {NoOp: Opcode.NOOP, MatMul: Opcode.MATMUL, DataMove: Opcode.DATAMOVE,
            LoadWeights: Opcode.LOAD_WEIGHTS, SIMD: Opcode.SIMD, Configure: Opcode.CONFIGURE}
_OPCODE_NAMES = {opcode: cls.__name__ for cls, opcode in _OPCODES.items()}
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


# --------------------------------------------------------------------------- checking

def _depths(arch: Architecture) -> Dict[str, int]:
    return {"local": arch.local_depth, "acc": arch.accumulator_depth,
            "dram0": arch.dram0_depth, "dram1": arch.dram1_depth}


def _fits(name: str, value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ProgramError("%s is %r; must be an integer in 0..%d (%d bits)" % (
            name, value, (1 << bits) - 1, bits))


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ProgramError("%s is %r; must be True or False" % (name, value))


def _stride(name: str, value: int, depth: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < depth:
        raise ProgramError("%s is %r; must be in 0..%d (the architecture has %d strides)" % (
            name, value, depth - 1, depth))


def _base(what: str, memory: str, address: int, depth: int) -> None:
    if address >= depth:
        raise ProgramError("%s: %s address %d exceeds %s depth %d" % (
            what, memory, address, memory, depth))


class _Rules:
    """The field checks of one policy: `strict` (face value = RTL meaning) or the RTL's
    widths (`strict=False`: what the RTL's decoder keeps of each field)."""

    def __init__(self, arch: Architecture, strict: bool):
        self.arch, self.strict = arch, strict
        self.lay = lay = instruction_layout(arch)
        self.bits = {"local": lay.local_bits, "acc": lay.accumulator_bits,
                     "dram0": lay.dram0_bits, "dram1": lay.dram1_bits}

    def address(self, name: str, value: int, memory: str, operand: int) -> None:
        """`operand`: the field's address width in the strict encoding."""
        _fits(name, value, operand if self.strict else self.bits[memory])

    def stride(self, name: str, value: int, which: int) -> None:
        if self.strict:
            _stride(name, value, (self.arch.stride0_depth, self.arch.stride1_depth)[which])
        else:
            _fits(name, value, (self.lay.stride0_bits, self.lay.stride1_bits)[which])

    def base(self, what: str, memory: str, address: int) -> None:
        if self.strict:
            _base(what, memory, address, _depths(self.arch)[memory])


def check_instruction(instruction: Instruction, arch: Architecture, strict: bool = True) -> None:
    """Raise ProgramError naming the field when `instruction` does not fit `arch`.

    `strict=False` accepts what the lenient decoder produces: every field within the width the
    RTL keeps of it (addresses may lie past a memory whose depth is not a power of two;
    strides up to the stride field's width) and `Skipped` words.
    """
    rules = _Rules(arch, strict)
    lay = rules.lay
    name = type(instruction).__name__
    if arch.number_of_threads != 1:
        raise ProgramError("%s: only 1-thread architectures have an instruction encoding the "
                           "RTL decodes (number_of_threads is %d)" % (name, arch.number_of_threads))
    if isinstance(instruction, NoOp):
        return
    if isinstance(instruction, MatMul):
        _check_local_operand(name, instruction.local_address, instruction.local_stride, rules)
        rules.address(name + ".acc_address", instruction.acc_address, "acc",
                      lay.operand1_address_bits)
        rules.stride(name + ".acc_stride", instruction.acc_stride, 1)
        _fits(name + ".size", instruction.size, lay.operand2_address_bits)
        _flag(name + ".accumulate", instruction.accumulate)
        _flag(name + ".zeroes", instruction.zeroes)
        if not instruction.zeroes:
            rules.base(name, "local", instruction.local_address)
        rules.base(name, "acc", instruction.acc_address)
    elif isinstance(instruction, DataMove):
        if not isinstance(instruction.kind, DataMoveKind):
            raise ProgramError("DataMove.kind is %r; must be a DataMoveKind" % (instruction.kind,))
        memory = _DIRECTIONS[instruction.kind][1]
        _check_local_operand(name, instruction.local_address, instruction.local_stride, rules)
        rules.address(name + ".address", instruction.address, memory, lay.operand1_address_bits)
        rules.stride(name + ".stride", instruction.stride, 1)
        _fits(name + ".size", instruction.size, lay.operand2_address_bits)
        rules.base(name, "local", instruction.local_address)
        rules.base(name, memory, instruction.address)
    elif isinstance(instruction, LoadWeights):
        _check_local_operand(name, instruction.local_address, instruction.local_stride, rules)
        # The RTL's size handlers are log2(local_depth) bits wide: it pushes size mod 2^bits + 1.
        _fits(name + ".size", instruction.size, lay.local_bits)
        _flag(name + ".zeroes", instruction.zeroes)
        if not instruction.zeroes:
            rules.base(name, "local", instruction.local_address)
    elif isinstance(instruction, SIMD):
        _check_simd(instruction, rules)
    elif isinstance(instruction, Configure):
        if not isinstance(instruction.register, ConfigRegister):
            raise ProgramError("Configure.register is %r; must be a ConfigRegister"
                               % (instruction.register,))
        _fits("Configure.value (%s)" % instruction.register.name.lower(), instruction.value,
              CONFIG_VALUE_BITS[instruction.register])
    elif isinstance(instruction, Skipped):
        if strict:
            raise ProgramError("Skipped (a word the RTL ignores) is refused by the strict "
                               "policy: %s" % skipped_reason(instruction))
        _fits("Skipped.arguments", instruction.arguments, lay.operands_bits)
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


def _check_local_operand(name: str, address: int, stride: int, rules: _Rules) -> None:
    rules.address(name + ".local_address", address, "local", rules.lay.operand0_address_bits)
    rules.stride(name + ".local_stride", stride, 0)


def _check_simd(instruction: SIMD, rules: _Rules) -> None:
    arch, lay = rules.arch, rules.lay
    if not isinstance(instruction.op, SimdOp):
        raise ProgramError("SIMD.op is %r; must be a SimdOp" % (instruction.op,))
    for field in ("left", "right", "dest"):
        value = getattr(instruction, field)
        if isinstance(value, bool) or not isinstance(value, int) or not (
                0 <= value <= arch.simd_registers_depth):
            raise ProgramError("SIMD.%s is %r; must be 0 (accumulator %s) or a register 1..%d" % (
                field, value, "output" if field == "dest" else "input",
                arch.simd_registers_depth))
    for field in ("read", "write", "accumulate"):
        _flag("SIMD." + field, getattr(instruction, field))
    rules.address("SIMD.write_address", instruction.write_address, "acc",
                  lay.operand0_address_bits)
    rules.address("SIMD.read_address", instruction.read_address, "acc",
                  lay.operand1_address_bits)
    if instruction.write:
        rules.base("SIMD", "acc", instruction.write_address)
    if instruction.read:
        rules.base("SIMD", "acc", instruction.read_address)


# --------------------------------------------------------------------------- encoding

def _fields(instruction: Instruction, lay: InstructionLayout) -> Tuple[int, int, int, int]:
    """(operand0, operand1, operand2, flags) of a checked instruction."""
    a0, a1 = lay.operand0_address_bits, lay.operand1_address_bits
    if isinstance(instruction, MatMul):
        return (instruction.local_address | instruction.local_stride << a0,
                instruction.acc_address | instruction.acc_stride << a1, instruction.size,
                int(instruction.accumulate) | int(instruction.zeroes) << 1)
    if isinstance(instruction, DataMove):
        return (instruction.local_address | instruction.local_stride << a0,
                instruction.address | instruction.stride << a1, instruction.size,
                int(instruction.kind))
    if isinstance(instruction, LoadWeights):
        return (instruction.local_address | instruction.local_stride << a0, instruction.size, 0,
                int(instruction.zeroes))
    if isinstance(instruction, SIMD):
        b = lay.simd_operand_bits
        sub = (instruction.dest | instruction.right << b | instruction.left << 2 * b
               | int(instruction.op) << 3 * b)
        return (instruction.write_address, instruction.read_address, sub,
                int(instruction.read) | int(instruction.write) << 1
                | int(instruction.accumulate) << 2)
    if isinstance(instruction, Configure):
        args = int(instruction.register) | instruction.value << 4
        mask0 = (1 << lay.operand0_bits) - 1
        mask1 = (1 << lay.operand1_bits) - 1
        return (args & mask0, args >> lay.operand0_bits & mask1,
                args >> (lay.operand0_bits + lay.operand1_bits), 0)
    if isinstance(instruction, Skipped):
        args = instruction.arguments
        return (args & ((1 << lay.operand0_bits) - 1),
                args >> lay.operand0_bits & ((1 << lay.operand1_bits) - 1),
                args >> (lay.operand0_bits + lay.operand1_bits), instruction.flags)
    return (0, 0, 0, 0)


def encode_instruction(instruction: Instruction, arch: Architecture, strict: bool = True) -> bytes:
    """The instruction's bytes (little-endian), after `check_instruction(.., strict)`."""
    check_instruction(instruction, arch, strict)
    lay = instruction_layout(arch)
    op0, op1, op2, flags = _fields(instruction, lay)
    opcode = instruction.opcode if isinstance(instruction, Skipped) \
        else int(_OPCODES[type(instruction)])
    header = opcode << 4 | flags
    word = (op0 | op1 << lay.operand0_bits | op2 << (lay.operand0_bits + lay.operand1_bits)
            | header << lay.operands_bits)
    return word.to_bytes(lay.instruction_bytes, "little")


def encode_program(instructions: Sequence[Instruction], arch: Architecture,
                   strict: bool = True) -> bytes:
    out = bytearray()
    for i, instruction in enumerate(instructions):
        try:
            out += encode_instruction(instruction, arch, strict)
        except ProgramError as exc:
            raise ProgramError("instruction %d: %s" % (i, exc)) from None
    return bytes(out)


# --------------------------------------------------------------------------- decoding

def _split(value: int, address_bits: int, stride_bits: int) -> Tuple[int, int, int]:
    """(address, stride, padding) of one operand field."""
    return (value & ((1 << address_bits) - 1), value >> address_bits & ((1 << stride_bits) - 1),
            value >> (address_bits + stride_bits))


def decode_instruction(data: bytes, arch: Architecture, strict: bool = True) -> Instruction:
    """Decode one instruction word; ProgramError says which bits are wrong.

    `strict=False` decodes the word as the RTL's decoder does and never fails on a whole word
    (see the module docstring).
    """
    lay = instruction_layout(arch)
    if len(data) != lay.instruction_bytes:
        raise ProgramError("truncated instruction: %d of %d bytes" % (
            len(data), lay.instruction_bytes))
    word = int.from_bytes(data, "little")
    o0, o1, o2 = lay.operand0_bits, lay.operand1_bits, lay.operand2_bits
    op0 = word & ((1 << o0) - 1)
    op1 = word >> o0 & ((1 << o1) - 1)
    op2 = word >> (o0 + o1) & ((1 << o2) - 1)
    header = word >> (o0 + o1 + o2)
    opcode, flags = header >> 4, header & 0xF
    if not strict:
        instruction = _decode_as_rtl(opcode, flags, op0, op1, op2, lay)
        check_instruction(instruction, arch, strict=False)
        return instruction
    try:
        opcode = Opcode(opcode)
    except ValueError:
        raise ProgramError("reserved opcode 0x%X" % opcode) from None
    name = _OPCODE_NAMES[opcode]
    addr0, stride0, pad0 = _split(op0, lay.operand0_address_bits, lay.stride0_bits)
    addr1, stride1, pad1 = _split(op1, lay.operand1_address_bits, lay.stride1_bits)
    size, pad2 = op2 & ((1 << lay.operand2_address_bits) - 1), op2 >> lay.operand2_address_bits

    def reserved(condition: bool, what: str) -> None:
        if condition:
            raise ProgramError("%s: non-zero %s" % (name, what))

    def padding() -> None:
        reserved(pad0 != 0, "operand0 padding bits")
        reserved(pad1 != 0, "operand1 padding bits")
        reserved(pad2 != 0, "operand2 padding bits")

    if opcode == Opcode.NOOP:
        reserved(flags != 0, "flags 0x%X" % flags)
        reserved(op0 | op1 | op2 != 0, "operand bits")
        instruction: Instruction = NoOp()
    elif opcode == Opcode.MATMUL:
        if flags >= 4:
            raise ProgramError("MatMul flags 0x%X out of range (bit 0 accumulate, bit 1 zeroes)"
                               % flags)
        padding()
        instruction = MatMul(addr0, addr1, size, stride0, stride1, bool(flags & 1),
                             bool(flags & 2))
    elif opcode == Opcode.DATAMOVE:
        try:
            kind = DataMoveKind(flags)
        except ValueError:
            raise ProgramError("reserved DataMove kind 0x%X" % flags) from None
        padding()
        instruction = DataMove(kind, addr0, addr1, size, stride0, stride1)
    elif opcode == Opcode.LOAD_WEIGHTS:
        if flags >= 2:
            raise ProgramError("LoadWeights flags 0x%X out of range (bit 0 zeroes)" % flags)
        reserved(pad0 != 0, "operand0 padding bits")
        reserved(op1 >> lay.local_bits != 0, "bits above the size in operand1 (the RTL "
                 "keeps %d bits)" % lay.local_bits)
        reserved(op2 != 0, "operand2 (unused by LoadWeights)")
        instruction = LoadWeights(addr0, op1, stride0, bool(flags & 1))
    elif opcode == Opcode.SIMD:
        instruction = _decode_simd(op0, op1, op2, flags, lay)
    else:
        reserved(flags != 0, "flags 0x%X" % flags)
        args = op0 | op1 << o0 | op2 << (o0 + o1)
        reserved(args >> _CONFIG_ARGUMENT_BITS != 0, "bits above argument bit 31")
        try:
            register = ConfigRegister(args & 0xF)
        except ValueError:
            raise ProgramError("Configure: reserved register 0x%X" % (args & 0xF)) from None
        instruction = Configure(register, args >> 4 & ((1 << 28) - 1))
    check_instruction(instruction, arch)
    return instruction


def _decode_simd(op0: int, op1: int, op2: int, flags: int, lay: InstructionLayout) -> SIMD:
    if flags >= 8:
        raise ProgramError("SIMD flags 0x%X out of range (bit 0 read, bit 1 write, "
                           "bit 2 accumulate)" % flags)
    if op0 >> lay.operand0_address_bits:
        raise ProgramError("SIMD: non-zero bits above the write address in operand0")
    if op1 >> lay.operand1_address_bits:
        raise ProgramError("SIMD: non-zero bits above the read address in operand1")
    if op2 >> lay.simd_instruction_bits:
        raise ProgramError("SIMD: non-zero bits above the sub-instruction in operand2")
    b = lay.simd_operand_bits
    mask = (1 << b) - 1
    return SIMD(SimdOp(op2 >> 3 * b & 0xF), left=op2 >> 2 * b & mask, right=op2 >> b & mask,
                dest=op2 & mask, write_address=op0, read_address=op1, read=bool(flags & 1),
                write=bool(flags & 2), accumulate=bool(flags & 4))


def _decode_as_rtl(opcode: int, flags: int, op0: int, op1: int, op2: int,
                   lay: InstructionLayout) -> Instruction:
    """What the RTL's decoder makes of a word (Decoder.scala; checked in co-simulation)."""
    def low(value: int, bits: int) -> int:
        return value & ((1 << bits) - 1)

    arguments = op0 | op1 << lay.operand0_bits | op2 << (lay.operand0_bits + lay.operand1_bits)
    skipped = Skipped(opcode, flags, arguments)
    a0, a1 = lay.operand0_address_bits, lay.operand1_address_bits
    local, stride0 = low(op0, lay.local_bits), low(op0 >> a0, lay.stride0_bits)
    addr1, stride1 = low(op1, a1), low(op1 >> a1, lay.stride1_bits)
    size = low(op2, lay.operand2_address_bits)
    if opcode == Opcode.NOOP:
        return NoOp()
    if opcode == Opcode.MATMUL:
        return MatMul(local, low(addr1, lay.accumulator_bits), size, stride0, stride1,
                      bool(flags & 1), bool(flags & 2))
    if opcode == Opcode.DATAMOVE:
        if flags not in set(DataMoveKind):
            return skipped
        kind = DataMoveKind(flags)
        memory = _DIRECTIONS[kind][1]
        bits = {"acc": lay.accumulator_bits, "dram0": lay.dram0_bits,
                "dram1": lay.dram1_bits}[memory]
        return DataMove(kind, local, low(addr1, bits), size, stride0, stride1)
    if opcode == Opcode.LOAD_WEIGHTS:
        return LoadWeights(local, low(op1, lay.local_bits), stride0, bool(flags & 1))
    if opcode == Opcode.SIMD:
        b = lay.simd_operand_bits
        mask = (1 << b) - 1
        return SIMD(SimdOp(op2 >> 3 * b & 0xF), left=op2 >> 2 * b & mask,
                    right=op2 >> b & mask, dest=op2 & mask,
                    write_address=low(op0, lay.accumulator_bits),
                    read_address=low(op1, lay.accumulator_bits), read=bool(flags & 1),
                    write=bool(flags & 2), accumulate=bool(flags & 4))
    if opcode == Opcode.CONFIGURE:
        args = low(arguments, _CONFIG_ARGUMENT_BITS)
        if args & 0xF not in set(ConfigRegister):
            return skipped
        register = ConfigRegister(args & 0xF)
        return Configure(register, low(args >> 4, CONFIG_VALUE_BITS[register]))
    return skipped


def iter_program(data: bytes, arch: Architecture, strict: bool = True) -> Iterator[Instruction]:
    """Decode `.tprog` bytes one instruction at a time; errors name the byte offset."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProgramError("a program is bytes, got %s" % type(data).__name__)
    data = bytes(data)
    step = instruction_layout(arch).instruction_bytes
    for offset in range(0, len(data), step):
        chunk = data[offset:offset + step]
        try:
            yield decode_instruction(chunk, arch, strict)
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
    if isinstance(instruction, NoOp):
        return "NoOp"
    if isinstance(instruction, MatMul):
        words = ["MatMul", "local=" + _operand(instruction.local_address, instruction.local_stride),
                 "acc=" + _operand(instruction.acc_address, instruction.acc_stride),
                 "size=%d" % instruction.size]
        words += ["accumulate"] * instruction.accumulate + ["zeroes"] * instruction.zeroes
    elif isinstance(instruction, DataMove):
        direction, memory = _DIRECTIONS[instruction.kind]
        words = ["DataMove", direction,
                 "local=" + _operand(instruction.local_address, instruction.local_stride),
                 memory + "=" + _operand(instruction.address, instruction.stride),
                 "size=%d" % instruction.size]
        if instruction.kind == DataMoveKind.LOCAL_TO_ACC_ACCUMULATE:
            words.append("accumulate")
    elif isinstance(instruction, LoadWeights):
        words = ["LoadWeights",
                 "local=" + _operand(instruction.local_address, instruction.local_stride),
                 "size=%d" % instruction.size] + ["zeroes"] * instruction.zeroes
    elif isinstance(instruction, SIMD):
        dest = "out" if instruction.dest == 0 else "r%d" % instruction.dest
        words = ["SIMD", "%s=%s(%s,%s)" % (dest, _SIMD_NAMES[instruction.op],
                                           _source(instruction.left), _source(instruction.right))]
        if instruction.write_address:
            words.append("wacc=0x%x" % instruction.write_address)
        if instruction.read_address:
            words.append("racc=0x%x" % instruction.read_address)
        words += [f for f in ("read", "write", "accumulate") if getattr(instruction, f)]
    elif isinstance(instruction, Configure):
        words = ["Configure", "%s=0x%x" % (instruction.register.name.lower(), instruction.value)]
    elif isinstance(instruction, Skipped):
        words = ["Skipped", "opcode=0x%x" % instruction.opcode, "flags=0x%x" % instruction.flags,
                 "arguments=0x%x" % instruction.arguments]
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

    instruction: Instruction
    if head == "NoOp":
        flags(())
        instruction = NoOp()
    elif head == "MatMul":
        local, local_stride = _parse_operand(take("local"), "local")
        acc, acc_stride = _parse_operand(take("acc"), "acc")
        f = flags(("accumulate", "zeroes"))
        instruction = MatMul(local, acc, _int(take("size"), "size"), local_stride, acc_stride,
                             f["accumulate"], f["zeroes"])
    elif head == "DataMove":
        instruction = _parse_datamove(rest, take, flags)
    elif head == "LoadWeights":
        local, local_stride = _parse_operand(take("local"), "local")
        f = flags(("zeroes",))
        instruction = LoadWeights(local, _int(take("size"), "size"), local_stride, f["zeroes"])
    elif head == "SIMD":
        instruction = _parse_simd(rest, take, flags)
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


_Take = Callable[..., str]
_Flags = Callable[[Sequence[str]], Dict[str, bool]]


def _parse_datamove(rest: List[str], take: _Take, flags: _Flags) -> DataMove:
    if not rest:
        raise ProgramError("DataMove needs a direction, e.g. dram0->local")
    direction = rest[0]
    accumulate = flags(("accumulate",))["accumulate"]
    for kind, (name, memory) in _DIRECTIONS.items():
        if name == direction and accumulate == (kind == DataMoveKind.LOCAL_TO_ACC_ACCUMULATE):
            local, local_stride = _parse_operand(take("local"), "local")
            address, stride = _parse_operand(take(memory), memory)
            return DataMove(kind, local, address, _int(take("size"), "size"), local_stride, stride)
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
    f = flags(("read", "write", "accumulate"))
    return SIMD(_SIMD_BY_NAME[op_name], _register(left), _register(right), _register(dest),
                write_address=_int(take("wacc", "0"), "wacc"),
                read_address=_int(take("racc", "0"), "racc"),
                read=f["read"], write=f["write"], accumulate=f["accumulate"])


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
