"""Temporal coherence on a real clip: independent frames vs plain warm start vs flow-warped start (+ temporal loss).

    python scripts/bench_temporal.py [CLIP] [--style STYLE] [--size 96] [--iters 10] [--frames 60]

Prints one table row per mode: warping error (Lai et al. 2018, Farneback flow from the source, so it does not
agree with the renderer's own DIS flow by construction), the source's own warping error (the floor), the style
loss against the painting (lower: more stylized), the mean edge-map correlation with the source frames
(content fidelity; a frozen or smeared render drops here) and seconds per frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from vidstyle import render
from vidstyle.assets import builtin_style, demo_clip
from vidstyle.config import make_config
from vidstyle.io.decode import read_frames
from vidstyle.io.ffmpeg import run_ffmpeg
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video
from vidstyle.metrics import measure_video, style_distances

MODES = {
    "independent (--init content)": {"init": "content", "flow": "none"},
    "plain warm start (--flow none)": {"flow": "none"},
    "flow-warped start": {"flow": "dis", "temporal_weight": 0.0},
    "flow + temporal loss (default)": {"flow": "dis"},
}


def trimmed(clip: Path, frames: int, workdir: Path) -> Path:
    out = workdir / "clip.mp4"
    code, _, err = run_ffmpeg(["-i", str(clip), "-frames:v", str(frames), "-an", "-c:v", "libx264", "-crf", "12",
                               str(out)])
    if code != 0:
        raise SystemExit(err)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path, nargs="?", default=demo_clip())
    parser.add_argument("--style", type=Path, default=builtin_style("starry-night"))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--first-iters", type=int, default=30)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    style = read_image(args.style)
    with tempfile.TemporaryDirectory() as tmp:
        clip = trimmed(args.clip, args.frames, Path(tmp))
        info = probe_video(clip)
        rows = []
        for name, overrides in MODES.items():
            cfg = make_config(size=args.size, iters=args.iters, first_iters=args.first_iters, device=args.device,
                              seed=0, **overrides)
            out = Path(tmp) / f"{len(rows)}.mp4"
            started = time.perf_counter()
            render(clip, [args.style], out, cfg)
            seconds = (time.perf_counter() - started) / info.frame_count
            found = measure_video(out, clip)
            out_info = probe_video(out)
            size = (out_info.width, out_info.height)
            loss = float(np.mean(style_distances((f.rgb for f in read_frames(out_info, size)), style, 3)))
            rows.append((name, found, loss, seconds, cfg))
        src_loss = float(np.mean(style_distances((f.rgb for f in read_frames(info, size)), style, 3)))
    print(f"clip {args.clip.name}, {info.frame_count} frames at {args.size} px, {args.iters} iterations a frame "
          f"({args.first_iters} first), style {args.style.name}; source style loss {src_loss:.3f}")
    print(f"{'mode':34} {'warp err':>9} {'floor':>9} {'style loss':>10} {'edge corr':>9} {'s/frame':>8}")
    for name, found, loss, seconds, _cfg in rows:
        print(f"{name:34} {found.warping_error:9.6f} {found.source_warping_error:9.6f} {loss:10.3f} "
              f"{found.edge_correlation:9.3f} {seconds:8.2f}")
    base = rows[1][1].warping_error
    print(f"flow + temporal warping error / plain warm start: {rows[3][1].warping_error / base:.2f}")
    print("settings of the default row:", {k: v for k, v in dataclasses.asdict(rows[3][4]).items()
                                           if k in ("flow", "temporal_weight", "prev_weight", "style_weight")})


if __name__ == "__main__":
    main()
