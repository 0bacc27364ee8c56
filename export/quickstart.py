"""``python -m export.quickstart``: export a small model and embed sample inputs with it.

The README's first command until the streaming demo lands. It exports the official
tiny random-weight checkpoint shipped in ``tests/fixtures`` (official layout, so the
same path loads ``imagebind_huge.pth``), embeds the sample WAV/PNG/depth/thermal/IMU
files and captions through ``python -m runtime.embed`` (torch-free), and compares
each result with the embeddings the official ImageBind code computed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official_tiny"
DEFAULT_OUT = ROOT / "bundles" / "official_tiny"


def _samples() -> list[tuple[str, str, list[str], bool]]:
    """(label, modality, inputs, preprocessed?) with an official golden named by label."""
    raw = FIXTURES / "raw"
    texts = json.loads((raw / "texts.json").read_text())
    return [
        ("vision", "vision", [str(raw / "image_rgb_320x240.png"), str(raw / "image_rgb_180x260.png")], False),
        ("text", "text", texts, False),
        ("audio", "audio", [str(raw / "audio_16k_mono.wav"), str(raw / "audio_44k1_stereo.wav")], False),
        ("vision_video", "vision", [str(FIXTURES / "inputs/vision_video.npy")], True),
        ("depth", "depth", [str(FIXTURES / "inputs/depth.npy")], True),
        ("thermal", "thermal", [str(FIXTURES / "inputs/thermal.npy")], True),
        ("imu", "imu", [str(FIXTURES / "inputs/imu.npy")], True),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Export, embed, compare; returns 0 when every modality matches the official output."""
    p = argparse.ArgumentParser(prog="python -m export.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle directory to write")
    args = p.parse_args(argv)
    from export.__main__ import main as export_main
    from runtime.embed import main as embed_main

    print(f"1/2 exporting the official tiny checkpoint to {args.out}")
    ckpt, cfg = FIXTURES / "tiny_official.pt", FIXTURES / "tiny_config.json"
    code = export_main(["bundle", "--checkpoint", str(ckpt), "--config", str(cfg), "--out", str(args.out)])
    if code:
        return code
    print("\n2/2 embedding sample inputs with python -m runtime.embed (ONNX Runtime, no torch)")
    print(f"{'input':<13} {'rows':>4} {'norm':>8} {'cosine vs official':>19} {'max|d|':>9}")
    worst = 1.0
    with tempfile.TemporaryDirectory() as tmp:
        for label, modality, items, pre in _samples():
            out = Path(tmp) / f"{label}.npy"
            argv_embed = ["--bundle", str(args.out), "--modality", modality, *items, "--out", str(out)]
            if embed_main(argv_embed + (["--preprocessed"] if pre else [])):
                return 2
            got = np.load(out).astype(np.float64)
            gold = np.load(FIXTURES / f"emb/{label}_b{got.shape[0]}_fp64.npy")
            cos = float((np.sum(got * gold, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(gold, axis=1)).min())
            worst = min(worst, cos)
            print(f"{label:<13} {got.shape[0]:>4} {np.linalg.norm(got[0]):>8.3f} {cos:>19.8f} "
                  f"{np.abs(got - gold).max():>9.1e}")  # fmt: skip
    ok = worst >= 0.9999
    print(f"\n{'OK' if ok else 'MISMATCH'}: lowest cosine vs the official ImageBind code {worst:.8f}")
    print("(random weights: the numbers prove the pipeline, not semantic quality)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
