"""Measuring a stylized video: temporal stability, content fidelity and style strength.

- Warping error (Lai et al. 2018, "Learning Blind Video Temporal Consistency"): mean over consecutive pairs of
  the occlusion-masked squared difference between a frame and its flow-warped predecessor, pixels in 0..1,
  the flow taken from the *source* video. The source's own figure is the floor. The long-term figure does the
  same for frames 2, 4 and 8 apart in one shot. Each flow favours a render whose paint follows it, and where the
  source is flat (a sky) no flow estimated from it is right by more than its prior, so `measure_frames_along`
  gives the errors along several flows at once.
- Edge fidelity: per frame, the correlation of the output's and the source frame's edge-strength maps.
  Warping error alone rewards a render that freezes or smears; this catches both.
- Style gain: the sliced Wasserstein distance of image patches to the painting's (vidstyle.style_distance), which
  does not use the VGG19 the renderer optimizes, as a gain over the source frame's; `style_distances` gives the
  renderer's own Gram error instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from vidstyle.errors import InputError
from vidstyle.flow import is_scene_cut, reliable_flow, to_gray, warp
from vidstyle.io.decode import read_frames
from vidstyle.io.encode import written_timing
from vidstyle.io.probe import VideoInfo, probe_video, trim_frames
from vidstyle.style_distance import StyleDistance

LONG_TERM_GAPS = (2, 4, 8)  # frames apart for the long-term warping error
METRIC_FLOWS = ("farneback", "dis")  # the flows the warping errors are measured along where none is chosen


def edge_strength(rgb: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the grey image, lightly blurred so texture noise counts less than shape."""
    gray = cv2.GaussianBlur(to_gray(rgb).astype(np.float32) / 255.0, (0, 0), 1.0)
    return cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))


def edge_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two frames' edge-strength maps (1: same structure)."""
    ea, eb = edge_strength(a).ravel(), edge_strength(b).ravel()
    if ea.std() < 1e-9 or eb.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(ea, eb)[0, 1])


def source_motion(prev_src: np.ndarray, cur_src: np.ndarray, flow_method: str) -> tuple[np.ndarray, np.ndarray]:
    """Backward flow cur -> prev of the source and its (unblurred) reliability mask."""
    return reliable_flow(to_gray(cur_src), to_gray(prev_src), flow_method, blur_sigma=0)


