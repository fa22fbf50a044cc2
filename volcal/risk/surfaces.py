"""The surface interface margin needs, and two small surfaces of its own.

Margin depends only on :class:`MarginSurface`: a forward curve and an implied-vol function of
strike and time. Every :class:`volcal.surface.VolSurface` (SVI, SSVI, Heston) satisfies it.
This module adds two surfaces that do not need a calibrator:

* :class:`ParametricSmile`: a smile quadratic in log-moneyness with known parameters, whose
  derivatives are closed forms; the test double of the margin tests.
* :class:`MarkSurface`: Deribit's own mark implied vols of one chain, interpolated (a natural
  cubic spline of total variance in ``k`` per expiry, linear in total variance between
  expiries, the rules of :mod:`volcal.svi.svi_surface`). Fast enough to build at every
  snapshot of a backtest. ``flat=True`` keeps only the at-the-money vol of each expiry
  (no skew): the flat-vol comparison of the backtest.

Units: strikes and forwards in USD per coin, ``t`` in years (ACT/365F), vols decimal,
``k = ln(K / F(t))``, ``w = sigma**2 t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from scipy.interpolate import CubicSpline

from volcal.errors import ChainValidationError
from volcal.surface import ForwardCurve

__all__ = ["MarginSurface", "MarkSurface", "ParametricSmile", "smile_derivatives"]

FloatArray = npt.NDArray[np.float64]


@runtime_checkable
class MarginSurface(Protocol):
    """What margin needs from a volatility surface (a subset of ``VolSurface``)."""

    def forward(self, t: npt.ArrayLike) -> FloatArray:
        """Forward ``F(t)``, USD per coin."""
        ...

    def implied_vol(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Black-76 implied vol (decimal) at strike ``K`` (USD) and ``t`` (years)."""
        ...


