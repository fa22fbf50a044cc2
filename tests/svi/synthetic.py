"""Synthetic quotes tables (columns of docs/conventions.md) generated from known SVI smiles."""

from __future__ import annotations

import numpy as np
import pandas as pd

from volcal.black import black_price
from volcal.implied import implied_vol
from volcal.svi import SviRaw

AS_OF = pd.Timestamp("2026-01-05 08:00", tz="UTC")


def svi_quotes(
    smiles: list[tuple[float, SviRaw]],
    *,
    forward: float = 100_000.0,
    n: int = 25,
    half_spread: float = 0.002,
    k_width: float = 2.5,
    mid_exact: bool = False,
) -> pd.DataFrame:
    """Two-sided calls and puts at ``n`` strikes per expiry, vols = SVI +- ``half_spread``.

    With ``mid_exact`` the premiums are instead centred on the SVI price (``bid, ask = P(v) -+
    (P(v + h) - P(v - h))/2``), so that the implied vol of the mid premium is the SVI vol
    itself; ``iv_bid``/``iv_ask`` are then the implied vols of those premiums.
    """
    rows = []
    for t, p in smiles:
        sd = float(np.sqrt(p.total_variance(0.0)))
        k = np.linspace(-k_width * sd, k_width * sd, n)
        expiry = AS_OF + pd.Timedelta(seconds=round(t * 365 * 86400))
        vol = p.implied_vol(k, t)
        for call in (True, False):
            for kk, v in zip(k, vol, strict=True):
                strike = forward * np.exp(kk)
                bid = float(black_price(forward, strike, t, v - half_spread, call))
                ask = float(black_price(forward, strike, t, v + half_spread, call))
                iv_b, iv_a = v - half_spread, v + half_spread
                if mid_exact:
                    mid = float(black_price(forward, strike, t, v, call))
                    half = 0.5 * (ask - bid)
                    bid, ask = mid - half, mid + half
                    iv_b = float(implied_vol(bid, forward, strike, t, call))
                    iv_a = float(implied_vol(ask, forward, strike, t, call))
                rows.append(
                    {
                        "symbol": f"X-{t:.3f}-{strike:.0f}-{'C' if call else 'P'}",
                        "expiry": expiry,
                        "t": t,
                        "strike": strike,
                        "call": call,
                        "bid_usd": bid,
                        "ask_usd": ask,
                        "mark_usd": 0.5 * (bid + ask),
                        "forward": forward,
                        "discount": 1.0,
                        "k": kk,
                        "iv_bid": iv_b,
                        "iv_ask": iv_a,
                        "iv_mark": v,
                        "open_interest": 1.0,
                        "filter_reason": "",
                    }
                )
    df = pd.DataFrame(rows)
    df["expiry"] = pd.to_datetime(df["expiry"], utc=True)
    return df
