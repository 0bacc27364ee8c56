"""Build a bundle (design §4): per-modality FP32 ONNX graphs, manifest and vocabulary.

The manifest carries every preprocessing constant from the runtime's own config
dataclasses, so the device needs nothing from this package.
"""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from export.checkpoint import load_checkpoint, load_state_dict_file, state_dict_sha256
from export.config import ModelConfig, load_config
from export.model import ImageBindModel, build_model
from export.onnx_export import OPSET, TowerExport, export_tower
from runtime import inputs
from runtime.errors import EdgebindError
from runtime.manifest import Artifact, ModalitySpec, ModelManifest, file_sha256
from runtime.tokenizer import VOCAB_FILENAME, VOCAB_SHA256, find_clip_vocab
from runtime.types import Modality

ProgressFn = Callable[[str, float], None]


@dataclass(frozen=True)
class BundleOptions:
    """What :func:`build_bundle` exports.

    Attributes:
        config: preset name, our JSON config, or an official-kwargs JSON file.
        out_dir: the bundle directory (created; existing model files are replaced).
        checkpoint: a state_dict file in the official layout; None with ``random_weights``.
        random_weights: build with seeded random weights (benchmarks, demos).
        modalities: which encoders to export; empty = all six.
        vocab: BPE merges file; None = the one in an installed open-clip-torch.
        preprocess: per-modality overrides of the runtime's preprocessing configs.
        seed: seed for random weights.
        opset: ONNX opset.
    """

    config: str
    out_dir: Path
    checkpoint: Path | None = None
    random_weights: bool = False
    modalities: tuple[Modality, ...] = ()
    vocab: Path | None = None
    preprocess: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    opset: int = OPSET


def build_bundle(opts: BundleOptions, progress: ProgressFn | None = None) -> ModelManifest:
    """Export every requested modality and write ``manifest.json`` last.

    Args:
        progress: called with (stage description, fraction done in [0, 1]).

    Raises:
        EdgebindError: bad config/checkpoint, export or parity failure (one line).
    """
    report = progress or (lambda _msg, _frac: None)
    cfg = load_config(opts.config)
    mods = opts.modalities or tuple(Modality)
    report("loading weights", 0.0)
    model, model_id, source = _load_model(opts, cfg, mods)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    _remove_derived(opts.out_dir, mods)
    specs: dict[Modality, ModalitySpec] = {}
    for i, mod in enumerate(mods):
        report(f"exporting {mod.value}", (i + 0.05) / len(mods))
        specs[mod] = _export_modality(model, mod, opts)
    report("writing manifest", 0.99)
    vocab = _copy_vocab(opts) if Modality.TEXT in mods else {}
    manifest = ModelManifest(
        root=opts.out_dir,
        model_id=model_id,
        model_name=cfg.name,
        embed_dim=cfg.out_embed_dim,
        modalities=specs,
        vocab=vocab,
        source=source,
    )
    manifest.write()
    report("done", 1.0)
    return manifest


def _remove_derived(out_dir: Path, mods: Sequence[Modality]) -> None:
    """Delete what an earlier export derived from the graphs being replaced: other precisions,
    engines, exported programs (``<modality>.*``) and the gate report; the new manifest lists none."""
    for mod in mods:
        for stale in out_dir.glob(f"{mod.value}.*"):
            if stale.is_file():
                stale.unlink()
    (out_dir / "gate_report.json").unlink(missing_ok=True)


def _load_model(
    opts: BundleOptions, cfg: ModelConfig, mods: Sequence[Modality]
) -> tuple[ImageBindModel, str, dict[str, Any]]:
    if opts.checkpoint is None and not opts.random_weights:
        raise EdgebindError("no weights: pass --checkpoint FILE, or --random-weights for a benchmark/demo bundle")
    if opts.checkpoint is not None and opts.random_weights:
        raise EdgebindError("pass either --checkpoint or --random-weights, not both")
    torch.manual_seed(opts.seed)
    model = build_model(cfg, [m.value for m in mods])
    if opts.checkpoint is not None:
        load_checkpoint(model, load_state_dict_file(opts.checkpoint))
    model.eval()
    model_id = state_dict_sha256(model.state_dict())
    source = {
        "checkpoint": opts.checkpoint.name if opts.checkpoint else None,
        "random_weights": opts.random_weights,
        "seed": opts.seed if opts.random_weights else None,
        "config": opts.config if not Path(opts.config).exists() else Path(opts.config).name,
        "opset": opts.opset,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(),
    }
    return model, model_id, source


def _export_modality(model: ImageBindModel, mod: Modality, opts: BundleOptions) -> ModalitySpec:
    out = opts.out_dir / f"{mod.value}.fp32.onnx"
    for stale in opts.out_dir.glob(out.name + "*"):
        stale.unlink()
    scale = model.output_scale(mod.value)
    row = tuple(model.input_shape(mod.value))
    result = export_tower(model, mod, row, out, output_scale=scale, opset=opts.opset)
    preprocess = inputs.default_preprocess(mod, row, opts.preprocess.get(mod.value))
    return ModalitySpec(
        modality=mod,
        input=result.input,
        output=result.output,
        output_scale=scale,
        clips_per_input=inputs.clips_per_input(mod, preprocess),
        window=inputs.default_window(mod, preprocess),
        preprocess=preprocess,
        artifacts=(_artifact(result, opts.out_dir),),
        parity={
            "reference": "pytorch fp32 eager",
            "cosine_min": result.cosine_min,
            "max_abs_per_scale": result.max_abs_per_scale,
            "onnx_ops": list(result.ops),
        },
    )


def _artifact(result: TowerExport, root: Path) -> Artifact:
    path = result.onnx_path
    return Artifact(
        file=path.relative_to(root).as_posix(),
        format="onnx",
        precision="fp32",
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size + sum(p.stat().st_size for p in result.data_files),
        data_files=tuple((p.relative_to(root).as_posix(), file_sha256(p)) for p in result.data_files),
    )


def _copy_vocab(opts: BundleOptions) -> dict[str, str]:
    src = opts.vocab or find_clip_vocab()
    digest = file_sha256(src)
    if digest != VOCAB_SHA256:
        raise EdgebindError(f"{src}: not the CLIP BPE vocabulary (SHA-256 {digest[:12]}…); pass the right --vocab")
    shutil.copyfile(src, opts.out_dir / VOCAB_FILENAME)
    return {"file": VOCAB_FILENAME, "sha256": digest}


def _versions() -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }
