"""Scenario grids, smile dynamics and full revaluation, against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.margin.synthetic import SMILE, forward_of, synthetic_chain, t_of
from volcal import black_price
from volcal.risk import (
    ParametricSmile,
    ScenarioSet,
    SmileDynamics,
    VolShock,
    pm_grid,
    resolve_positions,
    revalue,
    span_grid,
)

NO_SHOCK = VolShock(0.0, 0.0)


@pytest.fixture(scope="module")
def chain():  # type: ignore[no-untyped-def]
    return synthetic_chain()


def test_pm_grid_shape_and_weights() -> None:
    g = pm_grid(0.1)
    # 9 moves x 3 vol states + the 8 extended moves beyond 10 %
    assert len(g) == 35
    assert np.allclose(np.unique(g.move[:27]), np.linspace(-0.1, 0.1, 9))
    ext = g.move[27:]
    assert np.allclose(ext, [-0.66, -0.5, -0.33, 0.33, 0.5, 1.0, 2.0, 5.0])
    assert np.allclose(g.weight[27:], 0.1 / np.abs(ext))
    assert np.all(g.vol[27:] == 0) and np.all(g.weight[:27] == 1)
    # a range beyond 33 % drops the extended moves inside it
    assert len(pm_grid(0.4)) == 27 + 6  # -66 %, -50 %, +50 %, +100 %, +200 %, +500 %


def test_span_grid_shape() -> None:
    g = span_grid(0.09)
    assert len(g) == 16
    assert np.allclose(
        sorted(set(np.round(g.move[:14], 12))), np.array([-3, -2, -1, 0, 1, 2, 3]) * 0.03
    )
    assert set(g.vol[:14]) == {-1.0, 1.0}
    assert np.allclose(g.move[14:], [0.27, -0.27]) and np.allclose(g.weight[14:], 0.35)


def test_vol_shock_shape() -> None:
    s = VolShock(0.4, 0.2, p_short=0.3, p_long=0.13, min_dte=1.0)
    assert s.up(30.0) == pytest.approx(0.4)
    assert s.up(15.0) == pytest.approx(0.4 * 2.0**0.3)  # (30/15)^0.3
    assert s.down(120.0) == pytest.approx(0.2 * 0.25**0.13)
    assert s.up(0.1) == pytest.approx(0.4 * 30.0**0.3)  # DTE floored at 1 day
    v = s.apply(np.array([0.5, 0.5, 0.5]), np.array([1.0, 0.0, -1.0]), np.array([30.0] * 3))
    assert np.allclose(v, [0.7, 0.5, 0.4])


@pytest.mark.parametrize("ssr", [0.0, 1.0, 1.7])
def test_ssr_moves_atm_vol_by_ssr_times_skew(ssr: float) -> None:
    # smile linear in k: sigma(k) = a + b k. After F0 -> F1 the new ATM vol is
    # sigma_old(F1 (F0/F1)^(1-SSR)) = a + b SSR ln(F1/F0)  (Bergomi's definition of SSR)
    smile = ParametricSmile(spot=100.0, atm_vol=0.6, skew=-0.25)
    dyn = SmileDynamics(ssr)
    for move in (-0.2, 0.05, 0.3):
        f1 = 100.0 * (1 + move)
        vol = smile.implied_vol(dyn.lookup_strike(f1, move), 0.5)
        assert vol == pytest.approx(0.6 - 0.25 * ssr * np.log1p(move), abs=1e-14)
    assert SmileDynamics.sticky_strike().lookup_strike(90.0, 0.3) == pytest.approx(90.0)
    assert SmileDynamics.sticky_moneyness().lookup_strike(90.0, 0.3) == pytest.approx(90.0 / 1.3)


def test_zero_scenario_is_zero_pnl(chain) -> None:  # type: ignore[no-untyped-def]
    pf = pd.DataFrame(
        {
            "symbol": ["BTC-27MAR26-80000-C", "BTC-27FEB26-70000-P", "BTC-27MAR26"],
            "quantity": [-1, 2, 5],
        }
    )
    pos = resolve_positions(pf, chain)
    sc = ScenarioSet(np.zeros(1), np.zeros(1), np.ones(1), ("zero",), 0.0)
    pnl = revalue(pos, SMILE, sc, SmileDynamics(1.5), VolShock(0.3, 0.2))
    assert np.allclose(pnl.pnl_coin, 0.0, atol=1e-15)


def test_option_revaluation_matches_direct_black(chain) -> None:  # type: ignore[no-untyped-def]
    # independent path: scalar Black-76 at the hand-built scenario inputs
    pos = resolve_positions(
        pd.DataFrame({"symbol": ["BTC-27MAR26-75000-P"], "quantity": [-3]}), chain
    )
    shock = VolShock(0.3, 0.2, p_short=0.3, p_long=0.13)
    dyn = SmileDynamics(1.4)
    sc = ScenarioSet(np.array([-0.1, 0.08]), np.array([1.0, -1.0]), np.ones(2), ("a", "b"), 2 / 365)
    pnl = revalue(pos, SMILE, sc, dyn, shock)
    t, f0, k = t_of("27MAR26"), forward_of("27MAR26"), 75_000.0
    dte = t * 365
    p = 0.13 if dte >= 30 else 0.3
    v0 = float(black_price(f0, k, t, float(SMILE.implied_vol(k, t)), False))
    for j, (m, sign) in enumerate([(-0.1, 1), (0.08, -1)]):
        f1 = f0 * (1 + m)
        k_look = k * ((1 + m) ** -(1 - 1.4))
        base = SMILE.atm_vol + SMILE.skew * np.log(k_look / f0) + 0.4 * np.log(k_look / f0) ** 2
        vol = base * (1 + sign * (0.3 if sign > 0 else 0.2) * (30 / dte) ** p)
        v1 = float(black_price(f1, k, t - 2 / 365, vol, False))
        coin = -3 * (v1 / f1 - v0 / f0)
        assert pnl.pnl_coin[0, j] == pytest.approx(coin, rel=1e-12)
        spot1 = SMILE.spot * (1 + m)
        assert pnl.pnl_usd[0, j] == pytest.approx(
            coin * spot1, rel=1e-12
        )  # coin = USD / settlement
        assert pnl.value_usd[0, j] == pytest.approx(-3 * v1, rel=1e-12)


def test_inverse_settlement_at_expiry(chain) -> None:  # type: ignore[no-untyped-def]
    # past expiry the coin value is the USD payoff divided by the settlement price
    pos = resolve_positions(
        pd.DataFrame(
            {"symbol": ["BTC-27FEB26-75000-P", "BTC-27FEB26-75000-C"], "quantity": [-1, 1]}
        ),
        chain,
    )
    t, f0 = t_of("27FEB26"), forward_of("27FEB26")
    sc = ScenarioSet(np.array([-0.5, 0.5]), np.zeros(2), np.ones(2), ("down", "up"), t + 1 / 365)
    pnl = revalue(pos, SMILE, sc, SmileDynamics.sticky_strike(), NO_SHOCK)
    v = SMILE.implied_vol(75_000.0, t)
    put0 = float(black_price(f0, 75_000.0, t, v, False)) / f0
    call0 = float(black_price(f0, 75_000.0, t, v, True)) / f0
    f_down, f_up = f0 * 0.5, f0 * 1.5
    assert pnl.pnl_coin[0, 0] == pytest.approx(-((75_000 - f_down) / f_down - put0), rel=1e-12)
    assert pnl.pnl_coin[0, 1] == pytest.approx(put0, rel=1e-12)  # expires worthless
    assert pnl.pnl_coin[1, 1] == pytest.approx((f_up - 75_000) / f_up - call0, rel=1e-12)


def test_futures_pnl(chain) -> None:  # type: ignore[no-untyped-def]
    pf = pd.DataFrame({"symbol": ["BTC-27MAR26", "BTC_USDC-PERPETUAL"], "quantity": [-100, 2]})
    pos = resolve_positions(pf, chain)
    sc = ScenarioSet(np.array([0.1]), np.array([1.0]), np.ones(1), ("x",), 1 / 365)
    pnl = revalue(pos, SMILE, sc, SmileDynamics(1.0), VolShock(0.5, 0.2))
    f0 = forward_of("27MAR26")
    # inverse: q * face * (1/F0 - 1/F1) coin
    assert pnl.pnl_coin[0, 0] == pytest.approx(-100 * 10 * (1 / f0 - 1 / (1.1 * f0)), rel=1e-12)
    # linear perpetual at the spot (surface forward at t = 0): q * (S1 - S0) USD
    assert pnl.pnl_usd[1, 0] == pytest.approx(2 * 0.1 * SMILE.spot, rel=1e-12)
    assert pnl.pnl_coin[1, 0] == pytest.approx(2 * 0.1 * SMILE.spot / (1.1 * SMILE.spot), rel=1e-12)


def test_book_equals_sum_of_single_positions(chain) -> None:  # type: ignore[no-untyped-def]
    # repeated instruments are repriced once; the result must equal position-by-position
    syms = [
        "BTC-27MAR26-80000-C",
        "BTC-27FEB26-70000-P",
        "BTC-27MAR26-80000-C",
        "BTC-26JUN26",
        "BTC-27FEB26-70000-P",
        "BTC-26JUN26-100000-C",
    ]
    qty = [-1.0, 2.0, 0.5, 7.0, -3.0, 1.0]
    grid = pm_grid(0.1, dt=1 / 365)
    dyn, shock = SmileDynamics(1.6), VolShock(0.3, 0.2)
    book = revalue(
        resolve_positions(pd.DataFrame({"symbol": syms, "quantity": qty}), chain),
        SMILE,
        grid,
        dyn,
        shock,
    )
    for i, (s, q) in enumerate(zip(syms, qty, strict=True)):
        one = revalue(
            resolve_positions(pd.DataFrame({"symbol": [s], "quantity": [q]}), chain),
            SMILE,
            grid,
            dyn,
            shock,
        )
        assert np.allclose(book.pnl_coin[i], one.pnl_coin[0], rtol=1e-13, atol=0)
        assert np.allclose(book.pnl_usd[i], one.pnl_usd[0], rtol=1e-13, atol=0)


def test_tabulated_smile_matches_direct(chain) -> None:  # type: ignore[no-untyped-def]
    syms = [s for s in chain.quotes["symbol"] if s.count("-") == 3]
    pos = resolve_positions(pd.DataFrame({"symbol": syms, "quantity": 1.0}), chain)
    grid = pm_grid(0.1, dt=1 / 365)
    dyn, shock = SmileDynamics(1.6), VolShock(0.3, 0.2)
    direct = revalue(pos, SMILE, grid, dyn, shock, tabulate=False)
    table = revalue(pos, SMILE, grid, dyn, shock, tabulate=True)
    # linear interpolation of a smile with curvature <= 0.8 on 4096 points: vol error < 1e-6,
    # i.e. a coin value error below vega/F x 1e-6 < 1e-6 coin
    assert np.max(np.abs(direct.pnl_coin - table.pnl_coin)) < 1e-6
    assert not np.array_equal(direct.pnl_coin, table.pnl_coin)  # the table was used


def test_pm_grid_explicit_extended_weights() -> None:
    w = (0.01, 0.02, 0.06, 0.015, 0.005, 0.001, 0.0003, 0.0001)
    g = pm_grid(0.1, extended_weights=w)
    assert np.allclose(g.weight[27:], w)
    # moves inside the range are dropped with their weights
    g = pm_grid(0.4, extended_weights=w)
    assert np.allclose(g.weight[27:], [0.01, 0.02, 0.005, 0.001, 0.0003, 0.0001])
    with pytest.raises(ValueError):
        pm_grid(0.1, extended_weights=w[:3])


def test_compiled_black_kernel_against_black_price() -> None:
    # the numba loop of option_values against volcal.black_price (normalised-Black kernel,
    # an independent implementation): random calls and puts, vols shocked up (with the floor)
    # and down, expired options (intrinsic) and NaN vols (intrinsic, as black_usd)
    from volcal import black_price
    from volcal.risk._kernels import shocked_black

    rng = np.random.default_rng(4)
    n = 3000
    f = rng.uniform(20_000, 120_000, n)
    k = f * np.exp(rng.normal(0, 0.5, n))
    t = rng.uniform(0.0, 1.5, n)
    t[:50] = 0.0
    call = rng.integers(0, 2, n).astype(bool)
    base = rng.uniform(0.2, 1.5, (3, n))
    base[0, 50:60] = np.nan
    up, down = rng.uniform(0, 0.5, n), rng.uniform(0, 0.5, n)
    growth = np.array([0.9, 1.0, 1.1, 1.05])
    vdir = np.array([1.0, 0.0, -1.0, 1.0])
    row = np.array([0, 1, 2, 0], dtype=np.int64)
    dt = np.full(4, 1 / 365)
    value, vol = np.empty((4, n)), np.empty((4, n))
    shocked_black(base, row, growth, vdir, dt, f, k, t, call, up, down, 0.5, value, vol)
    for j in range(4):
        v = base[row[j]] * np.where(vdir[j] > 0, 1 + up, np.where(vdir[j] < 0, 1 - down, 1.0))
        if vdir[j] > 0:
            v = np.where(v < 0.5, 0.5, v)
        f1, t1 = f * growth[j], np.maximum(t - dt[j], 0.0)
        live = (t1 > 0) & np.isfinite(v)
        ref = np.where(call, np.maximum(f1 - k, 0), np.maximum(k - f1, 0))
        ref[live] = black_price(f1[live], k[live], t1[live], v[live], call[live])
        assert np.allclose(value[j], ref, rtol=1e-10, atol=1e-10 * f1.max())
        assert np.array_equal(np.isnan(vol[j]), np.isnan(v))
