"""Omniglot from its official zip layout: alphabets deduplicated across zips, held-out split."""

import zipfile

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.fewshot.data import load_fewshot_data, load_omniglot, random_affine  # noqa: E402


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


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((40, 40, 3), value, np.uint8))


def test_miniimagenet_csv_layout_and_its_errors(tmp_path):
    # Prepare: Ravi & Larochelle's layout, two base and two novel classes
    rows = {"train": ["n01", "n01", "n02"], "test": ["n03", "n04", "n04"]}
    for split, labels in rows.items():
        lines = ["filename,label"]
        for k, label in enumerate(labels):
            name = f"{label}{k:08d}.jpg"
            _png(tmp_path / "images" / name, 40 * k + 10)
            lines.append(f"{name},{label}")
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    # Execute
    data = load_fewshot_data(f"miniimagenet:{tmp_path}", size=16)
    # Assert
    assert data.base.class_names == ["n01", "n02"] and list(data.base.labels) == [0, 0, 1]
    assert data.novel.class_names == ["n03", "n04"] and data.novel.images.shape == (3, 16, 16, 3)
    (tmp_path / "test.csv").write_text("filename,label\nmissing.jpg,n03\n")
    with pytest.raises(FileNotFoundError, match=r"test.csv line 2: image .*missing.jpg not found"):
        load_fewshot_data(f"miniimagenet:{tmp_path}", size=16)
    (tmp_path / "test.csv").write_text("filename,label\nn0100000000.jpg,n01\n")
    with pytest.raises(ValueError, match="share classes"):
        load_fewshot_data(f"miniimagenet:{tmp_path}", size=16)
    (tmp_path / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match="Ravi & Larochelle"):
        load_fewshot_data(f"miniimagenet:{tmp_path}", size=16)


def test_cifar_fs_layout_and_its_errors(tmp_path):
    # Prepare: Bertinetto et al.'s layout
    for name, value in (("apple", 10), ("bear", 90), ("camel", 170)):
        for k in range(2):
            _png(tmp_path / "data" / name / f"{name}_{k}.png", value + k)
    splits = tmp_path / "splits" / "bertinetto"
    splits.mkdir(parents=True)
    (splits / "train.txt").write_text("apple\nbear\n")
    (splits / "test.txt").write_text("camel\n")
    # Execute
    data = load_fewshot_data(f"cifar-fs:{tmp_path}", size=32)
    # Assert
    assert data.base.class_names == ["apple", "bear"] and len(data.base) == 4
    assert data.novel.class_names == ["camel"] and data.novel.images.shape == (2, 32, 32, 3)
    assert data.natural
    (splits / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="splits/bertinetto"):
        load_fewshot_data(f"cifar-fs:{tmp_path}")
