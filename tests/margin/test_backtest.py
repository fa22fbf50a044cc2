"""Backtest: Kupiec's test against published acceptance regions; a short real-data run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volcal.risk.backtest import backtest_margin, kupiec_pof, standard_books


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
    methods = {"skew", "skew_no_ext", "skew_ext_sq", "flat", "standard", "reference_pm"}
    assert set(rec["method"]) == methods
    assert rec.groupby(["as_of", "book"]).size().eq(len(methods)).all()
    piv = rec.pivot_table(index=["as_of", "book"], columns="method", values="margin_coin")
    assert (piv["skew_no_ext"] <= piv["skew"] + 1e-15).all()
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
