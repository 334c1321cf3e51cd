"""A scripted stand-in for the core jobs: emits the same event types as the real ones with a stepped
clock, so Pilot tests, snapshot tests and `unet3d-console --fake` run without data, models or LoadGen.

Jobs can be held mid-way (``hold=True``): they wait (cancel-aware) on ``release`` after their first
unit, which lets a test cancel a job deterministically.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any

from core import jobs as cj
from core.benchmark import RunConfig
from core.errors import BadInputError, Cancelled
from core.harness.events import RunEvents
from core.history import Accuracy, Metrics, RunRecord
from core.status import ItemStatus, Section, StatusReport
from core.workspace import Workspace

CASES = (*(f"case_{i:05d}" for i in (0, 3, 5, 12, 24, 41)), "case_00400")
# scripted per-case DICE (kidney, tumor); case_00012's tumor is poor so its composite fails both targets
DICE = {
    "case_00000": (0.961, 0.872),
    "case_00003": (0.948, 0.801),
    "case_00005": (0.957, 0.884),
    "case_00012": (0.930, 0.512),
    "case_00024": (0.952, 0.866),
    "case_00041": (0.944, 0.903),
    "case_00400": (0.959, 0.861),
}


class SteppedClock:
    """A clock that moves only when told to (thread-safe)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def advance(self, dt: float) -> None:
        with self._lock:
            self.t += dt


def fake_status(ws: Workspace, *, missing: tuple[str, ...] = ()) -> StatusReport:
    """A plausible status report; sections named in ``missing`` are missing (with the CLI's fix hints)."""

    def sec(name: str, ok_items: list[ItemStatus], bad: ItemStatus) -> Section:
        return Section(name, (bad,) if name in missing else tuple(ok_items))

    return StatusReport(
        {"root": str(ws.root), "log_dir": str(ws.log_dir)},
        (
            sec(
                "dataset",
                [
                    ItemStatus("inference", "ok", "7 cases (case_00400 = copy of case_00185)"),
                    ItemStatus("calibration", "ok", "2 cases"),
                ],
                ItemStatus("inference", "missing", "case_00400 missing (copy of case_00185)", "unet3d demo"),
            ),
            sec(
                "preprocessed",
                [
                    ItemStatus("inference", "ok", "7 cases fp32+int8, checksums ok"),
                    ItemStatus("calibration", "ok", "2 cases fp32"),
                ],
                ItemStatus("inference", "missing", f"{ws.preprocessed_dir} not found", "unet3d preprocess"),
            ),
            sec(
                "model",
                [
                    ItemStatus(
                        "model",
                        "ok",
                        "opset 12, 1,950,659 params, input[batch_size,1,128,128,128]"
                        " -> output[batch_size,3,128,128,128], sha256 3f9a1c0d5e21",
                        data={"sha256": "3f9a1c0d5e21" + "0" * 52, "opset": 12},
                    )
                ],
                ItemStatus("model", "missing", f"{ws.model_path} not found", "unet3d download --model"),
            ),
            sec(
                "calibration",
                [ItemStatus("calibration cache", "ok", "minmax, 64 tensors")],
                ItemStatus("calibration cache", "missing", "not found", "unet3d calibrate"),
            ),
            Section("engines", (ItemStatus("engines", "missing", "no engine files", "built on demand"),)),
            Section(
                "backends",
                (
                    ItemStatus("ort", "ok", "cpu"),
                    ItemStatus("torch", "missing", "no CUDA device (torch 2.13 CPU build)"),
                    ItemStatus("tensorrt", "missing", "tensorrt is not installed"),
                ),
            ),
            Section("runs", (ItemStatus("runs", "missing", "no runs yet", "unet3d run"),)),
        ),
    )


