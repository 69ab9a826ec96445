"""Streaming frames out of ffmpeg, one at a time: memory stays constant whatever the video's length."""

from __future__ import annotations

import bisect
import collections
import functools
import os
import re
import selectors
import subprocess
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, cast

import numpy as np

from vidstyle.errors import DecodeError
from vidstyle.io.ffmpeg import StderrTail, exit_reason, input_args, run_ffmpeg, start_ffmpeg, stop_process
from vidstyle.io.probe import VIDEO_STREAM, Colour, VideoInfo, file_start


@dataclass(frozen=True)
class Frame:
    """One decoded source frame: RGB uint8, shape (height, width, 3)."""

    index: int
    rgb: np.ndarray


# A frame for a frame (send_frame), so counts, times and audio stay as they are, and only frames flagged
# interlaced: a stream that mixes them keeps its progressive ones untouched. bwdif looks one frame either side,
# which a range's decode has, since it begins a whole GOP early.
DEINTERLACE = "bwdif=mode=send_frame:deint=interlaced,"


# zscale takes these names as ffmpeg writes them; a stream naming another (or none) is read as BT.2020, as HDR
# streams all but always are.
_ZSCALE_MATRICES = frozenset({"bt709", "bt2020nc", "smpte170m", "bt470bg"})
_ZSCALE_PRIMARIES = frozenset({"bt709", "bt2020", "smpte432"})


def tone_map(colour: Colour) -> str:
    """Filters that turn an HDR picture (PQ or HLG) into SDR BT.709, or "" for an SDR one.

    To light (100 nits = 1.0), to BT.709's primaries, highlights rolled off by Möbius (linear up to 0.3, so a
    picture's shadows and mid-tones keep their values) from a peak of 1000 nits, HLG's nominal peak and a common
    HDR10 master's, then BT.709's gamma. The peak is given, not read from the stream's light-level data: ffmpeg
    releases differ on whether that data reaches the filter, and the same file must give the same frames. Each
    step names its input: zscale reads an unset tag as "no conversion possible" and fails. Run after the scaling
    to the render's size, where it costs least.
    """
    if not colour.hdr:
        return ""
    matrix = colour.matrix if colour.matrix in _ZSCALE_MATRICES else "bt2020nc"
    primaries = colour.primaries if colour.primaries in _ZSCALE_PRIMARIES else "bt2020"
    levels = "full" if colour.full_range else "limited"
    return (f",zscale=tin={colour.transfer}:min={matrix}:pin={primaries}:rin={levels}:t=linear:p={primaries}:npl=100,"
            f"format=gbrpf32le,zscale=tin=linear:pin={primaries}:p=bt709,tonemap=tonemap=mobius:peak=10:desat=0,"
            "zscale=tin=linear:pin=bt709:t=bt709:m=bt709:r=full,format=gbrp")


def _scale(info: VideoInfo, size: tuple[int, int]) -> str:
    """The scaling to `size`: the stream's pictures exactly to it; where a stream changes its pictures' size
    part-way (a broadcast across programmes, files joined with cat), those of another size fitted inside it, their
    shape kept (ffmpeg sets the filters up again at the change, so the expressions see the new size), then padded
    by _pad. Without it a portrait part was squeezed into the landscape frame. A part of the first part's shape
    (within 5 %: stretched that little, nobody sees it) fills the frame as before, where fitting it would leave a
    black line or thin bars."""
    width, height = size
    if info.coded_size == (0, 0):
        return f"scale={width}:{height}"
    # Quoted: the commas of the expressions would otherwise end the filter. A part of the same shape (another
    # rung of an adaptive stream: 360p after 720p) is scaled as the first part is; only another shape is fitted.
    aspect = info.width / info.height
    same = f"eq(iw,{info.coded_size[0]})*eq(ih,{info.coded_size[1]})+lt(abs(dar/{aspect:.6f}-1),0.05)"
    return (f"scale=w='if({same},{width},min({width},trunc({height}*dar)))'"
            f":h='if({same},{height},min({height},trunc({width}/dar)))'")


