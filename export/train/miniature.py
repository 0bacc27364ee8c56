"""``python -m export.train.miniature``: a miniature ImageBind on ``sim://``, and the demo bundle.

Stage 1 trains an image and a text tower together (CLIP-style) on sim RGB frames and
their captions. Stage 2 freezes both and trains the audio, depth, thermal and IMU
encoders against the images only, with the project's :class:`~export.train.loop.Trainer`.
Then text→modality zero-shot top-1 is measured on held-out seeds (emergent: the text
tower never saw those modalities) against chance and against a text-paired control (the
same encoder trained directly against the captions' text embeddings). Results go to
``results.json``/``results.md``/``loss.png`` in ``--out``; the trained checkpoint is exported
with :func:`export.bundle.build_bundle` into ``--bundle`` (``bundles/demo`` by default).

Usage::

    python -m export.train.miniature [--out runs/miniature] [--bundle bundles/demo] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from export.bundle import BundleOptions, build_bundle
from export.config import load_config
from export.model import build_model
from export.train import sim_data
from export.train.config import TrainConfig
from export.train.evaluate import Tokenize, clip_tokenizer, embed_texts
from export.train.loop import Trainer
from export.train.metrics import read_metrics
from export.train.towers import modality_of
from runtime.types import Modality
from sensors.sim_world import EVENT_CLASSES

BUNDLE_MODALITIES = (Modality.TEXT, Modality.VISION, Modality.AUDIO, Modality.DEPTH, Modality.THERMAL, Modality.IMU)
PROMPTS_FILE = "prompts.txt"


@dataclass(frozen=True)
class MiniSettings:
    """One miniature run.

    Attributes:
        out: run directory (data caches, per-stage runs, results, checkpoint).
        bundle: where the demo bundle goes; None skips the export.
        config: model config preset or path.
        train_seeds: ``sim://random`` seeds for training.
        test_seeds: held-out seeds for evaluation.
        duration_s: seconds per seed.
        modalities: stage-2 sensor modalities.
        stage1_steps: image-text steps.
        stage2_steps: steps per stage-2 encoder (and per control).
        batch_size: rows per step (the InfoNCE negatives).
        lr1: stage-1 peak learning rate.
        lr2: stage-2 peak learning rate.
        temperature: InfoNCE temperature tau of stage 2 and the controls (fixed).
        control: also train the text-paired controls.
        progress: show progress bars.
        seed: model init and data order.
    """

    out: Path = Path("runs/miniature")
    bundle: Path | None = Path("bundles/demo")
    config: str = "mini_sim"
    train_seeds: tuple[int, ...] = tuple(range(1, 41))
    test_seeds: tuple[int, ...] = tuple(range(1001, 1011))
    duration_s: float = 60.0
    modalities: tuple[str, ...] = ("audio", "depth", "thermal", "imu")
    stage1_steps: int = 600
    stage2_steps: int = 400
    batch_size: int = 128
    lr1: float = 2e-3
    lr2: float = 2e-3
    temperature: float = 0.1
    control: bool = True
    progress: bool = True
    seed: int = 0


QUICK = {"train_seeds": (1, 2), "test_seeds": (1001,), "duration_s": 20.0, "stage1_steps": 4,
         "stage2_steps": 3, "batch_size": 16}  # fmt: skip


def shown_classes(modality: str) -> tuple[int, ...]:
    """Class ids whose signature ``modality`` carries (the zero-shot candidates; chance = 1 / count)."""
    return tuple(i for i, c in enumerate(EVENT_CLASSES) if Modality(modality) in c.modalities)


def train_pair(model: nn.Module, pairs: tuple[str, str], data: Any, *, steps: int, lr: float, out_dir: Path,
               s: MiniSettings, tokenize: Tokenize) -> nn.Module:  # fmt: skip
    """Train ``pairs[1]`` (and ``pairs[0]`` when it is text-vision stage 1) in place with the Trainer.

    Returns:
        ``model``, with the trained tower's output scale set to the run's baked 1 / tau.
    """
    stage1 = pairs == ("vision", "text")
    cfg = TrainConfig(model=s.config, pairs=pairs, train_anchor=stage1, steps=steps, batch_size=s.batch_size,
                      lr=lr, warmup_steps=max(steps // 10, 1), min_lr_ratio=0.05, weight_decay=0.05,
                      temperature=0.07 if stage1 else s.temperature, learn_temperature=stage1,
                      cache_anchor=not stage1, device="cpu", seed=s.seed, log_every=max(steps // 50, 1),
                      progress=s.progress, plot=False, out_dir=str(out_dir), keep_checkpoints=1)  # fmt: skip
    result = Trainer(cfg, data, None, model=model, tokenize=tokenize).fit()
    if result.model_path is not None:
        baked = torch.load(result.model_path, weights_only=True)
        model.load_state_dict({k: v for k, v in baked.items() if modality_of(k) in cfg.trained}, strict=False)
    return model.eval()


@torch.no_grad()
def embed(model: nn.Module, modality: str, x: np.ndarray, batch: int = 256) -> Tensor:
    """Unit embeddings ``[N, D]`` of preprocessed rows ``x`` (N, *row)."""
    model.eval()
    parts = [model.encode(modality, torch.from_numpy(x[i : i + batch])) for i in range(0, len(x), batch)]
    return F.normalize(torch.cat(parts).float(), dim=-1)


def zero_shot(emb: Tensor, labels: np.ndarray, classes: Sequence[int], text: Tensor) -> dict[str, Any]:
    """Top-1 of ``argmax_c cos(emb, text[c])`` over ``classes`` for rows labelled with one of them.

    Args:
        emb: ``[N, D]`` unit embeddings.
        labels: (N,) class ids (other ids are left out).
        classes: candidate class ids.
        text: ``[C_all, D]`` unit caption embeddings indexed by class id.
    """
    keep = np.isin(labels, list(classes))
    sims = emb[torch.from_numpy(keep)] @ text[list(classes)].T
    pred = np.asarray(classes)[sims.argmax(dim=1).numpy()]
    truth = labels[keep]
    per_class = {sim_data.LABELS[c]: float((pred[truth == c] == c).mean()) for c in classes if (truth == c).any()}
    return {"top1": float((pred == truth).mean()) if len(truth) else float("nan"), "windows": len(truth),
            "balanced_top1": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
            "chance": 1.0 / len(classes), "classes": len(classes), "per_class": per_class}  # fmt: skip


def evaluate_model(model: nn.Module, test: sim_data.SimSet, modality: str, text: Tensor) -> dict[str, Any]:
    """Zero-shot text→``modality`` on the held-out windows (vision: on every RGB frame)."""
    if modality == "vision":
        return zero_shot(embed(model, "vision", test.images), test.label, range(len(EVENT_CLASSES)), text)
    w = test.windows[Modality(modality)]
    return zero_shot(embed(model, modality, w.x), w.label, shown_classes(modality), text)


def run(s: MiniSettings) -> dict[str, Any]:
    """Both stages, the controls and the evaluation; returns the results dict (also written to ``s.out``)."""
    started = time.monotonic()
    cfg = load_config(s.config)
    mods = tuple(Modality(m) for m in s.modalities)
    settings = sim_data.PairSettings(duration_s=s.duration_s)
    train = sim_data.cached_set(s.out / "data" / "train.npz", s.train_seeds, cfg, settings, mods)
    test = sim_data.cached_set(s.out / "data" / "test.npz", s.test_seeds, cfg, settings, mods)
    data_s = time.monotonic() - started
    tokenize = clip_tokenizer(77)
    torch.manual_seed(s.seed)
    model = build_model(cfg, [m.value for m in BUNDLE_MODALITIES])
    train_pair(model, ("vision", "text"), sim_data.CaptionPairs(train), steps=s.stage1_steps, lr=s.lr1,
               out_dir=s.out / "stage1", s=s, tokenize=tokenize)  # fmt: skip
    text = embed_texts(model, sim_data.CAPTIONS, tokenize, "cpu")
    results: dict[str, Any] = {"vision (stage 1, text-paired)": evaluate_model(model, test, "vision", text)}
    frozen = copy.deepcopy(model)
    for mod in s.modalities:
        pairs = sim_data.SensorPairs(train, Modality(mod))
        train_pair(model, ("vision", mod), pairs, steps=s.stage2_steps, lr=s.lr2, out_dir=s.out / f"stage2_{mod}", s=s,
                   tokenize=tokenize)  # fmt: skip
        row = {"emergent": evaluate_model(model, test, mod, text)}
        if s.control:
            ctrl = train_pair(copy.deepcopy(frozen), ("text", mod), pairs, steps=s.stage2_steps, lr=s.lr2,
                              out_dir=s.out / f"control_{mod}", s=s, tokenize=tokenize)  # fmt: skip
            row["control"] = evaluate_model(ctrl, test, mod, text)
        results[mod] = row
        summary = _summary(s, (train, test), results, data_s, started)
        write_reports(summary, s.out)  # after every modality: a long run shows its numbers early
    torch.save(model.state_dict(), s.out / "mini_sim.pt")
    summary = _summary(s, (train, test), results, data_s, started)
    write_reports(summary, s.out)
    return summary


def _summary(s: MiniSettings, sets: tuple[sim_data.SimSet, sim_data.SimSet], results: dict[str, Any],
             data_s: float, started: float) -> dict[str, Any]:  # fmt: skip
    train, test = sets
    return {"settings": _jsonable(asdict(s)), "train_windows": _counts(train), "test_windows": _counts(test),
            "data_s": round(data_s, 1), "train_s": round(time.monotonic() - started - data_s, 1),
            "checkpoint": str(s.out / "mini_sim.pt"), "results": results}  # fmt: skip


def _counts(data: sim_data.SimSet) -> dict[str, int]:
    return {"images": len(data.images), **{m.value: len(w.x) for m, w in data.windows.items()}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def markdown_table(summary: dict[str, Any]) -> list[str]:
    """The README table: per modality emergent/control top-1, chance, held-out seeds, windows."""
    seeds = summary["settings"]["test_seeds"]
    seed_text = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    lines = ["| modality | emergent top-1 (trained on images only) | text-paired control top-1 | chance | "
             "held-out seeds | windows |", "|---|---|---|---|---|---|"]  # fmt: skip
    for mod, row in summary["results"].items():
        if "emergent" not in row:
            lines.append(f"| {mod} | - | {row['top1']:.3f} | {row['chance']:.3f} (1/{row['classes']}) | "
                         f"{seed_text} | {row['windows']} |")  # fmt: skip
            continue
        em, ctrl = row["emergent"], row.get("control")
        ctrl_text = f"{ctrl['top1']:.3f}" if ctrl else "-"
        lines.append(f"| {mod} | {em['top1']:.3f} | {ctrl_text} | {em['chance']:.3f} (1/{em['classes']}) | "
                     f"{seed_text} | {em['windows']} |")  # fmt: skip
    return lines


def per_class_table(summary: dict[str, Any]) -> list[str]:
    """Per-class emergent (control) top-1 of each stage-2 modality."""
    mods = [m for m, r in summary["results"].items() if "emergent" in r]
    lines = ["| class | " + " | ".join(mods) + " |", "|---|" + "---|" * len(mods)]
    for label in sim_data.LABELS:
        cells = []
        for m in mods:
            em, ctrl = summary["results"][m]["emergent"], summary["results"][m].get("control", {})
            value = em["per_class"].get(label)
            ctrl_value = ctrl.get("per_class", {}).get(label) if ctrl else None
            text = "-" if value is None else f"{value:.2f}"
            cells.append(text if ctrl_value is None else f"{text} ({ctrl_value:.2f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def write_reports(summary: dict[str, Any], out: Path) -> None:
    """``results.json``, ``results.md`` and ``loss.png`` (every run's loss curve) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    md = ["# Miniature ImageBind on sim://", "", *markdown_table(summary), "",
          "Per class: emergent top-1 (text-paired control in brackets); '-' = the modality cannot show the class.",
          "", *per_class_table(summary), ""]  # fmt: skip
    (out / "results.md").write_text("\n".join(md), encoding="utf-8")
    plot_runs(out, out / "loss.png")


