"""Past runs: one :class:`RunRecord` per folder under ``ws.log_dir``, newest first.

A folder's ``run.json`` (written by the runner) is the primary source; folders without it (runs
made by other tools, e.g. NVIDIA's harness) fall back to the LoadGen summary. A run.json left at
``running`` by a process that is gone is reported as ``incomplete``. Only a ``complete`` run is
VALID or INVALID: a killed, cancelled or failed one has ``valid`` None whatever its partial logs
say. Broken folders are listed with status ``broken`` rather than raising.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.harness.logs import ACCURACY_NAME, SUMMARY_NAME, incomplete_logs, parse_summary
from core.workspace import Workspace

RUN_JSON = "run.json"


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    path: Path
    date: str | None  # ISO start time (run.json) or the folder's mtime
    scenario: str | None
    test_mode: str | None
    config_ver: str | None
    backend: str | None
    precision: str | None
    status: str  # running | complete | incomplete | cancelled | failed | broken
    valid: bool | None
    samples_per_s: float | None
    mean_dice: float | None
    audit_test: str | None = None
    error: str | None = None
    latency_p90_ms: float | None = None  # SingleStream's metric (90th percentile latency)
    accuracy_pass: bool | None = None  # DICE met its config_ver target (vs the model's FP32 reference)

    @property
    def result(self) -> str:
        return "" if self.valid is None else ("VALID" if self.valid else "INVALID")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["result"] = self.result
        return d


def _pid_alive(pid: Any, host: Any, started: Any = None) -> bool:
    """The run's process still exists: same host, pid alive, and (where /proc tells) that pid's
    process started no later than the run did, so a dead run's pid reused by another process during
    a long session does not keep it "running" forever."""
    if not isinstance(pid, int) or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    t_proc, t_run = _process_start(pid), _parse_iso(started)
    return t_proc is None or t_run is None or t_proc <= t_run + 5.0


def _process_start(pid: int) -> float | None:
    """Epoch seconds at which ``pid`` started (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        btime = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def _parse_iso(text: Any) -> float | None:
    try:
        return _dt.datetime.fromisoformat(str(text)).timestamp() if text else None
    except ValueError:
        return None


def _mtime_iso(path: Path) -> str | None:
    try:
        return _dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="seconds")
    except OSError:
        return None


def _from_run_json(folder: Path, data: dict[str, Any]) -> RunRecord:
    result: dict[str, Any] = data["result"] if isinstance(data.get("result"), dict) else {}
    acc: dict[str, Any] | None = data["accuracy"] if isinstance(data.get("accuracy"), dict) else None
    if acc is None and isinstance(result.get("accuracy"), dict):
        acc = result["accuracy"]
    status = str(data.get("status") or "incomplete")
    if status == "running" and not _pid_alive(data.get("pid"), data.get("host"), data.get("started")):
        status = "incomplete"
    valid = result.get("valid")
    sps = result.get("samples_per_s")
    lat: dict[str, Any] = result["latency_ms"] if isinstance(result.get("latency_ms"), dict) else {}
    p90 = lat.get("p90")
    if status == "incomplete" and (folder / SUMMARY_NAME).is_file():
        s = parse_summary(folder / SUMMARY_NAME)  # the process died after LoadGen finished
        valid, sps, p90 = s.valid, s.samples_per_s, s.latency_ms().get("p90")
    if status != "complete":
        valid = None  # only a run that finished is VALID or INVALID; a killed or cancelled one is neither
    mean = acc.get("mean") if acc else None
    passed = acc.get("passed") if acc else None
    return RunRecord(
        run_id=str(data.get("run_id") or folder.name),
        path=folder,
        date=data.get("started") or _mtime_iso(folder),
        scenario=data.get("scenario"),
        test_mode=data.get("test_mode"),
        config_ver=data.get("config_ver"),
        backend=data.get("backend"),
        precision=data.get("precision"),
        status=status,
        valid=valid if isinstance(valid, bool) else None,
        samples_per_s=float(sps) if isinstance(sps, (int, float)) else None,
        mean_dice=float(mean) if isinstance(mean, (int, float)) else None,
        audit_test=data.get("audit_test"),
        error=data.get("error"),
        latency_p90_ms=float(p90) if isinstance(p90, (int, float)) else None,
        accuracy_pass=passed if isinstance(passed, bool) else None,
    )


def _from_summary(folder: Path) -> RunRecord:
    s = parse_summary(folder / SUMMARY_NAME)
    mean = None
    acc_txt = folder / "accuracy.txt"
    if acc_txt.is_file():
        try:
            text = acc_txt.read_text(errors="replace")
            mean = float(text.split("mean =", 1)[1].split(",", 1)[0])
        except (OSError, IndexError, ValueError):
            mean = None
    complete = s.exists and (s.result is not None or (folder / ACCURACY_NAME).is_file())
    complete = complete and incomplete_logs(folder) is None
    return RunRecord(
        run_id=folder.name,
        path=folder,
        date=_mtime_iso(folder / SUMMARY_NAME) or _mtime_iso(folder),
        scenario=s.scenario,
        test_mode=s.mode,
        config_ver=None,
        backend=None,
        precision=None,
        status="complete" if complete else "incomplete",
        valid=s.valid if complete else None,
        samples_per_s=s.samples_per_s,
        mean_dice=mean,
        latency_p90_ms=s.latency_ms().get("p90"),
    )


def read_run(folder: Path) -> RunRecord | None:
    """The record of one run folder; None if the folder holds no run at all."""
    run_json = folder / RUN_JSON
    if run_json.is_file():
        try:
            data = json.loads(run_json.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return _from_run_json(folder, data)
        except (OSError, ValueError) as exc:
            return RunRecord(
                folder.name, folder, _mtime_iso(folder), None, None, None, None, None, "broken",
                None, None, None, error=f"{run_json.name}: {exc}",
            )  # fmt: skip
    if (folder / SUMMARY_NAME).is_file() or (folder / "mlperf_log_detail.txt").is_file():
        return _from_summary(folder)
    return None


def list_runs(ws: Workspace) -> list[RunRecord]:
    """All runs under ``ws.log_dir`` (one level deep), newest first; never raises for bad folders."""
    try:
        folders = [p for p in ws.log_dir.iterdir() if p.is_dir()]
    except OSError:
        return []
    records = []
    for folder in folders:
        try:
            rec = read_run(folder)
        except Exception as exc:  # a folder we cannot read must not hide the others
            rec = RunRecord(
                folder.name, folder, None, None, None, None, None, None, "broken", None, None, None,
                error=str(exc),
            )  # fmt: skip
        if rec is not None:
            records.append(rec)
    records.sort(key=lambda r: (_sort_key(r.date), r.run_id), reverse=True)
    return records


def _sort_key(date: str | None) -> float:
    if not date:
        return 0.0
    try:
        return _dt.datetime.fromisoformat(date).timestamp()
    except ValueError:
        return 0.0
