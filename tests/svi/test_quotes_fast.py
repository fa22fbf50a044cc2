"""Quote selection on arrays (``selection_arrays``, ``slices_from_selection``, ``with_columns``)
and the fits' one-step assembly, against the rules and the plain pandas routes."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from tests.svi.synthetic import svi_quotes
from volcal.implied import implied_vol
from volcal.svi import SviRaw, fit_essvi, select_quotes, slices_from_quotes
from volcal.svi.quotes import selection_arrays, slices_from_selection, with_columns
from volcal.svi.surface_fit import _prepare, assemble_fit, prepare_slices

SMILES = [
    (0.004, SviRaw(a=0.0002, b=0.01, rho=-0.2, m=0.0, sigma=0.05)),  # under 2 days
    (0.1, SviRaw(a=0.004, b=0.05, rho=-0.3, m=0.02, sigma=0.15)),
    (0.5, SviRaw(a=0.02, b=0.10, rho=-0.4, m=0.05, sigma=0.25)),
]


@pytest.fixture(scope="module")
def quotes() -> pd.DataFrame:
    q = svi_quotes(SMILES, n=11, half_spread=0.004)
    # one quote broken per rule, all on calls of the 0.1 expiry with k >= 0
    calls = q.index[(q["t"] == 0.1) & q["call"] & (q["k"] >= 0)]
    q.loc[calls[0], "filter_reason"] = "wide_spread"
    q.loc[calls[1], "bid_usd"] = 0.0
    q.loc[calls[2], "iv_bid"] = np.nan
    q.loc[calls[3], ["iv_bid", "iv_ask"]] = [0.6, 0.5]
    q.loc[calls[4], "ask_usd"] = 1e9  # the mid is above the forward: no vol at mid
    # the long expiry keeps only 4 out-of-the-money quotes: too few
    otm_long = q.index[(q["t"] == 0.5) & (q["call"] == (q["k"] >= 0))]
    q.loc[otm_long[4:], "filter_reason"] = "iv_not_found"
    return q


def test_exclusion_rules(quotes: pd.DataFrame) -> None:
    sel = select_quotes(quotes)
    reason = sel["excluded_reason"]
    calls = quotes.index[(quotes["t"] == 0.1) & quotes["call"] & (quotes["k"] >= 0)]
    assert reason[calls[0]] == "filter: wide_spread"
    assert reason[calls[1]] == "one-sided (no bid or no ask)"
    assert reason[calls[2]] == "no implied vol at bid or ask"
    assert reason[calls[3]] == "crossed (iv_ask < iv_bid)"
    assert reason[calls[4]] == "no implied vol at mid"
    short = quotes["t"] == 0.004
    assert (reason[short] == "t <= 0.00547945 years").all()
    itm = (quotes["t"] == 0.1) & (quotes["call"] != (quotes["k"] >= 0))
    assert (reason[itm] == "in the money (its out-of-the-money twin is used)").all()
    otm_long = (quotes["t"] == 0.5) & (quotes["call"] == (quotes["k"] >= 0))
    few = otm_long & (quotes["filter_reason"] == "")
    assert few.sum() == 4
    assert (reason[few] == "expiry has 4 < 6 two-sided OTM quotes").all()
    used = sel["used"]
    assert (used == (reason == "")).all() and used.sum() == 6
    # iv_mid is the Black-76 vol of the mid premium (implied independently here)
    u = sel[used]
    mid = 0.5 * (u["bid_usd"] + u["ask_usd"])
    want = implied_vol(mid, u["forward"], u["strike"], u["t"], u["call"], u["discount"])
    np.testing.assert_allclose(u["iv_mid"], want, rtol=1e-14)
    assert np.isnan(sel.loc[~used, "weight"]).all()
    # the table keeps every input row and column, then appends four
    assert list(sel.columns) == [*quotes.columns, "iv_mid", "weight", "used", "excluded_reason"]
    pd.testing.assert_frame_equal(sel[quotes.columns], quotes)


@pytest.mark.parametrize("weights", ["vega_spread", "vega", "uniform"])
def test_slices_match_the_pandas_route(quotes: pd.DataFrame, weights: str) -> None:
    """``prepare_slices`` (arrays) cuts the same slices as ``slices_from_quotes`` (groupby)."""
    _, selected, slices, _ = prepare_slices(quotes, 2 / 365, 6, 0.005, weights)
    pd.testing.assert_frame_equal(selected, select_quotes(quotes, weights=weights))
    ref = slices_from_quotes(select_quotes(quotes, weights=weights))
    assert len(slices) == len(ref) == 1
    for a, b in zip(slices, ref, strict=True):
        assert (a.expiry, a.t, a.forward) == (b.expiry, b.t, b.forward)
        for name in ("k", "iv_bid", "iv_ask", "iv_mid", "weight"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        pd.testing.assert_index_equal(a.index, b.index)


def test_string_expiries_and_shuffled_rows(quotes: pd.DataFrame) -> None:
    """Selection does not depend on the expiry column's type or on the row order."""
    q = quotes.sample(frac=1.0, random_state=4)
    sel = selection_arrays(q)
    q_str = q.assign(expiry=q["expiry"].astype(str))
    sel_str = selection_arrays(q_str)
    np.testing.assert_array_equal(sel.used, sel_str.used)
    np.testing.assert_array_equal(sel.weight, sel_str.weight)
    a, b = slices_from_selection(q, sel), slices_from_selection(q_str, sel_str)
    assert [d.t for d in a] == [d.t for d in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.k, y.k)
        assert np.all(np.diff(x.k) >= 0)


