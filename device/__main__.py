"""python -m device <command>: `fl` runs the federated client (device/fl), `info` checks a
model and its card, `doctor` checks that this board (or laptop) can run the demonstrator."""

import os
import sys

# A federated client computes with one BLAS/OpenMP thread unless told otherwise: ten clients on
# one machine, or one on a board's two cores, must not oversubscribe them (ten by hand took 14-70 s
# a round instead of 0.75 s), and one thread sums in one order, so the bytes are the simulation's.
# Set here, before anything imports numpy: set later, the libraries ignore it.
if sys.argv[1:2] == ["fl"]:
    for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
from typing import List, Optional  # noqa: E402


def _info(argv: List[str]) -> int:
    from .backends import create_backbone, list_backends
    from .errors import DeviceError

    parser = argparse.ArgumentParser(prog="python -m device info",
                                     description="load a model through a backend and describe it")
    parser.add_argument("model", help="ONNX model or its card")
    parser.add_argument("--backend", default="onnxruntime", help=", ".join(list_backends()))
    args = parser.parse_args(argv)
    try:
        backbone = create_backbone(args.backend, args.model)
    except DeviceError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    card = backbone.card
    print("%s: backend %s, input %s, %d features, placeholder %s, card %s" % (
        card.model_path, backbone.name, list(backbone.input_shape), backbone.feature_dim,
        card.placeholder, card.path))
    return 0


def _install_hint(module: Optional[str]) -> str:
    top = (module or "").split(".")[0]
    if top == "paho":
        return "install paho-mqtt: pip install 'paho-mqtt>=2.0'"
    if top in ("fedcore", "fedlink", "device"):
        return "the board image is incomplete: it needs fedcore/, fedlink/ and device/ (make sdcard or make deploy)"
    return "install the project's device extra: pip install '.[device]'"


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("usage: python -m device {fl,info,doctor} ...")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "fl":
        try:
            cli = importlib.import_module("device.fl.cli")
        except ImportError as exc:  # say which module is missing, and how to get it
            print("error: python -m device fl cannot start: %s (%s)" % (exc, _install_hint(exc.name)),
                  file=sys.stderr)
            return 2
        return int(cli.main(rest))
    if command == "info":
        return _info(rest)
    if command == "doctor":
        from .doctor import main as doctor

        return doctor(rest)
    print("error: unknown command %r; commands: fl, info, doctor" % command, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
