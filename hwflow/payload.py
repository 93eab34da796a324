"""What a board receives (by SD-card image or by deploy), as a list of entries with modes/owners.

The application folder (default /home/xilinx/pynq-fewshot-fl, owned by the board's user):

    fedcore/ fedlink/ device/ demo_app/ tensil/   the board packages of pyproject [tool.board-image]
    models/                                       ONNX + model cards + compiled .tmodel/.tprog/.tdata
    bitstreams/<name>/<name>.bit .hwh .json       built overlays (make bitstream)
    config/board.toml                             this board's settings (from configs/board/*.toml)
    config/fl.toml, config/fl.env                 the federated run and its broker URL (root-only)
    wheels/*.whl, wheels/requirements.txt         installed offline at first boot
    bin/install-wheels.sh, bin/apply.sh           first-boot install; post-deploy unit refresh
    systemd/*.service                             the units (also installed in /etc/systemd/system)
    MANIFEST.json                                 sha256 of every file above

The systemd units: fewshot-setup.service (oneshot: install the wheels), fewshot-demo.service
(the demonstrator, restarted on failure) and, when enabled, fewshot-fl.service (the federated
client). Their text is in hwflow/units.py.
"""

import hashlib
import json
import pathlib
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from fedlink.settings import BROKER_ENV, PASSWORD_ENV, split_password

from .board_config import BoardConfig
from .errors import HwflowError
from .project import REPO_ROOT, BoardImageSpec, load_board_image
from .units import board_scripts, board_units

__all__ = ["Entry", "Payload", "build_payload", "SAFE_PATH"]

_MODEL_SUFFIXES = (".onnx", ".json", ".tmodel", ".tprog", ".tdata")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@/-]*$")


@dataclass(frozen=True)
class Entry:
    """One thing on the board: a directory, a file (from disk or generated) or a symlink."""

    path: str                       # absolute path on the board
    kind: str                       # "dir", "file" or "symlink"
    mode: int = 0o644
    owner: str = "app"              # "app" (the board's user) or "root"
    source: Optional[pathlib.Path] = None
    data: Optional[bytes] = None
    target: str = ""                # symlink target

    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.source is None:
            raise HwflowError("%s has no content (a %s)" % (self.path, self.kind))
        return self.source.read_bytes()

    def size(self) -> int:
        if self.kind != "file":
            return 0
        return len(self.data) if self.data is not None else self.source.stat().st_size

    def sha256(self) -> str:
        return hashlib.sha256(self.content()).hexdigest()


@dataclass
class Payload:
    config: BoardConfig
    entries: List[Entry] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    bitstream: Optional[str] = None
    units: List[str] = field(default_factory=list)

    def app(self, relative: str) -> str:
        return self.config.app_dir.rstrip("/") + "/" + relative

    def add_file(self, relative: str, *, source: Optional[pathlib.Path] = None,
                 data: Optional[bytes] = None, mode: int = 0o644, owner: str = "app") -> None:
        self.entries.append(Entry(self.app(relative), "file", mode, owner, source, data))

    def files(self) -> List[Entry]:
        return [e for e in self.entries if e.kind == "file"]

    def directories(self) -> List[str]:
        """Every directory under the app folder that its files need (the folder itself
        included), parents first."""
        root = self.config.app_dir.rstrip("/")
        dirs = set()
        for entry in self.entries:
            parent = entry.path.rsplit("/", 1)[0]
            while (parent == root or parent.startswith(root + "/")) and parent not in dirs:
                dirs.add(parent)
                parent = parent.rsplit("/", 1)[0]
        return sorted(dirs, key=lambda d: (d.count("/"), d))

    def total_bytes(self) -> int:
        return sum(e.size() for e in self.entries)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def _package_files(spec: BoardImageSpec, payload: Payload, strict: bool) -> None:
    excluded = {pathlib.PurePosixPath(e) for e in spec.exclude}
    for package in spec.packages:
        root = REPO_ROOT / package
        if not (root / "__init__.py").is_file():
            message = ("board package %s/ is not in this checkout (pyproject [tool.board-image]); "
                       "the board gets no %s" % (package, package))
            if strict:
                raise HwflowError(message)
            payload.warn(message)
            continue
        for path in sorted(root.rglob("*")):
            rel = pathlib.PurePosixPath(path.relative_to(REPO_ROOT).as_posix())
            if (not path.is_file() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo")
                    or any(rel == e or e in rel.parents for e in excluded)):
                continue
            payload.add_file(str(rel), source=path)


