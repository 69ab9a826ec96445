"""Command line: argparse -> Config -> library call. The only module that prints or picks exit codes."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from vidstyle import __version__
from vidstyle.assets import (
    GPU_DEMO_SIZE,
    builtin_style,
    builtin_style_credit,
    builtin_style_names,
    demo_clip,
    demo_config,
    resolve_style,
)
from vidstyle.config import (
    ANIMATION_EVERY,
    CHOICES,
    DEFAULT_PRESET,
    Config,
    make_config,
    preset_file_setting,
    preset_names,
    read_preset,
)
from vidstyle.errors import (
    RECORDED_BY_THE_RENDER,
    RESTART,
    BusyError,
    CheckpointError,
    CheckpointMismatch,
    EncodeError,
    Interrupted,
    NotAWorkDir,
    OutputError,
    OutputExists,
    SettingError,
    SignalInterrupt,
    UsageError,
    VideoOpenError,
    VidstyleError,
    shortened,
    shown_settings,
    with_older_value,
)
from vidstyle.events import (
    BatchItemEnded,
    BatchItemStarted,
    Event,
    FrameDone,
    FrameStarted,
    ImageStarted,
    IterationDone,
    RenderFinished,
    RenderStarted,
    WorkersBusy,
)
from vidstyle.io.paths import IMAGE_SUFFIXES, missing_folder, same_file

if TYPE_CHECKING:
    from vidstyle.preview import Estimate  # at run time only once the engine is imported

# Options shared by `render` and `image`; the video-only ones are listed separately (the seed among them: it draws
# only the noise that a later frame starts from with init random, and a still has no later frame).
_STILL_FIELDS = ("size", "coarse_levels", "optimizer", "adam_lr", "content_weight", "style_weight",
                 "tv_weight", "structure_weight", "edge_contrast", "style_blend", "style_scale", "preserve_colors",
                 "palette_start", "pooling", "precision", "device")
_VIDEO_FIELDS = ("iters", "first_iters", "tol", "temporal_weight", "held_structure", "temporal_reach", "passes", "init",
                 "prev_weight", "flow", "change_tolerance", "cut_threshold", "crf", "output_size", "keep_frames",
                 "follow_fades", "seed")
# A still is written at its output size too.
_IMAGE_FIELDS = ("output_size",)
# A preview stylizes single frames: nothing of a whole shot (passes) or of the written file applies.
_PREVIEW_VIDEO_FIELDS = tuple(f for f in _VIDEO_FIELDS if f not in ("passes", "crf", "output_size", "keep_frames"))


_NEGATIVE_VALUE = re.compile(r"-\.?\d")  # a value such as -1,2 or -.5, not an option


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2) instead of usage + error."""

    commands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vidstyle: error: {message} (see '{self.prog} --help')\n")

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        return super().parse_known_args(self._join_negative_values(args), namespace)

    def _join_negative_values(self, args: Sequence[str] | None) -> list[str]:
        """`--style-blend -1,2` as `--style-blend=-1,2`: argparse takes any '-' word that is not a plain number
        for an option and says only 'expected one argument'; joined, the value reaches its own check."""
        words = list(sys.argv[1:] if args is None else args)
        joined: list[str] = []
        i = 0
        while i < len(words):
            action = self._option_string_actions.get(words[i])
            takes_value = action is not None and action.nargs is None and words[i].startswith("--")
            if takes_value and i + 1 < len(words) and _NEGATIVE_VALUE.match(words[i + 1]):
                joined.append(f"{words[i]}={words[i + 1]}")
                i += 2
            else:
                joined.append(words[i])
                i += 1
        return joined

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """As argparse, but an argument no command knows points to that command's help, not the top level's."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            owner = self.commands.get(getattr(parsed, "command", None) or "", self)
            owner.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def _seconds(text: str) -> float:
    """ffmpeg's time syntax: 12.5, 1:02.5 or 00:01:02.500."""
    try:
        parts = [float(p) for p in text.strip().split(":")]
    except ValueError:
        parts = []
    # Minutes and seconds after a colon are under 60 and only the seconds have a fraction: 1:75 is a typing slip.
    if (not 1 <= len(parts) <= 3 or any(p < 0 or not math.isfinite(p) for p in parts)
            or any(p >= 60 for p in parts[1:]) or any(p != int(p) for p in parts[:-1])):
        raise argparse.ArgumentTypeError(f"expected seconds, MM:SS or HH:MM:SS.ms, got {text!r}")
    return sum(value * 60**power for power, value in enumerate(reversed(parts)))


def _named_path(text: str) -> Path:
    """A path option that must name something: an empty one (`--workdir "$DIR"` with DIR unset) would be the
    current folder."""
    if not text:
        raise argparse.ArgumentTypeError("is empty; name a file or folder (or leave the option out)")
    return Path(text)


def _log_file(text: str) -> Path:
    """The event log's file: a name ending in a slash names a folder (Path() would drop the slash, and a file of
    that name be made where the person meant a folder)."""
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text} names a folder; name a file for the event log")
    return _named_path(text)


def _input_file(text: str) -> Path:
    """An input file: an empty one (`vidstyle render "$CLIP"` with CLIP unset) would be the current folder, and be
    refused as a directory."""
    if not text:
        raise argparse.ArgumentTypeError("is empty; name a file")
    return Path(text)


def _preset_name(text: str) -> str:
    """--config: an empty one (`--config "$PRESET"` with PRESET unset) is refused, not taken as no preset."""
    if not text:
        raise argparse.ArgumentTypeError("is empty; name a preset or a TOML file (or leave the option out)")
    return text


