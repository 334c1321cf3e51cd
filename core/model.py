"""The ONNX model: validation and description (``load_model``), and the one builder of random-weight
models with the exact MLPerf 3D-UNet KiTS19 topology at any widths (tests, speed measurements), with
the topology's closed-form figures (``param_count``, ``window_gflop``).

The official file (REF ``unet_pytorch_to_onnx.py``): opset 12, input ``input`` [N, 1, 128, 128, 128]
float32, output ``output`` [N, 3, 128, 128, 128] float32 logits, N the dynamic axis ``batch_size``.
The builder mirrors the shared phantom model's export (node and initializer names from torch.onnx).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.benchmark import INPUT_NAME, NUM_CLASSES, ONNX_OPSET, OUTPUT_NAME, ROI
from core.errors import BadInputError, MissingInputError
from core.fsio import sha256_bytes

FULL_WIDTHS = (32, 64, 128, 256, 320)  # the official model; the shared phantom model is half width
PHANTOM_WIDTHS = (16, 32, 64, 128, 160)
TINY_WIDTHS = (4, 8, 16, 32, 40)  # the shipped demo model's widths (488,383 parameters); tests' tiny model
SURGERY_KEY = "unet3d.surgery"  # metadata_props key set by core.surgery ("plugin" or "onnx")
PLUGIN_OPS = frozenset(
    {"InstanceNormalization_TRT", "CONV3D1X1X1K4_TRT", "CONV3D3X3X3C1K32_TRT", "PIXELSHUFFLE3D_TRT"}
)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]  # a str is a named dynamic axis ("batch_size"); "?" when unnamed
    dtype: str  # numpy name, e.g. "float32"

    def __str__(self) -> str:
        return f"{self.name}[{','.join(str(d) for d in self.shape)}] {self.dtype}"


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    sha256: str
    size_bytes: int
    opset: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    params: int  # weights in initializers plus weights held as plugin attributes
    widths: tuple[int, ...]  # encoder widths, e.g. (32, 64, 128, 256, 320)
    surgered: str  # "" for an original export, else "plugin" or "onnx" (see core.surgery)
    dynamic_batch: bool
    producer: str = ""
    op_counts: dict[str, int] = field(default_factory=dict)

    @property
    def is_full_width(self) -> bool:
        return self.widths == FULL_WIDTHS


def _tensor_info(vi: object) -> TensorInfo:
    import onnx

    tt = vi.type.tensor_type  # type: ignore[attr-defined]
    dims: list[int | str] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or "?")
    try:
        dtype = str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)))
    except Exception:  # undefined / exotic element type
        dtype = f"onnx-type-{tt.elem_type}"
    return TensorInfo(vi.name, tuple(dims), dtype)  # type: ignore[attr-defined]


def _attr(node: object, name: str) -> object | None:
    import onnx

    for a in node.attribute:  # type: ignore[attr-defined]
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def count_params(model: object) -> int:
    """Initializer elements plus float weights held as plugin attributes (surgered graphs)."""
    graph = model.graph  # type: ignore[attr-defined]
    total = sum(int(np.prod(t.dims)) for t in graph.initializer)
    for node in graph.node:
        if node.op_type in PLUGIN_OPS:
            for a in node.attribute:
                if a.name in ("weights", "bias", "scales"):
                    total += len(a.floats) + (int(np.prod(a.t.dims)) if a.HasField("t") else 0)
    return total


def _norm_channels(model: object) -> list[int]:
    """Channel count of each instance norm, in graph order (original or surgered)."""
    graph = model.graph  # type: ignore[attr-defined]
    inits = {t.name: tuple(t.dims) for t in graph.initializer}
    out = []
    for node in graph.node:
        if node.op_type == "InstanceNormalization" and len(node.input) > 1 and node.input[1] in inits:
            out.append(int(np.prod(inits[node.input[1]])))
        elif node.op_type == "InstanceNormalization_TRT":
            scales: Any = _attr(node, "scales")
            if scales is not None:
                out.append(int(np.prod(scales.dims)) if hasattr(scales, "dims") else len(scales))
    return out


def encoder_widths(model: object) -> tuple[int, ...]:
    """(w0..w4): the encoder's two norms per level (input block, 4 down blocks) share a width."""
    ch = _norm_channels(model)
    return tuple(ch[0:10:2]) if len(ch) >= 10 else tuple(ch)


