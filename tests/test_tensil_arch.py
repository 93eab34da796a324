"""The `.tarch` reader and the instruction layout of every architecture Tensil ships."""

import json
import pathlib

import pytest

from tensil.arch import (
    ARCH_FIELDS,
    Architecture,
    instruction_layout,
    load_tarch,
    log2_ceil,
    parse_tarch,
    summary,
)
from tensil.errors import ArchError

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "tests" / "golden" / "tensil_arch"

# (local, acc, dram0, dram1 bits), operand (bits, address, stride, padding) x 2,
# operand2 (bits, address, padding), instruction bytes: derived by hand from
# InstructionLayout.scala's formulas (facts §1.3).
LAYOUTS = {
    "pynqz1": ((13, 11, 20, 20), (16, 13, 3, 0), (24, 20, 3, 1), (16, 13, 3), 8),
    "artya7100t": ((13, 11, 20, 20), (16, 13, 3, 0), (24, 20, 3, 1), (16, 13, 3), 8),
    "cmoda7": ((12, 12, 12, 15), (16, 12, 3, 1), (24, 15, 3, 6), (16, 12, 4), 8),
    "ultra96v2": ((15, 12, 21, 21), (24, 15, 3, 6), (24, 21, 3, 0), (16, 15, 1), 9),
    "zcu104": ((14, 12, 21, 21), (24, 14, 3, 7), (24, 21, 3, 0), (16, 14, 2), 9),
    "zcu104_uram": ((16, 15, 21, 21), (24, 16, 3, 5), (24, 21, 3, 0), (16, 16, 0), 9),
}


def _layout_row(arch: Architecture):
    lay = instruction_layout(arch)
    return ((lay.local_bits, lay.accumulator_bits, lay.dram0_bits, lay.dram1_bits),
            (lay.operand0_bits, lay.operand0_address_bits, lay.stride0_bits, lay.operand0_padding),
            (lay.operand1_bits, lay.operand1_address_bits, lay.stride1_bits, lay.operand1_padding),
            (lay.operand2_bits, lay.operand2_address_bits, lay.operand2_padding),
            lay.instruction_bytes)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_of_every_shipped_tarch(name):
    arch = load_tarch(SHIPPED / (name + ".tarch"))
    assert _layout_row(arch) == LAYOUTS[name]


def test_project_architectures_have_the_pynqz1_layout():
    for path in sorted((ROOT / "tensil_arch").glob("*.tarch")):
        arch = load_tarch(path)
        assert _layout_row(arch) == LAYOUTS["pynqz1"], path.name
        assert arch.array_size in (8, 12)


def test_compiler_backend_spec_architectures_have_7_13_25_byte_instructions():
    # CompilerBackendSpec: array 4, every depth 2^14 / 2^30 / 2^62, 4 strides, FLOAT32.
    for depth, size in ((1 << 14, 7), (1 << 30, 13), (1 << 62, 25)):
        arch = Architecture("FLOAT32", 4, depth, depth, depth, depth, 1, 4, 4, 1, 8)
        assert instruction_layout(arch).instruction_bytes == size


def test_simd_sub_instruction_widths_follow_the_register_count():
    base = load_tarch(SHIPPED / "pynqz1.tarch").to_dict()
    for registers, operand_bits in ((1, 1), (2, 2), (3, 2), (4, 3)):
        arch = Architecture.from_dict(dict(base, simd_registers_depth=registers))
        lay = instruction_layout(arch)
        assert (lay.simd_operand_bits, lay.simd_instruction_bits) == (
            operand_bits, 3 * operand_bits + 4)


def test_log2_ceil_is_tensils():
    assert [log2_ceil(n) for n in (1, 2, 3, 8, 9, 2048, 8192, 20480, 1048576)] == [
        0, 1, 2, 3, 4, 11, 13, 15, 20]
    with pytest.raises(ValueError):
        log2_ceil(0)


