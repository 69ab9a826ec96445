"""How long a render has left, from its events: frames still to make, each weighed by what its kind costs.

A fresh frame (the first, and the first after each scene cut) spends `first_iters` iterations from nothing; a later
frame `iters` from a warm start, often five times fewer. A rate over all frames swings between those two (the
first readings of a plain frames-per-second ETA said two hours, then 29 s). Here each kind has its own measured
cost, and until a later frame has been seen its cost is the fresh frame's, scaled by the iteration budgets.

A fresh frame painted coarse-to-fine (Config.coarse_levels) spends its last `first_iters` iterations at full size
and the ones before on smaller copies, which cost a fraction as much each: only its full-size iterations are
extended to a budget, and while it is still on the smaller copies there is no estimate yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vidstyle.events import Event, FrameDone, FrameStarted, IterationDone, RenderStarted

_SMOOTHING = 0.3  # weight of the newest later frame in its running cost: follows a change within a few frames


class RenderEta:
    """Feed it every event of one render; `seconds_left()` is the estimate, None until a frame has begun."""

    def __init__(self, started: RenderStarted, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.fresh_left = started.fresh_left
        frames_left = started.total_frames - started.already_done
        made = started.earlier_passes_made  # by earlier runs, of frames not final yet: pass 1, 2, ...
        self.later_left = frames_left - (made[0] if made else 0) - started.fresh_left
        # Each pass after the first stylizes every frame again from a blend, with its own budget (Config.passes).
        self.pass_left = frames_left * (started.passes - 1) - sum(made[1:])
        self.budgets = started.budgets  # (first_iters, iters)
        self.pass_budget = started.pass_budget
        self.fresh_cost: float | None = None
        self.fresh_full_cost: float | None = None  # the full-size part of the newest fresh frame
        self.later_cost: float | None = None
        self.pass_cost: float | None = None
        self.current: FrameStarted | None = None
        self.frame_began = 0.0
        self.full_began: float | None = None  # when the frame in progress began its full-size iterations
        self.done_iterations = 0

    def update(self, event: Event) -> None:
        if isinstance(event, FrameStarted):
            self.current, self.frame_began, self.done_iterations = event, self.clock(), 0
            self.full_began = self.frame_began if self._coarse_iterations(event) <= 0 else None
        elif isinstance(event, IterationDone):
            self.done_iterations = event.iteration
            if (self.full_began is None and self.current is not None
                    and event.iteration >= self._coarse_iterations(self.current)):
                self.full_began = self.clock()
        elif isinstance(event, FrameDone):
            self._frame_done(event)

    def _frame_done(self, event: FrameDone) -> None:
        if event.pass_number > 1:
            self.pass_left = max(0, self.pass_left - 1)
            previous = self.pass_cost if self.pass_cost is not None else event.seconds
            self.pass_cost = _SMOOTHING * event.seconds + (1 - _SMOOTHING) * previous
        elif event.fresh:
            self.fresh_left = max(0, self.fresh_left - 1)
            self.fresh_cost = event.seconds if self.fresh_cost is None else (self.fresh_cost + event.seconds) / 2
            coarse = self.full_began - self.frame_began if self.full_began is not None else 0.0
            self.fresh_full_cost = max(0.0, event.seconds - coarse)
        else:
            self.later_left = max(0, self.later_left - 1)
            previous = self.later_cost if self.later_cost is not None else event.seconds
            self.later_cost = _SMOOTHING * event.seconds + (1 - _SMOOTHING) * previous
        self.current = None

    def seconds_a_frame(self) -> float | None:
        """What most frames cost: a later frame's, measured or scaled from a fresh one's; where a resumed render
        makes only later passes' frames, one of those."""
        costs = self._costs()
        if costs is not None:
            return costs[1]
        return self._pass_cost(None) if self.fresh_left <= 0 and self.later_left <= 0 else None

    def seconds_left(self) -> float | None:
        fresh, later = self._costs() or (None, None)
        again = self._pass_cost(later)
        fresh_after, later_after, pass_after = self.fresh_left, self.later_left, self.pass_left
        own: float | None = 0.0
        if self.current is not None:  # the frame in progress: what its kind costs, less what it has spent
            current = self.current
            own = again if current.pass_number > 1 else fresh if current.fresh else later
            pass_after -= current.pass_number > 1
            fresh_after -= current.pass_number == 1 and current.fresh
            later_after -= current.pass_number == 1 and not current.fresh
        # A resumed render may have no frame of some kind left to make: its cost is then not needed.
        wanted = ((1, own), (fresh_after, fresh), (later_after, later), (pass_after, again))
        if any(count > 0 and cost is None for count, cost in wanted):
            return None
        in_frame = max(0.0, own - (self.clock() - self.frame_began)) if self.current is not None and own else 0.0
        return in_frame + sum(max(0, count) * cost for count, cost in wanted[1:] if cost is not None)

    def _pass_cost(self, later: float | None) -> float | None:
        """A later pass's frame: measured, scaled from a first-pass later frame's by the budgets, or (resuming in a
        later pass, before one is measured) the frame in progress's iterations so far extended to its budget."""
        if self.pass_cost is not None:
            return self.pass_cost
        if later is not None:
            return later * self.pass_budget / max(1, self.budgets[1])
        current = self.current
        if current is not None and current.pass_number > 1 and self.done_iterations:
            return (self.clock() - self.frame_began) / self.done_iterations * current.iters
        return None

    def _costs(self) -> tuple[float, float] | None:
        fresh, later, full = self.fresh_cost, self.later_cost, self.fresh_full_cost
        current = self.current
        if current is not None and self.done_iterations and current.pass_number == 1:
            # A kind not measured yet: the frame in progress, its iterations so far extended to its budget.
            if current.fresh and fresh is None:
                fresh, full = self._fresh_guess(current)
            elif not current.fresh and later is None:
                later = (self.clock() - self.frame_began) / self.done_iterations * current.iters
        first_iters, iters = (max(1, b) for b in self.budgets)
        if later is None and full is not None:
            later = full * iters / first_iters
        if later is None and fresh is None and self.pass_cost is not None:
            # Resumed in a later pass with first passes still to make (a later shot): scaled by the budgets.
            later = self.pass_cost * iters / max(1, self.pass_budget)
        if fresh is None and later is not None:
            fresh = later * first_iters / iters
        return None if fresh is None or later is None else (fresh, later)

    def _coarse_iterations(self, frame: FrameStarted) -> int:
        """Iterations a fresh frame spends before its full size (none for any other frame)."""
        return frame.iters - self.budgets[0] if frame.fresh and frame.pass_number == 1 and self.budgets[0] else 0

    def _fresh_guess(self, current: FrameStarted) -> tuple[float | None, float | None]:
        """The fresh frame in progress (whole, and its full-size part): its smaller copies' time as spent, its
        full-size iterations so far extended to `first_iters`; nothing while it is still on the smaller copies,
        whose iterations say little of a full-size one's cost."""
        full_done = self.done_iterations - self._coarse_iterations(current)
        if self.full_began is None or full_done <= 0:
            return None, None
        full = (self.clock() - self.full_began) / full_done * self.budgets[0]
        return self.full_began - self.frame_began + full, full
