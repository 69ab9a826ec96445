"""The margin a frame is painted in: its own picture mirrored around it, painted with it and cropped away.

VGG19 pads each convolution's input with zeros, and at a frame's edge that reads as a strong edge of the picture:
optimized against it, every frame came out with a bright or dark line along its four sides. Inside a mirrored
margin the frame's edge is an inner part of the picture to the network; the losses are read at the frame's own
positions, so the frame is weighed as it was without one (docs/performance.md, "The frame's edge").
"""

from __future__ import annotations

import torch
from torch import Tensor

# Pixels on each side. Wide enough to hold the first blocks' reach past the frame's edge, where the line was painted
# (the profile across the edge in docs/performance.md); each one adds to every frame's pixels.
PAINTED_MARGIN = 8


def margin_for(size: tuple[int, int]) -> int:
    """The margin around a frame of (width, height): PAINTED_MARGIN, or less for a picture too small to mirror that
    far (a mirror reaches at most one pixel less than the picture's side, as at a coarse level of a tiny frame)."""
    return max(0, min(PAINTED_MARGIN, min(size) - 1))


def mirrored(image: Tensor, margin: int) -> Tensor:
    """(N, C, H, W) with `margin` pixels of itself mirrored on each side, its edge pixels not repeated (as
    cv2.BORDER_REFLECT_101)."""
    return torch.nn.functional.pad(image, (margin,) * 4, mode="reflect") if margin else image


def cropped(image: Tensor, margin: int) -> Tensor:
    """The frame inside a `margin` (the last two dimensions are height and width)."""
    return image[..., margin:image.shape[-2] - margin, margin:image.shape[-1] - margin] if margin else image


def inside(features: Tensor, layer: str, margin: int) -> Tensor:
    """A VGG layer's activations (reluN_M) at the frame's own positions: block N's layers come after N - 1
    poolings, so `margin` pixels are margin / 2**(N - 1) positions of them (rounded down: a position that straddles
    the frame's edge counts as the frame's)."""
    block = int(layer.removeprefix("relu").split("_")[0])
    return cropped(features, margin >> (block - 1))


def frame_mask(padded: Tensor, margin: int) -> Tensor:
    """(1, 1, H, W) True over the frame of a `padded` image, False over its margin."""
    mask = torch.zeros(1, 1, *padded.shape[-2:], dtype=torch.bool, device=padded.device)
    cropped(mask, margin).fill_(True)
    return mask
