"""Worker processes: each claims one job at a time from the queue and runs the library's render on it.

Renders run in separate processes (spawned, not forked: the web server has threads and an event loop), one per
GPU or per `--workers` slot on a CPU, so the web server's event loop never waits for the network. A supervisor
thread in the server restarts a worker that dies and puts its job back in the queue; a worker dies with the
server (PR_SET_PDEATHSIG, and a parent check), so a server killed with -9 leaves no render running behind it.
The supervisor also kills a worker whose render has shown no sign of life (a Pulse in shared memory) for the
stall timeout, failing its job, one that has not heeded a cancel within CANCEL_GRACE, and one that has not set up
within SETUP_TIMEOUT (or the stall timeout, if longer) of its start.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vidstyle.assets import builtin_style
from vidstyle.errors import BusyError, CheckpointMismatch, Interrupted, VidstyleError
from vidstyle.events import Event, FrameDone, FrameSaved, FrameStarted, IterationDone, RenderFinished, RenderStarted
from vidstyle.fades import darken
from vidstyle.io.ffmpeg import exit_reason
from vidstyle.io.images import encode_image, read_image, read_style_image
from vidstyle.serve import DEFAULT_STALL_TIMEOUT
from vidstyle.serve.layout import PREVIEW, WORKDIR, DataDir, drop_checkpoints
from vidstyle.serve.queue import Job, JobQueue

if TYPE_CHECKING:  # the worker's process imports torch and the rest only when its first job starts
    import numpy as np

    from vidstyle.config import Config
    from vidstyle.stylize import Stylizer

_log = logging.getLogger("vidstyle.serve")
# A frame darkened under this by a fade (follow_fades) leaves the job's picture as it was: the page and the gallery
# show the last frame in which the picture can still be seen, not a black one.
_SHOWN_GAIN = 0.5

Alive = Callable[[], None]  # the render calls it to say it is still getting on

REPORT_INTERVAL = 0.25  # seconds between progress rows: cheap for the database, smooth enough for a progress bar
WATCH_INTERVAL = 0.25  # how often a running job looks for a cancel request or a server shutdown
BUSY_RETRY_SECONDS = 30  # a render of a killed server may hold its work directory's lock for a moment
RECORD_RETRY_SECONDS = 2.0  # how often a job's end that a full disk would not take is offered again


@dataclass(frozen=True)
class WorkerSpec:
    name: str  # the slot, as recorded in the jobs it runs
    data: Path
    device: str  # the Config device every job of this service runs on
    gpu: int | None  # the CUDA device of this slot
    threads: int | None  # torch CPU threads, when several slots share the CPU


def job_style(folder: Path, params: dict) -> Path:
    style = params["style"]
    if "builtin" in style:
        path = builtin_style(style["builtin"])
        if path is None:
            raise VidstyleError(f"unknown built-in style {style['builtin']!r}")
        return path
    return folder / style["file"]


def job_config(params: dict[str, Any], device: str) -> Config:
    from vidstyle.config import make_config

    return make_config(params["preset"], **params["overrides"], device=device)


class ProgressWriter:
    """on_event callback: frame N of M, ETA and the newest frame as preview.jpg, written at most 4 times a second.

    Called from the render's thread and its write-behind thread (FrameSaved), hence the lock.
    """

    def __init__(self, queue: JobQueue, job_id: str, folder: Path, alive: Alive) -> None:
        self.queue, self.job_id, self.folder, self.alive = queue, job_id, folder, alive
        self.lock = threading.Lock()
        self.total, self.done, self.fraction = 1, 0, 0.0
        self.run_start: float | None = None
        self.run_first_done = 0
        self.preview_frame: int | None = None
        self.resumed: int | None = None
        self.last_report = 0.0

    def __call__(self, event: Event) -> None:
        self.alive()  # every event, IterationDone included: a shared-memory store, not a database write
        with self.lock:
            force = self._apply(event)
            if force or time.monotonic() - self.last_report >= REPORT_INTERVAL:
                self.flush()

    def _apply(self, event: Event) -> bool:
        if isinstance(event, RenderStarted):
            self.total, self.done, self.resumed = event.total_frames, event.already_done, event.already_done
            return True
        if isinstance(event, FrameStarted) and self.run_start is None:
            self.run_start, self.run_first_done = time.monotonic(), self.done
        elif isinstance(event, IterationDone):
            self.fraction = event.iteration / max(event.iters, 1)
        elif isinstance(event, FrameDone):
            self.done, self.fraction = min(self.done + 1, self.total), 0.0
        elif isinstance(event, FrameSaved) and (event.gain >= _SHOWN_GAIN or not (self.folder / PREVIEW).exists()):
            # A dark frame is shown only where the job has no picture yet (a black leader, a clip that is all black),
            # and until a visible frame comes.
            try:
                write_preview(self.folder / PREVIEW, darken(read_image(event.path, "frame"), event.gain))
                self.preview_frame = event.index
            except (OSError, VidstyleError):
                pass  # a preview that cannot be made (a full disk) must not fail a render that may take hours
        elif isinstance(event, RenderFinished):
            self.done, self.fraction = event.frames, 0.0
            return True
        return False

    def eta(self) -> float | None:
        made = self.done - self.run_first_done
        if self.run_start is None or made <= 0:
            return None
        return (time.monotonic() - self.run_start) / made * (self.total - self.done)

    def flush(self) -> None:
        progress = min((self.done + self.fraction) / max(self.total, 1), 1.0)
        self.last_report = time.monotonic()
        try:
            self.queue.report(self.job_id, self.done, self.total, progress, self.eta(), self.preview_frame,
                              self.resumed)
        except sqlite3.OperationalError:
            pass  # a busy or full database: this report is lost, the render goes on, and the next one is made


def write_preview(path: Path, rgb: np.ndarray) -> None:
    """JPEG of a frame, renamed into place so a reader gets the old picture or the new one, never half of one.
    No fsync: a preview lost to a power cut is remade by the next frame."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_bytes(encode_image(rgb, ".jpg"))
    os.replace(tmp, path)


