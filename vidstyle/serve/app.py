"""The HTTP API and the web page: FastAPI routes over the job queue; renders happen in the worker processes.

Everything a job needs is checked while the upload request is still open (options with make_config, the style,
the content probed as a video or read as an image, the render size against the device's memory), so a bad request
is answered 4xx at once and nothing is queued. Uploads are stored under names the server chooses.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import re
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from vidstyle import __version__
from vidstyle.assets import builtin_style, builtin_style_names
from vidstyle.config import DEFAULT_PRESET, Config, make_config, preset_names
from vidstyle.errors import (
    AnimatedPicture,
    ConfigError,
    DamagedVideo,
    ImageTooLarge,
    ImageTooSmall,
    InputError,
    SettingError,
    VidstyleError,
)
from vidstyle.io.images import encode_image, read_image, resize_rgb, style_problem
from vidstyle.io.paths import IMAGE_SUFFIXES
from vidstyle.io.pixels import pixel_limit_words
from vidstyle.serve import DEFAULT_MAX_QUEUED, MIN_FREE
from vidstyle.serve.guard import Guard, Refusal, shortened
from vidstyle.serve.layout import PREVIEW, RESULTS, WORKDIR, DataDir, drop_checkpoints, mark_as_ours, remove_ours
from vidstyle.serve.queue import FINAL_STATES, STATES, Job, JobQueue, QueueFull, is_job_id, new_job_id
from vidstyle.serve.worker import WorkerPool

STATIC = Path(__file__).resolve().parent / "static"
# Suffixes an upload may keep (ffmpeg and OpenCV look at the content, but some formats are told by the name);
# anything else is stored as .bin. The client's file name is used for nothing else.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".gif", ".mpg", ".mpeg", ".ts", ".flv", ".ogv")
# Magic numbers of the image formats OpenCV reads: a video is never loaded into memory to find it is no image.
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*")
# The options a client may set, by their library names (SettingError names them the same way).
OPTIONS: dict[str, type] = {"size": int, "iters": int, "first_iters": int, "style_weight": float, "flow": str,
                            "preserve_colors": bool}
# Read from the settings so that the API's documentation follows the default when it changes.
_STYLE_WEIGHT_HELP = f"style strength (default {Config().style_weight:g})"
SSE_INTERVAL = 0.5  # seconds between looks at a job for its event stream
# A job takes minutes to render, so a place in a full queue opens no sooner: asking again earlier is refused again.
QUEUE_RETRY_AFTER = 60
THUMBNAIL_SIDE = 192
QUEUE_BUSY_RETRY_AFTER = 5  # seconds: a lock held past the queue's busy timeout is rare and brief


@dataclass(frozen=True)
class ServeSettings:
    data: Path
    max_upload: int  # bytes in one request
    token: str | None
    device: str  # Config device of every job: the server's choice, not the client's
    workers: int
    default_preset: str = DEFAULT_PRESET
    min_free: int = MIN_FREE  # bytes the data folder's file system keeps free: below it, uploads are refused (507)
    max_queued: int = DEFAULT_MAX_QUEUED  # jobs waiting: at this many, uploads are refused (429)
    hosts: frozenset[str] | None = None  # the names requests may address the server by (Guard); None: any


class ApiError(Exception):
    """A request the API refuses: HTTP status, a one-line message, and the form field or setting it is about."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers


class JobUrls(BaseModel):
    page: str
    events: str
    preview: str | None
    result: str | None


class JobOut(BaseModel):
    id: str
    kind: str  # video or image
    state: str  # queued, running, done, failed, cancelled
    created: float  # Unix time
    started: float | None
    finished: float | None
    frame: int  # frames finished
    frames: int | None  # frames in all, once the render has started
    resumed: int | None  # frames earlier runs had finished when the latest run began (after a restart)
    progress: float  # 0..1
    eta_seconds: float | None
    error: str | None
    cancel_requested: bool
    style: str
    options: dict[str, Any]
    urls: JobUrls


