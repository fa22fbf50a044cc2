"""QuantLib adapter: engines, hour-level maturities, and QuantLib's global state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import QuantLib as ql

from volcal.heston import HestonParams, ParameterError, QuantLibHestonPricer, heston_price
from volcal.heston.quantlib_adapter import (
    QL_ENGINES,
    QuantLibEngineName,
    evaluation_date,
    quantlib_heston_price,
)

CRYPTO = HestonParams(v0=0.36, kappa=2.0, theta=0.45, sigma=1.5, rho=-0.15)


def test_evaluation_date_is_restored() -> None:
    settings = ql.Settings.instance()
    previous = settings.evaluationDate
    mine = ql.Date(17, ql.March, 2031)
    settings.evaluationDate = mine
    try:
        pricer = QuantLibHestonPricer(100.0, [90.0, 110.0], 0.5, [False, True])
        assert settings.evaluationDate == mine
        pricer.price(CRYPTO)
        assert settings.evaluationDate == mine
        with pytest.raises(RuntimeError, match="boom"), evaluation_date():
            assert settings.evaluationDate != mine
            raise RuntimeError("boom")
        assert settings.evaluationDate == mine
    finally:
        settings.evaluationDate = previous


@pytest.mark.parametrize("engine", QL_ENGINES)
def test_engines_agree_with_fast_pricer(engine: QuantLibEngineName) -> None:
    # hour-level maturities: 0.5 day, 1.37 days, 10.2 days, 0.7 year (time-scaled models)
    forward = 90_000.0
    strike = forward * np.exp(np.linspace(-0.6, 0.6, 7))
    t = np.array([0.5 / 365, 1.37 / 365, 10.2 / 365, 0.7])[:, None]
    call = strike >= forward
    fast = np.asarray(heston_price(CRYPTO, forward, strike, t, call, 0.97))
    ql_price = np.asarray(
        quantlib_heston_price(CRYPTO, forward, strike, t, call, 0.97, engine=engine)
    )
    assert ql_price.shape == (4, 7)
    # measured max difference / F: analytic 3e-16, COS 2e-13, exponential fitting 4e-16
    np.testing.assert_allclose(ql_price, fast, rtol=0, atol=1e-12 * forward)


def test_time_scaling_is_exact_against_integer_days() -> None:
    # 30 days exactly (no scaling) against 30 days + 5 hours (scaled by 720/725)
    p = HestonParams(v0=0.08, kappa=3.0, theta=0.10, sigma=0.25, rho=-0.8)
    t = np.array([30.0, 30.0 + 5.0 / 24.0]) / 365.0
    options = {"rel_tolerance": 1e-14, "max_evaluations": 10**6}
    ql_price = np.asarray(
        quantlib_heston_price(p, 1.0, 1.05, t, True, engine="analytic", engine_options=options)
    )
    fast = np.asarray(heston_price(p, 1.0, 1.05, t, True))
    np.testing.assert_allclose(ql_price, fast, rtol=1e-12, atol=0)
    assert ql_price[1] > ql_price[0]


def test_bad_inputs() -> None:
    with pytest.raises(ParameterError, match="engine"):
        QuantLibHestonPricer(1.0, 1.0, 1.0, True, engine="fd")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="t > 0"):
        QuantLibHestonPricer(1.0, 1.0, 0.0, True)
    assert isinstance(quantlib_heston_price(CRYPTO, 1.0, 1.0, 1.0, True), float)
    assert math.isfinite(quantlib_heston_price(CRYPTO, 1.0, 1.0, 1.0, True))
