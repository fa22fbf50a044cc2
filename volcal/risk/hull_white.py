"""Minimum-variance delta in Hull & White's regression form.

Hull and White ("Optimal delta hedging for options", J. Banking & Finance 82, 2017, eq. 4-6)
write the expected implied-vol change of an option as a quadratic in its Black delta,

    E[d sigma] = (a + b delta_BS + c delta_BS**2) dS / (S sqrt(T))

so the minimum-variance delta is

    delta_MV = delta_BS + vega_BS / (S sqrt(T)) * (a + b delta_BS + c delta_BS**2)

with ``a, b, c`` fitted on history by least squares of
``dV - delta_BS dS = vega_BS dS / (S sqrt(T)) (a + b delta_BS + c delta_BS**2) + e``.
Here the underlying is the option's forward ``F`` (Black-76, ``delta = dV/dF``), ``vega`` is per
1.00 of vol, ``T`` in years, values in USD. The quadratic is in the **call** delta: a put's vol
moves as the call's of the same strike and expiry (same vega, same ``d sigma / dF``), so a put
uses ``delta_call = delta_put + 1`` (undiscounted); its ``delta_MV`` is the call's minus one.

This is the regression counterpart of the surface-dynamic form of :mod:`volcal.risk.greeks`
(``delta + vega * sigma_F``); both are available, :class:`volcal.risk.MarginParams` chooses.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.black import black_greeks

__all__ = ["HullWhiteDelta", "fit_hull_white_delta", "hull_white_from_chains"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class HullWhiteDelta:
    """Coefficients of the minimum-variance delta (Hull & White 2017).

    Attributes
    ----------
    a, b, c:
        ``E[d sigma] = (a + b delta + c delta**2) dF / (F sqrt(T))`` with ``delta`` the
        Black-76 call delta (dimensionless, finite).
    n:
        Observations of the fit (0 when given).
    r2:
        Share of the variance of ``dV - delta dF`` the regression explains (NaN when given).
    source:
        Where the coefficients come from.
    """

    a: float
    b: float
    c: float
    n: int = 0
    r2: float = float("nan")
    source: str = "given"

    def __post_init__(self) -> None:
        if not all(np.isfinite(x) for x in (self.a, self.b, self.c)):
            raise ValueError(f"HullWhiteDelta needs finite a, b, c: {self}")

    def vol_slope(self, call_delta: npt.ArrayLike) -> FloatArray:
        """``a + b delta + c delta**2`` (dimensionless)."""
        d = np.asarray(call_delta, dtype=float)
        return np.asarray(self.a + self.b * d + self.c * d * d)

    def delta(
        self,
        forward: npt.ArrayLike,
        t: npt.ArrayLike,
        delta_bs: npt.ArrayLike,
        vega: npt.ArrayLike,
        call: npt.ArrayLike,
    ) -> FloatArray:
        """``delta_MV = delta_BS + vega / (F sqrt(T)) (a + b d + c d**2)``, ``d`` the call delta.

        Parameters
        ----------
        forward:
            ``F`` (USD per coin).
        t:
            Years to expiry (> 0).
        delta_bs:
            Black-76 delta of the option itself (calls in (0, 1), puts in (-1, 0)).
        vega:
            Black-76 vega (USD per 1.00 of vol), of the same size as ``delta_bs``.
        call:
            True for calls.
        """
        f = np.asarray(forward, dtype=float)
        tt = np.asarray(t, dtype=float)
        d = np.asarray(delta_bs, dtype=float)
        dc = np.where(np.asarray(call, dtype=bool), d, d + 1.0)
        return np.asarray(
            d + np.asarray(vega, dtype=float) / (f * np.sqrt(tt)) * self.vol_slope(dc)
        )


def fit_hull_white_delta(
    forward0: npt.ArrayLike,
    forward1: npt.ArrayLike,
    value0: npt.ArrayLike,
    value1: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    vol: npt.ArrayLike,
    call: npt.ArrayLike,
    *,
    source: str = "",
) -> HullWhiteDelta:
    """Least-squares ``a, b, c`` from matched option observations one step apart.

    Parameters
    ----------
    forward0, forward1:
        Forward of each option's expiry at the start and end of the step (USD).
    value0, value1:
        Option values (USD) at the start and end.
    strike, t, vol, call:
        Strike (USD), years to expiry and Black-76 implied vol at the start, call flag.
    source:
        Description recorded in the result.

    Returns
    -------
    HullWhiteDelta
    """
    f0, f1, v0, v1, k, tt, s = (
        np.asarray(x, dtype=float) for x in (forward0, forward1, value0, value1, strike, t, vol)
    )
    c = np.asarray(call, dtype=bool)
    g = black_greeks(f0, k, tt, s, c)
    delta, vega = np.asarray(g.delta, dtype=float), np.asarray(g.vega, dtype=float)
    df = f1 - f0
    y = (v1 - v0) - delta * df
    dc = np.where(c, delta, delta + 1.0)
    base = vega * df / (f0 * np.sqrt(tt))
    x = np.stack([base, base * dc, base * dc * dc], axis=1)
    ok = np.isfinite(y) & np.all(np.isfinite(x), axis=1)
    if ok.sum() < 3:
        raise ValueError(f"fit_hull_white_delta: {int(ok.sum())} usable observations (< 3)")
    coef, *_ = np.linalg.lstsq(x[ok], y[ok], rcond=None)
    resid = y[ok] - x[ok] @ coef
    sst = float(np.sum((y[ok] - y[ok].mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / sst if sst > 0 else float("nan")
    return HullWhiteDelta(
        float(coef[0]),
        float(coef[1]),
        float(coef[2]),
        int(ok.sum()),
        r2,
        source or f"least squares on {int(ok.sum())} option changes",
    )


def hull_white_from_chains(
    chains: Sequence[Any],
    *,
    min_days: float = 7.0,
    max_gap_days: float = 1.5,
    min_delta: float = 0.05,
) -> HullWhiteDelta:
    """Fit :class:`HullWhiteDelta` on consecutive chains of one underlying.

    Every option listed in two consecutive chains (at most ``max_gap_days`` apart) with a mark
    in both, more than ``min_days`` to expiry and a Black call delta in
    ``[min_delta, 1 - min_delta]`` is one observation: USD marks, each expiry's forward, the
    first chain's mark implied vol.
    """
    cols = ["symbol", "strike", "t", "call", "iv_mark", "mark_usd", "forward"]
    parts = []
    for c0, c1 in itertools.pairwise(chains):
        if (c1.as_of - c0.as_of).total_seconds() > max_gap_days * 86_400.0:
            continue
        q0 = c0.quotes[cols]
        q1 = c1.quotes[["symbol", "mark_usd", "forward"]]
        m = q0.merge(q1, on="symbol", suffixes=("0", "1"))
        m = m[(m["t"] * 365.0 > min_days) & np.isfinite(m["iv_mark"]) & (m["iv_mark"] > 0)]
        parts.append(m)
    if not parts:
        raise ValueError("hull_white_from_chains: no consecutive chains within max_gap_days")
    m = pd.concat(parts, ignore_index=True)
    f0 = m["forward0"].to_numpy(dtype=float)
    k = m["strike"].to_numpy(dtype=float)
    tt = m["t"].to_numpy(dtype=float)
    s = m["iv_mark"].to_numpy(dtype=float)
    dcall = np.asarray(black_greeks(f0, k, tt, s, np.ones(len(m), dtype=bool)).delta, dtype=float)
    keep = (dcall >= min_delta) & (dcall <= 1.0 - min_delta)
    m = m[keep]
    return fit_hull_white_delta(
        m["forward0"],
        m["forward1"],
        m["mark_usd0"],
        m["mark_usd1"],
        m["strike"],
        m["t"],
        m["iv_mark"],
        m["call"],
        source=f"least squares on {len(m)} option changes over {len(parts)} chain pairs",
    )
