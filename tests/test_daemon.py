"""The daemon with real parts: a subprocess on sim:// and pty serial sources and the committed demo bundle.

A file sink (registered through ``runtime.daemon.main(extra_sinks=...)``) stands in for Zenoh/MQTT:
it appends each event as a JSON line, writes the retained status to a file and fails while a flag
file exists. systemd is a Unix datagram socket bound here (``NOTIFY_SOCKET``).
"""

from __future__ import annotations

import json
import os
import pty
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.control import ControlHandler
from runtime.prompts import Prompt
from tests.sinks_support import ListSink

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bundles" / "demo"
TOKEN = "test-token-0123456789"
RUNNER = '''
import json, os, sys
from runtime.daemon import main

class FileSink:
    name = "testsink"

    def __init__(self, section, control):
        self.path, self.fail = section["path"], section.get("fail_file", "")

    def publish_event(self, event):
        if self.fail and os.path.exists(self.fail):
            raise RuntimeError("test sink down")
        with open(self.path, "a") as fh:
            fh.write(json.dumps(event) + "\\n")

    def publish_status(self, status):
        with open(self.path + ".status.tmp", "w") as fh:
            json.dump(status, fh)
        os.replace(self.path + ".status.tmp", self.path + ".status")

    def close(self):
        pass

sys.exit(main(sys.argv[1:], extra_sinks={"testsink": FileSink}))
'''
pytestmark = pytest.mark.skipif(not (DEMO / "manifest.json").is_file(), reason="bundles/demo is not built")


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, proc: Daemon | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = proc.stderr()[-3000:] if proc is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


