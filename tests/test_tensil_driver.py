"""tensil.driver against the pynq fakes: the bytes a board's TCU and DMA would see, features
equal to the emulator's (and the RTL's where it is present), memory, timeouts, refusals.

The models are hand-assembled (tests/tensil_models.py) until the compiler's land: a 3x3
stride-2 convolution with bias, Relu and average pooling, 16x16 inputs."""

import pathlib

import numpy as np
import pytest

from tensil.arch import load_tarch
from tensil.driver import DRAM_ALIGN, TensilDriver, cma_free_bytes, plan_memory
from tensil.emulator import run_model
from tensil.errors import ArchMismatch, DriverError, TcuTimeout
from tensil.fixed import FORMATS, from_float_driver
from tensil.isa import (
    ConfigRegister,
    Configure,
    DataMove,
    DataMoveKind,
    decode_program,
    encode_program,
)
from tensil.layout import (
    ColumnPacking,
    column_packing,
    from_vectors,
    given_name,
    input_vector_count,
    input_vectors,
    pack_columns,
    packed_input_name,
    to_vectors,
    vector_count,
)
from tensil.tmodel import load_tmodel
from tensil_tools import cosim
from tests.fake_pynq import (
    TENSIL_BITFILE,
    CosimTcu,
    FakeBoard,
    FakeDDR,
    FakeOverlay,
    FakeTcu,
    Write,
)
from tests.fake_pynq import ddr as fake_ddr
from tests.fake_pynq.board import DESIGNS, tensil_design
from tests.tensil_models import build_conv_model

ROOT = pathlib.Path(__file__).resolve().parents[1]
PERF = ROOT / "tensil_arch" / "pynqz1_perf.tarch"     # 12x12, PEFSL's
SMALL = ROOT / "tensil_arch" / "pynqz1.tarch"         # 8x8, Tensil's PYNQ-Z1
SIZE, FEATURES = 16, 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tensil_models")
    return {arch.stem: load_tmodel(build_conv_model(folder / arch.stem, arch, SIZE, FEATURES)
                                   ["tmodel"])
            for arch in (PERF, SMALL)}


def _frame(seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=(1, 3, SIZE, SIZE))).astype(np.float32)


def _emulated(model, x):
    n = model.arch.array_size
    var = model.inputs[0].name
    outputs, _ = run_model(model, {var: input_vectors(var, x, n)})
    return from_vectors(outputs["Output"], (1, FEATURES), n).astype(np.float32)


def _board(tcu_arch, ddr=None, **board_options):
    board = FakeBoard(ddr=ddr or FakeDDR(size=8 << 20), **board_options)
    overlay = FakeOverlay(TENSIL_BITFILE, device=board)
    return board, overlay, FakeTcu(load_tarch(tcu_arch), board.ddr).attach(board)


# --- the layout -------------------------------------------------------------------------------


def test_vars_layout_is_nhwc_padded_to_the_array_size():
    x = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    vectors = to_vectors(x, 4)
    assert vectors.shape == (8, 4) and vector_count(x.shape, 4) == 8
    np.testing.assert_array_equal(vectors[1], [x[0, 0, 0, 1], x[0, 1, 0, 1], x[0, 2, 0, 1], 0])
    np.testing.assert_array_equal(from_vectors(vectors, x.shape, 4), x)
    features = np.arange(10.0).reshape(1, 10)
    assert to_vectors(features, 4).shape == (3, 4) and to_vectors(features, 4)[2, 2:].tolist() == [0, 0]
    np.testing.assert_array_equal(from_vectors(to_vectors(features, 4).reshape(-1), (1, 10), 4),
                                  features)
    with pytest.raises(ValueError, match="do not hold a tensor of shape"):
        from_vectors(np.zeros(8), (1, 10), 4)
    with pytest.raises(ValueError, match="1-D, 2-D or 4-D"):
        vector_count((1, 2, 3), 4)


# --- memory ----------------------------------------------------------------------------------------


