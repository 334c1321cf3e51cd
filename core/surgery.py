"""The one graph surgery: NVIDIA's ``UnetGraphSurgeon.fuse_ops`` (NV ``code/3d-unet/tensorrt/builder.py``)
with onnx-graphsurgeon, in two forms.

``form="plugin"`` is the TensorRT graph: custom ops (in ``plugin_domain``) that the TensorRT ONNX parser
maps to plugins and that the torch backend reads through :func:`describe`. Steps, in NVIDIA's order:

1. every ``InstanceNormalization`` -> ``InstanceNormalization_TRT`` (plugin v2): scale and bias inputs become
   the attributes ``scales`` / ``bias``, ``epsilon`` is kept, ``relu=0, alpha=0.0``; a following ``Relu`` is
   absorbed (``relu=1``; the norm takes over the Relu's output tensor);
2. (``plugin_optimizations``, NVIDIA: INT8 and FP32 builds only)
   a. the conv after the last norm -> ``CONV3D1X1X1K4_TRT`` (``weights``, ``bias``, ``inputChannels``);
      its output is renamed ``conv3d1x1x1k4_out`` and an ``Identity`` produces the graph output ``output``;
   b. the first conv -> ``CONV3D3X3X3C1K32_TRT`` (``weights``, ``inputChannels=1``);
   c. every ConvTranspose (k2 s2, bias) -> 1x1x1 ``Conv`` with
      W'[k*8 + 4td + 2th + tw, c] = W[c, k, td, th, tw] and b'[k*8 + j] = b[k], plus
      ``PIXELSHUFFLE3D_TRT`` (``R=S=T=2``) named ``<deconv>_pixelshuffle_plugin``
      that takes (conv output, skip) and produces the Concat's output tensor (the Concat is removed);
3. cleanup, toposort; unnamed nodes become ``gs_<Op>_<n>`` and their unnamed / numeric outputs
   ``<node>__output`` (the names NVIDIA's calibration cache uses).

``form="onnx"`` is the same graph in standard ONNX ops that ONNX Runtime runs: norms and Relus stay, the
first and last convs stay Conv (the last one still feeds ``conv3d1x1x1k4_out`` -> Identity -> ``output``),
each ConvTranspose becomes the same 1x1x1 Conv followed by NVIDIA's non-plugin pixel shuffle
(Reshape [N, K, 2, 2, 2, d, h, w] -> Transpose (0, 1, 5, 2, 6, 3, 7, 4) -> Reshape [N, K, 2d, 2h, 2w]) and the
original Concat. It equals the original model to float rounding (tests/test_surgery.py).

Deviations from NVIDIA's code, on purpose: widths are not asserted to be 32 (the shared phantom model has
16 channels at full resolution; ``inputChannels`` carries the real value); plugin ops live in a custom
domain so the ONNX checker accepts the graph (pass ``plugin_domain=""`` for NVIDIA's exact graph); the
``name`` attribute NVIDIA adds to renamed nodes is not added (it would make standard ops invalid ONNX).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.benchmark import NUM_CLASSES, OUTPUT_NAME
from core.errors import BadInputError
from core.model import SURGERY_KEY

FORMS = ("plugin", "onnx")
PLUGIN_DOMAIN = "trt.plugins"
IN_PLUGIN = "InstanceNormalization_TRT"
FIRST_CONV_PLUGIN = "CONV3D3X3X3C1K32_TRT"
LAST_CONV_PLUGIN = "CONV3D1X1X1K4_TRT"
PIXEL_SHUFFLE_PLUGIN = "PIXELSHUFFLE3D_TRT"
LAST_CONV_OUTPUT = "conv3d1x1x1k4_out"
PIXEL_SHUFFLE_PERM = (0, 1, 5, 2, 6, 3, 7, 4)


def deconv_weights_to_conv(w: np.ndarray) -> np.ndarray:
    """ConvTranspose weight [C, K, 2, 2, 2] -> 1x1x1 Conv weight [8K, C, 1, 1, 1],
    W'[k*8 + 4td + 2th + tw, c] = W[c, k, td, th, tw] (NVIDIA's "cdwh" pixel-shuffle order)."""
    c, k = w.shape[:2]
    return np.ascontiguousarray(w.transpose(1, 2, 3, 4, 0).reshape(k * 8, c, 1, 1, 1))


def deconv_bias_to_conv(b: np.ndarray) -> np.ndarray:
    """b'[k*8 + j] = b[k], j = 0..7."""
    return np.repeat(b, 8)


def _fail(what: str, source: str) -> BadInputError:
    return (
        BadInputError(f"graph surgery: {what}", source) if source else BadInputError(f"graph surgery: {what}")
    )


