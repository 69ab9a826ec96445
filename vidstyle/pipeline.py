"""render(): probe -> plan -> for each segment: decode range -> stylize_sequence -> checkpoint -> encode.

Everything a render needs is checked first (prepare_render) and nothing is written until all of it is known to
be right, so a start that fails leaves nothing behind (prepare_render only removes what a finished render of the
same output left, finish_published). Decoding and flow run ahead of the stylizer on a thread
(stylize_sequence), checkpointing and encoding behind it on another, so the device never waits on I/O and
memory stays constant for any video length.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import torch

from vidstyle import __version__
from vidstyle.assets import StylePaths, resolve_styles
from vidstyle.checkpoint import Manifest, WorkDir, default_workdir, file_sha256
from vidstyle.config import Config, check_call_arguments, check_style_count, config_or_default, path_argument
from vidstyle.errors import (
    RESTART,
    STOPS,
    BusyError,
    CheckpointMismatch,
    Interrupted,
    NotAWorkDir,
    OutputError,
    OutputExists,
    SettingError,
    SignalInterrupt,
    UsageError,
    VidstyleError,
    stop_signal,
)
from vidstyle.events import (
    Event,
    EventCallback,
    FrameDone,
    FrameSaved,
    FrameStarted,
    RenderFinished,
    RenderStarted,
    ignore_event,
)
from vidstyle.fades import darken, fade_note, frame_gains
from vidstyle.io.decode import FrameRanges, first_frame_offset
from vidstyle.io.encode import (
    AudioPlan,
    AudioWindow,
    VideoWriter,
    container_for,
    plan_audio,
    seeks_audio,
    written_timing,
)
from vidstyle.io.images import read_style_image
from vidstyle.io.paths import (
    FileLock,
    check_name_fits,
    check_output_path,
    check_partial_free,
    mark_partial,
    missing_folder,
    partial_path,
    publish,
    refuse_folder_name,
    unmark_partial,
)
from vidstyle.io.probe import VideoInfo, missing_input, probe_video, refuse_directory, trim_frames
from vidstyle.limits import check_fits, output_size, own_size_note, render_size, stretches
from vidstyle.model import STYLE_LAYERS
from vidstyle.passes import SourceWindow, later_pass_iterations, refine
from vidstyle.plan import Segment, plan_segments, scan_video
from vidstyle.precision import dtype_name, emulation_note, mixed_precision_note, resolve_precision
from vidstyle.sequence import Previous, frames_back, stylize_sequence
from vidstyle.stylize import PAINTING_BAND, Stylizer, check_is_stylizer, resolve_device
from vidstyle.threads import WriteBehind


@dataclass(frozen=True)
class RenderJob:
    """Everything a render needs, checked before anything is written."""

    input: Path
    styles: tuple[Path, ...]
    style_images: tuple[np.ndarray, ...]
    output: Path
    workdir: WorkDir
    info: VideoInfo
    size: tuple[int, int]  # (width, height) of the render
    config: Config
    device: torch.device
    audio: AudioPlan
    # (chunk_frames, overlap) of a render on several workers: its frames differ from the sequential render's
    # (each chunk starts fresh), so the manifest records them and a resume must match them.
    chunking: tuple[int, int] | None = None
    trim: tuple[int, int] | None = None  # frames [first, stop) of a render of part of the video
    # The part of the source's audio written with it (None: all), decided once with `audio`: the writer cuts it as
    # the start line said.
    audio_window: AudioWindow | None = None
    out_size: tuple[int, int] | None = None  # (width, height) written, where it differs from the render's
    overwrite: bool = False  # an output found in place (at the start, or when the render is done) is replaced
    past_end: float | None = None  # the end asked for, in seconds, where the video ends before it

    @property
    def span(self) -> tuple[int, int]:
        """The frames [first, stop) this render makes: the whole video unless trimmed."""
        return self.trim if self.trim is not None else (0, self.info.frame_count)

    @functools.cached_property  # asked twice a render (its start note, its writer), each a pass over every frame
    def written_timing(self) -> tuple[Fraction, tuple[int, ...] | None]:
        """The rate the render is written at, and each frame's repeats at it (None: one each, the source's rate)."""
        return written_timing(self.info, *self.span)


def style_label(style_paths: Sequence[Path]) -> str:
    """The styles as an output name says them: `starry_night`, or a blend's `starry_night+wave`."""
    return "+".join(Path(p).stem for p in style_paths)


def default_output(input_path: Path, style_paths: Sequence[Path], folder: Path | None = None) -> Path:
    """`<input stem>.<style stem>.mp4` in `folder` (beside the input where none is given); a blend names all its
    styles, so that it is never taken for a render of its first style alone."""
    return named_after(input_path, style_paths, ".mp4", folder)


def named_after(input_path: Path, style_paths: Sequence[Path], ending: str, folder: Path | None = None) -> Path:
    """`<input stem>.<style stem><ending>` in `folder` (beside the input where none is given), for an output the
    caller did not name; where that name is too long for the folder's file system, refused saying where it came
    from (the name it refused was none the caller gave)."""
    refuse_directory(input_path)
    named = (input_path.parent if folder is None else folder) / f"{input_path.stem}.{style_label(style_paths)}{ending}"
    try:
        check_name_fits(named)
    except UsageError as exc:
        raise UsageError(f"{exc}; it is made of the input's and the painting's names: name the output, or give the "
                         "input a shorter name") from None
    return named


