"""TensorRT 10 backend: NVIDIA's engine build (section 8 of the benchmark description) and a GPU-resident
sliding window, through the TensorRT Python API.

THIS BACKEND HAS NEVER BEEN EXECUTED. TensorRT cannot be installed on the machines this project is
developed on. The module is type-checked with mypy against tensorrt-stubs 10.13
(``python -m tests.test_mypy``), and its TensorRT-free logic (the build plan, fingerprints,
engine files, calibration windows and caches) is unit-tested, with the builder calls checked against a
fake ``tensorrt`` module (tests/test_tensorrt_backend.py). Expect the first run on a machine with
TensorRT 10 to find problems; the report of that run belongs in docs/PERFORMANCE.md.

What it does (NV ``builder.py`` / ``UnetEngineBuilder``):

- graph: the one surgery (``core.surgery.surgery(model, form="plugin", plugin_domain="")``, NVIDIA's exact
  graph) -> the nodes our Python plugins serve are pointed at namespace ``unet3d``
  (``plugins.tensorrt_plugins.retarget_namespace``); InstanceNormalization_TRT stays TensorRT's built-in
  plugin v2 (fused INT8 CDHW32 kernels) unless ``instance_norm="triton"``;
- network: input ``[-1, 1, 128, 128, 128]`` INT8 LINEAR with its dynamic range set explicitly (int8),
  output FP16 LINEAR (int8, fp16) or FP32 (fp32, and the calibration build);
- config: INT8 + FP16 (int8), FP16 (fp16); TF32 cleared always; one optimization profile min 1,
  opt = max = ``gpu_batch_size``; workspace pool limit (8 GiB default, NVIDIA's H200 configs use 128e9 B);
  a timing cache file under the engine folder; no DLA, no CUDA graphs;
- INT8 ranges: TensorRT's implicit quantization with a ``trt.IInt8MinMaxCalibrator`` that either serves an
  existing cache (ours in JSON, or NVIDIA-style text, via ``core.calibration_cache``) or calibrates on REAL
  128^3 windows of the calibration set cut with ``core.sliding_window.window_grid`` (NVIDIA's calibrator
  fed whole volumes, so TensorRT saw only each volume's first 2,097,152 values). Calibration is a separate
  build with FP32 I/O; the cache it writes is saved as our JSON (``ws.calibration_cache_path``) and as
  TensorRT text (``calibrator.cache`` beside it). Calibrators and dynamic ranges are deprecated since
  TensorRT 10.1 (explicit Q/DQ is the successor) but still work in 10.x;
- the engine is serialized to ``ws.engine_dir`` with a fingerprint JSON (model sha256, TensorRT version,
  GPU, precision, batch, plugin versions, calibration-cache hash, build plan) and reused when it matches;
- run: :class:`TrtEngine` binds torch device buffers with ``set_tensor_address`` and runs
  ``execute_async_v3`` on torch's current stream; ``segment`` keeps the volume on the GPU and stitches
  through ``core.sliding_window.segment_torch`` (same grid, patches and tie rule as every backend).

The engine's input range is the amax the int8 data was quantized with (``INT8_INPUT_AMAX_DEFAULT``, as
in NVIDIA's preprocessing), whatever a calibration cache says about ``input``: the bytes in the
preprocessed int8 volumes only mean something under that scale.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core import calibration_cache as cc
from core.backends.base import Availability
from core.benchmark import INT8_INPUT_AMAX_DEFAULT, NUM_CLASSES, ROI
from core.errors import BackendUnavailableError, BadInputError, MissingInputError, UsageError
from core.fsio import sha256_bytes
from core.fsio import write_bytes_atomic as atomic_write_bytes
from core.jobs import NEVER, CancelToken, LogLine, Phase, Progress, Reporter, null_reporter
from core.sliding_window import window_grid
from core.workspace import Workspace

if TYPE_CHECKING:
    import tensorrt as trt
    import torch

NAME = "tensorrt"
PRECISIONS = ("int8", "fp16", "fp32")
DEFAULT_WORKSPACE_BYTES = 8 << 30
ENGINE_FORMAT = 1  # bump when the engine file / fingerprint layout changes
TIMING_CACHE_NAME = "timing.cache"
TRT_CACHE_NAME = "calibrator.cache"
INSTANCE_NORMS = ("builtin", "triton")

# --- the build plan (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class BuildPlan:
    """Every network and builder choice, as plain data (what the fingerprint records)."""

    precision: str  # "int8" | "fp16" | "fp32"
    batch_size: int  # opt = max batch of the profile
    input_name: str
    output_name: str
    input_dtype: str  # "int8" | "float32"
    output_dtype: str  # "float16" | "float32"
    io_format: str  # TensorFormat of input and output
    builder_flags: tuple[str, ...]  # BuilderFlag names to set
    cleared_flags: tuple[str, ...]  # BuilderFlag names to clear
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # min, opt, max input shapes
    workspace_bytes: int
    plugin_optimizations: bool  # NVIDIA: INT8 and FP32 builds replace first/last conv and deconvs
    plugin_ops: tuple[str, ...]  # surgered ops served by plugins.tensorrt_plugins (namespace unet3d)
    input_amax: float | None  # explicit input dynamic range (INT8 input only)
    calibrate: bool  # a calibration build: FP32 I/O, a calibrator fed with real windows
    instance_norm: str  # "builtin" (TensorRT's plugin v2) | "triton" (ours)

    @property
    def calibration_profile(self) -> tuple[int, ...]:
        return (self.batch_size, 1, ROI, ROI, ROI)


def make_plan(
    precision: str,
    batch_size: int,
    *,
    calibrate: bool = False,
    input_amax: float = INT8_INPUT_AMAX_DEFAULT,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    instance_norm: str = "builtin",
    input_name: str = "input",
    output_name: str = "output",
) -> BuildPlan:
    """NVIDIA's choices for ``precision`` (see the module docstring)."""
    from plugins.tensorrt_plugins import CONV1X1, CONV3X3, INSTANCENORM, PIXELSHUFFLE

    if precision not in PRECISIONS:
        raise UsageError(f"--precision={precision} is not one of {', '.join(PRECISIONS)} (tensorrt)")
    if batch_size < 1:
        raise UsageError(f"--gpu_batch_size={batch_size} must be at least 1")
    if instance_norm not in INSTANCE_NORMS:
        raise UsageError(f"instance_norm={instance_norm} is not one of {', '.join(INSTANCE_NORMS)}")
    if calibrate and precision != "int8":
        raise UsageError("only int8 builds calibrate")
    if workspace_bytes < 1 << 20:
        raise UsageError(f"workspace of {workspace_bytes} bytes is too small")
    int8 = precision == "int8"
    plugin_opt = precision in ("int8", "fp32")  # NVIDIA's enable_plugin_optimizations
    ops: tuple[str, ...] = (CONV3X3, CONV1X1, PIXELSHUFFLE) if plugin_opt else ()
    if instance_norm == "triton":
        ops += (INSTANCENORM,)
    flags = {"int8": ("INT8", "FP16"), "fp16": ("FP16",), "fp32": ()}[precision]
    int8_input = int8 and not calibrate
    output = "float16" if precision in ("int8", "fp16") and not calibrate else "float32"
    shape = (1, ROI, ROI, ROI)
    return BuildPlan(
        precision=precision,
        batch_size=batch_size,
        input_name=input_name,
        output_name=output_name,
        input_dtype="int8" if int8_input else "float32",
        output_dtype=output,
        io_format="LINEAR",
        builder_flags=flags,
        cleared_flags=("TF32",),
        profile=((1, *shape), (batch_size, *shape), (batch_size, *shape)),
        workspace_bytes=int(workspace_bytes),
        plugin_optimizations=plugin_opt,
        plugin_ops=ops,
        input_amax=float(input_amax) if int8_input else None,
        calibrate=calibrate,
        instance_norm=instance_norm,
    )


