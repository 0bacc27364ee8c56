"""The daemon's TOML config: every problem one line ``section.key: ...``, all listed, exit 2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from runtime.daemon import main
from runtime.daemon_config import ConfigProblems, load_config, prompts_from_lines
from runtime.errors import EdgebindError

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bundles" / "demo"
HAS_SINKS = importlib.util.find_spec("runtime.sinks") is not None
TOKEN = "0123456789abcdef0123"


def minimal(tmp_path: Path, extra: str = "", prompts: str | None = None) -> str:
    prompts = prompts if prompts is not None else f'[prompts]\nfile = "{DEMO / "prompts.txt"}"\n'
    return (f'[bundle]\npath = "{DEMO}"\n[[sources]]\nuri = "sim://demo?pace=fast"\n{prompts}'
            f'[event_log]\npath = "{tmp_path / "ev.db"}"\n{extra}')  # fmt: skip


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, **kw: object) -> list[str]:
    with pytest.raises(ConfigProblems) as info:
        load_config(write(tmp_path, text), **kw)  # type: ignore[arg-type]
    return info.value.lines


def one(lines: list[str], prefix: str) -> str:
    hits = [line for line in lines if line.startswith(prefix)]
    assert len(hits) == 1, (prefix, lines)
    assert "\n" not in hits[0]
    return hits[0]


def test_minimal_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("a dog\n")
    text = minimal(tmp_path, prompts='[prompts]\nfile = "p.txt"\ncache_dir = "cache"\n')
    cfg = load_config(write(tmp_path, text))
    assert cfg.bundle.path == DEMO and cfg.bundle.backend == "ort" and cfg.bundle.precision == "fp32"
    assert cfg.prompts.file == tmp_path / "p.txt" and cfg.prompts.cache_dir == tmp_path / "cache"
    assert cfg.sources[0].uri == "sim://demo?pace=fast" and cfg.event_log.synchronous == "full"
    assert not cfg.control.enabled and cfg.http.host == "127.0.0.1" and cfg.enabled_sinks() == []
    assert cfg.matching.enter_threshold == 0.25 and cfg.pipeline.queue_windows == 64


def test_committed_example_passes_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(REPO / "deploy" / "edgebind.toml"), "--check"]) == 0
    assert "ok (1 sources" in capsys.readouterr().out


def test_every_problem_listed_one_line_each(tmp_path: Path) -> None:
    text = f"""
