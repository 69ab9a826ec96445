"""What a video is: size, rotation, exact frame timing and audio, from one fast ffmpeg pass.

The imageio-ffmpeg wheel ships ffmpeg but not ffprobe, so we stream-copy the video packets into ffmpeg's
`framecrc` muxer: that lists every packet's timestamps in the stream's own time base (exact frame rate as a
fraction, frame count, variable-rate detection) without decoding, while stderr carries the stream summary.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import numbers
import os
import re
import shlex
import signal
import stat
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from vidstyle.errors import (
    AnimatedPicture,
    DamagedVideo,
    ImageTooLarge,
    InputError,
    SettingError,
    VideoOpenError,
    VidstyleError,
)
from vidstyle.io.ffmpeg import ffmpeg_exe, input_args, missing_filters, refused_format, run_ffmpeg
from vidstyle.io.paths import address_problem, is_standard_input, special_file_kind

# `0:V:0` is the first video stream that is not an attached picture (cover art of an audio file).
VIDEO_STREAM = "0:V:0"

_IMAGE_FORMATS = re.compile(r"^Input #0, (\w*_pipe|image2|gif|apng|webp)\b", re.MULTILINE)
# Image formats that may hold an animation: one frame is a still, more is a (short) video.
_ANIMATED_FORMATS = frozenset({"gif", "apng"})
# Packets the demuxer flags AV_PKT_FLAG_DISCARD (an MP4 edit list cutting the start of a stream copied
# with `-ss`) are never shown by the decoder, so they are not frames of the video.
_DISCARD_FLAG = 0x4
_KEY_FLAG = 0x1


# HDR transfers, as ffmpeg names them: PQ (HDR10, Dolby Vision) and HLG (what phones record by default).
HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})


@dataclass(frozen=True)
class Colour:
    """How the stream says its pixels encode colour, in ffmpeg's names ("" where it says nothing)."""

    matrix: str = ""  # Y'CbCr coefficients: bt709, bt2020nc, ...
    primaries: str = ""  # bt709, bt2020, smpte432 (Display P3), ...
    transfer: str = ""  # bt709, smpte2084, arib-std-b67, ...
    full_range: bool = False  # pc (0-255) rather than tv (16-235)

    @property
    def hdr(self) -> bool:
        return self.transfer in HDR_TRANSFERS


@dataclass(frozen=True)
class VideoInfo:
    """Facts about an input video. Sizes are (width, height) as displayed: rotation and SAR applied."""

    path: Path
    width: int
    height: int
    rotation: int  # degrees clockwise the player turns the coded picture; ffmpeg applies it when decoding
    fps: Fraction  # exact for constant-rate video; the average rate for variable-rate video
    frame_count: int
    variable_rate: bool
    audio_codecs: tuple[str, ...]  # of the audio streams that hold audio, in the file's order
    # Identity of what the frames are made from: every video packet's timestamps, size and checksum (the probe's
    # framecrc pass lists them anyway) plus the displayed size and rotation. Two files whose pictures differ
    # anywhere differ here, at no cost beyond the probe; the audio, which a render copies, does not count.
    digest: str = ""
    # Seconds from the first frame to each frame, in presentation order: where a time falls for trimming.
    frame_times: tuple[float, ...] = ()
    # Where a decode may begin other than at the start: the presentation indices of the frames whose packets
    # the container flags as keyframes (none when two frames share a timestamp).
    keyframes: tuple[int, ...] = ()
    codec: str = ""  # ffmpeg's name of the video codec
    subtitle_streams: int = 0  # not carried into a render's output: its start says so
    other_video_streams: int = 0  # video streams after the one rendered (not cover pictures): not written either
    # Fields of two moments in one frame (camcorders, broadcast): decoded deinterlaced, a frame for a frame, since
    # the network would paint the combing of anything that moves as stripes. Only an upright picture: fields are
    # rows of the coded picture, and a turned one is rare enough not to guess at.
    interlaced: bool = False
    # An HDR stream is tone-mapped to SDR as it is decoded: read as SDR, its pictures came out dim and grey.
    colour: Colour = Colour()
    # Where those audio streams are among the file's (0:a:N); a stream declared with no channels (a broadcast
    # recording's unused track) holds no audio, and a muxer given none of its packets refuses the whole output.
    # Empty: the first len(audio_codecs) of them.
    audio_positions: tuple[int, ...] = ()
    empty_audio: int = 0  # audio streams declared with no channels: not written
    # The pictures' stored size as the decoder gives them, turned upright (no SAR applied): a stream whose pictures
    # change size part-way shows it, and the decode then fits those of another shape without stretching them.
    coded_size: tuple[int, int] = (0, 0)
    # Pictures with an alpha channel (a pixel format with one, or VP9's alpha in WebM): MP4's H.264 holds none, so
    # the render paints what the frames keep under the transparency, which its start says.
    alpha: bool = False

    @property
    def audio_streams(self) -> tuple[int, ...]:
        """Positions among the file's audio streams (0:a:N) of those that are written."""
        return self.audio_positions or tuple(range(len(self.audio_codecs)))

    @property
    def assumed_matrix(self) -> str:
        """The matrix an untagged picture is decoded with where ffmpeg's default would be wrong, or ""."""
        return assumed_matrix(self.width, self.height, self.colour)

    @property
    def duration(self) -> float:
        """Seconds of video, as the frames and the rate make it."""
        return float(self.frame_count / self.fps)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_codecs)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _fail_reason(stderr: str) -> str:
    """The line of ffmpeg's complaint that a person can act on."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        # "Last message repeated N times" only says that the line before it came again.
        if "Error opening input" not in line and not re.search(r"Last message repeated \d+ times?$", line):
            line = re.sub(r"^\[[^\]]*\]\s*", "", line)  # "[in#0 @ 0x55d...]": an address means nothing to a user
            return line.split(": ", 1)[-1] if line.startswith(("/", "file:")) else line
    return "ffmpeg could not read it"


def _input_section(stderr: str) -> str:
    """ffmpeg's description of the input alone: the output streams it lists after it repeat some fields."""
    return re.split(r"^(?:Stream mapping:|Output #0)", stderr, maxsplit=1, flags=re.MULTILINE)[0]


