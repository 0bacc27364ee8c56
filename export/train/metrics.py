"""Training telemetry: JSONL metrics, a rich progress bar that can be switched off, the loss plot."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only JSONL file, one object per line (``step`` first).

    Args:
        path: the ``.jsonl`` file (its directory is created).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as a line (non-finite floats become null, so every line is valid JSON)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(clean) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop the lines of steps after ``step`` (a resumed run rewrites them), atomically."""
        if not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Parse a metrics JSONL file (blank lines skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def plot_losses(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Plot training loss (and eval metrics on a second axis) against step into a PNG.

    Returns:
        The PNG path, or None when matplotlib is not installed or there is nothing to plot.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = list(records)
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("InfoNCE loss")
    if evals:
        other = ax.twinx()
        for key in sorted({k for r in evals for k in r if k.startswith("eval/")}):
            pts = [(r["step"], r[key]) for r in evals if r.get(key) is not None]
            if pts:
                other.plot(*zip(*pts, strict=True), marker="o", linestyle="--", label=key)
        other.set_ylabel("eval metric")
        other.legend(loc="upper right", fontsize="small")
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class ProgressBar:
    """A rich progress bar over optimizer steps; every method is a no-op when disabled.

    Args:
        total: steps of the run.
        completed: steps already done (after a resume).
        enabled: show the bar (rank 0 with ``progress`` on).
    """

    def __init__(self, total: int, completed: int = 0, enabled: bool = True) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        except ImportError:
            return
        self._bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=False,
        )
        self._task = self._bar.add_task("train", total=total, completed=completed, info="")

    def __enter__(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, step: int, info: str) -> None:
        """Move the bar to ``step`` and show ``info`` (e.g. loss and lr)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