def test_the_packed_layout_lays_kernel_columns_side_by_side():
    x = np.arange(2 * 3 * 4, dtype=np.int64).reshape(1, 2, 3, 4)
    packed = pack_columns(x, 3, 1)
    assert packed.shape == (1, 6, 3, 4)
    np.testing.assert_array_equal(packed[0, :, 0], [[0, 0, 1, 2], [0, 12, 13, 14],   # column w - 1
                                                    [0, 1, 2, 3], [12, 13, 14, 15],   # w itself
                                                    [1, 2, 3, 0], [13, 14, 15, 0]])   # w + 1
    name = packed_input_name("Input", 3, 1)
    assert column_packing(name) == ColumnPacking("Input", 3, 1) and given_name(name) == "Input"
    assert column_packing("Input") is None and given_name("Input/columns3") == "Input/columns3"
    assert input_vector_count(name, (1, 2, 3, 4), 4) == 24 and input_vector_count("Input", (1, 2, 3, 4), 4) == 12
    np.testing.assert_array_equal(input_vectors(name, x, 4), to_vectors(packed, 4))
    with pytest.raises(ValueError, match="packed image: a 4-D"):
        input_vectors(name, x.reshape(2, 12), 4)
    # every second pixel, one column more: a vector holds both pixels' columns
    two = pack_columns(x, 4, 1, 2)
    assert two.shape == (1, 8, 3, 2)
    np.testing.assert_array_equal(two[0, :, 0], [[0, 1], [0, 13], [0, 2], [12, 14],   # columns 2j - 1, 2j
                                                 [1, 3], [13, 15], [2, 0], [14, 0]])   # 2j + 1, 2j + 2
    name = packed_input_name("Input", 4, 1, 2)
    assert name == "Input/columns(kw=4,left=1,step=2)" and packed_input_name("Input", 3, 1, 1) == "Input/columns(kw=3,left=1)"
    assert column_packing(name) == ColumnPacking("Input", 4, 1, 2) and given_name(name) == "Input"
    assert input_vector_count(name, (1, 2, 3, 4), 4) == 12
    np.testing.assert_array_equal(input_vectors(name, x, 4), to_vectors(two, 4))
    for bad in ("Input/columns(kw=4,left=1,step=0)", "Input/columns(kw=2,left=1,step=3)"):
        with pytest.raises(ValueError, match="not one"):
            column_packing(bad)


@pytest.fixture(scope="module")
def packed_model(tmp_path_factory):
    """A 3-channel convolution compiled by our compiler: the host packs its image."""
    from onnx_kit import ModelBuilder

    from tensil_tools.compiler import compile_model

    b = ModelBuilder((1, 3, SIZE, SIZE), 11)
    data = b.model(b.op("Relu", [b.conv(b.input, 3, 16, 3, pads=1)]))
    result = compile_model(data, PERF, tmp_path_factory.mktemp("packed"), name="packed")
    return result, load_tmodel(result.files["tmodel"])


def test_an_input_the_host_packs_is_given_by_its_onnx_name(packed_model):
    result, model = packed_model
    (var,) = model.inputs
    assert column_packing(var.name) == ColumnPacking("Input", 3, 1)
    board, overlay, _ = _board(PERF)
    driver = TensilDriver.from_overlay(overlay, model, allocate=board.allocate)
    for seed in range(2):
        x = _frame(seed)
        out = driver.run({"Input": x}, {"Output": (1, 16, SIZE, SIZE)})["Output"]
        expected = result.output_floats(result.run_emulator(x[0])[0])
        np.testing.assert_array_equal(out[0], expected.astype(np.float32))
    assert driver.last_run.saturated == {"Input": 0}
    with pytest.raises(ValueError, match=r"the model's inputs are \['Input'\]"):
        driver.run({var.name: _frame()})   # the caller gives the image, not its packing
    with pytest.raises(ValueError, match=r"input 'Input' of shape \(1, 3, 8, 8\) takes 64 vectors"):
        driver.run({"Input": np.zeros((1, 3, 8, 8), np.float32)})
    # Tensil's way (vectors by the .tmodel's names) wants the packed vectors, and says so
    with pytest.raises(ValueError, match=r"missing model input\(s\): Input/columns\(kw=3,left=1\) "
                                         r"\(.*the image packed by the host, as tensil.layout.input_vectors"):
        run_model(model, {"Input": _frame()})


