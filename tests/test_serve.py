"""`vidstyle serve`: the HTTP API against a real server process on a free local port, with real tiny media.

Renders are 64 px with one or two iterations; the server runs as `python -m vidstyle serve`, so that killing it
with -9 in the restart test is a real kill.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from conftest import ffmpeg, reads_animated_webp

from vidstyle.io.probe import probe_video

httpx = pytest.importorskip("httpx", reason="the serve tests need httpx (pip install -e '.[test]')")
pytest.importorskip("fastapi", reason="vidstyle serve needs the serve extra (pip install -e '.[test]')")

from vidstyle.serve.layout import OURS  # noqa: E402 - after the skip, as the server's own modules need FastAPI

TINY = {"size": "64", "iters": "1", "first_iters": "2", "flow": "none", "preset": "fast"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """`python -m vidstyle serve` on a free port of 127.0.0.1, waited for until it answers."""

    def __init__(self, data: Path, *extra: str, token: str | None = None, token_in_env: bool = False) -> None:
        self.data, self.extra, self.token, self.token_in_env = data, extra, token, token_in_env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> ServeProcess:
        args = [sys.executable, "-m", "vidstyle", "serve", "--port", str(self.port), "--data", str(self.data),
                "--device", "cpu", *self.extra]
        env = dict(os.environ)
        env.pop("VIDSTYLE_TOKEN", None)
        if self.token and self.token_in_env:
            env["VIDSTYLE_TOKEN"] = self.token
        elif self.token:
            args += ["--token", self.token]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vidstyle serve exited: {self.process.stdout.read()}")  # type: ignore[union-attr]
            try:
                if self.client.get("/api/health").status_code in (200, 401):
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("vidstyle serve did not answer within 90 s")

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        return _children(self.process.pid)

    def kill(self) -> None:
        """kill -9: no clean-up of any kind in the server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.client.close()

    def submit(self, content: Path, style: str = "starry-night", **options: str | list[str]) -> httpx.Response:
        with open(content, "rb") as fh:
            return self.client.post("/api/jobs", data={"style": style, **options},
                                    files={"input": (content.name, fh, "application/octet-stream")})

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not get there in {timeout} s: {self.job(job_id)}")

    def wait_final(self, job_id: str, timeout: float = 240) -> dict[str, Any]:
        return self.wait(job_id, lambda j: j["state"] in ("done", "failed", "cancelled"), timeout)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="session")
def clip(media: Path) -> Path:
    """5 frames of ffmpeg's test picture at 64x48, with audio."""
    out = media / "serve_clip.mp4"
    if not out.exists():
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.5", "-f", "lavfi", "-i",
               "sine=frequency=440:duration=0.5", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out))
    return out


@pytest.fixture(scope="session")
def long_clip(media: Path) -> Path:
    """10 s of the test picture at 64x48: more frames than a pipe holds, so the render's decoder is still running
    while the first frames render."""
    out = media / "serve_long_clip.mp4"
    if not out.exists():
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=10", "-c:v", "libx264", "-pix_fmt",
               "yuv420p", str(out))
    return out


@pytest.fixture(scope="session")
def photo(media: Path, images: tuple[np.ndarray, np.ndarray]) -> Path:
    out = media / "serve_photo.png"
    cv2.imwrite(str(out), cv2.cvtColor(images[0], cv2.COLOR_RGB2BGR))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    served = ServeProcess(tmp_path_factory.mktemp("serve"), "--max-upload", "1MB").start()
    yield served
    served.stop()


def test_video_job_end_to_end(server: ServeProcess, clip: Path) -> None:
    response = server.submit(clip, **TINY)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] in ("queued", "running") and job["kind"] == "video"
    with server.client.stream("GET", job["urls"]["events"]) as stream:
        events = [line for line in stream.iter_lines() if line.startswith("event:")]
    assert "event: progress" in events and events[-1] == "event: end"
    done = server.job(job["id"])
    assert done["state"] == "done", done
    assert (done["frame"], done["frames"], done["progress"]) == (5, 5, 1.0)
    result = server.client.get(done["urls"]["result"])
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    head = server.client.head(done["urls"]["result"])
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(result.content)) and head.headers["accept-ranges"] == "bytes"
    out = server.data / "result.mp4"
    out.write_bytes(result.content)
    assert probe_video(out).frame_count == 5
    preview = server.client.get(f"/api/jobs/{job['id']}/preview")
    assert preview.status_code == 200 and preview.content[:3] == b"\xff\xd8\xff"
    assert job["id"] in [j["id"] for j in server.client.get("/api/jobs").json()]
    assert job["id"] in [j["id"] for j in server.client.get("/api/jobs?state=done").json()]
    page = server.client.head(f"/jobs/{job['id']}")  # a link checker asks with HEAD
    assert page.status_code == 200 and page.content == b"" and page.headers["content-type"].startswith("text/html")
    bogus = server.client.get("/api/jobs?state=finished")
    assert bogus.status_code == 422 and bogus.json()["field"] == "state"
    assert job["id"] in [g["id"] for g in server.client.get("/api/gallery").json()]
    (server.data / "jobs" / job["id"] / "result.mp4").unlink()  # removed by hand on the server
    gone = server.client.get(done["urls"]["result"])
    assert gone.status_code == 410 and "no longer on the server" in gone.json()["detail"]
    assert job["id"] not in [g["id"] for g in server.client.get("/api/gallery").json()], "no broken link shown"
    late = server.client.post(f"/api/jobs/{job['id']}/cancel")
    assert late.status_code == 409 and "already ended (done)" in late.json()["detail"]
    assert server.job(job["id"])["state"] == "done"
    assert server.client.delete(f"/api/jobs/{job['id']}").status_code == 204
    assert server.client.get(f"/api/jobs/{job['id']}").status_code == 404
    assert server.client.head(f"/jobs/{job['id']}").status_code == 404
    assert not (server.data / "jobs" / job["id"]).exists()


def test_image_job_and_progress_fields(server: ServeProcess, photo: Path) -> None:
    job = server.submit(photo, **TINY).json()
    assert job["kind"] == "image"
    done = server.wait_final(job["id"])
    assert done["state"] == "done" and done["urls"]["result"], done
    result = server.client.get(done["urls"]["result"])
    assert result.headers["content-type"] == "image/png"
    rgb = cv2.imdecode(np.frombuffer(result.content, np.uint8), cv2.IMREAD_COLOR)
    assert rgb.shape == (36, 64, 3)


def test_cancel_queued_and_running_jobs(server: ServeProcess, clip: Path) -> None:
    slow = server.submit(clip, **{**TINY, "iters": "200", "first_iters": "200"}).json()
    queued = server.submit(clip, **TINY).json()
    assert server.client.post(f"/api/jobs/{queued['id']}/cancel").json()["state"] == "cancelled"
    server.wait(slow["id"], lambda j: j["state"] == "running")
    refused = server.client.delete(f"/api/jobs/{slow['id']}")
    assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]
    folder = server.data / "jobs" / slow["id"]
    deadline = time.monotonic() + 60
    while not (folder / "work" / "manifest.json").is_file():
        assert time.monotonic() < deadline, "the running job made no work directory"
        time.sleep(0.05)
    assert server.client.post(f"/api/jobs/{slow['id']}/cancel").json()["cancel_requested"]
    assert server.wait_final(slow["id"], timeout=60)["state"] == "cancelled"
    # Nothing resumes a cancelled job: its checkpoints go as it ends (just after its state is recorded), its input
    # stays for its page until DELETE.
    deadline = time.monotonic() + 30
    while (folder / "work").exists():
        assert time.monotonic() < deadline, "the cancelled job's checkpoints stayed"
        time.sleep(0.05)
    assert any(p.name.startswith("input") for p in folder.iterdir())
    assert server.job(queued["id"])["started"] is None  # cancelled while queued: never ran
    assert server.client.post(f"/api/jobs/{queued['id']}/cancel").json()["state"] == "cancelled"  # again: harmless
    for job in (slow, queued):
        assert server.client.delete(f"/api/jobs/{job['id']}").status_code == 204


def test_openapi_documents_the_api(server: ServeProcess) -> None:
    paths = server.client.get("/openapi.json").json()["paths"]
    for path in ("/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/events", "/api/jobs/{job_id}/preview",
                 "/api/jobs/{job_id}/result", "/api/jobs/{job_id}/cancel", "/api/gallery", "/api/styles"):
        assert path in paths
    page = server.client.get("/")
    assert page.status_code == 200 and "latest creations" in page.text
    styles = server.client.get("/api/styles").json()
    assert styles[0]["name"] == "starry-night"
    assert server.client.get(styles[0]["thumbnail"]).headers["content-type"] == "image/jpeg"


BAD_OPTIONS = [
    ({"style": "no-such-painting"}, 422, "style", "unknown style"),
    ({"style": ""}, 422, "style", "choose a style"),
    ({"size": "abc"}, 422, "size", "whole number"),
    ({"size": "5"}, 422, "size", "between 16"),
    ({"iters": "0"}, 422, "iters", "between 1"),
    ({"style_weight": "-1"}, 422, "style_weight", "between 0"),
    ({"flow": "warp"}, 422, "flow", "must be one of"),
    ({"preserve_colors": "maybe"}, 422, "preserve_colors", "true or false"),
    ({"preset": "../../etc/passwd"}, 422, "preset", "preset must be one of"),
    ({"size": "100000"}, 422, "size", "between 16"),
    ({"iter": "3"}, 422, "iter", "unknown field 'iter'"),  # a misspelt option is never dropped silently
    ({"iters": "9" * 400}, 422, "iters", "must be between 1 and"),  # too large for a float: was a 500
    ({"seed": "3"}, 422, "seed", "unknown field 'seed'"),  # it draws only init random's noise, which no job uses
    ({"size": "3_2"}, 422, "size", "whole number"),  # int() takes it as 32
    ({"style_weight": "\u0663"}, 422, "style_weight", "a number"),  # and float() an Arabic-Indic 3
    ({"size": ["64", "128"]}, 422, "size", "given 2 times"),
]


@pytest.mark.parametrize(("options", "status", "field", "words"), BAD_OPTIONS,
                         ids=[f"{next(iter(o))}={str(next(iter(o.values())))[:12]}" for o, *_ in BAD_OPTIONS])
def test_bad_options_are_refused_at_once(server: ServeProcess, clip: Path, options: dict[str, Any], status: int,
                                         field: str, words: str) -> None:
    before = server.client.get("/api/health").json()["jobs"]
    response = server.submit(clip, **{**TINY, **options})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field and words in body["detail"], body
    assert server.client.get("/api/health").json()["jobs"] == before  # nothing queued
    assert not any((server.data / "uploads").iterdir())  # nothing left behind


def _video_of_an_unknown_codec(folder: Path) -> bytes:
    """An AVI whose codec's tag no ffmpeg knows: MPEG-4 frames under the tag QQQQ."""
    known = folder / "mpeg4.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.5", "-c:v", "mpeg4", str(known))
    return known.read_bytes().replace(b"FMP4", b"QQQQ")


