"""Writing frames to H.264 with the source's audio muxed back, always to a temporary file first."""

from __future__ import annotations

import errno
import functools
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, cast

import numpy as np

from vidstyle.errors import EncodeError, UsageError
from vidstyle.io.ffmpeg import StderrTail, file_url, input_args, last_words, run_ffmpeg, start_ffmpeg, stop_process
from vidstyle.io.probe import VideoInfo

_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
VIDEO_SUFFIXES = frozenset(_CONTAINERS)  # the output names a render writes

_PCM = frozenset({"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_f32le", "pcm_f64le",
                  "pcm_u8", "pcm_alaw", "pcm_mulaw"})
_COMPRESSED = frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "alac", "dts"})
# What each container takes by stream copy, found by muxing every codec into every container with the bundled
# ffmpeg (tests/test_io.py checks each entry). ffmpeg refuses opus, flac and truehd in .mov. It would write PCM
# and Vorbis into .mp4, but as ISO 23003-5 PCM and a private Vorbis tag that few players read, so those are
# re-encoded; AAC, which every one of these containers holds, is the fallback for all else.
_AUDIO_COPY = {
    "mp4": _COMPRESSED | {"flac", "opus"},
    "mov": _COMPRESSED | _PCM,
    "matroska": _COMPRESSED | _PCM | {"flac", "opus", "vorbis", "truehd"},
}
_AAC = ("aac", "192k")
# An .m4v is MP4 named for Apple's players, which play only these of what MP4 holds (no Opus, FLAC, MP2 or DTS).
_APPLE_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})


@dataclass(frozen=True)
class AudioPlan:
    """How the source's audio reaches the output: ffmpeg arguments (the source is input 1) and in words."""

    args: tuple[str, ...]
    description: str  # e.g. "copy aac" or "re-encode opus to AAC (a .mov cannot hold opus)"
    reencodes: bool = False  # some stream is re-encoded (a small quality loss the caller may report)


@dataclass(frozen=True)
class AudioWindow:
    """The part of the source's audio that goes with the render: from `start` seconds after the file's start, for
    `seconds` (None: to the end). `seek`: cut by seeking the input (exact to the packet when copied); False where
    seeking this file loses its audio (an FLV without an index seeks to its end): cut by a filter, re-encoded."""

    start: float
    seconds: float | None
    seek: bool = True
    after_first: bool = False  # cut after the video's first frame: a seek lands on a keyframe before the cut


def seeks_audio(source: VideoInfo, start: float) -> bool:
    """Whether seeking `source` to `start` still reads its audio (a look at a few packets of its first stream)."""
    return _seeks_audio(str(source.path), source.digest, source.audio_streams[0], round(start, 6))


@functools.lru_cache(maxsize=16)
def _seeks_audio(path: str, _digest: str, stream: int, start: float) -> bool:
    try:
        code, out, _ = run_ffmpeg(["-v", "error", "-ss", f"{start:.6f}", *input_args(path), "-map",
                                   f"0:a:{stream}", "-c", "copy", "-frames:a", "4", "-f", "framecrc", "-"],
                                  timeout=60)
    except subprocess.TimeoutExpired:
        return True  # no answer (a slow disk): the seek, as for any file that does not show otherwise
    return code == 0 and any(line and not line.startswith(b"#") for line in out.splitlines())


def container_for(path: Path) -> str:
    """ffmpeg muxer name for an output file name; raises EncodeError for unsupported extensions."""
    fmt = _CONTAINERS.get(path.suffix.lower())
    if fmt is None:
        # A usage error (exit 2), like any other refused option: nothing was encoded yet.
        if not path.suffix:
            raise UsageError(f"output {path} has no file type; name the video with one of "
                             f"{', '.join(sorted(_CONTAINERS))}")
        raise UsageError(f"unsupported output type '{path.suffix}' (use {', '.join(sorted(_CONTAINERS))})")
    return fmt


def plan_audio(source: VideoInfo | None, output: Path, window: AudioWindow | None = None) -> AudioPlan:
    """Decide, before any rendering, how each audio stream of `source` gets into `output`: copy or AAC."""
    suffix = Path(output).suffix.lower()
    return _plan(source, container_for(Path(output)), suffix, window)


