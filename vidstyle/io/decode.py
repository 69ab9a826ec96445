"""Streaming frames out of ffmpeg, one at a time: memory stays constant whatever the video's length."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, cast

import numpy as np

from vidstyle.errors import DecodeError
from vidstyle.io.ffmpeg import StderrTail, exit_reason, file_url, start_ffmpeg, stop_process
from vidstyle.io.probe import VIDEO_STREAM, VideoInfo


@dataclass(frozen=True)
class Frame:
    """One decoded source frame: RGB uint8, shape (height, width, 3)."""

    index: int
    rgb: np.ndarray


def decode_args(info: VideoInfo, size: tuple[int, int], frames: int | None = None) -> list[str]:
    """ffmpeg arguments that emit every frame once, upright, scaled to `size` = (width, height), as RGB24.

    With `frames`, ffmpeg stops after emitting that many, so nothing past the end of a range is decoded.
    """
    width, height = size
    # Area averaging when shrinking avoids aliasing; bicubic when enlarging.
    flags = "area" if width <= info.width else "bicubic"
    limit = ["-frames:v", str(frames)] if frames is not None else []
    return [
        # At this level every stderr line is a complaint, so the first one marks where trouble began.
        "-v", "error",
        "-i", file_url(info.path),
        "-map", VIDEO_STREAM,
        # passthrough: no frame duplicated or dropped, so variable-rate phone clips keep every frame.
        "-fps_mode", "passthrough",
        "-vf", f"scale={width}:{height}:flags={flags},setsar=1",
        *limit,
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
    ]


def read_frames(info: VideoInfo, size: tuple[int, int], start: int = 0, stop: int | None = None) -> Iterator[Frame]:
    """Yield the frames [start, stop) of `info.path` at `size` (width, height); all of them by default.

    Each `Frame.index` is the frame's position in the whole video, and its pixels are exactly those a
    decode of the whole video gives: the range is cut out of the same decode from the first frame (an
    input seek is not exact on every stream), and ffmpeg stops at `stop`. The process ends with the
    generator.

    When the decode reaches the end of the file with fewer frames than the probe counted, DecodeError is
    raised after the last frame was yielded: the file is damaged, and a silently shorter video would drift
    out of sync with the source's audio, so this is an error, not a warning.
    """
    if start < 0 or (stop is not None and stop < 0):
        raise ValueError(f"frame range [{start}, {stop}) has a negative bound")
    if stop is not None and stop <= start:
        return
    width, height = size
    frame_bytes = width * height * 3
    proc = start_ffmpeg(decode_args(info, size, stop), stdout=True)
    stdout, stderr = cast(IO[bytes], proc.stdout), StderrTail(cast(IO[bytes], proc.stderr))
    index, trouble_at = 0, None
    try:
        while (buf := stdout.read(frame_bytes)) and len(buf) == frame_bytes:
            if trouble_at is None and stderr.count:
                trouble_at = index
            if index >= start:
                yield Frame(index, np.frombuffer(buf, np.uint8).reshape(height, width, 3))
            index += 1
        proc.wait()
        stderr.join()
        _check_decode(info, proc, stderr, index, stop, trouble_at if trouble_at is not None else index)
    finally:
        stop_process(proc)
        stderr.join()


def _check_decode(info: VideoInfo, proc: subprocess.Popen[bytes], stderr: StderrTail, decoded: int,
                  stop: int | None, trouble_at: int) -> None:
    """Raise DecodeError unless ffmpeg ended well and, where it reached the end, gave every frame."""
    if proc.returncode is not None and proc.returncode < 0:
        raise DecodeError(f"ffmpeg {exit_reason(proc.returncode)} while decoding {info.path} at frame {decoded}")
    if proc.returncode != 0:
        raise DecodeError(f"decoding {info.path} failed at frame {decoded}: "
                          f"{stderr.last() or 'ffmpeg ' + exit_reason(proc.returncode)}")
    if decoded == 0:
        raise DecodeError(f"{info.path} contains no decodable video frames")
    reached_end = stop is None or decoded < stop
    if reached_end and decoded < info.frame_count:
        raise DecodeError(
            f"decoded {decoded} of the {info.frame_count} frames the file's index promises: {info.path} is "
            f"damaged (near frame {trouble_at}?); re-encode it with ffmpeg to repair it, then use the copy")
