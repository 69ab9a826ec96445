"""Adaptive iterations at equal quality: frames a second with `--tol` against the fixed-count render, and whether
warping error, edge correlation and style gain stay within 2 % of it.

    python scripts/bench_tol.py [--size 96] [--tols 0.0003,0.001] [--clips NAME ...] [--style PAINTING]

For each clip of ../shared/assets (both by default) it renders the balanced preset at --size with the fixed
iteration counts, then with each tolerance (same settings otherwise, fp32, one process), and prints for each: the
seconds spent stylizing (the frames' own times), iterations a frame (mean, min, max), the speed-up over the fixed
render, and the three quality figures of vidstyle.metrics (Farneback flow, network-free style gain) with their
change against the fixed render. Clips that are not there are skipped, saying so.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import vidstyle
from vidstyle.assets import builtin_style
from vidstyle.events import Event, FrameDone
from vidstyle.io.images import read_image
from vidstyle.metrics import measure_video

ASSETS = Path(__file__).resolve().parent.parent.parent / "shared" / "assets"
CLIPS = ("field_pan_with_audio.mp4", "bikes_street_no_audio.mp4")


class Spent:
    """Seconds and iterations the frames took, from their FrameDone events."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.iterations: list[int] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, FrameDone):
            self.seconds += event.seconds
            self.iterations.append(event.iterations)


def render(clip: Path, style: Path, out: Path, size: int, tol: float) -> Spent:
    spent = Spent()
    config = vidstyle.make_config(size=size, tol=tol, device="cpu", precision="fp32")
    vidstyle.render(clip, [style], out, config, overwrite=True, restart=True, on_event=spent)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--tols", default="0.0003,0.001", help="tolerances to compare with the fixed counts")
    parser.add_argument("--clips", nargs="*", default=list(CLIPS))
    parser.add_argument("--style", type=Path, default=None, help="[the bundled Starry Night]")
    args = parser.parse_args()
    style = args.style or builtin_style("starry-night")
    assert style is not None
    painting = read_image(style)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.clips:
            clip = ASSETS / name
            if not clip.exists():
                print(f"{name}: skipped, {clip} is not there (the shared test media beside the clone)")
                continue
            base = None
            for tol in (0.0, *(float(t) for t in args.tols.split(","))):
                out = Path(tmp) / f"{clip.stem}-{tol}.mp4"
                spent = render(clip, style, out, args.size, tol)
                found = measure_video(out, clip, style=painting)
                figures = (found.warping_error, found.edge_correlation, found.style_gain or 0.0)
                its = spent.iterations
                line = (f"{name} tol {tol:g}: {spent.seconds:.1f} s stylizing, iterations a frame mean "
                        f"{sum(its) / len(its):.1f} (min {min(its)}, max {max(its)}); warping error "
                        f"{figures[0]:.5f}, edge correlation {figures[1]:.3f}, style gain {figures[2]:.3f}")
                if base is None:
                    base = (spent.seconds, figures)
                else:
                    changes = ", ".join(f"{(new - old) / abs(old):+.1%}" for new, old in zip(figures, base[1],
                                                                                         strict=True))
                    line += f"; speed-up {base[0] / spent.seconds:.2f}x, changes {changes}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