def _plan(source: VideoInfo | None, container: str, suffix: str, window: AudioWindow | None) -> AudioPlan:
    if source is None or not source.has_audio:
        return AudioPlan((), "no audio")
    args: list[str] = [arg for position in source.audio_streams for arg in ("-map", f"1:a:{position}")]
    words, copyable = [], _AUDIO_COPY.get(container, frozenset())
    if suffix == ".m4v":
        copyable &= _APPLE_AUDIO
    filtered = window is not None and not window.seek
    # A stream copied from a seeked input keeps the packets from where the seek lands (the video's keyframe before the
    # cut, seconds early) to the cut: MP4 and MOV hide them by an edit list; Matroska has none, so the file began with
    # that audio and no picture. Re-encoded, the cut is exact to the sample.
    lead_in = window is not None and window.seek and window.after_first and container == "matroska"
    if window is not None and filtered:
        length = f":duration={window.seconds:.6f}" if window.seconds is not None else ""
        # Shifted by the cut's own time, not to its first sample: audio that begins after the cut keeps its gap.
        args += ["-af", f"atrim=start={window.start:.6f}{length},asetpts=PTS-{window.start:.6f}/TB"]
    for i, codec in enumerate(source.audio_codecs):
        if codec in copyable and not filtered and not lead_in:
            args += [f"-c:a:{i}", "copy"]
            words.append(f"copy {codec}")
        else:
            args += [f"-c:a:{i}", _AAC[0], f"-b:a:{i}", _AAC[1]]
            words.append(f"re-encode {codec} to AAC ({_why_encoded(codec, suffix, filtered, lead_in)})")
    return AudioPlan(tuple(args), "; ".join(words), any(w.startswith("re-encode") for w in words))


def _why_encoded(codec: str, suffix: str, filtered: bool, lead_in: bool) -> str:
    if filtered:
        return "this file's audio cannot be cut by seeking"
    if lead_in:
        return f"a {suffix} copy of it cannot begin at the cut"
    if suffix == ".m4v" and codec in _AUDIO_COPY["mp4"]:
        return f"Apple's players, which a .m4v is for, do not play {codec}"
    return f"a {suffix} cannot hold {codec}"


# RGB to 4:2:0 with BT.709's matrix, and said so in the stream: untagged, ffmpeg's default BT.601 matrix was written
# and players that take an untagged HD video for BT.709 showed its colours shifted. Decoding honours the tags.
YUV_BT709 = ("-vf", "scale=out_color_matrix=bt709:out_range=tv,"
                    "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv",
             "-pix_fmt", "yuv420p")
# The rates a variable-rate source may be written at: those cameras and editors write (up to 240: no display shows
# a shorter picture).
_RATES = tuple(Fraction(r) for r in ("12", "25/2", "15", "20", "24000/1001", "24", "25", "30000/1001", "30", "48",
                                     "50", "60000/1001", "60", "90", "100", "120", "240"))
# A rate is taken if it drops no more than this share of the frames (bursts of frames a millisecond apart would
# otherwise ask for hundreds of pictures a second), and falls on the frames' times if they are this near its pictures.
_DROPPED_AT_MOST = 0.01
_ON_TIME = 0.05


@functools.lru_cache(maxsize=8)  # a render asks twice (its start note, its writer); a long video's times are many
def written_rate(info: VideoInfo) -> Fraction:
    """The frame rate a render of `info` is written at: the source's own where it is constant. A variable-rate
    source (a clip cut by stream copy, with a gap; a phone's recording that slows in the dark) is written at one
    rate, each frame repeated for as long as it lasted (frame_repeats): written at its average rate instead, every
    frame would drift from its time, and from the audio.

    Of _RATES and the source's average, those that drop few frames; of them, the one whose pictures the frames' times
    fall on (30 and not 30000/1001 for 30 fps in a millisecond time base; 25 and not 50 for 25 fps with a gap), or
    where none does (a phone's jittered times), the one nearest the source's average rate.
    """
    times = np.asarray(info.frame_times, np.float64)
    if not info.variable_rate or times.size < 2:
        return info.fps
    times = times - times[0]
    candidates = sorted({*_RATES, Fraction(float(info.fps)).limit_denominator(1001)})
    placed = {rate: _place(times, rate) for rate in candidates}
    fitting = [rate for rate in candidates if (placed[rate] < 0).sum() <= _DROPPED_AT_MOST * times.size]
    if not fitting:  # bursts of near-duplicate frames: the rate of the typical frame, the extra ones dropped
        gaps = np.diff(times)
        gaps = gaps[gaps > 0]  # frames that share a time (a muxer's repeated stamps) say nothing of the rate
        if not gaps.size:
            return info.fps
        typical = 1 / float(np.median(gaps))
        return min(candidates, key=lambda rate: abs(float(rate) - typical))
    late = {rate: _lateness(times, placed[rate], rate) for rate in fitting}
    on_time = [rate for rate in fitting if late[rate] * float(rate) <= _ON_TIME]
    if not on_time:  # the fitting rate nearest the source's average (30 for a phone's jittered 30 fps)
        common = [rate for rate in fitting if rate in _RATES] or fitting
        return min(common, key=lambda rate: (abs(float(rate) - float(info.fps)), rate))
    best = min(late[rate] for rate in on_time)
    return next(rate for rate in on_time if late[rate] <= best * 1.01 + 1e-6)  # as near: the lower rate


