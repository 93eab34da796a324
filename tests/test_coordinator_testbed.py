"""`make testbed`'s orchestration, small: the embedded amqtt broker, the
coordinator and three device processes on the fixture dataset."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from coordinator.testbed import Testbed, main
from tests.fl_testkit import ROOT, settings, write_config, write_dataset


def test_testbed_runs_a_small_federation_on_the_embedded_broker(tmp_path):
    pytest.importorskip("amqtt")
    # Prepare
    data = write_dataset(str(tmp_path / "data"))
    config = write_config(str(tmp_path), settings(data, run_id="tb", rounds=2))
    run_dir = str(tmp_path / "run")
    # Execute
    summary = Testbed(config, run_dir, clients=3, broker="embedded").run()
    # Assert
    assert summary["coordinator_status"] == 0
    assert summary["device_status"] == {"client-000": 0, "client-001": 0, "client-002": 0}
    assert summary["report"]["rounds"] == 2 and summary["report"]["final_accuracy"] > 0.3
    with open(os.path.join(run_dir, "testbed.json")) as handle:
        assert json.load(handle)["report"]["bytes_up"] == summary["report"]["bytes_up"]
    assert os.path.getsize(os.path.join(run_dir, "rounds.png")) > 1000


def test_testbed_cli_rejects_bad_arguments(tmp_path, capsys):
    data = write_dataset(str(tmp_path / "data"), train=30, test=10)
    config = write_config(str(tmp_path), settings(data, run_id="tb"))
    assert main(["--config", config, "--clients", "9", "--run-dir", str(tmp_path / "r")]) == 2
    assert "--clients must lie in [1, 3]" in capsys.readouterr().err


def _members(group):
    """pids of the live processes in process group `group` (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def _start_waiting_testbed(tmp_path):
    """A testbed whose coordinator waits 60 s for a fourth device that never comes."""
    data = write_dataset(str(tmp_path / "data"), train=60, test=20)
    table = settings(data, run_id="tb-stop", rounds=2, coordinator={"expected_clients": 4, "wait_s": 60.0})
    table["federation"]["min_clients"] = table["federation"]["min_updates"] = 3
    config = write_config(str(tmp_path), table)
    process = subprocess.Popen([sys.executable, "-m", "coordinator.testbed", "--config", config, "--clients", "3",
                                "--run-dir", str(tmp_path / "run"), "--nice", "0"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    group = int(re.search(r"process group (\d+)", line).group(1))
    ends = time.monotonic() + 30
    while len(_members(group)) < 5 and time.monotonic() < ends:  # broker, 3 devices, coordinator
        time.sleep(0.1)
    assert len(_members(group)) == 5, line
    return process, group


def test_sigterm_stops_the_testbed_and_every_child(tmp_path):
    pytest.importorskip("amqtt")
    process, group = _start_waiting_testbed(tmp_path)
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 128 + signal.SIGTERM
    assert time.monotonic() - began < 10 and _members(group) == []


def test_a_crashed_coordinator_ends_the_testbed_at_once(tmp_path):
    pytest.importorskip("amqtt")
    process, group = _start_waiting_testbed(tmp_path)
    coordinator = next(pid for pid in _members(group)
                       if b"-m\x00coordinator\x00" in open(f"/proc/{pid}/cmdline", "rb").read())
    began = time.monotonic()
    os.kill(coordinator, signal.SIGKILL)
    assert process.wait(15) == 1
    assert time.monotonic() - began < 10 and _members(group) == []
    with open(tmp_path / "run" / "testbed.json") as handle:
        summary = json.load(handle)
    assert summary["coordinator_status"] == -signal.SIGKILL
    assert set(summary["device_status"]) == {"client-000", "client-001", "client-002"}