class Stopping(Protocol):
    def is_set(self) -> bool: ...


class Doorbell:
    """Rung by the server (a job was queued, the server stops); workers look at it between looks at the queue.

    A counter in shared memory, without a lock, rather than a multiprocessing Event: a worker killed while it
    waited on an Event (kill -9, the kernel's out-of-memory killer) left the Event's condition counting a sleeper
    that never woke, and the next set() waited for it for ever, hanging the worker supervisor and every upload. A
    lost count between two of the server's threads ringing at once still changes the value, which is all a look
    needs."""

    POLL = 0.05  # seconds between looks of a waiting worker: idle workers cost nothing, a new job waits no longer

    def __init__(self, context: Any) -> None:  # a multiprocessing context
        self._rings = context.RawValue("q", 0)

    def ring(self) -> None:
        self._rings.value += 1

    def rings(self) -> int:
        return int(self._rings.value)

    def is_set(self) -> bool:
        """Rung at all: for a bell rung once, the server's shutdown."""
        return self.rings() != 0

    def wait(self, seen: int, timeout: float) -> None:
        """Until the bell rings after `seen` (what rings() gave) or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while self.rings() == seen and time.monotonic() < deadline:
            time.sleep(self.POLL)


class _Stopping:
    """The server's shutdown, or a SIGTERM to this worker: a service manager's stop (systemd's, say) sends it to
    every process of the server's group at once. Either ends the job as Ctrl-C does, back in the queue to resume,
    rather than killing the worker mid-frame, which would count as a death of the job's worker (three fail it)."""

    def __init__(self, shutdown: Doorbell) -> None:
        self.shutdown, self.terminated = shutdown, threading.Event()

    def is_set(self) -> bool:
        return self.shutdown.is_set() or self.terminated.is_set()


class Pulse:
    """A worker's sign of life, in shared memory that the supervisor reads: whether it has set up, the job it runs
    (its seq, 0 when idle) and the monotonic time of the render's latest step. Written many times a second, so no
    lock and no database: a torn read costs at most one look of the supervisor, which looks again half a second
    later."""

    def __init__(self, context: Any) -> None:  # a multiprocessing context
        self._job = context.RawValue("q", 0)
        self._beat = context.RawValue("d", 0.0)
        self._ready = context.RawValue("b", 0)  # the worker has set up and claims jobs
        self._spawned = context.RawValue("d", 0.0)  # when its process was started

    def restart(self) -> None:
        self.end()
        self._ready.value = 0
        self._spawned.value = time.monotonic()

    def mark_ready(self) -> None:
        self._ready.value = 1

    def ready(self) -> bool:
        return bool(self._ready.value)

    def setting_up_for(self) -> float | None:
        """Seconds since the worker was started, while it has not got ready; None once it has."""
        return None if self.ready() else time.monotonic() - self._spawned.value

    def begin(self, seq: int) -> None:
        self._job.value = seq
        self.touch()

    def touch(self) -> None:
        self._beat.value = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine

    def end(self) -> None:
        self._beat.value = 0.0
        self._job.value = 0

    def job(self) -> int:
        return int(self._job.value)

    def quiet_for(self) -> float | None:
        """Seconds since the running job's latest sign of life; None when the worker has no job."""
        beat = self._beat.value
        return time.monotonic() - beat if beat else None


class LiveStop(threading.Event):
    """A render's stop event whose every look is a sign of life: the render looks once per optimization iteration
    and per frame of its scene-cut decode, so one stuck anywhere (a decoder that stalls, a device that stops
    answering) stops looking, whatever it was doing."""

    def __init__(self, alive: Alive) -> None:
        super().__init__()
        self.alive = alive

    def is_set(self) -> bool:
        self.alive()
        return super().is_set()


class Watcher:
    """Sets a render's stop event when the job is cancelled or the server shuts down."""

    def __init__(self, queue: JobQueue, job_id: str, shutdown: Stopping, alive: Alive) -> None:
        self.stop: threading.Event = LiveStop(alive)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(queue, job_id, shutdown), daemon=True)
        self._thread.start()

    def _watch(self, queue: JobQueue, job_id: str, shutdown: Stopping) -> None:
        while not self._done.wait(WATCH_INTERVAL):
            if shutdown.is_set() or self._cancel_requested(queue, job_id):
                self.stop.set()
                return

    @staticmethod
    def _cancel_requested(queue: JobQueue, job_id: str) -> bool:
        # A database locked for longer than its timeout is asked again at the next look: the thread must not die
        # of it, or the job's cancel and the server's shutdown would wait for the watchdog's kill.
        try:
            return queue.cancel_requested(job_id)
        except sqlite3.OperationalError as exc:
            _log.warning("job %s: the job queue could not be read (%s); looking again", job_id, exc)
            return False

    def close(self) -> None:
        self._done.set()
        self._thread.join()


