"""What is in a workspace, and what is missing: the one status report the CLI (`unet3d status`) and the
console dashboard both show.

``collect_status`` never raises: every section is gathered on its own, and a section whose module is
missing or whose files are broken becomes an item with state ``broken`` (or ``missing``) and a reason.
The report is a plain dataclass tree; ``to_dict()`` gives JSON-ready data.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any

from core.workspace import Workspace

OK = "ok"
MISSING = "missing"
BROKEN = "broken"
STATES = (OK, MISSING, BROKEN)


@dataclass(frozen=True)
class ItemStatus:
    """One line of the status table: what, its state, a one-line detail, and the command that fixes it."""

    name: str
    state: str  # "ok" | "missing" | "broken"
    detail: str = ""
    fix: str = ""  # e.g. "unet3d preprocess"; empty when ok or when nothing can fix it
    group: str = ""  # e.g. "inference" / "calibration"
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable extras (sha256, shapes, ...)

    @property
    def ok(self) -> bool:
        return self.state == OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Section:
    name: str  # "dataset", "preprocessed", "model", "calibration", "engines", "backends", "runs"
    items: tuple[ItemStatus, ...]

    @property
    def state(self) -> str:
        """The worst state of the section's items (broken > missing > ok); an empty section is missing."""
        states = {i.state for i in self.items}
        if BROKEN in states:
            return BROKEN
        if MISSING in states or not self.items:
            return MISSING
        return OK

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "items": [i.to_dict() for i in self.items]}


@dataclass(frozen=True)
class StatusReport:
    paths: dict[str, str]
    sections: tuple[Section, ...]

    def section(self, name: str) -> Section:
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def items(self) -> list[ItemStatus]:
        return [i for s in self.sections for i in s.items]

    def to_dict(self) -> dict[str, Any]:
        return {"paths": dict(self.paths), "sections": [s.to_dict() for s in self.sections]}


# --- fix commands shown next to a missing or broken item ---
FIX_DATA = "unet3d download --data (or unet3d demo for a synthetic workspace)"
FIX_PREPROCESS = "unet3d preprocess"
FIX_MODEL = "unet3d download --model"
FIX_CALIBRATE = "unet3d calibrate"
FIX_ENGINE = "unet3d run --backend=tensorrt --precision=int8 (builds the engine)"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return text or type(exc).__name__


