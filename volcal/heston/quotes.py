"""``HestonQuotes``: the option quotes a Heston calibration fits, as a frozen value.

Built from explicit arrays, from a chain table following ``docs/conventions.md`` (the
``OptionChain.quotes`` DataFrame), or from any object with such a ``.quotes`` attribute.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.black import black_greeks, black_price
from volcal.errors import ChainValidationError
from volcal.implied import implied_vol

__all__ = ["HestonQuotes"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_FLOAT_FIELDS = ("forward", "strike", "t", "discount", "price", "iv", "weight", "tick")


def _frozen(a: npt.ArrayLike, dtype: type) -> npt.NDArray[Any]:
    out: npt.NDArray[Any] = np.array(a, dtype=dtype, copy=True).ravel()
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class HestonQuotes:
    """European option quotes on forwards, one element per option (read-only arrays).

    Attributes
    ----------
    forward:
        Forward ``F`` of the option's expiry (price unit, e.g. USD per coin).
    strike:
        Strike ``K`` (same unit as ``forward``).
    t:
        Time to expiry, years ACT/365F (> 0).
    call:
        True for calls, False for puts.
    discount:
        Discount factor ``D`` (1.0 for crypto premiums on the forward).
    price:
        Market premium, in the unit of ``forward`` times ``discount`` (e.g. USD).
    iv:
        Market Black-76 implied vol of ``price`` (decimal).
    weight:
        Weight of the quote in the objective (>= 0; the squared residual is multiplied by it).
    tick:
        Price tick in the unit of ``price`` (0 when unknown). Quotes whose premium is below one
        tick are not fitted (see :class:`volcal.heston.HestonCalibrator`).
    symbol:
        Instrument names, if known (used in messages and reports).
    """

    forward: FloatArray
    strike: FloatArray
    t: FloatArray
    call: BoolArray
    discount: FloatArray
    price: FloatArray
    iv: FloatArray
    weight: FloatArray
    tick: FloatArray
    symbol: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        for name in _FLOAT_FIELDS:
            object.__setattr__(self, name, _frozen(getattr(self, name), np.float64))
        object.__setattr__(self, "call", _frozen(self.call, np.bool_))
        n = self.forward.size
        for name in (*_FLOAT_FIELDS, "call"):
            if getattr(self, name).size != n:
                raise ChainValidationError(
                    f"HestonQuotes.{name} has {getattr(self, name).size} elements, expected {n}",
                    field=name,
                )
        if self.symbol is not None:
            object.__setattr__(self, "symbol", tuple(str(s) for s in self.symbol))
            if len(self.symbol) != n:
                raise ChainValidationError(
                    f"HestonQuotes.symbol has {len(self.symbol)} names, expected {n}",
                    field="symbol",
                )
        if n == 0:
            raise ChainValidationError("HestonQuotes needs at least one quote")
        for name, ok in (
            ("forward", np.isfinite(self.forward) & (self.forward > 0)),
            ("strike", np.isfinite(self.strike) & (self.strike > 0)),
            ("t", np.isfinite(self.t) & (self.t > 0)),
            ("discount", np.isfinite(self.discount) & (self.discount > 0)),
            ("weight", np.isfinite(self.weight) & (self.weight >= 0)),
            ("tick", np.isfinite(self.tick) & (self.tick >= 0)),
        ):
            if not np.all(ok):
                bad = np.flatnonzero(~ok)
                values = getattr(self, name)[bad[:5]].tolist()
                raise ChainValidationError(
                    f"HestonQuotes.{name} out of domain at rows {bad[:5].tolist()}: {values}",
                    instruments=[self.symbol[i] for i in bad] if self.symbol else None,
                    field=name,
                )

    # -- constructors ---------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        forward: npt.ArrayLike,
        strike: npt.ArrayLike,
        t: npt.ArrayLike,
        call: npt.ArrayLike,
        *,
        price: npt.ArrayLike | None = None,
        iv: npt.ArrayLike | None = None,
        discount: npt.ArrayLike = 1.0,
        weight: npt.ArrayLike = 1.0,
        tick: npt.ArrayLike = 0.0,
        symbol: Sequence[str] | None = None,
    ) -> HestonQuotes:
        """Quotes from arrays (broadcast together); give ``price``, ``iv`` or both.

        A missing ``price`` is the Black-76 price of ``iv``; a missing ``iv`` is the implied
        vol of ``price`` (NaN where none exists).
        """
        if price is None and iv is None:
            raise ChainValidationError("HestonQuotes.from_arrays needs price or iv")
        arrays = np.broadcast_arrays(
            np.asarray(forward, dtype=np.float64),
            np.asarray(strike, dtype=np.float64),
            np.asarray(t, dtype=np.float64),
            np.asarray(call, dtype=np.bool_),
            np.asarray(discount, dtype=np.float64),
            np.asarray(np.nan if price is None else price, dtype=np.float64),
            np.asarray(np.nan if iv is None else iv, dtype=np.float64),
            np.asarray(weight, dtype=np.float64),
            np.asarray(tick, dtype=np.float64),
        )
        f, k, tt, c, d, p, v, w, tk = (a.ravel() for a in arrays)
        if price is None:
            p = np.asarray(black_price(f, k, tt, v, c, d), dtype=np.float64)
        if iv is None:
            v = np.asarray(implied_vol(p, f, k, tt, c, d), dtype=np.float64)
        return cls(f, k, tt, c, d, p, v, w, tk, None if symbol is None else tuple(symbol))

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        price_column: str | None = "mark_usd",
        iv_column: str | None = "iv_mark",
        otm_only: bool = True,
        skip_filtered: bool = True,
        tick_coin: float | None = None,
        weight_column: str | None = None,
    ) -> HestonQuotes:
        """Quotes from a chain table (columns as in ``docs/conventions.md``).

        Parameters
        ----------
        frame:
            Needs ``forward``, ``strike``, ``t``, ``call``; uses ``discount`` (default 1),
            ``symbol``, ``usd_per_coin``, ``filter_reason``, the price and vol columns.
        price_column:
            Premium column (USD). Where it is NaN (or absent) the mid of ``bid_usd`` and
            ``ask_usd`` is used when both are positive.
        iv_column:
            Market implied-vol column (decimal); where NaN, the implied vol of the premium.
        otm_only:
            Keep only out-of-the-money options (calls with ``K >= F``, puts with ``K < F``):
            their premiums carry the time value without intrinsic noise.
        skip_filtered:
            Drop rows whose ``filter_reason`` is not empty (the chain filters' verdict).
        tick_coin:
            Premium tick in coin (Deribit: 0.0001 BTC/ETH); converted to USD with
            ``usd_per_coin`` (or ``forward`` when that column is absent).
        weight_column:
            Optional column of weights (default: all 1).

        Raises
        ------
        ChainValidationError
            A required column is missing or no usable quote remains.
        """
        missing = [c for c in ("forward", "strike", "t", "call") if c not in frame.columns]
        if missing:
            raise ChainValidationError(f"chain table lacks columns {missing}", field=missing[0])
        df = frame
        keep = np.ones(len(df), dtype=bool)
        if skip_filtered and "filter_reason" in df.columns:
            reason = df["filter_reason"].fillna("").astype(str).to_numpy()
            keep &= reason == ""
        forward = df["forward"].to_numpy(dtype=np.float64)
        strike = df["strike"].to_numpy(dtype=np.float64)
        t = df["t"].to_numpy(dtype=np.float64)
        call = df["call"].to_numpy(dtype=np.bool_)
        discount = (
            df["discount"].to_numpy(dtype=np.float64)
            if "discount" in df.columns
            else np.ones(len(df))
        )
        price = np.full(len(df), np.nan)
        if price_column is not None and price_column in df.columns:
            price = df[price_column].to_numpy(dtype=np.float64).copy()
        if {"bid_usd", "ask_usd"} <= set(df.columns):
            bid = df["bid_usd"].to_numpy(dtype=np.float64)
            ask = df["ask_usd"].to_numpy(dtype=np.float64)
            mid_ok = np.isnan(price) & (bid > 0) & (ask >= bid)
            price[mid_ok] = 0.5 * (bid[mid_ok] + ask[mid_ok])
        iv = np.full(len(df), np.nan)
        if iv_column is not None and iv_column in df.columns:
            iv = df[iv_column].to_numpy(dtype=np.float64).copy()
        with np.errstate(invalid="ignore"):  # NaN forwards/strikes are dropped just below
            keep &= np.isfinite(forward) & (forward > 0) & np.isfinite(strike) & (strike > 0)
            keep &= np.isfinite(t) & (t > 0)
            if otm_only:
                keep &= np.where(call, strike >= forward, strike < forward)
        need_iv = keep & ~np.isfinite(iv) & np.isfinite(price)
        if need_iv.any():
            iv[need_iv] = implied_vol(
                price[need_iv],
                forward[need_iv],
                strike[need_iv],
                t[need_iv],
                call[need_iv],
                discount[need_iv],
            )
        need_price = keep & ~np.isfinite(price) & np.isfinite(iv)
        if need_price.any():
            price[need_price] = black_price(
                forward[need_price],
                strike[need_price],
                t[need_price],
                iv[need_price],
                call[need_price],
                discount[need_price],
            )
        keep &= np.isfinite(price) & np.isfinite(iv)
        if not keep.any():
            raise ChainValidationError("no usable quote in the chain table for a Heston fit")
        tick = np.zeros(len(df))
        if tick_coin is not None:
            ref = (
                df["usd_per_coin"].to_numpy(dtype=np.float64)
                if "usd_per_coin" in df.columns
                else forward
            )
            tick = tick_coin * ref
        weight = (
            df[weight_column].to_numpy(dtype=np.float64)
            if weight_column is not None
            else np.ones(len(df))
        )
        symbol = (
            tuple(df["symbol"].astype(str).to_numpy()[keep]) if "symbol" in df.columns else None
        )
        return cls(
            forward[keep],
            strike[keep],
            t[keep],
            call[keep],
            discount[keep],
            price[keep],
            iv[keep],
            weight[keep],
            tick[keep],
            symbol,
        )

    @classmethod
    def coerce(cls, data: object, **frame_options: Any) -> HestonQuotes:
        """``data`` as quotes: a ``HestonQuotes``, a chain DataFrame, or an object with a
        ``.quotes`` DataFrame (e.g. ``volcal.OptionChain``); ``frame_options`` go to
        :meth:`from_frame`."""
        if isinstance(data, HestonQuotes):
            return data
        if isinstance(data, pd.DataFrame):
            return cls.from_frame(data, **frame_options)
        frame = getattr(data, "quotes", None)
        if isinstance(frame, pd.DataFrame):
            return cls.from_frame(frame, **frame_options)
        raise ChainValidationError(
            f"cannot read Heston quotes from {type(data).__name__}: expected HestonQuotes, a "
            "chain DataFrame or an object with a .quotes DataFrame"
        )

    # -- derived --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.forward.size)

    @property
    def k(self) -> FloatArray:
        """Log-moneyness ``ln(K / F)``."""
        return np.log(self.strike / self.forward)

    @property
    def normalised_vega(self) -> FloatArray:
        """Black vega at the market vol divided by ``D F sqrt(t)`` (``phi(d1)``, <= 0.399)."""
        vega = np.asarray(
            black_greeks(self.forward, self.strike, self.t, self.iv, self.call, self.discount).vega
        )
        return vega / (self.discount * self.forward * np.sqrt(self.t))

    def subset(self, mask: npt.ArrayLike | slice) -> HestonQuotes:
        """The quotes selected by ``mask`` (boolean mask, integer index or slice)."""
        rows = np.arange(len(self))
        idx = rows[mask] if isinstance(mask, slice) else rows[np.asarray(mask)]
        return HestonQuotes(
            self.forward[idx],
            self.strike[idx],
            self.t[idx],
            self.call[idx],
            self.discount[idx],
            self.price[idx],
            self.iv[idx],
            self.weight[idx],
            self.tick[idx],
            None if self.symbol is None else tuple(self.symbol[i] for i in idx),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain lists (NaN as None), for JSON."""
        out: dict[str, Any] = {
            name: [None if not np.isfinite(x) else float(x) for x in getattr(self, name)]
            for name in _FLOAT_FIELDS
        }
        out["call"] = [bool(x) for x in self.call]
        out["symbol"] = None if self.symbol is None else list(self.symbol)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HestonQuotes:
        """Inverse of :meth:`to_dict`."""
        floats = {
            name: np.array([np.nan if x is None else x for x in data[name]], dtype=np.float64)
            for name in _FLOAT_FIELDS
        }
        symbol = data.get("symbol")
        return cls(
            call=np.array(data["call"], dtype=np.bool_),
            symbol=None if symbol is None else tuple(symbol),
            **floats,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HestonQuotes):
            return NotImplemented
        same = all(
            np.array_equal(getattr(self, n), getattr(other, n), equal_nan=True)
            for n in _FLOAT_FIELDS
        )
        return same and np.array_equal(self.call, other.call) and self.symbol == other.symbol

    __hash__ = None  # type: ignore[assignment]  # mutable-looking arrays: not hashable
