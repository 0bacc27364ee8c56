"""Prometheus metrics and health endpoints for the daemon (``prometheus-client``, imported on start).

One HTTP server, bound to ``127.0.0.1`` by default (any other address needs ``allow_remote``)::

    GET /metrics   Prometheus text format, from the server's own CollectorRegistry
    GET /healthz   200 while the process serves and the inference thread is alive and the status
                   is being refreshed; 503 otherwise (JSON body with the reason)
    GET /readyz    200 once every source delivered new samples within ``ready_within_s``; else 503

Status comes either pushed with :meth:`MetricsServer.update` or pulled: give ``source`` (an
object with ``status() -> dict``, e.g. the daemon) and each request refreshes the snapshot
(at most every ``refresh_s``). True per-stage histograms need one
:meth:`MetricsServer.observe_latency` call per window and stage (a pipeline hook); without it
the per-stage p50/p99 of the status are exported as gauges. The status dict is the daemon's
status document (pipeline counters under ``pipeline``) or a bare
:meth:`runtime.pipeline_status.PipelineStatus.to_dict`; missing keys are simply not exported::

    pipeline.streams[]: key, modality, windows_made, windows_done, windows_dropped, windows_failed, events
    pipeline.sources[]: name, stats {samples {stream: n}, dropped {reason: n}, errors {reason: n},
                        reconnects}, finished, error
    pipeline.latency_ms: {stage: {count, p50_ms, p99_ms, mean_ms, max_ms}}   (whole run)
    running: bool   inference_alive: bool   queue_depth: int   events_by_label: {label: n}
    sinks: {name: {open, published, failures, backlog}}   counters: {name: n}
    event_log: {events, backlog}    (backlog defaults to the largest sink backlog)

A source is "up" while it is not finished, has no error, is not reopening after a disconnect
and its sample counters grew within ``ready_within_s`` (the sensor gauges and /readyz agree).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from runtime.errors import ConfigError, EdgebindError

log = logging.getLogger("edgebind.metrics")

INSTALL_HINT = "pip install 'edgebind[daemon]'"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WINDOW_COUNTERS = ("made", "done", "dropped", "failed")
SINK_METRICS = (  # status["sinks"][name] key -> metric
    ("published", "edgebind_sink_published", "counter", "Events published by the sink"),
    ("failures", "edgebind_sink_publish_failures", "counter", "Failed publish attempts of the sink"),
    ("backlog", "edgebind_sink_backlog", "gauge", "Logged events the sink has not published yet"),
    ("open", "edgebind_sink_open", "gauge", "1 while the sink is open (connected or connecting)"),
)


class StatusSource(Protocol):
    """Anything with a ``status()`` document (the daemon)."""

    def status(self) -> dict[str, Any]: ...


def check_bind(host: str, allow_remote: bool) -> str | None:
    """Why ``host`` may not be bound (a non-loopback address without ``allow_remote``), or None."""
    if allow_remote or host == "localhost":
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return f"http.host: {host!r} is not a loopback address; set http.allow_remote = true to serve beyond localhost"


def pipeline_part(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pipeline counters of a daemon status document (or the dict itself when it is one)."""
    inner = status.get("pipeline")
    return inner if isinstance(inner, Mapping) else status


class SourceFreshness:
    """When each source's sample counters last grew (monotonic seconds); drives up/down and /readyz."""

    def __init__(self) -> None:
        self._totals: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def update(self, sources: list[Any], now: float) -> None:
        for src in sources:
            if not isinstance(src, Mapping):
                continue
            samples = _dict(_dict(src.get("stats")).get("samples"))
            total = int(sum(n for n in samples.values() if isinstance(n, (int, float))))
            name = str(src.get("name", "?"))
            if total > self._totals.get(name, 0):
                self._last[name] = now
            self._totals[name] = total

    def age(self, name: str, now: float) -> float | None:
        """Seconds since ``name`` last delivered samples (None: never)."""
        last = self._last.get(name)
        return None if last is None else now - last