def test_bad_uploads_are_refused(server: ServeProcess, tmp_path: Path, starry: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n")
    before = server.client.get("/api/health").json()["jobs"]
    response = server.submit(text, **TINY)
    assert response.status_code == 415 and response.json()["field"] == "input", response.text
    assert "not a video or image" in response.json()["detail"]
    whole = tmp_path / "whole.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=2", "-c:v", "libx264", str(whole))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    response = server.submit(cut, **TINY)  # the repair the command line names runs on the server's copy: not here
    assert response.status_code == 415 and response.json()["detail"] == (
        "not a video or image vidstyle can read: the upload is truncated or damaged (ffmpeg: file ended "
        "prematurely); its readable part, copied with ffmpeg -c copy into a new file, can be uploaded"), response.text
    unknown = tmp_path / "unknown_codec.avi"  # its packets copy, none decodes: it failed only when its turn came
    unknown.write_bytes(_video_of_an_unknown_codec(tmp_path))
    response = server.submit(unknown, **TINY)
    assert response.status_code == 415 and response.json()["detail"] == (
        "not a video or image vidstyle can read: the upload's video is in a format this ffmpeg cannot decode (tagged "
        "'QQQQ'): convert it with a tool that reads it, or use an ffmpeg that does (IMAGEIO_FFMPEG_EXE names one)"), \
        response.text
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(2_000_000))  # the server's --max-upload is 1MB
    response = server.submit(big, **TINY)
    assert response.status_code == 413 and response.json() == {
        "detail": "upload too large: a request's files may hold 1 MB together (the server's max_upload setting)",
        "field": None}
    with open(text, "rb") as style:
        response = server.client.post("/api/jobs", data=TINY, files={"input": ("a.png", starry.read_bytes()),
                                                                      "style_file": ("s.jpg", style)})
    assert response.status_code == 415 and response.json()["field"] == "style_file", response.text
    response = server.client.post("/api/jobs", data={"style": "starry-night", **TINY})
    assert response.status_code == 422 and response.json()["field"] == "input"
    response = server.client.post("/api/jobs", data={"style": "starry-night", "input": "clip.mp4", **TINY})
    assert response.status_code == 422 and response.json() == {
        "detail": "input: must be a file upload, not a text field", "field": "input"}, response.text
    dot = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes()
    response = server.client.post("/api/jobs", data=TINY, files={"input": ("a.png", starry.read_bytes()),
                                                                  "style_file": ("dot.png", dot)})
    assert response.status_code == 422 and response.json()["field"] == "style_file", response.text
    assert "at least 16 pixels" in response.json()["detail"]
    solid = cv2.imencode(".png", np.full((64, 64, 3), 200, np.uint8))[1].tobytes()
    response = server.client.post("/api/jobs", data=TINY, files={"input": ("a.png", starry.read_bytes()),
                                                                  "style_file": ("solid.png", solid)})
    assert response.status_code == 422 and response.json() == {
        "detail": "the style picture is one flat colour (its pixels vary by 0.0 levels): a painting needs strokes "
                  "and colours to paint with", "field": "style_file"}, response.text
    response = server.client.post("/api/jobs", data=TINY, files={"input": ("a.png", starry.read_bytes()),
                                                                  "style_file": ("blank.png", b"")})
    assert response.status_code == 422 and response.json()["field"] == "style_file", response.text
    assert "style upload is empty" in response.json()["detail"]
    # A few hundred KB that would decode to 243 MB (a few MB can reach gigabytes): refused from its header.
    stripes = np.zeros((9000, 9000, 3), np.uint8)
    stripes[::50] = 200
    bomb = cv2.imencode(".png", stripes, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    for field in ("input", "style_file"):
        files = {"input": ("a.png", starry.read_bytes()), field: ("big.png", bomb)}
        response = server.client.post("/api/jobs", data=TINY if field == "style_file" else {"style": "starry-night",
                                                                                           **TINY}, files=files)
        assert response.status_code == 422 and response.json()["field"] == field, response.text
        assert "more than 67,108,864 pixels (8192x8192)" in response.json()["detail"], response.text
    both = {"input": ("a.png", starry.read_bytes()), "style_file": ("s.jpg", starry.read_bytes())}
    response = server.client.post("/api/jobs", data={"style": "starry-night", **TINY}, files=both)
    assert response.status_code == 422 and "not both" in response.json()["detail"], response.text
    assert server.client.get("/api/health").json()["jobs"] == before
    assert not any((server.data / "uploads").iterdir())


def test_an_upload_that_points_at_the_servers_files_is_refused(server: ServeProcess, clip: Path,
                                                                tmp_path: Path) -> None:
    """A playlist names files to read: uploaded, it would render a video from the server's disk. A DASH manifest
    read any video by its absolute path (and told a client whether one exists); no input is opened as a format that
    names other files, and each is refused in a line that says why (not "Last message repeated 1 times")."""
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:{clip}\n#EXT-X-ENDLIST\n"
    dash = ('<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'mediaPresentationDuration="PT1S" minBufferTime="PT1S" '
            'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">\n<Period><AdaptationSet mimeType="video/mp4">'
            '<Representation id="1" bandwidth="1000"><BaseURL>{}</BaseURL></Representation></AdaptationSet>'
            '</Period></MPD>\n')
    uploads = {"list.m3u8": hls, "list.ts": hls, "list.mp4": f"ffconcat version 1.0\nfile '{clip}'\n",
               "mpd.bin": dash.format(clip), "none.bin": dash.format(tmp_path / "none.mp4")}
    for name, text in uploads.items():
        response = server.client.post("/api/jobs", data={"style": "starry-night", **TINY},
                                      files={"input": (name, text.encode())})
        assert response.status_code == 415 and response.json()["field"] == "input", (name, response.text)
        assert "repeated" not in response.json()["detail"], response.text
        if name.endswith(".bin"):  # the same answer whether the file it names exists or not
            assert response.json()["detail"] == ("not a video or image vidstyle can read: the upload is a DASH "
                                                 "manifest, which names other files or streams to read; vidstyle "
                                                 "reads only a video file itself: give it the video this one names "
                                                 "(its parts joined into one file)"), response.text
    assert not any((server.data / "uploads").iterdir())


def test_chunked_upload_over_the_limit_is_refused(server: ServeProcess) -> None:
    """No Content-Length to check first: the body is counted as it arrives."""

    def chunks() -> Iterator[bytes]:
        yield b'--x\r\nContent-Disposition: form-data; name="input"; filename="a.mp4"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 65536
        yield b"\r\n--x--\r\n"

    response = server.client.post("/api/jobs", content=chunks(),
                                  headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413, response.text


def test_health_reports_the_disk_and_the_limits(server: ServeProcess) -> None:
    health = server.client.get("/api/health").json()
    assert health["min_free"] == 2 * 10**9, "2 GB: more than twice this server's 1MB --max-upload"
    assert health["max_queued"] == 100
    assert health["stall_timeout"] == 600, "seconds without a sign of life before a render is ended"
    assert health["workers_failing"] == [] and health["worker_deaths"] == {"slot-0": 0}, health
    assert 0 < health["disk_free"] <= shutil.disk_usage(server.data).total
    for path in ("/api/health", "/"):  # uptime monitors often ask with HEAD
        assert server.client.head(path).status_code == 200, path


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_uploads_are_refused_while_the_disk_is_under_its_floor(tmp_path: Path, clip: Path) -> None:
    """Refused before the body is read (507), and nothing made: no job, no folder, no file."""
    data = tmp_path / "data"
    floor = shutil.disk_usage(tmp_path).free + 10**12  # above the real free space, whatever else writes meanwhile
    served = ServeProcess(data, "--min-free", str(floor)).start()
    try:
        health = served.client.get("/api/health").json()
        assert health["min_free"] == floor and health["disk_free"] < floor
        before = _tree(data)
        response = served.submit(clip, **TINY)
        assert response.status_code == 507, response.text
        body = response.json()
        assert "short of disk space" in body["detail"] and "(its min_free setting)" in body["detail"], body
        assert body["field"] is None
        assert served.client.get("/api/jobs").json() == []
        assert served.client.get("/api/health").json()["jobs"] == dict.fromkeys(health["jobs"], 0)
        assert _tree(data) == before
    finally:
        served.stop()


def test_an_upload_that_takes_the_disk_under_its_floor_is_refused_and_its_files_removed(
        tmp_path: Path, bunny_short: Path) -> None:
    """The check after the upload is saved (the one before it is read is the Guard's): the upload's own folder is
    removed with the refusal, and nothing else under --data is touched."""
    from starlette.datastructures import UploadFile

    from vidstyle.serve.app import ApiError, JobFactory, ServeSettings
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    theirs = data.uploads / ("b" * 32)  # named like the server's own folders, but not made by it
    theirs.mkdir()
    (theirs / "keep.txt").write_text("not vidstyle's")
    queue = JobQueue(data.database)
    floor = shutil.disk_usage(data.root).free + 10**12
    factory = JobFactory(ServeSettings(data.root, 1 << 30, None, "cpu", 1, min_free=floor), queue, None)
    with open(bunny_short, "rb") as clip, pytest.raises(ApiError) as refused:
        factory.create(UploadFile(clip, filename="clip.mp4"), "starry-night", None, dict(TINY))
    assert refused.value.status == 507 and "(its min_free setting)" in refused.value.message
    assert list(data.uploads.iterdir()) == [theirs] and (theirs / "keep.txt").read_text() == "not vidstyle's"
    assert list(data.jobs.iterdir()) == [] and queue.jobs() == []


def test_uploads_are_refused_while_the_queue_is_full(tmp_path: Path, clip: Path) -> None:
    """429 with Retry-After once --max-queued jobs wait; jobs running do not count."""
    served = ServeProcess(tmp_path / "data", "--max-queued", "1").start()
    try:
        slow = served.submit(clip, **{**TINY, "iters": "500", "first_iters": "500"}).json()
        served.wait(slow["id"], lambda j: j["state"] == "running")
        waiting = served.submit(clip, **TINY)
        assert waiting.status_code == 201, waiting.text
        response = served.submit(clip, **TINY)
        assert response.status_code == 429, response.text
        assert "(the server's max_queued setting)" in response.json()["detail"] and response.json()["field"] is None
        assert int(response.headers["retry-after"]) > 0
        ids = {slow["id"], waiting.json()["id"]}
        assert {job["id"] for job in served.client.get("/api/jobs").json()} == ids
        assert {folder.name for folder in (served.data / "jobs").iterdir()} == ids
        assert not any((served.data / "uploads").iterdir())
        for job in (waiting.json(), slow):
            served.client.post(f"/api/jobs/{job['id']}/cancel")
    finally:
        served.stop()


def test_uploads_checked_at_once_are_held_to_the_queue_limit(tmp_path: Path, bunny_short: Path) -> None:
    """The limit is checked before an upload is read, and again as it is queued: another upload queued while this
    one was read and checked fills the queue, so this one is refused (429, Retry-After) and its folder removed."""
    from starlette.datastructures import UploadFile

    from vidstyle.serve.app import ApiError, JobFactory, ServeSettings
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue, new_job_id

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    factory = JobFactory(ServeSettings(data.root, 1 << 30, None, "cpu", 1, max_queued=2), queue, None)
    with open(bunny_short, "rb") as clip:
        first = factory.create(UploadFile(clip, filename="clip.mp4"), "starry-night", None, dict(TINY))
    queue.add(new_job_id(), "video", {})  # the other upload, queued in the meantime
    with open(bunny_short, "rb") as clip, pytest.raises(ApiError) as refused:
        factory.create(UploadFile(clip, filename="clip.mp4"), "starry-night", None, dict(TINY))
    assert refused.value.status == 429 and "(the server's max_queued setting)" in refused.value.message
    assert refused.value.headers is not None and int(refused.value.headers["retry-after"]) > 0
    assert queue.count("queued") == 2
    assert [folder.name for folder in data.jobs.iterdir()] == [first.id] and not any(data.uploads.iterdir())


def test_upload_file_names_are_never_paths(server: ServeProcess, clip: Path, photo: Path) -> None:
    with open(clip, "rb") as fh, open(photo, "rb") as style:
        response = server.client.post("/api/jobs", data={**TINY, "iters": "500", "first_iters": "500"},
                                      files={"input": ("../../../escape.mp4", fh),
                                             "style_file": ("/tmp/../../style-escape.png", style)})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    server.client.post(f"/api/jobs/{job_id}/cancel")
    folder = server.data / "jobs" / job_id
    assert {"input.mp4", "style.png"} <= {p.name for p in folder.iterdir()}
    # A name followed as a path lands in data/, in one of its ancestors (../ from jobs/<id>/ or the upload's staging
    # folder) or at the root ("/tmp/../../" resolves to "/").
    assert not list(server.data.rglob("*escape*"))
    assert not [folder for folder in server.data.parents
                if (folder / "escape.mp4").exists() or (folder / "style-escape.png").exists()]
    server.wait_final(job_id, timeout=60)
    assert server.client.delete(f"/api/jobs/{job_id}").status_code == 204


@pytest.mark.parametrize("method_path", ["GET /api/jobs/{}", "GET /api/jobs/{}/preview", "GET /api/jobs/{}/result",
                                         "GET /api/jobs/{}/events", "POST /api/jobs/{}/cancel",
                                         "DELETE /api/jobs/{}", "GET /jobs/{}"])
@pytest.mark.parametrize("job_id", ["0" * 32, "nope", "..%2F..%2Fvidstyle.db"])
def test_unknown_job_is_404(server: ServeProcess, method_path: str, job_id: str) -> None:
    method, path = method_path.split()
    response = server.client.request(method, path.format(job_id))
    assert response.status_code == 404
    assert "detail" in response.json()


def test_another_sites_page_cannot_queue_or_delete_jobs_nor_reach_the_server_by_another_name(
        server: ServeProcess, clip: Path) -> None:
    """Without a token a web page's script can send a form to the server (no preflight for a form's POST): its
    Origin gives it away. A server on a loopback address without a token answers only to the names of this machine,
    so that a page cannot reach it through a name of its own that resolves there (DNS rebinding)."""
    before = server.client.get("/api/health").json()["jobs"]
    with open(clip, "rb") as fh:
        response = server.client.post("/api/jobs", data={"style": "starry-night", **TINY},
                                      files={"input": (clip.name, fh)}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403 and "another site" in response.json()["detail"], response.text
    assert server.client.delete("/api/jobs/" + "0" * 32, headers={"Origin": "null"}).status_code == 403
    assert server.client.get("/api/health").json()["jobs"] == before
    same_site = server.client.get("/api/jobs", headers={"Origin": "http://evil.example"})
    assert same_site.status_code == 200, "reading is the browser's to allow (no CORS headers are sent)"
    own = server.client.delete("/api/jobs/" + "0" * 32, headers={"Origin": server.url})
    assert own.status_code == 404, "the server's own page may"
    rebound = server.client.get("/api/jobs", headers={"Host": "evil.example"})
    assert rebound.status_code == 421 and "127.0.0.1" in rebound.json()["detail"]
    assert server.client.get("/api/jobs", headers={"Host": f"localhost:{server.port}"}).status_code == 200


def test_token_is_required_on_every_request(tmp_path: Path) -> None:
    served = ServeProcess(tmp_path / "data", token="s3cret-token-123").start()
    try:
        anonymous = httpx.Client(base_url=served.url, timeout=30)
        for path in ("/", "/api/jobs", "/api/health", "/openapi.json", "/static/app.js"):
            response = anonymous.get(path)
            assert response.status_code == 401 and "bearer token" in response.json()["detail"], path
            assert "in a browser, open /?token=<token> once" in response.json()["detail"], "the way a page gets in"
        wrong = anonymous.get("/api/jobs", headers={"Authorization": "Bearer wrong-token-000"})
        assert wrong.status_code == 401
        assert served.client.get("/api/jobs").status_code == 200
        visit = anonymous.get("/?token=s3cret-token-123")  # a browser's way in: the token becomes a cookie
        assert visit.status_code == 303 and "HttpOnly" in visit.headers["set-cookie"]
        assert visit.headers["location"] == "/"
        assert anonymous.get("/api/jobs").status_code == 200
        kept = httpx.get(f"{served.url}/api/jobs?limit=1&token=s3cret-token-123", timeout=30)
        assert kept.status_code == 303 and kept.headers["location"] == "/api/jobs?limit=1", "the rest of the query"
        # Lax, not Strict: the page a link on another site opens with the token gets the cookie it was just given.
        assert "SameSite=Lax" in visit.headers["set-cookie"]
        # "//evil.example/" as a path would be a link to another site in the Location header.
        import http.client

        raw = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)  # sends the path as it is
        raw.request("GET", "//evil.example/?token=s3cret-token-123")
        sneaky = raw.getresponse()
        assert sneaky.status == 303 and sneaky.getheader("location") == "/evil.example/"
        raw.close()
        # Behind a reverse proxy (the way to serve the public, with a token) the Host and the page's Origin are the
        # proxy's public name: the token, not those, tells this server's clients.
        proxied = {"Host": "public.example", "Origin": "https://public.example"}
        assert served.client.get("/api/jobs", headers=proxied).status_code == 200
        assert served.client.delete("/api/jobs/" + "0" * 32, headers=proxied).status_code == 404
        # Another program's cookie on this host, which Python's strict parser stops at, does not hide the token.
        crumbs = httpx.get(f"{served.url}/api/jobs", timeout=30,
                           headers={"Cookie": 'prefs={"theme":"dark"}; vidstyle_token=s3cret-token-123'})
        assert crumbs.status_code == 200, crumbs.text
        anonymous.close()
    finally:
        served.stop()


def test_the_token_can_come_from_the_environment_out_of_sight_of_ps(tmp_path: Path) -> None:
    served = ServeProcess(tmp_path / "data", token="env-token-456", token_in_env=True).start()
    try:
        assert httpx.get(served.url + "/api/jobs", timeout=30).status_code == 401
        assert served.client.get("/api/jobs").status_code == 200
        assert served.process is not None
        assert b"env-token-456" not in Path(f"/proc/{served.process.pid}/cmdline").read_bytes()
    finally:
        served.stop()


def test_kill_9_mid_render_resumes_and_loses_nothing(tmp_path: Path, bunny_short: Path, clip: Path) -> None:
    """kill -9 the server while a job renders and another waits; a new server resumes the first from its frame
    checkpoints and runs the second once."""
    data = tmp_path / "data"
    first = ServeProcess(data).start()
    try:
        # Enough iterations that the job is still rendering when it is killed, on a fast CPU too.
        rendering = first.submit(bunny_short, **{**TINY, "iters": "8"}).json()
        waiting = first.submit(clip, **TINY).json()
        seen = first.wait(rendering["id"], lambda j: j["frame"] >= 3)["frame"]
        workers = first.worker_pids()
        first.kill()
    finally:
        first.stop()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "a worker outlived its server"
    assert len(list((data / "jobs" / rendering["id"] / "work" / "frames").glob("*.png"))) >= seen
    second = ServeProcess(data).start()
    try:
        resumed = second.wait_final(rendering["id"])
        assert resumed["state"] == "done", resumed
        assert resumed["resumed"] >= seen and resumed["frames"] == 12
        assert second.wait_final(waiting["id"])["state"] == "done"
        rows = _rows(data)
        assert rows[rendering["id"]]["attempts"] == 2 and rows[waiting["id"]]["attempts"] == 1
        out = tmp_path / "out.mp4"
        out.write_bytes(second.client.get(resumed["urls"]["result"]).content)
        assert probe_video(out).frame_count == 12
    finally:
        second.stop()


def _rows(data: Path) -> dict[str, dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(data / "vidstyle.db") as db:
        db.row_factory = sqlite3.Row
        return {r["id"]: dict(r) for r in db.execute("SELECT * FROM jobs")}


def test_a_dead_worker_is_replaced_and_its_job_resumes(tmp_path: Path, clip: Path) -> None:
    served = ServeProcess(tmp_path / "data").start()
    try:
        job = served.submit(clip, **{**TINY, "iters": "8"}).json()  # still rendering when its worker dies
        served.wait(job["id"], lambda j: j["frame"] >= 1)
        for pid in served.worker_pids():
            if "multiprocessing" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGKILL)
        done = served.wait_final(job["id"])
        assert done["state"] == "done" and done["resumed"] >= 1, done
    finally:
        served.stop()


def _workers(served: ServeProcess) -> list[int]:
    return [pid for pid in served.worker_pids()
            if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]


def test_a_render_that_stops_making_progress_is_ended_and_its_worker_replaced(tmp_path: Path, long_clip: Path,
                                                                              clip: Path) -> None:
    """A decoder that stalls (its ffmpeg stopped here, as one stuck on a damaged file or a dead disk is) leaves the
    render waiting for a frame for ever: past --stall-timeout the worker is killed with its ffmpeg, the job fails
    saying why, without counting as a death of its worker, and a new worker renders the next job."""
    served = ServeProcess(tmp_path / "data", "--stall-timeout", "5").start()
    try:
        assert served.client.get("/api/health").json()["stall_timeout"] == 5
        job = served.submit(long_clip, **TINY).json()
        served.wait(job["id"], lambda j: j["frame"] >= 1)
        (worker,) = _workers(served)
        stalled = _children(worker)  # the render's ffmpeg: its decoder and its encoder
        assert stalled
        for pid in stalled:
            os.kill(pid, signal.SIGSTOP)
        failed = served.wait_final(job["id"], timeout=60)
        assert failed["state"] == "failed", failed
        assert failed["error"].startswith("the render stopped making progress for 5 s"), failed
        assert str(served.data) not in failed["error"]
        deadline = time.monotonic() + 5  # the failure is recorded, then the worker and its ffmpeg are killed
        while any(_alive(pid) for pid in (worker, *stalled)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker) and not any(_alive(pid) for pid in stalled), "killed, ffmpeg too"
        assert _rows(served.data)[job["id"]]["deaths"] == 0
        done = served.wait_final(served.submit(clip, **TINY).json()["id"])
        assert done["state"] == "done", done
        assert len(_workers(served)) == 1 and _workers(served) != [worker]
    finally:
        served.stop()


def test_a_cancel_that_a_stuck_render_cannot_heed_ends_its_job(tmp_path: Path, long_clip: Path) -> None:
    """A render looks for a cancel between two iterations; a frozen one never looks. Past CANCEL_GRACE its worker
    is killed, and the job ends cancelled, not counted as a death; the slot gets a new worker."""
    from starlette.datastructures import UploadFile

    from vidstyle.serve.app import JobFactory, ServeSettings
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue
    from vidstyle.serve.worker import WorkerPool, WorkerSpec

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    pool = WorkerPool(queue, [WorkerSpec("w0", data.root, "cpu", gpu=None, threads=None)])
    pool.CANCEL_GRACE = 1.0  # type: ignore[misc] - the same kill, sooner
    with open(long_clip, "rb") as fh:
        job = JobFactory(ServeSettings(data.root, 1 << 30, None, "cpu", 1), queue, pool).create(
            UploadFile(fh, filename="clip.mp4"), "starry-night", None, dict(TINY))
    pool.start()
    try:
        deadline = time.monotonic() + 120
        while (queue.get(job.id).frames_done < 1) and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.2)
        worker = pool.processes["w0"].pid
        assert worker is not None and queue.get(job.id).state == "running"  # type: ignore[union-attr]
        os.kill(worker, signal.SIGSTOP)  # frozen, as a worker whose device stopped answering is
        queue.cancel(job.id)
        while queue.get(job.id).state == "running" and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.2)
        ended = queue.get(job.id)
        assert ended is not None and (ended.state, ended.deaths, ended.error) == ("cancelled", 0, None), ended
        assert not _alive(worker)
        while pool.processes["w0"].pid == worker and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pool.processes["w0"].is_alive() and pool.failing() == []
        assert pool.deaths == {"w0": 0}, "killed by the watchdog, its job ended: not a death"
    finally:
        pool.stop()


