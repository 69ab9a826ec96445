"""Stylizing a single picture: a sequence of one frame, without video around it."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import cv2
import numpy as np
import torch

from vidstyle.animation import IterateRecorder, check_animation
from vidstyle.assets import StylePaths, resolve_styles
from vidstyle.config import (
    ANIMATION_EVERY,
    Config,
    check_call_arguments,
    check_style_count,
    config_or_default,
    path_argument,
)
from vidstyle.errors import STOPS, Interrupted, OutputExists, SettingError, UsageError, stop_signal
from vidstyle.events import EventCallback, ImageStarted, ignore_event
from vidstyle.io.decode import Frame
from vidstyle.io.images import (
    ALPHA_SUFFIXES,
    Picture,
    encode_image,
    read_picture,
    read_style_image,
    resize_rgb,
    staged,
    straight_colours,
    write_atomic,
)
from vidstyle.io.paths import IMAGE_SUFFIXES, check_output_path, check_partial_free, refuse_folder_name, same_file
from vidstyle.limits import check_fits, image_size, own_size_note, render_size, stretches
from vidstyle.precision import emulation_note, resolve_precision
from vidstyle.sequence import stylize_sequence
from vidstyle.stylize import Stylizer, check_is_stylizer, resolve_device


def stylize_image(content_path: Path | str, style_paths: StylePaths, output: Path | str,
                  config: Config | None = None, *, overwrite: bool = False, on_event: EventCallback = ignore_event,
                  stop: threading.Event | None = None, stylizer: Stylizer | None = None,
                  animation: Path | str | None = None, animation_every: int | None = None) -> Path:
    """Paint one image in the style(s), `config.first_iters` iterations from the content. Returns `output`.

    `config` defaults to the balanced preset, as on the command line. A prepared `stylizer` made with the same
    settings and style images is reused instead of a new one. `animation` (.mp4 or .gif) also writes the
    optimization itself: the picture every `animation_every` iterations (5 unless given), from the start to the
    result.
    """
    check_call_arguments(overwrite=overwrite, stop=stop, on_event=on_event)
    config = config_or_default(config)
    refuse_folder_name(output, "image")
    content_path, output = path_argument("content_path", content_path), path_argument("output", output)
    if stylizer is not None:
        check_is_stylizer(stylizer)
    style_files = resolve_styles(style_paths)
    check_style_count(config, len(style_files))
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; name the image file, e.g. {output / 'painted.png'}")
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"output must be an image ({', '.join(IMAGE_SUFFIXES)}), got {output.name}")
    check_output_path(output, content_path, overwrite, style_files)
    if animation is None and animation_every is not None:
        raise SettingError("animation_every", "sets the pictures of an animation: give animation too")
    if animation is not None:
        animation = path_argument("animation", animation)
        animation_every = ANIMATION_EVERY if animation_every is None else animation_every
        animation_every = check_animation(animation, animation_every)
        check_output_path(animation, content_path, overwrite, style_files, what="animation")
        if same_file(animation, output):
            raise SettingError("animation", "must be another file than the output")
        check_partial_free(animation)
    content = read_picture(content_path, "content image")
    styles = [read_style_image(p) for p in style_files]
    own = (content.rgb.shape[1], content.rgb.shape[0])
    size = render_size(*own, config.size)
    device = resolve_device(config.device)
    check_fits(size, config.size, resolve_precision(config.precision, device), device)
    mismatch = stylizer.mismatch(config, styles, device) if stylizer is not None else None
    if mismatch is not None:
        raise SettingError("stylizer", f"was prepared for other pictures than this image's: {mismatch}")
    stylizer = stylizer or Stylizer(config, styles, device)
    frames = [Frame(0, resize_rgb(content.rgb, size))]
    written = image_size(config.output_size, size, own)
    alpha = _kept_alpha(content, output, written)
    notes = _notes(config, own, size, written, device) + _transparency_notes(content, output)
    on_event(ImageStarted(size, written, str(device), notes))
    try:
        if animation is None:
            (result,) = stylize_sequence(frames, stylizer, on_event=on_event, stop=stop)
            write_atomic(output, _still_bytes(output, result.rgb, written, alpha), replace=overwrite)
        else:
            _paint_with_animation(frames, stylizer, (output, written, alpha), animation, animation_every, overwrite,
                                  on_event, stop)
    except STOPS as exc:  # the stop event, Ctrl-C or SIGTERM: as a render's, one Interrupted
        raise Interrupted(None, stop_signal(exc), resumable=False) from None
    return output


def _notes(config: Config, own: tuple[int, int], size: tuple[int, int], written: tuple[int, int],
           device: torch.device) -> tuple[str, ...]:
    """What a person should know before the still is painted, in a video's words (pipeline.started_event)."""
    notes = []
    emulated = emulation_note(config.precision, device.type)
    if emulated is not None:
        notes.append(emulated)
    small = own_size_note("the picture", "painted", own, size, config.size)
    if small is not None:
        notes.append(small)
    if written != size:
        stretched = "x" in config.output_size and stretches(written, own)
        notes.append(f"written at {written[0]}x{written[1]}, scaled from the {size[0]}x{size[1]} painting"
                     + (", stretched: its shape is not the picture's" if stretched else ""))
    return tuple(notes)


