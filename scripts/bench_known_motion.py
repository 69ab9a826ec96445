"""Steadiness along a motion known exactly: one real frame panned across the picture at a set speed, or a box of it
sliding over the rest.

    python scripts/bench_known_motion.py CLIP [--at 60] [--size 256] [--frames 12] [--motion 0.3,0.1 ...]
                                         [--box X0,Y0,X1,Y1] [--style PAINTING] [--mode NAME=JSON ...]

The warping errors of `bench_fidelity.py` follow a flow estimated from the source, and a render whose paint moves
along another flow is charged for the difference between the two flows as if it were flicker ("Which flow the
warping error follows" in docs/performance.md). Here the source is frame AT of CLIP, shifted by DX,DY pixels a frame
(bicubic, so by fractions of a pixel too), and the truth is known: each render's warping error is measured along
the true motion, and beside it along Farneback's and DIS's estimates of it, whose own error (mean end-point error in
pixels, where each passes its forward-backward check) is printed first. The renders go through the render's frame
loop as in `bench_fidelity.py` (balanced preset, bf16 unless a mode says otherwise); modes as there, by default
`independent`, `default` and the two flows alone.

With `--box` (fractions of the frame's width and height), only the picture inside that box moves, by DX,DY a frame
on the screen, over the rest of the frame, which stands still: one body moving against its surroundings, as a car
crosses a street. (A pan's DX,DY is the window's motion over the picture, so its picture moves by -DX,-DY on the
screen: the same `--motion` moves a box and a pan's picture opposite ways.)
There the truth holds on the box's pixels (moved by DX,DY) and on the background that the box neither covers nor
uncovers (still); the pixels it uncovers, and a band of its soft edge, are left out of every figure along it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from bench_fidelity import BUILT_IN, parse_modes, run_mode

from vidstyle.assets import builtin_style
from vidstyle.io.decode import Frame, read_frames
from vidstyle.io.images import read_image, resize_rgb
from vidstyle.io.probe import probe_video, size_to_fit
from vidstyle.metrics import measure_frames_along, source_motion, warping_error

MARGIN = 8  # pixels of the panned picture kept outside the frame on every side, so no frame reaches its edge
MODES = {**BUILT_IN, "farneback": {"flow": "farneback"}, "dis": {"flow": "dis"}}


def panned_frames(still: np.ndarray, size: tuple[int, int], motion: tuple[float, float], count: int) -> list[Frame]:
    """`count` frames of `size` (width, height) looking at `still` through a window moving by `motion` a frame."""
    width, height = size
    dx, dy = motion
    need_w, need_h = width + 2 * MARGIN + abs(dx) * count, height + 2 * MARGIN + abs(dy) * count
    scale = max(need_w / still.shape[1], need_h / still.shape[0])
    base = resize_rgb(still, (int(np.ceil(still.shape[1] * scale)), int(np.ceil(still.shape[0] * scale))))
    x0 = MARGIN + (abs(dx) * count if dx < 0 else 0)
    y0 = MARGIN + (abs(dy) * count if dy < 0 else 0)
    frames = []
    for k in range(count):
        shift = np.float32([[1, 0, -(x0 + k * dx)], [0, 1, -(y0 + k * dy)]])
        frames.append(Frame(k, cv2.warpAffine(base, shift, (width, height), flags=cv2.INTER_CUBIC)))
    return frames


@dataclass(frozen=True)
class Truth:
    """One pair's true motion: the backward flow (frame t -> t-1), where it is known, and where a warping error
    along it is counted (where it is known, away from the frame's edge, where the source itself is exact)."""

    backward: np.ndarray
    known: np.ndarray
    counted: np.ndarray


def _away_from_edge(mask: np.ndarray) -> np.ndarray:
    inside = np.zeros(mask.shape, np.float32)
    inside[MARGIN:-MARGIN, MARGIN:-MARGIN] = 1.0
    return mask * inside


def pan_truths(size: tuple[int, int], motion: tuple[float, float], count: int) -> list[Truth]:
    """The panned frames' truth: every pixel moves by `motion`, known everywhere."""
    width, height = size
    backward = np.empty((height, width, 2), np.float32)
    backward[..., 0], backward[..., 1] = motion
    known = np.ones((height, width), np.float32)
    return [Truth(backward, known, _away_from_edge(known))] * (count - 1)


def box_frames(still: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float],
               motion: tuple[float, float], count: int) -> tuple[list[Frame], list[Truth]]:
    """`count` frames of `still` at `size` whose picture inside `box` (fractions x0, y0, x1, y1) slides by `motion`
    a frame over the rest, which stands still; with each pair's truth."""
    width, height = size
    base = resize_rgb(still, size).astype(np.float32)
    x0, y0, x1, y1 = (round(f * n) for f, n in zip(box, (width, height, width, height), strict=True))
    inside = np.zeros((height, width), np.float32)
    inside[y0:y1, x0:x1] = 1.0
    frames, covers = [], []
    for k in range(count):
        shift = np.float32([[1, 0, k * motion[0]], [0, 1, k * motion[1]]])  # content moves by k * motion
        moved = cv2.warpAffine(base, shift, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        cover = cv2.warpAffine(inside, shift, size, flags=cv2.INTER_LINEAR)
        picture = cover[..., None] * moved + (1.0 - cover[..., None]) * base
        frames.append(Frame(k, np.clip(np.rint(picture), 0, 255).astype(np.uint8)))
        covers.append(cover)
    edge = np.ones((5, 5), np.uint8)  # two pixels each side: the box's soft edge and its bicubic ringing
    truths = []
    for before, now in zip(covers, covers[1:], strict=False):
        on_box = cv2.erode((now >= 0.999).astype(np.uint8), edge).astype(bool)
        still_ground = cv2.erode(((now <= 0.001) & (before <= 0.001)).astype(np.uint8), edge).astype(bool)
        backward = np.zeros((height, width, 2), np.float32)
        backward[on_box] = (-motion[0], -motion[1])  # frame t at x shows frame t-1 at x - motion
        known = (on_box | still_ground).astype(np.float32)
        truths.append(Truth(backward, known, _away_from_edge(known)))
    return frames, truths


def flow_error(sources: list[np.ndarray], truths: list[Truth], method: str) -> float:
    """Mean end-point error (pixels) of `method`'s backward flow where its own check passes and the truth is known."""
    errors = []
    for prev, cur, truth in zip(sources, sources[1:], truths, strict=False):
        backward, mask = source_motion(prev, cur, method)
        weight = mask * truth.known
        miss = np.linalg.norm(backward - truth.backward, axis=-1)
        errors.append(float((miss * weight).sum() / max(weight.sum(), 1.0)))
    return float(np.mean(errors))


def true_warping_error(outputs: list[np.ndarray], truths: list[Truth]) -> float:
    pairs = zip(outputs, outputs[1:], truths, strict=False)
    return float(np.mean([warping_error(a, b, truth.backward, truth.counted) for a, b, truth in pairs]))


def _fractions(text: str) -> tuple[float, float, float, float]:
    """--box's X0,Y0,X1,Y1, as argparse's type: a ValueError is its one-line refusal."""
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want four fractions X0,Y0,X1,Y1") from None
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise argparse.ArgumentTypeError(f"{text}: want 0 <= X0 < X1 <= 1 and 0 <= Y0 < Y1 <= 1")
    return x0, y0, x1, y1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--at", type=int, default=60, help="the frame of CLIP that is panned")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--motion", action="append", default=[], metavar="DX,DY",
                        help="pixels a frame at SIZE (default 0.3,0.1 and 1.5,0.4)")
    parser.add_argument("--box", type=_fractions, metavar="X0,Y0,X1,Y1",
                        help="move only the picture in this box (fractions of the frame), over the rest standing still")
    parser.add_argument("--style", type=Path, default=builtin_style("starry-night"))
    parser.add_argument("--mode", action="append", default=[], help="NAME or NAME={json of Config fields}")
    args = parser.parse_args()
    modes = parse_modes(args.mode or ["independent", "default", "farneback", "dis"], MODES)
    info = probe_video(args.clip)
    size = size_to_fit(info.width, info.height, args.size)
    still = next(read_frames(info, size_to_fit(info.width, info.height, 2 * args.size), args.at, args.at + 1)).rgb
    style = read_image(args.style)
    for text in args.motion or ["0.3,0.1", "1.5,0.4"]:
        dx, dy = (float(v) for v in text.split(","))
        if args.box is None:
            frames, truths = panned_frames(still, size, (dx, dy), args.frames), pan_truths(size, (dx, dy), args.frames)
            moved = "panned"
        else:
            frames, truths = box_frames(still, size, args.box, (dx, dy), args.frames)
            moved = f"box {','.join(f'{v:g}' for v in args.box)} moved"
        sources = [f.rgb for f in frames]
        print(f"\n{args.clip.name} frame {args.at} {moved} {dx},{dy} px a frame, {args.frames} frames at "
              f"{size[0]}x{size[1]}, {args.style.name}; flow end-point error: Farneback "
              f"{flow_error(sources, truths, 'farneback'):.3f} px, DIS {flow_error(sources, truths, 'dis'):.3f} px")
        print(f"{'mode':16} {'true':>8} {'Farneback':>9} {'DIS':>8} {'edges':>6} {'style':>6} {'s/frame':>7}")
        # The source's own errors: along the truth none at whole pixels (at a fraction of one, what the metric's
        # bilinear warp blurs), along each flow what that flow leaves unexplained as well: the floor a render that
        # follows the picture is measured against.
        along = measure_frames_along(sources, sources, ("farneback", "dis"))
        print(f"{'source':16} {true_warping_error(sources, truths):8.5f} {along['farneback'].warping_error:9.5f} "
              f"{along['dis'].warping_error:8.5f}", flush=True)
        for name, overrides in modes.items():
            outputs, seconds = run_mode(frames, style, overrides, 0, {"precision": "bf16"})
            along = measure_frames_along(outputs, sources, ("farneback", "dis"), style=style, style_every=1)
            farneback, dis = along["farneback"], along["dis"]
            print(f"{name:16} {true_warping_error(outputs, truths):8.5f} {farneback.warping_error:9.5f} "
                  f"{dis.warping_error:8.5f} {farneback.edge_correlation:6.3f} {farneback.style_gain or 0.0:6.3f} "
                  f"{seconds:7.2f}", flush=True)


if __name__ == "__main__":
    main()