def prepare_onnx(model: Any, plan: BuildPlan) -> bytes:
    """The surgered model (NVIDIA's exact graph, our plugins' namespace) as bytes for ``OnnxParser``."""
    from core.surgery import surgery
    from plugins.tensorrt_plugins import retarget_namespace

    m = surgery(model, form="plugin", plugin_optimizations=plan.plugin_optimizations, plugin_domain="")
    retarget_namespace(m, plan.plugin_ops)
    return bytes(m.SerializeToString())


# --- fingerprints and engine files (pure) -------------------------------------------------------


def trt_version_number(version: str) -> int:
    """ "10.13.0.35" -> 101300 (major*10000 + minor*100 + patch), the number in cache headers."""
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"not a TensorRT version: {version!r}")
    major, minor, patch = (int(g) for g in m.groups())
    return major * 10000 + minor * 100 + patch


def trt_cache_header(version: str) -> str:
    return f"TRT-{trt_version_number(version)}-MinMaxCalibration"


def fingerprint(
    plan: BuildPlan,
    *,
    model_sha256: str,
    trt_version: str,
    gpu_name: str,
    plugin_versions: dict[str, str],
    calibration_sha256: str = "",
) -> dict[str, Any]:
    """Everything an engine depends on. An engine is reused only when its stored fingerprint is equal."""
    fp = {
        "format": ENGINE_FORMAT,
        "model_sha256": model_sha256,
        "tensorrt": trt_version,
        "gpu": gpu_name,
        "precision": plan.precision,
        "batch_size": plan.batch_size,
        "plugins": dict(sorted(plugin_versions.items())),
        "calibration_sha256": calibration_sha256,
        "plan": asdict(plan),
    }
    # as JSON stores it (tuples become lists), so a fingerprint read back from disk compares equal
    return dict(json.loads(json.dumps(fp)))


