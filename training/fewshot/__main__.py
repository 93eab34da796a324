"""Command line: ``python -m training.fewshot {train,eval,export,describe,dse}``.

Examples (ResNet-9 f=16 strided 32x32, the PEFSL demonstrator's backbone):
  # the bundled backbone, trained on the CIFAR-10 base classes
  python -m training.fewshot train --data cifar10 --epochs 10 --cycle-epochs 2 --peak-decay 0.8 \\
      --out runs/fewshot/cifar
  python -m training.fewshot export --backbone runs/fewshot/cifar/resnet9_f16_strided_32_cifar10_s0.pt \\
      --data cifar10 --out models
  # Omniglot: train on 5 alphabets (rotated characters as extra classes), 20-way 1-shot
  # within-alphabet on the 3 held out
  python -m training.fewshot train --data omniglot --epochs 60 --cycle-epochs 20 --peak-decay 0.8 \\
      --batch-size 64 --lr 0.1 --class-rotations --no-mixup --out runs/fewshot/omni
  python -m training.fewshot eval --backbone runs/fewshot/omni/resnet9_f16_strided_32_omniglot_s0.pt \\
      --data omniglot --ways 20 --shots 1 --within-alphabet
  python -m training.fewshot describe        # parameters and MACs of every configuration
Measured figures and times: python -m benchmarks.fewshot (runs/bench/fewshot.json).
"""

import argparse
import json
import os
import shlex
import sys
import time
from typing import List, Optional

from fedcore.console import add_verbosity, show_logs

__all__ = ["main", "build_parser"]


def _add_arch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="resnet9", help="registry name: resnet9, resnet12")
    p.add_argument("--feature-maps", type=int, default=16, help="f: widths f, 2.5f, 5f (, 10f)")
    p.add_argument("--strided", action=argparse.BooleanOptionalAction, default=True,
                   help="stride-2 last conv per block (default) or 2x2 max-pooling")  # fmt: skip
    p.add_argument("--input-size", type=int, default=32, help="square input side in pixels")


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ways", type=int, default=5, help="classes an episode (default %(default)s)")
    p.add_argument("--shots", type=int, default=1, help="labelled examples a class (default %(default)s)")
    p.add_argument("--queries", type=int, default=15, help="query examples a class (default %(default)s)")
    p.add_argument("--episodes", type=int, default=1000, help="at least 1000 for a reported figure")
    p.add_argument("--seed", type=int, default=0, help="episode sampling seed")
    p.add_argument("--within-alphabet", action="store_true",
                   help="every episode's classes from one group (Omniglot alphabet)")  # fmt: skip
    p.add_argument("--classifier", choices=["ncm", "knn"], default="ncm", help="nearest class mean or k nearest neighbours (default %(default)s)")
    p.add_argument("--k", type=int, default=1, help="neighbours for --classifier knn")
    p.add_argument("--views", type=int, default=1,
                   help="EASY augmented samples: average the features of this many views")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.fewshot", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="cmd", required=True)
    data_help = "cifar10[:PATH], omniglot[:PATH], miniimagenet:PATH, cifar-fs:PATH or a tree PATH"

    t = sub.add_parser("train", help="EASY training of one backbone per seed")
    _add_arch(t)
    t.add_argument("--data", required=True, help=data_help)
    t.add_argument("--epochs", type=int, default=15, help="training epochs (default %(default)s)")
    t.add_argument("--batch-size", type=int, default=128, help="training batch size (default %(default)s)")
    t.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the first cycle")
    t.add_argument("--cycle-epochs", type=float, default=5.0, help="cosine cycle length")
    t.add_argument("--peak-decay", type=float, default=0.7, help="peak LR factor per restart")
    t.add_argument("--seeds", type=int, nargs="+", default=[0], help="several = an ensemble")
    t.add_argument("--no-rotations", action="store_true", help="drop the rotation head")
    t.add_argument("--no-mixup", action="store_true", help="drop manifold mixup")
    t.add_argument("--class-rotations", action="store_true",
                   help="Omniglot: each base class rotated by 0/90/180/270 degrees is a class of "
                        "its own (4x classes); implies --no-rotations")  # fmt: skip
    t.add_argument("--class-flips", action="store_true",
                   help="with --class-rotations: the mirror images as classes too (8x classes)")
    t.add_argument("--affine", action="store_true",
                   help="random rotations (+-15 deg), scalings (0.85-1.15) and shears (+-0.15) of each "
                        "training image: the variations of handwriting (Omniglot)")  # fmt: skip
    t.add_argument("--out", default="runs/fewshot", help="folder for the checkpoint and its log (default %(default)s)")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")

    e = sub.add_parser("eval", help="few-shot accuracy ± 95%% CI on novel classes")
    e.add_argument("--backbone", nargs="+", required=True, help="checkpoint(s); several = ensemble")
    e.add_argument("--data", required=True, help=data_help)
    _add_eval(e)
    e.add_argument("--json", help="append the result as one JSON line to this file")

    x = sub.add_parser("export", help="ONNX (opset 10) + model card, with few-shot figures")
    x.add_argument("--backbone", help="checkpoint; omit with --placeholder")
    x.add_argument("--placeholder", action="store_true", help="export a random-init network")
    x.add_argument("--data", default="cifar10", help=data_help)
    x.add_argument("--out", default="models", help="folder for the ONNX model and its card (default %(default)s)")
    x.add_argument("--episodes", type=int, default=1000, help="episodes of the card's few-shot accuracy (default %(default)s)")
    x.add_argument("--command", default="", help="the training command to record in the card")

    d = sub.add_parser("describe", help="parameters and MACs per configuration")
    d.add_argument("--backbone", nargs="+", default=["resnet9", "resnet12"], help="backbones to compare (default %(default)s)")
    d.add_argument("--feature-maps", type=int, nargs="+", default=[16, 32], help="feature maps of the first block, each compared (default %(default)s)")
    d.add_argument("--input-size", type=int, nargs="+", default=[32, 84], help="input sides in pixels, each compared (default %(default)s)")

    s = sub.add_parser("dse", help="design-space table: accuracy, parameters, MACs")
    s.add_argument("--quick", action="store_true", help="few epochs, 32x32 only")
    s.add_argument("--data", default="omniglot", help=data_help)
    s.add_argument("--epochs", type=int, default=0, help="override the epoch count")
    s.add_argument("--out", default="runs/bench", help="folder for the results (default %(default)s)")
    return parser


