"""The option chain: every listed option of one underlying at one instant, in one table.

:class:`OptionChain` is an immutable value: ``as_of`` (UTC), ``exchange``, ``underlying`` and
``quotes``, a DataFrame with the schema of ``docs/conventions.md`` (listed in
:data:`QUOTE_COLUMNS`), sorted by expiry, strike and ``call`` (puts first). Methods return new
chains; never modify ``quotes`` in place.

Build one with :meth:`OptionChain.from_quotes` (raw exchange rows: validates, converts units,
fills forwards, computes ``t``, ``k`` and implied vols, applies the quote filters), or many at
once with :func:`chains_from_quotes` (one vectorised pass over several instants). Read one back
from its flat form with :meth:`OptionChain.from_frame`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal._atomic import atomic_path
from volcal.chain.filters import QuoteFilters, filter_quotes
from volcal.chain.forwards import infer_forward, parity_pairs
from volcal.conventions import log_moneyness, to_utc, year_fraction
from volcal.errors import ChainValidationError, UnknownInstrumentError
from volcal.implied import IVStatus, implied_vol_with_status

__all__ = ["QUOTE_COLUMNS", "ChainSlice", "OptionChain", "chains_from_quotes"]

FloatArray = npt.NDArray[np.float64]

QUOTE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "expiry",
    "t",
    "strike",
    "call",
    "bid_coin",
    "ask_coin",
    "mark_coin",
    "bid_usd",
    "ask_usd",
    "mark_usd",
    "usd_per_coin",
    "forward",
    "forward_source",
    "discount",
    "k",
    "iv_bid",
    "iv_ask",
    "iv_mark",
    "bid_size",
    "ask_size",
    "open_interest",
    "contract_size",
    "index_price",
    "filter_reason",
)
"""Columns every ``OptionChain.quotes`` has (``exchange_*`` columns come before
``filter_reason``), in this order; see ``docs/conventions.md``."""

FRAME_COLUMNS: tuple[str, ...] = ("as_of", "exchange", "underlying")
"""Columns :meth:`OptionChain.to_frame` adds in front of the quote columns."""

_FLOAT_COLUMNS = tuple(
    c
    for c in QUOTE_COLUMNS
    if c not in ("symbol", "expiry", "call", "forward_source", "filter_reason")
)
_OPTIONAL_NUMERIC = ("bid_size", "ask_size", "open_interest", "index_price")
_CALL_WORDS = {"call": True, "c": True, "put": False, "p": False, "true": True, "false": False}
_SORT_KEYS = ["expiry", "strike", "call"]


# ---------------------------------------------------------------------------------------------
# validation helpers


def _fail(
    message: str,
    field: str,
    symbols: npt.NDArray[np.object_],
    bad: npt.NDArray[np.bool_],
    values: Any = None,
) -> ChainValidationError:
    shown = ""
    if values is not None:
        vals = np.asarray(values)[bad][:5]
        shown = (
            " (values: "
            + ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in vals)
            + ")"
        )
    count = int(bad.sum())
    return ChainValidationError(
        f"{field}: {message} for {count} quote{'s' if count != 1 else ''}{shown}",
        instruments=[str(s) for s in symbols[bad]],
        field=field,
    )


def _numeric(
    raw: pd.DataFrame, column: str, symbols: npt.NDArray[np.object_], default: float = np.nan
) -> FloatArray:
    """A column as float64 (``default`` if absent); junk that is not a number raises."""
    if column not in raw.columns:
        return np.full(len(raw), default, dtype=np.float64)
    col = raw[column]
    try:
        return np.asarray(pd.to_numeric(col, errors="raise"), dtype=np.float64)
    except (ValueError, TypeError):
        parsed = np.asarray(pd.to_numeric(col, errors="coerce"), dtype=np.float64)
        bad = np.isnan(parsed) & col.notna().to_numpy()
        raise _fail("not a number", column, symbols, bad, col.to_numpy()) from None


def _parse_call(raw: pd.Series, symbols: npt.NDArray[np.object_]) -> npt.NDArray[np.bool_]:
    if pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(raw.dtype):
        vals = raw.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isin(vals, [0.0, 1.0])
        if bad.any():
            raise _fail("must be True/False (or 'call'/'put')", "call", symbols, bad, vals)
        return vals == 1.0
    codes, uniques = pd.factorize(raw, use_na_sentinel=False)
    meaning = [_CALL_WORDS.get(str(v).strip().lower()) for v in uniques]
    bad = np.array([m is None for m in meaning])[codes]
    if bad.any():
        raise _fail("must be True/False or 'call'/'put'", "call", symbols, bad, raw.to_numpy())
    return np.array([bool(m) for m in meaning], dtype=bool)[codes]


def _check_prices(name: str, values: FloatArray, symbols: npt.NDArray[np.object_]) -> None:
    bad = np.isinf(values)
    if bad.any():
        raise _fail("infinite price", name, symbols, bad, values)
    bad = values < 0  # NaN compares False: a missing quote is fine
    if bad.any():
        raise _fail("negative price", name, symbols, bad, values)


# ---------------------------------------------------------------------------------------------
# the vectorised builder (several instants at once)


def _build_table(
    raw: pd.DataFrame,
    as_of_ns: npt.NDArray[np.int64],
    *,
    filters: QuoteFilters | None,
    allow_expired: bool,
    allow_crossed: bool,
) -> pd.DataFrame:
    """Validate raw quotes and compute the chain table, with an ``as_of`` column in front."""
    if not isinstance(raw, pd.DataFrame):
        raise ChainValidationError(f"raw quotes must be a pandas DataFrame, got {type(raw)!r}")
    if len(raw) == 0:
        raise ChainValidationError("no quotes: the raw table is empty")
    missing = [c for c in ("symbol", "expiry", "strike", "call") if c not in raw.columns]
    if missing:
        raise ChainValidationError(
            f"missing required column(s) {missing}; raw quotes need symbol, expiry, strike, "
            f"call and prices (have {list(raw.columns)})",
            field=missing[0],
        )
    raw = raw.reset_index(drop=True)
    n = len(raw)
    sym_na = raw["symbol"].isna().to_numpy()
    symbols = raw["symbol"].astype(object).to_numpy()
    symbols = np.where(
        sym_na, "<row " + pd.Series(np.arange(n)).astype(str).to_numpy() + ">", symbols
    ).astype(object)
    if sym_na.any():
        raise _fail("missing symbol", "symbol", symbols, sym_na)
    symbols = np.array([str(s) for s in symbols], dtype=object)

    dup = pd.DataFrame({"a": as_of_ns, "s": symbols}).duplicated(keep=False).to_numpy()
    if dup.any():
        raise _fail("duplicate symbol at one instant", "symbol", symbols, dup)

    # expiry and t -----------------------------------------------------------------------
    try:
        expiry = pd.DatetimeIndex(pd.to_datetime(raw["expiry"], utc=True))
    except (ValueError, TypeError) as exc:
        raise ChainValidationError(
            f"expiry: cannot parse as timestamps ({exc})", field="expiry"
        ) from None
    bad = np.asarray(expiry.isna())
    if bad.any():
        raise _fail("missing expiry", "expiry", symbols, bad)
    expiry = expiry.as_unit("ns")
    t = np.empty(n, dtype=np.float64)
    exp_ns = expiry.asi8
    for a, idx in _group_indices(as_of_ns):
        t[idx] = year_fraction(pd.Timestamp(int(a), tz="UTC"), expiry[idx])
    if not allow_expired:
        bad = t <= 0
        if bad.any():
            raise _fail(
                "option at or past expiry (t <= 0) at as_of",
                "expiry",
                symbols,
                bad,
                expiry.astype(str).to_numpy(),
            )

    # strike and call ----------------------------------------------------------------------
    strike = _numeric(raw, "strike", symbols)
    bad = ~np.isfinite(strike)
    if bad.any():
        raise _fail("NaN or infinite strike", "strike", symbols, bad, strike)
    bad = strike <= 0
    if bad.any():
        raise _fail("non-positive strike", "strike", symbols, bad, strike)
    call = _parse_call(raw["call"], symbols)

    # prices -------------------------------------------------------------------------------
    cols = set(raw.columns)
    if {"bid_coin", "ask_coin"} <= cols:
        unit = "coin"
    elif {"bid_usd", "ask_usd"} <= cols:
        unit = "usd"
    else:
        raise ChainValidationError(
            "missing price columns: need bid_coin, ask_coin[, mark_coin] (with usd_per_coin or "
            f"forward) or bid_usd, ask_usd[, mark_usd]; have {sorted(cols)}",
            field="bid_coin",
        )
    px = {side: _numeric(raw, f"{side}_{unit}", symbols) for side in ("bid", "ask", "mark")}
    for side, values in px.items():
        _check_prices(f"{side}_{unit}", values, symbols)
    if not allow_crossed:
        bad = px["ask"] < px["bid"]
        if bad.any():
            raise _fail(
                f"ask below bid (crossed quote; ask_{unit} < bid_{unit})",
                f"ask_{unit}",
                symbols,
                bad,
                px["ask"],
            )

    # forward, reference price, discount -----------------------------------------------------
    fwd = _numeric(raw, "forward", symbols)
    bad = np.isinf(fwd) | (fwd <= 0)
    if bad.any():
        raise _fail(
            "forward must be finite and > 0 (NaN = infer by parity)", "forward", symbols, bad, fwd
        )
    upc = _numeric(raw, "usd_per_coin", symbols)
    bad = np.isinf(upc) | (upc <= 0)
    if bad.any():
        raise _fail("usd_per_coin must be finite and > 0", "usd_per_coin", symbols, bad, upc)
    disc_given = _numeric(raw, "discount", symbols)
    bad = np.isinf(disc_given) | (disc_given <= 0)
    if bad.any():
        raise _fail("discount must be finite and > 0", "discount", symbols, bad, disc_given)

    # One group per (instant, expiry).
    gkey = pd.Series(_pair_codes(as_of_ns, exp_ns), dtype=np.int64)
    # Fill rows without a forward from the other rows of the same expiry and instant.
    fwd_fill = gkey.to_frame("g").assign(f=fwd).groupby("g")["f"].transform("median").to_numpy()
    fwd = np.where(np.isnan(fwd), fwd_fill, fwd)
    source = np.where(np.isnan(fwd), "parity", "exchange").astype(object)
    # Rows with a forward and no reference price: the Deribit convention usd_per_coin = F.
    upc = np.where(np.isnan(upc), fwd, upc)
    disc = np.where(np.isnan(disc_given), 1.0, disc_given)

    need = np.isnan(fwd)
    if need.any():
        _fill_parity(
            symbols,
            unit,
            px,
            strike,
            call,
            upc,
            disc_given,
            gkey.to_numpy(),
            exp_ns,
            need,
            fwd,
            disc,
        )
        upc = np.where(np.isnan(upc), fwd, upc)

    # units, moneyness, implied vols ------------------------------------------------------------
    if unit == "coin":
        coin = px
        usd = {s: v * upc for s, v in px.items()}
    else:
        usd = px
        coin = {s: v / upc for s, v in px.items()}
    k = log_moneyness(strike, fwd)
    ivs: dict[str, FloatArray] = {}
    for side in ("bid", "ask", "mark"):
        vol, status = implied_vol_with_status(usd[side], fwd, strike, t, call, disc)
        # Only a genuine vol: a premium at intrinsic (vol 0, e.g. a zero OTM quote) is no quote.
        ivs[side] = np.where(status == IVStatus.OK, vol, np.nan)

    data: dict[str, Any] = {
        "as_of": pd.DatetimeIndex(as_of_ns.astype("datetime64[ns]"), tz="UTC"),
        "symbol": symbols,
        "expiry": expiry,
        "t": t,
        "strike": strike,
        "call": call,
        "bid_coin": coin["bid"],
        "ask_coin": coin["ask"],
        "mark_coin": coin["mark"],
        "bid_usd": usd["bid"],
        "ask_usd": usd["ask"],
        "mark_usd": usd["mark"],
        "usd_per_coin": upc,
        "forward": fwd,
        "forward_source": source,
        "discount": disc,
        "k": k,
        "iv_bid": ivs["bid"],
        "iv_ask": ivs["ask"],
        "iv_mark": ivs["mark"],
    }
    for name in _OPTIONAL_NUMERIC:
        data[name] = _numeric(raw, name, symbols)
    data["contract_size"] = _numeric(raw, "contract_size", symbols, default=1.0)
    for name in raw.columns:
        if isinstance(name, str) and name.startswith("exchange_"):
            col = raw[name]
            try:
                data[name] = np.asarray(pd.to_numeric(col, errors="raise"), dtype=np.float64)
            except (ValueError, TypeError):
                data[name] = col.to_numpy()  # non-numeric exchange data kept as it is
    table = pd.DataFrame(data)
    table = table[_ordered(table)]
    _, reason = filter_quotes(table, filters)
    table["filter_reason"] = reason
    table = table.sort_values(["as_of", *_SORT_KEYS], kind="stable").reset_index(drop=True)
    return table


def _pair_codes(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """One integer code per distinct pair ``(a[i], b[i])``."""
    ca = pd.factorize(a)[0]
    cb, ub = pd.factorize(b)
    return np.asarray(pd.factorize(ca.astype(np.int64) * len(ub) + cb)[0], dtype=np.int64)


def _group_indices(
    codes: npt.NDArray[np.int64],
) -> list[tuple[int, npt.NDArray[np.intp]]]:
    """``(value, row indices)`` for each distinct value of ``codes``, values ascending."""
    order = np.argsort(codes, kind="stable")
    values, starts = np.unique(codes[order], return_index=True)
    bounds = [*starts.tolist(), len(codes)]
    return [(int(v), order[bounds[i] : bounds[i + 1]]) for i, v in enumerate(values)]


def _ordered(table: pd.DataFrame) -> list[str]:
    """Conventions order: the schema, then exchange_* columns, then the rest."""
    base = [c for c in QUOTE_COLUMNS if c != "filter_reason" and c in table.columns]
    extra = [c for c in table.columns if c not in base and c != "as_of"]
    front = ["as_of"] if "as_of" in table.columns else []
    return front + base + extra


def _fill_parity(
    symbols: npt.NDArray[np.object_],
    unit: str,
    px: dict[str, FloatArray],
    strike: FloatArray,
    call: npt.NDArray[np.bool_],
    upc: FloatArray,
    disc_given: FloatArray,
    gkey: npt.NDArray[np.int64],
    exp_ns: npt.NDArray[np.int64],
    need: npt.NDArray[np.bool_],
    fwd: FloatArray,
    disc: FloatArray,
) -> None:
    """Infer forward (and discount) by put-call parity where ``need``; fills fwd, disc in place."""
    if unit == "coin":
        bad = need & np.isnan(upc)
        if bad.any():
            raise _fail(
                "coin prices without a forward need usd_per_coin to convert to USD for "
                "put-call parity",
                "usd_per_coin",
                symbols,
                bad,
            )
        bid_usd, ask_usd = px["bid"] * upc, px["ask"] * upc
    else:
        bid_usd, ask_usd = px["bid"], px["ask"]
    sub = pd.DataFrame(
        {
            "g": gkey,
            "expiry": exp_ns,
            "strike": strike,
            "call": call,
            "bid_usd": bid_usd,
            "ask_usd": ask_usd,
        }
    )[need]
    pairs = parity_pairs(sub.rename(columns={"g": "as_of"}))  # "as_of" key = the group id
    by_group: dict[Any, pd.DataFrame] = dict(iter(pairs.groupby("as_of")))
    for g, rows in _group_indices(gkey[need]):
        idx = np.flatnonzero(need)[rows]
        grp = by_group.get(g)
        if grp is None or len(grp) == 0:
            mask = np.zeros(len(symbols), dtype=bool)
            mask[idx] = True
            raise _fail(
                "no exchange forward and no two-sided call/put pair at one strike to infer it "
                "by put-call parity (give a forward, or drop this expiry)",
                "forward",
                symbols,
                mask,
            )
        dg = disc_given[idx]
        known = dg[~np.isnan(dg)]
        fit = infer_forward(
            grp["strike"].to_numpy(),
            grp["call_mid_usd"].to_numpy(),
            grp["put_mid_usd"].to_numpy(),
            price_error=grp["error_usd"].to_numpy(),
            discount=float(np.median(known)) if known.size else None,
        )
        fwd[idx] = fit.forward
        disc[idx] = np.where(np.isnan(dg), fit.discount, dg)


def _split(table: pd.DataFrame, exchange: str, underlying: str) -> list[OptionChain]:
    """Cut a table sorted by ``as_of`` into one chain per instant (contiguous slices)."""
    as_of_ns = pd.DatetimeIndex(table["as_of"]).as_unit("ns").asi8
    quotes_all = table.drop(columns="as_of")
    values, starts = np.unique(as_of_ns, return_index=True)
    bounds = [*starts.tolist(), len(table)]
    return [
        OptionChain._trusted(
            pd.Timestamp(int(v), tz="UTC"),
            exchange,
            underlying,
            quotes_all.iloc[bounds[i] : bounds[i + 1]].reset_index(drop=True),
        )
        for i, v in enumerate(values)
    ]


def chains_from_quotes(
    raw: pd.DataFrame,
    *,
    exchange: str,
    underlying: str,
    filters: QuoteFilters | None = None,
    allow_expired: bool = False,
    allow_crossed: bool = False,
) -> list[OptionChain]:
    """Build one chain per instant from raw quotes of several instants, in one vectorised pass.

    Parameters
    ----------
    raw:
        Raw quotes as for :meth:`OptionChain.from_quotes`, plus a column ``as_of`` (the instant
        of each row; naive timestamps are read as UTC).
    exchange, underlying, filters, allow_expired, allow_crossed:
        As for :meth:`OptionChain.from_quotes`.

    Returns
    -------
    list of OptionChain
        Oldest first.
    """
    if not isinstance(raw, pd.DataFrame) or "as_of" not in raw.columns:
        raise ChainValidationError(
            "chains_from_quotes needs a DataFrame with an 'as_of' column", field="as_of"
        )
    try:
        as_of = pd.DatetimeIndex(pd.to_datetime(raw["as_of"], utc=True)).as_unit("ns")
    except (ValueError, TypeError) as exc:
        raise ChainValidationError(
            f"as_of: cannot parse as timestamps ({exc})", field="as_of"
        ) from None
    if as_of.isna().any():
        raise ChainValidationError("as_of: missing timestamps", field="as_of")
    table = _build_table(
        raw.drop(columns="as_of"),
        as_of.asi8,
        filters=filters,
        allow_expired=allow_expired,
        allow_crossed=allow_crossed,
    )
    return _split(table, exchange, underlying)


# ---------------------------------------------------------------------------------------------
# the chain


@dataclass(frozen=True, eq=False)
class ChainSlice:
    """The quotes of one expiry of a chain (see :meth:`OptionChain.slices`).

    Attributes
    ----------
    as_of, exchange, underlying:
        As in the chain.
    expiry:
        Expiry instant (UTC).
    t:
        Years to expiry, ACT/365F.
    forward:
        Forward of the expiry, USD per coin: the median over the slice's quotes (exchanges may
        report slightly different forwards per instrument; each quote keeps its own in
        ``quotes.forward``).
    discount:
        Discount factor (median over the quotes).
    forward_source:
        ``"exchange"`` or ``"parity"``.
    quotes:
        The slice's rows of the chain table, same columns, sorted by strike then ``call``.

    Not hashable and compared by identity (it holds a DataFrame).
    """

    as_of: pd.Timestamp
    exchange: str
    underlying: str
    expiry: pd.Timestamp
    t: float
    forward: float
    discount: float
    forward_source: str
    quotes: pd.DataFrame

    def __len__(self) -> int:
        return len(self.quotes)

    def _with(self, mask: npt.ArrayLike) -> ChainSlice:
        keep = np.asarray(mask, dtype=bool)
        return replace(self, quotes=self.quotes[keep].reset_index(drop=True))

    def usable(self) -> ChainSlice:
        """The quotes that pass the filters (``filter_reason == ""``)."""
        return self._with(self.quotes["filter_reason"].to_numpy() == "")

    def otm(self) -> ChainSlice:
        """Out-of-the-money quotes: calls with ``K >= F``, puts with ``K < F`` (per-quote F)."""
        q = self.quotes
        return self._with(
            np.where(
                q["call"].to_numpy(dtype=bool),
                q["strike"] >= q["forward"],
                q["strike"] < q["forward"],
            )
        )

    def to_chain(self) -> OptionChain:
        """A chain holding only this expiry."""
        return OptionChain._trusted(self.as_of, self.exchange, self.underlying, self.quotes)

    def __repr__(self) -> str:
        return (
            f"ChainSlice({self.underlying} {self.expiry:%Y-%m-%d %H:%M}Z, t={self.t:.5f}, "
            f"F={self.forward:.2f} ({self.forward_source}), {len(self)} quotes)"
        )


@dataclass(frozen=True, eq=False)
class OptionChain:
    """Every listed option of one underlying on one exchange at one instant.

    Attributes
    ----------
    as_of:
        The instant of the quotes, timezone-aware UTC.
    exchange:
        Exchange name, lower case (``"deribit"``, ...).
    underlying:
        Underlying coin (``"BTC"``, ``"ETH"``).
    quotes:
        One row per option, columns :data:`QUOTE_COLUMNS` (plus ``exchange_*``) with the units
        of ``docs/conventions.md``, sorted by expiry, strike, ``call`` (puts first). Treat it as
        read-only: every method returns a new chain. Quotes that fail a filter are kept, with
        the reason in ``filter_reason``.

    Notes
    -----
    Equality of chains is :meth:`equals` (a DataFrame has no truth value), and chains are not
    hashable.
    """

    as_of: pd.Timestamp
    exchange: str
    underlying: str
    quotes: pd.DataFrame

    def __post_init__(self) -> None:
        object.__setattr__(self, "as_of", to_utc(self.as_of))
        if not isinstance(self.quotes, pd.DataFrame):
            raise ChainValidationError(f"quotes must be a DataFrame, got {type(self.quotes)!r}")
        missing = [c for c in QUOTE_COLUMNS if c not in self.quotes.columns]
        if missing:
            raise ChainValidationError(
                f"quotes lack column(s) {missing}; build chains with OptionChain.from_quotes "
                "or OptionChain.from_frame",
                field=missing[0],
            )

    @classmethod
    def _trusted(
        cls, as_of: pd.Timestamp, exchange: str, underlying: str, quotes: pd.DataFrame
    ) -> OptionChain:
        return cls(as_of=as_of, exchange=exchange, underlying=underlying, quotes=quotes)

    # construction -------------------------------------------------------------------------

    @classmethod
    def from_quotes(
        cls,
        raw: pd.DataFrame,
        *,
        as_of: object,
        exchange: str,
        underlying: str,
        filters: QuoteFilters | None = None,
        allow_expired: bool = False,
        allow_crossed: bool = False,
    ) -> OptionChain:
        """Validate raw quotes of one instant and build the chain.

        Parameters
        ----------
        raw:
            One row per option. Required: ``symbol`` (str), ``expiry`` (timestamp; naive = UTC),
            ``strike`` (USD, > 0), ``call`` (bool, or ``"call"``/``"put"``/``"C"``/``"P"``), and
            prices, either ``bid_coin, ask_coin[, mark_coin]`` (coin) or
            ``bid_usd, ask_usd[, mark_usd]`` (USD); NaN = no quote. Optional:
            ``usd_per_coin`` (coin <-> USD reference; default: the forward, Deribit's
            convention), ``forward`` (USD per coin; NaN or absent: inferred per expiry by
            put-call parity, ``forward_source = "parity"``), ``discount`` (default 1.0 with an
            exchange forward; fitted by parity otherwise), ``open_interest``, ``bid_size``,
            ``ask_size``, ``contract_size`` (default 1), ``index_price`` and any ``exchange_*``
            columns (kept). Other columns are dropped.
        as_of:
            The instant of the quotes (naive = UTC).
        exchange, underlying:
            Exchange name (``"deribit"``) and underlying coin (``"BTC"``).
        filters:
            Quote filter settings; None for the defaults of :class:`QuoteFilters`.
        allow_expired:
            Accept options at or past expiry (``t <= 0``; they get NaN vols and the filter
            reason ``expired``). Default False: they raise.
        allow_crossed:
            Accept quotes with ``ask < bid`` (flagged ``crossed``). Default False: they raise.

        Returns
        -------
        OptionChain

        Raises
        ------
        ChainValidationError
            Naming the field and the instruments: missing columns, missing or duplicate
            symbols, unparseable or missing expiries, NaN / infinite / non-positive strikes,
            negative or infinite prices, crossed quotes, non-finite or non-positive forwards,
            reference prices or discount factors, expired options, an expiry without a forward
            and without any call/put pair for parity.

        Notes
        -----
        Computed columns: ``t = year_fraction(as_of, expiry)``; the other price unit
        (``usd = coin × usd_per_coin``); ``k = ln(K / F)``; ``iv_bid, iv_ask, iv_mark`` =
        :func:`volcal.implied_vol` of the USD premiums on ``(F, K, t, call, D)`` — NaN where no
        vol exists and also where the premium equals intrinsic value (a zero OTM quote says
        nothing about vol); ``filter_reason`` from :func:`volcal.chain.filter_quotes`.
        """
        try:
            ts = to_utc(as_of)
        except (ValueError, TypeError) as exc:
            raise ChainValidationError(f"as_of: not a timestamp ({exc})", field="as_of") from None
        as_of_ns = np.full(
            len(raw) if isinstance(raw, pd.DataFrame) else 0, ts.as_unit("ns").value, dtype=np.int64
        )
        table = _build_table(
            raw, as_of_ns, filters=filters, allow_expired=allow_expired, allow_crossed=allow_crossed
        )
        return cls._trusted(ts, exchange, underlying, table.drop(columns="as_of"))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> OptionChain:
        """Rebuild a chain from :meth:`to_frame` output (no recomputation).

        Raises
        ------
        ChainValidationError
            Columns missing, or the frame holds more than one instant, exchange or underlying
            (use :func:`volcal.load_snapshot` for files of many chains).
        """
        if not isinstance(frame, pd.DataFrame):
            raise ChainValidationError(f"expected a DataFrame, got {type(frame)!r}")
        missing = [c for c in (*FRAME_COLUMNS, *QUOTE_COLUMNS) if c not in frame.columns]
        if missing:
            raise ChainValidationError(
                f"not a volcal chain frame: missing column(s) {missing}", field=missing[0]
            )
        if len(frame) == 0:
            raise ChainValidationError("empty chain frame")
        heads = {}
        for c in FRAME_COLUMNS:
            values = frame[c].unique()
            if len(values) != 1:
                raise ChainValidationError(
                    f"a chain frame holds one {c}; found {len(values)}: {list(values)[:5]}", field=c
                )
            heads[c] = values[0]
        quotes = _normalise_quotes(frame.drop(columns=list(FRAME_COLUMNS)))
        return cls._trusted(
            to_utc(heads["as_of"]), str(heads["exchange"]), str(heads["underlying"]), quotes
        )

    # conversion and I/O ---------------------------------------------------------------------

    def to_frame(self) -> pd.DataFrame:
        """One flat DataFrame: ``as_of, exchange, underlying`` then the quote columns."""
        q = self.quotes
        head = pd.DataFrame(
            {
                "as_of": pd.DatetimeIndex([self.as_of] * len(q)).as_unit("ns"),
                "exchange": np.full(len(q), self.exchange, dtype=object),
                "underlying": np.full(len(q), self.underlying, dtype=object),
            },
            index=q.index,
        )
        return pd.concat([head, q], axis=1)

    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_frame` to a parquet file atomically (temp file, then rename).

        Returns the path written. Read it back with :meth:`read_parquet` or
        :func:`volcal.load_snapshot`.
        """
        with atomic_path(path) as tmp:
            self.to_frame().to_parquet(tmp, index=False)
        return Path(path)

    @classmethod
    def read_parquet(cls, path: str | os.PathLike[str]) -> OptionChain:
        """Read a chain written by :meth:`to_parquet`."""
        return cls.from_frame(pd.read_parquet(path))

    # selection ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.quotes)

    @property
    def expiries(self) -> tuple[pd.Timestamp, ...]:
        """The expiries in the chain (UTC), ascending."""
        return tuple(to_utc(e) for e in pd.unique(self.quotes["expiry"]))

    def with_quotes(self, quotes: pd.DataFrame) -> OptionChain:
        """The same chain header with other quote rows (e.g. a subset); no recomputation."""
        return replace(self, quotes=quotes)

    def select(self, mask: npt.ArrayLike | pd.Series) -> OptionChain:
        """The quotes where ``mask`` is True (a boolean array or Series in quote order)."""
        keep = np.asarray(mask, dtype=bool)
        if keep.shape != (len(self.quotes),):
            raise ValueError(f"mask has shape {keep.shape}, expected ({len(self.quotes)},)")
        return self.with_quotes(self.quotes[keep].reset_index(drop=True))

    def select_expiries(
        self,
        expiries: Iterable[object] | None = None,
        *,
        min_t: float | None = None,
        max_t: float | None = None,
    ) -> OptionChain:
        """Only some expiries: those listed (timestamps, naive = UTC) and/or ``min_t <= t <=
        max_t`` (years)."""
        keep = np.ones(len(self.quotes), dtype=bool)
        if expiries is not None:
            wanted = pd.DatetimeIndex([to_utc(e) for e in expiries]).as_unit("ns")
            keep &= self.quotes["expiry"].isin(wanted).to_numpy()
        t = self.quotes["t"].to_numpy()
        if min_t is not None:
            keep &= t >= min_t
        if max_t is not None:
            keep &= t <= max_t
        return self.select(keep)

    def usable(self) -> OptionChain:
        """The quotes that pass the filters (``filter_reason == ""``)."""
        return self.select(self.quotes["filter_reason"].to_numpy() == "")

    def otm(self) -> OptionChain:
        """Out-of-the-money quotes: calls with ``K >= F``, puts with ``K < F``."""
        q = self.quotes
        return self.select(
            np.where(
                q["call"].to_numpy(dtype=bool),
                q["strike"] >= q["forward"],
                q["strike"] < q["forward"],
            )
        )

    def filter(self, filters: QuoteFilters | None = None, **changes: Any) -> OptionChain:
        """Re-evaluate ``filter_reason`` with other settings; every quote is kept.

        Parameters
        ----------
        filters:
            The settings (default :class:`QuoteFilters`).
        **changes:
            Settings to change on ``filters``, e.g. ``chain.filter(max_rel_spread=0.2)``.
        """
        f = filters if filters is not None else QuoteFilters()
        if changes:
            f = replace(f, **changes)
        _, reason = filter_quotes(self.quotes, f)
        quotes = self.quotes.copy()
        quotes["filter_reason"] = reason
        return self.with_quotes(quotes)

    # per expiry -------------------------------------------------------------------------------

    def slices(self) -> tuple[ChainSlice, ...]:
        """One :class:`ChainSlice` per expiry, ascending (all quotes, filtered ones included;
        use ``chain.usable().slices()`` for the usable ones only)."""
        q = self.quotes
        out = []
        for _, idx in q.groupby("expiry", sort=True).indices.items():
            out.append(self._slice(q.iloc[idx].reset_index(drop=True)))
        return tuple(out)

    def slice(self, expiry: object) -> ChainSlice:
        """The slice of one expiry (a timestamp, naive = UTC)."""
        ts = to_utc(expiry)
        rows = self.quotes[self.quotes["expiry"] == ts]
        if len(rows) == 0:
            raise UnknownInstrumentError(
                f"no expiry {ts} in the {self.underlying} chain at {self.as_of}; "
                f"expiries: {[str(e) for e in self.expiries]}"
            )
        return self._slice(rows.reset_index(drop=True))

    def _slice(self, q: pd.DataFrame) -> ChainSlice:
        sources = pd.unique(q["forward_source"])
        return ChainSlice(
            as_of=self.as_of,
            exchange=self.exchange,
            underlying=self.underlying,
            expiry=to_utc(q["expiry"].iloc[0]),
            t=float(q["t"].iloc[0]),
            forward=float(np.median(q["forward"].to_numpy())),
            discount=float(np.median(q["discount"].to_numpy())),
            forward_source=str(sources[0]) if len(sources) == 1 else "mixed",
            quotes=q,
        )

    def summary(self) -> pd.DataFrame:
        """One row per expiry: ``expiry, t, forward, forward_source, discount, n_quotes,
        n_usable, atm_iv_mark``.

        ``atm_iv_mark`` is the mark vol at ``k = 0``, linearly interpolated in ``k`` between the
        usable out-of-the-money quotes around the money (NaN when there are none on one side).
        """
        q = self.quotes
        columns = ["expiry", "t", "forward", "forward_source", "discount", "n_quotes"]
        columns += ["n_usable", "atm_iv_mark"]
        if len(q) == 0:
            return pd.DataFrame(columns=columns)
        codes, expiries = pd.factorize(q["expiry"], sort=True)
        n = len(expiries)
        usable = q["filter_reason"].to_numpy() == ""
        atm = np.full(n, np.nan)
        t_first, fwd, disc = np.empty(n), np.empty(n), np.empty(n)
        sources: list[str] = []
        k_all, iv_all = otm_marks(q, usable)
        t_all = q["t"].to_numpy(dtype=float)
        f_all = q["forward"].to_numpy(dtype=float)
        d_all = q["discount"].to_numpy(dtype=float)
        src_all = q["forward_source"].to_numpy()
        for i, idx in enumerate(group_positions(codes, n)):
            t_first[i] = t_all[idx[0]]
            fwd[i] = np.median(f_all[idx])
            disc[i] = np.median(d_all[idx])
            src = pd.unique(src_all[idx])
            sources.append(str(src[0]) if len(src) == 1 else "mixed")
            k, iv = k_all[idx], iv_all[idx]
            ok = np.isfinite(iv) & np.isfinite(k)
            k, iv = k[ok], iv[ok]
            if k.size and k.min() <= 0.0 <= k.max():
                order = np.argsort(k)
                atm[i] = float(np.interp(0.0, k[order], iv[order]))
        return pd.DataFrame(
            {
                "expiry": [to_utc(e) for e in expiries],
                "t": t_first,
                "forward": fwd,
                "forward_source": sources,
                "discount": disc,
                "n_quotes": np.bincount(codes, minlength=n),
                "n_usable": np.bincount(codes, weights=usable, minlength=n).astype(int),
                "atm_iv_mark": atm,
            },
            columns=columns,
        )

    # comparison and display ---------------------------------------------------------------

    def equals(self, other: object) -> bool:
        """Same header and identical quotes (``DataFrame.equals``: NaN equals NaN)."""
        return (
            isinstance(other, OptionChain)
            and self.as_of == other.as_of
            and self.exchange == other.exchange
            and self.underlying == other.underlying
            and list(self.quotes.columns) == list(other.quotes.columns)
            and self.quotes.reset_index(drop=True).equals(other.quotes.reset_index(drop=True))
        )

    def __repr__(self) -> str:
        n_ok = int((self.quotes["filter_reason"] == "").sum())
        return (
            f"OptionChain({self.exchange} {self.underlying} at {self.as_of.isoformat()}: "
            f"{len(self)} quotes, {len(self.expiries)} expiries, {n_ok} usable)"
        )


