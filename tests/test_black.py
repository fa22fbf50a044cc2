"""Black-76 greeks: finite differences of the price and QuantLib's BlackCalculator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import QuantLib as ql

import volcal


@pytest.mark.parametrize("call", [True, False])
@pytest.mark.parametrize(("f", "k", "t", "vol"), [(100, 90, 0.5, 0.3), (4e4, 5e4, 7 / 365, 0.9)])
def test_greeks_match_finite_differences(call: bool, f: float, k: float, t: float, vol: float):
    d = 0.98
    g = volcal.black_greeks(f, k, t, vol, call, d)

    def p(ff: float = f, vv: float = vol, tt: float = t) -> float:
        return float(volcal.black_price(ff, k, tt, vv, call, d))

    hf, hv, ht = 1e-4 * f, 1e-5, 1e-7
    # fourth-order central difference for delta
    delta_fd = (8 * (p(f + hf) - p(f - hf)) - (p(f + 2 * hf) - p(f - 2 * hf))) / (12 * hf)
    assert g.delta == pytest.approx(delta_fd, rel=1e-8)
    assert g.gamma == pytest.approx((p(f + hf) - 2 * p() + p(f - hf)) / hf**2, rel=1e-4)
    assert g.vega == pytest.approx((p(vv=vol + hv) - p(vv=vol - hv)) / (2 * hv), rel=1e-7)
    vanna_fd = (
        p(f + hf, vol + hv) - p(f + hf, vol - hv) - p(f - hf, vol + hv) + p(f - hf, vol - hv)
    ) / (4 * hf * hv)
    assert g.vanna == pytest.approx(vanna_fd, rel=1e-4)
    assert g.volga == pytest.approx(
        (p(vv=vol + hv) - 2 * p() + p(vv=vol - hv)) / hv**2, rel=1e-4, abs=1e-6 * f
    )
    # theta: change per year of calendar time at fixed F, vol, D
    assert g.theta == pytest.approx(-(p(tt=t + ht) - p(tt=t - ht)) / (2 * ht), rel=1e-5)


def test_greeks_match_quantlib_black_calculator() -> None:
    f, k, t, vol, d = 30_000.0, 33_000.0, 0.3, 0.7, 0.99
    std = vol * math.sqrt(t)
    for call in (True, False):
        kind = ql.Option.Call if call else ql.Option.Put
        calc = ql.BlackCalculator(ql.PlainVanillaPayoff(kind, k), f, std, d)
        g = volcal.black_greeks(f, k, t, vol, call, d)
        assert g.delta == pytest.approx(calc.deltaForward(), rel=1e-12)
        assert g.gamma == pytest.approx(calc.gammaForward(), rel=1e-12)
        assert g.vega == pytest.approx(calc.vega(t), rel=1e-12)
        assert volcal.black_price(f, k, t, vol, call, d) == pytest.approx(calc.value(), rel=1e-13)


def test_greeks_at_expiry_are_intrinsic() -> None:
    g = volcal.black_greeks(100.0, np.array([90.0, 100.0, 110.0]), 0.0, 0.5, True)
    np.testing.assert_array_equal(g.delta, [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(g.gamma, 0.0)
    gp = volcal.black_greeks(100.0, np.array([90.0, 110.0]), 1.0, 0.0, False)
    np.testing.assert_array_equal(gp.delta, [0.0, -1.0])
