"""hwflow benchmark: `make bench-hwflow`.

1. SD image: `hwflow sdcard` on a synthetic PYNQ-Z1 image (tests/disk_images.py: MBR, 40 MiB
   FAT32, 24 MiB ext4), median of 3, next to its floor: copying the image alone. Plus the copy
   rate on 256 MiB of incompressible data, which is what a real image (several GB, mostly
   copied) costs; debugfs and e2fsck then work on the root partition's metadata only.
2. Deploy: `hwflow deploy` over loopback to a real sshd (tests/ssh_server.py), rsync and tar,
   median of 3, next to its floor: one bare `ssh true` round trip.

No targets (the issue asks for the figures); JSON to runs/bench/hwflow.json. Exit status 1
only if a step fails.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Any, Dict, List

from benchmarks.timing import median_seconds
from benchmarks.verdict import Verdict
from hwflow.sdcard import build_sdcard, copy_image
from tests.disk_images import make_pynq_image, make_wheel
from tests.ssh_server import SshServer

OUT = pathlib.Path("runs") / "bench" / "hwflow.json"


def bench_sdcard(work: pathlib.Path, runs: int) -> Dict[str, Any]:
    image = make_pynq_image(work / "pynq_z1.img", work)
    wheels = work / "wheels"
    make_wheel(wheels)
    out = work / "board.img"
    args = argparse.Namespace(image=str(image), out=str(out), config=None, board_id="pynq-01",
                              hostname=None, fl=False, wheels=str(wheels), no_wheels=False,
                              require=["hwflow-probe"], strict=False)
    reports: List[Dict[str, Any]] = []
    seconds, = median_seconds([lambda: reports.append(build_sdcard(args, progress=False))], runs)
    floor, = median_seconds([lambda: copy_image(image, work / "copy.img", progress=False)], runs)
    dense = work / "dense.bin"
    with open(dense, "wb") as handle:
        for _ in range(64):
            handle.write(os.urandom(4 << 20))
    copy_s, = median_seconds([lambda: copy_image(dense, work / "dense_copy.bin", progress=False)], runs)
    return {"sdcard_s": seconds, "copy_only_s": floor, "image_bytes": reports[-1]["image_bytes"],
            "image_allocated_bytes": reports[-1]["image_allocated_bytes"],
            "payload_bytes": reports[-1]["payload_bytes"], "entries": reports[-1]["entries_verified"],
            "dense_copy_mb_per_s": dense.stat().st_size / 1e6 / copy_s}


def bench_deploy(work: pathlib.Path, runs: int) -> Dict[str, Any]:
    (work / "sshd").mkdir()
    server = SshServer(str(work / "sshd")).start()
    try:
        options = [a for o in server.ssh_options() for a in ("--ssh-option", o)]
        ssh = ["ssh", "-o", "BatchMode=yes"] + [a for o in server.ssh_options() for a in ("-o", o)]
        ssh += ["-p", str(server.port), server.board, "true"]
        result: Dict[str, Any] = {"ssh_round_trip_s": median_seconds(
            [lambda: subprocess.run(ssh, check=True)], runs)[0]}
        for transport in ("rsync", "tar"):
            cmd = [sys.executable, "-m", "hwflow", "deploy", "--board", server.board, "--port",
                   str(server.port), *options, "--remote-root", str(work / transport), "--no-wheels",
                   "--transport", transport, "--restart-command", "true",
                   "--doctor-command", "%s -m device --help" % sys.executable]
            result["deploy_%s_s" % transport] = median_seconds(
                [lambda cmd=cmd: subprocess.run(cmd, check=True, capture_output=True)], runs)[0]
        return result
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="repetitions, the median reported (default %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        (work / "img").mkdir()
        figures = bench_sdcard(work / "img", args.runs)
        figures.update(bench_deploy(work, args.runs))
    print("sdcard on the synthetic image: %.2f s (copying the image alone: %.2f s); image %.0f MiB, "
          "%.0f MiB allocated; payload %.2f MiB in %d entries"
          % (figures["sdcard_s"], figures["copy_only_s"], figures["image_bytes"] / 2**20,
             figures["image_allocated_bytes"] / 2**20, figures["payload_bytes"] / 2**20, figures["entries"]))
    print("copy rate of incompressible data: %.0f MB/s (a real image costs about its size / this)"
          % figures["dense_copy_mb_per_s"])
    print("deploy over loopback: rsync %.2f s, tar %.2f s (one bare ssh round trip: %.2f s)"
          % (figures["deploy_rsync_s"], figures["deploy_tar_s"], figures["ssh_round_trip_s"]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    print("wrote %s" % OUT)
    return Verdict("bench-hwflow").finish()  # no target: the last line says DONE, as every benchmark's does


if __name__ == "__main__":
    sys.exit(main())
