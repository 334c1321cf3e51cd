"""The torch backend on the CPU (fp32): the ONNX -> torch converter against ONNX Runtime on two
different random models, the surgered plugin form, the pixel-shuffle weight mapping against
ConvTranspose, and the device sliding window against core.sliding_window.segment with ORT."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from core.backends.torch import BACKEND  # noqa: E402
from core.backends.torch.convert import apply_quantization, convert, prepare, quantizable_tensors  # noqa: E402
from core.backends.torch.engine import TorchEngine, fused_act_scales, gemm_inputs, make_engine  # noqa: E402
from core.backends.torch.nodes import (  # noqa: E402
    NO_KERNELS,
    ConvTranspose,
    InstanceNorm,
    Kernels,
    PixelShuffleConcat,
    Relu,
    instance_norm_ref,
)
from core.backends.torch.quant import BASE_PRECISIONS, DTYPES, FP8_MAX, fake_quant, fake_quant_weight  # noqa: E402
from core.errors import BadInputError, MissingInputError, UsageError  # noqa: E402
from core.model import TINY_WIDTHS, build_random_model  # noqa: E402
from core.sliding_window import segment  # noqa: E402
from tests.conftest import official_names  # noqa: E402


def _ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _torch_run(model: onnx.ModelProto, x: np.ndarray, dtype=None, channels_last: bool = True) -> np.ndarray:
    net = prepare(convert(model), "cpu", dtype or torch.float32, channels_last)
    t = torch.from_numpy(x).to(dtype or torch.float32)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        return net(t).float().numpy()


def _close(y: np.ndarray, ref: np.ndarray) -> float:
    """Largest difference relative to the logit range (float32 round-off through 28 layers)."""
    return float(np.abs(y - ref).max() / max(1.0, np.abs(ref).max()))


class _OrtEngine:
    """Reference engine (independent of the converter): ONNX Runtime on the CPU."""

    name, precision = "ort", "fp32"

    def __init__(self, path, batch_size: int) -> None:
        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.batch_size = batch_size

    def infer(self, windows: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {"input": windows})[0]

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def seed1_model_path(tmp_path_factory: pytest.TempPathFactory):
    """A 128^3 tiny model whose random logits give more than one class (a non-trivial argmax)."""
    path = tmp_path_factory.mktemp("torchbe") / "tiny_seed1.onnx"
    onnx.save(build_random_model(TINY_WIDTHS, seed=1), str(path))
    return path


@pytest.fixture(scope="module")
def fused_model() -> onnx.ModelProto:
    """The smallest widths the fused executor's kernels take (multiples of 16)."""
    return build_random_model((16, 32, 32, 32, 32), seed=3)


def test_fused_executor_refuses_widths_its_kernels_cannot_take(renamed_model) -> None:
    from core.backends.torch.fused import FusedUNet3D

    with pytest.raises(
        ValueError, match=r"widths \[4, 8, 16, 32, 40\]: the fused kernels need multiples of 16"
    ):
        FusedUNet3D.from_onnx(renamed_model, precision="fp16", device="cpu")


@pytest.fixture(scope="module")
def renamed_model() -> onnx.ModelProto:
    # a second, differently named and differently weighted model (the official export's names,
    # symbolic D,H,W)
    return official_names(build_random_model(TINY_WIDTHS, seed=7, roi=None))


def test_converter_matches_ort_on_two_models(tiny_model_32, renamed_model) -> None:
    rng = np.random.default_rng(0)
    x32 = rng.standard_normal((2, 1, 32, 32, 32)).astype(np.float32)
    x64 = rng.standard_normal((1, 1, 64, 64, 64)).astype(np.float32)
    outs = []
    for model, x in ((tiny_model_32, x32), (renamed_model, x64), (renamed_model, x32)):
        ref = _ort_run(model, x)
        y = _torch_run(model, x)
        assert y.shape == ref.shape == (x.shape[0], 3, *x.shape[2:])
        assert _close(y, ref) < 1e-4
        outs.append(y)
    # NCDHW execution gives the same numbers as channels-last
    assert _close(_torch_run(renamed_model, x32, channels_last=False), outs[2]) < 1e-5
    # the two models really differ (the weights come from the file, not from the code)
    assert np.abs(outs[0] - outs[2]).max() > 0.1


