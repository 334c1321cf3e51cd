"""Shared pieces of the fault-injection tests (tests/test_reliability_*.py).

* a small demo dataset (core.synthetic: 2 inference + 1 calibration case) generated once into the test
  cache, and its preprocessed form, copied into each test's own workspace;
* tiny ONNX models with the benchmark's I/O contract built with onnx.helper (a fast "ok" model, one
  whose output is NaN, one whose output has the wrong shape) so that runs take seconds on a CPU;
* ``unet3d(...)``: the real CLI in a subprocess (``python -m core``) with a clean environment.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "build" / "test-cache" / "reliability-v2"  # v2: no etc/gaussian_patches.npy
RAW = CACHE / "raw"
PRE = CACHE / "preprocessed"
N_INFERENCE, N_CALIBRATION = 2, 1
PATH_VARS = ("DATA_DIR", "PREPROCESSED_DATA_DIR", "MODEL_DIR", "LOG_DIR", "UNET3D_WORKSPACE")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARS}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def unet3d(
    *args: str, ws: Path | None = None, timeout: float = 300, **popen: object
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "core", *(["--workspace", str(ws)] if ws else []), *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(), cwd=str(ws or REPO), **popen
    )


def start_unet3d(*args: str, ws: Path, **popen: object) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "core", "--workspace", str(ws), *args]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=str(ws),
        **popen,  # type: ignore[arg-type]
    )


def _locked_build(marker: Path, build: object) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    if marker.is_file():
        return
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.is_file():
            build()  # type: ignore[operator]
            marker.write_text("ok\n")


def raw_dataset() -> Path:
    """The cached raw demo cases (KiTS19 layout + case lists). Never modify: copy first."""

    def build() -> None:
        from core.synthetic import write_demo_dataset

        shutil.rmtree(RAW, ignore_errors=True)
        write_demo_dataset(RAW, n_inference=N_INFERENCE, n_calibration=N_CALIBRATION, seed=0)

    _locked_build(CACHE / "raw.ok", build)
    return RAW


def preprocessed_dataset() -> Path:
    """The cached preprocessing of :func:`raw_dataset` (an uninterrupted run). Never modify."""
    raw = raw_dataset()

    def build() -> None:
        from core.preprocess import run_preprocess

        root = CACHE / "pre-ws"
        shutil.rmtree(root, ignore_errors=True)
        ws = Workspace.resolve(root, data_dir=raw, preprocessed_dir=PRE, env={})
        shutil.rmtree(PRE, ignore_errors=True)
        run_preprocess(ws, jobs=1)

    _locked_build(CACHE / "pre.ok", build)
    return PRE


def copy_raw(dst: Path) -> Path:
    shutil.copytree(raw_dataset(), dst)
    return dst


def copy_preprocessed(dst: Path) -> Path:
    """A private copy of the preprocessed data."""
    shutil.copytree(preprocessed_dataset(), dst)
    return dst


def workspace(root: Path, preprocessed: bool = True, raw_copy: bool = False) -> Workspace:
    """A workspace at ``root`` whose data dir is the cached raw set (or a copy) and whose
    preprocessed dir is a private copy of the cached preprocessing (or empty)."""
    root.mkdir(parents=True, exist_ok=True)
    data = copy_raw(root / "build" / "data" / "KiTS19") if raw_copy else raw_dataset()
    pre = root / "build" / "preprocessed_data" / "KiTS19"
    if preprocessed:
        copy_preprocessed(pre)
    ws = Workspace.resolve(root, data_dir=data, env={})
    if not raw_copy:  # point the default data dir at the cache with a symlink: the CLI finds it
        link = root / "build" / "data" / "KiTS19"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(data, target_is_directory=True)
        ws = Workspace.resolve(root, env={})
    return ws


def tree_digest(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (symlinks followed)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_file() and not any(s in rel for s in skip):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------------- tiny ONNX models


def tiny_model(path: Path, kind: str = "ok") -> Path:
    """A model with the benchmark's I/O (``input`` [N,1,128^3] -> ``output`` [N,3,128^3], opset 12)
    that costs almost nothing to run. ``kind``: "ok" (logits -x, 0, x: kidney where x > 0),
    "nan" (every logit NaN), "wrong_shape" (declares the right shape, returns [N,3,64,128,128])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x = "input"
    if kind == "wrong_shape":
        for name, val in (("starts", [0]), ("ends", [64]), ("axes", [2])):
            inits.append(numpy_helper.from_array(np.array(val, dtype=np.int64), name))
        nodes.append(helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["xs"]))
        x = "xs"
    inits.append(numpy_helper.from_array(np.array(-1.0, dtype=np.float32), "minus"))
    inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"))
    nodes.append(helper.make_node("Mul", [x, "minus"], ["neg"]))
    nodes.append(helper.make_node("Mul", [x, "zero"], ["zeros"]))
    nodes.append(helper.make_node("Concat", ["neg", "zeros", x], ["logits"], axis=1))
    if kind == "nan":
        inits.append(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), "nan"))
        nodes.append(helper.make_node("Mul", ["logits", "nan"], ["output"]))
    else:
        nodes.append(helper.make_node("Identity", ["logits"], ["output"]))
    shape_in = ["batch_size", 1, 128, 128, 128]
    shape_out = ["batch_size", 3, 128, 128, 128]
    graph = helper.make_graph(
        nodes,
        f"tiny_{kind}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape_out)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], producer_name="reliability")
    model.ir_version = 7
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
