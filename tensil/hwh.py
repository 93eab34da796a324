"""A Tensil overlay's description: its Vivado `.hwh` and the build's JSON, checked against a
`.tmodel` (board part: standard library + numpy-free, Python 3.8).

    design = read_design("bitstreams/pynqz1_perf_125mhz/pynqz1_perf_125mhz.bit")
    design.check_model(model)      # ArchMismatch naming both values, else nothing

What a `.hwh` holds and is read here (the fields pynq's hwh_parser reads, plus port widths):
`MODULE` elements (attributes FULLNAME, INSTANCE, VLNV, MODTYPE) with `PARAMETERS/PARAMETER`
(NAME, VALUE), `PORTS/PORT` (NAME, DIR, LEFT/RIGHT for buses, SIGNAME: ports on one net
share it, CLKFREQUENCY on clocks) and `MEMORYMAP/MEMRANGE` (MASTERBUSINTERFACE, INSTANCE,
SLAVEBUSINTERFACE, BASEVALUE, HIGHVALUE, MEMTYPE). From them:
- the TCU: the module with Tensil's ports (`instruction_tdata`, `m_axi_dram0_*`,
  `m_axi_dram1_*`); a module reference `top_<arch stem>` (VLNV xilinx.com:module_ref:...).
  Its instruction port's width (the stream word) and its DRAM ports' data and address widths
  are the `-d` width the RTL was generated with;
- the AXI DMA on the same net as `instruction_tdata`, and its C_M_AXI_MM2S_DATA_WIDTH,
  C_M_AXIS_MM2S_TDATA_WIDTH and C_SG_LENGTH_WIDTH;
- the TCU clock: the PS7 FCLK_CLK<i> on the net of the TCU's `clock` port and the PS7's
  PCW_ACT_FPGA<i>_PERIPHERAL_FREQMHZ (else PCW_FPGA<i>_PERIPHERAL_FREQMHZ, else the port's
  CLKFREQUENCY);
- the DDR windows of the TCU's two masters (their MEMRANGEs).

What it cannot hold: Tensil's generated Verilog has no parameters, so the `.hwh` does not carry
the `.tarch`. The array size, depths and data type are known from the JSON that `make
bitstream` writes beside the `.bit` (schema pynq-fewshot-fl/bitstream/1: the 11 `.tarch`
fields, and the RTL's memories "<bits>x<depth>" from which array size, local and accumulator
depths follow), and, with no JSON, from the driver's self-test on the running TCU (the bytes
of one vector, hence the array size). Without the JSON the `.hwh` checks what follows from
its widths: whole DRAM beats a vector (array_size x scalar bytes a multiple of the DRAM data
width), the DMA's word equal to the TCU's instruction port, and the TCU module's name
against the `.tmodel`'s (Tensil names models `<model>_<arch stem>`), reported, not refused.
"""

import dataclasses
import hashlib
import pathlib
import re
import xml.etree.ElementTree as ElementTree
from typing import Any, Dict, List, Optional, Tuple, Union

from fedcore import safejson as sj
from fedcore.errors import JSONError

from .arch import ARCH_FIELDS, Architecture
from .errors import ArchError, ArchMismatch, HwhError
from .tmodel import TensilModel

__all__ = ["BITSTREAM_SCHEMA", "MAX_HWH_BYTES", "HwhModule", "HwhPort", "MemRange",
           "TensilDesign", "file_sha256", "parse_hwh", "read_design"]

MAX_HWH_BYTES = 32 << 20         # a full PYNQ-Z1 base overlay's .hwh is a few MiB
MAX_HWH_DEPTH = 32
MAX_HWH_ELEMENTS = 500_000
MAX_JSON_BYTES = 1 << 20
BITSTREAM_SCHEMA = "pynq-fewshot-fl/bitstream/1"
PathLike = Union[str, pathlib.Path]
_TCU_PORTS = ("instruction_tdata", "m_axi_dram0_araddr", "m_axi_dram1_araddr",
              "m_axi_dram0_wdata", "m_axi_dram1_wdata")


@dataclasses.dataclass(frozen=True)
class HwhPort:
    name: str
    direction: str
    width: int
    signame: str
    clk_frequency: Optional[float]   # Hz, clocks only


