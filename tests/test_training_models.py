"""training.models (registry, shapes, norms) and training.datasets (local files, messages)."""

import io
import tarfile

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fedcore.compression import CompressionConfig, Compressor, filter_prune  # noqa: E402
from fedcore.errors import ConfigError  # noqa: E402
from training.datasets import load_split, to_float_nchw  # noqa: E402
from training.models import count_parameters, create_model, describe, list_models  # noqa: E402
from training.models import main as models_main  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("name, options, shape", [
    ("mlp", {}, (1, 28, 28)),
    ("simplecnn", {"channels": [4, 8], "hidden": 16}, (1, 28, 28)),
    ("resnet8", {"widths": [4, 8, 8]}, (3, 16, 16)),
    ("resnet20", {"widths": [4, 4, 8], "norm": "bn"}, (3, 16, 16)),
    ("resnet18", {"widths": [4, 4, 8, 8]}, (3, 16, 16)),
    ("resnet12", {"widths": [4, 8, 8, 8], "norm": "none"}, (3, 16, 16)),
])
def test_models_give_logits(name, options, shape):
    model = create_model(name, shape, 7, **options)
    assert model(torch.zeros(2, *shape)).shape == (2, 7)


def test_parameter_counts_match_the_literature():
    assert count_parameters(create_model("mlp", (1, 28, 28), 10)) == 101_770
    # He et al.'s ResNet-20 for CIFAR-10 has about 0.27 M parameters.
    assert 260_000 < count_parameters(create_model("resnet20", (3, 32, 32), 10, norm="bn")) < 280_000
    assert 11_000_000 < count_parameters(create_model("resnet18", (3, 32, 32), 10, norm="bn")) < 11_300_000


def test_groupnorm_has_no_running_statistics():
    model = create_model("resnet8", (3, 32, 32), 10, norm="gn")
    assert not any("running" in n for n, _ in model.named_buffers())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())


def test_unknown_model_and_norm():
    with pytest.raises(ConfigError, match="known"):
        create_model("vgg", (3, 32, 32), 10)
    with pytest.raises(ConfigError, match="norm"):
        create_model("resnet8", (3, 32, 32), 10, norm="layer")
    assert "resnet12" in list_models("resnet*")


def test_describe_prints_counts(capsys):
    assert "101,770" in describe("mlp", (1, 28, 28), 10)
    assert models_main(["--describe", "resnet8", "--classes", "10"]) == 0
    assert "total" in capsys.readouterr().out


def test_filter_pruning_zeroes_whole_filters_by_norm():
    weights = {"conv.weight": np.stack([np.full((2, 3, 3), float(k + 1)) for k in range(10)]).astype(np.float32),
               "conv.bias": np.ones(10, np.float32)}
    out = filter_prune(weights, 0.3, norm=2.0)
    dead = np.all(out["conv.weight"].reshape(10, -1) == 0, axis=1)
    assert dead.tolist() == [True] * 3 + [False] * 7  # the three weakest filters
    assert np.array_equal(out["conv.bias"], weights["conv.bias"])
    config = CompressionConfig.from_dict({"prune": {"rate": 0.5, "scope": "layer", "structure": "filter",
                                                    "kinds": ["conv", "linear"], "exclude": ["fc.*"]}})
    tensors = {"conv.weight": weights["conv.weight"], "fc.weight": np.ones((4, 3), np.float32)}
    pruned = Compressor(config).transform(tensors)
    assert np.array_equal(pruned["fc.weight"], tensors["fc.weight"])
    assert np.all(pruned["conv.weight"][:5] == 0)
    with pytest.raises(ConfigError, match="scope"):
        CompressionConfig.from_dict({"prune": {"rate": 0.5, "structure": "filter"}})


def _png(pixels):
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


def test_cifar_from_an_image_tree_and_from_the_binary_archive(tmp_path):
    rng = np.random.default_rng(0)
    tree = tmp_path / "tree.tar.gz"
    with tarfile.open(tree, "w:gz") as tar:
        for split in ("train", "test"):
            for k in range(10):
                data = _png(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
                info = tarfile.TarInfo(f"cifar/{split}/class{k}/0.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    images, labels = load_split("cifar10", "test", str(tree), cache=str(tmp_path / "cache"))
    assert images.shape == (10, 32, 32, 3) and sorted(labels.tolist()) == list(range(10))
    again, _ = load_split("cifar10", "test", str(tree), cache=str(tmp_path / "cache"))  # from the .npz cache
    assert np.array_equal(images, again)
    assert to_float_nchw(images, "cifar10").shape == (10, 3, 32, 32)

    records = np.concatenate([np.full((4, 1), 7, np.uint8), rng.integers(0, 255, (4, 3072), dtype=np.uint8)], 1)
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ["test_batch.bin"] + [f"data_batch_{i}.bin" for i in range(1, 6)]:
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = records.nbytes
            tar.addfile(info, io.BytesIO(records.tobytes()))
    images, labels = load_split("cifar10", "train", str(archive))
    assert images.shape == (20, 32, 32, 3) and set(labels.tolist()) == {7}
    assert np.array_equal(images[0].transpose(2, 0, 1).reshape(-1), records[0, 1:])


def test_missing_dataset_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_split("mnist", "train", str(tmp_path / "nowhere"), cache=str(tmp_path / "cache"))
    text = str(error.value)
    assert "nowhere" in text and "download" in text and "ossci" in text
    with pytest.raises(ConfigError, match="known"):
        load_split("imagenet", "train")
