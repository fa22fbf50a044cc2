"""A surface of raw SVI smiles, free of calendar spread arbitrage by construction.

Rules (stated once, used everywhere):

* **At the calibrated expiries** ``t_1 < ... < t_n`` the total variance is the running upper
  envelope ``W_i(k) = max_{j <= i} w_j(k)`` of the fitted SVI smiles ``w_j``. Where the fitted
  smiles are ordered ``W_i = w_i``; :func:`volcal.fit_svi` constrains each smile below every
  longer one on that one's quoted range, so the envelope only lifts a longer smile's
  extrapolated wing outside its quotes (a safety net that keeps the rule exact everywhere).
  The envelope is calendar-free by construction, and keeps each smile free of butterfly
  arbitrage: in normalised call prices ``c(k) = C/F`` (increasing in ``w`` at fixed ``k``)
  it is the maximum of call-price functions, which is again decreasing and convex in the
  strike.
* **Between expiries** total variance is linear in ``t`` at fixed ``k`` (non-decreasing in
  ``t`` since ``W_i <= W_{i+1}``).
* **Before the first expiry** ``w(k, t) = (t / t_1) W_1(k)`` and **after the last**
  ``w(k, t) = (t / t_n) W_n(k)``: the implied-vol smile in ``k`` is held constant.
* **In k** each SVI smile extrapolates linearly in total variance, with the wing slopes
  ``b (1 +- rho) <= 2`` (Lee's moment bound) imposed by the calibrator.

Butterfly-freeness away from the expiries is not guaranteed by these rules; the
:class:`~volcal.svi.arbitrage.ArbitrageReport` checks it on a dense ``(k, t)`` grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from volcal.surface import ForwardCurve, SmileSurface
from volcal.svi.params import SviRaw

__all__ = ["SviSurface"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class SviSurface(SmileSurface):
    """Raw SVI smiles at the calibrated expiries, interpolated in total variance.

    Attributes
    ----------
    t:
        Years to each expiry (ACT/365F), strictly increasing.
    params:
        Raw SVI parameters of each expiry's smile (in total variance).
    forward_curve:
        Forwards of the expiries (see :class:`~volcal.surface.ForwardCurve`).
    """

    t: tuple[float, ...]
    params: tuple[SviRaw, ...]
    forward_curve: ForwardCurve
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.t) != len(self.params) or not self.params:
            raise ValueError("SviSurface needs one SviRaw per expiry (at least one)")
        if np.any(np.diff(np.asarray(self.t)) <= 0) or self.t[0] <= 0:
            raise ValueError(f"SviSurface expiries must be positive and increasing: {self.t}")

    @classmethod
    def from_slices(
        cls,
        t: Sequence[float],
        params: Sequence[SviRaw],
        forwards: Sequence[float],
        spot: float | None = None,
    ) -> SviSurface:
        """Build from per-expiry arrays (``forwards`` in USD per coin)."""
        if spot is not None and not np.isfinite(spot):
            spot = None
        curve = ForwardCurve(tuple(float(x) for x in t), tuple(float(f) for f in forwards), spot)
        return cls(tuple(float(x) for x in t), tuple(params), curve)

    @property
    def expiries(self) -> FloatArray:
        return np.asarray(self.t, dtype=float)

    def forward(self, t: npt.ArrayLike) -> FloatArray:
        return self.forward_curve(t)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SviSurface):
            return NotImplemented
        return (self.t, self.params, self.forward_curve) == (
            other.t,
            other.params,
            other.forward_curve,
        )

    def __hash__(self) -> int:
        return hash((self.t, self.params, self.forward_curve))

    def envelope(self, k: FloatArray, i: int) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``(W_i, W_i', W_i'')`` of the running envelope at expiry index ``i``.

        The envelopes of all expiries on the last ``k`` array seen are kept (the arbitrage
        report evaluates the surface many times on one grid); the values do not depend on it.
        """
        kk = np.asarray(k, dtype=float)
        key = (kk.shape, kk.tobytes())
        cached: Any = self._cache.get("envelope")
        if cached is not None and cached[0] == key:
            hit: tuple[FloatArray, FloatArray, FloatArray] = cached[1][i]
            return hit
        big = kk.size >= 256
        out = []
        w, w1, w2 = self.params[0].derivatives(kk)
        out.append((w, w1, w2))
        for j in range(1, len(self.params) if big else i + 1):
            wj, w1j, w2j = self.params[j].derivatives(kk)
            take = wj > w
            w = np.where(take, wj, w)
            w1 = np.where(take, w1j, w1)
            w2 = np.where(take, w2j, w2)
            out.append((w, w1, w2))
        if big:
            self._cache["envelope"] = (key, out)
        return out[i]

    def derivatives(
        self, k: npt.ArrayLike, t: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        if np.ndim(t) == 0:
            return self._derivatives_at(np.asarray(k, dtype=float), float(np.asarray(t)))
        kk, tt = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(t, dtype=float))
        ts = np.asarray(self.t)
        n = ts.size
        w = np.full(kk.shape, np.nan)
        w1 = np.full(kk.shape, np.nan)
        w2 = np.full(kk.shape, np.nan)
        wt = np.full(kk.shape, np.nan)
        # index of the segment: -1 before t_1, n-1 after t_n, else i with t_i <= t < t_{i+1}
        seg = np.searchsorted(ts, tt, side="right") - 1
        for i in range(-1, n):
            sel = (seg == i) & np.isfinite(tt) & (tt > 0)
            if not sel.any():
                continue
            kq, tq = kk[sel], tt[sel]
            if i == -1 or i == n - 1:
                j = 0 if i == -1 else n - 1
                a0, a1, a2 = self.envelope(kq, j)
                scale = tq / ts[j]
                w[sel], w1[sel], w2[sel] = a0 * scale, a1 * scale, a2 * scale
                wt[sel] = a0 / ts[j]
            else:
                a0, a1, a2 = self.envelope(kq, i)
                b0, b1, b2 = self.envelope(kq, i + 1)
                dt = ts[i + 1] - ts[i]
                lam = (tq - ts[i]) / dt
                # a + lam (b - a) rather than (1 - lam) a + lam b: never below a in floating
                # point when b >= a, so the interpolation stays calendar-free to the last bit
                w[sel] = a0 + lam * (b0 - a0)
                w1[sel] = a1 + lam * (b1 - a1)
                w2[sel] = a2 + lam * (b2 - a2)
                wt[sel] = (b0 - a0) / dt
        return w, w1, w2, wt

    def _derivatives_at(
        self, kk: FloatArray, t: float
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """:meth:`derivatives` at one time ``t`` (same rules, no per-segment masks)."""
        ts = np.asarray(self.t)
        n = ts.size
        if not (np.isfinite(t) and t > 0):
            nan = np.full(kk.shape, np.nan)
            return nan, nan.copy(), nan.copy(), nan.copy()
        i = int(np.searchsorted(ts, t, side="right")) - 1
        if i == -1 or i == n - 1:
            j = 0 if i == -1 else n - 1
            a0, a1, a2 = self.envelope(kk, j)
            scale = t / ts[j]
            return a0 * scale, a1 * scale, a2 * scale, a0 / ts[j]
        a0, a1, a2 = self.envelope(kk, i)
        b0, b1, b2 = self.envelope(kk, i + 1)
        dt = ts[i + 1] - ts[i]
        lam = (t - ts[i]) / dt
        return a0 + lam * (b0 - a0), a1 + lam * (b1 - a1), a2 + lam * (b2 - a2), (b0 - a0) / dt
