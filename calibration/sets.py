"""Calibration and held-out sets: model-ready rows made exactly as the streaming runtime makes them.

Sources (``source`` argument of :func:`build_calibration_set`):

- ``sim://SCENARIO?seed=N[&duration_s=S]``: the synthetic world, opened through
  :func:`runtime.sources.open_source` (``pace=fast``, only the modality's stream), cut by the
  runtime's own :class:`~runtime.windowing.Windower` with the bundle's window and turned into
  encoder rows by :func:`~runtime.window_input.window_to_input`: the very windows the
  pipeline would embed. Text uses the caption stream. When the scenario's default length
  gives fewer windows than asked, the session is lengthened. Default source:
  :data:`DEFAULT_SOURCE` (``sim://demo?seed=1``: every one of the 12 event classes each minute).
- ``replay://FILE.npz`` (or a bare ``FILE.npz``): a recording, windowed the same way.
- a folder of files (``wav`` audio, ``png``/``jpg`` images, ``png``/``npy`` depth and thermal,
  ``csv``/``npy`` IMU, ``txt`` text), loaded by :func:`runtime.inputs.file_loader`; a
  sub-folder named after the modality is used when present. Audio files give every clip.
- a ``.txt`` file (text only): prompt-file lines (:func:`runtime.prompts.load_prompt_file`),
  every template one text.

Selection is reproducible and spread over the whole recording: the candidates are cut into
``count`` equal strata and one is drawn per stratum with a seeded generator. The held-out
split (:func:`build_held_out_set`) never shares a window with the calibration split: sim
uses another scene seed (``seed + HELD_OUT_SEED_OFFSET``); replays are split by 10 s time
segments (a window lies inside one segment); folders and text files by a seeded hash of the
file name or text; sim captions by disjoint prompt templates.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
from numpy.typing import NDArray

from runtime.errors import ConfigError, EdgebindError, InputError
from runtime.inputs import file_loader, preprocess_config, tokenize
from runtime.manifest import ModalitySpec, ModelManifest
from runtime.prompts import load_prompt_file
from runtime.sources import SampleSource, open_source, parse_uri
from runtime.types import Modality, Window
from runtime.window_input import window_to_input
from runtime.windowing import WindowConfig, Windower

ProgressFn = Callable[[str, float], None]
DEFAULT_SOURCE = "sim://demo?seed=1"
SPLITS = ("calibration", "held_out")
HELD_OUT_SEED_OFFSET = 7919  # sim scene seed of the held-out split, relative to the calibration seed
HELD_OUT_FRACTION = 0.25  # replay segments / folder files / text lines set aside for the held-out split
SEGMENT_S = 10.0  # replay split granularity, seconds
FOLDER_SUFFIXES: dict[Modality, tuple[str, ...]] = {
    Modality.AUDIO: (".wav",),
    Modality.VISION: (".png", ".jpg", ".jpeg", ".bmp"),
    Modality.DEPTH: (".png", ".npy"),
    Modality.THERMAL: (".png", ".npy", ".tif", ".tiff"),
    Modality.IMU: (".csv", ".npy"),
    Modality.TEXT: (".txt",),
}
# Sim captions become texts through disjoint templates, so the two splits never share a text.
TEXT_TEMPLATES = {
    "calibration": ("{}", "a photo of {}", "the sound of {}", "a robot notices that {}"),
    "held_out": ("{}.", "a video of {}", "a recording where {}", "in this room, {}"),
}


@dataclass(frozen=True)
class CalibrationSet:
    """Encoder rows for calibration or the accuracy gate.

    Attributes:
        modality: the encoder they feed.
        arrays: (N, *row) model-ready rows, one clip per row, in the graph input's dtype
            (float32; int64 token ids for text), row = ``spec.input.shape[1:]``.
        info: provenance (JSON-ready): source, resolved URI, split, seeds, requested and
            actual count, candidates, windowing and preprocessing used.
        texts: the texts of a text set, row order (empty otherwise).
    """

    modality: Modality
    arrays: NDArray[np.generic]
    info: dict[str, Any]
    texts: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.arrays.shape[0])


def build_calibration_set(
    manifest: ModelManifest,
    modality: Modality | str,
    source: str = DEFAULT_SOURCE,
    count: int = 64,
    seed: int | None = None,
    *,
    progress: ProgressFn | None = None,
    split: str = "calibration",
) -> CalibrationSet:
    """Make ``count`` model-ready rows of ``modality`` from ``source`` (see the module docstring).

    Args:
        manifest: the bundle (window, preprocessing constants, input shape and dtype).
        modality: which encoder the rows feed.
        source: ``sim://...``, ``replay://FILE.npz``, a folder, or a ``.txt`` file (text).
        count: rows wanted (fewer when the source has fewer candidates; see ``info``).
        seed: selection seed; for ``sim://`` also the scene seed (overrides the URI's).
            None: the URI's seed (or 0).
        progress: called with (stage, fraction in [0, 1]).
        split: ``"calibration"`` or ``"held_out"`` (disjoint from each other).

    Raises:
        ConfigError: unknown source kind, bad URI, a split or count out of range (one line).
        InputError: the source has no data for ``modality`` or no usable candidate.
    """
    mod = Modality.parse(modality) if isinstance(modality, str) else modality
    spec = manifest.spec(mod)
    if split not in SPLITS or count < 1:
        raise ConfigError(f"calibration set: split must be one of {SPLITS} and count >= 1 (got {split!r}, {count})")
    req = _Request(manifest, spec, source, count, seed, split, progress or (lambda _m, _f: None))
    kind, target = _classify(source, mod)
    if kind == "text_file":
        return _text_set(req, _text_file_lines(target), "lines")
    if kind == "folder":
        return _folder_set(req, Path(target))
    return _stream_set(req, target)


def build_held_out_set(
    manifest: ModelManifest,
    modality: Modality | str,
    source: str = DEFAULT_SOURCE,
    count: int = 64,
    seed: int | None = None,
    *,
    progress: ProgressFn | None = None,
) -> CalibrationSet:
    """The held-out split of ``source``: rows disjoint from :func:`build_calibration_set`'s (same args)."""
    return build_calibration_set(manifest, modality, source, count, seed, progress=progress, split="held_out")


