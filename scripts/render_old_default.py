"""Render dumped source frames with the default of commit 8c8bc04, for the fidelity tables' "old default" row.

    git worktree add --detach /tmp/vidstyle-8c8bc04 8c8bc04
    python scripts/render_old_default.py /tmp/vidstyle-8c8bc04 SOURCES_DIR OUT_DIR [--keep-from N] [--style PAINTING]

8c8bc04 is the code before the network-free style figure, coarse-to-fine, the palette start and the rest of the
work measured in docs/performance.md ("Style strength", "Fidelity under coherence"): its balanced preset weighed
content 1, style 2, smoothness 1, took 200 iterations on a fresh frame and 40 on a later one, warm-started from
the previous stylization warped along DIS's flow and held it with a temporal weight of 10. This script imports
the package from that worktree (not the installed one) and runs its frame loop, one shot, fp32 on the CPU, on
SOURCES_DIR's PNG frames named by index (`bench_fidelity.py --dump-sources` writes them). It writes the frames
from index N on (`--keep-from`: frames before it are the shot's warm-up) to OUT_DIR under the same names, for
`bench_fidelity.py --outputs old=OUT_DIR`, and prints the mean seconds a kept frame.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("worktree", type=Path, help="a checkout of commit 8c8bc04")
    parser.add_argument("sources", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--keep-from", type=int, default=0, help="first frame index written [0]")
    parser.add_argument("--style", type=Path, default=None, help="painting [the built-in Starry Night]")
    args = parser.parse_args()
    sys.path.insert(0, str(args.worktree.resolve()))
    sys.modules.pop("vidstyle", None)
    import vidstyle

    if not Path(vidstyle.__file__).resolve().is_relative_to(args.worktree.resolve()):
        sys.exit(f"vidstyle was imported from {vidstyle.__file__}, not from {args.worktree}")
    from vidstyle.assets import builtin_style
    from vidstyle.config import make_config
    from vidstyle.io.decode import Frame
    from vidstyle.io.images import read_image, write_image
    from vidstyle.pipeline import track_motion, warm_start
    from vidstyle.stylize import Stylizer

    frames = [Frame(int(path.stem), read_image(path)) for path in sorted(args.sources.glob("*.png"))]
    if not frames:
        sys.exit(f"no PNG frames in {args.sources}")
    config = make_config(size=max(frames[0].rgb.shape[:2]), seed=0, precision="fp32", device="cpu")
    stylizer = Stylizer(config, [read_image(args.style or builtin_style("starry_night"))])
    args.out.mkdir(parents=True, exist_ok=True)
    previous = None
    seconds: list[float] = []
    for motion in track_motion(iter(frames), config, 0):
        started = time.perf_counter()
        if motion.fresh or previous is None:
            previous = stylizer.stylize_fresh(motion.frame.rgb, config.first_iters).rgb
        else:
            start, temporal = warm_start(motion, previous, config, stylizer.device)
            previous = stylizer.stylize(motion.frame.rgb, start, config.iters, temporal).rgb
        if motion.frame.index >= args.keep_from:
            seconds.append(time.perf_counter() - started)
            write_image(args.out / f"{motion.frame.index:07d}.png", previous)
    print(f"{len(seconds)} frames kept, mean {sum(seconds) / max(len(seconds), 1):.2f} s a frame")


if __name__ == "__main__":
    main()
