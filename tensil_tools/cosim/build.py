"""Building the co-simulation executable with Verilator, once, cached by content.

The cache key is a hash of the RTL files, the harness source, the Verilator configuration,
the build flags and the Verilator and g++ versions; a build lands in
`<cache>/<key>/cosim`, made in a temporary directory and renamed into place under a lock, so
concurrent builders wait for one build instead of racing. `<cache>` is $TENSIL_COSIM_CACHE,
else `build/cosim/` in the repository (gitignored), else $XDG_CACHE_HOME/tensil-cosim.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from ..rtl import REPO_ROOT, RtlInfo, check_simulatable, find_rtl
from .errors import CosimBuildError, CosimUnavailable

__all__ = ["Build", "build", "cache_root", "missing_tools", "CXX_OPT", "VERILATOR_FLAGS"]

HARNESS = Path(__file__).with_name("harness.cpp")

# -Os (Verilator's default) on the model's fast path measured best for build time at nearly
# the speed of -O2; see the co-simulation section of the README for the figures.
CXX_OPT = "-Os"
VERILATOR_FLAGS: Tuple[str, ...] = (
    "--cc",
    "--exe",
    "--build",
    "--prefix",
    "Vtop",
    "-Wno-fatal",
    "-Wno-lint",
    "-Wno-style",
)
_RECIPE = "1"  # bump when the build steps change in a way the hashed inputs do not show

_INSTALL = {
    "verilator": "install Verilator (Debian/Ubuntu: `sudo apt-get install verilator`; "
    "`make test` installs it when run as root)",
    "g++": "install a C++ compiler (Debian/Ubuntu: `sudo apt-get install g++`)",
    "make": "install make (Debian/Ubuntu: `sudo apt-get install make`)",
}


@dataclass(frozen=True)
class Build:
    executable: Path
    rtl: RtlInfo
    key: str
    seconds: float  # wall time spent building now; 0.0 when the cache had it
    cached: bool
    cpu_seconds: float = 0.0  # CPU time of the compilers (all jobs), 0.0 when cached


def missing_tools() -> List[str]:
    """One sentence per missing build tool, saying how to get it."""
    return [
        "%s is not on PATH: %s" % (tool, how)
        for tool, how in _INSTALL.items()
        if shutil.which(tool) is None
    ]


def cache_root(cache_dir: Optional[os.PathLike] = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("TENSIL_COSIM_CACHE"):
        return Path(os.environ["TENSIL_COSIM_CACHE"])
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / "build" / "cosim"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "tensil-cosim"


def _tool_version(command: List[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CosimUnavailable("cannot run %s: %s" % (" ".join(command), exc)) from exc
    return out.strip().splitlines()[0] if out.strip() else ""


def _config_text(rtl: RtlInfo) -> str:
    """Verilator configuration: the BRAMs' arrays and write enables become readable from C++
    (the harness preloads and dumps the memories and watches for writes while draining)."""
    lines = ["`verilator_config"]
    for module in sorted({b.module for b in rtl.brams}):
        lines.append('public_flat_rw -module "%s" -var "ram"' % module)
        for port in ("wea", "web"):
            lines.append('public_flat_rd -module "%s" -var "%s"' % (module, port))
    return "\n".join(lines) + "\n"


def _key(rtl: RtlInfo, config: str, cxx_opt: str) -> str:
    digest = hashlib.sha256()
    for part in (
        _RECIPE,
        " ".join(VERILATOR_FLAGS),
        cxx_opt,
        rtl.top_module,
        config,
        _tool_version(["verilator", "--version"]),
        _tool_version(["g++", "--version"]),
        HARNESS.read_text(encoding="utf-8"),
    ):
        digest.update(part.encode("utf-8") + b"\0")
    for path in rtl.files:
        digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(
    rtl_dir: Optional[os.PathLike] = None,
    *,
    cache_dir: Optional[os.PathLike] = None,
    jobs: Optional[int] = None,
    cxx_opt: str = CXX_OPT,
) -> Build:
    """The co-simulation executable for the RTL in `rtl_dir` (see `find_rtl`), built if needed.

    `cxx_opt` is the g++ optimisation of the model's code (Verilator's OPT_FAST/OPT_GLOBAL).
    """
    if cxx_opt not in ("-O0", "-O1", "-O2", "-O3", "-Os"):
        raise ValueError("cxx_opt must be one of -O0 -O1 -O2 -O3 -Os, got %r" % (cxx_opt,))
    rtl = find_rtl(rtl_dir)
    check_simulatable(rtl)
    missing = missing_tools()
    if missing:
        raise CosimUnavailable("; ".join(missing))
    config = _config_text(rtl)
    key = _key(rtl, config, cxx_opt)
    root = cache_root(cache_dir)
    final = root / key
    if (final / "cosim").is_file():
        return Build(final / "cosim", rtl, key, 0.0, True)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / (key + ".lock")):
        if (final / "cosim").is_file():  # another process built it while we waited
            return Build(final / "cosim", rtl, key, 0.0, True)
        started = time.monotonic()
        cpu_started = _children_cpu()
        work = Path(tempfile.mkdtemp(prefix=".tmp-%s-" % key, dir=root))
        try:
            _verilate(rtl, config, work, jobs or os.cpu_count() or 1, cxx_opt)
            seconds = time.monotonic() - started
            cpu_seconds = _children_cpu() - cpu_started
            (work / "build.json").write_text(
                json.dumps(
                    {
                        "rtl": str(rtl.directory),
                        "top_module": rtl.top_module,
                        "seconds": round(seconds, 2),
                        "cpu_seconds": round(cpu_seconds, 2),
                        "cxx_opt": cxx_opt,
                        "verilator_flags": list(VERILATOR_FLAGS),
                    },
                    indent=2,
                )
                + "\n"
            )
            if final.exists():  # a stale partial entry without the executable
                shutil.rmtree(final)
            os.rename(work, final)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return Build(final / "cosim", rtl, key, seconds, False, cpu_seconds)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _verilate(rtl: RtlInfo, config: str, work: Path, jobs: int, cxx_opt: str) -> None:
    config_file = work / "cosim.vlt"
    config_file.write_text(config)
    harness = work / HARNESS.name
    shutil.copyfile(HARNESS, harness)
    obj = work / "obj"
    command = [
        "verilator",
        *VERILATOR_FLAGS,
        "-j",
        str(jobs),
        "--top-module",
        rtl.top_module,
        "--Mdir",
        str(obj),
        "-o",
        "cosim",
        "-MAKEFLAGS",
        "OPT_FAST=%s OPT_GLOBAL=%s OPT_SLOW=-O0" % (cxx_opt, cxx_opt),
        "-CFLAGS",
        "-std=c++17",
        str(config_file),
        *(str(p) for p in rtl.files),
        str(harness),
    ]
    log = work / "build.log"
    with open(log, "w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    if result.returncode != 0 or not (obj / "cosim").is_file():
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise CosimBuildError(
            "building the co-simulation failed (exit %d) for %s:\n%s"
            % (result.returncode, rtl.directory, "\n".join(tail))
        )
    os.replace(obj / "cosim", work / "cosim")
    shutil.rmtree(obj)
