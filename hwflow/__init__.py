"""hwflow: from a checkpoint to a flashed board (a workstation tool, never shipped on a board).

Subcommands of `python -m hwflow` (each also a make target):

- `rtl`: Tensil's RTL for a `.tarch` through Tensil's docker image;
- `rtl-report`: a Yosys `synth_xilinx` resource estimate against the XC7Z020;
- `bitstream`: the PYNQ-Z1 overlay with the Tensil TCU, a Vivado batch flow;
- `sdcard`: our stack written into a copy of a PYNQ-Z1 image, rootless (mtools, e2fsprogs);
- `flash`: an image written to an SD card, with refusals and a read-back check;
- `deploy`: the same payload over SSH to a running board, then its doctor.
"""

from .errors import HwflowError, ToolMissing

__all__ = ["HwflowError", "ToolMissing"]
__version__ = "0.1.0"
