"""Add FP16 and INT8 encoders to an existing bundle, each behind the accuracy gate (design §5).

For every modality of the bundle and every requested precision: convert (:func:`export.fp16.convert_fp16`)
or quantize (:func:`calibration.quantize.quantize_int8`, calibrated on
:func:`calibration.sets.build_calibration_set` rows) the FP32 graph into a staging folder inside
the bundle, compare it with FP32 on held-out rows (:func:`calibration.gate.run_gate`), and only
when it passes move it to ``<modality>.<precision>.onnx`` and list it in the manifest with its gate
summary (and, for INT8, its calibration provenance). A failing candidate is deleted; with
``force`` it is kept, flagged ``forced`` (every later load warns) and a warning is logged. An
earlier artifact of the same precision stays until a new one is accepted. ``gate_report.json``
and ``manifest.json`` are rewritten atomically after every accepted artifact.

Never imports torch: it runs on a machine that only has the bundle (onnx + onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from calibration.gate import (
    DEFAULT_THRESHOLDS,
    GateResult,
    GateThresholds,
    caption_bank,
    embed_onnx,
    run_gate,
    window_bank,
    write_gate_report,
)
from calibration.sets import DEFAULT_SOURCE, CalibrationSet, build_calibration_set, build_held_out_set, check_source
from runtime.errors import ConfigError, EdgebindError, InputError
from runtime.manifest import Artifact, ModelManifest, file_sha256
from runtime.types import Modality

ProgressFn = Callable[[str, float], None]
ADDED_PRECISIONS = ("fp16", "int8")
BANK_ROWS = 16  # held-out rows whose FP32 embeddings form the bank when there is no text encoder
log = logging.getLogger("edgebind.export")


@dataclass(frozen=True)
class PrecisionOutcome:
    """What happened to one modality x precision.

    Attributes:
        modality, precision: which artifact.
        written: the file is in the bundle and the manifest (passed, or forced).
        forced: written although the gate failed.
        file: bundle-relative file name ("" when not written).
        size_bytes: model plus external data, bytes (0 when not written).
        gate: the verdict (None when conversion itself failed).
        error: the conversion/quantization error line, if any.
    """

    modality: str
    precision: str
    written: bool
    forced: bool = False
    file: str = ""
    size_bytes: int = 0
    gate: GateResult | None = None
    error: str = ""

    def line(self) -> str:
        """One line for the terminal."""
        if self.error:
            return f"{self.modality} {self.precision}: not written: {self.error}"
        assert self.gate is not None
        what = "written" if self.written and not self.forced else "FORCED (written despite the gate)"
        return f"{self.gate.line()}; {what if self.written else 'not written'}"


@dataclass(frozen=True)
class PrecisionRun:
    """The updated manifest and one outcome per modality x precision, in order."""

    manifest: ModelManifest
    outcomes: tuple[PrecisionOutcome, ...]

    @property
    def ok(self) -> bool:
        """Every requested artifact was written (forced ones count as written)."""
        return all(o.written for o in self.outcomes)


def parse_precisions(text: str) -> tuple[str, ...]:
    """``"fp32,fp16,int8"`` -> ("fp32", "fp16", "int8"), order kept, duplicates removed; one-line errors."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in ("fp32", *ADDED_PRECISIONS)]
    if bad or not names:
        raise ConfigError(f"--precision {text!r}: use a comma-separated subset of fp32, fp16, int8")
    return tuple(dict.fromkeys(names))


