"""plugins.ops Triton kernels under TRITON_INTERPRET=1 on CPU, against plugins.reference (tiny shapes).

The interpreter is decided when the kernels are decorated; plugins.ops re-imports its kernel module
when TRITON_INTERPRET changed, so setting it here (before the first kernel call) is enough. Every test
checks that the Triton path really ran (``ops.use_triton``), so a silent fallback cannot pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from torch.nn import functional as tnf

# Before anything imports triton: Triton fixes interpreter mode at its first import.
_PREV_INTERPRET = os.environ.get("TRITON_INTERPRET")
os.environ["TRITON_INTERPRET"] = "1"

from plugins import ops  # noqa: E402
from plugins import reference as ref  # noqa: E402

if not ops.HAVE_TRITON:
    pytest.skip("triton is not installed", allow_module_level=True)

CL = torch.channels_last_3d


@pytest.fixture(autouse=True, scope="module")
def _restore_env() -> Iterator[None]:
    """After this module, CPU callers of plugins.ops get the plain-torch references again."""
    yield
    if _PREV_INTERPRET is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _PREV_INTERPRET


@pytest.fixture(autouse=True)
def _interpret() -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    if not ops.interpreter_usable():
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set (run this file on its own)")
    assert ops.use_triton(torch.zeros(1))
    torch.manual_seed(1234)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-30))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("relu", [True, False])
def test_instance_norm_relu(dtype: torch.dtype, relu: bool) -> None:
    # A large mean against a small std: the partial-sum merge must not cancel.
    x = (torch.randn(2, 24, 6, 10, 12) * 0.5 + 40.0).to(dtype).contiguous(memory_format=CL)
    g, b = torch.rand(24) + 0.5, torch.randn(24)
    got = ops.instance_norm_relu(x, g, b, 1e-5, relu)
    want = ref.instance_norm_relu(x, g, b, 1e-5, relu)
    assert got.dtype == dtype and got.shape == x.shape
    assert got.is_contiguous(memory_format=CL)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    assert rel(got, want) < tol
    if relu:
        assert float(got.float().min()) >= 0.0


@pytest.mark.slow
def test_instance_norm_merge_levels() -> None:
    # > 256 chunks of 4096 voxels forces the parallel merge level; odd tail chunk.
    x = (torch.randn(1, 2, 33, 64, 500) + 3.0).contiguous(memory_format=CL)
    p = ops.in_stats(ops.to_cl(x))
    assert p.t > 256
    g, b = torch.ones(2), torch.zeros(2)
    a, bb = ops.in_affine(p, g, b, 1e-5)
    xf = x.double().reshape(1, 2, -1)
    mean, var = xf.mean(-1), xf.var(-1, unbiased=False)
    rstd = 1 / torch.sqrt(var + 1e-5)
    torch.testing.assert_close(a.double(), rstd, rtol=1e-4, atol=0)
    torch.testing.assert_close(bb.double(), -mean * rstd, rtol=1e-4, atol=1e-4)


def test_pixel_shuffle3d_concat() -> None:
    x8k = torch.randn(2, 8 * 5, 3, 4, 2).contiguous(memory_format=CL)
    skip = torch.randn(2, 7, 6, 8, 4).contiguous(memory_format=CL)
    got = ops.pixel_shuffle3d_concat(x8k, skip)
    assert torch.equal(got, ref.pixel_shuffle3d_concat(x8k, skip))
    # The channel map itself, from the definition: out[k, o, p, q] = x[k*8 + 4(o%2) + 2(p%2) + q%2].
    o, p, q, k = 5, 3, 2, 4
    assert got[1, k, o, p, q] == x8k[1, k * 8 + 4 * (o % 2) + 2 * (p % 2) + q % 2, o // 2, p // 2, q // 2]


def test_deconv_equals_conv1x1_plus_pixel_shuffle() -> None:
    w, b = torch.randn(6, 4, 2, 2, 2), torch.randn(4)
    x = torch.randn(1, 6, 3, 2, 3)
    w2, b2 = ref.deconv_to_conv1x1(w, b)
    y = tnf.conv3d(x, w2.reshape(32, 6, 1, 1, 1), b2)
    torch.testing.assert_close(
        ref.pixel_shuffle3d(y), tnf.conv_transpose3d(x, w, b, stride=2), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_conv1x1x1_bias(dtype: torch.dtype) -> None:
    x = torch.randn(2, 32, 4, 6, 8).to(dtype).contiguous(memory_format=CL)
    w, b = torch.randn(3, 32), torch.randn(3)
    got = ops.conv1x1x1_bias(x, w, b)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 4, 6, 8) and got.is_contiguous()
    assert rel(got, ref.conv1x1x1_bias(x, w, b)) < 1e-6


def test_conv1x1_out_with_prologue() -> None:
    x = torch.randn(1, 5, 6, 7, 16) * 2 + 1
    a, b = torch.rand(1, 16) + 0.5, torch.randn(1, 16)
    w, bias = torch.randn(3, 16), torch.randn(3)
    got = ops.conv1x1_out_cl(x, w, bias, (a, b))
    xn = torch.relu(x * a.reshape(1, 1, 1, 1, 16) + b.reshape(1, 1, 1, 1, 16))
    assert rel(got, ref.conv1x1x1_bias(ops.from_cl(xn), w, bias)) < 1e-6


@pytest.mark.parametrize("kind", ["int8", "fp32", "fp16"])
def test_conv3x3x3_c1(kind: str) -> None:
    w = torch.randn(32, 1, 3, 3, 3) * 0.3
    if kind == "int8":
        x = torch.randint(-127, 128, (2, 1, 5, 6, 8), dtype=torch.int8)
        got, want = ops.conv3x3x3_c1(x, w, 0.02), ref.conv3x3x3_c1(x, w, 0.02)
        tol = 1e-3  # weights rounded to fp16 for the dot
    else:
        dt = torch.float32 if kind == "fp32" else torch.float16
        x = torch.randn(2, 1, 5, 6, 8).to(dt)
        got, want = ops.conv3x3x3_c1(x, w), ref.conv3x3x3_c1(x, w)
        tol = 1e-6 if kind == "fp32" else 2e-3
    assert got.dtype == want.dtype and got.shape == (2, 32, 5, 6, 8)
    assert got.is_contiguous(memory_format=CL)
    assert rel(got, want) < tol


def test_conv_c1_stats_epilogue() -> None:
    x = torch.randint(-127, 128, (2, 4, 8, 8), dtype=torch.int8)
    w = torch.randn(32, 1, 3, 3, 3)
    out, part = ops.conv_c1_cl(x, ops.pack_c1(w, torch.float32), 0.05, torch.float32, stats=True)
    g, b = torch.rand(32) + 0.5, torch.randn(32)
    a, bb = ops.in_affine(part, g, b, 1e-5)
    got = torch.relu(out * a[:, None, None, None, :] + bb[:, None, None, None, :])
    want = ref.instance_norm_relu(ref.conv3x3x3_c1(x[:, None].float() * 0.05, w), g, b)
    assert rel(ops.from_cl(got), want) < 1e-5


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_conv3x3x3_float(stride: int, precision: str) -> None:
    x = torch.randn(2, 32, 8, 8, 4).contiguous(memory_format=CL)
    w = torch.randn(32, 32, 3, 3, 3) * 0.05
    got = ops.conv3x3x3(x, w, stride, precision)
    want = ref.conv3x3x3(x, w, stride)
    assert got.shape == want.shape and got.is_contiguous(memory_format=CL)
    assert rel(got, want) < {"fp32": 1e-6, "fp16": 2e-3, "bf16": 1.5e-2}[precision]


@pytest.mark.parametrize("stride", [1, 2])
def test_conv3x3x3_fp8(stride: int) -> None:
    x = torch.randn(1, 64, 4, 4, 8).contiguous(memory_format=CL)
    w = torch.randn(32, 64, 3, 3, 3) * 0.05
    got = ops.conv3x3x3(x, w, stride, "fp8", 0.01)
    # Same quantization simulated in fp64: only the accumulation order differs (fp16 output rounding).
    assert rel(got, ref.conv3x3x3_fp8_sim(x, w, stride, 0.01)) < 1e-3
    # And e4m3 against the exact fp32 conv: a few percent at most.
    assert rel(got, ref.conv3x3x3(x, w, stride)) < 0.06


def test_conv_prologue_and_stats_epilogue() -> None:
    """conv(relu(x*a + b)) with zero padding after the normalization, and the output's IN stats."""
    x = torch.randn(2, 4, 4, 8, 32) * 3 + 2
    a, b = torch.rand(2, 32) + 0.5, torch.randn(2, 32)
    w = torch.randn(64, 32, 3, 3, 3) * 0.05
    p = ops.pack_conv3(w, torch.float32)
    out, part = ops.conv3d_cl(
        x, p, 1, pro=(a, b), stats=True, out_dtype=torch.float32, cfg=[32, 64, 32, 4, 3]
    )
    xn = torch.relu(x * a[:, None, None, None, :] + b[:, None, None, None, :])
    want = ref.conv3x3x3(ops.from_cl(xn), w, 1)
    assert rel(ops.from_cl(out), want) < 1e-6
    g, bt = torch.rand(64) + 0.5, torch.randn(64)
    aa, bb = ops.in_affine(part, g, bt, 1e-5)
    got = ops.in_apply(out, aa, bb)
    assert rel(ops.from_cl(got), ref.instance_norm_relu(want, g, bt)) < 1e-5


