"""Stylizing a single picture: the first-frame path of a render, without video around it."""

from __future__ import annotations

import time
from pathlib import Path

from vidstyle.config import Config
from vidstyle.errors import UsageError
from vidstyle.events import EventCallback, FrameDone, FrameStarted, IterationDone, ignore_event
from vidstyle.io.images import encode_image, read_image, resize_rgb, write_atomic
from vidstyle.io.paths import check_output_path
from vidstyle.io.probe import size_to_fit
from vidstyle.stylize import Stylizer

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _check_output(content: Path, output: Path, overwrite: bool) -> None:
    if output.suffix.lower() not in _IMAGE_SUFFIXES:
        raise UsageError(f"output must be an image ({', '.join(_IMAGE_SUFFIXES)}), got {output.name}")
    check_output_path(output, content, overwrite)


def stylize_image(content_path: Path | str, style_paths: list[Path | str], output: Path | str,
                  config: Config | None = None, *, overwrite: bool = False,
                  on_event: EventCallback = ignore_event) -> Path:
    """Paint one image in the style(s); `config.first_iters` iterations from the content. Returns `output`."""
    config = config or Config()
    content_path, output = Path(content_path), Path(output)
    if not style_paths:
        raise UsageError("at least one --style image is needed")
    _check_output(content_path, output, overwrite)
    content = read_image(content_path, "content image")
    styles = [read_image(Path(p), "style image") for p in style_paths]
    content = resize_rgb(content, size_to_fit(content.shape[1], content.shape[0], config.size))
    stylizer = Stylizer(config, styles)
    iters = stylizer.fresh_iterations(content.shape, config.first_iters)
    on_event(FrameStarted(0, iters, True))
    started = time.perf_counter()
    result = stylizer.stylize_fresh(content, config.first_iters,
                                    on_step=lambda i, _loss: on_event(IterationDone(0, i, iters)))
    on_event(FrameDone(0, result.loss, time.perf_counter() - started, True))
    write_atomic(output, encode_image(result.rgb, output.suffix.lower()))
    return output
