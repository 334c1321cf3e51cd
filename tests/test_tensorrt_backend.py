"""core.backends.tensorrt without TensorRT: the build plan, engine files and fingerprints, calibration
windows, the surgered graph it parses, and the builder calls (against a fake ``tensorrt`` module put in
sys.modules, i.e. mocked only at the library boundary). Nothing here runs TensorRT."""

from __future__ import annotations

import itertools
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from core import calibration_cache as cc
from core.backends import tensorrt as be
from core.benchmark import INT8_INPUT_AMAX_DEFAULT
from core.errors import BackendUnavailableError, BadInputError, UsageError
from plugins import tensorrt_plugins as tp

# --- plan ---------------------------------------------------------------------------------------


def test_int8_plan_is_nvidias() -> None:
    p = be.make_plan("int8", 8)
    assert p.input_dtype == "int8" and p.output_dtype == "float16" and p.io_format == "LINEAR"
    assert p.builder_flags == ("INT8", "FP16") and p.cleared_flags == ("TF32",)
    assert p.profile == ((1, 1, 128, 128, 128), (8, 1, 128, 128, 128), (8, 1, 128, 128, 128))
    assert p.input_amax == INT8_INPUT_AMAX_DEFAULT == 2.63979
    assert p.plugin_optimizations is True
    assert p.plugin_ops == (tp.CONV3X3, tp.CONV1X1, tp.PIXELSHUFFLE)  # IN stays TensorRT's built-in
    assert p.workspace_bytes == 8 << 30
    assert not p.calibrate


def test_calibration_plan_has_fp32_io() -> None:
    p = be.make_plan("int8", 4, calibrate=True)
    assert (p.input_dtype, p.output_dtype, p.input_amax) == ("float32", "float32", None)
    assert p.builder_flags == ("INT8", "FP16") and p.calibration_profile == (4, 1, 128, 128, 128)


def test_fp16_fp32_plans() -> None:
    h = be.make_plan("fp16", 2)
    assert h.builder_flags == ("FP16",) and h.cleared_flags == ("TF32",)
    assert (h.input_dtype, h.output_dtype) == ("float32", "float16")
    assert h.plugin_optimizations is False and h.plugin_ops == ()  # NVIDIA: native conv/deconv in FP16
    f = be.make_plan("fp32", 1, workspace_bytes=128 * 10**9)
    assert f.builder_flags == () and f.output_dtype == "float32" and f.workspace_bytes == 128 * 10**9
    assert f.plugin_optimizations is True
    t = be.make_plan("fp16", 2, instance_norm="triton")
    assert t.plugin_ops == (tp.INSTANCENORM,)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"precision": "bf16", "batch_size": 1}, "not one of int8, fp16, fp32"),
        ({"precision": "int8", "batch_size": 0}, "at least 1"),
        ({"precision": "fp16", "batch_size": 1, "calibrate": True}, "only int8"),
        ({"precision": "int8", "batch_size": 1, "instance_norm": "cudnn"}, "instance_norm"),
        ({"precision": "int8", "batch_size": 1, "workspace_bytes": 10}, "too small"),
    ],
)
def test_plan_refusals(kw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        be.make_plan(**kw)


def test_trt_version_header() -> None:
    assert be.trt_version_number("10.13.0.35") == 101300
    assert be.trt_version_number("8.6.0") == 80600  # NVIDIA's file says TRT-8600: 8.6 as 8*1000+6*100
    assert be.trt_cache_header("10.2.0.post1") == "TRT-100200-MinMaxCalibration"
    with pytest.raises(ValueError):
        be.trt_version_number("ten")


# --- fingerprints and engine files ---------------------------------------------------------------


def _fp(**over: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "model_sha256": "ab" * 32,
        "trt_version": "10.13.0.35",
        "gpu_name": "NVIDIA H200",
        "plugin_versions": tp.plugin_versions([tp.CONV3X3]),
        "calibration_sha256": "cd" * 32,
    }
    kw.update(over)
    plan = kw.pop("plan", be.make_plan("int8", 8))
    return be.fingerprint(plan, **kw)


def test_fingerprint_content_and_identity() -> None:
    fp = _fp()
    assert fp["precision"] == "int8" and fp["batch_size"] == 8 and fp["gpu"] == "NVIDIA H200"
    assert fp["tensorrt"] == "10.13.0.35" and fp["plugins"] == {"unet3d::CONV3D3X3X3C1K32_TRT": "1/reg1"}
    assert fp["plan"]["profile"] == [[1, 1, 128, 128, 128], [8, 1, 128, 128, 128], [8, 1, 128, 128, 128]]
    json.dumps(fp)  # plain JSON
    assert be.fingerprint_id(fp) == be.fingerprint_id(_fp())
    ids = {
        be.fingerprint_id(f)
        for f in (
            fp,
            _fp(gpu_name="NVIDIA H100"),
            _fp(trt_version="10.14.1.48"),
            _fp(model_sha256="ef" * 32),
            _fp(calibration_sha256=""),
            _fp(plugin_versions={}),
            _fp(plan=be.make_plan("int8", 4)),
            _fp(plan=be.make_plan("int8", 8, workspace_bytes=1 << 30)),
        )
    }
    assert len(ids) == 8


def test_engine_files_round_trip_and_refusals(tmp_path: Path) -> None:
    fp = _fp()
    assert be.find_engine(tmp_path, fp) is None
    path = be.save_engine(tmp_path, fp, b"ENGINE-BYTES", 12.34)
    assert path.name.startswith("3d-unet-int8-b8-") and path.suffix == ".plan"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["size"] == 12 and meta["build_seconds"] == 12.3 and meta["fingerprint"] == fp
    assert be.find_engine(tmp_path, fp) == b"ENGINE-BYTES"
    assert be.find_engine(tmp_path, _fp(gpu_name="other")) is None
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".plan"]  # no temp files left
    path.write_bytes(b"ENGINE-BYTEZ")  # same size, other bytes: not trusted
    assert be.find_engine(tmp_path, fp) is None
    path.with_suffix(".json").write_text("{not json")
    assert be.find_engine(tmp_path, fp) is None


