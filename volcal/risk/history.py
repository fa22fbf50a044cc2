"""Per-snapshot market statistics that margin parameters are calibrated from.

:func:`history_stats` reduces each chain to one row: the spot index, and at constant
maturities (:data:`NODES_DAYS`) the forward, the at-the-money vol and the at-the-money skew
``d sigma/dk``, plus spread and turnover measures. Calibration (:mod:`volcal.risk.params`)
and the backtest work from this table, so a chain is read once.

Per expiry (``t`` > 1 day), the out-of-the-money marks with ``|k| <= max(0.05, sigma sqrt(t))``
are fitted by least squares with ``sigma(k) = a + b k + c k**2``: ``a`` is the ATM vol, ``b``
the skew (at least 4 marks, else NaN). Constant-maturity values interpolate between the
bracketing expiries: total variance ``a**2 t`` and skew linearly in ``t``, ``ln F`` linearly in
``t`` (NaN outside the listed expiries).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "NODES_DAYS",
    "QUOTE_COLUMNS",
    "VEGA_BUCKETS_DAYS",
    "HistoryStats",
    "history_stats",
    "history_stats_from_quotes",
]

FloatArray = npt.NDArray[np.float64]

NODES_DAYS: tuple[int, ...] = (7, 14, 30, 60, 90, 180)
"""Constant maturities (days) of the statistics."""

VEGA_BUCKETS_DAYS: tuple[float, ...] = (7.0, 30.0, 90.0, 180.0, float("inf"))
"""Upper ends (days, inclusive) of the tenor buckets of the vega add-on and spreads."""


@dataclass(frozen=True, eq=False)
class HistoryStats:
    """One row per snapshot, oldest first.

    Attributes
    ----------
    table:
        Columns ``as_of`` (UTC), ``spot`` (USD), ``fwd_{d}``, ``atm_{d}`` (decimal vol),
        ``skew_{d}`` (per unit of ``k``) for ``d`` in :data:`NODES_DAYS`; ``hs_vol_{i}`` median
        half-spread in vol (decimal) of two-sided out-of-the-money quotes in vega bucket ``i``;
        ``turnover`` 24 h volume / open interest (all options).
    underlying:
        Coin.
    """

    table: pd.DataFrame
    underlying: str

    def __len__(self) -> int:
        return len(self.table)

    def before(self, as_of: object) -> HistoryStats:
        """The rows strictly before ``as_of``."""
        ts = pd.Timestamp(as_of)  # type: ignore[arg-type]
        return HistoryStats(
            self.table[self.table["as_of"] < ts].reset_index(drop=True), self.underlying
        )


def _expiry_fits(q: pd.DataFrame) -> pd.DataFrame:
    """ATM vol and skew per (as_of, expiry) from grouped least-squares sums."""
    k = q["k"].to_numpy(dtype=float)
    t = q["t"].to_numpy(dtype=float)
    iv = q["iv_mark"].to_numpy(dtype=float)
    call = q["call"].to_numpy(dtype=bool)
    otm = np.where(call, k >= 0, k < 0)
    width = np.maximum(0.05, np.where(np.isfinite(iv), iv, 0.0) * np.sqrt(np.maximum(t, 0.0)))
    ok = otm & np.isfinite(iv) & (iv > 0) & (t > 1.0 / 365.0) & (np.abs(k) <= width)
    kk, yy = k[ok], iv[ok]
    sums = pd.DataFrame(
        {
            "as_of": q["as_of"].to_numpy()[ok],
            "expiry": q["expiry"].to_numpy()[ok],
            "t": t[ok],
            "fwd": q["forward"].to_numpy(dtype=float)[ok],
            "n": np.ones(kk.size),
            "k1": kk,
            "k2": kk**2,
            "k3": kk**3,
            "k4": kk**4,
            "y": yy,
            "ky": kk * yy,
            "k2y": kk**2 * yy,
        }
    )
    g = sums.groupby(["as_of", "expiry"], sort=True)
    agg = g[["n", "k1", "k2", "k3", "k4", "y", "ky", "k2y"]].sum()
    med = g[["t", "fwd"]].median()
    a = np.empty((len(agg), 3, 3))
    n, k1, k2, k3, k4 = (agg[c].to_numpy() for c in ("n", "k1", "k2", "k3", "k4"))
    a[:, 0] = np.stack([n, k1, k2], axis=1)
    a[:, 1] = np.stack([k1, k2, k3], axis=1)
    a[:, 2] = np.stack([k2, k3, k4], axis=1)
    b = agg[["y", "ky", "k2y"]].to_numpy()
    good = (n >= 4) & (
        np.abs(np.linalg.det(np.where((n >= 4)[:, None, None], a, np.eye(3)))) > 1e-300
    )
    coef = np.full((len(agg), 3), np.nan)
    if good.any():
        coef[good] = np.linalg.solve(a[good], b[good][:, :, None])[:, :, 0]
    out = pd.DataFrame(
        {
            "t": med["t"].to_numpy(),
            "fwd": med["fwd"].to_numpy(),
            "atm": coef[:, 0],
            "skew": coef[:, 1],
        },
        index=agg.index,
    ).reset_index()
    return out[np.isfinite(out["atm"]) & (out["atm"] > 0)]


def _node_values(fits: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for as_of, grp in fits.groupby("as_of", sort=True):
        g = grp.sort_values("t")
        t = g["t"].to_numpy()
        w = g["atm"].to_numpy() ** 2 * t
        sk = g["skew"].to_numpy()
        lf = np.log(g["fwd"].to_numpy())
        row: dict[str, Any] = {"as_of": as_of}
        for d in NODES_DAYS:
            tau = d / 365.0
            inside = t.size >= 1 and t[0] <= tau <= t[-1]
            if inside:
                wi = float(np.interp(tau, t, w))
                row[f"atm_{d}"] = np.sqrt(wi / tau)
                row[f"skew_{d}"] = float(np.interp(tau, t, sk))
                row[f"fwd_{d}"] = float(np.exp(np.interp(tau, t, lf)))
            else:
                row[f"atm_{d}"] = row[f"skew_{d}"] = row[f"fwd_{d}"] = np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _spread_stats(q: pd.DataFrame) -> pd.DataFrame:
    k = q["k"].to_numpy(dtype=float)
    call = q["call"].to_numpy(dtype=bool)
    otm = np.where(call, k >= 0, k < 0)
    hs = 0.5 * (q["iv_ask"].to_numpy(dtype=float) - q["iv_bid"].to_numpy(dtype=float))
    dte = q["t"].to_numpy(dtype=float) * 365.0
    ok = otm & np.isfinite(hs) & (hs >= 0) & (dte > 1.0)
    bucket = np.searchsorted(np.asarray(VEGA_BUCKETS_DAYS), dte, side="left")
    frame = pd.DataFrame({"as_of": q["as_of"].to_numpy()[ok], "b": bucket[ok], "hs": hs[ok]})
    wide = frame.groupby(["as_of", "b"])["hs"].median().unstack("b")
    wide.columns = [f"hs_vol_{int(c)}" for c in wide.columns]
    for i in range(len(VEGA_BUCKETS_DAYS)):
        if f"hs_vol_{i}" not in wide.columns:
            wide[f"hs_vol_{i}"] = np.nan
    vol = q.get("exchange_volume")
    oi = q["open_interest"]
    if vol is not None:
        agg = pd.DataFrame({"as_of": q["as_of"], "v": vol, "oi": oi}).groupby("as_of").sum()
        wide["turnover"] = agg["v"] / agg["oi"].where(agg["oi"] > 0)
    else:
        wide["turnover"] = np.nan
    return wide.reset_index()


def _as_chains(history: Any, currency: str | None) -> list[Any]:
    if hasattr(history, "quotes"):
        return [history]
    if isinstance(history, (str, os.PathLike, pd.DataFrame)):
        if currency is None:
            raise ValueError("history_stats: give currency= when history is a path or DataFrame")
        from volcal.data.snapshots import load_snapshot

        loaded = load_snapshot(history, currency)
        return loaded if isinstance(loaded, list) else [loaded]
    if isinstance(history, Sequence):
        return list(history)
    raise TypeError(f"history must be chains, a path or a DataFrame, got {type(history)!r}")


def history_stats(history: Any, currency: str | None = None) -> HistoryStats:
    """Reduce a history of chains to per-snapshot statistics.

    Parameters
    ----------
    history:
        A sequence of :class:`volcal.OptionChain` (one underlying), one chain, anything
        :func:`volcal.load_snapshot` reads (path or DataFrame; then ``currency`` is needed), or
        a :class:`HistoryStats` (returned unchanged).
    currency:
        Coin to load from a path or DataFrame.

    Returns
    -------
    HistoryStats
    """
    if isinstance(history, HistoryStats):
        return history
    chains = _as_chains(history, currency)
    if not chains:
        raise ValueError("history_stats: empty history")
    underlying = str(chains[0].underlying)
    frames = []
    spots = []
    for ch in chains:
        q = ch.quotes
        cols = [c for c in QUOTE_COLUMNS if c not in ("as_of", "index_price")]
        if "exchange_volume" in q.columns:
            cols.append("exchange_volume")
        f = q[cols].copy()
        f["as_of"] = ch.as_of
        frames.append(f)
        spots.append((ch.as_of, float(np.nanmedian(q["index_price"].to_numpy(dtype=float)))))
    q = pd.concat(frames, ignore_index=True)
    return _stats(q, pd.DataFrame(spots, columns=["as_of", "spot"]), underlying)


QUOTE_COLUMNS: tuple[str, ...] = (
    "as_of",
    "expiry",
    "t",
    "k",
    "call",
    "iv_mark",
    "iv_bid",
    "iv_ask",
    "forward",
    "open_interest",
    "index_price",
)
"""Columns :func:`history_stats_from_quotes` needs (``exchange_volume`` optional)."""


def history_stats_from_quotes(quotes: pd.DataFrame, underlying: str) -> HistoryStats:
    """:func:`history_stats` of many snapshots' quotes in one long table.

    Parameters
    ----------
    quotes:
        Chain quote rows (``OptionChain.quotes`` columns, see :data:`QUOTE_COLUMNS`) of one
        underlying, with ``as_of`` (UTC) naming the snapshot of each row, e.g. the ``chains``
        table of the history store.
    underlying:
        Coin.

    Returns
    -------
    HistoryStats
    """
    missing = [c for c in QUOTE_COLUMNS if c not in quotes.columns]
    if missing:
        raise ValueError(f"history_stats_from_quotes: missing column(s) {missing}")
    if len(quotes) == 0:
        raise ValueError("history_stats_from_quotes: empty history")
    q = quotes.copy()
    q["as_of"] = pd.to_datetime(q["as_of"], utc=True).dt.as_unit("ns")
    q["expiry"] = pd.to_datetime(q["expiry"], utc=True).dt.as_unit("ns")
    spots = (
        q.groupby("as_of", sort=True)["index_price"]
        .median()
        .rename("spot")
        .reset_index()
        .astype({"spot": float})
    )
    return _stats(q, spots, underlying)


def _stats(q: pd.DataFrame, spots: pd.DataFrame, underlying: str) -> HistoryStats:
    nodes = _node_values(_expiry_fits(q))
    spread = _spread_stats(q)
    table = spots.merge(nodes, on="as_of", how="left").merge(spread, on="as_of", how="left")
    table = table.sort_values("as_of").reset_index(drop=True)
    return HistoryStats(table, underlying)
