"""The streaming engine: sources -> windows -> batched embedding -> prompt matching -> events.

Threads and queues (design §1)::

    source thread (one per source)          inference thread (one)
    read Samples -> Windower per stream ->  take up to batch_max windows or wait batch_deadline_s,
    bounded window queue (drop-oldest)  ->  group by modality, window_to_input, Embedder.embed,
                                            unit-normalise, Matcher.update -> events (callback)

Memory is bounded whatever the load: the window queue holds at most ``queue_windows``
windows (when inference falls behind the oldest is dropped and counted per stream;
with ``lossless`` a finite fast source blocks instead, so evaluation sees every
window), latencies are kept in fixed-size reservoirs and only the last few events are
kept for :meth:`Pipeline.status`. A source that raises (anything but ``EOFError``) is
reported in its status and the others go on; the run ends when every source has ended
and the queue is drained, or on :meth:`Pipeline.stop` (pending windows discarded) or
:meth:`Pipeline.drain` (sources stopped, pending windows still processed).

A failing encoder call fails that batch's windows (counted) and closes that modality's
backend so the next batch reopens it, at most once per backoff interval
(:mod:`runtime.pipeline_backend`): the other modalities and the process go on.
:attr:`Pipeline.heartbeat_ns` advances on every inference-loop turn (idle or not), for a
watchdog that must see real progress.

Capture time of a window is its last sample's ``t_ns``, or the moment the pipeline
received that sample when earlier (``pace=fast`` sources stamp data ahead of the clock).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from runtime.embedder import Embedder
from runtime.errors import EdgebindError
from runtime.inputs import preprocess_config
from runtime.latency import LatencyRecorder
from runtime.manifest import ModelManifest
from runtime.matching import MatchConfig, Matcher
from runtime.pipeline_backend import BackendHealth
from runtime.pipeline_plan import PipelineConfig, SourceState, StreamState, open_all
from runtime.pipeline_status import PipelineEvent, PipelineStatus, source_status, stream_status
from runtime.prompts import PromptBank
from runtime.sources import SampleSource
from runtime.types import Match, Modality, Window
from runtime.window_input import window_to_input
from runtime.window_queue import Job, WindowQueue

_FRAME_MODALITIES = (Modality.DEPTH, Modality.THERMAL, Modality.VISION)


class Pipeline:
    """Runs sources through a bundle's encoders and a matcher; see the module docstring.

    Args:
        manifest: the loaded bundle.
        sources: URIs (opened here) or open :class:`SampleSource` objects.
        bank: the prompt bank to match against.
        match_config: matcher settings.
        config: engine settings.
        on_event: called from the inference thread with every event (keep it quick).
        embedder: an already open embedder to use (not closed by the pipeline).
        on_latency: called from the inference thread per matched window with its stream key and
            per-stage latencies in milliseconds (window, queue, preprocess, embed, match, total).
        on_window: called from the inference thread once per embedded window with (stream key,
            modality, start_ns, end_ns, unit vector float32 (D,)), e.g. to store it in an
            embedding memory (keep it quick; an exception is reported in the status, not raised).

    Raises:
        EdgebindError: a source cannot be opened, or a source has no stream the bundle
            can embed (one line naming the source, its modalities and the bundle's);
            raised before any thread starts, with every opened source closed again.
    """

    def __init__(
        self,
        manifest: ModelManifest,
        sources: Sequence[str | SampleSource],
        bank: PromptBank,
        match_config: MatchConfig,
        config: PipelineConfig | None = None,
        *,
        on_event: Callable[[PipelineEvent], None] | None = None,
        embedder: Embedder | None = None,
        on_latency: Callable[[str, dict[str, float]], None] | None = None,
        on_window: Callable[[str, Modality, int, int, np.ndarray], None] | None = None,
    ) -> None:
        self.created_ns = time.monotonic_ns()  # before the sources open: the run's time zero
        self.manifest = manifest
        self.config = config or PipelineConfig()
        self._on_event = on_event
        self._on_latency = on_latency
        self._on_window = on_window
        self._sources = open_all(manifest, sources, self.config)
        self._by_key = {s.key: s for src in self._sources for s in src.streams.values()}
        mods = {s.modality for s in self._by_key.values()}
        self._pre_cfg = {m: preprocess_config(m, manifest.spec(m).preprocess) for m in mods}  # parsed once
        self._matcher = Matcher(bank, match_config)
        self._own_embedder = embedder is None
        self._embedder = embedder
        self._queue = WindowQueue(self.config.queue_windows)
        self._latency = LatencyRecorder(capacity=self.config.latency_capacity)
        self._lock = threading.Lock()  # matcher, recent events, counters read by status()
        self._recent: deque[PipelineEvent] = deque(maxlen=self.config.recent_events)
        self._closed: deque[Match] = deque(maxlen=self.config.closed_events)
        self._stop = threading.Event()
        self._sources_stop = threading.Event()  # drain: sources end, queued windows still run
        self._done = threading.Event()
        self.heartbeat_ns = time.monotonic_ns()
        self._infer_thread: threading.Thread | None = None
        self._errors: deque[str] = deque(maxlen=10)
        self._health = BackendHealth(self._errors)
        self._batches = 0
        self._events = 0
        self._t_start_ns: int | None = None
        self._t_end_ns: int | None = None

    @property
    def streams(self) -> list[tuple[str, str, Modality]]:
        """(stream key, source name, modality) of every windowed stream."""
        return [(s.key, src.name, s.modality) for src in self._sources for s in src.streams.values()]

    @property
    def source_objects(self) -> list[SampleSource]:
        """The open sources, in the order given."""
        return [s.source for s in self._sources]

    def start(self) -> None:
        """Open the encoders the streams need (errors raise here), then start every thread."""
        if self._infer_thread is not None:
            raise RuntimeError("pipeline already started")
        try:
            if self._embedder is None:
                self._embedder = Embedder(self.manifest, self.config.backend, self.config.precision,
                                          max_batch=self.config.batch_max,
                                          intra_op_threads=self.config.threads)  # fmt: skip
            for mod in {s.modality for src in self._sources for s in src.streams.values()}:
                self._embedder.backend(mod)
        except BaseException:
            self._close_resources()
            raise
        self._t_start_ns = time.monotonic_ns()
        self._infer_thread = threading.Thread(target=self._infer_loop, name="edgebind-infer", daemon=True)
        for src in self._sources:
            src.thread = threading.Thread(target=self._source_loop, args=(src,), name=f"src {src.name}", daemon=True)
            src.thread.start()
        self._infer_thread.start()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until every source ended and every window was processed; True if so."""
        return self._done.wait(timeout_s)

    @property
    def done(self) -> bool:
        """True once the run finished (all sources ended and the queue drained, or stopped)."""
        return self._done.is_set()

    def stop(self) -> None:
        """Stop every thread (pending windows are discarded), join them and close sources and encoders."""
        self._stop.set()
        self._queue.wake()
        for src in self._sources:
            if src.thread is not None:
                src.thread.join()
        if self._infer_thread is not None:
            self._infer_thread.join()
        self._close_resources()
        self._done.set()

    def drain(self, timeout_s: float) -> bool:
        """Stop the sources, process the windows already queued (up to ``timeout_s`` seconds), then stop.

        Returns:
            True if every queued window was processed in time.
        """
        self._sources_stop.set()
        self._queue.wake()
        for src in self._sources:
            if src.thread is not None:
                src.thread.join(timeout_s)
        drained = self._done.wait(timeout_s)
        self.stop()
        return drained

    def backend_counters(self) -> dict[str, dict[str, int]]:
        """Encoder failures and backend restarts per modality name."""
        return self._health.counters()

    def run(self, duration_s: float | None = None, poll_s: float = 0.1) -> PipelineStatus:
        """Start, wait for the end of the sources or ``duration_s`` seconds, stop; return the final status."""
        self.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        try:
            while not self.wait(poll_s):
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            self.stop()
        return self.status()

    def swap_bank(self, bank: PromptBank) -> None:
        """Replace the prompt bank atomically (between two matcher updates)."""
        with self._lock:
            self._matcher.swap_bank(bank)

    def closed_events(self) -> list[tuple[Match, str]]:
        """Closed events with their final extents and peak scores, with their source's name.

        Events still open when the run ends are closed then (the last ``closed_events``
        are kept).
        """
        with self._lock:
            self._closed.extend(self._matcher.closed())
            return [(m, self._by_key[m.source_id].source) for m in self._closed]

    def _close_resources(self) -> None:
        for src in self._sources:
            try:
                src.source.close()
            except Exception as exc:  # a failing close must not hide the others
                self._errors.append(f"{src.name}: close failed: {exc}")
        if self._own_embedder and self._embedder is not None:
            self._embedder.close()

    # -- source threads -------------------------------------------------------------------
    def _source_loop(self, src: SourceState) -> None:
        try:
            while not (self._stop.is_set() or self._sources_stop.is_set()):
                try:
                    samples = src.source.read(self.config.read_timeout_s)
                except EOFError:
                    break
                if samples is None:
                    continue
                read_ns = time.monotonic_ns()
                stream = src.streams.get(samples.stream_id)
                if stream is None:
                    continue  # a stream the bundle cannot embed (noted in the status)
                windows = stream.windower.push(samples)
                ready_ns = time.monotonic_ns()
                for w in windows:
                    capture_ns = min(_last_sample_ns(w), read_ns)
                    stream.made += 1
                    stream.latency.add_ns("window", capture_ns, ready_ns)
                    self._latency.add_ns("window", capture_ns, ready_ns)
                    self._queue.put(Job(w, stream.key, capture_ns, ready_ns), self.config.lossless, self._stop)
        except Exception as exc:  # a dead source is reported; the others go on
            src.error = f"{type(exc).__name__}: {exc}"
            self._errors.append(f"{src.name}: {src.error}")
        finally:
            src.finished = True
            self._queue.wake()

    # -- inference thread -----------------------------------------------------------------
    def _infer_loop(self) -> None:
        idle_s = min(0.05, self.config.read_timeout_s)
        try:
            while not self._stop.is_set():
                self.heartbeat_ns = time.monotonic_ns()
                jobs = self._queue.take(self.config.batch_max, self.config.batch_deadline_s, idle_s)
                if jobs:
                    self._process(jobs)
                    with self._lock:
                        self._closed.extend(self._matcher.closed())
                elif all(s.finished for s in self._sources) and len(self._queue) == 0:
                    break
        except Exception as exc:  # the engine itself failed: report, stop the sources
            self._errors.append(f"inference: {type(exc).__name__}: {exc}")
            self._stop.set()
        finally:
            self._matcher.flush()  # events open at the end close with the last window
            self._t_end_ns = time.monotonic_ns()
            self._done.set()

    def _process(self, jobs: list[Job]) -> None:
        taken_ns = time.monotonic_ns()
        self._batches += 1
        by_mod: dict[Modality, list[Job]] = {}
        for job in jobs:
            by_mod.setdefault(job.window.modality, []).append(job)
        for mod, group in by_mod.items():
            rows, kept = [], []
            spec = self.manifest.spec(mod)
            for job in group:
                try:
                    rows.append(window_to_input(job.window, spec, self._pre_cfg[mod]))
                    kept.append(job)
                except (EdgebindError, ValueError) as exc:  # one bad window, not the stream
                    self._stream(job.key).failed += 1
                    self._errors.append(f"{job.key}: window {job.window.seq}: {exc}")
            if not kept:
                continue
            pre_ns = time.monotonic_ns()
            assert self._embedder is not None
            try:
                unit = self._embedder.embed(mod, np.stack(rows)).unit()
            except Exception as exc:  # an encoder failure fails these windows, not the pipeline
                for job in kept:
                    self._stream(job.key).failed += 1
                self._health.failed(mod, exc, self._embedder)
                continue
            self._health.succeeded(mod)
            emb_ns = time.monotonic_ns()
            for job, vec in zip(kept, unit, strict=True):
                if self._on_window is not None:
                    try:
                        self._on_window(job.key, mod, job.window.start_ns, job.window.end_ns, vec)
                    except Exception as exc:  # a failing consumer must not stop matching
                        self._errors.append(f"{job.key}: on_window: {type(exc).__name__}: {exc}")
                self._match(job, vec, (taken_ns, pre_ns, emb_ns))

    def _match(self, job: Job, vec: np.ndarray, marks: tuple[int, int, int]) -> None:
        taken_ns, pre_ns, emb_ns = marks
        w, stream = job.window, self._stream(job.key)
        with self._lock:
            found = self._matcher.update(job.key, w.modality, w.start_ns, w.end_ns, vec)
        done_ns = time.monotonic_ns()
        stream.done += 1
        for rec in (stream.latency, self._latency):
            rec.add_ns("queue", job.ready_ns, taken_ns)
            rec.add_ns("preprocess", taken_ns, pre_ns)
            rec.add_ns("embed", pre_ns, emb_ns)
            rec.add_ns("match", emb_ns, done_ns)
            rec.add_ns("total", job.capture_ns, done_ns)
        if self._on_latency is not None:
            marks_ns = (job.capture_ns, job.ready_ns, taken_ns, pre_ns, emb_ns, done_ns)
            stages = ("window", "queue", "preprocess", "embed", "match")
            ms = {s: (b - a) / 1e6 for s, a, b in zip(stages, marks_ns, marks_ns[1:], strict=False)}
            self._on_latency(job.key, {**ms, "total": (done_ns - job.capture_ns) / 1e6})
        for match in found:
            event = PipelineEvent(match, stream.source, job.capture_ns, done_ns)
            with self._lock:
                stream.events += 1
                self._events += 1
                self._recent.append(event)
            if self._on_event is not None:
                self._on_event(event)

    def _stream(self, key: str) -> StreamState:
        return self._by_key[key]

    # -- status ---------------------------------------------------------------------------
    def status(self) -> PipelineStatus:
        """A consistent-enough snapshot for a live view or a summary (cheap; any thread)."""
        dropped = self._queue.dropped()
        with self._lock:
            tops = {s.key: tuple(self._matcher.top(s.key)) for src in self._sources for s in src.streams.values()}
            recent = tuple(self._recent)
            events = self._events
        streams = tuple(stream_status(src, s, dropped.get(s.key, 0), tops[s.key])
                        for src in self._sources for s in src.streams.values())  # fmt: skip
        start = self._t_start_ns or time.monotonic_ns()
        end = self._t_end_ns or time.monotonic_ns()
        return PipelineStatus(
            running=self._infer_thread is not None and not self._done.is_set(),
            done=self._done.is_set(),
            elapsed_s=(end - start) / 1e9 if self._t_start_ns else 0.0,
            sources=tuple(source_status(src) for src in self._sources),
            streams=streams,
            latency=self._latency.summary(),
            batches=self._batches,
            queue_depth=len(self._queue),
            events=events,
            recent_events=recent,
            errors=tuple(self._errors),
        )


def _last_sample_ns(w: Window) -> int:
    """Host time of the window's last sample: one frame's own time, else end minus one sample period."""
    if w.modality in _FRAME_MODALITIES:
        return w.start_ns
    n = max(int(w.data.shape[0]), 1)
    return w.end_ns - (w.end_ns - w.start_ns) // n
