"""The daemon's TOML configuration: parse, then validate every table and key before anything starts.

Every problem becomes one line ``section.key: problem; what to do`` and all of them are
listed at once (:class:`ConfigProblems`), so a robot operator fixes the file in one go.
Relative paths resolve against the config file's directory (systemd starts us in ``/``).
Sections (see ``deploy/edgebind.toml`` for a commented example)::

    [daemon]      name, status_interval_s, drain_timeout_s, publish_retry_max_s, source_wait_s, log_level
    [bundle]      path (required), backend, precision, threads
    [[sources]]   uri (required), name            (repeatable, at least one)
    [prompts]     file | list, cache_dir            (exactly one of file and list)
    [matching]    runtime.matching.MatchConfig fields
    [pipeline]    runtime.pipeline_plan.PipelineConfig fields (backend/precision/threads live in [bundle])
    [event_log]   path, max_events, synchronous
    [control]     enabled, token_env | token_file
    [http]        enabled, host, port, allow_remote
    [fusion]      enabled, file, publish_single           (runtime.daemon_multimodal_config)
    [memory]      enabled, path, max_windows, max_age, dtype
    [zenoh] [mqtt] sinks: ``enabled`` here, the other keys checked by ``runtime.sinks.validate_sink``
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime.config_util import (
    Check,
    choice,
    config_from_dict,
    int_at_least,
    is_bool,
    non_empty_str,
    positive,
    resolve_path,
    toml_module,
)
from runtime.daemon_multimodal_config import SPECS as MULTIMODAL_SPECS
from runtime.daemon_multimodal_config import fusion_section, memory_section
from runtime.daemon_sections import (
    BundleSection,
    ControlSection,
    DaemonConfig,
    DaemonSection,
    EventLogSection,
    HttpSection,
    PromptsSection,
    SourceSection,
)
from runtime.errors import ConfigError, EdgebindError
from runtime.manifest import PRECISIONS
from runtime.matching import MatchConfig
from runtime.pipeline_plan import PipelineConfig
from runtime.prompts import Prompt, load_prompt_file
from runtime.sources import parse_uri

SINK_SECTIONS = ("zenoh", "mqtt")  # sink tables known to runtime.sinks (D-bus's package)
LOG_LEVELS = ("debug", "info", "warning", "error")
SYNC_MODES = ("full", "normal")
MIN_TOKEN_CHARS = 16
_BUNDLE_OWNED = ("backend", "precision", "threads")  # PipelineConfig keys set from [bundle]



class ConfigProblems(EdgebindError):
    """The config file has problems; ``lines`` holds one ``section.key: problem; fix`` line each."""

    def __init__(self, path: Path, lines: Sequence[str]) -> None:
        self.path, self.lines = path, list(lines)
        super().__init__(f"{path}: {len(self.lines)} problem(s): " + " | ".join(self.lines))


# -- value checks -----------------------------------------------------------------------------
def _str_list(v: Any) -> str | None:
    if not isinstance(v, list) or not v or not all(isinstance(s, str) and s.strip() for s in v):
        return f"expected a non-empty list of non-empty strings, got {v!r}"
    return None


def _backend(v: Any) -> str | None:
    from runtime.backends import available_backends

    return choice(available_backends())(v)


SPECS: dict[str, dict[str, Check]] = {
    "daemon": {
        "name": non_empty_str,
        "status_interval_s": positive,
        "drain_timeout_s": positive,
        "publish_retry_max_s": positive,
        "source_wait_s": positive,
        "log_level": choice(LOG_LEVELS),
    },
    "bundle": {"path": non_empty_str, "backend": _backend, "precision": choice(PRECISIONS), "threads": int_at_least(0)},
    "sources": {"uri": non_empty_str, "name": non_empty_str},
    "prompts": {"file": non_empty_str, "list": _str_list, "cache_dir": non_empty_str},
    "event_log": {"path": non_empty_str, "max_events": int_at_least(10), "synchronous": choice(SYNC_MODES)},
    "control": {"enabled": is_bool, "token_env": non_empty_str, "token_file": non_empty_str},
    "http": {"enabled": is_bool, "host": non_empty_str, "port": int_at_least(1, 65535), "allow_remote": is_bool},
    **MULTIMODAL_SPECS,
}
REQUIRED = {"bundle": ("path",), "sources": ("uri",), "event_log": ("path",)}
STRUCT_SECTIONS = {"matching": MatchConfig, "pipeline": PipelineConfig}


# -- loading ----------------------------------------------------------------------------------
def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file (``tomllib`` on 3.11+, ``tomli`` on 3.10); raises ConfigProblems with one line."""
    try:
        toml = toml_module()
    except ConfigError as exc:
        raise ConfigProblems(path, [str(exc)]) from None
    try:
        with open(path, "rb") as fh:
            data: dict[str, Any] = toml.load(fh)
    except OSError as exc:
        raise ConfigProblems(path, [f"cannot read the config file ({exc.strerror}); check --config"]) from None
    except toml.TOMLDecodeError as exc:
        raise ConfigProblems(path, [f"invalid TOML: {exc}; fix the syntax"]) from None
    return data


