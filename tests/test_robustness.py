"""One peer cannot ruin the model, and a run that stops learning says so: the automatic
update-norm bound, the robust strategies, the run's health check, and the files a
coordinator trusts (checkpoints, initial models) checked against the run's model."""

import json

import numpy as np
import pytest

from coordinator.server import RunHealth, same_layout
from fedcore.aggregate import coordinate_median, trimmed_mean
from fedcore.container import Message, encode_message
from fedcore.errors import AggregationError, ConfigError
from fedcore.experiment import load_run_config
from fedcore.models import MLP
from fedcore.rounds import FederationConfig, RoundServer
from fedcore.rounds.records import RoundPlan
from fedcore.rounds.strategy import Median, TrimmedMean

MODEL = MLP([4, 3, 2], seed=0).state_dict()


def delta(value, sender="a", round=1, num_samples=10, model=MODEL):
    tensors = {n: np.full(a.shape, value, np.float32) for n, a in model.items()}
    return encode_message(Message(tensors, round, sender, num_samples, "delta"))[0]


# ---------------------------------------------------------------- the automatic bound


def test_a_huge_finite_update_is_refused_by_default():
    """The attack of issue 13: every value 3e38, finite in float32, from a selected sender."""
    server = RoundServer(MODEL, FederationConfig(min_clients=2, min_updates=1))
    server.open_round(["a", "b"])
    verdict = server.submit(delta(3e38, "a"), "a")
    assert verdict.status == "rejected" and "exceeds the automatic bound" in verdict.reason
    assert server.submit(delta(0.01, "b"), "b").accepted
    result = server.close_round()
    assert result.accepted == ["b"] and np.isfinite(server.global_state["fc1.weight"]).all()


def test_the_bound_follows_the_median_of_recent_updates_and_survives_a_restart():
    config = FederationConfig(min_clients=1, min_updates=1, fraction=1.0)
    server = RoundServer(MODEL, config)
    for number, value in enumerate([0.01, 0.012, 0.011, 0.05], 1):  # the last one, 4.5x the median: accepted
        server.open_round(["a"])
        assert server.submit(delta(value, round=number), "a").accepted
        server.close_round()
    bound, why = server.norm_bound()
    size = np.sqrt(sum(a.size for a in MODEL.values()))
    assert bound == pytest.approx(10 * np.median([0.01, 0.012, 0.011, 0.05]) * size, rel=1e-5)
    assert "median norm of the last 4 accepted updates" in why
    restored = RoundServer.restore(server.checkpoint(), config)
    assert restored.norm_bound() == (bound, why)
    restored.open_round(["a"])
    refused = restored.submit(delta(1.0, round=5), "a")  # ~90x the median
    assert refused.status == "rejected" and "automatic bound" in refused.reason


def test_the_bound_can_be_fixed_or_turned_off():
    assert FederationConfig().max_update_norm == "auto"
    assert FederationConfig.from_dict({"max_update_norm": 2.5}).max_update_norm == 2.5
    off = RoundServer(MODEL, FederationConfig.from_dict({"max_update_norm": 0}))
    off.open_round(["a"])
    assert off.submit(delta(1e30), "a").accepted
    with pytest.raises(ConfigError, match="max_update_norm must be a number"):
        FederationConfig.from_dict({"max_update_norm": "big"})
    with pytest.raises(ConfigError, match="update_norm_factor"):
        FederationConfig.from_dict({"update_norm_factor": 0.5})


# ---------------------------------------------------------------- robust strategies


def test_median_and_trimmed_mean_by_hand():
    a, b, c = ({"w": np.array(v, np.float32)} for v in ([1.0, 10.0], [2.0, -4.0], [100.0, 0.0]))
    np.testing.assert_allclose(coordinate_median([a, b, c])["w"], [2.0, 0.0])
    d = {"w": np.array([3.0, 1.0], np.float32)}
    np.testing.assert_allclose(trimmed_mean([a, b, c, d], 0.25)["w"], [2.5, 0.5])  # drops one each side
    np.testing.assert_allclose(trimmed_mean([a, b], 0.0)["w"], [1.5, 3.0])
    with pytest.raises(AggregationError, match="trim must lie in"):
        trimmed_mean([a], 0.5)
    with pytest.raises(AggregationError, match="non-finite"):
        coordinate_median([a, {"w": np.array([np.nan, 0], np.float32)}])


