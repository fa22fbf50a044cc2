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
    "QuoteSelection",
    "SliceQuotes",
    "quote_weights",
    "quotes_frame",
    "select_quotes",
    "selected_frame",
    "selection_arrays",
    "selection_columns",
    "slices_from_quotes",
    "slices_from_selection",
    "with_columns",
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


@dataclass(frozen=True)
class QuoteSelection:
    """The arrays behind :func:`select_quotes` (one entry per row of the quotes table).

    Internal fast path of the surface fits: the columns the fits need are read from the
    DataFrame once, and the per-expiry slices are cut from these arrays.

    Attributes
    ----------
    iv_mid, weight:
        Vol of the mid premium (decimal) and quote weight (NaN where not used).
    used:
        True for the quotes the surface is fitted to.
    reason:
        ``excluded_reason`` ("" when used), object array of str.
    t, k, forward, iv_bid, iv_ask:
        The chain's columns (years ACT/365F, ``ln(K/F)``, USD per coin, decimal vols).
    expiry_code:
        Index of each row's expiry in increasing expiry order (-1 when missing).
    expiry_first:
        Row position of the first quote of each expiry (``expiry_code`` order).
    """

    iv_mid: FloatArray
    weight: FloatArray
    used: npt.NDArray[np.bool_]
    reason: npt.NDArray[np.object_]
    t: FloatArray
    k: FloatArray
    forward: FloatArray
    iv_bid: FloatArray
    iv_ask: FloatArray
    expiry_code: npt.NDArray[np.int64]
    expiry_first: npt.NDArray[np.int64]


def expiry_i8(expiry: pd.Series) -> npt.NDArray[np.int64] | None:
    """Integer timestamps of a datetime ``expiry`` column (NaT as the int64 minimum), or None
    when the column is not datetime-like."""
    if not pd.api.types.is_datetime64_any_dtype(expiry.dtype):
        return None
    return np.asarray(pd.DatetimeIndex(expiry).asi8, dtype=np.int64)


