"""The GPU path: the same stylizer, render and resume on a CUDA device.

Skipped where torch sees no CUDA device (the CPU suite), saying so; scripts/gpu_check.sh runs them on a GPU.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import decoded
from torch import Tensor

import vidstyle
from vidstyle.checkpoint import WorkDir
from vidstyle.config import Config, make_config
from vidstyle.errors import Interrupted
from vidstyle.events import FrameSaved, FrameStarted
from vidstyle.io.images import resize_rgb
from vidstyle.losses import TemporalLoss
from vidstyle.optimize import stylize_frame
from vidstyle.precision import resolve_precision
from vidstyle.stylize import Stylizer, to_tensor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: these check the GPU path (scripts/gpu_check.sh)")

CUDA = torch.device("cuda")


def _value_and_gradient(stylizer: Stylizer, content: np.ndarray, image: np.ndarray,
                        temporal: tuple[Tensor, Tensor]) -> tuple[float, Tensor]:
    """The objective (temporal term included) at `image` and its gradient, on the CPU in float64 for comparing."""
    target, mask = (t.to(stylizer.device) for t in temporal)
    loss_fn = stylizer.objective(to_tensor(content, stylizer.device), TemporalLoss(target, mask), False)
    x = to_tensor(image, stylizer.device).requires_grad_(True)
    loss = loss_fn(x)
    (gradient,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), gradient.double().cpu()


@pytest.mark.parametrize(("precision", "size", "tolerance"), [
    ("fp32", (64, 36), 0.01), ("bf16", (64, 36), 0.03), ("fp16", (64, 36), 0.03), ("fp16", (512, 288), 0.03)])
def test_the_objective_and_its_gradient_on_the_gpu_are_the_cpus(images, precision: str, size: tuple[int, int],
                                                               tolerance: float) -> None:
    """Against the CPU in fp32: the loss, and the gradient's direction and length, which L-BFGS's steps follow (a
    gradient scaled wrongly, as fp16's loss scaling could, leaves the loss right and every step wrong). fp16 also
    at 512 px, where its scaling is set by the frame's size. GPU "fp32" convolutions run in TF32, hence 1 %."""
    frame, style = images
    frame = resize_rgb(frame, size)
    reference = Stylizer(Config(device="cpu", precision="fp32"), [style])
    gpu = Stylizer(Config(device="cuda", precision=precision), [style])
    painted = reference.stylize(frame, frame, 10).rgb
    generator = torch.Generator().manual_seed(0)
    temporal = (torch.rand(1, 3, size[1], size[0], generator=generator),
                (torch.rand(1, 1, size[1], size[0], generator=generator) > 0.3).float())
    for image in (frame, painted):
        (want, want_grad), (got, got_grad) = (_value_and_gradient(s, frame, image, temporal) for s in (reference, gpu))
        assert np.isfinite(got) and abs(got - want) / want < tolerance, (precision, want, got)
        cosine = float(torch.nn.functional.cosine_similarity(got_grad.flatten(), want_grad.flatten(), dim=0))
        lengths = float(got_grad.norm() / want_grad.norm())
        assert cosine > 1 - tolerance and abs(lengths - 1) < 3 * tolerance, (precision, cosine, lengths)


def test_auto_precision_is_bf16_only_on_a_gpu_that_computes_it_natively() -> None:
    native = torch.cuda.get_device_capability(CUDA) >= (8, 0)  # Ampere and later; earlier ones emulate it slowly
    assert resolve_precision("auto", CUDA) == (torch.bfloat16 if native else None)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_gpu_frame_lowers_its_loss_and_stays_finite(images, precision: str) -> None:
    frame, style = images
    stylizer = Stylizer(Config(device="cuda", precision=precision), [style])
    content = to_tensor(frame, stylizer.device)
    loss_fn = stylizer.objective(content, None, True)
    start = float(loss_fn(content))
    image, loss, _ = stylize_frame(content, loss_fn, 20)
    assert image.device.type == "cuda" and bool(torch.isfinite(image).all())
    assert float(loss) < 0.8 * start, (start, float(loss))


def test_a_render_on_the_gpu_is_interrupted_and_resumes(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    config = make_config(size=64, iters=4, first_iters=8, device="cuda", keep_frames=True)
    out, work = tmp_path / "out.mp4", tmp_path / "work"
    stop = threading.Event()
    saved: list[int] = []

    def stop_after_three(event: object) -> None:
        if isinstance(event, FrameSaved):
            saved.append(event.index)
            if len(saved) == 3:
                stop.set()

    with pytest.raises(Interrupted):
        vidstyle.render(bunny_short, [starry], out, config, workdir=work, on_event=stop_after_three, stop=stop)
    done = WorkDir(work).done_frames()
    assert not out.exists() and 3 <= len(done) < 12
    started: list[int] = []
    vidstyle.render(bunny_short, [starry], out, config, workdir=work,
                    on_event=lambda e: isinstance(e, FrameStarted) and started.append(e.index))
    assert sorted(started) == sorted(set(range(12)) - done)
    frames = decoded(out)
    assert len(frames) == 12 and frames[0].shape == (36, 64, 3)
    source = cv2.resize(decoded(bunny_short)[0], (64, 36), interpolation=cv2.INTER_AREA)
    assert np.abs(frames[0].astype(int) - source).mean() > 5  # painted, not the source passed through
