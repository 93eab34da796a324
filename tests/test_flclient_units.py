"""Device client pieces without a broker: announcements, local data, trainers."""

import numpy as np
import pytest

from device.fl.client import Announcement
from device.fl.data import directory_data, load_local_data, partition_data
from device.fl.trainers import NumpyTrainer, make_trainer, mlp_sizes
from fedcore.errors import ConfigError
from fedcore.experiment import load_numpy_dataset, load_run_config, partition_clients
from fedcore.models import MLP
from fedcore.rounds import TrainConfig
from tests.fl_testkit import settings, write_dataset

PLAN = {"round": 2, "selected": ["client-001"], "train": {"epochs": 1}, "update_kind": "delta",
        "uplink": {}, "deadline_s": 5.0, "seed": 1}


def test_announcements_are_validated():
    ok = Announcement({"plan_id": "ab12", "model_id": "f0", "full_id": "f1", "plan": PLAN})
    assert ok.plan.round == 2 and ok.model_ids == {"f0", "f1"} and not ok.done
    assert Announcement({"done": True}).done
    for bad, words in [({"plan_id": "a/b", "model_id": "f", "full_id": "f", "plan": PLAN}, "plan_id"),
                       ({"plan_id": "ab", "model_id": None, "full_id": "f", "plan": PLAN}, "model_id"),
                       ({"plan_id": "ab", "model_id": "f", "full_id": "f", "plan": dict(PLAN, round=0)}, "round"),
                       ({"plan_id": "ab", "model_id": "f", "full_id": "f", "plan": dict(PLAN, bogus=1)}, "unknown")]:
        with pytest.raises(ConfigError, match=words):
            Announcement(bad)


def test_partition_data_is_the_simulations_split(tmp_path):
    data = write_dataset(str(tmp_path / "data"))
    run = load_run_config(settings(data), ["coordinator"])
    x_all, y_all = load_numpy_dataset(run.data, "train")
    index = partition_clients(y_all, run)["client-001"]
    x, y = partition_data(run, "client-001")
    np.testing.assert_array_equal(x, x_all[index])
    np.testing.assert_array_equal(y, y_all[index])
    with pytest.raises(ConfigError, match="not one of the run's 3 clients"):
        partition_data(run, "client-007")


def test_directory_data_from_npz_and_idx(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             y=rng.integers(0, 10, 20))
    x, y = directory_data(str(tmp_path))
    assert x.shape == (20, 784) and x.dtype == np.float32 and float(x.max()) <= 1.0 and y.dtype == np.int64
    np.savez(tmp_path / "train.npz", x=np.zeros((3, 4), np.float32), y=np.zeros(2, np.int64))
    with pytest.raises(ConfigError, match=r"x must be \(N, features...\) and y \(N,\) labels"):
        directory_data(str(tmp_path))
    np.savez(tmp_path / "train.npz", x=np.array([object()] * 2, dtype=object), y=np.zeros(2, np.int64))
    with pytest.raises(ConfigError, match="object arrays are refused"):  # no pickle
        directory_data(str(tmp_path))
    idx = write_dataset(str(tmp_path / "idx"), train=30, test=10)
    x, y = load_local_data(load_run_config({}), "client-000", idx)
    assert x.shape == (30, 784)
    with pytest.raises(ConfigError, match="no such directory"):
        directory_data(str(tmp_path / "missing"))


def test_numpy_trainer_takes_its_shape_from_the_model():
    model = MLP([784, 16, 10], seed=1)
    assert mlp_sizes(model.state_dict()) == [784, 16, 10]
    assert mlp_sizes(MLP([784, 10]).state_dict()) == [784, 10]
    with pytest.raises(ConfigError, match="not a numpy MLP"):
        mlp_sizes({"conv.weight": np.zeros((1, 1))})
    rng = np.random.default_rng(0)
    trainer = NumpyTrainer(rng.random((40, 784), dtype=np.float32), rng.integers(0, 10, 40))
    state, samples, metrics = trainer(model.state_dict(), TrainConfig(), seed=3)
    assert samples == 40 and set(state) == set(model.state_dict()) and "loss" in metrics
    wrong = NumpyTrainer(np.zeros((4, 10), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ConfigError, match="784 inputs"):
        wrong(model.state_dict(), TrainConfig(), seed=0)


def test_make_trainer_for_other_models_needs_a_factory():
    x, y = np.zeros((2, 784), np.float32), np.zeros(2, np.int64)
    with pytest.raises(ConfigError, match="--trainer"):
        make_trainer(load_run_config({"model": {"name": "resnet9"}}), x, y)
    with pytest.raises(ConfigError, match="cannot import"):
        make_trainer(load_run_config({}), x, y, "no_such_module_xyz:build")
    with pytest.raises(ConfigError, match="package.module:function"):
        make_trainer(load_run_config({}), x, y, "justaname")
    assert isinstance(make_trainer(load_run_config({"model": {"name": "softmax"}}), x, y), NumpyTrainer)


def test_a_client_started_by_hand_limits_blas_threads_before_numpy_loads():
    """Issue 25: device/fl/cli.py set OMP_NUM_THREADS in main(), after numpy was imported, so ten
    clients started by hand oversubscribed two cores (14-70 s a round instead of 0.75 s)."""
    import subprocess
    import sys

    from tests.fl_testkit import ROOT
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = ROOT
    probe = ("import os, sys; sys.argv = ['device', 'fl']; import device.__main__; "
             "print(os.environ.get('OMP_NUM_THREADS'), os.environ.get('OPENBLAS_NUM_THREADS'), 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["1", "1", "False"], out.stdout + out.stderr
    env["OMP_NUM_THREADS"] = "4"  # a user's own setting wins
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split()[0] == "4"
