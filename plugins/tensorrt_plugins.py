"""NVIDIA's four fused 3D-UNet ops as TensorRT 10 Python plugins ("QDP", ``tensorrt.plugin``).

NEVER EXECUTED HERE: TensorRT cannot be installed on the machines this project is developed on.
This module is type-checked against tensorrt-stubs 10.13 (which do not cover ``tensorrt.plugin``;
its API is taken from TensorRT's documentation and sources) and its TensorRT-free half (the plugin
fields the graph surgery writes, their validation and their encoding) is unit-tested. Expect the first
run on a machine with TensorRT to find problems in :func:`register_plugins`.

One kernel, two registrations: every ``impl`` calls the same functions as ``plugins.ops`` (the torch
custom ops ``torch.ops.unet3d.*`` that the torch backend uses), so TensorRT and PyTorch run the same
Triton kernels. The ops keep NVIDIA's names and attribute names (NV ``builder.py``, section 8 of the
benchmark description). The widths are not fixed to NVIDIA's 32: the shared phantom model has 16
channels at full resolution, and ``core.surgery`` writes the real ``inputChannels`` / weight sizes.
The surgery stores weights as TENSOR attributes and leaves the convs' own attributes (kernel_shape,
pads, ...) on the nodes, as NVIDIA's graph does; :func:`retarget_namespace` drops those leftovers from
the nodes it hands to our plugins, so TensorRT passes exactly the fields registered below:

==========================  ======================================================  ==============
op (ONNX node op_type)      attributes (as the surgery writes them)                 our kernel
==========================  ======================================================  ==============
CONV3D3X3X3C1K32_TRT        inputChannels=1, weights (K*27 floats, K=32)            conv3x3x3_c1
CONV3D1X1X1K4_TRT           inputChannels=C, weights (3*C floats, C=32), bias (3)   conv1x1x1_bias
PIXELSHUFFLE3D_TRT          R=2, S=2, T=2 (two inputs: conv output, skip)           pixel_shuffle3d_concat
InstanceNormalization_TRT   scales (C), bias (C), epsilon, relu (0/1), alpha        instance_norm_relu
==========================  ======================================================  ==============

Namespace: QDP plugin ids are ``namespace::name``; NVIDIA's nodes say ``plugin_namespace=""``. The
TensorRT backend rewrites that attribute to :data:`NAMESPACE` on the nodes it wants served by these
plugins (:func:`retarget_namespace`), after the one graph surgery (``core.surgery``) has run.

InstanceNormalization_TRT is TensorRT's built-in plugin (version "2", in libnvinfer_plugin). The
backend keeps the built-in for INT8 engines: it has fused INT8 CDHW32 (and FP16 DHWC8) kernels, so
the whole INT8 chain stays in CDHW32 without a reformat. Our Triton kernel works on LINEAR FP32/FP16
tensors only; in an INT8 engine every one of the 22 norms would be wrapped in int8->fp16->int8
reformats (about 3x the memory traffic of the norm itself at 128^3 x 32 channels) plus a Python
callback per layer per enqueue (a JIT plugin). Ours is registered too (``unet3d::
InstanceNormalization_TRT``) and is the choice for FP16/FP32 linear engines or for A/B tests.

Python plugins run as JIT callbacks: an engine that contains them can only be deserialized in a Python
process that has called :func:`register_plugins` first (the backend does). An AOT variant
(``trtp.aot_impl``, Triton compiled to PTX and embedded in the engine) would remove that dependency
and the per-layer Python overhead; it is not written.

No ``from __future__ import annotations`` here on purpose: ``tensorrt.plugin`` reads the decorated
functions' annotations as objects (``trtp.TensorDesc``, ``numpy.typing.NDArray[np.float32]``).
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

NAMESPACE = "unet3d"
# Bump when a registration below changes (I/O descriptors, formats, attributes): it is part of the
# engine fingerprint, so engines built against an older registration are rebuilt.
REGISTRATION_VERSION = 1

CONV3X3 = "CONV3D3X3X3C1K32_TRT"
CONV1X1 = "CONV3D1X1X1K4_TRT"
PIXELSHUFFLE = "PIXELSHUFFLE3D_TRT"
INSTANCENORM = "InstanceNormalization_TRT"


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "int" | "float" | "floats" | "str"
    length: int | None = None  # fixed length of a "floats" field, when the op fixes it
    same_as: str | None = None  # a "floats" field whose length must equal another's
    required: bool = True


@dataclass(frozen=True)
class PluginSpec:
    op: str
    nvidia_version: str  # plugin_version the surgery writes
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


SPECS: dict[str, PluginSpec] = {
    CONV3X3: PluginSpec(CONV3X3, "1", (Field("inputChannels", "int"), Field("weights", "floats"))),
    CONV1X1: PluginSpec(
        CONV1X1,
        "1",
        (Field("inputChannels", "int"), Field("weights", "floats"), Field("bias", "floats", length=3)),
    ),
    PIXELSHUFFLE: PluginSpec(PIXELSHUFFLE, "1", (Field("R", "int"), Field("S", "int"), Field("T", "int"))),
    INSTANCENORM: PluginSpec(
        INSTANCENORM,
        "2",
        (
            Field("epsilon", "float"),
            Field("scales", "floats"),
            Field("bias", "floats", same_as="scales"),
            Field("relu", "int"),
            Field("alpha", "float"),
        ),
    ),
}

# Attributes the ONNX parser uses to find the creator; never plugin fields of ours.
LOOKUP_ATTRS = ("plugin_version", "plugin_namespace")
# A replaced Conv keeps its own attributes in NVIDIA's graph (and ours); they are not plugin fields.
CONV_LEFTOVERS = ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad")


class PluginFieldError(ValueError):
    """Plugin attributes that do not describe a valid op (the message names op and field)."""


# --- validation and encoding (pure) -------------------------------------------------------------


def validate_attrs(op: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise an op's attributes: ints as int, floats as float, float lists as 1-D
    float32 arrays. Unknown names (other than the lookup attributes) are refused."""
    if op not in SPECS:
        raise PluginFieldError(f"{op}: not one of the plugins {', '.join(SPECS)}")
    spec = SPECS[op]
    known = {f.name for f in spec.fields}
    extra = sorted(set(attrs) - known - set(LOOKUP_ATTRS))
    if extra:
        raise PluginFieldError(f"{op}: unknown attribute(s) {', '.join(extra)}")
    out: dict[str, Any] = {}
    for f in spec.fields:
        if f.name not in attrs:
            if f.required:
                raise PluginFieldError(f"{op}: attribute {f.name} is missing")
            continue
        v = attrs[f.name]
        if f.kind == "int":
            arr = np.asarray(v)
            if arr.size != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise PluginFieldError(f"{op}: {f.name} must be one integer, got {v!r}")
            out[f.name] = int(arr.reshape(()))
        elif f.kind == "float":
            arr = np.asarray(v)
            if arr.size != 1 or not (
                np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            ):
                raise PluginFieldError(f"{op}: {f.name} must be one number, got {v!r}")
            x = float(arr.reshape(()))
            if not math.isfinite(x):
                raise PluginFieldError(f"{op}: {f.name} is {x}")
            out[f.name] = x
        elif f.kind == "floats":
            arr = np.asarray(v, dtype=np.float32).reshape(-1)
            if arr.size == 0:
                raise PluginFieldError(f"{op}: {f.name} is empty")
            if f.length is not None and arr.size != f.length:
                raise PluginFieldError(f"{op}: {f.name} has {arr.size} values, expected {f.length}")
            if not np.all(np.isfinite(arr)):
                raise PluginFieldError(f"{op}: {f.name} has non-finite values")
            out[f.name] = arr
        else:  # pragma: no cover - no str fields today
            out[f.name] = str(v)
    for f in spec.fields:
        if f.same_as and f.name in out and out[f.name].size != out[f.same_as].size:
            raise PluginFieldError(
                f"{op}: {f.name} has {out[f.name].size} values but {f.same_as} has {out[f.same_as].size}"
            )
    _check_semantics(op, out)
    return out


