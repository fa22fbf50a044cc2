"""Compiled kernels of the arbitrage report and of :class:`~volcal.svi.svi_surface.SviSurface`.

Each kernel repeats, operation for operation, the NumPy code it replaces (so the results are
the same to the last bit): the raw SVI derivatives of :meth:`volcal.svi.params.SviRaw.derivatives`,
the running upper envelope and the time rules of ``SviSurface``, and the butterfly function
``g`` of :func:`volcal.surface.butterfly_g` (Gatheral & Jacquier 2014, eq. 2.1). Compiled with
``cache=True`` like :mod:`volcal.svi._kernels`.

Smile parameters are passed as an ``(n, 6)`` array of rows ``(a, b, rho, m, sigma**2,
b sigma**2)`` (the two products computed in Python, as ``SviRaw.derivatives`` does).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# per time row: min g, its index, min dw, its index, count of dw < 0
Report = tuple[FloatArray, IntArray, FloatArray, IntArray, IntArray]


@njit(cache=True, error_model="numpy", inline="always")
def _smile(p: FloatArray, j: int, k: float) -> tuple[float, float, float]:  # pragma: no cover
    """``(w, dw/dk, d2w/dk2)`` of raw SVI smile ``j`` at ``k``, the operations of
    ``SviRaw.derivatives`` (``r**3`` as ``r (x**2 + sigma**2)``: only correctly rounded
    operations, so the bits do not depend on a library's ``pow``)."""
    x = k - p[j, 3]
    r2 = x * x + p[j, 4]
    r = math.sqrt(r2)
    w = p[j, 0] + p[j, 1] * (p[j, 2] * x + r)
    w1 = p[j, 1] * (p[j, 2] + x / r)
    w2 = p[j, 5] / (r * r2)
    return w, w1, w2


@njit(cache=True, error_model="numpy", inline="always")
def _envelope(p: FloatArray, i: int, k: float) -> tuple[float, float, float]:  # pragma: no cover
    """Running upper envelope ``W_i`` of smiles ``0..i`` at ``k`` with its derivatives."""
    w, w1, w2 = _smile(p, 0, k)
    for j in range(1, i + 1):
        wj, w1j, w2j = _smile(p, j, k)
        if wj > w:
            w, w1, w2 = wj, w1j, w2j
    return w, w1, w2


@njit(cache=True, error_model="numpy")
def svi_surface_eval(
    k: FloatArray, t: FloatArray, ts: FloatArray, p: FloatArray, out: FloatArray
) -> None:  # pragma: no cover - compiled
    """``out[:, i] = (w, dw/dk, d2w/dk2, dw/dt)`` of the SVI surface at ``(k[i], t[i])``.

    Rules of :class:`~volcal.svi.svi_surface.SviSurface`: envelope at the expiries ``ts``,
    linear in ``t`` between them, ``(t/t_1) W_1`` before the first and ``(t/t_n) W_n`` after
    the last; NaN where ``t`` is not finite or ``t <= 0``.
    """
    n = ts.size
    for q in range(k.size):
        tq = t[q]
        kq = k[q]
        if not (math.isfinite(tq) and tq > 0):
            out[0, q] = np.nan
            out[1, q] = np.nan
            out[2, q] = np.nan
            out[3, q] = np.nan
            continue
        i = np.searchsorted(ts, tq, side="right") - 1
        if i == -1 or i == n - 1:
            j = 0 if i == -1 else n - 1
            a0, a1, a2 = _envelope(p, j, kq)
            scale = tq / ts[j]
            out[0, q] = a0 * scale
            out[1, q] = a1 * scale
            out[2, q] = a2 * scale
            out[3, q] = a0 / ts[j]
        else:
            a0, a1, a2 = _envelope(p, i, kq)
            b0, b1, b2 = _envelope(p, i + 1, kq)
            dt = ts[i + 1] - ts[i]
            lam = (tq - ts[i]) / dt
            out[0, q] = a0 + lam * (b0 - a0)
            out[1, q] = a1 + lam * (b1 - a1)
            out[2, q] = a2 + lam * (b2 - a2)
            out[3, q] = (b0 - a0) / dt


@njit(cache=True, error_model="numpy")
def svi_node_envelopes(k: FloatArray, p: FloatArray) -> FloatArray:  # pragma: no cover
    """``E[i, :, q] = (W_i, W_i', W_i'')`` at ``k[q]`` for every expiry ``i`` (running
    envelope of smiles ``0..i``), shape ``(n, 3, k.size)``; smiles by :func:`_smile`."""
    n = p.shape[0]
    nk = k.size
    e = np.empty((n, 3, nk))
    for q in range(nk):  # loops over k: vectorised by the compiler
        w, w1, w2 = _smile(p, 0, k[q])
        e[0, 0, q] = w
        e[0, 1, q] = w1
        e[0, 2, q] = w2
    for j in range(1, n):
        for q in range(nk):
            wj, w1j, w2j = _smile(p, j, k[q])
            take = wj > e[j - 1, 0, q]
            e[j, 0, q] = wj if take else e[j - 1, 0, q]
            e[j, 1, q] = w1j if take else e[j - 1, 1, q]
            e[j, 2, q] = w2j if take else e[j - 1, 2, q]
    return e


@njit(cache=True, error_model="numpy", inline="always")
def _row_stats(
    k: FloatArray,
    w: FloatArray,
    w1: FloatArray,
    w2: FloatArray,
    wprev: FloatArray,
    first: bool,
    g: FloatArray,
    out: Report,
    j: int,
) -> None:  # pragma: no cover - compiled
    """Row ``j`` of the report ``out`` (:func:`_new_report`): ``min g``, its index,
    ``min (w - wprev)``, its index and the count of ``w - wprev < 0`` of one time's row
    (``np.argmin`` conventions: first minimum; the first NaN wins). ``g`` is scratch space.

    ``g`` as :func:`volcal.surface.butterfly_g` (Gatheral & Jacquier 2014, eq. 2.1), with
    non-finite values and ``w <= 0`` counted as ``-inf`` (arbitrage), as the report did.
    """
    nk = k.size
    for q in range(nk):  # branch-free: vectorised by the compiler
        wq = w[q]
        a = 1.0 - k[q] * w1[q] / (2.0 * wq)
        g[q] = a * a - w1[q] * w1[q] / 4.0 * (1.0 / wq + 0.25) + w2[q] / 2.0
    g_best = np.inf
    g_arg = 0
    for q in range(nk):
        v = g[q]
        if not (w[q] > 0 and math.isfinite(v)):
            v = -np.inf
        if v < g_best:
            g_best = v
            g_arg = q
    d_best = np.inf
    d_arg = 0
    n_neg = 0
    if not first:
        d_nan = False
        for q in range(nk):
            d = w[q] - wprev[q]
            if d < 0.0:
                n_neg += 1
            if not d_nan:
                if math.isnan(d):
                    d_nan = True
                    d_best = d
                    d_arg = q
                elif d < d_best:
                    d_best = d
                    d_arg = q
    out[0][j] = g_best
    out[1][j] = g_arg
    out[2][j] = d_best
    out[3][j] = d_arg
    out[4][j] = n_neg


@njit(cache=True, error_model="numpy", inline="always")
def _new_report(nt: int) -> Report:  # pragma: no cover - compiled
    """Empty report of ``nt`` time rows: ``(min g, its index, min dw, its index, count of
    dw < 0)``, ``min dw`` NaN until written."""
    return (
        np.empty(nt),
        np.zeros(nt, dtype=np.int64),
        np.full(nt, np.nan),
        np.zeros(nt, dtype=np.int64),
        np.zeros(nt, dtype=np.int64),
    )


@njit(cache=True, error_model="numpy", inline="always")
def _rows(
    nk: int,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:  # pragma: no cover
    """Scratch rows ``(w, w', w'', previous w, g)`` of ``nk`` points."""
    return np.empty(nk), np.empty(nk), np.empty(nk), np.empty(nk), np.empty(nk)


@njit(cache=True, error_model="numpy")
def grid_report(
    k: FloatArray, w: FloatArray, w1: FloatArray, w2: FloatArray
) -> Report:  # pragma: no cover
    """Butterfly and calendar statistics of ``(w, w', w'')`` on a ``(times, k)`` grid.

    Returns, per time row ``j``: ``min g`` and its index (Gatheral & Jacquier 2014, eq. 2.1;
    ``-inf`` where ``g`` is not finite or ``w <= 0``) and, for ``j >= 1``, the smallest
    ``w[j] - w[j - 1]``, its index and the number of negative differences (row 0: unused).
    """
    nt = w.shape[0]
    out = _new_report(nt)
    g = np.empty(k.size)
    for j in range(nt):
        prev = w[j - 1] if j > 0 else w[j]
        _row_stats(k, w[j], w1[j], w2[j], prev, j == 0, g, out, j)
    return out


@njit(cache=True, error_model="numpy")
def svi_grid_report(
    k: FloatArray, times: FloatArray, ts: FloatArray, p: FloatArray
) -> Report:  # pragma: no cover
    """:func:`grid_report` of an SVI surface (rules of :func:`svi_surface_eval`, times
    ``t > 0`` given one at a time as ``SviSurface._derivatives_at`` does) without storing
    the grid: the node envelopes are computed once."""
    e = svi_node_envelopes(k, p)
    n = ts.size
    nt = times.size
    nk = k.size
    out = _new_report(nt)
    w, w1, w2, prev, g = _rows(nk)
    for jt in range(nt):
        t = times[jt]
        i = np.searchsorted(ts, t, side="right") - 1
        if i == -1 or i == n - 1:
            j = 0 if i == -1 else n - 1
            scale = t / ts[j]
            for q in range(nk):
                w[q] = e[j, 0, q] * scale
                w1[q] = e[j, 1, q] * scale
                w2[q] = e[j, 2, q] * scale
        else:
            lam = (t - ts[i]) / (ts[i + 1] - ts[i])
            for q in range(nk):
                a0 = e[i, 0, q]
                a1 = e[i, 1, q]
                a2 = e[i, 2, q]
                w[q] = a0 + lam * (e[i + 1, 0, q] - a0)
                w1[q] = a1 + lam * (e[i + 1, 1, q] - a1)
                w2[q] = a2 + lam * (e[i + 1, 2, q] - a2)
        _row_stats(k, w, w1, w2, prev, jt == 0, g, out, jt)
        prev[:] = w
    return out


@njit(cache=True, error_model="numpy")
def xssvi_grid_report(k: FloatArray, curves: FloatArray) -> Report:  # pragma: no cover
    """:func:`grid_report` of an (e)SSVI surface on the grid ``k`` at the times whose curves
    ``(theta, psi, chi, ...)`` are the columns of ``curves`` (``w, w', w''`` computed as in
    :func:`volcal.svi.ssvi._xssvi_eval`, without storing the grid)."""
    nt = curves.shape[1]
    out = _new_report(nt)
    w, w1, w2, prev, g = _rows(k.size)
    for jt in range(nt):
        th = curves[0, jt]
        ps = curves[1, jt]
        ch = curves[2, jt]
        for q in range(k.size):
            kk = k[q]
            r = math.sqrt(ps * ps * kk * kk + 2.0 * ch * th * kk + th * th)
            w[q] = 0.5 * (th + ch * kk + r)
            w1[q] = 0.5 * (ch + (ps * ps * kk + ch * th) / r)
            w2[q] = 0.5 * th * th * (ps * ps - ch * ch) / (r * r * r)
        _row_stats(k, w, w1, w2, prev, jt == 0, g, out, jt)
        prev[:] = w
    return out
