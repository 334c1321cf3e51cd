"""The ONNX -> torch converter: :func:`convert` walks the ONNX graph node by node and builds one node
module (``core.backends.torch.nodes``) per node, with the weights taken from the initializers (or the
plugin attributes), so any model with the MLPerf topology and any weights runs; there is no
hand-written copy of the network. It reads both forms:

- the original export: Conv, InstanceNormalization, Relu, ConvTranspose, Concat (plus Identity,
  Reshape, Transpose and Constant for the runnable "onnx" surgery form);
- NVIDIA's surgered "plugin" form (``core.surgery.surgery(model, form="plugin")``):
  ``InstanceNormalization_TRT`` (``scales``/``bias`` attributes, ``relu``/``alpha``),
  ``CONV3D3X3X3C1K32_TRT``, ``CONV3D1X1X1K4_TRT`` + Identity, and 1x1x1 Conv + ``PIXELSHUFFLE3D_TRT``
  (conv output, skip) in place of ConvTranspose + Concat.

Then :func:`apply_quantization` sets the net up for simulated int8 / fp8 with the calibration ranges,
:func:`prepare` moves it to a device and dtype, and :func:`build_net` does all of it in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from core.backends.torch.nodes import (
    CL3D,
    Concat,
    Conv,
    ConvTranspose,
    Identity,
    InstanceNorm,
    Node,
    OnnxUNet,
    PixelShuffleConcat,
    Relu,
    Reshape,
    Transpose,
)
from core.backends.torch.quant import DTYPES, INT8_MAX, QUANT_PRECISIONS, fake_quant_weight
from core.errors import BadInputError, MissingInputError, UsageError


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
    for c in convs:
        c.in_scale = net.in_scale
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


def build_net(
    model: str | Path | onnx.ModelProto,
    *,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
    amax: dict[str, float] | None = None,
    use_surgery: bool = True,
    channels_last: bool = True,
) -> OnnxUNet:
    """Convert and prepare: surgery (when available) -> convert -> [simulated quantization with the
    calibration ranges ``amax``] -> device."""
    m = load_onnx(model)
    net = convert(surgered(m) if use_surgery else m)
    if precision in QUANT_PRECISIONS:
        if amax is None:
            raise MissingInputError(
                f"precision {precision} needs a calibration cache (run `unet3d calibrate`)"
            )
        apply_quantization(net, dict(amax), precision)
        dtype = torch.float32 if torch.device(device).type == "cpu" else torch.float16
    else:
        dtype = DTYPES[precision]
    return prepare(net, device, dtype, channels_last)
