"""OptionChain construction, validation, selection and round trips.

Reference values are independent of volcal: premiums come from QuantLib's ``blackFormula``
(QuantLib 1.3x, Black-76 with discount), implied vols are compared with the vols that generated
them, year fractions are days / 365 counted by hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volcal.chain import QUOTE_COLUMNS, ChainSlice, OptionChain, QuoteFilters, chains_from_quotes
from volcal.errors import ChainValidationError, UnknownInstrumentError

ql = pytest.importorskip("QuantLib")

AS_OF = pd.Timestamp("2026-01-01T08:00:00Z")
EXP_30D = pd.Timestamp("2026-01-31T08:00:00Z")  # 30 days: t = 30/365
EXP_90D = pd.Timestamp("2026-04-01T08:00:00Z")  # 31 + 28 + 31 = 90 days: t = 90/365


def smile(k: float) -> float:
    """A made-up smile, decimal vol as a function of log-moneyness."""
    return 0.55 - 0.10 * k + 0.40 * k * k


def ql_price(call: bool, strike: float, forward: float, t: float, vol: float, disc: float) -> float:
    kind = ql.Option.Call if call else ql.Option.Put
    return float(ql.blackFormula(kind, strike, forward, vol * math.sqrt(t), disc))


def synthetic_raw(
    forwards: dict[pd.Timestamp, float] | None = None,
    *,
    unit: str = "usd",
    discount: float = 1.0,
    half_spread: float = 0.01,
    with_forward: bool = True,
) -> pd.DataFrame:
    """Calls and puts at 9 strikes per expiry, mids = QuantLib Black-76 prices."""
    forwards = forwards or {EXP_30D: 50_000.0, EXP_90D: 50_500.0}
    rows = []
    for expiry, fwd in forwards.items():
        t = (expiry - AS_OF).days / 365.0
        for strike in np.arange(40_000.0, 60_001.0, 2_500.0):
            for call in (True, False):
                vol = smile(math.log(strike / fwd))
                mid = ql_price(call, strike, fwd, t, vol, discount)
                bid, ask = mid * (1 - half_spread), mid * (1 + half_spread)
                day = expiry.day
                mon = expiry.strftime("%b").upper()
                symbol = f"BTC-{day}{mon}{expiry:%y}-{int(strike)}-{'C' if call else 'P'}"
                row = {
                    "symbol": symbol,
                    "expiry": expiry,
                    "strike": strike,
                    "call": call,
                    "open_interest": 10.0,
                    "exchange_iv_mark": vol,
                }
                if unit == "usd":
                    row |= {"bid_usd": bid, "ask_usd": ask, "mark_usd": mid}
                else:
                    row |= {
                        "bid_coin": bid / fwd,
                        "ask_coin": ask / fwd,
                        "mark_coin": mid / fwd,
                        "usd_per_coin": fwd,
                    }
                if with_forward:
                    row["forward"] = fwd
                rows.append(row)
    # shuffled, to check that the chain sorts
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


def build(raw: pd.DataFrame, **kw: object) -> OptionChain:
    return OptionChain.from_quotes(raw, as_of=AS_OF, exchange="deribit", underlying="BTC", **kw)


# ---------------------------------------------------------------------------------------------
# construction


def test_schema_order_and_sorting() -> None:
    chain = build(synthetic_raw())
    q = chain.quotes
    assert list(q.columns) == [*QUOTE_COLUMNS[:-1], "exchange_iv_mark", "filter_reason"]
    assert str(q["expiry"].dtype) == "datetime64[ns, UTC]"
    assert q["call"].dtype == bool
    keys = q[["expiry", "strike", "call"]]
    assert keys.equals(keys.sort_values(["expiry", "strike", "call"]).reset_index(drop=True))
    assert chain.as_of == AS_OF and chain.as_of.tzinfo is not None
    assert chain.exchange == "deribit" and chain.underlying == "BTC"
    assert len(chain) == 2 * 9 * 2
    assert "36 quotes" in repr(chain) and "2 expiries" in repr(chain)


def test_t_is_act365_from_exact_timestamps() -> None:
    chain = build(synthetic_raw())
    t = chain.quotes.groupby("expiry")["t"].unique()
    assert t[EXP_30D].tolist() == [30 / 365]
    assert t[EXP_90D].tolist() == [90 / 365]
    # one hour later: 30 days minus 1 hour = 719 hours of 8760 per year
    later = OptionChain.from_quotes(
        synthetic_raw(),
        as_of="2026-01-01 09:00",  # naive = UTC
        exchange="deribit",
        underlying="BTC",
    )
    assert later.slice(EXP_30D).t == pytest.approx(719 / 8760, rel=1e-15)


@pytest.mark.parametrize("unit", ["usd", "coin"])
def test_units_moneyness_and_implied_vols_reproduce_quantlib_inputs(unit: str) -> None:
    chain = build(synthetic_raw(unit=unit))
    q = chain.quotes
    fwd = q["forward"].to_numpy()
    np.testing.assert_allclose(q["bid_usd"], q["bid_coin"] * q["usd_per_coin"], rtol=1e-15)
    np.testing.assert_allclose(q["usd_per_coin"], fwd)  # the Deribit convention by default
    np.testing.assert_allclose(q["k"], np.log(q["strike"] / fwd), rtol=1e-15)
    assert (q["forward_source"] == "exchange").all()
    assert (q["discount"] == 1.0).all()
    # the vols that generated QuantLib's premiums come back (QuantLib's blackFormula is accurate
    # to ~1e-15 relative here, so 1e-9 in vol is loose)
    np.testing.assert_allclose(q["iv_mark"], q["exchange_iv_mark"], atol=1e-9)
    assert (q["iv_bid"] < q["iv_mark"]).all() and (q["iv_mark"] < q["iv_ask"]).all()


def test_parity_forward_and_discount_are_inferred_when_missing() -> None:
    raw = synthetic_raw(with_forward=False, discount=0.99)
    chain = build(raw)
    q = chain.quotes
    assert (q["forward_source"] == "parity").all()
    by_exp = q.groupby("expiry")[["forward", "discount"]].agg(["min", "max"])
    # symmetric spreads around exact parity prices: the regression is exact up to rounding
    assert by_exp[("forward", "min")][EXP_30D] == pytest.approx(50_000.0, rel=1e-10)
    assert by_exp[("forward", "max")][EXP_90D] == pytest.approx(50_500.0, rel=1e-10)
    assert by_exp[("discount", "min")].to_numpy() == pytest.approx([0.99, 0.99], rel=1e-10)
    np.testing.assert_allclose(q["iv_mark"], q["exchange_iv_mark"], atol=1e-8)
    # a given discount is kept (only F is fitted)
    fixed = build(raw.assign(discount=0.99))
    assert (fixed.quotes["discount"] == 0.99).all()
    assert fixed.slice(EXP_30D).forward == pytest.approx(50_000.0, rel=1e-10)


def test_forward_filled_from_same_expiry_when_partially_missing() -> None:
    raw = synthetic_raw()
    raw.loc[raw["strike"] == 45_000.0, "forward"] = np.nan
    chain = build(raw)
    assert chain.slice(EXP_30D).forward == 50_000.0
    assert (chain.quotes["forward_source"] == "exchange").all()


def test_chains_from_quotes_matches_from_quotes() -> None:
    raw = synthetic_raw()
    later = AS_OF + pd.Timedelta(hours=6)
    both = pd.concat([raw.assign(as_of=later), raw.assign(as_of=AS_OF)], ignore_index=True)
    chains = chains_from_quotes(both, exchange="deribit", underlying="BTC")
    assert [c.as_of for c in chains] == [AS_OF, later]
    assert chains[0].equals(build(raw))
    assert chains[1].equals(
        OptionChain.from_quotes(raw, as_of=later, exchange="deribit", underlying="BTC")
    )


def test_call_column_accepts_words() -> None:
    raw = synthetic_raw()
    raw["call"] = np.where(raw["call"], "call", "P")
    assert build(raw).equals(build(synthetic_raw()))


# ---------------------------------------------------------------------------------------------
# validation: ChainValidationError names the field and the instruments


def _raises(raw: pd.DataFrame, field: str, instrument: str | None, **kw: object) -> None:
    with pytest.raises(ChainValidationError) as info:
        build(raw, **kw)
    assert info.value.field == field
    assert field in str(info.value)
    if instrument is not None:
        assert instrument in info.value.instruments
        assert instrument in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_required_column() -> None:
    _raises(synthetic_raw().drop(columns="strike"), "strike", None)


def test_missing_price_columns() -> None:
    _raises(synthetic_raw().drop(columns=["bid_usd"]), "bid_coin", None)


def test_nan_strike() -> None:
    raw = synthetic_raw()
    raw.loc[0, "strike"] = np.nan
    _raises(raw, "strike", raw.loc[0, "symbol"])


def test_negative_strike() -> None:
    raw = synthetic_raw()
    raw.loc[3, "strike"] = -100.0
    _raises(raw, "strike", raw.loc[3, "symbol"])


def test_non_numeric_strike() -> None:
    raw = synthetic_raw()
    raw["strike"] = raw["strike"].astype(object)
    raw.loc[2, "strike"] = "fifty"
    _raises(raw, "strike", raw.loc[2, "symbol"])


def test_expired_options() -> None:
    raw = synthetic_raw()
    expired = raw["expiry"] == EXP_30D
    raw.loc[expired, "expiry"] = AS_OF - pd.Timedelta(hours=1)
    _raises(raw, "expiry", raw.loc[expired, "symbol"].iloc[0])
    # allowed on request: kept, no vol, flagged
    chain = build(raw, allow_expired=True)
    gone = chain.quotes[chain.quotes["t"] < 0]
    assert len(gone) == 18 and gone["iv_mark"].isna().all()
    assert (gone["filter_reason"] == "expired").all()


def test_option_exactly_at_expiry_counts_as_expired() -> None:
    raw = synthetic_raw()
    raw.loc[0, "expiry"] = AS_OF
    _raises(raw, "expiry", raw.loc[0, "symbol"])


def test_nan_expiry() -> None:
    raw = synthetic_raw()
    raw["expiry"] = raw["expiry"].astype(object)
    raw.loc[5, "expiry"] = None
    _raises(raw, "expiry", raw.loc[5, "symbol"])


def test_duplicate_symbols() -> None:
    raw = synthetic_raw()
    raw = pd.concat([raw, raw.iloc[[7]]], ignore_index=True)
    _raises(raw, "symbol", raw.loc[7, "symbol"])


def test_crossed_quote() -> None:
    raw = synthetic_raw()
    raw.loc[4, "ask_usd"] = raw.loc[4, "bid_usd"] * 0.5
    _raises(raw, "ask_usd", raw.loc[4, "symbol"])
    chain = build(raw, allow_crossed=True)
    row = chain.quotes[chain.quotes["symbol"] == raw.loc[4, "symbol"]]
    assert row["filter_reason"].item() == "crossed"


def test_negative_and_infinite_prices() -> None:
    raw = synthetic_raw()
    raw.loc[1, "bid_usd"] = -1.0
    _raises(raw, "bid_usd", raw.loc[1, "symbol"])
    raw = synthetic_raw()
    raw.loc[1, "mark_usd"] = np.inf
    _raises(raw, "mark_usd", raw.loc[1, "symbol"])


@pytest.mark.parametrize("bad", [np.inf, -50_000.0, 0.0])
def test_non_finite_or_non_positive_forward(bad: float) -> None:
    raw = synthetic_raw()
    raw.loc[6, "forward"] = bad
    _raises(raw, "forward", raw.loc[6, "symbol"])


def test_bad_call_flag() -> None:
    raw = synthetic_raw()
    raw["call"] = raw["call"].map({True: "C", False: "P"}).astype(object)
    raw.loc[8, "call"] = "straddle"
    _raises(raw, "call", raw.loc[8, "symbol"])


def test_no_forward_and_no_pairs_for_parity() -> None:
    raw = synthetic_raw(with_forward=False)
    raw = raw[~((raw["expiry"] == EXP_90D) & ~raw["call"])]  # no puts in the 90-day expiry
    _raises(raw, "forward", raw.loc[raw["expiry"] == EXP_90D, "symbol"].iloc[0])


def test_coin_prices_without_forward_need_a_reference() -> None:
    raw = synthetic_raw(unit="coin", with_forward=False).drop(columns="usd_per_coin")
    _raises(raw, "usd_per_coin", raw.loc[0, "symbol"])


def test_empty_and_non_frame_input() -> None:
    with pytest.raises(ChainValidationError):
        build(synthetic_raw().iloc[:0])
    with pytest.raises(ChainValidationError):
        build([1, 2, 3])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# selection, immutability, slices


def test_methods_return_new_chains_and_leave_the_original_alone() -> None:
    chain = build(synthetic_raw())
    before = chain.quotes.copy()
    short = chain.select_expiries([EXP_30D])
    tight = chain.filter(max_rel_spread=0.001)
    usable = tight.usable()
    assert short.expiries == (EXP_30D,)
    assert len(short) == 18
    assert (tight.quotes["filter_reason"] == "wide_spread").all()  # 2 % spreads everywhere
    assert len(usable) == 0 and len(tight) == len(chain)
    assert chain.quotes.equals(before)
    with pytest.raises(AttributeError):
        chain.exchange = "okx"  # type: ignore[misc]


def test_select_expiries_by_t_and_otm() -> None:
    chain = build(synthetic_raw())
    assert chain.select_expiries(min_t=31 / 365).expiries == (EXP_90D,)
    assert chain.select_expiries(max_t=30 / 365).expiries == (EXP_30D,)
    otm = chain.otm().quotes
    assert len(otm) == 18  # one option per strike and expiry
    assert (
        (otm["call"] & (otm["strike"] >= otm["forward"]))
        | (~otm["call"] & (otm["strike"] < otm["forward"]))
    ).all()


def test_slices() -> None:
    chain = build(synthetic_raw())
    slices = chain.slices()
    assert [s.expiry for s in slices] == [EXP_30D, EXP_90D] == list(chain.expiries)
    s = slices[1]
    assert isinstance(s, ChainSlice)
    assert s.t == 90 / 365 and s.forward == 50_500.0 and s.forward_source == "exchange"
    assert len(s) == 18 and len(s.otm()) == 9
    assert s.to_chain().equals(chain.select_expiries([EXP_90D]))
    assert chain.slice("2026-01-31 08:00").expiry == EXP_30D
    with pytest.raises(UnknownInstrumentError):
        chain.slice("2026-02-01")


def test_summary_atm_vol() -> None:
    summary = build(synthetic_raw()).summary()
    assert list(summary["expiry"]) == [EXP_30D, EXP_90D]
    # strikes straddle the forward; linear interpolation in k of a smooth smile: within 1e-3
    assert summary["atm_iv_mark"].to_numpy() == pytest.approx([smile(0.0)] * 2, abs=2e-3)
    assert (summary["n_usable"] == 18).all()


# ---------------------------------------------------------------------------------------------
# round trips


def test_frame_round_trip() -> None:
    chain = build(synthetic_raw())
    frame = chain.to_frame()
    assert list(frame.columns[:3]) == ["as_of", "exchange", "underlying"]
    assert OptionChain.from_frame(frame).equals(chain)
    # shuffled rows come back sorted
    assert OptionChain.from_frame(frame.sample(frac=1.0, random_state=3)).equals(chain)


def test_frame_with_two_instants_is_rejected() -> None:
    frame = build(synthetic_raw()).to_frame()
    frame.loc[0, "as_of"] = frame.loc[0, "as_of"] + pd.Timedelta(seconds=1)
    with pytest.raises(ChainValidationError, match="one as_of"):
        OptionChain.from_frame(frame)
    with pytest.raises(ChainValidationError, match="missing column"):
        OptionChain.from_frame(frame.drop(columns="iv_mark"))


def test_parquet_round_trip_is_atomic(tmp_path: Path) -> None:
    chain = build(synthetic_raw())
    path = chain.to_parquet(tmp_path / "sub" / "chain.parquet")
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["chain.parquet"]  # no temp file left
    assert OptionChain.read_parquet(path).equals(chain)


def test_filters_passed_at_construction() -> None:
    chain = build(synthetic_raw(), filters=QuoteFilters(max_rel_spread=0.001))
    assert set(chain.quotes["filter_reason"]) == {"wide_spread"}
