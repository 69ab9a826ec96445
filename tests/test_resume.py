"""Renders that survive kill -9, Ctrl-C, SIGTERM and a closed terminal, and resume to the very same frames."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import decoded, run_cli

from vidstyle.checkpoint import WorkDir
from vidstyle.config import make_config
from vidstyle.errors import CheckpointError, OutputError
from vidstyle.io.images import write_image

# Enough iterations that the frames left after the third checkpoint take over a second: the signal tests must
# interrupt a render that is still running (at 3 a frame a fast run could finish first and exit 0).
FLAGS = ("--size", "64", "--iters", "12", "--first-iters", "6", "--device", "cpu", "--seed", "3", "--flow", "dis",
         "--keep-frames", "--quiet")


def _hang_up_as_a_shell_leaves_it() -> None:
    """A command a shell starts takes SIGHUP's default; the test run's own may be ignored (under nohup, which a
    render then keeps ignoring, on purpose), and the SIGHUP tests would see no hang-up."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _start(clip: Path, style: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vidstyle", "render", str(clip), "--style", str(style),
                             "-o", str(out), *FLAGS], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=_hang_up_as_a_shell_leaves_it)


def _wait_for_frames(workdir: Path, count: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(WorkDir(workdir).done_frames()) < count:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "render made no progress"
        time.sleep(0.05)


def _ffmpeg_touching(path: Path) -> list[str]:
    """Any ffmpeg process anywhere whose command line mentions `path` (orphans of a killed render)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "ffmpeg" in cmd and str(path) in cmd:
                found.append(cmd)
    return found


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def reference(bunny_short: Path, starry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted render with the same settings, for comparison."""
    out = tmp_path_factory.mktemp("reference") / "ref.mp4"
    proc = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), *FLAGS)
    assert proc.returncode == 0, proc.stderr
    return out


def _same_as_reference(out: Path, reference: Path) -> None:
    ref_frames = WorkDir(reference.with_name(reference.name + ".vidstyle-work"))
    got_frames = WorkDir(out.with_name(out.name + ".vidstyle-work"))
    assert got_frames.done_frames() == ref_frames.done_frames() == set(range(12))
    for i in range(12):
        assert np.array_equal(got_frames.load_frame(i), ref_frames.load_frame(i)), f"checkpoint {i} differs"
    for i, (a, b) in enumerate(zip(decoded(out), decoded(reference), strict=True)):
        assert _psnr(a, b) >= 50, f"frame {i}"


def test_kill_9_then_same_command_resumes_identically(bunny_short, starry, reference, tmp_path) -> None:
    out = tmp_path / "out.mp4"
    proc = _start(bunny_short, starry, out)
    _wait_for_frames(tmp_path / "out.mp4.vidstyle-work", 4, proc)
    proc.kill()
    proc.wait()
    assert not out.exists(), "nothing may sit at the output path after a kill"
    deadline = time.monotonic() + 10  # the orphaned ffmpeg processes see their pipes close and exit
    while _ffmpeg_touching(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _ffmpeg_touching(tmp_path)
    again = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), *FLAGS[:-1])
    assert again.returncode == 0, again.stderr
    assert "resuming at frame" in again.stderr
    assert not list(tmp_path.glob(".out.mp4.partial*")), "the killed run's partial output is reused and renamed"
    _same_as_reference(out, reference)


_INT, _TERM, _HUP = signal.SIGINT, signal.SIGTERM, signal.SIGHUP


@pytest.mark.parametrize("signals, code", [((_INT,), 130), ((_TERM,), 143), ((_INT,) * 6, 130), ((_TERM,) * 6, 143),
                                           ((_INT, _TERM, _TERM, _INT, _TERM, _TERM), 130), ((_HUP, _HUP, _TERM), 129)])
