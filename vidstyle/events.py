"""Typed progress events: the library reports through a callback, only the CLI draws."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


@dataclass(frozen=True)
class RenderStarted:
    total_frames: int
    resume_from: int  # the first frame not yet finished by an earlier run, counted as total_frames (0: fresh)
    already_done: int  # frames finished by earlier runs, not necessarily all before resume_from
    size: tuple[int, int]  # (width, height)
    fps: Fraction
    device: str
    workdir: Path
    shots: int  # segments of the plan that start fresh: the first frame and each scene cut
    audio: str  # what happens to the source's audio, e.g. "copy aac" or "no audio"
    notes: tuple[str, ...] = ()  # things a person should know before waiting for the result, one line each
    fresh_left: int = 0  # frames still to make that start from nothing (the first, scene cuts): the costly ones
    budgets: tuple[int, int] = (0, 0)  # first_iters and iters: a fresh frame's at full size, a later one's at most
    passes: int = 1  # times each frame is stylized (Config.passes): FrameStarted/FrameDone come once a pass
    pass_budget: int = 0  # iterations of a frame in a pass after the first
    first_frame: int = 0  # the video's index of the render's first frame (a part of the video: not 0)
    # Frames each pass before the last (pass 1 first) has made where the final frame is not made: a resumed
    # render's work already done that already_done, which counts final frames, does not show.
    earlier_passes_made: tuple[int, ...] = ()


@dataclass(frozen=True)
class ImageStarted:
    """A still (stylize_image) is about to be painted: at `size`, written at `written` ((width, height) each)."""

    size: tuple[int, int]
    written: tuple[int, int]
    device: str
    notes: tuple[str, ...] = ()  # as RenderStarted's: a picture not enlarged to the size, written stretched, ...


@dataclass(frozen=True)
class FrameStarted:
    index: int
    iters: int
    fresh: bool  # the frame starts from nothing: the first frame, or the first after a scene cut
    pass_number: int = 1  # which pass over the frame's shot (Config.passes); 1 is the ordinary frame loop


@dataclass(frozen=True)
class IterationDone:
    index: int
    iteration: int
    iters: int


@dataclass(frozen=True)
class FrameDone:
    """A frame is stylized; its checkpoint may not be on disk yet (FrameSaved says when it is)."""

    index: int
    loss: float
    seconds: float
    fresh: bool
    iterations: int = 0  # spent on the frame: its budget, or fewer where it converged first
    pass_number: int = 1


@dataclass(frozen=True)
class FrameSaved:
    """A frame's checkpoint is on disk, under `path`, where a reader may fetch it. The checkpoint is the painted
    frame; `gain` (under 1 in a fade to or from black, follow_fades) is the factor the video darkens it by."""

    index: int
    path: Path
    gain: float = 1.0


@dataclass(frozen=True)
class RenderFinished:
    output: Path
    frames: int
    seconds: float
    stylized: int = 0  # frames stylized by this run (the rest came from checkpoints)
    iterations: tuple[float, int, int] | None = None  # per stylized frame: mean, min, max


@dataclass(frozen=True)
class WorkersBusy:
    """A render on Ray workers (vidstyle.distributed): its workers report no per-frame events to this process, so
    the driver reports how many are stylizing a chunk now and how many frames are final (checkpointed)."""

    busy: int
    workers: int
    frames_done: int


@dataclass(frozen=True)
class BatchItemStarted:
    """One render of a batch (vidstyle.batch) begins: number `position` (from 0) of `count`."""

    position: int
    count: int
    input: Path
    styles: tuple[Path, ...]
    output: Path


@dataclass(frozen=True)
class BatchItemEnded:
    position: int
    count: int
    output: Path
    status: str  # "written", "skipped" (the output exists) or "failed"
    reason: str  # why it was skipped or failed


Event = (RenderStarted | ImageStarted | FrameStarted | IterationDone | FrameDone | FrameSaved | RenderFinished
         | WorkersBusy | BatchItemStarted | BatchItemEnded)
# Called from the render's thread and, for FrameSaved, from the thread that writes the frames behind it: a
# callback that keeps state guards it with a lock.
EventCallback = Callable[[Event], None]


def ignore_event(event: Event) -> None:
    """Default callback: the library stays silent."""
