"""Shared test paths; fixture paths resolve from this file, never the cwd."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "official_tiny"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The official-code parity fixtures (copied from shared/fixtures/imagebind_official_tiny)."""
    return OFFICIAL
