"""The ETA weighs fresh frames by their cost and settles within a few frames (events replayed on a clock)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from vidstyle.eta import RenderEta
from vidstyle.events import FrameDone, FrameStarted, IterationDone, RenderStarted


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _started(total: int, fresh_left: int, done: int = 0) -> RenderStarted:
    return RenderStarted(total, done, done, (64, 36), Fraction(25), "cpu", Path("w"), fresh_left, "no audio",
                         fresh_left=fresh_left, budgets=(200, 40))


def _frame(eta: RenderEta, clock: Clock, index: int, fresh: bool, seconds: float, iters: int) -> None:
    eta.update(FrameStarted(index, iters, fresh))
    for i in range(1, iters + 1):
        clock.now += seconds / iters
        eta.update(IterationDone(index, i, iters))
    eta.update(FrameDone(index, 1.0, seconds, fresh, iters))


@pytest.mark.parametrize("coarse", [0, 400], ids=["single-scale", "coarse-to-fine"])
def test_the_first_frame_predicts_later_frames_by_its_full_size_iterations(coarse: int) -> None:
    """Truth: a full-size iteration takes 0.5 s; coarse-to-fine, two smaller copies' 400 iterations come first and
    take 10 s together, and say nothing of a full-size one's cost."""
    clock = Clock()
    eta = RenderEta(_started(total=101, fresh_left=1), clock)
    assert eta.seconds_left() is None
    eta.update(FrameStarted(0, 200 + coarse, True))
    for i in range(1, coarse + 1):
        clock.now += 10.0 / coarse
        eta.update(IterationDone(0, i, 200 + coarse))
        assert eta.seconds_left() is None, "the smaller copies' iterations say nothing of a full-size one's"
    clock.now += 5.0
    eta.update(IterationDone(0, coarse + 10, 200 + coarse))
    # The first frame's full size 100 s (95 s still to go), each later frame 40 x 0.5 s.
    assert eta.seconds_left() == pytest.approx(95 + 100 * 20)
    clock.now += 95.0
    eta.update(FrameDone(0, 1.0, 100.0 + (10.0 if coarse else 0.0), True, 200 + coarse))
    assert eta.seconds_left() == pytest.approx(100 * 20)
    assert eta.seconds_a_frame() == pytest.approx(20)


def test_it_settles_within_a_few_frames_and_keeps_scene_cuts_costly() -> None:
    """Truth: fresh frames 100 s, later frames 8 s (warm starts converge faster than their budget says)."""
    clock = Clock()
    eta = RenderEta(_started(total=60, fresh_left=3), clock)
    plan = [(i, i in (0, 20, 40)) for i in range(60)]
    errors = []
    for position, (index, fresh) in enumerate(plan):
        _frame(eta, clock, index, fresh, 100.0 if fresh else 8.0, 200 if fresh else 40)
        truth = sum(100.0 if f else 8.0 for _, f in plan[position + 1:])
        errors.append(abs(eta.seconds_left() - truth) / max(truth, 1e-9))
    assert errors[0] > 0.5, "after one fresh frame the later frames' cost is only a guess"
    assert max(errors[3:-1]) < 0.02, "from the fourth frame on it is within 2 %"


def test_a_resumed_render_without_fresh_frames_times_its_later_frames() -> None:
    clock = Clock()
    eta = RenderEta(_started(total=50, fresh_left=0, done=30), clock)
    eta.update(FrameStarted(30, 40, False))
    clock.now += 2.0
    eta.update(IterationDone(30, 10, 40))
    assert eta.seconds_left() == pytest.approx(6.0 + 19 * 8.0)


def test_later_passes_count_at_their_own_cost() -> None:
    """Two passes over 11 frames: pass 1 as ever (a fresh frame, 10 later ones), then 11 frames at a quarter budget."""
    clock = Clock()
    started = RenderStarted(11, 0, 0, (64, 36), Fraction(25), "cpu", Path("w"), 1, "no audio", fresh_left=1,
                            budgets=(200, 40), passes=2, pass_budget=10)
    eta = RenderEta(started, clock)
    _frame(eta, clock, 0, True, 100.0, 200)
    # Later frames not measured yet: 20 s each from the budgets; a later pass's frame a quarter of that.
    assert eta.seconds_left() == pytest.approx(10 * 20 + 11 * 5)
    for index in range(1, 11):
        _frame(eta, clock, index, False, 8.0, 40)
    assert eta.seconds_left() == pytest.approx(11 * 2.0)
    for done, index in enumerate(range(10, -1, -1), start=1):
        eta.update(FrameStarted(index, 10, False, 2))
        clock.now += 3.0
        eta.update(FrameDone(index, 1.0, 3.0, False, 10, 2))
        assert eta.seconds_left() == pytest.approx((11 - done) * 3.0)


def test_a_render_resumed_in_a_later_pass_counts_only_the_passes_left() -> None:
    """Three passes over 11 frames, stopped after pass 1 and 4 frames of pass 2: 7 frames of pass 2 and 11 of pass 3
    are left, at a later pass's cost; no fresh or first-pass frame (the estimate once counted them all again)."""
    clock = Clock()
    started = RenderStarted(11, 0, 0, (64, 36), Fraction(25), "cpu", Path("w"), 1, "no audio", fresh_left=0,
                            budgets=(200, 40), passes=3, pass_budget=10, earlier_passes_made=(11, 4))
    eta = RenderEta(started, clock)
    eta.update(FrameStarted(6, 10, False, 2))
    clock.now += 1.5
    assert eta.seconds_left() is None and eta.seconds_a_frame() is None, "nothing timed yet"
    eta.update(IterationDone(6, 5, 10))  # half the frame's budget in 1.5 s: 3 s a frame of a later pass
    assert eta.seconds_left() == pytest.approx(1.5 + (6 + 11) * 3.0)
    assert eta.seconds_a_frame() == pytest.approx(3.0)
    clock.now += 1.5
    eta.update(FrameDone(6, 1.0, 3.0, False, 10, 2))
    for done, index in enumerate(range(5, -1, -1), start=2):
        assert eta.seconds_left() == pytest.approx((7 - done + 1 + 11) * 3.0)
        eta.update(FrameStarted(index, 10, False, 2))
        clock.now += 3.0
        eta.update(FrameDone(index, 1.0, 3.0, False, 10, 2))
    assert eta.seconds_left() == pytest.approx(11 * 3.0)


def test_a_render_resumed_in_a_later_pass_with_shots_still_to_start_scales_their_cost_from_it() -> None:
    """Two passes, two shots of 10: the first shot's pass 1 made by an earlier run. Its pass-2 frames are timed
    first; the second shot's fresh and later frames are then scaled from them by the budgets (the estimate was "?"
    for the whole of the first shot's pass)."""
    clock = Clock()
    started = RenderStarted(20, 0, 0, (64, 36), Fraction(25), "cpu", Path("w"), 2, "no audio", fresh_left=1,
                            budgets=(200, 40), passes=2, pass_budget=10, earlier_passes_made=(10,))
    eta = RenderEta(started, clock)
    eta.update(FrameStarted(9, 10, False, 2))
    clock.now += 3.0
    eta.update(FrameDone(9, 1.0, 3.0, False, 10, 2))
    # A later frame costs 40 / 10 pass frames' 3 s, a fresh one 200 / 40 of that.
    assert eta.seconds_a_frame() == pytest.approx(12.0)
    assert eta.seconds_left() == pytest.approx(9 * 3.0 + 60.0 + 9 * 12.0 + 10 * 3.0)
