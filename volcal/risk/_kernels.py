"""Compiled loops of the scenario revaluation (numba): smile-table interpolation and
Black-76 under relative vol shocks. Called by :func:`volcal.risk.scenarios.option_values`;
every element is computed independently, so a book's values equal its positions' values
bit for bit."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

FloatArray = npt.NDArray[np.float64]

_SQRT1_2 = 1.0 / math.sqrt(2.0)


@njit(cache=True, inline="always")
def _ncdf(x: float) -> float:
    """Standard normal CDF through ``erfc`` (accurate in both tails)."""
    return 0.5 * math.erfc(-x * _SQRT1_2)


@njit(cache=True)
def interpolate_tables(
    x: FloatArray,
    shift: FloatArray,
    row: npt.NDArray[np.int64],
    table: FloatArray,
    lo: FloatArray,
    inv_h: FloatArray,
    out: FloatArray,
) -> None:
    """``out[a, i]`` = linear interpolation of ``table[row[i]]`` (uniform grid from
    ``lo[row[i]]`` with spacing ``1 / inv_h[row[i]]``) at ``x[i] + shift[a]``; flat beyond
    the ends."""
    last = table.shape[1] - 1
    for a in range(shift.size):
        s = shift[a]
        for i in range(x.size):
            e = row[i]
            u = (x[i] + s - lo[e]) * inv_h[e]
            if u <= 0.0:
                out[a, i] = table[e, 0]
            elif u >= last:
                out[a, i] = table[e, last]
            else:
                j = int(u)
                f = u - j
                out[a, i] = table[e, j] + f * (table[e, j + 1] - table[e, j])


@njit(cache=True)
def shocked_black(
    base_vol: FloatArray,
    move_row: npt.NDArray[np.int64],
    growth: FloatArray,
    vol_dir: FloatArray,
    dt: FloatArray,
    forward: FloatArray,
    strike: FloatArray,
    t: FloatArray,
    call: npt.NDArray[np.bool_],
    up: FloatArray,
    down: FloatArray,
    up_floor: float,
    value: FloatArray,
    vol: FloatArray,
) -> None:
    """Black-76 USD values under scenarios ``j``: forward ``forward[i] growth[j]``, vol
    ``base_vol[move_row[j], i]`` times ``1 + up[i]`` (at least ``up_floor``) when
    ``vol_dir[j] > 0``, times ``1 - down[i]`` when ``< 0``, maturity ``max(t[i] - dt[j], 0)``;
    intrinsic when the maturity or the vol is not positive (NaN vol included)."""
    for j in range(growth.size):
        a = move_row[j]
        g = growth[j]
        d = vol_dir[j]
        for i in range(strike.size):
            v = base_vol[a, i]
            if d > 0.0:
                v = v * (1.0 + up[i])
                if v < up_floor:
                    v = up_floor
            elif d < 0.0:
                v = v * (1.0 - down[i])
            f = forward[i] * g
            k = strike[i]
            tt = t[i] - dt[j]
            if tt > 0.0 and v > 0.0:
                sd = v * math.sqrt(tt)
                d1 = math.log(f / k) / sd + 0.5 * sd
                d2 = d1 - sd
                # call F N(d1) - K N(d2); put K N(-d2) - F N(-d1)
                sign = 1.0 if call[i] else -1.0
                p = sign * (f * _ncdf(sign * d1) - k * _ncdf(sign * d2))
                if p < 0.0:
                    p = 0.0
            elif call[i]:
                p = f - k if f > k else 0.0
            else:
                p = k - f if k > f else 0.0
            value[j, i] = p
            vol[j, i] = v
