"""GPU ops of the 3D-UNet as torch custom ops ``torch.ops.unet3d.*`` (Triton on CUDA, plain torch elsewhere).

Public ops (each with a fake impl, so torch.compile and CUDA graphs can trace them):
  instance_norm_relu(x, gamma, beta, eps=1e-5, relu=True)   INSTNORM3D (+ReLU), channels-last out
  pixel_shuffle3d_concat(x8k, skip)                          PIXELSHUFFLE3D fused with the decoder Concat
  conv1x1x1_bias(x, w (K, C), b (K))                         CONV3D1X1X1K4: fp32 logits, NCDHW
  conv3x3x3_c1(x (N,1,D,H,W), w (32,1,3,3,3), in_scale)      CONV3D3X3X3C1K32: first conv, int8 in
  conv3x3x3(x, w, stride=1, precision="fp16", act_scale=1)   implicit-GEMM conv, int8 / fp8 e4m3 / fp16 / bf16
  weight_accumulate(acc, logits, patches, patch_ids, origins) sliding-window weight-and-accumulate
  argmax3(acc)                                                labels, ties -> lowest class

Dispatch: CUDA tensors run the Triton kernels (plugins._kernels); CPU tensors run them under Triton's
interpreter when TRITON_INTERPRET=1 (the tests), else the plain-torch references (plugins.reference).
The lower-level channels-last functions below (``conv3d_cl``, ``in_affine``, ``in_apply`` ...) are what
core.backends.torch.fused chains into the fused network; they take (N, D, H, W, C) buffers.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as tnf

from plugins import reference as ref

# Imported lazily (first kernel call): Triton decides interpreter mode when it is first imported.
HAVE_TRITON = importlib.util.find_spec("triton") is not None

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
INT8 = torch.int8
INT8_MAX = 127.0
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8": FP8, "int8": INT8}
QUANT_MAX = {FP8: FP8_MAX, INT8: INT8_MAX}  # amax -> scale = amax / QUANT_MAX[dtype]
ENV_GLUON = "UNET3D_GLUON_CONV"  # "1": the Gluon halo kernel wherever it fits; "0": never; else tuned


def is_8bit(dtype: torch.dtype) -> bool:
    """The GEMM dtypes with per-output-channel weight scales and a per-tensor activation scale."""
    return dtype in QUANT_MAX


_KMOD: ModuleType | None = None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def kernels() -> ModuleType:
    """plugins._kernels, re-imported when TRITON_INTERPRET changed since it was decorated."""
    global _KMOD
    if _KMOD is None:
        _KMOD = importlib.import_module("plugins._kernels")
    if interpreting() != _KMOD.INTERPRET:
        _KMOD = importlib.reload(_KMOD)
    return _KMOD


def interpreter_usable() -> bool:
    """True when Triton can interpret kernels here: TRITON_INTERPRET=1 was set before triton was imported."""
    if not (HAVE_TRITON and interpreting()):
        return False
    import triton.language as tl

    return type(tl.standard.zeros).__name__ == "InterpretedFunction"


def use_triton(t: Tensor) -> bool:
    if not HAVE_TRITON:
        return False
    if t.is_cuda:
        return not interpreting()
    return t.device.type == "cpu" and interpreter_usable()


def _np2(x: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, x))))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def to_cl(x: Tensor) -> Tensor:
    """Logical (N, C, D, H, W) -> contiguous (N, D, H, W, C) buffer (no copy if channels-last)."""
    return x.permute(0, 2, 3, 4, 1).contiguous()


def from_cl(y: Tensor) -> Tensor:
    """(N, D, H, W, C) buffer -> logical (N, C, D, H, W) view in channels-last memory."""
    return y.permute(0, 4, 1, 2, 3)


# --- InstanceNorm: statistics, merge, finalize, apply -------------------------------------------


@dataclass
class Partials:
    """Per-chunk (mean, M2) for each (n, c): rows n*T + t, chunk t covers voxels [t*chunk, (t+1)*chunk)."""

    mean: Tensor  # (N*T, C) fp32
    m2: Tensor
    n: int
    t: int
    s: int  # voxels per sample
    chunk: int


def in_stats(xcl: Tensor) -> Partials:
    """Partials of an (N, D, H, W, C) (or (N, S, C)) buffer, chunks of up to 4096 voxels."""
    n, c = xcl.shape[0], xcl.shape[-1]
    s = xcl.numel() // (n * c)
    chunk = min(4096, _np2(s))
    t = _cdiv(s, chunk)
    bc = min(64, _np2(c))
    bv = max(16, min(chunk, 4096 // bc))
    pm = torch.empty((n * t, c), device=xcl.device, dtype=torch.float32)
    p2 = torch.empty_like(pm)
    kernels().in_stats_kernel[(n * t, _cdiv(c, bc))](xcl, pm, p2, s, c, t, CHUNK=chunk, BV=bv, BC=bc)
    return Partials(pm, p2, n, t, s, chunk)


def in_affine(
    p: Partials, gamma: Tensor, beta: Tensor, eps: float = 1e-5, out_mult: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Merge partials -> (a, b), each (N, C) fp32, with relu(x*a + b) the normalized output times out_mult."""
    k = kernels()
    c = p.mean.shape[1]
    bc = min(64, _np2(c))
    while p.t > 256:  # one parallel merge level keeps the final (per-sample) loop short
        g = 64
        t2 = _cdiv(p.t, g)
        qm = torch.empty((p.n * t2, c), device=p.mean.device, dtype=torch.float32)
        q2 = torch.empty_like(qm)
        k.in_merge_kernel[(p.n * t2, _cdiv(c, bc))](
            p.mean, p.m2, qm, q2, p.t, t2, p.s, c, p.chunk, G=g, BC=bc
        )
        p = Partials(qm, q2, p.n, t2, p.s, p.chunk * g)
    a = torch.empty((p.n, c), device=p.mean.device, dtype=torch.float32)
    b = torch.empty_like(a)
    k.in_finalize_kernel[(p.n, _cdiv(c, bc))](
        p.mean, p.m2, gamma.float().contiguous(), beta.float().contiguous(), a, b,
        p.t, p.s, c, p.chunk, float(eps), float(out_mult), BT=64, BC=bc,
    )  # fmt: skip
    return a, b


