"""load_snapshot on the three formats: Deribit flat snapshots, Tardis options_chain CSV, volcal.

Expected values are worked out by hand from the fixture rows (t = days / 365; USD = coin ×
underlying_price), or come from QuantLib's ``blackFormulaImpliedStdDev`` for implied vols.
"""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volcal.chain import OptionChain, QuoteFilters
from volcal.data.snapshots import detect_format, load_snapshot
from volcal.errors import ChainValidationError

FIXTURES = Path(__file__).parent / "fixtures"
TARDIS_CSV = FIXTURES / "tardis_options_chain_deribit_sample.csv"

T0 = pd.Timestamp("2026-03-01T07:30Z")
T1 = pd.Timestamp("2026-03-01T08:00Z")
T2 = pd.Timestamp("2026-03-01T09:00Z")
T3 = pd.Timestamp("2026-03-01T10:00Z")
MAR27 = pd.Timestamp("2026-03-27T08:00Z")
MAR02 = pd.Timestamp("2026-03-02T08:00Z")


def row(chain: OptionChain, symbol: str) -> pd.Series:
    q = chain.quotes
    match = q[q["symbol"] == symbol]
    assert len(match) == 1, symbol
    return match.iloc[0]


# ---------------------------------------------------------------------------------------------
# Tardis options_chain CSV


def test_tardis_all_instants() -> None:
    chains = load_snapshot(TARDIS_CSV, "BTC")
    assert isinstance(chains, list)
    assert [c.as_of for c in chains] == [T0, T1, T2, T3]
    assert all(c.exchange == "deribit" and c.underlying == "BTC" for c in chains)
    # 07:30: only the option expiring at 08:00, half an hour left
    first = chains[0]
    assert first.quotes["symbol"].tolist() == ["BTC-1MAR26-64000-P"]
    assert first.quotes["t"].item() == 30 / (365 * 24 * 60)
    assert first.quotes["filter_reason"].item() == "wide_spread"  # 0.0005 / 0.00075 = 0.67
    hour = load_snapshot(TARDIS_CSV, "BTC", at=T0, filters=QuoteFilters(min_minutes_to_expiry=60))
    assert isinstance(hour, OptionChain)
    assert hour.quotes["filter_reason"].item() == "near_expiry"
    # from 08:00 that option has expired and is gone; ETH and BTC_USDC rows never appear
    for chain in chains[1:]:
        assert sorted(chain.quotes["symbol"]) == [
            "BTC-27MAR26-60000-C",
            "BTC-27MAR26-60000-P",
            "BTC-27MAR26-70000-C",
            "BTC-27MAR26-70000-P",
            "BTC-2MAR26-65000-C",
        ]


def test_tardis_values_at_08_00() -> None:
    chain = load_snapshot(TARDIS_CSV, "BTC", at=T1)
    assert isinstance(chain, OptionChain) and chain.as_of == T1
    r = row(chain, "BTC-27MAR26-60000-C")
    assert r["expiry"] == MAR27
    assert r["t"] == 26 / 365
    assert r["call"] and r["strike"] == 60_000.0
    assert r["forward"] == 65_000.0 and r["usd_per_coin"] == 65_000.0
    assert r["forward_source"] == "exchange" and r["discount"] == 1.0
    assert (r["bid_coin"], r["ask_coin"], r["mark_coin"]) == (0.1100, 0.1150, 0.1125)
    assert r["bid_usd"] == pytest.approx(7_150.0, rel=1e-15)  # 0.11 × 65 000
    assert r["ask_usd"] == pytest.approx(7_475.0, rel=1e-15)
    assert r["mark_usd"] == pytest.approx(7_312.5, rel=1e-15)
    assert (r["bid_size"], r["ask_size"], r["open_interest"]) == (5.0, 7.5, 120.5)
    assert r["exchange_iv_mark"] == pytest.approx(0.49, rel=1e-15)
    assert r["exchange_iv_bid"] == pytest.approx(0.481, rel=1e-15)
    assert r["exchange_delta"] == 0.72
    assert r["exchange_last_price_coin"] == 0.1110
    assert r["k"] == pytest.approx(math.log(60_000 / 65_000), rel=1e-15)
    short = row(chain, "BTC-2MAR26-65000-C")
    assert short["expiry"] == MAR02 and short["t"] == 1 / 365 and short["forward"] == 64_800.0


