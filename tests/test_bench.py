"""The benchmark scripts run end to end at toy sizes and print figures that agree with their own parts.

Not a speed test (speed is read from the script's full run, docs/performance.md): this keeps the
benchmark itself from rotting as the code under it changes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT

from vidstyle.assets import demo_clip
from vidstyle.io.probe import probe_video

_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _run_script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _run_bench(*args: str) -> str:
    return _run_script("bench.py", "--size", "64", "--iters", "2", "--repeats", "1", "--floor-pairs", "1",
                       "--e2e-size", "64", "--e2e-iters", "2", "--e2e-pairs", "1", *args)


def test_bench_prints_each_figure_consistently() -> None:
    out = _run_bench("--parts", "13qo", "--q-sizes", "48,64", "--q-iters", "3")

    floors = re.findall(rf"\[1\] (\S+) +per iteration +{_NUMBER} ms, bare network +{_NUMBER} ms, ratio {_NUMBER}", out)
    assert len(floors) == 2 and floors[0][0] == "fp32", out
    for _, ours, bare, ratio in floors:
        # One pair: the printed median ratio is that pair's own.
        assert float(ours) > 0 and float(bare) > 0
        # The times are printed to 0.1 ms and the ratio to 0.001: allow what that rounding alone can move.
        slack = 0.0005 + 0.05 / float(bare) * (1 + float(ours) / float(bare))
        assert abs(float(ratio) - float(ours) / float(bare)) <= slack, out

    (whole, alone, ratio), = re.findall(
        rf"\[3\] 64 px, 2 iterations a frame, flow on: end to end {_NUMBER} frames/s, stylizer alone "
        rf"{_NUMBER} frames/s, ratio {_NUMBER}", out)
    assert float(whole) > 0 and float(alone) > 0
    # The frame rates are printed to two decimals: relative to the ratio, their rounding stays under 1 %.
    assert float(ratio) == pytest.approx(float(whole) / float(alone), rel=0.01), out

    cases = re.findall(rf"\[q\] (\d+)x(\d+), final loss after 3 iterations: fp32 {_NUMBER}, bf16 {_NUMBER} "
                       rf"\(([+-][0-9.]+) %\); ms an iteration fp32 {_NUMBER}, bf16 {_NUMBER}", out)
    assert [(w, h) for w, h, *_ in cases] == [("48", "48"), ("64", "64")], out
    for _, _, fp32, bf16, change, fp32_ms, bf16_ms in cases:
        # The losses are printed to four decimals and the change to two: allow what that rounding alone can move.
        slack = 0.005 + 100 * 0.00005 / float(fp32) * (1 + float(bf16) / float(fp32))
        assert abs(float(change) - (float(bf16) / float(fp32) - 1) * 100) <= slack, out
        assert float(fp32_ms) > 0 and float(bf16_ms) > 0

    ops = re.findall(rf"\[o\] (\S+) +operators an iteration {_NUMBER} \({_NUMBER} kernels\), bare network "
                     rf"{_NUMBER} \({_NUMBER} kernels\), ratio {_NUMBER} in kernels", out)
    assert ops and ops[0][0] == "fp32", out
    for _, per_iteration, kernels, bare, bare_kernels, ratio in ops:
        # An iteration runs the network forward and back, and the loss terms and L-BFGS besides.
        assert float(per_iteration) > float(bare) >= float(bare_kernels) > 0 and float(kernels) > float(bare_kernels)
        assert float(ratio) == pytest.approx(float(kernels) / float(bare_kernels), abs=0.006), out

    (host,) = re.findall(rf"\[5\] peak memory: host {_NUMBER} MiB", out)
    assert float(host) > 100  # torch alone takes more: a smaller figure would be in the wrong unit


# The fidelity benchmarks import each other's frame loop; at toy sizes they run in seconds, so a change of a shared
# signature shows here rather than in a long measurement that fails at its first mode.
_TINY = '{"iters": 2, "first_iters": 2, "coarse_levels": 0, "precision": "fp32", "device": "cpu"}'


def test_known_motion_bench_measures_each_mode_along_the_true_motion() -> None:
    out = _run_script("bench_known_motion.py", str(demo_clip()), "--at", "3", "--size", "64", "--frames", "3",
                      "--motion", "1.0,0.5", "--mode", f"tiny={_TINY}")
    (farneback, dis), = re.findall(rf"flow end-point error: Farneback {_NUMBER} px, DIS {_NUMBER} px", out)
    # Each flow finds the pan within a fraction of its 1.1 px (a flow that found nothing would be off by all of it).
    assert float(farneback) < 0.5 and float(dis) < 0.5
    (true, along_farneback, along_dis, edges, style, seconds), = re.findall(
        rf"^tiny +{_NUMBER} +{_NUMBER} +{_NUMBER} +(-?[0-9.]+) +(-?[0-9.]+) +{_NUMBER}$", out, re.MULTILINE)
    # A render that moves is never exactly steady along any flow, and its edges correlate with the source's.
    assert float(true) > 0 and float(along_farneback) > 0 and float(along_dis) > 0 and float(seconds) > 0
    assert -1 <= float(edges) <= 1 and float(style) < 1


def test_known_motion_bench_moves_a_box_over_a_still_ground_and_knows_its_motion() -> None:
    """Only the box moves: the source's own frames are exact along the truth (moved box, still ground, the strip it
    uncovers left out), and the renders are measured along it as along a pan."""
    out = _run_script("bench_known_motion.py", str(demo_clip()), "--at", "3", "--size", "64", "--frames", "3",
                      "--box", "0.2,0.3,0.7,0.9", "--motion", "2,1", "--mode", f"tiny={_TINY}")
    assert "box 0.2,0.3,0.7,0.9 moved 2.0,1.0 px a frame" in out
    (true, along_farneback, along_dis), = re.findall(rf"^source +{_NUMBER} +{_NUMBER} +{_NUMBER}$", out, re.MULTILINE)
    # Moved by whole pixels, the source is exact along the truth; the ground stands still where the box's edge
    # moves, which no flow estimated at 64 px follows exactly.
    assert float(true) == 0 and float(along_farneback) > 0.0005 and float(along_dis) > 0.0005
    (true, *_), = re.findall(rf"^tiny +{_NUMBER} +{_NUMBER} +{_NUMBER} ", out, re.MULTILINE)
    assert float(true) > 0


def test_fidelity_bench_prints_ratios_that_agree_with_its_rows(tmp_path: Path) -> None:
    independent = _TINY[:-1] + ', "init": "content", "flow": "none"}'
    out = _run_script("bench_fidelity.py", str(demo_clip()), "--size", "64", "--frames", "3", "--start", "2",
                      "--mode", f"independent={independent}", "--mode", f"tiny={_TINY[:-1]}, \"flow\": \"dis\"}}",
                      "--save-outputs", str(tmp_path))
    rows = {name: [float(v) for v in values.split()] for name, values in
            re.findall(r"^(independent|tiny) +((?:-?[0-9.]+ +){6}[0-9.]+)$", out, re.MULTILINE)}
    (ratio_line,) = re.findall(r"^tiny +((?:-?[0-9.]+ +){5}-?[0-9.]+)$", out.split("ratios to independent")[1],
                               re.MULTILINE)
    ratio = [float(v) for v in ratio_line.split()]
    tiny, reference = rows["tiny"], rows["independent"]
    # Warping errors (two flows), long-term ones, then edges and style: each printed ratio is its rows' quotient
    # (the ratios to two decimals, the edges and style ratios to three).
    for got, a, b, places in zip(ratio, tiny[:6], reference[:6], (2, 2, 2, 2, 3, 3), strict=True):
        assert got == pytest.approx(a / b, abs=10 ** -places + 0.01 * abs(a / b)), out
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["0000002.png", "0000003.png", "0000004.png"]


def test_fidelity_bench_paints_an_independent_frame_after_warmup_as_a_later_frame(tmp_path: Path) -> None:
    """After --warmup, START is a later frame of the shot in every mode, the independent one too (a fresh frame, with
    its own iterations, would be the least faithful and the most painted of the window)."""
    independent = _TINY[:-1].replace('"first_iters": 2', '"first_iters": 6') + ', "init": "content", "flow": "none"}'
    for name, window in (("whole", ("--start", "1", "--frames", "4")),
                         ("warm", ("--start", "3", "--warmup", "2", "--frames", "2"))):
        _run_script("bench_fidelity.py", str(demo_clip()), "--size", "64", *window, "--mode",
                    f"independent={independent}", "--save-outputs", str(tmp_path / name))
    for frame in ("0000003.png", "0000004.png"):
        whole, warm = (cv2.imread(str(tmp_path / name / "independent" / frame)) for name in ("whole", "warm"))
        assert whole is not None and warm is not None and np.array_equal(whole, warm), frame


def _moving_texture(folder: Path, frames: int, step: int) -> None:
    """A blurred noise texture panned `step` px a frame: both flows can follow it."""
    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (48, 96, 3), dtype=np.uint8), (0, 0), 1.5)
    folder.mkdir()
    for index in range(frames):
        cv2.imwrite(str(folder / f"{index:07d}.png"), np.ascontiguousarray(texture[:, index * step:][:, :64]))


def test_flow_disagreement_splits_the_warping_error_by_where_the_flows_agree(tmp_path: Path) -> None:
    _moving_texture(tmp_path / "sources", 4, 1)
    _moving_texture(tmp_path / "frozen", 4, 0)  # a render whose picture stands still while the video pans
    out = _run_script("flow_disagreement.py", str(tmp_path / "sources"), str(tmp_path / "frozen"))
    lines = re.findall(rf"^(.+): pooled error along farneback {_NUMBER}; flows differ by more than 0.5 px on "
                       rf"{_NUMBER}% of the counted pixels, holding {_NUMBER}% of the error; error there {_NUMBER}, "
                       rf"elsewhere {_NUMBER}$", out, re.MULTILINE)
    figures = {name: [float(v) for v in values] for name, *values in lines}
    assert list(figures) == ["source (floor)", str(tmp_path / "frozen")], out
    for pooled, share_pixels, share_error, there, agree in figures.values():
        # The pooled error is the pixel-weighted mean of the two sides (printed to five decimals, shares to 0.1 %).
        mixed = share_pixels / 100 * there + (1 - share_pixels / 100) * agree
        assert pooled == pytest.approx(mixed, abs=2e-5 + 0.002 * max(there, agree)), out
        if pooled > 1e-3:
            assert share_error == pytest.approx(100 * share_pixels / 100 * there / pooled, abs=0.2), out
    source, frozen = figures["source (floor)"], figures[str(tmp_path / "frozen")]
    # On texture the flows agree on most pixels, and the video warped along its own motion is far steadier
    # than a picture that does not move with it.
    assert source[1] < 50 and frozen[0] > 10 * source[0], out


def test_flow_disagreement_splits_by_where_the_source_itself_changes_colour(tmp_path: Path) -> None:
    """A patch that appears in the last frame of a pan changes the source's colours along the flow: there the
    source's own warping error lies, and a render that follows the picture (here its negative) has it there too,
    while one that stands still errs everywhere. The pair across the cut after it is not counted."""
    sources, follows, frozen = tmp_path / "sources", tmp_path / "follows", tmp_path / "frozen"
    _moving_texture(sources, 4, 3)
    frame = cv2.imread(str(sources / f"{3:07d}.png"))
    frame[10:22, 20:32] = (255, 255, 255)
    cv2.imwrite(str(sources / f"{3:07d}.png"), frame)
    cut = np.random.default_rng(1).integers(0, 40, frame.shape, dtype=np.uint8) + np.array([0, 30, 200], np.uint8)
    cv2.imwrite(str(sources / f"{4:07d}.png"), cut)  # another shot: every colour changes
    follows.mkdir()
    frozen.mkdir()
    paths = sorted(sources.glob("*.png"))
    for path in paths:
        cv2.imwrite(str(follows / path.name), 255 - cv2.imread(str(path)))
        cv2.imwrite(str(frozen / path.name), cv2.imread(str(paths[0])))
    out = _run_script("flow_disagreement.py", str(sources), str(follows), str(frozen), "--along", "dis",
                      "--colour-change", "0.08")
    lines = re.findall(rf"^(.+): pooled error along dis {_NUMBER}; colours change by more than 0.08 on "
                       rf"{_NUMBER}% of the counted pixels, holding {_NUMBER}% of the error; error there {_NUMBER}, "
                       rf"elsewhere {_NUMBER}$", out, re.MULTILINE)
    figures = {name: [float(v) for v in values] for name, *values in lines}
    assert list(figures) == ["source (floor)", str(follows), str(frozen)], out
    for _pooled, share_pixels, *_ in figures.values():
        # The patch: 144 of about 2900 counted pixels in one of the shot's three pairs. Along no flow, or the
        # wrong one, the pan's own texture changes colour too; counted, the cut would add a whole frame.
        assert 1 < share_pixels < 2.5, out
    for name in ("source (floor)", str(follows)):
        _pooled, _share_pixels, share_error, there, elsewhere = figures[name]
        assert share_error > 80 and there > 0.1 and elsewhere < 0.01 * there, out
    assert figures[str(frozen)][4] > 0.01 and figures[str(frozen)][2] < 50, out


def test_decode_range_bench_compares_a_late_range_with_the_full_decode() -> None:
    out = _run_script("bench_decode_range.py", str(demo_clip()), "--start", "100", "--frames", "10", "--size", "64")
    (full, late, _how), = re.findall(r"full decode (\d+) frames \d+ ms; range \[100, 110\) (\d+) frames \d+ ms "
                                    r"\((seeked from keyframe \d+|decoded from frame 0)\); ratio [0-9.]+$", out,
                                    re.MULTILINE)
    assert int(full) == probe_video(demo_clip()).frame_count and int(late) == 10


def test_decode_range_bench_reads_shots_alone_and_from_one_reader(tmp_path: Path) -> None:
    from conftest import ffmpeg

    clip = tmp_path / "mpeg4.mp4"  # MPEG-4 Part 2: no exact seek
    ffmpeg("-i", str(demo_clip()), "-t", "2", "-vf", "scale=64:36", "-c:v", "mpeg4", "-q:v", "4", "-an", str(clip))
    out = _run_script("bench_decode_range.py", str(clip), "--start", "10", "--frames", "5", "--size", "64",
                      "--shots", "4")
    count = probe_video(clip).frame_count
    (alone, together), = re.findall(r"\(not seekable\), 4 shots in turn: each decoded alone (\d+) frames \d+ ms; "
                                    r"from one FrameRanges (\d+) frames \d+ ms; ratio [0-9.]+$", out, re.MULTILINE)
    assert int(alone) == int(together) == count
    # No shots at all is refused, not a run that prints no shot.
    refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_decode_range.py"), str(clip), "--shots",
                              "0"], capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "--shots 0: a clip is read as one shot or more" in refused.stderr
