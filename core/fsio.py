"""Atomic file writes: the one implementation every module uses, so nothing is ever half-written.

Write to a temporary file in the target's folder, flush, fsync, then ``os.replace`` it over the target.
On any failure the temporary file is removed and the target is untouched. An ``OSError`` from a
failed write (a full disk) names no file; it is re-raised naming the target, so the one-line error
says which file could not be written.
"""

from __future__ import annotations

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


def copy_atomic(src: str | Path, dst: str | Path, chunk: int = 1 << 20) -> None:
    with Path(src).open("rb") as fi, atomic_write(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, chunk)