def _const(tensor: Any, what: str, source: str) -> np.ndarray:
    import onnx_graphsurgeon as gs

    if not isinstance(tensor, gs.Constant):
        raise _fail(f"{what} is not a constant initializer", source)
    return np.asarray(tensor.values)


def _only_consumer(tensor: Any, source: str) -> Any:
    if len(tensor.outputs) != 1:
        raise _fail(f"tensor {tensor.name} has {len(tensor.outputs)} consumers, expected 1", source)
    return tensor.outputs[0]


def _plugin_attrs(node: Any, version: str) -> None:
    node.attrs["plugin_version"] = version
    node.attrs["plugin_namespace"] = ""


def _instnorm_plugin(graph: Any, domain: str, source: str) -> None:
    norms = [n for n in graph.nodes if n.op == "InstanceNormalization"]
    if not norms:
        raise _fail("no InstanceNormalization nodes (already surgered or not a 3D-UNet)", source)
    graph_outputs = {t.name for t in graph.outputs}
    for node in norms:
        if len(node.inputs) != 3:
            raise _fail(f"{node.name} has {len(node.inputs)} inputs, expected 3", source)
        scales = _const(node.inputs[1], f"{node.name} scale", source)
        bias = _const(node.inputs[2], f"{node.name} bias", source)
        if scales.shape != bias.shape:
            raise _fail(f"{node.name}: scales {scales.shape} and bias {bias.shape} differ", source)
        node.op = IN_PLUGIN
        node.domain = domain
        node.attrs["scales"] = node.inputs[1]
        node.attrs["bias"] = node.inputs[2]
        _plugin_attrs(node, "2")
        node.attrs["relu"] = 0
        node.attrs["alpha"] = 0.0
        node.attrs.setdefault("epsilon", 1e-5)
        del node.inputs[2]
        del node.inputs[1]
    for node in norms:  # absorb the ReLU that follows
        out = node.outputs[0]
        if out.name in graph_outputs or len(out.outputs) != 1 or out.outputs[0].op != "Relu":
            continue
        relu = out.outputs[0]
        node.attrs["relu"] = 1
        node.attrs["alpha"] = 0.0
        node.outputs = list(relu.outputs)
        relu.outputs.clear()


def _last_conv(graph: Any, plugin: bool, domain: str, source: str) -> None:
    import onnx_graphsurgeon as gs

    norms = [n for n in graph.nodes if n.op in ("InstanceNormalization", IN_PLUGIN)]
    if not norms:
        raise _fail("no instance norm before the output conv", source)
    node = _only_consumer(norms[-1].outputs[0], source)
    if node.op == "Relu":
        node = _only_consumer(node.outputs[0], source)
    if node.op != "Conv" or len(node.inputs) != 3:
        raise _fail(f"the node after the last norm is {node.op} {node.name}, expected Conv with bias", source)
    w = _const(node.inputs[1], f"{node.name} weight", source)
    b = _const(node.inputs[2], f"{node.name} bias", source)
    if w.ndim != 5 or w.shape[0] != NUM_CLASSES or w.shape[2:] != (1, 1, 1) or b.shape != (NUM_CLASSES,):
        raise _fail(
            f"output conv {node.name} has weight {w.shape} / bias {b.shape}, expected (3, C, 1, 1, 1)", source
        )
    old_out = node.outputs[0]
    if plugin:
        node.op = LAST_CONV_PLUGIN
        node.domain = domain
        node.attrs["inputChannels"] = int(w.shape[1])  # the conv's own attributes stay, as in NVIDIA's graph
        node.attrs["weights"] = node.inputs[1]
        node.attrs["bias"] = node.inputs[2]
        _plugin_attrs(node, "1")
        del node.inputs[2]
        del node.inputs[1]
    # "add the identity layer, since the last layer is quantized": the output gets its own tensor
    identity_out = gs.Variable(OUTPUT_NAME, dtype=np.float32, shape=old_out.shape)
    graph.nodes.append(gs.Node(op="Identity", inputs=[old_out], outputs=[identity_out]))
    old_out.name = LAST_CONV_OUTPUT
    graph.outputs = [identity_out]


