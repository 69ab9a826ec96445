"""Running the ffmpeg binary that ships with imageio-ffmpeg: argument lists only, processes that always end."""

from __future__ import annotations

import collections
import functools
import os
import re
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from vidstyle.errors import VidstyleError

_KEEP_STDERR_LINES = 40


# `-fps_mode` (frames passed through with their own timestamps, never duplicated or dropped) came in ffmpeg 5.1,
# whose libavcodec is 59.37; imageio-ffmpeg before 0.6 ships ffmpeg 4.2, which stops at that option before decoding
# a single frame. Builds from git name no release, so their libavcodec decides.
OLDEST_FFMPEG = (5, 1)
OLDEST_LIBAVCODEC = (59, 37)
_RELEASE = re.compile(r"ffmpeg version n?(\d+)\.(\d+)")
_LIBAVCODEC = re.compile(r"^libavcodec\s+(\d+)\.\s*(\d+)", re.MULTILINE)


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg (imageio-ffmpeg honours IMAGEIO_FFMPEG_EXE to pick another), checked once to
    be one that vidstyle's arguments work with."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise VidstyleError("the 'imageio-ffmpeg' package (which ships ffmpeg) is not installed") from exc
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise VidstyleError(f"no usable ffmpeg binary: {exc}") from exc
    check_ffmpeg_version(exe, bool(os.environ.get("IMAGEIO_FFMPEG_EXE")))
    return exe


