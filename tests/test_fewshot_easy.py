"""EASY routine end to end on a few dozen images; the restart schedule; checkpoints;
the card's preprocessing; the backbone family's shapes and counts."""

import json
import os

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.fewshot import easy  # noqa: E402
from training.fewshot.backbones import count_params_macs, create_model, list_models  # noqa: E402
from training.fewshot.data import FewShotData, card_input, preprocess_images  # noqa: E402
from training.fewshot.easy import TrainConfig, evaluate_backbones, load_backbone, lr_at  # noqa: E402
from training.images import ImageSet  # noqa: E402


def _tiny_data(size=16, per_class=6):
    """4 base + 3 novel classes of noisy stripes at class-specific angles."""
    rng = np.random.default_rng(0)

    def make(n_classes, offset):
        imgs, labels = [], []
        for c in range(n_classes):
            for _ in range(per_class):
                yy, xx = np.mgrid[:size, :size]
                ang = (c + offset) * np.pi / 7
                wave = np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 1.3)
                img = 127 + 100 * wave[..., None] + rng.normal(0, 20, (size, size, 3))
                imgs.append(np.clip(img, 0, 255).astype(np.uint8))
                labels.append(c)
        return ImageSet(np.stack(imgs), np.asarray(labels, np.int64),
                        [f"c{c + offset}" for c in range(n_classes)])

    return FewShotData("tiny", make(4, 0), make(3, 4), natural=True)


def test_one_epoch_through_the_whole_routine(tmp_path, monkeypatch):
    data = _tiny_data()
    cfg = TrainConfig(feature_maps=4, input_size=16, epochs=1, batch_size=8, lr=0.05,
                      cycle_epochs=0.5, peak_decay=0.5, seeds=[0, 1], out=str(tmp_path), threads=1)
    seen = {"rot": 0, "mixup": 0}
    real_rotate = easy._rotate_quarters

    def spy_rotate(x):
        seen["rot"] += 1
        out, rot = real_rotate(x)
        assert sorted(set(rot.tolist())) == [0, 1, 2, 3]
        return out, rot

    monkeypatch.setattr(easy, "_rotate_quarters", spy_rotate)
    real_features = easy.FewShotResNet.features

    def spy_features(self, x, mixup=None):
        if mixup is not None:
            seen["mixup"] += 1
            assert 0.0 <= mixup[1] <= 1.0 and 0 <= mixup[2] < len(self.blocks)
        return real_features(self, x, mixup)

    monkeypatch.setattr(easy.FewShotResNet, "features", spy_features)
    paths = easy.train_easy(cfg, data)
    assert seen == {"rot": 6, "mixup": 6}  # 24 images / batch 8 = 3 steps, 2 seeds
    assert len(paths) == 2
    model, meta = load_backbone(paths[0])  # weights_only=True load
    torch.manual_seed(0)
    init = create_model("resnet9", feature_maps=4, input_size=16, num_classes=4)
    assert not torch.equal(model.rotation_head.weight, init.rotation_head.weight)
    assert meta["input"]["shape"] == [1, 3, 16, 16] and len(meta["input"]["mean"]) == 3
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, "train_log.jsonl"))]
    assert rows[0]["event"] == "start"
    assert [(r.get("event", "epoch"), r["seed"]) for r in rows[1:]] == [
        ("epoch", 0), ("end", 0), ("epoch", 1), ("end", 1)]
    res = evaluate_backbones(paths, data, ways=3, shots=1, queries=2, episodes=20)
    assert res["ensemble"] == 2 and 0.0 <= res["accuracy"] <= 1.0 and res["episodes"] == 20
    plain = easy.extract_features(model, data.novel.images, meta["input"])
    views = easy.extract_features(model, data.novel.images, meta["input"], views=3)
    assert plain.shape == views.shape == (18, 20) and not np.allclose(plain, views)
    solo = evaluate_backbones(paths[:1], data, 3, 1, 2, 20, views=3)
    assert solo["views"] == 3 and solo["ensemble"] == 1
    data.novel.groups = ["a", "a", "b"]
    within = evaluate_backbones(paths[:1], data, 1, 1, 2, 20, within_groups=True)
    assert sorted(within["per_group"]) == ["a", "b"]
    assert sum(p["episodes"] for p in within["per_group"].values()) == 20


def test_cosine_warm_restarts_with_decaying_peak():
    cfg = TrainConfig(lr=0.1, cycle_epochs=2, peak_decay=0.5)
    lrs = [lr_at(s, 10, cfg) for s in range(60)]
    assert lrs[0] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.05)
    assert lrs[40] == pytest.approx(0.025)
    assert all(a > b for a, b in zip(lrs[:19], lrs[1:20]))  # annealing inside a cycle
    assert lrs[19] < 0.01 < lrs[20]  # the warm restart


