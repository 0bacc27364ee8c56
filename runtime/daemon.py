"""``python -m runtime.daemon --config FILE.toml [--check]``: the on-device service.

Validates the whole config first (every problem one line ``section.key: problem; fix`` on
stderr, exit 2; ``--check`` stops there with exit 0 when it is clean). Then it loads the
bundle, encodes the prompts, opens the event log and the sources and streams: every event
is committed to the event log (:mod:`runtime.eventlog`) and only then published to every
enabled sink by the publisher thread (:mod:`runtime.daemon_publish`), which resumes from the
log after a crash or ``kill -9``. Every ``daemon.status_interval_s`` the status (pipeline
counters, per-sensor state, sinks, prompts) is stored in the log, published as retained
status and sent to systemd as ``STATUS=``.

Signals: SIGTERM/SIGINT drain (sources stop, queued windows finish, pending events get one
last publish, sinks close, the log is checkpointed) and exit 0; SIGHUP re-reads
``[prompts] file`` and swaps the bank atomically; a bad file is rejected with one log line
and the old prompts stay. systemd: ``READY=1`` once streaming, ``WATCHDOG=1`` every half
``WATCHDOG_USEC`` but only while the inference and publisher threads make progress.
Exit codes: 0 stopped or all sources ended; 1 the inference engine died, or a source still
cannot be opened after ``daemon.source_wait_s`` seconds of retries (systemd restarts us); 2 a
config, bundle or prompt error before streaming (the unit's ``RestartPreventExitStatus=2``
keeps systemd from looping on it). Logs go to stderr, one line per message (journald).
Never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runtime.control import ControlHandler
from runtime.daemon_config import ConfigProblems, DaemonConfig, load_config
from runtime.daemon_multimodal import Multimodal
from runtime.daemon_prompts import PromptControl
from runtime.daemon_publish import Publisher, Sink
from runtime.daemon_status import SensorWatch, sensors_status, status_line
from runtime.embedder import Embedder
from runtime.errors import EdgebindError
from runtime.eventlog import EventLog
from runtime.fusion_stage import FusedPipelineEvent, fused_event_to_dict
from runtime.manifest import ModelManifest, load_manifest
from runtime.pipeline import Pipeline
from runtime.pipeline_status import PipelineEvent
from runtime.prompts import PromptBank
from runtime.sdnotify import Notifier
from runtime.sources import SourceError
from runtime.stream import prompt_bank
from runtime.stream_output import event_to_dict

_LOG = logging.getLogger("edgebind.daemon")
TICK_S = 0.2  # main loop period: signals, watchdog, status
SinkFactory = Callable[[Mapping[str, Any], ControlHandler], Sink]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.daemon", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="TOML config file (see deploy/edgebind.toml)")
    p.add_argument("--check", action="store_true", help="validate the config and exit (0: valid, 2: problems)")
    return p


def main(argv: Sequence[str] | None = None, extra_sinks: Mapping[str, SinkFactory] | None = None) -> int:
    """Run the daemon (see the module docstring for exit codes).

    Args:
        extra_sinks: sink table name -> factory ``(section, control) -> Sink``, for sinks
            outside ``runtime.sinks`` (tests, site plugins); their table needs ``enabled``.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    extra = dict(extra_sinks or {})
    try:
        cfg = load_config(args.config, extra_sinks=tuple(extra))
    except ConfigProblems as exc:
        for line in exc.lines:
            print(f"{exc.path}: {line}", file=sys.stderr)
        print(f"{exc.path}: {len(exc.lines)} problem(s); nothing started", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(cfg.daemon.log_level.upper())
    if args.check:
        print(f"{cfg.path}: ok ({len(cfg.sources)} sources, sinks: {', '.join(cfg.enabled_sinks()) or 'none'})")
        return 0
    daemon = Daemon(cfg, extra)
    try:
        daemon.start()
    except StopRequested:
        daemon.close()
        return 0
    except EdgebindError as exc:
        _LOG.error("not started: %s", " ".join(str(exc).split()))
        daemon.close()
        return 1 if isinstance(exc, SourceError) else 2
    return daemon.run()


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived while the daemon was still starting."""


class Daemon(PromptControl):
    """One run of the service; :meth:`start` then :meth:`run` (blocks until stopped)."""

    def __init__(self, cfg: DaemonConfig, extra_sinks: Mapping[str, SinkFactory] | None = None) -> None:
        self.cfg = cfg
        self._extra = dict(extra_sinks or {})
        self._notifier = Notifier()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._prompt_lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self._by_label: dict[str, int] = {}
        self._watch = SensorWatch()
        self._names = {s.uri: s.name for s in cfg.sources}
        self.control = ControlHandler(self, cfg.control.enabled, cfg.control.token)
        self.embedder: Embedder | None = None
        self.log: EventLog | None = None
        self.pipeline: Pipeline | None = None
        self.publisher: Publisher | None = None
        self._bank: PromptBank | None = None
        self.multi: Multimodal | None = None
        self._prompt_origin = "config"
        self._started_s = time.monotonic()
        self._http: Any = None
        self._old_signals: dict[int, Any] = {}

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Load, open and start everything.

        Raises:
            EdgebindError: one line; a SourceError when a source still cannot be opened after
                ``daemon.source_wait_s`` seconds of retries (a sensor not plugged in yet).
            StopRequested: SIGTERM while starting.
        """
        cfg = self.cfg
        self._install_signals()
        manifest = load_manifest(cfg.bundle.path)
        self.embedder = Embedder(manifest, cfg.bundle.backend, cfg.bundle.precision,
                                 max_batch=cfg.pipeline.batch_max, intra_op_threads=cfg.bundle.threads)  # fmt: skip
        self._bank = prompt_bank(self.embedder, self._config_prompts(), cfg.prompts.cache_dir)
        self.multi = Multimodal(cfg, manifest, self._bank, self._on_fused)
        sinks = cfg.enabled_sinks()
        self.log = self._open_log(sinks)
        starts = self.log.counters().get("starts", 0) + 1
        self.log.set_counters({"starts": starts})
        self.publisher = Publisher(self.log, {n: self._sink_opener(n) for n in sinks}, cfg.daemon.publish_retry_max_s)
        uris = [s.uri for s in cfg.sources]
        self.pipeline = self._open_pipeline(manifest, uris)
        self.multi.set_streams(self.pipeline.streams)
        self._t0_ns = self.pipeline.created_ns
        self.pipeline.start()
        self.publisher.start()
        self._http = self._start_http()
        backlog = self.log.unpublished()
        _LOG.info("streaming %d sources with %s (%s/%s), %d prompts, run %d; backlog %s",
                  len(uris), manifest.root, cfg.bundle.backend, cfg.bundle.precision,
                  len(self._bank.prompts), starts, backlog or "none")  # fmt: skip
        self._notifier.ready(f"streaming {len(uris)} sources")

    def _open_pipeline(self, manifest: ModelManifest, uris: list[str]) -> Pipeline:
        """Open the sources (retrying a SourceError with backoff for ``daemon.source_wait_s``)."""
        assert self._bank is not None and self.multi is not None
        deadline_s = time.monotonic() + self.cfg.daemon.source_wait_s
        delay_s = 1.0
        while True:
            try:
                return Pipeline(manifest, uris, self._bank, self.cfg.matching, self.cfg.pipeline,
                                on_event=self._on_event, embedder=self.embedder,
                                on_latency=self._on_latency, on_window=self.multi.hook())  # fmt: skip
            except SourceError as exc:
                if time.monotonic() + delay_s > deadline_s:
                    raise
                line = " ".join(str(exc).split())
                _LOG.warning("waiting for a source (retry in %.0f s): %s", delay_s, line)
                self._notifier.status(f"waiting for a source: {line}")
            if self._stop.wait(delay_s):
                raise StopRequested()
            delay_s = min(2 * delay_s, 10.0)

    def _open_log(self, sinks: list[str]) -> EventLog:
        ev = self.cfg.event_log
        try:
            ev.path.parent.mkdir(parents=True, exist_ok=True)
            return EventLog(ev.path, ev.max_events, sinks, ev.synchronous)
        except (OSError, sqlite3.Error) as exc:
            raise EdgebindError(f"event_log.path: cannot open {ev.path} ({exc}); check the directory") from None

    def _sink_opener(self, name: str) -> Callable[[], Sink]:
        section = self.cfg.sinks[name]
        if name in self._extra:
            factory = self._extra[name]
            return lambda: factory(section, self.control)
        sinks = importlib.import_module("runtime.sinks")
        return lambda: sinks.open_sink(name, section, self.control)

    def _start_http(self) -> Any:
        """The metrics/health HTTP server of ``runtime.metrics_http`` when enabled and installed."""
        if not self.cfg.http.enabled:
            return None
        try:
            metrics = importlib.import_module("runtime.metrics_http")
        except ModuleNotFoundError:
            _LOG.warning("http: runtime.metrics_http is not installed; no metrics endpoint")
            return None
        http = self.cfg.http
        try:
            return metrics.start_metrics_server(http.host, http.port, self, allow_remote=http.allow_remote)
        except EdgebindError as exc:  # metrics are not worth stopping the robot for
            _LOG.warning("http: no metrics endpoint: %s", " ".join(str(exc).split()))
            return None

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT or the end of every source; drain; exit code."""
        interval = self._notifier.watchdog_interval_s()
        last_ping_s, seen_beat = 0.0, (0, 0)
        next_status_s = time.monotonic()
        assert self.pipeline is not None and self.publisher is not None
        while not self._stop.wait(TICK_S):
            if self._reload.is_set():
                self._reload.clear()
                self._notifier.reloading()
                try:
                    self.reload_prompts("SIGHUP")
                except Exception:  # logged by reload_prompts; the old prompts stay
                    pass
                self._notifier.ready()
            now = time.monotonic()
            beat = (self.pipeline.heartbeat_ns, self.publisher.heartbeat_ns)
            if interval is not None and now - last_ping_s >= interval and self._progress(beat, seen_beat):
                self._notifier.watchdog()
                last_ping_s, seen_beat = now, beat
            if now >= next_status_s:
                next_status_s = now + self.cfg.daemon.status_interval_s
                self.write_status()
            if self.pipeline.done:
                break
        return self.shutdown()

    def _progress(self, beat: tuple[int, int], seen: tuple[int, int]) -> bool:
        """Both threads turned since the last ping (the inference loop turns every <= 50 ms idle)."""
        assert self.publisher is not None
        return beat[0] > seen[0] and beat[1] > seen[1] and self.publisher.alive

    def shutdown(self) -> int:
        """Drain and close everything; the exit code."""
        assert self.pipeline is not None and self.publisher is not None and self.log is not None
        why = "stop requested" if self._stop.is_set() else "sources ended"
        self._notifier.stopping(f"draining ({why})")
        _LOG.info("draining (%s)", why)
        drained = self.pipeline.drain(self.cfg.daemon.drain_timeout_s)
        if self.multi is not None:
            self.multi.flush()
        status = self.pipeline.status()
        died = any(e.startswith("inference:") for e in status.errors)
        self.write_status(final=True)
        self.publisher.stop(flush_timeout_s=self.cfg.daemon.drain_timeout_s)
        left = self.log.unpublished()
        self.close()
        _LOG.info("stopped: %d windows, %d events%s; unpublished %s", status.windows_done, status.events,
                  "" if drained else " (drain timed out)", left or "none")  # fmt: skip
        return 1 if died else 0

    def close(self) -> None:
        """Close what is open (idempotent)."""
        if self._http is not None:
            _call(self._http, "close")
            self._http = None
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.multi is not None:
            self.multi.close()
        if self.embedder is not None:
            self.embedder.close()
            self.embedder = None
        self._notifier.close()
        if threading.current_thread() is threading.main_thread():  # else: the next close() from main
            for sig, handler in self._old_signals.items():
                signal.signal(sig, handler)
            self._old_signals.clear()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        actions = {signal.SIGTERM: self._stop.set, signal.SIGINT: self._stop.set, signal.SIGHUP: self._reload.set}
        for sig, action in actions.items():
            self._old_signals[sig] = signal.signal(sig, lambda *_, act=action: act())

    # -- events and status ------------------------------------------------------------------
    def _on_event(self, event: PipelineEvent) -> None:
        """Inference thread: commit the event (unless fusion replaces single events), then wake the publisher."""
        if self.multi is not None and not self.multi.publish_single:
            self._count("events_single_not_published")
            return
        self._commit(event_to_dict(event, self._t0_ns))

    def _on_fused(self, event: FusedPipelineEvent) -> None:
        """Inference thread: commit a fused event like any other."""
        self._commit(fused_event_to_dict(event, self._t0_ns))

    def _commit(self, row: dict[str, Any]) -> None:
        assert self.log is not None and self.publisher is not None
        row["ts_ns"], row["daemon"] = time.time_ns(), self.cfg.daemon.name
        try:
            self.log.append(row)
        except Exception as exc:  # a full disk must not kill inference; counted and logged
            self._count("events_log_failed")
            _LOG.error("event log append failed (%s); event %s lost", exc, row["label"])
            return
        self._count("events_logged")
        with self._count_lock:
            self._by_label[row["label"]] = self._by_label.get(row["label"], 0) + 1
        self.publisher.wake()

    def _on_latency(self, stream: str, stages_ms: dict[str, float]) -> None:
        """Inference thread: per-window stage latencies into the metrics histograms."""
        observe = getattr(self._http, "observe_latency", None)
        if observe is not None:
            for stage, ms in stages_ms.items():
                observe(stage, ms, stream)

    def _count(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def status(self) -> dict[str, Any]:
        """The status document (also the control ``status`` reply)."""
        assert self.pipeline is not None and self.publisher is not None
        ps = self.pipeline.status()
        sensors = sensors_status(ps, self._names, self._watch)
        sinks = self.publisher.sinks()
        counters = {**self._counts, **{f"control_{k}": v for k, v in self.control.counters().items()}}
        for kind, per_mod in self.pipeline.backend_counters().items():
            counters.update({f"{kind}_{m}": n for m, n in per_mod.items()})
        bank = self._bank
        assert self.log is not None
        with self._count_lock:
            by_label = dict(self._by_label)
        event_log = {"events": self.log.count(), "backlog": max((s["backlog"] for s in sinks.values()), default=0)}
        return {
            "type": "status", "daemon": self.cfg.daemon.name, "ts_ns": time.time_ns(),
            "uptime_s": round(time.monotonic() - self._started_s, 3), "running": ps.running,
            "inference_alive": ps.running, "queue_depth": ps.queue_depth, "events_by_label": by_label,
            "event_log": event_log,
            "line": status_line(ps, sensors, sinks), "sensors": sensors, "sinks": sinks, "counters": counters,
            "prompts": {"labels": list(bank.labels) if bank else [], "origin": self._prompt_origin},
            "pipeline": ps.to_dict(), **(self.multi.status() if self.multi else {}),
        }  # fmt: skip

    def write_status(self, final: bool = False) -> None:
        """Store the status in the log, publish it as retained status, tell systemd."""
        assert self.log is not None and self.publisher is not None
        doc = self.status()
        if final:
            doc["running"] = False
        self.log.put_status("daemon", {k: v for k, v in doc.items() if k != "pipeline"})
        for sensor in doc["sensors"]:
            self.log.put_status(f"source:{sensor['name']}", sensor)
        self.log.set_counters(doc["counters"])
        self.publisher.set_status(doc)
        self._notifier.status(doc["line"])


def _call(obj: Any, method: str) -> None:
    try:
        getattr(obj, method)()
    except Exception as exc:  # shutting down: report and go on
        _LOG.warning("%s.%s failed: %s", type(obj).__name__, method, exc)


if __name__ == "__main__":
    sys.exit(main())
