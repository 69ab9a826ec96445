"""Each cause of a failed or harmful render, as a user meets it: one clear line, nothing destroyed, nothing left."""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import child_ffmpeg_pids, ffmpeg

import vidstyle
from vidstyle.assets import resolve_style
from vidstyle.checkpoint import WorkDir
from vidstyle.cli import main
from vidstyle.config import make_config, preset_names, presets_dir, read_preset
from vidstyle.errors import (
    CheckpointMismatch,
    ConfigError,
    Interrupted,
    OutputExists,
    SettingError,
    UsageError,
    VidstyleError,
)
from vidstyle.events import FrameDone, FrameSaved, RenderStarted
from vidstyle.io.images import read_image, write_image
from vidstyle.io.probe import probe_video
from vidstyle.limits import advice, available_bytes, frame_bytes

TINY = ("--size", "32", "--iters", "1", "--first-iters", "2", "--device", "cpu", "--quiet")


def _tiny_config(**changes: object) -> vidstyle.Config:
    """The settings TINY gives on the command line, for renders made through the API."""
    settings: dict[str, object] = dict(size=32, iters=1, first_iters=2, device="cpu")
    settings.update(changes)
    return vidstyle.make_config("balanced", **settings)


@pytest.fixture(scope="module")
def tiny(lavfi_clip: Callable[..., Path]) -> Path:
    """3 frames, 64x36, with AAC audio."""
    return lavfi_clip("reliability_tiny.mp4", size="64x36", seconds=0.12)


def _listing(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for a directory)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, list[str]]:
    """main() in-process: its exit code and its stderr lines; no ffmpeg may outlive it."""
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert not child_ffmpeg_pids()
    return code, [line for line in err.strip().splitlines() if line.strip()]


def _refused(capsys: pytest.CaptureFixture[str], args: list[str], code: int, *patterns: str,
             folder: Path | None = None) -> str:
    """The command fails with `code` in one line matching every pattern, and `folder` is as it was before."""
    before = _listing(folder) if folder is not None else None
    got, lines = _run(capsys, args)
    assert got == code, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "Exception ignored" not in lines[0]
    for pattern in patterns:
        assert re.search(pattern, lines[0], re.IGNORECASE), f"{pattern!r} not in: {lines[0]}"
    if folder is not None:
        assert _listing(folder) == before, "a refused command changed the folder"
    return lines[0]


def _interrupted(clip: Path, style: Path, out: Path, config: vidstyle.Config, after: int = 1) -> set[int]:
    """Start an API render and stop it after `after` checkpoints are saved; returns the frames it finished."""
    stop, saved = threading.Event(), []

    def on_event(event: object) -> None:
        if isinstance(event, FrameSaved):
            saved.append(event.index)
            if len(saved) >= after:
                stop.set()

    with pytest.raises(Interrupted):
        vidstyle.render(clip, [style], out, config, on_event=on_event, stop=stop)
    return WorkDir(out.with_name(out.name + ".vidstyle-work")).done_frames()


# 1. --restart never deletes what vidstyle did not create ----------------------------------------------------------

def test_restart_refuses_a_folder_of_user_files(capsys, tiny: Path, starry: Path, tmp_path: Path) -> None:
    user = tmp_path / "my folder"
    (user / "frames").mkdir(parents=True)
    (user / "notes.txt").write_text("my notes\n")
    (user / "photo.png").write_bytes(b"\x89PNG not really")
    (user / "frames" / "0000000.png").write_bytes(b"my own frame")
    line = _refused(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(tmp_path / "o.mp4"),
                             "--workdir", str(user), "--restart", *TINY], 2,
                    "not a vidstyle work directory", folder=tmp_path)
    assert "--restart" not in line.split("not a vidstyle work directory", 1)[1], \
        f"the hint proposes --restart, the very flag that was just refused for this folder: {line}"
    assert line.endswith("move it, or choose another directory with --workdir"), line


def test_restart_with_workdir_dot_refuses_the_current_folder(capsys, monkeypatch, tiny: Path, starry: Path,
                                                            tmp_path: Path) -> None:
    shutil.copy(tiny, tmp_path / "clip.mp4")
    shutil.copy(starry, tmp_path / "style.jpg")
    (tmp_path / "notes.txt").write_text("do not delete\n")
    monkeypatch.chdir(tmp_path)
    _refused(capsys, ["render", "clip.mp4", "--style", "style.jpg", "-o", "out.mp4", "--workdir", ".", "--restart",
                      *TINY], 2, "work directory . holds the output out.mp4; choose one apart from the output's folder "
                      "with --workdir$", folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "notes.txt", "style.jpg"]
    # A folder of the user's that holds no output of this render: --restart still takes nothing that is not a
    # work directory of vidstyle's.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine too\n")
    _refused(capsys, ["render", "clip.mp4", "--style", "style.jpg", "-o", "out.mp4", "--workdir", "mine",
                      "--restart", *TINY], 2, "not a vidstyle work directory", folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "mine", "notes.txt", "style.jpg"]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine too\n"


def test_restart_of_a_real_work_directory_keeps_the_users_files(capsys, tiny: Path, starry: Path,
                                                                tmp_path: Path) -> None:
    work = tmp_path / "work"
    base = ["render", str(tiny), "--style", str(starry), "--workdir", str(work), *TINY]
    assert _run(capsys, [*base, "-o", str(tmp_path / "a.mp4"), "--keep-frames"])[0] == 0
    assert (work / "manifest.json").is_file() and WorkDir(work).done_frames() == {0, 1, 2}
    (work / "notes.txt").write_text("mine\n")
    (work / "frames" / "mine.txt").write_text("mine too\n")
    code, lines = _run(capsys, [*base, "-o", str(tmp_path / "b.mp4"), "--restart"])
    assert (work / "notes.txt").read_text() == "mine\n", "the user's file was deleted"
    assert (work / "frames" / "mine.txt").read_text() == "mine too\n", "the user's file was deleted"
    assert code == 0, f"--restart of vidstyle's own work directory (holding a user's file) failed: {lines}"
    assert probe_video(tmp_path / "b.mp4").frame_count == 3
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*")) == ["frames", "frames/mine.txt", "notes.txt"]