def in_apply(
    xcl: Tensor, a: Tensor, b: Tensor, relu: bool = True, out: Tensor | None = None, off: int = 0,
    out_dtype: torch.dtype | None = None,
) -> Tensor:  # fmt: skip
    """out[..., off:off+C] = relu(x*a + b); ``out`` may be a wider (concat) buffer. fp8 / int8 outputs
    saturate (int8: round to nearest even, -127..127)."""
    n, c = xcl.shape[0], xcl.shape[-1]
    s = xcl.numel() // (n * c)
    if out is None:
        out = torch.empty(xcl.shape, device=xcl.device, dtype=out_dtype or xcl.dtype)
    oc = out.shape[-1]
    bc = min(64, _np2(c))
    tuned = TUNED.get(apply_key(s, c, xcl.dtype, out.dtype))
    bv, warps = (tuned[0], tuned[1]) if tuned and not interpreting() else (max(16, 4096 // bc), 4)
    tv = _cdiv(s, bv)
    kernels().in_apply_kernel[(n * tv, _cdiv(c, bc))](
        xcl, out, a, b, s, c, tv, oc, off,
        RELU=relu, FP8_OUT=out.dtype == FP8, EMU=interpreting(), BV=bv, BC=bc, num_warps=warps,
        INT8_OUT=out.dtype == INT8,
    )  # fmt: skip
    return out


def apply_key(s: int, c: int, in_dtype: torch.dtype, out_dtype: torch.dtype) -> str:
    """Tuned-tile key of an apply pass: (BV voxels per program, warps) per voxel count and channels."""
    return f"apply|{s}|{c}|{str(in_dtype).split('.')[-1]}|{str(out_dtype).split('.')[-1]}"


# --- convolutions --------------------------------------------------------------------------------


@dataclass
class PackedConv:
    """Weights laid out for conv_igemm_kernel: (Cout, KS^3*Cin), k = tap*Cin + c, tap = kd*9 + kh*3 + kw."""

    w: Tensor
    colscale: Tensor  # (Cout,) fp32: weight scale * input activation scale
    bias: Tensor | None  # (Cout,) fp32
    ks: int
    cin: int
    cout: int
    act_scale: float  # fp8 / int8: the input is quantized as x / act_scale
    dtype: torch.dtype
    derived: dict[int, PackedConv] = field(default_factory=dict)  # W-packed forms, by P (wpack_weights)
    halo_w: Tensor | None = None  # (27*Cout, Cin) tap-major, for the Gluon halo kernel (made on first use)


def _quant_weights(w2: Tensor, dtype: torch.dtype, act_scale: float) -> tuple[Tensor, Tensor]:
    if dtype == FP8:
        ws = ref.weight_scales_fp8(w2)
        wq = (w2.float() / ws[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
        return wq.contiguous(), (ws * act_scale).float().contiguous()
    if dtype == INT8:  # the same rule as ref.conv3x3x3_int8_sim (which the tests compare against)
        ws = ref.weight_scales_int8(w2)
        return ref.quantize_int8(w2, ws[:, None]).contiguous(), (ws * act_scale).float().contiguous()
    return w2.to(dtype).contiguous(), torch.full((w2.shape[0],), float(act_scale), device=w2.device)


def pack_conv3(w: Tensor, dtype: torch.dtype, act_scale: float = 1.0) -> PackedConv:
    """(Cout, Cin, 3, 3, 3) weights -> PackedConv in ``dtype`` (fp8 / int8: per-output-channel scales)."""
    cout, cin = w.shape[:2]
    w2 = w.detach().permute(0, 2, 3, 4, 1).reshape(cout, 27 * cin)
    act_scale = act_scale if is_8bit(dtype) else 1.0
    wq, cs = _quant_weights(w2, dtype, act_scale)
    return PackedConv(wq, cs, None, 3, cin, cout, act_scale, dtype)


def tmajor_rows(w2: Tensor, b2: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Reorder 1x1x1 ConvTranspose rows from NVIDIA's k*8 + t to t*K + k (conv3d_cl(tmajor=True))."""
    k = w2.shape[0] // 8
    w = w2.reshape(k, 8, -1).transpose(0, 1).reshape(8 * k, -1)
    b = None if b2 is None else b2.reshape(k, 8).t().reshape(-1)
    return w.contiguous(), b


def pack_conv1(w2: Tensor, bias: Tensor | None, dtype: torch.dtype, act_scale: float = 1.0) -> PackedConv:
    """(Cout, Cin) 1x1x1 weights (e.g. a ConvTranspose turned into 8K outputs) -> PackedConv."""
    act_scale = act_scale if is_8bit(dtype) else 1.0
    wq, cs = _quant_weights(w2.detach(), dtype, act_scale)
    b = None if bias is None else bias.detach().float().contiguous()
    return PackedConv(wq, cs, b, 1, w2.shape[1], w2.shape[0], act_scale, dtype)


def wpack_weights(p: PackedConv, pk: int) -> PackedConv:
    """The banded (P*Cout, 9*(P+2)*Cin) weights of conv_wpack_kernel from a 3^3 PackedConv (already
    quantized: fp8 / int8 -> fp32 -> back is exact), built once per P and kept on ``p``. Row q*Cout + co,
    column kdh*(P+2)*Cin + v*Cin + c holds w[co, c, kd, kh, kw = v - q] (zero where v - q is not a tap)."""
    if pk not in p.derived:
        cout, cin = p.cout, p.cin
        wt = p.w.float().reshape(cout, 9, 3, cin)  # (co, kd*3 + kh, kw, c)
        band = torch.zeros((pk, cout, 9, pk + 2, cin), device=p.w.device, dtype=torch.float32)
        for q in range(pk):
            band[q, :, :, q : q + 3, :] = wt
        wb = band.reshape(pk * cout, 9 * (pk + 2) * cin).to(p.w.dtype).contiguous()
        cs = p.colscale.repeat(pk).contiguous()  # column q*Cout + co scales like co
        p.derived[pk] = PackedConv(wb, cs, None, 3, cin, cout, p.act_scale, p.dtype)
    return p.derived[pk]


def wpack_fits(s_dims: tuple[int, int, int], p: PackedConv, tile: Sequence[int]) -> bool:
    """Whether a (BM, BN, BK, warps, stages, ca, P) tile can run conv_wpack_kernel on this layer.
    Tiles (both GEMM kernels): ca bit 0 gathers the activations through L1, bit 1 the weights; P > 1
    selects the W-packed kernel."""
    bm, _, bk = tile[:3]
    pk = tile[6]
    d, h, w = s_dims
    span = (pk + 2) * p.cin
    return (
        p.ks == 3 and pk in (2, 4) and w % pk == 0 and (d * h * w // pk) % bm == 0 and span % bk == 0
        and pk * p.cout <= 256 and p.cout & (p.cout - 1) == 0
    )  # fmt: skip


def _conv_wpack(
    x: Tensor, p: PackedConv, tile: Sequence[int], stats: bool, out_dtype: torch.dtype, out: Tensor | None
) -> tuple[Tensor, Partials | None]:
    n, d, h, w, _ = x.shape
    bm, _, bk, warps, stages, ca, pk = tile[:7]
    wp = wpack_weights(p, pk)
    s_out = d * h * w
    if out is None:
        out = torch.empty((n, d, h, w, p.cout), device=x.device, dtype=out_dtype)
    mt = n * s_out // (pk * bm)
    part = None
    if stats:
        pm = torch.empty((mt, p.cout), device=x.device, dtype=torch.float32)
        part = Partials(pm, torch.empty_like(pm), n, s_out // (pk * bm), s_out, pk * bm)
    dummy = wp.colscale
    kernels().conv_wpack_kernel[(mt,)](
        x, wp.w, out, wp.colscale, part.mean if part else dummy, part.m2 if part else dummy, d, h, w,
        CIN=p.cin, COUT=p.cout, P=pk, STATS=stats,
        IEEE=p.dtype == torch.float32 or (p.dtype == torch.bfloat16 and interpreting()),
        UPCAST=p.dtype == torch.bfloat16 and interpreting(), CACHE_A=bool(ca & 1), CACHE_B=bool(ca & 2),
        BM=bm, BK=bk, num_warps=warps, num_stages=stages, INT8=p.dtype == INT8,
    )  # fmt: skip
    return out, part


def _tuned_path() -> Path:
    return Path(__file__).with_name("tuned_configs.json")


def _load_tuned() -> dict[str, list[int]]:
    try:
        return {k: list(v) for k, v in json.loads(_tuned_path().read_text()).items()}
    except (OSError, ValueError):
        return {}


TUNED: dict[str, list[int]] = _load_tuned()


def _any_batch(key: str) -> str:
    f = key.split("|")
    return "|".join(f[:4] + f[5:])  # without M = batch x S_out: a tile that fits one sample fits any batch


def tuned_tile(key: str) -> list[int] | None:
    """The tuned tile for ``key``, else one tuned for the same layer at another batch size; an int8
    layer without its own entry takes its fp8 twin's (same operand bytes, same MMA shape)."""
    if key in TUNED:
        return TUNED[key]
    want = _any_batch(key)
    hit = next((v for k, v in sorted(TUNED.items()) if _any_batch(k) == want), None)
    if hit is None and "|int8|" in key:
        return tuned_tile(key.replace("|int8|", "|float8_e4m3fn|"))
    return hit


def conv_key(m: int, s_out: int, p: PackedConv, stride: int, pro: bool, epi: int) -> str:
    return f"{p.ks}|{stride}|{p.cin}|{p.cout}|{m}|{s_out}|{str(p.dtype).split('.')[-1]}|{int(pro)}|{epi}"


def conv_candidates(s_out: int, p: PackedConv) -> list[list[int]]:
    """Valid (BM, BN, BK, warps, stages) tiles: every M tile inside one sample, no N/K tails."""
    kmin = 32 if is_8bit(p.dtype) else 16
    bms = [b for b in (64, 128, 256, 512) if s_out % b == 0] or [s_out]
    bns = [b for b in (32, 64, 128, 256) if p.cout % b == 0 and b <= max(32, p.cout)]
    bks = [b for b in (32, 64, 128) if p.cin % b == 0 and b >= kmin] or [p.cin]
    out = []
    for bm in bms:
        for bn in bns:
            for bk in bks:
                if bm * bn > 256 * 128 or bm * bk > 256 * 128 or bk * bn > 128 * 256:
                    continue
                small = bk * (bm + bn) <= 64 * (128 + 64)
                for warps in (4, 8):
                    if warps == 8 and bm * bn < 128 * 64:
                        continue
                    for stages in (3, 4, 5) if small else (3,) if bk * (bm + bn) > 128 * 256 else (3, 4):
                        out.append([bm, bn, bk, warps, stages])
    return out


def conv_default_cfg(s_out: int, p: PackedConv) -> list[int]:
    # largest power of two dividing S (tiles stay inside one sample); the interpreter is fastest with
    # few, large programs
    bm = min(4096 if interpreting() else 128, s_out & -s_out)
    bn = 128 if p.cout % 128 == 0 else (64 if p.cout % 64 == 0 else (32 if p.cout % 32 == 0 else p.cout))
    kmin = 32 if is_8bit(p.dtype) else 16
    bk = next((b for b in (64, 32, 16) if p.cin % b == 0 and b >= kmin), p.cin)
    return [bm, bn, bk, 8 if bm * bn >= 128 * 128 else 4, 3]


def halo_key(key: str) -> str:
    """Tuned-config key that selects the Gluon halo kernel for a conv layer: value [TW]."""
    return "halo|" + key


def halo_choice(key: str) -> int:
    """Tile width of the Gluon halo kernel for this layer, 0 for the Triton kernels. Env UNET3D_GLUON_CONV:
    "1" takes it for every layer it fits (tile width 64), "0" never; otherwise a tuned entry decides."""
    env = os.environ.get(ENV_GLUON, "")
    if env in ("0", "1"):
        return 64 if env == "1" else 0
    want = _any_batch(key)
    hit = TUNED.get(halo_key(key)) or next(
        (v for k, v in sorted(TUNED.items()) if k.startswith("halo|") and _any_batch(k[5:]) == want), None
    )
    return int(hit[0]) if hit else 0


def halo_ok(
    x: Tensor, p: PackedConv, stride: int, pro: Any, pixel_shuffle: bool, off: int, xc: int,
    out: Tensor | None, out_dtype: torch.dtype,
) -> bool:  # fmt: skip
    """Whether the Gluon halo kernel can run this call: compiled CUDA, an 8-bit 3^3 stride-1 conv of a
    contiguous input, no prologue, a plain fp16 output, and shapes it tiles (plugins.gluon_conv.fits)."""
    if not (x.is_cuda and not interpreting() and is_8bit(p.dtype) and x.dtype == p.dtype):
        return False
    if p.ks != 3 or stride != 1 or pro is not None or pixel_shuffle or off or xc != p.cin:
        return False
    if out_dtype != torch.float16:
        return False
    if out is not None and (out.dtype != torch.float16 or tuple(out.shape) != (*x.shape[:4], p.cout)):
        return False
    if importlib.util.find_spec("triton.experimental.gluon") is None:
        return False
    from plugins import gluon_conv

    n, d, h, w = x.shape[:4]
    return gluon_conv.fits((n, d, h, w), p.cin, p.cout)


def conv3d_halo_cl(
    x: Tensor, p: PackedConv, stats: bool = True, tw: int = 64, out: Tensor | None = None
) -> tuple[Tensor, Partials | None]:
    """The Gluon halo kernel (plugins.gluon_conv) on an (N, D, H, W, Cin) int8 / e4m3 CUDA buffer: fp16
    output and partials of 2*2*tw voxels per tile, the numbers conv3d_cl's Triton kernels give (the
    caller checks :func:`halo_ok`; conv3d_cl selects it per layer by a tuned entry or UNET3D_GLUON_CONV)."""
    from plugins import gluon_conv

    n, d, h, w, _ = x.shape
    if p.halo_w is None:
        p.halo_w = gluon_conv.tap_major(p.w, p.cout, p.cin)
    if out is None:
        out = torch.empty((n, d, h, w, p.cout), device=x.device, dtype=torch.float16)
    s_out = d * h * w
    chunk = gluon_conv.TD * gluon_conv.TH * tw
    part = None
    if stats:
        pm = torch.empty((n * s_out // chunk, p.cout), device=x.device, dtype=torch.float32)
        part = Partials(pm, torch.empty_like(pm), n, s_out // chunk, s_out, chunk)
    cfg = gluon_conv.HaloConfig(p.cin, p.cout, p.dtype == INT8, tw)
    gluon_conv.conv3_halo(
        x.contiguous(), p.halo_w, p.colscale, out, part.mean if part else None, part.m2 if part else None, cfg
    )
    return out, part


def conv3d_cl(
    x: Tensor,
    p: PackedConv,
    stride: int = 1,
    pro: tuple[Tensor, Tensor] | None = None,
    pro_relu: bool = True,
    stats: bool = False,
    out_dtype: torch.dtype = torch.float16,
    out: Tensor | None = None,
    off: int = 0,
    pixel_shuffle: bool = False,
    cfg: Sequence[int] | None = None,
    tmajor: bool = False,
) -> tuple[Tensor, Partials | None]:
    """Implicit-GEMM conv of an (N, D, H, W, Cin) buffer. ``pro`` = (a, b) (N, Cin): the input is
    relu(x*a + b) (the previous InstanceNorm, fp8 scale folded in). ``stats``: also return the output's
    InstanceNorm partials. ``pixel_shuffle`` (1x1x1 only): write depth-to-space into ``out``, an
    (N, 2D, 2H, 2W, OC) buffer, at channel ``off`` (the fused ConvTranspose + Concat); the weight rows
    are in NVIDIA's order k*8 + t, or t*K + k with ``tmajor`` (coalesced stores: use it when packing
    your own weights, see :func:`tmajor_rows`). Without ``cfg``, an 8-bit stride-1 3^3 layer runs the
    Gluon halo kernel where :func:`halo_choice` selects it (a ``halo|`` tuned entry or the env switch)."""
    n, d, h, w, cin = x.shape
    if cin != p.cin:
        raise ValueError(f"conv3d_cl: input has {cin} channels, weights expect {p.cin}")
    xc = x.stride(3)  # values per voxel: > cin when x is a channel slice of a concat buffer
    if x.stride(4) != 1 or xc < cin or x.stride()[:3] != (d * h * w * xc, h * w * xc, w * xc):
        x, xc = x.contiguous(), cin
    if p.ks == 3:
        do, ho, wo = ((d - 1) // stride + 1, (h - 1) // stride + 1, (w - 1) // stride + 1)
    else:
        do, ho, wo = (d - 1) // stride + 1, (h - 1) // stride + 1, (w - 1) // stride + 1
    s_out = do * ho * wo
    epi = (2 if tmajor else 1) if pixel_shuffle else 0
    key = conv_key(n * s_out, s_out, p, stride, pro is not None, epi)

    def wpack_ok(t: Sequence[int]) -> bool:
        return (
            stride == 1 and pro is None and not pixel_shuffle and not off and xc == cin
            and (out is None or out.shape[-1] == p.cout) and wpack_fits((do, ho, wo), p, t)
        )  # fmt: skip

    tw = halo_choice(key) if cfg is None else 0
    if tw and halo_ok(x, p, stride, pro, pixel_shuffle, off, xc, out, out_dtype):
        return conv3d_halo_cl(x, p, stats, tw, out)
    if cfg is not None:
        tile = list(cfg)
        if len(tile) > 6 and tile[6] > 1 and not wpack_ok(tile):
            raise ValueError(f"conv3d_cl: W-packed tile {tile} does not fit this call")
    else:  # tiles are tuned per prologue mode: one tuned for fp8 input can overflow shared memory
        # when the prologue loads fp16; a W-packed tile serves only the calls it fits
        t = tuned_tile(key)
        tile = list(t) if t and (len(t) < 7 or t[6] <= 1 or wpack_ok(t)) else conv_default_cfg(s_out, p)
    if len(tile) > 6 and tile[6] > 1:  # W-packed rows (thin full-resolution layers)
        return _conv_wpack(x, p, tile, stats, out_dtype, out)
    bm, bn, bk, warps, stages = tile[:5]
    ca = tile[5] if len(tile) > 5 else 0  # 5-element tiles predate the L1 flags
    if s_out % bm or p.cout % bn or p.cin % bk:
        raise ValueError(f"conv3d_cl: tile {bm}x{bn}x{bk} does not fit S={s_out} Cin={p.cin} Cout={p.cout}")
    if pixel_shuffle:
        if out is None or p.ks != 1 or (bn % 8 and not tmajor):
            raise ValueError("conv3d_cl: pixel_shuffle needs a 1x1x1 conv, an output buffer and BN % 8 == 0")
        oc = out.shape[-1]
    else:
        if out is None:
            out = torch.empty((n, do, ho, wo, p.cout), device=x.device, dtype=out_dtype)
        oc = out.shape[-1]
    mt = n * s_out // bm
    part = None
    if stats:
        if pixel_shuffle:
            raise ValueError("conv3d_cl: stats with pixel_shuffle are not supported")
        pm = torch.empty((mt, p.cout), device=x.device, dtype=torch.float32)
        part = Partials(pm, torch.empty_like(pm), n, s_out // bm, s_out, bm)
    dummy = p.colscale
    kernels().conv_igemm_kernel[(mt, p.cout // bn)](
        x, p.w, out,
        pro[0] if pro is not None else dummy, pro[1] if pro is not None else dummy,
        p.colscale, p.bias if p.bias is not None else dummy,
        part.mean if part else dummy, part.m2 if part else dummy,
        d, h, w, do, ho, wo, p.cin, p.cout, oc, off, xc,
        KS=p.ks, STRIDE=stride, PRO=pro is not None, PRO_RELU=pro_relu, HAS_BIAS=p.bias is not None,
        STATS=stats, EPI=epi, FP8_A=p.dtype == FP8, FP8_OUT=out.dtype == FP8,
        INT8=p.dtype == INT8, INT8_OUT=out.dtype == INT8,
        IEEE=p.dtype == torch.float32 or (p.dtype == torch.bfloat16 and interpreting()),
        UPCAST=p.dtype == torch.bfloat16 and interpreting(), EMU=interpreting(),
        BM=bm, BN=bn, BK=bk, CACHE_A=bool(ca & 1), CACHE_B=bool(ca & 2), EPK=p.cout // 8 if epi == 2 else 1,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out, part


def pack_c1(w: Tensor, dtype: torch.dtype) -> Tensor:
    """(32, 1, 3, 3, 3) -> (32 out, 32 taps) zero-padded, in the dot dtype."""
    w2 = torch.zeros((w.shape[0], 32), device=w.device, dtype=torch.float32)
    w2[:, :27] = w.detach().float().reshape(w.shape[0], 27)
    return w2.to(dtype).contiguous()


def conv_c1_cl(
    x: Tensor, w32: Tensor, in_scale: float = 1.0, out_dtype: torch.dtype = torch.float16, stats: bool = False
) -> tuple[Tensor, Partials | None]:
    """First conv on (N, D, H, W) (int8 linear or float) -> (N, D, H, W, 32); dot dtype = w32's."""
    n, d, h, w = x.shape
    s = d * h * w
    bm = min(4096 if interpreting() else 128, s & -s)
    cout = w32.shape[0]
    if cout & (cout - 1) or cout < 16:
        raise ValueError(f"conv_c1_cl: {cout} output channels, need a power of two >= 16")
    out = torch.empty((n, d, h, w, cout), device=x.device, dtype=out_dtype)
    part = None
    dummy = w32
    if stats:
        pm = torch.empty((n * s // bm, cout), device=x.device, dtype=torch.float32)
        part = Partials(pm, torch.empty_like(pm), n, s // bm, s, bm)
    kernels().conv_c1_kernel[(n * s // bm,)](
        x.contiguous(), w32, out, part.mean if part else dummy, part.m2 if part else dummy,
        d, h, w, float(in_scale), STATS=stats, IEEE=w32.dtype == torch.float32, COUT=cout, BM=bm, num_warps=4,
    )  # fmt: skip
    return out, part


def conv1x1_out_cl(xcl: Tensor, w: Tensor, b: Tensor, pro: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(N, D, H, W, C) -> (N, K, D, H, W) fp32 logits (optionally through relu(x*a + b) first)."""
    n, d, h, ww, c = xcl.shape
    k = w.shape[0]
    s = d * h * ww
    out = torch.empty((n, k, d, h, ww), device=xcl.device, dtype=torch.float32)
    bc = _np2(c)
    bv = max(16, min(256, 8192 // bc))
    tv = _cdiv(s, bv)
    wf = w.detach().float().reshape(k, c).contiguous()
    kernels().conv1x1_out_kernel[(n * tv,)](
        xcl, wf, b.detach().float().contiguous(),
        pro[0] if pro else wf, pro[1] if pro else wf, out, s, c, tv,
        PRO=pro is not None, NCLS=k, BV=bv, BC=bc, num_warps=4,
    )  # fmt: skip
    return out


# --- sliding-window pieces -------------------------------------------------------------------------


def weight_accumulate_impl(
    acc: Tensor, logits: Tensor, patches: Tensor, patch_ids: Sequence[int], origins: Sequence[int]
) -> None:
    c, dd, hh, ww = acc.shape
    r = logits.shape[-1]
    lg = logits.contiguous()
    pt = patches.contiguous()
    block = min(1024, r**3 & -(r**3))  # a power of two dividing the window
    k = kernels()
    for i, pid in enumerate(patch_ids):
        d0, h0, w0 = origins[3 * i : 3 * i + 3]
        k.weight_accumulate_kernel[(r**3 // block,)](
            acc, lg[i], pt[pid], d0, h0, w0, dd, hh, ww, NCLS=c, R=r, BLOCK=block
        )


def argmax3_impl(acc: Tensor) -> Tensor:
    v = acc[0].numel()
    out = torch.empty(acc.shape[1:], device=acc.device, dtype=torch.uint8)
    kernels().argmax3_kernel[(_cdiv(v, 1024),)](acc.contiguous(), out, v, BLOCK=1024)
    return out


# --- custom ops ----------------------------------------------------------------------------------


@torch.library.custom_op("unet3d::instance_norm_relu", mutates_args=())
def instance_norm_relu(
    x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5, relu: bool = True
) -> Tensor:
    """InstanceNorm3d (affine, biased variance, fp32 statistics) + optional ReLU; channels-last out."""
    if not use_triton(x):
        return ref.instance_norm_relu(x, gamma, beta, eps, relu).contiguous(
            memory_format=torch.channels_last_3d
        )
    xcl = to_cl(x)
    a, b = in_affine(in_stats(xcl), gamma, beta, eps)
    return from_cl(in_apply(xcl, a, b, relu))


@instance_norm_relu.register_fake
def _(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5, relu: bool = True) -> Tensor:
    return torch.empty_like(x, memory_format=torch.channels_last_3d)


@torch.library.custom_op("unet3d::pixel_shuffle3d_concat", mutates_args=())
def pixel_shuffle3d_concat(x8k: Tensor, skip: Tensor) -> Tensor:
    """Concat(depth-to-space(x8k), skip) in one pass; channels-last out in skip's dtype."""
    if not use_triton(x8k):
        return ref.pixel_shuffle3d_concat(x8k, skip).contiguous(memory_format=torch.channels_last_3d)
    n, c8, d, h, w = x8k.shape
    k, cs = c8 // 8, skip.shape[1]
    xcl = to_cl(x8k.to(skip.dtype))
    scl = to_cl(skip)
    out = torch.empty((n, 2 * d, 2 * h, 2 * w, k + cs), device=skip.device, dtype=skip.dtype)
    bc = min(64, _np2(k + cs))
    bv = max(16, 4096 // bc)
    tv = _cdiv(8 * d * h * w, bv)
    kernels().pixel_shuffle_concat_kernel[(n * tv, _cdiv(k + cs, bc))](
        xcl, scl, out, d, h, w, k, cs, tv, BV=bv, BC=bc
    )
    return from_cl(out)


@pixel_shuffle3d_concat.register_fake
def _(x8k: Tensor, skip: Tensor) -> Tensor:
    n, c8, d, h, w = x8k.shape
    return skip.new_empty((n, c8 // 8 + skip.shape[1], 2 * d, 2 * h, 2 * w)).contiguous(
        memory_format=torch.channels_last_3d
    )


@torch.library.custom_op("unet3d::conv1x1x1_bias", mutates_args=())
def conv1x1x1_bias(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Output conv: (N, C, D, H, W) x (K, C) + b -> (N, K, D, H, W) fp32 logits (contiguous NCDHW)."""
    if not use_triton(x):
        return ref.conv1x1x1_bias(x, w, b).contiguous()
    return conv1x1_out_cl(to_cl(x), w.reshape(w.shape[0], -1), b)


@conv1x1x1_bias.register_fake
def _(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], w.shape[0], *x.shape[2:]), dtype=torch.float32)


@torch.library.custom_op("unet3d::conv3x3x3_c1", mutates_args=())
def conv3x3x3_c1(x: Tensor, w: Tensor, in_scale: float | None = None) -> Tensor:
    """First conv 1 -> 32: int8 linear input (dequantized by in_scale on load; fp16 out) or float input
    (same dtype out); channels-last out."""
    if x.dtype == torch.int8 and in_scale is None:
        raise ValueError("conv3x3x3_c1: an int8 input needs in_scale")
    cout = w.shape[0]
    if not use_triton(x) or cout & (cout - 1) or cout < 16:  # the kernel's shapes; else plain torch
        return ref.conv3x3x3_c1(x, w, in_scale).contiguous(memory_format=torch.channels_last_3d)
    out_dtype = torch.float16 if x.dtype == torch.int8 else x.dtype
    dot = torch.float16 if x.dtype in (torch.int8, torch.float16) else x.dtype
    out, _ = conv_c1_cl(x[:, 0], pack_c1(w, dot), 1.0 if in_scale is None else in_scale, out_dtype)
    return from_cl(out)


@conv3x3x3_c1.register_fake
def _(x: Tensor, w: Tensor, in_scale: float | None = None) -> Tensor:
    dt = torch.float16 if x.dtype == torch.int8 else x.dtype
    return x.new_empty((x.shape[0], w.shape[0], *x.shape[2:]), dtype=dt).contiguous(
        memory_format=torch.channels_last_3d
    )


@torch.library.custom_op("unet3d::conv3x3x3", mutates_args=())
def conv3x3x3(
    x: Tensor, w: Tensor, stride: int = 1, precision: str = "fp16", act_scale: float = 1.0
) -> Tensor:
    """3^3 conv, pad 1, no bias, channels-last in/out, implicit GEMM in ``precision`` (fp8: e4m3, int8:
    symmetric int8 with int32 accumulation; both with per-output-channel weight scales and the
    per-tensor activation scale act_scale); out fp16 (bf16 for bf16, fp32 for fp32)."""
    out_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(precision, torch.float16)
    kmin = 32 if precision in ("fp8", "int8") else 16
    if not use_triton(x) or w.shape[1] % kmin or w.shape[0] % 16:  # the kernel's shapes; else torch
        if precision == "fp8":  # e4m3 operands, exact products, fp32 sums (cuDNN; CUDA-graph safe)
            ws = ref.weight_scales_fp8(w)
            wq = ref.quantize_fp8(w, ws.reshape(-1, 1, 1, 1, 1)).float()  # exact in fp32 and TF32
            xq = ref.quantize_fp8(x, act_scale).float()
            y = tnf.conv3d(xq, wq, stride=stride, padding=1).float()
            y = y * (ws * act_scale).reshape(1, -1, 1, 1, 1)
        elif precision == "int8":
            y = ref.conv3x3x3_int8_sim(x, w, stride, act_scale)
        else:
            y = ref.conv3x3x3(x.to(PRECISIONS[precision]), w.to(PRECISIONS[precision]), stride)
        return y.to(out_dtype).contiguous(memory_format=torch.channels_last_3d)
    p = pack_conv3(w, PRECISIONS[precision], act_scale)
    xcl = to_cl(x)
    if precision == "fp8":
        xcl = ref.quantize_fp8(xcl, act_scale)
    elif precision == "int8":
        xcl = ref.quantize_int8(xcl, act_scale)
    else:
        xcl = xcl.to(PRECISIONS[precision])
    out, _ = conv3d_cl(xcl, p, stride, out_dtype=out_dtype)
    return from_cl(out)


@conv3x3x3.register_fake
def _(x: Tensor, w: Tensor, stride: int = 1, precision: str = "fp16", act_scale: float = 1.0) -> Tensor:
    out_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(precision, torch.float16)
    n, _, d, h, ww = x.shape
    shape = (n, w.shape[0], (d - 1) // stride + 1, (h - 1) // stride + 1, (ww - 1) // stride + 1)
    return x.new_empty(shape, dtype=out_dtype).contiguous(memory_format=torch.channels_last_3d)


@torch.library.custom_op("unet3d::weight_accumulate", mutates_args=("acc",))
def weight_accumulate(
    acc: Tensor, logits: Tensor, patches: Tensor, patch_ids: list[int], origins: list[int]
) -> None:
    """acc (C, D, H, W) [window i at origins[3i:3i+3]] += logits[i] * patches[patch_ids[i]], in order."""
    if not use_triton(acc):
        r = logits.shape[-1]
        for i, pid in enumerate(patch_ids):
            d, h, w = origins[3 * i : 3 * i + 3]
            ref.weight_accumulate(acc, logits[i], patches[pid].reshape(r, r, r), (d, h, w))
        return
    weight_accumulate_impl(acc, logits, patches, patch_ids, origins)


@weight_accumulate.register_fake
def _(acc: Tensor, logits: Tensor, patches: Tensor, patch_ids: list[int], origins: list[int]) -> None:
    return None


@torch.library.custom_op("unet3d::argmax3", mutates_args=())
def argmax3(acc: Tensor) -> Tensor:
    """(3, ...) scores -> uint8 labels, ties to the lowest class (np.argmax)."""
    if not use_triton(acc) or acc.shape[0] != 3:
        return ref.argmax(acc)
    return argmax3_impl(acc)


@argmax3.register_fake
def _(acc: Tensor) -> Tensor:
    return acc.new_empty(acc.shape[1:], dtype=torch.uint8)


def accumulate_fn(acc: Tensor, logits: Tensor, patches: Tensor, windows: Sequence[Any]) -> None:
    """core.sliding_window.segment_torch's ``accumulate_fn`` (windows carry .origin and .patch_id)."""
    r = logits.shape[-1]
    weight_accumulate(
        acc, logits, patches.reshape(patches.shape[0], r, r, r),
        [int(w.patch_id) for w in windows], [int(o) for w in windows for o in w.origin],
    )  # fmt: skip


def argmax_fn(acc: Tensor) -> Tensor:
    """core.sliding_window.segment_torch's ``argmax_fn``."""
    return argmax3(acc)