def _surgery_form(model: object) -> str:
    for prop in model.metadata_props:  # type: ignore[attr-defined]
        if prop.key == SURGERY_KEY:
            return prop.value
    if any(n.op_type in PLUGIN_OPS for n in model.graph.node):  # type: ignore[attr-defined]
        return "plugin"
    return ""


def _check_io(path: Path, name: str, info: TensorInfo, channels: int) -> None:
    shape = info.shape
    ok_rank = len(shape) == 5
    ok_batch = ok_rank and (isinstance(shape[0], str) or shape[0] >= 1)
    ok_rest = ok_rank and tuple(shape[1:]) == (channels, ROI, ROI, ROI)
    if not (ok_batch and ok_rest):
        expected = f"[N, {channels}, {ROI}, {ROI}, {ROI}]"
        raise BadInputError(f"{name} {info.name} has shape {list(shape)}, expected {expected}", path)
    if info.dtype != "float32":
        raise BadInputError(f"{name} {info.name} is {info.dtype}, expected float32", path)


def _checkable(model: Any) -> Any:
    """NVIDIA's exact plugin graph puts plugin ops in the default domain, which the ONNX checker rejects;
    check a copy with those ops moved to a custom domain instead."""
    import onnx

    if not any(n.op_type in PLUGIN_OPS and n.domain == "" for n in model.graph.node):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for n in copy.graph.node:
        if n.op_type in PLUGIN_OPS and n.domain == "":
            n.domain = "trt.plugins"
    if not any(o.domain == "trt.plugins" for o in copy.opset_import):
        copy.opset_import.append(onnx.helper.make_opsetid("trt.plugins", 1))
    return copy


def load_model(path: str | Path, expected_opset: int = ONNX_OPSET) -> ModelInfo:
    """Validate an ONNX 3D-UNet file and describe it. MissingInputError if absent; BadInputError
    (naming the file) if it is not ONNX, truncated, or has the wrong names, shapes or opset."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise MissingInputError("model file not found", path)
    data = path.read_bytes()
    if not data:
        raise BadInputError("model file is empty", path)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise BadInputError(f"not an ONNX model or truncated ({type(exc).__name__})", path) from None
    graph = model.graph
    if not graph.node:
        raise BadInputError("not an ONNX model or truncated (empty graph)", path)
    try:
        onnx.checker.check_model(_checkable(model))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"invalid or truncated ONNX model: {first[:200]}", path) from None
    opsets = {o.domain: o.version for o in model.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx", 0))
    if expected_opset and opset != expected_opset:
        raise BadInputError(f"ONNX opset {opset}, expected {expected_opset} (the benchmark's export)", path)
    init_names = {t.name for t in graph.initializer}
    inputs = tuple(_tensor_info(i) for i in graph.input if i.name not in init_names)
    outputs = tuple(_tensor_info(o) for o in graph.output)
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise BadInputError(f"inputs are {[i.name for i in inputs]}, expected ['{INPUT_NAME}']", path)
    if [o.name for o in outputs] != [OUTPUT_NAME]:
        raise BadInputError(f"outputs are {[o.name for o in outputs]}, expected ['{OUTPUT_NAME}']", path)
    _check_io(path, "input", inputs[0], 1)
    _check_io(path, "output", outputs[0], NUM_CLASSES)
    ops: dict[str, int] = {}
    for n in graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ModelInfo(
        path=path,
        sha256=sha256_bytes(data),
        size_bytes=len(data),
        opset=opset,
        inputs=inputs,
        outputs=outputs,
        params=count_params(model),
        widths=encoder_widths(model),
        surgered=_surgery_form(model),
        dynamic_batch=isinstance(inputs[0].shape[0], str) and isinstance(outputs[0].shape[0], str),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        op_counts=ops,
    )


def load_onnx(path: str | Path) -> object:
    """``load_model``'s validation, then the ModelProto itself."""
    import onnx

    load_model(path)
    return onnx.load(str(path))