def _check_semantics(op: str, a: dict[str, Any]) -> None:
    # The kernels implement exactly NVIDIA's 3D-UNet configuration; refuse anything else at build time
    # rather than compute something different.
    if op == CONV3X3:
        if a["inputChannels"] != 1:
            raise PluginFieldError(f"{op}: inputChannels={a['inputChannels']}, the kernel needs 1")
        if a["weights"].size % 27:
            raise PluginFieldError(f"{op}: weights has {a['weights'].size} values, not K*27")
    if op == CONV1X1:
        c = a["inputChannels"]
        if c < 1 or a["weights"].size != 3 * c:
            raise PluginFieldError(f"{op}: weights has {a['weights'].size} values, expected 3*{c}")
    if op == PIXELSHUFFLE and (a["R"], a["S"], a["T"]) != (2, 2, 2):
        raise PluginFieldError(f"{op}: R,S,T={a['R']},{a['S']},{a['T']}, the kernel needs 2,2,2")
    if op == INSTANCENORM:
        if a["relu"] not in (0, 1):
            raise PluginFieldError(f"{op}: relu={a['relu']}, expected 0 or 1")
        if a["alpha"] != 0.0:
            raise PluginFieldError(f"{op}: alpha={a['alpha']} (leaky ReLU) is not supported by our kernel")
        if a["epsilon"] <= 0.0:
            raise PluginFieldError(f"{op}: epsilon={a['epsilon']} must be > 0")


