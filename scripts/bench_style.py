"""Style strength that owes nothing to VGG19: network-free style gain and edge fidelity on real clips and stills.

    python scripts/bench_style.py [--size 256] [--frames 8] [--preset balanced] [--set style_weight=20 ...]
                                  [--clips NAME ...] [--stills NAME ...] [--styles a.jpg ...] [--save DIR] [--json]

For each shared clip x painting it renders the first `--frames` frames through `vidstyle.render` (the product's
path: the first frame fresh with `first_iters`, the later ones warm-started with `iters`, flow as configured),
and for each still x painting it paints the still through `vidstyle.stylize_image`. Per row it prints:
- gain: the network-free style gain (vidstyle.style_distance: sliced Wasserstein distance of Laplacian-pyramid
  patches, Karras et al. 2018) of the output over its source frame, mean over frames; `first` and `last` are
  the first (fresh) and last (warm-started) frames', to see whether the style fades;
- texture: the same gain over the band-pass levels only, without the low-pass level that carries the colours;
- edge: the correlation of the output's and the source frame's edge maps (vidstyle.metrics), mean over frames;
- s/frame: wall seconds per frame, mean over all frames (the fresh one included), and the fresh frame's.
The painting is scaled for the metric as for a render at `style_scale` 1 whatever the settings, so that rows
with different settings are measured with one yardstick.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vidstyle import render, stylize_image
from vidstyle.config import Config, field_names, make_config
from vidstyle.events import FrameDone, RenderStarted
from vidstyle.io.decode import read_frames
from vidstyle.io.ffmpeg import run_ffmpeg
from vidstyle.io.images import encode_image, read_image, resize_rgb
from vidstyle.io.probe import probe_video, size_to_fit
from vidstyle.metrics import edge_correlation
from vidstyle.style_distance import StyleDistance

ASSETS = Path(__file__).resolve().parent.parent.parent / "shared" / "assets"
CLIPS = ("field_pan_with_audio.mp4", "bikes_street_no_audio.mp4")
STILLS = ("astronaut.png", "coffee.png")
PAINTINGS = ("starry_night_van_gogh.jpg", "great_wave_hokusai.jpg", "the_scream_munch.jpg")


@dataclasses.dataclass(frozen=True)
class Scores:
    """Per-frame figures of one case (a clip or a still) against one painting."""

    gains: list[float]
    texture_gains: list[float]
    edges: list[float]
    seconds: list[float]

    def row(self) -> dict[str, float]:
        return {"gain": float(np.mean(self.gains)), "first": self.gains[0], "last": self.gains[-1],
                "texture": float(np.mean(self.texture_gains)), "edge": float(np.mean(self.edges)),
                "s/frame": float(np.mean(self.seconds)), "fresh s": self.seconds[0]}


def texture_gain(metric: StyleDistance, output: np.ndarray, source: np.ndarray) -> float:
    """The gain over the band-pass levels alone (all but the last, low-pass, level)."""
    out, src = metric.per_level(output)[:-1], metric.per_level(source)[:-1]
    if not src:
        return float("nan")
    return 1.0 - float(np.mean(out)) / max(float(np.mean(src)), 1e-12)


def score(outputs: list[np.ndarray], sources: list[np.ndarray], style: np.ndarray,
          seconds: list[float]) -> Scores:
    height, width = sources[0].shape[:2]
    metric = StyleDistance(style, (width, height))
    gains = [metric.gain(out, src) for out, src in zip(outputs, sources, strict=True)]
    textures = [texture_gain(metric, out, src) for out, src in zip(outputs, sources, strict=True)]
    edges = [edge_correlation(out, src) for out, src in zip(outputs, sources, strict=True)]
    return Scores(gains, textures, edges, seconds)


def trimmed(clip: Path, frames: int, workdir: Path) -> Path:
    """The first `frames` frames, losslessly re-encoded (x264 -qp 0), so the render and the scores see them as is."""
    out = workdir / f"{clip.stem}.{frames}.mp4"
    if not out.exists():
        code, _, err = run_ffmpeg(["-i", str(clip), "-frames:v", str(frames), "-an", "-c:v", "libx264", "-qp", "0",
                                   "-preset", "ultrafast", str(out)])
        if code != 0:
            raise SystemExit(err)
    return out


def render_clip(clip: Path, style: Path, config: Config, workdir: Path) -> tuple[list[np.ndarray],
                                                                                 list[np.ndarray], list[float]]:
    """(outputs, source frames, seconds per frame) of a render, the outputs read from its lossless checkpoints."""
    seconds: list[float] = []
    size: list[tuple[int, int]] = []
    work = workdir / "work"

    def on_event(event: object) -> None:
        if isinstance(event, FrameDone):
            seconds.append(event.seconds)
        elif isinstance(event, RenderStarted):
            size.append(event.size)

    config = dataclasses.replace(config, keep_frames=True)
    render(clip, [style], workdir / "out.mp4", config, workdir=work, overwrite=True, restart=True, on_event=on_event)
    outputs = [read_image(p) for p in sorted((work / "frames").glob("*.png"))]
    sources = [f.rgb.copy() for f in read_frames(probe_video(clip), size[0])]
    return outputs, sources[: len(outputs)], seconds


def render_still(still: Path, style: Path, config: Config, workdir: Path) -> tuple[list[np.ndarray],
                                                                                  list[np.ndarray], list[float]]:
    content = read_image(still)
    source = resize_rgb(content, size_to_fit(content.shape[1], content.shape[0], config.size))
    out = workdir / "still.png"
    started = time.perf_counter()
    stylize_image(still, [style], out, config, overwrite=True)
    return [read_image(out)], [source], [time.perf_counter() - started]


def save_pictures(folder: Path, name: str, outputs: list[np.ndarray]) -> None:
    """The first (fresh) and the last (warm-started) output frame as PNGs to look at."""
    folder.mkdir(parents=True, exist_ok=True)
    picks = {"first": outputs[0], "last": outputs[-1]} if len(outputs) > 1 else {"still": outputs[0]}
    for tag, rgb in picks.items():
        (folder / f"{name}.{tag}.png").write_bytes(encode_image(rgb))


def cases(clips: list[str], stills: list[str], frames: int, workdir: Path) -> Iterator[tuple[str, Path, bool]]:
    """(name, path, is_clip) of every case to run; clips trimmed to their first `frames` frames."""
    for name in clips:
        yield name, trimmed(ASSETS / name, frames, workdir), True
    for name in stills:
        yield name, ASSETS / name, False


def run(config: Config, styles: list[Path], clips: list[str], stills: list[str], frames: int,
        save: Path | None) -> Iterator[dict[str, object]]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name, path, is_clip in cases(clips, stills, frames, workdir):
            for style in styles:
                make = render_clip if is_clip else render_still
                outputs, sources, seconds = make(path, style, config, workdir)
                found = score(outputs, sources, read_image(style), seconds)
                if save is not None:
                    save_pictures(save, f"{Path(name).stem}.{style.stem}", outputs)
                yield {"case": name, "style": style.name, "frames": len(outputs), **found.row()}


def parse_settings(pairs: list[str]) -> dict[str, object]:
    """`name=value` pairs typed as the Config field's default."""
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    settings: dict[str, object] = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if name not in field_names():
            raise SystemExit(f"unknown setting {name!r}")
        kind = type(defaults[name])
        settings[name] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
    return settings