def _place(times: np.ndarray, rate: Fraction) -> np.ndarray:
    """The picture each frame starts at, in order: its own, or the one after the frame before it; -1 for a frame
    that would be shown more than one picture late (the source faster than `rate` there), which is dropped."""
    slots = np.full(times.size, -1, np.int64)
    taken = -1
    for i, ideal in enumerate(times * float(rate)):
        slot = max(round(ideal), taken + 1)
        if slot - ideal <= 1:
            slots[i] = taken = slot
    return slots


def _lateness(times: np.ndarray, slots: np.ndarray, rate: Fraction) -> float:
    """Mean seconds between a kept frame's time and its picture's."""
    kept = slots >= 0
    return float(np.abs(slots[kept] / float(rate) - times[kept]).mean())


def written_timing(info: VideoInfo, first: int, stop: int) -> tuple[Fraction, tuple[int, ...] | None]:
    """The rate a render of frames [first, stop) of `info` is written at, and each frame's repeats at it (None: one
    each, the source's own rate)."""
    if not info.variable_rate or not info.frame_times:
        return info.fps, None
    rate, times = written_rate(info), info.frame_times
    # A part of the video ends where its next frame begins: its audio runs that long, and so must its last frame.
    return rate, tuple(frame_repeats(times[first:stop], rate, times[stop] if stop < len(times) else None))


def frame_repeats(times: Sequence[float], rate: Fraction, end: float | None = None) -> list[int]:
    """How many pictures at `rate` each frame shown at `times` (seconds) fills: 1 each at the source's own
    constant rate, more across a gap, 0 for a frame dropped where the source is faster than `rate`. `end`: when the
    last frame gives way (the next frame's time, for a part of a video); else it fills one picture."""
    if not times:
        return []
    start = times[0]
    slots = _place(np.asarray(times, np.float64) - start, rate)
    kept = [int(slot) for slot in slots if slot >= 0]
    last = max(round((end - start) * rate), kept[-1] + 1) if end is not None else kept[-1] + 1
    following = dict(zip(kept, [*kept[1:], last], strict=True))
    return [following[int(slot)] - int(slot) if slot >= 0 else 0 for slot in slots]


def encode_args(
    dest: Path, size: tuple[int, int], fps: Fraction, source: VideoInfo | None, crf: int,
    audio_window: AudioWindow | None = None,
) -> list[str]:
    """`audio_window` takes only that part of the source's audio (a trimmed render, or one whose video begins after
    its audio)."""
    width, height = size
    container = container_for(dest)
    inputs = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
              "-framerate", f"{fps.numerator}/{fps.denominator}", "-i", "-"]
    metadata: list[str] = []
    if source is not None:
        # The source is an input for its audio and its tags. Seeking an input that is only read for its audio is
        # exact to the sample when re-encoded and to the packet (a few ms) when copied; the frames themselves are
        # never cut by seeking.
        window: list[str] = []
        if audio_window is not None and audio_window.seek:
            window = ["-ss", f"{audio_window.start:.6f}"]
            if audio_window.seconds is not None:
                window += ["-t", f"{audio_window.seconds:.6f}"]
        # A packet the demuxer flags as damaged (a transport stream's lost data) is dropped, not copied: the muxer
        # would refuse it, and with it the whole output, at the render's very end, each time it is tried again.
        inputs += ["-fflags", "+discardcorrupt", *window, *input_args(source.path)]
        metadata = _metadata_args(source)
    video = ["-map", "0:v:0", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf),
             *YUV_BT709, "-fps_mode", "passthrough"]
    faststart = ["-movflags", "+faststart"] if container in ("mp4", "mov") else []
    audio = list(plan_audio(source, dest, audio_window).args)
    return ["-v", "error", "-y", *inputs, *video, *audio, *metadata, *faststart,
            "-f", container, file_url(dest)]