def prepare_render(input_path: Path | str, style_paths: StylePaths, output: Path | str | None = None,
                   config: Config | None = None, *, workdir: Path | str | None = None,
                   overwrite: bool = False, start: float | None = None, end: float | None = None) -> RenderJob:
    """Check every part of a render request, in the order a person would fix them; writes nothing, but for what a
    finished render of this very output left (finish_published) where it refuses the output as existing."""
    config = config_or_default(config)
    input_path, styles = path_argument("input_path", input_path), resolve_styles(style_paths)
    check_style_count(config, len(styles))
    if workdir is not None:
        workdir = path_argument("workdir", workdir, "folder")
    if output is not None:
        refuse_folder_name(output, "video")
    output = path_argument("output", output) if output is not None else default_output(input_path, styles)
    if not input_path.exists():
        raise missing_input(input_path)
    if output.is_dir():  # before the suffix check, which would call a folder an output type ''
        raise UsageError(f"output {output} is a directory; name the video file")
    container_for(output)
    work = WorkDir(Path(workdir) if workdir is not None else default_workdir(output))
    try:
        check_output_path(output, input_path, overwrite, styles)
    except OutputExists:
        finish_published(output, work)
        raise
    style_images = tuple(read_style_image(p) for p in styles)
    info = probe_video(input_path)
    size = render_size(info.width, info.height, config.size)
    device = resolve_device(config.device)
    check_fits(size, config.size, resolve_precision(config.precision, device), device)
    _check_workdir_apart(work.path, output)
    _check_workdir(work)
    check_partial_free(output, leftover_known=work.holds_a_render())
    written = output_size(config.output_size, size, (info.width, info.height))
    trim = trim_frames(info, start, end)
    window = _audio_window(info, trim)
    # Past the end is the end (a start there is refused): said, as a render shorter than asked.
    past_end = float(end) if end is not None and end > info.duration + 0.5 / float(info.fps) else None
    return RenderJob(input_path, styles, style_images, output, work, info, size, config, device,
                     plan_audio(info, output, window), trim=trim, audio_window=window,
                     out_size=written if written != size else None, overwrite=overwrite, past_end=past_end)


def finish_published(output: Path, work: WorkDir) -> None:
    """A render killed after its output was in place, while it removed its checkpoints, left them (and perhaps its
    partial file, a second name of the output): they go now, as that render would have removed them. Only where
    the work directory names this very file as its finished output (WorkDir.published_as), and no render holds it."""
    if not work.published_as(output):
        return
    try:
        with work.lock():
            if work.published_as(output):  # again, under the lock: a render may have taken the directory over
                work.remove_finished()
        partial = partial_path(output)
        if partial.is_file():
            lock, second_name = FileLock(partial, str(output)).acquire(), False
            try:
                second_name = os.path.samefile(partial, output)
            finally:
                lock.release(unlink=second_name)
    except (VidstyleError, OSError):
        pass  # what is left stays, as before; the refusal of the existing output is what the caller reports


def _check_workdir_apart(workdir: Path, output: Path) -> None:
    """Named as the output (or its partial file), the work directory would take the output's place, and the render
    would run to its end and then fail to write the video. Holding the output (its folder, or one above it), it
    would find the output's partial file, made first, and take it for someone else's; and a finished render
    removes its work directory."""
    folder, target = workdir.resolve(), output.resolve()
    if folder in (target, partial_path(output).resolve()):
        raise UsageError(f"the work directory {workdir} is the output's own path; choose another work directory")
    if folder in target.parents:
        raise UsageError(f"the work directory {workdir} holds the output {output}; choose a work directory apart "
                         "from the output's folder")


def _check_workdir(work: WorkDir) -> None:
    """A work directory that is a file, or a folder of someone else's files, is refused before anything starts;
    a damaged manifest of ours (WorkDir.damaged_but_ours) is left for a restart to discard. Its folder must exist,
    as an output's must: folders made on the way to it would be left behind when the render removes its work
    directory."""
    if not work.path.parent.is_dir():
        # Exit 1, as a missing output folder: a folder to make, not an option to change.
        raise OutputError(f"the work directory's folder {missing_folder(work.path.parent)}")
    try:
        work.read_manifest()
    except NotAWorkDir:
        raise
    except CheckpointMismatch as exc:
        if not work.damaged_but_ours():
            raise NotAWorkDir(f"{work.path} is not recognisably a vidstyle work directory (its manifest.json does "
                              "not read as vidstyle's, or other files sit beside it); nothing in it was touched"
                              ) from exc


def render(input_path: Path | str, style_paths: StylePaths, output: Path | str | None = None,
           config: Config | None = None, *, workdir: Path | str | None = None, overwrite: bool = False,
           restart: bool = False, on_event: EventCallback = ignore_event, stop: threading.Event | None = None,
           stylizer: Stylizer | None = None, workers: int | None = None, ray_address: str | None = None,
           chunk_frames: int | None = None, overlap: int | None = None, start: float | None = None,
           end: float | None = None) -> Path:
    """Stylize a video; returns the output path. Re-running an interrupted render resumes it.

    `config` defaults to the balanced preset, as on the command line. `stop`, when set, ends the render between
    two iterations with Interrupted, leaving the finished frames for a resume. A prepared `stylizer` (network
    loaded, style targets cached) made with the same settings and style images is reused instead of a new one.
    `workers` (a local Ray started for the render) or `ray_address` ("auto" or a cluster's address) render chunks
    of `chunk_frames` frames on Ray workers, `overlap` frames blended at each chunk's start (vidstyle.distributed).
    `start` and `end` (seconds) render only the frames between them, with the audio cut to match.
    """
    check_call_arguments(overwrite=overwrite, restart=restart, stop=stop, on_event=on_event)
    if on_cluster(workers, ray_address, chunk_frames, overlap):
        check_cluster_config(config)
    job = prepare_render(input_path, style_paths, output, config, workdir=workdir, overwrite=overwrite,
                         start=start, end=end)
    return render_job(job, restart=restart, on_event=on_event, stop=stop, stylizer=stylizer, workers=workers,
                      ray_address=ray_address, chunk_frames=chunk_frames, overlap=overlap)