# The exit status of a worker that replaces itself after an error the render did not expect.
EXIT_SPOILED = 70


def run_job(queue: JobQueue, spec: WorkerSpec, job: Job, shutdown: Stopping, alive: Alive) -> bool:
    """Render one claimed job and record how it ended: done, failed (one line why), cancelled, or queued. False
    after an error the render did not expect: what raised it (a GPU's context after a device error, say) may be
    spoiled for every later job, so the worker's process is to be replaced."""
    folder = DataDir(spec.data).job(job.id)
    output = folder / job.params["output"]
    record = functools.partial(record_end, queue, job.id, shutdown=shutdown, alive=alive)
    if output.exists():  # outputs appear by an atomic rename of a complete file: a killed run had finished
        _finish_after_kill(job, folder, output)
        record("done")
        return True
    watcher = Watcher(queue, job.id, shutdown, alive)
    # A failed job's checkpoints go before its failure is recorded: on a full disk (what fails a render most often)
    # they are what frees the room that the queue's database needs to record it.
    try:
        _render_retrying(queue, spec, job, folder, watcher.stop, alive)
        record("done")
    except Interrupted:
        cancelled = queue.cancel_requested(job.id)
        # Ended first: a cancel is overdue after a short grace, and a slow deletion would get the worker killed;
        # but where the disk is full, its checkpoints are what hold the room the record needs.
        record("cancelled" if cancelled else "queued",  # queued: its checkpoints resume it
               on_full=functools.partial(drop_checkpoints, folder) if cancelled else None)
        if cancelled:
            drop_checkpoints(folder)
    except VidstyleError as exc:
        drop_checkpoints(folder)
        record("failed", str(exc).replace(str(folder), "the job"))  # no server paths to clients
    except Exception as exc:  # noqa: BLE001 - a job's failure is recorded on the job; another worker takes the next
        _log.exception("job %s: unexpected error", job.id)  # the client sees one line; the operator, where it came from
        drop_checkpoints(folder)
        record("failed", f"internal error: {type(exc).__name__}: {exc}")
        return False
    finally:
        watcher.close()
    return True


