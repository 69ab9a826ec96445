"""`vidstyle preview`: a few frames on a contact sheet, the estimate's measured parts, and bad requests refused
before anything is written."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ROOT, child_ffmpeg_pids, ffmpeg, shared_asset
from test_cli import _bad

import vidstyle.preview
from vidstyle.assets import demo_clip
from vidstyle.cli import main
from vidstyle.config import Config, make_config
from vidstyle.errors import Interrupted, OutputError, OutputExists, SettingError
from vidstyle.io.decode import read_frames
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video
from vidstyle.optimize import MIN_ITERS
from vidstyle.plan import find_cuts
from vidstyle.preview import LABEL_HEIGHT, frames_at, preview

# 12 frames of 64x36 at 25 fps, a hard cut at frame 6 (tests/data/cut_reference/README.md).
CUT_CLIP = ROOT / "tests" / "data" / "cut_reference" / "cut.mkv"
TINY = ("--size", "64", "--iters", "2", "--first-iters", "3", "--device", "cpu")


def _config(**changes: object) -> Config:
    return make_config("balanced", **{"size": 64, "iters": 2, "first_iters": 3, "device": "cpu", **changes})


def _tiles(sheet: np.ndarray, size: tuple[int, int]) -> list[list[np.ndarray]]:
    """The sheet's tiles by row and column, without the label bands."""
    width, height = size
    step = LABEL_HEIGHT + height
    return [[sheet[r * step + LABEL_HEIGHT:(r + 1) * step, c * width:(c + 1) * width]
             for c in range(sheet.shape[1] // width)] for r in range(sheet.shape[0] // step)]


def test_the_sheet_has_the_source_on_top_and_a_row_per_strength(tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    # Ten iterations: the first few from the content are the style's gradient alone (the content loss is zero
    # there), whose direction L-BFGS follows whatever its scale, so the strengths part ways only after them.
    config = _config(first_iters=10)
    result = preview(demo_clip(), ["starry-night"], out, config, count=3, strengths=(0.25, 4))
    info = probe_video(demo_clip())
    # 132 frames over 5.28 s: the centres of thirds are 0.88 s, 2.64 s and 4.40 s.
    assert result.frames == (22, 66, 110) and result.times == pytest.approx((0.88, 2.64, 4.40))
    assert result.sheet == out and result.style_weights == (0.25 * config.style_weight, 4 * config.style_weight)
    sheet = read_image(out)
    assert sheet.shape == (3 * (LABEL_HEIGHT + 36), 3 * 64, 3), "1 + 2 strengths rows, 3 frame columns"
    tiles = _tiles(sheet, (64, 36))
    sources = {f.index: f.rgb for f in read_frames(info, (64, 36)) if f.index in result.frames}
    for column, index in enumerate(result.frames):
        assert np.array_equal(tiles[0][column], sources[index]), "the top row is the source frames (PNG: exact)"
        gentle, strong = (tiles[row][column].astype(np.int16) for row in (1, 2))
        assert np.abs(gentle - strong).mean() > 2, "a stronger style paints another picture"
        assert np.abs(gentle - sources[index]).mean() > 1, "a stylized row is not the source"
    assert result.estimate.fresh_frames == 1 + len(find_cuts(info, (64, 36), config.cut_threshold))


def test_at_picks_the_frame_shown_at_that_time() -> None:
    info = probe_video(CUT_CLIP)  # frames every 0.04 s
    assert frames_at(info, [0.0, 0.239, 0.24, 0.279, 0.28, 0.47]) == (0, 5, 6, 7, 11)
    assert frames_at(info, [0.3, 0.1, 0.3]) == (2, 7), "in time order, each frame once"


def test_at_puts_those_frames_on_the_sheet(tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    result = preview(CUT_CLIP, ["starry-night"], out, _config(), at=[0.25, 0.01])
    assert result.frames == (0, 6) and result.times == pytest.approx((0.0, 0.24))
    sheet = read_image(out)
    assert sheet.shape == (2 * (LABEL_HEIGHT + 36), 2 * 64, 3)
    tiles = _tiles(sheet, (64, 36))
    sources = {f.index: f.rgb for f in read_frames(probe_video(CUT_CLIP), (64, 36))}
    assert np.array_equal(tiles[0][0], sources[0]) and np.array_equal(tiles[0][1], sources[6])


def test_a_clip_shorter_than_the_default_count_shows_all_of_its_frames(tmp_path: Path) -> None:
    """The default of 4 frames is not the caller's request: a 3-frame clip is previewed whole, not refused."""
    short = tmp_path / "three.mkv"
    ffmpeg("-i", str(CUT_CLIP), "-frames:v", "3", "-c:v", "ffv1", str(short))
    assert probe_video(short).frame_count == 3
    result = preview(short, ["starry-night"], tmp_path / "sheet.png", _config())
    assert result.frames == (0, 1, 2)
    with pytest.raises(SettingError, match="is 4, more than the video's 3 frames"):
        preview(short, ["starry-night"], tmp_path / "again.png", _config(), count=4)  # asked for: still refused


def test_fresh_frames_are_the_first_and_one_a_scene_cut(tmp_path: Path) -> None:
    config = _config(flow="dis")
    estimate = preview(CUT_CLIP, ["starry-night"], tmp_path / "s.png", config, count=1).estimate
    cuts = find_cuts(probe_video(CUT_CLIP), (64, 36), config.cut_threshold)
    assert cuts == [6]
    assert (estimate.fresh_frames, estimate.later_frames) == (2, 10)
    assert estimate.size == (64, 36) and estimate.device == "cpu"
    parts = (estimate.fresh_seconds, estimate.later_seconds, estimate.plan_seconds, estimate.setup_seconds)
    assert all(part > 0 for part in parts), parts
    assert estimate.total_seconds == pytest.approx(estimate.setup_seconds + estimate.plan_seconds
                                                   + 2 * estimate.fresh_seconds + 10 * estimate.later_seconds)
    # A threshold no histogram distance exceeds finds no cut: the same test as the render's plan.
    assert preview(CUT_CLIP, ["starry-night"], tmp_path / "t.png", _config(cut_threshold=1.0),
                   count=1).estimate.fresh_frames == 1


@pytest.mark.parametrize("request_, setting", [
    ({"at": [-0.1]}, "at"),
    ({"at": [0.48]}, "at"),  # the clip lasts 0.48 s
    ({"at": [float("nan")]}, "at"),
    ({"at": []}, "at"),
    ({"strengths": (0,)}, "strengths"),
    ({"strengths": (1, -1)}, "strengths"),
    ({"strengths": (float("inf"),)}, "strengths"),
    ({"strengths": (float("nan"),)}, "strengths"),
    ({"strengths": ()}, "strengths"),
    ({"strengths": (1e9,)}, "strengths"),  # a style weight beyond its range
    ({"strengths": "0.5,1"}, "strengths"),  # text, not a list: not read letter by letter
    ({"strengths": (np.True_,)}, "strengths"),  # NumPy's bool is no number either
    ({"at": 0.1}, "at"),  # one time, not a list of them
    ({"count": 0}, "count"),
    ({"count": 13}, "count"),  # more than the clip's 12 frames
    ({"count": 2, "at": [0.1]}, "count"),
])
def test_bad_requests_are_refused_before_anything_is_done(tmp_path: Path, monkeypatch, request_: dict,
                                                          setting: str) -> None:
    def no_work(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the network was loaded for a request that was going to be refused")

    monkeypatch.setattr(vidstyle.preview, "Stylizer", no_work)
    with pytest.raises(SettingError) as caught:
        preview(CUT_CLIP, ["starry-night"], tmp_path / "sheet.png", _config(), **request_)
    assert caught.value.setting == setting
    assert list(tmp_path.iterdir()) == []
    assert not child_ffmpeg_pids()


def test_an_existing_sheet_is_kept_unless_overwriting(tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    out.write_bytes(b"mine")
    with pytest.raises(OutputExists):
        preview(CUT_CLIP, ["starry-night"], out, _config(), count=1)
    assert out.read_bytes() == b"mine" and list(tmp_path.iterdir()) == [out]
    preview(CUT_CLIP, ["starry-night"], out, _config(), count=1, overwrite=True)
    assert read_image(out).shape == (2 * (LABEL_HEIGHT + 36), 64, 3)


def test_a_failed_write_or_a_stop_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted) as stopped:
        preview(CUT_CLIP, ["starry-night"], tmp_path / "stopped.png", _config(), count=1, stop=stop)
    assert "resume" not in str(stopped.value), "a preview keeps nothing to resume"
    assert list(tmp_path.iterdir()) == [] and not child_ffmpeg_pids()

    def full_disk(_fd: object) -> None:  # a full disk shows when the written bytes are flushed
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("vidstyle.io.images.os.fsync", full_disk)
    with pytest.raises(OutputError, match="No space left"):
        preview(CUT_CLIP, ["starry-night"], tmp_path / "full.png", _config(), count=1)
    assert list(tmp_path.iterdir()) == [], "the temporary file is removed too"


def test_cli_sweep_prints_the_rows_and_one_estimate_line(tmp_path: Path, capsys) -> None:
    clip = tmp_path / "clip.mkv"
    shutil.copy(CUT_CLIP, clip)
    # A strength named twice is painted once.
    assert main(["preview", str(clip), "--style", "starry-night", *TINY, "--strength", "0.5,2,0.5", "--at", "0.1",
                 "--at", "00:00:00.3"]) == 0
    out = capsys.readouterr().out.splitlines()
    sheet = tmp_path / "clip.starry_night.preview.png"
    assert read_image(sheet).shape == (3 * (LABEL_HEIGHT + 36), 2 * 64, 3)
    weight = make_config("balanced").style_weight
    assert out[:3] == [f"contact sheet: {sheet} (frames at 0.08 s, 0.28 s; the source on top)",
                       f"row 2: --strength 0.5 is --style-weight {0.5 * weight:g}",
                       f"row 3: --strength 2 is --style-weight {2 * weight:g}"]
    assert re.fullmatch(r"whole render on cpu at 64x36: about \d+s \(2 fresh frames x [\d.]+ s, 10 later frames "
                        r"x [\d.]+ s \(2 iterations each\), plan [\d.e-]+ s, start-up [\d.]+ s\)", out[3]), out[3]
    assert len(out) == 4
    assert main(["preview", str(clip), "--style", "starry-night", *TINY, "--at", "0.1", "--overwrite", "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "", "--quiet: no messages"
    # What a preview is for stays: the sheet's name and the estimate, on stdout.
    assert quiet.out.splitlines()[0].startswith(f"contact sheet: {sheet}") and len(quiet.out.splitlines()) == 2


@pytest.mark.parametrize("flags, pattern", [
    (["--strength", "1,0"], r"^vidstyle: error: --strength must be numbers above 0"),
    (["--strength", "1,x"], r"--strength: expected comma-separated numbers"),
    (["--at", "9"], r"^vidstyle: error: --at 9 s is past the end of the video, which lasts 0\.480 s$"),
    (["--at", "soon"], r"--at: expected seconds, MM:SS or HH:MM:SS.ms"),
    (["--frames", "0"], r"^vidstyle: error: --frames must be a whole number of at least 1"),
    (["--frames", "99"], r"^vidstyle: error: --frames is 99, more than the video's 12 frames$"),
    (["--frames", "2", "--at", "0.1"], r"not allowed with argument"),
    (["--style-weight", "-1"], r"^vidstyle: error: --style-weight must be between 0"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, flags: list[str], pattern: str) -> None:
    args = ["preview", str(CUT_CLIP), "--style", "starry-night", "-o", str(tmp_path / "sheet.png"), *TINY, *flags]
    try:
        code = main(args)
    except SystemExit as stopped:  # argparse's own errors
        code = stopped.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]) and "Traceback" not in err[0], err
    assert list(tmp_path.iterdir()) == [] and not child_ffmpeg_pids()


def test_cli_refuses_a_video_as_the_sheet(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sheet.mp4"
    _bad(capsys, ["preview", str(CUT_CLIP), "--style", "starry-night", "-o", str(out), *TINY], 2,
         r"contact sheet must be an image", out)
    folder = tmp_path / "sheets"
    folder.mkdir()
    _bad(capsys, ["preview", str(CUT_CLIP), "--style", "starry-night", "-o", str(folder), *TINY], 2,
         r"sheets is a folder; name the contact sheet's file, e.g. \S*sheet.png")
    assert list(folder.iterdir()) == []


def test_later_frames_are_timed_over_the_whole_clip(tmp_path: Path) -> None:
    """Where later frames stop early, a still stretch needs the floor and a pan more: the estimate samples both."""
    pan = shared_asset("field_pan_with_audio.mp4")
    clip = tmp_path / "still_then_pan.mp4"
    # 8 frames of one picture, then 6 of a camera pan: the preview's two frames are 3 and 10.
    ffmpeg("-i", str(pan), "-ss", "1", "-i", str(pan), "-filter_complex",
           "[0:v]trim=end_frame=1,scale=96:54,setsar=1,loop=7:1:0,setpts=N/25/TB[a];"
           "[1:v]trim=end_frame=6,scale=96:54,setsar=1,setpts=N/25/TB[b];[a][b]concat=n=2:v=1[v]",
           "-map", "[v]", "-r", "25", "-c:v", "libx264", "-crf", "12", str(clip))
    config = make_config(size=48, iters=40, first_iters=30, tol=0.0003, device="cpu", precision="fp32")
    result = preview(clip, ["starry-night"], tmp_path / "sheet.png", config, count=2)
    assert result.frames == (3, 10)
    estimate = result.estimate
    # The frames after frame 3 repeat it and stop at the floor (a sample of them alone gives MIN_ITERS); those
    # after frame 10 follow the pan and raise the mean.
    assert estimate.later_iterations > MIN_ITERS + 1, estimate
    assert estimate.later_seconds > 0


@pytest.mark.parametrize("tile", [48, 64, 128, 256])
def test_a_rows_label_is_never_cut_off_it_takes_the_longest_wording_that_fits(tile: int) -> None:
    job = SimpleNamespace(size=(tile, tile), strengths=(0.5, 2.0))
    labels = vidstyle.preview._labels(job, (0.0, 1.0), (7.5, 30.0))
    for strength, (text, *rest) in zip(("0.5", "2"), labels[1:], strict=True):
        assert vidstyle.preview._fits_tile(text, 2 * tile), text
        assert strength in text and rest == [""]
    assert ("style weight" in labels[1][0]) == (tile >= 128)  # the full wording wherever there is room for it


def test_strengths_may_be_numpys_numbers_as_settings_and_times_may() -> None:
    from vidstyle.preview import check_strengths

    assert check_strengths([np.float32(0.5), np.int64(2)]) == (0.5, 2.0)
    assert check_strengths(np.array([1.0, 4.0])) == (1.0, 4.0)
