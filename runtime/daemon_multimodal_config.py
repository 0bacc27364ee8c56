"""The daemon's ``[fusion]`` and ``[memory]`` tables: checks and sections (see :mod:`runtime.daemon_config`).

::

    [fusion]   enabled, file (a FusionConfig, JSON or TOML, e.g. bundles/demo/fusion.json), publish_single
    [memory]   enabled, path (a directory), max_windows, max_age ("7d" or seconds), dtype (float32 | float16)

Both are off unless ``enabled = true``; an enabled table needs its ``file`` / ``path``. The
fusion file is loaded and validated here, and every fused label must have a prompt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.config_util import Check, choice, int_at_least, is_bool, non_empty_str, resolve_path
from runtime.errors import EdgebindError
from runtime.fusion import FusionConfig

MEMORY_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class FusionSection:
    """``[fusion]``: fused events from several sensors; ``config`` is the loaded file."""

    enabled: bool = False
    file: Path | None = None
    publish_single: bool = True
    config: FusionConfig | None = None


@dataclass(frozen=True)
class MemorySection:
    """``[memory]``: record every window's embedding (searchable over control ``memory.search``)."""

    enabled: bool = False
    path: Path | None = None
    max_windows: int = 1_000_000
    max_age_s: float | None = None
    dtype: str = "float32"


def _duration(v: Any) -> str | None:
    from runtime.search import parse_duration_s

    if isinstance(v, bool):
        return f"expected a duration like \"7d\" or a number of seconds, got {v!r}"
    try:
        parse_duration_s(str(v))
    except EdgebindError:
        return f"expected a duration like \"7d\", \"12h\" or a number of seconds > 0, got {v!r}"
    return None


SPECS: dict[str, dict[str, Check]] = {
    "fusion": {"enabled": is_bool, "file": non_empty_str, "publish_single": is_bool},
    "memory": {"enabled": is_bool, "path": non_empty_str, "max_windows": int_at_least(1), "max_age": _duration,
               "dtype": choice(MEMORY_DTYPES)},
}


def _valid(table: Mapping[str, Any], name: str) -> dict[str, Any]:
    spec = SPECS[name]
    return {k: v for k, v in table.items() if k in spec and spec[k](v) is None}


def fusion_section(table: Mapping[str, Any], base: Path, labels: Iterable[str] | None, problems: list[str]
                   ) -> FusionSection:  # fmt: skip
    """Build ``[fusion]`` (keys already checked against SPECS); problems appended, one line each.

    Args:
        labels: the prompts' non-background labels (None when the prompts themselves are broken).
    """
    from runtime.fusion_stage import load_fusion_config

    ok = _valid(table, "fusion")
    file = resolve_path(base, ok.pop("file")) if "file" in ok else None
    section = FusionSection(file=file, **ok)
    if not section.enabled:
        return section
    if file is None:
        problems.append("fusion.file: missing; name a fusion config (e.g. \"../bundles/demo/fusion.json\")")
        return section
    try:
        config = load_fusion_config(file)
    except EdgebindError as exc:
        problems.append(f"fusion.file: {' '.join(str(exc).split())}")
        return section
    missing = sorted(set(config.labels) - set(labels)) if labels is not None else []
    if missing:
        problems.append(f"fusion.file: rule {missing[0]!r} has no prompt with that label ({len(missing)} missing); "
                        "add the prompts or remove the rules")  # fmt: skip
    return FusionSection(True, file, section.publish_single, config)


def memory_section(table: Mapping[str, Any], base: Path, problems: list[str]) -> MemorySection:
    """Build ``[memory]`` (keys already checked against SPECS); problems appended, one line each."""
    from runtime.search import parse_duration_s

    ok = _valid(table, "memory")
    path = resolve_path(base, ok.pop("path")) if "path" in ok else None
    age = ok.pop("max_age", None)
    section = MemorySection(path=path, max_age_s=None if age is None else parse_duration_s(str(age)), **ok)
    if section.enabled and path is None:
        problems.append("memory.path: missing; name a directory, e.g. \"/var/lib/edgebind/memory\"")
    elif section.enabled and path is not None and path.exists() and not path.is_dir():
        problems.append(f"memory.path: {path} is a file; name a directory")
    return section
