"""Darkening the painted video where its source darkens: fades to and from black, and near-black frames.

The optimization paints a black frame as brightly as any other: its content loss holds almost nothing there, and
the style loss and the warm start fill it with the painting. So a clip that fades out ended on a bright painting.
A fade multiplies the picture by a factor, and so does this, on the way to the encoder: a frame whose source is
darker than half its shot's usual brightness is darkened in proportion. The checkpoints keep the painted frames,
so the next frame still warm-starts from the painting, and the setting can change on a resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the plan pass measures brightness with mean_luma: plan imports this module
    from vidstyle.plan import Segment

# A frame keeps its painted brightness down to this share of its shot's usual brightness, and is darkened in
# proportion under it: a shot's ordinary changes of light (a pan into shade, a cloud) stay painted as they are.
DARK_SHARE = 0.5
# Mean luma (0..255) under which a frame is darkened in proportion whatever its shot, so that a black or
# near-black frame stays dark even in a shot that is all dark (a fade's black tail, a black leader); a dim shot
# above it is painted as usual.
DARK = 32.0
# The shot's usual brightness: a high percentile of its frames' mean luma, so a fade or a few dark frames at
# its end do not lower it, and one flash does not raise it.
_USUAL = 90

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601, as the source's Y' was made


def mean_luma(rgb: np.ndarray) -> float:
    """A frame's mean luma, 0 (black) .. 255 (white)."""
    return float(rgb.reshape(-1, 3).astype(np.float32).mean(axis=0) @ _LUMA)


def frame_gains(brightness: Sequence[float], segments: Sequence[Segment]) -> dict[int, float]:
    """The factor under 1 of each frame to darken, by index; every other frame keeps its painted brightness.

    `brightness` is the mean luma of frames segments[0].start on, as the plan pass measured them; frames it does not
    cover (an older work directory's manifest has none) are left as painted.
    """
    if not segments:
        return {}
    first = segments[0].start
    gains = {}
    for start, stop in _reference_spans(_shots(segments), brightness, first):
        span = brightness[start - first:stop - first]
        if not span:
            continue
        reference = max(DARK, DARK_SHARE * float(np.percentile(span, _USUAL)))
        for offset, luma in enumerate(span):
            if luma < reference:
                gains[start + offset] = luma / reference
    return gains


def _shots(segments: Sequence[Segment]) -> list[tuple[int, int]]:
    """[start, stop) of each shot: a fresh segment and the segments that continue it."""
    shots: list[tuple[int, int]] = []
    for segment in segments:
        if segment.fresh or not shots:
            shots.append((segment.start, segment.stop))
        else:
            shots[-1] = (shots[-1][0], segment.stop)
    return shots


def _reference_spans(shots: list[tuple[int, int]], brightness: Sequence[float], first: int) -> list[tuple[int, int]]:
    """Shots joined to the one before wherever they begin with a near-black frame. The cut test compares colours,
    which a frame loses as it fades: a fade's faint frames come out as cuts, sometimes of one frame each, and each
    such piece measured alone would be its own "usual brightness" and be written as painted. A shot that begins
    brighter (a dim scene after a dip to black) is a shot of its own."""
    spans: list[tuple[int, int]] = []
    for start, stop in shots:
        opening = brightness[start - first] if 0 <= start - first < len(brightness) else None
        if spans and opening is not None and opening < DARK:
            spans[-1] = (spans[-1][0], stop)
        else:
            spans.append((start, stop))
    return spans


def darken(rgb: np.ndarray, gain: float) -> np.ndarray:
    """The frame multiplied by `gain` (under 1), as a fade multiplies its picture."""
    return np.rint(rgb.astype(np.float32) * gain).astype(np.uint8)


def fade_note(darkened: int) -> str:
    """The start's line for a render that darkens frames: the painting's look changes there, which a person should
    know is meant."""
    return (f"{darkened} frame{'s' if darkened != 1 else ''} darker than their shot (a fade, near-black frames) "
            f"{'are' if darkened != 1 else 'is'} written darkened with the source")
