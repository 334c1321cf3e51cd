"""core.model: load_model's description and validation errors, and the random-model builder against the
shared phantom export (same nodes, names, attributes and initializer shapes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from core.errors import BadInputError, ExitCode, MissingInputError
from core.model import (
    FULL_WIDTHS,
    PHANTOM_WIDTHS,
    TINY_WIDTHS,
    build_random_model,
    count_params,
    load_model,
    param_count,
    save_model,
    window_gflop,
)
from tests.conftest import official_names


def signature(model: onnx.ModelProto) -> list[tuple]:
    return [
        (
            n.name,
            n.op_type,
            list(n.input),
            list(n.output),
            sorted((a.name, str(helper.get_attribute_value(a))) for a in n.attribute),
        )
        for n in model.graph.node
    ]


def brute_param_count(widths: tuple[int, ...]) -> int:
    """Layer-by-layer from the doc's topology table (section 7.1), independent of core.model."""
    w0, w1, w2, w3, w4 = widths
    convs = [(1, w0), (w0, w0)]
    for a, b in [(w0, w1), (w1, w2), (w2, w3), (w3, w4), (w4, w4)]:
        convs += [(a, b), (b, b)]
    ups = [(w4, w4), (w4, w3), (w3, w2), (w2, w1), (w1, w0)]
    n = sum(27 * a * b + 2 * b for a, b in convs)
    for a, b in ups:
        n += 8 * a * b + b + 27 * 2 * b * b + 2 * b + 27 * b * b + 2 * b
    return n + 3 * w0 + 3


def test_param_count_closed_form() -> None:
    assert param_count(FULL_WIDTHS) == 31_190_243 == brute_param_count(FULL_WIDTHS)
    assert param_count(PHANTOM_WIDTHS) == 7_799_923 == brute_param_count(PHANTOM_WIDTHS)
    assert param_count(TINY_WIDTHS) == brute_param_count(TINY_WIDTHS)


def test_window_gflop_and_workload_match_the_spec() -> None:
    """Spec sections 7.1 and 3.1: 954.6 GFLOP per 128^3 window at full width (~240 at the phantom
    model's half width); 43 inference cases, 2,761 windows, mean 32,944,795 voxels."""
    from core.benchmark import INFERENCE_SHAPES
    from core.sliding_window import window_count

    assert round(window_gflop(FULL_WIDTHS), 1) == 954.6
    assert round(window_gflop(PHANTOM_WIDTHS)) == 240
    assert len(INFERENCE_SHAPES) == 43
    assert sum(window_count(s) for s in INFERENCE_SHAPES) == 2761
    assert round(np.mean([d * h * w for d, h, w in INFERENCE_SHAPES])) == 32_944_795


def test_builder_topology_is_the_shipped_demo_models() -> None:
    """The one ONNX builder and the torch reference (plugins.reference.UNet3D, which made the shipped
    demo model through tools/train_demo_model.py) are one topology: the same ops in the same graph
    order with the same attributes and parameter shapes. The official export's node numbering follows
    from that order (ConvTranspose_36, 44, ... as NVIDIA's notes name them). Fails when the shipped
    model is missing."""
    from core.demo import DEMO_MODEL

    demo = onnx.load(str(DEMO_MODEL))
    built = build_random_model(TINY_WIDTHS, seed=0)

    def layout(m: onnx.ModelProto) -> list[tuple]:
        shapes = {t.name: tuple(t.dims) for t in m.graph.initializer}
        return [
            (
                n.op_type,
                [shapes.get(t) for t in n.input],
                sorted((a.name, str(helper.get_attribute_value(a))) for a in n.attribute),
            )
            for n in m.graph.node
        ]

    assert layout(built) == layout(demo)
    assert count_params(demo) == count_params(built) == param_count(TINY_WIDTHS) == 488_383
    names = [n.name for n in official_names(built).graph.node]
    assert names == [n.name for n in demo.graph.node]  # the demo model carries the official numbering
    assert [names[i] for i in (36, 44, 52, 60, 68)] == [f"ConvTranspose_{i}" for i in (36, 44, 52, 60, 68)]


def test_load_tiny_model(tiny_model_path: Path) -> None:
    info = load_model(tiny_model_path)
    assert info.sha256 == hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    assert info.opset == 12
    assert [str(i) for i in info.inputs] == ["input[batch_size,1,128,128,128] float32"]
    assert [str(o) for o in info.outputs] == ["output[batch_size,3,128,128,128] float32"]
    assert info.params == param_count(TINY_WIDTHS)
    assert info.widths == TINY_WIDTHS and not info.is_full_width
    assert info.surgered == "" and info.dynamic_batch
    assert info.op_counts == {
        "Conv": 23,
        "InstanceNormalization": 22,
        "Relu": 22,
        "ConvTranspose": 5,
        "Concat": 5,
    }
    assert info.size_bytes == tiny_model_path.stat().st_size


