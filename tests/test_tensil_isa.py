"""Instruction encoding, decoding of untrusted `.tprog` bytes, and `.tasm` text."""

import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensil.arch import Architecture, instruction_layout, load_tarch
from tensil.errors import ProgramError
from tensil.isa import (
    CONFIG_VALUE_BITS,
    SIMD,
    ConfigRegister,
    Configure,
    DataMove,
    DataMoveKind,
    LoadWeights,
    MatMul,
    NoOp,
    SimdOp,
    Skipped,
    decode_instruction,
    decode_program,
    encode_instruction,
    encode_program,
    format_instruction,
    format_program,
    mnemonic,
    parse_instruction,
    parse_program,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYNQZ1 = load_tarch(ROOT / "tensil_arch" / "pynqz1.tarch")
PERF = load_tarch(ROOT / "tensil_arch" / "pynqz1_perf.tarch")
K = DataMoveKind


def _spec_arch(depth: int) -> Architecture:
    """CompilerBackendSpec's architectures: array 4, all depths equal, 4 strides, FLOAT32."""
    return Architecture("FLOAT32", 4, depth, depth, depth, depth, 1, 4, 4, 1, 8)


ARCHES = [load_tarch(p) for p in sorted((ROOT / "tests" / "golden" / "tensil_arch").glob("*.tarch"))]
ARCHES += [PYNQZ1, PERF, _spec_arch(1 << 14), _spec_arch(1 << 30), _spec_arch(1 << 62),
           Architecture("FP16BP8", 8, 1000, 3000, 700, 300, 3, 5, 2, 1, 8)]


# Facts §2.4: pynqz1 (and custom_perf, same widths) golden bytes b0..b7.
PYNQZ1_GOLDEN = [
    (MatMul(0x100, 0x10, 7), "00 01 10 00 00 07 00 10"),
    (MatMul(0, 0x7FF, 3, acc_stride=1, accumulate=True, zeroes=True), "00 00 ff 07 10 03 00 13"),
    (DataMove(K.DRAM0_TO_LOCAL, 0, 0x12345, 1023), "00 00 45 23 01 ff 03 20"),
    (DataMove(K.LOCAL_TO_DRAM0, 8191, 0xFFFFE, 0), "ff 1f fe ff 0f 00 00 21"),
    (DataMove(K.LOCAL_TO_ACC_ACCUMULATE, 0x1000, 5, 15), "00 10 05 00 00 0f 00 2f"),
    (LoadWeights(0x200, 8), "00 02 08 00 00 00 00 30"),
    (LoadWeights(0, 0, zeroes=True), "00 00 00 00 00 00 00 31"),
    (SIMD(SimdOp.ZERO, dest=1), "00 00 00 00 00 09 00 40"),
    (SIMD(SimdOp.MAX, 0, 1, 0, write_address=0x20, read_address=0x10, read=True, write=True),
     "20 00 10 00 00 7a 00 43"),
    (Configure(ConfigRegister.DRAM0_OFFSET, 0x1234), "40 23 01 00 00 00 00 f0"),
    (Configure(ConfigRegister.TIMEOUT, 100), "48 06 00 00 00 00 00 f0"),
    (NoOp(), "00 00 00 00 00 00 00 00"),
]


@pytest.mark.parametrize("arch", [PYNQZ1, PERF], ids=["pynqz1", "perf"])
@pytest.mark.parametrize("instruction, golden", PYNQZ1_GOLDEN, ids=lambda x: str(x)[:30])
def test_pynqz1_golden_bytes(arch, instruction, golden):
    data = encode_instruction(instruction, arch)
    assert data.hex(" ") == golden
    assert decode_instruction(data, arch) == instruction


def _bytes(*groups):
    return bytes(b for group in groups for b in group)


# tools/test/src/tools/CompilerBackendSpec.scala (Tensil v1.0.15), 32-bit arch.
A, B, S = 0x12345, 0x89ABCD, 0x543210
SPEC32 = [
    (MatMul(A, B, S, 0, 1), _bytes([0x45, 0x23, 0x01, 0x00], [0xcd, 0xab, 0x89, 0x40],
                                   [0x10, 0x32, 0x54, 0x00], [0x10])),
    (MatMul(A, B, S, 2, 3, accumulate=True), _bytes([0x45, 0x23, 0x01, 0x80],
                                                    [0xcd, 0xab, 0x89, 0xc0],
                                                    [0x10, 0x32, 0x54, 0x00], [0x11])),
    (MatMul(A, B, S, zeroes=True), _bytes([0x45, 0x23, 0x01, 0x00], [0xcd, 0xab, 0x89, 0x00],
                                          [0x10, 0x32, 0x54, 0x00], [0x12])),
    (MatMul(A, B, S, accumulate=True, zeroes=True),
     _bytes([0x45, 0x23, 0x01, 0x00], [0xcd, 0xab, 0x89, 0x00], [0x10, 0x32, 0x54, 0x00], [0x13])),
    (SIMD(SimdOp.ZERO, 0, 0, 1, write_address=A, read_address=B),
     _bytes([0x45, 0x23, 0x01, 0x00], [0xcd, 0xab, 0x89, 0x00], [0x09, 0, 0, 0], [0x40])),
    (SIMD(SimdOp.MAX, 0, 1, 0, write_address=A, read_address=B, read=True, write=True),
     _bytes([0x45, 0x23, 0x01, 0x00], [0xcd, 0xab, 0x89, 0x00], [0x7a, 0, 0, 0], [0x43])),
    (DataMove(K.DRAM0_TO_LOCAL, A, B, S, 0, 1),
     _bytes([0x45, 0x23, 0x01, 0x00], [0xcd, 0xab, 0x89, 0x40], [0x10, 0x32, 0x54, 0x00], [0x20])),
    (DataMove(K.LOCAL_TO_DRAM0, A, B, S, 2, 3),
     _bytes([0x45, 0x23, 0x01, 0x80], [0xcd, 0xab, 0x89, 0xc0], [0x10, 0x32, 0x54, 0x00], [0x21])),
    (DataMove(K.DRAM1_TO_LOCAL, A, B, S, 3, 2),
     _bytes([0x45, 0x23, 0x01, 0xc0], [0xcd, 0xab, 0x89, 0x80], [0x10, 0x32, 0x54, 0x00], [0x22])),
    (DataMove(K.LOCAL_TO_DRAM1, A, B, S, 1, 0),
     _bytes([0x45, 0x23, 0x01, 0x40], [0xcd, 0xab, 0x89, 0x00], [0x10, 0x32, 0x54, 0x00], [0x23])),
    (DataMove(K.ACC_TO_LOCAL, A, B, S, 1, 1),
     _bytes([0x45, 0x23, 0x01, 0x40], [0xcd, 0xab, 0x89, 0x40], [0x10, 0x32, 0x54, 0x00], [0x2c])),
    (DataMove(K.LOCAL_TO_ACC, A, B, S, 2, 2),
     _bytes([0x45, 0x23, 0x01, 0x80], [0xcd, 0xab, 0x89, 0x80], [0x10, 0x32, 0x54, 0x00], [0x2d])),
    (DataMove(K.LOCAL_TO_ACC_ACCUMULATE, A, B, S, 3, 3),
     _bytes([0x45, 0x23, 0x01, 0xc0], [0xcd, 0xab, 0x89, 0xc0], [0x10, 0x32, 0x54, 0x00], [0x2f])),
] + [(LoadWeights(A, B, stride), _bytes([0x45, 0x23, 0x01, stride << 6],
                                        [0xcd, 0xab, 0x89, 0x00], [0, 0, 0, 0], [0x30]))
     for stride in range(4)] + [
    (LoadWeights(0, B, zeroes=True), _bytes([0, 0, 0, 0], [0xcd, 0xab, 0x89, 0x00], [0, 0, 0, 0],
                                            [0x31])),
]


def test_compiler_backend_spec_32bit_golden_bytes():
    arch = _spec_arch(1 << 30)
    program = [i for i, _ in SPEC32]
    data = encode_program(program, arch)
    assert data == b"".join(g for _, g in SPEC32)
    assert decode_program(data, arch) == program


@pytest.mark.parametrize("depth, size", [(1 << 14, 7), (1 << 30, 13), (1 << 62, 25)])
def test_compiler_backend_spec_noops(depth, size):
    arch = _spec_arch(depth)
    assert encode_program([NoOp()] * 3, arch) == bytes(3 * size)
    assert decode_program(bytes(3 * size), arch) == [NoOp()] * 3


# ---------------------------------------------------------------- random round trips

def _address(bits: int, depth: int):
    return st.integers(0, min(depth, 1 << bits) - 1)


@st.composite
def instructions(draw, arch: Architecture):
    lay = instruction_layout(arch)
    local = _address(lay.operand0_address_bits, arch.local_depth)
    stride0 = st.integers(0, arch.stride0_depth - 1)
    stride1 = st.integers(0, arch.stride1_depth - 1)
    size = st.integers(0, (1 << lay.operand2_address_bits) - 1)
    kind = draw(st.sampled_from(["noop", "matmul", "datamove", "loadweights", "simd", "configure"]))
    if kind == "noop":
        return NoOp()
    if kind == "matmul":
        return MatMul(draw(local), draw(_address(lay.operand1_address_bits, arch.accumulator_depth)),
                      draw(size), draw(stride0), draw(stride1), draw(st.booleans()),
                      draw(st.booleans()))
    if kind == "datamove":
        move = draw(st.sampled_from(list(DataMoveKind)))
        depth = {0: arch.dram0_depth, 1: arch.dram0_depth, 2: arch.dram1_depth,
                 3: arch.dram1_depth}.get(int(move), arch.accumulator_depth)
        return DataMove(move, draw(local), draw(_address(lay.operand1_address_bits, depth)),
                        draw(size), draw(stride0), draw(stride1))
    if kind == "loadweights":
        return LoadWeights(draw(local), draw(st.integers(0, (1 << lay.local_bits) - 1)),
                           draw(stride0), draw(st.booleans()))
    if kind == "simd":
        register = st.integers(0, arch.simd_registers_depth)
        acc = st.integers(0, arch.accumulator_depth - 1)
        return SIMD(draw(st.sampled_from(list(SimdOp))), draw(register), draw(register),
                    draw(register), draw(acc), draw(acc), draw(st.booleans()), draw(st.booleans()),
                    draw(st.booleans()))
    register = draw(st.sampled_from(list(ConfigRegister)))
    return Configure(register, draw(st.integers(0, (1 << CONFIG_VALUE_BITS[register]) - 1)))


@st.composite
def arch_and_program(draw):
    arch = draw(st.sampled_from(ARCHES))
    return arch, draw(st.lists(instructions(arch), min_size=1, max_size=8))


@given(arch_and_program())
def test_random_programs_round_trip_bytes_and_text(case):
    arch, program = case
    data = encode_program(program, arch)
    assert len(data) == len(program) * instruction_layout(arch).instruction_bytes
    assert decode_program(data, arch) == program
    text = format_program(program, arch)
    assert parse_program(text, arch) == program
    assert format_program(parse_program(text, arch), arch) == text


@given(st.sampled_from(ARCHES[:8]), st.binary(min_size=0, max_size=80))
def test_fuzzed_tprog_bytes_decode_or_raise_program_error(arch, data):
    try:
        program = decode_program(data, arch)
    except ProgramError as exc:
        assert str(exc).startswith("offset ")
    else:
        assert encode_program(program, arch) == data   # nothing decoded is garbage


@given(arch_and_program(), st.data())
def test_bit_flipped_programs_decode_to_the_same_bytes_or_raise(case, data):
    arch, program = case
    raw = bytearray(encode_program(program, arch))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << bit % 8
    try:
        decoded = decode_program(bytes(raw), arch)
    except ProgramError:
        return
    assert encode_program(decoded, arch) == bytes(raw)


# ---------------------------------------------------------------- untrusted bytes

def _word(arch, opcode, flags, op0=0, op1=0, op2=0):
    lay = instruction_layout(arch)
    word = (op0 | op1 << lay.operand0_bits | op2 << (lay.operand0_bits + lay.operand1_bits)
            | (opcode << 4 | flags) << lay.operands_bits)
    return word.to_bytes(lay.instruction_bytes, "little")


@pytest.mark.parametrize("opcode", range(5, 15))
def test_reserved_opcodes_are_reported(opcode):
    with pytest.raises(ProgramError, match=r"offset 8 \(0x8, instruction 1\): reserved opcode "
                                           r"0x%X" % opcode):
        decode_program(bytes(8) + _word(PYNQZ1, opcode, 0), PYNQZ1)


@pytest.mark.parametrize("kind", [4, 5, 6, 7, 8, 9, 10, 11, 14])
def test_reserved_datamove_kinds_are_reported(kind):
    with pytest.raises(ProgramError, match="reserved DataMove kind 0x%X" % kind):
        decode_program(_word(PYNQZ1, 2, kind), PYNQZ1)


@pytest.mark.parametrize("word, message", [
    (_word(PYNQZ1, 1, 4), "MatMul flags 0x4 out of range"),
    (_word(PYNQZ1, 3, 2), "LoadWeights flags 0x2 out of range"),
    (_word(PYNQZ1, 4, 8), "SIMD flags 0x8 out of range"),
    (_word(PYNQZ1, 0, 1), "NoOp: non-zero flags 0x1"),
    (_word(PYNQZ1, 0, 0, op2=1), "NoOp: non-zero operand bits"),
    (_word(PYNQZ1, 15, 3, op0=0x8), "Configure: non-zero flags 0x3"),
    (_word(PYNQZ1, 1, 0, op1=1 << 23), "MatMul: non-zero operand1 padding bits"),
    (_word(PYNQZ1, 2, 0, op2=1 << 13), "DataMove: non-zero operand2 padding bits"),
    (_word(PYNQZ1, 3, 0, op1=1 << 20), "bits above the size in operand1"),
    (_word(PYNQZ1, 3, 0, op2=1), r"operand2 \(unused by LoadWeights\)"),
    (_word(PYNQZ1, 4, 0, op0=1 << 13), "SIMD: non-zero bits above the write address"),
    (_word(PYNQZ1, 4, 0, op1=1 << 20), "SIMD: non-zero bits above the read address"),
    (_word(PYNQZ1, 4, 0, op2=1 << 7), "SIMD: non-zero bits above the sub-instruction"),
    (_word(PYNQZ1, 15, 0, op0=0x2), "Configure: reserved register 0x2"),
    (_word(PYNQZ1, 15, 0, op2=1 << 8), "bits above argument bit 31"),
    (_word(PYNQZ1, 15, 0, op1=0xFF), r"Configure.value \(dram0_offset\) is"),
    (_word(PYNQZ1, 1, 0, op1=2048), "MatMul: acc address 2048 exceeds acc depth 2048"),
    (_word(PYNQZ1, 4, 1, op1=2048), "SIMD: acc address 2048 exceeds acc depth 2048"),
    (_word(PYNQZ1, 2, 0xC, op0=1 << 12, op1=5000), "DataMove: acc address 5000 exceeds"),
])
def test_malformed_words_are_reported(word, message):
    with pytest.raises(ProgramError, match=message):
        decode_program(word, PYNQZ1)


def test_truncated_program_names_the_offset():
    with pytest.raises(ProgramError, match=r"offset 16 \(0x10, instruction 2\): truncated "
                                           r"instruction: 3 of 8 bytes"):
        decode_program(bytes(19), PYNQZ1)
    with pytest.raises(ProgramError, match="a program is bytes"):
        decode_program("NoOp", PYNQZ1)


def test_strides_beyond_the_depth_and_register_counts_are_rejected():
    arch = Architecture("FP16BP8", 8, 1000, 3000, 700, 300, 3, 5, 2, 1, 8)
    with pytest.raises(ProgramError, match="MatMul.local_stride is 5; must be in 0..4"):
        encode_instruction(MatMul(0, 0, 0, local_stride=5), arch)
    with pytest.raises(ProgramError, match="SIMD.left is 4; must be 0"):
        encode_instruction(SIMD(SimdOp.ADD, left=4), arch)
    lay = instruction_layout(arch)
    with pytest.raises(ProgramError, match="DataMove.local_stride is 6; must be in 0..4"):
        decode_program(_word(arch, 2, 0, op0=6 << lay.operand0_address_bits), arch)


@pytest.mark.parametrize("instruction, message", [
    (MatMul(8192, 0, 0), r"MatMul.local_address is 8192; must be an integer in 0..8191"),
    (MatMul(0, 0, 8192), "MatMul.size is 8192"),
    (MatMul(0, 0, 0, accumulate=1), "MatMul.accumulate is 1; must be True or False"),
    (MatMul(-1, 0, 0), "MatMul.local_address is -1"),
    (DataMove(K.DRAM1_TO_LOCAL, 0, 1 << 20, 0), "DataMove.address is 1048576"),
    (DataMove(0, 0, 0, 0), "DataMove.kind is 0; must be a DataMoveKind"),
    (LoadWeights(0, 1 << 20), "LoadWeights.size is 1048576"),
    (SIMD(SimdOp.ADD, dest=2), "SIMD.dest is 2"),
    (SIMD(3), "SIMD.op is 3; must be a SimdOp"),
    (Configure(ConfigRegister.DRAM1_CACHE, 16), r"Configure.value \(dram1_cache\) is 16"),
    ("NoOp", "not a Tensil instruction"),
])
def test_encoder_names_the_bad_field(instruction, message):
    with pytest.raises(ProgramError, match=message):
        encode_instruction(instruction, PYNQZ1)


def test_two_thread_architectures_have_no_rtl_encoding():
    arch = Architecture.from_dict(dict(PYNQZ1.to_dict(), number_of_threads=2))
    with pytest.raises(ProgramError, match="only 1-thread architectures"):
        encode_instruction(NoOp(), arch)


# ---------------------------------------------------------------- assembly text

def test_tasm_reads_comments_blank_lines_and_writes_canonical_lines():
    text = """
    ; a hand-written program
    DataMove dram1->local local=0x10 dram1=0x0 size=8   ; weights and bias
    LoadWeights local=16 size=8
    MatMul local=0x100:2 acc=0x0 size=3 zeroes accumulate
    SIMD r1=Zero(in,in)
    SIMD out=Max(in,r1) racc=0x3 wacc=4 read write
    Configure timeout=100
    """
    program = parse_program(text, PYNQZ1)
    assert format_program(program) == (
        "DataMove dram1->local local=0x10 dram1=0x0 size=8\n"
        "LoadWeights local=0x10 size=8\n"
        "MatMul local=0x100:2 acc=0x0 size=3 accumulate zeroes\n"
        "SIMD r1=Zero(in,in)\n"
        "SIMD out=Max(in,r1) wacc=0x4 racc=0x3 read write\n"
        "Configure timeout=0x64\n")
    assert [mnemonic(i) for i in program] == [
        "DataMove(dram1->local)", "LoadWeights", "MatMul", "SIMD", "SIMD", "Configure"]


@pytest.mark.parametrize("line, message", [
    ("Jump 3", "unknown mnemonic 'Jump'"),
    ("MatMul local=0 size=1", r"MatMul needs acc=\.\.\."),
    ("MatMul local=0 acc=0 size=1 fast", "unexpected word"),
    ("MatMul local=0:3 acc=0 size=1", "step 3 is not a power of two"),
    ("MatMul local=zero acc=0 size=1", "expected ADDRESS or ADDRESS:STEP"),
    ("MatMul local=0 acc=0 size=x", "size 'x' is not an integer"),
    ("MatMul local=0 acc=0 size=1 size=2", "size given twice"),
    ("MatMul local=0 acc=0 size=1 bias=2", r"unknown field\(s\) bias"),
    ("DataMove dram0->acc local=0 acc=0 size=0", "unknown direction 'dram0->acc'"),
    ("DataMove dram0->local local=0 dram0=0 size=0 accumulate", "takes no accumulate flag"),
    ("DataMove local->dram0 local=0 dram1=0 size=0", r"needs dram0=\.\.\."),
    ("SIMD Max(in,r1)", "SIMD needs DEST=Op"),
    ("SIMD out=Frobnicate(in,r1)", "unknown op 'Frobnicate'"),
    ("SIMD out=Add(in,r2)", "SIMD.right is 2"),
    ("Configure colour=3", "unknown register 'colour'"),
    ("Configure timeout=1 tracepoint=2", "takes one REGISTER=VALUE"),
    ("LoadWeights local=0x2000 size=0", "LoadWeights.local_address is 8192"),
])
def test_tasm_errors_name_the_line_and_problem(line, message):
    with pytest.raises(ProgramError, match="line 2: .*" + message):
        parse_program("NoOp\n" + line, PYNQZ1)


def test_blank_and_comment_lines_are_not_instructions():
    assert parse_instruction("   ; nothing") is None
    assert format_instruction(NoOp()) == "NoOp"


# ---------------------------------------------------------------- the RTL's reading (strict=False)

# Each word as the 12x12 RTL executes it (tests/test_tensil_rtl.py runs them on the RTL).
RTL_READINGS = [
    (_word(PERF, 1, 4, op0=100, op1=10), MatMul(100, 10, 0)),                  # flag bit 2 ignored
    (_word(PERF, 1, 0xE, op0=100, op1=10), MatMul(100, 10, 0, zeroes=True)),
    (_word(PERF, 3, 3, op1=12), LoadWeights(0, 12, zeroes=True)),              # 3 = Zeroes
    (_word(PERF, 3, 0xE, op1=12 | 1 << 20, op2=0xFFFF), LoadWeights(0, 12)),   # size mod 2^13
    (_word(PERF, 4, 0xA, op0=9, op2=1 << 3 | 0x1FF << 7),
     SIMD(SimdOp.ZERO, write_address=9, write=True)),                           # flag bit 3, pad
    (_word(PERF, 4, 2, op0=2048 + 9, op1=(1 << 23) + 300, op2=2 << 3),
     SIMD(SimdOp.MOVE, write_address=9, read_address=300, write=True)),        # acc mod 2^11
    (_word(PERF, 2, 0xD, op0=5, op1=2048 + 7 | 1 << 23, op2=0xE001),
     DataMove(K.LOCAL_TO_ACC, 5, 7, 1)),                                       # size mod 2^13
    (_word(PERF, 0, 0xF, 0xFFFF, 0xFFFFFF, 0xFFFF), NoOp()),
    (_word(PERF, 15, 0xF, op0=0x48 | 0xFFF0, op1=0xFFFFFF, op2=0xFFFF),
     Configure(ConfigRegister.TIMEOUT, 0xFFFF)),                                # 32 bits, 16 kept
    (_word(PERF, 15, 3, op0=0x0000 | 0x10, op1=0xFF0001),
     Configure(ConfigRegister.DRAM0_OFFSET, 0x1001)),
    (_word(PERF, 7, 5, op0=1), Skipped(7, 5, 1)),
    (_word(PERF, 2, 0xE, op0=1), Skipped(2, 0xE, 1)),
    (_word(PERF, 15, 0, op0=0x3), Skipped(15, 0, 3)),
]


@pytest.mark.parametrize("word, instruction", RTL_READINGS, ids=lambda x: str(x)[:40])
def test_lenient_decoding_reads_words_as_the_rtl_does(word, instruction):
    assert decode_instruction(word, PERF, strict=False) == instruction
    with pytest.raises(ProgramError):
        decode_instruction(word, PERF)   # strict: each of these is refused


@given(st.sampled_from(ARCHES[:8]), st.binary(min_size=0, max_size=80))
def test_lenient_decoding_takes_every_whole_word(arch, data):
    step = instruction_layout(arch).instruction_bytes
    data = data[:len(data) // step * step]
    program = decode_program(data, arch, strict=False)
    again = decode_program(encode_program(program, arch, strict=False), arch, strict=False)
    assert again == program
    text = format_program(program, arch, strict=False)
    assert parse_program(text, arch, strict=False) == program


def test_skipped_words_are_only_what_the_rtl_skips():
    with pytest.raises(ProgramError, match="refused by the strict policy: reserved opcode 0x5"):
        encode_instruction(Skipped(5, 0, 0), PERF)
    with pytest.raises(ProgramError, match="an instruction the RTL executes"):
        encode_instruction(Skipped(2, 0xD, 0), PERF, strict=False)
    assert format_instruction(Skipped(5, 1, 0x10)) == "Skipped opcode=0x5 flags=0x1 arguments=0x10"
    assert mnemonic(Skipped(5, 1, 0x10)) == "Skipped"