def test_tardis_implied_vols_match_quantlib() -> None:
    ql = pytest.importorskip("QuantLib")
    chain = load_snapshot(TARDIS_CSV, "BTC", at=T1)
    for _, r in chain.quotes.iterrows():
        kind = ql.Option.Call if r["call"] else ql.Option.Put
        # QuantLib blackFormulaImpliedStdDev(type, strike, forward, price, discount,
        # displacement, guess, accuracy, max_iterations); its default accuracy (1e-6) is loose
        sd = ql.blackFormulaImpliedStdDev(
            kind,
            r["strike"],
            r["forward"],
            r["mark_usd"],
            1.0,
            0.0,
            0.5 * math.sqrt(r["t"]),
            1e-13,
            200,
        )
        assert r["iv_mark"] == pytest.approx(sd / math.sqrt(r["t"]), abs=1e-9), r["symbol"]
        # and QuantLib's Black price at our vol is the USD mark
        price = ql.blackFormula(kind, r["strike"], r["forward"], r["iv_mark"] * math.sqrt(r["t"]))
        assert price == pytest.approx(r["mark_usd"], rel=1e-12), r["symbol"]


def test_tardis_at_carries_rows_forward() -> None:
    # 09:30 -> the 09:00 instant: one symbol updated, the others as of 08:00
    chain = load_snapshot(TARDIS_CSV, "BTC", at="2026-03-01 09:30")  # naive = UTC
    assert isinstance(chain, OptionChain) and chain.as_of == T2
    updated = row(chain, "BTC-27MAR26-60000-C")
    assert updated["bid_usd"] == pytest.approx(0.1120 * 65_100, rel=1e-15)
    assert updated["t"] == (26 * 24 - 1) / (365 * 24)
    carried = row(chain, "BTC-27MAR26-70000-P")
    assert carried["bid_usd"] == pytest.approx(0.1050 * 65_000, rel=1e-15)
    # 10:00: the put's bid side is empty (price 0, amount 0): no bid
    later = load_snapshot(TARDIS_CSV, "BTC", at=T3)
    assert isinstance(later, OptionChain)
    empty = row(later, "BTC-27MAR26-70000-P")
    assert np.isnan(empty["bid_coin"]) and np.isnan(empty["iv_bid"])
    assert empty["filter_reason"] == "no_bid"
    assert row(later, "BTC-2MAR26-65000-C")["t"] == 22 / (365 * 24)


def test_tardis_list_of_instants_gzip_and_eth(tmp_path: Path) -> None:
    gz = tmp_path / "deribit_options_chain_2026-03-01_OPTIONS.csv.gz"
    with TARDIS_CSV.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    chains = load_snapshot(gz, "BTC", at=[T3, "2026-03-01T08:59"])
    assert isinstance(chains, list) and [c.as_of for c in chains] == [T3, T1]
    eth = load_snapshot(gz, "ETH")
    assert isinstance(eth, OptionChain)  # one instant holds ETH rows: a single chain
    assert eth.as_of == T1 and eth.quotes["bid_usd"].item() == pytest.approx(0.07 * 2_100)


def test_tardis_other_exchanges_are_refused() -> None:
    frame = pd.read_csv(TARDIS_CSV).assign(exchange="okex-options")
    with pytest.raises(ChainValidationError, match="okex-options"):
        load_snapshot(frame, "BTC")


# ---------------------------------------------------------------------------------------------
# Deribit flat snapshots (the shared parquet's format)


def deribit_flat() -> pd.DataFrame:
    """Three options of two snapshots, in the columns of shared/data/deribit/*.parquet."""
    ts1 = pd.Timestamp("2026-01-10T12:00:00.250Z")
    ts2 = pd.Timestamp("2026-01-10T18:00:00Z")
    base = {
        "underlying_name": "BTC-30JAN26",
        "expiry_datetime": "2026-01-30T08:00:00+00:00",
        "time_to_maturity": 0.0535,  # the collector's ACT/365.25 value: ignored
        "futures_price": 90_000.0,
        "futures_instrument_name": "BTC-30JAN26",
        "delta": 0.5,
        "vega": 80.0,
        "open_interest": 12.0,
        "volume": 1.0,
        "volume_usd": 900.0,
        "currency": "BTC",
        "index_price": 89_800.0,
    }
    rows = [
        {
            "timestamp": ts1,
            "instrument_name": "BTC-30JAN26-90000-C",
            "option_type": "call",
            "strike": 90_000.0,
            "underlying": 90_000.0,
            "bid_price": 0.040,
            "ask_price": 0.042,
            "mark_price": 0.041,
            "implied_volatility": 0.45,
        },
        {
            "timestamp": ts1,
            "instrument_name": "BTC-30JAN26-90000-P",
            "option_type": "put",
            "strike": 90_000.0,
            "underlying": 90_010.0,
            "bid_price": np.nan,
            "ask_price": 0.042,
            "mark_price": 0.041,
            "implied_volatility": 0.45,
        },
        {
            "timestamp": ts2,
            "instrument_name": "BTC-30JAN26-90000-C",
            "option_type": "call",
            "strike": 90_000.0,
            "underlying": 91_000.0,
            "bid_price": 0.045,
            "ask_price": 0.047,
            "mark_price": 0.046,
            "implied_volatility": 0.44,
        },
        {
            "timestamp": ts2,
            "instrument_name": "ETH-30JAN26-3000-C",
            "option_type": "call",
            "strike": 3_000.0,
            "underlying": 3_100.0,
            "bid_price": 0.05,
            "ask_price": 0.06,
            "mark_price": 0.055,
            "implied_volatility": 0.6,
            "currency": "ETH",
            "underlying_name": "ETH-30JAN26",
        },
    ]
    frame = pd.DataFrame([base | r for r in rows])
    frame["mid_price"] = (frame["bid_price"] + frame["ask_price"]) / 2
    frame["bid_ask_spread"] = frame["ask_price"] - frame["bid_price"]
    frame["snapshot_file"] = "x.csv"
    return frame


