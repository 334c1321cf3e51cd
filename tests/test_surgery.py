"""core.surgery: form="onnx" equals the original under ONNX Runtime; form="plugin" has exactly NVIDIA's
nodes and attributes, its deconv weights match an independent numpy ConvTranspose, and an independent
interpreter of the plugin semantics (doc section 9) over ``describe()`` reproduces the original outputs."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from core.errors import BadInputError
from core.model import PHANTOM_WIDTHS, TINY_WIDTHS, build_random_model, load_model, save_model
from core.surgery import (
    deconv_bias_to_conv,
    deconv_weights_to_conv,
    describe,
    surgery,
)

ort = pytest.importorskip("onnxruntime")


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(["output"], {"input": x})[0]


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@pytest.fixture(scope="module")
def x32() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 1, 32, 32, 32)).astype(np.float32)


def test_onnx_form_equals_original(tiny_model_32: onnx.ModelProto, x32: np.ndarray) -> None:
    s = surgery(tiny_model_32, "onnx")
    onnx.checker.check_model(s)
    ops = Counter(n.op_type for n in s.graph.node)
    assert ops == {
        "Conv": 28,
        "InstanceNormalization": 22,
        "Relu": 22,
        "Reshape": 10,
        "Transpose": 5,
        "Concat": 5,
        "Identity": 1,
    }
    ref = run_ort(tiny_model_32, x32)
    got = run_ort(s, x32)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    assert {p.key: p.value for p in s.metadata_props}["unet3d.surgery"] == "onnx"


def test_plugin_form_nodes_and_attributes(tiny_model: onnx.ModelProto) -> None:
    orig = tiny_model
    s = surgery(orig, "plugin")
    onnx.checker.check_model(s)
    ops = Counter(n.op_type for n in s.graph.node)
    assert ops == {
        "CONV3D3X3X3C1K32_TRT": 1,
        "InstanceNormalization_TRT": 22,
        "Conv": 21 + 5,  # 3x3x3 convs other than the first, plus the 5 deconv 1x1x1 convs
        "PIXELSHUFFLE3D_TRT": 5,
        "CONV3D1X1X1K4_TRT": 1,
        "Identity": 1,
    }
    plugin_ops = {
        "CONV3D3X3X3C1K32_TRT",
        "InstanceNormalization_TRT",
        "PIXELSHUFFLE3D_TRT",
        "CONV3D1X1X1K4_TRT",
    }
    for n in s.graph.node:
        assert n.domain == ("trt.plugins" if n.op_type in plugin_ops else "")
    assert [(o.domain, o.version) for o in s.opset_import] == [("", 12), ("trt.plugins", 1)]
    w0 = inits(orig)

    # 1. instance norms: scales/bias attributes from the initializers, ReLU absorbed
    onodes = {n.name: n for n in orig.graph.node}
    for n in (n for n in s.graph.node if n.op_type == "InstanceNormalization_TRT"):
        a = attrs(n)
        src = onodes[n.name]
        np.testing.assert_array_equal(numpy_helper.to_array(a["scales"]), w0[src.input[1]])
        np.testing.assert_array_equal(numpy_helper.to_array(a["bias"]), w0[src.input[2]])
        assert a["relu"] == 1 and a["alpha"] == 0.0 and a["plugin_version"] == b"2"
        assert a["plugin_namespace"] == b"" and a["epsilon"] == pytest.approx(1e-5)
        assert list(n.input) == [src.input[0]]
        relu = next(r for r in orig.graph.node if r.op_type == "Relu" and r.input[0] == src.output[0])
        assert list(n.output) == list(relu.output)

    # 2a. last conv
    (last,) = (n for n in s.graph.node if n.op_type == "CONV3D1X1X1K4_TRT")
    a = attrs(last)
    assert a["inputChannels"] == TINY_WIDTHS[0] and a["plugin_version"] == b"1"
    np.testing.assert_array_equal(numpy_helper.to_array(a["weights"]), w0["out.weight"])
    np.testing.assert_array_equal(numpy_helper.to_array(a["bias"]), w0["out.bias"])
    assert list(last.output) == ["conv3d1x1x1k4_out"] and len(last.input) == 1
    (ident,) = (n for n in s.graph.node if n.op_type == "Identity")
    assert list(ident.input) == ["conv3d1x1x1k4_out"] and list(ident.output) == ["output"]
    assert ident.name.startswith("gs_Identity_")
    assert [o.name for o in s.graph.output] == ["output"]
    assert s.graph.node[-1] is not None and s.graph.node[-1].op_type == "Identity"

    # 2b. first conv
    (first,) = (n for n in s.graph.node if n.op_type == "CONV3D3X3X3C1K32_TRT")
    a = attrs(first)
    assert a["inputChannels"] == 1 and list(first.input) == ["input"] and s.graph.node[0] is not None
    np.testing.assert_array_equal(numpy_helper.to_array(a["weights"]), w0["inp.0.0.weight"])

    # 2c. deconvs: 1x1x1 conv + pixel shuffle that produces the removed Concat's output
    new_inits = inits(s)
    for i in range(5):
        name = f"/upc.{i}/ConvTranspose"
        conv = next(n for n in s.graph.node if n.name == name)
        assert conv.op_type == "Conv"
        ca = attrs(conv)
        assert ca["kernel_shape"] == [1, 1, 1] and ca["strides"] == [1, 1, 1] and ca["pads"] == [0] * 6
        w, b = w0[f"upc.{i}.weight"], w0[f"upc.{i}.bias"]
        c, k = w.shape[:2]
        wn, bn = new_inits[conv.input[1]], new_inits[conv.input[2]]
        assert wn.shape == (8 * k, c, 1, 1, 1) and bn.shape == (8 * k,)
        for kk in range(k):
            for td in range(2):
                for th in range(2):
                    for tw in range(2):
                        np.testing.assert_array_equal(
                            wn[kk * 8 + 4 * td + 2 * th + tw, :, 0, 0, 0], w[:, kk, td, th, tw]
                        )
            np.testing.assert_array_equal(bn[kk * 8 : kk * 8 + 8], np.full(8, b[kk]))
        ps = next(n for n in s.graph.node if n.name == f"{name}_pixelshuffle_plugin")
        assert ps.op_type == "PIXELSHUFFLE3D_TRT"
        pa = attrs(ps)
        assert (pa["R"], pa["S"], pa["T"], pa["plugin_version"]) == (2, 2, 2, b"1")
        cat = next(n for n in orig.graph.node if n.op_type == "Concat" and n.input[0] == f"{name}_output_0")
        assert list(ps.input) == [conv.output[0], cat.input[1]]
        assert list(ps.output) == list(cat.output)

    # toposorted: every input is produced before use
    produced = {"input", *new_inits}
    for n in s.graph.node:
        assert all(i in produced for i in n.input), n.name
        produced.update(n.output)


def numpy_conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ConvTranspose k2 s2 p0 straight from its definition."""
    n, _c, d, h, ww = x.shape
    k = w.shape[1]
    y = np.zeros((n, k, 2 * d, 2 * h, 2 * ww))
    for td in range(2):
        for th in range(2):
            for tw in range(2):
                y[:, :, td::2, th::2, tw::2] = np.einsum("ncdhw,ck->nkdhw", x, w[:, :, td, th, tw])
    return y + b[None, :, None, None, None]


