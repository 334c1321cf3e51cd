"""core/ is the headless engine: it never imports Textual, rich, console/ or screens/.

Checked two ways: dynamically (a fresh interpreter imports core and every core submodule, then looks
at sys.modules) and statically (an AST scan of every import statement under core/, including the
ones inside functions, which the dynamic check cannot reach)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "core"
FORBIDDEN = ("textual", "rich", "console", "screens")
# optional libraries a core module may need at import time; their absence is not a hygiene failure
OPTIONAL = ("tensorrt", "cuda", "pycuda", "triton")

_PROBE = r"""
import importlib, json, pkgutil, sys
import core
failed = {}
names = sorted(m.name for m in pkgutil.walk_packages(core.__path__, "core."))
for name in names:
    if name == "core.__main__":
        continue  # runs the CLI when imported
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "rich", "console", "screens"))
print(json.dumps({"modules": names, "failed": failed, "forbidden": loaded}))
"""


def test_importing_every_core_module_loads_no_ui_library() -> None:
    r = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert "core.cli" in doc["modules"] and "core.status" in doc["modules"]
    assert doc["forbidden"] == [], f"core pulled in {doc['forbidden']}"
    unexpected = {name: err for name, err in doc["failed"].items() if not any(lib in err for lib in OPTIONAL)}
    assert unexpected == {}, f"core modules failed to import: {unexpected}"


def _is_dynamic_import(node: ast.Call) -> bool:
    """importlib.import_module("x") / __import__("x") with a literal name."""
    name = getattr(node.func, "attr", getattr(node.func, "id", ""))
    first = node.args[0] if node.args else None
    literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
    return name in ("import_module", "__import__") and literal


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            found.append((node.lineno, node.args[0].value))  # type: ignore[attr-defined]
    return found


def test_no_core_source_imports_ui_packages() -> None:
    offenders = []
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        for line, module in _imports(path):
            if module.split(".")[0] in FORBIDDEN:
                offenders.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert offenders == []


def test_the_static_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text(
        "import os\n"
        "def f():\n"
        "    from rich.console import Console\n"
        "    import importlib\n"
        "    importlib.import_module('textual.app')\n"
        "from console import app\n"
    )
    mods = sorted(m for _line, m in _imports(sample))
    assert mods == ["console", "importlib", "os", "rich.console", "textual.app"]
