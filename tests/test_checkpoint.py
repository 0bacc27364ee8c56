"""Checkpoint layout of the huge model (on the meta device), strict loading errors, safe unpickling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from export.checkpoint import (  # noqa: E402
    CheckpointError,
    infer_config_from_state_dict,
    load_checkpoint,
    load_state_dict_file,
    state_dict_sha256,
)
from export.config import MODALITIES, load_config  # noqa: E402
from export.model import ImageBindModel, build_model  # noqa: E402
from runtime.errors import ConfigError, EdgebindError  # noqa: E402

HUGE_TSV = Path(__file__).parent / "fixtures" / "imagebind-huge-state-dict.tsv"


def _huge_rows() -> list[tuple[str, tuple[int, ...]]]:
    lines = HUGE_TSV.read_text().splitlines()[1:]
    rows = []
    for line in lines:
        key, shape, _numel, _dtype = line.split("\t")
        rows.append((key, tuple(json.loads(shape))))
    return rows


@pytest.fixture(scope="module")
def huge_sd() -> dict[str, torch.Tensor]:
    """Every entry of the released checkpoint as a meta tensor of the listed shape."""
    return {k: torch.empty(s, device="meta") for k, s in _huge_rows()}


@pytest.fixture(scope="module")
def huge() -> ImageBindModel:
    with torch.device("meta"):
        return build_model(load_config("imagebind_huge"))


@pytest.fixture(scope="module")
def tiny_sd(official_dir) -> dict[str, torch.Tensor]:
    return load_state_dict_file(official_dir / "tiny_official.pt")


def test_huge_state_dict_keys_and_shapes_match_release(huge, huge_sd) -> None:
    ours = {k: tuple(v.shape) for k, v in huge.state_dict().items()}
    assert list(ours) == list(huge_sd)  # same keys, same emission order
    assert ours == {k: tuple(v.shape) for k, v in huge_sd.items()}
    assert len(ours) == 1311


def test_huge_loads_release_layout_strictly(huge_sd) -> None:
    with torch.device("meta"):
        model = build_model(load_config("imagebind_huge"))
    load_checkpoint(model, huge_sd)  # raises on any missing/unexpected key or shape
    result = model.load_state_dict(huge_sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_huge_parameter_counts(huge, official_dir) -> None:
    counts = json.loads((official_dir / "huge_param_counts.json").read_text())
    params = dict(huge.named_parameters())
    buffers = dict(huge.named_buffers())
    assert sum(p.numel() for p in params.values()) == counts["total_params"]
    for modality in MODALITIES:
        want = counts["per_modality"][modality]
        mine = {k: v for k, v in params.items() if k.split(".")[1] == modality}
        assert sum(v.numel() for v in mine.values()) == want["params"], modality
        assert sum(v.numel() for k, v in buffers.items() if k.split(".")[1] == modality) == want["buffers"]
        for component, expected in want["by_component"].items():
            got = sum(v.numel() for k, v in mine.items() if k.startswith(component + "."))
            assert got == expected["params"], (modality, component)


def test_infer_config_from_state_dict(huge_sd, tiny_sd) -> None:
    assert infer_config_from_state_dict(huge_sd).towers == load_config("imagebind_huge").towers
    tiny_heads = {m: t.num_heads for m, t in load_config("imagebind_tiny").towers.items()}
    tiny = infer_config_from_state_dict(tiny_sd, num_heads=tiny_heads)
    assert tiny.towers == load_config("imagebind_tiny").towers
    with pytest.raises(ConfigError, match="num_heads"):
        infer_config_from_state_dict(tiny_sd)


def _one_line_error(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, sd)
    message = str(info.value)
    assert isinstance(info.value, EdgebindError) and "\n" not in message
    assert "--config" in message
    return message


def test_tiny_checkpoint_into_huge_names_key_and_both_shapes(huge, tiny_sd) -> None:
    message = _one_line_error(huge, tiny_sd)
    assert "modality_preprocessors.vision.cls_token" in message
    assert "expected shape [1,1,1280]" in message and "found [1,1,64]" in message


def test_renamed_extra_and_reshaped_keys(official_dir, tiny_sd) -> None:
    model = build_model(load_config("imagebind_tiny"))
    key = "modality_heads.imu.3.weight"
    renamed = {("modality_heads.imu.2.weight" if k == key else k): v for k, v in tiny_sd.items()}
    message = _one_line_error(model, renamed)
    assert re.search(rf"missing {re.escape(key)} \(expected shape \[32,32\], found none\)", message)
    extra = {**tiny_sd, "modality_heads.imu.4.weight": torch.zeros(3, 2)}
    assert "unexpected key modality_heads.imu.4.weight" in _one_line_error(model, extra)
    reshaped = {**tiny_sd, key: torch.zeros(32, 31)}
    assert "expected shape [32,32], found [32,31]" in _one_line_error(model, reshaped)


def test_subset_model_takes_full_checkpoint(tiny_sd) -> None:
    model = build_model(load_config("imagebind_tiny"), modalities=["imu"])
    load_checkpoint(model, tiny_sd)
    assert torch.equal(model.modality_heads["imu"][3].weight, tiny_sd["modality_heads.imu.3.weight"])


class _Payload:
    """Something weights_only unpickling must refuse."""

    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_weights_only_refuses_arbitrary_objects(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only") as info:
        load_state_dict_file(path)
    assert "\n" not in str(info.value)


def test_wrapped_and_malformed_files(tmp_path, tiny_sd) -> None:
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": tiny_sd, "epoch": 3}, wrapped)
    assert load_state_dict_file(wrapped).keys() == tiny_sd.keys()
    not_tensor = tmp_path / "bad.pt"
    torch.save({"a": torch.zeros(1), "b": 3}, not_tensor)
    with pytest.raises(CheckpointError, match="'b'"):
        load_state_dict_file(not_tensor)
    with pytest.raises(CheckpointError, match="no such"):
        load_state_dict_file(tmp_path / "absent.pt")


def test_state_dict_sha256(tiny_sd, huge_sd) -> None:
    digest = state_dict_sha256(tiny_sd)
    assert len(digest) == 64
    assert state_dict_sha256(dict(reversed(list(tiny_sd.items())))) == digest
    changed = dict(tiny_sd)
    changed["modality_heads.imu.3.weight"] = changed["modality_heads.imu.3.weight"].clone()
    changed["modality_heads.imu.3.weight"][0, 0] += 1.0
    assert state_dict_sha256(changed) != digest
    with pytest.raises(CheckpointError, match="meta"):
        state_dict_sha256(huge_sd)
