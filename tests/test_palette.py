"""How a fresh frame is painted: from the source recoloured to the painting's palette (vidstyle.palette), with the
structure term, coarse-to-fine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import shared_asset

from vidstyle.config import make_config
from vidstyle.io.images import read_image
from vidstyle.io.probe import size_to_fit
from vidstyle.metrics import edge_correlation
from vidstyle.palette import Palette
from vidstyle.style_distance import StyleDistance
from vidstyle.stylize import Stylizer, resize_rgb


def _statistics(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = rgb.reshape(-1, 3).astype(np.float64)
    return pixels.mean(axis=0), np.cov(pixels.T)


def test_the_recoloured_source_has_the_paintings_colours_and_every_edge(images) -> None:
    frame, painting = images
    palette = Palette.of([painting])
    recoloured = palette.recolour(frame)
    mean, covariance = _statistics(recoloured)
    want_mean, want_covariance = _statistics(painting)
    assert np.abs(mean - want_mean).max() < 2.0
    # Within 15 %: colours pushed past 0 or 255 are clipped, which narrows the spread a little.
    assert np.abs(covariance - want_covariance).max() < 0.15 * np.abs(want_covariance).max()
    assert edge_correlation(recoloured, frame) > 0.9, "a linear map of the colours moves no edge"


def test_a_nearly_flat_source_is_not_blown_up_to_the_paintings_contrast(images) -> None:
    _, painting = images
    flat = np.clip(128 + np.random.default_rng(0).normal(0, 0.5, (36, 64, 3)), 0, 255).astype(np.uint8)
    recoloured = Palette.of([painting]).recolour(flat)
    spread = recoloured.reshape(-1, 3).std(axis=0).max()  # per channel: the mean colour itself has changed
    assert spread < 0.2 * painting.reshape(-1, 3).std(axis=0).min()


def test_a_blend_of_paintings_has_the_mixture_of_their_colours(images) -> None:
    _, painting = images
    dark = (painting // 4).astype(np.uint8)
    blend = Palette.of([painting, dark], [3.0, 1.0])
    both = np.concatenate([painting.reshape(-1, 3)] * 3 + [dark.reshape(-1, 3)])
    mean, covariance = _statistics(both)
    assert np.allclose(blend.mean, mean, atol=1e-6) and np.allclose(blend.covariance, covariance, rtol=1e-3)


def test_a_fresh_frame_starts_from_the_palette_unless_the_colours_are_kept(images) -> None:
    frame, painting = images
    settings = dict(size=64, device="cpu", precision="fp32")
    start = Stylizer(make_config("fast", **settings), [painting]).stylize_fresh(frame, 1).rgb  # 1: no step
    assert np.array_equal(start, Palette.of([painting]).recolour(frame))
    kept = Stylizer(make_config("fast", preserve_colors=True, **settings), [painting])
    plain = Stylizer(make_config("fast", palette_start=False, **settings), [painting])
    assert kept.palette is None and np.array_equal(plain.stylize_fresh(frame, 1).rgb, frame)


def _gain_and_edges(name: str, size: int, style: Path, **settings: object) -> tuple[float, float]:
    """(network-free style gain, edge correlation) of a real still of ../shared painted fresh for 40 iterations at
    `size`, the balanced preset in fp32 with `settings`."""
    still = read_image(shared_asset(name))
    still = resize_rgb(still, size_to_fit(still.shape[1], still.shape[0], size))
    painting = read_image(style)
    config = make_config("balanced", size=size, device="cpu", precision="fp32", **settings)
    out = Stylizer(config, [painting]).stylize_fresh(still, 40).rgb
    distance = StyleDistance(painting, (still.shape[1], still.shape[0]))
    return 1 - distance(out) / distance(still), edge_correlation(out, still)


def test_the_palette_start_paints_more_strongly_and_keeps_the_edges(starry: Path) -> None:
    """A real still at 96 px: the same iterations take it closer to the painting (network-free figure)."""
    found = {start: _gain_and_edges("astronaut.png", 96, starry, palette_start=start) for start in (False, True)}
    assert found[True][0] > found[False][0] + 0.03, found
    assert found[True][1] > found[False][1] - 0.03, found


def test_the_structure_loss_keeps_the_edges_under_strong_style(starry: Path) -> None:
    """A real still at 96 px painted with a light content weight: the structure term keeps more of its edges at a
    style gain close to the one it has without."""
    found = {weight: _gain_and_edges("astronaut.png", 96, starry, content_weight=0.125, structure_weight=weight)
             for weight in (0.0, 0.25)}
    assert found[0.25][1] > found[0.0][1] + 0.05, found
    assert found[0.25][0] > found[0.0][0] - 0.05, found


def test_coarse_to_fine_paints_more_of_the_painting() -> None:
    """A real still at 128 px: painted at half its size first (the default, whose 32-px level is skipped), the same
    iterations take it closer to the painting, and it keeps most of its edges. The Scream's bands of sky are the
    kind of large shape a full-size start does not lay out (how much coarse-to-fine adds depends on the picture and
    the painting: docs/performance.md, "Coarse-to-fine")."""
    scream = shared_asset("the_scream_munch.jpg")
    found = {levels: _gain_and_edges("coffee.png", 128, scream, coarse_levels=levels) for levels in (0, 2)}
    assert found[2][0] > found[0][0] + 0.015, found
    assert found[2][1] > found[0][1] - 0.08, found
