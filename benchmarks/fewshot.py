"""Few-shot benchmark: the issue's targets, each figure printed next to its target.

Evaluates trained checkpoints (train them first with the commands below, or
pass ``--train`` to run those trainings here) on 1000 seeded episodes each:
  - Omniglot, held-out alphabets (Balinese, Early Aramaic, Greek), ResNet-9
    f=16 strided 32x32: 20-way 1-shot within-alphabet (target >= 90%), 5-way
    1-shot and 5-shot;
  - CIFAR-10 novel classes (dog, frog, horse, ship, truck), 5-way 1- and 5-shot;
  - the wall time of each full training, from its JSONL log (target <= 30 min
    on this machine's 2 CPU cores).
Results go to runs/bench/fewshot.json and fewshot.png; exit status 1 if a
target is missed.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

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


def _train(name: str, out: str) -> None:
    cmd = [sys.executable, "-m", "training.fewshot", "train", *RECIPES[name], "--out", out]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def training_wall_seconds(folder: str) -> Optional[float]:
    """Wall time of the last finished training logged in ``folder``."""
    path = os.path.join(folder, "train_log.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    ends = [r["wall_seconds"] for r in rows if r.get("event") == "end"]
    if ends:
        return float(ends[-1])
    start = max(i for i, r in enumerate(rows) if r.get("event") == "start")
    epochs = [r["seconds"] for r in rows[start:] if "epoch" in r]  # older logs: epochs only
    return float(sum(epochs)) if epochs else None


def run(folders: Dict[str, str], episodes: int) -> List[Dict[str, object]]:
    from training.fewshot.data import load_fewshot_data
    from training.fewshot.easy import evaluate_backbones

    rows: List[Dict[str, object]] = []
    for name, folder in folders.items():
        ckpt = os.path.join(folder, f"{STEM}_{name}_s0.pt")
        if not os.path.isfile(ckpt):
            print(f"{name}: no checkpoint {ckpt}; train it (see --help) or pass --train")
            continue
        data = load_fewshot_data(name, 32)
        for dname, ways, shots, within, target in SETTINGS:
            if dname != name:
                continue
            res = evaluate_backbones([ckpt], data, ways, shots, 15, episodes, 0, within)
            res.update({"target": target, "checkpoint": ckpt})
            rows.append(res)
            mark = "" if target is None else (" OK" if res["accuracy"] >= target else " MISSED")
            tgt = "(report)" if target is None else f">= {100 * target:.0f}%"
            print(f"{name:8} {ways:2}-way {shots}-shot {'within-alphabet' if within else '':15} "
                  f"{100 * res['accuracy']:6.2f} ± {100 * res['ci95']:.2f} %   target {tgt}{mark}")  # fmt: skip
        wall = training_wall_seconds(folder)
        if wall is not None:
            ok = " OK" if wall <= WALL_TARGET_S else " MISSED"
            print(f"{name:8} training wall time {wall / 60:6.1f} min   target <= 30 min{ok}")
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
    for i, r in enumerate(acc):
        if r["target"] is not None:
            ax.hlines(100 * r["target"], i - 0.4, i + 0.4, colors="tab:red", label="target")
    ax.set_xticks(range(len(acc)), labels, fontsize=7)
    ax.set_ylabel("accuracy (%), 95% CI")
    ax.set_title("ResNet-9 f=16 strided 32x32, NCM, 1000 episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--omniglot", default="runs/fewshot/omni", help="training folder")
    parser.add_argument("--cifar10", default="runs/fewshot/cifar", help="training folder")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--train", action="store_true", help="run the two trainings first")
    args = parser.parse_args(argv)
    folders = {"omniglot": args.omniglot, "cifar10": args.cifar10}
    if args.train:
        for name, folder in folders.items():
            _train(name, folder)
    rows = run(folders, args.episodes)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "fewshot.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    if rows:
        plot(rows, os.path.join(OUT, "fewshot.png"))
    missed = [r for r in rows if r.get("target") is not None and (
        r.get("accuracy", 1.0) < r["target"] if "accuracy" in r
        else r["training_wall_seconds"] > r["target"])]  # fmt: skip
    print(f"results: {OUT}/fewshot.json, {OUT}/fewshot.png; {len(missed)} target(s) missed")
    return 1 if missed or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
