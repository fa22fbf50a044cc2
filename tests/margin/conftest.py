"""Fixtures of the margin tests: the shared Deribit BTC history, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def btc_chains(deribit_parquet: Path) -> list:  # type: ignore[type-arg]
    import volcal

    chains = volcal.load_snapshot(deribit_parquet, "BTC")
    assert isinstance(chains, list)
    return chains
