"""Try before committing: a few frames stylized at the chosen settings, and what the whole render would cost.

A preview stylizes a handful of frames spread over the video (or at given times), each as a fresh frame, at one
or more style strengths, and lays them out on a contact sheet: the source frames on top, one row per strength
below. Its estimate of the whole render's time on this device is measured, not modelled from a benchmark table:
the render's own plan pass (the same scene-cut test, so the same count of fresh frames), the render's own frame
loop on fresh frames and on warm-started later frames spread over the clip, the network's start-up, all timed here.
"""

from __future__ import annotations

import math
import numbers
import os
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from vidstyle.assets import StylePaths, resolve_styles
from vidstyle.config import Config, check_call_arguments, check_style_count, config_or_default, path_argument
from vidstyle.errors import Cancelled, Interrupted, OutputExists, SettingError, UsageError
from vidstyle.events import EventCallback, ignore_event
from vidstyle.fades import darken, frame_gains
from vidstyle.io.decode import Frame, read_frames
from vidstyle.io.images import encode_image, read_style_image, write_atomic
from vidstyle.io.paths import check_output_path
from vidstyle.io.probe import (
    VideoInfo,
    check_seconds,
    frame_times,
    missing_input,
    probe_video,
    shown_at,
)
from vidstyle.limits import check_fits, render_size
from vidstyle.pipeline import named_after
from vidstyle.plan import Scan, scan_video
from vidstyle.precision import resolve_precision
from vidstyle.sequence import StylizedFrame, stylize_sequence
from vidstyle.stylize import Stylizer, resolve_device

DEFAULT_COUNT = 4  # frames of a preview when no times are given
# Later frames timed, at least: a few after every preview frame, so that they sample the clip's motion over its
# whole length (where later frames stop early (tol), how many iterations one needs depends on how much the
# picture moves there: docs/performance.md, "Render time estimate"), and never fewer than this, since one alone is
# at the mercy of a moment's noise. From three preview frames on that is one after each, which adds at most a
# third to the fresh frames' iterations at the presets (`iters` against `first_iters`: 40 against 120 at most).
LATER_SAMPLES = 3
SHEET_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LABEL_HEIGHT = 18  # pixels of the band above each row of the sheet that names what the row shows
_LABEL_SCALE = 0.4  # Hershey simplex at this scale is about 9 pixels tall: fits the band with a margin


@dataclass(frozen=True)
class Estimate:
    """The whole render's time on this device, from times measured at its size and settings."""

    device: str
    size: tuple[int, int]  # (width, height) of the render
    fresh_frames: int  # the first frame and the first after each scene cut: `first_iters` each
    later_frames: int  # the rest, warm-started from the frame before: `iters` each, or fewer where they converge
    fresh_seconds: float  # one fresh frame
    later_seconds: float  # a later frame on average (flow and temporal loss included, as configured)
    later_iterations: float  # what the later frames timed over the clip spent, on average
    plan_seconds: float  # the scene-cut pass over the whole video, before the first frame
    setup_seconds: float  # probe, network load and style targets: once a render

    @property
    def total_seconds(self) -> float:
        return (self.setup_seconds + self.plan_seconds + self.fresh_frames * self.fresh_seconds
                + self.later_frames * self.later_seconds)


@dataclass(frozen=True)
class Preview:
    """What a preview made: the sheet, the frames on it and the estimate."""

    sheet: Path
    frames: tuple[int, ...]  # the columns' frame indices, in time order
    times: tuple[float, ...]  # the columns' frame times in seconds
    strengths: tuple[float, ...]  # one stylized row each, top to bottom
    style_weights: tuple[float, ...]  # what each strength means: the settings' style_weight x strength
    estimate: Estimate


@dataclass(frozen=True)
class PreviewJob:
    """A preview request, checked before anything is written."""

    input: Path
    style_images: tuple[np.ndarray, ...]
    output: Path
    overwrite: bool
    info: VideoInfo
    size: tuple[int, int]  # (width, height)
    config: Config
    device: torch.device
    frames: tuple[int, ...]
    strengths: tuple[float, ...]
    probe_seconds: float  # a render probes the video too: part of its start-up


def default_preview_output(input_path: Path, style_paths: Sequence[Path]) -> Path:
    """`<input stem>.<style stem>.preview.png` beside the input (a blend names all its styles)."""
    return named_after(input_path, style_paths, ".preview.png")


