"""More passes over a shot (Ruder et al. 2018, §3.3): backward and forward in turn after the ordinary forward pass.

The forward pass tells a frame only about the frames before it, so a shot's first frames never hear of its later
ones, and two pieces of a shot started apart meet at a seam. Each further pass walks the shot the other way: a
frame starts from its own result of the pass before, blended, where the flow is reliable, with its neighbour's
result of this pass warped onto it (eq. 11, with the blend weight below), and the temporal loss holds it to both
neighbours: the one this pass has just made and the one on the other side as the pass before left it. Strokes then
settle with both neighbours and flicker less.

This module knows nothing of files: `PassFrames` gives and takes a pass's frames (a render keeps them as
checkpoints, so an interrupted pass resumes where it stopped and makes the same frames), and `sources` gives a
source frame by index (a render decodes them in blocks, in the pass's direction).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from vidstyle.config import Config
from vidstyle.errors import Cancelled, DecodeError
from vidstyle.events import EventCallback, FrameDone, FrameStarted, IterationDone, ignore_event
from vidstyle.flow import colour_agreement, reliable_flow, reliable_flows, to_gray, warp, warp_keeping_detail
from vidstyle.io.decode import Frame, read_frames
from vidstyle.io.probe import VideoInfo
from vidstyle.losses import TemporalLoss
from vidstyle.sequence import carry_sharpness, stylize_sequence
from vidstyle.stylize import Stylizer, to_tensor

# δ of eq. 11: how much of the warped neighbour a frame starts from where the flow is reliable; the rest is the
# frame's own result of the pass before. Ruder et al. use one half.
BLEND = 0.5
# Share of a later frame's iterations (Config.iters) a frame gets in each pass after the first. The blended start
# is already close: a quarter, a half and all of them steadied the field pan alike (about -11 % warping error at
# 96 px), and more iterations only restyle the blend (scripts/bench_fidelity.py, docs/performance.md).
LATER_PASS_SHARE = 0.25
# A backward pass decodes its source in blocks from the end, each block anew from a keyframe before it (from the
# video's first frame where it cannot seek): few large blocks decode far less than many small ones. The two blocks
# at hand stay within this many bytes whatever the shot's length (a block holds at least SOURCE_BLOCK frames, so
# frames over 4 MB take more).
SOURCE_WINDOW_BYTES = 256 * 2**20
SOURCE_BLOCK = 32

FlowTo = tuple[np.ndarray, np.ndarray]  # the flow from a frame to a neighbour, and where it is reliable


class PassFrames(Protocol):
    """The results of each pass, by pass number (1 is the ordinary forward pass) and frame index."""

    def has(self, number: int, index: int) -> bool:
        """Whether pass `number` has made the frame (without reading it)."""

    def load(self, number: int, index: int) -> np.ndarray | None:
        """The frame as pass `number` made it, or None where that pass has not made it yet."""

    def save(self, number: int, index: int, rgb: np.ndarray) -> None: ...


def later_pass_iterations(iters: int) -> int:
    """Iterations a frame gets in a pass after the first, from a later frame's `iters`."""
    return max(1, round(iters * LATER_PASS_SHARE))