class Daemon:
    """A daemon subprocess with a file sink, its config in ``tmp``."""

    def __init__(self, tmp: Path, sources: list[str], extra: str = "", env: dict[str, str] | None = None,
                 http: str = "enabled = false") -> None:  # fmt: skip
        self.tmp, self.env = tmp, env or {}
        self.db, self.sink, self.down = tmp / "events.db", tmp / "sink.jsonl", tmp / "sink.down"
        self.prompts = tmp / "prompts.txt"
        if not self.prompts.exists():
            shutil.copy(DEMO / "prompts.txt", self.prompts)
        srcs = "".join(f'[[sources]]\nuri = "{uri}"\n' for uri in sources)
        (tmp / "runner.py").write_text(RUNNER)
        (tmp / "cfg.toml").write_text(f"""
[daemon]
name = "test-robot"
status_interval_s = 0.5
publish_retry_max_s = 0.5
[bundle]
path = "{DEMO}"
threads = 1
{srcs}
[prompts]
file = "prompts.txt"
[event_log]
path = "events.db"
[http]
{http}
[testsink]
enabled = true
path = "{self.sink}"
fail_file = "{self.down}"
{extra}""")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **self.env}
        self._err = open(self.tmp / f"stderr{time.monotonic_ns()}.log", "wb")
        cmd = [sys.executable, str(self.tmp / "runner.py"), "--config", str(self.tmp / "cfg.toml")]
        self.proc = subprocess.Popen(cmd, cwd=self.tmp, env=env, stderr=self._err, stdout=subprocess.DEVNULL)
        return self

    def stderr(self) -> str:
        return Path(self._err.name).read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._err.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._err.close()

    def logged_ids(self) -> list[int]:
        if not self.db.exists():
            return []
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as db:
            try:
                return [r[0] for r in db.execute("SELECT id FROM events ORDER BY id")]
            except sqlite3.OperationalError:  # tables not created yet
                return []

    def published(self) -> list[dict[str, Any]]:
        if not self.sink.exists():
            return []
        return [json.loads(line) for line in self.sink.read_text().splitlines() if line.endswith("}")]

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.tmp / "sink.jsonl.status").read_text())
        except (OSError, ValueError):
            return {}


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="eb-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class NotifySocket:
    """A fake systemd: collects every datagram sent to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path, self.messages = path, []  # type: ignore[var-annotated]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def lines(self) -> list[str]:
        return [line for m in list(self.messages) for line in m.splitlines()]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


SIM_FAST = "sim://demo?seed=1&pace=fast&streams=imu,audio&duration_s=3600"


def test_stream_notify_reload_and_drain(short_tmp: Path) -> None:
    notify = NotifySocket(short_tmp / "notify.sock")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    d = Daemon(short_tmp, [SIM_FAST], "[pipeline]\nlossless = true\n", env).start()
    try:
        wait_for(lambda: "READY=1" in notify.lines(), 90, "READY=1", d)
        wait_for(lambda: len(d.published()) >= 3, 90, "3 published events", d)
        event = d.published()[0]
        assert event["type"] == "event" and event["daemon"] == "test-robot" and isinstance(event["id"], int)
        assert {"label", "score", "margin", "modality", "stream", "start_ns", "latency_ms", "ts_ns"} <= set(event)
        # SIGHUP: a new prompt file is swapped in; a broken one is rejected and the old bank kept
        d.prompts.write_text("walking: a person walks across the room\n!quiet: a quiet room\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: d.status().get("prompts", {}).get("labels") == ["walking", "quiet"], 30, "reload", d)
        d.prompts.write_text("walking: a person walks |\n")
        d.signal(signal.SIGHUP)
        wait_for(lambda: "prompt reload (SIGHUP) rejected" in d.stderr(), 30, "rejected reload", d)
        time.sleep(1.0)
        assert d.status()["prompts"]["labels"] == ["walking", "quiet"]
        assert d.status()["counters"]["prompt_reload_failed"] == 1
        wait_for(lambda: "WATCHDOG=1" in notify.lines(), 10, "WATCHDOG=1", d)
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()
        notify.close()
    lines = notify.lines()
    assert any(line.startswith("STATUS=streaming 1 sources:") for line in lines), lines[:20]
    assert "STOPPING=1" in lines and "RELOADING=1" in lines
    err = d.stderr()
    assert "draining (stop requested)" in err and "stopped:" in err and "Traceback" not in err
    logged, published = d.logged_ids(), [e["id"] for e in d.published()]
    assert logged and published == logged  # drained: every logged event delivered, in order, once
    final = d.status()  # the last status, written after the drain
    pipe = final["pipeline"]
    assert final["running"] is False and pipe["windows_made"] > 0
    assert pipe["windows_made"] == pipe["windows"] + pipe["windows_dropped"] + pipe["windows_failed"]  # queue empty


def test_kill_9_then_restart_publishes_every_logged_event(tmp_path: Path) -> None:
    d = Daemon(tmp_path, [SIM_FAST], "[pipeline]\nlossless = true\n")
    d.down.touch()  # the sink is down: events pile up in the log
    d.start()
    try:
        wait_for(lambda: len(d.logged_ids()) >= 5, 90, "5 logged events", d)
        assert not d.published()
    finally:
        d.kill()
    before = d.logged_ids()
    d.down.unlink()
    d.start()
    try:
        wait_for(lambda: "INFO edgebind.daemon: streaming" in d.stderr(), 90, "streaming", d)
        wait_for(lambda: {e["id"] for e in d.published()} >= set(before), 60, "the backlog published", d)
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()
    after = d.logged_ids()
    assert after[: len(before)] == before  # nothing logged before the kill is missing
    ids = [e["id"] for e in d.published()]
    assert ids == after and len(set(ids)) == len(ids)  # every event exactly once here (no publish before the kill)
    assert "backlog {'testsink': " in d.stderr()
    # kill -9 again while the sink is up and publishing; restart: at least once, nothing missing
    d.start()
    try:
        wait_for(lambda: len(d.published()) >= len(ids) + 5, 90, "5 more published events", d)
    finally:
        d.kill()
    logged = d.logged_ids()
    d.start()
    try:
        wait_for(lambda: "INFO edgebind.daemon: streaming" in d.stderr(), 90, "streaming", d)
        wait_for(lambda: {e["id"] for e in d.published()} >= set(logged), 60, "everything published", d)
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()
    assert d.logged_ids()[: len(logged)] == logged
    assert {e["id"] for e in d.published()} == set(d.logged_ids())


class PtyLink:
    """A pty reached through a symlink, so the 'device' can be unplugged and plugged back."""

    def __init__(self, path: Path) -> None:
        self.path, self.master, self.slave = path, -1, -1
        self.plug()

    def plug(self) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        tmp = self.path.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        os.replace(tmp, self.path)

    def unplug(self) -> None:
        master, slave, self.master, self.slave = self.master, self.slave, -1, -1
        os.close(master)
        os.close(slave)


def feed_imu(link: PtyLink, stop: threading.Event, rate_hz: int = 400) -> None:
    """CSV IMU lines at ``rate_hz`` in 50 ms bursts; writes are skipped while unplugged."""
    line = b"0.1,0.2,9.8,0.01,0.02,0.03\n"
    while not stop.wait(0.05):
        try:
            if link.master >= 0:
                os.write(link.master, line * (rate_hz // 20))
        except OSError:
            continue


def sensor(d: Daemon) -> dict[str, Any]:
    sensors = d.status().get("sensors") or [{}]
    return sensors[0]


def test_serial_pty_disconnect_reported_then_recovered(tmp_path: Path) -> None:
    pytest.importorskip("serial", reason="pyserial is not installed")
    link = PtyLink(tmp_path / "imu")
    stop = threading.Event()
    feeder = threading.Thread(target=feed_imu, args=(link, stop), daemon=True)
    feeder.start()
    uri = f"serial://{link.path}?protocol=csv&columns=ax,ay,az,gx,gy,gz&rate_hz=400"
    d = Daemon(tmp_path, [uri]).start()
    try:
        wait_for(lambda: sensor(d).get("state") == "ok" and sensor(d)["stats"]["samples"].get("imu"), 90, "ok", d)
        link.unplug()
        wait_for(lambda: sensor(d).get("state") == "disconnected", 30, "disconnected state", d)
        assert sensor(d)["stats"]["errors"]["disconnect"] >= 1
        samples = sensor(d)["stats"]["samples"]["imu"]
        link.plug()
        wait_for(lambda: sensor(d).get("state") == "ok" and sensor(d)["stats"]["reconnects"] >= 1, 30, "recovery", d)
        wait_for(lambda: sensor(d)["stats"]["samples"]["imu"] > samples + 400, 30, "samples after recovery", d)
        assert d.stop() == 0
    finally:
        stop.set()
        if d.proc is not None and d.proc.poll() is None:
            d.kill()
        if link.master >= 0:
            link.unplug()
    err = d.stderr()
    assert "serial port failed" in err and "serial port reopened" in err and "Traceback" not in err


def test_mqtt_zenoh_http_with_sim_and_serial_sources(tmp_path: Path) -> None:
    """The issue's integration run: sim:// + pty serial in, events on mosquitto and Zenoh, metrics over HTTP."""
    pytest.importorskip("serial", reason="pyserial is not installed")
    pytest.importorskip("zenoh", reason="eclipse-zenoh is not installed")
    pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed")
    from tests.sinks_support import MOSQUITTO, MqttCollector, free_port, running_broker, zenoh_client, zenoh_get

    if MOSQUITTO is None:
        pytest.skip("mosquitto binary absent (apt-get install mosquitto)")
    import urllib.request

    link, stop = PtyLink(tmp_path / "imu"), threading.Event()
    threading.Thread(target=feed_imu, args=(link, stop), daemon=True).start()
    zport, hport, prefix = free_port(), free_port(), "edgebind/t1"
    serial_uri = f"serial://{link.path}?protocol=csv&columns=ax,ay,az,gx,gy,gz&rate_hz=400"
    with running_broker(tmp_path, shared=False) as (host, mport):
        mqtt = MqttCollector(host, mport, f"{prefix}/events/#")
        extra = (f'[pipeline]\nlossless = true\n[mqtt]\nenabled = true\nhost = "{host}"\nport = {mport}\n'
                 f'topic_prefix = "{prefix}"\n[zenoh]\nenabled = true\nlisten = ["tcp/127.0.0.1:{zport}"]\n'
                 f'key_prefix = "{prefix}"\n')  # fmt: skip
        d = Daemon(tmp_path, [SIM_FAST, serial_uri], extra, http=f"enabled = true\nport = {hport}").start()
        zenoh_events: list[dict[str, Any]] = []
        mqtt_ids: list[int] = []
        session = None
        try:
            wait_for(lambda: d.status().get("running"), 90, "streaming", d)
            session = wait_for(lambda: _try_zenoh(zenoh_client, zport), 30, "zenoh session", d)
            on_sample = lambda s: zenoh_events.append(json.loads(s.payload.to_bytes()))  # noqa: E731
            sub = session.declare_subscriber(f"{prefix}/events/**", on_sample)
            wait_for(lambda: _drain_ids(mqtt, mqtt_ids) >= 3, 90, "3 events over MQTT", d)
            wait_for(lambda: len(zenoh_events) >= 3, 90, "3 events over Zenoh", d)
            status = zenoh_get(session, f"{prefix}/status")
            assert status and status[0][1]["daemon"] == "test-robot"
            assert {s["uri"] for s in status[0][1]["sensors"]} == {SIM_FAST, serial_uri}
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{hport}/metrics", timeout=5).read().decode()
            assert "edgebind_stage_latency_seconds_bucket" in metrics and "edgebind_sink_published" in metrics
            assert urllib.request.urlopen(f"http://127.0.0.1:{hport}/healthz", timeout=5).status == 200
            sub.undeclare()
            assert d.stop() == 0
        finally:
            stop.set()
            if session is not None:
                session.close()
            mqtt.close()
            if d.proc is not None and d.proc.poll() is None:
                d.kill()
            link.unplug()
    logged = set(d.logged_ids())
    assert set(mqtt_ids) <= logged and {e["id"] for e in zenoh_events} <= logged
    assert all(e["type"] == "event" for e in zenoh_events)


