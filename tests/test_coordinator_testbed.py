"""`make testbed`'s orchestration, small: the embedded amqtt broker, the
coordinator and three device processes on the fixture dataset."""

import json
import os

import pytest

from coordinator.testbed import Testbed, main
from tests.fl_testkit import settings, write_config, write_dataset


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