def render_job(job: RenderJob, *, restart: bool = False, on_event: EventCallback = ignore_event,
               stop: threading.Event | None = None, stylizer: Stylizer | None = None, workers: int | None = None,
               ray_address: str | None = None, chunk_frames: int | None = None, overlap: int | None = None) -> Path:
    """Carry out a render that prepare_render() has checked (render() is the two in one)."""
    if on_cluster(workers, ray_address, chunk_frames, overlap):
        from vidstyle.distributed import Cluster, render_distributed

        cluster = Cluster.of(workers, ray_address, chunk_frames, overlap, stylizer, job.device)
        check_cluster_job(job)
        return render_distributed(replace(job, chunking=cluster.chunking), cluster, restart, on_event, stop)
    if stylizer is not None:
        _check_stylizer(stylizer, job)
    return _run(job, restart, on_event, stop, stylizer)


def on_cluster(workers: int | None, ray_address: str | None, chunk_frames: int | None, overlap: int | None) -> bool:
    """Whether these options ask for a render on Ray workers."""
    return workers is not None or ray_address is not None or chunk_frames is not None or overlap is not None


def check_cluster_config(config: Config | None) -> None:
    """Settings a render on Ray workers cannot take, found before anything else is looked at."""
    device = config_or_default(config).device
    if device.startswith("cuda:"):
        # Ray hands each task GPUs of its own only when asked for some; every task would take this one GPU.
        raise SettingError("device", f"{device} names one GPU, and every Ray worker would use it: on Ray workers "
                                     "use cuda, and each gets a GPU of its own")


def check_cluster_job(job: RenderJob) -> None:
    if job.trim is not None:
        # The option that makes it a part: a start that lands on the first frame cuts nothing off.
        name = "start" if job.trim[0] > 0 else "end"
        raise SettingError(name, "(a part of the video) is not available on several workers yet; render the part "
                                 "on one machine")


def _check_stylizer(stylizer: Stylizer, job: RenderJob) -> None:
    check_is_stylizer(stylizer)
    mismatch = stylizer.mismatch(job.config, list(job.style_images), job.device)
    if mismatch is not None:
        raise SettingError("stylizer", f"was prepared for other frames than this render's: {mismatch}")


class RunProgress:
    """What a render has done so far: the frame in progress (for an interrupted render's message) and the
    iterations spent a frame (for the summary); shared by the sequential and the distributed driver."""

    def __init__(self, on_event: EventCallback, first: int, stop: int | None = None, passes: int = 1) -> None:
        self.on_event, self.current = on_event, first
        self.stop = stop  # the index after the render's last frame: at it, only the video is left to write
        # The pass of the frame in progress, where the render makes several (None: one pass, nothing to name).
        self.pass_number: int | None = 1 if passes > 1 else None
        # Set by a driver whose frame in progress is the video's next frame to write (on Ray workers), not the
        # next to make: every frame is made, and what is left is writing them.
        self.all_made = False
        self.iterations: dict[int, int] = {}  # by frame: all passes over it together
        # The frames the video darkens (fades.py), by their factor: written so, and told with their FrameSaved.
        self.gains: dict[int, float] = {}

    @property
    def writing(self) -> bool:
        """Every frame is made: what is left is writing the video."""
        return self.all_made or (self.stop is not None and self.current >= self.stop)

    def __call__(self, event: Event) -> None:
        if isinstance(event, FrameStarted):
            self.current = event.index
            if self.pass_number is not None:
                self.pass_number = event.pass_number
        elif isinstance(event, FrameDone):
            self.spent(event.index, event.iterations)
        elif isinstance(event, FrameSaved) and event.index in self.gains:
            event = replace(event, gain=self.gains[event.index])
        self.on_event(event)

    def spent(self, index: int, iterations: int) -> None:
        """Iterations spent on a frame: in the events here, or reported by a worker that made it."""
        self.iterations[index] = self.iterations.get(index, 0) + iterations

    def finished(self, output: Path, frames: int, seconds: float) -> RenderFinished:
        spent = list(self.iterations.values())
        summary = (sum(spent) / len(spent), min(spent), max(spent)) if spent else None
        return RenderFinished(output, frames, seconds, len(spent), summary)


