"""The optimization loop: an image is pushed down a loss for a fixed number of iterations.

An iteration is one evaluation of the loss and its gradient (one VGG forward + backward) whatever the
optimizer, so counts compare across optimizers and with other tools.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vidstyle.lbfgs import StepCallback, run_lbfgs

# L-BFGS memory (pairs of image-sized vectors), which every iteration reads twice over. Measured at 256 px:
# 20 pairs run faster than 50 (fewer image-sized reads) with final losses all but the same, where 10 lose more
# (docs/performance.md).
LBFGS_HISTORY = 20


def _run_adam(x: Tensor, loss_fn: Callable[[Tensor], Tensor], iters: int, lr: float,
              on_step: StepCallback | None) -> Tensor:
    opt = torch.optim.Adam([x], lr=lr)
    last = torch.zeros(())
    for i in range(1, iters + 1):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x)
        loss.backward()
        opt.step()
        last = loss.detach()
        if on_step is not None:
            on_step(i, last)
    return last


def stylize_frame(init: Tensor, loss_fn: Callable[[Tensor], Tensor], iters: int, optimizer: str = "lbfgs",
                  lr: float = 0.02, on_step: StepCallback | None = None) -> tuple[Tensor, Tensor]:
    """Optimize a copy of `init` (N, 3, H, W, RGB in 0..1); returns (image clamped to 0..1, last loss)."""
    x = init.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
    if optimizer == "lbfgs":
        # No line search, like neural-style: it would spend evaluations we count. No tolerances: a render is
        # budgeted in iterations (see vidstyle.lbfgs for why not torch.optim.LBFGS).
        last = run_lbfgs(x, loss_fn, iters, LBFGS_HISTORY, on_step)
    elif optimizer == "adam":
        last = _run_adam(x, loss_fn, iters, lr, on_step)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    return x.detach().clamp_(0.0, 1.0), last
