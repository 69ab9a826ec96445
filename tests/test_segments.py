"""The render as a plan of segments: the same frames as the sequential renderer, resumable as a set of frames."""

from __future__ import annotations

import json
import math
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, shared_asset

import vidstyle
from vidstyle.assets import demo_clip
from vidstyle.checkpoint import WorkDir
from vidstyle.cli import main
from vidstyle.config import make_config
from vidstyle.errors import Interrupted, OutputExists, SettingError, VidstyleError
from vidstyle.events import FrameDone, FrameSaved, FrameStarted
from vidstyle.io.decode import Frame, read_frames
from vidstyle.io.images import read_image
from vidstyle.io.paths import partial_path
from vidstyle.io.probe import probe_video, size_to_fit
from vidstyle.pipeline import prepare_render
from vidstyle.plan import Segment, find_cuts, plan_segments
from vidstyle.sequence import Previous, StylizedFrame, stylize_sequence
from vidstyle.stylize import Stylizer

REFERENCE = ROOT / "tests" / "data" / "cut_reference"
CUT_CLIP = REFERENCE / "cut.mkv"


def _config(**changes: object) -> vidstyle.Config:
    # The weights the reference frames were made with (the defaults of their day).
    settings: dict[str, object] = dict(size=64, iters=2, first_iters=4, device="cpu", flow="dis",
                                       temporal_weight=10.0, precision="fp32", keep_frames=True,
                                       style_weight=2.0, tv_weight=1.0, change_tolerance=0.0,
                                       palette_start=False)
    settings.update(changes)
    return vidstyle.make_config("balanced", **settings)


