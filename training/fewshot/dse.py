"""Design-space exploration: depth × f × strided × resolution -> accuracy, parameters, MACs.

Each configuration is trained with the EASY routine on the base classes and
evaluated with NCM on 1000 episodes of the novel classes (Omniglot: 20-way
1-shot within-alphabet; otherwise 5-way 1-shot). ``quick`` trains a few epochs
at 32×32 only; 84×84 rows then list parameters and MACs with no accuracy.

Every configuration is also exported to ONNX and compiled with ``tensil_tools.compiler`` for
both architectures (12×12 ``pynqz1_perf`` and 8×8 ``pynqz1``): the table gains the
compiled program's cycle count (the RTL-calibrated model, ``tensil.estimate.MemoryAwareModel``,
within 0.1 % of the co-simulated RTL on the bundled backbone) and its latency at 125 MHz,
which activations had to go to DRAM0, or the memory a layer overflows. The plot shows
accuracy against the 12×12 latency.
"""

import csv
import itertools
import json
import logging
import os
import time
from typing import Dict, List

from fedcore.atomic import atomic_open, atomic_write
from training.fewshot.backbones import FewShotResNet, create_model, describe
from training.fewshot.data import load_fewshot_data
from training.fewshot.easy import TrainConfig, evaluate_backbones, load_backbone, train_easy

log = logging.getLogger(__name__)

__all__ = ["ARCHS", "GRID", "run_dse", "plot_dse", "tensil_columns"]

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCHS = {"12x12": os.path.join(_ROOT, "tensil_arch", "pynqz1_perf.tarch"),
         "8x8": os.path.join(_ROOT, "tensil_arch", "pynqz1.tarch")}

GRID = {"backbone": ["resnet9", "resnet12"], "feature_maps": [16, 32],
        "strided": [True, False], "input_size": [32, 84]}  # fmt: skip


def _recipe(natural: bool) -> Dict:
    """The benchmark's recipes (benchmarks/fewshot.py): for characters, rotated characters
    as classes without the rotation head or mixup; for natural images, EASY's Y-shape + mixup."""
    if natural:
        return {"lr": 0.1, "peak_decay": 0.8}
    return {"lr": 0.1, "peak_decay": 0.8, "class_rotations": True, "rotations": False, "mixup": False}


def _eval_setting(data_name: str):
    if data_name.startswith("omniglot"):
        return {"ways": 20, "shots": 1, "within_groups": True}
    return {"ways": 5, "shots": 1, "within_groups": False}


def tensil_columns(model: FewShotResNet, folder: str) -> Dict:
    """Export ``model`` and compile it for every architecture: cycles, ms at 125 MHz, the
    activations that left the chip, or why it does not fit."""
    from tensil_tools.compiler import CompileError, compile_model
    from training.fewshot.export import export_onnx

    os.makedirs(folder, exist_ok=True)
    path = export_onnx(model, os.path.join(folder, model.config.stem + ".onnx"))
    out: Dict = {}
    for label, arch in ARCHS.items():
        try:
            result = compile_model(path, arch)
        except CompileError as exc:
            out.update({f"tensil_cycles_{label}": None, f"tensil_ms_125mhz_{label}": None,
                        f"tensil_note_{label}": str(exc)})
            continue
        cycles = result.rtl_estimate.cycles
        spilled = result.program.spilled
        out.update({f"tensil_cycles_{label}": cycles,
                    f"tensil_ms_125mhz_{label}": round(cycles / 125e3, 3),
                    f"tensil_note_{label}": ("activations in DRAM0: " + ", ".join(spilled))
                    if spilled else "all activations on chip"})
    return out