def preview(input_path: Path | str, style_paths: StylePaths, output: Path | str | None = None,
            config: Config | None = None, *, at: Sequence[float] | None = None, count: int | None = None,
            strengths: Sequence[float] = (1.0,), overwrite: bool = False, on_event: EventCallback = ignore_event,
            stop: threading.Event | None = None) -> Preview:
    """Stylize a few frames of a video, write them on a contact sheet and estimate the whole render's time.

    The frames are those shown at the times `at` (seconds), or else `count` frames (4 by default) at the centres
    of equal parts of the video. Each strength s is a row stylized with `style_weight` x s. `config` defaults to
    the balanced preset, as for a render. Every check comes before the first file is written; the sheet is
    written whole or not at all. Setting `stop` ends the preview between two iterations with Interrupted.
    """
    check_call_arguments(stop=stop, on_event=on_event)  # overwrite: prepare_preview's
    job = prepare_preview(input_path, style_paths, output, config, at=at, count=count, strengths=strengths,
                          overwrite=overwrite)
    try:
        return _run(job, on_event, stop)
    except Cancelled:
        raise Interrupted(job.frames[0], signal.SIGINT, resumable=False) from None


def prepare_preview(input_path: Path | str, style_paths: StylePaths, output: Path | str | None = None,
                    config: Config | None = None, *, at: Sequence[float] | None = None, count: int | None = None,
                    strengths: Sequence[float] = (1.0,), overwrite: bool = False) -> PreviewJob:
    """Check every part of a preview request, as prepare_render does for a render; writes nothing."""
    check_call_arguments(overwrite=overwrite)
    config = config_or_default(config)
    strengths = check_strengths(strengths)
    check_frame_choice(at, count)
    input_path, styles = path_argument("input_path", input_path), resolve_styles(style_paths)
    check_style_count(config, len(styles))
    for strength in strengths:
        try:
            replace(config, style_weight=config.style_weight * strength)
        except SettingError as exc:
            raise SettingError("strengths", f"{strength:g} makes a style weight that {exc.problem}") from None
    output = path_argument("output", output) if output is not None else default_preview_output(input_path, styles)
    if not input_path.exists():
        raise missing_input(input_path)
    if output.is_dir():
        raise UsageError(f"{output} is a folder; name the contact sheet's file, e.g. {output / 'sheet.png'}")
    if output.suffix.lower() not in SHEET_SUFFIXES:
        raise UsageError(f"the contact sheet must be an image ({', '.join(SHEET_SUFFIXES)}), got {output.name}")
    check_output_path(output, input_path, overwrite, styles)
    style_images = tuple(read_style_image(p) for p in styles)
    started = time.perf_counter()
    info = probe_video(input_path)
    probe_seconds = time.perf_counter() - started
    size = render_size(info.width, info.height, config.size)
    device = resolve_device(config.device)
    check_fits(size, config.size, resolve_precision(config.precision, device), device)
    # The default count is ours, not the caller's: a clip shorter than it shows all of its frames.
    count = int(count) if count is not None else min(DEFAULT_COUNT, info.frame_count)
    frames = frames_at(info, at) if at is not None else frames_at(info, centre_times(info, count))
    return PreviewJob(input_path, style_images, output, overwrite, info, size, config, device, frames,
                      strengths, probe_seconds)


def check_strengths(strengths: Sequence[float]) -> tuple[float, ...]:
    """Strengths multiply the style weight: at least one, each a finite number above 0."""
    if isinstance(strengths, np.ndarray):  # NumPy's numbers, as settings and times take them
        strengths = strengths.tolist()
    if isinstance(strengths, (str, bytes)) or not isinstance(strengths, Sequence):
        raise SettingError("strengths", f"must be a list of numbers, e.g. [0.5, 1, 2] (got {strengths!r:.40})")
    values = tuple(strengths)
    if not values:
        raise SettingError("strengths", "names no strength; 1 is the settings' own style weight")
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                or value <= 0:
            raise SettingError("strengths", f"must be numbers above 0 that multiply the style weight (got {value!r})")
    # A strength named twice would paint the same row twice: each is painted once, in the order first given.
    return tuple(dict.fromkeys(float(v) for v in values))


def check_frame_choice(at: Sequence[float] | None, count: int | None) -> None:
    """Either times or a count of frames, and a sensible one."""
    if at is not None and count is not None:
        raise SettingError("count", "and at both choose the frames; give one of them")
    if at is not None and (isinstance(at, (str, bytes)) or not isinstance(at, Sequence)):
        raise SettingError("at", f"must be a list of times in seconds, e.g. [1.5] (got {at!r:.40})")
    if at is not None and len(at) == 0:
        raise SettingError("at", "names no time")
    if count is not None and (isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1):
        raise SettingError("count", f"must be a whole number of at least 1 (got {count!r})")


def centre_times(info: VideoInfo, count: int) -> tuple[float, ...]:
    """The centres of `count` equal parts of the video, in seconds."""
    if count > info.frame_count:
        raise SettingError("count", f"is {count}, more than the video's {info.frame_count} frames")
    return tuple((part + 0.5) * info.duration / count for part in range(count))