def test_deribit_flat_values(tmp_path: Path) -> None:
    path = tmp_path / "flat.parquet"
    deribit_flat().to_parquet(path)
    chains = load_snapshot(path, "BTC")
    assert isinstance(chains, list) and len(chains) == 2
    first, second = chains
    assert first.as_of == pd.Timestamp("2026-01-10T12:00:00.250Z")
    c = row(first, "BTC-30JAN26-90000-C")
    # 2026-01-10 12:00:00.25 -> 2026-01-30 08:00: 19 days 20 h minus 0.25 s
    assert c["t"] == pytest.approx((19 * 86_400 + 20 * 3_600 - 0.25) / (365 * 86_400), rel=1e-15)
    assert c["bid_usd"] == pytest.approx(0.040 * 90_000, rel=1e-15)
    assert c["exchange_iv_mark"] == 0.45 and c["exchange_vega"] == 80.0
    assert c["index_price"] == 89_800.0 and c["open_interest"] == 12.0
    p = row(first, "BTC-30JAN26-90000-P")
    assert p["forward"] == 90_010.0  # each instrument keeps the forward Deribit reported
    assert p["filter_reason"] == "no_bid"
    assert row(second, "BTC-30JAN26-90000-C")["mark_usd"] == pytest.approx(0.046 * 91_000)
    at = load_snapshot(path, "BTC", at="2026-01-10T17:59:59Z")
    assert isinstance(at, OptionChain) and at.equals(first)


def test_filters_are_passed_through() -> None:
    chain = load_snapshot(deribit_flat(), "ETH", filters=QuoteFilters(max_rel_spread=0.1))
    assert isinstance(chain, OptionChain)
    assert chain.quotes["filter_reason"].tolist() == ["wide_spread"]  # 0.01 / 0.055 = 0.18


# ---------------------------------------------------------------------------------------------
# volcal's own format


def test_volcal_round_trip(tmp_path: Path) -> None:
    chains = load_snapshot(TARDIS_CSV, "BTC")
    assert isinstance(chains, list)
    one = chains[2]
    path = one.to_parquet(tmp_path / "one.parquet")
    back = load_snapshot(path, "BTC")
    assert isinstance(back, OptionChain) and back.equals(one)
    # several chains in one file: a list, oldest first; `at` picks one
    frame = pd.concat([c.to_frame() for c in reversed(chains)], ignore_index=True)
    many = tmp_path / "many.parquet"
    frame.to_parquet(many)
    again = load_snapshot(many, "BTC")
    assert isinstance(again, list) and all(a.equals(b) for a, b in zip(again, chains, strict=True))
    picked = load_snapshot(many, "BTC", at="2026-03-01T09:59:59.999Z")
    assert isinstance(picked, OptionChain) and picked.equals(chains[2])
    assert detect_format(frame) == "volcal"


# ---------------------------------------------------------------------------------------------
# errors


def test_unknown_format_and_file_type(tmp_path: Path) -> None:
    with pytest.raises(ChainValidationError, match="unknown snapshot format") as info:
        load_snapshot(pd.DataFrame({"a": [1], "b": [2]}), "BTC")
    assert "tardis lacks" in str(info.value) and info.value.field == "columns"
    odd = tmp_path / "chain.xlsx"
    odd.write_text("x")
    with pytest.raises(ChainValidationError, match="file type"):
        load_snapshot(odd, "BTC")


def test_missing_currency_and_too_early() -> None:
    with pytest.raises(ChainValidationError, match="no SOL options") as info:
        load_snapshot(TARDIS_CSV, "SOL")
    assert info.value.field == "currency"
    with pytest.raises(ChainValidationError, match="at or before"):
        load_snapshot(TARDIS_CSV, "BTC", at="2026-03-01T07:00Z")
    with pytest.raises(ChainValidationError, match="no XRP"):
        load_snapshot(deribit_flat(), "XRP")


def test_invalid_rows_name_the_instrument() -> None:
    frame = deribit_flat()
    frame.loc[0, "strike"] = -1.0
    with pytest.raises(ChainValidationError) as info:
        load_snapshot(frame, "BTC")
    assert info.value.field == "strike"
    assert info.value.instruments == ["BTC-30JAN26-90000-C"]
