"""Plain-torch references for every op in plugins.ops (the CPU fallback and the tests' ground truth).

Conventions: tensors are logical NCDHW; the kernels keep activations channels-last in memory, the
references accept any layout. Quantization is simulated here exactly as the kernels do it: float8 e4m3
values q = sat(x / scale) with per-tensor activation scales and per-output-channel weight scales
(amax / 448), accumulation in fp32; int8 values q = sat127(rne(x / scale)) with scales amax / 127 (the
calibration cache's convention), exact integer accumulation, times the two scales in fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as tnf

FP8_MAX = 448.0
FP8 = torch.float8_e4m3fn
INT8_MAX = 127.0


def instance_norm_relu(
    x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5, relu: bool = True
) -> Tensor:
    """InstanceNorm3d(affine) over D*H*W per (n, c) in fp32 (biased variance), then ReLU; same dtype out."""
    y = tnf.instance_norm(x.float(), weight=gamma.float(), bias=beta.float(), eps=eps)
    if relu:
        y = torch.relu(y)
    return y.to(x.dtype)


def pixel_shuffle3d(x8k: Tensor) -> Tensor:
    """Depth-to-space 2x2x2: channel k*8 + 4*(o%2) + 2*(p%2) + (q%2) of voxel (o//2, p//2, q//2)."""
    n, c8, d, h, w = x8k.shape
    k = c8 // 8
    y = x8k.reshape(n, k, 2, 2, 2, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return y.reshape(n, k, 2 * d, 2 * h, 2 * w)


def pixel_shuffle3d_concat(x8k: Tensor, skip: Tensor) -> Tensor:
    """Concat(pixel_shuffle3d(x8k), skip) on channels (upsampled first)."""
    return torch.cat([pixel_shuffle3d(x8k).to(skip.dtype), skip], dim=1)


def conv1x1x1_bias(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Output conv (K, C) weights + bias -> fp32 logits (N, K, D, H, W)."""
    k, c = w.shape[0], w.shape[1]
    return tnf.conv3d(x.float(), w.float().reshape(k, c, 1, 1, 1), b.float())


def conv3x3x3_c1(x: Tensor, w: Tensor, in_scale: float | None = None) -> Tensor:
    """First conv 1 -> 32, 3^3, pad 1, no bias; an int8 input is dequantized with in_scale.
    Output dtype: the input's float dtype, float16 for an int8 input."""
    if x.dtype == torch.int8:
        if in_scale is None:
            raise ValueError("conv3x3x3_c1: an int8 input needs in_scale")
        xf = x.float() * in_scale
        out_dtype = torch.float16
    else:
        xf = x.float() * (1.0 if in_scale is None else in_scale)
        out_dtype = x.dtype
    return tnf.conv3d(xf, w.float().reshape(-1, 1, 3, 3, 3), padding=1).to(out_dtype)


def conv3x3x3(x: Tensor, w: Tensor, stride: int = 1) -> Tensor:
    """Plain 3^3 conv, pad 1, no bias, fp32 compute."""
    return tnf.conv3d(x.float(), w.float(), stride=stride, padding=1)


def quantize_fp8(x: Tensor, scale: float | Tensor) -> Tensor:
    """Saturating float8 e4m3 of x/scale (the kernels clamp to +-448 before the cast)."""
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def weight_scales_fp8(w: Tensor) -> Tensor:
    """Per-output-channel scale amax/448 (a zero channel gets scale 1)."""
    amax = w.float().reshape(w.shape[0], -1).abs().amax(dim=1)
    return torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))


def conv3x3x3_fp8_sim(x: Tensor, w: Tensor, stride: int, act_scale: float) -> Tensor:
    """What the fp8 kernel computes: fp8(x/act_scale) (*) fp8(w/w_scale[co]), rescaled, fp64 accumulate."""
    ws = weight_scales_fp8(w)
    wq = quantize_fp8(w, ws.reshape(-1, 1, 1, 1, 1)).double() * ws.double().reshape(-1, 1, 1, 1, 1)
    xq = quantize_fp8(x, act_scale).double() * act_scale
    return tnf.conv3d(xq, wq, stride=stride, padding=1).float()


def quantize_int8(x: Tensor, scale: float | Tensor) -> Tensor:
    """Symmetric int8 of x/scale: round half to even, saturate at +-127 (never -128)."""
    return torch.round(x.float() / scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)


def weight_scales_int8(w: Tensor) -> Tensor:
    """Per-output-channel scale amax/127 (a zero channel gets scale 1)."""
    amax = w.float().reshape(w.shape[0], -1).abs().amax(dim=1)
    return torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))