def add_precisions(
    manifest: ModelManifest,
    precisions: Sequence[str] = ADDED_PRECISIONS,
    *,
    calibration_source: str = DEFAULT_SOURCE,
    method: str = "percentile",
    windows: int = 64,
    seed: int | None = None,
    force: bool = False,
    thresholds: Mapping[str, GateThresholds] | None = None,
    progress: ProgressFn | None = None,
    modalities: Sequence[Modality] = (),
) -> PrecisionRun:
    """Convert, gate and record FP16/INT8 artifacts (see the module docstring).

    Args:
        manifest: the loaded bundle (its FP32 ONNX artifacts are the source).
        precisions: any of ``fp16``, ``int8`` (``fp32`` is ignored: it is already there).
        calibration_source: INT8 calibration rows and the gate's held-out rows come from here
            (``sim://``, ``replay://``, a folder; see :mod:`calibration.sets`).
        method: INT8 activation range method (``percentile``, ``minmax``, ``entropy``).
        windows: calibration rows per modality; the gate compares as many held-out rows.
        seed: selection (and sim scene) seed; None takes the URI's.
        force: keep candidates that fail the gate, flagged ``forced``.
        thresholds: per precision, replacing :data:`calibration.gate.DEFAULT_THRESHOLDS`.
        progress: called with (stage, fraction done).
        modalities: subset to process; empty = every modality of the bundle.

    Raises:
        EdgebindError: bad arguments or a calibration source that cannot be opened (one line,
            before anything is written). A modality without data in the source, conversion and
            gate failures do not raise: they are in the returned outcomes.
    """
    wanted = [p for p in dict.fromkeys(precisions) if p != "fp32"]
    bad = [p for p in wanted if p not in ADDED_PRECISIONS]
    if bad or windows < 1:
        raise ConfigError(f"precisions {list(precisions)} / windows {windows}: use fp16, int8 and windows >= 1")
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    mods = list(modalities) or list(manifest.modalities)
    for mod in mods:
        manifest.spec(mod)  # one-line BundleError for a modality the bundle lacks
    check_source(calibration_source)
    report = progress or (lambda _m, _f: None)
    ctx = _Context(calibration_source, method, windows, seed, force, limits, report)
    outcomes: list[PrecisionOutcome] = []
    for i, mod in enumerate(mods):
        ctx.span = (i / len(mods), (i + 1) / len(mods))
        manifest, done = _modality(manifest, mod, wanted, ctx)
        outcomes.extend(done)
    report("done", 1.0)
    return PrecisionRun(manifest, tuple(outcomes))


@dataclass
class _Context:
    source: str
    method: str
    windows: int
    seed: int | None
    force: bool
    thresholds: Mapping[str, GateThresholds]
    report: ProgressFn
    span: tuple[float, float] = (0.0, 1.0)
    captions: tuple[NDArray[np.float32], str] | None = None

    def step(self, msg: str, frac: float) -> None:
        lo, hi = self.span
        self.report(msg, lo + (hi - lo) * min(max(frac, 0.0), 1.0))


@dataclass(frozen=True)
class _Heldout:
    fp32: Path  # the FP32 graph
    calib: CalibrationSet | None  # INT8 calibration rows
    rows: NDArray[np.generic]  # (N, *row) compared rows
    reference: NDArray[np.float32]  # (N, D) their FP32 embeddings
    bank: NDArray[np.float32]  # (P, D) FP32 prompt bank
    bank_name: str
    info: dict[str, Any]


def _modality(
    manifest: ModelManifest, mod: Modality, precisions: list[str], ctx: _Context
) -> tuple[ModelManifest, list[PrecisionOutcome]]:
    ctx.step(f"{mod.value}: held-out rows", 0.0)
    calib = None
    try:
        if "int8" in precisions:
            ctx.step(f"{mod.value}: calibration rows", 0.1)
            calib = build_calibration_set(manifest, mod, ctx.source, ctx.windows, ctx.seed)
        held = _held_out(manifest, mod, ctx, calib)
    except InputError as exc:  # this modality has no usable data in the source; the others go on
        return manifest, [PrecisionOutcome(mod.value, p, False, error=str(exc)) for p in precisions]
    outcomes = []
    for k, prec in enumerate(precisions):
        ctx.step(f"{mod.value}: {prec}", 0.2 + 0.8 * k / len(precisions))
        manifest, outcome = _one(manifest, mod, prec, held, ctx)
        outcomes.append(outcome)
    return manifest, outcomes