def test_success_removes_only_the_work_directory_vidstyle_created(capsys, tiny: Path, starry: Path,
                                                                  tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    base = ["render", str(tiny), "--style", str(starry), *TINY]
    assert _run(capsys, [*base, "-o", str(tmp_path / "a.mp4"), "--workdir", str(mine)])[0] == 0
    assert mine.is_dir() and list(mine.iterdir()) == [], "the user's (empty) work directory is kept, and empty"
    assert _run(capsys, [*base, "-o", str(tmp_path / "b.mp4")])[0] == 0
    assert not (tmp_path / "b.mp4.vidstyle-work").exists(), "the work directory vidstyle made is removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "mine"]


# 2. A rejected option leaves nothing, and the corrected command then works ----------------------------------------

@pytest.mark.parametrize("flags, flag, fixed", [
    (["--precision", "fp16"], "--precision", ["--precision", "fp32"]),
    (["--style-blend", "0.5,0.5"], "--style-blend", ["--style-blend", "1"]),
    (["--style-weight", "nan"], "--style-weight", None),
    (["--device", "cuda"], "--device", None),
    (["--cut-threshold", "2"], "--cut-threshold", None),
    (["--seed", "18446744073709551616"], "--seed", None),
])
def test_a_rejected_option_leaves_nothing(capsys, tiny: Path, starry: Path, tmp_path: Path, flags: list[str],
                                         flag: str, fixed: list[str] | None) -> None:
    if flag == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "out.mp4"
    base = ["render", str(tiny), "--style", str(starry), "-o", str(out), *TINY]
    _refused(capsys, [*base, *flags], 2, re.escape(flag), folder=tmp_path)
    assert list(tmp_path.iterdir()) == [], "no work directory, partial file or output"
    if fixed is not None:
        assert _run(capsys, [*base, *fixed])[0] == 0
        assert probe_video(out).frame_count == 3
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


# 3. Disk full while creating the work directory ------------------------------------------------------------------

def test_disk_full_while_creating_the_work_directory_leaves_nothing(capsys, monkeypatch, tiny: Path, starry: Path,
                                                                    tmp_path: Path) -> None:
    real_fsync = os.fsync
    refused = []

    def fsync(fd: int) -> None:
        if "manifest.json" in os.readlink(f"/proc/self/fd/{fd}"):
            refused.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    args = ["render", str(tiny), "--style", str(starry), "-o", str(tmp_path / "out.mp4"), *TINY]
    _refused(capsys, args, 1, "work directory", "No space left", folder=tmp_path)
    assert refused, "the manifest was written without fsync"
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert _run(capsys, args)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_a_work_directory_whose_disk_cannot_hold_the_checkpoints_is_said_so_at_the_start(
        monkeypatch, tiny: Path, starry: Path, tmp_path: Path) -> None:
    """A long render wrote a checkpoint a frame until the disk was full, hours in, without a word before."""
    import shutil

    from vidstyle.events import RenderStarted

    real = shutil.disk_usage
    free: list[int] = []

    def usage(path: str | os.PathLike[str]) -> object:
        whole = real(path)
        return whole._replace(free=free[0]) if free else whole

    monkeypatch.setattr(shutil, "disk_usage", usage)

    def notes(**changes: object) -> tuple[str, ...]:
        started: list[RenderStarted] = []
        vidstyle.render(tiny, [starry], tmp_path / "out.mp4", _tiny_config(**changes), overwrite=True,
                        on_event=lambda e: started.append(e) if isinstance(e, RenderStarted) else None)
        return started[0].notes

    assert not [n for n in notes() if "disk" in n], "room enough"
    free.append(9000)
    assert not [n for n in notes() if "disk" in n], "3 frames of 32x18, about 2.3 bytes a pixel: 4 kB"
    free[0] = 2000
    assert ("the checkpoints still to write take about 4 kB, and the work directory's disk has 2 kB free: the "
            "render stops when it is full (free some space, or choose another workdir, then run it again: it "
            "resumes)") in notes()
    # With a second pass, the shot's frames of the first are kept aside too until its second is done.
    assert any(n.startswith("the checkpoints still to write take about 8 kB") for n in notes(passes=2))


# 4. Ctrl-C --------------------------------------------------------------------------------------------------------

def _start_cli(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """`python -m vidstyle` in its own process group, so a Ctrl-C can reach it the way a terminal sends one."""
    return subprocess.Popen([sys.executable, "-m", "vidstyle", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _ctrl_c(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGINT)


# The `vidstyle` command as its entry point runs it, after telling the parent on stdout that its module (vidstyle's
# light package and __main__, which import nothing slow) is loaded: a Ctrl-C before that point lands in Python's own
# start-up and import machinery (with `python -m`, runpy compiling __main__.py), which no program's code can reach,
# and a machine under load makes that point move. SIGINT is put back to Python's own handler first, as a terminal's
# child has it: a process inherits an ignored SIGINT, and a library used earlier in this test process (Ray) may have
# left it ignored here.
_AFTER_START_UP = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "from vidstyle.__main__ import run; sys.argv[0] = 'vidstyle'; print('ready', flush=True); "
                   "sys.exit(run())")


def _start_after_python(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _AFTER_START_UP, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tiny: Path, starry: Path, tmp_path: Path) -> None:
    args = ["render", str(tiny), "--style", str(starry), "-o", "out.mp4", "--size", "32", "--iters", "50",
            "--first-iters", "50", "--device", "cpu", "--quiet"]
    results = []
    for delay in (0.02, 0.1, 0.3, 0.6, 1.0):  # runpy finds and imports the package within the first few ms
        proc = _start_after_python(args, tmp_path)
        time.sleep(delay)
        _ctrl_c(proc)
        _, err = proc.communicate(timeout=120)
        results.append((delay, proc.returncode, err))
    for delay, code, err in results:
        lines = err.strip().splitlines()
        assert "Traceback" not in err and "Exception ignored" not in err, f"at +{delay}s: {err}"
        assert len(lines) == 1 and lines[0].startswith("vidstyle: interrupted"), f"at +{delay}s: {err!r}"
        assert code == 130, f"Ctrl-C at +{delay}s after Python's start-up ended with {code}, printing {lines}"
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob(".out.mp4.partial*"))


def test_two_ctrl_c_during_a_render_then_the_same_command_resumes(capsys, bunny_short: Path, starry: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    args = ["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--size", "32", "--iters", "3",
            "--first-iters", "4", "--device", "cpu", "--seed", "1", "--quiet"]
    proc = _start_cli(args, tmp_path)
    work = WorkDir(tmp_path / "out.mp4.vidstyle-work")
    deadline = time.monotonic() + 120
    while not work.done_frames():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    _ctrl_c(proc)
    time.sleep(0.02)
    _ctrl_c(proc)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 130, err
    assert "Exception ignored" not in err and "Traceback" not in err, err
    assert len(lines) == 1 and "interrupted at frame" in lines[0], lines
    assert not out.exists() and not list(tmp_path.glob(".out.mp4.partial*"))
    done = len(work.done_frames())
    assert 1 <= done < 12
    code, lines = _run(capsys, args[:-1])  # the same command, with its progress messages
    assert code == 0, lines
    assert any("resuming at frame" in line for line in lines), lines
    assert probe_video(out).frame_count == 12


# 5. Sizes ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def panorama(lavfi_clip: Callable[..., Path]) -> Path:
    return lavfi_clip("reliability_panorama.mp4", size="640x40", seconds=0.12, audio=False)


@pytest.mark.parametrize("clip, size, smallest", [("bunny", "16", 28), ("bunny", "17", 28), ("panorama", "64", 240)])
def test_a_size_too_small_names_the_smallest_that_works(capsys, bunny_short: Path, panorama: Path, starry: Path,
                                                        tmp_path: Path, clip: str, size: str, smallest: int) -> None:
    source = bunny_short if clip == "bunny" else panorama
    out = tmp_path / "out.mp4"
    base = ["render", str(source), "--style", str(starry), "-o", str(out), *TINY]
    _refused(capsys, [*base, "--size", size], 2, "--size", rf"\b{smallest}\b", folder=tmp_path)
    if clip == "panorama":
        assert _run(capsys, [*base, "--size", str(smallest)])[0] == 0, "the suggested size does not work"
        info = probe_video(out)
        assert (info.width, info.height, info.frame_count) == (smallest, 16, 3)


def test_image_too_small_for_a_wide_picture(capsys, starry: Path, tmp_path: Path) -> None:
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.full((50, 400, 3), 120, np.uint8))
    _refused(capsys, ["image", str(wide), "--style", str(starry), "-o", str(tmp_path / "o.png"), "--size", "32",
                      "--iters", "1", "--device", "cpu", "--quiet"], 2, "--size", r"\b120\b", folder=tmp_path)


@pytest.mark.parametrize("size", ["1x1", "4000x2"])
def test_a_picture_too_small_for_any_size_blames_the_picture_not_the_size(capsys, starry: Path,
                                                                          tmp_path_factory: pytest.TempPathFactory,
                                                                          tmp_path: Path, size: str) -> None:
    """No --size can make a 1x1 or 4000x2 video paintable (it is never enlarged): the refusal named --size, as a
    usage error, and the 1x1 picture as 2x1."""
    source = tmp_path_factory.mktemp("tiny") / f"{size}.mkv"
    ffmpeg("-f", "lavfi", "-i", f"color=c=gray:size={size}:duration=0.08:rate=25", "-c:v", "ffv1", str(source))
    width, height = size.split("x")
    line = _refused(capsys, ["render", str(source), "--style", str(starry), "-o", str(tmp_path / "o.mp4"), *TINY],
                    1, rf"the picture is {width}x{height}, too small to stylize", "does not enlarge", folder=tmp_path)
    assert "--size" not in line


def test_a_size_beyond_memory_is_refused_at_once(capsys, starry: Path, tmp_path: Path,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    free = available_bytes(torch.device("cpu"))
    if free is None or frame_bytes((8192, 4608), None) < free:
        pytest.skip("this machine could hold an 8192 px frame")
    # A source as large as the size asked for: a smaller one is rendered at its own size, never enlarged.
    huge = tmp_path_factory.mktemp("huge") / "huge.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=8192x4608:duration=0.08:rate=25", "-c:v", "ffv1", str(huge))
    started = time.monotonic()
    _refused(capsys, ["render", str(huge), "--style", str(starry), "-o", str(tmp_path / "o.mp4"), "--size",
                      "8192", "--device", "cpu", "--precision", "fp32", "--quiet"], 2, "--size", "fits",
             folder=tmp_path)
    assert time.monotonic() - started < 20
    assert list(tmp_path.iterdir()) == []


# 6. Numeric settings and preset files -----------------------------------------------------------------------------

@pytest.mark.parametrize("flags, flag", [
    (["--content-weight", "nan"], "--content-weight"),
    (["--style-weight", "inf"], "--style-weight"),
    (["--tv-weight", "-1"], "--tv-weight"),
    (["--temporal-weight=-inf"], "--temporal-weight"),
    (["--style-blend", "nan"], "--style-blend"),
    (["--adam-lr", "0"], "--adam-lr"),
    (["--prev-weight", "2"], "--prev-weight"),
])
def test_impossible_numbers_name_their_flag(capsys, tiny: Path, starry: Path, tmp_path: Path, flags: list[str],
                                            flag: str) -> None:
    _refused(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(tmp_path / "o.mp4"), *TINY, *flags],
             2, re.escape(flag), folder=tmp_path)


@pytest.mark.parametrize("name", ["x.TOML", "mine"])
def test_a_preset_file_of_any_name_is_read_as_toml(capsys, tiny: Path, starry: Path, tmp_path: Path,
                                                   name: str) -> None:
    preset = tmp_path / name
    preset.write_text("size = 48\n")
    out = tmp_path / "o.mp4"
    code, lines = _run(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(out), "--config", str(preset),
                                "--iters", "1", "--first-iters", "2", "--device", "cpu"])
    assert code == 0, lines
    assert any("rendering 3 frames at 48x28" in line for line in lines), lines
    info = probe_video(out)
    assert (info.width, info.height) == (48, 28)


