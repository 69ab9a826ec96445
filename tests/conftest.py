"""Shared fixtures: real media (bundled, and ../shared/assets when present) and ffmpeg-generated edge cases."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from vidstyle.assets import builtin_style, demo_clip
from vidstyle.io.decode import read_frames
from vidstyle.io.ffmpeg import ffmpeg_exe
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "assets"


# A Ray session folder this old is no running test run's (the whole suite takes minutes).
_STALE_AFTER = 6 * 3600


@pytest.fixture(scope="session", autouse=True)
def ray_session_folder() -> Iterator[None]:
    """Ray keeps each local cluster's logs and sockets in $RAY_TMPDIR/ray (/tmp/ray by default) and never removes
    them: the tests' clusters, and those of the CLI processes they start, go to a folder removed at the end. A short
    path of its own: Ray's socket paths must stay under the kernel's 107 characters."""
    if "RAY_TMPDIR" in os.environ:  # the caller's choice
        yield
        return
    for stale in Path("/tmp").glob("vidstyle-ray-*"):  # of a run killed before its end (a CI timeout)
        with contextlib.suppress(OSError):  # gone meanwhile
            if time.time() - stale.stat().st_mtime > _STALE_AFTER:  # not another run's, going on now
                shutil.rmtree(stale, ignore_errors=True)
    folder = tempfile.mkdtemp(prefix="vidstyle-ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = folder
    try:
        yield
    finally:
        os.environ.pop("RAY_TMPDIR", None)
        shutil.rmtree(folder, ignore_errors=True)


@functools.cache
def reads_mpegts() -> bool:
    """Whether the ffmpeg in use reads an H.264 stream in MPEG-TS without crashing (see needs_mpegts)."""
    with tempfile.TemporaryDirectory() as folder:
        stream = Path(folder) / "probe.ts"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=0.5",
                        "-c:v", "libx264", "-f", "mpegts", str(stream)], check=True)
        return subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(stream), "-f", "null", "-"],
                              capture_output=True).returncode >= 0


def needs_mpegts() -> None:
    """Skip, saying why, where the ffmpeg in use crashes reading any MPEG-TS file (imageio-ffmpeg 0.6's 7.0.2 dies
    of SIGSEGV on some machines; vidstyle then says that ffmpeg crashed)."""
    if not reads_mpegts():
        pytest.skip("the ffmpeg in use crashes reading MPEG-TS (imageio-ffmpeg 0.6's 7.0.2 does on some machines)")


def needs_itsoffset(clip: Path, late: bool) -> None:
    """Skip, saying why, where the ffmpeg in use made `clip` without the -itsoffset it was given (ffmpeg 7.0 ignores
    it on a generated input): `late`, whether the clip was to begin its video after its audio."""
    from vidstyle.io.decode import first_frame_offset

    if late and not first_frame_offset(probe_video(clip)):
        pytest.skip("the ffmpeg in use ignores -itsoffset on a generated input (7.0 does): the clip cannot be made")


def reads_animated_webp() -> bool:
    """Whether the ffmpeg in use reads an animated WebP's frames (ffmpeg 8 and later: imageio-ffmpeg 0.6's 7.0
    reads its first picture alone)."""
    from vidstyle.io.ffmpeg import readable_formats

    return "webp_anim" in readable_formats(ffmpeg_exe()).split(",")


def shared_asset(name: str) -> Path:
    """A file of ../shared/assets; the test is skipped (saying why) where that folder is absent."""
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} not present: real test media live in ../shared/assets beside the clone (CI has it)")
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def bunny_short(media: Path) -> Path:
    """12 frames of the bundled Big Buck Bunny clip with its 5.1 audio, downscaled: real footage, fast to render."""
    out = media / "bunny_short.mp4"
    ffmpeg("-i", str(demo_clip()), "-t", "0.48", "-vf", "scale=160:90", "-c:v", "libx264", "-crf", "18",
           "-c:a", "aac", str(out))
    return out


# Frames of `fading_clip`: all of them, where the fade begins, how many it lasts, and the black ones after it.
FADING_CLIP = (24, 10, 8, 6)


@pytest.fixture(scope="session")
def fading_clip(media: Path) -> Path:
    """The bundled clip's first 18 frames at 64x36, the last 8 fading to black as an editor's fade does, then 6
    black frames (25 fps, no audio)."""
    _, start, fading, black = FADING_CLIP
    out = media / "fade_out.mp4"
    ffmpeg("-i", str(demo_clip()), "-vf", f"trim=end_frame={start + fading},scale=64:36,"
           f"fade=t=out:start_frame={start}:nb_frames={fading},tpad=stop={black}:color=black",
           "-an", "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(out))
    return out


@pytest.fixture(scope="session")
def starry() -> Path:
    path = builtin_style("starry-night")
    assert path is not None and path.exists()
    return path


@pytest.fixture(scope="session")
def images(starry: Path) -> tuple[np.ndarray, np.ndarray]:
    """The demo clip's first frame at 64x36 and the bundled Starry Night: a tiny real content and style."""
    frame = next(read_frames(probe_video(demo_clip()), (64, 36))).rgb.copy()
    return frame, read_image(starry)


@pytest.fixture(scope="session")
def lavfi_clip(media: Path) -> Callable[..., Path]:
    """Generate a synthetic clip with ffmpeg's lavfi sources for edge cases (odd sizes, no audio, ...)."""

    def make(name: str, size: str = "64x48", rate: str = "25", seconds: float = 0.4, audio: bool = True,
             extra: tuple[str, ...] = ()) -> Path:
        out = media / name
        if out.exists():
            return out
        args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
        if audio:
            args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
        pix_fmt = "yuv444p" if _odd(size) else "yuv420p"  # 4:2:0 cannot hold odd sizes
        args += ["-vf", f"scale={size.replace('x', ':')},setsar=1", "-c:v", "libx264", "-pix_fmt", pix_fmt]
        args += ["-c:a", "aac"] if audio else []
        ffmpeg(*args, *extra, str(out))
        return out

    return make


def _odd(size: str) -> bool:
    return any(int(v) % 2 for v in size.split("x"))


def decoded(path: Path) -> list[np.ndarray]:
    info = probe_video(path)
    return [f.rgb.copy() for f in read_frames(info, (info.width, info.height))]


def child_ffmpeg_pids() -> list[int]:
    """ffmpeg processes that are children of this test process (none may outlive a call)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"ffmpeg" in cmd:
            pids.append(int(entry.name))
    return pids


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vidstyle", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
