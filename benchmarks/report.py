"""Benchmark reports: one JSON file for machines and one Markdown file for people, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_report(out_dir: Path, stem: str, payload: dict[str, Any], markdown_lines: list[str]) -> Path:
    """Write ``out_dir/stem.json`` and ``out_dir/stem.md``; returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    md = out_dir / f"{stem}.md"
    md.write_text("\n".join(markdown_lines).rstrip("\n") + "\n")
    return md
