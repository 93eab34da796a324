"""A round's updates wait for the close in memory that does not grow with the clients: FedAvg's
running sum (the same mean whatever the arrival order), and every update kept on disk beyond a
bound for the robust statistics."""

import os
import tracemalloc

import numpy as np
import pytest

from fedcore.aggregate import WeightedSum, coordinate_median, fedavg
from fedcore.container import Message
from fedcore.errors import AggregationError
from fedcore.rounds import FederationConfig, RoundServer
from fedcore.rounds.gather import KeepAll, RunningMean

SHAPES = {"w": (300, 40), "b": (40,)}


def random_updates(count, seed=0):
    rng = np.random.default_rng(seed)
    return [({n: (rng.standard_normal(s) * 10.0 ** rng.uniform(-6, 1)).astype(np.float32) for n, s in SHAPES.items()},
             int(rng.integers(1, 600))) for _ in range(count)]


def test_the_running_sum_is_fedavg_and_does_not_depend_on_the_arrival_order():
    # Prepare: values over seven decades, so a plain float64 running sum would round differently
    updates = random_updates(150)
    rng = np.random.default_rng(1)
    means = []
    # Execute
    for _ in range(4):
        running = WeightedSum(SHAPES)
        for index in rng.permutation(len(updates)):
            running.add(*updates[index])
        means.append(running.mean())
    # Assert
    expected = fedavg(updates)
    for mean in means:
        for name in SHAPES:
            np.testing.assert_array_equal(mean[name], expected[name])


def test_a_sparse_update_is_summed_at_its_nonzeros_only_with_the_same_result():
    # Prepare: top-15% deltas as they arrive, decoded with the positions they travelled with
    from fedcore import Message, TensorCodec, decode_message, encode_message
    updates = []
    for tensors, weight in random_updates(30, seed=3):
        kept = {n: np.where(np.abs(v) >= np.quantile(np.abs(v), 0.85), v, 0).astype(np.float32)
                for n, v in tensors.items()}
        blob, _ = encode_message(Message(kept, kind="delta"), TensorCodec(bits=8, sparse="bitmap"))
        updates.append((decode_message(blob), weight))
    assert all(set(m.support) == set(SHAPES) for m, _ in updates)
    # Execute
    dense, sparse = WeightedSum(SHAPES), WeightedSum(SHAPES)
    for message, weight in updates:
        dense.add(message.tensors, weight)
        sparse.add(message.tensors, weight, message.support)
    # Assert: bit for bit, the running sum's two parts included
    for name in SHAPES:
        np.testing.assert_array_equal(sparse.mean()[name], dense.mean()[name])
        np.testing.assert_array_equal(sparse._high[name], dense._high[name])
        np.testing.assert_array_equal(sparse._low[name], dense._low[name])


def test_the_running_sum_refuses_what_fedavg_refuses():
    running = WeightedSum(SHAPES)
    with pytest.raises(AggregationError, match="zero"):
        running.mean()
    with pytest.raises(AggregationError, match="shape"):
        running.add({"w": np.zeros((3, 3), np.float32), "b": np.zeros(40, np.float32)}, 1)
    with pytest.raises(AggregationError, match="missing"):
        running.add({"w": np.zeros((300, 40), np.float32)}, 1)
    with pytest.raises(AggregationError, match="weight"):
        running.add({n: np.zeros(s, np.float32) for n, s in SHAPES.items()}, -1)
    running.add({"w": np.full((300, 40), 3e38, np.float32), "b": np.zeros(40, np.float32)}, 0)  # weighs nothing
    running.add({"w": np.ones((300, 40), np.float32), "b": np.zeros(40, np.float32)}, 3)
    assert float(running.mean()["w"].max()) == 1.0


def _message(tensors, samples, sender="c"):
    return Message(tensors, 1, sender, samples, "delta", {})


def test_keep_all_spills_beyond_its_bound_and_gives_every_update_back(tmp_path):
    # Prepare: room in memory for two of six updates
    updates = random_updates(6, seed=2)
    each = sum(np.zeros(s, np.float32).nbytes for s in SHAPES.values())
    kept = KeepAll(memory_bytes=2 * each, directory=str(tmp_path))
    # Execute
    for index, (tensors, samples) in reversed(list(enumerate(updates))):
        kept.add(f"client-{index}", _message(tensors, samples, f"client-{index}"))
    back = kept.updates()
    # Assert
    assert kept.spilled == 4 and len(os.listdir(tmp_path)) == 1
    assert [sender for sender, _ in back] == [f"client-{i}" for i in range(6)]
    for (_, message), (tensors, samples) in zip(back, updates):
        assert message.num_samples == samples
        for name in SHAPES:
            np.testing.assert_array_equal(message.tensors[name], tensors[name])
    median = coordinate_median([m.tensors for _, m in back])
    np.testing.assert_array_equal(median["w"], coordinate_median([t for t, _ in updates])["w"])
    kept.close()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("strategy", ["fedavg", "median"])
def test_a_servers_round_memory_does_not_grow_with_the_clients(tmp_path, strategy):
    # Prepare: a 100 k-parameter model (0.4 MB as float32) and 300 updates to it
    model = {"w": np.zeros((1000, 100), np.float32)}
    rng = np.random.default_rng(3)
    config = FederationConfig.from_dict({"min_clients": 1, "strategy": strategy, "max_update_norm": 0})
    server = RoundServer(model, config, spill_dir=str(tmp_path))
    senders = [f"c{i:03d}" for i in range(300)]
    server.open_round(senders)
    from fedcore.container import encode_message

    blobs = [encode_message(_message({"w": rng.standard_normal((1000, 100)).astype(np.float32) * 1e-3}, 10, s))[0]
             for s in senders]
    # Execute
    tracemalloc.start()
    for blob, sender in zip(blobs, senders):
        assert server.submit(blob, sender).accepted
    held = tracemalloc.get_traced_memory()[0]
    result = server.close_round()
    tracemalloc.stop()
    # Assert: 300 decoded updates would be 120 MB; the round holds about one (or its bound)
    assert result.aggregated and len(result.accepted) == 300
    assert held < (6 << 20) if strategy == "fedavg" else held < (64 << 20) + (6 << 20)
    if strategy == "median":
        assert os.listdir(tmp_path) == []  # the spilled updates went with the round
    gathered_type = RunningMean if strategy == "fedavg" else KeepAll
    assert isinstance(server.strategy.gather(None, model), gathered_type)
