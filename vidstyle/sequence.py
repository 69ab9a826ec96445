"""A sequence of frames becomes a sequence of stylized frames: the one frame loop of vidstyle.

Everything that ties a frame to the one before it lives here: scene cuts, optical flow and its reliability, the
warm start, the temporal loss's target and per-frame random seeds. It reads and writes no files: a render feeds it
the decoded frames of one segment, a still is a sequence of one, a benchmark feeds frames held in memory, and each
of them decides what to do with the results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vidstyle.config import Config, check_call_arguments
from vidstyle.detail import source_detail
from vidstyle.errors import Cancelled, SettingError
from vidstyle.events import EventCallback, FrameDone, FrameStarted, IterationDone, ignore_event
from vidstyle.flow import colour_agreement, is_scene_cut, reliable_flow, to_gray, warp, warp_keeping_detail
from vidstyle.io.decode import Frame
from vidstyle.limits import MIN_SIDE
from vidstyle.losses import TemporalLoss
from vidstyle.stylize import Stylizer, add_stylization, check_is_stylizer, is_rgb8, to_tensor
from vidstyle.threads import read_ahead

# Share of the warped stylization kept where the flow is unreliable (disocclusions, motion boundaries, colours that
# changed): there things move or appear, and old strokes carried there ride along as old edges. Dropping it (0.0)
# flickered more; keeping all of it (1.0) ghosted old edges. Since frames start from the painting's palette (where
# nothing is carried a frame starts as a fresh one does), 0.35 keeps more of the source's edges than 0.7 did at
# equal style, for a little more flicker (scripts/bench_fidelity.py; docs/performance.md).
UNRELIABLE_KEEP = 0.35

# The temporal target carries the previous frame's paint, resampled along the flow once a frame. Bilinear
# resampling is a blur at a sub-pixel shift, and it piles up along a shot; on small renders a later frame's few
# iterations paint the lost grain back, on larger ones less and less, and the finest strokes faded: the street's at
# 512 px, and from 256 px on the field pan's sky, whose paint fell from the fresh frame's gain to under the per-frame
# peer's. Lanczos keeps them, where the source is flat too: there it moves a little more with the flow's errors,
# still a small part of independent frames' flicker along a motion known exactly. So the target is resampled with
# Lanczos on renders above SHARP_FROM px, fully from SHARP_FULL px on (scripts/bench_fidelity.py,
# scripts/bench_known_motion.py; docs/performance.md "Why the street's style fades", "A sharp carry in flat
# regions").
SHARP_FROM, SHARP_FULL = 96, 256
# Share of the carried stylization that the temporal target holds a later frame to, the rest of the target being the
# frame's own palette start: where it is under 1 the old paint relaxes toward each frame's own balance, and a fresh
# frame's heavy texture no longer rides along the shot. On small renders everywhere: there a later frame's
# iterations paint the strokes back (the field pan at 96 px kept fewer edges than independent frames; now more). At
# HOLD_FULL px detailed regions hold all of it: the style goal is set at that size, and a decay everywhere there took
# The Starry Night on the field pan under the per-frame peer's style (scripts/bench_style.py). Where the source is
# flat, by a share that grows with the size (half at 256 px, all from FLAT_FULL px): there the carried texture is only
# what shimmers (the field pan's sky at 512 px) or piles up over a long shot (at 256 px a fresh frame's moon rode the
# whole pan, and the later frames kept ever fewer of the source's edges). Above HOLD_FULL px detailed regions relax
# too, all of the way at FLAT_FULL px and up, where a shot's frames that build on each other otherwise painted the
# field pan's ground well over independent frames' style, the only clip and size whose whole render was outside the
# style band; the street's style hardly moves there and both clips come out a little steadier
# (scripts/bench_fidelity.py; docs/performance.md "A decay of the carried paint", "Paint that piles up over a long
# flat shot", "Whole clips"). Small renders hold HOLD_SMALL, large ones HOLD_FLAT (flat regions first).
# Measured over whole clips, 0.9 left the field pan at 96 px short of independent frames' style by more than the
# fidelity goal allows, and 0.95 keeps it within, its edges still above independent frames' now that held frames
# weigh their structure more where the source is flat.
HOLD_SMALL, HOLD_FROM, HOLD_FULL = 0.95, 96, 256
HOLD_FLAT = 0.95
FLAT_FULL = 512


@dataclass(frozen=True)
class StylizedFrame:
    """One result of the loop; `fresh` means it started from nothing (first frame, or the first after a cut)."""

    index: int
    rgb: np.ndarray  # (H, W, 3) uint8
    loss: float
    fresh: bool
    iterations: int  # spent on it: the budget, or fewer where the loss converged first (Config.tol)
    seconds: float


@dataclass(frozen=True)
class Previous:
    """The frame just before a sequence that continues a shot: its source pixels and its stylized result, and
    (source, stylized) of the frames before it in the shot, nearest first, as far as `temporal_reach` looks."""

    source: np.ndarray
    stylized: np.ndarray
    earlier: tuple[tuple[np.ndarray, np.ndarray], ...] = ()


@dataclass(frozen=True)
class LongTerm:
    """How frame t relates to frame t - `back` of its shot (back >= 2): flow t -> t-back and its reliability."""

    back: int
    backward: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Motion:
    """A source frame and how it relates to the one before it."""

    frame: Frame
    previous: np.ndarray | None  # the previous source frame (RGB), None where the frame starts fresh
    fresh: bool
    backward: np.ndarray | None  # flow frame t -> t-1, when flow is on
    mask: np.ndarray | None  # reliability of `backward` in 0..1
    further: tuple[LongTerm, ...] = ()  # frames further back, nearest first (temporal_reach > 1)


def reach_offsets(reach: int) -> tuple[int, ...]:
    """The frames back the temporal loss looks at beyond t-1: 2, 4, 8, ... up to `reach`."""
    offsets, back = [], 2
    while back <= reach:
        offsets.append(back)
        back *= 2
    return tuple(offsets)


def frames_back(config: Config) -> int:
    """How many of a shot's latest frames the loop keeps: as far back as the temporal loss looks, at least one."""
    return max(reach_offsets(config.temporal_reach), default=1) if config.flow != "none" else 1


