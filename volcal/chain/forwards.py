"""Forwards and discount factors per expiry from put-call parity.

For European options of one expiry, put-call parity reads

    C(K) - P(K) = D (F - K),

linear in the strike ``K`` with slope ``-D`` and intercept ``D F``. Given two-sided call and put
quotes at the same strikes, :func:`infer_forward` fits that line to the mid prices by a robust
(Huber) iteratively reweighted least-squares regression:

* each pair's weight is ``1 / e**2`` with ``e`` the uncertainty of ``C - P`` (the sum of the call
  and put half-spreads when known), times a Gaussian kernel in log-moneyness centred on a first
  forward guess, ``exp(-(ln(K/F0) / h)**2 / 2)``, with ``h`` equal to ``atm_width`` standard
  deviations of the log-price, read off the at-the-money straddle
  (``C + P ~ 0.8 F sigma sqrt(t)``). Wing pairs, where one leg is deep in the money and quoted
  wide, count for little;
* residuals standardised by ``e`` are down-weighted by Huber's rule beyond ``huber_c`` robust
  standard deviations (scale = 1.4826 × median absolute standardised residual), so a stale or
  mispriced pair cannot drag the fit.

With ``discount`` given, only the forward is fitted (a weighted Huber location of
``K + (C - P) / D``). With fewer than three pairs, or pairs at a single strike, ``D`` cannot be
told apart from ``F`` and is fixed (1.0 unless given).

Units: any consistent price unit; in volcal the USD mid prices with USD strikes. For Deribit's
coin-quoted inverse options the USD premium is ``coin × usd_per_coin``; whatever reference
``usd_per_coin`` is (the forward, or the spot index), the fitted ``F`` is the same, because a
constant factor on ``C - P`` is absorbed by ``D`` (with the spot index as reference,
``D = S / F``). That is why the forward is fitted with a free ``D`` by default.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.errors import ChainValidationError

__all__ = ["ParityForward", "infer_forward", "infer_forwards", "parity_pairs"]

FloatArray = npt.NDArray[np.float64]

_STRADDLE_TO_SD = 0.8  # ATM straddle ~ sqrt(2/pi) * 2 F sigma sqrt(t) / 2 ~ 0.8 F sigma sqrt(t)


@dataclass(frozen=True)
class ParityForward:
    """A forward (and discount factor) inferred from put-call parity for one expiry.

    Attributes
    ----------
    forward:
        Forward ``F``, in the unit of the strikes (USD per coin in volcal).
    discount:
        Discount factor ``D`` (dimensionless; the fitted value, or the one that was given).
    n_pairs:
        Number of call/put pairs (same strike, both two-sided) used.
    residual_usd:
        Median absolute parity residual ``|C - P - D (F - K)|`` over the pairs, in the price
        unit (USD in volcal): a measure of how well parity holds on these quotes.
    method:
        ``"huber"`` (``F`` and ``D`` fitted), ``"huber-fixed-discount"`` (only ``F`` fitted:
        ``D`` given, too few pairs, or a fitted ``D`` outside (0, 2)).
    iterations:
        Reweighting iterations of the Huber regression.
    expiry:
        The expiry, when known (set by :func:`infer_forwards`).
    """

    forward: float
    discount: float
    n_pairs: int
    residual_usd: float
    method: str
    iterations: int = 0
    expiry: pd.Timestamp | None = None


def _median(x: FloatArray) -> float:
    """Median of a small 1-d array (np.median's overhead dominates at n ~ 50)."""
    s = np.sort(x)
    m = s.size // 2
    return float(s[m]) if s.size % 2 else 0.5 * float(s[m - 1] + s[m])


def _wls(z: FloatArray | None, y: FloatArray, w: FloatArray) -> tuple[float, float]:
    """Weighted least squares of ``y ~ a + b z`` (``b = 0`` when ``z`` is None), closed form."""
    sw = float(w.sum())
    ybar = float(w @ y) / sw
    if z is None:
        return ybar, 0.0
    zbar = float(w @ z) / sw
    dz = z - zbar
    szz = float(w @ (dz * dz))
    b = float(w @ (dz * (y - ybar))) / szz if szz > 0 else 0.0
    return ybar - b * zbar, b


def _huber_irls(
    z: FloatArray | None, y: FloatArray, w: FloatArray, c: float, max_iter: int, tol: float
) -> tuple[tuple[float, float], int]:
    """Weighted Huber M-estimate of ``y ~ a + b z``; ``w`` are inverse variances (> 0 or 0)."""
    a, b = _wls(z, y, w)
    sw = np.sqrt(w)
    active = w > 0
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is returned)
        fitted = a if z is None else a + b * z
        au = np.abs((y - fitted) * sw)
        scale = 1.4826 * _median(au[active])
        if not scale > 0:
            break
        hw = np.minimum(1.0, c * scale / np.maximum(au, 1e-300))
        a_new, b_new = _wls(z, y, w * hw)
        done = abs(a_new - a) <= tol * (1.0 + abs(a)) and abs(b_new - b) <= tol * (1.0 + abs(b))
        a, b = a_new, b_new
        if done:
            break
    return (a, b), it


