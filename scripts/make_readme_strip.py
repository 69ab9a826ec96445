"""Make the README's before/after picture: frames of the bundled demo clip above, the same frames painted below.

    python scripts/make_readme_strip.py [--frames 3] [--size 256] [--iters 150] [--out docs/images/before_after.jpg]

The frames are taken at evenly spaced points of `vidstyle.assets.demo_clip()` (Big Buck Bunny) and each is painted
in the style of the bundled Starry Night with `vidstyle.stylize_image`, the balanced preset with `--size` and
`--iters` (the path a render's first frame takes: it starts from the frame in the painting's palette). So the
picture shows what one frame looks like, not the warm start or temporal loss of a render. It prints the seconds
each frame took.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import vidstyle
from vidstyle.assets import builtin_style, demo_clip
from vidstyle.io.decode import read_frames
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video, size_to_fit

GAP = 4  # pixels of white between the pictures
MAX_BYTES = 150_000  # keep the README light: lower the JPEG quality until the file fits
REPO = Path(__file__).resolve().parent.parent


def pick_frames(clip: Path, count: int, size: int) -> list[tuple[int, np.ndarray]]:
    """`count` frames (index, RGB) at evenly spaced points of the clip, scaled to `size` on the long side."""
    info = probe_video(clip)
    wanted = {round((i + 0.5) * info.frame_count / count) for i in range(count)}
    dims = size_to_fit(info.width, info.height, size)
    return [(f.index, f.rgb.copy()) for f in read_frames(info, dims) if f.index in wanted]


def tile(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Pictures of one size in rows, GAP white pixels between them."""
    height, width = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (height + GAP) - GAP, cols * (width + GAP) - GAP, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            y, x = r * (height + GAP), c * (width + GAP)
            canvas[y:y + height, x:x + width] = picture
    return canvas


def write_jpeg(path: Path, rgb: np.ndarray) -> int:
    """Save as JPEG at the highest quality (90 down to 50) under MAX_BYTES; returns the size in bytes."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for quality in range(90, 45, -5):
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        if ok and (len(buf) <= MAX_BYTES or quality == 50):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.tobytes())
            return len(buf)
    raise RuntimeError("cannot encode the strip as JPEG")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=3, help="how many frames [3]")
    parser.add_argument("--size", type=int, default=256, help="long side of each picture in pixels [256]")
    parser.add_argument("--iters", type=int, default=150, help="iterations per frame [150]")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps [auto]")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "before_after.jpg",
                        help="the JPEG to write [docs/images/before_after.jpg in this repository]")
    args = parser.parse_args()

    style = builtin_style("starry-night")
    if style is None:
        raise SystemExit("the bundled Starry Night is missing from vidstyle/assets")
    config = vidstyle.make_config("balanced", size=args.size, first_iters=args.iters, device=args.device)
    sources, painted = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index, rgb in pick_frames(demo_clip(), args.frames, args.size):
            started = time.perf_counter()
            frame_png, out_png = Path(tmp, f"frame{index}.png"), Path(tmp, f"frame{index}.starry.png")
            cv2.imwrite(str(frame_png), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            vidstyle.stylize_image(frame_png, [style], out_png, config)
            sources.append(rgb)
            painted.append(read_image(out_png))
            print(f"frame {index}: {time.perf_counter() - started:.0f} s")
    written = write_jpeg(args.out, tile([sources, painted]))
    print(f"wrote {args.out} ({written // 1000} KB; size {args.size}, {args.iters} iterations, balanced preset)")


if __name__ == "__main__":
    main()
