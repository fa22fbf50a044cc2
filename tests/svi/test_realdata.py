"""SVI surfaces on a few real Deribit snapshots (skipped without ../shared/data).

The full acceptance run over all 481 snapshots is ``benchmarks/svi_realdata.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

from tests.svi.deribit_quotes import iter_chains
from volcal.svi import fit_svi

pytestmark = [pytest.mark.realdata, pytest.mark.slow]  # about 20 s


@pytest.fixture(scope="module")
def chains(deribit_parquet: Path) -> list[tuple[str, str, pd.DataFrame]]:
    raw = pd.read_parquet(deribit_parquet)
    snaps = sorted(raw["snapshot_file"].unique())
    picks = [snaps[0], snaps[len(snaps) // 2]]
    return [(sid, ccy, q) for sid, ccy, _, q in iter_chains(raw[raw["snapshot_file"].isin(picks)])]


def test_fits_real_chains(chains: list[tuple[str, str, pd.DataFrame]]) -> None:
    for sid, ccy, quotes in chains:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_svi(quotes)
        assert fit.arbitrage.calendar_free, (sid, ccy)
        assert fit.inside_share > 0.9, (sid, ccy, fit.inside_share)
        assert len(fit.params) >= 8, (sid, ccy)


@pytest.mark.xfail(
    reason="issue 4 acceptance not met yet: see docs/svi.md, open items", strict=False
)
def test_acceptance_on_real_chains(chains: list[tuple[str, str, pd.DataFrame]]) -> None:
    for _sid, _ccy, quotes in chains:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_svi(quotes)
        assert fit.arbitrage.arbitrage_free
        assert fit.inside_share >= 0.97
