"""core.backends.ort on a micro random model (widths 2): outputs equal a plain ONNX Runtime session,
batching and static-batch splitting, the onnx-form graph, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from core.backends import availability, get_backend
from core.errors import BadInputError, MissingInputError, UsageError
from core.model import build_random_model, save_model
from core.surgery import surgery

ort = pytest.importorskip("onnxruntime")
from core.backends.ort import BACKEND  # noqa: E402

MICRO = (2, 2, 2, 2, 2)  # ~0.7 s per 128^3 window on one core


@pytest.fixture(scope="module")
def micro_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(build_random_model(MICRO, seed=7), tmp_path_factory.mktemp("ort") / "micro.onnx")


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((2, 1, 128, 128, 128)).astype(np.float32)


@pytest.fixture(scope="module")
def batch_out(micro_path: Path, windows: np.ndarray) -> np.ndarray:
    engine = BACKEND.load(micro_path, batch_size=2)
    try:
        return engine.infer(windows)
    finally:
        engine.close()


def test_registry_and_availability() -> None:
    assert get_backend("ort") is BACKEND
    assert BACKEND.name == "ort" and BACKEND.precisions == ("fp32",)
    av = availability("ort")
    assert av.ok and av.reason == "" and av.devices[0].startswith("cpu")


def test_infer_equals_plain_session(micro_path: Path, windows: np.ndarray, batch_out: np.ndarray) -> None:
    assert batch_out.shape == (2, 3, 128, 128, 128) and batch_out.dtype == np.float32
    sess = ort.InferenceSession(str(micro_path), providers=["CPUExecutionProvider"])
    (ref,) = sess.run(["output"], {"input": windows[1:2]})
    np.testing.assert_allclose(batch_out[1:2], ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(batch_out[0], batch_out[1])  # the two windows really differ


def test_engine_attributes(micro_path: Path) -> None:
    engine = BACKEND.load(micro_path, batch_size=3, threads=1)
    assert (engine.name, engine.precision, engine.batch_size, engine.graph) == ("ort", "fp32", 3, "original")
    assert engine.threads == 1
    default = BACKEND.load(micro_path)
    assert default.batch_size == 1 and default.threads >= 1
    engine.close()
    with pytest.raises(UsageError, match="closed"):
        engine.infer(np.zeros((1, 1, 128, 128, 128), np.float32))


def test_static_batch_model_is_fed_window_by_window(
    tmp_path: Path, windows: np.ndarray, batch_out: np.ndarray
) -> None:
    static = save_model(build_random_model(MICRO, seed=7, dynamic_batch=False), tmp_path / "static.onnx")
    engine = BACKEND.load(static, batch_size=2)
    np.testing.assert_allclose(engine.infer(windows), batch_out, rtol=1e-5, atol=1e-5)


def test_onnx_form_graph(micro_path: Path, windows: np.ndarray, batch_out: np.ndarray) -> None:
    engine = BACKEND.load(micro_path, batch_size=1, graph="onnx")
    assert engine.graph == "onnx"
    out = engine.infer(windows[:1])
    np.testing.assert_allclose(out, batch_out[:1], rtol=1e-4, atol=1e-4 * float(np.abs(batch_out).max()))


def test_errors(micro_path: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="precision=int8"):
        BACKEND.load(micro_path, precision="int8")
    with pytest.raises(UsageError, match="graph"):
        BACKEND.load(micro_path, graph="plugin")
    with pytest.raises(UsageError, match="at least 1"):
        BACKEND.load(micro_path, batch_size=0)
    with pytest.raises(MissingInputError, match="nothere"):
        BACKEND.load(tmp_path / "nothere.onnx")
    plugin = save_model(surgery(onnx.load(str(micro_path)), "plugin"), tmp_path / "plugin.onnx")
    with pytest.raises(BadInputError, match="plugin ops"):
        BACKEND.load(plugin)
    engine = BACKEND.load(micro_path, batch_size=1)
    with pytest.raises(BadInputError, match="shape"):
        engine.infer(np.zeros((1, 1, 64, 64, 64), np.float32))
    with pytest.raises(BadInputError, match="batch size is 1"):
        engine.infer(np.zeros((2, 1, 128, 128, 128), np.float32))
    with pytest.raises(BadInputError, match="int8"):
        engine.infer(np.zeros((1, 1, 128, 128, 128), np.int8))


@pytest.mark.slow
def test_segment_through_ort_matches_reference(micro_path: Path) -> None:
    """core.sliding_window.segment driving the ORT engine equals the reference's result / norm_map."""
    from scipy.signal import windows as sw

    from core.sliding_window import segment

    vol = np.random.default_rng(9).standard_normal((1, 128, 128, 192)).astype(np.float32)
    engine = BACKEND.load(micro_path, batch_size=2)
    got = segment(vol, engine, 2)
    g1 = sw.gaussian(128, std=16)
    g = np.cbrt(np.einsum("i,j,k->ijk", g1, g1, g1))
    g /= g.max()
    result = np.zeros((3, 128, 128, 192))
    norm = np.zeros((3, 128, 128, 192))
    for w in (0, 64):
        logits = engine.infer(vol[None, :, :, :, w : w + 128])[0]
        result[..., w : w + 128] += logits * g
        norm[..., w : w + 128] += g
    ref = np.argmax(result / norm, axis=0)
    assert (got != ref).sum() <= 5
