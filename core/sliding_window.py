"""The one sliding window: grid, batching, patch-weighted accumulation and argmax.

Grid (REF ``base_SUT.infer_single_query``): 128^3 windows at stride 64 on every axis, origins
0, 64, ..., len - 128, nested loops with axis 0 outermost. Every dimension of a preprocessed volume is
a multiple of 64 and at least 128, so the windows tile the volume exactly and no padding happens here.

Two paths with the same grid and tie rule (ties go to the lowest class, NumPy's argmax, the reference's
rule), and two ways of weighing the windows:
- ``segment``: NumPy, drives any :class:`core.backends.base.Engine` through ``engine.infer`` (the ort
  backend: the fp32 reference path). It weighs windows with the reference's own arithmetic, float32
  like REF's ONNX Runtime SUT: result += logits * G and norm_map += G per window in grid order, then
  result / norm_map and argmax. Same operations in the same order: for the same logits, the
  reference's labels voxel for voxel (tests/reference_sliding_window.py is the transcription).
- ``segment_torch``: torch tensors on any device (used by the GPU backends), weighing with NVIDIA's
  27 preconditioned patches (``core.patches``): acc += logits * patch[patch_id], which folds the
  division into the weights (no norm map, no division on the device). Mathematically equal, but the
  float32 rounding differs, so a voxel whose two best classes tie to ~1e-7 can flip (1 voxel of 15.7 M
  in tests/test_sliding_window.py; float16 patches flip about 1 in 10^5). Hooks let a fused kernel
  replace the weight-and-accumulate step (``accumulate_fn``) or the argmax (``argmax_fn``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.benchmark import NUM_CLASSES, ROI, STRIDE
from core.errors import BadInputError
from core.jobs import NEVER, CancelToken
from core.patches import gaussian_map, patch_id, preconditioned_patches

if TYPE_CHECKING:  # torch is optional (the "gpu" extra); imported lazily in segment_torch
    import torch

# Called after each batch with (windows done, windows total) so a harness can count windows.
BatchHook = Callable[[int, int], None]

_ARGMAX_SLAB = 16  # D-planes per argmax chunk: keeps np.argmax's int64 temporary small


@dataclass(frozen=True)
class Window:
    origin: tuple[int, int, int]  # (d, h, w) of the window's first voxel
    patch_id: int  # index into the 27 preconditioned patches

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        d, h, w = self.origin
        return slice(d, d + ROI), slice(h, h + ROI), slice(w, w + ROI)


def check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """(D, H, W) if every dim is a multiple of 64 and >= 128, else BadInputError."""
    dims = tuple(int(n) for n in shape)
    if len(dims) != 3 or any(n < ROI or n % STRIDE for n in dims):
        raise BadInputError(
            f"volume shape {dims} is not (D, H, W) with every dim a multiple of {STRIDE} and >= {ROI}"
        )
    return dims[0], dims[1], dims[2]


def window_grid(shape: Sequence[int]) -> list[Window]:
    """Windows of a (D, H, W) volume in reference order (axis 0 outermost, axis 2 innermost)."""
    dims = check_shape(shape)
    axes = [range(0, n - ROI + 1, STRIDE) for n in dims]
    return [Window((d, h, w), patch_id((d, h, w), dims)) for d, h, w in itertools.product(*axes)]


def window_count(shape: Sequence[int]) -> int:
    d, h, w = check_shape(shape)
    return (d // STRIDE - 1) * (h // STRIDE - 1) * (w // STRIDE - 1)


def batches(grid: Sequence[Window], batch_size: int) -> Iterator[Sequence[Window]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for i in range(0, len(grid), batch_size):
        yield grid[i : i + batch_size]


@functools.lru_cache(maxsize=1)
def _gaussian32() -> np.ndarray:
    g = gaussian_map(np.float32)  # REF prepare_arrays casts the kernel to the image dtype
    g.flags.writeable = False
    return g


@functools.lru_cache(maxsize=1)
def _default_patches() -> np.ndarray:
    p = preconditioned_patches(np.float32)
    p.flags.writeable = False
    return p


def _check_patches(patches: Any) -> None:
    if tuple(patches.shape) != (27, ROI, ROI, ROI):
        raise BadInputError(f"patches have shape {tuple(patches.shape)}, expected (27, {ROI}, {ROI}, {ROI})")


def _volume_shape(volume: Any) -> tuple[int, int, int]:
    if volume.ndim != 4 or volume.shape[0] != 1:
        raise BadInputError(f"volume has shape {tuple(volume.shape)}, expected (1, D, H, W)")
    return check_shape(volume.shape[1:])


def argmax_lowest(acc: np.ndarray) -> np.ndarray:
    """(C, D, H, W) scores -> (D, H, W) uint8, ties to the lowest class (np.argmax), in D-slabs."""
    out = np.empty(acc.shape[1:], dtype=np.uint8)
    for d in range(0, acc.shape[1], _ARGMAX_SLAB):
        out[d : d + _ARGMAX_SLAB] = np.argmax(acc[:, d : d + _ARGMAX_SLAB], axis=0)
    return out


def segment(
    volume: np.ndarray,
    engine: Any,
    batch_size: int | None = None,
    patches: np.ndarray | None = None,
    cancel: CancelToken = NEVER,
    on_batch: BatchHook | None = None,
) -> np.ndarray:
    """(1, D, H, W) preprocessed volume -> (D, H, W) uint8 labels, through ``engine.infer``.

    Windows go to the engine in grid order, ``batch_size`` (default ``engine.batch_size``) at a time,
    in the volume's dtype (float32, or int8 for an engine with an int8 linear input). Weighing is the
    reference's (G and a norm map, float32); ``patches`` switches to NVIDIA's preconditioned patches,
    the device paths' arithmetic (to compare one against it), accumulated in float32. An fp32 engine
    refuses patches of a lower precision: they would skew the reference path without an error."""
    dims = _volume_shape(volume)
    batch_size = int(batch_size or engine.batch_size)
    norm: np.ndarray | None = None
    gauss = _gaussian32()
    if patches is None:
        norm = np.zeros(dims, dtype=np.float32)
    else:
        _check_patches(patches)
        if getattr(engine, "precision", None) == "fp32" and patches.dtype != np.float32:
            raise BadInputError(
                f"{patches.dtype} Gaussian patches for the fp32 engine {getattr(engine, 'name', '?')}: "
                "the fp32 path weighs its windows in float32, as the reference"
            )
    grid = window_grid(dims)
    acc = np.zeros((NUM_CLASSES, *dims), dtype=np.float32)
    tmp = np.empty((NUM_CLASSES, ROI, ROI, ROI), dtype=np.float32)
    done = 0
    for batch in batches(grid, batch_size):
        cancel.check()
        windows = np.stack([volume[(slice(None), *w.slices)] for w in batch])
        logits = np.asarray(engine.infer(windows))
        if logits.shape != (len(batch), NUM_CLASSES, ROI, ROI, ROI):
            raise BadInputError(
                f"engine {getattr(engine, 'name', '?')} returned shape {logits.shape} for "
                f"{len(batch)} windows, expected ({len(batch)}, {NUM_CLASSES}, {ROI}, {ROI}, {ROI})"
            )
        for w, lg in zip(batch, logits, strict=True):
            # REF: result[window] += logits * G; norm_map[window] += G (one float32 op each, in order)
            np.multiply(lg, gauss if patches is None else patches[w.patch_id], out=tmp)
            view = acc[(slice(None), *w.slices)]
            np.add(view, tmp, out=view)
            if norm is not None:
                nview = norm[w.slices]
                np.add(nview, gauss, out=nview)
        done += len(batch)
        if on_batch is not None:
            on_batch(done, len(grid))
    cancel.check()
    if norm is not None:  # REF: result /= norm_map (the 3 channels of its norm_map hold equal values)
        np.divide(acc, norm, out=acc)
    return argmax_lowest(acc)


# --- torch path ---------------------------------------------------------------------------------

# accumulate_fn(acc (C, D, H, W), logits (n, C, 128, 128, 128), patches (27, 128^3), windows) -> None,
# adding logits[i] * patches[windows[i].patch_id] into acc at windows[i]'s extent, in place.
AccumulateFn = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor", Sequence[Window]], None]
ArgmaxFn = Callable[["torch.Tensor"], "torch.Tensor"]


def accumulate_torch(
    acc: torch.Tensor, logits: torch.Tensor, patches: torch.Tensor, windows: Sequence[Window]
) -> None:
    """Default weight-and-accumulate step (plain torch)."""
    for w, lg in zip(windows, logits, strict=True):
        acc[(slice(None), *w.slices)].add_(lg.to(acc.dtype) * patches[w.patch_id].to(acc.dtype))


def argmax_lowest_torch(acc: torch.Tensor) -> torch.Tensor:
    """(C, D, H, W) -> (D, H, W) uint8; strict '>' against the running best keeps ties on the lowest
    class (np.argmax's rule), whatever the device's argmax does with ties."""
    import torch

    best = acc[0].clone()
    label = torch.zeros(acc.shape[1:], dtype=torch.uint8, device=acc.device)
    for c in range(1, acc.shape[0]):
        better = acc[c] > best
        label[better] = c
        best = torch.where(better, acc[c], best)
    return label


def default_patches_tensor(device: Any = "cpu", dtype: Any = None) -> torch.Tensor:
    """The 27 patches as a torch tensor (float32 unless ``dtype``) on ``device``."""
    import torch

    t = torch.from_numpy(np.array(_default_patches()))
    return t.to(device=device, dtype=dtype or torch.float32)


def segment_torch(
    volume_tensor: torch.Tensor,
    infer_fn: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    patches_tensor: torch.Tensor | None = None,
    accumulate_fn: AccumulateFn | None = None,
    argmax_fn: ArgmaxFn | None = None,
    cancel: CancelToken = NEVER,
    on_batch: BatchHook | None = None,
    acc_dtype: Any = None,
) -> torch.Tensor:
    """(1, D, H, W) tensor -> (D, H, W) uint8 tensor on the same device; same grid, batching and tie
    rule as :func:`segment`. ``infer_fn`` maps (n, 1, 128^3) windows to (n, 3, 128^3) logits.
    The accumulator is float32 unless ``acc_dtype`` says otherwise."""
    import torch

    dims = _volume_shape(volume_tensor)
    device = volume_tensor.device
    if patches_tensor is None:
        patches_tensor = default_patches_tensor(device)
    _check_patches(patches_tensor)
    accumulate = accumulate_fn or accumulate_torch
    grid = window_grid(dims)
    acc = torch.zeros((NUM_CLASSES, *dims), dtype=acc_dtype or torch.float32, device=device)
    done = 0
    for batch in batches(grid, batch_size):
        cancel.check()
        windows = torch.stack([volume_tensor[(slice(None), *w.slices)] for w in batch])
        logits = infer_fn(windows)
        if tuple(logits.shape) != (len(batch), NUM_CLASSES, ROI, ROI, ROI):
            raise BadInputError(
                f"infer_fn returned shape {tuple(logits.shape)} for {len(batch)} windows, "
                f"expected ({len(batch)}, {NUM_CLASSES}, {ROI}, {ROI}, {ROI})"
            )
        accumulate(acc, logits, patches_tensor, batch)
        done += len(batch)
        if on_batch is not None:
            on_batch(done, len(grid))
    cancel.check()
    return (argmax_fn or argmax_lowest_torch)(acc)
