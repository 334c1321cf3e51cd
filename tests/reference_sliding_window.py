"""An independent transcription of the MLCommons reference sliding window, for tests only.

Written from REF ``vision/medical_imaging/3d-unet-kits19/inference_utils.py`` (``gaussian_kernel``,
``prepare_arrays``, ``get_slice_for_sliding_window``, ``finalize``: ``apply_norm_map`` then
``apply_argmax``), ``base_SUT.py`` (``infer_single_query``) and ``onnxruntime_SUT.py`` (``do_infer``: one
window per call, the batch axis squeezed from the output). It deliberately shares no code with
``core``: no preconditioned patches, no ``core.patches``, its own grid. The arithmetic is the
reference's, in the image dtype (float32 for the ONNX Runtime SUT): per window
``result += logits * G`` and ``norm_map += G``, then ``result /= norm_map`` and argmax over the class
axis (ties to the lowest class, NumPy's rule).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
from scipy.signal import windows

# REF global_vars.py
ROI_SHAPE = [128, 128, 128]
SLIDE_OVERLAP_FACTOR = 0.5
NUM_CLASSES = 3  # REF prepare_arrays: result has 3 channels

# (1, 1, 128, 128, 128) window -> (3, 128, 128, 128) logits, as REF onnxruntime_SUT.do_infer returns them
DoInfer = Callable[[np.ndarray], np.ndarray]


def gaussian_kernel(n: int, std: float) -> np.ndarray:
    """REF gaussian_kernel, float64: 1-D window, two outer products (in that order), cube root, / max.

    The reference calls ``scipy.signal.gaussian``, which SciPy 1.13 moved to ``scipy.signal.windows``."""
    g1 = windows.gaussian(n, std)
    g2 = g1[:, None] * g1[None, :]  # np.outer(g1, g1)
    g3 = (g2.reshape(-1)[:, None] * g1[None, :]).reshape(n, n, n)  # np.outer(g2, g1), reshaped
    g3 = np.cbrt(g3)
    return g3 / g3.max()


def prepare_arrays(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """REF prepare_arrays: result and norm_map zeros (1, 3, D, H, W) in the image dtype; the kernel cast
    to that dtype."""
    spatial = image.shape[2:]
    result = np.zeros((1, NUM_CLASSES, *spatial), dtype=image.dtype)
    norm_map = np.zeros_like(result)
    norm_patch = gaussian_kernel(ROI_SHAPE[0], 0.125 * ROI_SHAPE[0]).astype(norm_map.dtype)
    return result, norm_map, norm_patch


def window_origins(image: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """REF get_slice_for_sliding_window: stride = int(roi * (1 - overlap)), count = (len - roi) // stride
    + 1 per axis, axis 0 outermost."""
    spatial = image.shape[2:]
    strides = [int(ROI_SHAPE[i] * (1 - SLIDE_OVERLAP_FACTOR)) for i in range(3)]
    counts = [(spatial[i] - ROI_SHAPE[i]) // strides[i] + 1 for i in range(3)]
    for i in range(0, strides[0] * counts[0], strides[0]):
        for j in range(0, strides[1] * counts[1], strides[1]):
            for k in range(0, strides[2] * counts[2], strides[2]):
                yield i, j, k


def infer_single_query(query: np.ndarray, do_infer: DoInfer) -> np.ndarray:
    """REF infer_single_query + finalize: (1, D, H, W) sample -> (1, 1, D, H, W) uint8 labels."""
    image = query[np.newaxis, ...]
    result, norm_map, norm_patch = prepare_arrays(image)
    r0, r1, r2 = ROI_SHAPE
    for i, j, k in window_origins(image):
        box = (Ellipsis, slice(i, i + r0), slice(j, j + r1), slice(k, k + r2))
        result[box] += do_infer(image[box]) * norm_patch
        norm_map[box] += norm_patch
    result /= norm_map  # REF apply_norm_map
    labels = np.argmax(result, axis=1).astype(np.uint8)  # REF apply_argmax
    return labels[np.newaxis, ...]


def do_infer_of(engine: object) -> DoInfer:
    """REF onnxruntime_SUT.do_infer over an engine with ``infer((n, 1, 128^3)) -> (n, 3, 128^3)``."""

    def do_infer(window: np.ndarray) -> np.ndarray:
        return np.asarray(engine.infer(window)).squeeze(0)  # type: ignore[attr-defined]

    return do_infer


def predictions(
    log_dir: Path, file_list: list[str], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """The (D, H, W) uint8 predictions of an accuracy run, decoded from LoadGen's
    ``mlperf_log_accuracy.json`` as REF accuracy_kits does: uppercase hex bytes per ``qsl_idx``."""
    entries = json.loads((Path(log_dir) / "mlperf_log_accuracy.json").read_text())
    out: dict[str, np.ndarray] = {}
    for e in entries:
        case = file_list[e["qsl_idx"]]
        out[case] = np.frombuffer(bytes.fromhex(e["data"]), dtype=np.uint8).reshape(shapes[case][-3:])
    return out
