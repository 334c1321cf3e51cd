"""plugins.tensorrt_plugins: the TensorRT-free half (plugin fields as the surgery writes them).

TensorRT is not installed here; registration itself (register_plugins) is not exercised."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper

from plugins import tensorrt_plugins as tp


def _node(op: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, ["x"], ["y"], name=f"{op}_0", **attrs)


def _in_attrs(c: int = 32) -> dict[str, object]:
    rng = np.random.default_rng(1)
    return {
        "epsilon": 1e-5,
        "scales": rng.standard_normal(c).astype(np.float32).tolist(),
        "bias": rng.standard_normal(c).astype(np.float32).tolist(),
        "relu": 1,
        "alpha": 0.0,
    }


def test_attrs_from_nvidia_style_nodes() -> None:
    w = np.arange(864, dtype=np.float32) / 1000
    n = _node(tp.CONV3X3, inputChannels=1, weights=w.tolist(), plugin_version="1", plugin_namespace="")
    a = tp.attrs_from_onnx(n)
    assert set(a) == {"inputChannels", "weights"}
    assert a["inputChannels"] == 1
    assert a["weights"].dtype == np.float32 and a["weights"].shape == (864,)
    np.testing.assert_array_equal(a["weights"], w)
    # (32,1,3,3,3) view: output channel k holds values k*27 ... k*27+26 in (kd, kh, kw) C order
    k = tp.weights_3x3x3(a)
    assert k.shape == (32, 1, 3, 3, 3)
    assert k[5, 0, 1, 2, 0] == w[5 * 27 + 1 * 9 + 2 * 3 + 0]

    ps = tp.attrs_from_onnx(_node(tp.PIXELSHUFFLE, R=2, S=2, T=2, plugin_version="1", plugin_namespace=""))
    assert ps == {"R": 2, "S": 2, "T": 2}

    inn = tp.attrs_from_onnx(_node(tp.INSTANCENORM, plugin_version="2", plugin_namespace="", **_in_attrs()))
    assert inn["relu"] == 1 and inn["alpha"] == 0.0
    assert inn["epsilon"] == pytest.approx(1e-5)
    assert inn["scales"].shape == (32,)

    w1 = np.arange(96, dtype=np.float32)
    c1 = tp.attrs_from_onnx(_node(tp.CONV1X1, inputChannels=32, weights=w1.tolist(), bias=[0.5, -1.0, 2.0]))
    m = tp.weights_1x1x1(c1)
    assert m.shape == (3, 32) and m[2, 7] == 2 * 32 + 7
    np.testing.assert_array_equal(c1["bias"], np.array([0.5, -1.0, 2.0], np.float32))


@pytest.mark.parametrize(
    ("op", "attrs", "fragment"),
    [
        (tp.CONV3X3, {"inputChannels": 1, "weights": [0.0] * 863}, "863 values, not K*27"),
        (tp.CONV1X1, {"inputChannels": 32, "weights": [0.0] * 95, "bias": [0.0] * 3}, "expected 3*32"),
        (tp.CONV3X3, {"inputChannels": 2, "weights": [0.0] * 864}, "needs 1"),
        (tp.CONV3X3, {"weights": [0.0] * 864}, "inputChannels is missing"),
        (tp.CONV1X1, {"inputChannels": 32, "weights": [0.0] * 96, "bias": [0.0] * 4}, "4 values, expected 3"),
        (tp.PIXELSHUFFLE, {"R": 2, "S": 2, "T": 3}, "needs 2,2,2"),
        (tp.PIXELSHUFFLE, {"R": 2.5, "S": 2, "T": 2}, "one integer"),
        (tp.PIXELSHUFFLE, {"R": 2, "S": 2, "T": 2, "mode": 1}, "unknown attribute"),
        (tp.INSTANCENORM, {**_in_attrs(), "alpha": 0.1}, "leaky"),
        (tp.INSTANCENORM, {**_in_attrs(), "relu": 2}, "relu=2"),
        (tp.INSTANCENORM, {**_in_attrs(), "bias": [0.0] * 31}, "31 values but scales has 32"),
        (tp.INSTANCENORM, {**_in_attrs(), "epsilon": float("nan")}, "epsilon is nan"),
        (tp.INSTANCENORM, {**_in_attrs(), "scales": [float("inf")] * 32}, "non-finite"),
        ("Conv", {}, "not one of the plugins"),
    ],
)
def test_bad_attributes_refused(op: str, attrs: dict[str, object], fragment: str) -> None:
    with pytest.raises(tp.PluginFieldError) as info:
        tp.validate_attrs(op, attrs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("op", [tp.CONV3X3, tp.CONV1X1, tp.PIXELSHUFFLE, tp.INSTANCENORM])
def test_encode_decode_round_trip(op: str) -> None:
    rng = np.random.default_rng(7)
    attrs: dict[str, object] = {
        tp.CONV3X3: {"inputChannels": 1, "weights": rng.standard_normal(864)},
        tp.CONV1X1: {"inputChannels": 32, "weights": rng.standard_normal(96), "bias": rng.standard_normal(3)},
        tp.PIXELSHUFFLE: {"R": 2, "S": 2, "T": 2},
        tp.INSTANCENORM: _in_attrs(64),
    }[op]
    fields = tp.encode_fields(op, attrs)
    # field order and types as the spec lists them; ints travel as INT32, floats as FLOAT32
    assert [n for n, _, _ in fields] == [f.name for f in tp.SPECS[op].fields]
    for name, data, ftype in fields:
        kind = tp.SPECS[op].field(name).kind
        assert ftype == ("INT32" if kind == "int" else "FLOAT32")
        assert data.dtype == (np.int32 if kind == "int" else np.float32)
        assert data.ndim == 1
    back = tp.decode_fields(op, fields)
    want = tp.validate_attrs(op, attrs)
    assert set(back) == set(want)
    for k, v in want.items():
        if isinstance(v, np.ndarray):
            # float64 inputs are stored as float32: equal to the float32 rounding, bit for bit
            np.testing.assert_array_equal(back[k], v)
            assert back[k].dtype == np.float32
        elif isinstance(v, float):
            # scalar floats travel as FLOAT32 too (epsilon 1e-5 comes back as float32(1e-5))
            assert back[k] == float(np.float32(v))
        else:
            assert back[k] == v and type(back[k]) is int


def test_decode_refuses_wrong_types_and_names() -> None:
    with pytest.raises(tp.PluginFieldError, match="type FLOAT32, expected INT32"):
        tp.decode_fields(tp.PIXELSHUFFLE, [("R", np.array([2.0], np.float32), "FLOAT32")])
    with pytest.raises(tp.PluginFieldError, match="unknown field"):
        tp.decode_fields(tp.PIXELSHUFFLE, [("Q", np.array([2], np.int32), "INT32")])


def test_serialize_attrs_is_stable_and_sensitive() -> None:
    a = {"inputChannels": 32, "weights": np.ones(96), "bias": [1.0, 2.0, 3.0]}
    s1 = tp.serialize_attrs(tp.CONV1X1, a)
    assert s1 == tp.serialize_attrs(tp.CONV1X1, {**a, "weights": np.ones(96, np.float32).tolist()})
    assert s1.startswith(b"CONV3D1X1X1K4_TRT\0inputChannels\0INT32\0\x01\x00\x00\x00\x20\x00\x00\x00")
    # header + 3 fields: inputChannels (4 B), weights (96*4 B), bias (3*4 B)
    assert (
        len(s1)
        == len(b"CONV3D1X1X1K4_TRT\0")
        + sum(
            len(n) + 1 + len(t) + 1 + 4
            for n, t in (("inputChannels", "INT32"), ("weights", "FLOAT32"), ("bias", "FLOAT32"))
        )
        + 4
        + 96 * 4
        + 3 * 4
    )
    b = {**a, "bias": [1.0, 2.0, 3.0000002]}
    assert tp.serialize_attrs(tp.CONV1X1, b) != s1


def _surgered_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node(
            tp.CONV3X3,
            ["input"],
            ["c0"],
            name="Conv_0",
            inputChannels=1,
            weights=[0.1] * 864,
            plugin_version="1",
            plugin_namespace="",
        ),
        helper.make_node(
            tp.INSTANCENORM,
            ["c0"],
            ["n0"],
            name="IN_1",
            plugin_version="2",
            plugin_namespace="",
            **_in_attrs(),
        ),
        helper.make_node(
            tp.CONV1X1,
            ["n0"],
            ["conv3d1x1x1k4_out"],
            name="Conv_last",
            inputChannels=32,
            weights=[0.0] * 96,
            bias=[0.0] * 3,
            plugin_version="1",
            plugin_namespace="",
        ),
        helper.make_node("Identity", ["conv3d1x1x1k4_out"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["n", 1, 128, 128, 128])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["n", 3, 128, 128, 128])],
    )
    return helper.make_model(graph)


def _lookup(node: onnx.NodeProto) -> tuple[str, str]:
    d = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return d["plugin_namespace"].decode(), d["plugin_version"].decode()


def test_retarget_namespace_only_the_chosen_ops() -> None:
    m = _surgered_model()
    n = tp.retarget_namespace(m, [tp.CONV3X3, tp.CONV1X1, tp.PIXELSHUFFLE])
    assert n == 2
    conv0, norm, conv_last, _ = m.graph.node
    assert _lookup(conv0) == ("unet3d", "1")
    assert _lookup(conv_last) == ("unet3d", "1")
    assert _lookup(norm) == ("", "2")  # TensorRT's built-in InstanceNormalization_TRT v2 stays
    # the other attributes are untouched, each lookup attribute appears once
    assert [a.name for a in conv0.attribute].count("plugin_namespace") == 1
    assert tp.attrs_from_onnx(conv0)["weights"].shape == (864,)
    # idempotent
    assert tp.retarget_namespace(m, [tp.CONV3X3]) == 1
    assert _lookup(m.graph.node[0]) == ("unet3d", "1")


def test_retarget_refuses_bad_nodes_and_unknown_ops() -> None:
    m = _surgered_model()
    with pytest.raises(tp.PluginFieldError, match="not plugins of ours"):
        tp.retarget_namespace(m, ["Conv"])
    bad = _surgered_model()
    (w,) = [a for a in bad.graph.node[0].attribute if a.name == "weights"]
    w.CopyFrom(helper.make_attribute("weights", [0.1] * 10))
    with pytest.raises(tp.PluginFieldError, match="10 values"):
        tp.retarget_namespace(bad, [tp.CONV3X3])


def test_plugin_versions() -> None:
    v = tp.plugin_versions([tp.PIXELSHUFFLE, tp.CONV3X3])
    assert v == {"unet3d::CONV3D3X3X3C1K32_TRT": "1/reg1", "unet3d::PIXELSHUFFLE3D_TRT": "1/reg1"}


def test_real_surgery_nodes_retarget_and_decode(tiny_model_32: onnx.ModelProto) -> None:
    """core.surgery's plugin form (NVIDIA's exact graph: empty plugin domain) on the tiny random model:
    every plugin node's fields decode, TENSOR weights come out in ONNX order, leftovers are dropped."""
    from onnx import numpy_helper

    from core.surgery import surgery

    orig = {i.name: numpy_helper.to_array(i) for i in tiny_model_32.graph.initializer}
    first_w = next(orig[n.input[1]] for n in tiny_model_32.graph.node if n.op_type == "Conv")
    m = surgery(tiny_model_32, form="plugin", plugin_domain="")
    ops = [n.op_type for n in m.graph.node]
    assert ops.count(tp.CONV3X3) == 1 and ops.count(tp.CONV1X1) == 1
    assert ops.count(tp.PIXELSHUFFLE) == 5 and ops.count(tp.INSTANCENORM) == 22
    changed = tp.retarget_namespace(m, [tp.CONV3X3, tp.CONV1X1, tp.PIXELSHUFFLE])
    assert changed == 7
    for node in m.graph.node:
        if node.op_type not in tp.SPECS:
            continue
        names = {a.name for a in node.attribute}
        fields = {f.name for f in tp.SPECS[node.op_type].fields}
        if node.op_type == tp.INSTANCENORM:
            assert _lookup(node) == ("", "2")  # the built-in stays
            assert names == fields | set(tp.LOOKUP_ATTRS)
        else:
            assert _lookup(node) == ("unet3d", "1")
            assert names == fields | set(tp.LOOKUP_ATTRS)  # kernel_shape, pads, ... gone
        a = tp.attrs_from_onnx(node)
        assert tp.decode_fields(node.op_type, tp.encode_fields(node.op_type, a)).keys() == a.keys()
        if node.op_type == tp.CONV3X3:
            assert a["inputChannels"] == 1
            np.testing.assert_array_equal(tp.weights_3x3x3(a), first_w)  # (4, 1, 3, 3, 3) of the tiny model
        if node.op_type == tp.CONV1X1:
            assert a["inputChannels"] == 4 and tp.weights_1x1x1(a).shape == (3, 4)
        if node.op_type == tp.INSTANCENORM:
            assert a["scales"].shape == a["bias"].shape and a["alpha"] == 0.0
    assert sum(tp.attrs_from_onnx(n)["relu"] for n in m.graph.node if n.op_type == tp.INSTANCENORM) == 22