def test_fp8_prologue_quantizes_after_normalize() -> None:
    x = (torch.randn(1, 4, 4, 4, 32) * 5).half()
    a, b = torch.rand(1, 32) + 0.5, torch.randn(1, 32)
    w = torch.randn(32, 32, 3, 3, 3) * 0.05
    s = 0.02
    p = ops.pack_conv3(w, ops.FP8, act_scale=s)
    out, _ = ops.conv3d_cl(x, p, 1, pro=(a / s, b / s))
    xn = torch.relu(x.float() * a[:, None, None, None, :] + b[:, None, None, None, :])
    want = ref.conv3x3x3_fp8_sim(ops.from_cl(xn), w, 1, s)
    assert rel(ops.from_cl(out), want) < 2e-3
    # Zero padding after the normalization: a constant input whose normalized value is 0 gives 0.
    out0, _ = ops.conv3d_cl(torch.ones_like(x), p, 1, pro=(a / s, -a / s))
    assert float(out0.float().abs().max()) == 0.0


@pytest.mark.parametrize("tmajor", [False, True])
def test_upconv_pixel_shuffle_epilogue_into_concat(tmajor: bool) -> None:
    """ConvTranspose(k2 s2) as a 1x1x1 GEMM whose epilogue writes depth-to-space into a concat buffer."""
    cin, k, cs = 32, 16, 8
    x = torch.randn(2, 2, 4, 2, cin)
    wt, bt = torch.randn(cin, k, 2, 2, 2) * 0.1, torch.randn(k)
    w2, b2 = ref.deconv_to_conv1x1(wt, bt)
    if tmajor:
        w2, b2 = ops.tmajor_rows(w2, b2)
    p = ops.pack_conv1(w2, b2, torch.float32)
    buf = torch.full((2, 4, 8, 4, k + cs), float("nan"))
    ops.conv3d_cl(x, p, 1, out=buf, off=0, pixel_shuffle=True, cfg=[16, 32, 32, 4, 3], tmajor=tmajor)
    want = tnf.conv_transpose3d(ops.from_cl(x), wt, bt, stride=2)
    assert rel(ops.from_cl(buf[..., :k]), want) < 1e-6
    assert torch.isnan(buf[..., k:]).all()  # the skip half is left for the skip writer