def frames_at(info: VideoInfo, seconds: Iterable[float]) -> tuple[int, ...]:
    """The distinct frames a player shows at these times (the last one starting at or before each), in order."""
    times = frame_times(info)
    found = set()
    for moment in seconds:
        found.add(shown_at(info, times, check_seconds("at", moment), "at"))
    return tuple(sorted(found))


def _run(job: PreviewJob, on_event: EventCallback, stop: threading.Event | None) -> Preview:
    started = time.perf_counter()
    scan = scan_video(job.info, job.size, job.config.cut_threshold, stop)
    cuts = scan.cuts
    plan_seconds = time.perf_counter() - started
    sources = _decode(job, {i for frame in job.frames for i in (frame, *_followers(job, frame))})
    stylizers, start_seconds = _stylizers(job)
    setup_seconds = job.probe_seconds + start_seconds
    rows, fresh_seconds, later = _stylize_rows(job, stylizers, sources, on_event, stop)
    rows = _as_written(job, rows, scan)
    fresh = 1 + len(cuts)
    later_iterations = float(np.mean([f.iterations for f in later])) if later else 0.0
    estimate = Estimate(str(job.device), job.size, fresh, job.info.frame_count - fresh, fresh_seconds,
                        _seconds_an_iteration(later) * later_iterations, later_iterations, plan_seconds,
                        setup_seconds)
    times = _times_of(job.info, job.frames)
    weights = tuple(s.config.style_weight for s in stylizers)
    sheet = contact_sheet([[sources[i] for i in job.frames], *rows], _labels(job, times, weights))
    _write_sheet(job, sheet)
    return Preview(job.output, job.frames, times, job.strengths, weights, estimate)


def _followers(job: PreviewJob, frame: int) -> tuple[int, ...]:
    """The frames stylized after a preview frame as later frames, to time them: those after it, or, where it is the
    video's last, those before it (backwards: the cost is the same); none in a video of one frame, which has no
    later frames. LATER_SAMPLES in all, shared among the preview frames, and at least one after each."""
    count = job.info.frame_count
    each = max(1, math.ceil(LATER_SAMPLES / len(job.frames)))
    after = tuple(range(frame + 1, min(frame + 1 + each, count)))
    return after or tuple(range(frame - 1, max(-1, frame - 1 - each), -1))


def _seconds_an_iteration(later: Sequence[StylizedFrame]) -> float:
    """The median of the timed later frames' seconds an iteration: the machine's speed, which a moment's noise may
    change for one frame. Multiplied by their mean iterations, it gives a later frame's seconds: the frames differ in
    iterations (with tol) by how much the picture moves, and the render pays their sum."""
    return float(np.median([f.seconds / f.iterations for f in later])) if later else 0.0


def _decode(job: PreviewJob, wanted: set[int]) -> dict[int, np.ndarray]:
    """The wanted frames at the render's size, from one sequential decode, as the render cuts its ranges."""
    found = {}
    with closing(read_frames(job.info, job.size, min(wanted), max(wanted) + 1)) as frames:
        for frame in frames:
            if frame.index in wanted:
                found[frame.index] = frame.rgb.copy()
    return found


def _stylizers(job: PreviewJob) -> tuple[list[Stylizer], float]:
    """One stylizer per strength, all on one loaded network, with their style targets built now (not inside a timed
    frame); and the seconds the first one took, network load included, which a render pays once at its start."""
    stylizers: list[Stylizer] = []
    first_seconds = 0.0
    for strength in job.strengths:
        started = time.perf_counter()
        config = replace(job.config, style_weight=job.config.style_weight * strength)
        vgg = stylizers[0].vgg if stylizers else None
        stylizers.append(Stylizer(config, list(job.style_images), job.device, vgg=vgg))
        stylizers[-1].style_loss(job.size)
        first_seconds = first_seconds or time.perf_counter() - started
    return stylizers, first_seconds


def _stylize_rows(job: PreviewJob, stylizers: list[Stylizer], sources: dict[int, np.ndarray],
                  on_event: EventCallback, stop: threading.Event | None
                  ) -> tuple[list[list[np.ndarray]], float, list[StylizedFrame]]:
    """Each row's stylized frames, the median seconds of a fresh frame, and the timed later frames.

    Every preview frame is stylized fresh, as the first of its shot; in the first row each one is followed by a
    few frames as later frames (warm start, flow on the read-ahead thread, temporal loss: the render's own loop in
    its steady state), which are timed. The fresh frames are timed in that row only, since there, as in a render,
    the flow of the frames after them runs beside them.
    """
    rows, fresh, later = [], [], []
    for row, stylizer in enumerate(stylizers):
        results = []
        for index in job.frames:
            after = _followers(job, index) if row == 0 else ()
            made = _stylize([Frame(i, sources[i]) for i in (index, *after)], stylizer, on_event, stop)
            results.append(made[0].rgb)
            if row == 0:
                fresh.append(made[0].seconds)
                later += made[1:]
        rows.append(results)
    return rows, float(np.median(fresh)), later