def test_converter_structure_follows_the_graph(renamed_model) -> None:
    net = convert(renamed_model)
    ops = [type(n).__name__ for n in net.nodes]
    assert ops.count("Conv") == 23 and ops.count("ConvTranspose") == 5 and ops.count("Concat") == 5
    assert ops.count("InstanceNorm") == 22 and "Relu" not in ops  # ReLU folded into the norm
    assert all(n.relu for n in net.nodes if isinstance(n, InstanceNorm))
    unfused = convert(renamed_model, fuse_relu=False)
    assert sum(isinstance(n, Relu) for n in unfused.nodes) == 22
    names = set(unfused.tensor_names)
    assert {"input", "Conv_0__output", "InstanceNormalization_1__output", "Relu_2__output"} <= names
    assert "ConvTranspose_36__output" in names and net.output_name == "output"
    w = onnx.numpy_helper.to_array(renamed_model.graph.initializer[0])
    assert np.array_equal(net.nodes[0].weight.numpy(), w)


def test_converter_rejects_unknown_ops(renamed_model) -> None:
    m = onnx.ModelProto()
    m.CopyFrom(renamed_model)
    m.graph.node[2].op_type = "Sigmoid"
    with pytest.raises(BadInputError, match="Sigmoid"):
        convert(m)


def test_pixel_shuffle_matches_conv_transpose() -> None:
    """Spec section 8 step 5: W'[8k + 4a + 2b + c, ci] = W[ci, k, a, b, c], b' repeated 8 times;
    1x1x1 conv + depth-to-space == ConvTranspose(k2, s2), and the concat takes the skip second."""
    g = torch.Generator().manual_seed(0)
    cin, k = 6, 5
    x = torch.randn(2, cin, 3, 4, 5, generator=g)
    skip = torch.randn(2, 4, 6, 8, 10, generator=g)
    w = torch.randn(cin, k, 2, 2, 2, generator=g)
    b = torch.randn(k, generator=g)
    ref = torch.cat((torch.nn.functional.conv_transpose3d(x, w, b, stride=2), skip), 1)
    w1 = w.permute(1, 2, 3, 4, 0).reshape(8 * k, cin, 1, 1, 1)
    b1 = b.repeat_interleave(8)
    node = PixelShuffleConcat("ps", ("a", "s"), ("o",), 2, 2, 2)
    y = node(torch.nn.functional.conv3d(x, w1, b1), skip)
    assert torch.allclose(y, ref, atol=1e-5)


def test_plugin_form_matches_ort(tiny_model_32) -> None:
    surgery = pytest.importorskip("core.surgery")
    plugin = surgery.surgery(tiny_model_32, form="plugin")
    ops = {n.op_type for n in plugin.graph.node}
    assert {"InstanceNormalization_TRT", "PIXELSHUFFLE3D_TRT"} <= ops
    x = np.random.default_rng(1).standard_normal((1, 1, 32, 32, 32)).astype(np.float32)
    assert _close(_torch_run(plugin, x), _ort_run(tiny_model_32, x)) < 1e-4
    net = convert(plugin)
    assert not any(isinstance(n, ConvTranspose) for n in net.nodes)
    assert set(net.tensor_names) >= {o for n in plugin.graph.node for o in n.output}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_close_to_fp32(renamed_model, precision: str) -> None:
    x = np.random.default_rng(2).standard_normal((1, 1, 32, 32, 32)).astype(np.float32)
    ref = _torch_run(renamed_model, x)
    y = _torch_run(renamed_model, x, dtype=DTYPES[precision])
    agree = (y.argmax(1) == ref.argmax(1)).mean()
    assert _close(y, ref) < 0.1 and agree > 0.95


