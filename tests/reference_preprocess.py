"""An independent transcription of the MLCommons reference preprocessing, for tests only.

Written from REF ``vision/medical_imaging/3d-unet-kits19/preprocess.py`` (``Preprocessor.load_and_resample``,
``normalize_intensity``, ``pad_to_min_shape``, ``adjust_shape_for_sliding_window``,
``constant_pad_volume``) and ``global_vars.py``. It deliberately shares no code with ``core``: its
own constants, its own NIfTI reading (plain ``get_fdata``, as the reference does), its own padding
arithmetic. The resampling is ``scipy.ndimage.zoom``, because that call *is* the reference's
definition of the resampling; ``trilinear_align_corners`` and ``nearest_align_corners`` below are an
explicit, loop-free re-derivation of what that call computes, used to check it.
"""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
from scipy.ndimage import zoom

# REF global_vars.py
MEAN_VAL = 101.0
STDDEV_VAL = 76.9
MIN_CLIP_VAL = -79.0
MAX_CLIP_VAL = 304.0
PADDING_VAL = -2.2
TARGET_SPACING = [1.6, 1.2, 1.2]
ROI_SHAPE = [128, 128, 128]
SLIDE_OVERLAP_FACTOR = 0.5


def load_and_resample(case_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    image_nii = nibabel.load(str(Path(case_dir, "imaging.nii.gz")))
    label_nii = nibabel.load(str(Path(case_dir, "segmentation.nii.gz")))
    image_spacings = image_nii.header["pixdim"][1:4].tolist()
    original_affine = image_nii.affine
    image = image_nii.get_fdata().astype(np.float32)
    label = label_nii.get_fdata().astype(np.uint8)

    spc_arr = np.array(image_spacings)
    targ_arr = np.array(TARGET_SPACING)
    zoom_factor = spc_arr / targ_arr

    reshaped_affine = original_affine.copy()
    for row in range(3):
        nz = np.where(original_affine[row][:-1] != 0)
        sign = -1 if original_affine[row][nz] < 0 else 1
        reshaped_affine[row][nz] = targ_arr[nz] * sign

    if image_spacings != TARGET_SPACING:
        image = zoom(image, zoom_factor, order=1, mode="constant", cval=image.min(), grid_mode=False)
        label = zoom(label, zoom_factor, order=0, mode="constant", cval=label.min(), grid_mode=False)
    aux = {
        "original_affine": original_affine,
        "reshaped_affine": reshaped_affine,
        "zoom_factor": zoom_factor,
        "case": Path(case_dir).name,
        "zoomed_shape": image.shape,
    }
    return image[None], label[None], aux


def normalize_intensity(image: np.ndarray) -> np.ndarray:
    image = np.clip(image, MIN_CLIP_VAL, MAX_CLIP_VAL)
    return (image - MEAN_VAL) / STDDEV_VAL


def pad_to_min_shape(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    spatial = image.shape[1:]
    short = [max(0, ROI_SHAPE[k] - spatial[k]) for k in range(3)]
    widths = [(0, 0)] + [(s // 2, s - s // 2) for s in short]
    return np.pad(image, widths, mode="edge"), np.pad(label, widths, mode="edge")


def constant_pad_volume(volume: np.ndarray, roi_shape, strides, padding_val) -> np.ndarray:
    extra = [(strides[k] - volume.shape[1 + k] % strides[k]) % strides[k] for k in range(3)]
    extra = [e if volume.shape[1 + k] + e >= roi_shape[k] else e + strides[k] for k, e in enumerate(extra)]
    widths = [(0, 0)] + [(e // 2, e - e // 2) for e in extra]
    return np.pad(volume, widths, mode="constant", constant_values=[padding_val])


def adjust_shape_for_sliding_window(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dims = list(image.shape[1:])
    strides = [int(ROI_SHAPE[k] * (1 - SLIDE_OVERLAP_FACTOR)) for k in range(3)]
    rem = [dims[k] % strides[k] for k in range(3)]
    rem = [r if r < strides[k] // 2 else 0 for k, r in enumerate(rem)]
    lo = [r // 2 for r in rem]
    hi = [dims[k] - (rem[k] - rem[k] // 2) for k in range(3)]
    image = image[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    label = label[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    image = constant_pad_volume(image, ROI_SHAPE, strides, PADDING_VAL)
    label = constant_pad_volume(label, ROI_SHAPE, strides, 0)
    return image, label


def preprocess_case(case_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """The reference's ``Preprocessor.preprocess_case`` minus the saving."""
    image, label, aux = load_and_resample(case_dir)
    image = normalize_intensity(image.copy())
    image, label = pad_to_min_shape(image, label)
    image, label = adjust_shape_for_sliding_window(image, label)
    image = image.astype(np.float32)
    label = label.astype(np.uint8)
    aux["image_shape"] = image.shape
    return image, label, aux


# --- what zoom(order=1/0, grid_mode=False) computes, written out (for checking the zoom call) ---


def _sample_points(n_in: int, n_out: int) -> np.ndarray:
    # grid_mode=False aligns the first and last samples: x = i * (n_in - 1) / (n_out - 1)
    ratio = (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0
    return np.arange(n_out) * ratio


def trilinear_align_corners(volume: np.ndarray, out_shape) -> np.ndarray:
    """Separable linear interpolation, first/last samples aligned (float64 result)."""
    out = volume.astype(np.float64)
    for axis, n_out in enumerate(out_shape):
        n_in = out.shape[axis]
        x = _sample_points(n_in, n_out)
        i0 = np.clip(np.floor(x).astype(int), 0, n_in - 1)
        i1 = np.clip(i0 + 1, 0, n_in - 1)
        t = (x - i0).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, i0, axis=axis) * (1 - t) + np.take(out, i1, axis=axis) * t
    return out


def nearest_align_corners(volume: np.ndarray, out_shape) -> np.ndarray:
    """Nearest-neighbour sampling at the same points (ties can go either way)."""
    out = volume
    for axis, n_out in enumerate(out_shape):
        n_in = out.shape[axis]
        idx = np.clip(np.floor(_sample_points(n_in, n_out) + 0.5).astype(int), 0, n_in - 1)
        out = np.take(out, idx, axis=axis)
    return out
