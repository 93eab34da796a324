"""EASY training (Bendou et al. 2022) and feature extraction / evaluation.

Each step makes two passes over the batch, as EASY does:
1. Y-shaped pass: a quarter of the batch each rotated by 0/90/180/270 degrees;
   loss = 0.5 · CE(class head) + 0.5 · CE(4-way rotation head);
2. manifold mixup pass: hidden states mixed before a random block (0 = the
   input) with a random partner, lam ~ U(0, 1); loss = lam · CE(y) + (1-lam) · CE(y').
The learning rate follows cosine annealing with warm restarts whose peak decays
by ``peak_decay`` at each restart. An ensemble is several seeds trained
independently; their features are concatenated at evaluation.

Checkpoints are plain ``torch.save(state_dict)`` files (loaded back with
``weights_only=True``) with a JSON of metadata beside them; the JSONL log has
one line per epoch.
"""

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fedcore.atomic import atomic_open, atomic_write
from training.fewshot.backbones import FewShotResNet, create_model
from training.fewshot.data import (
    FewShotData,
    augment_batch,
    card_input,
    channel_stats,
    preprocess_images,
    to_tensor,
)
from training.fewshot.episodes import Episodes, evaluate_episodes, make_episodes

__all__ = [
    "TrainConfig",
    "lr_at",
    "train_easy",
    "rotate_classes",
    "load_backbone",
    "extract_features",
    "base_mean_features",
    "evaluate_backbones",
]


@dataclass
class TrainConfig:
    """One EASY training; ``cycle_epochs`` is the length of the first cosine
    cycle (a float, so tests can restart within one epoch)."""

    backbone: str = "resnet9"
    feature_maps: int = 16
    strided: bool = True
    input_size: int = 32
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    cycle_epochs: float = 10.0
    peak_decay: float = 0.7
    rotations: bool = True
    mixup: bool = True
    class_rotations: bool = False  # each base class x {0, 90, 180, 270} degrees = 4 classes
    class_flips: bool = False  # and mirrored: x 2 more (the 8 symmetries of the square)
    affine: bool = False  # small random rotations, scalings and shears (handwriting's variations)
    seeds: List[int] = field(default_factory=lambda: [0])
    out: str = "runs/fewshot"
    threads: int = 2
    command: str = ""


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Cosine annealing with warm restarts; the peak decays at each restart."""
    cycle_steps = max(1, int(round(cfg.cycle_epochs * steps_per_epoch)))
    cycle, t = divmod(step, cycle_steps)
    peak = cfg.lr * cfg.peak_decay**cycle
    return 0.5 * peak * (1.0 + math.cos(math.pi * t / cycle_steps))


def _rotate_quarters(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotate the k-th quarter of the batch by k·90 degrees; the rotation labels."""
    n = x.shape[0]
    rot = (torch.arange(n) * 4) // max(n, 1)
    out = x.clone()
    for k in range(1, 4):
        sel = rot == k
        if sel.any():
            out[sel] = torch.rot90(x[sel], k, (2, 3))
    return out, rot


def rotate_classes(x: torch.Tensor, y: torch.Tensor, n_classes: int, flips: bool = False):
    """Rotated characters as extra classes (Santoro et al. 2016, Vinyals et al.
    2016): image rotated by k·90 degrees gets label y + k·n_classes; with
    ``flips``, the mirror images of those too (labels from 4·n_classes on), as
    a mirrored character is another character."""
    xs = [torch.rot90(x, k, (2, 3)) if k else x for k in range(4)]
    if flips:
        xs += [v.flip(3) for v in xs]
    ys = [y + k * n_classes for k in range(len(xs))]
    return torch.cat(xs).contiguous(), torch.cat(ys)


def _step_loss(
    model: FewShotResNet, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, gen: torch.Generator
) -> Tuple[torch.Tensor, torch.Tensor]:
    """EASY's loss for one batch; returns (loss, class logits of the plain pass)."""
    if cfg.rotations:
        xr, rot = _rotate_quarters(x)
        logits, feats = model(xr)
        loss = 0.5 * F.cross_entropy(logits, y) + 0.5 * F.cross_entropy(
            model.rotation_head(feats), rot
        )
    else:
        logits, _ = model(x)
        loss = F.cross_entropy(logits, y)
    if cfg.mixup:
        perm = torch.randperm(x.shape[0], generator=gen)
        lam = float(torch.rand(1, generator=gen))
        layer = int(torch.randint(0, len(model.blocks), (1,), generator=gen))
        mixed, _ = model(x, mixup=(perm, lam, layer))
        loss = loss + lam * F.cross_entropy(mixed, y) + (1 - lam) * F.cross_entropy(mixed, y[perm])
    return loss, logits


