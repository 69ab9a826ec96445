"""The margin a frame is painted in: no line along the frame's edges, and the frame weighed as without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vidstyle.margin
from vidstyle.assets import demo_clip
from vidstyle.config import Config, make_config
from vidstyle.io.decode import read_frames
from vidstyle.io.probe import probe_video
from vidstyle.margin import cropped, frame_mask, inside, margin_for, mirrored
from vidstyle.stylize import Stylizer, to_tensor


def _change_by_distance_from_the_edge(rgb: np.ndarray, reach: int = 3) -> list[float]:
    """The mean change of brightness between the pixels d and d + 1 from each of the four edges, for d < reach, as
    a multiple of the mean change between neighbours inside: a line along the edges is a peak at small d."""
    grey = rgb.astype(np.float32).mean(axis=2)
    within = np.mean([np.abs(np.diff(grey[12:-12], axis=0)).mean(), np.abs(np.diff(grey[:, 12:-12], axis=1)).mean()])
    found = []
    for d in range(reach):
        sides = [grey[d + 1] - grey[d], grey[-1 - d] - grey[-2 - d], grey[:, d + 1] - grey[:, d],
                 grey[:, -1 - d] - grey[:, -2 - d]]
        found.append(float(np.mean([np.abs(s).mean() for s in sides]) / within))
    return found


@pytest.fixture(scope="module")
def demo_frame() -> np.ndarray:
    """A frame of the bundled clip at 96x54: grass, a hill and sky reaching the frame's edges."""
    frames = read_frames(probe_video(demo_clip()), (96, 54))
    return next(f for f in frames if f.index == 66).rgb.copy()


def test_a_frame_is_painted_to_its_edges_without_a_line_along_them(demo_frame: np.ndarray, starry) -> None:
    """VGG19's zero padding reads the frame's edge as a strong edge: painted without a margin, each frame had a line
    along its four sides (the change across its outermost pixels 2.4 times the change inside, where the source's
    is 0.9 times). In a margin it is near the inside's."""
    from vidstyle.io.images import read_image

    source = _change_by_distance_from_the_edge(demo_frame)
    assert max(source) < 1.1, source
    painted = Stylizer(make_config("demo", size=96, device="cpu", precision="fp32"), [read_image(starry)])
    assert np.mean(_change_by_distance_from_the_edge(painted.stylize_fresh(demo_frame, 40).rgb)) < 1.6


def test_the_mirror_repeats_no_edge_pixel_and_the_crop_takes_it_off() -> None:
    image = torch.arange(12.0).view(1, 1, 3, 4)
    padded = mirrored(image, 2)
    assert padded.shape == (1, 1, 7, 8)
    assert padded[0, 0, 2].tolist() == [2.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0, 1.0]
    assert torch.equal(cropped(padded, 2), image)
    assert mirrored(image, 0) is image and cropped(image, 0) is image
    mask = frame_mask(padded, 2)
    assert mask.shape == (1, 1, 7, 8) and int(mask.sum()) == 12 and bool(mask[0, 0, 2, 2]) and not mask[0, 0, 1, 2]


def test_a_layer_is_read_at_the_frames_positions_after_its_poolings() -> None:
    features = torch.zeros(1, 2, 40, 40)
    assert inside(features, "relu1_1", 8).shape[-2:] == (24, 24)  # no pooling yet: 8 positions a side
    assert inside(features, "relu2_1", 8).shape[-2:] == (32, 32)  # after one: 4
    assert inside(features, "relu4_2", 8).shape[-2:] == (38, 38)  # after three: 1
    assert inside(features, "relu5_1", 8).shape[-2:] == (40, 40)  # half a position: the frame's


def test_the_margin_of_a_tiny_picture_reaches_no_further_than_its_side() -> None:
    assert margin_for((1920, 1080)) == vidstyle.margin.PAINTED_MARGIN == 8
    assert margin_for((16, 6)) == 5
    assert margin_for((1, 1)) == 0


def test_the_objective_weighs_the_frame_and_keeps_a_held_margin(images) -> None:
    """Inside a margin the frame's terms are read at its own positions; a held margin is not painted: the loss does
    not change with what the iterate has there, and no gradient reaches it."""
    frame, style = images
    stylizer = Stylizer(Config(device="cpu", precision="fp32"), [style])
    margin = margin_for((frame.shape[1], frame.shape[0]))
    content = mirrored(to_tensor(frame, torch.device("cpu")), margin)
    start = mirrored(to_tensor(np.roll(frame, 5, axis=1), torch.device("cpu")), margin)
    loss_fn = stylizer.objective(content, margin=margin, held_margin=start)
    image = start.clone().requires_grad_(True)
    loss = loss_fn(image)
    loss.backward()
    assert image.grad is not None
    outside = ~frame_mask(content, margin)
    assert float(image.grad.abs().amax(dim=1, keepdim=True)[outside].max()) == 0.0
    assert float(cropped(image.grad, margin).abs().sum()) > 0.0
    with torch.no_grad():
        other = torch.where(outside, torch.rand_like(start), start)
        assert float(loss_fn(other)) == pytest.approx(float(loss), rel=1e-6)
        # Painted freely (a fresh frame), the margin counts: the network reads it around the frame.
        assert float(stylizer.objective(content, margin=margin)(other)) != pytest.approx(float(loss), rel=1e-3)