def _ignored(op: str) -> tuple[str, ...]:
    return LOOKUP_ATTRS + (CONV_LEFTOVERS if op in (CONV3X3, CONV1X1) else ())


def attrs_from_onnx(node: Any) -> dict[str, Any]:
    """The validated plugin fields of a surgered ``onnx.NodeProto`` (lookup attributes and a replaced
    conv's leftover attributes dropped; TENSOR attributes read as arrays)."""
    import onnx
    from onnx import numpy_helper

    raw: dict[str, Any] = {}
    for a in node.attribute:
        if a.name in _ignored(node.op_type):
            continue
        v = onnx.helper.get_attribute_value(a)
        raw[a.name] = numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v
    return validate_attrs(node.op_type, raw)


def encode_fields(op: str, attrs: Mapping[str, Any]) -> list[tuple[str, np.ndarray, str]]:
    """Attributes -> the plugin fields TensorRT passes to a creator: (name, data, PluginFieldType name).
    Integers travel as INT32 arrays of one value, floats as FLOAT32 arrays (what the ONNX parser
    produces from INT / FLOAT / FLOATS attributes)."""
    a = validate_attrs(op, attrs)
    out: list[tuple[str, np.ndarray, str]] = []
    for f in SPECS[op].fields:
        if f.name not in a:
            continue
        v = a[f.name]
        if f.kind == "int":
            out.append((f.name, np.array([v], dtype=np.int32), "INT32"))
        elif f.kind == "float":
            out.append((f.name, np.array([v], dtype=np.float32), "FLOAT32"))
        else:
            out.append((f.name, np.ascontiguousarray(v, dtype=np.float32), "FLOAT32"))
    return out


def decode_fields(op: str, fields: Iterable[tuple[str, Any, str]]) -> dict[str, Any]:
    """Inverse of :func:`encode_fields`."""
    if op not in SPECS:
        raise PluginFieldError(f"{op}: not one of the plugins {', '.join(SPECS)}")
    spec = SPECS[op]
    raw: dict[str, Any] = {}
    for name, data, ftype in fields:
        if name in LOOKUP_ATTRS:
            continue
        try:
            f = spec.field(name)
        except KeyError:
            raise PluginFieldError(f"{op}: unknown field {name}") from None
        arr = np.asarray(data)
        want = "INT32" if f.kind == "int" else "FLOAT32"
        if ftype != want:
            raise PluginFieldError(f"{op}: field {name} has type {ftype}, expected {want}")
        # scalars travel as one-element arrays; validate_attrs refuses any other size
        raw[name] = arr.reshape(-1) if f.kind == "floats" or arr.size != 1 else arr.reshape(-1)[0]
    return validate_attrs(op, raw)


def serialize_attrs(op: str, attrs: Mapping[str, Any]) -> bytes:
    """A stable byte form of an op's attributes (for fingerprints and engine metadata):
    per field, in spec order: name, kind, count, little-endian data."""
    parts = [op.encode(), b"\0"]
    for name, data, ftype in encode_fields(op, attrs):
        parts += [name.encode(), b"\0", ftype.encode(), b"\0", int(data.size).to_bytes(4, "little")]
        parts.append(data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes())
    return b"".join(parts)


def weights_3x3x3(attrs: Mapping[str, Any]) -> np.ndarray:
    """CONV3D3X3X3C1K32_TRT weights as the kernel's (K, 1, 3, 3, 3) tensor (C order of ONNX's W)."""
    return np.asarray(attrs["weights"], dtype=np.float32).reshape(-1, 1, 3, 3, 3)


def weights_1x1x1(attrs: Mapping[str, Any]) -> np.ndarray:
    """CONV3D1X1X1K4_TRT weights as (3, C): row k = output class k (ONNX W[k, c, 0, 0, 0])."""
    return np.asarray(attrs["weights"], dtype=np.float32).reshape(3, -1)


# --- the ONNX side ------------------------------------------------------------------------------