# --- registration against a fake tensorrt.plugin (the documented QDP contract) -------------------


class _Desc:
    """Stands in for trtp.TensorDesc: shape_expr as plain ints, a dtype."""

    def __init__(self, shape: tuple[int, ...] = (), dtype: str = "FLOAT") -> None:
        self.shape_expr, self.dtype = shape, dtype

    def like(self) -> tuple[tuple[int, ...], str]:
        return (tuple(self.shape_expr), self.dtype)


def _fake_trtp(registry: dict[str, dict[str, Any]]) -> Any:
    import types

    m = types.ModuleType("tensorrt.plugin")
    m.TensorDesc = _Desc  # type: ignore[attr-defined]
    m.Tensor = type("Tensor", (), {})  # type: ignore[attr-defined]
    m.AutoTuneCombination = lambda io, layouts="LINEAR": ("combo", io, layouts)  # type: ignore[attr-defined]
    m.from_shape_expr = lambda shape, dtype: (tuple(shape), dtype)  # type: ignore[attr-defined]

    def deco(kind: str) -> Any:
        def outer(plugin_id: str) -> Any:
            def inner(fn: Any) -> Any:
                registry.setdefault(plugin_id, {})[kind] = fn
                return fn

            return inner

        return outer

    m.register, m.impl, m.autotune = deco("register"), deco("impl"), deco("autotune")  # type: ignore[attr-defined]
    return m


