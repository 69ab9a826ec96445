"""What a video is: size, rotation, exact frame timing and audio, from one fast ffmpeg pass.

The imageio-ffmpeg wheel ships ffmpeg but not ffprobe, so we stream-copy the video packets into ffmpeg's
`framecrc` muxer: that lists every packet's timestamps in the stream's own time base (exact frame rate as a
fraction, frame count, variable-rate detection) without decoding, while stderr carries the stream summary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vidstyle.errors import InputError, VideoOpenError
from vidstyle.io.ffmpeg import run_ffmpeg

# `0:V:0` is the first video stream that is not an attached picture (cover art of an audio file).
VIDEO_STREAM = "0:V:0"

# Containers that can carry these audio codecs unchanged in MP4; anything else is re-encoded to AAC.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})

_IMAGE_FORMATS = re.compile(r"Input #0, (\w*_pipe|image2|gif|apng|webp)\b")


@dataclass(frozen=True)
class VideoInfo:
    """Facts about an input video. Sizes are (width, height) as displayed: rotation and SAR applied."""

    path: Path
    width: int
    height: int
    rotation: int  # degrees clockwise the player turns the coded picture; ffmpeg applies it when decoding
    fps: Fraction  # exact for constant-rate video; the average rate for variable-rate video
    frame_count: int
    duration: float  # seconds of video
    variable_rate: bool
    audio_codecs: tuple[str, ...]

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_codecs)


def _fail_reason(stderr: str) -> str:
    """The line of ffmpeg's complaint that a person can act on."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error opening input" not in line and "Error opening input files" not in line:
            return line.split(": ", 1)[-1] if line.startswith(("[", "/")) else line
    return "ffmpeg could not read it"


def _parse_rotation(stderr: str) -> int:
    match = re.search(r"rotation of (-?\d+(?:\.\d+)?) degrees", stderr)
    if not match:
        return 0
    # ffmpeg reports the display matrix's counter-clockwise angle; only quarter turns matter for size.
    return int(round(-float(match.group(1)) / 90.0)) * 90 % 360


def _parse_sar(stream_line: str) -> Fraction:
    match = re.search(r"\[SAR (\d+):(\d+)", stream_line)
    if not match or int(match.group(2)) == 0 or int(match.group(1)) == 0:
        return Fraction(1)
    return Fraction(int(match.group(1)), int(match.group(2)))


def _video_stream_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if re.search(r"Stream #0:\d+.*: Video:", line) and "(attached pic)" not in line:
            return line
    return ""


def _parse_audio(stderr: str) -> tuple[str, ...]:
    return tuple(re.findall(r"Stream #0:\d+\S*: Audio: (\w+)", stderr))


def _parse_timing(framecrc: str) -> tuple[Fraction, list[int]]:
    """Time base and sorted presentation timestamps of the video packets."""
    tb_match = re.search(r"^#tb 0: (\d+)/(\d+)", framecrc, re.MULTILINE)
    if not tb_match:
        raise VideoOpenError("ffmpeg reported no video timing")
    time_base = Fraction(int(tb_match.group(1)), int(tb_match.group(2)))
    stamps: list[int] = []
    for line in framecrc.splitlines():
        if line.startswith("#"):
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) >= 4:
            dts, pts = int(cols[1]), int(cols[2])
            stamps.append(pts if pts > -(2**62) else dts)  # packets without pts carry INT64_MIN
    return time_base, sorted(stamps)


def _frame_rate(time_base: Fraction, stamps: list[int], fallback: Fraction) -> tuple[Fraction, bool]:
    """Exact rate when every frame lasts the same number of ticks, else the average (variable rate)."""
    if len(stamps) < 2:
        return fallback, False
    steps = {b - a for a, b in zip(stamps, stamps[1:], strict=False)}
    span = stamps[-1] - stamps[0]
    if span <= 0:
        return fallback, False
    average = Fraction(len(stamps) - 1, 1) / (span * time_base)
    if len(steps) == 1:
        return average, False
    # Containers with coarse time bases alternate between two neighbouring durations (e.g. 33/34 ms).
    variable = max(steps) - min(steps) > 1
    return average.limit_denominator(1_000_000), variable


def _fallback_fps(stream_line: str) -> Fraction:
    match = re.search(r"(\d+(?:\.\d+)?) fps", stream_line)
    return Fraction(match.group(1)).limit_denominator(1001) if match else Fraction(25)


def probe_video(path: Path) -> VideoInfo:
    """Read a video's facts or raise a one-line VideoOpenError / InputError saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a directory, not a video: {path}")
    code, out, err = run_ffmpeg(["-i", str(path), "-map", VIDEO_STREAM, "-c", "copy", "-f", "framecrc", "-"])
    if _IMAGE_FORMATS.search(err):
        raise VideoOpenError(f"{path} is a still image, not a video (use 'vidstyle image' for stills)")
    if "matches no streams" in err or (code == 0 and not _video_stream_line(err)):
        raise VideoOpenError(f"{path} has no video stream (is it an audio file?)")
    if code != 0:
        raise VideoOpenError(f"cannot read {path} as a video: {_fail_reason(err)}")
    if "partial file" in err:
        raise VideoOpenError(f"{path} is truncated or damaged (ffmpeg: partial file)")
    stream_line = _video_stream_line(err)
    time_base, stamps = _parse_timing(out.decode("ascii", "replace"))
    if not stamps:
        raise VideoOpenError(f"{path} contains no video frames")
    size = re.search(r", (\d{2,5})x(\d{2,5})", stream_line)
    if not size:
        raise VideoOpenError(f"cannot tell the picture size of {path}")
    coded_w, coded_h = int(size.group(1)), int(size.group(2))
    display_w = max(2, round(coded_w * _parse_sar(stream_line)))
    rotation = _parse_rotation(err)
    width, height = (coded_h, display_w) if rotation in (90, 270) else (display_w, coded_h)
    fps, variable = _frame_rate(time_base, stamps, _fallback_fps(stream_line))
    return VideoInfo(
        path=path,
        width=width,
        height=height,
        rotation=rotation,
        fps=fps,
        frame_count=len(stamps),
        duration=float(len(stamps) / fps),
        variable_rate=variable,
        audio_codecs=_parse_audio(err),
    )


def size_to_fit(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) with the long side at `long_side`, aspect kept, both even (H.264 4:2:0 needs it)."""
    scale = long_side / max(width, height)
    even = lambda v: max(2, int(round(v * scale / 2.0)) * 2)  # noqa: E731 - tiny local helper
    return even(width), even(height)