def _parse_rotation(stderr: str) -> int:
    # Anchored at the start of a line so that a file name or a metadata value cannot pose as side data.
    match = re.search(r"^\s*display ?matrix: rotation of (-?\d+(?:\.\d+)?) degrees", stderr,
                      re.MULTILINE | re.IGNORECASE)
    if not match:
        return 0
    # ffmpeg reports the display matrix's counter-clockwise angle; only quarter turns matter for size.
    return int(round(-float(match.group(1)) / 90.0)) * 90 % 360


def _parse_sar(stream_line: str) -> Fraction:
    """The pixels' shape as players show them. ffmpeg prints the container's (", SAR a:b DAR c:d") where it differs
    from the codec's ("[SAR a:b DAR c:d]"), and takes the container's, as players do: a ProRes MOV or an MKV made
    anamorphic with -aspect says it only there."""
    match = re.search(r", SAR (\d+):(\d+) DAR", stream_line) or re.search(r"\[SAR (\d+):(\d+)", stream_line)
    if not match or int(match.group(2)) == 0 or int(match.group(1)) == 0:
        return Fraction(1)
    return Fraction(int(match.group(1)), int(match.group(2)))


def _parse_size(stream_line: str) -> tuple[int, int] | None:
    """Coded (width, height); any number of digits, as a 8x6 clip is as valid as a 1920x1080 one."""
    # The size follows ", " and is followed by a space, comma, bracket or the end; a codec tag such
    # as "(avc1 / 0x31637661)" follows "/ " and so never matches.
    match = re.search(r", (\d+)x(\d+)(?=[ ,\[]|$)", stream_line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _video_stream_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if re.match(r"\s*Stream #0:\d+.*?: Video:", line) and "(attached pic)" not in line:
            return line
    return ""


def assumed_matrix(width: int, height: int, colour: Colour) -> str:
    """"bt709" for an HD picture that names no Y'CbCr matrix, else "". ffmpeg reads an untagged picture with
    BT.601's, while players (mpv, VLC, browsers) take one over 576 lines or from 1280 wide for BT.709, as HD
    cameras and editors write it: read with BT.601, its greens and reds came out shifted from what the source
    shows, and so did the render, which is written as BT.709."""
    hd = max(width, height) >= 1280 or min(width, height) > 576
    return "bt709" if hd and not colour.matrix and not colour.hdr else ""


def _parse_colour(stream_line: str) -> Colour:
    """The pixel format's details, "yuv420p10le(tv, bt2020nc/bt2020/arib-std-b67, progressive)": ffmpeg writes
    matrix/primaries/transfer where they differ, one name where all three are the same, "unknown" for one unset."""
    details = re.search(r": Video: [^,]*, \w+\(([^)]*)\)", stream_line)
    if details is None:
        return Colour()
    parts = [part.strip() for part in details.group(1).split(",")]
    names = next((part.split("/") for part in parts if part.count("/") == 2), None)
    if names is None:  # one name for all three, or none at all
        names = [next((part for part in parts if part.startswith(("bt", "smpte"))), "")] * 3
    matrix, primaries, transfer = ("" if name == "unknown" else name for name in names)
    return Colour(matrix, primaries, transfer, "pc" in parts)


def _parse_codec(stream_line: str) -> str:
    match = re.search(r": Video: (\w+)", stream_line)
    return match.group(1) if match else ""


def _check_decodable(path: Path, codec: str, stream_line: str) -> None:
    """Refuse a video whose codec ffmpeg does not know (it names it "none", with the file's own tag): its packets
    copy, so the probe passes, and its decode failed at the first frame with ffmpeg's "no decoder found for: none";
    a web service queued it and failed it only when its turn came."""
    if codec != "none":
        return
    tag = re.search(r": Video: none \(([^/)]*?)\s*/", stream_line)
    named = f" (tagged {tag.group(1).strip()!r})" if tag and tag.group(1).strip() else ""
    raise VideoOpenError(f"{path}'s video is in a format this ffmpeg cannot decode{named}: convert it with a tool "
                         "that reads it, or use an ffmpeg that does (IMAGEIO_FFMPEG_EXE names one)")


def _parse_audio(stderr: str) -> tuple[str, ...]:
    return tuple(codec for codec, _ in _audio_streams(stderr))


def _audio_streams(stderr: str) -> list[tuple[str, bool]]:
    """(codec, whether it holds audio) of each audio stream, in the file's order."""
    found = re.findall(r"^\s*Stream #0:(\d+)\S*: Audio: (\w+)(.*)$", stderr, re.MULTILINE)
    # A transport stream lists a stream under each programme that carries it: each stream once.
    once = {index: (codec, re.search(r", 0 channels\b", rest) is None) for index, codec, rest in reversed(found)}
    return [once[index] for index in sorted(once, key=int)]


@dataclass(frozen=True)
class _Timing:
    time_base: Fraction
    stamps: list[int]  # presentation timestamps of the packets that become frames, sorted
    key_stamps: list[int]  # those of the packets flagged as keyframes
    last_duration: int = 0  # the last frame's own duration in the time base, where its packet gives one

    def keyframe_indices(self) -> tuple[int, ...]:
        """Frame indices of the keyframes; none when two frames share a timestamp (which one would it be?)."""
        index = {stamp: i for i, stamp in enumerate(self.stamps)}
        if len(index) != len(self.stamps):
            return ()
        return tuple(sorted(index[stamp] for stamp in self.key_stamps))


def _parse_timing(framecrc: str) -> _Timing:
    """Time base and sorted presentation timestamps of the video packets that become frames."""
    tb_match = re.search(r"^#tb 0: (\d+)/(\d+)", framecrc, re.MULTILINE)
    if not tb_match:
        raise VideoOpenError("ffmpeg reported no video timing")
    time_base = Fraction(int(tb_match.group(1)), int(tb_match.group(2)))
    stamps: list[int] = []
    key_stamps: list[int] = []
    durations: dict[int, int] = {}
    for line in framecrc.splitlines():
        if line.startswith("#"):
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 4:
            continue
        # framecrc writes flags only where they are not the keyframe flag alone.
        flags = next((int(c[2:], 16) for c in cols[6:] if c.startswith("F=0x")), _KEY_FLAG)
        if flags & _DISCARD_FLAG:
            continue
        dts, pts = int(cols[1]), int(cols[2])
        stamp = pts if pts > -(2**62) else dts  # packets without pts carry INT64_MIN
        stamps.append(stamp)
        durations[stamp] = int(cols[3])
        if flags & _KEY_FLAG:
            key_stamps.append(stamp)
    stamps.sort()
    return _Timing(time_base, stamps, key_stamps, max(0, durations[stamps[-1]]) if stamps else 0)


def _frame_rate(time_base: Fraction, stamps: list[int], fallback: Fraction) -> tuple[Fraction, bool]:
    """Exact rate when every frame lasts the same number of ticks, else the average (variable rate)."""
    if len(stamps) < 2:
        return fallback, False
    steps = {b - a for a, b in zip(stamps, stamps[1:], strict=False)}
    span = stamps[-1] - stamps[0]
    if span <= 0:
        return fallback, False
    average = Fraction(len(stamps) - 1, 1) / (span * time_base)
    if len(steps) == 1:
        return average, False
    # Containers with coarse time bases alternate between two neighbouring durations (e.g. 33/34 ms).
    variable = max(steps) - min(steps) > 1
    return average.limit_denominator(1_000_000), variable


def _fallback_fps(stream_line: str) -> Fraction:
    match = re.search(r"(\d+(?:\.\d+)?) fps", stream_line)
    return Fraction(match.group(1)).limit_denominator(1001) if match else Fraction(25)


def missing_input(path: Path) -> InputError:
    """The error for an input video that is not there, or is a web address given as one."""
    address = address_problem(path, "input", "video")  # the video is read, and re-read on resume, from a file
    if address is not None:
        return InputError(address)
    if is_standard_input(path):
        return _standard_input_error(path)
    return InputError(f"input not found: {path}")


def _standard_input_error(path: Path) -> InputError:
    """A video is read more than once (probed, decoded, read again to resume), so from a file, named as such."""
    real = Path(os.path.realpath(path))
    named = f": give its name, {real}" if real.is_file() and not str(real).startswith(("/proc/", "/dev/")) else \
        "; save the video to a file and give its name"
    return InputError(f"input {path} is standard input, which vidstyle does not read (it reads a video more than "
                      f"once){named}")


def refuse_directory(path: Path) -> None:
    """A directory given as the input video: said as such, before a name is made from it for the output."""
    if path.is_dir():
        raise InputError(f"input is a directory, not a video: {path}")


def _check_regular_file(path: Path) -> None:
    """Refuse what ffmpeg would block on (a FIFO waits for a writer forever) or cannot seek and re-read."""
    if is_standard_input(path):
        raise _standard_input_error(path)
    try:
        found = path.stat()
    except FileNotFoundError:
        raise missing_input(path) from None
    except OSError as exc:
        raise InputError(f"cannot read input {path}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(found.st_mode):
        raise InputError(f"input is a directory, not a video: {path}")
    kind = special_file_kind(found.st_mode)
    if kind is not None:
        raise InputError(f"input {path} is {kind}, not a regular file; save the video to a file first")
    if found.st_size == 0:  # ffmpeg's own words for it name a part of the format ("moov atom not found")
        raise VideoOpenError(f"input {path} is empty (0 bytes): a download or copy that did not finish?")


def _is_readable_picture(path: Path) -> bool:
    """Whether a file that ffmpeg takes for a picture by its name or first bytes (the probe copies its one packet,
    decoding nothing) is one: a text file named .png is not, and is no still image to paint either."""
    from vidstyle.io.images import read_image  # OpenCV: loaded on this refusal's path only

    try:
        read_image(path)
    except ImageTooLarge:
        return True
    except AnimatedPicture:
        # An ffmpeg before 8 reads an animated WebP as its first picture alone ("skipping unsupported chunk: ANIM").
        raise VideoOpenError(f"{path} is an animated picture whose frames the ffmpeg in use cannot read (ffmpeg "
                             "before 8 reads an animated WebP's first alone): use a newer one (imageio-ffmpeg "
                             "0.8.1's reads them), or convert it to a video") from None
    except InputError:
        return False
    return True


# What a file is that ffmpeg would read others through (io.ffmpeg.input_args refuses these formats).
_NAMING_KINDS = {"hls": "an HLS playlist", "dash": "a DASH manifest", "concat": "a concat list",
                 "imf": "an IMF composition", "sdp": "an SDP session description"}


def _check_is_video(path: Path, code: int, err: str, frames: int) -> None:
    image = _IMAGE_FORMATS.search(err)
    if image and not (image.group(1) in _ANIMATED_FORMATS and frames > 1):
        if not _is_readable_picture(path):
            raise VideoOpenError(f"{path} is neither a video nor a readable picture")
        raise VideoOpenError(f"{path} is a still image, not a video")
    if "matches no streams" in err or (code == 0 and not _video_stream_line(_input_section(err))):
        # With an audio stream it is most likely an audio file; with none (a stream of no known kind, as a cut-short
        # MP4's index leaves), a damaged one.
        guess = "is it an audio file?" if _parse_audio(_input_section(err)) else "it may be truncated or damaged"
        if "(attached pic)" in _input_section(err):
            guess = "an audio file: its one picture is a cover, not a video"
        raise VideoOpenError(f"{path} has no video stream that ffmpeg can read ({guess})")
    if code != 0 and "Error opening input" in err and (kind := refused_format(path)) is not None:
        what = _NAMING_KINDS.get(kind) or (f"a file of ffmpeg's {kind} format" if kind else "a playlist or manifest")
        raise VideoOpenError(f"{path} is {what}, which names other files or streams to read; vidstyle reads only a "
                             "video file itself: give it the video this one names (its parts joined into one file)")
    if code < 0:  # killed by a signal: the ffmpeg binary itself failed, whatever the file holds
        raise VideoOpenError(f"cannot read {path} as a video: ffmpeg crashed reading it ({_signal_name(-code)}); "
                             f"another ffmpeg build may read it (vidstyle runs {ffmpeg_exe()}; IMAGEIO_FFMPEG_EXE "
                             "names another)")
    if code != 0:
        raise VideoOpenError(f"cannot read {path} as a video: {_fail_reason(err)}")
    if "partial file" in err:
        raise DamagedVideo(f"{path} is truncated or damaged (ffmpeg: partial file)", _keep_the_readable(path))
    if "File ended prematurely" in err:  # Matroska and WebM cut short: their frames stop where the file does
        raise DamagedVideo(f"{path} is truncated or damaged (ffmpeg: file ended prematurely)", _keep_the_readable(path))


# A video's frames may end this much before the duration its header declares for them (coarse time bases, a muxer's
# rounding) and more than this share of it: beyond both, frames are missing.
_SHORT_BY, _SHORT_SHARE = 0.5, 0.05


def _keep_the_readable(path: Path) -> str:
    fixed = path.with_name(f"{path.stem}.fixed.mkv")
    return f"ffmpeg -i {shlex.quote(str(path))} -c copy {shlex.quote(str(fixed))} keeps the part that can be read"


def _stream_metadata(err: str, stream_line: str) -> list[str]:
    """The lines ffmpeg prints under a stream's own line (its metadata, side data), up to the next stream's."""
    lines = _input_section(err).splitlines()
    if stream_line not in lines:
        return []
    block = lines[lines.index(stream_line) + 1:]
    return list(itertools.takewhile(lambda line: not re.match(r"\s*Stream #", line), block))


def _declared_duration(metadata: list[str]) -> float | None:
    """The stream's duration as its header declares it (the DURATION tag that Matroska and WebM keep a stream), in
    seconds; None where it declares none."""
    for line in metadata:
        match = re.match(r"\s*DURATION\s*: (\d+):(\d\d):(\d\d(?:\.\d+)?)\s*$", line)
        if match:
            return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))
    return None


