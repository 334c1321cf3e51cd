"""The converted graph: one small ``torch.nn.Module`` per ONNX node and :class:`OnnxUNet`, which runs
them in graph order.

Each node module keeps its ONNX output tensor names (``outputs``), so forward hooks see every tensor
under the name the TensorRT calibration cache uses (core.calibration relies on that). Execution is
channels-last 3-D with an explicit dtype; a node uses the fused Triton kernels of ``plugins.ops``
(:class:`Kernels`) where present and plain torch ops otherwise; simulated int8 / fp8 goes through
``core.backends.torch.quant``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch spelling
from torch import nn

from core.backends.torch.quant import FP8_MAX, INT8_MAX, fake_quant, fake_quant_weight_tensor
from core.benchmark import INT8_INPUT_AMAX_DEFAULT, NUM_CLASSES
from core.errors import BadInputError

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
            # not fake_quant_weight: its host copy of the amax breaks CUDA-graph capture
            wq, _ = fake_quant_weight_tensor(self.weight, "fp8")
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
    # registered buffers: declared so that attribute access is typed (nn.Module.__getattr__ is not)
    gamma: torch.Tensor
    beta: torch.Tensor

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
        # an nn.ModuleList (it registers the nodes), typed by its elements: ModuleList yields plain Modules
        self.nodes = cast("Sequence[Node]", nn.ModuleList(nodes))
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
