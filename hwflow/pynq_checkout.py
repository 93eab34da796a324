"""What a PYNQ repository checkout tells the bitstream flow (github.com/Xilinx/PYNQ).

Read from `boards/Pynq-Z1/base/base.tcl` (the base overlay's block-design script that
Vivado's write_bd_tcl produced): the Vivado version the release was made with
(`scripts_vivado_version`), the base design's procedures that build the `video` hierarchy
(HDMI in and out: VDMA, colour conversion, pixel (un)packing, timing controllers, Digilent's
rgb2dvi/dvi2rgb), the PS7 settings of the PYNQ-Z1 (DDR, MIO, clocks) and the IP versions it
was validated with. These are copied at build time into the build folder, never into the
repository.
"""

import pathlib
import re
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .errors import HwflowError, ToolMissing

__all__ = ["PynqCheckout", "extract_proc", "tcl_procs_called"]

BASE_TCL = pathlib.Path("boards/Pynq-Z1/base/base.tcl")
VIDEO_PROC = "create_hier_cell_video"
_PROC_HEAD = re.compile(r"^proc\s+(\S+)\s+\{[^}]*\}\s+\{", re.M)
_CALL = re.compile(r"\b(create_hier_cell_\w+)\s+\$")


def extract_proc(text: str, name: str) -> str:
    """The whole `proc NAME {...} {...}` definition from TCL `text` (braces matched)."""
    for match in _PROC_HEAD.finditer(text):
        if match.group(1) != name:
            continue
        depth, i = 1, match.end()
        while i < len(text) and depth:
            char = text[i]
            if char == "\\":
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(char, 0)
            i += 1
        if depth:
            raise HwflowError("proc %s in the PYNQ base script has unbalanced braces" % name)
        return text[match.start():i] + "\n"
    raise HwflowError("the PYNQ base script defines no proc %s" % name)


def tcl_procs_called(body: str) -> List[str]:
    """create_hier_cell_* procedures that `body` calls, in order of first call."""
    seen: List[str] = []
    for name in _CALL.findall(body):
        if name not in seen:
            seen.append(name)
    return seen


@dataclass
class PynqCheckout:
    root: pathlib.Path
    base_tcl_text: str

    @classmethod
    def open(cls, root: "pathlib.Path | str | None") -> "PynqCheckout":
        if not root:
            raise ToolMissing(
                "no PYNQ checkout named: pass PYNQ_DIR=<dir> with a clone of "
                "https://github.com/Xilinx/PYNQ at the tag of your board image "
                "(e.g. `git clone -b v3.1 https://github.com/Xilinx/PYNQ`)")
        root = pathlib.Path(root)
        base = root / BASE_TCL
        if not base.is_file():
            raise ToolMissing("%s is not a PYNQ checkout: %s is missing (clone "
                              "https://github.com/Xilinx/PYNQ and check out your image's tag)"
                              % (root, BASE_TCL))
        return cls(root, base.read_text(encoding="utf-8", errors="replace"))

    @property
    def base_dir(self) -> pathlib.Path:
        return self.root / BASE_TCL.parent

    @property
    def ip_repo(self) -> pathlib.Path:
        return self.root / "boards" / "ip"

    def vivado_version(self) -> str:
        match = re.search(r"^\s*set\s+scripts_vivado_version\s+(\S+)", self.base_tcl_text, re.M)
        if not match:
            raise HwflowError("%s names no scripts_vivado_version: cannot tell which Vivado "
                              "this PYNQ release needs" % (self.root / BASE_TCL))
        return match.group(1)

    def release(self) -> Optional[str]:
        """The PYNQ release (sdbuild/Makefile VERSION, else pynq/__init__.py __version__)."""
        for rel, pattern in (("sdbuild/Makefile", r"^VERSION\s*:?=\s*(\S+)"),
                             ("pynq/__init__.py", r"^__version__\s*=\s*['\"]([^'\"]+)")):
            path = self.root / rel
            if path.is_file():
                match = re.search(pattern, path.read_text(encoding="utf-8", errors="replace"), re.M)
                if match:
                    return match.group(1)
        return None

    def commit(self) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(self.root), "rev-parse", "HEAD"],
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    def video_procs(self) -> List[Tuple[str, str]]:
        """(name, definition) of the video hierarchy's procs, callees before callers."""
        ordered: List[Tuple[str, str]] = []

        def visit(name: str, stack: Tuple[str, ...]) -> None:
            if name in stack:
                raise HwflowError("recursive procs in the PYNQ base script: %s" % " -> ".join(stack))
            if any(name == done for done, _ in ordered):
                return
            body = extract_proc(self.base_tcl_text, name)
            for callee in tcl_procs_called(body):
                visit(callee, stack + (name,))
            ordered.append((name, body))

        visit(VIDEO_PROC, ())
        return ordered

    def ps7_config(self) -> List[Tuple[str, str]]:
        """(CONFIG.key, value) pairs the base design sets on its processing_system7 `ps7_0`."""
        root = extract_proc(self.base_tcl_text, "create_root_design")
        start = re.search(r"set\s+ps7_0\s+\[\s*create_bd_cell[^\]]*processing_system7", root)
        if not start:
            raise HwflowError("the PYNQ base script creates no processing_system7 named ps7_0")
        block = re.search(r"set_property\s+-dict\s+\[\s*list(.*?)\]\s+\$ps7_0", root[start.end():],
                          re.S)
        if not block:
            raise HwflowError("the PYNQ base script sets no properties on ps7_0")
        pairs = re.findall(r"(CONFIG\.\w+)\s+\{([^{}]*)\}", block.group(1))
        if not pairs:
            raise HwflowError("the PYNQ base script's ps7_0 properties could not be read")
        return pairs

    def ip_versions(self) -> Dict[str, str]:
        """vendor:library:name -> version for every VLNV the base script instantiates."""
        versions: Dict[str, str] = {}
        for vlnv in re.findall(r"\b([\w.]+:\w+:\w+:\d+\.\d+)\b", self.base_tcl_text):
            prefix, version = vlnv.rsplit(":", 1)
            versions.setdefault(prefix, version)
        return versions

    def hls_ips_missing(self, vlnvs: List[str]) -> List[str]:
        """PYNQ's HLS IPs (xilinx.com:hls:*) among `vlnvs` that are not built (packaged) yet."""
        missing = []
        for vlnv in vlnvs:
            parts = vlnv.split(":")
            if len(parts) == 4 and parts[1] == "hls":
                packaged = self.ip_repo / "hls" / parts[2] / "solution1" / "impl" / "ip"
                if not list(packaged.glob("*.zip")) and not (packaged / "component.xml").is_file():
                    missing.append(parts[2])
        return sorted(set(missing))
