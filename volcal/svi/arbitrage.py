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

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.surface import SmileSurface, butterfly_g
from volcal.svi.grids import CHECK_SIZES, slice_grid

__all__ = ["ArbitrageReport", "check_surface", "quote_arbitrage"]

FloatArray = npt.NDArray[np.float64]


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
        return bool((self.butterfly["g_min"] >= 0.0).all())

    @property
    def calendar_free(self) -> bool:
        """True when ``w`` never decreases in ``t`` on the grid."""
        return bool((self.calendar["n_violations"] == 0).all()) if len(self.calendar) else True

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
    for t in ts:
        theta = float(surface.total_variance(0.0, t))
        parts.append(np.sqrt(max(theta, 0.0)) * np.linspace(-8.0, 8.0, CHECK_SIZES[1]))
    for m, sigma in local or []:
        parts.append(m + sigma * np.sinh(np.linspace(-4.0, 4.0, CHECK_SIZES[1])))
    k = np.unique(np.concatenate(parts))
    rows = []
    wprev: FloatArray | None = None
    cal_rows: list[dict[str, Any]] = []
    for t, at_exp in zip(times, at_expiry, strict=True):
        w, w1, w2, _ = surface.derivatives(k, t)
        g = butterfly_g(w, w1, w2, k)
        g_filled = np.where(np.isfinite(g), g, -np.inf)
        i = int(np.argmin(g_filled))
        rows.append(
            {
                "t": float(t),
                "at_expiry": bool(at_exp),
                "g_min": float(g_filled[i]),
                "k_at_min": float(k[i]),
            }
        )
        if wprev is not None:
            dw = w - wprev
            j = int(np.argmin(dw))
            cal_rows.append(
                {
                    "t0": float(cal_rows[-1]["t1"]) if cal_rows else float(times[0]),
                    "t1": float(t),
                    "dw_min": float(dw[j]),
                    "k_at_min": float(k[j]),
                    "n_violations": int(np.sum(dw < 0.0)),
                }
            )
        wprev = w
    cal = pd.DataFrame(cal_rows, columns=["t0", "t1", "dw_min", "k_at_min", "n_violations"])
    if len(cal):
        cal["t0"] = times[:-1]
    return ArbitrageReport(
        butterfly=pd.DataFrame(rows, columns=["t", "at_expiry", "g_min", "k_at_min"]),
        calendar=cal,
        quote_violations=quote_violations
        if quote_violations is not None
        else pd.DataFrame(columns=["kind", "expiry", "strikes", "amount"]),
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
    (``amount`` > ``tol``, in units of ``D F``).
    """
    df = quotes
    if "used" in df.columns:
        df = df[df["used"]]
    mid = 0.5 * (df["bid_usd"].to_numpy(dtype=float) + df["ask_usd"].to_numpy(dtype=float))
    keep = ~np.isnan(mid)
    fwd = df["forward"].to_numpy(dtype=float)[keep]
    disc = (
        df["discount"].to_numpy(dtype=float)[keep]
        if "discount" in df.columns
        else np.ones(fwd.size)
    )
    strike = df["strike"].to_numpy(dtype=float)[keep]
    is_call = df["call"].to_numpy(dtype=bool)[keep]
    mid = mid[keep]
    codes, expiries = pd.factorize(df["expiry"][keep], sort=True)
    out: list[dict[str, Any]] = []
    curves = []
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(expiries) + 1))
    for e in range(len(expiries)):
        rows = order[bounds[e] : bounds[e + 1]]
        expiry = expiries[e]
        kappa, c, strikes = _calls_arrays(
            fwd[rows], disc[rows], strike[rows], mid[rows], is_call[rows]
        )
        curves.append((expiry, kappa, c))
        if kappa.size < 2:
            continue
        slope = np.diff(c) / np.diff(kappa)
        for i in np.flatnonzero(slope > tol):
            out.append(
                {
                    "kind": "vertical",
                    "expiry": expiry,
                    "strikes": (strikes[i], strikes[i + 1]),
                    "amount": float(np.diff(c)[i]),
                }
            )
        for i in np.flatnonzero(slope < -1.0 - tol):
            out.append(
                {
                    "kind": "vertical",
                    "expiry": expiry,
                    "strikes": (strikes[i], strikes[i + 1]),
                    "amount": float(-(slope[i] + 1.0) * np.diff(kappa)[i]),
                }
            )
        if kappa.size >= 3:
            conv = np.diff(slope)
            for i in np.flatnonzero(conv < -tol):
                out.append(
                    {
                        "kind": "butterfly",
                        "expiry": expiry,
                        "strikes": (strikes[i], strikes[i + 1], strikes[i + 2]),
                        "amount": float(-conv[i] * np.diff(kappa)[i]),
                    }
                )
    for (e0, k0, c0), (_, k1, c1) in itertools.pairwise(curves):
        if k1.size < 2:
            continue
        inside = (k0 >= k1[0]) & (k0 <= k1[-1])
        upper = np.interp(k0[inside], k1, c1)
        gap = c0[inside] - upper
        for kap, amount in zip(k0[inside][gap > tol], gap[gap > tol], strict=True):
            out.append(
                {
                    "kind": "calendar",
                    "expiry": e0,
                    "strikes": (float(kap),),
                    "amount": float(amount),
                }
            )
    return pd.DataFrame(out, columns=["kind", "expiry", "strikes", "amount"])
