"""SVI / SSVI / eSSVI surfaces and the quote repair on real Deribit snapshots (skipped
without ../shared/data).

The full acceptance run over all 481 snapshots is ``benchmarks/svi_realdata.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

import volcal
from volcal.chain import OptionChain
from volcal.svi import fit_essvi, fit_ssvi, fit_svi, quote_arbitrage, repair_quotes

pytestmark = [pytest.mark.realdata]


@pytest.fixture(scope="module")
def chains(deribit_parquet: Path) -> list[OptionChain]:
    raw = pd.read_parquet(deribit_parquet)
    snaps = sorted(raw["snapshot_file"].unique())
    sub = raw[raw["snapshot_file"] == snaps[len(snaps) // 2]]
    return [volcal.load_snapshot(sub, ccy) for ccy in ("BTC", "ETH")]  # type: ignore[misc]


@pytest.mark.parametrize("fit", [fit_ssvi, fit_essvi])
def test_ssvi_models_on_real_chains(chains: list[OptionChain], fit: object) -> None:
    # smoke test: no exception, arbitrage-free on the dense grid, sane quality
    for chain in chains:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit(chain)  # type: ignore[operator]
        assert res.arbitrage.arbitrage_free, chain.underlying
        assert len(res.params) >= 8
        assert res.rmse_iv < 0.05


def test_repair_removes_quote_arbitrage(chains: list[OptionChain]) -> None:
    for chain in chains:
        fixed, rep = repair_quotes(chain)
        assert rep.success
        assert rep.violations_after == 0
        used = fixed.quotes[fixed.quotes["filter_reason"] == ""]
        otm = used[used["call"] == (used["strike"] >= used["forward"])]
        assert quote_arbitrage(otm.dropna(subset=["bid_usd", "ask_usd"]), tol=1e-9).empty
        # every move is reported, and mostly within the quoted spread
        assert rep.moves["within_bid_ask"].mean() > 0.8


@pytest.mark.slow  # about 10 s
def test_svi_on_real_chains(chains: list[OptionChain]) -> None:
    for chain in chains:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_svi(chain)
        assert fit.arbitrage.arbitrage_free, chain.underlying
        assert fit.inside_share > 0.9, (chain.underlying, fit.inside_share)
        assert len(fit.params) >= 8


@pytest.mark.slow
def test_acceptance_on_real_chains(chains: list[OptionChain]) -> None:
    for chain in chains:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_svi(chain)
        assert fit.arbitrage.arbitrage_free
        assert fit.inside_share >= 0.97
