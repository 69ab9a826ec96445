"""Many inputs and `--each-style` in one command: every output written, the network loaded once, a failure
reported and passed over, a re-run finishing what is left."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ffmpeg

import vidstyle.stylize
from vidstyle.batch import plan_batch, render_many
from vidstyle.cli import main
from vidstyle.config import make_config
from vidstyle.errors import InputError, SettingError, UsageError
from vidstyle.events import BatchItemEnded, BatchItemStarted, Event, FrameDone
from vidstyle.io.probe import probe_video

TINY = ("--size", "64", "--iters", "1", "--first-iters", "3", "--device", "cpu", "--flow", "none", "--quiet")


@pytest.fixture()
def clips(tmp_path: Path) -> list[Path]:
    """Two short real-looking clips with different lengths, in a folder of their own."""
    folder = tmp_path / "clips"
    folder.mkdir()
    made = []
    for name, seconds in (("one.mp4", 0.2), ("two.mp4", 0.16)):
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=64x48:rate=25:duration={seconds}", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", str(folder / name))
        made.append(folder / name)
    return made


@pytest.fixture()
def two_styles(starry: Path, tmp_path: Path) -> list[Path]:
    wave = tmp_path / "wave.jpg"
    ffmpeg("-i", str(starry), "-vf", "hflip,scale=96:-2", str(wave))
    return [starry, wave]


def test_each_style_writes_one_output_per_input_and_style_on_one_network(
        clips: list[Path], two_styles: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []
    real_load = vidstyle.stylize.load_vgg
    monkeypatch.setattr(vidstyle.stylize, "load_vgg", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    events: list[Event] = []
    config = make_config("fast", size=64, iters=1, first_iters=3, device="cpu")
    results = render_many(clips, two_styles, config, each_style=True, on_event=events.append)
    assert [r.status for r in results] == ["written"] * 4
    expected = [clip.with_name(f"{clip.stem}.{style.stem}.mp4") for clip in clips for style in two_styles]
    assert [r.item.output for r in results] == expected
    for clip, output in zip([c for c in clips for _ in two_styles], expected, strict=True):
        assert probe_video(output).frame_count == probe_video(clip).frame_count
    assert len(loads) == 1, "the network is loaded once for the whole batch"
    started = [e for e in events if isinstance(e, BatchItemStarted)]
    assert [(e.position, e.count) for e in started] == [(0, 4), (1, 4), (2, 4), (3, 4)]


def test_a_blend_is_one_output_per_input(clips: list[Path], two_styles: list[Path]) -> None:
    items = plan_batch(clips, two_styles)
    assert [i.output.name for i in items] == ["one.starry_night+wave.mp4", "two.starry_night+wave.mp4"]
    assert all(i.styles == tuple(two_styles) for i in items)


def test_one_path_or_name_on_its_own_is_one_input_or_style(clips: list[Path], starry: Path) -> None:
    from vidstyle.pipeline import prepare_render

    (item,) = plan_batch(str(clips[0]), str(starry))
    assert item.input == clips[0] and item.styles == (starry,)
    assert plan_batch(clips[0], "starry-night")[0].output.name == "one.starry_night.mp4"
    job = prepare_render(clips[0], str(starry), config=make_config("fast", size=64, device="cpu"))
    assert job.styles == (starry,)


def test_settings_that_are_not_a_config_are_refused_naming_config(clips: list[Path], starry: Path,
                                                                   tmp_path: Path) -> None:
    from vidstyle import render, stylize_image
    from vidstyle.preview import preview

    calls = [lambda: render(clips[0], [starry], tmp_path / "o.mp4", "fast"),  # type: ignore[arg-type]
             lambda: render_many(clips, [starry], {"size": 64}),  # type: ignore[arg-type]
             lambda: stylize_image(starry, [starry], tmp_path / "o.png", "fast"),  # type: ignore[arg-type]
             lambda: preview(clips[0], [starry], tmp_path / "o.png", "fast")]  # type: ignore[arg-type]
    for call in calls:
        with pytest.raises(SettingError, match="must be a Config") as refused:
            call()
        assert refused.value.setting == "config"
    assert list(tmp_path.iterdir()) == [clips[0].parent]


def test_a_failure_is_reported_and_the_others_are_written(clips: list[Path], starry: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    broken = clips[0].with_name("broken.mp4")
    broken.write_bytes(b"not a video at all")
    log = tmp_path / "events.jsonl"
    code = main(["render", str(clips[0]), str(broken), str(clips[1]), "--style", str(starry), *TINY,
                 "--log-json", str(log)])
    err = capsys.readouterr().err
    assert code == 1
    ended = json.loads(log.read_text().splitlines()[-1])
    assert ended == {"event": "CommandEnded", "command": "render", "status": "failed", "exit_code": 1,
                     "message": "1 of 3 failed", "outputs": [str(clips[0].with_name("one.starry_night.mp4")),
                                                             str(clips[1].with_name("two.starry_night.mp4"))]}
    assert "vidstyle: 2 written, 0 skipped" in err and "1 failed" in err
    assert re.search(r"failed: .*broken\.starry_night\.mp4: .*broken\.mp4", err)
    assert "Traceback" not in err
    assert clips[0].with_name("one.starry_night.mp4").exists() and clips[1].with_name("two.starry_night.mp4").exists()
    assert not clips[0].with_name("broken.starry_night.mp4").exists()


def test_a_rerun_skips_what_is_written(clips: list[Path], starry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = clips[0].with_name("one.starry_night.mp4")
    assert main(["render", str(clips[0]), "--style", str(starry), "-o", str(first), *TINY]) == 0
    before = first.stat().st_mtime_ns
    capsys.readouterr()
    loud = [flag for flag in TINY if flag != "--quiet"]
    assert main(["render", *map(str, clips), "--style", str(starry), *loud]) == 0
    assert "vidstyle: 1 written, 1 skipped" in capsys.readouterr().err
    assert first.stat().st_mtime_ns == before, "an existing output is left alone"
    assert clips[1].with_name("two.starry_night.mp4").exists()
    assert main(["render", *map(str, clips), "--style", str(starry), *TINY]) == 0
    assert capsys.readouterr().err == "", "--quiet: only errors, and nothing failed"


def test_outputs_go_into_the_folder_that_o_names(clips: list[Path], starry: Path, tmp_path: Path) -> None:
    folder = tmp_path / "renders"
    folder.mkdir()
    assert main(["render", *map(str, clips), "--style", str(starry), "-o", str(folder), *TINY]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["one.starry_night.mp4", "two.starry_night.mp4"]


@pytest.mark.parametrize("extra, pattern", [
    (("-o", "single.mp4"), r"-o single\.mp4 is not a directory: this command writes 2 videos"),
    (("--workdir", "work"), r"--workdir names one render's checkpoints"),
])
def test_options_for_one_output_are_refused_for_many(clips: list[Path], starry: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str], monkeypatch,
                                                     extra: tuple[str, ...], pattern: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["render", *map(str, clips), "--style", str(starry), *extra, *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(pattern, err[0]), err
    assert not any(clips[0].parent.glob("*.starry_night.mp4"))


def test_an_output_that_is_another_renders_input_is_refused_before_anything(
        clips: list[Path], starry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    second = clips[0].with_name(f"{clips[0].stem}.{starry.stem}.mp4")  # what the first render would write
    shutil.copy(clips[1], second)
    before = second.read_bytes()
    assert main(["render", str(clips[0]), str(second), "--style", str(starry), "--overwrite", *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "which this command also reads" in err[0], err
    assert second.read_bytes() == before, "the user's video is untouched"


def test_two_inputs_of_one_name_into_one_folder_are_refused_before_anything(
        clips: list[Path], starry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = shutil.copy(clips[0], other / clips[0].name)
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(UsageError, match="two renders would both be written to"):
        render_many([clips[0], twin], [starry], output_dir=folder)
    assert main(["render", str(clips[0]), str(twin), "--style", str(starry), "-o", str(folder), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidstyle: error: two renders would both be written to "), err
    assert f"{clips[0]} as starry_night.jpg and {twin} as starry_night.jpg" in err[0]
    assert not any(folder.iterdir())


def test_the_callers_own_on_event_failing_ends_the_batch_as_it_ends_render(clips: list[Path], starry: Path) -> None:
    """Not reported as each item's failure, the batch going on: the caller's bug, raised to the caller."""

    class CallbackBug(Exception):
        pass

    def on_event(event: Event) -> None:
        if isinstance(event, FrameDone):
            raise CallbackBug("in the caller's code")

    config = make_config("fast", size=64, iters=1, first_iters=3, device="cpu")
    with pytest.raises(CallbackBug, match="^in the caller's code$"):
        render_many(clips, [starry], config, on_event=on_event)
    assert not clips[1].with_name("two.starry_night.mp4.vidstyle-work").exists(), "the second item never began"


def test_each_items_end_is_an_event(clips: list[Path], starry: Path) -> None:
    events: list[Event] = []
    clips[1].with_name("two.starry_night.mp4").write_bytes(b"mine")
    config = make_config("fast", size=64, iters=1, first_iters=3, device="cpu")
    render_many(clips, [starry], config, on_event=events.append)
    ended = [(e.position, e.status) for e in events if isinstance(e, BatchItemEnded)]
    assert ended == [(0, "written"), (1, "skipped")]
    assert clips[1].with_name("two.starry_night.mp4").read_bytes() == b"mine"


def test_each_style_and_a_blend_are_refused_together(clips: list[Path], two_styles: list[Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config("fast", size=64, device="cpu", style_blend=(0.7, 0.3))
    with pytest.raises(SettingError, match="style_blend mixes several styles"):
        render_many(clips, two_styles, config, each_style=True)
    code = main(["render", str(clips[0]), *(a for s in two_styles for a in ("--style", str(s))), "--each-style",
                 "--style-blend", "0.7,0.3", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("vidstyle: error: --style-blend mixes"), err
    assert "--each-style makes one output per style" in err[0], "the library's each_style in the flag's words"
    assert not list(clips[0].parent.glob("*.mp4.*")) and len(list(clips[0].parent.iterdir())) == 2


def test_an_interrupted_batch_says_what_it_finished(clips: list[Path], starry: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import vidstyle.batch
    from vidstyle.events import FrameDone

    real, calls = vidstyle.batch.render_job, []

    def render_job(job, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(job.output)
        if len(calls) == 2:  # Ctrl-C arrives while the second video's first frame is saved
            def on_event(event: Event) -> None:
                if isinstance(event, FrameDone):
                    raise KeyboardInterrupt
            kwargs["on_event"] = on_event
        return real(job, **kwargs)

    monkeypatch.setattr(vidstyle.batch, "render_job", render_job)
    code = main(["render", *map(str, clips), "--style", str(starry), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    assert err[0].startswith("vidstyle: before the interruption: 1 written, 0 skipped"), err
    assert "interrupted" in err[-1] and "Traceback" not in "\n".join(err)
    assert clips[0].with_name("one.starry_night.mp4").exists()
    assert not clips[1].with_name("two.starry_night.mp4").exists()


def test_an_output_written_by_another_run_during_the_batch_is_kept(clips: list[Path], starry: Path) -> None:
    """A batch checks its outputs at its start; one written meanwhile (the same batch run on a second machine)
    is skipped when its turn comes, not rendered again over it."""
    theirs = clips[1].with_name("two.starry_night.mp4")

    def another_run_writes_it(event: Event) -> None:
        if isinstance(event, BatchItemStarted) and event.position == 1:
            theirs.write_bytes(b"theirs")

    config = make_config("fast", size=64, iters=1, first_iters=3, device="cpu")
    results = render_many(clips, [starry], config, on_event=another_run_writes_it)
    assert [r.status for r in results] == ["written", "skipped"]
    assert str(theirs) in results[1].reason
    assert theirs.read_bytes() == b"theirs"
    assert not theirs.with_name(theirs.name + ".vidstyle-work").exists(), "skipped before any work began"


@pytest.mark.parametrize("flags, message", [
    (["--workers", "0"], "--workers must be a whole number of at least 1"),
    (["--chunk-frames", "2"], "--chunk-frames applies only to a render on Ray workers"),
    (["--workers", "1000", "--device", "cpu"], "--workers is more than the .* CPU cores here"),
    (["--start", "0.3", "--end", "0.1"], "--end must come after the start"),
])
def test_what_is_wrong_for_every_item_is_refused_once_before_any(clips: list[Path], starry: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str], flags: list[str],
                                                                message: str) -> None:
    folder = tmp_path / "renders"
    folder.mkdir()
    code = main(["render", *map(str, clips), "--style", str(starry), "-o", str(folder), *TINY, *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(message, err[0]), err
    assert list(folder.iterdir()) == []


def test_a_setting_wrong_for_every_item_is_refused_once_not_reported_per_item(clips: list[Path],
                                                                              two_styles: list[Path]) -> None:
    """A blend of the wrong length (and a device this machine lacks) made every item fail with the same reason,
    and the call returned normally."""
    blend = make_config("fast", size=64, device="cpu", style_blend=(0.5, 0.3, 0.2))
    with pytest.raises(SettingError, match="^style_blend has 3 weights for 2 style images"):
        render_many(clips, two_styles, blend)
    if torch.cuda.device_count() < 8:
        with pytest.raises(SettingError, match="^device is cuda:7"):
            render_many(clips, two_styles, make_config("fast", size=64, device="cuda:7"))
    assert not list(clips[0].parent.glob("*.mp4.*")) and len(list(clips[0].parent.iterdir())) == 2


def test_a_painting_that_cannot_be_read_is_refused_once_not_reported_per_item(clips: list[Path],
                                                                              tmp_path: Path) -> None:
    """A missing style came back as every item's failure, the call returning normally."""
    with pytest.raises(InputError, match=f"^style image not found: {re.escape(str(tmp_path / 'nope.jpg'))}"):
        render_many(clips, [tmp_path / "nope.jpg"], make_config("fast", size=64, device="cpu"))
    with pytest.raises(SettingError, match="^style_paths is empty"):
        render_many(clips, [], make_config("fast", size=64, device="cpu"))
    assert len(list(clips[0].parent.iterdir())) == 2 and [p.name for p in tmp_path.iterdir()] == ["clips"]


def test_debug_shows_where_an_unexpected_failure_of_a_batch_item_came_from(clips: list[Path], starry: Path,
                                                                          capsys, monkeypatch) -> None:
    """A batch reports a failed render in one line and goes on, so --debug, which promises tracebacks, showed
    none for a bug (a render's own error, not one of the input or settings)."""
    import vidstyle.batch

    def broken(*_args, **_kwargs):
        raise KeyError("a bug in the render")

    monkeypatch.setattr(vidstyle.batch, "render_job", broken)
    folder = clips[0].parent / "debugged"
    folder.mkdir()
    argv = ["render", str(clips[0]), str(clips[1]), "--style", str(starry), "-o", str(folder), *TINY]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("KeyError: 'a bug in the render'") == 2
    assert main([*argv, "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.count("Traceback (most recent call last)") == 2 and "in broken" in err
    assert main(argv) == 1 and "Traceback" not in capsys.readouterr().err, "the next command is as it was"
