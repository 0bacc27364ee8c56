"""``python -m export.torch_program``: write ``torch.export`` programs (``.pt2``) into a bundle.

The torch backend (:mod:`runtime.backends.pyt`) runs them without this package. Each
program is one modality's encoder with a dynamic batch dimension and float32 I/O
(an FP16 program casts inside). It must reproduce the bundle's ONNX Runtime FP32
output (cosine >= 0.99999 for FP32, >= 0.999 for FP16) and the weights must be the
bundle's (same model_id), or nothing is written.

Example::

    python -m export.torch_program --bundle bundles/demo --config edge_small --random-weights --seed 0 \\
        --precision fp32,fp16
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from export.checkpoint import load_checkpoint, load_state_dict_file, state_dict_sha256
from export.config import load_config
from export.model import ImageBindModel, build_model
from export.onnx_export import ExportError, example_input
from runtime.backends.ort import OrtBackend
from runtime.backends.pyt import META_NAME, TorchBackend
from runtime.errors import EdgebindError
from runtime.manifest import Artifact, ModalitySpec, ModelManifest, file_sha256, load_manifest
from runtime.types import Modality

MIN_COSINE = {"fp32": 0.99999, "fp16": 0.999}
MAX_BATCH = 1024


@dataclass(frozen=True)
class ProgramOptions:
    """What :func:`export_programs` writes.

    Attributes:
        bundle: an existing bundle (its FP32 ONNX is the reference).
        config: preset name or JSON config of the bundle's model.
        checkpoint: the bundle's weights; None with ``random_weights`` (same seed as the bundle).
        modalities: empty = every modality in the manifest.
        precisions: ``fp32`` and/or ``fp16``.
    """

    bundle: Path
    config: str
    checkpoint: Path | None = None
    random_weights: bool = False
    seed: int = 0
    modalities: tuple[Modality, ...] = ()
    precisions: tuple[str, ...] = ("fp32",)


class _Program(torch.nn.Module):
    """One modality's encoder; float inputs are cast to the weights' dtype, the output to float32."""

    def __init__(self, model: ImageBindModel, modality: Modality, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = _single_tower(model, modality.value)  # the program holds this tower's weights only
        self.modality = modality.value
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            x = x.to(self.dtype)
        return self.model.encode(self.modality, x).float()


def load_bundle_weights(opts: ProgramOptions, manifest: ModelManifest) -> ImageBindModel:
    """Build the bundle's model (all its towers) and check its weights hash to the manifest's model_id.

    Raises:
        EdgebindError: no/both weight sources, or weights of another model (one line, both ids).
    """
    if (opts.checkpoint is None) == (not opts.random_weights):
        raise EdgebindError("pass exactly one of --checkpoint FILE or --random-weights (with the bundle's --seed)")
    cfg = load_config(opts.config)
    torch.manual_seed(opts.seed)
    model = build_model(cfg, [m.value for m in manifest.modalities])
    if opts.checkpoint is not None:
        load_checkpoint(model, load_state_dict_file(opts.checkpoint))
    model.eval()
    model_id = state_dict_sha256(model.state_dict())
    if model_id != manifest.model_id:
        raise EdgebindError(
            f"weights have model_id {model_id[:12]}… but bundle {manifest.root} has {manifest.model_id[:12]}…; "
            "pass the bundle's checkpoint/config (or its --random-weights --seed)"
        )
    return model


def _cosine_min(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    return float(cos.min())


def check_program(path: Path, manifest: ModelManifest, spec: ModalitySpec, precision: str) -> float:
    """Lowest row cosine of the saved program (loaded by the runtime backend) vs ONNX Runtime FP32.

    Runs batches of 3 and 1 (the program was traced at 2), so the dynamic batch is exercised.

    Raises:
        ExportError: below :data:`MIN_COSINE` for ``precision``.
    """
    row = tuple(int(d) for d in spec.input.shape[1:])
    worst = 1.0
    with OrtBackend(manifest.path(spec.artifact("fp32", "onnx").file)) as ort, TorchBackend(path) as program:
        for batch in (3, 1):
            x = example_input(spec.modality, row, batch=batch, seed=1).numpy()
            ref = ort.infer({spec.input.name: x})[spec.output.name]
            got = program.infer({spec.input.name: x})[spec.output.name]
            if got.shape != ref.shape:
                raise ExportError(f"{path}: output shape {got.shape} at batch {batch}, ONNX gives {ref.shape}")
            worst = min(worst, _cosine_min(ref, got))
    if not worst >= MIN_COSINE[precision]:
        raise ExportError(
            f"{path}: program differs from ONNX Runtime FP32 (cosine {worst:.7f} < {MIN_COSINE[precision]}); "
            "not written"
        )
    return worst


_TOWER_PARTS = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")


def _single_tower(model: ImageBindModel, modality: str) -> ImageBindModel:
    """A shallow view of ``model`` owning only ``modality``'s four modules (shared, not copied).

    torch.export keeps every parameter of the exported module, used or not; without this a
    huge-model program would carry all six towers (4.8 GB) instead of one.
    """
    tower = copy.copy(model)
    tower._modules = dict(model._modules)  # a module table of its own; the parts themselves are shared
    for name in _TOWER_PARTS:
        tower._modules[name] = torch.nn.ModuleDict({modality: getattr(model, name)[modality]})
    tower.modalities = (modality,)
    return tower


def export_program(model: ImageBindModel, spec: ModalitySpec, precision: str, out: Path) -> Path:
    """Trace ``spec.modality`` at batch 2 with a dynamic batch and save it (no sample inputs) to ``out``."""
    dtype = torch.float16 if precision == "fp16" else torch.float32
    program = _Program(model, spec.modality, dtype).eval()
    row = tuple(int(d) for d in spec.input.shape[1:])
    example = example_input(spec.modality, row, batch=2, seed=0)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with torch.no_grad():
            ep = torch.export.export(program, (example,), dynamic_shapes={"x": {0: batch}})
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{out}: torch.export.export failed ({first})") from exc
    ep.example_inputs = None  # sample inputs would be a pickle; the runtime refuses them
    meta = {
        "inputs": [spec.input.to_dict()],
        "outputs": [spec.output.to_dict()],
        "torch_version": torch.__version__,
        "precision": precision,
    }
    torch.export.save(ep, str(out), extra_files={META_NAME: json.dumps(meta)})
    return out


def export_programs(opts: ProgramOptions) -> list[tuple[Modality, str, float]]:
    """Write, check and record every requested program; returns (modality, precision, cosine) rows.

    The manifest is rewritten after each program.

    Raises:
        EdgebindError: bad weights/config, unknown modality, export or parity failure.
    """
    manifest = load_manifest(opts.bundle)
    model = load_bundle_weights(opts, manifest)
    mods = opts.modalities or tuple(manifest.modalities)
    done = []
    for precision in opts.precisions:  # fp32 first: the model is converted in place for fp16
        if precision == "fp16":
            model = model.half()
        for mod in mods:
            spec = manifest.spec(mod)
            out = export_program(model, spec, precision, opts.bundle / f"{mod.value}.{precision}.pt2")
            try:
                cosine = check_program(out, manifest, spec, precision)
            except EdgebindError:
                out.unlink(missing_ok=True)
                raise
            manifest = manifest.with_artifact(mod, _artifact(out, precision, cosine))
            manifest.write()
            done.append((mod, precision, cosine))
    return done


def _artifact(path: Path, precision: str, cosine: float) -> Artifact:
    return Artifact(
        file=path.name,
        format="torch_export",
        precision=precision,
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        gate={"reference": "onnxruntime fp32", "cosine_min": cosine, "min_cosine": MIN_COSINE[precision],
              "passed": True},
        engine={"torch_version": torch.__version__, "dynamic_batch": [1, MAX_BATCH]},
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.torch_program", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, help="existing bundle directory")
    p.add_argument("--config", required=True, help="the bundle's config: preset name or JSON file")
    p.add_argument("--checkpoint", type=Path, help="the bundle's state_dict file")
    p.add_argument("--random-weights", action="store_true", help="the bundle was built with --random-weights")
    p.add_argument("--seed", type=int, default=0, help="the bundle's --seed (with --random-weights)")
    p.add_argument("--modalities", nargs="+", default=[], help="subset of: " + " ".join(m.value for m in Modality))
    p.add_argument("--precision", default="fp32", help="comma list of fp32,fp16")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns 0 on success, 2 on any error (one line)."""
    args = _parser().parse_args(argv)
    try:
        precisions = tuple(sorted({p.strip().lower() for p in args.precision.split(",") if p.strip()}, reverse=True))
        bad = [p for p in precisions if p not in MIN_COSINE]
        if bad or not precisions:
            raise EdgebindError(f"--precision {args.precision!r}: expected a comma list of fp32,fp16")
        opts = ProgramOptions(
            bundle=args.bundle,
            config=args.config,
            checkpoint=args.checkpoint,
            random_weights=args.random_weights,
            seed=args.seed,
            modalities=tuple(Modality.parse(m) for m in args.modalities),
            precisions=precisions,
        )
        done = export_programs(opts)
    except (EdgebindError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for mod, precision, cosine in done:
        print(f"{mod.value} {precision}: {mod.value}.{precision}.pt2 (cosine vs ONNX Runtime fp32 {cosine:.7f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
