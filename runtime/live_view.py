"""The live terminal view of ``python -m runtime.stream`` (rich, imported only here, inside functions)."""

from __future__ import annotations

from typing import Any

from runtime.pipeline_status import PipelineStatus

_STAGES = ("window", "queue", "preprocess", "embed", "match", "total")


class LiveView:
    """A rich ``Live`` display refreshed with :meth:`update`; use as a context manager.

    Args:
        title: shown above the tables (e.g. the bundle name).
        refresh_hz: redraws per second.
    """

    def __init__(self, title: str, refresh_hz: float = 4.0) -> None:
        self.title = title
        self.refresh_hz = refresh_hz
        self._live: Any = None

    def __enter__(self) -> LiveView:
        from rich.live import Live

        self._live = Live(render_status(None, self.title), refresh_per_second=self.refresh_hz, transient=False)
        self._live.__enter__()
        return self

    def update(self, status: PipelineStatus) -> None:
        """Redraw with ``status``."""
        if self._live is not None:
            self._live.update(render_status(status, self.title))

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None


def render_status(status: PipelineStatus | None, title: str) -> Any:
    """A rich renderable of ``status``: streams with top prompts, recent events, latencies, errors."""
    from rich.console import Group
    from rich.text import Text

    if status is None:
        return Text(f"edgebind stream — {title}: starting…")
    head = Text(
        f"edgebind stream — {title}   {status.elapsed_s:6.1f} s   windows {status.windows_done} done, "
        f"{status.windows_dropped} dropped, {status.windows_failed} failed   queue {status.queue_depth}   "
        f"events {status.events}",
        style="bold",
    )
    parts: list[Any] = [head, _streams_table(status), _events_table(status), _latency_table(status)]
    for src in status.sources:
        if src.error:
            parts.append(Text(f"source {src.name} failed: {src.error}", style="red"))
        for note in src.ignored:
            parts.append(Text(f"{src.name}: ignored {note}", style="dim"))
    return Group(*parts)


def _streams_table(status: PipelineStatus) -> Any:
    from rich.table import Table

    table = Table(title="streams", expand=False)
    for col in ("stream", "modality", "done", "dropped", "events", "top prompts"):
        table.add_column(col, justify="right" if col in {"done", "dropped", "events"} else "left")
    for s in status.streams:
        top = "  ".join(f"{label} {score:.2f}" for label, score in s.top)
        table.add_row(s.key, s.modality, str(s.windows_done), str(s.windows_dropped), str(s.events), top or "-")
    return table


def _events_table(status: PipelineStatus) -> Any:
    from rich.table import Table

    table = Table(title="recent events", expand=False)
    for col in ("label", "score", "margin", "stream", "latency"):
        table.add_column(col)
    for ev in reversed(status.recent_events[-8:]):
        m = ev.match
        table.add_row(m.label, f"{m.score:.3f}", f"{m.margin:+.3f}", m.source_id, f"{ev.latency_ms:.0f} ms")
    return table


def _latency_table(status: PipelineStatus) -> Any:
    from rich.table import Table

    table = Table(title="stage latency (ms)", expand=False)
    table.add_column("stage")
    for stage in _STAGES:
        table.add_column(stage, justify="right")
    cells = {k: status.latency[k] for k in _STAGES if k in status.latency}
    for name, attr in (("p50", "p50_ms"), ("p99", "p99_ms")):
        row = [f"{getattr(cells[k], attr):.1f}" if k in cells and cells[k].count else "-" for k in _STAGES]
        table.add_row(name, *row)
    return table
