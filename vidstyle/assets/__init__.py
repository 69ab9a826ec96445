"""Media shipped with the package (see ATTRIBUTION.md): the demo clip and built-in style paintings."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

_STYLES = {"starry-night": "starry_night.jpg"}


def _asset(name: str) -> Path:
    return Path(str(importlib.resources.files(__name__) / name))


def builtin_style_names() -> list[str]:
    return sorted(_STYLES)


def builtin_style(name: str) -> Path | None:
    """Path of a built-in style painting by name (`starry-night`), or None."""
    file = _STYLES.get(name.lower().replace("_", "-"))
    return _asset(file) if file else None


def demo_clip() -> Path:
    """Big Buck Bunny, 5.3 s with 5.1 audio (CC BY 3.0, Blender Foundation)."""
    return _asset("bigbuckbunny.mp4")
