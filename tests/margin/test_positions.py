"""Portfolios resolved against a chain: options, futures, ccxt symbols, unknown instruments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.margin.synthetic import SMILE, forward_of, synthetic_chain, t_of
from volcal import UnknownInstrumentError
from volcal.risk import resolve_positions


@pytest.fixture(scope="module")
def chain():  # type: ignore[no-untyped-def]
    return synthetic_chain()


def test_options_futures_and_ccxt_symbols(chain) -> None:  # type: ignore[no-untyped-def]
    pf = pd.DataFrame(
        {
            "symbol": [
                "BTC-27MAR26-80000-C",
                "BTC/USD:BTC-260327-80000-P",  # ccxt unified name of BTC-27MAR26-80000-P
                "BTC-27MAR26",
                "BTC/USD:BTC",  # ccxt perpetual
                "BTC_USDC-PERPETUAL",
            ],
            "quantity": [-2, 3, 10, -5, 1.5],
        }
    )
    pos = resolve_positions(pf, chain)
    tab = pos.table
    assert list(tab["symbol"]) == [
        "BTC-27MAR26-80000-C",
        "BTC-27MAR26-80000-P",
        "BTC-27MAR26",
        "BTC-PERPETUAL",
        "BTC_USDC-PERPETUAL",
    ]
    assert list(tab["kind"]) == ["option", "option", "future", "future", "future"]
    assert list(tab["settlement"]) == ["inverse"] * 4 + ["linear"]
    # Deribit BTC inverse futures have a 10 USD face; options 1 BTC
    assert list(tab["contract_size"]) == [1.0, 1.0, 10.0, 10.0, 1.0]
    assert tab["t"].iloc[0] == pytest.approx(t_of("27MAR26"), abs=1e-12)
    assert tab["t"].iloc[3] == 0.0
    # the dated future takes the chain's forward of its expiry
    assert tab["chain_forward"].iloc[2] == pytest.approx(forward_of("27MAR26"), rel=1e-12)
    assert np.isnan(tab["chain_forward"].iloc[3])
    assert pos.spot == SMILE.spot
    assert pos.account_currency == "coin"
    assert list(pos.quantity) == [-2, 3, 10, -5, 1.5]


def test_unknown_instruments_are_named(chain) -> None:  # type: ignore[no-untyped-def]
    pf = pd.DataFrame(
        {
            "symbol": ["BTC-27MAR26-80000-C", "BTC-27MAR26-81000-C", "ETH-PERPETUAL", "BTC-1JAN26"],
            "quantity": [1, 1, 1, 1],
        }
    )
    with pytest.raises(UnknownInstrumentError) as err:
        resolve_positions(pf, chain)
    msg = str(err.value)
    # a strike not listed, another coin's perpetual, an expired future
    assert "BTC-27MAR26-81000-C" in msg and "ETH-PERPETUAL" in msg and "BTC-1JAN26" in msg
    assert "BTC-27MAR26-80000-C" not in msg
    assert isinstance(err.value, KeyError)


def test_overrides_and_bad_input(chain) -> None:  # type: ignore[no-untyped-def]
    pf = pd.DataFrame(
        {
            "symbol": ["BTC-PERPETUAL"],
            "quantity": [1],
            "contract_size": [0.1],
            "settlement": ["Linear"],
        }
    )
    tab = resolve_positions(pf, chain).table
    assert tab["contract_size"].iloc[0] == 0.1 and tab["settlement"].iloc[0] == "linear"
    with pytest.raises(ValueError, match="quantity"):
        resolve_positions(pd.DataFrame({"symbol": ["BTC-PERPETUAL"], "quantity": [np.nan]}), chain)
    with pytest.raises(ValueError, match="lack"):
        resolve_positions(pd.DataFrame({"symbol": ["BTC-PERPETUAL"]}), chain)