def test_a_preset_name_is_the_built_in_preset_whatever_the_current_folder_holds(monkeypatch,
                                                                              tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "balanced").mkdir()
    (tmp_path / "fast").write_text("size = 17\n")
    (tmp_path / "mine").write_text("size = 48\n")
    assert make_config().size == read_preset("balanced")["size"]
    assert make_config("fast").size != 17 and make_config("./fast").size == 17
    assert make_config("mine").size == 48, "a name that is no built-in preset is still a file"


@pytest.mark.parametrize("name", ["nope.toml", "./nope", "sub/nope"])
def test_a_missing_preset_file(capsys, monkeypatch, tiny: Path, starry: Path, tmp_path: Path, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    _refused(capsys, ["render", str(tiny), "--style", str(starry), "-o", "o.mp4", "--config", name, *TINY], 2,
             f"preset file not found: {re.escape(name)}$", folder=tmp_path)  # as typed: "./nope" lost its "./"


def test_a_preset_saved_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    """Some editors (Notepad) begin UTF-8 with the mark: the file was "malformed" at line 1, column 1."""
    preset = tmp_path / "mine.toml"
    preset.write_bytes("\ufeffsize = 48\n".encode())
    assert make_config(preset).size == 48


def test_a_preset_that_is_a_pipe_is_refused_as_not_a_file(capsys, tiny: Path, starry: Path, tmp_path: Path) -> None:
    """`--config <(...)`: a pipe is read once, and the preset is read more than once; it was "not found"."""
    pipe, out = tmp_path / "settings", tmp_path / "out"
    os.mkfifo(pipe)
    out.mkdir()
    _refused(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(out / "o.mp4"), "--config",
                      str(pipe), *TINY], 2, f"preset {re.escape(str(pipe))} is not a regular file; save the settings "
                                            "to a TOML file", folder=out)


def test_image_iters_zero_names_iters(capsys, starry: Path, tmp_path: Path) -> None:
    content = tmp_path / "c.png"
    cv2.imwrite(str(content), np.full((36, 64, 3), 90, np.uint8))
    line = _refused(capsys, ["image", str(content), "--style", str(starry), "-o", str(tmp_path / "o.png"), "--iters",
                             "0", "--size", "32", "--device", "cpu"], 2, "--iters", folder=tmp_path)
    assert "--first-iters" not in line and "first_iters" not in line


# 7. Internal errors become one clear line -------------------------------------------------------------------------

def test_a_workdir_that_is_a_file(capsys, tiny: Path, starry: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.write_bytes(b"my file")
    line = _refused(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(tmp_path / "o.mp4"),
                             "--workdir", str(work), *TINY], 2, "is a file", folder=tmp_path)
    assert str(work) in line


