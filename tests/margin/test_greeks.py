"""Skew-aware greeks against finite differences of the full repricer and closed forms."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from tests.margin.synthetic import SMILE, synthetic_chain
from volcal import black_greeks
from volcal.risk import (
    ScenarioSet,
    SmileDynamics,
    VolShock,
    position_greeks,
    resolve_positions,
    revalue,
    smile_derivatives,
)

SYMBOLS = [
    "BTC-27FEB26-70000-P",
    "BTC-27FEB26-85000-C",
    "BTC-27MAR26-80000-C",
    "BTC-27MAR26-75000-P",
    "BTC-26JUN26-100000-C",
    "BTC-26JUN26-60000-P",
    "BTC-26JUN26",
]


class OpaqueSmile:
    """The same smile without analytic derivatives (forces finite differences)."""

    def forward(self, t: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return SMILE.forward(t)

    def implied_vol(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return SMILE.implied_vol(strike, t)


@pytest.fixture(scope="module")
def positions():  # type: ignore[no-untyped-def]
    chain = synthetic_chain()
    qty = [1.0, -2.0, 1.5, -1.0, 3.0, -0.5, 40.0]
    return resolve_positions(pd.DataFrame({"symbol": SYMBOLS, "quantity": qty}), chain)


@pytest.mark.parametrize("surface", [SMILE, OpaqueSmile()], ids=["analytic", "fd"])
@pytest.mark.parametrize("ssr", [0.0, 1.0, 1.7])
def test_mv_delta_and_eff_gamma_match_repricer(positions, surface, ssr: float) -> None:  # type: ignore[no-untyped-def]
    dyn = SmileDynamics(ssr)
    g = position_greeks(positions, surface, dyn)
    eps = 1e-3
    sc = ScenarioSet(np.array([-eps, 0.0, eps]), np.zeros(3), np.ones(3), ("-", "0", "+"), 0.0)
    v = revalue(positions, surface, sc, dyn, VolShock(0.0, 0.0)).value_usd
    f = g["forward"].to_numpy()
    fd_delta = (v[:, 2] - v[:, 0]) / (2 * eps * f)
    fd_gamma = (v[:, 2] - 2 * v[:, 1] + v[:, 0]) / (eps * f) ** 2
    # central differences: O(eps^2) relative errors, ~1e-6 here; plus 1e-5 for the FD smile
    assert np.allclose(g["mv_delta"], fd_delta, rtol=2e-5, atol=1e-9)
    assert np.allclose(g["eff_gamma"], fd_gamma, rtol=2e-3, atol=1e-12)
    if ssr == 1.0:  # sticky strike: the skew corrections vanish
        assert np.allclose(g["mv_delta"], g["delta"]) and np.allclose(g["eff_gamma"], g["gamma"])


def test_vol_derivatives_closed_form(positions) -> None:  # type: ignore[no-untyped-def]
    # quadratic smile s(k) = a + b k + c k^2/2: sigma_F = -(1-SSR)(b + c k)/F,
    # sigma_FF = ((1-SSR)^2 c + (1-SSR)(b + c k)) / F^2
    ssr = 1.7
    g = position_greeks(positions, SMILE, SmileDynamics(ssr))
    opt = positions.is_option
    tab = positions.table[opt]
    f = g["forward"].to_numpy()[opt]
    k = np.log(tab["strike"].to_numpy() / f)
    a = 1 - ssr
    s1 = SMILE.skew + SMILE.curvature * k
    assert np.allclose(g["sigma_F"].to_numpy()[opt], -a * s1 / f, rtol=1e-12)
    assert np.allclose(
        g["sigma_FF"].to_numpy()[opt], (a * a * SMILE.curvature + a * s1) / f**2, rtol=1e-12
    )
    # Black greeks of each leg, scaled by quantity
    bg = black_greeks(
        f,
        tab["strike"].to_numpy(),
        tab["t"].to_numpy(),
        SMILE.atm_vol + SMILE.skew * k + 0.5 * SMILE.curvature * k**2,
        tab["call"].to_numpy(),
    )
    assert np.allclose(g["vega"].to_numpy()[opt], tab["quantity"].to_numpy() * bg.vega, rtol=1e-12)


def test_smile_derivatives_by_differences() -> None:
    strikes = np.array([60_000.0, 80_000.0, 110_000.0])
    s, s1, s2 = smile_derivatives(OpaqueSmile(), strikes, 0.25)
    e, e1, e2 = SMILE.smile_derivatives(strikes, 0.25)
    assert np.allclose(s, e, rtol=1e-14)
    assert np.allclose(s1, e1, atol=1e-9)  # quadratic: central differences exact up to rounding
    assert np.allclose(s2, e2, atol=1e-5)


def test_future_delta(positions) -> None:  # type: ignore[no-untyped-def]
    g = position_greeks(positions, SMILE, SmileDynamics(1.0))
    # inverse future: 40 contracts x 10 USD face = 400 USD, i.e. 400/F0 coin of delta
    assert g.loc["BTC-26JUN26", "delta"] == pytest.approx(400.0 / g.loc["BTC-26JUN26", "forward"])
    assert g.loc["BTC-26JUN26", "gamma"] == 0.0