def _check_complete(path: Path, metadata: list[str], start: float | None, end: float) -> None:
    """Refuse a video whose frames end well before the duration its header declares for them: damaged in the
    middle (a Matroska file whose structure breaks there), its frames after the damage lost. A render of the
    frames before it would be half the video, said by nothing. `start` is the first frame's time on the file's
    clock (None where the file names no start: then this is not checked) and `end` the last frame's end on it.
    ffmpeg's muxer declares the end on that clock (a stream that starts at 3600 s and lasts 5 declares 3605), others
    may declare the length alone, so the frames fall short only where they fall short of both."""
    declared = _declared_duration(metadata)
    if declared is None or start is None:
        return
    if declared - max(end, end - start) > max(_SHORT_BY, _SHORT_SHARE * declared):
        raise DamagedVideo(f"{path} is truncated or damaged: its frames end at {end:.2f} s of the {declared:.2f} s its "
                           "header declares", _keep_the_readable(path))


_RIFF_UNSET = (0, 0xFFFFFFFF)  # a chunk length a writer that streams leaves for later: no length declared
# Bytes a chunk may claim past the file's end and be whole: some writers count the chunk's own 8-byte header in its
# length (ffmpeg's reader takes such files), and a last chunk of odd length may lack its pad byte.
_RIFF_SLACK = 9


