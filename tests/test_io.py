"""ffmpeg edges: probing, streaming decode, encode with audio, and no process left behind."""

from __future__ import annotations

import io
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import zlib
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import child_ffmpeg_pids, decoded, ffmpeg, needs_mpegts, reads_animated_webp, shared_asset

import vidstyle
from vidstyle.assets import demo_clip
from vidstyle.errors import CheckpointError, DecodeError, InputError, OutputError, VideoOpenError, VidstyleError
from vidstyle.io.decode import read_frames
from vidstyle.io.encode import VideoWriter, frame_repeats, plan_audio, written_rate
from vidstyle.io.ffmpeg import (
    check_ffmpeg_version,
    demuxer_names,
    ffmpeg_exe,
    ffmpeg_too_old,
    file_url,
    readable_formats,
)
from vidstyle.io.images import read_image, write_atomic, write_image
from vidstyle.io.paths import publish
from vidstyle.io.probe import VideoInfo, probe_video, size_to_fit


def test_probe_bundled_clip() -> None:
    info = probe_video(demo_clip())
    assert (info.width, info.height) == (1280, 720)
    assert info.fps == Fraction(25)
    assert info.frame_count == 132
    assert info.audio_codecs == ("aac",)
    assert not info.variable_rate


def test_probe_shared_clips() -> None:
    field = probe_video(shared_asset("field_pan_with_audio.mp4"))
    assert (field.width, field.height, field.frame_count, field.fps) == (640, 360, 125, Fraction(25))
    assert field.has_audio
    bikes = probe_video(shared_asset("bikes_street_no_audio.mp4"))
    assert (bikes.width, bikes.height, bikes.frame_count) == (640, 272, 125)
    assert not bikes.has_audio


def test_ntsc_rate_is_an_exact_fraction(lavfi_clip) -> None:
    clip = lavfi_clip("ntsc.mp4", rate="30000/1001", seconds=0.5)
    info = probe_video(clip)
    assert info.fps == Fraction(30000, 1001)
    assert info.frame_count == 15


def test_size_to_fit_keeps_aspect_and_even_sides() -> None:
    assert size_to_fit(640, 360, 96) == (96, 54)
    assert size_to_fit(640, 272, 96) == (96, 40)
    assert size_to_fit(361, 641, 97) in ((54, 96), (54, 98))
    for w, h in (size_to_fit(333, 201, 65), size_to_fit(1920, 1080, 101)):
        assert w % 2 == 0 and h % 2 == 0


def test_decode_streams_every_frame_at_requested_size(lavfi_clip) -> None:
    clip = lavfi_clip("odd.mp4", size="67x45", seconds=0.4)
    info = probe_video(clip)
    assert (info.width, info.height) == (67, 45)
    frames = list(read_frames(info, size_to_fit(info.width, info.height, 64)))
    assert len(frames) == info.frame_count == 10
    assert frames[0].rgb.shape == (42, 64, 3)
    assert [f.index for f in frames] == list(range(10))
    assert not child_ffmpeg_pids()


def test_rotation_metadata_is_honoured(lavfi_clip, media: Path) -> None:
    plain = lavfi_clip("landscape.mp4", size="64x32", audio=False)
    rotated = media / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    info = probe_video(rotated)
    assert info.rotation in (90, 270)
    assert (info.width, info.height) == (32, 64)
    assert decoded(rotated)[0].shape == (64, 32, 3)


def test_variable_frame_rate_keeps_every_frame(media: Path) -> None:
    vfr = media / "vfr.mkv"
    # Frames at irregular times, as phones record them: every third frame dropped from a 30 fps source.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=30:duration=1", "-vf", "select='mod(n\\,3)'",
           "-fps_mode", "vfr", "-c:v", "libx264", str(vfr))
    info = probe_video(vfr)
    assert info.variable_rate
    assert info.frame_count == 20
    assert len(decoded(vfr)) == 20
    assert abs(info.duration - 1.0) < 0.1


def _vfr(times: list[float]) -> VideoInfo:
    average = Fraction((len(times) - 1) / (times[-1] - times[0])).limit_denominator(1_000_000)
    return VideoInfo(Path("vfr.mp4"), 64, 48, 0, average, len(times), True, (), "", tuple(times), (0,), "h264")


_JITTER = np.random.default_rng(0)
VARIABLE_RATES = {
    # name: (frame times, the rate written, frames dropped)
    "a gap of two frames at 25 fps": ([i / 25 for i in range(50) if i not in (30, 31)], 25, 0),
    "30 fps in a millisecond time base, every third frame gone": ([round(i / 30, 3) for i in range(90) if i % 3],
                                                                  30, 0),
    "29.97 fps with frames gone": ([round(i * 1001 / 30000, 4) for i in range(300) if i % 7], Fraction(30000, 1001),
                                   0),
    "a phone's 30 fps, jittered by 3 ms": (list(np.cumsum(1 / 30 + _JITTER.normal(0, 0.003, 300))), 30, None),
    "30 fps slowing to 15, jittered by 2 ms": (list(np.cumsum(np.r_[1 / 30 + _JITTER.normal(0, 0.002, 100),
                                                                    1 / 15 + _JITTER.normal(0, 0.002, 100)])),
                                               Fraction(30000, 1001), 0),
    "15 fps with a few frames at 30": (list(np.cumsum([1 / 15] * 190 + [1 / 30] * 10)), 30, 0),
    "bursts of frames a millisecond apart": (sorted([*np.arange(0, 2, 1 / 30),
                                                     *(np.arange(0, 2, 1 / 30) + 0.001)[:20]]),
                                             Fraction(60000, 1001), 0),
    "a step under a millisecond": ([0, 0.0004, 0.04, 0.1, 0.2], 25, 0),
}


@pytest.mark.parametrize("name", list(VARIABLE_RATES))
def test_a_variable_rate_source_is_written_at_one_rate_with_each_frame_at_its_time(name: str) -> None:
    times, expected, dropped = VARIABLE_RATES[name]
    info = _vfr([float(t) for t in times])
    rate = written_rate(info)
    assert rate == expected
    repeats = frame_repeats(info.frame_times, rate)
    assert len(repeats) == len(times)
    if dropped is not None:
        assert repeats.count(0) == dropped
    assert repeats.count(0) <= 0.01 * len(times) and rate <= 240
    shown = np.cumsum([0, *repeats])[:-1] / float(rate)  # when each picture of a frame is first shown
    kept = np.array(repeats) > 0
    late = shown[kept] - (np.array(times) - times[0])[kept]
    assert np.abs(late).max() <= 1 / float(rate) + 1e-9, "every frame within a picture of its own time"


def test_a_part_of_a_variable_rate_video_lasts_until_its_next_frame() -> None:
    """Its audio runs until the next frame's time: a part that ends before a gap holds its last frame across it."""
    times = [i / 25 for i in range(50) if i not in (30, 31)]  # frame 29 of the source lasts three pictures
    assert frame_repeats(times[20:30], Fraction(25), times[30]) == [1] * 9 + [3]
    assert frame_repeats(times[20:30], Fraction(25)) == [1] * 10


def test_a_render_of_a_clip_with_a_gap_keeps_its_rate_length_and_sync(media: Path, starry: Path) -> None:
    """Two frames missing in the middle, as a stream-copied cut leaves them: written at the average rate (24.5 fps),
    the render would be slower than the source and drift from its audio; it is written at 25 fps, the frame before
    the gap shown for three pictures."""
    from test_cli import TINY, _audio_seconds

    from vidstyle.cli import main

    gap = media / "gap.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2", "-f", "lavfi", "-i", "sine=duration=2",
           "-vf", "hue=h=t*900,select='not(between(n\\,30\\,31))'", "-fps_mode", "passthrough", "-c:v", "libx264",
           "-c:a", "aac", str(gap))
    source = probe_video(gap)
    assert source.variable_rate and source.frame_count == 48 and source.fps != 25, "the clip is made as described"
    out = media / "gap_out.mp4"
    assert main(["render", str(gap), "--style", str(starry), "-o", str(out), *TINY, "--init", "content",
                 "--flow", "none", "--overwrite"]) == 0
    written = probe_video(out)
    assert (written.fps, written.frame_count, written.variable_rate) == (25, 50, False)
    frames = [f.astype(int) for f in decoded(out)]  # the hue turns 36 degrees a frame: each frame is its own
    change = [float(np.abs(a - b).mean()) for a, b in zip(frames, frames[1:], strict=False)]
    assert max(change[29], change[30]) < 1 < 5 < min(change[:29] + change[31:]), "frame 29 fills the gap, alone"
    assert abs(_audio_seconds(out) - 2.0) < 0.05


def test_metrics_pair_each_frame_of_a_variable_rate_source_with_its_own_picture(media: Path) -> None:
    """A render of a variable-rate source has more frames than the source (a frame held across a gap fills several
    pictures; one may be dropped where the source is faster): `vidstyle metrics` refused to score it, and pairing by
    index would compare every frame after the gap with another frame's picture. Here the source itself, written the
    way a render writes it: every pair is a frame and its own picture."""
    from vidstyle.io.encode import written_timing
    from vidstyle.metrics import _paired_frames, measure_video

    gap = media / "gap_for_metrics.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=2", "-vf",
           "hue=h=t*900,select='not(between(n\\,30\\,31))'", "-fps_mode", "passthrough", "-c:v", "libx264", str(gap))
    source = probe_video(gap)
    rate, repeats = written_timing(source, 0, source.frame_count)
    assert source.variable_rate and repeats is not None and sum(repeats) == 50, "the clip is made as described"
    out = media / "gap_written.mp4"
    with VideoWriter(out, (64, 48), rate, None, crf=0, repeats=repeats) as writer:
        for frame in read_frames(source, (64, 48)):
            writer.write(frame.rgb)
    assert probe_video(out).frame_count == 50
    outputs, sources = _paired_frames(out, gap, None, None)
    pairs = list(zip(outputs, sources, strict=True))
    assert len(pairs) == 48
    def difference(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(int) - b.astype(int)).mean())

    own = [difference(a, b) for a, b in pairs]  # the colour conversion's few levels
    next_ones = [difference(a, b) for (a, _), (_, b) in zip(pairs, pairs[1:], strict=False)]
    assert max(own) < 4 and min(next_ones) > 3 * max(own), (own, next_ones)  # the hue turns 36 degrees a frame
    scored = measure_video(out, gap)
    assert scored.frames == 48 and scored.edge_correlation > 0.95
    one_each = media / "gap_one_each.mp4"  # a picture a frame, as another tool (or an older vidstyle) writes it
    with VideoWriter(one_each, (64, 48), Fraction(25), None, crf=0) as writer:
        for frame in read_frames(source, (64, 48)):
            writer.write(frame.rgb)
    pairs = list(zip(*_paired_frames(one_each, gap, None, None), strict=True))
    assert len(pairs) == 48 and max(difference(a, b) for a, b in pairs) < 4