def _pad(info: VideoInfo, size: tuple[int, int]) -> str:
    """Black bars around a picture that _scale fitted inside `size`; nothing at all for the stream's own size."""
    return "" if info.coded_size == (0, 0) else f",pad={size[0]}:{size[1]}:(ow-iw)/2:(oh-ih)/2"


def decode_args(info: VideoInfo, size: tuple[int, int], frames: int | None = None, *,
                seek_to: str | None = None, stamps_fd: int | None = None,
                copy_timestamps: bool = False, log_level: str = "error") -> list[str]:
    """ffmpeg arguments that emit every frame once, upright, scaled to `size` = (width, height), as RGB24.

    With `frames`, ffmpeg stops after emitting that many, so nothing past the end of a range is decoded.
    With `seek_to` (seconds), the decode begins at the last keyframe before that time and keeps every
    frame it decodes (we drop those before a range ourselves, by timestamp). With `stamps_fd`, ffmpeg
    writes each frame's number and timestamp ("n pts time_base", in the stream's own time base) to that descriptor
    before the frame itself; with `copy_timestamps`, those are the file's own, not shifted to start at 0.
    """
    width, height = size
    # Area averaging when shrinking avoids aliasing; bicubic when enlarging.
    flags = "area" if width <= info.width else "bicubic"
    matrix = f":in_color_matrix={info.assumed_matrix}" if info.assumed_matrix else ""
    limit = ["-frames:v", str(frames)] if frames is not None else []
    seek = ["-ss", seek_to, "-noaccurate_seek"] if seek_to is not None else []
    seek += ["-copyts"] if copy_timestamps else []
    stamps = [] if stamps_fd is None else ["-enc_time_base:v", "demux", "-stats_enc_pre:v", f"pipe:{stamps_fd}",
                                           "-stats_enc_pre_fmt:v", "{n} {pts} {tb}"]
    return [
        # At "error" every stderr line is a complaint, so the first one marks where trouble began; "repeat" prints
        # each when it happens, not held back as "Last message repeated n times".
        "-v", f"repeat+{log_level}",
        *seek,
        *input_args(info.path),
        "-map", VIDEO_STREAM,
        # passthrough: no frame duplicated or dropped, so variable-rate phone clips keep every frame.
        "-fps_mode", "passthrough",
        "-vf", f"{DEINTERLACE if info.interlaced else ''}{_scale(info, size)}:flags={flags}{matrix},setsar=1"
               f"{_pad(info, size)}{tone_map(info.colour)}",
        *limit,
        *stamps,
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
    ]


def read_frames(info: VideoInfo, size: tuple[int, int], start: int = 0,
                stop: int | None = None) -> Generator[Frame, None, None]:
    """Yield the frames [start, stop) of `info.path` at `size` (width, height); all of them by default.

    Each `Frame.index` is the frame's position in the whole video, and its pixels are exactly those a
    decode of the whole video gives. A range that starts past a keyframe is decoded from a keyframe
    before it (see `_read_after_seek`); where that cannot be proven exact, from the first frame.
    The process ends with the generator.

    When the decode reaches the end of the file with fewer frames than the probe counted, DecodeError is
    raised after the last frame was yielded: the file is damaged, and a silently shorter video would drift
    out of sync with the source's audio, so this is an error, not a warning.
    """
    if start < 0 or (stop is not None and stop < 0):
        raise ValueError(f"frame range [{start}, {stop}) has a negative bound")
    if stop is not None and stop <= start:
        return
    key = seek_keyframe(info, start)
    if key is not None:
        start = yield from _read_after_seek(info, size, key, start, stop)
        if start >= (info.frame_count if stop is None else stop):
            return
    yield from _read_from_first(info, size, start, stop)


