"""Where a source frame is detailed and where it is flat.

Two choices of a later frame follow it: how much of the carried paint its temporal target holds on renders under
512 px (sequence.carry_hold) and how strongly the structure term holds its edges (stylize, Config.held_structure).
A flat sky and a street scene's texture need opposite amounts of both.
"""

from __future__ import annotations

import cv2
import numpy as np

from vidstyle.flow import to_gray

# Source gradient (grey levels a pixel, Sobel / 4, blurred, scaled to a DETAIL_AT-px render) from which on a region
# counts as detailed, and at which fully: a sky is under the first, a street scene's texture mostly over the second
# (twice these kept less of the street's style; docs/performance.md "A decay of the carried paint").
DETAIL_FLAT, DETAIL_FULL, DETAIL_AT = 0.25, 1.5, 512


def source_detail(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 in 0..1: how much detail the source frame has around each pixel (see DETAIL_FLAT)."""
    grey = to_gray(rgb).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)) / 4.0
    gradient = cv2.GaussianBlur(gradient, (0, 0), 2.0) * (max(rgb.shape[:2]) / DETAIL_AT)
    return np.clip((gradient - DETAIL_FLAT) / (DETAIL_FULL - DETAIL_FLAT), 0.0, 1.0)