def _long_term(frame: np.ndarray, cur_gray: np.ndarray, other: np.ndarray, back: int, method: str) -> LongTerm:
    """Frame t against frame t - back: flow, reliable where the flow is consistent and the colours agree.

    The colours are checked at colour_agreement's own tolerance (0.1), whatever `change_tolerance` (the previous
    frame's check, 0.025 by default, 0 for none) says: over several frames light and noise drift further, and a
    still background that something has covered since passes the flow's check, so these terms, which only fill
    what the closer frames do not see, always check the colours."""
    backward, mask = reliable_flow(cur_gray, to_gray(other), method)
    return LongTerm(back, backward, mask * colour_agreement(frame, warp(other, backward)))


def track_motion(frames: Iterable[Frame], config: Config, previous: Sequence[np.ndarray] | np.ndarray | None = None,
                 find_cuts: bool = True) -> Iterator[Motion]:
    """Scene cuts and flow between consecutive source frames; `previous` is the source frame before the first,
    or those frames nearest first (as far back as `temporal_reach` looks).

    Without `find_cuts` the caller has already split the video at its cuts (a render's plan), so only the start
    of the sequence is fresh, and only where nothing precedes it.
    """
    offsets = reach_offsets(config.temporal_reach) if config.flow != "none" else ()
    shot: list[np.ndarray] = [previous] if isinstance(previous, np.ndarray) else list(previous or [])
    for frame in frames:
        prev = shot[0] if shot else None
        fresh = prev is None or (find_cuts and is_scene_cut(prev, frame.rgb, config.cut_threshold))
        backward = mask = None
        further: tuple[LongTerm, ...] = ()
        if not fresh and config.flow != "none":
            cur_gray = to_gray(frame.rgb)
            backward, mask = reliable_flow(cur_gray, to_gray(prev), config.flow)  # type: ignore[arg-type]
            if config.change_tolerance > 0:
                mask = mask * colour_agreement(frame.rgb, warp(prev, backward), config.change_tolerance)
            further = tuple(_long_term(frame.rgb, cur_gray, shot[back - 1], back, config.flow)
                            for back in offsets if back <= len(shot))
        yield Motion(frame, None if fresh else prev, fresh, backward, mask, further)
        shot = [frame.rgb] if fresh else [frame.rgb, *shot][:frames_back(config)]