# --- calibration windows ------------------------------------------------------------------------


def test_calibration_windows_are_the_grid_windows() -> None:
    rng = np.random.default_rng(3)
    vol = rng.random((1, 192, 128, 256), dtype=np.float32)
    wins = list(be.calibration_windows([vol]))
    # independent construction: origins 0, 64, ..., n-128 per axis, axis 0 outermost
    origins = list(itertools.product(range(0, 65, 64), [0], range(0, 129, 64)))
    assert len(wins) == len(origins) == 6
    for w, (d, h, x) in zip(wins, origins, strict=True):
        assert w.shape == (1, 128, 128, 128) and w.dtype == np.float32
        np.testing.assert_array_equal(w, vol[:, d : d + 128, h : h + 128, x : x + 128])
    # NVIDIA's bug, for contrast: the first 128^3 values of the flattened volume are a different block
    assert not np.array_equal(vol.reshape(-1)[: 128**3].reshape(1, 128, 128, 128), wins[0])
    with pytest.raises(BadInputError):
        list(be.calibration_windows([vol[0]]))


def test_select_and_batch() -> None:
    items = [np.full((1, 2, 2, 2), i, np.float32) for i in range(10)]
    picked = [int(a[0, 0, 0, 0]) for a in be.select_evenly(iter(items), 10, 4)]
    assert picked == [0, 3, 6, 9]
    assert len(list(be.select_evenly(iter(items), 10, None))) == 10
    batches = list(be.calibration_batches(iter(items[:5]), 2))
    assert [b.shape for b in batches] == [(2, 1, 2, 2, 2)] * 3
    assert [int(v) for v in batches[-1][:, 0, 0, 0, 0]] == [4, 4]  # padded with its own last window


# --- the graph TensorRT parses ------------------------------------------------------------------


def _attr(node: onnx.NodeProto, name: str) -> Any:
    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return None


