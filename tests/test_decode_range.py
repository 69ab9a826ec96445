"""read_frames(info, size, start, stop): exactly the frames [start, stop) of a full decode, pixel for pixel.

Each clip is one that an input seek gets wrong somewhere (hard cuts, 4:4:4, variable rate, rotation, long and
open GOPs, MPEG-TS whose audio starts before the video), so a range that came from anything but the frames
of a full decode would show here; and where a range starts a GOP or more past a keyframe, it must come from
a seek (decoding only from the keyframe before), not from a decode of everything before it.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import child_ffmpeg_pids, ffmpeg, needs_mpegts, reads_mpegts, shared_asset

from vidstyle.assets import demo_clip
from vidstyle.io import decode
from vidstyle.io.decode import Frame, _read_after_seek, read_frames, seek_keyframe
from vidstyle.io.ffmpeg import run_ffmpeg
from vidstyle.io.probe import VIDEO_STREAM, VideoInfo, probe_video, size_to_fit

LONG_SIDE = 64


def _testsrc(folder: Path, name: str, seconds: float, *args: str, rate: int = 25) -> Path:
    out = folder / name
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=96x64:rate={rate}:duration={seconds}", *args, str(out))
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated streams on which seeking by time is known to go wrong; the real clips are added per test."""
    folder = tmp_path_factory.mktemp("ranges")
    x264 = ("-c:v", "libx264")
    made = {
        "yuv444p": _testsrc(folder, "444.mp4", 2, *x264, "-pix_fmt", "yuv444p", "-g", "12"),
        "long_gop": _testsrc(folder, "long_gop.mp4", 11, *x264, "-g", "250", "-bf", "3", "-sc_threshold", "0"),
        "open_gop": _testsrc(folder, "open_gop.mp4", 4, *x264, "-bf", "3", "-x264-params",
                             "open-gop=1:keyint=30:min-keyint=30:scenecut=0"),
        "vfr": _testsrc(folder, "vfr.mkv", 2, "-vf", "select='mod(n\\,3)'", "-fps_mode", "vfr", *x264, "-g", "10",
                       rate=30),
    }
    plain = _testsrc(folder, "plain.mp4", 2, *x264, "-g", "10")
    made["rotated"] = folder / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(made["rotated"]))
    # The x264 version an old encoder writes into the first frame, added to a current stream: ffmpeg's
    # decoder mends such streams only when it has read that version, so they must never be seeked.
    made["old_x264"] = folder / "old_x264.mp4"
    ffmpeg("-i", str(plain), "-c", "copy", "-bsf:v",
           "h264_metadata=sei_user_data=dc45e9bd-e6d9-48b7-962c-d820d923eeef+x264 - core 148 r2643",
           str(made["old_x264"]))
    return made


