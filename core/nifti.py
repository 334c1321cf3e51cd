"""NIfTI reading (with every validation the benchmark inputs need) and atomic, reproducible writing.

Loading follows the reference exactly: spacing = header ``pixdim[1:4]`` (array-axis order z, y, x),
image = ``get_fdata()`` cast to float32, label = ``get_fdata()`` cast to uint8. Integer volumes with an
identity scaling are read straight from the raw array, which gives the same float32 values without a
float64 copy of a 1 GB volume. Every problem becomes a one-line :class:`core.errors` error naming the file.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from core.errors import BadInputError, MissingInputError
from core.fsio import write_bytes_atomic

IMAGING = "imaging.nii.gz"
SEGMENTATION = "segmentation.nii.gz"
LABEL_VALUES = (0, 1, 2)  # background, kidney, tumor


@dataclass(frozen=True)
class Volume:
    array: np.ndarray  # (D, H, W)
    spacing: tuple[float, float, float]  # pixdim[1:4] as Python floats (z, y, x) mm
    affine: np.ndarray  # 4x4 float64


@dataclass(frozen=True)
class Case:
    name: str
    image: np.ndarray  # (D, H, W) float32, HU
    label: np.ndarray  # (D, H, W) uint8, 0/1/2
    spacing: tuple[float, float, float]
    affine: np.ndarray


def _open(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise MissingInputError("file not found", path)
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for junk input
        raise BadInputError(f"not a readable NIfTI file ({type(err).__name__}: {err})", path) from err
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise BadInputError(f"not a NIfTI image ({type(img).__name__})", path)
    return img


def header_info(path: str | Path) -> tuple[tuple[int, ...], tuple[float, float, float]]:
    """Shape and spacing from the header only (cheap: no voxel data is read). Validates both."""
    path = Path(path)
    img = _open(path)
    shape = tuple(int(s) for s in img.shape)
    return shape, _check_geometry(img, path)


def _check_geometry(img: nib.Nifti1Image, path: Path) -> tuple[float, float, float]:
    if len(img.shape) != 3:
        raise BadInputError(f"expected a 3-D volume, got {len(img.shape)}-D shape {tuple(img.shape)}", path)
    if min(img.shape) < 1:
        raise BadInputError(f"empty volume shape {tuple(img.shape)}", path)
    try:  # nibabel silently replaces zero/negative pixdim on load; judge the bytes on disk
        with ImageOpener(str(path)) as f:
            raw = type(img.header).from_fileobj(f, check=False)["pixdim"][1:4].tolist()
    except Exception as err:
        raise BadInputError(f"unreadable NIfTI header ({type(err).__name__}: {err})", path) from err
    if not all(np.isfinite(s) and s > 0 for s in raw):
        raise BadInputError(f"voxel spacing {tuple(raw)} must be finite and positive", path)
    pixdim = img.header["pixdim"][1:4].tolist()  # what the reference reads
    return (float(pixdim[0]), float(pixdim[1]), float(pixdim[2]))


def _read(img: nib.Nifti1Image, path: Path, dtype: type) -> np.ndarray:
    """The reference's ``get_fdata().astype(dtype)``, without the float64 copy when it is exact."""
    try:
        raw_dtype = img.get_data_dtype()
        slope, inter = img.header.get_slope_inter()
        identity = (slope is None or slope == 1.0) and (inter is None or inter == 0.0)
        if identity and np.issubdtype(raw_dtype, np.integer) and np.dtype(raw_dtype).itemsize <= 2:
            # integers up to 16 bits are exact in float32, so this equals float64 -> float32
            return np.asarray(img.dataobj).astype(dtype)
        return img.get_fdata().astype(dtype)
    except Exception as err:  # truncated gzip, short file, bad dtype
        raise BadInputError(f"cannot read voxel data ({type(err).__name__}: {err})", path) from err


def load_volume(path: str | Path) -> Volume:
    """Load an imaging volume as float32 (D, H, W); rejects non-3-D, bad spacing, NaN/inf."""
    path = Path(path)
    img = _open(path)
    spacing = _check_geometry(img, path)
    array = _read(img, path, np.float32)
    integral = np.issubdtype(img.get_data_dtype(), np.integer) and img.header.get_slope_inter()[0] is None
    if not integral and not np.isfinite(array).all():  # unscaled integers cannot be NaN/inf
        raise BadInputError(f"contains {int((~np.isfinite(array)).sum())} NaN/inf voxels", path)
    return Volume(array=array, spacing=spacing, affine=np.asarray(img.affine, dtype=np.float64))


def load_label(path: str | Path) -> Volume:
    """Load a segmentation as uint8 (D, H, W); rejects values other than 0, 1, 2."""
    path = Path(path)
    img = _open(path)
    spacing = _check_geometry(img, path)
    try:
        raw = np.asarray(img.dataobj)
    except Exception as err:
        raise BadInputError(f"cannot read voxel data ({type(err).__name__}: {err})", path) from err
    if raw.dtype == np.uint8 and img.header.get_slope_inter() in ((None, None), (1.0, 0.0)):
        ok = int(raw.max(initial=0)) <= 2
        label = raw
    else:
        values = _read(img, path, np.float64)
        ok = bool(np.isin(values, LABEL_VALUES).all())
        label = values.astype(np.uint8)
    if not ok:
        values = np.unique(raw).tolist()
        bad = [int(v) if float(v).is_integer() else v for v in values if v not in LABEL_VALUES][:5]
        raise BadInputError(f"label values {bad} are outside {{0, 1, 2}}", path)
    return Volume(array=label, spacing=spacing, affine=np.asarray(img.affine, dtype=np.float64))


def load_case(case_dir: str | Path) -> Case:
    """Load and cross-check ``case_dir/{imaging,segmentation}.nii.gz``."""
    case_dir = Path(case_dir)
    if not case_dir.is_dir():
        raise MissingInputError("case folder not found", case_dir)
    image = load_volume(case_dir / IMAGING)
    label = load_label(case_dir / SEGMENTATION)
    if image.array.shape != label.array.shape:
        raise BadInputError(
            f"label shape {label.array.shape} differs from image shape {image.array.shape}",
            case_dir / SEGMENTATION,
        )
    if not np.allclose(image.spacing, label.spacing, rtol=0, atol=1e-3):
        raise BadInputError(
            f"label spacing {label.spacing} differs from image spacing {image.spacing}",
            case_dir / SEGMENTATION,
        )
    return Case(
        name=case_dir.name,
        image=image.array,
        label=label.array,
        spacing=image.spacing,
        affine=image.affine,
    )


def save_volume(path: str | Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Save a 3-D array as .nii.gz atomically. The gzip header carries no timestamp, so equal
    arrays give equal bytes (reproducible datasets, comparable checksums)."""
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    data = gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)
    write_bytes_atomic(path, data)