def test_the_written_video_says_its_colours_are_bt709_and_holds_them_so(media: Path) -> None:
    """Untagged, the video held BT.601's matrix, and a player that takes an untagged HD video for BT.709 shifted its
    colours (a red of 200, 40, 60 showed as 212, 55, 57); now it is converted with BT.709's and tagged with it."""
    from vidstyle.io.ffmpeg import ffmpeg_exe

    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:] = (200, 40, 60)
    out = media / "red.mp4"
    _write(out, [rgb] * 3, Fraction(25), None)
    banner = subprocess.run([ffmpeg_exe(), "-i", str(out)], capture_output=True, text=True).stderr
    assert "yuv420p(tv, bt709, progressive)" in banner, banner
    as_709 = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(out), "-frames:v", "1", "-vf",
                             "scale=in_color_matrix=bt709", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                            capture_output=True, check=True).stdout
    assert np.abs(np.frombuffer(as_709, np.uint8)[:3].astype(int) - (200, 40, 60)).max() <= 3
    assert np.abs(decoded(out)[0][32, 32].astype(int) - (200, 40, 60)).max() <= 3, "and vidstyle reads it back"


def _write(path: Path, frames: list[np.ndarray], fps: Fraction, source) -> None:
    height, width = frames[0].shape[:2]
    with VideoWriter(path, (width, height), fps, source) as writer:
        for frame in frames:
            writer.write(frame)


def test_roundtrip_keeps_frames_rate_and_audio(bunny_short: Path, media: Path) -> None:
    info = probe_video(bunny_short)
    frames = [f.rgb for f in read_frames(info, (96, 54))]
    out = media / "roundtrip.mp4"
    _write(out, frames, info.fps, info)
    back = probe_video(out)
    assert back.frame_count == len(frames) == info.frame_count
    assert back.fps == info.fps
    assert back.audio_codecs == ("aac",)  # stream-copied: the 5.1 AAC fits MP4 as it is
    assert (back.width, back.height) == (96, 54)
    err = np.abs(decoded(out)[5].astype(int) - frames[5].astype(int)).mean()
    assert err < 6, "H.264 at crf 18 should be close to the frames written"
    assert not child_ffmpeg_pids()


def test_no_audio_source_gives_silent_output(lavfi_clip, media: Path) -> None:
    clip = lavfi_clip("silent.mp4", audio=False)
    info = probe_video(clip)
    out = media / "silent_out.mp4"
    _write(out, [f.rgb for f in read_frames(info, (64, 48))], info.fps, info)
    assert not probe_video(out).has_audio


def _ffmpeg_banner(path: Path) -> str:
    """What `ffmpeg -i` says of a file: its tags, and each stream with its language in brackets."""
    import subprocess

    from vidstyle.io.ffmpeg import ffmpeg_exe

    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", file_url(path)], capture_output=True,
                          text=True).stderr


@pytest.mark.parametrize("audio", [True, False])
def test_the_sources_title_creation_time_and_languages_are_kept(lavfi_clip, media: Path, audio: bool) -> None:
    plain = lavfi_clip(f"plain_{audio}.mp4", audio=audio)
    tagged = media / f"tagged_{audio}.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", "-metadata", "title=Holiday in Arles",
           "-metadata", "creation_time=2024-06-01T10:20:30Z", "-metadata:s:v:0", "language=fra",
           *(("-metadata:s:a:0", "language=deu") if audio else ()), str(tagged))
    info = probe_video(tagged)
    out = media / f"tagged_out_{audio}.mp4"
    _write(out, [f.rgb for f in read_frames(info, (48, 64))], info.fps, info)
    banner = _ffmpeg_banner(out)
    assert "Holiday in Arles" in banner
    assert "2024-06-01T10:20:30" in banner
    assert "(fra): Video" in banner
    assert ("(deu): Audio" in banner) == audio
    back = probe_video(out)
    assert back.rotation == 0 and (back.width, back.height) == (48, 64), "frames are written upright, unrotated"


def test_pcm_audio_is_reencoded_for_mp4(lavfi_clip, media: Path) -> None:
    clip = lavfi_clip("pcm.mov", extra=("-c:a", "pcm_s16le"))
    info = probe_video(clip)
    assert info.audio_codecs == ("pcm_s16le",)
    out = media / "pcm_out.mp4"
    _write(out, [f.rgb for f in read_frames(info, (64, 48))], info.fps, info)
    assert probe_video(out).audio_codecs == ("aac",)


def test_subtitle_streams_are_counted_and_their_dropping_said_at_the_start(bunny_short: Path, starry: Path,
                                                                             tmp_path: Path) -> None:
    from vidstyle.config import make_config
    from vidstyle.pipeline import prepare_render, started_event

    captions = tmp_path / "captions.srt"
    captions.write_text("1\n00:00:00,000 --> 00:00:00,300\nhello\n\n2\n00:00:00,300 --> 00:00:00,450\nbye\n")
    clip = tmp_path / "subtitled.mp4"
    ffmpeg("-i", str(bunny_short), "-i", str(captions), "-i", str(captions), "-map", "0", "-map", "1", "-map", "2",
           "-c:v", "copy", "-c:a", "copy", "-c:s", "mov_text", str(clip))
    assert probe_video(clip).subtitle_streams == 2 and probe_video(bunny_short).subtitle_streams == 0
    job = prepare_render(clip, [starry], tmp_path / "out.mp4", make_config("fast", size=32, device="cpu"))
    notes = started_event(job, "cpu", [], set()).notes
    assert "the source's 2 subtitle streams are not written: the output holds the video and its audio" in notes
    silent = tmp_path / "subtitled_silent.mp4"
    ffmpeg("-i", str(clip), "-map", "0:v", "-map", "0:s", "-c", "copy", str(silent))
    job = prepare_render(silent, [starry], tmp_path / "out2.mp4", make_config("fast", size=32, device="cpu"))
    assert "the source's 2 subtitle streams are not written: the output holds the video" in \
        started_event(job, "cpu", [], set()).notes


def test_video_streams_after_the_first_are_counted_and_their_dropping_said(bunny_short: Path, starry: Path,
                                                                            tmp_path: Path) -> None:
    """A second video stream (another angle, a preview track) was dropped with nothing said, where subtitles were."""
    from vidstyle.config import make_config
    from vidstyle.pipeline import prepare_render, started_event

    clip = tmp_path / "two_angles.mkv"
    ffmpeg("-i", str(bunny_short), "-f", "lavfi", "-i", "testsrc=size=32x24:rate=25:duration=0.2", "-map", "0:v",
           "-map", "1", "-c:v", "libx264", str(clip))
    assert probe_video(clip).other_video_streams == 1 and probe_video(bunny_short).other_video_streams == 0
    job = prepare_render(clip, [starry], tmp_path / "out.mp4", make_config("fast", size=32, device="cpu"))
    assert "the source has 2 video streams: the first is rendered, the other is not written" in \
        started_event(job, "cpu", [], set()).notes


def test_failed_encode_leaves_no_file_and_no_process(lavfi_clip, media: Path) -> None:
    info = probe_video(lavfi_clip("fail_src.mp4"))
    out = media / "failed.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, (64, 48), info.fps, info) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
            raise RuntimeError("stylizer crashed")
    assert not out.exists()
    assert not child_ffmpeg_pids()


def test_abandoned_decode_stops_ffmpeg() -> None:
    info = probe_video(demo_clip())
    frames = read_frames(info, (64, 36))
    next(frames)
    frames.close()
    assert not child_ffmpeg_pids()


@pytest.mark.parametrize("content, reason", [
    (b"this is not a video\n" * 50, "cannot read"),
    (b"", r"bad\.mp4 is empty \(0 bytes\): a download or copy that did not finish\?$"),
])
def test_unreadable_inputs_are_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(VideoOpenError, match=reason):
        probe_video(bad)


# --- every path reaches ffmpeg as exactly that file ------------------------------------------------------------

TRICKY_NAMES = ["file:b.mp4", "concat:a.mp4|b.mp4", "-x.mp4", "a b.mp4", "%d.mp4", "x%03d.mp4", "[x.mp4", "y].mp4",
                "pipe:0.mp4", "été 日本.mp4"]


@pytest.fixture()
def decoys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a.mp4, b.mp4, x.mp4 and 0.mp4: flat red, 64x48, 3 frames, no audio.

    Each tricky name, misread as a protocol, an option or a pattern, would land on one of these.
    """
    monkeypatch.chdir(tmp_path)
    for name in ("a.mp4", "b.mp4", "x.mp4", "0.mp4", "1.mp4", "001.mp4"):
        ffmpeg("-f", "lavfi", "-i", "color=c=red:size=64x48:rate=25:duration=0.12", "-c:v", "libx264",
               str(tmp_path / name))
    return tmp_path


def _make_tricky(name: str) -> None:
    """testsrc2 at 48x32, 5 frames, with audio: unlike every decoy in size, length, content and sound."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=48x32:rate=25:duration=0.2", "-f", "lavfi",
           "-i", "sine=duration=0.2", "-c:v", "libx264", "-c:a", "aac", "-f", "mp4", file_url(name))


@pytest.mark.parametrize("name", TRICKY_NAMES)
def test_tricky_input_names_are_read_as_themselves(decoys: Path, name: str) -> None:
    _make_tricky(name)
    info = probe_video(Path(name))  # relative, as a user types it
    assert (info.width, info.height, info.frame_count, info.has_audio) == (48, 32, 5, True)
    frames = [f.rgb for f in read_frames(info, (48, 32))]
    assert len(frames) == 5
    assert frames[0].std() > 20, "testsrc2 is colourful; a decoy is flat red"


