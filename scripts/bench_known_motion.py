"""Steadiness along a motion known exactly: one real frame panned across the picture at a set speed.

    python scripts/bench_known_motion.py CLIP [--at 60] [--size 256] [--frames 12] [--motion 0.3,0.1 ...]
                                         [--style PAINTING] [--mode NAME=JSON ...]

The warping errors of `bench_fidelity.py` follow a flow estimated from the source, and a render whose paint moves
along another flow is charged for the difference between the two flows as if it were flicker ("Which flow the
warping error follows" in docs/performance.md). Here the source is frame AT of CLIP, shifted by DX,DY pixels a frame
(bicubic, so by fractions of a pixel too), and the truth is known: each render's warping error is measured along
the true motion, and beside it along Farneback's and DIS's estimates of it, whose own error (mean end-point error in
pixels, where each passes its forward-backward check) is printed first. The renders go through the render's frame
loop as in `bench_fidelity.py` (balanced preset, bf16 unless a mode says otherwise); modes as there, by default
`independent`, `default` and the two flows alone.
"""

from __future__ import annotations

import argparse
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


def flow_error(sources: list[np.ndarray], motion: tuple[float, float], method: str) -> float:
    """Mean end-point error (pixels) of `method`'s backward flow where its own check passes."""
    errors = []
    for prev, cur in zip(sources, sources[1:], strict=False):
        backward, mask = source_motion(prev, cur, method)
        miss = np.linalg.norm(backward - np.float32(motion), axis=-1)
        errors.append(float((miss * mask).sum() / max(mask.sum(), 1.0)))
    return float(np.mean(errors))


def true_warping_error(outputs: list[np.ndarray], motion: tuple[float, float]) -> float:
    height, width = outputs[0].shape[:2]
    backward = np.empty((height, width, 2), np.float32)
    backward[..., 0], backward[..., 1] = motion
    inside = np.zeros((height, width), np.float32)
    inside[MARGIN:-MARGIN, MARGIN:-MARGIN] = 1.0  # away from the frame's edge, where the source itself is exact
    return float(np.mean([warping_error(a, b, backward, inside) for a, b in zip(outputs, outputs[1:], strict=False)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--at", type=int, default=60, help="the frame of CLIP that is panned")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--motion", action="append", default=[], metavar="DX,DY",
                        help="pixels a frame at SIZE (default 0.3,0.1 and 1.5,0.4)")
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
        frames = panned_frames(still, size, (dx, dy), args.frames)
        sources = [f.rgb for f in frames]
        print(f"\n{args.clip.name} frame {args.at} panned {dx},{dy} px a frame, {args.frames} frames at "
              f"{size[0]}x{size[1]}, {args.style.name}; flow end-point error: Farneback "
              f"{flow_error(sources, (dx, dy), 'farneback'):.3f} px, DIS {flow_error(sources, (dx, dy), 'dis'):.3f} px")
        print(f"{'mode':16} {'true':>8} {'Farneback':>9} {'DIS':>8} {'edges':>6} {'style':>6} {'s/frame':>7}")
        for name, overrides in modes.items():
            outputs, seconds = run_mode(frames, style, overrides, 0, {"precision": "bf16"})
            along = measure_frames_along(outputs, sources, ("farneback", "dis"), style=style, style_every=1)
            farneback, dis = along["farneback"], along["dis"]
            print(f"{name:16} {true_warping_error(outputs, (dx, dy)):8.5f} {farneback.warping_error:9.5f} "
                  f"{dis.warping_error:8.5f} {farneback.edge_correlation:6.3f} {farneback.style_gain or 0.0:6.3f} "
                  f"{seconds:7.2f}", flush=True)


if __name__ == "__main__":
    main()
