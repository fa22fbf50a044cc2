"""SviRaw / SVI-JW: domains, round trips, g(k) (Gatheral & Jacquier 2014)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from volcal.svi import SviJW, SviRaw

# Gatheral & Jacquier (2014), "Arbitrage-free SVI volatility surfaces", Example 3.1 (t = 1)
GJ31 = SviRaw(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)


def test_domain_checks() -> None:
    with pytest.raises(ValueError, match="b must be"):
        SviRaw(0.01, -0.1, 0.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="rho"):
        SviRaw(0.01, 0.1, 1.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        SviRaw(0.01, 0.1, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="negative minimum"):
        SviRaw(-0.1, 0.1, 0.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="finite"):
        SviRaw(float("nan"), 0.1, 0.0, 0.0, 0.1)


def test_gj_example_31_has_butterfly_arbitrage() -> None:
    # GJ (2014) Example 3.1 / Figure 1: g(k) < 0 for k around 0.8-1.0
    k = np.linspace(-1.5, 1.5, 3001)
    g = GJ31.g(k)
    assert g.min() < 0.0
    assert 0.6 < k[np.argmin(g)] < 1.1


def test_gj_example_31_jw_values() -> None:
    # SVI-JW parameters of Example 3.1 as printed in GJ (2014), section 5.2:
    # (v_t, psi_t, p_t, c_t, vt_t) = (0.01742625, -0.1752111, 0.6997381, 1.316798, 0.0116249)
    jw = GJ31.to_jw(1.0)
    assert jw.v == pytest.approx(0.01742625, abs=5e-9)
    assert jw.psi == pytest.approx(-0.1752111, abs=5e-8)
    assert jw.p == pytest.approx(0.6997381, abs=5e-8)
    assert jw.c == pytest.approx(1.316798, abs=5e-7)
    assert jw.v_min == pytest.approx(0.0116249, abs=5e-8)


def test_gj_repaired_slice_is_butterfly_free() -> None:
    # GJ (2014) section 5.2: keep v_t, psi_t, p_t; set c'_t = p_t + 2 psi_t and
    # vt'_t = 4 v_t p_t c'_t / (p_t + c'_t)^2 -> a slice free of butterfly arbitrage.
    jw = GJ31.to_jw(1.0)
    c2 = jw.p + 2.0 * jw.psi
    v2 = 4.0 * jw.v * jw.p * c2 / (jw.p + c2) ** 2
    repaired = SviJW(v=jw.v, psi=jw.psi, p=jw.p, c=c2, v_min=v2, t=1.0).to_raw()
    k = np.linspace(-3.0, 3.0, 20001)
    assert repaired.g(k).min() >= 0.0


@settings(max_examples=300, deadline=None)
@given(
    a=st.floats(-0.5, 0.5),
    b=st.floats(0.01, 1.0),
    rho=st.floats(-0.95, 0.95),
    m=st.floats(-1.0, 1.0),
    sigma=st.floats(0.01, 2.0),
    t=st.floats(0.01, 3.0),
)
def test_jw_round_trip(a: float, b: float, rho: float, m: float, sigma: float, t: float) -> None:
    # keep w_min >= 0 and w(0) well above 0; stay away from the JW singular set (minimum of the
    # smile at k = 0: beta = rho, where sigma is not determined) where the inverse is ill-posed
    a = max(a, -b * sigma * math.sqrt(1 - rho * rho) + 1e-3)
    p = SviRaw(a, b, rho, m, sigma)
    beta = m / math.hypot(m, sigma)
    assume(abs(beta - rho) > 0.05)
    assume(float(p.total_variance(0.0)) > 1e-3)
    back = SviRaw.from_jw(p.to_jw(t))
    scale = max(1.0, abs(a), b, sigma, abs(m))
    for name in ("a", "b", "rho", "m", "sigma"):
        assert getattr(back, name) == pytest.approx(getattr(p, name), abs=1e-8 * scale)


@pytest.mark.parametrize("k0", [-1.2, -0.3, 0.0, 0.35, 0.88, 2.0])
def test_derivatives_against_finite_differences(k0: float) -> None:
    h = 1e-4
    w, w1, w2 = GJ31.derivatives(k0)
    wp, wm = GJ31.total_variance(k0 + h), GJ31.total_variance(k0 - h)
    assert float(w1) == pytest.approx(float((wp - wm) / (2 * h)), rel=1e-7, abs=1e-10)
    assert float(w2) == pytest.approx(float((wp - 2 * w + wm) / h**2), rel=1e-5, abs=1e-8)


def test_g_against_finite_difference_density() -> None:
    # g is the density of ln(S/F) times sqrt(2 pi w) exp(d_-^2/2); check it against the
    # second strike-derivative of Black call prices of a butterfly-free smile (GJ eq. 2.2)
    from volcal.black import black_price

    p = SviRaw(a=0.02, b=0.1, rho=-0.4, m=0.05, sigma=0.2)
    t, f = 1.0, 100.0
    k = np.linspace(-0.8, 0.8, 9)
    h = 1e-3
    strikes = f * np.exp(k)

    def call(kk: np.ndarray) -> np.ndarray:
        vol = np.sqrt(p.total_variance(np.log(kk / f)) / t)
        return np.asarray(black_price(f, kk, t, vol, True))

    dk = strikes * h
    d2c = (call(strikes + dk) - 2 * call(strikes) + call(strikes - dk)) / dk**2
    w = p.total_variance(k)
    d_minus = -k / np.sqrt(w) - np.sqrt(w) / 2
    density = p.g(k) / (strikes * np.sqrt(2 * np.pi * w)) * np.exp(-0.5 * d_minus**2)
    np.testing.assert_allclose(density, d2c, rtol=1e-4)


def test_total_variance_matches_quantlib_svi_smile_section() -> None:
    # reference: QuantLib's SviSmileSection (parameters in the order a, b, sigma, rho, m)
    ql = pytest.importorskip("QuantLib")
    p = SviRaw(a=0.04, b=0.1, rho=-0.4, m=0.05, sigma=0.2)
    t, f = 0.75, 100.0
    sec = ql.SviSmileSection(t, f, [p.a, p.b, p.sigma, p.rho, p.m])
    for strike in (50.0, 80.0, 100.0, 125.0, 200.0):
        k = math.log(strike / f)
        assert sec.variance(strike) == pytest.approx(float(p.total_variance(k)), rel=1e-14)
        assert sec.volatility(strike) == pytest.approx(float(p.implied_vol(k, t)), rel=1e-14)
