"""tensil.hwh: what a Tensil overlay's .hwh and build JSON say, and the refusal of a .tmodel
whose architecture is not the bitstream's. Fixtures (tests/fixtures/hwh) are written for this
project in the shape of PEFSL's block design and of the hwflow branch's."""

import dataclasses
import hashlib
import json
import pathlib
import shutil

import pytest

from tensil.arch import load_tarch
from tensil.errors import ArchMismatch, HwhError
from tensil.hwh import parse_hwh, read_design

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "hwh"
PERF = load_tarch(ROOT / "tensil_arch" / "pynqz1_perf.tarch")
SMALL = load_tarch(ROOT / "tensil_arch" / "pynqz1.tarch")


@pytest.fixture
def hwflow(tmp_path):
    """The hwflow-style overlay: .bit, .hwh and the build's JSON."""
    for suffix in (".hwh", ".json"):
        shutil.copy(FIXTURES / ("pynqz1_perf_125mhz" + suffix), tmp_path)
    bit = tmp_path / "pynqz1_perf_125mhz.bit"
    bit.write_bytes(b"\x00" * 64)
    return bit


def _rewrite_json(bit, change):
    path = bit.with_suffix(".json")
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def test_pefsls_design_reads_as_pynq_and_the_tcu_see_it():
    design = read_design(FIXTURES / "tensil_pynqz1.bit")
    assert (design.tcu_instance, design.tcu_module, design.arch_stem) == (
        "top_custom_perf_0", "top_custom_perf", "custom_perf")
    assert design.clock_mhz == 50.0 and design.clock_source == "processing_system7_0/FCLK_CLK3"
    assert (design.instruction_bits, design.dram_data_bits, design.dram_address_bits) == (64, 64, 32)
    assert design.dma_instance == "axi_dma_0"
    assert design.dma_parameters["C_M_AXI_MM2S_DATA_WIDTH"] == "64"
    assert design.dram_windows == {"dram0": (0, 0x1FFF_FFFF), "dram1": (0, 0x1FFF_FFFF)}
    assert design.tarch is None and design.json_path is None
    # without the build's JSON the .hwh cannot tell 8x8 from 12x12: the driver's self-test does
    assert design.mismatches(PERF) == [] and design.mismatches(SMALL) == []
    assert design.stream_problems() == []


def test_the_build_json_gives_the_tarch_and_a_wrong_model_is_refused_naming_both(hwflow):
    design = read_design(hwflow)
    assert design.clock_mhz == 125.0 and design.clock_source == "ps7_0/FCLK_CLK3"
    assert design.tarch == PERF and design.arch_stem == "pynqz1_perf"
    assert design.rtl_memories == ((192, 8192), (192, 2048))
    assert design.json_notes == ("clock 125 MHz (built)", "Vivado 2024.1")
    design.check_model(PERF)
    with pytest.raises(ArchMismatch, match=r"does not run on the bitstream pynqz1_perf_125mhz.bit "
                                           r"\(TCU top_pynqz1_perf\): array_size: the bitstream's TCU "
                                           r"has 12, the model 8; array_size: the bitstream's TCU "
                                           r"memories are 192/192 bits wide \(192x8192, 192x2048\), "
                                           r"the model's vectors 128 bits \(8 x 16\)"):
        design.check_model(SMALL)
    deeper = dataclasses.replace(PERF, local_depth=4096)
    problems = design.mismatches(deeper)
    assert problems == ["local_depth: the bitstream's TCU has 8192, the model 4096",
                        "local_depth: the bitstream's TCU memories have 2048/8192 vectors, the model "
                        "4096"]


def test_widths_the_hwh_does_carry_are_checked():
    design = read_design(FIXTURES / "tensil_pynqz1.bit")
    odd = dataclasses.replace(PERF, array_size=10)       # 20-byte vectors: not 8-byte beats
    assert design.mismatches(odd) == [
        "array_size: the model's 20-byte vectors (10 x FP16BP8) are not whole 64-bit beats of "
        "the bitstream's TCU DRAM ports"]
    narrow = dataclasses.replace(design, dma_parameters={"C_M_AXIS_MM2S_TDATA_WIDTH": "32"})
    assert narrow.stream_problems() == ["axi_dma_0 streams 32-bit words, the TCU's instruction "
                                        "port takes 64 bits"]
    with pytest.raises(ArchMismatch, match="streams 32-bit words"):
        narrow.check_model(PERF)


def test_the_models_name_against_the_tcus_is_a_note_not_a_refusal(hwflow):
    design = read_design(hwflow)
    model = type("M", (), {"name": "resnet9_f16_strided_32_pynqz1"})()
    assert "not named for the TCU's architecture 'pynqz1_perf'" in design.name_note(model)
    model.name = "resnet9_f16_strided_32_pynqz1_perf"
    assert design.name_note(model) is None


