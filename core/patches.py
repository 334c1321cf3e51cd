"""The one Gaussian importance map and NVIDIA's 27 preconditioned patches.

``gaussian_map`` is the reference importance map (REF ``inference_utils.gaussian_kernel``): a 128-point
SciPy Gaussian window with sigma 16, 3-D outer product, element-wise cube root, divided by its maximum.

``preconditioned_patches`` folds the reference's final ``result /= norm_map`` into the weights
(NVIDIA ``preprocess_data.py``): simulate a 256^3 volume with window origins {0, 64, 128} per axis,
accumulate N = sum of G over the 27 windows, and store patch_w = G / N on w's extent. Accumulating
``logits * patch`` over a volume then gives the normalized average directly (exactly, per axis, when a
dimension is a multiple of 64 and >= 192; a dimension of 128 sums to < 1 but the argmax is unchanged).
The patch for a window is chosen with ``patch_id`` (start / middle / end per axis).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.signal import windows

from core.benchmark import ROI, STRIDE

GAUSSIAN_STD = 0.125 * ROI  # 16 voxels (REF: gaussian_kernel(ROI, 0.125 * ROI))
NUM_PATCHES = 27
VIRTUAL_EDGE = 2 * ROI  # NVIDIA's virtual 256^3 volume: origins 0, 64, 128 per axis
PATCH_ORIGINS = (0, STRIDE, 2 * STRIDE)  # start, middle, end


@functools.lru_cache(maxsize=1)
def _gaussian64() -> np.ndarray:
    # Exactly the reference's steps, in float64 (it casts to the image dtype afterwards).
    g1 = windows.gaussian(ROI, std=GAUSSIAN_STD)
    g2 = np.outer(g1, g1)
    g3 = np.outer(g2, g1).reshape(ROI, ROI, ROI)
    g3 = np.cbrt(g3)
    g3 /= g3.max()
    g3.flags.writeable = False
    return g3


def gaussian_map(dtype: np.dtype | type = np.float32) -> np.ndarray:
    """(128, 128, 128) reference importance map (max 1.0), cast to ``dtype`` (a fresh array)."""
    return _gaussian64().astype(dtype)


@functools.lru_cache(maxsize=1)
def _patches64() -> np.ndarray:
    g = _gaussian64()
    norm = np.zeros((VIRTUAL_EDGE,) * 3, dtype=np.float64)
    for d in PATCH_ORIGINS:
        for h in PATCH_ORIGINS:
            for w in PATCH_ORIGINS:
                norm[d : d + ROI, h : h + ROI, w : w + ROI] += g
    out = np.empty((NUM_PATCHES, ROI, ROI, ROI), dtype=np.float64)
    for pd, d in enumerate(PATCH_ORIGINS):
        for ph, h in enumerate(PATCH_ORIGINS):
            for pw, w in enumerate(PATCH_ORIGINS):
                np.divide(g, norm[d : d + ROI, h : h + ROI, w : w + ROI], out=out[9 * pd + 3 * ph + pw])
    out.flags.writeable = False
    return out


def preconditioned_patches(dtype: np.dtype | type = np.float32) -> np.ndarray:
    """(27, 128, 128, 128) patches G / N, index = ``patch_id`` (computed in float64, then cast).

    NVIDIA stores float16. The device paths weigh with them (float32 at fp32, float16 below); the fp32
    reference path does not: it weighs as the reference does (core.sliding_window.segment)."""
    return _patches64().astype(dtype)


def axis_position(origin: int, length: int) -> int:
    """0 = start (origin 0), 2 = end (origin >= length - 128), else 1 = middle; tested in that order,
    so a dimension of exactly 128 counts as start."""
    if origin == 0:
        return 0
    if origin >= length - ROI:
        return 2
    return 1


def patch_id(origins: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Patch index 9*pos_d + 3*pos_h + pos_w for a window at ``origins`` in a (D, H, W) volume."""
    if len(origins) != 3 or len(shape) < 3:
        raise ValueError(f"patch_id needs 3 origins and a (D, H, W) shape, got {origins}, {shape}")
    pd, ph, pw = (axis_position(o, n) for o, n in zip(origins, tuple(shape)[-3:], strict=True))
    return 9 * pd + 3 * ph + pw


def clear_cache() -> None:
    """Free the cached float64 arrays (about 470 MB for the patches)."""
    _gaussian64.cache_clear()
    _patches64.cache_clear()
