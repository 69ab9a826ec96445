"""More passes over a shot (Ruder et al. 2018, section 3.3): backward and forward in turn after the first pass."""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import child_ffmpeg_pids, decoded, run_cli, shared_asset

import vidstyle
from vidstyle.cli import _Progress
from vidstyle.config import make_config
from vidstyle.errors import DecodeError, Interrupted, SettingError
from vidstyle.events import Event, FrameDone, FrameStarted, RenderFinished, RenderStarted, ignore_event
from vidstyle.flow import reliable_flow
from vidstyle.io.decode import Frame, read_frames
from vidstyle.io.images import read_image
from vidstyle.io.probe import probe_video, size_to_fit
from vidstyle.metrics import measure_video
from vidstyle.passes import (
    BLEND,
    LATER_PASS_SHARE,
    SOURCE_BLOCK,
    SOURCE_WINDOW_BYTES,
    MemoryPasses,
    NeighbourFlows,
    SourceWindow,
    neighbour_start,
    pass_order,
    refine,
    source_block,
    stylize_shot,
)
from vidstyle.sequence import SHARP_FROM, SHARP_FULL, carry_sharpness
from vidstyle.stylize import Stylizer

ITERS = 16  # a later pass gets a quarter: 4 iterations
FIRST_ITERS = 12


def _config(passes: int, **more: object):
    # tol 0: every frame of every pass spends its whole budget, which the tests count.
    return make_config("fast", size=64, iters=ITERS, first_iters=FIRST_ITERS, flow="dis", temporal_weight=10.0,
                       passes=passes, tol=0.0, device="cpu", precision="fp32", **more)


def test_passes_alternate_direction() -> None:
    assert list(pass_order(1, 3, 6)) == [3, 4, 5]
    assert list(pass_order(2, 3, 6)) == [5, 4, 3]
    assert list(pass_order(3, 3, 6)) == [3, 4, 5]


def test_sources_stream_forward_and_come_in_blocks_backward(bunny_short: Path) -> None:
    info = probe_video(bunny_short)
    size = (64, 36)
    full = [f.rgb.copy() for f in read_frames(info, size)]
    for forward in (True, False):
        reads: list[tuple[int, int]] = []

        def read(start: int, stop: int, reads: list[tuple[int, int]] = reads) -> object:
            reads.append((start, stop))
            return read_frames(info, size, start, stop)

        window = SourceWindow(read, 1, 11, forward=forward, block=4)  # type: ignore[arg-type]
        for index in pass_order(1 if forward else 2, 1, 11):
            assert np.array_equal(window(index), full[index])
            if index + 1 < 11 and forward or index - 1 >= 1 and not forward:  # the neighbour a pass looks at
                assert np.array_equal(window(index + (1 if forward else -1)), full[index + (1 if forward else -1)])
        window.close()
        assert reads == ([(1, 11)] if forward else [(7, 11), (3, 7), (1, 3)])
    assert not child_ffmpeg_pids()


def test_a_backward_pass_decodes_blocks_as_large_as_a_fixed_memory_allows(bunny_short: Path) -> None:
    """Each block is decoded anew from a keyframe before it: at the balanced preset's 512 px a block of 32 frames
    decoded up to a GOP or two (or the whole video before it) for every 32 frames."""
    info = probe_video(bunny_short)
    last = [f.rgb.copy() for f in read_frames(info, (64, 36), 10, 11)]
    window = SourceWindow.of_video(info, (64, 36), 0, 11, forward=False)
    assert window.block == source_block((64, 36)) and np.array_equal(window(10), last[0])
    for size in ((512, 288), (720, 406), (64, 36)):
        block = source_block(size)
        assert block > SOURCE_BLOCK and 2 * block * size[0] * size[1] * 3 <= SOURCE_WINDOW_BYTES
    assert source_block((512, 288)) >= 250, "at least x264's default keyframe interval at the default size"
    assert source_block((3840, 2160)) == SOURCE_BLOCK, "at least 32 frames, however large"