def _pixels(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable image"
    return image


def _leftovers(folder: Path, out: Path) -> list[str]:
    """Anything a render of `out` may leave in `folder`: the output, its partial file, its work directory."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((out.name, f".{out.name}")))


class _Recorder:
    """Collects events, and checks each FrameSaved at the moment it arrives (problems are asserted later: an
    assertion raised inside the callback would end the render instead of failing the test)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size, self.events, self.problems = size, [], []

    def __call__(self, event: object) -> None:
        self.events.append(event)
        if isinstance(event, FrameSaved):
            image = cv2.imread(str(event.path)) if event.path.is_file() else None
            if image is None:
                self.problems.append(f"frame {event.index}: {event.path} is missing or unreadable when announced")
            elif (image.shape[1], image.shape[0]) != self.size:
                self.problems.append(f"frame {event.index}: {image.shape[1]}x{image.shape[0]}, not {self.size}")


@pytest.fixture(scope="module")
def full(bunny_short: Path, starry: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, _Recorder]:
    """An uninterrupted API render of bunny_short with kept frames, and the events it reported."""
    folder = tmp_path_factory.mktemp("full")
    recorder = _Recorder((64, 36))
    vidstyle.render(bunny_short, [starry], folder / "full.mp4", _config(), workdir=folder / "work",
                    on_event=recorder)
    assert WorkDir(folder / "work").done_frames() == set(range(12))
    return folder / "work", recorder


def test_cut_clip_renders_exactly_the_sequential_reference(starry: Path, tmp_path: Path) -> None:
    readme = (REFERENCE / "README.md").read_text()
    assert "--size 64 --iters 4 --first-iters 8" in readme and "--flow dis --temporal-weight 10" in readme
    assert "--style-weight 2 --tv-weight 1 --content-weight 1 --structure-weight 0 --change-tolerance 0" in readme
    work = tmp_path / "work"
    code = main(["render", str(CUT_CLIP), "--style", str(starry), "-o", str(tmp_path / "out.mp4"), "--size", "64",
                 "--iters", "4", "--first-iters", "8", "--flow", "dis", "--temporal-weight", "10", "--precision",
                 "fp32", "--seed", "0", "--device", "cpu", "--keep-frames", "--quiet", "--workdir", str(work),
                 "--style-weight", "2", "--tv-weight", "1", "--content-weight", "1", "--structure-weight", "0",
                 "--change-tolerance", "0", "--no-palette-start"])
    assert code == 0
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["segments"] == [[0, 6, True], [6, 12, True]]
    # The frame loop over the whole clip, no plan of segments, on this machine: the render must match it bit for bit.
    config = make_config(size=64, iters=4, first_iters=8, flow="dis", temporal_weight=10.0, precision="fp32", seed=0,
                         device="cpu", style_weight=2.0, tv_weight=1.0, content_weight=1.0, structure_weight=0.0,
                         change_tolerance=0.0, palette_start=False)
    info = probe_video(CUT_CLIP)
    frames = read_frames(info, size_to_fit(info.width, info.height, 64), 0, 12)
    sequential = [r.rgb for r in stylize_sequence(frames, Stylizer(config, [read_image(starry)]))]
    for i in range(12):
        name = f"{i:07d}.png"
        got, want = _pixels(work / "frames" / name), _pixels(REFERENCE / name)
        assert got.shape == want.shape == (36, 64, 3)
        assert np.array_equal(got, cv2.cvtColor(sequential[i], cv2.COLOR_RGB2BGR)), \
            f"frame {i} differs from the sequential renderer's"
        # The stored frames pin what this code made before. Another CPU's kernels round a last bit differently and
        # the optimizer carries that along the shot, so they are matched within a few levels, not exactly.
        diff = np.abs(got.astype(int) - want)
        assert diff.max() <= 10 and diff.mean() < 1.0, f"frame {i} is far from the stored sequential render " \
                                                        f"(max diff {diff.max()}, mean {diff.mean():.2f})"


@pytest.mark.parametrize("passes", [1, 2])
def test_a_source_that_cannot_seek_is_decoded_once_for_all_its_shots(starry: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      passes: int) -> None:
    """cut.mkv's FFV1 has no exact seek here: each shot's frames were decoded from the video's first frame, so a
    long video of many shots decoded its beginning once a shot. Now one decode reads them all (the plan pass reads
    the video once more, to find the cuts); a second pass reads each shot backward, a decode a shot."""
    from vidstyle.io import decode

    assert decode.seek_keyframe(probe_video(CUT_CLIP), 6) is None
    decodes: list[int | None] = []
    real = decode._read_from_first

    def counted(info: object, size: tuple[int, int], start: int, stop: int | None) -> object:
        decodes.append(start)
        return real(info, size, start, stop)  # type: ignore[arg-type]

    monkeypatch.setattr(decode, "_read_from_first", counted)
    vidstyle.render(CUT_CLIP, [starry], tmp_path / "out.mp4", _config(iters=1, first_iters=1, passes=passes),
                    workdir=tmp_path / "work")
    manifest = json.loads((tmp_path / "work" / "manifest.json").read_text())
    assert manifest["segments"] == [[0, 6, True], [6, 12, True]]
    if passes == 1:
        assert decodes == [0, 0], "the plan pass's decode, and one for both shots' frames"
    else:  # the first pass's decode goes on to the second shot once the first shot's second pass is done
        assert decodes == [0, 0, 0, 6], "the plan pass, the first pass of both shots, the second of each"
    assert probe_video(tmp_path / "out.mp4").frame_count == 12


def test_frames_missing_within_the_temporal_reach_of_each_other_are_made_as_an_unbroken_render_makes_them(
        bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    """With temporal_reach 4 frame 9 looks back at frames 8, 7 and 5. Frames 5, 6 and 9 missing, 9 began from only
    the two finished frames before it (7 and 8): 5, made earlier by the same run, was left out, and 9 came out
    other than an unbroken render's."""
    config = vidstyle.make_config("balanced", size=48, iters=2, first_iters=3, device="cpu", precision="fp32",
                                  keep_frames=True, temporal_reach=4)
    vidstyle.render(bunny_short, [starry], tmp_path / "full.mp4", config, workdir=tmp_path / "full")
    work = tmp_path / "work"
    shutil.copytree(tmp_path / "full", work)
    for i in (5, 6, 9):
        (work / "frames" / f"{i:07d}.png").unlink()
    events: list[object] = []
    vidstyle.render(bunny_short, [starry], tmp_path / "again.mp4", config, workdir=work, on_event=events.append)
    assert [e.index for e in events if isinstance(e, FrameStarted)] == [5, 6, 9]
    for i in (5, 6, 9):
        name = f"{i:07d}.png"
        assert (work / "frames" / name).read_bytes() == (tmp_path / "full" / "frames" / name).read_bytes(), name


def test_kept_frames_lose_the_hidden_files_of_writes_a_kill_cut_short(full, bunny_short: Path, starry: Path,
                                                                       tmp_path: Path) -> None:
    """A kill -9 during a checkpoint's write leaves its hidden temporary file; kept frames kept it for ever."""
    reference, _ = full
    work = tmp_path / "work"
    shutil.copytree(reference, work)
    (work / "frames" / "0000003.png").unlink()
    cut_short = work / "frames" / f".0000003.png.tmp-{'0' * 32}"
    cut_short.write_bytes(b"\x89PNG half")
    manifest_cut_short = work / f".manifest.json.tmp-{'1' * 32}"  # a manifest's write, cut short the same way
    manifest_cut_short.write_text('{"frame_count"')
    theirs = work / "frames" / "notes.txt"
    theirs.write_text("mine")
    # Beside the work directory's own files, a hidden name of the same shape that is no write of its own stays.
    not_ours = work / f".notes.txt.tmp-{'2' * 32}"
    not_ours.write_text("mine")
    vidstyle.render(bunny_short, [starry], tmp_path / "again.mp4", _config(), workdir=work)
    assert not cut_short.exists() and not manifest_cut_short.exists() and theirs.read_text() == "mine"
    assert not_ours.read_text() == "mine"
    assert WorkDir(work).done_frames() == set(range(12))


def test_a_finished_render_removes_its_cut_short_writes_and_no_file_of_the_users(full, bunny_short: Path,
                                                                                   starry: Path,
                                                                                   tmp_path: Path) -> None:
    """The work directory the user named is a folder of theirs: its own writes go with it, a file of the same
    hidden shape that vidstyle did not write stays (and so does the folder, which is not empty)."""
    reference, _ = full
    work = tmp_path / "work"
    shutil.copytree(reference, work)
    (work / "frames" / "0000003.png").unlink()
    manifest_cut_short = work / f".manifest.json.tmp-{'1' * 32}"
    manifest_cut_short.write_text('{"frame_count"')
    not_ours = work / f".notes.txt.tmp-{'2' * 32}"
    not_ours.write_text("mine")
    vidstyle.render(bunny_short, [starry], tmp_path / "again.mp4", _config(keep_frames=False),
                    workdir=work)
    assert [p.name for p in work.iterdir()] == [not_ours.name] and not_ours.read_text() == "mine"


def test_resume_makes_only_the_missing_frames_of_a_set(full, bunny_short: Path, starry: Path,
                                                       tmp_path: Path) -> None:
    reference, _ = full
    work = tmp_path / "work"
    shutil.copytree(reference, work)
    for i in (3, 4):
        (work / "frames" / f"{i:07d}.png").unlink()
    kept = {i: (work / "frames" / f"{i:07d}.png") for i in (*range(3), *range(5, 12))}
    before = {i: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) for i, p in kept.items()}
    events: list[object] = []
    out = tmp_path / "again.mp4"
    vidstyle.render(bunny_short, [starry], out, _config(), workdir=work, on_event=events.append)
    assert [e.index for e in events if isinstance(e, FrameStarted)] == [3, 4]
    assert sorted(e.index for e in events if isinstance(e, FrameSaved)) == [3, 4]
    for i, p in kept.items():
        assert (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) == before[i], f"frame {i} was rewritten"
    for i in (3, 4):
        name = f"{i:07d}.png"
        assert np.array_equal(_pixels(work / "frames" / name), _pixels(reference / "frames" / name)), \
            f"re-made frame {i} differs from the uninterrupted render's"
    assert probe_video(out).frame_count == 12


def test_stop_event_interrupts_and_the_same_call_resumes_identically(full, bunny_short: Path, starry: Path,
                                                                    tmp_path: Path) -> None:
    reference, _ = full
    out, work = tmp_path / "out.mp4", tmp_path / "work"
    shutil.copytree(reference, work)  # the first half done, to keep the test short: frames 6-11 still to make
    for i in range(6, 12):
        (work / "frames" / f"{i:07d}.png").unlink()
    stop = threading.Event()

    def on_event(event: object) -> None:
        if isinstance(event, FrameSaved):
            stop.set()

    with pytest.raises(Interrupted) as stopped:
        vidstyle.render(bunny_short, [starry], out, _config(), workdir=work, on_event=on_event, stop=stop)
    assert stopped.value.exit_code == 130
    assert not out.exists() and not partial_path(out).exists()
    assert _leftovers(tmp_path, out) == []
    done = WorkDir(work).done_frames()
    assert set(range(7)) <= done and len(done) < 12, sorted(done)
    events: list[object] = []
    vidstyle.render(bunny_short, [starry], out, _config(), workdir=work, on_event=events.append)
    assert sorted(e.index for e in events if isinstance(e, FrameStarted)) == sorted(set(range(12)) - done)
    for i in range(12):
        name = f"{i:07d}.png"
        assert np.array_equal(_pixels(work / "frames" / name), _pixels(reference / "frames" / name)), \
            f"frame {i} differs from the uninterrupted render's"
    assert probe_video(out).frame_count == 12


def test_frame_saved_means_the_checkpoint_is_on_disk(full) -> None:
    _, recorder = full
    assert recorder.problems == []
    saved = [e for e in recorder.events if isinstance(e, FrameSaved)]
    assert sorted(e.index for e in saved) == list(range(12))
    position = {(type(e), getattr(e, "index", None)): n for n, e in enumerate(recorder.events)}
    for i in range(12):
        assert position[(FrameDone, i)] < position[(FrameSaved, i)], f"frame {i}: FrameSaved before FrameDone"


def test_a_prepared_stylizer_makes_the_same_frames_and_refuses_other_settings(full, bunny_short: Path,
                                                                              starry: Path, tmp_path: Path) -> None:
    reference, _ = full
    stylizer = vidstyle.Stylizer.for_styles([starry], _config())
    # Two renders share it; each makes a few frames of the reference (a fresh first frame, later ones).
    for name, missing in (("one", (0, 1, 2)), ("two", (9, 10, 11))):
        work = tmp_path / name
        shutil.copytree(reference, work)
        for i in missing:
            (work / "frames" / f"{i:07d}.png").unlink()
        events: list[object] = []
        vidstyle.render(bunny_short, [starry], tmp_path / f"{name}.mp4", _config(), workdir=work,
                        stylizer=stylizer, on_event=events.append)
        assert [e.index for e in events if isinstance(e, FrameStarted)] == list(missing)
        for i in missing:
            frame = f"{i:07d}.png"
            assert np.array_equal(_pixels(work / "frames" / frame), _pixels(reference / "frames" / frame)), \
                f"render {name}: frame {i} differs from the render without a prepared stylizer"
    other = vidstyle.Stylizer(_config(style_weight=7.0), [read_image(starry)])
    out = tmp_path / "other.mp4"
    with pytest.raises(SettingError, match="^stylizer was prepared for other frames than this render's: its "
                                           "style_weight is 7.0, not "):
        vidstyle.render(bunny_short, [starry], out, _config(), workdir=tmp_path / "w3", stylizer=other)
    assert not (tmp_path / "w3").exists() and _leftovers(tmp_path, out) == []


@pytest.mark.parametrize(("args", "named"), [
    ((["starry-night"],), "styles"),  # names are for Stylizer.for_styles
    (("starry-night",), "styles"),
    (([np.zeros((8, 8), np.uint8)],), "styles"),  # not an RGB picture
    (([],), "styles"),  # no painting at all
    ((np.zeros((1, 32, 32, 3), np.uint8),), "styles"),  # a batch array, not a list of pictures
])
def test_a_stylizer_made_from_what_it_cannot_use_is_refused_naming_it(args: tuple[object, ...], named: str) -> None:
    with pytest.raises(SettingError) as refused:
        vidstyle.Stylizer(_config(), *args)
    assert refused.value.setting == named and "Stylizer.for_styles" in str(refused.value)
    with pytest.raises(SettingError, match="config"):
        vidstyle.Stylizer({"size": 64}, [])  # type: ignore[arg-type]
    painting = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with pytest.raises(SettingError, match="^styles holds a picture that is 2x2: a painting needs at least 16"):
        vidstyle.Stylizer(_config(), [np.zeros((2, 2, 3), np.uint8)])
    with pytest.raises(SettingError, match=r"^styles holds a picture that is one flat colour \(its pixels vary by "
                                           r"0\.0 levels\)"):
        vidstyle.Stylizer(_config(), [np.full((32, 32, 3), 90, np.uint8)])
    with pytest.raises(SettingError, match="^device must be a torch.device or a name .* \\(got 'bogus'\\)$"):
        vidstyle.Stylizer(_config(), [painting], device="bogus")  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(SettingError, match="^device is cuda but this machine has no CUDA device$"):
            vidstyle.Stylizer(_config(), [painting], device=torch.device("cuda"))


def test_stylize_sequence_refuses_frames_it_cannot_paint_in_its_own_words(starry: Path) -> None:
    stylizer = vidstyle.Stylizer(_config(size=32, iters=1, first_iters=1), [read_image(starry)])
    picture = np.full((18, 32, 3), 128, np.uint8)
    for frames, problem in (([Frame(0, picture.astype(np.float32) / 255)], "holds a float32 array of shape"),
                            ([Frame(0, picture[..., 0])], "holds a uint8 array of shape \\(18, 32\\)"),
                            ([Frame(0, picture[:8])], "at least 16 pixels on each side for the network "
                                                      "\\(frame 0 is 32x8"),
                            (None, "must be an iterable of vidstyle.io.decode.Frame items")):
        with pytest.raises(SettingError, match=f"^frames .*{problem}"):
            list(vidstyle.stylize_sequence(frames, stylizer))  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="^stylizer must be a vidstyle.Stylizer"):
        vidstyle.stylize_sequence([Frame(0, picture)], None)  # type: ignore[arg-type] - at the call, not at next()
    with pytest.raises(SettingError, match="^stop must be a threading.Event"):
        vidstyle.stylize_sequence([Frame(0, picture)], stylizer, stop=True)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="^previous must be a vidstyle.sequence.Previous or None"):
        vidstyle.stylize_sequence([Frame(0, picture)], stylizer, picture)  # type: ignore[arg-type]
    assert len(list(vidstyle.stylize_sequence([Frame(0, picture)], stylizer))) == 1