def test_a_workdir_in_a_folder_that_does_not_exist_is_refused_and_nothing_is_made(capsys, tiny: Path, starry: Path,
                                                                                    tmp_path: Path) -> None:
    work = tmp_path / "missing" / "deeper" / "work"
    line = _refused(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(tmp_path / "o.mp4"),
                             "--workdir", str(work), *TINY], 1, "work directory's folder does not exist",
                    folder=tmp_path)
    assert str(work.parent) in line and not (tmp_path / "missing").exists()


def test_an_output_that_is_a_directory_is_refused_before_rendering(capsys, bunny_short: Path, starry: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.mkdir()
    (out / "inside.txt").write_text("keep\n")
    started = time.monotonic()
    _refused(capsys, ["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--overwrite", "--device",
                      "cpu", "--quiet"], 2, "is a directory", folder=tmp_path)
    assert time.monotonic() - started < 10, "the default 512 px render started before the output was checked"


def test_a_damaged_manifest_is_one_line_and_restart_works(capsys, tiny: Path, starry: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    base = ["render", str(tiny), "--style", str(starry), "--workdir", str(work), *TINY]
    assert _run(capsys, [*base, "-o", str(tmp_path / "a.mp4"), "--keep-frames"])[0] == 0
    manifest = work / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"frame_count": 3', '"frame_count": "3"'))
    assert '"frame_count": "3"' in manifest.read_text()
    out = tmp_path / "b.mp4"
    _refused(capsys, [*base, "-o", str(out)], 2, "manifest", "damaged", "--restart", folder=tmp_path)
    code, lines = _run(capsys, [*base, "-o", str(out), "--restart"])
    assert code == 0, lines
    assert probe_video(out).frame_count == 3


def test_a_render_on_one_machine_takes_over_one_left_by_workers(capsys, tiny: Path, starry: Path,
                                                                tmp_path: Path) -> None:
    """A render on several workers, interrupted, leaves overlap frames and task markers in chunks/. The same
    output rendered again on one machine (--restart) removes them with its checkpoints: left, they made the work
    directory someone else's folder to every later render."""
    out, work = tmp_path / "out.mp4", tmp_path / "out.mp4.vidstyle-work"
    args = ["render", str(tiny), "--style", str(starry), "-o", str(out), *TINY]
    assert _run(capsys, [*args, "--keep-frames"])[0] == 0
    for name in ("lead/0000001.png", "tail/0000002.png", "running/0000000.1.host.123"):
        (work / "chunks" / name).parent.mkdir(parents=True, exist_ok=True)
        (work / "chunks" / name).write_bytes(b"left by a worker")
    out.unlink()
    assert _run(capsys, [*args, "--restart"])[0] == 0
    assert not work.exists(), "the work directory went whole, chunks/ with it"
    out.unlink()
    assert _run(capsys, args)[0] == 0


@pytest.mark.parametrize("workdir", ["out.mp4", "./.out.mp4.partial.mp4"])
def test_a_work_directory_named_as_the_output_is_refused_before_the_render(capsys, tiny: Path, starry: Path,
                                                                           tmp_path: Path, workdir: str) -> None:
    _refused(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(tmp_path / "out.mp4"), "--workdir",
                      str(tmp_path / workdir), *TINY], 2, "work directory .* is the output's own path",
             folder=tmp_path)


def test_a_work_directory_that_holds_the_output_is_refused_before_anything(tiny: Path, starry: Path,
                                                                          tmp_path: Path) -> None:
    """Empty, it passed every check; the output's partial file, made first, was then taken for someone else's
    file in it (and a finished render removes its work directory)."""
    for folder, output in (("empty", "empty/o.mp4"), ("above", "above/in/o.mp4")):
        (tmp_path / output).parent.mkdir(parents=True)
        with pytest.raises(UsageError, match=f"^the work directory .*{folder} holds the output .*o.mp4; choose a "
                                             "work directory apart from the output's folder$"):
            vidstyle.render(tiny, [starry], tmp_path / output, _tiny_config(), workdir=tmp_path / folder)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["above", "above/in", "empty"]


@pytest.mark.parametrize("others", [("lock", "index.html"), ()])
def test_a_restart_leaves_a_folder_whose_manifest_is_someone_elses(capsys, tiny: Path, starry: Path, tmp_path: Path,
                                                                   others: tuple[str, ...]) -> None:
    """A web app's folder named as the work directory: its manifest.json does not parse as vidstyle's, and a
    restart (which discards a damaged work directory of vidstyle's) must not take it, or the files beside it."""
    work = tmp_path / "site"
    work.mkdir()
    (work / "manifest.json").write_text('{"name": "My app", "start_url": "/"}\n')
    for name in others:
        (work / name).write_text("theirs\n")
    before = {p.name: p.read_text() for p in work.iterdir()}
    out = tmp_path / "out.mp4"
    for restart in ((), ("--restart",)):
        _refused(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(out), "--workdir", str(work),
                          *TINY, *restart], 2, "not recognisably a vidstyle work directory",
                 "nothing in it was touched", folder=tmp_path)
        assert {p.name: p.read_text() for p in work.iterdir()} == before
    assert not out.exists()


def test_a_manifest_gone_to_garbage_beside_vidstyles_frames_is_still_discarded_by_a_restart(
        capsys, tiny: Path, starry: Path, tmp_path: Path) -> None:
    """Its frames say whose folder it is, and a file manager's .DS_Store beside them does not make it someone else's."""
    work = tmp_path / "work"
    base = ["render", str(tiny), "--style", str(starry), "--workdir", str(work), *TINY]
    assert _run(capsys, [*base, "-o", str(tmp_path / "a.mp4"), "--keep-frames"])[0] == 0
    (work / "manifest.json").write_bytes(b"\x00" * 64)
    (work / ".DS_Store").write_bytes(b"Bud1")
    out = tmp_path / "b.mp4"
    _refused(capsys, [*base, "-o", str(out)], 2, "manifest", "damaged", "--restart", folder=tmp_path)
    assert _run(capsys, [*base, "-o", str(out), "--restart"])[0] == 0
    assert probe_video(out).frame_count == 3
    assert sorted(p.name for p in work.iterdir()) == [".DS_Store"], "ours went; the litter stays, with its folder"


def test_a_checkpoint_of_the_wrong_size_is_named(capsys, tiny: Path, starry: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    done = _interrupted(tiny, starry, out, _tiny_config())
    assert 0 in done and len(done) < 3
    bad = tmp_path / "out.mp4.vidstyle-work" / "frames" / "0000000.png"
    cv2.imwrite(str(bad), np.zeros((10, 10, 3), np.uint8))
    _refused(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(out), *TINY], 2, re.escape(str(bad)),
             "10x10", "--restart", folder=tmp_path)