def _try_zenoh(open_client: Callable[[int], Any], port: int) -> Any:
    try:
        return open_client(port)
    except Exception:  # the daemon's listener is not up yet
        return None


def _drain_ids(mqtt: Any, got: list[int]) -> int:
    """Move the events the MQTT collector received into ``got``; how many there are."""
    while True:
        try:
            _, event = mqtt.get_json(timeout=0.1)
        except Exception:  # queue.Empty: nothing more for now
            return len(got)
        got.append(event["id"])


# -- in-process: control swaps a real bank; an encoder failure restarts only that backend ----------
def test_control_prompts_set_swaps_the_running_bank(tmp_path: Path) -> None:
    from runtime.daemon import Daemon as DaemonRun
    from runtime.daemon_config import load_config

    cfg_path = tmp_path / "cfg.toml"
    cfg_path.write_text(f"""[bundle]\npath = "{DEMO}"\nthreads = 1\n[[sources]]\nuri = "{SIM_FAST}"\n
[prompts]\nfile = "{DEMO / 'prompts.txt'}"\n[event_log]\npath = "ev.db"\n[http]\nenabled = false\n
[control]\nenabled = true\n[listsink]\nenabled = true\n""")
    cfg = load_config(cfg_path, extra_sinks=("listsink",), environ={"EDGEBIND_TOKEN": TOKEN})
    daemon = DaemonRun(cfg, {"listsink": ListSink})
    daemon.start()
    try:
        reply = daemon.control.handle({"op": "prompts.set", "prompts": ["fall: a person falls down", "a dog"],
                                       "token": TOKEN})  # fmt: skip
        assert reply == {"ok": True, "prompts": 2, "labels": ["fall", "a dog"]}
        assert daemon.control.handle({"op": "prompts.set", "prompts": ["x"], "token": "nope"})["ok"] is False
        status = daemon.control.handle({"op": "status"})["status"]
        assert status["prompts"] == {"labels": ["fall", "a dog"], "origin": "control"}
        assert status["counters"]["control_rejected_unauthorised"] == 1
        assert daemon.control.handle({"op": "prompts.get"})["prompts"][1]["templates"] == ["a dog"]
    finally:
        assert daemon.shutdown() == 0


