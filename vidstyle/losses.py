"""Loss terms of Gatys et al., normalized so one set of weights works from 64 px to 1080p.

Departures from the paper, and why: features and Grams are averaged over positions (not summed), and the
content and style terms are relative errors (divided by the target's energy), so their size does not change
with resolution or from layer to layer; every style layer then counts equally without hand-tuned layer
weights. Grams accumulate, and all loss arithmetic runs, in float32 even when the network runs in bf16/fp16:
fp16 Grams overflow, and a Gram rounded to bf16 loses the small difference to its target that the loss is
made of (on a CPU in bf16 that difference itself is rounded once, see _gram_error_sum).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.grad import conv2d_weight

_EPS = 1e-8


def _is_channels_last(features: Tensor) -> bool:
    """Stored NHWC. A 1x1 map or a single channel is contiguous both ways; NCHW handles those."""
    return features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()


def _rows(features: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, H*W, C): one row of channels per position; a view in either memory layout."""
    n, c, h, w = features.shape
    if _is_channels_last(features):
        return features.permute(0, 2, 3, 1).view(n, h * w, c)
    return features.flatten(2).transpose(1, 2)


def _as_convolution(features: Tensor) -> bool:
    """Run the Gram products as 1x1 convolutions: one NHWC image on a CPU.

    There oneDNN's convolution kernels beat MKL's matmul on these tall, thin products, most of all at the 64- and
    128-channel layers (docs/performance.md). A batch, NCHW, or a GPU (cuBLAS) keep the plain matmul.
    """
    return features.device.type == "cpu" and features.shape[0] == 1 and _is_channels_last(features)


def _gram_sum(features: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, C): the channels' products summed over positions, in the features' dtype."""
    c = features.shape[1]
    if _as_convolution(features):
        # F^T F is the weight gradient of a 1x1 convolution whose input and output gradient are both F.
        return conv2d_weight(features, (c, c, 1, 1), features).view(1, c, c)
    rows = _rows(features)
    return rows.transpose(1, 2) @ rows


def _times_symmetric(features: Tensor, matrix: Tensor) -> Tensor:
    """(N, C, H, W) features times a symmetric (N, C, C) matrix at every position, in the features' layout."""
    n, c, h, w = features.shape
    if _as_convolution(features):
        return F.conv2d(features, matrix.view(c, c, 1, 1))
    if _is_channels_last(features):
        # rows @ M writes the result in the activations' own NHWC layout, so autograd adds it to the network's
        # gradient without a layout change; on a CPU it is also faster than M @ columns
        # (docs/performance.md).
        return torch.bmm(_rows(features), matrix).view(n, h, w, c).permute(0, 3, 1, 2)
    return torch.bmm(matrix, features.flatten(2)).view_as(features)


