"""A small Deribit-like chain priced from a known ParametricSmile (for the margin tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from volcal import OptionChain, black_price
from volcal.risk import ParametricSmile

AS_OF = pd.Timestamp("2026-02-01 08:00", tz="UTC")
SMILE = ParametricSmile(spot=80_000.0, atm_vol=0.5, skew=-0.3, curvature=0.8, rate=0.02)
EXPIRIES = ("27FEB26", "27MAR26", "26JUN26")
STRIKES = (60_000, 70_000, 75_000, 80_000, 85_000, 90_000, 100_000)
MONTHS = {"FEB": 2, "MAR": 3, "JUN": 6}


def expiry_of(code: str) -> pd.Timestamp:
    return pd.Timestamp(
        year=2000 + int(code[-2:]), month=MONTHS[code[-5:-2]], day=int(code[:-5]), hour=8, tz="UTC"
    )


def synthetic_chain(smile: ParametricSmile = SMILE, half_spread_vol: float = 0.005) -> OptionChain:
    """Calls and puts at STRIKES for EXPIRIES; coin marks = Black(smile)/F; OI 100."""
    rows = []
    for code in EXPIRIES:
        expiry = expiry_of(code)
        t = (expiry - AS_OF) / pd.Timedelta(days=365)
        f = float(smile.forward(t))
        for k in STRIKES:
            v = float(smile.implied_vol(k, t))
            for call in (False, True):
                mark = float(black_price(f, k, t, v, call)) / f
                bid = float(black_price(f, k, t, v - half_spread_vol, call)) / f
                ask = float(black_price(f, k, t, v + half_spread_vol, call)) / f
                rows.append(
                    {
                        "symbol": f"BTC-{code}-{k}-{'C' if call else 'P'}",
                        "expiry": expiry,
                        "strike": float(k),
                        "call": call,
                        "bid_coin": bid,
                        "ask_coin": ask,
                        "mark_coin": mark,
                        "forward": f,
                        "open_interest": 100.0,
                        "index_price": smile.spot,
                        "exchange_volume": 7.0,
                    }
                )
    raw = pd.DataFrame(rows)
    return OptionChain.from_quotes(raw, as_of=AS_OF, exchange="deribit", underlying="BTC")


def t_of(code: str) -> float:
    return float((expiry_of(code) - AS_OF) / pd.Timedelta(days=365))


def forward_of(code: str, smile: ParametricSmile = SMILE) -> float:
    return float(np.asarray(smile.forward(t_of(code))))
