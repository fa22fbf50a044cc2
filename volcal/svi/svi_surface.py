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
from volcal.svi._checks import svi_grid_report, svi_surface_eval
from volcal.svi.params import SviRaw

__all__ = ["SviSurface"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


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

    @property
    def param_array(self) -> FloatArray:
        """Smile parameters as rows ``(a, b, rho, m, sigma**2, b sigma**2)`` (the compiled
        evaluation's layout, :mod:`volcal.svi._checks`)."""
        cached: Any = self._cache.get("param_array")
        if cached is None:
            cached = np.array(
                [(p.a, p.b, p.rho, p.m, p.sigma**2, p.b * p.sigma**2) for p in self.params],
                dtype=float,
            )
            self._cache["param_array"] = cached
        out: FloatArray = cached
        return out

    def derivatives(
        self, k: npt.ArrayLike, t: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """``(w, dw/dk, d2w/dk2, dw/dt)`` at ``(k, t)`` (broadcast; ``k = ln(K/F)``, ``t`` in
        years), by the rules of the module docstring; NaN where ``t`` is not finite or
        ``t <= 0``. Compiled (:func:`volcal.svi._checks.svi_surface_eval`), the same values
        as the envelope of :meth:`SviRaw.derivatives <volcal.svi.params.SviRaw.derivatives>`."""
        k_arr = np.asarray(k, dtype=float)
        t_arr = np.asarray(t, dtype=float)
        shape = np.broadcast_shapes(k_arr.shape, t_arr.shape)
        kb = np.ascontiguousarray(np.broadcast_to(k_arr, shape)).ravel()
        tb = np.ascontiguousarray(np.broadcast_to(t_arr, shape)).ravel()
        out = np.empty((4, kb.size))
        svi_surface_eval(kb, tb, self.expiries, self.param_array, out)
        return (
            out[0].reshape(shape),
            out[1].reshape(shape),
            out[2].reshape(shape),
            out[3].reshape(shape),
        )

    def grid_report(
        self, k: FloatArray, times: FloatArray
    ) -> tuple[FloatArray, IntArray, FloatArray, IntArray, IntArray]:
        """Butterfly and calendar statistics on the ``(times, k)`` grid
        (:func:`volcal.svi._checks.svi_grid_report`; used by the arbitrage report)."""
        return svi_grid_report(
            np.ascontiguousarray(k, dtype=float),
            np.ascontiguousarray(times, dtype=float),
            self.expiries,
            self.param_array,
        )
