"""Fetch option chains from Deribit, OKX, Bybit and Binance through ccxt's unified API.

Every fetch is recorded on a tape (see :mod:`volcal.data.tape`): in memory always, to a file
when ``tape=`` is given. The raw quotes are normalised into the raw frame of
``OptionChain.from_quotes`` (see ``docs/conventions.md``).

Per exchange (ccxt 4.5 unified calls, and the REST endpoints ccxt calls for them):

========  ==========================================  ================================  =====
exchange  ccxt calls                                  endpoints                         quote
========  ==========================================  ================================  =====
deribit   ``load_markets``,                           ``public/get_currencies``,        coin
          ``fetch_option_chain(cur)``                 ``public/get_instruments``,
                                                      ``public/get_book_summary_by_
                                                      currency?currency=&kind=option``
okx       ``load_markets`` (option types only when    ``public/instruments?instType=    coin
          volcal builds the instance),                OPTION&uly=``,
          ``fetch_option_chain(cur)``,                ``market/tickers?instType=OPTION
          ``fetch_all_greeks(params={uly})``,         &uly=``, ``public/opt-summary?
          ``fetch_mark_prices(params={type, uly})``   uly=``, ``public/mark-price?
                                                      instType=OPTION&uly=``
bybit     ``load_markets`` (options of ``cur``),      ``v5/market/instruments-info?     usd
          ``fetch_option_chain(cur)``                 category=option&baseCoin=``,
                                                      ``v5/market/tickers?category=
                                                      option&baseCoin=``
binance   ``load_markets`` (option markets; ccxt      ``eapi/v1/exchangeInfo``,         usd
          skips them by default), ``fetch_tickers     ``eapi/v1/ticker``,
          (type=option)``, ``fetch_all_greeks``       ``eapi/v1/mark``
========  ==========================================  ================================  =====

Forwards: Deribit's per-option ``underlying_price`` (the future or synthetic ``SYN.`` index of
the expiry), OKX's ``fwdPx`` from ``opt-summary``, Bybit's ticker ``underlyingPrice``; Binance
publishes none, so ``forward`` and ``discount`` are NaN and the chain infers them by put-call
parity (elsewhere ``discount = 1``: premiums are quoted against the exchange's forward).
Coin <-> USD: the reference ``usd_per_coin`` is the forward where the exchange gives one
(Deribit, OKX, Bybit: their IVs are Black-76 on that forward) and the spot index otherwise
(Binance ``exercisePrice``). Exchange greeks are stored as given, per option in the quote
currency's units (OKX: the Black-Scholes ``*BS`` greeks, in USD).

Errors: ccxt's ``NetworkError`` family (timeouts, rate limits, maintenance) is retried with
bounded exponential backoff (:class:`RetryPolicy`), then raised as
:class:`~volcal.errors.FetchError` naming exchange, endpoint and cause; ``ExchangeError`` is
never retried (also raised as FetchError). Malformed or partial responses raise
:class:`~volcal.errors.ChainValidationError` listing the offending instruments; a currency
without options is an error, never an empty chain.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from volcal.data.tape import (
    Tape,
    TapeRecorder,
    is_async_exchange,
    make_exchange,
    new_header,
)
from volcal.errors import ChainValidationError, FetchError, VolcalError

if TYPE_CHECKING:
    from volcal.chain import OptionChain

__all__ = [
    "SUPPORTED_EXCHANGES",
    "RawQuotes",
    "RetryPolicy",
    "afetch_chain",
    "afetch_chains",
    "afetch_quotes",
    "exchange_config",
    "fetch_chain",
    "fetch_quotes",
]

SUPPORTED_EXCHANGES: tuple[str, ...] = ("deribit", "okx", "bybit", "binance")

QuoteUnit = Literal["coin", "usd"]

_QUOTE_UNIT: dict[str, QuoteUnit] = {
    "deribit": "coin",
    "okx": "coin",
    "bybit": "usd",
    "binance": "usd",
}

_USD_LIKE = frozenset({"USD", "USDC", "USDT"})

# indirection so tests can replace the clock without waiting
_sleep: Callable[[float], None] = time.sleep
_asleep: Callable[[float], Any] = asyncio.sleep


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for network-type failures.

    Attempt ``n`` (0-based) that fails with a ``ccxt.NetworkError`` is retried after
    ``min(max_delay_s, base_delay_s * factor**n)`` seconds, at most ``max_retries`` times.

    Parameters
    ----------
    max_retries:
        Retries after the first attempt (>= 0).
    base_delay_s:
        Delay before the first retry, seconds (>= 0).
    factor:
        Growth of the delay per retry (>= 1).
    max_delay_s:
        Upper bound of any single delay, seconds.
    """

    max_retries: int = 4
    base_delay_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("delays must be >= 0")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        return float(min(self.max_delay_s, self.base_delay_s * self.factor**attempt))


