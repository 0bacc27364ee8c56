"""The SQLite event log: append/pending/mark/prune, restart, two threads, and kill -9 mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from runtime.eventlog import EventLog

REPO = Path(__file__).resolve().parents[1]


def ev(i: int) -> dict[str, object]:
    return {"type": "event", "label": f"l{i}", "score": 0.5}


def test_append_pending_mark_and_cursor(tmp_path: Path) -> None:
    with EventLog(tmp_path / "ev.db", sinks=("a", "b")) as log:
        assert log.journal_mode == "wal"
        ids = [log.append(ev(i)) for i in range(5)]
        assert ids == [1, 2, 3, 4, 5]
        assert [i for i, _ in log.pending("a")] == ids
        first = next(iter(log.pending("a")))
        assert first == (1, {"type": "event", "label": "l0", "score": 0.5, "id": 1})
        log.mark_published("a", 3)
        log.mark_published("a", 2)  # never backwards
        assert log.cursor("a") == 3 and [i for i, _ in log.pending("a", limit=1)] == [4]
        assert log.unpublished() == {"a": 2, "b": 5}
        assert [e["id"] for e in log.events(after=3)] == [4, 5]


def test_restart_keeps_events_cursors_status_counters(tmp_path: Path) -> None:
    path = tmp_path / "ev.db"
    with EventLog(path, sinks=("a",)) as log:
        for i in range(4):
            log.append(ev(i))
        log.mark_published("a", 2)
        log.put_status("daemon", {"line": "ok"})
        log.set_counters({"starts": 1, "events_logged": 4})
    with EventLog(path, sinks=("a", "new")) as log:
        assert log.count() == 4 and log.cursor("a") == 2
        assert log.cursor("new") == 4  # a sink seen for the first time starts after the newest row
        assert log.status() == {"daemon": {"line": "ok"}}
        assert log.counters() == {"starts": 1, "events_logged": 4}
        assert log.append(ev(9)) == 5


def test_prune_deletes_the_oldest_published_rows(tmp_path: Path) -> None:
    with EventLog(tmp_path / "ev.db", max_events=10, sinks=("a",)) as log:
        for i in range(30):
            log.append(ev(i))
        log.mark_published("a", 25)
        assert log.prune() == 20 and log.count() == 10
        assert [e["id"] for e in log.events()] == list(range(21, 31))
        assert "events_pruned_unpublished" not in log.counters()


def test_prune_past_a_lagging_sink_counts_the_loss(tmp_path: Path) -> None:
    with EventLog(tmp_path / "ev.db", max_events=10, sinks=("a",)) as log:
        for i in range(30):
            log.append(ev(i))
        log.mark_published("a", 5)
        log.prune()
        assert log.count() == 10 and log.counters()["events_pruned_unpublished"] == 15
        assert next(i for i, _ in log.pending("a")) == 21


def test_prune_runs_automatically_without_sinks(tmp_path: Path) -> None:
    with EventLog(tmp_path / "ev.db", max_events=10) as log:
        for i in range(200):
            log.append(ev(i))
        assert log.count() <= 10 + 64


def test_two_threads_append_and_publish(tmp_path: Path) -> None:
    n = 400
    got: list[int] = []
    with EventLog(tmp_path / "ev.db", sinks=("s",), synchronous="normal") as log:
        done = threading.Event()

        def publish() -> None:
            while not (done.is_set() and not log.unpublished()["s"]):
                for event_id, event in log.pending("s", limit=32):
                    assert event["label"] == f"l{event_id - 1}"
                    got.append(event_id)
                    log.mark_published("s", event_id)
                time.sleep(0.001)

        publisher = threading.Thread(target=publish)
        publisher.start()
        for i in range(n):
            log.append(ev(i))
        done.set()
        publisher.join(30)
    assert got == list(range(1, n + 1))


WRITER = """
import sys
from runtime.eventlog import EventLog
log = EventLog(sys.argv[1], sinks=("s",))
i = 0
while True:
    event_id = log.append({"type": "event", "label": "x", "seq": i})
    print(event_id, flush=True)
    i += 1
"""


def test_kill_9_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "ev.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(path)], stdout=subprocess.PIPE,
                            env=env, text=True)  # fmt: skip
    assert proc.stdout is not None
    committed = []
    for line in proc.stdout:
        committed.append(int(line))
        if len(committed) >= 300:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with EventLog(path, sinks=("s",)) as log:
        stored = [e["id"] for e in log.events(limit=100_000)]
        assert stored[: len(committed)] == committed  # every acknowledged append survived
        assert stored == list(range(1, len(stored) + 1))
        assert [i for i, _ in log.pending("s", limit=5)] == [1, 2, 3, 4, 5]  # nothing was published


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EventLog(tmp_path / "x.db", max_events=1)
    with pytest.raises(ValueError):
        EventLog(tmp_path / "x.db", synchronous="off")