class FrameRanges:
    """Ascending ranges of a video's frames, within [0, `stop`), from as few decodes as will do: a range is taken
    from the decode already open where that decode reaches it before a seek could (decoding the frames between),
    and from a new decode (read_frames: a seek where one is exact) where a seek lands past where it stands.

    A render reads a range per shot. Where the source cannot seek (seek_keyframe: MPEG-4 Part 2, an old x264's
    H.264), each range was decoded from the first frame, so the decoding grew with the square of the video's
    length. The last `keep` frames read are kept for a range that begins a little before the one it follows (a
    shot's frames before a resumed run). A range is read to its end, or left, before the next one is asked for.
    """

    def __init__(self, info: VideoInfo, size: tuple[int, int], stop: int | None = None, keep: int = 0) -> None:
        self.info, self.size, self.stop = info, size, stop
        self._decode: Generator[Frame, None, None] | None = None
        self._recent: collections.deque[Frame] = collections.deque(maxlen=keep)
        self._ahead: Frame | None = None  # read past the last range's end: the next range's to begin with
        self._next = 0  # the index of the frame after the last one taken from the open decode

    def read(self, start: int, stop: int) -> Iterator[Frame]:
        kept = [f for f in self._recent if start <= f.index < stop]
        if self._decode is None or (kept[0].index if kept else self._position()) > start or self._seeks_past(start):
            self.close()
            self._decode, self._next = read_frames(self.info, self.size, start, self.stop), start
            kept = []
        yield from kept
        while True:
            frame = self._pull()
            if frame is None:
                return
            if frame.index >= stop:
                self._ahead = frame
                return
            self._recent.append(frame)
            if frame.index >= start:
                yield frame

    def _position(self) -> int:
        """The index of the next frame the open decode gives."""
        return self._ahead.index if self._ahead is not None else self._next

    def _seeks_past(self, start: int) -> bool:
        key = seek_keyframe(self.info, start)
        return key is not None and key > self._position()

    def _pull(self) -> Frame | None:
        frame, self._ahead = self._ahead, None
        if frame is None:
            assert self._decode is not None
            frame = next(self._decode, None)
        if frame is not None:
            self._next = frame.index + 1
        return frame

    def close(self) -> None:
        """Ends the open decode (its ffmpeg); the next range starts another."""
        if self._decode is not None:
            self._decode.close()
        self._decode, self._ahead = None, None
        self._recent.clear()


def seek_keyframe(info: VideoInfo, start: int) -> int | None:
    """The keyframe a decode of frames from `start` on begins at, or None to begin at the first frame.

    It is the keyframe before the last one at or before `start`: an open GOP's first pictures may refer
    to the GOP before it, so one whole GOP is decoded first.
    """
    if info.codec not in _SEEKABLE_CODECS:
        return None
    before = [k for k in info.keyframes if k <= start]
    if len(before) < 2 or before[-2] == 0 or not seekable(info):
        return None
    return before[-2]


def seekable(info: VideoInfo) -> bool:
    """Whether a range of the video can be decoded from a seek, exactly; where not, it is cut out of a decode from
    the video's first frame."""
    if info.codec not in _SEEKABLE_CODECS or not info.frame_times:
        return False
    if info.codec == "h264" and _old_x264(info):
        return False
    return _clock(info) is not None


# Decoders that begin cleanly at a flagged keyframe. Others (MPEG-4 Part 2 among them) work around
# encoder bugs that they learn of from the first frame's headers, which a seek skips.
_SEEKABLE_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg2video", "prores", "mjpeg", "dnxhd"})
# ffmpeg's H.264 decoder mends the pictures of x264 builds before 151 (4:4:4 streams among them) only
# after reading the encoder's version in the first frame: a decode that seeks past it is silently wrong.
_X264_MENDED_BEFORE = 151


