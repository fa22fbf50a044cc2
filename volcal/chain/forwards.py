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

from dataclasses import dataclass

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


def _wls(x: FloatArray, y: FloatArray, w: FloatArray) -> FloatArray:
    sw = np.sqrt(w)
    beta, *_ = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)
    return np.asarray(beta, dtype=np.float64)


def _huber_irls(
    x: FloatArray, y: FloatArray, w: FloatArray, c: float, max_iter: int, tol: float
) -> tuple[FloatArray, int]:
    """Weighted Huber M-estimate of ``y ~ x @ beta``; ``w`` are inverse variances."""
    beta = _wls(x, y, w)
    sw = np.sqrt(w)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is returned)
        u = (y - x @ beta) * sw
        active = w > 0
        scale = 1.4826 * float(np.median(np.abs(u[active]))) if active.any() else 0.0
        if not scale > 0:
            break
        au = np.abs(u)
        hw = np.ones_like(u)
        big = au > c * scale
        hw[big] = c * scale / au[big]
        new = _wls(x, y, w * hw)
        done = bool(np.all(np.abs(new - beta) <= tol * (1.0 + np.abs(beta))))
        beta = new
        if done:
            break
    return beta, it


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
    tol: float = 1e-10,
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
        raise ChainValidationError(f"discount must be finite and > 0, got {discount!r}",
                                   field="discount")
    y = c - p
    d0 = 1.0 if discount is None else float(discount)
    # First guess: the strikes where C - P changes sign (the pairs nearest the money).
    near = np.argsort(np.abs(y))[: min(3, n)]
    f0 = float(np.median(k[near] + y[near] / d0))
    if not f0 > 0:
        f0 = float(np.median(k))
    # Floor the errors so that one pair with a tiny spread cannot dominate the fit.
    err = np.maximum(err, 0.1 * float(np.median(err)))
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
        x = np.column_stack([np.ones(n), k - kc])
        beta, iterations = _huber_irls(x, y, w, huber_c, max_iter, tol)
        d_fit = -float(beta[1])
        if 0.0 < d_fit < 2.0:
            discount_fit = d_fit
            forward = kc + float(beta[0]) / d_fit
            method = "huber"
    if method != "huber":
        discount_fit = d0
        x = np.ones((n, 1))
        # Location of K + (C - P)/D; the error of that quantity is err / D.
        beta, iterations = _huber_irls(x, k + y / d0, w * d0**2, huber_c, max_iter, tol)
        forward = float(beta[0])
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
        residual_usd=float(np.median(np.abs(resid))),
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
    # NaN compares False: one-sided quotes drop out here.
    two_sided = (bid > 0) & (ask > bid)
    q = quotes.loc[two_sided, [*keys, "call"]].copy()
    q["mid"] = 0.5 * (bid[two_sided] + ask[two_sided])
    q["half"] = 0.5 * (ask[two_sided] - bid[two_sided])
    is_call = q["call"].to_numpy(dtype=bool)
    calls = q.loc[is_call, [*keys, "mid", "half"]]
    puts = q.loc[~is_call, [*keys, "mid", "half"]]
    pairs = calls.merge(puts, on=keys, suffixes=("_c", "_p"), validate="one_to_one")
    return pd.DataFrame(
        {
            **{key: pairs[key] for key in keys},
            "call_mid_usd": pairs["mid_c"],
            "put_mid_usd": pairs["mid_p"],
            "error_usd": pairs["half_c"] + pairs["half_p"],
        }
    ).reset_index(drop=True)


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
    for expiry, grp in pairs.groupby("expiry", sort=True):
        fit = infer_forward(
            grp["strike"].to_numpy(),
            grp["call_mid_usd"].to_numpy(),
            grp["put_mid_usd"].to_numpy(),
            price_error=grp["error_usd"].to_numpy(),
            discount=discount,
            atm_width=atm_width,
        )
        ts = pd.Timestamp(expiry)  # type: ignore[arg-type]
        out[ts] = ParityForward(
            forward=fit.forward,
            discount=fit.discount,
            n_pairs=fit.n_pairs,
            residual_usd=fit.residual_usd,
            method=fit.method,
            iterations=fit.iterations,
            expiry=ts,
        )
    return out
