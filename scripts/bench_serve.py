"""vidstyle serve, measured: overhead against the CLI, and latency under load.

overhead: the same render (a lavfi clip, tiny settings) through `vidstyle render` (subprocess wall time) and as a
job of a running server (POST to done, polled every 0.1 s), alternated; prints each ratio service / CLI.
load: one long render running, `--queued` more jobs waiting, `--clients` threads each polling GET job and GET
preview every `--interval` s for `--seconds`; prints p50/p99 of both, then waits for every job to end and checks
that each is done, or failed with a reason.

    python scripts/bench_serve.py overhead [--frames 24 --size 96 --iters 4 --runs 2]
    python scripts/bench_serve.py load [--clients 50 --queued 20 --seconds 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_serve import ServeProcess  # noqa: E402 - the tests' server harness: a real `vidstyle serve` process

from vidstyle.io.ffmpeg import ffmpeg_exe  # noqa: E402


def make_clip(path: Path, frames: int, fps: int = 24) -> Path:
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=160x90:rate={fps}:duration={frames / fps}", "-c:v", "libx264", "-pix_fmt",
                    "yuv420p", str(path)], check=True)
    return path


def options(args: argparse.Namespace) -> dict[str, str]:
    return {"preset": "fast", "size": str(args.size), "iters": str(args.iters), "first_iters": str(args.iters * 4),
            "flow": "none"}


def cli_render(clip: Path, out: Path, opts: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vidstyle", "render", str(clip), "--style", "starry-night", "-o", str(out),
                    "--config", opts["preset"], "--size", opts["size"], "--iters", opts["iters"], "--first-iters",
                    opts["first_iters"], "--flow", opts["flow"], "--device", "cpu", "--overwrite", "--quiet"],
                   check=True)
    return time.perf_counter() - started


POLL = 0.1  # seconds between the overhead run's polls: often enough to see the end, rarely enough to cost nothing


def service_render(server: ServeProcess, clip: Path, opts: dict[str, str]) -> float:
    started = time.perf_counter()
    job = server.submit(clip, **opts).json()
    while server.job(job["id"])["state"] not in ("done", "failed", "cancelled"):
        time.sleep(POLL)
    elapsed = time.perf_counter() - started
    if server.job(job["id"])["state"] != "done":
        raise RuntimeError(f"job ended {server.job(job['id'])}")
    return elapsed


def overhead(args: argparse.Namespace, work: Path) -> None:
    clip = make_clip(work / "clip.mp4", args.frames)
    server = ServeProcess(work / "data").start()
    try:
        for run in range(args.runs):
            cli = cli_render(clip, work / "cli.mp4", options(args))
            service = service_render(server, clip, options(args))
            print(f"run {run + 1}: CLI {cli:.2f} s, service {service:.2f} s, ratio {service / cli:.3f}")
    finally:
        server.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def poll(url: str, job_id: str, stop: threading.Event, interval: float, found: dict[str, list[float]]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            for name, path in (("job", f"/api/jobs/{job_id}"), ("preview", f"/api/jobs/{job_id}/preview")):
                started = time.perf_counter()
                response = client.get(path)
                if response.status_code == 200:
                    found[name].append((time.perf_counter() - started) * 1000)
            stop.wait(interval)


def load(args: argparse.Namespace, work: Path) -> None:
    long_clip, short_clip = make_clip(work / "long.mp4", args.frames), make_clip(work / "short.mp4", 3)
    server = ServeProcess(work / "data").start()
    try:
        running = server.submit(long_clip, **options(args)).json()["id"]
        queued = [server.submit(short_clip, **{**options(args), "size": "64", "iters": "1", "first_iters": "2"})
                  .json()["id"] for _ in range(args.queued)]
        server.wait(running, lambda j: j["urls"]["preview"] is not None)
        found: dict[str, list[float]] = {"job": [], "preview": []}
        stop = threading.Event()
        clients = [threading.Thread(target=poll, args=(server.url, running, stop, args.interval, found))
                   for _ in range(args.clients)]
        for client in clients:
            client.start()
        time.sleep(args.seconds)
        still_running = server.job(running)["state"] == "running"
        stop.set()
        for client in clients:
            client.join()
        for name, values in found.items():
            print(f"GET {name}: {len(values)} requests, p50 {percentile(values, 0.5):.1f} ms, "
                  f"p99 {percentile(values, 0.99):.1f} ms, mean {statistics.fmean(values):.1f} ms")
        print(f"render still running at the end of the polling: {still_running}")
        ends = [server.wait_final(job_id, timeout=3600) for job_id in [running, *queued]]
        states = {state: sum(j["state"] == state for j in ends) for state in ("done", "failed", "cancelled")}
        unexplained = [j["id"] for j in ends if j["state"] == "failed" and not j["error"]]
        print(f"jobs: {len(ends)} submitted, {states}; failed without a reason: {len(unexplained)}")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("overhead", "load"))
    parser.add_argument("--frames", type=int, default=24, help="frames of the measured render [24]")
    parser.add_argument("--size", type=int, default=96, help="[96]")
    parser.add_argument("--iters", type=int, default=4, help="iterations a frame; 4x for the first [4]")
    parser.add_argument("--runs", type=int, default=2, help="overhead: alternated pairs [2]")
    parser.add_argument("--clients", type=int, default=50, help="load: polling clients [50]")
    parser.add_argument("--queued", type=int, default=20, help="load: jobs waiting behind the render [20]")
    parser.add_argument("--seconds", type=float, default=30, help="load: polling time [30]")
    parser.add_argument("--interval", type=float, default=0.5, help="load: each client's pause between polls [0.5]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        (overhead if args.what == "overhead" else load)(args, Path(work))


if __name__ == "__main__":
    main()
