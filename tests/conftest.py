"""Shared fixtures: a tiny random 3D-UNet with the MLPerf topology (core.model's builder at the demo
model's widths), the official export's names for it, the shared folder, and the shared phantom model
written as fp32 ONNX (cached under build/test-cache/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TEST_CACHE = REPO / "build" / "test-cache"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random model (widths 4..40), opset 12, ``input``/``output`` [batch_size, C, 128^3]."""
    from core.model import TINY_WIDTHS, build_random_model, save_model

    return save_model(build_random_model(TINY_WIDTHS, seed=0), tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path: Path):  # type: ignore[no-untyped-def]
    import onnx

    return onnx.load(str(tiny_model_path))


@pytest.fixture(scope="session")
def tiny_model_32():  # type: ignore[no-untyped-def]
    """The tiny model's graph declared for 32^3 windows (fully convolutional): fast ORT checks."""
    from core.model import TINY_WIDTHS, build_random_model

    return build_random_model(TINY_WIDTHS, seed=0, roi=32)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("the shared folder is not present")
    return SHARED


@pytest.fixture(scope="session")
def phantom_model_path(shared_dir: Path) -> Path:
    """The shared half-width phantom model as fp32 ONNX, written once by the shared tool."""
    tool = shared_dir / "tools" / "phantom_model.py"
    if not tool.is_file():
        pytest.skip("shared tools/phantom_model.py is not present")
    out = TEST_CACHE / "phantom_w16_fp32.onnx"
    if not out.is_file():
        TEST_CACHE.mkdir(parents=True, exist_ok=True)
        tmp = TEST_CACHE / f".phantom_w16_fp32.{os.getpid()}.onnx"
        subprocess.run([sys.executable, str(tool), str(tmp)], check=True, capture_output=True)
        os.replace(tmp, out)  # other helpers may race for the same cache file
    return out


def official_names(model):  # type: ignore[no-untyped-def]
    """A copy of ``model`` named like the official export after NVIDIA's surgery: nodes numbered
    ``<Op>_<i>`` in graph order (Conv_0 ... ConvTranspose_36 ...) and every node output but ``output``
    named ``<node>__output`` (the names of NVIDIA's calibration cache): a second, differently named
    model of the same topology."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    rename: dict[str, str] = {}
    for i, n in enumerate(m.graph.node):
        n.name = f"{n.op_type}_{i}"
        for k, t in enumerate(n.output):
            if t != "output":
                rename[t] = n.output[k] = f"{n.name}__output"
    for n in m.graph.node:
        for k, t in enumerate(n.input):
            n.input[k] = rename.get(t, t)
    return m
