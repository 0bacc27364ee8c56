"""``python -m runtime.stream --demo``: the synthetic world through the demo bundle, scored.

Streams ``sim://demo`` (IMU, audio, depth, thermal; ``pace=fast``, lossless, so every
window is embedded) through ``bundles/demo`` with the bundle's own ``prompts.txt`` (the
trained miniature model knows the sim captions) or else ``tests/fixtures/prompts_demo.txt``,
prints the detected events next to the ground-truth timeline, then per-class and overall
precision and recall (:mod:`runtime.evaluate`) and the sensor-to-event latency p50/p99.

Two detectors run on the same windows: every sensor voting alone (the per-stream matcher)
and, when the bundle ships a tuned fusion config (``fusion.json``, written by
``python -m benchmarks.fusion --write-config``), cross-sensor fusion (:mod:`runtime.fusion_stage`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.embedder import Embedder
from runtime.errors import EdgebindError
from runtime.evaluate import Interval, evaluate, format_table, truth_from_timeline
from runtime.fusion_stage import FusionStage, load_fusion_config
from runtime.manifest import load_manifest
from runtime.matching import MatchConfig
from runtime.pipeline import Pipeline, PipelineConfig
from runtime.pipeline_status import PipelineEvent, PipelineStatus
from runtime.prompts import load_prompt_file

DEMO_BUNDLE = Path("bundles") / "demo"
DEMO_PROMPTS = Path("tests") / "fixtures" / "prompts_demo.txt"
BUNDLE_PROMPTS = "prompts.txt"  # prompts shipped with a bundle (the miniature sim model writes one)
BUNDLE_FUSION = "fusion.json"  # the tuned fusion config shipped with a bundle
DEMO_STREAMS = "imu,audio,depth,thermal"


def _find(relative: Path) -> Path | None:
    """``relative`` under the working directory, else under the repository holding this package."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / relative).exists():
            return root / relative
    return None


def _demo_files() -> tuple[Path, Path] | None:
    """(bundle manifest, prompt file), or None after printing one line saying what is missing."""
    bundle = _find(DEMO_BUNDLE / "manifest.json")
    if bundle is None:
        print(f"error: no demo bundle at {DEMO_BUNDLE}; run `bash scripts/demo_bundle.sh` first", file=sys.stderr)
        return None
    own = bundle.parent / BUNDLE_PROMPTS
    prompts_path = own if own.is_file() else _find(DEMO_PROMPTS)
    if prompts_path is None:
        print(f"error: demo prompts {DEMO_PROMPTS} not found; run from the repository root", file=sys.stderr)
        return None
    return bundle, prompts_path


def run_demo(duration_s: float | None = None, threads: int = 0, out: Callable[[str], None] = print) -> int:
    """Run the demo; 0 on success, 2 when the bundle or the prompts are missing.

    Args:
        duration_s: seconds of synthetic data (default: one 60 s cycle of the scenario).
        threads: backend intra-op threads (0: default).
        out: where the report lines go.
    """
    found = _demo_files()
    if found is None:
        return 2
    bundle, prompts_path = found
    uri = f"sim://demo?seed=0&pace=fast&streams={DEMO_STREAMS}"
    if duration_s is not None:
        uri += f"&duration_s={duration_s:g}"
    events: list[PipelineEvent] = []
    fusion_path = bundle.parent / BUNDLE_FUSION
    try:
        manifest = load_manifest(bundle.parent)
        prompts = load_prompt_file(prompts_path)
        fusion = load_fusion_config(fusion_path) if fusion_path.is_file() else None
        from runtime.stream import prompt_bank

        with Embedder(manifest, "ort", max_batch=8, intra_op_threads=threads) as embedder:
            bank = prompt_bank(embedder, prompts)
            stage = FusionStage(fusion, bank) if fusion is not None else None
            cfg = PipelineConfig(threads=threads, lossless=True)
            pipeline = Pipeline(manifest, [uri], bank, MatchConfig(), cfg, on_event=events.append, embedder=embedder,
                                on_window=stage)  # fmt: skip
            source = pipeline.source_objects[0]
            status = pipeline.run()
    except EdgebindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if manifest.source.get("random_weights"):
        out(f"NOTE: {bundle.parent} has RANDOM weights: every number below is chance-level "
            "until the trained demo bundle lands.")  # fmt: skip
    out(f"demo: {uri}  bundle {bundle.parent}  prompts {prompts_path}")
    out(f"      {status.windows_done} windows in {status.elapsed_s:.1f} s, {status.windows_dropped} dropped, "
        f"{status.events} events")  # fmt: skip
    t0_ns = int(getattr(source, "t0_ns", pipeline.created_ns))
    truth = truth_from_timeline(getattr(source, "timeline", ()), uri, t0_ns)
    closed = pipeline.closed_events()
    detections = [Interval(m.label, src, m.start_ns, m.end_ns) for m, src in closed]
    labels = [p.label for p in prompts if not p.background]
    fused = None
    if stage is not None:
        fused = [Interval(e.label, uri, e.start_ns, e.end_ns) for e in stage.flush()]
    _print_scores(out, (truth, t0_ns, labels), detections, fused, fusion_path)
    _print_latency(out, events, status)
    for err in status.errors:
        out(f"error: {err}")
    return 0