# --- random-weight model with the MLPerf topology --------------------------------------------------


def param_count(widths: Sequence[int] = FULL_WIDTHS) -> int:
    """Closed-form parameter count of the topology (31,190,243 at full width): what ``count_params``
    finds in an original-form model of these widths."""
    w = list(widths)
    total = 0

    def block(cin: int, cout: int) -> int:
        return cout * cin * 27 + 2 * cout  # conv without bias + IN scale and bias

    total += block(1, w[0]) + block(w[0], w[0])
    enc = [*w, w[-1]]  # down blocks: w0->w1, ..., w3->w4, bottleneck w4->w4
    for cin, cout in itertools.pairwise(enc):
        total += block(cin, cout) + block(cout, cout)
    dec = [w[-1], *reversed(w)]  # up: w4->w4, w4->w3, ..., w1->w0
    for cin, cout in itertools.pairwise(dec):
        total += cin * cout * 8 + cout  # ConvTranspose k2 with bias
        total += block(2 * cout, cout) + block(cout, cout)
    total += NUM_CLASSES * w[0] + NUM_CLASSES
    return total


def window_gflop(widths: Sequence[int] = FULL_WIDTHS, roi: int = ROI) -> float:
    """GFLOP (2 x MAC) of the convolutions and transposed convolutions for one roi^3 window
    (954.6 at full width, spec section 7.1)."""
    w = list(widths)
    enc = [*w, w[-1]]  # down blocks: w0->w1, ..., w3->w4, bottleneck w4->w4
    dec = [w[-1], *reversed(w)]  # up: w4->w4, w4->w3, ..., w1->w0
    macs, side = 27 * (1 * w[0] + w[0] * w[0]) * roi**3, roi
    for cin, cout in itertools.pairwise(enc):
        side //= 2
        macs += 27 * (cin * cout + cout * cout) * side**3
    for cin, cout in itertools.pairwise(dec):
        macs += 8 * cin * cout * side**3  # ConvTranspose k2 s2: each input voxel feeds 8 outputs
        side *= 2
        macs += 27 * (2 * cout * cout + cout * cout) * side**3
    macs += NUM_CLASSES * w[0] * side**3
    return 2.0 * macs / 1e9