@dataclasses.dataclass(frozen=True)
class MemRange:
    master: str           # the module's master interface
    instance: str         # the slave's instance
    slave: str            # the slave's interface
    base: int
    high: int
    memtype: str


@dataclasses.dataclass(frozen=True)
class HwhModule:
    fullname: str
    instance: str
    vlnv: str
    modtype: str
    parameters: Dict[str, str]
    ports: Dict[str, HwhPort]
    memranges: Tuple[MemRange, ...]


def _int(text: Optional[str], what: str, where: str) -> int:
    try:
        return int(text or "", 16 if (text or "").lower().startswith("0x") else 10)
    except ValueError:
        raise HwhError("%s: %s is %r, not an integer" % (where, what, text)) from None


def _port(element: Any, where: str) -> HwhPort:
    name = element.get("NAME") or ""
    left, right = element.get("LEFT"), element.get("RIGHT")
    width = 1
    if left is not None or right is not None:
        width = abs(_int(left, "port %s LEFT" % name, where)
                    - _int(right, "port %s RIGHT" % name, where)) + 1
    frequency = element.get("CLKFREQUENCY")
    try:
        clk = float(frequency) if frequency else None
    except ValueError:
        raise HwhError("%s: port %s has CLKFREQUENCY %r" % (where, name, frequency)) from None
    return HwhPort(name, element.get("DIR") or "", width, element.get("SIGNAME") or "", clk)


def parse_hwh(data: bytes, where: str = "<hwh>") -> Dict[str, HwhModule]:
    """The modules of a `.hwh` by instance name."""
    if len(data) > MAX_HWH_BYTES:
        raise HwhError("%s: %d bytes is larger than any .hwh (at most %d)"
                       % (where, len(data), MAX_HWH_BYTES))
    # Vivado writes UTF-8. Any other encoding is refused before the DTD check below, which reads
    # bytes: a UTF-16 file would carry "<!DOCTYPE" past it (and expat expand its entities).
    declared = re.match(rb"\A(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']", data)
    if b"\x00" in data[:4096] or data[:2] in (b"\xff\xfe", b"\xfe\xff") or (
            declared and declared.group(1).lower() not in (b"utf-8", b"utf8", b"us-ascii", b"ascii")):
        raise HwhError("%s: not UTF-8 XML (a Vivado .hwh is UTF-8)" % where)
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise HwhError("%s: declares a DTD or entities, which no Vivado .hwh has" % where)
    root = _parse_bounded(data, where)
    modules: Dict[str, HwhModule] = {}
    for element in root.iter("MODULE"):
        instance = element.get("INSTANCE")
        if not instance:
            raise HwhError("%s: a MODULE without an INSTANCE attribute" % where)
        parameters = {p.get("NAME") or "": p.get("VALUE") or ""
                      for p in element.findall("./PARAMETERS/PARAMETER")}
        ports = {p.name: p for p in (_port(e, where) for e in element.findall("./PORTS/PORT"))}
        ranges = tuple(
            MemRange(r.get("MASTERBUSINTERFACE") or "", r.get("INSTANCE") or "",
                     r.get("SLAVEBUSINTERFACE") or "",
                     _int(r.get("BASEVALUE"), "MEMRANGE BASEVALUE", where),
                     _int(r.get("HIGHVALUE"), "MEMRANGE HIGHVALUE", where),
                     r.get("MEMTYPE") or "")
            for r in element.findall("./MEMORYMAP/MEMRANGE"))
        modules[instance] = HwhModule((element.get("FULLNAME") or "").lstrip("/"), instance,
                                      element.get("VLNV") or "", element.get("MODTYPE") or "",
                                      parameters, ports, ranges)
    if not modules:
        raise HwhError("%s: no MODULE elements: not a Vivado hardware handoff file" % where)
    return modules


