"""The painting's palette as the start of a fresh frame: the source recoloured so that its colours have the
painting's mean and covariance (a linear colour transfer, as in Gatys et al. 2017, "Controlling Perceptual Factors
in Neural Style Transfer", section 5).

Starting from the source as it is, the optimization spends most of a fresh frame's iterations moving colours,
which the Gram loss sees only weakly, and a render can end as a washed-out photo; the recoloured source already
holds the painting's colours and every edge of the source (a linear map of the colours moves no edge), so the
iterations go to brush strokes (scripts/bench_style.py, docs/performance.md "Style strength").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Floor of the source's colour variances (in 0..255 levels squared) before its covariance is inverted: a nearly flat
# source (a grey sky, a dark frame) would otherwise have its noise blown up to the painting's contrast.
_MIN_VARIANCE = 25.0


@dataclass(frozen=True)
class Palette:
    """Mean (3,) and covariance (3, 3) of RGB colours in 0..255 levels."""

    mean: np.ndarray
    covariance: np.ndarray

    @staticmethod
    def of(images: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> Palette:
        """The palette of one painting, or of a blend of several (the mixture of their colours by `weights`)."""
        shares = np.asarray(weights if weights else [1.0] * len(images), dtype=np.float64)
        shares = shares / shares.sum()
        means, seconds = [], []
        for image in images:
            pixels = image.reshape(-1, 3).astype(np.float64)
            means.append(pixels.mean(axis=0))
            seconds.append(pixels.T @ pixels / len(pixels))  # E[x x^T]
        mean = np.einsum("k,ki->i", shares, np.array(means))
        second = np.einsum("k,kij->ij", shares, np.array(seconds))
        return Palette(mean, second - np.outer(mean, mean))

    def recolour(self, rgb: np.ndarray) -> np.ndarray:
        """`rgb` (uint8) with this palette: its colours whitened by their own covariance, then coloured by this one."""
        pixels = rgb.reshape(-1, 3).astype(np.float64)
        mean = pixels.mean(axis=0)
        centred = pixels - mean
        own = centred.T @ centred / max(1, len(pixels) - 1)
        transform = _sqrtm(self.covariance, 0.5) @ _sqrtm(own, -0.5, _MIN_VARIANCE)
        out = centred @ transform.T + self.mean
        return np.clip(out, 0, 255).round().astype(np.uint8).reshape(rgb.shape)


def _sqrtm(matrix: np.ndarray, power: float, floor: float = 0.0) -> np.ndarray:
    """A symmetric positive semi-definite matrix to the `power` (+-1/2), its eigenvalues floored at `floor`."""
    values, vectors = np.linalg.eigh(matrix)
    values = np.maximum(values, max(floor, 1e-9)) ** power
    return (vectors * values) @ vectors.T
