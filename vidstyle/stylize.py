"""The stylizer: VGG19 and the style targets built once, then any number of frames optimized against them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from vidstyle.assets import StylePaths
from vidstyle.config import Config, check_style_count, config_or_default
from vidstyle.detail import source_detail
from vidstyle.errors import ModelError, SettingError
from vidstyle.io.images import resize_rgb, style_problem
from vidstyle.limits import out_of_memory
from vidstyle.losses import ContentLoss, StructureLoss, StyleLoss, TemporalLoss, blend_grams, gram, tv_loss
from vidstyle.model import CONTENT_LAYERS, STYLE_LAYERS, VGGFeatures, load_vgg
from vidstyle.optimize import StepCallback, stylize_frame
from vidstyle.palette import Palette
from vidstyle.precision import fp16_grad_scale, resolve_precision, scale_down_grad, scale_up_grad


def device_name(device: object) -> str:
    """An API's `device=` argument (a torch.device or its name) as a name resolve_device takes; refused naming it
    where torch knows no such device."""
    if isinstance(device, (str, torch.device)):
        try:
            return str(torch.device(device))
        except RuntimeError:
            pass
    raise SettingError("device", f"must be a torch.device or a name such as cpu, cuda or cuda:1 (got {device!r:.40})")


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device that is absent is a usage error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    device = torch.device(name)
    if (device.type == "cuda" and not cuda) or (device.type == "mps" and not mps):
        raise SettingError("device", f"is {name} but this machine has no {device.type.upper()} device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SettingError("device", f"is {name} but this machine has {torch.cuda.device_count()} CUDA device(s), "
                                     f"numbered from 0")
    return device


def to_tensor(rgb: np.ndarray, device: torch.device) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in 0..1 on `device`."""
    pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8, copy=True)).to(device)
    return pixels.permute(2, 0, 1)[None].float().div_(255.0).contiguous()


def to_rgb8(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) in 0..1 -> (H, W, 3) uint8, rounded."""
    return image[0].mul(255.0).round_().clamp_(0, 255).byte().permute(1, 2, 0).cpu().numpy()


def held_structure_weights(content: Tensor, held_structure: float,
                           source: np.ndarray | None = None) -> Tensor | None:
    """(1, 1, H, W): the structure term's weight on a frame held by the temporal loss, pixel by pixel:
    `held_structure` where the source `content` (1, 3, H, W), or `source`, the same as uint8 (H, W, 3), is flat, 1
    where it is detailed (Config.held_structure says why); None where that is 1 everywhere."""
    if held_structure == 1.0:
        return None
    flat = 1.0 - source_detail(to_rgb8(content) if source is None else source)
    return torch.from_numpy(1.0 + (held_structure - 1.0) * flat).to(content.device)[None, None]


def keep_colors(stylized: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Luminance-only transfer (Gatys et al. 2016, 'Preserving color'): style's Y, the source's chroma."""
    out = cv2.cvtColor(content, cv2.COLOR_RGB2YCrCb)
    out[..., 0] = cv2.cvtColor(stylized, cv2.COLOR_RGB2YCrCb)[..., 0]
    return cv2.cvtColor(out, cv2.COLOR_YCrCb2RGB)


# How many times the long side asked for a painting's strip may be, kept whole at the network's smallest short side.
STRIP_LONGEST = 4