def test_instance_norm_ref_matches_torch() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 5, 6, 7, generator=g) * 3 + 1
    gamma, beta = torch.randn(4, generator=g), torch.randn(4, generator=g)
    ref = torch.relu(torch.nn.functional.instance_norm(x, weight=gamma, bias=beta, eps=1e-5))
    cl = x.contiguous(memory_format=torch.channels_last_3d)
    y = instance_norm_ref(cl, gamma, beta, 1e-5, True)
    assert torch.allclose(y, ref, atol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize(
    "which",
    [
        "seed1",
        pytest.param("tiny", marks=pytest.mark.slow),
        pytest.param("seed1-plugins", marks=pytest.mark.slow),  # plugins.ops hooks (CPU references)
    ],
)
def test_segment_matches_ort_sliding_window(which: str, seed1_model_path, tiny_model_path) -> None:
    path = tiny_model_path if which == "tiny" else seed1_model_path
    rng = np.random.default_rng(4)
    vol = (rng.standard_normal((1, 128, 192, 128)) * 0.5).astype(np.float32)
    vol[:, 40:90, 60:150, 30:100] += 1.5  # some structure so more than one class appears
    plugins = which == "seed1-plugins"
    if plugins:
        pytest.importorskip("plugins.ops")
    eng = BACKEND.load(path, device="cpu", batch_size=2, use_plugins=plugins)
    assert (eng.kernels.accumulate_fn is not None) == plugins
    try:
        assert not eng.uses_cuda_graph
        got = eng.segment(vol)
        same_engine = segment(vol, eng)  # numpy path with the torch engine's logits
        ref = segment(vol, _OrtEngine(path, 2))
    finally:
        eng.close()
    assert got.dtype == np.uint8 and got.shape == vol.shape[1:]
    # same logits, two weighings: the device path folds the division into NVIDIA's patches, the NumPy
    # path divides as the reference does, so a near tie (~1e-7) can flip (1 of 3.1 M voxels here)
    assert (got != same_engine).sum() <= 2
    assert (got != ref).mean() < 1e-4
    if which != "tiny":
        assert len(np.unique(ref)) >= 2


def test_engine_infer_batches_and_checks_shapes(seed1_model_path) -> None:
    eng = BACKEND.load(seed1_model_path, device="cpu", batch_size=1)
    x = np.random.default_rng(5).standard_normal((2, 1, 128, 128, 128)).astype(np.float32)
    y = eng.infer(x)  # more windows than batch_size: split into 1 + 1
    assert y.shape == (2, 3, 128, 128, 128) and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.abs(y[0] - y[1]).max() > 0.1  # each window got its own logits
    with pytest.raises(BadInputError):
        eng.infer(x[:, :, :64])


def test_upload_int8_linear_matches_reference_quantization(tiny_model_path) -> None:
    from core.benchmark import INT8_INPUT_AMAX_DEFAULT

    eng = TorchEngine(
        convert(build_random_model(TINY_WIDTHS, roi=None)),
        precision="int8",
        batch_size=1,
        device=torch.device("cpu"),
        kernels=NO_KERNELS,
    )
    from core.preprocess import quantize_int8

    rng = np.random.default_rng(8)
    v = np.concatenate([[-2.2, 0.0, 1.0, 2.63979, 5.0, -0.0102], rng.uniform(-3, 3, 5000)]).astype(np.float32)
    v = v.reshape(1, 1, 1, -1)
    q = eng.upload(v).numpy()
    assert q.dtype == np.int8 and np.array_equal(q, quantize_int8(v, INT8_INPUT_AMAX_DEFAULT))
    assert q.ravel()[0] == -106  # spec section 10: -2.2 -> -106


def test_load_errors(tiny_model_path, tmp_path) -> None:
    with pytest.raises(MissingInputError):
        BACKEND.load(tmp_path / "none.onnx", device="cpu")
    with pytest.raises(UsageError):
        BACKEND.load(tiny_model_path, precision="int4", device="cpu")
    with pytest.raises(MissingInputError, match="calibration cache"):
        BACKEND.load(tiny_model_path, precision="int8", device="cpu")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(BadInputError):
        BACKEND.load(bad, device="cpu")


def test_availability_reports_missing_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    a = BACKEND.availability()
    assert not a.ok and "CUDA" in a.reason
    assert set(BASE_PRECISIONS) <= set(BACKEND.precisions)


def test_simulated_int8_and_fp8_stay_close(renamed_model) -> None:
    x = np.random.default_rng(6).standard_normal((1, 1, 32, 32, 32)).astype(np.float32)
    ref = _torch_run(renamed_model, x)
    probe = convert(renamed_model)
    amax: dict[str, float] = {}

    def hook(mod, _inp, out) -> None:
        amax[mod.outputs[0]] = float(out.abs().max())

    for n in probe.nodes:
        n.register_forward_hook(hook)
    with torch.inference_mode():
        probe(torch.from_numpy(x))
    amax["input"] = float(np.abs(x).max())
    for kind in ("int8", "fp8"):
        net = prepare(apply_quantization(convert(renamed_model), amax, kind), "cpu", torch.float32)
        with torch.inference_mode():
            y = net(torch.from_numpy(x)).numpy()
        assert np.abs(y - ref).max() > 0  # quantization did something
        # a random 28-layer net amplifies the noise (measured: int8 0.87 / fp8 0.83 argmax agreement,
        # correlation 0.94 / 0.91); the bounds only catch a broken quantizer
        assert np.corrcoef(y.ravel(), ref.ravel())[0, 1] > 0.85
        assert (y.argmax(1) == ref.argmax(1)).mean() > 0.75
        # int8: every conv/deconv has int8 weights; fp8: the 21 3^3 convs after the first
        assert len(net.weight_amax) == (28 if kind == "int8" else 21)
    with pytest.raises(BadInputError, match="recalibrate"):
        apply_quantization(convert(renamed_model), {"input": 1.0}, "int8")


def test_fake_quant_values() -> None:
    x = torch.tensor([-3.0, -1.0, -0.004, 0.0, 0.0039, 0.5, 1.0, 2.0])
    q = fake_quant(x, 1.0, "int8")
    expect = np.clip(np.round(x.numpy().astype(np.float64) * 127), -127, 127) / 127
    assert np.allclose(q.numpy(), expect, atol=1e-7)
    f = fake_quant(torch.tensor([448.0, 1000.0, 1.0, 0.3]), 448.0, "fp8")
    assert f.tolist() == [448.0, 448.0, 1.0, 0.3125]  # e4m3: saturate at 448, 3 mantissa bits
    w = torch.tensor([[1.0, -0.5], [0.01, 0.02]])
    q, amax = fake_quant_weight(w, "int8")
    assert amax == pytest.approx([1.0, 0.02])
    assert ((q - w).abs() <= torch.tensor([[1.0], [0.02]]) / 254 + 1e-9).all()  # half a step per row


def _amax_of(model: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    probe = convert(model)
    amax = {"input": float(np.abs(x).max())}
    for n in probe.nodes:
        n.register_forward_hook(lambda mod, _i, out: amax.__setitem__(mod.outputs[0], float(out.abs().max())))
    with torch.inference_mode():
        probe(torch.from_numpy(x))
    return amax


def test_plugin_ops_wiring_on_cpu(renamed_model) -> None:
    """use_plugins=True routes IN+ReLU, first/last conv and fp8 convs through plugins.ops (their CPU
    references here): same numbers as the plain-torch path."""
    ops = pytest.importorskip("plugins.ops")
    kernels = Kernels(True)
    assert kernels.module is ops and {"instance_norm_relu", "conv3x3x3_c1", "accumulate_fn"} <= set(
        kernels.present
    )
    x = np.random.default_rng(9).standard_normal((1, 1, 64, 64, 64)).astype(np.float32)  # IN needs >1 voxel
    plain = _torch_run(renamed_model, x)
    net = prepare(convert(renamed_model), "cpu", torch.float32)
    net.set_kernels(kernels)
    with torch.inference_mode():
        fused = net(torch.from_numpy(x).contiguous(memory_format=torch.channels_last_3d)).numpy()
    assert _close(fused, plain) < 1e-4
    amax = _amax_of(renamed_model, x)
    outs = []
    for k in (NO_KERNELS, kernels):
        q = prepare(apply_quantization(convert(renamed_model), amax, "fp8"), "cpu", torch.float32)
        q.set_kernels(k)
        with torch.inference_mode():
            outs.append(q(torch.from_numpy(x)).numpy())
    # same fp8 arithmetic; the kernels' fp16 conv outputs add rounding that 28 random layers amplify
    # (measured correlation 0.968), so check one conv tightly and the whole net loosely
    assert np.corrcoef(outs[0].ravel(), outs[1].ravel())[0, 1] > 0.9
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, 3, generator=g) * 0.2
    xa = torch.relu(torch.randn(1, 4, 16, 16, 16, generator=g))
    a = float(xa.abs().max())
    got = ops.conv3x3x3(xa, w, 1, "fp8", a / FP8_MAX).float()
    want = torch.nn.functional.conv3d(fake_quant(xa, a, "fp8"), fake_quant_weight(w, "fp8")[0], padding=1)
    assert (got - want).abs().max() <= 1e-3 * want.abs().max()  # fp16 output rounding only


# --- CUDA (skipped without a GPU; the kernels helper runs these on the H200) ---------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("plugins", [False, True])
def test_cuda_graph_engine_matches_eager(seed1_model_path, precision: str, plugins: bool) -> None:
    kw = {"precision": precision, "batch_size": 2, "device": 0, "use_plugins": plugins}
    graph = BACKEND.load(seed1_model_path, cuda_graphs=True, **kw)
    eager = BACKEND.load(seed1_model_path, cuda_graphs=False, **kw)
    assert graph.uses_cuda_graph and not eager.uses_cuda_graph
    x = torch.randn((2, 1, 128, 128, 128), device="cuda").clamp_(-2.2, 2.64)
    three = torch.cat([x, x[:1]]).clone()
    three[2] = x[1]
    many = graph.run(three).float()  # more windows than the batch: chunks must not alias
    assert torch.allclose(many[1], many[2], rtol=1e-3, atol=1e-3 * float(many.abs().max()))
    assert not torch.allclose(many[0], many[1], rtol=1e-2, atol=1e-2 * float(many.abs().max()))
    a = graph.run(x[:1]).float().clone()  # a short batch, padded into the static buffer
    b = eager.run(x[:1]).float()
    c = graph.run(x).float().clone()
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(b.abs().max()))
    assert torch.allclose(c[:1], a, rtol=1e-3, atol=1e-3 * float(b.abs().max()))
    # against the CPU fp32 reference
    ref = _torch_run(onnx.load(str(seed1_model_path)), x.cpu().numpy())
    tol = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 0.15}[precision]  # bf16: 0.117 measured on the H200
    assert _close(c.cpu().numpy(), ref) < tol
    graph.close()
    eager.close()


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_segment_matches_cpu_reference(seed1_model_path, precision: str) -> None:
    rng = np.random.default_rng(4)
    vol = (rng.standard_normal((1, 128, 192, 128)) * 0.5).astype(np.float32)
    vol[:, 40:90, 60:150, 30:100] += 1.5
    eng = BACKEND.load(seed1_model_path, precision=precision, batch_size=2, device=0)
    got = eng.segment(vol)
    ref = segment(vol, _OrtEngine(seed1_model_path, 2))
    assert got.shape == ref.shape and got.dtype == np.uint8
    assert (got != ref).mean() < (1e-4 if precision == "fp32" else 1e-2)