def _run(job: RenderJob, restart: bool, on_event: EventCallback, stop: threading.Event | None,
         stylizer: Stylizer | None) -> Path:
    progress = RunProgress(on_event, 0, job.span[1], job.config.passes)
    refuse_other_render(job, restart)
    with output_slot(job.output, progress, job.overwrite) as partial:
        manifest = open_workdir(job, restart, stop, dtype_name(resolve_precision(job.config.precision, job.device)))
        with job.workdir.lock():
            check_still_ours(job.workdir, manifest)
            job.workdir.forget_published()
            done = job.workdir.done_frames()
            progress.current = first_missing(done, job.span[1], job.span[0])
            stylizer = stylizer or Stylizer(job.config, list(job.style_images), job.device)
            segments = [Segment(*s) for s in manifest.segments]
            # A frame of any pass was computed in the dtype of then.
            started_frames = done.union(*earlier_pass_frames(job.workdir, job.span, job.config.passes, done))
            mixed = mixed_precision_note(manifest.network_dtype, stylizer.dtype, len(started_frames))
            progress.gains = output_gains(job, manifest, stop)
            on_event(started_event(job, str(stylizer.device), segments, done, (mixed,) if mixed else (),
                                   progress.gains))
            started = time.perf_counter()
            count = _encode_in_order(job, segments, stylizer, partial, progress, stop)
            put_in_place(job, partial)
            # Under the lock: a render starting now must not reuse what goes.
            stopped = clean_up_after_publish(job.workdir.drop_cut_short_writes if job.config.keep_frames
                                             else job.workdir.remove)
    finished = progress.finished(job.output, count, time.perf_counter() - started)
    end_if_stopped(announce_finished(on_event, finished, stopped), job)
    return job.output


def announce_finished(on_event: EventCallback, finished: RenderFinished, stopped: int | None) -> int | None:
    """Send the render's last event, its output in place; the stop to pass on (end_if_stopped): `stopped`, or a
    Ctrl-C or SIGTERM that lands in the caller's handler of the event (a script's, where Python's own handler
    raises anywhere), which was told to resume a render that was complete."""
    try:
        on_event(finished)
    except (KeyboardInterrupt, SignalInterrupt) as exc:
        return stopped if stopped is not None else stop_signal(exc)
    return stopped


def put_in_place(job: RenderJob, partial: Path) -> None:
    """Publish the finished partial file as the output, unmarked (the video is the user's file now), the work
    directory first recording its identity where the checkpoints are to go after it (finish_published)."""
    unmark_partial(partial)
    if not job.config.keep_frames:
        job.workdir.mark_publishing(partial)
    publish(partial, job.output, replace=job.overwrite)


def clean_up_after_publish(clean_up: Callable[[], None]) -> int | None:
    """Remove a finished render's checkpoints, its output already in place; the signal number of a Ctrl-C or SIGTERM
    that landed meanwhile, else None. Such a stop does not cut the clean-up short: that left the checkpoints half
    removed and told the user to resume a render that was complete (whose same command then only refused the
    existing output). The clean-up is finished, and the stop is passed on once the render has ended (end_if_stopped)
    so that a batch still stops there."""
    try:
        clean_up()
    except (KeyboardInterrupt, SignalInterrupt) as exc:
        clean_up()
        return stop_signal(exc)
    return None


def end_if_stopped(signum: int | None, job: RenderJob) -> None:
    """Pass on a stop that came while a finished render removed its checkpoints."""
    if signum is not None:
        raise Interrupted(job.span[1], signum, resumable=False, written=str(job.output))


@contextmanager
def output_slot(output: Path, progress: RunProgress, overwrite: bool) -> Iterator[Path]:
    """The output's partial file, locked for the whole render; the body renames it into place when complete.

    Ctrl-C, SIGTERM and the stop event leave as Interrupted at `progress.current`; a partial file that was not
    renamed is removed (a re-run reuses the same name, so nothing accumulates). Without `overwrite` an output
    that appeared since the job was checked (a batch checks all its outputs at its start) is refused here.
    """
    partial = partial_path(output)
    output_lock = FileLock(partial, str(output)).acquire(fresh=True)
    mark_partial(partial)
    try:
        if not overwrite and os.path.lexists(output):
            raise OutputExists(f"output {output} exists")
        yield partial
    except STOPS as exc:
        raise Interrupted(progress.current, stop_signal(exc), writing=progress.writing,
                          pass_number=progress.pass_number) from None
    finally:
        output_lock.release(unlink=partial.exists())


def first_missing(done: set[int], frame_count: int, first: int = 0) -> int:
    return next((i for i in range(first, frame_count) if i not in done), frame_count)


def started_event(job: RenderJob, device: str, segments: list[Segment], done: set[int],
                  resumed_notes: tuple[str, ...] = (), gains: dict[int, float] | None = None) -> RenderStarted:
    first, stop = job.span
    inside = {i for i in done if first <= i < stop}
    earlier = earlier_pass_frames(job.workdir, job.span, job.config.passes, done)
    notes = [*_source_notes(job, gains), *resumed_notes, *_size_notes(job, device), *_part_notes(job),
             *_disk_notes(job, stop - first - len(inside), max((s.stop - s.start for s in segments), default=0))]
    if (any(earlier) or inside) and job.config.passes > 1 and len(inside) < stop - first:
        # A frame is final only after the last pass, which walks backward where it is even: "resuming at frame N"
        # would say little, so each pass's share made (a final frame went through every pass).
        made = [len(indices) + len(inside) for indices in earlier] + [len(inside)]
        notes.append(passes_made_note(made, stop - first))
    first_pass = earlier[0] if earlier else set()
    fresh_left = sum(s.fresh and s.start not in done and s.start not in first_pass for s in segments)
    return RenderStarted(stop - first, first_missing(done, stop, first) - first, len(inside), job.size,
                         job.info.fps, device, job.workdir.path, sum(s.fresh for s in segments),
                         job.audio.description, tuple(notes), fresh_left,
                         (job.config.first_iters, job.config.iters), job.config.passes,
                         later_pass_iterations(job.config.iters), first, tuple(len(indices) for indices in earlier))