def fingerprint_id(fp: dict[str, Any]) -> str:
    return sha256_bytes(json.dumps(fp, sort_keys=True).encode())[:16]


def engine_paths(engine_dir: Path, fp: dict[str, Any]) -> tuple[Path, Path]:
    """(engine file, fingerprint JSON) for ``fp``; the name shows precision and batch at a glance."""
    stem = f"3d-unet-{fp['precision']}-b{fp['batch_size']}-{fingerprint_id(fp)}"
    return engine_dir / f"{stem}.plan", engine_dir / f"{stem}.json"


def find_engine(engine_dir: Path, fp: dict[str, Any]) -> bytes | None:
    """The stored engine for ``fp`` when its JSON matches exactly and its bytes hash as recorded."""
    engine, meta = engine_paths(engine_dir, fp)
    try:
        doc = json.loads(meta.read_text())
        data = engine.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("fingerprint") != fp:
        return None
    if doc.get("size") != len(data) or doc.get("sha256") != sha256_bytes(data):
        return None  # a torn or foreign file: rebuild
    return data


def save_engine(engine_dir: Path, fp: dict[str, Any], data: bytes, build_seconds: float = 0.0) -> Path:
    """Write the engine, then its fingerprint JSON (the JSON is what makes the engine count)."""
    engine, meta = engine_paths(engine_dir, fp)
    atomic_write_bytes(engine, data)
    doc = {
        "fingerprint": fp,
        "size": len(data),
        "sha256": sha256_bytes(data),
        "build_seconds": round(build_seconds, 1),
    }
    atomic_write_bytes(meta, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
    return engine


# --- calibration data (pure) --------------------------------------------------------------------


def calibration_windows(volumes: Iterable[np.ndarray], cancel: CancelToken = NEVER) -> Iterator[np.ndarray]:
    """Real 128^3 windows, (1, 128, 128, 128) float32, of each (1, D, H, W) volume, in the grid order of
    ``core.sliding_window.window_grid`` (the windows inference sees)."""
    for vol in volumes:
        cancel.check()
        if vol.ndim != 4 or vol.shape[0] != 1:
            raise BadInputError(f"calibration volume has shape {vol.shape}, expected (1, D, H, W)")
        for w in window_grid(vol.shape[1:]):
            yield np.ascontiguousarray(vol[(slice(None), *w.slices)], dtype=np.float32)


def select_evenly(items: Iterable[np.ndarray], total: int, keep: int | None) -> Iterator[np.ndarray]:
    """Every item when ``keep`` is None or >= total, else ``keep`` items evenly spread over ``total``."""
    if keep is None or keep >= total:
        yield from items
        return
    if keep < 1:
        raise UsageError(f"calibration window count must be at least 1, got {keep}")
    wanted = {int(i) for i in np.linspace(0, total - 1, keep).round()}
    for i, item in enumerate(items):
        if i in wanted:
            yield item


def calibration_batches(windows: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """(batch_size, 1, 128, 128, 128) float32 batches. The calibration profile is static, so a short last
    batch repeats its last window: a repeated window cannot change a min/max range."""
    batch: list[np.ndarray] = []
    for w in windows:
        batch.append(w)
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        batch += [batch[-1]] * (batch_size - len(batch))
        yield np.stack(batch)


# --- TensorRT boundary --------------------------------------------------------------------------


def import_tensorrt() -> Any | None:
    """The tensorrt module, or None. tensorrt-stubs alone makes ``import tensorrt`` succeed with an empty
    namespace package (its folder holds only .pyi files), so a module without ``Builder`` counts as absent."""
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt if hasattr(tensorrt, "Builder") else None


def _require_trt() -> Any:
    trt = import_tensorrt()
    if trt is None:
        raise BackendUnavailableError("backend tensorrt is unavailable: tensorrt is not installed")
    return trt


def _dtype(name: str) -> trt.DataType:
    import tensorrt as trt

    return {"int8": trt.int8, "float16": trt.float16, "float32": trt.float32}[name]


def _linear_only(fmt: str) -> int:
    import tensorrt as trt

    return 1 << int(getattr(trt.TensorFormat, fmt))


def configure_network(network: trt.INetworkDefinition, plan: BuildPlan) -> None:
    """I/O types, formats and the input's dynamic range, on a parsed network."""
    import tensorrt as trt

    if network.num_inputs != 1 or network.num_outputs != 1:
        raise BadInputError(
            f"the surgered model has {network.num_inputs} inputs / {network.num_outputs} outputs, "
            "expected 1 / 1"
        )
    inp = network.get_input(0)
    out = network.get_output(0)
    if inp.name != plan.input_name or out.name != plan.output_name:
        raise BadInputError(
            f"network I/O is {inp.name!r} -> {out.name!r}, "
            f"expected {plan.input_name!r} -> {plan.output_name!r}"
        )
    inp.shape = trt.Dims([-1, 1, ROI, ROI, ROI])
    inp.dtype = _dtype(plan.input_dtype)
    inp.allowed_formats = _linear_only(plan.io_format)
    if plan.input_amax is not None:
        inp.set_dynamic_range(-plan.input_amax, plan.input_amax)
    out.dtype = _dtype(plan.output_dtype)
    out.allowed_formats = _linear_only(plan.io_format)


def configure_builder(builder: trt.Builder, config: trt.IBuilderConfig, plan: BuildPlan) -> None:
    """Flags, workspace pool and the optimization profile(s)."""
    import tensorrt as trt

    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    lo, opt, hi = (trt.Dims(list(s)) for s in plan.profile)
    profile = builder.create_optimization_profile()
    profile.set_shape(plan.input_name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if plan.calibrate:
        cal = builder.create_optimization_profile()
        fixed = trt.Dims(list(plan.calibration_profile))
        cal.set_shape(plan.input_name, fixed, fixed, fixed)
        config.set_calibration_profile(cal)


def _parse_errors(parser: trt.OnnxParser) -> str:
    errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    if not errs:
        return "unknown parser error"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return errs[0].replace("\n", " ") + more


def build_serialized(
    plan: BuildPlan,
    onnx_bytes: bytes,
    *,
    logger: trt.ILogger,
    timing_cache: Path | None = None,
    calibrator: trt.IInt8Calibrator | None = None,
    source: str | Path | None = None,
) -> bytes:
    """Parse, configure and build; returns the serialized engine. ``source`` names the model in errors."""
    import tensorrt as trt

    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        raise BadInputError(f"TensorRT cannot parse the surgered model: {_parse_errors(parser)}", source)
    configure_network(network, plan)
    config = builder.create_builder_config()
    configure_builder(builder, config, plan)
    if timing_cache is not None:
        raw = timing_cache.read_bytes() if timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(raw), False)
    if "INT8" in plan.builder_flags:
        if calibrator is None:
            raise UsageError("an int8 build needs a calibrator (a cache or calibration data)")
        config.int8_calibrator = calibrator
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise BadInputError("TensorRT failed to build the engine (see the TensorRT log above)", source)
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(blob)


def make_calibrator(
    batch_size: int,
    batches: Iterator[np.ndarray] | None,
    cache_text: bytes | None,
    on_write: Callable[[bytes], None],
    device: int | str = 0,
    on_batch: Callable[[int], None] | None = None,
) -> trt.IInt8MinMaxCalibrator:
    """A MinMax calibrator. With ``cache_text`` TensorRT reads the ranges and never asks for batches;
    without it, each ``get_batch`` uploads the next real-window batch to one device buffer."""
    import tensorrt as trt

    class MinMaxCalibrator(trt.IInt8MinMaxCalibrator):
        def __init__(self) -> None:
            trt.IInt8MinMaxCalibrator.__init__(self)
            self._buf: torch.Tensor | None = None
            self._served = 0

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int]:
            if batches is None:
                return []
            try:
                b = next(batches)
            except StopIteration:
                return []  # no more data
            import torch

            if self._buf is None:
                self._buf = torch.empty(b.shape, dtype=torch.float32, device=_torch_device(device))
            self._buf.copy_(torch.from_numpy(b))
            if self._buf.is_cuda:
                torch.cuda.synchronize(self._buf.device)  # TensorRT reads the buffer on its own stream
            self._served += 1
            if on_batch is not None:
                on_batch(self._served)
            return [int(self._buf.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache_text  # None: calibrate

        def write_calibration_cache(self, cache: Any) -> None:
            on_write(bytes(cache))

    return MinMaxCalibrator()


# --- the engine ---------------------------------------------------------------------------------


def _torch_device(device: int | str) -> torch.device:
    """An int is a CUDA ordinal; a string ("cpu") is for tests with a fake tensorrt only."""
    import torch

    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


def _torch_dtype(dt: trt.DataType) -> torch.dtype:
    import tensorrt as trt
    import torch

    table = {trt.int8: torch.int8, trt.float16: torch.float16, trt.float32: torch.float32}
    if dt not in table:
        raise BadInputError(f"engine tensor type {dt} is not int8/float16/float32")
    return table[dt]


class TrtEngine:
    """A deserialized engine with one execution context; device buffers are torch tensors."""

    name = NAME

    def __init__(
        self,
        serialized: bytes,
        *,
        precision: str,
        batch_size: int,
        device: int | str,
        logger: trt.ILogger,
        input_amax: float = INT8_INPUT_AMAX_DEFAULT,
        engine_path: Path | None = None,
        model_sha256: str = "",
    ) -> None:
        import tensorrt as trt
        import torch

        self.precision = precision
        self.batch_size = batch_size
        self.device = _torch_device(device)
        self.input_amax = input_amax
        self.engine_path = engine_path
        self.model_sha256 = model_sha256  # the harness records it in run.json
        self._logger = logger  # TensorRT keeps a raw pointer to it: it must outlive runtime and engine
        self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise BadInputError(
                "TensorRT cannot deserialize the engine (built by another version?)", engine_path
            )
        self._engine: trt.ICudaEngine | None = engine
        self._ctx: trt.IExecutionContext | None = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise BadInputError(
                f"engine has inputs {ins} and outputs {outs}, expected one of each", engine_path
            )
        self.input_name, self.output_name = ins[0], outs[0]
        self.input_dtype = _torch_dtype(engine.get_tensor_dtype(self.input_name))
        self.output_dtype = _torch_dtype(engine.get_tensor_dtype(self.output_name))
        # one output buffer for the largest batch; a call with n windows uses its first n items
        self._out: torch.Tensor | None = torch.empty(
            (batch_size, NUM_CLASSES, ROI, ROI, ROI), dtype=self.output_dtype, device=self.device
        )
        self._patches: torch.Tensor | None = None

    # -- device path
    def run(self, windows: torch.Tensor) -> torch.Tensor:
        """(n, 1, 128^3) device tensor in the engine's input dtype -> (n, 3, 128^3) logits (a view of
        the engine's output buffer, valid until the next call; stream-ordered on the current stream)."""
        import torch

        if self._ctx is None or self._out is None:
            raise UsageError("the TensorRT engine is closed")
        n = int(windows.shape[0])
        if not 1 <= n <= self.batch_size or tuple(windows.shape[1:]) != (1, ROI, ROI, ROI):
            raise BadInputError(
                f"windows have shape {tuple(windows.shape)}, "
                f"expected (n<={self.batch_size}, 1, {ROI}, {ROI}, {ROI})"
            )
        x = windows.to(self.device, self.input_dtype).contiguous()
        ctx = self._ctx
        ctx.set_input_shape(self.input_name, (n, 1, ROI, ROI, ROI))
        ctx.set_tensor_address(self.input_name, x.data_ptr())
        ctx.set_tensor_address(self.output_name, self._out.data_ptr())
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        if not ctx.execute_async_v3(stream.cuda_stream if stream is not None else 0):
            raise BadInputError("TensorRT execute_async_v3 failed (see the TensorRT log)", self.engine_path)
        if stream is not None:
            x.record_stream(stream)  # keep x alive until the engine has read it
        return self._out[:n]

    def upload(self, volume: np.ndarray) -> torch.Tensor:
        """(1, D, H, W) or (n, 1, 128^3) host array -> device tensor in the engine's input dtype. Float
        data for an int8 engine is quantized with the one quantizer (core.preprocess.quantize_int8)."""
        import torch

        v = np.ascontiguousarray(volume)
        if self.input_dtype == torch.int8 and v.dtype != np.int8:
            from core.preprocess import quantize_int8

            v = quantize_int8(v, self.input_amax)
        elif self.input_dtype != torch.int8 and v.dtype == np.int8:
            v = v.astype(np.float32) * np.float32(self.input_amax / 127.0)
        t = torch.from_numpy(v).to(self.device)
        return t if t.dtype == self.input_dtype else t.to(self.input_dtype)

    def infer(self, windows: np.ndarray) -> np.ndarray:
        if windows.ndim != 5 or tuple(windows.shape[1:]) != (1, ROI, ROI, ROI):
            raise BadInputError(f"windows have shape {windows.shape}, expected (n, 1, {ROI}, {ROI}, {ROI})")
        out = self.run(self.upload(windows))
        return out.float().cpu().numpy()

    def patches(self) -> torch.Tensor:
        if self._patches is None:
            from core.sliding_window import default_patches_tensor

            self._patches = default_patches_tensor(self.device)
        return self._patches

    def segment(
        self,
        volume: np.ndarray,
        cancel: CancelToken | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """(1, D, H, W) -> (D, H, W) uint8: the volume goes to the GPU once; windows, stitching and argmax
        stay there (core.sliding_window.segment_torch)."""
        import torch

        from core.sliding_window import segment_torch

        vol = self.upload(volume)
        with torch.inference_mode():
            labels = segment_torch(
                vol, self.run, self.batch_size, self.patches(), cancel=cancel or NEVER, on_batch=on_batch
            )
        return labels.cpu().numpy().astype(np.uint8, copy=False)

    def close(self) -> None:
        self._ctx = None
        self._engine = None
        self._out = self._patches = None
        with contextlib.suppress(Exception):
            import torch

            torch.cuda.empty_cache()


# --- the backend --------------------------------------------------------------------------------


class TensorRTBackend:
    name = NAME
    precisions = PRECISIONS

    def availability(self) -> Availability:
        tensorrt = import_tensorrt()
        if tensorrt is None:
            return Availability(False, "tensorrt is not installed")
        try:
            import torch
        except ImportError:
            return Availability(False, "torch is not installed (device buffers of the TensorRT backend)")
        if not torch.cuda.is_available():
            return Availability(False, f"no CUDA device (tensorrt {getattr(tensorrt, '__version__', '?')})")
        devices = tuple(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
        return Availability(True, "", devices)

    def load(
        self,
        model_path: Path,
        *,
        precision: str = "int8",
        batch_size: int = 1,
        device: int | str = 0,
        calibration_cache: Path | None = None,
        workspace: Workspace | None = None,
        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
        instance_norm: str = "builtin",
        calibration_windows_max: int | None = None,
        rebuild: bool = False,
        report: Reporter = null_reporter,
        cancel: CancelToken = NEVER,
    ) -> TrtEngine:
        """Build (or reuse) the engine for ``model_path`` and load it. int8 without a cache calibrates on
        the preprocessed calibration set first. ``workspace`` defaults to ``Workspace.resolve()``."""
        plan = make_plan(precision, batch_size, workspace_bytes=workspace_bytes, instance_norm=instance_norm)
        av = self.availability()
        if not av.ok:
            raise BackendUnavailableError(f"backend tensorrt is unavailable: {av.reason}")
        trt = _require_trt()
        import torch

        from core.model import load_model
        from plugins.tensorrt_plugins import plugin_versions, register_plugins

        ws = workspace or Workspace.resolve()
        model_path = Path(model_path)
        info = load_model(model_path)
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")  # InstanceNormalization_TRT v2 (built-in)
        register_plugins()
        gpu = torch.cuda.get_device_name(device) if isinstance(device, int) else str(device)
        header = trt_cache_header(trt.__version__)

        cache_text: bytes | None = None
        if precision == "int8":
            if calibration_cache is not None:
                cache = cc.load(calibration_cache)
                cc.check_model(cache, info.sha256, calibration_cache)
            else:
                cache = self.calibrate(
                    model_path, ws, info.sha256, batch_size, device, logger, header,
                    max_windows=calibration_windows_max, report=report, cancel=cancel,
                )  # fmt: skip
            cache_text = cc.to_trt_text(cache, header).encode()
            if "input" in cache.amax and abs(cache.amax["input"] / INT8_INPUT_AMAX_DEFAULT - 1) > 1e-4:
                report(
                    LogLine(
                        "warning",
                        f"calibration cache input amax {cache.amax['input']:.5f} ignored: the int8 input "
                        f"keeps the preprocessing scale {INT8_INPUT_AMAX_DEFAULT}",
                    )
                )
        fp = fingerprint(
            plan,
            model_sha256=info.sha256,
            trt_version=trt.__version__,
            gpu_name=gpu,
            plugin_versions=plugin_versions(plan.plugin_ops),
            calibration_sha256=sha256_bytes(cache_text) if cache_text else "",
        )
        data = None if rebuild else find_engine(ws.engine_dir, fp)
        engine_file = engine_paths(ws.engine_dir, fp)[0]
        if data is None:
            import time

            report(Phase("building", f"TensorRT {precision} engine, batch {batch_size} ({gpu})"))
            t0 = time.monotonic()
            calibrator = None
            if cache_text is not None:
                calibrator = make_calibrator(batch_size, None, cache_text, lambda _b: None, device)
            data = build_serialized(
                plan,
                prepare_onnx(str(model_path), plan),
                logger=logger,
                timing_cache=ws.engine_dir / TIMING_CACHE_NAME,
                calibrator=calibrator,
                source=model_path,
            )
            engine_file = save_engine(ws.engine_dir, fp, data, time.monotonic() - t0)
            report(LogLine("info", f"engine written: {engine_file}"))
        else:
            report(LogLine("info", f"engine reused: {engine_file}"))
        return TrtEngine(
            data,
            precision=precision,
            batch_size=batch_size,
            device=device,
            logger=logger,
            engine_path=engine_file,
            model_sha256=info.sha256,
        )

    def calibrate(
        self,
        model_path: Path,
        ws: Workspace,
        model_sha256: str,
        batch_size: int,
        device: int | str,
        logger: trt.ILogger,
        header: str,
        *,
        max_windows: int | None = None,
        report: Reporter = null_reporter,
        cancel: CancelToken = NEVER,
    ) -> cc.CalibrationCache:
        """TensorRT MinMax calibration on real windows of the calibration set (a throw-away FP32-I/O
        build); saves our JSON cache and the TensorRT text cache; returns the cache."""
        from core.cases import case_lists
        from core.preprocess import load_image, load_index

        cases = case_lists(ws).calibration
        index = load_index(ws, "calibration")
        shapes = index.get("image_shape") or {}
        try:
            total = sum(len(window_grid(tuple(shapes[c])[-3:])) for c in cases)
        except (KeyError, TypeError) as exc:
            raise MissingInputError(
                f"calibration index has no image_shape for {exc}", ws.preprocessed_dir
            ) from None
        if total == 0:
            raise MissingInputError("the calibration set is empty", ws.preprocessed_dir)
        keep = min(total, max_windows) if max_windows else total
        n_batches = -(-keep // batch_size)
        report(Phase("calibrating", f"TensorRT MinMax on {keep} of {total} windows ({len(cases)} cases)"))

        def volumes() -> Iterator[np.ndarray]:
            for c in cases:
                cancel.check()
                yield load_image(ws, "calibration", c, "fp32")

        batches = calibration_batches(
            select_evenly(calibration_windows(volumes(), cancel), total, keep), batch_size
        )
        written: list[bytes] = []
        plan = make_plan("int8", batch_size, calibrate=True)
        calibrator = make_calibrator(
            batch_size,
            batches,
            None,
            written.append,
            device,
            on_batch=lambda i: report(Progress("calibration", i, n_batches, unit="batch")),
        )
        build_serialized(
            plan, prepare_onnx(str(model_path), plan), logger=logger, calibrator=calibrator, source=model_path
        )
        if not written:
            raise BadInputError("TensorRT calibration wrote no cache (see the TensorRT log)", model_path)
        text = written[-1].decode("utf-8", errors="replace")
        cache = cc.from_trt_text(text, "TensorRT calibration")
        cache.model_sha256 = model_sha256
        cache.method = "minmax"
        cache.meta.update({"tool": "tensorrt", "windows": keep, "windows_total": total, "cases": len(cases)})
        cc.save(cache, ws.calibration_cache_path)
        cc.save_trt_text(cache, ws.calibration_cache_path.with_name(TRT_CACHE_NAME), header)
        report(LogLine("info", f"calibration cache written: {ws.calibration_cache_path}"))
        return cache


BACKEND = TensorRTBackend()
