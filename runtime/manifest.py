"""The bundle contract (design §4): ``manifest.json`` parsing, validation and hashing.

Imports only the standard library and numpy; written by ``export.bundle``, read by
every runtime stage. A bundle is a directory holding ``manifest.json``, one or more
model artifacts per modality and the tokenizer vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runtime.errors import BundleError
from runtime.types import Modality

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
FORMATS = ("onnx", "tensorrt", "torch_export")
PRECISIONS = ("fp32", "fp16", "int8")
_log = logging.getLogger("edgebind.bundle")


@dataclass(frozen=True)
class TensorSpec:
    """One named graph input or output.

    Attributes:
        name: tensor name in the graph.
        shape: dimensions; a string (e.g. ``"batch"``) marks a dynamic axis.
        dtype: numpy dtype name, e.g. ``"float32"`` or ``"int64"``.
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> TensorSpec:
        try:
            return cls(str(data["name"]), tuple(data["shape"]), str(data["dtype"]))
        except (KeyError, TypeError) as exc:
            raise BundleError(f"{where}: malformed tensor spec ({exc}); re-export the bundle") from None


@dataclass(frozen=True)
class Artifact:
    """One model file of a modality.

    Attributes:
        file: path relative to the bundle directory.
        format: ``"onnx"``, ``"tensorrt"`` (serialized engine) or ``"torch_export"`` (``.pt2``).
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        sha256: hex digest of ``file``.
        size_bytes: size of ``file`` (plus its data files).
        data_files: ONNX external-data files (relative names) with their digests.
        forced: written although its accuracy gate failed (``--force``); every load warns.
        gate: accuracy-gate summary against FP32 (cosine mean / 1st percentile, top-1 agreement,
            thresholds, passed, report file).
        calibration: INT8 provenance (source, seed, windows, method).
        engine: TensorRT fingerprint (tensorrt_version, gpu_name, compute_capability, profiles, ...).
    """

    file: str
    format: str
    precision: str
    sha256: str
    size_bytes: int
    data_files: tuple[tuple[str, str], ...] = ()
    forced: bool = False
    gate: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "format": self.format,
            "precision": self.precision,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "data_files": [{"file": f, "sha256": h} for f, h in self.data_files],
        }
        if self.forced:
            out["forced"] = True
        for key in ("gate", "calibration", "engine"):
            if getattr(self, key):
                out[key] = dict(getattr(self, key))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Artifact:
        try:
            extra = tuple((str(d["file"]), str(d["sha256"])) for d in data.get("data_files", []))
            art = cls(
                str(data["file"]),
                str(data["format"]),
                str(data["precision"]),
                str(data["sha256"]),
                int(data["size_bytes"]),
                extra,
                forced=bool(data.get("forced", False)),
                gate=dict(data.get("gate", {})),
                calibration=dict(data.get("calibration", {})),
                engine=dict(data.get("engine", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: malformed artifact entry ({exc}); re-export the bundle") from None
        if art.format not in FORMATS or art.precision not in PRECISIONS:
            raise BundleError(
                f"{where}: artifact {art.file} has format/precision {art.format}/{art.precision} "
                f"(this runtime knows formats {', '.join(FORMATS)} and precisions {', '.join(PRECISIONS)}); "
                "upgrade edgebind or re-export the bundle"
            )
        return art


@dataclass(frozen=True)
class ModalitySpec:
    """Everything the runtime needs to feed and read one modality's encoder.

    Attributes:
        modality: which encoder.
        input: graph input; batch first, one clip per row.
        output: graph output, (batch, embed_dim) float32, normalised and scaled.
        output_scale: norm of each output row (vision 1, audio 20, depth 5, ...).
        clips_per_input: clips the official loader makes per file (audio 3, others 1);
            the runtime averages the scaled clip embeddings, as the official model does.
        window: streaming window: ``length_samples``, ``hop_samples``, ``sample_rate_hz``.
        preprocess: every preprocessing constant (the modality's config dataclass as a dict).
        artifacts: model files, at least one.
        parity: ONNX Runtime vs PyTorch figures measured at export.
    """

    modality: Modality
    input: TensorSpec
    output: TensorSpec
    output_scale: float
    clips_per_input: int
    window: dict[str, Any]
    preprocess: dict[str, Any]
    artifacts: tuple[Artifact, ...]
    parity: dict[str, Any] = field(default_factory=dict)

    def artifact(self, precision: str = "fp32", fmt: str = "onnx") -> Artifact:
        """Return the artifact of ``precision`` and ``fmt`` or raise a one-line BundleError."""
        for art in self.artifacts:
            if art.precision == precision and art.format == fmt:
                return art
        have = ", ".join(f"{a.format}/{a.precision}" for a in self.artifacts) or "none"
        raise BundleError(
            f"modality {self.modality.value!r} has no {fmt}/{precision} artifact (bundle has: {have}); "
            "re-export with that precision"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "output_scale": self.output_scale,
            "clips_per_input": self.clips_per_input,
            "window": dict(self.window),
            "preprocess": dict(self.preprocess),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "parity": dict(self.parity),
        }

    @classmethod
    def from_dict(cls, modality: Modality, data: dict[str, Any], where: str) -> ModalitySpec:
        w = f"{where}: modalities.{modality.value}"
        try:
            arts = tuple(Artifact.from_dict(a, w) for a in data["artifacts"])
            if not arts:
                raise BundleError(f"{w}: no artifacts listed; re-export the bundle")
            return cls(
                modality=modality,
                input=TensorSpec.from_dict(data["input"], w),
                output=TensorSpec.from_dict(data["output"], w),
                output_scale=float(data["output_scale"]),
                clips_per_input=int(data.get("clips_per_input", 1)),
                window=dict(data.get("window", {})),
                preprocess=dict(data.get("preprocess", {})),
                artifacts=arts,
                parity=dict(data.get("parity", {})),
            )
        except KeyError as exc:
            raise BundleError(f"{w}: missing key {exc}; re-export the bundle") from None


@dataclass(frozen=True)
class ModelManifest:
    """A bundle's ``manifest.json``.

    Attributes:
        root: the bundle directory (not serialised).
        model_id: SHA-256 of the source weights.
        model_name: config name (preset or file) the weights belong to.
        embed_dim: D, the shared embedding width.
        modalities: one spec per exported encoder.
        vocab: ``{"file": ..., "sha256": ...}`` of the BPE merges, when text is exported.
        source: provenance (checkpoint name, config, random-weights flag, versions).
    """

    root: Path
    model_id: str
    model_name: str
    embed_dim: int
    modalities: dict[Modality, ModalitySpec]
    vocab: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def spec(self, modality: Modality | str) -> ModalitySpec:
        """Return the spec of ``modality`` or raise a BundleError naming what the bundle has."""
        mod = Modality.parse(modality) if isinstance(modality, str) else modality
        if mod not in self.modalities:
            have = ", ".join(m.value for m in self.modalities) or "none"
            raise BundleError(
                f"bundle {self.root} has no {mod.value!r} encoder (it has: {have}); "
                f"re-export with --modalities including {mod.value}"
            )
        return self.modalities[mod]

    def path(self, relative: str) -> Path:
        """Resolve a file named in the manifest inside the bundle directory."""
        return self.root / relative

    def with_artifact(self, modality: Modality | str, artifact: Artifact) -> ModelManifest:
        """Return a copy with ``artifact`` replacing the one of the same format and precision (or added)."""
        spec = self.spec(modality)
        kept = tuple(a for a in spec.artifacts if (a.format, a.precision) != (artifact.format, artifact.precision))
        mods = dict(self.modalities)
        mods[spec.modality] = replace(spec, artifacts=(*kept, artifact))
        return replace(self, modalities=mods)

    def forced_artifacts(self) -> list[tuple[Modality, Artifact]]:
        """Artifacts written although their accuracy gate failed."""
        return [(m, a) for m, s in self.modalities.items() for a in s.artifacts if a.forced]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "model_id": self.model_id,
            "model_name": self.model_name,
            "embed_dim": self.embed_dim,
            "vocab": dict(self.vocab),
            "source": dict(self.source),
            "modalities": {m.value: s.to_dict() for m, s in self.modalities.items()},
        }

    def write(self) -> Path:
        """Write ``manifest.json`` atomically into ``root`` and return its path."""
        path = self.root / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n")
        tmp.replace(path)
        return path


def file_sha256(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(bundle_dir: str | Path, verify_hashes: bool = True) -> ModelManifest:
    """Read and validate ``bundle_dir/manifest.json``.

    Checks the schema version, required keys, that every artifact and the vocabulary
    exist and (unless ``verify_hashes`` is False) that their SHA-256 digests match.

    Raises:
        BundleError: one line naming the file and the problem.
    """
    root = Path(bundle_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{path}: no manifest (is {root} a bundle? build one with `python -m export bundle`)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc}); re-export the bundle") from None
    manifest = _manifest_from_dict(root, data, str(path))
    _check_files(manifest, verify_hashes)
    for mod, art in manifest.forced_artifacts():
        _log.warning(
            "%s: %s %s/%s failed its accuracy gate and was written with --force (%s); "
            "expect degraded matches, re-export without --force to drop it",
            root,
            mod.value,
            art.format,
            art.precision,
            _gate_summary(art.gate),
        )
    return manifest


def _gate_summary(gate: dict[str, Any]) -> str:
    if not gate:
        return "no gate figures recorded"
    keys = ("cosine_mean", "cosine_p1", "top1_agreement")
    parts = [f"{k}={gate[k]:.4f}" for k in keys if isinstance(gate.get(k), (int, float))]
    return ", ".join(parts) or "no gate figures recorded"


def _manifest_from_dict(root: Path, data: Any, where: str) -> ModelManifest:
    if not isinstance(data, dict):
        raise BundleError(f"{where}: expected a JSON object; re-export the bundle")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{where}: schema_version {version!r} is not supported (this runtime reads {SCHEMA_VERSION}); "
            "re-export the bundle with this version of edgebind"
        )
    try:
        mods_raw = data["modalities"]
        mods: dict[Modality, ModalitySpec] = {}
        for name, spec in mods_raw.items():
            try:
                mod = Modality.parse(name)
            except ValueError as exc:
                raise BundleError(f"{where}: {exc}") from None
            mods[mod] = ModalitySpec.from_dict(mod, spec, where)
        return ModelManifest(
            root=root,
            model_id=str(data["model_id"]),
            model_name=str(data.get("model_name", "")),
            embed_dim=int(data["embed_dim"]),
            modalities=mods,
            vocab=dict(data.get("vocab", {})),
            source=dict(data.get("source", {})),
        )
    except (KeyError, AttributeError, TypeError) as exc:
        raise BundleError(f"{where}: missing or malformed key {exc}; re-export the bundle") from None


def _check_files(manifest: ModelManifest, verify_hashes: bool) -> None:
    expected: list[tuple[str, str]] = []
    for spec in manifest.modalities.values():
        if spec.output.shape[-1] != manifest.embed_dim:
            raise BundleError(
                f"{manifest.root / MANIFEST_NAME}: {spec.modality.value} output width {spec.output.shape[-1]} "
                f"!= embed_dim {manifest.embed_dim}; re-export the bundle"
            )
        for art in spec.artifacts:
            expected.append((art.file, art.sha256))
            expected.extend(art.data_files)
    if manifest.vocab:
        expected.append((manifest.vocab["file"], manifest.vocab["sha256"]))
    for rel, digest in expected:
        path = manifest.path(rel)
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing; copy the whole bundle directory")
        if verify_hashes and file_sha256(path) != digest:
            raise BundleError(
                f"{path}: SHA-256 does not match the manifest (corrupted or replaced file); re-export or re-copy it"
            )
