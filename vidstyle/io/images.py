"""Still images: reading style and content pictures, writing lossless frames atomically."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import cv2
import numpy as np

from vidstyle.errors import InputError, OutputError


def read_image(path: Path, what: str = "image") -> np.ndarray:
    """RGB uint8 (height, width, 3); EXIF orientation applied, grey and alpha images made RGB."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} is a directory: {path}")
    try:
        data = np.fromfile(path, dtype=np.uint8)  # cv2.imread mangles non-ASCII paths on some systems
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if _is_cut_short_png(data):
        raise InputError(f"{what} is truncated (a PNG without its end): {path}")
    if _png_with_alpha(data):
        return _over_white(cv2.imdecode(data, cv2.IMREAD_UNCHANGED))
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise InputError(f"{what} is not a readable image: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _png_with_alpha(data: np.ndarray) -> bool:
    """A PNG whose pixels can be transparent: colour type 4 or 6 (grey or colour with alpha) or a tRNS chunk."""
    if data[:len(_PNG_SIGNATURE)].tobytes() != _PNG_SIGNATURE or data.size < 26:
        return False
    return int(data[25]) in (4, 6) or b"tRNS" in data.tobytes()


def _over_white(pixels: np.ndarray) -> np.ndarray:
    """A transparent picture as a viewer shows it, laid over white; dropping the alpha channel instead would show
    what the file stores under it, usually black, and a painting or photo cut out on transparency would be
    painted as if on a black ground."""
    if pixels.ndim == 2 or pixels.shape[2] not in (2, 4):
        return cv2.cvtColor(_to_8bit(pixels), cv2.COLOR_GRAY2RGB if pixels.ndim == 2 else cv2.COLOR_BGR2RGB)
    scale = float(np.iinfo(pixels.dtype).max)
    colour = pixels[..., :-1].astype(np.float32) / scale
    alpha = pixels[..., -1:].astype(np.float32) / scale
    over = np.round((colour * alpha + (1.0 - alpha)) * 255.0).astype(np.uint8)
    return cv2.cvtColor(over, cv2.COLOR_GRAY2RGB if over.shape[2] == 1 else cv2.COLOR_BGR2RGB)


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    return pixels if pixels.dtype == np.uint8 else (pixels // 257).astype(np.uint8)


# A painting smaller than this on a side has no brush strokes to learn from: it would be scaled up to the render's
# size and painted as flat colour, silently.
MIN_STYLE_SIDE = 16


def read_style_image(path: Path) -> np.ndarray:
    """read_image for a painting, refusing one too small to have a style."""
    rgb = read_image(path, "style image")
    problem = style_size_problem(rgb)
    if problem is not None:
        raise InputError(f"style image {path} {problem}")
    return rgb


def style_size_problem(rgb: np.ndarray) -> str | None:
    """Why a painting is too small to have a style, or None."""
    if min(rgb.shape[:2]) >= MIN_STYLE_SIDE:
        return None
    return f"is {rgb.shape[1]}x{rgb.shape[0]}: a painting needs at least {MIN_STYLE_SIDE} pixels on each side"


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_cut_short_png(data: np.ndarray) -> bool:
    """A PNG whose last chunk (IEND) is missing: libpng would print its own error to stderr before failing, so
    the file is refused here first, in vidstyle's one line."""
    return data[:len(_PNG_SIGNATURE)].tobytes() == _PNG_SIGNATURE and b"IEND" not in data.tobytes()


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height): area averaging when shrinking, bicubic when enlarging."""
    width, height = size
    if (rgb.shape[1], rgb.shape[0]) == (width, height):
        return rgb
    shrinking = width * height < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def encode_image(rgb: np.ndarray, suffix: str = ".png") -> bytes:
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"cannot encode an image as {suffix}")
    return buf.tobytes()


def write_atomic(path: Path, data: bytes, error: type[OutputError] = OutputError) -> None:
    """Write via a temporary name and os.replace, so a crash leaves the old file or the new one, never half."""
    # Unique without a process id: several hosts may write into one shared work directory.
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise error(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_image(path: Path, rgb: np.ndarray, error: type[OutputError] = OutputError) -> None:
    """Save RGB uint8 to `path` (format from its suffix) atomically."""
    write_atomic(Path(path), encode_image(rgb, Path(path).suffix.lower() or ".png"), error)
