"""The round engine: selection, validation verdicts, aggregation, broadcast
modes, checkpoints, and the in-process simulation on a learnable problem."""

import math

import numpy as np
import pytest

from fedcore.container import Message, encode_message
from fedcore.errors import ConfigError, MessageError
from fedcore.experiment import MLPTrainer, build_numpy_model, load_run_config
from fedcore.models import MLP
from fedcore.rounds import (
    FederationConfig,
    OutOfSync,
    RoundClient,
    RoundPlan,
    RoundServer,
    TrainConfig,
    client_seed,
    select_clients,
    simulate,
)

INITIAL = {"fc1.weight": np.zeros((2, 3), np.float32), "fc1.bias": np.zeros(2, np.float32)}


def adds(value, num_samples=10):
    """A trainer that moves every parameter by `value`."""

    def train(state, config, seed):
        return {n: a + np.float32(value) for n, a in state.items()}, num_samples, {"loss": 1.0}

    return train


def config(**settings):
    """A federation config; the automatic norm bound is off unless asked for (these toy
    trainers move a zero model by more than ten times its size)."""
    compression = settings.pop("compression", {})
    settings.setdefault("max_update_norm", 0)
    return FederationConfig.from_dict(settings, compression)


def update(round, sender, tensors=None, kind="delta", num_samples=5, **meta):
    tensors = INITIAL if tensors is None else tensors
    return encode_message(Message(dict(tensors), round, sender, num_samples, kind, meta), allow_nonfinite=True)[0]


# ------------------------------------------------------------------ configs


def test_config_defaults_and_round_trip_of_the_plan():
    cfg = config(rounds=3, fraction=0.5, seed=4, train={"lr": 0.1, "epochs": 2})
    assert cfg.train == TrainConfig(epochs=2, lr=0.1)
    server = RoundServer(INITIAL, cfg)
    plan = server.open_round(["a", "b", "c", "d"])
    assert len(plan.selected) == 2
    assert RoundPlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"round": 3}, "unknown key(s) ['round']"),
        ({"update_kind": "gradients"}, "update_kind must be one of"),
        ({"broadcast": "diff"}, "broadcast must be one of"),
        ({"fraction": 1.5}, "federation.fraction must be a number in [0.0, 1.0], got 1.5"),
        ({"rounds": 2.5}, "federation.rounds must be an integer"),
        ({"min_clients": 2, "min_updates": 3}, "min_updates (3) cannot exceed min_clients (2)"),
        ({"train": {"lr": "fast"}}, "federation.train.lr must be a number"),
        ({"compression": {"downlink": {"error_feedback": True}}}, "downlink.error_feedback is not supported"),
        ({"compression": {"uplink": {"sparsify": {"keep": 2}}}}, "keep"),
        ({"compression": {"sidelink": {}}}, "unknown key(s) ['sidelink']"),
    ],
)
def test_config_errors_name_the_setting(settings, message):
    with pytest.raises(ConfigError) as error:
        config(**settings)
    assert message in str(error.value)


def test_plan_from_the_network_is_checked():
    plan = RoundServer(INITIAL, config()).open_round(["a"]).to_dict()
    for key, value, message in [
        ("selected", "a", "selected must be a list"),
        ("update_kind", "x", "update_kind must be one of"),
        ("round", -1, r"round plan.round must be an integer in \[1, 2147483647\]"),
        ("uplink", {"wire": {"bits": 99}}, "bits"),
    ]:
        with pytest.raises(ConfigError, match=message):
            RoundPlan.from_dict({**plan, key: value})
    with pytest.raises(ConfigError, match="missing field"):
        RoundPlan.from_dict({k: v for k, v in plan.items() if k != "train"})


# ---------------------------------------------------------------- selection


def test_selection_is_seeded_sorted_and_bounded():
    pool = [f"c{i}" for i in range(20)]
    first = select_clients(pool, 1, 0.25, 2, seed=7)
    assert first == select_clients(list(reversed(pool)), 1, 0.25, 2, seed=7)
    assert first == sorted(first) and len(first) == 5
    assert len(select_clients(pool, 1, 0.0, 3, seed=7)) == 3
    assert any(select_clients(pool, r, 0.25, 2, seed=7) != first for r in range(2, 6))
    with pytest.raises(RuntimeError, match="2 client\\(s\\) available, at least 3 needed"):
        select_clients(["a", "b"], 1, 1.0, 3, seed=0)


def test_client_seed_depends_on_run_client_and_round():
    seeds = {client_seed(s, c, r) for s in (0, 1) for c in ("a", "b") for r in (1, 2)}
    assert len(seeds) == 8
    assert client_seed(3, "a", 1) == client_seed(3, "a", 1)


# ---------------------------------------------------------------- a round


