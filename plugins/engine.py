"""A VolumeEngine (core.backends.base) over plugins.unet.FusedUNet3D: the fused-kernel network captured
as one CUDA graph per batch, the sliding window of core.sliding_window.segment_torch with the Triton
weight-accumulate and argmax kernels, NVIDIA's int8-linear input (the volume uploaded once as int8,
dequantized inside the first conv). Usable as ``engine=`` of core.harness.runner.run_benchmark."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plugins import ops
from plugins.unet import INT8_INPUT_AMAX, FusedUNet3D, GraphedModel

ROI = 128


class FusedEngine:
    name = "torch-fused"

    def __init__(
        self,
        model: str | Path | Any,
        precision: str = "fp8",
        batch_size: int = 8,
        device: str = "cuda",
        calibration_windows: Iterable[torch.Tensor] | None = None,
        prologue: str = "apply",
        input_amax: float = INT8_INPUT_AMAX,
        cuda_graph: bool = True,
        net: FusedUNet3D | None = None,
    ) -> None:
        """``model``: an ONNX file or ModelProto of the MLPerf topology (or None with a prebuilt ``net``)."""
        self.precision = precision
        self.batch_size = int(batch_size)
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:  # the harness binds worker threads by index
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device = dev
        self.input_amax = float(input_amax)
        self.net = net or FusedUNet3D.from_onnx(
            model, precision=precision, device=self.device, prologue=prologue, input_amax=input_amax
        )
        self.scales: dict[int, float] = {}
        if precision == "fp8" and calibration_windows is not None:
            self.scales = self.net.calibrate(calibration_windows)
        self.fn: Any = self.net
        if cuda_graph and self.device.type == "cuda":
            self.fn = GraphedModel(self.net, self.batch_size, ROI, torch.int8, self.device)
        from core.sliding_window import default_patches_tensor

        self.patches = default_patches_tensor(self.device, torch.float16)

    @property
    def input_dtype(self) -> str:
        return "int8"

    def _upload(self, volume: np.ndarray) -> torch.Tensor:
        v = torch.from_numpy(np.ascontiguousarray(volume))
        if v.dtype != torch.int8:  # float32 preprocessed volume -> NVIDIA's int8 linear input
            v = torch.clamp(torch.round(v.float() * (127.0 / self.input_amax)), -127, 127).to(torch.int8)
        return v.to(self.device)

    def infer(self, windows: np.ndarray) -> np.ndarray:
        x = self._upload(windows)
        outs = [self.fn(x[i : i + self.batch_size]).clone() for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(outs).float().cpu().numpy()

    def bind_thread(self) -> None:
        """Called by the harness on its worker thread: Triton launches follow the current device."""
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def segment_device(self, vol: torch.Tensor, cancel: Any = None, on_batch: Any = None) -> torch.Tensor:
        from core.jobs import NEVER
        from core.sliding_window import segment_torch

        with torch.inference_mode():
            return segment_torch(
                vol, self.fn, self.batch_size, self.patches, accumulate_fn=ops.accumulate_fn,
                argmax_fn=ops.argmax_fn, cancel=cancel or NEVER, on_batch=on_batch,
            )  # fmt: skip

    def segment(self, volume: np.ndarray, cancel: Any = None, on_batch: Any = None) -> np.ndarray:
        labels = self.segment_device(self._upload(volume), cancel, on_batch)
        return labels.cpu().numpy().astype(np.uint8, copy=False)

    def close(self) -> None:
        self.fn = self.net = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
