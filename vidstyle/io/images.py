"""Still images: reading style and content pictures, writing lossless frames atomically."""

from __future__ import annotations

import contextlib
import os
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidstyle.errors import AnimatedPicture, ImageTooLarge, InputError, OutputError
from vidstyle.io.paths import (
    address_problem,
    is_standard_input,
    rename_keeping,
    special_file_kind,
    sync_folder,
)
from vidstyle.io.pixels import pixel_limit_words

# Output formats a still's transparency is written in. Not BMP, whose fourth byte viewers mostly ignore (read_picture
# too), nor TIFF: OpenCV writes its fourth channel without the tag that says it is alpha.
ALPHA_SUFFIXES = (".png", ".webp")


@dataclass(frozen=True)
class Picture:
    """A still as read: its colours as a viewer shows them (over white where transparent) and its opacity."""

    rgb: np.ndarray  # uint8 (height, width, 3)
    alpha: np.ndarray | None  # uint8 (height, width), 255 opaque; None where every pixel is opaque


def read_image(path: Path, what: str = "image") -> np.ndarray:
    """RGB uint8 (height, width, 3); EXIF orientation applied, grey and alpha images made RGB."""
    return read_picture(path, what).rgb


def read_picture(path: Path, what: str = "image") -> Picture:
    """read_image's colours, and the picture's alpha where some pixel is transparent (turned as the colours are)."""
    path = Path(path)
    if is_standard_input(path):  # OpenCV cannot take it; a picture read so would be gone for the next read
        raise InputError(f"{what} {path} is standard input, which vidstyle does not read; save the picture to a file "
                         "and give its name")
    address = None if path.exists() else address_problem(path, what, "picture")
    if address is not None:
        raise InputError(address)
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} is a directory: {path}")
    kind = special_file_kind(path.stat().st_mode)
    if kind is not None:
        raise InputError(f"{what} {path} is {kind}, not a regular file; save the picture to a file first")
    try:
        data = np.fromfile(path, dtype=np.uint8)  # cv2.imread mangles non-ASCII paths on some systems
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    problem, transparent, frames = _png_check(data)
    if problem is not None:
        raise InputError(f"{what} is {problem}: {path}")
    bgr = _decode(data, cv2.IMREAD_COLOR, what, path) if data.size else None
    if bgr is None:
        if _looks_like_video(data[:16].tobytes()):
            raise InputError(f"{what} {path} is a video, not a still image")
        raise InputError(f"{what} is not a readable image: {path}")
    animated = "GIF" if _is_animated_gif(data) else "PNG" if frames > 1 else "WebP" if _is_animated_webp(data) else None
    if animated is not None:
        # OpenCV reads its first frame alone; painted as a still, the animation would be lost without a word.
        raise AnimatedPicture(f"{what} {path} is an animated {animated}, not a still image")
    if transparent or _may_hold_alpha(data):
        return _over_white(_decode(data, cv2.IMREAD_UNCHANGED, what, path), bgr)
    return Picture(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None)


def _may_hold_alpha(data: np.ndarray) -> bool:
    """WebP, TIFF (and BigTIFF) and GIF, by their first bytes: pictures that may be transparent without saying so
    up front, as PNG's header does (_png_check); their alpha is known only once decoded. BMP is left out: the fourth
    byte of a 32-bit BMP pixel is often unused, zero, and would make the whole picture transparent."""
    head = data[:12].tobytes()
    return (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or \
        head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"GIF8")


# ISO file brands of still pictures (HEIF/HEIC, AVIF, and their sequences of stills): the container is MP4's.
_STILL_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"})