@pytest.mark.parametrize("kind", ["delta", "weights"])
def test_a_round_averages_weighted_by_samples(kind):
    server = RoundServer(INITIAL, config(update_kind=kind))
    clients = {"a": RoundClient("a", adds(1.0, 10)), "b": RoundClient("b", adds(4.0, 30))}
    plan = server.open_round(list(clients))
    for cid in plan.selected:
        assert server.submit(clients[cid].run_round(plan, server.broadcast), sender=cid).accepted
    result = server.close_round()
    expected = (1.0 * 10 + 4.0 * 30) / 40
    for array in server.global_state.values():
        np.testing.assert_allclose(array, expected, rtol=1e-6)
    assert result.aggregated and result.accepted == ["a", "b"] and result.num_samples == 40
    assert result.client_metrics == {"a": {"loss": 1.0}, "b": {"loss": 1.0}}


def test_bytes_are_the_encoded_lengths():
    server = RoundServer(INITIAL, config())
    clients = {c: RoundClient(c, adds(0.5)) for c in "abc"}
    plan = server.open_round(list(clients))
    down = server.broadcast
    blobs = [clients[c].run_round(plan, down) for c in plan.selected]
    for cid, blob in zip(plan.selected, blobs):
        server.submit(blob, cid)
    result = server.close_round()
    assert result.bytes_up == sum(len(b) for b in blobs)
    assert result.bytes_down == 3 * len(down)


def test_every_bad_update_is_a_verdict_and_never_counts():
    server = RoundServer(INITIAL, config(max_update_norm=10.0, min_clients=2, fraction=0.0))
    plan = server.open_round(["a", "b", "c"])
    chosen, other, outsider = plan.selected[0], plan.selected[1], next(c for c in "abc" if c not in plan.selected)
    good = update(1, chosen, {n: np.ones_like(a) for n, a in INITIAL.items()})
    wrong_shape = dict(INITIAL, **{"fc1.bias": np.zeros(3, np.float32)})
    nan = dict(INITIAL, **{"fc1.bias": np.array([0, np.nan], np.float32)})
    huge = {n: np.full_like(a, 100.0) for n, a in INITIAL.items()}
    cases = [
        (b"\x00garbage", chosen, "rejected", "undecodable"),
        (good[: len(good) - 3], chosen, "rejected", "undecodable"),
        (update(1, chosen, wrong_shape), chosen, "rejected", "fc1.bias: shape [3], model has [2]"),
        (update(1, chosen, nan), chosen, "rejected", "undecodable"),
        (update(1, chosen, huge), chosen, "rejected", "exceeds max_update_norm"),
        (update(1, chosen, {"fc1.weight": INITIAL["fc1.weight"]}), chosen, "rejected", "missing ['fc1.bias']"),
        (update(1, chosen, kind="weights"), chosen, "rejected", "kind 'weights', expected 'delta'"),
        (update(1, chosen, num_samples=0), chosen, "rejected", "num_samples must be >= 1"),
        (update(1, outsider), outsider, "rejected", "was not selected for round 1"),
        # Refused before decoding: garbage from a client that may not send is not even parsed.
        (b"\x00garbage", outsider, "rejected", "was not selected for round 1"),
        (update(1, other), chosen, "rejected", "arrived from"),
        (update(2, chosen), chosen, "rejected", "round 2 has not started"),
        (update(0, chosen), chosen, "late", "round 0 is closed"),
    ]
    for blob, sender, status, reason in cases:
        verdict = server.submit(blob, sender)
        assert (verdict.status, reason in verdict.reason) == (status, True), (verdict, reason)
    assert server.submit(good, chosen).accepted
    assert server.submit(good, chosen).status == "duplicate"
    result = server.close_round()
    assert result.accepted == [chosen]
    assert result.rejected_total == len(cases) - 1  # the late one is not this round's
    # Kept in the result: the chosen client's first 5 and the outsider's two (a flood is counted, not kept)
    assert [v.sender for v in result.rejected] == [chosen] * 5 + [outsider] * 2
    np.testing.assert_array_equal(server.global_state["fc1.bias"], np.ones(2, np.float32))
    assert server.submit(good, chosen).status == "late"


def test_too_few_updates_keeps_the_model_and_moves_on():
    server = RoundServer(INITIAL, config(min_clients=2, min_updates=2))
    plan = server.open_round(["a", "b"])
    server.submit(RoundClient("a", adds(1.0)).run_round(plan, server.broadcast), "a")
    result = server.close_round()
    assert not result.aggregated and result.missing == ["b"]
    assert server.completed_rounds == 1
    np.testing.assert_array_equal(server.global_state["fc1.weight"], INITIAL["fc1.weight"])