def test_in_apply_into_concat_slice_fp8() -> None:
    x = torch.randn(1, 2, 4, 4, 16)
    a, b = torch.rand(1, 16), torch.randn(1, 16)
    buf = torch.zeros((1, 2, 4, 4, 24), dtype=ops.FP8)
    ops.in_apply(x, a * 10, b * 10, out=buf, off=8)
    want = ref.quantize_fp8(torch.relu(x * a.reshape(1, 1, 1, 1, 16) + b.reshape(1, 1, 1, 1, 16)), 0.1)
    # Exact: the kernel rounds to nearest even like torch (the interpreter through ops' emulation).
    assert torch.equal(buf[..., 8:].float(), want.float())
    assert (buf[..., :8].float() == 0).all()


def test_weight_accumulate_and_argmax() -> None:
    r, dims = 8, (12, 16, 8)
    acc = torch.zeros(3, *dims)
    want = acc.clone()
    patches = torch.rand(27, r, r, r)
    logits = torch.randn(3, 3, r, r, r)
    origins = [(0, 0, 0), (4, 8, 0), (4, 4, 0)]  # overlapping windows, kept in order
    ids = [0, 13, 26]
    ops.weight_accumulate(acc, logits, patches, ids, [o for t in origins for o in t])
    for i, (pid, o) in enumerate(zip(ids, origins, strict=True)):
        ref.weight_accumulate(want, logits[i], patches[pid], o)
    torch.testing.assert_close(acc, want, rtol=1e-6, atol=1e-6)
    # Ties go to the lowest class.
    acc[1, 0, 0, 0] = acc[0, 0, 0, 0] = 5.0
    acc[2, 0, 0, 0] = 1.0
    acc[:, 1, 0, 0] = 7.0
    lab = ops.argmax3(acc)
    assert lab.dtype == torch.uint8
    assert torch.equal(lab, ref.argmax(acc))
    assert int(lab[0, 0, 0]) == 0 and int(lab[1, 0, 0]) == 0


