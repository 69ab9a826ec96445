"""Typed progress events: the library reports through a callback, only the CLI draws."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


@dataclass(frozen=True)
class RenderStarted:
    total_frames: int
    resume_from: int  # frames already finished by an earlier run (0 for a fresh render)
    size: tuple[int, int]  # (width, height)
    fps: Fraction
    device: str
    workdir: Path


@dataclass(frozen=True)
class FrameStarted:
    index: int
    iters: int
    scene_cut: bool  # the frame starts fresh: first frame, or the first after a hard cut


@dataclass(frozen=True)
class IterationDone:
    index: int
    iteration: int
    iters: int


@dataclass(frozen=True)
class FrameDone:
    index: int
    loss: float
    seconds: float
    scene_cut: bool


@dataclass(frozen=True)
class RenderFinished:
    output: Path
    frames: int
    seconds: float


Event = RenderStarted | FrameStarted | IterationDone | FrameDone | RenderFinished
EventCallback = Callable[[Event], None]


def ignore_event(event: Event) -> None:
    """Default callback: the library stays silent."""