@functools.lru_cache(maxsize=16)
def _old_x264(info: VideoInfo) -> bool:
    """Whether the stream's first packet names an x264 build whose output ffmpeg mends (or cannot be read)."""
    code, packet, _ = run_ffmpeg(["-v", "error", *input_args(info.path), "-map", VIDEO_STREAM, "-c", "copy",
                                  "-frames:v", "1", "-f", "data", "-"])
    if code != 0:
        return True
    builds = [int(build) for build in re.findall(rb"x264 - core (\d+)", packet)]
    return any(build < _X264_MENDED_BEFORE for build in builds)


@dataclass(frozen=True)
class _Clock:
    """Where the video's frames sit on the file's own timestamps, which a decode with -copyts reports."""

    first_frame: Fraction  # the timestamp of frame 0
    file_start: Fraction  # the earliest timestamp of any stream: where ffmpeg's -ss counts from


_CLOCKS: dict[VideoInfo, _Clock] = {}  # the readings that succeeded, the latest _CLOCKS_KEPT
_CLOCKS_KEPT = 16
_CLOCKS_LOCK = threading.Lock()  # decodes of several ranges may start on several threads


def _clock(info: VideoInfo) -> _Clock | None:
    """The video's clock, read once a process; a failed reading (a decode that timed out on a busy machine) is not
    kept, so that the next range of the video tries again instead of decoding from the first frame for good."""
    with _CLOCKS_LOCK:
        known = _CLOCKS.get(info)
    if known is not None:
        return known
    found = _read_clock(info)  # outside the lock: a decode of another video need not wait for this one's ffmpeg
    if found is not None:
        with _CLOCKS_LOCK:
            if info not in _CLOCKS and len(_CLOCKS) >= _CLOCKS_KEPT:
                del _CLOCKS[next(iter(_CLOCKS))]
            _CLOCKS[info] = found
    return found


def first_frame_offset(info: VideoInfo) -> float | None:
    """Seconds from the file's start to its first video frame; None where ffmpeg does not report the clock.

    An input's streams are placed on the output from the file's start, the earliest of any stream; a video that
    begins after its audio (MPEG-TS, recordings, stream-copied cuts) needs its audio cut by this much.
    """
    clock = _clock(info)
    return None if clock is None else float(clock.first_frame - clock.file_start)


def _read_clock(info: VideoInfo) -> _Clock | None:
    """Read off a decode of the first frame at `-v info` (which prints the file's start); None where ffmpeg
    does not report it."""
    proc, side_read = _start_with_stamps(lambda fd: decode_args(info, (16, 16), 1, stamps_fd=fd,
                                                                copy_timestamps=True, log_level="info"))
    with os.fdopen(side_read, "rb") as side:
        try:
            _, err = proc.communicate(timeout=60)  # one 16x16 frame: the stamp line waits in the pipe meanwhile
        except subprocess.TimeoutExpired:
            stop_process(proc, grace=0)
            return None
        stamp = _parse_stamp(side.readline())
    start = file_start(err.decode("utf-8", "replace"))
    if proc.returncode != 0 or stamp is None or stamp[0] != 0 or start is None:
        return None
    return _Clock(stamp[1], start)


def _start_with_stamps(args_for: Callable[[int], list[str]]) -> tuple[subprocess.Popen[bytes], int]:
    """ffmpeg with a pipe for its per-frame stamps (`args_for(write_fd)` names it); returns it and the read end."""
    side_read, side_write = os.pipe()
    try:
        proc = start_ffmpeg(args_for(side_write), stdout=True, pass_fds=(side_write,))
    except BaseException:
        os.close(side_read)
        raise
    finally:
        os.close(side_write)  # ffmpeg holds its own copy: the read end sees the end when ffmpeg ends
    return proc, side_read


def _parse_stamp(line: bytes) -> tuple[int, Fraction] | None:
    """(frame number, exact time) of a side-pipe line "n pts time_base"."""
    try:
        number, pts, base = line.split()
        return int(number), int(pts) * Fraction(base.decode())
    except (ValueError, ZeroDivisionError):
        return None