def test_prepare_onnx_int8_and_fp16(tiny_model_32: onnx.ModelProto) -> None:
    m = onnx.load_from_string(be.prepare_onnx(tiny_model_32, be.make_plan("int8", 2)))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count(tp.CONV3X3) == 1 and ops.count(tp.PIXELSHUFFLE) == 5 and ops.count(tp.INSTANCENORM) == 22
    assert {n.domain for n in m.graph.node} == {""}  # NVIDIA's exact graph: no custom domain
    for n in m.graph.node:
        if n.op_type in (tp.CONV3X3, tp.CONV1X1, tp.PIXELSHUFFLE):
            assert (_attr(n, "plugin_namespace"), _attr(n, "plugin_version")) == ("unet3d", "1")
        if n.op_type == tp.INSTANCENORM:
            assert (_attr(n, "plugin_namespace"), _attr(n, "plugin_version")) == ("", "2")
    assert [o.name for o in m.graph.output] == ["output"] and m.graph.input[0].name == "input"
    h = onnx.load_from_string(be.prepare_onnx(tiny_model_32, be.make_plan("fp16", 2)))
    hops = [n.op_type for n in h.graph.node]
    assert tp.CONV3X3 not in hops and tp.PIXELSHUFFLE not in hops and "ConvTranspose" in hops
    assert hops.count(tp.INSTANCENORM) == 22


# --- the TensorRT boundary, faked ---------------------------------------------------------------


WRITTEN_CACHE = b"TRT-101300-MinMaxCalibration\ninput: 3caa46e8\nConv_0: 3e7408a0\n"


class FakeTensor:
    def __init__(self, name: str, calls: list[tuple[Any, ...]]) -> None:
        self.name, self._calls = name, calls
        self.shape: Any = None
        self.dtype: Any = None
        self.allowed_formats = -1

    def __setattr__(self, key: str, value: Any) -> None:
        if not key.startswith("_") and key != "name" and hasattr(self, "_calls"):
            self._calls.append(("set", self.name, key, value))
        object.__setattr__(self, key, value)

    def set_dynamic_range(self, lo: float, hi: float) -> bool:
        self._calls.append(("dynamic_range", self.name, lo, hi))
        return True


def fake_tensorrt(calls: list[tuple[Any, ...]], *, parse_ok: bool = True, build_ok: bool = True) -> Any:
    m = types.ModuleType("tensorrt")
    m.__version__ = "10.13.0.35"  # type: ignore[attr-defined]
    m.int8, m.float16, m.float32 = "INT8", "HALF", "FLOAT"  # type: ignore[attr-defined]
    m.TensorFormat = types.SimpleNamespace(LINEAR=0, CDHW32=12)  # type: ignore[attr-defined]
    m.BuilderFlag = types.SimpleNamespace(INT8="flag.INT8", FP16="flag.FP16", TF32="flag.TF32")  # type: ignore[attr-defined]
    m.MemoryPoolType = types.SimpleNamespace(WORKSPACE="pool.WORKSPACE")  # type: ignore[attr-defined]
    m.Dims = lambda shape: ("Dims", *shape)  # type: ignore[attr-defined]

    class Network:
        num_inputs = num_outputs = 1

        def __init__(self) -> None:
            self.inp, self.out = FakeTensor("input", calls), FakeTensor("output", calls)

        def get_input(self, i: int) -> FakeTensor:
            return self.inp

        def get_output(self, i: int) -> FakeTensor:
            return self.out

    class OnnxParser:
        num_errors = 2

        def __init__(self, network: Network, logger: Any) -> None:
            calls.append(("parser", logger))

        def parse(self, data: bytes) -> bool:
            calls.append(("parse", len(data)))
            return parse_ok

        def get_error(self, i: int) -> str:
            return f"node Conv_{i}: unsupported\nsecond line"

    class Profile:
        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            calls.append(("profile", name, lo, opt, hi))

    class TimingCache:
        def serialize(self) -> bytes:
            return b"TIMING-NEW"

    class Config:
        def __setattr__(self, key: str, value: Any) -> None:
            calls.append(("config", key, value))
            object.__setattr__(self, key, value)

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            calls.append(("pool", pool, size))

        def set_flag(self, f: Any) -> None:
            calls.append(("set_flag", f))

        def clear_flag(self, f: Any) -> None:
            calls.append(("clear_flag", f))

        def add_optimization_profile(self, p: Profile) -> int:
            calls.append(("add_profile",))
            return 0

        def set_calibration_profile(self, p: Profile) -> bool:
            calls.append(("calibration_profile",))
            return True

        def create_timing_cache(self, raw: bytes) -> Any:
            calls.append(("create_timing_cache", bytes(raw)))
            return "tc"

        def set_timing_cache(self, c: Any, ignore_mismatch: bool) -> bool:
            calls.append(("set_timing_cache", c, ignore_mismatch))
            return True

        def get_timing_cache(self) -> TimingCache:
            return TimingCache()

    class Builder:
        def __init__(self, logger: Any) -> None:
            calls.append(("builder", logger))

        def create_network(self, flags: int = 0) -> Network:
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            calls.append(("build",))
            cal = getattr(config, "int8_calibrator", None)
            if cal is not None and not isinstance(cal, str) and cal.read_calibration_cache() is None:
                # what TensorRT does without a cache: pull batches until [] then write its cache
                n = 0
                while cal.get_batch([network.inp.name]):
                    n += 1
                calls.append(("calibrated", n))
                cal.write_calibration_cache(WRITTEN_CACHE)
            return b"SERIALIZED" if build_ok else None

    class IInt8MinMaxCalibrator:
        def __init__(self) -> None:
            calls.append(("calibrator_init",))

    m.Builder, m.OnnxParser, m.IInt8MinMaxCalibrator = Builder, OnnxParser, IInt8MinMaxCalibrator  # type: ignore[attr-defined]
    return m


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    rec: list[tuple[Any, ...]] = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec))
    return rec


