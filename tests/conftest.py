"""Shared test fixtures.

Real-data tests read ``../shared/data`` (next to the repository) or the folder named by the
environment variable ``VOLCAL_SHARED_DATA``; they skip with a clear reason when it is absent,
as it is in a user's fresh clone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when it is not available."""
    env = os.environ.get("VOLCAL_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``shared/data``; skips the test when absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "shared data not found (../shared/data next to the repository, or set "
            "VOLCAL_SHARED_DATA): real-data tests need the read-only development data"
        )
    return path


@pytest.fixture(scope="session")
def deribit_parquet(shared_data: Path) -> Path:
    """The shared real Deribit BTC/ETH snapshots (481 instants, Dec 2025 - Apr 2026)."""
    path = shared_data / "deribit" / "deribit_chains_2025-12_2026-04.parquet"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path