def _expiry_codes(expiry: pd.Series) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(code of each row in increasing expiry order, -1 when missing; first row of each code)."""
    i8 = expiry_i8(expiry)
    if i8 is not None:
        ok = i8 != np.iinfo(np.int64).min  # NaT
        uniq, first, inv = np.unique(i8[ok], return_index=True, return_inverse=True)
        codes = np.full(i8.size, -1, dtype=np.int64)
        codes[ok] = inv
        rows = np.flatnonzero(ok)[first] if uniq.size else np.zeros(0, dtype=np.int64)
        return codes, rows.astype(np.int64)
    fc, _ = pd.factorize(expiry, sort=True)
    codes = np.asarray(fc, dtype=np.int64)
    valid = np.flatnonzero(codes >= 0)
    _, first = np.unique(codes[valid], return_index=True)
    return codes, valid[first].astype(np.int64)


def selection_arrays(
    quotes: pd.DataFrame,
    *,
    min_t: float = 2.0 / 365.0,
    min_quotes: int = 6,
    spread_floor: float = 0.005,
    weights: str = "vega_spread",
) -> QuoteSelection:
    """:func:`select_quotes` as arrays (:class:`QuoteSelection`); same rules and arguments.

    Raises
    ------
    ParameterError
        Unknown ``weights`` scheme or a non-positive ``spread_floor``.
    """
    if weights not in WEIGHT_SCHEMES:
        raise ParameterError(f"weights must be one of {', '.join(WEIGHT_SCHEMES)}, got {weights!r}")
    if not spread_floor > 0.0:
        raise ParameterError(f"spread_floor must be positive, got {spread_floor!r}")
    df = quotes
    n = len(df)
    cols = df.columns

    def col(name: str) -> FloatArray:
        return np.asarray(df[name].to_numpy(dtype=float), dtype=float)

    if "filter_reason" in cols:
        fr = df["filter_reason"].to_numpy(dtype=object, na_value="")
        has = fr != ""
        reason = np.full(n, "", dtype=object)
        if has.any():
            reason[has] = np.char.add("filter: ", fr[has].astype(str)).astype(object)
    else:
        reason = np.full(n, "", dtype=object)
    # rows not yet excluded: kept as a boolean mask alongside the reasons (cheaper than
    # comparing strings at every rule)
    free = reason == ""

    def mark(mask: npt.NDArray[np.bool_], text: str) -> None:
        hit = mask & free
        if hit.any():
            reason[hit] = text
            free[hit] = False

    t = col("t")
    k = col("k")
    call = np.asarray(df["call"].to_numpy(dtype=bool), dtype=bool)
    ivb = col("iv_bid")
    iva = col("iv_ask")
    mark(~np.isfinite(t) | (t <= min_t), f"t <= {min_t:.6g} years")
    mark(~np.isfinite(k), "no log-moneyness")
    mark(np.isfinite(k) & (call != (k >= 0.0)), "in the money (its out-of-the-money twin is used)")
    two_sided = "bid_usd" in cols and "ask_usd" in cols
    if two_sided:
        bid = col("bid_usd")
        ask = col("ask_usd")
        mark(~(bid > 0) | ~(ask > 0), "one-sided (no bid or no ask)")
    mark(~np.isfinite(ivb) | ~np.isfinite(iva), "no implied vol at bid or ask")
    mark(iva < ivb, "crossed (iv_ask < iv_bid)")

    forward = col("forward")
    if two_sided:
        mid = 0.5 * (bid + ask)
        ok = free.copy()
        iv_mid = np.full(n, np.nan)
        if ok.any():
            disc = col("discount")[ok] if "discount" in cols else 1.0
            iv_mid[ok] = implied_vol(mid[ok], forward[ok], col("strike")[ok], t[ok], call[ok], disc)
    else:
        iv_mid = 0.5 * (ivb + iva)
    mark(~np.isfinite(iv_mid), "no implied vol at mid")
    codes, first = _expiry_codes(df["expiry"])
    valid = codes >= 0
    n_expiries = max(first.size, 1)
    counts = np.bincount(codes[valid], weights=free[valid], minlength=n_expiries)
    counts = np.where(valid, counts[np.maximum(codes, 0)], np.inf)
    few = free & (counts < min_quotes)
    for c in np.unique(counts[few]):
        mark(few & (counts == c), f"expiry has {int(c)} < {min_quotes} two-sided OTM quotes")
    used = free
    if weights == "vega_spread":
        w_all = 1.0 / np.maximum(iva - ivb, spread_floor)
    elif weights == "uniform":
        w_all = np.full(n, 1.0 / spread_floor)
    else:
        w_all = _vega_weights(t, k, iv_mid, used, codes, spread_floor)
    weight = np.where(used, w_all, np.nan)
    return QuoteSelection(
        iv_mid=iv_mid,
        weight=weight,
        used=used,
        reason=reason,
        t=t,
        k=k,
        forward=forward,
        iv_bid=ivb,
        iv_ask=iva,
        expiry_code=codes,
        expiry_first=first,
    )


def with_columns(df: pd.DataFrame, columns: dict[str, Any]) -> pd.DataFrame:
    """A new DataFrame: ``df`` with ``columns`` (arrays of ``len(df)``) set, in one step.

    Columns already in ``df`` are replaced in place, new ones appended in the given order
    (what ``df.copy()`` followed by ``df[name] = array`` per column gives, built at once).
    """
    if df.index.is_unique and not any(c in df.columns for c in columns):
        extra = pd.DataFrame(columns, index=df.index)
        return pd.concat([df, extra], axis=1)
    out = df.copy()
    for name, values in columns.items():
        out[name] = values
    return out


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
    sel = selection_arrays(
        quotes, min_t=min_t, min_quotes=min_quotes, spread_floor=spread_floor, weights=weights
    )
    return selected_frame(quotes, sel)


def selection_columns(sel: QuoteSelection) -> dict[str, Any]:
    """The columns :func:`select_quotes` adds: ``iv_mid``, ``weight``, ``used``,
    ``excluded_reason``."""
    return {
        "iv_mid": sel.iv_mid,
        "weight": sel.weight,
        "used": sel.used,
        "excluded_reason": sel.reason.astype(str),
    }


def selected_frame(quotes: pd.DataFrame, sel: QuoteSelection) -> pd.DataFrame:
    """The DataFrame of :func:`select_quotes` from its :class:`QuoteSelection`."""
    return with_columns(quotes, selection_columns(sel))


def _vega_weights(
    t: FloatArray,
    k: FloatArray,
    sig: FloatArray,
    used: npt.NDArray[np.bool_],
    codes: npt.NDArray[np.int64],
    spread_floor: float,
) -> FloatArray:
    """``"vega"`` weights (see :func:`quote_weights`) on arrays; ``codes`` group the expiries."""
    n = t.size
    with np.errstate(all="ignore"):
        st = sig * np.sqrt(t)
        d1 = -k / st + 0.5 * st
        vega = np.sqrt(t) * np.exp(-0.5 * d1 * d1)  # sqrt(2 pi) vega / F
    vega = np.where(used & np.isfinite(vega), vega, 0.0)
    top = np.zeros(max(int(codes.max(initial=-1)) + 1, 0))
    np.maximum.at(top, codes[codes >= 0], vega[codes >= 0])
    top = np.where(codes >= 0, top[np.maximum(codes, 0)], 0.0)
    out = np.full(n, np.nan)
    np.divide(vega, top, out=out, where=used & (top > 0))
    return out / spread_floor


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
    return _vega_weights(
        df["t"].to_numpy(dtype=float),
        df["k"].to_numpy(dtype=float),
        df[vol_column].to_numpy(dtype=float),
        used,
        np.asarray(pd.factorize(df["expiry"])[0], dtype=np.int64),
        spread_floor,
    )


def slices_from_selection(quotes: pd.DataFrame, sel: QuoteSelection) -> list[SliceQuotes]:
    """Per-expiry arrays of the used quotes of a :class:`QuoteSelection` of ``quotes``, by
    increasing ``t`` (what :func:`slices_from_quotes` gives on :func:`select_quotes`)."""
    pos = np.flatnonzero(sel.used)
    if pos.size == 0:
        return []
    codes = sel.expiry_code[pos]
    k = sel.k[pos]
    order = np.lexsort((k, codes))  # by expiry, then k (stable, like sort_values("k"))
    rows_all = pos[order]
    cs = codes[order]
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    ends = np.r_[starts[1:], cs.size]
    expiry = quotes["expiry"].array
    index = quotes.index
    out: list[SliceQuotes] = []
    for a, b in zip(starts, ends, strict=True):
        rows = rows_all[a:b]
        r0 = int(rows[0])
        out.append(
            SliceQuotes(
                expiry=pd.Timestamp(expiry[r0]),
                t=float(sel.t[r0]),
                forward=float(sel.forward[r0]),
                k=sel.k[rows],
                iv_bid=sel.iv_bid[rows],
                iv_ask=sel.iv_ask[rows],
                iv_mid=sel.iv_mid[rows],
                weight=sel.weight[rows],
                index=index[rows],
            )
        )
    out.sort(key=lambda d: d.t)
    return out


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
