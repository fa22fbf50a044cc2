"""The one place where volcal's units are defined.

* Time ``t``: years, ACT/365F, from exact UTC timestamps: ``t = (expiry - as_of) / 365 days``
  to the nanosecond. Crypto trades 24/7, so there is no business-day calendar; Deribit (and
  OKX, Bybit, Binance) options expire at 08:00 UTC.
* Log-moneyness ``k = ln(K / F)`` with ``F`` the forward of the option's expiry.
* Total implied variance ``w = sigma**2 * t``; volatilities are decimals (0.55, not 55).
* Prices name their unit: ``*_coin`` (in the underlying coin, e.g. BTC) or ``*_usd``.
  A coin premium converts to USD at a stated reference price ``usd_per_coin``; for Deribit's
  inverse options that reference is the option's ``underlying_price`` (its forward), so
  ``price_usd = price_coin * forward``. Implied vols are Black-76 on that forward with no
  discounting (``discount = 1``).

See ``docs/conventions.md`` for the reasoning and the checks made on real data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "DAYS_PER_YEAR",
    "EXPIRY_HOUR_UTC",
    "SECONDS_PER_YEAR",
    "coin_to_usd",
    "log_moneyness",
    "to_utc",
    "total_variance",
    "usd_to_coin",
    "year_fraction",
]

DAYS_PER_YEAR = 365.0
"""ACT/365F: a year is 365 days of 86 400 s, leap years included."""
SECONDS_PER_YEAR = DAYS_PER_YEAR * 86_400.0
EXPIRY_HOUR_UTC = 8
"""Deribit, OKX, Bybit and Binance options expire at 08:00 UTC."""

_NS_PER_YEAR = SECONDS_PER_YEAR * 1e9

ArrayT = TypeVar("ArrayT", float, npt.NDArray[np.float64])


def to_utc(when: object) -> pd.Timestamp:
    """Return ``when`` as a timezone-aware UTC :class:`pandas.Timestamp`.

    Naive inputs are taken to be UTC already (exchanges publish UTC); aware inputs are
    converted. Accepts datetimes, ISO strings, pandas timestamps and epoch nanoseconds.
    """
    ts = pd.Timestamp(when)  # type: ignore[arg-type]
    if ts is pd.NaT:
        raise ValueError(f"not a timestamp: {when!r}")
    if ts.tzinfo is None:
        return ts.tz_localize(UTC)
    return ts.tz_convert(UTC)


def year_fraction(as_of: object, expiry: object) -> npt.NDArray[np.float64] | float:
    """Years from ``as_of`` to ``expiry``, ACT/365F on exact UTC timestamps.

    Parameters
    ----------
    as_of, expiry:
        Timestamps (scalars, or array-likes / Series of timestamps for ``expiry``).
        Naive timestamps are read as UTC.

    Returns
    -------
    float or ndarray
        ``(expiry - as_of)`` in nanoseconds divided by ``365 * 86400e9``; negative after
        expiry. A scalar when both inputs are scalars.
    """
    start = to_utc(as_of).as_unit("ns")  # pandas 3 may parse to us or s resolution
    if isinstance(expiry, (str, datetime, pd.Timestamp, np.datetime64)):
        return float((to_utc(expiry).as_unit("ns") - start).value) / _NS_PER_YEAR
    idx = pd.DatetimeIndex(pd.to_datetime(expiry, utc=True))  # type: ignore[call-overload]
    delta_ns = idx.as_unit("ns").asi8 - start.value
    return np.asarray(delta_ns, dtype=np.float64) / _NS_PER_YEAR


def log_moneyness(strike: ArrayT, forward: ArrayT) -> ArrayT:
    """Log-moneyness ``k = ln(K / F)`` (dimensionless)."""
    return np.log(np.asarray(strike, dtype=float) / np.asarray(forward, dtype=float))


def total_variance(vol: ArrayT, t: ArrayT) -> ArrayT:
    """Total implied variance ``w = sigma**2 * t`` (vol in decimals, t in years)."""
    v = np.asarray(vol, dtype=float)
    return v * v * np.asarray(t, dtype=float)


def coin_to_usd(price_coin: ArrayT, usd_per_coin: ArrayT) -> ArrayT:
    """Convert a coin-quoted premium to USD at the reference price ``usd_per_coin``.

    For Deribit inverse options the reference is the option's forward
    (``underlying_price``): ``price_usd = price_coin * F``.
    """
    return np.asarray(price_coin, dtype=float) * np.asarray(usd_per_coin, dtype=float)


def usd_to_coin(price_usd: ArrayT, usd_per_coin: ArrayT) -> ArrayT:
    """Convert a USD premium to coin at the reference price ``usd_per_coin``."""
    return np.asarray(price_usd, dtype=float) / np.asarray(usd_per_coin, dtype=float)
