"""Streaming frames out of ffmpeg, one at a time: memory stays constant whatever the video's length."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, cast

import numpy as np

from vidstyle.errors import VideoOpenError
from vidstyle.io.ffmpeg import StderrTail, start_ffmpeg, stop_process
from vidstyle.io.probe import VIDEO_STREAM, VideoInfo


@dataclass(frozen=True)
class Frame:
    """One decoded source frame: RGB uint8, shape (height, width, 3)."""

    index: int
    rgb: np.ndarray


def decode_args(info: VideoInfo, size: tuple[int, int]) -> list[str]:
    """ffmpeg arguments that emit every frame once, upright, scaled to `size` = (width, height), as RGB24."""
    width, height = size
    # Area averaging when shrinking avoids aliasing; bicubic when enlarging.
    flags = "area" if width <= info.width else "bicubic"
    return [
        "-i", str(info.path),
        "-map", VIDEO_STREAM,
        # passthrough: no frame duplicated or dropped, so variable-rate phone clips keep every frame.
        "-fps_mode", "passthrough",
        "-vf", f"scale={width}:{height}:flags={flags},setsar=1",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
    ]


def read_frames(info: VideoInfo, size: tuple[int, int]) -> Iterator[Frame]:
    """Yield every frame of `info.path` at `size` (width, height); the ffmpeg process ends with the generator."""
    width, height = size
    frame_bytes = width * height * 3
    proc = start_ffmpeg(decode_args(info, size), stdout=True)
    stdout, stderr = cast(IO[bytes], proc.stdout), StderrTail(cast(IO[bytes], proc.stderr))
    index = 0
    try:
        while True:
            buf = stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield Frame(index, np.frombuffer(buf, np.uint8).reshape(height, width, 3))
            index += 1
        proc.wait()
        stderr.join()
        if proc.returncode != 0:
            raise VideoOpenError(f"decoding {info.path} failed at frame {index}: {stderr.last()}")
        if index == 0:
            raise VideoOpenError(f"{info.path} contains no decodable video frames")
    finally:
        stop_process(proc)
        stderr.join()