def test_sliding_window_hooks() -> None:
    from core.sliding_window import Window

    acc = torch.zeros(3, 8, 8, 8)
    logits = torch.randn(2, 3, 8, 8, 8)
    patches = torch.rand(27, 8 * 8 * 8)
    wins = [Window((0, 0, 0), 4), Window((0, 0, 0), 5)]
    ops.accumulate_fn(acc, logits, patches, wins)
    want = logits[0] * patches[4].reshape(8, 8, 8) + logits[1] * patches[5].reshape(8, 8, 8)
    torch.testing.assert_close(acc, want, rtol=1e-6, atol=1e-6)
    assert torch.equal(ops.argmax_fn(acc), ref.argmax(acc))


def test_custom_ops_registered_with_fake_impls() -> None:
    for name in (
        "instance_norm_relu", "pixel_shuffle3d_concat", "conv1x1x1_bias", "conv3x3x3_c1", "conv3x3x3",
        "weight_accumulate", "argmax3",
    ):  # fmt: skip
        assert hasattr(torch.ops.unet3d, name)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(1, 32, 4, 4, 4)
        y = torch.ops.unet3d.conv3x3x3(x, torch.empty(64, 32, 3, 3, 3), 2, "fp8", 1.0)
        assert y.shape == (1, 64, 2, 2, 2) and y.dtype == torch.float16
        z = torch.ops.unet3d.pixel_shuffle3d_concat(torch.empty(1, 64, 2, 2, 2), torch.empty(1, 8, 4, 4, 4))
        assert z.shape == (1, 16, 4, 4, 4)