def source_block(size: tuple[int, int]) -> int:
    """Frames of `size` (width, height) a backward pass decodes at a time."""
    width, height = size
    return max(SOURCE_BLOCK, SOURCE_WINDOW_BYTES // (2 * width * height * 3))


def pass_order(number: int, first: int, stop: int) -> range:
    """Frame indices in the order pass `number` visits frames [first, stop): odd passes forward, even backward."""
    return range(first, stop) if number % 2 else range(stop - 1, first - 1, -1)


class SourceWindow:
    """Source frames by index for a pass: one decode streamed forward, or blocks of `block` frames decoded from
    the end backward (a decoder runs forward only); the frames next to the one asked for stay at hand."""

    def __init__(self, read: Callable[[int, int], Iterator[Frame]], first: int, stop: int, forward: bool,
                 block: int) -> None:
        self.read, self.first, self.stop, self.forward, self.block = read, first, stop, forward, block
        self.frames: dict[int, np.ndarray] = {}
        self.older: dict[int, np.ndarray] = {}  # the block before: a frame's neighbour may lie across the edge
        self.stream: Iterator[Frame] | None = None
        self.position = first  # the index the stream gives next

    @classmethod
    def of_video(cls, info: VideoInfo, size: tuple[int, int], first: int, stop: int, forward: bool) -> SourceWindow:
        """Frames [first, stop) of a probed video at `size`, backward in blocks as large as SOURCE_WINDOW_BYTES
        allows."""
        return cls(lambda start, end: read_frames(info, size, start, end), first, stop, forward,
                   block=source_block(size))

    def __call__(self, index: int) -> np.ndarray:
        if index in self.older:
            return self.older[index]
        if index not in self.frames:
            if self.forward:
                self._stream_to(index)
            else:
                start = max(self.first, index + 1 - self.block)
                self.older, self.frames = self.frames, {}  # two blocks at hand, not three, while the next decodes
                self.frames = {f.index: f.rgb for f in self.read(start, index + 1)}
        if index not in self.frames:
            raise self._ended(index)
        return self.frames[index]

    @staticmethod
    def _ended(index: int) -> DecodeError:
        """The video gave fewer frames than it was probed to hold (damaged since, or a decoder that drops some)."""
        return DecodeError(f"the video ended before frame {index}, which it had when the render began")

    def _stream_to(self, index: int) -> None:
        if self.stream is None or index < self.position:
            self.close()
            self.stream, self.position = self.read(index, self.stop), index
        while self.position <= index:
            frame = next(self.stream, None)
            if frame is None:
                raise self._ended(index)
            self.frames[frame.index], self.position = frame.rgb, frame.index + 1
        self.frames = {i: rgb for i, rgb in self.frames.items() if i >= index - 1}

    def close(self) -> None:
        """End the forward decode (its ffmpeg) before the pass is over, as when it is interrupted."""
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()
        self.stream = None


def refine(number: int, first: int, stop: int, sources: Callable[[int], np.ndarray], frames: PassFrames,
           stylizer: Stylizer, on_event: EventCallback, stop_event: threading.Event | None = None,
           shot: tuple[int, int] | None = None) -> None:
    """Make pass `number` (>= 2) of frames [first, stop) from pass `number` - 1; frames it has made are kept.

    The frames are the whole shot, or a piece of `shot` = [start, stop) whose neighbouring pieces other workers
    refine at the same time: across the piece's edges a frame's neighbours are taken as the pass before left them
    (never this pass's, which may or may not be made yet), so the result does not depend on the timing, and each
    pass carries the strokes one more frame across the seam between two pieces that were started apart.
    """
    shot_first, shot_stop = shot or (first, stop)
    order = list(pass_order(number, first, stop))
    step = 1 if number % 2 else -1  # as pass_order walks
    todo = next((k for k, index in enumerate(order) if not frames.has(number, index)), len(order))
    if todo == len(order):
        return

    def outside(index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(source, the pass before's result) of a neighbour, None past the shot's ends."""
        return (sources(index), _loaded(frames, number - 1, index)) if shot_first <= index < shot_stop else None

    # (source, result) of the frame before in this pass's direction: this pass's own inside the piece.
    if todo > 0:
        ahead = (sources(order[todo - 1]), _loaded(frames, number, order[todo - 1]))
    else:
        ahead = outside(order[0] - step)
    own = _loaded(frames, number - 1, order[todo])
    flows = NeighbourFlows(stylizer.config.flow)
    for k in range(todo, len(order)):
        index = order[k]
        source = sources(index)
        # The neighbour this pass has not reached yet, as the pass before left it (and the next frame's own start).
        behind = outside(index + step)
        result = _refine_frame(number, index, source, own, ahead, behind, stylizer, on_event, stop_event, flows)
        frames.save(number, index, result)
        ahead = (source, result)
        if behind is not None:
            own = behind[1]


class NeighbourFlows:
    """A pass's reliable flows between neighbouring frames, each pair estimated once: a frame's flow to the neighbour
    the pass reaches next is, reversed, that neighbour's flow back to it (flow.reliable_flows)."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.held: dict[tuple[int, int], FlowTo] = {}

    def between(self, index: int, source: np.ndarray, other: int, other_source: np.ndarray) -> FlowTo:
        """Flow from frame `index` to frame `other` and its reliability."""
        found = self.held.pop((index, other), None)
        if found is None:
            found, self.held[(other, index)] = reliable_flows(to_gray(source), to_gray(other_source), self.method)
        # Only flows from or to this frame can still be asked for: the pass walks on, one frame at a time.
        self.held = {pair: flow for pair, flow in self.held.items() if index in pair}
        return found


class MemoryPasses:
    """Each pass's frames held in memory: for a shot whose frames are in memory anyway (a benchmark, the API)."""

    def __init__(self) -> None:
        self.frames: dict[tuple[int, int], np.ndarray] = {}

    def has(self, number: int, index: int) -> bool:
        return (number, index) in self.frames

    def load(self, number: int, index: int) -> np.ndarray | None:
        return self.frames.get((number, index))

    def save(self, number: int, index: int, rgb: np.ndarray) -> None:
        self.frames[(number, index)] = rgb


def stylize_shot(frames: Sequence[Frame], stylizer: Stylizer,
                 on_event: EventCallback = ignore_event) -> list[np.ndarray]:
    """Every pass of `stylizer.config.passes` over consecutive frames of one shot held in memory: the first is
    the ordinary frame loop, the rest `refine`; returns the last pass's frames in order."""
    store, sources = MemoryPasses(), {frame.index: frame.rgb for frame in frames}
    for result in stylize_sequence(iter(frames), stylizer, find_cuts=False, on_event=on_event):
        store.save(1, result.index, result.rgb)
    first, stop = frames[0].index, frames[-1].index + 1
    for number in range(2, stylizer.config.passes + 1):
        refine(number, first, stop, sources.__getitem__, store, stylizer, on_event)
    return [_loaded(store, stylizer.config.passes, index) for index in range(first, stop)]


def _loaded(frames: PassFrames, number: int, index: int) -> np.ndarray:
    rgb = frames.load(number, index)
    if rgb is None:
        raise RuntimeError(f"pass {number} has no frame {index}, which the next pass starts from")
    return rgb


def _warped(source: np.ndarray, neighbour: tuple[np.ndarray, np.ndarray], config: Config,
            flow_to: FlowTo | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The neighbour's result brought onto this frame along the flow, and where that is to be trusted: where the
    flow is consistent and, as in the first pass (Config.change_tolerance), the source did not change. `flow_to`:
    the flow to the neighbour and its reliability, where the caller has them.

    Unlike the first pass's warm start, the neighbour is brought over as it looks, not re-based on this frame's
    palette start: here each frame's own result anchors half its start, so last frame's recolouring cannot pile
    up along the shot, and holding the neighbour's colours steadied far more at a little more style lost
    (scripts/bench_fidelity.py; docs/performance.md, "The temporal target on the current frame's palette")."""
    near_source, near_result = neighbour
    flow, reliable = flow_to or reliable_flow(to_gray(source), to_gray(near_source), config.flow)
    if config.change_tolerance > 0:
        reliable = reliable * colour_agreement(source, warp(near_source, flow), config.change_tolerance)
    # Sharp from the same size on as the first pass carries its paint (sequence.carry_sharpness): a bilinear sample
    # at a sub-pixel shift blurs the neighbour's finest strokes.
    sharpness = carry_sharpness(max(source.shape[:2]))
    return warp_keeping_detail(near_result.astype(np.float32), flow, sharpness), reliable


def neighbour_start(source: np.ndarray, own: np.ndarray, neighbour: tuple[np.ndarray, np.ndarray],
                    config: Config, flow_to: FlowTo | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start image, warped neighbour, reliability): eq. 11, the neighbour brought onto this frame by the flow."""
    warped, reliable = _warped(source, neighbour, config, flow_to)
    share = BLEND * reliable[..., None]
    start = share * warped + (1.0 - share) * own.astype(np.float32)
    return np.clip(start, 0, 255).round().astype(np.uint8), warped, reliable


def two_sided_target(ahead: tuple[np.ndarray, np.ndarray],
                     behind: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """One target and weight for the temporal loss against both neighbours, each (warped result, reliability):
    c1 (x - w1)^2 + c2 (x - w2)^2 is (c1 + c2) (x - w)^2 up to a constant, with w the c-weighted mean of the
    two warped neighbours."""
    warped, reliable = ahead
    if behind is None:
        return warped, reliable
    other, other_reliable = behind
    weight = reliable + other_reliable
    mean = (warped * reliable[..., None] + other * other_reliable[..., None]) / np.maximum(weight, 1e-6)[..., None]
    return np.where(weight[..., None] > 1e-6, mean, warped), weight


def _refine_frame(number: int, index: int, source: np.ndarray, own: np.ndarray,
                  ahead: tuple[np.ndarray, np.ndarray] | None, behind: tuple[np.ndarray, np.ndarray] | None,
                  stylizer: Stylizer, on_event: EventCallback, stop_event: threading.Event | None,
                  flows: NeighbourFlows) -> np.ndarray:
    """One frame of a later pass: started from eq. 11 with the neighbour this pass made (`ahead`), held by the
    temporal loss to it and to the neighbour on the other side as the pass before left it (`behind`)."""
    config = stylizer.config
    iters = later_pass_iterations(config.iters)
    on_event(FrameStarted(index, iters, False, number))
    began = time.perf_counter()  # the flows are computed here, not ahead on a thread: they are the frame's time
    step = 1 if number % 2 else -1  # as pass_order walks: `ahead` is frame index - step, `behind` index + step
    start, target = own, None
    other = None
    if behind is not None and config.temporal_weight > 0:
        other = _warped(source, behind, config, flows.between(index, source, index + step, behind[0]))
    if ahead is not None:
        start, warped, reliable = neighbour_start(source, own, ahead, config,
                                                  flows.between(index, source, index - step, ahead[0]))
        target = two_sided_target((warped, reliable), other)
    elif other is not None:  # the pass's first frame: held to the neighbour it has, on the other side
        target = other
    temporal = None
    if target is not None and config.temporal_weight > 0:
        image, weight = target
        temporal = TemporalLoss(to_tensor(np.clip(image, 0, 255).round().astype(np.uint8), stylizer.device),
                                torch.from_numpy(weight.astype(np.float32)).to(stylizer.device)[None, None])

    def on_step(i: int, _loss: torch.Tensor) -> None:
        if stop_event is not None and stop_event.is_set():
            raise Cancelled()
        on_event(IterationDone(index, i, iters))

    result = stylizer.stylize(source, start, iters, temporal, on_step)
    on_event(FrameDone(index, result.loss, time.perf_counter() - began, False, result.iterations, number))
    return result.rgb
