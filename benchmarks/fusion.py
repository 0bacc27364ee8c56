"""Cross-sensor fusion vs single modalities on held-out ``sim://random`` seeds (bundles/demo, ONNX Runtime).

``python -m benchmarks.fusion [--tune-seeds 2000,2006] [--seeds 2001-2005] [--duration 300] [--write-config PATH]``

Tunes each modality's best :class:`runtime.matching.MatchConfig` and the fusion config on
the tuning seeds, joined end to end (:func:`runtime.fusion_eval.concat_sets`; two seeds so
that every class has at least three tuning events, which the per-class rule choice needs),
with global settings, then each class's rule (:func:`runtime.fusion_tuning.compare`), then
scores on the evaluation seeds (neither tuning seeds nor among the miniature's training
seeds 1-40 or its test seeds 1001-1010) per class and overall: every single modality (its own shown
classes), their union (each sensor voting alone, as the stream demo does), the fused
detector with the global rules only (``fused_global``) and with the per-class rules
(``fused``). Writes ``benchmarks/results/fusion-<date>.json/.md`` (+ ``.png`` when
matplotlib is installed); with ``--write-config PATH`` also the tuned ``fused`` config as a
runtime artifact (``FusionConfig.to_dict()`` plus provenance under ``_about``, which
``FusionConfig.from_dict`` ignores), e.g. ``bundles/demo/fusion.json`` for
``runtime.stream --fusion``.
"""

from __future__ import annotations

import argparse
import json
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


