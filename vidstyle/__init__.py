"""vidstyle: neural style transfer (Gatys et al.) for whole videos, with temporal coherence and resume.

The public names load on first use (PEP 562), so that `import vidstyle.cli` does not import torch: the command
line can then take charge of Ctrl-C before the slow imports start.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Config": "vidstyle.config",
    "make_config": "vidstyle.config",
    "VidstyleError": "vidstyle.errors",
    "render": "vidstyle.pipeline",
    "render_many": "vidstyle.batch",
    "stylize_image": "vidstyle.still",
    "Stylizer": "vidstyle.stylize",
    "stylize_sequence": "vidstyle.sequence",
}

__all__ = ["Config", "Stylizer", "VidstyleError", "__version__", "make_config", "render", "render_many",
           "stylize_image", "stylize_sequence"]

if TYPE_CHECKING:
    from vidstyle.batch import render_many
    from vidstyle.config import Config, make_config
    from vidstyle.errors import VidstyleError
    from vidstyle.pipeline import render
    from vidstyle.sequence import stylize_sequence
    from vidstyle.still import stylize_image
    from vidstyle.stylize import Stylizer


# Modules the API's documentation names by attribute (vidstyle.preview.preview, vidstyle.events.FrameDone).
_MODULES = ("events", "preview", "errors", "config")


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    if name in _MODULES:
        return import_module(f"vidstyle.{name}")
    raise AttributeError(f"module 'vidstyle' has no attribute {name!r}")
