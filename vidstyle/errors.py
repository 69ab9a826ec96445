"""Exceptions raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class VidstyleError(Exception):
    """Base class: a failure the user can act on, described in one line."""

    exit_code = 1


class UsageError(VidstyleError):
    """The request itself is wrong (bad option value, refused path); exit code 2 like argparse."""

    exit_code = 2


class ConfigError(UsageError):
    """A preset or setting is unknown or malformed."""


class InputError(VidstyleError):
    """An input file (video, style or content image) is missing or unusable."""


class VideoOpenError(InputError):
    """ffmpeg cannot read the input as a video."""


class EncodeError(VidstyleError):
    """ffmpeg failed while writing the output."""


class ModelError(VidstyleError):
    """The VGG19 weights are missing or unreadable."""


class CheckpointMismatch(UsageError):
    """The work directory belongs to a different render."""


class OutputError(VidstyleError):
    """A file cannot be written (missing directory, permissions, full disk)."""


class CheckpointError(OutputError):
    """The work directory cannot be read or written (lost, full disk, permissions)."""


class Interrupted(VidstyleError):
    """Ctrl-C or SIGTERM stopped the render; completed frames are kept for resuming."""

    def __init__(self, frame: int, signal_number: int) -> None:
        super().__init__(f"interrupted at frame {frame}; run the same command to resume")
        self.frame = frame
        self.exit_code = 128 + signal_number


class SignalInterrupt(BaseException):
    """Raised in the main thread by the CLI's SIGTERM handler, like KeyboardInterrupt is for SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum
