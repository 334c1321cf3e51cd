"""`unet3d submission stage`: the results tree of one round's layout from a workspace's runs.

The runs come from :func:`core.submission.select.select_runs`; the tree is built in a temporary folder
beside ``--out`` and renamed into place only when complete (a failed stage leaves nothing), with the
full accuracy logs beside it in ``<out>.full/`` (same relative paths) and the tree's own accuracy logs
truncated as MLCommons' truncation does (core.submission.truncate).

Per ``<division>/<submitter>/``: ``results/<system>/<benchmark>/<scenario>/`` with ``performance/run_1``,
``accuracy/``, ``TEST01/`` (verified here, core.submission.test01), ``measurements.json``,
``user.conf`` and ``README.md`` (v5.1: the top-level ``measurements/`` and ``compliance/`` folders);
``systems/<system>.json`` (core.submission.sysdesc); ``calibration.md``; ``src/`` (v5.1: ``code/``)
with a pointer to the source. Beside the tree, ``<out>.stage.json`` (the manifest: what was staged from
which runs, their compliance, the files) is what the auditor checklist's stage step reads.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from core import __version__
from core.compliance import OFFICIAL_MODEL_FILE, round_of_seeds
from core.errors import MissingInputError, UsageError
from core.fsio import copy_atomic, write_text_atomic
from core.history import RunRecord, list_runs
from core.jobs import NEVER, CancelToken, LogLine, Phase, Reporter, null_reporter
from core.submission import rules
from core.submission.check import check_record_path
from core.submission.rules import ACCURACY_LOG, ACCURACY_TXT, DETAIL, SUMMARY, Layout
from core.submission.select import Selected, Selection, select_runs
from core.submission.sysdesc import machine_facts, system_description, to_fill
from core.submission.test01 import Test01Result, write_test01
from core.submission.truncate import truncate_accuracy_dir
from core.workspace import Workspace

if TYPE_CHECKING:
    from core.harness.qsl import DataSource

FULL_SUFFIX = ".full"  # <out>.full/ holds the untruncated accuracy logs
MANIFEST_SUFFIX = ".stage.json"  # <out>.stage.json: what was staged (read by the auditor checklist)
MANIFEST_VERSION = 1


def manifest_path(tree: str | Path) -> Path:
    tree = Path(tree).absolute()
    return tree.with_name(tree.name + MANIFEST_SUFFIX)


def read_manifest(tree: str | Path) -> dict[str, Any] | None:
    """The manifest the stage wrote beside ``tree``; None when absent or unreadable."""
    try:
        doc = json.loads(manifest_path(tree).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("manifest_version") == MANIFEST_VERSION else None


@dataclass(frozen=True)
class StageOptions:
    out: Path
    submitter: str
    system_name: str
    division: str | None = None  # None: closed when compliant runs of the official model exist, else open
    version: str | None = None  # None: the round whose seeds the runs carry (else v6.0)
    system_type: str | None = None  # None: edge when SingleStream is staged, else datacenter
    status: str = "available"
    scenarios: tuple[str, ...] | None = None
    force: bool = False


@dataclass
class StageResult:
    out: Path
    full_logs: Path
    division: str
    version: str
    system_type: str
    staged: list[Selected]
    skipped: list[str]
    test01: dict[str, Test01Result] = field(default_factory=dict)  # "<benchmark>/<scenario>" -> result
    to_fill: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"staged {self.division} division, layout {self.version}, {self.system_type} system: {self.out}"
        ]
        out.append(f"full accuracy logs: {self.full_logs}")
        for sel in self.staged:
            out.append(f"{sel.benchmark} {sel.scenario}:")
            for role, c in (
                ("performance", sel.performance),
                ("accuracy", sel.accuracy),
                ("TEST01", sel.test01),
            ):
                if c is not None:
                    out.append(f"  {role:<11} {c.run_id}  [{c.compliance.line}]")
            t = self.test01.get(f"{sel.benchmark}/{sel.scenario}")
            if t is not None:
                out.append(
                    f"  TEST01 verification: accuracy {'PASS' if t.accuracy_passed else 'FAIL'}, "
                    f"performance {'PASS' if t.performance.passed else 'FAIL'}"
                )
        out += [f"skipped: {s}" for s in self.skipped]
        out += self.notes
        if self.to_fill:
            out.append("a person must fill in these fields of the system JSON: " + ", ".join(self.to_fill))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "full_logs": str(self.full_logs),
            "division": self.division,
            "version": self.version,
            "system_type": self.system_type,
            "staged": [
                {
                    "benchmark": s.benchmark,
                    "scenario": s.scenario,
                    "runs": {
                        role: None
                        if c is None
                        else {"run": c.run_id, "path": str(c.path), "compliance": c.compliance.to_dict()}
                        for role, c in s.roles()
                    },
                    "test01": (
                        t.to_dict() if (t := self.test01.get(f"{s.benchmark}/{s.scenario}")) else None
                    ),
                }
                for s in self.staged
            ],
            "skipped": list(self.skipped),
            "to_fill": list(self.to_fill),
            "notes": list(self.notes),
        }


def _official_model(c: RunRecord) -> bool:
    return bool((c.model_provenance or {}).get("official"))


def _choose(ws: Workspace, opts: StageOptions) -> tuple[str, Selection, list[str]]:
    runs = [r for r in list_runs(ws) if r.config is not None]
    if not runs:
        raise MissingInputError("no runs to stage (run `unet3d run` first)", ws.log_dir)
    notes: list[str] = []
    if opts.division == "closed":
        sel = select_runs(runs, compliant_only=True, scenarios=opts.scenarios)
        if not sel.chosen:
            best = select_runs(runs, scenarios=opts.scenarios)
            why = "; ".join(
                f"{c.run_id}: {', '.join(c.compliance.reasons[:3])}" for s in best.chosen for c in s.runs[:1]
            )
            raise UsageError(
                "no compliant runs for the closed division"
                + (f" ({why})" if why else "")
                + "; use --division=open"
            )
        return "closed", sel, notes
    sel = select_runs(runs, scenarios=opts.scenarios)
    if not sel.chosen:
        raise MissingInputError("no stageable runs: " + "; ".join(sel.skipped), ws.log_dir)
    if opts.division == "open":
        return "open", sel, notes
    closed = select_runs(runs, compliant_only=True, scenarios=opts.scenarios)
    if closed.chosen and all(_official_model(c) for s in closed.chosen for c in s.runs):
        return "closed", closed, notes
    if not all(_official_model(c) for s in sel.chosen for c in s.runs):
        notes.append("open division: the model is not the official one (--division=closed needs it)")
    else:
        notes.append("open division: no compliant runs for the closed division (see the compliance labels)")
    return "open", sel, notes


def _version(sel: Selection, asked: str | None, notes: list[str]) -> str:
    seeds = {
        round_of_seeds(st.seeds) if (st := s.performance.settings) is not None else None for s in sel.chosen
    }
    found = next(iter(seeds)) if len(seeds) == 1 else None
    if asked is not None:
        if asked not in rules.VERSIONS:
            raise UsageError(f"--version={asked} is not one of {', '.join(rules.VERSIONS)}")
        if found is not None and found != asked:
            notes.append(
                f"warning: the runs carry the RNG seeds of {found}'s LoadGen; the {asked} checker expects "
                f"{asked}'s (run with that round's LoadGen, or stage with --version={found})"
            )
        return asked
    if found is None:
        notes.append("the runs' RNG seeds match no known round: layout v6.0")
        return "v6.0"
    return found


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # the full logs can be GBs: a hard link when the filesystem allows
    except OSError:
        copy_atomic(src, dst)


def _git_commit() -> str | None:
    """HEAD of the checkout this code runs from, marked when it has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head, dirty = (
            subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
            )
            for args in (["rev-parse", "HEAD"], ["status", "--porcelain", "--untracked-files=no"])
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0 or not head.stdout.strip():
        return None
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _input_dtype(c: RunRecord) -> str:
    # NVIDIA's int8-linear volumes feed the int8/fp8 engines of the GPU backends; the rest take fp32
    if c.precision in ("int8", "fp8") and c.backend in ("torch", "tensorrt"):
        return "int8"
    return "fp32"


