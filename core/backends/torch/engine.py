"""The torch engine: an :class:`OnnxUNet` (or the fused executor, ``core.backends.torch.fused``) run
as static batches of ``batch_size`` windows, one CUDA graph captured per batch size after warm-up (a
short last batch replays the smallest graph that holds it), one CUDA stream per engine, pinned host
copies. :func:`make_engine` picks the executor and builds it.

``TorchEngine.segment`` is the GPU-resident sliding window: the volume is uploaded once (int8 linear
for int8/fp8, else the compute dtype), windows are sliced on the device, and stitching and argmax go
through ``core.sliding_window.segment_torch`` (one grid, one tie rule); only uint8 labels come back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from core.backends.torch.convert import build_net, convert, load_onnx
from core.backends.torch.nodes import CL3D, Kernels, OnnxUNet
from core.backends.torch.quant import DTYPES, INT8_MAX, QUANT_PRECISIONS
from core.benchmark import INT8_INPUT_AMAX_DEFAULT, ROI
from core.errors import BackendUnavailableError, BadInputError, UsageError

NAME = "torch"
ENV_DEVICE = "UNET3D_TORCH_DEVICE"  # "cpu" lets tests and tiny benches load on a CPU machine
ENV_PLUGINS = "UNET3D_TORCH_PLUGINS"  # "0" forces plain torch ops
ENV_EXECUTOR = "UNET3D_TORCH_EXECUTOR"  # "graph" (default) | "fused" (core.backends.torch.fused)
EXECUTORS = ("graph", "fused")


def resolve_device(device: int | str | None) -> torch.device:
    env = os.environ.get(ENV_DEVICE, "")
    if isinstance(device, str) and device:
        return torch.device(device)
    if env:
        return torch.device(env)
    return torch.device("cuda", int(device or 0))


def _plugins_wanted(use_plugins: bool | None, device: torch.device) -> bool:
    if os.environ.get(ENV_PLUGINS, "") == "0":
        return False
    if use_plugins is None:
        return device.type == "cuda"
    return bool(use_plugins)


class TorchEngine:
    """An :class:`core.backends.base.VolumeEngine` running an :class:`OnnxUNet`."""

    name = NAME

    def __init__(
        self,
        net: OnnxUNet,
        *,
        precision: str,
        batch_size: int,
        device: torch.device,
        kernels: Kernels,
        cuda_graphs: bool = True,
        channels_last: bool = True,
        compile_mode: str | None = None,
        input_amax: float = INT8_INPUT_AMAX_DEFAULT,
        model_sha256: str = "",
        fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        """``fn`` replaces ``net`` as the window function (the fused executor, core.backends.torch.fused)."""
        self.precision = precision
        self.batch_size = int(batch_size)
        self.device = device
        self.kernels = kernels
        self.channels_last = channels_last
        self.dtype = DTYPES.get(precision, torch.float32 if device.type == "cpu" else torch.float16)
        self.input_amax = float(input_amax)
        # int8 / fp8 take NVIDIA's int8 linear input (one byte per voxel); the rest the compute dtype
        self.in_dtype = torch.int8 if precision in QUANT_PRECISIONS else self.dtype
        self.simulated = fn is None and (
            precision == "int8" or (precision == "fp8" and kernels.conv3x3x3 is None)
        )
        self.executor = "graph" if fn is None else "fused"
        self.model_sha256 = model_sha256
        self.net = net
        self._fn: Callable[[torch.Tensor], torch.Tensor] = net if fn is None else fn
        if compile_mode:
            self._fn = torch.compile(self._fn, mode=compile_mode, dynamic=False)
            if compile_mode in ("reduce-overhead", "max-autotune"):
                cuda_graphs = False  # inductor captures its own CUDA graphs in these modes
        # CUDA graphs by batch size: the full batch and halvings down to 1, so a sample's last, short
        # batch replays the smallest graph that holds it instead of computing a full padded batch
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._patches: torch.Tensor | None = None
        if cuda_graphs and device.type == "cuda":
            self._capture()
        # each engine works on a stream of its own, so two engines on one device
        # (--gpu_inference_streams) overlap one sample's host work with the other's kernels
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        # host side of a sample through pinned buffers (as NVIDIA's QSL and response buffers): DMA
        # copies instead of the driver's pageable staging, on the engine's stream
        self.pinned = device.type == "cuda"

    @property
    def input_dtype(self) -> str:
        """What the harness should feed: NVIDIA's int8 linear volumes for int8/fp8 (4x less to copy
        to the device), else float32. Either kind is accepted by every method."""
        return "int8" if self.in_dtype == torch.int8 else "float32"

    @property
    def uses_cuda_graph(self) -> bool:
        return bool(self._graphs)

    @property
    def graph_sizes(self) -> list[int]:
        return sorted(self._graphs)

    def _new_input(self, n: int) -> torch.Tensor:
        x = torch.zeros((n, 1, ROI, ROI, ROI), dtype=self.in_dtype, device=self.device)
        return x.contiguous(memory_format=CL3D) if self.channels_last else x

    def _capture(self) -> None:
        """One graph per size in {batch, batch/2, ..., 1} (powers of two below the batch)."""
        b = self.batch_size
        sizes = {b} | {1 << i for i in range(b.bit_length()) if 1 << i < b}
        for n in sorted(sizes, reverse=True):
            self._capture_size(n)

    def _capture_size(self, size: int) -> None:
        """Warm up (Triton autotuning, cuDNN algorithm choice) on a side stream, then capture the graph
        of one static batch of ``size`` windows; shorter batches are padded into its input buffer."""
        # everything on the engine's device (Triton launches on the current device), with a capture
        # stream of our own: torch.cuda.graph's shared default stream belongs to whichever device
        # was current when it was first made
        with torch.cuda.device(self.device):
            x = self._new_input(size)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):
                    self._fn(x)
            torch.cuda.current_stream(self.device).wait_stream(side)
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            capture = torch.cuda.Stream(self.device)
            with torch.inference_mode(), torch.cuda.graph(graph, stream=capture):
                out = self._fn(x)
            torch.cuda.synchronize(self.device)
        self._graphs[size] = (graph, x, out)

    def _on_device(self) -> contextlib.AbstractContextManager[Any]:
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _on_stream(self) -> contextlib.ExitStack:
        """The engine's device and its own stream (CPU: nothing)."""
        stack = contextlib.ExitStack()
        stack.enter_context(self._on_device())
        if self._stream is not None:
            stack.enter_context(torch.cuda.stream(self._stream))
        return stack

    def run(self, windows: torch.Tensor) -> torch.Tensor:
        """(n, 1, 128^3) windows on the device (any float dtype, or int8 linear) -> (n, 3, 128^3) logits
        in the compute dtype. With a CUDA graph the result is a view of the graph's output buffer:
        use it before the next call."""
        with self._on_device():
            return self._run(windows)

    def _run(self, windows: torch.Tensor) -> torch.Tensor:
        n = windows.shape[0]
        if n > self.batch_size:
            # clone each chunk: with a CUDA graph every call returns the same output buffer
            return torch.cat(
                [self._run(windows[i : i + self.batch_size]).clone() for i in range(0, n, self.batch_size)]
            )
        if self.in_dtype == torch.int8 and windows.dtype != torch.int8:
            windows = self.quantize_input(windows)
        elif self.in_dtype != torch.int8 and windows.dtype == torch.int8:
            windows = windows.to(self.dtype) * (self.input_amax / INT8_MAX)
        with torch.inference_mode():
            if self._graphs:
                graph, static_in, static_out = self._graphs[min(k for k in self._graphs if k >= n)]
                static_in[:n].copy_(windows)  # rows n.. keep stale data: IN is per sample
                graph.replay()
                return static_out[:n]
            x = windows.to(device=self.device, dtype=self.in_dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=CL3D)
            return self._fn(x)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """float -> int8 linear, q = RNE(x / amax * 127) saturated (core.preprocess.quantize_int8)."""
        if x.dtype == torch.int8:
            return x
        # same float32 operations as the preprocessing's int8 files, so device and disk agree bit for bit
        q = torch.round(x.to(torch.float32) / self.input_amax * INT8_MAX)
        return torch.clamp(q, -128, 127).to(torch.int8)

    def infer(self, windows: np.ndarray) -> np.ndarray:
        if windows.ndim != 5 or tuple(windows.shape[1:]) != (1, ROI, ROI, ROI):
            raise BadInputError(f"windows have shape {windows.shape}, expected (n, 1, {ROI}, {ROI}, {ROI})")
        x = torch.from_numpy(np.ascontiguousarray(windows)).to(self.device)
        return self.run(x).float().cpu().numpy()

    def patches(self) -> torch.Tensor:
        if self._patches is None:
            from core.sliding_window import default_patches_tensor

            pdtype = torch.float32 if self.dtype == torch.float32 else torch.float16
            self._patches = default_patches_tensor(self.device, pdtype)
        return self._patches

    def upload(self, volume: np.ndarray) -> torch.Tensor:
        """(1, D, H, W) float32 (or int8 linear) -> device tensor: int8 linear for int8/fp8 (as
        NVIDIA's harness), fp32 for fp32, fp16 otherwise."""
        v = torch.from_numpy(np.ascontiguousarray(volume))
        if self.pinned:  # torch's caching host allocator reuses the pinned block once the copy is done
            staged = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
            staged.copy_(v)
            v = staged.to(self.device, non_blocking=True)
        if self.in_dtype == torch.int8:
            return self.quantize_input(v.to(self.device))
        if v.dtype == torch.int8:
            v = v.float() * (self.input_amax / INT8_MAX)
        target = torch.float32 if self.dtype == torch.float32 else torch.float16
        return v.to(self.device, non_blocking=False).to(target)

    def segment(self, volume: np.ndarray, cancel: Any = None, on_batch: Any = None) -> np.ndarray:
        """(1, D, H, W) -> (D, H, W) uint8 labels, all on the device (core.sliding_window.segment_torch)."""
        with self._on_stream():
            labels = self.segment_device(self.upload(volume), cancel=cancel, on_batch=on_batch)
            if not self.pinned:
                return labels.cpu().numpy().astype(np.uint8, copy=False)
            host = torch.empty(labels.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(labels, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
            return host.numpy()  # keeps the pinned block alive until the caller drops the labels

    def segment_device(self, vol: torch.Tensor, cancel: Any = None, on_batch: Any = None) -> torch.Tensor:
        """A volume already on the device (as ``upload`` makes it) -> (D, H, W) uint8 labels there."""
        from core.jobs import NEVER
        from core.sliding_window import segment_torch

        k = self.kernels
        caller = torch.cuda.current_stream(self.device) if self._stream is not None else None
        if self._stream is not None and caller is not None:
            self._stream.wait_stream(caller)  # the volume may still be in flight on the caller's stream
        with self._on_stream(), torch.inference_mode():
            labels = segment_torch(
                vol,
                self.run,
                self.batch_size,
                self.patches(),
                accumulate_fn=k.accumulate_fn,
                argmax_fn=k.argmax_fn,
                cancel=cancel or NEVER,
                on_batch=on_batch,
            )
        if self._stream is not None and caller is not None:
            caller.wait_stream(self._stream)
        return labels

    def close(self) -> None:
        self._graphs.clear()
        self._patches = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def gemm_inputs(model: onnx.ModelProto) -> list[str]:
    """Input tensor names of the Conv / ConvTranspose nodes of an original-form graph in graph order,
    the output conv excluded: index i is the fused executor's GEMM layer i (first conv, 11 encoder convs,
    then per decoder block the deconv and its two convs)."""
    return [n.input[0] for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")][:-1]


def fused_act_scales(model: onnx.ModelProto, amax: dict[str, float], precision: str) -> dict[int, float]:
    """Calibration-cache ranges -> the fused executor's per-layer input scales (fp8: amax / 448,
    int8: amax / 127)."""
    from core.backends.torch.fused import act_scales_from_amax

    by_layer = {i: amax[t] for i, t in enumerate(gemm_inputs(model)) if t in amax}
    return act_scales_from_amax(by_layer, precision)


def make_engine(
    model: str | Path | onnx.ModelProto,
    *,
    precision: str = "fp32",
    batch_size: int = 1,
    device: torch.device | str = "cuda",
    amax: dict[str, float] | None = None,
    use_plugins: bool | None = None,
    cuda_graphs: bool = True,
    channels_last: bool = True,
    compile_mode: str | None = None,
    use_surgery: bool = True,
    model_sha256: str = "",
    executor: str | None = None,
) -> TorchEngine:
    """An engine from a model file or proto and (for int8/fp8) a tensor -> amax dict; what ``load``
    does after its checks, and what the benches call with in-memory random models.

    ``executor``: "graph" (the converted graph, per-op kernels from plugins.ops where present; the
    default except fp8/int8 on CUDA) or "fused" (core.backends.torch.fused.FusedUNet3D: the whole network as
    fused Triton kernels, CUDA only, fp32/fp16/bf16/fp8/int8 (real int8 GEMMs), original-form models of the
    MLPerf topology; the default for fp8 and int8 on CUDA). Env UNET3D_TORCH_EXECUTOR."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():
        return _make_engine(
            model, precision, batch_size, dev, amax, use_plugins, cuda_graphs, channels_last,
            compile_mode, use_surgery, model_sha256, executor,
        )  # fmt: skip


def _make_engine(
    model: str | Path | onnx.ModelProto,
    precision: str,
    batch_size: int,
    dev: torch.device,
    amax: dict[str, float] | None,
    use_plugins: bool | None,
    cuda_graphs: bool,
    channels_last: bool,
    compile_mode: str | None,
    use_surgery: bool,
    model_sha256: str,
    executor: str | None,
) -> TorchEngine:
    # fp8 and int8 on CUDA default to the fused executor: the converted graph only simulates them (cuDNN
    # has no fp8/int8 3D convolution), so it would be neither fast nor the arithmetic the kernels run
    default = "fused" if precision in QUANT_PRECISIONS and dev.type == "cuda" else "graph"
    executor = executor or os.environ.get(ENV_EXECUTOR, "") or default
    if executor not in EXECUTORS:
        raise UsageError(f"torch executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if executor == "fused":
        return _fused_engine(model, precision, batch_size, dev, amax, cuda_graphs, compile_mode, model_sha256)
    if precision == "fp32" and dev.type == "cuda":
        # fp32 means fp32 (NVIDIA's builder clears TF32 too); process-wide torch setting
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    net = build_net(
        model,
        precision=precision,
        device=dev,
        amax=amax,
        use_surgery=use_surgery,
        channels_last=channels_last,
    )
    kernels = Kernels(_plugins_wanted(use_plugins, dev))
    net.set_kernels(kernels)
    input_amax = (
        INT8_INPUT_AMAX_DEFAULT if amax is None else float(amax.get(net.input_name, INT8_INPUT_AMAX_DEFAULT))
    )
    return TorchEngine(
        net,
        precision=precision,
        batch_size=batch_size,
        device=dev,
        kernels=kernels,
        cuda_graphs=cuda_graphs,
        channels_last=channels_last,
        compile_mode=compile_mode,
        input_amax=input_amax,
        model_sha256=model_sha256,
    )


def _fused_engine(
    model: str | Path | onnx.ModelProto,
    precision: str,
    batch_size: int,
    dev: torch.device,
    amax: dict[str, float] | None,
    cuda_graphs: bool,
    compile_mode: str | None,
    model_sha256: str,
) -> TorchEngine:
    if precision not in ("fp32", "fp16", "bf16", "fp8", "int8"):
        raise UsageError(f"the fused torch executor runs fp32, fp16, bf16, fp8 and int8, not {precision}")
    try:
        from core.backends.torch.fused import FusedUNet3D
    except Exception as exc:
        raise BackendUnavailableError(f"the fused torch executor is unavailable: {exc}") from None
    m = load_onnx(model)
    if any(n.op_type.endswith("_TRT") for n in m.graph.node):
        raise BadInputError("the fused torch executor reads original-form models, not surgered ones")
    input_amax = (
        INT8_INPUT_AMAX_DEFAULT if amax is None else float(amax.get("input", INT8_INPUT_AMAX_DEFAULT))
    )
    quantized = precision in QUANT_PRECISIONS and amax is not None
    scales = fused_act_scales(m, amax, precision) if quantized and amax is not None else None
    try:
        fused = FusedUNet3D.from_onnx(
            m, precision=precision, device=dev, act_scales=scales, input_amax=input_amax
        )
    except ValueError as exc:  # not the MLPerf topology
        raise BadInputError(f"the fused torch executor cannot take this model: {exc}") from None
    return TorchEngine(
        convert(m),  # kept for introspection (tensor names); the fused network runs
        precision=precision,
        batch_size=batch_size,
        device=dev,
        kernels=Kernels(True),
        cuda_graphs=cuda_graphs,
        compile_mode=compile_mode,
        input_amax=input_amax,
        model_sha256=model_sha256,
        fn=fused,
    )
