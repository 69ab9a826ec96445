"""vidstyle's L-BFGS against torch.optim.LBFGS run the same way (no line search, no tolerances)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from vidstyle.config import Config
from vidstyle.lbfgs import run_lbfgs
from vidstyle.stylize import Stylizer, to_tensor


def torch_lbfgs(x0: Tensor, loss_fn: Callable[[Tensor], Tensor], iters: int, history: int) -> tuple[Tensor, list]:
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=iters, max_eval=iters, history_size=history,
                            tolerance_grad=0.0, tolerance_change=0.0)
    losses = []

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x)
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    opt.step(closure)
    return x.detach(), losses


def ours(x0: Tensor, loss_fn: Callable[[Tensor], Tensor], iters: int, history: int) -> tuple[Tensor, list]:
    x = x0.clone().requires_grad_(True)
    losses: list[float] = []
    last = run_lbfgs(x, loss_fn, iters, history, lambda i, loss: losses.append(float(loss)))
    assert float(last) == losses[-1]
    return x.detach(), losses


def bumpy(x: Tensor) -> Tensor:
    """Smooth, not quadratic, with coupled neighbours: curvature pairs differ from step to step."""
    return (x - 0.3).square().sum() + 0.5 * x.pow(4).sum() + (x[..., 1:] - x[..., :-1]).square().sum()


@pytest.mark.parametrize("history", [3, 20])  # 3: the ring of pairs wraps around many times in 30 iterations
def test_same_steps_as_torch(history: int) -> None:
    x0 = torch.rand(1, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    theirs_x, theirs = torch_lbfgs(x0, bumpy, 30, history)
    our_x, our = ours(x0, bumpy, 30, history)
    assert len(our) == len(theirs) == 30
    assert our[:9] == pytest.approx(theirs[:9], rel=1e-6)
    assert our == pytest.approx(theirs, rel=1e-4)
    assert torch.allclose(our_x, theirs_x, atol=1e-5)
    assert our[-1] < our[0] / 2


def test_pairs_without_curvature_change_nothing() -> None:
    # A linear loss has the same gradient everywhere: y = 0, every pair fails y.s > 1e-10 and torch drops it.
    weights = torch.linspace(-1, 1, 48).view(1, 3, 4, 4)
    x0 = torch.zeros(1, 3, 4, 4)

    def linear(x: Tensor) -> Tensor:
        return (weights * x).sum()

    theirs_x, theirs = torch_lbfgs(x0, linear, 6, 3)
    our_x, our = ours(x0, linear, 6, 3)
    assert our == pytest.approx(theirs, rel=1e-6)
    assert torch.allclose(our_x, theirs_x)


def test_never_reads_a_tensor_back_to_the_host() -> None:
    # On the meta device every host read (.item(), float(), a tensor in an if) raises; torch's L-BFGS does
    # dozens an iteration, each a device synchronization on a GPU.
    x = torch.empty(1, 3, 8, 8, device="meta").requires_grad_(True)
    loss = run_lbfgs(x, bumpy, 12, 4)
    assert loss.device.type == "meta" and loss.shape == ()
    with pytest.raises(RuntimeError):
        torch_lbfgs(x.detach(), bumpy, 12, 4)


def test_same_losses_as_torch_on_a_stylization(images) -> None:
    # In float64: in float32 the two round differently (torch's two-loop recursion, the compact form here), and on
    # this frame the large second step turns a 1e-7 difference in the direction into 1e-5 of the next loss, more
    # later (the figures here are then the nearer to float64's). In float64 they agree to the last digits.
    frame, style = images
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stylizer = Stylizer(Config(device="cpu", precision="fp32", style_weight=2.0, tv_weight=1.0), [style])
        stylizer.vgg.double()
        stylizer.style_loss((frame.shape[1], frame.shape[0])).double()  # the cached targets, converted in place
        content = to_tensor(frame, stylizer.device).double()
        loss_fn = stylizer.objective(content)
        _, theirs = torch_lbfgs(content, loss_fn, 12, 20)
        _, our = ours(content, loss_fn, 12, 20)
    finally:
        torch.set_num_threads(threads)
    assert our == pytest.approx(theirs, rel=1e-10)
    assert theirs[-1] < 0.6 * theirs[0], "a real optimization, not a few steps in place"
