"""The server's strategy seam: FedAvg and FedAvgM behind configure_round/aggregate,
selected in the run file, checkpointed with the model."""

import numpy as np
import pytest

from fedcore.container import Message
from fedcore.errors import ConfigError
from fedcore.experiment import (
    MLPTrainer,
    build_numpy_model,
    load_numpy_dataset,
    load_run_config,
    partition_clients,
    read_toml,
)
from fedcore.rounds import (
    STRATEGIES,
    FedAvg,
    FedAvgM,
    FederationConfig,
    RoundClient,
    RoundServer,
    Strategy,
    make_strategy,
    register_strategy,
    simulate,
)
from fedcore.rounds.records import RoundPlan
from tests.fl_testkit import ROOT, write_dataset

MODEL = {"w": np.array([1.0, 2.0], np.float32)}


def plan(kind="delta"):
    return RoundPlan(1, ("a", "b"), FederationConfig().train, kind, {}, 60.0, 0)


def updates(*pairs):
    """(sender, delta values, samples) -> the accepted updates as the server hands them over."""
    return [(s, Message({"w": np.array(v, np.float32)}, 1, s, n, "delta")) for s, v, n in pairs]


def test_fedavg_is_the_sample_weighted_mean():
    new = FedAvg().aggregate(plan(), MODEL, updates(("a", [1.0, 0.0], 1), ("b", [4.0, 3.0], 2)), [])
    np.testing.assert_allclose(new["w"], [1.0 + 3.0, 2.0 + 2.0])


def test_fedavgm_accumulates_server_momentum():
    strategy = FedAvgM(momentum=0.5, server_lr=1.0)
    first = strategy.aggregate(plan(), MODEL, updates(("a", [2.0, 0.0], 1)), [])
    np.testing.assert_allclose(first["w"], [3.0, 2.0])  # v = d
    second = strategy.aggregate(plan(), first, updates(("a", [2.0, 0.0], 1)), [])
    np.testing.assert_allclose(second["w"], [3.0 + 0.5 * 2.0 + 2.0, 2.0])  # v = 0.5 v + d


def test_fedavgm_weights_kind_takes_the_change_from_the_model():
    strategy = FedAvgM(momentum=0.0, server_lr=0.5)
    sent = [("a", Message({"w": np.array([3.0, 2.0], np.float32)}, 1, "a", 1, "weights"))]
    np.testing.assert_allclose(strategy.aggregate(plan("weights"), MODEL, sent, [])["w"], [2.0, 2.0])


def small_run(tmp_path, strategy, rounds=4, broadcast="delta"):
    table = read_toml(f"{ROOT}/configs/testbed/fmnist_mlp128.toml")
    if broadcast == "weights":
        table["federation"]["broadcast"] = "weights"
        table["compression"]["uplink"]["error_feedback"] = False
        del table["compression"]["downlink"]["sparsify"]
    table["data"].update({"path": write_dataset(str(tmp_path / "data"), train=600, test=200),
                          "num_clients": 4, "min_samples": 20})
    table["federation"].update({"rounds": rounds, "min_clients": 4, "min_updates": 4, "strategy": strategy})
    table["federation"]["train"]["lr"] = 0.05
    return load_run_config(table)


def run_rounds(run, rounds, server=None):
    server = server or RoundServer(build_numpy_model(run.model, 784, 10, run.federation.seed).state_dict(),
                                   run.federation)
    x, y = load_numpy_dataset(run.data, "train")
    clients = {cid: RoundClient(cid, MLPTrainer(build_numpy_model(run.model, 784, 10, 0), x[p], y[p]))
               for cid, p in partition_clients(y, run).items()}
    simulate(server, clients, rounds)
    return server


def accuracy(run, state):
    x, y = load_numpy_dataset(run.data, "test")
    model = build_numpy_model(run.model, 784, 10, 0)
    model.load_state_dict(state)
    return model.evaluate(x, y)[0]


def test_fedavgm_converges_on_the_testbed_config(tmp_path):
    run = small_run(tmp_path, {"name": "fedavgm", "momentum": 0.5})
    assert isinstance(RoundServer(MODEL, run.federation).strategy, FedAvgM)
    server = run_rounds(run, 4)
    assert accuracy(run, server.global_state) > 0.9  # ten noisy templates: learnable in a few rounds


def test_fedavgm_without_momentum_is_fedavg_bit_for_bit(tmp_path):
    plain = run_rounds(small_run(tmp_path, "fedavg"), 2).global_state
    flat = run_rounds(small_run(tmp_path, {"name": "fedavgm", "momentum": 0.0, "server_lr": 1.0}), 2).global_state
    for name in plain:
        np.testing.assert_array_equal(plain[name], flat[name])


def test_a_resumed_fedavgm_server_continues_bit_for_bit(tmp_path):
    # Whole-weights broadcasts and no error feedback: nothing client-side outlives a round, so
    # only the strategy's momentum could break the resume (docs/protocol.md, "Resuming").
    run = small_run(tmp_path, {"name": "fedavgm", "momentum": 0.9}, broadcast="weights")
    straight = run_rounds(run, 3)
    halfway = run_rounds(run, 2)
    resumed = RoundServer.restore(halfway.checkpoint(), run.federation)
    assert resumed.completed_rounds == 2 and resumed.strategy.velocity
    run_rounds(run, 1, resumed)
    for name in straight.global_state:
        np.testing.assert_array_equal(straight.global_state[name], resumed.global_state[name])


def test_strategy_settings_are_checked():
    assert FederationConfig.from_dict({"strategy": "fedavgm"}).strategy == {"name": "fedavgm"}
    for table, message in [
        ({"strategy": "fedprox"}, "unknown strategy 'fedprox'; known strategies: fedavg, fedavgm, median"),
        ({"strategy": {"name": "fedavgm", "momentum": 1.5}}, "federation.strategy.momentum must be"),
        ({"strategy": {"name": "fedavg", "momentum": 0.9}}, "unknown key\\(s\\) \\['momentum'\\]"),
        ({"strategy": {"momentum": 0.9}}, "federation.strategy.name must name a strategy"),
        ({"strategy": 3}, "must be a table"),
    ]:
        with pytest.raises(ConfigError, match=message):
            FederationConfig.from_dict(table)


def test_default_strategy_keeps_old_fingerprints():
    # A checkpoint written before the strategy seam must still resume.
    assert FederationConfig().fingerprint() == FederationConfig.from_dict({"strategy": "fedavg"}).fingerprint()
    assert FederationConfig().fingerprint() != FederationConfig.from_dict({"strategy": "fedavgm"}).fingerprint()


def test_a_duplicate_strategy_name_is_refused():
    class Twin(Strategy):
        name = "fedavg"

    with pytest.raises(ValueError, match="registered twice"):
        register_strategy(Twin)
    assert STRATEGIES.get("fedavg") is FedAvg and isinstance(make_strategy({"name": "fedavg"}), FedAvg)


def test_no_new_model_keeps_the_model():
    class Abstain(FedAvg):
        def aggregate(self, plan, model, updates, failures):
            return None

    server = RoundServer(MODEL, FederationConfig(), strategy=Abstain())
    client = RoundClient("a", lambda state, config, seed: ({"w": state["w"] + 1}, 1, {}))
    result = simulate(server, {"a": client}, 1)[0]
    assert not result.aggregated and result.accepted == ["a"]
    np.testing.assert_array_equal(server.global_state["w"], MODEL["w"])