@pytest.mark.gpu
@cuda
def test_cuda_fp8_kernels_match_simulation(seed1_model_path) -> None:
    model = onnx.load(str(seed1_model_path))
    x = torch.randn((1, 1, 128, 128, 128)).clamp_(-2.2, 2.64)
    amax = _amax_of(model, x.numpy())
    outs = []
    for plugins in (False, True):
        eng = make_engine(
            model, precision="fp8", batch_size=1, device="cuda", amax=amax, use_plugins=plugins,
            executor="graph",
        )  # fmt: skip
        assert eng.simulated is not plugins
        outs.append(eng.run(x.cuda()).float().cpu().numpy())
        eng.close()
    assert np.corrcoef(outs[0].ravel(), outs[1].ravel())[0, 1] > 0.9


def test_fused_engine_runs_real_int8_with_the_cache_scales(fused_model) -> None:
    """make_engine(executor="fused") takes int8 (the real int8 GEMMs): each GEMM layer gets its
    calibrated input range / 127, as the int8 kernels dequantize it (fp8: / 448)."""
    from plugins import ops

    names = gemm_inputs(fused_model)
    amax = {t: 1.0 + i for i, t in enumerate(names)} | {"input": 2.63979}
    eng = {q: make_engine(fused_model, precision=q, batch_size=2, device="cpu", amax=amax, executor="fused")
           for q in ("int8", "fp8")}  # fmt: skip
    conv = eng["int8"]._fn.layers.encoder[2]
    assert eng["int8"].precision == "int8" and eng["int8"].in_dtype == torch.int8
    assert conv.dtype == ops.INT8 and conv.in_scale == pytest.approx(amax[names[conv.index]] / 127)
    conv8 = eng["fp8"]._fn.layers.encoder[2]
    assert conv8.in_scale == pytest.approx(amax[names[conv8.index]] / 448)


