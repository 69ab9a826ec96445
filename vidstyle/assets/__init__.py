"""Media shipped with the package (see ATTRIBUTION.md): the demo clip and built-in style paintings."""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path

from vidstyle.config import Config, make_config
from vidstyle.errors import InputError, SettingError
from vidstyle.io.paths import address_problem

GPU_DEMO_SIZE = 720  # the demo on a GPU: the default preset at a size that shows the brush strokes

_STYLES = {"starry-night": "starry_night.jpg"}
# What each built-in painting is, for `vidstyle styles` (ATTRIBUTION.md has the sources).
_CREDITS = {"starry-night": "Vincent van Gogh, The Starry Night, 1889 (public domain)"}


def _asset(name: str) -> Path:
    return Path(str(importlib.resources.files(__name__) / name))


def builtin_style_names() -> list[str]:
    return sorted(_STYLES)


def builtin_style(name: str) -> Path | None:
    """Path of a built-in style painting by name (`starry-night`), or None."""
    file = _STYLES.get(name.lower().replace("_", "-"))
    return _asset(file) if file else None


def builtin_style_credit(name: str) -> str:
    return _CREDITS[name]


def resolve_style(name_or_path: Path | str) -> Path:
    """A style given as a file path, or as the name of a built-in painting where no such file exists.

    A bare word that is neither is refused naming the built-in paintings, so a typo is not reported as a
    missing file.
    """
    if str(name_or_path) == "":  # Path("") is the current folder: refused as "a directory", which confuses
        raise InputError("style is empty: name a picture file or a built-in painting "
                         f"(built-in: {', '.join(builtin_style_names())})")
    path = Path(name_or_path)
    if path.exists():
        return path
    # Nothing is downloaded: a render runs offline and the style image is part of what a resume checks.
    address = address_problem(name_or_path, "style", "picture")
    if address is not None:
        raise InputError(address)
    builtin = builtin_style(str(name_or_path))
    if builtin is not None:
        return builtin
    if not path.suffix and path.name == str(name_or_path):
        raise InputError(f"style '{name_or_path}' is neither a file nor a built-in painting "
                         f"(built-in: {', '.join(builtin_style_names())})")
    return path


# A request's styles: paths or built-in names, or one of them on its own.
StylePaths = Sequence[Path | str] | Path | str


def resolve_styles(style_paths: StylePaths) -> tuple[Path, ...]:
    """resolve_style for each of a request's styles; one path or name on its own is one style (not its letters)."""
    if isinstance(style_paths, (str, os.PathLike)):
        style_paths = [style_paths]
    # bytes would be read byte by byte, a dict or set by its keys in no order the caller chose
    if not isinstance(style_paths, Iterable) or isinstance(style_paths, (bytes, bytearray, Mapping, AbstractSet)):
        raise SettingError("style_paths", f"must be a style image or a built-in painting's name, or a list of them "
                                          f"(got {type(style_paths).__name__})")
    styles = list(style_paths)
    for style in styles:
        if not isinstance(style, (str, os.PathLike)):
            raise SettingError("style_paths", f"must name style images: a str or pathlib.Path each (got "
                                              f"{type(style).__name__} {style!r:.40})")
    return tuple(resolve_style(os.fspath(p)) for p in styles)


def demo_clip() -> Path:
    """Big Buck Bunny, 5.3 s with 5.1 audio (CC BY 3.0, Blender Foundation)."""
    return _asset("bigbuckbunny.mp4")


def demo_config(device: str | None = None) -> Config:
    """The demo's settings for the device it runs on: on a CPU the `demo` preset (small, to finish in one to five
    minutes on two cores); on a GPU or Apple's MPS the default preset at GPU_DEMO_SIZE, as a real render looks."""
    from vidstyle.stylize import resolve_device  # torch: only once a demo is really asked for

    on_cpu = make_config("demo", device=device)  # checks the device's name before torch is asked about it
    if resolve_device(on_cpu.device).type == "cpu":
        return on_cpu
    return make_config(size=GPU_DEMO_SIZE, device=device)