def test_watchdog_pings_only_while_inference_makes_progress(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.daemon import Daemon as DaemonRun
    from runtime.daemon_config import load_config

    notify = NotifySocket(short_tmp / "n.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    cfg_path = short_tmp / "cfg.toml"
    cfg_path.write_text(f"""[bundle]\npath = "{DEMO}"\nthreads = 1\n[[sources]]\nuri = "{SIM_FAST}"\n
[prompts]\nfile = "{DEMO / 'prompts.txt'}"\n[event_log]\npath = "ev.db"\n[http]\nenabled = false\n
[pipeline]\nlossless = true\n""")
    daemon = DaemonRun(load_config(cfg_path))
    daemon.start()
    gate, real = threading.Event(), daemon.embedder.embed  # type: ignore[union-attr]
    gate.set()
    daemon.embedder.embed = lambda mod, x: gate.wait() and real(mod, x)  # type: ignore[method-assign,union-attr]
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()))
    runner.start()
    pings = lambda: notify.lines().count("WATCHDOG=1")  # noqa: E731
    try:
        wait_for(lambda: pings() >= 3, 10, "watchdog pings")
        gate.clear()  # the inference thread hangs in its next encoder call
        time.sleep(0.5)
        frozen = pings()
        time.sleep(1.0)
        assert pings() == frozen, "pinged although inference made no progress"
        gate.set()
        wait_for(lambda: pings() > frozen, 5, "pings after progress resumed")
    finally:
        gate.set()
        signal.raise_signal(signal.SIGTERM)  # the daemon's handler: drain and stop
        runner.join(60)
        daemon.close()  # from the main thread: restores pytest's signal handlers
        notify.close()
    assert codes == [0]


