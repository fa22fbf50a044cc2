"""margin(): totals and components against hand computations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.margin.synthetic import SMILE, forward_of, synthetic_chain, t_of
from volcal import UnknownInstrumentError, black_greeks
from volcal.risk import MarginParams, VolShock, margin

SHOCK = VolShock(0.3, 0.2, p_short=0.3, p_long=0.13)
PARAMS = MarginParams(
    price_range=0.1,
    price_range_mm=0.08,
    vol_shock=SHOCK,
    vol_shock_mm=SHOCK.scaled(0.8),
    ssr=1.5,
    horizon_days=1.0,
    spread_stress=1.0,
    turnover=0.05,
    future_half_spread=1e-4,
)


@pytest.fixture(scope="module")
def chain():  # type: ignore[no-untyped-def]
    return synthetic_chain()


def test_long_inverse_future(chain) -> None:  # type: ignore[no-untyped-def]
    q, face, R = 50.0, 10.0, 0.1
    f0, s0 = forward_of("27MAR26"), SMILE.spot
    r = margin(pd.DataFrame({"symbol": ["BTC-27MAR26"], "quantity": [q]}), SMILE, chain, PARAMS)
    # coin loss of a long inverse future at F1 = F0 (1+m) is q N (1/F1 - 1/F0); weighted by
    # R/|m| it is largest at the -66 % extended move: q N R / (0.34 F0)
    scen = q * face * R / (0.34 * f0)
    assert r.components["scenario_pm"]["coin"] == pytest.approx(scen, rel=1e-12)
    assert r.worst_scenario == "pm-ext:-66.0%:same"
    # delta add-on: USD delta q N / F0 coin times F0 times R
    assert r.components["delta_addon"]["usd"] == pytest.approx(q * face * R, rel=1e-12)
    assert r.components["gamma_addon"]["usd"] == 0.0
    liq = q * face * 1e-4  # |delta| F x relative half-spread
    assert r.components["liquidity_addon"]["usd"] == pytest.approx(liq, rel=1e-12)
    im = max(scen, q * face * R / s0) + liq / s0
    assert r.initial_margin_coin == pytest.approx(im, rel=1e-12)
    assert r.initial_margin_usd == pytest.approx(im * s0, rel=1e-12)
    assert r.components["standard_initial"]["coin"] == pytest.approx(0.02 * q * face / f0)


def test_offsetting_positions_cost_only_liquidity(chain) -> None:  # type: ignore[no-untyped-def]
    pf = pd.DataFrame({"symbol": ["BTC-27MAR26-80000-C"] * 2, "quantity": [2.0, -2.0]})
    r = margin(pf, SMILE, chain, PARAMS)
    for name in ("scenario", "delta_addon", "gamma_addon", "vega_addon"):
        assert r.components[name]["coin"] == pytest.approx(0.0, abs=1e-15)
    assert r.initial_margin_coin == pytest.approx(r.components["liquidity_addon"]["coin"])


def test_short_straddle_components(chain) -> None:  # type: ignore[no-untyped-def]
    pf = pd.DataFrame(
        {"symbol": ["BTC-27MAR26-80000-C", "BTC-27MAR26-80000-P"], "quantity": [-1, -1]}
    )
    r = margin(pf, SMILE, chain, PARAMS)
    t, f, k = t_of("27MAR26"), forward_of("27MAR26"), 80_000.0
    vol = float(SMILE.implied_vol(k, t))
    g = black_greeks(f, k, t, vol, np.array([True, False]))
    dte = t * 365
    up = 0.3 * (30 / dte) ** (0.3 if dte < 30 else 0.13)
    # vega add-on: short vega times the absolute up shock vol * up(DTE)
    assert r.components["vega_addon"]["usd"] == pytest.approx(
        float(np.sum(g.vega)) * vol * up, rel=1e-10
    )
    # Deribit standard margin: ATM short call max(0.15 - OTM/F, 0.10) + mark, OTM = 0 (K < F)
    mark_c = float(chain.quotes.set_index("symbol").loc["BTC-27MAR26-80000-C", "mark_coin"])
    assert r.positions.loc["BTC-27MAR26-80000-C", "standard_im_coin"] == pytest.approx(
        0.15 + mark_c
    )
    mark_p = float(chain.quotes.set_index("symbol").loc["BTC-27MAR26-80000-P", "mark_coin"])
    otm = (f - k) / f  # the put is out of the money by F - K
    assert r.positions.loc["BTC-27MAR26-80000-P", "standard_im_coin"] == pytest.approx(
        max(0.15 - otm, 0.10) + mark_p
    )
    assert r.initial_margin_coin >= r.maintenance_margin_coin > 0
    assert r.initial_margin_coin >= r.components["scenario"]["coin"]
    # the scenario table: weighted loss of the worst row is the scenario margin
    worst = r.scenario_pnl.loc[r.worst_scenario]
    assert worst["weighted_loss"] == pytest.approx(r.components["scenario"]["coin"])
    assert worst["total"] * worst["weight"] == pytest.approx(-worst["weighted_loss"])
    json.dumps(r.to_dict(), default=str)
    assert "initial" in r.summary()
    # the exchange-parameter grid (+-16 %, vol up 50 %) asks for more than the calibrated one
    assert r.components["reference_pm"]["coin"] > r.components["scenario_pm"]["coin"]


def test_liquidity_scales_with_size_against_open_interest(chain) -> None:  # type: ignore[no-untyped-def]
    small = margin(
        pd.DataFrame({"symbol": ["BTC-27MAR26-80000-C"], "quantity": [-1.0]}), SMILE, chain, PARAMS
    )
    big = margin(
        pd.DataFrame({"symbol": ["BTC-27MAR26-80000-C"], "quantity": [-20.0]}), SMILE, chain, PARAMS
    )
    q = chain.quotes.set_index("symbol").loc["BTC-27MAR26-80000-C"]
    half = 0.5 * (q["ask_usd"] - q["bid_usd"])
    assert small.components["liquidity_addon"]["usd"] == pytest.approx(half, rel=1e-12)
    # 20 contracts vs 0.05 x 100 OI = 5 absorbed per day: sqrt(20/5) = 2 times the half-spread
    assert big.components["liquidity_addon"]["usd"] == pytest.approx(20 * half * 2.0, rel=1e-12)


def test_unknown_symbol(chain) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownInstrumentError, match="BTC-27MAR26-12345-C"):
        margin(
            pd.DataFrame({"symbol": ["BTC-27MAR26-12345-C"], "quantity": [1]}), SMILE, chain, PARAMS
        )


@pytest.mark.realdata
@pytest.mark.slow
def test_svi_and_marks_surfaces_agree(btc_chains) -> None:  # type: ignore[no-untyped-def]
    # margin depends only on the surface protocol: the SVI fit (volcal.fit_svi) and the
    # interpolated marks of the same chain give nearly the same straddle margin
    import warnings

    import volcal
    from volcal.risk import MarkSurface

    chain = btc_chains[150]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        svi = volcal.fit_svi(chain).surface
    q = chain.quotes
    exp = q[(q["t"] > 25 / 365)]["expiry"].min()
    s = q[q["expiry"] == exp]
    k = float(s["strike"].iloc[int(np.argmin(np.abs(s["strike"] - s["forward"])))])
    pf = s[s["strike"] == k][["symbol"]].assign(quantity=-1.0)
    a = margin(pf, svi, chain, PARAMS)
    b = margin(pf, MarkSurface.from_chain(chain), chain, PARAMS)
    assert a.initial_margin_coin == pytest.approx(b.initial_margin_coin, rel=0.05)
    assert a.components["vega_addon"]["usd"] == pytest.approx(
        b.components["vega_addon"]["usd"], rel=0.05
    )


def test_top_level_margin_is_the_risk_function(chain) -> None:  # type: ignore[no-untyped-def]
    import volcal
    import volcal.risk

    pf = pd.DataFrame({"symbol": ["BTC-27MAR26-80000-C"], "quantity": [-1.0]})
    a = volcal.margin(pf, SMILE, chain, PARAMS)
    b = volcal.risk.margin(pf, SMILE, chain, PARAMS)
    assert a.initial_margin_coin == b.initial_margin_coin


def test_confidence_scale_multiplies_the_risk_margin(chain) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    pf = pd.DataFrame({"symbol": ["BTC-27MAR26-80000-C", "BTC-27MAR26-70000-P"], "quantity": -1.0})
    r1 = margin(pf, SMILE, chain, PARAMS)
    r2 = margin(pf, SMILE, chain, replace(PARAMS, confidence_scale=0.4))
    c = r1.components
    risk = max(c["scenario"]["coin"], c["greek"]["coin"])
    assert c["risk"]["coin"] == pytest.approx(risk, rel=1e-15)
    liq = c["liquidity_addon"]["coin"]
    assert r1.initial_margin_coin == pytest.approx(risk + liq, rel=1e-14)
    assert r2.initial_margin_coin == pytest.approx(0.4 * risk + liq, rel=1e-14)
    risk_mm = c["risk_mm"]["coin"]
    assert r2.maintenance_margin_coin == pytest.approx(0.4 * risk_mm + liq, rel=1e-14)
    with pytest.raises(ValueError, match="confidence_scale"):
        replace(PARAMS, confidence_scale=0.0)
