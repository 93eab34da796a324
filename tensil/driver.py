"""Our PYNQ driver of the Tensil TCU (board part: numpy, `pynq` imported lazily, Python 3.8).

    driver = TensilDriver.from_overlay(pynq.Overlay("tensil_pynqz1.bit"), load_tmodel(path))
    outputs = driver.run({"Input": x}, {"Output": (1, 80)})   # NCHW float in, floats out
    driver.last_run.saturated, driver.last_run.total_s          # what the frame cost
    driver.close()

The protocol is Tensil's (facts §6), rebuilt around what one model needs:
- Memory. DRAM0 (inputs, outputs, activations, the driver's probe) and DRAM1 (the consts)
  are sized from the `.tmodel` and its decoded program, not from the `.tarch` depths:
  Tensil's driver takes 56-72 MiB of CMA whatever the model, this takes what the program
  reaches plus 64 KiB of alignment slack a window (`MemoryPlan.cma_bytes`). Each window is
  one `pynq.allocate` with that slack, aligned inside to 64 KiB, because the TCU's Configure
  takes offsets in 64 KiB units. A third buffer holds the instruction streams.
- Start. One stream sets DRAM0/DRAM1 offsets (Configure) and runs a self-test: a DataMove of
  one vector from DRAM0 to local memory and back shows how many bytes a vector has on the
  bitstream's TCU, so an array size that differs from the model's is refused (ArchMismatch)
  instead of "failing silently". Then the consts go to DRAM1 (flushed) and, for models
  compiled with load_consts_to_local, to local memory, and so does what the program's first
  instructions read into local memory that nothing after them writes (the weight blocks a
  program keeps from frame to frame: `tensil.machine.prologue_length`): they run once, here.
  Another driver or a TcuMachine using the same DMA takes the TCU's DRAM windows and local
  memory: a driver whose TCU was used since runs its start again before its next frame.
- A frame. Inputs (ONNX layout, e.g. NCHW float, given by their ONNX names) become Tensil's
  layout, NHWC padded to the array size, or the packed layout a `.tmodel` input's name asks of
  the host (`tensil.layout`), and FP16BP8 with saturation, counted in
  `RunReport.saturated` (Tensil's driver wraps around); the flush probe's source vector gets
  a fresh token and its target is cleared; DRAM0 is flushed; the program with the probe
  appended (DataMove DRAM0[src] -> local[last] -> DRAM0[dst]), less that prologue, streams through the AXI DMA's
  MM2S channel in transfers of at most `buffer_max_size` bytes; the driver polls, with a
  timeout, first the DMA (the TCU takes the stream as it executes) and then the probe's
  target (invalidating DRAM0 before each look); then it reads the outputs.
A timeout raises TcuTimeout naming what was pending: the DMA transfer (which bytes of which
stream) or the probe (where, after how many instructions).
"""

import dataclasses
import importlib
import math
import pathlib
import time
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .arch import Architecture
from .errors import ArchMismatch, DriverError, TcuTimeout
from .fixed import FixedFormat, fixed_format, from_bytes, from_float_saturating, to_float32
from .isa import (
    ConfigRegister,
    Configure,
    DataMove,
    DataMoveKind,
    Instruction,
    decode_program,
    encode_program,
    extent,
)
from .layout import from_vectors, given_name, input_vector_count, input_vectors
from .machine import MachineRun, Program, consts_to_local, prologue_length
from .tmodel import TensilModel

__all__ = ["DRAM_ALIGN", "MAX_PROGRAM_BYTES", "PROBE_VECTORS", "MemoryPlan", "RunReport", "TcuMachine", "TensilDriver", "cma_free_bytes",
           "flush_probe", "prologue_at_start", "stream_block",
           "plan_memory"]

