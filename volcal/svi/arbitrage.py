"""Static-arbitrage checks of fitted surfaces and of raw quotes.

* **Butterfly** (per smile): ``min g(k)`` of Gatheral & Jacquier (2014, eq. 2.1) on the dense
  grid of :mod:`volcal.svi.grids` (``CHECK_SIZES``) at every expiry and half-way between
  consecutive expiries. Free of butterfly arbitrage iff ``g >= 0``.
* **Calendar**: ``w(k, t)`` must not decrease in ``t`` at fixed ``k``; checked on the dense
  ``k`` grid at the expiries and the half-way times (``dw/dt >= 0``).
* **Raw quotes** (per expiry, on mid prices converted to calls by put-call parity and
  normalised by the forward, ``c = C/(D F)`` against ``kappa = K/F``):
  vertical spreads ``0 <= -(dc/dkappa) <= 1``, butterflies (convexity: slopes increasing)
  and calendar spreads ``c_{t2}(kappa) >= c_{t1}(kappa)`` where the longer expiry's
  linearly interpolated price (an upper bound of its convex price function) is below the
  shorter's quote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.surface import SmileSurface
from volcal.svi._checks import grid_report, xssvi_grid_report
from volcal.svi.grids import CHECK_SIZES, slice_grid
from volcal.svi.quotes import expiry_i8
from volcal.svi.ssvi import XssviSurfaceBase
from volcal.svi.svi_surface import SviSurface

__all__ = ["ArbitrageReport", "check_surface", "quote_arbitrage"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# the per-slice parts of the dense check grid: sqrt(theta) z, |z| <= 8, and m + sigma sinh(z),
# |z| <= 4 (see volcal.svi.grids)
_ATM_Z = np.linspace(-8.0, 8.0, CHECK_SIZES[1])
_SINH_Z = np.sinh(np.linspace(-4.0, 4.0, CHECK_SIZES[1]))


@dataclass(frozen=True)
class ArbitrageReport:
    """Static-arbitrage diagnostics of a fitted surface and of the quotes it was fitted to.

    Attributes
    ----------
    butterfly:
        One row per checked time: ``t``, ``at_expiry`` (bool), ``g_min``, ``k_at_min``.
    calendar:
        One row per interval between checked times: ``t0``, ``t1``, ``dw_min`` (smallest
        ``w(k, t1) - w(k, t0)`` on the grid), ``k_at_min``, ``n_violations``.
    quote_violations:
        One row per violated raw-quote spread: ``kind`` (vertical / butterfly / calendar),
        ``expiry``, ``strikes`` (tuple), ``amount`` (size of the violation in normalised call
        price ``C/(D F)``).
    """

    butterfly: pd.DataFrame
    calendar: pd.DataFrame
    quote_violations: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["kind", "expiry", "strikes", "amount"])
    )

    @property
    def g_min(self) -> float:
        """Smallest ``g`` over every checked smile."""
        return float(self.butterfly["g_min"].min()) if len(self.butterfly) else float("nan")

    @property
    def butterfly_free(self) -> bool:
        """True when ``g >= 0`` on every checked smile's grid."""
        return bool(np.all(self.butterfly["g_min"].to_numpy(dtype=float) >= 0.0))

    @property
    def calendar_free(self) -> bool:
        """True when ``w`` never decreases in ``t`` on the grid."""
        if not len(self.calendar):
            return True
        return bool(np.all(self.calendar["n_violations"].to_numpy(dtype=float) == 0.0))

    @property
    def arbitrage_free(self) -> bool:
        """Free of butterfly and calendar arbitrage on the dense grid."""
        return self.butterfly_free and self.calendar_free

    def summary(self) -> str:
        """A few lines of text."""
        lines = [
            f"butterfly: min g = {self.g_min:.3g} over {len(self.butterfly)} smiles "
            f"({'free' if self.butterfly_free else 'ARBITRAGE'})",
            f"calendar: min dw = {self.calendar['dw_min'].min() if len(self.calendar) else 0.0:.3g}"
            f" ({'free' if self.calendar_free else 'ARBITRAGE'})",
            f"raw quotes: {len(self.quote_violations)} violated spreads "
            + str(self.quote_violations["kind"].value_counts().to_dict()),
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (records)."""
        qv = self.quote_violations.copy()
        if len(qv):
            qv["expiry"] = qv["expiry"].astype(str)
            qv["strikes"] = qv["strikes"].map(list)
        return {
            "butterfly": self.butterfly.to_dict(orient="records"),
            "calendar": self.calendar.to_dict(orient="records"),
            "quote_violations": qv.to_dict(orient="records"),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArbitrageReport:
        """Inverse of :meth:`to_dict`."""
        qv = pd.DataFrame(data["quote_violations"], columns=["kind", "expiry", "strikes", "amount"])
        if len(qv):
            qv["expiry"] = pd.to_datetime(qv["expiry"], utc=True)
            qv["strikes"] = qv["strikes"].map(tuple)
        return cls(
            butterfly=pd.DataFrame(
                data["butterfly"], columns=["t", "at_expiry", "g_min", "k_at_min"]
            ),
            calendar=pd.DataFrame(
                data["calendar"], columns=["t0", "t1", "dw_min", "k_at_min", "n_violations"]
            ),
            quote_violations=qv,
        )


def check_surface(
    surface: SmileSurface,
    k_lo: float,
    k_hi: float,
    local: list[tuple[float, float]] | None = None,
    quote_violations: pd.DataFrame | None = None,
) -> ArbitrageReport:
    """Butterfly and calendar checks of ``surface`` on the dense grid.

    Parameters
    ----------
    surface:
        The fitted surface.
    k_lo, k_hi:
        Log-moneyness range of the uniform part of the grid (all expiries).
    local:
        ``(m, sigma)`` scales of the smiles; their ``m + sigma sinh(z)`` points are added.
    quote_violations:
        Raw-quote violations (from :func:`quote_arbitrage`) to carry in the report.
    """
    ts = surface.expiries
    mids = 0.5 * (ts[:-1] + ts[1:])
    times = np.sort(np.concatenate([ts, mids]))
    at_expiry = np.isin(times, ts)
    parts = [slice_grid(k_lo, k_hi, 0.0, sizes=CHECK_SIZES)]
    thetas = np.asarray(surface.total_variance(np.zeros(ts.size), ts), dtype=float)
    for theta in thetas:
        parts.append(np.sqrt(max(float(theta), 0.0)) * _ATM_Z)
    for m, sigma in local or []:
        parts.append(m + sigma * _SINH_Z)
    k = np.unique(np.concatenate(parts))
    g_min, g_arg, dw_min, dw_arg, n_neg = _grid_stats(surface, k, times)
    butterfly = pd.DataFrame(
        {"t": times, "at_expiry": at_expiry, "g_min": g_min, "k_at_min": k[g_arg]}, copy=False
    )
    if times.size > 1:
        cal = pd.DataFrame(
            {
                "t0": times[:-1],
                "t1": times[1:],
                "dw_min": dw_min[1:],
                "k_at_min": k[dw_arg[1:]],
                "n_violations": n_neg[1:],
            },
            copy=False,
        )
    else:
        cal = pd.DataFrame([], columns=["t0", "t1", "dw_min", "k_at_min", "n_violations"])
    return ArbitrageReport(
        butterfly=butterfly,
        calendar=cal,
        quote_violations=quote_violations
        if quote_violations is not None
        else pd.DataFrame(columns=["kind", "expiry", "strikes", "amount"]),
    )


def _grid_stats(
    surface: SmileSurface, k: FloatArray, times: FloatArray
) -> tuple[FloatArray, IntArray, FloatArray, IntArray, IntArray]:
    """Per time of ``times``: ``(min g, argmin, min dw to the previous time, argmin, number
    of dw < 0)`` on the grid ``k`` (:func:`volcal.svi._checks.grid_report`)."""
    if isinstance(surface, SviSurface):
        return surface.grid_report(k, times)
    if isinstance(surface, XssviSurfaceBase):
        # one compiled pass over the (times, k) grid
        curves = np.ascontiguousarray(np.asarray(surface.curves(times), dtype=float))
        return xssvi_grid_report(k, curves)
    rows = [surface.derivatives(k, t)[:3] for t in times]
    w, w1, w2 = (np.stack([r[i] for r in rows]) for i in range(3))
    return grid_report(
        k,
        np.ascontiguousarray(w, dtype=float),
        np.ascontiguousarray(w1, dtype=float),
        np.ascontiguousarray(w2, dtype=float),
    )


def _normalised_calls(grp: pd.DataFrame, price: str) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(kappa = K/F, c = C/(D F), strikes) of one expiry, calls from puts by parity, one per K."""
    f = grp["forward"].to_numpy(dtype=float)
    d = grp["discount"].to_numpy(dtype=float) if "discount" in grp.columns else np.ones(len(grp))
    return _calls_arrays(
        f, d, grp["strike"].to_numpy(dtype=float), grp[price].to_numpy(dtype=float),
        grp["call"].to_numpy(dtype=bool),
    )  # fmt: skip


def _calls_arrays(
    f: FloatArray, d: FloatArray, kk: FloatArray, p: FloatArray, call: npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """:func:`_normalised_calls` on arrays: rows with a NaN dropped, means per strike."""
    # put-call parity: C = P + D (F - K)
    c = np.where(call, p, p + d * (f - kk)) / (d * f)
    kappa = kk / f
    ok = np.isfinite(c) & np.isfinite(kappa) & np.isfinite(kk)
    kk, c, kappa = kk[ok], c[ok], kappa[ok]
    strikes, inv = np.unique(kk, return_inverse=True)
    cnt = np.bincount(inv, minlength=strikes.size).astype(float)
    c_mean = np.bincount(inv, weights=c, minlength=strikes.size) / cnt
    kappa_mean = np.bincount(inv, weights=kappa, minlength=strikes.size) / cnt
    return kappa_mean, c_mean, strikes


def quote_arbitrage(quotes: pd.DataFrame, *, tol: float = 1e-12) -> pd.DataFrame:
    """Violated vertical, butterfly and calendar spreads among mid prices of ``quotes``.

    Uses rows with ``used == True`` when that column exists (else all rows with a bid and an
    ask). Mid = ``(bid_usd + ask_usd)/2``. Returns columns ``kind, expiry, strikes, amount``
    (``amount`` > ``tol``, in units of ``D F``); per expiry (increasing) its vertical spreads
    (slope above 0, then below -1) and butterflies, then the calendar spreads.
    """
    df = quotes
    n = len(df)
    used = df["used"].to_numpy(dtype=bool) if "used" in df.columns else np.ones(n, dtype=bool)
    pos = np.flatnonzero(used)
    mid = 0.5 * (
        df["bid_usd"].to_numpy(dtype=float)[pos] + df["ask_usd"].to_numpy(dtype=float)[pos]
    )
    keep = ~np.isnan(mid)
    pos, mid = pos[keep], mid[keep]
    fwd = df["forward"].to_numpy(dtype=float)[pos]
    disc = df["discount"].to_numpy(dtype=float)[pos] if "discount" in df.columns else 1.0
    strike = df["strike"].to_numpy(dtype=float)[pos]
    is_call = df["call"].to_numpy(dtype=bool)[pos]
    codes, first = _codes(df["expiry"], pos)
    n_exp = first.size
    # normalised calls, put-call parity C = P + D (F - K); rows with a NaN dropped
    c = np.where(is_call, mid, mid + disc * (fwd - strike)) / (disc * fwd)
    kappa = strike / fwd
    ok = np.isfinite(c) & np.isfinite(kappa) & np.isfinite(strike) & (codes >= 0)
    codes, strike, c, kappa = codes[ok], strike[ok], c[ok], kappa[ok]
    order = np.lexsort((strike, codes))  # by expiry, then strike (stable: quote order)
    codes, strike, c, kappa = codes[order], strike[order], c[order], kappa[order]
    # one point per (expiry, strike): means of c and kappa
    new = np.r_[True, (codes[1:] != codes[:-1]) | (strike[1:] != strike[:-1])]
    starts = np.flatnonzero(new)
    cnt = np.diff(np.r_[starts, codes.size]).astype(float)
    if starts.size:
        c = np.add.reduceat(c, starts) / cnt
        kappa = np.add.reduceat(kappa, starts) / cnt
    else:
        c, kappa = c[:0], kappa[:0]
    codes, strike = codes[starts], strike[starts]
    bounds = np.searchsorted(codes, np.arange(n_exp + 1))
    # violations as (expiry, kind rank, position, amount, strikes); rank 0/1: vertical
    # spreads with slope above 0 / below -1, 2: butterflies, 3: calendar spreads
    parts: list[tuple[IntArray, int, IntArray, FloatArray]] = []
    if codes.size >= 2:
        dc = np.diff(c)
        dk = np.diff(kappa)
        slope = dc / dk
        same = codes[1:] == codes[:-1]
        up = np.flatnonzero(same & (slope > tol))
        down = np.flatnonzero(same & (slope < -1.0 - tol))
        conv = np.diff(slope)
        bfly = np.flatnonzero(same[1:] & same[:-1] & (conv < -tol))
        parts.append((codes[up], 0, up, dc[up]))
        parts.append((codes[down], 1, down, -(slope[down] + 1.0) * dk[down]))
        parts.append((codes[bfly], 2, bfly, -conv[bfly] * dk[bfly]))
    cal_e: list[int] = []
    cal_kappa: list[FloatArray] = []
    cal_gap: list[FloatArray] = []
    for e in range(n_exp - 1):
        a1, b1 = bounds[e + 1], bounds[e + 2]
        if b1 - a1 < 2:
            continue
        k0, c0 = kappa[bounds[e] : a1], c[bounds[e] : a1]
        k1, c1 = kappa[a1:b1], c[a1:b1]
        inside = (k0 >= k1[0]) & (k0 <= k1[-1])
        gap = c0[inside] - np.interp(k0[inside], k1, c1)
        hit = gap > tol
        if hit.any():
            cal_e.append(e)
            cal_kappa.append(k0[inside][hit])
            cal_gap.append(gap[hit])
    columns = ["kind", "expiry", "strikes", "amount"]
    n_spread = sum(x[0].size for x in parts)
    if n_spread == 0 and not cal_e:
        return pd.DataFrame([], columns=columns)
    e_all = np.concatenate([x[0] for x in parts] + [np.zeros(0, dtype=np.int64)])
    rank = np.concatenate([np.full(x[0].size, x[1]) for x in parts] + [np.zeros(0, dtype=int)])
    at = np.concatenate([x[2] for x in parts] + [np.zeros(0, dtype=np.intp)])
    amount = np.concatenate([x[3] for x in parts] + [np.zeros(0)])
    order = np.lexsort((at, rank, e_all))
    e_all, rank, at, amount = e_all[order], rank[order], at[order], amount[order]
    s0 = list(strike[at])
    s1 = list(strike[np.minimum(at + 1, strike.size - 1)])
    s2 = list(strike[np.minimum(at + 2, strike.size - 1)])
    strikes_col: list[tuple[Any, ...]] = [
        (x, y, z) if r == 2 else (x, y)
        for x, y, z, r in zip(s0, s1, s2, rank.tolist(), strict=True)
    ]
    kinds = ["butterfly" if r == 2 else "vertical" for r in rank.tolist()]
    amounts = [float(x) for x in amount]
    exp_codes = e_all.tolist()
    for e, kap, gap in zip(cal_e, cal_kappa, cal_gap, strict=True):
        kinds += ["calendar"] * kap.size
        exp_codes += [e] * kap.size
        strikes_col += [(float(x),) for x in kap]
        amounts += [float(x) for x in gap]
    expiry = df["expiry"].array.take(first[np.asarray(exp_codes, dtype=np.int64)])
    return pd.DataFrame(
        {"kind": kinds, "expiry": expiry, "strikes": strikes_col, "amount": amounts}
    )


def _codes(
    expiry: pd.Series, pos: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Expiry code (increasing expiry order, -1 when missing) of rows ``pos`` and the row
    (in the full table) of each code's first quote."""
    all_i8 = expiry_i8(expiry)
    if all_i8 is not None:
        i8 = all_i8[pos]
        valid = i8 != np.iinfo(np.int64).min  # NaT
    else:
        i8 = np.asarray(pd.factorize(expiry.iloc[pos], sort=True)[0], dtype=np.int64)
        valid = i8 >= 0
    codes = np.full(pos.size, -1, dtype=np.int64)
    uniq, first, inv = np.unique(i8[valid], return_index=True, return_inverse=True)
    codes[valid] = inv
    rows = pos[np.flatnonzero(valid)[first]] if uniq.size else pos[:0]
    return codes, np.asarray(rows, dtype=np.int64)
