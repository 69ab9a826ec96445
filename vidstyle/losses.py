"""Loss terms of Gatys et al., normalized so one set of weights works from 64 px to 1080p.

Departures from the paper, and why: features and Grams are averaged over positions (not summed), and the
content and style terms are relative errors (divided by the target's energy), so their size does not change
with resolution or from layer to layer; every style layer then counts equally without hand-tuned layer
weights. Grams and all loss arithmetic stay in float32 even when the network runs in bf16/fp16: fp16
Grams overflow.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_EPS = 1e-8


def gram(features: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, C) float32 Gram matrix averaged over the H*W positions."""
    flat = features.float().flatten(2)
    return flat @ flat.transpose(1, 2) / flat.shape[-1]


class ContentLoss(nn.Module):
    """Relative squared error of one layer's activations against the content frame's."""

    def __init__(self, target: Tensor) -> None:
        super().__init__()
        target = target.detach().float()
        self.register_buffer("target", target)
        self.register_buffer("scale", 1.0 / (target.square().mean() + _EPS))

    def forward(self, features: Tensor) -> Tensor:
        return (features.float() - self.target).square().mean() * self.scale


class StyleLoss(nn.Module):
    """Mean over layers of the relative squared Frobenius error between Gram matrices."""

    def __init__(self, target_grams: dict[str, Tensor]) -> None:
        super().__init__()
        self.layers = tuple(target_grams)
        for i, layer in enumerate(self.layers):
            target = target_grams[layer].detach().float()
            self.register_buffer(f"target{i}", target)
            self.register_buffer(f"scale{i}", 1.0 / (target.square().sum() + _EPS))

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        total = torch.zeros((), device=features[self.layers[0]].device)
        for i, layer in enumerate(self.layers):
            diff = gram(features[layer]) - getattr(self, f"target{i}")
            total = total + diff.square().sum() * getattr(self, f"scale{i}")
        return total / len(self.layers)


def blend_grams(grams: list[dict[str, Tensor]], weights: list[float]) -> dict[str, Tensor]:
    """Blend several styles by mixing their Gram targets (as neural-style does with -style_blend_weights)."""
    norm = sum(weights)
    return {layer: sum(w / norm * g[layer] for g, w in zip(grams, weights, strict=True)) for layer in grams[0]}


def tv_loss(image: Tensor) -> Tensor:
    """Total variation: mean squared difference of neighbouring pixels (image in 0..1)."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    # x 100: brings the term to the magnitude of the relative content/style errors at the default weight.
    return (dx.square().mean() + dy.square().mean()) * 100.0


class TemporalLoss(nn.Module):
    """Ruder et al. 2016: squared error to the flow-warped previous output where the flow is reliable."""

    def __init__(self, warped: Tensor, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("warped", warped.detach().float())
        self.register_buffer("mask", mask.detach().float())

    def forward(self, image: Tensor) -> Tensor:
        # x 100 for the same reason as tv_loss: pixels are in 0..1, so raw squared errors are tiny.
        return (self.mask * (image - self.warped).square()).mean() * 100.0