@pytest.mark.parametrize("forward", [True, False])
def test_a_video_that_gives_fewer_frames_than_it_held_is_named_as_such(bunny_short: Path, forward: bool) -> None:
    """A later pass decodes the source again; a video damaged since (here: one that stops at frame 6 of 11) was
    a bare StopIteration or KeyError, and on a worker an error with no words at all."""
    info = probe_video(bunny_short)

    def read(start: int, stop: int) -> object:
        return read_frames(info, (64, 36), start, min(stop, 6))

    window = SourceWindow(read, 0, 11, forward=forward, block=4)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="the video ended before frame 8, which it had when the render began"):
        window(8)
    window.close()


def test_a_frame_starts_half_from_its_warped_neighbour_where_the_flow_is_reliable(bunny_short: Path) -> None:
    source = next(read_frames(probe_video(bunny_short), (64, 36))).rgb.copy()
    own = np.full_like(source, 200)
    near = np.full_like(source, 100)
    start, warped, reliable = neighbour_start(source, own, (source, near), _config(2))  # no motion: all reliable
    assert reliable.min() > 0.99
    assert np.allclose(warped, 100, atol=1)
    expected = BLEND * 100 + (1 - BLEND) * 200
    assert np.abs(start.astype(float) - expected).max() <= 1.5


def test_a_later_pass_keeps_the_neighbours_finest_strokes_from_256_px() -> None:
    info = probe_video(shared_asset("bikes_street_no_audio.mp4"))

    def grain_kept(long_side: int) -> float:
        source = next(read_frames(info, size_to_fit(info.width, info.height, long_side), 54, 55)).rgb.copy()
        h, w = source.shape[:2]
        half_pixel = np.float32([[1, 0, 0.5], [0, 1, 0]])  # the neighbour: the scene half a pixel to the right
        near = cv2.warpAffine(source, half_pixel, (w, h), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)
        grain = np.clip(np.random.default_rng(0).normal(128, 30, source.shape), 0, 255).astype(np.uint8)
        _, warped, _ = neighbour_start(source, source, (near, grain), _config(2))
        inner = np.zeros((h, w), bool)
        inner[8:-8, 8:-8] = True
        return float(warped[inner].std() / grain[inner].std())

    # A bilinear sample half-way between pixels averages two: about 0.7 of a grain's spread is left.
    assert carry_sharpness(SHARP_FULL) == 1.0 and carry_sharpness(SHARP_FROM) == 0.0
    kept, blurred = grain_kept(SHARP_FULL), grain_kept(SHARP_FROM)
    assert kept > 0.9 and blurred < 0.8, (kept, blurred)


def test_passes_need_flow() -> None:
    with pytest.raises(SettingError, match="passes"):
        make_config("fast", passes=2, flow="none")
    with pytest.raises(SettingError, match="passes"):
        make_config("fast", passes=0, flow="dis")


