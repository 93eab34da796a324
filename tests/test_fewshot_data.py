"""Omniglot from its official zip layout: alphabets deduplicated across zips, held-out split."""

import zipfile

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")

from training.fewshot.data import load_omniglot  # noqa: E402


def _zip(path, root, alphabets, value):
    with zipfile.ZipFile(path, "w") as zf:
        for alphabet, chars in alphabets.items():
            for c in range(chars):
                for d in range(2):
                    img = np.full((105, 105), value, np.uint8)
                    img[10 * c: 10 * c + 5, :] = 0
                    ok, buf = cv2.imencode(".png", img)
                    zf.writestr(f"{root}/{alphabet}/character{c + 1:02d}/{d}.png", buf.tobytes())


def test_zips_are_merged_and_duplicates_dropped(tmp_path):
    _zip(tmp_path / "images_background_small1.zip", "images_background_small1",
         {"Greek": 3, "Korean": 2}, 255)
    _zip(tmp_path / "images_background_small2.zip", "images_background_small2",
         {"Greek": 3, "Tagalog": 2}, 200)
    data = load_omniglot(str(tmp_path), size=16, held_out=("Greek",))
    assert data.novel.class_names == [f"Greek/character0{i}" for i in (1, 2, 3)]
    assert data.novel.groups == ["Greek"] * 3
    assert len(data.novel) == 6  # Greek read once, from the first zip
    assert (data.novel.images[:, 15, 15] == 255).all()
    assert data.base.class_names[0] == "Korean/character01" and len(data.base) == 8
    assert data.base.images.shape == (8, 16, 16, 3)
    assert (data.base.images[..., 0] == data.base.images[..., 2]).all()  # grey -> 3 channels
    assert not data.natural
    with pytest.raises(ValueError, match="held-out alphabets not in"):
        load_omniglot(str(tmp_path), size=16, held_out=("Latin",))
