"""The PyTorch models of the federated studies, created by name from a registry.

    MLP-128      flatten, 128 hidden ReLU, logits (the seed study on MNIST / Fashion-MNIST)
    simplecnn    two conv + pool + FC (the pruning study on MNIST / Fashion-MNIST)
    resnet8/20   CIFAR ResNets of He et al. (3 stages, 16/32/64 channels, n = 1 / 3 blocks)
    resnet18     the CIFAR variant of ResNet-18 (64..512 channels, 3x3 stem)
    resnet12     four residual blocks of three 3x3 convs, each followed by 2x2 max-pooling

Every convolutional model takes ``norm = "bn" | "gn" | "none"`` (GroupNorm is
the federated choice: no running statistics to average), ``norm_groups`` (GroupNorm's
groups: 2 as in the FLoCoRA and ICECS code; default (or 0) groups of 8 channels, at most 32)
and ``init`` ("kaiming": He-normal fan-out convolutions and unit norms, torchvision's
ResNet init and the FLoCoRA code's, the default of the ResNets; "torch": PyTorch's
layer defaults, the default of SimpleCNN). A frozen random init (FLoCoRA) depends on it:
PyTorch's default draws 3x3 convolutions about 2.4x narrower than He's. Parameter names are
PyTorch's, so a state dict maps one-to-one onto fedcore's named tensors.
``python -m training.models --describe`` prints the parameter counts.
"""

import argparse
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from fedcore.errors import ConfigError
from fedcore.registry import Registry

__all__ = [
    "MODELS",
    "register",
    "list_models",
    "create_model",
    "count_parameters",
    "describe",
    "norm_layer",
    "initialize",
    "INITS",
    "MLP",
    "SimpleCNN",
    "CifarResNet",
    "ResNet12",
]

MODELS = Registry("model", error=ConfigError, hint="the [model] name of a run file")


def register(name: str) -> Callable:
    """Class or function decorator: make a model constructor available by name (once)."""
    return MODELS.register(name)


def list_models(pattern: str = "*") -> List[str]:
    """Model names matching a shell-style pattern, sorted."""
    return MODELS.names(pattern)


