"""Fault injection on preprocessing and its files: SIGKILL mid-way (the process, a pool worker),
damaged files after the fact, a full disk. Real `unet3d` subprocesses on core.synthetic demo cases."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import BadInputError
from core.workspace import Workspace
from tests.reliability import (
    clean_env,
    preprocessed_dataset,
    start_unet3d,
    tiny_model,
    tree_digest,
    unet3d,
    workspace,
)

pytestmark = pytest.mark.slow  # each test runs real preprocessing in subprocesses (10-60 s)

VOLATILE = ("seconds",)  # the only meta fields that may differ between two runs


def _meta_docs(pre: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(pre.rglob("meta/*.json")):
        doc = json.loads(p.read_text())
        for k in VOLATILE:
            doc.pop(k, None)
        out[str(p.relative_to(pre))] = doc
    return out


def _assert_same_as_uninterrupted(pre: Path) -> None:
    """Byte-identical data and indexes; identical meta except its timing field."""
    ref = preprocessed_dataset()
    assert tree_digest(pre, skip=("/meta/",)) == tree_digest(ref, skip=("/meta/",))
    assert _meta_docs(pre) == _meta_docs(ref)


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (forkserver, resource tracker, pool workers)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _finished_cases(pre: Path) -> set[str]:
    return {f"{p.parent.parent.name}/{p.stem}" for p in pre.rglob("meta/*.json")}


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_a_random_point_then_resume_is_byte_identical(tmp_path: Path, seed: int) -> None:
    ws = workspace(tmp_path / "ws", preprocessed=False)
    pre = ws.preprocessed_dir
    rng = random.Random(seed)
    delay = rng.uniform(1.0, 12.0)  # somewhere inside a ~15 s single-process preprocessing
    proc = start_unet3d("preprocess", "--jobs", "1", ws=ws.root)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = _finished_cases(pre) if pre.exists() else set()

    r = unet3d("preprocess", "--jobs", "1", "--json", ws=ws.root)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sorted(doc["skipped"]) == sorted(before)  # only unfinished cases were redone
    assert sorted(doc["processed"]) == sorted({"inference/case_00000", "inference/case_00001",
                                               "calibration/case_00002"} - before)  # fmt: skip
    assert not list(pre.rglob("*.tmp"))
    _assert_same_as_uninterrupted(pre)


def test_sigkill_of_a_pool_worker_fails_cleanly_and_resumes(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", preprocessed=False)
    proc = start_unet3d("preprocess", "--jobs", "2", ws=ws.root)
    victim = None
    t_end = time.monotonic() + 60
    while victim is None and time.monotonic() < t_end and proc.poll() is None:
        # pool workers are the forkserver's children: grandchildren of the job's process
        workers = [p for p in _descendants(proc.pid) if Path(f"/proc/{p}/stat").exists()]
        forkservers = [p for p in workers if b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()]
        grand = [p for p in workers if any(p in _descendants(f) for f in forkservers)]
        if grand:
            time.sleep(1.0)  # let it get into the middle of a case
            victim = grand[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.1)
    assert victim is not None, "no pool worker seen"
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 4, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "preprocessing case_" in lines[0] and "terminated abruptly" in lines[0]
    assert "Traceback" not in err
    r = unet3d("preprocess", "--jobs", "2", ws=ws.root)
    assert r.returncode == 0, r.stderr
    _assert_same_as_uninterrupted(ws.preprocessed_dir)


def test_sigkill_of_the_job_leaves_no_orphan_workers(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "ws", preprocessed=False)
    proc = start_unet3d("preprocess", "--jobs", "2", ws=ws.root)
    seen: set[int] = set()
    t_end = time.monotonic() + 60
    while len(seen) < 4 and time.monotonic() < t_end:  # tracker, forkserver, 2 workers
        seen |= _descendants(proc.pid)
        time.sleep(0.1)
    assert len(seen) >= 3, seen
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    t_end = time.monotonic() + 10
    while any(_alive(p) for p in seen) and time.monotonic() < t_end:
        time.sleep(0.1)
    assert not [p for p in seen if _alive(p)], "workers outlived their killed job"


def test_a_finished_looking_file_without_its_meta_is_redone(tmp_path: Path) -> None:
    """The state a kill between an array's rename and its meta's write leaves: never taken as done."""
    ws = workspace(tmp_path / "ws")
    pre = ws.preprocessed_dir
    (pre / "inference" / "meta" / "case_00001.json").unlink()
    (pre / "inference" / "fp32" / ".case_00001.npy.abc123.tmp").write_bytes(b"\x93NUMPY partial")
    st = json.loads(unet3d("status", "--json", ws=ws.root).stdout)
    sec = next(s for s in st["sections"] if s["name"] == "preprocessed")
    items = {(i["group"], i["name"]): i for i in sec["items"]}
    assert items[("inference", "case_00001")]["state"] == "missing"
    r = unet3d("preprocess", "--jobs", "1", "--json", ws=ws.root)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["processed"] == ["inference/case_00001"]
    assert not list(pre.rglob("*.tmp"))
    _assert_same_as_uninterrupted(pre)


# --------------------------------------------------------------------------- damaged after the fact


def _flip_byte(path: Path, offset: int) -> None:
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))
    assert path.stat().st_size == st.st_size


DAMAGES = {
    "flipped": lambda p: _flip_byte(p, p.stat().st_size // 2),
    "truncated": lambda p: os.truncate(p, p.stat().st_size // 3),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("kind", ["fp32", "labels"])
def test_damaged_preprocessed_file_is_named_by_status_and_refused_by_the_run(
    tmp_path: Path, damage: str, kind: str
) -> None:
    ws = workspace(tmp_path / "ws")
    tiny_model(ws.model_path, "ok")
    victim = ws.preprocessed_dir / "inference" / kind / "case_00001.npy"
    DAMAGES[damage](victim)

    st = unet3d("status", ws=ws.root)
    assert st.returncode == 0
    line = next(
        line
        for line in st.stdout.splitlines()
        if line.startswith("preprocessed") and "inference/case_00001" in line
    )
    assert "broken" in line and f"{kind}/case_00001.npy" in line, st.stdout

    mode = "AccuracyOnly" if kind == "labels" else "PerformanceOnly"
    r = unet3d("run", f"--test_mode={mode}", "--min_duration=0", "--min_query_count=2", ws=ws.root)
    assert r.returncode == 4, r.stderr
    assert "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(victim) in err[0] and ("sha256" in err[0] or "size" in err[0]), err
    hist = json.loads(unet3d("history", "--json", ws=ws.root).stdout)["runs"]
    assert [h["status"] for h in hist] == ["failed"] and hist[0]["valid"] is None
    # repair: preprocess notices the damage by itself and redoes only that case
    r = unet3d("preprocess", "--jobs", "1", "--json", ws=ws.root)
    assert r.returncode == 0 and json.loads(r.stdout)["processed"] == ["inference/case_00001"], r.stderr
    _assert_same_as_uninterrupted(ws.preprocessed_dir)


def test_library_loader_verifies_the_checksum(tmp_path: Path) -> None:
    from core.preprocess import load_image

    ws = workspace(tmp_path / "ws")
    ok = load_image(ws, "inference", "case_00000")
    _flip_byte(ws.preprocessed_dir / "inference" / "fp32" / "case_00000.npy", 200)
    with pytest.raises(BadInputError, match="sha256 mismatch"):
        load_image(ws, "inference", "case_00000")
    assert ok.shape[0] == 1 and np.isfinite(ok).all()


# --------------------------------------------------------------------------- disk full


_LIMITED = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG as an OSError instead of a kill
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["unet3d", *sys.argv[2:]]
from core.cli import main
sys.exit(main())
"""