def long_term_masks(nearest: np.ndarray, further: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Ruder et al. 2018, eq. 8: each further frame's reliability less what the closer frames already cover,
    so a pixel is tied to the nearest frame that saw it, and only there."""
    covered = nearest.copy()
    masks = []
    for mask in further:
        own = np.clip(mask - covered, 0.0, 1.0)
        covered += own
        masks.append(own)
    return masks


def _as_is(rgb: np.ndarray) -> np.ndarray:
    return rgb


def _ramp(value: float, start: float, full: float) -> float:
    """0 up to `start`, rising linearly to 1 at `full`."""
    return min(1.0, max(0.0, (value - start) / (full - start)))


def carry_sharpness(long_side: int) -> float:
    """How sharply carried paint is resampled on a render of `long_side` px, 0 (bilinear) .. 1 (Lanczos): see
    SHARP_FROM."""
    return _ramp(long_side, SHARP_FROM, SHARP_FULL)


def carry_hold(rgb: np.ndarray) -> np.ndarray:
    """(H, W): the share of the carried stylization in a later frame's temporal target for this source frame (see
    HOLD_SMALL): less on small renders everywhere, on large ones where the source is flat first, everywhere from
    FLAT_FULL px (HOLD_FLAT)."""
    long_side = max(rgb.shape[:2])
    small = (1.0 - HOLD_SMALL) * (1.0 - _ramp(long_side, HOLD_FROM, HOLD_FULL))
    everywhere = max(small, (1.0 - HOLD_FLAT) * _ramp(long_side, HOLD_FULL, FLAT_FULL))
    flat_share = min(1.0, long_side / FLAT_FULL)
    # Where there is no detail; where that share is no more than the decay everywhere (small renders, and from
    # FLAT_FULL px) it changes nothing, and the detail map (a Sobel and a blur) is skipped. The share times the
    # detail first, as before HOLD_FLAT was its own constant, so float32 rounds a 256-px render's hold as it did.
    if (1.0 - HOLD_FLAT) * flat_share > everywhere:
        flat = (1.0 - HOLD_FLAT) * (flat_share * (1.0 - source_detail(rgb)))
    else:
        flat = np.zeros(rgb.shape[:2], np.float32)
    return (1.0 - np.maximum(everywhere, flat)).astype(np.float32)


def warm_start(motion: Motion, prev_out: np.ndarray, config: Config,
               device: torch.device | None = None,
               earlier: Sequence[tuple[np.ndarray, np.ndarray]] = (),
               base: Callable[[np.ndarray], np.ndarray] = _as_is) -> tuple[np.ndarray, TemporalLoss | None]:
    """Start image for a later frame, and its temporal loss target.

    We carry over the previous frame's *stylization* (output minus its source frame), not the output itself,
    and add it to the current source frame. Starting from the previous output froze the video (a finished
    painting barely moves under the content loss); mixing output and frame half and half followed the video
    but let the style fade within a second at few iterations a frame, and ghosted the previous frame's
    content. Re-basing on the current frame keeps the content sharp and current, so nothing is resampled
    again and again; `prev_weight` < 1 lets stale texture decay. With flow, the carried stylization moves
    with the scene and is damped where the flow is unreliable (see UNRELIABLE_KEEP).

    The stylization is taken against `base` of each source (Stylizer.start_from_source: the source in the
    painting's palette) and added to the current frame's base, so where little is carried (unreliable flow,
    `prev_weight` < 1) a frame starts from its palette, as a fresh frame does, not from the photograph.

    The temporal target is re-based the same way: the previous frame's whole stylization moved here, on this
    frame's base. Holding the previous *output* instead held last frame's recolouring: each frame takes its own
    palette transform, and as the picture changed (a dark car entering) the held regions kept colours that no
    longer matched the rest, drifting away from the painting and from the source's edges frame after frame.
    Except in detailed regions of renders of about HOLD_FULL px, the target holds only part of the carried
    stylization (carry_hold), so old paint relaxes.

    Frames further back (`earlier`, (source, stylized) nearest first, paired with `motion.further`) fill what
    the previous frame did not see, start and temporal target alike: a region that was hidden and comes back
    takes up its old strokes instead of being painted anew.
    """
    previous = motion.previous if motion.previous is not None else motion.frame.rgb
    stylization = prev_out.astype(np.float32) - base(previous).astype(np.float32)
    current = base(motion.frame.rgb)
    if motion.backward is None or motion.mask is None:
        return add_stylization(current, stylization, config.prev_weight), None
    carried = warp(stylization, motion.backward)
    kept = UNRELIABLE_KEEP + (1.0 - UNRELIABLE_KEEP) * motion.mask[..., None]
    held = warp_keeping_detail(stylization, motion.backward, carry_sharpness(max(motion.frame.rgb.shape[:2])),
                               bilinear=carried)
    start, mask = carried * kept, motion.mask
    if motion.further:
        start, held, mask = _reach_further(motion, start, held, earlier, base)
    temporal = None
    if config.temporal_weight > 0:
        device = device or torch.device("cpu")
        hold = carry_hold(motion.frame.rgb)[..., None]
        target = np.clip(current.astype(np.float32) + hold * held, 0, 255).round().astype(np.uint8)
        weights = torch.from_numpy(mask).to(device)[None, None]  # broadcast over the colour channels
        temporal = TemporalLoss(to_tensor(target, device), weights)
    return add_stylization(current, start, config.prev_weight), temporal


def _reach_further(motion: Motion, start: np.ndarray, held: np.ndarray,
                   earlier: Sequence[tuple[np.ndarray, np.ndarray]],
                   base: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add the frames further back where only they are reliable, to the start's stylization and to the held one
    (the temporal target's). The terms of Ruder et al.'s long-term loss, sum_k m_k (x - w_k)^2 with disjoint
    masks m_k, equal one term (sum m_k)(x - w)^2 with w their m-weighted mean, up to a constant: so one masked
    target carries them all, at the cost of one."""
    assert motion.mask is not None
    masks = long_term_masks(motion.mask, [far.mask for far in motion.further])
    total = motion.mask.copy()
    weighted = held * motion.mask[..., None]
    for far, own in zip(motion.further, masks, strict=True):
        source, stylized = earlier[far.back - 2]  # earlier[0] is frame t-2
        theirs = warp(stylized.astype(np.float32) - base(source).astype(np.float32), far.backward)
        start = start * (1.0 - own[..., None]) + theirs * own[..., None]
        weighted += theirs * own[..., None]
        total += own
    mean = np.where(total[..., None] > 1e-6, weighted / np.maximum(total, 1e-6)[..., None], held)
    return start, mean, total


def frame_seed(seed: int, index: int) -> int:
    """A per-frame seed, so that a resumed render draws the same noise; kept within torch's 63-bit range."""
    return (seed * 1_000_003 + index) % 2**63


def random_start(shape: tuple[int, int], seed: int, device: torch.device) -> torch.Tensor:
    """Uniform noise image of (height, width) in 0..1, from its own generator (no process-wide seeding)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((1, 3, *shape), generator=generator).to(device)


def stylize_sequence(frames: Iterable[Frame], stylizer: Stylizer, previous: Previous | None = None, *,
                     find_cuts: bool = True, on_event: EventCallback = ignore_event,
                     stop: threading.Event | None = None) -> Generator[StylizedFrame, None, None]:
    """Stylize consecutive frames of one video, each warm-started from the one before it.

    `previous` continues a shot whose earlier frames were stylized before (a resumed render, a later segment);
    without it the first frame starts fresh. Motion (decoding too, when `frames` decodes lazily) runs on a
    thread a few frames ahead, so the device does not wait for the flow. Setting `stop` ends the sequence between
    two iterations by raising Cancelled. The arguments are checked at the call, each frame as it comes.

    This is the first pass only, whatever `Config.passes` says: a later pass walks the whole shot backward, which
    frames that come one by one do not allow; `render` and `passes.stylize_shot` (a shot held in memory) make them.
    """
    check_is_stylizer(stylizer)
    check_call_arguments(find_cuts=find_cuts, stop=stop, on_event=on_event)
    if not isinstance(frames, Iterable) or isinstance(frames, (str, bytes, np.ndarray)):
        raise SettingError("frames", f"must be an iterable of vidstyle.io.decode.Frame items (got "
                                     f"{type(frames).__name__})")
    if previous is not None and not isinstance(previous, Previous):
        raise SettingError("previous", f"must be a vidstyle.sequence.Previous or None (got {type(previous).__name__})")
    return _stylized(frames, stylizer, previous, find_cuts, on_event, stop)


def _stylized(frames: Iterable[Frame], stylizer: Stylizer, previous: Previous | None, find_cuts: bool,
              on_event: EventCallback, stop: threading.Event | None) -> Iterator[StylizedFrame]:
    config = stylizer.config
    # (source, stylized) of the shot's latest frames, nearest first, as far back as temporal_reach looks.
    history: list[tuple[np.ndarray, np.ndarray]] = []
    if previous is not None:
        history = [(previous.source, previous.stylized), *previous.earlier]
    motions = track_motion(_checked(frames), config, [source for source, _ in history], find_cuts)
    keep = frames_back(config)
    for motion in read_ahead(motions, depth=3):
        result = _stylize_motion(motion, history, stylizer, on_event, stop)
        history = [(motion.frame.rgb, result.rgb)] + ([] if result.fresh else history[:keep - 1])
        yield result


def _checked(frames: Iterable[Frame]) -> Iterator[Frame]:
    """The frames, each refused in the API's words if it is not a Frame (a bare array has no index) of an RGB uint8
    picture the network can paint (a float picture in 0..1 would be painted as a black one)."""
    for frame in frames:
        if not isinstance(frame, Frame):
            raise SettingError("frames", f"must be vidstyle.io.decode.Frame(index, rgb) items, each an RGB uint8 "
                                         f"array at the size to paint (got {type(frame).__name__})")
        rgb = frame.rgb
        if not is_rgb8(rgb):
            shown = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
            raise SettingError("frames", f"must each hold an RGB uint8 array, (height, width, 3) (frame {frame.index} "
                                         f"holds a {shown})")
        if min(rgb.shape[:2]) < MIN_SIDE:
            raise SettingError("frames", f"must each be at least {MIN_SIDE} pixels on each side for the network "
                                         f"(frame {frame.index} is {rgb.shape[1]}x{rgb.shape[0]})")
        yield frame


def _stylize_motion(motion: Motion, history: list[tuple[np.ndarray, np.ndarray]], stylizer: Stylizer,
                    on_event: EventCallback, stop: threading.Event | None) -> StylizedFrame:
    config, index, rgb = stylizer.config, motion.frame.index, motion.frame.rgb
    fresh = motion.fresh or not history
    iters = stylizer.fresh_iterations(rgb.shape, config.first_iters) if fresh else config.iters
    on_event(FrameStarted(index, iters, fresh))
    started = time.perf_counter()

    def on_step(i: int, _loss: torch.Tensor) -> None:
        if stop is not None and stop.is_set():
            raise Cancelled()
        on_event(IterationDone(index, i, iters))

    if fresh:
        result = stylizer.stylize_fresh(rgb, config.first_iters, on_step)
    else:
        init, temporal = _later_start(motion, history, stylizer)
        result = stylizer.stylize(rgb, init, iters, temporal, on_step)
    seconds = time.perf_counter() - started
    on_event(FrameDone(index, result.loss, seconds, fresh, result.iterations))
    return StylizedFrame(index, result.rgb, result.loss, fresh, result.iterations, seconds)


def _later_start(motion: Motion, history: list[tuple[np.ndarray, np.ndarray]],
                 stylizer: Stylizer) -> tuple[np.ndarray | torch.Tensor, TemporalLoss | None]:
    """Start image (and temporal target) of a frame that follows another in the same shot."""
    config, rgb = stylizer.config, motion.frame.rgb
    if config.init == "content":
        return stylizer.start_from_source(rgb), None
    if config.init == "random":
        return random_start(rgb.shape[:2], frame_seed(config.seed, motion.frame.index), stylizer.device), None
    return warm_start(motion, history[0][1], config, stylizer.device, history[1:], stylizer.start_from_source)
