"""The fp32 window path of a benchmark run (what ``--backend=ort --precision=fp32`` runs: the harness,
core.sliding_window, LoadGen's accuracy log) against the independent transcription of the MLCommons
reference sliding window (tests/reference_sliding_window.py): 0 differing voxels.

A deterministic stand-in network replaces ONNX Runtime, so the labels depend only on the weighing of
the windows; tests/test_demo.py does the same with ONNX Runtime and the demo model on the demo cases.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from core.benchmark import RunConfig
from core.harness.qsl import InMemoryData
from core.harness.runner import run_benchmark
from core.jobs import CancelToken
from core.workspace import Workspace
from tests import reference_sliding_window as ref_sw

ROI = 128
# a 192x320x256 volume (24 windows) holds a voxel where NVIDIA's preconditioned patches, even in
# float32, disagree with the reference's result / norm_map
SHAPES = {"case_00000": (192, 320, 256), "case_00001": (128, 192, 128)}


class StandIn:
    """A deterministic window engine: logits depend on the voxel value and on the position inside the
    window, so overlapping windows disagree and the weighing decides near-tie voxels."""

    name = "stand-in"
    precision = "fp32"
    input_dtype = "float32"

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.field = np.random.default_rng(0).standard_normal((3, ROI, ROI, ROI)).astype(np.float32)
        self.scale = np.array([0.5, -0.7, 1.1], dtype=np.float32)[None, :, None, None, None]

    def infer(self, windows: np.ndarray) -> np.ndarray:
        assert windows.shape[1:] == (1, ROI, ROI, ROI) and len(windows) <= self.batch_size
        return (windows.astype(np.float32) * self.scale + self.field[None]).astype(np.float32)

    def close(self) -> None:
        pass


def _data() -> InMemoryData:
    rng = np.random.default_rng(1)
    images = {c: rng.standard_normal((1, *s)).astype(np.float32) for c, s in SHAPES.items()}
    labels = {c: np.zeros((1, *s), np.uint8) for c, s in SHAPES.items()}
    return InMemoryData(images, labels)


def _plant_float16_patches(ws: Workspace) -> None:
    """etc/gaussian_patches.npy as older versions (and NVIDIA's preprocessing) wrote it: float16, with
    a valid checksum record. Runs must never weigh the fp32 path with it."""
    from core.patches import preconditioned_patches

    path = ws.preprocessed_dir / "etc" / "gaussian_patches.npy"
    path.parent.mkdir(parents=True)
    np.save(path, preconditioned_patches(np.float16))
    data = path.read_bytes()
    rec = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "shape": [27, ROI, ROI, ROI]}
    path.with_suffix(".json").write_text(json.dumps({**rec, "dtype": "float16"}))


@pytest.mark.slow  # 26 windows through the run and 26 through the transcription, ~20 s
@pytest.mark.parametrize("workspace", ["fresh", "older-float16-patches"])
def test_fp32_window_run_equals_reference_voxel_for_voxel(tmp_path: Path, workspace: str) -> None:
    ws = Workspace.resolve(tmp_path, env={})
    if workspace != "fresh":
        _plant_float16_patches(ws)
    engine = StandIn(batch_size=2)
    cfg = RunConfig(test_mode="AccuracyOnly", backend="ort", precision="fp32", gpu_batch_size=2)
    result = run_benchmark(ws, cfg, lambda e: None, CancelToken(), engine=engine, data=_data())
    assert result.status == "complete"
    data = _data()
    got = ref_sw.predictions(result.log_dir, data.cases(), SHAPES)
    assert sorted(got) == sorted(SHAPES)
    differing = {
        case: int(
            (
                got[case]
                != ref_sw.infer_single_query(data.load_image(case), ref_sw.do_infer_of(engine))[0, 0]
            ).sum()
        )
        for case in SHAPES
    }
    assert differing == dict.fromkeys(SHAPES, 0)
