"""``python -m benchmarks.stream`` end to end on bundles/demo (3 s of data): report keys, hook accounting, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.stream import TimedHook, hook_cost

ROOT = Path(__file__).resolve().parents[1]
CONFIG_KEYS = {"real_time_factor_median", "real_time_factor_min", "real_time_factor_max", "windows_done_fast",
               "windows_done_live", "windows_dropped_live", "latency_p50_ms_live", "latency_p99_ms_live",
               "fused_events_fast", "fused_events_live", "fused_latency_p50_ms_live", "windows_stored_fast",
               "windows_stored_live"}  # fmt: skip


def test_stream_bench_measures_both_configurations(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "benchmarks.stream", "--seconds", "3", "--repeats", "1", "--out", str(tmp_path)]
    done = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]  # 1 when torch was imported
    (report_json,) = tmp_path.glob("stream-*.json")
    assert report_json.with_suffix(".md").is_file()
    r = json.loads(report_json.read_text())
    assert r["torch_imported"] is False and r["prompts"] == "bundles/demo/prompts.txt"
    assert len(r["loadavg_start"]) == len(r["loadavg_end"]) == 3
    assert set(r["configs"]) == {"plain", "hooks"} and all(set(c) == CONFIG_KEYS for c in r["configs"].values())
    assert [(x["config"], x["pace"]) for x in r["runs"]] == [("plain", "fast"), ("hooks", "fast"),
                                                             ("plain", "realtime"), ("hooks", "realtime")]  # fmt: skip
    for run in r["runs"]:
        assert run["windows_done"] > 20 and run["real_time_factor"] > 0 and not run["errors"]
        if run["config"] == "plain":
            assert run["hook_cost"] == {} and run["windows_stored"] is None and run["fused_events"] is None
            continue
        assert run["windows_stored"] == run["windows_kept"] == run["windows_done"]
        assert run["fused_events"] >= 0
        for name in ("all", "fusion", "memory"):
            cost = run["hook_cost"][name]
            assert cost["calls"] == run["windows_done"] and 0 < cost["p50_us"] <= cost["p99_us"] <= cost["max_us"]
            assert 0 < cost["share_pct"] < 100
    plain, hooks = r["configs"]["plain"], r["configs"]["hooks"]
    assert plain["windows_done_fast"] == hooks["windows_done_fast"] == hooks["windows_stored_fast"]
    assert plain["windows_dropped_live"] == 0  # lossless at real-time pace on any machine that runs the suite


def test_timed_hook_times_every_call_even_when_the_hook_raises() -> None:
    seen: list[str] = []

    def hook(key: str, *_: object) -> None:
        seen.append(key)
        if key == "bad":
            raise ValueError(key)

    timed = TimedHook(hook)
    vec = np.zeros(4, np.float32)
    timed("a", "imu", 0, 1, vec)
    with pytest.raises(ValueError, match="bad"):
        timed("bad", "imu", 0, 1, vec)
    assert seen == ["a", "bad"] and len(timed.durations_ns) == 2 and min(timed.durations_ns) >= 0
    cost = hook_cost([1_000, 3_000, 2_000], wall_s=1e-3)
    assert cost["calls"] == 3 and cost["p50_us"] == 2.0 and cost["max_us"] == 3.0 and cost["share_pct"] == 0.6
    assert hook_cost([], 1.0)["p50_us"] is None
