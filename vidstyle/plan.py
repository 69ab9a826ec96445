"""A render's plan: the video's frame ranges, split at scene cuts, found by one cheap pass over small frames.

A segment that starts at a cut (or at frame 0) starts fresh; the rest continue their shot from the stylized
frame before them. The sequential render runs one segment per shot; `chunk_frames` splits long shots into
pieces that several workers can take.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass

import numpy as np

from vidstyle.errors import Cancelled
from vidstyle.fades import mean_luma
from vidstyle.flow import is_scene_cut
from vidstyle.io.decode import read_frames
from vidstyle.io.probe import VideoInfo, size_to_fit

# Long side of the frames the cut test looks at. The test compares colour histograms, which a small frame
# gives as well as a large one; at or under this size the render's own frames are used, as before plans existed.
PLAN_SIDE = 256


@dataclass(frozen=True)
class Segment:
    """Frames [start, stop) of the video; `fresh`: the first starts from nothing (first frame or a cut)."""

    start: int
    stop: int
    fresh: bool

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Scan:
    """What the plan pass finds: the frames that begin a new shot (the first excluded), and each frame's mean luma
    (fades.py darkens the output by it), both counted from the scan's first frame."""

    cuts: list[int]
    brightness: list[float]


def scan_frames(frames: Iterable[np.ndarray], threshold: float, stop: threading.Event | None = None,
                first: int = 0) -> Scan:
    """The cuts, by the render's own cut test, and the mean luma of frames numbered from `first`."""
    cuts, brightness, previous = [], [], None
    for index, rgb in enumerate(frames, start=first):
        if stop is not None and stop.is_set():
            raise Cancelled()
        if previous is not None and is_scene_cut(previous, rgb, threshold):
            cuts.append(index)
        brightness.append(round(mean_luma(rgb), 2))
        previous = rgb
    return Scan(cuts, brightness)


def scan_video(info: VideoInfo, render_size: tuple[int, int], threshold: float,
               stop: threading.Event | None = None, span: tuple[int, int] | None = None) -> Scan:
    """The plan pass over the video (or its frames `span` = [first, stop)): one decode at a small size; every
    frame is checked, since a cut is one pair of frames."""
    size = render_size if max(render_size) <= PLAN_SIDE else size_to_fit(info.width, info.height, PLAN_SIDE)
    first, end = span if span is not None else (0, None)
    # Closed here, not left to the garbage collector: an exception (a stop) that a caller keeps would keep the
    # decoder's ffmpeg running through its traceback.
    with closing(read_frames(info, size, first, end)) as frames:
        return scan_frames((frame.rgb for frame in frames), threshold, stop, first)


def find_cuts(info: VideoInfo, render_size: tuple[int, int], threshold: float,
              stop: threading.Event | None = None, span: tuple[int, int] | None = None) -> list[int]:
    """Scene cuts of the video (or of its frames `span`), by the plan pass."""
    return scan_video(info, render_size, threshold, stop, span).cuts


def plan_segments(frame_count: int, cuts: Iterable[int], chunk_frames: int | None = None,
                  first: int = 0) -> list[Segment]:
    """Shots between the cuts of frames [first, frame_count), each split into pieces of at most `chunk_frames`
    (none: one segment per shot)."""
    bounds = sorted({first, *(c for c in cuts if first < c < frame_count), frame_count})
    segments = []
    for start, stop in zip(bounds, bounds[1:], strict=False):
        step = chunk_frames or (stop - start)
        segments += [Segment(a, min(a + step, stop), a == start) for a in range(start, stop, step)]
    return segments