@dataclass(frozen=True)
class _Request:
    """The arguments of one :func:`build_calibration_set` call, parsed."""

    manifest: ModelManifest
    spec: ModalitySpec
    given: str  # the source as given
    count: int
    seed: int | None
    split: str
    report: ProgressFn

    @property
    def held_out(self) -> bool:
        return self.split == "held_out"

    def info(self, opened: str, seed: int, count: int, candidates: int, **facts: Any) -> dict[str, Any]:
        """Provenance recorded with the set."""
        return {"source": self.given, "resolved": opened, "split": self.split, "seed": seed,
                "requested": self.count, "count": count, "candidates": candidates,
                "selection": "stratified seeded draw", **facts}  # fmt: skip


def check_source(source: str) -> None:
    """Raise a one-line EdgebindError unless ``source`` can be opened (scheme, scenario, parameters, file)."""
    kind, target = _classify(source, Modality.TEXT)
    if kind == "stream":
        parsed = parse_uri(target)
        with open_source(f"{parsed.scheme}://{parsed.target}?{urlencode(parsed.params | {'pace': 'fast'})}"):
            pass


def stratified_pick(n: int, count: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Indices into ``range(n)``: one uniform draw in each of ``count`` equal strata (all if ``count >= n``)."""
    if count >= n:
        return np.arange(n, dtype=np.int64)
    edges = np.linspace(0, n, count + 1)
    lo, hi = np.floor(edges[:-1]).astype(np.int64), np.floor(edges[1:]).astype(np.int64)
    return lo + (rng.random(count) * np.maximum(hi - lo, 1)).astype(np.int64)


def _rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split)])


def _hashed_held_out(key: str, seed: int) -> bool:
    """Seeded, order-independent assignment of a file name / text / segment to the held-out split."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < HELD_OUT_FRACTION


def _classify(source: str, mod: Modality) -> tuple[str, str]:
    """(kind, target): kind in stream / folder / text_file; a one-line ConfigError otherwise."""
    valid = "sim://SCENARIO?seed=N, replay://FILE.npz, a folder of files, or (text) a .txt file"
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        if scheme not in {"sim", "replay"}:
            raise ConfigError(f"calibration source {source!r}: scheme {scheme!r} is not replayable; use {valid}")
        return "stream", source
    path = Path(source)
    if path.is_dir():
        return "folder", source
    if path.is_file() and path.suffix.lower() == ".npz":
        return "stream", f"replay://{source}"
    if path.is_file() and path.suffix.lower() == ".txt" and mod is Modality.TEXT:
        return "text_file", source
    why = "no such file or folder" if not path.exists() else f"not usable for {mod.value}"
    raise ConfigError(f"calibration source {source!r}: {why}; use {valid}")


# -- sim:// and replay:// ---------------------------------------------------------------------
def _stream_uri(uri: str, mod: Modality, seed: int | None, split: str) -> tuple[str, dict[str, Any]]:
    """The URI actually opened (fast, one stream, split seed) and what was set."""
    parsed = parse_uri(uri)
    params = dict(parsed.params)
    params["pace"] = "fast"
    facts: dict[str, Any] = {}
    if parsed.scheme == "sim":
        scene = int(seed) if seed is not None else parsed.get("seed", 0, int)
        scene += HELD_OUT_SEED_OFFSET if split == "held_out" else 0
        params |= {"seed": str(scene), "streams": mod.value}
        facts["scene_seed"] = scene
    else:
        params |= {"timestamps": "original", "loop": "false"}
    return f"{parsed.scheme}://{parsed.target}?{urlencode(params)}", facts


def _open(uri: str, mod: Modality) -> tuple[SampleSource, str]:
    """Open ``uri`` and name the first stream of ``mod`` (one-line InputError when there is none)."""
    src = open_source(uri)
    for info in src.streams:
        if info.modality is mod:
            return src, info.stream_id
    have = ", ".join(f"{i.stream_id} ({i.modality.value})" for i in src.streams) or "none"
    src.close()
    raise InputError(f"calibration source {uri}: no {mod.value} stream (it has: {have})")


def _windows(uri: str, spec: ModalitySpec, wcfg: WindowConfig) -> Iterator[Window]:
    """Every window the runtime would cut from ``uri``'s ``spec.modality`` stream, in order."""
    src, sid = _open(uri, spec.modality)
    with src:
        info = next(i for i in src.streams if i.stream_id == sid)
        windower = Windower(info, wcfg)
        while True:
            try:
                samples = src.read(1.0)
            except EOFError:
                return
            if samples is not None and samples.stream_id == sid:
                yield from windower.push(samples)


def _texts(uri: str) -> list[str]:
    """Unique captions of ``uri``'s text stream, in order of appearance."""
    src, sid = _open(uri, Modality.TEXT)
    seen: dict[str, None] = {}
    with src:
        while True:
            try:
                samples = src.read(1.0)
            except EOFError:
                return list(seen)
            if samples is not None and samples.stream_id == sid:
                seen.update(dict.fromkeys(str(v) for v in samples.values))


def _in_split(w: Window, t0_ns: int, seed: int, split: str) -> bool:
    """Replay split: a window belongs to a split when its 10 s segment does (never spans two)."""
    seg = int((w.start_ns - t0_ns) // int(SEGMENT_S * 1e9))
    if int((w.end_ns - 1 - t0_ns) // int(SEGMENT_S * 1e9)) != seg:
        return False
    return _hashed_held_out(f"segment{seg}", seed) == (split == "held_out")


def _candidates(uri: str, req: _Request, wcfg: WindowConfig, seed: int, by_time: bool) -> list[int]:
    """Pass 1: indices (emission order) of the windows of the request's split."""
    keep, t0 = [], None
    for i, w in enumerate(_windows(uri, req.spec, wcfg)):
        t0 = w.start_ns if t0 is None else t0
        if not by_time or _in_split(w, t0, seed, req.split):
            keep.append(i)
    return keep


def _stream_set(req: _Request, uri: str) -> CalibrationSet:
    spec, mod = req.spec, req.spec.modality
    opened, facts = _stream_uri(uri, mod, req.seed, req.split)
    sel_seed = int(req.seed) if req.seed is not None else int(facts.get("scene_seed", 0))
    if mod is Modality.TEXT:
        return _text_set(req, _texts(opened), "captions", opened, seed=sel_seed, facts=facts)
    wcfg = WindowConfig.from_spec(spec)
    is_sim = opened.startswith("sim://")
    req.report(f"{mod.value}: scanning windows", 0.0)
    cand = _candidates(opened, req, wcfg, sel_seed, not is_sim)
    if is_sim and len(cand) < req.count and "duration_s" not in parse_uri(uri).params:
        opened = _longer(opened, mod, len(cand), req.count)
        cand = _candidates(opened, req, wcfg, sel_seed, False)
    if not cand:
        raise InputError(f"calibration source {req.given}: no complete {mod.value} window in the {req.split} split")
    chosen = {cand[i] for i in stratified_pick(len(cand), req.count, _rng(sel_seed, req.split))}
    cfg = preprocess_config(mod, spec.preprocess)
    rows = []
    for i, w in enumerate(_windows(opened, spec, wcfg)):
        if i in chosen:
            rows.append(window_to_input(w, spec, cfg))
            req.report(f"{mod.value}: preprocessing", len(rows) / len(chosen))
    arrays = np.stack(rows).astype(spec.input.dtype, copy=False)
    window = {"length_samples": wcfg.length_samples, "hop_samples": wcfg.hop_samples,
              "sample_rate_hz": wcfg.sample_rate_hz, "frame_stride": wcfg.frame_stride}  # fmt: skip
    info = req.info(opened, sel_seed, len(rows), len(cand), **facts, window=window,
                    preprocess="runtime.window_input.window_to_input with the manifest constants")  # fmt: skip
    return CalibrationSet(mod, arrays, info)


def _longer(uri: str, mod: Modality, have: int, want: int) -> str:
    """The sim URI with a duration long enough for ~1.25x ``want`` windows."""
    src, _ = _open(uri, mod)
    with src:
        base_s = float(getattr(src, "duration_s", 60.0))
    factor = math.ceil(1.25 * want / max(have, 1))
    parsed = parse_uri(uri)
    params = dict(parsed.params) | {"duration_s": f"{base_s * factor:g}"}
    return f"sim://{parsed.target}?{urlencode(params)}"


# -- text ---------------------------------------------------------------------------------------
def _text_file_lines(path: str) -> list[str]:
    """Every template of a prompt file (plain lines are one-template prompts)."""
    return [t for p in load_prompt_file(path) for t in p.templates]


def _text_set(req: _Request, texts: list[str], kind: str, opened: str = "", *, seed: int | None = None,
              facts: dict[str, Any] | None = None) -> CalibrationSet:  # fmt: skip
    """Tokenised texts of the split: captions through the split's templates, file lines by seeded hash."""
    seed = (req.seed or 0) if seed is None else seed
    if kind == "captions":
        cand = [t.format(c) for t in TEXT_TEMPLATES[req.split] for c in texts]
    else:
        cand = [t for t in dict.fromkeys(texts) if _hashed_held_out(t, seed) == req.held_out]
    if not cand:
        raise InputError(f"calibration source {req.given}: no text for the {req.split} split; give more lines")
    picked = tuple(cand[i] for i in stratified_pick(len(cand), req.count, _rng(seed, req.split)))
    manifest = req.manifest
    if not manifest.vocab:
        raise InputError(f"bundle {manifest.root} has no tokenizer vocabulary; cannot calibrate text")
    tokens = tokenize(list(picked), manifest.path(manifest.vocab["file"])).astype(req.spec.input.dtype, copy=False)
    how = "captions, split templates" if kind == "captions" else kind
    info = req.info(opened or req.given, seed, len(picked), len(cand), **(facts or {}),
                    preprocess=f"runtime.inputs.tokenize ({how})")  # fmt: skip
    return CalibrationSet(Modality.TEXT, tokens, info, picked)


# -- folders ------------------------------------------------------------------------------------
def _folder_files(folder: Path, mod: Modality) -> list[Path]:
    sub = folder / mod.value
    base = sub if sub.is_dir() else folder
    suffixes = FOLDER_SUFFIXES[mod]
    return sorted(p for p in base.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _folder_set(req: _Request, folder: Path) -> CalibrationSet:
    spec, mod = req.spec, req.spec.modality
    seed = req.seed or 0
    files = _folder_files(folder, mod)
    if mod is Modality.TEXT:
        return _text_set(req, [t for f in files for t in _text_file_lines(str(f))], "lines", str(folder))
    mine = [f for f in files if _hashed_held_out(f.name, seed) == req.held_out]
    if not mine:
        raise InputError(f"calibration source {req.given}: no {'/'.join(FOLDER_SUFFIXES[mod])} file for the "
                         f"{req.split} split of {mod.value} ({len(files)} file(s) in all); add more files")  # fmt: skip
    loader = file_loader(spec)
    rows: list[NDArray[np.generic]] = []
    for k, f in enumerate(mine):
        try:
            x = np.asarray(loader(str(f)))
        except EdgebindError:
            raise
        except (OSError, ValueError) as exc:
            raise InputError(f"{f}: {exc}") from None
        rows.extend(x if x.ndim == len(spec.input.shape) else x[None])  # audio: every clip is a row
        req.report(f"{mod.value}: loading files", (k + 1) / len(mine))
    idx = stratified_pick(len(rows), req.count, _rng(seed, req.split))
    arrays = np.stack([rows[i] for i in idx]).astype(spec.input.dtype, copy=False)
    info = req.info(str(folder), seed, len(idx), len(rows), files=len(mine),
                    preprocess="runtime.inputs.file_loader with the manifest constants")  # fmt: skip
    return CalibrationSet(mod, arrays, info)