@pytest.mark.parametrize("name", ["file:b.mp4", "concat:a.mp4|b.mp4", "-x.mp4", "%d.mp4", "été [o].mp4"])
def test_tricky_output_and_audio_source_names_are_written_as_themselves(decoys: Path, name: str) -> None:
    source = "concat:a.mp4|b.mp4" if name != "concat:a.mp4|b.mp4" else "file:b.mp4"
    _make_tricky(source)
    info = probe_video(Path(source))
    before = {p.name: p.read_bytes() for p in decoys.iterdir() if p.name != source}
    _write(Path(name), [np.full((32, 48, 3), 200, np.uint8)] * 4, info.fps, info)
    out = probe_video(Path(name))
    assert (out.width, out.height, out.frame_count, out.audio_codecs) == (48, 32, 4, ("aac",))
    assert {p.name: p.read_bytes() for p in decoys.iterdir() if p.name in before} == before, "a decoy changed"


# --- frames lost in decoding -----------------------------------------------------------------------------------

def _damage_middle(clean: Path, damaged: Path) -> None:
    """Overwrite a fifth of the media data, two fifths in: the index still lists every packet."""
    data = bytearray(clean.read_bytes())
    mdat = data.find(b"mdat")
    span = len(data) - mdat
    at, size = mdat + span * 2 // 5, span // 5
    data[at:at + size] = b"\xff" * size
    damaged.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def damaged_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("damaged")
    clean = folder / "clean.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1", "-c:v", "libx264", "-g", "5", "-bf", "0",
           "-movflags", "+faststart", str(clean))
    _damage_middle(clean, folder / "damaged.mp4")
    return folder / "damaged.mp4"


def test_frames_lost_in_a_damaged_file_are_an_error(damaged_clip: Path) -> None:
    info = probe_video(damaged_clip)
    assert info.frame_count == 25, "the container's index still promises every frame"
    got: list[int] = []
    with pytest.raises(DecodeError, match=r"decoded \d+ of the 25 frames the file's index promises") as caught:
        for frame in read_frames(info, (64, 48)):
            got.append(frame.index)
    message = str(caught.value)
    assert "\n" not in message and "near frame" in message and "re-encode" in message and "--" not in message
    assert 0 < len(got) < 25 and got == list(range(len(got)))
    assert not child_ffmpeg_pids()


def test_a_video_of_a_codec_ffmpeg_cannot_decode_is_refused_at_the_probe(tmp_path: Path) -> None:
    """Its packets copy, so the probe passed, and the decode failed at the first frame in ffmpeg's words ("Decoding
    requested, but no decoder found for: none | Error opening output file -.")."""
    known = tmp_path / "mpeg4.avi"
    ffmpeg("-i", str(demo_clip()), "-t", "0.5", "-an", "-c:v", "mpeg4", str(known))
    unknown = tmp_path / "unknown.avi"
    unknown.write_bytes(known.read_bytes().replace(b"FMP4", b"QQQQ"))  # a tag that names no codec ffmpeg knows
    assert probe_video(known).frame_count > 0
    with pytest.raises(VideoOpenError) as refused:
        probe_video(unknown)
    assert str(refused.value) == (f"{unknown}'s video is in a format this ffmpeg cannot decode (tagged 'QQQQ'): "
                                  "convert it with a tool that reads it, or use an ffmpeg that does "
                                  "(IMAGEIO_FFMPEG_EXE names one)")


def test_a_file_garbled_after_its_first_frame_is_said_to_be_damaged_there(tmp_path: Path) -> None:
    """ffmpeg gives up where most packets fail to decode; the line was its own words and its threads' exit codes
    ("Decode error rate 0.992 exceeds maximum 0.666667 | Task finished with error code: -1145393733 ...")."""
    whole = tmp_path / "faststart.mp4"  # its index first, so that what follows the frames' start is frames alone
    ffmpeg("-i", str(demo_clip()), "-c", "copy", "-an", "-movflags", "+faststart", str(whole))
    data = bytearray(whole.read_bytes())
    start = data.find(b"mdat") + 5004  # the box's first packets (the first frame) kept
    end = len(data) - (len(data) - start) // 10  # and its last tenth: ffmpeg decodes past the damage to the end
    data[start:end] = np.random.default_rng(0).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    garbled = tmp_path / "garbled.mp4"
    garbled.write_bytes(bytes(data))
    info = probe_video(garbled)
    got: list[int] = []
    with pytest.raises(DecodeError) as caught:
        for frame in read_frames(info, (64, 36)):
            got.append(frame.index)
    damaged_from = re.fullmatch(rf"{re.escape(str(garbled))} is damaged from about frame (\d+) on: ffmpeg could not "
                                "decode most of its frames", str(caught.value))
    assert damaged_from is not None, str(caught.value)
    assert int(damaged_from.group(1)) <= 2 < len(got), "where the damage began, not how many frames decoded"
    assert not child_ffmpeg_pids()


def test_ffmpegs_threads_reports_of_their_own_ends_are_left_out_of_its_last_words() -> None:
    from vidstyle.io.ffmpeg import StderrTail

    said = (b"[h264 @ 0x55d0c3a1b2c0] Invalid NAL unit size\n"
            b"[vist#0:0/h264 @ 0x55d0c3a1b2d0] Task finished with error code: -1145393733 (Error number -1145393733 "
            b"occurred)\n"
            b"[vist#0:0/h264 @ 0x55d0c3a1b2d0] Terminating thread with return code -1145393733 (Error number "
            b"-1145393733 occurred)\n")
    tail = StderrTail(io.BytesIO(said))
    tail.join()
    assert tail.last() == "Invalid NAL unit size" and tail.holds("Task finished")


def test_a_range_that_ends_before_the_damage_is_fine(damaged_clip: Path) -> None:
    info = probe_video(damaged_clip)
    assert [f.index for f in read_frames(info, (64, 48), 2, 6)] == [2, 3, 4, 5]


def test_a_killed_decoder_is_reported_as_killed() -> None:
    info = probe_video(demo_clip())
    frames = read_frames(info, (64, 36))
    next(frames)  # ffmpeg is now running and blocked on the full pipe
    (pid,) = child_ffmpeg_pids()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(DecodeError, match=r"ffmpeg was killed by signal 9 \(SIGKILL\) while decoding") as caught:
        for _ in frames:
            pass
    assert "Stream" not in str(caught.value) and "Metadata" not in str(caught.value)
    assert not child_ffmpeg_pids()


def test_a_stream_copied_cut_counts_only_the_frames_it_shows(media: Path) -> None:
    """`ffmpeg -ss 1.5 -c copy` keeps the GOP before the cut but flags it discarded in an edit list."""
    long = media / "gop_long.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=4", "-c:v", "libx264", "-g", "25",
           "-bf", "3", str(long))
    cut = media / "gop_cut.mp4"
    ffmpeg("-ss", "1.5", "-i", str(long), "-c", "copy", str(cut))
    info = probe_video(cut)
    assert info.frame_count == len(decoded(cut))
    assert 60 <= info.frame_count <= 64


# --- what is a video -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["video", "picture"])
def test_a_fifo_is_refused_at_once(tmp_path: Path, what: str) -> None:
    """A video, and a style or content picture: reading a FIFO would wait for a writer for ever."""
    from vidstyle.io.images import read_image

    fifo = tmp_path / ("pipe.mp4" if what == "video" else "pipe.jpg")
    os.mkfifo(fifo)
    result: list[BaseException | None] = []

    def probe() -> None:
        try:
            probe_video(fifo) if what == "video" else read_image(fifo, "style image")
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result.append(exc)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # release the reader that a regression left blocked, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert isinstance(result[0], InputError) and "is a named pipe, not a regular file" in str(result[0])


def test_a_device_is_refused() -> None:
    with pytest.raises(InputError, match="character device"):
        probe_video(Path("/dev/null"))


def test_an_animated_gif_is_a_video(media: Path) -> None:
    gif = media / "anim.gif"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x24:rate=10:duration=0.5", str(gif))
    info = probe_video(gif)
    assert (info.width, info.height, info.frame_count) == (32, 24, 5)
    assert len(decoded(gif)) == 5
    # Not a still: painted as one, all but its first frame would be lost without a word.
    with pytest.raises(InputError, match=r"^style image .*anim\.gif is an animated GIF, not a still image$"):
        read_image(gif, "style image")


@pytest.mark.parametrize(("name", "kind", "args"), [("anim.png", "PNG", ("-plays", "0", "-f", "apng")),
                                                    ("anim.webp", "WebP", ("-c:v", "libwebp_anim", "-loop", "0"))])
def test_an_animated_png_or_webp_is_a_video(media: Path, name: str, kind: str, args: tuple[str, ...]) -> None:
    """OpenCV reads their first frame: painted as a still, they lost the rest without a word (a GIF was refused)."""
    path = media / name
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x24:rate=10:duration=0.5", *args, str(path))
    with pytest.raises(InputError, match=rf"^content image .*{name} is an animated {kind}, not a still image$"):
        read_image(path, "content image")
    if kind == "WebP" and not reads_animated_webp():  # ffmpeg 7 reads the first picture alone: said, not "a still"
        with pytest.raises(VideoOpenError, match="is an animated picture whose frames the ffmpeg in use cannot read"):
            probe_video(path)
        return
    info = probe_video(path)
    assert info.frame_count > 1 and not info.alpha, "opaque pictures: no note of transparency"


@pytest.mark.parametrize("name", ["still.gif", "still.png", "still.jpg", "still.webp"])
def test_a_single_frame_image_is_a_still(media: Path, name: str) -> None:
    image = media / name
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x24:rate=10", "-frames:v", "1", "-update", "1", str(image))
    with pytest.raises(VideoOpenError, match="is a still image, not a video"):
        probe_video(image)
    assert read_image(image).shape == (24, 32, 3)


def test_a_file_named_as_a_picture_that_is_none_is_not_called_a_still_image(media: Path) -> None:
    """ffmpeg takes a .png by its name and copies its one packet without decoding it: text is no still image."""
    fake = media / "notes.png"
    fake.write_text("hello world\n" * 10)
    with pytest.raises(VideoOpenError, match="notes.png is neither a video nor a readable picture$"):
        probe_video(fake)