def _check_riff_whole(path: Path) -> None:
    """Refuse an AVI cut short (a copy or download that did not finish, a file cut by a full disk): its index at
    the end gone, ffmpeg reads the frames that are there without a word, so a render would be part of the video,
    said by nothing. Each RIFF chunk (the AVI one, then OpenDML's AVIX ones) declares its length, so one that ends
    past the file's end was cut there. A writer killed before it declared the length (a capture's, say) leaves no
    whole to compare with: what was written is the video."""
    size = path.stat().st_size
    with path.open("rb") as file:
        at = 0
        while at + 12 <= size:
            file.seek(at)
            head = file.read(12)
            if head[:4] != b"RIFF" or head[8:12] not in (b"AVI ", b"AVIX"):
                return
            length = int.from_bytes(head[4:8], "little")
            if length in _RIFF_UNSET:
                return
            if at + 8 + length > size + _RIFF_SLACK:
                raise DamagedVideo(f"{path} is truncated or damaged: it ends at byte {size} of the {at + 8 + length} "
                                   "its AVI header declares", _keep_the_readable(path))
            at += 8 + length + (length & 1)  # chunks start on even bytes


def _count_packet_lines(framecrc: str) -> int:
    return sum(1 for line in framecrc.splitlines() if line and not line.startswith("#"))


