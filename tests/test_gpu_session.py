"""bench/gpu_session.py, the one-call GPU script, run as the lead runs it but on a machine without CUDA:
every section fails in its own child process and is noted, the parent still ends well inside its
budget with exit 0 and writes results.json and its log (a failing kernel cannot waste the GPU call).
The engines it times are the torch backend's own (tests/test_torch_backend.py builds them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_without_cuda_every_section_is_noted_and_the_budget_kept(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    t = time.time()
    p = subprocess.run(
        [sys.executable, "bench/gpu_session.py", "--budget", "60", "--out", str(tmp_path), "--no-precompile"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert time.time() - t < 60.0
    res = json.loads((tmp_path / "results.json").read_text())
    for section in ("gluon", "layers", "net"):
        notes = res[section]["notes"]
        assert notes, (section, res[section])
        assert not res[section].get("rows"), (section, res[section])  # nothing timed without a GPU
    assert (tmp_path / "gpu_session.log").read_text().rstrip().endswith(p.stdout.rstrip().splitlines()[-1])
