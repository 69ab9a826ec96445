"""`vidstyle image --animation`: the optimization written as a short video, from the start to the result."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import decoded

from vidstyle.animation import FPS, HOLD_SECONDS
from vidstyle.cli import main
from vidstyle.config import make_config
from vidstyle.errors import OutputError, SettingError
from vidstyle.io.images import encode_image, read_image, resize_rgb, write_atomic
from vidstyle.io.paths import is_marked_partial, mark_partial, partial_path
from vidstyle.io.probe import probe_video
from vidstyle.palette import Palette
from vidstyle.still import stylize_image
from vidstyle.stylize import coarse_sizes

HOLD = round(HOLD_SECONDS * FPS)


@pytest.fixture()
def content(images: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> Path:
    path = tmp_path / "content.png"
    write_atomic(path, encode_image(images[0]))
    return path


def test_the_animation_goes_from_the_start_to_the_result(content: Path, starry: Path, tmp_path: Path) -> None:
    out, film = tmp_path / "out.png", tmp_path / "film.mp4"
    config = make_config("fast", size=64, first_iters=12, device="cpu", init="content", coarse_levels=0)
    stylize_image(content, [starry], out, config, animation=film, animation_every=3)
    info = probe_video(film)
    assert info.frame_count == 1 + 12 // 3 + HOLD  # the start, every third iteration, the result held
    assert float(info.fps) == FPS
    frames = decoded(film)
    start = Palette.of([read_image(starry)]).recolour(read_image(content)).astype(float)
    result = read_image(out).astype(float)
    assert np.abs(frames[0] - start).mean() < 6, "the first picture is the start: the photograph in the palette"
    assert np.abs(frames[-1] - result).mean() < 6, "the last is the saved result"
    assert np.abs(frames[0] - result).mean() > 10, "and the two differ: the animation shows the painting appear"
    assert not list(tmp_path.glob(".film*")), "no partial file left"


def test_a_run_after_a_kill_takes_over_the_partial_file_the_killed_one_left(content: Path, starry: Path,
                                                                            tmp_path: Path) -> None:
    film = tmp_path / "film.mp4"
    partial_path(film).write_bytes(b"half an mp4 from a run killed with -9")
    mark_partial(partial_path(film))  # as the recorder marks the file it writes
    config = make_config("fast", size=64, first_iters=3, device="cpu", coarse_levels=0)
    if not is_marked_partial(partial_path(film)):
        # A file system that keeps no extended attributes: the leftover cannot be told from a file of the user's,
        # so it is refused, saying what to do, and kept.
        with pytest.raises(OutputError, match="delete it if a killed vidstyle run left it"):
            stylize_image(content, [starry], tmp_path / "out.png", config, animation=film, animation_every=3)
        assert partial_path(film).read_bytes() == b"half an mp4 from a run killed with -9"
        return
    stylize_image(content, [starry], tmp_path / "out.png", config, animation=film, animation_every=3)
    assert probe_video(film).frame_count == 2 + HOLD
    assert not is_marked_partial(film), "the finished animation is the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content.png", "film.mp4", "out.png"]


def test_a_file_of_the_users_at_the_animations_hidden_name_is_refused_and_kept(content: Path, starry: Path,
                                                                                tmp_path: Path) -> None:
    """The animation is written under a hidden name first; a file there that vidstyle did not mark is not a killed
    run's, and taking the name over deleted it."""
    theirs = partial_path(tmp_path / "film.gif")
    theirs.write_bytes(b"precious")
    config = make_config("fast", size=64, first_iters=3, device="cpu", coarse_levels=0)
    with pytest.raises(OutputError, match="is in the way"):
        stylize_image(content, [starry], tmp_path / "out.png", config, animation=tmp_path / "film.gif")
    assert theirs.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [theirs.name, "content.png"]


