"""Independent high-precision Black-76 reference (mpmath, 40 digits) for the tests.

This is the textbook formula evaluated in arbitrary precision: nothing here shares code with
volcal's kernels.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import numpy.typing as npt

mp.mp.dps = 40


def mp_black(f: float, k: float, t: float, vol: float, call: bool) -> mp.mpf:
    """Undiscounted Black-76 price in 40-digit arithmetic."""
    F, K, T, V = mp.mpf(f), mp.mpf(k), mp.mpf(t), mp.mpf(vol)
    s = V * mp.sqrt(T)
    d1 = mp.log(F / K) / s + s / 2
    d2 = d1 - s
    if call:
        return F * mp.ncdf(d1) - K * mp.ncdf(d2)
    return K * mp.ncdf(-d2) - F * mp.ncdf(-d1)


def mp_vega(f: float, k: float, t: float, vol: float) -> float:
    """dPrice/dvol in 40-digit arithmetic, rounded to double."""
    F, K, T, V = mp.mpf(f), mp.mpf(k), mp.mpf(t), mp.mpf(vol)
    s = V * mp.sqrt(T)
    d1 = mp.log(F / K) / s + s / 2
    return float(F * mp.npdf(d1) * mp.sqrt(T))


def sample_set(kind: str, n: int, seed: int) -> tuple[npt.NDArray[np.float64], ...]:
    """Random options of the issue's two accuracy sets.

    normal: vol 0.1-1.5, t 1 day-2 years, strikes within +-3 standard deviations;
    hard: t 1 hour-7 days, vol 0.05-5.0, strikes within +-8 standard deviations.
    Returns (F, K, t, vol, call).
    """
    rng = np.random.default_rng(seed)
    if kind == "normal":
        t = np.exp(rng.uniform(np.log(1 / 365), np.log(2.0), n))
        vol = rng.uniform(0.1, 1.5, n)
        z = rng.uniform(-3.0, 3.0, n)
    elif kind == "hard":
        t = np.exp(rng.uniform(np.log(1 / 8760), np.log(7 / 365), n))
        vol = np.exp(rng.uniform(np.log(0.05), np.log(5.0), n))
        z = rng.uniform(-8.0, 8.0, n)
    else:
        raise ValueError(kind)
    f = np.exp(rng.uniform(np.log(50.0), np.log(200_000.0), n))
    k = f * np.exp(z * vol * np.sqrt(t))
    call = rng.random(n) < 0.5
    return f, k, t, vol, call
