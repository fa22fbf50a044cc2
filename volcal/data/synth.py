"""Synthetic exchanges: documented-format responses served to a real ccxt instance, recorded
as tapes.

Two uses:

* the shipped demo tapes ``data/deribit-BTC-synthetic.jsonl.gz`` and
  ``data/deribit-ETH-synthetic.jsonl.gz`` (regenerate with
  ``python -m volcal.data.synth --out data``), a Deribit-like chain priced from SVI smiles
  (:func:`synthetic_deribit_chain`);
* test tapes: :func:`route_responder` answers ccxt's requests by URL path from payloads built
  in the exchanges' documented response formats, and :func:`record_tape` runs
  :func:`volcal.data.exchanges.fetch_quotes` against it, so every tape is written by the same
  recording code as a live fetch.

The model (all choices are documented in ``data/README.md``):

* expiries at 08:00 UTC: the next 3 days, the next 3 Fridays, the last Fridays of the next 3
  months and the quarterlies (last Friday of Mar/Jun/Sep/Dec) up to one year;
* forward ``F(t) = S exp(basis t)``; Deribit's ``underlying_index`` is the future of the
  expiry for monthlies and quarterlies, the synthetic ``SYN.<coin>-<date>`` index otherwise;
* smile per expiry: raw SVI ``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))``
  (Gatheral 2004) with the parameters of the SSVI slice (Gatheral & Jacquier 2014, eq. 4.1)
  of ATM total variance ``theta(t) = atm_vol(t)^2 t`` and ``phi(theta) = eta / theta^gamma``:
  ``a = theta (1 - rho^2) / 2, b = theta phi / 2, m = -rho / phi,
  sigma = sqrt(1 - rho^2) / phi`` -- free of static arbitrage for ``eta (1 + |rho|) <= 2``;
* premiums in coin, ``price_coin = Black76(F, K, t, vol) / F`` (no discounting); bid/ask
  on Deribit's tick grid (0.0001 coin up to 0.005, 0.0005 above: Deribit, "6 July 2023"
  tick size change) around the mark, the half-spread in vol points widening with
  ``|k| / (vol sqrt(t))``; far wings lose their bid; a few quotes are missing at random;
* open interest decaying away from the money, larger on monthlies and quarterlies.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from volcal.data.tape import Responder, TransportReply, serve
from volcal.errors import ReplayError

__all__ = [
    "SyntheticMarket",
    "deribit_envelope",
    "deribit_tick",
    "record_tape",
    "route_responder",
    "svi_total_variance",
    "synthetic_deribit_chain",
    "synthetic_deribit_responder",
    "write_synthetic_deribit_tape",
]

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


# ----------------------------------------------------------------------------------------
# Serving documented payloads to ccxt
# ----------------------------------------------------------------------------------------

Route = Callable[[dict[str, str]], Any]


def route_responder(
    routes: Mapping[str, Any],
    *,
    received_ns: int,
    step_ns: int = 1_000_000,
) -> Responder:
    """A responder answering by URL path suffix.

    Parameters
    ----------
    routes:
        ``{"/public/get_instruments": payload, ...}``: a JSON-ready object, a
        :class:`~volcal.data.tape.TransportReply`, or a callable of the query dictionary
        returning either; or a *tuple* of those, served in turn (the last one repeated).
    received_ns:
        Receive time of the first response (UTC epoch ns); each later one is ``step_ns``
        later, so tapes are deterministic.
    """
    state = {"n": 0}
    counters: dict[str, int] = {}

    def respond(method: str, url: str, body: str | None) -> TransportReply:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        for suffix, target in routes.items():
            if parts.path.endswith(suffix):
                if isinstance(target, tuple):
                    i = counters.get(suffix, 0)
                    counters[suffix] = i + 1
                    target = target[min(i, len(target) - 1)]
                value = target(query) if callable(target) else target
                t_ns = received_ns + state["n"] * step_ns
                state["n"] += 1
                if isinstance(value, TransportReply):
                    return TransportReply(
                        status=value.status,
                        reason=value.reason,
                        headers=value.headers,
                        text=value.text,
                        error=value.error,
                        received_ns=t_ns,
                    )
                return TransportReply(
                    text=json.dumps(value, separators=(",", ":")), received_ns=t_ns
                )
        raise ReplayError(f"synthetic exchange has no route for {method} {url}")

    return respond


def record_tape(
    exchange_id: str,
    currency: str,
    responder: Responder,
    path: str | Path,
    *,
    header: Mapping[str, Any] | None = None,
) -> Any:
    """Run :func:`volcal.data.exchanges.fetch_quotes` for ``exchange_id`` / ``currency``
    against ``responder`` (instead of the network), recording the tape to ``path``.

    The tape header gets ``created`` = the fetch's ``as_of`` (deterministic files) and the
    ``header`` items. Returns the :class:`~volcal.data.exchanges.RawQuotes`.
    """
    from volcal.data.exchanges import exchange_config, fetch_quotes
    from volcal.data.tape import make_exchange

    config = exchange_config(exchange_id, currency)
    ex = make_exchange(exchange_id, config, asynchronous=False)
    ex._volcal_config = config
    serve(ex, responder)
    try:
        raw = fetch_quotes(ex, currency, tape=path)
    finally:
        ex.close()
    raw.tape.header["created"] = raw.as_of.isoformat()
    raw.tape.header.update(header or {})
    raw.tape.write(path)
    return raw


# ----------------------------------------------------------------------------------------
# Deribit payloads (https://docs.deribit.com: public/get_currencies, public/get_instruments,
# public/get_book_summary_by_currency)
# ----------------------------------------------------------------------------------------


def deribit_envelope(result: Any, received_ns: int) -> dict[str, Any]:
    """Deribit's JSON-RPC response envelope around ``result``."""
    us_out = received_ns // 1000
    return {
        "jsonrpc": "2.0",
        "result": result,
        "usIn": us_out - 850,
        "usOut": us_out,
        "usDiff": 850,
        "testnet": False,
    }


