"""training.images: folder and archive trees, decoding, sizes, clear errors."""

import io
import os
import tarfile
import zipfile

import cv2
import numpy as np
import pytest

from training.images import ImageSet, load_image_tree


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def _tree(size=(8, 6)):
    """{relative path: (bytes, RGB image)} for split/class/file; each image is distinct."""
    files = {}
    for s, split in enumerate(["train", "test"]):
        for c, cls in enumerate(["cat", "ant"]):
            for i in range(3):
                rgb = np.zeros((size[1], size[0], 3), np.uint8)
                rgb[..., 0] = 10 * i + 1
                rgb[..., 1] = 50 * c
                rgb[..., 2] = 100 * s
                files[f"{split}/{cls}/{i:02d}.png"] = (_png(rgb[..., ::-1]), rgb)
    return files


def _write_folder(root, files):
    for rel, (data, _) in files.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return str(root)


def _write_tar(path, files, prefix="root/"):
    with tarfile.open(path, "w:gz") as tar:
        for rel, (data, _) in files.items():
            info = tarfile.TarInfo(prefix + rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def _write_zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for rel, (data, _) in files.items():
            zf.writestr(rel, data)
        zf.writestr("train/cat/README.txt", "not an image")
    return str(path)


@pytest.mark.parametrize("kind", ["folder", "tar", "zip"])
def test_every_source_gives_the_same_set(tmp_path, kind):
    files = _tree()
    src = {
        "folder": lambda: _write_folder(tmp_path / "tree", files),
        "tar": lambda: _write_tar(tmp_path / "t.tar.gz", files),
        "zip": lambda: _write_zip(tmp_path / "t.zip", files),
    }[kind]()
    s = load_image_tree(src, split="train")
    assert isinstance(s, ImageSet)
    assert s.class_names == ["ant", "cat"]
    assert s.images.shape == (6, 6, 8, 3) and s.images.dtype == np.uint8
    assert s.labels.dtype == np.int64 and s.labels.tolist() == [0, 0, 0, 1, 1, 1]
    # RGB order, the train split only, files in name order
    np.testing.assert_array_equal(s.images[3], files["train/cat/00.png"][1])
    np.testing.assert_array_equal(s.images[1], files["train/ant/01.png"][1])


def test_split_none_merges_and_filters(tmp_path):
    src = _write_folder(tmp_path / "tree", _tree())
    s = load_image_tree(src, classes=["cat"], limit_per_class=4)
    assert s.class_names == ["cat"] and len(s) == 4
    g = load_image_tree(src, split="test", grey=True)
    assert g.images.shape == (6, 6, 8)


def test_size_resizes_and_mismatch_is_an_error(tmp_path):
    files = _tree()
    other = np.full((5, 7, 3), 200, np.uint8)
    files["train/cat/99.png"] = (_png(other), other)
    src = _write_folder(tmp_path / "tree", files)
    with pytest.raises(ValueError, match=r"99\.png.*size="):
        load_image_tree(src, split="train")
    s = load_image_tree(src, split="train", size=(4, 4))
    assert s.images.shape == (7, 4, 4, 3)


def test_undecodable_file_is_named(tmp_path):
    files = _tree()
    files["train/ant/bad.jpg"] = (b"not a jpeg", None)
    src = _write_zip(tmp_path / "t.zip", files)
    with pytest.raises(ValueError, match=r"train/ant/bad\.jpg: cannot decode"):
        load_image_tree(src, split="train")


def test_missing_path_and_empty_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="looked for .*nowhere.*download"):
        load_image_tree(str(tmp_path / "nowhere"))
    src = _write_folder(tmp_path / "tree", _tree())
    with pytest.raises(ValueError, match="no PNG/JPEG images in split 'val'"):
        load_image_tree(src, split="val")
    with pytest.raises(ValueError, match="classes not found.*dog"):
        load_image_tree(src, classes=["cat", "dog"])
