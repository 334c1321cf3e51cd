"""core.backends.tensorrt.TrtEngine's run path on CPU with a fake TensorRT runtime.

The fake execution context does what a real one does with the addresses it is given: it reads the
input from the bound input address and writes logits to the bound output address (through ctypes on
host memory). That checks the engine's plumbing (set_input_shape / set_tensor_address /
execute_async_v3, int8 upload with the one quantizer, the output view for short batches, and segment
through core.sliding_window.segment_torch) against the numpy sliding window. No TensorRT runs here."""

from __future__ import annotations

import ctypes
import sys
import types
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.backends import tensorrt as be  # noqa: E402
from core.benchmark import INT8_INPUT_AMAX_DEFAULT  # noqa: E402
from core.preprocess import quantize_int8  # noqa: E402
from core.sliding_window import segment  # noqa: E402

ROI = 128


def fake_logits(xq: np.ndarray) -> np.ndarray:
    """(n, 1, 128^3) int8 -> (n, 3, 128^3) logits that are exact in fp16: a smooth 'model'."""
    x = xq.astype(np.float32)
    return np.concatenate([np.full_like(x, 10.0), x, -x - 20.0], axis=1)


def _view(ptr: int, n: int, ctype: Any) -> np.ndarray:
    return np.ctypeslib.as_array((ctype * n).from_address(ptr))


def fake_runtime_module(calls: list[tuple[Any, ...]]) -> Any:
    m = types.ModuleType("tensorrt")
    m.int8, m.float16, m.float32 = "INT8", "HALF", "FLOAT"  # type: ignore[attr-defined]
    m.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")  # type: ignore[attr-defined]

    class Context:
        def __init__(self) -> None:
            self.shape: tuple[int, ...] = ()
            self.addr: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            calls.append(("shape", name, tuple(shape)))
            self.shape = tuple(shape)
            return True

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream: int) -> bool:
            n = self.shape[0]
            size = n * ROI**3
            x = _view(self.addr["input"], size, ctypes.c_int8).reshape(n, 1, ROI, ROI, ROI)
            out = _view(self.addr["output"], 3 * size, ctypes.c_uint16).view(np.float16)
            out[:] = fake_logits(x).astype(np.float16).reshape(-1)
            calls.append(("execute", n, stream))
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ("input", "output")[i]

        def get_tensor_mode(self, name: str) -> str:
            return "in" if name == "input" else "out"

        def get_tensor_dtype(self, name: str) -> str:
            return "INT8" if name == "input" else "HALF"

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            return Engine() if data == b"ENGINE" else None

    m.Runtime = Runtime  # type: ignore[attr-defined]
    return m


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    rec: list[tuple[Any, ...]] = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_runtime_module(rec))
    return rec


def _engine(batch: int = 2) -> be.TrtEngine:
    return be.TrtEngine(b"ENGINE", precision="int8", batch_size=batch, device="cpu", logger=None)  # type: ignore[arg-type]


def test_io_discovery_and_infer(calls: list[tuple[Any, ...]]) -> None:
    eng = _engine(2)
    assert (eng.input_name, eng.output_name) == ("input", "output")
    assert (eng.input_dtype, eng.output_dtype) == (torch.int8, torch.float16)
    rng = np.random.default_rng(0)
    w = rng.uniform(-2.2, 2.6, (1, 1, ROI, ROI, ROI)).astype(np.float32)
    got = eng.infer(w)
    assert got.shape == (1, 3, ROI, ROI, ROI) and got.dtype == np.float32
    want = fake_logits(quantize_int8(w, INT8_INPUT_AMAX_DEFAULT))  # the one quantizer, the engine's scale
    np.testing.assert_array_equal(got, want)
    assert calls == [("shape", "input", (1, 1, ROI, ROI, ROI)), ("execute", 1, 0)]
    with pytest.raises(Exception, match="expected"):
        eng.infer(np.zeros((3, 1, ROI, ROI, ROI), np.float32))  # more than the batch size
    eng.close()
    with pytest.raises(Exception, match="closed"):
        eng.run(torch.zeros((1, 1, ROI, ROI, ROI), dtype=torch.int8))


def test_bad_engine_bytes(calls: list[tuple[Any, ...]]) -> None:
    with pytest.raises(Exception, match="cannot deserialize"):
        be.TrtEngine(b"junk", precision="int8", batch_size=1, device="cpu", logger=None)  # type: ignore[arg-type]


@pytest.mark.slow
def test_segment_matches_numpy_sliding_window(calls: list[tuple[Any, ...]]) -> None:
    """3 windows with batch 2 (a short last batch): labels equal the numpy path's, byte for byte."""
    rng = np.random.default_rng(1)
    vol = rng.uniform(-2.2, 2.6, (1, 256, 128, 128)).astype(np.float32)
    eng = _engine(2)
    labels = eng.segment(vol)

    class NumpyEngine:
        name, precision, batch_size = "ref", "int8", 2

        def infer(self, windows: np.ndarray) -> np.ndarray:
            return fake_logits(windows).astype(np.float16).astype(np.float32)

    want = segment(quantize_int8(vol, INT8_INPUT_AMAX_DEFAULT), NumpyEngine(), 2)
    assert labels.shape == (256, 128, 128) and labels.dtype == np.uint8
    assert [c for c in calls if c[0] == "execute"] == [("execute", 2, 0), ("execute", 1, 0)]
    np.testing.assert_array_equal(labels, want)
    assert set(np.unique(labels)) <= {0, 1, 2} and len(np.unique(labels)) >= 2