def _output_path(text: str) -> Path:
    """-o: a trailing slash says "a folder", which Path() would drop, leaving a file name without a suffix; an empty
    one (`-o "$OUT"` with OUT unset) would be the current folder."""
    if not text:
        raise argparse.ArgumentTypeError("is empty; name the output file (or leave -o out for the default)")
    if text.endswith(("/", os.sep)) and not Path(text).is_dir():
        # A missing folder, as for -o missing/out.mp4: exit 1, not a usage error's 2.
        raise OutputError(f"output {text} names a folder that does not exist; make it first, or name the output "
                          "file")
    return Path(text)


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))  # an empty item ("1,,2") is a slip, not a zero
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _shown(value: Any) -> str:
    """A default as the command line takes it: on/off for a switch, a comma list, none for an empty one."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value) or "none"
    return str(value)


def _add_field(parser: argparse.ArgumentParser, field: dataclasses.Field[Any], preset: dict[str, Any]) -> None:
    """One option per Config field; help and the shown default come from the dataclass and the preset."""
    flag = "--" + field.name.replace("_", "-")
    help_text = f"{field.metadata['help']} [balanced: {_shown(preset.get(field.name, field.default))}]"
    kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": help_text}
    if isinstance(field.default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction
    elif isinstance(field.default, tuple):
        kwargs.update(type=_float_list, metavar="W1,W2")
    elif isinstance(field.default, (int, float)):
        kwargs.update(type=type(field.default), metavar="N" if isinstance(field.default, int) else "X")
    if field.name in CHOICES:
        kwargs["choices"] = CHOICES[field.name]
    parser.add_argument(flag, **kwargs)


def _add_settings(parser: argparse.ArgumentParser, names: Sequence[str], preset: dict[str, Any]) -> None:
    fields = {f.name: f for f in dataclasses.fields(Config)}
    group = parser.add_argument_group("stylization settings (override the preset)")
    for name in names:
        _add_field(group, fields[name], preset)  # type: ignore[arg-type]
    parser.add_argument("--config", type=_preset_name, metavar="NAME|PATH", default=DEFAULT_PRESET,
                        help=f"preset from configs/ ({', '.join(preset_names())}) or a TOML file [balanced]")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or messages on stderr, only errors")
    parser.add_argument("--log-json", type=_log_file, metavar="FILE",
                        help="also write every progress event to FILE, one JSON object a line, the last saying how the "
                             "command ended (for scripts)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")


class _JsonLog:
    """The library's typed events as JSON lines: {"event": "FrameDone", "index": 3, ...}, then how the command
    ended: {"event": "CommandEnded", "status": "done" | "failed" | "interrupted", "exit_code": ..., "message": ...}
    with what a finished command made, so that a script following the log knows a run is over and how.

    The file is opened at the first event, so that a command refused before its work leaves no log behind. Used as
    a context manager around the command's work.
    """

    def __init__(self, path: Path | None, then: Callable[[Event], None], args: argparse.Namespace,
                 output: Path | None = None) -> None:
        self.path, self.then, self.file, self.args = path, then, None, args
        self.made: dict[str, Any] = {}  # what a finished command made, for its CommandEnded line
        if path is None:
            return
        for role, other in _files_named(args, output):
            if same_file(path, other):
                raise UsageError(f"--log-json {path} is the {role}; name another file for the event log")
        if path.is_dir():
            raise UsageError(f"--log-json {path} is a directory; name a file for the event log")
        if not _is_event_log(path):
            # Appending is for a log of earlier runs; a slip that names the input video or a picture would
            # otherwise have lines of JSON added to the end of that file.
            raise UsageError(f"--log-json {path} exists and is not an event log: name a new file or an earlier log")
        # Checked here, not when the file is opened at the first event: by then the work has begun (a render's
        # work directory is made), and a log that cannot be written would stop it there. Exit 1, as a missing or
        # read-only output folder.
        if not path.parent.is_dir():
            raise OutputError(f"cannot write the event log {path}: its folder {missing_folder(path.parent)}")
        _try_appending(path)

    def __call__(self, event: Event) -> None:
        if self.path is not None:
            self._write({"event": type(event).__name__, **dataclasses.asdict(event)})
        self.then(event)

    def _file(self) -> Any:
        if self.file is None:
            try:
                self.file = open(self.path, "a", encoding="utf-8")  # type: ignore[arg-type]  # noqa: SIM115
            except OSError as exc:
                raise OutputError(f"cannot write the event log {self.path}: {exc.strerror or exc}") from exc
        return self.file

    def __enter__(self) -> _JsonLog:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self.file is None:  # the work never began: no log was started
            return
        # A full disk, a mount gone: the command's own end (its exit code and line) is what counts, not the log's.
        with contextlib.suppress(OSError):
            self._write({"event": "CommandEnded", "command": self.args.command, **_outcome(exc, self.args),
                         **(self.made if exc is None else {})})
        with contextlib.suppress(OSError):
            self.file.close()

    def _write(self, line: dict[str, Any]) -> None:
        file = self._file()
        file.write(json.dumps(line, default=str) + "\n")
        file.flush()


def _try_appending(path: Path) -> None:
    """Open the event log for appending and close it again, removing it if this made it: permissions alone do not
    say (a folder such as /proc, a read-only mount, a user allowed everything), and a log found unwritable only at
    the first event would stop the work after it began. Only a regular file or a free name is opened so: a named
    pipe would wait for a reader, and a link that leads nowhere would have its target made; those are asked about."""
    made = not os.path.lexists(path)
    if not (made or path.is_file()):
        if not os.access(path if path.exists() else path.parent, os.W_OK):
            raise OutputError(f"cannot write the event log {path}: it is not writable")
        return
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write the event log {path}: {exc.strerror or exc}") from exc
    if made:
        path.unlink(missing_ok=True)


def _outcome(exc: BaseException | None, args: argparse.Namespace) -> dict[str, Any]:
    """How a command ended: the exit code and the line on stderr that _run_command gives it."""
    if exc is None:
        return {"status": "done", "exit_code": 0, "message": None}
    code, line = _ending(exc, args)
    interrupted = isinstance(exc, (Interrupted, KeyboardInterrupt, SignalInterrupt))
    return {"status": "interrupted" if interrupted else "failed", "exit_code": code,
            "message": line.removeprefix("vidstyle: ").removeprefix("error: ")}


def _files_named(args: argparse.Namespace, output: Path | None) -> list[tuple[str, Path]]:
    """The files a command reads or writes, by role: none of them may also be its event log."""
    named = []
    for role, attr in (("input", "input"), ("input", "content"), ("style image", "style"), ("output", "output"),
                       ("animation", "animation")):
        value = output if attr == "output" and output is not None else getattr(args, attr, None)
        named += [(role, Path(p)) for p in (value if isinstance(value, list) else [value]) if p is not None]
    return named


def _is_event_log(path: Path) -> bool:
    """True for a path that is new, empty, not a regular file (a pipe, /dev/stdout), or starts as _JsonLog writes."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return True
        with open(path, "rb") as fh:
            first = json.loads(fh.readline(1 << 16).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(first, dict) and "event" in first


def build_parser() -> argparse.ArgumentParser:
    try:
        preset = read_preset(DEFAULT_PRESET)
    except VidstyleError:
        preset = {}
    parser = _Parser(prog="vidstyle", description="Paint videos in the style of any picture.")
    parser.add_argument("--version", action="version", version=f"vidstyle {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    parser.commands = sub.choices

    _add_render(sub, preset)
    _add_image(sub, preset)
    _add_demo(sub)
    _add_metrics(sub)
    _add_serve(sub)
    _add_preview(sub, preset)
    styles = sub.add_parser("styles", help="list the built-in paintings", description="The built-in paintings, "
                            "usable by name wherever a style image is asked for (--style starry-night).")
    styles.set_defaults(func=_cmd_styles, debug=False)
    presets = sub.add_parser("presets", help="list the presets and their settings",
                             description="The presets in configs/, for --config NAME; any flag overrides them.")
    presets.set_defaults(func=_cmd_presets, debug=False)
    return parser


def _add_render(sub: Any, preset: dict[str, Any]) -> None:
    render = sub.add_parser("render", help="stylize a video", description="Stylize a video (resumable).")
    render.add_argument("input", type=_input_file, nargs="+", help="video file(s), rendered one after another")
    render.add_argument("--style", "-s", action="append", required=True, metavar="STYLE",
                        help=f"style image, or a built-in name ({', '.join(builtin_style_names())}); repeatable: "
                             "the styles are blended, or see --each-style")
    render.add_argument("--each-style", action="store_true",
                        help="one output per --style instead of one blending them")
    render.add_argument("-o", "--output", type=_output_path,
                        help="output video, or an existing directory for the outputs "
                             "[<input>.<style>.mp4 beside each input]")
    render.add_argument("--workdir", type=_named_path,
                        help="checkpoint directory, for one output [<output>.vidstyle-work]")
    render.add_argument("--restart", action="store_true", help="discard checkpoints of an earlier run")
    _add_trim(render, "a part of the video (frames exact, the audio cut to match)", "render")
    _add_workers(render)
    _add_settings(render, _STILL_FIELDS + _VIDEO_FIELDS, preset)
    render.set_defaults(func=_cmd_render)


def _add_image(sub: Any, preset: dict[str, Any]) -> None:
    image = sub.add_parser("image", help="stylize a still image", description="Stylize one image.")
    image.add_argument("content", type=_input_file, help="content image")
    image.add_argument("--style", "-s", action="append", required=True, metavar="STYLE",
                       help=f"style image, or a built-in name ({', '.join(builtin_style_names())}); repeatable: the "
                            "styles are blended")
    image.add_argument("-o", "--output", type=_output_path, required=True,
                       help=f"output image ({', '.join(IMAGE_SUFFIXES)})")
    image.add_argument("--iters", type=int, default=None, metavar="N",
                       help=f"iterations [balanced: {preset.get('first_iters', Config.first_iters)}]")
    image.add_argument("--animation", type=_named_path, metavar="FILE",
                       help="also write the optimization as a short video (.mp4) or .gif: the picture every few "
                            "iterations, from the photograph to the painting")
    image.add_argument("--animation-every", type=int, metavar="N",
                       help=f"iterations between two pictures of --animation [{ANIMATION_EVERY}]")
    _add_settings(image, _STILL_FIELDS + _IMAGE_FIELDS, preset)
    image.set_defaults(func=_cmd_image)


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser("demo", help="render the bundled sample clip offline",
                          description="Render the bundled 5 s Big Buck Bunny clip as The Starry Night, offline: "
                                      "192 px on a CPU (one to five minutes on two cores), the balanced preset at "
                                      "720 px on a GPU.")
    demo.add_argument("-o", "--output", type=_output_path, default=Path(DEMO_OUTPUT),
                      help=f"the video to write, or an existing folder for it [{DEMO_OUTPUT}]")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing output")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    demo.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps [auto]")
    demo.set_defaults(func=_cmd_demo)


def _add_metrics(sub: Any) -> None:
    metrics = sub.add_parser("metrics", help="measure flicker and content fidelity of a render",
                             description="Warping error (Lai et al. 2018) of a render and of its source (the "
                                         "floor), and the edge-map correlation of each frame with its source.")
    metrics.add_argument("output", type=_input_file, help="rendered video")
    metrics.add_argument("--source", type=_named_path, required=True, help="the video it was rendered from")
    metrics.add_argument("--flow", choices=("both", "farneback", "dis"), default="both",
                         help="the source's flow the warping errors follow [both: each figure along Farneback's and "
                              "DIS's]; a render is favoured along the flow it follows itself (the default render "
                              "mostly DIS's) and charged along the other; on a flat sky Farneback finds no motion and "
                              "DIS does")
    metrics.add_argument("--style", "-s", metavar="STYLE",
                         help="the painting it was rendered with (file or built-in name): adds the style gain")
    _add_trim(metrics, "a render of a part of the source: the same --start and --end (or --duration) as the render",
              "compare")
    metrics.add_argument("--json", action="store_true", help="print one JSON object")
    metrics.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    metrics.set_defaults(func=_cmd_metrics)


def _cmd_styles(_args: argparse.Namespace) -> int:
    for name in builtin_style_names():
        print(f"{name:16} {builtin_style_credit(name)}   {builtin_style(name)}")
    return 0


def _cmd_presets(_args: argparse.Namespace) -> int:
    from vidstyle.config import preset_names, presets_dir

    for name in preset_names():
        settings = ", ".join(f"{key} {value}" for key, value in read_preset(name).items())
        print(f"{name:10}{' (default)' if name == DEFAULT_PRESET else '':11} {settings}")
    print(f"the files are in {presets_dir()}; --config also takes a TOML file of your own; every preset takes what "
          f"it leaves out from {DEFAULT_PRESET}")
    return 0


def _add_serve(sub: Any) -> None:
    import vidstyle.serve as served  # its defaults; the web framework is imported only when the server starts

    serve = sub.add_parser("serve", help="web page and HTTP API with a job queue (needs vidstyle[serve])",
                           description="Serve the web page and the HTTP API (OpenAPI page at /docs); renders run "
                                       "one at a time per worker process, from a queue that survives restarts.")
    serve.add_argument("--host", default=served.DEFAULT_HOST,
                       help=f"address to listen on [{served.DEFAULT_HOST}: this machine only]")
    serve.add_argument("--port", type=int, default=served.DEFAULT_PORT, help=f"[{served.DEFAULT_PORT}]")
    serve.add_argument("--data", type=_named_path, default=Path(served.DEFAULT_DATA),
                       help=f"the queue database and the jobs' files [./{served.DEFAULT_DATA}]")
    serve.add_argument("--workers", type=int, metavar="N", help="render processes [one per GPU, else 1]")
    serve.add_argument("--max-upload", default=served.DEFAULT_MAX_UPLOAD, metavar="SIZE",
                       help=f"largest request body [{served.DEFAULT_MAX_UPLOAD}]")
    serve.add_argument("--min-free", metavar="SIZE",
                       help="refuse uploads (507) while the data folder's disk has less free space; 0: never "
                            f"[{served.MIN_FREE / 1e9:g}GB, or twice --max-upload if that is more]")
    serve.add_argument("--max-queued", type=int, default=served.DEFAULT_MAX_QUEUED, metavar="N",
                       help="refuse uploads (429, Retry-After) while this many jobs wait "
                            f"[{served.DEFAULT_MAX_QUEUED}]")
    serve.add_argument("--stall-timeout", type=float, default=served.DEFAULT_STALL_TIMEOUT, metavar="SECONDS",
                       help="kill a worker whose render shows no progress for this long, and fail its job "
                            f"[{served.DEFAULT_STALL_TIMEOUT:g}: one iteration of a large frame on a CPU can take "
                            "minutes]")
    serve.add_argument("--token",
                       help="require 'Authorization: Bearer TOKEN' on every request (for a public host) "
                            f"[${TOKEN_VARIABLE}, which other users cannot read in the process list]")
    serve.add_argument("--device", default="auto",
                       help="device of the renders: auto, cpu, cuda (one worker per GPU) or mps [auto]")
    serve.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    serve.set_defaults(func=_cmd_serve)


def _add_preview(sub: Any, preset: dict[str, Any]) -> None:
    preview = sub.add_parser("preview", help="a few frames stylized, and how long the whole render would take",
                             description="Stylize a few frames spread over a video (or at --at times) at the "
                                         "render's settings, write them on a contact sheet (source above, "
                                         "stylized below) and estimate the whole render's time on this device "
                                         "from what it measured.")
    preview.add_argument("input", type=_input_file, help="video file")
    preview.add_argument("--style", "-s", action="append", required=True, metavar="STYLE",
                         help=f"style image, or a built-in name ({', '.join(builtin_style_names())}); repeatable")
    preview.add_argument("-o", "--output", type=_output_path,
                         help="contact sheet (.png, .jpg, .webp) [<input>.<style>.preview.png beside the input]")
    frames = preview.add_argument_group("which frames").add_mutually_exclusive_group()
    frames.add_argument("--at", type=_seconds, action="append", metavar="TIME",
                        help="a frame at this time (seconds, MM:SS or HH:MM:SS.ms); repeatable")
    frames.add_argument("--frames", type=int, metavar="N",
                        help="frames spread evenly over the video [4, or all of a shorter one]")
    preview.add_argument("--strength", type=_float_list, metavar="S1,S2",
                         help="style strengths to compare, one row each: each multiplies --style-weight [1]")
    # A preview writes no video: the encoder's settings (crf, output size, kept frames) mean nothing to it.
    _add_settings(preview, _STILL_FIELDS + _PREVIEW_VIDEO_FIELDS, preset)
    preview.set_defaults(func=_cmd_preview)


# The preview's own parameters that a flag of another name sets.
_PREVIEW_FLAGS = {"strengths": "--strength", "at": "--at", "count": "--frames"}


def _add_workers(render: argparse.ArgumentParser) -> None:
    # The defaults shown are vidstyle.distributed's (a test checks they agree); importing it here would load torch
    # before the command line has taken charge of Ctrl-C.
    group = render.add_argument_group("many GPUs and machines (needs vidstyle[ray])")
    group.add_argument("--workers", type=int, metavar="N",
                       help="render on N Ray workers started for this render: one GPU each where there are GPUs, "
                            "else the CPU threads split between them")
    group.add_argument("--ray", metavar="auto|ADDRESS", dest="ray_address",
                       help="join an existing Ray cluster (auto: the one this machine belongs to)")
    group.add_argument("--chunk-frames", type=int, metavar="N",
                       help="split shots longer than this into chunks, one Ray task each [120]")
    group.add_argument("--overlap", type=int, metavar="N",
                       help="frames each chunk inside a shot starts early, cross-faded at the seam [12]")


def _config_from(args: argparse.Namespace, names: Sequence[str], **extra: Any) -> Config:
    overrides = {name: getattr(args, name, None) for name in names}
    overrides.update(extra)
    return make_config(getattr(args, "config", DEFAULT_PRESET), **overrides)


class _Progress:
    """A bar over whole frames with an ETA that weighs fresh frames by their cost (vidstyle.eta), moved by each
    iteration so that a slow frame still shows movement.

    Where stderr is not a terminal (a log file, a service), carriage returns would pile up into one huge line:
    there it prints one plain line every few seconds instead.
    """

    PLAIN_EVERY = 5.0  # seconds between plain progress lines

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None
        self.eta: Any = None
        self.frames_done = 0.0
        self.pass_frames = 0
        self.pass_number = self.index = 0  # of the frame in progress
        self.total = 0
        self.passes = 1
        self.plain = not _terminal_columns()
        self.last_line = time.monotonic()
        self.announced = False

    def say(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if self.eta is not None:
            self.eta.update(event)
        if isinstance(event, RenderStarted):
            self._start(event)
        elif isinstance(event, FrameStarted):
            self.pass_number, self.index = event.pass_number, event.index
            if not self.announced:
                self.announced = True
                where = f" (pass {event.pass_number} of {self.passes})" if self.passes > 1 else ""
                self.say(f"frame {event.index}{where}: {_count(event.iters, 'iteration')}"
                         + (" (fresh)" if event.fresh else ""))
            if event.fresh and event.index > 0 and self.bar is not None:
                self.bar.set_postfix_str(f"scene cut at frame {event.index}: starting fresh")
        elif isinstance(event, IterationDone) and self.bar is not None:
            self.bar.update(1.0 / (event.iters * self.passes))
        elif isinstance(event, FrameDone):
            self._frame_done(event)
        elif isinstance(event, WorkersBusy) and self.bar is not None:
            self.eta = None  # Ray workers send no frame events: the bar's own rate of final frames is the ETA
            # Final frames only: a resumed render's earlier passes (counted at its start) hold the bar until passed.
            self.bar.update(max(0, event.frames_done - self.bar.n))
            self.bar.set_postfix_str(f"{event.busy}/{event.workers} workers busy")
        elif isinstance(event, WorkersBusy) and self.plain:
            self._workers_line(event)
        elif isinstance(event, BatchItemStarted):
            styles = " + ".join(p.name for p in event.styles)
            self.say(f"[{event.position + 1}/{event.count}] {event.input.name} as {styles} -> {event.output}")
        elif isinstance(event, BatchItemEnded) and event.status != "written":
            self.close()
            self.say(f"[{event.position + 1}/{event.count}] {event.status}: {event.reason}")
        elif isinstance(event, RenderFinished):
            self.close()
            self.say(f"wrote {event.output} ({_made_here(event)} in {_clock(event.seconds)})")
            if event.iterations is not None:
                mean, low, high = event.iterations
                self.say(f"iterations a frame: mean {mean:.1f}, min {low}, max {high} "
                         f"({_count(event.stylized, 'frame')} stylized by this run)")

    def _start(self, event: RenderStarted) -> None:
        from vidstyle.eta import RenderEta

        width, height = event.size
        self.say(f"rendering {_count(event.total_frames, 'frame')} at {width}x{height}, {float(event.fps):.3f} fps, "
                 f"on {event.device}; checkpoints in {event.workdir}")
        for note in event.notes:
            self.say(note)
        if event.already_done and (event.passes == 1 or event.already_done == event.total_frames):
            self.say(_resuming(event))  # with passes and frames to make, a note says what each pass has made
        # Counted in frames of a pass, whole numbers (a float sum of 1/passes ends off the total): a resumed
        # multi-pass render starts at the passes already made and ends at its total.
        self.pass_frames = event.already_done * event.passes + sum(event.earlier_passes_made)
        self.total, self.announced, self.passes = event.total_frames, False, event.passes
        self.pass_number = self.index = 0  # a batch's next render: nothing of it started yet
        self.frames_done = self.pass_frames / self.passes
        self.eta = RenderEta(event)
        self.last_line = time.monotonic()
        if not self.plain:
            self.bar = _eta_bar(event.total_frames, self.frames_done, self)

    def _frame_done(self, event: FrameDone) -> None:
        self.pass_frames += 1  # with several passes, a frame is done after the last
        self.frames_done = min(self.total, self.pass_frames / self.passes)
        if self.bar is not None:
            self.bar.n = self.frames_done  # whole passes again, whatever the iterations' fractions added up to
            self.bar.set_postfix_str(f"loss {event.loss:.3f}" + (" (fresh start)" if event.fresh else ""))
        elif self.plain:
            self._plain_line()

    def left_and_rate(self) -> tuple[str, str]:
        """The ETA and the seconds a frame, as shown; '?' until the first iterations are timed."""
        left = self.eta.seconds_left() if self.eta is not None else None
        per_frame = self.eta.seconds_a_frame() if self.eta is not None else None
        return (_clock(left) if left is not None else "?",
                f"{per_frame:.1f} s/frame" if per_frame is not None else "? s/frame")

    def _line_due(self, frames_done: float) -> bool:
        """Whether a plain progress line is due: PLAIN_EVERY seconds after the last, or the last frame done."""
        now = time.monotonic()
        if now - self.last_line < self.PLAIN_EVERY and frames_done < self.total:
            return False
        self.last_line = now
        return True

    def _plain_line(self) -> None:
        if not self._line_due(self.frames_done):
            return
        left, rate = self.left_and_rate()
        self.say(f"{self.position()}: {rate}, about {left} left")

    def position(self) -> str:
        """Where the render is: frames finished of the total; with several passes, which pass is at which frame
        (a backward pass finishes frames from a shot's end) and the share of the work done."""
        if self.passes == 1:
            return f"frame {int(self.frames_done)}/{self.total}"
        return (f"pass {self.pass_number} of {self.passes}, frame {self.index}, "
                f"{int(100 * self.frames_done / max(1, self.total))}% done")

    def _workers_line(self, event: WorkersBusy) -> None:
        """A render on Ray workers off a terminal: its final frames and busy workers, a line every few seconds (its
        workers send no frame events, so _plain_line's lines would never come)."""
        if self._line_due(event.frames_done):
            self.say(f"frames done: {event.frames_done}/{self.total}, {event.busy}/{event.workers} workers busy")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _terminal_columns() -> int:
    """Columns of the terminal stderr is, 0 where it is none; a terminal that says it has no columns or no rows (a
    bare pseudo-terminal, `script` without a size) shows no bar at all, so it gets the plain lines too."""
    if not sys.stderr.isatty():
        return 0
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        return 0
    return size.columns if size.lines > 0 else 0


def _eta_bar(total: int, initial: float, progress: _Progress) -> Any:
    """A tqdm bar whose ETA and rate are the progress's own (fresh frames weighed), not tqdm's mean rate."""
    from tqdm import tqdm

    class EtaBar(tqdm):  # type: ignore[type-arg]
        @property
        def format_dict(self) -> dict[str, Any]:
            shown = super().format_dict
            # Frames finished (the iterations move n between them); with passes, which pass is at which frame.
            shown["whole"] = (f"pass {progress.pass_number}/{progress.passes}, frame {progress.index}"
                              if progress.passes > 1 and progress.eta is not None and progress.pass_number
                              else f"{int(self.n + 1e-9)}/{self.total}")
            if progress.eta is None:  # frames arrive from workers: tqdm's rate of them
                rate = shown.get("rate")
                shown["left"] = _clock((self.total - self.n) / rate) if rate else "?"
                shown["per_frame"] = f"{1 / rate:.1f} s/frame" if rate else "? s/frame"
            else:
                shown["left"], shown["per_frame"] = progress.left_and_rate()
            return shown

    # tqdm puts ", " before a postfix itself; whole frames are shown, the iterations move the bar between them.
    return EtaBar(total=total, initial=initial, unit="frame", dynamic_ncols=True, file=sys.stderr,
                  bar_format="{l_bar}{bar}| {whole} [{elapsed}<{left}, {per_frame}{postfix}]")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _cmd_render(args: argparse.Namespace) -> int:
    from vidstyle.pipeline import default_output, render

    config = _config_from(args, _STILL_FIELDS + _VIDEO_FIELDS)
    outputs = len(args.input) * (len(args.style) if args.each_style else 1)
    if outputs > 1:
        return _render_batch(args, config, outputs)
    output = args.output
    if output is None or _is_output_folder(output):
        output = default_output(args.input[0], [resolve_style(s) for s in args.style], output)
    progress = _Progress(args.quiet)
    try:
        with _JsonLog(args.log_json, progress, args, output) as log:
            log.made["output"] = render(args.input[0], args.style, output, config, workdir=args.workdir,
                                        overwrite=args.overwrite, restart=args.restart, on_event=log,
                                        workers=args.workers, ray_address=args.ray_address,
                                        chunk_frames=args.chunk_frames, overlap=args.overlap, start=args.start,
                                        end=_trim_end(args))
    finally:
        progress.close()
    return 0


def _is_output_folder(output: Path) -> bool:
    """-o names an existing folder to write the video into, under its default name. A folder named like a video
    (out.mp4/) is taken for the mistake it most likely is, and refused as an output that is a directory."""
    from vidstyle.io.encode import VIDEO_SUFFIXES

    return output.is_dir() and output.suffix.lower() not in VIDEO_SUFFIXES


def _made_here(event: RenderFinished) -> str:
    """The frames written, and how many of them earlier runs made: a resumed render's time is this run's alone."""
    earlier = event.frames - event.stylized
    if earlier <= 0:
        return _count(event.frames, "frame")
    return f"{_count(event.frames, 'frame')}, {'all' if earlier == event.frames else earlier} made by earlier runs,"


def _resuming(event: RenderStarted) -> str:
    """Where a render that earlier runs began goes on. In a part of the video the frame is the video's, as an
    interruption names it."""
    if event.resume_from >= event.total_frames:
        return f"all {_count(event.total_frames, 'frame')} already done; writing the video"
    notes = [f"{event.resume_from} of the {event.total_frames} of this part"] if event.first_frame else []
    if event.already_done != event.resume_from:  # frames after a gap (a render spread over workers)
        notes.append(f"{_count(event.already_done, 'frame')} already done")
    where = (f"frame {event.first_frame + event.resume_from}" if event.first_frame
             else f"frame {event.resume_from} of {event.total_frames}")
    return f"resuming at {where}" + (f" ({'; '.join(notes)})" if notes else "")


def _render_batch(args: argparse.Namespace, config: Config, outputs: int) -> int:
    """Several outputs: each rendered in turn, a failure reported and passed over, a summary at the end."""
    from vidstyle.batch import render_many

    if args.output is not None and not args.output.is_dir():
        raise UsageError(f"-o {args.output} is not a directory: this command writes {outputs} videos, so -o "
                         "must name an existing directory for them (or leave -o out to write each beside its input)")
    if args.workdir is not None:
        raise UsageError(f"--workdir names one render's checkpoints, and this command makes {outputs} renders: "
                         "leave it out (each gets <output>.vidstyle-work)")
    progress = _Progress(args.quiet)
    ended: list[tuple[str, Path, str]] = []  # (status, output, reason) of each finished item, for the summary
    try:
        with _JsonLog(args.log_json, progress, args) as log:

            def on_event(event: Event) -> None:
                if isinstance(event, BatchItemEnded):
                    ended.append((event.status, event.output, event.reason))
                log(event)

            try:
                render_many(args.input, args.style, config, each_style=args.each_style, output_dir=args.output,
                            overwrite=args.overwrite, restart=args.restart, on_event=on_event, start=args.start,
                            end=_trim_end(args), workers=args.workers, ray_address=args.ray_address,
                            chunk_frames=args.chunk_frames, overlap=args.overlap)
            except (Interrupted, KeyboardInterrupt, SignalInterrupt):
                # What finished before the interruption is kept; say so before the interruption's own line.
                _print_batch_summary(ended, False, "before the interruption: ")
                raise
            failed = _print_batch_summary(ended, args.quiet)
            log.made.update(status="failed" if failed else "done", exit_code=1 if failed else 0,
                            message=f"{failed} of {len(ended)} failed" if failed else None,
                            outputs=[str(output) for status, output, _ in ended if status == "written"])
    finally:
        progress.close()
    return 1 if failed else 0


def _print_batch_summary(ended: list[tuple[str, Path, str]], quiet: bool, lead: str = "") -> int:
    """Print the batch's counts and its failures (with `quiet`, only where something failed); return how many
    failed."""
    counts = {status: sum(item[0] == status for item in ended) for status in ("written", "skipped", "failed")}
    if quiet and not counts["failed"]:
        return 0
    print(f"vidstyle: {lead}{counts['written']} written, {counts['skipped']} skipped (output exists; --overwrite "
          f"replaces it), {counts['failed']} failed", file=sys.stderr)
    for status, output, reason in ended:
        if status == "failed":
            print(f"  failed: {output}: {reason}", file=sys.stderr)
    return counts["failed"]


def _add_trim(parser: argparse.ArgumentParser, title: str, verb: str) -> None:
    trim = parser.add_argument_group(title)
    trim.add_argument("--start", type=_seconds, metavar="TIME",
                      help=f"first moment to {verb}: seconds, MM:SS or HH:MM:SS.ms")
    ends = trim.add_mutually_exclusive_group()
    ends.add_argument("--duration", type=_seconds, metavar="TIME", help=f"how much to {verb} from --start")
    ends.add_argument("--end", type=_seconds, metavar="TIME", help="the moment to stop before")


def _trim_end(args: argparse.Namespace) -> float | None:
    if args.duration is not None:
        if args.duration <= 0:
            raise UsageError(f"--duration must be more than 0 seconds (got {args.duration:g})")
        return (args.start or 0.0) + args.duration
    return args.end


def _cmd_image(args: argparse.Namespace) -> int:
    from vidstyle.still import stylize_image

    # A still is a first frame: its iteration count is the preset's first_iters unless --iters is given.
    config = _config_from(args, _STILL_FIELDS + _IMAGE_FIELDS, first_iters=args.iters)
    if args.animation_every is not None and args.animation is None:
        raise UsageError("--animation-every sets the pictures of an --animation: give --animation FILE too")
    started = time.perf_counter()
    bar = _IterationBar(args.quiet)
    try:
        with _JsonLog(args.log_json, bar, args) as log:
            stylize_image(args.content, args.style, args.output, config, overwrite=args.overwrite, on_event=log,
                          animation=args.animation, animation_every=args.animation_every)
            log.made.update(output=args.output, animation=args.animation)
    finally:
        bar.close()
    if not args.quiet:
        also = f" and {args.animation}" if args.animation is not None else ""
        print(f"wrote {args.output}{also} in {_clock(time.perf_counter() - started)}", file=sys.stderr)
    return 0


class _IterationBar:
    """A still's progress: a bar over its iterations, or a plain line every few seconds off a terminal."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.bar, self.last = quiet, None, time.monotonic()
        self.plain = not _terminal_columns()

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if isinstance(event, ImageStarted):
            for note in event.notes:
                print(note, file=sys.stderr)
        elif isinstance(event, FrameStarted) and not self.plain:
            from tqdm import tqdm

            self.bar = tqdm(total=event.iters, unit="it", dynamic_ncols=True, file=sys.stderr)
        elif isinstance(event, IterationDone):
            if self.bar is not None:
                self.bar.update(1)
            elif time.monotonic() - self.last >= _Progress.PLAIN_EVERY:
                self.last = time.monotonic()
                print(f"iteration {event.iteration}/{event.iters}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _cmd_demo(args: argparse.Namespace) -> int:
    from vidstyle.pipeline import prepare_render, render_job

    config = demo_config(args.device)
    output = args.output / DEMO_OUTPUT if _is_output_folder(args.output) else args.output
    # Checked first, so that a refused output is the only line a failed demo prints.
    job = prepare_render(demo_clip(), [builtin_style("starry-night")], output, config, overwrite=args.overwrite)
    progress = _Progress(args.quiet)
    progress.say(f"demo: Big Buck Bunny (c) Blender Foundation, CC BY 3.0, as The Starry Night (public domain), "
                 f"{config.size} px ({'small on a CPU' if config.size < GPU_DEMO_SIZE else 'on a GPU'})")
    try:
        out = render_job(job, on_event=progress)
    finally:
        progress.close()
    print(f"demo written to {out.resolve()}", file=sys.stderr)
    return 0


DEMO_OUTPUT = "vidstyle-demo.mp4"
METRIC_FLOW_NAMES = {"farneback": "Farneback", "dis": "DIS"}


def _cmd_metrics(args: argparse.Namespace) -> int:
    import json

    from vidstyle.io.images import read_style_image
    from vidstyle.metrics import METRIC_FLOWS, measure_video_along

    style = read_style_image(resolve_style(args.style)) if args.style else None
    flows = METRIC_FLOWS if args.flow == "both" else (args.flow,)
    along = measure_video_along(args.output, args.source, flows, style, args.start, _trim_end(args))
    if args.json:
        # Keyed by flow whatever --flow is, so that a script reads one layout.
        print(json.dumps({flow: metrics.as_dict() for flow, metrics in along.items()}))
        return 0
    found = along[flows[0]]

    def each(field: str, digits: int = 6) -> str:
        """The field's figure along each flow measured, named by its flow where there are two."""
        if len(along) == 1:
            return f"{getattr(found, field):.{digits}f}"
        return ", ".join(f"{getattr(metrics, field):.{digits}f} along {METRIC_FLOW_NAMES[flow]}"
                         for flow, metrics in along.items())

    print(f"frames                       {found.frames}")
    if found.warping_error is None:
        print("warping error                n/a: no two frames of one shot follow each other, so no flicker to "
              "measure")
    else:
        print(f"warping error (output)       {each('warping_error')}   flicker: lower is steadier"
              + ("; each flow favours paint that follows it (the default render mostly DIS's) and charges paint "
                 "that does not, so compare renders along the same flow" if len(flows) > 1 else ""))
        print(f"warping error (source)       {each('source_warping_error')}   the floor: the source's own change "
              "that flow cannot explain, which a render rarely goes below")
    if found.flow_coverage is not None:
        print(f"flow coverage                {each('flow_coverage', 3)}   share of pixels passing the flow's "
              "forward-backward check (the ones both errors count); on a flat region (a sky) a flow that finds no "
              "motion passes it too, so it does not say the flow is right")
    if found.long_term_warping_error is not None:
        print(f"long-term warping error      {each('long_term_warping_error')}   frames 2, 4 and 8 apart (as far as "
              f"the shots go): strokes kept over time (source: {each('source_long_term_warping_error')})")
    print(f"edge correlation with source {found.edge_correlation:.3f} mean, {found.min_edge_correlation:.3f} min"
          "   content kept: 1 is the source's edges")
    if found.style_gain is not None:
        print(f"style gain                   {found.style_gain:.3f}   closer to the painting's patches than the "
              "source: 1 is the painting itself, 0 no closer, below 0 further")
    return 0


TOKEN_VARIABLE = "VIDSTYLE_TOKEN"  # --token's value where the flag is not given (kept out of the process list)


def _cmd_serve(args: argparse.Namespace) -> int:
    from vidstyle.serve import prepare_server

    from_environment = args.token is None and TOKEN_VARIABLE in os.environ
    token = os.environ[TOKEN_VARIABLE] if from_environment else args.token
    try:
        server = prepare_server(args.host, args.port, args.data, args.workers, args.max_upload, token,
                                args.device, min_free=args.min_free, max_queued=args.max_queued,
                                stall_timeout=args.stall_timeout)
    except SettingError as exc:
        if from_environment and exc.setting == "token":  # named where the user set it, not as a flag not given
            raise UsageError(f"${TOKEN_VARIABLE} {exc.problem}") from None
        raise
    print(server.summary, file=sys.stderr)
    server.run()
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from vidstyle.preview import preview

    config = _config_from(args, _STILL_FIELDS + _PREVIEW_VIDEO_FIELDS)
    with _JsonLog(args.log_json, _PreviewLines(args.quiet), args) as log:
        result = preview(args.input, args.style, args.output, config, at=args.at, count=args.frames,
                         strengths=args.strength if args.strength is not None else (1.0,),
                         overwrite=args.overwrite, on_event=log)
        log.made.update(sheet=result.sheet, frames=result.frames, times=result.times, strengths=result.strengths,
                        estimate={**dataclasses.asdict(result.estimate),
                                  "total_seconds": result.estimate.total_seconds})
    # Printed with --quiet too: the sheet's name and the estimate are what a preview is for, on stdout, not messages.
    times = ", ".join(f"{t:.2f} s" for t in result.times)
    print(f"contact sheet: {result.sheet} (frames at {times}; the source on top)")
    if result.strengths != (1.0,):
        for row, (strength, weight) in enumerate(zip(result.strengths, result.style_weights, strict=True), 2):
            print(f"row {row}: --strength {strength:g} is --style-weight {weight:g}")
    print(_estimate_line(result.estimate))
    return 0


class _PreviewLines:
    """A line a stylized preview frame: they take seconds each on a CPU, and there are a few of them."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, event: Event) -> None:
        if not self.quiet and isinstance(event, FrameDone):
            kind = "fresh" if event.fresh else "a later frame, timed for the estimate"
            print(f"frame {event.index}: {event.seconds:.1f} s ({kind})", file=sys.stderr)


def _estimate_line(estimate: Estimate) -> str:
    """One line: the whole render's time and the measured parts it is made of."""
    width, height = estimate.size
    parts = [f"{estimate.fresh_frames} fresh frame{'s' * (estimate.fresh_frames != 1)} x "
             f"{_short_seconds(estimate.fresh_seconds)} s"]
    if estimate.later_frames:
        parts.append(f"{estimate.later_frames} later frame{'s' * (estimate.later_frames != 1)} x "
                     f"{_short_seconds(estimate.later_seconds)} s ({estimate.later_iterations:.0f} iterations each)")
    parts.append(f"plan {_short_seconds(estimate.plan_seconds)} s, start-up {_short_seconds(estimate.setup_seconds)} s")
    return f"whole render on {estimate.device} at {width}x{height}: about {_clock(max(1.0, estimate.total_seconds))} " \
           f"({', '.join(parts)})"


def _short_seconds(seconds: float) -> str:
    """Two significant figures under 10 s (0.41, 3.2), whole seconds above (14, 240)."""
    return f"{seconds:.2g}" if seconds < 10 else f"{seconds:.0f}"


# The signals that stop a command cleanly: Ctrl-C, a service manager's stop, and a closed terminal or SSH session
# (SIGHUP, whose default would kill the render where it stands, its partial output left behind).
_STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _ignore_stops() -> None:
    """After the first stop signal, later ones of any kind (a repeated Ctrl-C, a service manager's SIGTERM after
    it) are ignored: the clean-up they would cut short (saving finished frames, stopping ffmpeg, removing the
    partial file) then completes, and Python prints no 'Exception ignored' lines. kill -9 still ends it."""
    for sig in _STOPS:
        signal.signal(sig, signal.SIG_IGN)


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    """As Ctrl-C (SIGTERM, and SIGHUP): the first stops the work."""
    _ignore_stops()
    raise SignalInterrupt(signum)


class _SilentOnceHungUp:
    """A standard stream that stops writing, quietly, once its terminal has hung up: every write to a closed
    terminal fails (EIO), from the progress bar's, on the thread that saves frames, to the last message's, and
    any of them would otherwise turn the clean stop that SIGHUP makes into an error."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.hung_up = stream, False

    def write(self, text: str) -> int:
        self._unless_hung_up(self.stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._unless_hung_up(self.stream.flush)

    def _unless_hung_up(self, call: Callable[..., Any], *args: Any) -> None:
        if not self.hung_up:
            try:
                call(*args)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                self.hung_up = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _stop_on_hangup() -> None:
    """A closed terminal stops the command as SIGTERM does, unless the command was started to outlive it (nohup
    leaves SIGHUP ignored)."""
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, _raise_on_sigterm)


def _interrupt_once(_signum: int, _frame: FrameType | None) -> None:
    """The first Ctrl-C stops the work."""
    _ignore_stops()
    raise KeyboardInterrupt


# The library's advice about the work directory, as this command line takes one.
_WORKDIR_ADVICE = (("choose another work directory", "choose another with --workdir"),
                   ("choose a work directory apart from the output's folder", "choose one apart from the output's "
                                                                             "folder with --workdir"))

# Library errors that a flag of this command line can resolve: the hint names it.
_HINTS: tuple[tuple[type[VidstyleError], str], ...] = (
    (NotAWorkDir, "move it, or choose another directory with --workdir"),
    (CheckpointMismatch, "use --restart to discard the checkpoints, or --workdir to choose another directory"),
    (CheckpointError, "use --restart to discard the checkpoints"),
    (OutputExists, "use --overwrite to replace it"),
)


# A library name inside a message (each_style, first_iters): a word of lower case joined by underscores.
_LIBRARY_NAME = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b")


# A one-word setting named with its value or bound ("init prev", "flow is none", "passes over 1") in a problem that
# names settings: alone, such a word is often plain English ("the optical flow"), so only these forms are the
# setting; not inside a flag already written ("--output-size is").
_ONE_WORD_NAMES = "|".join(sorted(f.name for f in dataclasses.fields(Config) if "_" not in f.name))
_CHOICE_VALUES = "|".join(sorted(re.escape(value) for values in CHOICES.values() for value in values))
_ONE_WORD_SETTING = re.compile(rf"(?<![\w/-])({_ONE_WORD_NAMES})\b(?= (?:is|over|under|{_CHOICE_VALUES})\b)")


def _flags_for_names(exc: SettingError, command: str) -> str:
    """The library's setting and argument names in a setting's problem as this command line's flags (only there:
    a path elsewhere in a message may hold such a name), one-word ones where the problem names settings."""
    known = {f.name for f in dataclasses.fields(Config)} | {"each_style", "chunk_frames"}
    text = _LIBRARY_NAME.sub(lambda m: _flag_for(m.group(0), command) if m.group(0) in known else m.group(0),
                             exc.problem)
    if not exc.names_settings:
        return text
    return _ONE_WORD_SETTING.sub(lambda m: _flag_for(m.group(0), command), text)


def _message(exc: VidstyleError, args: argparse.Namespace) -> str:
    """The library's one line in the command line's words: flags instead of setting names, and a hint."""
    command = args.command
    if isinstance(exc, SettingError):
        preset_file = _from_preset_file(exc.setting, args)
        if preset_file is not None:
            return f"{preset_file}: {exc}"
        flag = _flag_for(exc.setting, command)
        if exc.setting == "end" and getattr(args, "duration", None) is not None:
            flag = "--duration"  # the command line's other way to end a part
        return f"{flag} {_flags_for_names(exc, command)}"
    text = str(exc)
    if isinstance(exc, VideoOpenError) and text.endswith("is a still image, not a video") and command == "render":
        return f"{text}; use 'vidstyle image' for stills"
    if text.startswith("content image") and command == "image" and \
            re.search(r" is (a video|an animated \w+), not a still image$", text):
        return f"{text}; use 'vidstyle render' for videos"
    if isinstance(exc, CheckpointMismatch) and exc.settings:
        flags = ", ".join(with_older_value(_flag_for(name, command), name, exc.older, exc.before)
                          for name in exc.settings)
        text = text.replace("setting(s) " + shown_settings(exc.settings, exc.older, exc.before), "setting(s) " + flags)
    # A still's animation is encoded too, and has nothing to resume.
    if command in ("render", "demo") and isinstance(exc, (CheckpointError, EncodeError)) and _disk_full(exc):
        return f"{text}; free some space, then run the same command again: it resumes"
    if RESTART in text or any(advice in text for advice, _ in _WORKDIR_ADVICE):  # its own advice, in flags
        text = text.replace(RESTART, "use --restart")
        for advice, flagged in _WORKDIR_ADVICE:
            text = text.replace(advice, flagged)
        return text
    for kind, hint in _HINTS:
        if isinstance(exc, kind):
            return f"{text}; {hint}"  # the first that fits: the list goes from the narrowest kind
    return text


def _from_preset_file(setting: str, args: argparse.Namespace) -> Path | None:
    """The preset file a setting's value came from, where no flag gave it: the error is then about the file."""
    flag = _flag_for(setting, args.command)  # image's --iters sets first_iters: look at the flag that sets it
    given = flag.startswith("--") and getattr(args, flag[2:].replace("-", "_"), None) is not None
    if given or not hasattr(args, "config"):
        return None
    return preset_file_setting(args.config, setting)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _disk_full(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)


def _flag_for(setting: str, command: str) -> str:
    if command == "image" and setting == "first_iters":
        return "--iters"  # a still's iterations are the first frame's
    if command == "preview" and setting in _PREVIEW_FLAGS:
        return _PREVIEW_FLAGS[setting]
    special = {"styles": "--style", "style_paths": "--style", "stylizer": "the prepared stylizer",
               "ray_address": "--ray", "inputs": "the inputs", "output_dir": "-o",
               "frames": "the part of the video (--start, --end, --duration)", **RECORDED_BY_THE_RENDER}
    return special.get(setting, "--" + setting.replace("_", "-"))


def main(argv: Sequence[str] | None = None, *, restore_signals: bool = True) -> int:
    """Run one command; returns its exit code. The `vidstyle` program passes `restore_signals=False`: once the
    command is over a Ctrl-C or SIGTERM has nothing left to stop, and is ignored until the process ends (restored,
    a late repeat of one that stopped the command would end the process with a traceback)."""
    handlers = {sig: signal.getsignal(sig) for sig in _STOPS}
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (_SilentOnceHungUp(s) if s is not None and s.isatty() else s  # type: ignore[assignment]
                              for s in streams)
    try:
        return _run_command(argv)
    finally:
        sys.stdout, sys.stderr = streams
        for sig, handler in handlers.items():
            if handler is not None:  # None: a handler set outside Python, left as it is
                signal.signal(sig, handler if restore_signals else signal.SIG_IGN)


def _import_the_engine(debug: bool) -> None:
    """Import torch and the rest while Ctrl-C and SIGTERM are only noted, then act on them.

    An exception raised by a signal handler while torch's C++ runs Python code during its import cannot unwind
    through that C++: the process aborts with a C++ message. So the handlers wait until the imports are done.
    """
    noted: list[int] = []
    handlers = {sig: signal.signal(sig, lambda signum, _frame: noted.append(signum))
                for sig in _STOPS if signal.getsignal(sig) in (_interrupt_once, _raise_on_sigterm)}
    try:
        import cv2

        import vidstyle.pipeline  # noqa: F401 - torch, OpenCV and the model code, loaded once here

        # OpenCV's own warnings and error lines ("[ WARN:0@1.2] global grfmt_tiff.cpp:811 ...", "[ERROR:0@0.1]
        # global loadsave.cpp ...") come before vidstyle's one line about the same file, in its code's words; its
        # errors still raise, whatever it prints. --debug shows its errors.
        levels = cv2.utils.logging
        levels.setLogLevel(levels.LOG_LEVEL_ERROR if debug else levels.LOG_LEVEL_SILENT)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if signal.SIGINT in noted:
        raise KeyboardInterrupt
    if noted:
        raise SignalInterrupt(noted[0])


@contextlib.contextmanager
def _debug_log(shown: bool) -> Iterator[None]:
    """With `shown`, vidstyle's debug records on stderr for the command: the tracebacks of errors it passes over
    rather than ends with (a batch's failed render). Other libraries' loggers keep their levels; the logger is as it
    was afterwards (main() may run again in the same process)."""
    if not shown:
        yield
        return
    logger = logging.getLogger("vidstyle")
    handler, level = logging.StreamHandler(sys.stderr), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run_command(argv: Sequence[str] | None) -> int:
    args = argparse.Namespace(debug=False, command="")
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        if args.command == "serve":  # SIGHUP keeps its default: the server's loop would swallow its exception
            from vidstyle.serve import limit_image_pixels

            limit_image_pixels()  # before OpenCV loads with the engine
        else:
            _stop_on_hangup()
        if args.command not in ("styles", "presets"):
            _import_the_engine(args.debug)
        with _debug_log(args.debug):
            return func(args)
    except BrokenPipeError as exc:
        # The reader of our output left (`vidstyle metrics ... | head`): end quietly, as a command killed by
        # SIGPIPE would, and point stdout at nothing so that the final flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _ending(exc, args)[0]
    except (Exception, KeyboardInterrupt, SignalInterrupt) as exc:
        if args.debug and not isinstance(exc, (KeyboardInterrupt, SignalInterrupt)):
            raise
        code, line = _ending(exc, args)
        print(line, file=sys.stderr)
        return code


def _ending(exc: BaseException, args: argparse.Namespace) -> tuple[int, str]:
    """A command's exit code and its one line on stderr for what ended it (the CLI's promise: no traceback)."""
    if isinstance(exc, VidstyleError):
        prefix = "vidstyle: " if exc.exit_code >= 128 or isinstance(exc, BusyError) else "vidstyle: error: "
        return exc.exit_code, prefix + _message(exc, args)
    if isinstance(exc, KeyboardInterrupt):
        return 130, "vidstyle: interrupted"
    if isinstance(exc, SignalInterrupt):
        return 128 + exc.signum, "vidstyle: terminated"
    if isinstance(exc, BrokenPipeError):  # said only in the event log: stdout's reader is gone
        return 128 + signal.SIGPIPE, "vidstyle: the reader of the output went away"
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        # A name given on the command line (or made from one) over the file system's limit: not an internal
        # error, and its few hundred characters are not worth printing whole.
        name = Path(str(exc.filename or "")).name
        shown = f" {shortened(name, 40)}" if name else ""
        return 2, f"vidstyle: error: a file name{shown} is too long for the file system"
    return 1, f"vidstyle: error: {type(exc).__name__}: {exc} (run with --debug for details)"


__all__ = ["UsageError", "build_parser", "main"]