def _limited_unet3d(limit: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _LIMITED, str(limit), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )


def test_disk_full_while_preprocessing_leaves_earlier_data_and_no_partial_file(tmp_path: Path) -> None:
    """RLIMIT_FSIZE in the child (EFBIG on the first write past the limit) stands in for a full disk:
    the same OSError path as ENOSPC. The int8 and label arrays (<= 5 MB) fit, fp32 (~19 MB) does not."""
    ws = workspace(tmp_path / "ws")
    pre = ws.preprocessed_dir
    (pre / "inference" / "meta" / "case_00001.json").unlink()  # one case left to do
    before = tree_digest(pre, skip=("/meta/case_00001",))
    r = _limited_unet3d(8 << 20, "--workspace", str(ws.root), "preprocess", "--jobs", "1")
    assert r.returncode == 4, r.stderr
    assert "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert err == [f"error: {pre / 'inference' / 'fp32' / 'case_00001.npy'}: File too large"], r.stderr
    assert not list(pre.rglob("*.tmp"))
    assert not (pre / "inference" / "meta" / "case_00001.json").exists()
    assert tree_digest(pre, skip=("/meta/case_00001",)) == before  # earlier data intact
    r = unet3d("preprocess", "--jobs", "1", ws=ws.root)
    assert r.returncode == 0, r.stderr
    _assert_same_as_uninterrupted(pre)


def test_disk_full_on_a_tmpfs_while_preprocessing(tmp_path: Path) -> None:
    """A real ENOSPC: the preprocessed dir on a 24 MiB tmpfs (needs root and mount)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True)
    if m.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {m.stderr.decode().strip()}")
    try:
        root = tmp_path / "ws"
        workspace(root, preprocessed=False)
        pre = mnt / "KiTS19"
        r = unet3d("--preprocessed_data_dir", str(pre), "preprocess", "--jobs", "1", ws=root)
        assert r.returncode == 4, r.stderr
        assert "Traceback" not in r.stderr
        err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and "No space left on device" in err[0], r.stderr
        assert not list(pre.rglob("*.tmp"))
        ws = Workspace.resolve(root, preprocessed_dir=pre, env={})
        done = {p.stem for p in pre.rglob("meta/*.json")}
        for set_name in ("inference", "calibration"):
            for p in (pre / set_name / "meta").glob("*.json"):
                from core.preprocess import load_image

                load_image(ws, set_name, p.stem)  # every case that claims to be done verifies
        assert len(done) < 3
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_while_writing_run_logs(tmp_path: Path) -> None:
    """LoadGen's own log files hit the limit: the run fails with one line, earlier runs untouched."""
    ws = workspace(tmp_path / "ws")
    tiny_model(ws.model_path, "ok")
    args = ("run", "--test_mode=PerformanceOnly", "--min_duration=0", "--min_query_count=2")
    assert unet3d(*args, ws=ws.root).returncode == 0
    earlier = tree_digest(ws.log_dir)
    r = _limited_unet3d(20_000, "--workspace", str(ws.root), *args)  # detail log ~27 kB: cut short
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "mlperf_log_detail.txt is cut short" in err[0], r.stderr
    now = tree_digest(ws.log_dir)
    assert {k: v for k, v in now.items() if k in earlier} == earlier
    hist = json.loads(unet3d("history", "--json", ws=ws.root).stdout)["runs"]
    assert hist[0]["status"] == "failed" and hist[0]["valid"] is not True
    assert "cut short" in hist[0]["error"]
    assert hist[1]["status"] == "complete" and hist[1]["valid"] is True
