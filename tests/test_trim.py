"""Rendering a part of a video: the frames exactly those of the whole video at those times, the audio cut along."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from test_cli import _audio_seconds

import vidstyle
from vidstyle.cli import main
from vidstyle.config import make_config
from vidstyle.errors import CheckpointMismatch
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video

# Every frame on its own from its content with the same budget, so a frame's pixels depend on its source only:
# the trimmed render's frames must then equal the whole render's at the same indices, bit for bit.
INDEPENDENT = ("--size", "48", "--iters", "3", "--first-iters", "3", "--init", "content", "--flow", "none",
               "--device", "cpu", "--precision", "fp32", "--keep-frames", "--quiet")


def _render(clip: Path, starry: Path, out: Path, *extra: str) -> Path:
    work = out.with_name(out.name + ".work")
    assert main(["render", str(clip), "--style", str(starry), "-o", str(out), "--workdir", str(work),
                 *INDEPENDENT, *extra]) == 0
    return work


def test_a_trimmed_render_makes_exactly_the_frames_at_those_times(bunny_short: Path, starry: Path,
                                                                  tmp_path: Path) -> None:
    whole = _render(bunny_short, starry, tmp_path / "whole.mp4")
    part = _render(bunny_short, starry, tmp_path / "part.mp4", "--start", "0.2", "--duration", "0.2")
    made = sorted(p.name for p in (part / "frames").iterdir())
    assert made == [f"{i:07d}.png" for i in range(5, 10)], "0.2 s to 0.4 s at 25 fps: frames 5 to 9"
    for name in made:
        assert np.array_equal(read_image(part / "frames" / name), read_image(whole / "frames" / name)), name
    assert json.loads((part / "manifest.json").read_text())["segments"] == [[5, 10, True]]
    info = probe_video(tmp_path / "part.mp4")
    assert info.frame_count == 5 and info.has_audio
    assert abs(_audio_seconds(tmp_path / "part.mp4") - 0.2) < 0.05, "the audio is cut to the same 0.2 s"


def test_end_and_hh_mm_ss_and_a_changed_range_is_another_render(bunny_short: Path, starry: Path,
                                                                 tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.mp4"
    _render(bunny_short, starry, out, "--start", "00:00:00.12", "--end", "0.28")
    assert probe_video(out).frame_count == 4  # frames 3, 4, 5, 6
    out.unlink()
    code = main(["render", str(bunny_short), "--style", str(starry), "-o", str(out), "--workdir",
                 str(out.with_name(out.name + ".work")), *INDEPENDENT, "--start", "0.16"])
    assert code == 2
    err = capsys.readouterr().err
    assert ("(not the same: setting(s) the part of the video (--start, --end, --duration)); use --restart to discard "
            "its frames, or choose another with --workdir\n") in err, err
    with pytest.raises(CheckpointMismatch, match=r"not the same: setting\(s\) start/end \(the part of the video\)\); "
                                                 r"restart the render to discard its frames, or choose another work "
                                                 r"directory$"):
        vidstyle.render(bunny_short, [starry], out, make_config(size=48, iters=3, first_iters=3, init="content",
                                                                flow="none", device="cpu", precision="fp32",
                                                                keep_frames=True),
                        workdir=out.with_name(out.name + ".work"), start=0.16)  # the API's own words, not `frames`


@pytest.mark.parametrize("flags, message", [
    (["--start", "9"], "--start 9 s is past the end of the video, which lasts 0.480 s"),
    (["--start", "0.48"], "--start 0.48 s is past the end of the video, which lasts 0.480 s"),
    (["--start", "1e20", "--duration", "0.2"], "--start 1e+20 s is past the end of the video"),
    (["--start", "0.3", "--end", "0.1"], "--end must come after the start"),
    (["--start", "x"], "expected seconds, MM:SS or HH:MM:SS.ms"),
    (["--start", "1:75"], "expected seconds, MM:SS or HH:MM:SS.ms, got '1:75'"),
    (["--end", "1:60:00"], "expected seconds, MM:SS or HH:MM:SS.ms, got '1:60:00'"),
    (["--start", "0.5:10"], "expected seconds, MM:SS or HH:MM:SS.ms, got '0.5:10'"),
    (["--start", "1e999"], "expected seconds, MM:SS or HH:MM:SS.ms"),
    (["--duration", "0"], "--duration must be more than 0 seconds"),
    (["--duration", "0.2", "--chunk-frames", "4"], "--chunk-frames applies only to a render on Ray workers"),
])
def test_impossible_ranges_are_refused_in_one_line(bunny_short: Path, starry: Path, tmp_path: Path, capsys,
                                                   flags: list[str], message: str) -> None:
    args = ["render", str(bunny_short), "--style", str(starry), "-o", str(tmp_path / "o.mp4"), *flags]
    try:
        code = main(args)
    except SystemExit as stopped:  # argparse's own type errors
        code = stopped.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_part_starts_with_the_frame_on_screen_at_its_start_as_preview_takes_it(bunny_short: Path) -> None:
    """A frame is on screen from its timestamp to the next one's: a start inside it takes that frame (the render
    began one frame later than `preview --at` showed, and refused a start inside the last frame or an end a moment
    after the start as leaving no frame)."""
    from vidstyle.io.probe import trim_frames
    from vidstyle.preview import frames_at

    info = probe_video(bunny_short)  # 12 frames at 25 fps: frame i from 0.04 i s to 0.04 (i + 1) s
    assert trim_frames(info, 0.41, 0.43) == (10, 11)
    assert trim_frames(info, 0.47, None) == (11, 12), "inside the last frame"
    assert trim_frames(info, 0.2, 0.4) == (5, 10), "a frame starting at the end is not shown before it"
    assert trim_frames(info, 0.21, 0.401) == (5, 11)
    assert trim_frames(info, 0.0, None) is None
    for moment in (0.0, 0.01, 0.2, 0.21, 0.239, 0.24, 0.47):
        assert (trim_frames(info, moment, None) or (0,))[0] == frames_at(info, [moment])[0], moment


def test_a_time_that_is_not_a_number_is_refused_naming_it(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    import vidstyle
    from vidstyle.errors import SettingError

    for times in ({"start": "0.1"}, {"end": True}):
        with pytest.raises(SettingError, match="must be a number of seconds") as refused:
            vidstyle.render(bunny_short, [starry], tmp_path / "o.mp4", **times)  # type: ignore[arg-type]
        assert refused.value.setting in times
    assert list(tmp_path.iterdir()) == []


def test_metrics_of_a_part_compare_it_with_that_part_of_the_source(bunny_short: Path, starry: Path,
                                                                    tmp_path: Path, capsys) -> None:
    from vidstyle.io.decode import read_frames
    from vidstyle.metrics import measure_frames

    out = tmp_path / "part.mp4"
    _render(bunny_short, starry, out, "--start", "0.2", "--duration", "0.2")
    assert main(["metrics", str(out), "--source", str(bunny_short), "--json"]) == 1
    assert "that part: give the same start and end as the render" in capsys.readouterr().err
    assert main(["metrics", str(out), "--source", str(bunny_short), "--start", "0.2", "--end", "0.4",
                 "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    size = (probe_video(out).width, probe_video(out).height)
    rendered = [f.rgb for f in read_frames(probe_video(out), size)]
    sources = [f.rgb for f in read_frames(probe_video(bunny_short), size, 5, 10)]
    assert set(found) == {"farneback", "dis"}, "by default the warping errors along both flows"
    for flow, figures in found.items():
        expected = measure_frames(rendered, sources, flow).as_dict()
        assert figures["frames"] == 5
        assert figures["edge_correlation"] == pytest.approx(expected["edge_correlation"])
        assert figures["warping_error"] == pytest.approx(expected["warping_error"])
    assert found["farneback"]["warping_error"] != found["dis"]["warping_error"]
    assert main(["metrics", str(out), "--source", str(bunny_short), "--start", "0.2", "--end", "0.4",
                 "--flow", "dis", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert set(one) == {"dis"} and one["dis"] == pytest.approx(found["dis"]), "one flow: the same layout, one key"


def test_a_stopped_part_resumes_counted_within_the_part(bunny_short: Path, starry: Path, tmp_path: Path,
                                                         capsys) -> None:
    """Frames 5-9 stopped after two: the resume is at the video's frame 7, as an interruption names a frame, and
    frame 2 of the part's 5."""
    import threading

    import vidstyle
    from vidstyle.cli import _resuming
    from vidstyle.errors import Interrupted
    from vidstyle.events import FrameSaved, RenderStarted

    out, stop = tmp_path / "o.mp4", threading.Event()
    config = vidstyle.make_config(size=48, iters=3, first_iters=3, init="content", flow="none", device="cpu",
                                  precision="fp32")
    saved: list[int] = []

    def stop_after_two(event: object) -> None:
        if isinstance(event, FrameSaved):
            saved.append(event.index)
            if len(saved) == 2:
                stop.set()

    with pytest.raises(Interrupted):
        vidstyle.render(bunny_short, [starry], out, config, on_event=stop_after_two, stop=stop, start=0.2, end=0.4)
    assert saved[:2] == [5, 6] and not out.exists()
    started: list[RenderStarted] = []
    vidstyle.render(bunny_short, [starry], out, config, start=0.2, end=0.4,
                    on_event=lambda e: started.append(e) if isinstance(e, RenderStarted) else None)
    assert (started[0].total_frames, started[0].resume_from, started[0].first_frame) == (5, len(set(saved)), 5)
    done = len(set(saved))
    assert _resuming(started[0]) == f"resuming at frame {5 + done} ({done} of the 5 of this part)"
    finished = replace(started[0], resume_from=5, already_done=5)  # all kept: only the video is left to write
    assert _resuming(finished) == "all 5 frames already done; writing the video"
    assert probe_video(out).frame_count == 5


