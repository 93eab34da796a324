"""What `make demo` costs a newcomer: `make bench-setup`.

Runs `make setup-demo` with a fresh virtualenv in a temporary folder (pip's cache and index as this
machine has them configured), then the demonstrator's headless replay from it, and prints the
seconds and the megabytes next to the targets (60 s, 300 MB) and to the full test setup's
virtualenv when there is one (.venv). Exit status: 0 every target met, 1 one missed, 2 not run.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.verdict import Verdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_S = 60.0
TARGET_MB = 300.0


def folder_mb(path: str) -> float:
    total = 0
    for base, _, files in os.walk(path):
        for name in files:
            full = os.path.join(base, name)
            if not os.path.islink(full):
                total += os.lstat(full).st_size
    return total / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the temporary virtualenv (its path is printed)")
    args = parser.parse_args(argv)
    verdict = Verdict("bench-setup")
    if shutil.which("make") is None:
        verdict.not_run("make demo's install", "make", "apt-get install make")
        return verdict.finish()
    work = tempfile.mkdtemp(prefix="bench-setup-")
    venv = os.path.join(work, "venv")
    try:
        began = time.perf_counter()
        install = subprocess.run(["make", "--no-print-directory", "setup-demo", "VENV=" + venv,
                                  "PYTHON=" + sys.executable], cwd=ROOT)
        seconds = time.perf_counter() - began
        if install.returncode != 0:
            print("make setup-demo failed (exit %d)" % install.returncode)
            return 1
        size = folder_mb(venv)
        began = time.perf_counter()
        demo = subprocess.run([os.path.join(venv, "bin", "python"), "-m", "demo_app", "--demo", "--max-frames", "30",
                               "--out-dir", os.path.join(work, "demo")], cwd=ROOT, capture_output=True, text=True)
        demo_s = time.perf_counter() - began
        backend = next((line for line in demo.stdout.splitlines() if line.startswith("auto:")), "")
        full = os.path.join(ROOT, ".venv")
        full_mb = folder_mb(full) if os.path.isdir(full) else None
        print("\nmake demo's install, fresh virtualenv: %.1f s, %.0f MB%s" % (
            seconds, size, "; the full test setup's .venv: %.0f MB" % full_mb if full_mb else ""))
        print("then the demo's replay from it (30 frames): exit %d in %.1f s; %s" % (demo.returncode, demo_s,
                                                                                    backend or "backend not printed"))
        verdict.target("install %.1f s <= %.0f s" % (seconds, TARGET_S), seconds <= TARGET_S)
        verdict.target("virtualenv %.0f MB <= %.0f MB" % (size, TARGET_MB), size <= TARGET_MB)
        verdict.target("the demo runs from it (exit %d)" % demo.returncode, demo.returncode == 0)
        if demo.returncode != 0:
            print(demo.stdout[-2000:], demo.stderr[-2000:])
    finally:
        if args.keep:
            print("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