def _source_notes(job: RenderJob, gains: dict[int, float] | None) -> list[str]:
    """What the source holds that the output changes or leaves out."""
    info = job.info
    notes = [f"audio: {job.audio.description}"] if info.has_audio else []
    if gains:
        notes.append(fade_note(len(gains)))
    if info.subtitle_streams:
        count = info.subtitle_streams
        notes.append(f"the source's {'subtitle stream is' if count == 1 else f'{count} subtitle streams are'} not "
                     f"written: the output holds the video{' and its audio' if info.has_audio else ''}")
    if info.other_video_streams:
        count = info.other_video_streams
        notes.append(f"the source has {count + 1} video streams: the first is rendered, the "
                     f"{'other is' if count == 1 else f'{count} others are'} not written")
    if info.empty_audio:
        count = info.empty_audio
        notes.append(f"the source declares {'an audio stream' if count == 1 else f'{count} audio streams'} with no "
                     "audio in it: not written")
    if info.interlaced:
        notes.append("the source is interlaced: its frames are deinterlaced (bwdif), one for one")
    if info.alpha:
        # Said of an alpha channel, not of transparent pixels: only a GIF's, APNG's or WebP's first pictures are
        # looked at (probe._any_transparent), and an editor's export often carries one that is opaque throughout.
        notes.append("the source has an alpha channel, which the output cannot keep: where it makes pixels "
                     "transparent, the colours stored under them are painted as if they were opaque")
    if info.colour.hdr:
        kind = "HLG" if info.colour.transfer == "arib-std-b67" else "PQ"
        notes.append(f"the source is HDR ({kind}): its frames are tone-mapped to SDR (BT.709), and the output is SDR")
    return notes


def _size_notes(job: RenderJob, device: str) -> list[str]:
    """A precision the device only emulates, a source smaller than the size asked, a written size that differs."""
    notes = []
    emulated = emulation_note(job.config.precision, device.split(":")[0])
    if emulated is not None:
        notes.append(emulated)
    small = own_size_note("the source", "rendered", (job.info.width, job.info.height), job.size, job.config.size)
    if small is not None:
        notes.append(small)
    width, height = job.out_size or job.size
    asked, written = job.config.output_size, f"{width}x{height}"
    # A size asked for (WxH, or a long side) that H.264's even sides changed.
    changed = asked != written if "x" in asked else asked.isdigit() and int(asked) != max(width, height)
    evened = f" ({asked} asked: H.264 needs even sides)" if changed else ""
    if job.out_size is not None:
        # A WxH of another shape than the video's is taken as asked, but the picture is then squeezed or stretched
        # (a long side, or `source`, keeps the shape).
        stretched = "x" in asked and stretches((width, height), (job.info.width, job.info.height))
        notes.append(f"written at {written}{evened}, scaled from the {job.size[0]}x{job.size[1]} render"
                     + (", stretched: its shape is not the video's" if stretched else ""))
    elif evened:
        notes.append(f"written at {written}{evened}, the render's own size")
    return notes


# Bytes a pixel of a frame's checkpoint (a PNG): a painted frame is brush strokes all over, which PNG compresses
# little (docs/performance.md, "Disk").
CHECKPOINT_BYTES_A_PIXEL = 2.3


def _disk_notes(job: RenderJob, frames_left: int, longest_segment: int) -> list[str]:
    """A work directory whose disk cannot hold the checkpoints still to be written: said at the start rather than
    found hours in. With several passes, a segment's frames of the passes before the last are kept too until its
    last pass is done."""
    pixels = job.size[0] * job.size[1] * CHECKPOINT_BYTES_A_PIXEL
    need = pixels * (frames_left + (job.config.passes - 1) * min(longest_segment, frames_left))
    try:
        free = shutil.disk_usage(job.workdir.path).free
    except OSError:
        return []
    if free >= need:
        return []
    return [f"the checkpoints still to write take about {_bytes_words(need)}, and the work directory's disk has "
            f"{_bytes_words(free)} free: the render stops when it is full (free some space, or choose another "
            "workdir, then run it again: it resumes)"]


def _bytes_words(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count / 1e3:.0f} kB"


def _part_notes(job: RenderJob) -> list[str]:
    """How the frames are timed when written, and which part of the video is rendered."""
    notes = []
    rate, repeats = job.written_timing
    if repeats is not None:
        shown = f"{sum(r > 1 for r in repeats)} held longer"
        dropped = sum(r == 0 for r in repeats)
        notes.append(f"the source has a variable frame rate; written at {float(rate):.3f} fps with each frame at its "
                     f"own time ({shown}{f', {dropped} dropped where the source is faster' if dropped else ''})")
    first, stop = job.span
    if job.past_end is not None:
        notes.append(f"the end asked for, {job.past_end:g} s, is past the end of the video, which lasts "
                     f"{job.info.duration:.3f} s: rendered to its end")
    if job.trim is not None:
        part = f"frame {first}" if stop - first == 1 else f"frames {first} to {stop - 1}"
        notes.append(f"{part} of {job.info.frame_count}, from {job.info.frame_times[first]:.3f} s"
                     if job.info.frame_times else f"{part} of {job.info.frame_count}")
    return notes


