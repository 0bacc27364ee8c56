"""``python -m runtime.stream``: match live sensor windows against text prompts.

Usage::

    python -m runtime.stream --bundle DIR --source URI [--source URI ...]
        (--prompts "a;b;c" | --prompt-file F) [--json] [--duration S] [--backend ort] [--precision fp32|fp16|int8]
        [--threads N] [--enter T] [--exit T] [--min-duration S] [--cooldown S]
        [--scoring cosine|softmax] [--top-k K] [--lossless] [--prompt-cache DIR]
        [--fusion FILE [--fused-only]] [--memory DIR [--memory-max-windows N] [--memory-max-age 7d]]
    python -m runtime.stream --demo        # sim://demo through bundles/demo, scored (single and fused)

``--prompts`` items and prompt-file lines may be text, recorded examples (``@audio:bark.wav``)
or expressions (``"a dog" + 0.5*@audio:bark.wav``), see :mod:`runtime.prompts`.
``--fusion FILE`` (a :class:`runtime.fusion.FusionConfig` as JSON or TOML, e.g. the tuned
``bundles/demo/fusion.json``) adds cross-sensor fused events (:mod:`runtime.fusion_stage`);
``--fused-only`` hides the single-sensor events (still counted in the summary).
``--memory DIR`` stores every embedded window in an embedding memory
(:mod:`runtime.memory`; bounded by ``--memory-max-windows`` and ``--memory-max-age``),
searchable while and after the run with ``python -m runtime.search --memory DIR "..."``.

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

- per fused event (``--fusion``), at its onset::

    {"type": "fused_event", "label": str, "score": float (fused score), "modality": "fused",
     "modalities": [str] (modalities that supported it), "per_modality": {modality: float}
     (pooled calibrated score of each), "stream": str (the stream whose window raised it),
     "start_ns", "end_ns", "start_s", "end_s" (as for events), "latency_ms" (newest sample of
     the deciding window -> fused event; 0 when a pace=fast source stamps data ahead of the clock)}

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
     "errors": [str],
     "fusion": {"events", "windows", "events_by_label"} (with --fusion),
     "memory": {"path", "stored", "failed" (windows not stored), "windows", "capacity"} (with --memory)}

  Latency stages: window, queue, preprocess, embed, match, total (:mod:`runtime.latency`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from runtime.embedder import Embedder
from runtime.errors import BundleError, EdgebindError, InputError
from runtime.fusion import FusionConfig
from runtime.fusion_stage import FusionStage, load_fusion_config
from runtime.manifest import PRECISIONS, ModelManifest, load_manifest
from runtime.matching import MatchConfig
from runtime.memory import WindowRecorder
from runtime.pipeline import Pipeline, PipelineConfig
from runtime.pipeline_status import PipelineStatus
from runtime.prompts import (
    Prompt,
    PromptBank,
    build_prompt_bank,
    bundle_text_embed,
    load_prompt_file,
    parse_prompt_list,
)
from runtime.search import parse_duration_s
from runtime.sources import parse_uri
from runtime.stream_output import EventSink, event_to_dict, summary_lines
from runtime.types import Modality
from runtime.window_hooks import fan_out, open_memory

__all__ = ["EventSink", "event_to_dict", "main", "prompt_bank", "summary_lines", "supervise"]

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
    p.add_argument("--prompts", help='";"-separated prompt-file lines, e.g. "glass breaking;dog: a dog | '
                   '@audio:bark.wav" (example paths relative to the current directory)')
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
    p.add_argument("--fusion", type=Path, help="fusion config (JSON or TOML): add cross-sensor fused events")
    p.add_argument("--fused-only", action="store_true", help="with --fusion: print fused events only")
    p.add_argument("--memory", type=Path, help="record every window's embedding into this memory directory")
    p.add_argument("--memory-max-windows", type=int, help="memory ring capacity, windows (new store: 1,000,000)")
    p.add_argument("--memory-max-age", help="forget windows older than this (90s, 10m, 2h, 7d)")
    p.add_argument("--demo", action="store_true", help="run sim://demo through bundles/demo and score it")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI: 0 on success or Ctrl-C, 2 on an error found before streaming."""
    args = _parser().parse_args(argv)
    if args.demo:
        from runtime.stream_demo import run_demo

        return run_demo(duration_s=args.duration, threads=args.threads)
    try:
        manifest, prompts, match_cfg, fusion_cfg = _check_args(args)
        embedder = Embedder(manifest, args.backend, args.precision, max_batch=8, intra_op_threads=args.threads)
        recorder = None
        try:
            bank = prompt_bank(embedder, prompts, args.prompt_cache)
            cfg = PipelineConfig(
                backend=args.backend, precision=args.precision, threads=args.threads, lossless=args.lossless
            )
            sink = EventSink(sys.stdout, as_json=args.json or not sys.stdout.isatty(), single=not args.fused_only)
            stage = None if fusion_cfg is None else FusionStage(fusion_cfg, bank, on_fused=sink.fused)
            recorder = _recorder(args, manifest)
            pipeline = Pipeline(manifest, args.source, bank, match_cfg, cfg, on_event=sink, embedder=embedder,
                                on_window=fan_out([recorder, stage]))  # fmt: skip
            if recorder is not None:
                recorder.sources = {key: src for key, src, _ in pipeline.streams}
            sink.t0_ns = pipeline.created_ns
            pipeline.start()
        except BaseException:
            embedder.close()
            if recorder is not None:
                recorder.memory.close()
            raise
    except EdgebindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before streaming started", file=sys.stderr)
        return 0
    kept = 0
    try:
        status, ended = supervise(pipeline, args.duration, live=not sink.as_json)
    finally:
        embedder.close()
        if recorder is not None:
            kept = len(recorder.memory)
            recorder.memory.close()
    if stage is not None:
        stage.flush()
        counts = stage.counters()
        sink.extra["fusion"] = {"events": counts["events"], "windows": counts["windows"],
                                "events_by_label": counts["by_label"]}  # fmt: skip
    if recorder is not None:
        sink.extra["memory"] = {"path": str(args.memory), "stored": recorder.stored, "failed": recorder.failed,
                                "windows": kept, "capacity": recorder.memory.capacity}  # fmt: skip
    sink.summary(status, ended)
    return 0