def _print_scores(out: Callable[[str], None], ground: tuple[list[Interval], int, list[str]],
                  single: list[Interval], fused: list[Interval] | None, fusion_path: Path) -> None:  # fmt: skip
    """Timeline and per-class table of each detector, then one overall line each.

    ``ground`` is (ground-truth intervals, t0_ns of the timeline, the scored labels).
    """
    truth, t0_ns, labels = ground
    results = {}
    for name, dets in (("every sensor voting alone", single), (f"cross-sensor fusion ({fusion_path})", fused)):
        if dets is None:
            continue
        out("")
        out(f"{name}:")
        _print_timeline(out, truth, dets, t0_ns)
        results[name.split(" (")[0]] = result = evaluate(dets, truth, labels)
        out("")
        for line in format_table(result):
            out(line)
        if result.unscored:
            out(f"(ground-truth classes without a prompt, not scored: {', '.join(result.unscored)})")
    out("")
    for name, ev in results.items():
        o = ev.overall
        out(f"{name:<26} {o.detections:>4} detections  precision {o.precision:.2f}  recall {o.recall:.2f}  "
            f"F1 {o.f1:.2f}")  # fmt: skip


def _print_latency(out: Callable[[str], None], events: list[PipelineEvent], status: PipelineStatus) -> None:
    """Sensor-to-event latency p50/p99 over the events, and capture-to-match over every window."""
    lat = np.array([e.latency_ms for e in events]) if events else np.zeros(0)
    if lat.size:
        p50, p99 = np.percentile(lat, [50, 99])
        out(f"sensor-to-event latency: p50 {p50:.0f} ms  p99 {p99:.0f} ms over {lat.size} events "
            "(pace=fast: includes waiting behind the replayed backlog)")  # fmt: skip
    else:
        out("sensor-to-event latency: no events")
    total = status.latency.get("total")
    if total is not None and total.count:
        out(f"capture-to-match latency per window: p50 {total.p50_ms:.0f} ms  p99 {total.p99_ms:.0f} ms")


def _print_timeline(out: Callable[[str], None], truth: list[Interval], dets: list[Interval], t0_ns: int) -> None:
    """Each ground-truth event with the detections overlapping it; then detections outside any."""

    def s(ns: int) -> float:
        return (ns - t0_ns) / 1e9

    out("")
    out(f"{'ground truth':<28} detected (label [start-end s], + = correct label)")
    used: set[int] = set()
    for t in truth:
        near = [(i, d) for i, d in enumerate(dets) if d.overlaps(t)]
        used.update(i for i, _ in near)
        cells = [f"{'+' if d.label == t.label else ' '}{d.label} [{s(d.start_ns):.1f}-{s(d.end_ns):.1f}]"
                 for _, d in near]  # fmt: skip
        out(f"{s(t.start_ns):5.1f}-{s(t.end_ns):5.1f} s  {t.label:<14} {', '.join(cells) or '-'}")
    extra = [d for i, d in enumerate(dets) if i not in used]
    if extra:
        out("outside every ground-truth event: " + ", ".join(f"{d.label} [{s(d.start_ns):.1f}]" for d in extra))
