"""Long-term consistency (Ruder et al. 2018, section 3.2): the temporal loss also against frames further back,
each only where the closer ones do not see, so a region hidden and shown again gets its old strokes back."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import decoded, ffmpeg

import vidstyle
from vidstyle.assets import demo_clip
from vidstyle.config import make_config
from vidstyle.events import FrameStarted
from vidstyle.io.decode import Frame, read_frames
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video
from vidstyle.sequence import long_term_masks, reach_offsets, stylize_sequence
from vidstyle.stylize import Stylizer

BOX = STEP = 8  # the occluder's width and its motion a frame, in pixels: each column is hidden for one frame


def test_reach_looks_back_at_doubling_distances() -> None:
    assert reach_offsets(1) == ()
    assert reach_offsets(4) == (2, 4)
    assert reach_offsets(12) == (2, 4, 8)


def test_a_further_frame_counts_only_where_the_closer_ones_do_not_see() -> None:
    nearest = np.zeros((4, 8), np.float32)
    nearest[:, :4] = 1.0  # t-1 sees the left half
    two_back = np.ones((4, 8), np.float32)  # t-2 sees everything
    four_back = np.ones((4, 8), np.float32)
    own_two, own_four = long_term_masks(nearest, [two_back, four_back])
    assert (own_two[:, :4] == 0).all() and (own_two[:, 4:] == 1).all()
    assert (own_four == 0).all(), "t-4 adds nothing that t-1 and t-2 already cover"
    partial = np.full((4, 8), 0.25, np.float32)
    (own,) = long_term_masks(partial, [np.full((4, 8), 0.75, np.float32)])
    assert np.allclose(own, 0.5), "soft masks: only the reliability the closer frame lacks"


def _occluded_frames(background: np.ndarray, count: int) -> list[Frame]:
    """A still scene with a dark post sliding across it, as a passer-by crosses a fixed camera's view."""
    frames = []
    for index in range(count):
        rgb = background.copy()
        rgb[:, STEP * index:STEP * index + BOX] = 20
        frames.append(Frame(index, rgb))
    return frames


def _drift(outputs: list[np.ndarray]) -> tuple[float, float]:
    """How far the strokes of the region the post uncovered are from the same region's first painting: at the
    moment each strip is uncovered, and at the end over everything the post has passed."""
    first, last = outputs[0].astype(float), len(outputs) - 1
    revealed = [np.abs(outputs[shown][:, STEP * (shown - 1):STEP * shown] - first[:, STEP * (shown - 1):STEP * shown])
                .mean() for shown in range(2, len(outputs))]
    passed = slice(BOX, STEP * last - STEP // 2)
    return float(np.mean(revealed)), float(np.abs(outputs[last][:, passed] - first[:, passed]).mean())


def test_a_revealed_region_comes_back_closer_to_its_old_strokes(starry: Path) -> None:
    background = next(read_frames(probe_video(demo_clip()), (128, 72))).rgb.copy()
    frames = _occluded_frames(background, 12)
    drift = {}
    for reach in (1, 8):
        config = make_config("fast", size=128, iters=6, first_iters=30, flow="dis", temporal_weight=10.0,
                             temporal_reach=reach, device="cpu", precision="fp32")
        drift[reach] = _drift([r.rgb for r in stylize_sequence(frames, Stylizer(config, [read_image(starry)]))])
    assert drift[8][0] < 0.75 * drift[1][0], f"as each strip is uncovered: {drift}"
    assert drift[8][1] < 0.75 * drift[1][1], f"over the whole path, at the end: {drift}"


@pytest.fixture(scope="module")
def occluded_clip(images, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("occluded")
    for frame in _occluded_frames(np.ascontiguousarray(images[0]), 10):
        (folder / f"{frame.index:03d}.rgb").write_bytes(frame.rgb.tobytes())
    clip = folder / "occluded.mp4"
    raw = folder / "all.rgb"
    raw.write_bytes(b"".join((folder / f"{i:03d}.rgb").read_bytes() for i in range(10)))
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x36", "-r", "25", "-i", str(raw), "-c:v", "libx264",
           "-qp", "0", "-pix_fmt", "yuv444p", str(clip))
    return clip


def test_a_resumed_render_with_a_long_reach_makes_the_same_frames(occluded_clip: Path, starry: Path,
                                                                  tmp_path: Path) -> None:
    config = make_config("fast", size=64, iters=3, first_iters=10, flow="dis", temporal_weight=10.0,
                         temporal_reach=4, device="cpu", precision="fp32", keep_frames=True)
    whole = tmp_path / "whole"
    vidstyle.render(occluded_clip, [starry], tmp_path / "whole.mp4", config, workdir=whole)
    resumed = tmp_path / "resumed"
    shutil.copytree(whole, resumed)
    for i in range(6, 10):
        (resumed / "frames" / f"{i:07d}.png").unlink()
    events: list[object] = []
    vidstyle.render(occluded_clip, [starry], tmp_path / "resumed.mp4", config, workdir=resumed,
                    on_event=events.append)
    assert [e.index for e in events if isinstance(e, FrameStarted)] == [6, 7, 8, 9]
    for i in range(6, 10):
        name = f"{i:07d}.png"
        assert np.array_equal(read_image(resumed / "frames" / name), read_image(whole / "frames" / name)), \
            f"frame {i} of the resumed render differs: it needs frames {i - 4}..{i - 1} as the whole render had them"
    assert len(decoded(tmp_path / "resumed.mp4")) == 10
