"""Omniglot from its official zip layout: alphabets deduplicated across zips, held-out split."""

import zipfile

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.fewshot.data import load_omniglot, random_affine  # noqa: E402


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


def test_random_affine_keeps_the_background_and_moves_strokes():
    # Prepare: a vertical bar on a constant background
    x = torch.full((8, 1, 32, 32), -1.0)
    x[:, :, 4:28, 15:17] = 2.0
    # Execute
    same = random_affine(x, torch.Generator().manual_seed(0), degrees=0.0, scale=0.0, shear=0.0)
    moved = random_affine(x, torch.Generator().manual_seed(0))
    again = random_affine(x, torch.Generator().manual_seed(0))
    # Assert
    torch.testing.assert_close(same, x)
    assert moved.shape == x.shape and torch.equal(moved, again)
    edges = torch.cat([moved[:, :, 0, :], moved[:, :, -1, :], moved[:, :, :, 0], moved[:, :, :, -1]])
    torch.testing.assert_close(edges, torch.full_like(edges, -1.0))
    per_image = [not torch.allclose(moved[i], x[i]) for i in range(8)]
    assert all(per_image) and not torch.allclose(moved[0], moved[1])
    # Strokes are resampled, not lost: the ink mass stays within the zoom's range.
    ink = (moved + 1.0).sum((1, 2, 3)) / (x + 1.0).sum((1, 2, 3))
    assert torch.all(ink > 0.6) and torch.all(ink < 1.4)
