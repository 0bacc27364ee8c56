"""The latency benchmark end to end on the tiny bundle, its refusals, and the GPU script's CPU plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_CHECKPOINT, TINY_CONFIG


def _args(bundle: Path, out: Path, *extra: str) -> list[str]:
    return ["--bundle", str(bundle), "--modalities", "thermal", "imu", "--batch", "1", "--iters", "3",
            "--warmup", "1", "--warmup-s", "0", "--acc-n", "4", "--threads", "1", "--backends", "ort",
            "--precisions", "fp32,fp16,int8", "--config", str(TINY_CONFIG), "--out", str(out), "--name", "t",
            *extra]  # fmt: skip


@pytest.mark.torch
def test_latency_end_to_end(tiny_bundle: Path, tmp_path: Path) -> None:
    from benchmarks.latency import main

    assert main(_args(tiny_bundle, tmp_path, "--checkpoint", str(TINY_CHECKPOINT))) == 0
    data = json.loads((tmp_path / "latency-t.json").read_text())
    assert data["meta"]["model_id"] and data["meta"]["cpu"] and "onnxruntime" in data["meta"]["versions"]
    rows = {(r["modality"], r["engine"], r["precision"], r["batch"]): r for r in data["rows"]}
    assert len(rows) == 2 * 4  # baseline + ort x 3 precisions, per modality
    for mod in ("thermal", "imu"):
        base = rows[(mod, "pytorch-eager", "fp32", 1)]
        assert base["baseline"] and base["status"] == "ok" and base["speedup_vs_baseline"] == pytest.approx(1.0)
        ort = rows[(mod, "ort", "fp32", 1)]
        assert ort["status"] == "ok" and ort["speedup_vs_baseline"] > 0 and ort["throughput_rows_s"] > 0
        assert ort["p50_ms"] <= ort["p90_ms"] <= ort["p99_ms"] and ort["peak_rss_mb"] > 0
        assert ort["cos_min"] > 0.9999 and ort["centred_cos_mean"] > 0.999
        for prec in ("fp16", "int8"):  # present when the bundle has them, an "absent (why)" row otherwise
            row = rows[(mod, "ort", prec, 1)]
            assert row["status"] == "ok" or (row["status"] == "absent" and prec in row["reason"])
    md = (tmp_path / "latency-t.md").read_text()
    assert "| thermal | 1 | ort | fp32 |" in md and "baseline" in md
    png = tmp_path / "latency-t.png"
    assert not png.exists() or png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.torch
def test_model_id_mismatch_is_refused(bundle_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.latency import main

    manifest = bundle_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["model_id"] = "0" * 64
    manifest.write_text(json.dumps(data))
    args = _args(bundle_copy, tmp_path, "--checkpoint", str(TINY_CHECKPOINT), "--modalities", "imu")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model_id is 000000000000" in err[0] and "--checkpoint" in err[0]
    assert not list(tmp_path.glob("latency-*"))


def test_checkpoint_bundle_without_checkpoint_is_refused(tiny_bundle: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from benchmarks.latency import main

    assert main(_args(tiny_bundle, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --checkpoint" in err[0]


def test_report_lists_absent_rows_and_ratios(tmp_path: Path) -> None:
    from benchmarks.latency import add_ratios
    from benchmarks.latency_report import write_report

    ok = {"status": "ok", "p90_ms": 1.0, "p99_ms": 1.0, "throughput_rows_s": 1.0, "cos_mean": 1.0, "cos_min": 0.99}
    rows = [{**ok, "modality": "audio", "engine": "pytorch-eager", "precision": "fp32", "batch": 1, "baseline": True,
             "p50_ms": 300.0},
            {**ok, "modality": "audio", "engine": "ort", "precision": "int8", "batch": 1, "baseline": False,
             "p50_ms": 120.0, "gate": {"cosine_mean": 0.999, "top1_agreement": 0.97, "passed": True}},
            {"modality": "audio", "engine": "tensorrt", "precision": "fp16", "batch": 1, "baseline": False,
             "status": "absent", "reason": "no tensorrt/fp16 artifact"}]  # fmt: skip
    add_ratios(rows)
    assert rows[1]["speedup_vs_baseline"] == pytest.approx(2.5) and rows[2]["speedup_vs_baseline"] is None
    meta = {"model": "m", "cpu": "c", "threads": 2, "date": "d", "versions": {"onnxruntime": "1"}}
    md = write_report({"meta": meta, "rows": rows}, tmp_path, "latency-x").read_text()
    assert "2.50x" in md and "top-1 97.0%" in md and "tensorrt fp16 (batch 1): **absent**" in md


def test_structured_inputs_are_seeded_and_shaped() -> None:
    from benchmarks.common import cosine_stats, structured_inputs

    a = structured_inputs("audio", (1, 128, 204), 3, seed=5)
    assert a.shape == (3, 1, 128, 204) and a.dtype == np.float32
    assert np.array_equal(a, structured_inputs("audio", (1, 128, 204), 3, seed=5))
    text = structured_inputs("text", (77,), 2, seed=1)
    assert text.dtype == np.int64 and (text[:, 0] == 49406).all() and (text == 49407).sum() == 2
    assert structured_inputs("imu", (6, 2000), 1, seed=0).shape == (1, 6, 2000)
    x = np.random.default_rng(0).normal(size=(4, 8))
    assert cosine_stats(x, x)["cos_min"] == pytest.approx(1.0)


@pytest.mark.torch
def test_gpu_script_plumbing_on_cpu(tmp_path: Path) -> None:
    from benchmarks.gpu import main

    args = ["--device", "cpu", "--config", str(TINY_CONFIG), "--modalities", "imu", "--batch", "1,2", "--iters",
            "2", "--warmup", "1", "--compile-s", "0", "--out", str(tmp_path), "--name", "cpu"]  # fmt: skip
    assert main(args) == 0
    data = json.loads(next(tmp_path.glob("gpu-cpu-*.json")).read_text())
    rows = {(r["engine"], r["precision"], r["batch"]): r for r in data["rows"]}
    assert rows[("pytorch-eager", "fp32", 1)]["baseline"] and rows[("pytorch-eager", "fp32", 2)]["status"] == "ok"
    assert rows[("cuda-graph", "fp16", 1)]["status"] == "absent"  # no CUDA here: reported, not dropped
    assert rows[("torch.compile", "fp16", 1)]["status"] == "skipped"
    assert {("tensorrt", "int8", 2), ("ort-cuda", "fp16", 1), ("torch-backend", "fp16", 1)} <= set(rows)
    fp16 = rows[("pytorch-eager", "fp16", 2)]
    assert fp16["status"] == "error" or fp16["cos_min"] > 0.99


@pytest.mark.torch
def test_gpu_budget_skips_with_a_reason() -> None:
    import argparse

    from benchmarks.gpu import Ctx, measure_variant

    ctx = Ctx(argparse.Namespace(), None, deadline=0.0, work=Path("."))
    measure_variant(ctx, ("audio", "torch.compile", "fp16", 1), lambda: lambda: None, need_s=10)
    assert ctx.rows[0]["status"] == "skipped" and "time budget" in ctx.rows[0]["reason"]
