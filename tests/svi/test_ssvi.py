"""SSVI and eSSVI: closed forms, no-arbitrage constraints (hypothesis), parameter recovery."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.svi.synthetic import svi_quotes
from volcal.errors import ParameterError
from volcal.surface import ForwardCurve, VolSurface
from volcal.svi import (
    EssviSurface,
    SsviParams,
    SsviSlice,
    SsviSurface,
    SurfaceFit,
    essvi_calendar_free,
    fit_essvi,
    fit_ssvi,
)
from volcal.svi.essvi import essvi_segment_butterfly_free

K_DENSE = np.concatenate([np.linspace(-6.0, 6.0, 2001), np.sinh(np.linspace(-9.0, 9.0, 401))])


def _gj_ssvi(k: np.ndarray, theta: float, rho: float, phi: float) -> np.ndarray:
    # Gatheral & Jacquier (2014), eq. 4.1, as printed
    return theta / 2 * (1 + rho * phi * k + np.sqrt((phi * k + rho) ** 2 + 1 - rho**2))


def test_slice_matches_gj_formula_and_raw_svi() -> None:
    sl = SsviSlice(theta=0.04, rho=-0.35, psi=0.04 * 3.0)
    k = np.linspace(-2, 2, 41)
    np.testing.assert_allclose(sl.total_variance(k), _gj_ssvi(k, 0.04, -0.35, 3.0), rtol=1e-14)
    np.testing.assert_allclose(sl.to_raw().total_variance(k), sl.total_variance(k), rtol=1e-13)
    np.testing.assert_allclose(sl.g(k), sl.to_raw().g(k), rtol=1e-10, atol=1e-12)
    assert float(sl.total_variance(0.0)) == pytest.approx(0.04, rel=1e-15)


def test_power_law_phi() -> None:
    p = SsviParams(rho=-0.3, eta=1.2, gamma=0.4)
    theta = np.array([0.01, 0.1, 1.0])
    np.testing.assert_allclose(p.phi(theta), 1.2 / (theta**0.4 * (1 + theta) ** 0.6))
    _, dpsi = p.psi(theta)
    h = 1e-7
    np.testing.assert_allclose(
        dpsi, (p.psi(theta + h)[0] - p.psi(theta - h)[0]) / (2 * h), rtol=1e-6
    )
    assert p.arbitrage_free
    assert not SsviParams(rho=-0.5, eta=1.5, gamma=0.4).arbitrage_free
    with pytest.raises(ParameterError, match="gamma"):
        SsviParams(rho=0.0, eta=1.0, gamma=0.7)
    with pytest.raises(ParameterError, match="psi"):
        SsviSlice(theta=0.1, rho=0.0, psi=0.0)


# --- constraints imply no arbitrage on dense grids --------------------------------------


def _check_no_arbitrage(surf: SsviSurface | EssviSurface) -> None:
    ts = surf.expiries
    times = np.unique(
        np.concatenate([np.linspace(ts[0] / 10, ts[-1] * 1.5, 12), ts, 0.5 * (ts[:-1] + ts[1:])])
    )
    w = surf.total_variance(K_DENSE[None, :], times[:, None])
    assert np.all(np.isfinite(w))
    # calendar: w non-decreasing in t at every k (relative round-off allowance)
    assert np.all(np.diff(w, axis=0) >= -1e-12 * w[1:])
    for t in times:
        assert np.nanmin(surf.g(K_DENSE, t)) >= -1e-10


@settings(max_examples=40, deadline=None)
@given(
    rho=st.floats(-0.99, 0.99),
    s=st.floats(0.01, 1.0),
    gamma=st.floats(0.0, 0.5),
    theta1=st.floats(1e-4, 0.5),
    steps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=5),
)
def test_ssvi_admissible_params_are_arbitrage_free(
    rho: float, s: float, gamma: float, theta1: float, steps: list[float]
) -> None:
    # eta (1 + |rho|) <= 2, 0 <= gamma <= 1/2, theta non-decreasing (GJ 2014, Thms 4.1, 4.2)
    p = SsviParams(rho=rho, eta=2 * s / (1 + abs(rho)), gamma=gamma)
    theta = theta1 + np.concatenate([[0.0], np.cumsum(steps)])
    t = tuple(0.02 * (i + 1) ** 2 for i in range(theta.size))
    surf = SsviSurface(t, tuple(theta), p, ForwardCurve(t, tuple([100.0] * len(t))))
    assert isinstance(surf, VolSurface)
    assert all(x.butterfly_free for x in surf.slices())
    _check_no_arbitrage(surf)


@st.composite
def essvi_chains(draw: st.DrawFn) -> list[SsviSlice]:
    """Random slices inside the former sufficient calendar set (which implies the necessary and
    sufficient one of essvi.py), with butterfly-free segments."""
    rho = draw(st.floats(-0.99, 0.99))
    q = 1 + abs(rho)
    psi = draw(st.floats(0.01, 0.999)) * 4 / q
    theta = psi * psi * q / 4 * (1 + draw(st.floats(0.0, 5.0)))
    out = [SsviSlice(theta, rho, psi)]
    for _ in range(draw(st.integers(1, 4))):
        p = out[-1]
        chi_p = p.rho * p.psi
        delta = draw(st.floats(-1.0, 1.0))
        cap = 4 * (1 - 1e-9)
        room = min(
            (cap - p.psi - chi_p) / (1 + delta) if delta > -1 else math.inf,
            (cap - p.psi + chi_p) / (1 - delta) if delta < 1 else math.inf,
        )
        d = draw(st.floats(0.0, 1.0)) * max(room, 0.0)
        psi2, chi2 = p.psi + d, chi_p + delta * d
        theta2 = max(p.theta * psi2 / p.psi, psi2 * (psi2 + abs(chi2)) / 4) * (
            1 + draw(st.floats(0.0, 1.0))
        )
        s2 = SsviSlice(theta2, chi2 / psi2, psi2)
        # the surface rule's segment must keep GJ's butterfly conditions (essvi.py docstring)
        assume(essvi_segment_butterfly_free(p, s2))
        out.append(s2)
    return out


@settings(max_examples=40, deadline=None)
@given(slices=essvi_chains())
def test_essvi_admissible_slices_are_arbitrage_free(slices: list[SsviSlice]) -> None:
    t = tuple(0.03 * (i + 1) ** 1.5 for i in range(len(slices)))
    surf = EssviSurface(t, tuple(slices), ForwardCurve(t, tuple([100.0] * len(t))))
    assert surf.nodes_arbitrage_free
    _check_no_arbitrage(surf)


def test_calendar_condition_detects_crossing() -> None:
    s1 = SsviSlice(theta=0.04, rho=-0.3, psi=0.2)
    # same ATM variance, steeper skew: crosses s1 near k = 0
    s2 = SsviSlice(theta=0.04, rho=-0.6, psi=0.3)
    assert not essvi_calendar_free(s1, s2)
    k = np.linspace(-1, 1, 2001)
    assert np.min(s2.total_variance(k) - s1.total_variance(k)) < 0


@pytest.mark.parametrize("surf_kind", ["ssvi", "essvi"])
def test_time_derivative_against_finite_differences(surf_kind: str) -> None:
    t = (0.1, 0.5, 1.0)
    fc = ForwardCurve(t, (100.0, 100.0, 100.0))
    surf: SsviSurface | EssviSurface
    if surf_kind == "ssvi":
        surf = SsviSurface(t, (0.01, 0.05, 0.09), SsviParams(-0.4, 1.0, 0.4), fc)
    else:
        sl = (SsviSlice(0.01, -0.2, 0.1), SsviSlice(0.05, -0.3, 0.2), SsviSlice(0.09, -0.3, 0.25))
        surf = EssviSurface(t, sl, fc)
    k = np.linspace(-1.0, 1.0, 9)
    for tq in (0.05, 0.3, 0.7, 1.5):
        _, w1, w2, wt = surf.derivatives(k, tq)
        h = 1e-6
        np.testing.assert_allclose(
            wt,
            (surf.total_variance(k, tq + h) - surf.total_variance(k, tq - h)) / (2 * h),
            rtol=1e-6,
        )
        hk = 1e-5
        np.testing.assert_allclose(
            w1,
            (surf.total_variance(k + hk, tq) - surf.total_variance(k - hk, tq)) / (2 * hk),
            rtol=1e-6,
            atol=1e-10,
        )
        np.testing.assert_allclose(
            w2,
            (surf.derivatives(k + hk, tq)[1] - surf.derivatives(k - hk, tq)[1]) / (2 * hk),
            rtol=1e-5,
            atol=1e-9,
        )


# --- calibration: recovery of known parameters ------------------------------------------

T_NODES = (0.05, 0.2, 0.5, 1.0)


def test_fit_ssvi_recovers_parameters() -> None:
    truth = SsviParams(rho=-0.35, eta=1.1, gamma=0.35)
    thetas = (0.004, 0.015, 0.04, 0.085)
    smiles = [(t, truth.slice(th).to_raw()) for t, th in zip(T_NODES, thetas, strict=True)]
    fit = fit_ssvi(svi_quotes(smiles, half_spread=0.0005, mid_exact=True))
    surf = fit.surface
    assert isinstance(surf, SsviSurface)
    assert surf.params.rho == pytest.approx(truth.rho, abs=1e-5)
    assert surf.params.eta == pytest.approx(truth.eta, rel=1e-5)
    assert surf.params.gamma == pytest.approx(truth.gamma, abs=1e-5)
    np.testing.assert_allclose(surf.theta, thetas, rtol=1e-5)
    assert fit.inside_share == 1.0
    assert fit.arbitrage.arbitrage_free
    back = SurfaceFit.from_dict(json.loads(json.dumps(fit.to_dict(), default=str)))
    assert back.surface == fit.surface
    assert "SSVI surface" in fit.summary()


def test_fit_essvi_recovers_slices() -> None:
    truth = [
        SsviSlice(0.004, -0.1, 0.05),
        SsviSlice(0.015, -0.2, 0.1),
        SsviSlice(0.04, -0.25, 0.16),
        SsviSlice(0.085, -0.3, 0.22),
    ]
    for a, b in itertools.pairwise(truth):
        assert essvi_calendar_free(a, b)
    fit = fit_essvi(
        svi_quotes([(t, s.to_raw()) for t, s in zip(T_NODES, truth, strict=True)], mid_exact=True)
    )
    surf = fit.surface
    assert isinstance(surf, EssviSurface)
    for got, want in zip(surf.slices, truth, strict=True):
        assert got.theta == pytest.approx(want.theta, rel=1e-5)
        assert got.rho == pytest.approx(want.rho, abs=1e-5)
        assert got.psi == pytest.approx(want.psi, rel=1e-5)
    assert fit.inside_share == 1.0
    assert fit.arbitrage.arbitrage_free
    assert surf.nodes_arbitrage_free
    back = SurfaceFit.from_dict(json.loads(json.dumps(fit.to_dict(), default=str)))
    assert back.surface == fit.surface


def test_fit_essvi_constrained_slice_stays_admissible() -> None:
    # the second smile alone would cross the first (steeper skew at the same ATM level):
    # the calibrated slice must satisfy the calendar condition
    s1 = SsviSlice(0.02, -0.2, 0.1)
    s2 = SsviSlice(0.021, -0.6, 0.18)
    assert not essvi_calendar_free(s1, s2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_essvi(svi_quotes([(0.1, s1.to_raw()), (0.11, s2.to_raw())]))
    surf = fit.surface
    assert isinstance(surf, EssviSurface)
    assert surf.nodes_arbitrage_free
    assert fit.arbitrage.arbitrage_free


@pytest.mark.parametrize("eps", [0.0, 1.0])
def test_ssvi_kernel_jacobian_against_finite_differences(eps: float) -> None:
    from volcal.svi.ssvi import _ssvi_residuals

    rng = np.random.default_rng(11)
    n = 3
    owner = np.repeat(np.arange(n), 6).astype(np.int64)
    k = np.tile(np.linspace(-0.5, 0.4, 6), n)
    t = np.array([0.05, 0.2, 0.6])[owner]
    vm = 0.55 + 0.4 * k**2
    vb, va = vm - 0.02, vm + 0.02
    sw = rng.uniform(5, 50, k.size)
    sqn = np.full(k.size, math.sqrt(6.0))
    x = np.array([0.01, 0.02, 0.05, -0.3, 0.4, 0.3])  # theta_1, d_2, d_3, rho, s, gamma
    m = k.size
    r = np.empty(2 * m)
    jac = np.empty((2 * m, x.size))
    _ssvi_residuals(x, n, k, t, owner, vb, va, vm, sw, 0.1, eps, sqn, r, jac, True)
    for j in range(x.size):
        h = 1e-6 * max(abs(x[j]), 1e-3)
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        rp, rm = np.empty_like(r), np.empty_like(r)
        dummy = np.empty((1, x.size))
        _ssvi_residuals(xp, n, k, t, owner, vb, va, vm, sw, 0.1, eps, sqn, rp, dummy, False)
        _ssvi_residuals(xm, n, k, t, owner, vb, va, vm, sw, 0.1, eps, sqn, rm, dummy, False)
        np.testing.assert_allclose(jac[:, j], (rp - rm) / (2 * h), rtol=2e-4, atol=1e-6)
    assert np.count_nonzero(r[:m]) > m // 2  # the band term is exercised