def test_a_second_pass_steadies_the_render(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    errors = {}
    for passes in (1, 2):
        events: list[Event] = []
        out = vidstyle.render(bunny_short, [starry], tmp_path / f"p{passes}.mp4", _config(passes),
                              on_event=events.append)
        frames = len(decoded(out))
        assert frames == probe_video(bunny_short).frame_count
        started = [e for e in events if isinstance(e, RenderStarted)][0]
        assert started.passes == passes
        assert sum(isinstance(e, FrameDone) for e in events) == frames * passes
        finished = [e for e in events if isinstance(e, RenderFinished)][0]
        assert finished.stylized == frames  # counted once a frame, however many passes
        later_pass = max(1, round(ITERS * LATER_PASS_SHARE))
        least = min(ITERS, FIRST_ITERS) + (passes - 1) * later_pass
        assert finished.iterations is not None and finished.iterations[1] >= least
        errors[passes] = measure_video(out, bunny_short).warping_error
        assert not list(tmp_path.glob("*.vidstyle-work")), "the work directory, pass frames included, is removed"
    # The first pass now holds each frame to its own palette's colours (sequence.warm_start), so there is less left
    # for a second pass to steady at this size and budget than at 96 px (docs/performance.md: 23-38 % there).
    assert errors[2] < 0.95 * errors[1], errors


def test_an_interrupted_pass_resumes_and_makes_the_same_frames(bunny_short: Path, starry: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(3, keep_frames=True)
    whole = vidstyle.render(bunny_short, [starry], tmp_path / "whole.mp4", config, workdir=tmp_path / "w1")
    count = probe_video(bunny_short).frame_count
    stop = threading.Event()
    seen: list[Event] = []

    def stop_in_pass_two(event: Event) -> None:
        seen.append(event)
        if sum(isinstance(e, FrameDone) for e in seen) == count + 3:  # the first pass, and three of the second
            stop.set()

    with pytest.raises(Interrupted) as stopped:
        vidstyle.render(bunny_short, [starry], tmp_path / "resumed.mp4", config, workdir=tmp_path / "w2",
                        on_event=stop_in_pass_two, stop=stop)
    # The pass named with the frame, as the progress names it (a frame alone read as a frame of the first pass).
    last_started = [e for e in seen if isinstance(e, FrameStarted)][-1]
    assert last_started.pass_number == 2
    assert str(stopped.value) == (f"interrupted at frame {last_started.index} of pass 2; run it again with the same "
                                  "settings to resume")
    assert not (tmp_path / "resumed.mp4").exists()
    assert len(list((tmp_path / "w2" / "passes" / "1").glob("*.png"))) == count
    assert len(list((tmp_path / "w2" / "passes" / "2").glob("*.png"))) == 3
    again: list[Event] = []
    resumed = vidstyle.render(bunny_short, [starry], tmp_path / "resumed.mp4", config, workdir=tmp_path / "w2",
                              on_event=again.append)
    started = next(e for e in again if isinstance(e, RenderStarted))
    assert started.already_done == 0, "only final frames count as done"
    assert (f"resuming 3 passes over {count} frames; frames already made: pass 1 {count}/{count}, pass 2 3/{count}"
            in started.notes), started.notes
    assert started.earlier_passes_made == (count, 3) and started.fresh_left == 0, "pass 1 and 3 of pass 2 are made"
    # The CLI's progress starts at the passes made and ends at the whole render (it stopped at 2/3 before), saying
    # which pass is at which frame.
    progress = _Progress(quiet=False)
    progress.PLAIN_EVERY = 0.0  # type: ignore[misc] - a line every frame
    for event in again:
        progress(event)
    progress.close()
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if re.match(r"pass \d of 3, frame \d+, \d+% done: ", line)]
    assert len(lines) == 2 * count - 3 and not any(line.startswith("resuming at") for line in err), err
    assert lines[0].startswith(f"pass 2 of 3, frame {count - 4}, {100 * (count + 4) // (3 * count)}% done")
    assert lines[-1].startswith(f"pass 3 of 3, frame {count - 1}, 100% done"), lines
    # Pass 2 goes on backward from the fourth frame from the end; pass 3 makes every frame.
    redone = [e.index for e in again if isinstance(e, FrameStarted)]
    assert redone == list(range(count - 4, -1, -1)) + list(range(count))
    for index in range(count):
        name = f"{index:07d}.png"
        assert np.array_equal(read_image(tmp_path / "w1" / "frames" / name),
                              read_image(tmp_path / "w2" / "frames" / name)), f"frame {index} differs"
    assert len(decoded(resumed)) == len(decoded(whole)) == count
    assert not (tmp_path / "w2" / "passes").exists(), "the passes before the last are dropped once it is made"


def test_a_render_stopped_between_two_shots_says_what_each_pass_has_made(starry: Path, tmp_path: Path) -> None:
    """The first shot's frames are final (every pass made, earlier passes' files deleted), the second not begun: the
    resume said nothing at all, neither 'resuming at frame N' (not for several passes) nor the passes' note."""
    clip = Path(__file__).parent / "data" / "cut_reference" / "cut.mkv"  # a hard cut at frame 6 of 12
    config = replace(_config(2), iters=4, first_iters=4)
    stop = threading.Event()

    def stop_at_the_second_shot(event: Event) -> None:
        if isinstance(event, FrameStarted) and event.index == 6:
            stop.set()

    with pytest.raises(Interrupted):
        vidstyle.render(clip, [starry], tmp_path / "o.mp4", config, on_event=stop_at_the_second_shot, stop=stop)
    again: list[Event] = []
    vidstyle.render(clip, [starry], tmp_path / "o.mp4", config, on_event=again.append)
    started = next(e for e in again if isinstance(e, RenderStarted))
    assert started.already_done == 6 and started.earlier_passes_made == (0,) and started.fresh_left == 1
    assert "resuming 2 passes over 12 frames; frames already made: pass 1 6/12, pass 2 6/12" in started.notes, \
        started.notes


def test_a_resume_counts_a_frame_made_in_a_pass_as_made_in_the_passes_before(tmp_path: Path) -> None:
    """Ray workers delete a pass's frames once every task of the next pass has read them: a frame of pass 2 whose
    pass-1 file is gone was still made in pass 1. Final frames and frames outside the span are not counted."""
    from vidstyle.checkpoint import WorkDir
    from vidstyle.pipeline import earlier_pass_frames

    work = WorkDir(tmp_path / "w")
    for number, indices in ((1, range(6, 12)), (2, range(0, 8)), (3, range(0, 3))):
        for index in indices:
            path = work.pass_path(number, index)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
    made = earlier_pass_frames(work, (1, 11), 4, done={1})
    assert made == ({2, 3, 4, 5, 6, 7, 8, 9, 10}, {2, 3, 4, 5, 6, 7}, {2})


class _Recorded(MemoryPasses):
    """Pass frames in memory that remember which ones were read."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[tuple[int, int]] = []

    def load(self, number: int, index: int) -> np.ndarray | None:
        self.read.append((number, index))
        return super().load(number, index)


def test_a_piece_of_a_shot_reads_its_neighbours_across_its_edges_as_the_pass_before_left_them(
        bunny_short: Path, starry: Path) -> None:
    """Workers refine pieces of one shot at once: a piece's edge frames are held to the neighbouring piece's frames
    of the pass before (never this pass's, which may or may not exist yet), so the result never depends on timing."""
    config = _config(2)
    stylizer = Stylizer(config, [read_image(starry)])
    frames = [Frame(f.index, f.rgb.copy()) for f in read_frames(probe_video(bunny_short), (64, 36), 0, 9)]
    sources = {f.index: f.rgb for f in frames}
    first = _Recorded()
    for index, rgb in enumerate(stylize_shot(frames, Stylizer(replace(config, passes=1), [read_image(starry)]))):
        first.save(1, index, rgb)
    pieces: dict[tuple[int, int] | None, _Recorded] = {}
    for shot in (None, (3, 9), (0, 9)):  # alone; with a neighbour above (where the pass starts); on both sides
        store = pieces[shot] = _Recorded()
        store.frames = dict(first.frames)
        store.frames[(2, 6)] = np.zeros_like(sources[6])  # this pass's frame next to the piece: never read
        refine(2, 3, 6, sources.__getitem__, store, stylizer, ignore_event, shot=shot)
        assert sorted(i for n, i in store.frames if n == 2) == [3, 4, 5, 6], "only the piece's frames are made"
        assert (2, 6) not in store.read, "neighbours come from the pass before"
    assert all(i in range(3, 6) for n, i in pieces[None].read), "a whole shot reads nothing outside it"
    assert (1, 6) in pieces[(3, 9)].read and (1, 2) not in pieces[(3, 9)].read and (1, 2) in pieces[(0, 9)].read
    # The pass (backward) starts at 5 from its neighbour above; it ends at 3, held to its neighbour below.
    assert not np.array_equal(pieces[(3, 9)].frames[(2, 5)], pieces[None].frames[(2, 5)])
    assert np.array_equal(pieces[(0, 9)].frames[(2, 4)], pieces[(3, 9)].frames[(2, 4)])
    assert not np.array_equal(pieces[(0, 9)].frames[(2, 3)], pieces[(3, 9)].frames[(2, 3)])


@pytest.mark.parametrize("temporal_weight", [10.0, 0.0])
def test_a_later_pass_estimates_each_neighbouring_pair_s_flow_once(bunny_short: Path, starry: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  temporal_weight: float) -> None:
    """A frame warps both neighbours onto itself, and the next frame warps it back: the pair's two estimates serve
    both (they were made twice), and the flows are those reliable_flow gives each way."""
    import vidstyle.flow

    config = replace(_config(2), flow="dis+farneback", temporal_weight=temporal_weight)
    stylizer = Stylizer(config, [read_image(starry)])
    sources = {f.index: f.rgb.copy() for f in read_frames(probe_video(bunny_short), (64, 36), 0, 6)}
    store = MemoryPasses()
    for index, rgb in sources.items():
        store.save(1, index, rgb)  # the pass before: any picture will do for counting
    estimated: list[tuple[str, bytes, bytes]] = []
    estimate = vidstyle.flow.estimate_flow

    def counted(a: np.ndarray, b: np.ndarray, method: str = "dis") -> np.ndarray:
        estimated.append((method, a.tobytes(), b.tobytes()))
        return estimate(a, b, method)

    monkeypatch.setattr(vidstyle.flow, "estimate_flow", counted)
    refine(2, 0, 6, sources.__getitem__, store, stylizer, ignore_event)
    # 5 neighbouring pairs, each estimated both ways with each of the two methods.
    assert len(estimated) == 5 * 2 * 2 and len(set(estimated)) == len(estimated), estimated
    flows = NeighbourFlows("dis+farneback")
    for index, other in ((3, 2), (2, 3), (2, 1)):
        gray, other_gray = (cv2.cvtColor(sources[i], cv2.COLOR_RGB2GRAY) for i in (index, other))
        flow, mask = flows.between(index, sources[index], other, sources[other])
        alone_flow, alone_mask = reliable_flow(gray, other_gray, "dis+farneback")
        assert np.array_equal(flow, alone_flow) and np.array_equal(mask, alone_mask)
    assert len(flows.held) <= 2


def test_cli_passes_option(bunny_short: Path, starry: Path, tmp_path: Path) -> None:
    refused = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(tmp_path / "o.mp4"),
                      "--passes", "2", "--flow", "none")
    assert refused.returncode == 2
    assert "passes" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # The flow turned off by a preset, not by the user: the refusal says which.
    preset = run_cli("render", str(bunny_short), "--style", str(starry), "-o", str(tmp_path / "o.mp4"),
                     "--passes", "2", "--config", "fast")
    assert preset.returncode == 2 and preset.stderr.strip().endswith("(the fast preset sets --flow none)"), \
        preset.stderr
    assert len(preset.stderr.strip().splitlines()) == 1


def test_frames_in_memory_take_the_same_passes_as_a_render(bunny_short: Path, starry: Path,
                                                           tmp_path: Path) -> None:
    """passes.stylize_shot (a benchmark's, the API's) and a render make the same frames, pass for pass."""
    config = _config(2, keep_frames=True)
    vidstyle.render(bunny_short, [starry], tmp_path / "out.mp4", config, workdir=tmp_path / "work")
    info = probe_video(bunny_short)
    frames = [Frame(f.index, f.rgb.copy()) for f in read_frames(info, (64, 36))]
    made = stylize_shot(frames, Stylizer(config, [read_image(starry)]))
    for index, rgb in enumerate(made):
        assert np.array_equal(rgb, read_image(tmp_path / "work" / "frames" / f"{index:07d}.png")), index


def test_dropping_a_pass_or_overlap_frame_never_deletes_through_a_link(tmp_path: Path) -> None:
    """A folder of the work directory replaced by a link leads to files this render did not make, whatever they
    are named: dropping frames by name unlinked them there (removing checkpoints already refused to)."""
    from vidstyle.checkpoint import WorkDir
    from vidstyle.distributed import ChunkFiles

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "0000003.png").write_bytes(b"a picture of theirs")
    work = WorkDir(tmp_path / "work")
    (work.path / "passes").mkdir(parents=True)
    (work.path / "passes" / "1").symlink_to(theirs)
    (work.path / "chunks").mkdir()
    (work.path / "chunks" / "lead").symlink_to(theirs)
    work.drop_pass_frames(1, [3])
    work.remove_pass_frames(1, range(3, 4))
    ChunkFiles(work).drop_overlap([3])
    assert (theirs / "0000003.png").read_bytes() == b"a picture of theirs"
