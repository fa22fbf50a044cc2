"""Quote filters: every reason, its order, and that filtered quotes are kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volcal.chain import FILTER_REASONS, OptionChain, QuoteFilters, filter_quotes

MINUTE = 1.0 / (365 * 24 * 60)


def table(**columns: list[float]) -> pd.DataFrame:
    """A one-column-at-a-time quote table; defaults: a clean two-sided quote."""
    n = len(next(iter(columns.values())))
    base = {
        "t": [0.1] * n,
        "bid_usd": [100.0] * n,
        "ask_usd": [110.0] * n,
        "mark_usd": [105.0] * n,
        "iv_bid": [0.5] * n,
        "iv_ask": [0.55] * n,
        "iv_mark": [0.52] * n,
    }
    base.update(columns)
    return pd.DataFrame(base)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("t", 0.0, "expired"),
        ("t", -0.01, "expired"),
        ("t", 29 * MINUTE, "near_expiry"),
        ("bid_usd", np.nan, "no_bid"),
        ("ask_usd", np.nan, "no_ask"),
        ("bid_usd", 0.0, "zero_quote"),
        ("ask_usd", 0.0, "zero_quote"),
        ("ask_usd", 100.0, "crossed"),  # locked = crossed
        ("ask_usd", 99.0, "crossed"),
        ("ask_usd", 200.0, "wide_spread"),  # (200 - 100) / 150 = 0.67 > 0.5
        ("iv_bid", np.nan, "iv_not_found"),  # e.g. bid below intrinsic
        ("iv_ask", np.nan, "iv_not_found"),
        ("iv_mark", np.nan, "iv_not_found"),
    ],
)
def test_each_reason(column: str, value: float, reason: str) -> None:
    quotes = table(**{column: [0.1 if column == "t" else 100.0, value]})
    if column == "bid_usd":
        quotes.loc[0, "bid_usd"] = 100.0
    if column == "ask_usd":
        quotes.loc[0, "ask_usd"] = 110.0
    if column.startswith("iv_"):
        quotes.loc[0, column] = 0.5
    mask, why = filter_quotes(quotes)
    assert mask.tolist() == [True, False]
    assert why.tolist() == ["", reason]
    assert reason in FILTER_REASONS


def test_thresholds_are_configurable() -> None:
    quotes = table(t=[10 * MINUTE, 0.1], ask_usd=[110.0, 130.0])  # spreads 0.095, 0.26
    assert filter_quotes(quotes)[1].tolist() == ["near_expiry", ""]
    relaxed = QuoteFilters(min_minutes_to_expiry=5.0, max_rel_spread=0.2)
    assert filter_quotes(quotes, relaxed)[1].tolist() == ["", "wide_spread"]
    assert filter_quotes(quotes, QuoteFilters(min_minutes_to_expiry=0))[1].tolist() == ["", ""]
    one_sided = table(bid_usd=[np.nan], iv_bid=[np.nan])
    assert filter_quotes(one_sided, QuoteFilters(require_bid=False))[1].tolist() == [""]
    assert filter_quotes(table(bid_usd=[5.0]), QuoteFilters(min_bid_usd=10.0))[1].tolist() == [
        "zero_quote"
    ]
    wide_vol = table(iv_ask=[0.70])
    assert filter_quotes(wide_vol, QuoteFilters(max_iv_spread=0.1))[1].tolist() == [
        "wide_iv_spread"
    ]


def test_first_reason_wins() -> None:
    # expired and without a bid: "expired" comes first in FILTER_REASONS
    quotes = table(t=[-1.0], bid_usd=[np.nan])
    assert filter_quotes(quotes)[1].tolist() == ["expired"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_rel_spread": 0.0},
        {"min_minutes_to_expiry": -1.0},
        {"min_bid_usd": -1.0},
        {"max_iv_spread": 0.0},
    ],
)
def test_settings_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        QuoteFilters(**kwargs)


def test_filtered_quotes_are_kept_in_the_chain() -> None:
    # deep ITM call bid below intrinsic: kept, flagged iv_not_found
    raw = pd.DataFrame(
        {
            "symbol": ["BTC-31JAN26-40000-C", "BTC-31JAN26-60000-C"],
            "expiry": ["2026-01-31T08:00Z"] * 2,
            "strike": [40_000.0, 60_000.0],
            "call": [True, True],
            "bid_usd": [9_000.0, 500.0],  # intrinsic is 10 000
            "ask_usd": [10_500.0, 520.0],
            "mark_usd": [10_100.0, 510.0],
            "forward": [50_000.0, 50_000.0],
        }
    )
    chain = OptionChain.from_quotes(raw, as_of="2026-01-01T08:00Z", exchange="x", underlying="BTC")
    assert chain.quotes["filter_reason"].tolist() == ["iv_not_found", ""]
    assert np.isnan(chain.quotes["iv_bid"].iloc[0])
    assert len(chain.usable()) == 1
    assert QuoteFilters().to_dict()["max_rel_spread"] == 0.5