DRAM_ALIGN = 0x10000       # Configure's DRAM offsets count 64 KiB units
PAGE = 4096
SELFTEST_MAX_LANES = 64    # the self-test recognises TCU vectors of up to 64 lanes
MAX_PROGRAM_BYTES = 64 << 20   # a PYNQ-Z1 has 512 MB; a ResNet-9 program is well under 1 MiB
PROBE_VECTORS = 2          # DRAM0's last two vectors: the flush probe's source and target


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """What a model needs of the board's contiguous memory (bytes unless named vectors)."""

    vector_bytes: int
    dram0_vectors: int        # the program's reach, the vars, the self-test and the probe
    dram1_vectors: int        # the consts and whatever else the program reaches in DRAM1
    stream_bytes: int         # the instruction streams (start, consts and prologue, program + probe)
    probe_source: int         # DRAM0 vector holding the probe's token
    probe_target: int         # DRAM0 vector the probe writes last
    probe_local: int          # local vector the probe goes through
    prologue: int = 0         # the program's first instructions, run once at the start (prologue_at_start)

    @property
    def dram0_bytes(self) -> int:
        return self.dram0_vectors * self.vector_bytes

    @property
    def dram1_bytes(self) -> int:
        return self.dram1_vectors * self.vector_bytes

    @property
    def cma_bytes(self) -> int:
        """The three allocations as pynq makes them: page-rounded, the windows with slack."""
        windows = sum(_round_up(n + DRAM_ALIGN, PAGE) for n in (self.dram0_bytes,
                                                                 self.dram1_bytes))
        return windows + _round_up(self.stream_bytes, PAGE)


def _check_program(model: TensilModel, program: Sequence[Instruction]) -> None:
    owned = (ConfigRegister.DRAM0_OFFSET, ConfigRegister.DRAM1_OFFSET,
             ConfigRegister.DRAM0_CACHE, ConfigRegister.DRAM1_CACHE)
    for index, i in enumerate(program):
        if isinstance(i, Configure) and i.register in owned:
            raise DriverError("%s: instruction %d configures %s; the driver owns the DRAM "
                              "windows (the compiler never emits Configure)"
                              % (model.prog_path, index, i.register.name))


