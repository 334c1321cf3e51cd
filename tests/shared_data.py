"""Real-geometry phantom cases for tests: KiTS19 label volumes from the shared folder with CT-like
imaging synthesized by the shared tool (``../shared/tools/kits19_phantom.py``).

``phantom_case_dir("case_00041")`` returns a folder holding ``imaging.nii.gz`` + ``segmentation.nii.gz``.
It reuses, in order: the team's scratch copy (``.dev/data/kits19_phantoms/<case>``), this repo's
test cache (``build/test-cache/kits19_phantoms/<case>``), and only then runs the shared tool into the
test cache (about 20 s per case; later runs reuse it). Tests skip when the shared folder is absent.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TOOL = SHARED / "tools" / "kits19_phantom.py"
MASKS = SHARED / "kits19"
TEAM_CACHE = REPO / ".dev" / "data" / "kits19_phantoms"
TEST_CACHE = REPO / "build" / "test-cache" / "kits19_phantoms"

# the smallest cases of each set (spec section 3): final (D, H, W) after preprocessing
SMALL_INFERENCE = {
    "case_00160": (128, 192, 320),
    "case_00041": (128, 320, 320),
    "case_00087": (128, 320, 320),
    "case_00112": (128, 320, 320),
    "case_00138": (128, 320, 320),
    "case_00024": (256, 256, 256),
    "case_00187": (256, 256, 256),
    "case_00061": (128, 448, 448),
}
SMALL_CALIBRATION = {
    "case_00130": (128, 256, 256),
    "case_00050": (128, 320, 320),
    "case_00090": (128, 320, 320),
    "case_00148": (128, 384, 384),
}


def _complete(d: Path) -> bool:
    return (d / "imaging.nii.gz").is_file() and (d / "segmentation.nii.gz").is_file()


def shared_available() -> bool:
    return TOOL.is_file() and MASKS.is_dir()


def phantom_case_dir(case: str) -> Path:
    """Folder with the phantom imaging and the real mask of ``case`` (generated once, then cached)."""
    if not shared_available():
        pytest.skip("the shared folder (KiTS19 masks and phantom tool) is not present")
    if not (MASKS / case / "segmentation.nii.gz").is_file():
        pytest.skip(f"no shared mask for {case}")
    for base in (TEAM_CACHE, TEST_CACHE):
        if _complete(base / case):
            return base / case
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TEST_CACHE / ".lock", "w") as lock:  # parallel test workers generate a case once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(TEST_CACHE / case):
            cmd = [sys.executable, str(TOOL), "--masks", str(MASKS), "--out", str(TEST_CACHE)]
            subprocess.run([*cmd, "--cases", case, "--jobs", "1"], check=True, capture_output=True)
    return TEST_CACHE / case