def measurements(c: RunRecord) -> dict[str, str]:
    prec = str(c.precision)
    model = c.model_provenance or {}
    transform = {
        "int8": "quantization to int8 (per-tensor scales from calibration, see calibration.md)",
        "fp8": "quantization to fp8 e4m3 (per-tensor scales from calibration, see calibration.md)",
        "fp16": "cast to fp16",
        "bf16": "cast to bf16",
    }.get(prec, "none")
    return {
        "input_data_types": _input_dtype(c),
        "retraining": "No",
        "starting_weights_filename": OFFICIAL_MODEL_FILE
        if model.get("official")
        else str(model.get("file") or "unknown"),
        "weight_data_types": prec,
        "weight_transformations": transform,
    }


def _readme(sel: Selected, division: str, opts: StageOptions, t01: Test01Result | None) -> str:
    lines = [
        f"# {sel.benchmark} {sel.scenario} on {opts.system_name}",
        "",
        f"{division} division, {opts.submitter}. Staged by unet3d-console {__version__} on "
        f"{_dt.date.today().isoformat()} from the runs below.",
        "",
        "| role | run | result | compliance |",
        "|---|---|---|---|",
    ]
    for role, c in sel.roles():
        if c is None:
            continue
        if role == "accuracy":
            shown = _accuracy_shown(c)
        else:
            valid = c.result or "?"
            qps = c.samples_per_s
            p90 = c.latency_ms.get("p90")
            if sel.scenario == "SingleStream" and p90 is not None:
                shown = f"{valid}, p90 latency {p90:.1f} ms"
            else:
                shown = f"{valid}" + (f", {qps:.4g} samples/s" if qps is not None else "")
        lines.append(f"| {role} | {c.run_id} | {shown} | {c.compliance.label} |")
    lines += ["", "## Compliance", ""]
    for role, c in sel.roles():
        if c is None:
            lines.append(f"- {role}: no run")
            continue
        lines.append(f"- {role}: {c.compliance.label}")
        lines += [f"  - {r}" for r in c.compliance.reasons]
    if t01 is not None:
        lines += ["", "TEST01 verification: " + "; ".join(t01.lines()[:-1])]
    lines += ["", "## How to reproduce", "", "```"]
    for c in sel.runs:
        lines.append(c.config.cli_command() if c.config is not None else f"# {c.run_id}: no RunConfig")
    lines += ["```", ""]
    perf = sel.performance
    model = perf.model_provenance or {}
    data = perf.dataset or {}
    batch = perf.config.gpu_batch_size if perf.config is not None else None
    lines += [
        f"Model: {model.get('file')} (md5 {model.get('md5')}, official: {model.get('official')}). "
        f"Data: {data.get('cases')} cases, official case list: {data.get('official_case_list')}, "
        f"synthetic: {data.get('synthetic')}. Backend {perf.backend}, precision {perf.precision}, "
        f"batch {batch}.",
        "",
    ]
    return "\n".join(lines)


