"""A run over a real Mosquitto gives the same accuracy, byte counts and final
model as the same config through fedcore.rounds.simulate in process."""

import numpy as np
import pytest

from tests.fl_testkit import (
    ThreadedRun,
    checkpoint_state,
    read_jsonl,
    reference,
    settings,
    write_config,
    write_dataset,
)
from tests.mosquitto_broker import Mosquitto


@pytest.mark.parametrize("broadcast, strategy", [("delta", "fedavg"), ("weights", "fedavg"),
                                                 ("delta", {"name": "fedavgm", "momentum": 0.8})])
def test_mqtt_run_equals_simulation(tmp_path, broadcast, strategy):
    # Prepare
    data = write_dataset(str(tmp_path / "data"))
    name = strategy if isinstance(strategy, str) else strategy["name"]
    config = write_config(str(tmp_path), settings(data, run_id=f"eq-{broadcast}-{name}", broadcast=broadcast,
                                                  strategy=strategy))
    expected = reference(config)
    run_dir = str(tmp_path / "run")
    # Execute
    with Mosquitto(str(tmp_path)) as broker:
        run = ThreadedRun(broker.url, config, run_dir)
        run.start_clients()
        run.start_coordinator()
        report = run.join(timeout=40)
    # Assert
    rounds = read_jsonl(str(tmp_path / "run" / "rounds.jsonl"))
    assert [r["round"] for r in rounds] == [1, 2]
    for got, want in zip(rounds, expected["rounds"]):
        assert got["accepted"] == ["client-000", "client-001", "client-002"]
        assert got["bytes_up"] == want["bytes_up"]
        assert got["bytes_down"] == want["bytes_down"]
        assert got["accuracy"] == want["accuracy"]
    final = checkpoint_state(run_dir)
    assert sorted(final) == sorted(expected["state"])
    for name, value in expected["state"].items():
        np.testing.assert_array_equal(final[name], value)
    assert report["rounds"] == 2 and report["rejected"] == 0
