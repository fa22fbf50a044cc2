"""Hull & White (2017) minimum-variance delta: coefficients recovered on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from volcal.risk.hull_white import HullWhiteDelta, fit_hull_white_delta

A, B, C = -0.25, 0.6, -0.5  # the true coefficients of the synthetic market


def _black(
    f: np.ndarray, k: np.ndarray, t: np.ndarray, s: np.ndarray, call: np.ndarray
) -> np.ndarray:
    """Textbook Black-76, D = 1 (independent of volcal's pricer)."""
    sd = s * np.sqrt(t)
    d1 = np.log(f / k) / sd + 0.5 * sd
    d2 = d1 - sd
    c = f * norm.cdf(d1) - k * norm.cdf(d2)
    return np.where(call, c, c - (f - k))


def _market(n: int = 4000, h: float = 0.01, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Options on F = 100 moved by +-h (antithetic pairs); each vol moves by exactly
    E[d sigma] = (A + B d + C d^2) dF / (F sqrt(T)), d the call delta (textbook N(d1))."""
    rng = np.random.default_rng(seed)
    m = n // 2  # each option twice: once up, once down
    k = np.repeat(100.0 * np.exp(rng.uniform(-0.4, 0.4, m)), 2)
    t = np.repeat(rng.uniform(14, 180, m) / 365.0, 2)
    s = np.repeat(rng.uniform(0.4, 0.8, m), 2)
    call = np.repeat(rng.random(m) < 0.5, 2)
    f0 = np.full(2 * m, 100.0)
    d_call = norm.cdf(np.log(f0 / k) / (s * np.sqrt(t)) + 0.5 * s * np.sqrt(t))
    sign = np.where(np.arange(2 * m) % 2 == 0, 1.0, -1.0)
    f1 = f0 * (1 + sign * h)
    ds = (A + B * d_call + C * d_call**2) * (f1 - f0) / (f0 * np.sqrt(t))
    v0 = _black(f0, k, t, s, call)
    v1 = _black(f1, k, t, s + ds, call)
    return f0, f1, v0, v1, k, t, s, call, d_call


def test_coefficients_recovered_on_synthetic_market() -> None:
    f0, f1, v0, v1, k, t, s, call, _ = _market()
    fit = fit_hull_white_delta(f0, f1, v0, v1, k, t, s, call)
    # the residual dV - delta dF - vega d sigma is gamma, vanna, volga: even in dF, they cancel
    # between the up and down move of each option; third-order terms remain, O(h^2) = 1e-4
    assert (fit.a, fit.b, fit.c) == pytest.approx((A, B, C), abs=2e-3)
    assert fit.n == len(f0) and fit.r2 > 0.9


def test_delta_formula_by_hand() -> None:
    """delta_MV = delta + vega / (F sqrt T) (a + b d + c d^2), puts through the call delta."""
    hw = HullWhiteDelta(A, B, C)
    f, k, t, s = 100.0, 110.0, 0.25, 0.6
    sd = s * np.sqrt(t)
    d1 = np.log(f / k) / sd + 0.5 * sd
    dc = norm.cdf(d1)
    vega = f * norm.pdf(d1) * np.sqrt(t)
    want_call = dc + vega / (f * np.sqrt(t)) * (A + B * dc + C * dc * dc)
    assert hw.delta(f, t, dc, vega, True) == pytest.approx(want_call, rel=1e-14)
    assert hw.delta(f, t, dc - 1.0, vega, False) == pytest.approx(want_call - 1.0, rel=1e-14)


def test_min_variance_delta_hedges_better_than_black() -> None:
    """On the synthetic market the fitted delta leaves a much smaller hedging error."""
    f0, f1, v0, v1, k, t, s, call, d_call = _market(seed=1)
    fit = fit_hull_white_delta(f0, f1, v0, v1, k, t, s, call)
    delta_bs = np.where(call, d_call, d_call - 1.0)
    vega = f0 * norm.pdf(norm.ppf(d_call)) * np.sqrt(t)
    mv = fit.delta(f0, t, delta_bs, vega, call)
    err_bs = np.sum((v1 - v0 - delta_bs * (f1 - f0)) ** 2)
    err_mv = np.sum((v1 - v0 - mv * (f1 - f0)) ** 2)
    assert err_mv < 0.1 * err_bs


def test_margin_uses_the_hull_white_delta_when_given() -> None:
    """position_greeks' mv_delta with HW coefficients equals the textbook formula per leg."""
    from dataclasses import replace

    from tests.margin.synthetic import SMILE, synthetic_chain
    from volcal.risk import deribit_pm_params, margin, resolve_positions

    chain = synthetic_chain()
    book = {"symbol": ["BTC-27MAR26-90000-C", "BTC-27MAR26-70000-P"], "quantity": [-2.0, 3.0]}
    import pandas as pd

    pos = resolve_positions(pd.DataFrame(book), chain)
    params = replace(deribit_pm_params(), hull_white=(A, B, C))
    rep = margin(pos, SMILE, chain, params, reference=False)
    tab = rep.positions
    want = 0.0
    for sym, q in zip(book["symbol"], book["quantity"], strict=True):
        row = tab.loc[sym]
        f, vol = row["forward"], row["vol"]
        k = float(pos.table.set_index("symbol").loc[sym, "strike"])
        t = float(pos.table.set_index("symbol").loc[sym, "t"])
        d1 = np.log(f / k) / (vol * np.sqrt(t)) + 0.5 * vol * np.sqrt(t)
        dc = norm.cdf(d1)
        d = dc if sym.endswith("-C") else dc - 1.0
        vega = f * norm.pdf(d1) * np.sqrt(t)
        mv = q * (d + vega / (f * np.sqrt(t)) * (A + B * dc + C * dc * dc))
        assert row["mv_delta"] == pytest.approx(mv, rel=1e-9)
        want += mv * f
    # delta add-on = |sum mv_delta F| R (USD)
    assert rep.components["delta_addon"]["usd"] == pytest.approx(abs(want) * 0.16, rel=1e-9)