def test_signal_stops_cleanly_and_resumes(bunny_short, starry, reference, tmp_path, signals, code) -> None:
    """Repeats, as an impatient person or a service manager sends them (a SIGTERM after a Ctrl-C too), land in the
    clean-up: it completes. A closed terminal (SIGHUP) stops the render as SIGTERM does."""
    out = tmp_path / "out.mp4"
    proc = _start(bunny_short, starry, out)
    _wait_for_frames(tmp_path / "out.mp4.vidstyle-work", 3, proc)
    for signum in signals:
        if proc.poll() is None:
            proc.send_signal(signum)
            time.sleep(0.03)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted at frame" in lines[0], lines
    assert "run it again with the same settings to resume" in lines[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".out.mp4.partial*"))
    assert not _ffmpeg_touching(tmp_path)
    frame = int(lines[0].split("interrupted at frame ")[1].split(";")[0])
    again = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), *FLAGS[:-1])
    assert again.returncode == 0, again.stderr
    assert f"resuming at frame {frame} of 12" in again.stderr
    _same_as_reference(out, reference)


def test_the_event_log_of_an_interrupted_render_ends_saying_so(bunny_short, starry, tmp_path) -> None:
    """A script following --log-json could not tell a render that was stopped from one still running: the log
    ended at its last FrameSaved."""
    import json

    out, log = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "vidstyle", "render", str(bunny_short), "--style", str(starry),
                             "-o", str(out), *FLAGS, "--log-json", str(log)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    _wait_for_frames(tmp_path / "out.mp4.vidstyle-work", 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    ended = json.loads(log.read_text().splitlines()[-1])
    assert ended == {"event": "CommandEnded", "command": "render", "status": "interrupted", "exit_code": 143,
                     "message": err.strip().removeprefix("vidstyle: ")}, (ended, err)
    assert "run it again with the same settings to resume" in ended["message"]
    stuck = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), *FLAGS, "--iters", "0",
                    "--log-json", str(log))
    assert stuck.returncode == 2 and log.read_text().count("CommandEnded") == 1, "refused before its work: no line"


def test_a_render_started_with_nohup_outlives_its_terminal(bunny_short, starry, reference, tmp_path) -> None:
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "vidstyle", "render", str(bunny_short), "--style", str(starry),
                             "-o", str(out), *FLAGS], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # as nohup starts it
    _wait_for_frames(tmp_path / "out.mp4.vidstyle-work", 3, proc)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    _same_as_reference(out, reference)


def test_a_render_whose_terminal_closes_stops_cleanly_and_resumes(bunny_short, starry, reference, tmp_path) -> None:
    """A real hang-up: the render's terminal is a pseudo-terminal whose other end closes, as a terminal window or an
    SSH session does. The kernel sends SIGHUP, and every later write to the terminal fails."""
    out = tmp_path / "out.mp4"
    master, slave = os.openpty()

    def own_the_terminal() -> None:  # a session of its own, the pty its controlling terminal, as a login shell's
        _hang_up_as_a_shell_leaves_it()
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "vidstyle", "render", str(bunny_short), "--style", str(starry),
                             "-o", str(out), *FLAGS[:-1]], stdin=slave, stdout=slave, stderr=slave,
                            preexec_fn=own_the_terminal)
    os.close(slave)
    closing = threading.Event()
    shown = threading.Thread(target=_drain, args=(master, closing), daemon=True)  # a terminal shows what is written
    shown.start()
    _wait_for_frames(tmp_path / "out.mp4.vidstyle-work", 3, proc)
    # The reader stops first: a read blocked on the master keeps it open past os.close, and the hang-up would come
    # only with the render's next line of output.
    closing.set()
    shown.join()
    os.close(master)
    assert proc.wait(timeout=60) == 128 + signal.SIGHUP
    assert not out.exists() and not list(tmp_path.glob(".out.mp4.partial*"))
    assert not _ffmpeg_touching(tmp_path)
    again = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), *FLAGS[:-1])
    assert again.returncode == 0, again.stderr
    assert "resuming at frame" in again.stderr
    _same_as_reference(out, reference)


def _drain(fd: int, closing: threading.Event) -> None:
    while not closing.is_set():
        if select.select([fd], [], [], 0.05)[0]:
            try:
                if not os.read(fd, 4096):
                    return
            except OSError:
                return  # the render's end was closed