class ErrorOut(BaseModel):
    detail: str
    field: str | None = None


class StyleOut(BaseModel):
    name: str
    thumbnail: str


class GalleryItem(BaseModel):
    id: str
    kind: str
    finished: float | None
    preview: str
    result: str
    page: str


_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut}
                                             for code in (401, 404, 409, 410, 413, 415, 422, 503)}
_UPLOAD_ERRORS = _ERRORS | {code: {"model": ErrorOut} for code in (429, 507)}


def job_out(job: Job) -> dict[str, Any]:
    base = f"/api/jobs/{job.id}"
    done = job.state == "done"
    preview = f"{base}/preview?frame={job.preview_frame}" if job.preview_frame is not None else None
    style = job.params["style"]
    return {"id": job.id, "kind": job.kind, "state": job.state, "created": job.created, "started": job.started,
            "finished": job.finished, "frame": job.frames_done, "frames": job.frames_total,
            "resumed": job.resumed, "progress": round(job.progress, 4), "eta_seconds": job.eta, "error": job.error,
            "cancel_requested": job.cancel, "style": style.get("builtin", "uploaded"),
            "options": job.params["options"],
            "urls": {"page": f"/jobs/{job.id}", "events": f"{base}/events", "preview": preview,
                     "result": f"{base}/result" if done else None}}


def parse_options(form: dict[str, str | None], default_preset: str, device: str) -> tuple[str, dict[str, Any]]:
    """(preset, overrides) from the form's text fields, checked by make_config exactly as a render will build it."""
    preset = (form.get("preset") or "").strip().lower() or default_preset  # as the choice fields are read
    if preset not in preset_names():  # a name only: a client never names a file on the server
        raise ApiError(422, f"preset must be one of {', '.join(preset_names())} (got {shortened(preset)!r})",
                       "preset")
    overrides = {name: _parse_value(name, kind, form.get(name)) for name, kind in OPTIONS.items()
                 if form.get(name) not in (None, "")}
    try:
        make_config(preset, **overrides, device=device)
    except SettingError as exc:
        raise ApiError(422, str(exc), exc.setting) from None
    except ConfigError as exc:
        raise ApiError(422, str(exc)) from None
    return preset, overrides


_NUMBER = {int: re.compile(r"[+-]?[0-9]+"),
           float: re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|nan)", re.IGNORECASE)}


def _parse_value(name: str, kind: type, text: str | None) -> Any:
    text = (text or "").strip()
    if kind is bool:
        if text.lower() in ("1", "true", "on", "yes"):
            return True
        if text.lower() in ("0", "false", "off", "no"):
            return False
        raise ApiError(422, f"{name} must be true or false (got {shortened(text)!r})", name)
    # Plain ASCII numbers only: int() and float() also take "3_2" and other scripts' digits.
    if kind in (int, float) and not _NUMBER[kind].fullmatch(text):
        what = {int: "a whole number", float: "a number"}[kind]
        raise ApiError(422, f"{name} must be {what} (got {shortened(text)!r})", name)
    if kind is str:  # a choice (flow): its values are lower case, as the page sends them
        return text.lower()
    try:
        return kind(text)
    except ValueError:  # a whole number of more digits than int() converts: far outside every setting's range
        raise ApiError(422, f"{name} is out of range (got {shortened(text)!r})", name) from None


def _suffix(filename: str | None, allowed: tuple[str, ...]) -> str:
    suffix = Path(filename or "").suffix.lower()
    return suffix if suffix in allowed else ".bin"


