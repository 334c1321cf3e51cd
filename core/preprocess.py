"""The one preprocessing: the MLCommons reference steps, INT8 input quantization, and storage.

Per case (REF ``preprocess.py``; spec section 2.2), all in float32 like the reference:
  1. zoom factor = spacing / (1.6, 1.2, 1.2); ``scipy.ndimage.zoom`` image order 1, label order 0,
     mode "constant", cval = the array's minimum, grid_mode=False (skipped only when the spacing list
     equals the target list exactly, as in the reference);
  2. clip to [-79, 304] HU, then (x - 101) / 76.9;
  3. edge-pad every axis shorter than 128 up to 128 (floor half before);
  4. per axis, crop len mod 64 when it is < 32, then constant-pad to a multiple of 64 that is >= 128
     (image -2.2, label 0).
INT8 input (NVIDIA): q = round_half_even(x / 2.63979 * 127), clipped to int8.

Layout under ``ws.preprocessed_dir`` (NVIDIA-like, NumPy files of shape (1, D, H, W)):
  ``{set}/fp32/<case>.npy``, ``{set}/int8/<case>.npy`` (inference only), ``{set}/labels/<case>.npy``,
  ``{set}/meta/<case>.json`` (shapes, affines, zoom, the raw inputs' size/mtime, sha256 of every file;
  written last, so a case is complete exactly when its meta exists and verifies),
  ``{set}/preprocessed_files.json`` (``file_list`` in case-list order = QSL order, per-case
  ``image_shape``). No Gaussian patches: the fp32 path weighs its windows as the reference does and the
  device paths compute NVIDIA's patches in memory (core.sliding_window). An
  ``etc/gaussian_patches.npy`` (float16, written by older versions or by NVIDIA's preprocessing) is
  left alone and never read.
Every file is written to a temp name in the same folder, fsynced and renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from core.benchmark import (
    INT8_INPUT_AMAX_DEFAULT,
    MAX_CLIP_VAL,
    MEAN_VAL,
    MIN_CLIP_VAL,
    PADDING_VAL,
    ROI_SHAPE,
    SLIDE_OVERLAP_FACTOR,
    STDDEV_VAL,
    TARGET_SPACING,
)
from core.cases import SETS, ItemStatus, case_lists, ensure_case_00400
from core.errors import BadInputError, MissingInputError, UnetError
from core.fsio import atomic_write, sha256_bytes, sha256_file, write_bytes_atomic
from core.jobs import NEVER, CancelToken, LogLine, Phase, Progress, Reporter, null_reporter
from core.nifti import IMAGING, SEGMENTATION, load_case
from core.workspace import Workspace

VERSION = 1  # bump when outputs change meaning; older outputs are then redone
INDEX = "preprocessed_files.json"
KINDS = ("fp32", "int8", "labels")  # int8 only for the inference set
FIX = "unet3d preprocess"


# ---------------------------------------------------------------- the reference steps


def zoom_factor(spacing: Sequence[float]) -> np.ndarray:
    return np.array(spacing, dtype=np.float64) / np.array(TARGET_SPACING, dtype=np.float64)


def resample(image: np.ndarray, label: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(D,H,W) float32 image and uint8 label zoomed to the target spacing, as the reference does."""
    if list(spacing) == list(TARGET_SPACING):  # the reference's list comparison, kept as is
        return image, label
    factor = zoom_factor(spacing)
    image = ndimage.zoom(image, factor, order=1, mode="constant", cval=image.min(), grid_mode=False)
    label = ndimage.zoom(label, factor, order=0, mode="constant", cval=label.min(), grid_mode=False)
    return image, label


def normalize_intensity(image: np.ndarray) -> np.ndarray:
    image = np.clip(image, MIN_CLIP_VAL, MAX_CLIP_VAL)
    return (image - MEAN_VAL) / STDDEV_VAL  # float32 stays float32 (Python float scalars)


