"""Adding gated FP16/INT8 encoders to a bundle: `python -m export precision` and `bundle --precision`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.__main__ import main
from runtime.embedder import Embedder
from runtime.manifest import load_manifest
from runtime.types import Modality

pytest.importorskip("onnx", reason="FP16/INT8 conversion needs the onnx package (export extra)")
ROOT = Path(__file__).resolve().parents[1]


def _break_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibrate on rows a thousand times too small: activation ranges clip everything (a broken INT8)."""
    from calibration.sets import CalibrationSet, build_calibration_set
    from export import precision

    def scaled(*args, **kwargs) -> CalibrationSet:  # type: ignore[no-untyped-def]
        got = build_calibration_set(*args, **kwargs)
        return CalibrationSet(got.modality, got.arrays * np.float32(1e-3), got.info)

    monkeypatch.setattr(precision, "build_calibration_set", scaled)


def test_precision_path_never_imports_torch() -> None:
    code = ("import sys, export.__main__, export.precision, export.fp16, calibration.quantize, calibration.gate\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_cli_adds_gated_fp16_and_int8(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["precision", "--bundle", str(bundle_copy), "--precision", "fp16,int8", "--modalities", "depth",
                 "thermal", "--calibration-windows", "8", "--calibration", "sim://demo?seed=2", "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "cos mean" in out and "4/4 artifact(s) written" in out
    manifest = load_manifest(bundle_copy)  # hashes of the new files verified
    report = json.loads((bundle_copy / "gate_report.json").read_text())["entries"]
    assert set(report) == {"depth/fp16", "depth/int8", "thermal/fp16", "thermal/int8"}
    for mod in ("depth", "thermal"):
        spec = manifest.spec(mod)
        for prec in ("fp16", "int8"):
            art = spec.artifact(prec)
            assert art.file == f"{mod}.{prec}.onnx" and not art.forced
            assert art.gate["passed"] and art.gate["windows"] == 8 and art.gate["report"] == "gate_report.json"
            assert report[f"{mod}/{prec}"]["written"] and report[f"{mod}/{prec}"]["held_out"]["split"] == "held_out"
        cal = spec.artifact("int8").calibration
        assert cal["source"] == "sim://demo?seed=2" and cal["scene_seed"] == 2 and cal["count"] == 8
        assert cal["method"] == "percentile" and cal["split"] == "calibration"
        assert not spec.artifact("fp16").calibration
    assert not list(bundle_copy.glob(".staging-*"))
    x = np.stack([np.linspace(0, 1, 224 * 224, dtype=np.float32).reshape(1, 224, 224)] * 2)
    with Embedder(manifest, precision="fp32") as e32, Embedder(manifest, precision="int8") as e8:
        a, b = e32.embed(Modality.THERMAL, x).unit(), e8.embed(Modality.THERMAL, x).unit()
    assert np.all(np.sum(a * b, axis=1) > 0.98)


def test_a_broken_int8_is_rejected_then_forced(
    bundle_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    _break_calibration(monkeypatch)
    args = ["precision", "--bundle", str(bundle_copy), "--precision", "int8", "--modalities", "thermal",
            "--calibration-windows", "8", "--calibration-method", "minmax", "--quiet"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: thermal int8: gate FAILED (cosine mean")
    assert not (bundle_copy / "thermal.int8.onnx").exists() and not list(bundle_copy.glob(".staging-*"))
    assert [a.precision for a in load_manifest(bundle_copy).spec("thermal").artifacts] == ["fp32"]
    entry = json.loads((bundle_copy / "gate_report.json").read_text())["entries"]["thermal/int8"]
    assert entry["passed"] is False and entry["written"] is False

    assert main([*args, "--force"]) == 0
    assert capsys.readouterr().err.startswith("warning: thermal int8: gate FAILED")
    with caplog.at_level(logging.WARNING, logger="edgebind.bundle"):
        art = load_manifest(bundle_copy).spec("thermal").artifact("int8")
    assert art.forced and not art.gate["passed"] and (bundle_copy / art.file).is_file()
    assert any("thermal.int8.onnx" in r.getMessage() for r in caplog.records)
    entry = json.loads((bundle_copy / "gate_report.json").read_text())["entries"]["thermal/int8"]
    assert entry["forced"] is True and entry["written"] is True


def test_bad_calibration_source_is_one_line(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["precision", "--bundle", str(bundle_copy), "--precision", "int8", "--modalities", "imu",
                 "--calibration", "ftp://example.org/data", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not replayable" in err[0]
    assert main(["precision", "--bundle", str(bundle_copy), "--precision", "fp8"]) == 2
    assert "fp32, fp16, int8" in capsys.readouterr().err


@pytest.mark.torch
def test_bundle_command_exports_fp32_then_gated_fp16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import TINY_CONFIG

    out = tmp_path / "b"
    base = ["bundle", "--config", str(TINY_CONFIG), "--random-weights", "--modalities", "thermal", "--out", str(out),
            "--quiet"]  # fmt: skip
    assert main([*base, "--precision", "fp32,fp16", "--calibration-windows", "4"]) == 0
    printed = capsys.readouterr().out
    assert "exported 1 encoder(s)" in printed and "windows:held-out" in printed  # no text encoder: window bank
    spec = load_manifest(out).spec("thermal")
    assert [a.precision for a in spec.artifacts] == ["fp32", "fp16"] and spec.artifact("fp16").gate["passed"]
    assert main(base) == 0  # a re-export drops what was derived from the old graphs
    assert not (out / "thermal.fp16.onnx").exists() and not (out / "gate_report.json").exists()


def test_folder_source_without_data_for_a_modality(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.preprocess.wav import write_wav

    folder = bundle_copy.parent / "clips"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        write_wav(folder / f"c{i}.wav", 0.1 * rng.standard_normal(16000 * 3).astype(np.float32), 16000)
    code = main(["precision", "--bundle", str(bundle_copy), "--precision", "fp16", "--modalities", "audio", "thermal",
                 "--calibration", str(folder), "--calibration-windows", "4", "--quiet"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and "1/2 artifact(s) written" in captured.out
    assert captured.err.startswith("error: thermal fp16: not written: calibration source") and ".npy" in captured.err
    manifest = load_manifest(bundle_copy)
    assert manifest.spec("audio").artifact("fp16").gate["passed"]
    assert [a.precision for a in manifest.spec("thermal").artifacts] == ["fp32"]