def _ask(exe: str, option: str) -> subprocess.CompletedProcess[str]:
    """What the ffmpeg at `exe` says to one of its listing options (-version, -filters, -demuxers)."""
    try:
        return subprocess.run([exe, "-hide_banner", option], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VidstyleError(f"cannot run ffmpeg at {exe}: {exc}") from exc


@functools.cache
def check_ffmpeg_version(exe: str, chosen_by_user: bool) -> None:
    """Refuse an ffmpeg older than vidstyle's arguments need, saying how to get a newer one (once per binary)."""
    ran = _ask(exe, "-version")
    banner = ran.stdout
    if ran.returncode != 0 or not banner.startswith("ffmpeg version"):
        # Otherwise the first input it fails to read would be blamed ("has no video stream").
        said = (banner or ran.stderr).strip().splitlines()[:1] or ["nothing"]
        where = "IMAGEIO_FFMPEG_EXE names" if chosen_by_user else "imageio-ffmpeg's binary is"
        raise VidstyleError(f"{where} {exe}, which is not a working ffmpeg (asked its version, it said "
                            f"{said[0]!r:.80})")
    problem = ffmpeg_too_old(banner)
    if problem is not None:
        fix = ("set IMAGEIO_FFMPEG_EXE to a newer ffmpeg, or unset it to use imageio-ffmpeg's" if chosen_by_user
               else "pip install -U imageio-ffmpeg, or set IMAGEIO_FFMPEG_EXE to a newer ffmpeg")
        raise VidstyleError(f"{problem} at {exe} is too old: vidstyle needs ffmpeg "
                            f"{'.'.join(map(str, OLDEST_FFMPEG))} or newer ({fix})")


def missing_filters(*names: str) -> list[str]:
    """Those of the named filters that the ffmpeg in use lacks (a build of its own may leave out a library)."""
    return [name for name in names if name not in _filters(ffmpeg_exe())]


@functools.cache
def _filters(exe: str) -> frozenset[str]:
    ran = _ask(exe, "-filters")
    # " TS. zscale  V->V  Apply resizing, ...": flags, then the name.
    return frozenset(re.findall(r"^ [.A-Z|]{2,3} (\w+)\s", ran.stdout, re.MULTILINE))


def ffmpeg_too_old(banner: str) -> str | None:
    """How `ffmpeg -version`'s output names an ffmpeg older than vidstyle needs ("ffmpeg 4.2"), or None: a newer
    one, or one that names neither a release nor its libavcodec (it is then tried)."""
    release, codec = _RELEASE.match(banner.strip()), _LIBAVCODEC.search(banner)
    if codec is not None:
        version = (int(codec.group(1)), int(codec.group(2)))
        if version >= OLDEST_LIBAVCODEC:
            return None
        named = f"ffmpeg {release.group(1)}.{release.group(2)}" if release else "ffmpeg"
        return f"{named} (libavcodec {version[0]}.{version[1]})"
    if release is not None and (int(release.group(1)), int(release.group(2))) < OLDEST_FFMPEG:
        return f"ffmpeg {release.group(1)}.{release.group(2)}"
    return None


def file_url(path: Path | str) -> str:
    """The argument that makes ffmpeg open exactly this file, whatever its name holds.

    ffmpeg reads a bare argument as a URL: `concat:a.mp4|b.mp4`, `file:b.mp4`, `pipe:0.mp4` or a leading `-`
    would open some other file or stream and still exit 0. The `file:` protocol with an absolute path leaves
    no prefix to interpret. (`%d` in a name with an image extension still makes the image2 demuxer expand
    a sequence; the probe refuses image2 inputs, so that never reaches decoding.)
    """
    return "file:" + os.path.abspath(path)


# Formats whose files name other files or streams for ffmpeg to read: a DASH or HLS manifest, a concat list, an IMF
# composition, an SDP session, a script, a filter graph (lavfi's movie source opens any file). Opened as a video, any
# file the process can read would be rendered (a web service's own disk, through an upload); an input is never
# opened as one of these.
_NAMING_OTHERS = frozenset({"avisynth", "concat", "dash", "hls", "imf", "lavfi", "rtp", "rtsp", "sap", "sdp",
                            "vapoursynth", "webm_dash_manifest"})


def demuxer_names(listing: str) -> list[str]:
    """The demuxers in `ffmpeg -demuxers` output, devices left out. Its columns of flags are as many as its legend
    says: two before ffmpeg 7 (" D. = Demuxing supported"), three since, the third marking a device ("..d")."""
    legend = re.search(r"^ (D\.+) = Demuxing", listing, re.MULTILINE)
    rule = re.search(r"^ -+$", listing, re.MULTILINE)
    if legend is None or rule is None:
        return []
    width = len(legend.group(1))
    names = []
    for line in listing[rule.end():].splitlines():
        flags, rest = line[1:1 + width], line[2 + width:].split()
        if flags.startswith("D") and rest and flags[2:3] != "d":
            names.append(rest[0])
    return names


@functools.cache
def readable_formats(exe: str) -> str:
    """The demuxers of this ffmpeg that an input may be opened as, as `-format_whitelist` takes them: all but
    devices and those of _NAMING_OTHERS."""
    listed = demuxer_names(_ask(exe, "-demuxers").stdout)
    allowed = [name for name in listed if not _NAMING_OTHERS & set(name.split(","))]
    if not allowed:
        raise VidstyleError(f"cannot tell which formats the ffmpeg at {exe} reads (asked with -demuxers)")
    return ",".join(allowed)


def input_args(path: Path | str) -> list[str]:
    """The arguments that make ffmpeg read exactly this file (file_url), as a format that reads nothing else."""
    return ["-format_whitelist", readable_formats(ffmpeg_exe()), "-i", file_url(path)]


def refused_format(path: Path | str) -> str | None:
    """The format ffmpeg finds a file in where input_args refuses it (one of _NAMING_OTHERS; "" where it does not
    say which), else None."""
    try:
        _code, _out, err = run_ffmpeg(["-v", "debug", *input_args(path)], timeout=60)
    except subprocess.TimeoutExpired:
        return None
    if "not on whitelist" not in err:
        return None
    probed = re.search(r"Format (\S+) probed", err)
    return probed.group(1) if probed else ""


def exit_reason(returncode: int | None) -> str:
    """How a process (an ffmpeg, a web service's worker) ended, in words ("was killed by signal 9 (SIGKILL)",
    "exited with 1")."""
    if returncode is not None and returncode < 0:
        try:
            name = f" ({signal.Signals(-returncode).name})"
        except ValueError:
            name = ""
        return f"was killed by signal {-returncode}{name}"
    return f"exited with {returncode}"


class StderrTail:
    """Drains a process's stderr on a thread (a full pipe would stall ffmpeg) and keeps the last lines."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=_KEEP_STDERR_LINES)
        self.count = 0  # lines seen in all; at `-v error` the first one marks where trouble began
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.lines.append(line)
                self.count += 1
        stream.close()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def last(self, n: int = 3) -> str:
        """The last `n` lines that say something, without ffmpeg's tags of where each came from ([h264 @
        0x55d0c3a1b2c0]): a memory address tells a person nothing, and neither do the lines in which ffmpeg's
        threads report their own ends (a negative error number, "Terminating thread")."""
        said = [_CONTEXT_TAG.sub("", line) for line in list(self.lines) if not _THREADS_ENDING.search(line)]
        return " | ".join(said[-n:])

    def holds(self, words: str) -> bool:
        """Whether a line kept says `words` (a copy is read: the draining thread may still be adding lines)."""
        return any(words in line for line in list(self.lines))


_CONTEXT_TAG = re.compile(r"\[[^\]\[]* @ 0x[0-9a-f]+\] ?")
_THREADS_ENDING = re.compile(r"Task finished with error code|Terminating thread with return code")


def last_words(proc: subprocess.Popen[bytes], stderr: StderrTail | None) -> str:
    """Why an ffmpeg we write to stopped: it is ended first, then its last lines are read, or its exit code."""
    stop_process(proc)
    if stderr is not None:
        stderr.join()
        return stderr.last() or f"ffmpeg exited with {proc.returncode}"
    return f"ffmpeg exited with {proc.returncode}"


def start_ffmpeg(args: Sequence[str], *, stdin: bool = False, stdout: bool = False,
                 pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start ffmpeg in its own session so that a terminal's Ctrl-C reaches only us; we decide how it ends.

    `pass_fds` are file descriptors ffmpeg inherits (a pipe it writes side output to, as `pipe:N`).
    """
    return subprocess.Popen(
        [ffmpeg_exe(), "-hide_banner", *([] if stdin else ["-nostdin"]), *args],
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
    )


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Make sure `proc` is gone: close our pipe ends, wait briefly, then kill."""
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass  # a broken pipe while closing means the process is already going away
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except BaseException:  # Ctrl-C during the wait: the caller leaves, and the process is not to outlive it
        proc.kill()
        proc.wait()
        raise


def run_ffmpeg(args: Sequence[str], timeout: float | None = None) -> tuple[int, bytes, str]:
    """Run ffmpeg to completion; returns (exit code, stdout, stderr)."""
    proc = start_ffmpeg(args, stdout=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err.decode("utf-8", "replace")
