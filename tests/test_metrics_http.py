"""Metrics/health HTTP endpoint: Prometheus text, /healthz and /readyz codes, loopback-only binding."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("prometheus_client", reason="prometheus-client not installed (pip install 'edgebind[daemon]')")

from runtime.errors import ConfigError, EdgebindError
from runtime.metrics_http import MetricsServer, check_bind, start_metrics_server


def _get(server: MetricsServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _status(samples: int = 100, finished: bool = False, **extra: Any) -> dict[str, Any]:
    """A daemon status document (runtime.daemon.Daemon.status shape) with one audio stream."""
    source = {"name": "sim://demo", "streams": ["mic"], "ignored": [], "finished": finished, "error": None,
              "stats": {"samples": {"mic": samples}, "dropped": {"bad_checksum": 2}, "errors": {}, "reconnects": 1}}
    stream = {"key": "mic", "source": "sim://demo", "stream_id": "mic", "modality": "audio", "windows_made": 14,
              "windows_done": 12, "windows_dropped": 1, "windows_failed": 1, "events": 3}
    pipeline = {"windows": 12, "sources": [source], "streams": [stream], "errors": [],
                "latency_ms": {"total": {"count": 12, "p50_ms": 20.0, "p99_ms": 80.0, "mean_ms": 25.0}}}
    return {"type": "status", "running": True, "pipeline": pipeline, "events_by_label": {"glass breaking": 3},
            "sinks": {"mqtt": {"open": True, "published": 7, "failures": 2, "backlog": 5, "last_error": None}},
            "counters": {"events_logged": 12}, **extra}  # fmt: skip


@pytest.fixture()
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer("127.0.0.1", 0, ready_within_s=0.5, stale_after_s=1.0)
    yield srv
    srv.close()


def test_metrics_text(server: MetricsServer) -> None:
    server.update(_status())
    server.observe_latency("embed", 12.0, stream="mic")
    server.observe_latency("embed", 300.0, stream="mic")
    code, text = _get(server, "/metrics")
    assert code == 200
    expected = [
        'edgebind_windows_done_total{modality="audio",stream="mic"} 12.0',
        'edgebind_windows_dropped_total{modality="audio",stream="mic"} 1.0',
        'edgebind_windows_failed_total{modality="audio",stream="mic"} 1.0',
        'edgebind_events_total{label="glass breaking"} 3.0',
        'edgebind_sensor_up{source="sim://demo"} 1.0',
        'edgebind_sensor_samples_total{source="sim://demo",stream="mic"} 100.0',
        'edgebind_sensor_dropped_total{reason="bad_checksum",source="sim://demo"} 2.0',
        'edgebind_sensor_reconnects_total{source="sim://demo"} 1.0',
        'edgebind_sink_publish_failures_total{sink="mqtt"} 2.0',
        'edgebind_sink_backlog{sink="mqtt"} 5.0',
        "edgebind_event_log_backlog 5.0",
        'edgebind_daemon_total{name="events_logged"} 12.0',
        'edgebind_stage_latency_quantile_seconds{quantile="0.99",stage="total"} 0.08',
        'edgebind_stage_latency_seconds_bucket{le="0.025",stage="embed",stream="mic"} 1.0',
        'edgebind_stage_latency_seconds_count{stage="embed",stream="mic"} 2.0',
    ]
    missing = [line for line in expected if line not in text.splitlines()]
    assert not missing, missing
    assert "edgebind_fused_events" not in text and "edgebind_memory_windows" not in text  # neither is running


def test_fusion_and_memory_metrics(server: MetricsServer) -> None:
    fusion = {"windows": 40, "events": 3, "by_label": {"fall": 2, "alarm": 1}}
    memory = {"path": "/var/lib/edgebind/memory", "windows": 1234, "capacity": 2000000, "stored_this_run": 40}
    server.update(_status(fusion=fusion, memory=memory))
    lines = _get(server, "/metrics")[1].splitlines()
    for line in ('edgebind_fused_events_total{label="fall"} 2.0', 'edgebind_fused_events_total{label="alarm"} 1.0',
                 "edgebind_memory_windows 1234.0", "edgebind_memory_capacity 2e+06"):  # fmt: skip
        assert line in lines, line


def test_metrics_survive_junk_status(server: MetricsServer) -> None:
    server.update({"pipeline": {"streams": [{"key": "x", "windows_done": "lots"}, 3], "sources": "no"},
                   "sinks": {"a": None, "b": {"failures": None}}, "counters": [1]})  # fmt: skip
    code, text = _get(server, "/metrics")
    assert code == 200 and 'edgebind_windows_done_total{modality="None",stream="x"} NaN' in text


def test_healthz(server: MetricsServer) -> None:
    assert _get(server, "/healthz") == (200, '{"ok": true, "state": "starting"}\n')
    server.update(_status())
    assert _get(server, "/healthz")[0] == 200
    server.update(_status(inference_alive=False))
    code, body = _get(server, "/healthz")
    assert code == 503 and json.loads(body)["error"] == "inference is not running"
    server.update(_status())
    time.sleep(1.1)  # stale_after_s: the daemon stopped refreshing its status
    code, body = _get(server, "/healthz")
    assert code == 503 and "no status for" in json.loads(body)["error"]


def test_readyz_needs_fresh_data_from_every_source(server: MetricsServer) -> None:
    assert _get(server, "/readyz")[0] == 503
    server.update(_status(samples=0))
    assert _get(server, "/readyz")[0] == 503  # nothing delivered yet
    server.update(_status(samples=50))
    assert _get(server, "/readyz") == (200, '{"ok": true}\n')
    time.sleep(0.6)  # ready_within_s passes without new samples
    server.update(_status(samples=50))
    code, body = _get(server, "/readyz")
    assert code == 503 and json.loads(body)["down"] == ["sim://demo"]
    assert 'edgebind_sensor_up{source="sim://demo"} 0.0' in _get(server, "/metrics")[1]
    server.update(_status(samples=60, finished=True))
    assert _get(server, "/readyz")[0] == 503
    assert _get(server, "/nope")[0] == 404


def test_pull_mode_reads_the_source_at_most_every_refresh() -> None:
    class Source:
        calls = 0

        def status(self) -> dict[str, Any]:
            Source.calls += 1
            if Source.calls == 1:
                raise AssertionError("not started yet")
            return _status(samples=10 * Source.calls)

    srv = start_metrics_server("127.0.0.1", 0, Source(), refresh_s=0.2)
    try:
        assert _get(srv, "/healthz") == (200, '{"ok": true, "state": "starting"}\n')
        time.sleep(0.25)
        assert _get(srv, "/readyz")[0] == 200
        assert _get(srv, "/metrics")[0] == 200
        assert Source.calls == 2  # cached within refresh_s
    finally:
        srv.close()


def test_remote_bind_refused_unless_allowed() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert check_bind(host, allow_remote=False) is None
    for host in ("0.0.0.0", "::", "192.168.1.5", "robot.local"):
        assert check_bind(host, allow_remote=False) == (
            f"http.host: {host!r} is not a loopback address; set http.allow_remote = true to serve beyond localhost"
        )
        assert check_bind(host, allow_remote=True) is None
    with pytest.raises(ConfigError, match="not a loopback address"):
        MetricsServer("0.0.0.0", 0)


def test_port_in_use_is_one_line(server: MetricsServer) -> None:
    with pytest.raises(EdgebindError, match=f"metrics: cannot listen on 127.0.0.1:{server.port}"):
        MetricsServer("127.0.0.1", server.port)
