"""Structure-aware fuzzing of the Tensil files a board reads (issue 23): valid .tarch, .tmodel
and .hwh files, mutated the way a hostile or damaged file would be (values of the wrong type or
range, huge and negative numbers, deep nesting, cut and flipped bytes, other encodings), read by
the project's readers. Only the project's own errors (TensilError) may come out: no
RecursionError, MemoryError, KeyError or TypeError, and no allocation beyond the bound.

It runs for FEDCORE_FUZZ_SECONDS seconds a file kind (default 3; `make fuzz` runs it longer)."""

import json
import os
import pathlib
import random
import time
import tracemalloc

import pytest

from tensil.arch import load_tarch
from tensil.errors import TensilError
from tensil.hwh import parse_hwh
from tensil.tmodel import load_tmodel
from tests.fake_pynq.assets import make_tmodel

FUZZ_SECONDS = float(os.environ.get("FEDCORE_FUZZ_SECONDS", "3"))
ROOT = pathlib.Path(__file__).resolve().parents[1]
HWH = ROOT / "tests" / "fixtures" / "hwh" / "pynqz1_perf_125mhz.hwh"
MEMORY_BOUND = 256 << 20

ODD_VALUES = [None, True, -1, 0, 1 << 31, 1 << 40, 1 << 63, 10 ** 400, 1e308, -0.5, "", "x" * 300,
              [], {}, [[[[]]]], {"a": {"b": {"c": {}}}}]


def _mutate_json(rng: random.Random, document):
    """One structural change at a random place of a parsed JSON document."""
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path + [key])
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, path + [index])

    walk(document, [])
    path = rng.choice(paths[1:] or paths)
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    choice = rng.random()
    if not path:
        return rng.choice(ODD_VALUES)
    if choice < 0.6:
        parent[path[-1]] = rng.choice(ODD_VALUES)
    elif choice < 0.8 and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = _deep(rng.randint(10, 400))  # deeper still: _mutate_bytes inserts brackets
    return document


def _deep(levels: int):
    value = None
    for _ in range(levels):
        value = [value]
    return value


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    choice = rng.random()
    if choice < 0.3:
        cut = rng.randrange(len(data))
        return data[:cut]
    if choice < 0.6:
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if choice < 0.8:
        at = rng.randrange(len(data))
        return data[:at] + b"[" * rng.randint(1000, 50000) + data[at:]
    return data.decode("utf-8", "replace").encode(rng.choice(["utf-16", "utf-16-be", "utf-32", "latin-1"]),
                                                      "replace")


def _fuzz(read, make_valid: bytes, structured, seed: int) -> int:
    rng = random.Random(seed)
    deadline = time.monotonic() + FUZZ_SECONDS
    cases = 0
    tracemalloc.start()
    try:
        while time.monotonic() < deadline:
            if structured is not None and rng.random() < 0.6:
                data = json.dumps(_mutate_json(rng, json.loads(make_valid))).encode()
            else:
                data = _mutate_bytes(rng, make_valid)
            try:
                read(data)
            except TensilError:
                pass
            cases += 1
        assert tracemalloc.get_traced_memory()[1] < MEMORY_BOUND
    finally:
        tracemalloc.stop()
    return cases


def test_tarch_reader_only_raises_tensil_errors(tmp_path):
    valid = (ROOT / "tensil_arch" / "pynqz1_perf.tarch").read_bytes()
    path = tmp_path / "fuzz.tarch"

    def read(data):
        path.write_bytes(data)
        load_tarch(path)

    assert _fuzz(read, valid, True, 1) > 50


def test_tmodel_reader_only_raises_tensil_errors(tmp_path):
    manifest = make_tmodel(tmp_path)
    valid = manifest.read_bytes()

    def read(data):
        manifest.write_bytes(data)
        load_tmodel(manifest)

    assert _fuzz(read, valid, True, 2) > 50


@pytest.mark.skipif(not HWH.is_file(), reason="the .hwh fixture is missing")
def test_hwh_reader_only_raises_tensil_errors():
    valid = HWH.read_bytes()
    assert _fuzz(lambda data: parse_hwh(data, "fuzz.hwh"), valid, None, 3) > 5