def run_dse(data_name: str, out: str, quick: bool = False, epochs: int = 0) -> List[Dict]:
    """Train and evaluate every affordable configuration; writes dse.json/csv/png to ``out``."""
    epochs = epochs or (3 if quick else 30)
    sizes = [32] if quick else GRID["input_size"]
    setting = _eval_setting(data_name)
    datasets = {}
    rows: List[Dict] = []
    combos = itertools.product(GRID["backbone"], GRID["feature_maps"], GRID["strided"],
                               GRID["input_size"])  # fmt: skip
    for name, f, strided, size in combos:
        row: Dict = describe(name, f, strided, size)
        row.update({"data": data_name, "epochs": None, "accuracy": None, "ci95": None,
                    "train_seconds": None})  # fmt: skip
        model = None
        if size in sizes:
            if size not in datasets:
                datasets[size] = load_fewshot_data(data_name, size)
            cfg = TrainConfig(
                backbone=name, feature_maps=f, strided=strided, input_size=size, epochs=epochs,
                batch_size=64, cycle_epochs=max(1.0, epochs / 3), out=os.path.join(out, "dse_runs"),
                **_recipe(datasets[size].natural),
            )  # fmt: skip
            t0 = time.time()
            ckpt = train_easy(cfg, datasets[size])[0]
            res = evaluate_backbones([ckpt], datasets[size], setting["ways"], setting["shots"],
                                     within_groups=setting["within_groups"])  # fmt: skip
            row.update({"epochs": epochs, "accuracy": res["accuracy"], "ci95": res["ci95"],
                        "train_seconds": round(time.time() - t0, 1)})  # fmt: skip
            model = load_backbone(ckpt)[0]
        if model is None:   # not trained here: the latency does not depend on the weights
            model = create_model(name, feature_maps=f, strided=strided, input_size=size,
                                 num_classes=1)
        row.update(tensil_columns(model, os.path.join(out, "dse_onnx")))
        rows.append(row)
        acc = "   n/a" if row["accuracy"] is None else f"{100 * row['accuracy']:6.2f}"
        lat = "  ".join(f"{k} " + ("overflow" if row[f"tensil_ms_125mhz_{k}"] is None
                                   else f"{row[f'tensil_ms_125mhz_{k}']:7.2f} ms") for k in ARCHS)
        log.info(f"{name:8} f={f:<2} {'strided' if strided else 'pool':7} {size:3}px  "
                 f"params {row['parameters']:>9,}  MACs {row['macs']:>12,}  acc {acc}  {lat}")  # fmt: skip
    _write(rows, out, setting)
    return rows


def _write(rows: List[Dict], out: str, setting: Dict) -> None:
    os.makedirs(out, exist_ok=True)
    atomic_write(os.path.join(out, "dse.json"), json.dumps({"setting": setting, "rows": rows}, indent=2))
    keys = ["name", "feature_maps", "strided", "input_size", "parameters", "macs", "epochs",
            "accuracy", "ci95", "train_seconds"] + [
        f"tensil_{k}_{a}" for a in ARCHS for k in ("cycles", "ms_125mhz", "note")]  # fmt: skip
    with atomic_open(os.path.join(out, "dse.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot_dse(rows, os.path.join(out, "dse.png"), setting)


def plot_dse(rows: List[Dict], path: str, setting: Dict) -> None:
    """Accuracy against the compiled latency at 125 MHz on the 12x12 architecture (log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "tensil_ms_125mhz_12x12"
    done = [r for r in rows if r["accuracy"] is not None and r.get(key) is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in done:
        marker = "o" if r["name"] == "resnet9" else "s"
        color = "tab:blue" if r["strided"] else "tab:orange"
        ax.errorbar(r[key], 100 * r["accuracy"], yerr=100 * r["ci95"], fmt=marker, color=color)
        ax.annotate(f"{r['name'][6:]}/f{r['feature_maps']}/{r['input_size']}",
                    (r[key], 100 * r["accuracy"]), fontsize=7)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("latency on the 12x12 Tensil array at 125 MHz, ms (blue: strided, orange: "
                  "max-pool)", fontsize=8)
    within = " within-alphabet" if setting["within_groups"] else ""
    ax.set_ylabel(f"{setting['ways']}-way {setting['shots']}-shot{within} accuracy (%)")
    epochs = "/".join(str(e) for e in sorted({r["epochs"] for r in done}))
    ax.set_title(f"ResNet-9 (o) / ResNet-12 (s) on {rows[0]['data']}, {epochs} epochs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