def probe_video(path: Path) -> VideoInfo:
    """Read a video's facts or raise a one-line VideoOpenError / InputError saying what is wrong."""
    path = Path(path)
    _check_regular_file(path)
    code, out, full_err = run_ffmpeg([*input_args(path), "-map", VIDEO_STREAM, "-c", "copy", "-f", "framecrc", "-"])
    err = _input_section(full_err)
    framecrc = out.decode("ascii", "replace")
    _check_is_video(path, code, full_err, _count_packet_lines(framecrc))
    _check_riff_whole(path)
    stream_line = _video_stream_line(err)
    metadata = _stream_metadata(err, stream_line)
    timing = _parse_timing(framecrc)
    time_base, stamps = timing.time_base, timing.stamps
    if not stamps:
        raise VideoOpenError(f"{path} contains no video frames")
    size = _parse_size(stream_line)
    if size is None:
        raise VideoOpenError(f"cannot tell the picture size of {path}")
    coded_w, coded_h = size
    display_w = max(1, round(coded_w * _parse_sar(stream_line)))
    rotation = _parse_rotation(err)
    width, height = (coded_h, display_w) if rotation in (90, 270) else (display_w, coded_h)
    fps, variable = _frame_rate(time_base, stamps, _fallback_fps(stream_line))
    codec = _parse_codec(stream_line)
    _check_decodable(path, codec, stream_line)
    interlaced = rotation == 0 and (_INTERLACED.search(stream_line) is not None or codec in _INTERLACED_CODECS)
    colour = _parse_colour(stream_line)
    _check_tone_mapping(path, colour)
    audio = _audio_streams(err)
    info = VideoInfo(
        path=path,
        width=width,
        height=height,
        rotation=rotation,
        fps=fps,
        frame_count=len(stamps),
        variable_rate=variable,
        audio_codecs=tuple(name for name, holds in audio if holds),
        audio_positions=tuple(i for i, (_, holds) in enumerate(audio) if holds),
        empty_audio=sum(not holds for _, holds in audio),
        coded_size=(coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h),
        digest=_digest(framecrc, width, height, rotation, interlaced, colour.hdr,
                       assumed_matrix(width, height, colour)),
        frame_times=tuple(float((stamp - stamps[0]) * time_base) for stamp in stamps),
        keyframes=timing.keyframe_indices(),
        codec=codec,
        subtitle_streams=len(set(re.findall(r"^\s*Stream #0:(\d+)\S*: Subtitle:", _input_section(err),
                                            re.MULTILINE))),  # each once, whatever programmes list it
        other_video_streams=max(0, len(set(re.findall(r"^\s*Stream #0:(\d+)\S*: Video:(?!.*\(attached pic\))",
                                                      _input_section(err), re.MULTILINE))) - 1),
        interlaced=interlaced,
        colour=colour,
        alpha=_has_alpha(stream_line, metadata) and (codec not in _ALWAYS_ALPHA or _any_transparent(path)),
    )
    start = _start_time(err, stamps[0] * time_base)
    # The last frame lasts its packet's own duration (a variable-rate file's last frame may be held for seconds).
    last = timing.last_duration * time_base if timing.last_duration > 0 else 1 / fps
    _check_complete(path, metadata, start, (start or 0.0) + info.frame_times[-1] + float(last))
    return info


