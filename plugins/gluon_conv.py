# ruff: noqa: N803, N806  (kernel shape names in capitals, as in plugins._kernels)
"""A persistent Hopper implicit-GEMM 3^3 convolution in Gluon for the thin full-resolution layers.

Why: the Triton kernels (plugins._kernels) fetch each input row from L2 once per tap and the weights once
per output tile; on the thin 128^3 layers that L2 -> shared-memory traffic, not the tensor cores, is the
bound (docs/PERFORMANCE.md). This kernel controls shared memory itself:

- the layer's weights are loaded into shared memory once per CTA (TMA) and stay there; the grid is
  persistent (a few CTAs per SM, each walking a strided list of output tiles);
- an output tile is 2 x 2 x TW voxels (d, h, w) of one sample, i.e. four GEMM rows of TW voxels. Its
  input halo is 4 x 4 lines of TW voxels; one TMA box [1, 4, 4, TW, C] loads it, with the zero padding
  of the convolution done by TMA's out-of-bounds fill. Gluon 3.6 cannot read a shared-memory view at a
  one-voxel offset (a subslice offset must be a multiple of the slice's power-of-two size), so the kw
  shift is taken by TMA instead: three boxes per tile at w0 - 1, w0, w0 + 1 ("slabs"). Each input line
  of a slab is loaded into registers once (ldmatrix) and feeds every output row it touches (up to 4 of
  the 9 (kd, kh) taps): 48 line loads per 4 rows instead of 108;
- wgmma takes that line as its register A operand and the tap's weights from shared memory as B;
  int8 x int8 -> int32 (IGMMA) or e4m3 x e4m3 -> fp32 (QGMMA);
- two slab buffers: the TMA of slab s + 2 is issued as soon as slab s has been read, so loads overlap
  the MMAs of the next slab and the epilogue;
- epilogue as plugins._kernels.conv_wpack_kernel's: acc * colscale[co] in fp32, per-tile InstanceNorm
  partials (mean, M2) over the tile's 4*TW voxels, fp16 pre-norm output.

Gluon has no CPU interpreter: correctness is checked on CUDA against the Triton kernels
(tests/test_gluon_conv.py, bench/gpu_session.py); on CPU the kernel is compiled for sm_90 and its SASS
inspected (:func:`compile_sm90`). Import this module lazily: it needs Triton's Gluon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

# Triton 3.6 (the GPU machine) names these async_copy_global_to_shared and thread_barrier; later
# releases (3.9 in the development venv) async_load and barrier
tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier

TD = 2  # output tile: TD x TH x TW voxels (d, h, w)
TH = 2
LINES = (TD + 2) * (TH + 2)  # input lines of one slab
TD_C = gl.constexpr(TD)
TH_C = gl.constexpr(TH)
LINES_C = gl.constexpr(LINES)
SMEM_LIMIT = 227 * 1024  # per block, H100/H200


@gluon.constexpr_function
def _valid(line: Any, kd: Any, kh: Any) -> bool:
    """Whether input line (dd, hh) of the halo feeds output row (dd - kd, hh - kh) of the tile."""
    line, kd, kh = int(line), int(kd), int(kh)
    d, h = line // (TH + 2) - kd, line % (TH + 2) - kh
    return 0 <= d < TD and 0 <= h < TH


@gluon.constexpr_function
def _row(line: Any, kd: Any, kh: Any) -> int:
    line, kd, kh = int(line), int(kd), int(kh)
    return (line // (TH + 2) - kd) * TH + (line % (TH + 2) - kh)


@gluon.constexpr_function
def _n_mma(line: Any) -> int:
    """wgmma groups issued for one input line: the (kd, kh) taps that land inside the tile."""
    line = int(line)
    dd, hh = line // (TH + 2), line % (TH + 2)
    return sum(1 for k in range(3) if 0 <= dd - k < TD) * sum(1 for k in range(3) if 0 <= hh - k < TH)


@gluon.constexpr_function
def _acc_dtype(int8: Any) -> Any:
    return gl.int32 if bool(int8) else gl.float32


# The @gluon.jit kernels below leave their tensor parameters unannotated on purpose (hence the
# no-untyped-def ignores): Triton reads parameter annotations as the kernel signature (a Python int or
# float becomes a fixed i32 / fp32 argument that is no longer specialized). pyproject's mypy override
# for plugins._kernels says the same for the Triton kernels.
@gluon.jit
def _mma_row(a, b, acc0, acc1, acc2, acc3, ROW: gl.constexpr):  # type: ignore[no-untyped-def]
    """acc[ROW] += a @ b (asynchronous); ROW is a compile-time index into the four accumulators."""
    if ROW == 0:
        acc0 = warpgroup_mma(a, b, acc0, is_async=True)
    elif ROW == 1:
        acc1 = warpgroup_mma(a, b, acc1, is_async=True)
    elif ROW == 2:
        acc2 = warpgroup_mma(a, b, acc2, is_async=True)
    else:
        acc3 = warpgroup_mma(a, b, acc3, is_async=True)
    return acc0, acc1, acc2, acc3


@gluon.jit
def _tile_origin(tile, D, H, W, TW: gl.constexpr):  # type: ignore[no-untyped-def]
    """Tile id -> (n, d0, h0, w0); w fastest so neighbouring CTAs share halo lines in L2."""
    tw = W // TW
    th = H // 2
    td = D // 2
    per_sample = td * th * tw
    n = tile // per_sample
    r = tile - n * per_sample
    w0 = (r % tw) * TW
    h0 = ((r // tw) % th) * 2
    d0 = (r // (tw * th)) * 2
    return n, d0, h0, w0


@gluon.jit
def _issue_slab(  # type: ignore[no-untyped-def]
    x_desc, halo, ready, s, n_slabs, pid, nprog, D, H, W, TW: gl.constexpr
):
    """TMA of slab s (tile s // 3 of this CTA, kw = s % 3) into buffer s % 2; nothing past the end."""
    pred = s < n_slabs
    i = s // 3
    kw = s - 3 * i
    n, d0, h0, w0 = _tile_origin(pid + i * nprog, D, H, W, TW)
    b = s % 2
    bar = ready.index(b)
    mbarrier.expect(bar, x_desc.block_type.nbytes, pred=pred)
    coord = [n, d0 - 1, h0 - 1, w0 - 1 + kw, 0]
    tma_load(x_desc, coord, bar, halo.index(b), pred=pred)


@gluon.jit
def conv3_halo_kernel(  # type: ignore[no-untyped-def]
    x_desc,
    w_desc,
    out_ptr,
    colscale_ptr,
    pmean_ptr,
    pm2_ptr,
    D,
    H,
    W,
    num_tiles,
    CIN: gl.constexpr,
    COUT: gl.constexpr,
    INT8: gl.constexpr,
    STATS: gl.constexpr,
    TW: gl.constexpr,
    num_warps: gl.constexpr,
):
    """3^3 conv, stride 1, pad 1 of x (N, D, H, W, CIN) int8 / e4m3 (x_desc: TMA boxes [1, 4, 4, TW, CIN])
    with weights (27*COUT, CIN) tap-major (w_desc: boxes [COUT, CIN]) -> out (N, D, H, W, COUT) fp16 =
    acc * colscale[co], and per-tile (mean, M2) partials, row = tile id (tiles are sample-major, 4*TW
    voxels each). Persistent: CTA pid handles tiles pid, pid + nprog, ..."""
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    my_tiles = (num_tiles - pid + nprog - 1) // nprog
    n_slabs = 3 * my_tiles

    acc_l: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, COUT, 32]
    )
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_l, k_width=4)
    ACC: gl.constexpr = _acc_dtype(INT8)

    halo = gl.allocate_shared_memory(x_desc.dtype, [2, 1, TD_C + 2, TH_C + 2, TW, CIN], x_desc.layout)
    wsm = gl.allocate_shared_memory(w_desc.dtype, [27, COUT, CIN], w_desc.layout)
    wbar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(wbar, count=1)
    mbarrier.init(ready.index(0), count=1)
    mbarrier.init(ready.index(1), count=1)
    fence_async_shared()

    # the layer's weights, once per CTA
    mbarrier.expect(wbar, 27 * w_desc.block_type.nbytes)
    for t in gl.static_range(27):
        tma_load(w_desc, [t * COUT, 0], wbar, wsm.index(t))
    _issue_slab(x_desc, halo, ready, 0, n_slabs, pid, nprog, D, H, W, TW)
    _issue_slab(x_desc, halo, ready, 1, n_slabs, pid, nprog, D, H, W, TW)

    rn = gl.arange(0, COUT, layout=gl.SliceLayout(0, acc_l))
    rm = gl.arange(0, TW, layout=gl.SliceLayout(1, acc_l))
    cs = gl.load(colscale_ptr + rn)
    mbarrier.wait(wbar, 0)

    for i in range(my_tiles):
        tile = pid + i * nprog
        n, d0, h0, w0 = _tile_origin(tile, D, H, W, TW)
        acc0 = gl.zeros([TW, COUT], ACC, acc_l)
        acc1 = gl.zeros([TW, COUT], ACC, acc_l)
        acc2 = gl.zeros([TW, COUT], ACC, acc_l)
        acc3 = gl.zeros([TW, COUT], ACC, acc_l)
        for kw in gl.static_range(3):
            s = 3 * i + kw
            b = s % 2
            mbarrier.wait(ready.index(b), (s // 2) & 1)
            slab = halo.index(b).reshape([LINES_C * TW, CIN])
            for line in gl.static_range(LINES_C):
                a = slab.slice(line * TW, TW).load(a_l)
                for kd in gl.static_range(3):
                    for kh in gl.static_range(3):
                        if _valid(line, kd, kh):
                            wt = wsm.index(kd * 9 + kh * 3 + kw).permute((1, 0))
                            acc0, acc1, acc2, acc3 = _mma_row(
                                a, wt, acc0, acc1, acc2, acc3, _row(line, kd, kh)
                            )
                # this line's MMAs may still run while the next line loads; earlier ones are done
                acc0, acc1, acc2, acc3 = warpgroup_mma_wait(
                    num_outstanding=_n_mma(line), deps=(acc0, acc1, acc2, acc3)
                )
            # every warp has read buffer b (ldmatrix into registers): refill it with slab s + 2
            cta_barrier()
            fence_async_shared()
            _issue_slab(x_desc, halo, ready, s + 2, n_slabs, pid, nprog, D, H, W, TW)
        acc0, acc1, acc2, acc3 = warpgroup_mma_wait(num_outstanding=0, deps=(acc0, acc1, acc2, acc3))

        y0 = acc0.to(gl.float32) * cs[None, :]
        y1 = acc1.to(gl.float32) * cs[None, :]
        y2 = acc2.to(gl.float32) * cs[None, :]
        y3 = acc3.to(gl.float32) * cs[None, :]
        if STATS:
            mean = gl.sum(y0 + y1 + y2 + y3, axis=0) / (4 * TW)
            e0 = y0 - mean[None, :]
            e1 = y1 - mean[None, :]
            e2 = y2 - mean[None, :]
            e3 = y3 - mean[None, :]
            m2 = gl.sum(e0 * e0 + e1 * e1 + e2 * e2 + e3 * e3, axis=0)
            gl.store(pmean_ptr + tile * COUT + rn, mean)
            gl.store(pm2_ptr + tile * COUT + rn, m2)
        # output row (d0, h0) of the tile; the other three rows are whole-line strides away
        row0 = out_ptr + (((n * D + d0) * H + h0).to(gl.int64) * W + w0) * COUT
        offs = rm[:, None] * COUT + rn[None, :]
        gl.store(row0 + offs, y0.to(gl.float16))
        gl.store(row0 + W * COUT + offs, y1.to(gl.float16))  # (d0, h0 + 1)
        gl.store(row0 + H * W * COUT + offs, y2.to(gl.float16))  # (d0 + 1, h0)
        gl.store(row0 + (H + 1) * W * COUT + offs, y3.to(gl.float16))

    mbarrier.invalidate(wbar)
    mbarrier.invalidate(ready.index(0))
    mbarrier.invalidate(ready.index(1))


# --- host side -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HaloConfig:
    """What one launch compiles for: channel counts, int8 or e4m3, the tile width along W."""

    cin: int
    cout: int
    int8: bool
    tw: int = 64
    num_warps: int = 4

    @property
    def smem_bytes(self) -> int:
        return 2 * LINES * self.tw * self.cin + 27 * self.cout * self.cin + 64

    @property
    def ctas_per_sm(self) -> int:
        # + a margin for the epilogue's reduction scratch
        return max(1, min(2, SMEM_LIMIT // (self.smem_bytes + 8 * 1024)))


def swizzle(c_bytes: int) -> int:
    """The NVMMA swizzle of rows of c_bytes (8-bit elements: bytes = channels)."""
    return 128 if c_bytes % 128 == 0 else 64 if c_bytes % 64 == 0 else 32 if c_bytes % 32 == 0 else 0


def layouts(cfg: HaloConfig) -> tuple[Any, Any]:
    xl = gl.NVMMASharedLayout(swizzle_byte_width=swizzle(cfg.cin), element_bitwidth=8, rank=5)
    wl = gl.NVMMASharedLayout(swizzle_byte_width=swizzle(cfg.cin), element_bitwidth=8, rank=2)
    return xl, wl


def fits(dims: tuple[int, int, int, int], cin: int, cout: int, tw: int = 64) -> bool:
    """Whether the kernel takes an (N, D, H, W) input with these channel counts: the tile divides the
    volume, the channels suit the MMA shape (K multiple of 32 bytes, N = COUT a power of two <= 64), and
    the weights plus two slabs fit in shared memory."""
    _, d, h, w = dims
    cfg = HaloConfig(cin, cout, True, tw)
    return (
        d % TD == 0 and h % TH == 0 and w % tw == 0 and tw in (32, 64)
        and cin % 32 == 0 and cin <= 128 and cout in (16, 32, 64)
        and cfg.smem_bytes + 8 * 1024 <= SMEM_LIMIT
    )  # fmt: skip


def tap_major(w2: Any, cout: int, cin: int) -> Any:
    """(Cout, 27*Cin) weights (k = tap*Cin + c) -> (27*Cout, Cin), row tap*Cout + co: one TMA box per tap."""
    return w2.reshape(cout, 27, cin).permute(1, 0, 2).reshape(27 * cout, cin).contiguous()


_SM_COUNT: dict[int, int] = {}


def conv3_halo(
    x: Any, w_tap: Any, colscale: Any, out: Any, pmean: Any | None, pm2: Any | None, cfg: HaloConfig
) -> None:
    """Launch on CUDA tensors: x (N, D, H, W, Cin) int8 / float8_e4m3fn contiguous, w_tap (27*Cout, Cin)
    of the same dtype (tap_major), colscale (Cout,) fp32, out (N, D, H, W, Cout) fp16; pmean / pm2
    (N*T, Cout) fp32 with T = D*H*W / (4*TW) tiles per sample (None: no statistics)."""
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    n, d, h, w, cin = x.shape
    xl, wl = layouts(cfg)
    x_desc = TensorDescriptor(x, list(x.shape), list(x.stride()), [1, TD + 2, TH + 2, cfg.tw, cin], xl)
    w_desc = TensorDescriptor(w_tap, list(w_tap.shape), list(w_tap.stride()), [cfg.cout, cin], wl)
    num_tiles = n * (d // TD) * (h // TH) * (w // cfg.tw)
    dev = x.device.index or 0
    if dev not in _SM_COUNT:
        _SM_COUNT[dev] = torch.cuda.get_device_properties(dev).multi_processor_count
    grid = (min(num_tiles, _SM_COUNT[dev] * cfg.ctas_per_sm),)
    stats = pmean is not None
    conv3_halo_kernel[grid](
        x_desc, w_desc, out, colscale, pmean if stats else colscale, pm2 if stats else colscale,
        d, h, w, num_tiles,
        CIN=cin, COUT=cfg.cout, INT8=cfg.int8, STATS=stats, TW=cfg.tw, num_warps=cfg.num_warps,
    )  # fmt: skip


# --- compile for sm_90 without a GPU (tests, bench/gluon_sass.py) --------------------------------------


def signature(cfg: HaloConfig) -> dict[str, str]:
    xl, wl = layouts(cfg)
    ty = "i8" if cfg.int8 else "fp8e4nv"
    return {
        "x_desc": f"tensordesc<{ty}[1, {TD + 2}, {TH + 2}, {cfg.tw}, {cfg.cin}],{xl!r}>",
        "w_desc": f"tensordesc<{ty}[{cfg.cout}, {cfg.cin}],{wl!r}>",
        "out_ptr": "*fp16", "colscale_ptr": "*fp32", "pmean_ptr": "*fp32", "pm2_ptr": "*fp32",
        "D": "i32", "H": "i32", "W": "i32", "num_tiles": "i32",
        "CIN": "constexpr", "COUT": "constexpr", "INT8": "constexpr", "STATS": "constexpr",
        "TW": "constexpr", "num_warps": "constexpr",
    }  # fmt: skip


def compile_sm90(cfg: HaloConfig, stats: bool = True) -> Any:
    """triton.compile for GPUTarget("cuda", 90, 32) (no GPU needed): the CompiledKernel (asm: ttgir,
    ptx, cubin; metadata: shared bytes)."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    consts = dict(CIN=cfg.cin, COUT=cfg.cout, INT8=cfg.int8, STATS=stats, TW=cfg.tw, num_warps=cfg.num_warps)
    src = GluonASTSource(conv3_halo_kernel, signature(cfg), constexprs=consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": cfg.num_warps})
