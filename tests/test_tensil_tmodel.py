"""The `.tmodel` manifest: exactly the keys Tensil's driver unpacks, checked against its files."""

import json

import pytest

from tensil.arch import ARCH_FIELDS
from tensil.errors import TmodelError
from tensil.tmodel import TMODEL_KEYS, ConstsFile, Vars, load_tmodel, parse_tmodel, write_tmodel
from tests.fake_pynq.assets import make_tmodel


def _rewrite(path, change):
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def test_valid_tmodel_is_read(tmp_path):
    tmodel = load_tmodel(make_tmodel(tmp_path))
    assert tmodel.name == "tiny" and tmodel.arch.array_size == 8
    assert tmodel.prog_path.name == "tiny.tprog"
    assert [p.name for p in tmodel.const_paths] == ["tiny.tdata"]
    assert tmodel.consts == (ConstsFile("tiny.tdata", 0, 64),)
    assert tmodel.inputs == (Vars("Input", 0, 384),) and tmodel.outputs == (Vars("Output", 384, 1),)
    assert tmodel.load_consts_to_local is False


def test_writer_gives_tensils_compact_json_in_tensils_key_order(tmp_path):
    path = make_tmodel(tmp_path)
    model = load_tmodel(path)
    out = write_tmodel(model, tmp_path / "copy.tmodel")
    text = out.read_text()
    assert " " not in text and text == model.to_json()
    raw = json.loads(text)
    assert tuple(raw) == TMODEL_KEYS and tuple(raw["arch"]) == ARCH_FIELDS
    assert tuple(raw["prog"]) == ("file_name", "size")
    assert tuple(raw["consts"][0]) == ("file_name", "base", "size")
    assert tuple(raw["inputs"][0]) == ("name", "base", "size")
    assert load_tmodel(out) == load_tmodel(out) and load_tmodel(out).to_dict() == model.to_dict()


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("prog"), r"field '<root>' misses key\(s\) 'prog'"),
    (lambda t: t.update(version=2), r"field '<root>' has unknown key\(s\) 'version'"),
    (lambda t: t["prog"].update(extra=1), r"field 'prog' has unknown key\(s\) 'extra'"),
    (lambda t: t["prog"].update(file_name="gone.tprog"), r"field 'prog.file_name' names a missing"),
    (lambda t: t["prog"].update(file_name="../x.tprog"), r"'prog.file_name' must be a file name"),
    (lambda t: t["prog"].update(size=12), "field 'prog.size' is 12 bytes, not a whole number"),
    (lambda t: t["prog"].update(size=72), "names tiny.tprog of 64 bytes; the manifest says 72"),
    (lambda t: t["consts"][0].update(size=-1), r"field 'consts\[0\].size' must be a non-negative"),
    (lambda t: t["consts"][0].update(size=65), r"'consts\[0\].file_name' names tiny.tdata of 1024 "
                                               r"bytes; the manifest says 1040"),
    (lambda t: t["consts"][0].update(base=1 << 20), r"'consts\[0\]' vectors 1048576..1048639 "
                                                    r"exceed DRAM1 depth"),
    (lambda t: t.update(consts={}), "field 'consts' must be a list"),
    (lambda t: t.update(inputs=[]), "field 'inputs' must be a non-empty list"),
    (lambda t: t["outputs"][0].pop("name"), r"field 'outputs\[0\]' misses key\(s\) 'name'"),
    (lambda t: t["outputs"][0].update(name=""), r"field 'outputs\[0\].name' must be a non-empty"),
    (lambda t: t["inputs"][0].update(base=True), r"field 'inputs\[0\].base' must be a non-neg"),
    (lambda t: t["inputs"][0].update(name="Input/columns(kw=3,left=3)"),
     r"field 'inputs\[0\].name' input 'Input/columns\(kw=3,left=3\)': a packing of 3 columns from 3 "
     r"before the pixel is not one"),
    (lambda t: t["arch"].update(data_type="FP64"), "field 'arch': field 'data_type' is 'FP64'"),
    (lambda t: t["arch"].update(array_size=0), "field 'arch': field 'array_size' is 0"),
    (lambda t: t["arch"].pop("thread_queue_depth"), r"field 'arch': missing field\(s\) 'thread_queue_depth'"),
    (lambda t: t.update(load_consts_to_local="no"), "field 'load_consts_to_local' must be true"),
    (lambda t: t.update(name=3), "field 'name' must be a non-empty string"),
])
def test_malformed_tmodels_are_rejected(tmp_path, change, message):
    path = make_tmodel(tmp_path)
    _rewrite(path, change)
    with pytest.raises(TmodelError, match=message) as info:
        load_tmodel(path)
    assert str(path) in str(info.value)


def test_unreadable_manifests(tmp_path):
    with pytest.raises(TmodelError, match="Tensil model file not found"):
        load_tmodel(tmp_path / "none.tmodel")
    bad = tmp_path / "bad.tmodel"
    bad.write_bytes(b"\xff{")
    with pytest.raises(TmodelError, match="not a readable .tmodel JSON file"):
        load_tmodel(bad)
    bad.write_text("[]")
    with pytest.raises(TmodelError, match="field '<root>' must be an object"):
        load_tmodel(bad)
    bad.write_text(" " * ((1 << 20) + 1))
    with pytest.raises(TmodelError, match="too large for a .tmodel manifest"):
        load_tmodel(bad)


def test_files_are_not_needed_without_check_files(tmp_path):
    path = make_tmodel(tmp_path)
    (tmp_path / "tiny.tprog").unlink()
    assert load_tmodel(path, check_files=False).prog.size == 64
    raw = json.loads(path.read_text())
    assert parse_tmodel(raw).path is None


@pytest.mark.parametrize("write, message", [
    # Issue 23: deep JSON in a 1 MiB .tmodel raised RecursionError
    (lambda path: path.write_text('{"name":' * 20000 + '"x"' + "}" * 20000), "nested deeper than 6"),
    # ...and a 700-byte one declared memories numpy then allocated (6.3 GiB to 96 TiB)
    (lambda path: _rewrite(path, lambda t: t["arch"].update(dram0_depth=1 << 40)),
     r"field 'arch': field 'dram0_depth' is 1099511627776 vectors .* more than a 32-bit DRAM window holds"),
    (lambda path: _rewrite(path, lambda t: t["arch"].update(local_depth=1 << 30)),
     r"field 'local_depth' is 1073741824 vectors .* more than on-chip memory holds"),
    # a 3 GiB sparse .tprog took the doctor to 3.8 GB: its declared size is bounded
    (lambda path: _rewrite(path, lambda t: t["prog"].update(size=3 << 30)),
     r"field 'prog.size' is 3221225472 bytes; a program may have at most 67108864"),
])
def test_hostile_manifests_are_refused_before_anything_is_allocated(tmp_path, write, message):
    path = make_tmodel(tmp_path)
    write(path)
    with pytest.raises(TmodelError, match=message):
        load_tmodel(path)