def run(bundle: Path, tune_seeds: list[int], seeds: list[int], duration_s: float, threads: int = 0) -> dict[str, Any]:
    """Embed, tune and score; returns the JSON payload."""
    from runtime.embedder import Embedder
    from runtime.fusion_eval import concat_sets, embed_tracks, text_bank, truth_of
    from runtime.fusion_tuning import compare
    from runtime.manifest import load_manifest
    from runtime.prompts import load_prompt_file
    from sensors.sim import generate
    from sensors.sim_world import EVENT_CLASSES

    if set(tune_seeds) & set(seeds):
        raise SystemExit(f"fusion: seeds {sorted(set(tune_seeds) & set(seeds))} are both tuning and evaluation seeds; "
                         "keep evaluation seeds held out")  # fmt: skip
    t0 = time.perf_counter()
    manifest = load_manifest(bundle)
    prompts = load_prompt_file(bundle / "prompts.txt")
    classes = [(c.label, tuple(m.value for m in c.modalities)) for c in EVENT_CLASSES]
    with Embedder(manifest, "ort", max_batch=64, intra_op_threads=threads) as embedder:
        bank = text_bank(embedder, prompts)

        def tracks(seed: int) -> tuple[dict, list]:
            rec = generate("random", seed=seed, duration_s=duration_s, streams=STREAMS)
            return embed_tracks(embedder, rec, bank, STREAMS), truth_of(rec)

        tune_tracks, tune_truth = concat_sets([tracks(s) for s in tune_seeds])
        eval_sets = [tracks(s) for s in seeds]
    t_embed = time.perf_counter() - t0
    out = compare(tune_tracks, tune_truth, eval_sets, bank, classes)
    shown = bundle.resolve().relative_to(ROOT) if bundle.resolve().is_relative_to(ROOT) else bundle
    out["setup"] = {"bundle": str(shown), "model_id": manifest.model_id, "tune_seeds": tune_seeds,
                    "eval_seeds": seeds, "duration_s": duration_s, "streams": list(STREAMS),
                    "embed_s": round(t_embed, 1), "total_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    return out


def markdown(payload: dict[str, Any]) -> list[str]:
    """The report for people."""
    setup, results = payload["setup"], payload["results"]
    lines = [f"# Cross-sensor fusion vs single modalities ({setup['bundle']}, sim://random)", "",
             f"Tuned on seeds {setup['tune_seeds']} (joined), scored on seeds {setup['eval_seeds']} "
             f"({setup['duration_s']:g} s each, streams {', '.join(setup['streams'])}). A detection is correct "
             "when it overlaps a ground-truth event of its label (runtime/evaluate.py). Single modalities report "
             "only the classes they can show; `union` = every modality voting alone (the stream demo); `fused` = "
             "runtime/fusion.py.", "",
             "| detector | detections | precision | recall | F1 | tuning F1 | median length s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip

    def cell(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    for name, res in results.items():
        o = res["overall"]
        lines.append(f"| {name} | {o['detections']} | {cell(o['precision'])} | {cell(o['recall'])} | {cell(o['f1'])} "
                     f"| {cell(payload['tune_f1'].get(name))} | {res['median_length_s']} |")  # fmt: skip
    truth = payload["truth"]
    lines += ["", f"{truth['events']} ground-truth events, median length {truth['median_length_s']} s. "
              "`fused_global` = the global tuned rules; `fused` = then each class's rule and operating point "
              "chosen on the tuning seeds (fused or its best single modality, own enter threshold, in or out of "
              "the exclusive competition): "
              + "; ".join(f"{k}: {v}" for k, v in payload["rule_choice"].items() if v != "fused") + "."]  # fmt: skip
    names = list(results)
    labels = sorted({label for res in results.values() for label in res["per_class"]})
    lines += ["", "F1 per class:", "", "| class | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label in labels:
        row = [cell(results[n]["per_class"].get(label, {}).get("f1")) for n in names]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    fused = payload["configs"]["fused"]
    lines += ["", "Tuned fusion config (rules omitted): "
              + ", ".join(f"{k}={v}" for k, v in fused.items() if k != "rules"),
              "Rules: " + "; ".join(f"{k}: {_rule_text(r)}" for k, r in fused["rules"].items()),
              "Weights: " + "; ".join(f"{k}: " + (", ".join(f"{m} {w:.2f}" for m, w in r["weights"].items()) or "equal")
                                      for k, r in fused["rules"].items()),
              "", f"Embedding {setup['embed_s']} s, total {setup['total_s']} s (CPU)."]  # fmt: skip
    return lines


def _rule_text(rule: dict[str, Any]) -> str:
    text = f"{'+'.join(rule['requires'])} (min {rule['min_modalities']}"
    for key in ("enter_threshold", "exit_threshold"):
        if key in rule:
            text += f", {key.split('_')[0]} {rule[key]:g}"
    if "exclusive" in rule:
        text += ", exclusive" if rule["exclusive"] else ", not exclusive"
    return text + ")"


def config_artifact(payload: dict[str, Any], date: str) -> dict[str, Any]:
    """The tuned ``fused`` config as a runtime file: ``FusionConfig.to_dict()`` plus ``_about`` (provenance)."""
    setup = payload["setup"]
    about = {"benchmark": "python -m benchmarks.fusion", "date": date, "bundle": setup["bundle"],
             "model_id": setup["model_id"], "tune_seeds": setup["tune_seeds"], "eval_seeds": setup["eval_seeds"],
             "duration_s": setup["duration_s"],
             "held_out_f1": payload["results"]["fused"]["overall"]["f1"],
             "report": f"benchmarks/results/fusion-{date}.md"}  # fmt: skip
    return {"_about": about, **payload["configs"]["fused"]}


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
    ap.add_argument("--tune-seeds", "--tune-seed", default="2000,2006",
                    help="tuning seeds, joined end to end (e.g. 2000,2006 or 2000)")  # fmt: skip
    ap.add_argument("--seeds", default="2001-2005")
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--write-config", type=Path, metavar="PATH",
                    help="also write the tuned fusion config there (e.g. bundles/demo/fusion.json)")  # fmt: skip
    args = ap.parse_args(argv)
    from benchmarks.report import save_report

    payload = run(args.bundle, _seeds(args.tune_seeds), _seeds(args.seeds), args.duration, args.threads)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    stem = f"fusion-{date}"
    lines = markdown(payload)
    if plot(payload, args.out / f"{stem}.png"):
        lines += ["", f"![fusion]({stem}.png)"]
    md = save_report(args.out, stem, payload, lines)
    print("\n".join(lines))
    print(f"wrote {md}", file=sys.stderr)
    if args.write_config is not None:
        args.write_config.parent.mkdir(parents=True, exist_ok=True)
        args.write_config.write_text(json.dumps(config_artifact(payload, date), indent=1) + "\n")
        print(f"wrote {args.write_config}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
