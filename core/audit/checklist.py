"""The auditor checklist as data: NVIDIA's "Instructions for Auditors" as steps, each with its title,
help text (Markdown), evidence check (core.audit.checks), the action that does it and NVIDIA's command.

Groups, in the seed's order:
  setup      environment, KiTS19, preprocessed data, model, calibration cache
  runs       {default, high_accuracy} x {PerformanceOnly, AccuracyOnly} for the audited scenario
  weights    "Run with new weights": replace the model -> calibrate -> run high_accuracy
  dataset    "Run with a new validation or calibration dataset": place data + case lists ->
             preprocess -> calibrate -> run high_accuracy
  compliance TEST01, TEST05 (performance runs with LoadGen's audit.config)
  logs       every result folder holds its LoadGen logs
  submission TEST01 verification -> stage -> check (core.submission.steps: the same jobs as
             `unet3d submission verify-test01 | stage | check`)

A step whose evidence does not meet the submission rules is ``not compliant`` (core.audit.checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.audit.checks import (
    Context,
    StepResult,
    calibrated_after,
    check_calibration,
    check_environment,
    check_logs,
    check_model,
    check_new_data,
    check_new_model,
    check_preprocessed_after_data,
    check_stage,
    check_submission_check,
    check_test01_verification,
    compliance_check,
    dataset_check,
    model_time,
    preprocessed_time,
    run_after_calibration,
    run_check,
)
from core.benchmark import SCENARIOS, RunConfig, target_dice
from core.errors import UsageError
from core.submission.steps import SubmissionRequest


@dataclass(frozen=True)
class Action:
    """What does a step: a LoadGen run (``run``), a core job (``job``: preprocess | calibrate |
    demo), a submission step (``submission``: core.submission.steps.run_request runs ``submission``),
    or something the operator does by hand (``manual``, described by ``text``)."""

    kind: str  # "run" | "job" | "submission" | "manual" | "check"
    label: str
    run: RunConfig | None = None
    job: str = ""
    text: str = ""
    submission: SubmissionRequest | None = None

    def command(self) -> str:
        """The equivalent shell command (shown by the console, printed by the CLI)."""
        if self.run is not None:
            return self.run.cli_command()
        if self.submission is not None:
            return self.submission.command()
        if self.job:
            return f"unet3d {self.job}"
        return self.text


@dataclass(frozen=True)
class Step:
    id: str
    group: str
    title: str
    help: str  # Markdown
    check: Callable[[Context], StepResult]
    action: Action
    seed_command: str = ""  # NVIDIA's command for this step, quoted from the auditor instructions


def _seed_run(config_ver: str, scenario: str, test_mode: str | None) -> str:
    tm = f" --test_mode={test_mode}" if test_mode else ""
    return f'make run RUN_ARGS="--benchmarks=3d-unet --scenarios={scenario} --config_ver={config_ver}{tm}"'


def checklist(scenario: str = "Offline", base: RunConfig | None = None) -> list[Step]:
    """The steps for ``scenario``. ``base`` supplies backend/precision/batch/durations for the runs."""
    if scenario not in SCENARIOS:
        raise UsageError(f"--scenarios={scenario} is not one of {', '.join(SCENARIOS)}")
    base = (base or RunConfig()).with_(scenario=scenario, audit_test=None)
    calibrate = Action("job", "Calibrate", job="calibrate")
    preprocess = Action("job", "Preprocess", job="preprocess")
    steps = [
        Step(
            "env",
            "setup",
            "Environment report",
            "Versions of Python, LoadGen and the inference libraries, and which backends can run here "
            "(the equivalent of NVIDIA's `make info`).",
            check_environment,
            Action("check", "Check"),
        ),
        Step(
            "data",
            "setup",
            "KiTS19 dataset present",
            "The inference cases (42 KiTS19 cases + case_00400, a copy of case_00185) and the 20 "
            "calibration cases, with imaging and segmentation volumes. The demo's synthetic phantoms or "
            "a case list other than the official 43 cases are present but not compliant.",
            dataset_check("dataset", "dataset"),
            Action("manual", "Get data", text="unet3d download --data (or unet3d demo)"),
        ),
        Step(
            "preprocessed",
            "setup",
            "Preprocessed data present",
            "Both sets preprocessed by `core.preprocess` (fp32 and int8 volumes, labels, checksums), "
            "of the official dataset to be compliant.",
            dataset_check("preprocessed", "preprocessed data"),
            preprocess,
            "python3 code/3d-unet/tensorrt/preprocess_data.py",
        ),
        Step(
            "model",
            "setup",
            "Model present",
            "`build/models/3d-unet-kits19/3dUNetKiTS19.onnx` with input `input` [N,1,128,128,128] and "
            "output `output` [N,3,128,128,128]; compliant when it is the official "
            "`3dunet_kits19_128x128x128_dynbatch.onnx` (by its MD5).",
            check_model,
            Action("manual", "Get model", text="unet3d download --model"),
        ),
        Step(
            "calibration",
            "setup",
            "Calibration cache present",
            "An INT8 calibration cache made for this model (its sha256 must match).",
            check_calibration,
            calibrate,
            'make calibrate RUN_ARGS="--benchmarks=3d-unet"',
        ),
    ]
    for cv in ("default", "high_accuracy"):
        for tm in ("PerformanceOnly", "AccuracyOnly"):
            target = f"{target_dice(cv):.7g}"
            extra = (
                f" The mean DICE must reach the {cv} target ({target})."
                if tm == "AccuracyOnly"
                else " LoadGen must report the run VALID."
            )
            steps.append(
                Step(
                    f"run.{cv}.{tm}",
                    "runs",
                    f"{scenario} {cv} {tm}",
                    f"NVIDIA's auditor run `{_seed_run(cv, scenario, tm)}`; results land in `build/logs`."
                    + extra,
                    run_check(cv, tm),
                    Action("run", f"Run {cv} {tm}", run=base.with_(config_ver=cv, test_mode=tm)),
                    _seed_run(cv, scenario, tm),
                )
            )
    steps += [
        Step(
            "weights.replace",
            "weights",
            "New weights: replace the model",
            "Replace `build/models/3d-unet-kits19/3dUNetKiTS19.onnx` with the new ONNX model. Evidence: "
            "the model's sha256 differs from the one recorded when this audit started.",
            check_new_model,
            Action(
                "manual", "Replace model", text="cp NEW.onnx build/models/3d-unet-kits19/3dUNetKiTS19.onnx"
            ),
        ),
        Step(
            "weights.calibrate",
            "weights",
            "New weights: calibrate",
            "Generate a new calibration cache for the new model.",
            calibrated_after(model_time, "model"),
            calibrate,
            'make calibrate RUN_ARGS="--benchmarks=3d-unet"',
        ),
        Step(
            "weights.run",
            "weights",
            "New weights: run high_accuracy",
            "Run the benchmark with `--config_ver=high_accuracy` after the new calibration.",
            run_after_calibration("new-weights", waive=("model",)),
            Action(
                "run",
                "Run high_accuracy",
                run=base.with_(config_ver="high_accuracy", test_mode="PerformanceOnly"),
            ),
            _seed_run("high_accuracy", scenario, None),
        ),
        Step(
            "dataset.place",
            "dataset",
            "New dataset: place data and case lists",
            "Put the new dataset under `build/data/KiTS19/`, together with `inference_cases.json` and "
            "`calibration_cases.json`.",
            check_new_data,
            Action(
                "manual",
                "Place data",
                text="copy the cases and both case-list JSON files to build/data/KiTS19/",
            ),
        ),
        Step(
            "dataset.preprocess",
            "dataset",
            "New dataset: preprocess",
            "Preprocess both sets again (newer than the case lists).",
            check_preprocessed_after_data,
            preprocess,
            "python3 code/3d-unet/tensorrt/preprocess_data.py",
        ),
        Step(
            "dataset.calibrate",
            "dataset",
            "New dataset: calibrate",
            "Generate a new calibration cache from the new calibration set.",
            calibrated_after(preprocessed_time, "preprocessed calibration set"),
            calibrate,
            'make calibrate RUN_ARGS="--benchmarks=3d-unet"',
        ),
        Step(
            "dataset.run",
            "dataset",
            "New dataset: run high_accuracy",
            "Run the benchmark with `--config_ver=high_accuracy` after the new calibration.",
            run_after_calibration("new-dataset", waive=("dataset",)),
            Action(
                "run",
                "Run high_accuracy",
                run=base.with_(config_ver="high_accuracy", test_mode="PerformanceOnly"),
            ),
            _seed_run("high_accuracy", scenario, None),
        ),
    ]
    for test, what in (
        ("TEST01", "logs a sample of responses in a performance run to check them against the accuracy run"),
        ("TEST05", "repeats the performance run with alternate LoadGen seeds"),
    ):
        steps.append(
            Step(
                f"compliance.{test}",
                "compliance",
                f"Compliance {test}",
                f"{test} {what} (`--audit_test={test} --action=run_audit_harness`; NVIDIA retries "
                "with a 20 s cool-down). Evidence here: a finished VALID run with this audit test's "
                "audit.config. The submission's verification scripts (compliance/<TEST>/run_verification.py) "
                "are not run by this tool.",
                compliance_check(test),
                Action(
                    "run",
                    f"Run {test}",
                    run=base.with_(config_ver="default", test_mode="PerformanceOnly", audit_test=test),
                ),
                "make run_audit_harness RUN_ARGS="
                f'"--benchmarks=3d-unet --scenarios={scenario} --audit_test={test}"',
            )
        )
    steps.append(
        Step(
            "logs",
            "logs",
            "Result folders complete",
            "Every folder under `build/logs` holds `mlperf_log_summary.txt`, `mlperf_log_detail.txt` "
            "and, for accuracy runs, `mlperf_log_accuracy.json`.",
            check_logs,
            Action("check", "Check"),
        )
    )
    steps += [
        Step(
            "submission.test01",
            "submission",
            "TEST01 verification",
            "MLCommons' TEST01 verification of the TEST01 run against the accuracy and performance runs "
            "the stage would choose: `verify_accuracy.txt` (every logged response equals the accuracy "
            "run's; else the DICE fallback within 1 % / 0.1 %) and `verify_performance.txt` (score "
            f"within 10 %), in `build/compliance/{scenario}/TEST01`. Passed when both pass and the "
            "verified runs are compliant.",
            check_test01_verification,
            Action(
                "submission",
                "Verify TEST01",
                submission=SubmissionRequest("verify-test01", scenario=scenario),
            ),
            "python3 compliance/TEST01/run_verification.py -r RESULTS_DIR -c TEST01_DIR -o OUTPUT_DIR",
        ),
        Step(
            "submission.stage",
            "submission",
            "Stage the submission tree",
            "The results tree of the round's layout in `build/submission-staging` (its manifest beside "
            "it: which runs, their compliance): performance, accuracy (truncated logs, full ones in "
            "`build/submission-staging.full`), TEST01, measurements, system description. Passed when "
            f"the {scenario} result is staged, its TEST01 verification passed and its runs are "
            "compliant. The submitter and system name are needed.",
            check_stage,
            Action("submission", "Stage", submission=SubmissionRequest("stage")),
            "make stage_results",
        ),
        Step(
            "submission.check",
            "submission",
            "Check the submission tree",
            "The built-in pre-check and, given a checkout of mlcommons/inference (`--checker PATH`), "
            "MLCommons' submission checker on the staged tree; what they said is kept in "
            "`build/submission-staging.check.json`. Passed when neither reports an error for the tree "
            "as it is now and the staged runs are compliant.",
            check_submission_check,
            Action("submission", "Check", submission=SubmissionRequest("check")),
            "make check_submission",
        ),
    ]
    return steps