def test_a_damaged_checkpoint_is_named_and_deleting_it_is_enough(capsys, tiny: Path, starry: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    done = _interrupted(tiny, starry, out, _tiny_config())
    assert 0 in done and len(done) < 3
    bad = tmp_path / "out.mp4.vidstyle-work" / "frames" / "0000000.png"
    bad.write_bytes(b"not a picture")
    args = ["render", str(tiny), "--style", str(starry), "-o", str(out), *TINY]
    code, lines = _run(capsys, args)
    assert code == 1 and len(lines) == 1, lines
    assert str(bad) in lines[0] and "delete that file to make the frame again, or use --restart" in lines[0], lines
    assert lines[0].count("--restart") == 1, "the advice once, in the flag's words"
    assert not out.exists()
    bad.unlink()
    assert _run(capsys, args)[0] == 0
    assert probe_video(out).frame_count == 3


# 8. Two renders of one output at once -----------------------------------------------------------------------------

def test_a_second_render_of_the_same_output_is_refused(capsys, bunny_short: Path, starry: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    args = ["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--size", "32", "--iters", "3",
            "--first-iters", "4", "--device", "cpu", "--quiet"]
    first = _start_cli(args, tmp_path)
    work = WorkDir(tmp_path / "out.mp4.vidstyle-work")
    deadline = time.monotonic() + 120
    while not work.done_frames():
        assert first.poll() is None, first.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    frames = _listing(work.path / "frames")
    _refused(capsys, args, 1, "another vidstyle render is writing", re.escape(str(out)))
    _refused(capsys, [*args[:5], str(tmp_path / "other.mp4"), *args[6:], "--workdir", str(work.path)], 1,
             "another vidstyle render is writing", "work directory")
    assert first.poll() is None, "the first render ended before the second was tried: the test proves nothing"
    assert not (tmp_path / "other.mp4").exists() and not list(tmp_path.glob(".other.mp4.partial*"))
    assert all(_listing(work.path / "frames").get(name) == data for name, data in frames.items())
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert probe_video(out).frame_count == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


# 9. Input identity -------------------------------------------------------------------------------------------------

def test_a_changed_input_under_the_same_name_size_and_time_is_refused(capsys, starry: Path, tmp_path: Path) -> None:
    source = ["-f", "lavfi", "-i", "testsrc2=size=64x36:rate=25:duration=0.48"]
    raw = ["-c:v", "rawvideo", "-pix_fmt", "yuv420p"]
    first, second = tmp_path / "first.avi", tmp_path / "second.avi"
    ffmpeg(*source, *raw, str(first))
    ffmpeg(*source, "-vf", "drawbox=x=0:y=0:w=16:h=16:color=red:t=fill:enable='eq(n,6)'", *raw, str(second))
    a, b = first.read_bytes(), second.read_bytes()
    assert len(a) == len(b) and a != b
    differ = [i for i in range(len(a)) if a[i] != b[i]]
    assert len(a) // 4 < differ[0] and differ[-1] < len(a) * 3 // 4, "the files differ only in the middle"
    clip = tmp_path / "clip.avi"
    shutil.copy2(first, clip)
    stamp = clip.stat().st_mtime_ns
    out = tmp_path / "out.mp4"
    done = _interrupted(clip, starry, out, _tiny_config())
    assert 0 < len(done) < 12
    work = tmp_path / "out.mp4.vidstyle-work"
    kept = _listing(work)
    clip.write_bytes(b)
    os.utime(clip, ns=(stamp, stamp))
    _refused(capsys, ["render", str(clip), "--style", str(starry), "-o", str(out), *TINY], 2, "the input video",
             "--restart")
    assert _listing(work) == kept, "the checkpoints of the first input were touched"
    assert not out.exists()


# 10. Audio the container cannot hold ------------------------------------------------------------------------------

def test_opus_audio_into_mov_is_re_encoded_and_said_up_front(capsys, starry: Path, tmp_path: Path) -> None:
    clip = tmp_path / "opus.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x36:rate=25:duration=0.12", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=0.12", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "libopus", str(clip))
    assert probe_video(clip).audio_codecs == ("opus",)
    out = tmp_path / "out.mov"
    assert main(["render", str(clip), "--style", str(starry), "-o", str(out), *TINY[:-1]]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("rendering 3 frames at 32x18"), lines
    assert lines[1].startswith("audio: re-encode opus to AAC"), f"the note does not come before the work: {lines}"
    assert probe_video(out).audio_codecs == ("aac",)


# 11. Names --------------------------------------------------------------------------------------------------------

def test_names_that_look_like_urls_or_patterns(capsys, monkeypatch, tiny: Path, lavfi_clip: Callable[..., Path],
                                               starry: Path, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(tiny, tmp_path / "file:b.mp4")
    decoy = lavfi_clip("reliability_decoy.mp4", size="64x36", seconds=0.2)
    shutil.copy(decoy, tmp_path / "b.mp4")
    decoy_bytes = (tmp_path / "b.mp4").read_bytes()
    assert probe_video(tmp_path / "b.mp4").frame_count == 5
    for name in ("file:o.mp4", "o[1].mp4"):
        assert _run(capsys, ["render", "file:b.mp4", "--style", str(starry), "-o", name, *TINY])[0] == 0
        assert probe_video(tmp_path / name).frame_count == 3, f"{name} was not made from file:b.mp4"
    assert (tmp_path / "b.mp4").read_bytes() == decoy_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.mp4", "file:b.mp4", "file:o.mp4", "o[1].mp4"]


def test_a_setting_given_where_the_others_leave_it_unused_is_refused_but_a_presets_own_value_is_not() -> None:
    with pytest.raises(SettingError, match="needs flow") as caught:
        make_config("fast", temporal_weight=5.0)  # the fast preset has no flow
    assert caught.value.setting == "temporal_weight"
    with pytest.raises(SettingError, match="Adam") as caught:
        make_config(optimizer="lbfgs", adam_lr=0.1)
    assert caught.value.setting == "adam_lr"
    with pytest.raises(SettingError, match=r"after 10 iterations: it needs iters over 10 \(iters is 10\)$") as caught:
        make_config("fast", tol=0.01)  # the fast preset's 10 iterations: a frame never stops early
    assert caught.value.setting == "tol"
    assert make_config("fast").tol > 0 and make_config("fast", iters=11, tol=0.01).tol == 0.01
    # Turned off, or left to the preset, a setting is no request: the balanced preset's temporal weight with no flow.
    assert make_config("fast", temporal_weight=0.0, change_tolerance=0.0).flow == "none"
    assert make_config(flow="none").temporal_weight == read_preset("balanced")["temporal_weight"]
    assert make_config(optimizer="adam", adam_lr=0.1).adam_lr == 0.1


def test_every_preset_stands_on_the_balanced_preset(tmp_path: Path) -> None:
    mine = tmp_path / "mine.toml"
    mine.write_text("size = 100\n")
    balanced = make_config()
    config = make_config(str(mine))
    assert config.size == 100, "the file's own setting"
    # What it leaves out is the balanced preset's, not the library's bare default (no flow, no temporal loss).
    assert (config.flow, config.temporal_weight) == (balanced.flow, balanced.temporal_weight) != ("none", 0.0)
    assert make_config("fast").flow == "none", "a built-in preset is as it is written"
    assert make_config(Path("fast")) == make_config("fast"), "a Path names the preset as its text does"
    for name in preset_names():  # a built-in preset stands on the balanced preset as a file of one's own does
        assert make_config(name) == make_config(presets_dir() / f"{name}.toml"), f"{name}: by its name, by its file"
    assert make_config("fast", flow="dis").temporal_weight == balanced.temporal_weight > 0, "fast, flow turned on"
    # The file's own values are asked for, as overrides are: a pair of them that leaves one unused is refused,
    # naming the file; a value the file leaves to balanced is not.
    mine.write_text('flow = "none"\ntemporal_weight = 3.0\n')
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(mine))}: temporal_weight weighs a loss along"):
        make_config(str(mine))
    mine.write_text('flow = "none"\n')
    assert make_config(str(mine)).flow == "none"


def test_inputs_the_library_cannot_use_are_refused_in_its_own_words(capsys, tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="^input_path must name a file"):
        vidstyle.render(5, ["starry-night"], tmp_path / "o.mp4", _tiny_config())  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="^workdir must name a folder"):
        vidstyle.render(tiny, ["starry-night"], tmp_path / "o.mp4", _tiny_config(), workdir=5)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="^stylizer must be a vidstyle.Stylizer"):
        vidstyle.render(tiny, ["starry-night"], tmp_path / "o.mp4", _tiny_config(), stylizer="x")  # type: ignore[arg-type]
    with pytest.raises(VidstyleError, match="^style is empty"):
        vidstyle.render(tiny, [""], tmp_path / "o.mp4", _tiny_config())
    with pytest.raises(VidstyleError, match="names a folder"):
        vidstyle.render(tiny, ["starry-night"], f"{tmp_path}/new/", _tiny_config())
    code, err = _run(capsys, ["render", str(tmp_path), "--style", "starry-night", *TINY])  # no -o: named from it
    assert code == 1 and err == [f"vidstyle: error: input is a directory, not a video: {tmp_path}"]
    code, err = _run(capsys, ["render", str(tiny), "--style", "starry-night", "-o", f"{tmp_path}/new/", *TINY])
    assert code == 1 and "names a folder that does not exist" in err[0] and len(err) == 1  # as a missing folder
    code, err = _run(capsys, ["render", str(tiny), "--style", "starry-night", "-o", "", *TINY])  # -o "$UNSET"
    assert code == 2 and "-o/--output: is empty; name the output file" in err[0] and len(err) == 1
    for flags in (["render", str(tiny), "--style", "starry-night", "--workdir", ""],
                  ["image", str(tiny), "--style", "starry-night", "--animation", ""],
                  ["render", str(tiny), "--style", "starry-night", "--log-json", ""],
                  ["metrics", str(tiny), "--source", ""], ["serve", "--data", ""]):
        code, err = _run(capsys, flags)
        assert code == 2 and len(err) == 1 and f"argument {flags[-2]}: is empty; name a file or folder" in err[0], err
    code, err = _run(capsys, ["render", str(tiny), "--style", "starry-night", "--config", "", *TINY])
    assert code == 2 and len(err) == 1 and "argument --config: is empty; name a preset" in err[0], err
    for flags, name in ((["render", "", "--style", "starry-night", *TINY], "input"),  # not "a directory: ."
                        (["image", "", "--style", "starry-night", "-o", str(tmp_path / "o.png")], "content"),
                        (["preview", "", "--style", "starry-night"], "input"), (["metrics", ""], "output")):
        code, err = _run(capsys, flags)
        assert code == 2 and len(err) == 1 and f"argument {name}: is empty; name a file" in err[0], err
    with pytest.raises(VidstyleError, match="^preset is empty"):  # not taken as None, which drops the flow
        make_config("")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("native_bf16", [True, False])
