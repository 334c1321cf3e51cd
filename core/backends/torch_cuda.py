"""PyTorch backend: the ONNX graph converted to a ``torch.nn.Module``, run on CUDA (CPU for tests).

Conversion (:func:`convert`) walks the ONNX graph node by node and builds one small module per node,
with the weights taken from the initializers (or the plugin attributes), so any model with the MLPerf
topology and any weights runs; there is no hand-written copy of the network. It reads both forms:

- the original export: Conv, InstanceNormalization, Relu, ConvTranspose, Concat (plus Identity,
  Reshape, Transpose and Constant for the runnable "onnx" surgery form);
- NVIDIA's surgered "plugin" form (``core.surgery.surgery(model, form="plugin")``):
  ``InstanceNormalization_TRT`` (``scales``/``bias`` attributes, ``relu``/``alpha``),
  ``CONV3D3X3X3C1K32_TRT``, ``CONV3D1X1X1K4_TRT`` + Identity, and 1x1x1 Conv + ``PIXELSHUFFLE3D_TRT``
  (conv output, skip) in place of ConvTranspose + Concat.

Each node module keeps its ONNX output tensor names (``outputs``), so forward hooks see every tensor
under the name the TensorRT calibration cache uses (core.calibration relies on that).

Execution: channels-last 3-D activations, an explicit dtype (fp32 / fp16 / bf16, no autocast), the
fused Triton kernels of ``plugins.ops`` where present (``use_plugins``) and plain torch ops otherwise,
static batches of ``batch_size`` windows (a short last batch is padded) and, on CUDA, one CUDA graph
captured after warm-up. int8 / fp8 run as *simulated* quantization (fake-quant with the calibration
cache's per-tensor amax and per-channel weight amax) until the kernels provide real low-precision
convolutions: numerically what an INT8/FP8 engine computes, not its speed.

``TorchEngine.segment`` is the GPU-resident sliding window: the volume is uploaded once (int8 linear
for int8/fp8, else the compute dtype), windows are sliced on the device, and stitching and argmax go
through ``core.sliding_window.segment_torch`` (one grid, one tie rule); only uint8 labels come back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch spelling
from onnx import numpy_helper
from torch import nn

from core.backends.base import Availability
from core.benchmark import INT8_INPUT_AMAX_DEFAULT, NUM_CLASSES, ROI
from core.errors import BackendUnavailableError, BadInputError, MissingInputError, UsageError
from core.workspace import Workspace

NAME = "torch"
BASE_PRECISIONS = ("fp32", "fp16", "bf16")
QUANT_PRECISIONS = ("int8", "fp8")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ENV_DEVICE = "UNET3D_TORCH_DEVICE"  # "cpu" lets tests and tiny benches load on a CPU machine
ENV_PLUGINS = "UNET3D_TORCH_PLUGINS"  # "0" forces plain torch ops
ENV_EXECUTOR = "UNET3D_TORCH_EXECUTOR"  # "graph" (default) | "fused" (plugins.unet)
EXECUTORS = ("graph", "fused")
FP8_MAX = 448.0  # float8_e4m3fn
INT8_MAX = 127.0
CL3D = torch.channels_last_3d


# --- plugins ------------------------------------------------------------------------------------


class Kernels:
    """The fused kernels of ``plugins.ops`` that this backend can use; None where absent."""

    NAMES = (
        "instance_norm_relu",
        "pixel_shuffle3d_concat",
        "conv1x1x1_bias",
        "conv3x3x3_c1",
        "conv3x3x3",
        "accumulate_fn",
        "argmax_fn",
    )

    instance_norm_relu: Callable[..., torch.Tensor] | None
    pixel_shuffle3d_concat: Callable[..., torch.Tensor] | None
    conv1x1x1_bias: Callable[..., torch.Tensor] | None
    conv3x3x3_c1: Callable[..., torch.Tensor] | None
    conv3x3x3: Callable[..., torch.Tensor] | None
    accumulate_fn: Callable[..., None] | None
    argmax_fn: Callable[..., torch.Tensor] | None

    def __init__(self, enabled: bool) -> None:
        self.module: Any = None
        self.error = ""
        if enabled:
            try:
                import plugins.ops as ops

                self.module = ops
            except Exception as exc:  # any import-time failure (no triton, no GPU) means "not here"
                self.error = f"plugins.ops unavailable: {exc}"
        for n in self.NAMES:
            setattr(self, n, getattr(self.module, n, None) if self.module is not None else None)

    @property
    def present(self) -> list[str]:
        return [n for n in self.NAMES if getattr(self, n) is not None]


NO_KERNELS = Kernels(False)


# --- node modules -------------------------------------------------------------------------------


def _fq_int8(x: torch.Tensor, amax: float) -> torch.Tensor:
    s = max(float(amax), 1e-12) / INT8_MAX
    return torch.clamp(torch.round(x / s), -INT8_MAX, INT8_MAX) * s


def _fq_fp8(x: torch.Tensor, amax: float) -> torch.Tensor:
    s = max(float(amax), 1e-12) / FP8_MAX
    return (x / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(x.dtype) * s


def fake_quant(x: torch.Tensor, amax: float, kind: str) -> torch.Tensor:
    """Quantize-dequantize ``x`` with one symmetric per-tensor range (int8: RNE, saturate at 127)."""
    return _fq_int8(x, amax) if kind == "int8" else _fq_fp8(x, amax)


def _fq_weight(w: torch.Tensor, kind: str, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(dequantized w, per-channel amax) on the device: no host sync, so it can run in a CUDA graph."""
    dims = [d for d in range(w.dim()) if d != axis]
    amax = w.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12)
    qmax = INT8_MAX if kind == "int8" else FP8_MAX
    s = amax / qmax
    if kind == "int8":
        q = torch.clamp(torch.round(w / s), -INT8_MAX, INT8_MAX) * s
    else:
        q = (w / s).to(torch.float8_e4m3fn).to(w.dtype) * s
    return q, amax