def test_to_dict_has_the_eleven_keys_in_tensils_order_and_round_trips(tmp_path):
    arch = load_tarch(ROOT / "tensil_arch" / "pynqz1_perf.tarch")
    assert tuple(arch.to_dict()) == ARCH_FIELDS
    path = tmp_path / "copy.tarch"
    path.write_text(arch.to_json())
    assert load_tarch(path) == arch
    assert json.loads((ROOT / "tensil_arch" / "pynqz1_perf.tarch").read_text()) == arch.to_dict()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(extra=1), r"unknown field\(s\) 'extra'"),
    (lambda d: d.pop("stride1_depth"), r"missing field\(s\) 'stride1_depth'"),
    (lambda d: d.update(data_type="FP64"), "field 'data_type' is 'FP64'; must be one of"),
    (lambda d: d.update(data_type=16), "field 'data_type' is 16"),
    (lambda d: d.update(array_size=0), r"field 'array_size' is 0; must be in 1\.\."),
    (lambda d: d.update(array_size=-8), "field 'array_size' is -8"),
    (lambda d: d.update(array_size=1 << 31), "field 'array_size' is 2147483648"),
    (lambda d: d.update(local_depth=8192.0), "field 'local_depth' is 8192.0; must be an integer"),
    (lambda d: d.update(local_depth="8192"), "field 'local_depth' is '8192'; must be an integer"),
    (lambda d: d.update(dram0_depth=True), "field 'dram0_depth' is True; must be an integer"),
    (lambda d: d.update(dram1_depth=1 << 63), "field 'dram1_depth' is 9223372036854775808"),
    (lambda d: d.update(number_of_threads=3), r"'number_of_threads' is 3; must be in 1\.\.2"),
    (lambda d: d.update(simd_registers_depth=None), "field 'simd_registers_depth' is None"),
])
def test_malformed_tarch_names_the_field(tmp_path, change, message):
    raw = load_tarch(SHIPPED / "pynqz1.tarch").to_dict()
    change(raw)
    path = tmp_path / "bad.tarch"
    path.write_text(json.dumps(raw))
    with pytest.raises(ArchError, match=message) as info:
        load_tarch(path)
    assert str(path) in str(info.value)


def test_unreadable_and_non_object_tarch(tmp_path):
    with pytest.raises(ArchError, match="cannot read the architecture file"):
        load_tarch(tmp_path / "missing.tarch")
    with pytest.raises(ArchError, match="not JSON"):
        parse_tarch("{", "x.tarch")
    with pytest.raises(ArchError, match="must be a JSON object"):
        parse_tarch("[1, 2]", "x.tarch")
    with pytest.raises(ArchError, match="field 'array_size' is 0"):
        Architecture("FP16BP8", 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)


def test_summary_lists_sizes_and_widths():
    text = summary(load_tarch(ROOT / "tensil_arch" / "pynqz1_perf.tarch"))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "Array size: 12" in lines
    assert "DRAM0 memory size (vectors/scalars/bytes/bits): 1,048,576 12,582,912 25,165,824 20" \
        in lines
    assert "Local memory size (vectors/scalars/bytes/bits): 8,192 98,304 196,608 13" in lines
    assert "Accumulator memory size (vectors/scalars/bytes/bits): 2,048 24,576 49,152 11" in lines
    assert "Operand #1 size (address/stride/padding bits): 24 20 3 1" in lines
    assert "Instruction size (bytes): 8" in lines
    assert lines[0] == "-" * len(lines[0]) and lines[1] == "ARCHITECTURE SUMMARY"


def test_a_deep_or_oversized_tarch_is_refused_with_a_message(tmp_path):
    """Issue 23: deep JSON in a 64 KiB .tarch raised RecursionError; a 250-byte one declared
    memories that numpy then tried to allocate."""
    path = tmp_path / "deep.tarch"
    path.write_text("[" * 30000 + "]" * 30000)
    with pytest.raises(ArchError, match="not JSON .*nested deeper than 4"):
        load_tarch(path)
    raw = load_tarch(SHIPPED / "pynqz1.tarch").to_dict()
    for key, value, message in (("array_size", 4096, r"'array_size' is 4096; must be in 1..256"),
                                ("accumulator_depth", 1 << 40, "more than on-chip memory holds"),
                                ("dram1_depth", 1 << 40, "more than a 32-bit DRAM window holds")):
        path.write_text(json.dumps(dict(raw, **{key: value})))
        with pytest.raises(ArchError, match=message):
            load_tarch(path)