def _metadata_args(source: VideoInfo) -> list[str]:
    """The source's tags (title, creation time, ...) and its streams' (language) on the output.

    Rotation is not among them: frames are decoded upright, so the output needs none. Naming one stream's tags
    turns off ffmpeg's automatic copy for all of them, so each audio stream is named too.
    """
    audio = [arg for i, position in enumerate(source.audio_streams)
             for arg in (f"-map_metadata:s:a:{i}", f"1:s:a:{position}")]
    return ["-map_metadata", "1", "-map_metadata:s:v:0", "1:s:v:0", *audio]


# ffmpeg's words for a full disk or quota (strerror's), which it reports for a failed write only in its log.
_DISK_FULL = {os.strerror(errno.ENOSPC): errno.ENOSPC, os.strerror(errno.EDQUOT): errno.EDQUOT}


def _cause(words: str, error: BaseException | None) -> BaseException | None:
    """What an encoder's failure comes from: the disk, where ffmpeg says it was full (the error a write of the
    file itself would have raised here), else `error`."""
    for text, number in _DISK_FULL.items():
        if text in words:
            return OSError(number, text)
    return error


class VideoWriter:
    """Context manager: `write()` RGB frames; on a clean exit the file is finalized, on error it is removed.

    It writes to `dest` directly; callers pass a temporary name and rename it into place when done, so that
    a half-written file never sits at the user's output path.
    """

    def __init__(self, dest: Path, size: tuple[int, int], fps: Fraction, source: VideoInfo | None,
                 crf: int = 18, audio_window: AudioWindow | None = None,
                 repeats: Sequence[int] | None = None) -> None:
        """`repeats`: how many pictures each frame given to write() fills, in order (frame_repeats); 1 each if
        None. `frames_written` counts the frames given, whatever their repeats."""
        self.dest = Path(dest)
        self.size = size
        self.frames_written = 0
        self._repeats = repeats
        self._proc: subprocess.Popen[bytes] | None = None
        self._args = encode_args(self.dest, size, fps, source, crf, audio_window)
        self._stderr: StderrTail | None = None

    def __enter__(self) -> VideoWriter:
        self._proc = start_ffmpeg(self._args, stdin=True)
        self._stderr = StderrTail(cast(IO[bytes], self._proc.stderr))
        return self

    def write(self, rgb: np.ndarray) -> None:
        width, height = self.size
        if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
            raise EncodeError(f"frame of shape {rgb.shape} {rgb.dtype} does not match {width}x{height} RGB uint8")
        repeats = self._repeats[self.frames_written] if self._repeats is not None else 1
        try:
            for _ in range(repeats):
                cast(IO[bytes], cast(subprocess.Popen[bytes], self._proc).stdin).write(np.ascontiguousarray(rgb).data)
        except (BrokenPipeError, OSError) as exc:
            words = self._last_words()
            raise EncodeError(f"encoder stopped at frame {self.frames_written}: {words}") from _cause(words, exc)
        self.frames_written += 1

    def _last_words(self) -> str:
        return last_words(cast(subprocess.Popen[bytes], self._proc), self._stderr)

    def close(self) -> None:
        """Finish the file; raises EncodeError if ffmpeg failed."""
        proc = cast(subprocess.Popen[bytes], self._proc)
        stop_process(proc, grace=600.0)  # closing stdin lets ffmpeg flush and mux; this can take a while
        if self._stderr is not None:
            self._stderr.join()
        if proc.returncode != 0:
            words = self._last_words()
            raise EncodeError(f"encoding {self.dest.name} failed: {words}") from _cause(words, None)

    def abort(self) -> None:
        proc = cast(subprocess.Popen[bytes], self._proc)
        if proc.poll() is None:
            proc.kill()
        stop_process(proc)
        if self._stderr is not None:
            self._stderr.join()
        self.dest.unlink(missing_ok=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.dest.unlink(missing_ok=True)
                raise
        else:
            self.abort()
