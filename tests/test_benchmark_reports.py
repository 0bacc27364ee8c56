"""Benchmark report writers: JSON + Markdown side by side, and the encoder chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.report import save_report


def _result(tmp_path: Path) -> Path:
    timings = [
        {"modality": m, "engine": e, "batch": 1, "iters": 3, "p50_ms": ms, "p90_ms": ms, "min_ms": ms}
        for m, e, ms in [("imu", "pytorch-fp32-eager", 40.0), ("imu", "onnxruntime-fp32", 20.0),
                         ("vision", "pytorch-fp32-eager", 1300.0), ("vision", "onnxruntime-fp32", 1200.0),
                         ("audio-preprocess", "numpy", 1.0)]
    ]  # fmt: skip
    meta = {"model": "imagebind_huge", "cpu": "test cpu", "threads": 2, "date": "2026-01-01"}
    return save_report(tmp_path, "encoders-x", {"meta": meta, "timings": timings}, ["# t", "", "| a |"])


def test_save_report_writes_both_files(tmp_path: Path) -> None:
    md = _result(tmp_path)
    assert md.read_text() == "# t\n\n| a |\n"
    data = json.loads((tmp_path / "encoders-x.json").read_text())
    assert data["meta"]["threads"] == 2 and len(data["timings"]) == 5


def test_encoder_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks.plot import main

    _result(tmp_path)
    assert main([str(tmp_path / "encoders-x.json")]) == 0
    png = tmp_path / "encoders-x.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