def test_changed_settings_are_refused_then_restart_works(bunny_short, starry, tmp_path) -> None:
    out = tmp_path / "out.mp4"
    proc = _start(bunny_short, starry, out)
    _wait_for_frames(tmp_path / "out.mp4.vidstyle-work", 2, proc)
    proc.kill()
    proc.wait()
    changed = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), *FLAGS,
                      "--style-weight", "7")
    assert changed.returncode == 2
    assert "--restart" in changed.stderr
    assert f"--style-weight ({make_config().style_weight:g} before)" in changed.stderr, changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1
    restarted = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), *FLAGS,
                        "--style-weight", "7", "--restart")
    assert restarted.returncode == 0, restarted.stderr
    assert "resuming" not in restarted.stderr


def test_a_render_killed_then_started_over_without_its_work_directory_takes_its_own_partial_file(
        bunny_short, starry, tmp_path) -> None:
    """A user who deletes the work directory of a killed render (to start over, or a --workdir on a wiped tmpfs)
    found the render's own hidden partial file refused as someone else's, even with --restart or --overwrite."""

    out = tmp_path / "out.mp4"
    proc = _start(bunny_short, starry, out)
    _wait_for_frames(tmp_path / "out.mp4.vidstyle-work", 2, proc)
    proc.kill()
    proc.wait()
    time.sleep(0.5)  # the orphaned encoder sees its input end and finishes the partial file
    partial = tmp_path / ".out.mp4.partial.mp4"
    assert partial.stat().st_size > 0
    shutil.rmtree(tmp_path / "out.mp4.vidstyle-work")
    again = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(out), *FLAGS)
    assert again.returncode == 0, again.stderr
    assert out.exists() and not partial.exists()


