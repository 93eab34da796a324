"""A torch model of training/ over a real Mosquitto (the --trainer, --initial-model
and --evaluator hooks) gives the same accuracy, byte counts and final model as
the same config through `python -m training.fl`'s simulation."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.fl_testkit import (
    ROOT,
    ThreadedRun,
    checkpoint_state,
    python_env,
    read_jsonl,
    settings,
    write_config,
    write_dataset,
)
from tests.mosquitto_broker import Mosquitto

torch = pytest.importorskip("torch")


def _torch_settings(data: str, run_id: str, method: str) -> dict:
    table = settings(data, run_id=run_id, broadcast="weights")
    table["model"] = {"name": "simplecnn", "channels": [4, 8], "hidden": 16, "norm": "gn"}
    # The devices' loader and the simulation's must keep the same subset.
    table["data"].update({"train_limit": 250, "test_limit": 80})
    table["simulation"] = {"method": method, "threads": 1}
    if method == "lora":
        table["simulation"]["lora"] = {"rank": 2, "alpha": 4}
    return table


@pytest.mark.parametrize("method", ["standard", "lora"])
def test_torch_model_over_mqtt_equals_the_simulation(tmp_path, method):
    # Prepare
    from training.fl.config import load_config
    from training.fl.mqtt import export_initial
    from training.fl.simulation import build, load_data, run_rounds

    data = write_dataset(str(tmp_path / "data"))
    config = write_config(str(tmp_path), _torch_settings(data, f"torch-{method}", method))
    run_config, sim = load_config(json.loads(open(config).read()))
    torch.set_num_threads(sim.threads)  # as training.fl.simulation.run does: the sums depend on it
    setup = build(run_config, sim, load_data(run_config, sim))
    expected, _ = run_rounds(setup, progress=False)
    initial = str(tmp_path / "initial.fedc")
    export_initial(run_config, initial)
    run_dir = str(tmp_path / "run")
    # Execute
    with Mosquitto(str(tmp_path)) as broker:
        run = ThreadedRun(broker.url, config, run_dir, trainer="training.fl.mqtt:trainer",
                          initial_model=initial, evaluator="training.fl.mqtt:evaluator")
        run.start_clients()
        run.start_coordinator()
        report = run.join(timeout=60)
    # Assert
    rounds = read_jsonl(str(tmp_path / "run" / "rounds.jsonl"))
    assert [r["round"] for r in rounds] == [1, 2]
    for got, want in zip(rounds, expected):
        assert got["bytes_up"] == want["bytes_up"]
        assert got["bytes_down"] == want["bytes_down"]
        assert got["accuracy"] == want["accuracy"]
    final = checkpoint_state(run_dir)
    assert sorted(final) == sorted(setup.server.global_state)
    for name, value in setup.server.global_state.items():
        np.testing.assert_array_equal(final[name], value)
    if method == "lora":
        # Only the adapters, norms and the classifier travel.
        assert {"conv1.lora_A", "conv2.lora_B", "fc2.weight"} <= set(final) and "conv1.weight" not in final
    assert report["rounds"] == 2 and report["rejected"] == 0


def test_the_coordinator_needs_an_initial_model_for_a_torch_model(tmp_path):
    # Prepare
    data = write_dataset(str(tmp_path / "data"), train=50, test=20)
    config = write_config(str(tmp_path), _torch_settings(data, "torch-cli", "standard"))
    garbage = tmp_path / "garbage.fedc"
    garbage.write_bytes(b"not a container")
    base = [sys.executable, "-m", "coordinator", "--broker", "mqtt://127.0.0.1:1", "--config", config,
            "--run-dir", str(tmp_path / "run")]
    # Execute
    missing = subprocess.run(base, cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=60)
    bad = subprocess.run(base + ["--initial-model", str(garbage)], cwd=ROOT, env=python_env(),
                         capture_output=True, text=True, timeout=60)
    exported = subprocess.run([sys.executable, "-m", "training.fl", "--config", config, "--export-initial",
                               str(tmp_path / "initial.fedc")], cwd=ROOT, env=python_env(),
                              capture_output=True, text=True, timeout=120)
    # Assert
    assert missing.returncode == 2 and "--initial-model FILE" in missing.stderr
    assert bad.returncode == 2 and "not a valid model container" in bad.stderr
    assert exported.returncode == 0, exported.stderr
    from coordinator.config import read_model_file

    state = read_model_file(str(tmp_path / "initial.fedc"))
    assert state["conv1.weight"].shape == (4, 1, 5, 5) and "fc2.bias" in state
