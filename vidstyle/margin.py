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


def layer_margin(layer: str, margin: int) -> int:
    """How many positions of a VGG layer (reluN_M) a margin of `margin` pixels is: block N's layers come after N - 1
    poolings, so margin / 2**(N - 1), rounded down (a position that straddles the frame's edge is the frame's)."""
    return margin >> (int(layer.removeprefix("relu").split("_")[0]) - 1)


def inside(features: Tensor, layer: str, margin: int) -> Tensor:
    """A VGG layer's activations at the frame's own positions: its margin's cropped away."""
    return cropped(features, layer_margin(layer, margin))


class FramePositions:
    """A frame's own positions in each VGG layer of the frame painted inside a margin, as masks.

    The losses that an iteration takes read the activations multiplied by the mask (zero on the margin's
    positions) rather than cropped: a crop of NHWC activations is no whole NHWC tensor, and the Gram's products and
    their gradients take slow, copying paths on one (losses._rows); a product stays NHWC, and its gradient is one
    more product (bench.py [m]).
    """

    def __init__(self, margin: int) -> None:
        self.margin = margin
        self._masks: dict[tuple[str, int, int], Tensor] = {}

    def masked(self, features: Tensor, layer: str) -> tuple[Tensor, int]:
        """`features` zero outside the frame's positions, and how many positions the frame has."""
        cut = layer_margin(layer, self.margin)
        height, width = features.shape[-2:]
        positions = (height - 2 * cut) * (width - 2 * cut)
        if not cut:
            return features, positions
        key = (layer, height, width)
        if key not in self._masks:
            mask = features.new_zeros(1, 1, height, width)
            cropped(mask, cut).fill_(1)
            self._masks[key] = mask
        return features * self._masks[key], positions


def frame_mask(padded: Tensor, margin: int) -> Tensor:
    """(1, 1, H, W) True over the frame of a `padded` image, False over its margin."""
    mask = torch.zeros(1, 1, *padded.shape[-2:], dtype=torch.bool, device=padded.device)
    cropped(mask, margin).fill_(True)
    return mask
