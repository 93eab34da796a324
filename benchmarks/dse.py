"""Design-space table (`make dse`): depth {9, 12} × f {16, 32} × strided × {32, 84} px.

Trains each configuration with EASY and reports few-shot accuracy, parameters
and MACs; writes runs/bench/dse.json, dse.csv and dse.png (accuracy against
MACs). ``--quick`` trains 3 epochs at 32×32 only (84×84 rows: counts only).

What it needs: the few-shot data (Omniglot by default:
../shared/data/omniglot/images_background_small{1,2}.zip or the official
zips, see training.fewshot). No target: exit status 0 when every
configuration ran, 2 when the data is missing (the last line says so).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
from typing import List, Optional  # noqa: E402

from benchmarks.verdict import Verdict  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="omniglot", help="dataset (see training.fewshot)")
    parser.add_argument("--quick", action="store_true", help="3 epochs, 32x32 only")
    parser.add_argument("--epochs", type=int, default=0, help="override the epoch count")
    parser.add_argument("--out", default=os.path.join("runs", "bench"), help="folder for the table and plot (default %(default)s)")
    args = parser.parse_args(argv)
    from training.fewshot.data import load_fewshot_data
    from training.fewshot.dse import run_dse

    verdict = Verdict("dse")
    try:
        load_fewshot_data(args.data, 32)
    except FileNotFoundError as error:
        verdict.not_run("the design-space table", f"the {args.data} data", str(error))
        return verdict.finish()
    rows = run_dse(args.data, args.out, quick=args.quick, epochs=args.epochs)
    print(f"{len(rows)} configurations -> {args.out}/dse.json, dse.csv, dse.png")
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
