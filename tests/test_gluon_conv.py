"""plugins.gluon_conv, the Gluon halo convolution for the thin layers.

Gluon has no CPU interpreter. On CPU this file checks the Python around the kernel (tiling rules, the
tap-major weight layout, the per-layer selection switch) and that the kernel compiles for sm_90 into the
machine code it is written for (IGMMA with register A, ldmatrix, TMA, no local memory). On CUDA it
compares the kernel with the Triton kernels on random data: int8 bit for bit (both sums are exact
integers), fp8 to accumulation order, InstanceNorm partials included, outputs poisoned first.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
try:
    from plugins import gluon_conv as gc
except ImportError as exc:  # a Triton without Gluon's Hopper module
    pytest.skip(f"triton.experimental.gluon unavailable: {exc}", allow_module_level=True)

from plugins import ops
from plugins import reference as ref

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA and compiled Triton (TRITON_INTERPRET unset)")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-30))


def test_tap_major_weights_are_one_box_per_tap() -> None:
    w = torch.randn(32, 64, 3, 3, 3)
    p = ops.pack_conv3(w, torch.float32)
    t = gc.tap_major(p.w, 32, 64)
    assert t.shape == (27 * 32, 64) and t.is_contiguous()
    for tap, (kd, kh, kw) in ((0, (0, 0, 0)), (5, (0, 1, 2)), (26, (2, 2, 2))):
        assert tap == kd * 9 + kh * 3 + kw
        assert torch.equal(t[tap * 32 : (tap + 1) * 32], w[:, :, kd, kh, kw])


def test_fits_only_what_the_kernel_tiles() -> None:
    assert gc.fits((8, 128, 128, 128), 32, 32)
    assert gc.fits((8, 128, 128, 128), 64, 32)
    assert not gc.fits((8, 64, 64, 64), 128, 64)  # weights + two slabs exceed shared memory
    assert not gc.fits((1, 128, 128, 96), 32, 32)  # W not a multiple of the 64-voxel tile
    assert not gc.fits((1, 127, 128, 128), 32, 32)  # odd D
    assert not gc.fits((1, 128, 128, 128), 16, 32)  # K below one 32-byte wgmma step
    assert gc.HaloConfig(32, 32, True).ctas_per_sm == 2  # the 32 -> 32 layers: two CTAs per SM
    assert gc.HaloConfig(64, 32, True).ctas_per_sm == 1


def test_selection_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default: the Triton kernels; a ``halo|<conv key>`` tuned entry (any batch size) selects the Gluon
    kernel for that layer; UNET3D_GLUON_CONV=1 / 0 overrides for every layer."""
    p = ops.PackedConv(None, None, None, 3, 32, 32, 1.0, ops.INT8)  # type: ignore[arg-type]
    s = 128**3
    key8, key1 = ops.conv_key(8 * s, s, p, 1, False, 0), ops.conv_key(s, s, p, 1, False, 0)
    monkeypatch.delenv(ops.ENV_GLUON, raising=False)
    monkeypatch.setattr(ops, "TUNED", {})
    assert ops.halo_choice(key8) == 0
    monkeypatch.setattr(ops, "TUNED", {ops.halo_key(key8): [64]})
    assert ops.halo_choice(key8) == 64 and ops.halo_choice(key1) == 64
    monkeypatch.setenv(ops.ENV_GLUON, "0")
    assert ops.halo_choice(key8) == 0
    monkeypatch.setenv(ops.ENV_GLUON, "1")
    assert ops.halo_choice(ops.conv_key(8 * s, s, p, 2, False, 0)) == 64
    # never on a CPU tensor, a prologue, a stride-2 conv or a float GEMM
    x = torch.zeros((1, 4, 4, 64, 32), dtype=torch.int8)
    pi = ops.pack_conv3(torch.randn(32, 32, 3, 3, 3), ops.INT8, 0.1)
    assert not ops.halo_ok(x, pi, 1, None, False, 0, 32, None, torch.float16)


def test_compiles_for_sm90_into_igmma_ldmatrix_and_tma() -> None:
    """No GPU needed: triton.compile for sm_90, then the SASS (cuobjdump from Triton's wheel): 108 int8
    wgmma per tile (4 output rows x 27 taps) with A from registers loaded by 48 ldmatrix (16 lines x 3
    kw shifts), TMA loads, no local memory; shared memory small enough for two CTAs per SM."""
    from plugins.sass import sass_counts

    k = gc.compile_sm90(gc.HaloConfig(32, 32, True))
    counts, usage, sass = sass_counts(k.asm["cubin"])
    assert counts["IGMMA"] == 108 and counts["QGMMA"] == counts["HGMMA"] == 0
    assert counts["LDSM"] == 48
    assert counts["UTMALDG"] >= 2 and "UTMALDG.5D" in sass  # the weights (2-D) and the halo slabs (5-D)
    assert usage["STACK"] == 0 and counts["LDL"] == counts["STL"] == 0
    assert usage["REG"] <= 255 and 2 * int(k.metadata.shared) <= 228 * 1024


