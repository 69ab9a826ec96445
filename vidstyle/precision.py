"""Which dtype the network runs in, and keeping fp16 gradients representable.

Grams and losses are float32 in every mode (losses.py), but for one rounding: on a CPU in bf16 a Gram's error to
its target comes out of one bf16 product. Otherwise only the VGG convolutions run in bf16/fp16.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torch import Tensor

from vidstyle.errors import SettingError


def _cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); oneDNN only emulates it elsewhere."""
    try:
        flags = Path("/proc/cpuinfo").read_text()  # torch has no public query for this
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def emulation_note(name: str, device_type: str) -> str | None:
    """A line for a person who asked for bf16 on a CPU that only emulates it: it runs, but many times slower than
    fp32 (scripts/bench.py prints both), which nothing else would tell them before a long wait."""
    if name == "bf16" and device_type == "cpu" and not _cpu_has_bf16():
        return ("precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX) and emulates it, many times more "
                "slowly than fp32; precision auto takes fp32 here")
    return None


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the network, or None for float32.

    'auto' takes bf16 where the hardware computes it natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX). On
    such a CPU it is much faster (scripts/bench.py); on a GPU it takes a fraction of float32's memory, and is faster
    only at large frames, since at render sizes a GPU waits on launching kernels rather than on arithmetic. Once a
    frame's loss levels off it is float32's within about 1 %; early in an optimization the two paths part by a few
    per cent either way (scripts/bench.py [q] prints both, and the time an iteration of each).
    """
    if name == "fp32":
        return None
    if name == "fp16":
        if device.type == "cpu":
            raise SettingError("precision", "fp16 is for GPUs; use bf16 or fp32 on a CPU")
        return torch.float16
    if name == "bf16":
        return torch.bfloat16
    native_bf16 = (device.type == "cuda" and _gpu_has_bf16(device)) or (device.type == "cpu" and _cpu_has_bf16())
    return torch.bfloat16 if native_bf16 else None


def dtype_name(dtype: torch.dtype | None) -> str:
    """The setting's word for a dtype resolve_precision returned."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def mixed_precision_note(made_in: str, now: torch.dtype | None, frames_made: int) -> str | None:
    """A line for a resumed render whose frames so far were computed in another dtype (`precision auto` on another
    device): the frames before and after differ slightly, which nothing else would show."""
    current = dtype_name(now)
    if not made_in or made_in == current or frames_made == 0:
        return None
    return (f"precision: the {frames_made} frame(s) already made were computed in {made_in}, this run computes in "
            f"{current} (precision auto on another device); the two differ slightly. To make every frame in one, "
            f"restart the render with precision {made_in}")


def _gpu_has_bf16(device: torch.device) -> bool:
    """Whether the GPU that renders (not torch's current one: cuda:1 on a machine of mixed GPUs) computes bf16
    natively; without including_emulation=False torch also says yes on GPUs before Ampere, which emulate it slowly."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


class _ScaleGrad(torch.autograd.Function):
    """Identity on the way forward; multiplies the gradient by `factor` on the way back."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, factor: float) -> Tensor:  # type: ignore[override]
        ctx.factor = factor  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None  # type: ignore[attr-defined]


def fp16_grad_scale(height: int, width: int) -> float:
    """Factor that lifts the network's fp16 gradients out of the underflow range.

    The losses are averages over positions, so the gradients reaching the network shrink with the pixel count:
    measured at 64-512 px, the largest is about 10 / (H x W) and typical ones are 1e-3 of that, far below
    fp16's smallest normal number (6e-5). A power of two times 4 x H x W brings the largest to ~40: typical
    values become normal numbers and fp16's maximum (65504) is still 1600x away.
    """
    return 2.0 ** round(math.log2(4 * height * width))


def scale_down_grad(image: Tensor, factor: float) -> Tensor:
    """The image as the network's input, its gradient divided by `factor` again before it reaches the image."""
    return _ScaleGrad.apply(image, 1.0 / factor)


def scale_up_grad(features: Tensor, factor: float) -> Tensor:
    """An activation as float32 for the losses; their gradient is multiplied by `factor` on its way into the network.

    The scaling happens on the float32 copy, before the gradient is cast down to fp16: scaling an fp16
    gradient that has already underflowed would scale zeros. Between the two, the network's backward sees
    large numbers and the image the true gradient.
    """
    return _ScaleGrad.apply(features.float(), factor)
