"""Load option-chain snapshots from files or DataFrames into :class:`volcal.OptionChain`.

:func:`load_snapshot` recognises the format from the columns:

1. **Deribit flat snapshots** (the format of ``shared/data/deribit/*.parquet``): one row per
   option per snapshot, with ``timestamp, instrument_name, currency, option_type, strike,
   expiry_datetime, underlying, bid_price, ask_price, mark_price, implied_volatility, ...``;
   premiums in coin, ``underlying`` = Deribit's ``underlying_price`` (the forward of the expiry),
   ``implied_volatility`` a decimal.
2. **Tardis.dev ``options_chain`` CSV** (possibly gzipped): ``exchange, symbol, timestamp,
   local_timestamp, type, strike_price, expiration, open_interest, last_price, bid_price,
   bid_amount, bid_iv, ask_price, ask_amount, ask_iv, mark_price, mark_iv, underlying_index,
   underlying_price, delta, gamma, vega, theta, rho``; timestamps in microseconds since the epoch,
   prices in coin and IVs in percent (Deribit).
3. **volcal's own chains** (:meth:`volcal.OptionChain.to_frame` / ``to_parquet``).

Mapping to the chain table (``docs/conventions.md``):

* Deribit flat: ``as_of = timestamp``; ``symbol = instrument_name``; ``*_coin`` from
  ``bid_price, ask_price, mark_price``; ``forward = usd_per_coin = underlying`` (per
  instrument, as Deribit reports it); ``exchange_iv_mark = implied_volatility``;
  ``exchange_delta``, ``exchange_vega``, ``exchange_volume``, ``exchange_volume_usd``;
  ``index_price``, ``open_interest``. The collector's ``time_to_maturity`` (ACT/365.25) is
  ignored: ``t`` is recomputed.
* Tardis (Deribit only): ``as_of`` as below; ``forward = usd_per_coin = underlying_price``;
  ``bid_size, ask_size = bid_amount, ask_amount``; ``exchange_iv_{bid,ask,mark} = *_iv / 100``;
  ``exchange_{delta,gamma,vega,theta,rho}``; ``exchange_last_price_coin = last_price``. A side
  with price 0 and amount 0 (Deribit's "empty book side") is read as no quote (NaN).

**Tardis snapshot rule.** Tardis rows are per-instrument updates, not aligned snapshots. The
chain at an instant ``T`` holds, for every symbol of the currency, its latest row with
``timestamp <= T`` (exchange timestamp, not ``local_timestamp``), excluding options that have
expired by ``T``; its ``as_of`` is the latest such row's timestamp. Without ``at``, there is one
chain per distinct ``timestamp`` in the file (fine for snapshot-like extracts; for tick-level
days pass ``at``, possibly a list of instants).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from volcal.chain.core import FRAME_COLUMNS, QUOTE_COLUMNS, OptionChain, chains_from_quotes
from volcal.chain.filters import QuoteFilters
from volcal.conventions import to_utc
from volcal.errors import ChainValidationError

__all__ = ["detect_format", "load_snapshot"]

SnapshotFormat = Literal["deribit", "tardis", "volcal"]

DERIBIT_COLUMNS = frozenset(
    {
        "timestamp",
        "instrument_name",
        "currency",
        "option_type",
        "strike",
        "expiry_datetime",
        "underlying",
        "bid_price",
        "ask_price",
        "mark_price",
    }
)
TARDIS_COLUMNS = frozenset(
    {
        "exchange",
        "symbol",
        "timestamp",
        "local_timestamp",
        "type",
        "strike_price",
        "expiration",
        "open_interest",
        "last_price",
        "bid_price",
        "bid_amount",
        "bid_iv",
        "ask_price",
        "ask_amount",
        "ask_iv",
        "mark_price",
        "mark_iv",
        "underlying_index",
        "underlying_price",
        "delta",
        "gamma",
        "vega",
        "theta",
        "rho",
    }
)
VOLCAL_COLUMNS = frozenset({*FRAME_COLUMNS, *QUOTE_COLUMNS})
_FORMATS: dict[SnapshotFormat, frozenset[str]] = {
    "volcal": VOLCAL_COLUMNS,
    "tardis": TARDIS_COLUMNS,
    "deribit": DERIBIT_COLUMNS,
}

Source = str | os.PathLike[str] | pd.DataFrame


def detect_format(frame: pd.DataFrame) -> SnapshotFormat:
    """The snapshot format of a table, from its columns.

    Raises
    ------
    ChainValidationError
        No known format matches; the message lists what each format lacks.
    """
    cols = set(frame.columns)
    for name, needed in _FORMATS.items():
        if needed <= cols:
            return name
    lacks = "; ".join(f"{name} lacks {sorted(needed - cols)}" for name, needed in _FORMATS.items())
    raise ChainValidationError(
        f"unknown snapshot format (columns {sorted(cols)[:30]}): {lacks}", field="columns"
    )


def _read(source: Source) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz", ".gz", ".csv.zst", ".csv.bz2")):
        return pd.read_csv(path)
    raise ChainValidationError(
        f"unknown file type {path.name!r}: expected .parquet or .csv (optionally .gz)",
        field="source",
    )


def _is_sequence(at: object) -> bool:
    return isinstance(at, Iterable) and not isinstance(at, (str, bytes, pd.Timestamp))


def _instants(at: object) -> list[pd.Timestamp] | None:
    if at is None:
        return None
    if _is_sequence(at):
        assert isinstance(at, Iterable)
        wanted = [to_utc(a) for a in at]
        if not wanted:
            raise ChainValidationError("at: an empty list of instants", field="at")
        return wanted
    return [to_utc(at)]


def _pick(available: pd.DatetimeIndex, wanted: list[pd.Timestamp], what: str) -> np.ndarray:
    """For each wanted instant, the latest available one at or before it."""
    available = available.sort_values()
    pos = available.searchsorted(pd.DatetimeIndex(wanted), side="right") - 1
    if (pos < 0).any():
        first = wanted[int(np.flatnonzero(pos < 0)[0])]
        raise ChainValidationError(
            f"no {what} snapshot at or before {first} (earliest: {available[0]})", field="at"
        )
    return np.asarray(available[pos])


def _currency_rows(frame: pd.DataFrame, codes: pd.Series, currency: str, fmt: str) -> pd.DataFrame:
    mask = (codes == currency).to_numpy()
    if not mask.any():
        have = sorted(str(c) for c in pd.unique(codes))[:20]
        raise ChainValidationError(
            f"no {currency} options in this {fmt} source (it has: {have})", field="currency"
        )
    return frame[mask]


def _finish(chains: list[OptionChain], single: bool) -> OptionChain | list[OptionChain]:
    if single:
        return chains[0]
    return chains


def load_snapshot(
    source: Source,
    currency: str,
    at: object = None,
    *,
    filters: QuoteFilters | None = None,
) -> OptionChain | list[OptionChain]:
    """Load option chains of one currency from a snapshot file or DataFrame.

    Parameters
    ----------
    source:
        A path (``.parquet``, ``.csv``, ``.csv.gz``) or a DataFrame, in one of the formats of
        this module (recognised from the columns, :func:`detect_format`).
    currency:
        Underlying coin, e.g. ``"BTC"``, case-insensitive (Deribit ``currency``, the symbol
        prefix for Tardis, ``underlying`` for volcal files).
    at:
        None: every instant of the source. A timestamp (naive = UTC): the snapshot at or just
        before it. A list of timestamps: one chain per entry (each the snapshot at or before).
    filters:
        Quote filter settings for the chains built from exchange data (default
        :class:`volcal.QuoteFilters`); volcal files keep their stored ``filter_reason``.

    Returns
    -------
    OptionChain or list of OptionChain
        One chain when ``at`` is a single timestamp or the source holds one instant; otherwise a
        list, oldest first (in the order of ``at`` when a list is given).

    Raises
    ------
    ChainValidationError
        Unknown format or file type, no rows for ``currency``, no snapshot at or before ``at``,
        or invalid quotes (see :meth:`volcal.OptionChain.from_quotes`).
    """
    currency = currency.strip().upper()
    frame = _read(source)
    fmt = detect_format(frame)
    wanted = _instants(at)
    single_at = at is not None and not _is_sequence(at)
    if fmt == "volcal":
        chains = _load_volcal(frame, currency, wanted)
    elif fmt == "deribit":
        chains = _load_deribit(frame, currency, wanted, filters)
    else:
        chains = _load_tardis(frame, currency, wanted, filters)
    return _finish(chains, single_at or (at is None and len(chains) == 1))


def _load_volcal(
    frame: pd.DataFrame, currency: str, wanted: list[pd.Timestamp] | None
) -> list[OptionChain]:
    sub = _currency_rows(frame, frame["underlying"].astype(str), currency, "volcal")
    as_of = pd.DatetimeIndex(pd.to_datetime(sub["as_of"], utc=True)).as_unit("ns")
    available = pd.DatetimeIndex(pd.unique(as_of))
    chosen = available.sort_values() if wanted is None else _pick(available, wanted, "volcal")
    groups: dict[Any, pd.DataFrame] = dict(iter(sub.groupby(as_of.asi8)))
    return [OptionChain.from_frame(groups[pd.Timestamp(a).as_unit("ns").value]) for a in chosen]


def _load_deribit(
    frame: pd.DataFrame,
    currency: str,
    wanted: list[pd.Timestamp] | None,
    filters: QuoteFilters | None,
) -> list[OptionChain]:
    sub = _currency_rows(frame, frame["currency"].astype(str), currency, "Deribit snapshot")
    as_of = pd.DatetimeIndex(pd.to_datetime(sub["timestamp"], utc=True)).as_unit("ns")
    if wanted is not None:
        chosen = _pick(pd.DatetimeIndex(pd.unique(as_of)), wanted, "Deribit")
        keep = np.isin(as_of.asi8, pd.DatetimeIndex(chosen).as_unit("ns").asi8)
        sub, as_of = sub[keep], as_of[keep]
    # Parse each distinct expiry string once (there are a few dozen for ~10^5 rows).
    exp_codes, exp_uniques = pd.factorize(sub["expiry_datetime"])
    expiry = pd.DatetimeIndex(pd.to_datetime(exp_uniques, utc=True))[exp_codes]

    def col(name: str) -> np.ndarray:
        if name in sub.columns:
            return sub[name].to_numpy(dtype=np.float64, na_value=np.nan)
        return np.full(len(sub), np.nan)

    raw = pd.DataFrame(
        {
            "as_of": as_of,
            "symbol": sub["instrument_name"].to_numpy(),
            "expiry": expiry,
            "strike": col("strike"),
            "call": sub["option_type"].to_numpy(),
            "bid_coin": col("bid_price"),
            "ask_coin": col("ask_price"),
            "mark_coin": col("mark_price"),
            "forward": col("underlying"),
            "usd_per_coin": col("underlying"),
            "open_interest": col("open_interest"),
            "index_price": col("index_price"),
            "exchange_iv_mark": col("implied_volatility"),
            "exchange_delta": col("delta"),
            "exchange_vega": col("vega"),
            "exchange_volume": col("volume"),
            "exchange_volume_usd": col("volume_usd"),
        }
    )
    chains = chains_from_quotes(raw, exchange="deribit", underlying=currency, filters=filters)
    return _reorder(chains, wanted)


def _reorder(chains: list[OptionChain], wanted: list[pd.Timestamp] | None) -> list[OptionChain]:
    """Chains in the order of ``wanted`` (each: the latest at or before), or as they are."""
    if wanted is None:
        return chains
    index = pd.DatetimeIndex([c.as_of for c in chains])
    pos = index.searchsorted(pd.DatetimeIndex(wanted), side="right") - 1
    return [chains[int(p)] for p in pos]


def _load_tardis(
    frame: pd.DataFrame,
    currency: str,
    wanted: list[pd.Timestamp] | None,
    filters: QuoteFilters | None,
) -> list[OptionChain]:
    exchanges = sorted(str(e) for e in pd.unique(frame["exchange"]))
    if exchanges != ["deribit"]:
        raise ChainValidationError(
            f"Tardis options_chain from {exchanges} is not supported (only 'deribit', whose "
            "prices are in coin and IVs in percent)",
            field="exchange",
        )
    prefix = frame["symbol"].astype(str).str.split("-", n=1).str[0]
    sub = _currency_rows(frame, prefix, currency, "Tardis")
    ts = _tardis_time(sub["timestamp"])
    order = np.argsort(ts.asi8, kind="stable")
    sub = sub.iloc[order].reset_index(drop=True)
    ts_ns = ts.asi8[order]
    exp_ns = _tardis_time(sub["expiration"]).asi8
    sym_codes = pd.factorize(sub["symbol"])[0]
    available = pd.DatetimeIndex(pd.unique(ts_ns)).tz_localize("UTC")
    if wanted is not None:
        available = pd.DatetimeIndex(_pick(available, wanted, "Tardis"))
    pieces = []
    for instant in pd.unique(available.as_unit("ns").asi8).tolist():
        n = int(np.searchsorted(ts_ns, instant, side="right"))
        # The latest row per symbol among the first n (rows are in time order).
        rev = sym_codes[:n][::-1]
        _, first_in_rev = np.unique(rev, return_index=True)
        rows = np.sort(n - 1 - first_in_rev)
        rows = rows[exp_ns[rows] > instant]
        pieces.append((int(instant), rows))
    blocks = []
    for instant, rows in pieces:
        block = sub.iloc[rows]
        blocks.append(_tardis_raw(block, np.full(len(rows), instant, dtype=np.int64)))
    raw = pd.concat(blocks, ignore_index=True)
    chains = chains_from_quotes(raw, exchange="deribit", underlying=currency, filters=filters)
    return _reorder(chains, wanted)


def _tardis_time(column: pd.Series) -> pd.DatetimeIndex:
    """Tardis timestamps: microseconds since the epoch (or already parsed datetimes)."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return pd.DatetimeIndex(pd.to_datetime(column, utc=True)).as_unit("ns")
    try:
        micros = column.to_numpy(dtype=np.int64)
    except (ValueError, TypeError):
        raise ChainValidationError(
            f"Tardis {column.name}: expected microseconds since the epoch",
            field=str(column.name),
        ) from None
    return pd.DatetimeIndex(pd.to_datetime(micros, unit="us", utc=True)).as_unit("ns")