def load_config(path: str | Path, extra_sinks: Sequence[str] = (), environ: Mapping[str, str] | None = None
                ) -> DaemonConfig:  # fmt: skip
    """Read and validate ``path``; every problem listed in one ConfigProblems.

    Args:
        extra_sinks: additional sink table names accepted (sinks registered by the caller).
        environ: where ``control.token_env`` is looked up (default ``os.environ``).
    """
    path = Path(path)
    data = read_toml(path)
    problems: list[str] = []
    cfg = build_config(path, data, problems, tuple(extra_sinks), os.environ if environ is None else environ)
    if problems or cfg is None:
        raise ConfigProblems(path, problems)
    return cfg


def build_config(path: Path, data: Mapping[str, Any], problems: list[str], extra_sinks: tuple[str, ...],
                 environ: Mapping[str, str]) -> DaemonConfig | None:  # fmt: skip
    """Validate ``data`` (appending to ``problems``); the config, or None when anything is wrong."""
    base = path.parent
    sink_names = (*SINK_SECTIONS, *extra_sinks)
    known = (*SPECS, *STRUCT_SECTIONS, *sink_names)
    for name in data:
        if name not in known:
            problems.append(f"{name}: unknown section; valid sections: {', '.join(known)}")
    tables = {name: _table(data, name, problems) for name in (*SPECS, *STRUCT_SECTIONS) if name != "sources"}
    for name, table in tables.items():
        if name in SPECS:
            _check_keys(name, table, problems)
    sources = _sources(data.get("sources"), problems)
    daemon = _section(DaemonSection, tables["daemon"], problems)
    bundle = _bundle(tables["bundle"], base, problems)
    prompts, parsed = _prompts(tables["prompts"], base, problems)
    matching = _struct("matching", tables["matching"], problems)
    pipeline = _pipeline(tables["pipeline"], bundle, problems)
    event_log = _event_log(tables["event_log"], base, problems)
    control = _control(tables["control"], base, environ, problems)
    http = _http(tables["http"], problems)
    sinks = {name: _sink(name, data[name], problems) for name in sink_names if name in data}
    labels = None if parsed is None else [p.label for p in parsed if not p.background]
    fusion = fusion_section(tables["fusion"], base, labels, problems)
    memory = memory_section(tables["memory"], base, problems)
    if problems:
        return None
    assert bundle and prompts and matching and pipeline and event_log and control and http and daemon
    return DaemonConfig(path, daemon, bundle, sources, prompts, matching, pipeline, event_log, control, http, sinks,
                        fusion, memory)  # fmt: skip


def _table(data: Mapping[str, Any], name: str, problems: list[str]) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        problems.append(f"{name}: expected a table [{name}], got {type(value).__name__}; write it as [{name}]")
        return {}
    return value


def _check_keys(name: str, table: Mapping[str, Any], problems: list[str], where: str | None = None) -> None:
    """Unknown keys, missing required keys and bad values of a SPECS section, one line each."""
    where = where or name
    spec = SPECS[name]
    for key, value in table.items():
        if key not in spec:
            problems.append(f"{where}.{key}: unknown key; valid keys: {', '.join(spec)}")
        elif (why := spec[key](value)) is not None:
            problems.append(f"{where}.{key}: {why}")
    for key in REQUIRED.get(name, ()):
        if key not in table:
            problems.append(f"{where}.{key}: missing; it is required")


