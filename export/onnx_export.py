"""Export one modality's encoder to ONNX and prove ONNX Runtime reproduces PyTorch.

Per modality: one graph, opset >= 17, dynamic batch, one clip per row, output the
official postprocessed embedding ``(batch, D)`` float32. Clip averaging (audio's
3 clips, video clips) stays on the host, as design §5 / fact sheet §8.5 advise.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from export.onnx_ops import graph_ops, unsupported_ops
from runtime.errors import EdgebindError
from runtime.manifest import TensorSpec
from runtime.types import Modality

OPSET = 18
# Parity gate: the bound for FP32 (fixtures README): cosine and max abs / output scale.
MIN_COSINE = 0.99999
MAX_ABS_PER_SCALE = 1e-4
# Models above this many parameter bytes go to ONNX external-data format (2 GB protobuf limit).
EXTERNAL_DATA_BYTES = 1_500_000_000


class ExportError(EdgebindError):
    """The export failed or its result does not reproduce PyTorch."""


@dataclass(frozen=True)
class TowerExport:
    """What :func:`export_tower` wrote and measured.

    Attributes:
        onnx_path: the graph file.
        data_files: external-data files beside it (empty for small models).
        input: graph input spec (batch dynamic).
        output: graph output spec, (batch, D) float32.
        ops: sorted ONNX operator types used.
        cosine_min: lowest per-row cosine, ONNX Runtime vs PyTorch.
        max_abs_per_scale: largest |difference| divided by the output scale.
    """

    onnx_path: Path
    data_files: tuple[Path, ...]
    input: TensorSpec
    output: TensorSpec
    ops: tuple[str, ...]
    cosine_min: float
    max_abs_per_scale: float


class _Tower(torch.nn.Module):
    """Export-only wrapper: one modality, one positional input."""

    def __init__(self, model: torch.nn.Module, modality: Modality) -> None:
        super().__init__()
        self.model = model
        self.modality = modality.value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(self.modality, x)


def input_name(modality: Modality) -> str:
    """Graph input name for ``modality`` (defined once; the manifest carries it to the runtime)."""
    return {
        Modality.VISION: "pixels",
        Modality.TEXT: "tokens",
        Modality.AUDIO: "fbank",
        Modality.DEPTH: "depth",
        Modality.THERMAL: "thermal",
        Modality.IMU: "imu",
    }[modality]


# Not "embedding": the text graph already has a value of that name (the token lookup).
OUTPUT_NAME = "vectors"


def example_input(modality: Modality, shape: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    """A deterministic example batch of one clip per row.

    Args:
        shape: per-row input shape, e.g. (1, 128, 204) for audio.
    Returns:
        float32 normal noise, or for text int64 token ids shaped like real prompts
        (SOT, random ids, EOT, zero padding).
    """
    gen = torch.Generator().manual_seed(seed)
    if modality is not Modality.TEXT:
        return torch.randn((batch, *shape), generator=gen, dtype=torch.float32)
    ctx = shape[0]
    tokens = torch.zeros((batch, ctx), dtype=torch.int64)
    for row in range(batch):
        n = int(torch.randint(1, ctx - 1, (1,), generator=gen))
        tokens[row, 0] = 49406
        tokens[row, 1 : n + 1] = torch.randint(1, 49406, (n,), generator=gen)
        tokens[row, n + 1] = 49407  # n <= ctx - 2, so EOT always fits
    return tokens


def export_tower(
    model: torch.nn.Module,
    modality: Modality,
    row_shape: tuple[int, ...],
    out_path: Path,
    *,
    output_scale: float,
    opset: int = OPSET,
) -> TowerExport:
    """Export ``model.encode(modality, ·)`` to ``out_path`` and verify it in ONNX Runtime.

    Args:
        model: an eval-mode model exposing ``encode(modality, x) -> (B, D)``.
        row_shape: per-row input shape (batch excluded).
        out_path: destination ``.onnx``; external data goes to ``<name>.data`` for large models.
        output_scale: the modality's output norm, for the relative error bound.

    Raises:
        ExportError: the exporter failed, the graph uses an op TensorRT cannot parse, or
            ONNX Runtime does not reproduce PyTorch within the parity gate.
    """
    import onnx

    tower = _Tower(model.eval(), modality).eval()
    example = example_input(modality, row_shape, batch=2, seed=0)
    name = input_name(modality)
    external = _tower_bytes(model, modality) > EXTERNAL_DATA_BYTES
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _run_exporter(tower, example, name, out_path, opset=opset, external=external)
    proto = onnx.load(str(out_path), load_external_data=False)
    ops = graph_ops(proto)
    bad = unsupported_ops(ops)
    if bad:
        raise ExportError(f"{out_path}: graph uses {', '.join(bad)}, which TensorRT's ONNX parser may reject")
    cos_min, max_rel = check_parity(tower, modality, row_shape, out_path, scale=output_scale)
    in_dtype = "int64" if modality is Modality.TEXT else "float32"
    data_files = tuple(sorted(p for p in out_path.parent.glob(out_path.name + ".data*")))
    dim = int(tower(example[:1]).shape[-1])
    return TowerExport(
        onnx_path=out_path,
        data_files=data_files,
        input=TensorSpec(name, ("batch", *row_shape), in_dtype),
        output=TensorSpec(OUTPUT_NAME, ("batch", dim), "float32"),
        ops=tuple(ops),
        cosine_min=cos_min,
        max_abs_per_scale=max_rel,
    )


def _tower_bytes(model: torch.nn.Module, modality: Modality) -> int:
    """Bytes of the weights one modality's graph carries (other towers are not exported)."""
    total = 0
    for name, tensor in model.state_dict().items():
        if name.split(".")[1] == modality.value:
            total += tensor.numel() * tensor.element_size()
    return total


def _run_exporter(
    tower: torch.nn.Module, example: torch.Tensor, name: str, out_path: Path, *, opset: int, external: bool
) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    sink = io.StringIO()
    # The exporter logs one warning per missing torchvision op; irrelevant here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                tower,
                (example,),
                dynamo=True,
                input_names=[name],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: batch}},
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
            program.save(str(out_path), external_data=external)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{out_path}: torch.onnx.export failed ({first})") from exc


def check_parity(
    tower: torch.nn.Module, modality: Modality, row_shape: tuple[int, ...], onnx_path: Path, *, scale: float
) -> tuple[float, float]:
    """Compare ONNX Runtime with PyTorch on a fresh batch of 3 (not the traced batch size).

    Returns:
        (lowest row cosine, max abs difference / scale).

    Raises:
        ExportError: below :data:`MIN_COSINE` or above :data:`MAX_ABS_PER_SCALE`.
    """
    from runtime.backends.ort import OrtBackend

    x = example_input(modality, row_shape, batch=3, seed=1)
    with torch.no_grad():
        ref = tower(x).double().numpy()
    with OrtBackend(onnx_path) as backend:
        got = backend.infer({backend.inputs[0].name: x.numpy()})[OUTPUT_NAME].astype(np.float64)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    cos_min = float(cos.min())
    max_rel = float(np.abs(ref - got).max() / scale)
    if cos_min < MIN_COSINE or max_rel > MAX_ABS_PER_SCALE:
        raise ExportError(
            f"{onnx_path}: ONNX Runtime differs from PyTorch (cosine {cos_min:.7f} < {MIN_COSINE} "
            f"or max abs/scale {max_rel:.2e} > {MAX_ABS_PER_SCALE:.0e}); export not written"
        )
    return cos_min, max_rel