def _accuracy_shown(c: RunRecord) -> str:
    """The reference's accuracy line of a scored run (core.accuracy.accuracy_line)."""
    from core.accuracy import accuracy_line

    acc = c.accuracy
    if acc is None:
        return ""
    if acc.kidney is None or acc.tumor is None:
        return f"Accuracy: mean = {acc.mean:.5f}"
    return accuracy_line(acc.mean, acc.kidney, acc.tumor)


def _calibration_doc(ws: Workspace, precisions: Sequence[str]) -> str:
    lines = ["# Calibration", ""]
    quantized = sorted({p for p in precisions if p in ("int8", "fp8")})
    plain = sorted({p for p in precisions if p not in ("int8", "fp8")})
    if plain:
        lines.append(
            f"Runs in {', '.join(plain)} use no calibration: the model's fp32 weights are used as given "
            "(fp16/bf16: cast), with no quantization."
        )
        lines.append("")
    if quantized:
        meta: dict[str, Any] = {}
        try:
            doc = json.loads(ws.calibration_cache_path.read_text())
            meta = {"method": doc.get("method"), **(doc.get("meta") or {})}
        except (OSError, ValueError):
            pass
        lines += [
            f"Runs in {', '.join(quantized)} quantize activations and weights with symmetric per-tensor "
            "scales (scale = amax / 127 for int8; the fp8 e4m3 path maps the same amax to its range).",
            "",
            "- Calibration data: the 20 cases of the official calibration list (mlcommons/inference "
            "vision/medical_imaging/3d-unet-kits19/meta/calibration_cases.json), none of them in the "
            "inference set, preprocessed with the reference preprocessing.",
            "- Inputs: 128^3 windows cut with the benchmark's own sliding-window grid (not whole volumes), "
            "run through the fp32 model.",
            f"- Method: {meta.get('method') or 'see the calibration cache'} (amax per tensor; percentile: "
            "the 99.99th percentile of |x| from a histogram, never above the maximum).",
        ]
        extra = {k: v for k, v in meta.items() if k != "method" and isinstance(v, (str, int, float))}
        lines += [f"- {k}: {v}" for k, v in sorted(extra.items())]
        lines.append("")
    return "\n".join(lines)


