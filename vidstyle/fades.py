"""Darkening the painted video where its source goes to black: fades to and from black, and black frames.

The optimization paints a black frame as brightly as any other: its content loss holds almost nothing there, and
the style loss and the warm start fill it with the painting. So a clip that faded out ended on a bright painting.
A fade multiplies the picture by a factor, and so does this, on the way to the encoder, for the frames of a fade
and the black frames themselves; every other frame (a dim scene, a flash, a pan into shade, letterboxed footage)
is written as painted. The checkpoints keep the painted frames, so the next frame still warm-starts from the
painting, and the setting can change on a resume.

A fade is found from each frame's mean luma alone: a run of frames that darkens step by step into a black frame
(or brightens step by step out of one), not across a scene cut. Its frames are darkened by their share of the
run's brightest frame; the black frames by the same measure, going from the fade before them to the fade after
them across the run, or by their share of BLACK where neither side fades, so that the factor is continuous where
the source enters and leaves black and a dark scene hovering about BLACK does not flicker.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

# Mean luma (0..255) under which a frame is black: a fade's last frames, a leader, the frames of a dip to black.
BLACK = 16.0
# The most frames a fade is followed back from its black frame (or on from it): 10 s at 30 fps.
LONGEST_FADE = 300
# A fade's step into black is at most this share of its brightest frame: a cut to black is one step of all of it.
_LARGEST_STEP = 0.5
# A rise of over twice a fade's steps so far, and over this share of the frame it reaches, is a cut to another
# picture: the fade is that picture's alone.
_CUT_SHARE = 0.25
# The picture has settled (the fade has ended) where it changes over _SETTLE frames by under _SETTLED of what the
# fade's average pace would change it by: a slow fade (10 s) is followed as far as a fast one.
_SETTLE = 5
_SETTLED = 0.25
# Frames within this share of the fade's brightest frame keep their painted brightness: the source's own jitter
# where the run reaches back into the steady picture before a fade is not written into the video.
_STEADY = 0.05
# A step back against the fade's direction of at most this much (mean luma) still belongs to it: noise.
_JITTER = 1.5

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # Rec. 601, as the source's Y' was made


def mean_luma(rgb: np.ndarray) -> float:
    """A frame's mean luma, 0 (black) .. 255 (white)."""
    return float(rgb.reshape(-1, 3).astype(np.float32).mean(axis=0) @ _LUMA)


def frame_gains(brightness: Sequence[float], first: int = 0, cuts: Collection[int] = ()) -> dict[int, float]:
    """The factor under 1 of each frame to darken, by index; every other frame keeps its painted brightness.

    `brightness` is the mean luma of frames `first` on, as the plan pass measured them; frames it does not cover
    (an older work directory's manifest has none) are left as painted. `cuts` are the plan's scene cuts (frame
    indices): a fade is not followed across one where the brightness jumps too.
    """
    gains: dict[int, float] = {}
    cut_offsets = {c - first for c in cuts}
    for start, stop in _black_runs(brightness):
        references = []
        for run, peak in (_fade(brightness, start - 1, -1, cut_offsets), _fade(brightness, stop, 1, cut_offsets)):
            reference = (1 - _STEADY) * peak
            references.append(reference)
            for i in run:
                if brightness[i] < reference:
                    gains[first + i] = brightness[i] / reference
        for i, reference in zip(range(start, stop), _across(references, stop - start), strict=True):
            gains[first + i] = brightness[i] / reference
    return gains


def _across(references: list[float], frames: int) -> list[float]:
    """Each black frame's reference: that of the fade on either side, going from one to the other across the run
    where there are two (so the factor is continuous where a fade meets the black and follows the source between),
    BLACK where there is none."""
    before, after = (r or next((o for o in references if o), BLACK) for r in references)
    return [before + (after - before) * (k + 1) / (frames + 1) for k in range(frames)]


def _black_runs(brightness: Sequence[float]) -> list[tuple[int, int]]:
    """[start, stop) of each run of black frames."""
    runs: list[tuple[int, int]] = []
    for i, luma in enumerate(brightness):
        if luma < BLACK:
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
    return runs


def _fade(brightness: Sequence[float], edge: int, step: int, cuts: Collection[int]) -> tuple[range, float]:
    """The frames of a fade that reaches black just past `edge` (going by `step`: -1 back from a black run's
    start, 1 on from its end), and its brightest frame's mean luma; no frames, and 0, where there is none.

    The run is followed away from black while the frames keep as bright as its brightest so far (up to jitter),
    until the picture settles, and not across a cut where the brightness jumps: a rise far larger than the steps
    before it. The first step away from black only sets the steps' size: a fast fade's last frame above BLACK can
    be just above it, and its next step then looks large beside the step into black."""
    if not 0 <= edge < len(brightness) or brightness[edge] < BLACK:
        return range(0), 0.0
    into_black = brightness[edge] - brightness[edge - step]
    end, peak, largest = edge, brightness[edge], into_black
    while 0 <= end + step < len(brightness) and abs(end + step - edge) < LONGEST_FADE:
        further = brightness[end + step]
        rise = further - brightness[end]
        if further < peak - _JITTER:
            break  # turned back: the fade is over
        if (end != edge and rise > 2 * largest and rise > _CUT_SHARE * further
                and max(end, end + step) in cuts):
            break  # a cut to another picture, which is not the fade's
        end, peak, largest = end + step, max(peak, further), max(largest, rise)
        travelled = abs(end - edge)
        if travelled >= _SETTLE:
            recent = abs(further - brightness[end - _SETTLE * step])
            if recent < _SETTLED * _SETTLE * (peak - brightness[edge]) / travelled:
                break  # the picture the fade leads to (or comes from) is reached
    if peak < 2 * BLACK or into_black > _LARGEST_STEP * peak:
        return range(0), 0.0  # nothing to fade from, or a cut straight to black
    return range(min(edge, end), max(edge, end) + 1), peak


def darken(rgb: np.ndarray, gain: float) -> np.ndarray:
    """The frame multiplied by `gain`, as a fade multiplies its picture; the frame itself where `gain` is 1 (or
    more: nothing is brightened)."""
    if gain >= 1:
        return rgb
    return np.rint(rgb.astype(np.float32) * gain).astype(np.uint8)


def fade_note(darkened: int) -> str:
    """The start's line for a render that darkens frames: the painting's look changes there, which a person should
    know is meant."""
    return (f"{darkened} frame{'s' if darkened != 1 else ''} of fades to or from black "
            f"{'are' if darkened != 1 else 'is'} written darkened with the source")