# Pixel formats with an alpha channel, as ffmpeg names them: yuva420p, rgba, bgra, argb, abgr, gbrap12le, ya8, ...
_ALPHA_FORMATS = re.compile(r"Video: [^,]*, (?:yuva|rgba|bgra|argb|abgr|gbrap|ya8|ya16|rgba64|bgra64)\w*[(,]")


# Codecs whose decoder gives every picture an alpha channel, whether the file makes a pixel transparent or not.
_ALWAYS_ALPHA = frozenset({"gif", "apng", "webp_anim"})


# Pictures of a GIF, APNG or animated WebP looked at for a transparent pixel: its first ones, as the probe runs before
# any size check and for every run (a long screen recording would be decoded whole each time).
_ALPHA_LOOK_FRAMES = 250


def _any_transparent(path: Path) -> bool:
    """Whether one of the first pictures of the video has a pixel that is not opaque."""
    try:
        # 8-bit alpha first: a 16-bit APNG's would be measured on a scale of 65535.
        code, _out, err = run_ffmpeg([*input_args(path), "-map", VIDEO_STREAM, "-frames:v", str(_ALPHA_LOOK_FRAMES),
                                      "-vf", "format=rgba,alphaextract,signalstats,"
                                             "metadata=print:key=lavfi.signalstats.YMIN", "-f", "null", "-"],
                                     timeout=60)
    except subprocess.TimeoutExpired:
        return True  # where it cannot be told, as its format says
    least = [int(v) for v in re.findall(r"lavfi\.signalstats\.YMIN=(\d+)", err)]
    return code != 0 or not least or min(least) < 255


