"""A render on Ray workers: every frame exactly once, a killed worker's chunk retried with the same frames, a killed
render resumed, Ctrl-C leaving no process behind. Real Ray (one local instance for the module: it takes seconds to
start), real ffmpeg, real files."""

from __future__ import annotations

import http.server
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import FADING_CLIP, child_ffmpeg_pids

import vidstyle
from vidstyle.checkpoint import WorkDir
from vidstyle.cli import build_parser, main
from vidstyle.errors import CheckpointMismatch, Interrupted, SettingError
from vidstyle.events import FrameSaved, RenderFinished, RenderStarted, WorkersBusy
from vidstyle.fades import mean_luma
from vidstyle.io.decode import read_frames
from vidstyle.io.paths import partial_path
from vidstyle.io.probe import probe_video
from vidstyle.plan import plan_segments

ray = pytest.importorskip("ray", reason="the distributed render needs vidstyle[ray] (the test extra installs it)")

from vidstyle.distributed import (  # noqa: E402 - after the skip: the module is Ray's front door
    _POLL,
    _POLL_MAX,
    _POLL_SHARE,
    DEFAULT_CHUNK_FRAMES,
    DEFAULT_OVERLAP,
    Chunk,
    ChunkFiles,
    ChunkJob,
    RayMissing,
    Task,
    WorkerFailed,
    blend_frames,
    blend_weight,
    cancel_running,
    check_reachable,
    finished_seams,
    plan_chunks,
    plan_tasks,
    poll_interval,
    run_task,
    tasks_to_run,
    threads_per_task,
    unread_frames,
    wait_for_tasks,
)

# 12 frames in chunks of 4 with 2 frames of overlap: 3 chunks, 2 seams.
CHUNKING = {"chunk_frames": 4, "overlap": 2}
CLI_SETTINGS = ["--size", "64", "--iters", "2", "--first-iters", "4", "--device", "cpu", "--flow", "dis",
                "--temporal-weight", "10", "--precision", "fp32", "--keep-frames"]


def _config(**changes: object) -> vidstyle.Config:
    settings: dict[str, object] = dict(size=64, iters=2, first_iters=4, device="cpu", flow="dis",
                                       temporal_weight=10.0, precision="fp32", keep_frames=True)
    settings.update(changes)
    return vidstyle.make_config("balanced", **settings)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module; a render in a process connected to Ray uses it and leaves it up."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False, object_store_memory=128 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(local_ray, bunny_short: Path, starry: Path, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted render on 2 workers, its work directory (frames kept) and its events."""
    folder = tmp_path_factory.mktemp("reference")
    events: list[object] = []
    out = vidstyle.render(bunny_short, [starry], folder / "out.mp4", _config(), workdir=folder / "work",
                          on_event=events.append, workers=2, **CHUNKING)
    return folder / "work", out, events


def _frames(work: Path) -> dict[int, np.ndarray]:
    return {int(p.stem): cv2.imread(str(p)) for p in sorted((work / "frames").glob("*.png"))}


def _assert_same_frames(work: Path, reference: Path) -> None:
    got, want = _frames(work), _frames(reference)
    assert sorted(got) == sorted(want) == list(range(12))
    for i in range(12):
        assert np.array_equal(got[i], want[i]), f"frame {i} differs from the uninterrupted render's"


# The plan and the blend -------------------------------------------------------------------------------------------

def test_chunks_cover_every_frame_once_and_overlap_only_inside_shots() -> None:
    segments = plan_segments(30, [13], chunk_frames=5)
    chunks = plan_chunks(segments, 2)
    assert [(c.first, c.start, c.stop, c.tail) for c in chunks] == [
        (0, 0, 5, 2), (3, 5, 10, 2), (8, 10, 13, 0),  # shot 0-12: the last chunk ends at the cut
        (13, 13, 18, 2), (16, 18, 23, 2), (21, 23, 28, 2), (26, 28, 30, 0)]
    finals = [i for c in chunks for i in range(c.start, c.stop) if c.role(i) == "final"]
    leads = [i for c in chunks for i in range(c.first, c.start)]
    tails = [i for c in chunks for i in range(c.start, c.stop) if c.role(i) == "tail"]
    assert sorted(finals + leads) == list(range(30)), "every frame is final in one chunk or blended once"
    assert leads == tails, "each lead-in frame is blended with the earlier chunk's painting of it"
    assert not set(leads) & {0, 13}, "a shot's first frame starts fresh, never blended"
    assert [c.start for c in plan_chunks(plan_segments(30, [13], chunk_frames=None), 2)] == [0, 13]
    assert [blend_weight(k, 3) for k in range(3)] == [0.25, 0.5, 0.75]
    tasks = plan_tasks(segments, 2, passes=2)
    assert [(t.number, t.chunk.first, t.shot) for t in tasks[:4]] == [(1, 0, (0, 13)), (2, 0, (0, 13)),
                                                                      (1, 3, (0, 13)), (2, 3, (0, 13))]
    assert [(t.frames, t.needs) for t in tasks[2:4]] == [(range(3, 10), range(4, 11)), (range(5, 10), range(4, 11))]
    assert [t.needs for t in tasks if t.number == 2 and t.chunk.start in (10, 13, 28)] == [
        range(9, 13), range(13, 19), range(27, 30)], "a later pass reads no frame of another shot"