def test_sides_under_ten_pixels_parse(lavfi_clip) -> None:
    clip = lavfi_clip("tiny8x6.mp4", size="8x6", audio=False)
    info = probe_video(clip)
    assert (info.width, info.height) == (8, 6)
    assert decoded(clip)[0].shape == (6, 8, 3)


def test_rotation_with_non_square_pixels(media: Path) -> None:
    wide = media / "sar2.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x32:rate=25:duration=0.2", "-vf", "setsar=2", "-c:v", "libx264",
           str(wide))
    rotated = media / "sar2_rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(wide), "-c", "copy", str(rotated))
    assert (probe_video(wide).width, probe_video(wide).height) == (128, 32)
    info = probe_video(rotated)
    assert (info.width, info.height) == (32, 128)
    assert decoded(rotated)[0].shape == (128, 32, 3)


@pytest.mark.parametrize("suffix", [".mkv", ".mov"])
def test_non_square_pixels_said_by_the_container_alone_are_applied(media: Path, suffix: str) -> None:
    """An H.264 stream of square pixels in a container that says 16:9 (ffmpeg -aspect, as ProRes MOVs and MKVs say
    it): players show it 16:9, and so must the render, or its picture is squeezed."""
    square = media / "square_64x48.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=0.2", "-c:v", "libx264", str(square))
    wide = media / f"container_16x9{suffix}"
    ffmpeg("-i", str(square), "-c", "copy", "-aspect", "16:9", str(wide))
    info = probe_video(wide)
    assert (info.width, info.height) == (85, 48)  # 64 * (4/3 of 64:48 to 16:9)
    assert decoded(wide)[0].shape == (48, 85, 3)


@pytest.fixture(scope="module")
def whole_mkv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of 25 fps video (a DURATION tag a stream, as ffmpeg's muxer writes) and 6 s of audio."""
    path = tmp_path_factory.mktemp("mkv") / "whole.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=4", "-f", "lavfi", "-i", "sine=duration=6",
           "-c:v", "libx264", "-g", "10", "-c:a", "libopus", str(path))
    return path


def test_a_matroska_file_cut_short_is_refused(whole_mkv: Path, tmp_path: Path) -> None:
    """Its frames stopped where the file did, and half the video was painted with nothing said; a cut-short MP4 was
    refused already."""
    data = whole_mkv.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoOpenError) as refused:
        probe_video(cut)
    assert str(refused.value) == (f"{cut} is truncated or damaged (ffmpeg: file ended prematurely); ffmpeg -i {cut} "
                                  f"-c copy {tmp_path / 'cut.fixed.mkv'} keeps the part that can be read")
    # Whole as it crosses processes (a web service's worker, Ray's): its reason stays apart from the repair.
    again = pickle.loads(pickle.dumps(refused.value))
    assert (type(again), str(again), again.reason) == (type(refused.value), str(refused.value), refused.value.reason)
    # As it says: the readable part, copied, is a whole video.
    ffmpeg("-i", str(cut), "-c", "copy", str(tmp_path / "cut.fixed.mkv"))
    assert 30 < probe_video(tmp_path / "cut.fixed.mkv").frame_count < 100


def test_an_avi_cut_short_is_refused(tmp_path: Path) -> None:
    """Its index at its end gone, ffmpeg read the frames before the cut without a word, and a render was part of
    the video (33 of 50 frames here), said by nothing; the RIFF header still declares the whole file's length."""
    whole = tmp_path / "field_pan.avi"
    ffmpeg("-i", str(shared_asset("field_pan_with_audio.mp4")), "-t", "2", "-c:v", "mpeg4", "-c:a", "pcm_s16le",
           str(whole))
    assert probe_video(whole).frame_count == 50
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoOpenError) as refused:
        probe_video(cut)
    assert str(refused.value) == (f"{cut} is truncated or damaged: it ends at byte {len(data) * 2 // 3} of the "
                                  f"{len(data)} its AVI header declares; ffmpeg -i {cut} -c copy "
                                  f"{tmp_path / 'cut.fixed.mkv'} keeps the part that can be read")
    ffmpeg("-i", str(cut), "-c", "copy", str(tmp_path / "cut.fixed.mkv"))
    assert 20 < probe_video(tmp_path / "cut.fixed.mkv").frame_count < 50
    # Whole, from a writer that counts the chunk's own 8-byte header in its length (ffmpeg's reader takes it), or
    # one killed before it declared a length at all: taken.
    for length in (len(data), 0xFFFFFFFF):
        odd = tmp_path / f"length_{length}.avi"
        odd.write_bytes(data[:4] + length.to_bytes(4, "little") + data[8:])
        assert probe_video(odd).frame_count == 50


def test_a_matroska_file_whose_frames_end_at_damage_in_its_middle_is_refused(tmp_path: Path) -> None:
    """Damage that Matroska's reader does not get past (where it does, the frames lost are a gap in the
    timestamps, said as a variable frame rate's frames held longer): its frames end at the damage, and only the
    stream's declared duration tells."""
    whole = tmp_path / "field_pan.mkv"
    ffmpeg("-i", str(shared_asset("field_pan_with_audio.mp4")), "-c", "copy", str(whole))
    data = whole.read_bytes()
    damaged = tmp_path / "damaged.mkv"
    middle = len(data) // 2
    damaged.write_bytes(data[:middle] + bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8))
                        + data[middle + 20000:])
    # The figures differ by a frame's length or two between ffmpeg 7's and 9's Matroska muxers.
    with pytest.raises(VideoOpenError, match=r"damaged\.mkv is truncated or damaged: its frames end at 2\.5\d s of "
                                             r"the 5\.0\d s its header declares; ffmpeg -i \S+damaged\.mkv -c copy "):
        probe_video(damaged)


def test_a_whole_matroska_file_passes_the_check_of_its_declared_duration(whole_mkv: Path, tmp_path: Path) -> None:
    """Audio longer than the video (the file's duration is the audio's), a clock that starts at an hour (the
    DURATION tag then declares the end on that clock), video that begins after the audio, and a last frame held
    for seconds (a variable rate's: the declared end is its packet's own) are no damage."""
    assert probe_video(whole_mkv).frame_count == 100
    late = tmp_path / "late.mkv"
    ffmpeg("-i", str(whole_mkv), "-c", "copy", "-output_ts_offset", "3600", str(late))
    assert probe_video(late).frame_count == 100
    after = tmp_path / "video_after_audio.mkv"
    ffmpeg("-i", str(whole_mkv), "-itsoffset", "1.5", "-i", str(whole_mkv), "-map", "0:a", "-map", "1:v", "-c", "copy",
           str(after))
    assert probe_video(after).frame_count == 100
    held = tmp_path / "last_frame_held.mkv"
    ffmpeg("-i", str(whole_mkv), "-an", "-c", "copy", "-bsf:v", "setts=duration='if(eq(N\\,99)\\,3000\\,DURATION)'",
           str(held))
    assert probe_video(held).frame_count == 100


# --- audio the output container cannot hold -------------------------------------------------------------------

AUDIO_ENCODERS = {"aac": "aac", "mp3": "libmp3lame", "ac3": "ac3", "opus": "libopus", "flac": "flac",
                  "vorbis": "libvorbis", "pcm_s16le": "pcm_s16le"}


@pytest.fixture(scope="module")
def audio_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    sources = {}
    for codec, encoder in AUDIO_ENCODERS.items():
        sources[codec] = folder / f"{codec}.mkv"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x24:rate=25:duration=0.12", "-f", "lavfi",
               "-i", "sine=duration=0.12:sample_rate=48000", "-c:v", "libx264", "-c:a", encoder, str(sources[codec]))
    return sources


@pytest.mark.parametrize("suffix", [".mp4", ".m4v", ".mov", ".mkv"])
def test_every_audio_codec_reaches_every_container(audio_sources: dict[str, Path], tmp_path: Path,
                                                   suffix: str) -> None:
    """Each codec the plan copies really muxes by copy; each other one arrives as AAC; all play to the end."""
    for codec, source in audio_sources.items():
        info = probe_video(source)
        assert info.audio_codecs == (codec,)
        out = tmp_path / f"{codec}{suffix}"
        plan = plan_audio(info, out)
        _write(out, [np.zeros((24, 32, 3), np.uint8)] * 3, info.fps, info)
        assert probe_video(out).audio_codecs == ((codec,) if not plan.reencodes else ("aac",)), plan.description
        ffmpeg("-i", str(out), "-map", "0:a", "-f", "null", "-")  # the audio decodes from start to end


@pytest.mark.parametrize("codec, suffix, words", [
    ("opus", ".mov", "re-encode opus to AAC (a .mov cannot hold opus)"),
    ("flac", ".mov", "re-encode flac to AAC (a .mov cannot hold flac)"),
    ("pcm_s16le", ".mp4", "re-encode pcm_s16le to AAC (a .mp4 cannot hold pcm_s16le)"),
    ("opus", ".mp4", "copy opus"),
    ("opus", ".m4v", "re-encode opus to AAC (Apple's players, which a .m4v is for, do not play opus)"),
    ("aac", ".m4v", "copy aac"),
    ("pcm_s16le", ".m4v", "re-encode pcm_s16le to AAC (a .m4v cannot hold pcm_s16le)"),
    ("aac", ".mov", "copy aac"),
    ("vorbis", ".mkv", "copy vorbis"),
])
def test_audio_plan_is_known_before_rendering(audio_sources: dict[str, Path], codec: str, suffix: str,
                                             words: str) -> None:
    plan = plan_audio(probe_video(audio_sources[codec]), Path(f"out{suffix}"))
    assert plan.description == words
    assert plan.reencodes == words.startswith("re-encode")


def test_a_matroska_copy_is_re_encoded_only_for_a_cut_after_the_first_frame(audio_sources: dict[str, Path]) -> None:
    """A copy from a seek keeps what lies between the keyframe it lands on and the cut, which Matroska plays. The
    window of a video that begins after its audio lands on that first frame: its copy stays exact, and lossless."""
    from vidstyle.io.encode import AudioWindow

    info = probe_video(audio_sources["flac"])
    late_video = AudioWindow(0.3, None, True)
    assert plan_audio(info, Path("out.mkv"), late_video).description == "copy flac"
    cut = AudioWindow(1.0, 1.0, True, after_first=True)
    assert plan_audio(info, Path("out.mkv"), cut).description == \
        "re-encode flac to AAC (a .mkv copy of it cannot begin at the cut)"
    assert plan_audio(info, Path("out.mp4"), cut).description == "copy flac", "an edit list hides the lead-in"


