"""Every setting of a render in one frozen dataclass, and the TOML presets in `configs/`.

Precedence: the dataclass defaults < the preset (`balanced` unless another is named) < explicit overrides.
The CLI reads each field's help text from here and shows its default as the balanced preset sets it (else the
dataclass's), so the help shows what a render without a preset gets.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import numbers
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidstyle.errors import ConfigError, SettingError, shortened

DEFAULT_PRESET = "balanced"
MAX_SIZE = 8192  # long side in pixels; beyond this VGG activations alone exceed any GPU's memory


def _opt(default: Any, help_text: str, *, frames: bool = True) -> Any:
    """A field with its help text; `frames=False` marks settings that cannot change a rendered frame."""
    return field(default=default, metadata={"help": help_text, "frames": frames})


@dataclass(frozen=True)
class Config:
    """Settings of one render or still; frozen so that a hash of it identifies the frames it makes."""

    size: int = _opt(512, "long side of the render in pixels (aspect kept, both sides even)")
    iters: int = _opt(40, "iterations per frame (one VGG forward + backward each)")
    first_iters: int = _opt(120, "iterations for the first frame and the first after a scene cut")
    # Iterations past this point cost time, edges and steadiness at the same style (scripts/bench_tol.py,
    # docs/performance.md "Adaptive iterations").
    tol: float = _opt(0.001, "stop a later frame early once its loss improves by less than this fraction per "
                             "iteration (checked every 5, at least 10; iters stays the cap; fresh frames always "
                             "take first_iters); 0: always the full count")
    # Two halvings, not none: painted at a quarter and a half of its size first, a fresh frame takes the painting's
    # large shapes (swirls, waves, bands of colour), not only its small strokes, and the later frames inherit them;
    # measured without VGG19 it is more of the painting on every shared clip and painting (scripts/bench_style.py,
    # docs/performance.md "Coarse-to-fine"). Levels under 64 px are skipped, so small renders paint at full size only.
    coarse_levels: int = _opt(2, "coarse-to-fine for fresh frames (first, after a cut, stills): halvings of the "
                                 "size optimized first, each for the same iterations as the full size")
    optimizer: str = _opt("lbfgs", "lbfgs or adam")
    adam_lr: float = _opt(0.02, "Adam step size (pixels in 0..1)")
    # Content 0.125, style 15 and structure 0.5: the content loss sees the frame at an eighth of its resolution,
    # so holding the picture with it held back the painting's strokes as well; the structure term holds the fine
    # edges and lets a style weight three times higher paint the rest. Against content 1 and style 5 that kept
    # more of the source's edges on every shared clip and painting and painted more strongly on all but one,
    # measured with a style figure that does not use VGG19 (scripts/bench_style.py, scripts/bench_fidelity.py;
    # docs/performance.md "Structure"); coarse-to-fine then painted more still, and structure 0.5 rather than 0.25
    # gave back the edges it took (docs/performance.md "Coarse-to-fine"). Style 25 with edge contrast 3: outlines
    # held at three times their contrast keep the picture readable under more paint, and with the structure term's
    # floor a mostly flat frame takes the painting's strokes in its flat parts. Over a whole shot this pair kept
    # more of a mostly flat clip's edges and paint than style 20 with contrast 2, whose paint piled up in the sky
    # frame after frame (docs/performance.md "Edge contrast"). Style 50 since relu5_1 left the style layers: the
    # four left paint at least as strongly at 50 as the five did at 25 on every shared still, clip and painting but
    # one (measured without VGG19), with the edges kept over 0.75 (docs/performance.md "The painting's composition").
    # Smoothness 0.3, not 1: at 1 it charged a painting's own brush strokes about as much as the whole style term
    # was worth.
    content_weight: float = _opt(0.125, "weight of the content loss (relu4_2)")
    style_weight: float = _opt(50.0, "weight of the Gram style loss (relu1_1..relu4_1)")
    tv_weight: float = _opt(0.3, "weight of the total-variation smoothness loss")
    structure_weight: float = _opt(0.5, "weight of the structure loss: the source's fine luminance edges and lines "
                                         "(a Laplacian), kept while the style paints the rest")
    edge_contrast: float = _opt(3.0, "the structure loss holds the source's edges at this multiple of their "
                                     "contrast, like drawn outlines (1: as in the source); higher keeps the "
                                     "picture readable under more paint")
    temporal_weight: float = _opt(0.0, "weight of the flow-masked temporal loss (needs flow)")
    # A later frame is held to the paint carried from the frames before it, and where the source is flat (a sky) that
    # paint is the painting's large shapes, laid out by the shot's fresh frame: at the weight that balances a frame
    # painted from its source, those strokes rode on over whatever the picture showed next, and a slow pan under a
    # wide sky kept fewer of its edges than frames each painted from their own source. A stronger term in flat
    # regions keeps them at about the same style; in detailed regions the frame's own edges already hold, and more
    # weight there only took paint (scripts/bench_fidelity.py, scripts/bench_style.py; docs/performance.md "Where it
    # stands, clip by clip").
    held_structure: float = _opt(3.0, "on a frame that the temporal loss holds to its neighbours' paint (the frames "
                                      "before it; both neighbours in a later pass), the structure loss's weight "
                                      "where the source is flat, as a multiple of structure_weight (detailed regions "
                                      "keep structure_weight; 1: as a frame painted from its source alone)")
    temporal_reach: int = _opt(1, "frames back the temporal loss looks: 1 is the previous frame only; N also "
                                  "takes t-2, t-4, t-8, ... (powers of two) up to t-N, each where the closer ones "
                                  "do not see (a region hidden and shown again gets its old strokes back)")
    passes: int = _opt(1, "passes over each shot: 1 stylizes each frame once; N adds N-1 passes, backward and "
                          "forward in turn, each frame starting half from its own last result and half from "
                          "its neighbour's, warped (each pass costs a quarter of a later frame's iterations)")
    style_blend: tuple[float, ...] = _opt((), "relative weights of several styles, e.g. 0.7,0.3 (default equal)")
    style_scale: float = _opt(1.0, "style image long side relative to the render's long side")
    preserve_colors: bool = _opt(False, "keep the source's colours, take only luminance from the style")
    # From the source as it is, fresh frames spent their iterations moving colours and kept fewer edges at less
    # style (scripts/bench_style.py, docs/performance.md "Style strength").
    palette_start: bool = _opt(True, "frames painted from their source (the first, after a cut, stills; every frame "
                                     "with init content) start from it recoloured to the painting's palette; off: "
                                     "from the source as it is (always off with preserve_colors)")
    init: str = _opt("prev", "what later frames start from: prev, content or random")
    prev_weight: float = _opt(1.0, "share of the previous frame's stylization carried into the next frame's start")
    flow: str = _opt("none", "optical flow for the warm start and temporal loss: none, dis, farneback or "
                             "dis+farneback (DIS, and Farneback where only it is consistent)")
    # Where the source itself changed (something appeared, the flow slid a background over a moving object), the
    # flow's forward-backward check still passes; carrying the old paint there rode old texture and edges along
    # (scripts/bench_fidelity.py, docs/performance.md "Fidelity under coherence").
    change_tolerance: float = _opt(0.025, "colour change (mean absolute difference, 0..1) between a frame and the "
                                          "previous one warped onto it above which the previous frame's paint is "
                                          "not trusted there; 0 turns the check off")
    cut_threshold: float = _opt(0.5, "scene-cut sensitivity: histogram distance above which a frame starts fresh")
    pooling: str = _opt("max", "VGG pooling: max (as trained) or avg")
    precision: str = _opt("auto", "fp32, bf16, fp16, or auto (bf16 where the hardware runs it natively)")
    seed: int = _opt(0, "seed of the noise later frames start from with init random (renders are repeatable "
                       "for a seed and device)")
    device: str = _opt("auto", "auto, cpu, cuda, cuda:N (a GPU by index) or mps (auto: cuda, then mps, then cpu)",
                       frames=False)
    crf: int = _opt(18, "H.264 quality, 0 (lossless: a profile that browsers, phones and QuickTime do not play) .. "
                        "51 (worst)", frames=False)
    output_size: str = _opt("render", "size of the written video (or still): render (as stylized), source (the "
                                      "input's), WxH, or a long side N; frames are scaled with Lanczos", frames=False)
    keep_frames: bool = _opt(False, "keep the frame checkpoints after a successful render", frames=False)
    follow_fades: bool = _opt(True, "darken the written frames where the source darkens: fades to and from black "
                                    "and near-black frames stay dark (off: every frame at the painting's "
                                    "brightness)", frames=False)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _normalized(f.name, getattr(self, f.name)))
        validate(self)

    def frames_dict(self) -> dict[str, Any]:
        """The settings that shape rendered frames (not device, crf, ...): what a resume must match."""
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["frames"]}
        if held_structure_unused(self) is not None:
            # As 1, the value it has in frames made before it existed: where it shapes nothing (flow none, the
            # fast preset) those frames are these, and resume.
            settings["held_structure"] = 1.0
        if self.init != "random":
            settings["seed"] = 0  # it draws only init random's noise: any seed makes these frames
        return settings


CHOICES = {
    "optimizer": ("lbfgs", "adam"),
    "init": ("prev", "content", "random"),
    "flow": ("none", "dis", "farneback", "dis+farneback"),
    "pooling": ("max", "avg"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
}

# What a setting that works along the optical flow asks for where flow is none.
_NEEDS_FLOW = "it needs flow " + ", ".join(CHOICES["flow"][1:-1]) + " or " + CHOICES["flow"][-1]

# A GPU may be named by its index, as torch names it (cuda:1); torch keeps the index in 8 bits (cuda:128 is
# cuda:-128 to it).
DEVICE_NAMES = re.compile(r"auto|cpu|mps|cuda(:(\d|[1-9]\d|1[01]\d|12[0-7]))?")
OUTPUT_SIZES = re.compile(r"render|source|[1-9]\d*(x[1-9]\d*)?")

# Inclusive ranges of the numeric settings. Seeds stay within 63 bits so that per-frame seeds derived from them
# fit torch's generator (see sequence.frame_seed).
RANGES: dict[str, tuple[float, float]] = {
    "size": (16, MAX_SIZE),
    "iters": (1, 100_000),
    "first_iters": (1, 100_000),
    "tol": (0.0, 1.0),
    "coarse_levels": (0, 4),
    "adam_lr": (1e-6, 10.0),
    "content_weight": (0.0, 1e6),
    "style_weight": (0.0, 1e6),
    "tv_weight": (0.0, 1e6),
    "structure_weight": (0.0, 1e6),
    "edge_contrast": (0.1, 100.0),
    "temporal_weight": (0.0, 1e6),
    "held_structure": (0.0, 100.0),
    "temporal_reach": (1, 64),
    "passes": (1, 16),
    "style_scale": (0.05, 8.0),
    "prev_weight": (0.0, 1.0),
    "cut_threshold": (0.0, 1.0),
    "change_tolerance": (0.0, 1.0),
    "seed": (0, 2**63 - 1),
    "crf": (0, 51),
}


def validate(cfg: Config) -> None:
    """Reject a wrong type or an impossible value with a message that names the setting."""
    for f in dataclasses.fields(cfg):
        _check_type(f.name, getattr(cfg, f.name), f.default)
    for name, choices in CHOICES.items():
        value = getattr(cfg, name)
        if value not in choices:
            raise SettingError(name, f"must be one of {', '.join(choices)} (got {shortened(repr(value), 60)})")
    if not OUTPUT_SIZES.fullmatch(cfg.output_size):
        raise SettingError("output_size", f"must be render, source, WxH or a long side N "
                                          f"(got {shortened(repr(cfg.output_size), 60)})")
    # Lengths first: int() refuses a string of thousands of digits.
    if cfg.output_size not in ("render", "source") and any(len(side) > len(str(MAX_SIZE)) or int(side) > MAX_SIZE
                                                           for side in cfg.output_size.split("x")):
        raise SettingError("output_size", f"sides must be at most {MAX_SIZE} pixels "
                                          f"(got {shortened(cfg.output_size, 60)})")
    # As the render's own size: under it, evened for H.264, a long side loses the picture's shape (1 gave 2x2),
    # and a WxH of a few pixels is no picture of the render.
    if cfg.output_size.isdigit() and int(cfg.output_size) < RANGES["size"][0]:
        raise SettingError("output_size", f"a long side must be at least {RANGES['size'][0]:g} pixels "
                                          f"(got {cfg.output_size})")
    if "x" in cfg.output_size and min(int(side) for side in cfg.output_size.split("x")) < RANGES["size"][0]:
        raise SettingError("output_size", f"each side must be at least {RANGES['size'][0]:g} pixels "
                                          f"(got {cfg.output_size})")
    if not DEVICE_NAMES.fullmatch(cfg.device):
        raise SettingError("device", f"must be auto, cpu, cuda, cuda:N (a GPU by index) or mps "
                                     f"(got {shortened(repr(cfg.device), 60)})")
    for name, (low, high) in RANGES.items():
        value = getattr(cfg, name)
        # Compared first: math.isfinite overflows on an int too large for a float (a 400-digit seed); NaN fails both.
        if not (low <= value <= high and math.isfinite(value)):
            got = repr(value) if len(repr(value)) <= 24 else repr(value)[:20] + "..."
            raise SettingError(name, f"must be between {_number(low)} and {_number(high)} (got {got})")
    if cfg.style_weight == cfg.content_weight == cfg.tv_weight == cfg.structure_weight == 0:
        # Nothing pulls a frame anywhere: it would come out as it starts, after every iteration was spent on it.
        raise SettingError("style_weight", "is 0, and so are content_weight, tv_weight and structure_weight: with "
                                           "every loss weighing nothing there is no picture to paint towards",
                           names_settings=True)
    if cfg.temporal_reach > 1 and cfg.flow == "none":
        raise SettingError("temporal_reach", f"looks back along the optical flow: {_NEEDS_FLOW}", names_settings=True)
    if cfg.passes > 1 and cfg.flow == "none":
        raise SettingError("passes", f"blends each frame with its neighbour warped along the optical flow: "
                                     f"{_NEEDS_FLOW}", names_settings=True)
    blend = cfg.style_blend
    # A float first: an int too large for one (10**400) is refused here, not by an OverflowError; and the sum too,
    # since weights that are each finite can add up to infinity, which would weigh every style zero.
    floats = [_as_float(w) for w in blend]
    if any(not math.isfinite(w) or w < 0 for w in floats) or (blend and not 0 < sum(floats) < math.inf):
        raise SettingError("style_blend", f"weights must be finite, non-negative and not all zero, and add up to a "
                                          f"finite number (got {shortened(repr(blend), 60)})")


def _number(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _check_type(name: str, value: Any, default: Any) -> None:
    """The type of the default, with an int accepted for a float; bools are not numbers here."""
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
    elif isinstance(default, tuple):
        ok = isinstance(value, tuple) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise SettingError(name, f"must be {_type_name(default)} (got {shortened(repr(value), 60)})")


def _type_name(default: Any) -> str:
    if isinstance(default, tuple):
        return "a sequence of numbers"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[type(default)]


def check_style_count(cfg: Config, styles: int, name: str = "style_paths") -> None:
    """A blend names one weight per style image; `name` is the argument the styles were given as."""
    if styles < 1:
        raise SettingError(name, "needs at least one style image")
    if cfg.style_blend and len(cfg.style_blend) != styles:
        weights = len(cfg.style_blend)
        raise SettingError("style_blend", f"has {weights} weight{'s' * (weights != 1)} for {styles} style "
                                          f"image{'s' * (styles != 1)}: give one for each")


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Config)}


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Config))


def _as_float(value: float) -> float:
    """A number as a float; one too large for a float (an int of 400 digits) as infinity."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _normalized(name: str, value: Any) -> Any:
    """TOML and Python callers write lists for tuples and `2` for 2.0: bring a value to its field's own type."""
    default = _DEFAULTS[name]
    if _is_number(default) and _is_number(value) and not isinstance(value, (int, float)):
        # NumPy's numbers (a size computed with NumPy): kept as Python's own, which the manifest's JSON can hold.
        value = int(value) if isinstance(value, numbers.Integral) else float(value)
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        return tuple(_as_float(v) if _is_number(v) else v for v in value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def presets_dir() -> Path:
    """The presets: `configs/` of a source checkout, or the copy installed inside the package."""
    installed = Path(str(importlib.resources.files("vidstyle") / "configs"))
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def _builtin_preset(name_or_path: str | Path) -> Path | None:
    """The built-in preset's file where the text is a built-in preset's name (a Path("fast") too), else None."""
    name = str(name_or_path)
    return presets_dir() / f"{name}.toml" if name in preset_names() else None


def _preset_path(name_or_path: str | Path) -> Path:
    """A built-in preset's name (`fast`) names it, whatever the current folder holds; any other name is a TOML
    file whatever its name (`x.TOML`, `mine`)."""
    builtin = _builtin_preset(name_or_path)
    if builtin is not None:
        return builtin
    path, name_or_path = Path(name_or_path), str(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"preset {path} is a directory, not a TOML file")
    if path.exists():  # a pipe (`--config <(...)`), a device: read more than once (preset_file_setting), or for ever
        raise ConfigError(f"preset {name_or_path} is not a regular file; save the settings to a TOML file")
    if path.suffix or path.name != name_or_path:
        raise ConfigError(f"preset file not found: {name_or_path}")
    raise ConfigError(f"unknown preset '{name_or_path}' (available: {', '.join(preset_names())})")


def read_preset(name_or_path: str | Path) -> dict[str, Any]:
    """Parse a preset by name (`fast`) or path (`my.toml`) into {field: value}; never executes anything."""
    path = _preset_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # the mark some editors begin UTF-8 with too
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read preset {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed preset {path}: {exc}") from exc
    known = set(field_names())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    values = {name: _normalized(name, value) for name, value in data.items()}
    for name, value in values.items():
        try:
            _check_type(name, value, _DEFAULTS[name])
        except SettingError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return values


def preset_file_setting(preset: str | Path, setting: str) -> Path | None:
    """The preset's file where it sets `setting` (so an error about that value can name the file), else None."""
    try:
        return _preset_path(preset) if setting in read_preset(preset) else None
    except ConfigError:
        return None


_NOT_GIVEN = object()


def check_call_arguments(*, stop: object = None, on_event: object = _NOT_GIVEN, **switches: object) -> None:
    """The API's arguments beside the settings: `overwrite="no"` would otherwise be true and replace a file the
    caller meant to keep, and a `stop` or `on_event` of the wrong kind would fail only when the render first uses
    it, its work directory made by then."""
    for name, value in switches.items():
        if not isinstance(value, bool):
            raise SettingError(name, f"must be True or False (got {value!r:.40})")
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise SettingError("stop", f"must be a threading.Event or None (got {type(stop).__name__})")
    if on_event is not _NOT_GIVEN and not callable(on_event):
        raise SettingError("on_event", f"must be a function that takes an event (got {type(on_event).__name__}); "
                                       "leave it out for none")


def path_argument(name: str, value: object, kind: str = "file") -> Path:
    """An API argument that names a file or folder (`kind`), as a Path; anything else refused naming the argument."""
    if isinstance(value, (str, os.PathLike)) and os.fspath(value) not in ("", b""):
        return Path(os.fsdecode(value))
    raise SettingError(name, f"must name a {kind}: a str or pathlib.Path (got {type(value).__name__} {value!r:.40})")


def config_or_default(config: Config | None) -> Config:
    """A request's settings: the balanced preset where none are given, as on the command line."""
    if config is None:
        return make_config()
    if not isinstance(config, Config):
        raise SettingError("config", f"must be a Config, as make_config() makes one (got {type(config).__name__} "
                                     f"{config!r:.40})")
    return config


def make_config(preset: str | Path | None = DEFAULT_PRESET, **overrides: Any) -> Config:
    """Config from a preset plus overrides (None values are ignored, so unset CLI flags fall through).

    `preset=None` takes no preset: the dataclass's own defaults, as `Config()` (no optical flow, no temporal loss;
    the balanced preset turns them on).

    Every preset stands on the balanced preset: a setting it leaves out takes the balanced value, so a file of the
    user's own with `size = 100` alone does not also turn the optical flow and the temporal loss off, and a built-in
    preset gives what its file gives when named by its path (`fast` with flow turned on has balanced's temporal
    weight, not none).
    """
    if preset is not None and not isinstance(preset, (str, os.PathLike)):
        raise ConfigError(f"preset must be a preset's name or a TOML file's path (got {type(preset).__name__})")
    if isinstance(preset, str) and not preset:  # an unset variable; taken as None it would drop flow and more
        raise ConfigError(f"preset is empty: name one ({', '.join(preset_names())}) or a TOML file, or give None "
                          "for the settings' own defaults")
    values = read_preset(preset) if preset else {}
    from_preset = set(values)
    users_own = bool(preset and _builtin_preset(preset) is None)
    if preset:
        values = read_preset(DEFAULT_PRESET) | values
    given = {k: v for k, v in overrides.items() if v is not None}
    from_preset -= set(given)
    values.update(given)
    unknown = sorted(set(values) - set(field_names()))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
    try:
        config = Config(**values)
        # A file of the user's own says what they asked for, as overrides do.
        _check_given_settings_act(config, set(given) | (from_preset if users_own else set()))
    except SettingError as exc:
        if preset and exc.setting in from_preset:  # the value is the file's: name the file, not an override
            raise ConfigError(f"{_preset_path(preset)}: {exc}") from None
        if preset and "flow" in from_preset and values.get("flow") == "none" and _NEEDS_FLOW in exc.problem:
            # The user asked for something along the flow, and the preset (fast) turned the flow off.
            raise SettingError(exc.setting, f"{exc.problem} (the {Path(preset).stem} preset sets flow none)",
                               names_settings=exc.names_settings) from None
        raise
    return config


def holds_frames(settings: Mapping[str, Any]) -> bool:
    """Whether a render of these settings (a Config's fields, or a work directory's record of them, which may lack
    the newer ones) has frames that a temporal loss holds to their neighbours' paint: it needs flow, a temporal
    weight, and init prev or more passes."""
    return (settings.get("flow") != "none" and settings.get("temporal_weight") != 0
            and (settings.get("init", "prev") == "prev" or settings.get("passes", 1) > 1))


def held_structure_unused(c: Config) -> str | None:
    """Why `held_structure` shapes no frame of a render with these settings (no frame is held by a temporal loss,
    or there is no structure term to weigh), or None where it does."""
    held = "weighs the structure loss on frames that the temporal loss holds to their neighbours' paint"
    if c.flow == "none":  # first and alone: with no flow the other settings along it shape nothing either
        return f"{held}: {_NEEDS_FLOW}"
    if not holds_frames(vars(c)):
        return (f"{held}: it needs a temporal_weight over 0 and init prev or passes over 1 (temporal_weight is "
                f"{c.temporal_weight:g}, init is {c.init}, passes is {c.passes})")
    return "multiplies structure_weight, which is 0" if c.structure_weight == 0 else None


# Iterations between two pictures of a still's animation, where the caller does not say.
ANIMATION_EVERY = 5

# The fewest iterations a later frame gets when `tol` is set (optimize.stylize_frame): its loss is compared over
# windows of optimize.CHECK_EVERY iterations, and a frame has two of them before it may stop.
MIN_ITERS = 10

# Settings that act only together with another one: (setting, its value that turns it off, the other setting's
# problem, or None where it acts).
_ACTS_ONLY_WITH: tuple[tuple[str, Any, Callable[[Config], str | None]], ...] = (
    ("held_structure", 1.0, held_structure_unused),
    ("temporal_weight", 0.0, lambda c: f"weighs a loss along the optical flow: {_NEEDS_FLOW}"
                                       if c.flow == "none" else None),
    ("change_tolerance", 0.0, lambda c: f"checks the optical flow's warp: {_NEEDS_FLOW}" if c.flow == "none" else None),
    ("prev_weight", 1.0, lambda c: f"is the share of the previous frame carried with init prev (init is {c.init})"
                                   if c.init != "prev" else None),
    ("adam_lr", None, lambda c: f"is the Adam optimizer's step (optimizer is {c.optimizer})"
                                if c.optimizer != "adam" else None),
    ("palette_start", False, lambda c: "does nothing while preserve_colors is on (the source's colours are kept)"
                                       if c.preserve_colors else None),
    ("tol", 0.0, lambda c: f"stops a later frame early only after {MIN_ITERS} iterations: it needs iters over "
                           f"{MIN_ITERS} (iters is {c.iters})" if c.iters <= MIN_ITERS else None),
)


def _check_given_settings_act(config: Config, given: set[str]) -> None:
    """A value asked for that the other settings would leave unused is refused, not silently ignored. Only values
    given (as overrides, or in a preset file of the user's own) count: a built-in preset's own value stays a quiet
    default (the balanced preset's temporal weight with flow none given)."""
    for name, off, problem_of in _ACTS_ONLY_WITH:
        if name in given and getattr(config, name) != off:
            problem = problem_of(config)
            if problem is not None:
                raise SettingError(name, problem, names_settings=True)