def warp_difference(prev: np.ndarray, cur: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Per pixel, the squared difference (0..1 pixels, summed over colour) between `cur` and `prev` warped along
    `backward`."""
    carried = warp(prev.astype(np.float32) / 255.0, backward)
    return np.square(cur.astype(np.float32) / 255.0 - carried).sum(-1)


def warping_error(prev: np.ndarray, cur: np.ndarray, backward: np.ndarray, mask: np.ndarray) -> float:
    """Masked mean squared difference (0..1 pixels) between `cur` and `prev` warped along `backward`."""
    return float((mask * warp_difference(prev, cur, backward)).sum() / max(mask.sum(), 1.0))


@dataclass(frozen=True)
class VideoMetrics:
    frames: int
    # None where no two frames of a shot follow each other (one frame, or a cut at every frame): no flicker to see.
    warping_error: float | None  # of the output
    source_warping_error: float | None  # of the source itself: the floor
    edge_correlation: float  # mean over frames
    min_edge_correlation: float
    # Network-free style gain (vidstyle.style_distance) of sampled frames over their source frames, when the
    # painting is given: 1 is the painting's own patch statistics, 0 no closer to them than the source.
    style_gain: float | None = None
    # The same error between frames LONG_TERM_GAPS apart in one shot (mean over the gaps): whether a region
    # keeps its strokes over a second, not only from one frame to the next; and the source's own, its floor.
    long_term_warping_error: float | None = None  # None where the clip has no frames that far apart in a shot
    source_long_term_warping_error: float | None = None
    # Share of the pixels passing the metric's flow's forward-backward check: the pixels the warping errors count.
    # It does not say the flow is right: on a flat sky Farneback finds no motion and passes its check anyway
    # (docs/performance.md, "Along a known motion").
    flow_coverage: float | None = None  # None where no two frames of a shot follow each other

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class _Steadiness:
    """The warping errors along one flow, gathered pair by pair."""

    def __init__(self, flow_method: str) -> None:
        self.flow_method = flow_method
        self.errors: list[float] = []
        self.floor: list[float] = []
        self.coverage: list[float] = []
        self.long_errors: list[float] = []
        self.long_floor: list[float] = []

    def add_pair(self, shot: list[tuple[np.ndarray, np.ndarray]], out: np.ndarray, src: np.ndarray) -> None:
        """The current (out, src) against the shot so far (newest first): the step before and LONG_TERM_GAPS back."""
        if shot:
            backward, mask = source_motion(shot[0][1], src, self.flow_method)  # one flow serves both errors
            self.errors.append(warping_error(shot[0][0], out, backward, mask))
            self.floor.append(warping_error(shot[0][1], src, backward, mask))
            self.coverage.append(float(mask.mean()))
        for gap in LONG_TERM_GAPS:
            if gap <= len(shot):
                earlier_out, earlier_src = shot[gap - 1]
                backward, mask = source_motion(earlier_src, src, self.flow_method)
                self.long_errors.append(warping_error(earlier_out, out, backward, mask))
                self.long_floor.append(warping_error(earlier_src, src, backward, mask))

    def metrics(self, edges: list[float], gains: list[float]) -> VideoMetrics:
        mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731
        return VideoMetrics(len(edges), mean(self.errors), mean(self.floor), mean(edges) or 0.0,
                            float(min(edges)) if edges else 0.0, mean(gains), mean(self.long_errors),
                            mean(self.long_floor), mean(self.coverage))


def measure_frames_along(outputs: Iterable[np.ndarray], sources: Iterable[np.ndarray], flow_methods: Sequence[str],
                         cut_threshold: float = 0.5, style: np.ndarray | None = None,
                         style_every: int = 5) -> dict[str, VideoMetrics]:
    """Metrics over paired (output, source) frames of equal size, the warping errors along each of `flow_methods`
    (the other figures are the same in each); pairs across a scene cut are skipped.

    With the `style` painting, every `style_every`-th frame's network-free style gain is averaged too.
    """
    edges: list[float] = []
    gains: list[float] = []
    along = [_Steadiness(method) for method in flow_methods]
    shot: list[tuple[np.ndarray, np.ndarray]] = []  # (output, source) of the shot so far, newest first
    scorer: StyleDistance | None = None
    for out, src in zip(outputs, sources, strict=False):  # a render may be cut short; score what both have
        if style is not None and len(edges) % style_every == 0:
            scorer = scorer or StyleDistance(style, (out.shape[1], out.shape[0]))
            gains.append(scorer.gain(out, src))
        edges.append(edge_correlation(out, src))
        if shot and is_scene_cut(shot[0][1], src, cut_threshold):
            shot = []
        for steadiness in along:
            steadiness.add_pair(shot, out, src)
        shot = [(out, src), *shot][:max(LONG_TERM_GAPS)]
    return {steadiness.flow_method: steadiness.metrics(edges, gains) for steadiness in along}


def measure_frames(outputs: Iterable[np.ndarray], sources: Iterable[np.ndarray], flow_method: str = "farneback",
                   cut_threshold: float = 0.5, style: np.ndarray | None = None,
                   style_every: int = 5) -> VideoMetrics:
    """`measure_frames_along` one flow."""
    return measure_frames_along(outputs, sources, (flow_method,), cut_threshold, style, style_every)[flow_method]


def check_pair(output: VideoInfo, source: VideoInfo, part: tuple[int, int] | None = None) -> tuple[int, ...] | None:
    """Refuse to score a video against a source it was not rendered from: another length or shape of picture.
    Returns how many pictures of the output each source frame fills (None: one each, paired by index).

    A render keeps every frame and the aspect ratio (to the even pixel), so either difference means another clip.
    `part` is the source's frames [first, stop) a render of part of it was made from.
    """
    first, stop = part or (0, source.frame_count)
    repeats = written_timing(source, first, stop)[1]
    # A variable-rate source's render holds its frames for their times (more pictures than frames); one written a
    # picture a frame (another tool's, an older vidstyle's) is paired by index.
    if repeats is not None and output.frame_count == stop - first:
        repeats = None
    expected = sum(repeats) if repeats is not None else stop - first
    if output.frame_count != expected:
        hint = (" (a render of part of it is compared with that part: give the same start and end as the "
                "render)") if output.frame_count < expected else ""
        what = f"{'' if part is None else 'that part of '}{source.path} has {stop - first}"
        written = f" (written as {expected} at one rate)" if repeats is not None else ""
        frames = "1 frame" if output.frame_count == 1 else f"{output.frame_count} frames"
        raise InputError(f"{output.path} has {frames} and {what}{written}: "
                         f"it was not rendered from that source{hint}")
    out_aspect, src_aspect = output.width / output.height, source.width / source.height
    # A render rounds both sides to even pixels: at small sizes that moves the aspect by up to a pixel a side.
    rounding = 2.0 / min(output.width, output.height)
    if abs(out_aspect / src_aspect - 1) > 0.03 + rounding:
        raise InputError(f"{output.path} is {output.width}x{output.height} and {source.path} "
                         f"{source.width}x{source.height}: another shape of picture. The figures compare a render "
                         "with its source at the source's shape: another clip, or a render written at an output "
                         "size of another shape, cannot be scored")
    return repeats


def _paired_frames(output: Path, source: Path, start: float | None,
                   end: float | None) -> tuple[Iterator[np.ndarray], Iterator[np.ndarray]]:
    out_info, src_info = probe_video(output), probe_video(source)
    part = trim_frames(src_info, start, end)
    repeats = check_pair(out_info, src_info, part)
    size = (out_info.width, out_info.height)
    first, stop = part or (0, src_info.frame_count)
    outputs = (f.rgb for f in read_frames(out_info, size))
    sources = (f.rgb for f in read_frames(src_info, size, first, stop))
    if repeats is None:
        return outputs, sources
    # A variable-rate source is written at one rate, each frame repeated for as long as it lasted (0: dropped where
    # the source is faster): each source frame that was written is paired with its first picture, so that a frame
    # held for a gap is not scored as a still scene again and again.
    starts = set(np.cumsum((0, *repeats[:-1]))[np.asarray(repeats) > 0].tolist())
    return ((rgb for index, rgb in enumerate(outputs) if index in starts),
            (rgb for rgb, count in zip(sources, repeats, strict=True) if count > 0))


def measure_video_along(output: Path, source: Path, flow_methods: Sequence[str] = METRIC_FLOWS,
                        style: np.ndarray | None = None, start: float | None = None,
                        end: float | None = None) -> dict[str, VideoMetrics]:
    """Metrics of a rendered video against its source (the source is decoded at the output's size), the warping
    errors along each of `flow_methods`; with the `style` painting, the network-free style gain too. `start` and
    `end` (seconds) pick the part of the source a render of part of it was made from, as the render picked it."""
    outs, srcs = _paired_frames(Path(output), Path(source), start, end)
    return measure_frames_along(outs, srcs, flow_methods, style=style)


def measure_video(output: Path, source: Path, flow_method: str = "farneback",
                  style: np.ndarray | None = None, start: float | None = None,
                  end: float | None = None) -> VideoMetrics:
    """`measure_video_along` one flow."""
    return measure_video_along(output, source, (flow_method,), style, start, end)[flow_method]


def style_distances(frames: Iterable[np.ndarray], style_rgb: np.ndarray, every: int = 1) -> list[float]:
    """Relative Gram error (mean over the style layers) of every `every`-th frame against the style image (its
    targets as the render's: without the painting's edge, stylize.PAINTING_BAND; figures taken before that are not
    comparable)."""
    import torch

    from vidstyle.config import Config
    from vidstyle.model import STYLE_LAYERS
    from vidstyle.stylize import Stylizer, to_tensor

    stylizer = Stylizer(Config(precision="fp32", device="cpu"), [style_rgb])
    found = []
    with torch.no_grad():
        for i, frame in enumerate(frames):
            if i % every:
                continue
            loss = stylizer.style_loss((frame.shape[1], frame.shape[0]))
            feats = stylizer.features(to_tensor(frame, stylizer.device))
            found.append(float(loss({k: feats[k] for k in STYLE_LAYERS})))
    return found