def test_tuned_tile_falls_back_to_another_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles are tuned at batch 8; a tile never crosses a sample, so batch 1 (SingleStream tails) and
    batch 4 reuse it instead of the heuristic, and other layers do not match."""
    p = ops.PackedConv(None, None, None, 3, 32, 32, 1.0, ops.FP8)  # type: ignore[arg-type]
    s = 128**3
    tuned = {ops.conv_key(8 * s, s, p, 1, False, 0): [512, 32, 32, 4, 3, 1]}
    monkeypatch.setattr(ops, "TUNED", tuned)
    assert ops.tuned_tile(ops.conv_key(8 * s, s, p, 1, False, 0)) == [512, 32, 32, 4, 3, 1]
    assert ops.tuned_tile(ops.conv_key(1 * s, s, p, 1, False, 0)) == [512, 32, 32, 4, 3, 1]
    assert ops.tuned_tile(ops.conv_key(8 * s, s, p, 2, False, 0)) is None  # another stride
    assert ops.tuned_tile(ops.conv_key(8 * s, s, p, 1, True, 0)) is None  # another prologue mode


@pytest.mark.parametrize(
    ("precision", "pk", "cin", "tile"),
    [
        ("fp32", 2, 32, [16, 0, 32, 4, 3, 0, 2]),
        ("fp32", 4, 32, [8, 0, 64, 4, 3, 3, 4]),
        ("fp16", 2, 64, [16, 0, 128, 4, 3, 1, 2]),
        ("fp8", 2, 32, [16, 0, 64, 4, 3, 0, 2]),
    ],
)
def test_wpack_conv_equals_plain_conv_and_stats(precision: str, pk: int, cin: int, tile: list[int]) -> None:
    """The W-packed kernel (P outputs along W per GEMM row, banded weights) against the plain
    implicit-GEMM kernel on the same packed weights and input, stats epilogue included; edges in
    every dimension (pad 1) and two samples (tiles never cross a sample)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 4, 8, cin)
    w = torch.randn(32, cin, 3, 3, 3) * 0.05
    dt = ops.PRECISIONS[precision]
    p = ops.pack_conv3(w, dt, 0.02)
    xin = x.to(dt) if precision != "fp8" else (x / 0.02).clamp(-448, 448).to(dt)
    od = torch.float32
    want, wpart = ops.conv3d_cl(xin, p, 1, stats=True, out_dtype=od, cfg=[32, 32, 32, 4, 3])
    got, gpart = ops.conv3d_cl(xin, p, 1, stats=True, out_dtype=od, cfg=tile)
    assert got.shape == want.shape == (2, 4, 4, 8, 32)
    assert rel(got, want) < (1e-6 if precision == "fp32" else 2e-3)
    if precision == "fp32":  # and the reference conv itself
        assert rel(ops.from_cl(got), ref.conv3x3x3(ops.from_cl(x), w, 1)) < 1e-5
    g, b = torch.rand(32) + 0.5, torch.randn(32)
    a1, b1 = ops.in_affine(wpart, g, b)
    a2, b2 = ops.in_affine(gpart, g, b)
    assert rel(a2, a1) < 1e-4 and rel(b2, b1) < 1e-4


def test_wpack_tile_that_does_not_fit_is_refused() -> None:
    p = ops.pack_conv3(torch.randn(32, 32, 3, 3, 3), torch.float32)
    x = torch.randn(1, 4, 4, 6, 32)  # W = 6 is not a multiple of P = 4
    with pytest.raises(ValueError, match="W-packed"):
        ops.conv3d_cl(x, p, 1, cfg=[8, 0, 32, 4, 3, 0, 4])
    with pytest.raises(ValueError, match="W-packed"):
        ops.conv3d_cl(torch.randn(1, 4, 4, 8, 32), p, 2, cfg=[8, 0, 32, 4, 3, 0, 2])  # stride 2


def test_tuned_wpack_tile_is_skipped_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A W-packed tile tuned for the apply mode also answers the fused-prologue key's lookup (the
    "other prologue mode" fallback): such calls take the heuristic tile instead of failing."""
    p = ops.pack_conv3(torch.randn(32, 32, 3, 3, 3) * 0.05, torch.float32)
    x = torch.randn(1, 4, 4, 8, 32)
    s = 4 * 4 * 8
    monkeypatch.setattr(ops, "TUNED", {ops.conv_key(s, s, p, 1, False, 0): [16, 64, 32, 4, 3, 0, 2]})
    a, b = torch.rand(1, 32) + 0.5, torch.randn(1, 32)
    got, _ = ops.conv3d_cl(x, p, 1, pro=(a, b), out_dtype=torch.float32)  # prologue: plain kernel
    xn = torch.relu(x * a[:, None, None, None, :] + b[:, None, None, None, :])
    assert rel(ops.from_cl(got), ref.conv3x3x3(ops.from_cl(xn), p_w(p), 1)) < 1e-5
    ops.conv3d_cl(x, p, 1, out_dtype=torch.float32)  # apply mode: the W-packed tile
    assert 2 in p.derived


def p_w(p: ops.PackedConv) -> torch.Tensor:
    """(Cout, Cin, 3, 3, 3) fp32 weights back from a PackedConv's (Cout, 27*Cin) layout."""
    return p.w.float().reshape(p.cout, 3, 3, 3, p.cin).permute(0, 4, 1, 2, 3)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_reads_a_channel_slice_of_a_concat_buffer(stride: int) -> None:
    """The down conv reads the normalized skip where the decoder's concat buffer holds it (channels
    32..63 of 64 per voxel): the same values as from a contiguous copy, bit for bit; and the tile's
    cache flags (bit 0 activations, bit 1 weights through L1) change nothing but the cache path."""
    torch.manual_seed(1)
    buf = torch.randn(2, 4, 4, 8, 64)
    p = ops.pack_conv3(torch.randn(32, 32, 3, 3, 3) * 0.05, torch.float32)
    view = buf[..., 32:]
    assert not view.is_contiguous()
    want, wpart = ops.conv3d_cl(view.contiguous(), p, stride, stats=True, out_dtype=torch.float32,
                                cfg=[16, 32, 32, 4, 3, 0])  # fmt: skip
    for ca in (0, 1, 2, 3):
        got, gpart = ops.conv3d_cl(
            view, p, stride, stats=True, out_dtype=torch.float32, cfg=[16, 32, 32, 4, 3, ca]
        )
        assert torch.equal(got, want) and torch.equal(gpart.mean, wpart.mean)
    assert (
        rel(
            ops.from_cl(want),
            ref.conv3x3x3(
                ops.from_cl(view.contiguous()), p.w.reshape(32, 3, 3, 3, 32).permute(0, 4, 1, 2, 3), stride
            ),
        )
        < 1e-5
    )