def passes_made_note(made: list[int], total: int) -> str:
    """What earlier runs made of a multi-pass render: `made`, the frames of each pass (pass 1 first, the last pass's
    being the final frames), of `total`."""
    shares = ", ".join(f"pass {number} {count}/{total}" for number, count in enumerate(made, start=1) if count)
    return f"resuming {len(made)} passes over {total} frames; frames already made: {shares}"


def earlier_pass_frames(work: WorkDir, span: tuple[int, int], passes: int, done: set[int]) -> tuple[set[int], ...]:
    """For each pass before the last (Config.passes; pass 1 first), the frames within `span` that earlier runs made
    in it and whose final frame is not made yet: the work a resume does not do again. A frame made in a pass was
    made in every pass before it, whose file may be gone (Ray workers delete what no task reads again)."""
    first, stop = span
    highest: dict[int, int] = {}
    for number in range(1, passes):
        highest.update((i, number) for i in work.done_pass_frames(number) if first <= i < stop and i not in done)
    return tuple({i for i, last in highest.items() if last >= number} for number in range(1, passes))


def _manifest(job: RenderJob, segments: list[Segment], network_dtype: str = "",
              brightness: list[float] | None = None) -> Manifest:
    settings = job.config.frames_dict()
    # Not a setting, but what the style loss reads: frames made with other layers (relu5_1 before) are another render.
    settings.update(style_layers=",".join(STYLE_LAYERS))
    # Likewise the painting's edge its style is taken without: frames made with it have a line along their edges.
    # The value stands for stylize.painting_band's whole rule (its cap at an eighth of a small painting's side, each
    # layer's positions rounded down): a change to the rule must record another value.
    settings.update(painting_band=PAINTING_BAND)
    if job.chunking is not None:
        settings.update(chunk_frames=job.chunking[0], overlap=job.chunking[1])
    if job.trim is not None:
        settings.update(frames=job.trim)  # a trimmed render starts fresh at its first frame: other frames
    return Manifest(version=__version__, input=job.info.digest, styles=tuple(file_sha256(p) for p in job.styles),
                    size=job.size, frame_count=job.info.frame_count, settings=settings,
                    segments=tuple((s.start, s.stop, s.fresh) for s in segments), network_dtype=network_dtype,
                    brightness=tuple(brightness or ()))


def open_workdir(job: RenderJob, restart: bool, stop: threading.Event | None, network_dtype: str = "") -> Manifest:
    """Reuse the work directory of the same render, or plan the render and create one, recording `network_dtype`
    (what the network computes in, where one device makes every frame)."""
    work = job.workdir
    existing = None
    if restart and work.path.is_dir():
        with work.lock():  # never discard the frames of a render that is running now
            work.remove()  # what is left, if anything, is the user's: the new manifest goes beside it
    else:
        existing = work.read_manifest()
    if existing is not None:
        wanted = _manifest(job, [])
        differences = wanted.differences(existing)
        if differences and not _discard_if_empty(work):
            raise _other_render(work, wanted, existing, differences)
        if existing.segments and not differences:
            return existing
    first, end = job.span
    scan = scan_video(job.info, job.size, job.config.cut_threshold, stop, job.trim)
    chunk_frames = job.chunking[0] if job.chunking is not None else None
    segments = plan_segments(end, scan.cuts, chunk_frames, first)
    return work.create(_manifest(job, segments, network_dtype, scan.brightness))


def refuse_other_render(job: RenderJob, restart: bool) -> None:
    """Before anything is made (the partial output, a Ray cluster's start): the work directory's frames are another
    render's (other settings) that `restart` would not discard. Reads only; open_workdir decides again under the
    work directory's lock, as another render may change it meanwhile."""
    existing = None if restart else job.workdir.read_manifest()
    if existing is None:
        return
    wanted = _manifest(job, [])
    differences = wanted.differences(existing)
    if differences and job.workdir.holds_frames():
        raise _other_render(job.workdir, wanted, existing, differences)


def _other_render(work: WorkDir, wanted: Manifest, existing: Manifest, differences: list[str]) -> CheckpointMismatch:
    return CheckpointMismatch(_mismatch(work, wanted, existing, differences), wanted.changed_settings(existing),
                              wanted.older_settings(existing), wanted.earlier_values(existing))


def check_still_ours(work: WorkDir, manifest: Manifest) -> None:
    """Under the work directory's lock, its manifest is still the one this render opened: another render starting
    at the same moment with other settings could have replaced one that held no frame yet (_discard_if_empty)."""
    if work.read_manifest() != manifest:
        raise BusyError(f"another render started in work directory {work.path} at the same moment, with other "
                        "settings; run one at a time")


def _mismatch(work: WorkDir, wanted: Manifest, existing: Manifest, differences: list[str]) -> str:
    """Why a work directory's frames are not this render's. Where only the chunking differs, how to resume them:
    a render on Ray workers is resumed on workers, one made without them without (each chunk starts fresh, so the
    frames differ), which restarting would throw away."""
    chunking = {"chunk_frames", "overlap"}
    before, now = existing.settings, wanted.settings
    changed = set(wanted.changed_settings(existing))
    if len(differences) == 1 and changed and changed <= chunking:
        if "chunk_frames" in before:  # resumed without workers, or on workers chunked otherwise
            return (f"work directory {work.path} holds a render on Ray workers, in chunks of {before['chunk_frames']} "
                    f"frames overlapping by {before['overlap']}: resume it on workers, chunked the same, or {RESTART}")
        if "chunk_frames" in now:  # and not in before: made without workers
            return (f"work directory {work.path} holds a render made without Ray workers: resume it without them "
                    f"(on workers each chunk starts fresh, so the frames would differ), or {RESTART}")
    return (f"work directory {work.path} belongs to another render (not the same: {'; '.join(differences)}); "
            f"{RESTART} to discard its frames, or choose another work directory")


