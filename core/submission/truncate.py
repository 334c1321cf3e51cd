"""Accuracy-log truncation as MLCommons' ``tools/submission/truncate_accuracy_log.py`` does it.

A submission carries ``mlperf_log_accuracy.json`` files of at most 10 KiB: the first and the last
4,096 characters of the log with ``\\n\\n...\\n\\n`` between them (a log shorter than 4,096 bytes stays
whole), and ``accuracy.txt`` gains a ``hash=<sha256 of the whole log>`` line so that the full log, kept
outside the tree, can be proven to be the one that was scored. Logs are ASCII (LoadGen writes hex).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from core.errors import BadInputError, MissingInputError
from core.fsio import atomic_write, sha256_file, write_text_atomic
from core.jobs import NEVER, CancelToken
from core.submission.rules import MAX_ACCURACY_LOG_BYTES, TRUNCATE_KEEP

HASH_LINE = re.compile(r"^hash=([\w\d]+)$")


def truncate_log(src: Path, dst: Path, keep: int = TRUNCATE_KEEP) -> None:
    """Write the truncated form of accuracy log ``src`` to ``dst`` (``src`` is never changed)."""
    src, dst = Path(src), Path(dst)
    size = src.stat().st_size
    with src.open("rb") as fh, atomic_write(dst, "wb") as out:
        if size < keep:
            out.write(fh.read())
            return
        out.write(fh.read(keep))
        out.write(b"\n\n...\n\n")
        fh.seek(size - keep)
        out.write(fh.read(keep))


def recorded_hash(accuracy_txt: Path) -> str | None:
    """The ``hash=`` value of an accuracy.txt, or None."""
    try:
        lines = Path(accuracy_txt).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if m := HASH_LINE.match(line):
            return m.group(1)
    return None


def truncate_accuracy_dir(acc_dir: Path, full_log: Path) -> str:
    """In a staged ``accuracy/`` folder: write the truncated copy of ``full_log`` as its
    mlperf_log_accuracy.json and append the full log's hash to its accuracy.txt (which must exist).
    Returns the hash."""
    acc_dir = Path(acc_dir)
    txt = acc_dir / "accuracy.txt"
    if not txt.is_file():
        raise BadInputError("accuracy.txt is missing: the hash of the full log goes there", txt)
    if recorded_hash(txt) is not None:
        raise BadInputError("accuracy.txt already has a hash= line (truncated twice?)", txt)
    sha = sha256_file(full_log)
    truncate_log(full_log, acc_dir / "mlperf_log_accuracy.json")
    text = txt.read_text(encoding="utf-8")
    write_text_atomic(txt, text + f"\nhash={sha}\n")
    return sha


def truncate_tree(root: Path, full_root: Path | None = None, cancel: CancelToken = NEVER) -> list[Path]:
    """Truncate every ``accuracy/mlperf_log_accuracy.json`` of a tree (results and TEST01) that has no
    hash yet, moving the full log to ``full_root`` (default ``<root>.full``) under the same relative
    path. Returns the logs truncated; logs already hashed and small are left alone."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise MissingInputError("no submission tree here", root)
    full_root = Path(full_root) if full_root is not None else root.with_name(root.name + ".full")
    done = []
    for log in sorted(root.rglob("accuracy/mlperf_log_accuracy.json")):
        cancel.check()
        txt = log.parent / "accuracy.txt"
        hashed = recorded_hash(txt) is not None
        if hashed and log.stat().st_size <= MAX_ACCURACY_LOG_BYTES:
            continue
        if hashed:
            raise BadInputError("accuracy.txt has a hash but the log beside it is not truncated", log)
        keep = full_root / log.relative_to(root)
        if keep.exists():
            raise BadInputError("a full log is already kept there", keep)
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(log, keep)
        try:
            truncate_accuracy_dir(log.parent, keep)
        except BaseException:
            shutil.move(keep, log)  # leave the tree as it was
            raise
        done.append(log)
    return done
