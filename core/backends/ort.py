"""ONNX Runtime backend: the fp32 CPU reference (as the reference's ``onnxruntime_SUT.py``).

Runs the original model, or the surgered ``form="onnx"`` graph (``graph="onnx"``), on the CPU execution
provider with one intra-op thread per core. Windows are batched through the dynamic batch axis; a
static-batch model is fed one window at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from core.backends.base import Availability
from core.benchmark import INPUT_NAME, OUTPUT_NAME, ROI
from core.errors import BackendUnavailableError, BadInputError, UsageError
from core.workspace import Workspace

GRAPHS = ("original", "onnx")


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), else cpu_count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(f"backend ort is unavailable: {exc}") from None
    return onnxruntime


class OrtEngine:
    name = "ort"
    precision = "fp32"
    input_dtype = "float32"

    def __init__(self, session: Any, model_path: Path, batch_size: int, model_batch: int | None, graph: str):
        self._session = session
        self.model_path = model_path
        self.batch_size = batch_size
        self.graph = graph
        self._chunk = model_batch or batch_size  # static-batch models take model_batch windows per run
        self.threads = session.get_session_options().intra_op_num_threads

    def infer(self, windows: np.ndarray) -> np.ndarray:
        """(n, 1, 128, 128, 128) float32 -> (n, 3, 128, 128, 128) float32 logits, n <= batch_size."""
        if self._session is None:
            raise UsageError(f"engine for {self.model_path} is closed")
        windows = np.asarray(windows)
        if windows.ndim != 5 or windows.shape[1:] != (1, ROI, ROI, ROI):
            raise BadInputError(
                f"ort: windows have shape {windows.shape}, expected (n, 1, {ROI}, {ROI}, {ROI})"
            )
        if not 1 <= len(windows) <= self.batch_size:
            raise BadInputError(f"ort: {len(windows)} windows in one call, batch size is {self.batch_size}")
        if windows.dtype != np.float32:
            raise BadInputError(f"ort: windows are {windows.dtype}, the fp32 engine takes float32")
        windows = np.ascontiguousarray(windows)
        outs = [
            self._session.run([OUTPUT_NAME], {INPUT_NAME: windows[i : i + self._chunk]})[0]
            for i in range(0, len(windows), self._chunk)
        ]
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        self._session = None


class OrtBackend:
    name = "ort"
    precisions = ("fp32",)

    def availability(self) -> Availability:
        try:
            ort = _ort()
        except BackendUnavailableError as exc:
            return Availability(False, str(exc))
        providers = ort.get_available_providers()
        if "CPUExecutionProvider" not in providers:
            return Availability(False, f"onnxruntime {ort.__version__} has no CPU execution provider")
        return Availability(True, "", (f"cpu ({cpu_cores()} cores, onnxruntime {ort.__version__})",))

    def load(
        self,
        model_path: Path,
        *,
        precision: str = "fp32",
        batch_size: int = 1,
        device: int = 0,
        calibration_cache: Path | None = None,
        workspace: Workspace | None = None,
        graph: str = "original",
        threads: int | None = None,
    ) -> OrtEngine:
        """Validate the model (core.model.load_model), optionally apply the onnx-form surgery, and open
        an ONNX Runtime CPU session. ``device``, ``calibration_cache`` and ``workspace`` do not apply
        (fp32 CPU, nothing cached on disk)."""
        from core.model import load_model

        if precision not in self.precisions:
            raise UsageError(f"--precision={precision}: backend ort runs only {', '.join(self.precisions)}")
        if graph not in GRAPHS:
            raise UsageError(f"graph={graph!r} is not one of {', '.join(GRAPHS)}")
        if batch_size < 1:
            raise UsageError(f"--gpu_batch_size={batch_size} must be at least 1")
        ort = _ort()
        model_path = Path(model_path)
        info = load_model(model_path)
        if info.surgered == "plugin":
            raise BadInputError(
                "model holds TensorRT plugin ops; backend ort needs the original model", model_path
            )
        if graph == "onnx" and not info.surgered:
            from core.surgery import surgery

            data = surgery(model_path, "onnx").SerializeToString()
        else:
            data = model_path.read_bytes()
        batch_dim = info.inputs[0].shape[0]
        model_batch = batch_dim if isinstance(batch_dim, int) else None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or cpu_cores())
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BadInputError(f"onnxruntime cannot load the model: {first[:200]}", model_path) from None
        return OrtEngine(session, model_path, batch_size, model_batch, graph if not info.surgered else "onnx")


BACKEND = OrtBackend()
