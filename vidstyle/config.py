"""Every setting of a render in one frozen dataclass, and the TOML presets in `configs/`.

Precedence: the dataclass defaults < the preset (`balanced` unless another is named) < explicit overrides.
The CLI reads each field's help text and default from here, so a default lives in exactly one place.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidstyle.errors import ConfigError, UsageError

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
    first_iters: int = _opt(200, "iterations for the first frame and the first after a scene cut")
    coarse_levels: int = _opt(0, "coarse-to-fine for fresh frames (first, after a cut, stills): halvings of the "
                                 "size optimized first, each for the same iterations as the full size")
    optimizer: str = _opt("lbfgs", "lbfgs or adam")
    adam_lr: float = _opt(0.02, "Adam step size (pixels in 0..1)")
    content_weight: float = _opt(1.0, "weight of the content loss (relu4_2)")
    style_weight: float = _opt(2.0, "weight of the Gram style loss (relu1_1..relu5_1)")
    tv_weight: float = _opt(1.0, "weight of the total-variation smoothness loss")
    temporal_weight: float = _opt(0.0, "weight of the flow-masked temporal loss (needs flow)")
    style_blend: tuple[float, ...] = _opt((), "relative weights of several styles, e.g. 0.7,0.3 (default equal)")
    style_scale: float = _opt(1.0, "style image long side relative to the render's long side")
    preserve_colors: bool = _opt(False, "keep the source's colours, take only luminance from the style")
    init: str = _opt("prev", "what later frames start from: prev, content or random")
    prev_weight: float = _opt(1.0, "share of the previous frame's stylization carried into the next frame's start")
    flow: str = _opt("none", "optical flow for the warm start and temporal loss: none, dis or farneback")
    cut_threshold: float = _opt(0.5, "scene-cut sensitivity: histogram distance above which a frame starts fresh")
    pooling: str = _opt("max", "VGG pooling: max (as trained) or avg")
    precision: str = _opt("auto", "fp32, bf16, fp16, or auto (bf16 where the hardware runs it natively)")
    seed: int = _opt(0, "random seed (random init, Adam); renders are repeatable for a seed and device")
    device: str = _opt("auto", "auto, cpu, cuda or mps (auto: cuda, then mps, then cpu)", frames=False)
    crf: int = _opt(18, "H.264 quality, 0 (lossless) .. 51 (worst)", frames=False)
    keep_frames: bool = _opt(False, "keep the frame checkpoints after a successful render", frames=False)

    def __post_init__(self) -> None:
        validate(self)

    def frames_dict(self) -> dict[str, Any]:
        """The settings that shape rendered frames (not device, crf, ...): what a resume must match."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["frames"]}


CHOICES = {
    "optimizer": ("lbfgs", "adam"),
    "init": ("prev", "content", "random"),
    "flow": ("none", "dis", "farneback"),
    "pooling": ("max", "avg"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "device": ("auto", "cpu", "cuda", "mps"),
}


def validate(cfg: Config) -> None:
    """Reject impossible values with a message that names the option."""
    for name, choices in CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise UsageError(f"--{_flag(name)} must be one of {', '.join(choices)} (got {getattr(cfg, name)!r})")
    if not 16 <= cfg.size <= MAX_SIZE:
        raise UsageError(f"--size must be between 16 and {MAX_SIZE} pixels (got {cfg.size})")
    if not 0 <= cfg.coarse_levels <= 4:
        raise UsageError(f"--coarse-levels must be between 0 and 4 (got {cfg.coarse_levels})")
    for name in ("iters", "first_iters"):
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{_flag(name)} must be at least 1 (got {getattr(cfg, name)})")
    for name in ("content_weight", "style_weight", "tv_weight", "temporal_weight", "adam_lr"):
        if getattr(cfg, name) < 0:
            raise UsageError(f"--{_flag(name)} must not be negative (got {getattr(cfg, name)})")
    if not 0.05 <= cfg.style_scale <= 8:
        raise UsageError(f"--style-scale must be between 0.05 and 8 (got {cfg.style_scale})")
    if not 0 <= cfg.prev_weight <= 1:
        raise UsageError(f"--prev-weight must be between 0 and 1 (got {cfg.prev_weight})")
    if any(w < 0 for w in cfg.style_blend) or (cfg.style_blend and sum(cfg.style_blend) <= 0):
        raise UsageError(f"--style-blend weights must be non-negative and not all zero (got {cfg.style_blend})")
    if not 0 <= cfg.crf <= 51:
        raise UsageError(f"--crf must be between 0 and 51 (got {cfg.crf})")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Config))


def _coerce(name: str, value: Any, source: str) -> Any:
    """Type-check one preset value against the field's default type."""
    default = next(f.default for f in dataclasses.fields(Config) if f.name == name)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)
        value = tuple(float(v) for v in value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{source}: '{name}' should be a {type(default).__name__}, got {value!r}")
    return value


def presets_dir() -> Path:
    """The presets: `configs/` of a source checkout, or the copy installed inside the package."""
    installed = Path(str(importlib.resources.files("vidstyle") / "configs"))
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def read_preset(name_or_path: str) -> dict[str, Any]:
    """Parse a preset by name (`fast`) or path (`my.toml`) into {field: value}; never executes anything."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = presets_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(f"unknown preset '{name_or_path}' (available: {', '.join(preset_names())})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"preset file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read preset {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed preset {path}: {exc}") from exc
    known = set(field_names())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return {name: _coerce(name, value, str(path)) for name, value in data.items()}


def make_config(preset: str | None = DEFAULT_PRESET, **overrides: Any) -> Config:
    """Config from a preset plus overrides (None values are ignored, so unset CLI flags fall through)."""
    values = read_preset(preset) if preset else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(field_names()))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
    return Config(**values)