class _SeekedOutput:
    """A seeked decode's three outputs read in one thread: frames (stdout), their timestamps (the side pipe) and
    complaints (stderr). ffmpeg writes a frame's timestamp, and any complaint about decoding it, before the frame
    itself; so when a frame is complete both are already in their pipes and are read, without waiting, before the
    frame is given out. (A thread draining stderr might not have counted a complaint yet.)"""

    def __init__(self, proc: subprocess.Popen[bytes], side: int, frame_bytes: int) -> None:
        self.out, self.err = cast(IO[bytes], proc.stdout).fileno(), cast(IO[bytes], proc.stderr).fileno()
        self.side, self.frame_bytes = side, frame_bytes
        self.buffers = {fd: bytearray() for fd in (self.out, self.side, self.err)}
        self.selector = selectors.DefaultSelector()
        for fd in self.buffers:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ)
        self.complaints = 0

    def frame(self) -> tuple[bytes, bytes] | None:
        """The next frame and its timestamp line; None at the end of the output or when a line is missing."""
        frames = self.buffers[self.out]
        while len(frames) < self.frame_bytes:
            if not self.selector.get_map() or self.out not in self.selector.get_map():
                return None
            for key, _ in self.selector.select():
                self._read(key.fd)
        self._read(self.side)
        self._read(self.err)
        self.complaints = self.buffers[self.err].count(b"\n")
        lines = self.buffers[self.side]
        if b"\n" not in lines:
            return None
        line, _, rest = bytes(lines).partition(b"\n")
        self.buffers[self.side] = bytearray(rest)
        frame = bytes(frames[:self.frame_bytes])
        del frames[:self.frame_bytes]
        return frame, line

    def _read(self, fd: int) -> None:
        while fd in self.selector.get_map():
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                return
            if not data:
                self.selector.unregister(fd)
                return
            self.buffers[fd] += data

    def close(self) -> None:
        self.selector.close()


def _read_after_seek(info: VideoInfo, size: tuple[int, int], key: int, start: int,
                     stop: int | None) -> Generator[Frame, None, int]:
    """Yield frames start, start + 1, ... decoded from keyframe `key`; return the first index not yielded.

    An input seek is exact only where the container's keyframe flags and timestamps are right, which is
    not so on every stream. So ffmpeg reports each frame's number and timestamp on a side pipe, and a frame
    is yielded only when its timestamp is that of the next frame of the range in the probe's list. At the
    first frame that is not, the decode stops and the caller goes on from the first frame: slower, never
    wrong. Complaints of the decoder about pictures shown before keyframe `key` are expected (an open
    GOP's first pictures refer to the GOP before, which was not decoded; the decoder outputs nothing
    it could not recover, and the range lies a whole GOP later); one after it, before the range,
    stops the decode too.
    """
    width, height = size
    clock = cast(_Clock, _clock(info))
    seek_to = _seek_time(info, clock, key)
    proc, side_read = _start_with_stamps(lambda fd: decode_args(info, size, seek_to=seek_to, stamps_fd=fd,
                                                                copy_timestamps=True))
    output = _SeekedOutput(proc, side_read, width * height * 3)
    expected, complaints, count = start, None, 0
    end = min(info.frame_count, stop if stop is not None else info.frame_count)
    try:
        while expected < end and (got := output.frame()) is not None:
            buf, line = got
            stamp = _parse_stamp(line)
            index = _frame_at(info, clock, stamp[1]) if stamp is not None and stamp[0] == count else None
            count += 1
            if index is not None and index >= key and complaints is None:
                complaints = output.complaints
            if (index is None or index > expected or (index < expected and expected > start)
                    or (index == start and output.complaints != complaints)):
                break
            if index == expected:
                yield Frame(index, np.frombuffer(buf, np.uint8).reshape(height, width, 3))
                expected += 1
    finally:
        output.close()
        os.close(side_read)
        stop_process(proc)
        cast(IO[bytes], proc.stderr).close()
    return expected


