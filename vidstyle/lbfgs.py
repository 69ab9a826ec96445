"""L-BFGS with a fixed step and a fixed number of evaluations that never reads a tensor back to the host.

The method of torch.optim.LBFGS without a line search (as neural-style runs it), rewritten for the device.
torch's two-loop recursion turns every coefficient into a Python number and checks the curvature condition and
its tolerances on the host: some 45 device synchronizations an iteration at 20 pairs, each leaving a GPU idle
while Python launches the next kernels, and some 150 kernel launches for the recursion itself. Here the search
direction comes from the compact form of Byrd, Nocedal and Schnabel (1994, "Representations of quasi-Newton
matrices and their use in limited memory methods", eq. 3.13): one batched product of the stored pairs with the
gradient, a few m x m operations and two matrix-vector products, all on the device; the pairs live in one
preallocated buffer used as a ring, so no image-sized tensor is allocated per iteration.

Two differences from torch's, neither of which changes a step that torch would take: a pair that fails the
curvature condition (y.s <= 1e-10) is stored as zeros, which changes nothing, instead of being dropped (it
then takes the oldest pair's place), and there are no tolerances, since a render is budgeted in iterations
and stopping at different points would make frames unrepeatable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

StepCallback = Callable[[int, Tensor], None]
StopRule = Callable[[int, Tensor], bool]  # (evaluations so far, their last loss) -> stop here

# torch.optim.LBFGS's threshold on y.s below which a pair carries no usable curvature.
_CURVATURE_EPS = 1e-10


class _Pairs:
    """The last m steps s and gradient changes y, their inner products, and the initial inverse-Hessian scale.

    The big buffer is a ring in physical slots; the m x m products are kept oldest first, as the compact form's
    triangular R needs them.
    """

    def __init__(self, like: Tensor, size: int) -> None:
        self.vectors = like.new_empty(2, size, like.numel())  # [0]: steps s, [1]: gradient changes y
        self.s_dot_y = like.new_zeros(size, size)  # [i, j] = s_i . y_j, oldest first
        self.y_dot_y = like.new_zeros(size, size)
        self.scale = like.new_ones(())  # gamma = s.y / y.y of the newest usable pair (H0 = gamma I)
        self.count = 0

    @property
    def used(self) -> int:
        return min(self.count, self.vectors.shape[1])

    def _oldest_slot(self) -> int:
        size = self.vectors.shape[1]
        return self.count % size if self.count >= size else 0

    def add(self, step: Tensor, grad: Tensor, previous_grad: Tensor) -> Tensor:
        """Store (step, grad - previous_grad); returns the stored pairs' products with grad, oldest first."""
        size = self.vectors.shape[1]
        slot = self.count % size
        steps, changes = self.vectors[0, slot], self.vectors[1, slot]
        torch.sub(grad, previous_grad, out=changes)
        usable = torch.dot(step, changes) > _CURVATURE_EPS
        torch.mul(step, usable, out=steps)
        changes.mul_(usable)
        if self.count >= size:  # the oldest pair leaves: its row and column of the products go
            self.s_dot_y = self.s_dot_y.roll((-1, -1), (0, 1))
            self.y_dot_y = self.y_dot_y.roll((-1, -1), (0, 1))
        self.count += 1
        used = self.used
        # One pass over the stored pairs gives both their products with the gradient (for the direction) and
        # with the new y (the new column of S^T Y and Y^T Y).
        products = self.vectors[:, :used] @ torch.stack((grad, changes)).T  # (2, used, 2)
        products = products.roll(-self._oldest_slot(), dims=1)
        self.s_dot_y[:used, used - 1] = products[0, :, 1]
        self.y_dot_y[:used, used - 1] = products[1, :, 1]
        self.y_dot_y[used - 1, :used] = products[1, :, 1]
        sy, yy = products[0, -1, 1], products[1, -1, 1]
        self.scale = torch.where(usable, sy / yy, self.scale)
        return products[:, :, 0]

    def direction(self, grad: Tensor, grad_products: Tensor, out: Tensor) -> Tensor:
        """-H grad into `out`, H = gamma I + [S  gamma Y] M [S  gamma Y]^T in the compact form."""
        used = self.used
        s_dot_g, y_dot_g = grad_products[0, :, None], grad_products[1, :, None]
        s_dot_y, y_dot_y = self.s_dot_y[:used, :used], self.y_dot_y[:used, :used]
        diagonal = s_dot_y.diagonal()
        # A pair stored as zeros has s.y = 0: a unit there decouples it, and its zero vectors add nothing.
        upper = s_dot_y.triu(1) + torch.diag(torch.where(diagonal == 0, 1.0, diagonal))
        gamma = self.scale
        v = torch.linalg.solve_triangular(upper, s_dot_g, upper=True)
        inner = diagonal[:, None] * v + gamma * (y_dot_y @ v) - gamma * y_dot_g
        s_coef = torch.linalg.solve_triangular(upper.T, inner, upper=False)
        y_coef = -gamma * v
        shift = self._oldest_slot()
        torch.mul(grad, -gamma, out=out)
        out.addmv_(self.vectors[0, :used].T, s_coef[:, 0].roll(shift), alpha=-1)
        out.addmv_(self.vectors[1, :used].T, y_coef[:, 0].roll(shift), alpha=-1)
        return out


def run_lbfgs(x: Tensor, loss_fn: Callable[[Tensor], Tensor], iters: int, history: int,
              on_step: StepCallback | None = None, should_stop: StopRule | None = None) -> Tensor:
    """Update the contiguous leaf `x` in place with `iters` evaluations of loss_fn (iters - 1 steps), or fewer
    where `should_stop` says so after an evaluation.

    Returns the last loss, which is that of the final `x`.
    """
    flat = x.detach().view(-1)
    pairs = _Pairs(flat, max(1, min(history, iters)))
    step = torch.empty_like(flat)
    loss, grad = _evaluate(x, loss_fn)
    previous = grad  # the gradient before the last step; each evaluation returns a new tensor, so none is copied
    for count in range(1, iters + 1):
        if on_step is not None:
            on_step(count, loss)
        if count == iters or (should_stop is not None and should_stop(count, loss)):
            break
        if count == 1:
            # torch's first step: steepest descent, at most a unit step in the gradient's L1 norm.
            torch.mul(grad, -torch.clamp(grad.abs().sum().reciprocal(), max=1.0), out=step)
        else:
            pairs.direction(grad, pairs.add(step, grad, previous), out=step)
        flat.add_(step)
        previous, (loss, grad) = grad, _evaluate(x, loss_fn)
    return loss


def _evaluate(x: Tensor, loss_fn: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        loss = loss_fn(x)
        (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad.reshape(-1)
