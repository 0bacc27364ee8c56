"""Per-modality encoder latency: ONNX Runtime FP32 vs the PyTorch FP32 eager model, same run.

``python -m benchmarks.encoders --bundle bundles/huge`` (a bundle from
``python -m export bundle --config imagebind_huge --random-weights``) writes
``benchmarks/results/encoders-<host>-<date>.{json,md}``. Also times numpy audio
preprocessing per 2 s clip against a torch-ops implementation of the same fbank.
Ratios, not absolute times, are the result on these shared, noisy machines.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, machine_info, measure
from benchmarks.report import save_report
from runtime.manifest import load_manifest
from runtime.types import Modality


@dataclass(frozen=True)
class Timing:
    """Latency figures of one (modality, engine) pair, in milliseconds."""

    modality: str
    engine: str
    batch: int
    iters: int
    p50_ms: float
    p90_ms: float
    min_ms: float


def _timing(mod: str, engine: str, batch: int, times: list[float]) -> Timing:
    ms = np.array(times) * 1e3
    return Timing(mod, engine, batch, len(times), float(np.median(ms)), float(np.percentile(ms, 90)), float(ms.min()))


def bench_modality(bundle: Path, mod: Modality, cfg_name: str, iters: int, threads: int) -> list[Timing]:
    """Time ORT on the bundle's graph and the torch eager model at batch 1."""
    import torch

    from export.config import load_config
    from export.model import build_model
    from export.onnx_export import example_input
    from runtime.backends.ort import OrtBackend

    manifest = load_manifest(bundle, verify_hashes=False)
    spec = manifest.spec(mod)
    row = tuple(int(d) for d in spec.input.shape[1:])
    x = example_input(mod, row, batch=1, seed=3)
    warm = 1 if mod is Modality.VISION else 2
    torch.set_num_threads(threads)
    t_torch = _time_torch(build_model(load_config(cfg_name), [mod.value]).eval(), mod, x, iters, warm)
    with OrtBackend(manifest.path(spec.artifact().file), intra_op_threads=threads) as ort:
        feeds = {spec.input.name: x.numpy()}
        t_ort = measure(lambda: ort.infer(feeds), iters, warm)
    return [_timing(mod.value, "pytorch-fp32-eager", 1, t_torch), _timing(mod.value, "onnxruntime-fp32", 1, t_ort)]


def _time_torch(model: Any, mod: Modality, x: Any, iters: int, warm: int) -> list[float]:
    import torch

    with torch.inference_mode():
        return measure(lambda: model.encode(mod.value, x), iters, warm)


def bench_audio_frontend(iters: int, threads: int) -> list[Timing]:
    """numpy ``clip_to_input`` vs the torch-ops fbank on one 2 s 16 kHz clip."""
    import torch

    from benchmarks.torch_fbank import torch_clip_to_input, torch_mel_matrix
    from runtime.preprocess.audio import clip_to_input

    torch.set_num_threads(threads)
    clip = np.random.default_rng(0).uniform(-0.5, 0.5, 32000).astype(np.float32)
    mel = torch_mel_matrix()
    diff = float(np.abs(clip_to_input(clip) - torch_clip_to_input(clip, mel).numpy()).max())
    print(f"audio front end: numpy vs torch-ops max |diff| = {diff:.2e}", file=sys.stderr)
    t_np = measure(lambda: clip_to_input(clip), iters, 3)
    t_pt = measure(lambda: torch_clip_to_input(clip, mel), iters, 3)
    return [_timing("audio-preprocess", "torch-ops", 1, t_pt), _timing("audio-preprocess", "numpy", 1, t_np)]


def write_report(timings: list[Timing], meta: dict[str, Any], out_dir: Path) -> Path:
    """Write JSON and a Markdown table with ORT/torch speed ratios; returns the .md path."""
    stem = f"encoders-{meta['host']}-{meta['date']}"
    lines = [
        f"# Encoder latency, batch 1 ({meta['cpu']}, {meta['threads']} threads, {meta['date']})",
        "",
        f"Bundle: `{meta['bundle']}` ({meta['model']}, random weights). p50 of {meta['iters']} runs.",
        "Speed-up = PyTorch FP32 eager p50 / candidate p50, measured in the same run.",
        "",
        "| modality | PyTorch FP32 eager p50 (ms) | candidate | p50 (ms) | p90 (ms) | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    by_mod: dict[str, dict[str, Timing]] = {}
    for t in timings:
        by_mod.setdefault(t.modality, {})[t.engine] = t
    for mod, engines in by_mod.items():
        base = engines.get("pytorch-fp32-eager") or engines.get("torch-ops")
        for name, t in engines.items():
            if t is base or base is None:
                continue
            ratio = base.p50_ms / t.p50_ms
            lines.append(f"| {mod} | {base.p50_ms:.2f} | {name} | {t.p50_ms:.2f} | {t.p90_ms:.2f} | {ratio:.2f}x |")
    return save_report(out_dir, stem, {"meta": meta, "timings": [asdict(t) for t in timings]}, lines)


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    meta = machine_info(args.threads)
    meta.update(iters=args.iters, bundle=str(args.bundle), model=args.config)
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.encoders", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--config", default="imagebind_huge", help="config the bundle was exported from")
    p.add_argument("--modalities", nargs="+", default=[m.value for m in Modality])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    timings: list[Timing] = []
    for name in args.modalities:
        mod = Modality.parse(name)
        print(f"timing {mod.value} ...", file=sys.stderr)
        timings += bench_modality(args.bundle, mod, args.config, args.iters, args.threads)
    timings += bench_audio_frontend(max(args.iters, 50), args.threads)
    md = write_report(timings, _meta(args), args.out)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
