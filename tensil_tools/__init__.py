"""tensil_tools: the workstation half of the Tensil toolchain (never on the board image).

- `compiler`: ONNX (opset 9-10) -> `.tmodel`/`.tprog`/`.tdata` (imports onnx);
- `cosim`: the RTL co-simulation (Verilator on Tensil's Verilog; `python -m tensil_tools.cosim`);
- `reference`: a slow scalar interpreter of the ISA, the emulator's yardstick;
- `progen`: seeded random valid programs (emulator-vs-RTL tests and benchmarks);
- `python -m tensil_tools --help` (the `tensil` script): the board's `python -m tensil` plus `compile`.

What runs on the board (ISA, emulator, driver, `.tarch`/`.tmodel` readers) is the `tensil` package.
"""