def test_audio_plan_without_audio(lavfi_clip) -> None:
    plan = plan_audio(probe_video(lavfi_clip("silent.mp4", audio=False)), Path("out.mov"))
    assert (plan.args, plan.description, plan.reencodes) == ((), "no audio", False)


@pytest.mark.parametrize(("banner", "too_old"), [
    ("ffmpeg version 7.0.2-static https://johnvansickle.com/ffmpeg/\nlibavcodec     61.  3.100 / 61.  3.100", None),
    ("ffmpeg version n9.0.2-17-g2a571b6068-20260930\nlibavcodec     63.  1.102 / 63.  1.102", None),
    ("ffmpeg version 5.1.6-0+deb12u1 Copyright\nlibavcodec     59. 37.100 / 59. 37.100", None),
    ("ffmpeg version 6.1.1-3ubuntu5 Copyright", None),  # no library lines: the release decides
    ("ffmpeg version N-113402-g1d8fd6bd3f Copyright\nlibavcodec     60. 31.102 / 60. 31.102", None),
    ("ffmpeg version N-95000-gabc Copyright\nlibavcodec     58. 59.101 / 58. 59.101", "ffmpeg (libavcodec 58.59)"),
    ("ffmpeg version 4.2.2-static https://johnvansickle.com/ffmpeg/\nlibavcodec     58. 54.100 / 58. 54.100",
     "ffmpeg 4.2 (libavcodec 58.54)"),
    ("ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright", "ffmpeg 4.4"),
    ("ffmpeg version 5.0.1 Copyright", "ffmpeg 5.0"),
    ("ffmpeg version git-2020-01-01 Copyright", None),  # names neither: tried, not refused
])
def test_an_ffmpeg_older_than_51_is_told_from_its_banner(banner: str, too_old: str | None) -> None:
    assert ffmpeg_too_old(banner) == too_old


def _old_ffmpeg(folder: Path) -> Path:
    """A stand-in that answers -version as imageio-ffmpeg 0.5's ffmpeg 4.2.2 does (an old imageio-ffmpeg cannot be
    installed beside the test's)."""
    old = folder / "ffmpeg"
    old.write_text("#!/bin/sh\necho 'ffmpeg version 4.2.2-static https://johnvansickle.com/ffmpeg/'\n"
                   "echo 'libavcodec     58. 54.100 / 58. 54.100'\n")
    old.chmod(0o755)
    return old


def test_an_ffmpeg_too_old_for_its_options_is_refused_in_one_line(tmp_path: Path) -> None:
    # ffmpeg 4.2 stops at -fps_mode before decoding a frame: say so before starting.
    old, out = _old_ffmpeg(tmp_path), tmp_path / "out.mp4"
    command = [sys.executable, "-m", "vidstyle", "render", str(demo_clip()), "--style", "starry-night", "-o", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "IMAGEIO_FFMPEG_EXE": str(old)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"vidstyle: error: ffmpeg 4.2 (libavcodec 58.54) at {old} is too old: vidstyle needs ffmpeg 5.1 or newer "
        "(set IMAGEIO_FFMPEG_EXE to a newer ffmpeg, or unset it to use imageio-ffmpeg's)"]
    assert list(tmp_path.iterdir()) == [old]


def test_a_program_that_is_no_ffmpeg_is_said_to_be_so_not_blamed_on_the_input(tmp_path: Path) -> None:
    other = tmp_path / "not-ffmpeg"
    other.write_text("#!/bin/sh\necho 'something else'\n")
    other.chmod(0o755)
    with pytest.raises(VidstyleError) as refused:
        check_ffmpeg_version(str(other), chosen_by_user=True)
    assert str(refused.value) == (f"IMAGEIO_FFMPEG_EXE names {other}, which is not a working ffmpeg (asked its "
                                  "version, it said 'something else')")


def test_an_old_ffmpeg_of_imageio_ffmpegs_own_says_to_upgrade_that(tmp_path: Path) -> None:
    with pytest.raises(VidstyleError) as refused:
        check_ffmpeg_version(str(_old_ffmpeg(tmp_path)), chosen_by_user=False)
    assert str(refused.value).endswith("(pip install -U imageio-ffmpeg, or set IMAGEIO_FFMPEG_EXE to a newer ffmpeg)")


@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
def test_a_transparent_png_is_read_as_shown_over_white_not_over_black(tmp_path: Path, depth: type) -> None:
    top = np.iinfo(depth).max
    bgra = np.zeros((20, 40, 4), depth)  # what sits under the transparency is black, as in most such files
    bgra[:, 20:] = (0, 0, top, top)  # opaque red
    bgra[:, 10:20, 3] = (top + 1) // 2  # half-transparent black
    path = tmp_path / "cut_out.png"
    cv2.imwrite(str(path), bgra)
    rgb = read_image(path)
    assert rgb.shape == (20, 40, 3) and rgb.dtype == np.uint8
    assert (rgb[:, :10] == 255).all()
    assert np.abs(rgb[:, 10:20].astype(int) - 128).max() <= 1
    assert (rgb[:, 20:] == (255, 0, 0)).all()


@pytest.mark.parametrize("suffix", [".webp", ".tif", ".gif"])
def test_a_transparent_webp_tiff_or_gif_is_read_over_white_as_a_png_is(tmp_path: Path, suffix: str) -> None:
    """Their transparency is not in a header read before decoding, as PNG's is: they came out black (or as whatever
    colour the file keeps under the transparency, a GIF's magenta key) without a word."""
    bgra = np.zeros((20, 40, 4), np.uint8)
    bgra[:, :20, :3] = (255, 0, 255)  # magenta under the transparency
    bgra[:, 20:] = (0, 0, 255, 255)  # opaque red
    path = tmp_path / f"cut_out{suffix}"
    path.write_bytes(cv2.imencode(suffix, bgra, [cv2.IMWRITE_WEBP_QUALITY, 101] if suffix == ".webp" else [])[1])
    rgb = read_image(path)
    assert (rgb[:, :20] == 255).all()
    assert np.abs(rgb[:, 20:].astype(int) - (255, 0, 0)).max() <= 4  # a GIF's palette rounds the red


def test_a_32_bit_bmp_is_read_as_stored_its_fourth_byte_often_unused(tmp_path: Path) -> None:
    bgra = np.zeros((20, 40, 4), np.uint8)
    bgra[..., 2] = 200  # red, with the fourth byte zero as many programs leave it
    path = tmp_path / "padded.bmp"
    path.write_bytes(cv2.imencode(".bmp", bgra)[1])
    assert (read_image(path) == (200, 0, 0)).all()


def test_a_large_transparent_picture_is_laid_over_white_in_strips(tmp_path: Path) -> None:
    """Strip by strip, and the strips meet: each row is composited once; and the picture's EXIF turn, which only
    OpenCV's colour decoding applies, is found on a sample of its pixels."""
    rows = 2 * ((1 << 20) // 1000) + 5  # two whole strips of a 1000-pixel-wide picture, and part of a third
    bgra = np.zeros((rows, 1000, 4), np.uint8)
    bgra[..., 3] = np.arange(rows, dtype=np.int64)[:, None] % 256
    bgra[..., :3] = np.arange(1000, dtype=np.int64)[None, :, None] % 251  # colours under it tell the columns apart
    path = tmp_path / "tall.png"
    path.write_bytes(_png_with_chunk(bgra, b"eXIf", _EXIF_TURNED))
    rgb = read_image(path)
    assert rgb.shape == (1000, rows, 3)  # shown turned a quarter right: the stored rows are its columns
    alpha = (np.arange(rows) % 256) / 255.0
    under = (np.arange(1000) % 251) / 255.0
    want = np.round(255.0 * (under[:, None] * alpha[None, :] + 1.0 - alpha[None, :]))
    assert np.abs(rgb[..., 0].astype(int) - want[:, ::-1]).max() <= 1  # the stored top row on the right


def test_a_grey_png_with_alpha_is_read_over_white_too(tmp_path: Path) -> None:
    path = tmp_path / "grey_alpha.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=black@0.0:s=40x20,format=ya8", "-frames:v", "1", str(path))
    assert (read_image(path) == 255).all()


def _png_with_chunk(rgb_or_bgra: np.ndarray, kind: bytes, payload: bytes) -> bytes:
    """The PNG of an array with one more chunk put before its image data."""
    data = cv2.imencode(".png", rgb_or_bgra)[1].tobytes()
    at = data.index(b"IDAT") - 4
    chunk = len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")
    return data[:at] + chunk + data[at:]


# A big-endian EXIF block holding one tag, Orientation (0x0112) = 6: the picture is stored turned a quarter left.
_EXIF_TURNED = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("alpha", [False, True])
def test_exif_orientation_of_a_png_is_applied_with_or_without_transparency(tmp_path: Path, alpha: bool) -> None:
    bgra = np.zeros((20, 40, 4), np.uint8)
    bgra[..., 3] = 255
    bgra[:10, :, 2] = 255  # the stored top half red
    path = tmp_path / "turned.png"
    path.write_bytes(_png_with_chunk(bgra if alpha else bgra[..., :3], b"eXIf", _EXIF_TURNED))
    rgb = read_image(path)
    assert rgb.shape == (40, 20, 3)  # shown upright: turned a quarter right
    assert (rgb[:, 10:, 0] == 255).all() and (rgb[:, :10, 0] == 0).all()  # the red half on the right


