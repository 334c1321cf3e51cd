"""TensorRTBackend.load orchestration with a fake tensorrt (builder + runtime) on CPU: cache -> build ->
engine files -> reuse; calibration on real windows when there is no cache. No TensorRT runs here."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from core import calibration_cache as cc
from core.backends import tensorrt as be
from core.backends.base import Availability
from core.errors import BadInputError
from core.fsio import sha256_file
from core.jobs import LogLine, Phase, Progress
from core.workspace import Workspace
from plugins import tensorrt_plugins as tp
from tests.test_tensorrt_backend import fake_tensorrt
from tests.test_tensorrt_engine import fake_runtime_module


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    calls: list[tuple[Any, ...]] = []
    m = fake_tensorrt(calls)
    rt = fake_runtime_module(calls)

    class Runtime(rt.Runtime):  # type: ignore[name-defined,misc]
        def deserialize_cuda_engine(self, data: bytes) -> Any:
            calls.append(("deserialize", data))
            return super().deserialize_cuda_engine(b"ENGINE")

    m.Runtime, m.TensorIOMode = Runtime, rt.TensorIOMode
    m.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, sev: None})
    m.init_libnvinfer_plugins = lambda logger, ns: calls.append(("init_plugins", ns)) or True
    monkeypatch.setitem(sys.modules, "tensorrt", m)
    monkeypatch.setattr(be.TensorRTBackend, "availability", lambda self: Availability(True, "", ("cpu",)))
    monkeypatch.setattr(tp, "register_plugins", lambda: calls.append(("register_plugins",)))
    events: list[Any] = []
    return {
        "calls": calls,
        "ws": Workspace.resolve(tmp_path, env={}),
        "events": events,
        "report": events.append,
    }


def _builds(calls: list[tuple[Any, ...]]) -> int:
    return sum(1 for c in calls if c[0] == "build")


def test_load_with_cache_builds_once_then_reuses(env: dict[str, Any], tiny_model_path: Path) -> None:
    calls, ws = env["calls"], env["ws"]
    cache = cc.CalibrationCache(
        {"input": 2.6397919, "Conv_0": 3.0}, "minmax", sha256_file(tiny_model_path), {}
    )
    cpath = cc.save(cache, ws.calibration_cache_path)
    kw = {"precision": "int8", "batch_size": 2, "device": "cpu", "calibration_cache": cpath, "workspace": ws}
    eng = be.BACKEND.load(tiny_model_path, report=env["report"], **kw)
    assert _builds(calls) == 1 and ("init_plugins", "") in calls and ("register_plugins",) in calls
    assert ("dynamic_range", "input", -2.63979, 2.63979) in calls
    # the calibrator served our cache as TensorRT text with this TensorRT's header
    (cal,) = [c[2] for c in calls if c[:2] == ("config", "int8_calibrator")]
    assert cal.read_calibration_cache() == cc.to_trt_text(cache, "TRT-101300-MinMaxCalibration").encode()
    names = sorted(p.name for p in ws.engine_dir.iterdir())
    assert names[0].startswith("3d-unet-int8-b2-") and names[0].endswith(".json")
    assert names[1].endswith(".plan") and names[2] == "timing.cache"
    meta = json.loads((ws.engine_dir / names[0]).read_text())
    assert meta["fingerprint"]["model_sha256"] == sha256_file(tiny_model_path)
    assert meta["fingerprint"]["gpu"] == "cpu" and meta["fingerprint"]["tensorrt"] == "10.13.0.35"
    assert any(isinstance(e, Phase) and e.name == "building" for e in env["events"])
    assert eng.model_sha256 == sha256_file(tiny_model_path) and str(eng.input_dtype) == "torch.int8"
    out = eng.infer(np.zeros((1, 1, 128, 128, 128), np.float32))
    assert out.shape == (1, 3, 128, 128, 128)

    be.BACKEND.load(tiny_model_path, report=env["report"], **kw)
    assert _builds(calls) == 1  # reused
    assert any(isinstance(e, LogLine) and "engine reused" in e.text for e in env["events"])
    be.BACKEND.load(tiny_model_path, rebuild=True, **kw)
    assert _builds(calls) == 2
    # another cache -> another fingerprint -> a new engine
    cache.amax["Conv_0"] = 4.0
    cc.save(cache, cpath)
    be.BACKEND.load(tiny_model_path, **kw)
    assert _builds(calls) == 3 and len(list(ws.engine_dir.glob("*.plan"))) == 2


def test_cache_for_another_model_refused(env: dict[str, Any], tiny_model_path: Path) -> None:
    ws = env["ws"]
    cpath = cc.save(cc.CalibrationCache({"input": 2.64}, "minmax", "0" * 64, {}), ws.calibration_cache_path)
    with pytest.raises(BadInputError, match="recalibrate"):
        be.BACKEND.load(
            tiny_model_path, precision="int8", device="cpu", calibration_cache=cpath, workspace=ws
        )
    assert _builds(env["calls"]) == 0


def test_input_amax_of_a_cache_is_not_used(env: dict[str, Any], tiny_model_path: Path) -> None:
    ws = env["ws"]
    cache = cc.CalibrationCache({"input": 2.2, "Conv_0": 3.0}, "percentile", sha256_file(tiny_model_path), {})
    cpath = cc.save(cache, ws.calibration_cache_path)
    be.BACKEND.load(
        tiny_model_path,
        precision="int8",
        device="cpu",
        calibration_cache=cpath,
        workspace=ws,
        report=env["report"],
    )
    assert ("dynamic_range", "input", -2.63979, 2.63979) in env["calls"]
    assert any(isinstance(e, LogLine) and e.level == "warning" and "2.20000" in e.text for e in env["events"])


def test_fp16_needs_no_cache(env: dict[str, Any], tiny_model_path: Path) -> None:
    be.BACKEND.load(tiny_model_path, precision="fp16", batch_size=4, device="cpu", workspace=env["ws"])
    calls = env["calls"]
    assert _builds(calls) == 1 and not [c for c in calls if c[:2] == ("config", "int8_calibrator")]
    assert ("set", "output", "dtype", "HALF") in calls


def test_int8_without_cache_calibrates_on_real_windows(
    env: dict[str, Any], tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.cases
    import core.preprocess

    ws, calls = env["ws"], env["calls"]
    shapes = {"case_a": [1, 128, 128, 192], "case_b": [1, 192, 128, 128]}  # 2 + 2 windows
    loaded: list[str] = []

    def load_image(ws_: Workspace, set_name: str, case: str, dtype: str = "fp32") -> np.ndarray:
        assert (set_name, dtype) == ("calibration", "fp32")
        loaded.append(case)
        return np.full(shapes[case], len(loaded), np.float32)

    monkeypatch.setattr(core.cases, "case_lists", lambda ws_: types.SimpleNamespace(calibration=list(shapes)))
    monkeypatch.setattr(core.preprocess, "load_index", lambda ws_, s: {"image_shape": shapes})
    monkeypatch.setattr(core.preprocess, "load_image", load_image)
    be.BACKEND.load(
        tiny_model_path, precision="int8", batch_size=3, device="cpu", workspace=ws, report=env["report"]
    )
    assert loaded == ["case_a", "case_b"]
    # 4 windows in batches of 3 -> 2 batches (the last padded); then the real build
    assert ("calibrated", 2) in calls and _builds(calls) == 2
    assert [e.done for e in env["events"] if isinstance(e, Progress)] == [1, 2]
    saved = cc.load(ws.calibration_cache_path)
    assert saved.model_sha256 == sha256_file(tiny_model_path) and saved.method == "minmax"
    assert saved.meta["windows"] == 4 and saved.meta["cases"] == 2 and saved.meta["tool"] == "tensorrt"
    assert math.isclose(saved.amax["input"], 2.6397919, rel_tol=1e-6)
    text = (ws.calibration_cache_path.parent / "calibrator.cache").read_text()
    assert text.splitlines()[:2] == ["TRT-101300-MinMaxCalibration", "input: 3caa46e8"]
    # the calibration build had FP32 I/O and the calibration profile; the real one INT8 in
    assert ("calibration_profile",) in calls
    assert ("set", "input", "dtype", "FLOAT") in calls and ("set", "input", "dtype", "INT8") in calls
