"""The simulation's three engines (training.fl.trainers) train the same clients to the same models:
sequential (one client after another, as a board), batched (a round's clients in lockstep) bit for
bit, byte ledger included; vmap (one vectorised step for all of them) within float tolerance, its
messages the same length but for the JSON text of each client's reported loss (a byte or two)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fedcore.errors import ConfigError  # noqa: E402
from fedcore.rounds import TrainConfig  # noqa: E402
from training.fl.config import load_config  # noqa: E402
from training.fl.simulation import Data, build, run_rounds  # noqa: E402
from training.fl.trainers import LocalJob, TorchWorker, draw_schedule, resolve_engine, sgd_step  # noqa: E402
from training.models import create_model  # noqa: E402

torch.set_num_threads(1)


def image_data(n=240, test=80, classes=4, seed=0):
    """Class patterns plus noise on 3x8x8 images: a small CNN learns it in a few rounds."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(9).normal(size=(classes, 3, 8, 8)).astype(np.float32)

    def draw(count):
        y = rng.integers(0, classes, count)
        x = patterns[y] + 0.7 * rng.normal(size=(count, 3, 8, 8)).astype(np.float32)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))

    return Data(*draw(n), *draw(test), classes)


def run_config(tmp_path, engine, method="standard", augment=True, rounds=3):
    simulation = {"engine": engine, "method": method, "augment": augment, "out": str(tmp_path / engine)}
    if method == "lora":
        simulation["lora"] = {"rank": 2, "alpha": 8, "train_full": ["conv1"]}
    if method == "qat":
        simulation["qat"] = {"bits": 4}
    return {
        "name": f"engines-{engine}",
        # Label-skewed by class: the clients hold 11 to 113 samples, so their step counts differ.
        "data": {"dataset": "synthetic", "num_clients": 4, "alpha": 0.5, "min_samples": 8, "seed": 1},
        "model": {"name": "resnet8", "widths": [4, 8, 8], "norm": "gn", "norm_groups": 2},
        "federation": {"rounds": rounds, "min_clients": 3, "fraction": 0.75, "seed": 5,
                       "train": {"epochs": 2, "batch_size": 16, "lr": 0.05, "momentum": 0.9,
                                 "weight_decay": 5e-4, "nesterov": method == "lora"}},
        "compression": {"uplink": {"error_feedback": True, "wire": {"bits": 8, "per_channel": True}},
                        "downlink": {"wire": {"bits": 8}}},
        "simulation": simulation,
    }


def simulate(tmp_path, engine, **options):
    config, sim = load_config(run_config(tmp_path, engine, **options))
    setup = build(config, sim, image_data())
    rows, summary = run_rounds(setup, progress=False)
    sizes = sorted(len(c.trainer) for c in setup.clients.values())
    return setup, rows, summary, sizes


LEDGER = ("round", "selected", "accepted", "rejected", "bytes_up", "bytes_down", "cum_bytes")


@pytest.mark.parametrize("method", ["standard", "lora"])
def test_batched_and_vmap_engines_equal_the_sequential_one_over_three_rounds(tmp_path, method):
    # Prepare / Execute
    sequential, seq_rows, seq_summary, sizes = simulate(tmp_path, "sequential", method=method)
    batched, batched_rows, _, _ = simulate(tmp_path, "batched", method=method)
    vmapped, vmap_rows, vmap_summary, _ = simulate(tmp_path, "vmap", method=method)
    # Assert
    assert sizes[0] * 3 < sizes[-1]  # unequal clients: the short ones are masked out of later steps
    assert seq_summary["engine"] == "sequential" and vmap_summary["engine"] == "vmap"
    for name, value in sequential.server.global_state.items():
        np.testing.assert_array_equal(batched.server.global_state[name], value, err_msg=name)
        np.testing.assert_allclose(vmapped.server.global_state[name], value, rtol=2e-4, atol=2e-5, err_msg=name)
    for seq, bat, vec in zip(seq_rows, batched_rows, vmap_rows):
        assert [seq[k] for k in LEDGER] == [bat[k] for k in LEDGER]
        assert seq["train_loss"] == bat["train_loss"]
        assert [seq[k] for k in LEDGER[:4]] == [vec[k] for k in LEDGER[:4]]
        assert seq["bytes_down"] == vec["bytes_down"]
        # The loss a client reports travels as JSON text: '0.6931' and '0.69312' differ by a byte.
        assert abs(seq["bytes_up"] - vec["bytes_up"]) <= 2 * seq["accepted"]
        assert vec["train_loss"] == pytest.approx(seq["train_loss"], rel=1e-4)
    assert vmap_summary["final_accuracy"] == pytest.approx(seq_summary["final_accuracy"], abs=0.02)
    # Each client's error-feedback residual (what it did not send) is carried too: equal but where a
    # value close to a rounding boundary of the 8-bit code fell on the other side (one step, rarely).
    flipped = total = 0
    for cid, client in sequential.clients.items():
        residual = client._compressor.feedback.residual if client._compressor else {}
        other = vmapped.clients[cid]._compressor.feedback.residual if residual else {}
        for name, value in residual.items():
            gap = np.abs(other[name] - value)
            assert gap.max() <= 2.5 * np.abs(value).max() + 1e-6, name  # |residual| <= half a step
            flipped, total = flipped + int(np.sum(gap > 2e-5)), total + gap.size
    assert total > 0 and flipped < 0.02 * total