def record_end(queue: JobQueue, job_id: str, state: str, error: str | None = None, *, shutdown: Stopping,
               alive: Alive, on_full: Callable[[], None] | None = None) -> None:
    """Record how a job ended. Where the disk stays full after the job's checkpoints went (another program filled
    it), or another program holds the database locked past its busy timeout, the write is offered again until it
    is taken: a worker that died of it counted a death against the job (three fail it) and left it shown running.
    `on_full` is called once at the first refusal for a full disk (a cancelled job's checkpoints, which it keeps
    until its end is recorded, dropped to make room). A server that stops meanwhile leaves the job running in the
    queue, which its next start queues again."""
    warned = False
    while True:
        try:
            queue.finish(job_id, state, error)
            return
        except sqlite3.OperationalError as exc:
            full = JobQueue.error_code(exc) == sqlite3.SQLITE_FULL
            if not full and not JobQueue.is_busy(exc):
                raise
            if full and on_full is not None:
                on_full()
                on_full = None
            if not warned:
                _log.warning("job %s: its end (%s) cannot be recorded yet (%s); trying again", job_id, state, exc)
                warned = True
        alive()  # waiting on the database is no stalled render: the watchdog must not kill the worker for it
        deadline = time.monotonic() + RECORD_RETRY_SECONDS
        while time.monotonic() < deadline:
            if shutdown.is_set():
                return
            time.sleep(WATCH_INTERVAL)


def _finish_after_kill(job: Job, folder: Path, output: Path) -> None:
    """What a render killed after its result was in place had left to do: a video's checkpoints (the library's own
    clean-up of a finished render, pipeline.finish_published), a still's preview."""
    try:
        if job.kind == "video":
            from vidstyle.checkpoint import WorkDir
            from vidstyle.pipeline import finish_published

            finish_published(output, WorkDir(folder / WORKDIR))
        elif not (folder / PREVIEW).exists():
            write_preview(folder / PREVIEW, read_image(output, "result"))
    except (OSError, VidstyleError) as exc:  # the result is whole: what is left goes with the job's DELETE
        _log.warning("job %s: cleaning up after a killed render failed: %s", job.id, exc)


def _render_retrying(queue: JobQueue, spec: WorkerSpec, job: Job, folder: Path, stop: threading.Event,
                     alive: Alive) -> None:
    deadline = time.monotonic() + BUSY_RETRY_SECONDS
    while True:
        try:
            _render(queue, spec, job, folder, stop, alive)
            return
        except BusyError:
            if stop.wait(1.0):  # cancelled or shutting down while it waited: not a failure of the job
                raise Interrupted(0, signal.SIGINT, resumable=False) from None
            if time.monotonic() > deadline:
                raise