def test_with_columns_replaces_existing_and_handles_duplicate_labels(
    quotes: pd.DataFrame,
) -> None:
    sel = select_quotes(quotes)
    again = select_quotes(sel)  # the four columns exist already: replaced in place
    pd.testing.assert_frame_equal(again, sel)
    dup = quotes.set_axis([0] * len(quotes))  # non-unique labels: no alignment possible
    out = with_columns(dup, {"x": np.arange(len(dup))})
    np.testing.assert_array_equal(out["x"], np.arange(len(dup)))
    assert list(out.columns) == [*quotes.columns, "x"]


def test_assemble_from_selection_equals_assemble_from_table() -> None:
    smiles = [(t, SviRaw(a=0.01 * t, b=0.08, rho=-0.3, m=0.02, sigma=0.2)) for t in (0.1, 0.3, 0.7)]
    chain = svi_quotes(smiles, n=15)
    fit = fit_essvi(chain)
    raw, sel, slices, kb = _prepare(chain, 2 / 365, 6, 0.005)
    _, table, slices2, kb2 = prepare_slices(chain, 2 / 365, 6, 0.005)
    rows = fit.params.drop(columns=["expiry", "t", "forward", "n_quotes", "rmse_iv", "inside"])
    args = dict(converged=[True] * len(slices), iterations=0, nfev=0, message="", settings={})
    local = list(zip(fit.params["m"], fit.params["sigma"], strict=True))
    a = assemble_fit(
        "essvi", chain, raw, sel, slices, fit.surface, rows.to_dict("records"), local, kb,
        start=time.perf_counter(), **args,
    )  # fmt: skip
    b = assemble_fit(
        "essvi", chain, raw, table, slices2, fit.surface, rows.to_dict("records"), local, kb2,
        start=time.perf_counter(), **args,
    )  # fmt: skip
    pd.testing.assert_frame_equal(a.quotes, b.quotes)
    pd.testing.assert_frame_equal(a.quotes, fit.quotes)
    pd.testing.assert_frame_equal(a.params, b.params)
    assert (a.rmse_iv, a.inside_share) == (b.rmse_iv, b.inside_share)
    pd.testing.assert_frame_equal(a.arbitrage.butterfly, b.arbitrage.butterfly)
    # residuals: iv_fit is the surface's vol at each used quote, outside_iv its distance
    u = a.quotes[a.quotes["used"]]
    w = fit.surface.total_variance(u["k"].to_numpy(), u["t"].to_numpy())
    np.testing.assert_allclose(u["iv_fit"], np.sqrt(w / u["t"]), rtol=1e-15)
    out = np.clip(u["iv_fit"], u["iv_bid"], u["iv_ask"]) - u["iv_fit"]
    np.testing.assert_allclose(u["outside_iv"], -out, atol=1e-16)
