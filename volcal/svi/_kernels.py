"""Compiled inner kernels of the quasi-explicit SVI calibration (Zeliade 2009).

For fixed ``(m, sigma)`` write ``y = (k - m)/sigma`` and ``s = sqrt(y**2 + 1)``. Raw SVI is
then linear in three numbers (Zeliade Systems, "Quasi-explicit calibration of Gatheral's SVI
model", 2009, section 3)::

    w = a + d y + c s,     c = b sigma,  d = rho b sigma.

We use the rotated pair ``u = c + d = b sigma (1 + rho)`` and ``v = c - d = b sigma (1 - rho)``
so that ``w = a + u (s + y)/2 + v (s - y)/2``: Zeliade's domain ``|d| <= c``,
``|d| <= 4 sigma - c`` becomes the box ``0 <= u, v <= 4 sigma``; we use Lee's tighter bound
``b (1 +- rho) <= 2`` (asymptotic slopes of total variance at most 2), i.e. ``u, v <= 2 sigma``.
With ``a`` in a box too (see :func:`qe_objective`), the inner problem is a convex quadratic
programme over a box in three variables, solved exactly by enumerating the 27 active sets.

The inner objective is bid/ask aware in total variance::

    sum_i q_i [dist(w_i, [wb_i, wa_i])**2 + lam2 (w_i - wm_i)**2]

(convex, piecewise quadratic); it is minimised exactly by a finite active-set (semismooth
Newton) iteration over which quotes sit below, inside or above their band.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

FloatArray = npt.NDArray[np.float64]

_MAX_ACTIVE_SET_ITERATIONS = 40


@njit(cache=True)
def _solve_box3(
    g: FloatArray, h: FloatArray, lo: FloatArray, hi: FloatArray
) -> FloatArray:  # pragma: no cover - compiled
    """argmin 0.5 x'Gx - h'x over lo <= x <= hi (G 3x3 positive definite)."""
    best = np.inf
    best_x = np.empty(3)
    best_x[:] = np.minimum(np.maximum(0.0, lo), hi)
    x = np.empty(3)
    free = np.empty(3, dtype=np.int64)
    a = np.empty((3, 3))
    r = np.empty(3)
    for p in range(27):
        nf = 0
        code = p
        for j in range(3):
            st = code % 3
            code //= 3
            if st == 0:
                free[nf] = j
                nf += 1
                x[j] = 0.0
            elif st == 1:
                x[j] = lo[j]
            else:
                x[j] = hi[j]
        if nf > 0:
            for ii in range(nf):
                i = free[ii]
                s = h[i]
                for j in range(3):
                    is_free = False
                    for jj in range(nf):
                        if free[jj] == j:
                            is_free = True
                    if not is_free:
                        s -= g[i, j] * x[j]
                r[ii] = s
                for jj in range(nf):
                    a[ii, jj] = g[i, free[jj]]
            if nf == 1:
                if a[0, 0] <= 0.0:
                    continue
                x[free[0]] = r[0] / a[0, 0]
            elif nf == 2:
                det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
                if det <= 1e-14 * a[0, 0] * a[1, 1]:
                    continue
                x[free[0]] = (r[0] * a[1, 1] - a[0, 1] * r[1]) / det
                x[free[1]] = (a[0, 0] * r[1] - a[1, 0] * r[0]) / det
            else:
                c00 = a[1, 1] * a[2, 2] - a[1, 2] * a[2, 1]
                c01 = a[1, 2] * a[2, 0] - a[1, 0] * a[2, 2]
                c02 = a[1, 0] * a[2, 1] - a[1, 1] * a[2, 0]
                det = a[0, 0] * c00 + a[0, 1] * c01 + a[0, 2] * c02
                if det <= 1e-14 * a[0, 0] * a[1, 1] * a[2, 2]:
                    continue
                c10 = a[0, 2] * a[2, 1] - a[0, 1] * a[2, 2]
                c11 = a[0, 0] * a[2, 2] - a[0, 2] * a[2, 0]
                c12 = a[0, 1] * a[2, 0] - a[0, 0] * a[2, 1]
                c20 = a[0, 1] * a[1, 2] - a[0, 2] * a[1, 1]
                c21 = a[0, 2] * a[1, 0] - a[0, 0] * a[1, 2]
                c22 = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
                x[0] = (c00 * r[0] + c10 * r[1] + c20 * r[2]) / det
                x[1] = (c01 * r[0] + c11 * r[1] + c21 * r[2]) / det
                x[2] = (c02 * r[0] + c12 * r[1] + c22 * r[2]) / det
            feasible = True
            for ii in range(nf):
                j = free[ii]
                tol = 1e-12 * (1.0 + abs(lo[j]) + abs(hi[j]))
                if x[j] < lo[j] - tol or x[j] > hi[j] + tol:
                    feasible = False
                x[j] = min(max(x[j], lo[j]), hi[j])
            if not feasible:
                continue
        obj = 0.0
        for i in range(3):
            gx = 0.0
            for j in range(3):
                gx += g[i, j] * x[j]
            obj += 0.5 * x[i] * gx - h[i] * x[i]
        if obj < best:
            best = obj
            best_x[:] = x
    return best_x


@njit(cache=True)
def inner_solve(
    k: FloatArray,
    wb: FloatArray,
    wa: FloatArray,
    wm: FloatArray,
    q: FloatArray,
    lam2: float,
    m: float,
    sigma: float,
    lo: FloatArray,
    hi: FloatArray,
) -> tuple[float, float, float, float]:  # pragma: no cover - compiled
    """Exact minimiser ``(a, u, v)`` of the bid/ask-aware total-variance objective.

    ``q`` are per-quote weights in total variance, ``lam2`` the weight of the pull to mid,
    ``lo``/``hi`` the box on ``(a, u, v)``. Returns ``(a, u, v, objective)``.
    """
    n = k.shape[0]
    x0 = np.ones(n)
    x1 = np.empty(n)
    x2 = np.empty(n)
    for i in range(n):
        y = (k[i] - m) / sigma
        s = math.sqrt(y * y + 1.0)
        x1[i] = 0.5 * (s + y)
        x2[i] = 0.5 * (s - y)
    state = np.zeros(n, dtype=np.int8)
    new_state = np.zeros(n, dtype=np.int8)
    g = np.empty((3, 3))
    h = np.empty(3)
    best = np.inf
    best_p = np.zeros(3)
    for _ in range(_MAX_ACTIVE_SET_ITERATIONS):
        g[:, :] = 0.0
        h[:] = 0.0
        for i in range(n):
            if state[i] == 0:
                wt = q[i] * lam2
                tgt = wm[i]
            elif state[i] < 0:
                wt = q[i] * (1.0 + lam2)
                tgt = (wb[i] + lam2 * wm[i]) / (1.0 + lam2)
            else:
                wt = q[i] * (1.0 + lam2)
                tgt = (wa[i] + lam2 * wm[i]) / (1.0 + lam2)
            r0 = x0[i]
            r1 = x1[i]
            r2 = x2[i]
            g[0, 0] += wt * r0 * r0
            g[0, 1] += wt * r0 * r1
            g[0, 2] += wt * r0 * r2
            g[1, 1] += wt * r1 * r1
            g[1, 2] += wt * r1 * r2
            g[2, 2] += wt * r2 * r2
            h[0] += wt * r0 * tgt
            h[1] += wt * r1 * tgt
            h[2] += wt * r2 * tgt
        g[1, 0] = g[0, 1]
        g[2, 0] = g[0, 2]
        g[2, 1] = g[1, 2]
        p = _solve_box3(g, h, lo, hi)
        obj = 0.0
        changed = False
        for i in range(n):
            w = p[0] + p[1] * x1[i] + p[2] * x2[i]
            if w < wb[i]:
                dist = wb[i] - w
                new_state[i] = -1
            elif w > wa[i]:
                dist = w - wa[i]
                new_state[i] = 1
            else:
                dist = 0.0
                new_state[i] = 0
            if new_state[i] != state[i]:
                changed = True
            obj += q[i] * (dist * dist + lam2 * (w - wm[i]) ** 2)
        if obj < best:
            best = obj
            best_p[:] = p
        if not changed:
            break
        state[:] = new_state
    return best_p[0], best_p[1], best_p[2], best


@njit(cache=True)
def iv_loss(
    w: FloatArray,
    t: float,
    vb: FloatArray,
    va: FloatArray,
    vm: FloatArray,
    weight2: FloatArray,
    lam2: float,
) -> float:  # pragma: no cover - compiled
    """Bid/ask-aware implied-vol objective of fitted total variances ``w``.

    ``sum_i weight2_i [dist(sigma_i, [vb_i, va_i])**2 + lam2 (sigma_i - vm_i)**2]`` with
    ``sigma_i = sqrt(max(w_i, 0)/t)``.
    """
    total = 0.0
    for i in range(w.shape[0]):
        s = math.sqrt(max(w[i], 0.0) / t)
        if s < vb[i]:
            d = vb[i] - s
        elif s > va[i]:
            d = s - va[i]
        else:
            d = 0.0
        total += weight2[i] * (d * d + lam2 * (s - vm[i]) ** 2)
    return total


@njit(cache=True)
def qe_objective(
    m: float,
    sigma: float,
    k: FloatArray,
    t: float,
    wb: FloatArray,
    wa: FloatArray,
    wm: FloatArray,
    q: FloatArray,
    vb: FloatArray,
    va: FloatArray,
    vm: FloatArray,
    weight2: FloatArray,
    lam2: float,
    a_hi: float,
    uv_lo: float,
) -> tuple[float, float, float, float]:  # pragma: no cover - compiled
    """Outer objective of the quasi-explicit method at ``(m, sigma)``.

    Solves the inner problem for ``(a, u, v)`` over the box ``-2 sigma <= a <= a_hi``,
    ``uv_lo sigma <= u, v <= 2 sigma`` and returns ``(iv_objective, a, u, v)``. The lower
    bound on ``a`` is necessary for ``min_k w = a + sqrt(u v) >= 0`` given ``u, v <= 2 sigma``
    (Zeliade's ``a >= 0`` is sufficient but excludes many real smiles); positivity of ``w``
    itself is a constraint of the polish stage.
    """
    lo = np.array([-2.0 * sigma, uv_lo * sigma, uv_lo * sigma])
    hi = np.array([a_hi, 2.0 * sigma, 2.0 * sigma])
    a, u, v, _ = inner_solve(k, wb, wa, wm, q, lam2, m, sigma, lo, hi)
    n = k.shape[0]
    w = np.empty(n)
    for i in range(n):
        y = (k[i] - m) / sigma
        s = math.sqrt(y * y + 1.0)
        w[i] = a + 0.5 * u * (s + y) + 0.5 * v * (s - y)
    return iv_loss(w, t, vb, va, vm, weight2, lam2), a, u, v


@njit(cache=True)
def qe_grid(
    ms: FloatArray,
    sigmas: FloatArray,
    k: FloatArray,
    t: float,
    wb: FloatArray,
    wa: FloatArray,
    wm: FloatArray,
    q: FloatArray,
    vb: FloatArray,
    va: FloatArray,
    vm: FloatArray,
    weight2: FloatArray,
    lam2: float,
    a_hi: float,
    uv_lo: float,
) -> FloatArray:  # pragma: no cover - compiled
    """Outer objective on the grid ``ms x sigmas`` (for the starting points of the search)."""
    out = np.empty((ms.shape[0], sigmas.shape[0]))
    for i in range(ms.shape[0]):
        for j in range(sigmas.shape[0]):
            out[i, j] = qe_objective(
                ms[i], sigmas[j], k, t, wb, wa, wm, q, vb, va, vm, weight2, lam2, a_hi, uv_lo
            )[0]
    return out


@njit(cache=True)
def _qe_value(
    z0: float,
    z1: float,
    lo0: float,
    hi0: float,
    lo1: float,
    hi1: float,
    k: FloatArray,
    t: float,
    wb: FloatArray,
    wa: FloatArray,
    wm: FloatArray,
    q: FloatArray,
    vb: FloatArray,
    va: FloatArray,
    vm: FloatArray,
    weight2: FloatArray,
    lam2: float,
    a_hi: float,
    uv_lo: float,
) -> float:  # pragma: no cover - compiled
    m = min(max(z0, lo0), hi0)
    ls = min(max(z1, lo1), hi1)
    return qe_objective(
        m, math.exp(ls), k, t, wb, wa, wm, q, vb, va, vm, weight2, lam2, a_hi, uv_lo
    )[0]


@njit(cache=True)
def qe_nelder_mead(
    x0: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    k: FloatArray,
    t: float,
    wb: FloatArray,
    wa: FloatArray,
    wm: FloatArray,
    q: FloatArray,
    vb: FloatArray,
    va: FloatArray,
    vm: FloatArray,
    weight2: FloatArray,
    lam2: float,
    a_hi: float,
    uv_lo: float,
    maxiter: int,
    xatol: float,
    fatol: float,
) -> tuple[float, float, float, int, int]:  # pragma: no cover - compiled
    """Nelder-Mead (standard coefficients 1, 2, 1/2, 1/2) on the quasi-explicit outer
    objective in ``z = (m, ln sigma)``, vertices clipped to the box ``[lo, hi]``.

    Returns ``(m, ln sigma, objective, iterations, evaluations)``.
    """
    sim = np.empty((3, 2))
    fs = np.empty(3)
    sim[0, 0] = min(max(x0[0], lo[0]), hi[0])
    sim[0, 1] = min(max(x0[1], lo[1]), hi[1])
    for j in range(2):
        step = 0.05 * (hi[j] - lo[j])
        sim[j + 1, :] = sim[0, :]
        v = sim[0, j] + step
        if v > hi[j]:
            v = sim[0, j] - step
        sim[j + 1, j] = v
    nfev = 0
    for i in range(3):
        fs[i] = _qe_value(
            sim[i, 0],
            sim[i, 1],
            lo[0],
            hi[0],
            lo[1],
            hi[1],
            k,
            t,
            wb,
            wa,
            wm,
            q,
            vb,
            va,
            vm,
            weight2,
            lam2,
            a_hi,
            uv_lo,
        )
        nfev += 1
    it = 0
    xr = np.empty(2)
    xe = np.empty(2)
    xc = np.empty(2)
    cen = np.empty(2)
    while it < maxiter:
        # order
        for i in range(1, 3):
            j = i
            while j > 0 and fs[j] < fs[j - 1]:
                tmpf = fs[j]
                fs[j] = fs[j - 1]
                fs[j - 1] = tmpf
                for d in range(2):
                    tmp = sim[j, d]
                    sim[j, d] = sim[j - 1, d]
                    sim[j - 1, d] = tmp
                j -= 1
        xspread = 0.0
        for i in range(1, 3):
            for d in range(2):
                xspread = max(xspread, abs(sim[i, d] - sim[0, d]))
        fspread = max(abs(fs[1] - fs[0]), abs(fs[2] - fs[0]))
        if xspread <= xatol and fspread <= fatol:
            break
        it += 1
        for d in range(2):
            cen[d] = 0.5 * (sim[0, d] + sim[1, d])
        for d in range(2):
            xr[d] = min(max(cen[d] + (cen[d] - sim[2, d]), lo[d]), hi[d])
        fr = _qe_value(
            xr[0],
            xr[1],
            lo[0],
            hi[0],
            lo[1],
            hi[1],
            k,
            t,
            wb,
            wa,
            wm,
            q,
            vb,
            va,
            vm,
            weight2,
            lam2,
            a_hi,
            uv_lo,
        )
        nfev += 1
        if fr < fs[0]:
            for d in range(2):
                xe[d] = min(max(cen[d] + 2.0 * (cen[d] - sim[2, d]), lo[d]), hi[d])
            fe = _qe_value(
                xe[0],
                xe[1],
                lo[0],
                hi[0],
                lo[1],
                hi[1],
                k,
                t,
                wb,
                wa,
                wm,
                q,
                vb,
                va,
                vm,
                weight2,
                lam2,
                a_hi,
                uv_lo,
            )
            nfev += 1
            if fe < fr:
                sim[2, :] = xe
                fs[2] = fe
            else:
                sim[2, :] = xr
                fs[2] = fr
            continue
        if fr < fs[1]:
            sim[2, :] = xr
            fs[2] = fr
            continue
        shrink = False
        if fr < fs[2]:
            for d in range(2):
                xc[d] = cen[d] + 0.5 * (xr[d] - cen[d])
            fc = _qe_value(
                xc[0],
                xc[1],
                lo[0],
                hi[0],
                lo[1],
                hi[1],
                k,
                t,
                wb,
                wa,
                wm,
                q,
                vb,
                va,
                vm,
                weight2,
                lam2,
                a_hi,
                uv_lo,
            )
            nfev += 1
            if fc <= fr:
                sim[2, :] = xc
                fs[2] = fc
            else:
                shrink = True
        else:
            for d in range(2):
                xc[d] = cen[d] + 0.5 * (sim[2, d] - cen[d])
            fc = _qe_value(
                xc[0],
                xc[1],
                lo[0],
                hi[0],
                lo[1],
                hi[1],
                k,
                t,
                wb,
                wa,
                wm,
                q,
                vb,
                va,
                vm,
                weight2,
                lam2,
                a_hi,
                uv_lo,
            )
            nfev += 1
            if fc < fs[2]:
                sim[2, :] = xc
                fs[2] = fc
            else:
                shrink = True
        if shrink:
            for i in range(1, 3):
                for d in range(2):
                    sim[i, d] = sim[0, d] + 0.5 * (sim[i, d] - sim[0, d])
                fs[i] = _qe_value(
                    sim[i, 0],
                    sim[i, 1],
                    lo[0],
                    hi[0],
                    lo[1],
                    hi[1],
                    k,
                    t,
                    wb,
                    wa,
                    wm,
                    q,
                    vb,
                    va,
                    vm,
                    weight2,
                    lam2,
                    a_hi,
                    uv_lo,
                )
                nfev += 1
    best = 0
    for i in range(1, 3):
        if fs[i] < fs[best]:
            best = i
    return sim[best, 0], sim[best, 1], fs[best], it, nfev


@njit(cache=True)
def svi_w_jac(
    a: float, b: float, rho: float, m: float, sigma: float, k: FloatArray
) -> tuple[FloatArray, FloatArray]:  # pragma: no cover - compiled
    """Raw SVI ``w(k)`` and its Jacobian ``(n, 5)`` in ``(a, b, rho, m, sigma)``."""
    n = k.shape[0]
    w = np.empty(n)
    dw = np.empty((n, 5))
    for i in range(n):
        z = k[i] - m
        r = math.sqrt(z * z + sigma * sigma)
        w[i] = a + b * (rho * z + r)
        dw[i, 0] = 1.0
        dw[i, 1] = rho * z + r
        dw[i, 2] = b * z
        dw[i, 3] = -b * (rho + z / r)
        dw[i, 4] = b * sigma / r
    return w, dw


@njit(cache=True)
def svi_g_jac(
    a: float, b: float, rho: float, m: float, sigma: float, k: FloatArray
) -> tuple[FloatArray, FloatArray]:  # pragma: no cover - compiled
    """Butterfly function ``g(k)`` of raw SVI (GJ 2014, eq. 2.1) and its Jacobian ``(n, 5)``;
    ``g = -1`` with a zero gradient where ``w <= 0``."""
    n = k.shape[0]
    g = np.empty(n)
    dg = np.zeros((n, 5))
    s2 = sigma * sigma
    dw = np.empty(5)
    dw1 = np.empty(5)
    dw2 = np.empty(5)
    for i in range(n):
        kk = k[i]
        z = kk - m
        r = math.sqrt(z * z + s2)
        r3 = r * r * r
        r5 = r3 * r * r
        w = a + b * (rho * z + r)
        if not w > 0.0:
            g[i] = -1.0
            continue
        w1 = b * (rho + z / r)
        w2 = b * s2 / r3
        dw[0] = 1.0
        dw[1] = rho * z + r
        dw[2] = b * z
        dw[3] = -b * (rho + z / r)
        dw[4] = b * sigma / r
        dw1[0] = 0.0
        dw1[1] = rho + z / r
        dw1[2] = b
        dw1[3] = -b * s2 / r3
        dw1[4] = -b * z * sigma / r3
        dw2[0] = 0.0
        dw2[1] = s2 / r3
        dw2[2] = 0.0
        dw2[3] = 3.0 * b * s2 * z / r5
        dw2[4] = b * (2.0 * sigma / r3 - 3.0 * sigma * s2 / r5)
        e = 1.0 - kk * w1 / (2.0 * w)
        g[i] = e * e - w1 * w1 / 4.0 * (1.0 / w + 0.25) + w2 / 2.0
        c1 = w1 / 2.0 * (1.0 / w + 0.25)
        c2 = w1 * w1 / (4.0 * w * w)
        for j in range(5):
            de = -kk / 2.0 * (dw1[j] / w - w1 / (w * w) * dw[j])
            dg[i, j] = 2.0 * e * de - c1 * dw1[j] + c2 * dw[j] + 0.5 * dw2[j]
    return g, dg