def _render(queue: JobQueue, spec: WorkerSpec, job: Job, folder: Path, stop: threading.Event,
            alive: Alive) -> None:
    from vidstyle.pipeline import render
    from vidstyle.still import stylize_image

    params = job.params
    config = job_config(params, spec.device)
    progress = ProgressWriter(queue, job.id, folder, alive)
    style, content, output = job_style(folder, params), folder / params["input"], folder / params["output"]
    stylizer = _stylizer(config, style)
    if job.kind == "video":
        try:
            render(content, [style], output, config, workdir=folder / WORKDIR, on_event=progress, stop=stop,
                   stylizer=stylizer)
        except CheckpointMismatch:
            # The job's own checkpoints, made for these very settings, by another vidstyle: the server was upgraded
            # with the job unfinished. They are the server's to discard; failing the job would lose it, since a
            # client cannot start it again.
            render(content, [style], output, config, workdir=folder / WORKDIR, on_event=progress, stop=stop,
                   stylizer=stylizer, restart=True)
    else:
        stylize_image(content, [style], output, config, on_event=progress, stop=stop, stylizer=stylizer)
        try:
            write_preview(folder / PREVIEW, read_image(output, "result"))
            progress.preview_frame = 0
        except (OSError, VidstyleError) as exc:  # the result is whole; only the page's small picture is missing
            _log.warning("job %s: its preview could not be written: %s", job.id, exc)
    progress.flush()


# The network of the last job, by (device, pooling, precision): a worker renders job after job, and loading the
# weights again for each would add seconds to every job (scripts/bench_serve.py measures the whole overhead).
_NETWORKS: dict[tuple[str, str, str], Any] = {}


def _stylizer(config: Config, style: Path) -> Stylizer:
    """A Stylizer for this job on the network kept from earlier jobs of the same kind."""
    from vidstyle.precision import resolve_precision
    from vidstyle.stylize import Stylizer, resolve_device

    device = resolve_device(config.device)
    key = (str(device), config.pooling, str(resolve_precision(config.precision, device)))
    made = Stylizer(config, [read_style_image(style)], device, vgg=_NETWORKS.get(key))
    _NETWORKS.clear()  # one network at a time: another kind replaces it rather than adding to device memory
    _NETWORKS[key] = made.vgg
    return made


def claim_when_free(queue: JobQueue, slot: str) -> Job | None:
    """The oldest queued job for `slot`, or None: none is queued, or another program (a backup, an sqlite3 shell)
    held the database locked past the queue's busy timeout; the worker looks again later rather than dying, which
    would count against no job and reload the network for nothing."""
    try:
        return queue.claim(slot)
    except sqlite3.OperationalError as exc:
        if not JobQueue.is_busy(exc):
            raise
        _log.warning("worker %s: the job queue stayed locked; looking again", slot)
        return None