def otm_marks(
    q: pd.DataFrame, usable: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``k`` and ``iv_mark`` of the usable out-of-the-money quotes (calls with ``K >= F``, puts
    with ``K < F``, per-quote ``F``); NaN elsewhere, so that positions line up with ``q``."""
    call = q["call"].to_numpy(dtype=bool)
    strike = q["strike"].to_numpy(dtype=float)
    forward = q["forward"].to_numpy(dtype=float)
    keep = usable & np.where(call, strike >= forward, strike < forward)
    k = np.where(keep, q["k"].to_numpy(dtype=float), np.nan)
    iv = np.where(keep, q["iv_mark"].to_numpy(dtype=float), np.nan)
    return k, iv


def group_positions(codes: npt.NDArray[np.intp], n: int) -> list[npt.NDArray[np.intp]]:
    """Row positions of each group ``0..n-1`` of ``codes`` (stable order)."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n)]


def _normalise_quotes(q: pd.DataFrame) -> pd.DataFrame:
    """Coerce a stored quote table to the chain dtypes and order (from_frame)."""
    q = q.copy()
    q["expiry"] = pd.DatetimeIndex(pd.to_datetime(q["expiry"], utc=True)).as_unit("ns")
    q["call"] = q["call"].astype(bool)
    for c in _FLOAT_COLUMNS:
        q[c] = q[c].astype(np.float64)
    q["filter_reason"] = q["filter_reason"].fillna("").astype(str)
    q["forward_source"] = q["forward_source"].astype(str)
    q["symbol"] = q["symbol"].astype(str)
    base = [c for c in QUOTE_COLUMNS if c != "filter_reason"]
    extra = [c for c in q.columns if c not in QUOTE_COLUMNS]
    q = q[[*base, *extra, "filter_reason"]]
    return q.sort_values(_SORT_KEYS, kind="stable").reset_index(drop=True)
