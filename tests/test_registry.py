"""fedcore.registry, the one convention of the model and backend registries: a name is
registered once, an unknown name lists the known ones, names() takes a shell pattern."""

import pytest

from device.backends import BACKENDS, register_backend
from device.errors import BackendError
from fedcore.errors import ConfigError
from fedcore.experiment import NUMPY_MODELS
from fedcore.registry import Registry


def test_register_get_and_list_by_pattern():
    things = Registry("thing")

    @things.register("beta")
    def beta():
        return "b"

    things.register("alpha")(lambda: "a")
    assert things.get("beta") is beta and things.get("alpha")() == "a"
    assert things.names() == list(things) == ["alpha", "beta"] and len(things) == 2
    assert things.names("b*") == ["beta"] and things.names("B*") == []  # case-sensitive
    assert "alpha" in things and "gamma" not in things


def test_a_name_registered_twice_is_an_error_and_the_first_stays():
    things = Registry("thing")
    first = things.register("x")(lambda: 1)
    with pytest.raises(ValueError, match=r"thing 'x' is registered twice: by .*<lambda> and by "
                                         r".*\.second"):
        @things.register("x")
        def second():
            return 2
    assert things.get("x") is first
    with pytest.raises(ValueError, match="non-empty string"):
        things.register("")


def test_an_unknown_name_raises_the_owners_error_listing_the_known():
    things = Registry("thing", error=ConfigError, hint="see [things]")
    things.register("b")(int)
    things.register("a")(int)
    with pytest.raises(ConfigError, match=r"^unknown thing 'c'; known things: a, b \(see \[things\]\)$"):
        things.get("c")
    with pytest.raises(ConfigError, match="unknown thing"):
        things.get(["a"])  # an unhashable name from a config file: the same error, no TypeError
    with pytest.raises(LookupError, match="known things: none"):
        Registry("thing").get("a")


def test_the_project_registries_refuse_a_second_registration():
    with pytest.raises(ValueError, match="backend 'onnxruntime' is registered twice"):
        register_backend("onnxruntime")(object)
    assert BACKENDS.names("onnx*") == ["onnxruntime"]
    with pytest.raises(BackendError, match="unknown backend 'fpga'"):
        BACKENDS.get("fpga")
    with pytest.raises(ValueError, match="numpy model 'mlp' is registered twice"):
        NUMPY_MODELS.register("mlp")(object)
    assert list(NUMPY_MODELS) == ["mlp", "softmax"]


def test_torch_registries_refuse_a_second_registration():
    pytest.importorskip("torch")
    from training.fewshot.backbones import BACKBONES
    from training.models import MODELS, register

    with pytest.raises(ValueError, match="model 'resnet12' is registered twice"):
        register("resnet12")(object)
    with pytest.raises(ValueError, match="backbone 'resnet9' is registered twice"):
        BACKBONES.register("resnet9")(object)
    assert MODELS.names("resnet1*") == ["resnet12", "resnet18"]


def test_one_resnet12_architecture_for_federated_and_few_shot_models():
    """training.models' resnet12 and the few-shot resnet12 share one block: with the same
    weights (BatchNorm, max-pool, widths 4/10/20/40) they compute the same features."""
    torch = pytest.importorskip("torch")
    from training.fewshot.backbones import create_model as create_backbone
    from training.models import create_model

    torch.manual_seed(0)
    federated = create_model("resnet12", (3, 16, 16), 5, widths=[4, 10, 20, 40], norm="bn").eval()
    fewshot = create_backbone("resnet12", feature_maps=4, strided=False, input_size=16).eval()
    blocks = {k[len("layers."):]: v for k, v in federated.state_dict().items() if k.startswith("layers.")}
    fewshot.blocks.load_state_dict(blocks)  # strict: the same names and shapes
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(federated.layers(x), 1), 1)
        torch.testing.assert_close(fewshot.features(x), expected)
