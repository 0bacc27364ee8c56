"""The daemon config's sections as frozen dataclasses (parsed and validated by :mod:`runtime.daemon_config`)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.daemon_multimodal_config import FusionSection, MemorySection
from runtime.matching import MatchConfig
from runtime.pipeline_plan import PipelineConfig


@dataclass(frozen=True)
class DaemonSection:
    """``[daemon]``: identity and timing (seconds)."""

    name: str = field(default_factory=socket.gethostname)
    status_interval_s: float = 5.0
    drain_timeout_s: float = 10.0
    publish_retry_max_s: float = 30.0
    source_wait_s: float = 60.0
    log_level: str = "info"


@dataclass(frozen=True)
class BundleSection:
    """``[bundle]``: which bundle and how to run it."""

    path: Path
    backend: str = "ort"
    precision: str = "fp32"
    threads: int = 0


@dataclass(frozen=True)
class SourceSection:
    """One ``[[sources]]`` entry."""

    uri: str
    name: str = ""


@dataclass(frozen=True)
class PromptsSection:
    """``[prompts]``: the prompt file (reloaded on SIGHUP) or an inline list (prompt-file lines)."""

    file: Path | None = None
    list: tuple[str, ...] = ()
    cache_dir: Path | None = None


@dataclass(frozen=True)
class EventLogSection:
    """``[event_log]``: the SQLite file, its bound (events) and its commit durability."""

    path: Path
    max_events: int = 100_000
    synchronous: str = "full"


@dataclass(frozen=True)
class ControlSection:
    """``[control]``: remote control; ``token`` is resolved from ``token_env``/``token_file`` at load."""

    enabled: bool = False
    token_env: str = "EDGEBIND_TOKEN"
    token_file: Path | None = None
    token: str = field(default="", repr=False)


@dataclass(frozen=True)
class HttpSection:
    """``[http]``: Prometheus metrics and health endpoints (loopback by default)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464
    allow_remote: bool = False


@dataclass(frozen=True)
class DaemonConfig:
    """The whole validated file. ``sinks`` maps a sink table name to its raw table (enabled or not)."""

    path: Path
    daemon: DaemonSection
    bundle: BundleSection
    sources: tuple[SourceSection, ...]
    prompts: PromptsSection
    matching: MatchConfig
    pipeline: PipelineConfig
    event_log: EventLogSection
    control: ControlSection
    http: HttpSection
    sinks: dict[str, dict[str, Any]]
    fusion: FusionSection = field(default_factory=FusionSection)
    memory: MemorySection = field(default_factory=MemorySection)

    @property
    def zenoh(self) -> dict[str, Any]:
        return self.sinks.get("zenoh", {})

    @property
    def mqtt(self) -> dict[str, Any]:
        return self.sinks.get("mqtt", {})

    def enabled_sinks(self) -> list[str]:
        """Names of the sink tables with ``enabled = true``, in file order."""
        return [name for name, table in self.sinks.items() if table.get("enabled") is True]