@dataclass(frozen=True)
class RawQuotes:
    """The normalised raw quotes of one fetch, before they become an ``OptionChain``.

    Attributes
    ----------
    frame:
        The raw frame for ``OptionChain.from_quotes``: one row per option with ``symbol,
        expiry, strike, call``, premiums ``*_coin`` (coin-quoted exchanges) or ``*_usd``
        (USD-quoted), ``usd_per_coin``, ``forward`` (NaN = infer by parity), ``discount``,
        sizes, ``open_interest``, ``contract_size``, ``index_price`` and ``exchange_*``.
    as_of:
        When the quotes were received (UTC): the receive time of the last quote response.
    exchange, underlying:
        ccxt exchange id and currency code (``"BTC"``).
    quote_unit:
        ``"coin"`` or ``"usd"``: the unit the exchange quotes premiums in.
    tape:
        The tape of the fetch (its ``path`` is set when it was written to a file).
    """

    frame: pd.DataFrame
    as_of: pd.Timestamp
    exchange: str
    underlying: str
    quote_unit: QuoteUnit
    tape: Tape = field(repr=False)

    def to_chain(self) -> OptionChain:
        """Build the ``OptionChain`` (``OptionChain.from_quotes``).

        Options the exchange still lists at or past expiry, and crossed quotes, are what the
        exchange said, not malformed data: they are kept and flagged by the chain's filters
        (``allow_expired=True, allow_crossed=True``) instead of failing the fetch.
        """
        from volcal.chain import OptionChain

        return OptionChain.from_quotes(
            self.frame,
            as_of=self.as_of,
            exchange=self.exchange,
            underlying=self.underlying,
            allow_expired=True,
            allow_crossed=True,
        )


# ----------------------------------------------------------------------------------------
# Exchange construction
# ----------------------------------------------------------------------------------------


def exchange_config(exchange_id: str, currency: str) -> dict[str, Any]:
    """ccxt constructor config volcal uses for ``exchange_id`` when it builds the instance.

    The rate limiter is on; ``load_markets`` is narrowed to the option markets of
    ``currency`` where ccxt allows it (OKX, Bybit), and Binance's option markets (skipped by
    ccxt by default) are loaded.
    """
    cur = currency.upper()
    config: dict[str, Any] = {"enableRateLimit": True}
    if exchange_id == "okx":
        config["options"] = {
            "fetchMarkets": {"types": ["option"]},
            "defaultUnderlying": [f"{cur}-USD"],
        }
    elif exchange_id == "bybit":
        config["options"] = {"fetchMarkets": {"types": ["option"], "options": [cur]}}
    elif exchange_id == "binance":
        config["options"] = {"fetchMarkets": {"types": ["option"]}}
    return config


def _replay_config(ex: Any) -> dict[str, Any]:
    """The constructor config that rebuilds ``ex``'s requests on replay (best effort for
    instances volcal did not build: the market-loading options and sandbox URLs)."""
    known = getattr(ex, "_volcal_config", None)
    if known is not None:
        return dict(known)
    config: dict[str, Any] = {}
    opts = {
        key: ex.options[key]
        for key in ("fetchMarkets", "defaultUnderlying")
        if isinstance(getattr(ex, "options", None), dict) and key in ex.options
    }
    if opts:
        try:
            json.dumps(opts)
        except (TypeError, ValueError):
            opts = {}
    if opts:
        config["options"] = opts
    if getattr(ex, "isSandboxModeEnabled", False):
        config["urls"] = {"api": ex.urls.get("api")}
    return config


def _resolve(exchange: Any, currency: str, *, asynchronous: bool) -> tuple[Any, bool]:
    """(ccxt instance, owned): build one from a name, or take the caller's instance."""
    if isinstance(exchange, str):
        name = exchange.lower()
        if name not in SUPPORTED_EXCHANGES:
            raise ValueError(
                f"unsupported exchange {exchange!r}; supported: {', '.join(SUPPORTED_EXCHANGES)}"
            )
        config = exchange_config(name, currency)
        ex = make_exchange(name, config, asynchronous=asynchronous)
        ex._volcal_config = config
        return ex, True
    if not hasattr(exchange, "load_markets") or not hasattr(exchange, "id"):
        raise TypeError(f"expected an exchange name or a ccxt exchange, got {exchange!r}")
    if exchange.id not in SUPPORTED_EXCHANGES:
        raise ValueError(
            f"unsupported exchange {exchange.id!r}; supported: {', '.join(SUPPORTED_EXCHANGES)}"
        )
    return exchange, False