def test_only_the_tasks_whose_frames_are_still_read_run() -> None:
    tasks = plan_tasks(_segments(), CHUNKING["overlap"], passes=2)  # chunks [0,4), [4,8), [8,12)
    every = set(range(12))

    def run(first: set[int], final: set[int], leads: set[int] = frozenset({2, 3, 6, 7})) -> list[tuple[int, int]]:
        return [(t.number, t.chunk.start) for t in tasks_to_run(tasks, {1: first, 2: final}, leads)]

    assert run(set(), every) == [], "a finished render whose first pass is gone runs nothing"
    assert run(every, every - {5}) == [(2, 4)]
    assert run(every - {3}, every - {5}) == [(1, 0), (2, 4)], "pass 2 over 4-7 reads frame 3 of pass 1"
    assert run(every - {3}, every - {5}, leads=set()) == [(1, 0), (1, 4), (2, 4)], \
        "frame 3 is a seam's blend, and the later chunk's painting of it is gone too"
    assert run(every - {1}, every - {5}) == [(2, 4)], "no task left reads frame 1"
    assert run(set(), set()) == [(1, 0), (2, 0), (1, 4), (2, 4), (1, 8), (2, 8)]


def test_a_deleted_blended_seam_frame_is_painted_again_by_both_chains() -> None:
    tasks = plan_tasks(_segments(), CHUNKING["overlap"], passes=1)  # chunks [0,4), [2,8) (lead-in 2-3), [6,12)

    def run(final: set[int], leads: set[int] = frozenset()) -> list[int]:
        return [t.chunk.start for t in tasks_to_run(tasks, {1: final}, leads)]

    every = set(range(12))
    assert run(every - {3}) == [0, 4], "its two paintings are gone: the chain before and the one it leads into"
    assert run(every - {3}, leads={2, 3}) == [0], "the later chain's painting of it is still on disk"
    assert run(every - {5}) == [4]
    assert run(every) == []


def test_what_no_task_will_read_again_is_named_as_the_tasks_finish() -> None:
    tasks = plan_tasks(_segments(), CHUNKING["overlap"], passes=3)  # chunks [0,4), [2,8), [6,12)
    task = {(t.number, t.chunk.start): t for t in tasks}

    def unread(*done: tuple[int, int]) -> dict[int, set[int]]:
        return unread_frames(tasks, {task[d] for d in done})

    assert unread() == {1: set(), 2: set()}
    # Pass 2 over 0-3 read pass 1's 0-4; pass 2 over 4-7, still to finish, reads 3-8.
    assert unread((1, 0), (1, 4), (2, 0)) == {1: {0, 1, 2}, 2: set()}
    assert unread((1, 0), (1, 4), (2, 0), (2, 4), (3, 0)) == {1: set(range(7)), 2: {0, 1, 2}}
    assert unread(*task) == {1: set(range(12)), 2: set(range(12))}
    seams = [(c.first, c.start) for c in finished_seams(tasks, {task[1, 0], task[1, 4], task[1, 8]})]
    assert seams == [(2, 4), (6, 8)], "each lead-in, once both chains that painted it are done"
    assert finished_seams(tasks, {task[1, 4], task[1, 8], task[2, 0]}) == [tasks[6].chunk]
    assert finished_seams(tasks, {task[1, 0], task[2, 0]}) == []


def test_the_driver_looks_at_the_work_directory_less_often_the_longer_a_look_takes() -> None:
    """A look lists the frame folders: on a long video or a network file system it takes long enough that looking
    every _POLL seconds would keep the driver listing back to back."""
    assert poll_interval(0.0) == _POLL, "a quick look: as often as before"
    assert poll_interval(0.05) == pytest.approx(0.05 * _POLL_SHARE) and 0.05 * _POLL_SHARE > _POLL
    assert poll_interval(30.0) == _POLL_MAX, "never so long that a seam or the encoder waits for minutes"


def test_blend_goes_from_the_earlier_painting_to_the_later_and_keeps_the_contrast() -> None:
    rng = np.random.default_rng(0)
    content = cv2.resize(rng.uniform(0, 255, (8, 8, 3)).astype(np.float32), (64, 64))
    earlier, later = (np.clip(content + rng.normal(0, 30, content.shape), 0, 255).astype(np.uint8) for _ in "ab")
    assert np.array_equal(blend_frames(earlier, later, 0.0), earlier)
    assert np.array_equal(blend_frames(earlier, later, 1.0), later)
    middle = blend_frames(earlier, later, 0.5).astype(np.float32)

    def detail(image: np.ndarray) -> float:
        image = image.astype(np.float32)
        return float((image - cv2.GaussianBlur(image, (0, 0), 2.0)).std())

    plain = (earlier.astype(np.float32) + later) / 2
    assert detail(plain) < 0.8 * detail(earlier), "two unrelated textures averaged lose contrast"
    assert detail(middle) == pytest.approx((detail(earlier) + detail(later)) / 2, rel=0.05)
    assert np.abs(cv2.GaussianBlur(middle, (0, 0), 3) - cv2.GaussianBlur(plain, (0, 0), 3)).mean() < 2, \
        "the content (the blurred picture) is the plain average's"


# Settings ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, setting", [
    ({"workers": 0}, "workers"), ({"workers": 2, "chunk_frames": 0}, "chunk_frames"),
    ({"workers": 2, "chunk_frames": 4, "overlap": 4}, "overlap"), ({"workers": 2, "overlap": -1}, "overlap"),
    ({"chunk_frames": 8}, "chunk_frames"), ({"ray_address": " "}, "ray_address")])
