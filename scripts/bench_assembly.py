"""How a render's frames become one video: one encoder fed in order, or one encode per segment joined afterwards.

    python scripts/bench_assembly.py [--size 512] [--segments 4] [--repeats 3]

Both sides encode the same decoded frames of the bundled clip (standing in for stylized ones) with vidstyle's
own H.264 settings and the source's audio. "in order": one VideoWriter takes every frame, as render() does.
"per segment": each segment is encoded alone (video only), then ffmpeg's concat demuxer joins the pieces by
stream copy and muxes the audio once. Prints wall seconds (medians, alternated) and output sizes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vidstyle.assets import demo_clip
from vidstyle.io.decode import read_frames
from vidstyle.io.encode import VideoWriter
from vidstyle.io.ffmpeg import file_url, run_ffmpeg
from vidstyle.io.probe import VideoInfo, probe_video, size_to_fit


def encode_in_order(frames: list[np.ndarray], info: VideoInfo, size: tuple[int, int], out: Path) -> float:
    started = time.perf_counter()
    with VideoWriter(out, size, info.fps, info) as writer:
        for rgb in frames:
            writer.write(rgb)
    return time.perf_counter() - started


def encode_per_segment(frames: list[np.ndarray], info: VideoInfo, size: tuple[int, int], out: Path,
                       segments: int) -> float:
    started = time.perf_counter()
    bounds = np.linspace(0, len(frames), segments + 1).astype(int)
    pieces = []
    for n, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        piece = out.with_name(f"{out.stem}.piece{n}.mp4")
        with VideoWriter(piece, size, info.fps, None) as writer:
            for rgb in frames[a:b]:
                writer.write(rgb)
        pieces.append(piece)
    listing = out.with_name(f"{out.stem}.txt")
    listing.write_text("".join(f"file '{p.name}'\n" for p in pieces))
    code, _, err = run_ffmpeg(["-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", file_url(listing),
                               "-i", file_url(info.path), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "copy",
                               "-movflags", "+faststart", file_url(out)])
    if code != 0:
        raise RuntimeError(err)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    info = probe_video(demo_clip())
    size = size_to_fit(info.width, info.height, args.size)
    frames = [f.rgb.copy() for f in read_frames(info, size)]
    times: dict[str, list[float]] = {"in order": [], "per segment": []}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {"in order": Path(tmp) / "ordered.mp4", "per segment": Path(tmp) / "joined.mp4"}
        for repeat in range(args.repeats):
            order = ("in order", "per segment") if repeat % 2 == 0 else ("per segment", "in order")
            for side in order:
                if side == "in order":
                    times[side].append(encode_in_order(frames, info, size, outs[side]))
                else:
                    times[side].append(encode_per_segment(frames, info, size, outs[side], args.segments))
        for side, out in outs.items():
            got = probe_video(out)
            print(f"{side:12} {statistics.median(times[side]):6.2f} s, {out.stat().st_size / 1024:7.1f} KiB, "
                  f"{got.frame_count} frames at {got.width}x{got.height}, audio {got.audio_codecs}")
    ratio = statistics.median(times["per segment"]) / statistics.median(times["in order"])
    print(f"per segment / in order: {ratio:.2f}x the time ({len(frames)} frames, {args.segments} segments)")


if __name__ == "__main__":
    main()