def _first_conv(graph: Any, domain: str, source: str) -> None:
    convs = [n for n in graph.nodes if n.op == "Conv"]
    if not convs:
        raise _fail("no Conv nodes", source)
    node = convs[0]
    if len(node.inputs) != 2:
        raise _fail(f"first conv {node.name} has a bias, expected none", source)
    w = _const(node.inputs[1], f"{node.name} weight", source)
    if w.ndim != 5 or w.shape[1:] != (1, 3, 3, 3):
        raise _fail(f"first conv {node.name} has weight {w.shape}, expected (K, 1, 3, 3, 3)", source)
    node.op = FIRST_CONV_PLUGIN
    node.domain = domain
    node.attrs["inputChannels"] = int(w.shape[1])
    node.attrs["weights"] = node.inputs[1]
    _plugin_attrs(node, "1")
    del node.inputs[1]


def _deconvs(graph: Any, plugin: bool, domain: str, shapes: dict[str, tuple], source: str) -> None:
    import onnx_graphsurgeon as gs

    deconvs = [n for n in graph.nodes if n.op == "ConvTranspose"]
    for node in deconvs:
        name = node.name
        a = node.attrs
        if list(a.get("kernel_shape", [])) != [2, 2, 2] or list(a.get("strides", [])) != [2, 2, 2]:
            raise _fail(f"{name} is not a 2x2x2 stride-2 ConvTranspose", source)
        if (
            any(a.get("pads", [0] * 6))
            or a.get("group", 1) != 1
            or any(d != 1 for d in a.get("dilations", [1]))
        ):
            raise _fail(f"{name} has pads, groups or dilations", source)
        if len(node.inputs) != 3:
            raise _fail(f"{name} has no bias", source)
        w = _const(node.inputs[1], f"{name} weight", source)
        b = _const(node.inputs[2], f"{name} bias", source)
        k = w.shape[1]
        if w.shape[2:] != (2, 2, 2) or b.shape != (k,):
            raise _fail(f"{name} has weight {w.shape} / bias {b.shape}", source)
        deconv_out = node.outputs[0]
        concat = _only_consumer(deconv_out, source)
        if concat.op != "Concat" or len(concat.inputs) != 2 or concat.inputs[0] is not deconv_out:
            raise _fail(f"{name} does not feed input 0 of a 2-input Concat", source)
        if concat.attrs.get("axis") != 1:
            raise _fail(f"{concat.name} does not concatenate channels", source)
        in_shape = shapes.get(node.inputs[0].name)
        node.op = "Conv"
        node.attrs.clear()
        node.attrs.update(
            dilations=[1, 1, 1], group=1, kernel_shape=[1, 1, 1], pads=[0, 0, 0, 0, 0, 0], strides=[1, 1, 1]
        )
        node.inputs[1] = gs.Constant(node.inputs[1].name, deconv_weights_to_conv(w))
        node.inputs[2] = gs.Constant(node.inputs[2].name, deconv_bias_to_conv(b))
        deconv_out.shape = None  # now (N, 8K, d, h, w); let consumers re-infer
        deconv_out.dtype = np.float32
        if plugin:
            shuffle = gs.Node(
                PIXEL_SHUFFLE_PLUGIN,
                f"{name}_pixelshuffle_plugin",
                {"R": 2, "S": 2, "T": 2, "plugin_version": "1", "plugin_namespace": ""},
                [deconv_out, concat.inputs[1]],
                list(concat.outputs),
                domain=domain,
            )
            concat.outputs.clear()
            graph.nodes.append(shuffle)
            continue
        if in_shape is None or len(in_shape) != 5 or not all(isinstance(d, int) for d in in_shape[2:]):
            raise _fail(f"spatial size of {name}'s input is unknown (shape inference failed)", source)
        d, h, w_ = in_shape[2:]
        r1 = gs.Constant(f"{name}_pixelshuffle_reshape1_shape", np.array([0, k, 2, 2, 2, d, h, w_], np.int64))
        r2 = gs.Constant(
            f"{name}_pixelshuffle_reshape2_shape", np.array([0, k, 2 * d, 2 * h, 2 * w_], np.int64)
        )
        t1 = gs.Variable(f"{name}_pixelshuffle_reshape1_out", dtype=np.float32)
        t2 = gs.Variable(f"{name}_pixelshuffle_shuffle_out", dtype=np.float32)
        t3 = gs.Variable(f"{name}_pixelshuffle_reshape2_out", dtype=np.float32)
        graph.nodes += [
            gs.Node("Reshape", f"{name}_pixelshuffle_reshape1", {}, [deconv_out, r1], [t1]),
            gs.Node(
                "Transpose", f"{name}_pixelshuffle_transpose", {"perm": list(PIXEL_SHUFFLE_PERM)}, [t1], [t2]
            ),
            gs.Node("Reshape", f"{name}_pixelshuffle_reshape2", {}, [t2, r2], [t3]),
        ]
        concat.inputs[0] = t3