def test_a_pictures_alpha_is_turned_with_its_colours_and_none_where_it_is_opaque(tmp_path: Path) -> None:
    """A still written with its transparency needs it where the colours are: the EXIF turn, which only OpenCV's
    colour decoding applies, given to the alpha too."""
    from vidstyle.io.images import read_picture

    bgra = np.zeros((20, 40, 4), np.uint8)
    bgra[..., 2] = (np.arange(40) * 6).astype(np.uint8)[None, :]  # red rising along the stored rows: one turn fits
    bgra[..., 3] = 255
    bgra[:10, :, 3] = 0  # the stored top half transparent
    path = tmp_path / "turned.png"
    path.write_bytes(_png_with_chunk(bgra, b"eXIf", _EXIF_TURNED))
    picture = read_picture(path)
    assert picture.rgb.shape == (40, 20, 3) and picture.alpha is not None and picture.alpha.shape == (40, 20)
    assert (picture.alpha[:, 10:] == 0).all() and (picture.alpha[:, :10] == 255).all()  # the stored top on the right
    assert (picture.rgb[:, 10:] == 255).all(), "over white where transparent"
    bgra[..., 3] = 255
    cv2.imwrite(str(path), bgra)  # an alpha channel, every pixel opaque
    assert read_picture(path).alpha is None
    cv2.imwrite(str(path), bgra[..., :3])
    assert read_picture(path).alpha is None


def test_the_letters_trns_in_a_text_chunk_do_not_make_a_png_transparent(tmp_path: Path) -> None:
    rgb = np.zeros((20, 40, 3), np.uint8)
    path = tmp_path / "note.png"
    path.write_bytes(_png_with_chunk(rgb, b"tEXt", b"Comment\x00tRNS"))
    assert (read_image(path) == 0).all()  # black, as stored: no alpha, so not laid over white


def test_a_damaged_png_is_refused_in_one_line_without_libpngs_own(tmp_path: Path, capfd) -> None:
    bgra = np.random.default_rng(0).integers(0, 255, (64, 64, 4), dtype=np.uint8)
    data = bytearray(cv2.imencode(".png", bgra)[1].tobytes())
    at = data.index(b"IDAT") + 20
    data[at:at + 40] = bytes(40)  # the compressed pixels wrecked, the file's end still there
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"^image is damaged \(its IDAT chunk fails its checksum\): "):
        read_image(path)
    assert capfd.readouterr().err == ""  # libpng would print "libpng error: IDAT: CRC error" here


def _record_syncs(monkeypatch) -> list[tuple[str, str]]:
    """Each fsync (the file or folder it reached) and each rename, in order; the calls still happen."""
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        calls.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an open file through /proc")
def test_a_finished_output_reaches_the_disk_before_its_name_and_its_name_before_publish_returns(
        monkeypatch, tmp_path: Path) -> None:
    # The checkpoints are removed right after publish: a rename reaching the disk before the data would leave an
    # empty output and nothing to resume from after a power cut.
    partial, output = tmp_path / ".out.partial.mp4", tmp_path / "out.mp4"
    partial.write_bytes(b"video")
    calls = _record_syncs(monkeypatch)
    publish(partial, output)
    assert calls == [("sync", str(partial)), ("rename", str(output)), ("sync", str(tmp_path))]
    assert output.read_bytes() == b"video" and not partial.exists()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an open file through /proc")
def test_a_checkpoint_is_synced_then_named_then_its_folder_synced(monkeypatch, tmp_path: Path) -> None:
    calls = _record_syncs(monkeypatch)
    write_atomic(tmp_path / "0000001.png", b"frame")
    assert [kind for kind, _ in calls] == ["sync", "rename", "sync"]
    assert calls[0][1].startswith(str(tmp_path / ".0000001.png.tmp-"))
    assert calls[1:] == [("rename", str(tmp_path / "0000001.png")), ("sync", str(tmp_path))]
    assert (tmp_path / "0000001.png").read_bytes() == b"frame" and os.listdir(tmp_path) == ["0000001.png"]


def test_publishing_without_replace_keeps_an_output_that_appeared(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways: a hard link, and where the file system has none (os.link refused), a look before the rename."""
    from vidstyle.errors import OutputExists
    from vidstyle.io.paths import publish

    for hard_links in (True, False):
        if not hard_links:
            def no_links(*_args: object, **_kwargs: object) -> None:
                raise PermissionError(1, "Operation not permitted")
            monkeypatch.setattr(os, "link", no_links)
        partial, output = tmp_path / ".out.partial.mp4", tmp_path / "out.mp4"
        partial.write_bytes(b"render")
        output.write_bytes(b"theirs")
        with pytest.raises(OutputExists, match="appeared while this render ran"):
            publish(partial, output, replace=False)
        assert output.read_bytes() == b"theirs" and partial.read_bytes() == b"render"
        output.unlink()
        publish(partial, output, replace=False)
        assert output.read_bytes() == b"render" and not partial.exists()


def _combing(rgb: np.ndarray) -> float:
    """How much each row differs from the mean of its neighbours: the stripes of two fields in one frame."""
    grey = rgb.astype(np.float64).mean(axis=2)
    return float(np.abs(2 * grey[1:-1] - grey[:-2] - grey[2:]).mean())


def test_an_interlaced_source_is_deinterlaced_frame_for_frame_and_said(tmp_path: Path, starry: Path) -> None:
    """Interlaced footage decoded as it is holds both fields of a moving thing in one frame, as stripes, which the
    network painted; the helper found a camcorder clip rendered that way, tagged progressive."""
    import dataclasses

    from vidstyle.config import make_config
    from vidstyle.pipeline import prepare_render, started_event

    clip = tmp_path / "interlaced.mp4"
    # Two moments of the moving street woven into each frame, flagged top field first; a keyframe every 4 frames,
    # so a range's decode begins at a seek.
    ffmpeg("-i", str(shared_asset("bikes_street_no_audio.mp4")), "-t", "1.6",
           "-vf", "scale=320:-2,tinterlace=mode=interleave_top", "-c:v", "libx264", "-flags", "+ilme+ildct",
           "-x264opts", "tff=1", "-g", "4", "-keyint_min", "4", "-sc_threshold", "0", "-an", str(clip))
    info = probe_video(clip)
    assert info.interlaced and not probe_video(shared_asset("bikes_street_no_audio.mp4")).interlaced
    size = (info.width, info.height)
    frames = [f.rgb for f in read_frames(info, size)]
    combed = [f.rgb for f in read_frames(dataclasses.replace(info, interlaced=False), size)]
    assert len(frames) == len(combed) == info.frame_count, "a frame for a frame"
    assert np.mean([_combing(f) for f in frames]) < 0.6 * np.mean([_combing(f) for f in combed])
    assert info.keyframes[:3] == (0, 4, 8)
    part = [f.rgb for f in read_frames(info, size, 9, 14)]
    assert all(np.array_equal(a, b) for a, b in zip(part, frames[9:14], strict=True)), "a range as in the whole"
    job = prepare_render(clip, [starry], tmp_path / "out.mp4", make_config("fast", size=64, device="cpu"))
    assert "the source is interlaced: its frames are deinterlaced (bwdif), one for one" in \
        started_event(job, "cpu", [], set()).notes


@pytest.mark.parametrize("transfer, levels", [("arib-std-b67", "tv"), ("smpte2084", "pc")])
def test_an_hdr_source_is_tone_mapped_to_sdr_and_said(tmp_path: Path, bunny_short: Path, starry: Path,
                                                      transfer: str, levels: str) -> None:
    """A phone's HDR clip (HLG; PQ from HDR10 cameras) was read as if SDR: its frames came out dim and grey, and so
    did the painting made of them. The same pictures made HDR now decode close to the SDR frames."""
    import dataclasses

    from vidstyle.config import make_config
    from vidstyle.io.probe import Colour
    from vidstyle.pipeline import prepare_render, started_event

    clip = tmp_path / f"hdr-{transfer}.mp4"
    # The SDR clip's light, 100 nits at its white, written in the HDR transfer with BT.2020 colours, in 10 bits;
    # a keyframe every 4 frames, so a range's decode begins at a seek.
    ffmpeg("-i", str(bunny_short), "-vf", f"zscale=tin=bt709:pin=bt709:min=smpte170m:rin=limited:t={transfer}:"
           f"p=bt2020:m=bt2020nc:r={'full' if levels == 'pc' else 'limited'}:npl=100,format=yuv420p10le",
           "-c:v", "libx264", "-crf", "12", "-g", "4", "-keyint_min", "4", "-sc_threshold", "0",
           "-color_trc", transfer, "-color_primaries", "bt2020",
           "-colorspace", "bt2020nc", "-color_range", levels, "-an", str(clip))
    info = probe_video(clip)
    assert info.colour == Colour("bt2020nc", "bt2020", transfer, levels == "pc") and info.colour.hdr
    sdr_info = probe_video(bunny_short)
    assert not sdr_info.colour.hdr
    size = (sdr_info.width, sdr_info.height)
    sdr = np.stack([f.rgb for f in read_frames(sdr_info, size)]).astype(np.float64)
    mapped = np.stack([f.rgb for f in read_frames(info, size)]).astype(np.float64)
    as_sdr = np.stack([f.rgb for f in read_frames(dataclasses.replace(info, colour=Colour()), size)])
    assert len(mapped) == len(sdr) == info.frame_count, "a frame for a frame"

    def chroma(rgb: np.ndarray) -> float:
        return float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean())

    assert np.abs(mapped - sdr).mean() < 12, "tone-mapped, the frames are near the SDR ones"
    assert abs(mapped.mean() - sdr.mean()) < 0.08 * sdr.mean() and chroma(mapped) > 0.85 * chroma(sdr)
    # Without the mapping (as before), the same decode is far off: the test would see the old reading.
    assert np.abs(as_sdr.astype(np.float64) - sdr).mean() > 25
    part = [f.rgb for f in read_frames(info, size, 6, 10)]
    assert info.keyframes[:3] == (0, 4, 8)
    assert all(np.array_equal(a, b) for a, b in zip(part, mapped[6:10], strict=True)), "a range as in the whole"
    job = prepare_render(clip, [starry], tmp_path / "out.mp4", make_config("fast", size=64, device="cpu"))
    kind = "HLG" if transfer == "arib-std-b67" else "PQ"
    assert f"the source is HDR ({kind}): its frames are tone-mapped to SDR (BT.709), and the output is SDR" in \
        started_event(job, "cpu", [], set()).notes


def test_an_hdr_source_is_refused_by_an_ffmpeg_that_cannot_tone_map_it(tmp_path: Path, bunny_short: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An ffmpeg of the user's own (IMAGEIO_FFMPEG_EXE) built without libzimg has no zscale: the render would fail
    at its first frame, after its work directory was made. The probe refuses the input, saying why."""
    import imageio_ffmpeg

    clip = tmp_path / "hlg.mp4"
    ffmpeg("-i", str(bunny_short), "-frames:v", "2", "-vf",
           "setparams=color_trc=arib-std-b67:color_primaries=bt2020:colorspace=bt2020nc", "-c:v", "libx264", "-an",
           str(clip))
    real = imageio_ffmpeg.get_ffmpeg_exe()
    build = tmp_path / "ffmpeg-without-zimg"  # the real binary, its filter list without zscale, as such a build's
    build.write_text(f'#!/bin/sh\nif [ "$2" = "-filters" ]; then "{real}" "$@" | grep -v " zscale "; '
                     f'else exec "{real}" "$@"; fi\n')
    build.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(build))
    refusal = r"is HDR \(arib-std-b67\), and the ffmpeg in use cannot tone-map it to SDR: it lacks the zscale filter"
    with pytest.raises(VidstyleError, match=refusal + r"\(s\); unset IMAGEIO_FFMPEG_EXE") as refused:
        probe_video(clip)
    assert not isinstance(refused.value, InputError), "the ffmpeg's shortcoming, not the file's (a 415 in serve)"
    assert not probe_video(bunny_short).colour.hdr, "an SDR source is read as before"