def _has_alpha(stream_line: str, metadata: list[str]) -> bool:
    """Whether the video's pictures hold transparency: a pixel format with alpha, or the alpha_mode a WebM keeps
    in the stream's metadata for VP8/VP9 (decoded without it, the format does not show it)."""
    return _ALPHA_FORMATS.search(stream_line) is not None or \
        any(re.match(r"\s*alpha_mode\s*: 1\s*$", line) for line in metadata)


# ffmpeg's summary line of the input, "Duration: 00:00:05.00, start: 0.000000, bitrate: ...".
_FILE_START = re.compile(r"^\s*Duration: [^,]*, start: (-?\d+(?:\.\d+)?)", re.MULTILINE)


def file_start(stderr: str) -> Fraction | None:
    """The file's start on its own clock (its earliest stream's first timestamp), as ffmpeg's description of the
    input gives it; None where it gives none."""
    match = _FILE_START.search(stderr)
    return Fraction(match.group(1)) if match else None


def _start_time(err: str, shifted: Fraction) -> float | None:
    """When the video begins on the file's clock: ffmpeg shifts the timestamps it copies by the file's start (its
    earliest stream's), so the video's first, `shifted`, is that far after it. None where the file names no start."""
    start = file_start(_input_section(err))
    return float(start + shifted) if start is not None else None


# Codecs whose streams name no field order where ffmpeg can see it without decoding, though their pictures are
# interlaced: DV (camcorders) flags each decoded frame. bwdif's deint=interlaced touches only the frames flagged:
# 720p DV passes as it is, while SD DV flags every frame interlaced, so progressive footage in it is deinterlaced
# too, a little softer (SD DV is shot interlaced all but always).
_INTERLACED_CODECS = frozenset({"dvvideo"})
# The field order in the stream's line, "yuv420p(tv, bt709, top first)" or "(top coded first (swapped))".
_INTERLACED = re.compile(r"[(,] ?(?:top|bottom)(?: coded)? first\b")


