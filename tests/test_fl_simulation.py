"""The torch federated simulation on fedcore's engine, on tiny synthetic data."""

import gzip
import json
import os
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fedcore.container import decode_message  # noqa: E402
from fedcore.errors import ConfigError  # noqa: E402
from training.fl.__main__ import main as fl_main  # noqa: E402
from training.fl.config import load_config  # noqa: E402
from training.fl.simulation import Data, build, run, run_rounds  # noqa: E402
from training.fl.trainers import augment, draw_schedule  # noqa: E402

torch.set_num_threads(1)


def synthetic(n, classes=4, shape=(1, 8, 8), seed=0, noise=0.6):
    """Each class is a fixed random pattern plus noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(123).normal(size=(classes,) + shape).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = prototypes[y] + noise * rng.normal(size=(n,) + shape).astype(np.float32)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


def tiny_data(classes=4, shape=(1, 8, 8)):
    x, y = synthetic(400, classes, shape, seed=1)
    tx, ty = synthetic(200, classes, shape, seed=2)
    return Data(x, y, tx, ty, classes)


def settings(tmp_path, **extra):
    base = {
        "name": "tiny",
        "data": {"dataset": "synthetic", "num_clients": 4, "alpha": 1.0, "min_samples": 10},
        "model": {"name": "mlp", "hidden": [16]},
        "federation": {"rounds": 3, "min_clients": 4, "seed": 3,
                       "train": {"epochs": 1, "batch_size": 16, "lr": 0.05}},
        "simulation": {"out": str(tmp_path / "out")},
    }
    for key, value in extra.items():
        base[key] = value if key == "model" else {**base.get(key, {}), **value}
    return base


def test_three_rounds_learn_above_chance_and_write_logs(tmp_path):
    summary = run(settings(tmp_path), progress=False, data=tiny_data())
    assert summary["final_accuracy"] > 0.7  # chance is 0.25
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert rows[-1]["cum_bytes"] == summary["total_bytes"] == sum(r["bytes_up"] + r["bytes_down"] for r in rows)
    assert all(r["accepted"] == 4 and r["rejected"] == 0 for r in rows)
    assert (out / "accuracy.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())["final_accuracy"] == summary["final_accuracy"]
    # The testbed's page of the same run (coordinator.dashboard): its rounds, bytes and accuracy.
    page = (out / "report.html").read_text()
    view = json.loads(page.split('<script id="data" type="application/json">', 1)[1].split("</script>", 1)[0])
    assert [r["round"] for r in view["rounds"]] == [1, 2, 3] and view["header"]["state"] == "finished"
    assert view["rounds"][-1]["accuracy"] == summary["final_accuracy"]
    assert sum(r["bytes_up"] for r in view["rounds"]) == summary["bytes_up"]


def test_bytes_logged_are_the_encoded_message_lengths(tmp_path):
    config = settings(tmp_path, federation={"broadcast": "delta", "rounds": 2},
                      compression={"uplink": {"sparsify": {"keep": 0.2}, "error_feedback": True,
                                              "wire": {"bits": 4, "entropy": "deflate"}},
                                   "downlink": {"sparsify": {"keep": 0.3}, "wire": {"bits": 4}}})
    run_config, sim = load_config(config)
    setup = build(run_config, sim, tiny_data())
    sent, broadcasts = [], []
    for client in setup.clients.values():
        original = client.run_round

        def recording(plan, blob=None, trained=None, original=original):
            out = original(plan, blob, trained)
            sent.append(len(out))
            return out
        client.run_round = recording
    original_open = setup.server.open_round

    def open_round(available):
        plan = original_open(available)
        broadcasts.append(len(setup.server.broadcast))
        return plan
    setup.server.open_round = open_round
    rows, summary = run_rounds(setup, progress=False)
    assert summary["bytes_up"] == sum(sent) and len(sent) == 8
    assert [r["bytes_down"] for r in rows] == [4 * b for b in broadcasts]
    assert summary["total_bytes"] < summary["float32_total_bytes"]


def test_same_seed_same_model(tmp_path):
    first = run(settings(tmp_path), progress=False, plots=False, data=tiny_data())
    second = run(settings(tmp_path), progress=False, plots=False, data=tiny_data())
    assert first["final_accuracy"] == second["final_accuracy"]
    assert first["total_bytes"] == second["total_bytes"]


def test_pruned_messages_have_the_requested_share_of_zeros(tmp_path):
    config = settings(tmp_path, federation={"rounds": 1, "update_kind": "weights"},
                      compression={"uplink": {"prune": {"rate": 0.7, "scope": "layer"}}})
    run_config, sim = load_config(config)
    setup = build(run_config, sim, tiny_data())
    plan = setup.server.open_round(list(setup.clients))
    client = setup.clients[plan.selected[0]]
    message = decode_message(client.run_round(plan, setup.server.broadcast))
    for name, value in message.tensors.items():
        if name.endswith("weight"):
            assert np.count_nonzero(value == 0) == round(0.7 * value.size)
        else:
            assert np.count_nonzero(value) == value.size  # biases are not pruned


def test_qat_weights_take_at_most_2_to_the_b_values(tmp_path):
    for bits in (4, 1):
        config = settings(tmp_path, simulation={"method": "qat", "qat": {"bits": bits}},
                          model={"name": "simplecnn", "channels": [4, 8], "hidden": 32})
        run_config, sim = load_config(config)
        setup = build(run_config, sim, tiny_data())
        trainer = setup.clients["client-000"].trainer
        state, count, metrics = trainer(setup.server.global_state, run_config.federation.train, 7)
        assert count > 0 and np.isfinite(metrics["loss"])
        for name in ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"):
            distinct = np.unique(state[name]).size
            assert 2 <= distinct <= 2 ** bits, (name, bits, distinct)
        assert np.unique(state["fc1.bias"]).size > 2 ** bits  # biases stay float


def test_lora_trains_only_adapters_norms_and_the_classifier(tmp_path):
    config = settings(tmp_path, simulation={"method": "lora", "lora": {"rank": 2, "alpha": 4}},
                      model={"name": "resnet8", "widths": [4, 8, 8], "norm": "bn"})
    run_config, sim = load_config(config)
    data = tiny_data(shape=(3, 8, 8))
    setup = build(run_config, sim, data)
    model = setup.worker.model
    exchanged = set(setup.server.global_state)
    assert exchanged and all(("lora_" in n) or ("bn" in n) or n.startswith("fc.") or ".shortcut.1." in n
                             for n in exchanged)
    assert not any(n.endswith("conv.weight") for n in exchanged)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.endswith("conv.weight") for n in frozen)
    before = dict(setup.server.global_state)
    state, _, _ = setup.clients["client-000"].trainer(before, run_config.federation.train, 5)
    assert any(not np.array_equal(state[n], before[n]) for n in exchanged if "lora_B" in n)
    assert any(not np.array_equal(state[n], before[n]) for n in exchanged if n.startswith("fc."))
    for name, value in model.named_parameters():
        if name in frozen:
            assert torch.equal(value, frozen[name])
    # Another run with the same seed rebuilds the same frozen base.
    again = build(run_config, sim, data).worker.model
    assert all(torch.equal(dict(again.named_parameters())[n], frozen[n]) for n in frozen)


def test_structured_pruning_removes_whole_filters_in_a_round(tmp_path):
    config = settings(tmp_path, federation={"rounds": 1, "update_kind": "weights"},
                      model={"name": "simplecnn", "channels": [8, 8], "hidden": 16},
                      compression={"uplink": {"prune": {"rate": 0.5, "scope": "layer", "structure": "filter",
                                                         "kinds": ["conv"]}}})
    run_config, sim = load_config(config)
    setup = build(run_config, sim, tiny_data())
    plan = setup.server.open_round(list(setup.clients))
    message = decode_message(setup.clients[plan.selected[0]].run_round(plan, setup.server.broadcast))
    for name in ("conv1.weight", "conv2.weight"):
        filters = message.tensors[name].reshape(8, -1)
        dead = np.all(filters == 0, axis=1)
        assert dead.sum() == 4 and np.all(np.any(filters[~dead] != 0, axis=1))


@pytest.mark.parametrize("extra, words", [
    ({"simulation": {"method": "magic"}}, ["simulation.method", "magic"]),
    ({"compression": {"uplink": {"prune": {"rate": 1.5}}}}, ["compression.uplink", "prune rate", "1.5"]),
    ({"compression": {"downlink": {"sparsify": {"keep": 0.0}}}}, ["compression.downlink", "keep"]),
    ({"simulation": {"method": "qat", "qat": {"bits": 3}}}, ["simulation.qat.bits", "3"]),
    ({"simulation": {"lora": {"rank": 4}}}, ["simulation.lora", "method"]),
    ({"simulation": {"colour": 1}}, ["simulation", "colour"]),
])
def test_config_errors_name_the_key(tmp_path, extra, words):
    with pytest.raises(ConfigError) as error:
        load_config(settings(tmp_path, **extra))
    for word in words:
        assert word in str(error.value)


def test_unknown_model_lists_the_known_ones(tmp_path):
    run_config, sim = load_config(settings(tmp_path, model={"name": "resnet9000"}))
    with pytest.raises(ConfigError, match="resnet8"):
        build(run_config, sim, tiny_data())


def test_augmentation_keeps_shapes_and_pixels():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1
    schedule = draw_schedule(2, 1, 2, seed=0, augment=True)
    out = augment(x, schedule.flips[0], schedule.shifts[0])
    assert out.shape == x.shape
    kept = set(out[out != 0].tolist())
    assert kept <= set(x.flatten().tolist())
    # Offset 4 = the padding: the crop is the image itself; a flip mirrors it.
    same = augment(x, torch.tensor([False, True]), torch.full((2, 2), 4))
    assert torch.equal(same[0], x[0]) and torch.equal(same[1], x[1].flip(2))


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_cli_runs_a_config_on_mnist_format_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 100)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        for i, label in enumerate(labels):  # a bright block whose place tells the class
            images[i, 2 * label:2 * label + 6, 4:24] = 250
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    config = tmp_path / "run.toml"
    config.write_text(
        'name = "cli"\n[data]\ndataset = "mnist"\nnum_clients = 3\nalpha = "iid"\n'
        '[model]\nname = "mlp"\nhidden = [32]\n[federation]\nrounds = 5\nmin_clients = 3\n'
        '[federation.train]\nlr = 0.05\n[simulation]\ntarget_accuracy = 0.5\n')
    out = tmp_path / "out"
    code = fl_main(["--config", str(config), "--data-path", str(tmp_path), "--rounds", "2", "--out", str(out),
                    "--quiet", "--set", "compression.uplink.wire.bits=8"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "final_accuracy" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["final_accuracy"] > 0.5
    assert os.path.isfile(out / "accuracy.png")
    assert fl_main(["--config", str(config), "--describe"]) == 0
    assert "101,770" not in capsys.readouterr().out  # hidden = [32], not 128
    assert fl_main(["--config", str(config), "--method", "nope"]) == 2
    assert "simulation.method" in capsys.readouterr().err


def test_pareto_front_and_overrides():
    from training.fl.config import apply_overrides, parse_assignment
    from training.fl.report import pareto_front

    points = [("a", 10.0, 0.80), ("b", 5.0, 0.82), ("c", 1.0, 0.70), ("d", 7.0, 0.81), ("e", 20.0, 0.85)]
    assert [p[0] for p in pareto_front(points)] == ["c", "b", "e"]
    assert parse_assignment("compression.uplink.sparsify={ keep = 0.1 }") == {
        "compression.uplink.sparsify": {"keep": 0.1}}
    assert parse_assignment("simulation.device=cuda") == {"simulation.device": "cuda"}
    merged = apply_overrides({"federation": {"rounds": 3}}, {"federation.train.lr": 0.1})
    assert merged == {"federation": {"rounds": 3, "train": {"lr": 0.1}}}


def test_round_curves_have_a_title_a_legend_and_whole_round_ticks(tmp_path):
    """Issue 13: the study curves lacked titles and legends and had ticks at 0.5 rounds."""
    from training.fl.report import plot_rounds

    rows = [{"round": r, "accuracy": 0.5 + 0.05 * r, "cum_bytes": 1e5 * r} for r in range(1, 6)]

    fig = plot_rounds({"float32": rows, "4-bit": rows[:3]}, str(tmp_path / "c.png"), "Study 1, seed 0")

    by_round = fig.axes[0]
    ticks = [t for t in by_round.get_xticks() if 1 <= t <= 5]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert fig._suptitle.get_text() == "Study 1, seed 0"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["float32", "4-bit"]
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_pareto_plot_names_methods_in_a_legend(tmp_path):
    """Labels written beside close points overprinted each other (the class of codecs.png's bug)."""
    from training.fl.report import plot_pareto

    points = [("PTQ 8-bit", 10.34e6, 0.8418), ("QAT 8-bit", 10.27e6, 0.8409), ("float32", 40.75e6, 0.8428)]

    fig = plot_pareto(points, str(tmp_path / "p.png"), "alpha 0.5, seed 0")

    axis = fig.axes[0]
    assert len(axis.texts) == 0
    labels = [t.get_text() for t in axis.get_legend().get_texts()]
    assert labels == ["Pareto front", "PTQ 8-bit: 10.34 MB, 84.18% (front)", "QAT 8-bit: 10.27 MB, 84.09% (front)",
                      "float32: 40.75 MB, 84.28% (front)"]
    assert [t.get_text() for t in axis.get_xticklabels()] == ["10", "20", "50"]


def test_the_shipped_flocora_run_is_the_published_setup():
    """FLoCoRA lagged FedAvg by 9-20 points while the shipped run differed from the authors' code
    (PyTorch's default init of the frozen convolutions, GroupNorm of 8-channel groups, weight decay,
    lr 0.05, plain momentum, an adapter on the stem): docs/studies/flocora_ablation."""
    from training.fl.simulation import build_worker

    run_config, sim = load_config("configs/fl/cifar10_flocora.toml")
    worker, total = build_worker(run_config, sim, (3, 32, 32), 10)
    model = worker.model
    train = run_config.federation.train
    assert (train.lr, train.momentum, train.nesterov, train.weight_decay, train.epochs, train.batch_size) == (
        0.01, 0.9, True, 0.0, 5, 32)
    assert (run_config.data.num_clients, run_config.federation.fraction, run_config.data.partition) == (
        100, 0.1, "by-client")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 2 for m in norms)
    frozen = model.layers[1].conv2.conv.weight  # 128 -> 128, 3x3: He fan-out std sqrt(2 / (128 * 9))
    assert not frozen.requires_grad and abs(float(frozen.std()) / (2 / (128 * 9)) ** 0.5 - 1) < 0.05
    assert model.conv1.weight.requires_grad and "conv1.weight" in worker.exchanged  # the stem, whole
    exchanged = sum(v.size for v in worker.get_state().values())
    assert total == 1_227_594 and exchanged == 256_842  # 4.78x fewer parameters, as the thesis' 4.8x