def test_fused_executor_scale_mapping(renamed_model) -> None:
    """Cache ranges -> the fused executor's GEMM indices: first conv, 11 encoder convs, then per decoder block
    (deconv, conv on the concat buffer, conv)."""
    names = gemm_inputs(renamed_model)
    assert len(names) == 27
    assert names[:2] == ["input", "Relu_2__output"]
    assert names[12:15] == ["Relu_35__output", "Concat_37__output", "Relu_40__output"]
    scales = fused_act_scales(renamed_model, {"input": 2.0, "Concat_37__output": 44.8}, "fp8")
    assert scales == pytest.approx({0: 2.0 / 448, 13: 0.1})
    int8 = fused_act_scales(renamed_model, {"input": 2.0, "Concat_37__output": 44.8}, "int8")
    assert int8 == pytest.approx({0: 2.0 / 127, 13: 44.8 / 127})
    with pytest.raises(UsageError):
        make_engine(renamed_model, device="cpu", executor="warp")
    # fp8 and int8 on the CPU stay on the converted graph (simulated); on CUDA they default to "fused"
    amax = {t: 4.0 for t in quantizable_tensors(convert(renamed_model))}
    assert make_engine(renamed_model, precision="fp8", device="cpu", amax=amax).executor == "graph"
    assert make_engine(renamed_model, precision="int8", device="cpu", amax=amax).executor == "graph"


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["fp16", "fp8"])
def test_cuda_fused_executor_matches_graph(fused_model, precision: str) -> None:
    model = fused_model
    x = torch.randn((2, 1, 128, 128, 128)).clamp_(-2.2, 2.64)
    amax = _amax_of(model, x.numpy()) if precision == "fp8" else None
    outs = []
    for executor in ("graph", "fused"):
        eng = make_engine(
            model, precision=precision, batch_size=2, device="cuda", amax=amax, executor=executor
        )
        assert eng.executor == executor and eng.uses_cuda_graph
        outs.append(eng.run(x.cuda()).float().cpu().numpy())
        eng.close()
    assert np.corrcoef(outs[0].ravel(), outs[1].ravel())[0, 1] > (0.999 if precision == "fp16" else 0.9)


@pytest.mark.gpu
@cuda
def test_cuda_short_batches_replay_smaller_graphs(fused_model) -> None:
    """Graphs for batch 4, 2 and 1 beside the full batch of 4: a sample's short last batch replays
    the smallest that holds it, with the same per-window results (the fused kernels work per window)."""
    model = fused_model
    x = torch.randn((4, 1, 128, 128, 128)).clamp_(-2.2, 2.64).cuda()
    amax = _amax_of(model, x[:1].cpu().numpy())
    eng = make_engine(model, precision="fp8", batch_size=4, device="cuda", amax=amax)
    assert eng.executor == "fused" and eng.graph_sizes == [1, 2, 4]
    full = eng.run(x).float().clone()
    for n in (1, 2, 3):
        assert torch.equal(eng.run(x[:n]).float(), full[:n]), n
    eng.close()