def test_weights_kept_in_local_memory_are_read_once_when_the_driver_starts(packed_model):
    """tensil_tools.compiler.kept: the program's first instructions read weight blocks into local
    memory that nothing after them writes (tensil.machine.prologue_length); the driver runs them
    with the consts, once, and streams the rest each frame: the outputs are the whole program's."""
    result, model = packed_model
    program = decode_program(model.prog_path.read_bytes(), model.arch)
    board, overlay, tcu = _board(PERF)
    driver = TensilDriver.from_overlay(overlay, model, allocate=board.allocate)
    prologue = driver.plan.prologue
    assert prologue == result.program.prologue == 1 and program[0].kind == DataMoveKind.DRAM1_TO_LOCAL
    started = len(tcu.executed)
    assert tcu.executed[:started].count(program[0]) == 1
    for seed in range(2):
        x = _frame(seed)
        out = driver.run({"Input": x}, {"Output": (1, 16, SIZE, SIZE)})["Output"]
        np.testing.assert_array_equal(out[0], result.output_floats(result.run_emulator(x[0])[0]).astype(np.float32))
    assert tcu.executed[started:] == 2 * (program[prologue:] + driver._probe())


def test_drivers_taking_turns_on_one_tcu_set_it_up_again(packed_model, models):
    """A driver configures the TCU's DRAM windows and runs its prologue (the weights its program
    keeps in local memory) when it starts; another driver or a TcuMachine using the TCU in
    between takes both, so a driver whose TCU was used since sets it up again before its frame."""
    from tensil.driver import TcuMachine

    result, kept = packed_model
    hand = models["pynqz1_perf"]
    board, overlay, tcu = _board(PERF)
    first = TensilDriver.from_overlay(overlay, kept, allocate=board.allocate)
    second = TensilDriver.from_overlay(overlay, hand, allocate=board.allocate)
    machine = TcuMachine(overlay.axi_dma_0, hand.arch, allocate=board.allocate)
    prologue = first.program[0]   # kept.py: its first instruction reads the kept weights
    for seed in range(2):
        x = _frame(seed)
        started = len(tcu.executed)
        out = first.run({"Input": x}, {"Output": (1, 16, SIZE, SIZE)})["Output"]
        np.testing.assert_array_equal(out[0], result.output_floats(result.run_emulator(x[0])[0]).astype(np.float32))
        assert tcu.executed[started:].count(prologue) == 1   # set up again: the other had the TCU
        np.testing.assert_array_equal(second.run({"Input": x}, {"Output": (1, FEATURES)})["Output"], _emulated(hand, x))
        machine.run([], np.zeros((1, 12), np.int16), np.zeros((1, 12), np.int16))
    started = len(tcu.executed)
    for seed in (5, 6):   # nothing in between: the frames alone
        first.run({"Input": _frame(seed)})
    assert tcu.executed[started:].count(prologue) == 1
    assert tcu.executed[-(len(first.program) + 1):] == first.program[first.plan.prologue:] + first._probe()
    board.ddr.check_no_hazards()