def build_random_model(
    widths: Sequence[int] = FULL_WIDTHS, seed: int = 0, roi: int | None = ROI, dynamic_batch: bool = True
) -> object:
    """An opset-12 ModelProto with the MLPerf 3D-UNet topology, random weights, and the node /
    initializer / tensor names of a torch.onnx export (as in the shared phantom model).

    Weights are He-normal so activations stay finite; ``roi`` only sets the declared spatial size
    (the graph is fully convolutional); ``roi=None`` declares symbolic D, H, W (any multiple of 32
    runs: small inputs for fast tests)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if len(widths) != 5:
        raise ValueError(f"widths must have 5 entries, got {widths}")
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    def conv_block(x: str, scope: str, prefix: str, cin: int, cout: int, stride: int) -> str:
        # scope "/down.0/down.0.0", prefix "down.0.0" -> nodes "<scope>/<prefix>.0/Conv" etc.
        cname = f"{scope}/{prefix}.0/Conv"
        w = rng.standard_normal((cout, cin, 3, 3, 3)) * np.sqrt(2.0 / (cin * 27))
        nodes.append(
            helper.make_node(
                "Conv",
                [x, init(f"{prefix}.0.weight", w)],
                [f"{cname}_output_0"],
                name=cname,
                dilations=[1, 1, 1],
                group=1,
                kernel_shape=[3, 3, 3],
                pads=[1] * 6,
                strides=[stride] * 3,
            )
        )
        iname = f"{scope}/{prefix}.1/InstanceNormalization"
        nodes.append(
            helper.make_node(
                "InstanceNormalization",
                [
                    f"{cname}_output_0",
                    init(f"{prefix}.1.weight", 1.0 + 0.1 * rng.standard_normal(cout)),
                    init(f"{prefix}.1.bias", 0.1 * rng.standard_normal(cout)),
                ],
                [f"{iname}_output_0"],
                name=iname,
                epsilon=1e-5,
            )
        )
        rname = f"{scope}/{prefix}.2/Relu"
        nodes.append(helper.make_node("Relu", [f"{iname}_output_0"], [f"{rname}_output_0"], name=rname))
        return f"{rname}_output_0"

    def level(x: str, name: str, cin: int, cout: int, stride: int) -> str:
        x = conv_block(x, f"/{name}/{name}.0", f"{name}.0", cin, cout, stride)
        return conv_block(x, f"/{name}/{name}.1", f"{name}.1", cout, cout, 1)

    w = list(widths)
    x = level(INPUT_NAME, "inp", 1, w[0], 1)
    skips = [x]
    enc = [*w, w[-1]]
    for i, (cin, cout) in enumerate(itertools.pairwise(enc)):
        x = level(x, f"down.{i}", cin, cout, 2)
        skips.append(x)
    skips.pop()  # the bottleneck output is not a skip
    dec = [w[-1], *reversed(w)]
    for i, (cin, cout) in enumerate(itertools.pairwise(dec)):
        tname = f"/upc.{i}/ConvTranspose"
        wt = rng.standard_normal((cin, cout, 2, 2, 2)) * np.sqrt(1.0 / cin)
        nodes.append(
            helper.make_node(
                "ConvTranspose",
                [x, init(f"upc.{i}.weight", wt), init(f"upc.{i}.bias", 0.1 * rng.standard_normal(cout))],
                [f"{tname}_output_0"],
                name=tname,
                dilations=[1, 1, 1],
                group=1,
                kernel_shape=[2, 2, 2],
                pads=[0] * 6,
                strides=[2, 2, 2],
            )
        )
        cat = "/Concat" if i == 0 else f"/Concat_{i}"
        nodes.append(
            helper.make_node(
                "Concat", [f"{tname}_output_0", skips.pop()], [f"{cat}_output_0"], name=cat, axis=1
            )
        )
        x = level(f"{cat}_output_0", f"up.{i}", 2 * cout, cout, 1)
    wo = rng.standard_normal((NUM_CLASSES, w[0], 1, 1, 1)) * np.sqrt(1.0 / w[0])
    nodes.append(
        helper.make_node(
            "Conv",
            [x, init("out.weight", wo), init("out.bias", 0.1 * rng.standard_normal(NUM_CLASSES))],
            [OUTPUT_NAME],
            name="/out/Conv",
            dilations=[1, 1, 1],
            group=1,
            kernel_shape=[1, 1, 1],
            pads=[0] * 6,
            strides=[1, 1, 1],
        )
    )
    batch: int | str = "batch_size" if dynamic_batch else 1
    dhw: list[int | str] = ["D", "H", "W"] if roi is None else [roi] * 3
    graph = helper.make_graph(
        nodes,
        "main_graph",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, 1, *dhw])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch, NUM_CLASSES, *dhw])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="unet3d-console"
    )
    model.ir_version = 7  # as torch's opset-12 export (onnxruntime accepts it)
    return model


def save_model(model: object, path: str | Path) -> Path:
    """Write a ModelProto atomically (temp file in the same folder, fsync, rename)."""
    from core.fsio import write_bytes_atomic

    path = Path(path)
    write_bytes_atomic(path, model.SerializeToString())  # type: ignore[attr-defined]
    return path