@pytest.mark.parametrize("stopped_by, state", [("cancel", "cancelled"), ("shutdown", "queued")])
def test_a_job_stopped_while_its_output_is_locked_ends_as_stopped_not_failed(tmp_path: Path, clip: Path,
                                                                           stopped_by: str, state: str) -> None:
    """A worker waits up to BUSY_RETRY_SECONDS for a lock that a killed server's render may still hold; a cancel
    meanwhile ends the job cancelled (the user's doing) and a server's shutdown puts it back in the queue, neither
    counted as a failure of the job."""

    from vidstyle.io.paths import FileLock, partial_path
    from vidstyle.serve.worker import BUSY_RETRY_SECONDS, WorkerSpec, run_job

    data, queue, job = _claimed_job(tmp_path, clip)
    output = data.job(job.id) / job.params["output"]
    spec, shutdown = WorkerSpec("w0", data.root, "cpu", gpu=None, threads=1), threading.Event()
    with FileLock(partial_path(output), "the test's hold"):
        worker = threading.Thread(target=run_job, args=(queue, spec, job, shutdown, lambda: None))
        worker.start()
        time.sleep(2.0)
        assert worker.is_alive() and queue.get(job.id).state == "running"  # type: ignore[union-attr]
        if stopped_by == "cancel":
            queue.cancel(job.id)
        else:
            shutdown.set()
        worker.join(BUSY_RETRY_SECONDS)
    ended = queue.get(job.id)
    assert not worker.is_alive()
    assert ended is not None and (ended.state, ended.error) == (state, None), ended


def test_a_worker_stopped_by_sigterm_puts_its_job_back_without_counting_a_death(tmp_path: Path, media: Path) -> None:
    """A service manager stops the server by a SIGTERM to its whole process group. A worker that gets one ends its
    render as Ctrl-C does, the job back in the queue; killed outright instead, it would count as a death of the
    job's worker, and the third such stop would fail a job that had done nothing wrong."""
    # 20 frames, not the 5 of `clip`: on a loaded machine a run made the last two frames between two looks at the
    # job, and the third stop came after its render had ended, so it stopped nothing.
    clip = media / "serve_clip_20_frames.mp4"
    if not clip.exists():
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=2", "-c:v", "libx264", "-pix_fmt",
               "yuv420p", str(clip))
    served = ServeProcess(tmp_path / "data").start()
    try:
        job = served.submit(clip, **{**TINY, "iters": "30"}).json()
        frames = served.data / "jobs" / job["id"] / "work" / "frames"
        for stops in range(3):
            # Frames checkpointed, not only made: a stop the moment a frame is made, before it reaches the writer,
            # leaves it to be made again (as it does the frame in progress), while "frame" already counted it.
            served.wait(job["id"], lambda j, n=stops: j["state"] == "running"
                        and len(list(frames.glob("*.png"))) >= n + 1)
            workers = [pid for pid in served.worker_pids()
                       if "multiprocessing" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
            assert workers
            for pid in workers:
                os.kill(pid, signal.SIGTERM)
        done = served.wait_final(job["id"])
        assert done["state"] == "done" and done["resumed"] >= 3, done
    finally:
        served.stop()


def test_a_job_left_unfinished_by_an_older_vidstyle_starts_again_rather_than_failing(tmp_path: Path,
                                                                                     clip: Path) -> None:
    """Checkpoints of another vidstyle version are refused by a resume (frames could differ); a server upgraded with
    a job unfinished renders that job again from its start, since a client could not."""
    data = tmp_path / "data"
    first = ServeProcess(data).start()
    try:
        job = first.submit(clip, **{**TINY, "iters": "30"}).json()
        first.wait(job["id"], lambda j: j["frame"] >= 2)
        first.kill()
    finally:
        first.stop()
    manifest = data / "jobs" / job["id"] / "work" / "manifest.json"
    written = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**written, "version": "0.0.1"}))  # as an older vidstyle left it
    second = ServeProcess(data).start()
    try:
        done = second.wait_final(job["id"])
        assert done["state"] == "done" and done["error"] is None, done
    finally:
        second.stop()