def test_builder_mirrors_phantom_export(phantom_model_path: Path) -> None:
    phantom = onnx.load(str(phantom_model_path))
    built = build_random_model(PHANTOM_WIDTHS, seed=1)
    assert signature(built) == signature(phantom)
    assert {t.name: tuple(t.dims) for t in built.graph.initializer} == {
        t.name: tuple(t.dims) for t in phantom.graph.initializer
    }
    assert built.graph.input == phantom.graph.input and built.graph.output == phantom.graph.output
    info = load_model(phantom_model_path)
    assert info.params == 7_799_923 and info.widths == PHANTOM_WIDTHS and info.producer.startswith("pytorch")


def test_missing_and_garbage(tmp_path: Path, tiny_model_path: Path) -> None:
    with pytest.raises(MissingInputError, match=r"nope\.onnx") as exc:
        load_model(tmp_path / "nope.onnx")
    assert exc.value.exit_code == ExitCode.MISSING
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(BadInputError, match=r"garbage\.onnx") as exc2:
        load_model(bad)
    assert exc2.value.exit_code == ExitCode.BAD_INPUT
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(BadInputError, match="empty"):
        load_model(empty)
    data = tiny_model_path.read_bytes()
    for frac in (0.1, 0.5, 0.97):
        trunc = tmp_path / f"trunc{frac}.onnx"
        trunc.write_bytes(data[: int(len(data) * frac)])
        with pytest.raises(BadInputError, match=trunc.name):
            load_model(trunc)


def _variant(tmp_path: Path, name: str, model: onnx.ModelProto) -> Path:
    return save_model(model, tmp_path / name)


def test_wrong_names_shapes_opset(tmp_path: Path, tiny_model: onnx.ModelProto) -> None:
    m = onnx.ModelProto()
    m.CopyFrom(tiny_model)
    m.graph.input[0].name = "x"
    for n in m.graph.node:
        for i, name in enumerate(n.input):
            if name == "input":
                n.input[i] = "x"
    with pytest.raises(BadInputError, match=r"inputs are \['x'\]"):
        load_model(_variant(tmp_path, "names.onnx", m))

    m = onnx.ModelProto()
    m.CopyFrom(tiny_model)
    m.graph.output[0].name = "logits"
    m.graph.node[-1].output[0] = "logits"
    with pytest.raises(BadInputError, match="outputs are"):
        load_model(_variant(tmp_path, "outname.onnx", m))

    with pytest.raises(BadInputError, match=r"has shape \['batch_size', 1, 64, 64, 64\]"):
        load_model(_variant(tmp_path, "shape.onnx", build_random_model(TINY_WIDTHS, roi=64)))

    m = onnx.ModelProto()
    m.CopyFrom(tiny_model)
    m.opset_import[0].version = 13
    with pytest.raises(BadInputError, match="opset 13, expected 12"):
        load_model(_variant(tmp_path, "opset.onnx", m))

    static = load_model(
        _variant(tmp_path, "static.onnx", build_random_model(TINY_WIDTHS, dynamic_batch=False))
    )
    assert not static.dynamic_batch and static.inputs[0].shape[0] == 1


def test_builder_is_deterministic_and_finite() -> None:
    a = build_random_model(TINY_WIDTHS, seed=3)
    b = build_random_model(TINY_WIDTHS, seed=3)
    c = build_random_model(TINY_WIDTHS, seed=4)
    assert a.SerializeToString() == b.SerializeToString() != c.SerializeToString()
    ort = pytest.importorskip("onnxruntime")
    m = build_random_model(TINY_WIDTHS, seed=3, roi=32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32, 32)).astype(np.float32)
    (y,) = sess.run(["output"], {"input": x})
    assert y.shape == (2, 3, 32, 32, 32) and np.isfinite(y).all() and 0.1 < float(y.std()) < 100
    # roi=None: symbolic D, H, W, the same graph and weights (any multiple of 32 runs)
    free = build_random_model(TINY_WIDTHS, seed=3, roi=None)
    dims = free.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch_size", "", "D", "H", "W"]
    assert free.graph.initializer == m.graph.initializer and free.graph.node == m.graph.node
    sess = ort.InferenceSession(free.SerializeToString(), providers=["CPUExecutionProvider"])
    (y2,) = sess.run(["output"], {"input": x})
    assert np.array_equal(y2, y)


@pytest.mark.slow
def test_full_width_random_model(tmp_path: Path) -> None:
    info = load_model(save_model(build_random_model(FULL_WIDTHS, seed=0), tmp_path / "full.onnx"))
    assert info.params == 31_190_243 and info.is_full_width and info.widths == FULL_WIDTHS
