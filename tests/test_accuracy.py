"""The one DICE against an independent transcription of the reference, and accuracy-log scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.accuracy import accuracy_line, decode_entry, dice, fp32_reference_for, score_log
from core.errors import BadInputError, MissingInputError
from core.harness.qsl import InMemoryData


def reference_get_dice_score(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A literal transcription of the reference ``get_dice_score``: (N, 1, D, H, W) label volumes,
    one-hot over 3 classes on axis 1, background dropped, float64 sums over (2, 3, 4)."""
    smooth_nr = 1e-6
    smooth_dr = 1e-6

    def to_one_hot(array: np.ndarray) -> np.ndarray:
        res = np.eye(3)[np.squeeze(array, axis=1).astype(np.int64)]  # (N, D, H, W, 3) float64
        return np.moveaxis(res, -1, 1)

    prediction = to_one_hot(prediction)[:, 1:]
    target = to_one_hot(target)[:, 1:]
    reduce_axis = (2, 3, 4)
    intersection = np.sum(target * prediction, axis=reduce_axis)
    target_sum = np.sum(target, axis=reduce_axis)
    prediction_sum = np.sum(prediction, axis=reduce_axis)
    return ((2.0 * intersection + smooth_nr) / (target_sum + prediction_sum + smooth_dr))[0]


def blobs(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, dtype=np.uint8)
    lab[rng.random(shape) < 0.3] = 1
    lab[rng.random(shape) < 0.1] = 2
    return lab


@pytest.mark.parametrize("seed", range(4))
def test_dice_matches_reference_transcription(seed: int) -> None:
    pred = blobs((17, 23, 19), seed)
    truth = blobs((17, 23, 19), seed + 100)
    got = dice(pred, truth)
    want = reference_get_dice_score(pred[None, None], truth[None, None])
    assert got == (want[0], want[1])  # bitwise: the same float64 numbers
    assert 0.0 < got[0] < 1.0 and 0.0 < got[1] < 1.0


def test_dice_counts_by_hand() -> None:
    truth = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros((4, 4, 4), np.uint8)
    truth[0, 0, :4] = 1  # 4 kidney voxels
    pred[0, 0, :2] = 1  # 2 of them found
    pred[1, 1, 1] = 2  # one false tumor voxel; no tumor in the truth
    kidney, tumor = dice(pred, truth)
    assert kidney == (2 * 2 + 1e-6) / (2 + 4 + 1e-6)
    assert tumor == 1e-6 / (1 + 1e-6)


def test_dice_edge_cases() -> None:
    empty = np.zeros((1, 3, 3, 3), np.uint8)
    assert dice(empty, empty) == (1.0, 1.0)  # both empty -> 1 by the smoothing terms
    full_k = np.ones_like(empty)
    assert dice(full_k, full_k) == (1.0, 1.0)
    k, t = dice(empty, full_k)
    assert k == pytest.approx(1e-6 / (27 + 1e-6)) and t == 1.0
    tumor_as_kidney = np.full_like(empty, 2)
    k, t = dice(full_k, tumor_as_kidney)  # "kidney" is label 1 only, not kidney+tumor
    assert k < 1e-7 and t < 1e-7
    with pytest.raises(BadInputError, match="shape"):
        dice(empty, empty[0])
    with pytest.raises(BadInputError, match="classes"):
        dice(np.full_like(empty, 3), empty)


def test_accuracy_line_format() -> None:
    assert (
        accuracy_line(0.86170, 0.9347, 0.7887) == "Accuracy: mean = 0.86170, kidney = 0.9347, tumor = 0.7887"
    )
    assert (
        accuracy_line(0.861704, 0.93474, 0.78866)
        == "Accuracy: mean = 0.86170, kidney = 0.9347, tumor = 0.7887"
    )


# --- score_log ------------------------------------------------------------------------------------

SHAPES = {"case_00010": (1, 6, 8, 10), "case_00020": (1, 4, 4, 4), "case_00030": (1, 5, 7, 3)}


@pytest.fixture
def data() -> InMemoryData:
    labels = {c: blobs(s[1:], i)[None] for i, (c, s) in enumerate(SHAPES.items())}
    return InMemoryData({c: lab.astype(np.float32) for c, lab in labels.items()}, labels)


def write_log(path: Path, entries: list[dict]) -> Path:
    """LoadGen's layout: '[', one object per line with a trailing comma except the last, ']'."""
    body = ",\n".join(json.dumps(e) for e in entries)
    path.write_text("[\n" + body + ("\n" if entries else "") + "]\n")
    return path


def entry(seq: int, idx: int, arr: np.ndarray) -> dict:
    return {"seq_id": seq, "qsl_idx": idx, "data": arr.astype(np.uint8).tobytes().hex().upper()}