def style_size(style: np.ndarray, render_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(width, height) of a style image whose long side is `scale` x the render's long side, larger where its short
    side would fall under 16 pixels (the network's smallest), its shape kept (each side floored on its own squeezed
    a long painting), up to a long side of STRIP_LONGEST x the one asked for: a strip of a painting past that is
    squeezed, not kept whole (1,000,000 x 16 pixels would be a frame of 16 megapixels for the network)."""
    asked, long_side, short_side = max(16, round(max(render_size) * scale)), max(style.shape[:2]), min(style.shape[:2])
    ratio = min(max(asked / long_side, 16 / short_side), STRIP_LONGEST * asked / long_side)
    return max(16, round(style.shape[1] * ratio)), max(16, round(style.shape[0] * ratio))


# Coarse levels smaller than this teach nothing: relu4_1 would be a few positions wide.
MIN_COARSE_SIDE = 64


def coarse_sizes(shape: tuple[int, ...], levels: int) -> list[tuple[int, int]]:
    """(width, height) of the coarse levels for an (H, W, ...) frame, coarsest first; full size excluded."""
    height, width = shape[:2]
    sizes = []
    for level in range(levels, 0, -1):
        w, h = round(width / 2**level), round(height / 2**level)
        if min(w, h) >= 16 and max(w, h) >= MIN_COARSE_SIDE:
            sizes.append((w, h))
    return sizes


# Pixels along each edge of a painting whose positions its style targets leave out. VGG19 pads each convolution's
# input with zeros, which at the painting's edge reads as a strong edge of the picture; Grams taken over all of the
# painting held those responses as part of its style, and a frame optimized against them grew them where the network
# sees the same zeros: a bright or dark line along all four sides of every painted frame. Taken away from the
# painting's edges they hold its own strokes only (docs/performance.md, "The frame's edge").
PAINTING_BAND = 16


def painting_band(shape: tuple[int, ...]) -> int:
    """The band left out of a painting of (height, width, ...): PAINTING_BAND, or an eighth of its shorter side for a
    small one (a small render's, a coarse level's), which loses too much of its strokes with 16 pixels gone."""
    return min(PAINTING_BAND, min(shape[:2]) // 8)


def away_from_edges(features: Tensor, layer: str, band: int) -> Tensor:
    """A VGG layer's (reluN_M) activations without the positions of `band` pixels along each edge: block N's layers
    come after N - 1 poolings, so those are band / 2**(N - 1) positions, rounded down (docs/performance.md, "The
    frame's edge", measures rounding up on small paintings)."""
    cut = band >> (int(layer.removeprefix("relu").split("_")[0]) - 1)
    return features[..., cut:features.shape[-2] - cut, cut:features.shape[-1] - cut] if cut else features


def add_stylization(content: np.ndarray, stylization: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """content + weight x stylization (float, any size: resized to the content's), as a uint8 start image."""
    height, width = content.shape[:2]
    if stylization.shape[:2] != (height, width):
        stylization = cv2.resize(stylization, (width, height), interpolation=cv2.INTER_LINEAR)
    start = content.astype(np.float32) + weight * stylization
    return np.clip(start, 0, 255).round().astype(np.uint8)


def _offset(on_step: StepCallback | None, done: int) -> StepCallback | None:
    """Report a later phase's iterations after the `done` ones of earlier phases."""
    if on_step is None:
        return None
    return lambda i, loss: on_step(done + i, loss)


@dataclass
class FrameResult:
    rgb: np.ndarray  # (H, W, 3) uint8
    loss: float
    iterations: int  # spent, fewer than the budget where the loss converged first (Config.tol)


def is_rgb8(picture: object) -> bool:
    """An (H, W, 3) uint8 array: a decoded picture, as the network is given one."""
    return isinstance(picture, np.ndarray) and picture.dtype == np.uint8 and picture.ndim == 3 and \
        picture.shape[2] == 3


class Stylizer:
    """Holds the network and the style Grams (for each size it is asked to paint); `stylize` optimizes one frame."""

    def __init__(self, config: Config, styles: list[np.ndarray], device: torch.device | None = None,
                 vgg: VGGFeatures | None = None) -> None:
        """From decoded paintings (RGB uint8 arrays); `Stylizer.for_styles` takes files or built-in names."""
        if not isinstance(config, Config):
            raise SettingError("config", f"must be a vidstyle.Config (got {type(config).__name__})")
        if not isinstance(styles, (list, tuple)) or not styles or not all(is_rgb8(s) for s in styles):
            raise SettingError("styles", "must be a list of one or more decoded pictures (RGB uint8 arrays); "
                                         "Stylizer.for_styles takes files or built-in names")
        problem = next(filter(None, map(style_problem, styles)), None)
        if problem is not None:
            raise SettingError("styles", f"holds a picture that {problem}")
        self.config = config
        self.device = resolve_device(device_name(device) if device is not None else config.device)
        self.dtype = resolve_precision(config.precision, self.device)
        self.vgg = vgg or load_vgg(CONTENT_LAYERS + STYLE_LAYERS, device=self.device, pooling=config.pooling)
        # NHWC lets cuDNN use its fastest (tensor-core) convolutions, and on a CPU oneDNN's; there the Gram
        # gradient (losses._GramError) also runs faster than in its NCHW form (docs/performance.md).
        self.channels_last = self.device.type in ("cpu", "cuda")
        if self.channels_last:
            self.vgg = self.vgg.to(memory_format=torch.channels_last)
        if self.dtype is not None:
            # Autocast caches its casts of trainable weights only; these are frozen, so it would cast all of them
            # again at every iteration (docs/performance.md). The same arithmetic.
            self.vgg.convs.to(self.dtype)
        self.styles = styles
        use_palette = config.palette_start and not config.preserve_colors
        self.palette = Palette.of(styles, config.style_blend or None) if use_palette and styles else None
        self._style_cache: dict[tuple[int, int], StyleLoss] = {}
        self._on_iterate: StepCallback | None = None

    @classmethod
    def for_styles(cls, style_paths: StylePaths, config: Config | None = None) -> Stylizer:
        """A stylizer for these paintings (files or built-in names) and settings (balanced by default), to pass as
        `stylizer=` to several renders or stills with them: the network loads and the paintings are read once."""
        from vidstyle.assets import resolve_styles
        from vidstyle.io.images import read_style_image

        config = config_or_default(config)
        paths = resolve_styles(style_paths)
        check_style_count(config, len(paths))
        return cls(config, [read_style_image(p) for p in paths])

    @contextmanager
    def watching(self, on_iterate: StepCallback) -> Iterator[None]:
        """Every optimization inside the block shows its iterates to `on_iterate(i, image)` (an animation)."""
        self._on_iterate = on_iterate
        try:
            yield
        finally:
            self._on_iterate = None

    def mismatch(self, config: Config, styles: list[np.ndarray], device: torch.device) -> str | None:
        """What keeps this stylizer from making the frames `config` and `styles` describe on `device`, in words; None
        where it makes them."""
        mine, theirs = self.config.frames_dict(), config.frames_dict()
        changed = [name for name in mine if mine[name] != theirs.get(name)]
        if changed:
            return "its " + "; ".join(f"{name} is {mine[name]!r}, not {theirs.get(name)!r}" for name in changed[:3]) \
                + (f" (and {len(changed) - 3} more)" if len(changed) > 3 else "")
        if self.device != device:
            return f"it runs on {self.device}, not {device}"
        if len(self.styles) != len(styles) or not all(np.array_equal(a, b) for a, b in zip(self.styles, styles,
                                                                                             strict=True)):
            return "its style images are others"
        return None

    def autocast(self) -> AbstractContextManager[object]:
        """The precision the network runs in (nothing for fp32); the losses run outside it."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def activations(self, image: Tensor, layers: tuple[str, ...] | None = None) -> Iterator[tuple[str, Tensor]]:
        """(relu name, activation) pairs as the network computes them, for losses taken layer by layer.

        A loss taken as soon as its layer comes out finds the activation still in cache, and its backward
        runs when the network's backward reaches that layer; taken after the whole forward pass, both
        went to memory and back (docs/performance.md).
        """
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        scale = fp16_grad_scale(*image.shape[-2:]) if self.dtype == torch.float16 and image.requires_grad else None
        if scale is not None:
            image = scale_down_grad(image, scale)
        network = self.vgg.activations(image, layers)
        while True:
            with self.autocast():  # only around the network: the losses between layers stay float32
                found = next(network, None)
            if found is None:
                return
            name, value = found
            yield name, value if scale is None else scale_up_grad(value, scale)

    def features(self, image: Tensor, layers: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        return dict(self.activations(image, layers))

    def style_loss(self, render_size: tuple[int, int]) -> StyleLoss:
        """Style targets for a render of (width, height), computed once and cached."""
        if render_size not in self._style_cache:
            check_style_count(self.config, len(self.styles), "styles")
            weights = list(self.config.style_blend) or [1.0] * len(self.styles)
            grams = []
            with torch.no_grad():
                for style in self.styles:
                    image = resize_rgb(style, style_size(style, render_size, self.config.style_scale))
                    feats = self.features(to_tensor(image, self.device))
                    band = painting_band(image.shape[:2])
                    grams.append({layer: gram(away_from_edges(feats[layer], layer, band)) for layer in STYLE_LAYERS})
            self._style_cache[render_size] = StyleLoss(blend_grams(grams, weights)).to(self.device)
        return self._style_cache[render_size]

    def objective(self, content: Tensor, temporal: TemporalLoss | None = None,
                  starts_at_content: bool = False, source: np.ndarray | None = None) -> Callable[[Tensor], Tensor]:
        """The total loss of Gatys et al. (+ Ruder et al.'s temporal term) for one content frame.

        With `starts_at_content`, the caller promises that the first image evaluated is `content` itself; the
        content target is then taken from that evaluation's activations instead of a forward pass of its own (a
        first frame or a still with `palette_start` off: one network pass a frame saved). `source` is `content` as
        the uint8 frame it came from, where the caller has it (the held structure's detail map is taken from it, not
        read back from the device).
        """
        cfg = self.config
        content_loss: ContentLoss | None = None
        if not starts_at_content:
            with torch.no_grad():
                content_loss = ContentLoss(self.features(content, CONTENT_LAYERS)[CONTENT_LAYERS[0]])
        style_loss = self.style_loss((content.shape[-1], content.shape[-2]))
        held = temporal if temporal is not None and cfg.temporal_weight > 0 else None
        structure = None
        if cfg.structure_weight > 0:
            weights = None
            if held is not None:
                weights = held_structure_weights(content, cfg.held_structure, source)
            structure = StructureLoss(content, cfg.edge_contrast, weights)

        def loss_fn(image: Tensor) -> Tensor:
            nonlocal content_loss
            terms = [cfg.tv_weight * tv_loss(image)]
            if structure is not None:
                terms.append(cfg.structure_weight * structure(image))
            if held is not None:
                terms.append(cfg.temporal_weight * held(image))
            for layer, features in self.activations(image):
                if layer in CONTENT_LAYERS:
                    if content_loss is None:
                        content_loss = ContentLoss(features.detach())
                    terms.append(cfg.content_weight * content_loss(features))
                if layer in style_loss.layers:
                    terms.append(cfg.style_weight * style_loss.term(layer, features))
            return torch.stack(terms).sum()

        return loss_fn

    def stylize(self, content: np.ndarray, init: np.ndarray | Tensor, iters: int,
                temporal: TemporalLoss | None = None, on_step: StepCallback | None = None) -> FrameResult:
        """Optimize one frame from `init` (uint8 image or 0..1 tensor), stopping early where its loss has converged
        (Config.tol); returns the uint8 result."""
        return self._coloured(self._optimize(content, init, iters, temporal, on_step, self.config.tol), content)

    def stylize_fresh(self, content: np.ndarray, iters: int, on_step: StepCallback | None = None) -> FrameResult:
        """A frame with nothing to start from (a still, the first frame, the first after a cut).

        With `coarse_levels`, `iters` iterations at each coarse level first (a quarter of the pixels per
        halving), then at full size, which so starts from a painted frame. Each level hands on its stylization
        (output minus its content), upsampled and added to the next level's content, so the content stays
        sharp and only the painted part is interpolated. What it buys is the painting's large shapes, which a
        full-size start alone does not find (docs/performance.md "Coarse-to-fine"), not time: on a CPU at up to
        512 px it rarely saves any (bench.py [c]).

        A fresh frame always spends its whole budget, whatever `tol`: its style keeps growing after its loss
        improves by less than the tolerance, and it is the one later frames begin from (docs/performance.md,
        "Adaptive iterations").
        """
        done, spent, stylization = 0, 0, None
        for dims in coarse_sizes(content.shape, self.config.coarse_levels):
            small = resize_rgb(content, dims)
            init = self.start_from_source(small) if stylization is None else add_stylization(small, stylization)
            level = self._optimize(small, init, iters, None, _offset(on_step, done), 0.0)
            stylization = level.rgb.astype(np.float32) - small.astype(np.float32)
            done, spent = done + iters, spent + level.iterations
        init = self.start_from_source(content) if stylization is None else add_stylization(content, stylization)
        result = self._coloured(self._optimize(content, init, iters, None, _offset(on_step, done), 0.0), content)
        result.iterations += spent
        return result

    def start_from_source(self, content: np.ndarray) -> np.ndarray:
        """The start of a frame painted from its source: recoloured to the painting's palette (Config.palette_start)."""
        return content if self.palette is None else self.palette.recolour(content)

    def fresh_iterations(self, shape: tuple[int, ...], iters: int) -> int:
        """Iterations stylize_fresh spends on a frame of `shape` (progress counts them all)."""
        return iters * (1 + len(coarse_sizes(shape, self.config.coarse_levels)))

    def _coloured(self, result: FrameResult, content: np.ndarray) -> FrameResult:
        if self.config.preserve_colors:
            result.rgb = keep_colors(result.rgb, content)
        return result

    def _optimize(self, content: np.ndarray, init: np.ndarray | Tensor, iters: int, temporal: TemporalLoss | None,
                  on_step: StepCallback | None, tol: float) -> FrameResult:
        content_t = to_tensor(content, self.device)
        init_t = init if isinstance(init, Tensor) else to_tensor(init, self.device)
        loss_fn = self.objective(content_t, temporal, starts_at_content=init is content, source=content)
        try:
            with self._backend_flags():
                image, loss_t, spent = stylize_frame(init_t, loss_fn, iters, self.config.optimizer,
                                                     self.config.adam_lr, on_step, tol,
                                                     self._on_iterate)
        except torch.OutOfMemoryError:
            raise out_of_memory((content.shape[1], content.shape[0]), self.dtype, self.device) from None
        loss = float(loss_t)
        if not math.isfinite(loss):
            # Never write a frame of NaNs; fp16 is the one mode whose range can run out.
            raise ModelError(f"the optimization diverged (loss {loss}) in precision {self.config.precision}; "
                             "bf16 or fp32 keep it finite")
        return FrameResult(to_rgb8(image), loss, spent)

    def _backend_flags(self) -> AbstractContextManager[object]:
        """cuDNN autotuning for the frame's convolutions, set for this call only, not for the whole process:
        it pays over many frames of one size, and a caller's own torch work keeps its own settings."""
        return _cudnn_autotuning() if self.device.type == "cuda" else nullcontext()


@contextmanager
def _cudnn_autotuning() -> Iterator[None]:
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def check_is_stylizer(stylizer: object) -> None:
    """A `stylizer=` argument of the API that is no Stylizer is refused naming it, before anything is done."""
    if not isinstance(stylizer, Stylizer):
        raise SettingError("stylizer", f"must be a vidstyle.Stylizer, as Stylizer.for_styles makes one (got "
                                       f"{type(stylizer).__name__})")