def test_vmap_trains_qat_like_the_sequential_engine(tmp_path):
    sequential, _, seq_summary, _ = simulate(tmp_path, "sequential", method="qat", rounds=2)
    vmapped, _, vmap_summary, _ = simulate(tmp_path, "vmap", method="qat", rounds=2)
    for name, value in sequential.server.global_state.items():
        np.testing.assert_allclose(vmapped.server.global_state[name], value, rtol=1e-3, atol=1e-4, err_msg=name)
    assert abs(seq_summary["bytes_up"] - vmap_summary["bytes_up"]) <= 2 * 6  # the loss's JSON text, 6 updates


def test_a_client_whose_data_runs_out_keeps_its_parameters_and_momentum(tmp_path):
    # Prepare: two clients, 40 and 7 samples: the second takes 1 step an epoch, the first 3.
    torch.manual_seed(0)
    model = create_model("resnet8", (3, 8, 8), 4, widths=[4, 8, 8], norm="gn", norm_groups=2)
    worker = TorchWorker(model, augment=True)
    data = image_data(n=47)
    state = worker.get_state()
    jobs = [LocalJob(state, torch.arange(0, 40), 11), LocalJob(state, torch.arange(40, 47), 12)]
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3)
    # Execute
    together = worker.train_clients(data.x, data.y, jobs, config, "vmap")
    alone = [worker.train_clients(data.x, data.y, [job], config, "sequential")[0] for job in jobs]
    # Assert
    for (got, got_n, got_metrics), (want, want_n, want_metrics) in zip(together, alone):
        assert got_n == want_n and got_metrics["loss"] == pytest.approx(want_metrics["loss"], rel=1e-5)
        for name in state:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_schedule_is_the_seeds_alone_and_covers_every_sample_each_epoch():
    first = draw_schedule(37, 3, 16, seed=4, augment=True)
    again = draw_schedule(37, 3, 16, seed=4, augment=True)
    assert torch.equal(first.positions, again.positions) and torch.equal(first.shifts, again.shifts)
    assert first.sizes == [16, 16, 5] * 3 and first.positions.shape == (9, 16)
    for epoch in range(3):
        seen = first.positions[3 * epoch:3 * epoch + 3].flatten()
        assert sorted(seen[seen >= 0].tolist()) == list(range(37))
    assert int(first.shifts.max()) <= 8 and first.flips.any() and not first.flips.all()


def test_sgd_step_is_torch_sgd_and_masks_inactive_clients():
    torch.manual_seed(1)
    for nesterov in (False, True):
        config = TrainConfig(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov)
        ours = torch.randn(2, 5)
        reference = ours[0].clone().requires_grad_()
        optimizer = torch.optim.SGD([reference], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov)
        buffers = [torch.zeros_like(ours)]
        frozen = ours[1].clone()
        for step in range(3):
            grad = torch.randn(2, 5)
            reference.grad = grad[0].clone()
            optimizer.step()
            sgd_step([ours], [grad], buffers, config, active=torch.tensor([True, False]))
            assert torch.equal(ours[0], reference.detach()), (nesterov, step)
            assert torch.equal(ours[1], frozen) and not buffers[0][1].any()


def test_batchnorm_models_take_the_batched_engine_and_refuse_vmap(tmp_path):
    model = create_model("resnet8", (3, 8, 8), 4, widths=[4, 8, 8], norm="bn")
    assert resolve_engine("auto", model, torch.device("cpu")) == "batched"
    with pytest.raises(ConfigError, match="BatchNorm"):
        resolve_engine("vmap", model, torch.device("cpu"))
    config = run_config(tmp_path, "batched")
    config["model"] = {"name": "resnet8", "widths": [4, 8, 8], "norm": "bn"}
    sequential = run_config(tmp_path, "sequential")
    sequential["model"] = dict(config["model"])
    results = []
    for table in (config, sequential):
        run, sim = load_config(table)
        setup = build(run, sim, image_data())
        run_rounds(setup, progress=False)
        results.append(setup.server.global_state)
    for name, value in results[1].items():  # running statistics included
        np.testing.assert_array_equal(results[0][name], value, err_msg=name)


def test_a_missing_gpu_is_a_config_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = run_config(tmp_path, "auto")
    config["simulation"]["device"] = "cuda"
    run, sim = load_config(config)
    with pytest.raises(ConfigError, match="no CUDA"):
        build(run, sim, image_data())
