"""The written video darkens where its source fades to black, and nowhere else; a resume darkens the same frames."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import FADING_CLIP

import vidstyle
from vidstyle.checkpoint import Manifest
from vidstyle.cli import main
from vidstyle.config import make_config
from vidstyle.errors import Interrupted
from vidstyle.events import Event, FrameSaved, RenderStarted
from vidstyle.fades import BLACK, darken, frame_gains, mean_luma
from vidstyle.io.decode import read_frames
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video

FRAMES, FADE_START, FADE_FRAMES, BLACK_FRAMES = FADING_CLIP


def _config(**overrides: object) -> vidstyle.Config:
    return make_config(size=64, iters=3, first_iters=4, coarse_levels=0, device="cpu", **overrides)


def _luma(path: Path) -> list[float]:
    return [mean_luma(frame.rgb) for frame in read_frames(probe_video(path), (64, 36))]


def _frames(path: Path) -> np.ndarray:
    return np.stack([frame.rgb for frame in read_frames(probe_video(path), (64, 36))]).astype(np.int16)


def test_a_fade_to_black_is_written_dark_and_the_rest_as_painted(fading_clip: Path, starry: Path,
                                                                 tmp_path: Path) -> None:
    events: list[Event] = []
    followed = vidstyle.render(fading_clip, [starry], tmp_path / "followed.mp4", _config(keep_frames=True),
                               on_event=events.append)
    assert main(["render", str(fading_clip), "--style", str(starry), "-o", str(tmp_path / "painted.mp4"),
                 "--size", "64", "--iters", "3", "--first-iters", "4", "--coarse-levels", "0", "--device", "cpu",
                 "--no-follow-fades", "--keep-frames", "--quiet"]) == 0
    source, dark, bright = _luma(fading_clip), _luma(followed), _luma(tmp_path / "painted.mp4")
    assert len(source) == len(dark) == len(bright) == FRAMES
    # Without following the fade, the black tail is a painting as bright as the frames before it: what was wrong.
    assert min(bright[-BLACK_FRAMES:]) > 0.5 * np.mean(bright[:FADE_START])
    # Followed, it is black, and the fade's frames darken with the source's; the frames before it are untouched.
    assert max(dark[-BLACK_FRAMES:]) < 3
    fade = slice(FADE_START, FADE_START + FADE_FRAMES)
    assert all(d <= b + 1 for d, b in zip(dark[fade], bright[fade], strict=True))
    assert dark[FADE_START + FADE_FRAMES - 1] < 0.5 * bright[FADE_START + FADE_FRAMES - 1]
    # The same painted frames (following a fade is the writer's, not the painter's), and those before the fade
    # written as bright: H.264 codes them beside different later frames, which moves single pixels by a level or two
    # (more where the painting has more fine strokes), not a frame's brightness.
    for name in (f"{i:07d}.png" for i in range(FRAMES)):
        kept = [read_image(tmp_path / f"{video}.mp4.vidstyle-work" / "frames" / name)
                for video in ("followed", "painted")]
        assert np.array_equal(*kept), name
    assert np.allclose(dark[:FADE_START], bright[:FADE_START], atol=0.5), (dark, bright)
    (started,) = [e for e in events if isinstance(e, RenderStarted)]
    assert any("darkened with the source" in note for note in started.notes), started.notes
    # Each saved frame tells the factor the video darkens it by (a service's thumbnail shows the frame as written).
    told = {e.index: e.gain for e in events if isinstance(e, FrameSaved)}
    assert sorted(told) == list(range(FRAMES)) and all(told[i] == 1 for i in range(FADE_START))
    assert all(told[i] < 0.05 for i in range(FRAMES - BLACK_FRAMES, FRAMES))


def test_a_resumed_render_darkens_the_same_frames_also_from_an_older_work_directory(
        fading_clip: Path, starry: Path, tmp_path: Path) -> None:
    whole = vidstyle.render(fading_clip, [starry], tmp_path / "whole.mp4", _config())
    stop = threading.Event()

    def stop_after_a_few(event: Event) -> None:
        if isinstance(event, FrameSaved) and event.index == 6:
            stop.set()

    out = tmp_path / "resumed.mp4"
    with pytest.raises(Interrupted):
        vidstyle.render(fading_clip, [starry], out, _config(), on_event=stop_after_a_few, stop=stop)
    manifest_path = out.with_name(out.name + ".vidstyle-work") / "manifest.json"
    data = json.loads(manifest_path.read_text())
    assert len(data["brightness"]) == FRAMES and max(data["brightness"][-BLACK_FRAMES:]) < 1
    del data["brightness"]  # as a work directory of a version that did not record it
    manifest_path.write_text(json.dumps(data))
    vidstyle.render(fading_clip, [starry], out, _config())
    assert np.array_equal(_frames(out), _frames(whole))


def test_a_preview_shows_a_faded_frame_as_the_render_writes_it(fading_clip: Path, starry: Path,
                                                               tmp_path: Path) -> None:
    at = [(FRAMES - 2) / 25]  # a frame of the black tail
    sheets = {follow: vidstyle.preview.preview(fading_clip, [starry], tmp_path / f"{follow}.png",
                                               _config(follow_fades=follow), at=at).sheet for follow in (True, False)}
    tiles = {follow: read_image(path)[-36:] for follow, path in sheets.items()}  # the stylized row, under its band
    assert tiles[True].mean() < 3 < 20 < tiles[False].mean(), {k: v.mean() for k, v in tiles.items()}


def _fade_out(peak: float, frames: int) -> list[float]:
    return [peak * (frames - i) / (frames + 1) for i in range(frames)]


def test_a_fade_is_darkened_by_its_share_of_the_picture_it_fades_from_and_black_stays_black() -> None:
    brightness = [100.0, 99.0, 100.5, 100.0] * 5 + _fade_out(100.0, 7) + [0.0] * 6
    gains = frame_gains(brightness)
    reference = 0.95 * 100.5  # the run's brightest frame, less what counts as the source's own jitter
    assert set(gains) == set(range(20, 33))  # the steady picture before the fade is written as painted
    assert [gains[i] for i in range(20, 27)] == pytest.approx([b / reference for b in brightness[20:27]])
    assert all(gains[i] == 0 for i in range(27, 33))
    # `first`: the brightness of a render of part of the video is counted from its first frame.
    assert frame_gains(brightness, 40) == {i + 40: gain for i, gain in gains.items()}


def test_a_cut_to_black_darkens_only_the_black_frames() -> None:
    assert frame_gains([100.0] * 5 + [3.0] * 3 + [100.0] * 5) == pytest.approx({i: 3.0 / BLACK for i in (5, 6, 7)})
    # A cut from another picture into a fade: the fade is measured against the picture that fades, not across the
    # cut, even where that picture lasts too short a time to settle.
    gains = frame_gains([200.0] * 5 + [60.0] * 2 + [45.0, 30.0, 15.0, 0.0], 0, cuts=[5])
    assert gains == pytest.approx({7: 45 / 57, 8: 30 / 57, 9: 15 / 57, 10: 0.0})


def test_a_dim_scene_after_a_dip_to_black_is_written_as_painted() -> None:
    # Fade-out from a bright scene, black, fade-in to a dim one: the fade-in is measured against the dim scene.
    brightness = [120.0] * 10 + _fade_out(120.0, 5) + [0.0] * 4 + [8.0, 16.0, 24.0, 32.0] + [40.0] * 30
    gains = frame_gains(brightness)
    assert max(gains) == 22 and all(i not in gains for i in range(23, len(brightness)))
    assert [gains[i] for i in (20, 21, 22)] == pytest.approx([16 / 38, 24 / 38, 32 / 38])
    # The black frame where the fade-in begins is measured between the two fades' pictures, nearer the second.
    assert 8 / 114 < gains[19] < 8 / 38


def test_a_fast_fade_in_is_followed_and_the_picture_it_reaches_is_left_alone_as_it_drifts() -> None:
    brightness = [0.0] * 3 + [22.0, 46.0, 70.0, 93.0] + [93.0 - 0.3 * i for i in range(40)]
    gains = frame_gains(brightness)
    assert gains == pytest.approx({0: 0.0, 1: 0.0, 2: 0.0, 3: 22 / 88.35, 4: 46 / 88.35, 5: 70 / 88.35})


@pytest.mark.parametrize(("name", "brightness"), [
    ("a slow fade-out ending the clip", [100.0] * 10 + [100 * (1 - k / 300) for k in range(301)] + [0.0] * 10),
    ("a short leader and a fade-in", [0.0, 0.0, 0.0, *range(2, 60, 2), *[60.0] * 10]),
    ("a fast fade whose last frame is just above black", [218.0, 218.0, 218.0, 178.0, 138.0, 98.0, 58.0, 18.0, 0.0]),
    ("a fade to a black floor of 10", [200.0, 200.0, 170.0, 140.0, 110.0, 80.0, 50.0, 20.0, *[10.0] * 6]),
    ("a fade cut away before it is black", [100.0] * 3 + [100.0 - 8 * k for k in range(1, 12)] + [9.0, 6.0, 120.0]),
])
def test_the_factor_follows_the_source_through_a_fade_without_jumps(name: str, brightness: list[float]) -> None:
    gains = frame_gains(brightness)
    factors = [gains.get(i, 1.0) for i in range(len(brightness))]
    # Where the source darkens or holds, so does the written frame; where it brightens, the frame does too.
    for i in range(1, len(brightness)):
        if abs(brightness[i] - brightness[i - 1]) < 1e-9:
            assert factors[i] == pytest.approx(factors[i - 1], abs=0.05), (name, i, factors)
        elif brightness[i] < brightness[i - 1] and brightness[i] < BLACK * 4:
            assert factors[i] <= factors[i - 1] + 1e-9, (name, i, factors)
        elif brightness[i] > brightness[i - 1] and factors[i - 1] < 1:
            assert factors[i] >= factors[i - 1] - 1e-9, (name, i, factors)
    assert min(factors) < 0.2, (name, factors)  # the black frames are written near black
    # The fade is found: its frames next to black are darkened too, not left at the painting's brightness.
    beside_black = [i for i in range(len(brightness)) if BLACK <= brightness[i] < 4 * BLACK
                    and any(0 <= j < len(brightness) and brightness[j] < BLACK for j in (i - 1, i + 1))]
    assert beside_black and all(factors[i] < 0.5 for i in beside_black), (name, factors)


@pytest.mark.parametrize("brightness", [
    [50.0] * 10 + [150.0] * 5 + [50.0] * 10,  # a flash
    [160.0 - 4 * i for i in range(30)],  # a pan into shade
    [28.0, 24.0, 30.0, 26.0] * 10,  # dim footage, or letterboxed: bars in the mean
], ids=["flash", "pan", "dim"])
def test_no_frame_is_darkened_where_the_source_never_reaches_black(brightness: list[float]) -> None:
    assert frame_gains(brightness) == {}


def test_a_dark_scene_about_black_follows_the_source_without_jumps() -> None:
    brightness = [17.0, 15.0, 18.0, 14.0, 17.0]
    assert frame_gains(brightness) == pytest.approx({1: 15 / BLACK, 3: 14 / BLACK})


def test_darken_multiplies_and_mean_luma_weighs_the_channels() -> None:
    rgb = np.full((2, 2, 3), 200, np.uint8)
    assert np.array_equal(darken(rgb, 0.25), np.full((2, 2, 3), 50, np.uint8))
    assert darken(rgb, 1.0) is rgb  # a frame no fade touches is written as it is, uncopied
    assert mean_luma(np.zeros((4, 4, 3), np.uint8)) == 0
    assert mean_luma(np.full((4, 4, 3), 255, np.uint8)) == pytest.approx(255, abs=0.01)
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert mean_luma(red) == pytest.approx(0.299 * 255, abs=0.01)


def test_the_manifest_keeps_the_brightness_and_refuses_a_damaged_one() -> None:
    manifest = Manifest("1", "digest", ("s",), (64, 36), 3, {}, ((0, 3, True),), brightness=(0.0, 12.5, 255.0))
    assert Manifest.from_json(manifest.to_json()) == manifest
    data = json.loads(manifest.to_json())
    del data["brightness"]
    assert Manifest.from_json(json.dumps(data)).brightness == ()
    for bad in ("dark", [1.0, "2"], [300.0], [-1], [True], [1.0] * 4, [float("nan")]):
        data["brightness"] = bad
        with pytest.raises(ValueError, match="brightness"):
            Manifest.from_json(json.dumps(data))
