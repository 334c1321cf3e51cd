"""Atomic file writes: the one implementation every module uses, so nothing is ever half-written;
and the one home for file hashes: sha256 of a file or of bytes (models, preprocessed volumes, engines,
checksum records, truncated accuracy logs) and the MD5 of a file (the official model's published checksum).

Write to a temporary file in the target's folder, flush, fsync, then ``os.replace`` it over the target.
On any failure the temporary file is removed and the target is untouched. An ``OSError`` from a
failed write (a full disk) names no file; it is re-raised naming the target, so the one-line error
says which file could not be written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kw: Any) -> Iterator[IO[Any]]:
    """``with atomic_write(p) as fh: fh.write(...)``: ``p`` appears complete or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def copy_atomic(src: str | Path, dst: str | Path, chunk: int = 1 << 20, keep_times: bool = False) -> None:
    """Copy ``src`` to ``dst`` atomically; ``keep_times`` gives the copy the source's access and
    modification times (so a later comparison of the two can stop at a stat)."""
    with Path(src).open("rb") as fi, atomic_write(dst, "wb") as fo:
        st = os.fstat(fi.fileno())  # before the read moves the access time
        shutil.copyfileobj(fi, fo, chunk)
        if keep_times:
            fo.flush()  # no write after the times are set
            os.utime(fo.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (models and volumes are large)."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def md5_file(path: str | Path) -> str:
    """Hex MD5 of a file's bytes: only where a published checksum is an MD5 (the official model's Zenodo
    record), never as a security measure."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