def retarget_namespace(model: Any, ops: Sequence[str], namespace: str = NAMESPACE) -> int:
    """Point the surgered nodes whose op_type is in ``ops`` at our plugins: set ``plugin_namespace``
    to ``namespace`` and ``plugin_version`` to "1" (QDP plugins are version 1), and drop the attributes
    that are not plugin fields (a replaced conv's kernel_shape, pads, ...). Edits ``model`` (an
    ``onnx.ModelProto``) in place; returns the number of nodes changed. Checks each node's fields, so a
    surgery that writes something our kernels cannot run fails here, not inside TensorRT."""
    import onnx

    wanted = set(ops)
    unknown = wanted - set(SPECS)
    if unknown:
        raise PluginFieldError(f"not plugins of ours: {', '.join(sorted(unknown))}")
    changed = 0
    for node in model.graph.node:
        if node.op_type not in wanted:
            continue
        attrs_from_onnx(node)
        keep = [a for a in node.attribute if a.name not in _ignored(node.op_type)]
        del node.attribute[:]
        node.attribute.extend(keep)
        node.attribute.append(onnx.helper.make_attribute("plugin_namespace", namespace))
        node.attribute.append(onnx.helper.make_attribute("plugin_version", "1"))
        changed += 1
    return changed


def plugin_versions(ops: Sequence[str]) -> dict[str, str]:
    """What an engine fingerprint records about the plugins it uses."""
    return {f"{NAMESPACE}::{op}": f"1/reg{REGISTRATION_VERSION}" for op in sorted(ops)}


# --- TensorRT registration ----------------------------------------------------------------------

_registered = False


def _as_torch(t: Any) -> Any:
    """A zero-copy torch view of a ``trtp.Tensor`` (it exposes ``__cuda_array_interface__``).
    Module-level so tests can run the impls on CPU tensors."""
    import torch

    return torch.as_tensor(t, device="cuda")


def _on_stream(stream: int) -> Any:
    """Run torch work on TensorRT's stream for this enqueue."""
    import torch

    return torch.cuda.stream(torch.cuda.ExternalStream(stream))