def _discard_if_empty(work: WorkDir) -> bool:
    """Remove the work directory of another render that holds no frame (it stopped before its first: a missing
    model, too little memory, a setting changed at once); True where it did. There is nothing in it to protect,
    and refusing it would make the changed command fail for nothing."""
    with work.lock():  # not under a render that is starting now
        if work.holds_frames():
            return False
        work.remove()
        return True


@dataclass(frozen=True)
class _Run:
    """Consecutive frames of one segment that are all done, or all still to make."""

    start: int
    stop: int
    done: bool
    continues: bool  # its first frame follows a finished frame of the same shot
    # Frames of the shot right before it, up to what the temporal loss looks back at. All of them are finished when
    # it starts: done by an earlier run, or made by a run before it in this one (a frame missing within reach of
    # another one missing is then made from the same frames as in an unbroken render).
    history: int = 0


# A frame as the render's loop gives it out: its index, its pixels, and whether this run made it (else loaded).
_Made = tuple[int, np.ndarray, bool]


def _runs(segments: list[Segment], done: set[int], reach: int = 1) -> Iterator[_Run]:
    for segment in segments:
        start = segment.start
        while start < segment.stop:
            finished = start in done
            stop = start + 1
            while stop < segment.stop and (stop in done) == finished:
                stop += 1
            history = min(reach, start - segment.start)
            yield _Run(start, stop, finished, start > segment.start or not segment.fresh, history)
            start = stop


def _frames_in_order(job: RenderJob, segments: list[Segment], stylizer: Stylizer, progress: RunProgress,
                     stop: threading.Event | None) -> Iterator[_Made]:
    """(index, pixels, new) for every frame in order: loaded where an earlier run finished it, else stylized."""
    with closing(source_ranges(job)) as sources:
        if job.config.passes > 1:
            yield from _frames_after_passes(job, segments, stylizer, sources, progress, stop)
            return
        keep = frames_back(job.config)
        recent: dict[int, np.ndarray] = {}  # the latest frames given out, as a run after them may look back at

        def load(index: int, size: tuple[int, int]) -> np.ndarray:
            # One made a moment ago may still be on its way to its checkpoint, on the encoder's thread.
            return recent[index] if index in recent else job.workdir.load_frame(index, size)

        for run in _runs(segments, job.workdir.done_frames(), keep):
            if run.done:
                items: Generator[_Made, None, None] = (
                    (index, job.workdir.load_frame(index, job.size), False) for index in range(run.start, run.stop))
            else:
                items = _stylize_run(job, run, stylizer, sources, progress, stop, load)
            with closing(items):
                for item in items:
                    recent[item[0]] = item[1]
                    recent.pop(item[0] - keep, None)
                    yield item


def source_ranges(job: RenderJob) -> FrameRanges:
    """The source frames of a render's runs, one shot after another, from one decode where the source cannot seek;
    a run that continues a shot begins with up to frames_back of the frames before it."""
    return FrameRanges(job.info, job.size, job.span[1], keep=max(frames_back(job.config), 1))


def _stylize_run(job: RenderJob, run: _Run, stylizer: Stylizer, sources: FrameRanges, progress: RunProgress,
                 stop: threading.Event | None,
                 load: Callable[[int, tuple[int, int]], np.ndarray]) -> Generator[_Made, None, None]:
    """Stylize a run of frames, continuing the shot from the frames before it that `load` gives."""
    back = max(run.history, 1) if run.continues else 0
    frames = sources.read(run.start - back, run.stop)
    results = None
    try:
        previous = None
        if back:
            # The shot's frames before the run, nearest first: their sources decoded, their paintings loaded.
            pairs = [(next(frames).rgb.copy(), load(index, job.size))
                     for index in range(run.start - back, run.start)][::-1]
            previous = Previous(*pairs[0], earlier=tuple(pairs[1:]))
        results = stylize_sequence(frames, stylizer, previous, find_cuts=False, on_event=progress, stop=stop)
        for result in results:
            yield result.index, result.rgb, True
    finally:
        if results is not None:
            results.close()  # joins the decoding thread before its generator is closed here
        frames.close()


class PassCheckpoints:
    """Each pass's frames as checkpoints in a work directory: the last pass's are the render's frames, the others
    kept aside; a saved frame of the last pass is announced with FrameSaved."""

    def __init__(self, work: WorkDir, size: tuple[int, int], last: int, on_event: EventCallback) -> None:
        self.work, self.size, self.last, self.on_event = work, size, last, on_event

    def has(self, number: int, index: int) -> bool:
        return (self.work.frame_path(index) if number == self.last else self.work.pass_path(number, index)).is_file()

    def load(self, number: int, index: int) -> np.ndarray | None:
        if number != self.last:
            return self.work.load_pass_frame(number, index, self.size)
        return self.work.load_frame(index, self.size) if self.has(number, index) else None

    def save(self, number: int, index: int, rgb: np.ndarray) -> None:
        if number == self.last:
            self.on_event(FrameSaved(index, self.work.save_frame(index, rgb)))
        else:
            self.work.save_pass_frame(number, index, rgb)