def worker_main(spec: WorkerSpec, wake: Doorbell, shutdown: Doorbell, parent: int, pulse: Pulse) -> None:
    """The worker process: claim, render, repeat, until the server asks it to stop."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the server stops us
    stopping = _Stopping(shutdown)
    signal.signal(signal.SIGTERM, lambda *_: stopping.terminated.set())
    _setup_device(spec)
    _warm_up(spec)
    queue = JobQueue(DataDir(spec.data).database)
    pulse.mark_ready()
    fit = True
    try:
        while not stopping.is_set():
            seen = wake.rings()  # before the claim: a job queued while it looks wakes the wait at once
            job = claim_when_free(queue, spec.name)
            if job is None:
                wake.wait(seen, 1.0)
                continue
            pulse.begin(job.seq)
            try:
                fit = run_job(queue, spec, job, stopping, pulse.touch)
            finally:
                pulse.end()
            if not fit:
                _log.warning("worker %s: replacing its process after an unexpected error", spec.name)
                break
    finally:
        queue.close()
    if not fit:
        sys.exit(EXIT_SPOILED)  # the supervisor starts another, counted in worker_deaths


def _warm_up(spec: WorkerSpec) -> None:
    """Import the renderer and load the network of the default settings before the first job is claimed, so that
    the first job after a start waits no longer than the ones after it."""
    import vidstyle.pipeline  # noqa: F401 - the render's modules, imported once here
    import vidstyle.still  # noqa: F401
    from vidstyle.config import make_config
    from vidstyle.precision import resolve_precision
    from vidstyle.stylize import CONTENT_LAYERS, STYLE_LAYERS, load_vgg, resolve_device

    try:
        config = make_config(device=spec.device)
        device = resolve_device(config.device)
        key = (str(device), config.pooling, str(resolve_precision(config.precision, device)))
        _NETWORKS[key] = load_vgg(CONTENT_LAYERS + STYLE_LAYERS, device=device, pooling=config.pooling)
    except Exception:  # noqa: BLE001, S110 - whatever fails here fails again in the first job, which reports it
        pass


def _setup_device(spec: WorkerSpec) -> None:
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    if spec.gpu is not None:
        torch.cuda.set_device(spec.gpu)


@contextlib.contextmanager
def _children_ignore_ctrl_c() -> Iterator[None]:
    """Processes started meanwhile begin with Ctrl-C ignored, as the server's own SIGINT handler is set aside.

    Ctrl-C reaches the whole process group. A worker ignores it once worker_main runs, but the second or so before,
    while a new interpreter imports the renderer, would end in a KeyboardInterrupt traceback in the server's output.
    An interpreter started with SIGINT ignored keeps it ignored. Python's signal.signal works only in the main
    thread, and the supervisor thread starts the workers, hence sigaction itself: it restores the handler exactly,
    flags included. The server misses a Ctrl-C only during the fork and exec, a few milliseconds.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        saved = ctypes.create_string_buffer(256)  # larger than any platform's struct sigaction
        if libc.sigaction(signal.SIGINT, None, saved) != 0:
            raise OSError(ctypes.get_errno(), "sigaction")
    except (OSError, AttributeError):
        yield  # no sigaction to call: a Ctrl-C during a worker's start may print a traceback, nothing more
        return
    ignore = ctypes.create_string_buffer(saved.raw, len(saved))
    ctypes.c_void_p.from_buffer(ignore).value = int(signal.SIG_IGN)  # sa_handler, first in struct sigaction
    libc.sigaction(signal.SIGINT, ignore, None)
    try:
        yield
    finally:
        libc.sigaction(signal.SIGINT, saved, None)


