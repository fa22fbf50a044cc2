"""Quasi-explicit SVI calibration of one smile, with the no-butterfly constraint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volcal.errors import CalibrationError
from volcal.svi import SliceQuotes, SviRaw, fit_svi_slice

GJ31 = SviRaw(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)


def _slice(p: SviRaw, t: float, k: np.ndarray, half_spread: float = 0.002) -> SliceQuotes:
    v = p.implied_vol(k, t)
    return SliceQuotes(
        expiry=pd.Timestamp("2026-06-26 08:00", tz="UTC"),
        t=t,
        forward=100.0,
        k=k,
        iv_bid=v - half_spread,
        iv_ask=v + half_spread,
        iv_mid=v,
        weight=np.full(k.size, 1.0 / (2 * half_spread)),
        index=pd.RangeIndex(k.size),
    )


def test_recovers_arbitrage_free_parameters() -> None:
    truth = SviRaw(a=0.02, b=0.1, rho=-0.4, m=0.05, sigma=0.2)
    res = fit_svi_slice(_slice(truth, 1.0, np.linspace(-1.0, 1.2, 25)))
    assert res.converged
    assert res.method == "quasi-explicit"
    for name in ("a", "b", "rho", "m", "sigma"):
        assert getattr(res.params, name) == pytest.approx(getattr(truth, name), abs=1e-6)


def test_repaired_gj_example_is_butterfly_free() -> None:
    # quotes generated from GJ (2014) Example 3.1, which has butterfly arbitrage: the
    # constrained fit must not
    k = np.linspace(-1.0, 1.2, 25)
    res = fit_svi_slice(_slice(GJ31, 1.0, k))
    assert res.converged
    assert res.method.endswith("slsqp")
    kk = np.linspace(-4.0, 4.0, 40001)
    assert res.params.g(kk).min() >= 0.0
    b1, b2 = res.params.wing_slopes
    assert max(b1, b2) <= 2.0
    # it stays close to the (arbitrageable) quotes: within 1.5 vol points everywhere
    assert np.max(np.abs(res.params.implied_vol(k, 1.0) - GJ31.implied_vol(k, 1.0))) < 0.015


def test_deterministic() -> None:
    d = _slice(GJ31, 1.0, np.linspace(-1.0, 1.2, 25))
    assert fit_svi_slice(d) == fit_svi_slice(d)


def test_too_few_quotes() -> None:
    with pytest.raises(CalibrationError, match="at least 3"):
        fit_svi_slice(_slice(GJ31, 1.0, np.array([0.0, 0.1])))
