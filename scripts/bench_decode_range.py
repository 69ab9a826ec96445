"""What decoding a range of frames late in a video costs, next to the same frames cut out of a decode from the start.

    python scripts/bench_decode_range.py [CLIP ...] [--start 100] [--frames 10] [--size 64 --size 512] [--shots N]

A chunk or a resumed segment decodes from a keyframe before its range (`read_frames` seeks where it can prove the
frames exact); the alternative is a decode from the first frame that drops what comes before. For each clip
(../shared/assets' bikes_street_no_audio.mp4 and field_pan_with_audio.mp4 by default; clips that are not there are
skipped, saying so) and each size, it prints the full decode's frames and time, the range's, and whether the range
was seeked. Each seeked decode also runs two small ffmpeg passes, once per video and process, to read the file's
clock: on clips of a few hundred frames that can cost more than the seek saves.

With `--shots N` it also reads the whole clip as a render reads N shots of equal length, one after another: each
shot decoded on its own (`read_frames`, a decode from the first frame a shot where the clip cannot be seeked) against
all of them from a render's `FrameRanges`. Give it a clip that cannot be seeked (MPEG-4 Part 2: `ffmpeg -i CLIP -c:v
mpeg4 -q:v 4 OUT.mp4`) to see the difference grow with N.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vidstyle.io.decode import FrameRanges, read_frames, seek_keyframe, seekable
from vidstyle.io.probe import VideoInfo, probe_video, size_to_fit

ASSETS = Path(__file__).resolve().parent.parent.parent / "shared" / "assets"
CLIPS = (ASSETS / "bikes_street_no_audio.mp4", ASSETS / "field_pan_with_audio.mp4")


def timed_decode(info: VideoInfo, size: tuple[int, int], start: int = 0,
                 stop: int | None = None) -> tuple[int, float]:
    """Frames decoded and the seconds it took."""
    began = time.perf_counter()
    count = sum(1 for _ in read_frames(info, size, start, stop))
    return count, time.perf_counter() - began


def report(clip: Path, sizes: list[int], start: int, frames: int) -> None:
    info = probe_video(clip)
    stop = min(start + frames, info.frame_count)
    if start >= stop:
        print(f"{clip.name}: {info.frame_count} frames, none from frame {start}: skipped")
        return
    key = seek_keyframe(info, start)
    seeked = f"seeked from keyframe {key}" if key is not None else "decoded from frame 0"
    for long_side in sizes:
        size = size_to_fit(info.width, info.height, long_side)
        full_count, full = timed_decode(info, size)
        late_count, late = timed_decode(info, size, start, stop)
        print(f"{clip.name} at {size[0]}x{size[1]}: full decode {full_count} frames {full * 1000:.0f} ms; "
              f"range [{start}, {stop}) {late_count} frames {late * 1000:.0f} ms ({seeked}); "
              f"ratio {late / full:.2f}")


def report_shots(clip: Path, sizes: list[int], shots: int) -> None:
    info = probe_video(clip)
    bounds = [round(i * info.frame_count / shots) for i in range(shots + 1)]
    ranges = [(start, stop) for start, stop in zip(bounds, bounds[1:], strict=False) if stop > start]
    for long_side in sizes:
        size = size_to_fit(info.width, info.height, long_side)
        began = time.perf_counter()
        alone = sum(1 for start, stop in ranges for _ in read_frames(info, size, start, stop))
        each = time.perf_counter() - began
        began = time.perf_counter()
        reader = FrameRanges(info, size, info.frame_count)
        try:
            together = sum(1 for start, stop in ranges for _ in reader.read(start, stop))
        finally:
            reader.close()
        one = time.perf_counter() - began
        print(f"{clip.name} at {size[0]}x{size[1]} ({'seekable' if seekable(info) else 'not seekable'}), "
              f"{len(ranges)} shots in turn: each decoded alone {alone} frames {each * 1000:.0f} ms; from one "
              f"FrameRanges {together} frames {one * 1000:.0f} ms; ratio {one / each:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path, default=list(CLIPS))
    parser.add_argument("--start", type=int, default=100, help="the range's first frame [100]")
    parser.add_argument("--frames", type=int, default=10, help="frames in the range [10]")
    parser.add_argument("--size", type=int, action="append", help="long side, repeatable [64 and 512]")
    parser.add_argument("--shots", type=int, help="also read the clip as a render reads this many shots")
    args = parser.parse_args()
    if args.shots is not None and args.shots < 1:
        parser.error(f"--shots {args.shots}: a clip is read as one shot or more")
    for clip in args.clips:
        if not clip.exists():
            print(f"{clip}: not present (the shared clips live in ../shared/assets beside the clone): skipped")
            continue
        report(clip, args.size or [64, 512], args.start, args.frames)
        if args.shots is not None:
            report_shots(clip, args.size or [64, 512], args.shots)


if __name__ == "__main__":
    main()