def _loudness(path: Path, start: float, seconds: float) -> float:
    """RMS (0..1) of the first audio stream from `start` for `seconds`, mono."""
    import subprocess

    from vidstyle.io.ffmpeg import ffmpeg_exe

    pcm = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-ss", str(start),
                          "-t", str(seconds), "-ac", "1", "-ar", "8000", "-f", "s16le", "-"],
                         capture_output=True, check=True).stdout
    samples = np.frombuffer(pcm, np.int16).astype(np.float64) / 32768
    return float(np.sqrt(np.mean(samples ** 2)))


def test_audio_stays_with_a_video_that_begins_after_it(starry: Path, tmp_path: Path) -> None:
    """A file whose first video frame comes 0.5 s after its audio begins (as in MPEG-TS or a recording): the
    audio is silent until the first frame, then a tone. The render starts at that frame, so with the tone."""
    from conftest import ffmpeg, needs_itsoffset

    clip = tmp_path / "late_video.mp4"
    ffmpeg("-f", "lavfi", "-i", "aevalsrc='if(gte(t,0.5),0.5*sin(2*PI*440*t),0)':d=1.5:s=44100",
           "-itsoffset", "0.5", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=1",
           "-map", "1:v", "-map", "0:a", "-c:v", "libx264", "-c:a", "aac", str(clip))
    needs_itsoffset(clip, late=True)
    assert _loudness(clip, 0, 0.4) < 0.01 < _loudness(clip, 0.55, 0.3), "the clip is made as described"
    _render(clip, starry, tmp_path / "whole.mp4")
    assert _loudness(tmp_path / "whole.mp4", 0, 0.3) > 0.2, "the tone plays with the first frame"
    _render(clip, starry, tmp_path / "part.mp4", "--start", "0.2", "--duration", "0.2")
    assert _loudness(tmp_path / "part.mp4", 0, 0.15) > 0.2, "and with a trimmed render's first frame"
    assert abs(_audio_seconds(tmp_path / "part.mp4") - 0.2) < 0.05


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_a_parts_audio_begins_at_its_first_frame_in_every_container(starry: Path, tmp_path: Path,
                                                                    suffix: str) -> None:
    """Copied into Matroska, the audio of a part kept what lay between the video keyframe its seek landed on (the
    file's first, a second before the cut here) and the cut: the file began with that audio and no picture."""
    from conftest import ffmpeg
    from test_io import _tone_onset

    clip = tmp_path / "beep.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=3", "-f", "lavfi", "-i",
           "aevalsrc='if(between(t,1.5,1.55),0.8*sin(2*PI*1000*t),0)':s=48000:d=3", "-c:v", "libx264",
           "-g", "250", "-c:a", "aac", str(clip))
    out = tmp_path / f"part{suffix}"
    assert main(["render", str(clip), "--style", str(starry), "-o", str(out), *INDEPENDENT[:-1], "--start", "1",
                 "--end", "2"]) == 0
    assert abs(_audio_seconds(out) - 1.0) < 0.05, "the second from 1 s to 2 s, no more"
    assert abs(_tone_onset(out) - 0.5) < 0.03, "the tone at 1.5 s of the source, 0.5 s into the part"


def test_an_end_past_the_videos_end_is_said_and_renders_to_the_end(bunny_short: Path, starry: Path,
                                                                   tmp_path: Path) -> None:
    """A start there is refused; an end there rendered the whole video without a word."""
    import vidstyle
    from vidstyle.events import RenderStarted

    started: list[RenderStarted] = []
    config = vidstyle.make_config("fast", size=32, iters=1, first_iters=1, device="cpu")
    out = vidstyle.render(bunny_short, [starry], tmp_path / "o.mp4", config, end=Fraction(99),
                          on_event=lambda e: started.append(e) if isinstance(e, RenderStarted) else None)
    info = probe_video(bunny_short)
    assert probe_video(out).frame_count == info.frame_count
    assert f"the end asked for, 99 s, is past the end of the video, which lasts {info.duration:.3f} s: rendered to " \
           "its end" in started[0].notes
    started.clear()
    vidstyle.render(bunny_short, [starry], tmp_path / "p.mp4", config, end=info.duration,
                    on_event=lambda e: started.append(e) if isinstance(e, RenderStarted) else None)
    assert not any("past the end" in note for note in started[0].notes), "its very end is no news"
