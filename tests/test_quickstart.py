"""The README's first command: export the official tiny checkpoint and embed the sample files."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from export.quickstart import main

pytestmark = pytest.mark.torch


def test_quickstart_matches_official_embeddings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "bundle")]) == 0
    out = capsys.readouterr().out
    assert "OK: lowest cosine vs the official ImageBind code" in out
    for label in ("vision", "text", "audio", "vision_video", "depth", "thermal", "imu"):
        assert f"\n{label} " in out
