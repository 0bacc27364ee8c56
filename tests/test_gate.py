"""The accuracy gate: metrics, thresholds, report file, and real FP16/INT8 graphs in ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibration.gate import (
    DEFAULT_THRESHOLDS,
    REPORT_NAME,
    GateThresholds,
    caption_bank,
    compare_embeddings,
    judge,
    run_gate,
    window_bank,
    write_gate_report,
)
from calibration.sets import build_calibration_set, build_held_out_set
from runtime.errors import ConfigError, InputError
from runtime.manifest import ModelManifest, load_manifest

SIM = "sim://demo?seed=1"


def _bank(rng: np.random.Generator, p: int = 6, d: int = 16) -> np.ndarray:
    return rng.standard_normal((p, d)).astype(np.float32)


def test_identical_embeddings_pass_every_default() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((40, 16))
    m = compare_embeddings(ref, 3.0 * ref, _bank(rng))  # scale does not matter
    assert m.mean == pytest.approx(1.0) and m.p1 == pytest.approx(1.0) and m.agreement == 1.0
    for precision in ("fp16", "int8"):
        assert judge(m, GateThresholds.for_precision(precision)) == (True, ())


def test_noise_lowers_cosine_and_flips_prompts() -> None:
    rng = np.random.default_rng(1)
    bank = _bank(rng)
    ref = rng.standard_normal((200, 16))
    noisy = ref + 0.5 * rng.standard_normal(ref.shape)
    m = compare_embeddings(ref, noisy, bank)
    assert 0.8 < m.mean < 0.98 and m.p1 < m.mean and 0.3 < m.agreement < 1.0
    passed, reasons = judge(m, DEFAULT_THRESHOLDS["int8"])
    assert not passed and any(r.startswith("cosine mean") for r in reasons)
    assert any(r.startswith("top-1 agreement") for r in reasons)


def test_one_broken_row_fails_the_percentile_not_the_mean() -> None:
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((100, 16))
    cand = ref.copy()
    cand[7] = -cand[7]  # one window turned around; the NaN row counts as cosine -1
    cand[8] = np.nan
    m = compare_embeddings(ref, cand, _bank(rng))
    assert m.mean == pytest.approx(0.96) and m.p1 < 0.0
    passed, reasons = judge(m, GateThresholds(cosine_mean=0.95, cosine_p1=0.9, top1_agreement=0.9))
    assert not passed and reasons == (f"cosine p1 {m.p1:.5f} < 0.9",)


def test_prompts_tied_in_fp32_are_not_a_disagreement() -> None:
    ref = np.array([[1.0, 0.0]])
    bank = np.array([[0.9, np.sqrt(1 - 0.81)], [0.8995, -np.sqrt(1 - 0.8995**2)]])  # FP32 scores 0.9 and 0.8995
    cand = np.array([[1.0, -0.3]])  # turned towards the second prompt: it now wins
    tied = compare_embeddings(ref, cand, bank)
    assert tied.agreement == 1.0 and tied.strict == 0.0 and tied.margin_median == pytest.approx(5e-4)
    assert compare_embeddings(ref, cand, bank, tie=0.0).agreement == 0.0


def test_defaults_and_bad_inputs() -> None:
    assert DEFAULT_THRESHOLDS["fp16"] == GateThresholds(0.999, 0.995, 0.99)
    assert DEFAULT_THRESHOLDS["int8"] == GateThresholds(0.98, 0.95, 0.95)
    with pytest.raises(ConfigError, match="fp8"):
        GateThresholds.for_precision("fp8")
    with pytest.raises(InputError, match="do not match"):
        compare_embeddings(np.ones((3, 4)), np.ones((3, 5)), np.ones((2, 4)))
    with pytest.raises(InputError, match=">= 2 prompts"):
        compare_embeddings(np.ones((3, 4)), np.ones((3, 4)), np.ones((1, 4)))
    rows, bank = window_bank(np.arange(10), 4)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5] and bank.tolist() == [6, 7, 8, 9]


def test_report_file_merges_entries(tmp_path: Path) -> None:
    write_gate_report(tmp_path, [{"modality": "audio", "precision": "int8", "passed": False}])
    write_gate_report(tmp_path, [{"modality": "imu", "precision": "fp16", "passed": True},
                                 {"modality": "audio", "precision": "int8", "passed": True}])  # fmt: skip
    doc = json.loads((tmp_path / REPORT_NAME).read_text())
    assert set(doc["entries"]) == {"audio/int8", "imu/fp16"} and doc["entries"]["audio/int8"]["passed"] is True


@pytest.fixture(scope="module")
def manifest(tiny_bundle: Path) -> ModelManifest:
    return load_manifest(tiny_bundle)


def test_fp16_passes_on_the_tiny_bundle(manifest: ModelManifest, tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="FP16 conversion needs the onnx package (export extra)")
    from export.fp16 import convert_fp16

    bank, name = caption_bank(manifest)
    assert name == "text:sim-captions (13)" and bank.shape == (13, manifest.embed_dim)
    for mod in ("audio", "thermal"):
        spec = manifest.spec(mod)
        fp32 = manifest.path(spec.artifact("fp32").file)
        fp16 = convert_fp16(fp32, tmp_path / f"{mod}.fp16.onnx").path
        held = build_held_out_set(manifest, mod, SIM, 12)
        result = run_gate(fp32, fp16, spec.input.name, spec.output.name, held.arrays, bank,
                          modality=mod, precision="fp16", bank=name)  # fmt: skip
        assert result.passed, result.line()
        assert result.cosine_mean >= 0.999 and result.windows == 12 and result.prompts == 13
        assert result.summary()["thresholds"]["cosine_mean"] == 0.999


def test_int8_calibrated_a_thousand_times_too_small_is_rejected(manifest: ModelManifest, tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="INT8 quantization needs the onnx package (export extra)")
    from calibration.quantize import QuantConfig, quantize_int8

    spec = manifest.spec("thermal")
    fp32 = manifest.path(spec.artifact("fp32").file)
    calib = build_calibration_set(manifest, "thermal", SIM, 8)
    held = build_held_out_set(manifest, "thermal", SIM, 12)
    bank, name = caption_bank(manifest)
    verdicts = {}
    for label, scale in (("good", 1.0), ("broken", 1e-3)):
        dst = tmp_path / label / "thermal.int8.onnx"
        quantize_int8(fp32, dst, spec.input.name, calib.arrays * np.float32(scale), QuantConfig(method="minmax"))
        verdicts[label] = run_gate(fp32, dst, spec.input.name, spec.output.name, held.arrays, bank,
                                   modality="thermal", precision="int8", bank=name)  # fmt: skip
    assert verdicts["good"].passed, verdicts["good"].line()
    broken = verdicts["broken"]
    assert not broken.passed and broken.cosine_mean < 0.98
    assert "cosine mean" in broken.reasons[0] and "FAILED" in broken.line()


def test_centred_cosine_sees_what_raw_cosine_hides() -> None:
    # Every row is a shared direction plus a small input-dependent part; the candidate keeps the
    # shared direction but replaces the input-dependent part with noise.
    rng = np.random.default_rng(3)
    shared = rng.standard_normal(64)
    ref = shared + 0.05 * rng.standard_normal((40, 64))
    cand = shared + 0.05 * rng.standard_normal((40, 64))
    bank = rng.standard_normal((5, 64))
    broken = compare_embeddings(ref, cand, bank)
    assert broken.mean > 0.99 and abs(broken.centred_mean) < 0.3
    kept = compare_embeddings(ref, ref + 1e-4 * rng.standard_normal((40, 64)), bank)
    assert kept.centred_mean > 0.99