def gram(features: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, C) float32 Gram matrix averaged over the H*W positions."""
    return _gram_sum(features.float()) / (features.shape[-2] * features.shape[-1])


class SummedTarget(NamedTuple):
    """A target Gram times the positions it is compared over, so that it meets the Gram as summed, not averaged.

    `leading` is its bf16 rounding, where a CPU's bf16 product starts its accumulator, and `remainder` what that
    rounding leaves out. They depend only on the target and the frame size, so a StyleLoss makes them once.
    """

    full: Tensor
    leading: Tensor
    remainder: Tensor


def summed_target(target: Tensor, positions: int) -> SummedTarget:
    full = target.float() * positions
    leading = full.to(torch.bfloat16)
    return SummedTarget(full, leading, full - leading.float())


def _gram_error_sum(features: Tensor, target: SummedTarget) -> Tensor:
    """positions x (gram(features) - target) in float32, for features in any dtype."""
    if not (features.dtype == torch.bfloat16 and features.device.type == "cpu"):
        return _gram_sum(features.float()).sub_(target.full)
    # A CPU has no bf16-in/float32-out product, and a float32 Gram costs it twice a bf16 one plus a float32 copy of
    # the activations. So the bf16 product starts its float32 accumulator at minus the target's bf16 part: its one
    # rounding is then relative to the Gram's error, not to the Gram (a bf16 Gram differenced afterwards is off by
    # several per cent of the error near convergence), the rounding the backward gives that error anyway. The
    # target's float32 remainder is taken off after (docs/performance.md).
    rows = _rows(features)
    error = torch.baddbmm(target.leading, rows.transpose(1, 2), rows, beta=-1)
    return torch.sub(error, target.remainder)  # promoted to float32: the bf16 error is exact in it


class _SquaredError(torch.autograd.Function):
    """scale * sum(weight * (x - target)^2) for a float32 target and an optional weight that broadcasts over x,
    with the gradient 2 * scale * weight * (x - target) written directly, in x's dtype and layout.

    Autograd through the plain expression converts, subtracts, squares and scales twice over, a pass over the
    activation each, several times the work of this one pass (docs/performance.md). Its mean() would also hand
    back an NCHW gradient for NHWC activations, which then costs a layout change to add to the network's gradient.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, target: Tensor,  # type: ignore[override]
                scale: Tensor | float, weight: Tensor | None) -> Tensor:
        diff = torch.sub(x, target)  # promoted to float32, in x's layout
        weighted = diff if weight is None else diff * weight
        ctx.save_for_backward(weighted)
        ctx.scale, ctx.dtype = scale, x.dtype  # type: ignore[attr-defined]
        return torch.sum(diff * weighted) * scale

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor, None, None, None]:
        (weighted,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return (weighted * (grad * ctx.scale * 2.0)).to(ctx.dtype), None, None, None  # type: ignore[attr-defined]


class ContentLoss(nn.Module):
    """Relative squared error of one layer's activations against the content frame's."""

    def __init__(self, target: Tensor) -> None:
        super().__init__()
        target = target.detach().float()
        self.register_buffer("target", target)
        self.register_buffer("scale", 1.0 / ((target.square().mean() + _EPS) * target.numel()))

    def forward(self, features: Tensor) -> Tensor:
        return _SquaredError.apply(features, self.target, self.scale, None)


# Luminance weights (ITU-R BT.601) and the Gaussian's width, in pixels, of the structure term's detail map.
_LUMA = (0.299, 0.587, 0.114)
STRUCTURE_SIGMA = 1.5


# The least detail energy the structure term's error is measured against, per pixel at a long side of 1 px: a
# line-drawn edge covers a share of the frame that halves as the size doubles, and so does a detailed frame's
# energy per pixel (a street scene: about 2e-4 at 96 px, 8e-5 at 256, 3e-5 at 512; a grey sky: 1.5e-5 at every
# size). The floor lies under the street's at every size and over the sky's (docs/performance.md, "Edge contrast").
DETAIL_FLOOR = 0.016


def detail_floor(content: Tensor) -> float:
    """The floor of StructureLoss's normalizer for `content` (N, 3, H, W): DETAIL_FLOOR per pixel over the long side."""
    height, width = content.shape[-2:]
    return DETAIL_FLOOR * content.shape[0] * height * width / max(height, width)


class StructureLoss(nn.Module):
    """Relative squared error of the frame's luminance detail against the content frame's (Li et al. 2017,
    "Laplacian-Steered Neural Style Transfer").

    The content loss sees the picture only through relu4_2, an eighth of the frame's resolution, so a style term
    strong enough to paint the frame also paints over the edges between those positions, and the picture becomes
    hard to read. This term holds the fine luminance structure where the source has it. It leaves the colours to
    the style, and in flat regions asks only that they stay free of strong lines, so the painting's palette and
    large strokes still come through (docs/performance.md, "Structure").

    The error is relative to the source's detail, so one weight serves every size, but never to less than
    DETAIL_FLOOR of it: a frame that is mostly flat sky has little detail, and relative to that alone every stroke
    painted in its sky was charged several times what it is charged in a street scene (docs/performance.md, "Edge
    contrast").

    `contrast` asks for the source's detail at that multiple of its strength, as a painter draws outlines harder
    than the photograph shows them: the picture stays readable under more paint. `weights`, (N, 1, H, W), weighs the
    error pixel by pixel (a held frame's flat regions count more: stylize.held_structure_weights).
    """

    def __init__(self, content: Tensor, contrast: float = 1.0, weights: Tensor | None = None) -> None:
        super().__init__()
        # The filters are made once here, not at every iteration's evaluation.
        device = content.device
        self.radius = max(1, math.ceil(3 * STRUCTURE_SIGMA))
        taps = torch.exp(-torch.arange(-self.radius, self.radius + 1, device=device, dtype=torch.float32).square()
                         / (2 * STRUCTURE_SIGMA**2))
        self.register_buffer("luma", torch.tensor(_LUMA, device=device))
        self.register_buffer("taps", taps / taps.sum())
        self.register_buffer("laplacian", torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
                                                       device=device).view(1, 1, 3, 3))
        with torch.no_grad():
            source = self.detail(content)
        if weights is not None and weights.shape[-2:] != source.shape[-2:]:
            # Broadcasting a map of another size would weigh the wrong pixels, or fail only at the first iteration.
            raise ValueError(f"structure weights of {tuple(weights.shape)} for a frame of {tuple(source.shape)}")
        self.register_buffer("target", source * contrast)
        # Per pixel, (N, 1, H, W); the normalizer stays the unweighted one, so a weight of 1 is the plain term.
        self.register_buffer("weights", None if weights is None else weights.detach().float())
        # A Python float, read once: a tensor scale would be a host sync per iteration on CUDA.
        self.scale = 1.0 / (max(float(source.square().sum()), detail_floor(content)) + _EPS)

    def detail(self, image: Tensor) -> Tensor:
        """(N, 3, H, W) RGB in 0..1 -> (N, 1, H, W): the Laplacian of the luminance, blurred by a Gaussian of
        STRUCTURE_SIGMA pixels first, so that it marks the edges and lines of the picture rather than pixel noise."""
        luma = torch.tensordot(image.float(), self.luma, dims=([1], [0])).unsqueeze(1)
        # Replicate padding: the border adds no edge of its own, and it works for a frame of any size.
        blurred = F.pad(luma, (self.radius + 1,) * 4, mode="replicate")
        blurred = F.conv2d(F.conv2d(blurred, self.taps.view(1, 1, 1, -1)), self.taps.view(1, 1, -1, 1))
        return F.conv2d(blurred, self.laplacian)

    def forward(self, image: Tensor) -> Tensor:
        error = (self.detail(image) - self.target).square()
        return (error if self.weights is None else error * self.weights).sum() * self.scale