def create_model(name: str, in_shape: Sequence[int], num_classes: int, **options: Any) -> nn.Module:
    """Build model `name` for inputs of shape (C, H, W); unknown names and options are ConfigErrors."""
    factory = MODELS.get(name.lower())
    try:
        return factory(tuple(int(d) for d in in_shape), int(num_classes), **options)
    except TypeError as error:
        raise ConfigError(f"model {name!r}: bad option(s) {sorted(options)}: {error}") from None


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def norm_layer(kind: str, channels: int, groups: Optional[int] = None) -> nn.Module:
    """BatchNorm, GroupNorm (`groups` groups; None or 0: groups of 8 channels, at most 32) or nothing."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        if groups is None or groups == 0:
            groups = max(1, min(32, channels // 8)) if channels >= 8 else 1
            while channels % groups:
                groups -= 1
        elif not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or channels % groups:
            raise ConfigError(f"model.norm_groups must be a positive integer dividing every width, got {groups!r} "
                              f"for {channels} channels")
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"model.norm must be 'bn', 'gn' or 'none', got {kind!r}")


INITS = ("kaiming", "torch")


def initialize(model: nn.Module, scheme: str) -> nn.Module:
    """"kaiming": every convolution He-normal (fan-out, ReLU gain), every norm weight 1 and bias 0
    (torchvision's ResNet init); "torch": the layers' own defaults, unchanged."""
    if scheme not in INITS:
        raise ConfigError(f"model.init must be one of {list(INITS)}, got {scheme!r}")
    if scheme == "kaiming":
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    return model


@register("mlp")
class MLP(nn.Module):
    """Flatten, hidden ReLU layers, logits. Names fc1, fc2, ... as fedcore.models.MLP."""

    def __init__(self, in_shape: Tuple[int, ...], num_classes: int, hidden: Sequence[int] = (128,)):
        super().__init__()
        sizes = [int(torch.tensor(in_shape).prod())] + [int(h) for h in hidden] + [num_classes]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            self.add_module(f"fc{i}", nn.Linear(fan_in, fan_out))
        self.depth = len(sizes) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.depth:
                x = torch.relu(x)
        return x


@register("simplecnn")
class SimpleCNN(nn.Module):
    """conv(5x5) - pool - conv(5x5) - pool - FC - FC, as in the pruning study."""

    def __init__(self, in_shape: Tuple[int, ...], num_classes: int, channels: Sequence[int] = (32, 64),
                 hidden: int = 512, norm: str = "none", norm_groups: Optional[int] = None, init: str = "torch"):
        super().__init__()
        c, h, w = in_shape
        c1, c2 = (int(v) for v in channels)
        self.conv1 = nn.Conv2d(c, c1, 5, padding=2)
        self.norm1 = norm_layer(norm, c1, norm_groups)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.norm2 = norm_layer(norm, c2, norm_groups)
        self.fc1 = nn.Linear(c2 * (h // 4) * (w // 4), int(hidden))
        self.fc2 = nn.Linear(int(hidden), num_classes)
        initialize(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.norm1(self.conv1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.norm2(self.conv2(x))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut (1x1 conv + norm when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, groups: Optional[int] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(norm, cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(norm, cout, groups)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm_layer(norm, cout, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem, stages of BasicBlocks (the first of each stage but the first strided), pool, FC."""

    def __init__(self, in_shape: Tuple[int, ...], num_classes: int, blocks: Sequence[int],
                 widths: Sequence[int], norm: str = "gn", norm_groups: Optional[int] = None,
                 init: str = "kaiming"):
        super().__init__()
        if len(blocks) != len(widths):
            raise ConfigError(f"model: {len(blocks)} stage depths but {len(widths)} widths")
        self.conv1 = nn.Conv2d(in_shape[0], int(widths[0]), 3, 1, 1, bias=False)
        self.bn1 = norm_layer(norm, int(widths[0]), norm_groups)
        layers, cin = [], int(widths[0])
        for stage, (count, width) in enumerate(zip(blocks, widths)):
            for b in range(int(count)):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(cin, int(width), stride, norm, norm_groups))
                cin = int(width)
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        initialize(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register("resnet8")
def resnet8(in_shape, num_classes, widths=(16, 32, 64), **options):
    return CifarResNet(in_shape, num_classes, (1, 1, 1), widths, **options)


@register("resnet20")
def resnet20(in_shape, num_classes, widths=(16, 32, 64), **options):
    return CifarResNet(in_shape, num_classes, (3, 3, 3), widths, **options)


@register("resnet18")
def resnet18(in_shape, num_classes, widths=(64, 128, 256, 512), **options):
    return CifarResNet(in_shape, num_classes, (2, 2, 2, 2), widths, **options)


class Block12(nn.Module):
    """The ResNet-12 block (also PEFSL's ResNet-9/12, training.fewshot.backbones): three 3x3
    conv + norm (leaky ReLU 0.1 after the first two), added to a 1x1 conv + norm shortcut,
    leaky ReLU, then a 2x2 max-pool, or with `strided` stride 2 on conv3 and the shortcut."""

    def __init__(self, cin: int, cout: int, norm: str, strided: bool = False, groups: Optional[int] = None):
        super().__init__()
        stride = 2 if strided else 1
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn1 = norm_layer(norm, cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(norm, cout, groups)
        self.conv3 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = norm_layer(norm, cout, groups)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm_layer(norm, cout, groups))
        self.pool = nn.Identity() if strided else nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = nn.functional.leaky_relu
        out = act(self.bn1(self.conv1(x)), 0.1)
        out = act(self.bn2(self.conv2(out)), 0.1)
        out = self.bn3(self.conv3(out))
        return self.pool(act(out + self.shortcut(x), 0.1))


@register("resnet12")
class ResNet12(nn.Module):
    """The ResNet-12 of the few-shot and pruning studies (widths 64/160/320/640 by default)."""

    def __init__(self, in_shape: Tuple[int, ...], num_classes: int,
                 widths: Sequence[int] = (64, 160, 320, 640), norm: str = "gn", norm_groups: Optional[int] = None,
                 init: str = "kaiming"):
        super().__init__()
        blocks, cin = [], in_shape[0]
        for width in widths:
            blocks.append(Block12(cin, int(width), norm, groups=norm_groups))
            cin = int(width)
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)
        initialize(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def describe(name: str, in_shape: Sequence[int], num_classes: int, options: Mapping[str, Any] = None
             ) -> str:
    """A table of a model's parameter tensors and the total count."""
    model = create_model(name, in_shape, num_classes, **dict(options or {}))
    lines = [f"{name} {dict(options or {})} for input {tuple(in_shape)}, {num_classes} classes"]
    for pname, param in model.named_parameters():
        lines.append(f"  {pname:40s} {str(tuple(param.shape)):22s} {param.numel():>10,d}")
    total = count_parameters(model)
    lines.append(f"  {'total':40s} {'':22s} {total:>10,d}  ({total * 4 / 1e6:.2f} MB as float32)")
    return "\n".join(lines)


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--describe", nargs="*", metavar="NAME", default=None,
                        help="print the parameters of these models (all when none is named)")
    parser.add_argument("--input", default="3,32,32", help="input shape C,H,W (default 3,32,32)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes of the model's classifier")
    parser.add_argument("--norm", default=None, help="bn, gn or none (convolutional models)")
    args = parser.parse_args(argv)
    shape = [int(v) for v in args.input.split(",")]
    for name in (args.describe or list_models()):
        options = {} if args.norm is None or name == "mlp" else {"norm": args.norm}
        print(describe(name, shape, args.classes, options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