def deribit_currency(code: str, name: str) -> dict[str, Any]:
    """A ``public/get_currencies`` row."""
    return {
        "currency": code,
        "currency_long": name,
        "coin_type": name.upper(),
        "fee_precision": 4,
        "min_confirmations": 1,
        "min_withdrawal_fee": 0.0001,
        "withdrawal_fee": 0.0001,
        "withdrawal_priorities": [],
        "in_cross_collateral_pool": True,
    }


def deribit_date(expiry: pd.Timestamp) -> str:
    """Deribit's date code, e.g. ``26JUN26``."""
    return f"{expiry.day}{_MONTHS[expiry.month - 1]}{expiry.year % 100:02d}"


def deribit_option_instrument(
    currency: str, expiry: pd.Timestamp, strike: float, call: bool, created_ms: int
) -> dict[str, Any]:
    """A ``public/get_instruments`` row for an inverse (coin-settled) option."""
    letter = "C" if call else "P"
    period = "day" if (expiry.day_of_week != 4) else "week"
    return {
        "instrument_name": f"{currency}-{deribit_date(expiry)}-{strike:g}-{letter}",
        "kind": "option",
        "option_type": "call" if call else "put",
        "strike": float(strike),
        "expiration_timestamp": int(expiry.value // 1_000_000),
        "creation_timestamp": created_ms,
        "settlement_period": period,
        "base_currency": currency,
        "counter_currency": "USD",
        "quote_currency": currency,
        "settlement_currency": currency,
        "contract_size": 1.0,
        "min_trade_amount": 0.1 if currency == "BTC" else 1.0,
        "tick_size": 0.0001,
        "tick_size_steps": [{"above_price": 0.005, "tick_size": 0.0005}],
        "maker_commission": 0.0003,
        "taker_commission": 0.0003,
        "block_trade_commission": 0.0003,
        "block_trade_min_trade_amount": 25,
        "block_trade_tick_size": 0.0001,
        "is_active": True,
        "rfq": False,
        "price_index": f"{currency.lower()}_usd",
    }


def deribit_future_instrument(
    currency: str, expiry: pd.Timestamp | None, created_ms: int
) -> dict[str, Any]:
    """A ``public/get_instruments`` row for an inverse future (``None`` = perpetual)."""
    name = f"{currency}-PERPETUAL" if expiry is None else f"{currency}-{deribit_date(expiry)}"
    return {
        "instrument_name": name,
        "kind": "future",
        "future_type": "reversed",
        "instrument_type": "reversed",
        "settlement_period": "perpetual" if expiry is None else "month",
        "expiration_timestamp": 32503708800000 if expiry is None else int(expiry.value // 10**6),
        "creation_timestamp": created_ms,
        "base_currency": currency,
        "counter_currency": "USD",
        "quote_currency": "USD",
        "settlement_currency": currency,
        "contract_size": 10.0 if currency == "BTC" else 1.0,
        "min_trade_amount": 10.0 if currency == "BTC" else 1.0,
        "tick_size": 0.5 if currency == "BTC" else 0.05,
        "maker_commission": 0.0,
        "taker_commission": 0.0005,
        "max_leverage": 50,
        "is_active": True,
        "price_index": f"{currency.lower()}_usd",
    }


def deribit_tick(price: float) -> float:
    """Deribit's BTC/ETH option tick: 0.0001 coin up to 0.005, 0.0005 above."""
    return 0.0001 if price <= 0.005 else 0.0005


# ----------------------------------------------------------------------------------------
# The SVI model of the synthetic chain
# ----------------------------------------------------------------------------------------


def svi_total_variance(
    k: np.ndarray[Any, np.dtype[np.float64]] | float,
    a: float,
    b: float,
    rho: float,
    m: float,
    sigma: float,
) -> Any:
    """Raw SVI total variance ``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))``
    (Gatheral 2004), ``k = ln(K / F)``."""
    km = np.asarray(k, dtype=float) - m
    return a + b * (rho * km + np.sqrt(km * km + sigma * sigma))


@dataclass(frozen=True)
class SyntheticMarket:
    """Parameters of one synthetic Deribit currency.

    Attributes
    ----------
    currency:
        Coin code.
    spot:
        Index price, USD.
    basis:
        Annualised forward basis: ``F(t) = spot exp(basis t)``.
    atm_short, atm_long, atm_decay:
        ATM vol term structure ``atm_long + (atm_short - atm_long) exp(-t / atm_decay)``.
    rho:
        SSVI correlation (skew), in (-1, 1).
    eta, gamma:
        SSVI curvature ``phi(theta) = eta / theta^gamma``.
    strike_steps:
        Strike spacing by expiry class (``daily``, ``weekly``, ``monthly``, ``quarterly``).
    """

    currency: str
    spot: float
    basis: float
    atm_short: float
    atm_long: float
    atm_decay: float
    rho: float
    eta: float
    gamma: float
    strike_steps: Mapping[str, float]

    def atm_vol(self, t: float) -> float:
        """ATM implied vol (decimal) at maturity ``t`` years."""
        return self.atm_long + (self.atm_short - self.atm_long) * math.exp(-t / self.atm_decay)

    def svi(self, t: float) -> tuple[float, float, float, float, float]:
        """Raw SVI ``(a, b, rho, m, sigma)`` of the SSVI slice at ``t``."""
        theta = self.atm_vol(t) ** 2 * t
        phi = self.eta / theta**self.gamma
        r = self.rho
        return (theta * (1 - r * r) / 2, theta * phi / 2, r, -r / phi, math.sqrt(1 - r * r) / phi)


BTC_MARKET = SyntheticMarket(
    currency="BTC",
    spot=96_250.0,
    basis=0.065,
    atm_short=0.52,
    atm_long=0.50,
    atm_decay=0.08,
    rho=-0.18,
    eta=0.9,
    gamma=0.45,
    strike_steps={"daily": 1000.0, "weekly": 2000.0, "monthly": 5000.0, "quarterly": 10000.0},
)
ETH_MARKET = SyntheticMarket(
    currency="ETH",
    spot=3_340.0,
    basis=0.055,
    atm_short=0.70,
    atm_long=0.66,
    atm_decay=0.08,
    rho=-0.12,
    eta=0.95,
    gamma=0.45,
    strike_steps={"daily": 25.0, "weekly": 50.0, "monthly": 100.0, "quarterly": 200.0},
)
MARKETS = {"BTC": BTC_MARKET, "ETH": ETH_MARKET}
DEFAULT_AS_OF = pd.Timestamp("2026-01-14T06:00:00Z")


def _last_friday(year: int, month: int) -> pd.Timestamp:
    end = pd.Timestamp(year=year, month=month, day=1, tz="UTC") + pd.offsets.MonthEnd(0)
    return end - pd.Timedelta(days=(end.day_of_week - 4) % 7)


def deribit_expiries(as_of: pd.Timestamp) -> list[tuple[pd.Timestamp, str]]:
    """Deribit-like expiry set after ``as_of``: ``(expiry at 08:00 UTC, class)``.

    From one day after ``as_of``: the next 3 days, the next 3 Fridays, the last Fridays of
    the next 3 months and the quarterly last Fridays up to one year.
    """
    out: dict[pd.Timestamp, str] = {}
    first = as_of + pd.Timedelta(days=1)  # the shortest expiry is at least one day away
    day0 = first.normalize() + pd.Timedelta(hours=8)
    if day0 < first:
        day0 += pd.Timedelta(days=1)
    for i in range(3):
        out[day0 + pd.Timedelta(days=i)] = "daily"
    friday = day0 + pd.Timedelta(days=(4 - day0.day_of_week) % 7)
    for i in range(3):
        out.setdefault(friday + pd.Timedelta(weeks=i), "weekly")
    horizon = as_of + pd.Timedelta(days=365)
    y, mth = as_of.year, as_of.month
    for i in range(15):
        yy, mm = y + (mth - 1 + i) // 12, (mth - 1 + i) % 12 + 1
        exp = _last_friday(yy, mm) + pd.Timedelta(hours=8)
        if exp <= as_of or exp > horizon:
            continue
        if mm in (3, 6, 9, 12):
            out[exp] = "quarterly"
        elif i <= 3:
            out[exp] = "monthly"
    return sorted(out.items())


def synthetic_deribit_chain(
    market: SyntheticMarket, as_of: pd.Timestamp, seed: int
) -> pd.DataFrame:
    """The synthetic chain of ``market`` at ``as_of``: one row per option with the model
    (``forward, t, vol, mark_coin``) and the quoted fields (``bid_coin, ask_coin,
    open_interest, underlying_index``...). Deterministic for a ``seed``."""
    from volcal.black import black_greeks, black_price

    rng = np.random.default_rng(seed)
    rows = []
    for expiry, kind in deribit_expiries(as_of):
        t = (expiry - as_of).value / (365 * 86_400e9)
        fwd = round(market.spot * math.exp(market.basis * t), 2)
        a, b, rho, m, sig = market.svi(t)
        step = market.strike_steps[kind]
        sd = market.atm_vol(t) * math.sqrt(t)
        lo = fwd * math.exp(-min(max(3.0 * sd, 0.06), 1.6))
        hi = fwd * math.exp(min(max(3.5 * sd, 0.06), 1.4))
        strikes = np.arange(math.ceil(lo / step) * step, hi + step / 2, step)
        if len(strikes) > 40:  # Deribit lists coarser grids far out
            strikes = strikes[:: math.ceil(len(strikes) / 40)]
        k = np.log(strikes / fwd)
        vol = np.sqrt(svi_total_variance(k, a, b, rho, m, sig) / t)
        futures = kind in ("monthly", "quarterly")
        index_name = (
            f"{market.currency}-{deribit_date(expiry)}"
            if futures
            else f"SYN.{market.currency}-{deribit_date(expiry)}"
        )
        oi_scale = {"daily": 40.0, "weekly": 150.0, "monthly": 600.0, "quarterly": 1200.0}[kind]
        if market.currency == "ETH":
            oi_scale *= 12.0
        for call in (True, False):
            price_usd = np.asarray(black_price(fwd, strikes, t, vol, call), dtype=float)
            mark = price_usd / fwd
            vega_coin = np.asarray(black_greeks(fwd, strikes, t, vol, call).vega, dtype=float)
            vega_coin = vega_coin / fwd  # coin per unit vol
            z = np.abs(k) / sd
            half_spread_vol = 0.003 + 0.003 * z + 0.001 * z * z
            for j, strike in enumerate(strikes):
                mk = float(mark[j])
                hs = max(float(vega_coin[j]) * half_spread_vol[j], 0.5 * deribit_tick(mk))
                lo_px, hi_px = mk - hs, mk + hs
                bid: float | None = math.floor(lo_px / deribit_tick(lo_px) + 1e-9) * deribit_tick(
                    lo_px
                )
                ask: float | None = max(
                    math.ceil(hi_px / deribit_tick(hi_px) - 1e-9) * deribit_tick(hi_px), 0.0001
                )
                if bid is not None and bid < 0.0001:
                    bid = None
                if rng.random() < 0.04:
                    bid = None
                if rng.random() < 0.02:
                    ask = None
                otm = (strike >= fwd) == call
                oi = oi_scale * math.exp(-0.5 * (k[j] / max(sd, 0.02)) ** 2 * (0.6 if otm else 1.4))
                oi = round(float(oi * rng.lognormal(0.0, 0.5)), 1)
                rows.append(
                    {
                        "expiry": expiry,
                        "kind": kind,
                        "t": t,
                        "forward": fwd,
                        "strike": float(strike),
                        "call": call,
                        "vol": float(vol[j]),
                        "mark_coin": round(mk, 8),
                        "bid_coin": None if bid is None else round(bid, 4),
                        "ask_coin": None if ask is None else round(ask, 4),
                        "open_interest": oi,
                        "underlying_index": index_name,
                    }
                )
    return pd.DataFrame(rows)


def _none_if_nan(x: Any) -> float | None:
    """JSON null for a missing quote."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def synthetic_deribit_responder(
    markets: Sequence[SyntheticMarket], as_of: pd.Timestamp, seed: int
) -> tuple[Responder, dict[str, pd.DataFrame]]:
    """A Deribit-like responder for ``markets`` at ``as_of`` and the model chains behind it."""
    created_ms = int((as_of - pd.Timedelta(days=400)).value // 10**6)
    received_ns = int(as_of.value)
    chains = {
        mk.currency: synthetic_deribit_chain(mk, as_of, seed + i) for i, mk in enumerate(markets)
    }
    instruments: list[dict[str, Any]] = []
    summaries: dict[str, list[dict[str, Any]]] = {}
    for mk in markets:
        chain = chains[mk.currency]
        instruments.append(deribit_future_instrument(mk.currency, None, created_ms))
        for exp in sorted(
            set(chain.loc[chain["underlying_index"].str.startswith(mk.currency), "expiry"])
        ):
            instruments.append(deribit_future_instrument(mk.currency, exp, created_ms))
        rows = []
        records: list[dict[str, Any]] = [
            {str(k): v for k, v in rec.items()} for rec in chain.to_dict(orient="records")
        ]
        for r in records:
            inst = deribit_option_instrument(
                mk.currency, r["expiry"], float(r["strike"]), bool(r["call"]), created_ms
            )
            inst["instrument_id"] = 100_000 + len(instruments)
            instruments.append(inst)
            bid = _none_if_nan(r["bid_coin"])
            ask = _none_if_nan(r["ask_coin"])
            mid = None if bid is None or ask is None else round((bid + ask) / 2, 8)
            rows.append(
                {
                    "instrument_name": inst["instrument_name"],
                    "base_currency": mk.currency,
                    "quote_currency": mk.currency,
                    "creation_timestamp": received_ns // 10**6,
                    "underlying_index": r["underlying_index"],
                    "underlying_price": r["forward"],
                    "estimated_delivery_price": mk.spot,
                    "interest_rate": 0.0,
                    "mark_price": r["mark_coin"],
                    "mark_iv": round(float(r["vol"]) * 100, 2),
                    "bid_price": bid,
                    "ask_price": ask,
                    "mid_price": mid,
                    "open_interest": r["open_interest"],
                    "volume": 0.0,
                    "volume_usd": 0.0,
                    "price_change": None,
                    "last": None,
                    "high": None,
                    "low": None,
                }
            )
        summaries[mk.currency] = rows
    currencies = [deribit_currency(mk.currency, mk.currency.title()) for mk in markets]
    routes: dict[str, Any] = {
        "/public/get_currencies": lambda q: deribit_envelope(currencies, received_ns),
        "/public/get_instruments": lambda q: deribit_envelope(instruments, received_ns),
        "/public/get_book_summary_by_currency": lambda q: deribit_envelope(
            summaries.get(q.get("currency", ""), []), received_ns
        ),
    }
    # markets at as_of - 2 ms, then - 1 ms: the quotes (third response) arrive at as_of
    return route_responder(routes, received_ns=received_ns - 2_000_000), chains


def write_synthetic_deribit_tape(
    currency: str,
    path: str | Path,
    *,
    as_of: pd.Timestamp = DEFAULT_AS_OF,
    seed: int = 20260114,
) -> Any:
    """Write the synthetic Deribit tape of ``currency`` ("BTC" or "ETH") to ``path``.

    The fetch is a real :func:`~volcal.data.exchanges.fetch_quotes` through ccxt against
    the synthetic responder; the tape header says ``"synthetic": true`` and names the
    generator and seed. Returns the :class:`~volcal.data.exchanges.RawQuotes`.
    """
    market = MARKETS[currency.upper()]
    responder, _ = synthetic_deribit_responder([market], as_of, seed)
    header = {
        "synthetic": True,
        "generator": "volcal.data.synth.write_synthetic_deribit_tape",
        "seed": seed,
        "model": {
            "spot": market.spot,
            "basis": market.basis,
            "atm_vol": [market.atm_short, market.atm_long, market.atm_decay],
            "ssvi": {"rho": market.rho, "eta": market.eta, "gamma": market.gamma},
        },
    }
    return record_tape("deribit", currency.upper(), responder, path, header=header)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m volcal.data.synth --out data``: write the synthetic Deribit tapes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", default="data", help="output folder (default: data)")
    parser.add_argument("--seed", type=int, default=20260114)
    parser.add_argument("--currency", action="append", choices=sorted(MARKETS))
    args = parser.parse_args(argv)
    out = Path(args.out)
    for cur in args.currency or sorted(MARKETS):
        path = out / f"deribit-{cur}-synthetic.jsonl.gz"
        raw = write_synthetic_deribit_tape(cur, path, seed=args.seed)
        n_exp = raw.frame["expiry"].nunique()
        print(
            f"{path}: {len(raw.frame)} options, {n_exp} expiries, as_of {raw.as_of}, "
            f"{path.stat().st_size / 1024:.0f} KiB"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
