"""core.calibration_cache: our JSON format, TensorRT's text format, and refusals of bad files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from core import calibration_cache as cc
from core.benchmark import INPUT_AMAX
from core.errors import BadInputError, MissingInputError

SHA = "ab" * 32

# An excerpt in the layout of NVIDIA's shipped calibrator.cache (TRT 8.6 header). The hex words are
# written here by hand from struct.pack(">f", ...) of known scales, independent of the module.
NV_STYLE = """TRT-8600-MinMaxCalibration
input: 3caa46e8
Conv_0: 3e7408a0
InstanceNormalization_28__output: 3d000000
ConvTranspose_36_pixelshuffle_plugin__output: 3d000000
conv3d1x1x1k4_out: 3f32c8b4
output: 3f32c8b4
"""


def _bits(x: float) -> str:
    return struct.pack(">f", np.float32(x)).hex()


def test_input_scale_bits_match_nvidia() -> None:
    # The exact normalized clip maximum (304-101)/76.9 -> scale 0.0207858 -> 0x3caa46e8 (NVIDIA's cache).
    c = cc.CalibrationCache({"input": INPUT_AMAX}, "minmax", SHA, {})
    text = cc.to_trt_text(c)
    assert text.splitlines() == ["TRT-100000-MinMaxCalibration", "input: 3caa46e8"]
    assert abs(INPUT_AMAX / 127 - 0.0207858) < 1e-7
    # The 5-digit rounding 2.63979 lands 8 ulps lower; worth knowing when comparing files.
    c2 = cc.CalibrationCache({"input": 2.63979}, "minmax", SHA, {})
    assert cc.to_trt_text(c2).splitlines()[1] == "input: 3caa46e0"


def test_parse_nvidia_style_cache() -> None:
    c = cc.from_trt_text(NV_STYLE)
    assert c.method == "minmax"
    assert c.model_sha256 == ""
    assert c.meta["trt_header"] == "TRT-8600-MinMaxCalibration"
    assert c.meta["trt_version"] == 8600
    assert list(c.amax) == [
        "input",
        "Conv_0",
        "InstanceNormalization_28__output",
        "ConvTranspose_36_pixelshuffle_plugin__output",
        "conv3d1x1x1k4_out",
        "output",
    ]
    assert c.amax["input"] == pytest.approx(2.6397919, abs=2e-7)
    # 0x3d000000 = 2**-5 exactly -> amax 127/32
    assert c.amax["InstanceNormalization_28__output"] == 127 / 32
    assert c.amax["output"] == pytest.approx(struct.unpack(">f", bytes.fromhex("3f32c8b4"))[0] * 127)
    # Re-export reproduces the words byte for byte (only the header differs).
    again = cc.to_trt_text(c, header="TRT-8600-MinMaxCalibration")
    assert again == NV_STYLE


def test_trt_8402_header_and_other_algorithms() -> None:
    c = cc.from_trt_text("TRT-8402-MinMaxCalibration\ninput: 3caa46e8")
    assert c.meta["trt_version"] == 8402
    assert cc.from_trt_text("TRT-100200-EntropyCalibration2\nx: 3f800000\n").method == "entropy2"
    assert cc.from_trt_text("TRT-100200-EntropyCalibration2\nx: 3f800000\n").amax["x"] == 127.0


def test_tensor_names_with_colons_and_crlf() -> None:
    c = cc.from_trt_text("TRT-8600-MinMaxCalibration\r\nblock:a:b: 3f800000\r\n")
    assert c.amax == {"block:a:b": 127.0}


def test_json_trt_round_trip_within_float32(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = ["input"] + [f"Conv_{i}" for i in range(0, 34, 2)] + ["output"]
    amax = {n: float(v) for n, v in zip(names, rng.uniform(1e-3, 300.0, len(names)), strict=True)}
    c = cc.CalibrationCache(amax, "minmax", SHA, {"windows": 1119})
    back = cc.from_trt_text(cc.to_trt_text(c))
    assert list(back.amax) == names
    for n in names:
        # one float32 rounding of the scale: relative error <= 2**-24
        assert abs(back.amax[n] - amax[n]) <= amax[n] * 2**-24 * 1.0001
        assert _bits(back.amax[n] / 127) == _bits(amax[n] / 127)
    # JSON keeps float64 exactly, through a file
    p = cc.save(back, tmp_path / "cal.json")
    again = cc.load(p)
    assert again.amax == back.amax
    # TRT text written to a file loads by auto-detection too
    t = cc.save_trt_text(c, tmp_path / "calibrator.cache", header="TRT-8600-MinMaxCalibration")
    assert cc.load(t).amax == back.amax


def test_json_file_layout_and_round_trip(tmp_path: Path) -> None:
    c = cc.CalibrationCache(
        {"input": INPUT_AMAX, "Conv_0": 30.27},
        "percentile",
        SHA,
        {"set": "calibration", "windows": 1119},
        weight_amax={"Conv_0": [0.5, 0.25, 0.125]},
    )
    p = cc.save(c, tmp_path / "sub" / "calibration_cache.json")
    doc = json.loads(p.read_text())
    assert doc["format"] == "unet3d-calibration-cache"
    assert doc["version"] == 1
    assert doc["method"] == "percentile"
    assert doc["model_sha256"] == SHA
    assert doc["created"].endswith("Z") and doc["created"][:2] == "20"
    assert doc["amax"] == {"input": INPUT_AMAX, "Conv_0": 30.27}
    assert doc["weight_amax"] == {"Conv_0": [0.5, 0.25, 0.125]}
    assert doc["meta"] == {"set": "calibration", "windows": 1119}
    back = cc.load(p)
    assert back == c  # created was stamped into c by save
    assert back.scale("input") == INPUT_AMAX / 127
    # no temp files left behind
    assert sorted(x.name for x in p.parent.iterdir()) == ["calibration_cache.json"]


def test_save_replaces_atomically(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    cc.save(cc.CalibrationCache({"a": 1.0}, "minmax", SHA, {}), p)
    cc.save(cc.CalibrationCache({"b": 2.0}, "minmax", SHA, {}), p)
    assert cc.load(p).amax == {"b": 2.0}
    # a refused cache does not touch the existing file
    with pytest.raises(BadInputError):
        cc.save(cc.CalibrationCache({"c": float("nan")}, "minmax", SHA, {}), p)
    assert cc.load(p).amax == {"b": 2.0}
    assert [x.name for x in tmp_path.iterdir()] == ["c.json"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "neither"),
        ("hello\n", "neither"),
        ("TRT-8600-MinMaxCalibration\n", "no tensors"),
        ("TRT-MinMaxCalibration\ninput: 3caa46e8\n", "not a TensorRT cache header"),
        ("TRT-8600-MinMaxCalibration\ninput 3caa46e8\n", "line 2"),
        ("TRT-8600-MinMaxCalibration\ninput: 3caa46e\n", "line 2"),
        ("TRT-8600-MinMaxCalibration\ninput: 3caa46e8\ninput: 3caa46e8\n", "twice"),
        ("TRT-8600-MinMaxCalibration\ninput: 7fc00000\n", "not finite"),  # NaN
        ("TRT-8600-MinMaxCalibration\ninput: bf800000\n", "not finite"),  # -1.0
        ("{", "not valid JSON"),
        ('{"format": "other"}', "not a calibration cache"),
        ('{"format": "unet3d-calibration-cache", "version": 9}', "version 9"),
        (
            '{"format": "unet3d-calibration-cache", "version": 1, "method": "minmax", "model_sha256": ""}',
            "amax",
        ),
        (
            '{"format": "unet3d-calibration-cache", "version": 1, "method": "minmax",'
            ' "model_sha256": "", "amax": {"input": "big"}}',
            "not a number",
        ),
        (
            '{"format": "unet3d-calibration-cache", "version": 1, "method": "minmax",'
            ' "model_sha256": "", "amax": {"input": -1}}',
            "must be finite",
        ),
        (
            '{"format": "unet3d-calibration-cache", "version": 1, "method": "minmax",'
            ' "model_sha256": "xyz", "amax": {"input": 1}}',
            "model_sha256",
        ),
        (
            '{"format": "unet3d-calibration-cache", "version": 1, "method": "",'
            ' "model_sha256": "", "amax": {"input": 1}}',
            "method",
        ),
        (
            '{"format": "unet3d-calibration-cache", "version": 1, "method": "minmax",'
            ' "model_sha256": "", "amax": {"input": 1}, "weight_amax": {"w": []}}',
            "weight_amax",
        ),
    ],
)
def test_malformed_files_refused_naming_the_file(tmp_path: Path, content: str, fragment: str) -> None:
    p = tmp_path / "bad.cache"
    p.write_text(content)
    with pytest.raises(BadInputError) as info:
        cc.load(p)
    msg = str(info.value)
    assert msg.startswith(str(p) + ": ")
    assert fragment in msg
    assert "\n" not in msg


def test_binary_and_missing_files(tmp_path: Path) -> None:
    p = tmp_path / "bin.cache"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BadInputError, match="not UTF-8"):
        cc.load(p)
    with pytest.raises(MissingInputError, match="not found"):
        cc.load(tmp_path / "nope.json")
    with pytest.raises(BadInputError, match="directory"):
        cc.load(tmp_path)


def test_bad_header_refused_on_export() -> None:
    c = cc.CalibrationCache({"input": 1.0}, "minmax", SHA, {})
    with pytest.raises(BadInputError, match="header"):
        cc.to_trt_text(c, header="MinMax")


def test_check_model() -> None:
    c = cc.CalibrationCache({"input": 1.0}, "minmax", SHA, {})
    cc.check_model(c, SHA)
    cc.check_model(cc.from_trt_text("TRT-8600-MinMaxCalibration\ninput: 3caa46e8"), SHA)  # no hash: passes
    with pytest.raises(BadInputError, match="recalibrate"):
        cc.check_model(c, "cd" * 32, "cal.json")