def test_a_json_of_another_build_or_schema_is_refused(hwflow):
    bit_hash = hashlib.sha256(hwflow.read_bytes()).hexdigest()
    _rewrite_json(hwflow, lambda raw: raw["bitstream"].update(sha256=bit_hash))
    read_design(hwflow)
    _rewrite_json(hwflow, lambda raw: raw["hwh"].update(sha256="0" * 64))
    with pytest.raises(HwhError, match=r"field 'hwh.sha256' is 000000000000 but "
                                       r"pynqz1_perf_125mhz.hwh hashes to .*describes another build"):
        read_design(hwflow)
    _rewrite_json(hwflow, lambda raw: raw.update(schema="other/1"))
    with pytest.raises(HwhError, match="field 'schema' is 'other/1'"):
        read_design(hwflow)
    _rewrite_json(hwflow, lambda raw: raw.update(schema="pynq-fewshot-fl/bitstream/1",
                                                 tarch={"array_size": 12}))
    with pytest.raises(HwhError, match="field 'tarch': missing field"):
        read_design(hwflow)


@pytest.mark.parametrize("text, message", [
    (b"<EDKSYSTEM><MODULES>", "not well-formed XML"),
    (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><EDKSYSTEM/>', "declares a DTD or entities"),
    (b"<EDKSYSTEM><MODULES/></EDKSYSTEM>", "no MODULE elements"),
    (b'<EDKSYSTEM><MODULES><MODULE INSTANCE="x"><PORTS><PORT NAME="p" LEFT="a" RIGHT="0"/>'
     b"</PORTS></MODULE></MODULES></EDKSYSTEM>", "port p LEFT is 'a', not an integer"),
])
def test_malformed_hwh_files_are_refused_with_the_reason(text, message):
    with pytest.raises(HwhError, match=message):
        parse_hwh(text, "x.hwh")


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
                  "<EDKSYSTEM><MODULES>&b;</MODULES></EDKSYSTEM>")


@pytest.mark.parametrize("data, message", [
    # Issue 23: the byte check for <!DOCTYPE missed a UTF-16 file, whose entities expat expanded
    (BILLION_LAUGHS.encode("utf-16"), "not UTF-8 XML"),
    (BILLION_LAUGHS.encode("utf-16-le"), "not UTF-8 XML"),
    (BILLION_LAUGHS.replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode(), "not UTF-8 XML"),
    (BILLION_LAUGHS.encode(), "declares a DTD or entities"),
    # 64 MiB nested deep reached 2.76 GB: refused as soon as the nesting passes the bound
    (b"<EDKSYSTEM>" + b"<a>" * 100000 + b"</a>" * 100000 + b"</EDKSYSTEM>", "nested deeper than 32"),
    (b"<EDKSYSTEM>" + b"<a/>" * 600000 + b"</EDKSYSTEM>", "more than 500000 elements"),
])
def test_hostile_hwh_files_are_refused_before_they_cost_memory(data, message):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(HwhError, match=message):
            parse_hwh(data, "x.hwh")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400 * len(data) + (64 << 20)


def test_a_malformed_build_json_is_refused_with_a_message(hwflow):
    path = hwflow.with_suffix(".json")
    path.write_text('{"schema":' * 5000 + "1" + "}" * 5000)  # RecursionError before
    with pytest.raises(HwhError, match="not a readable JSON file .*nested deeper"):
        read_design(hwflow)
    for rtl in ([1], {"memories": {"a": 1}}, "x"):  # AttributeError / TypeError before
        path.write_text(json.dumps({"schema": "pynq-fewshot-fl/bitstream/1", "tarch": PERF.to_dict(), "rtl": rtl}))
        with pytest.raises(HwhError, match="field 'rtl' must be an object whose 'memories' is a list"):
            read_design(hwflow)


def test_a_design_without_or_with_two_tcus_is_refused(tmp_path):
    text = (FIXTURES / "tensil_pynqz1.hwh").read_text()
    (tmp_path / "base.hwh").write_text(text.replace("instruction_tdata", "other_tdata"))
    with pytest.raises(HwhError, match="no Tensil TCU in this design"):
        read_design(tmp_path / "base.bit")
    start = text.index('    <MODULE FULLNAME="/top_custom_perf_0"')
    end = text.index("</MODULE>", start) + len("</MODULE>\n")
    twice = text[:end] + text[start:end].replace('INSTANCE="top_custom_perf_0"',
                                                 'INSTANCE="top_custom_perf_1"') + text[end:]
    (tmp_path / "two.hwh").write_text(twice)
    with pytest.raises(HwhError, match="2 Tensil TCUs"):
        read_design(tmp_path / "two.bit")
    with pytest.raises(HwhError, match="no .hwh beside the bitstream"):
        read_design(tmp_path / "none.bit")