def conv3x3x3_int8_sim(x: Tensor, w: Tensor, stride: int, act_scale: float) -> Tensor:
    """What the int8 kernels compute: int8(x/act_scale) (*) int8(w/w_scale[co]) summed exactly (fp64 holds
    every int32 sum), converted to fp32 and times the fp32 column scale w_scale[co]*act_scale: the same
    operations as the kernels' epilogue, so equal to them bit for bit before the output cast."""
    ws = weight_scales_int8(w)
    wq = quantize_int8(w, ws.reshape(-1, 1, 1, 1, 1)).double()
    xq = quantize_int8(x, act_scale).double()
    acc = tnf.conv3d(xq, wq, stride=stride, padding=1)
    return acc.float() * (ws * act_scale).float().reshape(1, -1, 1, 1, 1)


def deconv_to_conv1x1(w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """ConvTranspose3d(k2, s2) weights (Cin, K, 2, 2, 2) + bias (K) -> 1x1x1 conv (8K, Cin) + bias (8K)
    with output channel k*8 + 4td + 2th + tw (NVIDIA's surgery; pixel_shuffle3d undoes it)."""
    cin, k = w.shape[0], w.shape[1]
    w2 = w.permute(1, 2, 3, 4, 0).reshape(8 * k, cin)
    return w2, b.repeat_interleave(8)


def weight_accumulate(acc: Tensor, logits: Tensor, patch: Tensor, origin: tuple[int, int, int]) -> None:
    """acc (C, D, H, W) [window at origin] += logits (C, R, R, R) * patch (R, R, R), in acc's dtype."""
    r = patch.shape[-1]
    d, h, w = origin
    view = acc[:, d : d + r, h : h + r, w : w + r]
    view += (logits.float() * patch.float()).to(acc.dtype)


def argmax(acc: Tensor) -> Tensor:
    """(C, ...) scores -> uint8 labels; ties to the lowest class like np.argmax."""
    return torch.argmax(acc, dim=0).to(torch.uint8)


# --- the whole network: parity tests of the fused pipeline (core.backends.torch.fused), training ---


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.InstanceNorm3d(cout, affine=True), nn.ReLU()
        )
        self.conv2 = nn.Sequential(
            nn.Conv3d(cout, cout, 3, 1, 1, bias=False), nn.InstanceNorm3d(cout, affine=True), nn.ReLU()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.upsample_conv = nn.Sequential(nn.ConvTranspose3d(cin, cout, 2, 2, 0, bias=True))
        blk = _Block(2 * cout, cout, 1)
        self.conv1, self.conv2 = blk.conv1, blk.conv2

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = torch.cat([self.upsample_conv(x), skip], dim=1)
        return self.conv2(self.conv1(x))


class _Out(nn.Module):
    def __init__(self, cin: int, ncls: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv3d(cin, ncls, 1, 1, 0, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class UNet3D(nn.Module):
    """The MLPerf KiTS19 3D-UNet (REF ``Unet3D``) with its state-dict names: the one torch model of the
    topology (the shipped demo model was trained and exported from it by tools/train_demo_model.py).
    ``filters`` sets the width (full width (32, 64, 128, 256, 320); the shared phantom model is
    (16, 32, 64, 128, 160)). ``random_affine`` draws the InstanceNorm scales and shifts at random so
    that tests exercise them; False keeps torch's initialization (1, 0) for training."""

    def __init__(
        self,
        filters: tuple[int, ...] = (32, 64, 128, 256, 320),
        in_ch: int = 1,
        ncls: int = 3,
        random_affine: bool = True,
    ) -> None:
        super().__init__()
        f = list(filters)
        self.filters = tuple(f)
        self.input_block = _Block(in_ch, f[0], 1)
        self.downsample = nn.ModuleList([_Block(f[i], f[i + 1], 2) for i in range(len(f) - 1)])
        self.bottleneck = _Block(f[-1], f[-1], 2)
        ups = [(f[-1], f[-1])] + [(f[i + 1], f[i]) for i in reversed(range(len(f) - 1))]
        self.upsample = nn.ModuleList([_Up(a, b) for a, b in ups])
        self.output = _Out(f[0], ncls)
        for m in self.modules() if random_affine else ():
            if isinstance(m, nn.InstanceNorm3d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.2, 0.2)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        x = self.input_block(x)
        skips.append(x)
        for blk in self.downsample:
            x = blk(x)
            skips.append(x)
        x = self.bottleneck(x)
        for up, skip in zip(self.upsample, reversed(skips), strict=True):
            x = up(x, skip)
        return self.output(x)