@pytest.mark.parametrize("size, same_as", [("1280x720", 1), ("640x360", 6)])
def test_an_untagged_picture_is_read_with_the_matrix_players_assume(tmp_path: Path, size: str, same_as: int) -> None:
    """ffmpeg reads a picture that names no Y'CbCr matrix with BT.601's; players take an HD one for BT.709 (and
    vidstyle writes BT.709). An untagged HD clip's greens and reds were read shifted from what the player shows."""
    untagged = tmp_path / f"untagged-{size}.mp4"
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration=0.16", "-vf", "format=yuv420p",
           "-c:v", "libx264", "-crf", "10", str(untagged))
    tagged = {}
    for code in (1, 6):  # BT.709; BT.601 (SMPTE 170M), written into the stream, its pictures untouched
        tagged[code] = tmp_path / f"tagged-{code}-{size}.mp4"
        ffmpeg("-i", str(untagged), "-c", "copy", "-bsf:v", f"h264_metadata=colour_primaries={code}:"
               f"transfer_characteristics={code}:matrix_coefficients={code}", str(tagged[code]))
    infos = {name: probe_video(path) for name, path in [("untagged", untagged), *tagged.items()]}
    assert not infos["untagged"].colour.matrix and infos[1].colour.matrix == "bt709"
    frames = {name: np.stack([f.rgb for f in read_frames(info, (128, 72))]).astype(np.float64)
              for name, info in infos.items()}
    other = 7 - same_as
    assert np.abs(frames["untagged"] - frames[same_as]).mean() < 0.01
    assert np.abs(frames["untagged"] - frames[other]).mean() > 3, "the two matrices differ on this picture"


def test_an_hdr_streams_light_level_data_does_not_change_its_frames(tmp_path: Path, bunny_short: Path) -> None:
    """ffmpeg 7 took the tone-mapping's peak from a stream's light-level data (MaxCLL) and ffmpeg 9 does not, so
    one file gave other frames after an imageio-ffmpeg upgrade, mixed into a resumed render. The peak is fixed."""
    clips = {}
    for name, extra in [("plain", ""), ("cll", ":hdr10=1:max-cll=400,100:master-display=G(13250,34500)B(7500,3000)"
                                              "R(34000,16000)WP(15635,16450)L(10000000,1)")]:
        clips[name] = tmp_path / f"{name}.mp4"
        ffmpeg("-i", str(bunny_short), "-frames:v", "3", "-vf",
               "zscale=tin=bt709:pin=bt709:min=smpte170m:t=smpte2084:p=bt2020:m=bt2020nc:npl=100,format=yuv420p10le",
               "-c:v", "libx265", "-x265-params", "log-level=error:colorprim=bt2020:transfer=smpte2084:"
               f"colormatrix=bt2020nc{extra}", "-an", str(clips[name]))
    infos = {name: probe_video(path) for name, path in clips.items()}
    assert all(info.colour.hdr for info in infos.values())
    frames = {name: [f.rgb for f in read_frames(info, (64, 36))] for name, info in infos.items()}
    assert all(np.array_equal(a, b) for a, b in zip(frames["plain"], frames["cll"], strict=True))


def test_dv_camcorder_footage_is_deinterlaced_though_its_stream_names_no_field_order(tmp_path: Path) -> None:
    """DV's stream line, read without decoding, names no field order, though every frame is interlaced: the
    camcorder footage that design.md promises to deinterlace was painted with its combing."""
    import dataclasses

    clip = tmp_path / "camcorder.avi"
    # A fast pan, two moments woven into each PAL DV frame, bottom field first, as DV is.
    ffmpeg("-i", str(demo_clip()), "-t", "0.4", "-vf", "scale=1600:576,fps=50,crop=720:576:x='t*800':y=0,"
           "tinterlace=mode=interleave_bottom,setfield=bff,setsar=64/45", "-c:v", "dvvideo", "-flags", "+ildct",
           "-pix_fmt", "yuv420p", "-an", str(clip))
    info = probe_video(clip)
    assert info.codec == "dvvideo" and info.interlaced
    size = (info.width // 2 * 2, info.height)
    frames = [f.rgb for f in read_frames(info, size)]
    combed = [f.rgb for f in read_frames(dataclasses.replace(info, interlaced=False), size)]
    assert len(frames) == len(combed) == info.frame_count, "a frame for a frame"
    assert np.mean([_combing(f) for f in frames]) < 0.6 * np.mean([_combing(f) for f in combed])


def test_an_audio_stream_declared_with_no_audio_is_left_out_and_said(tmp_path: Path, bunny_short: Path,
                                                                     starry: Path) -> None:
    """A broadcast recording may declare an audio track that holds nothing ("0 channels"): mapped with the others,
    the muxer refused the whole output after the render had begun. It is left out; the real track is kept."""
    from vidstyle.config import make_config
    from vidstyle.pipeline import prepare_render, render, started_event

    whole = tmp_path / "two_tracks.ts"
    ffmpeg("-i", str(bunny_short), "-map", "0:v", "-map", "0:a", "-map", "0:a", "-c:v", "libx264", "-c:a", "aac",
           "-f", "mpegts", str(whole))
    data = whole.read_bytes()
    # Every transport packet of the first audio track (PID 0x101) dropped: its declaration stays, empty.
    packets = [data[i:i + 188] for i in range(0, len(data), 188)]
    recording = tmp_path / "recording.ts"
    recording.write_bytes(b"".join(p for p in packets if ((p[1] & 0x1F) << 8 | p[2]) != 0x101))
    info = probe_video(recording)
    assert (info.audio_codecs, info.audio_streams, info.empty_audio) == (("aac",), (1,), 1)
    out = tmp_path / "out.mkv"
    config = make_config("fast", size=32, iters=1, first_iters=1, device="cpu")
    job = prepare_render(recording, [starry], out, config)
    assert "the source declares an audio stream with no audio in it: not written" in \
        started_event(job, "cpu", [], set()).notes
    render(recording, [starry], out, config)
    written = probe_video(out)
    assert written.audio_codecs == ("aac",) and written.frame_count == info.frame_count


def test_pictures_that_change_shape_part_way_are_fitted_not_stretched(tmp_path: Path, bunny_short: Path) -> None:
    """Recordings joined with cat (a broadcast across programmes does the same): the portrait part was squeezed
    into the landscape frame. It is now fitted inside it, with black bars, its shape kept; the first part, of the
    stream's own size, and a part of its shape at another size, are scaled as before, to the pixel."""
    needs_mpegts()
    import dataclasses

    parts = []
    for name, size in [("landscape", "160:90"), ("portrait", "90:160"), ("smaller", "80:46")]:
        parts.append(tmp_path / f"{name}.ts")
        ffmpeg("-i", str(bunny_short), "-vf", f"scale={size}", "-c:v", "libx264", "-an", "-f", "mpegts",
               str(parts[-1]))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    info = probe_video(joined)
    assert (info.width, info.height, info.coded_size) == (160, 90, (160, 90))
    frames = [f.rgb.astype(np.float64) for f in read_frames(info, (64, 36))]
    portrait = [f.rgb.astype(np.float64) for f in read_frames(probe_video(parts[1]), (20, 36))]
    assert len(frames) == 3 * len(portrait) == info.frame_count
    for frame, alone in zip(frames[len(portrait):2 * len(portrait)], portrait, strict=True):
        assert frame[:, :20].max() < 20 and frame[:, -20:].max() < 20, "bars beside the portrait picture"
        assert np.abs(frame[:, 22:42] - alone).mean() < 12, "the portrait picture itself, its shape kept"
    assert all(f[:, :20].mean() > 20 for f in frames[:len(portrait)]), "the landscape part fills the frame"
    before = [f.rgb for f in read_frames(dataclasses.replace(info, coded_size=(0, 0)), (64, 36))]
    assert all(np.array_equal(a, b) for a, b in zip(frames[:len(portrait)], before, strict=False))
    # A part of the first part's shape, at another size (an adaptive stream's lower rung): scaled as before, with no
    # black line that fitting its rounded size would leave.
    smaller = slice(2 * len(portrait), None)
    assert all(np.array_equal(a, b) for a, b in zip(frames[smaller], before[smaller], strict=True))
    assert min(f[-1].mean() for f in frames[smaller]) > 20 and min(f[:, -1].mean() for f in frames[smaller]) > 20


def test_a_damaged_audio_packet_is_dropped_not_fatal_to_the_whole_output(tmp_path: Path, bunny_short: Path,
                                                                         starry: Path) -> None:
    """A transport stream with lost data in its audio: copied as it was, the damaged packet made the muxer refuse
    the whole output at the render's very end, and every retry the same. It is dropped; the rest is kept."""
    needs_mpegts()
    from vidstyle.config import make_config
    from vidstyle.pipeline import render

    whole = tmp_path / "clean.ts"
    ffmpeg("-i", str(bunny_short), "-c:v", "libx264", "-c:a", "aac", "-f", "mpegts", str(whole))
    data = bytearray(whole.read_bytes())
    audio = [i for i in range(0, len(data), 188) if ((data[i + 1] & 0x1F) << 8 | data[i + 2]) == 0x101]
    for start in audio[len(audio) // 2:len(audio) // 2 + 2]:  # two transport packets of audio lost to noise
        data[start:start + 188] = bytes(188)
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    render(damaged, [starry], out, make_config("fast", size=32, iters=1, first_iters=1, device="cpu"))
    written = probe_video(out)
    assert written.audio_codecs == ("aac",) and written.frame_count == probe_video(damaged).frame_count


def _tone_onset(path: Path) -> float:
    """Seconds from the file's start to where its first audio stream first gets loud."""
    import subprocess

    from vidstyle.io.ffmpeg import ffmpeg_exe

    # Silence put before a stream that begins late, so that a sample's place is its time.
    pcm = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-af",
                          "aresample=async=1:first_pts=0", "-ac", "1", "-ar", "8000", "-f", "s16le", "-"],
                         capture_output=True, check=True).stdout
    samples = np.abs(np.frombuffer(pcm, np.int16).astype(np.int32))
    return float(np.argmax(samples > 8000) / 8000)


