"""The PEFSL backbone family (ResNet-9 / ResNet-12), created by name from a registry.

A block is ``training.models.Block12`` with BatchNorm (the ResNet-12 block of the
federated models too): three 3×3 conv + BatchNorm (+ leaky ReLU 0.1 after the
first two), added to a 1×1 conv + BatchNorm shortcut, then leaky ReLU. It halves
the resolution either with a 2×2 max-pool after the block or, when ``strided``,
with stride 2 on its last 3×3 conv and its shortcut. Widths are f, 2.5f, 5f (and
10f for ResNet-12's fourth block). Global average pooling gives the feature vector.

Every model returns ``(logits, features)``; the rotation head of EASY's
Y-shaped training is a separate linear layer, ``model.rotation_head``.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from fedcore.registry import Registry
from training.models import Block12

__all__ = [
    "BACKBONES",
    "BackboneConfig",
    "FewShotResNet",
    "create_model",
    "list_models",
    "count_params_macs",
    "describe",
]

_DEPTH_BLOCKS = {9: 3, 12: 4}
_WIDTH_FACTORS = (1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class BackboneConfig:
    """What defines a backbone; ``name`` is the registry name (resnet9, resnet12)."""

    name: str = "resnet9"
    feature_maps: int = 16
    strided: bool = True
    input_size: int = 32
    num_classes: int = 64
    rotation_head: bool = True

    @property
    def depth(self) -> int:
        return int(self.name.replace("resnet", ""))

    @property
    def widths(self) -> List[int]:
        blocks = _DEPTH_BLOCKS[self.depth]
        return [int(self.feature_maps * k) for k in _WIDTH_FACTORS[:blocks]]

    @property
    def stem(self) -> str:
        """The file stem of an export, e.g. ``resnet9_f16_strided_32``."""
        mode = "strided" if self.strided else "pool"
        return f"{self.name}_f{self.feature_maps}_{mode}_{self.input_size}"


class FewShotResNet(nn.Module):
    """ResNet-9/12 of PEFSL with a class head and an optional 4-way rotation head."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        cins = [3] + widths[:-1]
        self.blocks = nn.ModuleList(
            Block12(cin, cout, "bn", config.strided) for cin, cout in zip(cins, widths)
        )
        self.feature_dim = widths[-1]
        self.classifier = nn.Linear(self.feature_dim, config.num_classes)
        self.rotation_head = nn.Linear(self.feature_dim, 4) if config.rotation_head else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def features(
        self, x: torch.Tensor, mixup: Optional[Tuple[torch.Tensor, float, int]] = None
    ) -> torch.Tensor:
        """Pooled features; ``mixup`` = (permutation, lam, layer) mixes the hidden
        state before block ``layer`` (0 = the input) as manifold mixup does."""
        for i, block in enumerate(self.blocks):
            if mixup is not None and mixup[2] == i:
                x = mixup[1] * x + (1.0 - mixup[1]) * x[mixup[0]]
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(
        self, x: torch.Tensor, mixup: Optional[Tuple[torch.Tensor, float, int]] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x, mixup)
        return self.classifier(feats), feats


BACKBONES = Registry("backbone", error=ValueError)


@BACKBONES.register("resnet9")
def resnet9(**kwargs) -> FewShotResNet:
    """ResNet-9: three blocks, widths f / 2.5f / 5f (PEFSL: f=16, strided, 32×32)."""
    return FewShotResNet(BackboneConfig(name="resnet9", **kwargs))


@BACKBONES.register("resnet12")
def resnet12(**kwargs) -> FewShotResNet:
    """ResNet-12: four blocks, widths f / 2.5f / 5f / 10f."""
    return FewShotResNet(BackboneConfig(name="resnet12", **kwargs))


def list_models(pattern: str = "*") -> List[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return BACKBONES.names(pattern)


def create_model(name: str, **kwargs) -> FewShotResNet:
    """Build a registered backbone; an unknown name is a ValueError listing what exists."""
    return BACKBONES.get(name)(**kwargs)


def count_params_macs(model: FewShotResNet, input_size: Optional[int] = None) -> Tuple[int, int]:
    """Parameters of the feature extractor (heads excluded) and its multiply-accumulates
    for one image, counted from the conv/linear layers' actual output shapes."""
    size = input_size or model.config.input_size
    macs = 0

    def hook(module: nn.Module, _inp, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
            macs += int(out.numel() * k // module.groups)

    handles = [m.register_forward_hook(hook) for m in model.blocks.modules()]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model.features(torch.zeros(1, 3, size, size))
    model.train(was_training)
    for h in handles:
        h.remove()
    params = sum(p.numel() for p in model.blocks.parameters())
    return int(params), macs


def describe(name: str, feature_maps: int, strided: bool, input_size: int) -> Dict[str, object]:
    """One row of ``--describe``: architecture, widths, parameters and MACs."""
    model = create_model(
        name, feature_maps=feature_maps, strided=strided, input_size=input_size, num_classes=1
    )
    params, macs = count_params_macs(model)
    return {
        "name": name,
        "feature_maps": feature_maps,
        "strided": strided,
        "input_size": input_size,
        "widths": model.config.widths,
        "feature_dim": model.feature_dim,
        "parameters": params,
        "macs": macs,
    }
