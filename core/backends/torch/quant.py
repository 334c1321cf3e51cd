"""Simulated INT8 / FP8 quantization: the precisions the torch backend knows and the
quantize-dequantize arithmetic of one symmetric range (per tensor for activations, per output channel
for weights). Numerically what an INT8/FP8 engine computes, not its speed; the converted graph
(``core.backends.torch.nodes``) applies it where real low-precision kernels are absent."""

from __future__ import annotations

import torch

BASE_PRECISIONS = ("fp32", "fp16", "bf16")
QUANT_PRECISIONS = ("int8", "fp8")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FP8_MAX = 448.0  # float8_e4m3fn
INT8_MAX = 127.0


def _fq_int8(x: torch.Tensor, amax: float) -> torch.Tensor:
    s = max(float(amax), 1e-12) / INT8_MAX
    return torch.clamp(torch.round(x / s), -INT8_MAX, INT8_MAX) * s


def _fq_fp8(x: torch.Tensor, amax: float) -> torch.Tensor:
    s = max(float(amax), 1e-12) / FP8_MAX
    return (x / s).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(x.dtype) * s


def fake_quant(x: torch.Tensor, amax: float, kind: str) -> torch.Tensor:
    """Quantize-dequantize ``x`` with one symmetric per-tensor range (int8: RNE, saturate at 127)."""
    return _fq_int8(x, amax) if kind == "int8" else _fq_fp8(x, amax)


def fake_quant_weight_tensor(w: torch.Tensor, kind: str, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(dequantized w, per-channel amax) on the device: no host sync, so it can run in a CUDA graph."""
    dims = [d for d in range(w.dim()) if d != axis]
    amax = w.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12)
    qmax = INT8_MAX if kind == "int8" else FP8_MAX
    s = amax / qmax
    if kind == "int8":
        q = torch.clamp(torch.round(w / s), -INT8_MAX, INT8_MAX) * s
    else:
        q = (w / s).to(torch.float8_e4m3fn).to(w.dtype) * s
    return q, amax


def fake_quant_weight(w: torch.Tensor, kind: str, axis: int = 0) -> tuple[torch.Tensor, list[float]]:
    """Per-output-channel symmetric weight quantization; returns (dequantized w, per-channel amax)."""
    q, amax = fake_quant_weight_tensor(w, kind, axis)
    return q, [float(a) for a in amax.flatten()]
