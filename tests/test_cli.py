"""The command line as a person uses it: real renders, and every kind of bad input answered in one line."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, child_ffmpeg_pids, ffmpeg, run_cli, shared_asset

from vidstyle.cli import main
from vidstyle.config import read_preset
from vidstyle.io.probe import probe_video

TINY = ("--size", "64", "--iters", "2", "--first-iters", "4", "--device", "cpu", "--quiet")


def _audio_seconds(path: Path) -> float:
    """Duration of the first audio stream, from ffmpeg's decode of it."""
    import subprocess

    from vidstyle.io.ffmpeg import ffmpeg_exe

    out = subprocess.run([ffmpeg_exe(), "-i", str(path), "-map", "0:a:0", "-f", "null", "-"],
                         capture_output=True, text=True).stderr
    h, m, s = re.findall(r"time=(\d+):(\d+):([\d.]+)", out)[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_render_subprocess_keeps_frames_rate_audio_and_aspect(bunny_short: Path, starry: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    proc = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), *TINY, "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    src, got = probe_video(bunny_short), probe_video(out)
    assert got.frame_count == src.frame_count
    assert got.fps == src.fps
    assert (got.width, got.height) == (64, 36)
    assert got.has_audio
    assert abs(_audio_seconds(out) - _audio_seconds(bunny_short)) < 0.25
    assert not (tmp_path / "out.mp4.vidstyle-work").exists(), "checkpoints are removed after success"


def test_render_real_handheld_clip_with_audio(starry: Path, tmp_path: Path) -> None:
    clip = shared_asset("field_pan_with_audio.mp4")
    out = tmp_path / "field.mp4"
    proc = run_cli("render", str(clip), "--style", str(starry), "-o", str(out), "--size", "48", "--iters", "1",
                   "--first-iters", "4", "--device", "cpu", "--flow", "none")
    assert proc.returncode == 0, proc.stderr
    assert "rendering 125 frames at 48x28" in proc.stderr
    # Not a terminal: plain lines, no carriage returns; the first frame's budget is said up front.
    assert "\r" not in proc.stderr and "frame 0: 4 iterations (fresh)" in proc.stderr
    assert re.search(r"^frame 125/125: [\d.]+ s/frame, about 0s left$", proc.stderr, re.MULTILINE)
    info = probe_video(out)
    assert (info.frame_count, info.width, info.height) == (125, 48, 28)
    assert abs(info.duration - 5.0) < 0.05
    assert abs(_audio_seconds(out) - 5.0) < 0.25


def test_default_output_name_is_beside_the_input(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    shutil.copy(bunny_short, clip)
    assert main(["render", str(clip), "--style", str(starry), *TINY]) == 0
    assert (tmp_path / "clip.starry_night.mp4").exists()


def test_odd_names_work(bunny_short: Path, starry: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    clip = tmp_path / "-my clip é.mp4"
    shutil.copy(bunny_short, clip)
    style = tmp_path / "-ström style.jpg"
    shutil.copy(starry, style)
    assert main(["render", "--style", f"./{style.name}", "-o", "./-out put ü.mp4", *TINY, "--", clip.name]) == 0
    assert probe_video(tmp_path / "-out put ü.mp4").frame_count == 12


def test_image_command(starry: Path, tmp_path: Path) -> None:
    content = shared_asset("coffee.png")
    out = tmp_path / "coffee styled.png"
    proc = run_cli("image", str(content), "--style", "starry-night", "-o", str(out), "--size", "64",
                   "--iters", "5", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    import cv2

    assert cv2.imread(str(out)).shape == (43, 64, 3) or cv2.imread(str(out)).shape == (42, 64, 3)
    source = cv2.imread(str(content)).shape
    assert main(["image", str(content), "--style", "starry-night", "-o", str(out), "--size", "32", "--iters", "1",
                 "--device", "cpu", "--output-size", "source", "--overwrite", "--quiet"]) == 0
    assert cv2.imread(str(out)).shape == source, "written at the photo's own size"


def test_bf16_on_a_cpu_that_emulates_it_is_said_before_the_work(bunny_short: Path, tmp_path: Path, capsys,
                                                                  monkeypatch) -> None:
    """Emulated bf16 runs many times slower than fp32: a render and a still say so up front, and still work."""
    import vidstyle.precision

    monkeypatch.setattr(vidstyle.precision, "_cpu_has_bf16", lambda: False)
    common = ("--style", "starry-night", "--size", "32", "--iters", "1", "--device", "cpu", "--precision", "bf16")
    assert main(["render", str(bunny_short), "-o", str(tmp_path / "o.mp4"), *common, "--first-iters", "1",
                 "--duration", "0.04"]) == 0
    assert main(["image", str(shared_asset("coffee.png")), "-o", str(tmp_path / "c.png"), *common]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("precision bf16:")]
    assert len(said) == 2 and "emulates it" in said[0], said
    assert probe_video(tmp_path / "o.mp4").frame_count == 1 and (tmp_path / "c.png").exists()


def _bad(capsys, args: list[str], code: int, pattern: str, out: Path | None = None) -> None:
    assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.search(pattern, err[0], re.IGNORECASE), err[0]
    assert "Traceback" not in err[0]
    if out is not None:
        assert not out.exists()
    assert not child_ffmpeg_pids()


@pytest.fixture
def bad_media(tmp_path: Path, bunny_short: Path) -> dict[str, Path]:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(bunny_short.read_bytes()[: bunny_short.stat().st_size // 2])
    faststart = tmp_path / "faststart.mp4"
    ffmpeg("-i", str(bunny_short), "-c", "copy", "-movflags", "+faststart", str(faststart))
    cut = tmp_path / "faststart_truncated.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 2 // 3])
    audio = tmp_path / "sound.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", str(audio))
    cover = tmp_path / "song.mp3"  # a podcast's or a song's: its one picture is its cover
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1",
           "-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame", "-c:v", "png", "-disposition:v", "attached_pic",
           str(cover))
    image = tmp_path / "picture.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1", "-f", "image2", "-c:v", "png", str(image))
    empty = tmp_path / "empty.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "0", "-c:v", "libx264", str(empty))
    # Its index at the end, cut short: ffmpeg sees a stream of no known kind, and no audio either.
    index_cut = tmp_path / "index_cut.mp4"
    index_cut.write_bytes(bunny_short.read_bytes()[:-1500])
    zero = tmp_path / "zero bytes.mp4"
    zero.write_bytes(b"")
    return {"text": text, "truncated": truncated, "cut": cut, "audio": audio, "image": image, "empty": empty,
            "index_cut": index_cut, "cover": cover, "zero": zero}


@pytest.mark.parametrize("name, pattern", [
    ("text", "cannot read"),
    ("truncated", "cannot read|truncated"),
    # Its index first (faststart), its frames cut short: the index names frames that are not there.
    ("cut", r"(\S+)faststart_truncated\.mp4 is truncated or damaged \(ffmpeg: partial file\); ffmpeg -i "
            r"\1faststart_truncated\.mp4 -c copy \1faststart_truncated\.fixed\.mkv keeps the part that can be read$"),
    ("audio", r"no video stream that ffmpeg can read \(is it an audio file\?\)$"),
    ("cover", r"song\.mp3 has no video stream that ffmpeg can read \(an audio file: its one picture is a cover, not "
              r"a video\)$"),
    ("index_cut", r"no video stream that ffmpeg can read \(it may be truncated or damaged\)$|cannot read"),
    ("image", "is a still image, not a video; use 'vidstyle image' for stills"),
    ("empty", "no video frames|no video stream|cannot read|no decodable"),
    ("zero", r"zero bytes\.mp4 is empty \(0 bytes\): a download or copy that did not finish\?$"),
])
def test_bad_videos(capsys, bad_media: dict[str, Path], starry: Path, tmp_path: Path, name: str,
                    pattern: str) -> None:
    out = tmp_path / "out.mp4"
    _bad(capsys, ["render", str(bad_media[name]), "--style", str(starry), "-o", str(out), *TINY], 1, pattern, out)


def test_a_still_given_to_metrics_is_named_without_advice_for_render(capsys, bad_media: dict[str, Path],
                                                                      bunny_short: Path) -> None:
    _bad(capsys, ["metrics", str(bad_media["image"]), "--source", str(bunny_short)], 1,
         r"picture\.mp4 is a still image, not a video$")


def test_a_video_given_as_a_still_is_called_a_video(capsys, bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    """MP4 and Matroska are named by their first bytes, not by their suffix; a text file is still unreadable."""
    out = tmp_path / "o.png"
    still = ("--size", "64", "--iters", "2", "--device", "cpu", "--quiet")
    mkv = tmp_path / "clip.bin"
    ffmpeg("-i", str(bunny_short), "-t", "0.1", "-an", "-c:v", "libx264", "-f", "matroska", str(mkv))
    _bad(capsys, ["image", str(bunny_short), "--style", str(starry), "-o", str(out), *still], 1,
         r"content image .*bunny_short\.mp4 is a video, not a still image; use 'vidstyle render' for videos$", out)
    _bad(capsys, ["image", str(starry), "--style", str(mkv), "-o", str(out), *still], 1,
         r"style image .*clip\.bin is a video, not a still image$", out)
    text = tmp_path / "notes.txt"
    text.write_text("free text, no picture")
    _bad(capsys, ["image", str(text), "--style", str(starry), "-o", str(out), *still], 1,
         "content image is not a readable image", out)
    photo = tmp_path / "phone.heic"  # MP4's container holding a still: OpenCV cannot read it, but it is no video
    photo.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    _bad(capsys, ["image", str(photo), "--style", str(starry), "-o", str(out), *still], 1,
         "content image is not a readable image", out)


def test_missing_input(capsys, starry: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    _bad(capsys, ["render", str(tmp_path / "nope.mp4"), "--style", str(starry), "-o", str(out), *TINY], 1,
         "input not found", out)


@pytest.mark.parametrize("command", ["render", "image"])
@pytest.mark.parametrize("length", [240, 300])
def test_an_output_name_too_long_for_its_hidden_names_is_refused_before_any_work(capsys, bunny_short: Path,
                                                                                  tmp_path: Path, command: str,
                                                                                  length: int) -> None:
    """A name valid in itself (240 bytes) whose hidden working names are over the file system's 255, or one over it
    itself: one line naming the cause, before any optimization, nothing left."""
    source = bunny_short if command == "render" else ROOT / "vidstyle" / "assets" / "starry_night.jpg"
    out = tmp_path / ("c" * (length - 4) + (".mp4" if command == "render" else ".png"))
    flags = TINY if command == "render" else ("--size", "64", "--iters", "2", "--device", "cpu", "--quiet")
    named = r"^vidstyle: error: output name c{40}\.\.\. is too long: at most 217 bytes here"
    # Over the limit itself, the first look at the name may fail before the check: either line says why.
    too_long = r"^vidstyle: error: a file name c{40}\.\.\. is too long for the file system$"
    pattern = named if length < 256 else f"{named}|{too_long}"
    _bad(capsys, [command, str(source), "--style", "starry-night", "-o", str(out), *flags], 2, pattern)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["render", "preview"])
def test_an_output_name_made_from_a_long_input_name_asks_for_one(capsys, bunny_short: Path, tmp_path: Path,
                                                                 command: str) -> None:
    """No output named, the one made of the input's and the painting's names was too long, and the line blamed it
    as if the user had given it."""
    source = tmp_path / ("c" * 226 + ".mp4")
    shutil.copy(bunny_short, source)
    flags = TINY if command == "render" else ("--size", "64", "--iters", "2", "--device", "cpu", "--quiet")
    _bad(capsys, [command, str(source), "--style", "starry-night", *flags], 2,
         r"^vidstyle: error: output name c{40}\.\.\. is too long: at most 217 bytes here \(.*\); it is made of the "
         r"input's and the painting's names: name the output, or give the input a shorter name$")
    assert list(tmp_path.iterdir()) == [source]


def test_a_web_address_is_said_to_be_one(capsys, bunny_short: Path, tmp_path: Path) -> None:
    """Nothing is downloaded; a URL is named as one, not reported as a missing file with its // folded."""
    out = tmp_path / "o.mp4"
    _bad(capsys, ["render", "https://example.com/clip.mp4", "--style", "starry-night", "-o", str(out), *TINY], 1,
         r"^vidstyle: error: input 'https://example.com/clip.mp4' is a web address; download the video", out)
    _bad(capsys, ["render", str(bunny_short), "--style", "https://example.com/starry.jpg", "-o", str(out), *TINY], 1,
         r"style 'https://example.com/starry.jpg' is a web address; download the picture", out)
    still = tmp_path / "o.png"
    _bad(capsys, ["image", "https://example.com/photo.jpg", "--style", "starry-night", "-o", str(still), "--size",
                  "64"], 1, r"^vidstyle: error: content image 'https://example.com/photo.jpg' is a web address; "
                            "download the picture", still)
    # A file: address names a path, which ffmpeg would take but a resume's checks and every other program would
    # not: the path itself is asked for.
    address = f"file://{bunny_short}"
    _bad(capsys, ["render", address, "--style", "starry-night", "-o", str(out), *TINY], 1,
         rf"^vidstyle: error: input 'file:{re.escape(str(bunny_short))}' is a file: address; give the file's path "
         rf"\({re.escape(str(bunny_short))}\)$", out)
    _bad(capsys, ["image", "file:///tmp/photo%20one.jpg", "--style", "starry-night", "-o", str(still)], 1,
         r"^vidstyle: error: content image 'file:/tmp/photo%20one.jpg' is a file: address; give the file's path "
         r"\(/tmp/photo one.jpg\)$", still)


def test_the_event_log_never_appends_to_a_file_that_is_not_one(capsys, bunny_short: Path, tmp_path: Path) -> None:
    import json

    before = bunny_short.read_bytes()
    _bad(capsys, ["render", str(bunny_short), "--style", "starry-night", "-o", str(tmp_path / "o.mp4"), *TINY,
                  "--log-json", str(bunny_short)], 2, "--log-json .* is the input; name another file")
    assert bunny_short.read_bytes() == before, "the input video is untouched"
    with pytest.raises(SystemExit) as refused:  # argparse's refusal
        main(["render", str(bunny_short), "--style", "starry-night", "-o", str(tmp_path / "o.mp4"), *TINY,
              "--log-json", f"{tmp_path}/logs/"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "argument --log-json: " in err and "/logs/ names a folder; name a file" in err
    assert list(tmp_path.iterdir()) == [], "no file named logs where a folder was meant"
    log = tmp_path / "events.jsonl"
    still = ["image", str(shared_asset("coffee.png")), "--style", "starry-night", "-o", str(tmp_path / "c.png"),
             "--size", "32", "--iters", "1", "--device", "cpu", "--quiet", "--log-json", str(log), "--overwrite"]
    assert main(still) == 0 and main(still) == 0, "an earlier log is appended to"
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()].count("FrameDone") == 2


def test_the_event_log_is_none_of_the_commands_files_and_a_refused_command_leaves_none(capsys, bunny_short: Path,
                                                                                      starry: Path,
                                                                                      tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    base = ["render", str(bunny_short), "--style", str(starry), "-o", str(out), *TINY]
    _bad(capsys, [*base, "--log-json", str(out)], 2, "--log-json .* is the output", out)
    _bad(capsys, [*base, "--log-json", str(starry)], 2, "--log-json .* is the style image")
    default = bunny_short.with_name(f"{bunny_short.stem}.{starry.stem}.mp4")
    _bad(capsys, ["render", str(bunny_short), "--style", str(starry), *TINY, "--log-json", str(default)], 2,
         "--log-json .* is the output", default)
    picture = tmp_path / "c.png"
    _bad(capsys, ["image", str(starry), "--style", "starry-night", "-o", str(picture), "--size", "32", "--iters", "1",
                  "--device", "cpu", "--log-json", str(picture)], 2, "--log-json .* is the output", picture)
    out.write_bytes(b"keep me")
    log = tmp_path / "events.jsonl"
    _bad(capsys, [*base, "--log-json", str(log)], 2, "--overwrite")
    assert out.read_bytes() == b"keep me" and not log.exists(), "a refused render leaves no event log"


def test_an_event_log_that_cannot_be_written_is_refused_before_the_work_directory(capsys, bunny_short: Path,
                                                                                  starry: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    base = ["render", str(bunny_short), "--style", str(starry), "-o", str(out), *TINY]
    (tmp_path / "a folder").mkdir()
    _bad(capsys, [*base, "--log-json", str(tmp_path / "a folder")], 2, "--log-json .* is a directory", out)
    _bad(capsys, [*base, "--log-json", str(tmp_path / "none" / "e.jsonl")], 1, "its folder does not exist", out)
    (tmp_path / "a file").write_text("")
    _bad(capsys, [*base, "--log-json", str(tmp_path / "a file" / "e.jsonl")], 1,
         "its folder .*a file is a file, not a folder", out)
    _bad(capsys, ["render", str(bunny_short), "--style", str(starry), "-o", str(tmp_path / "a file" / "o.mp4"),
                  *TINY], 1, "output directory .*a file is a file, not a folder", out)
    _bad(capsys, [*base, "--workdir", str(tmp_path / "a file" / "work")], 1,
         "work directory's folder .*a file is a file, not a folder", out)
    if Path("/proc/self").is_dir():  # Linux: a folder that every permission check passes and that takes no new file
        _bad(capsys, [*base, "--log-json", "/proc/vidstyle-events.jsonl"], 1,
             "cannot write the event log /proc/vidstyle-events.jsonl: ", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file", "a folder"], "no work directory, no log"


def test_an_output_is_never_a_style_image(capsys, bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    style = tmp_path / "style.png"
    ffmpeg("-i", str(starry), "-frames:v", "1", "-vf", "scale=64:-2", str(style))
    before = style.read_bytes()
    _bad(capsys, ["image", str(starry), "--style", str(style), "-o", str(style), "--overwrite", "--size", "32",
                  "--iters", "1", "--device", "cpu"], 2, "output .* is a style image")
    disguised = tmp_path / "style.mp4"  # a picture named as a video is still read as the style
    disguised.write_bytes(before)
    _bad(capsys, ["render", str(bunny_short), "--style", str(disguised), "-o", str(disguised), "--overwrite", *TINY],
         2, "output .* is a style image")
    _bad(capsys, ["preview", str(bunny_short), "--style", str(style), "-o", str(style), "--overwrite", *TINY], 2,
         "output .* is a style image")
    assert style.read_bytes() == before and disguised.read_bytes() == before


def test_a_full_disk_says_to_free_space_and_run_again() -> None:
    import argparse
    import errno

    from vidstyle.cli import _message
    from vidstyle.errors import CheckpointError

    full = CheckpointError("cannot write w/frames/0000002.png: No space left on device")
    full.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    render = argparse.Namespace(command="render")
    assert _message(full, render).endswith("; free some space, then run the same command again: it resumes")
    other = CheckpointError("work directory w disappeared during the render")
    assert _message(other, render).endswith("; use --restart to discard the checkpoints")


def test_an_encoder_that_finds_the_disk_full_says_to_free_space_as_a_checkpoint_does(tmp_path: Path) -> None:
    """ffmpeg says a full disk only in its log: the render's last line named the hidden partial file and stopped
    there, where a checkpoint that found the disk full says what to do."""
    import argparse
    import errno
    from fractions import Fraction

    import numpy as np

    from vidstyle.cli import _message
    from vidstyle.errors import EncodeError
    from vidstyle.io.encode import VideoWriter

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here to stand for a full disk")
    full = tmp_path / "full.mp4"
    full.symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(EncodeError) as failed, VideoWriter(full, (64, 36), Fraction(25), None) as writer:
        for _ in range(50):
            writer.write(np.zeros((36, 64, 3), np.uint8))
    cause = failed.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC, failed.value
    for command in ("render", "demo"):
        assert _message(failed.value, argparse.Namespace(command=command)).endswith(
            "; free some space, then run the same command again: it resumes")
    assert "resumes" not in _message(failed.value, argparse.Namespace(command="image")), "a still has no resume"


def test_a_checkpoint_mismatch_names_the_flags_and_what_older_frames_had() -> None:
    import argparse

    from vidstyle.cli import _message
    from vidstyle.errors import CheckpointMismatch, shown_settings

    names, older, before = ("held_structure", "iters", "follow_fades"), {"held_structure": 1.0}, \
        {"iters": 40, "follow_fades": True}
    exc = CheckpointMismatch(f"work directory w belongs to another render (not the same: setting(s) "
                             f"{shown_settings(names, older, before)})", names, older, before)
    assert "held_structure (1 before: made before the setting existed), iters (40 before), follow_fades (on " \
           "before)" in str(exc)
    assert _message(exc, argparse.Namespace(command="render")).startswith(
        "work directory w belongs to another render (not the same: setting(s) --held-structure (1 before: made "
        "before the setting existed), --iters (40 before), --follow-fades (on before)); use --restart")


@pytest.mark.parametrize("style_kind, pattern", [
    ("missing", "style image not found"),
    ("text", "not a readable image"),
    ("directory", "is a directory"),
    ("dot", r"style image .*dot.png is 1x1: a painting needs at least 16 pixels on each side"),
    # A solid fill, as a JPEG stores it: its palette start would paint every frame that one colour.
    ("flat", r"style image .*flat.jpg is one flat colour \(its pixels vary by 0\.\d levels\): a painting needs "
             r"strokes and colours to paint with$"),
])
def test_bad_styles(capsys, bunny_short: Path, tmp_path: Path, style_kind: str, pattern: str) -> None:
    style = {"missing": tmp_path / "nope.jpg", "text": tmp_path / "style.jpg", "directory": tmp_path,
             "dot": tmp_path / "dot.png", "flat": tmp_path / "flat.jpg"}[style_kind]
    if style_kind == "text":
        style.write_text("hello")
    if style_kind == "dot":
        ffmpeg("-f", "lavfi", "-i", "color=c=blue:size=1x1", "-frames:v", "1", str(style))
    if style_kind == "flat":
        ffmpeg("-f", "lavfi", "-i", "color=c=0xC03020:size=400x300", "-frames:v", "1", str(style))
    out = tmp_path / "o.mp4"
    _bad(capsys, ["render", str(bunny_short), "--style", str(style), "-o", str(out), *TINY], 1, pattern, out)


def test_standard_input_given_as_the_input_is_refused_naming_the_file_behind_it(bunny_short: Path,
                                                                               tmp_path: Path) -> None:
    """ffmpeg, a process of its own, read its own standard input: "cannot read /dev/stdin as a video" of a video
    that was fine, and "-" was "input not found"."""
    out = tmp_path / "o.mp4"
    with open(bunny_short, "rb") as clip:
        proc = subprocess.run([sys.executable, "-m", "vidstyle", "render", "/dev/stdin", "--style", "starry-night",
                               "-o", str(out), *TINY], stdin=clip, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        "vidstyle: error: input /dev/stdin is standard input, which vidstyle does not read (it reads a video more "
        f"than once): give its name, {bunny_short.resolve()}"], proc.stderr
    proc = run_cli("render", "-", "--style", "starry-night", "-o", str(out), *TINY)
    assert proc.returncode == 1 and proc.stderr.endswith(
        "input - is standard input, which vidstyle does not read (it reads a video more than once); save the video to "
        "a file and give its name\n"), proc.stderr
    proc = run_cli("image", "-", "--style", "starry-night", "-o", str(tmp_path / "o.png"))
    assert proc.returncode == 1 and proc.stderr.endswith(
        "content image - is standard input, which vidstyle does not read; save the picture to a file and give its "
        "name\n"), proc.stderr
    proc = run_cli("render", "https://example.com/clip.mp4", "--style", "starry-night", "-o", str(out), *TINY)
    assert proc.stderr == ("vidstyle: error: input 'https://example.com/clip.mp4' is a web address; download the "
                           "video and give its file\n"), "typed as it was, not https:/example.com"
    assert not out.exists()


def test_a_picture_opencv_warns_about_is_refused_in_vidstyles_one_line_alone(tmp_path: Path) -> None:
    """A 32-bit float TIFF: OpenCV printed its own WARN line (with its source file's name) before vidstyle's."""
    import cv2
    import numpy as np

    picture = tmp_path / "hdr.tif"
    cv2.imwrite(str(picture), np.random.default_rng(0).random((32, 32, 3), dtype=np.float32))
    proc = run_cli("image", str(picture), "--style", "starry-night", "-o", str(tmp_path / "o.png"), "--size", "32")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"vidstyle: error: content image is not a readable image: {picture}"], \
        proc.stderr


def test_a_truncated_png_style_is_refused_in_one_line(capfd, bunny_short: Path, starry: Path,
                                                      tmp_path: Path) -> None:
    """libpng writes its own error to the process's stderr before it fails; the file is refused before that."""
    whole = tmp_path / "whole.png"
    ffmpeg("-i", str(starry), "-frames:v", "1", str(whole))
    style = tmp_path / "cut.png"
    style.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = tmp_path / "o.mp4"
    assert main(["render", str(bunny_short), "--style", str(style), "-o", str(out), *TINY]) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"vidstyle: error: style image is truncated (a PNG without its end): {style}"], err
    assert not out.exists()


def test_bad_output_locations(capsys, bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    base = ["render", str(bunny_short), "--style", str(starry), *TINY]
    _bad(capsys, [*base, "-o", str(tmp_path / "missing dir" / "o.mp4")], 1, "directory does not exist")
    _bad(capsys, [*base, "-o", "/proc/vidstyle-out.mp4"], 1, "^vidstyle: error: cannot write in the output directory "
                                                            "/proc: ")
    _bad(capsys, [*base, "-o", str(tmp_path / "missing dir") + "/"], 1,
         "output .*missing dir/ names a folder that does not exist; make it first, or name the output file$")
    _bad(capsys, [*base, "-o", str(bunny_short)], 2, "is the input")
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    _bad(capsys, [*base, "-o", str(existing)], 2, "--overwrite")
    assert existing.read_bytes() == b"keep me"
    _bad(capsys, [*base, "-o", str(tmp_path / "o.avi")], 2, "unsupported output type")
    _bad(capsys, [*base, "-o", str(tmp_path / ".mp4")], 2, r"output .*\.mp4 has no file type; name the video with one")


@pytest.mark.parametrize("flags, pattern", [
    (["--size", "0"], "--size"),
    (["--size", "-5"], "--size"),
    (["--size", "100000"], "--size"),
    (["--iters", "0"], "--iters"),
    (["--first-iters", "-1"], "--first-iters"),
    (["--size", "abc"], "invalid int"),
    (["--config", "nonexistent"], "unknown preset"),
    (["--style-blend", "0.5,x"], "comma-separated"),
    (["--style-blend", "1,,2"], "comma-separated"),
    (["--output-size", "99999x2"], "--output-size sides must be at most 8192 pixels"),
    (["--device", "cuda:128"], "--device must be auto, cpu, cuda, cuda:N"),  # torch would take it as cuda:-128
    (["--content-weight", "0", "--style-weight", "0", "--tv-weight", "0", "--structure-weight", "0"],
     "--style-weight is 0, and so are --content-weight, --tv-weight and --structure-weight"),
    # A value that starts with '-' but is not a plain number reaches its own check, not argparse's
    # "expected one argument".
    (["--style-blend", "-1,2"], "--style-blend weights must be finite, non-negative"),
    (["--temporal-weight", "-1e3"], "--temporal-weight"),
    # A value asked for that the other settings would leave unused: refused, never silently ignored.
    (["--config", "fast", "--temporal-weight", "50"],
     "--temporal-weight weighs a loss along the optical flow: it needs --flow dis, farneback or dis\\+farneback "
     "\\(the fast preset sets --flow none\\)$"),
    (["--flow", "none", "--change-tolerance", "0.2"],
     "--change-tolerance checks the optical flow's warp: it needs --flow dis, farneback or dis\\+farneback$"),
    (["--init", "content", "--prev-weight", "0.3"],
     "--prev-weight is the share .* with --init prev \\(--init is content"),
    (["--adam-lr", "0.5"], "--adam-lr is the Adam optimizer's step \\(--optimizer is lbfgs"),
    (["--preserve-colors", "--palette-start"], "--palette-start does nothing while --preserve-colors is on"),
    # What a setting along the flow needs, as the flag and its values.
    (["--flow", "none", "--passes", "2"], "--passes blends .*: it needs --flow dis, farneback or dis\\+farneback$"),
    (["--flow", "none", "--temporal-reach", "4"],
     "--temporal-reach .*: it needs --flow dis, farneback or dis\\+farneback$"),
    (["--flow", "none", "--held-structure", "2"], "--held-structure weighs the structure loss on frames that the "
                                                  "temporal loss holds .*: it needs --flow dis, farneback or "
                                                  "dis\\+farneback$"),
    # The fast preset's flow none, named alone: the temporal weight it leaves at balanced's 15 shapes nothing.
    (["--config", "fast", "--held-structure", "5"], "--held-structure .*: it needs --flow dis, farneback or "
                                                    "dis\\+farneback \\(the fast preset sets --flow none\\)$"),
    # Every other setting named in the command line's words, one-word settings too.
    (["--init", "content", "--held-structure", "2"], "--held-structure .* needs a --temporal-weight over 0 and "
                                                     "--init prev or --passes over 1 \\(--temporal-weight is 15, "
                                                     "--init is content, --passes is 1\\)"),
    (["--structure-weight", "0", "--held-structure", "2"],
     "--held-structure multiplies --structure-weight, which is 0"),
    (["--iters", "3", "--tol", "0.01"], "--tol stops a later frame early only after 10 iterations: it needs --iters "
                                        "over 10 \\(--iters is 3\\)$"),
])
def test_bad_settings(capsys, bunny_short: Path, starry: Path, tmp_path: Path, flags: list[str],
                      pattern: str) -> None:
    out = tmp_path / "o.mp4"
    args = ["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--quiet", *flags]
    with pytest.raises(SystemExit) if pattern in ("invalid int", "comma-separated") else _nothing():
        code = main(args)
        assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]), err
    assert not out.exists()


@pytest.mark.parametrize(("args", "hint"), [
    ([], "vidstyle --help"), (["render"], "vidstyle render --help"), (["paint"], "vidstyle --help"),
    # An option of another command is unknown to this one: the hint is this command's help.
    (["image", "a.png", "-s", "starry-night", "-o", "b.png", "--tol", "0.1"], "vidstyle image --help"),
    # A still draws no noise (no later frame starts from init random): its seed would change nothing.
    (["image", "a.png", "-s", "starry-night", "-o", "b.png", "--seed", "3"], "vidstyle image --help"),
    (["styles", "extra"], "vidstyle styles --help"),
])
def test_usage_errors_point_to_the_right_help(capsys, args: list[str], hint: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidstyle: error: ") and err[0].endswith(f"(see '{hint}')"), err


@pytest.mark.parametrize("preset, overrides", [
    ("balanced", {"held_structure": 2.0}),
    ("quality", {"held_structure": 2.0}),
    # A later pass holds every frame to its neighbours, whatever each frame started from.
    ("balanced", {"held_structure": 2.0, "init": "content", "passes": 2}),
    ("fast", {}),  # the preset's flow none leaves the default held_structure quietly unused
])
def test_held_structure_is_taken_wherever_frames_are_held(preset: str, overrides: dict[str, object]) -> None:
    from vidstyle.config import held_structure_unused, make_config

    config = make_config(preset, **overrides)
    assert config.held_structure == overrides.get("held_structure", 3.0)
    assert (held_structure_unused(config) is None) == (preset != "fast")


def test_malformed_preset(capsys, bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    preset = tmp_path / "mine.toml"
    preset.write_text("size = [unclosed\n")
    out = tmp_path / "o.mp4"
    _bad(capsys, ["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--config", str(preset)],
         2, "malformed preset", out)
    preset.write_text('colour = "blue"\n')
    _bad(capsys, ["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--config", str(preset)],
         2, "unknown setting", out)
    preset.write_text("iters = 0\n")  # the file's value is wrong, not a flag: the message names the file
    _bad(capsys, ["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--config", str(preset)],
         2, r"^vidstyle: error: \S*mine.toml: iters must be between 1 and", out)
    assert main(["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--config", str(preset),
                 *TINY, "--duration", "0.04"]) == 0, "a flag that replaces the file's value is taken"



def test_a_preset_files_value_checked_against_the_command_names_the_file_not_a_flag(
        capsys, bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    preset = tmp_path / "blend.toml"
    preset.write_text("style_blend = [1.0, 2.0]\n")  # valid alone; wrong for the one style this command gives
    out = tmp_path / "o.mp4"
    command = ["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--config", str(preset)]
    _bad(capsys, command, 2, r"^vidstyle: error: \S*blend.toml: style_blend has 2 weights for 1 style", out)
    _bad(capsys, [*command, "--style-blend", "1,3"], 2, r"^vidstyle: error: --style-blend has 2 weights", out)
    # A still's --iters sets first_iters, which the preset also sets: the flag is named, not the file.
    still = ["image", str(starry), "--style", "starry-night", "-o", str(tmp_path / "o.png"), "--iters", "0"]
    _bad(capsys, still, 2, r"^vidstyle: error: --iters must be between 1 and", tmp_path / "o.png")

def test_a_refused_demo_prints_only_the_reason(capsys, tmp_path: Path) -> None:
    _bad(capsys, ["demo", "-o", str(tmp_path / "d.avi"), "--device", "cpu"], 2, "unsupported output type")
    _bad(capsys, ["demo", "-o", str(tmp_path / "d.mp4"), "--device", "foo"], 2, "--device must be auto, cpu,")
    # A folder takes the demo under its default name, as render's -o takes a folder: here it exists already.
    (tmp_path / "vidstyle-demo.mp4").write_bytes(b"an earlier demo")
    _bad(capsys, ["demo", "-o", str(tmp_path), "--device", "cpu"], 2,
         f"output {re.escape(str(tmp_path / 'vidstyle-demo.mp4'))} exists")
    assert (tmp_path / "vidstyle-demo.mp4").read_bytes() == b"an earlier demo"


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_demo_renders_the_bundled_clip_offline(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    proc = run_cli("demo", "-o", str(out), "--quiet", "--device", "cpu", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert str(out.resolve()) in proc.stderr
    info = probe_video(out)
    assert info.frame_count == 132 and info.has_audio
    assert max(info.width, info.height) == read_preset("demo")["size"]


def test_the_demo_is_small_on_a_cpu_and_full_size_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import vidstyle.stylize
    from vidstyle.assets import GPU_DEMO_SIZE, demo_config

    cpu = demo_config("cpu")
    assert (cpu.size, cpu.iters, cpu.first_iters) == tuple(read_preset("demo")[k] for k in ("size", "iters",
                                                                                             "first_iters"))
    # No GPU here: the device check answers as it would on a machine with one.
    monkeypatch.setattr(vidstyle.stylize, "resolve_device", lambda name: torch.device("cuda"))
    gpu = demo_config("cuda")
    assert gpu.size == GPU_DEMO_SIZE and gpu.iters == read_preset("balanced")["iters"]
    assert gpu.device == "cuda"


def test_metrics_refuses_a_source_it_was_not_rendered_from(capsys, bunny_short: Path, starry: Path,
                                                           lavfi_clip, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    assert main(["render", str(bunny_short), "--style", str(starry), "-o", str(out), *TINY]) == 0
    other_length = lavfi_clip("other_length.mp4", size="160x90", seconds=0.2)
    other_shape = lavfi_clip("other_shape.mp4", size="90x90", seconds=0.48)
    _bad(capsys, ["metrics", str(out), "--source", str(other_length)], 1,
         r"has 12 frames and .* has 5: it was not rendered from that source")
    _bad(capsys, ["metrics", str(out), "--source", str(other_shape)], 1, "another shape of picture")
    assert main(["metrics", str(out), "--source", str(bunny_short), "--style", "starry-night"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"frames +12", printed) and "the floor" in printed
    assert re.search(r"warping error \(output\) +[\d.]+ along Farneback, [\d.]+ along DIS", printed), printed
    gain = float(re.search(r"style gain +(-?[\d.]+)", printed).group(1))
    assert gain > 0, "a render in the painting's style is closer to it than its source"
    tiny_source = lavfi_clip("tiny_source.mp4", size="4x4", seconds=0.2)
    tiny = tmp_path / "tiny.mp4"
    ffmpeg("-i", str(tiny_source), "-vf", "hflip", str(tiny))
    _bad(capsys, ["metrics", str(tiny), "--source", str(tiny_source), "--style", "starry-night"], 1,
         "frames of 4x4 are too small for the style figure")


def test_metrics_of_a_single_frame_has_no_warping_error_rather_than_a_perfect_one(capsys, bunny_short: Path,
                                                                                  starry: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.mp4"
    assert main(["render", str(bunny_short), "--style", str(starry), "-o", str(out), *TINY, "--duration", "0.04"]) == 0
    assert main(["metrics", str(out), "--source", str(bunny_short), "--duration", "0.04"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"frames +1\n", printed) and "warping error                n/a" in printed, printed
    assert main(["metrics", str(out), "--source", str(bunny_short), "--duration", "0.04", "--json"]) == 0
    for figures in json.loads(capsys.readouterr().out).values():
        assert figures["warping_error"] is None and figures["source_warping_error"] is None
        assert figures["edge_correlation"] > 0


def test_log_json_writes_every_event_as_one_json_line(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    import json

    log = tmp_path / "events.jsonl"
    assert main(["render", str(bunny_short), "--style", str(starry), "-o", str(tmp_path / "o.mp4"), *TINY,
                 "--log-json", str(log)]) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [r["event"] for r in records]
    assert kinds[0] == "RenderStarted" and kinds[-2:] == ["RenderFinished", "CommandEnded"]
    assert records[-1] == {"event": "CommandEnded", "command": "render", "status": "done", "exit_code": 0,
                           "message": None, "output": str(tmp_path / "o.mp4")}
    assert kinds.count("FrameDone") == kinds.count("FrameSaved") == 12
    assert [r["index"] for r in records if r["event"] == "FrameDone"] == list(range(12))
    still_log = tmp_path / "still.jsonl"
    assert main(["image", str(shared_asset("coffee.png")), "--style", "starry-night", "-o", str(tmp_path / "c.png"),
                 "--size", "32", "--iters", "3", "--device", "cpu", "--quiet", "--log-json", str(still_log)]) == 0
    still = [json.loads(line) for line in still_log.read_text().splitlines()]
    assert [r["event"] for r in still] == ["ImageStarted", "FrameStarted", "IterationDone", "IterationDone",
                                           "IterationDone", "FrameDone", "CommandEnded"]
    assert (still[0]["size"], still[0]["written"], still[0]["notes"]) == ([32, 22], [32, 22], [])
    assert still[-1]["status"] == "done" and still[-1]["output"] == str(tmp_path / "c.png")
    sheet_log = tmp_path / "preview.jsonl"
    assert main(["preview", str(bunny_short), "--style", str(starry), "-o", str(tmp_path / "s.png"), *TINY,
                 "--frames", "2", "--log-json", str(sheet_log)]) == 0
    ended = json.loads(sheet_log.read_text().splitlines()[-1])
    assert ended["event"] == "CommandEnded" and ended["sheet"] == str(tmp_path / "s.png") and len(ended["frames"]) == 2
    assert ended["estimate"]["total_seconds"] > 0


def test_the_bar_counts_finished_frames_only() -> None:
    from vidstyle.cli import _eta_bar, _Progress

    bar = _eta_bar(10, 0, _Progress(quiet=False))
    try:
        bar.n = 1.6  # one frame done and most of the next one's iterations
        assert "| 1/10 [" in str(bar)
        bar.n = 9.95
        assert "| 9/10 [" in str(bar), "the last frame is not done until it is"
    finally:
        bar.close()


def test_one_output_into_a_folder_is_refused_when_it_exists(bunny_short: Path, starry: Path, tmp_path: Path,
                                                            capsys) -> None:
    folder = tmp_path / "renders"
    folder.mkdir()
    assert main(["render", str(bunny_short), "--style", str(starry), "-o", str(folder), *TINY]) == 0
    written = folder / f"{bunny_short.stem}.starry_night.mp4"
    assert written.exists()
    _bad(capsys, ["render", str(bunny_short), "--style", str(starry), "-o", str(folder), *TINY], 2,
         "exists; use --overwrite")


def test_options_that_would_be_ignored_are_refused(bunny_short: Path, starry: Path, tmp_path: Path,
                                                  capsys) -> None:
    _bad(capsys, ["render", str(bunny_short), "--style", str(starry), "--flow", "none", "--temporal-reach", "4",
                  *TINY], 2, "--temporal-reach looks back along the optical flow")
    _bad(capsys, ["image", str(tmp_path / "x.png"), "--style", str(starry), "-o", str(tmp_path / "o.png"),
                  "--animation-every", "3"], 2, "--animation-every sets the pictures of an --animation")


def test_a_reader_that_leaves_early_ends_the_command_quietly() -> None:
    """`vidstyle ... | head`: the pipe closes before the command has printed all; no error line, SIGPIPE's status."""
    proc = subprocess.Popen([sys.executable, "-m", "vidstyle", "styles"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE and err == "", err


def test_the_modules_the_api_documentation_names_are_attributes_of_the_package() -> None:
    """The README names vidstyle.preview.preview and vidstyle.events; a fresh interpreter finds them after
    `import vidstyle` alone, and `import vidstyle` itself still loads no torch (the command line relies on it)."""
    code = ("import sys, vidstyle; assert 'torch' not in sys.modules; "
            "print(vidstyle.preview.preview.__name__, vidstyle.events.FrameDone.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["preview", "FrameDone"]


def test_help_shows_defaults_as_the_command_line_takes_them() -> None:
    """A switch's default as on/off and an empty list as none, not Python's False and ()."""
    shown = " ".join(run_cli("render", "--help").stdout.split())
    assert "keep the source's colours, take only luminance from the style [balanced: off]" in shown
    assert "(default equal) [balanced: none]" in shown
    assert "False]" not in shown and "()]" not in shown


def test_a_blend_of_the_wrong_length_is_told_in_plain_words() -> None:
    from vidstyle.config import check_style_count, make_config
    from vidstyle.errors import SettingError

    with pytest.raises(SettingError, match=r"^style_blend has 1 weight for 2 style images: give one for each$"):
        check_style_count(make_config("balanced", style_blend=(1.0,)), 2)
    with pytest.raises(SettingError, match=r"^style_blend has 2 weights for 1 style image: give one for each$"):
        check_style_count(make_config("balanced", style_blend=(1.0, 2.0)), 1)
    # Each finite, they add up to infinity (every style would weigh nothing); too large for a float at all.
    for blend in ((1e308, 1e308), (10**400,)):
        with pytest.raises(SettingError, match=r"^style_blend weights must be .* add up to a finite number \(got"):
            make_config("balanced", style_blend=blend)
    assert make_config("balanced", style_blend=(1.5e308,)).style_blend == (1.5e308,), "large, but a float"


def test_the_library_names_other_settings_in_its_own_words() -> None:
    """The API's message names the settings as Config does; only the command line turns them into flags."""
    from vidstyle.config import make_config
    from vidstyle.errors import SettingError

    with pytest.raises(SettingError, match=r"needs a temporal_weight over 0 and init prev or passes over 1 "
                                           r"\(temporal_weight is 15, init is content, passes is 1\)$"):
        make_config("balanced", init="content", held_structure=2.0)
    with pytest.raises(SettingError, match=r"^passes blends .*: it needs flow dis, farneback or dis\+farneback$"):
        make_config("balanced", flow="none", passes=2)
    with pytest.raises(SettingError, match=r"^palette_start does nothing while preserve_colors is on"):
        make_config("balanced", preserve_colors=True, palette_start=True)


def test_an_flv_whose_video_starts_after_its_audio_keeps_its_audio(tmp_path: Path, starry: Path) -> None:
    """An FLV's first frame comes a little after its audio, so the audio is cut by that much; seeking an FLV
    without an index went to its end, and the render was written without its audio, exit 0, saying "copy aac"."""
    source = tmp_path / "stream.flv"
    ffmpeg("-i", str(shared_asset("field_pan_with_audio.mp4")), "-t", "1", "-vf", "scale=320:180", "-c:v", "libx264",
           "-c:a", "aac", str(source))
    out = tmp_path / "out.mp4"
    proc = run_cli("render", str(source), "--style", str(starry), "-o", str(out), *TINY[:-1])
    assert proc.returncode == 0, proc.stderr
    assert "audio: re-encode aac to AAC (this file's audio cannot be cut by seeking)" in proc.stderr
    assert probe_video(out).has_audio
    assert abs(_audio_seconds(out) - probe_video(out).duration) < 0.1, "the audio lasts as the video does"


def test_presets_lists_each_preset_and_where_their_files_are(capsys) -> None:
    from vidstyle.config import presets_dir, read_preset

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["balanced", "demo", "fast", "quality"]
    assert lines[0].startswith("balanced   (default)") and "flow none" in lines[2]
    assert f"size {read_preset('quality')['size']}," in lines[3]
    assert lines[-1].startswith(f"the files are in {presets_dir()};")
    assert all((presets_dir() / f"{line.split()[0]}.toml").is_file() for line in lines[:-1])


def test_the_event_logs_check_neither_waits_on_a_pipe_nor_makes_a_links_target(tmp_path: Path) -> None:
    import os
    import threading

    from vidstyle.cli import _try_appending

    pipe = tmp_path / "events"
    os.mkfifo(pipe)
    check = threading.Thread(target=_try_appending, args=(pipe,), daemon=True)
    check.start()
    check.join(10)
    assert not check.is_alive(), "opened for writing, a pipe waits for a reader"
    link = tmp_path / "log.jsonl"
    link.symlink_to(tmp_path / "target.jsonl")  # leads nowhere yet
    _try_appending(link)
    assert link.is_symlink() and not (tmp_path / "target.jsonl").exists(), "the link kept, its target not made"
    _try_appending(tmp_path / "new.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events", "log.jsonl"], "a free name stays free"


def test_a_render_on_workers_shows_progress_off_a_terminal_too(capsys) -> None:
    """Ray workers send no frame events: off a terminal (a log, nohup) such a render printed nothing for hours."""
    from fractions import Fraction

    from vidstyle.cli import _Progress
    from vidstyle.events import RenderStarted, WorkersBusy

    progress = _Progress(quiet=False)
    assert progress.plain, "pytest's stderr is no terminal"
    progress.PLAIN_EVERY = 0.0  # type: ignore[misc] - every report a line
    progress(RenderStarted(12, 0, 0, (64, 36), Fraction(25), "ray, 2 workers", Path("w"), 1, "no audio"))
    progress(WorkersBusy(2, 2, 3))
    progress(WorkersBusy(1, 2, 12))
    progress.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[-2:] == ["frames done: 3/12, 2/2 workers busy", "frames done: 12/12, 1/2 workers busy"]


def test_the_closing_line_of_a_resumed_render_says_which_frames_this_run_made(capsys) -> None:
    """'wrote out.mp4 (3000 frames in 19s)' after a resume read as 3000 frames made in 19 s."""
    from vidstyle.cli import _Progress
    from vidstyle.events import RenderFinished

    progress = _Progress(quiet=False)
    for stylized in (12, 5, 0):
        progress(RenderFinished(Path("out.mp4"), 12, 19.0, stylized, (4.0, 4, 4) if stylized else None))
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("wrote")] == [
        "wrote out.mp4 (12 frames in 19s)", "wrote out.mp4 (12 frames, 7 made by earlier runs, in 19s)",
        "wrote out.mp4 (12 frames, all made by earlier runs, in 19s)"]


def test_the_progress_of_three_passes_ends_at_the_total(capsys: pytest.CaptureFixture[str]) -> None:
    """A third of a frame a pass, summed as floats, ended off the total (over it: tqdm warns; under it: the last line
    said 19999/20000, or 99 %); a resumed render starts at the passes already made."""
    from fractions import Fraction

    from vidstyle.cli import _Progress
    from vidstyle.events import FrameDone, FrameStarted, RenderStarted

    for total, made in ((11, ()), (20000, ()), (4, (4, 1))):
        progress = _Progress(quiet=False)
        progress.PLAIN_EVERY = 1e9  # type: ignore[misc] - only the last frame's line
        progress(RenderStarted(total, 0, 0, (64, 36), Fraction(25), "cpu", Path("w"), 1, "no audio", passes=3,
                               earlier_passes_made=made))
        assert progress.frames_done == pytest.approx(sum(made) / 3)
        for _ in range(total * 3 - sum(made)):
            progress(FrameDone(0, 1.0, 0.1, False, 4, 1))
        progress.close()
        assert progress.frames_done == total
        assert ", 100% done: " in capsys.readouterr().err.splitlines()[-1]
    # A batch's next render starts with none of its passes begun (the bar showed the last render's pass and frame).
    progress(FrameStarted(7, 4, False, 3))
    progress(RenderStarted(4, 0, 0, (64, 36), Fraction(25), "cpu", Path("w"), 1, "no audio", passes=3))
    assert progress.pass_number == progress.index == 0
    progress.close()


@pytest.mark.parametrize(("rows", "columns", "expected"), [(30, 100, 100), (0, 100, 0), (30, 0, 0)])
def test_a_terminal_without_rows_or_columns_gets_plain_lines(monkeypatch: pytest.MonkeyPatch, rows: int,
                                                             columns: int, expected: int) -> None:
    """tqdm draws nothing in a pseudo-terminal that reports columns but no rows (`script -c` without `stty rows`):
    such a render showed no progress at all."""
    import fcntl
    import os
    import struct
    import termios

    from vidstyle.cli import _terminal_columns

    leader, follower = os.openpty()
    try:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        with open(follower, "w", closefd=False) as terminal:
            monkeypatch.setattr(sys, "stderr", terminal)
            assert _terminal_columns() == expected
    finally:
        os.close(leader)
        os.close(follower)


def test_a_damaged_picture_gets_vidstyles_one_line_without_opencvs_own(tmp_path: Path, starry: Path) -> None:
    """OpenCV printed its own error lines ("[ERROR:0@0.1] global grfmt_tiff.cpp ...") above vidstyle's."""
    import cv2
    import numpy as np

    whole = tmp_path / "whole.tif"
    cv2.imwrite(str(whole), np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    ran = run_cli("image", str(cut), "--style", str(starry), "-o", str(tmp_path / "out.png"), "--size", "64")
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines() == [f"vidstyle: error: content image is not a readable image: {cut}"]
    ran = run_cli("image", str(cut), "--style", str(starry), "-o", str(tmp_path / "out.png"), "--size", "64",
                  "--debug")
    assert "[ERROR:" in ran.stderr, "with --debug, what OpenCV says about the file"
