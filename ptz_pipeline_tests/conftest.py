"""Shared fixtures: the external data folder ../shared/data beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptz_pipeline.datasets import REPO_ROOT, SHARED_DATA

__all__ = ["REPO_ROOT", "shared_data"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; tests that need it skip with the reason where it is absent (a user's clone).
    CI always has it: .ci/run refuses to run without it, so nothing is skipped there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"external test data not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA
