"""The miniature ImageBind on ``sim://`` and the committed demo bundle it produced.

* A toy-size run of the whole pipeline (data from the runtime's windowing, stage 1,
  stage 2 against images, controls, evaluation, reports, bundle export) (torch).
* The committed ``bundles/demo`` (torch-free): trained weights, within the size cap, and
  text→sensor zero-shot top-1 far above chance on a sim seed used neither for training
  nor for the reported evaluation, computed with the runtime alone (ONNX Runtime).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.embedder import Embedder
from runtime.inputs import tokenize
from runtime.manifest import load_manifest
from runtime.types import Modality, Samples
from runtime.window_config import WindowConfig
from runtime.window_input import windows_to_batch
from runtime.windowing import Windower
from sensors.sim import generate
from sensors.sim_world import EVENT_CLASSES

DEMO = Path(__file__).resolve().parents[1] / "bundles" / "demo"
HELD_OUT_SEED = 7777  # not among the training seeds (1..40) nor the reported test seeds (1001..1010)
SIZE_CAP_BYTES = 25 * 1024 * 1024
STREAMS = {Modality.AUDIO: "audio", Modality.DEPTH: "depth", Modality.THERMAL: "thermal", Modality.IMU: "imu"}


def _label(timeline: tuple, t0_s: float, t1_s: float) -> int:
    """Class id covering at least half of ``[t0_s, t1_s)`` (a frame: active at t0_s); -1 otherwise."""
    labels = [c.label for c in EVENT_CLASSES]
    if t1_s <= t0_s:
        active = [e.label for e in timeline if e.start_s <= t0_s < e.end_s]
        return labels.index(active[0]) if active else -1
    for e in timeline:
        if min(e.end_s, t1_s) - max(e.start_s, t0_s) >= 0.5 * (t1_s - t0_s):
            return labels.index(e.label)
    return -1


def _zero_shot(embedder: Embedder, rec, modality: Modality, text: np.ndarray) -> tuple[float, float, int]:
    """(balanced top-1, chance, windows) of text→``modality`` over the classes the modality shows.

    Balanced: the mean over the classes present of each class's top-1, so a constant
    answer scores chance however uneven the seed's classes are.
    """
    spec = embedder.manifest.spec(modality)
    stream = rec.streams[STREAMS[modality]]
    frames = spec.window.get("sample_rate_hz") is None
    config = WindowConfig.from_spec(spec, {"frame_stride": 5} if frames else None)
    windows = Windower(stream.info, config).push(Samples(stream.info.stream_id, modality, stream.t_ns, stream.values))
    ends = [w.start_ns if frames else w.end_ns for w in windows]
    labels = np.array([_label(rec.timeline, w.start_ns / 1e9, e / 1e9) for w, e in zip(windows, ends, strict=True)])
    shown = [i for i, c in enumerate(EVENT_CLASSES) if modality in c.modalities]
    keep = np.isin(labels, shown)
    unit = embedder.embed(modality, windows_to_batch([w for w, k in zip(windows, keep, strict=True) if k], spec)).unit()
    pred, truth = np.asarray(shown)[np.argmax(unit @ text[shown].T, axis=1)], labels[keep]
    balanced = np.mean([(pred[truth == c] == c).mean() for c in shown if (truth == c).any()])
    return float(balanced), 1.0 / len(shown), int(keep.sum())


Scores = dict[Modality, tuple[float, float, int]]


def bundle_scores(bundle: Path, seed: int = HELD_OUT_SEED, duration_s: float = 300.0) -> Scores:
    """Per sensor modality (top-1, chance, windows) of ``bundle`` on ``duration_s`` of ``sim://random?seed=seed``.

    Five minutes hold every class several times (60 s hold only a few, too noisy to judge).
    """
    manifest = load_manifest(bundle)
    rec = generate("random", seed=seed, duration_s=duration_s, streams=tuple(STREAMS.values()))
    with Embedder(manifest, "ort", max_batch=64) as embedder:
        ids = tokenize([c.caption for c in EVENT_CLASSES], manifest.path(manifest.vocab["file"]))
        text = embedder.embed(Modality.TEXT, ids).unit()
        return {m: _zero_shot(embedder, rec, m, text) for m in STREAMS}


def test_committed_demo_bundle_is_trained_small_and_beats_chance_on_a_held_out_seed() -> None:
    manifest = load_manifest(DEMO)
    assert manifest.source.get("random_weights") is False and manifest.source.get("checkpoint")
    assert sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file()) <= SIZE_CAP_BYTES
    scores = bundle_scores(DEMO)
    assert all(n >= 20 for _, _, n in scores.values()), scores
    # seeded random towers score ~chance here (mean ~0.13, audio ~0.17); the trained bundle far above
    mean_top1, mean_chance = (float(np.mean([s[i] for s in scores.values()])) for i in (0, 1))
    assert mean_top1 >= max(0.4, 3 * mean_chance), scores
    assert scores[Modality.AUDIO][0] >= 0.5, scores


@pytest.mark.torch
def test_toy_two_stage_run_trains_evaluates_and_exports(tmp_path: Path) -> None:
    from export.train import miniature

    out, bundle = tmp_path / "run", tmp_path / "bundle"
    assert miniature.main(["--quick", "--out", str(out), "--bundle", str(bundle), "--no-progress"]) == 0
    summary = json.loads((out / "results.json").read_text())
    for mod in ("audio", "depth", "thermal", "imu"):
        row = summary["results"][mod]
        assert row["emergent"]["windows"] > 0 and 0.0 <= row["emergent"]["top1"] <= 1.0
        assert row["control"]["chance"] == pytest.approx(1.0 / row["control"]["classes"])
        first, last = (json.loads(line)["loss"] for line in _ends(out / f"stage2_{mod}" / "metrics.jsonl"))
        assert np.isfinite([first, last]).all()
    assert (out / "loss.png").stat().st_size > 0 and "| audio |" in (out / "results.md").read_text()
    manifest = load_manifest(bundle)
    assert {m.value for m in manifest.modalities} == {"text", "vision", "audio", "depth", "thermal", "imu"}
    assert manifest.source["random_weights"] is False and (bundle / "prompts.txt").is_file()
    assert manifest.spec(Modality.DEPTH).input.shape[1:] == [1, 64, 64] or tuple(
        manifest.spec(Modality.DEPTH).input.shape[1:]
    ) == (1, 64, 64)


def _ends(path: Path) -> tuple[str, str]:
    lines = [line for line in path.read_text().splitlines() if '"loss"' in line]
    return lines[0], lines[-1]