@pytest.mark.parametrize("strategy", [Median(), TrimmedMean(0.34)])
def test_one_attacker_cannot_move_a_robust_aggregate(strategy):
    plan = RoundPlan(1, ("a", "b", "c"), FederationConfig().train, "delta", {}, 60.0, 0)
    honest = [np.full(3, 0.1, np.float32), np.full(3, 0.2, np.float32)]
    evil = np.full(3, 1e6, np.float32)
    updates = [(s, Message({"w": v}, 1, s, 10**9 if s == "c" else 1, "delta"))
               for s, v in zip("abc", honest + [evil])]
    new = strategy.aggregate(plan, {"w": np.zeros(3, np.float32)}, updates, [])
    assert np.all(new["w"] <= 0.2 + 1e-7)  # num_samples=1e9 buys the attacker nothing


def test_robust_strategies_are_selectable():
    assert isinstance(RoundServer(MODEL, FederationConfig.from_dict({"strategy": "median"})).strategy, Median)
    server = RoundServer(MODEL, FederationConfig.from_dict({"strategy": {"name": "trimmed_mean", "trim": 0.2}}))
    assert server.strategy.trim == 0.2


# ---------------------------------------------------------------- a run that stops learning


def test_a_run_without_accepted_updates_stops():
    health = RunHealth(stall_rounds=2, max_accuracy_drop=0.3)
    assert health.check({"accepted": ["a"], "accuracy": 0.6}) is None
    assert health.check({"accepted": [], "accuracy": 0.6}) is None
    assert "no update was accepted in the last 2 rounds" in health.check({"accepted": [], "accuracy": 0.6})


def test_a_collapsed_accuracy_stops_the_run():
    health = RunHealth(stall_rounds=2, max_accuracy_drop=0.3)
    for accuracy in (0.3, 0.6, 0.1):
        assert health.check({"accepted": ["a"], "accuracy": accuracy}) is None
    reason = health.check({"accepted": ["a"], "accuracy": 0.1})
    assert "more than 0.3 below its best 0.6000 for 2 rounds" in reason
    assert RunHealth(0, 0.3).check({"accepted": [], "accuracy": 0.0}) is None  # off


# ---------------------------------------------------------------- sample-count poisoning


def test_a_client_cannot_claim_more_samples_than_it_announced():
    """Issue 23: a selected client claimed 2**53 - 1 samples and took all of FedAvg's weight."""
    server = RoundServer(MODEL, FederationConfig(min_clients=2, min_updates=1))
    server.announced_samples.update({"a": 100, "b": 120})
    server.open_round(["a", "b"])
    verdict = server.submit(delta(-0.01, "a", num_samples=2 ** 53 - 1), "a")
    assert verdict.status == "rejected"
    assert "num_samples 9007199254740991 exceeds the 100 samples 'a' announced" in verdict.reason
    assert server.submit(delta(0.01, "b", num_samples=120), "b").accepted


def test_no_client_weighs_more_than_ten_times_the_median_announced_size():
    # Prepare: "c" announced (and claims) 2**31 samples, the others 100 each
    server = RoundServer(MODEL, FederationConfig(min_clients=3, min_updates=1, max_update_norm=0))
    server.announced_samples.update({"a": 100, "b": 100, "c": 2 ** 31})
    server.open_round(["a", "b", "c"])
    before = {n: v.copy() for n, v in server.global_state.items()}
    # Execute
    verdicts = [server.submit(delta(1.0, "a", num_samples=100), "a"),
                server.submit(delta(1.0, "b", num_samples=100), "b"),
                server.submit(delta(-1.0, "c", num_samples=2 ** 31), "c")]
    result = server.close_round()
    # Assert: accepted, weighed as 1,000 samples (10 x the median 100), and said so
    assert all(v.accepted for v in verdicts)
    assert "weight capped at 1000 samples (claimed 2147483648" in verdicts[2].reason
    assert result.num_samples == 1200
    for name, value in server.global_state.items():
        np.testing.assert_allclose(value - before[name], (100 + 100 - 1000) / 1200, rtol=1e-5)


