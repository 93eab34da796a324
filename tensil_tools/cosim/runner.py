"""Running a program on the Verilated Tensil RTL.

`run(program, dram0, dram1, arch)` streams `program` into the TCU, serves its DRAM0/DRAM1
AXI masters from the two arrays and returns the arrays as the RTL left them, the final local
memory and accumulators, and the cycle count.
"""

import json
import math
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from tensil.arch import Architecture, instruction_layout
from tensil.driver import flush_probe
from tensil.estimate import DRAM_LATENCY_NS, MemoryModel
from tensil.isa import (
    ConfigRegister,
    Configure,
    decode_program,
    encode_program,
)
from tensil.machine import MachineRun

from ..rtl import RtlInfo, as_architecture, check_arch, find_rtl, rtl_architecture
from .build import Build, build
from .errors import AxiViolation, CosimError, CosimHang

__all__ = ["DramModel", "CosimMachine", "CosimResult", "run", "final_dram_offsets", "ADDRESS_SPACE"]

ADDRESS_SPACE = 1 << 32  # each AXI master addresses 32 bits
_MAX_MODEL = 1 << 20  # bound on every DramModel number (cycles or bursts)


@dataclass(frozen=True)
class DramModel:
    """The AXI4 slave memories behind the TCU's two masters, in TCU clock cycles.

    The defaults model a PYNQ-Z1 as PEFSL builds it: the TCU at 50 MHz (FCLK3) on two 64-bit
    HP ports into the PS DDR3 controller. A 64-bit HP port can take a beat every TCU cycle at
    50 MHz (400 MB/s, well under the ~2,840 MB/s one port can read from DDR, Zynq-7000 TRM
    UG585 §22.3.1), so `beat_interval` is 1. An unloaded read through the HP port's FIFO, the
    PS interconnect and the DDR controller takes on the order of 200 ns, i.e. 10 cycles at
    50 MHz; writes are answered only once the data reached the DDR controller (the AFI has no
    early BRESP), similar. The HP port's command FIFOs accept 8 reads and 8 writes. These are
    estimates of an idle system, not board measurements; `zynq_hp(clock_mhz)` rescales them.
    """

    read_latency: int = 10  # cycles from the AR handshake to the first R beat
    write_latency: int = 10  # cycles from the last W beat to the B response
    beat_interval: int = 1  # cycles per data beat, reads and writes
    max_reads: int = 8  # read bursts accepted and not yet returned
    max_writes: int = 8  # write bursts accepted and not yet answered

    def __post_init__(self) -> None:
        for name in ("read_latency", "write_latency", "beat_interval", "max_reads", "max_writes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_MODEL:
                raise ValueError("DramModel.%s must be an int in [1, %d], got %r"
                                 % (name, _MAX_MODEL, value))

    @classmethod
    def zynq_hp(cls, clock_mhz: float = 50.0, latency_ns: float = DRAM_LATENCY_NS) -> "DramModel":
        """The default model for a TCU clocked at `clock_mhz` (the latencies of
        tensil.estimate.MemoryModel.at_clock, the compiler's model of the same clock)."""
        latencies = MemoryModel.at_clock(clock_mhz, latency_ns)
        return cls(read_latency=latencies.read_latency, write_latency=latencies.write_latency)

    @classmethod
    def ideal(cls) -> "DramModel":
        """A memory that answers on the next cycle: the RTL's own limits only."""
        return cls(read_latency=1, write_latency=1, beat_interval=1, max_reads=64, max_writes=64)


@dataclass(frozen=True)
class CosimResult:
    dram0: np.ndarray  # int16 (vectors, array_size), as passed in, after the program
    dram1: np.ndarray
    local: np.ndarray  # int16 (local_depth, array_size): the final local memory
    accumulators: np.ndarray  # int16 (accumulator_depth, array_size)
    cycles: int  # until completion: the flush probe landed, or the last activity (drain)
    drain_cycles: int  # until the last activity (memory write, AXI or stream handshake)
    instructions: int  # instructions in the program (the probe not counted)
    stats: Dict[str, Any] = field(default_factory=dict)  # the harness's per-channel counts
    wall_seconds: float = 0.0


_BUILDS: Dict[Tuple[Any, ...], Build] = {}


def _cached_build(rtl: RtlInfo) -> Build:
    """`build()` memoised per process (find_rtl already tracks the files' identity), so a
    run costs no hashing and no tool-version calls."""
    key = (rtl, os.environ.get("TENSIL_COSIM_CACHE"))
    found = _BUILDS.get(key)
    if found is None or not found.executable.is_file():
        found = _BUILDS[key] = build(rtl.directory)
    return found


def _image(name: str, values: Any, array_size: int, rows: Optional[int] = None) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype not in (np.int16, np.uint16):
        raise ValueError("%s must be an int16 array (raw FP16BP8), got dtype %s" % (name, array.dtype))
    if array.ndim != 2 or array.shape[1] != array_size:
        raise ValueError("%s must have shape (vectors, %d), got %s" % (name, array_size, array.shape))
    if rows is not None and array.shape[0] != rows:
        raise ValueError("%s must have %d vectors, got %d" % (name, rows, array.shape[0]))
    if array.shape[0] * array_size * 2 > ADDRESS_SPACE:
        raise ValueError("%s (%d vectors) exceeds the 32-bit address space" % (name, array.shape[0]))
    return np.ascontiguousarray(array.view(np.int16), dtype="<i2")


def _program_bytes(program: Any, instruction_bytes: int) -> bytes:
    if not isinstance(program, (bytes, bytearray, memoryview)):
        raise ValueError("program must be bytes, got %s" % type(program).__name__)
    data = bytes(program)
    if len(data) % instruction_bytes:
        raise ValueError("program length %d is not a multiple of the %d-byte instruction"
                         % (len(data), instruction_bytes))
    return data


def final_dram_offsets(program: bytes, arch: Architecture) -> Tuple[int, int]:
    """The DRAM0 and DRAM1 byte offsets after `program` has run, read as the RTL reads it
    (Configure stores value << 16 in a 32-bit register, Decoder.scala)."""
    offsets = [0, 0]
    for instruction in decode_program(program, arch, strict=False):
        if isinstance(instruction, Configure):
            if instruction.register == ConfigRegister.DRAM0_OFFSET:
                offsets[0] = (instruction.value << 16) % ADDRESS_SPACE
            elif instruction.register == ConfigRegister.DRAM1_OFFSET:
                offsets[1] = (instruction.value << 16) % ADDRESS_SPACE
    return offsets[0], offsets[1]


def _probe(arch: Architecture, program: bytes) -> Tuple[bytes, int, int]:
    """The PYNQ driver's flush probe and the byte addresses it reads and writes.

    DataMove DRAM0[depth-1] -> local[depth-1] -> DRAM0[depth-2], in the DRAM0 window that
    the program's last Configure left (the driver sets it before the program instead).
    """
    offset0, _ = final_dram_offsets(program, arch)
    last_local = arch.local_depth - 1
    code = encode_program(flush_probe(last_local, arch.dram0_depth - 1, arch.dram0_depth - 2), arch)
    source = (offset0 + (arch.dram0_depth - 1) * arch.vector_bytes) % ADDRESS_SPACE
    target = (offset0 + (arch.dram0_depth - 2) * arch.vector_bytes) % ADDRESS_SPACE
    return code, source, target


def run(
    program: bytes,
    dram0: np.ndarray,
    dram1: np.ndarray,
    arch: Optional[Architecture] = None,
    *,
    rtl_dir: Optional[os.PathLike] = None,
    dram: DramModel = DramModel(),
    completion: str = "probe",
    timeout_cycles: int = 50_000_000,
    hang_cycles: int = 100_000,
    drain_idle_cycles: Optional[int] = None,
    local: Optional[np.ndarray] = None,
    accumulators: Optional[np.ndarray] = None,
    simulator: Optional[Build] = None,
    allow_boundary_crossings: bool = False,
) -> CosimResult:
    """Run `program` (the bytes of a .tprog) on the RTL and return the memories and cycles.

    `dram0`/`dram1` (int16, shape (vectors, array_size)) sit at byte 0 of their master's
    address space; the rest of the space reads as zeros. `completion="probe"` appends the
    PYNQ driver's flush probe (it overwrites DRAM0 vectors depth-1 and depth-2, which the
    driver reserves) and counts cycles until it lands; `"drain"` counts until the last memory
    write or bus handshake. Either way the simulation runs until `drain_idle_cycles` (default
    local_depth + 1024, longer than any one instruction's silence) pass without activity,
    then reads local memory and accumulators from the BRAMs. `local`/`accumulators` preload
    them (a test convenience: hardware starts with whatever is there). A program that stops
    making progress for `hang_cycles`, or runs past `timeout_cycles`, raises CosimHang naming
    what was pending. `simulator` is a `build()` result to use instead of the default build.
    `arch` defaults to the architecture the RTL was generated for (`rtl.rtl_architecture`).
    A burst across a 4 KiB boundary raises AxiViolation (the memories are served all the same,
    so `allow_boundary_crossings=True` lets a test look at one).
    """
    if completion not in ("probe", "drain"):
        raise ValueError("completion must be 'probe' or 'drain', got %r" % (completion,))
    for name, value in (("timeout_cycles", timeout_cycles), ("hang_cycles", hang_cycles)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("%s must be a positive int, got %r" % (name, value))
    rtl = find_rtl(rtl_dir)
    arch = rtl_architecture(rtl) if arch is None else as_architecture(arch)
    if drain_idle_cycles is None:
        drain_idle_cycles = arch.local_depth + 1024
    if isinstance(drain_idle_cycles, bool) or not isinstance(drain_idle_cycles, int) or not (
        1 <= drain_idle_cycles < hang_cycles
    ):
        raise ValueError("drain_idle_cycles must be an int in [1, hang_cycles), got %r"
                         % (drain_idle_cycles,))
    if not isinstance(dram, DramModel):
        raise ValueError("dram must be a DramModel, got %s" % type(dram).__name__)
    if hang_cycles <= 2 * max(dram.read_latency, dram.write_latency):
        raise ValueError("hang_cycles (%d) must exceed twice the DRAM latency, or a slow "
                         "memory reads as a hang" % hang_cycles)
    check_arch(rtl, arch)
    instruction_bytes = instruction_layout(arch).instruction_bytes
    code = _program_bytes(program, instruction_bytes)
    n = arch.array_size
    vector_bytes = 2 * n
    images = {"dram0": _image("dram0", dram0, n), "dram1": _image("dram1", dram1, n)}
    if local is not None:
        images["local_in"] = _image("local", local, n, arch.local_depth)
    if accumulators is not None:
        images["accumulators_in"] = _image("accumulators", accumulators, n, arch.accumulator_depth)
    executable = (simulator or _cached_build(rtl)).executable

    stream = code
    options = {
        "vector_bytes": vector_bytes,
        "local_depth": arch.local_depth,
        "accumulator_depth": arch.accumulator_depth,
        "completion": completion,
        "timeout_cycles": timeout_cycles,
        "hang_cycles": hang_cycles,
        "drain_idle_cycles": drain_idle_cycles,
        "read_latency": dram.read_latency,
        "write_latency": dram.write_latency,
        "beat_interval": dram.beat_interval,
        "max_reads": dram.max_reads,
        "max_writes": dram.max_writes,
    }
    if completion == "probe":
        probe, options["probe_src"], options["probe_dst"] = _probe(arch, code)
        stream += probe
    # Whole 64-bit stream words of whole instructions, zero (NoOp) padded like the driver does.
    block = instruction_bytes * 8 // math.gcd(instruction_bytes, 8)
    stream += bytes(-len(stream) % block)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tensil-cosim-") as work:
        folder = Path(work)
        (folder / "program.bin").write_bytes(stream)
        options["program"] = folder / "program.bin"
        for name, array in images.items():
            array.tofile(folder / (name + ".bin"))
            options[name] = folder / (name + ".bin")
        options["local_out"] = folder / "local_out.bin"
        options["accumulators_out"] = folder / "accumulators_out.bin"
        argv = [str(executable)] + ["%s=%s" % item for item in options.items()]
        done = subprocess.run(argv, capture_output=True, text=True)
        report = _report(done)
        outputs = {
            name: np.fromfile(folder / (name + ".bin"), dtype="<i2").reshape(-1, n)
            for name in ("dram0", "dram1", "local_out", "accumulators_out")
        }
    crossings = {name: report[name]["boundary_crossings"] for name in ("dram0", "dram1")
                 if isinstance(report.get(name), dict) and report[name].get("boundary_crossings")}
    if crossings and not allow_boundary_crossings:
        raise AxiViolation("the program made the RTL send %s across a 4 KiB boundary (first: %s), which AXI "
                           "forbids; recompile it with this compiler, which places data so that none does" % (
                               ", ".join("%d %s burst(s)" % (count, name) for name, count in crossings.items()),
                               "; ".join("%s %s" % (name, report[name].get("first_crossing", "?"))
                                         for name in crossings)))
    return CosimResult(
        dram0=outputs["dram0"],
        dram1=outputs["dram1"],
        local=outputs["local_out"],
        accumulators=outputs["accumulators_out"],
        cycles=int(report["cycles"]),
        drain_cycles=int(report["drain_cycles"]),
        instructions=len(code) // instruction_bytes,
        stats=report,
        wall_seconds=time.monotonic() - started,
    )


def _report(done: "subprocess.CompletedProcess[str]") -> Dict[str, Any]:
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise CosimError("the co-simulation exited with status %d without a report: %s"
                         % (done.returncode, (done.stderr or done.stdout).strip()[-2000:]))
    if not report.get("ok"):
        kind, message = report.get("kind"), report.get("message", "")
        if kind in ("hang", "timeout", "probe"):
            raise CosimHang(message)
        raise CosimError("co-simulation %s error: %s" % (kind, message))
    return report


class CosimMachine:
    """The RTL as a `tensil.machine.Machine`: `run` is `cosim.run` with the options given here
    (`rtl_dir`, `dram`, `completion`, ...); decoded programs are encoded as the RTL reads them;
    the images go in as the RTL's int16 words; `cycles` are the RTL's, counted to completion."""

    def __init__(self, arch: Optional[Architecture] = None, **options: Any):
        self.arch = arch if arch is not None else rtl_architecture(find_rtl(options.get("rtl_dir")))
        self.options = options

    def run(self, program: Any, dram0: np.ndarray, dram1: np.ndarray) -> MachineRun:
        code = bytes(program) if isinstance(program, (bytes, bytearray, memoryview)) else encode_program(
            list(program), self.arch, strict=False)
        result = run(code, np.asarray(dram0).astype(np.int16), np.asarray(dram1).astype(np.int16), self.arch,
                     **self.options)
        return MachineRun(result.dram0, result.dram1, result.cycles, result)