def _save_upload(upload: UploadFile, folder: Path, field: str, allowed: tuple[str, ...]) -> Path:
    """The upload of form field `field` saved under a name of ours (the client's is never a path)."""
    stem = field.removesuffix("_file")
    path = folder / (stem + _suffix(upload.filename, allowed))
    try:
        with open(path, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # uploads at once may outgrow what --min-free left
            raise ApiError(507, "the server's disk is full: the upload cannot be stored", field) from None
        raise
    if path.stat().st_size == 0:
        raise ApiError(422, f"the {stem} upload is empty", field)
    return path


def free_disk(data: Path) -> int:
    """Bytes an unprivileged process may still write on the data folder's file system (root's reserve left out)."""
    return shutil.disk_usage(data).free


def disk_problem(data: Path, min_free: int) -> str | None:
    """Why no upload is taken now, or None: the data folder's file system has less free space than the floor."""
    free = free_disk(data)
    if free >= min_free:
        return None
    return (f"the server is short of disk space: {free / 1e9:.2f} GB free, under the {min_free / 1e9:g} GB it "
            "keeps free (its min_free setting); try again later")


def queue_full_message(limit: int) -> str:
    return f"too many jobs are waiting: the limit is {limit} (the server's max_queued setting); try again later"


def admission(settings: ServeSettings, queue: JobQueue) -> Callable[[Scope], Refusal | None]:
    """The Guard's say on an upload before its body is read: the disk under its floor (507), the queue full (429)."""

    def admit(scope: Scope) -> Refusal | None:
        if scope["method"] != "POST" or scope["path"] != "/api/jobs":
            return None
        problem = disk_problem(settings.data, settings.min_free)
        if problem is not None:
            return Refusal(507, problem)
        # Early, so a full queue costs no upload; uploads read meanwhile are held to the limit when queued.
        if queue.count("queued") >= settings.max_queued:
            return Refusal(429, queue_full_message(settings.max_queued),
                           ((b"retry-after", str(QUEUE_RETRY_AFTER).encode()),))
        return None

    return admit


def _looks_like_image(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(12)
    return head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _present(upload: UploadFile) -> bool:
    """Browsers send an empty file field as a part with no name and no bytes."""
    return bool(upload.filename or upload.size)


# Uploads checked at once (their pictures decoded, their videos probed, as the render will): a picture at the pixel
# limit takes several hundred MB while it is decoded and converted, and each request is checked on a thread of its
# own, so uploads side by side could take all of the server's memory; the others wait their turn.
_CHECKING = threading.BoundedSemaphore(2)


class JobFactory:
    """Checks an upload request completely, then moves its files into jobs/<id>/ and queues it."""

    def __init__(self, settings: ServeSettings, queue: JobQueue, pool: WorkerPool | None) -> None:
        self.settings, self.queue, self.pool = settings, queue, pool
        self.data = DataDir(settings.data)

    def create(self, content: UploadFile, style: str | None, style_file: UploadFile | None,
               form: dict[str, str | None]) -> Job:
        preset, overrides = parse_options(form, self.settings.default_preset, self.settings.device)
        config = make_config(preset, **overrides, device=self.settings.device)
        job_id = new_job_id()
        staging = self.data.uploads / job_id
        staging.mkdir(parents=True)
        mark_as_ours(staging)
        try:
            with _CHECKING:
                style_spec, style_path = self._style(style, style_file, staging)
            source = _save_upload(content, staging, "input", VIDEO_SUFFIXES + IMAGE_SUFFIXES)
            self._check_disk()
            with _CHECKING:
                kind, output = self._check_content(source, style_path, config, staging)
            params = {"preset": preset, "overrides": overrides, "style": style_spec, "input": source.name,
                      "output": output, "options": {"preset": preset, **overrides}}
            staging.rename(self.data.job(job_id))  # same file system: the job's files appear at once
        finally:
            remove_ours(staging)  # gone already where the rename took it
        try:
            job = self.queue.add(job_id, kind, params, limit=self.settings.max_queued)
        except BaseException as exc:
            remove_ours(self.data.job(job_id))  # made just above: no job would own it
            if isinstance(exc, QueueFull):  # other uploads were queued while this one was read and checked
                raise ApiError(429, queue_full_message(exc.limit),
                               headers={"retry-after": str(QUEUE_RETRY_AFTER)}) from None
            raise
        if self.pool is not None:
            self.pool.notify()
        return job

    def _check_disk(self) -> None:
        """Again once the upload is saved: it was checked before it was read, but its own bytes (and other uploads
        meanwhile) may have taken the disk under the floor; the staging folder then goes with the refusal."""
        problem = disk_problem(self.settings.data, self.settings.min_free)
        if problem is not None:
            raise ApiError(507, problem)

    def _style(self, name: str | None, upload: UploadFile | None, staging: Path) -> tuple[dict[str, str], Path]:
        name = (name or "").strip()  # as the option fields are read: " starry-night" is starry-night
        if upload is not None and _present(upload):
            if name:
                raise ApiError(422, "give a built-in style or a style picture, not both", "style")
            path = _save_upload(upload, staging, "style_file", IMAGE_SUFFIXES)
            try:
                rgb = read_image(path, "style image")
            except ImageTooLarge:
                raise ApiError(422, f"the style picture has more than {pixel_limit_words()}", "style_file") from None
            except AnimatedPicture as exc:
                said = str(exc).replace(f"style image {path} ", "the style picture ")
                raise ApiError(422, f"{said}: give one picture of it", "style_file") from None
            except InputError:
                raise ApiError(415, "the style upload is not a readable image (PNG, JPEG, BMP, TIFF or WebP)",
                               "style_file") from None
            problem = style_problem(rgb)
            if problem is not None:
                raise ApiError(422, f"the style picture {problem}", "style_file")
            return {"file": path.name}, path
        if not name:
            raise ApiError(422, f"choose a style: one of {', '.join(builtin_style_names())}, or upload a picture",
                           "style")
        path = builtin_style(name)
        if path is None:
            raise ApiError(422, f"unknown style {shortened(name)!r} (built-in: {', '.join(builtin_style_names())})",
                           "style")
        return {"builtin": name.lower().replace("_", "-")}, path

    def _check_content(self, source: Path, style: Path, config: Config, staging: Path) -> tuple[str, str]:
        """('video' | 'image', output name); every check the render itself will make, nothing written."""
        try:
            if _looks_like_image(source):
                try:
                    _check_image(source, config)
                    return "image", RESULTS["image"]
                except AnimatedPicture:
                    pass  # an animated PNG or WebP: rendered as the video it is
            from vidstyle.pipeline import prepare_render

            prepare_render(source, [style], staging / RESULTS["video"], config, workdir=staging / WORKDIR)
            return "video", RESULTS["video"]
        except SettingError as exc:
            raise ApiError(422, str(exc), exc.setting) from None
        except ImageTooLarge:  # readable, as the style picture's limit is: 422 for both
            raise ApiError(422, f"the picture has more than {pixel_limit_words()}", "input") from None
        except ImageTooSmall as exc:  # readable, only not paintable
            raise ApiError(422, str(exc), "input") from None
        except InputError as exc:
            # ffmpeg may name other files beside it (a concat list's entries): no server paths to clients
            said = exc.reason + _READABLE_PART if isinstance(exc, DamagedVideo) else str(exc)
            reason = said.replace(str(source), "the upload").replace(str(source.parent), "the upload's folder")
            raise ApiError(415, f"not a video or image vidstyle can read: {reason}", "input") from None
        except VidstyleError as exc:
            raise ApiError(422, str(exc).replace(str(staging), "the job"), "input") from None


# A damaged video's repair, said to a client: the command line's names the server's copy, which a client cannot reach.
_READABLE_PART = "; its readable part, copied with ffmpeg -c copy into a new file, can be uploaded"


def _check_image(path: Path, config: Config) -> None:
    from vidstyle.limits import check_fits, render_size
    from vidstyle.precision import resolve_precision
    from vidstyle.stylize import resolve_device

    rgb = read_image(path, "content image")
    size = render_size(rgb.shape[1], rgb.shape[0], config.size)
    device = resolve_device(config.device)
    check_fits(size, config.size, resolve_precision(config.precision, device), device)


def create_app(settings: ServeSettings, queue: JobQueue, pool: WorkerPool | None) -> FastAPI:
    """The ASGI app. `pool` (the worker processes) starts and stops with it; None serves the queue only."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if pool is not None:
            pool.start()
        try:
            yield
        finally:
            if pool is not None:
                await asyncio.to_thread(pool.stop)

    # The OpenAPI page (/docs) with its scripts served by this app, not by a CDN that an offline host cannot reach.
    # No /redoc: its script asks a CDN for a logo, whatever serves the script.
    app = FastAPIOffline(title="vidstyle", version=__version__, lifespan=lifespan, redoc_url=None,
                  description="Neural style transfer for videos and pictures, as a service: upload a video or an "
                              "image and a style, follow the render's progress, download the result.")
    app.state.stopping = threading.Event()  # set as the server begins to stop (Server.run)
    app.add_middleware(Guard, max_upload=settings.max_upload, token=settings.token,  # type: ignore[arg-type]
                       admit=admission(settings, queue), hosts=settings.hosts)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_error_handlers(app)
    _add_api(app, settings, queue, JobFactory(settings, queue, pool))
    _add_pages(app, queue)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "field": exc.field}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # A body the multipart parser cannot read (400), a method a route does not take (405): the same shape.
        return JSONResponse({"detail": str(exc.detail), "field": None}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(sqlite3.OperationalError)
    async def queue_unwritable(_request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        # The queue's database stayed locked past its busy timeout (another program holding it), or its disk is
        # full: the request changed nothing (its transaction was rolled back), so the client may try again later.
        # Anything else (a read-only or damaged database) is a fault of the server's: a 500, logged as such.
        if JobQueue.error_code(exc) == sqlite3.SQLITE_FULL:
            return JSONResponse({"detail": "the server's disk is full: the job queue cannot be written",
                                 "field": None}, status_code=507)
        if JobQueue.is_busy(exc):
            return JSONResponse({"detail": "the job queue is busy: try again in a few seconds", "field": None},
                                status_code=503, headers={"Retry-After": str(QUEUE_BUSY_RETRY_AFTER)})
        raise exc

    @app.exception_handler(Exception)
    async def server_fault(_request: Request, _exc: Exception) -> JSONResponse:
        # A fault of the server's own (a data folder it may not write, a damaged database), whose traceback the
        # server logs: the client gets the API's shape in one line, without the server's paths, which the page
        # shows (plain text made it print a JSON parser's complaint).
        return JSONResponse({"detail": "the server failed to carry this out: its log says why", "field": None},
                            status_code=500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = str(first["loc"][-1]) if first.get("loc") else None
        message = first["msg"]
        if "Expected UploadFile" in message:  # pydantic's words for a text field where a file belongs
            message = "must be a file upload, not a text field"
        return JSONResponse({"detail": f"{field}: {message}" if field else message, "field": field},
                            status_code=422)


def _get_job(queue: JobQueue, job_id: str) -> Job:
    job = queue.get(job_id) if is_job_id(job_id) else None
    if job is None:
        raise ApiError(404, f"no job {shortened(job_id, 40)!r}")
    return job


# The fields of POST /api/jobs: a misspelt option (iter for iters) would otherwise be dropped without a word and
# the job rendered at the preset's value, as a command line or a preset file never does.
JOB_FIELDS = ("input", "style", "style_file", "preset", "size", "iters", "first_iters", "style_weight", "flow",
              "preserve_colors")


async def _only_known_fields(request: Request) -> None:
    """Refuse a job whose form has a field the API does not take, or one field twice (which would keep either)."""
    names = [name for name, _ in (await request.form()).multi_items()]  # parsed once: the route reads it again
    for name in names:
        if name not in JOB_FIELDS:
            shown = shortened(name, 40)
            raise ApiError(422, f"unknown field {shown!r}; the fields are {', '.join(JOB_FIELDS)}", shown)
        if names.count(name) > 1:
            raise ApiError(422, f"field {name!r} is given {names.count(name)} times; give it once", name)


def _add_api(app: FastAPI, settings: ServeSettings, queue: JobQueue, factory: JobFactory) -> None:
    _add_job_routes(app, settings, queue, factory)
    _add_catalogue(app, settings, queue)
    _add_health(app, settings, queue, factory)


def _add_job_routes(app: FastAPI, settings: ServeSettings, queue: JobQueue, factory: JobFactory) -> None:
    """Creating a job, following it, fetching its picture and result, cancelling and deleting it."""
    data = DataDir(settings.data)

    @app.post("/api/jobs", status_code=201, response_model=JobOut, responses=_UPLOAD_ERRORS, tags=["jobs"],
              dependencies=[Depends(_only_known_fields)])
    def create_job(
        input: Annotated[UploadFile, File(description="the content: a video, or an image")],
        style: Annotated[str | None, Form(description="a built-in style's name (GET /api/styles)")] = None,
        style_file: Annotated[UploadFile | None, File(description="or a style picture of your own")] = None,
        preset: Annotated[str | None, Form(description="fast, balanced, quality or demo")] = None,
        size: Annotated[str | None, Form(description="long side of the render in pixels")] = None,
        iters: Annotated[str | None, Form(description="iterations per frame")] = None,
        first_iters: Annotated[str | None, Form(description="iterations of fresh frames and of an image")] = None,
        style_weight: Annotated[str | None, Form(description=_STYLE_WEIGHT_HELP)] = None,
        flow: Annotated[str | None, Form(description="none, dis, farneback or dis+farneback")] = None,
        preserve_colors: Annotated[str | None, Form(description="keep the content's colours: true or false")] = None,
    ) -> dict[str, Any]:
        """Upload a video or an image plus a style and options; the job is checked completely and queued.
        Refused with 507 while the server's disk is under its floor, and with 429 (and Retry-After) while its
        queue is full."""
        form = {"preset": preset, "size": size, "iters": iters, "first_iters": first_iters,
                "style_weight": style_weight, "flow": flow, "preserve_colors": preserve_colors}
        return job_out(factory.create(input, style, style_file, form))

    @app.get("/api/jobs", response_model=list[JobOut], tags=["jobs"])
    async def list_jobs(state: Annotated[str | None, Query(description="only jobs in this state")] = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Jobs, newest first."""
        if state is not None and state not in STATES:
            raise ApiError(422, f"state must be one of {', '.join(STATES)} (got {shortened(state)!r})", "state")
        return [job_out(job) for job in queue.jobs(state, limit)]

    @app.get("/api/jobs/{job_id}", response_model=JobOut, responses=_ERRORS, tags=["jobs"])
    async def get_job(job_id: str) -> dict[str, Any]:
        """A job's state, frame N of M, ETA and error."""
        return job_out(_get_job(queue, job_id))

    @app.get("/api/jobs/{job_id}/events", responses=_ERRORS, tags=["jobs"],
             response_class=StreamingResponse)
    async def job_events(job_id: str) -> StreamingResponse:
        """Server-sent events: `progress` (the job as JSON) whenever it changes, `end` when it is over."""
        _get_job(queue, job_id)
        return StreamingResponse(_event_stream(queue, job_id, app.state.stopping), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/jobs/{job_id}/preview", responses={**_ERRORS, 200: {"content": {"image/jpeg": {}}}},
             response_class=Response, tags=["jobs"])
    async def job_preview(job_id: str) -> Response:
        """The newest finished frame as a JPEG, while the job renders and after."""
        job = _get_job(queue, job_id)
        try:  # read whole: the file is replaced while we serve it, and a small read is quicker than a stream
            picture = (data.job(job_id) / PREVIEW).read_bytes()
        except FileNotFoundError:
            raise ApiError(404, "no frame is finished yet" if job.state in ("queued", "running") else
                           f"job {job_id} ({job.state}) has no picture") from None
        return Response(picture, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    # HEAD too (download managers and `curl -I` ask for the size before they fetch), out of the schema: one
    # operation there, not two of the same name.
    @app.head("/api/jobs/{job_id}/result", include_in_schema=False)
    @app.get("/api/jobs/{job_id}/result", responses={**_ERRORS, 200: {"content": {"video/mp4": {}}}},
             response_class=FileResponse, tags=["jobs"])
    async def job_result(job_id: str, download: bool = False) -> FileResponse:
        """The finished video (MP4) or image (PNG); `download=true` asks the browser to save it."""
        job = _get_job(queue, job_id)
        if job.state != "done":
            raise ApiError(409, f"job {job_id} is {job.state}, not done")
        path = data.job(job_id) / job.params["output"]
        if not path.is_file():
            raise ApiError(410, f"the result of job {job_id} is no longer on the server")
        media = "video/mp4" if job.kind == "video" else "image/png"
        return FileResponse(path, media_type=media, filename=f"vidstyle-{job_id}{path.suffix}",
                            content_disposition_type="attachment" if download else "inline")

    # Not async: its write may wait on the database's lock, and FastAPI runs a plain function on its thread pool
    # rather than holding up every other request meanwhile.
    @app.post("/api/jobs/{job_id}/cancel", response_model=JobOut, responses=_ERRORS, tags=["jobs"])
    def cancel_job(job_id: str) -> dict[str, Any]:
        """A queued job is cancelled at once; a running one stops within a second (state becomes cancelled).
        A job that already ended done or failed cannot be (409); cancelling a cancelled job again is harmless."""
        _get_job(queue, job_id)
        job = queue.cancel(job_id)
        if job is None:
            raise ApiError(404, f"no job {shortened(job_id, 40)!r}")
        if job.state in ("done", "failed"):
            raise ApiError(409, f"job {job_id} has already ended ({job.state}): there is nothing to cancel")
        if job.state == "cancelled":  # not running (a running one is only flagged): its worker cannot be writing
            drop_checkpoints(data.job(job_id))
        return job_out(job)

    @app.delete("/api/jobs/{job_id}", status_code=204, response_class=Response, responses=_ERRORS, tags=["jobs"])
    def delete_job(job_id: str) -> Response:
        """Delete a job and its files; a running job must be cancelled first (409)."""
        _get_job(queue, job_id)
        state = queue.delete(job_id)
        if state is None:
            raise ApiError(404, f"no job {shortened(job_id, 40)!r}")
        if state == "running":
            if queue.cancel_requested(job_id):  # cancelled, and its worker has yet to stop at its next iteration
                raise ApiError(409, f"job {job_id} is stopping after its cancel: delete it once it has stopped")
            raise ApiError(409, f"job {job_id} is running: cancel it first")
        remove_ours(data.job(job_id))
        return Response(status_code=204)


def _add_catalogue(app: FastAPI, settings: ServeSettings, queue: JobQueue) -> None:
    """The gallery of finished jobs, and the built-in styles with their thumbnails."""
    data = DataDir(settings.data)
    thumbnails: dict[str, bytes] = {}

    @app.get("/api/gallery", response_model=list[GalleryItem], tags=["gallery"])
    async def gallery(limit: Annotated[int, Query(ge=1, le=100)] = 12) -> list[dict[str, Any]]:
        """The latest creations: finished jobs that have a picture, the most recently finished first."""
        # A job whose picture could not be written (a full disk), or whose result has gone since (removed by hand),
        # would be a broken image or link on the page; such jobs are rare, so a few more than asked for are read to
        # fill the page without them.
        pictured = (j for j in queue.jobs("done", 2 * limit)
                    if (data.job(j.id) / PREVIEW).is_file() and (data.job(j.id) / j.params["output"]).is_file())
        return [{"id": j.id, "kind": j.kind, "finished": j.finished, "preview": f"/api/jobs/{j.id}/preview",
                 "result": f"/api/jobs/{j.id}/result", "page": f"/jobs/{j.id}"}
                for j in itertools.islice(pictured, limit)]

    @app.get("/api/styles", response_model=list[StyleOut], tags=["styles"])
    async def styles() -> list[dict[str, str]]:
        """The built-in style paintings, by the name a job's `style` field takes."""
        return [{"name": n, "thumbnail": f"/api/styles/{n}/thumbnail"} for n in builtin_style_names()]

    @app.get("/api/styles/{name}/thumbnail", response_class=Response, responses=_ERRORS, tags=["styles"])
    def style_thumbnail(name: str) -> Response:
        """A small JPEG of a built-in style painting."""
        path = builtin_style(name) if name in builtin_style_names() else None
        if path is None:
            raise ApiError(404, f"no built-in style {name!r}")
        if name not in thumbnails:
            rgb = read_image(path, "style image")
            scale = THUMBNAIL_SIDE / max(rgb.shape[:2])
            thumbnails[name] = encode_image(resize_rgb(rgb, (round(rgb.shape[1] * scale),
                                                             round(rgb.shape[0] * scale))), ".jpg")
        return Response(thumbnails[name], media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})


def _add_health(app: FastAPI, settings: ServeSettings, queue: JobQueue, factory: JobFactory) -> None:
    # HEAD too, out of the schema: uptime monitors often ask with it.
    @app.head("/api/health", include_in_schema=False)
    @app.get("/api/health", tags=["service"])
    async def health() -> dict[str, Any]:
        """Jobs by state, and the service's settings a client may need. `workers_failing` names the workers that
        keep dying or hanging as they start (a GPU gone, say): queued jobs wait for them, retried less and less
        often. `worker_deaths` counts each slot's worker processes that died since the start, on jobs too (a crash,
        the out-of-memory killer, a worker replaced after an unexpected error, which fails its job).
        `disk_free` (bytes) under `min_free` means uploads are refused (507); `max_queued` queued jobs, 429; a
        render showing no sign of life for `stall_timeout` seconds fails (null where no workers run here)."""
        pool = factory.pool
        return {"version": __version__, "jobs": queue.counts(), "workers": settings.workers,
                "workers_failing": pool.failing() if pool is not None else [],
                "worker_deaths": dict(pool.deaths) if pool is not None else {}, "device": settings.device,
                "max_upload": settings.max_upload, "disk_free": free_disk(settings.data),
                "min_free": settings.min_free, "max_queued": settings.max_queued,
                "stall_timeout": pool.stall_timeout if pool is not None else None, "presets": preset_names()}


async def _event_stream(queue: JobQueue, job_id: str, stopping: threading.Event) -> AsyncIterator[str]:
    """A job's progress until it ends, or until the server stops (a browser's EventSource then tries again)."""
    last: str | None = None
    quiet = 0.0
    while not stopping.is_set():
        job = queue.get(job_id)
        if job is None:
            yield "event: end\ndata: {\"state\": \"deleted\"}\n\n"
            return
        text = json.dumps(job_out(job))
        if text != last:
            yield f"event: progress\ndata: {text}\n\n"
            last, quiet = text, 0.0
        elif quiet >= 15:
            yield ": keep-alive\n\n"  # proxies close a stream that says nothing for long
            quiet = 0.0
        if job.state in FINAL_STATES:
            yield f"event: end\ndata: {text}\n\n"
            return
        await asyncio.sleep(SSE_INTERVAL)
        quiet += SSE_INTERVAL


def _add_pages(app: FastAPI, queue: JobQueue) -> None:
    @app.head("/", include_in_schema=False)
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.head("/jobs/{job_id}", include_in_schema=False)
    @app.get("/jobs/{job_id}", include_in_schema=False)
    async def job_page(job_id: str) -> FileResponse:
        _get_job(queue, job_id)
        return FileResponse(STATIC / "job.html", media_type="text/html")
