"""Ctrl-C during a long job: the job stops at its next check, the CLI exits 130 with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_preprocessing_exits_130(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "PREPROCESSED_DATA_DIR", "LOG_DIR")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "demo", "--workspace", str(tmp_path / "w")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so the signal below reaches it as Ctrl-C does
    )
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until the job is inside the preprocessing phase
        seen.append(line)
        if line.startswith("== preprocessing") or time.monotonic() > deadline:
            break
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the CLI and its worker processes
    try:
        _out, rest = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    err = "".join(seen) + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and ("cancel" in errors[0] or "interrupt" in errors[0]), err
    # nothing half-written: every preprocessed file present is complete (no temporaries left)
    leftovers = [p for p in (tmp_path / "w").rglob("*") if p.is_file() and ".tmp" in p.name]
    assert leftovers == []
