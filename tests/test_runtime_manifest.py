"""Manifest loading and validation, and the ONNX Runtime backend (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import BackendUnavailable, open_backend
from runtime.errors import BundleError, InputError
from runtime.manifest import MANIFEST_NAME, SCHEMA_VERSION, load_manifest
from runtime.types import Modality


def _edit(bundle: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = bundle / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_bundle_manifest_describes_all_six_encoders(tiny_bundle: Path) -> None:
    m = load_manifest(tiny_bundle)
    assert m.schema_version == SCHEMA_VERSION
    assert set(m.modalities) == set(Modality)
    assert m.embed_dim == 32 and len(m.model_id) == 64
    audio = m.spec("audio")
    assert audio.input.shape == ("batch", 1, 128, 204) and audio.input.dtype == "float32"
    assert audio.output.shape == ("batch", 32)
    assert audio.output_scale == pytest.approx(20.0) and audio.clips_per_input == 3
    assert audio.window == {"length_samples": 32000, "hop_samples": 16000, "sample_rate_hz": 16000}
    # Every constant of the pipeline is in the manifest, not hidden in defaults.
    assert audio.preprocess["mean"] == -4.268 and audio.preprocess["fbank"]["num_mel_bins"] == 128
    assert m.spec("text").input.dtype == "int64"
    assert m.spec("text").output_scale == pytest.approx(15.788, abs=1e-3)
    assert m.spec("imu").window["length_samples"] == 2000
    for spec in m.modalities.values():
        assert spec.parity["cosine_min"] >= 0.99999
    assert m.to_dict()["modalities"].keys() == {mod.value for mod in Modality}


def test_round_trip_through_json(bundle_copy: Path) -> None:
    m = load_manifest(bundle_copy)
    m.write()
    assert load_manifest(bundle_copy).to_dict() == m.to_dict()


def test_corrupted_model_file_is_refused_with_its_name(bundle_copy: Path) -> None:
    model = bundle_copy / "imu.fp32.onnx"
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    model.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"imu\.fp32\.onnx: SHA-256 does not match"):
        load_manifest(bundle_copy)
    load_manifest(bundle_copy, verify_hashes=False)  # opt-out still parses


def test_missing_model_file(bundle_copy: Path) -> None:
    (bundle_copy / "depth.fp32.onnx").unlink()
    with pytest.raises(BundleError, match=r"depth\.fp32\.onnx: listed in the manifest but missing"):
        load_manifest(bundle_copy)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda d: d.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda d: d.pop("embed_dim"), "missing or malformed key 'embed_dim'"),
        (lambda d: d["modalities"].update(sonar=d["modalities"]["imu"]), "unknown modality 'sonar'"),
        (lambda d: d["modalities"]["imu"].pop("input"), "missing key 'input'"),
        (lambda d: d["modalities"]["imu"].update(artifacts=[]), "no artifacts listed"),
        (lambda d: d.update(embed_dim=64), "output width 32 != embed_dim 64"),
    ],
)
def test_malformed_manifest_gets_one_clear_line(bundle_copy: Path, change, pattern: str) -> None:  # type: ignore[no-untyped-def]
    _edit(bundle_copy, change)
    with pytest.raises(BundleError, match=pattern) as info:
        load_manifest(bundle_copy)
    assert "\n" not in str(info.value)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no manifest"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        load_manifest(tmp_path)


def test_missing_modality_and_precision_named(tiny_bundle: Path) -> None:
    m = load_manifest(tiny_bundle, verify_hashes=False)
    with pytest.raises(BundleError, match="has no onnx/fp16 artifact"):
        m.spec("audio").artifact("fp16")


def test_ort_backend_checks_feeds(tiny_bundle: Path) -> None:
    m = load_manifest(tiny_bundle, verify_hashes=False)
    spec = m.spec(Modality.IMU)
    with open_backend("ort", str(m.path(spec.artifact().file)), intra_op_threads=1) as backend:
        assert backend.inputs[0].name == spec.input.name and backend.inputs[0].dtype == "float32"
        out = backend.infer({"imu": np.zeros((3, 6, 2000), np.float32) + 0.1})
        assert out[spec.output.name].shape == (3, 32)
        with pytest.raises(InputError, match="dtype float64"):
            backend.infer({"imu": np.zeros((1, 6, 2000))})
        with pytest.raises(InputError, match=r"shape \(1, 6, 1999\)"):
            backend.infer({"imu": np.zeros((1, 6, 1999), np.float32)})
        bad = np.zeros((1, 6, 2000), np.float32)
        bad[0, 2, 7] = np.nan
        with pytest.raises(InputError, match="NaN"):
            backend.infer({"imu": bad})
        with pytest.raises(InputError, match="unexpected input tensor 'x'"):
            backend.infer({"imu": bad, "x": bad})


def test_unknown_backend_and_unloadable_model(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="unknown backend 'tensorflow'"):
        open_backend("tensorflow", "x.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    with pytest.raises(BundleError, match=r"junk\.onnx: ONNX Runtime cannot load it"):
        open_backend("ort", str(junk))


def test_with_artifact_replaces_same_format_and_precision(bundle_copy: Path) -> None:
    from dataclasses import replace

    m = load_manifest(bundle_copy)
    fp32 = m.spec("imu").artifact("fp32")
    fp16 = replace(fp32, precision="fp16", gate={"cosine_mean": 0.9995, "passed": True})
    m2 = m.with_artifact("imu", fp16)
    assert [a.precision for a in m2.spec("imu").artifacts] == ["fp32", "fp16"]
    m3 = m2.with_artifact("imu", replace(fp16, gate={"cosine_mean": 0.9999, "passed": True}))
    assert [a.gate["cosine_mean"] for a in m3.spec("imu").artifacts if a.precision == "fp16"] == [0.9999]
    assert len(m.spec("imu").artifacts) == 1  # the original is unchanged (frozen copies)
    m3.write()
    again = load_manifest(bundle_copy)
    assert again.spec("imu").artifact("fp16").gate == {"cosine_mean": 0.9999, "passed": True}
    assert again.spec("imu").artifact("fp16").forced is False


def test_forced_artifact_warns_at_every_load(bundle_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    from dataclasses import replace

    m = load_manifest(bundle_copy)
    fp32 = m.spec("audio").artifact("fp32")
    bad = replace(fp32, precision="int8", forced=True, gate={"cosine_mean": 0.91, "passed": False})
    m.with_artifact("audio", bad).write()
    for _ in range(2):
        caplog.clear()
        with caplog.at_level("WARNING", logger="edgebind.bundle"):
            loaded = load_manifest(bundle_copy)
        assert loaded.forced_artifacts() == [(Modality.AUDIO, loaded.spec("audio").artifact("int8"))]
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "audio onnx/int8 failed its accuracy gate" in lines[0]
        assert "cosine_mean=0.9100" in lines[0]


def test_unknown_artifact_format_is_refused(bundle_copy: Path) -> None:
    _edit(bundle_copy, lambda d: d["modalities"]["imu"]["artifacts"][0].update(format="tflite"))
    with pytest.raises(BundleError, match="format/precision tflite/fp32"):
        load_manifest(bundle_copy)
