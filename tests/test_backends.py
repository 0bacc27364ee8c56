"""Backend registry, ONNX Runtime provider selection, TensorRT fingerprint checks (no GPU needed).

TensorRT and pycuda cannot exist on this machine: the TensorRT backend's pure logic
(fingerprint comparison, GPU query parsing, refusals) is tested here; running an
engine is marked ``tensorrt``/``gpu`` and skipped where absent.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from runtime.backends import BackendUnavailable, available_backends, backend_format, open_backend
from runtime.backends import ort as ort_backend
from runtime.backends.tensorrt import GpuInfo, _norm_gpu, fingerprint_mismatch, parse_nvidia_smi, query_gpu
from runtime.errors import BundleError, ConfigError, InputError
from runtime.manifest import load_manifest

HAS_TRT = importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None
ORIN = {"tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7"}


# ---- registry ----


def test_registry_names_and_formats() -> None:
    assert set(available_backends()) >= {"ort", "ort-cuda", "ort-tensorrt", "tensorrt", "torch"}
    assert [backend_format(k) for k in ("ort", "ort-cuda", "ort-tensorrt", "tensorrt", "torch")] == [
        "onnx", "onnx", "onnx", "tensorrt", "torch_export",
    ]  # fmt: skip
    with pytest.raises(BackendUnavailable, match=r"unknown backend 'trt'.*expected one of ort"):
        backend_format("trt")


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        open_backend("tensorrt", str(tmp_path / "x.plan"))
    msg = str(info.value)
    assert "\n" not in msg and "TensorRT" in msg and "python3-libnvinfer" in msg


# ---- ONNX Runtime providers ----


def test_provider_missing_lists_the_available_ones() -> None:
    with pytest.raises(BackendUnavailable) as info:
        ort_backend.check_providers(("CUDAExecutionProvider", "CPUExecutionProvider"), ["CPUExecutionProvider"])
    assert str(info.value).startswith("ONNX Runtime here lacks CUDAExecutionProvider (available: CPUExecutionProvider)")


def test_gpu_backends_refused_on_a_cpu_only_onnxruntime(tiny_bundle: Path) -> None:
    import onnxruntime

    m = load_manifest(tiny_bundle, verify_hashes=False)
    path = str(m.path(m.spec("imu").artifact().file))
    for kind, provider in (("ort-cuda", "CUDAExecutionProvider"), ("ort-tensorrt", "TensorrtExecutionProvider")):
        if provider in onnxruntime.get_available_providers():
            continue
        with pytest.raises(BackendUnavailable, match=f"lacks {provider} \\(available: .*CPUExecutionProvider"):
            open_backend(kind, path)


def test_tensorrt_ep_options_follow_the_precision(tmp_path: Path) -> None:
    fp16 = ort_backend.tensorrt_ep_options("fp16", tmp_path, workspace_mb=512)
    assert (fp16["trt_fp16_enable"], fp16["trt_int8_enable"]) == ("True", "False")
    assert fp16["trt_max_workspace_size"] == str(512 << 20)
    assert fp16["trt_engine_cache_path"] == str(tmp_path / "engines")
    assert fp16["trt_timing_cache_path"] == str(tmp_path / "timing")
    int8 = ort_backend.tensorrt_ep_options("int8", tmp_path)
    assert (int8["trt_fp16_enable"], int8["trt_int8_enable"]) == ("False", "True")
    fp32 = ort_backend.tensorrt_ep_options("fp32", tmp_path)
    assert (fp32["trt_fp16_enable"], fp32["trt_int8_enable"]) == ("False", "False")
    assert ort_backend.precision_of("/b/audio.int8.onnx") == "int8"
    assert ort_backend.precision_of("/b/model.onnx") == "fp32"
    with pytest.raises(ConfigError):
        ort_backend.tensorrt_ep_options("bf16", tmp_path)


def test_provider_options_reach_onnxruntime(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ONNX Runtime's TensorRT EP cannot exist here; a fake session records what it was given."""
    import onnxruntime

    seen: dict[str, Any] = {}

    class Session:
        def __init__(self, path: str, options: Any, **kw: Any) -> None:
            seen.update(kw, path=path)

        def get_providers(self) -> list[str]:
            return list(seen["providers"])

        get_inputs = get_outputs = lambda self: []

    chain = ort_backend.PROVIDER_CHAINS["tensorrt"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(chain))
    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    ort_backend.OrtTensorRTBackend(str(tmp_path / "audio.int8.onnx"), cache_dir=tmp_path / "c", device_id=1)
    trt_opts, cuda_opts, cpu_opts = seen["provider_options"]
    assert seen["providers"] == list(chain) and seen["disabled_optimizers"] == []
    assert trt_opts["trt_int8_enable"] == "True" and trt_opts["device_id"] == "1"
    assert cuda_opts == {"device_id": "1"} and cpu_opts == {}
    assert (tmp_path / "c").is_dir()


def test_session_fallback_to_cpu_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import onnxruntime

    class Session:
        def __init__(self, *a: Any, **kw: Any) -> None:
            pass

        def get_providers(self) -> list[str]:
            return ["CPUExecutionProvider"]  # CUDA failed to load: ORT silently fell back

    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: available)
    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    with pytest.raises(BackendUnavailable, match=r"could not enable CUDAExecutionProvider.*fell back to CPU"):
        ort_backend.OrtCudaBackend(str(tmp_path / "m.onnx"))


