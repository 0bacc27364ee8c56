"""``python -m export bundle``: ONNX graphs TensorRT can parse, dynamic batch, parity, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from export.__main__ import main  # noqa: E402
from export.onnx_ops import TENSORRT_OPS, graph_ops, unsupported_ops  # noqa: E402
from runtime.manifest import load_manifest  # noqa: E402
from runtime.tokenizer import VOCAB_FILENAME  # noqa: E402
from runtime.types import Modality  # noqa: E402
from tests.conftest import TINY_CHECKPOINT, TINY_CONFIG  # noqa: E402

pytestmark = pytest.mark.torch


def test_graphs_use_only_tensorrt_ops_opset_17_plus_dynamic_batch(tiny_bundle: Path) -> None:
    manifest = load_manifest(tiny_bundle)
    for mod, spec in manifest.modalities.items():
        model = onnx.load(str(manifest.path(spec.artifact().file)))
        onnx.checker.check_model(model)
        ops = graph_ops(model)
        assert not unsupported_ops(ops), (mod, unsupported_ops(ops))
        assert ops == spec.parity["onnx_ops"]
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        (inp,) = model.graph.input
        assert inp.name == spec.input.name
        assert inp.type.tensor_type.shape.dim[0].dim_param, f"{mod}: batch axis is not dynamic"
        assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == list(spec.input.shape[1:])
    assert (tiny_bundle / VOCAB_FILENAME).is_file()


def test_op_allowlist_rejects_unknown_ops() -> None:
    assert unsupported_ops(["MatMul", "NonMaxSuppression"]) == ["NonMaxSuppression"]
    assert "LayerNormalization" in TENSORRT_OPS


def test_model_id_is_the_checkpoint_hash(tiny_bundle: Path) -> None:
    import torch

    from export.checkpoint import state_dict_sha256

    sd = torch.load(TINY_CHECKPOINT, weights_only=True)
    assert load_manifest(tiny_bundle).model_id == state_dict_sha256(sd)


def test_random_weight_subset_bundle_with_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    over = tmp_path / "pre.json"
    over.write_text(json.dumps({"audio": {"clips_per_file": 2}}))
    out = tmp_path / "edge"
    code = main(["bundle", "--config", "edge_small", "--random-weights", "--modalities", "audio", "imu",
                 "--out", str(out), "--preprocess", str(over), "--quiet"])  # fmt: skip
    assert code == 0
    summary = capsys.readouterr().out
    assert "exported 2 encoder(s)" in summary and "audio" in summary
    m = load_manifest(out)
    assert set(m.modalities) == {Modality.AUDIO, Modality.IMU} and m.embed_dim == 256
    assert m.spec("audio").clips_per_input == 2 and m.source["random_weights"] is True
    assert not (out / VOCAB_FILENAME).exists()  # no text encoder, no vocabulary


def test_same_seed_same_weights(tmp_path: Path) -> None:
    ids = []
    for name in ("a", "b"):
        assert main(["bundle", "--config", str(TINY_CONFIG), "--random-weights", "--seed", "7",
                     "--modalities", "imu", "--out", str(tmp_path / name), "--quiet"]) == 0  # fmt: skip
        ids.append(load_manifest(tmp_path / name).model_id)
    assert ids[0] == ids[1]


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--config", "imagebind_huge", "--checkpoint", str(TINY_CHECKPOINT), "--modalities", "imu"],
         r"modality_preprocessors\.imu\.pos_embed: expected shape \[1,251,512\], found \[1,251,32\]"),
        (["--config", "no_such_preset", "--random-weights"], "unknown model config 'no_such_preset'"),
        (["--config", str(TINY_CONFIG)], "no weights: pass --checkpoint"),
        (["--config", str(TINY_CONFIG), "--random-weights", "--modalities", "sonar"], "unknown modality 'sonar'"),
        (["--config", str(TINY_CONFIG), "--checkpoint", "missing.pt"], "missing.pt: no such checkpoint file"),
        (["--config", str(TINY_CONFIG), "--random-weights", "--opset", "13"], "need >= 17"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], pattern: str
) -> None:
    assert main(["bundle", *args, "--out", str(tmp_path / "b"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    import re

    assert re.search(pattern, err), err


def test_onnx_matches_torch_at_other_batch_sizes(tiny_bundle: Path) -> None:
    import torch

    from export.checkpoint import load_checkpoint, load_state_dict_file
    from export.config import load_config
    from export.model import build_model
    from export.onnx_export import example_input
    from runtime.backends.ort import OrtBackend

    model = build_model(load_config(TINY_CONFIG))
    load_checkpoint(model, load_state_dict_file(TINY_CHECKPOINT))
    manifest = load_manifest(tiny_bundle, verify_hashes=False)
    for mod, spec in manifest.modalities.items():
        for batch in (1, 5):
            x = example_input(mod, tuple(spec.input.shape[1:]), batch, seed=batch)
            with torch.no_grad():
                ref = model.encode(mod.value, x).numpy()
            with OrtBackend(manifest.path(spec.artifact().file)) as ort:
                got = ort.infer({spec.input.name: x.numpy()})[spec.output.name]
            assert np.abs(got - ref).max() <= 1e-4 * spec.output_scale, (mod, batch)


def test_raw_sensor_files_through_fixture_recipes_reproduce_official(
    tmp_path: Path, official_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """File loaders -> manifest-driven preprocessing -> ONNX equals the official embeddings.

    The bundle's depth/thermal/IMU constants are set (through --preprocess) to the
    recipes that made the fixtures' model inputs, so raw files must land on the goldens.
    """
    from runtime.embed import main as embed_main
    from runtime.preprocess.depth import DepthPreprocess
    from runtime.preprocess.imu import ImuPreprocess
    from runtime.preprocess.thermal import ThermalPreprocess

    over = tmp_path / "fixture_recipes.json"
    recipes = {
        "depth": DepthPreprocess.fixture().to_dict(),
        "thermal": ThermalPreprocess.fixture().to_dict(),
        "imu": ImuPreprocess.fixture().to_dict(),
    }
    over.write_text(json.dumps(recipes))
    bundle = tmp_path / "b"
    assert main(["bundle", "--config", str(TINY_CONFIG), "--checkpoint", str(TINY_CHECKPOINT), "--out", str(bundle),
                 "--modalities", "depth", "thermal", "imu", "--preprocess", str(over), "--quiet"]) == 0  # fmt: skip
    raw = official_dir / "raw"
    cases = {
        "depth": ([raw / "depth_m.npy", raw / "depth2_m.npy"], 5.0, []),
        "thermal": ([raw / "thermal_8bit.png", raw / "thermal2_8bit.png"], 10.0, []),
        "imu": ([raw / "imu_6x2000.npy", raw / "imu2_6x2000.npy"], 5.0, ["--rate-hz", "200"]),
    }
    for modality, (files, scale, extra) in cases.items():
        out = tmp_path / f"{modality}.npy"
        argv = ["--bundle", str(bundle), "--modality", modality, *map(str, files), "--out", str(out), *extra]
        assert embed_main(argv) == 0, capsys.readouterr().err
        got, gold = np.load(out), np.load(official_dir / f"emb/{modality}_b2_fp64.npy")
        cos = np.sum(got * gold, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(gold, axis=1)
        assert cos.min() >= 0.99999 and np.abs(got - gold).max() <= 1e-4 * scale, (modality, cos)
    # The depth PNG in millimetres is the same scene quantised to mm: same embedding.
    out = tmp_path / "depth_png.npy"
    argv = ["--bundle", str(bundle), "--modality", "depth", str(raw / "depth_mm.png"), "--out", str(out)]
    assert embed_main(argv) == 0
    np.testing.assert_allclose(np.load(out)[0], np.load(tmp_path / "depth.npy")[0], atol=1e-5 * 5.0)