def _parse_bounded(data: bytes, where: str) -> Any:
    """The XML tree, parsed as it is read so that nesting and element count are refused early
    (a Vivado .hwh nests about 8 deep and holds tens of thousands of elements)."""
    parser: Any = ElementTree.XMLPullParser(events=("start", "end"))
    root, depth, count = None, 0, 0
    try:
        for offset in range(0, len(data), 1 << 16):
            parser.feed(data[offset:offset + (1 << 16)])
            for event, element in parser.read_events():
                if event == "end":
                    depth -= 1
                    continue
                root = element if root is None else root
                depth, count = depth + 1, count + 1
                if depth > MAX_HWH_DEPTH or count > MAX_HWH_ELEMENTS:
                    raise HwhError("%s: XML nested deeper than %d or with more than %d elements: not a Vivado "
                                   ".hwh" % (where, MAX_HWH_DEPTH, MAX_HWH_ELEMENTS))
        parser.close()
    except ElementTree.ParseError as exc:
        raise HwhError("%s: not well-formed XML (%s)" % (where, exc)) from None
    if root is None:
        raise HwhError("%s: no XML element" % where)
    return root


@dataclasses.dataclass(frozen=True)
class TensilDesign:
    """What the overlay says about its TCU (from the .hwh, and the build's JSON if present)."""

    hwh_path: pathlib.Path
    tcu_instance: str
    tcu_module: str                         # e.g. top_pynqz1_perf
    instruction_bits: int
    dram_data_bits: int
    dram_address_bits: int
    clock_mhz: Optional[float]
    clock_source: Optional[str]             # e.g. ps7_0/FCLK_CLK3
    dma_instance: Optional[str]
    dma_parameters: Dict[str, str]
    dram_windows: Dict[str, Tuple[int, int]]   # "dram0"/"dram1" -> (first byte, last byte)
    json_path: Optional[pathlib.Path] = None
    tarch: Optional[Architecture] = None
    rtl_memories: Tuple[Tuple[int, int], ...] = ()    # (bits, depth) of the TCU's BRAMs
    tarch_file: Optional[str] = None                  # the JSON's, e.g. pynqz1_perf.tarch
    json_notes: Tuple[str, ...] = ()                  # what the JSON says of itself

    @property
    def arch_stem(self) -> Optional[str]:
        """The architecture's name: the JSON's .tarch file stem, else top_<stem>'s."""
        if self.tarch_file:
            return pathlib.Path(self.tarch_file).stem
        return self.tcu_module[4:] if self.tcu_module.startswith("top_") else None

    def mismatches(self, arch: Architecture) -> List[str]:
        """Every way `arch` differs from this bitstream's TCU, each naming both values."""
        out = []
        if self.tarch is not None:
            for field in ARCH_FIELDS:
                ours, theirs = getattr(arch, field), getattr(self.tarch, field)
                if ours != theirs:
                    out.append("%s: the bitstream's TCU has %r, the model %r"
                               % (field, theirs, ours))
        bits = arch.scalar_bytes * 8
        if self.rtl_memories and arch.array_size * bits not in {b for b, _ in self.rtl_memories}:
            out.append("array_size: the bitstream's TCU memories are %s bits wide (%s), the "
                       "model's vectors %d bits (%d x %d)" % (
                           "/".join(str(b) for b, _ in self.rtl_memories),
                           ", ".join("%dx%d" % m for m in self.rtl_memories),
                           arch.array_size * bits, arch.array_size, bits))
        depths = {d for _, d in self.rtl_memories}
        for field in ("local_depth", "accumulator_depth"):
            if depths and getattr(arch, field) not in depths:
                out.append("%s: the bitstream's TCU memories have %s vectors, the model %d"
                           % (field, "/".join(str(d) for d in sorted(depths)),
                              getattr(arch, field)))
        beat = self.dram_data_bits // 8
        if arch.vector_bytes % beat:
            out.append("array_size: the model's %d-byte vectors (%d x %s) are not whole %d-bit "
                       "beats of the bitstream's TCU DRAM ports" % (
                           arch.vector_bytes, arch.array_size, arch.data_type,
                           self.dram_data_bits))
        reach = max(arch.dram0_depth, arch.dram1_depth) * arch.vector_bytes
        if reach > 1 << self.dram_address_bits:
            out.append("dram depths: the model's DRAM0/DRAM1 span %d bytes, the TCU's %d-bit "
                       "addresses %d" % (reach, self.dram_address_bits,
                                         1 << self.dram_address_bits))
        return out

    def stream_problems(self) -> List[str]:
        """Where the DMA and the TCU's instruction port disagree (independent of a model)."""
        if self.dma_instance is None:
            return ["no AXI DMA drives the TCU's instruction stream (%s/instruction_tdata)"
                    % self.tcu_instance]
        width = self.dma_parameters.get("C_M_AXIS_MM2S_TDATA_WIDTH")
        if width is not None and width.isdigit() and int(width) != self.instruction_bits:
            return ["%s streams %s-bit words, the TCU's instruction port takes %d bits"
                    % (self.dma_instance, width, self.instruction_bits)]
        return []

    def check_model(self, model: Union[TensilModel, Architecture]) -> None:
        """Raise ArchMismatch, naming every differing value, unless `model` fits this TCU."""
        arch = model.arch if isinstance(model, TensilModel) else model
        problems = self.mismatches(arch) + self.stream_problems()
        if problems:
            what = getattr(model, "path", None) or getattr(model, "name", "the model")
            raise ArchMismatch("%s does not run on the bitstream %s (TCU %s): %s" % (
                what, self.hwh_path.with_suffix(".bit").name, self.tcu_module,
                "; ".join(problems)))

    def name_note(self, model: TensilModel) -> Optional[str]:
        """A remark when the model's name does not end with the TCU's arch stem (not refused:
        names are conventions)."""
        stem = self.arch_stem
        if stem and not model.name.endswith("_" + stem):
            return ("the model %r is not named for the TCU's architecture %r (Tensil names "
                    "models <model>_<arch stem>)" % (model.name, stem))
        return None