def _tape_path(tape: str | os.PathLike[str] | None, exchange_id: str, currency: str) -> Path | None:
    if tape is None:
        return None
    p = Path(tape)
    if p.is_dir():
        stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return p / f"{exchange_id}-{currency.upper()}-{stamp}.jsonl.gz"
    return p


# ----------------------------------------------------------------------------------------
# Field parsing and validation
# ----------------------------------------------------------------------------------------


class _Problems:
    """Collects malformed instruments; raises one ChainValidationError listing them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, instrument: str, what: str) -> None:
        self.items.append((instrument, what))

    def raise_if_any(self, exchange_id: str, currency: str) -> None:
        if not self.items:
            return
        details = "; ".join(f"{inst}: {what}" for inst, what in self.items[:10])
        more = len(self.items) - 10
        if more > 0:
            details += f"; ... ({more} more)"
        instruments = list(dict.fromkeys(inst for inst, _ in self.items))
        raise ChainValidationError(
            f"{exchange_id} {currency}: malformed or partial option data ({details})",
            instruments=instruments,
        )


def _num(value: Any, instrument: str, name: str, problems: _Problems) -> float:
    """A raw exchange field as float: None / '' -> NaN; numbers and numeric strings -> float;
    anything else (bools, objects, text) is recorded as a problem and gives NaN."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return math.nan
    if isinstance(value, bool):
        problems.add(instrument, f"{name}={value!r} is not a number")
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    problems.add(instrument, f"{name}={value!r} is not a number")
    return math.nan


def _pick(
    unified: Any, info: Mapping[str, Any], key: str, instrument: str, problems: _Problems
) -> float:
    """ccxt's unified value when it has one, else the raw field (checked by :func:`_num`);
    a raw field that ccxt could not parse is thereby reported, not silently dropped."""
    if isinstance(unified, (int, float)) and not isinstance(unified, bool):
        return float(unified)
    return _num(info.get(key), instrument, key, problems)


def _positive_or_nan(x: float) -> float:
    """Exchanges send 0 for 'no quote' (Bybit, Binance): only prices > 0 are quotes."""
    return x if x > 0 else math.nan


_GREEKS = ("delta", "gamma", "vega", "theta")
_NO_QUOTE_AT_ZERO = frozenset({"exchange_iv_bid", "exchange_iv_ask"})


def _unified_greeks(g: Mapping[str, Any], *, greeks: bool) -> dict[str, Any]:
    """ccxt's unified IVs (and, with ``greeks``, its delta/gamma/vega/theta) of a greeks
    structure, keyed by our column names, for :func:`_fields`."""
    out = {
        "exchange_iv_mark": g.get("markImpliedVolatility"),
        "exchange_iv_bid": g.get("bidImpliedVolatility"),
        "exchange_iv_ask": g.get("askImpliedVolatility"),
    }
    if greeks:
        out.update({f"exchange_{name}": g.get(name) for name in _GREEKS})
    return out


