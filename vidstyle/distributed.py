"""One render on many workers: the plan's chunks run as Ray tasks, and this process blends their seams and encodes
the frames in order while later chunks still run.

Ray is the engine: it places the tasks (one GPU each where there are GPUs), retries a chunk whose worker died, and
cancels them. This module only says what a chunk is and how its frames join the others. It imports ray when a
render asks for workers, never before: the plain install has no Ray.

A chunk that begins a shot starts fresh, as in the sequential render. A chunk inside a shot cannot wait for the one
before it (the shot would be sequential again), so it starts fresh `overlap` frames early: its lead-in. Those
source frames are then painted twice, at the end of the earlier chunk and at the start of the later one; each final
frame there is a cross-fade between the two, so the texture turns from one chain's to the other's over `overlap`
frames instead of jumping at one (`blend_frames`; the seams are measured in scripts/bench_distributed.py).

With more passes (Config.passes) the chunks' blended first pass is pass 1, and each later pass is one task per
chunk over the chunk's own frames, started once the frames it reads from the pass before are made (`Task.needs`):
across the chunk's edges it reads its neighbours as the pass before left them, so the frames never depend on which
task ran first, and each pass carries the strokes one frame further across a seam.

Files: the final frames are the work directory's frames/ (WorkDir), exactly as in a sequential render, so what is
done is still the set of frame files; earlier passes' frames are in passes/<n>/, also as in a sequential render.
The two painted versions of an overlap frame wait in chunks/tail (the earlier chunk's) and chunks/lead (the later
chunk's) until this process blends them; chunks/running holds one marker per running task, named after its chunk's
first frame, host and process id (the "busy" count; a test kills that process).
A task makes only the frames of its chain that are not on disk, so a retry and a resumed render redo nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Container, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from vidstyle.checkpoint import (
    CHUNK_MARKER,
    CHUNKS,
    MANIFEST,
    WorkDir,
    frame_indices,
    own_folder,
    remove_chunk_files,
)
from vidstyle.config import Config
from vidstyle.errors import (
    RESTART,
    Cancelled,
    CheckpointError,
    SettingError,
    SignalInterrupt,
    VidstyleError,
    stop_signal,
)
from vidstyle.events import Event, EventCallback, FrameDone, FrameSaved, RenderStarted, WorkersBusy, ignore_event
from vidstyle.io.decode import read_frames, seekable
from vidstyle.io.encode import VideoWriter
from vidstyle.io.images import read_image, read_style_image, write_image
from vidstyle.io.probe import VideoInfo
from vidstyle.passes import SourceWindow, refine
from vidstyle.pipeline import (
    PassCheckpoints,
    RenderJob,
    RunProgress,
    check_still_ours,
    clean_up_after_publish,
    end_if_stopped,
    first_missing,
    for_output,
    open_workdir,
    open_writer,
    output_gains,
    output_slot,
    put_in_place,
    refuse_other_render,
    started_event,
)
from vidstyle.plan import Segment
from vidstyle.sequence import Previous, frames_back, stylize_sequence
from vidstyle.stylize import Stylizer, resolve_device

# A chunk costs one fresh frame (first_iters, 3 to 6x a later frame's budget in the presets) and `overlap` lead-in
# frames more than the frames it delivers: at 120 and 12, about 12 % in a long shot and 8 % of a simulated 40-shot film
# (a fresh frame at 5x), which still splits into enough chunks to keep 64 GPUs mostly busy
# (scripts/simulate_cluster.py). A cross-fade over 4 frames left seam pairs with 2-4.5x the warping error inside
# chunks, over 12 at most 1.13x (scripts/bench_distributed.py).
DEFAULT_CHUNK_FRAMES = 120
DEFAULT_OVERLAP = 12
# Retries of a chunk whose worker died (killed, out of memory, node lost); a Python error in a chunk is not retried.
MAX_RETRIES = 3
_POLL = 0.2  # seconds between looks at the work directory while tasks run, at the least
# A look lists the frame folders, which grows with the video (and is slow on a network file system): the wait after
# one is _POLL_SHARE times as long as the look took, up to _POLL_MAX, so a slow listing is not repeated back to back.
# A finished task or a stop still ends the wait within _POLL.
_POLL_SHARE, _POLL_MAX = 20, 5.0
_RETURN_WAIT = 30.0  # seconds a task whose frames are all on disk may take to return before it is cancelled
_RAY_OBJECT_STORE = 128 * 2**20  # tasks exchange paths and numbers only; Ray's default takes 30 % of the memory
# Seconds to wait for a cluster's address to answer at all: ray.init itself retries an address that refuses or
# does not answer for minutes, printing its own lines.
_CONNECT_TIMEOUT = 10.0
# What a client says first on HTTP/2, which a Ray head speaks (gRPC): the connection preface and an empty SETTINGS
# frame. A head answers with a SETTINGS frame of its own (type 4, the fourth byte of a frame's 9-byte header);
# another service (the dashboard's web server, a port given by mistake) answers otherwise, or not at all, and
# ray.init would retry it for minutes, deaf to Ctrl-C while each try waits in Ray's compiled code.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS = 4


class RayMissing(VidstyleError):
    """A render on workers was asked for, and Ray is not installed: a failure of the installation (exit 1, as the
    web service's missing extra is), not of the command."""


class WorkerFailed(VidstyleError):
    """A chunk failed on every try, or a worker raised an error that is not vidstyle's."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissing("a render on several workers needs Ray, which is not installed; "
                         "install vidstyle[ray] (pip install 'vidstyle[ray]')") from None
    return ray


@dataclass(frozen=True)
class Cluster:
    """Where and how a render runs on Ray: `workers` chunks at a time (None: one per GPU, or one per node), on a
    local Ray started for the render (`address` None) or an existing cluster ("auto" or its address)."""

    workers: int | None
    address: str | None
    chunk_frames: int
    overlap: int

    @property
    def chunking(self) -> tuple[int, int]:
        return self.chunk_frames, self.overlap

    @staticmethod
    def of(workers: int | None, address: str | None, chunk_frames: int | None, overlap: int | None,
           stylizer: Stylizer | None = None, device: torch.device | None = None) -> Cluster:
        """Check a request for a render on workers (on `device`, where known); raises before anything is started
        or written."""
        if workers is None and address is None:
            name = "chunk_frames" if chunk_frames is not None else "overlap"
            raise SettingError(name, "applies only to a render on Ray workers")
        if stylizer is not None:
            raise SettingError("stylizer", "cannot be shared with Ray workers, which load their own network")
        if workers is not None:
            _check_count("workers", workers, 1)
            cores = os.cpu_count() or 1
            if address is None and device is not None and device.type == "cpu" and workers > cores:
                # Each would get a core's share of none: Ray would run them all at once on the same cores, each
                # with its own copy of the network.
                raise SettingError("workers", f"is more than the {cores} CPU cores here, and a local Ray on CPUs "
                                              f"runs one worker a core at most (got {workers})")
        chunk = DEFAULT_CHUNK_FRAMES if chunk_frames is None else _check_count("chunk_frames", chunk_frames, 1)
        if overlap is None:
            lap = min(DEFAULT_OVERLAP, chunk // 2)
        elif _check_count("overlap", overlap, 0) >= chunk:
            raise SettingError("overlap", f"must be smaller than chunk_frames ({chunk}), got {overlap}")
        else:
            lap = overlap
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise SettingError("ray_address", f"must be 'auto' or a Ray cluster's address (got {address!r})")
        import_ray()
        return Cluster(workers, address, chunk, lap)


def _check_count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SettingError(name, f"must be a whole number of at least {low} (got {value!r})")
    return value


@dataclass(frozen=True)
class Chunk:
    """One task: the frames [first, stop) stylized as one chain that starts fresh at `first`.

    Frames before `start` are the lead-in, blended with the previous chunk's last frames; this chunk's own last
    `tail` frames are its side of the next chunk's lead-in. The rest are final as they come.
    """

    first: int
    start: int
    stop: int
    tail: int

    def role(self, index: int) -> str:
        if index < self.start:
            return "lead"
        return "tail" if index >= self.stop - self.tail else "final"


@dataclass(frozen=True)
class Task:
    """One Ray task: pass `number` over a chunk of the shot [shot[0], shot[1]). The first pass makes the chunk's
    whole chain (lead-in, own frames, tail); a later pass refines the chunk's own frames [start, stop)."""

    number: int
    chunk: Chunk
    shot: tuple[int, int]

    @property
    def frames(self) -> range:
        return range(self.chunk.first if self.number == 1 else self.chunk.start, self.chunk.stop)

    @property
    def needs(self) -> range:
        """Frames of the pass before that a later pass reads: its own and one neighbour on each side in the shot."""
        return range(max(self.shot[0], self.chunk.start - 1), min(self.shot[1], self.chunk.stop + 1))

    def describe(self) -> str:
        frames = f"frames {self.frames[0]}-{self.frames[-1]}"
        return frames if self.number == 1 else f"pass {self.number} over {frames}"


def plan_tasks(segments: list[Segment], overlap: int, passes: int) -> list[Task]:
    """Every task of a render, chunk by chunk and pass by pass within a chunk: the order they are started in, each
    as soon as the frames it reads are made, so that a chunk's frames reach the encoder early."""
    chunks = plan_chunks(segments, overlap)
    return [Task(number, chunk, _shot(segments, i)) for i, chunk in enumerate(chunks)
            for number in range(1, passes + 1)]


def _shot(segments: list[Segment], i: int) -> tuple[int, int]:
    """[first, stop) of the shot that segment `i` belongs to."""
    first = max(k for k in range(i + 1) if k == 0 or segments[k].fresh)
    last = min((k for k in range(i + 1, len(segments)) if segments[k].fresh), default=len(segments)) - 1
    return segments[first].start, segments[last].stop


def plan_chunks(segments: list[Segment], overlap: int) -> list[Chunk]:
    """A chunk per segment; one that continues a shot begins `overlap` frames early (never before its shot)."""
    chunks = []
    for i, segment in enumerate(segments):
        lead = 0 if segment.fresh else min(overlap, len(segments[i - 1]))
        follows = i + 1 < len(segments) and not segments[i + 1].fresh
        tail = min(overlap, len(segment)) if follows else 0
        chunks.append(Chunk(segment.start - lead, segment.start, segment.stop, tail))
    return chunks


def blend_weight(position: int, length: int) -> float:
    """Share of the later chunk in the `position`-th of `length` overlap frames: a linear ramp that leaves out
    0 and 1, which are the frames on either side of the overlap."""
    return (position + 1) / (length + 1)


# Scales (Gaussian sigmas, pixels) that split a picture into detail bands for the cross-fade: from single-pixel
# grain up to brush strokes a tenth of a small frame wide.
_BANDS = (1.0, 2.0, 4.0, 8.0)


def blend_frames(earlier: np.ndarray, later: np.ndarray, weight: float) -> np.ndarray:
    """Cross-fade of two paintings of one source frame, `weight` of the later one.

    Both carry the same content, so their average keeps it; their brush strokes differ, and an average of two
    unrelated textures has less contrast than either (at one half, about 0.7 of it), which reads as a softer,
    washed-out picture in the middle of the fade. So each detail band of the mix (the differences between
    successive blurs, from grain to brush strokes) is scaled back to the contrast the two frames have in that
    band on average; the coarsest blur, the colours and shapes, is the plain mix.
    """
    a, b = earlier.astype(np.float32), later.astype(np.float32)
    mixed = (1.0 - weight) * a + weight * b
    bands_a, bands_b, bands_mix = _bands(a), _bands(b), _bands(mixed)
    out = bands_mix[-1]  # the coarsest blur
    for band_a, band_b, band in zip(bands_a[:-1], bands_b[:-1], bands_mix[:-1], strict=True):
        wanted = (1.0 - weight) * float(band_a.std()) + weight * float(band_b.std())
        have = float(band.std())
        out = out + band * (wanted / have if have > 1e-6 else 1.0)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def _bands(image: np.ndarray) -> list[np.ndarray]:
    """The image as detail bands, finest first, and last its coarsest blur: they add up to the image."""
    blurs = [image] + [cv2.GaussianBlur(image, (0, 0), sigma) for sigma in _BANDS]
    return [fine - coarse for fine, coarse in zip(blurs, blurs[1:], strict=False)] + [blurs[-1]]


class ChunkFiles:
    """The work directory as the chunks see it: final frames of the first pass in frames/ (in passes/1/ where more
    passes follow), overlap frames and markers in chunks/."""

    def __init__(self, work: WorkDir, passes: int = 1) -> None:
        self.work, self.passes = work, passes
        self.root = work.path / CHUNKS

    def path(self, role: str, index: int) -> Path:
        if role == "final":
            return self.work.frame_path(index) if self.passes == 1 else self.work.pass_path(1, index)
        return self.root / role / f"{index:07d}.png"

    def present(self, role: str) -> set[int]:
        if role == "final":
            return self.work.done_frames() if self.passes == 1 else self.work.done_pass_frames(1)
        return frame_indices(self.root / role)

    def save(self, role: str, index: int, rgb: np.ndarray) -> None:
        if role == "final" and self.passes == 1:
            self.work.save_frame(index, rgb)
            return
        path = self.path(role, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, rgb, CheckpointError)

    def load(self, role: str, index: int, size: tuple[int, int]) -> np.ndarray:
        if role == "final" and self.passes == 1:
            return self.work.load_frame(index, size)
        try:
            rgb = read_image(self.path(role, index), "checkpoint")
        except VidstyleError as exc:
            raise CheckpointError(f"{exc}; delete that file to make the frame again, or {RESTART} to discard all "
                                  "the checkpoints") from exc
        if (rgb.shape[1], rgb.shape[0]) != size:
            raise CheckpointError(f"checkpoint {self.path(role, index)} is not {size[0]}x{size[1]}")
        return rgb

    def made(self, chunk: Chunk) -> set[int]:
        """Frames of the chunk's chain that are on disk."""
        present = {role: self.present(role) for role in ("lead", "tail", "final")}
        return {i for i in range(chunk.first, chunk.stop) if i in present[chunk.role(i)]}

    def mark_running(self, task: Task) -> Path:
        marker = self.root / "running" / f"{task.chunk.first:07d}.{task.number}.{socket.gethostname()}.{os.getpid()}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return marker

    def running(self) -> dict[tuple[int, int], list[Path]]:
        """Markers of running tasks by their chunk's first frame and pass (a killed task's marker stays until the
        end)."""
        folder = self.root / "running"
        found: dict[tuple[int, int], list[Path]] = {}
        for path in folder.iterdir() if folder.is_dir() else ():
            if match := CHUNK_MARKER.match(path.name):  # first frame, pass, host, pid (mark_running)
                found.setdefault((int(match.group(1)), int(match.group(2))), []).append(path)
        return found

    def drop_overlap(self, indices: Iterable[int]) -> None:
        """Delete the two paintings of these lead-in frames (the blend of each is a final frame now); not through a
        link, as remove_frame_files."""
        roles = [role for role in ("lead", "tail") if own_folder(self.root) and own_folder(self.root / role)]
        for index in indices:
            for role in roles:
                self.path(role, index).unlink(missing_ok=True)

    def remove(self) -> None:
        """Drop the overlap frames and markers: the final frames hold everything a render needs from them. Only
        files named as the chunks name them go; anything else in chunks/ stays, and the folder with it."""
        remove_chunk_files(self.root)

    def remove_markers(self) -> None:
        """Drop the markers of running tasks (those of an earlier run are stale)."""
        remove_chunk_files(self.root, markers_only=True)


@dataclass(frozen=True)
class ChunkJob:
    """What every task of one render needs: paths and settings only, never frames (all absolute paths)."""

    info: VideoInfo
    size: tuple[int, int]
    config: Config
    styles: tuple[Path, ...]
    workdir: Path
    threads: int


def run_task(job: ChunkJob, task: Task) -> dict[int, int]:
    """The Ray task: make the task's frames that are not on disk yet; returns the iterations spent on each."""
    torch.set_num_threads(job.threads)
    cv2.setNumThreads(job.threads)
    files = ChunkFiles(WorkDir(job.workdir), job.config.passes)
    marker = files.mark_running(task)
    try:
        stylizer = _worker_stylizer(job)
        if task.number == 1:
            return _first_pass(job, task.chunk, files, stylizer)
        return _later_pass(job, task, files.work, stylizer)
    finally:
        marker.unlink(missing_ok=True)


def _first_pass(job: ChunkJob, chunk: Chunk, files: ChunkFiles, stylizer: Stylizer) -> dict[int, int]:
    made = files.made(chunk)
    missing = [i for i in range(chunk.first, chunk.stop) if i not in made]
    spent: dict[int, int] = {}
    for start, stop in _runs(missing):
        spent.update(_stylize_range(job, chunk, files, stylizer, start, stop))
    return spent


def _later_pass(job: ChunkJob, task: Task, work: WorkDir, stylizer: Stylizer) -> dict[int, int]:
    store = PassCheckpoints(work, job.size, job.config.passes, ignore_event)
    spent: dict[int, int] = {}

    def on_event(event: Event) -> None:
        if isinstance(event, FrameDone):
            spent[event.index] = event.iterations

    if not all(store.has(task.number, i) for i in task.frames):
        sources = SourceWindow.of_video(job.info, job.size, task.needs.start, task.needs.stop,
                                        forward=task.number % 2 == 1)
        try:
            refine(task.number, task.frames.start, task.frames.stop, sources, store, stylizer, on_event,
                   shot=task.shot)
        finally:
            sources.close()
    return spent


def _runs(indices: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive stretches [start, stop) of sorted indices."""
    start = previous = None
    for i in indices:
        if previous is None or i != previous + 1:
            if start is not None:
                yield start, previous + 1  # type: ignore[operator]
            start = i
        previous = i
    if start is not None:
        yield start, previous + 1  # type: ignore[operator]


def _stylize_range(job: ChunkJob, chunk: Chunk, files: ChunkFiles, stylizer: Stylizer, start: int,
                   stop: int) -> dict[int, int]:
    """Frames [start, stop) of the chunk's chain; after its first frame, warm-started from the saved frames before
    `start`, which are exactly the images an uninterrupted task used, so a retry makes the same frames."""
    # As far back as the temporal loss looks (temporal_reach), within the chain: what an uninterrupted task held.
    back = min(start - chunk.first, frames_back(job.config))
    frames = read_frames(job.info, job.size, start - back, stop)
    results = None
    spent = {}
    try:
        previous = None
        if back:
            pairs = [(next(frames).rgb.copy(), files.load(chunk.role(index), index, job.size))
                     for index in range(start - back, start)][::-1]  # nearest first
            previous = Previous(*pairs[0], earlier=tuple(pairs[1:]))
        results = stylize_sequence(frames, stylizer, previous, find_cuts=False)
        for result in results:
            files.save(chunk.role(result.index), result.index, result.rgb)
            spent[result.index] = result.iterations
    finally:
        if results is not None:
            results.close()
        frames.close()
    return spent


# One prepared stylizer per worker process: Ray reuses the process for later chunks, which then skip loading VGG19
# and computing the style targets.
_STYLIZERS: dict[tuple[Config, tuple[Path, ...]], Stylizer] = {}


def _worker_stylizer(job: ChunkJob) -> Stylizer:
    key = (job.config, job.styles)
    if key not in _STYLIZERS:
        _STYLIZERS.clear()
        styles = [read_style_image(p) for p in job.styles]
        _STYLIZERS[key] = Stylizer(job.config, styles, resolve_device(job.config.device))
    return _STYLIZERS[key]


@dataclass(frozen=True)
class _Session:
    """The Ray this render uses: how many chunks run at once and what each task asks of Ray."""

    workers: int
    threads: int
    gpus: bool

    @property
    def options(self) -> dict[str, Any]:
        return {"num_cpus": self.threads, "num_gpus": 1 if self.gpus else 0}

    def describe(self) -> str:
        each = "1 GPU" if self.gpus else f"{self.threads} CPU thread{'s' * (self.threads > 1)}"
        return f"ray, {self.workers} worker{'s' * (self.workers > 1)} ({each} each)"


@contextmanager
def _ray_session(ray: Any, cluster: Cluster, config: Config) -> Iterator[_Session]:
    """Start a local Ray (or join a cluster) unless this process is connected already; stop what was started, once
    the last render of this process that uses it is done."""
    _join_ray(ray, cluster, config)
    try:
        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        gpus = sum(int(node.get("GPU", 0)) for node in nodes) if config.device in ("auto", "cuda") else 0
        workers = cluster.workers or gpus or max(1, len(nodes))
        yield _Session(workers, threads_per_task(nodes, workers, gpus > 0), gpus > 0)
    finally:
        _leave_ray(ray)


# Renders on workers running in this process (threads of one program, say), and whether the first of them started
# its Ray connection: Ray has one per process, so the renders share it, and the last to end closes it.
_RAY_USERS = {"count": 0, "started": False}
_RAY_USERS_LOCK = threading.Lock()


def _join_ray(ray: Any, cluster: Cluster, config: Config) -> None:
    with _RAY_USERS_LOCK:
        if _RAY_USERS["count"] == 0 and not ray.is_initialized():
            _init_ray(ray, cluster, config)
            _RAY_USERS["started"] = True
        _RAY_USERS["count"] += 1


def _leave_ray(ray: Any) -> None:
    with _RAY_USERS_LOCK:
        _RAY_USERS["count"] -= 1
        if _RAY_USERS["count"] == 0 and _RAY_USERS["started"]:
            _RAY_USERS["started"] = False
            ray.shutdown()  # a local Ray ends with its processes; a cluster is only disconnected from


def threads_per_task(nodes: list[dict[str, float]], workers: int, gpus: bool) -> int:
    """CPU threads each chunk's task asks Ray for, given the alive nodes' resources.

    Ray places a task on one node, and a task that asks for more than any node has waits forever, without a word:
    so the share is a node's, not the cluster's. A GPU task takes its node's CPUs over its GPUs (a GPU node beside
    a head node without one must not be asked for the head's CPUs too); a CPU task an equal share of all the CPUs,
    never more than the largest node has.
    """
    if gpus:
        shares = [int(node.get("CPU", 0)) // int(node["GPU"]) for node in nodes if node.get("GPU", 0) >= 1]
        return max(1, min(shares, default=1))
    cpus = [int(node.get("CPU", 0)) for node in nodes]
    return max(1, min(sum(cpus) // max(1, workers), max(cpus, default=1)))


def _init_ray(ray: Any, cluster: Cluster, config: Config) -> None:
    # ray.init replaces the SIGTERM handler with one that exits at once; the caller's (the CLI's turns SIGTERM into
    # an orderly stop that keeps the finished frames) is put back.
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    options: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    # The address "auto" joins: RAY_ADDRESS where it names one, else a Ray this machine runs.
    named = cluster.address
    if cluster.address == "auto":
        named = os.environ.get("RAY_ADDRESS", "").strip()
        named = named if named not in ("", "auto") else None
    shown = named if named == cluster.address else f"{named} (RAY_ADDRESS)"
    if cluster.address is None:
        options.update(address="local", num_cpus=max(os.cpu_count() or 1, cluster.workers or 1),
                       object_store_memory=_RAY_OBJECT_STORE)
        if config.device == "cpu":
            options["num_gpus"] = 0
    else:
        options["address"] = cluster.address
        if named:
            check_reachable(named, shown=shown)
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if cluster.address == "auto" and not named and isinstance(exc, ConnectionError):
            raise WorkerFailed("no running Ray cluster found from this machine: start one (ray start --head) or "
                               "set RAY_ADDRESS to a cluster's address") from None
        where = ("a local Ray" if cluster.address is None else f"the Ray cluster at {shown}" if named
                 else "the Ray cluster that auto finds")
        raise WorkerFailed(f"cannot start or reach {where}: {' '.join(str(exc).split())}"
                           f"{_token_hint(named)}") from None
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGTERM, handler)


def _token_hint(named: str | None) -> str:
    """Said where a cluster named by its address (as given, or RAY_ADDRESS) may have refused this driver for want
    of a token: a head started with `ray start --head` asks for one where its machine keeps ~/.ray/auth_token (a
    local Ray writes it), and a driver given an address sends none unless RAY_AUTH_MODE says token."""
    if named is None or os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return ""
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if not token.is_file() and not os.environ.get("RAY_AUTH_TOKEN"):
        return ""  # Ray on this machine has never used a token: most likely not the reason
    return " (if the cluster asks for a token, set RAY_AUTH_MODE=token, with the head's token in RAY_AUTH_TOKEN)"


def check_reachable(address: str, timeout: float = _CONNECT_TIMEOUT, shown: str | None = None) -> None:
    """Refuse a cluster address (HOST:PORT, or ray://HOST:PORT) that does not answer as a Ray head does within
    `timeout`: no connection, or not the protocol of Ray's (not checked where Ray's connections are encrypted,
    RAY_USE_TLS). Others ("auto", a name Ray resolves, another scheme's URL) are left to ray.init. `shown` is the
    address as the messages name it."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit() or not host or "://" in host:
        return
    shown = shown or address
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as connection:
            if os.environ.get("RAY_USE_TLS", "0").strip().lower() in ("0", "false", ""):
                first = _first_answer(connection)
                if len(first) < 4 or first[3] != _HTTP2_SETTINGS:
                    raise WorkerFailed(f"{shown} answers, but not as a Ray cluster's head{_looks_like(first)}; a "
                                       "head takes renders at the address `ray start --head` prints (port 6379 "
                                       "unless --port said otherwise)")
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise WorkerFailed(f"cannot reach the Ray cluster at {shown}: {reason}") from None


def _first_answer(connection: socket.socket) -> bytes:
    """The first bytes a server sends back to an HTTP/2 client's hello (up to a frame's header)."""
    connection.sendall(_HTTP2_HELLO)
    answer = b""
    while len(answer) < 9:
        more = connection.recv(9 - len(answer))
        if not more:
            break
        answer += more
    return answer


def _looks_like(first: bytes) -> str:
    if first.startswith((b"HTTP/", b"<")):  # a status line, or a page sent as to an HTTP/0.9 request
        return " (it is a web server: the dashboard's port?)"
    return " (it closed the connection)" if not first else ""


def render_distributed(job: RenderJob, cluster: Cluster, restart: bool, on_event: EventCallback,
                       stop: threading.Event | None) -> Path:
    """pipeline.render on Ray workers: the same checks, manifest, locks, resume and output as a sequential render."""
    ray = import_ray()
    files = ChunkFiles(job.workdir, job.config.passes)
    progress = RunProgress(on_event, 0, job.info.frame_count)
    stopped: int | None = None
    refuse_other_render(job, restart)  # before a cluster is started or joined, which can take minutes
    with output_slot(job.output, progress, job.overwrite) as partial, \
            _stop_after_publish(job) as published:
        # Ray first: a cluster that cannot be reached leaves no work directory behind to block the next try.
        with _ray_session(ray, cluster, job.config) as session:
            if restart and (job.workdir.path / MANIFEST).is_file():
                with job.workdir.lock():  # never under a render that is running now
                    files.remove()  # overlap frames of the discarded render must not be blended into the new one
            manifest = open_workdir(job, restart, stop)
            with job.workdir.lock():
                check_still_ours(job.workdir, manifest)
                job.workdir.forget_published()
                files.remove_markers()  # of tasks of an earlier run
                segments = [Segment(*s) for s in manifest.segments]
                done = job.workdir.done_frames()
                progress.current = first_missing(done, job.info.frame_count)
                progress.gains = output_gains(job, manifest, stop)
                on_event(_with_ray_notes(started_event(job, session.describe(), segments, done,
                                                       gains=progress.gains), job.info, len(segments),
                                         session.workers))
                started = time.perf_counter()
                tasks = plan_tasks(segments, cluster.overlap, job.config.passes)
                count = _Driver(ray, job, tasks, session, progress, stop).run(partial)
                put_in_place(job, partial)
                published.set()
                # Under the lock: a render starting now must not reuse what goes.
                stopped = clean_up_after_publish(lambda: _remove_after_render(job, files))
        on_event(progress.finished(job.output, count, time.perf_counter() - started))
        end_if_stopped(stopped, job)
    return job.output


def _with_ray_notes(started: RenderStarted, info: VideoInfo, chunks: int, workers: int) -> RenderStarted:
    """The start event, saying so where the video makes fewer chunks than there are workers (the others only cost
    Ray's start-up: a clip shorter than one chunk runs on one worker), and where each chunk is decoded from the
    video's first frame (decode.seekable), which spreads less well the longer the video."""
    notes = list(started.notes)
    if chunks < workers:
        notes.append(f"the video makes {chunks} chunk{'s' * (chunks != 1)} for {workers} workers: {workers - chunks} "
                     "will have nothing to do (smaller chunks spread it over more)")
    if chunks > 1 and not seekable(info):
        notes.append(f"the video ({info.codec}) cannot be seeked exactly: each chunk is decoded from its first frame, "
                     "so the workers decode its beginning again and again (re-encoded to H.264 first, it would not be)")
    return replace(started, notes=tuple(notes))


@contextmanager
def _stop_after_publish(job: RenderJob) -> Iterator[threading.Event]:
    """Set the event once the output is in place: a Ctrl-C or SIGTERM after it (while Ray shuts down, which takes
    a moment) ends as one that came during the clean-up does (pipeline.end_if_stopped), the output written in
    full, not as a render to run again, whose next run would only refuse the existing output."""
    published = threading.Event()
    try:
        yield published
    except (KeyboardInterrupt, SignalInterrupt) as exc:
        if not published.is_set():
            raise
        end_if_stopped(stop_signal(exc), job)


def _remove_after_render(job: RenderJob, files: ChunkFiles) -> None:
    files.remove()
    if not job.config.keep_frames:
        job.workdir.remove()
    else:  # as in a sequential render, the earlier passes are not needed to resume any more
        for number in range(1, job.config.passes):
            job.workdir.remove_pass_frames(number, range(job.info.frame_count))
        job.workdir.drop_cut_short_writes()


def tasks_to_run(tasks: list[Task], made: dict[int, set[int]], leads: Container[int] = frozenset()) -> list[Task]:
    """The tasks still to run, in plan order, from the frames each pass has made (`made`, by pass number): a last
    pass's task whose frames are not all final, and an earlier pass's whose frames are missing where a later task
    still to run reads them (a finished chunk, whose earlier passes' frames are gone, runs nothing again).

    A first pass's task also counts as its own the lead-in frames that are not made and whose painting of them
    (`leads`: the lead-in paintings on disk) is gone: a blended seam frame deleted after its two paintings were
    dropped is made again only by both chains, the one before (its tail) and this one.
    """
    last = max(t.number for t in tasks)
    needed: set[Task] = set()
    for task in sorted(tasks, key=lambda t: -t.number):
        missing = {i for i in range(task.chunk.start, task.chunk.stop) if i not in made[task.number]}
        if task.number == 1:
            missing |= {i for i in range(task.chunk.first, task.chunk.start) if i not in made[1] and i not in leads}
        readers = [t for t in needed if t.number == task.number + 1]
        if missing and (task.number == last or any(missing & set(t.needs) for t in readers)):
            needed.add(task)
    return [t for t in tasks if t in needed]


def unread_frames(tasks: list[Task], finished: set[Task]) -> dict[int, set[int]]:
    """For each pass before the last, its frames that no unfinished task reads: every task of the next pass whose
    `needs` hold them has finished. They are then needed neither by this run nor to resume it (`tasks_to_run`
    runs no task for a finished chunk whose earlier passes' frames are gone)."""
    unread: dict[int, set[int]] = {}
    for number in range(1, max(t.number for t in tasks)):
        readers = [t for t in tasks if t.number == number + 1]
        waiting = {i for t in readers if t not in finished for i in t.needs}
        unread[number] = {i for t in readers if t in finished for i in t.needs} - waiting
    return unread


def finished_seams(tasks: list[Task], finished: set[Task]) -> list[Chunk]:
    """Chunks whose lead-in was painted by two chains that have both finished: the chunk's and the one before it
    (whose tail it is); neither will paint those frames again."""
    firsts = [t for t in tasks if t.number == 1]
    return [later.chunk for earlier, later in zip(firsts, firsts[1:], strict=False)
            if later.chunk.first < later.chunk.start and earlier in finished and later in finished]


def poll_interval(look_seconds: float) -> float:
    """Seconds to wait for tasks before the next look at the work directory, after a look that took this long."""
    return min(_POLL_MAX, max(_POLL, _POLL_SHARE * look_seconds))


def wait_for_tasks(ray: Any, refs: list[Any], seconds: float, stop: threading.Event | None) -> list[Any]:
    """The tasks among `refs` that have finished, once one has or `seconds` have passed; a stop set meanwhile ends
    the wait within _POLL (Ray cannot wait on it, so the wait is taken in slices)."""
    deadline = time.monotonic() + seconds
    while True:
        # One is enough to return: a finished task frees a worker for the next at once, however long the wait.
        ready, _ = ray.wait(refs, num_returns=1, timeout=max(0.0, min(_POLL, deadline - time.monotonic())))
        if ready or time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return ready


def cancel_running(ray: Any, refs: list[Any]) -> list[Any]:
    """End the tasks among `refs` still running, and return them: a forced cancel ends the worker process, and with it
    its ffmpeg. Those that have returned are left alone: Ray fails a check of its own (a C++ abort, the driver's end)
    on a forced cancel that meets a task's reply, as after a Ctrl-C while chunks finish; this narrows that window to
    replies on their way at this very moment, it does not close it."""
    if not refs:
        return []
    _returned, running = ray.wait(refs, num_returns=len(refs), timeout=0)
    for ref in running:
        ray.cancel(ref, force=True)
    return running


class _Driver:
    """Starts each task once the frames it reads are made, blends each overlap once both sides are on disk, and
    encodes every frame in order as soon as it and all before it are final."""

    def __init__(self, ray: Any, job: RenderJob, tasks: list[Task], session: _Session, progress: RunProgress,
                 stop: threading.Event | None) -> None:
        self.ray, self.job, self.tasks, self.session = ray, job, tasks, session
        self.progress, self.stop = progress, stop
        self.files = ChunkFiles(job.workdir, job.config.passes)
        self.seams = [t.chunk for t in tasks if t.number == 1 and t.chunk.first < t.chunk.start]
        self.reported: tuple[int, int] | None = None
        self.finished: set[Task] = set()
        # Earlier passes' frames deleted by this run: still made, as far as the tasks waiting for frames go.
        self.dropped: dict[int, set[int]] = {number: set() for number in range(1, job.config.passes)}

    def run(self, partial: Path) -> int:
        job = self.job
        work = ChunkJob(replace(job.info, path=job.info.path.resolve()), job.size, job.config,
                        tuple(p.resolve() for p in job.styles), job.workdir.path.resolve(), self.session.threads)
        # Stored once: the video's frame times and keyframes grow with its length, and every task would carry
        # its own copy otherwise.
        work_ref = self.ray.put(work)
        remote = self.ray.remote(run_task).options(max_retries=MAX_RETRIES, retry_exceptions=False,
                                                   **self.session.options)
        made = self._made()
        todo = tasks_to_run(self.tasks, made, self.files.present("lead"))
        pending: dict[Any, Task] = {}
        announced = set(made[job.config.passes])
        poll = _POLL
        with open_writer(job, partial) as writer:
            try:
                while writer.frames_written < job.info.frame_count:
                    while len(pending) < self.session.workers and (task := self._ready(todo, made)) is not None:
                        todo.remove(task)
                        pending[remote.remote(work_ref, task)] = task
                    self._collect(pending, poll)
                    looked = time.monotonic()
                    made = self._made()
                    poll = poll_interval(time.monotonic() - looked)
                    self._drop_unread(set(self.tasks) - set(todo) - set(pending.values()), made)
                    final = made[job.config.passes]
                    self.progress.all_made = len(final) >= job.info.frame_count
                    self._announce(final - announced, announced)
                    self._encode(writer, final)
                    self._report(pending, len(final))
                    if self.stop is not None and self.stop.is_set():
                        raise Cancelled()
                    if not pending and writer.frames_written < job.info.frame_count:
                        self._check_complete(writer.frames_written, todo, made)
                self._await_returns(pending)
            except SystemError as exc:
                # A stop signal's exception raised while Ray's compiled code waits comes out wrapped in this.
                if isinstance(exc.__cause__, (KeyboardInterrupt, SignalInterrupt)):
                    raise exc.__cause__ from None
                raise
            finally:
                cancel_running(self.ray, list(pending))
            return writer.frames_written

    def _await_returns(self, pending: dict[Any, Task]) -> None:
        """A task saves its last frame before it returns the iterations it spent, so every frame can be encoded
        while the last tasks are still returning: wait for them (they have nothing left to make), or the summary
        would leave their frames out of what this run stylized."""
        deadline = time.monotonic() + _RETURN_WAIT
        while pending and time.monotonic() < deadline:
            self._collect(pending)

    def _made(self) -> dict[int, set[int]]:
        """The frames each pass has made (the first pass's seams blended where both sides are on disk), those this
        run deleted as unread included."""
        work, last = self.job.workdir, self.job.config.passes
        made = {1: self._blend(self.files.present("final") | self.dropped.get(1, set()))}
        for number in range(2, last):
            made[number] = work.done_pass_frames(number) | self.dropped[number]
        if last > 1:
            made[last] = work.done_frames()
        return made

    def _drop_unread(self, finished: set[Task], made: dict[int, set[int]]) -> None:
        """Delete, as tasks finish, what no task will read again, so that the work directory holds about one
        painting a frame, as a sequential render's does: a blended seam's two paintings, and the earlier passes'
        frames that every task of the next pass that reads them has used."""
        if finished == self.finished:
            return
        self.finished = finished
        for chunk in finished_seams(self.tasks, finished):
            if all(i in made[1] for i in range(chunk.first, chunk.start)):
                self.files.drop_overlap(range(chunk.first, chunk.start))
        for number, unread in unread_frames(self.tasks, finished).items():
            gone = (unread & made[number]) - self.dropped[number]
            if number == 1:  # a seam's paintings go first, or its blend would be made again
                self.files.drop_overlap(gone)
            self.job.workdir.drop_pass_frames(number, gone)
            self.dropped[number] |= gone

    @staticmethod
    def _ready(todo: list[Task], made: dict[int, set[int]]) -> Task | None:
        """The first task whose frames of the pass before are all made (a first pass reads none)."""
        return next((t for t in todo if t.number == 1 or all(i in made[t.number - 1] for i in t.needs)), None)

    def _collect(self, pending: dict[Any, Task], poll: float = _POLL) -> None:
        """Wait until a task finishes, at most `poll` seconds; a task's error is the render's."""
        if not pending:
            return
        ready = wait_for_tasks(self.ray, list(pending), poll, self.stop)
        for ref in ready:
            task = pending.pop(ref)
            try:
                for index, iterations in self.ray.get(ref).items():
                    self.progress.spent(index, iterations)
            except self.ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, (VidstyleError, Cancelled)):
                    raise cause from None
                raise WorkerFailed(f"{task.describe()} failed on a worker: {cause or exc}") from None
            except self.ray.exceptions.RayError as exc:
                raise WorkerFailed(f"{task.describe()} failed on {MAX_RETRIES + 1} tries "
                                   f"({type(exc).__name__}): a worker died each time") from None

    def _blend(self, final: set[int]) -> set[int]:
        """Blend every overlap whose two sides are both on disk; returns the first pass's final frames now present."""
        open_seams = [c for c in self.seams if not all(i in final for i in range(c.first, c.start))]
        if not open_seams:
            return final
        leads, tails = self.files.present("lead"), self.files.present("tail")
        for chunk in open_seams:
            indices = range(chunk.first, chunk.start)
            if not all(i in leads and i in tails for i in indices):
                continue
            for position, index in enumerate(indices):
                if index in final:
                    continue
                earlier = self.files.load("tail", index, self.job.size)
                later = self.files.load("lead", index, self.job.size)
                self.files.save("final", index, blend_frames(earlier, later, blend_weight(position, len(indices))))
                final = final | {index}
        return final

    def _announce(self, new: set[int], announced: set[int]) -> None:
        for index in sorted(new):
            self.progress(FrameSaved(index, self.job.workdir.frame_path(index)))
            announced.add(index)

    def _encode(self, writer: VideoWriter, final: set[int]) -> None:
        while writer.frames_written in final:
            index = writer.frames_written
            writer.write(for_output(self.job, self.job.workdir.load_frame(index, self.job.size),
                                    self.progress.gains.get(index, 1.0)))
            self.progress.current = writer.frames_written

    def _report(self, pending: dict[Any, Task], frames_done: int) -> None:
        running = self.files.running()
        busy = sum(1 for task in pending.values() if (task.chunk.first, task.number) in running)
        if (busy, frames_done) != self.reported:
            self.reported = (busy, frames_done)
            self.progress.on_event(WorkersBusy(busy, self.session.workers, frames_done))

    def _check_complete(self, next_frame: int, todo: list[Task], made: dict[int, set[int]]) -> None:
        """No task runs: a frame still missing, or one a waiting task reads, is lost (deleted by hand, a full disk
        that a task did not notice), never waited for forever."""
        if self._ready(todo, made) is not None:
            return
        for task in todo:  # waiting for a frame of the pass before that no waiting task will make
            lost = [i for i in task.needs if i not in made[task.number - 1]
                    and not any(t.number == task.number - 1 and i in t.frames for t in todo)]
            if lost:
                raise CheckpointError(f"frame {lost[0]} of pass {task.number - 1} is missing from "
                                      f"{self.job.workdir.path} after its task finished; run the same render again "
                                      "to make it")
        if next_frame not in made[self.job.config.passes]:
            raise CheckpointError(f"frame {next_frame} is missing from {self.job.workdir.path} after its chunk "
                                  "finished; run the same render again to make it")