def _frames_after_passes(job: RenderJob, segments: list[Segment], stylizer: Stylizer, sources: FrameRanges,
                         progress: RunProgress, stop: threading.Event | None) -> Iterator[_Made]:
    """With several passes a frame is final only after the last pass over its shot: each segment's passes run
    to the end (checkpointed frame by frame) before its frames go to the encoder."""
    store = PassCheckpoints(job.workdir, job.size, job.config.passes, progress)
    for segment in segments:
        frames = range(segment.start, segment.stop)
        if not all(store.has(store.last, index) for index in frames):
            _first_pass(job, segment, stylizer, sources, store, progress, stop)
            for number in range(2, store.last + 1):
                window = SourceWindow.of_video(job.info, job.size, segment.start, segment.stop,
                                               forward=number % 2 == 1)
                try:
                    refine(number, segment.start, segment.stop, window, store, stylizer, progress, stop)
                finally:
                    window.close()
        for number in range(1, store.last):  # also after a run that stopped between the last pass and this
            job.workdir.remove_pass_frames(number, frames)
        for index in frames:
            yield index, job.workdir.load_frame(index, job.size), False


def _first_pass(job: RenderJob, segment: Segment, stylizer: Stylizer, sources: FrameRanges, store: PassCheckpoints,
                progress: RunProgress, stop: threading.Event | None) -> None:
    """The ordinary forward pass over a segment, kept as pass 1; what an earlier run made of it is kept."""
    made = {index for index in range(segment.start, segment.stop) if store.has(1, index)}

    def load(index: int, _size: tuple[int, int]) -> np.ndarray:
        return cast(np.ndarray, store.load(1, index))

    for run in _runs([segment], made, frames_back(job.config)):
        if not run.done:
            for index, rgb, _new in _stylize_run(job, run, stylizer, sources, progress, stop, load):
                store.save(1, index, rgb)


def open_writer(job: RenderJob, partial: Path) -> VideoWriter:
    """The encoder of a render's video: its output size, the source's rate and audio (cut to a trimmed render);
    a variable-rate source's frames each shown at their own time."""
    rate, repeats = job.written_timing
    return VideoWriter(partial, job.out_size or job.size, rate, job.info, job.config.crf, job.audio_window, repeats)


def for_output(job: RenderJob, rgb: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """A stylized frame as written: darkened by `gain` where its source darkens (fades.py), at the output's size
    (Lanczos, the usual resampler for enlarging a render). The checkpoints keep the painted frame at the render
    size."""
    rgb = darken(rgb, gain)
    if job.out_size is None:
        return rgb
    return cv2.resize(rgb, job.out_size, interpolation=cv2.INTER_LANCZOS4)


def output_gains(job: RenderJob, manifest: Manifest, stop: threading.Event | None) -> dict[int, float]:
    """The factor of each frame the output darkens (fades.py), none where `follow_fades` is off. A manifest
    written before brightness was recorded gets a new plan pass, so a resumed render darkens as a new one does."""
    if not job.config.follow_fades:
        return {}
    brightness = manifest.brightness or scan_video(job.info, job.size, job.config.cut_threshold, stop,
                                                   job.trim).brightness
    return frame_gains(brightness, job.span[0], [start for start, _, fresh in manifest.segments if fresh])


def _audio_window(info: VideoInfo, trim: tuple[int, int] | None) -> AudioWindow | None:
    """The part of the source's audio that goes with the render's first frame on: from the file's start, where the
    source's first frame may come later than its audio; None for all of it."""
    if not info.has_audio:
        return None
    offset = first_frame_offset(info) or 0.0  # unread: placed as before, from the file's start
    if trim is None or not info.frame_times:
        return AudioWindow(offset, None, seeks_audio(info, offset)) if offset > 0 else None
    first, stop = trim
    times = info.frame_times
    end = times[stop] if stop < len(times) else times[-1] + 1 / float(info.fps)
    start = offset + times[first]
    return AudioWindow(start, end - times[first], seeks_audio(info, start), after_first=first > 0)


def _encode_in_order(job: RenderJob, segments: list[Segment], stylizer: Stylizer, partial: Path,
                     progress: RunProgress, stop: threading.Event | None) -> int:
    """Checkpoint new frames and encode all of them, in order, on a thread behind the stylizer; the frames in
    `progress.gains` are written darkened by their factor."""
    first = job.span[0]
    with open_writer(job, partial) as writer:

        def save(item: tuple[int, np.ndarray, bool]) -> None:
            index, rgb, new = item
            if new:
                progress(FrameSaved(index, job.workdir.save_frame(index, rgb)))

        def save_and_encode(item: tuple[int, np.ndarray, bool]) -> None:
            index, rgb, _new = item
            if index != first + writer.frames_written:  # the index travels with the frame; the encoder counts none
                raise RuntimeError(f"frame {index} reached the encoder at position {writer.frames_written}")
            save(item)
            writer.write(for_output(job, rgb, progress.gains.get(index, 1.0)))

        # Frames queued behind an encoder that failed are still checkpointed: the re-run encodes them, not repaints.
        sink: WriteBehind[tuple[int, np.ndarray, bool]] = WriteBehind(save_and_encode, depth=4, salvage=save)
        try:
            for item in _frames_in_order(job, segments, stylizer, progress, stop):
                sink.submit(item)
        except BaseException:
            sink.salvage_rest()  # the video will not be finished: what is queued is saved, not encoded
            raise
        finally:
            sink.finish()  # even when interrupted: frames already finished reach their checkpoints
        progress.current = job.span[1]  # every frame saved: closing the writer finishes the video
        return writer.frames_written
