"""Case lists (official, or overridden by DATA_DIR json files), case_00400, and raw-dataset status.

The official lists are the reference's ``meta/inference_cases.json`` (43 names, case_00400 last) and
``meta/calibration_cases.json`` (20 names, file order). A DATA_DIR may carry its own
``inference_cases.json`` / ``calibration_cases.json`` (the demo dataset does); they replace the official
list of that set. case_00400 is not a KiTS19 case: the benchmark defines it as a copy of case_00185.
"""

from __future__ import annotations

import filecmp
import json
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import BadInputError, UnetError
from core.fsio import copy_atomic
from core.nifti import IMAGING, SEGMENTATION, header_info
from core.status import ItemStatus  # the one status row type (core.status imports nothing heavy)
from core.workspace import Workspace

DATA = Path(__file__).resolve().parent / "data"
SETS = ("inference", "calibration")
CASE_00400 = "case_00400"
CASE_00400_SOURCE = "case_00185"
CASE_NAME = re.compile(r"^case_\d{5}$")


@dataclass(frozen=True)
class CaseLists:
    inference: list[str]
    calibration: list[str]
    source: str  # "official", or which DATA_DIR files replaced the official lists

    def for_set(self, name: str) -> list[str]:
        if name not in SETS:
            raise BadInputError(f"unknown case set {name!r} (expected one of {', '.join(SETS)})")
        return self.inference if name == "inference" else self.calibration


def read_case_list(path: str | Path) -> list[str]:
    """Read a JSON list of case names; any defect is a BadInputError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadInputError(f"malformed case list ({type(err).__name__}: {err})", path) from err
    if not isinstance(data, list):
        raise BadInputError("case list must be a JSON list of case names", path)
    bad = [c for c in data if not isinstance(c, str) or not CASE_NAME.match(c)]
    if bad:
        raise BadInputError(f"invalid case name {bad[0]!r} (expected case_XXXXX)", path)
    if len(set(data)) != len(data):
        dup = next(c for c in data if data.count(c) > 1)
        raise BadInputError(f"case {dup} is listed twice", path)
    return list(data)


OFFICIAL_INFERENCE: list[str] = read_case_list(DATA / "inference_cases.json")
OFFICIAL_CALIBRATION: list[str] = read_case_list(DATA / "calibration_cases.json")


def case_lists(ws: Workspace) -> CaseLists:
    """The lists in use: DATA_DIR/{inference,calibration}_cases.json replace the official ones."""
    lists = {"inference": OFFICIAL_INFERENCE, "calibration": OFFICIAL_CALIBRATION}
    custom = []
    for name in SETS:
        override = ws.data_dir / f"{name}_cases.json"
        if override.exists():
            lists[name] = read_case_list(override)
            custom.append(override.name)
    source = "official" if not custom else f"DATA_DIR ({', '.join(custom)})"
    return CaseLists(
        inference=list(lists["inference"]), calibration=list(lists["calibration"]), source=source
    )


def _complete(case_dir: Path) -> bool:
    return (case_dir / IMAGING).is_file() and (case_dir / SEGMENTATION).is_file()


def is_copy_of_source(data_dir: Path) -> bool:
    """True when case_00400 holds the same two files as case_00185 (stat first, bytes if needed)."""
    a, b = data_dir / CASE_00400, data_dir / CASE_00400_SOURCE
    return (
        _complete(a)
        and _complete(b)
        and all(filecmp.cmp(a / f, b / f, shallow=True) for f in (IMAGING, SEGMENTATION))
    )


def ensure_case_00400(ws: Workspace) -> str:
    """Create case_00400 as a copy of case_00185, as the benchmark's Makefile does.

    Returns "not-needed" (not in the inference list), "present", "copied" or "no-source"
    (case_00185 is not there yet; nothing is written).
    """
    if CASE_00400 not in case_lists(ws).inference:
        return "not-needed"
    dst, src = ws.data_dir / CASE_00400, ws.data_dir / CASE_00400_SOURCE
    if _complete(dst):
        return "present"
    if not _complete(src):
        return "no-source"
    for f in (SEGMENTATION, IMAGING):  # imaging last: a folder is "complete" only when both exist
        copy_atomic(src / f, dst / f, keep_times=True)  # same mtime: the identity check is a stat compare
    return "copied"


def _case_status(data_dir: Path, case: str, group: str) -> ItemStatus:
    case_dir = data_dir / case
    fix_missing = f"put {case}/{IMAGING} and {SEGMENTATION} under {data_dir} (unet3d download)"
    if case == CASE_00400 and not _complete(case_dir):
        if _complete(data_dir / CASE_00400_SOURCE):
            return ItemStatus(
                case,
                "missing",
                "copy of case_00185 not made yet",
                "unet3d download (copies case_00185)",
                group,
            )
        return ItemStatus(case, "missing", "needs case_00185 (copied)", fix_missing, group)
    missing = [f for f in (IMAGING, SEGMENTATION) if not (case_dir / f).is_file()]
    if missing:
        detail = "folder missing" if not case_dir.is_dir() else f"{' and '.join(missing)} missing"
        return ItemStatus(case, "missing", detail, fix_missing, group)
    try:
        shape, spacing = header_info(case_dir / IMAGING)
        lshape, _ = header_info(case_dir / SEGMENTATION)
        if lshape != shape:
            raise BadInputError(f"label shape {lshape} differs from image shape {shape}", case_dir)
    except UnetError as err:
        return ItemStatus(case, "broken", str(err), f"replace the files of {case} (unet3d download)", group)
    detail = f"{shape[0]}x{shape[1]}x{shape[2]} @ {'x'.join(f'{s:.4g}' for s in spacing)} mm"
    if case == CASE_00400:
        if not is_copy_of_source(data_dir):
            return ItemStatus(
                case, "broken", "differs from case_00185", "delete case_00400 and run unet3d download", group
            )
        detail += ", present by copy of case_00185"
    return ItemStatus(case, "ok", detail, "", group, {"shape": list(shape), "spacing": list(spacing)})


def raw_status(ws: Workspace) -> list[ItemStatus]:
    """Per-case state of the raw dataset for both sets (header-only checks: fast enough for a UI).

    A malformed DATA_DIR case list is reported as one broken item instead of raising.
    """
    try:
        lists = case_lists(ws)
    except BadInputError as err:
        return [ItemStatus("case lists", "broken", str(err), "fix or delete the JSON file", "")]
    return [_case_status(ws.data_dir, c, group) for group in SETS for c in lists.for_set(group)]
