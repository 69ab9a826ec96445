"""`vidstyle serve`: the web page and HTTP API with a persistent job queue (the `vidstyle[serve]` extra).

This module imports neither FastAPI nor uvicorn until a server is built, so the command line can say that the
extra is missing in one line instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import math
import os
import re
import socket
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidstyle.errors import BusyError, OutputError, SettingError, VidstyleError
from vidstyle.io.pixels import PIXEL_LIMIT_VARIABLE
from vidstyle.serve.layout import DataDir, drop_checkpoints, is_ours, mark_as_ours, remove_ours
from vidstyle.serve.queue import JobQueue, is_job_id

if TYPE_CHECKING:
    from vidstyle.serve.worker import WorkerSpec

DEFAULT_HOST = "127.0.0.1"  # this machine only: another host is the operator's choice, with a token
DEFAULT_PORT = 8000
DEFAULT_DATA = "vidstyle-data"
DEFAULT_MAX_UPLOAD = "500MB"
DEFAULT_MAX_QUEUED = 100
# Seconds a running job may show no sign of life (an optimization iteration, a decoded frame, a progress event)
# before its worker is killed and the job fails. Generous: one iteration of a large frame on a busy CPU, loading the
# network, or muxing a long video's audio at the end can each take minutes, and a render stopped for being slow is
# lost, whereas one that hangs a little longer than need be only holds its worker that much longer.
DEFAULT_STALL_TIMEOUT = 600.0
MIN_FREE = 2 * 10**9  # bytes: the least of the default floor of free space (default_min_free)
# The most pixels an uploaded picture may have: 8192x8192, the largest render. OpenCV reads a picture's size from
# its header and refuses more before it allocates; at its own default (2^30) a PNG of a few MB could take several
# GB of the server's memory as it is checked.
MAX_IMAGE_PIXELS = 8192 * 8192
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750's b64token
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_UNITS |= {unit[0]: size for unit, size in _UNITS.items() if unit.endswith("B") and len(unit) == 2}  # 500M, 2G


class MissingExtra(VidstyleError):
    """The web dependencies are not installed."""


def check_installed() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtra(f"vidstyle serve needs {exc.name or 'the web dependencies'}: install vidstyle[serve] "
                           "(pip install \"vidstyle[serve]\")") from None


def parse_byte_size(text: str, setting: str = "max_upload", zero: bool = False) -> int:
    """`500MB`, `500M`, `2GB`, `1GiB`, `1TB` or a number of bytes; `setting` is the one a bad size is reported
    against; `zero`: 0 is a size (a floor turned off)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", text.upper())
    if not match or match.group(2) not in _UNITS or float(match.group(1)) < 0 or \
            (float(match.group(1)) == 0 and not zero):
        raise SettingError(setting, f"must be a size such as 500MB or 2GB{', or 0' if zero else ''} (got {text!r})")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def default_min_free(max_upload: int) -> int:
    """The free space the server keeps on its data folder's file system unless told: 2 GB, or twice max_upload."""
    # Twice the largest upload: the free space is checked before an upload is read, and one accepted upload can
    # take that much (the multipart parser's spooled copy, often on the same disk, then the saved one), so one
    # request at the floor cannot fill the disk. At least 2 GB: what the jobs already accepted still write (frame
    # checkpoints, results) and the queue's database, whose every write fails on a full disk, jobs ending included.
    return max(MIN_FREE, 2 * max_upload)


@dataclass
class Server:
    """A server ready to run: the data directory locked and recovered, its port bound, the app built."""

    url: str
    summary: str
    app: Any
    listening: socket.socket
    lock_fd: int
    spool: Path  # where uploads are spooled while they arrive: the data folder's disk

    def run(self) -> None:
        import uvicorn

        # The multipart parser spools an upload larger than 1 MB through tempfile: in the data folder, on the disk
        # that --min-free watches, not in a /tmp that may be small or held in memory.
        previous, tempfile.tempdir = tempfile.tempdir, str(self.spool)
        try:
            # Access logs off: at hundreds of polls a second they would cost more than the routes themselves.
            config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
            stopping = self.app.state.stopping

            class _Server(uvicorn.Server):
                def handle_exit(self, sig: int, frame: Any) -> None:
                    # Event streams end now, rather than being cancelled with a traceback when the grace runs out.
                    stopping.set()
                    super().handle_exit(sig, frame)

            _Server(config).run(sockets=[self.listening])
        finally:
            tempfile.tempdir = previous
            self.listening.close()
            os.close(self.lock_fd)


