"""FHS confidence scale: scenarios, repricing and the pooled quantile against hand computations;
no look-ahead in the backtest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from volcal.risk import SmileDynamics, resolve_positions
from volcal.risk.fhs import (
    HistoricalScenarios,
    fhs_confidence_scale,
    historical_scenarios,
    scenario_losses,
)
from volcal.risk.history import NODES_DAYS, HistoryStats

from .synthetic import AS_OF, SMILE, forward_of, synthetic_chain, t_of

LAM = 0.94


def _two_regime_stats(a: float = 0.01, b: float = 0.02, ssr_skew: float = -0.2) -> HistoryStats:
    """Daily snapshots: 4 log-returns of +-a, then 4 of +-2a (alternating sign); ln ATM vol
    moves by +-b every day (the same at every maturity), the ATM skew is ``ssr_skew``."""
    signs = np.array([1, -1, 1, -1, 1, -1, 1, -1], dtype=float)
    rets = np.concatenate([np.full(4, a), np.full(4, 2 * a)]) * signs
    logf = np.log(50_000.0) + np.concatenate([[0.0], np.cumsum(rets)])
    lv = np.log(0.5) + np.concatenate([[0.0], np.cumsum(b * -signs)])
    times = pd.date_range("2026-01-01 08:00", periods=logf.size, freq="1D", tz="UTC")
    table = pd.DataFrame({"as_of": times, "spot": np.exp(logf)})
    for d in NODES_DAYS:
        table[f"fwd_{d}"] = np.exp(logf)
        table[f"atm_{d}"] = np.exp(lv)
        table[f"skew_{d}"] = ssr_skew
    return HistoryStats(table, "BTC")


def test_historical_scenarios_hand_computation() -> None:
    a, b, skew, ssr = 0.01, 0.02, -0.2, 1.5
    st = _two_regime_stats(a, b, skew)
    sc = historical_scenarios(st, "1D", ssr=ssr, ewma_lambda=LAM)
    assert len(sc) == 8
    # EWMA variance per day: seed = mean of the (fewer than 10) squared returns
    # = (4 a^2 + 4 (2a)^2) / 8 = 2.5 a^2, then v_n = lam v + (1 - lam) r_n^2
    rets = np.diff(np.log(st.table["fwd_30"].to_numpy()))
    v = [2.5 * a * a]
    for r in rets:
        v.append(LAM * v[-1] + (1 - LAM) * r * r)
    z = rets / np.sqrt(np.asarray(v[:-1]))
    np.testing.assert_allclose(sc.move, np.expm1(z * np.sqrt(v[-1])), rtol=1e-12)
    # vol changes net of the dynamic: ln s1 - ln(s0 + SSR skew ln(F1/F0)); ln-vol changes all
    # have size b, so their EWMA variance is b^2 throughout and the rescaling is 1
    atm = st.table["atm_30"].to_numpy()
    want = np.log(atm[1:]) - np.log(atm[:-1] + ssr * skew * rets)
    for col in range(len(NODES_DAYS)):
        np.testing.assert_allclose(sc.dlog_vol[:, col], want, rtol=1e-12)
    assert sc.dt == pytest.approx(1 / 365)
    # without a dynamic the whole change
    whole = historical_scenarios(st, "1D", ssr=None, ewma_lambda=LAM)
    np.testing.assert_allclose(whole.dlog_vol[:, 2], np.diff(np.log(atm)), rtol=1e-12)


def _black(f: float, k: float, t: float, v: float, call: bool) -> float:
    if t <= 0:
        return max(f - k, 0.0) if call else max(k - f, 0.0)
    sd = v * np.sqrt(t)
    d1 = np.log(f / k) / sd + 0.5 * sd
    d2 = d1 - sd
    if call:
        return float(f * norm.cdf(d1) - k * norm.cdf(d2))
    return float(k * norm.cdf(-d2) - f * norm.cdf(-d1))


def test_scenario_losses_hand_black76() -> None:
    chain = synthetic_chain()
    book = pd.DataFrame(
        {"symbol": ["BTC-27MAR26-90000-C", "BTC-27FEB26-75000-P"], "quantity": [-2.0, 1.5]}
    )
    pos = resolve_positions(book, chain)
    ssr = 1.6
    moves = np.array([-0.08, 0.0, 0.05])
    dlog = np.array([[0.10] * 6, [0.0] * 6, [-0.05, -0.04, -0.03, -0.02, -0.01, 0.0]])
    nodes = np.asarray(NODES_DAYS, dtype=float)
    sc = HistoricalScenarios(
        move=moves,
        dlog_vol=dlog,
        node_days=nodes,
        start=pd.DatetimeIndex([AS_OF] * 3),
        end=pd.DatetimeIndex([AS_OF] * 3),
        dt=1 / 365,
        ssr=ssr,
    )
    got = scenario_losses(pos, SMILE, sc, SmileDynamics(ssr))
    for s, m in enumerate(moves):
        pnl = 0.0
        for code, k, call, q in (
            ("27MAR26", 90_000.0, True, -2.0),
            ("27FEB26", 75_000.0, False, 1.5),
        ):
            t, f0 = t_of(code), forward_of(code)
            f1 = f0 * (1 + m)
            v0 = float(SMILE.implied_vol(k, t))
            x = float(np.interp(t * 365.0, nodes, dlog[s]))
            v1 = float(SMILE.implied_vol(k * (1 + m) ** -(1 - ssr), t)) * np.exp(x)
            pnl += q * (_black(f1, k, t - 1 / 365, v1, call) / f1 - _black(f0, k, t, v0, call) / f0)
        assert got[s] == pytest.approx(-pnl, rel=1e-9, abs=1e-12)


def test_fhs_scale_is_the_pooled_quantile() -> None:
    # two books, 100 scenarios each; scores (loss - liq) / risk pooled: 200 scores, the 99 %
    # scale is the ceil(200 * 0.99) = 198th smallest
    loss1 = np.arange(100, dtype=float)  # risk 10, liq 1: scores (i - 1) / 10
    loss2 = np.arange(100, dtype=float) * 3.0  # risk 100, liq 0: scores 0.03 i
    c = fhs_confidence_scale([loss1, loss2], [10.0, 100.0], [1.0, 0.0], 0.99)
    scores = np.sort(np.concatenate([(loss1 - 1) / 10, loss2 / 100]))
    assert c == pytest.approx(scores[197])
    assert c == pytest.approx(9.6)  # the three largest: 9.8, 9.7, 9.6 (book 1); book 2 tops at 2.97
    # a book without risk is left out; no book: NaN
    assert fhs_confidence_scale([loss1, loss2], [10.0, 0.0], [1.0, 0.0], 0.99) == pytest.approx(9.7)
    assert np.isnan(fhs_confidence_scale([loss1], [0.0], [0.0]))
    with pytest.raises(ValueError):
        fhs_confidence_scale([loss1], [1.0, 2.0], [0.0])


def test_fhs_scale_covers_the_simulated_losses() -> None:
    # the margin c risk + liq covers exactly 99 % of the pooled simulated losses
    rng = np.random.default_rng(3)
    losses = [rng.standard_t(4, 500) * s for s in (1.0, 2.0, 0.5)]
    risks, liqs = [3.0, 9.0, 1.0], [0.1, 0.0, 0.05]
    c = fhs_confidence_scale(losses, risks, liqs, 0.99)
    covered = sum(
        int(np.sum(x <= c * r + lq)) for x, r, lq in zip(losses, risks, liqs, strict=True)
    )
    assert covered == int(np.ceil(1500 * 0.99))


@pytest.mark.realdata
def test_fhs_scale_has_no_look_ahead(btc_chains) -> None:  # type: ignore[no-untyped-def]
    """The scale at an instant is the same whether or not the later snapshots exist."""
    from volcal.risk import MarkSurface
    from volcal.risk.backtest import backtest_margin, random_books, standard_books

    books = {k: v for k, v in standard_books().items() if k in ("short_straddle", "risk_reversal")}
    kw = dict(step="2D", surface=MarkSurface.from_chain, calibration_books=random_books(3, seed=2))
    short = backtest_margin(btc_chains[:100], books, **kw).fhs_scales  # type: ignore[arg-type]
    long = backtest_margin(btc_chains[:116], books, **kw).fhs_scales  # type: ignore[arg-type]
    assert len(short) >= 4 and len(long) > len(short)
    merged = short.merge(long, on=["as_of", "model", "pool"], suffixes=("_s", "_l"))
    assert len(merged) == len(short)
    np.testing.assert_allclose(merged["scale_s"], merged["scale_l"], rtol=1e-12)
    assert (merged["n_scenarios_s"] == merged["n_scenarios_l"]).all()
    assert merged["scale_s"].between(0.05, 5).all()