def test_session_options(tiny_bundle: Path) -> None:
    m = load_manifest(tiny_bundle, verify_hashes=False)
    path = str(m.path(m.spec("imu").artifact().file))
    x = np.random.default_rng(0).standard_normal((2, 6, 2000)).astype(np.float32)
    with open_backend("ort", path, intra_op_threads=1) as plain:
        ref = plain.infer({"imu": x})["vectors"]
    opts = {"disabled_optimizers": ["MatMulAddFusion"], "graph_optimization_level": "basic", "inter_op_threads": 1}
    with open_backend("ort", path, intra_op_threads=1, session_options=opts) as tuned:
        np.testing.assert_allclose(tuned.infer({"imu": x})["vectors"], ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown key 'threads'"):
        open_backend("ort", path, session_options={"threads": 2})
    with pytest.raises(ConfigError, match="graph_optimization_level 'max'"):
        open_backend("ort", path, session_options={"graph_optimization_level": "max"})
    with pytest.raises(ConfigError, match="provider 'npu'"):
        open_backend("ort", path, provider="npu")


# ---- TensorRT fingerprint (pure) ----


def test_fingerprint_match_passes() -> None:
    same = dict(ORIN, gpu_name="Orin (nvgpu)", tensorrt_version="10.3.0.30")
    assert fingerprint_mismatch(ORIN, same, "/b") is None
    assert fingerprint_mismatch(ORIN, {"tensorrt_version": "10.3.0.30"}, "/b") is None  # GPU unknown here
    assert fingerprint_mismatch({"tensorrt_version": "10.3"}, ORIN, "/b") is None


def test_fingerprint_refusal_names_both() -> None:
    running = {"tensorrt_version": "10.16.0.7", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    msg = fingerprint_mismatch(ORIN, running, "bundles/edge")
    assert msg == (
        "engine built with TensorRT 10.3.0.30 on Orin (8.7); this device runs TensorRT 10.16.0.7 on "
        "NVIDIA H100 80GB HBM3 (9.0): rebuild with python -m export.engine --bundle bundles/edge"
    )
    other_gpu = dict(ORIN, gpu_name="NVIDIA RTX A2000", compute_capability="8.6")
    assert "on NVIDIA RTX A2000 (8.6)" in str(fingerprint_mismatch(ORIN, other_gpu, "b"))
    same_cc = dict(ORIN, gpu_name="NVIDIA A100")  # hypothetical same capability, other board
    assert fingerprint_mismatch(ORIN, same_cc, "b") is not None


def test_gpu_names_normalise() -> None:
    assert _norm_gpu("Orin (nvgpu)") == _norm_gpu("orin") == "orin"
    assert _norm_gpu("NVIDIA  H100 80GB HBM3") == "h100 80gb hbm3"


def test_nvidia_smi_parsing_and_query() -> None:
    assert parse_nvidia_smi("NVIDIA H100 80GB HBM3, 9.0\n") == GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
    assert parse_nvidia_smi("Orin (nvgpu), [N/A]\n") == GpuInfo("Orin (nvgpu)", "")
    assert parse_nvidia_smi("A, 8.6\nB, 8.9\n", device=1) == GpuInfo("B", "8.9")
    assert parse_nvidia_smi("", device=0) == GpuInfo("", "")

    def run(cmd: list[str], **kw: Any) -> Any:
        assert cmd[0] == "nvidia-smi" and "--query-gpu=name,compute_cap" in cmd
        return SimpleNamespace(returncode=0, stdout="NVIDIA L4, 8.9\n")

    def missing(cmd: list[str], **kw: Any) -> Any:
        raise FileNotFoundError(cmd[0])

    if importlib.util.find_spec("pycuda") is None:
        assert query_gpu(run=run) == GpuInfo("NVIDIA L4", "8.9")
        assert query_gpu(run=missing) == GpuInfo("", "")
        failing = lambda cmd, **kw: SimpleNamespace(returncode=9, stdout="")  # noqa: E731
        assert query_gpu(run=failing) == GpuInfo("", "")

        def hangs(cmd: list[str], **kw: Any) -> Any:
            raise subprocess.TimeoutExpired(cmd[0], 10)

        assert query_gpu(run=hangs) == GpuInfo("", "")


# ---- real TensorRT (skipped here) ----


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT and pycuda are not installed (no NVIDIA GPU stack here)")
def test_tensorrt_backend_matches_onnxruntime(bundle_copy: Path) -> None:
    from export.engine import EngineOptions, build_engines
    from runtime.types import Modality

    build_engines(EngineOptions(bundle_copy, precisions=("fp32",), modalities=(Modality.IMU,), batches=(1, 4)))
    m = load_manifest(bundle_copy)
    spec = m.spec("imu")
    art = spec.artifact("fp32", "tensorrt")
    x = np.random.default_rng(0).standard_normal((3, 6, 2000)).astype(np.float32)
    with open_backend("ort", str(m.path(spec.artifact().file))) as ref_backend:
        ref = ref_backend.infer({"imu": x})["vectors"]
    for graphs in (False, True):
        with open_backend("tensorrt", str(m.path(art.file)), engine_fingerprint=art.engine, cuda_graphs=graphs) as b:
            assert b.max_batch == 4
            for _ in range(2):
                out = b.infer({"imu": x})["vectors"]
                np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2)
            with pytest.raises(InputError, match="outside the engine's profile"):
                b.infer({"imu": np.zeros((5, 6, 2000), np.float32)})
    wrong = dict(art.engine, tensorrt_version="9.0.0")
    with pytest.raises(BundleError, match=r"engine built with TensorRT 9\.0\.0"):
        open_backend("tensorrt", str(m.path(art.file)), engine_fingerprint=wrong)