def plan_memory(model: TensilModel, program: Sequence[Instruction], word_bytes: int = 8
                ) -> MemoryPlan:
    """The DRAM windows and streams a model needs, from its manifest and decoded program."""
    arch = model.arch
    vb = arch.vector_bytes
    _check_program(model, program)
    selftest = -(-4 * SELFTEST_MAX_LANES * arch.scalar_bytes // vb)
    reach0 = max([extent(program, "dram0"), selftest]
                 + [v.base + v.size for v in model.inputs + model.outputs])
    reach1 = max([extent(program, "dram1"), 1]
                 + [c.base + c.size for c in model.consts])
    dram0 = reach0 + PROBE_VECTORS
    if dram0 > arch.dram0_depth:
        raise DriverError("%s: the program reaches DRAM0 vector %d; the architecture's DRAM0 "
                          "has %d and the driver needs 2 more for its probe"
                          % (model.path, reach0 - 1, arch.dram0_depth))
    probe_local = arch.local_depth - 1
    if model.load_consts_to_local:
        top = max([c.base + c.size for c in model.consts] + [0])
        if top > probe_local:
            raise DriverError("%s: the consts fill local memory up to vector %d; the flush probe "
                              "needs local vector %d free" % (model.path, top - 1, probe_local))
    instruction = arch.layout.instruction_bytes
    block = stream_block(arch, word_bytes)
    prologue = prologue_at_start(program, arch)
    streams = [(2 + 2) * instruction,                      # Configure x2, self-test
               (len(model.consts) + prologue + 2) * instruction,   # consts to local, prologue, probe
               (len(program) - prologue + 2) * instruction]   # the rest of the program, probe
    return MemoryPlan(vector_bytes=vb, dram0_vectors=dram0, dram1_vectors=reach1,
                      stream_bytes=sum(_round_up(s, block) for s in streams),
                      probe_source=dram0 - 1, probe_target=dram0 - 2, probe_local=probe_local,
                      prologue=prologue)


def cma_free_bytes(meminfo: str = "/proc/meminfo") -> Optional[int]:
    """Linux's free contiguous memory (CmaFree), or None where the kernel does not say."""
    try:
        text = pathlib.Path(meminfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("CmaFree:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


@dataclasses.dataclass
class RunReport:
    """One `run`: seconds per step (host side), the DMA traffic and the saturated inputs."""

    convert_s: float = 0.0    # float -> fixed point into DRAM0, probe reset, flush
    stream_s: float = 0.0     # DMA transfers until the MM2S channel went idle
    wait_s: float = 0.0       # polling the probe after the last transfer
    read_s: float = 0.0       # outputs back to float
    transfers: int = 0
    stream_bytes: int = 0
    polls: int = 0
    saturated: Dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.convert_s + self.stream_s + self.wait_s + self.read_s


class _Window:
    """One allocation, aligned inside to `align`: `.bytes` is the usable part, `.phys` its address."""

    def __init__(self, allocate: Callable[..., Any], nbytes: int, align: int, cacheable: bool,
                 what: str):
        self.what = what
        self.buffer = allocate((nbytes + (align if align > PAGE else 0),), dtype=np.uint8,
                               cacheable=int(cacheable))
        offset = -int(self.buffer.physical_address) % align if align > PAGE else 0
        self.bytes = self.buffer[offset:offset + nbytes]
        self.phys = int(self.buffer.physical_address) + offset

    def vectors(self, fmt: FixedFormat, n: int) -> np.ndarray:
        """The usable bytes as (vectors, n) scalars of `fmt` (little-endian, as the TCU reads them):
        a plain array on the same memory (a pynq buffer's views and results carry its subclass,
        whose bookkeeping costs more than a frame's small reads and writes; flushing and
        invalidating go through `.bytes`)."""
        return np.asarray(self.bytes).view(fmt.dtype.newbyteorder("<")).reshape(-1, n)

    def free(self) -> None:
        if self.buffer is not None:
            self.bytes = None
            self.buffer.freebuffer()
            self.buffer = None


def stream_block(arch: Architecture, word_bytes: int) -> int:
    """The smallest stream of whole instructions that is also whole DMA words."""
    instruction = arch.layout.instruction_bytes
    return instruction * word_bytes // math.gcd(instruction, word_bytes)


def flush_probe(local: int, source: int, target: int) -> List[Instruction]:
    """The flush probe: DRAM0[source] -> local[local] -> DRAM0[target]. Streamed after a program,
    its value lands in `target` only once every write before it has (the TCU runs in order)."""
    return [DataMove(DataMoveKind.DRAM0_TO_LOCAL, local, source, 0),
            DataMove(DataMoveKind.LOCAL_TO_DRAM0, local, target, 0)]


def prologue_at_start(program: Sequence[Instruction], arch: Architecture) -> int:
    """How many of a program's first instructions TensilDriver runs once, when it starts, and
    not in each frame (machine.prologue_length, its flush probe after each program: that goes
    through local memory's last vector; its DRAM0 vectors do not matter there)."""
    return prologue_length(program, flush_probe(arch.local_depth - 1, 0, 1))


# The link that last used each TCU (by its DMA object): the DRAM windows a driver configured
# when it started and the weights its program keeps in local memory are lost to any other use
# of the TCU in between (another driver, a TcuMachine run), so a driver sets the TCU up again
# before its next frame then.
_LAST_USER: "weakref.WeakValueDictionary[int, _TcuLink]" = weakref.WeakValueDictionary()


class _TcuLink:
    """The instruction stream to a TCU behind an AXI DMA: transfers in whole stream words, each
    awaited within `timeout_s`, and the poll loop the probes use."""

    def __init__(self, dma: Any, arch: Architecture, timeout_s: float, poll_s: float,
                 sleep: Callable[[float], None], clock: Callable[[], float],
                 max_transfer_bytes: Optional[int]):
        if timeout_s <= 0 or poll_s < 0:
            raise ValueError("timeout_s must be > 0 and poll_s >= 0")
        self.dma, self.arch = dma, arch
        self.timeout_s, self.poll_s, self._sleep, self._clock = timeout_s, poll_s, sleep, clock
        self._word_bytes, self._block, self._chunk = self._dma_limits(dma, max_transfer_bytes)
        self._runs = 0   # probe tokens handed out

    def _dma_limits(self, dma: Any, cap: Optional[int]) -> Tuple[int, int, int]:
        """(stream word bytes, the smallest block of whole words and whole instructions, the
        largest transfer of whole blocks)."""
        try:
            width = int(dma.description["parameters"]["C_M_AXI_MM2S_DATA_WIDTH"])
        except (AttributeError, KeyError, TypeError, ValueError):
            raise DriverError("the DMA's description has no C_M_AXI_MM2S_DATA_WIDTH parameter "
                              "(pynq reads it from the .hwh beside the .bit)") from None
        if dma.sendchannel is None:
            raise DriverError("the AXI DMA has no MM2S channel; the TCU's instructions need it")
        word = width // 8
        block = stream_block(self.arch, word)
        limit = int(dma.buffer_max_size) if cap is None else min(int(dma.buffer_max_size), cap)
        chunk = limit // block * block
        if chunk < block:
            raise DriverError("a DMA transfer of at most %d bytes cannot carry one %d-byte block "
                              "of whole instructions and stream words" % (limit, block))
        return word, block, chunk

    def _claim(self) -> bool:
        """Make this link the TCU's last user; whether it was already."""
        was = _LAST_USER.get(id(self.dma)) is self
        _LAST_USER[id(self.dma)] = self
        return was

    def _whole_words(self, data: bytes) -> bytes:
        """Instruction bytes padded to whole stream words (zero bytes are NoOps)."""
        return data + bytes(-len(data) % self._block)

    def _token(self) -> int:
        """A fresh value for the flush probe to carry (never 0, which clears its target)."""
        self._runs += 1
        return self._runs % 0x7FFF + 1

    def _transfer(self, buffer: Any, offset: int, nbytes: int, count: int, segment: str,
                  report: Optional[RunReport] = None) -> None:
        """Stream bytes offset..offset+nbytes of `buffer` (`count` instructions) to the TCU."""
        channel = self.dma.sendchannel
        for start in range(offset, offset + nbytes, self._chunk):
            size = min(self._chunk, offset + nbytes - start)
            channel.transfer(buffer[start:start + size])
            self._await(lambda: self._dma_idle(channel), segment,
                        "the AXI DMA's MM2S transfer of stream bytes %d..%d (of %d, %d "
                        "instructions) was still running: the TCU stopped taking instructions"
                        % (start - offset, start - offset + size, nbytes, count))
            channel.wait()
            if report is not None:
                report.transfers += 1
                report.stream_bytes += size

    @staticmethod
    def _dma_idle(channel: Any) -> bool:
        if channel.error:
            raise DriverError("the AXI DMA's MM2S channel reports an error (internal, slave "
                              "or decode error in DMASR): it could not read the stream buffer")
        return bool(channel.idle)

    def _await(self, done: Callable[[], Any], segment: str, pending: str) -> Any:
        deadline = self._clock() + self.timeout_s
        while True:
            result = done()
            if result:
                return result
            if self._clock() > deadline:
                raise TcuTimeout(
                    "the TCU did not finish the %s stream: %s %.3g s later. The TCU hangs (the "
                    "program asks what the RTL cannot do), the loaded bitstream has no Tensil "
                    "TCU on %s's stream, or the model's architecture is not the bitstream's; "
                    "reload the bitstream to reset the TCU" % (
                        segment, pending, self.timeout_s, "axi_dma_0"))
            self._sleep(self.poll_s)


class TensilDriver(_TcuLink):
    """Runs one compiled model on the TCU behind an AXI DMA (see the module docstring).

    `dma` is the overlay's `axi_dma_0` (pynq.lib.dma.DMA); `allocate` is `pynq.allocate` by
    default. `timeout_s` bounds each wait (a DMA transfer, the probe); `sleep`/`clock` are the
    poll loop's (injectable for tests); `max_transfer_bytes` caps a DMA transfer below the
    DMA's buffer_max_size; `dram_windows` ({"dram0": (first, last)} byte addresses, from the
    .hwh) are where the TCU's masters reach, and the buffers must lie inside.
    """

    def __init__(self, model: TensilModel, dma: Any, allocate: Optional[Callable[..., Any]] = None,
                 *, cacheable: bool = False, timeout_s: float = 2.0, poll_s: float = 0.0002,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 max_transfer_bytes: Optional[int] = None,
                 dram_windows: Optional[Mapping[str, Tuple[int, int]]] = None):
        super().__init__(dma, model.arch, timeout_s, poll_s, sleep, clock, max_transfer_bytes)
        self.model = model
        self.fmt: FixedFormat = fixed_format(model.arch.data_type)
        self._windows: List[_Window] = []
        self.last_run = RunReport()
        if model.prog.size > MAX_PROGRAM_BYTES:
            raise DriverError("%s: %d bytes of program is more than the driver takes (%d)"
                              % (model.prog_path, model.prog.size, MAX_PROGRAM_BYTES))
        self.program = decode_program(model.prog_path.read_bytes(), model.arch)
        self.plan = plan_memory(model, self.program, self._word_bytes)
        if allocate is None:
            allocate = importlib.import_module("pynq").allocate
        try:
            self._allocate(allocate, cacheable)
            self._check_windows(dram_windows or {})
            self._segments = self._write_streams()
            self._start()
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_overlay(cls, overlay: Any, model: TensilModel, design: Any = None,
                     dma_name: str = "axi_dma_0", **options: Any) -> "TensilDriver":
        """The driver over a loaded overlay's DMA; with `design` (tensil.hwh.TensilDesign) the
        model's architecture is checked against the bitstream's first."""
        if not overlay.is_loaded():
            raise DriverError("the overlay %s is not the one loaded in the FPGA (load it with "
                              "pynq.Overlay(...) first)" % getattr(overlay, "bitfile_name", "?"))
        if design is not None:
            design.check_model(model)
            options.setdefault("dram_windows", design.dram_windows)
        try:
            dma = getattr(overlay, dma_name)
        except AttributeError:
            raise DriverError("the overlay %s has no %s: it is not a Tensil design (the TCU's "
                              "instructions come through an AXI DMA named %s)" % (
                                  getattr(overlay, "bitfile_name", "?"), dma_name,
                                  dma_name)) from None
        return cls(model, dma, **options)

    # --- setting up -------------------------------------------------------------------------

    def _allocate(self, allocate: Callable[..., Any], cacheable: bool) -> None:
        plan = self.plan
        for nbytes, align, what in ((plan.dram0_bytes, DRAM_ALIGN, "DRAM0"),
                                    (plan.dram1_bytes, DRAM_ALIGN, "DRAM1"),
                                    (plan.stream_bytes, PAGE, "the instruction streams")):
            try:
                self._windows.append(_Window(allocate, nbytes, align, cacheable, what))
            except (RuntimeError, MemoryError, OSError) as exc:
                free = cma_free_bytes()
                raise DriverError(
                    "cannot allocate %s (%d bytes of contiguous memory): %s. The model needs "
                    "%.2f MiB of CMA in all; %s. Free what other programs hold (a notebook's "
                    "pynq buffers, another demo), or give Linux more CMA (cma=128M on the "
                    "kernel command line)" % (
                        what, nbytes, str(exc).strip() or type(exc).__name__,
                        plan.cma_bytes / 2 ** 20,
                        "CmaFree is %.2f MiB now" % (free / 2 ** 20) if free is not None
                        else "this kernel reports no CmaFree")) from None
        self._dram0, self._dram1, self._streams = self._windows
        n = self.arch.array_size
        self.dram0, self.dram1 = self._dram0.vectors(self.fmt, n), self._dram1.vectors(self.fmt, n)
        for window in (self._dram0, self._dram1):
            if window.phys + window.bytes.nbytes > 1 << 32:
                raise DriverError("%s at 0x%x is beyond the TCU's 32-bit address space"
                                  % (window.what, window.phys))

    def _check_windows(self, windows: Mapping[str, Tuple[int, int]]) -> None:
        """Each DRAM buffer inside the address window its TCU master reaches (from the .hwh)."""
        for window, master in ((self._dram0, "dram0"), (self._dram1, "dram1")):
            if master in windows:
                low, high = windows[master]
                if not (low <= window.phys and window.phys + window.bytes.nbytes - 1 <= high):
                    raise DriverError(
                        "%s at 0x%x..0x%x is outside what the TCU's m_axi_%s master reaches "
                        "(0x%x..0x%x in the .hwh)" % (window.what, window.phys, window.phys
                                                      + window.bytes.nbytes - 1, master, low,
                                                      high))

    def _probe(self) -> List[Instruction]:
        p = self.plan
        return flush_probe(p.probe_local, p.probe_source, p.probe_target)

    def _write_streams(self) -> Dict[str, Tuple[int, int, int]]:
        """The three streams in the stream buffer: name -> (offset, bytes, instructions)."""
        local = self.plan.probe_local
        start: List[Instruction] = [Configure(ConfigRegister.DRAM0_OFFSET, self._dram0.phys // DRAM_ALIGN),
                 Configure(ConfigRegister.DRAM1_OFFSET, self._dram1.phys // DRAM_ALIGN),
                 DataMove(DataMoveKind.DRAM0_TO_LOCAL, local, 1, 0),
                 DataMove(DataMoveKind.LOCAL_TO_DRAM0, local, 3, 0)]
        segments, offset, image = {}, 0, bytearray()
        prologue = self.plan.prologue   # kept in local memory from frame to frame: run once
        for name, code in (("start", start),
                           ("consts", consts_to_local(self.model) + list(self.program[:prologue]) + self._probe()),
                           ("program", list(self.program[prologue:]) + self._probe())):
            data = self._whole_words(encode_program(code, self.arch))
            segments[name] = (offset, len(data), len(code))
            image += data
            offset += len(data)
        stream = self._streams.bytes
        stream[:len(image)] = np.frombuffer(bytes(image), np.uint8)
        stream.flush()
        return segments

    def _start(self) -> None:
        """Offsets, the self-test of the TCU's vector size, then the consts and the prologue."""
        self._claim()
        scalars = self.dram0.reshape(-1)
        count = 4 * SELFTEST_MAX_LANES
        pattern = np.arange(1, count + 1, dtype=np.int64)
        scalars[:count] = pattern
        self._dram0.bytes.flush()
        self._stream("start")
        lanes = self._await(lambda: self._selftest_lanes(scalars, pattern), "start",
                            "the self-test (DataMove DRAM0 vector 1 -> local -> DRAM0 vector 3) "
                            "wrote nothing")
        n = self.arch.array_size
        if lanes != n:
            raise ArchMismatch(
                "the bitstream's TCU moves %d-byte vectors (%d %s lanes); the model %s was "
                "compiled for array_size %d (%d-byte vectors): compile the model for the "
                "bitstream's .tarch, or load the bitstream built for the model's" % (
                    lanes * self.arch.scalar_bytes, lanes, self.arch.data_type,
                    self.model.path or self.model.name, n, self.arch.vector_bytes))
        scalars[:count] = 0
        self._vectors(0, -(-count // n)).flush()
        for consts, path in zip(self.model.consts, self.model.const_paths):
            raw = from_bytes(path.read_bytes(), self.fmt, str(path))
            self.dram1[consts.base:consts.base + consts.size] = raw.reshape(consts.size, n)
        self._dram1.bytes.flush()
        self._execute("consts")

    def _selftest_lanes(self, scalars: np.ndarray, pattern: np.ndarray) -> Optional[int]:
        """The TCU's lanes per vector once the self-test's copy landed, else None."""
        self._dram0.bytes.invalidate()
        for lanes in range(1, SELFTEST_MAX_LANES + 1):
            landed = scalars[3 * lanes:4 * lanes]
            if np.array_equal(landed, pattern[lanes:2 * lanes]):
                return lanes
        return None

    # --- a frame ----------------------------------------------------------------------------

    def run(self, inputs: Mapping[str, np.ndarray],
            output_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> Dict[str, np.ndarray]:
        """Inputs in ONNX layout -> outputs: float32, in `output_shapes` where given, else
        every lane of the output's vectors (padding included), flat."""
        if self._dram0 is None:
            raise DriverError("the driver was closed")
        report = self.last_run = RunReport()
        started = self._clock()
        if not self._claim():   # another driver or a TcuMachine used the TCU since: set it up again
            self._start()
        self._write_inputs(inputs, report)
        token = self._token()
        p = self.plan
        self.dram0[p.probe_source] = token
        self.dram0[p.probe_target] = 0
        for var in self.model.inputs:   # only what the CPU wrote: a big DRAM0 costs no more a frame
            self._vectors(var.base, var.size).flush()
        self._vectors(p.probe_target, 2).flush()   # the probe's target and source, side by side
        streamed = self._clock()
        report.convert_s = streamed - started
        self._stream("program", report)
        waited = self._clock()
        report.stream_s = waited - streamed
        self._await(lambda: self._probe_landed(token, report), "program",
                    "the flush probe (DataMove DRAM0 vector %d -> local %d -> DRAM0 vector %d, "
                    "at 0x%x) had not landed" % (p.probe_source, p.probe_local, p.probe_target,
                                                 self._dram0.phys + p.probe_target
                                                 * p.vector_bytes))
        read = self._clock()
        report.wait_s = read - waited
        outputs = self._read_outputs(output_shapes or {})
        report.read_s = self._clock() - read
        return outputs

    def _write_inputs(self, inputs: Mapping[str, np.ndarray], report: RunReport) -> None:
        names = {var.name: given_name(var.name) for var in self.model.inputs}
        unknown = sorted(set(inputs) - set(names.values()))
        missing = sorted(set(names.values()) - set(inputs))
        if unknown or missing:
            raise ValueError("the model's inputs are %s; got %s" % (
                sorted(names.values()), sorted(inputs)))
        n = self.arch.array_size
        for var in self.model.inputs:
            name = names[var.name]
            array = np.asarray(inputs[name])
            if array.dtype.kind not in "fiu":
                raise ValueError("input %r must be numbers, got %s" % (name, array.dtype))
            needed = input_vector_count(var.name, array.shape, n)
            if needed != var.size:
                raise ValueError("input %r of shape %s takes %d vectors of %d lanes; the model's "
                                 "region holds %d" % (name, array.shape, needed, n, var.size))
            # converted before the layout change: a 3-channel image is a quarter of its padded
            # 12-lane vectors (rounding and saturation are per value; padding converts to 0)
            raw, saturated = from_float_saturating(array, self.fmt)
            self.dram0[var.base:var.base + var.size] = input_vectors(var.name, raw.astype(self.fmt.dtype), n)
            report.saturated[name] = saturated

    def _probe_landed(self, token: int, report: RunReport) -> bool:
        report.polls += 1
        self._vectors(self.plan.probe_target, 1).invalidate()
        return bool(np.all(self.dram0[self.plan.probe_target] == token))

    def _vectors(self, first: int, count: int) -> Any:
        """DRAM0 vectors first..first+count-1 as a view of the buffer: flushing or invalidating it
        touches those bytes' cache lines only (pynq's buffer views keep their offset). The CPU
        writes DRAM0 only where it flushes (inputs, probe, self-test), so no line it invalidates
        holds a write of its own."""
        size = self.plan.vector_bytes
        return self._dram0.bytes[first * size:(first + count) * size]

    def _read_outputs(self, shapes: Mapping[str, Sequence[int]]) -> Dict[str, np.ndarray]:
        values: Dict[str, List[np.ndarray]] = {}
        for var in self.model.outputs:
            self._vectors(var.base, var.size).invalidate()
            raw = self.dram0[var.base:var.base + var.size].reshape(-1)
            values.setdefault(var.name, []).append(to_float32(raw, self.fmt))
        out = {name: np.concatenate(parts) for name, parts in values.items()}
        for name, shape in shapes.items():
            if name not in out:
                raise ValueError("the model has no output %r (outputs: %s)" % (name, sorted(out)))
            out[name] = from_vectors(out[name], shape, self.arch.array_size)
        return out

    # --- streaming and waiting --------------------------------------------------------------

    def _execute(self, segment: str) -> None:
        """Stream a segment that ends with the probe and wait for it."""
        token = self._token()
        self.dram0[self.plan.probe_source] = token
        self.dram0[self.plan.probe_target] = 0
        self._vectors(self.plan.probe_target, 2).flush()
        self._stream(segment)
        self._await(lambda: self._probe_landed(token, RunReport()), segment,
                    "the flush probe had not landed")

    def _stream(self, segment: str, report: Optional[RunReport] = None) -> None:
        offset, nbytes, count = self._segments[segment]
        self._transfer(self._streams.bytes, offset, nbytes, count, segment, report)

    # --- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        """Free the DMA memory (idempotent)."""
        for window in self._windows:
            window.free()
        self._windows = []
        self._dram0 = self._dram1 = self._streams = None  # type: ignore[assignment]

    def __enter__(self) -> "TensilDriver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TcuMachine(_TcuLink):
    """The TCU behind an AXI DMA as a `tensil.machine.Machine`: each `run` puts the images in fresh
    DRAM buffers, streams the DRAM windows (Configure), the program and the flush probe, waits for
    the probe and reads both images back. The probe goes through the last local vector and the two
    DRAM0 vectors after the image. For self-tests and for any raw program; a model runs faster
    through TensilDriver (its buffers and streams are made once)."""

    def __init__(self, dma: Any, arch: Architecture, allocate: Optional[Callable[..., Any]] = None, *,
                 cacheable: bool = False, timeout_s: float = 2.0, poll_s: float = 0.0002,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 max_transfer_bytes: Optional[int] = None):
        super().__init__(dma, arch, timeout_s, poll_s, sleep, clock, max_transfer_bytes)
        self.fmt = fixed_format(arch.data_type)
        self.cacheable = cacheable
        self._allocate = allocate if allocate is not None else importlib.import_module("pynq").allocate

    def run(self, program: Program, dram0: np.ndarray, dram1: np.ndarray) -> MachineRun:
        n, size = self.arch.array_size, self.arch.vector_bytes
        code = bytes(program) if isinstance(program, (bytes, bytearray, memoryview)) else encode_program(
            list(program), self.arch, strict=False)
        images = [np.asarray(image) for image in (dram0, dram1)]
        for name, image in zip(("dram0", "dram1"), images):
            if image.ndim != 2 or image.shape[1] != n or image.dtype.kind not in "iu":
                raise ValueError("%s must be integers of shape (vectors, %d), got %s %s"
                                 % (name, n, image.dtype, image.shape))
        source, target = len(images[0]), len(images[0]) + 1          # the probe, after the image
        local = self.arch.local_depth - 1
        report = RunReport()
        self._claim()
        windows: List[_Window] = []
        try:
            dram = []
            for image, extra, what in ((images[0], PROBE_VECTORS, "DRAM0"), (images[1], 0, "DRAM1")):
                window = _Window(self._allocate, (len(image) + extra or 1) * size, DRAM_ALIGN, self.cacheable, what)
                windows.append(window)
                view = window.vectors(self.fmt, n)
                view[:len(image)] = image
                dram.append(view)
            token = self._token()
            dram[0][source], dram[0][target] = token, 0
            for window in windows:
                window.bytes.flush()
            code = encode_program([Configure(ConfigRegister.DRAM0_OFFSET, windows[0].phys // DRAM_ALIGN),
                                   Configure(ConfigRegister.DRAM1_OFFSET, windows[1].phys // DRAM_ALIGN)],
                                  self.arch) + code + encode_program(flush_probe(local, source, target), self.arch)
            count = len(code) // self.arch.layout.instruction_bytes
            stream = self._whole_words(code)
            streams = _Window(self._allocate, len(stream), PAGE, self.cacheable, "the instruction stream")
            windows.append(streams)
            streams.bytes[:len(stream)] = np.frombuffer(stream, np.uint8)
            streams.bytes.flush()
            self._transfer(streams.bytes, 0, len(stream), count, "program", report)

            def landed() -> bool:
                report.polls += 1
                windows[0].bytes.invalidate()
                return bool(np.all(dram[0][target] == token))

            self._await(landed, "program", "the flush probe (DRAM0 vector %d -> local %d -> DRAM0 "
                        "vector %d) had not landed" % (source, local, target))
            windows[1].bytes.invalidate()
            out0 = dram[0][:len(images[0])].astype(images[0].dtype)
            out1 = dram[1][:len(images[1])].astype(images[1].dtype)
        finally:
            for window in windows:
                window.free()
        return MachineRun(out0, out1, None, report)
