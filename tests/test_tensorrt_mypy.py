"""mypy over the TensorRT backend and plugins against tensorrt-stubs 10.13.

The stubs wheel (tensorrt-stubs 10.13.0.35.1) installs bare ``.pyi`` files without a ``py.typed``
marker, and a few of its signatures are not valid Python (a parameter named ``in``; a parameter
without default after defaulted ones). This module copies the installed stubs to a temporary folder,
repairs those lines, and runs mypy with that folder first on MYPYPATH. Nothing is vendored.

Run it directly (what CI should do, after ``pip install --no-deps tensorrt-stubs==10.13.0.35.1``):

    .venv/bin/python -m tests.test_tensorrt_mypy

or through pytest (``tests/test_tensorrt_mypy.py``, marked slow, skipped without the stubs).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("core/backends/tensorrt.py", "plugins/tensorrt_plugins.py")

_FIXES = (
    (re.compile(r"\bin: list\["), "in_: list["),  # `in` is a keyword
    (re.compile(r", channel_axis: int\)"), ", channel_axis: int = ...)"),  # non-default after default
)


def repaired_stubs(dest: Path) -> Path:
    """Copy the installed tensorrt-stubs .pyi files under ``dest``, repaired; returns ``dest``."""
    files = importlib.metadata.files("tensorrt-stubs") or []
    n = 0
    for f in files:
        if f.suffix != ".pyi":
            continue
        text = Path(str(f.locate())).read_text(encoding="utf-8")
        for pattern, repl in _FIXES:
            text = pattern.sub(repl, text)
        out = dest / str(f)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        n += 1
    if n == 0:
        raise FileNotFoundError("tensorrt-stubs has no .pyi files")
    return dest


def run_mypy(extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="trt-stubs-") as tmp:
        stubs = repaired_stubs(Path(tmp))
        env = {**os.environ, "MYPYPATH": str(stubs)}
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--no-incremental", *extra, *TARGETS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )


def _have_stubs() -> bool:
    try:
        importlib.metadata.version("tensorrt-stubs")
        importlib.metadata.version("mypy")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _have_stubs(), reason="tensorrt-stubs or mypy not installed")
def test_mypy_clean_against_tensorrt_stubs() -> None:
    res = run_mypy()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success: no issues found in 2 source files" in res.stdout


if __name__ == "__main__":
    r = run_mypy(tuple(sys.argv[1:]))
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    sys.exit(r.returncode)
