"""scripts/bench.py runs end to end at toy sizes and prints figures that agree with their own parts.

Not a speed test (speed is read from the script's full run, docs/performance.md): this keeps the
benchmark itself from rotting as the code under it changes.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT

_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _run_bench(*args: str) -> str:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--size", "64", "--iters", "2", "--repeats", "1",
           "--floor-pairs", "1", "--e2e-size", "64", "--e2e-iters", "2", "--e2e-pairs", "1", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_prints_each_figure_consistently() -> None:
    out = _run_bench("--parts", "13qo")

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

    (fp32, bf16, change), = re.findall(rf"\[q\] final loss after 30 iterations: fp32 {_NUMBER}, bf16 {_NUMBER} "
                                       r"\(([+-][0-9.]+) %\)", out)
    # The losses are printed to four decimals and the change to two: allow what that rounding alone can move.
    slack = 0.005 + 100 * 0.00005 / float(fp32) * (1 + float(bf16) / float(fp32))
    assert abs(float(change) - (float(bf16) / float(fp32) - 1) * 100) <= slack, out

    ops = re.findall(rf"\[o\] (\S+) +operators an iteration {_NUMBER} \({_NUMBER} kernels\), bare network "
                     rf"{_NUMBER} \({_NUMBER} kernels\), ratio {_NUMBER} in kernels", out)
    assert ops and ops[0][0] == "fp32", out
    for _, per_iteration, kernels, bare, bare_kernels, ratio in ops:
        # An iteration runs the network forward and back, and the loss terms and L-BFGS besides.
        assert float(per_iteration) > float(bare) >= float(bare_kernels) > 0 and float(kernels) > float(bare_kernels)
        assert float(ratio) == pytest.approx(float(kernels) / float(bare_kernels), abs=0.006), out

    (host,) = re.findall(rf"\[5\] peak memory: host {_NUMBER} MiB", out)
    assert float(host) > 100  # torch alone takes more: a smaller figure would be in the wrong unit
