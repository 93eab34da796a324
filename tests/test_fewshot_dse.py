"""The design-space run end to end on a generated class tree, one tiny configuration."""

import json
import os

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from training.fewshot import dse  # noqa: E402


def _tree(root, split, classes, per_class, rng):
    for c in classes:
        folder = os.path.join(root, split, f"class{c}")
        os.makedirs(folder)
        for i in range(per_class):
            img = np.full((32, 32, 3), 40 * c % 256, np.uint8)
            img += rng.integers(0, 30, img.shape, dtype=np.uint8)
            cv2.imwrite(os.path.join(folder, f"{i}.png"), img)


def test_dse_quick_writes_table_and_plot(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    root = str(tmp_path / "data")
    _tree(root, "train", range(3), 8, rng)
    _tree(root, "test", range(3, 8), 16, rng)
    monkeypatch.setattr(dse, "GRID", {"backbone": ["resnet9"], "feature_maps": [4],
                                      "strided": [True], "input_size": [32, 84]})
    out = str(tmp_path / "bench")
    rows = dse.run_dse(root, out, quick=True, epochs=1)
    assert [(r["input_size"], r["accuracy"] is None) for r in rows] == [(32, False), (84, True)]
    assert rows[0]["macs"] < rows[1]["macs"] and rows[0]["parameters"] == rows[1]["parameters"]
    table = json.load(open(os.path.join(out, "dse.json")))
    assert table["setting"]["ways"] == 5 and len(table["rows"]) == 2
    assert os.path.getsize(os.path.join(out, "dse.png")) > 0
    assert open(os.path.join(out, "dse.csv")).readline().startswith("name,feature_maps")
    # every configuration compiled for both Tensil architectures (or the overflow named)
    for row in rows:
        for arch in dse.ARCHS:
            assert row[f"tensil_cycles_{arch}"] is not None or "over" in row[f"tensil_note_{arch}"]
    assert rows[0]["tensil_cycles_12x12"] < rows[1]["tensil_cycles_12x12"]
    assert rows[0]["tensil_ms_125mhz_12x12"] == round(rows[0]["tensil_cycles_12x12"] / 125e3, 3)