class _GramError(torch.autograd.Function):
    """scale * ||gram(F) - T||^2 in one node, with a one-matmul backward.

    Autograd through `F @ F.T` runs two matmuls (one per operand) and adds the two activation-sized results;
    since G - T is symmetric both are the same product, so the gradient is 4 * scale / n * (G - T) @ F.
    At 256 px this takes a third off the Gram cost, which is the largest cost of an iteration after the
    convolutions themselves.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, features: Tensor,  # type: ignore[override]
                target: SummedTarget, scale: float) -> Tensor:
        # The error is kept summed over positions, as the product makes it: the averages' 1/positions goes into
        # the scalar coefficients instead of a pass over the matrix.
        per_entry = scale / (features.shape[-2] * features.shape[-1]) ** 2
        with torch.autocast(features.device.type, enabled=False):  # the error stays float32 whatever the caller
            diff = _gram_error_sum(features, target)
        # Save the network's own activations: for bf16 that is half the memory of the float32 copy, and the
        # backward product then runs in bf16 like the rest of the network's backward pass.
        ctx.save_for_backward(features, diff)
        ctx.coef = 4.0 * per_entry  # type: ignore[attr-defined]
        flat = diff.view(-1)
        return torch.dot(flat, flat) * per_entry

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        features, diff = ctx.saved_tensors  # type: ignore[attr-defined]
        # Scale the small C x C matrix, not the activation-sized product.
        scaled = (diff * (grad * ctx.coef)).to(features.dtype)  # type: ignore[attr-defined]
        return _times_symmetric(features, scaled), None, None


class StyleLoss(nn.Module):
    """Mean over layers of the relative squared Frobenius error between Gram matrices."""

    def __init__(self, target_grams: dict[str, Tensor]) -> None:
        super().__init__()
        self.layers = tuple(target_grams)
        # Python floats, read once here: a tensor scale would be a host sync per iteration on CUDA. Each layer's
        # share of the mean is in it.
        self.scales = tuple(1.0 / (float(g.float().square().sum()) + _EPS) / len(self.layers)
                            for g in target_grams.values())
        for i, layer in enumerate(self.layers):
            self.register_buffer(f"target{i}", target_grams[layer].detach().float())
        self._summed: dict[tuple[int, int, torch.device], SummedTarget] = {}

    def summed(self, i: int, positions: int) -> SummedTarget:
        """Layer i's target for `positions` positions, made on first use (the buffers may have moved since)."""
        target = getattr(self, f"target{i}")
        key = (i, positions, target.device)
        if key not in self._summed:
            self._summed[key] = summed_target(target, positions)
        return self._summed[key]

    def term(self, layer: str, features: Tensor) -> Tensor:
        """One layer's share of the loss, so that the terms can be taken as the network produces the layers."""
        i = self.layers.index(layer)
        target = self.summed(i, features.shape[-2] * features.shape[-1])
        return _GramError.apply(features, target, self.scales[i])

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return torch.stack([self.term(layer, features[layer]) for layer in self.layers]).sum()