def test_stylize_sequence_on_frames_in_memory(starry: Path) -> None:
    info = probe_video(CUT_CLIP)
    frames = [Frame(f.index, f.rgb.copy()) for f in read_frames(info, (32, 18))]
    assert len(frames) == 12
    config = _config(size=32, iters=1, first_iters=2)
    stylizer = vidstyle.Stylizer(config, [read_image(starry)])
    results = list(vidstyle.stylize_sequence(frames, stylizer))
    assert all(isinstance(r, StylizedFrame) for r in results)
    assert [r.index for r in results] == list(range(12))
    assert [i for i, r in enumerate(results) if r.fresh] == [0, 6]
    assert [r.iterations for r in results] == [2 if i in (0, 6) else 1 for i in range(12)]
    for r in results:
        assert r.rgb.shape == (18, 32, 3) and r.rgb.dtype == np.uint8
        assert math.isfinite(r.loss) and r.loss > 0
    continued = list(vidstyle.stylize_sequence(frames[1:4], stylizer, Previous(frames[0].rgb, results[0].rgb)))
    assert [r.index for r in continued] == [1, 2, 3]
    assert not any(r.fresh for r in continued)
    for a, b in zip(continued, results[1:4], strict=True):
        assert np.array_equal(a.rgb, b.rgb), f"frame {a.index}: a continued sequence differs from the whole"
    fresh = next(vidstyle.stylize_sequence(frames[1:2], stylizer))
    assert fresh.fresh and fresh.iterations == 2


