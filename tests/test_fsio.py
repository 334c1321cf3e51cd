"""The one atomic-write implementation: the target appears complete or not at all."""

from __future__ import annotations

import errno
import os

import pytest

from core.fsio import (
    atomic_write,
    copy_atomic,
    sha256_bytes,
    sha256_file,
    write_bytes_atomic,
    write_text_atomic,
)


def test_writes_and_replaces_without_leaving_temporaries(tmp_path) -> None:
    target = tmp_path / "sub" / "f.json"
    write_text_atomic(target, "one\n")
    write_text_atomic(target, "two\n")
    assert target.read_text() == "two\n"
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    copy_atomic(tmp_path / "b.bin", tmp_path / "c.bin")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.bin", "c.bin", "f.json"]


def test_a_copy_can_keep_the_source_times(tmp_path) -> None:
    src = tmp_path / "src.bin"
    write_bytes_atomic(src, b"x" * 3_000_000)  # more than one chunk
    os.utime(src, ns=(1_000_000_000_123, 2_000_000_000_456))
    copy_atomic(src, tmp_path / "kept.bin", keep_times=True)
    copy_atomic(src, tmp_path / "new.bin")
    kept, new = (tmp_path / "kept.bin").stat(), (tmp_path / "new.bin").stat()
    assert (kept.st_atime_ns, kept.st_mtime_ns) == (1_000_000_000_123, 2_000_000_000_456)
    assert new.st_mtime_ns != 2_000_000_000_456
    assert (tmp_path / "kept.bin").read_bytes() == src.read_bytes()


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


def test_sha256_of_a_file_and_of_bytes_are_the_published_digests(tmp_path) -> None:
    """FIPS 180-2 test vectors, and a file larger than one read chunk."""
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_bytes(b"abc") == abc
    write_bytes_atomic(tmp_path / "abc", b"abc")
    assert sha256_file(tmp_path / "abc") == abc
    write_bytes_atomic(tmp_path / "a", b"a" * 1_000_000)
    assert sha256_file(tmp_path / "a") == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
    assert sha256_bytes(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
