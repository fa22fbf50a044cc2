"""Selecting and weighting the quotes a smile is fitted to.

The surface calibrators fit **two-sided out-of-the-money** quotes: calls with ``k >= 0`` and
puts with ``k < 0`` (``k = ln(K/F)``), with a bid and an ask, both with an implied vol, that
passed the chain's filters (``filter_reason == ""``). Every other quote is kept, with the reason
it was left out in the column ``excluded_reason``.

Weights (quote quality), per unit of implied vol, chosen by ``weights=``:

* ``"vega_spread"`` (default). A quote's implied-vol band ``[iv_bid, iv_ask]`` has width
  ``Δσ ≈ (ask - bid) / vega``, so ``1/Δσ = vega / (ask - bid)``: the weight

      W_i = 1 / max(iv_ask_i - iv_bid_i, spread_floor)

  is large for liquid, high-vega quotes and small for wide or low-vega wing quotes; residuals
  are measured in units of the quote's own spread, ``W_i dist(σ_i, [iv_bid_i, iv_ask_i])``.
* ``"vega"``: ``W_i = (vega_i / max_j vega_j) / spread_floor`` over the quotes of the same
  expiry (Black vega at the mid vol): vol errors scaled to price errors, spreads ignored.
* ``"uniform"``: ``W_i = 1 / spread_floor``: every quote's vol error counts the same.

The scale ``1/spread_floor`` makes the three comparable (a quote at the floor spread has the
same weight under all of them); the fits are invariant to a common factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.errors import ChainValidationError, ParameterError
from volcal.implied import implied_vol

__all__ = [
    "WEIGHT_SCHEMES",
    "SliceQuotes",
    "quote_weights",
    "quotes_frame",
    "select_quotes",
    "slices_from_quotes",
]

FloatArray = npt.NDArray[np.float64]

REQUIRED_COLUMNS = ("expiry", "t", "strike", "call", "forward", "k", "iv_bid", "iv_ask")

WEIGHT_SCHEMES: tuple[str, ...] = ("vega_spread", "vega", "uniform")
"""Quote weighting schemes of :func:`select_quotes` (see the module docstring)."""


def quotes_frame(chain: Any) -> pd.DataFrame:
    """The quotes table of ``chain``: an object with a ``.quotes`` DataFrame, or a DataFrame.

    Raises
    ------
    ChainValidationError
        When a column of ``docs/conventions.md`` needed by the fit is missing.
    """
    df = chain.quotes if hasattr(chain, "quotes") else chain
    if not isinstance(df, pd.DataFrame):
        raise ChainValidationError(
            f"expected an OptionChain or a quotes DataFrame, got {type(chain).__name__}"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ChainValidationError(f"quotes lack columns {missing}", field=missing[0])
    return df


@dataclass(frozen=True)
class SliceQuotes:
    """The fitted quotes of one expiry, as arrays (rows of the quotes table in ``index``).

    Attributes
    ----------
    expiry:
        Expiry instant (UTC).
    t:
        Years to expiry (ACT/365F).
    forward:
        Forward of the expiry (USD per coin).
    k:
        Log-moneyness ``ln(K/F)`` of each quote, increasing.
    iv_bid, iv_ask, iv_mid:
        Black-76 implied vols (decimal) of bid, ask and mid premiums.
    weight:
        Quote-quality weights ``W_i`` (per unit of vol); see the module docstring.
    index:
        Row labels of these quotes in the quotes table.
    """

    expiry: pd.Timestamp
    t: float
    forward: float
    k: FloatArray
    iv_bid: FloatArray
    iv_ask: FloatArray
    iv_mid: FloatArray
    weight: FloatArray
    index: pd.Index

    @property
    def atm_variance(self) -> float:
        """Market ATM total variance: mid total variance interpolated linearly at ``k = 0``."""
        w = self.iv_mid**2 * self.t
        return float(np.interp(0.0, self.k, w))


def select_quotes(
    quotes: pd.DataFrame,
    *,
    min_t: float = 2.0 / 365.0,
    min_quotes: int = 6,
    spread_floor: float = 0.005,
    weights: str = "vega_spread",
) -> pd.DataFrame:
    """Mark which quotes the surface is fitted to, and why the others are not.

    Parameters
    ----------
    quotes:
        Chain quotes table (columns of ``docs/conventions.md``).
    min_t:
        Expiries with ``t <= min_t`` years are left out (default 2 days).
    min_quotes:
        Expiries with fewer usable quotes are left out.
    spread_floor:
        Floor on the implied-vol spread in the weights (decimal vol).
    weights:
        Weighting scheme, one of :data:`WEIGHT_SCHEMES` (module docstring).

    Returns
    -------
    DataFrame
        A copy of ``quotes`` with columns ``iv_mid`` (vol of the mid premium), ``weight``,
        ``used`` (bool) and ``excluded_reason`` ("" when used).

    Raises
    ------
    ParameterError
        Unknown ``weights`` scheme or a non-positive ``spread_floor``.
    """
    if weights not in WEIGHT_SCHEMES:
        raise ParameterError(f"weights must be one of {', '.join(WEIGHT_SCHEMES)}, got {weights!r}")
    if not spread_floor > 0.0:
        raise ParameterError(f"spread_floor must be positive, got {spread_floor!r}")
    df = quotes.copy()
    n = len(df)
    reason = np.full(n, "", dtype=object)

    def mark(mask: npt.NDArray[np.bool_], text: str) -> None:
        reason[mask & (reason == "")] = text

    if "filter_reason" in df.columns:
        fr = df["filter_reason"].fillna("").astype(str).to_numpy()
        has = fr != ""
        reason[has] = np.char.add("filter: ", fr[has].astype(str)).astype(object)
    t = df["t"].to_numpy(dtype=float)
    k = df["k"].to_numpy(dtype=float)
    call = df["call"].to_numpy(dtype=bool)
    ivb = df["iv_bid"].to_numpy(dtype=float)
    iva = df["iv_ask"].to_numpy(dtype=float)
    mark(~np.isfinite(t) | (t <= min_t), f"t <= {min_t:.6g} years")
    mark(~np.isfinite(k), "no log-moneyness")
    mark(np.isfinite(k) & (call != (k >= 0.0)), "in the money (its out-of-the-money twin is used)")
    if "bid_usd" in df.columns and "ask_usd" in df.columns:
        bid = df["bid_usd"].to_numpy(dtype=float)
        ask = df["ask_usd"].to_numpy(dtype=float)
        mark(~(bid > 0) | ~(ask > 0), "one-sided (no bid or no ask)")
    mark(~np.isfinite(ivb) | ~np.isfinite(iva), "no implied vol at bid or ask")
    mark(iva < ivb, "crossed (iv_ask < iv_bid)")

    if "bid_usd" in df.columns and "ask_usd" in df.columns:
        mid = 0.5 * (df["bid_usd"].to_numpy(dtype=float) + df["ask_usd"].to_numpy(dtype=float))
        disc = df["discount"].to_numpy(dtype=float) if "discount" in df.columns else 1.0
        ok = reason == ""
        iv_mid = np.full(n, np.nan)
        if ok.any():
            iv_mid[ok] = implied_vol(
                mid[ok],
                df["forward"].to_numpy(dtype=float)[ok],
                df["strike"].to_numpy(dtype=float)[ok],
                t[ok],
                call[ok],
                disc if np.isscalar(disc) else np.asarray(disc)[ok],
            )
    else:
        iv_mid = 0.5 * (ivb + iva)
    mark(~np.isfinite(iv_mid), "no implied vol at mid")
    used = reason == ""
    codes = pd.factorize(df["expiry"])[0]
    valid = codes >= 0
    n_expiries = max(int(codes.max(initial=-1)) + 1, 1)
    counts = np.bincount(codes[valid], weights=used[valid], minlength=n_expiries)
    counts = np.where(valid, counts[np.maximum(codes, 0)], np.inf)
    few = used & (counts < min_quotes)
    for c in np.unique(counts[few]):
        mark(few & (counts == c), f"expiry has {int(c)} < {min_quotes} two-sided OTM quotes")
    used = reason == ""
    df["iv_mid"] = iv_mid
    df["weight"] = np.where(used, quote_weights(df, used, weights, spread_floor), np.nan)
    df["used"] = used
    df["excluded_reason"] = reason.astype(str)
    return df


def quote_weights(
    df: pd.DataFrame,
    used: npt.NDArray[np.bool_],
    scheme: str,
    spread_floor: float = 0.005,
    vol_column: str = "iv_mid",
) -> FloatArray:
    """Quote weights ``W_i`` (per unit of vol) of ``scheme`` (module docstring).

    ``df`` needs ``iv_bid``, ``iv_ask`` (``"vega_spread"``) or ``t``, ``k``, ``expiry`` and
    ``vol_column`` (``"vega"``); the ``"vega"`` scaling runs over the ``used`` rows of each
    expiry. Rows without the needed inputs get NaN.
    """
    n = len(df)
    if scheme == "uniform":
        return np.full(n, 1.0 / spread_floor)
    if scheme == "vega_spread":
        spread = df["iv_ask"].to_numpy(dtype=float) - df["iv_bid"].to_numpy(dtype=float)
        return 1.0 / np.maximum(spread, spread_floor)
    # "vega": Black vega per unit forward, sqrt(t) phi(d1), at the mid vol, scaled per expiry.
    t = df["t"].to_numpy(dtype=float)
    k = df["k"].to_numpy(dtype=float)
    sig = df[vol_column].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        st = sig * np.sqrt(t)
        d1 = -k / st + 0.5 * st
        vega = np.sqrt(t) * np.exp(-0.5 * d1 * d1)  # sqrt(2 pi) vega / F
    vega = np.where(used & np.isfinite(vega), vega, 0.0)
    codes = pd.factorize(df["expiry"])[0]
    top = np.zeros(max(int(codes.max(initial=-1)) + 1, 0))
    np.maximum.at(top, codes[codes >= 0], vega[codes >= 0])
    top = np.where(codes >= 0, top[np.maximum(codes, 0)], 0.0)
    out = np.full(n, np.nan)
    np.divide(vega, top, out=out, where=used & (top > 0))
    return out / spread_floor


def slices_from_quotes(selected: pd.DataFrame) -> list[SliceQuotes]:
    """Per-expiry arrays of the used quotes of :func:`select_quotes`, by increasing ``t``."""
    used = selected[selected["used"]]
    out: list[SliceQuotes] = []
    for expiry, grp in used.groupby("expiry", sort=True):
        grp = grp.sort_values("k")
        out.append(
            SliceQuotes(
                expiry=pd.Timestamp(expiry),  # type: ignore[arg-type]
                t=float(grp["t"].iloc[0]),
                forward=float(grp["forward"].iloc[0]),
                k=grp["k"].to_numpy(dtype=float),
                iv_bid=grp["iv_bid"].to_numpy(dtype=float),
                iv_ask=grp["iv_ask"].to_numpy(dtype=float),
                iv_mid=grp["iv_mid"].to_numpy(dtype=float),
                weight=grp["weight"].to_numpy(dtype=float),
                index=grp.index,
            )
        )
    out.sort(key=lambda s: s.t)
    return out