@needs_cuda
@pytest.mark.parametrize(("cin", "cout"), [(32, 32), (64, 32), (32, 16)])
@pytest.mark.parametrize("q", ["int8", "fp8"])
def test_halo_matches_triton_kernels(cin: int, cout: int, q: str) -> None:
    """Random data over several tiles per CTA (2 x 32 x 32 x 128: 1024 tiles), edges in every dimension:
    the Gluon output equals the Triton kernel's (int8: bit for bit), its partials give the same
    InstanceNorm affine, every output is written, and a second run is identical (no race)."""
    torch.manual_seed(7)
    dt = ops.PRECISIONS[q]
    s = 0.05
    x = torch.randn(2, 32, 32, 128, cin, device="cuda")
    w = torch.randn(cout, cin, 3, 3, 3, device="cuda") / (27 * cin) ** 0.5
    xq = ref.quantize_int8(x, s) if q == "int8" else (x / s).clamp(-448, 448).to(dt)
    p = ops.pack_conv3(w, dt, s)
    want, wpart = ops.conv3d_cl(xq, p, 1, stats=True, cfg=[128, min(32, cout), 32, 4, 3])
    out = torch.full_like(want, float("nan"))
    got, gpart = ops.conv3d_halo_cl(xq, p, stats=True, out=out)
    assert got.data_ptr() == out.data_ptr() and gpart is not None
    assert not torch.isnan(got).any() and not torch.isnan(gpart.mean).any()
    if q == "int8":
        assert torch.equal(got, want)
    else:
        assert rel(got, want) < 1e-3  # fp16 outputs of fp32 sums in another order
    g, b = torch.rand(cout, device="cuda") + 0.5, torch.randn(cout, device="cuda")
    (a1, b1), (a2, b2) = ops.in_affine(wpart, g, b), ops.in_affine(gpart, g, b)
    assert rel(a2, a1) < 1e-5 and rel(b2, b1) < 1e-5
    again, _ = ops.conv3d_halo_cl(xq, p, stats=True)
    assert torch.equal(again, got)


@needs_cuda
def test_int8_conv_on_gpu_is_the_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled int8 Triton kernel (and the Gluon one when selected) against the independent
    simulation: exact integer sums, the same fp32 rescale."""
    torch.backends.cudnn.allow_tf32 = False
    x = torch.randn(2, 32, 32, 64, 32, device="cuda")  # (N, D, H, W, C)
    w = torch.randn(32, 32, 3, 3, 3, device="cuda") / (27 * 32) ** 0.5
    s = 4.0 / 127
    want = ref.conv3x3x3_int8_sim(ops.from_cl(x), w, 1, s)  # fp64 sums on the device
    for env in ("0", "1"):
        monkeypatch.setenv(ops.ENV_GLUON, env)
        got = ops.conv3x3x3(ops.from_cl(x), w, 1, "int8", s)
        assert torch.equal(got.float(), want.half().float()), env


def test_the_kernels_tiling_arithmetic_is_the_convolution() -> None:
    """A plain-torch transcription of the kernel's data flow, with its own index helpers: tiles
    decoded as _tile_origin does, three slabs per tile (TMA boxes [1, 4, 4, TW, C] at w0 - 1 + kw, zero
    outside the volume), each line's [TW, C] block times the weights of every (kd, kh) that _valid
    admits, accumulated into row _row, stored at the rows the epilogue writes, partials per tile. It
    must be the convolution and the Triton kernel's statistics: an indexing slip in the design fails
    here, on CPU, before any GPU time is spent."""
    torch.manual_seed(2)
    n, d, h, w, cin, cout, tw = 2, 4, 4, 128, 32, 16, 64
    x = torch.randint(-20, 21, (n, d, h, w, cin)).float()
    wt = torch.randint(-5, 6, (cout, cin, 3, 3, 3)).float()
    w_tap = gc.tap_major(wt.permute(0, 2, 3, 4, 1).reshape(cout, 27 * cin), cout, cin)
    xp = torch.nn.functional.pad(x, (0, 0, 1, 1, 1, 1, 1, 1))  # zero fill = TMA's out-of-bounds fill
    out = torch.full((n, d, h, w, cout), float("nan"))
    per_sample = (d // gc.TD) * (h // gc.TH) * (w // tw)
    pmean = torch.empty(n * per_sample, cout)
    for tile in range(n * per_sample):
        s, r = divmod(tile, per_sample)  # _tile_origin
        w0 = (r % (w // tw)) * tw
        h0 = ((r // (w // tw)) % (h // gc.TH)) * gc.TH
        d0 = (r // ((w // tw) * (h // gc.TH))) * gc.TD
        acc = torch.zeros(gc.TD * gc.TH, tw, cout)
        for kw in range(3):
            # box at (d0 - 1, h0 - 1, w0 - 1 + kw); +1 for the padding of xp
            slab = xp[s, d0 : d0 + gc.TD + 2, h0 : h0 + gc.TH + 2, w0 + kw : w0 + kw + tw]
            lines = slab.reshape(gc.LINES, tw, cin)
            for line in range(gc.LINES):
                for kd in range(3):
                    for kh in range(3):
                        if gc._valid(line, kd, kh):
                            tap = kd * 9 + kh * 3 + kw
                            acc[gc._row(line, kd, kh)] += (
                                lines[line] @ w_tap[tap * cout : (tap + 1) * cout].t()
                            )
        for j in range(
            4
        ):  # the epilogue's four stores: (d0, h0), (d0, h0 + 1), (d0 + 1, h0), (d0 + 1, h0 + 1)
            out[s, d0 + j // 2, h0 + j % 2, w0 : w0 + tw] = acc[j]
        pmean[tile] = acc.reshape(-1, cout).mean(0)
    want = torch.nn.functional.conv3d(x.permute(0, 4, 1, 2, 3), wt, padding=1).permute(0, 2, 3, 4, 1)
    assert torch.equal(out, want)
    # partial row = tile id: every row belongs to its sample and covers 4 * TW voxels
    means = pmean.reshape(n, per_sample, cout).mean(1)
    assert torch.allclose(means, want.reshape(n, -1, cout).mean(1), rtol=1e-5, atol=1e-4)
    assert 3 * sum(gc._n_mma(line) for line in range(gc.LINES)) == 27 * gc.TD * gc.TH  # per slab