def infer_forward(
    strike: npt.ArrayLike,
    call_price: npt.ArrayLike,
    put_price: npt.ArrayLike,
    *,
    price_error: npt.ArrayLike | None = None,
    discount: float | None = None,
    atm_width: float | None = 2.0,
    huber_c: float = 1.345,
    max_iter: int = 50,
    tol: float = 1e-9,
) -> ParityForward:
    """Forward and discount factor of one expiry from call/put pairs, by robust regression.

    Parameters
    ----------
    strike:
        Strikes ``K`` of the pairs (> 0; USD in volcal).
    call_price, put_price:
        Call and put mid prices at those strikes, same unit as ``strike`` (USD).
    price_error:
        Uncertainty of ``C - P`` per pair (same unit, > 0), e.g. the sum of the two
        half-spreads; None for equal uncertainty.
    discount:
        Known discount factor ``D``; None (default) to fit it as well (needs at least three
        pairs at two or more strikes, otherwise ``D = 1``).
    atm_width:
        Width of the at-the-money kernel, in standard deviations of the log-price estimated
        from the ATM straddle; None for no kernel.
    huber_c:
        Huber threshold in robust standard deviations (1.345: 95 % efficiency for normal noise).
    max_iter, tol:
        Limits of the reweighting iteration (relative change of the coefficients).

    Returns
    -------
    ParityForward

    Raises
    ------
    ChainValidationError
        No usable pair (finite prices, positive strikes), or a non-positive implied forward.
    """
    k = np.asarray(strike, dtype=np.float64).ravel()
    c = np.asarray(call_price, dtype=np.float64).ravel()
    p = np.asarray(put_price, dtype=np.float64).ravel()
    err = (
        np.ones_like(k)
        if price_error is None
        else np.broadcast_to(np.asarray(price_error, dtype=np.float64), k.shape).copy()
    )
    ok = np.isfinite(k) & np.isfinite(c) & np.isfinite(p) & (k > 0) & np.isfinite(err) & (err > 0)
    k, c, p, err = k[ok], c[ok], p[ok], err[ok]
    n = len(k)
    if n == 0:
        raise ChainValidationError(
            "put-call parity needs at least one call/put pair with finite prices at the same "
            "strike; none found",
            field="forward",
        )
    if discount is not None and not (np.isfinite(discount) and discount > 0):
        raise ChainValidationError(
            f"discount must be finite and > 0, got {discount!r}", field="discount"
        )
    y = c - p
    d0 = 1.0 if discount is None else float(discount)
    # First guess: the strikes where C - P changes sign (the pairs nearest the money).
    near = np.argsort(np.abs(y))[: min(3, n)]
    f0 = _median(k[near] + y[near] / d0)
    if not f0 > 0:
        f0 = _median(k)
    # Floor the errors so that one pair with a tiny spread cannot dominate the fit.
    err = np.maximum(err, 0.1 * _median(err))
    w = 1.0 / err**2
    if atm_width is not None and n > 1:
        i_atm = int(np.argmin(np.abs(np.log(k / f0))))
        sd = (c[i_atm] + p[i_atm]) / (_STRADDLE_TO_SD * f0)
        h = max(float(atm_width) * sd, 0.01) if np.isfinite(sd) and sd > 0 else 0.25
        w = w * np.exp(-0.5 * (np.log(k / f0) / h) ** 2)
        if not np.any(w > 0):
            w = 1.0 / err**2

    method = "huber-fixed-discount"
    forward = discount_fit = np.nan
    iterations = 0
    if discount is None and n >= 3 and np.unique(k).size >= 2:
        kc = float(np.average(k, weights=w))
        (a, b), iterations = _huber_irls(k - kc, y, w, huber_c, max_iter, tol)
        if 0.0 < -b < 2.0:
            discount_fit = -b
            forward = kc + a / discount_fit
            method = "huber"
    if method != "huber":
        discount_fit = d0
        # Location of K + (C - P)/D; the error of that quantity is err / D.
        (forward, _), iterations = _huber_irls(None, k + y / d0, w * d0**2, huber_c, max_iter, tol)
    if not (np.isfinite(forward) and forward > 0):
        raise ChainValidationError(
            f"put-call parity gives a non-positive forward ({forward!r}) from {n} pairs",
            field="forward",
        )
    resid = y - discount_fit * (forward - k)
    return ParityForward(
        forward=forward,
        discount=float(discount_fit),
        n_pairs=n,
        residual_usd=_median(np.abs(resid)),
        method=method,
        iterations=iterations,
    )