def test_lost_work_directory_is_a_clear_error(bunny_short, starry, tmp_path) -> None:
    out = tmp_path / "out.mp4"
    work = tmp_path / "out.mp4.vidstyle-work"
    proc = _start(bunny_short, starry, out)
    _wait_for_frames(work, 2, proc)

    shutil.rmtree(work)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "work directory" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_full_disk_keeps_earlier_checkpoints(tmp_path, monkeypatch) -> None:
    work = WorkDir(tmp_path / "w")
    work.frames.mkdir(parents=True)
    frame = np.full((8, 8, 3), 90, np.uint8)
    work.save_frame(0, frame)

    def no_space(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(CheckpointError, match="No space left"):
        work.save_frame(1, frame)
    monkeypatch.undo()
    assert work.done_frames() == {0}
    assert np.array_equal(work.load_frame(0), frame)
    assert sorted(p.name for p in work.frames.iterdir()) == ["0000000.png"], "no temporary file is left"
    work.save_frame(1, frame)  # once space is back, the render continues
    assert work.done_frames() == {0, 1}


def test_a_write_that_fails_half_way_keeps_the_file_it_was_to_replace(tmp_path, monkeypatch) -> None:
    target = tmp_path / "f.png"
    old = np.full((4, 4, 3), 30, np.uint8)
    write_image(target, old)

    def fails(*_args, **_kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fails)  # the new picture's bytes are written, not yet safe on disk
    with pytest.raises(OutputError, match="Input/output error"):
        write_image(target, np.full((4, 4, 3), 200, np.uint8))
    monkeypatch.undo()
    assert np.array_equal(cv2.imread(str(target))[..., ::-1], old)
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"], "no temporary file is left"


def _interrupted_without_native_bf16(video: Path, style: Path, out: Path, config: Any, stop_when: Any,
                                     monkeypatch: pytest.MonkeyPatch) -> tuple[WorkDir, list[object]]:
    """A render with `precision auto` on a CPU taken to have no native bf16 (so fp32), stopped once
    `stop_when(event)`; its work directory and events."""
    import threading

    import vidstyle
    import vidstyle.precision
    from vidstyle.errors import Interrupted

    stop, events = threading.Event(), []

    def on_event(event: object) -> None:
        events.append(event)
        if stop_when(event):
            stop.set()

    monkeypatch.setattr(vidstyle.precision, "_cpu_has_bf16", lambda: False)
    with pytest.raises(Interrupted):
        vidstyle.render(video, [style], out, config, on_event=on_event, stop=stop)
    return WorkDir(out.with_name(out.name + ".vidstyle-work")), events


def _precision_notes_resumed_with_native_bf16(video: Path, style: Path, out: Path, config: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The same render resumed where bf16 is native: its start's precision notes."""
    import vidstyle
    import vidstyle.precision
    from vidstyle.events import RenderStarted

    monkeypatch.setattr(vidstyle.precision, "_cpu_has_bf16", lambda: True)
    again: list[object] = []
    vidstyle.render(video, [style], out, config, on_event=again.append)
    notes = next(e for e in again if isinstance(e, RenderStarted)).notes
    return [note for note in notes if note.startswith("precision:")]


def test_a_render_resumed_where_precision_auto_resolves_otherwise_says_so(bunny_short: Path, starry: Path,
                                                                          tmp_path: Path, monkeypatch) -> None:
    """`precision auto` on a device without native bf16 computes in fp32; resumed where bf16 is native, the rest of
    the frames come out of bf16. The render still finishes, and its start says the two kinds of frame differ."""
    from vidstyle.events import FrameSaved, RenderStarted

    config = make_config("balanced", size=64, iters=2, first_iters=3, device="cpu", flow="dis", precision="auto",
                         keep_frames=True)
    out = tmp_path / "out.mp4"
    work, first = _interrupted_without_native_bf16(
        bunny_short, starry, out, config, lambda e: isinstance(e, FrameSaved) and e.index >= 1, monkeypatch)
    made = len(work.done_frames())
    assert 2 <= made < 12
    assert work.read_manifest().network_dtype == "fp32"
    started = [e for e in first if isinstance(e, RenderStarted)]
    assert not any("precision" in note for note in started[0].notes)

    said = _precision_notes_resumed_with_native_bf16(bunny_short, starry, out, config, monkeypatch)
    assert len(said) == 1 and f"the {made} frame(s) already made were computed in fp32" in said[0] \
        and "this run computes in bf16" in said[0] and said[0].endswith("restart the render with precision fp32"), \
        said
    assert work.done_frames() == set(range(12)) and out.is_file()
    assert work.read_manifest().network_dtype == "fp32"  # what the render began in, not the latest run's


def test_a_resume_in_another_dtype_counts_frames_of_earlier_passes(bunny_short: Path, starry: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped in the first of two passes, no final frame exists yet: the frames of that pass were computed too."""
    from vidstyle.events import FrameDone

    config = make_config("balanced", size=64, iters=2, first_iters=3, device="cpu", flow="dis", precision="auto",
                         passes=2)
    out = tmp_path / "out.mp4"
    work, _ = _interrupted_without_native_bf16(
        bunny_short, starry, out, config, lambda e: isinstance(e, FrameDone) and e.index >= 2, monkeypatch)
    made = len(work.done_pass_frames(1))
    assert made >= 3 and not work.done_frames()
    said = _precision_notes_resumed_with_native_bf16(bunny_short, starry, out, config, monkeypatch)
    assert len(said) == 1 and f"the {made} frame(s) already made were computed in fp32" in said[0], said


def test_the_precision_note_is_only_for_frames_made_in_another_dtype() -> None:
    import torch

    from vidstyle.checkpoint import Manifest
    from vidstyle.precision import mixed_precision_note

    assert mixed_precision_note("bf16", torch.bfloat16, 5) is None
    assert mixed_precision_note("", torch.bfloat16, 5) is None  # a manifest that does not say (workers, older)
    assert mixed_precision_note("bf16", None, 0) is None  # nothing made yet
    assert "computed in bf16, this run computes in fp32" in mixed_precision_note("bf16", None, 5)
    manifest = Manifest("1", "abc", ("def",), (64, 36), 12, {}, ((0, 12, True),), True, "bf16")
    assert Manifest.from_json(manifest.to_json()) == manifest
    edited = manifest.to_json().replace('"network_dtype": "bf16"', '"network_dtype": "fp64"')
    with pytest.raises(ValueError, match="network_dtype"):
        Manifest.from_json(edited)


def _stop_the_first_clean_up(monkeypatch, raised: BaseException) -> list[Path]:
    """WorkDir.remove, stopped by `raised` the first time after removing one frame (as a real stop finds it)."""
    remove = WorkDir.remove
    calls: list[Path] = []

    def stopped_midway(self: WorkDir) -> None:
        calls.append(self.path)
        if len(calls) == 1:
            next(iter(sorted(self.frames.iterdir()))).unlink()
            raise raised
        remove(self)

    monkeypatch.setattr(WorkDir, "remove", stopped_midway)
    return calls


@pytest.mark.parametrize("signal_raised", ["ctrl-c", "sigterm"])
def test_a_stop_while_a_finished_render_removes_its_checkpoints_finishes_them_then_stops(bunny_short: Path,
                                                                                         starry: Path, tmp_path: Path,
                                                                                         monkeypatch,
                                                                                         signal_raised: str) -> None:
    """Ctrl-C (or SIGTERM) landing once the output is in place, while the checkpoints go: the clean-up is finished
    (not left half done, with advice to resume a render that is complete), and the stop is then passed on, saying
    the output was written in full."""
    import vidstyle
    from vidstyle.errors import Interrupted, SignalInterrupt
    from vidstyle.events import RenderFinished

    raised = KeyboardInterrupt() if signal_raised == "ctrl-c" else SignalInterrupt(signal.SIGTERM)
    calls = _stop_the_first_clean_up(monkeypatch, raised)
    out, events = tmp_path / "out.mp4", []
    config = vidstyle.make_config("balanced", size=64, iters=1, first_iters=1, device="cpu", precision="fp32")
    with pytest.raises(Interrupted) as stopped:
        vidstyle.render(bunny_short, [starry], out, config, on_event=events.append)
    assert stopped.value.exit_code == (130 if signal_raised == "ctrl-c" else 128 + signal.SIGTERM)
    assert str(stopped.value) == f"interrupted after {out} was written in full"
    assert len(calls) == 2 and isinstance(events[-1], RenderFinished)
    assert len(decoded(out)) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"], "checkpoints or a partial file left"


def test_a_ctrl_c_in_the_handler_of_the_last_event_says_the_output_was_written(bunny_short: Path, starry: Path,
                                                                              tmp_path: Path) -> None:
    """A script's Ctrl-C (Python's handler raises wherever the script is) that landed in its handler of
    RenderFinished ended as "interrupted while writing the video ...; run it again to write it", whose run again
    only refused the output that was there, complete."""
    import vidstyle
    from vidstyle.errors import Interrupted
    from vidstyle.events import RenderFinished

    def ctrl_c_at_the_end(event: object) -> None:
        if isinstance(event, RenderFinished):
            raise KeyboardInterrupt

    out = tmp_path / "out.mp4"
    config = vidstyle.make_config("balanced", size=64, iters=1, first_iters=1, device="cpu", precision="fp32")
    with pytest.raises(Interrupted) as stopped:
        vidstyle.render(bunny_short, [starry], out, config, on_event=ctrl_c_at_the_end)
    assert str(stopped.value) == f"interrupted after {out} was written in full" and stopped.value.exit_code == 130
    assert len(decoded(out)) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"], "checkpoints or a partial file left"


def test_a_stop_during_a_batch_items_clean_up_ends_the_batch_there(bunny_short: Path, starry: Path, tmp_path: Path,
                                                                   monkeypatch) -> None:
    """The stop is not swallowed: the next render of the batch is not started (the CLI ignores a repeated Ctrl-C
    while it stops, so a swallowed one would leave the rest of the batch unstoppable)."""

    import vidstyle
    from vidstyle.errors import Interrupted

    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for clip in clips:
        shutil.copy(bunny_short, clip)
    _stop_the_first_clean_up(monkeypatch, KeyboardInterrupt())
    config = vidstyle.make_config("balanced", size=64, iters=1, first_iters=1, device="cpu", precision="fp32")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Interrupted):
        vidstyle.render_many(clips, [starry], config, output_dir=out)
    assert [p.name for p in out.iterdir()] == ["a.starry_night.mp4"]


class _Killed(BaseException):
    """The process dying: nothing after it runs, not even the clean-up's own handling of a stop."""


def test_a_render_killed_while_it_removes_its_checkpoints_leaves_them_for_its_next_run_to_remove(
        bunny_short: Path, starry: Path, tmp_path: Path, monkeypatch) -> None:
    """kill -9 (or a power cut) after the output was in place, while the checkpoints went: the same command then
    only refused the existing output, and the checkpoints (and a partial file that was a second name of the output)
    stayed for good. They go at the next run of that output; a work directory whose render made another file stays,
    and so does one that a later render took over."""
    import vidstyle
    from vidstyle.errors import Interrupted, OutputExists
    from vidstyle.events import FrameDone

    config = vidstyle.make_config("balanced", size=64, iters=1, first_iters=1, device="cpu", precision="fp32")

    def killed_midway(self: WorkDir) -> None:
        next(iter(sorted(self.frames.iterdir()))).unlink()
        raise _Killed

    def killed_in_clean_up(out: Path) -> WorkDir:
        with monkeypatch.context() as patch:
            patch.setattr(WorkDir, "remove", killed_midway)
            with pytest.raises(_Killed):
                vidstyle.render(bunny_short, [starry], out, config)
        work = WorkDir(out.with_name(out.name + ".vidstyle-work"))
        assert len(decoded(out)) == 12 and len(work.done_frames()) == 11
        return work

    out = tmp_path / "out.mp4"
    killed_in_clean_up(out)
    partial = tmp_path / ".out.mp4.partial.mp4"
    os.link(out, partial)  # killed between the link that put the output in place and the partial's unlink
    kept = tmp_path / "other.mp4.vidstyle-work"  # a render's whose output was replaced since by another file
    shutil.copytree(tmp_path / "out.mp4.vidstyle-work", kept)
    (tmp_path / "other.mp4").write_bytes(out.read_bytes())
    with pytest.raises(OutputExists):
        vidstyle.render(bunny_short, [starry], out, config)
    with pytest.raises(OutputExists):
        vidstyle.render(bunny_short, [starry], tmp_path / "other.mp4", config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.mp4", "other.mp4.vidstyle-work", "out.mp4"]
    assert len(WorkDir(kept).done_frames()) == 11 and len(decoded(out)) == 12

    # A render that takes the directory over (--overwrite), stopped part-way, keeps its frames, though the output
    # is still the file the record named.
    again = tmp_path / "again.mp4"
    work = killed_in_clean_up(again)
    for frame in work.frames.iterdir():
        frame.unlink()
    stop, seen = threading.Event(), []

    def stop_after_two(event: object) -> None:
        seen.append(event)
        if sum(isinstance(e, FrameDone) for e in seen) == 2:
            stop.set()

    with pytest.raises(Interrupted):
        vidstyle.render(bunny_short, [starry], again, config, overwrite=True, on_event=stop_after_two, stop=stop)
    with pytest.raises(OutputExists):
        vidstyle.render(bunny_short, [starry], again, config)
    assert len(work.done_frames()) >= 2, "the new render's frames are kept for its resume"


def test_frames_made_with_other_style_layers_are_another_render(bunny_short: Path, starry: Path,
                                                               tmp_path: Path) -> None:
    """A work directory of a version whose style loss read relu5_1 as well: its frames are not resumed with these."""
    import json

    import vidstyle
    from vidstyle.errors import CheckpointMismatch

    out, work = tmp_path / "out.mp4", tmp_path / "out.mp4.vidstyle-work"
    config = vidstyle.make_config("balanced", size=64, iters=1, first_iters=1, device="cpu", precision="fp32",
                                  keep_frames=True)
    vidstyle.render(bunny_short, [starry], out, config)
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["settings"]["style_layers"] == "relu1_1,relu2_1,relu3_1,relu4_1"
    del manifest["settings"]["style_layers"]  # as the versions before wrote it
    (work / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointMismatch, match="the network's style layers"):
        vidstyle.render(bunny_short, [starry], out, config, overwrite=True)


def test_frames_made_with_the_paintings_edge_in_its_style_are_another_render(bunny_short: Path, starry: Path,
                                                                              tmp_path: Path) -> None:
    """A work directory of a version whose style targets held the painting's edge (frames with a line along their
    edges): its frames are not resumed beside these, whose edges have none."""
    import json

    import vidstyle
    from vidstyle.errors import CheckpointMismatch

    out, work = tmp_path / "out.mp4", tmp_path / "out.mp4.vidstyle-work"
    config = vidstyle.make_config("balanced", size=64, iters=1, first_iters=1, device="cpu", precision="fp32",
                                  keep_frames=True)
    vidstyle.render(bunny_short, [starry], out, config)
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["settings"]["painting_band"] == 16
    del manifest["settings"]["painting_band"]  # as the versions before wrote it
    (work / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointMismatch, match=r"the painting's edge left out of its style \(another vidstyle"):
        vidstyle.render(bunny_short, [starry], out, config, overwrite=True)
    from vidstyle.checkpoint import WorkDir

    assert len(WorkDir(work).done_frames()) == 12, "the other render's frames are kept"


def test_frames_made_before_held_structure_existed_resume_with_held_structure_1(bunny_short: Path, starry: Path,
                                                                                tmp_path: Path) -> None:
    """A work directory whose manifest has no held_structure (the versions before it) was made as held_structure 1
    makes frames: resumed with that, refused with the default, naming the setting."""
    import json

    import vidstyle
    from vidstyle.errors import CheckpointMismatch
    from vidstyle.events import FrameStarted

    out, work = tmp_path / "out.mp4", tmp_path / "out.mp4.vidstyle-work"
    older = vidstyle.make_config("balanced", size=64, iters=1, first_iters=1, device="cpu", precision="fp32",
                                 keep_frames=True, held_structure=1.0)
    vidstyle.render(bunny_short, [starry], out, older)
    manifest = json.loads((work / "manifest.json").read_text())
    del manifest["settings"]["held_structure"]  # as the versions before wrote it
    (work / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointMismatch, match=r"held_structure \(1 before: made before the setting existed\)"):
        vidstyle.render(bunny_short, [starry], out, dataclasses.replace(older, held_structure=3.0), overwrite=True)
    started: list[object] = []
    vidstyle.render(bunny_short, [starry], out, older, overwrite=True,
                    on_event=lambda e: started.append(e) if isinstance(e, FrameStarted) else None)
    assert started == [], "every frame was resumed from the older work directory"


def test_only_frames_made_before_a_setting_existed_are_said_to_be() -> None:
    from vidstyle.checkpoint import Manifest

    def manifest(**settings: object) -> Manifest:
        return Manifest("0.1.0", "in", ("style",), (64, 36), 12, {"iters": 40, **settings})

    now, other, older = manifest(held_structure=3.0), manifest(held_structure=2.0), manifest()
    assert now.differences(other) == ["setting(s) held_structure (2 before)"]
    assert now.differences(older) == ["setting(s) held_structure (1 before: made before the setting existed)"]
    assert manifest(held_structure=1.0).differences(older) == []
    # The earlier value is one the user could give again: not an unset list, nor held_structure recorded as 1
    # where it shaped nothing, nor what the render records of itself; a number as it was given.
    assert manifest(style_blend=[0.7, 0.3]).differences(manifest(style_blend=[])) == ["setting(s) style_blend"]
    assert now.differences(manifest(held_structure=1.0)) == ["setting(s) held_structure"]
    assert manifest(temporal_weight=15.0).differences(manifest(temporal_weight=123.4567)) == \
        ["setting(s) temporal_weight (123.4567 before)"]
    assert manifest(style_layers="a").differences(manifest(style_layers="b")) == \
        ["setting(s) the network's style layers (another vidstyle version's)"]
    # The fast preset after a balanced render: its held_structure is recorded as 1 since nothing is held, which the
    # change of flow did, not the user.
    balanced = manifest(flow="dis+farneback", init="prev", temporal_weight=15.0, held_structure=3.0)
    fast = manifest(flow="none", init="prev", temporal_weight=15.0, held_structure=1.0)
    assert fast.differences(balanced) == ["setting(s) flow (dis+farneback before)"]
    given = manifest(flow="dis+farneback", init="prev", temporal_weight=15.0, held_structure=5.0)
    assert fast.differences(given) == ["setting(s) flow (dis+farneback before), held_structure (5 before)"], \
        "a value the user gave is named, to be given again with the flow"


def test_a_render_that_holds_no_frame_records_held_structure_as_frames_before_it_had_it() -> None:
    """Where nothing is held (flow none: the fast preset) held_structure shapes no frame, so such a render matches
    one made before the setting existed; where frames are held it is what was asked for."""
    import vidstyle

    assert vidstyle.make_config("fast").frames_dict()["held_structure"] == 1.0
    assert vidstyle.make_config("balanced").frames_dict()["held_structure"] == 3.0
    assert vidstyle.make_config("balanced", structure_weight=0.0).frames_dict()["held_structure"] == 1.0


def test_a_stop_while_the_video_is_written_from_finished_frames_says_so(bunny_short: Path, starry: Path,
                                                                         tmp_path: Path) -> None:
    """Every frame kept, the video written again from them (--overwrite): a stop then is not "at frame 12" of a
    12-frame clip, and the earlier video stays."""
    import vidstyle
    from vidstyle.errors import Interrupted
    from vidstyle.events import RenderStarted

    out = tmp_path / "o.mp4"
    config = vidstyle.make_config(size=32, iters=1, first_iters=1, flow="none", device="cpu", keep_frames=True)
    vidstyle.render(bunny_short, [starry], out, config)
    before = out.read_bytes()

    def stop_at_start(event: object) -> None:
        if isinstance(event, RenderStarted):
            assert event.resume_from == event.total_frames == 12
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="^interrupted while writing the video from its finished frames; run it "
                                          "again with the same settings to write it$"):
        vidstyle.render(bunny_short, [starry], out, config, overwrite=True, on_event=stop_at_start)
    assert out.read_bytes() == before
    assert not any(p.name.endswith(".partial.mp4") for p in tmp_path.iterdir())


def test_settings_that_act_only_along_the_flow_do_not_part_two_renders_without_flow() -> None:
    """The fast preset (flow none) recorded a temporal weight of 0 before every preset stood on the balanced one
    (15): its frames are the same, so such a render resumes; with flow on, a temporal weight is a difference."""
    from vidstyle.checkpoint import Manifest
    from vidstyle.config import make_config

    def manifest(config: object) -> Manifest:
        return Manifest("1", "in.mp4", ("s.jpg",), (64, 36), 12, config.frames_dict())  # type: ignore[attr-defined]

    now, before = make_config("fast"), dataclasses.replace(make_config("fast"), temporal_weight=0.0)
    assert now.temporal_weight == 15.0 and manifest(now).changed_settings(manifest(before)) == ()
    flowing = make_config("fast", flow="dis")
    assert manifest(flowing).changed_settings(manifest(dataclasses.replace(flowing, temporal_weight=5.0))) == \
        ("temporal_weight",)
    assert manifest(now).changed_settings(manifest(dataclasses.replace(now, iters=3))) == ("iters",)


def test_the_seed_parts_two_renders_only_where_it_draws_their_starts() -> None:
    """The seed draws init random's noise and nothing else: a render whose later frames start from the one before
    resumed only with the seed it was given, though any seed makes its frames."""
    from vidstyle.checkpoint import Manifest
    from vidstyle.config import make_config

    def manifest(**settings: object) -> Manifest:
        return Manifest("1", "in.mp4", ("s.jpg",), (64, 36), 12, make_config(**settings).frames_dict())

    assert manifest(seed=3).changed_settings(manifest()) == ()
    older = Manifest("1", "in.mp4", ("s.jpg",), (64, 36), 12, {**make_config().frames_dict(), "seed": 3})
    assert older.changed_settings(manifest()) == (), "as a manifest written before the seed was left out records it"
    assert manifest(init="random", seed=3).changed_settings(manifest(init="random")) == ("seed",)
    assert manifest(init="random", seed=3).changed_settings(manifest(seed=3)) == ("init", "seed")