def blend_grams(grams: list[dict[str, Tensor]], weights: list[float]) -> dict[str, Tensor]:
    """Blend several styles by mixing their Gram targets (as neural-style does with -style_blend_weights)."""
    norm = sum(weights)
    return {layer: sum(w / norm * g[layer] for g, w in zip(grams, weights, strict=True)) for layer in grams[0]}


class _TotalVariation(torch.autograd.Function):
    """100 x (mean dx^2 + mean dy^2) over neighbouring pixels, with the gradient written into one image.

    Autograd through the slices zero-fills an image-sized gradient per slice and adds the four up
    (docs/performance.md).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, image: Tensor) -> Tensor:  # type: ignore[override]
        dx = image[..., :, 1:] - image[..., :, :-1]
        dy = image[..., 1:, :] - image[..., :-1, :]
        # x 100: brings the term to the magnitude of the relative content/style errors, so that weights near 1
        # mean something for every term.
        cx, cy = 100.0 / max(1, dx.numel()), 100.0 / max(1, dy.numel())
        ctx.save_for_backward(dx, dy)
        ctx.coefs = (cx, cy)  # type: ignore[attr-defined]
        ctx.shape = image.shape  # type: ignore[attr-defined]
        flat_x, flat_y = dx.reshape(-1), dy.reshape(-1)
        return torch.dot(flat_x, flat_x) * cx + torch.dot(flat_y, flat_y) * cy

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:  # type: ignore[override]
        dx, dy = ctx.saved_tensors  # type: ignore[attr-defined]
        cx, cy = ctx.coefs  # type: ignore[attr-defined]
        grad_x, grad_y = dx * (grad * 2.0 * cx), dy * (grad * 2.0 * cy)
        out = dx.new_zeros(ctx.shape)  # type: ignore[attr-defined]
        out[..., :, 1:] += grad_x
        out[..., :, :-1] -= grad_x
        out[..., 1:, :] += grad_y
        out[..., :-1, :] -= grad_y
        return out


def tv_loss(image: Tensor) -> Tensor:
    """Total variation: 100 x the mean squared difference of neighbouring pixels (image in 0..1)."""
    return _TotalVariation.apply(image)


class TemporalLoss(nn.Module):
    """Ruder et al. 2016: squared error to the previous frame's result brought here along the flow (`warped`),
    where the flow is reliable."""

    def __init__(self, warped: Tensor, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("warped", warped.detach().float())
        self.register_buffer("mask", mask.detach().float())

    def forward(self, image: Tensor) -> Tensor:
        # The mean over the image; x 100 for the same reason as tv_loss: pixels are in 0..1, so raw squared
        # errors are tiny.
        return _SquaredError.apply(image, self.warped, 100.0 / image.numel(), self.mask)
