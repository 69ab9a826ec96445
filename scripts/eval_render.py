"""Score a rendered video against its source and style: style gain, edge fidelity, warping error.

    python scripts/eval_render.py OUT.mp4 SOURCE.mp4 STYLE.jpg [--flow farneback]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from vidstyle.io.decode import read_frames
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video
from vidstyle.metrics import measure_video, style_distances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", type=Path)
    parser.add_argument("source", type=Path)
    parser.add_argument("style", type=Path)
    parser.add_argument("--flow", default="farneback")
    parser.add_argument("--every", type=int, default=5, help="Gram distance on every N-th frame")
    args = parser.parse_args()
    info = probe_video(args.output)
    size = (info.width, info.height)
    style = read_image(args.style)
    out_d = style_distances((f.rgb for f in read_frames(info, size)), style, args.every)
    src_d = style_distances((f.rgb for f in read_frames(probe_video(args.source), size)), style, args.every)
    metrics = measure_video(args.output, args.source, args.flow)
    gain = 1.0 - float(np.mean(out_d)) / float(np.mean(src_d))
    print(json.dumps({"style_gain": round(gain, 4), **{k: round(v, 5) for k, v in metrics.as_dict().items()}}))


if __name__ == "__main__":
    main()
