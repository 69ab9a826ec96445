"""Many renders in one call: several inputs, and one output per style where asked, the network loaded once.

Every render is checked before the first one starts, so a mistake in the fourth input is reported at once, not
after an hour; a render that cannot be done is reported and the others go on. An output that already exists is
skipped (not an error), so re-running an interrupted batch finishes it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidstyle.assets import StylePaths, resolve_styles
from vidstyle.config import Config, check_call_arguments, check_style_count, config_or_default, path_argument
from vidstyle.errors import Interrupted, OutputExists, SettingError, UsageError, VidstyleError
from vidstyle.events import BatchItemEnded, BatchItemStarted, Event, EventCallback, ignore_event
from vidstyle.io.images import read_style_image
from vidstyle.io.paths import same_file
from vidstyle.io.probe import check_order, check_times
from vidstyle.pipeline import (
    RenderJob,
    check_cluster_config,
    check_cluster_job,
    default_output,
    on_cluster,
    prepare_render,
    render_job,
)
from vidstyle.stylize import Stylizer, resolve_device

# render()'s Ray options, in on_cluster's order, which a batch passes on to each render.
_CLUSTER_OPTIONS = ("workers", "ray_address", "chunk_frames", "overlap")

_log = logging.getLogger("vidstyle.batch")


@dataclass(frozen=True)
class BatchItem:
    """One render of a batch: an input and the styles of its output (one, or a blend of all)."""

    input: Path
    styles: tuple[Path, ...]
    output: Path


@dataclass(frozen=True)
class BatchResult:
    item: BatchItem
    status: str  # "written", "skipped" (the output exists) or "failed"
    reason: str = ""  # why it was skipped or failed, one line


def plan_batch(inputs: Sequence[Path | str] | Path | str, style_paths: StylePaths, *, each_style: bool = False,
               output_dir: Path | str | None = None) -> list[BatchItem]:
    """The renders of a batch, named as a single render names its output, beside each input or in `output_dir`."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]  # one video, not its letters
    if not isinstance(inputs, Iterable) or isinstance(inputs, bytes):
        raise SettingError("inputs", f"must be a video's path or a list of them (got {type(inputs).__name__})")
    inputs = list(inputs)
    if not inputs:
        raise SettingError("inputs", "is empty: give at least one video")
    if not style_paths:
        raise SettingError("style_paths", "is empty: give at least one style image")
    styles = resolve_styles(style_paths)
    if output_dir is not None and not path_argument("output_dir", output_dir, "folder").is_dir():
        raise SettingError("output_dir", f"{output_dir} is not a directory")
    groups = [(style,) for style in styles] if each_style else [styles]
    items, folder = [], Path(output_dir) if output_dir else None
    for source in (path_argument("inputs", each) for each in inputs):
        for group in groups:
            items.append(BatchItem(source, group, default_output(source, group, folder)))
    _check_distinct(items)
    return items


def _check_distinct(items: list[BatchItem]) -> None:
    seen: dict[Path, BatchItem] = {}
    for item in items:
        key = item.output.resolve()
        if key in seen:
            raise UsageError(f"two renders would both be written to {item.output}: {_describe(seen[key])} and "
                             f"{_describe(item)}; give each input and style once, and inputs or styles of one name "
                             "in separate commands")
        seen[key] = item
    for item in items:
        # Rendered in turn, an earlier render would replace a later one's input (or a style) before it is read.
        for other in items:
            for read in (other.input, *other.styles):
                if same_file(item.output, read):
                    raise UsageError(f"{_describe(item)} would be written to {item.output}, which this command also "
                                     "reads; choose another output folder")


def _describe(item: BatchItem) -> str:
    return f"{item.input} as {' + '.join(p.name for p in item.styles)}"


