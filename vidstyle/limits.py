"""Sizes a render can run at, checked before anything starts: the network's smallest frame, and memory.

A size that cannot work is refused in one line that names one that does, instead of failing inside the network
or in the allocator after the style targets were built."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from vidstyle.errors import ImageTooSmall, ResourceError, SettingError
from vidstyle.io.probe import size_to_fit
from vidstyle.precision import resolve_precision

# VGG19 halves a frame three times before relu4_1 and relu4_2, the deepest layers the losses read: a side under 16
# pixels leaves them a position or two, which teach nothing.
MIN_SIDE = 16

# Peak bytes per pixel of an optimized frame: VGG19's activations with their saved tensors and gradients, the L-BFGS
# history and the loss targets, as `python scripts/bench_memory.py` measures it (docs/performance.md, "Memory"), with
# a margin over its largest figures in each precision. Measured with the network running to relu5_1: more margin
# now that it stops at relu4_2.
_BYTES_PER_PIXEL = {"fp32": 3200, "half": 2200}
_FIXED = 512 << 20  # the network's weights, the style targets, ffmpeg's buffers and the interpreter
# Leave some of the free memory to everything else on the machine.
_USABLE = 0.9


def frame_bytes(size: tuple[int, int], dtype: torch.dtype | None) -> int:
    """Estimated peak memory of optimizing one frame of (width, height) with the network in `dtype`."""
    per_pixel = _BYTES_PER_PIXEL["fp32" if dtype is None else "half"]
    return _FIXED + size[0] * size[1] * per_pixel


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a render on `device`, or None where it cannot be told (then nothing is refused)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None


def check_fits(size: tuple[int, int], long_side: int, dtype: torch.dtype | None, device: torch.device) -> None:
    """Refuse a render size whose frames cannot fit in the device's free memory, naming one that does."""
    free = available_bytes(device)
    need = frame_bytes(size, dtype)
    if free is None or need <= free * _USABLE:
        return
    raise SettingError("size", f"{long_side} needs about {need / 2**30:.1f} GiB for a {size[0]}x{size[1]} frame "
                               f"on {device.type}, which has {free / 2**30:.1f} GiB free; "
                               f"{advice(size, dtype, free, device)}")


def advice(size: tuple[int, int], dtype: torch.dtype | None, free: int, device: torch.device) -> str:
    """What to do about a frame of `size` that does not fit in `free` bytes: the largest size that does, and bf16
    where the device computes it natively (elsewhere it is emulated, many times slower than fp32)."""
    need = frame_bytes(size, dtype)
    pixels = max(0.0, (free * _USABLE - _FIXED) / (need - _FIXED) * size[0] * size[1])
    fits = int(math.sqrt(pixels * max(size) / min(size))) // 16 * 16
    found = f"size {fits} fits" if fits >= MIN_SIDE else "no size fits"
    native_bf16 = resolve_precision("auto", device) is torch.bfloat16
    return found + (" (bf16 precision needs about a third less)" if dtype is None and native_bf16 else "")


def output_size(setting: str, render: tuple[int, int], source: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the written video for `Config.output_size`, both sides even (H.264 4:2:0 needs it)."""
    if setting == "render":
        return render
    if setting == "source":
        return size_to_fit(*source, max(source))
    if "x" in setting:
        width, height = (int(v) for v in setting.split("x"))
        return width + width % 2, height + height % 2
    return size_to_fit(*render, int(setting))


def own_size_note(what: str, done: str, own: tuple[int, int], size: tuple[int, int], asked: int) -> str | None:
    """Said where a picture (`what`: "the source", "the picture") is smaller than the size `asked` and is `done`
    ("rendered", "painted") at its own size, `size` (its sides evened where they were odd), not enlarged; None where
    it is not smaller."""
    if max(own) >= asked:
        return None
    at = "its own size" if size == own else f"{size[0]}x{size[1]}, its own size with even sides"
    # A 47x31 picture evened to 48x32 is at a size of 48: it was not left smaller than that.
    smaller = f", not enlarged to {asked}" if max(size) < asked else ""
    return f"{what} is {own[0]}x{own[1]}: {done} at {at}{smaller}"


# Width-to-height ratios this close are one shape: a size asked for in whole (even) pixels is off by about as much.
_SAME_SHAPE = 0.03


def stretches(written: tuple[int, int], source: tuple[int, int]) -> bool:
    """Whether a picture of `source`'s (width, height) written at `written` is squeezed or stretched."""
    return abs(written[0] / written[1] / (source[0] / source[1]) - 1) > _SAME_SHAPE


def image_size(setting: str, render: tuple[int, int], source: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a written still for `Config.output_size`: as for a video, but any sides (no codec needs
    them even), so `source` gives the picture's own size."""
    if setting == "render":
        return render
    if setting == "source":
        return source
    if "x" in setting:
        width, height = (int(v) for v in setting.split("x"))
        return width, height
    long_side = int(setting)
    scale = long_side / max(render)
    return max(1, round(render[0] * scale)), max(1, round(render[1] * scale))


def out_of_memory(size: tuple[int, int], dtype: torch.dtype | None, device: torch.device) -> ResourceError:
    """The one-line error for an allocation that failed in the middle of a frame, naming a size that fits now."""
    if device.type == "cuda":
        torch.cuda.empty_cache()  # what the failed frame held is free again
    free = available_bytes(device)
    hint = advice(size, dtype, free, device) if free is not None else "try a smaller size"
    return ResourceError(f"out of memory on {device} for a {size[0]}x{size[1]} frame; {hint}")


def render_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) of a render whose long side is `long_side`, or the picture's own size where it is smaller
    (an upscaled source only adds blur for the network to paint); refused, naming the smallest size that works for
    this picture's aspect, where the short side would fall under MIN_SIDE."""
    size = size_to_fit(width, height, min(long_side, max(width, height)))
    if min(size) >= MIN_SIDE:
        return size
    # Named as it is rendered: an odd size asked for is evened (239 is rendered at 240).
    smallest = next((max(fit) for n in range(long_side, 8 * 8192)
                     if min(fit := size_to_fit(width, height, n)) >= MIN_SIDE), None)
    if smallest is None or smallest > max(width, height):
        # The picture's own fault, not the size's: no size can help (a picture is never enlarged).
        raise ImageTooSmall(f"the picture is {width}x{height}, too small to stylize: the network needs at least "
                         f"{MIN_SIDE} pixels on each side, and vidstyle does not enlarge a picture")
    raise SettingError("size", f"{long_side} makes this {width}x{height} picture {size[0]}x{size[1]} pixels, and the "
                               f"network needs at least {MIN_SIDE} on each side; the smallest size that works for it "
                               f"is {smallest}")