def _source_readme(layout: Layout) -> str:
    commit = _git_commit()
    return "\n".join(
        [
            "# Source",
            "",
            f"The benchmark harness is unet3d-console {__version__}"
            + (f", git commit {commit}" if commit else "")
            + ": the `unet3d` CLI (core/), the LoadGen harness (core/harness/), the backends "
            "(core/backends/) and the Triton kernels (plugins/).",
            "",
            "Every run of this submission was made with `unet3d run` (the command of each run is in the "
            "README.md of its scenario folder) and staged with "
            f"`unet3d submission stage --version={layout.version}`.",
            "",
        ]
    )


def stage(
    ws: Workspace,
    opts: StageOptions,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    data: DataSource | None = None,
) -> StageResult:
    """Build the tree for ``opts`` from the runs in ``ws.log_dir``; see the module docstring.
    ``data``: the inference set TEST01's sampled responses are scored against (default: the
    workspace's preprocessed set)."""
    from core.accuracy import score_log

    out = Path(opts.out).absolute()
    full = out.with_name(out.name + FULL_SUFFIX)
    for p in (out, full):
        if p.exists() and not opts.force:
            raise UsageError(f"{p} exists (use --force to replace it)")
    if opts.system_type is not None and opts.system_type not in rules.SYSTEM_TYPES:
        raise UsageError(f"--system-type={opts.system_type} is not one of {', '.join(rules.SYSTEM_TYPES)}")
    if opts.status not in rules.AVAILABILITIES:
        raise UsageError(f"--status={opts.status} is not one of {', '.join(rules.AVAILABILITIES)}")
    for name, value in (("--submitter", opts.submitter), ("--system-name", opts.system_name)):
        if not value or "/" in value or value.startswith(".") or value != value.strip():
            raise UsageError(f"{name}={value!r} is not a usable folder name")

    report(Phase("select", str(ws.log_dir)))
    division, sel, notes = _choose(ws, opts)
    version = _version(sel, opts.version, notes)
    scenarios = {s.scenario for s in sel.chosen}
    system_type = opts.system_type or ("edge" if "SingleStream" in scenarios else "datacenter")
    layout = Layout(version, division, opts.submitter)
    system = opts.system_name

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.stage-{os.getpid()}")
    tmp_full = out.with_name(f".{out.name}{FULL_SUFFIX}.stage-{os.getpid()}")
    for p in (tmp, tmp_full):
        shutil.rmtree(p, ignore_errors=True)
    result = StageResult(
        out, full, division, version, system_type, list(sel.chosen), list(sel.skipped), notes=notes
    )
    try:
        for s in sel.chosen:
            cancel.check()
            report(Phase("stage", f"{s.benchmark} {s.scenario}"))
            scen = layout.scenario_dir(system, s.benchmark, s.scenario)
            for name in (SUMMARY, DETAIL):
                copy_atomic(s.performance.path / name, tmp / scen / "performance" / "run_1" / name)
            acc_dir = scen / "accuracy"
            for name in (SUMMARY, DETAIL, ACCURACY_TXT):
                copy_atomic(s.accuracy.path / name, tmp / acc_dir / name)
            _link_or_copy(s.accuracy.path / ACCURACY_LOG, tmp_full / acc_dir / ACCURACY_LOG)
            truncate_accuracy_dir(tmp / acc_dir, s.accuracy.path / ACCURACY_LOG)

            t01 = None
            if s.test01 is not None:
                report(Phase("TEST01", s.test01.run_id))

                def score(log: Path, csv: Path, cv: str = s.config_ver) -> Any:
                    return score_log(
                        ws, log, None, cv, data=data, out_csv=csv, subset=True, report=report, cancel=cancel
                    )

                comp = layout.compliance_dir(system, s.benchmark, s.scenario)
                t01 = write_test01(
                    tmp / comp,
                    s.accuracy.path,
                    s.performance.path,
                    s.test01.path,
                    config_ver=s.config_ver,
                    score=score,
                    copy_log=False,
                    cancel=cancel,
                )
                t_acc = comp / "TEST01" / "accuracy"
                _link_or_copy(s.test01.path / ACCURACY_LOG, tmp_full / t_acc / ACCURACY_LOG)
                truncate_accuracy_dir(tmp / t_acc, s.test01.path / ACCURACY_LOG)
                result.test01[f"{s.benchmark}/{s.scenario}"] = t01
                for line in t01.lines()[:-1]:
                    report(LogLine("info", f"{s.benchmark} {s.scenario} {line}"))

            mdir = layout.measurements_dir(system, s.benchmark, s.scenario)
            mjson = layout.measurements_json(system, s.benchmark, s.scenario)
            write_text_atomic(tmp / mjson, json.dumps(measurements(s.performance), indent=2) + "\n")
            copy_atomic(s.performance.path / "user.conf", tmp / mdir / "user.conf")
            write_text_atomic(tmp / mdir / "README.md", _readme(s, division, opts, t01))

        report(Phase("system", f"systems/{system}.json"))
        desc = system_description(
            division=division,
            submitter=opts.submitter,
            system_name=system,
            system_type=system_type,
            status=opts.status,
            backend=str(sel.chosen[0].performance.backend),
            facts=machine_facts(storage_path=ws.root),
        )
        write_text_atomic(tmp / layout.system_json(system), json.dumps(desc, indent=2) + "\n")
        result.to_fill = to_fill(desc)
        precisions = sorted({str(c.precision) for s in sel.chosen for c in s.runs})
        write_text_atomic(tmp / layout.calibration_doc, _calibration_doc(ws, precisions))
        write_text_atomic(tmp / layout.source_dir / "README.md", _source_readme(layout))

        cancel.check()
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "staged_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            **result.to_dict(),
            "files": relative_tree(tmp),
        }
        # the old tree's manifest and check record describe a tree that is about to go
        for stale in (manifest_path(out), check_record_path(out)):
            stale.unlink(missing_ok=True)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        old_full = out.with_name(f".{out.name}{FULL_SUFFIX}.old-{os.getpid()}")
        moved: list[tuple[Path, Path]] = []
        try:
            for cur, aside in ((out, old), (full, old_full)):
                if cur.exists():
                    os.replace(cur, aside)
                    moved.append((aside, cur))
            tmp_full.mkdir(exist_ok=True)
            os.replace(tmp_full, full)
            os.replace(tmp, out)
        except OSError:
            if full.exists() and not out.exists():
                shutil.rmtree(full, ignore_errors=True)
            for aside, cur in moved:
                os.replace(aside, cur)
            raise
        for aside, _ in moved:
            shutil.rmtree(aside, ignore_errors=True)
        write_text_atomic(manifest_path(out), json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp_full, ignore_errors=True)
        raise
    return result


def relative_tree(root: Path) -> list[str]:
    """Every file below ``root`` as a POSIX relative path, sorted (what tests compare)."""
    return sorted(
        str(PurePosixPath(p.relative_to(root).as_posix())) for p in Path(root).rglob("*") if p.is_file()
    )