def print_table(rows: list[dict[str, object]], config: Config, given: dict[str, object]) -> None:
    # The usual suspects, and whatever --set changed besides, so two runs' headers tell their settings apart.
    shown = ("size", "iters", "first_iters", "content_weight", "style_weight", "tv_weight", "structure_weight",
             "temporal_weight", "held_structure", "style_scale", "init", "flow", "precision", *given)
    print("settings:", {k: v for k, v in dataclasses.asdict(config).items() if k in shown})
    print(f"{'case':28} {'painting':28} {'gain':>6} {'first':>6} {'last':>6} {'texture':>7} {'edge':>6} "
          f"{'s/frame':>7} {'fresh s':>7}")
    for r in rows:
        print(f"{r['case']:28} {r['style']:28} {r['gain']:6.3f} {r['first']:6.3f} {r['last']:6.3f} "
              f"{r['texture']:7.3f} {r['edge']:6.3f} {r['s/frame']:7.2f} {r['fresh s']:7.2f}")
    gains = [float(r["gain"]) for r in rows]  # type: ignore[arg-type]
    edges = [float(r["edge"]) for r in rows]  # type: ignore[arg-type]
    print(f"{'min':57} {min(gains):6.3f} {'':6} {'':6} {'':7} {min(edges):6.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=8, help="first frames of each clip to render")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                        help="any Config field, e.g. style_weight=20 (repeatable)")
    parser.add_argument("--clips", nargs="*", default=list(CLIPS), help="clips of ../shared/assets (none: skip)")
    parser.add_argument("--stills", nargs="*", default=list(STILLS), help="stills of ../shared/assets (none: skip)")
    parser.add_argument("--styles", type=Path, nargs="+", default=[ASSETS / p for p in PAINTINGS])
    parser.add_argument("--save", type=Path, help="write the first and last output frames here as PNG")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="one JSON object per row instead of a table")
    args = parser.parse_args(argv)
    given = parse_settings(args.settings)
    config = make_config(args.preset, size=args.size, device=args.device, **given)
    rows = []
    for row in run(config, args.styles, args.clips, args.stills, args.frames, args.save):
        rows.append(row)
        if args.json:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if not args.json:
        print_table(rows, config, given)


if __name__ == "__main__":
    main()