def _ok(table: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The keys of ``table`` that are known and valid (for building a section after the checks)."""
    spec = SPECS[name]
    return {k: v for k, v in table.items() if k in spec and spec[k](v) is None}


def _section(cls: type, table: Mapping[str, Any], problems: list[str]) -> Any:
    name = cls.__name__.removesuffix("Section").lower()
    return cls(**_ok(table, name))


def _http(table: Mapping[str, Any], problems: list[str]) -> HttpSection:
    section = HttpSection(**_ok(table, "http"))
    loopback = section.host == "localhost" or section.host.startswith("127.") or section.host == "::1"
    if section.enabled and not loopback and not section.allow_remote:
        problems.append(f"http.host: {section.host!r} is not a loopback address; "
                        "set http.allow_remote = true to serve metrics beyond localhost")  # fmt: skip
    return section


def _bundle(table: Mapping[str, Any], base: Path, problems: list[str]) -> BundleSection | None:
    ok = _ok(table, "bundle")
    if "path" not in ok:
        return None
    path = resolve_path(base, ok.pop("path"))
    if not (path / "manifest.json").is_file():
        problems.append(f"bundle.path: {path} has no manifest.json; point it at a bundle directory")
    return BundleSection(path, **ok)


def _sources(value: Any, problems: list[str]) -> tuple[SourceSection, ...]:
    if value is None:
        problems.append("sources: no [[sources]]; add at least one, e.g. [[sources]] uri = \"sim://demo\"")
        return ()
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        problems.append("sources: expected an array of tables; write each source as [[sources]] uri = \"...\"")
        return ()
    out, names = [], set()
    for i, table in enumerate(value):
        where = f"sources[{i}]"
        _check_keys("sources", table, problems, where)
        ok = _ok(table, "sources")
        if "uri" not in ok:
            continue
        try:
            parse_uri(ok["uri"])
        except ConfigError as exc:
            problems.append(f"{where}.uri: {exc}")
            continue
        name = ok.get("name", ok["uri"])
        if name in names:
            problems.append(f"{where}.name: duplicate source {name!r}; give each source once or a distinct name")
        names.add(name)
        out.append(SourceSection(ok["uri"], ok.get("name", "")))
    return tuple(out)


def _prompts(table: Mapping[str, Any], base: Path, problems: list[str]
             ) -> tuple[PromptsSection | None, tuple[Prompt, ...] | None]:  # fmt: skip
    """The [prompts] section and its parsed prompts (both None when it is not valid)."""
    ok = _ok(table, "prompts")
    if ("file" in table) == ("list" in table):
        problems.append("prompts: give exactly one of prompts.file (reloadable) or prompts.list")
        return None, None
    cache = resolve_path(base, ok["cache_dir"]) if "cache_dir" in ok else None
    if "file" in ok:
        section = PromptsSection(file=resolve_path(base, ok["file"]), cache_dir=cache)
    elif "list" in ok:
        section = PromptsSection(list=tuple(ok["list"]), cache_dir=cache)
    else:
        return None, None
    try:
        return section, section_prompts(section, base)
    except EdgebindError as exc:
        problems.append(f"prompts.{'file' if 'file' in ok else 'list'}: {exc}")
    return None, None


def section_prompts(section: PromptsSection, base: Path) -> tuple[Prompt, ...]:
    """Parse the prompts a [prompts] section names: its file, or its list (examples relative to ``base``).

    Raises:
        PromptError: one line naming the file line or the list entry.
    """
    if section.file is not None:
        return load_prompt_file(section.file)
    return prompts_from_lines(section.list, "prompts.list", base)


def prompts_from_lines(lines: Sequence[str], where: str, base_dir: Path | None = None) -> tuple[Prompt, ...]:
    """Parse prompt-file lines (``label: t1 | t2`` or a plain text) with the prompt-file parser.

    Example paths (``@audio:clip.wav``) resolve against ``base_dir`` (default: the working directory).

    Raises:
        PromptError: one line, naming ``where:N``.
    """
    from runtime.prompts import parse_prompt_lines

    return parse_prompt_lines(lines, where, base_dir)


def _struct(name: str, table: Mapping[str, Any], problems: list[str], skip: tuple[str, ...] = ()) -> Any:
    """A MatchConfig/PipelineConfig: per-key checks (all reported), then the class's cross-field checks."""
    cls = STRUCT_SECTIONS[name]
    valid = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    good: dict[str, Any] = {}
    for key, value in table.items():
        if key in skip:
            problems.append(f"{name}.{key}: set it in [bundle], not [{name}]")
        elif key not in valid:
            problems.append(f"{name}.{key}: unknown key; valid keys: {', '.join(valid)}")
        else:
            try:
                config_from_dict(cls, {key: value}, name)
            except ConfigError as exc:
                if "expected" in str(exc):  # a type error of this key; range/cross-field: checked below
                    problems.append(_keyed(str(exc), f"{name}.{key}"))
                    continue
            good[key] = value
    if len(good) != len(table):
        return None
    try:
        return config_from_dict(cls, good, name)
    except ConfigError as exc:
        problems.append(_keyed(str(exc), name))
        return None


def _keyed(message: str, where: str) -> str:
    """Make a config_util/class message start with ``where`` (``section.key: ...``)."""
    return message if message.startswith(where) else f"{where}: {message.split(': ', 1)[-1]}"


def _pipeline(table: Mapping[str, Any], bundle: BundleSection | None, problems: list[str]) -> PipelineConfig | None:
    cfg = _struct("pipeline", table, problems, skip=_BUNDLE_OWNED)
    if cfg is None or bundle is None:
        return None
    return dataclasses.replace(cfg, backend=bundle.backend, precision=bundle.precision, threads=bundle.threads)


def _event_log(table: Mapping[str, Any], base: Path, problems: list[str]) -> EventLogSection | None:
    ok = _ok(table, "event_log")
    if "path" not in ok:
        return None
    path = resolve_path(base, ok.pop("path"))
    if path.is_dir():
        problems.append(f"event_log.path: {path} is a directory; name a file, e.g. {path / 'events.db'}")
    return EventLogSection(path, **ok)


def _control(table: Mapping[str, Any], base: Path, environ: Mapping[str, str], problems: list[str]
             ) -> ControlSection | None:  # fmt: skip
    ok = _ok(table, "control")
    if "token_file" in ok:
        ok["token_file"] = resolve_path(base, ok["token_file"])
    section = ControlSection(**ok)
    if not section.enabled:
        return section
    if "token_file" in table and "token_env" in table:
        problems.append("control.token_file: give one of control.token_env and control.token_file")
        return None
    if section.token_file is not None:
        try:
            token, where = section.token_file.read_text().strip(), "control.token_file"
        except OSError as exc:
            problems.append(f"control.token_file: cannot read {section.token_file} ({exc.strerror})")
            return None
    else:
        token, where = environ.get(section.token_env, "").strip(), "control.token_env"
    if len(token) < MIN_TOKEN_CHARS:
        problems.append(f"{where}: control is enabled but the token is missing or shorter than {MIN_TOKEN_CHARS} "
                        "characters; set a long random token (e.g. `openssl rand -hex 32`)")  # fmt: skip
        return None
    return dataclasses.replace(section, token=token)


def _sink(name: str, value: Any, problems: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        problems.append(f"{name}: expected a table [{name}]; write it as [{name}]")
        return {}
    if "enabled" in value and not isinstance(value["enabled"], bool):
        problems.append(f"{name}.enabled: expected true or false, got {value['enabled']!r}")
        return value
    if name not in SINK_SECTIONS:
        return value  # a sink registered by the caller validates itself when opened
    for line in sink_problems(name, value):
        problems.append(line if line.startswith(f"{name}") else f"{name}: {line}")
    return value


def sink_problems(name: str, section: Mapping[str, Any]) -> list[str]:
    """``runtime.sinks.validate_sink(name, section)``; without that package an enabled sink is a problem."""
    try:
        sinks = importlib.import_module("runtime.sinks")
    except ModuleNotFoundError:
        if section.get("enabled") is True:
            return [f"{name}.enabled: sink {name} unavailable (runtime.sinks is not installed); set enabled = false"]
        return []
    return list(sinks.validate_sink(name, section))
