"""Mosaics of calibration images: more distinct inputs for the layer statistics.

The OBS scores and compensations are least-squares fits to the calibration inputs' second moments (H = (2/n)
Σ x xᵀ per layer). With ~100 photos they fit those photos' correlations, and a compensated model agrees with
the dense one on new views of its calibration photos far more than on new photos. More distinct photos are
what helps, and a mosaic is a cheap stand-in: four crops, each a quarter of the image (H/2 × W/2 at full
resolution, random position), of four different calibration images, tiled 2 × 2. Early layers see the
photos' own local statistics; late layers and the global pool see feature combinations no single photo has.

Mosaics feed the statistics pass (Hessians and channel statistics) and SparseGPT's Hessians; the
channel refit, INT8 calibration and the fidelity check read the real samples.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MAX_IMAGE_CHANNELS = 4  # gray, RGB, RGBA: a larger axis is spatial
MIN_IMAGE_SIDE = 8
# By default only photo-sized inputs get mosaics: a quarter of a 224-pixel photo is still a photo crop,
# a quarter of a 28-pixel Fashion-MNIST item is a fragment.
DEFAULT_MIN_SIDE = 64


def spatial_axes(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(H axis, W axis) of a batch of images [N, C, H, W] or [N, H, W, C]; None if ``shape`` is not one."""
    if len(shape) != 4:
        return None
    _, a, b, c = shape
    if a <= MAX_IMAGE_CHANNELS and min(b, c) >= MIN_IMAGE_SIDE:
        return 2, 3
    if c <= MAX_IMAGE_CHANNELS and min(a, b) >= MIN_IMAGE_SIDE:
        return 1, 2
    return None


def image_input(arrays: Mapping[str, np.ndarray], min_side: int = MIN_IMAGE_SIDE) -> str | None:
    """The name of the only input, if it is a floating batch of images with sides ≥ ``min_side``."""
    if len(arrays) != 1:
        return None
    name, arr = next(iter(arrays.items()))
    axes = spatial_axes(arr.shape)
    if (
        not np.issubdtype(arr.dtype, np.floating)
        or axes is None
        or min(arr.shape[a] for a in axes) < min_side
    ):
        return None
    return name


def mosaics(images: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` 2 × 2 mosaics of random crops of four different ``images`` (same shape and dtype).

    Quadrant (i, j) of a mosaic is a crop of the quadrant's size (H/2 × W/2, rounded) at a uniformly
    random position of its source image: content is never rescaled, only recombined.
    """
    axes = spatial_axes(images.shape)
    if axes is None:
        raise ValueError(f"not a batch of images: shape {images.shape}")
    ya, xa = axes
    h, w = images.shape[ya], images.shape[xa]
    hs, ws = (0, h // 2, h), (0, w // 2, w)
    out = np.empty((count, *images.shape[1:]), images.dtype)
    replace = len(images) < 4
    for m in range(count):
        sources = rng.choice(len(images), 4, replace=replace)
        for q, src in enumerate(sources):
            i, j = divmod(q, 2)
            th, tw = hs[i + 1] - hs[i], ws[j + 1] - ws[j]
            top, left = rng.integers(0, h - th + 1), rng.integers(0, w - tw + 1)
            tile = np.take(np.take(images[src], range(top, top + th), ya - 1), range(left, left + tw), xa - 1)
            index = [slice(None)] * 3
            index[ya - 1], index[xa - 1] = slice(hs[i], hs[i + 1]), slice(ws[j], ws[j + 1])
            out[m][tuple(index)] = tile
    return out
