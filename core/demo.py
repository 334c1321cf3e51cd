"""`unet3d demo`: a complete benchmark on a fresh CPU machine in a few minutes.

Builds a demo workspace (synthetic phantoms from core.synthetic in the DATA_DIR layout, the shipped
small MLPerf-topology model from core/data/demo_model.onnx as the workspace's model, the reference
preprocessing), then runs LoadGen twice on the ort backend: an AccuracyOnly Offline run (DICE against
the demo model's own FP32 reference, shipped beside it) and a short PerformanceOnly Offline run.
Every step is resumable: a second `unet3d demo` reuses what the first one wrote.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.benchmark import RunConfig
from core.errors import MissingInputError, UsageError
from core.fsio import copy_atomic as _copy_atomic
from core.fsio import sha256_file
from core.jobs import NEVER, CancelToken, LogLine, Phase, Reporter, null_reporter
from core.workspace import Workspace

DATA = Path(__file__).resolve().parent / "data"
DEMO_MODEL = DATA / "demo_model.onnx"
DEMO_MODEL_DICE = DATA / "demo_model.fp32_dice.json"
N_INFERENCE = 4
N_CALIBRATION = 2
SEED = 0
PERF_SECONDS = 10.0  # the short performance run's min_duration


@dataclass
class DemoResult:
    workspace: Path
    cases: list[str]
    fp32_reference: float | None
    accuracy: Any = None  # core.harness.runner.RunResult of the AccuracyOnly run
    performance: Any = None  # RunResult of the PerformanceOnly run (None if skipped)
    seconds: dict[str, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # core.results.result_row per run

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r["ok"] for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace": str(self.workspace),
            "cases": list(self.cases),
            "fp32_reference": self.fp32_reference,
            "ok": self.ok,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "results": self.rows,
        }


def demo_model_info() -> dict[str, Any]:
    """The shipped demo model's JSON (how it was made, its FP32 DICE)."""
    if not DEMO_MODEL.is_file():
        raise MissingInputError("the demo model is not in this installation", DEMO_MODEL)
    try:
        return dict(json.loads(DEMO_MODEL_DICE.read_text()))
    except (OSError, ValueError) as exc:
        raise MissingInputError(f"cannot read the demo model's DICE file: {exc}", DEMO_MODEL_DICE) from None


def install_demo_model(ws: Workspace) -> Path:
    """Copy the shipped model to ws.model_path with its FP32-reference JSON beside it (what
    core.accuracy.fp32_reference_for reads). Refuses to overwrite a different model."""
    info = demo_model_info()
    want = str(info.get("model", {}).get("sha256") or sha256_file(DEMO_MODEL))
    dst = ws.model_path
    if dst.exists() and sha256_file(dst) != want:
        raise UsageError(f"{dst} holds another model; run the demo in its own workspace (--workspace=DIR)")
    if not dst.exists():
        _copy_atomic(DEMO_MODEL, dst)
    ref = dst.with_name(dst.stem + ".fp32_dice.json")
    if not ref.exists() or ref.read_bytes() != DEMO_MODEL_DICE.read_bytes():
        _copy_atomic(DEMO_MODEL_DICE, ref)
    return dst


def _check_data_dir(ws: Workspace) -> None:
    """The demo writes its own case lists into DATA_DIR: never do that over real KiTS19 data."""
    d = ws.data_dir
    if not d.is_dir():
        return
    from core.synthetic import MANIFEST

    cases = [p for p in d.iterdir() if p.is_dir() and p.name.startswith("case_")]
    if cases and not (d / MANIFEST).is_file():
        raise UsageError(
            f"{d} holds non-synthetic cases; run the demo in its own workspace (--workspace=DIR)"
        )