def register_plugins() -> None:
    """Register the four ops with ``tensorrt.plugin`` (idempotent). Needs tensorrt >= 10.7, torch with
    CUDA and ``plugins.ops``; call before parsing a surgered model and before deserializing an engine."""
    global _registered
    if _registered:
        return

    import tensorrt as trt
    import tensorrt.plugin as trtp
    import torch

    import plugins.ops as ops  # the same kernels the torch backend runs

    # Attribute arrays come back on every enqueue; upload each distinct one once per device/dtype
    # (22 norms x 2 vectors + 2 convs per forward would otherwise be ~50 small H2D copies per call).
    consts: dict[tuple[bytes, tuple[int, ...], str, str], torch.Tensor] = {}

    def const(arr: np.ndarray, shape: tuple[int, ...], like: torch.Tensor, dtype: Any = None) -> torch.Tensor:
        a = np.ascontiguousarray(arr, dtype=np.float32).reshape(shape)
        dt = dtype or torch.float32
        key = (a.tobytes(), shape, str(like.device), str(dt))
        t = consts.get(key)
        if t is None:
            t = consts[key] = torch.from_numpy(a).to(like.device, dt)
        return t

    def float_like(dtype: Any) -> Any:
        return trt.float16 if dtype == trt.int8 else dtype

    # ---- first conv: (N,1,D,H,W) -> (N,K,D,H,W), no bias; int8 input is dequantized in the kernel.
    # The kernels write channels-last; copy_ into TensorRT's LINEAR (NCDHW) buffer transposes.
    @trtp.register(f"{NAMESPACE}::{CONV3X3}")
    def _conv3x3_desc(
        inp0: trtp.TensorDesc,
        inputChannels: int,  # noqa: N803 - NVIDIA's attribute name
        weights: npt.NDArray[np.float32],
    ) -> trtp.TensorDesc:
        validate_attrs(CONV3X3, {"inputChannels": inputChannels, "weights": weights})
        s, k = inp0.shape_expr, int(np.asarray(weights).size // 27)
        return trtp.from_shape_expr((s[0], k, s[2], s[3], s[4]), dtype=float_like(inp0.dtype))

    @trtp.autotune(f"{NAMESPACE}::{CONV3X3}")
    def _conv3x3_tune(
        inp0: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc]
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("INT8|FP32|FP16, FP16|FP32|FP16", "LINEAR")]

    @trtp.impl(f"{NAMESPACE}::{CONV3X3}")
    def _conv3x3_impl(
        inp0: trtp.Tensor, weights: npt.NDArray[np.float32], outputs: tuple[trtp.Tensor], stream: int
    ) -> None:
        with _on_stream(stream):
            x = _as_torch(inp0)
            w = const(weights, weights_3x3x3({"weights": weights}).shape, x)
            in_scale = float(inp0.scale) if inp0.dtype == trt.int8 else None
            y = ops.conv3x3x3_c1(x, w, in_scale=in_scale)
            out = _as_torch(outputs[0])
            out.copy_(y)

    # ---- last conv: (N,C,D,H,W) -> (N,3,D,H,W) + bias (fp32 from the kernel, cast by copy_)
    @trtp.register(f"{NAMESPACE}::{CONV1X1}")
    def _conv1x1_desc(
        inp0: trtp.TensorDesc,
        inputChannels: int,  # noqa: N803
        weights: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32],
    ) -> trtp.TensorDesc:
        validate_attrs(CONV1X1, {"inputChannels": inputChannels, "weights": weights, "bias": bias})
        s = inp0.shape_expr
        return trtp.from_shape_expr((s[0], 3, s[2], s[3], s[4]), dtype=inp0.dtype)

    @trtp.autotune(f"{NAMESPACE}::{CONV1X1}")
    def _conv1x1_tune(
        inp0: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc]
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.impl(f"{NAMESPACE}::{CONV1X1}")
    def _conv1x1_impl(
        inp0: trtp.Tensor,
        weights: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32],
        outputs: tuple[trtp.Tensor],
        stream: int,
    ) -> None:
        with _on_stream(stream):
            x = _as_torch(inp0)
            w = const(weights, weights_1x1x1({"weights": weights}).shape, x, x.dtype)
            b = const(bias, (3,), x, x.dtype)
            _as_torch(outputs[0]).copy_(ops.conv1x1x1_bias(x, w, b))

    # ---- ConvTranspose as 1x1x1 conv + depth-to-space, fused with the Concat: (x8k, skip) -> concat
    @trtp.register(f"{NAMESPACE}::{PIXELSHUFFLE}")
    def _ps_desc(inp0: trtp.TensorDesc, inp1: trtp.TensorDesc, R: int, S: int, T: int) -> trtp.TensorDesc:  # noqa: N803
        validate_attrs(PIXELSHUFFLE, {"R": R, "S": S, "T": T})
        a, b = inp0.shape_expr, inp1.shape_expr
        return trtp.from_shape_expr((a[0], a[1] // (R * S * T) + b[1], b[2], b[3], b[4]), dtype=inp0.dtype)

    @trtp.autotune(f"{NAMESPACE}::{PIXELSHUFFLE}")
    def _ps_tune(
        inp0: trtp.TensorDesc, inp1: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc]
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.impl(f"{NAMESPACE}::{PIXELSHUFFLE}")
    def _ps_impl(inp0: trtp.Tensor, inp1: trtp.Tensor, outputs: tuple[trtp.Tensor], stream: int) -> None:
        with _on_stream(stream):
            _as_torch(outputs[0]).copy_(ops.pixel_shuffle3d_concat(_as_torch(inp0), _as_torch(inp1)))

    # ---- InstanceNorm (+ReLU): ours, for LINEAR engines; INT8 engines keep TensorRT's built-in v2
    @trtp.register(f"{NAMESPACE}::{INSTANCENORM}")
    def _in_desc(
        inp0: trtp.TensorDesc,
        epsilon: float,
        scales: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32],
        relu: int,
        alpha: float,
    ) -> trtp.TensorDesc:
        validate_attrs(
            INSTANCENORM, {"epsilon": epsilon, "scales": scales, "bias": bias, "relu": relu, "alpha": alpha}
        )
        return inp0.like()

    @trtp.autotune(f"{NAMESPACE}::{INSTANCENORM}")
    def _in_tune(inp0: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16", "LINEAR")]

    @trtp.impl(f"{NAMESPACE}::{INSTANCENORM}")
    def _in_impl(
        inp0: trtp.Tensor,
        epsilon: float,
        scales: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32],
        relu: int,
        outputs: tuple[trtp.Tensor],
        stream: int,
    ) -> None:
        with _on_stream(stream):
            x = _as_torch(inp0)
            g = const(scales, (int(np.asarray(scales).size),), x)
            b = const(bias, (int(np.asarray(bias).size),), x)
            y = ops.instance_norm_relu(x, g, b, eps=float(epsilon), relu=bool(relu))
            _as_torch(outputs[0]).copy_(y)

    _registered = True