def test_preprocessing_follows_the_card():
    spec = card_input(4, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 10, 3), dtype=np.uint8)
    top, left = 0, 1  # (7-7)//2, (10-7)//2: the extra column goes to the right
    ref = cv2.resize(img[top:top + 7, left:left + 7], (4, 4), interpolation=cv2.INTER_AREA)
    ref = (ref.astype(np.float32) * np.float32(1 / 255) - np.float32([0.5, 0.4, 0.3])) / np.float32(
        [0.2, 0.25, 0.3])
    out = preprocess_images([img], spec)
    assert out.shape == (1, 3, 4, 4) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out[0], ref.transpose(2, 0, 1), atol=1e-6)
    grey = preprocess_images(img[:, :, 0], spec)  # one greyscale image, repeated to 3 channels
    assert grey.shape == (1, 3, 4, 4)


def test_backbone_family_shapes_and_counts():
    assert list_models("resnet*") == ["resnet12", "resnet9"]
    with pytest.raises(ValueError, match="unknown backbone .vgg.; known backbones: resnet12, resnet9"):
        create_model("vgg")
    m = create_model("resnet9", feature_maps=16, strided=True, input_size=32, num_classes=5)
    assert m.config.widths == [16, 40, 80]
    logits, feats = m(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 5) and feats.shape == (2, 80)
    params, macs = count_params_macs(m)
    # three 3x3 convs + a 1x1 shortcut per block; BN has 2 params a channel
    expect = sum(9 * ci * co + 9 * co * co * 2 + ci * co + 8 * co
                 for ci, co in [(3, 16), (16, 40), (40, 80)])
    assert params == expect
    # strided: block outputs 16, 8, 4; the first two convs run at the block's input size
    conv = lambda ci, co, k, hw: ci * co * k * k * hw * hw  # noqa: E731
    expect_macs = sum(conv(ci, co, 3, s) + conv(co, co, 3, s) + conv(co, co, 3, s // 2)
                      + conv(ci, co, 1, s // 2) for ci, co, s in [(3, 16, 32), (16, 40, 16),
                                                                   (40, 80, 8)])
    assert macs == expect_macs
    pooled = create_model("resnet12", feature_maps=8, strided=False, input_size=32)
    assert pooled.config.widths == [8, 20, 40, 80]
    assert pooled(torch.zeros(1, 3, 32, 32))[1].shape == (1, 80)
    assert count_params_macs(pooled)[1] > count_params_macs(
        create_model("resnet12", feature_maps=8, strided=True))[1]


def test_rotate_classes_makes_four_classes_per_character():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = torch.tensor([0, 1])
    xr, yr = easy.rotate_classes(x, y, n_classes=2)
    assert xr.shape == (8, 3, 4, 4) and yr.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    for k in range(4):
        assert torch.equal(xr[2 * k : 2 * k + 2], torch.rot90(x, k, (2, 3)))


def test_class_rotations_train_a_four_times_wider_head(tmp_path):
    data = _tiny_data()
    cfg = TrainConfig(feature_maps=4, input_size=16, epochs=1, batch_size=16, lr=0.05,
                      rotations=False, mixup=False, class_rotations=True, seeds=[0],
                      out=str(tmp_path), threads=1)  # fmt: skip
    model, meta = load_backbone(easy.train_easy(cfg, data)[0])
    assert model.classifier.out_features == 4 * len(data.base.class_names)
    assert meta["train"]["class_rotations"] is True
    with pytest.raises(ValueError, match="class_rotations"):
        easy.train_easy(TrainConfig(class_rotations=True, rotations=True), data)
    with pytest.raises(ValueError, match="class_flips extends class_rotations"):
        easy.train_easy(TrainConfig(class_flips=True, rotations=False), data)


def test_class_flips_add_the_mirror_images_as_classes():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = torch.tensor([0, 2])
    xs, ys = easy.rotate_classes(x, y, 3, flips=True)
    assert xs.shape == (16, 3, 4, 4) and ys.tolist() == [c + 3 * k for k in range(8) for c in (0, 2)]
    assert torch.equal(xs[8:10], x.flip(3)) and torch.equal(xs[10:12], torch.rot90(x, 1, (2, 3)).flip(3))


def test_within_group_evaluation_reports_each_group():
    """Per-alphabet accuracy: the within-group episodes split by the group they were drawn from."""
    from training.fewshot.episodes import make_episodes

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 5)
    groups = ["easy", "easy", "hard", "hard"]
    # Group "easy": two well separated classes; group "hard": identical noise.
    centres = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    features = centres[labels] + rng.normal(0, 0.1, (20, 3))
    eps = make_episodes(labels, 2, 1, 2, 60, seed=1, groups=groups)

    parts = easy.per_group_accuracy(features, eps, groups, None)

    assert sorted(parts) == ["easy", "hard"]
    assert parts["easy"]["accuracy"] == 1.0 and parts["hard"]["accuracy"] < 0.8
    assert parts["easy"]["episodes"] + parts["hard"]["episodes"] == 60
    overall = easy.evaluate_episodes(features, eps, None)["accuracy"]
    weighted = sum(p["accuracy"] * p["episodes"] for p in parts.values()) / 60
    assert abs(overall - weighted) < 1e-12
