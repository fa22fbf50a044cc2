"""A volatility surface from Heston parameters (satisfies ``volcal.surface.VolSurface``).

The Heston price on the forward depends on ``F`` and ``K`` only through ``k = ln(K/F)`` (the
model is homogeneous of degree one in ``F`` and ``K``), so the implied total variance
``w(k, t) = sigma_BS(k, t)^2 t`` needs no forwards; a forward curve is only needed to map
strikes to ``k``. Implied vols come from :func:`volcal.heston.heston_price` (out-of-the-money
option) and :func:`volcal.implied_vol`. Density and local vol use the same formulas as
``volcal.surface.SmileSurface`` (Breeden-Litzenberger and Dupire in total variance, through the
butterfly function ``g(k)`` of Gatheral & Jacquier 2014), with the derivatives of ``w`` taken by
central finite differences (steps ``1e-3 sqrt(w)`` in ``k`` and ``1e-3 t`` in ``t``; relative
error about 1e-6 where the premium is above 1e-8 of the forward).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from volcal.heston.params import HestonParams
from volcal.heston.pricer import heston_price
from volcal.implied import implied_vol
from volcal.surface import SmileSurface

__all__ = ["HestonSurface"]

FloatArray = npt.NDArray[np.float64]


def _flat_forward(t: npt.ArrayLike) -> FloatArray:
    return np.ones_like(np.asarray(t, dtype=np.float64))


@dataclass(frozen=True)
class HestonSurface(SmileSurface):
    """Black-76 implied volatilities of the Heston model.

    A :class:`~volcal.surface.SmileSurface`: implied vol, density, local vol and greeks come
    from the base class through :meth:`derivatives`; :meth:`total_variance` inverts the model's
    prices directly and :meth:`price` is the model's own price.

    Parameters
    ----------
    params:
        Heston parameters.
    forward_curve:
        ``F(t)`` (e.g. a ``volcal.surface.ForwardCurve``); default ``F = 1`` (then strikes are
        moneyness ``K/F``).
    expiry_times:
        Years to the calibrated expiries (reported by :attr:`expiries`).
    """

    params: HestonParams
    forward_curve: Callable[[npt.ArrayLike], FloatArray] = field(default=_flat_forward)
    expiry_times: tuple[float, ...] = ()

    @property
    def expiries(self) -> FloatArray:
        """Years to each calibrated expiry, increasing."""
        return np.array(sorted(self.expiry_times), dtype=np.float64)

    def forward(self, t: npt.ArrayLike) -> FloatArray:
        """Forward ``F(t)``."""
        return np.asarray(self.forward_curve(t), dtype=np.float64)

    def otm_price(self, k: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Undiscounted out-of-the-money premium in units of the forward (call for k >= 0)."""
        kk, tt = np.broadcast_arrays(
            np.asarray(k, dtype=np.float64), np.asarray(t, dtype=np.float64)
        )
        return np.asarray(heston_price(self.params, 1.0, np.exp(kk), tt, kk >= 0.0))

    def total_variance(self, k: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Total implied variance ``w = sigma_BS^2 t`` at log-moneyness ``k``, ``t`` years.

        NaN where the model premium is below the pricer's resolution (about 1e-14 of the
        forward: far wings of very short expiries) or ``t <= 0``.
        """
        kk, tt = np.broadcast_arrays(
            np.asarray(k, dtype=np.float64), np.asarray(t, dtype=np.float64)
        )
        vol = np.asarray(implied_vol(self.otm_price(kk, tt), 1.0, np.exp(kk), tt, kk >= 0.0))
        return np.asarray(vol * vol * tt)

    def derivatives(
        self, k: npt.ArrayLike, t: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """``(w, dw/dk, d2w/dk2, dw/dt)`` at ``(k, t)``, central finite differences."""
        kk, tt = np.broadcast_arrays(
            np.asarray(k, dtype=np.float64), np.asarray(t, dtype=np.float64)
        )
        w = self.total_variance(kk, tt)
        h = 1e-3 * np.sqrt(np.maximum(np.asarray(self.params.expected_total_variance(tt)), 1e-12))
        w_up = self.total_variance(kk + h, tt)
        w_dn = self.total_variance(kk - h, tt)
        dt = 1e-3 * tt
        wt = (self.total_variance(kk, tt + dt) - self.total_variance(kk, tt - dt)) / (2 * dt)
        return w, (w_up - w_dn) / (2 * h), (w_up - 2 * w + w_dn) / (h * h), np.asarray(wt)

    def price(
        self,
        strike: npt.ArrayLike,
        t: npt.ArrayLike,
        call: npt.ArrayLike,
        discount: npt.ArrayLike = 1.0,
    ) -> FloatArray:
        """Heston price ``D F c`` of a European option (the model's own price)."""
        tt = np.asarray(t, dtype=np.float64)
        return np.asarray(heston_price(self.params, self.forward(tt), strike, tt, call, discount))

    def variance_swap(self, t: npt.ArrayLike) -> FloatArray | float:
        """Fair variance-swap total variance ``E[int_0^t v ds]`` (exact for Heston)."""
        return self.params.expected_total_variance(t)