class MetricsServer:
    """The ``/metrics``, ``/healthz`` and ``/readyz`` server; thread-safe, started by the constructor.

    Args:
        host: bind address (loopback unless ``allow_remote``).
        port: TCP port (0 picks a free one: see :attr:`port`).
        source: pulled for a fresh status on requests (None: only :meth:`update` feeds it).
        allow_remote: allow a non-loopback ``host``.
        ready_within_s: a source is up when it produced samples within this many seconds.
        stale_after_s: /healthz fails when no status came for this long (a stuck daemon).
        refresh_s: pull ``source.status()`` at most this often.

    Raises:
        ConfigError: non-loopback ``host`` without ``allow_remote``.
        EdgebindError: prometheus-client missing, or the port cannot be bound.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9464, source: StatusSource | None = None, *,
                 allow_remote: bool = False, ready_within_s: float = 10.0, stale_after_s: float = 30.0,
                 refresh_s: float = 1.0) -> None:  # fmt: skip
        if (why := check_bind(host, allow_remote)) is not None:
            raise ConfigError(why)
        try:
            import prometheus_client as prom
            from prometheus_client import core as prom_core
        except ImportError:
            raise EdgebindError(f"metrics need prometheus-client: {INSTALL_HINT}") from None
        self._prom, self._core, self._source = prom, prom_core, source
        self.ready_within_s, self.stale_after_s, self.refresh_s = ready_within_s, stale_after_s, refresh_s
        self._lock = threading.Lock()
        self._status: dict[str, Any] | None = None
        self._updated = self._pulled = -1e9
        self.fresh = SourceFreshness()
        self.registry = prom.CollectorRegistry(auto_describe=False)
        self._latency = prom.Histogram(
            "edgebind_stage_latency_seconds", "Per-window latency of a pipeline stage", ["stream", "stage"],
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.registry.register(_StatusCollector(self))
        self._httpd = self._serve(host, port)

    def _serve(self, host: str, port: int) -> ThreadingHTTPServer:
        try:
            httpd = ThreadingHTTPServer((host, port), _handler_class(self))
        except OSError as exc:
            raise EdgebindError(f"metrics: cannot listen on {host}:{port} ({exc.strerror}); change http.port") from None
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
        log.info("metrics on http://%s:%d/metrics", host, httpd.server_address[1])
        return httpd

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._httpd.server_address[1])

    # -- feeding --------------------------------------------------------------------------------
    def update(self, status: Mapping[str, Any]) -> None:
        """Take a new status snapshot (see the module docstring for the keys read)."""
        now = time.monotonic()
        with self._lock:
            self._status, self._updated = dict(status), now
            self.fresh.update(list(pipeline_part(status).get("sources") or []), now)

    def observe_latency(self, stage: str, ms: float, stream: str = "all") -> None:
        """Record one window's latency of ``stage`` in milliseconds (histogram in seconds)."""
        self._latency.labels(stream=stream, stage=stage).observe(ms / 1000.0)

    def _pull(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self._source is None or now - self._pulled < self.refresh_s:
                return
            self._pulled = now
        try:
            status = self._source.status()
        except Exception as exc:  # not started yet, or failing: /healthz turns 503 once the snapshot is stale
            log.debug("status for metrics failed: %s: %s", type(exc).__name__, exc)
            return
        self.update(status)

    def snapshot(self) -> tuple[dict[str, Any] | None, float, float]:
        """(latest status, seconds since it came, now), pulling a fresh one from ``source`` if due."""
        self._pull()
        now = time.monotonic()
        with self._lock:
            return self._status, now - self._updated, now

    # -- health ---------------------------------------------------------------------------------
    def source_up(self, src: Mapping[str, Any], now: float) -> bool:
        """Not finished, no error, not reopening, and samples within ``ready_within_s``."""
        stats = _dict(src.get("stats"))
        if src.get("finished") or src.get("error"):
            return False
        if _num(_dict(stats.get("errors")).get("disconnect", 0)) > _num(stats.get("reconnects", 0)):
            return False
        age = self.fresh.age(str(src.get("name", "?")), now)
        return age is not None and age <= self.ready_within_s

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(alive?, details) for /healthz."""
        status, age, _ = self.snapshot()
        if status is None:
            return True, {"ok": True, "state": "starting"}
        if status.get("inference_alive") is False or status.get("running") is False:
            return False, {"ok": False, "error": "inference is not running"}
        if age > self.stale_after_s:
            return False, {"ok": False, "error": f"no status for {age:.0f} s"}
        return True, {"ok": True, "state": "running"}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """(ready?, details) for /readyz: every source produced data within ``ready_within_s``."""
        status, _, now = self.snapshot()
        if status is None:
            return False, {"ok": False, "error": "no status yet"}
        sources = [s for s in pipeline_part(status).get("sources") or [] if isinstance(s, Mapping)]
        down = [str(s.get("name")) for s in sources if not self.source_up(s, now)]
        if down or not sources:
            return False, {"ok": False, "error": f"no data within {self.ready_within_s:g} s", "down": down}
        return True, {"ok": True}

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        self._httpd.shutdown()
        self._httpd.server_close()


def start_metrics_server(host: str, port: int, source: StatusSource | None = None, **options: Any) -> MetricsServer:
    """Start a :class:`MetricsServer` (the daemon's entry point; ``options`` as its keywords)."""
    return MetricsServer(host, port, source, **options)


def _handler_class(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                prom = server._prom
                try:
                    body = prom.generate_latest(server.registry)
                except Exception as exc:  # a malformed status must not take the endpoint down
                    log.warning("metrics: cannot render the status: %s: %s", type(exc).__name__, exc)
                    self._send(500, f"cannot render metrics: {type(exc).__name__}\n".encode(), "text/plain")
                    return
                self._send(200, body, prom.CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, body = server.health() if path == "/healthz" else server.ready()
                self._send(200 if ok else 503, json.dumps(body).encode() + b"\n", "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s", format % args)

    return Handler


class _StatusCollector:
    """Renders the latest status snapshot as metric families at scrape time."""

    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        status, age, now = self.server.snapshot()
        core = self.server._core
        yield _gauge(core, "edgebind_status_age_seconds", "Seconds since the last status update", [],
                     [([], age if status is not None else float("nan"))])  # fmt: skip
        if status is None:
            return
        pipeline = pipeline_part(status)
        yield from _stream_metrics(core, _mappings(pipeline.get("streams")))
        yield from _source_metrics(core, self.server, _mappings(pipeline.get("sources")), now)
        yield from _daemon_metrics(core, status, pipeline)


def _family(cls: Any, name: str, doc: str, labels: list[str], rows: list[tuple[list[Any], Any]]) -> Any:
    """A metric family of class ``cls`` (Counter/GaugeMetricFamily) with one sample per row."""
    fam = cls(name, doc, labels=labels)
    for values, value in rows:
        fam.add_metric([str(v) for v in values], _num(value))
    return fam


def _num(value: Any) -> float:
    """A metric value from whatever the status holds (bools count as 0/1; junk becomes NaN)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _counter(core: Any, name: str, doc: str, labels: list[str], rows: list[tuple[list[Any], Any]]) -> Any:
    return _family(core.CounterMetricFamily, name, doc, labels, rows)


def _gauge(core: Any, name: str, doc: str, labels: list[str], rows: list[tuple[list[Any], Any]]) -> Any:
    return _family(core.GaugeMetricFamily, name, doc, labels, rows)


def _stream_metrics(core: Any, streams: list[Mapping[str, Any]]) -> Iterator[Any]:
    labels = ["stream", "modality"]
    for what in WINDOW_COUNTERS:
        rows = [([s.get("key"), s.get("modality")], s.get(f"windows_{what}", 0)) for s in streams]
        yield _counter(core, f"edgebind_windows_{what}", f"Windows {what} per stream", labels, rows)
    rows = [([s.get("key"), s.get("modality")], s.get("events", 0)) for s in streams]
    yield _counter(core, "edgebind_stream_events", "Events raised per stream", labels, rows)


def _source_metrics(core: Any, server: MetricsServer, sources: list[Mapping[str, Any]], now: float) -> Iterator[Any]:
    up = [([s.get("name")], 1.0 if server.source_up(s, now) else 0.0) for s in sources]
    yield _gauge(core, "edgebind_sensor_up", "1 while the source delivers data, else 0", ["source"], up)
    ages = [([s.get("name")], server.fresh.age(str(s.get("name")), now)) for s in sources]
    yield _gauge(core, "edgebind_sensor_data_age_seconds", "Seconds since the source last delivered samples",
                 ["source"], [(k, float("nan") if a is None else a) for k, a in ages])  # fmt: skip
    samples, dropped, errors, reconnects = [], [], [], []
    for s in sources:
        stats, name = _dict(s.get("stats")), s.get("name")
        samples += [([name, k], v) for k, v in _dict(stats.get("samples")).items()]
        dropped += [([name, k], v) for k, v in _dict(stats.get("dropped")).items()]
        errors += [([name, k], v) for k, v in _dict(stats.get("errors")).items()]
        reconnects.append(([name], stats.get("reconnects", 0)))
    yield _counter(core, "edgebind_sensor_samples", "Samples delivered", ["source", "stream"], samples)
    yield _counter(core, "edgebind_sensor_dropped", "Samples or frames discarded", ["source", "reason"], dropped)
    yield _counter(core, "edgebind_sensor_errors", "Source errors", ["source", "reason"], errors)
    yield _counter(core, "edgebind_sensor_reconnects", "Source reopenings after a failure", ["source"], reconnects)


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _daemon_metrics(core: Any, status: Mapping[str, Any], pipeline: Mapping[str, Any]) -> Iterator[Any]:
    by_label = _dict(status.get("events_by_label") or pipeline.get("events_by_label"))
    rows = [([k], v) for k, v in by_label.items()]
    yield _counter(core, "edgebind_events", "Events per prompt label", ["label"], rows)
    quantiles = []
    for stage, summary in _dict(pipeline.get("latency_ms")).items():
        for q, key in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
            if isinstance(summary, Mapping) and summary.get(key) is not None:
                quantiles.append(([stage, q], _num(summary[key]) / 1000.0))
    yield _gauge(core, "edgebind_stage_latency_quantile_seconds", "Latency quantile per stage (whole run)",
                 ["stage", "quantile"], quantiles)  # fmt: skip
    sinks = {k: v for k, v in _dict(status.get("sinks")).items() if isinstance(v, Mapping)}
    for key, name, kind, doc in SINK_METRICS:
        rows = [([sink], s[key]) for sink, s in sinks.items() if key in s]
        yield (_counter if kind == "counter" else _gauge)(core, name, doc, ["sink"], rows)
    event_log = dict(_dict(status.get("event_log")))
    backlogs = [_num(s.get("backlog")) for s in sinks.values() if "backlog" in s]
    if "backlog" not in event_log and backlogs:
        event_log["backlog"] = max(backlogs)
    for key in ("events", "backlog"):
        if key in event_log:
            yield _gauge(core, f"edgebind_event_log_{key}", f"Event log {key}", [], [([], event_log[key])])
    counters = _dict(status.get("counters"))
    rows = [([k], v) for k, v in counters.items()]
    yield _counter(core, "edgebind_daemon", "Daemon counters by name", ["name"], rows)
    for key, doc in (("queue_depth", "Windows waiting for inference"), ("inference_alive", "1 while inference runs")):
        value = status.get(key, pipeline.get(key))
        if value is not None:
            yield _gauge(core, f"edgebind_{key}", doc, [], [([], value)])
    yield from _multimodal_metrics(core, status)


def _multimodal_metrics(core: Any, status: Mapping[str, Any]) -> Iterator[Any]:
    """Fused events per label and the embedding memory's size, when the daemon runs them."""
    fusion = _dict(status.get("fusion"))
    if fusion:
        rows = [([k], v) for k, v in _dict(fusion.get("by_label")).items()]
        yield _counter(core, "edgebind_fused_events", "Fused (cross-sensor) events per label", ["label"], rows)
    memory = _dict(status.get("memory"))
    for key, doc in (("windows", "Windows kept in the embedding memory"), ("capacity", "Embedding memory capacity")):
        if key in memory:
            yield _gauge(core, f"edgebind_memory_{key}", doc, [], [([], memory[key])])
