"""VolSurface behaviour of the SVI surface: interpolation rules, density, local vol, prices."""

from __future__ import annotations

import numpy as np
import pytest

from volcal.black import black_price
from volcal.implied import implied_vol
from volcal.surface import ForwardCurve, VolSurface
from volcal.svi import SviRaw, SviSurface

S1 = SviRaw(a=0.01, b=0.06, rho=-0.3, m=0.02, sigma=0.15)
S2 = SviRaw(a=0.04, b=0.12, rho=-0.35, m=0.05, sigma=0.3)
SURF = SviSurface.from_slices([0.25, 1.0], [S1, S2], [100.0, 102.0], spot=99.0)


def test_protocol() -> None:
    assert isinstance(SURF, VolSurface)


def test_exact_at_expiries_and_interpolation_rules() -> None:
    k = np.linspace(-1, 1, 11)
    np.testing.assert_allclose(SURF.total_variance(k, 0.25), S1.total_variance(k), rtol=1e-15)
    np.testing.assert_allclose(SURF.total_variance(k, 1.0), S2.total_variance(k), rtol=1e-15)
    mid = SURF.total_variance(k, 0.625)
    np.testing.assert_allclose(mid, 0.5 * (S1.total_variance(k) + S2.total_variance(k)))
    # constant smile in k outside the expiries
    np.testing.assert_allclose(SURF.total_variance(k, 0.1), 0.4 * S1.total_variance(k))
    np.testing.assert_allclose(SURF.total_variance(k, 2.0), 2.0 * S2.total_variance(k))


def test_calendar_free_by_construction_when_slices_cross() -> None:
    low_long = SviRaw(a=0.005, b=0.05, rho=0.0, m=0.0, sigma=0.1)  # below S1 somewhere
    s = SviSurface.from_slices([0.25, 1.0], [S1, low_long], [100.0, 100.0])
    k = np.linspace(-3, 3, 601)
    ts = np.linspace(0.01, 2.0, 200)
    w = s.total_variance(k[None, :], ts[:, None])
    assert np.all(np.diff(w, axis=0) >= 0.0)


def test_forward_curve() -> None:
    fc = ForwardCurve((0.25, 1.0), (100.0, 102.0), spot=99.0)
    assert fc(0.0) == pytest.approx(99.0)
    assert fc(0.25) == pytest.approx(100.0)
    assert fc(0.625) == pytest.approx(np.sqrt(100.0 * 102.0))
    assert fc(2.0) == pytest.approx(102.0 * (102.0 / 100.0) ** (1.0 / 0.75))


def test_density_integrates_to_one_with_forward_mean() -> None:
    t = 1.0
    f = float(SURF.forward(t))
    x = np.linspace(-8.0, 6.0, 200001)
    strikes = f * np.exp(x)
    p = SURF.density(strikes, t)
    assert np.all(p >= 0)
    assert np.trapezoid(p * strikes, x) == pytest.approx(1.0, abs=1e-6)
    assert np.trapezoid(p * strikes * strikes, x) == pytest.approx(f, rel=1e-6)


def test_density_is_second_strike_derivative_of_prices() -> None:
    t = 0.5
    strikes = np.array([70.0, 90.0, 100.0, 110.0, 140.0])
    h = 1e-2
    d2 = (
        SURF.price(strikes + h, t, True)
        - 2 * SURF.price(strikes, t, True)
        + SURF.price(strikes - h, t, True)
    ) / h**2
    np.testing.assert_allclose(SURF.density(strikes, t), d2, rtol=1e-5)


def test_prices_round_trip_and_parity() -> None:
    t = 0.5
    strikes = np.array([60.0, 100.0, 150.0])
    c = SURF.price(strikes, t, True)
    p = SURF.price(strikes, t, False)
    f = SURF.forward(t)
    np.testing.assert_allclose(c - p, f - strikes, atol=1e-10)
    np.testing.assert_allclose(implied_vol(c, f, strikes, t, True), SURF.implied_vol(strikes, t))


def test_local_vol_flat_smile_equals_implied() -> None:
    # flat smile, constant vol in t: local vol = implied vol (Dupire)
    flat1 = SviRaw(a=0.25 * 0.04, b=0.0, rho=0.0, m=0.0, sigma=0.1)
    flat2 = SviRaw(a=1.0 * 0.04, b=0.0, rho=0.0, m=0.0, sigma=0.1)
    s = SviSurface.from_slices([0.25, 1.0], [flat1, flat2], [100.0, 100.0])
    np.testing.assert_allclose(s.local_vol(np.array([80.0, 100.0, 125.0]), 0.5), 0.2, rtol=1e-12)


def test_local_vol_against_finite_difference_dupire() -> None:
    # Dupire in prices: sigma_loc^2 = 2 dC/dT / (K^2 d2C/dK2) with zero carry (F constant)
    s = SviSurface.from_slices([0.25, 1.0], [S1, S2], [100.0, 100.0])
    t, strikes = 0.6, np.array([85.0, 100.0, 115.0])
    ht, hk = 1e-5, 1e-2
    dcdt = (s.price(strikes, t + ht, True) - s.price(strikes, t - ht, True)) / (2 * ht)
    d2 = (
        s.price(strikes + hk, t, True)
        - 2 * s.price(strikes, t, True)
        + s.price(strikes - hk, t, True)
    ) / hk**2
    np.testing.assert_allclose(
        s.local_vol(strikes, t), np.sqrt(2 * dcdt / (strikes**2 * d2)), rtol=1e-4
    )


def test_greeks_match_black() -> None:
    g = SURF.greeks(np.array([100.0]), 0.5, True)
    vol = SURF.implied_vol(np.array([100.0]), 0.5)
    f = SURF.forward(0.5)
    h = 1e-4
    up = black_price(f + h, 100.0, 0.5, vol, True)
    dn = black_price(f - h, 100.0, 0.5, vol, True)
    np.testing.assert_allclose(g.delta, (up - dn) / (2 * h), rtol=1e-7)


def test_envelope_cache_does_not_change_values() -> None:
    low_long = SviRaw(a=0.005, b=0.05, rho=0.0, m=0.0, sigma=0.1)
    s = SviSurface.from_slices([0.25, 0.5, 1.0], [S1, low_long, S2], [100.0] * 3)
    k = np.linspace(-3, 3, 1001)  # large enough to be cached
    for t in (0.3, 0.25, 0.7, 0.3, 2.0):
        big = s.derivatives(k, t)
        small = [s.derivatives(k[i : i + 1], t) for i in range(0, k.size, 97)]
        for j, part in enumerate(small):
            for a, b in zip(part, big, strict=True):
                assert a[0] == b[j * 97]