def _find_tcu(modules: Dict[str, HwhModule], where: str) -> HwhModule:
    found = [m for m in modules.values() if all(p in m.ports for p in _TCU_PORTS)]
    if not found:
        raise HwhError("%s: no Tensil TCU in this design (no module has the ports %s of "
                       "Tensil's top_<arch>)" % (where, ", ".join(_TCU_PORTS)))
    if len(found) > 1:
        raise HwhError("%s: %d Tensil TCUs (%s); the driver runs one" % (
            where, len(found), ", ".join(m.instance for m in found)))
    return found[0]


def _module_name(module: HwhModule) -> str:
    parts = module.vlnv.split(":")
    if len(parts) == 4 and parts[1] == "module_ref":
        return parts[2]
    return module.modtype or module.instance


def _clock(modules: Dict[str, HwhModule], tcu: HwhModule) -> Tuple[Optional[float], Optional[str]]:
    port = tcu.ports.get("clock")
    if port is None:
        return None, None
    for module in modules.values():
        if module.modtype != "processing_system7":
            continue
        for name, candidate in module.ports.items():
            match = re.match(r"FCLK_CLK(\d)$", name)
            if match and port.signame and candidate.signame == port.signame:
                index = match.group(1)
                for key in ("PCW_ACT_FPGA%s_PERIPHERAL_FREQMHZ" % index,
                            "PCW_FPGA%s_PERIPHERAL_FREQMHZ" % index):
                    try:
                        return float(module.parameters[key]), "%s/%s" % (module.fullname, name)
                    except (KeyError, ValueError):
                        continue
                return ((candidate.clk_frequency or 0) / 1e6 or None,
                        "%s/%s" % (module.fullname, name))
    return ((port.clk_frequency / 1e6) if port.clk_frequency else None), None


def _dma(modules: Dict[str, HwhModule], tcu: HwhModule) -> Optional[HwhModule]:
    net = tcu.ports["instruction_tdata"].signame
    for module in modules.values():
        if module is not tcu and module.modtype == "axi_dma" and net and any(
                p.signame == net for p in module.ports.values()):
            return module
    return None


def _windows(tcu: HwhModule) -> Dict[str, Tuple[int, int]]:
    windows: Dict[str, Tuple[int, int]] = {}
    for r in tcu.memranges:
        for master in ("dram0", "dram1"):
            if master in r.master.lower():
                low, high = windows.get(master, (r.base, r.high))
                windows[master] = (min(low, r.base), max(high, r.high))
    return windows