def test_audio_cut_by_the_filter_lands_where_a_seek_puts_it(tmp_path: Path) -> None:
    """Where a seek would lose the audio, the window is cut by atrim; its timestamps were then reset to the first
    sample kept, so audio that begins after the cut (a late first packet) lost its gap and came early."""
    from vidstyle.io.encode import AudioWindow

    source = tmp_path / "late_audio.mkv"
    # Video from 0; audio from 0.3 s (its first packet late), silent until a tone at 0.9 s of the file.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x36:rate=25:duration=1.2", "-itsoffset", "0.3", "-f", "lavfi",
           "-i", "aevalsrc='if(gt(t,0.6),0.8*sin(2*PI*1000*t),0)':s=8000:d=0.9", "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-c:a", "aac", str(source))
    if abs(_tone_onset(source) - 0.9) > 0.05:
        pytest.skip("the ffmpeg in use ignores -itsoffset on a generated input (7.0 does): the clip cannot be made")
    info = probe_video(source)
    frames = [np.zeros((36, 64, 3), np.uint8)] * 25
    onsets = {}
    for seek in (True, False):
        out = tmp_path / f"seek-{seek}.mkv"
        with VideoWriter(out, (64, 36), info.fps, info, audio_window=AudioWindow(0.1, None, seek)) as writer:
            for frame in frames:
                writer.write(frame)
        onsets[seek] = _tone_onset(out)
    assert abs(onsets[True] - 0.8) < 0.03 and abs(onsets[False] - onsets[True]) < 0.03, onsets


def test_a_stream_that_two_programmes_carry_is_one_stream(tmp_path: Path, bunny_short: Path, starry: Path) -> None:
    """A transport stream lists a stream under each programme that carries it: its audio was taken for two
    streams, and the second's mapping failed the encoder after the render had begun."""
    needs_mpegts()
    from vidstyle.config import make_config
    from vidstyle.pipeline import render

    source = tmp_path / "two_programmes.ts"
    ffmpeg("-i", str(bunny_short), "-map", "0:v", "-map", "0:a", "-c:v", "libx264", "-c:a", "aac",
           "-program", "title=one:st=0:st=1", "-program", "title=two:st=0:st=1", "-f", "mpegts", str(source))
    info = probe_video(source)
    assert (info.audio_codecs, info.audio_streams) == (("aac",), (0,))
    out = tmp_path / "out.mp4"
    render(source, [starry], out, make_config("fast", size=32, iters=1, first_iters=1, device="cpu"))
    assert probe_video(out).audio_codecs == ("aac",)


def test_ffmpegs_last_words_leave_out_its_memory_addresses() -> None:
    import io

    from vidstyle.io.ffmpeg import StderrTail

    tail = StderrTail(io.BytesIO(b"[h264 @ 0x55d0c3a1b2c0] a first line\n"
                                 b"[vist#0:0/png @ 0x557164e164c0] [dec:png @ 0x557164e1cf00] Invalid data found\n"
                                 b"Conversion failed!\n"))
    tail.join()
    assert tail.last(3) == "a first line | Invalid data found | Conversion failed!"


def test_the_pixel_limit_is_told_as_a_count_and_as_the_square_it_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    from vidstyle.io.pixels import PIXEL_LIMIT_VARIABLE, pixel_limit_words

    monkeypatch.setenv(PIXEL_LIMIT_VARIABLE, str(8192 * 8192))
    assert pixel_limit_words() == "67,108,864 pixels (8192x8192)"
    monkeypatch.setenv(PIXEL_LIMIT_VARIABLE, "1000000000")  # no square: the count alone
    assert pixel_limit_words() == "1,000,000,000 pixels"
    monkeypatch.delenv(PIXEL_LIMIT_VARIABLE)
    assert pixel_limit_words() == "1,073,741,824 pixels (32768x32768)"  # OpenCV's own default


def test_no_input_is_opened_as_a_format_that_reads_other_files(tmp_path: Path) -> None:
    """A DASH manifest, an HLS playlist or a concat list names files for ffmpeg to read: opened as a video, any file
    the process can read was rendered (on a web service, its own disk through an upload)."""
    clip = demo_clip()
    listed = readable_formats(ffmpeg_exe()).split(",")
    assert "mov" in listed and "matroska" in listed and "gif" in listed
    assert not {"dash", "hls", "concat", "imf", "sdp", "lavfi"} & set(listed)
    manifests = {
        "a.mpd": ('<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
                  'mediaPresentationDuration="PT1S" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-'
                  'demand:2011">\n<Period><AdaptationSet mimeType="video/mp4"><Representation id="1" bandwidth="1">'
                  f'<BaseURL>{clip}</BaseURL></Representation></AdaptationSet></Period></MPD>\n', "a DASH manifest"),
        "b.m3u8": (f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:{clip}\n#EXT-X-ENDLIST\n", "an HLS playlist"),
        "c.txt": (f"ffconcat version 1.0\nfile '{clip}'\n", "a concat list"),
    }
    for name, (text, kind) in manifests.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(VideoOpenError, match=f"^{tmp_path / name} is {kind}, which names other files"):
            probe_video(tmp_path / name)
    assert probe_video(clip).frame_count > 0


def test_ffmpegs_formats_are_read_from_the_listing_of_each_release() -> None:
    """ffmpeg 5.1 to 6.1 list two columns of flags and ffmpeg 7 three (the third marks a device): read as 7's, an
    older ffmpeg's listing gave no format at all, and every video was refused."""
    before_7 = ("File formats:\n D. = Demuxing supported\n .E = Muxing supported\n --\n"
                " D  3dostr          3DO STR\n D  mov,mp4,m4a,3gp,3g2,mj2 QuickTime / MOV\n")
    since_7 = ("Formats:\n D.. = Demuxing supported\n .E. = Muxing supported\n ..d = Is a device\n ---\n"
               " D   3dostr          3DO STR\n D d fbdev           Linux framebuffer\n"
               " D   mov,mp4,m4a,3gp,3g2,mj2 QuickTime / MOV\n")
    assert demuxer_names(before_7) == demuxer_names(since_7) == ["3dostr", "mov,mp4,m4a,3gp,3g2,mj2"]
    assert demuxer_names("no listing") == []


def test_frames_that_share_their_times_are_written_at_a_rate(tmp_path: Path, starry: Path) -> None:
    """A muxer that repeats each frame's time three times: no positive step was a division by zero at the render's
    end."""
    clip = tmp_path / "repeated.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=0.24", "-c:v", "mjpeg",
           "-bsf:v", "setts=ts=trunc(N/3)*100", str(clip))
    info = probe_video(clip)
    assert info.frame_count == 6 and len(set(info.frame_times)) == 2
    rate = written_rate(info)
    assert rate > 0 and sum(frame_repeats(info.frame_times, rate)) >= 2
    out = vidstyle.render(clip, [starry], tmp_path / "out.mp4",
                          vidstyle.make_config("fast", size=32, iters=1, first_iters=1, device="cpu"))
    assert probe_video(out).frame_count >= 2


def test_a_picture_its_format_cannot_hold_fails_as_an_output(tmp_path: Path) -> None:
    """WebP holds at most 16383 px a side: the file cannot be written, which is the output's failure, not the
    input's, and nothing is left at its path."""
    with pytest.raises(OutputError, match="cannot encode a 20000x2 picture as .webp"):
        write_image(tmp_path / "wide.webp", np.zeros((2, 20000, 3), np.uint8))
    with pytest.raises(CheckpointError):  # a checkpoint's failure, as its other failures are
        write_image(tmp_path / "wide.webp", np.zeros((2, 20000, 3), np.uint8), CheckpointError)
    assert list(tmp_path.iterdir()) == []


def test_a_process_waited_on_does_not_outlive_an_interrupt_of_the_wait() -> None:
    import signal
    import threading

    from vidstyle.io.ffmpeg import stop_process

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.5, signal.pthread_kill, (threading.get_ident(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            stop_process(proc, grace=60)  # not interrupted, it would wait the minute out
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.poll() is not None


def test_an_ffmpeg_that_crashes_on_a_file_is_said_to_crash(tmp_path: Path) -> None:
    """imageio-ffmpeg 0.6's ffmpeg 7.0.2 dies of SIGSEGV on MPEG-TS files on some machines: that was reported as
    "ffmpeg could not read it", as if the file were at fault. The stand-in is the real ffmpeg, crashing where it
    would read the file's frames (as the probe asks with framecrc)."""
    crashing = tmp_path / "ffmpeg"
    crashing.write_text(f'#!/bin/sh\ncase "$*" in *framecrc*) kill -SEGV $$;; esac\nexec {ffmpeg_exe()} "$@"\n')
    crashing.chmod(0o755)
    command = [sys.executable, "-m", "vidstyle", "render", str(demo_clip()), "--style", "starry-night", "-o",
               str(tmp_path / "out.mp4")]
    proc = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "IMAGEIO_FFMPEG_EXE": str(crashing)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"vidstyle: error: cannot read {demo_clip()} as a video: ffmpeg crashed reading it (SIGSEGV); another ffmpeg "
        f"build may read it (vidstyle runs {crashing}; IMAGEIO_FFMPEG_EXE names another)"]
