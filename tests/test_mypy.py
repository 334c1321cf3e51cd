"""mypy over core/ and plugins/ in one run, with pyproject's [tool.mypy] settings (every def annotated).

TensorRT cannot be installed here, so its backend and plugins are checked against tensorrt-stubs
10.13.0.35.1. That wheel installs bare ``.pyi`` files without a ``py.typed`` marker, and a few of its
signatures are not valid Python (a parameter named ``in``; a parameter without default after defaulted
ones). This module copies the installed stubs to a temporary folder, repairs those lines, and runs mypy
with that folder first on MYPYPATH. Nothing is vendored.

``make test`` runs it directly, before pytest (the exit status is mypy's):

    .venv/bin/python -m tests.test_mypy

Extra arguments go to mypy. The run is incremental (.mypy_cache), so the pytest test below, run right
after by ``make test``, finds the cache warm.
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
STUBS = "tensorrt-stubs"

_FIXES = (
    (re.compile(r"\bin: list\["), "in_: list["),  # `in` is a keyword
    (re.compile(r", channel_axis: int\)"), ", channel_axis: int = ...)"),  # non-default after default
)


def repaired_stubs(dest: Path) -> Path:
    """Copy the installed tensorrt-stubs .pyi files under ``dest``, repaired; returns ``dest``."""
    try:
        files = importlib.metadata.files(STUBS) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{STUBS} is not installed (make install-dev installs it)") from None
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
        raise FileNotFoundError(f"{STUBS} has no .pyi files")
    return dest


def run_mypy(args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """mypy with the repaired stubs on MYPYPATH; without file arguments it checks pyproject's ``files``."""
    with tempfile.TemporaryDirectory(prefix="trt-stubs-") as tmp:
        stubs = repaired_stubs(Path(tmp))
        env = {**os.environ, "MYPYPATH": str(stubs)}
        return subprocess.run(
            [sys.executable, "-m", "mypy", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.mark.slow  # about 30 s with a cold cache, a second warm
def test_mypy_clean() -> None:
    res = run_mypy()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success: no issues found" in res.stdout


def test_untyped_def_in_core_fails(tmp_path: Path) -> None:
    """The settings that apply to core/ reject a def without annotations (checked on a shadow copy)."""
    target = "core/errors.py"
    shadow = tmp_path / "errors.py"
    source = (ROOT / target).read_text(encoding="utf-8")
    shadow.write_text(source + "\n\ndef added(x):\n    return x\n", encoding="utf-8")
    line = source.count("\n") + 3
    # its own cache: the shadowed module must not replace core.errors in the project's cache
    res = run_mypy(("--cache-dir", str(tmp_path / "cache"), "--shadow-file", target, str(shadow), target))
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{target}:{line}: error: Function is missing a type annotation  [no-untyped-def]" in res.stdout


if __name__ == "__main__":
    try:
        r = run_mypy(tuple(sys.argv[1:]))
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    sys.exit(r.returncode)
