"""Peak memory of one optimized frame per pixel, the figure behind vidstyle.limits's size check.

    python scripts/bench_memory.py [--sizes 256,512,1024] [--precisions fp32,bf16] [--device cpu]

Each size runs in its own process (peak RSS only grows), a 16:9 noise frame for 3 iterations from the content;
on CUDA it reads torch's peak allocation instead. Prints bytes per pixel beside the estimate vidstyle uses.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

import numpy as np
import torch


def measure(size: int, precision: str, device: str) -> None:
    from vidstyle.assets import builtin_style
    from vidstyle.config import Config
    from vidstyle.io.images import read_image
    from vidstyle.limits import frame_bytes
    from vidstyle.stylize import Stylizer

    stylizer = Stylizer(Config(precision=precision, device=device), [read_image(builtin_style("starry-night"))])
    frame = np.random.default_rng(0).integers(0, 255, (size * 9 // 16 // 2 * 2, size, 3), dtype=np.uint8)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if stylizer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    stylizer.stylize_fresh(frame, 3)
    peak = (torch.cuda.max_memory_allocated() if stylizer.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    pixels = frame.shape[0] * frame.shape[1]
    estimate = frame_bytes((frame.shape[1], frame.shape[0]), stylizer.dtype)
    used = peak - base
    print(f"{frame.shape[1]}x{frame.shape[0]} {precision:5} on {stylizer.device.type}: peak +{used / 2**20:7.1f} MiB,"
          f" {used / pixels:6.0f} bytes/pixel; vidstyle's estimate {estimate / 2**20:7.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512,1024")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        measure(int(args.one[0]), args.one[1], args.device)
        return
    for size in args.sizes.split(","):
        for precision in args.precisions.split(","):
            subprocess.run([sys.executable, __file__, "--one", size, precision, "--device", args.device], check=True)


if __name__ == "__main__":
    main()