def test_plan_segments() -> None:
    assert plan_segments(12, [6]) == [Segment(0, 6, True), Segment(6, 12, True)]
    assert plan_segments(12, [6], chunk_frames=4) == [Segment(0, 4, True), Segment(4, 6, False),
                                                      Segment(6, 10, True), Segment(10, 12, False)]
    assert plan_segments(12, [0, 12, 15, -1]) == [Segment(0, 12, True)]
    assert plan_segments(12, [6, 6, 0]) == [Segment(0, 6, True), Segment(6, 12, True)]
    assert plan_segments(1, []) == [Segment(0, 1, True)]
    segments = plan_segments(125, [30, 70], chunk_frames=16)
    assert [i for s in segments for i in range(s.start, s.stop)] == list(range(125)), "every frame exactly once"
    assert [s.start for s in segments if s.fresh] == [0, 30, 70]


@pytest.mark.parametrize("name, cuts", [("bikes_street_no_audio.mp4", [30]), ("field_pan_with_audio.mp4", [])])
def test_find_cuts_on_real_footage(name: str, cuts: list[int]) -> None:
    info = probe_video(shared_asset(name))
    for side in (64, 512):  # the render's own frames, and the plan's downscaled ones
        assert find_cuts(info, size_to_fit(info.width, info.height, side), 0.5) == cuts, f"at {side} px"