def pixel_shuffle_by_index(x8k: np.ndarray) -> np.ndarray:
    """Doc section 8: output channel k at (o, p, q) reads channel k*8 + (o%2)*4 + (p%2)*2 + q%2 at
    (o//2, p//2, q//2)."""
    _n, c8, d, h, w = x8k.shape
    o = np.arange(2 * d)[:, None, None]
    p = np.arange(2 * h)[None, :, None]
    q = np.arange(2 * w)[None, None, :]
    k = np.arange(c8 // 8)[:, None, None, None]
    ch = k * 8 + (o % 2)[None] * 4 + (p % 2)[None] * 2 + (q % 2)[None]
    return x8k[:, ch, (o // 2)[None], (p // 2)[None], (q // 2)[None]]


def test_deconv_rewrite_matches_numpy_conv_transpose() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 3, 4, 5))
    w = rng.standard_normal((6, 5, 2, 2, 2))
    b = rng.standard_normal(5)
    wc, bc = deconv_weights_to_conv(w), deconv_bias_to_conv(b)
    y8k = np.einsum("ncdhw,kc->nkdhw", x, wc[:, :, 0, 0, 0]) + bc[None, :, None, None, None]
    got = pixel_shuffle_by_index(y8k)
    np.testing.assert_allclose(got, numpy_conv_transpose(x, w, b), rtol=1e-12, atol=1e-12)
    # and NVIDIA's fallback reshape/transpose/reshape is the same shuffle
    n, _, d, h, ww = y8k.shape
    alt = (
        y8k.reshape(n, 5, 2, 2, 2, d, h, ww)
        .transpose(0, 1, 5, 2, 6, 3, 7, 4)
        .reshape(n, 5, 2 * d, 2 * h, 2 * ww)
    )
    np.testing.assert_array_equal(alt, got)


def run_plugin_layers(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Interpret describe(plugin form) with the plugin semantics of doc section 9, in torch float64."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F  # noqa: N812

    env = {"input": torch.from_numpy(x.astype(np.float64))}
    for layer in describe(model):
        ins = [env[n] for n in layer.inputs]
        t = {k: torch.from_numpy(v.astype(np.float64)) for k, v in layer.tensors.items() if k != "shape"}
        a = layer.attrs
        if layer.op in ("CONV3D3X3X3C1K32_TRT", "Conv", "CONV3D1X1X1K4_TRT"):
            y = F.conv3d(ins[0], t["weight"], t.get("bias"), stride=a["strides"][0], padding=a["pads"][0])
        elif layer.op == "InstanceNormalization_TRT":
            v = ins[0]
            mean = v.mean(dim=(2, 3, 4), keepdim=True)
            var = v.var(dim=(2, 3, 4), unbiased=False, keepdim=True)
            y = (v - mean) / torch.sqrt(var + a["epsilon"]) * t["scales"].view(1, -1, 1, 1, 1)
            y = y + t["bias"].view(1, -1, 1, 1, 1)
            if a["relu"]:
                y = torch.where(y > 0, y, a["alpha"] * y)
        elif layer.op == "PIXELSHUFFLE3D_TRT":
            y = torch.cat([torch.from_numpy(pixel_shuffle_by_index(ins[0].numpy())), ins[1]], dim=1)
        elif layer.op == "Identity":
            y = ins[0]
        else:
            raise AssertionError(f"unexpected op {layer.op}")
        (out,) = layer.outputs
        env[out] = y
    return env["output"].numpy()


def test_plugin_form_semantics_match_original(tiny_model_32: onnx.ModelProto, x32: np.ndarray) -> None:
    s = surgery(tiny_model_32, "plugin")
    x = x32[:1]
    ref = run_ort(tiny_model_32, x)
    got = run_plugin_layers(s, x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_fp16_build_keeps_native_convs(tiny_model: onnx.ModelProto) -> None:
    s = surgery(tiny_model, "plugin", plugin_optimizations=False)
    ops = Counter(n.op_type for n in s.graph.node)
    assert ops == {"Conv": 23, "InstanceNormalization_TRT": 22, "ConvTranspose": 5, "Concat": 5}
    assert [o.name for o in s.graph.output] == ["output"]


def test_nvidia_exact_domain_and_paths(tiny_model_path: Path, tmp_path: Path) -> None:
    s = surgery(tiny_model_path, "plugin", plugin_domain="")
    assert all(n.domain == "" for n in s.graph.node)
    assert [(o.domain, o.version) for o in s.opset_import] == [("", 12)]
    exact = load_model(save_model(s, tmp_path / "exact.onnx"))  # default-domain plugins pass the checker
    assert exact.surgered == "plugin" and exact.op_counts["PIXELSHUFFLE3D_TRT"] == 5
    info = load_model(save_model(surgery(tiny_model_path, "plugin"), tmp_path / "p.onnx"))
    assert info.surgered == "plugin" and info.widths == TINY_WIDTHS
    assert str(info.outputs[0]) == "output[batch_size,3,128,128,128] float32"
    # weights moved to attributes still count; the repeated deconv biases add 7 per channel
    orig = load_model(tiny_model_path)
    assert info.params == orig.params + 7 * sum(TINY_WIDTHS)  # deconv K_out = w4, w3, ..., w0
    onnx_info = load_model(save_model(surgery(tiny_model_path, "onnx"), tmp_path / "o.onnx"))
    assert onnx_info.surgered == "onnx"
    assert onnx_info.params == orig.params + 7 * sum(TINY_WIDTHS) + 5 * (8 + 5)  # + reshape shapes


def test_errors(tiny_model: onnx.ModelProto, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="form"):
        surgery(tiny_model, "tensorrt")
    with pytest.raises(BadInputError, match="already surgered"):
        surgery(surgery(tiny_model, "onnx"), "plugin")
    bad = onnx.ModelProto()
    bad.CopyFrom(tiny_model)
    for n in bad.graph.node:
        if n.op_type == "ConvTranspose":
            for a in n.attribute:
                if a.name == "strides":
                    a.ints[:] = [1, 1, 1]
            break
    path = save_model(bad, tmp_path / "badstride.onnx")
    with pytest.raises(BadInputError, match=r"badstride\.onnx.*not a 2x2x2 stride-2"):
        surgery(path, "onnx")


@pytest.mark.slow
def test_phantom_onnx_form_on_one_window(phantom_model_path: Path) -> None:
    model = onnx.load(str(phantom_model_path))
    s = surgery(model, "onnx")
    x = np.random.default_rng(1).standard_normal((1, 1, 128, 128, 128)).astype(np.float32)
    t0 = time.perf_counter()
    ref = run_ort(model, x)
    t1 = time.perf_counter()
    got = run_ort(s, x)
    t2 = time.perf_counter()
    print(f"phantom 128^3 window on ORT CPU: original {t1 - t0:.1f} s, surgered onnx form {t2 - t1:.1f} s")
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    assert np.array_equal(np.argmax(got, axis=1), np.argmax(ref, axis=1)) or (
        np.mean(np.argmax(got, axis=1) != np.argmax(ref, axis=1)) < 1e-6
    )


def test_phantom_plugin_form_structure(phantom_model_path: Path) -> None:
    s = surgery(phantom_model_path, "plugin")
    ops = Counter(n.op_type for n in s.graph.node)
    assert ops["PIXELSHUFFLE3D_TRT"] == 5 and ops["InstanceNormalization_TRT"] == 22
    (first,) = (n for n in s.graph.node if n.op_type == "CONV3D3X3X3C1K32_TRT")
    assert numpy_helper.to_array(attrs(first)["weights"]).shape == (PHANTOM_WIDTHS[0], 1, 3, 3, 3)
    built = surgery(build_random_model(PHANTOM_WIDTHS, seed=2), "plugin")
    assert [(n.name, n.op_type, list(n.input), list(n.output)) for n in built.graph.node] == [
        (n.name, n.op_type, list(n.input), list(n.output)) for n in s.graph.node
    ]