def _claimed_job(tmp_path: Path, clip: Path) -> tuple[Any, Any, Any]:
    """A data folder, its queue and a job of `clip` queued through the upload checks and claimed by worker w0, for
    a test that runs the worker's code in its own process."""
    from starlette.datastructures import UploadFile

    from vidstyle.serve.app import JobFactory, ServeSettings
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    with open(clip, "rb") as fh:
        job = JobFactory(ServeSettings(data.root, 1 << 30, None, "cpu", 1), queue, None).create(
            UploadFile(fh, filename="clip.mp4"), "starry-night", None, dict(TINY))
    claimed = queue.claim("w0")
    assert claimed is not None and claimed.id == job.id
    return data, queue, claimed


def _finished_job(data: Path, upload: Path) -> dict[str, Any]:
    """A job rendered to the end by a server that is then stopped."""
    first = ServeProcess(data).start()
    try:
        job = first.submit(upload, **TINY).json()
        assert first.wait_final(job["id"])["state"] == "done"
    finally:
        first.stop()
    return job


def _running_again(data: Path, job_id: str, frames_done: int | None = None) -> None:
    """The job's row as a server killed while its worker ran it leaves it."""
    import sqlite3

    with sqlite3.connect(data / "vidstyle.db") as db:
        db.execute("UPDATE jobs SET state = 'running', worker = 'w0', finished = NULL, "
                   "frames_done = COALESCE(?, frames_done) WHERE id = ?", (frames_done, job_id))


def test_an_image_job_killed_between_its_result_and_its_preview_gets_its_preview(tmp_path: Path,
                                                                                  starry: Path) -> None:
    data = tmp_path / "data"
    job = _finished_job(data, starry)
    # As a worker killed just after the result's rename leaves it: the result there, no preview, still running.
    (data / "jobs" / job["id"] / "preview.jpg").unlink()
    _running_again(data, job["id"])
    second = ServeProcess(data).start()
    try:
        assert second.wait_final(job["id"])["state"] == "done"
        preview = second.client.get(f"/api/jobs/{job['id']}/preview")
        assert preview.status_code == 200 and preview.headers["content-type"] == "image/jpeg"
    finally:
        second.stop()


def test_a_video_job_killed_after_its_result_was_in_place_leaves_no_checkpoints(tmp_path: Path, clip: Path,
                                                                                   starry: Path) -> None:
    """The next start found the result and marked the job done, but left the checkpoints the killed render was
    removing (all its frames, until the job was deleted), and the job's last report of its frames."""
    import vidstyle
    from vidstyle.checkpoint import WorkDir

    data = tmp_path / "data"
    job = _finished_job(data, clip)
    folder = data / "jobs" / job["id"]
    # As a worker killed just after the result's rename leaves it: the render's checkpoints, recording the result
    # as the output they made, the job still running at its last report.
    config = vidstyle.make_config("fast", size=64, iters=1, first_iters=2, device="cpu", keep_frames=True)
    vidstyle.render(clip, [starry], tmp_path / "again.mp4", config, workdir=folder / "work")
    WorkDir(folder / "work").mark_publishing(folder / "result.mp4")
    _running_again(data, job["id"], frames_done=2)
    second = ServeProcess(data).start()
    try:
        done = second.wait_final(job["id"])
        assert done["state"] == "done" and done["frame"] == done["frames"], done
        assert not (folder / "work").exists() and (folder / "result.mp4").is_file()
    finally:
        second.stop()