def _check_tone_mapping(path: Path, colour: Colour) -> None:
    """Refuse an HDR video that the ffmpeg in use cannot tone-map (one without libzimg), rather than paint it dim
    and grey or fail at its first frame."""
    missing = missing_filters("zscale", "tonemap") if colour.hdr else []
    if missing:  # the ffmpeg's fault, not the file's: not an InputError
        raise VidstyleError(f"{path} is HDR ({colour.transfer}), and the ffmpeg in use cannot tone-map it to SDR: "
                             f"it lacks the {' and '.join(missing)} filter(s); unset IMAGEIO_FFMPEG_EXE to use "
                             "imageio-ffmpeg's own, which has them")


def _digest(framecrc: str, width: int, height: int, rotation: int, interlaced: bool, hdr: bool,
            matrix: str) -> str:
    # Deinterlaced, tone-mapped or otherwise read frames are other pictures: checkpoints made from the frames as
    # they were read before are not resumed from them.
    reading = (" deinterlaced" if interlaced else "") + (" tone-mapped" if hdr else "") + \
        (f" read as {matrix}" if matrix else "")
    hasher = hashlib.sha256(f"{width}x{height}@{rotation}{reading}\n".encode())
    for line in framecrc.splitlines():
        if not line.startswith("#software"):  # the muxer's version: a new ffmpeg must not orphan checkpoints
            hasher.update(line.encode("ascii", "replace") + b"\n")
    return hasher.hexdigest()[:32]


def size_to_fit(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) with the long side at `long_side`, aspect kept, both even (H.264 4:2:0 needs it)."""
    long = max(2, int(round(long_side / 2.0)) * 2)
    # The short side from the long side as evened, not as asked: from an odd one (65 -> 64) it came out a pixel or
    # two off the picture's shape.
    short = max(2, int(round(min(width, height) * long / max(width, height) / 2.0)) * 2)
    return (long, short) if width >= height else (short, long)


def check_times(start: float | None, end: float | None) -> tuple[float, float]:
    """`start` and `end` as (begin, finish) seconds, each a number of at least 0 (None: the video's start, end)."""
    begin = check_seconds("start", start) if start is not None else 0.0
    finish = check_seconds("end", end) if end is not None else math.inf
    return begin, finish


def check_seconds(name: str, value: object) -> float:
    """A time argument as a float: any real number (NumPy's too) of at least 0, not a bool or NaN."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SettingError(name, f"must be a number of seconds (got {value!r:.40})")
    seconds = float(value)
    if math.isnan(seconds) or seconds < 0:
        raise SettingError(name, f"must be a time of at least 0 seconds (got {seconds:g})")
    return seconds


def frame_times(info: VideoInfo) -> tuple[float, ...]:
    """Each frame's time in seconds from the first: the probe's timestamps, or the constant rate's."""
    return info.frame_times or tuple(i / float(info.fps) for i in range(info.frame_count))


def shown_at(info: VideoInfo, times: tuple[float, ...], moment: float, setting: str) -> int:
    """The frame a player shows at `moment` seconds (`times`: frame_times(info)): the last one starting at or before
    it; a moment at or past the video's end is refused, naming `setting`. A hair of tolerance: 0.24 s typed for a
    frame stamped 0.24000000000000002 s means that frame."""
    if moment >= info.duration:  # also a moment so large that adding a duration to it changes nothing
        raise SettingError(setting, f"{moment:g} s is past the end of the video, which lasts {info.duration:.3f} s")
    return min(info.frame_count - 1, max(0, bisect.bisect_right(times, moment + 1e-9) - 1))


def check_order(begin: float, finish: float) -> None:
    if finish <= begin:
        raise SettingError("end", f"must come after the start ({finish:g} s is not after {begin:g} s)")


def trim_frames(info: VideoInfo, start: float | None, end: float | None) -> tuple[int, int] | None:
    """Frames [first, stop) that a player shows at some moment in [start, end) seconds: the first is the one on screen
    at `start`, as `preview --at` takes it. By the probe's timestamps (exact for variable frame rates too); None for
    the whole video. The frames are then cut out of a sequential decode."""
    if start is None and end is None:
        return None
    begin, finish = check_times(start, end)
    times = frame_times(info)
    first = shown_at(info, times, begin, "start")
    check_order(begin, finish)
    # The frame on screen at the start is shown in the range however short it is, even within the tolerance.
    stop = max(first + 1, bisect.bisect_left(times, finish - 1e-9))
    return None if (first, stop) == (0, info.frame_count) else (first, stop)
