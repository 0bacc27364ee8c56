"""``python -m runtime.stream``: JSON lines, one-line errors (exit 2), SIGINT, --demo, no torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import runtime.stream_demo as demo
from runtime.stream import main

ROOT = Path(__file__).resolve().parents[1]
EVENT_KEYS = {"type", "label", "score", "margin", "modality", "source", "stream", "start_ns", "end_ns",
              "start_s", "end_s", "latency_ms"}  # fmt: skip
PROMPTS = "a person walks;a person falls down;glass breaks"


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_follow_the_schema(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = "sim://fall?pace=fast&duration_s=7&streams=imu,audio"
    rc = main(["--bundle", str(tiny_bundle), "--source", uri, "--prompts", PROMPTS, "--json", "--lossless",
               "--enter", "-1", "--exit", "-1", "--cooldown", "0", "--top-k", "2"])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.err
    rows = _json_lines(out.out)
    events, summary = rows[:-1], rows[-1]
    assert events and all(r["type"] == "event" and set(r) == EVENT_KEYS for r in events)
    for r in events:
        assert r["label"] in PROMPTS.split(";") and r["source"] == uri and r["modality"] in {"imu", "audio"}
        assert r["end_ns"] > r["start_ns"] and 0 <= r["start_s"] < r["end_s"] < 10 and r["latency_ms"] >= 0
        assert isinstance(r["score"], float) and isinstance(r["margin"], float)
    assert summary["type"] == "summary" and summary["interrupted"] is False and summary["ended"] == "sources"
    by = {s["key"]: s for s in summary["streams"]}
    assert by["imu"]["windows_done"] == 3 and by["audio"]["windows_done"] == 6  # (7-5)/1+1, (7-2)/1+1
    assert summary["windows"] == 9 == summary["windows_made"] and summary["windows_dropped"] == 0
    assert summary["events"] == len(events) == sum(summary["events_by_label"].values())
    assert summary["latency_ms"]["total"]["count"] == 9 and summary["latency_ms"]["total"]["p99_ms"] >= 0
    assert all(len(s["top"]) == 2 for s in summary["streams"])


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err


def test_errors_are_one_line_and_exit_2(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = ["--source", "sim://fall?pace=fast&duration_s=6&streams=imu"]
    bundle = ["--bundle", str(tiny_bundle)]
    _one_line_error(capsys, ["--bundle", str(tmp_path / "nope"), *src, "--prompts", "a"], "no manifest")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    _one_line_error(capsys, [*bundle, *src, "--prompt-file", str(empty)], "empty.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("fall [thresh=0.3]: a person falls\n")
    _one_line_error(capsys, [*bundle, *src, "--prompt-file", str(bad)], "bad.txt:1")
    _one_line_error(capsys, [*bundle, *src, "--prompts", " ; "], "no prompts")
    _one_line_error(capsys, [*bundle, "--source", "foo://x", "--prompts", "a"], "unknown source scheme")
    _one_line_error(capsys, [*bundle, *src], "--prompts")


def test_a_source_the_bundle_lacks_is_an_error_before_start(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    manifest["modalities"] = {k: v for k, v in manifest["modalities"].items() if k in ("text", "audio")}
    for item in tiny_bundle.iterdir():
        if item.name != "manifest.json":
            (tmp_path / item.name).symlink_to(item)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    argv = ["--bundle", str(tmp_path), "--source", "sim://fall?pace=fast&streams=imu", "--prompts", "a fall"]
    _one_line_error(capsys, argv, "sim://fall", "imu: imu", "bundle encoders: audio")


def _env(tiny_bundle: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "EDGEBIND_TEST_BUNDLE": str(tiny_bundle)}


def test_sigint_stops_cleanly_with_a_summary(tiny_bundle: Path) -> None:
    cmd = [sys.executable, "-m", "runtime.stream", "--bundle", str(tiny_bundle), "--json", "--source",
           "sim://demo?pace=realtime&streams=audio", "--prompts", PROMPTS, "--enter", "-1", "--exit", "-1"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(tiny_bundle), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        first = proc.stdout.readline()  # the first event (first audio window after ~2 s)
        assert json.loads(first)["type"] == "event"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    summary = _json_lines(rest)[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is True and summary["windows"] >= 1
    assert summary["ended"] == "interrupted"
    assert "Traceback" not in err


def test_runtime_never_imports_torch(tiny_bundle: Path) -> None:
    code = (
        "import sys\nfrom runtime.stream import main\n"
        f"rc = main(['--bundle', {str(tiny_bundle)!r}, '--source', 'sim://fall?pace=fast&duration_s=6&streams=imu,depth',"
        " '--prompts', 'a;b', '--json', '--lossless'])\n"
        "assert rc == 0, rc\nassert 'torch' not in sys.modules, 'torch imported'\nprint('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=_env(tiny_bundle),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr


def test_demo_without_a_bundle_says_how_to_make_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "DEMO_BUNDLE", Path("no-such-dir") / "demo")
    assert main(["--demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bash scripts/demo_bundle.sh" in err


def test_demo_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bundle = ROOT / "bundles" / "demo" / "manifest.json"
    if not bundle.is_file():  # the CI path without the demo bundle: the one-line hint
        assert main(["--demo"]) == 2
        assert "bash scripts/demo_bundle.sh" in capsys.readouterr().err
        return
    lines: list[str] = []
    assert demo.run_demo(duration_s=10.0, out=lines.append) == 0
    text = "\n".join(lines)
    if json.loads(bundle.read_text())["source"].get("random_weights"):
        assert "RANDOM weights" in text and "chance-level" in text
    assert "ground truth" in text and "walking" in text  # the timeline of sim://demo's first 10 s
    assert any(line.startswith("overall") for line in lines)
    assert "sensor-to-event latency" in text