def test_impossible_distributed_settings_are_refused_before_anything(bunny_short: Path, starry: Path,
                                                                     tmp_path: Path, kwargs: dict[str, object],
                                                                     setting: str) -> None:
    with pytest.raises(SettingError) as bad:
        vidstyle.render(bunny_short, [starry], tmp_path / "out.mp4", _config(), **kwargs)  # type: ignore[arg-type]
    assert bad.value.setting == setting and "--" not in str(bad.value)
    assert list(tmp_path.iterdir()) == []


def test_without_ray_the_message_says_what_to_install(monkeypatch, capsys, bunny_short: Path, starry: Path,
                                                      tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` finds where Ray is not installed
    with pytest.raises(RayMissing):
        vidstyle.render(bunny_short, [starry], tmp_path / "out.mp4", _config(), workers=2)
    code = main(["render", str(bunny_short), "--style", str(starry), "-o", str(tmp_path / "out.mp4"), "--workers",
                 "2", *CLI_SETTINGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "install vidstyle[ray]" in err[0], err  # an installation's failure
    assert list(tmp_path.iterdir()) == []


def test_a_cluster_out_of_reach_leaves_nothing_that_blocks_the_render_on_this_machine(bunny_short: Path,
                                                                                      starry: Path,
                                                                                      tmp_path: Path) -> None:
    from ray._private.services import find_gcs_addresses

    if find_gcs_addresses():
        pytest.skip("a Ray instance runs on this machine, so 'auto' would reach it")
    out = tmp_path / "out.mp4"
    with pytest.raises(WorkerFailed, match="no running Ray cluster found from this machine: start one"):
        vidstyle.render(bunny_short, [starry], out, _config(), ray_address="auto")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ADDRESS", "auto")  # as Ray reads it: the cluster this machine runs, no address
        with pytest.raises(WorkerFailed, match="no running Ray cluster found from this machine: start one"):
            vidstyle.render(bunny_short, [starry], out, _config(), ray_address="auto")
    assert list(tmp_path.iterdir()) == []  # no work directory, whose manifest would name the chunking
    with socket.socket() as closed:  # a port nothing listens on: refused at once, not retried for minutes by Ray
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused"):
        vidstyle.render(bunny_short, [starry], out, _config(), ray_address=f"127.0.0.1:{port}")
    assert time.monotonic() - started < 10 and list(tmp_path.iterdir()) == []
    with socket.socket() as listening:  # takes the connection, says nothing
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        silent = f"ray://127.0.0.1:{listening.getsockname()[1]}"
        with pytest.raises(WorkerFailed, match=f"^cannot reach the Ray cluster at {silent}: no answer$"):
            check_reachable(silent, timeout=0.5)
    # A web server (the dashboard's port given for the head's): Ray would retry it for minutes, deaf to Ctrl-C.
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{web.server_address[1]}"
    try:
        started = time.monotonic()
        with pytest.raises(WorkerFailed, match=f"^{address} answers, but not as a Ray cluster's head \\(it is a web "
                                               "server: the dashboard's port\\?\\); a head takes renders at"):
            vidstyle.render(bunny_short, [starry], out, _config(), ray_address=address)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RAY_ADDRESS", address)  # "auto" joins the cluster it names
            with pytest.raises(WorkerFailed, match=f"^{address} \\(RAY_ADDRESS\\) answers, but not as a Ray"):
                vidstyle.render(bunny_short, [starry], out, _config(), ray_address="auto")
        assert time.monotonic() - started < 10 and list(tmp_path.iterdir()) == []
    finally:
        web.shutdown()
        web.server_close()
    vidstyle.render(bunny_short, [starry], out, _config())
    assert probe_video(out).frame_count == 12


def test_a_ray_head_passes_the_check_of_its_address(local_ray) -> None:
    """The check of an address's protocol lets a real head through (its GCS answers HTTP/2's hello at once)."""
    gcs = local_ray.get_runtime_context().gcs_address
    check_reachable(gcs, timeout=5.0)


def test_cli_help_shows_the_library_defaults() -> None:
    render = build_parser()._subparsers._group_actions[0].choices["render"]  # type: ignore[union-attr]
    helps = {a.dest: a.help for a in render._actions}
    assert helps["chunk_frames"].endswith(f"[{DEFAULT_CHUNK_FRAMES}]")
    assert helps["overlap"].endswith(f"[{DEFAULT_OVERLAP}]")


# Renders on the module's Ray ----------------------------------------------------------------------------------------

def test_a_long_wait_for_tasks_still_ends_when_one_finishes_or_the_render_is_stopped(local_ray) -> None:
    def nap(seconds: float) -> float:  # defined here, so that Ray ships it to its workers by value
        time.sleep(seconds)
        return seconds

    sleeper = ray.remote(nap)
    quick = sleeper.remote(0.5)
    started = time.monotonic()
    assert wait_for_tasks(ray, [quick], 60.0, None) == [quick] and ray.get(quick) == 0.5
    assert time.monotonic() - started < 30, "returned when the task finished, not at the end of the wait"

    slow = sleeper.remote(60.0)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    try:
        assert wait_for_tasks(ray, [slow], 60.0, stop) == []
        # Within a few slices of the stop (not at the end of the 60 s wait), however busy the two cores are.
        assert 0.9 < time.monotonic() - started < 1.0 + 20 * _POLL, "ended within a slice of the stop"
    finally:
        ray.cancel(slow, force=True)


def test_every_frame_is_made_and_encoded_exactly_once(reference) -> None:
    work, out, events = reference
    assert probe_video(out).frame_count == 12
    assert sorted(_frames(work)) == list(range(12))
    saved = [e.index for e in events if isinstance(e, FrameSaved)]
    assert sorted(saved) == list(range(12)), "one FrameSaved per frame"
    started = next(e for e in events if isinstance(e, RenderStarted))
    assert started.device.startswith("ray, 2 workers") and started.shots == 1
    busy = [e for e in events if isinstance(e, WorkersBusy)]
    assert busy and all(0 <= e.busy <= e.workers == 2 for e in busy) and busy[-1].frames_done == 12
    assert max(e.busy for e in busy) == 2, "both workers took a chunk"
    finished = next(e for e in events if isinstance(e, RenderFinished))
    # Iterations a frame, both paintings of an overlap frame together: 2 a later frame, 4 a chain's first (frames
    # 0, 2 and 6), so 2 at least and 6 at most (frames 2 and 6: a chain's first and the chain before's 2).
    assert finished.stylized == 12 and finished.iterations is not None and finished.iterations[1:] == (2, 6)
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["segments"] == [[0, 4, True], [4, 8, False], [8, 12, False]]
    assert (manifest["settings"]["chunk_frames"], manifest["settings"]["overlap"]) == (4, 2)
    assert not (work / "chunks").exists(), "the overlap frames go once they are blended into the final ones"
    assert child_ffmpeg_pids() == []
    decoded = [f.rgb for f in read_frames(probe_video(out), (64, 36))]
    for i in (0, 5, 11):  # the video holds the checkpoints, in order (H.264 at crf 18: close, not equal)
        assert np.abs(decoded[i].astype(int) - _frames(work)[i][..., ::-1]).mean() < 6, f"frame {i}"


def test_another_chunking_or_the_sequential_render_is_refused(reference, bunny_short: Path, starry: Path,
                                                              tmp_path: Path) -> None:
    work, _, _ = reference
    for kwargs, differ in (({"workers": 2, "chunk_frames": 6, "overlap": 2}, ("chunk_frames",)),
                           ({"workers": 2, "chunk_frames": 4, "overlap": 1}, ("overlap",)),
                           ({}, ("chunk_frames", "overlap"))):
        with pytest.raises(CheckpointMismatch) as other:
            vidstyle.render(bunny_short, [starry], tmp_path / "out.mp4", _config(), workdir=work, **kwargs)
        assert other.value.settings == differ
        # Resumed without workers or chunked otherwise: the message says how to resume them (with the chunking
        # they were made with), not only how to throw them away.
        assert "holds a render on Ray workers, in chunks of 4 frames overlapping by 2: resume it on workers, " \
               "chunked the same, or restart the render" in str(other.value), kwargs
    assert sorted(_frames(work)) == list(range(12)) and list(tmp_path.iterdir()) == []


def test_a_stop_while_workers_write_the_video_from_finished_frames_says_so(reference, bunny_short: Path,
                                                                           starry: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Every frame made (a resume of a finished render's frames): a stop while the video is written is not "at
    frame 5", the count of frames written so far."""
    import vidstyle.distributed as distributed

    work = tmp_path / "work"
    shutil.copytree(reference[0], work)
    written = distributed.for_output

    def stop_at_frame_5(job: object, rgb: np.ndarray, gain: float) -> np.ndarray:
        if np.array_equal(rgb, _frames(work)[5][..., ::-1]):
            raise KeyboardInterrupt  # as Ctrl-C arrives while the writer takes frame 5
        return written(job, rgb, gain)

    monkeypatch.setattr(distributed, "for_output", stop_at_frame_5)
    with pytest.raises(Interrupted, match="^interrupted while writing the video from its finished frames; run it "
                                          "again with the same settings to write it$"):
        vidstyle.render(bunny_short, [starry], tmp_path / "o.mp4", _config(), workdir=work, workers=2, **CHUNKING)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def _one_frame_without_workers(video: Path, style: Path, folder: Path) -> tuple[Path, Path]:
    """A render on this machine stopped after its first frame: its output's path and its work directory."""
    def one_frame_then_stop(event: object) -> None:
        if isinstance(event, FrameSaved):
            raise RuntimeError("stopped after a frame")

    out, work = folder / "out.mp4", folder / "work"
    with pytest.raises(RuntimeError, match="stopped after a frame"):
        vidstyle.render(video, [style], out, _config(), workdir=work, on_event=one_frame_then_stop)
    return out, work


def test_another_renders_work_directory_is_refused_before_a_cluster_is_reached(bunny_short: Path, starry: Path,
                                                                                tmp_path: Path) -> None:
    """The work directory's frames were compared with the render's settings only once a Ray cluster had been started
    or joined (minutes, for a cluster that is starting); a closed port shows the comparison now comes first."""
    out, work = _one_frame_without_workers(bunny_short, starry, tmp_path)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(CheckpointMismatch, match="holds a render made without Ray workers: resume it without them"):
        vidstyle.render(bunny_short, [starry], out, _config(), workdir=work, ray_address=f"127.0.0.1:{port}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and _frames(work)


def test_a_render_made_without_workers_resumed_on_workers_is_told_to_resume_without(local_ray, bunny_short: Path,
                                                                                    starry: Path,
                                                                                    tmp_path: Path) -> None:
    out, work = _one_frame_without_workers(bunny_short, starry, tmp_path)
    with pytest.raises(CheckpointMismatch, match="holds a render made without Ray workers: resume it without them"):
        vidstyle.render(bunny_short, [starry], out, _config(), workdir=work, workers=2, **CHUNKING)
    code = main(["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--workdir", str(work),
                 *CLI_SETTINGS, "--workers", "2", "--chunk-frames", "4", "--overlap", "2", "--quiet"])
    assert code == 2 and sorted(_frames(work)) != []


def test_removing_the_chunk_files_removes_only_what_the_chunks_wrote(tmp_path: Path) -> None:
    files = ChunkFiles(WorkDir(tmp_path / "work"))
    frame = np.zeros((8, 8, 3), np.uint8)
    files.save("lead", 3, frame)
    files.save("tail", 7, frame)
    marker = files.mark_running(Task(1, Chunk(0, 0, 4, 2), (0, 12)))
    theirs = [files.root / "notes.txt", files.root / "lead" / "mine.png", files.root / "running" / "todo"]
    for path in theirs:
        path.write_text("not vidstyle's")
    files.remove()
    assert not files.path("lead", 3).exists() and not files.path("tail", 7).exists() and not marker.exists()
    assert all(path.read_text() == "not vidstyle's" for path in theirs)
    for path in theirs:
        path.unlink()
    files.save("lead", 3, frame)
    files.remove()
    assert not files.root.exists(), "with nothing else there, chunks/ goes too"


def test_a_killed_worker_is_retried_and_the_frames_are_the_same(reference, bunny_short: Path, starry: Path,
                                                                 tmp_path: Path) -> None:
    work = tmp_path / "work"
    files = ChunkFiles(WorkDir(work))
    chunks = {c.first: c for c in plan_chunks(_segments(), CHUNKING["overlap"])}
    seen: set[tuple[int, int]] = set()  # (chunk, pid) of every running task observed
    killed: list[tuple[int, int]] = []
    result: list[object] = []
    render = threading.Thread(target=_render_into, args=(bunny_short, starry, tmp_path / "out.mp4", work, result))
    render.start()
    while render.is_alive():
        for first, markers in _markers(files).items():
            for pid in markers:
                seen.add((first, pid))
                if not killed and _mid_chunk(files, chunks[first]):
                    os.kill(pid, signal.SIGKILL)
                    killed.append((first, pid))
        time.sleep(0.002)
    render.join()
    assert result and isinstance(result[0], Path), result
    assert killed, "no chunk was caught between its first and last frame"
    first, pid = killed[0]
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    assert any(c == first and p != pid for c, p in seen), "Ray did not run the killed chunk again"
    assert probe_video(result[0]).frame_count == 12
    _assert_same_frames(work, reference[0])


def test_a_blended_seam_frame_deleted_after_the_render_is_made_again_the_same(reference, bunny_short: Path,
                                                                             starry: Path, tmp_path: Path) -> None:
    """A damaged checkpoint's message says to delete it to make it again; at a seam whose two paintings are gone
    that takes both chains."""
    work = tmp_path / "work"
    shutil.copytree(reference[0], work)
    (work / "frames" / "0000003.png").unlink()  # in the lead-in 2-3 of the chunk [4, 8)
    result: list[object] = []
    _render_into(bunny_short, starry, tmp_path / "out.mp4", work, result)
    assert isinstance(result[0], Path), result
    _assert_same_frames(work, reference[0])


def test_passes_on_workers_reach_across_the_chunks_and_resume_to_the_same_frames(reference, bunny_short: Path,
                                                                                starry: Path, tmp_path: Path) -> None:
    config = _config(passes=3)
    events: list[object] = []
    kept: list[int] = []  # the first pass's frames and the overlap paintings on disk, at each event

    def on_event(event: object) -> None:
        events.append(event)
        kept.append(sum(_count_files(tmp_path / "w1" / f) for f in ("passes/1", "chunks/lead", "chunks/tail")))

    whole = vidstyle.render(bunny_short, [starry], tmp_path / "whole.mp4", config, workdir=tmp_path / "w1",
                            on_event=on_event, workers=2, **CHUNKING)
    last_saved = max(n for n, e in enumerate(events) if isinstance(e, FrameSaved))
    assert max(kept) > 0 and kept[last_saved] == 0, \
        "a frame's first painting goes once every task that reads it is done, long before the last frame is final"
    assert probe_video(whole).frame_count == 12
    assert sorted(e.index for e in events if isinstance(e, FrameSaved)) == list(range(12))
    assert not (tmp_path / "w1" / "passes").exists() and not (tmp_path / "w1" / "chunks").exists()
    # A later pass's one iteration here (a quarter of 2, at least 1) is one evaluation and no step, so a frame
    # changes only where it starts from a blend with its neighbour ahead: every frame in pass 2 (backward) or in
    # pass 3 (forward), across the chunks' edges too.
    one_pass, three = _frames(reference[0]), _frames(tmp_path / "w1")
    assert [i for i in range(12) if np.array_equal(three[i], one_pass[i])] == []

    stop = threading.Event()
    with pytest.raises(Interrupted):
        vidstyle.render(bunny_short, [starry], tmp_path / "resumed.mp4", config, workdir=tmp_path / "w2",
                        on_event=lambda e: isinstance(e, FrameSaved) and stop.set(), stop=stop, workers=2,
                        **CHUNKING)
    assert 0 < len(WorkDir(tmp_path / "w2").done_frames()) < 12 and (tmp_path / "w2" / "passes" / "1").is_dir()
    vidstyle.render(bunny_short, [starry], tmp_path / "resumed.mp4", config, workdir=tmp_path / "w2", workers=2,
                    **CHUNKING)
    _assert_same_frames(tmp_path / "w2", tmp_path / "w1")


def test_a_chunk_resumed_mid_way_looks_as_far_back_as_its_uninterrupted_run(bunny_short: Path, starry: Path,
                                                                            tmp_path: Path) -> None:
    """A retried or resumed chunk continues from its saved frames, as many as temporal_reach looks back at: the
    task run in this process (it needs no Ray), whole and then again after its last frames were lost."""
    config = _config(temporal_reach=4, iters=3)
    work = WorkDir(tmp_path / "work")
    work.frames.mkdir(parents=True)
    # The task sets its process's thread counts; this process's are kept, since later tests compare frames exactly.
    job = ChunkJob(probe_video(bunny_short), (64, 36), config, (starry,), work.path, torch.get_num_threads())
    task = Task(1, Chunk(0, 0, 8, 0), (0, 8))
    opencv_threads = cv2.getNumThreads()
    try:
        assert sorted(run_task(job, task)) == list(range(8))
        whole = _frames(work.path)
        for index in (5, 6, 7):
            work.frame_path(index).unlink()
        assert sorted(run_task(job, task)) == [5, 6, 7]
    finally:
        cv2.setNumThreads(opencv_threads)
    for index in range(8):
        assert np.array_equal(_frames(work.path)[index], whole[index]), f"frame {index} differs"


def _count_files(folder: Path) -> int:
    """Files in a folder that the render may delete at any moment."""
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


def _segments():
    return plan_segments(12, [], CHUNKING["chunk_frames"])


def _render_into(video: Path, style: Path, out: Path, work: Path, result: list[object]) -> None:
    try:
        result.append(vidstyle.render(video, [style], out, _config(), workdir=work, workers=2, **CHUNKING))
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread, which asserts on it
        result.append(exc)


def _markers(files: ChunkFiles) -> dict[int, list[int]]:
    try:
        return {first: [int(p.name.rsplit(".", 1)[1]) for p in paths] for (first, _), paths in files.running().items()}
    except OSError:
        return {}  # a marker removed while the folder was read


def _mid_chunk(files: ChunkFiles, chunk: Chunk) -> bool:
    made = files.made(chunk)
    return 0 < len(made) < chunk.stop - chunk.first


# The command line, killed and interrupted -----------------------------------------------------------------------

def _start_cli(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """In its own process group, so that a Ctrl-C reaches it (and Ray's processes) as a terminal sends one."""
    return subprocess.Popen([sys.executable, "-m", "vidstyle", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, f"the render ended before {what}: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.01)


def test_ctrl_c_or_sigterm_stops_every_process_and_a_killed_render_resumes(lavfi_clip: Callable[..., Path],
                                                                            starry: Path, tmp_path: Path) -> None:
    clip = lavfi_clip("distributed_48.mp4", size="64x48", seconds=1.92)  # 48 frames: 6 chunks of 8
    out, work = tmp_path / "out.mp4", WorkDir(tmp_path / "out.mp4.vidstyle-work")
    args = ["render", str(clip), "--style", str(starry), "-o", str(out), *CLI_SETTINGS, "--iters", "3",
            "--workers", "2", "--chunk-frames", "8", "--overlap", "2"]
    total = 48

    proc = _start_cli([*args, "--quiet"], tmp_path)  # 1. Ctrl-C once frames are being made
    _wait_for(lambda: len(work.done_frames()) >= 2, proc, "checkpoint")
    started = _descendants(proc.pid)
    assert any(b"raylet" in Path(f"/proc/{p}/cmdline").read_bytes() for p in _alive(started)), "no local Ray"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted at frame" in err and "Traceback" not in err, err
    deadline = time.monotonic() + 30
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {p: Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in _alive(started)}
    assert not left, f"still running after Ctrl-C: {left}"
    assert not out.exists() and not partial_path(out).exists()
    after_ctrl_c = work.done_frames()
    assert 1 <= len(after_ctrl_c) < total

    proc = _start_cli([*args, "--quiet"], tmp_path)  # 1b. SIGTERM to the render alone, as a service manager's stop
    _wait_for(lambda: len(work.done_frames()) >= len(after_ctrl_c) + 2, proc, "checkpoint")
    started = _descendants(proc.pid)
    time.sleep(0.5)  # into the driver's wait for its tasks, where Ray's compiled code wrapped the stop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "interrupted at frame" in err and "Error" not in err, err
    deadline = time.monotonic() + 30
    while _alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(started), "still running after SIGTERM"
    after_ctrl_c = work.done_frames()

    proc = _start_cli([*args, "--quiet"], tmp_path)  # 2. kill -9 of the render itself, later on
    _wait_for(lambda: len(work.done_frames()) >= len(after_ctrl_c) + 8, proc, "new checkpoint")
    orphans = _descendants(proc.pid)
    proc.kill()
    proc.communicate(timeout=60)
    for pid in _alive(orphans):  # Ray's agents and workers of a killed driver end by themselves within a minute
        os.kill(pid, signal.SIGKILL)  # (docs); this test does not wait for them
    before = {i: (p.stat().st_ino, p.stat().st_mtime_ns) for i in work.done_frames()
              for p in [work.frame_path(i)]}
    assert len(before) < total, "the render finished before it was killed"

    proc = _start_cli(args, tmp_path)  # 3. the same command resumes
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"resuming at frame {min(set(range(total)) - set(before))} of {total}" in err, err
    assert probe_video(out).frame_count == total and work.done_frames() == set(range(total))
    for i, stamp in before.items():
        p = work.frame_path(i)
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, f"frame {i}, finished before the kill, was redone"


_TWO_AT_ONCE = """
import sys, threading, time
from pathlib import Path
import vidstyle, ray
clip, style, folder = sys.argv[1:4]
config = vidstyle.make_config("fast", size=48, iters=1, first_iters=2, device="cpu", flow="none")
results = {}
def render(name, delay):
    time.sleep(delay)
    try:
        results[name] = vidstyle.render(clip, [style], Path(folder) / name, config, workers=1, chunk_frames=4,
                                        overlap=1)
    except BaseException as exc:
        results[name] = repr(exc)
threads = [threading.Thread(target=render, args=(name, delay)) for name, delay in (("a.mp4", 0), ("b.mp4", 1))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(sorted((name, str(value)) for name, value in results.items()), ray.is_initialized())
"""


def test_workers_write_a_fade_to_black_dark_and_keep_its_painted_frames(local_ray, fading_clip: Path, starry: Path,
                                                                         tmp_path: Path) -> None:
    frames, _, _, black = FADING_CLIP
    out = vidstyle.render(fading_clip, [starry], tmp_path / "out.mp4", _config(), workdir=tmp_path / "work",
                          workers=2, **CHUNKING)
    written = [mean_luma(frame.rgb) for frame in read_frames(probe_video(out), (64, 36))]
    assert len(written) == frames and max(written[-black:]) < 3, written
    # The darkening is the written video's: the checkpoints, which later frames and a resume start from, are painted.
    painted = _frames(tmp_path / "work")
    assert min(float(painted[i].mean()) for i in range(frames - black, frames)) > 20


def test_two_renders_on_workers_in_one_process_share_its_ray(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    """Ray has one connection a process: the second render uses the first's, and the last to end closes it (the
    first to end closed it under the other, or the second started Ray twice)."""
    proc = subprocess.run([sys.executable, "-c", _TWO_AT_ONCE, str(bunny_short), str(starry), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    expected = [("a.mp4", str(tmp_path / "a.mp4")), ("b.mp4", str(tmp_path / "b.mp4"))]
    assert proc.stdout.strip() == f"{expected} False", proc.stdout + proc.stderr
    assert probe_video(tmp_path / "a.mp4").frame_count == probe_video(tmp_path / "b.mp4").frame_count == 12


def test_one_gpu_named_for_several_workers_is_refused_before_anything_starts(capsys, bunny_short: Path, starry: Path,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    assert main(["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--workers", "2",
                 "--device", "cuda:1"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "vidstyle: error: --device cuda:1 names one GPU, and every Ray worker would use it: on Ray workers use cuda, "
        "and each gets a GPU of its own"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flags", "named"), [(("--end", "0.2"), "--end"), (("--start", "0.2"), "--start"),
                                              (("--start", "0.1", "--end", "0.3"), "--start"),
                                              (("--duration", "0.2"), "--duration")])
def test_a_part_of_the_video_on_workers_is_refused_naming_the_option_given(capsys, bunny_short: Path, starry: Path,
                                                                          tmp_path: Path, flags: tuple[str, ...],
                                                                          named: str) -> None:
    out = tmp_path / "out.mp4"
    code = main(["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--workers", "2", *flags])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"vidstyle: error: {named} (a part of the video) is not available on several workers yet; render the part "
        "on one machine"]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SettingError, match=r"^end \(a part"):
        vidstyle.render(bunny_short, [starry], out, vidstyle.make_config(size=64), workers=2, end=0.2)


@pytest.mark.parametrize(("nodes", "workers", "gpus", "threads"), [
    ([{"CPU": 16}], 4, False, 4),  # one machine: an equal share
    ([{"CPU": 8}, {"CPU": 8}], 1, False, 8),  # never more than one node has: 16 would wait forever
    ([{"CPU": 8}, {"CPU": 4}], 2, False, 6),
    ([{"CPU": 16}, {"CPU": 8, "GPU": 1}], 1, True, 8),  # the GPU node's CPUs, not the GPU-less head's too
    ([{"CPU": 16, "GPU": 2}, {"CPU": 6, "GPU": 1}], 3, True, 6),  # the smallest GPU node's share fits them all
    ([{"CPU": 0.5}], 2, False, 1),
])
def test_each_task_asks_for_no_more_than_one_node_can_give(nodes: list[dict[str, float]], workers: int, gpus: bool,
                                                           threads: int) -> None:
    """Ray places a task on a single node; one that asks for more than any node has is never placed, and the render
    would wait without a word."""
    assert threads_per_task(nodes, workers, gpus) == threads


def test_a_frames_folder_that_is_a_link_is_not_followed_when_checkpoints_go(tmp_path: Path) -> None:
    """Removing checkpoints deleted frame-named files wherever a linked frames/ (or chunks/lead/) led: files this
    render never made, in a folder it did not make."""
    from vidstyle.checkpoint import remove_frame_files

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "0000001.png").write_bytes(b"someone's picture")
    work = WorkDir(tmp_path / "work")
    work.path.mkdir()
    work.frames.symlink_to(theirs, target_is_directory=True)
    files = ChunkFiles(work)
    files.root.mkdir()
    (files.root / "lead").symlink_to(theirs, target_is_directory=True)
    remove_frame_files(work.frames)
    files.remove()
    assert (theirs / "0000001.png").read_bytes() == b"someone's picture"
    assert work.frames.is_symlink() and (files.root / "lead").is_symlink()
    # The folders above them too: passes/ (its pass folders hold frames) and chunks/ itself.
    (theirs / "2").mkdir()
    (theirs / "2" / "0000001.png").write_bytes(b"someone's picture")
    (theirs / "lead").mkdir()
    (theirs / "lead" / "0000001.png").write_bytes(b"someone's picture")
    (work.path / "passes").symlink_to(theirs, target_is_directory=True)
    (files.root / "lead").unlink()
    files.root.rmdir()
    files.root.symlink_to(theirs, target_is_directory=True)
    work._remove_own_files(remove_directory=False)
    assert (theirs / "2" / "0000001.png").exists() and (theirs / "lead" / "0000001.png").exists()


def test_a_stop_after_the_output_is_in_place_says_it_was_written_in_full() -> None:
    """Ray takes a moment to shut down after the video is published: a Ctrl-C then said "run it again" of a render
    whose output was complete, and whose next run only refused the existing output."""
    from types import SimpleNamespace

    from vidstyle.distributed import _stop_after_publish
    from vidstyle.errors import SignalInterrupt

    job = SimpleNamespace(output=Path("o.mp4"), span=(0, 5))
    with pytest.raises(Interrupted, match="^interrupted after o.mp4 was written in full$") as caught:
        with _stop_after_publish(job) as published:  # type: ignore[arg-type]
            published.set()
            raise KeyboardInterrupt
    assert caught.value.exit_code == 130
    with pytest.raises(Interrupted, match="written in full") as caught:
        with _stop_after_publish(job) as published:  # type: ignore[arg-type]
            published.set()
            raise SignalInterrupt(signal.SIGTERM)
    assert caught.value.exit_code == 143
    with pytest.raises(KeyboardInterrupt):  # before the output is in place: the render's own stop, resumable
        with _stop_after_publish(job):  # type: ignore[arg-type]
            raise KeyboardInterrupt


def test_only_tasks_still_running_are_cancelled(local_ray) -> None:
    """A Ctrl-C while chunks finished force-cancelled tasks whose reply was arriving: Ray then aborted the driver in
    C++ (its check "Tried to complete task that was not pending"), with a stack trace instead of the stop's line."""
    def sleeps(seconds: float) -> float:  # defined here, so that Ray sends it by value, not by this module's name
        import time

        time.sleep(seconds)
        return seconds

    remote = local_ray.remote(sleeps).options(num_cpus=1)
    quick, slow = remote.remote(0.0), remote.remote(60.0)
    assert local_ray.wait([quick], timeout=60)[0] == [quick]
    assert cancel_running(local_ray, [quick, slow]) == [slow], "the one that returned is not cancelled"
    assert local_ray.get(quick) == 0.0
    with pytest.raises((local_ray.exceptions.TaskCancelledError, local_ray.exceptions.WorkerCrashedError)):
        local_ray.get(slow, timeout=60)
    assert cancel_running(local_ray, []) == []


def test_a_cluster_that_may_want_a_token_is_said_to(tmp_path: Path, monkeypatch) -> None:
    """A head that `ray start --head` began where ~/.ray/auth_token exists asks for the token, which a driver given
    an address sends only with RAY_AUTH_MODE=token: the failure said only "Failed to connect"."""
    from vidstyle.distributed import _token_hint

    token = tmp_path / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert _token_hint("10.0.0.5:6379") == ""  # Ray here never used a token: not the reason
    token.write_text("secret")
    assert "set RAY_AUTH_MODE=token, with the head's token in RAY_AUTH_TOKEN" in _token_hint("10.0.0.5:6379")
    assert _token_hint(None) == ""  # a local Ray of its own, or one that auto found with no address
    monkeypatch.setenv("RAY_AUTH_MODE", "TOKEN")
    assert _token_hint("10.0.0.5:6379") == ""  # sent already


def test_chunks_of_a_video_that_cannot_be_seeked_are_said_to_decode_its_beginning_each(bunny_short: Path) -> None:
    """Each chunk of an FFV1 or MPEG-4 Part 2 video is decoded from its first frame, so many workers spread a long
    one less well than its length suggests, without a word."""
    from fractions import Fraction

    from vidstyle.distributed import _with_ray_notes

    started = RenderStarted(12, 0, 0, (64, 36), Fraction(25), "ray, 2 workers", Path("w"), 1, "no audio")
    uncut = probe_video(Path(__file__).parent / "data" / "cut_reference" / "cut.mkv")  # FFV1
    said = ("the video (ffv1) cannot be seeked exactly: each chunk is decoded from its first frame, so the workers "
            "decode its beginning again and again (re-encoded to H.264 first, it would not be)")
    assert _with_ray_notes(started, uncut, 3, 2).notes == (said,)
    assert _with_ray_notes(started, uncut, 1, 1).notes == (), "one chunk decodes from the start anyway"
    assert _with_ray_notes(started, probe_video(bunny_short), 3, 2).notes == ()


def test_workers_left_with_nothing_to_do_are_said_to_be(local_ray, bunny_short: Path, starry: Path,
                                                         tmp_path: Path) -> None:
    """A clip shorter than one chunk runs on one worker: the second only cost Ray's start-up, without a word."""
    started: list[RenderStarted] = []
    vidstyle.render(bunny_short, [starry], tmp_path / "one.mp4", _config(), workers=2,
                    on_event=lambda e: started.append(e) if isinstance(e, RenderStarted) else None)
    assert "the video makes 1 chunk for 2 workers: 1 will have nothing to do (smaller chunks spread it over more)" \
        in started[0].notes
    started.clear()
    vidstyle.render(bunny_short, [starry], tmp_path / "two.mp4", _config(), workers=2, **CHUNKING,
                    on_event=lambda e: started.append(e) if isinstance(e, RenderStarted) else None)
    assert not any("nothing to do" in note for note in started[0].notes)
