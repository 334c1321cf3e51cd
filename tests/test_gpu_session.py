"""bench/gpu_session.py, the one-call GPU script, on CPU: the parent keeps its time budget when a section
hangs or fails (children killed, notes kept, later sections still run), and the engine helpers it uses
build the torch backend's engines around the fused executor (int8 through the fallback while the
backend refuses it)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from bench import gpu_session as gs

FAKE = {
    "gluon": "import time; time.sleep(60)",  # a hung kernel
    "layers": "import json, sys, pathlib; o = pathlib.Path(sys.argv[1]); "
    "row = {'layer': 'x', 'gluon_ok_flag': '--gluon-ok' in sys.argv, 'ms': 1.5}; "
    "(o / 'layers.json').write_text(json.dumps({'rows': [row], 'notes': []}))",
    "net": "raise SystemExit(3)",
    "pre_fp8": "import time; time.sleep(60)",
    "pre_int8": "pass",
}


def test_parent_keeps_its_budget_when_sections_hang_or_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gs, "_cmd", lambda sec, deadline, out, ok: [sys.executable, "-c", FAKE[sec], str(out)]
                        + (["--gluon-ok"] if ok[0] else []))  # fmt: skip
    monkeypatch.setattr(gs, "CAPS", {"gluon": 3.0, "layers": 10.0, "net": 1e9})
    monkeypatch.setattr(gs, "MIN_START", {"gluon": 1.0, "layers": 1.0, "net": 1.0})
    monkeypatch.setattr(gs, "RESERVE", 1.0)
    t = time.time()
    assert gs.parent(14.0, tmp_path, ["gluon", "layers", "net"], precompile=True) == 0
    assert time.time() - t < 14.0
    res = json.loads((tmp_path / "results.json").read_text())
    assert any("KILLED" in n for n in res["gluon"]["notes"])
    assert res["layers"]["rows"] == [{"layer": "x", "gluon_ok_flag": False, "ms": 1.5}]  # gluon did not pass
    assert any(n.startswith("exit 3") for n in res["net"]["notes"])
    assert "stopped" in res["pre_fp8"]["notes"][0] and res["pre_int8"]["notes"] == ["exit 0"]
    out = capsys.readouterr().out
    assert out.index("#################### summary") < out.rindex(
        "| x | False | 1.5 |"
    )  # the table comes last


def test_a_section_is_skipped_rather_than_overrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        gs, "_cmd", lambda sec, deadline, out, ok: [sys.executable, "-c", FAKE[sec], str(out)]
    )
    monkeypatch.setattr(gs, "MIN_START", {"gluon": 1.0, "layers": 1.0, "net": 100.0})
    monkeypatch.setattr(gs, "CAPS", {"gluon": 2.0, "layers": 10.0, "net": 1e9})
    gs.parent(20.0, tmp_path, ["gluon", "net"], precompile=False)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["net"]["notes"][0].startswith("skipped:")


def test_engine_helpers_build_the_backends_fused_engines_on_cpu(tmp_path: Path) -> None:
    """fp8 through make_engine(executor="fused"); int8, which the backend's fused branch does not take
    yet, built the same way here with amax/127 scales; a recaptured engine shares the window function."""
    import torch

    from bench.common import fused_torch_engine, make_unet3d_onnx, recapture_engine, torch_backend_api
    from plugins import ops

    api = torch_backend_api()
    assert set(api) == {"make_engine", "TorchEngine", "convert", "load_onnx", "Kernels", "gemm_inputs"}
    model = make_unet3d_onnx((32, 32, 32, 32, 32), seed=0, spatial=None)
    names = api["gemm_inputs"](model)
    amax = {t: 1.0 + i for i, t in enumerate(names)} | {"input": 2.63979}
    e8, path8, note8 = fused_torch_engine(api, model, "fp8", 2, torch.device("cpu"), amax)
    assert path8.startswith("make_engine") and not note8 and e8.precision == "fp8"
    ei, pathi, notei = fused_torch_engine(api, model, "int8", 2, torch.device("cpu"), amax)
    assert e8._fn is not ei._fn and ei.precision == "int8" and ei.in_dtype == torch.int8
    conv = ei._fn.layers.encoder[2]
    assert conv.dtype == ops.INT8 and conv.in_scale == pytest.approx(amax[names[conv.index]] / 127)
    if notei:  # the backend refused int8: the engine was built here, and says so
        assert "refused" in notei and pathi.startswith("TorchEngine(fn=FusedUNet3D)")
    again = recapture_engine(api, ei)
    assert again is not ei and again._fn is ei._fn and again.batch_size == 2


@pytest.mark.slow
def test_children_run_their_code_on_cpu_at_tiny_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gluon and layers sections' own code, on CPU under Triton's interpreter at tiny sizes: every
    Triton check runs and passes (int8 bit for bit), the Gluon calls fail cleanly (no CUDA) and are
    noted, nothing raises out of a section."""
    import os

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from plugins import ops

    if not ops.interpreter_usable():
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set (run this file on its own)")
    monkeypatch.setattr(gs, "DEV", "cpu")
    monkeypatch.setattr(gs, "CHECK_SHAPE", (1, 2, 2, 64))
    monkeypatch.setattr(gs, "THIN", (("tiny 32->32", 8, 32, 32),))
    monkeypatch.setattr(gs, "_bench_ms", lambda fn, rep_ms=0: (fn(), 1.0)[1])
    c = gs.Child("gluon", time.time() + 600, tmp_path, True)
    gs.child_gluon(c)
    assert not c.res["gluon_ok"] and len(c.res["notes"]) == 5  # each Gluon case noted, none raised
    assert all("CUDA" in n for n in c.res["notes"])  # ... at the Gluon launch, after the Triton reference
    c = gs.Child("layers", time.time() + 600, tmp_path, False)
    gs.child_layers(c)
    rows = c.res["rows"]
    assert rows[0]["case"] == "triton int8" and rows[0]["ok"], rows[0]
    assert [r["kernel"] for r in rows[1:]] == ["triton fp8", "triton int8"]
    assert json.loads((tmp_path / "layers.json").read_text())["rows"] == rows
    assert os.environ[ops.ENV_GLUON] == "0"