def test_second_server_on_one_data_directory_is_refused(server: ServeProcess) -> None:
    result = subprocess.run([sys.executable, "-m", "vidstyle", "serve", "--port", str(free_port()), "--data",
                             str(server.data), "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "another vidstyle server is using the data directory" in result.stderr


@pytest.mark.parametrize("flags, code, pattern", [
    (["--token", "pässwörd;x y"], 2, "--token may hold only ASCII letters, digits"),
    (["--port", "99999"], 2, "--port must be 1 to 65535"),
    (["--port", "-1"], 2, "--port must be 1 to 65535"),
    (["--device", "cuda:0"], 2, "--device must be auto, cpu, cuda or mps"),
    (["--min-free", "lots"], 2, "--min-free must be a size such as 500MB or 2GB, or 0 \\(got 'lots'\\)"),
    (["--max-upload", "0"], 2, "--max-upload must be a size such as 500MB or 2GB \\(got '0'\\)"),
    (["--max-upload", "0.1B"], 2, "--max-upload must be at least 1KB"),  # no bytes: every request refused
    (["--max-queued", "0"], 2, "--max-queued must be at least 1"),
    (["--stall-timeout", "0"], 2, "--stall-timeout must be a finite number of seconds above 0"),
    (["--stall-timeout", "inf"], 2, "--stall-timeout must be a finite number of seconds above 0 \\(got inf\\)"),
    # The file is named as a one-word setting is: the message keeps its path, not that setting's flag.
    (["--data", "FILE"], 2, "/flow is a file; name a folder"),
    (["--port", "TAKEN"], 1, "port .* is in use by another program; choose another port"),
])
def test_a_server_that_cannot_start_says_why_in_one_line_and_makes_nothing(capsys, tmp_path: Path, flags: list[str],
                                                                          code: int, pattern: str) -> None:
    import re

    from vidstyle.cli import main

    data, afile = tmp_path / "data", tmp_path / "flow"
    afile.write_text("not a folder")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        flags = [{"FILE": str(afile), "TAKEN": port}.get(f, f) for f in flags]
        args = ["serve", "--data", str(data), "--device", "cpu", "--port", str(free_port()), *flags]
        assert main(args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]), err  # and no address announced before it
    assert afile.read_text() == "not a folder"
    assert not data.exists(), "refused before anything was made"


def test_a_bad_token_from_the_environment_is_named_as_the_variable(capsys, tmp_path: Path, monkeypatch) -> None:
    from vidstyle.cli import main

    monkeypatch.setenv("VIDSTYLE_TOKEN", "short")
    data = tmp_path / "data"
    assert main(["serve", "--data", str(data), "--device", "cpu", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vidstyle: error: $VIDSTYLE_TOKEN must be at least 8 characters"], err
    assert main(["serve", "--data", str(data), "--device", "cpu", "--port", str(free_port()), "--token", "tiny"]) == 2
    assert capsys.readouterr().err.strip() == "vidstyle: error: --token must be at least 8 characters", "the flag wins"
    assert not data.exists()


def test_only_folders_the_server_made_are_swept_whatever_their_names(tmp_path: Path) -> None:
    """--data may name a folder that already holds jobs/ and uploads/ of its own, even with names like the server's
    job ids: no start deletes them. What the server made (marked as it makes it) and no job owns is cleared."""
    data = tmp_path / "data"
    theirs = [data / "jobs" / ("a" * 32), data / "uploads" / ("b" * 32), data / "jobs" / "mine"]
    for folder in theirs:
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("not vidstyle's")
    ServeProcess(data).start().stop()
    # Leftovers of a server killed while it checked an upload, or between moving a job's files and queueing it.
    ours = [data / "uploads" / ("c" * 32), data / "jobs" / ("d" * 32)]
    for folder in ours:
        folder.mkdir()
        (folder / OURS).touch()
        (folder / "input.mp4").write_bytes(b"half an upload")
    ServeProcess(data).start().stop()
    assert all((folder / "keep.txt").read_text() == "not vidstyle's" for folder in theirs), "never the server's"
    assert not any(folder.exists() for folder in ours), "what the server made and no job owns is cleared"


def test_deleting_a_job_removes_only_a_folder_the_server_made(tmp_path: Path, photo: Path) -> None:
    """A job folder from before folders were marked is the server's (its row says so) and goes with its job; a job
    folder replaced by a link to a folder of the user's, or by a folder the server did not make while it runs, is
    left with the user's files."""
    data = tmp_path / "data"
    served = ServeProcess(data).start()
    old, linked, replaced = (served.submit(photo, **TINY).json()["id"] for _ in range(3))
    assert all(served.wait_final(job)["state"] == "done" for job in (old, linked, replaced))
    served.stop()
    (data / "jobs" / old / OURS).unlink()  # as an older vidstyle left it
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("not vidstyle's")
    (theirs / OURS).touch()  # even carrying the mark: a link is never followed
    shutil.rmtree(data / "jobs" / linked)
    (data / "jobs" / linked).symlink_to(theirs, target_is_directory=True)
    served = ServeProcess(data).start()
    shutil.rmtree(data / "jobs" / replaced)
    (data / "jobs" / replaced).mkdir()
    (data / "jobs" / replaced / "mine.txt").write_text("not vidstyle's")
    try:
        for job in (old, linked, replaced):
            assert served.client.delete(f"/api/jobs/{job}").status_code == 204
            assert served.client.get(f"/api/jobs/{job}").status_code == 404
    finally:
        served.stop()
    assert not (data / "jobs" / old).exists(), "the older server's own folder went with its job"
    assert (theirs / "keep.txt").read_text() == "not vidstyle's"
    assert (data / "jobs" / replaced / "mine.txt").read_text() == "not vidstyle's"


def test_ctrl_c_stops_the_server_with_one_line(tmp_path: Path) -> None:
    served = ServeProcess(tmp_path / "data").start()
    assert served.process is not None
    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(60) == 130
    lines = served.process.stdout.read().strip().splitlines()  # type: ignore[union-attr]
    assert lines[-1] == "vidstyle: interrupted" and len(lines) == 2, lines  # after the address, nothing else
    served.stop()


def test_missing_extra_is_one_line(tmp_path: Path) -> None:
    """Without fastapi the command says which extra to install, in one line."""
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nclass _Block:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn'):\n"
        "            raise ModuleNotFoundError(name)\n        return None\nsys.meta_path.insert(0, _Block())\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    result = subprocess.run([sys.executable, "-m", "vidstyle", "serve", "--data", str(tmp_path / "d")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "vidstyle[serve]" in result.stderr, result.stderr


def test_queue_claims_each_job_once(tmp_path: Path) -> None:
    """Many claimers at once: every job is claimed exactly once (BEGIN IMMEDIATE + UPDATE ... RETURNING)."""
    from vidstyle.serve.queue import JobQueue, new_job_id

    queue = JobQueue(tmp_path / "q.db")
    ids = [queue.add(new_job_id(), "video", {"n": i}).id for i in range(60)]
    claimed: list[str] = []
    lock = threading.Lock()

    def claim_all(name: str) -> None:
        mine = JobQueue(tmp_path / "q.db")
        while (job := mine.claim(name)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(ids)
    assert json.loads(json.dumps(queue.counts())) == {"queued": 0, "running": 60, "done": 0, "failed": 0,
                                                      "cancelled": 0}
    assert queue.recover() == 60 and queue.counts()["queued"] == 60


def test_a_failed_write_gives_its_own_error_and_frees_the_database(tmp_path: Path) -> None:
    """A write that fails is rolled back, so the write lock is not kept from the other processes; where SQLite
    already ended the transaction itself (as on a full disk) the caller still sees the real error, not a failed
    ROLLBACK's "no transaction is active"."""
    from vidstyle.serve.queue import JobQueue, new_job_id

    queue, other = JobQueue(tmp_path / "q.db"), JobQueue(tmp_path / "q.db")
    kept = queue.add(new_job_id(), "video", {"n": 0})
    with pytest.raises(KeyError, match="mid-write"), queue._write() as db:
        db.execute("DELETE FROM jobs")
        raise KeyError("mid-write")
    with pytest.raises(KeyError, match="ended by sqlite"), queue._write() as db:
        db.execute("ROLLBACK")
        raise KeyError("ended by sqlite")
    other._connection().execute("PRAGMA busy_timeout=0")  # a kept lock fails at once, not after 30 s
    job = other.add(new_job_id(), "video", {"n": 1})
    assert sorted(j.id for j in queue.jobs()) == sorted([kept.id, job.id]), "the failed delete was undone"


def test_a_worker_keeps_the_network_from_job_to_job(starry: Path) -> None:
    from vidstyle.config import make_config
    from vidstyle.serve import worker

    config = make_config("fast", size=64, device="cpu")
    first = worker._stylizer(config, starry)
    again = worker._stylizer(make_config("fast", size=96, device="cpu", style_weight=9.0), starry)
    assert again.vgg is first.vgg, "same device, pooling and precision: the loaded network is reused"
    # Which dtype auto takes depends on the CPU (bf16 only where it is native), so compare by what it resolves to.
    fp32 = worker._stylizer(make_config("fast", size=64, device="cpu", precision="fp32"), starry)
    assert (fp32.vgg is first.vgg) == (first.dtype is None), "auto that resolves to fp32 is fp32's network"
    other = worker._stylizer(make_config("fast", size=64, device="cpu", precision="bf16"), starry)
    assert other.dtype == torch.bfloat16 and fp32.dtype is None
    assert other.vgg is not fp32.vgg, "another precision needs weights in its own type"
    # Right after `other`, same device and precision, so only the pooling can tell the two networks apart.
    other_pooling = worker._stylizer(make_config("fast", size=64, device="cpu", precision="bf16", pooling="avg"),
                                     starry)
    assert other_pooling.vgg is not other.vgg, "average pooling is another network"


def test_a_job_that_cannot_be_queued_leaves_no_folder(tmp_path: Path, bunny_short: Path) -> None:
    """The upload's folder is moved into jobs/ before the job's row is written: if the write fails (a locked or
    full disk's database), the folder goes too, instead of waiting, unowned, for the next start."""
    from starlette.datastructures import UploadFile

    from vidstyle.serve.app import JobFactory, ServeSettings
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()

    class LockedQueue(JobQueue):
        def add(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError("database is locked")

    settings = ServeSettings(data.root, 1 << 30, None, "cpu", 1)
    factory = JobFactory(settings, LockedQueue(data.database), None)
    with open(bunny_short, "rb") as clip, pytest.raises(OSError, match="locked"):
        factory.create(UploadFile(clip, filename="clip.mp4"), "starry-night", None, dict(TINY))
    assert list(data.jobs.iterdir()) == [] and list(data.uploads.iterdir()) == []


def test_a_worker_that_dies_as_it_starts_is_retried_ever_less_often_and_reported(tmp_path: Path) -> None:
    """A worker whose setting up fails (here: a GPU this machine lacks; in service, a GPU gone) would otherwise be
    restarted every 2 s for ever while queued jobs wait, and nothing would say why."""
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue
    from vidstyle.serve.worker import WorkerPool, WorkerSpec

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7: the worker would start")
    data = DataDir(tmp_path / "data")
    data.create()
    pool = WorkerPool(JobQueue(data.database), [WorkerSpec("w0", data.root, "cuda", gpu=7, threads=None)])
    pool.RESTART_DELAY = 0.25  # type: ignore[misc] - the same doubling, sooner
    pool.start()
    try:
        deadline = time.monotonic() + 120
        while pool.failing() != ["w0"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pool.failing() == ["w0"]
        assert pool.restart_delay("w0") >= 0.25 * 2 ** pool.FAILING_AFTER  # each death at start doubles the wait
    finally:
        pool.stop()


def test_the_worker_supervisor_lives_through_a_database_error(tmp_path: Path) -> None:
    """A full disk makes the queue's writes fail for a while. The supervisor thread started the workers, and its
    end would kill them all (PR_SET_PDEATHSIG) and leave every job running for ever: it tries again instead."""
    import sqlite3

    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue
    from vidstyle.serve.worker import WorkerPool, WorkerSpec

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7: the worker would start")

    class FullForAWhile(JobQueue):
        failures = 3
        requeued: list[bool] = []

        def requeue_worker(self, worker: str, died: bool) -> None:
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database or disk is full")
            self.requeued.append(died)
            super().requeue_worker(worker, died=died)

    data = DataDir(tmp_path / "data")
    data.create()
    queue = FullForAWhile(data.database)
    pool = WorkerPool(queue, [WorkerSpec("w0", data.root, "cuda", gpu=7, threads=None)])  # dies as it starts
    pool.RESTART_DELAY = 0.25  # type: ignore[misc]
    pool.start()
    try:
        deadline = time.monotonic() + 120
        while len(queue.requeued) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert queue.failures == 0 and queue.requeued[:2] == [True, True], "reaped once the writes work again"
        assert pool._thread is not None and pool._thread.is_alive()
    finally:
        pool.stop()


def test_stopping_the_server_ends_its_event_streams_at_once(tmp_path: Path, clip: Path) -> None:
    """An open event stream held the server's stop for its whole grace and was then cancelled with a traceback."""
    served = ServeProcess(tmp_path / "data").start()
    try:
        job = served.submit(clip, size="64", first_iters="100000", iters="100000").json()  # runs until stopped
        with httpx.Client(base_url=served.url, timeout=30) as viewer, \
                viewer.stream("GET", job["urls"]["events"]) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: progress"
            assert served.process is not None
            started = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            list(lines)  # the server ends the stream
            ended = time.monotonic() - started
            output, _ = served.process.communicate(timeout=30)
            assert ended < 2.9, "at its next look at the job, not after the 3 s grace"
        assert served.process.returncode == 128 + signal.SIGTERM
        assert "Traceback" not in output and "CancelledError" not in output, output
    finally:
        served.stop()


def test_a_job_that_ends_by_its_workers_deaths_or_a_restart_keeps_no_estimate(tmp_path: Path) -> None:
    from vidstyle.serve.queue import MAX_WORKER_DEATHS, JobQueue, new_job_id

    queue = JobQueue(tmp_path / "q.db")
    job_id = queue.add(new_job_id(), "video", {}).id
    for _ in range(MAX_WORKER_DEATHS):
        assert queue.claim("w0") is not None
        queue.report(job_id, 3, 10, 0.3, 15.0, None, None)
        queue.requeue_worker("w0", died=True)
    failed = queue.get(job_id)
    assert failed is not None and failed.state == "failed" and failed.eta is None
    cancelled_id = queue.add(new_job_id(), "video", {}).id
    assert queue.claim("w0") is not None
    queue.report(cancelled_id, 3, 10, 0.3, 15.0, None, None)
    queue.cancel(cancelled_id)  # flagged; then the server dies before the worker stops
    assert JobQueue(tmp_path / "q.db").recover() == 0
    cancelled = queue.get(cancelled_id)
    assert cancelled is not None and cancelled.state == "cancelled" and cancelled.eta is None


def test_malformed_requests_get_the_apis_error_shape_and_a_long_id_is_not_echoed(server: ServeProcess) -> None:
    garbled = server.client.post("/api/jobs", content=b"--x\r\nnot a part",
                                 headers={"Content-Type": "multipart/form-data"})  # no boundary
    assert garbled.status_code == 400 and set(garbled.json()) == {"detail", "field"}, garbled.text
    missing = server.client.get("/api/jobs/" + "a" * 60_000)
    assert missing.status_code == 404 and len(missing.json()["detail"]) < 100


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")  # the in-process client's own note
def test_a_queue_locked_past_its_busy_timeout_gives_503_and_changes_nothing(tmp_path: Path, clip: Path) -> None:
    """Another program holding the database's write lock (a backup, an sqlite3 shell) past the queue's busy timeout:
    an upload, a cancel and a delete answer 503 with Retry-After in the API's error shape, not a 500 and a
    traceback, and the upload leaves no job folder behind; reads go on."""
    import sqlite3

    from starlette.testclient import TestClient

    from vidstyle.serve.app import ServeSettings, create_app
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database, busy_timeout=0.2)
    app = create_app(ServeSettings(data.root, 1 << 30, None, "cpu", 0), queue, None)
    with TestClient(app) as client:
        with open(clip, "rb") as fh:
            made = client.post("/api/jobs", data={"style": "starry-night", **TINY}, files={"input": ("c.mp4", fh)})
        assert made.status_code == 201, made.text
        job = made.json()["id"]
        holder = sqlite3.connect(data.database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with open(clip, "rb") as fh:
                refused = client.post("/api/jobs", data={"style": "starry-night", **TINY},
                                      files={"input": ("c.mp4", fh)})
            cancelled = client.post(f"/api/jobs/{job}/cancel")
            deleted = client.delete(f"/api/jobs/{job}")
            for response in (refused, cancelled, deleted):
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "5"
                assert response.json() == {"detail": "the job queue is busy: try again in a few seconds",
                                           "field": None}
            assert client.get(f"/api/jobs/{job}").json()["state"] == "queued"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert [p.name for p in data.jobs.iterdir()] == [job], "the refused upload left its folder"
        assert list(data.uploads.iterdir()) == []
        assert client.post(f"/api/jobs/{job}/cancel").json()["state"] == "cancelled"


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_queue_whose_disk_is_full_gives_507(tmp_path: Path, monkeypatch) -> None:
    import sqlite3

    from starlette.testclient import TestClient

    from vidstyle.serve.app import ServeSettings, create_app
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)

    def full(_job_id: str) -> None:
        error = sqlite3.OperationalError("database or disk is full")  # what SQLite raises when a write finds no room
        error.sqlite_errorcode = sqlite3.SQLITE_FULL
        raise error

    monkeypatch.setattr(queue, "cancel", full)
    with TestClient(create_app(ServeSettings(data.root, 1 << 30, None, "cpu", 0), queue, None)) as client:
        queue.add("a" * 32, "video", {"output": "result.mp4", "style": {"builtin": "starry-night"}})
        response = client.post(f"/api/jobs/{'a' * 32}/cancel")
    assert response.status_code == 507 and "retry-after" not in response.headers
    assert response.json()["detail"] == "the server's disk is full: the job queue cannot be written"


def test_a_fault_of_the_servers_own_is_answered_in_the_apis_shape(tmp_path: Path, monkeypatch) -> None:
    """A database the server cannot write for another reason than a full disk or a lock (a read-only or damaged
    file, an I/O error) was answered 'Internal Server Error' in plain text, which the page could not read."""
    import sqlite3

    from starlette.testclient import TestClient

    from vidstyle.serve.app import ServeSettings, create_app
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)

    def unwritable(_job_id: str) -> None:
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = sqlite3.SQLITE_IOERR
        raise error

    monkeypatch.setattr(queue, "cancel", unwritable)
    app = create_app(ServeSettings(data.root, 1 << 30, None, "cpu", 0), queue, None)
    with TestClient(app, raise_server_exceptions=False) as client:
        queue.add("a" * 32, "video", {"output": "result.mp4", "style": {"builtin": "starry-night"}})
        response = client.post(f"/api/jobs/{'a' * 32}/cancel")
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "the server failed to carry this out: its log says why", "field": None}
    assert str(data.root) not in response.text


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_uploaded_pictures_are_decoded_two_at_a_time(tmp_path: Path, starry: Path, monkeypatch) -> None:
    """Each request is checked on a thread of its own, and a picture at the pixel limit takes several hundred MB to
    decode: forty uploads side by side could take all of the server's memory."""
    from starlette.testclient import TestClient

    import vidstyle.serve.app as served
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    decoding, most = [0], [0]
    lock, two_inside = threading.Lock(), threading.Event()
    real_read = served.read_image

    def read_slowly(path: Path, what: str) -> Any:
        with lock:
            decoding[0] += 1
            most[0] = max(most[0], decoding[0])
            if decoding[0] == 2:
                two_inside.set()
        two_inside.wait(10)  # the first checks wait for a second one (never coming if one at a time were let in)
        time.sleep(0.2)  # while the others try to come in too
        try:
            return real_read(path, what)
        finally:
            with lock:
                decoding[0] -= 1

    data = DataDir(tmp_path / "data")
    data.create()
    monkeypatch.setattr(served, "read_image", read_slowly)
    app = served.create_app(served.ServeSettings(data.root, 1 << 30, None, "cpu", 0), JobQueue(data.database), None)
    codes: list[int] = []
    with TestClient(app) as client:
        def upload() -> None:
            files = {"input": ("a.jpg", starry.read_bytes()), "style_file": ("s.jpg", starry.read_bytes())}
            codes.append(client.post("/api/jobs", data=TINY, files=files).status_code)

        threads = [threading.Thread(target=upload) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert codes == [201] * 4 and most[0] == 2


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_an_upload_that_finds_the_disk_full_gives_507_and_leaves_nothing(tmp_path: Path, clip: Path,
                                                                         monkeypatch) -> None:
    """Uploads at once may outgrow the room --min-free leaves: the one that found the disk full was a 500."""
    import errno

    from starlette.testclient import TestClient

    import vidstyle.serve.app as served
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    def full(_source: object, _dest: object, _length: int = 0) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    data = DataDir(tmp_path / "data")
    data.create()
    monkeypatch.setattr(served.shutil, "copyfileobj", full)
    app = served.create_app(served.ServeSettings(data.root, 1 << 30, None, "cpu", 0), JobQueue(data.database), None)
    with TestClient(app) as client, open(clip, "rb") as fh:
        response = client.post("/api/jobs", data={"style": "starry-night", **TINY}, files={"input": ("c.mp4", fh)})
    assert response.status_code == 507, response.text
    assert response.json() == {"detail": "the server's disk is full: the upload cannot be stored", "field": "input"}
    assert not any(data.uploads.iterdir()) and not any(data.jobs.iterdir())


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_refusals_show_no_server_path_and_not_all_of_a_long_value(tmp_path: Path, clip: Path) -> None:
    """A client's long value is not echoed whole (a 100 KB field, a 100 KB answer), a whole number too long to
    convert is out of range (not "not a whole number"), and a concat list naming a file beside the upload is refused
    without the server's path to it (as what it is, before ffmpeg looks for the file it names)."""
    from starlette.testclient import TestClient

    from vidstyle.serve.app import ServeSettings, create_app
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    app = create_app(ServeSettings(data.root, 1 << 30, None, "cpu", 0), JobQueue(data.database), None)
    long = "7" * 100_000
    with TestClient(app) as client:
        def submit(**fields: str) -> dict[str, Any]:
            with open(clip, "rb") as fh:
                response = client.post("/api/jobs", data={"style": "starry-night", **TINY, **fields},
                                       files={"input": ("c.mp4", fh)})
            assert response.status_code == 422, response.text
            assert len(response.content) < 1000, f"{len(response.content)} bytes"
            return response.json()

        assert submit(iters=long) == {"detail": f"iters is out of range (got '{'7' * 80}...')", "field": "iters"}
        assert submit(size="x" + long)["detail"] == f"size must be a whole number (got 'x{'7' * 79}...')"
        for field in ("flow", "preset", "style", "preserve_colors"):
            assert submit(**{field: "x" + long})["field"] == field
        assert len(client.get("/api/jobs", params={"state": long[:8000]}).content) < 1000

        listing = tmp_path / "list.mp4"
        listing.write_text("ffconcat version 1.0\nfile sibling.mp4\n")
        with open(listing, "rb") as fh:
            refused = client.post("/api/jobs", data={"style": "starry-night", **TINY}, files={"input": ("c.mp4", fh)})
    assert refused.status_code == 415, refused.text
    assert "the upload is a concat list" in refused.json()["detail"] and str(tmp_path) not in refused.text


def test_the_start_up_sweep_drops_the_checkpoints_of_ended_jobs_and_nothing_else(tmp_path: Path) -> None:
    """Jobs ended by the watchdog, or by a server killed before its worker could clean up, keep their frame
    checkpoints: the next start removes those of cancelled and failed jobs, keeps a queued job's (it resumes from
    them) and every file that is not vidstyle's."""
    import numpy as np

    from vidstyle.checkpoint import Manifest, WorkDir
    from vidstyle.serve import _sweep
    from vidstyle.serve.layout import WORKDIR, DataDir, mark_as_ours
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    works = {}
    for state, letter in (("cancelled", "a"), ("failed", "b"), ("held", "d"), ("queued", "c")):
        job_id = letter * 32
        queue.add(job_id, "video", {"output": "result.mp4"})
        folder = data.job(job_id)
        folder.mkdir()
        mark_as_ours(folder)
        (folder / "input.mp4").write_bytes(b"the upload")
        work = WorkDir(folder / WORKDIR)
        work.create(Manifest("1", "x", ("y",), (8, 8), 2, {}, ((0, 2, True),)))
        work.save_frame(0, np.zeros((8, 8, 3), np.uint8))
        (work.path / "notes.txt").write_text("someone's")  # not vidstyle's: kept, and with it the folder
        if state != "queued":
            assert queue.claim("w0").id == job_id
            queue.finish(job_id, "failed" if state == "held" else state, None if state == "cancelled" else "x")
        works[state] = work
    assert [queue.get(letter * 32).state for letter in "abcd"] == ["cancelled", "failed", "queued", "failed"]
    with works["held"].lock():  # a render that still holds its work directory (a killed server's, finishing)
        _sweep(data, queue)
    assert works["held"].done_frames() == {0} and works["held"].read_manifest() is not None
    for state in ("cancelled", "failed"):
        work = works[state]
        assert work.done_frames() == set() and not (work.path / "manifest.json").exists(), state
        assert (work.path / "notes.txt").read_text() == "someone's"
        assert (work.path.parent / "input.mp4").read_bytes() == b"the upload"
    assert works["queued"].done_frames() == {0} and works["queued"].read_manifest() is not None


def _picture_writer(tmp_path: Path) -> tuple[Any, Path, Path]:
    """A job's ProgressWriter, its folder, and a painted frame (grey 200) to announce as saved."""
    from vidstyle.io.images import write_image
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue
    from vidstyle.serve.worker import ProgressWriter

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    queue.add("job", "video", {})
    folder = tmp_path / "job"
    folder.mkdir()
    painted = tmp_path / "0000000.png"
    write_image(painted, np.full((36, 64, 3), 200, np.uint8))
    return ProgressWriter(queue, "job", folder, lambda: None), folder, painted


def test_the_jobs_picture_shows_a_fade_as_written_and_never_a_black_frame(tmp_path: Path) -> None:
    from vidstyle.events import FrameSaved
    from vidstyle.io.images import read_image
    from vidstyle.serve.layout import PREVIEW

    progress, folder, painted = _picture_writer(tmp_path)

    def shown_after(event: FrameSaved) -> float:
        progress(event)
        return float(read_image(folder / PREVIEW).mean())

    assert shown_after(FrameSaved(0, painted)) == pytest.approx(200, abs=2)
    assert shown_after(FrameSaved(1, painted, 0.6)) == pytest.approx(120, abs=2)  # as the video has it
    # Further into the fade the picture stays on the last frame that shows it: a page of black thumbnails says
    # nothing, and the checkpoint (a bright painting) is not what the video holds.
    assert shown_after(FrameSaved(2, painted, 0.1)) == pytest.approx(120, abs=2)
    assert progress.preview_frame == 1


def test_a_clip_that_opens_black_gets_a_picture_until_one_can_be_seen(tmp_path: Path) -> None:
    """The picture skips frames darkened by a fade, but a job with no picture yet shows the dark one: a clip that
    is all black ended done with no preview and a broken image in the gallery."""
    from vidstyle.events import FrameSaved
    from vidstyle.io.images import read_image
    from vidstyle.serve.layout import PREVIEW

    progress, folder, painted = _picture_writer(tmp_path)
    progress(FrameSaved(0, painted, 0.0))
    assert float(read_image(folder / PREVIEW).mean()) < 1 and progress.preview_frame == 0
    progress(FrameSaved(1, painted, 0.05))  # still dark: the picture it has stays
    assert progress.preview_frame == 0
    progress(FrameSaved(2, painted, 1.0))
    assert float(read_image(folder / PREVIEW).mean()) == pytest.approx(200, abs=2) and progress.preview_frame == 2


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_gallery_lists_only_finished_jobs_with_a_picture(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from vidstyle.io.images import write_image
    from vidstyle.serve.app import ServeSettings, create_app
    from vidstyle.serve.layout import PREVIEW, DataDir, mark_as_ours
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    for job_id in ("c" * 32, "a" * 32, "b" * 32):
        queue.add(job_id, "video", {"output": "result.mp4", "style": {"builtin": "starry-night"}, "options": {}})
        data.job(job_id).mkdir()
        mark_as_ours(data.job(job_id))
        assert queue.claim("w0").id == job_id
        queue.finish(job_id, "done")
    for job_id in ("a" * 32, "c" * 32):  # c's result is gone since (removed by hand): a broken link in a gallery
        write_image(data.job(job_id) / PREVIEW, np.full((36, 64, 3), 90, np.uint8))
    for job_id in ("a" * 32, "b" * 32):
        (data.job(job_id) / "result.mp4").write_bytes(b"a video")
    with TestClient(create_app(ServeSettings(data.root, 1 << 30, None, "cpu", 0), queue, None)) as client:
        gallery = client.get("/api/gallery").json()
        assert [item["id"] for item in client.get("/api/gallery?limit=1").json()] == ["a" * 32], "filled past b"
        missing = client.get(f"/api/jobs/{'b' * 32}/preview")
        shown = client.get(f"/api/jobs/{'a' * 32}/preview")
    assert [item["id"] for item in gallery] == ["a" * 32]
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
    # Not "no frame is finished yet", which a finished job's page would say for ever.
    assert missing.status_code == 404 and missing.json()["detail"] == f"job {'b' * 32} (done) has no picture"


def test_a_killed_renders_half_written_result_goes_with_its_checkpoints(tmp_path: Path) -> None:
    """A job ended by the stall watchdog or by its workers' deaths kept the render's partial output for ever: the
    start-up sweep and every failed or cancelled end now remove it, unless a render still writes it."""
    from vidstyle.io.paths import FileLock, partial_path
    from vidstyle.serve.layout import DataDir, drop_checkpoints, mark_as_ours

    data = DataDir(tmp_path / "data")
    data.create()
    folder = data.job("a" * 32)
    folder.mkdir()
    mark_as_ours(folder)
    (folder / "input.mp4").write_bytes(b"the upload")
    video, still = partial_path(folder / "result.mp4"), folder / ".result.png.tmp-0123abcd"  # as write_atomic names
    video.write_bytes(b"half a video")
    still.write_bytes(b"half a picture")
    with FileLock(video, "result.mp4"):  # a render still writing it (a killed server's, finishing)
        drop_checkpoints(folder)
    assert video.read_bytes() == b"half a video" and not still.exists()
    drop_checkpoints(folder)
    assert not video.exists() and (folder / "input.mp4").read_bytes() == b"the upload"
    theirs = tmp_path / "theirs"  # a folder the server did not make: nothing in it is touched
    theirs.mkdir()
    partial_path(theirs / "result.mp4").write_bytes(b"someone's")
    drop_checkpoints(theirs)
    assert partial_path(theirs / "result.mp4").read_bytes() == b"someone's"


def test_a_device_this_machine_lacks_is_refused_at_start_not_on_each_upload(tmp_path: Path) -> None:
    from vidstyle.errors import SettingError
    from vidstyle.serve import worker_specs

    for device, present in (("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available())):
        if present:
            continue
        with pytest.raises(SettingError, match=f"is {device} but this machine has no {device.upper()} device"):
            worker_specs(tmp_path, device, None)


def test_a_server_that_fails_to_start_leaves_its_port_and_data_folder_free(tmp_path: Path, monkeypatch) -> None:
    """A failure after the port was bound and the data folder locked (building the app, sweeping old jobs) kept
    both: the same process could not start a server there again."""
    import vidstyle.serve.app
    from vidstyle.serve import prepare_server

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the app could not be built")

    port = free_port()
    with monkeypatch.context() as patch:
        patch.setattr(vidstyle.serve.app, "create_app", broken)
        with pytest.raises(RuntimeError, match="could not be built"):
            prepare_server(port=port, data=tmp_path / "data", device="cpu")
    with socket.socket() as plain:  # without SO_REUSEADDR: refused while the server's socket is still bound
        plain.bind(("127.0.0.1", port))
    server = prepare_server(port=port, data=tmp_path / "data", device="cpu")  # neither refused as busy
    server.listening.close()
    os.close(server.lock_fd)


def test_the_start_line_writes_an_ipv6_address_as_a_url_does_and_warns_of_an_open_server(tmp_path: Path) -> None:
    from vidstyle.serve import prepare_server

    def start_lines(host: str, token: str | None = None) -> tuple[str, list[str]]:
        server = prepare_server(host=host, port=free_port(), data=tmp_path / "data", device="cpu", token=token)
        server.listening.close()
        os.close(server.lock_fd)
        return server.url, server.summary.splitlines()

    url, lines = start_lines("127.0.0.1")
    assert lines == [lines[0]] and lines[0].startswith(f"vidstyle serve: {url} (1 worker(s) on cpu, data in ")
    url, lines = start_lines("0.0.0.0")
    assert len(lines) == 2 and "warning: no token" in lines[1] and "anyone who can reach it" in lines[1]
    assert len(start_lines("0.0.0.0", token="a-long-token")[1]) == 1
    assert (tmp_path / "data").stat().st_mode & 0o077 == 0, "people's uploads, readable by other users"
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    url, lines = start_lines("::1")
    assert url.startswith("http://[::1]:") and url in lines[0] and len(lines) == 1


def test_a_data_folder_the_server_cannot_use_is_named_in_one_line(capsys, tmp_path: Path) -> None:
    from vidstyle.cli import main

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "uploads").write_text("a file where the server's folder goes")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "vidstyle.db").write_bytes(b"not a database at all, " * 100)
    for data, message in ((blocked, f"cannot make the data folder {blocked / 'uploads'}: File exists"),
                          (damaged, f"cannot open the job queue {damaged / 'vidstyle.db'}: file is not a database")):
        assert main(["serve", "--data", str(data), "--device", "cpu", "--port", str(free_port())]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"vidstyle: error: {message}"], err
    assert (damaged / "vidstyle.db").read_bytes() == b"not a database at all, " * 100


def test_a_worker_started_while_ctrl_c_is_pressed_ignores_it_and_the_server_still_takes_it() -> None:
    """Ctrl-C reaches the whole process group: a worker still importing the renderer printed a KeyboardInterrupt
    traceback. Workers are started with SIGINT ignored from their first instruction, the server keeps its own."""
    from vidstyle.serve.worker import _children_ignore_ctrl_c

    seen: list[str] = []

    def start_one() -> None:  # from a thread, as the supervisor starts workers
        with _children_ignore_ctrl_c():
            code = "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"
            seen.append(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout.strip())

    # The server's own handler, as `vidstyle serve` has it, set again here at the C level: this test checks that it
    # is put back, whatever an earlier test or library left in this process (one full run of the suite saw no
    # KeyboardInterrupt here; the test alone and its file never did).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        thread = threading.Thread(target=start_one)
        thread.start()
        thread.join()
        assert seen == ["True"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_worker_that_gets_ready_clears_the_slots_failing_mark_and_a_death_after_is_not_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """/api/health kept naming a slot failing after its worker came back and ran jobs, and a worker killed on its
    job within its first 30 s (out of memory on a first frame, say) counted as one that cannot set up. And a worker
    killed while it waited for work left the multiprocessing Event it waited on counting a sleeper for ever: the
    next wake (the supervisor's, after the restart; the web server's, at the next upload) hung for good."""
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue
    from vidstyle.serve.worker import WorkerPool, WorkerSpec

    data = DataDir(tmp_path / "data")
    data.create()
    pool = WorkerPool(JobQueue(data.database), [WorkerSpec("w0", data.root, "cpu", gpu=None, threads=1)])
    pool.deaths_at_start["w0"] = pool.FAILING_AFTER  # as after three deaths at start
    pool.start()
    try:
        assert pool.failing() == ["w0"]
        _until(lambda: pool.failing() == [], "a worker that got ready is not failing")
        first = pool.processes["w0"]
        os.kill(first.pid, signal.SIGKILL)  # type: ignore[arg-type] - dies once ready, seconds after its start
        _until(lambda: pool.processes["w0"] is not first, "the killed worker is replaced")
        assert pool.deaths_at_start["w0"] == 0 and pool.restart_delay("w0") == pool.RESTART_DELAY
        assert pool.deaths == {"w0": 1}, "every death is counted for /api/health's worker_deaths"
        assert "worker w0 died: it was killed by signal 9 (SIGKILL); another starts" in caplog.text, "and logged"
        assert not pool.pulses["w0"].ready(), "the new worker is not ready until it has set up"
        ringing = threading.Thread(target=pool.notify, daemon=True)  # as an upload does
        ringing.start()
        ringing.join(5)
        assert not ringing.is_alive(), "waking the workers hung on the killed one"
        _until(lambda: pool.pulses["w0"].ready(), "the new worker gets ready")
    finally:
        stopping = threading.Thread(target=pool.stop, daemon=True)
        stopping.start()
        stopping.join(60)
        assert not stopping.is_alive(), "the pool did not stop: its supervisor hung"


def test_a_worker_that_cannot_be_started_is_tried_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each worker's first start stood outside the supervisor's retries: one that failed (no process left to start,
    say) ended the supervisor thread, and queued jobs waited for a worker that never came, without a word."""
    import errno

    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue
    from vidstyle.serve.worker import WorkerPool, WorkerSpec

    data = DataDir(tmp_path / "data")
    data.create()
    pool = WorkerPool(JobQueue(data.database), [WorkerSpec("w0", data.root, "cpu", gpu=None, threads=1)])
    pool.RESTART_DELAY = 0.25  # type: ignore[misc] - the same doubling, sooner
    spawn, tries = pool._spawn, []

    def fails_once(spec: WorkerSpec) -> Any:
        tries.append(spec.name)
        if len(tries) == 1:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return spawn(spec)

    pool._spawn = fails_once  # type: ignore[method-assign]
    pool.start()
    try:
        _until(lambda: pool.pulses["w0"].ready(), "the worker is started again, and gets ready")
        assert tries == ["w0", "w0"] and pool._thread is not None and pool._thread.is_alive()
        assert "worker w0 could not be started; trying again in " in caplog.text
        _until(lambda: pool.deaths_at_start["w0"] == 0, "counted as a death at start until a worker got ready")
    finally:
        pool.stop()


def test_a_worker_hung_in_its_setting_up_is_killed_and_counted_against_its_slot(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A worker that hung before it got ready (a device that stopped answering as it loaded the network) took no
    job, so no watchdog saw it: the slot was lost for good, and /api/health said nothing. It is now killed after
    the stall timeout, counts as a death at start, and another is started."""
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue
    from vidstyle.serve.worker import WorkerPool, WorkerSpec

    data = DataDir(tmp_path / "data")
    data.create()
    pool = WorkerPool(JobQueue(data.database), [WorkerSpec("w0", data.root, "cpu", gpu=None, threads=1)],
                      stall_timeout=1.0)
    assert pool.setup_timeout() == pool.SETUP_TIMEOUT, "a short stall timeout does not cut a cold start short"
    pool.SETUP_TIMEOUT = 2.0  # type: ignore[misc] - the same kill, sooner
    pool.RESTART_DELAY = 0.25  # type: ignore[misc] - the same doubling, sooner
    pool.deaths_at_start["w0"] = pool.FAILING_AFTER - 1  # this hang is the death that marks the slot failing
    pool.start()
    try:
        _until(lambda: "w0" in pool.processes, "the worker is started")
        hung = pool.processes["w0"]
        os.kill(hung.pid, signal.SIGSTOP)  # type: ignore[arg-type] - still importing the renderer: not ready
        assert not pool.pulses["w0"].ready()
        _until(lambda: pool.failing() == ["w0"], "the hung worker counts against its slot", timeout=30)
        assert not hung.is_alive() and hung.exitcode == -signal.SIGKILL and pool.deaths == {"w0": 1}
        assert "worker w0 did not set up within 2 s; starting another" in caplog.text
        pool.SETUP_TIMEOUT = 600.0  # type: ignore[misc] - the next worker may take its time on a busy machine
        _until(lambda: pool.processes["w0"] is not hung and pool.pulses["w0"].ready(), "another worker gets ready")
        _until(lambda: pool.failing() == [], "a worker that got ready clears the mark")
    finally:
        pool.stop()


def test_an_unexpected_error_fails_its_job_and_replaces_the_workers_process(tmp_path: Path) -> None:
    """After an error the render did not expect (a CUDA error leaves the process's GPU context unusable), the
    worker took the next job in the same process, and every later job failed the same way. The process is now
    replaced, and the death counted in /api/health's worker_deaths."""
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue, new_job_id
    from vidstyle.serve.worker import EXIT_SPOILED, WorkerPool, WorkerSpec

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    pool = WorkerPool(queue, [WorkerSpec("w0", data.root, "cpu", gpu=None, threads=1)])
    job = queue.add(new_job_id(), "video", {"output": "result.mp4"})  # no style: a KeyError, as no upload makes
    pool.start()
    try:
        _until(lambda: queue.get(job.id).state == "failed", "the job fails")  # type: ignore[union-attr]
        assert queue.get(job.id).error.startswith("internal error: KeyError")  # type: ignore[union-attr]
        first = pool.processes["w0"]
        _until(lambda: not first.is_alive(), "the worker's process ends")
        assert first.exitcode == EXIT_SPOILED
        _until(lambda: pool.processes["w0"] is not first and pool.pulses["w0"].ready(), "another takes its place")
        assert pool.deaths == {"w0": 1} and pool.failing() == []
        assert queue.get(job.id).state == "failed", "its job stays as it ended"  # type: ignore[union-attr]
    finally:
        pool.stop()


def test_an_unexpected_errors_traceback_is_logged_for_the_operator(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The job records one line for its client; where the error came from was logged nowhere."""
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue, new_job_id
    from vidstyle.serve.worker import WorkerSpec, run_job

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    job = queue.add(new_job_id(), "video", {"output": "result.mp4"})  # no style: a KeyError, as no upload makes
    claimed = queue.claim("w0")
    assert claimed is not None and claimed.id == job.id
    with caplog.at_level(logging.ERROR, logger="vidstyle.serve"):
        fit = run_job(queue, WorkerSpec("w0", data.root, "cpu", gpu=None, threads=1), claimed, threading.Event(),
                      lambda: None)
    assert not fit and queue.get(job.id).state == "failed"  # type: ignore[union-attr]
    logged = [record for record in caplog.records if record.exc_info]
    assert len(logged) == 1 and job.id in logged[0].getMessage()
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is KeyError


def test_a_locked_queue_does_not_end_the_watch_for_a_cancel(tmp_path: Path) -> None:
    """A database locked past its timeout raised in the watching thread and ended it: the job's cancel was then
    never seen (only the watchdog's kill ended the render). The watch looks again."""
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue, new_job_id
    from vidstyle.serve.worker import Watcher

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    job = queue.add(new_job_id(), "video", {})
    assert queue.claim("w0") is not None  # a running job's cancel is a flag its watcher looks for
    asked = []
    real = queue.cancel_requested

    def locked_twice(job_id: str) -> bool:
        asked.append(job_id)
        if len(asked) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real(job_id)

    queue.cancel_requested = locked_twice  # type: ignore[method-assign]
    watcher = Watcher(queue, job.id, threading.Event(), lambda: None)
    try:
        _until(lambda: len(asked) > 2, "the watch looks again after the database was locked", timeout=20)
        assert not watcher.stop.is_set()
        queue.cancel(job.id)
        _until(watcher.stop.is_set, "the cancel is seen", timeout=20)
    finally:
        watcher.close()


def _until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_an_upload_is_spooled_on_the_data_folders_disk_not_in_tmp(tmp_path: Path) -> None:
    """An upload over 1 MB is spooled to a temporary file while it arrives: it went to $TMPDIR (perhaps small, or
    held in memory), out of sight of --min-free. It is now spooled in the data folder's uploads/."""
    served = ServeProcess(tmp_path / "data", "--max-upload", "20MB", "--min-free", "1MB").start()
    arrived = threading.Event()

    def chunks() -> Iterator[bytes]:
        yield b'--x\r\nContent-Disposition: form-data; name="input"; filename="a.mp4"\r\n\r\n'
        for _ in range(48):  # 3 MB, past the 1 MB the parser keeps in memory
            yield b"\0" * 65536
        arrived.set()
        time.sleep(3)  # the upload stays open while the test looks at the server's files
        yield b"\r\n--x--\r\n"

    try:
        sending = threading.Thread(target=lambda: served.client.post(
            "/api/jobs", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"}), daemon=True)
        sending.start()
        assert arrived.wait(60)
        assert served.process is not None
        uploads = str((tmp_path / "data" / "uploads").resolve())
        # The server reads what was sent in its own time (three seconds before the upload ends).
        _until(lambda: any(t.startswith(uploads) for t in _spooled(served.process.pid)),  # type: ignore[union-attr]
               "the upload is spooled in the data folder", timeout=2.5)
        sending.join(30)
    finally:
        served.stop()


def _spooled(pid: int) -> list[str]:
    """The unlinked temporary files a process holds open: an upload's spool."""
    targets = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return [t for t in targets if t.endswith("(deleted)")]


def test_a_worker_looks_again_when_the_queue_stays_locked_instead_of_dying(tmp_path: Path) -> None:
    """An idle worker's claim, with another program holding the database past the busy timeout, raised and took the
    worker process down (a death counted, the network loaded again)."""
    import sqlite3

    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue
    from vidstyle.serve.worker import claim_when_free

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database, busy_timeout=0.2)
    queue.claim("slot-0")  # the tables exist before another program takes the lock
    queued = queue.add("a" * 32, "image", {})
    holder = sqlite3.connect(data.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert claim_when_free(queue, "slot-0") is None, "locked: no job now, and no exception"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    claimed = claim_when_free(queue, "slot-0")
    assert claimed is not None and claimed.id == queued.id, "the lock gone, the queued job is taken"
    queue.close()


def test_sizes_take_the_units_people_write() -> None:
    from vidstyle.serve import parse_byte_size

    assert parse_byte_size("500M") == parse_byte_size("500MB") == 500 * 10**6
    assert parse_byte_size("2G") == parse_byte_size("2 GB") == 2 * 10**9
    assert parse_byte_size("1TB") == 10**12 and parse_byte_size("1TiB") == 2**40 and parse_byte_size("1k") == 1000
    assert parse_byte_size("0", "min_free", zero=True) == 0, "a floor of free space turned off"


def test_a_job_that_runs_again_keeps_the_time_it_first_started(tmp_path: Path) -> None:
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    queue.add("c" * 32, "image", {})
    first = queue.claim("slot-0")
    assert first is not None and first.started is not None
    queue.requeue_worker("slot-0", died=True)  # its worker was killed: the job goes back to the queue
    time.sleep(0.01)
    again = queue.claim("slot-0")
    assert again is not None and again.id == first.id and again.started == first.started
    queue.close()


def test_deleting_a_job_whose_cancel_is_under_way_says_it_is_stopping(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from vidstyle.serve.app import ServeSettings, create_app
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    job_id = "d" * 32
    queue.add(job_id, "image", {"style": {"builtin": "starry-night"}, "options": {}, "output": "result.png"})
    queue.claim("slot-0")  # running: its worker stops at its next iteration once the cancel is seen
    app = create_app(ServeSettings(data.root, 1 << 30, None, "cpu", 0), queue, None)
    with TestClient(app) as client:
        assert client.delete(f"/api/jobs/{job_id}").json()["detail"] == f"job {job_id} is running: cancel it first"
        assert client.post(f"/api/jobs/{job_id}/cancel").json()["cancel_requested"]
        refused = client.delete(f"/api/jobs/{job_id}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == f"job {job_id} is stopping after its cancel: delete it once it has stopped"
    queue.close()


def test_option_fields_are_read_as_people_type_them() -> None:
    from vidstyle.serve.app import parse_options

    preset, overrides = parse_options({"flow": " DIS ", "size": " 64 ", "preserve_colors": "Yes", "preset": " Fast"},
                                      "balanced", "cpu")
    assert (preset, overrides) == ("fast", {"flow": "dis", "size": 64, "preserve_colors": True})


def test_a_built_in_styles_name_is_read_as_people_type_it(tmp_path: Path) -> None:
    from vidstyle.serve.app import JobFactory, ServeSettings
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    data = DataDir(tmp_path / "data")
    data.create()
    factory = JobFactory(ServeSettings(data.root, 1 << 30, None, "cpu", 0), JobQueue(data.database), None)
    chosen, path = factory._style(" Starry_Night ", None, tmp_path)
    assert chosen == {"builtin": "starry-night"} and path.is_file()


def test_a_folder_removed_in_part_keeps_the_mark_that_lets_the_next_start_sweep_it(tmp_path: Path) -> None:
    """rmtree took the mark in the directory's order, often first: a server killed in the middle left a folder
    with no mark and no row, which no start would ever sweep."""
    from vidstyle.serve.layout import is_ours, mark_as_ours, remove_ours

    folder = tmp_path / "job"
    folder.mkdir()
    mark_as_ours(folder)
    (folder / "work").mkdir()
    (folder / "work" / "0000000.png").write_bytes(b"frame")
    (folder / "result.mp4").write_bytes(b"video")
    real_unlink = Path.unlink

    def dies_at_the_result(path: Path, missing_ok: bool = False) -> None:
        if path.name == "result.mp4":
            raise KeyboardInterrupt  # as a kill in the middle of the deletion
        real_unlink(path, missing_ok)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Path, "unlink", dies_at_the_result)
        remove_ours(folder)
    assert is_ours(folder)

    def busy(path: Path, missing_ok: bool = False) -> None:
        if path.name == "result.mp4":
            raise PermissionError(13, "Permission denied")  # a file that cannot go: the folder stays, marked
        real_unlink(path, missing_ok)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "unlink", busy)
        remove_ours(folder)
    assert is_ours(folder) and [p.name for p in folder.iterdir() if p.name != OURS] == ["result.mp4"]
    remove_ours(folder)
    assert not folder.exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep").write_text("mine")
    remove_ours(theirs)
    assert (theirs / "keep").read_text() == "mine"


def test_a_failed_jobs_checkpoints_go_before_its_failure_is_recorded(tmp_path: Path, clip: Path,
                                                                      monkeypatch) -> None:
    """On a full disk the queue's database could not record the failure while the job's frames filled the disk:
    the job stayed running and its worker slot empty until someone freed space by hand."""
    from vidstyle.checkpoint import WorkDir
    from vidstyle.errors import CheckpointError
    from vidstyle.serve.worker import WorkerSpec, run_job

    data, queue, job = _claimed_job(tmp_path, clip)
    real_save = WorkDir.save_frame

    def disk_fills(work: WorkDir, index: int, *args: Any, **kwargs: Any) -> Path:
        if index >= 2:
            raise CheckpointError("cannot write checkpoint: No space left on device")
        return real_save(work, index, *args, **kwargs)

    frames_when_recorded: list[int] = []
    real_finish = queue.finish

    def finish(job_id: str, state: str, error: str | None = None) -> None:
        frames_when_recorded.append(len(list(data.job(job_id).rglob("*.png"))))
        real_finish(job_id, state, error)

    monkeypatch.setattr(WorkDir, "save_frame", disk_fills)
    monkeypatch.setattr(queue, "finish", finish)
    run_job(queue, WorkerSpec("w0", data.root, "cpu", gpu=None, threads=1), job, threading.Event(), lambda: None)
    ended = queue.get(job.id)
    assert ended is not None and ended.state == "failed" and "No space left" in (ended.error or ""), ended
    assert frames_when_recorded == [0], "the frames were gone before the failure was written"


def test_a_failure_the_full_disk_will_not_record_yet_is_recorded_once_it_will(tmp_path: Path, clip: Path,
                                                                                monkeypatch, caplog) -> None:
    """Another program kept the disk full after the job's checkpoints went: the failure's write raised, the worker
    died of it (a death counted against the job, three fail it) and the job showed running at its last frame."""
    import sqlite3

    from vidstyle.checkpoint import WorkDir
    from vidstyle.errors import CheckpointError
    from vidstyle.serve import worker
    from vidstyle.serve.worker import WorkerSpec, run_job

    data, queue, job = _claimed_job(tmp_path, clip)

    def disk_full(*_args: Any, **_kwargs: Any) -> Path:
        raise CheckpointError("cannot write checkpoint: No space left on device")

    refusals = [2]
    real_finish = queue.finish

    beats_at_first_refusal: list[int] = []

    def finish(job_id: str, state: str, error: str | None = None) -> None:
        if refusals[0]:
            beats_at_first_refusal[:] = beats_at_first_refusal or [len(beats)]
            refusals[0] -= 1
            full = sqlite3.OperationalError("database or disk is full")
            full.sqlite_errorcode = sqlite3.SQLITE_FULL  # what SQLite raises when a write finds no room
            raise full
        real_finish(job_id, state, error)

    beats: list[float] = []
    monkeypatch.setattr(WorkDir, "save_frame", disk_full)
    monkeypatch.setattr(queue, "finish", finish)
    monkeypatch.setattr(worker, "RECORD_RETRY_SECONDS", 0.1)
    with caplog.at_level(logging.WARNING, logger="vidstyle.serve"):
        assert run_job(queue, WorkerSpec("w0", data.root, "cpu", gpu=None, threads=1), job, threading.Event(),
                       lambda: beats.append(time.monotonic()))
    ended = queue.get(job.id)
    assert ended is not None and ended.state == "failed" and "No space left" in (ended.error or ""), ended
    assert refusals == [0] and len(beats) >= beats_at_first_refusal[0] + 2, "offered again, its pulse kept meanwhile"
    said = [record.getMessage() for record in caplog.records if "cannot be recorded yet" in record.getMessage()]
    assert len(said) == 1 and job.id in said[0]


def test_a_cancelled_jobs_end_that_finds_the_disk_full_drops_its_checkpoints_to_make_room(tmp_path: Path,
                                                                                           monkeypatch) -> None:
    """A cancel is recorded before the job's checkpoints go; on a full disk they were what held the room the record
    needed, and the worker waited for it until the cancel's grace ran out and it was killed."""
    import sqlite3

    from vidstyle.serve import worker
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue, new_job_id
    from vidstyle.serve.worker import record_end

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    job = queue.add(new_job_id(), "video", {})
    assert queue.claim("w0") is not None
    room: list[str] = []
    real_finish = queue.finish

    def finish(job_id: str, state: str, error: str | None = None) -> None:
        if not room:
            full = sqlite3.OperationalError("database or disk is full")
            full.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise full
        real_finish(job_id, state, error)

    monkeypatch.setattr(queue, "finish", finish)
    monkeypatch.setattr(worker, "RECORD_RETRY_SECONDS", 0.05)
    record_end(queue, job.id, "cancelled", shutdown=threading.Event(), alive=lambda: None,
               on_full=lambda: room.append("checkpoints dropped"))
    assert room == ["checkpoints dropped"] and queue.get(job.id).state == "cancelled"  # type: ignore[union-attr]


def test_a_server_that_stops_while_a_jobs_end_waits_for_room_leaves_it_to_the_next_start(tmp_path: Path) -> None:
    """The wait for a full disk ends with the server: the job stays running, which the next start queues again."""
    import sqlite3

    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue, new_job_id
    from vidstyle.serve.worker import record_end

    data = DataDir(tmp_path / "data")
    data.create()
    queue = JobQueue(data.database)
    job = queue.add(new_job_id(), "video", {})
    assert queue.claim("w0") is not None

    def full(*_args: Any) -> None:
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode = sqlite3.SQLITE_FULL
        raise error

    queue.finish = full  # type: ignore[method-assign]
    stopping = threading.Event()
    threading.Timer(0.5, stopping.set).start()
    started = time.monotonic()
    record_end(queue, job.id, "failed", "x", shutdown=stopping, alive=lambda: None)
    assert time.monotonic() - started < 5
    assert queue.get(job.id).state == "running"  # type: ignore[union-attr]
    assert JobQueue(data.database).recover() == 1 and queue.get(job.id).state == "queued"  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "args"), [("anim.png", ("-plays", "0", "-f", "apng")),
                                            ("anim.webp", ("-c:v", "libwebp_anim", "-loop", "0"))])
def test_an_animated_png_or_webp_upload_is_a_video_job_and_no_style(tmp_path: Path, name: str,
                                                                     args: tuple[str, ...]) -> None:
    """Refused as stills by the picture reader, they were refused as uploads too (415), though they render as the
    videos they are."""
    from starlette.datastructures import UploadFile

    from vidstyle.serve.app import ApiError, JobFactory, ServeSettings
    from vidstyle.serve.layout import DataDir
    from vidstyle.serve.queue import JobQueue

    animated = tmp_path / name
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.5", *args, str(animated))
    data = DataDir(tmp_path / "data")
    data.create()
    factory = JobFactory(ServeSettings(data.root, 1 << 30, None, "cpu", 1), JobQueue(data.database), None)
    if name.endswith(".webp") and not reads_animated_webp():  # ffmpeg 7: its first picture alone, which is said
        with open(animated, "rb") as fh, pytest.raises(ApiError, match="frames the ffmpeg in use cannot read"):
            factory.create(UploadFile(fh, filename=name), "starry-night", None, dict(TINY))
    else:
        with open(animated, "rb") as fh:
            job = factory.create(UploadFile(fh, filename=name), "starry-night", None, dict(TINY))
        assert job.kind == "video"
    with open(animated, "rb") as fh, open(animated, "rb") as style, pytest.raises(ApiError) as refused:
        factory.create(UploadFile(fh, filename=name), None, UploadFile(style, filename=name), dict(TINY))
    assert refused.value.status == 422 and refused.value.field == "style_file"
    assert refused.value.message.startswith("the style picture is an animated ") and str(tmp_path) not in \
        refused.value.message
