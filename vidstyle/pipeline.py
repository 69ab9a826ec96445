"""render(): decode -> (flow) -> stylize -> checkpoint -> encode, with threads only at the edges.

The decode and flow stages run ahead of the stylizer on a bounded queue, checkpointing and encoding run
behind it on another, so the device never waits on I/O and memory stays constant for any video length.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidstyle.checkpoint import WorkDir, clean_stale_temporaries, default_workdir, make_manifest
from vidstyle.config import Config
from vidstyle.errors import EncodeError, InputError, Interrupted, SignalInterrupt, UsageError
from vidstyle.events import (
    EventCallback,
    FrameDone,
    FrameStarted,
    IterationDone,
    RenderFinished,
    RenderStarted,
    ignore_event,
)
from vidstyle.flow import estimate_flow, is_scene_cut, occlusion_mask, to_gray, warp
from vidstyle.io.decode import Frame, read_frames
from vidstyle.io.encode import VideoWriter, container_for, temporary_path
from vidstyle.io.images import read_image
from vidstyle.io.paths import check_output_path
from vidstyle.io.probe import VideoInfo, probe_video, size_to_fit
from vidstyle.losses import TemporalLoss
from vidstyle.stylize import Stylizer, add_stylization, to_tensor
from vidstyle.threads import WriteBehind, read_ahead


@dataclass(frozen=True)
class Motion:
    """A source frame and how it relates to the one before it."""

    frame: Frame
    previous: np.ndarray | None  # the previous source frame (RGB), None for the first
    fresh: bool  # first frame or hard cut: start from the content, no warm start, no temporal loss
    backward: np.ndarray | None  # flow frame t -> t-1, when flow is on
    mask: np.ndarray | None  # reliability of `backward` in 0..1


def track_motion(frames: Iterator[Frame], config: Config, skip_before: int) -> Iterator[Motion]:
    """Scene cuts and flow between consecutive source frames (frames before `skip_before` are only passed on)."""
    prev: Frame | None = None
    for frame in frames:
        backward = mask = None
        fresh = prev is None or is_scene_cut(prev.rgb, frame.rgb, config.cut_threshold)
        if prev is not None and not fresh and config.flow != "none" and frame.index >= skip_before:
            cur_gray, prev_gray = to_gray(frame.rgb), to_gray(prev.rgb)
            backward = estimate_flow(cur_gray, prev_gray, config.flow)
            mask = occlusion_mask(backward, estimate_flow(prev_gray, cur_gray, config.flow))
        yield Motion(frame, prev.rgb if prev is not None else None, fresh, backward, mask)
        prev = frame


# Share of the warped stylization kept where the flow is unreliable (disocclusions, motion boundaries).
# Measured on the bikes clip (scripts/bench_temporal.py, 30 frames, 96 px) and with bench.py [4]: dropping it
# there (0.0) cost the most iterations (27 % of a first frame's to reach its loss) and flickered more (warping
# error 0.41x the plain warm start); keeping all of it (1.0) converged fastest (15 %) but ghosted old edges
# (edge correlation 0.78); 0.7 gives 17 %, 0.30x and 0.84 (0.0 had 0.85).
UNRELIABLE_KEEP = 0.7


def warm_start(motion: Motion, prev_out: np.ndarray, config: Config,
               device: torch.device | None = None) -> tuple[np.ndarray, TemporalLoss | None]:
    """Start image for a later frame, and its temporal loss target.

    We carry over the previous frame's *stylization* (output minus its source frame), not the output itself,
    and add it to the current source frame. Starting from the previous output froze the video (a finished
    painting barely moves under the content loss); mixing output and frame half and half followed the video
    but let the style fade within a second at few iterations a frame, and ghosted the previous frame's
    content. Re-basing on the current frame keeps the content sharp and current, so nothing is resampled
    again and again; `prev_weight` < 1 lets stale texture decay. With flow, the carried stylization moves
    with the scene and is damped where the flow is unreliable (see UNRELIABLE_KEEP).
    """
    previous = motion.previous if motion.previous is not None else motion.frame.rgb
    stylization = prev_out.astype(np.float32) - previous.astype(np.float32)
    temporal = None
    if motion.backward is not None and motion.mask is not None:
        kept = UNRELIABLE_KEEP + (1.0 - UNRELIABLE_KEEP) * motion.mask[..., None]
        stylization = warp(stylization, motion.backward) * kept
        if config.temporal_weight > 0:
            carried = np.clip(warp(prev_out.astype(np.float32), motion.backward), 0, 255).round().astype(np.uint8)
            device = device or torch.device("cpu")
            mask = torch.from_numpy(motion.mask).to(device)[None, None]  # broadcast over the colour channels
            temporal = TemporalLoss(to_tensor(carried, device), mask)
    return add_stylization(motion.frame.rgb, stylization, config.prev_weight), temporal


def _check_paths(input_path: Path, output: Path, overwrite: bool) -> None:
    if not input_path.exists():
        raise InputError(f"input not found: {input_path}")
    container_for(output)
    check_output_path(output, input_path, overwrite)


def default_output(input_path: Path, style_paths: list[Path]) -> Path:
    """`<input stem>.<style stem>.mp4` beside the input."""
    return input_path.with_name(f"{input_path.stem}.{style_paths[0].stem}.mp4")


class _Job:
    """State of one render while it runs (kept off the module so `render` stays a short recipe)."""

    def __init__(self, info: VideoInfo, config: Config, stylizer: Stylizer, workdir: WorkDir, done: int,
                 on_event: EventCallback) -> None:
        self.info, self.config, self.stylizer, self.workdir = info, config, stylizer, workdir
        self.done, self.on_event = done, on_event
        self.current = done

    def frames_out(self, size: tuple[int, int]) -> Iterator[np.ndarray]:
        """Finished frames in order: loaded from checkpoints where done before, else stylized now."""
        prev_out: np.ndarray | None = None
        source = read_ahead(track_motion(read_frames(self.info, size), self.config, self.done - 1), depth=3)
        for motion in source:
            index = motion.frame.index
            self.current = index
            if index < self.done:
                prev_out = self.workdir.load_frame(index)
                yield prev_out
                continue
            prev_out = self._stylize(motion, prev_out)
            yield prev_out

    def _stylize(self, motion: Motion, prev_out: np.ndarray | None) -> np.ndarray:
        cfg, index, rgb = self.config, motion.frame.index, motion.frame.rgb
        fresh = motion.fresh or prev_out is None
        iters = self.stylizer.fresh_iterations(rgb.shape, cfg.first_iters) if fresh else cfg.iters
        self.on_event(FrameStarted(index, iters, fresh))
        started = time.perf_counter()

        def on_step(i: int, _loss: torch.Tensor) -> None:
            self.on_event(IterationDone(index, i, iters))

        if fresh:
            result = self.stylizer.stylize_fresh(rgb, cfg.first_iters, on_step)
        else:
            init, temporal = self._start(motion, prev_out)  # type: ignore[arg-type]
            result = self.stylizer.stylize(rgb, init, iters, temporal, on_step)
        self.on_event(FrameDone(index, result.loss, time.perf_counter() - started, fresh))
        return result.rgb

    def _start(self, motion: Motion, prev_out: np.ndarray) -> tuple[np.ndarray | torch.Tensor, TemporalLoss | None]:
        """Start image (and temporal target) of a frame that follows another in the same shot."""
        cfg, rgb = self.config, motion.frame.rgb
        if cfg.init == "content":
            return rgb, None
        if cfg.init == "random":
            return self.stylizer.random_init(rgb.shape[:2], cfg.seed * 1_000_003 + motion.frame.index), None
        return warm_start(motion, prev_out, cfg, self.stylizer.device)


def render(input_path: Path | str, style_paths: list[Path | str], output: Path | str | None = None,
           config: Config | None = None, *, workdir: Path | str | None = None, overwrite: bool = False,
           restart: bool = False, on_event: EventCallback = ignore_event) -> Path:
    """Stylize a video; returns the output path. Re-running an interrupted render resumes it."""
    config = config or Config()
    input_path, styles = Path(input_path), [Path(p) for p in style_paths]
    if not styles:
        raise UsageError("at least one --style image is needed")
    output = Path(output) if output is not None else default_output(input_path, styles)
    _check_paths(input_path, output, overwrite)
    style_images = [read_image(p, "style image") for p in styles]
    info = probe_video(input_path)
    size = size_to_fit(info.width, info.height, config.size)
    work = WorkDir(Path(workdir) if workdir else default_workdir(output))
    manifest = make_manifest(input_path, styles, size, info.frame_count, config.frames_dict())
    done = work.open(manifest, restart)
    stylizer = Stylizer(config, style_images)
    torch.manual_seed(config.seed)
    on_event(RenderStarted(info.frame_count, done, size, info.fps, str(stylizer.device), work.path))
    clean_stale_temporaries(output.parent, output.stem)
    started = time.perf_counter()
    job = _Job(info, config, stylizer, work, done, on_event)
    count = _encode_all(job, size, output)
    if not config.keep_frames:
        work.remove()
    on_event(RenderFinished(output, count, time.perf_counter() - started))
    return output


def _encode_all(job: _Job, size: tuple[int, int], output: Path) -> int:
    """Write every frame through a temporary file, renamed to `output` only when complete."""
    partial = temporary_path(output)
    count = 0

    def save_and_encode(item: tuple[int, np.ndarray]) -> None:
        index, rgb = item
        if index >= job.done:
            job.workdir.save_frame(index, rgb)
        writer.write(rgb)

    try:
        with VideoWriter(partial, size, job.info.fps, job.info, job.config.crf) as writer:
            sink: WriteBehind[tuple[int, np.ndarray]] = WriteBehind(save_and_encode, depth=4)
            try:
                for count, rgb in enumerate(job.frames_out(size), start=1):
                    sink.submit((count - 1, rgb))
            finally:
                sink.finish()  # even when interrupted: frames already finished reach their checkpoints
        if count == 0:
            raise EncodeError("no frames were decoded")
        os.replace(partial, output)
    except KeyboardInterrupt:
        raise Interrupted(max(job.current, job.done), signal.SIGINT) from None
    except SignalInterrupt as exc:
        raise Interrupted(max(job.current, job.done), exc.signum) from None
    finally:
        partial.unlink(missing_ok=True)
    return count