def pad_to_min_shape(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge-pad the spatial axes of (1,D,H,W) arrays up to 128 (floor half before)."""
    gaps = [max(0, ROI_SHAPE[i] - image.shape[1 + i]) for i in range(3)]
    pads = [(0, 0)] + [(g // 2, g - g // 2) for g in gaps]
    return np.pad(image, pads, mode="edge"), np.pad(label, pads, mode="edge")


def _strides() -> list[int]:
    return [int(ROI_SHAPE[i] * (1 - SLIDE_OVERLAP_FACTOR)) for i in range(3)]


def adjust_shape_for_sliding_window(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop small remainders, then constant-pad every spatial axis to a multiple of 64 that is >= 128."""
    strides = _strides()
    shape = image.shape[1:]
    crop = [shape[i] % strides[i] for i in range(3)]
    crop = [c if c < strides[i] // 2 else 0 for i, c in enumerate(crop)]
    d, h, w = (slice(c // 2, shape[i] - (c - c // 2)) for i, c in enumerate(crop))
    image, label = image[:, d, h, w], label[:, d, h, w]
    pad = [(strides[i] - image.shape[1 + i] % strides[i]) % strides[i] for i in range(3)]
    pad = [p if image.shape[1 + i] + p >= ROI_SHAPE[i] else p + strides[i] for i, p in enumerate(pad)]
    pads = [(0, 0)] + [(p // 2, p - p // 2) for p in pad]
    image = np.pad(image, pads, mode="constant", constant_values=PADDING_VAL)
    label = np.pad(label, pads, mode="constant", constant_values=0)
    return image, label


def final_length(n: int) -> int:
    """Closed form of steps 3-4 for one axis (spec section 2.2): the preprocessed length."""
    return max(ROI_SHAPE[0], 64 * ((max(n, ROI_SHAPE[0]) + 32) // 64))


def reshaped_affine(affine: np.ndarray) -> np.ndarray:
    """The reference's affine for the resampled grid: same sign pattern, target spacing magnitudes."""
    out = np.array(affine, dtype=np.float64).copy()
    target = np.array(TARGET_SPACING, dtype=np.float64)
    for i in range(3):
        idx = np.where(out[i][:-1] != 0)
        sign = -1 if out[i][idx] < 0 else 1
        out[i][idx] = target[idx] * sign
    return out


def preprocess_case(
    image: np.ndarray, label: np.ndarray, spacing: Sequence[float], affine: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Raw (D,H,W) image (float32 HU) and label (uint8) -> (1,D,H,W) float32 image, uint8 label, meta."""
    image = np.asarray(image, dtype=np.float32)
    label = np.asarray(label, dtype=np.uint8)
    raw_shape = image.shape
    zimage, zlabel = resample(image, label, spacing)
    zoomed_shape = zimage.shape
    x = normalize_intensity(zimage[np.newaxis].copy())
    y = zlabel[np.newaxis]
    x, y = pad_to_min_shape(x, y)
    x, y = adjust_shape_for_sliding_window(x, y)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.uint8)
    meta: dict[str, Any] = {
        "raw_shape": list(raw_shape),
        "spacing": [float(s) for s in spacing],
        "zoom_factor": zoom_factor(spacing).tolist(),
        "zoomed_shape": list(zoomed_shape),
        "image_shape": list(x.shape),
    }
    if affine is not None:
        meta["original_affine"] = np.asarray(affine, dtype=np.float64).tolist()
        meta["reshaped_affine"] = reshaped_affine(affine).tolist()
    return x, y, meta


def quantize_int8(x: np.ndarray, amax: float = INT8_INPUT_AMAX_DEFAULT) -> np.ndarray:
    """NVIDIA's linear INT8 input: round_half_even(x / amax * 127), clipped (-2.2 -> -106)."""
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(amax) * np.float32(127))
    return np.clip(q, -128, 127).astype(np.int8)


# ---------------------------------------------------------------- files


class _HashingFile:
    """A write-only file wrapper that hashes what passes through (np.save streams in chunks)."""

    def __init__(self, f: Any) -> None:
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, data: bytes | memoryview) -> int:
        self.h.update(data)
        self.n += len(data)
        return self.f.write(data)


def save_npy_atomic(path: Path, array: np.ndarray) -> tuple[str, int]:
    """np.save to a temp file beside ``path``, fsync, rename; returns (sha256, bytes)."""
    with atomic_write(path, "wb") as f:
        hf = _HashingFile(f)
        np.lib.format.write_array(hf, np.ascontiguousarray(array), allow_pickle=False)
    return hf.h.hexdigest(), hf.n


def _write_json(path: Path, doc: Any) -> None:
    write_bytes_atomic(path, (json.dumps(doc, indent=1) + "\n").encode())


def _set_dir(ws: Workspace, set_name: str) -> Path:
    if set_name not in SETS:
        raise BadInputError(f"unknown set {set_name!r} (expected one of {', '.join(SETS)})")
    return ws.preprocessed_dir / set_name


def _kinds(set_name: str) -> tuple[str, ...]:
    return KINDS if set_name == "inference" else ("fp32", "labels")


def _raw_inputs(case_dir: Path) -> dict[str, list[int]] | None:
    """(size, mtime_ns) of the raw files, to notice a replaced dataset; None when absent."""
    try:
        return {f: [(st := (case_dir / f).stat()).st_size, st.st_mtime_ns] for f in (IMAGING, SEGMENTATION)}
    except OSError:
        return None


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("version") == VERSION else None


def _verify(set_dir: Path, meta: dict[str, Any], deep: bool, written_ns: int | None = None) -> str | None:
    """None when every file of the case is there with its recorded size (and sha256 if ``deep``).

    ``written_ns``: the meta file's mtime. The data files are renamed into place before their meta is
    written, so one modified later than that was changed after the fact: its sha256 is checked even
    when not ``deep`` (a same-size corruption is then named by status, not only by the run)."""
    files = meta.get("files")
    if not isinstance(files, dict):
        return "meta has no file list"
    for kind in _kinds(meta.get("set", "")):
        rec = files.get(kind)
        if not isinstance(rec, dict):
            return f"meta lacks {kind}"
        p = set_dir / rec.get("path", "")
        if not p.is_file():
            return f"{rec.get('path')} missing"
        st = p.stat()
        if st.st_size != rec.get("bytes"):
            return f"{rec.get('path')} has the wrong size ({st.st_size} bytes, {rec.get('bytes')} recorded)"
        changed = written_ns is not None and st.st_mtime_ns > written_ns
        if (deep or changed) and sha256_file(p) != rec.get("sha256"):
            return f"{rec.get('path')} fails its sha256 check (corrupted or changed)"
    return None


# ---------------------------------------------------------------- one case (runs in a worker process)


def _work_case(data_dir: str, set_dir: str, set_name: str, case: str, amax: float) -> dict[str, Any]:
    """Preprocess one case unless its outputs already verify; returns its meta (+ "skipped")."""
    out, raw_dir = Path(set_dir), Path(data_dir) / case
    inputs = _raw_inputs(raw_dir)
    old = _read_meta(out / "meta" / f"{case}.json")
    if (
        old is not None
        and old.get("case") == case
        and old.get("set") == set_name
        and (inputs is None or old.get("inputs") == inputs)
        and _verify(out, old, deep=True) is None
    ):
        return {**old, "skipped": True}
    t0 = time.perf_counter()
    raw = load_case(raw_dir)
    image, label, meta = preprocess_case(raw.image, raw.label, raw.spacing, raw.affine)
    del raw
    files: dict[str, dict[str, Any]] = {}
    arrays = {"fp32": image, "labels": label}
    if set_name == "inference":
        arrays["int8"] = quantize_int8(image, amax)
    for kind in _kinds(set_name):
        rel = f"{kind}/{case}.npy"
        sha, nbytes = save_npy_atomic(out / rel, arrays[kind])
        files[kind] = {"path": rel, "sha256": sha, "bytes": nbytes, "dtype": str(arrays[kind].dtype)}
    meta.update(
        version=VERSION,
        case=case,
        set=set_name,
        inputs=inputs,
        int8_amax=amax if set_name == "inference" else None,
        mean=round(float(image.mean()), 4),
        std=round(float(image.std()), 4),
        seconds=round(time.perf_counter() - t0, 2),
        files=files,
    )
    _write_json(out / "meta" / f"{case}.json", meta)  # last: marks the case complete
    return {**meta, "skipped": False}


# ---------------------------------------------------------------- the job


@dataclass
class PreprocessResult:
    out_dir: Path
    sets: tuple[str, ...]
    processed: list[str] = field(default_factory=list)  # "set/case"
    skipped: list[str] = field(default_factory=list)
    image_shapes: dict[str, list[int]] = field(default_factory=dict)  # "set/case" -> (1,D,H,W)
    seconds: float = 0.0

    def summary(self) -> str:
        total = len(self.processed) + len(self.skipped)
        return (
            f"preprocessed {total} cases ({', '.join(self.sets)}) into {self.out_dir}: "
            f"{len(self.processed)} done, {len(self.skipped)} already up to date, {self.seconds:.1f} s"
        )


def _mp_context() -> multiprocessing.context.BaseContext:
    # forkserver: forking a threaded parent (the console runs jobs in a thread) is unsafe
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _clean_temps(set_dir: Path) -> None:
    """Remove temp files a killed run left behind (they never carry a final name)."""
    for sub in (*KINDS, "meta"):
        d = set_dir / sub
        if d.is_dir():
            for p in d.glob(".*.tmp"):
                p.unlink(missing_ok=True)


def run_preprocess(
    ws: Workspace,
    sets: Sequence[str] = SETS,
    jobs: int | None = None,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    amax: float = INT8_INPUT_AMAX_DEFAULT,
) -> PreprocessResult:
    """Preprocess the listed cases of ``sets`` (resumable: verified outputs are kept). Holds the
    workspace lock (core.lock): a second writing job on the workspace is refused meanwhile."""
    from core.lock import workspace_lock

    with workspace_lock(ws, "preprocess"):
        return _run_preprocess(ws, sets, jobs, report, cancel, amax)


def _run_preprocess(
    ws: Workspace,
    sets: Sequence[str],
    jobs: int | None,
    report: Reporter,
    cancel: CancelToken,
    amax: float,
) -> PreprocessResult:
    t0 = time.monotonic()
    sets = tuple(sets)
    for s in sets:
        _set_dir(ws, s)
    lists = case_lists(ws)
    if "inference" in sets:
        ensure_case_00400(ws)
    work: list[tuple[str, str]] = [(s, c) for s in sets for c in lists.for_set(s)]
    # a case with no raw files and no earlier outputs cannot be done: say so before starting
    absent = [
        c
        for s, c in work
        if _raw_inputs(ws.data_dir / c) is None and not (_set_dir(ws, s) / "meta" / f"{c}.json").is_file()
    ]
    if absent:
        more = f" and {len(absent) - 3} more" if len(absent) > 3 else ""
        raise MissingInputError(
            f"raw cases not found: {', '.join(absent[:3])}{more} (unet3d download, or unet3d demo)",
            ws.data_dir,
        )
    for s in sets:
        _clean_temps(_set_dir(ws, s))
    # biggest first: the long cases start early and the pool finishes together
    work.sort(key=lambda sc: -_size(ws.data_dir / sc[1] / IMAGING))
    result = PreprocessResult(out_dir=ws.preprocessed_dir, sets=sets)
    metas: dict[tuple[str, str], dict[str, Any]] = {}
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(work) or 1))
    report(Phase("preprocessing", f"{len(work)} cases, {jobs} process{'es' if jobs > 1 else ''}"))

    def finished(key: tuple[str, str], meta: dict[str, Any]) -> None:
        metas[key] = meta
        name = f"{key[0]}/{key[1]}"
        (result.skipped if meta["skipped"] else result.processed).append(name)
        result.image_shapes[name] = meta["image_shape"]
        if not meta["skipped"]:
            shape = "x".join(str(n) for n in meta["image_shape"][1:])
            report(LogLine("info", f"{name}: {shape} in {meta['seconds']} s"))
        report(Progress("preprocess", len(metas), len(work), unit="case", item=key[1]))

    args = [(str(ws.data_dir), str(_set_dir(ws, s)), s, c, amax) for s, c in work]
    try:
        if jobs == 1:
            for key, a in zip(work, args, strict=True):
                cancel.check()
                finished(key, _work_case(*a))
        else:
            _run_pool(work, args, jobs, cancel, finished)
    finally:  # workers stopped mid-write leave temp files; we hold the lock, so no one else writes
        for s in sets:
            _clean_temps(_set_dir(ws, s))

    cancel.check()
    for s in sets:
        names = lists.for_set(s)
        _write_json(_set_dir(ws, s) / INDEX, _index_doc(s, names, {c: metas[(s, c)] for c in names}))
    result.seconds = round(time.monotonic() - t0, 2)
    return result


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when the process that started the pool is gone.

    Workers are children of the forkserver, not of the job's process, so a SIGKILLed job (or one
    killed by the OOM killer) would otherwise leave them running: still using cores and memory on a
    shared machine, and still writing into the folder a restarted job is working on."""
    import select
    import threading

    try:
        pidfd = os.pidfd_open(parent_pid)
    except (AttributeError, OSError):  # no pidfd (old kernel) or the parent is already gone
        pidfd = None
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except OSError:
            pass

    def watch() -> None:
        while True:
            if pidfd is not None:
                if select.select([pidfd], [], [], None)[0]:  # readable: the parent has exited
                    os._exit(1)
            else:
                time.sleep(0.5)
                try:
                    os.kill(parent_pid, 0)
                except ProcessLookupError:
                    os._exit(1)
                except OSError:
                    pass

    threading.Thread(target=watch, name="unet3d-parent-watch", daemon=True).start()


def _run_pool(
    work: list[tuple[str, str]],
    args: list[tuple[str, str, str, str, float]],
    jobs: int,
    cancel: CancelToken,
    finished: Callable[[tuple[str, str], dict[str, Any]], None],
) -> None:
    """At most ``jobs`` cases in flight; on cancel or error the workers are stopped at once
    (their outputs are atomic, so nothing half-written remains)."""
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=_mp_context(), initializer=_exit_with_parent, initargs=(os.getpid(),)
    )
    pending: dict[Future, tuple[str, str]] = {}
    todo = list(zip(work, args, strict=True))
    ok = False
    try:
        while todo or pending:
            cancel.check()
            while todo and len(pending) < jobs:
                key, a = todo.pop(0)
                pending[pool.submit(_work_case, *a)] = key
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for fut in done:
                key = pending.pop(fut)
                try:
                    meta = fut.result()
                except UnetError:
                    raise
                except Exception as err:  # a worker crash (e.g. out of memory) or an unexpected bug
                    raise BadInputError(
                        f"preprocessing {key[1]} failed ({type(err).__name__}: {err})"
                    ) from err
                finished(key, meta)
        ok = True
    finally:
        if not ok:
            for p in list(getattr(pool, "_processes", {}).values()):  # no public terminate
                p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _index_doc(set_name: str, names: list[str], metas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cases = {
        c: {
            "case": c,
            "image_shape": m["image_shape"],
            "zoom_factor": m["zoom_factor"],
            "original_affine": m.get("original_affine"),
            "reshaped_affine": m.get("reshaped_affine"),
        }
        for c, m in metas.items()
    }
    return {
        "version": VERSION,
        "set": set_name,
        "file_list": list(names),
        "image_shape": {c: metas[c]["image_shape"] for c in names},
        "cases": cases,
    }


# ---------------------------------------------------------------- loaders


def load_index(ws: Workspace, set_name: str) -> dict[str, Any]:
    path = _set_dir(ws, set_name) / INDEX
    if not path.is_file():
        raise MissingInputError(f"preprocessed {set_name} set not found (run `{FIX}`)", path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BadInputError(f"unreadable index ({type(err).__name__}: {err}); run `{FIX}`", path) from err
    if not isinstance(doc, dict) or not isinstance(doc.get("file_list"), list):
        raise BadInputError(f"index has no file_list; run `{FIX}`", path)
    return doc


def _load(ws: Workspace, set_name: str, case: str, kind: str, verify: bool) -> np.ndarray:
    set_dir = _set_dir(ws, set_name)
    meta_path = set_dir / "meta" / f"{case}.json"
    path = set_dir / kind / f"{case}.npy"
    if not meta_path.is_file() or not path.is_file():
        missing = path if meta_path.is_file() else meta_path
        raise MissingInputError(f"{case} is not preprocessed (run `{FIX}`)", missing)
    meta = _read_meta(meta_path)
    rec = (meta or {}).get("files", {}).get(kind)
    if not isinstance(rec, dict):
        raise BadInputError(f"unreadable or outdated meta for {case}; run `{FIX}`", meta_path)
    buf = bytearray(path.stat().st_size)
    with open(path, "rb") as f:
        f.readinto(buf)
    if verify and sha256_bytes(buf) != rec.get("sha256"):
        raise BadInputError(f"sha256 mismatch: file corrupted or changed; run `{FIX}`", path)
    try:  # parse the header, then view the (writable) buffer: no second copy of a large volume
        bio = io.BytesIO(buf)
        version = np.lib.format.read_magic(bio)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(bio)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(bio)
        else:  # not written by us; fall back to a copying load
            return _check4(np.load(io.BytesIO(buf), allow_pickle=False).copy(), path)
        arr = np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape)), offset=bio.tell())
        arr = arr.reshape(shape, order="F" if fortran else "C")
    except Exception as err:
        raise BadInputError(
            f"not a valid .npy file ({type(err).__name__}: {err}); run `{FIX}`", path
        ) from err
    return _check4(arr, path)


def _check4(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 4 or arr.shape[0] != 1:
        raise BadInputError(f"expected shape (1, D, H, W), got {arr.shape}", path)
    return arr


def load_image(
    ws: Workspace, set_name: str, case: str, dtype: str = "fp32", verify: bool = True
) -> np.ndarray:
    """(1, D, H, W) float32 ("fp32") or int8 ("int8", inference set only), checksum-verified."""
    if dtype not in ("fp32", "int8"):
        raise BadInputError(f"unknown preprocessed dtype {dtype!r} (fp32, int8)")
    if dtype == "int8" and set_name != "inference":
        raise BadInputError(f"the {set_name} set is stored as fp32 only")
    return _load(ws, set_name, case, dtype, verify)


def load_label(ws: Workspace, set_name: str, case: str, verify: bool = True) -> np.ndarray:
    """(1, D, H, W) uint8 preprocessed label (the DICE ground truth), checksum-verified."""
    return _load(ws, set_name, case, "labels", verify)


def load_meta(ws: Workspace, set_name: str, case: str) -> dict[str, Any]:
    path = _set_dir(ws, set_name) / "meta" / f"{case}.json"
    meta = _read_meta(path)
    if meta is None:
        raise MissingInputError(f"{case} is not preprocessed (run `{FIX}`)", path)
    return meta


# ---------------------------------------------------------------- status


def preprocessed_status(ws: Workspace) -> list[ItemStatus]:
    """Per-case state of both preprocessed sets plus their indexes.

    Fast checks only (meta present, files present with the recorded sizes, raw inputs unchanged);
    the sha256 of every file is checked when a run loads it.
    """
    lists = case_lists(ws)
    items: list[ItemStatus] = []
    for s in SETS:
        set_dir = _set_dir(ws, s)
        names = lists.for_set(s)
        for c in names:
            items.append(_case_item(ws, set_dir, s, c))
        index = set_dir / INDEX
        if not index.is_file():
            items.append(ItemStatus(INDEX, "missing", f"{s} index not written", FIX, s))
        else:
            try:
                doc = load_index(ws, s)
                listed = doc["file_list"]
                if listed != names:
                    items.append(ItemStatus(INDEX, "broken", "written for another case list", FIX, s))
                else:
                    items.append(ItemStatus(INDEX, "ok", f"{len(listed)} cases", "", s))
            except UnetError as err:
                items.append(ItemStatus(INDEX, "broken", str(err), FIX, s))
    return items


def _case_item(ws: Workspace, set_dir: Path, set_name: str, case: str) -> ItemStatus:
    meta_path = set_dir / "meta" / f"{case}.json"
    if not meta_path.is_file():
        return ItemStatus(case, "missing", "not preprocessed", FIX, set_name)
    meta = _read_meta(meta_path)
    if meta is None:
        return ItemStatus(case, "broken", "meta unreadable or from an older version", FIX, set_name)
    problem = _verify(set_dir, meta, deep=False, written_ns=meta_path.stat().st_mtime_ns)
    if problem:
        return ItemStatus(case, "broken", problem, FIX, set_name)
    inputs = _raw_inputs(ws.data_dir / case)
    if inputs is not None and meta.get("inputs") != inputs:
        return ItemStatus(case, "broken", "raw files changed since preprocessing", FIX, set_name)
    shape = "x".join(str(n) for n in meta["image_shape"][1:])
    data = {"image_shape": meta["image_shape"], "files": {k: v["path"] for k, v in meta["files"].items()}}
    return ItemStatus(case, "ok", f"{shape}, {'+'.join(_kinds(set_name))}", "", set_name, data)
