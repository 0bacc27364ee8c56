"""``python -m export.engine``: profiles, builder flow, manifest update, CLI (TensorRT faked or skipped).

TensorRT cannot exist on this machine: the builder-flow tests use a fake ``tensorrt``
module that records every call. The real build runs only where TensorRT and a GPU are
(marked ``tensorrt``/``gpu``).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from export import engine
from export.engine import EngineOptions, batch_profile, build_engines, parse_batches, parse_precisions
from export.engine_build import network_flags, parser_errors
from runtime.backends.tensorrt import GpuInfo
from runtime.errors import EdgebindError
from runtime.manifest import Artifact, ModalitySpec, ModelManifest, TensorSpec, file_sha256, load_manifest
from runtime.types import Modality

HAS_TRT = importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None
GPU = GpuInfo("Orin", "8.7")


# ---- a bundle that needs no torch: dummy ONNX bytes (the fake builder never reads them) ----


def _spec(root: Path, mod: Modality, row: tuple[int, ...], clips: int, precisions: tuple[str, ...]) -> ModalitySpec:
    arts = []
    for prec in precisions:
        path = root / f"{mod.value}.{prec}.onnx"
        path.write_bytes(f"onnx {mod.value} {prec}".encode())
        arts.append(Artifact(path.name, "onnx", prec, file_sha256(path), path.stat().st_size))
    return ModalitySpec(
        modality=mod,
        input=TensorSpec("x", ("batch", *row), "float32"),
        output=TensorSpec("vectors", ("batch", 4), "float32"),
        output_scale=1.0,
        clips_per_input=clips,
        window={},
        preprocess={},
        artifacts=tuple(arts),
    )


@pytest.fixture()
def fake_bundle(tmp_path: Path) -> Path:
    """audio (3 clips per window, fp32+fp16) and imu (1 clip, fp32 only)."""
    root = tmp_path / "bundle"
    root.mkdir()
    specs = {
        Modality.AUDIO: _spec(root, Modality.AUDIO, (1, 8, 6), 3, ("fp32", "fp16")),
        Modality.IMU: _spec(root, Modality.IMU, (6, 20), 1, ("fp32",)),
    }
    ModelManifest(root=root, model_id="0" * 64, model_name="t", embed_dim=4, modalities=specs).write()
    return root


# ---- the fake tensorrt module ----


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []


class FakeTRT:
    """TensorRT cannot exist here; this fake records calls (TensorRT 10 layout, or 11 without the flag)."""

    def __init__(self, strongly_typed_member: bool = True, parse_ok: bool = True, plan: bytes | None = b"PLAN") -> None:
        self.__version__ = "10.3.0.30"
        self.rec = _Recorder()
        members = {"STRONGLY_TYPED": 0} if strongly_typed_member else {}
        members["PREFER_JIT_PYTHON_PLUGINS"] = 2
        self.NetworkDefinitionCreationFlag = SimpleNamespace(**members)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
        self.BuilderFlag = SimpleNamespace(FP16="FP16", INT8="INT8")
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level=0: None})
        self.parse_ok, self.plan = parse_ok, plan
        fake = self

        class Builder:
            def __init__(self, logger: Any) -> None:
                pass

            def create_network(self, flags: int) -> str:
                fake.rec.calls.append(("create_network", flags))
                return "network"

            def create_builder_config(self) -> Any:
                return _Config(fake.rec)

            def create_optimization_profile(self) -> Any:
                return _Profile(fake.rec)

            def build_serialized_network(self, network: Any, config: Any) -> Any:
                fake.rec.calls.append(("build", network))
                return None if fake.plan is None else memoryview(fake.plan)

        class OnnxParser:
            num_errors = 0 if parse_ok else 2

            def __init__(self, network: Any, logger: Any) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                fake.rec.calls.append(("parse_from_file", path))
                return fake.parse_ok

            def get_error(self, i: int) -> Any:
                return SimpleNamespace(
                    node=lambda: 7 + i, node_name=lambda: f"n{i}", node_operator=lambda: "Einsum",
                    desc=lambda: f"unsupported\n  thing {i}",
                )  # fmt: skip

        self.Builder, self.OnnxParser = Builder, OnnxParser

    def names(self) -> list[str]:
        return [c[0] for c in self.rec.calls]


class _Profile:
    def __init__(self, rec: _Recorder) -> None:
        self.rec = rec

    def set_shape(self, name: str, lo: tuple[int, ...], opt: tuple[int, ...], hi: tuple[int, ...]) -> None:
        self.rec.calls.append(("set_shape", name, lo, opt, hi))


class _Cache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> memoryview:
        return memoryview(self.blob + b"+timed")


class _Config:
    def __init__(self, rec: _Recorder) -> None:
        self.rec, self.cache = rec, None

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.rec.calls.append(("set_memory_pool_limit", pool, size))

    def add_optimization_profile(self, profile: Any) -> int:
        self.rec.calls.append(("add_optimization_profile",))
        return 0

    def create_timing_cache(self, blob: bytes) -> _Cache:
        self.rec.calls.append(("create_timing_cache", bytes(blob)))
        return _Cache(bytes(blob))

    def set_timing_cache(self, cache: _Cache, ignore_mismatch: bool) -> bool:
        self.cache = cache
        return True

    def get_timing_cache(self) -> _Cache:
        return self.cache  # type: ignore[return-value]

    def set_flag(self, flag: Any) -> None:
        self.rec.calls.append(("set_flag", flag))

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "int8_calibrator":
            raise AssertionError("calibrators are removed in TensorRT 11")
        object.__setattr__(self, name, value)


# ---- pure logic ----


def test_parse_batches_and_precisions() -> None:
    assert parse_batches("1,8") == (1, 8)
    assert parse_batches("4, 1,16") == (4, 1, 16)
    for bad in ("", "0,8", "a"):
        with pytest.raises(EdgebindError, match="--batch"):
            parse_batches(bad)
    assert parse_precisions("fp16,INT8") == ("fp16", "int8")
    with pytest.raises(EdgebindError, match="--precision"):
        parse_precisions("bf16")


def test_profile_counts_rows_per_window(fake_bundle: Path) -> None:
    m = load_manifest(fake_bundle)
    audio = batch_profile(m.spec("audio"), (1, 8))  # 3 clips per window
    assert audio == {"input": "x", "min": [1, 1, 8, 6], "opt": [3, 1, 8, 6], "max": [24, 1, 8, 6]}
    imu = batch_profile(m.spec("imu"), (4, 1, 16))  # first listed = most common = opt
    assert (imu["min"][0], imu["opt"][0], imu["max"][0]) == (1, 4, 16)
    json.dumps(audio)  # goes into the manifest as is


def test_network_flags_follow_what_the_module_offers() -> None:
    assert network_flags(FakeTRT(strongly_typed_member=True)) == 1 << 0
    assert network_flags(FakeTRT(strongly_typed_member=False)) == 0  # 11.x: always strongly typed


def test_parser_errors_are_one_line_each() -> None:
    fake = FakeTRT(parse_ok=False)
    lines = parser_errors(fake.OnnxParser(None, None), Path("/b/audio.int8.onnx"))
    assert lines == [
        "audio.int8.onnx: node 7 (Einsum n0): unsupported thing 0",
        "audio.int8.onnx: node 8 (Einsum n1): unsupported thing 1",
    ]


# ---- builder flow with the fake ----


def test_build_records_engine_and_fingerprint(fake_bundle: Path) -> None:
    fake = FakeTRT()
    opts = EngineOptions(fake_bundle, precisions=("fp16", "fp32"), batches=(1, 8), workspace_mb=512)
    results = build_engines(opts, trt=fake, gpu=GPU, verifier=None)
    got = {(r.modality.value, r.precision): r for r in results}
    assert got["imu", "fp16"].note.startswith("skipped") and got["imu", "fp16"].plan is None
    assert got["audio", "fp16"].plan == fake_bundle / "audio.fp16.plan"
    assert (fake_bundle / "audio.fp16.plan").read_bytes() == b"PLAN"
    # strongly typed, workspace capped, profile set, no precision flags, no calibrator
    assert ("create_network", 1) in fake.rec.calls
    assert ("set_memory_pool_limit", "WORKSPACE", 512 << 20) in fake.rec.calls
    assert ("set_shape", "x", (1, 1, 8, 6), (3, 1, 8, 6), (24, 1, 8, 6)) in fake.rec.calls
    assert "set_flag" not in fake.names()
    m = load_manifest(fake_bundle)  # hashes of the new plans verified
    art = m.spec("audio").artifact("fp16", "tensorrt")
    assert art.file == "audio.fp16.plan" and art.sha256 == file_sha256(fake_bundle / "audio.fp16.plan")
    eng = art.engine
    assert (eng["tensorrt_version"], eng["gpu_name"], eng["compute_capability"]) == ("10.3.0.30", "Orin", "8.7")
    assert eng["profiles"][0]["max"] == [24, 1, 8, 6] and eng["workspace_mb"] == 512
    assert eng["built_from"] == "audio.fp16.onnx" and eng["built_at"].endswith("Z")
    assert m.spec("audio").artifact("fp16", "onnx")  # the ONNX stays


def test_timing_cache_is_loaded_and_saved(fake_bundle: Path, tmp_path: Path) -> None:
    cache = tmp_path / "caches" / "t.cache"
    opts = EngineOptions(fake_bundle, precisions=("fp32",), modalities=(Modality.IMU,), timing_cache=cache)
    fake = FakeTRT()
    build_engines(opts, trt=fake, gpu=GPU, verifier=None)
    assert ("create_timing_cache", b"") in fake.rec.calls and cache.read_bytes() == b"+timed"
    again = FakeTRT()
    build_engines(opts, trt=again, gpu=GPU, verifier=None)
    assert ("create_timing_cache", b"+timed") in again.rec.calls
    assert cache.read_bytes() == b"+timed+timed"
    default = FakeTRT()
    build_engines(EngineOptions(fake_bundle, precisions=("fp32",)), trt=default, gpu=GPU, verifier=None)
    assert (fake_bundle / engine.TIMING_CACHE_NAME).is_file()


def test_rebuild_replaces_the_artifact(fake_bundle: Path) -> None:
    opts = EngineOptions(fake_bundle, precisions=("fp32",), modalities=(Modality.IMU,))
    build_engines(opts, trt=FakeTRT(plan=b"one"), gpu=GPU, verifier=None)
    build_engines(opts, trt=FakeTRT(plan=b"two"), gpu=GpuInfo("NVIDIA H100", "9.0"), verifier=None)
    arts = [a for a in load_manifest(fake_bundle).spec("imu").artifacts if a.format == "tensorrt"]
    assert len(arts) == 1 and arts[0].engine["gpu_name"] == "NVIDIA H100"


def test_verifier_failure_drops_the_plan(fake_bundle: Path) -> None:
    opts = EngineOptions(fake_bundle, precisions=("fp32",), modalities=(Modality.IMU,), cuda_graphs=True)
    seen = []

    def verifier(plan: Path, spec: ModalitySpec, rows: Any, graphs: bool) -> str:
        seen.append((plan.name, list(rows), graphs))
        return "imu.fp32.plan: CUDA-graph replay differs"

    (result,) = build_engines(opts, trt=FakeTRT(), gpu=GPU, verifier=verifier)
    assert seen == [("imu.fp32.plan", [1, 8], True)] and "replay differs" in result.error
    assert not (fake_bundle / "imu.fp32.plan").exists()
    ok = build_engines(opts, trt=FakeTRT(), gpu=GPU, verifier=lambda *a: "")
    assert load_manifest(fake_bundle).spec("imu").artifact("fp32", "tensorrt").engine["cuda_graphs"] is True
    assert "CUDA graphs" in ok[0].note


def test_cli_reports_parser_errors_one_line_each(
    fake_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(engine, "import_tensorrt", lambda: FakeTRT(parse_ok=False))
    monkeypatch.setattr(engine, "query_gpu", lambda: GPU)
    monkeypatch.setattr(engine, "_default_verifier", lambda: None)
    assert engine.main(["--bundle", str(fake_bundle), "--precision", "fp32", "--modalities", "imu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: imu fp32: imu.fp32.onnx: node 7 (Einsum n0): unsupported thing 0",
        "error: imu fp32: imu.fp32.onnx: node 8 (Einsum n1): unsupported thing 1",
    ]


def test_cli_builds_and_summarises(
    fake_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(engine, "import_tensorrt", FakeTRT)
    monkeypatch.setattr(engine, "query_gpu", lambda: GPU)
    monkeypatch.setattr(engine, "_default_verifier", lambda: None)
    argv = ["--bundle", str(fake_bundle), "--batch", "1,4", "--workspace-mb", "256"]
    assert engine.main(argv) == 0  # default fp16,int8: audio fp16 built, the rest skipped
    out = capsys.readouterr().out
    assert "audio fp16: audio.fp16.plan" in out and "imu int8: skipped" in out
    assert "built 1 engine(s)" in out
    assert engine.main([*argv, "--batch", "0"]) == 2


def test_cli_without_tensorrt_names_the_install(fake_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if HAS_TRT:
        pytest.skip("TensorRT is installed here")
    assert engine.main(["--bundle", str(fake_bundle)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "python3-libnvinfer" in err and "pip install tensorrt" in err


def test_engine_module_runs_without_torch() -> None:
    # export/engine*.py import nothing from torch or export.model (device side).
    for name in ("engine.py", "engine_build.py"):
        text = (Path(engine.__file__).parent / name).read_text()
        assert "import torch" not in text and "export.model" not in text and "export.onnx_export" not in text


# ---- real TensorRT (skipped here) ----


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT and pycuda are not installed (no NVIDIA GPU stack here)")
def test_real_build_and_run(bundle_copy: Path) -> None:
    results = build_engines(
        EngineOptions(bundle_copy, precisions=("fp32",), modalities=(Modality.IMU,), batches=(1, 4), cuda_graphs=True)
    )
    assert results[0].plan is not None, results[0].error
    art = load_manifest(bundle_copy).spec("imu").artifact("fp32", "tensorrt")
    assert art.engine["cuda_graphs"] is True and art.engine["gpu_name"]