def _cmd_train(args: argparse.Namespace) -> None:
    from training.fewshot.data import load_fewshot_data
    from training.fewshot.easy import TrainConfig, train_easy

    cfg = TrainConfig(
        backbone=args.backbone, feature_maps=args.feature_maps, strided=args.strided,
        input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        cycle_epochs=args.cycle_epochs, peak_decay=args.peak_decay, seeds=args.seeds,
        rotations=not (args.no_rotations or args.class_rotations or args.class_flips), mixup=not args.no_mixup,
        class_rotations=args.class_rotations or args.class_flips, class_flips=args.class_flips,
        affine=args.affine, out=args.out,
        threads=args.threads, command="python -m training.fewshot " + shlex.join(sys.argv[1:]),
    )  # fmt: skip
    t0 = time.time()
    data = load_fewshot_data(args.data, args.input_size)
    paths = train_easy(cfg, data)
    print(json.dumps({"checkpoints": paths, "wall_seconds": round(time.time() - t0, 1)}))


def _cmd_eval(args: argparse.Namespace) -> None:
    from training.fewshot.data import load_fewshot_data
    from training.fewshot.easy import evaluate_backbones, load_backbone

    size = load_backbone(args.backbone[0])[0].config.input_size
    data = load_fewshot_data(args.data, size)
    res = evaluate_backbones(
        args.backbone, data, args.ways, args.shots, args.queries, args.episodes, args.seed,
        args.within_alphabet, args.classifier, args.k, args.views,
    )  # fmt: skip
    res["backbone"] = args.backbone
    print(f"{res['ways']}-way {res['shots']}-shot on {res['data']}: "
          f"{100 * res['accuracy']:.2f} ± {100 * res['ci95']:.2f} % ({res['episodes']} episodes)")  # fmt: skip
    for group, part in res.get("per_group", {}).items():
        print(f"  {group:24} {100 * part['accuracy']:6.2f} ± {100 * part['ci95']:.2f} % "
              f"({part['episodes']} episodes)")  # fmt: skip
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(json.dumps(res) + "\n")


def _cmd_export(args: argparse.Namespace) -> None:
    from training.fewshot.bundle import export_bundle

    card = export_bundle(args.backbone, args.data, args.out, args.episodes, args.placeholder,
                         args.command)  # fmt: skip
    print(json.dumps({k: card[k] for k in ("model", "fewshot", "parity")}, indent=2))


def _cmd_describe(args: argparse.Namespace) -> None:
    from training.fewshot.backbones import describe

    print(f"{'backbone':9} {'f':>3} {'strided':>7} {'input':>5} {'widths':>18} "
          f"{'params':>9} {'MACs':>12}")  # fmt: skip
    for name in args.backbone:
        for f in args.feature_maps:
            for strided in (True, False):
                for size in args.input_size:
                    r = describe(name, f, strided, size)
                    print(f"{name:9} {f:>3} {str(strided):>7} {size:>5} {str(r['widths']):>18} "
                          f"{r['parameters']:>9,} {r['macs']:>12,}")  # fmt: skip


def _cmd_dse(args: argparse.Namespace) -> None:
    from training.fewshot.dse import run_dse

    run_dse(args.data, args.out, quick=args.quick, epochs=args.epochs)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    show_logs(args)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    handlers = {"train": _cmd_train, "eval": _cmd_eval, "export": _cmd_export,
                "describe": _cmd_describe, "dse": _cmd_dse}  # fmt: skip
    handlers[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
