"""The ``torch`` backend: the ONNX model run by PyTorch on CUDA (CPU for tests).

The package, by what each module is:

- ``quant``: the precisions and the simulated int8 / fp8 arithmetic (fake quantization);
- ``nodes``: one ``nn.Module`` per ONNX node, :class:`OnnxUNet` (the converted graph), and the
  ``plugins.ops`` kernels a node may use (:class:`Kernels`);
- ``convert``: the ONNX -> :class:`OnnxUNet` converter (original or NVIDIA's surgered plugin form),
  quantization set-up with the calibration ranges, device placement (``build_net``);
- ``fused``: the fused whole-network executor (the whole U-Net as a chain of fused Triton kernels;
  fp8's and int8's default on CUDA: real fp8 (e4m3) and int8 GEMMs);
- ``engine``: :class:`TorchEngine` (CUDA graphs per batch size, one stream per engine, pinned host
  copies, the GPU-resident sliding window) and ``make_engine``, which picks the executor;
- this module: :class:`TorchBackend`, the ``Backend`` the registry (``core.backends``) hands out.

int8 / fp8 on the converted graph (the CPU, or ``UNET3D_TORCH_EXECUTOR=graph``) run as *simulated*
quantization (fake-quant with the calibration cache's per-tensor amax and per-channel weight amax):
numerically what an INT8/FP8 engine computes, not its speed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from core.backends.base import Availability
from core.backends.torch.engine import NAME, TorchEngine, make_engine, resolve_device
from core.backends.torch.nodes import Kernels
from core.backends.torch.quant import BASE_PRECISIONS, QUANT_PRECISIONS
from core.errors import BackendUnavailableError, MissingInputError, UsageError
from core.fsio import sha256_file
from core.workspace import Workspace


class TorchBackend:
    name = NAME

    @property
    def precisions(self) -> tuple[str, ...]:
        return BASE_PRECISIONS + QUANT_PRECISIONS

    def availability(self) -> Availability:
        if not torch.cuda.is_available():
            return Availability(False, f"no CUDA device (torch {torch.__version__}; CPU is for tests only)")
        devices = tuple(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
        return Availability(True, "", devices)

    def details(self) -> dict[str, str]:
        """Versions and kernel status, for `unet3d status` and the bench headers."""
        info = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = "not installed (plain torch ops only)"
        k = Kernels(True)
        info["plugins"] = ", ".join(k.present) or (k.error or "none")
        return info

    def load(
        self,
        model_path: Path,
        *,
        precision: str = "fp32",
        batch_size: int = 1,
        device: int | str = 0,
        calibration_cache: Path | None = None,
        workspace: Workspace | None = None,  # unused: torch engines are built in memory
        use_plugins: bool | None = None,
        cuda_graphs: bool = True,
        channels_last: bool = True,
        compile_mode: str | None = None,
        use_surgery: bool = True,
        executor: str | None = None,
    ) -> TorchEngine:
        if precision not in self.precisions:
            raise UsageError(f"--precision={precision} is not one of {', '.join(self.precisions)} (torch)")
        if batch_size < 1:
            raise UsageError(f"--gpu_batch_size={batch_size} must be at least 1")
        dev = resolve_device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"backend torch is unavailable: no CUDA device (torch {torch.__version__})"
            )
        model_path = Path(model_path)
        model_sha = sha256_file(model_path) if model_path.is_file() else ""
        calibration = None
        if precision in QUANT_PRECISIONS:
            from core import calibration_cache as cc

            if calibration_cache is None:
                raise MissingInputError(
                    f"precision {precision} needs a calibration cache (run `unet3d calibrate`)"
                )
            calibration = cc.load(calibration_cache)
            cc.check_model(calibration, model_sha, calibration_cache)
        return make_engine(
            model_path,
            precision=precision,
            batch_size=batch_size,
            device=dev,
            amax=None if calibration is None else dict(calibration.amax),
            use_plugins=use_plugins,
            cuda_graphs=cuda_graphs,
            channels_last=channels_last,
            compile_mode=compile_mode,
            use_surgery=use_surgery,
            model_sha256=model_sha,
            executor=executor,
        )


BACKEND = TorchBackend()