def test_a_prologue_is_the_first_reads_into_local_memory_that_nothing_after_them_writes():
    from tensil.driver import flush_probe
    from tensil.isa import LoadWeights, MatMul
    from tensil.machine import prologue_length

    K = DataMoveKind

    def read(local, dram, count):
        return DataMove(K.DRAM1_TO_LOCAL, local, dram, count - 1)

    body = [DataMove(K.DRAM0_TO_LOCAL, 0, 0, 9), LoadWeights(100, 12), MatMul(0, 0, 9),
            DataMove(K.ACC_TO_LOCAL, 20, 0, 9)]
    assert prologue_length([read(100, 0, 13), read(200, 13, 13)] + body) == 2
    assert prologue_length(body) == 0 and prologue_length([]) == 0
    # a move the program overwrites runs every frame, and so does every move after it
    assert prologue_length([read(100, 0, 13), read(25, 13, 13), read(200, 26, 13)] + body) == 1
    assert prologue_length([read(25, 13, 13), read(100, 0, 13)] + body) == 0
    # a strided write touches its vectors only
    strided = DataMove(K.ACC_TO_LOCAL, 300, 0, 3, local_stride=2)   # 300, 304, 308, 312
    assert prologue_length([read(301, 0, 3)] + body + [strided]) == 1
    assert prologue_length([read(301, 0, 4)] + body + [strided]) == 0
    # what the driver runs after each program counts: its flush probe goes through local memory
    assert prologue_length([read(8180, 0, 11)] + body, flush_probe(8191, 1, 2)) == 1
    assert prologue_length([read(8180, 0, 12)] + body, flush_probe(8191, 1, 2)) == 0
    # DRAM1 that the program writes holds no constant
    assert prologue_length([read(100, 40, 13)] + body + [DataMove(K.LOCAL_TO_DRAM1, 0, 52, 0)]) == 0
    # conservative: a move run each frame over an earlier one's vectors keeps that one too
    assert prologue_length([read(100, 0, 13), read(500, 13, 1), read(105, 20, 2)] + body
                           + [DataMove(K.ACC_TO_LOCAL, 500, 0, 0)]) == 0


def test_memory_is_sized_from_the_model_not_the_tarch(models):
    model = models["pynqz1_perf"]
    program = decode_program(model.prog_path.read_bytes(), model.arch)
    plan = plan_memory(model, program)
    assert plan.vector_bytes == 24
    assert plan.dram0_vectors == SIZE * SIZE + 1 + 2    # input, output vector, probe
    assert plan.dram1_vectors == model.consts[0].size
    assert plan.probe_target == plan.dram0_vectors - 2 and plan.probe_local == 8191
    assert plan.cma_bytes < 200 << 10       # Tensil's driver: 72 MiB for this architecture


def test_a_program_that_moves_the_dram_windows_is_refused(models, tmp_path):
    model = models["pynqz1_perf"]
    program = decode_program(model.prog_path.read_bytes(), model.arch)
    with pytest.raises(DriverError, match="instruction 1 configures DRAM1_OFFSET; the driver owns"):
        plan_memory(model, program[:1] + [Configure(ConfigRegister.DRAM1_OFFSET, 7)])


def test_cma_free_reads_proc_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  510000 kB\nCmaTotal:  131072 kB\nCmaFree:   98304 kB\n")
    assert cma_free_bytes(str(meminfo)) == 98304 * 1024
    meminfo.write_text("MemTotal:  510000 kB\n")
    assert cma_free_bytes(str(meminfo)) is None and cma_free_bytes(str(tmp_path / "no")) is None


def test_a_board_without_enough_cma_gets_the_figure_and_keeps_nothing(models):
    board, overlay, _ = _board(PERF, ddr=FakeDDR(size=64 << 10))
    with pytest.raises(DriverError, match=r"cannot allocate DRAM0 \(6216 bytes of contiguous "
                                          r"memory\): BO allocation failed.*needs 0\.1\d MiB of "
                                          r"CMA in all.*cma=128M"):
        TensilDriver.from_overlay(overlay, models["pynqz1_perf"], allocate=board.allocate)
    assert board.ddr.used == 0


def test_windows_are_aligned_to_64k_whatever_the_allocator_gives(models, monkeypatch):
    monkeypatch.setattr(fake_ddr, "cma_alignment", lambda size: fake_ddr.PAGE)
    board, overlay, tcu = _board(PERF)
    first = board.allocate((1,), np.uint8)           # the next buffer starts 4 KiB in
    driver = TensilDriver.from_overlay(overlay, models["pynqz1_perf"], allocate=board.allocate)
    phys = [driver._dram0.phys, driver._dram1.phys]
    assert all(p % DRAM_ALIGN == 0 for p in phys)
    assert driver._dram0.buffer.physical_address % DRAM_ALIGN != 0   # the slack was needed
    np.testing.assert_array_equal(driver.run({"Input": _frame()}, {"Output": (1, FEATURES)})
                                  ["Output"], _emulated(models["pynqz1_perf"], _frame()))
    assert tcu.machine.config[ConfigRegister.DRAM0_OFFSET] == phys[0] >> 16
    driver.close()
    first.freebuffer()
    assert board.ddr.used == 0