def prepare_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, data: Path | str = DEFAULT_DATA,
                   workers: int | None = None, max_upload: str = DEFAULT_MAX_UPLOAD, token: str | None = None,
                   device: str = "auto", min_free: str | None = None,
                   max_queued: int = DEFAULT_MAX_QUEUED, stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> Server:
    """Lock the data directory, put jobs of a dead server back in the queue, bind the port and build the app."""
    check_installed()
    limit_image_pixels()  # takes effect where OpenCV has not loaded yet (the command line sees to that)
    from vidstyle.serve.app import ServeSettings, create_app
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue
    from vidstyle.serve.worker import WorkerPool

    limit, floor = _byte_limits(max_upload, min_free)
    _check_settings(port, workers, max_queued, stall_timeout, token)
    folder = DataDir(Path(data).resolve())
    if folder.root.exists() and not folder.root.is_dir():
        raise SettingError("data", f"{data} is a file; name a folder for the server's data")
    specs = worker_specs(folder.root, device, workers)
    with contextlib.ExitStack() as undo:  # what is opened here is closed again where a later step fails
        listening = _listen(host, port)
        undo.callback(listening.close)
        try:
            folder.create()
            lock_fd = _lock_data(folder.lock)
        except OSError as exc:
            raise OutputError(f"cannot make the data folder {exc.filename or folder.root}: "
                              f"{exc.strerror or exc}") from None
        undo.callback(os.close, lock_fd)
        try:
            queue = JobQueue(folder.database)
            undo.callback(queue.close)
            recovered = queue.recover()
        except sqlite3.DatabaseError as exc:  # not a database (damaged, someone else's file), a disk that fails
            raise OutputError(f"cannot open the job queue {folder.database}: {exc}") from None
        _sweep(folder, queue)
        settings = ServeSettings(folder.root, limit, token, specs[0].device, len(specs), min_free=floor,
                                 max_queued=max_queued, hosts=loopback_names(host))
        app = create_app(settings, queue, WorkerPool(queue, specs, stall_timeout))
        undo.pop_all()
    url = f"http://{_url_host(host)}:{port}/"
    summary = (f"vidstyle serve: {url} ({len(specs)} worker(s) on {specs[0].device}, data in "
               f"{folder.root}{f', {recovered} interrupted job(s) resumed' if recovered else ''})")
    if token is None and settings.hosts is None:
        summary += ("\nvidstyle serve: warning: no token on an address other machines reach: anyone who can reach "
                    "it can queue, cancel and delete jobs and download the results")
    return Server(url, summary, app, listening, lock_fd, folder.uploads)


def _byte_limits(max_upload: str, min_free: str | None) -> tuple[int, int]:
    """The largest request and the free space kept on the data folder's disk, in bytes."""
    limit = parse_byte_size(max_upload)
    if limit < 1000:  # 0.1B is no bytes: every request would be refused as too large
        raise SettingError("max_upload", f"must be at least 1KB (got {max_upload!r})")
    floor = parse_byte_size(min_free, "min_free", zero=True) if min_free is not None else default_min_free(limit)
    return limit, floor


def _check_settings(port: int, workers: int | None, max_queued: int, stall_timeout: float,
                    token: str | None) -> None:
    if workers is not None and workers < 1:
        raise SettingError("workers", f"must be at least 1 (got {workers})")
    if max_queued < 1:
        raise SettingError("max_queued", f"must be at least 1 (got {max_queued})")
    if not 0 < stall_timeout < math.inf:  # NaN too; no limit would let a stuck render hold its worker for ever
        raise SettingError("stall_timeout", f"must be a finite number of seconds above 0 (got {stall_timeout:g})")
    if token is not None and len(token) < 8:
        raise SettingError("token", "must be at least 8 characters")
    if token is not None and not _BEARER_TOKEN.fullmatch(token):
        # What an Authorization header and a cookie carry unchanged: a space, ';' or a non-ASCII letter would be
        # cut or re-encoded on the way, and no client could ever sign in.
        raise SettingError("token", "may hold only ASCII letters, digits and - . _ ~ + / (then = signs), as a "
                                    "bearer token does")
    if not 1 <= port <= 65535:
        raise SettingError("port", f"must be 1 to 65535 (got {port})")


