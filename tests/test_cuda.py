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

import vidstyle
from vidstyle.checkpoint import WorkDir
from vidstyle.config import Config, make_config
from vidstyle.errors import Interrupted
from vidstyle.events import FrameSaved, FrameStarted
from vidstyle.optimize import stylize_frame
from vidstyle.precision import resolve_precision
from vidstyle.stylize import Stylizer, to_tensor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: these check the GPU path (scripts/gpu_check.sh)")

CUDA = torch.device("cuda")


def _objective_value(stylizer: Stylizer, content: np.ndarray, image: np.ndarray) -> float:
    loss_fn = stylizer.objective(to_tensor(content, stylizer.device), None, False)
    return float(loss_fn(to_tensor(image, stylizer.device)))


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-3), ("bf16", 0.02), ("fp16", 0.02)])
def test_the_objective_on_the_gpu_is_the_cpus(images, precision: str, tolerance: float) -> None:
    frame, style = images
    reference = Stylizer(Config(device="cpu", precision="fp32"), [style])
    gpu = Stylizer(Config(device="cuda", precision=precision), [style])
    painted = reference.stylize(frame, frame, 10).rgb
    for image in (frame, painted):
        want, got = _objective_value(reference, frame, image), _objective_value(gpu, frame, image)
        assert np.isfinite(got) and abs(got - want) / want < tolerance, (precision, want, got)


def test_auto_precision_is_bf16_on_a_gpu_that_has_it() -> None:
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert resolve_precision("auto", CUDA) == expected


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
