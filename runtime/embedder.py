"""Embed model-ready arrays with a bundle's encoders: chunking, clip averaging, timing.

``python -m runtime.embed`` (:mod:`runtime.embed`) wraps this for files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from runtime.backends import Backend, backend_format, open_backend
from runtime.errors import InputError
from runtime.manifest import ModelManifest
from runtime.types import EmbeddingBatch, Modality


class Embedder:
    """Runs a bundle's encoders; backends open lazily, one per modality.

    Args:
        manifest: a loaded bundle manifest.
        backend: backend name (``"ort"``, ``"ort-cuda"``, ``"ort-tensorrt"``, ``"tensorrt"``, ``"torch"``);
            it decides the artifact format (ONNX, TensorRT engine, torch.export program).
        precision: which artifact to run (``"fp32"``, ``"fp16"``, ``"int8"``).
        max_batch: rows per backend call; larger inputs are chunked.
        backend_options: passed to the backend constructor (providers, threads).
    """

    def __init__(
        self,
        manifest: ModelManifest,
        backend: str = "ort",
        precision: str = "fp32",
        max_batch: int = 8,
        **backend_options: Any,
    ) -> None:
        self.manifest = manifest
        self.backend_name = backend
        self.precision = precision
        self.max_batch = max_batch
        self._options = backend_options
        self._backends: dict[Modality, Backend] = {}

    def backend(self, modality: Modality) -> Backend:
        """The (lazily opened) backend of ``modality``."""
        if modality not in self._backends:
            spec = self.manifest.spec(modality)
            art = spec.artifact(self.precision, backend_format(self.backend_name))
            path = str(self.manifest.path(art.file))
            options = dict(self._options)
            if art.engine:
                options["engine_fingerprint"] = art.engine
            self._backends[modality] = open_backend(self.backend_name, path, **options)
        return self._backends[modality]

    def embed(self, modality: Modality, x: NDArray[np.generic]) -> EmbeddingBatch:
        """Embed a batch of model-ready inputs.

        Args:
            x: ``(N, *row)`` one clip per input, or ``(N, S, *row)`` S clips per input,
                where ``row`` is the graph's per-row input shape (manifest ``input.shape[1:]``).
                Vision also takes still images ``(N, 3, H, W)``, repeated to 2 frames as the
                official model does.

        Returns:
            (N, D) float32 in input order: the official forward's output (scaled; the
            mean of the scaled clip vectors for multi-clip inputs).
        """
        spec = self.manifest.spec(modality)
        row = tuple(spec.input.shape[1:])
        x = _as_clips(modality, np.asarray(x), row)
        n, s = x.shape[:2]
        flat = np.ascontiguousarray(x.reshape((n * s, *row)).astype(spec.input.dtype, copy=False))
        backend = self.backend(modality)
        step = min(self.max_batch, getattr(backend, "max_batch", self.max_batch))  # an engine's profile limit
        outs = []
        for start in range(0, flat.shape[0], step):
            chunk = flat[start : start + step]
            outs.append(backend.infer({spec.input.name: chunk})[spec.output.name])
        vectors = np.concatenate(outs, axis=0).reshape(n, s, -1).mean(axis=1, dtype=np.float64)
        return EmbeddingBatch(modality, vectors.astype(np.float32))

    def reset(self, modality: Modality) -> None:
        """Close ``modality``'s backend (if open); the next call reopens it (after a backend failure)."""
        backend = self._backends.pop(modality, None)
        if backend is not None:
            backend.close()

    def close(self) -> None:
        """Close every opened backend."""
        for b in self._backends.values():
            b.close()
        self._backends.clear()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_clips(modality: Modality, x: NDArray[np.generic], row: tuple[int | str, ...]) -> NDArray[np.generic]:
    """Return ``x`` as (N, S, *row); raise a one-line InputError for any other layout."""
    given = tuple(x.shape)
    if modality is Modality.VISION and x.ndim == len(row):  # still images (N, 3, H, W)
        x = np.repeat(x[:, :, None], 2, axis=2)
    if x.ndim == len(row) + 1:
        x = x[:, None]
    if x.ndim != len(row) + 2 or tuple(x.shape[2:]) != tuple(row):
        want = f"(N, {', '.join(map(str, row))}) or (N, S, {', '.join(map(str, row))})"
        raise InputError(f"{modality.value} input has shape {given}; expected {want}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{modality.value} input is empty: shape {given}")
    return x
