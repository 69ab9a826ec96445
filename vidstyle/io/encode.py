"""Writing frames to H.264 with the source's audio muxed back, always to a temporary file first."""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, cast

import numpy as np

from vidstyle.errors import EncodeError
from vidstyle.io.ffmpeg import StderrTail, start_ffmpeg, stop_process
from vidstyle.io.probe import MP4_AUDIO_COPY, VideoInfo

_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def container_for(path: Path) -> str:
    """ffmpeg muxer name for an output file name; raises EncodeError for unsupported extensions."""
    fmt = _CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        raise EncodeError(f"unsupported output type '{path.suffix}' (use {', '.join(sorted(_CONTAINERS))})")
    return fmt


def audio_args(source: VideoInfo | None, container: str) -> list[str]:
    """Map every source audio stream; copy it where the container accepts the codec, else AAC."""
    if source is None or not source.has_audio:
        return []
    copyable = container == "matroska" or all(c in MP4_AUDIO_COPY for c in source.audio_codecs)
    codec = ["-c:a", "copy"] if copyable else ["-c:a", "aac", "-b:a", "192k"]
    return ["-map", "1:a", *codec]


def encode_args(
    dest: Path, size: tuple[int, int], fps: Fraction, source: VideoInfo | None, crf: int
) -> list[str]:
    width, height = size
    container = container_for(dest)
    inputs = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
              "-framerate", f"{fps.numerator}/{fps.denominator}", "-i", "-"]
    if source is not None and source.has_audio:
        inputs += ["-i", str(source.path)]
    video = ["-map", "0:v:0", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf),
             "-pix_fmt", "yuv420p", "-fps_mode", "passthrough"]
    faststart = ["-movflags", "+faststart"] if container in ("mp4", "mov") else []
    return ["-v", "error", "-y", *inputs, *video, *audio_args(source, container), *faststart,
            "-f", container, str(dest)]


class VideoWriter:
    """Context manager: `write()` RGB frames; on a clean exit the file is finalized, on error it is removed.

    It writes to `dest` directly; callers pass a temporary name and rename it into place when done, so that
    a half-written file never sits at the user's output path.
    """

    def __init__(self, dest: Path, size: tuple[int, int], fps: Fraction, source: VideoInfo | None,
                 crf: int = 18) -> None:
        self.dest = Path(dest)
        self.size = size
        self.frames_written = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._args = encode_args(self.dest, size, fps, source, crf)
        self._stderr: StderrTail | None = None

    def __enter__(self) -> VideoWriter:
        self._proc = start_ffmpeg(self._args, stdin=True)
        self._stderr = StderrTail(cast(IO[bytes], self._proc.stderr))
        return self

    def write(self, rgb: np.ndarray) -> None:
        width, height = self.size
        if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
            raise EncodeError(f"frame of shape {rgb.shape} {rgb.dtype} does not match {width}x{height} RGB uint8")
        try:
            cast(IO[bytes], cast(subprocess.Popen[bytes], self._proc).stdin).write(np.ascontiguousarray(rgb).data)
        except (BrokenPipeError, OSError) as exc:
            raise EncodeError(f"encoder stopped at frame {self.frames_written}: {self._last_words()}") from exc
        self.frames_written += 1

    def _last_words(self) -> str:
        proc = cast(subprocess.Popen[bytes], self._proc)
        stop_process(proc)
        if self._stderr is not None:
            self._stderr.join()
            return self._stderr.last() or f"ffmpeg exited with {proc.returncode}"
        return f"ffmpeg exited with {proc.returncode}"

    def close(self) -> None:
        """Finish the file; raises EncodeError if ffmpeg failed."""
        proc = cast(subprocess.Popen[bytes], self._proc)
        stop_process(proc, grace=600.0)  # closing stdin lets ffmpeg flush and mux; this can take a while
        if self._stderr is not None:
            self._stderr.join()
        if proc.returncode != 0:
            raise EncodeError(f"encoding {self.dest.name} failed: {self._last_words()}")

    def abort(self) -> None:
        proc = cast(subprocess.Popen[bytes], self._proc)
        if proc.poll() is None:
            proc.kill()
        stop_process(proc)
        if self._stderr is not None:
            self._stderr.join()
        self.dest.unlink(missing_ok=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.dest.unlink(missing_ok=True)
                raise
        else:
            self.abort()


def temporary_path(final: Path) -> Path:
    """A hidden sibling of the final output, so the rename into place stays on one file system."""
    return final.with_name(f".{final.stem}.partial-{os.getpid()}{final.suffix}")