@pytest.fixture(scope="module")
def real_variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The field clip (real footage, with audio) re-encoded with short GOPs, in containers that seek differently."""
    source = shared_asset("field_pan_with_audio.mp4")
    folder = tmp_path_factory.mktemp("real_ranges")
    common = ("-t", "2", "-vf", "scale=96:54", "-c:v", "libx264", "-g", "8", "-bf", "2")
    made = {
        # MPEG-TS starts its clock at 1.4 s, and its audio starts before its video.
        "ts": folder / "field.ts",
        "mkv_vfr": folder / "field_vfr.mkv",
        "mp4_audio": folder / "field.mp4",
    }
    ffmpeg("-i", str(source), *common, "-c:a", "mp2", str(made["ts"]))
    ffmpeg("-i", str(source), "-t", "2", "-vf", "scale=96:54,setpts=PTS+0.2*floor(N/7)/TB", "-fps_mode",
           "passthrough", "-c:v", "libx264", "-g", "8", "-an", str(made["mkv_vfr"]))
    ffmpeg("-i", str(source), *common, "-c:a", "aac", str(made["mp4_audio"]))
    return made


def _keyframe_indices(path: Path) -> list[int]:
    """Display-order indices of the frames the container flags as keyframes (framecrc omits F= for those)."""
    code, out, err = run_ffmpeg(["-i", str(path), "-map", VIDEO_STREAM, "-c", "copy", "-f", "framecrc", "-"])
    assert code == 0, err
    packets = [[c.strip() for c in line.split(",")] for line in out.decode().splitlines() if not line.startswith("#")]
    pts = [int(cols[2]) for cols in packets]
    order = sorted(pts)
    keys = [p for p, cols in zip(pts, packets, strict=True) if not any(c.startswith("F=0x0") for c in cols)]
    return sorted(order.index(p) for p in keys)


def _ranges(count: int, keyframes: list[int]) -> list[tuple[int, int | None]]:
    middle = count // 2
    later_keys = [k for k in keyframes if k >= 3]
    ranges: list[tuple[int, int | None]] = [
        (0, 4), (middle, middle + 5), (count - 3, count), (count - 3, None), (count - 2, count + 10),
        (7, 7), (9, 3), (count + 2, count + 6),
    ]
    if later_keys:
        key = later_keys[0]
        ranges += [(key - 3, key + 3), (key, key + 1), (key + 1, key + 4)]
    return ranges


def _check_ranges(path: Path) -> int:
    """Check every range against a full decode; return how many came from a seek (each one whole)."""
    info = probe_video(path)
    size = size_to_fit(info.width, info.height, LONG_SIDE)
    full = [f.rgb.copy() for f in read_frames(info, size)]
    assert len(full) == info.frame_count
    keyframes = _keyframe_indices(path)
    assert list(info.keyframes) == keyframes
    seeked = 0
    for start, stop in _ranges(len(full), keyframes):
        got, seeks = _read_counting_seeks(info, size, start, stop)
        expected = list(range(start, min(stop if stop is not None else len(full), len(full))))
        assert [f.index for f in got] == expected, (path.name, start, stop)
        for frame in got:
            assert np.array_equal(frame.rgb, full[frame.index]), (path.name, start, stop, frame.index)
        key = seek_keyframe(info, start)
        # read_frames seeks where seek_keyframe finds a keyframe to seek to (past the end too, which yields nothing).
        assert seeks == ([start] if key is not None and (stop is None or stop > start) else []), (path.name, start, key)
        if seeks and expected:
            assert key is not None and 0 < key <= start
            # What the seek alone gives (read_frames goes on from the first frame where it stops short).
            seek = _read_after_seek(info, size, key, start, stop)
            assert [f.index for f in _drain(seek)] == expected, (path.name, start, stop, key)
            seeked += 1
    assert not child_ffmpeg_pids()
    return seeked


def _read_counting_seeks(info: VideoInfo, size: tuple[int, int], start: int,
                         stop: int | None) -> tuple[list[Frame], list[int]]:
    """read_frames' frames of a range, and the starts it read after a seek (none where it decoded from frame 0)."""
    seeks: list[int] = []
    real = decode._read_after_seek

    def counted(info: VideoInfo, size: tuple[int, int], key: int, start: int,
                stop: int | None) -> Generator[Frame, None, int]:
        seeks.append(start)
        return real(info, size, key, start, stop)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode, "_read_after_seek", counted)
        frames = [Frame(f.index, f.rgb.copy()) for f in read_frames(info, size, start, stop)]
    return frames, seeks


def _drain(frames: Iterator[Frame]) -> list[Frame]:
    return list(frames)


def test_ranges_of_shared_clips_match_a_full_decode() -> None:
    # The field pan has keyframes at 0 and 56 only: every range is decoded from the first frame.
    assert _check_ranges(shared_asset("field_pan_with_audio.mp4")) == 0
    # The bikes clip's ranges from frame 76 on start at its keyframe 30 (one GOP of margin).
    assert _check_ranges(shared_asset("bikes_street_no_audio.mp4")) >= 3


def test_ranges_of_the_demo_clip_match_a_full_decode() -> None:
    _check_ranges(demo_clip())


@pytest.mark.parametrize("kind", ["yuv444p", "long_gop", "open_gop", "vfr", "rotated"])
def test_ranges_of_hard_streams_match_a_full_decode(clips: dict[str, Path], kind: str) -> None:
    seeked = _check_ranges(clips[kind])
    # Ranges well past the second keyframe come from a seek, except in the long GOP (keyframes 0 and 250).
    assert seeked == 0 if kind == "long_gop" else seeked >= 2


@pytest.mark.parametrize("kind", ["ts", "mkv_vfr", "mp4_audio"])
def test_ranges_of_real_footage_in_other_containers_come_from_a_seek(real_variants: dict[str, Path],
                                                                      kind: str) -> None:
    if kind == "ts":
        needs_mpegts()
    assert _check_ranges(real_variants[kind]) >= 2