def test_int8_build_calls(calls: list[tuple[Any, ...]], tmp_path: Path) -> None:
    tc = tmp_path / "timing.cache"
    tc.write_bytes(b"TIMING-OLD")
    plan = be.make_plan("int8", 8)
    out = be.build_serialized(plan, b"onnx", logger="LOG", timing_cache=tc, calibrator="CAL")  # type: ignore[arg-type]
    assert out == b"SERIALIZED"
    assert ("create_network", 0) in calls and ("parse", 4) in calls
    assert ("set", "input", "shape", ("Dims", -1, 1, 128, 128, 128)) in calls
    assert ("set", "input", "dtype", "INT8") in calls
    assert ("set", "input", "allowed_formats", 1) in calls  # 1 << LINEAR
    assert ("dynamic_range", "input", -2.63979, 2.63979) in calls
    assert ("set", "output", "dtype", "HALF") in calls and ("set", "output", "allowed_formats", 1) in calls
    assert ("pool", "pool.WORKSPACE", 8 << 30) in calls
    flags = [c for c in calls if c[0] in ("set_flag", "clear_flag")]
    assert flags == [("set_flag", "flag.INT8"), ("set_flag", "flag.FP16"), ("clear_flag", "flag.TF32")]
    prof = [c for c in calls if c[0] == "profile"]
    assert prof == [
        (
            "profile",
            "input",
            ("Dims", 1, 1, 128, 128, 128),
            ("Dims", 8, 1, 128, 128, 128),
            ("Dims", 8, 1, 128, 128, 128),
        )
    ]
    assert ("calibration_profile",) not in calls
    assert ("create_timing_cache", b"TIMING-OLD") in calls and ("set_timing_cache", "tc", False) in calls
    assert ("config", "int8_calibrator", "CAL") in calls
    assert calls.index(("config", "int8_calibrator", "CAL")) < calls.index(("build",))
    assert tc.read_bytes() == b"TIMING-NEW"


def test_calibration_and_fp16_build_calls(calls: list[tuple[Any, ...]]) -> None:
    be.build_serialized(be.make_plan("int8", 2, calibrate=True), b"x", logger="L", calibrator="CAL")  # type: ignore[arg-type]
    assert ("set", "input", "dtype", "FLOAT") in calls and ("set", "output", "dtype", "FLOAT") in calls
    assert not [c for c in calls if c[0] == "dynamic_range"]
    assert ("calibration_profile",) in calls
    assert not [c for c in calls if c[0] in ("create_timing_cache",)]  # no timing cache asked for
    calls.clear()
    be.build_serialized(be.make_plan("fp16", 2), b"x", logger="L")  # type: ignore[arg-type]
    assert [c for c in calls if c[0] in ("set_flag", "clear_flag")] == [
        ("set_flag", "flag.FP16"),
        ("clear_flag", "flag.TF32"),
    ]
    assert ("set", "output", "dtype", "HALF") in calls
    assert not [c for c in calls if c[0] == "config"]  # no calibrator
    with pytest.raises(UsageError, match="calibrator"):
        be.build_serialized(be.make_plan("int8", 2), b"x", logger="L")  # type: ignore[arg-type]