def _as_written(job: PreviewJob, rows: list[list[np.ndarray]], scan: Scan) -> list[list[np.ndarray]]:
    """The stylized tiles as a render would write them: darkened where the source fades (fades.py)."""
    if not job.config.follow_fades:
        return rows
    gains = frame_gains(scan.brightness, 0, scan.cuts)
    return [[darken(tile, gains.get(i, 1.0)) for i, tile in zip(job.frames, row, strict=True)] for row in rows]


def _stylize(frames: list[Frame], stylizer: Stylizer, on_event: EventCallback,
             stop: threading.Event | None) -> list[StylizedFrame]:
    # The caller has chosen what is fresh: only the first frame of the list, whatever a cut test would say.
    with closing(stylize_sequence(frames, stylizer, find_cuts=False, on_event=on_event, stop=stop)) as results:
        return list(results)


def _times_of(info: VideoInfo, frames: tuple[int, ...]) -> tuple[float, ...]:
    if info.frame_times:
        return tuple(info.frame_times[i] for i in frames)
    return tuple(i / float(info.fps) for i in frames)


def _labels(job: PreviewJob, times: tuple[float, ...], weights: tuple[float, ...]) -> list[list[str]]:
    """The text over the tiles: each source frame's time, and each stylized row's strength and style weight (once,
    across the row)."""
    first = f"source {times[0]:.2f} s"
    labels = [[first if _fits_tile(first, job.size[0]) else f"{times[0]:.2f} s", *(f"{t:.2f} s" for t in times[1:])]]
    row_width = job.size[0] * len(times)
    for strength, weight in zip(job.strengths, weights, strict=True):
        # The longest wording the row has room for: at small sizes a cut-off label would hide the strength.
        wordings = (f"strength {strength:g}: style weight {weight:g}", f"strength {strength:g}", f"{strength:g}")
        text = next((w for w in wordings if _fits_tile(w, row_width)), wordings[-1])
        labels.append([text] + [""] * (len(times) - 1))
    return labels


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[Sequence[str]]) -> np.ndarray:
    """Tiles of one size in a grid, each row under a band with a label a tile; RGB uint8.

    A label runs on over the tiles after it whose labels are empty. The sheet is len(rows) x (LABEL_HEIGHT + tile
    height) pixels high and len(rows[0]) x tile width wide.
    """
    height, width = rows[0][0].shape[:2]
    sheet = np.zeros((len(rows) * (LABEL_HEIGHT + height), len(rows[0]) * width, 3), np.uint8)
    for r, (tiles, texts) in enumerate(zip(rows, labels, strict=True)):
        top = r * (LABEL_HEIGHT + height)
        for c, tile in enumerate(tiles):
            sheet[top + LABEL_HEIGHT:top + LABEL_HEIGHT + height, c * width:(c + 1) * width] = tile
        sheet[top:top + LABEL_HEIGHT] = _band(texts, width)
    return sheet


def _fits_tile(text: str, width: int) -> bool:
    (text_width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, _LABEL_SCALE, 1)
    return text_width + 6 <= width


def _band(texts: Sequence[str], width: int) -> np.ndarray:
    """A row's band: each label from its tile's left edge up to the next label, where it is cut off."""
    band = np.full((LABEL_HEIGHT, width * len(texts), 3), 32, np.uint8)  # dark, so that light text reads on it
    starts = [c for c, text in enumerate(texts) if text]
    for start, end in zip(starts, [*starts[1:], len(texts)], strict=True):
        # Drawn on an array of its own: cv2 would draw on a copy of a strided view of the band.
        piece = np.ascontiguousarray(band[:, start * width:end * width])
        cv2.putText(piece, texts[start], (3, LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, _LABEL_SCALE,
                    (240, 240, 240), 1, cv2.LINE_AA)
        band[:, start * width:end * width] = piece
    return band


def _write_sheet(job: PreviewJob, sheet: np.ndarray) -> None:
    """Written whole, via a temporary name; a file that appeared while the frames were stylized is kept unless
    overwriting was asked for."""
    if os.path.lexists(job.output) and not job.overwrite:
        raise OutputExists(f"output {job.output} exists")
    write_atomic(job.output, encode_image(sheet, job.output.suffix.lower()), replace=job.overwrite)