def test_skip_sharing_map_and_scales() -> None:
    """Which down conv reads its input from which decoder block's concat buffer, and with which fp8
    scale: encoder positions 1, 3, 5, 7, 9 (after each skip) <- decoder blocks 4..0, the down conv
    taking the buffer's scale; not where the two GEMMs differ in dtype (a 16-channel skip stays fp16
    for the down conv while the 32-channel buffer is fp8), not in the fused-prologue mode, not when
    switched off."""
    from core.backends.torch.fused import FusedUNet3D

    torch.manual_seed(0)
    m = ref.UNet3D((32, 64, 64, 64, 64)).eval()
    scales = {i: 0.01 * (i + 1) for i in range(27)}
    f = FusedUNet3D.from_reference(m, precision="fp8", device="cpu", act_scales=scales)
    assert f.share == {1: 4, 3: 3, 5: 2, 7: 1, 9: 0}
    for j, blk in f.share.items():
        down, c1 = f.layers.encoder[j], f.layers.decoder[blk][1]
        assert down.stride == 2 and down.in_scale == c1.in_scale == scales[c1.index]
        assert down.packed.act_scale == c1.in_scale
    assert f.layers.encoder[2].in_scale == scales[f.layers.encoder[2].index]  # not a down conv: its own
    half = FusedUNet3D.from_reference(ref.UNet3D((16, 32, 64, 64, 64)).eval(), precision="fp8", device="cpu")
    assert half.share == {3: 3, 5: 2, 7: 1, 9: 0}
    assert FusedUNet3D.from_reference(m, precision="fp8", device="cpu", prologue="fused").share == {}
    assert FusedUNet3D.from_reference(m, precision="fp16", device="cpu", share_skips=False).share == {}


# --- real int8 (int8 operands, exact int32 accumulation) ------------------------------------------


def test_int8_quantization_rule() -> None:
    """The reference rule the kernels follow: x/scale rounded half to even, saturated at +-127 (never
    -128); per-output-channel weight scales amax/127."""
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 126.6, 300.0, -300.0, -127.5])
    assert ref.quantize_int8(x, 1.0).tolist() == [0, 2, 2, 0, -2, 127, 127, -127, -127]
    w = torch.tensor([[1.0, -2.54], [0.0, 0.0]])
    assert torch.allclose(ref.weight_scales_int8(w), torch.tensor([2.54 / 127, 1.0]))