def _train_one(cfg: TrainConfig, data: FewShotData, seed: int, mean, std, log) -> str:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_classes = len(data.base.class_names)
    x_all = to_tensor(data.base.images, mean, std)
    y_all = torch.from_numpy(data.base.labels)
    if cfg.class_rotations:
        x_all, y_all = rotate_classes(x_all, y_all, n_classes, cfg.class_flips)
        n_classes *= 8 if cfg.class_flips else 4
    model = create_model(
        cfg.backbone, feature_maps=cfg.feature_maps, strided=cfg.strided,
        input_size=cfg.input_size, num_classes=n_classes, rotation_head=cfg.rotations,
    )  # fmt: skip
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
    )
    n = len(y_all)
    bs = min(cfg.batch_size, n)
    steps = n // bs
    step, path = 0, ""
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        t0, total, correct, seen = time.time(), 0.0, 0, 0
        bar = tqdm(range(steps), desc=f"seed {seed} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for i in bar:
            idx = order[i * bs : (i + 1) * bs]
            x = augment_batch(x_all[idx], data.natural, gen, affine=cfg.affine)
            lr = lr_at(step, steps, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            loss, logits = _step_loss(model, x, y_all[idx], cfg, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += loss.item() * len(idx)
            seen += len(idx)
            correct += int((logits.argmax(1) == y_all[idx]).sum())
            bar.set_postfix(loss=f"{total / seen:.3f}", lr=f"{lr:.4f}")
        log({"seed": seed, "epoch": epoch + 1, "loss": total / max(seen, 1),
             "train_acc_rotated": correct / max(seen, 1), "lr_end": lr,
             "seconds": round(time.time() - t0, 2)})  # fmt: skip
        path = _save(model, cfg, data, seed, mean, std, epoch + 1)  # a stop loses little
    return path


def _save(
    model: FewShotResNet, cfg: TrainConfig, data: FewShotData, seed, mean, std, epochs_done: int
) -> str:
    os.makedirs(cfg.out, exist_ok=True)
    stem = os.path.join(cfg.out, f"{model.config.stem}_{data.name}_s{seed}")
    with atomic_open(stem + ".pt") as f:  # a stop mid-save keeps the previous epoch's file
        torch.save(model.state_dict(), f)
    meta = {
        "config": asdict(model.config),
        "train": asdict(cfg),
        "seed": seed,
        "epochs_done": epochs_done,
        "dataset": data.name,
        "base_classes": list(data.base.class_names),
        "novel_classes": list(data.novel.class_names),
        "input": card_input(cfg.input_size, mean, std),
    }
    atomic_write(stem + ".json", json.dumps(meta, indent=2, sort_keys=True))
    return stem + ".pt"


def train_easy(cfg: TrainConfig, data: FewShotData) -> List[str]:
    """Train one backbone per seed on ``data.base``; returns the checkpoint paths.
    The input normalisation (mean/std) is measured on the base images."""
    torch.set_num_threads(max(1, cfg.threads))
    if cfg.class_flips and not cfg.class_rotations:
        raise ValueError("class_flips extends class_rotations: set both (--class-rotations --class-flips)")
    if cfg.class_rotations and cfg.rotations:
        # a rotation head would have to predict what the class label already says
        raise ValueError("class_rotations needs rotations=False (--no-rotations)")
    mean, std = channel_stats(data.base.images)
    os.makedirs(cfg.out, exist_ok=True)
    log_path = os.path.join(cfg.out, "train_log.jsonl")

    def log(row: Dict[str, object]) -> None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    log({"event": "start", "config": asdict(cfg), "dataset": data.name,
         "base_images": len(data.base), "base_classes": len(data.base.class_names)})  # fmt: skip
    paths = []
    for seed in cfg.seeds:
        t0 = time.time()
        paths.append(_train_one(cfg, data, seed, mean, std, log))
        log({"event": "end", "seed": seed, "wall_seconds": round(time.time() - t0, 1)})
    return paths


class OnnxBackbone:
    """A shipped backbone (an ONNX file and its model card) used as a checkpoint is: the features
    of preprocessed images, run by onnxruntime an image at a time (the export's batch is 1)."""

    def __init__(self, path: str, card: Dict[str, object]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.config = SimpleNamespace(input_size=int(card["input"]["shape"][-1]))  # type: ignore[index]

    def eval(self) -> "OnnxBackbone":
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        images = x.detach().cpu().numpy().astype(np.float32)
        rows = [self.session.run(None, {self.input_name: images[i:i + 1]})[0] for i in range(len(images))]
        return torch.from_numpy(np.concatenate(rows).reshape(len(images), -1))


def load_backbone(path: str) -> Tuple[FewShotResNet, Dict[str, object]]:
    """A checkpoint written by ``train_easy`` (state_dict + JSON metadata), or a shipped ONNX
    backbone with its model card beside it (`models/`: evaluation needs no training then)."""
    if path.endswith(".onnx"):
        from device.model_card import (
            load_card,  # the card's reader: every field and the model's sha256
        )

        card = load_card(path).raw
        return OnnxBackbone(path, card), {"input": card["input"], "card": card}  # type: ignore[return-value]
    meta_path = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(path) or not os.path.isfile(meta_path):
        raise FileNotFoundError(f"checkpoint {path} or its metadata {meta_path} not found")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    cfg = dict(meta["config"])
    name = cfg.pop("name")
    model = create_model(name, **cfg)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval(), meta


@torch.no_grad()
def extract_features(
    model: FewShotResNet,
    images: np.ndarray,
    spec: Dict[str, object],
    batch: int = 500,
    views: int = 1,
    natural: bool = True,
) -> np.ndarray:
    """Features of uint8 RGB images through the card's preprocessing. With
    ``views`` > 1, EASY's augmented samples: the mean feature of the image and
    ``views`` - 1 training-style augmentations of it (seeded)."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(preprocess_images(images[start : start + batch], spec))
        feats = model.features(x)
        for _ in range(views - 1):
            feats = feats + model.features(augment_batch(x, natural, gen))
        out.append((feats / views).numpy())
    return np.concatenate(out).astype(np.float32)


def base_mean_features(
    models: Sequence[Tuple[FewShotResNet, Dict]], images: np.ndarray, limit: int = 10000
) -> np.ndarray:
    """The mean (concatenated) feature of up to ``limit`` base images (evenly spaced)."""
    pick = np.linspace(0, len(images) - 1, min(limit, len(images))).astype(int)
    feats = [extract_features(m, images[pick], meta["input"]) for m, meta in models]
    return np.concatenate(feats, axis=1).mean(0)


def evaluate_backbones(
    checkpoints: Sequence[str],
    data: FewShotData,
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 1000,
    seed: int = 0,
    within_groups: bool = False,
    classifier: str = "ncm",
    k: int = 1,
    views: int = 1,
) -> Dict[str, object]:
    """Few-shot accuracy ± 95% CI of one backbone or an ensemble (features
    concatenated); ``views`` > 1 averages augmented views (EASY's AS)."""
    models = [load_backbone(p) for p in checkpoints]
    base_mean = base_mean_features(models, data.base.images)
    feats = np.concatenate(
        [extract_features(m, data.novel.images, meta["input"], views=views, natural=data.natural)
         for m, meta in models], axis=1,
    )  # fmt: skip
    groups = data.novel.groups if within_groups else None
    eps = make_episodes(data.novel.labels, ways, shots, queries, episodes, seed, groups)
    result = evaluate_episodes(feats, eps, base_mean, classifier, k)
    result.update({"ways": ways, "shots": shots, "queries": queries, "seed": seed,
                   "within_groups": within_groups, "classifier": classifier,
                   "data": data.name + "-novel", "ensemble": len(models),
                   "views": views})  # fmt: skip
    if groups is not None:
        result["per_group"] = per_group_accuracy(feats, eps, groups, base_mean, classifier, k)
    return result


def per_group_accuracy(
    features: np.ndarray,
    episodes: Episodes,
    groups: Sequence[str],
    base_mean: np.ndarray,
    classifier: str = "ncm",
    k: int = 1,
) -> Dict[str, Dict[str, float]]:
    """The same within-group episodes split by their group (e.g. the Omniglot
    alphabet they were drawn from): accuracy ± 95% CI and episode count of each.
    The overall accuracy is the episode-weighted mean of these."""
    episode_group = np.asarray([groups[c] for c in episodes.classes[:, 0]])
    out: Dict[str, Dict[str, float]] = {}
    for name in sorted(set(episode_group.tolist())):
        pick = episode_group == name
        subset = Episodes(episodes.classes[pick], episodes.support[pick], episodes.query[pick])
        out[name] = evaluate_episodes(features, subset, base_mean, classifier, k)
    return out