[bundle]
path = "{DEMO}"
precision = "fp64"
threads = -1
colour = "red"
[[sources]]
uri = "bogus://x"
[[sources]]
name = "no uri"
[prompts]
file = "{DEMO / "prompts.txt"}"
list = ["a"]
[matching]
enter_threshold = "high"
top_kk = 3
[pipeline]
backend = "ort"
batch_max = 2.5
[event_log]
path = "{tmp_path / "ev.db"}"
max_events = 5
[http]
port = 70000
[control]
enabled = "yes"
[daemon]
log_level = "loud"
status_interval_s = 0
[robot]
x = 1
"""
    lines = problems(tmp_path, text)
    expected = {
        "bundle.precision": "'fp64' is not one of fp32, fp16, int8",
        "bundle.threads": "integer >= 0",
        "bundle.colour": "unknown key; valid keys: path, backend",
        "sources[0].uri": "unknown source scheme 'bogus'",
        "sources[1].uri": "missing; it is required",
        "prompts:": "exactly one of prompts.file",
        "matching.enter_threshold": "expected a number",
        "matching.top_kk": "unknown key",
        "pipeline.backend": "set it in [bundle]",
        "pipeline.batch_max": "expected an integer",
        "event_log.max_events": "integer >= 10",
        "http.port": "<= 65535",
        "control.enabled": "expected true or false",
        "daemon.log_level": "'loud' is not one of debug",
        "daemon.status_interval_s": "positive number",
        "robot:": "unknown section; valid sections:",
    }
    for prefix, fragment in expected.items():
        assert fragment in one(lines, prefix), (prefix, lines)
    assert len(lines) == len(expected), lines


def test_cli_prints_each_problem_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, minimal(tmp_path, "[http]\nport = 0\nbind = 1\n"))
    assert main(["--config", str(path), "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"{path}: http.port: ") and err[1].startswith(f"{path}: http.bind: unknown key")
    assert err[-1] == f"{path}: 2 problem(s); nothing started"


def test_missing_file_and_bad_toml_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigProblems) as info:
        load_config(tmp_path / "nope.toml")
    assert len(info.value.lines) == 1 and "cannot read the config file" in info.value.lines[0]
    lines = problems(tmp_path, "[bundle\npath = 1\n")
    assert len(lines) == 1 and lines[0].startswith("invalid TOML:") and "line 1" in lines[0]


def test_required_sections_and_missing_bundle(tmp_path: Path) -> None:
    lines = problems(tmp_path, f'[bundle]\npath = "{tmp_path}"\n')
    one(lines, "bundle.path: ")
    one(lines, "sources: no [[sources]]")
    one(lines, "prompts: give exactly one")
    one(lines, "event_log.path: missing")
    assert len(lines) == 4, lines


def test_bad_prompt_file_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("ok: fine\nlabel [threshold=7]: x\n")
    lines = problems(tmp_path, minimal(tmp_path, prompts=f'[prompts]\nfile = "{bad}"\n'))
    assert f"{bad}:2: threshold 7 must be in [-1, 1]" in one(lines, "prompts.file: ")
    lines = problems(tmp_path, minimal(tmp_path, prompts='[prompts]\nlist = ["a: x", "a: y"]\n'))
    assert "prompts.list:2: duplicate label 'a'" in one(lines, "prompts.list: ")


def test_inline_prompt_lines_parse_like_a_file() -> None:
    prompts = prompts_from_lines(["glass: glass breaks | shattering", "a dog", "!bg: silence"], "x")
    assert [p.label for p in prompts] == ["glass", "a dog", "bg"] and prompts[2].background
    with pytest.raises(EdgebindError, match=r"^where:1: empty template"):
        prompts_from_lines(["a: x |"], "where")


def test_matching_cross_field_check_is_one_line(tmp_path: Path) -> None:
    lines = problems(tmp_path, minimal(tmp_path, "[matching]\nenter_threshold = 0.1\nexit_threshold = 0.3\n"))
    assert len(lines) == 1 and lines[0].startswith("matching: "), lines


def test_control_needs_a_long_token(tmp_path: Path) -> None:
    text = minimal(tmp_path, "[control]\nenabled = true\n")
    missing = one(problems(tmp_path, text, environ={}), "control.")
    assert missing.startswith("control.token_env: control is enabled but the token")
    short = problems(tmp_path, text, environ={"EDGEBIND_TOKEN": "short"})
    assert len(short) == 1 and short[0].startswith("control.token_env")
    cfg = load_config(write(tmp_path, text), environ={"EDGEBIND_TOKEN": TOKEN})
    assert cfg.control.enabled and cfg.control.token == TOKEN and TOKEN not in repr(cfg)
    (tmp_path / "tok").write_text(TOKEN + "\n")
    cfg = load_config(write(tmp_path, minimal(tmp_path, '[control]\nenabled = true\ntoken_file = "tok"\n')))
    assert cfg.control.token == TOKEN
    lines = problems(tmp_path, minimal(tmp_path, '[control]\nenabled = true\ntoken_file = "missing"\n'))
    assert lines[0].startswith("control.token_file: cannot read")


def test_disabled_control_ignores_the_token(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, minimal(tmp_path, "[control]\nenabled = false\n")), environ={})
    assert not cfg.control.enabled and cfg.control.token == ""


def test_sinks_validated_or_unavailable(tmp_path: Path) -> None:
    lines = problems(tmp_path, minimal(tmp_path, '[zenoh]\nenabled = true\nbogus_key = 1\n[mqtt]\nenabled = "no"\n'))
    one(lines, "mqtt.enabled: expected true or false")
    zenoh = [line for line in lines if line.startswith("zenoh")]
    assert zenoh, lines
    if not HAS_SINKS:
        assert zenoh == ["zenoh.enabled: sink zenoh unavailable (runtime.sinks is not installed); set enabled = false"]
    cfg = load_config(write(tmp_path, minimal(tmp_path, "[zenoh]\nenabled = false\n")))
    assert cfg.enabled_sinks() == [] and cfg.zenoh == {"enabled": False}


def test_extra_sink_tables_accepted_when_registered(tmp_path: Path) -> None:
    text = minimal(tmp_path, '[testsink]\nenabled = true\npath = "x"\n')
    assert one(problems(tmp_path, text), "testsink: unknown section")
    cfg = load_config(write(tmp_path, text), extra_sinks=("testsink",))
    assert cfg.enabled_sinks() == ["testsink"] and cfg.sinks["testsink"]["path"] == "x"


def test_sources_need_distinct_names(tmp_path: Path) -> None:
    text = minimal(tmp_path, '[[sources]]\nuri = "sim://demo?pace=fast"\n')
    assert "duplicate source" in one(problems(tmp_path, text), "sources[1].name")
    text = f'sources = "sim://demo"\n[bundle]\npath = "{DEMO}"\n[prompts]\nlist = ["a"]\n[event_log]\npath = "e.db"\n'
    assert problems(tmp_path, text) == [
        'sources: expected an array of tables; write each source as [[sources]] uri = "..."'
    ]


def test_systemd_unit_has_the_service_contract() -> None:
    unit = (REPO / "deploy" / "edgebind.service").read_text()
    keys = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert keys["Type"] == "notify" and keys["NotifyAccess"] == "main" and keys["Restart"] == "on-failure"
    assert keys["WatchdogSec"].endswith("s") and keys["RestartPreventExitStatus"] == "2"
    assert set(keys["SupplementaryGroups"].split()) == {"dialout", "audio", "video", "plugdev"}
    assert "-m runtime.daemon --config " in keys["ExecStart"] and keys["ExecReload"] == "/bin/kill -HUP $MAINPID"
    unit_section = unit.split("[Service]")[0]
    assert "StartLimitBurst=" in unit_section and "StartLimitIntervalSec=" in unit_section