@pytest.mark.parametrize("stride", [1, 2])
def test_conv3x3x3_int8_is_the_simulation_bit_for_bit(stride: int) -> None:
    """The int8 kernel accumulates int8 products exactly in int32 and rescales in fp32 as
    ref.conv3x3x3_int8_sim does: equal to it bit for bit (fp32 output), and a few percent from fp32."""
    torch.manual_seed(3)
    x = torch.randn(2, 64, 4, 4, 8).contiguous(memory_format=CL)
    w = torch.randn(32, 64, 3, 3, 3) * 0.05
    s = 4.0 / 127
    p = ops.pack_conv3(w, ops.INT8, s)
    assert p.w.dtype == torch.int8 and int(p.w.abs().max()) == 127
    xq = ref.quantize_int8(ops.to_cl(x), s)
    got, _ = ops.conv3d_cl(xq, p, stride, out_dtype=torch.float32, cfg=[16, 32, 64, 4, 3])
    want = ref.conv3x3x3_int8_sim(x, w, stride, s)
    assert torch.equal(ops.from_cl(got), want)
    # the custom op (fp16 out) is the same numbers rounded once
    y = ops.conv3x3x3(x, w, stride, "int8", s)
    assert y.dtype == torch.float16 and torch.equal(y.float(), want.half().float())
    assert rel(want, ref.conv3x3x3(x, w, stride)) < 0.03


@pytest.mark.parametrize(("pk", "tile"), [(2, [16, 0, 64, 4, 3, 0, 2]), (4, [8, 0, 64, 4, 3, 1, 4])])
def test_wpack_int8_equals_plain_int8_and_stats(pk: int, tile: list[int]) -> None:
    """The W-packed kernel with int8 operands gives the plain kernel's numbers exactly (both sums are
    exact integers), statistics included; edges and two samples as the fp tests."""
    torch.manual_seed(4)
    x = torch.randn(2, 4, 4, 8, 32)
    w = torch.randn(32, 32, 3, 3, 3) * 0.05
    s = 3.0 / 127
    p = ops.pack_conv3(w, ops.INT8, s)
    xq = ref.quantize_int8(x, s)
    want, wpart = ops.conv3d_cl(xq, p, 1, stats=True, out_dtype=torch.float32, cfg=[32, 32, 32, 4, 3])
    got, gpart = ops.conv3d_cl(xq, p, 1, stats=True, out_dtype=torch.float32, cfg=tile)
    assert pk in p.derived and p.derived[pk].w.dtype == torch.int8
    assert torch.equal(got, want)
    assert torch.equal(ops.from_cl(want), ref.conv3x3x3_int8_sim(ops.from_cl(x), w, 1, s))
    a1, b1 = ops.in_affine(wpart, torch.ones(32), torch.zeros(32))
    a2, b2 = ops.in_affine(gpart, torch.ones(32), torch.zeros(32))
    assert rel(a2, a1) < 1e-5 and rel(b2, b1) < 1e-5


def test_in_apply_int8_rounds_half_to_even_and_saturates() -> None:
    x = torch.tensor([0.5, 1.5, 2.5, -2.5, 3.49, 126.5, 127.5, 1e6, -1e6, -127.6, 0.0, 7.0])
    x = x.reshape(1, 1, 1, 12, 1).repeat(1, 1, 2, 1, 16) * torch.linspace(1, 2, 16)
    a, b = torch.ones(1, 16), torch.zeros(1, 16)
    out = ops.in_apply(x, a, b, relu=False, out_dtype=ops.INT8)
    assert out.dtype == torch.int8
    assert torch.equal(out, ref.quantize_int8(x, 1.0))
    assert int(out.min()) == -127
    # into a channel slice of an int8 concat buffer, with the scale folded into (a, b) and ReLU
    buf = torch.full((1, 1, 2, 12, 24), 5, dtype=torch.int8)
    ops.in_apply(x, a, b - 3.0, out=buf, off=8)
    assert torch.equal(buf[..., 8:], ref.quantize_int8(torch.relu(x - 3.0), 1.0))
    assert (buf[..., :8] == 5).all()