def _looks_like_video(head: bytes) -> bool:
    """The first bytes of the common video containers: MP4/MOV (an ISO box: its size, then `ftyp` or another
    top-level box's type), Matroska/WebM (EBML's magic), AVI (RIFF, then AVI) and MPEG program streams."""
    if head[4:8] == b"ftyp":
        return head[8:12] not in _STILL_BRANDS
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return True
    return head.startswith((b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba")) or (head[:4] == b"RIFF" and head[8:11] == b"AVI")


def _is_animated_gif(data: np.ndarray) -> bool:
    """A GIF of more than one frame (only its first two are decoded to tell)."""
    if data[:4].tobytes() != b"GIF8":
        return False
    try:
        ok, frames = cv2.imdecodemulti(data, cv2.IMREAD_COLOR, range=(0, 2))
    except cv2.error:
        return False
    return bool(ok) and len(frames) > 1


def _is_animated_webp(data: np.ndarray) -> bool:
    """A WebP of more than one frame: its RIFF chunks (a header's fields, no decoding) hold several ANMF frames."""
    raw = data.tobytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WEBP":
        return False
    frames, position = 0, 12
    while position + 8 <= len(raw) and frames < 2:
        frames += raw[position:position + 4] == b"ANMF"
        position += 8 + (int.from_bytes(raw[position + 4:position + 8], "little") + 1) // 2 * 2  # padded to even
    return frames > 1


def _decode(data: np.ndarray, flags: int, what: str, path: Path) -> np.ndarray | None:
    """cv2.imdecode, whose refusals (a picture over its pixel limit, found in the header) are one line."""
    try:
        return cv2.imdecode(data, flags)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise ImageTooLarge(f"{what} has more than {pixel_limit_words()}, the most read here: {path}") from None
        raise InputError(f"{what} is not a readable image: {path}") from None


def _over_white(pixels: np.ndarray | None, decoded: np.ndarray) -> Picture:
    """A transparent picture as a viewer shows it, laid over white, and its alpha; `decoded` is OpenCV's BGR
    decoding of the same file, which drops the alpha channel and shows what the file stores under it, usually
    black: a painting or photo cut out on transparency would be painted as if on a black ground."""
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 4 or _all_opaque(pixels):
        # No alpha channel kept, or nothing transparent in it.
        return Picture(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), None)
    scale = float(np.iinfo(pixels.dtype).max)
    rgb = np.empty((*pixels.shape[:2], 3), np.uint8)
    opacity = np.empty(pixels.shape[:2], np.uint8)
    # In strips of rows: the float arrays of the whole of a large picture took about 50 bytes a pixel.
    for rows in _strips(pixels):
        strip = pixels[rows]
        alpha = strip[..., 3:].astype(np.float32) / scale
        over = strip[..., 2::-1] * (alpha / scale) + (1.0 - alpha)  # BGR read backwards: RGB
        rgb[rows] = np.round(over * 255.0)
        opacity[rows] = np.round(alpha[..., 0] * 255.0)
    turn = _turn_like(pixels[..., :3], decoded)
    return Picture(turn(rgb), turn(opacity))


# Pixels composited at a time (_over_white), and compared at most to find a picture's orientation (_turn_like).
_STRIP_PIXELS = 1 << 20


def _strips(pixels: np.ndarray) -> Iterator[slice]:
    """The picture's rows, _STRIP_PIXELS pixels' worth at a time."""
    step = max(1, _STRIP_PIXELS // pixels.shape[1])
    return (slice(top, top + step) for top in range(0, pixels.shape[0], step))


def _all_opaque(pixels: np.ndarray) -> bool:
    top = np.iinfo(pixels.dtype).max
    return all((pixels[rows, :, 3] == top).all() for rows in _strips(pixels))


def straight_colours(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """_over_white undone: the colours to store under `alpha` so that the picture, laid over white as a viewer
    does, shows `rgb`. A still is painted over white (read_picture): stored with its alpha as it is, every soft
    edge would be laid over white twice, a pale fringe. Where a pixel is transparent its colour is kept."""
    out = rgb.copy()
    for rows in _strips(rgb):
        opacity = alpha[rows].astype(np.float32)[..., None] / 255.0
        under = (rgb[rows].astype(np.float32) - 255.0 * (1.0 - opacity)) / np.maximum(opacity, 1e-6)
        out[rows] = np.where(opacity > 0, np.clip(np.round(under), 0, 255), rgb[rows])
    return out


def _turn_like(stored: np.ndarray, decoded: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The turn OpenCV gave `stored` (the file's BGR colours as stored, 8 or 16 bits) to make `decoded` by the
    file's EXIF orientation, which only its colour decoding applies, to give it to the picture's other arrays: of
    the eight turns and flips, the one that matches (on an even sample of pixels: a large picture is not copied
    eight times to be compared)."""
    step = max(1, int(np.sqrt(decoded.shape[0] * decoded.shape[1] / _STRIP_PIXELS)))
    sample = decoded[::step, ::step].astype(np.int16)
    for turns in range(4):
        for flip in (False, True):
            candidate = _turned(stored, turns, flip)
            if candidate.shape == decoded.shape and \
                    np.abs(_to_8bit(candidate[::step, ::step]).astype(np.int16) - sample).max() <= 1:
                return lambda pixels, turns=turns, flip=flip: np.ascontiguousarray(_turned(pixels, turns, flip))
    return lambda pixels: pixels


def _turned(pixels: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """A view of `pixels` turned clockwise by `turns` quarters, then mirrored left to right if `flip`."""
    out = np.rot90(pixels, -turns)
    return out[:, ::-1] if flip else out


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """16-bit levels as OpenCV's 8-bit colour decoding makes them (the high byte)."""
    return pixels if pixels.dtype == np.uint8 else (pixels >> 8).astype(np.uint8)


# A painting smaller than this on a side has no brush strokes to learn from: it would be scaled up to the render's
# size and painted as flat colour, silently.
MIN_STYLE_SIDE = 16
# A painting whose colours vary less than this (the standard deviation of its most varied channel, 0..255 levels) is
# one flat colour, a blank export or a solid fill: it has no strokes to learn, and the palette start, which gives a
# frame the painting's colour spread, would paint every frame that one colour, the picture gone. A JPEG of a solid
# colour varies by well under one level; a painting, by tens.
MIN_STYLE_SPREAD = 2.0
# Pixels sampled to measure that spread: enough for a figure to a fraction of a level, few enough for any picture.
_SPREAD_SAMPLE = 1 << 20


def read_style_image(path: Path) -> np.ndarray:
    """read_image for a painting, refusing one that has no style to learn (too small, one flat colour)."""
    rgb = read_image(path, "style image")
    problem = style_problem(rgb)
    if problem is not None:
        raise InputError(f"style image {path} {problem}")
    return rgb


def style_problem(rgb: np.ndarray) -> str | None:
    """Why a picture cannot be a painting to learn a style from (too small, one flat colour), or None."""
    if min(rgb.shape[:2]) < MIN_STYLE_SIDE:
        return f"is {rgb.shape[1]}x{rgb.shape[0]}: a painting needs at least {MIN_STYLE_SIDE} pixels on each side"
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / _SPREAD_SAMPLE)))
    spread = float(rgb[::step, ::step].reshape(-1, 3).std(axis=0).max())
    if spread < MIN_STYLE_SPREAD:
        return (f"is one flat colour (its pixels vary by {spread:.1f} levels): a painting needs strokes and colours "
                "to paint with")
    return None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_check(data: np.ndarray) -> tuple[str | None, bool, int]:
    """What is wrong with a PNG that is cut short or damaged (None: nothing, also for any other kind of file),
    whether its pixels can be transparent: colour type 4 or 6 (grey or colour with alpha), or a tRNS chunk (a
    palette with transparent entries; its letters inside text or pixels do not count, hence the walk), and how many
    frames it holds (an animated PNG's acTL chunk says; 1 for any other).

    libpng prints its own error to stderr before failing on a damaged file; it is refused here first, in vidstyle's
    one line. Each chunk's CRC is checked as libpng would, which finds a damaged byte anywhere in the file.
    """
    if data[:len(_PNG_SIGNATURE)].tobytes() != _PNG_SIGNATURE:
        return None, False, 1
    raw = data.tobytes()
    transparent = len(raw) > 25 and raw[25] in (4, 6)
    frames = 1
    position = len(_PNG_SIGNATURE)
    while True:
        if position + 12 > len(raw):
            return "truncated (a PNG without its end)", transparent, frames
        length = int.from_bytes(raw[position:position + 4], "big")
        end = position + 12 + length
        if end > len(raw):
            return "truncated (a PNG without its end)", transparent, frames
        kind_and_payload = raw[position + 4:end - 4]
        if zlib.crc32(kind_and_payload) != int.from_bytes(raw[end - 4:end], "big"):
            damaged = kind_and_payload[:4].decode("latin-1")
            return f"damaged (its {damaged} chunk fails its checksum)", transparent, frames
        kind = kind_and_payload[:4]
        transparent = transparent or kind == b"tRNS"
        if kind == b"acTL" and length >= 4:
            frames = int.from_bytes(kind_and_payload[4:8], "big")
        if kind == b"IEND":
            return None, transparent, frames
        position = end


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height): area averaging when shrinking, bicubic when enlarging."""
    width, height = size
    if (rgb.shape[1], rgb.shape[0]) == (width, height):
        return rgb
    shrinking = width * height < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def encode_image(rgb: np.ndarray, suffix: str = ".png", error: type[OutputError] = OutputError,
                 alpha: np.ndarray | None = None) -> bytes:
    """The picture's file bytes in the format of `suffix`; `alpha` (uint8, the picture's size) for one of
    ALPHA_SUFFIXES."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(suffix, bgr if alpha is None else np.dstack((bgr, alpha)))
    if not ok:
        raise error(f"cannot encode a {rgb.shape[1]}x{rgb.shape[0]} picture as {suffix}")
    return buf.tobytes()


