"""A style distance that owes nothing to the VGG19 the renderer optimizes.

The Gram figures of `vidstyle.metrics` reward a render for matching its own network's statistics. This one is
the sliced Wasserstein distance (SWD) of Karras et al. 2018 ("Progressive Growing of GANs", section 5 and
appendix D): the distributions of 7x7 RGB patches of each Laplacian-pyramid level of two images, compared
along random 1-D projections. It sees colour, contrast and texture at each scale, and nothing else.

Departures from Karras, and why:
- Karras normalizes each patch set per channel by its *own* mean and deviation. Between a render and a painting
  that would hide exactly what makes a washed-out photo look unlike the painting: its colours and its contrast
  in every band. Both sets are instead normalized by the *painting's* per-channel figures at that level, so
  each level still counts in comparable units (what Karras's normalization is for) and one yardstick per
  painting serves the output and the source alike, which `style_gain` needs.
- Patches are drawn without replacement up to a cap (all of them at the small levels), and the sorted
  projections are compared at common quantiles, so sets of different sizes compare directly.
- Positions and directions come from a fixed seed: the figure of an image is repeatable, and two images of one
  size are sampled at the same positions (an image's distance to itself is exactly 0).
"""

from __future__ import annotations

import cv2
import numpy as np

from vidstyle.errors import InputError
from vidstyle.io.images import resize_rgb

PATCH = 7  # Karras's neighbourhood
MIN_SIDE = 16  # the smallest level's short side, as Karras's 16x16 bottom level
MAX_PATCHES = 4096  # per level and image; Karras drew 128 per image over thousands of images
DIRECTIONS = 256  # Karras: 4 x 128 random directions
SEED = 0
_STD_FLOOR = 1e-3  # on 0..1 pixels: a flat channel of a flat painting must not divide by zero


def _as_float(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)


def level_count(*shapes: tuple[int, ...]) -> int:
    """Levels whose short side stays at least MIN_SIDE in every one of the (H, W, ...) shapes."""
    short = min(min(shape[:2]) for shape in shapes)
    count = 1
    while (short + 1) // 2 >= MIN_SIDE:
        short = (short + 1) // 2
        count += 1
    return count


def laplacian_pyramid(rgb: np.ndarray, levels: int) -> list[np.ndarray]:
    """Band-pass levels, finest first, then the low-pass residual (the image's colours at the coarsest scale)."""
    current = _as_float(rgb)
    pyramid = []
    for _ in range(levels - 1):
        smaller = cv2.pyrDown(current)
        pyramid.append(current - cv2.pyrUp(smaller, dstsize=(current.shape[1], current.shape[0])))
        current = smaller
    pyramid.append(current)
    return pyramid


def _positions(height: int, width: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of up to `count` distinct patch corners; all of them when there are fewer."""
    total = (height - PATCH + 1) * (width - PATCH + 1)
    if total <= count:
        return np.arange(total)
    return np.sort(rng.choice(total, size=count, replace=False))


def patches(level: np.ndarray, count: int = MAX_PATCHES, seed: int = SEED) -> np.ndarray:
    """(n, PATCH * PATCH * 3) patches of an (H, W, 3) level, at positions fixed by the seed and the level's size."""
    height, width = level.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(level, (PATCH, PATCH), axis=(0, 1))
    flat = windows.reshape(-1, *windows.shape[2:])
    chosen = _positions(height, width, count, np.random.default_rng(seed))
    return flat[chosen].reshape(len(chosen), -1)


def directions(dims: int, count: int = DIRECTIONS, seed: int = SEED) -> np.ndarray:
    """(dims, count) random unit vectors: uniform on the sphere, as normalized Gaussian draws are."""
    draws = np.random.default_rng(seed + 1).standard_normal((dims, count)).astype(np.float32)
    return draws / np.linalg.norm(draws, axis=0, keepdims=True)


def _at_quantiles(sorted_values: np.ndarray, count: int) -> np.ndarray:
    """Rows of an (n, k) column-sorted array read at `count` evenly spaced quantiles (the empirical inverse CDF)."""
    n = sorted_values.shape[0]
    if n == count:
        return sorted_values
    rows = ((np.arange(count) + 0.5) * n / count).astype(np.int64)
    return sorted_values[rows]


def sliced_wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over directions of the 1-D Wasserstein-1 distance of two sets of sorted projections (columns)."""
    count = max(a.shape[0], b.shape[0])
    return float(np.abs(_at_quantiles(a, count) - _at_quantiles(b, count)).mean())


class StyleDistance:
    """The painting's side of the distance, made once; calling it on an image gives that image's distance.

    `render_size` is the (width, height) of the frames to be scored: the painting is resized so that its long
    side is `scale` x theirs, as the renderer does (vidstyle.stylize.style_size), so patches meet at one scale.
    """

    def __init__(self, style: np.ndarray, render_size: tuple[int, int], scale: float = 1.0) -> None:
        if min(render_size) < PATCH:
            raise InputError(f"frames of {render_size[0]}x{render_size[1]} are too small for the style figure: its "
                             f"patches are {PATCH} pixels across; measure them without the painting")
        self.reference = self._reference(style, render_size, scale)
        self.levels = level_count((render_size[1], render_size[0]), self.reference.shape)
        pyramid = laplacian_pyramid(self.reference, self.levels)
        self.dirs = directions(PATCH * PATCH * 3)
        self.norms = [self._level_norm(level) for level in pyramid]
        self.targets = [self._projected(level, i) for i, level in enumerate(pyramid)]

    @staticmethod
    def _reference(style: np.ndarray, render_size: tuple[int, int], scale: float) -> np.ndarray:
        # Imported here: vidstyle.stylize brings in torch, which scoring does not otherwise need.
        from vidstyle.stylize import style_size

        return resize_rgb(style, style_size(style, render_size, scale))

    @staticmethod
    def _level_norm(level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and deviation over the painting's level (every pixel is in some patch)."""
        pixels = level.reshape(-1, 3)
        return pixels.mean(0), pixels.std(0) + _STD_FLOOR

    def _projected(self, level: np.ndarray, index: int) -> np.ndarray:
        mean, std = self.norms[index]
        normalized = (level - mean) / std
        return np.sort(patches(normalized) @ self.dirs, axis=0)

    def per_level(self, image: np.ndarray) -> list[float]:
        """SWD at each level, finest first; the image must have the render size's aspect (any size of it)."""
        pyramid = laplacian_pyramid(image, self.levels)
        return [sliced_wasserstein(self._projected(level, i), target)
                for i, (level, target) in enumerate(zip(pyramid, self.targets, strict=True))]

    def __call__(self, image: np.ndarray) -> float:
        return float(np.mean(self.per_level(image)))

    def gain(self, output: np.ndarray, source: np.ndarray) -> float:
        """1 - d(output) / d(source): 1 is the painting's own patches, 0 no closer than the source, < 0 further."""
        return 1.0 - self(output) / max(self(source), 1e-12)


def style_distance(image: np.ndarray, style: np.ndarray, scale: float = 1.0) -> float:
    """SWD of an (H, W, 3) image's patches from the painting's, the painting resized as the renderer would."""
    return StyleDistance(style, (image.shape[1], image.shape[0]), scale)(image)


def style_gain(output: np.ndarray, source: np.ndarray, style: np.ndarray, scale: float = 1.0) -> float:
    """How much closer to the painting the render got than its source frame was (see StyleDistance.gain)."""
    return StyleDistance(style, (output.shape[1], output.shape[0]), scale).gain(output, source)