def test_upconv_int8_into_an_int8_concat_buffer() -> None:
    """The ConvTranspose GEMM with int8 operands writes int8 (bias added, requantized with the buffer's
    scale folded into the column scale and bias, as plugins.unet packs it) straight into the buffer."""
    torch.manual_seed(5)
    cin, k = 32, 16
    x = torch.randn(1, 2, 2, 4, cin)
    wt, bt = torch.randn(cin, k, 2, 2, 2) * 0.1, torch.randn(k) * 0.1
    w2, b2 = ops.tmajor_rows(*ref.deconv_to_conv1x1(wt, bt))
    s_in, s_out = 3.0 / 127, 2.0 / 127
    p = ops.pack_conv1(w2, b2, ops.INT8, s_in)
    p.colscale = (p.colscale / s_out).contiguous()
    assert p.bias is not None
    p.bias = (p.bias / s_out).contiguous()
    buf = torch.zeros((1, 4, 4, 8, 2 * k), dtype=torch.int8)
    xq = ref.quantize_int8(x, s_in)
    ops.conv3d_cl(xq, p, 1, out=buf, pixel_shuffle=True, cfg=[16, 32, 32, 4, 3], tmajor=True)
    # the same arithmetic in torch: exact integer GEMM, fp32 scale, fp32 bias, RNE + saturation
    acc = (xq.reshape(-1, cin).double() @ p.w.double().t()).float()
    y = (acc * p.colscale + p.bias).clamp(-127, 127).round().to(torch.int8)
    x8k = y.reshape(1, 2, 2, 4, 8, k).permute(0, 5, 4, 1, 2, 3).reshape(1, 8 * k, 2, 2, 4)  # k*8 + t
    want = ref.pixel_shuffle3d(x8k)
    assert torch.equal(ops.from_cl(buf[..., :k]), want)
    # and against the float ConvTranspose: within the two quantization steps
    ref_y = tnf.conv_transpose3d(ops.from_cl(x), wt, bt, stride=2) / s_out
    assert float((ops.from_cl(buf[..., :k]).float() - ref_y).abs().max()) < 2.0
    assert (buf[..., k:] == 0).all()


def test_int8_layers_take_their_fp8_twin_tuned_tile(monkeypatch: pytest.MonkeyPatch) -> None:
    p8 = ops.PackedConv(None, None, None, 3, 32, 32, 1.0, ops.FP8)  # type: ignore[arg-type]
    pi = ops.PackedConv(None, None, None, 3, 32, 32, 1.0, ops.INT8)  # type: ignore[arg-type]
    s = 128**3
    monkeypatch.setattr(ops, "TUNED", {ops.conv_key(8 * s, s, p8, 1, False, 0): [128, 64, 128, 4, 4, 0, 2]})
    assert ops.tuned_tile(ops.conv_key(8 * s, s, pi, 1, False, 0)) == [128, 64, 128, 4, 4, 0, 2]
    assert ops.tuned_tile(ops.conv_key(1 * s, s, pi, 1, False, 0)) == [128, 64, 128, 4, 4, 0, 2]
    assert ops.tuned_tile(ops.conv_key(8 * s, s, pi, 2, False, 0)) is None


def test_fused_int8_packs_int8_gemms_with_amax_over_127() -> None:
    """precision="int8": every GEMM with Cin % 32 == 0 gets int8 weights and the scale amax/127 of its
    calibrated input (fp8: amax/448); the others stay fp16; the skip-sharing rule is unchanged."""
    from core.backends.torch.fused import FusedUNet3D, act_scales_from_amax

    torch.manual_seed(0)
    m = ref.UNet3D((16, 32, 64, 64, 64)).eval()
    amax = {i: 0.5 * (i + 1) for i in range(27)}
    f = FusedUNet3D.from_reference(
        m, precision="int8", device="cpu", act_scales=act_scales_from_amax(amax, "int8")
    )
    f8 = FusedUNet3D.from_reference(
        m, precision="fp8", device="cpu", act_scales=act_scales_from_amax(amax, "fp8")
    )
    convs = [*f.layers.encoder, *[s for blk in f.layers.decoder for s in blk]]
    for s in convs:
        want = ops.INT8 if s.weight.shape[1] % 32 == 0 else torch.float16
        assert s.dtype == want and s.packed.w.dtype == want
        if s.dtype == ops.INT8 and s.index not in [f.layers.encoder[j].index for j in f.share]:
            assert s.in_scale == pytest.approx(amax[s.index] / 127)
    assert f.share == f8.share == {3: 3, 5: 2, 7: 1, 9: 0}
    e2 = f.layers.encoder[2]
    assert e2.in_scale == pytest.approx(amax[e2.index] / 127)
    assert f8.layers.encoder[2].in_scale == pytest.approx(amax[e2.index] / 448)
    with pytest.raises(ValueError, match="precision"):
        FusedUNet3D.from_reference(m, precision="int4", device="cpu")