def file_sha256(path: Union[str, pathlib.Path]) -> str:
    """A file's SHA-256, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: pathlib.Path, hwh: pathlib.Path) -> Dict[str, Any]:
    """The build's JSON, checked: its schema, its .tarch, and that it describes these files."""
    where = str(path)
    if path.stat().st_size > MAX_JSON_BYTES:
        raise HwhError("%s: too large for a bitstream description" % where)
    try:  # bounded: a deep document is refused by a scan, never by a RecursionError
        raw = sj.loads(path.read_bytes(), sj.Limits(max_bytes=MAX_JSON_BYTES, max_depth=8))
    except (OSError, JSONError) as exc:
        raise HwhError("%s: not a readable JSON file (%s)" % (where, exc)) from None
    if not isinstance(raw, dict) or raw.get("schema") != BITSTREAM_SCHEMA:
        raise HwhError("%s: field 'schema' is %r; expected %r" % (
            where, raw.get("schema") if isinstance(raw, dict) else None, BITSTREAM_SCHEMA))
    try:
        tarch = Architecture.from_dict(raw.get("tarch"), "%s: field 'tarch'" % where)
    except ArchError as exc:
        raise HwhError(str(exc)) from None
    for key, target in (("hwh", hwh), ("bitstream", hwh.with_suffix(".bit"))):
        entry = raw.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and target.is_file():
            found = file_sha256(target)
            if entry["sha256"] != found:
                raise HwhError("%s: field '%s.sha256' is %s but %s hashes to %s: the JSON "
                               "describes another build" % (where, key, entry["sha256"][:12],
                                                            target.name, found[:12]))
    rtl = raw.get("rtl") or {}
    listed = rtl.get("memories") or [] if isinstance(rtl, dict) else None
    if not isinstance(listed, list):
        raise HwhError("%s: field 'rtl' must be an object whose 'memories' is a list" % where)
    memories = []
    for text in listed:
        match = re.match(r"^(\d+)x(\d+)$", str(text))
        if not match:
            raise HwhError("%s: field 'rtl.memories' has %r; expected '<bits>x<depth>'"
                           % (where, text))
        memories.append((int(match.group(1)), int(match.group(2))))
    tarch_file = raw.get("tarch_file")
    if tarch_file is not None and (not isinstance(tarch_file, str)
                                   or not re.match(r"^[A-Za-z0-9_.-]+\.tarch$", tarch_file)):
        raise HwhError("%s: field 'tarch_file' is %r; expected a .tarch file name"
                       % (where, tarch_file))
    return {"tarch": tarch, "memories": tuple(memories), "raw": raw, "tarch_file": tarch_file}


def read_design(path: PathLike) -> TensilDesign:
    """The design of a `.bit` (its `.hwh` beside it, and the JSON when present) or a `.hwh`."""
    path = pathlib.Path(path)
    hwh = path.with_suffix(".hwh")
    if not hwh.is_file():
        raise HwhError("%s: no .hwh beside the bitstream (pynq needs it too: copy the .hwh "
                       "Vivado wrote with the .bit)" % hwh)
    size = hwh.stat().st_size
    if size > MAX_HWH_BYTES:
        raise HwhError("%s: %d bytes is larger than any .hwh" % (hwh, size))
    modules = parse_hwh(hwh.read_bytes(), str(hwh))
    tcu = _find_tcu(modules, str(hwh))
    clock_mhz, clock_source = _clock(modules, tcu)
    dma = _dma(modules, tcu)
    json_path = hwh.with_suffix(".json")
    described: Dict[str, Any] = {}
    notes: List[str] = []
    if json_path.is_file():
        described = _read_json(json_path, hwh)
        raw = described["raw"]
        clock = raw.get("clock_mhz")
        if isinstance(clock, dict) and isinstance(clock.get("actual"), (int, float)):
            notes.append("clock %.3g MHz (built)" % clock["actual"])
        tools = raw.get("tools")
        if isinstance(tools, dict) and tools.get("vivado"):
            notes.append("Vivado %s" % tools["vivado"])
    return TensilDesign(
        hwh_path=hwh, tcu_instance=tcu.fullname or tcu.instance, tcu_module=_module_name(tcu),
        instruction_bits=tcu.ports["instruction_tdata"].width,
        dram_data_bits=tcu.ports["m_axi_dram0_wdata"].width,
        dram_address_bits=tcu.ports["m_axi_dram0_araddr"].width,
        clock_mhz=clock_mhz, clock_source=clock_source,
        dma_instance=(dma.fullname or dma.instance) if dma else None,
        dma_parameters=dict(dma.parameters) if dma else {},
        dram_windows=_windows(tcu),
        json_path=json_path if described else None, tarch=described.get("tarch"),
        rtl_memories=described.get("memories", ()), tarch_file=described.get("tarch_file"),
        json_notes=tuple(notes))