def test_a_size_that_does_not_fit_suggests_bf16_only_where_it_is_not_emulated(monkeypatch, native_bf16: bool) -> None:
    monkeypatch.setattr(vidstyle.precision, "_cpu_has_bf16", lambda: native_bf16)
    free = frame_bytes((1024, 576), None) // 2
    hint = advice((1024, 576), None, free, torch.device("cpu"))
    assert hint.startswith("size ") and " fits" in hint
    assert ("bf16" in hint) == native_bf16  # emulated bf16 is many times slower than fp32: no help there


def test_a_file_of_the_users_where_the_partial_output_goes_is_never_taken_over(capsys, tiny: Path, starry: Path,
                                                                               tmp_path: Path) -> None:
    out = tmp_path / "z.mp4"
    theirs = tmp_path / ".z.mp4.partial.mp4"
    theirs.write_text("precious")
    code, err = _run(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(out), *TINY])
    assert code == 1 and len(err) == 1 and f"{theirs} is in the way" in err[0], err
    assert theirs.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == [theirs.name]
    # An empty folder named as the work directory holds no render's checkpoints: it does not make the file a run's.
    (tmp_path / "work").mkdir()
    code, err = _run(capsys, ["render", str(tiny), "--style", str(starry), "-o", str(out), "--workdir",
                              str(tmp_path / "work"), *TINY])
    assert code == 1 and len(err) == 1 and f"{theirs} is in the way" in err[0], err
    assert theirs.read_text() == "precious" and not any((tmp_path / "work").iterdir())


def test_an_output_that_appears_while_rendering_is_kept_and_the_frames_too(lavfi_clip, starry, tmp_path) -> None:
    """Without overwrite, a file put at the output path while the render ran is not replaced by it; the render's
    frames stay, so the run that does replace it (overwrite) only encodes them."""
    clip = lavfi_clip("appears.mp4", seconds=0.2, audio=False)
    out = tmp_path / "out.mp4"
    config = make_config("fast", size=48, iters=1, first_iters=2, device="cpu", flow="none")

    def someone_writes_it(event) -> None:
        if isinstance(event, FrameDone) and not out.exists():
            out.write_bytes(b"theirs")

    with pytest.raises(OutputExists, match="appeared while this render ran"):
        vidstyle.render(clip, [starry], out, config, on_event=someone_writes_it)
    assert out.read_bytes() == b"theirs"
    assert not list(tmp_path.glob(".out.mp4.partial*"))
    work = WorkDir(tmp_path / "out.mp4.vidstyle-work")
    assert work.done_frames() == set(range(5))
    events: list = []
    vidstyle.render(clip, [starry], out, config, overwrite=True, on_event=events.append)
    assert not any(isinstance(e, FrameDone) for e in events), "the kept frames are encoded, none painted again"
    assert any(isinstance(e, RenderStarted) for e in events)
    assert probe_video(out).frame_count == 5


def test_a_work_directory_left_before_its_first_frame_takes_changed_settings(lavfi_clip, starry, tmp_path) -> None:
    """A render that stopped before its first frame (here a failing event handler; a missing model or too little
    memory alike) protects nothing: the same render with another size is not refused as another render's. One
    with a frame still is."""
    clip = lavfi_clip("first_frame.mp4", seconds=0.12, audio=False)
    out = tmp_path / "out.mp4"
    work = WorkDir(tmp_path / "out.mp4.vidstyle-work")
    config = make_config("fast", size=48, iters=1, first_iters=2, device="cpu", flow="none")

    def fail_at(kind: type) -> Callable[[object], None]:
        def handler(event: object) -> None:
            if isinstance(event, kind):
                raise RuntimeError("stopped here")
        return handler

    with pytest.raises(RuntimeError, match="stopped here"):
        vidstyle.render(clip, [starry], out, config, on_event=fail_at(RenderStarted))
    assert work.read_manifest() is not None and not work.holds_frames()
    smaller = make_config("fast", size=32, iters=1, first_iters=2, device="cpu", flow="none")
    with pytest.raises(RuntimeError, match="stopped here"):
        vidstyle.render(clip, [starry], out, smaller, on_event=fail_at(FrameSaved))
    assert work.holds_frames()
    with pytest.raises(VidstyleError, match="belongs to another render"):
        vidstyle.render(clip, [starry], out, config)
    assert vidstyle.render(clip, [starry], out, smaller) == out
    assert probe_video(out).width == 32


