"""plugins.ops / core.backends.torch.fused compiled Triton kernels on CUDA against plugins.reference
(skipped without CUDA). Run on its own (not together with tests/test_plugins.py, which switches Triton to the
interpreter): ``pytest tests/test_plugins_gpu.py``."""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
    reason="needs CUDA and compiled Triton (TRITON_INTERPRET unset)",
)

from plugins import ops  # noqa: E402
from plugins import reference as ref  # noqa: E402

CL = torch.channels_last_3d
DEV = "cuda"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(4321)
    # The references run through cuDNN: keep them in true fp32 (TF32 would be the larger error).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-30))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_instance_norm_relu_gpu(dtype: torch.dtype) -> None:
    x = (torch.randn(4, 32, 64, 64, 64, device=DEV) * 2 + 30).to(dtype).contiguous(memory_format=CL)
    g, b = torch.rand(32, device=DEV) + 0.5, torch.randn(32, device=DEV)
    got = ops.instance_norm_relu(x, g, b)
    want = ref.instance_norm_relu(x.double(), g.double(), b.double()).float()
    assert got.dtype == dtype and got.is_contiguous(memory_format=CL)
    assert rel(got, want) < {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]


def test_fp8_cast_is_rne_and_saturating() -> None:
    x = torch.randn(1, 8, 16, 16, 64, device=DEV) * 100
    a, b = torch.ones(1, 64, device=DEV), torch.zeros(1, 64, device=DEV)
    out = ops.in_apply(x, a, b, relu=False, out_dtype=ops.FP8)
    assert torch.equal(out.float(), x.clamp(-448, 448).to(ops.FP8).float())


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cin,cout", [(32, 32), (64, 32), (64, 128), (320, 320)])
def test_conv_fp8_matches_simulation(stride: int, cin: int, cout: int) -> None:
    r = 16 if cin >= 256 else 32
    x = torch.randn(2, cin, r, r, r, device=DEV).contiguous(memory_format=CL)
    w = torch.randn(cout, cin, 3, 3, 3, device=DEV) / (27 * cin) ** 0.5
    got = ops.conv3x3x3(x, w, stride, "fp8", 0.01)
    # same quantization simulated in fp64: accumulation order and the fp16 output rounding differ
    assert rel(got, ref.conv3x3x3_fp8_sim(x, w, stride, 0.01)) < 3e-3
    assert rel(got, ref.conv3x3x3(x, w, stride)) < 0.06


@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_conv_float_gpu(precision: str) -> None:
    x = torch.randn(2, 64, 32, 32, 32, device=DEV).contiguous(memory_format=CL)
    w = torch.randn(32, 64, 3, 3, 3, device=DEV) / (27 * 64) ** 0.5
    got = ops.conv3x3x3(x, w, 1, precision)
    want = ref.conv3x3x3(x.double(), w.double(), 1)
    assert rel(got, want) < {"fp16": 2e-3, "bf16": 1e-2, "fp32": 1e-5}[precision]


def test_every_candidate_tile_is_correct() -> None:
    x = torch.randn(2, 16, 16, 16, 64, device=DEV, dtype=torch.float16)
    w = torch.randn(128, 64, 3, 3, 3, device=DEV) / (27 * 64) ** 0.5
    p = ops.pack_conv3(w, torch.float16)
    want = ref.conv3x3x3(ops.from_cl(x), w, 1)
    for cfg in ops.conv_candidates(16**3, p):
        out, _ = ops.conv3d_cl(x, p, 1, cfg=cfg)
        assert rel(ops.from_cl(out), want) < 2e-3, cfg


