"""`unet3d download`: the official model and the KiTS19 cases, never a partial file.

- Model: Zenodo record 5597155, ``3dunet_kits19_128x128x128_dynbatch.onnx``, saved as NVIDIA names it
  (``build/models/3d-unet-kits19/3dUNetKiTS19.onnx``). The MD5 is taken from the Zenodo record's API
  (the record publishes one per file) and checked after the download.
- Imaging: as the kits19 starter code (``starter_code/get_imaging_v2.py``) does, from the Hugging Face
  dataset ``neheller/KiTS-Challenge-Imaging`` (``images/case_XXXXX.nii.gz``); the file's SHA-256 is the
  Git LFS object id, which the Hub reports in the ``X-Linked-Etag`` header, and is checked.
- Segmentation: from the kits19 GitHub repository (``data/case_XXXXX/segmentation.nii.gz``), or copied
  from a local KiTS19 folder with ``--labels_from``.

Each file goes to a temporary name in its destination folder, is fsynced, verified, and only then
renamed into place. With no network, the first request fails with one MissingInputError line (exit 3)
before anything is created.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from core.errors import BadInputError, MissingInputError, UsageError
from core.fsio import atomic_write
from core.fsio import copy_atomic as _copy_atomic
from core.jobs import NEVER, CancelToken, LogLine, Progress, Reporter, null_reporter
from core.workspace import Workspace

ZENODO_RECORD = "5597155"
ZENODO_FILE = "3dunet_kits19_128x128x128_dynbatch.onnx"
ZENODO_URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files/{ZENODO_FILE}?download=1"
ZENODO_API = f"https://zenodo.org/api/records/{ZENODO_RECORD}"
HF_REPO = "neheller/KiTS-Challenge-Imaging"
HF_BASE = f"https://huggingface.co/datasets/{HF_REPO}/resolve/main"
KITS19_RAW = "https://raw.githubusercontent.com/neheller/kits19/master/data"
USER_AGENT = "unet3d-console/0.1 (+MLPerf 3D-UNet KiTS19)"
TIMEOUT_S = 30.0
CHUNK = 1 << 20


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def _offline(url: str, exc: BaseException) -> MissingInputError:
    reason = getattr(exc, "reason", None) or exc
    return MissingInputError(f"cannot download {url}: no connection to {_host(url)} ({reason})")


def _open(url: str, method: str = "GET", timeout: float = TIMEOUT_S) -> Any:
    req = urllib.request.Request(url, method=method, headers={"User-Agent": USER_AGENT})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise MissingInputError(f"cannot download {url}: not found (HTTP 404)") from None
        raise MissingInputError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
        raise _offline(url, exc) from None


def fetch(
    url: str,
    dest: Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    task: str = "download",
) -> Path:
    """Stream ``url`` to ``dest`` atomically; verify the given checksums before the rename."""
    resp = _open(url)
    h_md5, h_sha = hashlib.md5(), hashlib.sha256()
    total = int(resp.headers.get("Content-Length") or 0)
    done = 0
    # checked before the rename: a broken or mismatching download leaves no file (atomic_write)
    with resp, atomic_write(dest, "wb") as f:
        while True:
            cancel.check()
            try:
                chunk = resp.read(CHUNK)
            except (TimeoutError, ConnectionError, OSError) as exc:
                raise MissingInputError(f"download of {url} broke off after {done} bytes ({exc})") from None
            if not chunk:
                break
            f.write(chunk)
            h_md5.update(chunk)
            h_sha.update(chunk)
            done += len(chunk)
            report(Progress(task, done // CHUNK, max(total // CHUNK, 1), unit="MB", item=dest.name))
        if total and done != total:
            raise MissingInputError(f"download of {url} is incomplete: {done} of {total} bytes")
        if md5 and h_md5.hexdigest() != md5.lower():
            raise BadInputError(f"MD5 {h_md5.hexdigest()} of the download does not match {md5}", dest)
        if sha256 and h_sha.hexdigest() != sha256.lower():
            raise BadInputError(f"SHA-256 {h_sha.hexdigest()} of the download does not match {sha256}", dest)
    return dest


# --------------------------------------------------------------------------- model


def zenodo_md5(record_json: dict[str, Any], filename: str = ZENODO_FILE) -> str | None:
    """The MD5 the Zenodo record publishes for ``filename`` (``checksum: "md5:<hex>"``)."""
    for f in record_json.get("files", []) or []:
        if f.get("key") == filename or f.get("filename") == filename:
            checksum = str(f.get("checksum", ""))
            if checksum.startswith("md5:"):
                return checksum[4:]
            return checksum or None
    return None


def download_model(
    ws: Workspace,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    *,
    verify: bool = True,
    force: bool = False,
) -> Path:
    dest = ws.model_path
    if dest.exists() and not force:
        report(LogLine("info", f"{dest} exists (use --force to download again)"))
        return dest
    md5 = None
    if verify:
        with _open(ZENODO_API) as resp:
            try:
                md5 = zenodo_md5(json.loads(resp.read()))
            except ValueError:
                md5 = None
        if md5 is None:
            report(LogLine("warning", f"Zenodo record {ZENODO_RECORD} lists no MD5 for {ZENODO_FILE}"))
    fetch(ZENODO_URL, dest, md5=md5, report=report, cancel=cancel, task="model")
    report(LogLine("info", f"model saved to {dest}" + (f" (MD5 {md5} verified)" if md5 else "")))
    return dest


# --------------------------------------------------------------------------- dataset


def hf_sha256(url: str) -> str | None:
    """The LFS SHA-256 the Hub reports for a `resolve` URL (``X-Linked-Etag``), without following the
    redirect to the CDN. None when the header is absent."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        resp = opener.open(req, timeout=TIMEOUT_S)
        headers = resp.headers
    except urllib.error.HTTPError as exc:  # the 302 itself arrives as an HTTPError here
        if exc.code == 404:
            raise MissingInputError(f"cannot download {url}: not found (HTTP 404)") from None
        headers = exc.headers
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
        raise _offline(url, exc) from None
    etag = (headers.get("X-Linked-Etag") or "").strip().strip('"')
    return etag if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag.lower()) else None


