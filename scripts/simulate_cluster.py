"""How a render of a long video spreads over many GPUs: a simulation from measured per-frame times.

    python scripts/simulate_cluster.py [--frames 5400] [--shots 40] [--iteration-seconds 0.57]
                                       [--iters 40] [--first-iters 200] [--measure]

The video: FRAMES frames in SHOTS shots whose lengths are drawn from a log-normal distribution (seeded; film shot
lengths are skewed: many short shots, a few long ones). It is planned as vidstyle.distributed plans it
(plan.plan_segments, distributed.plan_chunks), and the chunks are run in video order by W workers, each taking the
next chunk when it is free: what the driver and Ray do. A chunk costs

    start-up (loading VGG19 in a fresh worker) + decoding the frames before its first one from where its decode
    begins (read_frames seeks to the keyframe before the last one at or before the range; keyframes every GOP
    frames, x264's default 250, so up to two GOPs) + one fresh frame (FIRST_ITERS iterations) + every later frame
    of its chain (ITERS each), lead-in frames included.

The per-iteration time, the start-up and the decode rate are this machine's (--measure measures the last two on
the bundled clip at 512 px; the default iteration time is performance.md's 512x288 bf16 figure on 2 CPU cores).
Wall times scale with the iteration time; the idle share, the work added by chunking and the speed-up barely depend
on it. Prints, per worker count: chunks, seams, work added over the sequential render, wall time, the workers' idle
share and the speed-up over one process rendering the video sequentially.
"""

from __future__ import annotations

import argparse
import heapq
import time
from dataclasses import dataclass

import numpy as np

from vidstyle.distributed import Chunk, plan_chunks
from vidstyle.plan import plan_segments


@dataclass(frozen=True)
class Costs:
    later: float  # seconds a later frame takes
    fresh: float  # seconds a fresh frame takes
    start_up: float  # seconds a worker spends before its first frame (VGG19, style targets)
    decode_fps: float  # frames a second the decoder skips through before a chunk's first frame
    gop: int  # frames from one keyframe to the next


def shot_cuts(frames: int, shots: int, seed: int = 0) -> list[int]:
    """Cut positions of `shots` shots of log-normal lengths (median about 0.6 of the mean) adding up to `frames`."""
    lengths = np.random.default_rng(seed).lognormal(0.0, 0.9, shots)
    lengths = np.maximum(12, np.round(lengths / lengths.sum() * frames)).astype(int)
    lengths[-1] += frames - lengths.sum()
    return [int(c) for c in np.cumsum(lengths)[:-1]]


def frames_skipped(first: int, gop: int) -> int:
    """Frames decoded and dropped before `first`: from the keyframe before the last one at or before it."""
    begin = (first // gop - 1) * gop
    return first - begin if begin > 0 else first


def chunk_seconds(chunk: Chunk, costs: Costs) -> float:
    return (costs.start_up + frames_skipped(chunk.first, costs.gop) / costs.decode_fps + costs.fresh
            + (chunk.stop - chunk.first - 1) * costs.later)


@dataclass(frozen=True)
class Outcome:
    chunks: int
    seams: int
    work: float  # seconds of all tasks
    wall: float
    idle: float  # share of the workers' time without a chunk


def simulate(frames: int, cuts: list[int], chunk_frames: int | None, overlap: int, workers: int,
             costs: Costs) -> Outcome:
    chunks = plan_chunks(plan_segments(frames, cuts, chunk_frames), overlap)
    free = [0.0] * workers  # when each worker is next free: the next chunk in video order goes to the first free
    heapq.heapify(free)
    work = end = 0.0
    for chunk in chunks:
        seconds = chunk_seconds(chunk, costs)
        finish = heapq.heappop(free) + seconds
        heapq.heappush(free, finish)
        work += seconds
        end = max(end, finish)
    seams = sum(1 for c in chunks if c.start not in (0, *cuts))
    return Outcome(len(chunks), seams, work, end, 1.0 - work / (workers * end))


def measure(side: int = 512) -> tuple[float, float]:
    """Seconds to build a Stylizer (network and style targets) and the decode rate at `side` px."""
    import vidstyle
    from vidstyle.assets import builtin_style, demo_clip
    from vidstyle.io.decode import read_frames
    from vidstyle.io.images import read_image
    from vidstyle.io.probe import probe_video, size_to_fit

    info = probe_video(demo_clip())
    size = size_to_fit(info.width, info.height, side)
    started = time.perf_counter()
    count = sum(1 for _ in read_frames(info, size))
    decode_fps = count / (time.perf_counter() - started)
    style = builtin_style("starry-night")
    started = time.perf_counter()
    stylizer = vidstyle.Stylizer(vidstyle.make_config(size=side, device="cpu"), [read_image(style)])  # type: ignore
    stylizer.style_loss(size)
    return time.perf_counter() - started, decode_fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=5400)
    parser.add_argument("--shots", type=int, default=40)
    parser.add_argument("--iteration-seconds", type=float, default=0.57)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--first-iters", type=int, default=200)
    parser.add_argument("--start-up", type=float, default=3.0, help="seconds [3.0; --measure measures it]")
    parser.add_argument("--decode-fps", type=float, default=400.0, help="[400; --measure measures it]")
    parser.add_argument("--gop", type=int, default=250, help="frames from one keyframe to the next [250]")
    parser.add_argument("--measure", action="store_true", help="measure start-up and decode rate here")
    args = parser.parse_args()
    start_up, decode_fps = measure() if args.measure else (args.start_up, args.decode_fps)
    costs = Costs(args.iters * args.iteration_seconds, args.first_iters * args.iteration_seconds, start_up,
                  decode_fps, args.gop)
    cuts = shot_cuts(args.frames, args.shots)
    lengths = np.diff([0, *cuts, args.frames])
    # One process renders the shots one after another and loads the network once.
    sequential = simulate(args.frames, cuts, None, 0, 1, costs)
    sequential = Outcome(1, 0, sequential.work - args.shots * start_up + start_up,
                         sequential.wall - args.shots * start_up + start_up, 0.0)
    print(f"{args.frames} frames, {args.shots} shots ({lengths.min()}-{lengths.max()} frames, median "
          f"{int(np.median(lengths))}); a later frame {costs.later:.1f} s, a fresh one {costs.fresh:.1f} s, worker "
          f"start-up {start_up:.1f} s, decoding {decode_fps:.0f} frames/s, a keyframe every {args.gop} frames")
    print(f"sequential render, one process: {sequential.wall / 3600:.1f} h")
    plans: list[tuple[int | None, int]] = [(None, 0), (480, 12), (240, 12), (120, 12), (60, 12), (30, 12),
                                           (120, 0), (120, 4), (120, 8), (120, 24)]
    for workers in (8, 64):
        print(f"\n{workers} workers   chunk  overlap  chunks  seams  work added  wall (h)  idle  speed-up")
        for chunk_frames, overlap in plans:
            o = simulate(args.frames, cuts, chunk_frames, overlap, workers, costs)
            print(f"{'':12s}{chunk_frames or 'shots':>6}  {overlap:>7}  {o.chunks:>6}  {o.seams:>5}  "
                  f"{o.work / sequential.work - 1:>10.1%}  {o.wall / 3600:>8.2f}  {o.idle:>4.0%}  "
                  f"{sequential.wall / o.wall:>7.1f}x")


if __name__ == "__main__":
    main()