def run_demo(
    ws: Workspace,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    *,
    performance: bool = True,
    n_inference: int = N_INFERENCE,
    n_calibration: int = N_CALIBRATION,
    seed: int = SEED,
) -> DemoResult:
    from core.accuracy import fp32_reference_for
    from core.harness.isolated import run_benchmark_isolated as run_benchmark  # one process per run
    from core.history import record_of
    from core.lock import workspace_lock
    from core.preprocess import run_preprocess
    from core.results import result_row
    from core.synthetic import write_demo_dataset

    t_all = time.monotonic()
    seconds: dict[str, float] = {}

    def step(name: str, detail: str = "") -> float:
        cancel.check()
        report(Phase(name, detail))
        return time.monotonic()

    # the lock covers writing the dataset, the model and the preprocessed data (preprocessing re-enters
    # it); the runs take it themselves, in their own processes
    with workspace_lock(ws, "demo"):
        t = step("synthesize", f"{n_inference}+{n_calibration} phantom cases -> {ws.data_dir}")
        _check_data_dir(ws)
        lists = write_demo_dataset(ws.data_dir, n_inference, n_calibration, seed, report, cancel)
        seconds["synthesize"] = time.monotonic() - t

        t = step("model", f"demo model -> {ws.model_path}")
        install_demo_model(ws)
        ref, source = fp32_reference_for(ws.model_path)
        report(LogLine("info", f"FP32 reference DICE {ref:.5f} ({source})"))
        seconds["model"] = time.monotonic() - t

        t = step("preprocess", str(ws.preprocessed_dir))
        sets = ("inference", "calibration") if n_calibration else ("inference",)
        run_preprocess(ws, sets=sets, report=report, cancel=cancel)
        seconds["preprocess"] = time.monotonic() - t

    result = DemoResult(ws.root, list(lists.inference), ref)
    cfg = RunConfig(scenario="Offline", test_mode="AccuracyOnly", backend="ort", precision="fp32")
    t = step("accuracy", cfg.cli_command())
    result.accuracy = run_benchmark(ws, cfg, report=report, cancel=cancel)
    seconds["accuracy"] = time.monotonic() - t
    result.rows.append(result_row(record_of(result.accuracy.log_dir), ref))

    if performance:
        # size the short run from the accuracy run's pace (with margin: the accuracy run includes loading
        # and scoring), so that it lasts at least PERF_SECONDS and LoadGen calls it VALID
        qps = 1.5 * max(0.01, len(lists.inference) / max(seconds["accuracy"], 1e-3))
        cfg = RunConfig(
            scenario="Offline",
            test_mode="PerformanceOnly",
            backend="ort",
            precision="fp32",
            min_duration=PERF_SECONDS,
            min_query_count=len(lists.inference),
            offline_expected_qps=round(qps, 4),
        )
        t = step("performance", cfg.cli_command())
        result.performance = run_benchmark(ws, cfg, report=report, cancel=cancel)
        seconds["performance"] = time.monotonic() - t
        result.rows.append(result_row(record_of(result.performance.log_dir), ref))

    seconds["total"] = time.monotonic() - t_all
    result.seconds = seconds
    return result


def render_demo(result: DemoResult) -> str:
    from core.results import results_table

    lines = [results_table(result.rows).rstrip("\n")]
    ref = f"{result.fp32_reference:.5f}" if result.fp32_reference is not None else "?"
    lines.append("")
    lines.append(f"demo workspace: {result.workspace} ({len(result.cases)} synthetic inference cases)")
    lines.append(f"FP32 reference DICE of the demo model: {ref}")
    times = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
    lines.append(f"time: {times}")
    ws = shlex.quote(f"--workspace={result.workspace}")
    unet3d, console, activate = how_to_call()
    lines.append(f"next: {unet3d} status {ws}")
    lines.append(f"      {console} {ws}   (the console)")
    if activate:
        lines.append(f"      (or `{activate}` first, then `unet3d ...`)")
    return "\n".join(lines) + "\n"


def how_to_call(cwd: Path | None = None) -> tuple[str, str, str]:
    """(unet3d, unet3d-console, activate): how this installation's commands are typed from ``cwd``.

    `make install` puts them in .venv/bin without activating it, so a bare `unet3d` is "command not
    found" there: name the scripts beside this interpreter unless those are what PATH finds, and say
    how to activate the environment. Without the scripts (an uninstalled checkout): `python -m core`."""
    import os
    import shutil
    import sys

    here = Path(sys.executable).parent
    cwd = cwd or Path.cwd()

    def shown(p: Path) -> str:
        try:
            return shlex.quote(os.path.relpath(p, cwd)) if p.is_relative_to(cwd) else shlex.quote(str(p))
        except ValueError:
            return shlex.quote(str(p))

    script = here / "unet3d"
    if not script.is_file():
        py = shown(Path(sys.executable))
        return f"{py} -m core", f"{py} -m console.app", ""
    found = shutil.which("unet3d")
    if found and Path(found).resolve() == script.resolve():
        return "unet3d", "unet3d-console", ""
    activate = here / "activate"
    hint = f"source {shown(activate)}" if activate.is_file() else ""
    return shown(script), shown(here / "unet3d-console"), hint
