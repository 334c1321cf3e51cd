"""console.textual_compat: the console's patches of Textual and its private-attribute uses apply only to
the Textual they were read from; on any other version (or when a patched target changed shape) they
are refused, and the refusal is said in the log, in a notification and in Help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from console import textual_compat
from console.app import UnetConsole
from console.fake import FakeJobs
from core import config as core_config
from core.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


def _fresh(snippet: str) -> dict:
    """Run ``snippet`` in a fresh interpreter (the patches are process-wide and permanent) and return
    the JSON it prints last."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=120
    )
    assert r.returncode == 0, r.stderr
    return {**json.loads(r.stdout.splitlines()[-1]), "stderr": r.stderr}


PROBE = """
import json, logging
from console import textual_compat as tc
{setup}
from textual.cache import LRUCache
from textual.strip import Strip
before = (Strip.divide, Strip.crop_extend, Strip.__init__, LRUCache.clear)
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
st = tc.apply()
after = (Strip.divide, Strip.crop_extend, Strip.__init__, LRUCache.clear)
print(json.dumps({{
    "ok": st.ok, "supported": st.supported, "applied": st.applied, "refused": st.refused,
    "summary": st.summary(), "changed": [a is not b for a, b in zip(before, after)],
    "accessors": [tc.compositor_size(object()), dict(tc.screen_stacks(object())), tc.clear_geometry_caches()],
}}))
"""


def test_the_pinned_version_is_the_one_the_uses_were_read_from_and_all_patches_apply() -> None:
    pin = re.search(r'"textual==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pin is not None and pin.group(1) == textual_compat.TEXTUAL_VERSION
    assert textual_compat.installed_version() == textual_compat.TEXTUAL_VERSION
    out = _fresh(PROBE.format(setup=""))
    assert out["ok"] and out["supported"] and out["refused"] == {}
    assert out["applied"] == list(textual_compat.PATCHES)
    assert out["changed"] == [True, True, True, True]
    assert out["summary"] == f"Textual {textual_compat.TEXTUAL_VERSION}: 3 responsiveness patches applied"
    assert "WARNING" not in out["stderr"]


def test_another_version_is_refused_loudly_and_nothing_is_patched() -> None:
    out = _fresh(PROBE.format(setup='tc.installed_version = lambda: "9.0.0"'))
    assert not out["ok"] and not out["supported"] and out["applied"] == []
    assert out["refused"] == dict.fromkeys(textual_compat.PATCHES, "Textual 9.0.0 is not 8.2.8")
    assert out["changed"] == [False, False, False, False]  # Strip and LRUCache are Textual's own
    assert out["accessors"] == [None, {}, 0]  # private attributes are neither read nor written
    assert out["summary"].startswith("Textual 9.0.0 is not 8.2.8, the version the console's responsiveness")
    assert f"WARNING unet3d.console: {out['summary']}" in out["stderr"]


def test_a_patch_whose_target_changed_shape_is_refused_on_the_pinned_version() -> None:
    out = _fresh(PROBE.format(setup='tc._STRIP_INIT_NAMES = ("list", "_segments")'))
    assert not out["ok"] and out["supported"]
    assert out["refused"] == {"strip-lazy-caches": "Strip.__init__ is not the one this patch replaces"}
    assert out["applied"] == ["strip-no-self-cache", "lru-unlink-on-clear"]
    assert out["changed"] == [True, True, False, True]
    assert "strip-lazy-caches: Strip.__init__ is not the one this patch replaces" in out["summary"]
    assert "WARNING unet3d.console: Textual 8.2.8: responsiveness patches refused" in out["stderr"]


async def test_the_console_says_so_in_its_log_a_notification_and_help(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, the patches of earlier tests stay applied; what matters here is what the operator
    is told, and that the screens work on Textual's own behaviour (every accessor off)."""
    monkeypatch.setattr(core_config, "SEARCH_DIRS_OVERRIDE", [tmp_path / "no-config"])
    monkeypatch.setattr(textual_compat, "installed_version", lambda: "9.0.0")
    monkeypatch.setattr(textual_compat, "_supported", None)
    monkeypatch.setattr(textual_compat, "_state", None)
    app = UnetConsole(Workspace.resolve(tmp_path / "ws", env={}), jobs=FakeJobs(), status_interval=0)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        summary = textual_compat.state().summary()
        assert summary.startswith("Textual 9.0.0 is not 8.2.8")
        assert ("warning", summary) in [(level, text) for _n, level, text in app.logs]
        assert [n.message for n in app._notifications] == [summary]
        for key in ("2", "3", "4", "5", "1"):  # every mode screen, then the dashboard again
            await pilot.press(key)
            await pilot.pause()
        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        assert app.drop_hidden_render_state() == 0  # off: Textual keeps them, as it does by itself
        app.action_help()
        await pilot.pause()
        assert f"## Textual\n\n{summary}" in app.screen.text  # type: ignore[attr-defined]
