"""Private adapter: the shared Deribit parquet -> quotes tables of ``docs/conventions.md``.

Stands in for ``volcal.load_snapshot`` until it lands (then switch to it). Shared by the SVI
real-data tests and ``benchmarks/svi_realdata.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from volcal.conventions import year_fraction
from volcal.implied import implied_vol


def read_deribit(path: Path | str) -> pd.DataFrame:
    """The whole parquet (about 0.8 M rows)."""
    return pd.read_parquet(path)


def to_quotes(snap: pd.DataFrame) -> pd.DataFrame:
    """Quotes table of one snapshot and one currency (rows of the parquet)."""
    as_of = snap["timestamp"].iloc[0]
    # pandas >= 3 parses to microsecond resolution; year_fraction reads int64 nanoseconds
    expiry = pd.to_datetime(snap["expiry_datetime"], utc=True).astype("datetime64[ns, UTC]")
    t = np.asarray(year_fraction(as_of, expiry), dtype=float)
    fwd = snap["underlying"].to_numpy(dtype=float)
    strike = snap["strike"].to_numpy(dtype=float)
    call = (snap["option_type"] == "call").to_numpy()
    bid_c = snap["bid_price"].to_numpy(dtype=float)
    ask_c = snap["ask_price"].to_numpy(dtype=float)
    mark_c = snap["mark_price"].to_numpy(dtype=float)
    bid_c = np.where(bid_c > 0, bid_c, np.nan)
    ask_c = np.where(ask_c > 0, ask_c, np.nan)
    bid_usd, ask_usd, mark_usd = bid_c * fwd, ask_c * fwd, mark_c * fwd
    live = t > 0
    tt = np.where(live, t, np.nan)
    df = pd.DataFrame(
        {
            "symbol": snap["instrument_name"].to_numpy(),
            "expiry": expiry.to_numpy(),
            "t": t,
            "strike": strike,
            "call": call,
            "bid_coin": bid_c,
            "ask_coin": ask_c,
            "mark_coin": mark_c,
            "bid_usd": bid_usd,
            "ask_usd": ask_usd,
            "mark_usd": mark_usd,
            "usd_per_coin": fwd,
            "forward": fwd,
            "forward_source": "exchange",
            "discount": 1.0,
            "k": np.log(strike / fwd),
            "iv_bid": implied_vol(bid_usd, fwd, strike, tt, call),
            "iv_ask": implied_vol(ask_usd, fwd, strike, tt, call),
            "iv_mark": implied_vol(mark_usd, fwd, strike, tt, call),
            "open_interest": snap["open_interest"].to_numpy(dtype=float),
            "index_price": snap["index_price"].to_numpy(dtype=float),
            "exchange_iv_mark": snap["implied_volatility"].to_numpy(dtype=float),
            "filter_reason": np.where(live, "", "expired"),
        }
    )
    df["expiry"] = pd.to_datetime(df["expiry"], utc=True)
    return df.reset_index(drop=True)


def iter_chains(
    raw: pd.DataFrame, snapshots: list[str] | None = None
) -> Iterator[tuple[str, str, pd.Timestamp, pd.DataFrame]]:
    """Yield ``(snapshot_file, currency, as_of, quotes)`` for each snapshot and currency."""
    for (snap_id, ccy), grp in raw.groupby(["snapshot_file", "currency"], sort=True):
        if snapshots is not None and snap_id not in snapshots:
            continue
        yield str(snap_id), str(ccy), grp["timestamp"].iloc[0], to_quotes(grp)
