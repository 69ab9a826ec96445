"""Seams and speed of a render on Ray workers (vidstyle.distributed).

    python scripts/bench_distributed.py [--frames 48] [--size 96] [--chunk-frames 12] [--overlap 4] [--workers 2]
                                        [--passes 1]

Renders the first FRAMES frames of the bundled clip (demo-like settings: 8 iterations a frame, 40 for a fresh one,
DIS flow, temporal loss) several ways, keeping the frames, and scores the PNG checkpoints against the source:

- seams: per seam, the warping error (Lai et al. 2018, vidstyle.metrics, Farneback flow of the source) of the frame
  pairs from the last frame before the overlap to the first frame the later chunk owns, as a multiple of the median
  of the pairs inside chunks; and the edge correlation with the source and the style distance
  (vidstyle.style_distance, lower is closer to the painting) of the overlap frames and that first frame, relative
  to the other frames. Variants: the library's blend, a plain average (the same ramp), no overlap (each chunk
  starts fresh at its first frame), and the sequential render (no chunks) for reference. With --passes N every
  render makes N passes (on workers, a later pass reads across the chunks' edges: the remedy for seams).
- speed: wall time of the chunked render on 1 and on N workers (local Ray started by each render, its start-up
  included), and of the sequential render without Ray.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

import vidstyle
import vidstyle.distributed as distributed
from vidstyle.assets import builtin_style, demo_clip
from vidstyle.io.decode import read_frames
from vidstyle.io.ffmpeg import ffmpeg_exe
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video
from vidstyle.metrics import edge_correlation, source_motion, warping_error
from vidstyle.plan import find_cuts, plan_segments
from vidstyle.style_distance import StyleDistance


def plain_average(earlier: np.ndarray, later: np.ndarray, weight: float) -> np.ndarray:
    mixed = (1.0 - weight) * earlier.astype(np.float32) + weight * later.astype(np.float32)
    return np.clip(mixed, 0, 255).round().astype(np.uint8)


def cut_clip(frames: int, folder: Path) -> Path:
    import subprocess

    out = folder / "clip.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(demo_clip()), "-frames:v", str(frames),
                    "-c:v", "libx264", "-crf", "12", "-an", str(out)], check=True)
    return out


def render(clip: Path, style: Path, folder: Path, name: str, config: vidstyle.Config, **kwargs: object) -> float:
    started = time.perf_counter()
    vidstyle.render(clip, [style], folder / f"{name}.mp4", config, workdir=folder / name, **kwargs)  # type: ignore
    return time.perf_counter() - started


def frames_of(work: Path, count: int) -> list[np.ndarray]:
    return [cv2.cvtColor(cv2.imread(str(work / "frames" / f"{i:07d}.png")), cv2.COLOR_BGR2RGB) for i in range(count)]


def seam_report(outs: list[np.ndarray], sources: list[np.ndarray], seams: list[tuple[int, int]],
                cuts: list[int], scorer: StyleDistance) -> dict[str, object]:
    """Per seam (first overlap frame, first frame of the later chunk): worst pair / median inside pair; and the
    seam frames' mean edge correlation and style distance relative to the other frames'."""
    errors = {}
    for t in range(1, len(outs)):
        if t not in cuts:
            backward, mask = source_motion(sources[t - 1], sources[t], "farneback")
            errors[t] = warping_error(outs[t - 1], outs[t], backward, mask)
    seam_pairs = {t for first, start in seams for t in range(first, start + 1)}
    inside = statistics.median(e for t, e in errors.items() if t not in seam_pairs)
    ratios = [max(errors[t] for t in range(first, start + 1) if t in errors) / inside for first, start in seams]
    for first, start in seams:
        print(f"  pairs ending at {first}..{start}: "
              + " ".join(f"{errors[t] / inside:.2f}" for t in range(first, start + 1) if t in errors))
    seam_frames = {i for first, start in seams for i in range(first, start + 1)}
    edges = [edge_correlation(o, s) for o, s in zip(outs, sources, strict=True)]
    style = [scorer(o) for o in outs]

    def relative(values: list[float]) -> float:
        at = [v for i, v in enumerate(values) if i in seam_frames]
        rest = [v for i, v in enumerate(values) if i not in seam_frames]
        return statistics.mean(at) / statistics.mean(rest) - 1.0

    return {"inside_median": inside, "ratios": ratios, "edge": relative(edges), "style": relative(style),
            "edge_mean": statistics.mean(edges), "style_mean": statistics.mean(style)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--chunk-frames", type=int, default=12)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--passes", type=int, default=1)
    parser.add_argument("--seams-only", action="store_true", help="only the library's blend; no timing runs")
    parser.add_argument("--strip", type=Path, metavar="JPG",
                        help="write the frames across the first seam of the library's blend as one picture")
    parser.add_argument("--speed-runs", type=int, default=0, metavar="R",
                        help="only the speed-up: R alternated pairs of the chunked render on 1 and on N workers")
    args = parser.parse_args()
    style = builtin_style("starry-night")
    assert style is not None
    config = vidstyle.make_config("demo", size=args.size, device="cpu", precision="fp32", keep_frames=True,
                                  passes=args.passes)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clip = cut_clip(args.frames, folder)
        info = probe_video(clip)
        size = (round(info.width * args.size / max(info.width, info.height) / 2) * 2,
                round(info.height * args.size / max(info.width, info.height) / 2) * 2)
        cuts = find_cuts(info, size, config.cut_threshold)
        sources = [f.rgb.copy() for f in read_frames(info, size)]
        scorer = StyleDistance(read_image(style), size)
        segments = plan_segments(len(sources), cuts, args.chunk_frames)
        chunks = distributed.plan_chunks(segments, args.overlap)
        seams = [(c.first, c.start) for c, segment in zip(chunks, segments, strict=True) if not segment.fresh]
        print(f"{args.frames} frames at {size[0]}x{size[1]}, cuts at {cuts or 'none'}; chunks of "
              f"{args.chunk_frames}, overlap {args.overlap}: {len(chunks)} chunks, seams at {[s for _, s in seams]}; "
              f"{args.passes} pass{'es' * (args.passes > 1)}")
        chunking = {"chunk_frames": args.chunk_frames}
        if args.speed_runs:
            speed_up(clip, style, folder, config, args, chunking)
            return
        times: dict[str, float] = {}
        variants: list[tuple[str, dict[str, object], Callable[..., np.ndarray] | None]] = [
            ("blend", {**chunking, "overlap": args.overlap}, None),
            ("plain average", {**chunking, "overlap": args.overlap}, plain_average),
            ("no overlap", {**chunking, "overlap": 0}, None),
        ]
        library_blend = distributed.blend_frames
        for name, kwargs, blend in variants[:1] if args.seams_only else variants:
            distributed.blend_frames = blend or library_blend  # the driver, in this process, blends
            work = name.replace(" ", "_")
            times[name] = render(clip, style, folder, work, config, workers=args.workers, **kwargs)
            distributed.blend_frames = library_blend
            if args.strip is not None and name == "blend" and seams:
                write_strip(args.strip, frames_of(folder / work, len(sources)), sources, seams[0])
            # Without overlap the jump is the pair ending at the chunk's first frame; each later pass spreads it
            # over one more pair on either side, all of them counted as the seam's.
            spread = config.passes - 1
            own = seams if kwargs["overlap"] else [(s - spread, s + spread) for _, s in seams]
            report = seam_report(frames_of(folder / work, len(sources)), sources, own, cuts, scorer)
            print(f"{name:14s} worst seam pair / median inside pair: "
                  + ", ".join(f"{r:.2f}" for r in report["ratios"])  # type: ignore[union-attr]
                  + f" (inside median {report['inside_median']:.5f}); seam frames vs others: edge correlation "
                  f"{report['edge']:+.1%}, style distance {report['style']:+.1%}")
        if args.seams_only:
            return
        times["sequential"] = render(clip, style, folder, "sequential", config)
        sequential = seam_report(frames_of(folder / "sequential", len(sources)), sources, seams, cuts, scorer)
        print(f"{'sequential':14s} the same frame pairs, no chunks: "
              + ", ".join(f"{r:.2f}" for r in sequential["ratios"])  # type: ignore[union-attr]
              + f"; edge {sequential['edge']:+.1%}, style {sequential['style']:+.1%}")
        times["1 worker"] = render(clip, style, folder, "one", config, workers=1, **chunking, overlap=args.overlap)
        print(f"wall seconds (local Ray start-up included): sequential {times['sequential']:.1f}, chunked on 1 worker "
              f"{times['1 worker']:.1f}, on {args.workers} workers {times['blend']:.1f}: "
              f"speed-up {times['1 worker'] / times['blend']:.2f}x over 1 worker, "
              f"{times['sequential'] / times['blend']:.2f}x over the sequential render")


def write_strip(path: Path, outs: list[np.ndarray], sources: list[np.ndarray], seam: tuple[int, int]) -> None:
    """Sources above, the render below, from the frame before the overlap to the first frame after it, enlarged."""
    first, start = seam
    picked = sorted({first - 1, *range(first, start, max(1, (start - first) // 4)), start})
    rows = [np.hstack([frames[i] for i in picked]) for frames in (sources, outs)]
    sheet = np.vstack(rows)
    sheet = cv2.resize(sheet, (sheet.shape[1] * 2, sheet.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"strip of frames {picked} (the overlap is {first}..{start - 1}) written to {path}")


def speed_up(clip: Path, style: Path, folder: Path, config: vidstyle.Config, args: argparse.Namespace,
             chunking: dict[str, int]) -> None:
    """1 worker and N workers alternated, so that a change in the machine's load falls on both."""
    ratios = []
    for run in range(args.speed_runs):
        one = render(clip, style, folder, f"one_{run}", config, workers=1, **chunking, overlap=args.overlap)
        many = render(clip, style, folder, f"many_{run}", config, workers=args.workers, **chunking,
                      overlap=args.overlap)
        ratios.append(one / many)
        print(f"run {run + 1}: 1 worker {one:.1f} s, {args.workers} workers {many:.1f} s, speed-up {one / many:.2f}x")
    print(f"median speed-up {statistics.median(ratios):.2f}x over {len(ratios)} alternated pairs")


if __name__ == "__main__":
    main()