def _wanted_cases(ws: Workspace, sets: Sequence[str], cases: Iterable[str] | None) -> list[str]:
    from core.cases import CASE_NAME, case_lists

    if cases:
        names = list(dict.fromkeys(cases))
    else:
        lists = case_lists(ws)
        names = []
        for s in sets:
            if s not in ("inference", "calibration"):
                raise UsageError(f"--sets: unknown set {s!r} (inference, calibration)")
            names += lists.for_set(s)
        names = list(dict.fromkeys(names))
    for n in names:
        if not CASE_NAME.match(n):
            raise UsageError(f"--cases: {n!r} is not a KiTS19 case name (case_XXXXX)")
    return names


def download_data(
    ws: Workspace,
    sets: Sequence[str] = ("inference", "calibration"),
    cases: Iterable[str] | None = None,
    labels_from: str | Path | None = None,
    report: Reporter = null_reporter,
    cancel: CancelToken = NEVER,
    *,
    verify: bool = True,
    force: bool = False,
) -> list[str]:
    """Fetch imaging (Hugging Face) and segmentation (kits19 GitHub or ``labels_from``) per case into
    ws.data_dir. case_00400 is not downloaded: it is made from case_00185 (core.cases)."""
    from core.cases import CASE_00400, ensure_case_00400
    from core.nifti import IMAGING, SEGMENTATION, header_info

    names = _wanted_cases(ws, sets, cases)
    need_400 = CASE_00400 in names
    names = [n for n in names if n != CASE_00400]
    if need_400 and "case_00185" not in names:
        names.append("case_00185")
    labels_dir = Path(labels_from) if labels_from else None
    if labels_dir is not None and not labels_dir.is_dir():
        raise MissingInputError("--labels_from folder not found", labels_dir)

    fetched: list[str] = []
    for i, case in enumerate(names):
        cancel.check()
        case_dir = ws.data_dir / case
        for kind, url in (
            (IMAGING, f"{HF_BASE}/images/{case}.nii.gz"),
            (SEGMENTATION, f"{KITS19_RAW}/{case}/{SEGMENTATION}"),
        ):
            dest = case_dir / kind
            if dest.exists() and not force:
                continue
            if kind == SEGMENTATION and labels_dir is not None:
                src = labels_dir / case / SEGMENTATION
                if not src.is_file():
                    raise MissingInputError(f"no {SEGMENTATION} for {case} in --labels_from", src)
                _copy_atomic(src, dest)
            else:
                sha = hf_sha256(url) if (verify and kind == IMAGING) else None
                fetch(url, dest, sha256=sha, report=report, cancel=cancel, task=f"{case} {kind}")
            try:
                header_info(dest)  # the one NIfTI validation: a corrupt download is not kept
            except BadInputError:
                dest.unlink(missing_ok=True)
                raise
        fetched.append(case)
        report(Progress("download", i + 1, len(names), unit="case", item=case))
    if need_400:
        ensure_case_00400(ws)
        fetched.append(CASE_00400)
    return fetched
