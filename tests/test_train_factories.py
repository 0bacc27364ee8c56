"""A training run configured in JSON on a native-layout dataset (fake LLVIP tree) and on a JSONL manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from export.config import save_config  # noqa: E402
from export.train.__main__ import main  # noqa: E402
from export.train.factories import jsonl_dataset, native_dataset  # noqa: E402
from tests.test_train_datasets import save_image, tiny_config  # noqa: E402

pytestmark = pytest.mark.torch


def _llvip(root: Path, n: int = 8) -> Path:
    for i in range(n):
        save_image(root / "visible" / "train" / f"{i:06d}.jpg", 20 + 25 * i)
        save_image(root / "infrared" / "train" / f"{i:06d}.jpg", 240 - 25 * i)
    return root


def test_native_and_jsonl_factories_make_the_same_rows(tmp_path: Path) -> None:
    model = tmp_path / "tiny.json"
    save_config(tiny_config(), model)
    root = _llvip(tmp_path / "LLVIP")
    native = native_dataset("llvip", str(root), str(model), train=False)
    lines = [
        {"image": f"LLVIP/visible/train/{i:06d}.jpg", "thermal": f"LLVIP/infrared/train/{i:06d}.jpg"} for i in range(8)
    ]
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in lines))
    listed = jsonl_dataset(str(manifest), "thermal", str(model), train=False)
    assert len(native) == len(listed) == 8
    for i in (0, 5):
        assert torch.equal(native[i]["thermal"], listed[i]["thermal"])
        assert torch.equal(native[i]["image"], listed[i]["image"])
        assert native[i]["thermal"].shape == (1, 32, 32)


def test_json_config_trains_on_a_native_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "tiny.json"
    save_config(tiny_config(), model)
    root = _llvip(tmp_path / "LLVIP")
    data = {"name": "llvip", "root": str(root), "model": str(model)}
    cfg = {
        "model": str(model),
        "pairs": ["vision", "thermal"],
        "train_data": {"factory": "export.train.factories:native_dataset", "kwargs": data},
        "steps": 4,
        "batch_size": 4,
        "lr": 1e-3,
        "progress": False,
        "plot": False,
        "out_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    assert main(["--config", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 4 and summary["loss"] > 0
    assert Path(summary["model"]).is_file()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert sum("loss" in json.loads(line) for line in lines) == 4
    # The README's next step: the trained towers export like any checkpoint.
    from export.__main__ import main as export_main
    from export.train.data import shape_overrides

    out = tmp_path / "bundle"
    overrides = tmp_path / "preprocess.json"  # the tiny towers take 28x28 images and 32x32 thermal frames
    rows = {"vision": (3, 2, 28, 28), "thermal": (1, 32, 32)}
    overrides.write_text(json.dumps({m: shape_overrides(m, row) for m, row in rows.items()}))
    config = str(tmp_path / "run" / "model_config.json")
    argv = ["bundle", "--checkpoint", summary["model"], "--config", config, "--modalities", "vision", "thermal",
            "--preprocess", str(overrides), "--out", str(out), "--quiet"]  # fmt: skip
    assert export_main(argv) == 0
    assert (out / "thermal.fp32.onnx").is_file() and (out / "vision.fp32.onnx").is_file()
