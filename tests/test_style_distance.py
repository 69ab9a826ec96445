"""The network-free style distance (sliced Wasserstein distance of Laplacian-pyramid patches) on real media."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.conftest import shared_asset
from vidstyle.assets import builtin_style, demo_clip
from vidstyle.io.decode import read_frames
from vidstyle.io.images import read_image, resize_rgb
from vidstyle.io.probe import probe_video, size_to_fit
from vidstyle.style_distance import StyleDistance, laplacian_pyramid, level_count, style_distance, style_gain

SIZE = (192, 108)  # (width, height) of the demo clip's frames here: three pyramid levels


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Frames 0 and 119 of the bundled Big Buck Bunny clip: two real, different photographs of one size."""
    found = [f.rgb.copy() for _, f in zip(range(120), read_frames(probe_video(demo_clip()), SIZE), strict=False)]
    return [found[0], found[-1]]


@pytest.fixture(scope="module")
def starry() -> np.ndarray:
    path = builtin_style("starry-night")
    assert path is not None
    return read_image(path)


def test_pyramid_levels_stop_at_sixteen_pixels() -> None:
    assert level_count((108, 192, 3)) == 3  # 108, 54, 27 (14 would be under 16)
    assert level_count((108, 192, 3), (40, 400, 3)) == 2
    levels = laplacian_pyramid(np.full((64, 96, 3), 200, np.uint8), 3)
    assert [lv.shape[:2] for lv in levels] == [(64, 96), (32, 48), (16, 24)]
    assert np.abs(levels[0]).max() < 1e-5 and np.allclose(levels[-1], 200 / 255)  # flat: no band-pass energy


def test_identical_images_are_at_distance_zero(frames: list[np.ndarray], starry: np.ndarray) -> None:
    assert style_distance(frames[0], frames[0]) == 0.0
    metric = StyleDistance(starry, SIZE)
    assert metric(metric.reference) == 0.0
    assert metric(frames[0]) > 0.1


def test_the_painting_itself_gains_one_against_a_photo(frames: list[np.ndarray], starry: np.ndarray) -> None:
    metric = StyleDistance(starry, SIZE)
    assert metric.gain(metric.reference, frames[0]) == 1.0
    assert metric.gain(frames[0], frames[0]) == 0.0


def test_the_painting_is_scaled_as_the_renderer_scales_it(starry: np.ndarray) -> None:
    assert max(StyleDistance(starry, SIZE).reference.shape[:2]) == 192
    assert max(StyleDistance(starry, SIZE, scale=0.5).reference.shape[:2]) == 96


def test_a_blurred_photo_does_not_gain(frames: list[np.ndarray], starry: np.ndarray) -> None:
    """Blur takes away fine texture, which a painting of brush strokes has more of than a photo."""
    for frame in frames:
        blurred = cv2.GaussianBlur(frame, (0, 0), 2)
        assert style_gain(blurred, frame, starry) < 0


def test_a_greyed_or_washed_out_photo_does_not_gain_on_a_colourful_painting() -> None:
    """The painting's own colour statistics normalize both sets, so lost colour or contrast counts against."""
    scream = read_image(shared_asset("the_scream_munch.jpg"))
    for name in ("astronaut.png", "coffee.png"):
        photo = read_image(shared_asset(name))
        photo = resize_rgb(photo, size_to_fit(photo.shape[1], photo.shape[0], 128))
        grey = np.repeat(photo.mean(2, keepdims=True), 3, axis=2).round().astype(np.uint8)
        assert style_gain(grey, photo, scream) < 0


def test_a_colour_transfer_from_the_painting_gains(frames: list[np.ndarray], starry: np.ndarray) -> None:
    """Reinhard et al. 2001 in RGB: the photo's per-channel mean and deviation set to the painting's."""
    metric = StyleDistance(starry, SIZE)
    pixels = metric.reference.reshape(-1, 3).astype(np.float32)
    for frame in frames:
        own = frame.reshape(-1, 3).astype(np.float32)
        moved = (frame - own.mean(0)) / (own.std(0) + 1e-6) * pixels.std(0) + pixels.mean(0)
        assert metric.gain(np.clip(moved, 0, 255).round().astype(np.uint8), frame) > 0.1


def test_distance_is_repeatable_and_nearly_symmetric(frames: list[np.ndarray]) -> None:
    a, b = frames
    forward = StyleDistance(b, SIZE)(a)
    assert StyleDistance(b, SIZE)(a) == forward  # a fixed seed: the same figure every time
    backward = StyleDistance(a, SIZE)(b)
    # Each direction is measured in the units of its reference's statistics, so only nearly symmetric.
    assert 0.5 < forward / backward < 2.0
