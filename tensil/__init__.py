"""tensil: the Tensil accelerator in Python (numpy only, Python 3.8 on the board).

Modules, imported on demand:
- `arch`: the strict `.tarch` reader, `Architecture`, the instruction layout and its summary;
- `isa`: instructions as dataclasses, `.tprog` bytes and `.tasm` text both ways;
- `fixed`: FP8BP4/FP16BP8/FP18BP10/FP32BP16 conversions and the MAC/ALU arithmetic;
- `tmodel`: the `.tmodel` manifest (reader and writer);
- `emulator`: runs a program on DRAM0/DRAM1 arrays bit-exactly like the RTL;
- `estimate`: Tensil's cycle model and a memory-aware variant;
- `layout`: tensors in DRAM0 (NHWC, channels padded to the array size);
- `driver`: our PYNQ driver of the TCU (pynq imported lazily); `hwh`: a Tensil overlay's
  `.hwh` and build JSON, checked against a `.tmodel`;
- `python -m tensil --help`: the command line.
The workstation half (compiler, RTL co-simulation, the scalar reference interpreter and the
random program generator) is the `tensil_tools` package, never on the board image.
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
