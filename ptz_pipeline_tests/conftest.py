"""Shared fixtures: the external data folder ../shared/data beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; fails (not skips) with a clear message when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"external test data not found at {SHARED_DATA}: the tests read ../shared/data beside the "
            "repository checkout (see DESIGN.md)"
        )
    return SHARED_DATA