def _bitstreams(payload: Payload, bitstreams_dir: pathlib.Path) -> List[str]:
    shipped = []
    for folder in sorted(p for p in bitstreams_dir.glob("*") if p.is_dir()):
        name = folder.name
        bit, hwh, meta = (folder / (name + s) for s in (".bit", ".hwh", ".json"))
        if not (bit.is_file() and hwh.is_file()):
            continue
        if not meta.is_file():
            payload.warn("%s has no %s.json: the board cannot check its architecture" % (folder, name))
        for path in (bit, hwh, meta):
            if path.is_file():
                payload.add_file("bitstreams/%s/%s" % (name, path.name), source=path)
        shipped.append(name)
    return shipped


def _choose_bitstream(payload: Payload, shipped: List[str]) -> None:
    wanted = payload.config.demo_bitstream
    if wanted:
        if wanted not in shipped:
            raise HwflowError("the config names bitstream %r but bitstreams/ has %s" % (
                wanted, ", ".join(shipped) or "none built (make bitstream)"))
        payload.bitstream = wanted
    elif len(shipped) == 1:
        payload.bitstream = shipped[0]
    elif shipped:
        raise HwflowError("several bitstreams are built (%s): name the demo's in the config's "
                          "[demo] bitstream" % ", ".join(shipped))
    else:
        payload.warn("no bitstream built (make bitstream): the board runs the CPU fallback")


def _fl_files(payload: Payload) -> None:
    config = payload.config
    run_config = pathlib.Path(config.fl_run_config)
    run_config = run_config if run_config.is_absolute() else REPO_ROOT / run_config
    if not run_config.is_file():
        raise HwflowError("the federated run config %s does not exist" % run_config)
    payload.add_file("config/fl.toml", source=run_config)
    # The broker and its password reach the client through its environment only: a command line
    # is readable by every user (/proc/PID/cmdline), this file by root alone.
    url, password = split_password(config.fl_broker)
    lines = ['%s="%s"' % (BROKER_ENV, url)] + (['%s="%s"' % (PASSWORD_ENV, password)] if password else [])
    payload.add_file("config/fl.env", data=("\n".join(lines) + "\n").encode(), mode=0o600, owner="root")


def build_payload(config: BoardConfig, *, wheels: Sequence[pathlib.Path] = (),
                  requirements: Sequence[str] = (), spec: Optional[BoardImageSpec] = None,
                  strict: bool = False, bitstreams_dir: Optional[pathlib.Path] = None,
                  models_dir: Optional[pathlib.Path] = None) -> Payload:
    """Every file of the application folder, units included (the system entries are the
    SD card's business: see sdcard.system_entries)."""
    spec = spec or load_board_image()
    payload = Payload(config)
    _package_files(spec, payload, strict)
    for path in sorted((models_dir or REPO_ROOT / "models").glob("*")):
        if path.is_file() and path.suffix in _MODEL_SUFFIXES:
            payload.add_file("models/" + path.name, source=path)
    _choose_bitstream(payload, _bitstreams(payload, bitstreams_dir or REPO_ROOT / "bitstreams"))
    for wheel in wheels:
        payload.add_file("wheels/" + wheel.name, source=wheel)
    if wheels:
        payload.add_file("wheels/requirements.txt", data=("\n".join(requirements) + "\n").encode())
    for rel, text in board_scripts(config).items():
        payload.add_file(rel, data=text.encode(), mode=0o755)
    if config.fl_enabled:
        _fl_files(payload)
    payload.add_file("config/board.toml", data=config.to_toml(payload.bitstream).encode())
    units = board_units(config, payload.bitstream)
    payload.units = sorted(units)
    for name, text in sorted(units.items()):
        payload.add_file("systemd/" + name, data=text.encode())
    prefix = len(config.app_dir.rstrip("/")) + 1
    manifest = {e.path[prefix:]: e.sha256() for e in payload.files()}
    payload.add_file("MANIFEST.json", data=(json.dumps(
        {"board_id": config.board_id, "files": manifest}, indent=1, sort_keys=True) + "\n").encode())
    for entry in payload.entries:
        if not SAFE_PATH.match(entry.path):
            raise HwflowError("%s: board paths are letters, digits and ._+@- only" % entry.path)
    return payload
