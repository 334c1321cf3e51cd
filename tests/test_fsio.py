"""The one atomic-write implementation: the target appears complete or not at all."""

from __future__ import annotations

import errno

import pytest

from core.fsio import atomic_write, copy_atomic, write_bytes_atomic, write_text_atomic


def test_writes_and_replaces_without_leaving_temporaries(tmp_path) -> None:
    target = tmp_path / "sub" / "f.json"
    write_text_atomic(target, "one\n")
    write_text_atomic(target, "two\n")
    assert target.read_text() == "two\n"
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    copy_atomic(tmp_path / "b.bin", tmp_path / "c.bin")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.bin", "c.bin", "f.json"]


def test_a_failure_midway_keeps_the_old_file_and_removes_the_temporary(tmp_path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("half of the new con")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_failed_write_names_the_target(tmp_path) -> None:
    target = tmp_path / "full.npy"
    with pytest.raises(OSError) as err, atomic_write(target) as fh:
        fh.write(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")  # what a full disk raises, no filename
    assert err.value.filename == str(target) and err.value.errno == errno.ENOSPC
    assert not target.exists() and list(tmp_path.iterdir()) == []