# --- a frame, as a board sees it -----------------------------------------------------------------


@pytest.mark.parametrize("arch", ["pynqz1_perf", "pynqz1"])
@pytest.mark.parametrize("cacheable, ranged", [(False, False), (True, False), (True, True)],
                         ids=["coherent", "cacheable-pynq3", "cacheable-pynq2-ranged-sync"])
def test_features_equal_the_emulators_and_the_traffic_is_a_boards(models, arch, cacheable, ranged):
    """pynq 3 syncs whole buffers; pynq 2.x syncs the view the driver names (its inputs, the
    probe, its outputs: not all of DRAM0 a frame), so a range it forgets shows there."""
    model = models[arch]
    board, overlay, tcu = _board(PERF if arch == "pynqz1_perf" else SMALL,
                                 ddr=FakeDDR(size=8 << 20, ranged_sync=ranged))
    driver = TensilDriver.from_overlay(overlay, model, allocate=board.allocate,
                                       cacheable=cacheable)
    start = len(tcu.received)
    for seed in range(3):
        x = _frame(seed)
        out = driver.run({"Input": x}, {"Output": (1, FEATURES)})
        np.testing.assert_array_equal(out["Output"], _emulated(model, x))   # bit for bit
    report = driver.last_run
    assert report.transfers == 1 and report.saturated == {"Input": 0} and report.polls == 1
    board.ddr.check_no_hazards()   # every flush and invalidate where a board needs it

    # the start stream: the DRAM windows in 64 KiB units, then the self-test
    p, local = driver.plan, model.arch.local_depth - 1
    d0, d1 = driver._dram0.phys, driver._dram1.phys
    expected_start = encode_program([
        Configure(ConfigRegister.DRAM0_OFFSET, d0 >> 16), Configure(ConfigRegister.DRAM1_OFFSET, d1 >> 16),
        DataMove(DataMoveKind.DRAM0_TO_LOCAL, local, 1, 0),
        DataMove(DataMoveKind.LOCAL_TO_DRAM0, local, 3, 0)], model.arch)
    probe = encode_program([DataMove(DataMoveKind.DRAM0_TO_LOCAL, local, p.probe_source, 0),
                            DataMove(DataMoveKind.LOCAL_TO_DRAM0, local, p.probe_target, 0)],
                           model.arch)
    program = model.prog_path.read_bytes()
    assert bytes(tcu.received[:start]) == expected_start + probe   # start; consts (none to local)
    assert bytes(tcu.received[start:]) == 3 * (program + probe)    # the frames: program + probe
    # every DRAM access of the TCU lies in the driver's windows
    for _, phys, nbytes in tcu.bus:
        assert (d0 <= phys and phys + nbytes <= d0 + p.dram0_bytes
                or d1 <= phys and phys + nbytes <= d1 + p.dram1_bytes)
    # the DMA's registers for the last frame: address, high word, length (pynq's order)
    dma = board.hardware("axi_dma_0")
    stream = driver._streams.phys + driver._segments["program"][0]
    assert [t for t in dma.transactions if isinstance(t, Write)][-3:] == [
        Write(0x18, stream), Write(0x1C, 0), Write(0x28, len(program) + len(probe))]
    driver.close()
    assert board.ddr.used == 0
    with pytest.raises(DriverError, match="closed"):
        driver.run({"Input": x})