def _fields(
    info: Mapping[str, Any],
    keys: Mapping[str, str],
    instrument: str,
    problems: _Problems,
    unified: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Columns from raw exchange fields: ``keys`` maps a column to its field in ``info``;
    ccxt's unified value ``unified[column]`` wins where it has one (:func:`_pick`). A bid or
    ask IV of 0 means no quote and becomes NaN."""
    out = {}
    for col, key in keys.items():
        value = _pick((unified or {}).get(col), info, key, instrument, problems)
        out[col] = _positive_or_nan(value) if col in _NO_QUOTE_AT_ZERO else value
    return out


def _option_markets(ex: Any, currency: str) -> dict[str, dict[str, Any]]:
    """The loaded option markets of ``currency``, keyed by unified symbol."""
    cur = currency.upper()
    markets = getattr(ex, "markets", None) or {}
    found = {
        sym: m
        for sym, m in markets.items()
        if isinstance(m, dict) and m.get("option") and m.get("base") == cur
    }
    if not found:
        hint = ""
        if ex.id == "binance":
            hint = (
                " (ccxt's binance skips option markets unless options['fetchMarkets']['types'] "
                "includes 'option')"
            )
        raise ChainValidationError(
            f"{ex.id} lists no option markets for {cur}: nothing to fetch, an empty chain is "
            f"an error{hint}",
            field="currency",
        )
    return found


def _market_row(m: Mapping[str, Any], instrument: str, problems: _Problems) -> dict[str, Any]:
    """symbol, expiry, strike, call, contract size from a ccxt option market."""
    expiry_ms = m.get("expiry")
    strike = m.get("strike")
    kind = m.get("optionType")
    if not isinstance(expiry_ms, (int, float)) or isinstance(expiry_ms, bool):
        problems.add(instrument, f"expiry={expiry_ms!r} unusable")
        expiry: Any = pd.NaT
    else:
        expiry = pd.Timestamp(int(expiry_ms), unit="ms", tz="UTC")
    k = _num(strike, instrument, "strike", problems)
    if not (k > 0):
        problems.add(instrument, f"strike={strike!r} not a positive number")
    if kind not in ("call", "put"):
        problems.add(instrument, f"optionType={kind!r} is neither call nor put")
    size = _num(m.get("contractSize"), instrument, "contractSize", problems)
    return {
        "symbol": str(m.get("id") or instrument),
        "expiry": expiry,
        "strike": k,
        "call": kind == "call",
        "contract_size": size,
    }


def _unit_of(m: Mapping[str, Any]) -> QuoteUnit | None:
    settle = str(m.get("settle") or "")
    if settle == m.get("base"):
        return "coin"
    if settle in _USD_LIKE:
        return "usd"
    return None


def _lookup(
    chain_like: Mapping[str, Any],
    markets: Mapping[str, dict[str, Any]],
    all_markets: Mapping[str, Any],
    id_key: str,
    unit: QuoteUnit,
    problems: _Problems,
    *,
    currency: str | None = None,
) -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """Match the entries of a unified result (keyed by symbol) to option markets.

    Returns ``(instrument, market, unified entry, raw info)`` per option of the currency.
    Entries whose instrument is unknown are problems (when ``currency`` is given, only those
    whose exchange name starts with that currency: other underlyings are ignored).
    """
    out = []
    for sym, entry in chain_like.items():
        if not isinstance(entry, dict):
            problems.add(str(sym), f"entry {entry!r} is not an object")
            continue
        raw_info = entry.get("info")
        info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
        instrument = str(info.get(id_key) or sym)
        m = markets.get(sym)
        if m is None:
            if currency is not None:
                other = all_markets.get(sym)
                if isinstance(other, dict) and other.get("base") != currency:
                    continue
                if other is None and not instrument.upper().startswith(currency):
                    continue
            problems.add(instrument, "not a listed option market (unknown or unparseable name)")
            continue
        if _unit_of(m) != unit:
            problems.add(instrument, f"settles in {m.get('settle')!r}, expected {unit} quotes")
            continue
        out.append((instrument, m, entry, info))
    return out


def _to_raw_frame(rows: Sequence[Mapping[str, Any]], unit: QuoteUnit) -> pd.DataFrame:
    """The raw frame for ``OptionChain.from_quotes`` from per-option row dictionaries.

    Columns in a fixed order: ``symbol, expiry, strike, call``, the premiums of ``unit``
    (``bid_coin, ask_coin, mark_coin`` or ``bid_usd, ask_usd, mark_usd``), ``usd_per_coin,
    forward, discount, bid_size, ask_size, open_interest, contract_size, index_price``, then
    the ``exchange_*`` columns present in any row (NaN elsewhere). Rows are sorted by
    expiry, strike, call/put.
    """
    prices = (
        ["bid_coin", "ask_coin", "mark_coin"]
        if unit == "coin"
        else [
            "bid_usd",
            "ask_usd",
            "mark_usd",
        ]
    )
    base = [
        "symbol",
        "expiry",
        "strike",
        "call",
        *prices,
        "usd_per_coin",
        "forward",
        "discount",
        "bid_size",
        "ask_size",
        "open_interest",
        "contract_size",
        "index_price",
    ]
    extra = sorted({k for r in rows for k in r if k.startswith("exchange_")})
    cols = base + extra
    data: dict[str, Any] = {}
    for c in cols:
        values = [r.get(c, math.nan) for r in rows]
        if c == "symbol":
            data[c] = pd.Series(values, dtype=object).astype(str)
        elif c == "expiry":
            data[c] = pd.to_datetime(pd.Series(values, dtype=object), utc=True).astype(
                "datetime64[ns, UTC]"
            )
        elif c == "call":
            data[c] = pd.Series(values, dtype=bool)
        else:
            data[c] = pd.Series(np.asarray(values, dtype=np.float64))
    frame = pd.DataFrame(data, columns=cols)
    if len(frame):
        frame = frame.sort_values(["expiry", "strike", "call"], ascending=[True, True, False])
        frame = frame.reset_index(drop=True)
    return frame


# ----------------------------------------------------------------------------------------
# Per-exchange fetch plans: generators yielding ccxt calls, returning rows
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    phase: Literal["markets", "quotes"] = "quotes"


Plan = Generator[_Call, Any, list[dict[str, Any]]]


def _deribit_plan(ex: Any, cur: str) -> Plan:
    yield _Call("load_markets", phase="markets")
    markets = _option_markets(ex, cur)
    chain = yield _Call("fetch_option_chain", (cur,))
    problems = _Problems()
    rows = []
    for inst, m, opt, info in _lookup(
        chain or {}, markets, ex.markets, "instrument_name", "coin", problems
    ):
        row = _market_row(m, inst, problems)
        fwd = _pick(opt.get("underlyingPrice"), info, "underlying_price", inst, problems)
        if not fwd > 0:
            problems.add(inst, f"underlying_price={info.get('underlying_price')!r} missing")
        row.update(
            bid_coin=_positive_or_nan(
                _pick(opt.get("bidPrice"), info, "bid_price", inst, problems)
            ),
            ask_coin=_positive_or_nan(
                _pick(opt.get("askPrice"), info, "ask_price", inst, problems)
            ),
            mark_coin=_pick(opt.get("markPrice"), info, "mark_price", inst, problems),
            usd_per_coin=fwd,
            forward=fwd,
            discount=1.0,
            open_interest=_pick(opt.get("openInterest"), info, "open_interest", inst, problems),
            index_price=_num(
                info.get("estimated_delivery_price"), inst, "estimated_delivery_price", problems
            ),
            exchange_iv_mark=_num(info.get("mark_iv"), inst, "mark_iv", problems) / 100.0,
            exchange_interest_rate=_num(info.get("interest_rate"), inst, "interest_rate", problems),
        )
        for key, col in (("bid_iv", "exchange_iv_bid"), ("ask_iv", "exchange_iv_ask")):
            if key in info:
                row[col] = _positive_or_nan(_num(info.get(key), inst, key, problems)) / 100.0
        rows.append(row)
    problems.raise_if_any(ex.id, cur)
    return rows


_OKX_FIELDS = {
    "exchange_iv_mark": "markVol",
    "exchange_iv_bid": "bidVol",
    "exchange_iv_ask": "askVol",
} | {f"exchange_{name}": f"{name}BS" for name in _GREEKS}
_BYBIT_FIELDS = {
    "exchange_iv_mark": "markIv",
    "exchange_iv_bid": "bid1Iv",
    "exchange_iv_ask": "ask1Iv",
} | {f"exchange_{name}": name for name in _GREEKS}
_BINANCE_FIELDS = {
    "exchange_iv_mark": "markIV",
    "exchange_iv_bid": "bidIV",
    "exchange_iv_ask": "askIV",
} | {f"exchange_{name}": name for name in _GREEKS}
"""Raw fields of each exchange's IVs and Black-Scholes greeks, by column."""


def _okx_plan(ex: Any, cur: str) -> Plan:
    uly = f"{cur}-USD"
    yield _Call("load_markets", phase="markets")
    markets = _option_markets(ex, cur)
    chain = yield _Call("fetch_option_chain", (cur,))
    greeks = yield _Call("fetch_all_greeks", (None, {"uly": uly}))
    marks = yield _Call("fetch_mark_prices", (None, {"type": "option", "uly": uly}))
    greeks = _index_by_symbol(greeks)
    marks = _index_by_symbol(marks)
    problems = _Problems()
    rows = []
    matched = _lookup(chain or {}, markets, ex.markets, "instId", "coin", problems)
    # fwdPx is per expiry: take it from the option itself, else from its expiry's siblings
    fwd_by_expiry: dict[Any, list[float]] = {}
    for inst, m, _, _ in matched:
        g = greeks.get(m["symbol"], {})
        f = _num((g.get("info") or {}).get("fwdPx"), inst, "fwdPx", problems)
        if f > 0:
            fwd_by_expiry.setdefault(m.get("expiry"), []).append(f)
    for inst, m, opt, info in matched:
        row = _market_row(m, inst, problems)
        g = greeks.get(m["symbol"], {})
        ginfo = g.get("info") or {}
        fwd = _num(ginfo.get("fwdPx"), inst, "fwdPx", problems)
        if not fwd > 0:
            siblings = fwd_by_expiry.get(m.get("expiry"))
            if siblings:
                fwd = float(np.median(siblings))
            else:
                problems.add(inst, "no fwdPx for its expiry in opt-summary")
        mk = marks.get(m["symbol"], {})
        mult = _num((m.get("info") or {}).get("ctMult"), inst, "ctMult", problems)
        if mult > 0:
            row["contract_size"] = row["contract_size"] * mult
        row.update(
            bid_coin=_positive_or_nan(_pick(opt.get("bidPrice"), info, "bidPx", inst, problems)),
            ask_coin=_positive_or_nan(_pick(opt.get("askPrice"), info, "askPx", inst, problems)),
            mark_coin=_pick(mk.get("markPrice"), mk.get("info") or {}, "markPx", inst, problems),
            usd_per_coin=fwd,
            forward=fwd,
            discount=1.0,
            bid_size=_num(info.get("bidSz"), inst, "bidSz", problems),
            ask_size=_num(info.get("askSz"), inst, "askSz", problems),
        )
        # ccxt's unified OKX delta/gamma/... are the coin-denominated ("PA") greeks: keep BS ones
        row.update(_fields(ginfo, _OKX_FIELDS, inst, problems, _unified_greeks(g, greeks=False)))
        rows.append(row)
    problems.raise_if_any(ex.id, cur)
    return rows


def _bybit_plan(ex: Any, cur: str) -> Plan:
    yield _Call("load_markets", phase="markets")
    markets = _option_markets(ex, cur)
    chain = yield _Call("fetch_option_chain", (cur,))
    problems = _Problems()
    rows = []
    for inst, m, opt, info in _lookup(chain or {}, markets, ex.markets, "symbol", "usd", problems):
        row = _market_row(m, inst, problems)
        fwd = _pick(opt.get("underlyingPrice"), info, "underlyingPrice", inst, problems)
        if not fwd > 0:
            problems.add(inst, f"underlyingPrice={info.get('underlyingPrice')!r} missing")
        bid_size = _num(info.get("bid1Size"), inst, "bid1Size", problems)
        ask_size = _num(info.get("ask1Size"), inst, "ask1Size", problems)
        bid = _pick(opt.get("bidPrice"), info, "bid1Price", inst, problems)
        ask = _pick(opt.get("askPrice"), info, "ask1Price", inst, problems)
        row.update(
            bid_usd=_positive_or_nan(bid) if bid_size != 0 else math.nan,
            ask_usd=_positive_or_nan(ask) if ask_size != 0 else math.nan,
            mark_usd=_pick(opt.get("markPrice"), info, "markPrice", inst, problems),
            usd_per_coin=fwd,
            forward=fwd,
            discount=1.0,
            bid_size=bid_size,
            ask_size=ask_size,
            open_interest=_pick(opt.get("openInterest"), info, "openInterest", inst, problems),
            index_price=_num(info.get("indexPrice"), inst, "indexPrice", problems),
        )
        unified = {"exchange_iv_mark": opt.get("impliedVolatility")}
        row.update(_fields(info, _BYBIT_FIELDS, inst, problems, unified))
        rows.append(row)
    problems.raise_if_any(ex.id, cur)
    return rows


def _binance_plan(ex: Any, cur: str) -> Plan:
    yield _Call("load_markets", phase="markets")
    markets = _option_markets(ex, cur)
    tickers = yield _Call("fetch_tickers", (None, {"type": "option"}))
    greeks = yield _Call("fetch_all_greeks")
    greeks = _index_by_symbol(greeks)
    problems = _Problems()
    rows = []
    for inst, m, tk, info in _lookup(
        tickers or {}, markets, ex.markets, "symbol", "usd", problems, currency=cur
    ):
        row = _market_row(m, inst, problems)
        g = greeks.get(m["symbol"], {})
        ginfo = g.get("info") or {}
        index = _num(info.get("exercisePrice"), inst, "exercisePrice", problems)
        if not index > 0:
            problems.add(inst, f"exercisePrice={info.get('exercisePrice')!r} missing")
        row.update(
            bid_usd=_positive_or_nan(_pick(tk.get("bid"), info, "bidPrice", inst, problems)),
            ask_usd=_positive_or_nan(_pick(tk.get("ask"), info, "askPrice", inst, problems)),
            mark_usd=_pick(g.get("markPrice"), ginfo, "markPrice", inst, problems),
            usd_per_coin=index,
            forward=math.nan,  # none published: the chain infers forward and discount by parity
            discount=math.nan,
            index_price=index,
        )
        row.update(_fields(ginfo, _BINANCE_FIELDS, inst, problems, _unified_greeks(g, greeks=True)))
        rows.append(row)
    problems.raise_if_any(ex.id, cur)
    return rows


def _index_by_symbol(result: Any) -> dict[str, dict[str, Any]]:
    """ccxt returns dicts keyed by symbol (sometimes lists): a dict keyed by symbol."""
    if isinstance(result, dict):
        return {str(k): v for k, v in result.items() if isinstance(v, dict)}
    if isinstance(result, list):
        return {str(v.get("symbol")): v for v in result if isinstance(v, dict)}
    return {}


_PLANS: dict[str, Callable[[Any, str], Plan]] = {
    "deribit": _deribit_plan,
    "okx": _okx_plan,
    "bybit": _bybit_plan,
    "binance": _binance_plan,
}


# ----------------------------------------------------------------------------------------
# Drivers: run a plan synchronously or asynchronously, with retries
# ----------------------------------------------------------------------------------------


class _Session:
    """State of one fetch: the instance, its tape and recorder, the quote-phase entries."""

    def __init__(
        self, ex: Any, currency: str, tape: str | os.PathLike[str] | None, retry: RetryPolicy | None
    ) -> None:
        self.ex = ex
        self.currency = currency.upper()
        self.retry = retry or RetryPolicy()
        path = _tape_path(tape, ex.id, self.currency)
        header = new_header(
            ex.id,
            _replay_config(ex),
            currency=self.currency,
            asynchronous=is_async_exchange(ex),
            kind="fetch_chain",
        )
        self.tape = Tape(header=header, path=path)
        if path is not None:
            self.tape.write(path)  # the file exists from the start, header only
        self.recorder = TapeRecorder(ex, self.tape)
        self.quote_received: list[int] = []

    def endpoint(self) -> str:
        if self.recorder.last_request is None:
            return "(no request sent)"
        method, url = self.recorder.last_request
        return f"{str(method).upper()} {url}"

    def on_failure(self, exc: Exception, call: _Call, attempt: int) -> float:
        """Seconds to wait before retrying ``call``, or raise the final error."""
        import ccxt

        if isinstance(exc, VolcalError):
            raise exc
        where = f"{self.ex.id} {call.method}({self.currency}) at {self.endpoint()}"
        if isinstance(exc, ccxt.NetworkError):
            if attempt < self.retry.max_retries:
                return self.retry.delay(attempt)
            raise FetchError(
                f"{where}: failed after {attempt + 1} attempts; last cause "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(exc, ccxt.BadResponse):
            raise ChainValidationError(
                f"{where}: malformed response ({type(exc).__name__}: {exc})"
            ) from exc
        if isinstance(exc, ccxt.BaseError):
            raise FetchError(
                f"{where}: {type(exc).__name__} (an exchange error, not retried): {exc}"
            ) from exc
        raise ChainValidationError(
            f"{where}: ccxt could not parse the response ({type(exc).__name__}: {exc})"
        ) from exc

    def note(self, call: _Call, start: int) -> None:
        if call.phase == "quotes":
            self.quote_received += self.recorder.received_since(start)

    def finish(self, rows: list[dict[str, Any]]) -> RawQuotes:
        if not rows:
            raise ChainValidationError(
                f"{self.ex.id} {self.currency}: the exchange returned no option quotes; an "
                f"empty chain is an error",
                field="currency",
            )
        unit = _QUOTE_UNIT[self.ex.id]
        frame = _to_raw_frame(rows, unit)
        stamp = max(self.quote_received) if self.quote_received else time.time_ns()
        as_of = pd.Timestamp(stamp, unit="ns", tz="UTC")
        return RawQuotes(
            frame=frame,
            as_of=as_of,
            exchange=self.ex.id,
            underlying=self.currency,
            quote_unit=unit,
            tape=self.tape,
        )


def _run_sync(session: _Session) -> RawQuotes:
    plan = _PLANS[session.ex.id](session.ex, session.currency)
    value: Any = None
    with session.recorder:
        while True:
            try:
                call = plan.send(value)
            except StopIteration as stop:
                rows = stop.value
                break
            attempt = 0
            while True:
                start = len(session.tape.entries)
                try:
                    value = getattr(session.ex, call.method)(*call.args, **call.kwargs)
                    session.note(call, start)
                    break
                except Exception as exc:
                    _sleep(session.on_failure(exc, call, attempt))
                    attempt += 1
    return session.finish(rows)


async def _run_async(session: _Session) -> RawQuotes:
    plan = _PLANS[session.ex.id](session.ex, session.currency)
    value: Any = None
    with session.recorder:
        while True:
            try:
                call = plan.send(value)
            except StopIteration as stop:
                rows = stop.value
                break
            attempt = 0
            while True:
                start = len(session.tape.entries)
                try:
                    value = await getattr(session.ex, call.method)(*call.args, **call.kwargs)
                    session.note(call, start)
                    break
                except Exception as exc:
                    await _asleep(session.on_failure(exc, call, attempt))
                    attempt += 1
    return session.finish(rows)


# ----------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------


def fetch_quotes(
    exchange: Any,
    currency: str,
    *,
    tape: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
) -> RawQuotes:
    """Fetch the option quotes of ``currency`` and normalise them (no ``OptionChain`` yet).

    Parameters are those of :func:`fetch_chain`. Returns :class:`RawQuotes`.
    """
    ex, owned = _resolve(exchange, currency, asynchronous=False)
    if is_async_exchange(ex):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(afetch_quotes(ex, currency, tape=tape, retry=retry))
        raise TypeError(
            "fetch_quotes/fetch_chain got a ccxt.async_support exchange inside a running event "
            "loop: await afetch_chain(...) instead"
        )
    try:
        return _run_sync(_Session(ex, currency, tape, retry))
    finally:
        if owned:
            ex.close()


async def afetch_quotes(
    exchange: Any,
    currency: str,
    *,
    tape: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
) -> RawQuotes:
    """Async :func:`fetch_quotes`: a name builds a ``ccxt.async_support`` instance (closed
    afterwards); a sync instance runs in a worker thread."""
    ex, owned = _resolve(exchange, currency, asynchronous=True)
    if not is_async_exchange(ex):
        return await asyncio.to_thread(fetch_quotes, ex, currency, tape=tape, retry=retry)
    try:
        return await _run_async(_Session(ex, currency, tape, retry))
    finally:
        if owned:
            await ex.close()


def fetch_chain(
    exchange: Any,
    currency: str,
    *,
    tape: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
) -> OptionChain:
    """Fetch the option chain of ``currency`` from an exchange.

    Parameters
    ----------
    exchange:
        ``"deribit"``, ``"okx"``, ``"bybit"`` or ``"binance"`` (volcal builds a ccxt instance
        with the rate limiter on, see :func:`exchange_config`, and closes it afterwards), or
        a ready ccxt instance, sync or ``ccxt.async_support`` (left open), e.g.
        ``volcal.replay(tape)``. An async instance is run to completion with
        :func:`asyncio.run` (inside a running loop, use :func:`afetch_chain`).
    currency:
        Underlying coin code, e.g. ``"BTC"``.
    tape:
        Where to record the raw HTTP responses (a ``.jsonl.gz`` file path, or an existing
        folder to create a time-stamped file in). Without it the tape is kept in memory only.
    retry:
        Backoff for network-type failures (default :class:`RetryPolicy`).

    Returns
    -------
    OptionChain
        ``OptionChain.from_quotes`` of the normalised quotes, ``as_of`` the receive time of
        the last quote response (so a replay gives the same chain as the live fetch).

    Raises
    ------
    FetchError
        Network failures after the retries, or an exchange error (not retried); names
        exchange, endpoint and cause.
    ChainValidationError
        Malformed or partial responses (lists the instruments), or no options at all.
    ReplayError
        A replayed exchange was asked for a request that is not on its tape.
    """
    return fetch_quotes(exchange, currency, tape=tape, retry=retry).to_chain()


async def afetch_chain(
    exchange: Any,
    currency: str,
    *,
    tape: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
) -> OptionChain:
    """Async :func:`fetch_chain` (same parameters)."""
    raw = await afetch_quotes(exchange, currency, tape=tape, retry=retry)
    return raw.to_chain()


async def afetch_chains(
    requests: Iterable[tuple[Any, str]],
    *,
    tape_dir: str | os.PathLike[str] | None = None,
    retry: RetryPolicy | None = None,
    return_exceptions: bool = False,
) -> list[Any]:
    """Fetch several ``(exchange, currency)`` chains concurrently.

    Parameters
    ----------
    requests:
        Pairs like ``("deribit", "BTC")`` or ``(ccxt_instance, "ETH")``. Each name gets its
        own ``ccxt.async_support`` instance; pairs sharing one ready instance run one after
        the other (a ccxt instance is not safe for concurrent recording).
    tape_dir:
        Folder to write one tape per fetch in (created if missing).
    retry:
        Backoff for network-type failures.
    return_exceptions:
        Return each failure in place of its chain instead of raising the first one.

    Returns
    -------
    list
        The chains, in the order of ``requests``.
    """
    pairs = list(requests)
    if tape_dir is not None:
        Path(tape_dir).mkdir(parents=True, exist_ok=True)
    groups: dict[int, list[int]] = {}
    for i, (exchange, _) in enumerate(pairs):
        key = -1 - i if isinstance(exchange, str) else id(exchange)
        groups.setdefault(key, []).append(i)
    results: list[Any] = [None] * len(pairs)

    async def run_group(indices: list[int]) -> None:
        for i in indices:
            exchange, currency = pairs[i]
            try:
                results[i] = await afetch_chain(exchange, currency, tape=tape_dir, retry=retry)
            except Exception as exc:
                if not return_exceptions:
                    raise
                results[i] = exc

    await asyncio.gather(*(run_group(ix) for ix in groups.values()))
    return results