def test_parse_and_build_failures_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt([], parse_ok=False))
    with pytest.raises(BadInputError) as info:
        be.build_serialized(be.make_plan("fp32", 1), b"x", logger="L", source="m.onnx")  # type: ignore[arg-type]
    assert (
        str(info.value)
        == "m.onnx: TensorRT cannot parse the surgered model: node Conv_0: unsupported second line (+1 more)"
    )
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt([], build_ok=False))
    with pytest.raises(BadInputError, match="failed to build"):
        be.build_serialized(be.make_plan("fp32", 1), b"x", logger="L")  # type: ignore[arg-type]


def test_calibrator_serves_a_cache(calls: list[tuple[Any, ...]]) -> None:
    cache = cc.CalibrationCache({"input": 2.6397919, "Conv_0": 30.27}, "percentile", "ab" * 32, {})
    text = cc.to_trt_text(cache, be.trt_cache_header("10.13.0.35")).encode()
    written: list[bytes] = []
    cal = be.make_calibrator(8, None, text, written.append)
    assert ("calibrator_init",) in calls
    assert cal.get_batch_size() == 8
    assert cal.read_calibration_cache() == text
    assert text.startswith(b"TRT-101300-MinMaxCalibration\ninput: 3caa46e8\n")
    assert cal.get_batch(["input"]) == []  # never asked with a cache; if asked: no data
    cal.write_calibration_cache(memoryview(b"TRT-101300-MinMaxCalibration\nx: 3f800000\n"))
    assert written == [b"TRT-101300-MinMaxCalibration\nx: 3f800000\n"]
    assert cc.from_trt_text(written[0].decode()).amax == {"x": 127.0}


# --- availability -------------------------------------------------------------------------------


def test_unavailable_without_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    # tensorrt-stubs alone makes `import tensorrt` give an empty namespace package: still "not installed"
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    av = be.BACKEND.availability()
    assert (av.ok, av.reason) == (False, "tensorrt is not installed")
    with pytest.raises(BackendUnavailableError) as info:
        be.BACKEND.load(Path("model.onnx"), precision="int8", batch_size=8)
    assert str(info.value) == "backend tensorrt is unavailable: tensorrt is not installed"
    assert info.value.exit_code == 3
    with pytest.raises(UsageError, match="bf16"):
        be.BACKEND.load(Path("model.onnx"), precision="bf16")


def test_registry_reports_it() -> None:
    from core.backends import availability, get_backend

    assert get_backend("tensorrt") is be.BACKEND
    if be.import_tensorrt() is None:
        assert availability("tensorrt").reason == "tensorrt is not installed"


def test_prepare_onnx_on_the_shared_phantom_model(phantom_model_path: Path) -> None:
    """The half-width phantom model (16 channels at full resolution): every plugin node decodes, with
    the real widths (first conv K=16, last conv C=16)."""
    m = onnx.load_from_string(be.prepare_onnx(str(phantom_model_path), be.make_plan("int8", 8)))
    seen: dict[str, int] = {}
    for n in m.graph.node:
        if n.op_type in tp.SPECS:
            a = tp.attrs_from_onnx(n)
            seen[n.op_type] = seen.get(n.op_type, 0) + 1
            if n.op_type == tp.CONV3X3:
                assert tp.weights_3x3x3(a).shape == (16, 1, 3, 3, 3)
            if n.op_type == tp.CONV1X1:
                assert a["inputChannels"] == 16 and tp.weights_1x1x1(a).shape == (3, 16)
    assert seen == {tp.CONV3X3: 1, tp.CONV1X1: 1, tp.PIXELSHUFFLE: 5, tp.INSTANCENORM: 22}