def _tardis_raw(block: pd.DataFrame, as_of_ns: np.ndarray) -> pd.DataFrame:
    def col(name: str) -> np.ndarray:
        return np.asarray(pd.to_numeric(block[name], errors="coerce"), dtype=np.float64)

    bid, ask = col("bid_price"), col("ask_price")
    # Deribit reports an empty book side as price 0, amount 0: no quote.
    bid = np.where((bid == 0) & (col("bid_amount") == 0), np.nan, bid)
    ask = np.where((ask == 0) & (col("ask_amount") == 0), np.nan, ask)
    return pd.DataFrame(
        {
            "as_of": pd.DatetimeIndex(as_of_ns.astype("datetime64[ns]"), tz="UTC"),
            "symbol": block["symbol"].astype(str).to_numpy(),
            "expiry": _tardis_time(block["expiration"]),
            "strike": col("strike_price"),
            "call": block["type"].to_numpy(),
            "bid_coin": bid,
            "ask_coin": ask,
            "mark_coin": col("mark_price"),
            "forward": col("underlying_price"),
            "usd_per_coin": col("underlying_price"),
            "bid_size": col("bid_amount"),
            "ask_size": col("ask_amount"),
            "open_interest": col("open_interest"),
            "exchange_iv_bid": col("bid_iv") / 100.0,
            "exchange_iv_ask": col("ask_iv") / 100.0,
            "exchange_iv_mark": col("mark_iv") / 100.0,
            "exchange_delta": col("delta"),
            "exchange_gamma": col("gamma"),
            "exchange_vega": col("vega"),
            "exchange_theta": col("theta"),
            "exchange_rho": col("rho"),
            "exchange_last_price_coin": col("last_price"),
        }
    )
