"""Optical flow, warping, occlusion masks and scene cuts: pure functions on numpy images.

Conventions: a flow field is (H, W, 2) float32 of (dx, dy). `estimate_flow(a, b)` returns f such that
a(x) ~ b(x + f(x)); `warp(img, f)` samples img at x + f(x). So the previous stylized frame is carried into
frame t with `warp(prev, estimate_flow(frame_t, frame_prev))`.
"""

from __future__ import annotations

import cv2
import numpy as np


def to_gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def estimate_flow(a_gray: np.ndarray, b_gray: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow from grey frame `a` to grey frame `b` with OpenCV's DIS or Farneback."""
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        # The preset's short, light variational refinement leaves a textureless region (sky, a wall) with blocky
        # flow that disagrees with itself backwards, so the occlusion check rejected most of a sky and its paint
        # flickered. A longer, smoother refinement fills such regions from their surroundings, for some more flow
        # time and a little steadiness at sharp motion boundaries (docs/performance.md, "Flow in flat regions").
        dis.setVariationalRefinementAlpha(60.0)
        dis.setVariationalRefinementIterations(20)
        # Small renders (96 px) need small patches, or DIS has too few of them to follow the scene.
        if min(a_gray.shape) < 200:
            dis.setPatchSize(6)
            dis.setPatchStride(3)
        return dis.calc(a_gray, b_gray, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(a_gray, b_gray, None, pyr_scale=0.5, levels=4, winsize=13,
                                            iterations=5, poly_n=5, poly_sigma=1.1, flags=0)
    raise ValueError(f"unknown flow method {method!r}")


def _sample_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Backward warp: out(x) = image(x + flow(x)); positions outside the frame take the nearest edge."""
    map_x, map_y = _sample_grid(flow)
    return cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)


def warp_keeping_detail(image: np.ndarray, flow: np.ndarray, sharpness: float,
                        bilinear: np.ndarray | None = None) -> np.ndarray:
    """Backward warp resampled with Lanczos at `sharpness` 1, bilinearly at 0, a blend of the two between: a
    sub-pixel bilinear sample is a blur, Lanczos keeps the finest detail (and rings a little at hard edges).
    `bilinear`: `warp(image, flow)` where the caller has it already; computed here only where it is used."""
    if sharpness >= 1.0:  # no share of the bilinear warp: neither it nor a blend is worth a pass over the frame
        return warp(image, flow, cv2.INTER_LANCZOS4)
    bilinear = warp(image, flow) if bilinear is None else bilinear
    if sharpness <= 0.0:
        return bilinear
    return sharpness * warp(image, flow, cv2.INTER_LANCZOS4) + (1.0 - sharpness) * bilinear


_MASK_BLUR = 1.0  # sigma of the reliability mask's blur, so that the temporal loss has no hard seams


def occlusion_mask(backward: np.ndarray, forward: np.ndarray, blur_sigma: float = _MASK_BLUR) -> np.ndarray:
    """Reliability (H, W) in 0..1 of `backward` (frame t -> t-1) given `forward` (t-1 -> t).

    Criteria of Ruder et al. 2016, section 3.2: disoccluded where forward and backward flow disagree,
    |w~ + w^|^2 > 0.01 (|w~|^2 + |w^|^2) + 0.5; motion boundary where |grad u|^2 + |grad v|^2 > 0.01 |w^|^2 + 0.002.
    Pixels that flow outside the previous frame are unreliable too.
    """
    fwd_at_target = warp(forward, backward)  # w~: forward flow read where each pixel came from
    round_trip = np.square(fwd_at_target + backward).sum(-1)
    magnitudes = np.square(fwd_at_target).sum(-1) + np.square(backward).sum(-1)
    disoccluded = round_trip > 0.01 * magnitudes + 0.5
    du_y, du_x = np.gradient(backward[..., 0])
    dv_y, dv_x = np.gradient(backward[..., 1])
    boundary = du_x**2 + du_y**2 + dv_x**2 + dv_y**2 > 0.01 * np.square(backward).sum(-1) + 0.002
    map_x, map_y = _sample_grid(backward)
    h, w = backward.shape[:2]
    # Half a pixel of slack: a sample that lands inside an edge pixel's own area is that pixel, and a still frame's
    # flow is rarely exactly zero, so without it a still shot's border was unreliable.
    outside = (map_x < -0.5) | (map_x > w - 0.5) | (map_y < -0.5) | (map_y > h - 0.5)
    return _softened((~(disoccluded | boundary | outside)).astype(np.float32), blur_sigma)


def _softened(mask: np.ndarray, blur_sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(mask, (0, 0), blur_sigma) if blur_sigma > 0 else mask


def reliable_flow(cur_gray: np.ndarray, other_gray: np.ndarray, method: str,
                  blur_sigma: float = _MASK_BLUR) -> tuple[np.ndarray, np.ndarray]:
    """Flow from `cur` to `other` and its reliability (occlusion_mask, blurred by `blur_sigma`).

    "dis+farneback": DIS where its own forward-backward check passes, else Farneback where its own check passes
    (else DIS's, unreliable). In a textureless region (a sky) DIS has nothing to match and its two directions
    disagree, more so the larger the frame, so the check rejected much of a sky at 512 px and its paint was
    repainted every frame; Farneback's smooth flow agrees with itself there, but not at a street's moving edges,
    where DIS's does. Neither sees motion where there is no texture at all: Farneback's flow there is next to
    none, so the paint stays where it is on the screen instead of flickering (docs/performance.md, "Away from the
    shot's first frame, and at 512 px").
    """
    return _checked(*_estimates(cur_gray, other_gray, method), blur_sigma)


def reliable_flows(a_gray: np.ndarray, b_gray: np.ndarray, method: str, blur_sigma: float = _MASK_BLUR
                   ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`reliable_flow` from a to b and from b to a. Each direction's check needs the other direction's estimate,
    so the pair costs the flow estimates of one (a later pass warps each neighbour onto a frame and back)."""
    there, back = _estimates(a_gray, b_gray, method)
    return _checked(there, back, blur_sigma), _checked(back, there, blur_sigma)


def _estimates(a_gray: np.ndarray, b_gray: np.ndarray,
               method: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each method's flow from a to b and from b to a, by method ("dis+farneback" estimates with both)."""
    methods = ("dis", "farneback") if method == "dis+farneback" else (method,)
    return ({name: estimate_flow(a_gray, b_gray, name) for name in methods},
            {name: estimate_flow(b_gray, a_gray, name) for name in methods})


def _checked(there: dict[str, np.ndarray], back: dict[str, np.ndarray],
             blur_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The flow `there` and its reliability from its forward-backward check; of DIS's and Farneback's, each pixel
    takes DIS's where its check passes at least as well (reliable_flow says why)."""
    if len(there) == 1:
        (name,) = there
        return there[name], occlusion_mask(there[name], back[name], blur_sigma)
    dis_mask = occlusion_mask(there["dis"], back["dis"], 0)
    farneback_mask = occlusion_mask(there["farneback"], back["farneback"], 0)
    flow = np.where((dis_mask >= farneback_mask)[..., None], there["dis"], there["farneback"])
    return flow, _softened(np.maximum(dis_mask, farneback_mask), blur_sigma)


def colour_agreement(frame: np.ndarray, carried: np.ndarray, tolerance: float = 0.1) -> np.ndarray:
    """(H, W) in 0..1: how well `carried` (another frame warped onto `frame`) shows the same colours there.

    Flow consistency alone trusts a still background that an object has since covered: forward and backward flow
    are both zero and agree. Over a few frames that happens often; the colours tell the two apart. Soft, so
    that noise and lighting drift cost little: exp(-(d / tolerance)^2), d the mean absolute difference in 0..1.
    """
    difference = np.abs(frame.astype(np.float32) - carried.astype(np.float32)).mean(-1) / 255.0
    return np.exp(-np.square(difference / tolerance)).astype(np.float32)


def cut_distance(prev_rgb: np.ndarray, next_rgb: np.ndarray) -> float:
    """0 (same shot) .. 1 (unrelated): Bhattacharyya distance of hue-saturation histograms."""
    hists = []
    for rgb in (prev_rgb, next_rgb):
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
        hists.append(cv2.normalize(hist, None).flatten())
    return float(cv2.compareHist(hists[0], hists[1], cv2.HISTCMP_BHATTACHARYYA))


def is_scene_cut(prev_rgb: np.ndarray, next_rgb: np.ndarray, threshold: float) -> bool:
    return cut_distance(prev_rgb, next_rgb) > threshold
