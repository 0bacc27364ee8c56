"""Torch backend and ``python -m export.torch_program``: archive safety, parity with ONNX Runtime, CLI."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import open_backend
from runtime.backends.pyt import META_NAME, inspect_program
from runtime.errors import BundleError
from runtime.manifest import load_manifest

FIXTURES = Path(__file__).parent / "fixtures" / "official_tiny"
CONFIG = str(FIXTURES / "tiny_config.json")
CHECKPOINT = str(FIXTURES / "tiny_official.pt")
META = {"inputs": [{"name": "x", "shape": ["batch", 4], "dtype": "float32"}], "outputs": []}


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"m/{name}", data)
    return path


def _weights(use_pickle: bool = False, path_name: str = "weight_0") -> bytes:
    return json.dumps({"config": {"l.weight": {"path_name": path_name, "use_pickle": use_pickle}}}).encode()


GOOD = {
    "models/model.json": b"{}",
    f"extra/{META_NAME}": json.dumps(META).encode(),
    "data/weights/model_weights_config.json": _weights(),
    "data/weights/weight_0": b"\0" * 16,
    "data/sample_inputs/model.pt": b"",
}


def test_inspect_accepts_plain_tensors(tmp_path: Path) -> None:
    assert inspect_program(_archive(tmp_path / "m.pt2", GOOD)) == META


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"data/weights/model_weights_config.json": _weights(use_pickle=True)}, "refusing l.weight"),
        ({"data/constants/model_constants_config.json": _weights(path_name="opaque_obj_0")}, "refusing l.weight"),
        ({"data/aotinductor/model/model.so": b"ELF"}, "refusing data/aotinductor/model/model.so"),
        ({"data/weights/model.pt": b"PK"}, "refusing data/weights/model.pt"),
        ({"data/sample_inputs/model.pt": b"pickle"}, "refusing pickled sample inputs"),
        ({f"extra/{META_NAME}": None}, "no edgebind.json"),
        ({"models/other.json": b"{}"}, "exactly one program"),
    ],
)
def test_inspect_refuses_pickles_and_code(tmp_path: Path, change: dict[str, bytes | None], match: str) -> None:
    members = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(BundleError, match=match) as info:
        inspect_program(_archive(tmp_path / "m.pt2", members))
    assert "\n" not in str(info.value)


def test_inspect_refuses_a_non_archive(tmp_path: Path) -> None:
    bad = tmp_path / "x.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(BundleError, match=r"not a readable torch\.export archive"):
        inspect_program(bad)


@pytest.fixture(scope="module")
def program_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle with imu programs (fp32, fp16) written by the CLI."""
    pytest.importorskip("torch")
    import shutil

    from export import torch_program

    dest = tmp_path_factory.mktemp("programs") / "bundle"
    shutil.copytree(tiny_bundle, dest)
    argv = ["--bundle", str(dest), "--config", CONFIG, "--checkpoint", CHECKPOINT, "--modalities", "imu"]
    assert torch_program.main([*argv, "--precision", "fp32,fp16"]) == 0
    return dest


@pytest.mark.torch
def test_cli_records_artifacts(program_bundle: Path) -> None:
    m = load_manifest(program_bundle)  # hashes verified
    for precision, floor in (("fp32", 0.99999), ("fp16", 0.999)):
        art = m.spec("imu").artifact(precision, "torch_export")
        assert art.file == f"imu.{precision}.pt2" and art.gate["cosine_min"] >= floor and art.gate["passed"]
        assert art.engine["torch_version"] and art.engine["dynamic_batch"] == [1, 1024]
        meta = inspect_program(program_bundle / art.file)
        assert meta["inputs"][0]["name"] == "imu" and meta["outputs"][0]["name"] == "vectors"
    assert m.spec("imu").artifact("fp32", "onnx")
    # The program carries the IMU tower's weights only, not the other five towers of the model.
    onnx_bytes = m.spec("imu").artifact("fp32", "onnx").size_bytes
    assert m.spec("imu").artifact("fp32", "torch_export").size_bytes < 1.5 * onnx_bytes


@pytest.mark.torch
@pytest.mark.parametrize("batch", [1, 5])
def test_torch_backend_matches_onnxruntime(program_bundle: Path, batch: int) -> None:
    m = load_manifest(program_bundle, verify_hashes=False)
    spec = m.spec("imu")
    x = np.random.default_rng(batch).standard_normal((batch, 6, 2000)).astype(np.float32)
    with open_backend("ort", str(m.path(spec.artifact().file)), intra_op_threads=1) as ort:
        ref = ort.infer({"imu": x})["vectors"].astype(np.float64)
    for precision, fp16, floor in (("fp32", False, 0.99999), ("fp16", False, 0.999), ("fp16", True, 0.999)):
        art = spec.artifact(precision, "torch_export")
        with open_backend("torch", str(m.path(art.file)), fp16=fp16, engine_fingerprint=art.engine) as backend:
            assert [s.name for s in backend.inputs] == ["imu"]
            got = backend.infer({"imu": x})["vectors"]
        assert got.dtype == np.float32 and got.shape == ref.shape
        cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        assert cos.min() >= floor, (precision, fp16, cos.min())
    with pytest.raises(BundleError, match="fp16 requested but this is a fp32 program"):
        open_backend("torch", str(m.path(spec.artifact("fp32", "torch_export").file)), fp16=True)


@pytest.mark.torch
def test_wrong_weights_are_refused(bundle_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from export import torch_program

    argv = ["--bundle", str(bundle_copy), "--config", CONFIG, "--modalities", "imu"]
    assert torch_program.main([*argv, "--random-weights", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model_id" in err and "bundle" in err
    assert torch_program.main(argv) == 2  # no weights given
    assert "exactly one of --checkpoint" in capsys.readouterr().err
    assert not list(bundle_copy.glob("*.pt2"))


@pytest.mark.torch
@pytest.mark.gpu
def test_torch_backend_cuda_graphs(program_bundle: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    m = load_manifest(program_bundle, verify_hashes=False)
    path = str(m.path(m.spec("imu").artifact("fp16", "torch_export").file))
    x = np.random.default_rng(0).standard_normal((3, 6, 2000)).astype(np.float32)
    with open_backend("torch", path) as cpu:
        ref = cpu.infer({"imu": x})["vectors"]
    with open_backend("torch", path, device="cuda", fp16=True, cuda_graphs=True) as gpu:
        for n in (3, 1, 3):
            out = gpu.infer({"imu": x[:n]})["vectors"]
            np.testing.assert_allclose(out, ref[:n], rtol=2e-2, atol=2e-2)
            out[:] = 0  # the caller owns the array: the next replay must not see this