def _seek_time(info: VideoInfo, clock: _Clock, key: int) -> str:
    """The -ss value (seconds from the file's start) midway between frame key - 1 and keyframe `key`."""
    midway = clock.first_frame - clock.file_start + Fraction((info.frame_times[key - 1] + info.frame_times[key]) / 2)
    return f"{float(midway):.6f}"


def _frame_at(info: VideoInfo, clock: _Clock, stamp: Fraction) -> int | None:
    """The index of the frame at file timestamp `stamp`; None when none matches beyond doubt."""
    when = float(stamp - clock.first_frame)
    times = info.frame_times
    index = min(max(bisect.bisect_left(times, when), 1), len(times) - 1)
    index = index - 1 if abs(times[index - 1] - when) <= abs(times[index] - when) else index
    # With the file's own timestamps nothing is rounded: a frame further off than a float's error, or not
    # clearly nearer this frame than its neighbours, is not this frame.
    off = abs(times[index] - when)
    gaps = [abs(times[j] - times[index]) for j in (index - 1, index + 1) if 0 <= j < len(times)]
    if off > _SEEK_SLACK or any(off * 2 >= gap for gap in gaps):
        return None
    return index


# Seconds a frame's timestamp may be off the probe's: the probe's list is of floats.
_SEEK_SLACK = 1e-6


def _read_from_first(info: VideoInfo, size: tuple[int, int], start: int, stop: int | None) -> Iterator[Frame]:
    """The range cut out of a decode from the first frame: exact on every stream; ffmpeg stops at `stop`."""
    width, height = size
    frame_bytes = width * height * 3
    proc = start_ffmpeg(decode_args(info, size, stop), stdout=True)
    stdout, stderr = cast(IO[bytes], proc.stdout), StderrTail(cast(IO[bytes], proc.stderr))
    index, trouble_at = 0, None
    try:
        while (buf := stdout.read(frame_bytes)) and len(buf) == frame_bytes:
            if trouble_at is None and stderr.count:
                trouble_at = index
            if index >= start:
                yield Frame(index, np.frombuffer(buf, np.uint8).reshape(height, width, 3))
            index += 1
        proc.wait()
        stderr.join()
        _check_decode(info, proc, stderr, index, stop, trouble_at if trouble_at is not None else index)
    finally:
        stop_process(proc)
        stderr.join()


def _check_decode(info: VideoInfo, proc: subprocess.Popen[bytes], stderr: StderrTail, decoded: int,
                  stop: int | None, trouble_at: int) -> None:
    """Raise DecodeError unless ffmpeg ended well and, where it reached the end, gave every frame."""
    if proc.returncode is not None and proc.returncode < 0:
        raise DecodeError(f"ffmpeg {exit_reason(proc.returncode)} while decoding {info.path} at frame {decoded}")
    if proc.returncode != 0 and stderr.holds("Decode error rate"):
        # ffmpeg decodes what it can to the end and fails where most packets of the whole decode did not decode:
        # data garbled past what its decoder skips over. Where it began is where ffmpeg first complained.
        raise DecodeError(f"{info.path} is damaged from about frame {trouble_at} on: ffmpeg could not decode most "
                          "of its frames")
    if proc.returncode != 0:
        raise DecodeError(f"decoding {info.path} failed at frame {decoded}: "
                          f"{stderr.last() or 'ffmpeg ' + exit_reason(proc.returncode)}")
    if decoded == 0:
        raise DecodeError(f"{info.path} contains no decodable video frames")
    reached_end = stop is None or decoded < stop
    if reached_end and decoded < info.frame_count:
        raise DecodeError(
            f"decoded {decoded} of the {info.frame_count} frames the file's index promises: {info.path} is "
            f"damaged (near frame {trouble_at}?); re-encode it with ffmpeg to repair it, then use the copy")
