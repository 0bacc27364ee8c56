"""``python -m runtime.stream``: match live sensor windows against text prompts.

Usage::

    python -m runtime.stream --bundle DIR --source URI [--source URI ...]
        (--prompts "a;b;c" | --prompt-file F) [--json] [--duration S] [--backend ort] [--precision fp32|fp16|int8]
        [--threads N] [--enter T] [--exit T] [--min-duration S] [--cooldown S]
        [--scoring cosine|softmax] [--top-k K] [--lossless] [--prompt-cache DIR]
    python -m runtime.stream --demo        # sim://demo through bundles/demo, scored

Without ``--json`` and on a terminal it shows a live view (rich): per stream the top
prompts and scores, windows done/dropped, recent events and stage latencies; off a
terminal it prints one plain line per event. Ctrl-C (SIGINT) stops cleanly, prints the
summary and exits 0. Errors found before the threads start (missing bundle, malformed
or empty prompts, unknown source scheme, a source the bundle cannot embed) print one
line on stderr and exit 2.

JSON lines (``--json``), on stdout, one object per line:

- per event, at its onset::

    {"type": "event", "label": str, "score": float, "margin": float,
     "modality": str, "source": str (source URI), "stream": str (stream key),
     "start_ns": int, "end_ns": int (host monotonic ns of the event's windows),
     "start_s": float, "end_s": float (seconds since the run started, i.e. just
     before the sources were opened), "latency_ms": float (capture of the deciding
     window's last sample -> event)}

- last, once::

    {"type": "summary", "interrupted": bool (SIGINT), "ended": "sources" | "duration" |
     "interrupted", "elapsed_s": float,
     "windows": int (embedded and matched), "windows_made": int,
     "windows_dropped": int, "windows_failed": int, "events": int, "batches": int,
     "events_by_label": {label: int},
     "latency_ms": {stage: {"count", "p50_ms", "p99_ms", "mean_ms", "max_ms"}},
     "sources": [{"name", "streams", "ignored", "stats", "finished", "error"}],
     "streams": [{"key", "source", "stream_id", "modality", "windows_made",
                  "windows_done", "windows_dropped", "windows_failed", "events",
                  "top", "latency"}],
     "errors": [str]}

  Latency stages: window, queue, preprocess, embed, match, total (:mod:`runtime.latency`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from runtime.embedder import Embedder
from runtime.errors import BundleError, EdgebindError
from runtime.manifest import PRECISIONS, ModelManifest, load_manifest
from runtime.matching import MatchConfig
from runtime.pipeline import Pipeline, PipelineConfig
from runtime.pipeline_status import PipelineEvent, PipelineStatus
from runtime.prompts import (
    Prompt,
    PromptBank,
    build_prompt_bank,
    bundle_text_embed,
    load_prompt_file,
    parse_prompt_list,
)
from runtime.sources import parse_uri
from runtime.types import Modality

_MATCH_FLAGS = {  # CLI dest -> MatchConfig key
    "enter": "enter_threshold",
    "exit": "exit_threshold",
    "min_duration": "min_duration_s",
    "cooldown": "cooldown_s",
    "scoring": "scoring",
    "top_k": "top_k",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.stream", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, help="bundle directory (with manifest.json and a text encoder)")
    p.add_argument("--source", action="append", default=[], help="source URI, repeatable (sim://demo, replay://f.npz)")
    p.add_argument("--prompts", help='prompts separated by ";", e.g. "glass breaking;a dog barking"')
    p.add_argument("--prompt-file", type=Path, help="prompt file (label: template | template per line)")
    p.add_argument("--prompt-cache", type=Path, help="directory caching prompt vectors by hash")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout (schema in the module docstring)")
    p.add_argument("--duration", type=float, help="stop after S seconds (default: until the sources end or Ctrl-C)")
    p.add_argument("--backend", default="ort", help="embedder backend (default ort)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="artifact precision (default fp32)")
    p.add_argument("--threads", type=int, default=0, help="backend intra-op threads (0: default)")
    p.add_argument("--lossless", action="store_true", help="block finite fast sources instead of dropping windows")
    p.add_argument("--enter", type=float, help="enter threshold")
    p.add_argument("--exit", type=float, help="exit threshold (hysteresis)")
    p.add_argument("--min-duration", type=float, help="minimum event duration, seconds")
    p.add_argument("--cooldown", type=float, help="cooldown after an event, seconds")
    p.add_argument("--scoring", choices=["cosine", "softmax"], help="score: cosine or softmax with logit scale")
    p.add_argument("--top-k", type=int, help="prompts kept in the live top-k")
    p.add_argument("--demo", action="store_true", help="run sim://demo through bundles/demo and score it")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI: 0 on success or Ctrl-C, 2 on an error found before streaming."""
    args = _parser().parse_args(argv)
    if args.demo:
        from runtime.stream_demo import run_demo

        return run_demo(duration_s=args.duration, threads=args.threads)
    try:
        manifest, prompts, match_cfg = _check_args(args)
        embedder = Embedder(manifest, args.backend, args.precision, max_batch=8, intra_op_threads=args.threads)
        try:
            bank = prompt_bank(embedder, prompts, args.prompt_cache)
            cfg = PipelineConfig(
                backend=args.backend, precision=args.precision, threads=args.threads, lossless=args.lossless
            )
            sink = EventSink(sys.stdout, as_json=args.json or not sys.stdout.isatty())
            pipeline = Pipeline(manifest, args.source, bank, match_cfg, cfg, on_event=sink, embedder=embedder)
            sink.t0_ns = pipeline.created_ns
            pipeline.start()
        except BaseException:
            embedder.close()
            raise
    except EdgebindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before streaming started", file=sys.stderr)
        return 0
    try:
        status, ended = supervise(pipeline, args.duration, live=not sink.as_json)
    finally:
        embedder.close()
    sink.summary(status, ended)
    return 0