def fake_quant_weight(w: torch.Tensor, kind: str, axis: int = 0) -> tuple[torch.Tensor, list[float]]:
    """Per-output-channel symmetric weight quantization; returns (dequantized w, per-channel amax)."""
    q, amax = _fq_weight(w, kind, axis)
    return q, [float(a) for a in amax.flatten()]


class Node(nn.Module):
    """One converted ONNX node. ``outputs[0]`` is the tensor name its forward returns."""

    op = ""

    def __init__(self, name: str, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        super().__init__()
        self.onnx_name = name
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.kernels: Kernels = NO_KERNELS

    def extra_repr(self) -> str:
        return f"{self.onnx_name!r} -> {self.outputs[0]!r}"


class Conv(Node):
    op = "Conv"

    def __init__(
        self,
        name: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        weight: np.ndarray,
        bias: np.ndarray | None,
        strides: Sequence[int],
        pads: Sequence[int],
        dilations: Sequence[int],
        group: int,
    ) -> None:
        super().__init__(name, inputs, outputs)
        self.weight = nn.Parameter(torch.from_numpy(np.array(weight, dtype=np.float32)), False)
        self.bias = None if bias is None else nn.Parameter(torch.from_numpy(bias.astype(np.float32)), False)
        self.stride = tuple(int(s) for s in strides)
        self.dilation = tuple(int(d) for d in dilations)
        self.group = int(group)
        n = len(pads) // 2
        begin, end = tuple(pads[:n]), tuple(pads[n:])
        self.padding = begin if begin == end else (0,) * n
        # F.pad takes (last-dim begin, last-dim end, ...): only for asymmetric ONNX pads
        self.pre_pad = None if begin == end else [p for i in reversed(range(n)) for p in (begin[i], end[i])]
        k = tuple(weight.shape)
        self.is_first = (
            k[1:] == (1, 3, 3, 3) and bias is None and self.stride == (1, 1, 1) and self.padding == (1, 1, 1)
        )
        # fp8: amax of this conv's input (per-tensor act scale amax/448); None = not an fp8 conv
        self.fp8_amax: float | None = None
        self.in_scale = INT8_INPUT_AMAX_DEFAULT / INT8_MAX  # dequantization of an int8 linear input
        self.is_3x3 = (
            k[2:] == (3, 3, 3)
            and k[1] > 1
            and bias is None
            and self.padding == (1, 1, 1)
            and self.dilation == (1, 1, 1)
            and self.group == 1
            and len(set(self.stride)) == 1
        )
        self.is_last = (
            k[2:] == (1, 1, 1) and k[0] == NUM_CLASSES and bias is not None and self.stride == (1, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernels
        if self.is_first and k.conv3x3x3_c1 is not None:
            if x.dtype == torch.int8:  # int8 linear input straight into the first conv
                return k.conv3x3x3_c1(x, self.weight, self.in_scale)
            return k.conv3x3x3_c1(x, self.weight)
        if self.is_last and k.conv1x1x1_bias is not None:
            return k.conv1x1x1_bias(x, self.weight.flatten(1), self.bias)
        if x.dtype == torch.int8:
            x = x.to(self.weight.dtype) * self.in_scale
        if self.fp8_amax is not None:  # 3^3 conv with fp8 e4m3 operands
            if k.conv3x3x3 is not None:
                return k.conv3x3x3(x, self.weight, self.stride[0], "fp8", self.fp8_amax / FP8_MAX).to(x.dtype)
            xq = fake_quant(x, self.fp8_amax, "fp8")
            wq, _ = _fq_weight(self.weight, "fp8")  # not fake_quant_weight: its host copy breaks capture
            return F.conv3d(xq, wq, None, self.stride, self.padding, self.dilation, self.group)
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        return F.conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.group)


class ConvTranspose(Node):
    op = "ConvTranspose"

    def __init__(
        self,
        name: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        weight: np.ndarray,
        bias: np.ndarray | None,
        strides: Sequence[int],
        pads: Sequence[int],
        output_padding: Sequence[int],
        dilations: Sequence[int],
        group: int,
    ) -> None:
        super().__init__(name, inputs, outputs)
        n = len(strides)
        if tuple(pads[:n]) != tuple(pads[n:]):
            raise BadInputError(f"ConvTranspose {name}: asymmetric pads {list(pads)} are not supported")
        self.weight = nn.Parameter(torch.from_numpy(np.array(weight, dtype=np.float32)), False)
        self.bias = None if bias is None else nn.Parameter(torch.from_numpy(bias.astype(np.float32)), False)
        self.stride = tuple(int(s) for s in strides)
        self.padding = tuple(int(p) for p in pads[:n])
        self.output_padding = tuple(int(p) for p in output_padding)
        self.dilation = tuple(int(d) for d in dilations)
        self.group = int(group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose3d(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.group,
            self.dilation,
        )


def instance_norm_ref(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float, relu: bool, alpha: float = 0.0
) -> torch.Tensor:
    """Plain-torch InstanceNorm (+ReLU): statistics in float32 over D,H,W, affine folded into one
    scale/shift per (n, c); keeps the input's dtype and memory format (no NCDHW round trip)."""
    # fp16 reduces in place (float accumulators, results rounded to fp16: ~5e-4 relative, the
    # activations' own precision); bf16's 8-bit mantissa is too coarse for the mean, so it reduces
    # a float32 copy
    xf = x.float() if x.dtype == torch.bfloat16 else x
    var, mean = (t.float() for t in torch.var_mean(xf, dim=(2, 3, 4), keepdim=True, correction=0))
    scale = gamma.float().view(1, -1, 1, 1, 1) * torch.rsqrt(var + eps)
    shift = beta.float().view(1, -1, 1, 1, 1) - mean * scale
    y = torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))
    if relu:
        y = F.relu_(y) if alpha == 0.0 else F.leaky_relu_(y, alpha)
    return y


class InstanceNorm(Node):
    op = "InstanceNormalization"

    def __init__(
        self,
        name: str,
        inputs: Sequence[str],
        outputs: Sequence[str],
        gamma: np.ndarray,
        beta: np.ndarray,
        eps: float,
        relu: bool,
        alpha: float = 0.0,
    ) -> None:
        super().__init__(name, inputs, outputs)
        # affine parameters stay float32 whatever the activation dtype (they are tiny)
        self.register_buffer("gamma", torch.from_numpy(gamma.astype(np.float32)))
        self.register_buffer("beta", torch.from_numpy(beta.astype(np.float32)))
        self.eps = float(eps)
        self.relu = bool(relu)
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernels
        if k.instance_norm_relu is not None and self.alpha == 0.0:
            return k.instance_norm_relu(x, self.gamma, self.beta, self.eps, self.relu)
        return instance_norm_ref(x, self.gamma, self.beta, self.eps, self.relu, self.alpha)


class Relu(Node):
    op = "Relu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


class Identity(Node):
    op = "Identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Concat(Node):
    op = "Concat"

    def __init__(self, name: str, inputs: Sequence[str], outputs: Sequence[str], axis: int) -> None:
        super().__init__(name, inputs, outputs)
        self.axis = int(axis)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        y = torch.cat(xs, dim=self.axis)
        return y.contiguous(memory_format=CL3D) if xs[0].is_contiguous(memory_format=CL3D) else y


def pixel_shuffle3d_ref(x: torch.Tensor, r: int = 2, s: int = 2, t: int = 2) -> torch.Tensor:
    """Depth-to-space: out[k, r*d + a, s*h + b, t*w + c] = x[k*rst + a*st + b*t + c, d, h, w]."""
    n, c8, d, h, w = x.shape
    k = c8 // (r * s * t)
    y = x.reshape(n, k, r, s, t, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return y.reshape(n, k, d * r, h * s, w * t)


class PixelShuffleConcat(Node):
    op = "PIXELSHUFFLE3D_TRT"

    def __init__(
        self, name: str, inputs: Sequence[str], outputs: Sequence[str], r: int, s: int, t: int
    ) -> None:
        super().__init__(name, inputs, outputs)
        self.rst = (int(r), int(s), int(t))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        k = self.kernels
        if skip is not None and k.pixel_shuffle3d_concat is not None and self.rst == (2, 2, 2):
            return k.pixel_shuffle3d_concat(x, skip)
        y = pixel_shuffle3d_ref(x, *self.rst)
        if skip is not None:
            y = torch.cat((y, skip), dim=1)
        return y.contiguous(memory_format=CL3D) if x.is_contiguous(memory_format=CL3D) else y.contiguous()


class Reshape(Node):
    op = "Reshape"

    def __init__(
        self, name: str, inputs: Sequence[str], outputs: Sequence[str], shape: Sequence[int]
    ) -> None:
        super().__init__(name, inputs[:1], outputs)
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(self.shape)]  # ONNX: 0 copies the dim
        return x.reshape(shape)


class Transpose(Node):
    op = "Transpose"

    def __init__(self, name: str, inputs: Sequence[str], outputs: Sequence[str], perm: Sequence[int]) -> None:
        super().__init__(name, inputs, outputs)
        self.perm = tuple(int(p) for p in perm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.perm)


# --- the converted graph ------------------------------------------------------------------------


class OnnxUNet(nn.Module):
    """The converted graph: ``forward(x (N,1,D,H,W)) -> (N,3,D,H,W)`` logits.

    ``act_quant`` (tensor name -> amax) and ``quant_kind`` turn on simulated quantization of those
    activations (see :func:`apply_quantization`). Forward hooks on ``nodes`` see every node output
    under its ONNX tensor name (``node.outputs[0]``); core.calibration relies on that."""

    def __init__(self, nodes: Sequence[Node], input_name: str, output_name: str) -> None:
        super().__init__()
        self.nodes = nn.ModuleList(nodes)
        self.input_name = input_name
        self.output_name = output_name
        self.act_quant: dict[str, float] = {}
        self.quant_kind = ""
        self.input_quant: float | None = None
        self.in_scale = INT8_INPUT_AMAX_DEFAULT / INT8_MAX  # dequantizes an int8 linear input
        self.weight_amax: dict[str, list[float]] = {}
        # free each intermediate after its last consumer, so peak memory stays near the U-Net's own
        last: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for t in n.inputs:
                last[t] = i
        self._free: list[tuple[str, ...]] = [() for _ in self.nodes]
        for t, i in last.items():
            if t != output_name:
                self._free[i] = (*self._free[i], t)

    @property
    def tensor_names(self) -> list[str]:
        """The input and every node output, in execution order."""
        return [self.input_name] + [t for n in self.nodes for t in n.outputs]

    def set_kernels(self, kernels: Kernels) -> None:
        for n in self.nodes:
            n.kernels = kernels

    def takes_int8(self) -> bool:
        """Whether an int8 linear input goes straight into the first node (the int8 first-conv kernel)."""
        first = self.nodes[0]
        return (
            isinstance(first, Conv)
            and first.is_first
            and first.kernels.conv3x3x3_c1 is not None
            and self.input_quant is None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.int8 and not self.takes_int8():
            x = x.to(next(self.parameters()).dtype) * self.in_scale
        if self.input_quant is not None:
            x = fake_quant(x, self.input_quant, self.quant_kind)
        env: dict[str, torch.Tensor] = {self.input_name: x}
        quant = self.act_quant
        for node, free in zip(self.nodes, self._free, strict=True):
            y = node(*(env[t] for t in node.inputs))
            name = node.outputs[0]
            if quant and name in quant:
                y = fake_quant(y, quant[name], self.quant_kind)
            env[name] = y
            for t in free:
                del env[t]
        return env[self.output_name]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


def _floats(v: Any, where: str) -> np.ndarray:
    if v is None:
        raise BadInputError(f"{where}: missing attribute")
    return np.asarray(v, dtype=np.float32).ravel()


def load_onnx(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise MissingInputError("model file not found", path)
    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise BadInputError(f"not a readable ONNX model ({type(exc).__name__})", path) from None


def convert(
    model: str | Path | onnx.ModelProto,
    *,
    fuse_relu: bool = True,
) -> OnnxUNet:
    """ONNX graph (original or surgered plugin form) -> :class:`OnnxUNet` in float32 on the CPU.

    ``fuse_relu`` folds a Relu that is the only consumer of an InstanceNormalization into it (the
    plugin form is already fused); calibration passes False to observe both tensors."""
    m = load_onnx(model)
    g = m.graph
    where = g.name or "model"
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    graph_inputs = [i.name for i in g.input if i.name not in consts]
    if len(graph_inputs) != 1 or len(g.output) < 1:
        raise BadInputError(f"{where}: expected one input and an output, got inputs {graph_inputs}")
    output_name = "output" if any(o.name == "output" for o in g.output) else g.output[0].name
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    graph_outputs = {o.name for o in g.output}

    def const(name: str, node: onnx.NodeProto) -> np.ndarray:
        if name not in consts:
            raise BadInputError(f"{where}: node {node.name} ({node.op_type}) needs constant {name!r}")
        return consts[name]

    nodes: list[Node] = []
    skip: set[str] = set()  # Relu nodes folded into the preceding InstanceNorm
    for n in g.node:
        if n.name in skip and n.name:
            continue
        a = _attrs(n)
        op = n.op_type
        ins, outs, nm = list(n.input), list(n.output), n.name or f"{op}_{len(nodes)}"
        if op == "Constant":
            consts[outs[0]] = np.asarray(a.get("value"))
            continue
        if op == "Conv":
            w = const(ins[1], n)
            b = const(ins[2], n) if len(ins) > 2 and ins[2] else None
            if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
                raise BadInputError(f"{where}: Conv {nm} uses auto_pad, which is not supported")
            nd = w.ndim - 2
            nodes.append(
                Conv(
                    nm, ins[:1], outs, w, b,
                    a.get("strides", [1] * nd), a.get("pads", [0] * 2 * nd),
                    a.get("dilations", [1] * nd), a.get("group", 1),
                )
            )  # fmt: skip
        elif op == "ConvTranspose":
            w = const(ins[1], n)
            b = const(ins[2], n) if len(ins) > 2 and ins[2] else None
            nd = w.ndim - 2
            if "output_shape" in a:
                raise BadInputError(f"{where}: ConvTranspose {nm} uses output_shape, which is not supported")
            nodes.append(
                ConvTranspose(
                    nm, ins[:1], outs, w, b,
                    a.get("strides", [1] * nd), a.get("pads", [0] * 2 * nd),
                    a.get("output_padding", [0] * nd), a.get("dilations", [1] * nd), a.get("group", 1),
                )
            )  # fmt: skip
        elif op in ("InstanceNormalization", "InstanceNormalization_TRT"):
            if op == "InstanceNormalization":
                gamma, beta = const(ins[1], n), const(ins[2], n)
                relu, alpha = False, 0.0
            else:
                gamma = _floats(a.get("scales"), f"{where}: {nm}.scales")
                beta = _floats(a.get("bias"), f"{where}: {nm}.bias")
                relu, alpha = bool(a.get("relu", 0)), float(a.get("alpha", 0.0))
            eps = float(a.get("epsilon", 1e-5))
            users = consumers.get(outs[0], [])
            if (
                fuse_relu
                and not relu
                and len(users) == 1
                and users[0].op_type == "Relu"
                and outs[0] not in graph_outputs
            ):
                relu, outs = True, list(users[0].output)
                skip.add(users[0].name)
            nodes.append(InstanceNorm(nm, ins[:1], outs, gamma, beta, eps, relu, alpha))
        elif op == "Relu":
            nodes.append(Relu(nm, ins, outs))
        elif op == "Identity":
            nodes.append(Identity(nm, ins, outs))
        elif op == "Concat":
            nodes.append(Concat(nm, ins, outs, a.get("axis", 1)))
        elif op == "CONV3D3X3X3C1K32_TRT":
            cin = int(a.get("inputChannels", 1))
            w = _floats(a.get("weights"), f"{where}: {nm}.weights").reshape(-1, cin, 3, 3, 3)
            nodes.append(Conv(nm, ins[:1], outs, w, None, [1, 1, 1], [1] * 6, [1, 1, 1], 1))
        elif op == "CONV3D1X1X1K4_TRT":
            cin = int(a.get("inputChannels", 32))
            w = _floats(a.get("weights"), f"{where}: {nm}.weights").reshape(-1, cin, 1, 1, 1)
            b = _floats(a.get("bias"), f"{where}: {nm}.bias")
            nodes.append(Conv(nm, ins[:1], outs, w, b, [1, 1, 1], [0] * 6, [1, 1, 1], 1))
        elif op == "PIXELSHUFFLE3D_TRT":
            nodes.append(
                PixelShuffleConcat(
                    nm, [i for i in ins if i], outs, a.get("R", 2), a.get("S", 2), a.get("T", 2)
                )
            )
        elif op == "Reshape":
            nodes.append(Reshape(nm, ins, outs, const(ins[1], n).astype(np.int64).tolist()))
        elif op == "Transpose":
            nodes.append(Transpose(nm, ins, outs, a["perm"]))
        else:
            raise BadInputError(f"{where}: node {nm} has op {op}, which the torch converter does not support")
    if not nodes or output_name not in {t for nd in nodes for t in nd.outputs}:
        raise BadInputError(f"{where}: no node produces the output {output_name!r}")
    return OnnxUNet(nodes, graph_inputs[0], output_name)


def surgered(model: onnx.ModelProto) -> onnx.ModelProto:
    """NVIDIA's plugin-form graph when core.surgery is present, else the model unchanged."""
    try:
        from core.surgery import surgery
    except ImportError:
        return model
    return surgery(model, form="plugin")


def quantizable_tensors(net: OnnxUNet) -> list[str]:
    """Tensors an INT8/FP8 engine keeps quantized: the input and every node output except the
    float logits at the end (the last conv and anything after it, e.g. the Identity to ``output``)."""
    names = net.tensor_names
    last_conv = max(i for i, n in enumerate(net.nodes) if isinstance(n, Conv))
    tail = {t for n in list(net.nodes)[last_conv:] for t in n.outputs}
    return [t for t in names if t not in tail]


def apply_quantization(net: OnnxUNet, amax: dict[str, float], kind: str) -> OnnxUNet:
    """Set ``net`` (float32) up for ``kind`` with the calibration ranges ``amax``.

    - "int8" (simulated, NVIDIA's all-INT8 engine): per-output-channel int8 weights for every conv /
      deconv, and every tensor but the final logits fake-quantized per tensor (RNE, saturate at 127).
    - "fp8" (what plugins.ops.conv3x3x3 computes): each 3^3 conv takes e4m3 operands, its input scaled
      by amax/448 and per-output-channel weight scales; everything else stays in the float dtype. With
      the kernels present this runs the real fp8 kernels, else the same numbers in plain torch."""
    if kind not in QUANT_PRECISIONS:
        raise UsageError(f"quantization kind {kind} is not one of {', '.join(QUANT_PRECISIONS)}")
    convs = [n for n in net.nodes if isinstance(n, Conv)]
    if kind == "int8":
        wanted = quantizable_tensors(net)
    else:
        wanted = [net.input_name] + [n.inputs[0] for n in convs if n.is_3x3]
    missing = [t for t in wanted if t not in amax]
    if missing:
        raise BadInputError(
            f"calibration cache has no range for {len(missing)} tensors of this model "
            f"(e.g. {missing[0]!r}); recalibrate for this model"
        )
    net.quant_kind = kind
    net.in_scale = float(amax[net.input_name]) / INT8_MAX
    for n in convs:
        n.in_scale = net.in_scale
    with torch.no_grad():
        for n in net.nodes:
            if not isinstance(n, Conv | ConvTranspose):
                continue
            axis = 1 if isinstance(n, ConvTranspose) else 0
            if kind == "int8":
                q, ch = fake_quant_weight(n.weight.data, kind, axis)
                n.weight.data.copy_(q)
                net.weight_amax[n.onnx_name] = ch
            elif isinstance(n, Conv) and n.is_3x3:
                n.fp8_amax = float(amax[n.inputs[0]])
                net.weight_amax[n.onnx_name] = fake_quant_weight(n.weight.data, kind, axis)[1]
    if kind == "int8":
        net.input_quant = float(amax[net.input_name])
        net.act_quant = {t: float(amax[t]) for t in wanted if t != net.input_name}
    return net


def prepare(
    net: OnnxUNet, device: torch.device | str, dtype: torch.dtype, channels_last: bool = True
) -> OnnxUNet:
    """Move to ``device``; conv weights in ``dtype`` (and channels-last), norm affine stays fp32."""
    net = net.eval().requires_grad_(False)
    for n in net.nodes:
        for p in n.parameters(recurse=False):
            p.data = p.data.to(device=device, dtype=dtype)
            if channels_last and p.dim() == 5:
                p.data = p.data.contiguous(memory_format=CL3D)
        for name, b in n.named_buffers(recurse=False):
            setattr(n, name, b.to(device=device))
    return net


# --- engine -------------------------------------------------------------------------------------


def _resolve_device(device: int | str | None) -> torch.device:
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
        """``fn`` replaces ``net`` as the window function (the fused executor, plugins.unet)."""
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


def build_net(
    model: str | Path | onnx.ModelProto,
    *,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
    calibration: Any = None,
    use_surgery: bool = True,
    channels_last: bool = True,
) -> OnnxUNet:
    """Convert and prepare: surgery (when available) -> convert -> [simulated quantization] -> device."""
    m = load_onnx(model)
    net = convert(surgered(m) if use_surgery else m)
    if precision in QUANT_PRECISIONS:
        if calibration is None:
            raise MissingInputError(
                f"precision {precision} needs a calibration cache (run `unet3d calibrate`)"
            )
        apply_quantization(net, dict(calibration.amax), precision)
        dtype = torch.float32 if torch.device(device).type == "cpu" else torch.float16
    else:
        dtype = DTYPES[precision]
    return prepare(net, device, dtype, channels_last)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TorchBackend:
    name = NAME

    @property
    def precisions(self) -> tuple[str, ...]:
        return BASE_PRECISIONS + QUANT_PRECISIONS

    def availability(self) -> Availability:
        if not torch.cuda.is_available():
            return Availability(False, f"no CUDA device (torch {torch.__version__}; CPU is for tests only)")
        devices = tuple(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
        return Availability(True, "", devices)

    def details(self) -> dict[str, str]:
        """Versions and kernel status, for `unet3d status` and the bench headers."""
        info = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = "not installed (plain torch ops only)"
        k = Kernels(True)
        info["plugins"] = ", ".join(k.present) or (k.error or "none")
        return info

    def load(
        self,
        model_path: Path,
        *,
        precision: str = "fp32",
        batch_size: int = 1,
        device: int | str = 0,
        calibration_cache: Path | None = None,
        workspace: Workspace | None = None,  # unused: torch engines are built in memory
        use_plugins: bool | None = None,
        cuda_graphs: bool = True,
        channels_last: bool = True,
        compile_mode: str | None = None,
        use_surgery: bool = True,
        executor: str | None = None,
    ) -> TorchEngine:
        if precision not in self.precisions:
            raise UsageError(f"--precision={precision} is not one of {', '.join(self.precisions)} (torch)")
        if batch_size < 1:
            raise UsageError(f"--gpu_batch_size={batch_size} must be at least 1")
        dev = _resolve_device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"backend torch is unavailable: no CUDA device (torch {torch.__version__})"
            )
        model_path = Path(model_path)
        calibration = None
        if precision in QUANT_PRECISIONS:
            from core import calibration_cache as cc

            if calibration_cache is None:
                raise MissingInputError(
                    f"precision {precision} needs a calibration cache (run `unet3d calibrate`)"
                )
            calibration = cc.load(calibration_cache)
            cc.check_model(
                calibration, file_sha256(model_path) if model_path.is_file() else "", calibration_cache
            )
        return make_engine(
            model_path,
            precision=precision,
            batch_size=batch_size,
            device=dev,
            amax=None if calibration is None else dict(calibration.amax),
            use_plugins=use_plugins,
            cuda_graphs=cuda_graphs,
            channels_last=channels_last,
            compile_mode=compile_mode,
            use_surgery=use_surgery,
            model_sha256=file_sha256(model_path) if model_path.is_file() else "",
            executor=executor,
        )


def gemm_inputs(model: onnx.ModelProto) -> list[str]:
    """Input tensor names of the Conv / ConvTranspose nodes of an original-form graph in graph order,
    the output conv excluded: index i is plugins.unet's GEMM layer i (first conv, 11 encoder convs,
    then per decoder block the deconv and its two convs)."""
    return [n.input[0] for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")][:-1]


def fused_act_scales(model: onnx.ModelProto, amax: dict[str, float]) -> dict[int, float]:
    """Calibration-cache ranges -> plugins.unet's per-layer fp8 input scales (amax / 448)."""
    return {i: max(float(amax[t]), 1e-6) / FP8_MAX for i, t in enumerate(gemm_inputs(model)) if t in amax}


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
    default except fp8 on CUDA) or "fused" (plugins.unet.FusedUNet3D: the whole network as fused
    Triton kernels, CUDA only, fp32/fp16/bf16/fp8, original-form models of the MLPerf topology; the
    default for fp8 on CUDA). Env UNET3D_TORCH_EXECUTOR."""
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
    # fp8 on CUDA defaults to the fused executor: the converted graph only simulates fp8 (cuDNN has no
    # fp8 3D convolution), so it would be neither fast nor the arithmetic the fused kernels run
    default = "fused" if precision == "fp8" and dev.type == "cuda" else "graph"
    executor = executor or os.environ.get(ENV_EXECUTOR, "") or default
    if executor not in EXECUTORS:
        raise UsageError(f"torch executor {executor!r} is not one of {', '.join(EXECUTORS)}")
    if executor == "fused":
        return _fused_engine(model, precision, batch_size, dev, amax, cuda_graphs, compile_mode, model_sha256)
    if precision == "fp32" and dev.type == "cuda":
        # fp32 means fp32 (NVIDIA's builder clears TF32 too); process-wide torch setting
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    calibration = None if amax is None else _Ranges(amax)
    net = build_net(
        model,
        precision=precision,
        device=dev,
        calibration=calibration,
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
    if precision not in ("fp32", "fp16", "bf16", "fp8"):
        raise UsageError(f"the fused torch executor runs fp32, fp16, bf16 and fp8, not {precision}")
    try:
        from plugins.unet import FusedUNet3D
    except Exception as exc:
        raise BackendUnavailableError(f"the fused torch executor is unavailable: {exc}") from None
    m = load_onnx(model)
    if any(n.op_type.endswith("_TRT") for n in m.graph.node):
        raise BadInputError("the fused torch executor reads original-form models, not surgered ones")
    input_amax = (
        INT8_INPUT_AMAX_DEFAULT if amax is None else float(amax.get("input", INT8_INPUT_AMAX_DEFAULT))
    )
    scales = fused_act_scales(m, amax) if (precision == "fp8" and amax is not None) else None
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


class _Ranges:
    def __init__(self, amax: dict[str, float]) -> None:
        self.amax = amax


BACKEND = TorchBackend()


def available_kernels() -> Iterable[str]:
    return Kernels(True).present