def _held_out(manifest: ModelManifest, mod: Modality, ctx: _Context, calib: CalibrationSet | None) -> _Heldout:
    """Held-out rows, their FP32 embeddings and the prompt bank (captions, else other held-out rows)."""
    spec = manifest.spec(mod)
    fp32 = manifest.path(spec.artifact("fp32").file)
    captions = mod is not Modality.TEXT and Modality.TEXT in manifest.modalities and bool(manifest.vocab)
    count = ctx.windows if captions else ctx.windows + BANK_ROWS
    held: CalibrationSet = build_held_out_set(manifest, mod, ctx.source, count, ctx.seed)
    if captions:
        if ctx.captions is None:
            ctx.captions = caption_bank(manifest)
        rows, (bank, bank_name) = held.arrays, ctx.captions
    else:
        bank_rows = min(BANK_ROWS, max(len(held) // 2, 2))
        rows, bank_in = window_bank(held.arrays, bank_rows)
        bank = embed_onnx(fp32, spec.input.name, spec.output.name, bank_in)
        bank_name = f"windows:held-out ({bank_rows})"
    reference = embed_onnx(fp32, spec.input.name, spec.output.name, rows)
    return _Heldout(fp32, calib, rows, reference, bank, bank_name, held.info)


def _one(
    manifest: ModelManifest, mod: Modality, prec: str, held: _Heldout, ctx: _Context
) -> tuple[ModelManifest, PrecisionOutcome]:
    """Convert one candidate in a staging folder, gate it, move it in or drop it."""
    spec = manifest.spec(mod)
    name = f"{mod.value}.{prec}.onnx"
    staging = manifest.root / f".staging-{mod.value}.{prec}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        try:
            files, facts, hints = _convert(held, staging / name, prec, spec.input.name, ctx)
            gate = run_gate(held.fp32, staging / name, spec.input.name, spec.output.name, held.rows, held.bank,
                            modality=mod.value, precision=prec, thresholds=ctx.thresholds[prec],
                            bank=held.bank_name, reference=held.reference, session_options=hints)  # fmt: skip
        except EdgebindError as exc:
            return manifest, PrecisionOutcome(mod.value, prec, False, error=str(exc))
        entry = gate.to_dict() | {"held_out": held.info, "conversion": facts, "written": False, "forced": False}
        if not gate.passed and not ctx.force:
            write_gate_report(manifest.root, [entry])
            return manifest, PrecisionOutcome(mod.value, prec, False, gate=gate)
        forced = not gate.passed
        if forced:
            log.warning("%s: written despite a failed accuracy gate (--force): %s", name, "; ".join(gate.reasons))
        provenance = facts.get("calibration", {})
        art = _install(manifest, mod, files, staging, gate=gate, forced=forced, calibration=provenance)
        manifest = manifest.with_artifact(mod, art)
        write_gate_report(manifest.root, [entry | {"written": True, "forced": forced, "file": art.file}])
        manifest.write()
        return manifest, PrecisionOutcome(mod.value, prec, True, forced, art.file, art.size_bytes, gate)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _convert(
    held: _Heldout, dst: Path, prec: str, input_name: str, ctx: _Context
) -> tuple[tuple[Path, ...], dict[str, Any], dict[str, Any]]:
    """Write the candidate; returns (files written, facts for the report, ORT session hints)."""
    if prec == "fp16":
        from export.fp16 import convert_fp16

        res = convert_fp16(held.fp32, dst)
        facts = {"tool": "export.fp16.convert_fp16", "fp16_nodes": res.fp16_nodes, "fp32_nodes": res.fp32_nodes,
                 "kept_ops": list(res.kept_ops)}  # fmt: skip
        return (res.path, *res.data_files), facts, {}
    from calibration.quantize import QuantConfig, quantize_int8, session_options_hint

    calib = held.calib
    assert calib is not None
    stem = dst.name.split(".")[0]
    with contextlib.redirect_stdout(io.StringIO()):  # ONNX Runtime's calibrators print their progress
        q = quantize_int8(held.fp32, dst, input_name, calib.arrays, QuantConfig(method=ctx.method),
                          progress=lambda stage, frac: ctx.step(f"{stem}: int8 {stage}", 0.6 + 0.3 * frac))  # fmt: skip
    provenance = {**calib.info, "method": q.method, "config": dict(q.config)}
    facts = {"tool": "calibration.quantize.quantize_int8", "activation_qdq": q.activation_qdq,
             "weight_dq": q.weight_dq, "excluded_nodes": list(q.excluded_nodes), "calibration": provenance}  # fmt: skip
    return (q.path, *q.data_files), facts, dict(session_options_hint(q.path))


def _install(
    manifest: ModelManifest, mod: Modality, files: Sequence[Path], staging: Path, *, gate: GateResult,
    forced: bool, calibration: dict[str, Any],
) -> Artifact:  # fmt: skip
    """Move the staged files into the bundle (replacing the earlier artifact's) and describe them."""
    root, prec = manifest.root, gate.precision
    for old in manifest.spec(mod).artifacts:
        if (old.format, old.precision) == ("onnx", prec):
            for rel in (old.file, *(f for f, _ in old.data_files)):
                (root / rel).unlink(missing_ok=True)
    moved = []
    for f in files:
        target = root / Path(f).relative_to(staging)
        Path(f).replace(target)
        moved.append(target)
    model, data = moved[0], moved[1:]
    return Artifact(
        file=model.relative_to(root).as_posix(),
        format="onnx",
        precision=prec,
        sha256=file_sha256(model),
        size_bytes=sum(p.stat().st_size for p in moved),
        data_files=tuple((p.relative_to(root).as_posix(), file_sha256(p)) for p in data),
        forced=forced,
        gate=gate.summary(),
        calibration=calibration,
    )