def parity_pairs(quotes: pd.DataFrame) -> pd.DataFrame:
    """Two-sided call/put pairs at the same expiry and strike, with USD mids and errors.

    Parameters
    ----------
    quotes:
        A chain table with ``expiry, strike, call, bid_usd, ask_usd`` (and optionally
        ``as_of``, to pair within each instant).

    Returns
    -------
    pandas.DataFrame
        One row per pair: the keys (``[as_of,] expiry, strike``), ``call_mid_usd``,
        ``put_mid_usd`` and ``error_usd`` (call half-spread + put half-spread). Only quotes with
        a positive bid and an ask above it are used.
    """
    keys = [c for c in ("as_of", "expiry") if c in quotes.columns] + ["strike"]
    bid = quotes["bid_usd"].to_numpy(dtype=np.float64, na_value=np.nan)
    ask = quotes["ask_usd"].to_numpy(dtype=np.float64, na_value=np.nan)
    is_call = quotes["call"].to_numpy(dtype=bool)
    # One code per distinct (as_of, expiry, strike); pairs come out sorted by those keys.
    ucode, row_of, code = np.unique(
        _combined_codes(quotes, keys), return_index=True, return_inverse=True
    )
    # NaN compares False: one-sided quotes drop out here.
    two_sided = (bid > 0) & (ask > bid)
    mid, half = 0.5 * (bid + ask), 0.5 * (ask - bid)
    m = len(ucode)
    out = {}
    for name, side in (("c", is_call), ("p", ~is_call)):
        sel = two_sided & side
        counts = np.bincount(code[sel], minlength=m)
        if (counts > 1).any():
            raise ChainValidationError(
                "two quotes of the same type at one strike and expiry", field="strike"
            )
        mids, halves = np.full(m, np.nan), np.full(m, np.nan)
        mids[code[sel]] = mid[sel]
        halves[code[sel]] = half[sel]
        out[name] = (mids, halves)
    have = ~np.isnan(out["c"][0]) & ~np.isnan(out["p"][0])
    rows = row_of[have]
    return pd.DataFrame(
        {
            **{key: quotes[key].to_numpy()[rows] for key in keys},
            "call_mid_usd": out["c"][0][have],
            "put_mid_usd": out["p"][0][have],
            "error_usd": out["c"][1][have] + out["p"][1][have],
        }
    )


def _combined_codes(quotes: pd.DataFrame, keys: list[str]) -> npt.NDArray[np.int64]:
    """One integer per distinct tuple of the ``keys`` columns, ordered like the tuples."""
    code = np.zeros(len(quotes), dtype=np.int64)
    for key in keys:
        c, u = pd.factorize(quotes[key], sort=True)
        code = code * max(len(u), 1) + c
    return code


def infer_forwards(
    quotes: pd.DataFrame, *, discount: float | None = None, atm_width: float | None = 2.0
) -> dict[pd.Timestamp, ParityForward]:
    """Parity forward of every expiry of a chain table (one instant).

    Parameters
    ----------
    quotes:
        A chain table (e.g. ``OptionChain.quotes``) with ``expiry, strike, call, bid_usd,
        ask_usd``.
    discount:
        Known discount factor for every expiry, or None to fit it (see :func:`infer_forward`).
    atm_width:
        See :func:`infer_forward`.

    Returns
    -------
    dict
        Expiry (UTC timestamp) -> :class:`ParityForward`, in expiry order; expiries without any
        two-sided call/put pair are absent.
    """
    pairs = parity_pairs(quotes)
    out: dict[pd.Timestamp, ParityForward] = {}
    if len(pairs) == 0:
        return out
    expiry = pd.DatetimeIndex(pairs["expiry"])
    codes, uniques = pd.factorize(expiry, sort=True)
    strike = pairs["strike"].to_numpy(dtype=np.float64)
    call_mid = pairs["call_mid_usd"].to_numpy(dtype=np.float64)
    put_mid = pairs["put_mid_usd"].to_numpy(dtype=np.float64)
    error = pairs["error_usd"].to_numpy(dtype=np.float64)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    for i, exp in enumerate(uniques):
        idx = order[bounds[i] : bounds[i + 1]]
        fit = infer_forward(
            strike[idx],
            call_mid[idx],
            put_mid[idx],
            price_error=error[idx],
            discount=discount,
            atm_width=atm_width,
        )
        ts = pd.Timestamp(exp)
        out[ts] = replace(fit, expiry=ts)
    return out
