"""Log-moneyness grids on which the no-arbitrage conditions are imposed and checked.

A smile's features live on three scales, and a grid must resolve all three:

* the quoted range ``[k_min, k_max]`` padded on both sides by
  ``max((k_max - k_min)/2, 3 sqrt(theta))`` (uniform points);
* the ATM standard deviation ``sqrt(theta)`` (``theta`` = ATM total variance): points
  ``sqrt(theta) z`` for ``|z| <= 8``;
* SVI's own curvature scale: points ``m + sigma sinh(z)`` for ``|z| <= 4`` (out to
  ``m +- 27 sigma``), which follow the slice as ``(m, sigma)`` move during a fit.

The calibrators impose the conditions on a coarse grid (``n = 121 / 25``) and the
:class:`~volcal.svi.arbitrage.ArbitrageReport` checks them on a grid 25 times as dense.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = ["CHECK_SIZES", "CONSTRAINT_SIZES", "k_range", "slice_grid"]

FloatArray = npt.NDArray[np.float64]

CONSTRAINT_SIZES = (121, 25)
"""(uniform points, points per local scale) of the grids the calibrators constrain."""
CHECK_SIZES = (2001, 401)
"""(uniform points, points per local scale) of the grids the arbitrage report checks."""


def k_range(k: npt.ArrayLike, theta: float) -> tuple[float, float]:
    """Padded log-moneyness range of quotes ``k`` for a slice of ATM total variance ``theta``."""
    kk = np.asarray(k, dtype=float)
    lo, hi = float(np.min(kk)), float(np.max(kk))
    pad = max(0.5 * (hi - lo), 3.0 * float(np.sqrt(max(theta, 0.0))))
    return lo - pad, hi + pad


def slice_grid(
    k_lo: float,
    k_hi: float,
    theta: float,
    m: float | None = None,
    sigma: float | None = None,
    sizes: tuple[int, int] = CONSTRAINT_SIZES,
) -> FloatArray:
    """Sorted log-moneyness grid covering ``[k_lo, k_hi]`` and the slice's local scales.

    Parameters
    ----------
    k_lo, k_hi:
        Range of the uniform part (see :func:`k_range`).
    theta:
        ATM total variance of the slice (sets the ``sqrt(theta) z`` points).
    m, sigma:
        SVI centre and curvature scale (``m + sigma sinh(z)`` points); omitted when None.
    sizes:
        ``(n_uniform, n_local)``.
    """
    n_uniform, n_local = sizes
    unit, z, sinh_z = _unit_points(n_uniform, n_local)
    parts = [k_lo + (k_hi - k_lo) * unit]
    if theta > 0:
        parts.append(np.sqrt(theta) * 8.0 * z)
    if m is not None and sigma is not None:
        parts.append(m + sigma * sinh_z)
    return np.sort(np.concatenate(parts))


@lru_cache(maxsize=8)
def _unit_points(n_uniform: int, n_local: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``linspace(0, 1, n_uniform)``, ``z = linspace(-1, 1, n_local)`` and ``sinh(4 z)``
    (cached: the grids are built many times per fit; treat the arrays as read-only)."""
    z = np.linspace(-1.0, 1.0, n_local)
    unit = np.linspace(0.0, 1.0, n_uniform)
    for arr in (unit, z):
        arr.flags.writeable = False
    sinh_z = np.sinh(4.0 * z)
    sinh_z.flags.writeable = False
    return unit, z, sinh_z