def _die_with_parent(parent: int) -> None:
    """Linux kills us with the server (kill -9 too); elsewhere, and as a backstop, a thread watches the parent."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the thread below does it, within half a second

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def stall_message(seconds: float) -> str:
    """The error of a job whose render stopped making progress; it names no path of the server."""
    return (f"the render stopped making progress for {_span(seconds)} and was ended (the server's stall_timeout "
            "setting): the input may be damaged, or the device stopped answering")


def _span(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} minute{'' if seconds == 60 else 's'}"


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs; empty where there is no /proc to read them from."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


class WorkerPool:
    """Starts one worker process per slot, restarts any that dies (its job goes back to the queue), stops them."""

    RESTART_DELAY = 2.0  # a worker that dies at once is not restarted in a tight loop
    # A worker that dies before it is ready (the renderer imported, the network loaded: Pulse.ready) fails in its
    # setting up (a GPU gone, say), and will again. Each such death in a row doubles the wait before the next try, up
    # to MAX_RESTART_DELAY, and from FAILING_AFTER of them on the slot is reported as failing (GET /api/health),
    # until a worker of the slot gets ready.
    MAX_RESTART_DELAY = 60.0
    FAILING_AFTER = 3
    # A render notices a cancel at its next optimization iteration, which at a large size on a CPU can take several
    # seconds; one that has not stopped after this long is stuck, and its worker is killed to end the job.
    CANCEL_GRACE = 20.0
    # A worker not ready this long after its start (nor within the stall timeout, where that is longer) has hung in
    # its setting up. Not the stall timeout alone: that is sized for one iteration of a render, and a cold start
    # (importing torch, a GPU's first use) can take longer than a short one.
    SETUP_TIMEOUT = 300.0

    def __init__(self, queue: JobQueue, specs: list[WorkerSpec],
                 stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> None:
        self.queue, self.specs, self.stall_timeout = queue, specs, stall_timeout
        self.context = multiprocessing.get_context("spawn")
        self.wake, self.shutdown = Doorbell(self.context), Doorbell(self.context)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.processes: dict[str, multiprocessing.process.BaseProcess] = {}
        self.deaths_at_start = {spec.name: 0 for spec in specs}
        # Every death of a slot's workers since the start, on a job too: a process that crashes on each job's first
        # frame fails job after job without marking its slot failing, and this count shows it.
        self.deaths = {spec.name: 0 for spec in specs}
        self.pulses = {spec.name: Pulse(self.context) for spec in specs}
        self._killed: set[str] = set()  # slots whose worker the watchdog killed, its job already settled
        self._reaped: dict[str, bool] = {}  # slots whose ended worker's job is still to go back: whether it died
        self._cancel_seen: dict[str, tuple[int, float]] = {}  # slot: (job seq, when its cancel was first seen)

    def start(self) -> None:
        # The processes are started from this one thread: PR_SET_PDEATHSIG fires when the thread that started a
        # child ends, so it must live as long as the server does.
        self._thread = threading.Thread(target=self._supervise, name="vidstyle-workers", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A job was queued: wake an idle worker now instead of at its next poll."""
        self.wake.ring()

    def _spawn(self, spec: WorkerSpec) -> multiprocessing.process.BaseProcess:
        pulse = self.pulses[spec.name]
        pulse.restart()  # a killed worker left its job's pulse behind, and had got ready
        process = self.context.Process(target=worker_main,
                                       args=(spec, self.wake, self.shutdown, os.getpid(), pulse),
                                       name=f"vidstyle-{spec.name}", daemon=True)
        with _children_ignore_ctrl_c():
            process.start()
        return process

    def _supervise(self) -> None:
        # No worker started yet: each is started by the first round, as a dead one is restarted (and so retried
        # where its start fails).
        ended = {spec.name: -math.inf for spec in self.specs}
        failing = False
        while True:
            try:
                for spec in self.specs:
                    self._tend(spec, ended)
            except Exception:
                # A database that is full or locked for a while: this thread must live on, since its end kills every
                # worker (PR_SET_PDEATHSIG), and what failed is tried again next round.
                if not failing:
                    _log.exception("the worker supervisor failed; trying again every half second")
                failing = True
            else:
                if failing:
                    _log.warning("the worker supervisor works again")
                failing = False
            if self._stopping.wait(0.5):
                break
        self._stop_processes()

    def _tend(self, spec: WorkerSpec, ended: dict[str, float]) -> None:
        """Watch a slot's worker; once it has ended, put its job back and start another after the slot's delay."""
        name = spec.name
        if name not in ended:
            self._tend_running(name, ended)
        if name not in ended or time.monotonic() - ended[name] < self.restart_delay(name):
            return
        try:
            self.processes[name] = self._spawn(spec)
        except Exception:
            # No process could be started (out of processes or memory): as a death at start, tried again after
            # the slot's delay, which grows, and shown failing after a few.
            self.deaths_at_start[name] += 1
            ended[name] = time.monotonic()
            _log.exception("worker %s could not be started; trying again in %s", name, _span(self.restart_delay(name)))
            return
        del ended[name]
        self.wake.ring()

    def _tend_running(self, name: str, ended: dict[str, float]) -> None:
        """Watch a started worker; once it has ended, put its job back and note when (in `ended`)."""
        process = self.processes[name]
        ready = self.pulses[name].ready()  # a dead worker's pulse keeps what it was until the next spawn
        if process.is_alive():
            if ready:
                self.deaths_at_start[name] = 0  # this one set up: whatever ended the ones before did not stop it
                self._watch(name, process)
            elif (self.pulses[name].setting_up_for() or 0.0) > self.setup_timeout():
                # Hung in its setting up (a device that stopped answering, a network file system): no job notices
                # it, so it would hold its slot for ever. Killed, it counts as a death at start (not `settled`).
                _log.warning("worker %s did not set up within %s; starting another", name,
                             _span(self.setup_timeout()))
                self._kill(name, process, settled=False)
            return
        if name not in self._reaped:
            process.join()
            # Killed by the watchdog: its job has ended (failed or cancelled); the job did not kill it.
            died = process.exitcode != 0 and name not in self._killed
            self._killed.discard(name)
            # Dying once ready (on a job: out of memory on its first frame, say) is the job's to count.
            self.deaths_at_start[name] = self.deaths_at_start[name] + 1 if died and not ready else 0
            self.deaths[name] += died
            self._reaped[name] = died
            if died:  # an operator reading the log learns of it, not only /api/health (what became of its job,
                # if it had one, is the job's own state: back in the queue, or failed after MAX_WORKER_DEATHS)
                _log.warning("worker %s died: it %s; another starts", name, exit_reason(process.exitcode))
        # A worker that stopped by itself (exit status 0, after a SIGTERM) put its job back already. Should this
        # fail, the slot stays reaped and it is tried again.
        self.queue.requeue_worker(name, died=self._reaped[name])
        del self._reaped[name]
        ended[name] = time.monotonic()

    def _watch(self, name: str, process: multiprocessing.process.BaseProcess) -> None:
        """Kill a worker whose job has shown no sign of life for stall_timeout, or has not heeded its cancel.

        A stalled job fails rather than going back to the queue as a dead worker's does: what stalls a render (a
        damaged upload that hangs the decoder, say) would stall it again, each try holding a worker for the whole
        stall timeout, and three tries would end in a message about the worker dying instead of saying why.
        """
        pulse = self.pulses[name]
        seq, quiet = pulse.job(), pulse.quiet_for()
        job = self.queue.running_on(name) if quiet is not None else None
        if job is None or job.seq != seq:  # idle, or between two jobs
            self._cancel_seen.pop(name, None)
            return
        if job.cancel and self._cancel_overdue(name, seq):
            self._kill(name, process)  # the job ends cancelled as the slot is reaped
        elif quiet is not None and quiet > self.stall_timeout:
            # Recorded first: should the database refuse the write (full, locked), the next round finds the stall
            # again and tries again, where a killed worker's job would be put back in the queue to stall once more.
            self.queue.finish(job.id, "cancelled" if job.cancel else "failed",
                              None if job.cancel else stall_message(self.stall_timeout))
            self._kill(name, process)

    def _cancel_overdue(self, name: str, seq: int) -> bool:
        seen = self._cancel_seen.setdefault(name, (seq, time.monotonic()))
        if seen[0] != seq:
            seen = self._cancel_seen[name] = (seq, time.monotonic())
        return time.monotonic() - seen[1] > self.CANCEL_GRACE

    def _kill(self, name: str, process: multiprocessing.process.BaseProcess, settled: bool = True) -> None:
        """SIGKILL a worker and the processes it started: ffmpeg runs in a session of its own, so a stalled decoder
        would outlive its worker, holding its pipe and its file for ever. `settled`: the worker's job has been
        ended already, so the kill is not a death to count."""
        children = descendants(process.pid) if process.pid is not None else []
        process.kill()
        process.join()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # ended with its worker
        if settled:
            self._killed.add(name)
        self._cancel_seen.pop(name, None)

    def setup_timeout(self) -> float:
        return max(self.SETUP_TIMEOUT, self.stall_timeout)

    def restart_delay(self, name: str) -> float:
        return min(self.RESTART_DELAY * 2 ** self.deaths_at_start[name], self.MAX_RESTART_DELAY)

    def failing(self) -> list[str]:
        """The slots whose worker keeps dying as it starts, before it can take a job."""
        return [name for name, deaths in self.deaths_at_start.items() if deaths >= self.FAILING_AFTER]

    def _stop_processes(self, grace: float = 10.0) -> None:
        self.shutdown.ring()
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            process.join(max(deadline - time.monotonic(), 0.1))
        for spec in self.specs:
            process = self.processes.get(spec.name)  # none where no start of the slot's ever succeeded
            if process is not None and process.is_alive():
                process.kill()
                process.join()
            self.queue.requeue_worker(spec.name, died=False)  # normally a no-op: a stopped worker requeued its job

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
