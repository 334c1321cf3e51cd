"""The shipped demo model and `unet3d demo` (workspace set-up fast; the full run is @slow)."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from core import demo
from core.errors import UsageError
from core.workspace import Workspace


def test_the_demo_model_ships_with_the_code() -> None:
    """The embedded demo needs these two files; a checkout or install without them fails here and in
    every test below (none skips for want of them)."""
    assert demo.DEMO_MODEL.is_file(), demo.DEMO_MODEL
    assert demo.DEMO_MODEL_DICE.is_file(), demo.DEMO_MODEL_DICE


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.resolve(tmp_path / "demo", env={})


def test_demo_model_has_the_mlperf_topology_and_official_io() -> None:
    import onnx

    from core.model import load_model

    info = load_model(demo.DEMO_MODEL)
    assert info.opset == 12
    assert [(t.name, tuple(t.shape)) for t in info.inputs] == [("input", ("batch_size", 1, 128, 128, 128))]
    assert [(t.name, tuple(t.shape)) for t in info.outputs] == [("output", ("batch_size", 3, 128, 128, 128))]
    m = onnx.load(str(demo.DEMO_MODEL))
    ops = Counter(n.op_type for n in m.graph.node)
    # 22 conv blocks (Conv, InstanceNorm, Relu) + the 1x1x1 output conv; 5 ConvTranspose + Concat
    assert (ops["Conv"], ops["InstanceNormalization"], ops["Relu"]) == (23, 22, 22)
    assert (ops["ConvTranspose"], ops["Concat"]) == (5, 5)
    names = [n.name for n in m.graph.node]
    assert names[0] == "Conv_0" and names[33] == "Conv_33"
    assert [names[i] for i in (36, 44, 52, 60, 68)] == [
        "ConvTranspose_" + str(i) for i in (36, 44, 52, 60, 68)
    ]
    assert demo.DEMO_MODEL.stat().st_size < 4_000_000


def test_demo_model_json_matches_the_file() -> None:
    info = demo.demo_model_info()
    assert info["model"]["sha256"] == hashlib.sha256(demo.DEMO_MODEL.read_bytes()).hexdigest()
    assert 0.0 < info["mean"] <= 1.0
    assert info["mean"] == pytest.approx((info["kidney"] + info["tumor"]) / 2, abs=1e-6)
    cases = info["cases"]
    assert [c["case"] for c in cases] == [f"case_{i:05d}" for i in range(demo.N_INFERENCE)]
    assert info["kidney"] == pytest.approx(sum(c["kidney"] for c in cases) / len(cases), abs=1e-5)


def test_install_copies_model_and_reference_and_refuses_another_model(ws: Workspace) -> None:
    from core.accuracy import fp32_reference_for

    path = demo.install_demo_model(ws)
    assert path == ws.model_path and path.read_bytes() == demo.DEMO_MODEL.read_bytes()
    ref, source = fp32_reference_for(path)
    assert ref == demo.demo_model_info()["mean"] and source.endswith("3dUNetKiTS19.fp32_dice.json")
    assert demo.install_demo_model(ws) == path  # idempotent
    path.write_bytes(b"someone else's model")
    with pytest.raises(UsageError, match="holds another model"):
        demo.install_demo_model(ws)


def test_demo_refuses_a_data_dir_with_real_cases(ws: Workspace) -> None:
    (ws.data_dir / "case_00000").mkdir(parents=True)
    with pytest.raises(UsageError, match="non-synthetic cases"):
        demo._check_data_dir(ws)


def test_cli_demo_defaults_to_its_own_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.cli.commands import DEMO_WORKSPACE, workspace_of

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", "/somewhere/else")  # a developer's environment must not leak in
    ws = workspace_of(argparse.Namespace(), default_root=DEMO_WORKSPACE)
    assert ws.root == tmp_path / "unet3d-demo"
    assert ws.data_dir == tmp_path / "unet3d-demo" / "build" / "data" / "KiTS19"
    ws = workspace_of(argparse.Namespace(workspace=str(tmp_path / "w")), default_root=DEMO_WORKSPACE)
    assert ws.root == tmp_path / "w"


@pytest.mark.slow
def test_demo_end_to_end_reproduces_the_shipped_dice(ws: Workspace, capsys: pytest.CaptureFixture) -> None:
    """The demo's AccuracyOnly run scores exactly what the training tool measured: same phantoms, same
    preprocessing, same sliding window, same DICE."""
    from core.jobs import CancelToken

    result = demo.run_demo(ws, cancel=CancelToken(), performance=True)
    info = demo.demo_model_info()
    acc, perf = result.rows
    assert acc["test_mode"] == "AccuracyOnly" and acc["accuracy"] == pytest.approx(info["mean"], abs=1e-3)
    assert acc["accuracy_passed"] is True
    assert perf["test_mode"] == "PerformanceOnly" and perf["valid"] is True and perf["samples_per_s"] > 0
    assert result.ok
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["cases"] == [f"case_{i:05d}" for i in range(demo.N_INFERENCE)]
    text = demo.render_demo(result)
    assert text.splitlines()[0].split("|")[0].strip() == "Model"

    # the accuracy script and the history over the demo's logs, through the CLI
    from core import cli

    log = Path(acc["log_dir"]) / "mlperf_log_accuracy.json"
    assert cli.main(["--workspace", str(ws.root), "accuracy", "--log_file", str(log)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"Accuracy: mean = {acc['accuracy']:.5f}" + out[-1][len("Accuracy: mean = 0.00000") :]
    assert out[-1].startswith("Accuracy: mean = ") and ", kidney = " in out[-1] and ", tumor = " in out[-1]
    assert [ln.split("|")[0].strip() for ln in out[2:-1]] == doc["cases"]
    assert cli.main(["--workspace", str(ws.root), "history", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert sorted(r["test_mode"] for r in runs) == ["AccuracyOnly", "PerformanceOnly"]
    # the demo's runs pass (its model's own target, VALID) and are labelled: never compliant
    verdicts = {r["test_mode"]: r["compliance"] for r in runs}
    assert verdicts["PerformanceOnly"]["label"] == "shortened" == perf["compliance"]["label"]
    short = f"shortened: min_duration {demo.PERF_SECONDS:g} s < 600 s"
    assert verdicts["PerformanceOnly"]["reasons"][0] == short
    assert verdicts["AccuracyOnly"]["label"] == "not compliant" == acc["compliance"]["label"]
    assert "synthetic data (demo phantoms), not KiTS19" in verdicts["AccuracyOnly"]["reasons"]

    # the fp32 ort run's labels are the MLCommons reference sliding window's, voxel for voxel (the
    # transcription gets the same ONNX Runtime logits: one window per call, as the demo's run)
    import numpy as np

    from core import preprocess
    from core.backends.ort import OrtBackend
    from tests import reference_sliding_window as ref_sw

    index = preprocess.load_index(ws, "inference")
    cases = index["file_list"]
    got = ref_sw.predictions(Path(acc["log_dir"]), cases, {c: tuple(index["image_shape"][c]) for c in cases})
    do_infer = ref_sw.do_infer_of(OrtBackend().load(ws.model_path, batch_size=1))

    def reference(case: str) -> np.ndarray:
        return ref_sw.infer_single_query(preprocess.load_image(ws, "inference", case), do_infer)[0, 0]

    differing = {c: int((got[c] != reference(c)).sum()) for c in cases}
    assert differing == dict.fromkeys(cases, 0)
    shutil.rmtree(ws.root)


def test_demo_says_how_to_call_the_installed_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`make install` leaves .venv/bin off PATH: the demo's last lines name .venv/bin/unet3d and how to
    activate, not a bare `unet3d` that the shell cannot find (issue #12 item 15)."""
    import sys

    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "unet3d", "unet3d-console", "activate"):
        (bin_dir / name).write_text("")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    result = demo.DemoResult(tmp_path / "unet3d-demo", ["case_00000"], 0.45423, seconds={"total": 1.0})
    tail = demo.render_demo(result).splitlines()[-3:]
    assert tail == [
        f"next: .venv/bin/unet3d status --workspace={tmp_path / 'unet3d-demo'}",
        f"      .venv/bin/unet3d-console --workspace={tmp_path / 'unet3d-demo'}   (the console)",
        "      (or `source .venv/bin/activate` first, then `unet3d ...`)",
    ]
    monkeypatch.setenv("PATH", str(bin_dir))  # activated: the plain names work
    assert demo.how_to_call() == ("unet3d", "unet3d-console", "")
    (bin_dir / "unet3d").unlink()  # a checkout without the console scripts
    assert demo.how_to_call() == (".venv/bin/python -m core", ".venv/bin/python -m console.app", "")
