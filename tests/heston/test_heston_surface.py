"""HestonSurface: the VolSurface protocol on Heston parameters."""

from __future__ import annotations

import numpy as np

from volcal.heston import HestonParams, HestonSurface, heston_price
from volcal.implied import implied_vol
from volcal.surface import ForwardCurve, VolSurface

CRYPTO = HestonParams(v0=0.36, kappa=2.0, theta=0.45, sigma=1.5, rho=-0.15)


def surface() -> HestonSurface:
    curve = ForwardCurve(t=(0.05, 0.5, 1.0), forwards=(90_100.0, 91_000.0, 92_000.0))
    return HestonSurface(CRYPTO, forward_curve=curve, expiry_times=(0.05, 0.5, 1.0))


def test_protocol_and_prices() -> None:
    s = surface()
    assert isinstance(s, VolSurface)
    np.testing.assert_array_equal(s.expiries, [0.05, 0.5, 1.0])
    t = np.array([[0.05], [0.5]])
    strike = np.array([70_000.0, 90_000.0, 120_000.0])
    f = s.forward(t)
    expected = heston_price(CRYPTO, f, strike, t, strike >= f, 0.99)
    np.testing.assert_allclose(s.price(strike, t, strike >= f, 0.99), expected, rtol=1e-15)
    vol = implied_vol(expected, f, strike, t, strike >= f, 0.99)
    np.testing.assert_allclose(s.implied_vol(strike, t), vol, rtol=1e-12)
    k = np.log(strike / f)
    np.testing.assert_allclose(s.total_variance(k, t), vol**2 * t, rtol=1e-12)
    assert np.all(s.greeks(strike, t, True).vega > 0)


def test_density_and_local_vol() -> None:
    s = surface()
    t = 0.5
    f = float(s.forward(t))
    strike = f * np.exp(np.linspace(-4.0, 4.0, 4001) * np.sqrt(0.45 * t))
    dens = s.density(strike, t)
    assert np.nanmin(dens) > -1e-9
    mass = np.trapezoid(dens, strike)
    # exact mass on [K_lo, K_hi]: dC/dK(K_hi) - dC/dK(K_lo), from Heston call prices
    h = 1e-4 * f

    def slope(k: float) -> float:
        up, dn = np.asarray(heston_price(CRYPTO, f, [k + h, k - h], t, True))
        return float((up - dn) / (2 * h))

    np.testing.assert_allclose(mass, slope(strike[-1]) - slope(strike[0]), rtol=1e-5)
    # Breeden-Litzenberger against second differences of Heston call prices
    k0 = f * np.array([0.8, 1.0, 1.25])
    h = 1e-3 * f
    c = [heston_price(CRYPTO, f, k0 + d, t, True) for d in (-h, 0.0, h)]
    bl = (np.asarray(c[0]) - 2 * np.asarray(c[1]) + np.asarray(c[2])) / h**2
    np.testing.assert_allclose(s.density(k0, t), bl, rtol=1e-4)
    lv = s.local_vol(k0, t)
    assert np.all(np.isfinite(lv)) and np.all((lv > 0.1) & (lv < 3.0))
    np.testing.assert_allclose(s.variance_swap(t), CRYPTO.expected_total_variance(t))
