"""HestonParams: domains, conversions (QuantLib order checked against QuantLib itself)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import QuantLib as ql
from hypothesis import given
from hypothesis import strategies as st

from volcal.errors import VolcalError
from volcal.heston import HestonParams, ParameterError

GOOD = {"v0": 0.36, "kappa": 2.0, "theta": 0.45, "sigma": 1.5, "rho": -0.15}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("v0", -1e-9),
        ("kappa", 0.0),
        ("kappa", -1.0),
        ("theta", 0.0),
        ("sigma", 0.0),
        ("rho", 1.0),
        ("rho", -1.0),
        ("v0", math.nan),
        ("sigma", math.inf),
        ("theta", "a lot"),
    ],
)
def test_domain_violations_raise_parameter_error(name: str, value: object) -> None:
    with pytest.raises(ParameterError, match=name) as info:
        HestonParams(**{**GOOD, name: value})  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, VolcalError)


def test_frozen_and_v0_zero_allowed() -> None:
    p = HestonParams(**{**GOOD, "v0": 0.0})
    with pytest.raises(AttributeError):
        p.v0 = 1.0  # type: ignore[misc]


def test_quantlib_order_matches_quantlib_model_params() -> None:
    # QuantLib's HestonModel.params() is (theta, kappa, sigma, rho, v0)
    p = HestonParams(**GOOD)
    today = ql.Date(1, ql.January, 2020)
    curve = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, ql.Actual365Fixed()))
    process = ql.HestonProcess(
        curve, curve, ql.QuoteHandle(ql.SimpleQuote(1.0)), p.v0, p.kappa, p.theta, p.sigma, p.rho
    )
    model = ql.HestonModel(process)
    assert tuple(model.params()) == p.to_quantlib_order()
    assert HestonParams.from_quantlib_order(list(model.params())) == p
    assert (model.v0(), model.kappa(), model.theta(), model.sigma(), model.rho()) == (
        p.v0,
        p.kappa,
        p.theta,
        p.sigma,
        p.rho,
    )


def test_feller() -> None:
    p = HestonParams(v0=0.08, kappa=3.0, theta=0.10, sigma=0.25, rho=-0.8)
    assert p.feller and p.feller_ratio == pytest.approx(9.6)
    q = HestonParams(**GOOD)  # crypto-like: 2 * 2 * 0.45 / 1.5^2 = 0.8
    assert not q.feller and q.feller_ratio == pytest.approx(0.8)


def test_expected_total_variance_limits() -> None:
    p = HestonParams(**GOOD)
    t = np.array([1e-9, 1.0, 1e4])
    w = np.asarray(p.expected_total_variance(t))
    assert w[0] / t[0] == pytest.approx(p.v0, rel=1e-8)
    assert w[2] / t[2] == pytest.approx(p.theta, rel=1e-3)
    assert w[1] == pytest.approx(p.theta + (p.v0 - p.theta) * (1 - math.exp(-p.kappa)) / p.kappa)


positive = st.floats(min_value=1e-6, max_value=50.0, allow_nan=False)


@given(positive, positive, positive, positive, st.floats(min_value=-0.999, max_value=0.999))
def test_round_trips(v0: float, kappa: float, theta: float, sigma: float, rho: float) -> None:
    p = HestonParams(v0=v0, kappa=kappa, theta=theta, sigma=sigma, rho=rho)
    assert HestonParams.from_dict(p.to_dict()) == p
    assert HestonParams.from_array(p.to_array()) == p
    assert HestonParams.from_quantlib_order(p.to_quantlib_order()) == p
    assert p.replace(rho=0.0).rho == 0.0


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ParameterError):
        HestonParams.from_dict({**GOOD, "lambda": 0.0})
    with pytest.raises(ParameterError):
        HestonParams(**GOOD).replace(vol=1.0)
