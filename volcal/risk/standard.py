"""Deribit's standard (non-portfolio) margin per leg, for comparison.

In coin per contract of an inverse option, with ``OTM`` the out-of-the-money amount
(``max(K - F, 0)`` for calls, ``max(F - K, 0)`` for puts) and ``F`` the option's underlying
price (the chain's forward), ``mark`` the option's mark in coin:

* short call: initial ``max(0.15 - OTM/F, 0.10) + mark``, maintenance ``0.075 + mark``;
* short put: maintenance ``max(0.075, 0.075 mark) + mark``, initial
  ``max(max(0.15 - OTM/F, 0.10) + mark, maintenance)``;
* long options pay the premium only: initial = maintenance = ``mark``.

Futures: ``FUTURE_IM`` and ``FUTURE_MM`` of the coin notional (assumed base rates, without
Deribit's size-dependent increments). Legs are summed without offsets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from volcal.risk.positions import Positions

__all__ = ["FUTURE_IM", "FUTURE_MM", "standard_margin"]

FUTURE_IM = 0.02
"""Initial margin of futures, fraction of notional (assumed base rate)."""
FUTURE_MM = 0.01
"""Maintenance margin of futures, fraction of notional (assumed base rate)."""


def standard_margin(positions: Positions) -> pd.DataFrame:
    """Standard initial and maintenance margin per position, in coin.

    Returns
    -------
    DataFrame
        ``standard_im_coin`` and ``standard_mm_coin`` per position (index: symbol).
    """
    tab = positions.table
    qty = positions.quantity
    size = tab["contract_size"].to_numpy(dtype=float)
    k = tab["strike"].to_numpy(dtype=float)
    f = tab["chain_forward"].to_numpy(dtype=float)
    mark = np.nan_to_num(tab["mark_coin"].to_numpy(dtype=float))
    call = tab["call"].to_numpy(dtype=bool)
    with np.errstate(invalid="ignore"):
        otm = np.where(call, np.maximum(k - f, 0.0), np.maximum(f - k, 0.0)) / f
    base = np.maximum(0.15 - np.nan_to_num(otm), 0.10)
    mm_call = 0.075 + mark
    mm_put = np.maximum(0.075, 0.075 * mark) + mark
    im_call = base + mark
    im_put = np.maximum(base + mark, mm_put)
    short = qty < 0
    im = np.where(short, np.where(call, im_call, im_put), mark)
    mm = np.where(short, np.where(call, mm_call, mm_put), mark)
    n = np.abs(qty) * size
    im_c, mm_c = n * im, n * mm
    fut = ~positions.is_option
    if fut.any():
        fwd = np.where(np.isfinite(f), f, positions.spot)
        notional = np.where(positions.is_inverse, n / fwd, n)
        im_c = np.where(fut, FUTURE_IM * notional, im_c)
        mm_c = np.where(fut, FUTURE_MM * notional, mm_c)
    return pd.DataFrame(
        {"standard_im_coin": im_c, "standard_mm_coin": mm_c},
        index=pd.Index(tab["symbol"].astype(str), name="symbol"),
    )