def test_a_stream_from_an_old_x264_is_never_seeked(clips: dict[str, Path]) -> None:
    info = probe_video(clips["old_x264"])
    assert len(info.keyframes) >= 4
    assert seek_keyframe(info, info.frame_count - 1) is None
    assert _check_ranges(clips["old_x264"]) == 0


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_ascending_ranges_come_from_one_decode_unless_a_seek_lands_further(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch,
                                                                            codec: str) -> None:
    """A render reads a range per shot. From a source that cannot seek (MPEG-4 Part 2) each was decoded from the
    first frame: the decoding grew with the square of the video's length. Taken from one decode, the frames are
    still exactly the full decode's; a new decode starts only where a range begins before the frames kept, or
    where a seek lands past where the open decode stands."""
    quality = ("-q:v", "4") if codec == "mpeg4" else ()
    clip = _testsrc(tmp_path, f"{codec}.mkv", 4, "-c:v", codec, "-g", "10", *quality)
    info = probe_video(clip)
    size = size_to_fit(info.width, info.height, LONG_SIDE)
    full = [f.rgb.copy() for f in read_frames(info, size)]
    assert (seek_keyframe(info, 85) is None) == (codec == "mpeg4") and len(full) == 100
    decodes: list[int] = []
    real = decode.read_frames

    def counted(info: VideoInfo, size: tuple[int, int], start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        decodes.append(start)
        return real(info, size, start, stop)

    monkeypatch.setattr(decode, "read_frames", counted)
    ranges = decode.FrameRanges(info, size, len(full), keep=2)
    try:
        # Shots one after another, one continued with the two frames before it, one after a gap of frames
        # finished earlier (decoded through, or seeked past), and one before the frames kept.
        for start, stop in ((0, 10), (10, 25), (23, 30), (35, 40), (85, 90), (5, 8)):
            got = [(f.index, f.rgb.copy()) for f in ranges.read(start, stop)]
            assert [i for i, _ in got] == list(range(start, stop))
            assert all(np.array_equal(rgb, full[i]) for i, rgb in got), (start, stop)
    finally:
        ranges.close()
    assert decodes == ([0, 5] if codec == "mpeg4" else [0, 85, 5])
    assert not child_ffmpeg_pids(), "closed, the open decode's ffmpeg ends"


def test_a_seek_that_lands_past_the_range_yields_nothing() -> None:
    """The timestamps are checked before a frame is given out: a decode that begins after `start` gives none."""
    info = probe_video(shared_asset("bikes_street_no_audio.mp4"))
    seek = _read_after_seek(info, (64, 28), 76, 40, 50)  # keyframe 76 is after the range
    assert _drain(seek) == []
    assert list(f.index for f in read_frames(info, (64, 28), 100, 103)) == [100, 101, 102]
    assert not child_ffmpeg_pids()


def test_generated_streams_are_what_they_claim(clips: dict[str, Path],
                                               real_variants: dict[str, Path]) -> None:
    assert probe_video(real_variants["mkv_vfr"]).variable_rate
    if reads_mpegts():
        assert probe_video(real_variants["ts"]).has_audio
    assert _keyframe_indices(clips["long_gop"]) == [0, 250]
    assert len(_keyframe_indices(clips["open_gop"])) >= 3
    assert probe_video(clips["vfr"]).variable_rate
    assert probe_video(clips["rotated"]).rotation in (90, 270)


def test_abandoned_range_stops_ffmpeg() -> None:
    frames = read_frames(probe_video(demo_clip()), (64, 36), 10, 100)
    assert next(frames).index == 10
    frames.close()
    assert not child_ffmpeg_pids()


def test_negative_bounds_are_refused() -> None:
    info = probe_video(demo_clip())
    with pytest.raises(ValueError, match="negative"):
        next(read_frames(info, (64, 36), -1, 4))


def test_a_failed_clock_reading_is_tried_again_and_a_good_one_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy machine may time out the first-frame decode that reads the clock: the range is then decoded from the
    first frame (slower, never wrong), and the next range of the video tries the clock again."""
    info = probe_video(shared_asset("bikes_street_no_audio.mp4"))
    monkeypatch.setattr(decode, "_CLOCKS", {})
    real, calls = decode._read_clock, []

    def first_fails(video: VideoInfo) -> object:
        calls.append(video)
        return None if len(calls) == 1 else real(video)

    monkeypatch.setattr(decode, "_read_clock", first_fails)
    assert seek_keyframe(info, 100) is None, "without a clock there is no seek"
    key = seek_keyframe(info, 100)
    assert key is not None and 0 < key <= 100, "read again, and this time it seeks"
    assert seek_keyframe(info, 110) is not None and len(calls) == 2, "a good reading is kept"