def test_a_gif_with_coarse_levels_is_written_at_the_full_size(content: Path, starry: Path, tmp_path: Path) -> None:
    out, film = tmp_path / "out.png", tmp_path / "film.gif"
    big = tmp_path / "big.png"
    write_atomic(big, encode_image(resize_rgb(read_image(content), (192, 108))))
    config = make_config("fast", size=192, first_iters=4, device="cpu", coarse_levels=1)
    assert coarse_sizes((108, 192, 3), 1) == [(96, 54)]
    stylize_image(big, [starry], out, config, animation=film, animation_every=2)
    info = probe_video(film)
    assert (info.width, info.height) == (192, 108)
    assert info.frame_count == 2 * (1 + 4 // 2) + HOLD  # each level starts at its iteration 0


@pytest.mark.parametrize("name, every, pattern", [
    ("film.avi", 5, "animation must end in .mp4 or .gif"),
    ("film.mp4", 0, "animation_every must be a whole number"),
    ("film.mp4", "5", "animation_every must be a whole number"),
    (None, 3, "^animation_every sets the pictures of an animation: give animation too$"),  # no animation to set
])
def test_bad_animation_settings_are_refused_before_anything_is_written(
        content: Path, starry: Path, tmp_path: Path, name: str | None, every: int, pattern: str) -> None:
    with pytest.raises(SettingError, match=pattern):
        stylize_image(content, [starry], tmp_path / "out.png", make_config("fast", size=64, device="cpu"),
                      animation=tmp_path / name if name else None, animation_every=every)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content.png"]


def test_the_cli_names_its_flags(content: Path, starry: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["image", str(content), "-s", str(starry), "-o", str(tmp_path / "o.png"), "--size", "64",
                 "--iters", "4", "--animation", str(tmp_path / "a.mp4"), "--animation-every", "-1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(r"--animation-every must be a whole number", err[0]), err
    assert main(["image", str(content), "-s", str(starry), "-o", str(tmp_path / "o.png"), "--size", "64",
                 "--iters", "4", "--device", "cpu", "--quiet", "--animation", str(tmp_path / "a.mp4")]) == 0
    assert probe_video(tmp_path / "a.mp4").frame_count == 1 + 0 + HOLD  # 4 iterations, one picture every 5


def test_resize_keeps_the_animation_size_of_odd_stills(tmp_path: Path, starry: Path) -> None:
    odd = tmp_path / "odd.png"
    write_atomic(odd, encode_image(resize_rgb(read_image(starry), (63, 47))))
    film = tmp_path / "odd.mp4"
    stylize_image(odd, [starry], tmp_path / "o.png", make_config("fast", size=63, first_iters=2, device="cpu"),
                  animation=film, animation_every=1)
    info = probe_video(film)
    assert (info.width, info.height) == (64, 48), "padded to even sides for H.264"


def test_a_still_stopped_by_ctrl_c_or_its_stop_event_ends_in_one_interrupted_and_writes_nothing(
        content: Path, starry: Path, tmp_path: Path) -> None:
    """As a render's: Ctrl-C (here raised from the caller's callback) and the stop event both end as Interrupted,
    exit code 130, with no frame to name; neither the still nor its animation is left."""
    import threading

    from vidstyle.errors import Interrupted
    from vidstyle.events import IterationDone

    config = make_config("fast", size=64, first_iters=6, device="cpu", coarse_levels=0)
    stop = threading.Event()

    def ctrl_c(event: object) -> None:
        if isinstance(event, IterationDone) and event.iteration == 2:
            raise KeyboardInterrupt

    def stop_it(event: object) -> None:
        if isinstance(event, IterationDone) and event.iteration == 2:
            stop.set()

    for on_event, animation in ((ctrl_c, None), (stop_it, tmp_path / "film.gif")):
        stop.clear()
        with pytest.raises(Interrupted, match="^interrupted$") as caught:
            stylize_image(content, [starry], tmp_path / "out.png", config, on_event=on_event, stop=stop,
                          animation=animation)
        assert caught.value.exit_code == 130
        assert [p.name for p in tmp_path.iterdir()] == ["content.png"], "nothing written, no partial file"


def test_a_stop_while_the_animation_is_written_leaves_no_ffmpeg_and_no_file(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C while ffmpeg wrote the animation (its palette pass and file, seconds after the last iteration) left
    it running, to finish a hidden file nobody would publish."""
    import vidstyle.animation
    from vidstyle.animation import IterateRecorder

    recorder = IterateRecorder(tmp_path / "film.gif", (64, 48), every=1)
    real_stop = vidstyle.animation.stop_process

    def interrupted_wait(proc, grace: float) -> None:  # the interrupt lands as the wait begins
        proc.stdin.close()  # ffmpeg goes on to write the file
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with recorder:
            for step in range(3):
                recorder.add(np.full((48, 64, 3), 40 * step, np.uint8))
            monkeypatch.setattr(vidstyle.animation, "stop_process", interrupted_wait)
    monkeypatch.setattr(vidstyle.animation, "stop_process", real_stop)
    assert recorder._proc is not None and recorder._proc.poll() is not None, "ffmpeg is gone"
    assert list(tmp_path.iterdir()) == []