def test_a_preset_of_the_wrong_kind_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^preset must be a preset's name or a TOML file's path"):
        make_config(3)  # type: ignore[arg-type]


def test_numbers_from_numpy_are_taken_as_python_numbers() -> None:
    config = make_config(size=np.int64(64), iters=np.int32(7), style_weight=np.float32(3.5))
    assert (config.size, config.iters, config.style_weight) == (64, 7, 3.5)
    assert type(config.size) is int and type(config.style_weight) is float  # the manifest's JSON holds them
    with pytest.raises(SettingError, match="size must be a whole number"):
        make_config(size=np.float64(64.5))
    blend = make_config(style_blend=[np.float64(1), np.int64(2)]).style_blend  # a mix was refused
    assert blend == (1.0, 2.0) and all(type(weight) is float for weight in blend)


def test_a_manifest_replaced_before_the_lock_is_taken_is_refused(lavfi_clip, starry, tmp_path) -> None:
    """Two renders with other settings start in one work directory at the same moment: the second may replace the
    first's manifest while it holds no frame. The first finds that under the lock and stops, frames unwritten."""
    from vidstyle.errors import BusyError
    from vidstyle.pipeline import check_still_ours, open_workdir, prepare_render

    clip = lavfi_clip("same_moment.mp4", seconds=0.12, audio=False)
    work = tmp_path / "work"

    def opened(size: int):
        config = make_config("fast", size=size, iters=1, first_iters=2, device="cpu", flow="none")
        job = prepare_render(clip, [starry], tmp_path / f"out{size}.mp4", config, workdir=work)
        return job, open_workdir(job, restart=False, stop=None)

    first, mine = opened(48)
    second, theirs = opened(32)  # holds no frame: the first's manifest is replaced
    with first.workdir.lock():
        with pytest.raises(BusyError, match="another render started in work directory .* at the same moment"):
            check_still_ours(first.workdir, mine)
    check_still_ours(second.workdir, theirs)


def test_a_still_and_its_animation_that_appear_while_painting_are_kept(images, starry, tmp_path) -> None:
    """As for a video: without overwrite, a file put at the output (or the animation's) path meanwhile, by another
    run, is not replaced."""
    content = tmp_path / "content.png"
    write_image(content, images[0])
    config = make_config("fast", size=48, first_iters=2, device="cpu")
    for target in ("still.png", "still.gif"):
        out, animation = tmp_path / "still.png", tmp_path / "still.gif"
        for path in (out, animation):
            path.unlink(missing_ok=True)

        def someone_writes(event: object, target: Path = tmp_path / target) -> None:
            if isinstance(event, FrameDone) and not target.exists():
                target.write_bytes(b"theirs")

        with pytest.raises(OutputExists, match="appeared while this render ran$"):
            vidstyle.stylize_image(content, [starry], out, config, on_event=someone_writes, animation=animation)
        assert (tmp_path / target).read_bytes() == b"theirs"
        other = animation if target == "still.png" else out
        assert not other.exists(), "the still and its animation are written both or neither"
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "no hidden file is left"
    out.unlink(missing_ok=True)
    animation.unlink()
    vidstyle.stylize_image(content, [starry], out, config, animation=animation)
    assert read_image(out).shape[2] == 3 and animation.stat().st_size > 0


def test_an_output_that_is_a_link_to_nowhere_is_refused_before_the_work(tmp_path: Path, tiny: Path,
                                                                       images, starry: Path) -> None:
    """A dangling symlink at the output path is something there: a still was painted in full, then refused with
    "appeared while this render ran" (its animation left behind), and a preview replaced the link."""
    import vidstyle.preview

    content = tmp_path / "content.png"
    write_image(content, images[0])
    config = make_config("fast", size=32, first_iters=1, iters=1, device="cpu")
    for name, call in [
        ("still.png", lambda out: vidstyle.stylize_image(content, [starry], out, config,
                                                          animation=tmp_path / "steps.gif")),
        ("sheet.png", lambda out: vidstyle.preview.preview(tiny, [starry], out, config, count=1)),
        ("video.mp4", lambda out: vidstyle.render(tiny, [starry], out, config)),
    ]:
        link = tmp_path / name
        link.symlink_to(tmp_path / "not-yet" / name)
        with pytest.raises(OutputExists, match=rf"^output {re.escape(str(link))} exists$"):
            call(link)
        assert link.is_symlink(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content.png", "sheet.png", "still.png", "video.mp4"]


def test_a_still_is_written_at_its_output_size(tmp_path: Path, images, starry: Path) -> None:
    """output_size was left unused for a still: a settings file made for videos gave a still at the render's size
    whatever it asked for."""
    content = tmp_path / "content.png"
    write_image(content, cv2.resize(images[0], (120, 90), interpolation=cv2.INTER_AREA))
    out = tmp_path / "still.png"
    for setting, size in [("render", (32, 24)), ("source", (120, 90)), ("50", (50, 38)), ("30x20", (30, 20))]:
        config = make_config("fast", size=32, first_iters=1, device="cpu", output_size=setting)
        vidstyle.stylize_image(content, [starry], out, config, overwrite=True)
        assert read_image(out).shape[:2] == size[::-1], setting


def test_api_arguments_of_other_types_are_taken_or_refused_in_its_words(tmp_path: Path, tiny: Path) -> None:
    import vidstyle.preview

    config = _tiny_config()
    with pytest.raises(SettingError, match="^inputs must be a video's path or a list of them"):
        vidstyle.render_many(5, ["starry-night"], config)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="^output_dir must name a folder"):
        vidstyle.render_many([tiny], ["starry-night"], config, output_dir=3)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="^frames must be vidstyle.io.decode.Frame"):
        list(vidstyle.stylize_sequence([np.zeros((32, 48, 3), np.uint8)],
                                       vidstyle.Stylizer.for_styles(["starry-night"], config)))
    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(b"mine")
    with pytest.raises(SettingError, match="^overwrite must be True or False"):
        vidstyle.preview.preview(tiny, ["starry-night"], sheet, config, count=1, overwrite="no")  # type: ignore
    assert sheet.read_bytes() == b"mine", "a truthy string is no permission to overwrite"
    # NumPy's numbers are numbers: Config takes them, and so do the times and counts beside it.
    made = vidstyle.preview.preview(tiny, ["starry-night"], tmp_path / "np.png", config, at=[np.float32(0.05)])
    assert made.frames == (1,)
    assert vidstyle.preview.preview(tiny, ["starry-night"], tmp_path / "n.png", config,
                                    count=np.int64(1)).frames == (1,)
    assert vidstyle.render(tiny, ["starry-night"], tmp_path / "part.mp4", config, start=np.float32(0.05)).exists()
    vidstyle.stylize_image(resolve_style("starry-night"), ["starry-night"], tmp_path / "s.png", config,
                           animation=tmp_path / "s.gif", animation_every=np.int64(1))
    assert (tmp_path / "s.gif").is_file()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_animation_leaves_the_still_as_it_was(tmp_path: Path, images, starry: Path, overwrite: bool) -> None:
    """The still was written before its animation's encoder was known to have succeeded: an encoder that died (here
    killed as the frame ends) left a new still without its animation, or beside the old one."""
    content = tmp_path / "content.png"
    write_image(content, images[0])
    out, animation = tmp_path / "still.png", tmp_path / "steps.gif"
    if overwrite:
        out.write_bytes(b"old still")
        animation.write_bytes(b"old animation")

    def kill_the_encoder(event: object) -> None:
        if isinstance(event, FrameDone):
            for pid in child_ffmpeg_pids():
                os.kill(pid, signal.SIGKILL)

    config = make_config("fast", size=32, first_iters=2, device="cpu")
    with pytest.raises(VidstyleError, match="steps.gif"):
        vidstyle.stylize_image(content, [starry], out, config, on_event=kill_the_encoder, animation=animation,
                               overwrite=overwrite)
    if overwrite:
        assert (out.read_bytes(), animation.read_bytes()) == (b"old still", b"old animation")
    else:
        assert not out.exists() and not animation.exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["content.png", *(["still.png", "steps.gif"] if overwrite else [])]), "no hidden file"


