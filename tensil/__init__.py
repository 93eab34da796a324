"""tensil: the Tensil accelerator in Python (numpy only, Python 3.8 on the board).

Modules, imported on demand:
- `arch`: the strict `.tarch` reader, `Architecture`, the instruction layout and its summary;
- `isa`: instructions as dataclasses, `.tprog` bytes and `.tasm` text both ways;
- `fixed`: FP8BP4/FP16BP8/FP18BP10/FP32BP16 conversions and the MAC/ALU arithmetic;
- `tmodel`: the `.tmodel` manifest (reader and writer);
- `emulator`: runs a program on DRAM0/DRAM1 arrays bit-exactly like the RTL;
- `reference`: a slow scalar interpreter of the same semantics, for tests and benchmarks;
- `estimate`: Tensil's cycle model and a memory-aware variant;
- `progen`: seeded random valid programs (emulator-vs-RTL tests);
- `layout`: tensors in DRAM0 (NHWC, channels padded to the array size);
- `driver`: our PYNQ driver of the TCU (pynq imported lazily); `hwh`: a Tensil overlay's
  `.hwh` and build JSON, checked against a `.tmodel`;
- `python -m tensil --help`: the command line.
The workstation parts (`tensil.compiler`, `tensil.cosim`) are not on the board image.
"""

from .arch import Architecture, load_tarch
from .errors import (
                     ArchError,
                     EmulatorError,
                     FixedPointError,
                     ProgramError,
                     TensilError,
                     TmodelError,
)

__all__ = ["Architecture", "ArchError", "EmulatorError", "FixedPointError", "ProgramError",
           "TensilError", "TmodelError", "load_tarch"]