def write_atomic(path: Path, data: bytes, error: type[OutputError] = OutputError, replace: bool = True) -> None:
    """Write via a temporary name and os.replace, so a crash leaves the old file or the new one, never half.
    Without `replace`, a file that appeared at `path` meanwhile is kept (OutputExists)."""
    with staged(path, data, error) as publish:
        publish(replace)


@contextlib.contextmanager
def staged(path: Path, data: bytes, error: type[OutputError] = OutputError) -> Iterator[Callable[[bool], None]]:
    """`data` written whole under a hidden name beside `path`; the block publishes it at `path` by calling what it
    is given (with `replace`, as write_atomic's), or leaves it to be removed as the block ends. So another file
    can be published between the writing and the publishing, as a still's animation is."""
    # Unique without a process id: several hosts may write into one shared work directory.
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")

    def publish(replace: bool) -> None:
        try:
            if replace:
                os.replace(tmp, path)
            else:
                rename_keeping(tmp, path)
            sync_folder(path.parent)  # the new name too: a checkpoint's is what a resume looks for
        except OSError as exc:
            raise error(f"cannot write {path}: {exc.strerror or exc}") from exc

    try:
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise error(f"cannot write {path}: {exc.strerror or exc}") from exc
        yield publish
    finally:
        tmp.unlink(missing_ok=True)  # gone already where it was published


def write_image(path: Path, rgb: np.ndarray, error: type[OutputError] = OutputError) -> None:
    """Save RGB uint8 to `path` (format from its suffix) atomically."""
    write_atomic(Path(path), encode_image(rgb, Path(path).suffix.lower() or ".png", error), error)
