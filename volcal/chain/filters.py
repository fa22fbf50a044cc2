"""Quote filters: which quotes of a chain are fit to use, and why the others are not.

A filter never drops a quote. :func:`filter_quotes` returns a boolean mask (True = the quote
passes) and a reason per quote (``""`` when it passes); :class:`volcal.OptionChain` stores the
reason in its ``filter_reason`` column and :meth:`volcal.OptionChain.usable` selects the quotes
with an empty reason.

Each quote gets the *first* failing reason, in this order (so that ``value_counts()`` of the
reasons adds up to the number of rejected quotes):

=================  ====================================================================
reason             meaning
=================  ====================================================================
``expired``        ``t <= 0``: at or past expiry
``near_expiry``    less than ``min_minutes_to_expiry`` minutes to expiry
``no_bid``         no bid (NaN); only when ``require_bid``
``no_ask``         no ask (NaN); only when ``require_ask``
``zero_quote``     a bid or ask of zero (or below ``min_bid_usd`` for the bid)
``crossed``        ``ask <= bid`` (crossed or locked: impossible on one order book)
``wide_spread``    ``(ask - bid) / mid > max_rel_spread``
``iv_not_found``   no implied vol for the bid or the ask (e.g. bid below intrinsic), or
                   for the mark when there is one
``wide_iv_spread`` ``iv_ask - iv_bid > max_iv_spread`` (decimal vol), when set
=================  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["FILTER_REASONS", "QuoteFilters", "filter_quotes"]

FILTER_REASONS: tuple[str, ...] = (
    "expired",
    "near_expiry",
    "no_bid",
    "no_ask",
    "zero_quote",
    "crossed",
    "wide_spread",
    "iv_not_found",
    "wide_iv_spread",
)
"""Every reason :func:`filter_quotes` can give, in the order they are checked."""

_MINUTES_PER_YEAR = 365.0 * 24.0 * 60.0


@dataclass(frozen=True)
class QuoteFilters:
    """Settings of the quote filters (see :func:`filter_quotes`).

    Parameters
    ----------
    max_rel_spread:
        Largest relative spread ``(ask - bid) / mid`` accepted (dimensionless, > 0).
        Default 0.5: on Deribit the cheapest wing options are quoted one tick wide
        (0.0001 BTC bid, 0.0002 ask), a relative spread of 0.67, and carry little information.
    min_minutes_to_expiry:
        Quotes with less time than this to expiry (minutes, >= 0) are flagged
        ``near_expiry``; quotes at or past expiry are always flagged ``expired``.
    require_bid, require_ask:
        Flag quotes without a bid (``no_bid``) / without an ask (``no_ask``).
    require_iv:
        Flag quotes whose bid, ask or mark has no implied volatility (``iv_not_found``).
    min_bid_usd:
        Bids below this (USD, >= 0) count as ``zero_quote``. Default 0: only zero bids.
    max_iv_spread:
        Largest ``iv_ask - iv_bid`` accepted (decimal vol, e.g. 0.10 = 10 vol points), or
        None (default) for no limit.
    """

    max_rel_spread: float = 0.5
    min_minutes_to_expiry: float = 30.0
    require_bid: bool = True
    require_ask: bool = True
    require_iv: bool = True
    min_bid_usd: float = 0.0
    max_iv_spread: float | None = None

    def __post_init__(self) -> None:
        if not (self.max_rel_spread > 0):
            raise ValueError(f"max_rel_spread must be > 0, got {self.max_rel_spread!r}")
        if not (self.min_minutes_to_expiry >= 0):
            raise ValueError(
                f"min_minutes_to_expiry must be >= 0, got {self.min_minutes_to_expiry!r}"
            )
        if not (self.min_bid_usd >= 0):
            raise ValueError(f"min_bid_usd must be >= 0, got {self.min_bid_usd!r}")
        if self.max_iv_spread is not None and not (self.max_iv_spread > 0):
            raise ValueError(f"max_iv_spread must be > 0 or None, got {self.max_iv_spread!r}")

    def to_dict(self) -> dict[str, object]:
        """The settings as a plain dict (for reports and stored fits)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _col(quotes: pd.DataFrame, name: str) -> npt.NDArray[np.float64]:
    if name in quotes.columns:
        return quotes[name].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.full(len(quotes), np.nan)


def filter_quotes(
    quotes: pd.DataFrame, filters: QuoteFilters | None = None
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.object_]]:
    """Which quotes pass the filters, and the first reason for each that does not.

    Parameters
    ----------
    quotes:
        A chain table (``docs/conventions.md``); uses ``t`` (years), ``bid_usd``, ``ask_usd``,
        ``mark_usd`` (USD), ``iv_bid``, ``iv_ask``, ``iv_mark`` (decimal). Missing optional
        columns count as NaN.
    filters:
        The settings; None for the defaults of :class:`QuoteFilters`.

    Returns
    -------
    mask : ndarray of bool
        True where the quote passes every filter.
    reason : ndarray of str (object)
        ``""`` where the quote passes, otherwise the first failing reason of
        :data:`FILTER_REASONS`.
    """
    f = filters if filters is not None else QuoteFilters()
    n = len(quotes)
    t = _col(quotes, "t")
    bid, ask, mark = _col(quotes, "bid_usd"), _col(quotes, "ask_usd"), _col(quotes, "mark_usd")
    iv_bid, iv_ask = _col(quotes, "iv_bid"), _col(quotes, "iv_ask")
    iv_mark = _col(quotes, "iv_mark")
    has_bid, has_ask = ~np.isnan(bid), ~np.isnan(ask)
    both = has_bid & has_ask
    # NaN comparisons are False (no RuntimeWarning for <, >): absent quotes never trip these.
    mid = 0.5 * (bid + ask)
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN or zero mid: handled by ordering
        rel_spread = (ask - bid) / mid
    checks: list[tuple[str, npt.NDArray[np.bool_]]] = [
        ("expired", ~(t > 0)),
        ("near_expiry", t * _MINUTES_PER_YEAR < f.min_minutes_to_expiry),
        ("no_bid", ~has_bid if f.require_bid else np.zeros(n, dtype=bool)),
        ("no_ask", ~has_ask if f.require_ask else np.zeros(n, dtype=bool)),
        ("zero_quote", (bid <= f.min_bid_usd) | (bid <= 0) | (ask <= 0)),
        ("crossed", both & (ask <= bid)),
        ("wide_spread", both & (rel_spread > f.max_rel_spread)),
    ]
    if f.require_iv:
        no_iv = (has_bid & np.isnan(iv_bid)) | (has_ask & np.isnan(iv_ask))
        no_iv |= ~np.isnan(mark) & np.isnan(iv_mark)
        checks.append(("iv_not_found", no_iv))
    if f.max_iv_spread is not None:
        checks.append(("wide_iv_spread", iv_ask - iv_bid > f.max_iv_spread))
    reason = np.full(n, "", dtype=object)
    undecided = np.ones(n, dtype=bool)
    for name, failed in checks:
        hit = undecided & failed
        reason[hit] = name
        undecided &= ~hit
    return undecided, reason
