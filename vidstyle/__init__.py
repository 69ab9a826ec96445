"""vidstyle: neural style transfer (Gatys et al.) for whole videos, with temporal coherence and resume."""

__version__ = "0.1.0"

from vidstyle.config import Config, make_config  # noqa: E402 - __version__ first: checkpoint.py reads it
from vidstyle.errors import VidstyleError  # noqa: E402
from vidstyle.pipeline import render  # noqa: E402
from vidstyle.still import stylize_image  # noqa: E402

__all__ = ["Config", "VidstyleError", "__version__", "make_config", "render", "stylize_image"]
