"""ffmpeg edges: probing, streaming decode, encode with audio, and no process left behind."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import child_ffmpeg_pids, decoded, ffmpeg, shared_asset

from vidstyle.assets import demo_clip
from vidstyle.errors import VideoOpenError
from vidstyle.io.decode import read_frames
from vidstyle.io.encode import VideoWriter
from vidstyle.io.probe import probe_video, size_to_fit


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


def test_pcm_audio_is_reencoded_for_mp4(lavfi_clip, media: Path) -> None:
    clip = lavfi_clip("pcm.mov", extra=("-c:a", "pcm_s16le"))
    info = probe_video(clip)
    assert info.audio_codecs == ("pcm_s16le",)
    out = media / "pcm_out.mp4"
    _write(out, [f.rgb for f in read_frames(info, (64, 48))], info.fps, info)
    assert probe_video(out).audio_codecs == ("aac",)


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
    (b"", "cannot read"),
])
def test_unreadable_inputs_are_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    with pytest.raises(VideoOpenError, match=reason):
        probe_video(bad)
