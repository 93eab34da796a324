"""The few instruction-layout facts the co-simulation needs (TENSIL.md §1.3, §2.3).

The harness appends the PYNQ driver's flush probe (two DataMoves) and must know where a
program moves the DRAM0 window with Configure, so it encodes those two instructions and reads
the opcode of the others. Everything else about the instruction set is `tensil.isa`'s business.
"""

from typing import Any, Iterator, Tuple

__all__ = ["Layout", "DATAMOVE", "CONFIGURE", "DRAM0_TO_LOCAL", "LOCAL_TO_DRAM0"]

DATAMOVE = 0x2
CONFIGURE = 0xF
DRAM0_TO_LOCAL = 0x0
LOCAL_TO_DRAM0 = 0x1
CONFIGURE_DRAM0_OFFSET = 0x0
CONFIGURE_DRAM1_OFFSET = 0x4


def _bits(depth: int) -> int:
    """log2Ceil as Tensil defines it: bitlength(depth - 1)."""
    return max(int(depth) - 1, 0).bit_length()


def _round8(bits: int) -> int:
    return (bits + 7) // 8 * 8


class Layout:
    """Operand widths of one architecture's instructions."""

    def __init__(self, arch: Any) -> None:
        local = _bits(arch.local_depth)
        acc = _bits(arch.accumulator_depth)
        dram0 = _bits(arch.dram0_depth)
        dram1 = _bits(arch.dram1_depth)
        simd_bits = 3 * _bits(arch.simd_registers_depth + 1) + 4
        thread_bits = _bits(arch.number_of_threads)
        self.operand0_address_bits = max(local, acc)
        self.operand0_bits = _round8(self.operand0_address_bits + _bits(arch.stride0_depth))
        self.operand1_address_bits = max(local, dram0, dram1, acc)
        self.operand1_bits = _round8(self.operand1_address_bits + _bits(arch.stride1_depth))
        self.operand2_bits = _round8(
            max(min(local, acc), min(local, dram0), min(local, dram1), simd_bits)
        )
        self.header_bits = _round8(2 * thread_bits + 3)
        self.argument_bits = self.operand0_bits + self.operand1_bits + self.operand2_bits
        self.size_bytes = (self.header_bits + self.argument_bits) // 8

    def encode(self, opcode: int, flags: int, operand0: int, operand1: int, operand2: int) -> bytes:
        """One instruction, little-endian, header (opcode << 4 | flags) in the top byte."""
        word = (
            operand0
            | operand1 << self.operand0_bits
            | operand2 << (self.operand0_bits + self.operand1_bits)
            | (opcode << 4 | flags) << self.argument_bits
        )
        return word.to_bytes(self.size_bytes, "little")

    def datamove(self, kind: int, local: int, other: int, size: int = 0) -> bytes:
        return self.encode(DATAMOVE, kind, local, other, size)

    def decode(self, program: bytes) -> Iterator[Tuple[int, int, int]]:
        """(opcode, flags, arguments) of every instruction; len(program) % size_bytes == 0."""
        n = self.size_bytes
        mask = (1 << self.argument_bits) - 1
        for offset in range(0, len(program), n):
            word = int.from_bytes(program[offset : offset + n], "little")
            header = word >> self.argument_bits
            yield (header >> 4) & 0xF, header & 0xF, word & mask

    def final_dram_offsets(self, program: bytes) -> Tuple[int, int]:
        """The DRAM0 and DRAM1 byte offsets after `program` has run.

        Configure stores value << 16 in a 32-bit register (Decoder.scala 613).
        """
        offsets = [0, 0]
        for opcode, _flags, arguments in self.decode(program):
            if opcode != CONFIGURE:
                continue
            register, value = arguments & 0xF, (arguments >> 4) & 0x0FFFFFFF
            if register == CONFIGURE_DRAM0_OFFSET:
                offsets[0] = (value << 16) & 0xFFFFFFFF
            elif register == CONFIGURE_DRAM1_OFFSET:
                offsets[1] = (value << 16) & 0xFFFFFFFF
        return offsets[0], offsets[1]
