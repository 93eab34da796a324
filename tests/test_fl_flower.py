"""Flower's simulation engine (flwr on Ray) runs our rounds: the same run file and seed give the
same models and byte ledgers as our own engine, bit for bit; and a Flower user's own ServerApp and
ClientApp take our compression as a strategy wrapper and a mod."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("flwr")
pytest.importorskip("ray")

from tests.fl_testkit import write_dataset  # noqa: E402
from training.fl.config import load_config  # noqa: E402
from training.fl.simulation import build, load_data, run  # noqa: E402


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp("mnist")))


def _settings(data, out, engine):
    return {
        "name": f"flower-{engine}",
        "data": {"dataset": "mnist", "path": str(data), "num_clients": 4, "alpha": 0.5, "min_samples": 20},
        "model": {"name": "mlp", "hidden": [16]},
        "federation": {"rounds": 2, "fraction": 0.75, "min_clients": 3, "update_kind": "delta", "seed": 3,
                       "train": {"epochs": 1, "batch_size": 16, "lr": 0.05}},
        "compression": {"uplink": {"sparsify": {"keep": 0.3}, "error_feedback": True, "wire": {"bits": 8}},
                        "downlink": {"wire": {"bits": 8}}},
        "simulation": {"engine": engine, "threads": 1, "out": str(out),
                       "flower": {"num_cpus": 2, "client_cpus": 1}},
    }


LEDGER = ("round", "selected", "accepted", "bytes_up", "bytes_down", "cum_bytes", "train_loss", "accuracy")


def test_flower_engine_equals_ours_bit_for_bit(mnist_folder, tmp_path):
    # Prepare
    ours_config, ours_sim = load_config(_settings(mnist_folder, tmp_path / "ours", "batched"))
    torch.set_num_threads(ours_sim.threads)  # as run() does, and each Flower actor: float sums depend on it
    data = load_data(ours_config, ours_sim)
    ours = build(ours_config, ours_sim, data)
    from training.fl.simulation import run_rounds

    # Execute: ours in process, then Flower's engine on a local Ray (started and stopped here)
    ours_rows, ours_summary = run_rounds(ours, progress=False)
    flower_summary = run(_settings(mnist_folder, tmp_path / "flower", "flower"), progress=False, plots=False)
    # Assert
    import json

    flower_rows = [json.loads(line) for line in (tmp_path / "flower" / "rounds.jsonl").read_text().splitlines()]
    assert [[r.get(k) for k in LEDGER] for r in flower_rows] == [[r.get(k) for k in LEDGER] for r in ours_rows]
    assert flower_summary["engine"] == "flower" and flower_summary["total_bytes"] == ours_summary["total_bytes"]
    assert flower_summary["final_accuracy"] == ours_summary["final_accuracy"] > 0.2
    from fedcore.container import decode_message

    final = decode_message((tmp_path / "flower" / "final.fedc").read_bytes()).tensors
    assert sorted(final) == sorted(ours.server.global_state)
    for name, value in ours.server.global_state.items():
        np.testing.assert_array_equal(final[name], value, err_msg=name)


def test_a_flower_users_app_takes_our_compression_as_a_mod_and_a_strategy_wrapper():
    # Prepare: the documented example, as a Flower user would write it
    import importlib.util
    import os

    from flwr.simulation import run_simulation

    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "flower_fedcore.py")
    spec = importlib.util.spec_from_file_location("flower_fedcore", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    # Execute
    run_simulation(example.server_app, example.client_app, num_supernodes=example.NODES,
                   backend_config={"client_resources": {"num_cpus": 1},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}})
    # Assert: it learned, and every message was our container, much smaller than float32
    outcome = example.OUTCOME
    assert outcome["accuracy"] > 0.7  # chance is 0.25
    assert sorted(outcome["bytes_up"]) == list(range(1, example.ROUNDS + 1))
    for server_round, sent in outcome["bytes_up"].items():
        assert 0 < sent < 0.5 * example.NODES * outcome["float32_bytes"]
        assert 0 < outcome["bytes_down"][server_round] < 0.4 * example.NODES * outcome["float32_bytes"]


def test_a_simulation_spreads_over_a_two_node_ray_cluster(mnist_folder, tmp_path):
    # Prepare: a head and a second node on loopback, one CPU each (Ray's own cluster utilities)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        settings = _settings(mnist_folder, tmp_path / "cluster", "flower")
        settings["federation"]["fraction"] = 1.0
        settings["federation"]["min_clients"] = 4
        settings["simulation"]["flower"] = {"ray_address": cluster.address, "client_cpus": 1}
        # Execute
        summary = run(settings, progress=False, plots=False)
    finally:
        cluster.shutdown()
    # Assert: the clients trained on both nodes, and the run is the same run as anywhere else
    assert summary["ray_nodes"] == 2
    assert summary["rounds"] == 2 and summary["final_accuracy"] > 0.2


def test_without_flower_the_engine_says_what_to_install(tmp_path):
    import subprocess
    import sys

    from tests.fl_testkit import ROOT, python_env

    code = ("import sys; sys.modules['flwr'] = None\n"
            "from fedcore.errors import ConfigError\n"
            "try:\n    import training.fl.flower\nexcept ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=python_env(), capture_output=True,
                         text=True, timeout=120)
    assert 'pip install -e ".[scale]"' in out.stdout, out.stderr
