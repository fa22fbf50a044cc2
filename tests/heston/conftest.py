"""Fixtures of the Heston tests: the QuantLib DAX set and the Cui et al. (2017) set.

Both read ``shared/data`` (see ``tests/conftest.py``) and skip cleanly when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import QuantLib as ql

from volcal.heston import HestonParams, HestonQuotes, quantlib_heston_price

# Cui, del Baño Rollin, Germano (2017): truth and start (shared/data/reference/README.md)
CUI_TRUTH = HestonParams(v0=0.08, kappa=3.0, theta=0.10, sigma=0.25, rho=-0.8)
CUI_START = HestonParams(v0=0.2, kappa=1.2, theta=0.2, sigma=0.3, rho=-0.6)
CUI_RATE = 0.02

# QuantLib test-suite DAX calibration (hestonmodel.cpp, testDAXCalibration): start point
DAX_START = HestonParams(v0=0.1, kappa=1.0, theta=0.1, sigma=0.5, rho=-0.5)
DAX_SPOT = 4468.17


@pytest.fixture(scope="session")
def dax_quotes(shared_data: Path) -> HestonQuotes:
    """The 104 DAX implied vols of 5 July 2002 as OTM options, as QuantLib's helpers see them.

    Maturities are QuantLib's: int((days + 3) / 7) weeks on the TARGET calendar (the file's
    ``helper_maturity_weeks``); the zero curve is linear in zero rates (Actual/365F,
    continuous); dividend yield 0. Each ``HestonModelHelper`` prices the out-of-the-money
    option (call when ``K D >= S``).
    """
    folder = shared_data / "quantlib_dax"
    vols = pd.read_csv(folder / "dax_20020705_implied_vols.csv")
    curve = pd.read_csv(folder / "dax_20020705_zero_curve.csv")
    settle = ql.Date(5, ql.July, 2002)
    calendar = ql.TARGET()
    days = np.array(
        [calendar.advance(settle, int(w), ql.Weeks) - settle for w in vols.helper_maturity_weeks],
        dtype=np.float64,
    )
    t = days / 365.0
    zero = np.interp(days, curve["days"], curve["zero_rate_act365_continuous"])
    discount = np.exp(-zero * t)
    forward = DAX_SPOT / discount
    strike = vols["strike"].to_numpy(dtype=np.float64)
    call = strike * discount >= DAX_SPOT
    return HestonQuotes.from_arrays(
        forward, strike, t, call, iv=vols["implied_vol"].to_numpy(), discount=discount
    )


@pytest.fixture(scope="session")
def dax_start() -> HestonParams:
    """QuantLib's start point of the DAX calibration."""
    return DAX_START


@pytest.fixture(scope="session")
def cui_truth_and_start() -> tuple[HestonParams, HestonParams]:
    """Cui et al. (2017): true parameters and start point."""
    return CUI_TRUTH, CUI_START


@pytest.fixture(scope="session")
def cui_quotes(shared_data: Path) -> HestonQuotes:
    """Cui et al. (2017) test set: 40 calls, S = 1, r = 0.02, q = 0; prices from QuantLib's
    AnalyticHestonEngine (adaptive Gauss-Lobatto, relative tolerance 1e-14) at the truth."""
    data = pd.read_csv(shared_data / "reference" / "cui2017_heston_testset.csv")
    t = data["t_years"].to_numpy(dtype=np.float64)
    strike = data["strike"].to_numpy(dtype=np.float64)
    discount = np.exp(-CUI_RATE * t)
    forward = 1.0 / discount
    price = quantlib_heston_price(
        CUI_TRUTH,
        forward,
        strike,
        t,
        True,
        discount,
        engine="analytic",
        engine_options={"rel_tolerance": 1e-14, "max_evaluations": 10**6},
    )
    return HestonQuotes.from_arrays(forward, strike, t, True, price=price, discount=discount)