def _check_args(args: argparse.Namespace) -> tuple[ModelManifest, tuple[Prompt, ...], MatchConfig]:
    """Everything checkable before opening sources; raises EdgebindError (one line)."""
    if args.bundle is None:
        raise EdgebindError("--bundle DIR is required (or run --demo)")
    if not args.source:
        raise EdgebindError("give at least one --source URI, e.g. --source 'sim://demo?pace=fast'")
    if (args.prompts is None) == (args.prompt_file is None):
        raise EdgebindError('give exactly one of --prompts "a;b;c" or --prompt-file FILE')
    for uri in args.source:
        parse_uri(uri)  # unknown scheme: one line listing the valid ones
    manifest = load_manifest(args.bundle)
    prompts = parse_prompt_list(args.prompts) if args.prompts is not None else load_prompt_file(args.prompt_file)
    given = {key: getattr(args, dest) for dest, key in _MATCH_FLAGS.items() if getattr(args, dest) is not None}
    return manifest, prompts, MatchConfig.from_dict(given)


def prompt_bank(embedder: Embedder, prompts: Sequence[Prompt], cache_dir: Path | None = None) -> PromptBank:
    """Encode ``prompts`` with the bundle's own tokenizer and text encoder.

    Raises:
        BundleError: the bundle has no text encoder or no vocabulary.
    """
    manifest = embedder.manifest
    if Modality.TEXT not in manifest.modalities or not manifest.vocab:
        raise BundleError(
            f"bundle {manifest.root} has no text encoder and tokenizer to encode prompts; "
            "re-export it with --modalities including text"
        )
    return build_prompt_bank(prompts, bundle_text_embed(embedder), manifest.model_id, cache_dir)


def supervise(pipeline: Pipeline, duration_s: float | None, live: bool) -> tuple[PipelineStatus, str]:
    """Wait for the end of the run, ``duration_s`` or SIGINT; stop the pipeline.

    Returns:
        (final status, what ended it: ``"sources"``, ``"duration"`` or ``"interrupted"``).
    """
    interrupted = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    deadline = None if duration_s is None else time.monotonic() + duration_s
    view = None
    ended = "sources"
    try:
        if live:
            from runtime.live_view import LiveView

            view = LiveView(pipeline.manifest.root.name)
            view.__enter__()
        while not pipeline.wait(0.1) and not interrupted.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                ended = "duration"
                break
            if view is not None:
                view.update(pipeline.status())
    finally:
        pipeline.stop()
        if view is not None:
            view.update(pipeline.status())
            view.__exit__(None, None, None)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return pipeline.status(), "interrupted" if interrupted.is_set() else ended


class EventSink:
    """Writes events (JSON lines or plain lines) from the inference thread; counts labels."""

    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.t0_ns = time.monotonic_ns()
        self.labels: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, event: PipelineEvent) -> None:
        row = event_to_dict(event, self.t0_ns)
        with self._lock:
            self.labels[row["label"]] += 1
            if self.as_json:
                self.out.write(json.dumps(row) + "\n")
            else:
                self.out.write(
                    f"{row['start_s']:8.2f} s  {row['label']:<20} {row['score']:.3f} (margin {row['margin']:+.3f})  "
                    f"{row['stream']} [{row['modality']}]  {row['latency_ms']:.0f} ms\n"
                )
            self.out.flush()

    def summary(self, status: PipelineStatus, ended: str) -> None:
        """Write the summary line (JSON) or a short plain summary; ``ended`` as :func:`supervise` returns."""
        row: dict[str, Any] = {"type": "summary", "interrupted": ended == "interrupted", "ended": ended}
        row |= status.to_dict()
        row["events_by_label"] = dict(self.labels)
        with self._lock:
            if self.as_json:
                self.out.write(json.dumps(row) + "\n")
            else:
                for line in summary_lines(status, ended):
                    self.out.write(line + "\n")
            self.out.flush()


def event_to_dict(event: PipelineEvent, t0_ns: int) -> dict[str, Any]:
    """The JSON-lines form of an event (schema in the module docstring)."""
    m = event.match
    return {
        "type": "event",
        "label": m.label,
        "score": round(float(m.score), 5),
        "margin": round(float(m.margin), 5),
        "modality": m.modality.value,
        "source": event.source,
        "stream": m.source_id,
        "start_ns": int(m.start_ns),
        "end_ns": int(m.end_ns),
        "start_s": round((m.start_ns - t0_ns) / 1e9, 4),
        "end_s": round((m.end_ns - t0_ns) / 1e9, 4),
        "latency_ms": round(event.latency_ms, 3),
    }


def summary_lines(status: PipelineStatus, ended: str) -> list[str]:
    """Plain-text summary: counters, per-stream counts, latency p50/p99, errors."""
    how = {"sources": "sources ended", "duration": "--duration reached"}.get(ended, ended)
    lines = [
        f"{how} after {status.elapsed_s:.1f} s: {status.windows_done} windows matched, "
        f"{status.windows_dropped} dropped, {status.windows_failed} failed, {status.events} events"
    ]
    for s in status.streams:
        lines.append(f"  {s.key:<12} {s.modality:<8} done {s.windows_done:>5}  dropped {s.windows_dropped:>4}  "
                     f"events {s.events:>3}  source {s.source}")  # fmt: skip
    for name, lat in status.latency.items():
        if lat.count:
            lines.append(f"  latency {name:<10} p50 {lat.p50_ms:8.1f} ms  p99 {lat.p99_ms:8.1f} ms  (n={lat.count})")
    lines.extend(f"  error: {e}" for e in status.errors)
    return lines


if __name__ == "__main__":
    sys.exit(main())