def test_score_log_round_trip(tmp_path: Path, data: InMemoryData) -> None:
    cases = data.cases()
    preds = {c: data.load_label(c).copy() for c in cases}
    preds["case_00020"] = blobs((4, 4, 4), 77)[None]  # one imperfect case
    order = [2, 0, 1]  # accuracy logs come in LoadGen's shuffled order
    log = write_log(
        tmp_path / "mlperf_log_accuracy.json", [entry(s, i, preds[cases[i]]) for s, i in enumerate(order)]
    )
    rep = score_log(None, log, data=data)
    assert [r.case for r in rep.rows] == cases
    for r in rep.rows:
        assert (r.kidney, r.tumor) == dice(preds[r.case], data.load_label(r.case))
    assert rep.rows[0].composite == 1.0 and rep.rows[2].composite == 1.0
    assert rep.kidney == pytest.approx(np.mean([r.kidney for r in rep.rows]))
    assert rep.mean == pytest.approx((rep.kidney + rep.tumor) / 2)
    assert rep.line == accuracy_line(rep.mean, rep.kidney, rep.tumor)
    assert rep.fp32_reference == 0.86170 and rep.reference_source == "official"
    assert rep.passed == (rep.mean >= 0.99 * 0.86170)
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert rows[0] == "case,kidney,tumor,composite" and len(rows) == 5
    assert rows[1].startswith("case_00010,1.000000,1.000000,1.000000")
    assert rows[-1] == f"mean,{rep.kidney:.6f},{rep.tumor:.6f},{rep.mean:.6f}"


def test_score_log_decodes_lowercase_and_compact_json(tmp_path: Path, data: InMemoryData) -> None:
    cases = data.cases()
    entries = [entry(i, i, data.load_label(c)) for i, c in enumerate(cases)]
    for e in entries:
        e["data"] = e["data"].lower()
    log = tmp_path / "acc.json"
    log.write_text(json.dumps(entries))  # one line, not LoadGen's layout
    rep = score_log(None, log, data=data, out_csv=tmp_path / "s.csv")
    assert rep.mean == 1.0 and rep.line == "Accuracy: mean = 1.00000, kidney = 1.0000, tumor = 1.0000"


def test_targets_relative_to_model_reference(tmp_path: Path, data: InMemoryData) -> None:
    cases = data.cases()
    preds = {c: data.load_label(c).copy() for c in cases}
    preds["case_00010"][:] = 0  # composite drops to ~2/3 of perfect
    log = write_log(tmp_path / "a.json", [entry(i, i, preds[c]) for i, c in enumerate(cases)])
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    (tmp_path / "model.fp32_dice.json").write_text(json.dumps({"mean": 0.67, "kidney": 0.7, "tumor": 0.64}))
    assert fp32_reference_for(model) == (0.67, str(tmp_path / "model.fp32_dice.json"))
    rep = score_log(None, log, data=data, model_path=model, config_ver="high_accuracy")
    assert rep.fp32_reference == 0.67 and rep.target == pytest.approx(0.999 * 0.67)
    assert rep.mean == pytest.approx(2 / 3, abs=1e-6)
    assert rep.passed_99 and not rep.passed_99_9 and not rep.passed
    assert not score_log(None, log, data=data).passed  # against the official 0.86170
    (tmp_path / "model.fp32_dice.json").write_text("{}")
    with pytest.raises(BadInputError, match=r"fp32_dice\.json"):
        fp32_reference_for(model)


def good_entries(data: InMemoryData) -> list[dict]:
    return [entry(i, i, data.load_label(c)) for i, c in enumerate(data.cases())]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda es: es[:2], r"2 entries for 3 cases; missing case_00030"),
        (lambda es: [*es, es[1]], r"duplicate qsl_idx 1"),
        (lambda es: [{**es[0], "data": es[0]["data"][:-1] + "G"}, *es[1:]], r"malformed hex"),
        (lambda es: [{**es[0], "data": es[0]["data"] + "00"}, *es[1:]], r"481 bytes, expected 480"),
        (lambda es: [{**es[0], "qsl_idx": 3}, *es[1:]], r"bad qsl_idx 3"),
        (lambda es: [{"seq_id": 0, "qsl_idx": 0}, *es[1:]], r"no 'data'"),
        (lambda es: [{**es[0], "data": ""}, *es[1:]], r"qsl_idx=0 is empty"),
        (lambda es: [{**es[0], "data": "03" * 480}, *es[1:]], r"case_00010.*classes"),
    ],
)
def test_malformed_logs_are_refused(tmp_path: Path, data: InMemoryData, mutate, match: str) -> None:
    log = write_log(tmp_path / "mlperf_log_accuracy.json", mutate(good_entries(data)))
    with pytest.raises(BadInputError, match=match) as info:
        score_log(None, log, data=data)
    assert str(log) in str(info.value)  # the message names the log
    assert not (tmp_path / "summary.csv").exists()  # nothing half-written


def test_unreadable_logs(tmp_path: Path, data: InMemoryData) -> None:
    with pytest.raises(MissingInputError):
        score_log(None, tmp_path / "missing.json", data=data)
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"seq_id": 0, "qsl_idx": 0, "data": "00"\n')  # truncated
    with pytest.raises(BadInputError, match="malformed accuracy log"):
        score_log(None, bad, data=data)
    cut = write_log(tmp_path / "cut.json", good_entries(data))
    lines = cut.read_text().splitlines()
    cut.write_text("\n".join([*lines[:2], lines[2][:40]]) + "\n")  # killed while writing entry 2
    with pytest.raises(BadInputError, match="malformed accuracy log line 3"):
        score_log(None, cut, data=data)
    obj = tmp_path / "obj.json"
    obj.write_text('{"a": 1}')
    with pytest.raises(BadInputError, match="not a JSON array"):
        score_log(None, obj, data=data)


def test_decode_entry_shape() -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(1, 2, 3, 4) % 3
    out = decode_entry({"qsl_idx": 0, "data": arr.tobytes().hex().upper()}, (1, 2, 3, 4), Path("x"))
    assert out.dtype == np.uint8 and np.array_equal(out, arr)
