"""Checks on where a result will be written, done before any work so a mistake costs nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from vidstyle.errors import OutputError, UsageError


def check_output_path(output: Path, source: Path, overwrite: bool) -> None:
    """Refuse an output that is the source, exists (without overwrite), or cannot be created."""
    if output.resolve() == source.resolve() or (output.exists() and source.exists()
                                                  and os.path.samefile(output, source)):
        raise UsageError(f"output {output} is the input; choose another output path")
    if output.exists() and not overwrite:
        raise UsageError(f"output {output} exists; use --overwrite to replace it")
    parent = output.parent
    if not parent.is_dir():
        raise OutputError(f"output directory does not exist: {parent}")
    try:
        # Creating a file is the only reliable test: access() says yes to root on read-only file systems.
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".vidstyle-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"output directory is not writable: {parent} ({exc.strerror or exc})") from exc
