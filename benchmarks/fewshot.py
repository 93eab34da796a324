"""Few-shot benchmark: the issue's targets, each figure printed next to its target.

Evaluates trained checkpoints (train them first with the commands below, or
pass ``--train`` to run those trainings here) on 1000 seeded episodes each:
  - Omniglot, held-out alphabets (Balinese, Early Aramaic, Greek), ResNet-9
    f=16 strided 32x32: 20-way 1-shot within-alphabet (target >= 90%), 5-way
    1-shot and 5-shot;
  - CIFAR-10 novel classes (dog, frog, horse, ship, truck), 5-way 1- and 5-shot;
  - the wall time of each full training, from its JSONL log (target <= 30 min
    on this machine's 2 CPU cores).
Within-alphabet settings also report each held-out alphabet's accuracy: the
same episodes split by the alphabet they were drawn from. (These are not Lake
et al.'s 20 official runs over the 20 evaluation alphabets.)

What it needs: the data (../shared/data/omniglot/images_background_small{1,2}.zip
and ../shared/data/cifar10/cifar10-jpg.tar.gz, or the official downloads, see
training.fewshot) and the trained backbones: runs/fewshot/omni/ and runs/fewshot/cifar/
when there (made by --train: about 11 + 12 min on 2 cores), else the ones shipped in
models/ (ONNX + model card; their cards keep the training's wall time when it was
logged), so that a fresh clone measures in minutes. A setting whose backbone or data
is missing is reported NOT RUN with the command that makes it. Results go to runs/bench/fewshot.json and fewshot.png. Exit status:
0 every target met, 1 a target missed, 2 nothing missed but a setting could
not run (the last line says which).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

from benchmarks.verdict import Verdict  # noqa: E402

OUT = os.path.join("runs", "bench")
STEM = "resnet9_f16_strided_32"
# The recipes of the reported figures (cycles end at a low learning rate every
# --cycle-epochs, so a run stopped at a cycle's end is a valid shorter recipe).
RECIPES = {
    # rotated characters as classes (172 x 4 = 688), no rotation head, no mixup
    "omniglot": ["--data", "omniglot", "--epochs", "60", "--cycle-epochs", "20",
                 "--peak-decay", "0.8", "--batch-size", "64", "--lr", "0.1",
                 "--class-rotations", "--no-mixup", "--threads", "2"],
    "cifar10": ["--data", "cifar10", "--epochs", "10", "--cycle-epochs", "2",
                "--peak-decay", "0.8"],
}  # fmt: skip
# (data, ways, shots, within alphabet, target accuracy or None)
SETTINGS = [
    ("omniglot", 20, 1, True, 0.90),
    ("omniglot", 5, 1, True, None),
    ("omniglot", 5, 5, True, None),
    ("omniglot", 20, 1, False, None),
    ("cifar10", 5, 1, False, None),
    ("cifar10", 5, 5, False, None),
]
WALL_TARGET_S = 1800.0
# The backbones shipped with the repository (ONNX + model card), measured when no checkpoint of
# runs/fewshot/ is there: the benchmark runs on a fresh clone in minutes.
SHIPPED = {"cifar10": os.path.join("models", f"{STEM}.onnx"),
           "omniglot": os.path.join("models", "omniglot", f"{STEM}.onnx")}


def _train(name: str, out: str) -> None:
    cmd = [sys.executable, "-m", "training.fewshot", "train", *RECIPES[name], "--out", out]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _train_command(name: str, folder: str) -> str:
    return " ".join(["python -m training.fewshot train", *RECIPES[name], "--out", folder])


def run(folders: Dict[str, str], episodes: int, verdict: Verdict) -> List[Dict[str, object]]:
    from device.model_card import load_card
    from training.fewshot.bundle import training_seconds
    from training.fewshot.data import load_fewshot_data
    from training.fewshot.easy import evaluate_backbones

    rows: List[Dict[str, object]] = []
    for name, folder in folders.items():
        ckpt = os.path.join(folder, f"{STEM}_{name}_s0.pt")
        settings = [s for s in SETTINGS if s[0] == name]
        if not os.path.isfile(ckpt):  # the shipped backbone: no training needed (make backbone makes it anew)
            ckpt = SHIPPED[name]
        if not os.path.isfile(ckpt):
            verdict.not_run(f"{name} ({len(settings)} settings)", f"the trained backbone {ckpt}",
                            f"python -m benchmarks.fewshot --train, or {_train_command(name, folder)}")
            continue
        try:
            data = load_fewshot_data(name, 32)
        except FileNotFoundError as error:
            verdict.not_run(f"{name} ({len(settings)} settings)", f"the {name} data", str(error))
            continue
        for _, ways, shots, within, target in settings:
            res = evaluate_backbones([ckpt], data, ways, shots, 15, episodes, 0, within)
            res.update({"target": target, "checkpoint": ckpt})
            rows.append(res)
            figure = f"{100 * res['accuracy']:.2f} ± {100 * res['ci95']:.2f} %"
            mark, tgt = "", "(report)"
            if target is not None:
                what = f"{name} {ways}-way {shots}-shot{' within-alphabet' if within else ''}"
                ok = verdict.target(f"{what} {100 * res['accuracy']:.2f}% >= {100 * target:.0f}%",
                                    res["accuracy"] >= target)
                mark, tgt = (" OK" if ok else " MISSED"), f">= {100 * target:.0f}%"
            print(f"{name:8} {ways:2}-way {shots}-shot {'within-alphabet' if within else '':15} "
                  f"{figure}   target {tgt}{mark}")  # fmt: skip
            for group, part in res.get("per_group", {}).items():
                print(f"{'':8}   {group:28} {100 * part['accuracy']:6.2f} ± {100 * part['ci95']:.2f} % "
                      f"({part['episodes']} episodes)")  # fmt: skip
        wall = training_seconds(os.path.join(folder, "train_log.jsonl")) if ckpt.endswith(".pt") else \
            load_card(ckpt).raw["training"].get("wall_seconds")
        if wall is None:
            verdict.not_run(f"{name} training wall time", f"the training log {folder}/train_log.jsonl",
                            _train_command(name, folder))
        else:
            ok = verdict.target(f"{name} training {wall / 60:.1f} min <= 30 min", wall <= WALL_TARGET_S)
            print(f"{name:8} training wall time {wall / 60:6.1f} min   target <= 30 min{' OK' if ok else ' MISSED'}")
            rows.append({"data": name, "training_wall_seconds": wall, "target": WALL_TARGET_S})
    return rows


def plot(rows: List[Dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = [r for r in rows if "accuracy" in r]
    labels = [f"{r['data']}\n{r['ways']}w{r['shots']}s{' alph' if r['within_groups'] else ''}"
              for r in acc]  # fmt: skip
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(len(acc)), [100 * r["accuracy"] for r in acc],
           yerr=[100 * r["ci95"] for r in acc], color="tab:blue")  # fmt: skip
    targets_drawn = False
    for i, r in enumerate(acc):
        if r["target"] is not None:
            ax.hlines(100 * r["target"], i - 0.4, i + 0.4, colors="tab:red",
                      label=None if targets_drawn else "target")
            targets_drawn = True
    # Within-group settings: each group's (alphabet's) share of the same episodes.
    groups = sorted({g for r in acc for g in r.get("per_group", {})})
    for number, group in enumerate(groups):
        points = [(i, 100 * r["per_group"][group]["accuracy"]) for i, r in enumerate(acc)
                  if group in r.get("per_group", {})]
        ax.scatter([p[0] for p in points], [p[1] for p in points], marker="osD^v"[number % 5],
                   color="C%d" % (1, 2, 4, 5, 6)[number % 5], edgecolors="black", zorder=3, label=group)
    ax.set_xticks(range(len(acc)), labels, fontsize=7)
    ax.set_ylabel("accuracy (%), 95% CI")
    ax.set_title("ResNet-9 f=16 strided 32x32, NCM, 1000 episodes (markers: each held-out alphabet)")
    if targets_drawn or groups:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--omniglot", default="runs/fewshot/omni", help="training folder")
    parser.add_argument("--cifar10", default="runs/fewshot/cifar", help="training folder")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes a configuration (default %(default)s)")
    parser.add_argument("--train", action="store_true", help="run the two trainings first")
    args = parser.parse_args(argv)
    folders = {"omniglot": args.omniglot, "cifar10": args.cifar10}
    verdict = Verdict("bench-fewshot")
    if args.train:
        for name, folder in folders.items():
            _train(name, folder)
    rows = run(folders, args.episodes, verdict)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "fewshot.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    if any("accuracy" in r for r in rows):
        plot(rows, os.path.join(OUT, "fewshot.png"))
        print(f"results: {OUT}/fewshot.json, {OUT}/fewshot.png")
    return verdict.finish()

if __name__ == "__main__":
    sys.exit(main())
