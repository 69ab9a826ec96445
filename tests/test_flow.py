"""Optical flow, warping, occlusion masks and scene cuts on real frames."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ffmpeg, shared_asset

from vidstyle.config import Config
from vidstyle.detail import source_detail
from vidstyle.events import FrameStarted, IterationDone
from vidstyle.flow import estimate_flow, is_scene_cut, occlusion_mask, reliable_flow, to_gray, warp, warp_keeping_detail
from vidstyle.io.decode import read_frames
from vidstyle.io.images import read_image, resize_rgb
from vidstyle.io.probe import probe_video, size_to_fit
from vidstyle.metrics import VideoMetrics, edge_correlation, measure_frames, measure_frames_along
from vidstyle.pipeline import render
from vidstyle.sequence import (
    FLAT_FULL,
    HOLD_FLAT,
    HOLD_FULL,
    HOLD_SMALL,
    SHARP_FROM,
    SHARP_FULL,
    UNRELIABLE_KEEP,
    Motion,
    carry_hold,
    carry_sharpness,
    track_motion,
    warm_start,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return resize_rgb(read_image(shared_asset("coffee.png")), (150, 100))


def test_warp_by_a_known_shift_lands_where_it_should(photo: np.ndarray) -> None:
    shift = np.zeros((*photo.shape[:2], 2), np.float32)
    shift[..., 0] = -3.0  # every pixel comes from 3 px to its left: the picture moves right by 3
    moved = warp(photo, shift)
    assert np.array_equal(moved[:, 3:], photo[:, :-3])


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_estimated_flow_recovers_a_real_camera_shift(photo: np.ndarray, method: str) -> None:
    a = photo[:, 5:145]
    b = photo[:, 2:142]  # the camera panned 3 px to the left: content moves right by 3, b(x) = a(x - 3)
    flow = estimate_flow(to_gray(b), to_gray(a), method)  # b -> a
    inner = flow[10:-10, 10:-10]
    assert np.median(inner[..., 0]) == pytest.approx(-3.0, abs=0.3)
    assert np.median(inner[..., 1]) == pytest.approx(0.0, abs=0.3)
    carried = warp(a, flow)
    assert np.abs(carried[10:-10, 10:-10].astype(int) - b[10:-10, 10:-10].astype(int)).mean() < 6


def test_mask_marks_where_the_flow_disagrees_with_itself() -> None:
    # An object 30 px wide moves 20 px right over a still background: the flows a perfect estimator gives.
    forward = np.zeros((100, 150, 2), np.float32)  # first -> second
    backward = np.zeros_like(forward)  # second -> first
    forward[35:65, 20:50, 0] = 20.0
    backward[35:65, 40:70, 0] = -20.0  # where the uncovered background came from is unknown: 0 is as good as any
    mask = occlusion_mask(backward, forward)
    assert mask[40:60, 23:37].mean() < 0.1, "the background the object uncovered"
    assert mask[40:60, 45:65].mean() > 0.9 and mask[5:25, 100:145].mean() > 0.9, "the object and the still part"


@pytest.mark.parametrize("method", ["dis", "dis+farneback"])
def test_the_renders_reliability_marks_a_known_occlusion(photo: np.ndarray, method: str) -> None:
    from vidstyle.io.decode import Frame

    patch = resize_rgb(read_image(shared_asset("astronaut.png")), (30, 30))
    first, second = photo.copy(), photo.copy()
    first[35:65, 20:50] = patch  # an object in front of the coffee cup ...
    second[35:65, 40:70] = patch  # ... moves 20 px to the right
    # Flow alone may miss a small object that moves most of its width (DIS smooths it away); with the colour
    # check, as a render has it, the background it uncovered is still unreliable.
    motion = list(track_motion([Frame(0, first), Frame(1, second)], Config(flow=method)))[1]
    assert motion.mask is not None
    assert motion.mask[40:60, 23:37].mean() < 0.5, "background seen in `second` that the object hid in `first`"
    assert motion.mask[5:25, 100:145].mean() > 0.9


def test_dis_plus_farneback_keeps_dis_where_it_holds_and_farneback_where_only_it_does() -> None:
    """At 512 px DIS has nothing to match in the field clip's flat sky, and its two directions disagree there (its
    paint would be repainted every frame); Farneback's smooth flow agrees with itself there."""
    info = probe_video(shared_asset("field_pan_with_audio.mp4"))
    size = size_to_fit(info.width, info.height, 512)
    first, second = (to_gray(f.rgb) for f in read_frames(info, size, 64, 66))
    dis_flow, dis_mask = reliable_flow(second, first, "dis")
    flow, mask = reliable_flow(second, first, "dis+farneback")
    sky = slice(0, size[1] // 3)
    assert dis_mask[sky].mean() < 0.7 and mask[sky].mean() > 0.95, (dis_mask[sky].mean(), mask[sky].mean())
    consistent = occlusion_mask(dis_flow, estimate_flow(first, second, "dis"), blur_sigma=0) > 0
    assert np.array_equal(flow[consistent], dis_flow[consistent]), "where DIS holds, its flow is kept"
    farneback = estimate_flow(second, first, "farneback")
    only_farneback = ~consistent & (occlusion_mask(farneback, estimate_flow(first, second, "farneback"),
                                                   blur_sigma=0) > 0)
    assert only_farneback[sky].mean() > 0.3
    assert np.array_equal(flow[only_farneback], farneback[only_farneback]), "where only Farneback holds, its flow"


def test_hard_cut_in_real_footage_is_detected() -> None:
    clip = shared_asset("bikes_street_no_audio.mp4")
    info = probe_video(clip)
    motions = itertools.islice(track_motion(read_frames(info, (96, 40)), Config(flow="none")), 40)
    assert [m.frame.index for m in motions if m.fresh] == [0, 30]  # the cut at 1.20 s, 25 fps


def test_two_real_clips_joined_make_a_cut() -> None:
    field = probe_video(shared_asset("field_pan_with_audio.mp4"))
    bikes = probe_video(shared_asset("bikes_street_no_audio.mp4"))
    size = (96, 54)
    a = [f.rgb for f in itertools.islice(read_frames(field, size), 10)]
    b = [f.rgb for f in itertools.islice(read_frames(bikes, size), 10)]
    joined = a + b
    cuts = [i for i in range(1, 20) if is_scene_cut(joined[i - 1], joined[i], Config().cut_threshold)]
    assert cuts == [10]


def test_render_restarts_at_a_cut(tmp_path: Path, starry: Path) -> None:
    cut_clip = tmp_path / "cut.mp4"
    ffmpeg("-ss", "0.96", "-i", str(shared_asset("bikes_street_no_audio.mp4")), "-t", "0.48",
           "-c:v", "libx264", str(cut_clip))
    events = []
    cfg = Config(size=48, iters=1, first_iters=3, device="cpu", flow="dis", temporal_weight=1.0)
    render(cut_clip, [starry], tmp_path / "out.mp4", cfg, on_event=events.append)
    starts = [e for e in events if isinstance(e, FrameStarted)]
    fresh = [(e.index, e.iters) for e in starts if e.fresh]
    assert fresh == [(0, 3), (6, 3)]
    assert all(e.iters == 1 for e in starts if not e.fresh)


def test_coarse_to_fine_runs_on_fresh_frames_only(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    events = []
    cfg = Config(size=128, iters=1, first_iters=3, coarse_levels=2, device="cpu")
    render(bunny_short, [starry], tmp_path / "out.mp4", cfg, on_event=events.append)
    starts = {e.index: e.iters for e in events if isinstance(e, FrameStarted)}
    # 128x72: one coarse level (64x36); the next halving would be under 64 px and is skipped.
    assert starts[0] == 6 and all(n == 1 for i, n in starts.items() if i > 0)
    done = [e.iteration for e in events if isinstance(e, IterationDone) and e.index == 0]
    assert done == [1, 2, 3, 4, 5, 6]


def test_warm_start_damps_the_carried_stylization_where_flow_is_unreliable(photo: np.ndarray) -> None:
    from vidstyle.io.decode import Frame

    prev_src = np.clip(photo, 0, 195)  # headroom, so the "stylization" below is +60 everywhere
    prev_out = prev_src + 60
    cur = prev_src.copy()
    flow = np.zeros((*photo.shape[:2], 2), np.float32)
    mask = np.ones(photo.shape[:2], np.float32)
    mask[:, :50] = 0.0  # say the left third is disoccluded
    start, temporal = warm_start(Motion(Frame(1, cur), prev_src, False, flow, mask), prev_out,
                                 Config(prev_weight=1.0, temporal_weight=1.0))
    carried = start.astype(int) - cur
    assert np.all(carried[:, :50] == round(60 * UNRELIABLE_KEEP)), "unreliable regions carry less of it"
    assert np.array_equal(start[:, 60:], prev_out[:, 60:]), "reliable regions carry the stylization"
    assert temporal is not None and float(temporal.mask[..., :50].max()) == 0.0


def test_the_temporal_target_follows_the_current_frames_palette(photo: np.ndarray) -> None:
    """Held regions take this frame's recolouring, not the previous frame's: the target is the previous
    stylization (+40 over its base) on the current frame's base, wherever the flow is reliable."""
    from vidstyle.io.decode import Frame

    prev_src = np.clip(photo, 60, 195)
    cur = prev_src + 20  # the light changed; the base (an inversion here, standing in for the palette) follows it

    def base(rgb: np.ndarray) -> np.ndarray:
        return 255 - rgb

    prev_out = base(prev_src) + 40
    still = np.zeros((*photo.shape[:2], 2), np.float32)
    reliable = np.ones(photo.shape[:2], np.float32)
    start, temporal = warm_start(Motion(Frame(1, cur), prev_src, False, still, reliable), prev_out,
                                 Config(temporal_weight=1.0), base=base)
    assert temporal is not None
    target = (temporal.warped[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
    held = round(40 * float(carry_hold(cur).max()))  # a small render: old paint relaxes
    assert np.array_equal(target, base(cur).astype(int) + held)
    assert np.array_equal(start, base(cur) + 40), "the start carries all of it where the flow is reliable"
    assert not np.array_equal(target, prev_out), "not the previous output as it was"


def test_the_temporal_target_lets_old_paint_relax_but_in_detailed_regions_of_mid_sized_renders() -> None:
    """A still scene, flat on the left and detailed on the right, with +100 of paint: the target holds part of it
    everywhere on a small render; at HOLD_FULL px all of it where there is detail and less of it where the source is
    flat; above it detailed regions relax too, and from FLAT_FULL px as much as flat ones."""
    from vidstyle.io.decode import Frame

    def held_paint(long_side: int) -> tuple[float, float]:
        h, w = long_side // 2, long_side
        source = np.full((h, w, 3), 100, np.uint8)
        source[:, w // 2:] = np.random.default_rng(0).integers(60, 140, (h, w - w // 2, 1))
        still = np.zeros((h, w, 2), np.float32)
        reliable = np.ones((h, w), np.float32)
        _, temporal = warm_start(Motion(Frame(1, source), source, False, still, reliable), source + 100,
                                 Config(temporal_weight=1.0))
        assert temporal is not None
        paint = (temporal.warped[0].permute(1, 2, 0).numpy() * 255).round() - source
        return float(paint[:, : w // 2 - 16].mean()), float(paint[:, w // 2 + 16:].mean())

    assert held_paint(64) == pytest.approx((100 * HOLD_SMALL, 100 * HOLD_SMALL), abs=0.5)
    assert held_paint(FLAT_FULL) == pytest.approx((100 * HOLD_FLAT, 100 * HOLD_FLAT), abs=0.5)
    assert held_paint(720) == pytest.approx((100 * HOLD_FLAT, 100 * HOLD_FLAT), abs=0.5)
    at_full, at_384 = held_paint(HOLD_FULL), held_paint(384)
    assert at_full[1] == pytest.approx(100, abs=0.5), "at HOLD_FULL px detailed regions hold all of it"
    assert 100 * HOLD_FLAT + 0.5 < at_384[0] < at_full[0] < 100 - 0.5, "a flat region relaxes, more on larger renders"
    assert 100 * HOLD_FLAT + 0.5 < at_384[1] < 100 - 0.5 and at_384[1] > at_384[0] + 0.5, \
        "above HOLD_FULL px a detailed region relaxes too, less than a flat one"
    at_192 = held_paint(192)
    assert 100 * HOLD_SMALL + 0.5 < at_192[0] < 100 - 0.5 and at_192[0] == pytest.approx(at_192[1], abs=0.5), \
        "part-way up the size ramp, the small render's decay, less of it"


def _frame_at(clip: str, index: int, long_side: int) -> np.ndarray:
    info = probe_video(shared_asset(clip))
    return next(iter(read_frames(info, size_to_fit(info.width, info.height, long_side), index, index + 1))).rgb


def test_the_carried_paint_is_kept_sharp_from_256_px_and_the_detail_map_tells_flat_from_detailed() -> None:
    street, field = _frame_at("bikes_street_no_audio.mp4", 54, 512), _frame_at("field_pan_with_audio.mp4", 60, 512)
    assert float(source_detail(street).mean()) > 0.6, "a street scene is detailed almost everywhere"
    assert float(source_detail(field).mean()) < 0.35, "a field under a wide sky is mostly flat"
    assert float(carry_hold(field).min()) == pytest.approx(HOLD_FLAT, abs=0.005), "a large render's sky relaxes"
    half = _frame_at("field_pan_with_audio.mp4", 60, HOLD_FULL)
    assert float(carry_hold(half).max()) == 1.0 > float(carry_hold(half).min()), \
        "at HOLD_FULL px the detailed ground holds all of its paint and the sky relaxes"
    assert carry_sharpness(SHARP_FROM) == 0.0 and carry_sharpness(SHARP_FULL) == carry_sharpness(512) == 1.0
    assert 0.0 < carry_sharpness((SHARP_FROM + SHARP_FULL) // 2) < 1.0

    # A pan's flow resamples the carried paint once a frame: twelve half-pixel shifts back and forth.
    rng = np.random.default_rng(0)
    paint = rng.normal(0, 40, street.shape).astype(np.float32)
    half = np.zeros((*street.shape[:2], 2), np.float32)
    half[..., 0] = 0.5

    def grain_after_pan(long_side: int) -> float:
        carried = paint
        for step in range(12):
            carried = warp_keeping_detail(carried, half if step % 2 == 0 else -half, carry_sharpness(long_side))
        return float(carried[:, 8:-8].std() / paint[:, 8:-8].std())

    sharp, blurred = grain_after_pan(256), grain_after_pan(SHARP_FROM)
    assert sharp > 0.85 and blurred < 0.6, (sharp, blurred)
    assert np.array_equal(warp_keeping_detail(paint, half, 0.0), warp(paint, half))


def test_metrics_see_a_frozen_render(photo: np.ndarray) -> None:
    clip = shared_asset("field_pan_with_audio.mp4")
    info = probe_video(clip)
    size = size_to_fit(info.width, info.height, 96)
    frames = [f.rgb for f in itertools.islice(read_frames(info, size), 100)][::10]
    honest = measure_frames(frames, frames)
    frozen = measure_frames([frames[0]] * len(frames), frames)
    assert honest.edge_correlation > 0.99
    assert frozen.edge_correlation < honest.edge_correlation - 0.2
    assert edge_correlation(frames[0], frames[0]) == pytest.approx(1.0)


def test_flow_coverage_differs_by_clip_and_flow() -> None:
    """DIS covers more of the street (its fast, smooth car bodies), Farneback more of the pan over a flat sky, each
    at a lower source warping error. Coverage is the share passing the flow's own check, not proof the flow is
    right: on the sky Farneback passes it by finding no motion (the next test)."""
    def source_along(clip: str, start: int, flow: str) -> VideoMetrics:
        info = probe_video(shared_asset(clip))
        frames = [f.rgb for f in read_frames(info, size_to_fit(info.width, info.height, 128), start, start + 8)]
        return measure_frames(frames, frames, flow)

    for clip, start, better, worse in (("bikes_street_no_audio.mp4", 54, "dis", "farneback"),
                                       ("field_pan_with_audio.mp4", 60, "farneback", "dis")):
        follows, misses = source_along(clip, start, better), source_along(clip, start, worse)
        assert follows.flow_coverage > misses.flow_coverage, (clip, follows, misses)
        assert follows.source_warping_error < misses.source_warping_error, (clip, follows, misses)
    still = [np.zeros((8, 8, 3), np.uint8)]
    assert measure_frames(still, still).flow_coverage is None, "one frame: no pair to follow"


def test_on_a_flat_sky_dis_finds_a_known_motion_that_farneback_misses() -> None:
    """The field pan's frame 60 (grey sky, a plane, treetops) moved by a known 1.5, 0.4 px: Farneback's flow is
    about nothing and still passes its own check, so a warping error along it charges paint that moves with the
    picture (docs/performance.md, "Along a known motion")."""
    info = probe_video(shared_asset("field_pan_with_audio.mp4"))
    prev = to_gray(next(read_frames(info, size_to_fit(info.width, info.height, 256), 60, 61)).rgb)
    motion = np.float32([1.5, 0.4])
    shift = np.float32([[1, 0, -motion[0]], [0, 1, -motion[1]]])
    cur = cv2.warpAffine(prev, shift, prev.shape[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    inner = (slice(16, -16), slice(16, -16))  # away from the reflected border
    miss = {}
    for method in ("dis", "farneback"):
        backward, mask = reliable_flow(cur, prev, method, blur_sigma=0)
        assert mask[inner].mean() > 0.9, method
        miss[method] = float(np.median(np.linalg.norm(backward[inner] - motion, axis=-1)))
    assert miss["dis"] < 0.4, miss
    assert miss["farneback"] > 1.2, miss


def test_on_a_sky_farneback_misses_each_flow_favours_the_paint_that_follows_it() -> None:
    """The field pan's frame 60 moved by a known 1.5, 0.4 px a frame under the same strokes, once moving with the
    picture and once kept still on the screen. Farneback sees no motion on the sky, so along it the still strokes
    look steadier; along DIS, which finds the motion, the moving ones do: `vidstyle metrics` gives both."""
    info = probe_video(shared_asset("field_pan_with_audio.mp4"))
    still = next(read_frames(info, size_to_fit(info.width, info.height, 256), 60, 61)).rgb
    strokes = cv2.GaussianBlur(np.random.default_rng(0).normal(0, 40, still.shape).astype(np.float32), (0, 0), 1.5)

    def moved(image: np.ndarray, k: int) -> np.ndarray:
        shift = np.float32([[1, 0, -1.5 * k], [0, 1, -0.4 * k]])
        return cv2.warpAffine(image, shift, image.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)

    sources = [moved(still, k) for k in range(4)]
    moving_frames = [np.clip(0.7 * s + moved(strokes, k), 0, 255).astype(np.uint8) for k, s in enumerate(sources)]
    kept_frames = [np.clip(0.7 * s + strokes, 0, 255).astype(np.uint8) for s in sources]
    moving = measure_frames_along(moving_frames, sources, ("farneback", "dis"))
    kept = measure_frames_along(kept_frames, sources, ("farneback", "dis"))
    assert kept["farneback"].warping_error < 0.5 * moving["farneback"].warping_error
    assert moving["dis"].warping_error < 0.5 * kept["dis"].warping_error
    assert moving["dis"].edge_correlation == moving["farneback"].edge_correlation, "only the warping errors differ"
    alone = measure_frames(moving_frames, sources, "dis")
    assert moving["dis"].as_dict() == pytest.approx(alone.as_dict())


def test_the_long_term_warping_error_sees_strokes_redrawn_every_frame() -> None:
    clip = shared_asset("field_pan_with_audio.mp4")
    info = probe_video(clip)
    frames = [f.rgb for f in itertools.islice(read_frames(info, size_to_fit(info.width, info.height, 96)), 24)]
    kept = measure_frames(frames, frames)
    assert kept.long_term_warping_error == pytest.approx(kept.source_long_term_warping_error)
    assert kept.source_long_term_warping_error > kept.source_warping_error, "eight frames apart drift more"
    rng = np.random.default_rng(0)
    redrawn = [np.clip(f + rng.normal(0, 12, f.shape), 0, 255).astype(np.uint8) for f in frames]
    fixed = rng.normal(0, 12, frames[0].shape)  # strokes that stay put: a painted texture fixed on the screen
    steady = [np.clip(f + fixed, 0, 255).astype(np.uint8) for f in frames]
    noisy, stuck = measure_frames(redrawn, frames), measure_frames(steady, frames)
    assert noisy.long_term_warping_error > 2 * kept.long_term_warping_error
    assert noisy.long_term_warping_error > stuck.long_term_warping_error
    three = measure_frames(frames[:3], frames[:3])
    assert three.long_term_warping_error > 0, "frames 0 and 2: one pair two apart"
    two = measure_frames(frames[:2], frames[:2])
    assert two.long_term_warping_error is None and two.as_dict()["long_term_warping_error"] is None


def test_the_previous_paint_is_not_trusted_where_the_picture_changed(photo: np.ndarray) -> None:
    """A still shot over which a soft red light falls: the flow stays zero both ways, so its forward-backward check
    trusts the old picture there; the colour check (change_tolerance) does not, and elsewhere changes little."""
    import cv2

    from vidstyle.io.decode import Frame

    light = np.zeros(photo.shape[:2], np.float32)
    light[30:60, 50:90] = 1.0
    light = cv2.GaussianBlur(light, (0, 0), 6)[..., None] * 0.2
    after = (photo * (1 - light) + np.array([250, 40, 40], np.float32) * light).round().astype(np.uint8)
    frames = [Frame(0, photo), Frame(1, after)]
    masks = {}
    for tolerance in (0.0, 0.025):
        masks[tolerance] = list(track_motion(frames, Config(flow="dis", change_tolerance=tolerance)))[1].mask
    inside = (slice(35, 55), slice(55, 85))
    assert masks[0.0][inside].mean() > 0.9, "zero motion both ways passes the flow check"
    assert masks[0.025][inside].mean() < 0.2, "the light changed the picture there: the old paint does not belong"
    outside = np.ones(photo.shape[:2], bool)
    outside[20:70, 40:100] = False
    assert masks[0.025][outside].mean() > 0.9 * masks[0.0][outside].mean()


def test_a_still_frames_border_stays_reliable_and_a_pan_past_it_does_not() -> None:
    still = np.full((40, 60, 2), -0.01, np.float32)  # a still shot's flow is rarely exactly zero
    assert occlusion_mask(still, -still, blur_sigma=0).min() == 1.0
    pan = np.zeros((40, 60, 2), np.float32)
    pan[..., 0] = -3.0  # the picture moved 3 px right: its first 3 columns were outside the previous frame
    mask = occlusion_mask(pan, -pan, blur_sigma=0)
    assert mask[:, :3].max() == 0.0 and mask[:, 3:].min() == 1.0
