"""Shared test fixtures; paths resolve from this file, never the cwd."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "official_tiny"
TINY_CONFIG = OFFICIAL / "tiny_config.json"
TINY_CHECKPOINT = OFFICIAL / "tiny_official.pt"
HAS_TORCH = importlib.util.find_spec("torch") is not None
# Set by scripts/test.sh for the torch-free job: a bundle exported by the full environment.
BUNDLE_ENV = "EDGEBIND_TEST_BUNDLE"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The official-code parity fixtures (copied from shared/fixtures/imagebind_official_tiny)."""
    return OFFICIAL


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of all six encoders of the official tiny checkpoint (read-only for tests).

    Exported here when torch is installed; the torch-free job gets one through
    ``EDGEBIND_TEST_BUNDLE``. Neither available is a hard error, not a skip.
    """
    given = os.environ.get(BUNDLE_ENV)
    if given:
        return Path(given)
    if not HAS_TORCH:
        pytest.fail(f"no torch to export a bundle and {BUNDLE_ENV} is not set (run scripts/test.sh)")
    from export.bundle import BundleOptions, build_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    build_bundle(BundleOptions(config=str(TINY_CONFIG), out_dir=out, checkpoint=TINY_CHECKPOINT))
    return out


@pytest.fixture()
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may corrupt."""
    dest = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dest)
    return dest