def test_backend_failure_restarts_that_modality_only() -> None:
    from runtime.embedder import Embedder
    from runtime.manifest import load_manifest
    from runtime.matching import MatchConfig
    from runtime.pipeline import Pipeline, PipelineConfig
    from runtime.prompts import load_prompt_file
    from runtime.stream import prompt_bank
    from runtime.types import Modality

    class FlakyEmbedder(Embedder):
        failures_left = 3

        def embed(self, modality: Modality, x: Any) -> Any:
            if modality is Modality.AUDIO and self.failures_left > 0:
                self.failures_left -= 1
                raise RuntimeError("simulated ONNX Runtime failure")
            return super().embed(modality, x)

    manifest = load_manifest(DEMO)
    embedder = FlakyEmbedder(manifest, "ort", "fp32", max_batch=4, intra_op_threads=1)
    bank = prompt_bank(embedder, load_prompt_file(DEMO / "prompts.txt"))
    uri = "sim://demo?seed=2&pace=fast&streams=imu,audio&duration_s=20"
    pipe = Pipeline(manifest, [uri], bank, MatchConfig(), PipelineConfig(lossless=True, batch_max=2), embedder=embedder)
    status = pipe.run(120)
    embedder.close()
    counters = pipe.backend_counters()
    assert counters["backend_failures"] == {"audio": 3} and counters["backend_restarts"]["audio"] >= 1
    by_mod = {s.modality: s for s in status.streams}
    assert by_mod["audio"].windows_failed >= 3 and by_mod["audio"].windows_done > 0
    assert by_mod["imu"].windows_failed == 0 and by_mod["imu"].windows_done > 0
    assert not any(e.startswith("inference:") for e in status.errors)


# -- control: fuzzed requests never crash the handler ---------------------------------------------
class FakeTarget:
    """A ControlTarget recording the prompts it was given."""

    def __init__(self) -> None:
        self.labels = ["a"]

    def status(self) -> dict[str, Any]:
        return {"line": "ok"}

    def prompts(self) -> list[dict[str, Any]]:
        return [{"label": label} for label in self.labels]

    def set_prompts(self, prompts: tuple[Prompt, ...], origin: str) -> dict[str, Any]:
        self.labels = [p.label for p in prompts]
        return {"prompts": len(prompts)}

    def reload_prompts(self, origin: str) -> dict[str, Any]:
        return {"prompts": len(self.labels)}

    def parse_prompts(self, lines: list[str], where: str) -> tuple[Prompt, ...]:
        from runtime.daemon_config import prompts_from_lines

        return prompts_from_lines(lines, where)


def test_control_token_and_ops() -> None:
    target = FakeTarget()
    off = ControlHandler(target)
    assert off.handle({"op": "status"}) == {"ok": True, "status": {"line": "ok"}}
    assert off.handle({"op": "prompts.reload", "token": TOKEN})["error"].startswith("remote control is disabled")
    on = ControlHandler(target, enabled=True, token=TOKEN)
    assert on.handle({"op": "prompts.set", "prompts": ["x: y"], "token": "wrong"}) == {
        "ok": False, "error": "missing or wrong token"}  # fmt: skip
    reply = on.handle({"op": "prompts.set", "text": "dog: a dog\ncat: a cat\n", "token": TOKEN, "id": 7})
    assert reply == {"ok": True, "prompts": 2, "id": 7} and target.labels == ["dog", "cat"]
    bad = on.handle({"op": "prompts.set", "prompts": ["x [threshold=9]: y"], "token": TOKEN})
    assert not bad["ok"] and bad["error"].startswith("prompts.set:1: threshold 9") and target.labels == ["dog", "cat"]
    got = json.loads(on.handle_bytes(b'{"op": "prompts.get"}'))
    assert got == {"ok": True, "prompts": [{"label": "dog"}, {"label": "cat"}]}
    assert on.counters() == {"ok": 2, "rejected_unauthorised": 1, "rejected_bad_prompts": 1}


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["int", "float", "str", "bool", "none", "list", "dict", "big"] if depth < 3 else ["int", "str"]
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -1, 2**63, rng.randint(-10**6, 10**6)])
    if kind == "float":
        return rng.choice([float("nan"), float("inf"), rng.uniform(-1e9, 1e9)])
    if kind == "str":
        return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 20)))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "none":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "big":
        return "x" * rng.choice([10, 70_000])
    return random_request(rng, depth + 1)