def test_a_program_longer_than_a_transfer_goes_in_several(models):
    model = models["pynqz1_perf"]
    design = dict(DESIGNS)
    small_dma = tensil_design()
    small_dma[0]["axi_dma_0"]["parameters"]["c_sg_length_width"] = "10"   # 1023-byte transfers
    design[TENSIL_BITFILE] = lambda: small_dma
    board = FakeBoard(ddr=FakeDDR(size=8 << 20), designs=design)
    overlay = FakeOverlay(TENSIL_BITFILE, device=board)
    FakeTcu(model.arch, board.ddr).attach(board)
    driver = TensilDriver.from_overlay(overlay, model, allocate=board.allocate)
    x = _frame(4)
    out = driver.run({"Input": x}, {"Output": (1, FEATURES)})["Output"]
    total = model.prog.size + 16
    assert driver.last_run.transfers == -(-total // 1016) > 1     # 1016: whole instructions
    assert driver.last_run.stream_bytes == total
    np.testing.assert_array_equal(out, _emulated(model, x))
    capped = TensilDriver.from_overlay(overlay, model, allocate=board.allocate,
                                       max_transfer_bytes=64)
    np.testing.assert_array_equal(capped.run({"Input": x}, {"Output": (1, FEATURES)})["Output"], out)
    assert capped.last_run.transfers == total // 64 + 1


def test_consts_go_to_local_memory_once_when_the_model_says_so(tmp_path):
    model = load_tmodel(build_conv_model(tmp_path, PERF, SIZE, FEATURES,
                                         load_consts_to_local=True)["tmodel"])
    board, overlay, tcu = _board(PERF)
    driver = TensilDriver.from_overlay(overlay, model, allocate=board.allocate)
    streams = decode_program(bytes(tcu.received), model.arch)
    consts = model.consts[0]
    assert DataMove(DataMoveKind.DRAM1_TO_LOCAL, 0, 0, consts.size - 1) in streams
    x = _frame(2)
    np.testing.assert_array_equal(driver.run({"Input": x}, {"Output": (1, FEATURES)})["Output"],
                                  _emulated(model, x))


def test_saturation_is_reported_not_wrapped(models):
    model = models["pynqz1_perf"]
    board, overlay, _ = _board(PERF)
    driver = TensilDriver.from_overlay(overlay, model, allocate=board.allocate)
    x = _frame(1, scale=100.0)      # |x| up to ~400: FP16BP8 ends at +-128
    out = driver.run({"Input": x}, {"Output": (1, FEATURES)})["Output"]
    over = int(np.count_nonzero(np.abs(x) >= 128))
    assert driver.last_run.saturated == {"Input": over} and over > 0
    np.testing.assert_array_equal(out, _emulated(model, x))   # the emulator's run_model saturates
    vectors = to_vectors(x, 12)
    big = np.unravel_index(np.argmax(vectors), vectors.shape)       # a value of about +300
    assert driver.dram0[big] == 32767                               # saturated in DRAM0,
    wrapped = from_float_driver(vectors, FORMATS["FP16BP8"])[big] / 256  # Tensil's driver wraps:
    assert abs(wrapped - vectors[big]) > 128                              # off by 256


def test_inputs_must_be_the_models(models):
    board, overlay, _ = _board(PERF)
    driver = TensilDriver.from_overlay(overlay, models["pynqz1_perf"], allocate=board.allocate)
    with pytest.raises(ValueError, match=r"the model's inputs are \['Input'\]; got \['x'\]"):
        driver.run({"x": _frame()})
    with pytest.raises(ValueError, match=r"input 'Input' of shape \(1, 3, 8, 8\) takes 64 vectors "
                                         r"of 12 lanes; the model's region holds 256"):
        driver.run({"Input": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(ValueError, match="finite"):
        driver.run({"Input": np.full((1, 3, SIZE, SIZE), np.nan, np.float32)})


# --- waiting, and what hangs --------------------------------------------------------------------


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 0.01
        return self.now


def test_the_driver_really_waits_for_the_probe(models):
    model = models["pynqz1_perf"]
    board, overlay, tcu = _board(PERF)
    tcu.lag = True          # nothing runs until the driver's poll loop lets time pass
    driver = TensilDriver.from_overlay(overlay, model, allocate=board.allocate, sleep=tcu.advance)
    x = _frame(3)
    np.testing.assert_array_equal(driver.run({"Input": x}, {"Output": (1, FEATURES)})["Output"],
                                  _emulated(model, x))
    assert driver.last_run.polls == 2


def test_a_hung_tcu_times_out_naming_the_probe(models):
    model = models["pynqz1_perf"]
    board, overlay, tcu = _board(PERF)
    driver = TensilDriver.from_overlay(overlay, model, allocate=board.allocate, clock=_Clock(),
                                       sleep=lambda s: None, timeout_s=1.0)
    tcu.hang_after = len(tcu.executed) + 40
    with pytest.raises(TcuTimeout, match=r"did not finish the program stream: the flush probe "
                                         r"\(DataMove DRAM0 vector 258 -> local 8191 -> DRAM0 vector "
                                         r"257, at 0x[0-9a-f]+\) had not landed 1 s later"):
        driver.run({"Input": _frame()})


def test_a_stalled_stream_times_out_naming_the_transfer(models):
    board, overlay, _ = _board(PERF)
    board.hardware("axi_dma_0").latency = 10 ** 9      # the TCU never takes the stream
    with pytest.raises(TcuTimeout, match=r"did not finish the start stream: the AXI DMA's MM2S "
                                         r"transfer of stream bytes 0..32 \(of 32, 4 instructions\) "
                                         r"was still running"):
        TensilDriver.from_overlay(overlay, models["pynqz1_perf"], allocate=board.allocate,
                                  clock=_Clock(), sleep=lambda s: None, timeout_s=1.0)
    assert board.ddr.used == 0


def test_a_design_without_a_tcu_times_out_at_the_self_test(models):
    board = FakeBoard(ddr=FakeDDR(size=8 << 20))
    overlay = FakeOverlay(TENSIL_BITFILE, device=board)   # nothing on the DMA's stream
    with pytest.raises(TcuTimeout, match=r"start stream: the self-test .* wrote nothing"):
        TensilDriver.from_overlay(overlay, models["pynqz1_perf"], allocate=board.allocate,
                                  clock=_Clock(), sleep=lambda s: None)


def test_a_bitstream_of_another_array_size_is_refused_by_the_self_test(models):
    board, overlay, _ = _board(PERF)                 # a 12x12 TCU
    with pytest.raises(ArchMismatch, match=r"the bitstream's TCU moves 24-byte vectors \(12 FP16BP8 "
                                           r"lanes\); the model .*pynqz1.tmodel was compiled for "
                                           r"array_size 8 \(16-byte vectors\)"):
        TensilDriver.from_overlay(overlay, models["pynqz1"], allocate=board.allocate)
    assert board.ddr.used == 0


def test_buffers_outside_the_tcus_reach_are_refused(models):
    board, overlay, _ = _board(PERF)
    with pytest.raises(DriverError, match=r"DRAM0 at 0x[0-9a-f]+\.\.0x[0-9a-f]+ is outside what the "
                                          r"TCU's m_axi_dram0 master reaches \(0x0\.\.0xfffffff"):
        TensilDriver.from_overlay(overlay, models["pynqz1_perf"], allocate=board.allocate,
                                  dram_windows={"dram0": (0, 0x0FFF_FFFF)})


def test_an_overlay_that_is_not_loaded_is_refused(models):
    board = FakeBoard()
    overlay = FakeOverlay(TENSIL_BITFILE, device=board)
    FakeOverlay("base.bit", device=board)
    with pytest.raises(DriverError, match="is not the one loaded"):
        TensilDriver.from_overlay(overlay, models["pynqz1_perf"], allocate=board.allocate)


# --- the real RTL ------------------------------------------------------------------------------------


@pytest.mark.skipif(cosim.unavailable() is not None, reason="co-simulation: %s" % cosim.unavailable())
def test_the_rtl_behind_the_fake_dma_computes_the_emulators_features(models):
    model = models["pynqz1_perf"]
    board = FakeBoard(ddr=FakeDDR(base=0, size=2 << 20))
    overlay = FakeOverlay(TENSIL_BITFILE, device=board)
    tcu = CosimTcu(model.arch, board.ddr).attach(board)
    driver = TensilDriver.from_overlay(overlay, model, allocate=board.allocate, timeout_s=30.0)
    x = _frame(5)
    out = driver.run({"Input": x}, {"Output": (1, FEATURES)})["Output"]
    np.testing.assert_array_equal(out, _emulated(model, x))
    assert len(tcu.cycles) == 3 and tcu.cycles[-1] > model.prog.size // 8


def test_a_frame_syncs_its_inputs_outputs_and_probe_only(models):
    """A frame flushes what the CPU wrote (the inputs, the probe's two vectors) and invalidates what
    it reads (the probe's target, the outputs): with pynq 2.x's ranged syncs a large DRAM0 (spilled
    activations) costs no cache work a frame. Before: all of DRAM0, twice a frame."""
    model = models["pynqz1_perf"]
    board, overlay, _ = _board(PERF, ddr=FakeDDR(size=8 << 20, ranged_sync=True))
    driver = TensilDriver.from_overlay(overlay, model, allocate=board.allocate, cacheable=True)
    driver.run({"Input": _frame(0)}, {"Output": (1, FEATURES)})
    before = len(board.ddr.memops)
    np.testing.assert_array_equal(driver.run({"Input": _frame(1)}, {"Output": (1, FEATURES)})["Output"],
                                  _emulated(model, _frame(1)))
    p, base = driver.plan, driver._dram0.phys

    def lines(first, count):   # the 32-byte cache lines around vectors first..first+count-1
        lo, hi = base + first * p.vector_bytes, base + (first + count) * p.vector_bytes
        return lo // 32 * 32, -(-hi // 32) * 32

    synced = [(op, phys, phys + nbytes) for op, phys, nbytes in board.ddr.memops[before:]
              if op in ("flush", "invalidate") and base <= phys < base + p.dram0_bytes]
    expected = [("flush", *lines(v.base, v.size)) for v in model.inputs]
    expected += [("flush", *lines(p.probe_target, 2)), ("invalidate", *lines(p.probe_target, 1))]
    expected += [("invalidate", *lines(v.base, v.size)) for v in model.outputs]
    assert synced == expected   # nothing else of DRAM0: what lies between them is the TCU's alone
    board.ddr.check_no_hazards()


@pytest.mark.parametrize("cacheable", [False, True])
def test_the_tcu_is_a_machine_like_the_emulator(models, cacheable):
    """Issue 24: emulator, RTL co-simulation and the board's TCU behind one Machine interface: the
    same run_model gives the same outputs and DRAM images on the (fake) board as on the emulator."""
    from tensil.driver import TcuMachine
    from tensil.emulator import EmulatorMachine
    from tensil.machine import run_model as run_on

    model = models["pynqz1_perf"]
    board, overlay, tcu = _board(PERF, ddr=FakeDDR(size=8 << 20, ranged_sync=True))
    machine = TcuMachine(overlay.axi_dma_0, model.arch, allocate=board.allocate, cacheable=cacheable)
    var = model.inputs[0].name
    inputs = {var: input_vectors(var, _frame(2), model.arch.array_size)}

    on_tcu, run = run_on(machine, model, inputs)
    emulated, reference = run_on(EmulatorMachine(model.arch), model, inputs)

    np.testing.assert_array_equal(on_tcu["Output"], emulated["Output"])
    np.testing.assert_array_equal(run.dram0, reference.dram0)
    np.testing.assert_array_equal(run.dram1, reference.dram1)
    assert run.cycles is None and run.detail.transfers >= 1 and run.detail.polls >= 1
    assert board.ddr.used == 0            # every buffer of the run given back
    board.ddr.check_no_hazards()
    with pytest.raises(ValueError, match=r"shape \(vectors, 12\)"):
        machine.run(b"", np.zeros((4, 8), np.int16), np.zeros((1, 12), np.int16))