def test_a_collapsed_round_gives_back_the_last_good_model_and_is_not_checkpointed(tmp_path):
    from coordinator.config import initial_state
    from coordinator.server import Coordinator, CoordinatorSettings
    from coordinator.store import RunStore

    run = load_run_config({"data": {"dataset": "other"}, "model": {"name": "mlp", "hidden": [3]},
                           "federation": {"rounds": 3},
                           "coordinator": {"in_features": 4, "num_classes": 2, "evaluate": False}})
    settings = CoordinatorSettings.from_run(run)  # max_accuracy_drop 0.3
    coordinator = Coordinator(run, settings, link=None, store=RunStore(str(tmp_path)),
                              initial=initial_state(run, settings))
    good = {n: np.full(v.shape, 0.5, np.float32) for n, v in coordinator.server.global_state.items()}
    # A good round, then one whose model (zeroed by a poisoned update) evaluates far lower
    coordinator.server.global_state = dict(good)
    assert coordinator._keep_or_restore(0.8) is None
    coordinator.server.global_state = {n: np.zeros_like(v) for n, v in good.items()}
    reason = coordinator._keep_or_restore(0.1)
    assert "accuracy 0.1000 is more than 0.3 below the best 0.8000: the last good model was restored" in reason
    for name, value in good.items():
        np.testing.assert_array_equal(coordinator.server.global_state[name], value)
    # A round within the drop is kept, and becomes the model a later collapse falls back to
    kept = {n: v + 1 for n, v in good.items()}
    coordinator.server.global_state = dict(kept)
    assert coordinator._keep_or_restore(0.6) is None
    coordinator.server.global_state = {n: np.zeros_like(v) for n, v in good.items()}
    coordinator._keep_or_restore(0.2)
    np.testing.assert_array_equal(coordinator.server.global_state["fc1.weight"], kept["fc1.weight"])


# ---------------------------------------------------------------- files the coordinator trusts


def test_layouts_are_compared_by_names_and_shapes():
    assert same_layout(MODEL, MODEL) is None
    assert "missing ['fc2.bias']" in same_layout({k: v for k, v in MODEL.items() if k != "fc2.bias"}, MODEL)
    wrong = dict(MODEL, **{"fc1.weight": np.zeros((3, 5), np.float32)})
    assert "fc1.weight: shape [3, 5], model has [3, 4]" in same_layout(wrong, MODEL)


def test_coordinator_refuses_bad_checkpoints_and_initial_models(tmp_path):
    from coordinator.config import initial_state
    from coordinator.server import Coordinator, CoordinatorSettings
    from coordinator.store import RunStore

    run = load_run_config({"data": {"dataset": "other"}, "model": {"name": "mlp", "hidden": [3]},
                           "federation": {"rounds": 2},
                           "coordinator": {"in_features": 4, "num_classes": 2, "evaluate": False}})
    settings = CoordinatorSettings.from_run(run)
    initial = initial_state(run, settings)
    # --initial-model with other shapes
    other = tmp_path / "other.fedc"
    other.write_bytes(encode_message(Message(MLP([5, 3, 2]).state_dict(), 0, "x", 0, "weights"))[0])
    with pytest.raises(ConfigError, match="not a model of this run.*fc1.weight: shape \\[3, 5\\]"):
        initial_state(run, settings, str(other))
    # A checkpoint ahead of the run's rounds, or of another model
    for state, completed, message in [(initial, 99, "at round 99, but the run has 2 rounds"),
                                      (MLP([5, 3, 2]).state_dict(), 1, "does not hold the run's model")]:
        store = RunStore(str(tmp_path / f"run{completed}"))
        store.save_checkpoint(RoundServer(state, run.federation, completed_rounds=completed).checkpoint())
        with pytest.raises(ConfigError, match=message):
            Coordinator(run, settings, link=None, store=store, initial=initial)
    json.dumps(settings.__dict__)  # settings stay plain data
