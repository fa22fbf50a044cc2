"""Black-76 prices and greeks on the forward, vectorised over NumPy arrays (broadcasting).

Notation (see ``docs/conventions.md``): forward ``F``, strike ``K``, time ``t`` in years
(ACT/365F), volatility ``sigma`` (decimal), discount factor ``D`` (1 for crypto options quoted
on the forward), ``call`` a bool (True = call, False = put).

    d1 = ln(F/K) / (sigma sqrt(t)) + sigma sqrt(t) / 2,    d2 = d1 - sigma sqrt(t)
    call = D [F N(d1) - K N(d2)],                           put = D [K N(-d2) - F N(-d1)]

Prices are computed through the normalised Black function of :mod:`volcal._lbr`, which is
accurate to a few ulps *relative* even for far out-of-the-money premiums (1e-300 of F), so that
``implied_vol(black_price(...))`` round-trips to machine precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from volcal._lbr import black_price_kernel

__all__ = ["BlackGreeks", "black_greeks", "black_price", "broadcast_option_inputs"]

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


def broadcast_option_inputs(*values: ArrayLike, call_at: int) -> list[npt.NDArray[Any]]:
    """Broadcast option inputs against each other: float64 arrays, except bool at ``call_at``."""
    arrays: list[npt.NDArray[Any]] = [
        np.asarray(value, dtype=np.bool_ if i == call_at else np.float64)
        for i, value in enumerate(values)
    ]
    return list(np.broadcast_arrays(*arrays))


def _scalar_or_array(out: FloatArray) -> FloatArray | float:
    return float(out) if out.ndim == 0 else out


def black_price(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> FloatArray | float:
    """Black-76 option price, in the unit of ``forward`` times ``discount``.

    Parameters
    ----------
    forward, strike:
        Forward ``F`` and strike ``K`` (same unit, > 0).
    t:
        Time to expiry in years (ACT/365F). At ``t <= 0`` the price is the intrinsic value.
    vol:
        Black volatility, decimal (>= 0). At ``vol == 0`` the price is the intrinsic value.
    call:
        True for calls, False for puts (bool or array of bools).
    discount:
        Discount factor ``D`` applied to the forward price (1.0 for undiscounted premiums).

    Returns
    -------
    float or ndarray
        ``D [F N(d1) - K N(d2)]`` (call) or ``D [K N(-d2) - F N(-d1)]`` (put); NaN where an
        input is NaN or out of domain (``F <= 0``, ``K <= 0``, ``vol < 0``).
    """
    f, k, tt, v, c, d = broadcast_option_inputs(forward, strike, t, vol, call, discount, call_at=4)
    flat = [np.ascontiguousarray(a).ravel() for a in (f, k, tt, v, c, d)]
    out = black_price_kernel(*flat).reshape(f.shape)
    return _scalar_or_array(out)


@dataclass(frozen=True)
class BlackGreeks:
    """Black-76 sensitivities (all include the discount factor ``D``).

    Attributes
    ----------
    delta:
        dV/dF (forward delta), dimensionless.
    gamma:
        d2V/dF2, per unit of F.
    vega:
        dV/dsigma, price units per 1.00 of vol (divide by 100 for per vol point).
    vanna:
        d2V/(dF dsigma).
    volga:
        d2V/dsigma2 (a.k.a. vomma).
    theta:
        dV/d(calendar time) in price units per year at fixed F, sigma and D; i.e. ``-dV/dt``.
        Divide by 365 for per day.
    """

    delta: FloatArray | float
    gamma: FloatArray | float
    vega: FloatArray | float
    vanna: FloatArray | float
    volga: FloatArray | float
    theta: FloatArray | float


def black_greeks(
    forward: ArrayLike,
    strike: ArrayLike,
    t: ArrayLike,
    vol: ArrayLike,
    call: ArrayLike,
    discount: ArrayLike = 1.0,
) -> BlackGreeks:
    """Black-76 greeks on the forward, vectorised; see :class:`BlackGreeks` for units.

    Inputs are as for :func:`black_price`. At ``t <= 0`` or ``vol == 0`` the option has no time
    value: delta is the intrinsic delta (``D`` or 0 for calls, ``-D`` or 0 for puts; half at
    the money), and the other greeks are 0.
    """
    f, k, tt, v, c, d = broadcast_option_inputs(forward, strike, t, vol, call, discount, call_at=4)
    sign = np.where(c, 1.0, -1.0)
    live = (tt > 0) & (v > 0)
    sqrt_t = np.sqrt(np.where(live, tt, 1.0))
    vs = np.where(live, v, 1.0)
    s = vs * sqrt_t
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(f / k)
        d1 = x / s + 0.5 * s
        d2 = d1 - s
        pdf = np.exp(-0.5 * d1 * d1) / np.sqrt(2.0 * np.pi)
        delta = np.where(
            live, d * sign * ndtr(sign * d1), d * sign * (0.5 * (1 + np.sign(sign * x)))
        )
        gamma = np.where(live, d * pdf / (f * s), 0.0)
        vega = np.where(live, d * f * pdf * sqrt_t, 0.0)
        vanna = np.where(live, -d * pdf * d2 / vs, 0.0)
        volga = np.where(live, vega * d1 * d2 / vs, 0.0)
        theta = np.where(live, -d * f * pdf * vs / (2.0 * sqrt_t), 0.0)
    return BlackGreeks(
        delta=_scalar_or_array(np.asarray(delta)),
        gamma=_scalar_or_array(np.asarray(gamma)),
        vega=_scalar_or_array(np.asarray(vega)),
        vanna=_scalar_or_array(np.asarray(vanna)),
        volga=_scalar_or_array(np.asarray(volga)),
        theta=_scalar_or_array(np.asarray(theta)),
    )
