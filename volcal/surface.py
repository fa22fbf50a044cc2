"""The :class:`VolSurface` protocol, and the machinery shared by smile-by-smile surfaces.

Every surface model (SVI, SSVI, eSSVI, later Heston) satisfies :class:`VolSurface`; margin and
reports depend only on the protocol. Notation (``docs/conventions.md``): ``t`` in years
(ACT/365F), ``k = ln(K/F(t))``, ``w = sigma_BS**2 t``, vols decimal, prices in the unit of the
forward (USD for the chains volcal builds).

:class:`SmileSurface` implements the protocol for any model that supplies analytic
``w, dw/dk, d2w/dk2, dw/dt``; from those:

* ``density(K, t)``: Breeden-Litzenberger, ``d2C/dK2 / D``, which in total variance is
  ``p(K) = g(k) / (K sqrt(2 pi w)) exp(-d_-**2 / 2)``, ``d_- = -k/sqrt(w) - sqrt(w)/2``
  (Gatheral & Jacquier 2014, eq. 2.2), per unit of strike;
* ``local_vol(K, t)``: Dupire in total variance, ``sigma_loc**2 = (dw/dt) / g(k)``
  (Gatheral, *The Volatility Surface*, 2006, eq. 1.10; the denominator is the same ``g``);
* prices and greeks: Black-76 at the surface's vol (greeks are sticky-strike: the vol is held
  fixed when the forward moves).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from volcal.black import BlackGreeks, black_greeks, black_price

__all__ = ["ForwardCurve", "SmileSurface", "VolSurface", "butterfly_g"]

FloatArray = npt.NDArray[np.float64]


def butterfly_g(
    w: npt.ArrayLike, w1: npt.ArrayLike, w2: npt.ArrayLike, k: npt.ArrayLike
) -> FloatArray:
    """Gatheral-Jacquier butterfly function from ``w, w', w''`` at log-moneyness ``k``.

    ``g(k) = (1 - k w'/(2w))**2 - w'**2/4 (1/w + 1/4) + w''/2`` (Gatheral & Jacquier 2014,
    eq. 2.1), dimensionless. The risk-neutral density of ``ln(S_T/F)`` is
    ``g(k) / sqrt(2 pi w) exp(-d_-(k)**2 / 2)`` with ``d_- = -k/sqrt(w) - sqrt(w)/2``
    (their eq. 2.2). NaN where ``w <= 0`` (no density defined).
    """
    w_ = np.asarray(w, dtype=float)
    w1_ = np.asarray(w1, dtype=float)
    w2_ = np.asarray(w2, dtype=float)
    k_ = np.asarray(k, dtype=float)
    pos = w_ > 0
    safe = np.where(pos, w_, 1.0)
    g = (1.0 - k_ * w1_ / (2.0 * safe)) ** 2 - w1_**2 / 4.0 * (1.0 / safe + 0.25) + w2_ / 2.0
    return np.where(pos, g, np.nan)


@runtime_checkable
class VolSurface(Protocol):
    """An implied-volatility surface on one underlying at one instant.

    All methods are vectorised (NumPy broadcasting of ``strike``/``k`` against ``t``) and
    return arrays; ``strike`` in the forward's unit (USD), ``t`` in years (ACT/365F).
    """

    @property
    def expiries(self) -> FloatArray:
        """Years to each calibrated expiry, increasing."""
        ...

    def forward(self, t: npt.ArrayLike) -> FloatArray:
        """Forward ``F(t)`` (USD per coin)."""
        ...

    def total_variance(self, k: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Total implied variance ``w(k, t) = sigma_BS**2 t`` at ``k = ln(K/F(t))``."""
        ...

    def implied_vol(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Black-76 implied volatility (decimal)."""
        ...

    def density(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Risk-neutral density of the underlying at ``t`` per unit of strike."""
        ...

    def local_vol(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Dupire local volatility (decimal) at spot level ``strike`` and time ``t``."""
        ...

    def price(
        self,
        strike: npt.ArrayLike,
        t: npt.ArrayLike,
        call: npt.ArrayLike,
        discount: npt.ArrayLike = 1.0,
    ) -> FloatArray:
        """Black-76 price of a European option off the surface."""
        ...

    def greeks(
        self,
        strike: npt.ArrayLike,
        t: npt.ArrayLike,
        call: npt.ArrayLike,
        discount: npt.ArrayLike = 1.0,
    ) -> BlackGreeks:
        """Black-76 sticky-strike greeks at the surface's vol."""
        ...


@dataclass(frozen=True)
class ForwardCurve:
    """Forwards of the quoted expiries, interpolated with a piecewise-constant carry rate.

    ``ln F(t)`` is linear in ``t`` between nodes. Before the first expiry it is linear between
    ``(0, ln spot)`` and the first node when ``spot`` is given (flat at the first forward
    otherwise); beyond the last expiry the last segment's carry rate continues (flat when there
    is one node).

    Attributes
    ----------
    t:
        Years to each expiry, strictly increasing.
    forwards:
        Forward of each expiry (> 0).
    spot:
        Spot index at ``t = 0`` (None when unknown).
    """

    t: tuple[float, ...]
    forwards: tuple[float, ...]
    spot: float | None = None

    def __post_init__(self) -> None:
        tt = np.asarray(self.t, dtype=float)
        ff = np.asarray(self.forwards, dtype=float)
        if tt.size == 0 or tt.size != ff.size:
            raise ValueError("ForwardCurve needs as many forwards as expiries (at least one)")
        if np.any(np.diff(tt) <= 0) or np.any(tt <= 0) or np.any(~(ff > 0)):
            raise ValueError(f"ForwardCurve needs increasing t > 0 and F > 0, got {tt}, {ff}")

    def __call__(self, t: npt.ArrayLike) -> FloatArray:
        tq = np.asarray(t, dtype=float)
        tt = np.asarray(self.t, dtype=float)
        lf = np.log(np.asarray(self.forwards, dtype=float))
        if self.spot is not None and np.isfinite(self.spot) and self.spot > 0:
            tt = np.concatenate([[0.0], tt])
            lf = np.concatenate([[np.log(self.spot)], lf])
        out = np.interp(tq, tt, lf)
        if tt.size >= 2:
            rate = (lf[-1] - lf[-2]) / (tt[-1] - tt[-2])
            out = np.where(tq > tt[-1], lf[-1] + rate * (tq - tt[-1]), out)
        return np.asarray(np.exp(out))


class SmileSurface(ABC):
    """Base of surfaces given by analytic total variance and its derivatives.

    Subclasses implement :meth:`expiries`, :meth:`forward` and :meth:`derivatives`.
    """

    @property
    @abstractmethod
    def expiries(self) -> FloatArray:
        """Years to each calibrated expiry, increasing."""

    @abstractmethod
    def forward(self, t: npt.ArrayLike) -> FloatArray:
        """Forward ``F(t)``."""

    @abstractmethod
    def derivatives(
        self, k: npt.ArrayLike, t: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """``(w, dw/dk, d2w/dk2, dw/dt)`` at ``(k, t)`` (broadcast), analytic."""

    def total_variance(self, k: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Total implied variance ``w(k, t)`` (dimensionless)."""
        return self.derivatives(k, t)[0]

    def log_moneyness(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """``k = ln(K / F(t))``."""
        return np.asarray(np.log(np.asarray(strike, dtype=float) / self.forward(t)))

    def implied_vol(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Black-76 implied vol ``sqrt(w/t)`` (decimal); NaN for ``t <= 0``."""
        tt = np.asarray(t, dtype=float)
        w = self.total_variance(self.log_moneyness(strike, tt), tt)
        pos = tt > 0
        return np.asarray(
            np.where(pos, np.sqrt(np.maximum(w, 0.0) / np.where(pos, tt, 1.0)), np.nan)
        )

    def g(self, k: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Butterfly function ``g(k)`` of the smile at ``t`` (Gatheral & Jacquier 2014)."""
        w, w1, w2, _ = self.derivatives(k, t)
        return butterfly_g(w, w1, w2, np.broadcast_to(np.asarray(k, dtype=float), w.shape))

    def density(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Risk-neutral density of ``S_t`` per unit of strike (Breeden-Litzenberger).

        ``p(K) = g(k) / (K sqrt(2 pi w)) exp(-d_-**2 / 2)`` with ``d_- = -k/sqrt(w) -
        sqrt(w)/2``; negative where the surface has butterfly arbitrage (``g < 0``).
        """
        kk = np.asarray(strike, dtype=float)
        k = self.log_moneyness(kk, t)
        w, w1, w2, _ = self.derivatives(k, t)
        g = butterfly_g(w, w1, w2, k)
        sw = np.sqrt(np.where(w > 0, w, np.nan))
        d_minus = -k / sw - sw / 2.0
        return np.asarray(g / (kk * np.sqrt(2.0 * np.pi) * sw) * np.exp(-0.5 * d_minus**2))

    def local_vol(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Dupire local vol ``sqrt((dw/dt) / g(k))`` (decimal); NaN where ``g <= 0`` or
        ``dw/dt < 0`` (static arbitrage)."""
        k = self.log_moneyness(strike, t)
        w, w1, w2, wt = self.derivatives(k, t)
        g = butterfly_g(w, w1, w2, k)
        ok = (g > 0) & (wt >= 0)
        return np.asarray(
            np.where(ok, np.sqrt(np.where(ok, wt / np.where(ok, g, 1.0), 0.0)), np.nan)
        )

    def price(
        self,
        strike: npt.ArrayLike,
        t: npt.ArrayLike,
        call: npt.ArrayLike,
        discount: npt.ArrayLike = 1.0,
    ) -> FloatArray:
        """Black-76 price ``D * Black(F(t), K, t, sigma(K, t))`` in the forward's unit."""
        vol = self.implied_vol(strike, t)
        return np.asarray(black_price(self.forward(t), strike, t, vol, call, discount))

    def greeks(
        self,
        strike: npt.ArrayLike,
        t: npt.ArrayLike,
        call: npt.ArrayLike,
        discount: npt.ArrayLike = 1.0,
    ) -> BlackGreeks:
        """Black-76 greeks at the surface's vol, sticky strike (see :class:`BlackGreeks`)."""
        vol = self.implied_vol(strike, t)
        return black_greeks(self.forward(t), strike, t, vol, call, discount)