def _import(module: str) -> Any:
    """Import a sibling module; None if it is not in the tree yet (other parts land independently)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
            return None
        raise


def _guarded(name: str, module: str, fn: str, ws: Workspace, fix: str) -> tuple[ItemStatus, ...]:
    """Call ``module.fn(ws) -> list[ItemStatus]`` and turn any failure into one broken item."""
    try:
        mod = _import(module)
        if mod is None or not hasattr(mod, fn):
            return (ItemStatus(name, BROKEN, f"{module}.{fn} is not available in this build", ""),)
        items = getattr(mod, fn)(ws)
        return tuple(_coerce(i) for i in items)
    except Exception as exc:  # status must never raise on a broken workspace
        return (ItemStatus(name, BROKEN, _one_line(exc), fix),)


def _coerce(item: Any) -> ItemStatus:
    """Accept ItemStatus from sibling modules even if they define a look-alike dataclass."""
    if isinstance(item, ItemStatus):
        return item
    return ItemStatus(
        name=str(getattr(item, "name", "?")),
        state=str(getattr(item, "state", BROKEN)),
        detail=str(getattr(item, "detail", "")),
        fix=str(getattr(item, "fix", "")),
        group=str(getattr(item, "group", "")),
        data=dict(getattr(item, "data", {}) or {}),
    )


def _human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _io_text(tensors: Any) -> str:
    parts = []
    for t in tensors or ():
        name = getattr(t, "name", None)
        shape = getattr(t, "shape", None)
        if name is None and isinstance(t, dict):
            name, shape = t.get("name"), t.get("shape")
        if name is None:
            parts.append(str(t))
        else:
            dims = ",".join(str(d) for d in shape) if shape is not None else "?"
            parts.append(f"{name}[{dims}]")
    return " ".join(parts)


def model_items(ws: Workspace) -> tuple[ItemStatus, ...]:
    path = ws.model_path
    if not path.exists():
        return (ItemStatus("model", MISSING, f"{path} not found", FIX_MODEL, data={"path": str(path)}),)
    try:
        mod = _import("core.model")
        if mod is None:
            size = path.stat().st_size
            return (
                ItemStatus(
                    "model", BROKEN, f"{path.name} {_human_size(size)}; core.model is not available", ""
                ),
            )
        info = mod.load_model(path)
    except Exception as exc:
        return (ItemStatus("model", BROKEN, _one_line(exc), FIX_MODEL, data={"path": str(path)}),)
    sha = str(getattr(info, "sha256", ""))
    params = getattr(info, "params", None)
    opset = getattr(info, "opset", None)
    ins, outs = getattr(info, "inputs", ()), getattr(info, "outputs", ())
    widths = tuple(getattr(info, "widths", ()) or ())
    shape = f"widths {','.join(map(str, widths))}, " if widths else ""
    surgered = getattr(info, "surgered", "")
    shape += f"surgery {surgered}, " if surgered else ""
    detail = (
        f"opset {opset}, {shape}{params:,} params, {_io_text(ins)} -> {_io_text(outs)}, sha256 {sha[:12]}"
    )
    data = {
        "path": str(path),
        "sha256": sha,
        "opset": opset,
        "params": params,
        "inputs": _io_text(ins),
        "outputs": _io_text(outs),
        "widths": list(widths),
    }
    return (ItemStatus("model", OK, detail, "", data=data),)


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def calibration_needs(backends: tuple[ItemStatus, ...]) -> dict[str, list[str]]:
    """Which backends read the cache, from the backends' items (no backend is probed twice):
    "none" (backends available here that run no calibrated precision: "ort fp32"), "here" and
    "elsewhere" (available / unavailable backends running int8 or fp8)."""
    from core.benchmark import CALIBRATED_PRECISIONS

    out: dict[str, list[str]] = {"none": [], "here": [], "elsewhere": []}
    for item in backends:
        precisions = [p for p in item.data.get("precisions") or () if isinstance(p, str)]
        if any(p in CALIBRATED_PRECISIONS for p in precisions):
            out["here" if item.ok else "elsewhere"].append(item.name)
        elif item.ok and precisions:
            out["none"].append(f"{item.name} {'/'.join(precisions)}")
    return out


def calibration_items(
    ws: Workspace, model_sha: str | None, backends: tuple[ItemStatus, ...] | None = None
) -> tuple[ItemStatus, ...]:
    """The calibration cache. Only int8 and fp8 read it (RunConfig.needs_calibration_cache): an absent
    cache is missing only where an available backend runs one of them; on a CPU workspace (ort, fp32)
    it is not needed, and ``unet3d calibrate`` (which needs torch) is not offered as a fix."""
    path = ws.calibration_cache_path
    if not path.exists():
        needs = calibration_needs(backend_items() if backends is None else backends)
        data: dict[str, Any] = {"path": str(path), **needs}
        torch = _torch_installed()
        if not needs["here"]:
            parts = ["not made; not needed here"]
            if needs["none"]:
                parts[0] += f": {', '.join(needs['none'])} runs without one"
            if needs["elsewhere"]:
                parts.append(f"int8/fp8 on {', '.join(needs['elsewhere'])} (not available here) need it")
            if not torch:
                parts.append("calibrating needs torch (pip install '.[gpu]')")
            return (ItemStatus("calibration cache", OK, "; ".join(parts), "", data=data),)
        detail = f"{path} not found: int8/fp8 on {', '.join(needs['here'])} need it (fp32/fp16/bf16 do not)"
        fix = FIX_CALIBRATE if torch else f"pip install '.[gpu]', then {FIX_CALIBRATE}"
        return (ItemStatus("calibration cache", MISSING, detail, fix, data=data),)
    try:
        mod = _import("core.calibration_cache")
        if mod is None:
            return (ItemStatus("calibration cache", BROKEN, "core.calibration_cache is not available", ""),)
        cache = mod.load(path)
    except Exception as exc:
        return (ItemStatus("calibration cache", BROKEN, _one_line(exc), FIX_CALIBRATE),)
    amax = getattr(cache, "amax", {}) or {}
    method = getattr(cache, "method", "?")
    cache_sha = str(getattr(cache, "model_sha256", "") or "")
    data = {"path": str(path), "method": method, "tensors": len(amax), "model_sha256": cache_sha}
    if model_sha and cache_sha and cache_sha != model_sha:
        return (
            ItemStatus(
                "calibration cache",
                BROKEN,
                f"made for model sha256 {cache_sha[:12]}, the model is {model_sha[:12]} (stale)",
                FIX_CALIBRATE,
                data=data,
            ),
        )
    return (ItemStatus("calibration cache", OK, f"{method}, {len(amax)} tensors", "", data=data),)


def engine_items(ws: Workspace) -> tuple[ItemStatus, ...]:
    d = ws.engine_dir
    try:
        files = sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []
    except OSError as exc:
        return (ItemStatus("engines", BROKEN, _one_line(exc), ""),)
    if not files:
        # engines are optional: they are built on demand by the TensorRT backend
        return (ItemStatus("engines", MISSING, f"no engine files in {d}", FIX_ENGINE),)
    return tuple(
        ItemStatus(p.name, OK, _human_size(p.stat().st_size), "", data={"path": str(p)}) for p in files
    )


def _precisions(name: str) -> list[str]:
    """The precisions a backend runs ([] when its module cannot load here)."""
    try:
        from core.backends import get_backend

        return list(get_backend(name).precisions)
    except Exception:
        return []


def backend_items() -> tuple[ItemStatus, ...]:
    try:
        from core.backends import availability, backend_names

        names = backend_names()
    except Exception as exc:
        return (ItemStatus("backends", BROKEN, _one_line(exc), ""),)
    items = []
    for name in names:
        try:
            av = availability(name)
            ok, reason, devices = av.ok, av.reason, tuple(av.devices)
        except Exception as exc:
            ok, reason, devices = False, _one_line(exc), ()
        detail = ", ".join(devices) if ok else reason
        data: dict[str, Any] = {"devices": list(devices), "reason": reason, "precisions": _precisions(name)}
        items.append(ItemStatus(name, OK if ok else MISSING, detail, "", data=data))
    return tuple(items)


def run_items(ws: Workspace, limit: int = 10) -> tuple[ItemStatus, ...]:
    try:
        from core.history import list_runs

        runs = list_runs(ws)
    except Exception as exc:
        return (ItemStatus("runs", BROKEN, _one_line(exc), ""),)
    if not runs:
        return (
            ItemStatus("runs", MISSING, f"no runs in {ws.log_dir}", "unet3d run --test_mode=AccuracyOnly"),
        )
    items = []
    for rec in runs[:limit]:  # list_runs gives the newest first
        # a run in progress, or a complete run LoadGen did not call INVALID, is ok; an incomplete,
        # cancelled or failed run must never look like a result. Compliance is another question: a VALID
        # 10 s run is ok here and says "shortened"
        good = rec.status == "running" or (rec.complete and rec.valid is not False)
        data: dict[str, Any] = {
            k: v for k, v in rec.to_dict().items() if isinstance(v, (str, int, float, bool, type(None)))
        }
        data["compliance"] = rec.compliance.to_dict()  # every reason (status --json)
        detail = f"{rec.summary()} [{rec.compliance.line}]"
        items.append(ItemStatus(rec.run_id, OK if good else BROKEN, detail, "", data=data))
    return tuple(items)


def collect_status(ws: Workspace) -> StatusReport:
    """Gather every section; never raises."""
    paths = {
        "root": str(ws.root),
        "data_dir": str(ws.data_dir),
        "preprocessed_dir": str(ws.preprocessed_dir),
        "model": str(ws.model_path),
        "log_dir": str(ws.log_dir),
        "engine_dir": str(ws.engine_dir),
        "calibration_cache": str(ws.calibration_cache_path),
    }
    dataset = _guarded("dataset", "core.cases", "raw_status", ws, FIX_DATA)
    pre = _guarded("preprocessed", "core.preprocess", "preprocessed_status", ws, FIX_PREPROCESS)
    model = model_items(ws)
    model_sha = model[0].data.get("sha256") if model and model[0].ok else None
    backends = backend_items()
    sections = (
        Section("dataset", dataset),
        Section("preprocessed", pre),
        Section("model", model),
        Section("calibration", calibration_items(ws, model_sha, backends)),
        Section("engines", engine_items(ws)),
        Section("backends", backends),
        Section("runs", run_items(ws)),
    )
    return StatusReport(paths, sections)


def _label(item: ItemStatus) -> str:
    return f"{item.group}/{item.name}" if item.group else item.name


def _table_rows(section: Section, max_items: int) -> list[tuple[str, str, str, str, str]]:
    """Rows for one section; a long section (63 cases) is summarised per group plus its non-ok items."""
    items = section.items
    if len(items) <= max_items:
        return [(section.name, _label(i), i.state, i.detail, "" if i.ok else i.fix) for i in items]
    rows: list[tuple[str, str, str, str, str]] = []
    groups: dict[str, list[ItemStatus]] = {}
    for i in items:
        groups.setdefault(i.group or section.name, []).append(i)
    section_fix = {"dataset": FIX_DATA, "preprocessed": FIX_PREPROCESS}.get(section.name, "")
    bad: list[ItemStatus] = []
    for group, members in groups.items():
        n_ok = sum(m.ok for m in members)
        worst = BROKEN if any(m.state == BROKEN for m in members) else MISSING
        state = OK if n_ok == len(members) else worst
        fix = section_fix or next((m.fix for m in members if not m.ok and m.fix), "")
        rows.append((section.name, group, state, f"{n_ok}/{len(members)} ok", "" if state == OK else fix))
        # list single items only where they tell something the summary does not
        bad.extend(m for m in members if m.state == BROKEN or (m.state != OK and n_ok > 0))
    for i in bad[:max_items]:
        rows.append((section.name, _label(i), i.state, i.detail, i.fix))
    if len(bad) > max_items:
        rows.append((section.name, "...", "", f"{len(bad) - max_items} more not ok (see --json)", ""))
    return rows


def render_table(report: StatusReport, max_items: int = 12) -> str:
    """Plain-text table for `unet3d status` (no colour: stdout must not depend on the terminal)."""
    rows = [r for s in report.sections for r in _table_rows(s, max_items)]
    head = ("Section", "Item", "State", "Detail", "Fix")
    widths = [max(len(head[c]), *(len(r[c]) for r in rows)) for c in range(4)]

    def fmt(r: tuple[str, ...]) -> str:
        cells = [r[c].ljust(widths[c]) for c in range(4)]
        return (" | ".join(cells) + (f" | {r[4]}" if r[4] else "")).rstrip()

    lines = [f"Workspace: {report.paths.get('root', '')}", fmt(head), "-+-".join("-" * w for w in widths)]
    lines.extend(fmt(r) for r in rows)
    return "\n".join(lines) + "\n"
