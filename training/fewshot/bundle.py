"""Export a trained backbone with its model card, few-shot figures measured on the
shipped ONNX file itself (onnxruntime, the card's preprocessing)."""

import json
import logging
import os
import re
from typing import Dict, List, Optional

import numpy as np

from device.model_card import write_card
from training.fewshot.backbones import create_model
from training.fewshot.data import card_input, channel_stats, load_fewshot_data, preprocess_images
from training.fewshot.episodes import evaluate_episodes, make_episodes
from training.fewshot.export import build_card, check_export, export_onnx, onnx_parity

log = logging.getLogger(__name__)

__all__ = ["onnx_features", "export_bundle"]

_FEWSHOT_SETTINGS = ((5, 1), (5, 5))
_BASE_MEAN_IMAGES = 10000


def onnx_features(path: str, images: np.ndarray, spec: Dict[str, object]) -> np.ndarray:
    """Features of uint8 images through the ONNX file, one image at a time (batch 1)."""
    import torch

    from training.fewshot.easy import OnnxBackbone

    x = torch.from_numpy(preprocess_images(images, spec))
    return OnnxBackbone(path, {"input": spec}).features(x).numpy().astype(np.float32)


def training_seconds(log: str) -> Optional[float]:
    """Wall time of the last finished training in a train_log.jsonl (older logs: the sum of
    its epochs' seconds), or None."""
    if not os.path.isfile(log):
        return None
    with open(log, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    ends = [r["wall_seconds"] for r in rows if r.get("event") == "end"]
    if ends:
        return float(ends[-1])
    starts = [i for i, r in enumerate(rows) if r.get("event") == "start"]
    epochs = [r["seconds"] for r in rows[starts[-1] if starts else 0:] if "epoch" in r]
    return float(sum(epochs)) if epochs else None


def _epochs_done(checkpoint: str, meta: Dict[str, object]) -> int:
    """Epochs behind a checkpoint: its metadata, or for older checkpoints (saved
    before the field existed) the epoch rows of its seed in the training log."""
    if "epochs_done" in meta:
        return int(meta["epochs_done"])
    log = os.path.join(os.path.dirname(checkpoint), "train_log.jsonl")
    with open(log, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    start = max(i for i, r in enumerate(rows) if r.get("event") == "start")
    return sum(1 for r in rows[start:] if r.get("seed") == meta["seed"] and "epoch" in r)


def export_bundle(
    checkpoint: Optional[str],
    data_name: str,
    out: str,
    episodes: int = 1000,
    placeholder: bool = False,
    command: str = "",
) -> Dict[str, object]:
    """Write ``<out>/<stem>.onnx`` and ``<stem>.json``; returns the card."""
    if placeholder == bool(checkpoint):
        raise ValueError("give either a checkpoint or --placeholder, not both or neither")
    if placeholder:
        model = create_model("resnet9", feature_maps=16, strided=True, input_size=32,
                             num_classes=5).eval()  # fmt: skip
        data = load_fewshot_data(data_name, 32)
        spec = card_input(32, *channel_stats(data.base.images))
        training = {"dataset": data.name, "epochs": 0, "seeds": [0], "placeholder": True,
                    "command": "python -m training.fewshot export --placeholder"}  # fmt: skip
    else:
        from training.fewshot.easy import load_backbone

        model, meta = load_backbone(checkpoint)
        data = load_fewshot_data(data_name, model.config.input_size)
        spec = meta["input"]
        done = _epochs_done(checkpoint, meta)
        train_cmd = re.sub(r"--epochs \d+", f"--epochs {done}", meta["train"]["command"])
        export_cmd = (f"python -m training.fewshot export --backbone {checkpoint} "
                      f"--data {data_name} --out {out}")  # fmt: skip
        training = {"dataset": meta["dataset"], "epochs": done, "seeds": [meta["seed"]],
                    "planned_epochs": meta["train"]["epochs"], "placeholder": False,
                    "command": command or f"{train_cmd} && {export_cmd}"}  # fmt: skip
    training.update({"base_classes": list(data.base.class_names),
                     "novel_classes": list(data.novel.class_names)})  # fmt: skip
    if checkpoint:
        wall = training_seconds(os.path.join(os.path.dirname(checkpoint), "train_log.jsonl"))
        if wall is not None:
            training["wall_seconds"] = wall  # the benchmark's training-time figure, kept with the model
    path = export_onnx(model, os.path.join(out, model.config.stem + ".onnx"))
    parity = onnx_parity(model, path)
    log.info("onnxruntime parity: max abs diff %.3g", parity)
    pick = np.linspace(0, len(data.base) - 1, min(_BASE_MEAN_IMAGES, len(data.base))).astype(int)
    base_mean = onnx_features(path, data.base.images[pick], spec).mean(0)
    novel = onnx_features(path, data.novel.images, spec)
    fewshot: List[Dict[str, object]] = []
    for ways, shots in _FEWSHOT_SETTINGS:
        eps = make_episodes(data.novel.labels, ways, shots, 15, episodes, seed=0)
        res = evaluate_episodes(novel, eps, base_mean, "ncm")
        fewshot.append({"data": f"{data.name}-novel", "ways": ways, "shots": shots,
                        "queries": 15, "episodes": episodes, "accuracy": res["accuracy"],
                        "ci95": res["ci95"], "classifier": "ncm"})  # fmt: skip
    card = build_card(model, path, spec, base_mean, training, fewshot, parity)
    card_path = os.path.splitext(path)[0] + ".json"
    write_card(card, card_path)
    check_export(card_path)
    return card
