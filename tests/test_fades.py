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
from vidstyle.fades import DARK, DARK_SHARE, darken, frame_gains, mean_luma
from vidstyle.io.decode import read_frames
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video
from vidstyle.plan import Segment

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
    followed = vidstyle.render(fading_clip, [starry], tmp_path / "followed.mp4", _config(), on_event=events.append)
    assert main(["render", str(fading_clip), "--style", str(starry), "-o", str(tmp_path / "painted.mp4"),
                 "--size", "64", "--iters", "3", "--first-iters", "4", "--coarse-levels", "0", "--device", "cpu",
                 "--no-follow-fades", "--quiet"]) == 0
    source, dark, bright = _luma(fading_clip), _luma(followed), _luma(tmp_path / "painted.mp4")
    assert len(source) == len(dark) == len(bright) == FRAMES
    # Without following the fade, the black tail is a painting as bright as the frames before it: what was wrong.
    assert min(bright[-BLACK_FRAMES:]) > 0.5 * np.mean(bright[:FADE_START])
    # Followed, it is black, and the fade's frames darken with the source's; the frames before it are untouched.
    assert max(dark[-BLACK_FRAMES:]) < 3
    fade = slice(FADE_START, FADE_START + FADE_FRAMES)
    assert all(d <= b + 1 for d, b in zip(dark[fade], bright[fade], strict=True))
    assert dark[FADE_START + FADE_FRAMES - 1] < 0.5 * bright[FADE_START + FADE_FRAMES - 1]
    # The same painted frames before the fade, up to H.264's coding of them beside different later frames (its
    # rounding moves single pixels by a level or two, not a frame's brightness).
    before = np.abs(_frames(followed)[:FADE_START] - _frames(tmp_path / "painted.mp4")[:FADE_START])
    assert before.mean() < 2, before.mean()
    assert np.allclose(dark[:FADE_START], bright[:FADE_START], atol=0.5), (dark, bright)
    (started,) = [e for e in events if isinstance(e, RenderStarted)]
    assert any("darkened with the source" in note for note in started.notes), started.notes


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


def test_gains_follow_the_source_under_half_its_shots_usual_brightness() -> None:
    bright = [100.0] * 20
    fade = [100.0 - 10 * i for i in range(1, 11)]  # 90 .. 0
    gains = frame_gains(bright + fade, [Segment(0, 30, True)])
    assert set(gains) == {i for i, luma in enumerate(bright + fade) if luma < DARK_SHARE * 100}
    assert gains == pytest.approx({i: (bright + fade)[i] / 50 for i in gains})
    # A shot that is all black stays dark, alone (a leader) or after a cut that a fade's end makes (measured then
    # against the shot before it); a dim one is painted as usual, after a dip to black as well.
    assert frame_gains([2.0] * 5, [Segment(0, 5, True)]) == pytest.approx({i: 2.0 / DARK for i in range(5)})
    gains = frame_gains([100.0] * 5 + [2.0] * 5 + [DARK + 8] * 5, [Segment(0, 5, True), Segment(5, 10, True),
                                                                    Segment(10, 15, True)])
    assert gains == pytest.approx({i: 2.0 / 50 for i in range(5, 10)})


def test_a_fade_cut_into_pieces_at_its_faint_frames_has_the_reference_of_the_shot_it_reaches() -> None:
    # A fade-in from black, found as cuts at its first two faint frames (7 and 8), as the colour test finds them.
    brightness = [0.0] * 7 + [14.0, 30.0, 46.0, 62.0, 78.0, 93.0] + [180.0] * 20
    segments = [Segment(0, 7, True), Segment(7, 8, True), Segment(8, 33, True)]
    gains = frame_gains(brightness, segments)
    assert sorted(gains) == list(range(12))
    assert [gains[i] for i in range(7, 12)] == pytest.approx([b / 90 for b in brightness[7:12]])
    # A dim shot beside a bright one is not a fade: each keeps its own reference, and neither is darkened.
    assert frame_gains([180.0] * 5 + [40.0] * 5, [Segment(0, 5, True), Segment(5, 10, True)]) == {}


def test_a_shot_split_in_chunks_has_one_reference_and_brightness_from_the_plans_first_frame() -> None:
    # Frames 40-59 of a render of part of the video, its shot in two chunks: the fade's frames are measured against
    # the whole shot, not against the second chunk alone (which would leave them as painted).
    segments = [Segment(40, 50, True), Segment(50, 60, False)]
    brightness = [120.0] * 10 + [40.0] * 10
    assert frame_gains(brightness, segments) == pytest.approx({i: 40 / 60 for i in range(50, 60)})
    assert frame_gains(brightness[:12], segments) == pytest.approx({50: 40 / 60, 51: 40 / 60})  # the rest unknown


def test_darken_multiplies_and_mean_luma_weighs_the_channels() -> None:
    rgb = np.full((2, 2, 3), 200, np.uint8)
    assert np.array_equal(darken(rgb, 0.25), np.full((2, 2, 3), 50, np.uint8))
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
