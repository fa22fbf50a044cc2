"""Backtest: Kupiec's test against published acceptance regions; a short real-data run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volcal.risk.backtest import (
    apply_confidence_scale,
    backtest_margin,
    kupiec_pof,
    standard_books,
)
from volcal.risk.params import confidence_scale


@pytest.mark.parametrize(
    ("n", "accepted", "rejected"),
    # Jorion, "Value at Risk" (3rd ed.), table 6-3 (Kupiec 1995 non-rejection regions, p = 1 %,
    # 95 % test): T = 255: N < 7; T = 510: 1 < N < 11; T = 1000: 4 < N < 17. (The table shows
    # no lower bound at T = 255; the likelihood ratio itself rejects N = 0 there, LR = 5.1.)
    [(255, [1, 6], [7]), (510, [2, 10], [1, 11]), (1000, [5, 16], [4, 17])],
)
def test_kupiec_regions(n: int, accepted: list[int], rejected: list[int]) -> None:
    for x in accepted:
        assert kupiec_pof(x, n, 0.99)[1] > 0.05, (n, x)
    for x in rejected:
        assert kupiec_pof(x, n, 0.99)[1] < 0.05, (n, x)


def test_kupiec_zero_exceedances_closed_form() -> None:
    lr, _ = kupiec_pof(0, 100, 0.99)
    assert lr == pytest.approx(-200 * np.log(0.99), rel=1e-12)
    with pytest.raises(ValueError):
        kupiec_pof(3, 2, 0.99)


@pytest.mark.realdata
def test_short_backtest_on_deribit(btc_chains) -> None:  # type: ignore[no-untyped-def]
    chains = btc_chains
    books = {k: v for k, v in standard_books().items() if k in ("short_straddle", "long_options")}
    res = backtest_margin(chains[:140], books, step="3D")
    rec = res.records
    methods = {
        "skew",
        "skew_raw",
        "skew_exchange_ext",
        "skew_exchange_ext_scaled",
        "skew_no_ext",
        "skew_ext_sq",
        "flat",
        "flat_raw",
        "flat_exchange_ext",
        "standard",
        "reference_pm",
        "skew_fhs",
        "flat_fhs",
    }
    assert set(rec["method"]) == methods
    # the default surface is the calibrated SVI fit; FHS scales on the test books' pool
    assert set(rec["surface"]) == {"SviSurface"}
    sc = res.fhs_scales
    assert set(sc["model"]) == {"skew", "flat"} and set(sc["pool"]) == {"test"}
    assert sc["scale"].between(0.05, 5).all() and (sc["n_books"] == 2).all()
    fhs = rec[rec["method"] == "skew_fhs"].merge(sc[sc["model"] == "skew"], on="as_of")
    np.testing.assert_allclose(
        fhs["margin_coin"], fhs["scale_y"] * fhs["risk_coin"] + fhs["liquidity_coin"], rtol=1e-12
    )
    assert rec.groupby(["as_of", "book"]).size().eq(len(methods)).all()
    piv = rec.pivot_table(index=["as_of", "book"], columns="method", values="margin_coin")
    # dropping scenarios can only lower the margin; R/|m| >= (R/|m|)^2 for |m| > R
    assert (piv["skew_no_ext"] <= piv["skew_raw"] + 1e-15).all()
    assert (piv["skew_ext_sq"] <= piv["skew_exchange_ext"] + 1e-15).all()
    # on BTC the tail probability of the extended moves is far below R/|m| x 1 %
    assert (piv["skew_raw"] <= piv["skew_exchange_ext"] + 1e-15).all()
    # realised loss of the first straddle by hand: coin marks one day apart
    first = rec[(rec["book"] == "short_straddle")].iloc[0]
    times = pd.DatetimeIndex([c.as_of for c in chains])
    i = int(times.get_loc(first["as_of"]))
    j = int(times.searchsorted(times[i] + pd.Timedelta("1D")))
    book = books["short_straddle"](chains[i])
    m0 = chains[i].quotes.set_index("symbol").loc[book["symbol"], "mark_coin"].to_numpy()
    m1 = chains[j].quotes.set_index("symbol").loc[book["symbol"], "mark_coin"].to_numpy()
    assert first["loss_coin"] == pytest.approx(float(np.sum(m1 - m0)), rel=1e-12)  # short 1 each
    s = res.summary()
    assert set(s.columns) >= {"coverage", "kupiec_p", "avg_margin_coin", "es_excess_coin"}


def _records(n_days: int = 60, books: int = 10, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    rows = []
    for d in range(n_days):
        for b in range(books):
            risk = rng.uniform(0.5, 2.0)
            rows.append(
                {
                    "as_of": t0 + pd.Timedelta(days=d),
                    "loss_end": t0 + pd.Timedelta(days=d + 1),
                    "book": f"b{b}",
                    "method": "skew_raw",
                    "risk_coin": risk,
                    "liquidity_coin": 0.01,
                    "loss_coin": 0.01 + risk * rng.standard_normal() * 0.3,
                    "margin_coin": risk + 0.01,
                    "scale": 1.0,
                }
            )
    return pd.DataFrame(rows)


def test_confidence_scale_uses_only_losses_realised_before() -> None:
    rec = _records()
    out = apply_confidence_scale(rec, "skew_raw", "skew", 0.99, min_history_days=0.0)
    day = rec["as_of"].unique()
    # by hand at day 30: the scores of book-days whose loss ended strictly before it
    t = day[30]
    past = rec[rec["loss_end"] < t]
    c = confidence_scale((past["loss_coin"] - 0.01) / past["risk_coin"], 0.99)
    at = out[out["as_of"] == t]
    assert np.allclose(at["scale"], c)
    assert np.allclose(at["margin_coin"], c * at["risk_coin"] + 0.01)
    assert (at["exceed"] == (at["loss_coin"] > at["margin_coin"])).all()
    # before 99 scores exist (days 0..9 give 10 per day, realised a day later) the scale is 1
    assert (out[out["as_of"] <= day[9]]["scale"] == 1.0).all()
    assert (out[out["as_of"] >= day[11]]["scale"] != 1.0).all()
    # no look-ahead: changing every loss from day 30 on leaves the scales up to day 30 alone
    crash = rec.copy()
    crash.loc[crash["as_of"] >= t, "loss_coin"] *= 50.0
    out2 = apply_confidence_scale(crash, "skew_raw", "skew", 0.99, min_history_days=0.0)
    early = out["as_of"] <= t
    assert np.array_equal(out.loc[early, "scale"], out2.loc[early, "scale"])
    assert not np.array_equal(out.loc[~early, "scale"], out2.loc[~early, "scale"])
    # a separate calibration set is used when given
    other = _records(seed=9)
    out3 = apply_confidence_scale(
        rec, "skew_raw", "skew", 0.99, calibration=other, min_history_days=0.0
    )
    past = other[other["loss_end"] < t]
    c3 = confidence_scale((past["loss_coin"] - 0.01) / past["risk_coin"], 0.99)
    assert np.allclose(out3[out3["as_of"] == t]["scale"], c3)


def test_confidence_scale_minimum_history_and_stress_floor() -> None:
    rec = _records()
    day = rec["as_of"].unique()
    # default: scale 1 until the realised scores span 30 days (first loss ended on day 1)
    out = apply_confidence_scale(rec, "skew_raw", "skew", 0.99)
    assert (out[out["as_of"] <= day[30]]["scale"] == 1.0).all()
    t = day[31]
    past = rec[rec["loss_end"] < t]
    c = confidence_scale((past["loss_coin"] - 0.01) / past["risk_coin"], 0.99)
    assert np.allclose(out[out["as_of"] == t]["scale"], c)
    # rolling 10-day window with the 25 % stress floor, by hand: after a stressed period the
    # scale may fall, but not below 0.75 c_recent + 0.25 max(c_recent so far)
    stressed = rec.copy()
    sel = (stressed["as_of"] >= day[5]) & (stressed["as_of"] < day[12])
    stressed.loc[sel, "loss_coin"] *= 4.0
    roll = apply_confidence_scale(
        stressed, "skew_raw", "skew", 0.99, min_history_days=0.0, window_days=10.0
    )
    scores = (stressed["loss_coin"] - 0.01) / stressed["risk_coin"]
    c_max, seen = 0.0, []
    for t in day:
        window = (stressed["loss_end"] < t) & (stressed["loss_end"] >= t - pd.Timedelta(days=10))
        cr = confidence_scale(scores[window], 0.99)
        got = float(roll[roll["as_of"] == t]["scale"].iloc[0])
        if np.isnan(cr):
            assert got == 1.0
            continue
        c_max = max(c_max, cr)
        seen.append((cr, c_max))
        assert got == pytest.approx(max(cr, 0.75 * cr + 0.25 * c_max), rel=1e-12)
    assert any(cr < 0.5 * cm for cr, cm in seen)  # the floor did bind after the stress
