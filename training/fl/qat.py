"""Quantization-aware training: the forward pass sees fake-quantized weights,
the gradient flows to the float weights unchanged (straight-through estimator).

Weights of convolutions and linear layers are quantized per layer: symmetric,
one scale per tensor (max |w| / (2^(b-1) - 1)), 2^b levels; 1 bit is
BinaryConnect (sign(w) times the mean |w| of the layer). Biases and norms stay
float. After local training a client sends the quantized weights, so every
layer holds at most 2^b distinct values.
"""

import torch
from torch import nn

__all__ = ["quantize", "fake_quantize", "quantized_names"]


def quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """The b-bit value of each weight (no gradient)."""
    with torch.no_grad():
        if bits == 1:
            scale = weight.abs().mean()
            return torch.where(weight >= 0, scale, -scale)
        levels = 2 ** (bits - 1) - 1
        scale = weight.abs().max().clamp_min(1e-12) / levels
        return torch.clamp(torch.round(weight / scale), -levels - 1, levels) * scale


def fake_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """quantize() in the forward pass, identity in the backward pass."""
    return weight + (quantize(weight, bits) - weight).detach()


def quantized_names(model: nn.Module):
    """The parameters QAT quantizes: weights of convolutions and linear layers."""
    return [name for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))
            for pname, _ in module.named_parameters(recurse=False) if pname == "weight"
            and module.weight.requires_grad]
