"""How good is the preview's estimate of a whole render's time? The estimate, then the real render, per clip.

    python scripts/bench_estimate.py [--size 128] [--preset demo] [--style STYLE] [--clips NAME ...]
                                     [--device auto] [--frames 4]

For each clip of ../shared/assets (bikes_street_no_audio.mp4 and field_pan_with_audio.mp4 by default) it runs
`vidstyle.preview.preview` at the settings, then `vidstyle.render` with the same settings in the same process,
and prints the estimate, the render's wall time and their ratio (the target is 0.75 to 1.25), and where each
went: start-up and plan pass, the mean seconds of a fresh and of a later frame and a later frame's mean
iterations, as the estimate measured them and as the render spent them (its FrameDone events), and the load
average, which tells a run that shared the cores with other work. With the demo preset at 128 px both clips take a
few minutes on two CPU cores. Clips that are not there are skipped, saying so.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from vidstyle import render
from vidstyle.assets import builtin_style
from vidstyle.config import make_config
from vidstyle.events import Event, FrameDone, RenderStarted
from vidstyle.preview import preview

ASSETS = Path(__file__).resolve().parent.parent.parent / "shared" / "assets"
CLIPS = ("bikes_street_no_audio.mp4", "field_pan_with_audio.mp4")


class RenderTimes:
    """Where a real render's time went, from its events."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.started_at = 0.0  # seconds from the call to RenderStarted: probe, plan pass, network load
        self.fresh: list[float] = []
        self.later: list[float] = []
        self.later_iterations: list[int] = []
        self.most_load = 0.0  # the highest 1-minute load average seen at a frame's end

    def __call__(self, event: Event) -> None:
        if isinstance(event, RenderStarted):
            self.started_at = time.perf_counter() - self.began
        elif isinstance(event, FrameDone):
            (self.fresh if event.fresh else self.later).append(event.seconds)
            if not event.fresh:
                self.later_iterations.append(event.iterations)
            self.most_load = max(self.most_load, os.getloadavg()[0])


def _mean(values: list[float] | list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def measure(clip: Path, style: Path, preset: str, size: int, device: str, frames: int, workdir: Path) -> None:
    config = make_config(preset, size=size, device=device)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = preview(clip, [style], workdir / f"{clip.stem}.png", config, count=frames, overwrite=True)
    preview_seconds = time.perf_counter() - started
    estimate = result.estimate
    times = RenderTimes()
    render(clip, [style], workdir / f"{clip.stem}.mp4", config, overwrite=True, restart=True, on_event=times)
    real = time.perf_counter() - times.began
    load_after = os.getloadavg()[0]
    print(f"{clip.name}: {estimate.fresh_frames} fresh + {estimate.later_frames} later frames at "
          f"{estimate.size[0]}x{estimate.size[1]} on {estimate.device}")
    print(f"  estimate {estimate.total_seconds:7.1f} s   real {real:7.1f} s   ratio {estimate.total_seconds / real:.3f}"
          f"   (the preview itself took {preview_seconds:.1f} s)")
    print(_parts("  estimated", estimate.setup_seconds + estimate.plan_seconds, estimate.fresh_seconds,
                 estimate.later_seconds, estimate.later_iterations))
    print(_parts("  rendered ", times.started_at, _mean(times.fresh), _mean(times.later),
                 _mean(times.later_iterations)))
    stylizing = sum(times.fresh) + sum(times.later)
    print(f"  render: {stylizing:.1f} s in the frame loop, {real - times.started_at - stylizing:.1f} s around it "
          "(decoding, flow, encoding and checkpoints the stylizer waited for)")
    # This process keeps about 2 cores busy: a load well above the core count means other work shared them.
    print(f"  load average {load_before:.1f} before, at most {times.most_load:.1f} during the render, "
          f"{load_after:.1f} after, on {os.cpu_count()} cores")


def _parts(label: str, start: float, fresh: float, later: float, later_iterations: float) -> str:
    return (f"{label}: start-up + plan {start:5.2f} s, fresh frame {fresh:6.3f} s, later frame {later:6.3f} s "
            f"({later_iterations:.1f} iterations)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--style", type=Path, default=builtin_style("starry-night"))
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), help="names in ../shared/assets")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=4, help="preview frames")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidstyle-bench-estimate-") as tmp:
        for name in args.clips:
            clip = ASSETS / name
            if not clip.exists():
                print(f"{name}: skipped, {clip} is not there (the shared test media live beside the clone)")
                continue
            measure(clip, args.style, args.preset, args.size, args.device, args.frames, Path(tmp))


if __name__ == "__main__":
    main()
