"""Exceptions raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence

# The library's words for restarting a render from nothing (the API's `restart=True`); the command line puts its
# flag in their place.
RESTART = "restart the render"


class VidstyleError(Exception):
    """Base class: a failure the user can act on, described in one line."""

    exit_code = 1

    def __reduce__(self) -> tuple[object, ...]:
        # As it is, whatever its __init__ takes: errors cross processes (Ray workers, the web service's workers), and
        # Exception's own pickling calls __init__ with the message alone.
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(kind: type[VidstyleError], args: tuple[object, ...], state: dict[str, object]) -> VidstyleError:
    error = kind.__new__(kind)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class UsageError(VidstyleError):
    """The request itself is wrong (bad option value, refused path); exit code 2 like argparse."""

    exit_code = 2


class OutputExists(UsageError):
    """The output file exists and overwriting was not allowed."""


class ConfigError(UsageError):
    """A preset or setting is unknown or malformed."""


class SettingError(ConfigError):
    """One setting has an impossible value. It names the setting as the library spells it (`first_iters`); the
    CLI shows its own flag for it instead."""

    def __init__(self, setting: str, problem: str, *, names_settings: bool = False) -> None:
        super().__init__(f"{setting} {problem}")
        self.setting = setting
        self.problem = problem
        # The problem names other settings with their values ("init prev", "flow is none"), one-word ones too, and
        # holds no path or other text of the user's: the CLI may then turn each such name into its flag.
        self.names_settings = names_settings


class InputError(VidstyleError):
    """An input file (video, style or content image) is missing or unusable."""


class ImageTooLarge(InputError):
    """A picture with more pixels than are read here (OpenCV's limit, which a server lowers)."""


class AnimatedPicture(InputError):
    """An animated GIF, PNG or WebP where a still is read: a video to render, not a picture to paint."""


class ImageTooSmall(InputError):
    """A picture smaller than the network can stylize (it is never enlarged)."""


class VideoOpenError(InputError):
    """ffmpeg cannot read the input as a video."""


class DamagedVideo(VideoOpenError):
    """A video cut short or damaged: `reason` says how, and the message adds the command that keeps the part of it
    that can be read (which a web service's client cannot run on the server's copy)."""

    def __init__(self, reason: str, repair: str) -> None:
        super().__init__(f"{reason}; {repair}")
        self.reason, self.repair = reason, repair


class DecodeError(VideoOpenError):
    """ffmpeg opened the video but could not decode all of it (damaged data, a decoder that was killed)."""


class EncodeError(VidstyleError):
    """ffmpeg failed while writing the output."""


class ResourceError(VidstyleError):
    """The device ran out of memory in the middle of a frame."""


class ModelError(VidstyleError):
    """The VGG19 weights are missing or unreadable."""


class CheckpointMismatch(UsageError):
    """The work directory belongs to a different render; `settings` names the settings that differ, if any, and
    `older` the value of each that the other frames were made before it existed with."""

    def __init__(self, message: str, settings: tuple[str, ...] = (), older: Mapping[str, object] | None = None,
                 before: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.settings = settings
        self.older = dict(older or {})
        self.before = dict(before or {})  # the value each changed setting had for the other frames, where known


class NotAWorkDir(CheckpointMismatch):
    """The directory named as a work directory is not one of vidstyle's: a file, or a folder of other files."""


class OutputError(VidstyleError):
    """A file cannot be written (missing directory, permissions, full disk)."""


class CheckpointError(OutputError):
    """The work directory cannot be read or written (lost, full disk, permissions)."""


class BusyError(VidstyleError):
    """Another render is writing the same output or work directory right now."""


class Interrupted(VidstyleError):
    """Ctrl-C, SIGTERM or the caller's stop event ended the render; completed frames are kept for resuming."""

    def __init__(self, frame: int | None, signal_number: int, resumable: bool = True, written: str | None = None,
                 writing: bool = False, pass_number: int | None = None) -> None:
        # Only a render keeps what it finished; a preview or a still has nothing to resume. `written`: the output
        # was already complete when the stop came (as its checkpoints were removed): nothing is left to do.
        # `writing`: every frame was made, and the video was being written from them. `pass_number`: the pass the
        # frame was in, where a render makes several (its progress names each).
        then = "; run it again with the same settings to resume" if resumable else ""
        if written is not None:
            message = f"interrupted after {written} was written in full"
        elif writing:
            message = "interrupted while writing the video from its finished frames; run it again with the same " \
                      "settings to write it"
        else:  # a still has no frame to name
            where = f" at frame {frame}" if frame is not None else ""
            where += f" of pass {pass_number}" if frame is not None and pass_number is not None else ""
            message = f"interrupted{where}{then}"
        super().__init__(message)
        self.exit_code = 128 + signal_number


class Cancelled(BaseException):
    """Raised inside the frame loop when the caller's stop event is set; the render turns it into Interrupted.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way up swallows it.
    """


class SignalInterrupt(BaseException):
    """Raised in the main thread by the CLI's SIGTERM handler, like KeyboardInterrupt is for SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


# What stops a render from outside: Ctrl-C, SIGTERM (or SIGHUP) as the CLI raises it, and the caller's stop event.
STOPS = (KeyboardInterrupt, SignalInterrupt, Cancelled)


def stop_signal(stop: BaseException) -> int:
    """The signal a stop (one of STOPS) stands for: its own for a SignalInterrupt, else SIGINT."""
    return stop.signum if isinstance(stop, SignalInterrupt) else signal.SIGINT


def shortened(text: str, limit: int = 80) -> str:
    """A value as a message quotes it: not all of a long one (a 100 KB field sent to the web service is not echoed
    whole)."""
    return text if len(text) <= limit else text[:limit] + "..."


# What a render's manifest records beside its settings, set by no flag or argument (what the style loss reads): a
# change is another vidstyle version's, shown as what it is.
RECORDED_BY_THE_RENDER = {"style_layers": "the network's style layers (another vidstyle version's)",
                          "painting_band": "the painting's edge left out of its style (another vidstyle version's)"}


def shown_settings(names: Sequence[str], older: Mapping[str, object] | None = None,
                   before: Mapping[str, object] | None = None) -> str:
    """Changed manifest settings as the API names them: `frames` is the part of the video a render makes, asked
    for by start and end. `older` has the value of each setting that the other frames were made before it existed
    with, `before` the value each had for them where they were made with it."""
    special = {"frames": "start/end (the part of the video)", **RECORDED_BY_THE_RENDER}
    return ", ".join(with_older_value(special.get(name, name), name, older, before) for name in names)


def with_older_value(shown: str, name: str, older: Mapping[str, object] | None,
                     before: Mapping[str, object] | None = None) -> str:
    """`shown` (a setting's name, or its flag) with the value the other frames were made with: where they were made
    before the setting existed, said so (that value resumes them)."""
    if older and name in older:
        return f"{shown} ({shown_value(older[name])} before: made before the setting existed)"
    if before and name in before:
        return f"{shown} ({shown_value(before[name])} before)"
    return shown


def shown_value(value: object) -> str:
    """A setting's value as a message gives it: a list as its items joined by commas, a switch as on or off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return shortened(",".join(shown_value(item) for item in value), 40)
    return shortened(f"{value:.12g}" if isinstance(value, float) else str(value), 40)  # as typed, not rounded