def render_many(inputs: Sequence[Path | str] | Path | str, style_paths: StylePaths, config: Config | None = None, *,
                each_style: bool = False, output_dir: Path | str | None = None, overwrite: bool = False,
                restart: bool = False, on_event: EventCallback = ignore_event, stop: threading.Event | None = None,
                start: float | None = None, end: float | None = None, **cluster: Any) -> list[BatchResult]:
    """Render every input with the styles (blended, or `each_style` one output per style), one after another.

    `start`/`end` and the Ray options (`workers`, `ray_address`, `chunk_frames`, `overlap`) mean what they mean
    for render(), for every render of the batch. Returns one result per render, in order. Interruption (Ctrl-C,
    SIGTERM, `stop`) ends the whole batch with Interrupted; finished outputs stay, and the same call later skips
    them and resumes the interrupted one.
    """
    check_call_arguments(each_style=each_style, overwrite=overwrite, restart=restart, stop=stop, on_event=on_event)
    config = config_or_default(config)
    if each_style and config.style_blend:
        raise SettingError("style_blend", "mixes several styles into one output, and each_style makes one output "
                                          "per style: use one or the other")
    unknown = set(cluster) - set(_CLUSTER_OPTIONS)
    if unknown:
        raise TypeError(f"render_many() got unexpected keyword argument(s) {', '.join(sorted(unknown))}")
    items = plan_batch(inputs, style_paths, each_style=each_style, output_dir=output_dir)
    distributed = on_cluster(*(cluster.get(k) for k in _CLUSTER_OPTIONS))
    # What is the same for every item is refused once, here, not reported as each item's failure.
    if start is not None or end is not None:
        check_order(*check_times(start, end))
    device = resolve_device(config.device)
    for group in {item.styles for item in items}:
        check_style_count(config, len(group))
    for style in dict.fromkeys(style for item in items for style in item.styles):
        read_style_image(style)  # a painting that is missing or cannot be read fails every item alike
    if distributed:
        check_cluster_config(config)
        from vidstyle.distributed import Cluster

        Cluster.of(*(cluster.get(k) for k in _CLUSTER_OPTIONS), device=device)
    prepared = [_prepare(item, config, overwrite, start, end, distributed) for item in items]
    stylizers: dict[tuple[Path, ...], Stylizer] = {}
    results = []
    for position, (item, job) in enumerate(zip(items, prepared, strict=True)):
        on_event(BatchItemStarted(position, len(items), item.input, item.styles, item.output))
        result = job if isinstance(job, BatchResult) else _render_one(
            item, job, None if distributed else stylizers, restart, on_event, stop, cluster)
        on_event(BatchItemEnded(position, len(items), item.output, result.status, result.reason))
        results.append(result)
    return results


def _prepare(item: BatchItem, config: Config, overwrite: bool, start: float | None, end: float | None,
             distributed: bool) -> RenderJob | BatchResult:
    try:
        job = prepare_render(item.input, item.styles, item.output, config, overwrite=overwrite, start=start, end=end)
        if distributed:
            check_cluster_job(job)
    except OutputExists:
        return BatchResult(item, "skipped", f"{item.output} exists")
    except VidstyleError as exc:
        return BatchResult(item, "failed", str(exc))
    return job


def _render_one(item: BatchItem, job: RenderJob, stylizers: dict[tuple[Path, ...], Stylizer] | None,
                restart: bool, on_event: EventCallback, stop: threading.Event | None,
                cluster: dict[str, Any]) -> BatchResult:
    caller_raised: list[Exception] = []

    def relay(event: Event) -> None:
        try:
            on_event(event)
        except Exception as exc:
            caller_raised.append(exc)
            raise

    try:
        stylizer = _stylizer_for(job, stylizers) if stylizers is not None else None
        render_job(job, restart=restart, on_event=relay, stop=stop, stylizer=stylizer, **cluster)
    except Interrupted:
        raise
    except OutputExists as exc:  # written since the batch began (by another run): kept, as one found at the start
        return BatchResult(item, "skipped", str(exc))
    except Exception as exc:  # noqa: BLE001 - one render's failure must not stop the others; it is reported
        if caller_raised:  # the caller's own on_event failed, not this render: theirs to see, as render() gives it
            raise caller_raised[0] from None
        if isinstance(exc, VidstyleError):
            return BatchResult(item, "failed", str(exc))
        # Not an error of the input or the settings: where it came from is kept for the CLI's --debug.
        _log.debug("the render of %s failed", item.output, exc_info=exc)
        return BatchResult(item, "failed", f"{type(exc).__name__}: {exc}")
    return BatchResult(item, "written")


def _stylizer_for(job: RenderJob, stylizers: dict[tuple[Path, ...], Stylizer]) -> Stylizer:
    """One Stylizer per style set (its style targets), all on the one network loaded for the first. (A render
    on Ray workers loads the network in each worker instead.)"""
    if job.styles not in stylizers:
        network = next(iter(stylizers.values())).vgg if stylizers else None
        stylizers[job.styles] = Stylizer(job.config, list(job.style_images), job.device, vgg=network)
    return stylizers[job.styles]