def test_wrong_state_is_a_runtime_error():
    server = RoundServer(INITIAL, config())
    with pytest.raises(RuntimeError, match="no round is open"):
        server.close_round()
    server.open_round(["a"])
    with pytest.raises(RuntimeError, match="round 1 is still open"):
        server.open_round(["a"])
    assert server.submit(b"", None).status == "rejected"


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_resumes_the_same_run_only():
    cfg = config(rounds=5)
    server = RoundServer(INITIAL, cfg)
    simulate(server, {"a": RoundClient("a", adds(1.0))}, 2)
    restored = RoundServer.restore(server.checkpoint(), cfg)
    assert restored.completed_rounds == 2
    for name in INITIAL:
        np.testing.assert_array_equal(restored.global_state[name], server.global_state[name])
    assert restored.open_round(["a"]).round == 3
    with pytest.raises(ConfigError, match="another configuration"):
        RoundServer.restore(server.checkpoint(), config(rounds=5, seed=1))
    assert RoundServer.restore(server.checkpoint(), config(rounds=9)).completed_rounds == 2
    with pytest.raises(MessageError, match="not a checkpoint"):
        RoundServer.restore(update(1, "a"), cfg)


# ---------------------------------------------------------------- delta broadcast


def lossy_delta_config(**settings):
    downlink = {"sparsify": {"keep": 0.5, "kinds": ["linear", "bias"]}, "wire": {"bits": 4}}
    return config(broadcast="delta", compression={"downlink": downlink}, **settings)


def test_delta_broadcast_is_followed_and_its_error_carried():
    rng = np.random.default_rng(0)
    start = {"w": rng.normal(size=(8, 8)).astype(np.float32)}
    server = RoundServer(start, lossy_delta_config())
    client = RoundClient("a", lambda s, c, seed: (s, 1, {}))  # trains nothing
    for _ in range(12):
        plan = server.open_round(["a"])
        client.follow(server.broadcast)
        server.submit(client.run_round(plan), "a")
        server.close_round()
    # The server model never moves; what the client holds converges to it.
    error = np.abs(client.model["w"] - start["w"]).max()
    assert error < 0.02 * np.abs(start["w"]).max()


def test_a_client_that_missed_a_delta_is_out_of_sync_until_it_loads_the_full_model():
    server = RoundServer(INITIAL, config(broadcast="delta"))
    a, b = RoundClient("a", adds(1.0)), RoundClient("b", adds(1.0))
    simulate(server, {"a": a}, 2)
    plan = server.open_round(["a", "b"])
    with pytest.raises(OutOfSync, match="delta on round 2, this client holds round -1"):
        b.run_round(plan, server.broadcast)
    b.follow(server.full_model())
    a.follow(server.broadcast)
    for cid, client in (("a", a), ("b", b)):
        assert server.submit(client.run_round(plan), cid).accepted
    server.close_round()
    np.testing.assert_allclose(server.global_state["fc1.bias"], 3.0)


def test_delta_broadcast_counts_every_follower():
    server = RoundServer(INITIAL, config(broadcast="delta", fraction=0.0))
    clients = {c: RoundClient(c, adds(1.0)) for c in "abcd"}
    results = simulate(server, clients, 2)
    assert results[1].bytes_down % 4 == 0 and len(results[1].selected) == 1


# ---------------------------------------------------------------- simulation


def blobs_data(seed, n=400):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centers = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], np.float32)
    return (centers[labels] + rng.normal(0, 0.7, (n, 4))).astype(np.float32), labels


def test_simulation_learns_and_is_reproducible():
    run = load_run_config({
        "model": {"name": "mlp", "hidden": [8]},
        "federation": {"rounds": 5, "seed": 5, "train": {"lr": 0.1}, "broadcast": "delta"},
        "compression": {
            "uplink": {"sparsify": {"keep": 0.5}, "error_feedback": True, "wire": {"bits": 6}},
            "downlink": {"wire": {"bits": 8}},
        },
    })
    x, y = blobs_data(0)
    xt, yt = blobs_data(1)

    def run_once():
        model = build_numpy_model(run.model, 4, 3, run.federation.seed)
        server = RoundServer(model.state_dict(), run.federation)
        clients = {
            f"c{i}": RoundClient(f"c{i}", MLPTrainer(MLP([4, 8, 3]), x[i::3], y[i::3])) for i in range(3)
        }
        results = simulate(server, clients, run.federation.rounds)
        model.load_state_dict(server.global_state)
        return model.evaluate(xt, yt)[0], [(r.bytes_up, r.bytes_down) for r in results]

    accuracy, sizes = run_once()
    assert accuracy > 0.8  # chance is 1/3
    assert run_once() == (accuracy, sizes)


