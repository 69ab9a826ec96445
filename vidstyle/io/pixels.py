"""The most pixels OpenCV decodes from one picture, which it reads once from the environment as it loads."""

from __future__ import annotations

import math
import os

PIXEL_LIMIT_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"
OPENCV_DEFAULT_LIMIT = 1 << 30


def pixel_limit() -> int:
    """The limit in force (where OpenCV has loaded after the environment last changed)."""
    try:
        return int(os.environ.get(PIXEL_LIMIT_VARIABLE, OPENCV_DEFAULT_LIMIT))
    except ValueError:
        return OPENCV_DEFAULT_LIMIT


def pixel_limit_words() -> str:
    """The limit as a message gives it: the count, and the square it makes where it is one (8192x8192), the size a
    person compares a picture with."""
    limit = pixel_limit()
    side = math.isqrt(limit)
    return f"{limit:,} pixels" + (f" ({side}x{side})" if side * side == limit else "")
