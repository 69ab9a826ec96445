"""The most pixels OpenCV decodes from one picture, which it reads once from the environment as it loads."""

from __future__ import annotations

import os

PIXEL_LIMIT_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"
OPENCV_DEFAULT_LIMIT = 1 << 30


def pixel_limit() -> int:
    """The limit in force (where OpenCV has loaded after the environment last changed)."""
    try:
        return int(os.environ.get(PIXEL_LIMIT_VARIABLE, OPENCV_DEFAULT_LIMIT))
    except ValueError:
        return OPENCV_DEFAULT_LIMIT