def smile_derivatives(
    surface: MarginSurface, strike: npt.ArrayLike, t: npt.ArrayLike, h: float = 1e-3
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(sigma, d sigma/dk, d2 sigma/dk2)`` at fixed ``t`` by central differences in ``k``.

    Parameters
    ----------
    surface:
        Any :class:`MarginSurface`.
    strike, t:
        Strikes (USD) and years, broadcast together.
    h:
        Step in log-strike (dimensionless); the truncation error is ``O(h**2)``.

    Returns
    -------
    tuple of ndarray
        Vol (decimal), slope and curvature of the smile in ``k = ln(K/F)`` (per unit of ``k``).
        Uses an analytic ``smile_derivatives`` method when the surface has one.
    """
    exact = getattr(surface, "smile_derivatives", None)
    if callable(exact):
        s, s1, s2 = exact(strike, t)
        return np.asarray(s), np.asarray(s1), np.asarray(s2)
    kk, tt = np.broadcast_arrays(np.asarray(strike, dtype=float), np.asarray(t, dtype=float))
    up = np.exp(h)
    vols = surface.implied_vol(np.stack([kk / up, kk, kk * up]), np.stack([tt, tt, tt]))
    lo, mid, hi = np.asarray(vols[0]), np.asarray(vols[1]), np.asarray(vols[2])
    return mid, (hi - lo) / (2.0 * h), (hi - 2.0 * mid + lo) / (h * h)


@dataclass(frozen=True)
class ParametricSmile:
    """A smile quadratic in log-moneyness, the same at every expiry; forward ``S e^{r t}``.

    ``sigma(k) = atm_vol + skew * k + 0.5 * curvature * k**2`` with ``k = ln(K / F(t))``,
    floored at ``vol_floor``. Closed-form derivatives make it the reference surface of the
    margin tests (the margin code does not know it is special).

    Attributes
    ----------
    spot:
        Spot, USD per coin (> 0).
    atm_vol:
        At-the-money vol, decimal (> 0).
    skew:
        ``d sigma / dk`` at the money (negative: puts richer).
    curvature:
        ``d2 sigma / dk2`` (>= 0 for a smile).
    rate:
        Carry rate (per year), ``F(t) = spot * exp(rate * t)``.
    vol_floor:
        Smallest vol returned (decimal).
    """

    spot: float
    atm_vol: float
    skew: float = 0.0
    curvature: float = 0.0
    rate: float = 0.0
    vol_floor: float = 0.01

    def __post_init__(self) -> None:
        if not (self.spot > 0 and self.atm_vol > 0 and self.curvature >= 0):
            raise ValueError(f"ParametricSmile needs spot > 0, atm_vol > 0, curvature >= 0: {self}")

    def forward(self, t: npt.ArrayLike) -> FloatArray:
        """``F(t) = spot * exp(rate * t)``."""
        return np.asarray(self.spot * np.exp(self.rate * np.asarray(t, dtype=float)))

    def smile_derivatives(
        self, strike: npt.ArrayLike, t: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``(sigma, d sigma/dk, d2 sigma/dk2)`` in closed form."""
        k = np.log(np.asarray(strike, dtype=float) / self.forward(t))
        raw = self.atm_vol + self.skew * k + 0.5 * self.curvature * k * k
        floored = raw < self.vol_floor
        s1 = np.where(floored, 0.0, self.skew + self.curvature * k)
        s2 = np.where(floored, 0.0, self.curvature + 0.0 * k)
        return np.maximum(raw, self.vol_floor), s1, s2

    def implied_vol(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Black vol (decimal)."""
        return self.smile_derivatives(strike, t)[0]

    def total_variance(self, k: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """``w = sigma(k)**2 t``."""
        kk = np.asarray(k, dtype=float)
        tt = np.asarray(t, dtype=float)
        s = np.maximum(self.atm_vol + self.skew * kk + 0.5 * self.curvature * kk * kk, 0.01)
        return np.asarray(s * s * tt)


@dataclass(frozen=True, eq=False)
class MarkSurface:
    """Interpolated mark implied vols of one chain (no calibration).

    Per expiry the total variance of the out-of-the-money marks is a natural cubic spline in
    ``k`` (flat vol beyond the outermost marks); between expiries total variance is linear in
    ``t`` at fixed ``k``; before the first and after the last expiry the smile in ``k`` is held
    (``w = (t / t_i) W_i``). Forwards: ``ln F`` linear in ``t`` through ``(0, ln spot)`` and the
    expiries' median forwards, the last carry continued.

    Attributes
    ----------
    t:
        Years to each expiry used, increasing.
    forwards:
        Median forward of each expiry (USD per coin).
    knots:
        Per expiry, the log-moneyness of the marks used.
    variances:
        Per expiry, the total variance of those marks.
    spot:
        Spot index (USD per coin), NaN if unknown.
    flat:
        True when the smile was replaced by its at-the-money vol (no skew).
    """

    t: tuple[float, ...]
    forwards: tuple[float, ...]
    knots: tuple[FloatArray, ...]
    variances: tuple[FloatArray, ...]
    spot: float = float("nan")
    flat: bool = False
    _splines: tuple[CubicSpline, ...] = field(init=False, repr=False)
    _forward_curve: ForwardCurve = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.t or len(self.t) != len(self.knots) or len(self.t) != len(self.forwards):
            raise ValueError("MarkSurface needs one smile per expiry (at least one)")
        splines = []
        for k, w in zip(self.knots, self.variances, strict=True):
            if k.size >= 2:
                splines.append(CubicSpline(k, w, bc_type="natural"))
            else:
                splines.append(CubicSpline([-1.0, 1.0], [w[0], w[0]], bc_type="natural"))
        object.__setattr__(self, "_splines", tuple(splines))
        spot = self.spot if np.isfinite(self.spot) and self.spot > 0 else None
        object.__setattr__(self, "_forward_curve", ForwardCurve(self.t, self.forwards, spot))

    @classmethod
    def from_chain(
        cls,
        chain: object,
        *,
        min_t: float = 1.0 / 365.0,
        min_quotes: int = 3,
        flat: bool = False,
    ) -> MarkSurface:
        """Build from an :class:`volcal.OptionChain` (its ``iv_mark`` column).

        Parameters
        ----------
        chain:
            The chain (anything with a ``quotes`` DataFrame of ``docs/conventions.md``).
        min_t:
            Expiries with fewer years left are skipped (default one day).
        min_quotes:
            Fewest out-of-the-money marks an expiry needs.
        flat:
            Replace each smile by its at-the-money vol (the spline's value at ``k = 0``).

        Raises
        ------
        ChainValidationError
            When no expiry has ``min_quotes`` marks.
        """
        q = chain.quotes  # type: ignore[attr-defined]
        iv = q["iv_mark"].to_numpy(dtype=float)
        k = q["k"].to_numpy(dtype=float)
        t = q["t"].to_numpy(dtype=float)
        call = q["call"].to_numpy(dtype=bool)
        otm = np.where(call, k >= 0, k < 0)
        ok = np.isfinite(iv) & (iv > 0) & otm & (t > min_t)
        ts, fs, ks, ws = [], [], [], []
        expiry = q["expiry"].to_numpy()
        fwd = q["forward"].to_numpy(dtype=float)
        for e in np.unique(expiry[ok]):
            sel = ok & (expiry == e)
            if sel.sum() < min_quotes:
                continue
            te = float(np.median(t[sel]))
            order = np.argsort(k[sel])
            kk = k[sel][order]
            ww = iv[sel][order] ** 2 * te
            kk, idx = np.unique(kk, return_index=True)
            ww = ww[idx]
            if flat:
                atm = float(CubicSpline(kk, ww, bc_type="natural")(0.0)) if kk.size > 1 else ww[0]
                atm = float(np.interp(0.0, kk, ww)) if not np.isfinite(atm) or atm <= 0 else atm
                kk, ww = np.array([0.0]), np.array([atm])
            ts.append(te)
            fs.append(float(np.median(fwd[sel])))
            ks.append(kk)
            ws.append(ww)
        if not ts:
            raise ChainValidationError(
                f"MarkSurface: no expiry with {min_quotes} out-of-the-money marks and t > {min_t}"
            )
        order = np.argsort(ts)
        spot = float(np.nanmedian(q["index_price"].to_numpy(dtype=float)))
        return cls(
            tuple(ts[i] for i in order),
            tuple(fs[i] for i in order),
            tuple(ks[i] for i in order),
            tuple(ws[i] for i in order),
            spot=spot,
            flat=flat,
        )

    @property
    def expiries(self) -> FloatArray:
        """Years to each expiry, increasing."""
        return np.asarray(self.t, dtype=float)

    def forward(self, t: npt.ArrayLike) -> FloatArray:
        """``F(t)``: ``ln F`` linear in ``t`` between nodes (spot at ``t = 0`` when known);
        :class:`volcal.surface.ForwardCurve`."""
        return self._forward_curve(t)

    def _smile(self, i: int, k: FloatArray) -> FloatArray:
        kn = self.knots[i]
        kc = np.clip(k, kn[0], kn[-1])  # flat total variance (flat vol) beyond the marks
        return np.asarray(self._splines[i](kc))

    def total_variance(self, k: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Total variance ``w(k, t)`` (dimensionless)."""
        kk, tq = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(t, dtype=float))
        ts = self.expiries
        n = ts.size
        seg = np.searchsorted(ts, tq, side="right") - 1
        out = np.full(kk.shape, np.nan)
        for i in range(-1, n):
            sel = (seg == i) & (tq > 0)
            if not sel.any():
                continue
            ks, tsel = kk[sel], tq[sel]
            if i == -1:
                out[sel] = tsel / ts[0] * self._smile(0, ks)
            elif i == n - 1:
                out[sel] = tsel / ts[-1] * self._smile(n - 1, ks)
            else:
                lam = (tsel - ts[i]) / (ts[i + 1] - ts[i])
                out[sel] = (1 - lam) * self._smile(i, ks) + lam * self._smile(i + 1, ks)
        return np.maximum(out, 0.0)

    def implied_vol(self, strike: npt.ArrayLike, t: npt.ArrayLike) -> FloatArray:
        """Black vol ``sqrt(w / t)`` (decimal); NaN for ``t <= 0``."""
        kk, tq = np.broadcast_arrays(np.asarray(strike, dtype=float), np.asarray(t, dtype=float))
        w = self.total_variance(np.log(kk / self.forward(tq)), tq)
        pos = tq > 0
        return np.asarray(np.where(pos, np.sqrt(w / np.where(pos, tq, 1.0)), np.nan))