def _transparency_notes(content: Picture, output: Path) -> tuple[str, ...]:
    """Where the picture is transparent: painted over white, as a viewer shows it, and whether the output keeps
    the transparency."""
    if content.alpha is None:
        return ()
    if output.suffix.lower() in ALPHA_SUFFIXES:
        return ("the picture is transparent: painted over white, and written with its transparency",)
    return (f"the picture is transparent: painted over white, and written as {output.suffix.lower()} without its "
            "transparency (write .png or .webp to keep it)",)


def _kept_alpha(content: Picture, output: Path, written: tuple[int, int]) -> np.ndarray | None:
    """The picture's alpha at the written size, for an output format that holds it."""
    if content.alpha is None or output.suffix.lower() not in ALPHA_SUFFIXES:
        return None
    if (content.alpha.shape[1], content.alpha.shape[0]) == written:
        return content.alpha
    # Area averaging to shrink keeps a cut-out's edge soft without Lanczos' ringing, which would show as a halo.
    shrinking = written[0] * written[1] < content.alpha.size
    return cv2.resize(content.alpha, written, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _paint_with_animation(frames: list[Frame], stylizer: Stylizer,
                          still: tuple[Path, tuple[int, int], np.ndarray | None],
                          animation: Path, every: int, overwrite: bool, on_event: EventCallback,
                          stop: threading.Event | None) -> None:
    """The still and its animation, both or neither: the still is written whole under a hidden name before the
    animation is published (as the recorder's block ends: a failed animation leaves no still), and published after
    it; should that fail (a still put at its path meanwhile) the animation just published goes again."""
    output, written, alpha = still
    rgb = frames[0].rgb
    with contextlib.ExitStack() as stack:
        with IterateRecorder(animation, (rgb.shape[1], rgb.shape[0]), every, overwrite) as recorder, \
                stylizer.watching(recorder):
            (result,) = stylize_sequence(frames, stylizer, on_event=on_event, stop=stop)
            recorder.finish(result.rgb)
            publish = stack.enter_context(staged(output, _still_bytes(output, result.rgb, written, alpha)))
        try:
            publish(overwrite)
        except OutputExists:
            if not overwrite:
                animation.unlink(missing_ok=True)  # made a moment ago by this call, at a path that was free
            raise


def _still_bytes(output: Path, rgb: np.ndarray, size: tuple[int, int], alpha: np.ndarray | None) -> bytes:
    if (rgb.shape[1], rgb.shape[0]) != size:  # output_size: Lanczos, as a video's frames are scaled
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LANCZOS4)
    if alpha is not None:
        rgb = straight_colours(rgb, alpha)
    return encode_image(rgb, output.suffix.lower(), alpha=alpha)
