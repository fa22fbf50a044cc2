"""Black-76 implied volatility to machine precision, vectorised, with a status per element.

The inversion follows the analysis of P. Jäckel, "Let's Be Rational" (Wilmott, 2015): prices are
normalised to ``beta = price / (D sqrt(F K))`` and mapped to an out-of-the-money call, the
normalised Black function is evaluated through the scaled complementary error function so that
far-wing premiums keep full relative precision, and a third-order Householder iteration on a
log-transformed objective converges in two or three steps. The implementation is our own
(:mod:`volcal._lbr`, compiled with Numba).
"""

from __future__ import annotations

from enum import IntEnum
from functools import cache

import numpy as np
import numpy.typing as npt

from volcal import _lbr
from volcal.black import broadcast_option_inputs
from volcal.errors import ImpliedVolError, PriceAboveMaximumError, PriceBelowIntrinsicError

__all__ = ["IVStatus", "implied_vol", "implied_vol_scalar", "implied_vol_with_status"]


class IVStatus(IntEnum):
    """Why an implied volatility is (or is not) available, per element."""

    OK = _lbr.OK
    """A volatility was found."""
    AT_INTRINSIC = _lbr.AT_INTRINSIC
    """Price equals intrinsic value exactly: the volatility is 0 (returned as 0.0)."""
    BELOW_INTRINSIC = _lbr.BELOW_INTRINSIC
    """Price below intrinsic value (or negative): no volatility exists (NaN)."""
    ABOVE_MAXIMUM = _lbr.ABOVE_MAXIMUM
    """Price at or above the upper bound (D F for calls, D K for puts): NaN."""
    EXPIRED = _lbr.EXPIRED
    """``t <= 0``: NaN."""
    NON_FINITE = _lbr.NON_FINITE
    """An input is NaN or infinite: NaN."""
    INVALID_INPUT = _lbr.INVALID_INPUT
    """``F <= 0``, ``K <= 0`` or ``discount <= 0``: NaN."""
    NOT_CONVERGED = _lbr.NOT_CONVERGED
    """The iteration did not converge (not observed in testing; the last iterate is returned)."""


@cache
def _guess_table() -> npt.NDArray[np.float64]:
    """The solver's initial-guess table, computed by the solver itself once per process (~10 ms)."""
    return _lbr.build_guess_table()


def implied_vol_with_status(
    price: npt.ArrayLike,
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    call: npt.ArrayLike,
    discount: npt.ArrayLike = 1.0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8]]:
    """Implied volatilities and an :class:`IVStatus` code per element.

    Parameters are as for :func:`implied_vol`. Returns ``(vol, status)``, two arrays of the
    broadcast shape (0-d arrays for scalar inputs); ``status == IVStatus.OK`` (0) where a vol
    was found.
    """
    arrays = broadcast_option_inputs(price, forward, strike, t, call, discount, call_at=4)
    p, f, k, tt, c, d = (np.ascontiguousarray(a).ravel() for a in arrays)
    vol, status = _lbr.implied_vol_kernel(p, f, k, tt, c, d, _guess_table())
    return vol.reshape(arrays[0].shape), status.reshape(arrays[0].shape)


def implied_vol(
    price: npt.ArrayLike,
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    call: npt.ArrayLike,
    discount: npt.ArrayLike = 1.0,
) -> npt.NDArray[np.float64] | float:
    """Black-76 implied volatility (decimal) of option prices, vectorised with broadcasting.

    Parameters
    ----------
    price:
        Option premium in the unit of ``forward`` (e.g. USD, or coin with ``forward = 1``...
        in practice: USD premium with USD forward; see ``docs/conventions.md``).
    forward, strike:
        Forward ``F`` and strike ``K`` (> 0, same unit as ``price / discount``).
    t:
        Time to expiry in years, ACT/365F from exact UTC timestamps.
    call:
        True for calls, False for puts.
    discount:
        Discount factor ``D`` (1.0 for Deribit-style undiscounted premiums on the forward).

    Returns
    -------
    float or ndarray
        Volatility ``sigma`` with ``black_price(F, K, t, sigma, call, D) == price``; relative
        error below 1e-12 wherever the price determines the vol to that precision. NaN where no
        volatility exists (price below intrinsic or at/above the upper bound, ``t <= 0``,
        non-finite or non-positive inputs); 0.0 where the price equals intrinsic value exactly.
        Never raises for bad elements: use :func:`implied_vol_with_status` to learn why.
    """
    vol, _ = implied_vol_with_status(price, forward, strike, t, call, discount)
    return float(vol) if vol.ndim == 0 else vol


def implied_vol_scalar(
    price: float,
    forward: float,
    strike: float,
    t: float,
    call: bool,
    discount: float = 1.0,
    *,
    instrument: str | None = None,
) -> float:
    """Implied volatility of one option; raises a typed error where none exists.

    Raises
    ------
    PriceBelowIntrinsicError
        The price is below intrinsic value.
    PriceAboveMaximumError
        The price is at or above ``D F`` (call) or ``D K`` (put).
    ImpliedVolError
        Expired option, non-finite or non-positive inputs, or no convergence.
    """
    vol, status = implied_vol_with_status(price, forward, strike, t, call, discount)
    code = IVStatus(int(status))
    if code in (IVStatus.OK, IVStatus.AT_INTRINSIC):
        return float(vol)
    name = instrument or f"{'call' if call else 'put'} K={strike} F={forward} t={t}"
    detail = f"price={price!r} for {name}"
    if code is IVStatus.BELOW_INTRINSIC:
        raise PriceBelowIntrinsicError(f"price below intrinsic value: {detail}")
    if code is IVStatus.ABOVE_MAXIMUM:
        raise PriceAboveMaximumError(f"price at or above its upper bound: {detail}")
    raise ImpliedVolError(f"no implied volatility ({code.name}): {detail}")