def _url_host(host: str) -> str:
    """The host as a URL writes it: an IPv6 address in brackets, since its colons would read as the port's."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def loopback_names(host: str) -> frozenset[str] | None:
    """The names a browser on this machine reaches a server listening on a loopback address by; None for another
    address (reached by whatever names the network gives it). A web page's script could otherwise reach a loopback
    server through a name of its own that it points there (DNS rebinding) and read its jobs."""
    try:
        loopback = host.lower() == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return None
    return frozenset({"localhost", "127.0.0.1", "::1", host.strip("[]").lower()}) if loopback else None


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before its address is announced: a port in use is said in one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise SettingError("host", f"{host} is not an address to listen on ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BusyError(f"port {port} on {host} is in use by another program; choose another port") from None
        raise SettingError("host", f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    return sock


def _lock_data(path: Path) -> int:
    """One server per data directory: a second would requeue the first one's running jobs as its own."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BusyError(f"another vidstyle server is using the data directory {path.parent}") from None
    return fd


def _sweep(folder: DataDir, queue: JobQueue) -> None:
    """Files of uploads that a dead server was still checking, job folders whose job was never queued, and the
    checkpoints of jobs that ended cancelled or failed."""
    # Only folders the server made (named as it names them and carrying its mark): --data may point at a folder
    # that holds other things, and those are never the server's to delete. A symbolic link is not followed.
    known = {job.id for job in queue.jobs(limit=1 << 30)}
    for parent, keep in ((folder.uploads, set()), (folder.jobs, known)):
        for entry in parent.iterdir():
            if is_job_id(entry.name) and entry.name not in keep:
                remove_ours(entry)
    # A job's folder made before folders carried the mark: its row is the proof that the server made it, and
    # with the mark DELETE /api/jobs/{id} can remove it like any other.
    for job_id in known:
        entry = folder.job(job_id)
        if entry.is_dir() and not entry.is_symlink() and not is_ours(entry):
            mark_as_ours(entry)
    # Checkpoints of jobs that ended while their worker could not remove them (killed by the watchdog, a server
    # killed in between): nothing resumes a cancelled or failed job.
    for state in ("cancelled", "failed"):
        for job in queue.jobs(state, limit=1 << 30):
            drop_checkpoints(folder.job(job.id))


def worker_specs(data: Path, device: str, workers: int | None) -> list[WorkerSpec]:
    """One slot per GPU by default (each on its own GPU), else one on the CPU; CPU slots share the cores."""
    import torch

    from vidstyle.serve.worker import WorkerSpec
    from vidstyle.stylize import resolve_device

    if device not in ("auto", "cpu", "cuda", "mps"):
        raise SettingError("device", f"must be auto, cpu, cuda or mps (got {device!r})")
    if device in ("cuda", "mps"):
        resolve_device(device)  # refused now, not on each upload: a machine without one never runs a job
    gpus = torch.cuda.device_count() if device in ("auto", "cuda") and torch.cuda.is_available() else 0
    resolved = "cuda" if gpus else ("cpu" if device == "auto" else device)
    count = workers or max(gpus, 1)
    threads = max(1, (os.cpu_count() or 1) // count) if not gpus and count > 1 else None
    return [WorkerSpec(f"slot-{i}", data, resolved, i % gpus if gpus else None, threads) for i in range(count)]


def limit_image_pixels() -> None:
    """Set the server's picture limit (MAX_IMAGE_PIXELS) unless the operator set OpenCV's own; called before OpenCV
    loads, since it reads the limit once, and inherited by the worker processes."""
    os.environ.setdefault(PIXEL_LIMIT_VARIABLE, str(MAX_IMAGE_PIXELS))
