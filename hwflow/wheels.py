"""Wheels for what a PYNQ image lacks (paho-mqtt, tomli): found, checked for the board, never
built here. Installed on the board offline at first boot (units.py, bin/install-wheels.sh)."""

import pathlib
import re
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import HwflowError
from .project import REPO_ROOT

__all__ = ["wheel_tags", "requirement_name", "collect_wheels"]

_WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-"
                    r"(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_tags(path: pathlib.Path) -> Tuple[str, str]:
    """(normalised project name, platform tag) of a wheel, from its file name (PEP 427)."""
    match = _WHEEL.match(path.name)
    if not match:
        raise HwflowError("%s is not a wheel file name (name-version-python-abi-platform.whl)"
                          % path.name)
    return _normal(match.group("name")), match.group("platform")


def requirement_name(requirement: str) -> str:
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise HwflowError("cannot read a project name in the requirement %r" % requirement)
    return _normal(match.group(1))


def _pip_download(requirements: Sequence[str], into: pathlib.Path, python_version: str) -> None:
    into.mkdir(parents=True, exist_ok=True)
    platform = ["--platform", "linux_armv7l", "--platform", "manylinux2014_armv7l"]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           *platform, "--python-version", python_version, "-d", str(into), *requirements]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise HwflowError(
            "no wheels folder given and `pip download` could not get %s (%s). On a connected "
            "machine run: pip download --no-deps --only-binary=:all: --platform linux_armv7l "
            "--python-version %s -d wheels %s; then pass WHEELS=wheels (or NO_WHEELS=1 to ship none)"
            % (", ".join(requirements), why, python_version,
               " ".join("'%s'" % r for r in requirements)))


def collect_wheels(requirements: Sequence[str], wheels_dir: Optional[pathlib.Path],
                   python_version: str = "3.10") -> List[pathlib.Path]:
    """The wheels of `wheels_dir` (every one must suit an armv7l board), which must cover
    `requirements`. Without a folder: build/wheels, filled by `pip download` (network or pip's
    cache) when it does not cover them yet."""
    if not requirements:
        return []
    if wheels_dir is None:
        wheels_dir = REPO_ROOT / "build" / "wheels"
        have = {wheel_tags(w)[0] for w in wheels_dir.glob("*.whl")} if wheels_dir.is_dir() else set()
        if any(requirement_name(r) not in have for r in requirements):
            _pip_download(requirements, wheels_dir, python_version)
    if not wheels_dir.is_dir():
        raise HwflowError("the wheels folder %s does not exist" % wheels_dir)
    wheels = sorted(wheels_dir.glob("*.whl"))
    names: Dict[str, List[str]] = {}
    for wheel in wheels:
        name, platform = wheel_tags(wheel)
        if platform != "any" and "armv7l" not in platform:
            raise HwflowError("%s is built for %s; a PYNQ-Z1 (armv7l) needs pure-Python (any) or "
                              "armv7l wheels" % (wheel.name, platform))
        names.setdefault(name, []).append(wheel.name)
    missing = [r for r in requirements if requirement_name(r) not in names]
    if missing:
        raise HwflowError("no wheel in %s for %s (it has: %s)" % (
            wheels_dir, ", ".join(missing), ", ".join(w.name for w in wheels) or "nothing"))
    return wheels