def test_api_checks_come_before_side_effects_and_speak_setting_names(bunny_short: Path, starry: Path,
                                                                     tmp_path: Path) -> None:
    out, work = tmp_path / "out.mp4", tmp_path / "w"
    messages = []
    with pytest.raises(SettingError) as blend:
        vidstyle.render(bunny_short, [starry, starry], out, vidstyle.make_config(style_blend=(1.0,)), workdir=work)
    assert blend.value.setting == "style_blend"
    messages.append(str(blend.value))
    for settings in ({"size": 0}, {"adam_lr": 0.0}, {"style_weight": float("nan")}, {"precision": "fp8"}):
        with pytest.raises(SettingError) as bad:
            vidstyle.make_config(**settings)
        assert bad.value.setting in settings
        messages.append(str(bad.value))
    for size, precision in ((16, "fp32"), (64, "fp16")):
        with pytest.raises(SettingError) as bad:
            vidstyle.render(bunny_short, [starry], out, _config(size=size, precision=precision), workdir=work)
        messages.append(str(bad.value))
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(VidstyleError) as not_ours:
        vidstyle.render(bunny_short, [starry], out, _config(), workdir=user)
    messages.append(str(not_ours.value))
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep")
    with pytest.raises(OutputExists) as exists:
        vidstyle.render(bunny_short, [starry], existing, _config(), workdir=work)
    messages.append(str(exists.value))
    folder = tmp_path / "renders"
    folder.mkdir()
    with pytest.raises(VidstyleError, match="is a directory; name the video file") as into_folder:
        vidstyle.render(bunny_short, [starry], folder, _config(), workdir=work)  # not "output type ''"
    messages.append(str(into_folder.value))
    assert list(folder.iterdir()) == []
    # A truthy string is no permission to overwrite; a stop that is no Event would fail only once rendering.
    for call, named in ((lambda: vidstyle.render(bunny_short, [starry], existing, overwrite="no"), "overwrite"),
                        (lambda: vidstyle.render(bunny_short, [starry], out, stop=True), "stop"),
                        (lambda: vidstyle.render(bunny_short, [starry], out, on_event="print"), "on_event"),
                        (lambda: vidstyle.render(bunny_short, [starry], out, on_event=None), "on_event"),
                        (lambda: vidstyle.preview.preview(bunny_short, [starry], tmp_path / "p.png", on_event=None),
                         "on_event"),
                        (lambda: vidstyle.stylize_image(starry, [starry], tmp_path / "s.png", overwrite=1),
                         "overwrite"),
                        (lambda: vidstyle.render_many([bunny_short], [starry], each_style="yes"), "each_style"),
                        # Arguments of the wrong kind, named, not a TypeError from deep inside.
                        (lambda: vidstyle.render(bunny_short, [None], out), "style_paths"),
                        (lambda: vidstyle.render(bunny_short, None, out), "style_paths"),
                        (lambda: vidstyle.render(bunny_short, b"starry-night", out), "style_paths"),  # not its bytes
                        (lambda: vidstyle.render(bunny_short, {"starry-night": 1}, out), "style_paths"),
                        (lambda: vidstyle.Stylizer.for_styles(None), "style_paths"),
                        (lambda: vidstyle.stylize_image(None, [starry], tmp_path / "s.png"), "content_path"),
                        (lambda: vidstyle.stylize_image(starry, [starry], ""), "output"),
                        (lambda: vidstyle.stylize_image(starry, [starry], tmp_path / "s.png", stylizer="x"),
                         "stylizer"),
                        (lambda: vidstyle.preview.preview(None, [starry]), "input_path"),
                        (lambda: vidstyle.render_many([""], [starry]), "inputs"),
                        (lambda: vidstyle.render_many([bunny_short], [starry], output_dir=5), "output_dir")):
        with pytest.raises(SettingError) as bad:
            call()
        assert bad.value.setting == named
        messages.append(str(bad.value))
    assert not work.exists() and _leftovers(tmp_path, out) == [] and not partial_path(existing).exists()
    assert existing.read_bytes() == b"keep" and sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    for message in messages:
        assert "--" not in message, f"the library spoke in flags: {message}"
    # Styles as bytes or a dict: refused as what they are, not byte by byte ("got int 115") or by their keys.
    for styles, kind in ((b"starry-night", "bytes"), ({"starry-night": 1}, "dict"), ({"starry-night"}, "set")):
        with pytest.raises(SettingError, match=f"^style_paths must be .* \\(got {kind}\\)$"):
            vidstyle.render(bunny_short, styles, out)  # type: ignore[arg-type]


def test_render_without_config_uses_the_balanced_preset(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    job = prepare_render(demo_clip(), [starry], out)
    assert job.config == vidstyle.make_config() == vidstyle.make_config("balanced")
    assert job.config.size == 512 and job.size == (512, 288)  # the 1280x720 demo clip at the preset's 512 px
    assert job.output == out and job.workdir.path == tmp_path / "out.mp4.vidstyle-work"
    assert list(tmp_path.iterdir()) == [], "prepare_render writes nothing"


def test_a_prepared_stylizer_fits_whatever_seed_where_the_seed_draws_nothing(starry: Path) -> None:
    """A render resumes whatever the seed where init is not random; a prepared stylizer was refused for it."""
    styles = [read_image(starry)]
    stylizer = vidstyle.Stylizer(_config(seed=3), styles)
    assert stylizer.mismatch(_config(seed=4), styles, stylizer.device) is None
    random = vidstyle.Stylizer(_config(init="random", seed=3), styles)
    assert random.mismatch(_config(init="random", seed=4), styles, random.device) == "its seed is 3, not 4"