def plot_runs(out: Path, path: Path) -> Path | None:
    """One panel per stage: the loss of every run under ``out`` against its step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    runs = sorted(p.parent for p in out.glob("*/metrics.jsonl"))
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run_dir in runs:
        pts = [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
        if pts:
            ax = axes[0] if run_dir.name == "stage1" else axes[1]
            style = "--" if run_dir.name.startswith("control") else "-"
            ax.plot(*zip(*pts, strict=True), style, label=run_dir.name)
    for ax, title in zip(axes, ("stage 1: image-text", "stage 2: sensors vs images (- -: text-paired control)"),
                         strict=True):  # fmt: skip
        ax.set(title=title, xlabel="optimizer step", ylabel="InfoNCE loss")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def export_bundle(checkpoint: Path, bundle: Path, config: str) -> Path:
    """Export ``checkpoint`` with the project's bundle stage into ``bundle`` (replaced whole) plus prompts."""
    tmp = bundle.with_name(bundle.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    opts = BundleOptions(config=config, out_dir=tmp, checkpoint=checkpoint, modalities=BUNDLE_MODALITIES,
                         preprocess=sim_data.MINI_PREPROCESS)  # fmt: skip
    build_bundle(opts)
    (tmp / PROMPTS_FILE).write_text(prompt_file_text(), encoding="utf-8")
    shutil.rmtree(bundle, ignore_errors=True)
    tmp.rename(bundle)
    return bundle


def prompt_file_text() -> str:
    """The demo's prompts: each class's sim caption, plus the between-events caption as background."""
    head = "# Prompts of the miniature sim model: its text tower knows the sim captions (format: runtime/prompts.py)"
    classes = [f"{c.label}: {c.caption}" for c in EVENT_CLASSES]
    lines = [head, *classes, f"!quiet: {sim_data.CAPTIONS[sim_data.GAP]}"]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> MiniSettings:
    """Command-line options → :class:`MiniSettings`."""
    p = argparse.ArgumentParser(prog="python -m export.train.miniature", description=__doc__.splitlines()[0])
    d = MiniSettings()
    p.add_argument("--out", type=Path, default=d.out, help="run directory (default %(default)s)")
    p.add_argument("--bundle", type=Path, default=d.bundle, help="demo bundle directory (default %(default)s)")
    p.add_argument("--no-bundle", action="store_true", help="skip the export")
    p.add_argument("--config", default=d.config, help="model config preset or JSON (default %(default)s)")
    p.add_argument("--train-seeds", type=int, default=len(d.train_seeds), help="training seeds 1..N")
    p.add_argument("--test-seeds", type=int, default=len(d.test_seeds), help="held-out seeds 1001..1000+N")
    p.add_argument("--stage1-steps", type=int, default=d.stage1_steps)
    p.add_argument("--stage2-steps", type=int, default=d.stage2_steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--modalities", nargs="+", default=list(d.modalities), choices=list(d.modalities))
    p.add_argument("--no-control", action="store_true", help="skip the text-paired controls")
    p.add_argument("--quick", action="store_true", help="toy sizes (smoke test, seconds)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    s = MiniSettings(out=a.out, bundle=None if a.no_bundle else a.bundle, config=a.config,
                     train_seeds=tuple(range(1, a.train_seeds + 1)),
                     test_seeds=tuple(range(1001, 1001 + a.test_seeds)), stage1_steps=a.stage1_steps,
                     stage2_steps=a.stage2_steps, batch_size=a.batch_size, modalities=tuple(a.modalities),
                     control=not a.no_control, progress=not a.no_progress)  # fmt: skip
    return replace(s, **QUICK) if a.quick else s


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print the table, export the bundle; 0 on success."""
    s = parse_args(argv)
    summary = run(s)
    for line in markdown_table(summary):
        print(line)
    print(f"data {summary['data_s']} s, training+evaluation {summary['train_s']} s; reports in {s.out}")
    if s.bundle is not None:
        bundle = export_bundle(Path(summary["checkpoint"]), s.bundle, s.config)
        size = sum(p.stat().st_size for p in bundle.iterdir()) / 1e6
        print(f"bundle {bundle} ({size:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
