"""MLPerf 3D-UNet KiTS19 constants and the run configuration: one home for every number the rules fix.

Values and their sources are listed in docs/ARCHITECTURE.md and the benchmark description
(reference `global_vars.py`, LoadGen `mlperf.conf`, submission checker constants).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.workspace import Workspace

# --- preprocessing (reference global_vars.py) ---
MEAN_VAL = 101.0
STDDEV_VAL = 76.9
MIN_CLIP_VAL = -79.0
MAX_CLIP_VAL = 304.0
PADDING_VAL = -2.2
TARGET_SPACING = (1.6, 1.2, 1.2)  # (z, y, x) mm = array axes 0, 1, 2
ROI_SHAPE = (128, 128, 128)
SLIDE_OVERLAP_FACTOR = 0.5
ROI = 128
STRIDE = int(ROI * (1 - SLIDE_OVERLAP_FACTOR))  # 64
NUM_CLASSES = 3  # background, kidney, tumor

# --- INT8 linear input (NVIDIA) ---
INPUT_AMAX = (MAX_CLIP_VAL - MEAN_VAL) / STDDEV_VAL  # 2.63979...
INT8_INPUT_AMAX_DEFAULT = 2.63979  # the value NVIDIA's cache and preprocessing use

# --- accuracy (reference README, submission checker) ---
FP32_REFERENCE_DICE = 0.86170  # official FP32 mean DICE of the full-width model
TARGET_FRACTIONS = {"default": 0.99, "high_accuracy": 0.999}  # config_ver -> fraction of FP32
MODEL_NAMES = {"default": "3d-unet-99", "high_accuracy": "3d-unet-99.9"}
LOADGEN_MODEL = "3d-unet"  # mlperf.conf key for both accuracy targets

# --- model I/O ---
INPUT_NAME = "input"
OUTPUT_NAME = "output"
ONNX_OPSET = 12

# (D, H, W) of the 43 inference cases after preprocessing (spec section 3.1), in case-list order: the
# workload of speed measurements on synthetic volumes (bench/).
INFERENCE_SHAPES: tuple[tuple[int, int, int], ...] = (
    (192, 384, 384), (192, 384, 384), (256, 448, 448), (320, 320, 320), (256, 320, 320),
    (256, 256, 256), (320, 384, 384), (128, 320, 320), (320, 384, 384), (192, 384, 384),
    (192, 384, 384), (256, 320, 320), (128, 448, 448), (192, 320, 320), (320, 384, 384),
    (192, 320, 320), (192, 320, 320), (192, 384, 384), (256, 320, 320), (320, 448, 448),
    (320, 320, 320), (128, 320, 320), (320, 320, 320), (320, 320, 320), (128, 320, 320),
    (320, 448, 448), (320, 384, 384), (128, 320, 320), (192, 384, 384), (128, 192, 320),
    (192, 384, 384), (320, 256, 256), (320, 320, 320), (384, 320, 320), (320, 448, 448),
    (384, 384, 384), (256, 256, 256), (448, 320, 320), (448, 320, 320), (384, 256, 256),
    (192, 384, 384), (448, 320, 320), (384, 384, 384),
)  # fmt: skip

SCENARIOS = ("Offline", "SingleStream")
TEST_MODES = ("PerformanceOnly", "AccuracyOnly", "SubmissionRun", "FindPeakPerformance")
CONFIG_VERS = ("default", "high_accuracy")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
AUDIT_TESTS = ("TEST01", "TEST04", "TEST05")
# precisions whose activation ranges come from the calibration cache (NVIDIA's int8; our fp8 scales)
CALIBRATED_PRECISIONS = ("int8", "fp8")


def target_dice(config_ver: str, fp32_reference: float = FP32_REFERENCE_DICE) -> float:
    """Accuracy threshold for ``config_ver`` relative to the FP32 reference of the model in use."""
    return TARGET_FRACTIONS[config_ver] * fp32_reference


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one LoadGen run. Renders to the CLI flags and to NVIDIA's RUN_ARGS."""

    scenario: str = "Offline"
    config_ver: str = "default"
    test_mode: str = "PerformanceOnly"
    backend: str = "ort"
    precision: str = "fp32"
    gpu_batch_size: int = 1
    min_duration: float | None = None  # seconds; None = mlperf.conf (600 s)
    max_duration: float | None = None
    min_query_count: int | None = None
    max_query_count: int | None = None
    offline_expected_qps: float | None = None
    single_stream_expected_latency_ms: float | None = None
    audit_test: str | None = None
    gpus: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    def validate(self) -> RunConfig:
        from core.errors import UsageError

        for name, value, allowed in (
            ("scenarios", self.scenario, SCENARIOS),
            ("config_ver", self.config_ver, CONFIG_VERS),
            ("test_mode", self.test_mode, TEST_MODES),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise UsageError(f"--{name}={value} is not one of {', '.join(allowed)}")
        if self.audit_test is not None and self.audit_test not in AUDIT_TESTS:
            raise UsageError(f"--audit_test={self.audit_test} is not one of {', '.join(AUDIT_TESTS)}")
        if self.gpu_batch_size < 1:
            raise UsageError(f"--gpu_batch_size={self.gpu_batch_size} must be at least 1")
        if self.gpus < 1:
            raise UsageError(f"--gpus={self.gpus} must be at least 1")
        for name in ("min_duration", "max_duration", "min_query_count", "max_query_count"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UsageError(f"--{name}={value:g} must not be negative")
        for name in ("offline_expected_qps", "single_stream_expected_latency_ms"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"--{name}={value:g} must be more than 0")
        for lo, hi in (("min_duration", "max_duration"), ("min_query_count", "max_query_count")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b and b < a:  # LoadGen reads 0 as "no maximum"
                raise UsageError(f"--{hi}={b:g} is less than --{lo}={a:g}")
        self.inference_streams  # noqa: B018  (validates --gpu_inference_streams)
        return self

    @property
    def inference_streams(self) -> int:
        """Engines (each with its own SUT worker and CUDA stream) per device: NVIDIA's
        ``--gpu_inference_streams`` (default 1). A second stream hides one sample's host work (upload,
        label copy-back, LoadGen response) behind the other's GPU work."""
        from core.errors import UsageError

        raw = self.extra.get("gpu_inference_streams", "1")
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise UsageError(f"--gpu_inference_streams={raw} must be a whole number of at least 1")
        return n

    @property
    def needs_calibration_cache(self) -> bool:
        """This run's engine takes its ranges from the calibration cache: the one rule every caller
        (the runner, `unet3d run --action=generate_engines`, the console's Build engine) follows."""
        return self.precision in CALIBRATED_PRECISIONS

    def with_(self, **changes: object) -> RunConfig:
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RunConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]

    def run_args(self) -> str:
        """The NVIDIA-style RUN_ARGS string (flags spelled as NVIDIA spells them)."""
        parts = [
            "--benchmarks=3d-unet",
            f"--scenarios={self.scenario}",
            f"--config_ver={self.config_ver}",
            f"--test_mode={self.test_mode}",
            f"--backend={self.backend}",
            f"--precision={self.precision}",
            f"--gpu_batch_size={self.gpu_batch_size}",
        ]
        for name in (
            "min_duration",
            "max_duration",
            "min_query_count",
            "max_query_count",
            "offline_expected_qps",
            "single_stream_expected_latency_ms",
            "audit_test",
        ):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                parts.append(f"--{name}={value}")
        if self.gpus != 1:
            parts.append(f"--gpus={self.gpus}")
        parts += [f"--{k}={shlex.quote(v)}" for k, v in sorted(self.extra.items())]  # NVIDIA's other flags
        return " ".join(parts)

    def cli_command(self, ws: Workspace | None = None) -> str:
        """``unet3d [--workspace=DIR ...] run RUN_ARGS``: with ``ws``, the global flags that point the
        CLI at that workspace (workspace_args), so the command works pasted anywhere."""
        flags = " ".join(shlex.quote(f) for f in workspace_args(ws)) if ws is not None else ""
        return f"unet3d {flags + ' ' if flags else ''}run {self.run_args()}"

    def make_command(self, ws: Workspace | None = None) -> str:
        """``make run RUN_ARGS=... [UNET3D_ARGS=...]`` (the Makefile passes UNET3D_ARGS to ``unet3d``
        before the subcommand)."""
        cmd = f"make run RUN_ARGS={shlex.quote(self.run_args())}"
        if ws is not None:
            cmd += f" UNET3D_ARGS={shlex.quote(' '.join(shlex.quote(f) for f in workspace_args(ws)))}"
        return cmd


def workspace_args(ws: Workspace) -> list[str]:
    """The `unet3d` global flags that select ``ws``: ``--workspace=ROOT``, plus each path that is not
    the workspace's own default (one set by DATA_DIR & co. or the config file), which a pasted command
    would otherwise not see."""
    from core.workspace import Workspace

    default = Workspace.resolve(ws.root, env={})
    args = [f"--workspace={ws.root}"]
    for flag, name in (
        ("data_dir", "data_dir"),
        ("preprocessed_data_dir", "preprocessed_dir"),
        ("model_dir", "model_dir"),
        ("log_dir", "log_dir"),
    ):
        if getattr(ws, name) != getattr(default, name):
            args.append(f"--{flag}={getattr(ws, name)}")
    return args
