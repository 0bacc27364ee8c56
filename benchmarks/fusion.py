"""Cross-sensor fusion vs single modalities on held-out ``sim://random`` seeds (bundles/demo, ONNX Runtime).

``python -m benchmarks.fusion [--tune-seed 2000] [--seeds 2001-2005] [--duration 300]``

Tunes each modality's best :class:`runtime.matching.MatchConfig` and the fusion config on
the tuning seed, then scores on the evaluation seeds (neither among the miniature's
training seeds 1-40 nor its test seeds 1001-1010) per class and overall: every single
modality (its own shown classes), their union (each sensor voting alone, as the stream
demo does) and the fused detector. Writes ``benchmarks/results/fusion-<date>.json/.md``
(+ ``.png`` when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STREAMS = ("imu", "audio", "depth", "thermal")


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in text.split(",") if x]


def run(bundle: Path, tune_seed: int, seeds: list[int], duration_s: float, threads: int = 0) -> dict[str, Any]:
    """Embed, tune and score; returns the JSON payload."""
    from runtime.embedder import Embedder
    from runtime.fusion_eval import compare, embed_tracks, text_bank, truth_of
    from runtime.manifest import load_manifest
    from runtime.prompts import load_prompt_file
    from sensors.sim import generate
    from sensors.sim_world import EVENT_CLASSES

    t0 = time.perf_counter()
    manifest = load_manifest(bundle)
    prompts = load_prompt_file(bundle / "prompts.txt")
    classes = [(c.label, tuple(m.value for m in c.modalities)) for c in EVENT_CLASSES]
    with Embedder(manifest, "ort", max_batch=64, intra_op_threads=threads) as embedder:
        bank = text_bank(embedder, prompts)

        def tracks(seed: int) -> tuple[dict, list]:
            rec = generate("random", seed=seed, duration_s=duration_s, streams=STREAMS)
            return embed_tracks(embedder, rec, bank, STREAMS), truth_of(rec)

        tune_tracks, tune_truth = tracks(tune_seed)
        eval_sets = [tracks(s) for s in seeds]
    t_embed = time.perf_counter() - t0
    out = compare(tune_tracks, tune_truth, eval_sets, bank, classes)
    out["setup"] = {"bundle": str(bundle), "model_id": manifest.model_id, "tune_seed": tune_seed,
                    "eval_seeds": seeds, "duration_s": duration_s, "streams": list(STREAMS),
                    "embed_s": round(t_embed, 1), "total_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    return out


def markdown(payload: dict[str, Any]) -> list[str]:
    """The report for people."""
    setup, results = payload["setup"], payload["results"]
    lines = [f"# Cross-sensor fusion vs single modalities ({setup['bundle']}, sim://random)", "",
             f"Tuned on seed {setup['tune_seed']}, scored on seeds {setup['eval_seeds']} "
             f"({setup['duration_s']:g} s each, streams {', '.join(setup['streams'])}). A detection is correct "
             "when it overlaps a ground-truth event of its label (runtime/evaluate.py). Single modalities report "
             "only the classes they can show; `union` = every modality voting alone (the stream demo); `fused` = "
             "runtime/fusion.py.", "",
             "| detector | detections | precision | recall | F1 | tuning F1 |",
             "|---|---|---|---|---|---|"]  # fmt: skip

    def cell(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    for name, res in results.items():
        o = res["overall"]
        lines.append(f"| {name} | {o['detections']} | {cell(o['precision'])} | {cell(o['recall'])} | "
                     f"{cell(o['f1'])} | {cell(payload['tune_f1'].get(name))} |")  # fmt: skip
    names = list(results)
    labels = sorted({label for res in results.values() for label in res["per_class"]})
    lines += ["", "F1 per class:", "", "| class | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label in labels:
        row = [cell(results[n]["per_class"].get(label, {}).get("f1")) for n in names]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    fused = payload["configs"]["fused"]
    lines += ["", "Tuned fusion config (rules omitted): "
              + ", ".join(f"{k}={v}" for k, v in fused.items() if k != "rules"),
              "Rules: " + "; ".join(f"{k}: {'+'.join(r['requires'])} (min {r['min_modalities']})"
                                    for k, r in fused["rules"].items()),
              "Weights: " + "; ".join(f"{k}: " + (", ".join(f"{m} {w:.2f}" for m, w in r["weights"].items()) or "equal")
                                      for k, r in fused["rules"].items()),
              "", f"Embedding {setup['embed_s']} s, total {setup['total_s']} s (CPU)."]  # fmt: skip
    return lines


def plot(payload: dict[str, Any], path: Path) -> bool:
    """Bar chart of overall precision/recall/F1 per detector; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(payload["results"])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    for k, metric in enumerate(("precision", "recall", "f1")):
        vals = [payload["results"][n]["overall"][metric] or 0.0 for n in names]
        ax.bar([i + 0.27 * (k - 1) for i in range(len(names))], vals, width=0.27, label=metric)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1)
    ax.set_title("single modality vs fused detection (sim://random held-out seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "demo")
    ap.add_argument("--tune-seed", type=int, default=2000)
    ap.add_argument("--seeds", default="2001-2005")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    from benchmarks.report import save_report

    payload = run(args.bundle, args.tune_seed, _seeds(args.seeds), args.duration, args.threads)
    stem = f"fusion-{datetime.now(timezone.utc).strftime('%Y-%m-%d')}"
    lines = markdown(payload)
    if plot(payload, args.out / f"{stem}.png"):
        lines += ["", f"![fusion]({stem}.png)"]
    md = save_report(args.out, stem, payload, lines)
    print("\n".join(lines))
    print(f"wrote {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