def test_the_partial_files_mark_is_skipped_where_the_system_has_no_extended_attributes(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """macOS and Windows have no os.setxattr: the mark is a hint, never a render's failure."""
    from vidstyle.io.paths import is_marked_partial, mark_partial, unmark_partial

    partial = tmp_path / ".out.mp4.partial.mp4"
    partial.write_bytes(b"video")
    mark_partial(partial)
    assert is_marked_partial(partial)
    unmark_partial(partial)
    assert not is_marked_partial(partial)
    for call in ("setxattr", "getxattr", "removexattr"):
        monkeypatch.delattr(os, call)
    mark_partial(partial)
    unmark_partial(partial)
    assert not is_marked_partial(partial)


def test_a_lock_files_old_holder_never_takes_the_new_holders_lock_file_away(tmp_path: Path) -> None:
    """Removing a work directory unlinks its lock file while holding it; a render starting then takes a new lock
    file under the name. The remover's release must leave that one alone, or a third render could lock beside
    the second."""
    from vidstyle.errors import BusyError
    from vidstyle.io.paths import FileLock

    path = tmp_path / "lock"
    remover = FileLock(path, "work directory", remove_on_release=True).acquire()
    path.unlink()  # as the remover's clean-up does, still holding it
    starting = FileLock(path, "work directory", remove_on_release=True).acquire()
    remover.release()
    assert path.exists(), "the starting render's lock file is still there"
    with pytest.raises(BusyError, match="is writing work directory right now; .* or choose another work directory$"):
        FileLock(path, "work directory", kind="work directory").acquire()
    with pytest.raises(BusyError, match="is writing o.mp4 right now; wait for it to finish or choose another output$"):
        FileLock(path, "o.mp4").acquire()
    starting.release()
    (tmp_path / "work directory.mp4").mkdir()  # a folder of an output's name: its lock's advice is still a work dir's
    work = WorkDir(tmp_path / "work directory.mp4")
    with work.lock(), pytest.raises(BusyError, match="or choose another work directory$"):
        work.lock().acquire()
    assert not path.exists()
    FileLock(path, "work directory").acquire().release()


def test_a_lock_taken_on_a_file_whose_name_went_meanwhile_is_taken_on_the_new_file(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """A render opens the lock file, its holder then releases it (unlinking the name) and a third takes a new one
    before the render's flock: that flock succeeds on a file nobody can find. The render must lock what the name
    leads to instead."""
    import fcntl

    from vidstyle.io import paths

    path = tmp_path / "lock"
    path.touch()
    real_flock, replaced = fcntl.flock, []

    def flock_after_the_name_was_replaced(fd: int, operation: int) -> None:
        if not replaced:  # between our open and our flock: the old file unlinked, a new one made
            replaced.append(True)
            path.unlink()
            path.touch()
        real_flock(fd, operation)

    monkeypatch.setattr(paths.fcntl, "flock", flock_after_the_name_was_replaced)
    lock = paths.FileLock(path, "work directory").acquire()
    assert lock._fd is not None
    assert os.fstat(lock._fd).st_ino == path.stat().st_ino, "the lock is on the file the name leads to"
    lock.release()


def _refuse_size() -> None:
    make_config("fast", size=0)


def test_errors_cross_processes_whole() -> None:
    """A SettingError raised in a worker process broke the pool (its pickling called __init__ with the message
    alone), and an Interrupted or a CheckpointMismatch came back without what it carries."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool, \
            pytest.raises(SettingError, match="^size ") as raised:
        pool.submit(_refuse_size).result()
    assert raised.value.setting == "size"
    for error in (Interrupted(3, signal.SIGTERM), CheckpointMismatch("m", ("iters",), {"a": 1}, {"iters": 40})):
        again = pickle.loads(pickle.dumps(error))
        assert (type(again), str(again), again.__dict__) == (type(error), str(error), error.__dict__)


def test_a_pipe_at_the_output_path_is_refused_even_with_overwrite(tiny: Path, starry: Path, tmp_path: Path) -> None:
    """overwrite replaced a named pipe at the output with the still or video, taking it from whatever reads it."""
    pipe = tmp_path / "o.png"
    os.mkfifo(pipe)
    with pytest.raises(UsageError, match=f"^output {re.escape(str(pipe))} is a named pipe, not a file; name a file$"):
        vidstyle.stylize_image(starry, [starry], pipe, _tiny_config(), overwrite=True)
    video = tmp_path / "o.mp4"
    os.mkfifo(video)
    with pytest.raises(UsageError, match="is a named pipe, not a file"):
        vidstyle.render(tiny, [starry], video, _tiny_config(), overwrite=True)
    assert {p.name for p in tmp_path.iterdir()} == {"o.png", "o.mp4"} and not pipe.is_file()


def test_a_stills_output_that_names_a_folder_is_refused_as_one(starry: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"^output {re.escape(str(tmp_path))}/sub/ names a folder; name the image"):
        vidstyle.stylize_image(starry, [starry], f"{tmp_path}/sub/", _tiny_config())
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()  # an existing folder, named without its slash: not "must be an image, got out"
    with pytest.raises(UsageError, match=f"^output {re.escape(str(tmp_path / 'out'))} is a folder; name the image"):
        vidstyle.stylize_image(starry, [starry], tmp_path / "out", _tiny_config())
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and not any((tmp_path / "out").iterdir())
