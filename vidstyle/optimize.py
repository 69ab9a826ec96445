"""The optimization loop: an image is pushed down a loss for a budget of iterations (or until it converges).

An iteration is one evaluation of the loss and its gradient (one VGG forward + backward) whatever the
optimizer, so counts compare across optimizers and with other tools.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from vidstyle.config import MIN_ITERS
from vidstyle.lbfgs import StepCallback, StopRule, run_lbfgs

# L-BFGS memory (pairs of image-sized vectors), which every iteration reads twice over. Measured at 256 px:
# 20 pairs run faster than 50 (fewer image-sized reads) with final losses all but the same, where 10 lose more
# (docs/performance.md).
LBFGS_HISTORY = 20


class Optimized(NamedTuple):
    image: Tensor  # clamped to 0..1
    loss: Tensor  # of the final image
    iterations: int  # evaluations spent, at most the budget


class Converged:
    """Stop a frame once its loss improves by less than `tol` (relative, per iteration) over `every` iterations, or
    rises by less than OVERSHOOT (a larger rise is an overshoot of L-BFGS's step, which it comes back down from).

    The loss is read on the host only every `every` iterations: each read is a device synchronization, so a GPU
    still runs that many iterations without waiting. Never before `floor` iterations: the first steps of L-BFGS
    are small while it builds its curvature pairs, which is no sign of convergence.
    """

    def __init__(self, tol: float, every: int, floor: int) -> None:
        self.tol, self.every, self.floor = tol, every, floor
        self.last: float | None = None

    def __call__(self, count: int, loss: Tensor) -> bool:
        if count % self.every:
            return False
        value, previous = float(loss), self.last
        self.last = value
        if previous is None or count < self.floor or not math.isfinite(value):
            return False
        # A loss that rose by more than OVERSHOOT is no convergence but an overshoot of L-BFGS's fixed step (no line
        # search), which the next steps come back down from: stopped there, a frame kept its overshot picture.
        change = (previous - value) / max(abs(previous), 1e-12)
        return -OVERSHOOT < change < self.tol * self.every


# A rise of the loss between two checks, relative, past which a frame goes on (Converged). A frame near its
# optimum rises a little between checks now and then and is done; an overshoot of L-BFGS's step takes the loss to
# several times what it was (an independent 256-px frame of the field pan, stopped on one, kept half its edges).
OVERSHOOT = 0.05

# Iterations between two convergence checks (MIN_ITERS: the fewest a frame gets when `tol` is set).
CHECK_EVERY = 5


def _run_adam(x: Tensor, loss_fn: Callable[[Tensor], Tensor], iters: int, lr: float,
              on_step: StepCallback | None, should_stop: StopRule | None) -> Tensor:
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
        if should_stop is not None and should_stop(i, last):
            break
    return last


def stylize_frame(init: Tensor, loss_fn: Callable[[Tensor], Tensor], iters: int, optimizer: str = "lbfgs",
                  lr: float = 0.02, on_step: StepCallback | None = None, tol: float = 0.0,
                  on_iterate: StepCallback | None = None) -> Optimized:
    """Optimize a copy of `init` (N, 3, H, W, RGB in 0..1) for `iters` iterations, or fewer once the loss
    improves by less than `tol` per iteration (0: always the full budget, and no host read of the loss).

    `on_iterate(i, image)` sees the iterate itself, from i = 0 (the start); reading it waits for the device,
    so only a caller that wants the pictures (an animation of the optimization) passes it."""
    x = init.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
    rule = Converged(tol, CHECK_EVERY, MIN_ITERS) if tol > 0 and iters > MIN_ITERS else None
    counted: list[int] = [0]
    if on_iterate is not None:
        on_iterate(0, x.detach().clamp(0.0, 1.0))

    def step(i: int, loss: Tensor) -> None:
        counted[0] = i
        if on_step is not None:
            on_step(i, loss)
        if on_iterate is not None:
            on_iterate(i, x.detach().clamp(0.0, 1.0))

    if optimizer == "lbfgs":
        # No line search, like neural-style: it would spend evaluations we count (see vidstyle.lbfgs for why not
        # torch.optim.LBFGS).
        last = run_lbfgs(x, loss_fn, iters, LBFGS_HISTORY, step, rule)
    elif optimizer == "adam":
        last = _run_adam(x, loss_fn, iters, lr, step, rule)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    return Optimized(x.detach().clamp_(0.0, 1.0), last, counted[0])
