"""Portfolios: signed positions in options and futures, resolved against a chain.

A portfolio is a DataFrame with at least ``symbol`` and ``quantity`` (contracts, negative =
short). Symbols are the exchange's names (Deribit: ``BTC-26JUN26-80000-C``, ``BTC-26JUN26``,
``BTC-PERPETUAL``, linear ``BTC_USDC-PERPETUAL``) or ccxt's unified symbols
(``BTC/USD:BTC-260626-80000-C``, ``BTC/USD:BTC-260626``, ``BTC/USD:BTC``). Options must be in
the chain; futures are recognised from their name (the chain holds options only) and priced at
the forward of their expiry.

**Contract size and settlement** (Deribit's BTC/ETH products):

* Options: ``contract_size`` coin per contract from the chain (1 for Deribit BTC/ETH),
  **coin-settled inverse**: the value in coin is ``value_usd / F`` with ``F`` the option's
  forward (the chain's ``usd_per_coin``), and at expiry the coin payoff is the USD payoff
  divided by the settlement price.
* Inverse futures and perpetuals: ``contract_size`` is the USD face of one contract
  (``INVERSE_FUTURE_FACE_USD``: 10 USD for BTC, 1 USD for ETH); a position of ``q`` contracts
  gains ``q * face * (1/F0 - 1/F1)`` coin when the price goes from ``F0`` to ``F1``.
* Linear (``_USDC``) futures: ``contract_size`` coin per contract (default 1; give a
  ``contract_size`` column to override), P&L ``q * size * (F1 - F0)`` USD.

Optional portfolio columns ``contract_size`` and ``settlement`` (``"inverse"``/``"linear"``)
override the defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.conventions import year_fraction
from volcal.errors import UnknownInstrumentError

__all__ = ["INVERSE_FUTURE_FACE_USD", "POSITION_COLUMNS", "Positions", "resolve_positions"]

FloatArray = npt.NDArray[np.float64]

INVERSE_FUTURE_FACE_USD: dict[str, float] = {"BTC": 10.0, "ETH": 1.0}
"""USD face value of one Deribit inverse future or perpetual contract."""

POSITION_COLUMNS: tuple[str, ...] = (
    "symbol",
    "quantity",
    "kind",
    "settlement",
    "expiry",
    "t",
    "strike",
    "call",
    "contract_size",
    "chain_forward",
    "mark_coin",
    "mark_usd",
    "bid_usd",
    "ask_usd",
    "iv_mark",
    "open_interest",
    "volume",
)
"""Columns of :attr:`Positions.table`: ``kind`` is ``"option"`` or ``"future"``;
``settlement`` ``"inverse"`` or ``"linear"``; ``t`` years to expiry (0 for perpetuals);
``strike`` USD (NaN for futures); ``contract_size`` coin per contract (options, linear
futures) or USD face (inverse futures); ``chain_forward`` the chain's forward of the expiry
(NaN when the chain has no option of that expiry); marks and quotes from the chain (NaN for
futures); ``open_interest`` and ``volume`` (24 h) in contracts."""

_MONTH_LIST = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_LIST)}
_MONTH_NAMES = {v: k for k, v in _MONTHS.items()}
_DERIBIT_DATE = re.compile(r"^(\d{1,2})([A-Z]{3})(\d{2})$")
_CCXT = re.compile(r"^([A-Z0-9]+)/([A-Z0-9]+):([A-Z0-9]+)(?:-(\d{6}))?(?:-([\d.]+)-([CP]))?$")


def _ccxt_to_deribit(symbol: str) -> str:
    """``BTC/USD:BTC-260626-80000-C`` -> ``BTC-26JUN26-80000-C`` (unchanged if not ccxt)."""
    m = _CCXT.match(symbol)
    if m is None:
        return symbol
    base, _quote, settle, date, strike, cp = m.groups()
    prefix = base if settle == base else f"{base}_{settle}"
    if date is None:
        return f"{prefix}-PERPETUAL"
    yy, mm, dd = int(date[:2]), int(date[2:4]), int(date[4:])
    if mm not in _MONTH_NAMES:
        return symbol
    name = f"{prefix}-{dd}{_MONTH_NAMES[mm]}{yy:02d}"
    if strike is not None:
        strike_text = strike[:-2] if strike.endswith(".0") else strike
        name += f"-{strike_text}-{cp}"
    return name


def _future_expiry(code: str) -> pd.Timestamp | None:
    m = _DERIBIT_DATE.match(code)
    if m is None or m.group(2) not in _MONTHS:
        return None
    day, month, year = int(m.group(1)), _MONTHS[m.group(2)], 2000 + int(m.group(3))
    try:
        return pd.Timestamp(year=year, month=month, day=day, hour=8, tz="UTC")
    except ValueError:
        return None


@dataclass(frozen=True, eq=False)
class Positions:
    """A portfolio resolved against one chain: everything repricing needs, per position.

    Attributes
    ----------
    table:
        One row per position, columns :data:`POSITION_COLUMNS`, in the portfolio's order.
    as_of:
        The chain's instant (UTC).
    underlying:
        Coin (``"BTC"``).
    spot:
        Spot index, USD per coin (median ``index_price`` of the chain).
    """

    table: pd.DataFrame
    as_of: pd.Timestamp
    underlying: str
    spot: float

    def __len__(self) -> int:
        return len(self.table)

    @property
    def quantity(self) -> FloatArray:
        """Signed contracts."""
        return self.table["quantity"].to_numpy(dtype=float)

    @property
    def is_option(self) -> npt.NDArray[np.bool_]:
        """True for options."""
        return np.asarray(self.table["kind"].to_numpy() == "option")

    @property
    def is_inverse(self) -> npt.NDArray[np.bool_]:
        """True for coin-settled (inverse) instruments."""
        return np.asarray(self.table["settlement"].to_numpy() == "inverse")

    @property
    def account_currency(self) -> str:
        """``"coin"`` when any position is coin-settled, else ``"usd"``."""
        return "coin" if bool(self.is_inverse.any()) else "usd"


def resolve_positions(positions: pd.DataFrame, chain: object) -> Positions:
    """Look every position up in the chain (options) or parse it (futures).

    Parameters
    ----------
    positions:
        DataFrame with ``symbol`` and ``quantity`` (contracts, negative = short); optional
        ``contract_size`` and ``settlement`` columns override the defaults (module docstring).
    chain:
        The :class:`volcal.OptionChain` at the margin instant.

    Returns
    -------
    Positions

    Raises
    ------
    UnknownInstrumentError
        Naming every symbol that is neither an option of the chain nor a future of its
        underlying expiring after ``as_of``.
    ValueError
        When ``symbol`` or ``quantity`` is missing or a quantity is not finite.
    """
    if not isinstance(positions, pd.DataFrame):
        raise ValueError(f"positions must be a DataFrame, got {type(positions)!r}")
    missing = [c for c in ("symbol", "quantity") if c not in positions.columns]
    if missing:
        raise ValueError(f"positions lack column(s) {missing}; have {list(positions.columns)}")
    q = chain.quotes  # type: ignore[attr-defined]
    as_of = pd.Timestamp(chain.as_of)  # type: ignore[attr-defined]
    underlying = str(chain.underlying).upper()  # type: ignore[attr-defined]
    spot = float(np.nanmedian(q["index_price"].to_numpy(dtype=float)))
    qty = pd.to_numeric(positions["quantity"], errors="coerce").to_numpy(dtype=float)
    bad_qty = ~np.isfinite(qty)
    if bad_qty.any():
        shown = positions["symbol"].astype(str).to_numpy()[bad_qty][:10].tolist()
        raise ValueError(f"quantity: not a finite number for {shown}")
    symbols = [_ccxt_to_deribit(str(s).strip()) for s in positions["symbol"]]

    by_symbol = q.set_index("symbol")
    expiry_forward = q.groupby("expiry")["forward"].median()
    rows: list[dict[str, object]] = []
    unknown: list[str] = []
    for sym, original, n in zip(symbols, positions["symbol"], qty, strict=True):
        if sym in by_symbol.index:
            r = by_symbol.loc[sym]
            rows.append(
                {
                    "symbol": sym,
                    "quantity": n,
                    "kind": "option",
                    "settlement": "inverse",
                    "expiry": r["expiry"],
                    "t": float(r["t"]),
                    "strike": float(r["strike"]),
                    "call": bool(r["call"]),
                    "contract_size": float(r["contract_size"]),
                    "chain_forward": float(r["forward"]),
                    "mark_coin": float(r["mark_coin"]),
                    "mark_usd": float(r["mark_usd"]),
                    "bid_usd": float(r["bid_usd"]),
                    "ask_usd": float(r["ask_usd"]),
                    "iv_mark": float(r["iv_mark"]),
                    "open_interest": float(r["open_interest"]),
                    "volume": float(r["exchange_volume"]) if "exchange_volume" in r else np.nan,
                }
            )
            continue
        future = _parse_future(sym, underlying, as_of)
        if future is None:
            unknown.append(str(original))
            continue
        expiry, settlement = future
        t = 0.0 if expiry is None else float(year_fraction(as_of, expiry))
        fwd = np.nan
        if expiry is not None and expiry in expiry_forward.index:
            fwd = float(expiry_forward.loc[expiry])
        size = INVERSE_FUTURE_FACE_USD.get(underlying, 10.0) if settlement == "inverse" else 1.0
        rows.append(
            {
                "symbol": sym,
                "quantity": n,
                "kind": "future",
                "settlement": settlement,
                "expiry": expiry if expiry is not None else pd.NaT,
                "t": t,
                "strike": np.nan,
                "call": False,
                "contract_size": size,
                "chain_forward": fwd,
                "mark_coin": np.nan,
                "mark_usd": np.nan,
                "bid_usd": np.nan,
                "ask_usd": np.nan,
                "iv_mark": np.nan,
                "open_interest": np.nan,
                "volume": np.nan,
            }
        )
    if unknown:
        raise UnknownInstrumentError(
            f"{len(unknown)} instrument(s) not in the {underlying} chain at {as_of}: "
            f"{', '.join(unknown[:20])}" + (" ..." if len(unknown) > 20 else "")
        )
    table = pd.DataFrame(rows, columns=list(POSITION_COLUMNS))
    table["expiry"] = pd.to_datetime(table["expiry"], utc=True)
    for col in ("contract_size", "settlement"):
        if col in positions.columns:
            given = positions[col].to_numpy()
            keep = pd.notna(given)
            if col == "contract_size":
                vals = table[col].to_numpy(dtype=float).copy()
                vals[keep] = np.asarray(given[keep], dtype=float)
                table[col] = vals
            else:
                vals_s = table[col].to_numpy(dtype=object).copy()
                vals_s[keep] = [str(v).lower() for v in given[keep]]
                if not set(vals_s) <= {"inverse", "linear"}:
                    raise ValueError(f"settlement must be 'inverse' or 'linear', got {set(vals_s)}")
                table[col] = vals_s
    return Positions(table=table, as_of=as_of, underlying=underlying, spot=spot)


def _parse_future(
    symbol: str, underlying: str, as_of: pd.Timestamp
) -> tuple[pd.Timestamp | None, str] | None:
    """``(expiry or None for a perpetual, settlement)`` of a future name, or None."""
    parts = symbol.upper().split("-")
    if len(parts) != 2:
        return None
    prefix, code = parts
    if prefix == underlying:
        settlement = "inverse"
    elif prefix in (f"{underlying}_USDC", f"{underlying}_USDT"):
        settlement = "linear"
    else:
        return None
    if code == "PERPETUAL":
        return None, settlement
    expiry = _future_expiry(code)
    if expiry is None or expiry <= as_of:
        return None
    return expiry, settlement
