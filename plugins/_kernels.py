# ruff: noqa: N803, N806, E741  (Triton kernels: shape names in capitals, as in the CUDA sources)
"""Triton kernels for the 3D-UNet (no host logic here; plugins.ops launches them).

Activations are channels-last: a tensor (N, C, D, H, W) is stored as an (N, D, H, W, C) buffer, so one
voxel's channels are contiguous and a convolution is a GEMM with M = voxels, K = taps x channels,
N = output channels. The module is separate from plugins.ops so tests can re-import it after setting
TRITON_INTERPRET=1 (Triton reads that variable when a kernel is decorated).

InstanceNorm statistics use one scheme everywhere: a producer (the statistics kernel, or a
convolution's epilogue) writes per-chunk partial (mean, M2) pairs for each (n, c); ``in_finalize``
merges them with Chan's parallel formula (two passes: mean of means, then M2 + cnt*(mean_t - mean)^2),
which is deterministic and has no E[x^2] - E[x]^2 cancellation. It writes the affine pair
(a, b) = (gamma*rstd, beta - mean*gamma*rstd) that the apply pass or the next convolution's prologue
uses: y = relu(x*a + b).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

# Whether these kernels were decorated in interpreter mode (plugins.ops reloads the module on a change).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
FP8_MAX: tl.constexpr = tl.constexpr(448.0)  # float8 e4m3fn
INT8_MAX: tl.constexpr = tl.constexpr(127.0)  # symmetric int8


@triton.jit
def to_fp8(v, EMU: tl.constexpr):
    """Saturating fp32 -> float8 e4m3 with round-to-nearest-even. On the GPU the cast itself does RNE;
    EMU (interpreter only, whose fp8 cast misrounds) first rounds to the e4m3 grid in fp32, so the
    cast is exact."""
    v = tl.minimum(tl.maximum(v, -FP8_MAX), FP8_MAX)
    if EMU:
        av = tl.abs(v)
        e = tl.maximum(tl.floor(tl.log2(tl.maximum(av, 1e-30))), -6.0)
        step = tl.exp2(e - 3.0)
        q = (av / step + 12582912.0) - 12582912.0  # RNE for 0 <= x < 2^22
        v = tl.where(v < 0, -q, q) * step
    return v.to(tl.float8e4nv)


@triton.jit
def to_int8(v):
    """Saturating fp32 -> int8 with round-to-nearest-even, symmetric (-127..127, as NVIDIA's INT8 and
    the calibration cache's amax / 127 scales): clamp first, then RNE by the 1.5 * 2^23 trick (exact
    for |v| < 2^22; the same on the GPU and in the interpreter, with no libdevice call)."""
    v = tl.minimum(tl.maximum(v, -INT8_MAX), INT8_MAX)
    v = (v + 12582912.0) - 12582912.0
    return v.to(tl.int8)


@triton.jit
def in_stats_kernel(
    x_ptr, pmean_ptr, pm2_ptr, S, C, T, CHUNK: tl.constexpr, BV: tl.constexpr, BC: tl.constexpr
):
    """Partial (mean, M2) of chunk t of sample n, channels block; shifted sums around the chunk's first
    voxel keep fp32 accurate when |mean| >> std. Grid (N*T, cdiv(C, BC))."""
    pid = tl.program_id(0)
    n = pid // T
    t = pid - n * T
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = c < C
    v0 = t * CHUNK
    base = n.to(tl.int64) * S * C
    shift = tl.load(x_ptr + base + v0 * C + c, mask=cm, other=0.0).to(tl.float32)
    s1 = tl.zeros([BC], dtype=tl.float32)
    s2 = tl.zeros([BC], dtype=tl.float32)
    for i in range(0, CHUNK, BV):
        v = v0 + i + tl.arange(0, BV)
        m = (v < S)[:, None] & cm[None, :]
        xv = tl.load(x_ptr + base + v[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
        d = tl.where(m, xv - shift[None, :], 0.0)
        s1 += tl.sum(d, axis=0)
        s2 += tl.sum(d * d, axis=0)
    cnt = tl.minimum(S - v0, CHUNK).to(tl.float32)
    mean = shift + s1 / cnt
    m2 = tl.maximum(s2 - s1 * s1 / cnt, 0.0)
    tl.store(pmean_ptr + pid * C + c, mean, mask=cm)
    tl.store(pm2_ptr + pid * C + c, m2, mask=cm)


@triton.jit
def in_merge_kernel(
    pmean_ptr, pm2_ptr, qmean_ptr, qm2_ptr, T, T2, S, C, CHUNK, G: tl.constexpr, BC: tl.constexpr
):
    """Merge groups of G consecutive partials (chunk CHUNK) into T2 = cdiv(T, G) partials of chunk
    CHUNK*G per sample (Chan's formula), so the final merge has few partials. Grid (N*T2, cdiv(C, BC))."""
    pid = tl.program_id(0)
    n = pid // T2
    t2 = pid - n * T2
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = c < C
    t = t2 * G + tl.arange(0, G)
    tm = t < T
    cnt = tl.where(tm, tl.minimum(S - t * CHUNK, CHUNK), 0).to(tl.float32)
    m = tm[:, None] & cm[None, :]
    pm = tl.load(pmean_ptr + (n * T + t)[:, None] * C + c[None, :], mask=m, other=0.0)
    p2 = tl.load(pm2_ptr + (n * T + t)[:, None] * C + c[None, :], mask=m, other=0.0)
    tot = tl.sum(cnt, axis=0)
    mean = tl.sum(pm * cnt[:, None], axis=0) / tot
    d = pm - mean[None, :]
    m2 = tl.sum(tl.where(m, p2 + cnt[:, None] * d * d, 0.0), axis=0)
    tl.store(qmean_ptr + pid * C + c, mean, mask=cm)
    tl.store(qm2_ptr + pid * C + c, m2, mask=cm)


@triton.jit
def in_finalize_kernel(
    pmean_ptr,
    pm2_ptr,
    gamma_ptr,
    beta_ptr,
    a_ptr,
    b_ptr,
    T,
    S,
    C,
    CHUNK,
    eps,
    out_mult,
    BT: tl.constexpr,
    BC: tl.constexpr,
):
    """Merge T partials per (n, c) -> a = gamma*rstd*out_mult, b = (beta - mean*gamma*rstd)*out_mult.
    out_mult (> 0) folds a following quantization (1/scale) into the affine. Grid (N, cdiv(C, BC))."""
    n = tl.program_id(0)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = c < C
    acc = tl.zeros([BC], dtype=tl.float32)
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        tm = t < T
        cnt = tl.where(tm, tl.minimum(S - t * CHUNK, CHUNK), 0).to(tl.float32)
        m = tm[:, None] & cm[None, :]
        pm = tl.load(pmean_ptr + (n * T + t)[:, None] * C + c[None, :], mask=m, other=0.0)
        acc += tl.sum(pm * cnt[:, None], axis=0)
    mean = acc / S
    acc2 = tl.zeros([BC], dtype=tl.float32)
    for t0 in range(0, T, BT):
        t = t0 + tl.arange(0, BT)
        tm = t < T
        cnt = tl.where(tm, tl.minimum(S - t * CHUNK, CHUNK), 0).to(tl.float32)
        m = tm[:, None] & cm[None, :]
        pm = tl.load(pmean_ptr + (n * T + t)[:, None] * C + c[None, :], mask=m, other=0.0)
        p2 = tl.load(pm2_ptr + (n * T + t)[:, None] * C + c[None, :], mask=m, other=0.0)
        d = pm - mean[None, :]
        acc2 += tl.sum(tl.where(m, p2 + cnt[:, None] * d * d, 0.0), axis=0)
    var = tl.maximum(acc2 / S, 0.0)
    rstd = 1.0 / tl.sqrt(var + eps)
    g = tl.load(gamma_ptr + c, mask=cm, other=1.0).to(tl.float32)
    bt = tl.load(beta_ptr + c, mask=cm, other=0.0).to(tl.float32)
    a = g * rstd
    tl.store(a_ptr + n * C + c, a * out_mult, mask=cm)
    tl.store(b_ptr + n * C + c, (bt - mean * a) * out_mult, mask=cm)


@triton.jit
def in_apply_kernel(
    x_ptr,
    out_ptr,
    a_ptr,
    b_ptr,
    S,
    C,
    TV,
    OC,
    OFF,
    RELU: tl.constexpr,
    FP8_OUT: tl.constexpr,
    EMU: tl.constexpr,
    BV: tl.constexpr,
    BC: tl.constexpr,
    INT8_OUT: tl.constexpr = False,
):
    """out[n, v, OFF + c] = relu(x[n, v, c]*a[n, c] + b[n, c]) (out has OC channels per voxel, so this also
    writes a channel slice of a concat buffer), quantized to e4m3 (FP8_OUT) or int8 (INT8_OUT) when the
    output is; the quantization scale is folded into (a, b). Grid (N*TV, cdiv(C, BC)), TV = cdiv(S, BV)."""
    pid = tl.program_id(0)
    n = pid // TV
    v = (pid - n * TV) * BV + tl.arange(0, BV)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    cm = c < C
    m = (v < S)[:, None] & cm[None, :]
    vox = n.to(tl.int64) * S + v
    x = tl.load(x_ptr + vox[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + n * C + c, mask=cm, other=0.0)
    b = tl.load(b_ptr + n * C + c, mask=cm, other=0.0)
    y = x * a[None, :] + b[None, :]
    if RELU:
        y = tl.maximum(y, 0.0)
    if FP8_OUT:
        yq = to_fp8(y, EMU)
    elif INT8_OUT:
        yq = to_int8(y)
    else:
        yq = y.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + vox[:, None] * OC + OFF + c[None, :], yq, mask=m)


@triton.jit
def pixel_shuffle_concat_kernel(
    x_ptr,
    skip_ptr,
    out_ptr,
    d,
    h,
    w,
    K,
    CS,
    TV,
    BV: tl.constexpr,
    BC: tl.constexpr,
):
    """out (N, 2d, 2h, 2w, K+CS): [:K] depth-to-space of x (N, d, h, w, 8K) with input channel
    k*8 + 4*(o%2) + 2*(p%2) + (q%2); [K:] = skip. Grid (N*TV, cdiv(K+CS, BC))."""
    pid = tl.program_id(0)
    S = 8 * d * h * w
    n = pid // TV
    v = (pid - n * TV) * BV + tl.arange(0, BV)
    vm = v < S
    W2 = 2 * w
    H2 = 2 * h
    q = v % W2
    p = (v // W2) % H2
    o = v // (W2 * H2)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    C = K + CS
    up = c < K
    sk = (c >= K) & (c < C)
    sub = 4 * (o % 2) + 2 * (p % 2) + (q % 2)
    src_vox = n.to(tl.int64) * (d * h * w) + ((o // 2) * h + p // 2) * w + q // 2
    xi = src_vox[:, None] * (8 * K) + c[None, :] * 8 + sub[:, None]
    xu = tl.load(x_ptr + xi, mask=vm[:, None] & up[None, :], other=0.0)
    vox = n.to(tl.int64) * S + v
    xs = tl.load(skip_ptr + vox[:, None] * CS + (c - K)[None, :], mask=vm[:, None] & sk[None, :], other=0.0)
    y = tl.where(up[None, :], xu, xs)
    tl.store(out_ptr + vox[:, None] * C + c[None, :], y, mask=vm[:, None] & (c < C)[None, :])


@triton.jit
def conv_igemm_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    pa_ptr,
    pb_ptr,
    colscale_ptr,
    bias_ptr,
    pmean_ptr,
    pm2_ptr,
    D,
    H,
    W,
    Do,
    Ho,
    Wo,
    Cin,
    Cout,
    OC,
    OFF,
    XC,
    KS: tl.constexpr,
    STRIDE: tl.constexpr,
    PRO: tl.constexpr,
    PRO_RELU: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    STATS: tl.constexpr,
    EPI: tl.constexpr,
    FP8_A: tl.constexpr,
    FP8_OUT: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
    EMU: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    CACHE_A: tl.constexpr = False,
    EPK: tl.constexpr = 1,
    CACHE_B: tl.constexpr = False,
    INT8: tl.constexpr = False,
    INT8_OUT: tl.constexpr = False,
):
    """Implicit-GEMM convolution, kernel KS^3 (3: pad 1; 1: pad 0), channels-last.

    x (N, D, H, W, Cin) with XC values per voxel (XC > Cin: a channel slice of a concat buffer), in the
    compute dtype, or any float dtype when PRO (the previous layer's
    InstanceNorm apply fused in: a = relu(x*pa[n, c] + pb[n, c]), zero padding applied after it, then
    cast to the weights' dtype, e.g. float8 e4m3 with the activation scale folded into pa/pb).
    w (Cout, KS^3*Cin), K-contiguous, k = tap*Cin + c. acc*colscale[co] (+ bias) is the output.
    EPI 0: out[m, OFF + co] with OC channels per voxel; STATS writes per-tile (mean, M2) partials.
    EPI 1 / 2 (KS 1 only): pixel shuffle, column co = k*8 + t (1) or t*K + k (2), t = 4td + 2th + tw,
    goes to voxel (2d+td, 2h+th, 2w+tw), channel OFF + k of an (N, 2D, 2H, 2W, OC) buffer (fused concat).
    Every M tile lies inside one sample (S_out % BM == 0), so per-sample vectors are one row.
    CACHE_A: gather A through L1 (cp.async.ca): the 27 taps of a tile re-read each input row up to
    27 times, and the default (.cg, L2 only) leaves the thin 128^3 layers bound by L2 bandwidth.
    CACHE_B: the same for the weights, which every M tile re-reads whole.
    INT8: int8 operands (the prologue quantizes to int8), exact int32 accumulation, converted to fp32
    before the column scale. INT8_OUT: the output is int8 (e.g. the ConvTranspose into an int8 concat
    buffer), saturated and rounded to nearest even like FP8_OUT's e4m3."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    S_out = Do * Ho * Wo
    m0 = pid_m * BM
    n = m0 // S_out
    sp = m0 - n * S_out + tl.arange(0, BM)
    ow = sp % Wo
    oh = (sp // Wo) % Ho
    od = sp // (Wo * Ho)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    KT: tl.constexpr = KS * KS * KS
    KTOT = KT * Cin
    nD = n * D
    acc = tl.zeros([BM, BN], dtype=tl.int32 if INT8 else tl.float32)
    for kk in range(0, KTOT, BK):
        tap = kk // Cin
        c0 = kk - tap * Cin
        if KS == 3:
            kd = tap // 9
            kh = (tap // 3) % 3
            kw = tap % 3
            idd = od * STRIDE + kd - 1
            ih = oh * STRIDE + kh - 1
            iw = ow * STRIDE + kw - 1
            valid = (idd >= 0) & (idd < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        else:
            idd = od * STRIDE
            ih = oh * STRIDE
            iw = ow * STRIDE
            valid = sp < S_out
        row = (((nD + idd) * H + ih) * W + iw).to(tl.int64) * XC
        if CACHE_A:
            ptrs = x_ptr + row[:, None] + (c0 + rk)[None, :]
            a = tl.load(ptrs, mask=valid[:, None], other=0.0, cache_modifier=".ca")
        else:
            a = tl.load(x_ptr + row[:, None] + (c0 + rk)[None, :], mask=valid[:, None], other=0.0)
        if PRO:
            sa = tl.load(pa_ptr + n * Cin + c0 + rk)
            sb = tl.load(pb_ptr + n * Cin + c0 + rk)
            af = a.to(tl.float32) * sa[None, :] + sb[None, :]
            if PRO_RELU:
                af = tl.maximum(af, 0.0)
            af = tl.where(valid[:, None], af, 0.0)
            if FP8_A:
                a = to_fp8(af, EMU)
            elif INT8:
                a = to_int8(af)
            else:
                a = af.to(w_ptr.dtype.element_ty)
        b_ptrs = w_ptr + rn[None, :].to(tl.int64) * KTOT + (kk + rk)[:, None]
        b = tl.load(b_ptrs, cache_modifier=".ca") if CACHE_B else tl.load(b_ptrs)
        if UPCAST:  # the interpreter's bf16 dot is wrong; fp32 products of bf16 values are exact
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        elif INT8:
            acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(a, b, acc)
    cs = tl.load(colscale_ptr + rn)
    acc = acc.to(tl.float32) * cs[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + rn)[None, :]
    if STATS:
        tmean = tl.sum(acc, axis=0) / BM
        dv = acc - tmean[None, :]
        tl.store(pmean_ptr + pid_m * Cout + rn, tmean)
        tl.store(pm2_ptr + pid_m * Cout + rn, tl.sum(dv * dv, axis=0))
    if FP8_OUT:
        y = to_fp8(acc, EMU)
    elif INT8_OUT:
        y = to_int8(acc)
    else:
        y = acc.to(out_ptr.dtype.element_ty)
    if EPI == 0:
        orow = (m0 + tl.arange(0, BM)).to(tl.int64) * OC + OFF
        tl.store(out_ptr + orow[:, None] + rn[None, :], y)
    else:
        if EPI == 1:  # NVIDIA's column order k*8 + t
            k = rn // 8
            t = rn % 8
        else:  # t-major, t*K + k: a tile's columns are contiguous channels of one voxel (coalesced)
            t = rn // EPK  # EPK = Cout // 8 as a constant: the stores become contiguous vectors
            k = rn % EPK
        td = t // 4
        th = (t // 2) % 2
        tw = t % 2
        vd = 2 * od[:, None] + td[None, :]
        vh = 2 * oh[:, None] + th[None, :]
        vw = 2 * ow[:, None] + tw[None, :]
        vox = ((2 * nD + vd) * (2 * H) + vh).to(tl.int64) * (2 * W) + vw
        tl.store(out_ptr + vox * OC + OFF + k[None, :], y)


@triton.jit
def conv_wpack_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    colscale_ptr,
    pmean_ptr,
    pm2_ptr,
    D,
    H,
    W,
    CIN: tl.constexpr,
    COUT: tl.constexpr,
    P: tl.constexpr,
    STATS: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
    CACHE_A: tl.constexpr,
    BM: tl.constexpr,
    BK: tl.constexpr,
    CACHE_B: tl.constexpr = False,
    INT8: tl.constexpr = False,
):
    """3^3 conv, stride 1, pad 1, channels-last, with P adjacent output voxels along W in one GEMM row
    (the thin full-resolution layers): row m = (n, d, h, w0 = P*g); for each (kd, kh) its A row is the
    (P+2)*CIN contiguous values of input voxels w0-1 .. w0+P, loaded once for all P outputs (the 3 kw
    taps of neighbouring outputs overlap), and the weights are a block-banded (P*COUT, 9*(P+2)*CIN)
    matrix (ops.pack_conv3_wpack). A bytes per output fall from 3*CIN to (P+2)*CIN/P per (kd, kh), at
    the cost of (P+2)/3 more MMA work, which these layers have to spare (they are load-bound).
    Columns q*COUT + co are output voxel w0+q, channel co: each row stores P*COUT contiguous values.
    STATS: per-tile (mean, M2) over BM*P voxels (Chan's formula over the P column groups).
    INT8: int8 operands, exact int32 accumulation (then fp32 times the column scale).
    Grid (N*D*H*W / (P*BM),); BN = P*COUT, every M tile inside one sample."""
    pid_m = tl.program_id(0)
    BN: tl.constexpr = P * COUT
    SPAN: tl.constexpr = (P + 2) * CIN
    Wg = W // P
    S_rows = D * H * Wg
    m0 = pid_m * BM
    n = m0 // S_rows
    r = m0 - n * S_rows + tl.arange(0, BM)
    g = r % Wg
    oh = (r // Wg) % H
    od = r // (Wg * H)
    rk = tl.arange(0, BK)
    rn = tl.arange(0, BN)
    KTOT = 9 * SPAN
    acc = tl.zeros([BM, BN], dtype=tl.int32 if INT8 else tl.float32)
    for kk in range(0, KTOT, BK):
        kdh = kk // SPAN
        j0 = kk - kdh * SPAN
        idd = od + kdh // 3 - 1
        ih = oh + kdh % 3 - 1
        vrow = (idd >= 0) & (idd < D) & (ih >= 0) & (ih < H)
        iw = g[:, None] * P - 1 + (j0 + rk)[None, :] // CIN  # input voxel of each column
        valid = vrow[:, None] & (iw >= 0) & (iw < W)
        base = (((n * D + idd) * H + ih) * W + g * P - 1).to(tl.int64) * CIN
        ptrs = x_ptr + base[:, None] + (j0 + rk)[None, :]
        if CACHE_A:
            a = tl.load(ptrs, mask=valid, other=0.0, cache_modifier=".ca")
        else:
            a = tl.load(ptrs, mask=valid, other=0.0)
        b_ptrs = w_ptr + rn[None, :].to(tl.int64) * KTOT + (kk + rk)[:, None]
        b = tl.load(b_ptrs, cache_modifier=".ca") if CACHE_B else tl.load(b_ptrs)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if IEEE:
            acc = tl.dot(a, b, acc, input_precision="ieee")
        elif INT8:
            acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(a, b, acc)
    acc = acc.to(tl.float32) * tl.load(colscale_ptr + rn)[None, :]
    if STATS:
        cmean = tl.sum(acc, axis=0) / BM  # per column (BM voxels each), then over the P groups
        dv = acc - cmean[None, :]
        cm2 = tl.sum(dv * dv, axis=0)
        gm = tl.reshape(cmean, (P, COUT))
        tmean = tl.sum(gm, axis=0) / P
        dm = gm - tmean[None, :]
        tm2 = tl.sum(tl.reshape(cm2, (P, COUT)), axis=0) + BM * tl.sum(dm * dm, axis=0)
        rc = tl.arange(0, COUT)
        tl.store(pmean_ptr + pid_m * COUT + rc, tmean)
        tl.store(pm2_ptr + pid_m * COUT + rc, tm2)
    orow = (m0 + tl.arange(0, BM)).to(tl.int64) * BN
    tl.store(out_ptr + orow[:, None] + rn[None, :], acc.to(out_ptr.dtype.element_ty))


@triton.jit
def conv_c1_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    pmean_ptr,
    pm2_ptr,
    D,
    H,
    W,
    in_scale,
    STATS: tl.constexpr,
    IEEE: tl.constexpr,
    COUT: tl.constexpr,
    BM: tl.constexpr,
):
    """First conv, 1 -> COUT channels, 3^3, pad 1, as a GEMM with K = 27 taps padded to 32:
    x (N, D, H, W) int8 linear (values stay exact in fp16) or float; w (COUT, 32 taps) zero-padded,
    in the dot dtype; out (N, D, H, W, COUT) = acc*in_scale. Grid (N*D*H*W / BM,)."""
    pid = tl.program_id(0)
    S = D * H * W
    m0 = pid * BM
    n = m0 // S
    sp = m0 - n * S + tl.arange(0, BM)
    ow = sp % W
    oh = (sp // W) % H
    od = sp // (W * H)
    k = tl.arange(0, 32)
    kd = k // 9
    kh = (k // 3) % 3
    kw = k % 3
    idd = od[:, None] + kd[None, :] - 1
    ih = oh[:, None] + kh[None, :] - 1
    iw = ow[:, None] + kw[None, :] - 1
    valid = (k < 27)[None, :] & (idd >= 0) & (idd < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    off = n.to(tl.int64) * S + (idd * H + ih) * W + iw
    a = tl.load(x_ptr + off, mask=valid, other=0).to(w_ptr.dtype.element_ty)
    rn = tl.arange(0, COUT)
    b = tl.load(w_ptr + rn[None, :] * 32 + k[:, None])
    acc = tl.dot(a, b, input_precision="ieee") if IEEE else tl.dot(a, b)
    acc = acc * in_scale
    if STATS:
        tmean = tl.sum(acc, axis=0) / BM
        dv = acc - tmean[None, :]
        tl.store(pmean_ptr + pid * COUT + rn, tmean)
        tl.store(pm2_ptr + pid * COUT + rn, tl.sum(dv * dv, axis=0))
    orow = (m0 + tl.arange(0, BM)).to(tl.int64) * COUT
    tl.store(out_ptr + orow[:, None] + rn[None, :], acc.to(out_ptr.dtype.element_ty))


@triton.jit
def conv1x1_out_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    pa_ptr,
    pb_ptr,
    out_ptr,
    S,
    C,
    TV,
    PRO: tl.constexpr,
    NCLS: tl.constexpr,
    BV: tl.constexpr,
    BC: tl.constexpr,
):
    """Output conv: x (N, S, C) channels-last (optionally through relu(x*pa + pb)), w (NCLS, C) fp32,
    out (N, NCLS, S) fp32 planar logits (acc in fp32). Grid (N*TV,)."""
    pid = tl.program_id(0)
    n = pid // TV
    v = (pid - n * TV) * BV + tl.arange(0, BV)
    vm = v < S
    c = tl.arange(0, BC)
    cm = c < C
    m = vm[:, None] & cm[None, :]
    vox = n.to(tl.int64) * S + v
    x = tl.load(x_ptr + vox[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
    if PRO:
        pa = tl.load(pa_ptr + n * C + c, mask=cm, other=0.0)
        pb = tl.load(pb_ptr + n * C + c, mask=cm, other=0.0)
        x = tl.where(m, tl.maximum(x * pa[None, :] + pb[None, :], 0.0), 0.0)
    for j in tl.static_range(NCLS):
        wj = tl.load(w_ptr + j * C + c, mask=cm, other=0.0)
        yj = tl.sum(x * wj[None, :], axis=1) + tl.load(bias_ptr + j)
        tl.store(out_ptr + (n.to(tl.int64) * NCLS + j) * S + v, yj, mask=vm)


@triton.jit
def weight_accumulate_kernel(
    acc_ptr,
    logits_ptr,
    patch_ptr,
    d0,
    h0,
    w0,
    D,
    H,
    W,
    NCLS: tl.constexpr,
    R: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """acc[c, d0+i, h0+j, w0+k] += logits[c, i, j, k] * patch[i, j, k] for one R^3 window, fp32
    accumulate. One launch per window keeps overlapping windows in order. Grid (R^3 / BLOCK,)."""
    l = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    lw = l % R
    lh = (l // R) % R
    ld = l // (R * R)
    g = ((d0 + ld) * H + h0 + lh).to(tl.int64) * W + w0 + lw
    V = D.to(tl.int64) * H * W
    p = tl.load(patch_ptr + l).to(tl.float32)
    for c in tl.static_range(NCLS):
        x = tl.load(logits_ptr + c * R * R * R + l).to(tl.float32)
        a = tl.load(acc_ptr + c * V + g)
        tl.store(acc_ptr + c * V + g, (a + x * p).to(acc_ptr.dtype.element_ty))


@triton.jit
def argmax3_kernel(acc_ptr, out_ptr, V, BLOCK: tl.constexpr):
    """Label = argmax over 3 class planes (3, V); ties go to the lowest class (np.argmax)."""
    v = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = v < V
    s0 = tl.load(acc_ptr + v, mask=m, other=0.0)
    s1 = tl.load(acc_ptr + V + v, mask=m, other=0.0)
    s2 = tl.load(acc_ptr + 2 * V + v, mask=m, other=0.0)
    lab = tl.where(s1 > s0, 1, 0)
    best = tl.maximum(s0, s1)
    lab = tl.where(s2 > best, 2, lab)
    tl.store(out_ptr + v, lab.to(tl.uint8), mask=m)