class FakeJobs:
    def __init__(
        self,
        *,
        cases: tuple[str, ...] = CASES,
        missing: tuple[str, ...] = (),
        hold: bool = False,
        fail: str | None = None,
        runs: list[RunRecord] | None = None,
        valid: bool = True,
    ) -> None:
        self.cases = cases
        self.missing = missing
        self.hold = hold
        self.fail = fail  # name of a job that raises BadInputError
        self.valid = valid
        self.runs: list[RunRecord] = list(runs or [])  # newest first, as core.history lists them
        self.release = threading.Event()
        self.calls: list[str] = []
        self.clock = SteppedClock()
        self.events: RunEvents | None = None

    # --- probes ---
    def status(self, ws: Workspace) -> StatusReport:
        return fake_status(ws, missing=self.missing)

    def history(self, ws: Workspace) -> list[RunRecord]:
        return list(self.runs)

    def case_list(self, ws: Workspace) -> list[str]:
        return list(self.cases)

    # --- jobs ---
    def _units(
        self, job: str, task: str, items: list[str], unit: str, report: cj.Reporter, cancel: cj.CancelToken
    ) -> None:
        self.calls.append(job)
        report(cj.Phase(task, f"{len(items)} {unit}s"))
        for n, item in enumerate(items, 1):
            cancel.check()
            if self.fail == job and n == 2:
                raise BadInputError(f"{item}/imaging.nii.gz: truncated gzip stream")
            report(cj.Progress(task, n, len(items), unit=unit, item=item))
            if n == 1 and self.hold:
                while not self.release.is_set():
                    if cancel.wait(0.01):
                        raise Cancelled()
        report(cj.LogLine("info", f"{task}: {len(items)} {unit}s done"))

    def demo(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        self._units("demo", "demo", list(self.cases), "case", report, cancel)
        self.missing = ()
        return {"workspace": str(ws.root)}

    def preprocess(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        self._units("preprocess", "preprocess", list(self.cases), "case", report, cancel)
        return {"cases": len(self.cases)}

    def calibrate(self, ws: Workspace, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        self._units("calibrate", "calibrate", ["case_00009", "case_00010"], "case", report, cancel)
        return ws.calibration_cache_path

    def build_engine(self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken) -> Any:
        self._units("engine", "engine", [f"{cfg.backend}-{cfg.precision}"], "engine", report, cancel)
        return {"backend": cfg.backend}

    def benchmark(
        self, ws: Workspace, cfg: RunConfig, report: cj.Reporter, cancel: cj.CancelToken, live: Any
    ) -> dict[str, Any]:
        self.calls.append("benchmark")
        if self.fail == "benchmark":
            raise BadInputError("no preprocessed data", ws.preprocessed_dir)
        ev = RunEvents(total=len(self.cases), clock=self.clock)
        self.events = ev
        live.set(ev.snapshot())
        report(cj.Phase("loading", f"{len(self.cases)} samples"))
        ev.phase("running")
        ev.log(f"LoadGen {cfg.scenario} {cfg.test_mode} started")
        report(cj.Phase("running", cfg.run_args()))
        accuracy = cfg.test_mode == "AccuracyOnly"
        for n, case in enumerate(self.cases, 1):
            cancel.check()
            issued = self.clock()
            self.clock.advance(0.5 + 0.05 * n)
            ev.sample_done(n - 1, case, issued, windows=64)
            if accuracy:
                ev.dice(case, *DICE.get(case, (0.95, 0.85)))
            ev.log(f"sample {n}/{len(self.cases)} {case} done")
            ev.tick()
            live.set(ev.snapshot())
            report(cj.Progress("run", n, len(self.cases), unit="sample", item=case))
            if n == 1 and self.hold:
                while not self.release.is_set():
                    if cancel.wait(0.01):
                        ev.phase("cancelled")
                        live.set(ev.snapshot())
                        raise Cancelled()
        ev.phase("finished")
        live.set(ev.snapshot())
        log_dir = ws.log_dir / "fake" / f"{cfg.scenario}_{cfg.config_ver}_{cfg.test_mode}"
        result: dict[str, Any] = {
            "valid": self.valid,
            "samples_per_s": 1.7342,
            "latency_ms": {"p50": 571.2, "p90": 702.9, "p99": 731.4, "mean": 590.3, "max": 733.0},
            "log_dir": str(log_dir),
            "config": cfg.to_dict(),
        }
        if accuracy:
            vals = [DICE.get(c, (0.95, 0.85)) for c in self.cases]
            k = sum(v[0] for v in vals) / len(vals)
            t = sum(v[1] for v in vals) / len(vals)
            result["accuracy"] = {"mean": (k + t) / 2, "kidney": k, "tumor": t}
        acc = result.get("accuracy")
        self.runs.insert(
            0,
            RunRecord(
                run_id=log_dir.name,
                path=log_dir,
                date=_iso(1_764_390_000.0 + len(self.runs) * 60),
                status="complete",
                config=cfg,
                valid=self.valid if not accuracy else None,
                metrics=Metrics(
                    samples_per_s=1.7342,
                    latency_ms=dict(result["latency_ms"]),
                    accuracy=Accuracy(acc["mean"], acc["kidney"], acc["tumor"]) if acc else None,
                ),
            ),
        )
        return result


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")
