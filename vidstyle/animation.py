"""The optimization as a picture: the iterate every few iterations, written as a short video or GIF.

Gatys et al.'s method paints by gradient descent on the pixels; watching the iterate go from the photograph to
the painting shows what the weights and iterations do. Only stills offer it: a video's frames start warm.
"""

from __future__ import annotations

import numbers
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO, cast

import cv2
import numpy as np
from torch import Tensor

from vidstyle.errors import EncodeError, SettingError
from vidstyle.io.encode import YUV_BT709
from vidstyle.io.ffmpeg import StderrTail, file_url, last_words, start_ffmpeg, stop_process
from vidstyle.io.paths import FileLock, mark_partial, partial_path, publish, unmark_partial
from vidstyle.stylize import to_rgb8

ANIMATION_SUFFIXES = (".mp4", ".gif")
FPS = 10
HOLD_SECONDS = 1.5  # the finished picture stays on screen a moment before a player loops


def check_animation(path: Path, every: int) -> int:
    """`every` as a Python int (NumPy's integers too), once the animation's name and `every` are checked."""
    if path.suffix.lower() not in ANIMATION_SUFFIXES:
        raise SettingError("animation", f"must end in {' or '.join(ANIMATION_SUFFIXES)} (got {path.name})")
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise SettingError("animation_every", f"must be a whole number of iterations, at least 1 (got {every!r})")
    return int(every)


def _ffmpeg_args(dest: Path, size: tuple[int, int]) -> list[str]:
    width, height = size
    source = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(FPS), "-i", "-"]
    if dest.suffix.lower() == ".gif":
        # One palette made for the whole animation: a fixed web palette would band the painting's gradients.
        encode = ["-vf", "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse", "-f", "gif"]
    else:
        # H.264 in 4:2:0 needs even sides: a still may have odd ones.
        encode = ["-vf", f"pad=ceil(iw/2)*2:ceil(ih/2)*2,{YUV_BT709[1]}", "-c:v", "libx264", "-crf", "18",
                  *YUV_BT709[2:], "-movflags", "+faststart", "-f", "mp4"]
    return ["-v", "error", "-y", *source, *encode, file_url(dest)]


class IterateRecorder:
    """A context manager fed (iteration, image) by the optimizer; keeps every `every`-th iterate as a frame.

    It writes to a hidden sibling of `path` and renames it into place on a clean exit, so an interrupted still
    leaves no half-written animation.
    """

    def __init__(self, path: Path, size: tuple[int, int], every: int, overwrite: bool = False) -> None:
        self.path, self.size, self.every, self.overwrite = path, size, every, overwrite
        # One name per animation, as a render's partial output: a run after a kill -9 takes over the file the
        # killed one left, and the lock keeps two runs writing the same animation apart.
        self.partial = partial_path(path)
        self._lock = FileLock(self.partial, str(path))
        self.frames = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: StderrTail | None = None

    def __enter__(self) -> IterateRecorder:
        self._lock.acquire(fresh=True)
        mark_partial(self.partial)  # a leftover of a killed run is then known as ours, not someone else's file
        try:
            self._proc = start_ffmpeg(_ffmpeg_args(self.partial, self.size), stdin=True)
        except BaseException:
            self._lock.release(unlink=True)
            raise
        self._stderr = StderrTail(cast(IO[bytes], self._proc.stderr))
        return self

    def __call__(self, iteration: int, image: Tensor) -> None:
        """An iterate of the optimization (iteration 0 is its start); a coarse level's is enlarged."""
        if iteration % self.every == 0:
            self.add(to_rgb8(image))

    def add(self, rgb: np.ndarray, repeat: int = 1) -> None:
        width, height = self.size
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC)
        data = np.ascontiguousarray(rgb).data
        try:
            for _ in range(repeat):
                cast(IO[bytes], cast(subprocess.Popen[bytes], self._proc).stdin).write(data)
                self.frames += 1
        except (BrokenPipeError, OSError) as exc:
            raise EncodeError(f"writing the animation {self.path.name} failed: {self._last_words()}") from exc

    def finish(self, result: np.ndarray) -> None:
        """The finished picture (after colour preservation, as saved), held a moment at the end."""
        self.add(result, repeat=max(1, round(HOLD_SECONDS * FPS)))

    def _last_words(self) -> str:
        return last_words(cast(subprocess.Popen[bytes], self._proc), self._stderr)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        proc = cast(subprocess.Popen[bytes], self._proc)
        try:
            if exc_type is not None:
                proc.kill()
            stop_process(proc, grace=120.0)  # closing stdin lets ffmpeg write the palette pass and the file
            if self._stderr is not None:
                self._stderr.join()
            if exc_type is None and proc.returncode != 0:
                raise EncodeError(f"writing the animation {self.path.name} failed: {self._last_words()}")
            if exc_type is None:
                publish(self.partial, self.path, replace=self.overwrite, kept="")
                # The finished animation is the user's file. Unmarked after the rename: before it, a kill in between
                # would leave an unmarked partial file that no later run takes for its own.
                unmark_partial(self.path)
        finally:
            # A stop while ffmpeg writes the file (seconds, after the last iteration): it is not left writing a
            # file nobody will publish.
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            self._lock.release(unlink=self.partial.exists())