def _recorder(args: argparse.Namespace, manifest: ModelManifest) -> WindowRecorder | None:
    """The ``--memory`` recorder (its memory opened), or None."""
    if args.memory is None:
        return None
    max_age_s = parse_duration_s(args.memory_max_age) if args.memory_max_age else None
    return WindowRecorder(open_memory(args.memory, manifest, args.memory_max_windows, max_age_s))


def _check_args(args: argparse.Namespace) -> tuple[ModelManifest, tuple[Prompt, ...], MatchConfig,
                                                  FusionConfig | None]:  # fmt: skip
    """Everything checkable before opening sources; raises EdgebindError (one line)."""
    if args.bundle is None:
        raise EdgebindError("--bundle DIR is required (or run --demo)")
    if not args.source:
        raise EdgebindError("give at least one --source URI, e.g. --source 'sim://demo?pace=fast'")
    if (args.prompts is None) == (args.prompt_file is None):
        raise EdgebindError('give exactly one of --prompts "a;b;c" or --prompt-file FILE')
    if args.fused_only and args.fusion is None:
        raise EdgebindError("--fused-only needs --fusion FILE (a fusion config, e.g. bundles/demo/fusion.json)")
    if args.memory is None and (args.memory_max_windows is not None or args.memory_max_age is not None):
        raise EdgebindError("--memory-max-windows / --memory-max-age need --memory DIR")
    if args.memory_max_windows is not None and args.memory_max_windows < 1:
        raise InputError("--memory-max-windows must be >= 1")
    if args.memory_max_age is not None:
        parse_duration_s(args.memory_max_age)
    for uri in args.source:
        parse_uri(uri)  # unknown scheme: one line listing the valid ones
    manifest = load_manifest(args.bundle)
    prompts = parse_prompt_list(args.prompts) if args.prompts is not None else load_prompt_file(args.prompt_file)
    given = {key: getattr(args, dest) for dest, key in _MATCH_FLAGS.items() if getattr(args, dest) is not None}
    fusion = None if args.fusion is None else load_fusion_config(args.fusion)
    return manifest, prompts, MatchConfig.from_dict(given), fusion


def prompt_bank(embedder: Embedder, prompts: Sequence[Prompt], cache_dir: Path | None = None) -> PromptBank:
    """Encode ``prompts`` with the bundle's tokenizer and text encoder (example prompts: its other encoders).

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


if __name__ == "__main__":
    sys.exit(main())