def test_prologue_stats_and_fp8_chain() -> None:
    x = (torch.randn(2, 32, 32, 32, 64, device=DEV) * 3 + 1).half()
    a, b = torch.rand(2, 64, device=DEV) + 0.5, torch.randn(2, 64, device=DEV)
    w = torch.randn(64, 64, 3, 3, 3, device=DEV) / (27 * 64) ** 0.5
    s = 0.05
    p = ops.pack_conv3(w, ops.FP8, act_scale=s)
    out, part = ops.conv3d_cl(x, p, 1, pro=(a / s, b / s), stats=True)
    xn = torch.relu(x.float() * a[:, None, None, None, :] + b[:, None, None, None, :])
    want = ref.conv3x3x3_fp8_sim(ops.from_cl(xn), w, 1, s)
    assert rel(ops.from_cl(out), want) < 3e-3
    g, bt = torch.rand(64, device=DEV) + 0.5, torch.randn(64, device=DEV)
    aa, bb = ops.in_affine(part, g, bt)
    got = ops.in_apply(out, aa, bb)
    assert rel(ops.from_cl(got), ref.instance_norm_relu(want, g, bt)) < 3e-3


def test_first_and_last_conv_gpu() -> None:
    x = torch.randint(-127, 128, (2, 1, 64, 64, 64), dtype=torch.int8, device=DEV)
    w = torch.randn(32, 1, 3, 3, 3, device=DEV)
    got = ops.conv3x3x3_c1(x, w, 2.63979 / 127)
    assert rel(got, ref.conv3x3x3_c1(x, w, 2.63979 / 127)) < 1e-3
    y = torch.randn(2, 32, 64, 64, 64, device=DEV).half().contiguous(memory_format=CL)
    wo, bo = torch.randn(3, 32, device=DEV), torch.randn(3, device=DEV)
    assert rel(ops.conv1x1x1_bias(y, wo, bo), ref.conv1x1x1_bias(y, wo, bo)) < 1e-6


def test_pixel_shuffle_concat_and_upconv_gpu() -> None:
    x8k = torch.randn(2, 8 * 64, 16, 16, 16, device=DEV).half().contiguous(memory_format=CL)
    skip = torch.randn(2, 64, 32, 32, 32, device=DEV).half().contiguous(memory_format=CL)
    assert torch.equal(ops.pixel_shuffle3d_concat(x8k, skip), ref.pixel_shuffle3d_concat(x8k, skip))
    x = torch.randn(2, 16, 16, 16, 128, device=DEV).half()
    wt, bt = torch.randn(128, 64, 2, 2, 2, device=DEV) / 128**0.5, torch.randn(64, device=DEV)
    w2, b2 = ref.deconv_to_conv1x1(wt, bt)
    buf = torch.full((2, 32, 32, 32, 128), float("nan"), device=DEV, dtype=torch.float16)
    ops.conv3d_cl(x, ops.pack_conv1(w2, b2, torch.float16), 1, out=buf, pixel_shuffle=True)
    want = torch.nn.functional.conv_transpose3d(ops.from_cl(x).float(), wt, bt, stride=2)
    assert rel(ops.from_cl(buf[..., :64]), want) < 2e-3