def _cleanup(graph: Any) -> None:
    graph.outputs = [t for t in graph.outputs if t.name == OUTPUT_NAME]
    graph.cleanup().toposort()
    uniq = 0
    for node in graph.nodes:
        if not node.name or node.name.isdigit():
            node.name = f"gs_{node.op}_{uniq}"
            uniq += 1
        for idx, out in enumerate(node.outputs):
            postfix = f"_{idx}" if len(node.outputs) > 1 else ""
            if not out.name or out.name.isdigit():
                out.name = f"{node.name}__output{postfix}"


def _static_shapes(model: Any) -> dict[str, tuple]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return {}
    out: dict[str, tuple] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = tuple(
            int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims
        )
    return out


def surgery(
    model: Any,
    form: str = "plugin",
    *,
    plugin_optimizations: bool = True,
    plugin_domain: str = PLUGIN_DOMAIN,
) -> Any:
    """NVIDIA's graph surgery on an original 3D-UNet export (a ModelProto or a path) -> new ModelProto.

    ``plugin_optimizations=False`` is NVIDIA's FP16 build: only the instance-norm step (plugin form)."""
    import onnx
    import onnx_graphsurgeon as gs

    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    source = ""
    if isinstance(model, str | Path):
        source = str(model)
        model = onnx.load(source)
    if any(p.key == SURGERY_KEY for p in model.metadata_props):
        raise _fail("the model is already surgered", source)
    shapes = _static_shapes(model) if form == "onnx" else {}
    graph = gs.import_onnx(model)
    if [t.name for t in graph.outputs] != [OUTPUT_NAME]:
        raise _fail(
            f"graph outputs are {[t.name for t in graph.outputs]}, expected ['{OUTPUT_NAME}']", source
        )
    plugin = form == "plugin"
    if plugin:
        _instnorm_plugin(graph, plugin_domain, source)
    if plugin_optimizations:
        _last_conv(graph, plugin, plugin_domain, source)
        if plugin:
            _first_conv(graph, plugin_domain, source)
        _deconvs(graph, plugin, plugin_domain, shapes, source)
    _cleanup(graph)
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    del out.metadata_props[:]
    for prop in model.metadata_props:
        out.metadata_props.add(key=prop.key, value=prop.value)
    out.metadata_props.add(key=SURGERY_KEY, value=form)
    return out


# --- a structured view of the plugin-form graph (for the torch backend) --------------------------


@dataclass(frozen=True)
class Layer:
    """One node of the surgered graph. ``op`` is the ONNX or plugin op type; ``attrs`` holds scalars and
    lists; ``tensors`` holds the weights as float32 arrays: "weight" / "bias" (convs, plugin convs;
    plugin conv weights keep their ONNX shapes), "scales" / "bias" (instance norm)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


_INIT_KEYS = {"InstanceNormalization": ("input", "scales", "bias"), "Reshape": ("input", "shape")}


def describe(model: Any) -> list[Layer]:
    """The graph's nodes in execution (topological) order as :class:`Layer` records.

    Ops that appear in a plugin-form graph: ``CONV3D3X3X3C1K32_TRT`` (weight (K,1,3,3,3), pad 1, no bias),
    ``Conv`` (3x3x3 pad 1 stride 1|2 without bias, or the 1x1x1 deconv conv with bias),
    ``InstanceNormalization_TRT`` (scales, bias, epsilon, relu, alpha), ``PIXELSHUFFLE3D_TRT``
    (inputs (x8k, skip) -> concat(depth_to_space(x8k), skip)), ``CONV3D1X1X1K4_TRT``
    (weight (3, C, 1, 1, 1), bias) and ``Identity``."""
    from onnx import helper, numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        attrs: dict[str, Any] = {}
        tensors: dict[str, np.ndarray] = {}
        for a in node.attribute:
            value = helper.get_attribute_value(a)
            if a.name in ("weights", "scales", "bias") and a.HasField("t"):
                tensors["weight" if a.name == "weights" else a.name] = numpy_helper.to_array(a.t).astype(
                    np.float32
                )
            elif isinstance(value, bytes):
                attrs[a.name] = value.decode()
            else:
                attrs[a.name] = list(value) if isinstance(value, list | tuple) else value
        inputs = []
        keys = _INIT_KEYS.get(node.op_type, ("input", "weight", "bias"))
        for i, name in enumerate(node.input):
            if name in inits:
                key = keys[i] if i < len(keys) else f"input{i}"
                arr = inits[name]
                tensors[key] = arr if key == "shape" else arr.astype(np.float32)
            else:
                inputs.append(name)
        layers.append(Layer(node.name, node.op_type, tuple(inputs), tuple(node.output), attrs, tensors))
    return layers
