"""FLoCoRA: low-rank adapters on the convolutions over a frozen random init.

A convolution W (C_out x C_in x k x k) becomes W + (alpha / r) * B * A with
A: r x C_in x k x k (a convolution with the layer's stride and padding) and
B: C_out x r x 1 x 1 (a 1x1 convolution), B starting at zero, A He-uniform
(PEFT's LoRA for Conv2d). W is the random initialisation drawn from the run's
seed, the same on every participant, and never trained nor sent; the adapters,
the normalization layers and the final fully-connected layer are trained and
exchanged. Convolutions named in `train_full` (e.g. the stem "conv1", as in the
thesis' Table 7, whose message sizes count it) get no adapter: they are
trained and exchanged whole.
"""

import fnmatch
import math
from typing import List, Sequence

import torch
from torch import nn

__all__ = ["LoRAConv2d", "apply_lora", "exchanged_names"]


class LoRAConv2d(nn.Module):
    """A frozen convolution plus a trainable rank-r correction."""

    def __init__(self, conv: nn.Conv2d, rank: int, alpha: float):
        super().__init__()
        if conv.groups != 1:
            raise ValueError("LoRA adapters need an ungrouped convolution")
        self.conv = conv
        for param in conv.parameters():
            param.requires_grad_(False)
        k = conv.kernel_size
        self.lora_A = nn.Parameter(torch.empty(rank, conv.in_channels, k[0], k[1]))
        self.lora_B = nn.Parameter(torch.zeros(conv.out_channels, rank, 1, 1))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = float(alpha) / float(rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        low = nn.functional.conv2d(x, self.lora_A, None, c.stride, c.padding, c.dilation)
        return c(x) + self.scale * nn.functional.conv2d(low, self.lora_B)


def apply_lora(model: nn.Module, rank: int, alpha: float, train_full: Sequence[str] = (),
               prefix: str = "") -> nn.Module:
    """Replace every nn.Conv2d of `model` (in place) by a LoRAConv2d around it, but those
    whose qualified names match a pattern of `train_full`, which stay trainable as they are."""
    for name, child in list(model.named_children()):
        qualified = prefix + name
        if isinstance(child, nn.Conv2d):
            if not any(fnmatch.fnmatchcase(qualified, p) for p in train_full):
                setattr(model, name, LoRAConv2d(child, rank, alpha))
        else:
            apply_lora(child, rank, alpha, train_full, qualified + ".")
    return model


def exchanged_names(model: nn.Module) -> List[str]:
    """What a LoRA client sends: trainable parameters and the running statistics of norms."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    names += [n for n, b in model.named_buffers() if b.is_floating_point()]
    return names