def test_accumulate_and_argmax_gpu() -> None:
    from core.sliding_window import Window, default_patches_tensor, window_grid

    dims = (128, 192, 256)
    grid = window_grid(dims)
    patches = default_patches_tensor(DEV, torch.float16)
    logits = torch.randn(len(grid), 3, 128, 128, 128, device=DEV, dtype=torch.float16)
    acc = torch.zeros(3, *dims, device=DEV)
    want = acc.clone()
    for i in range(0, len(grid), 8):
        ws: list[Window] = grid[i : i + 8]
        ops.accumulate_fn(acc, logits[i : i + 8], patches, ws)
        for j, w in enumerate(ws):
            view = want[(slice(None), *w.slices)]
            view += logits[i + j].float() * patches[w.patch_id].float().reshape(128, 128, 128)
    torch.testing.assert_close(acc, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(ops.argmax_fn(acc), ref.argmax(acc))


@pytest.mark.parametrize(
    "precision,prologue", [("fp16", "fused"), ("bf16", "fused"), ("fp8", "fused"), ("fp8", "apply")]
)
def test_fused_unet_full_width(precision: str, prologue: str) -> None:
    from core.backends.torch.fused import FusedUNet3D, GraphedModel

    m = ref.UNet3D().to(DEV).eval()
    x = torch.randint(-127, 128, (2, 1, 128, 128, 128), dtype=torch.int8, device=DEV)
    with torch.no_grad():
        want = m(x.float() * (2.63979 / 127))
    f = FusedUNet3D.from_reference(m, precision=precision, device=DEV, prologue=prologue)
    if precision == "fp8":
        f.calibrate([x])
    got = f(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    agree = float((got.argmax(1) == want.argmax(1)).float().mean())
    err = rel(got, want)
    print(f"fused {precision} {prologue}: rel err {err:.2e}, argmax agreement {agree:.5f}")
    assert err < {"fp16": 2e-2, "bf16": 6e-2, "fp8": 0.25}[precision]
    assert agree > {"fp16": 0.99, "bf16": 0.97, "fp8": 0.9}[precision]
    g = GraphedModel(f, 2, dtype=torch.int8)
    assert torch.equal(g(x), got)


@pytest.mark.parametrize("precision", ["fp16", "fp8"])
def test_shared_skip_buffers_change_nothing_but_scales(precision: str) -> None:
    """Skips normalized once into the concat buffers (the down convs read a channel slice there) give
    the same logits in fp16 (scale 1: the same values, bit for bit) and, in fp8, the same to within the
    quantization step the down convs' coarser shared scale can move."""
    from core.backends.torch.fused import FusedUNet3D

    m = ref.UNet3D().to(DEV).eval()
    x = torch.randint(-127, 128, (2, 1, 128, 128, 128), dtype=torch.int8, device=DEV)
    outs = []
    for share in (False, True):
        f = FusedUNet3D.from_reference(m, precision=precision, device=DEV, share_skips=share)
        if precision == "fp8":
            f.calibrate([x])
        assert bool(f.share) is share
        outs.append(f(x))
    if precision == "fp16":
        assert torch.equal(outs[0], outs[1])
    else:
        assert rel(outs[1], outs[0]) < 0.05
        assert float((outs[1].argmax(1) == outs[0].argmax(1)).float().mean()) > 0.97


@pytest.mark.parametrize(
    "cin,dt,tile",
    [
        (32, "fp8", [256, 64, 64, 4, 3, 1, 2]),
        (32, "fp8", [128, 128, 64, 8, 3, 1, 4]),
        (64, "fp8", [128, 64, 128, 4, 3, 0, 2]),
        (32, "fp16", [128, 64, 64, 4, 3, 1, 2]),
    ],
)
def test_wpack_conv_gpu_matches_plain_kernel(cin: int, dt: str, tile: list[int]) -> None:
    """The W-packed kernel on the GPU against the plain implicit-GEMM kernel (same packed weights and
    fp8 input), output and InstanceNorm statistics, at 64^3 (edges, two samples)."""
    x = torch.randn(2, 64, 64, 64, cin, device=DEV)
    w = torch.randn(32, cin, 3, 3, 3, device=DEV) / (27 * cin) ** 0.5
    d = ops.PRECISIONS[dt]
    p = ops.pack_conv3(w, d, 0.01)
    xin = (x / 0.01).clamp(-448, 448).to(d) if dt == "fp8" else x.to(d)
    want, wp = ops.conv3d_cl(xin, p, 1, stats=True, out_dtype=torch.float32, cfg=[128, 32, 32, 4, 3])
    got, gp = ops.conv3d_cl(xin, p, 1, stats=True, out_dtype=torch.float32, cfg=tile)
    assert rel(got, want) < 1e-5
    g, b = torch.rand(32, device=DEV) + 0.5, torch.randn(32, device=DEV)
    (a1, b1), (a2, b2) = ops.in_affine(wp, g, b), ops.in_affine(gp, g, b)
    assert rel(a2, a1) < 1e-5 and rel(b2, b1) < 1e-5