def test_run_config_errors():
    with pytest.raises(ConfigError, match="unknown table\\(s\\) \\['simulaton'\\]"):
        load_run_config({"simulaton": {}})
    assert load_run_config({"simulation": {}, "coordinator": {}}).name == "run"
    with pytest.raises(ConfigError, match="unknown table\\(s\\) \\['coordinator'\\]"):
        load_run_config({"coordinator": {}}, extra_tables=["simulation"])
    assert math.isinf(load_run_config({"data": {"alpha": "iid"}}).data.alpha)
    for data, message in [({"alpha": 0}, "data.alpha"), ({"val_fraction": 1}, "val_fraction"),
                          ({"num_clients": 0}, "data.num_clients"), ({"colour": 1}, "unknown key")]:
        with pytest.raises(ConfigError, match=message):
            load_run_config({"data": data})
    run = load_run_config({"model": {"name": "resnet8"}})
    with pytest.raises(ConfigError, match="no numpy implementation"):
        build_numpy_model(run.model, 4, 3, 0)
    with pytest.raises(ConfigError, match="unknown option"):
        build_numpy_model(load_run_config({"model": {"width": 3}}).model, 4, 3, 0)


def test_read_toml_reports_the_file(tmp_path):
    bad = tmp_path / "run.toml"
    bad.write_text("[federation\nrounds = 2\n")
    with pytest.raises(ConfigError, match="run.toml: invalid TOML"):
        load_run_config(str(bad))
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config(str(tmp_path / "missing.toml"))


def _amplifier(sender, round=1):
    """A small valid container whose header makes a decoder work hard: many tensors of many
    channels of one value each, per-channel 8-bit with LZMA (the scales compress away)."""
    from fedcore.container import TensorCodec

    tensors = {f"t{i}": np.zeros((2000, 1), np.float32) for i in range(300)}
    codec = TensorCodec(bits=8, per_channel=True, sparse="dense", entropy="lzma")
    return encode_message(Message(tensors, round, sender, 5, "delta", {}), codec)[0]


def test_what_a_message_may_cost_its_decoder_is_bounded_by_its_size():
    """Issue 23: 1,047 tensors of shape [51924, 0], per-channel, LZMA: 269 KB that cost 0.5 s of
    CPU to decode (scales of no value, inflated from almost nothing)."""
    import time

    from fedcore.container import TensorCodec, decode_message
    from fedcore.container import encode_message as encode
    from tests.message_kit import entry, frame_json, header

    # Crafted (our encoder writes no scales for a tensor without values), as an attacker would
    affine = {"op": "affine", "bits": 8, "per_channel": True, "rounding": "nearest"}
    tensors = [entry(f"t{i}", (51924, 0), 100, [affine, {"op": "lzma"}]) for i in range(1047)]
    blob = frame_json(header(tensors, kind="delta", round=1, sender="a", num_samples=5), b"\0" * 104700)
    times = []
    for _ in range(3):  # the least of three: a busy machine's noise only ever adds
        began = time.perf_counter()
        with pytest.raises(MessageError, match="affine per_channel on a tensor with no values"):
            decode_message(blob)
        times.append(time.perf_counter() - began)
    assert min(times) < 0.2, times  # about 0.01 s here: its header's JSON, parsed within limits
    bomb = encode(Message({"w": np.zeros((4096, 4096), np.float32)}, 1, "a", 5, "delta", {}),
                  TensorCodec(sparse="dense", entropy="lzma"))[0]  # 64 MiB of zeros in a few kB
    with pytest.raises(MessageError, match="entropy stages inflate to more than"):
        decode_message(bomb)


def test_a_header_unlike_the_model_is_refused_before_its_payload_is_decoded():
    # Prepare
    import time

    from fedcore.container import decode_message

    server = RoundServer(INITIAL, config(min_clients=1))
    plan = server.open_round(["a"])
    blob = _amplifier("a")

    def fastest(work):  # the least of three: the machine's noise only ever adds
        times = []
        for _ in range(3):
            began = time.perf_counter()
            result = work()
            times.append(time.perf_counter() - began)
        return min(times), result

    decode_s, _ = fastest(lambda: decode_message(blob))  # what it costs a receiver that decodes it whole
    # Execute
    refuse_s, verdict = fastest(lambda: server.submit(blob, "a"))
    client = RoundClient("a", adds(1.0))
    client.follow(server.broadcast)
    with pytest.raises(MessageError, match="tensor names differ from the model"):
        client.follow(_amplifier("server", plan.round))
    # Assert: refused from the header, in less than what decoding it costs (that is bounded too:
    # test_what_a_message_may_cost_its_decoder_is_bounded_by_its_size)
    assert verdict.status == "rejected" and "tensor names differ from the model" in verdict.reason
    assert len(blob) < 100_000 and refuse_s < decode_s, (len(blob), refuse_s, decode_s)