@pytest.fixture
def qdp(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    import sys
    import types

    pytest.importorskip("torch")
    # import torch's lazy parts before faking tensorrt: torch._dynamo probes find_spec("tensorrt")
    import torch._dynamo  # noqa: F401

    import plugins.ops  # noqa: F401

    registry: dict[str, dict[str, Any]] = {}
    trt = types.ModuleType("tensorrt")
    trt.int8, trt.float16, trt.float32 = "INT8", "HALF", "FLOAT"  # type: ignore[attr-defined]
    trtp = _fake_trtp(registry)
    trt.plugin = trtp  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.setattr(tp, "_registered", False)
    tp.register_plugins()
    return registry


def test_registrations_follow_the_qdp_schema(qdp: dict[str, dict[str, Any]]) -> None:
    """TensorRT's rules (tensorrt/plugin/_validate.py): register args = TensorDescs then attributes of a
    serializable type, a TensorDesc return; impl args = the tensors, a subset of the attributes in
    register order, then exactly (outputs, stream); the namespace is not reserved ("" is)."""
    import inspect
    import typing

    assert sorted(qdp) == sorted(f"unet3d::{op}" for op in tp.SPECS)
    for pid, fns in qdp.items():
        assert set(fns) == {"register", "impl", "autotune"}, pid
        ns, name = pid.split("::")
        assert ns not in ("", "trt", "tensorrt", "std") and "." not in name
        reg = inspect.signature(fns["register"])
        tensors, attrs = [], []
        for pname, prm in reg.parameters.items():
            ann = prm.annotation
            assert ann is not inspect.Parameter.empty and prm.default is inspect.Parameter.empty
            if isinstance(ann, type) and issubclass(ann, _Desc):
                assert not attrs, f"{pid}: tensors after attributes"
                tensors.append(pname)
            else:
                assert ann in (int, float, str, bool, bytes) or typing.get_origin(ann) is np.ndarray, (
                    pid,
                    pname,
                )
                attrs.append(pname)
        assert reg.return_annotation is _Desc
        # attribute names are NVIDIA's plugin field names
        assert attrs == [f.name for f in tp.SPECS[name].fields]
        impl = list(inspect.signature(fns["impl"]).parameters)
        used = [a for a in impl if a in attrs]
        assert used == [a for a in attrs if a in used]
        assert impl == tensors + used + ["outputs", "stream"], pid
        auto = list(inspect.signature(fns["autotune"]).parameters)
        assert auto == [*tensors, "outputs"]


def test_registered_shapes_and_types(qdp: dict[str, dict[str, Any]]) -> None:
    conv3 = qdp[f"unet3d::{tp.CONV3X3}"]
    # int8 linear input -> fp16 output with K = weights / 27 channels (4 for the tiny model)
    assert conv3["register"](_Desc((2, 1, 64, 64, 64), "INT8"), 1, np.zeros(108, np.float32)) == (
        (2, 4, 64, 64, 64),
        "HALF",
    )
    assert conv3["register"](_Desc((2, 1, 8, 8, 8), "FLOAT"), 1, np.zeros(864, np.float32))[0][1] == 32
    with pytest.raises(tp.PluginFieldError):
        conv3["register"](_Desc((2, 1, 8, 8, 8)), 1, np.zeros(100, np.float32))
    assert conv3["autotune"](_Desc(), ()) == [("combo", "INT8|FP32|FP16, FP16|FP32|FP16", "LINEAR")]
    conv1 = qdp[f"unet3d::{tp.CONV1X1}"]
    out = conv1["register"](
        _Desc((2, 32, 8, 8, 8), "HALF"), 32, np.zeros(96, np.float32), np.zeros(3, np.float32)
    )
    assert out == ((2, 3, 8, 8, 8), "HALF")
    ps = qdp[f"unet3d::{tp.PIXELSHUFFLE}"]
    # (N, 8K, d, h, w) + skip (N, Cs, 2d, 2h, 2w) -> (N, K + Cs, 2d, 2h, 2w)
    assert ps["register"](_Desc((2, 8 * 64, 4, 4, 4)), _Desc((2, 64, 8, 8, 8)), 2, 2, 2) == (
        (2, 128, 8, 8, 8),
        "FLOAT",
    )
    with pytest.raises(tp.PluginFieldError):
        ps["register"](_Desc((2, 16, 4, 4, 4)), _Desc((2, 2, 8, 8, 8)), 2, 2, 1)
    inn = qdp[f"unet3d::{tp.INSTANCENORM}"]
    g = np.ones(32, np.float32)
    assert inn["register"](_Desc((2, 32, 8, 8, 8), "HALF"), 1e-5, g, g, 1, 0.0) == ((2, 32, 8, 8, 8), "HALF")
    with pytest.raises(tp.PluginFieldError, match="leaky"):
        inn["register"](_Desc((2, 32, 8, 8, 8)), 1e-5, g, g, 1, 0.01)


class _Tensor:
    """Stands in for trtp.Tensor: carries a torch tensor (the TRT buffer), its TRT dtype and int8 scale."""

    def __init__(self, data: Any, dtype: str = "FLOAT", scale: float = 1.0) -> None:
        self.data, self.dtype, self.scale = data, dtype, scale


@pytest.fixture
def cpu_impl(qdp: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """The registered impls running on CPU tensors (plugins.ops' CPU path), TensorRT's buffers faked."""
    import contextlib

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(tp, "_as_torch", lambda t: t.data)
    monkeypatch.setattr(tp, "_on_stream", lambda s: contextlib.nullcontext())
    return qdp


def test_impls_write_what_independent_torch_computes(cpu_impl: dict[str, dict[str, Any]]) -> None:
    """Each impl reads TensorRT's LINEAR (NCDHW) buffers, calls plugins.ops and writes the LINEAR output
    buffer; checked against plain torch.nn.functional (not plugins.reference)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    g = torch.Generator().manual_seed(0)
    # first conv, int8 linear input dequantized with the input scale, fp16 output
    xq = torch.randint(-127, 128, (1, 1, 12, 12, 12), generator=g, dtype=torch.int8)
    w = torch.randn(4, 1, 3, 3, 3, generator=g)
    out = torch.zeros(1, 4, 12, 12, 12, dtype=torch.float16)
    scale = 2.63979 / 127
    cpu_impl[f"unet3d::{tp.CONV3X3}"]["impl"](
        _Tensor(xq, "INT8", scale), w.numpy().reshape(-1), (_Tensor(out, "HALF"),), 0
    )
    want = F.conv3d(xq.float() * scale, w, padding=1)
    assert out.is_contiguous()  # the NCDHW buffer itself was written
    torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=2e-3)

    # last conv 32 -> 3 + bias, fp32
    x = torch.randn(2, 8, 6, 6, 6, generator=g)
    w1, b1 = torch.randn(3, 8, generator=g), torch.randn(3, generator=g)
    out1 = torch.zeros(2, 3, 6, 6, 6)
    cpu_impl[f"unet3d::{tp.CONV1X1}"]["impl"](
        _Tensor(x), w1.numpy().reshape(-1), b1.numpy(), (_Tensor(out1),), 0
    )
    torch.testing.assert_close(out1, F.conv3d(x, w1.reshape(3, 8, 1, 1, 1), b1), atol=1e-5, rtol=1e-5)

    # pixel shuffle + concat: output channel k at (o,p,q) reads k*8 + (o%2)*4 + (p%2)*2 + q%2 at (o/2,p/2,q/2)
    x8 = torch.randn(1, 16, 3, 3, 3, generator=g)
    skip = torch.randn(1, 5, 6, 6, 6, generator=g)
    out2 = torch.zeros(1, 7, 6, 6, 6)
    cpu_impl[f"unet3d::{tp.PIXELSHUFFLE}"]["impl"](_Tensor(x8), _Tensor(skip), (_Tensor(out2),), 0)
    for k, o, p, q in [(0, 0, 0, 0), (1, 5, 2, 3), (0, 1, 4, 5), (1, 3, 3, 0)]:
        src = k * 8 + (o % 2) * 4 + (p % 2) * 2 + q % 2
        assert out2[0, k, o, p, q] == x8[0, src, o // 2, p // 2, q // 2]
    torch.testing.assert_close(out2[:, 2:], skip)

    # instance norm + ReLU
    xn = torch.randn(2, 4, 5, 5, 5, generator=g) * 3 + 1
    gam, bet = torch.randn(4, generator=g), torch.randn(4, generator=g)
    out3 = torch.zeros_like(xn)
    cpu_impl[f"unet3d::{tp.INSTANCENORM}"]["impl"](
        _Tensor(xn), 1e-5, gam.numpy(), bet.numpy(), 1, (_Tensor(out3),), 0
    )
    want3 = F.relu(F.instance_norm(xn, weight=gam, bias=bet, eps=1e-5))
    torch.testing.assert_close(out3, want3, atol=1e-5, rtol=1e-4)
