"""core.download against a local HTTP server: checksums, atomic files, clear errors (no internet needed)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from core import download as dl
from core.errors import BadInputError, MissingInputError
from core.workspace import Workspace

MODEL_BYTES = b"not really an onnx model, but bytes to check" * 100


def _nifti_bytes(tmp: Path) -> bytes:
    import nibabel as nib

    p = tmp / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.diag([-0.8, -0.8, -3.0, 1.0])), str(p))
    return p.read_bytes()


class _Server:
    def __init__(self, files: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.files = files
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: bool) -> None:
                path = self.path.split("?")[0]
                code, headers, data = outer.files.get(path, (404, {}, b""))
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply(True)

            def do_HEAD(self) -> None:
                self._reply(False)

            def log_message(self, *_a: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_Server]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    nii = _nifti_bytes(tmp_path)
    md5 = hashlib.md5(MODEL_BYTES).hexdigest()
    record = {"files": [{"key": dl.ZENODO_FILE, "checksum": f"md5:{md5}"}]}
    sha = hashlib.sha256(nii).hexdigest()
    files = {
        "/api/records/5597155": (200, {}, json.dumps(record).encode()),
        f"/records/5597155/files/{dl.ZENODO_FILE}": (200, {}, MODEL_BYTES),
        # the Hub answers a `resolve` HEAD with a redirect carrying the LFS sha256
        "/hf/images/case_00000.nii.gz": (200, {"X-Linked-Etag": f'"{sha}"'}, nii),
        "/hf/images/case_00001.nii.gz": (200, {"X-Linked-Etag": f'"{"0" * 64}"'}, nii),
        "/gh/case_00000/segmentation.nii.gz": (200, {}, nii),
        "/gh/case_00001/segmentation.nii.gz": (200, {}, nii),
    }
    srv = _Server(files)
    monkeypatch.setattr(dl, "ZENODO_API", f"{srv.url}/api/records/5597155")
    monkeypatch.setattr(dl, "ZENODO_URL", f"{srv.url}/records/5597155/files/{dl.ZENODO_FILE}?download=1")
    monkeypatch.setattr(dl, "HF_BASE", f"{srv.url}/hf")
    monkeypatch.setattr(dl, "KITS19_RAW", f"{srv.url}/gh")
    yield srv
    srv.close()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_model_download_verifies_the_zenodo_md5(server: _Server, tmp_path: Path) -> None:
    ws = Workspace.resolve(tmp_path / "w", env={})
    path = dl.download_model(ws)
    assert path == ws.model_path and path.read_bytes() == MODEL_BYTES
    assert _files(ws.model_dir) == ["3dUNetKiTS19.onnx"]  # no temporary left behind


def test_model_with_wrong_md5_is_not_kept(server: _Server, tmp_path: Path) -> None:
    server.files["/api/records/5597155"] = (
        200,
        {},
        json.dumps({"files": [{"key": dl.ZENODO_FILE, "checksum": "md5:" + "0" * 32}]}).encode(),
    )
    ws = Workspace.resolve(tmp_path / "w", env={})
    with pytest.raises(BadInputError, match="MD5"):
        dl.download_model(ws)
    assert _files(tmp_path / "w") == []  # neither the model nor a partial file


def test_http_errors_are_one_line_missing_input(server: _Server, tmp_path: Path) -> None:
    del server.files[f"/records/5597155/files/{dl.ZENODO_FILE}"]
    ws = Workspace.resolve(tmp_path / "w", env={})
    with pytest.raises(MissingInputError, match=r"not found \(HTTP 404\)"):
        dl.download_model(ws)
    assert _files(tmp_path / "w") == []


def test_case_download_checks_the_lfs_sha256(server: _Server, tmp_path: Path) -> None:
    ws = Workspace.resolve(tmp_path / "w", env={})
    assert dl.download_data(ws, cases=["case_00000"]) == ["case_00000"]
    assert _files(ws.data_dir) == ["case_00000/imaging.nii.gz", "case_00000/segmentation.nii.gz"]
    with pytest.raises(BadInputError, match="SHA-256"):
        dl.download_data(ws, cases=["case_00001"])
    assert not (ws.data_dir / "case_00001" / "imaging.nii.gz").exists()
    assert [p.name for p in (ws.data_dir / "case_00001").iterdir()] == []


def test_labels_can_come_from_a_local_kits19_folder(server: _Server, tmp_path: Path) -> None:
    labels = tmp_path / "kits19"
    (labels / "case_00000").mkdir(parents=True)
    (labels / "case_00000" / "segmentation.nii.gz").write_bytes(_nifti_bytes(tmp_path))
    del server.files["/gh/case_00000/segmentation.nii.gz"]  # would 404 if it were used
    ws = Workspace.resolve(tmp_path / "w", env={})
    dl.download_data(ws, cases=["case_00000"], labels_from=labels)
    seg = ws.data_dir / "case_00000" / "segmentation.nii.gz"
    assert seg.read_bytes() == (labels / "case_00000" / "segmentation.nii.gz").read_bytes()


def test_zenodo_md5_parsing() -> None:
    rec = {
        "files": [{"key": "other.onnx", "checksum": "md5:aa"}, {"key": dl.ZENODO_FILE, "checksum": "md5:bb"}]
    }
    assert dl.zenodo_md5(rec) == "bb"
    assert dl.zenodo_md5({"files": []}) is None