def random_request(rng: random.Random, depth: int = 0) -> dict[Any, Any]:
    keys = ["op", "token", "prompts", "text", "id", "extra", "", "op\0"]
    out: dict[Any, Any] = {}
    for key in rng.sample(keys, rng.randint(0, 4)):
        out[key] = random_value(rng, depth + 1)
    if rng.random() < 0.6:
        out["op"] = rng.choice(["status", "prompts.get", "prompts.set", "prompts.reload", "nope", 3, None])
    if rng.random() < 0.5:
        out["token"] = rng.choice([TOKEN, "bad", None, TOKEN + "x"])
    if rng.random() < 0.3:
        out["prompts"] = rng.choice([["a: b"], ["a: b", "a: c"], [""], [1], "a", ["!bg: x"]])
    return out


def test_fuzzed_control_messages_never_crash() -> None:
    rng = random.Random(1234)
    handler = ControlHandler(FakeTarget(), enabled=True, token=TOKEN)
    for _ in range(3000):
        roll = rng.random()
        if roll < 0.5:
            reply = handler.handle(random_request(rng))
        elif roll < 0.8:
            raw = json.dumps(random_request(rng), default=str).encode()
            cut = raw[: rng.randint(0, len(raw))] if rng.random() < 0.3 else raw
            reply = json.loads(handler.handle_bytes(cut))
        elif roll < 0.9:
            reply = json.loads(handler.handle_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))))
        else:
            reply = handler.handle(random_value(rng))
        assert isinstance(reply, dict) and isinstance(reply["ok"], bool)
        assert reply["ok"] or (isinstance(reply["error"], str) and "\n" not in reply["error"])
    counts = handler.counters()
    assert counts["ok"] > 100 and sum(v for k, v in counts.items() if k.startswith("rejected_")) > 1000
    assert "rejected_internal" not in counts, counts
    assert json.loads(handler.handle_bytes(b"[" * 100_000))["error"].startswith("request of 100000 bytes")
    assert json.loads(handler.handle_bytes(b"[" * 60_000))["error"].startswith("not JSON")  # too deep


# -- soak: four sim streams, bounded memory -------------------------------------------------------
def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_soak_four_streams_bounded_memory(tmp_path: Path) -> None:
    duration_s = float(os.environ.get("EDGEBIND_SOAK_S", "150"))
    mixes = ("imu,audio,thermal", "imu,audio,depth", "imu,audio", "audio,thermal")
    sources = [f"sim://demo?seed={i}&streams={mix}&duration_s=3600" for i, mix in enumerate(mixes)]
    d = Daemon(tmp_path, sources).start()
    samples: list[tuple[float, int]] = []
    try:
        wait_for(lambda: d.status().get("running"), 90, "streaming", d)
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration_s:
            assert d.proc is not None and d.proc.poll() is None, d.stderr()[-3000:]
            samples.append((time.monotonic() - t0, rss_kb(d.proc.pid)))
            time.sleep(5)
        status = d.status()
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()
    warm = [kb for t, kb in samples if t >= 30] or [kb for _, kb in samples]
    growth_mb = (max(warm) - warm[0]) / 1024
    pipe = status["pipeline"]
    print(f"soak {duration_s:.0f} s: RSS MB {[round(kb / 1024) for _, kb in samples]}, growth after 30 s "
          f"{growth_mb:.1f} MB, windows {pipe['windows']} dropped {pipe['windows_dropped']} events {pipe['events']}")
    assert growth_mb < 30, (growth_mb, samples)
    assert status["pipeline"]["windows"] > 100 and all(s["state"] == "ok" for s in status["sensors"]), status
    assert d.logged_ids() and [e["id"] for e in d.published()] == d.logged_ids()
