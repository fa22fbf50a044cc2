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
Newton) iteration over which quotes sit below, inside or above their band. With a
pseudo-Huber knee ``hub > 0`` the squared distance ``q_i dist**2`` becomes
``2 hub**2 (sqrt(1 + q_i dist**2 / hub**2) - 1)`` (still convex), minimised by a projected
Newton iteration with a line search (:func:`_inner_huber`). The polish
(:func:`al_lm_fit`) uses the same cost in implied vol, in residual form
``sign(e) sqrt(rho(e))``.
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
    # the unconstrained minimiser, when it lies in the box, is the answer (convex problem)
    c00 = g[1, 1] * g[2, 2] - g[1, 2] * g[2, 1]
    c01 = g[1, 2] * g[2, 0] - g[1, 0] * g[2, 2]
    c02 = g[1, 0] * g[2, 1] - g[1, 1] * g[2, 0]
    det = g[0, 0] * c00 + g[0, 1] * c01 + g[0, 2] * c02
    if det > 1e-14 * g[0, 0] * g[1, 1] * g[2, 2]:
        c10 = g[0, 2] * g[2, 1] - g[0, 1] * g[2, 2]
        c11 = g[0, 0] * g[2, 2] - g[0, 2] * g[2, 0]
        c12 = g[0, 1] * g[2, 0] - g[0, 0] * g[2, 1]
        c20 = g[0, 1] * g[1, 2] - g[0, 2] * g[1, 1]
        c21 = g[0, 2] * g[1, 0] - g[0, 0] * g[1, 2]
        c22 = g[0, 0] * g[1, 1] - g[0, 1] * g[1, 0]
        x_u = np.empty(3)
        x_u[0] = (c00 * h[0] + c10 * h[1] + c20 * h[2]) / det
        x_u[1] = (c01 * h[0] + c11 * h[1] + c21 * h[2]) / det
        x_u[2] = (c02 * h[0] + c12 * h[1] + c22 * h[2]) / det
        if lo[0] <= x_u[0] <= hi[0] and lo[1] <= x_u[1] <= hi[1] and lo[2] <= x_u[2] <= hi[2]:
            return x_u
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
def _inner_value(
    p: FloatArray,
    x1: FloatArray,
    x2: FloatArray,
    wb: FloatArray,
    wa: FloatArray,
    wm: FloatArray,
    q: FloatArray,
    lam2: float,
    hub: float,
    grad: FloatArray,
    hess: FloatArray,
    want: bool,
) -> float:  # pragma: no cover - compiled
    """Pseudo-Huber inner objective at ``p = (a, u, v)``; with ``want`` also its gradient and
    Hessian (``rho'' `` of the pseudo-Huber, exact: the objective is convex and piecewise
    smooth)."""
    hub2 = hub * hub
    total = 0.0
    if want:
        grad[:] = 0.0
        hess[:, :] = 0.0
    for i in range(x1.shape[0]):
        w = p[0] + p[1] * x1[i] + p[2] * x2[i]
        sq = math.sqrt(q[i])
        if w < wb[i]:
            e = sq * (wb[i] - w)
            sgn = -1.0
        elif w > wa[i]:
            e = sq * (w - wa[i])
            sgn = 1.0
        else:
            e = 0.0
            sgn = 0.0
        x2e = e * e / hub2
        root = math.sqrt(1.0 + x2e)
        total += 2.0 * e * e / (root + 1.0) + q[i] * lam2 * (w - wm[i]) ** 2
        if want:
            d1 = sgn * sq * 2.0 * e / root + 2.0 * q[i] * lam2 * (w - wm[i])
            d2 = (q[i] * 2.0 / (root * root * root) if sgn != 0.0 else 0.0) + 2.0 * q[i] * lam2
            r1 = x1[i]
            r2 = x2[i]
            grad[0] += d1
            grad[1] += d1 * r1
            grad[2] += d1 * r2
            hess[0, 0] += d2
            hess[0, 1] += d2 * r1
            hess[0, 2] += d2 * r2
            hess[1, 1] += d2 * r1 * r1
            hess[1, 2] += d2 * r1 * r2
            hess[2, 2] += d2 * r2 * r2
    if want:
        hess[1, 0] = hess[0, 1]
        hess[2, 0] = hess[0, 2]
        hess[2, 1] = hess[1, 2]
    return total


@njit(cache=True)
def _inner_huber(
    x1: FloatArray,
    x2: FloatArray,
    wb: FloatArray,
    wa: FloatArray,
    wm: FloatArray,
    q: FloatArray,
    lam2: float,
    hub: float,
    lo: FloatArray,
    hi: FloatArray,
    p0: FloatArray,
) -> tuple[float, float, float, float]:  # pragma: no cover - compiled
    """Minimiser over the box of the convex pseudo-Huber inner objective: projected Newton
    (each step the exact box-constrained minimiser of the local quadratic model, then an
    Armijo backtracking line search on the true objective), from ``p0``."""
    p = p0.copy()
    grad = np.empty(3)
    hess = np.empty((3, 3))
    rhs = np.empty(3)
    trial = np.empty(3)
    f = _inner_value(p, x1, x2, wb, wa, wm, q, lam2, hub, grad, hess, True)
    for _ in range(_MAX_ACTIVE_SET_ITERATIONS):
        for i in range(3):
            hp = 0.0
            for j in range(3):
                hp += hess[i, j] * p[j]
            rhs[i] = hp - grad[i]
        xn = _solve_box3(hess, rhs, lo, hi)
        slope = 0.0
        for i in range(3):
            slope += grad[i] * (xn[i] - p[i])
        if slope >= 0.0:
            break
        step = 1.0
        fn = f
        accepted = False
        for _ls in range(30):
            for i in range(3):
                trial[i] = p[i] + step * (xn[i] - p[i])
            fn = _inner_value(trial, x1, x2, wb, wa, wm, q, lam2, hub, grad, hess, False)
            if fn <= f + 1e-4 * step * slope:
                accepted = True
                break
            step *= 0.5
        if not accepted:
            break
        p[:] = trial
        done = f - fn <= 1e-9 * f + 1e-300
        f = _inner_value(p, x1, x2, wb, wa, wm, q, lam2, hub, grad, hess, True)
        if done:
            break
    return p[0], p[1], p[2], f


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
    hub: float = 0.0,
) -> tuple[float, float, float, float]:  # pragma: no cover - compiled
    """Exact minimiser ``(a, u, v)`` of the bid/ask-aware total-variance objective.

    ``q`` are per-quote weights in total variance, ``lam2`` the weight of the pull to mid,
    ``lo``/``hi`` the box on ``(a, u, v)``. The squared distance (``hub <= 0``) gives a convex
    piecewise-quadratic problem, solved exactly by an active-set iteration over which quotes
    sit below, inside or above their band. With ``hub > 0`` a quote's weighted distance
    outside its band, ``e = sqrt(q) dist(w, [wb, wa])``, costs the pseudo-Huber
    ``2 hub**2 (sqrt(1 + (e/hub)**2) - 1)`` instead of ``e**2``; the problem stays convex and
    is solved by a projected Newton iteration (:func:`_inner_huber`) from the squared-distance
    solution. Returns ``(a, u, v, objective)``.
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
    if hub > 0.0:
        return _inner_huber(x1, x2, wb, wa, wm, q, lam2, hub, lo, hi, best_p)
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
    hub: float = 0.0,
) -> float:  # pragma: no cover - compiled
    """Bid/ask-aware implied-vol objective of fitted total variances ``w``.

    ``sum_i [rho(sqrt(weight2_i) dist(sigma_i, [vb_i, va_i])) + weight2_i lam2 (sigma_i -
    vm_i)**2]`` with ``sigma_i = sqrt(max(w_i, 0)/t)`` and ``rho(e) = e**2`` when
    ``hub <= 0``, else the pseudo-Huber ``rho(e) = 2 hub**2 (sqrt(1 + (e/hub)**2) - 1)``
    (quadratic for ``|e| << hub``, linear ``2 hub |e|`` beyond).
    """
    total = 0.0
    hub2 = hub * hub
    for i in range(w.shape[0]):
        s = math.sqrt(max(w[i], 0.0) / t)
        if s < vb[i]:
            d = vb[i] - s
        elif s > va[i]:
            d = s - va[i]
        else:
            d = 0.0
        e2 = weight2[i] * d * d
        if hub > 0.0:
            e2 = 2.0 * e2 / (math.sqrt(1.0 + e2 / hub2) + 1.0)
        total += e2 + weight2[i] * lam2 * (s - vm[i]) ** 2
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
    hub: float,
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
    a, u, v, _ = inner_solve(k, wb, wa, wm, q, lam2, m, sigma, lo, hi, hub)
    n = k.shape[0]
    w = np.empty(n)
    for i in range(n):
        y = (k[i] - m) / sigma
        s = math.sqrt(y * y + 1.0)
        w[i] = a + 0.5 * u * (s + y) + 0.5 * v * (s - y)
    return iv_loss(w, t, vb, va, vm, weight2, lam2, hub), a, u, v


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
    hub: float,
) -> FloatArray:  # pragma: no cover - compiled
    """Outer objective on the grid ``ms x sigmas`` (for the starting points of the search)."""
    out = np.empty((ms.shape[0], sigmas.shape[0]))
    for i in range(ms.shape[0]):
        for j in range(sigmas.shape[0]):
            out[i, j] = qe_objective(
                ms[i], sigmas[j], k, t, wb, wa, wm, q, vb, va, vm, weight2, lam2, a_hi, uv_lo, hub
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
    hub: float,
) -> float:  # pragma: no cover - compiled
    m = min(max(z0, lo0), hi0)
    ls = min(max(z1, lo1), hi1)
    return qe_objective(
        m, math.exp(ls), k, t, wb, wa, wm, q, vb, va, vm, weight2, lam2, a_hi, uv_lo, hub
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
    hub: float,
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
            hub,
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
            hub,
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
                hub,
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
                hub,
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
                hub,
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
                    hub,
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
def _g_with_gradient(
    k: float,
    w: float,
    w1: float,
    w2: float,
    dw: FloatArray,
    dw1: FloatArray,
    dw2: FloatArray,
    dg: FloatArray,
) -> float:  # pragma: no cover - compiled
    """``g(k)`` (GJ 2014, eq. 2.1) from ``w, w', w''`` (``w > 0``), with its gradient written
    into ``dg`` from the gradients ``dw, dw1, dw2`` of ``w, w', w''`` (any coordinates)."""
    e = 1.0 - k * w1 / (2.0 * w)
    c1 = w1 / 2.0 * (1.0 / w + 0.25)
    c2 = w1 * w1 / (4.0 * w * w)
    for j in range(dg.shape[0]):
        de = -k / 2.0 * (dw1[j] / w - w1 / (w * w) * dw[j])
        dg[j] = 2.0 * e * de - c1 * dw1[j] + c2 * dw[j] + 0.5 * dw2[j]
    return e * e - w1 * w1 / 4.0 * (1.0 / w + 0.25) + w2 / 2.0


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
        g[i] = _g_with_gradient(kk, w, w1, w2, dw, dw1, dw2, dg[i])
    return g, dg


# --- constrained slice fit: augmented Lagrangian with a Levenberg-Marquardt inner solver ------
#
# Coordinates ``z = (a, p, c, m, ln sigma)`` with ``p = b (1 - rho)`` and ``c = b (1 + rho)``
# the asymptotic wing slopes of ``w``. With ``y = k - m``, ``r = sqrt(y**2 + sigma**2)``,
# ``A = (r + y)/2``, ``B = (r - y)/2``::
#
#     w   = a + c A + p B
#     w'  = (c A - p B) / r
#     w'' = (c + p) sigma**2 / (2 r**3)
#
# ``w`` is linear in ``(a, p, c)`` and Lee's bound ``b (1 +- rho) <= 2`` is a box.


@njit(cache=True)
def _z_parts(
    z: FloatArray, k: float, dw: FloatArray, dw1: FloatArray, dw2: FloatArray, s: float
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """``(w, w', w'')`` at ``k`` and their gradients in ``z`` (written into dw, dw1, dw2);
    ``s = exp(z[4])`` (sigma, computed once by the caller)."""
    a = z[0]
    p = z[1]
    c = z[2]
    m = z[3]
    s2 = s * s
    y = k - m
    r = math.sqrt(y * y + s2)
    r3 = r * r * r
    r5 = r3 * r * r
    aa = 0.5 * (r + y)
    bb = 0.5 * (r - y)
    cp = c + p
    w = a + c * aa + p * bb
    w1 = (c * aa - p * bb) / r
    w2 = 0.5 * cp * s2 / r3
    w3 = -1.5 * cp * s2 * y / r5
    dw[0] = 1.0
    dw[1] = bb
    dw[2] = aa
    dw[3] = -w1
    dw[4] = 0.5 * cp * s2 / r
    dw1[0] = 0.0
    dw1[1] = -bb / r
    dw1[2] = aa / r
    dw1[3] = -w2
    dw1[4] = -0.5 * cp * y * s2 / r3
    dw2[0] = 0.0
    dw2[1] = 0.5 * s2 / r3
    dw2[2] = 0.5 * s2 / r3
    dw2[3] = -w3
    dw2[4] = 0.5 * cp * (2.0 * s2 / r3 - 3.0 * s2 * s2 / r5)
    return w, w1, w2


@njit(cache=True)
def _z_values(z: FloatArray, k: float, s: float) -> tuple[float, float, float]:  # pragma: no cover
    """``(w, w', w'')`` at ``k`` without gradients, the same arithmetic as :func:`_z_parts`."""
    a = z[0]
    p = z[1]
    c = z[2]
    m = z[3]
    s2 = s * s
    y = k - m
    r = math.sqrt(y * y + s2)
    r3 = r * r * r
    aa = 0.5 * (r + y)
    bb = 0.5 * (r - y)
    cp = c + p
    return a + c * aa + p * bb, (c * aa - p * bb) / r, 0.5 * cp * s2 / r3


@njit(cache=True)
def _z_w_value(z: FloatArray, k: float, s: float) -> float:  # pragma: no cover
    """``w`` at ``k`` without gradient, the same arithmetic as :func:`_z_w`."""
    y = k - z[3]
    r = math.sqrt(y * y + s * s)
    aa = 0.5 * (r + y)
    bb = 0.5 * (r - y)
    return z[0] + z[2] * aa + z[1] * bb


@njit(cache=True)
def _z_w(z: FloatArray, k: float, dw: FloatArray, s: float) -> float:  # pragma: no cover
    """``w`` at ``k`` and its gradient in ``z`` (written into ``dw``); ``s = exp(z[4])``."""
    y = k - z[3]
    r = math.sqrt(y * y + s * s)
    aa = 0.5 * (r + y)
    bb = 0.5 * (r - y)
    cp = z[2] + z[1]
    dw[0] = 1.0
    dw[1] = bb
    dw[2] = aa
    dw[3] = -(z[2] * aa - z[1] * bb) / r
    dw[4] = 0.5 * cp * s * s / r
    return z[0] + z[2] * aa + z[1] * bb


@njit(cache=True)
def z_g_jac(z: FloatArray, k: FloatArray) -> tuple[FloatArray, FloatArray]:  # pragma: no cover
    """Butterfly function ``g(k)`` (GJ 2014, eq. 2.1) and its Jacobian ``(n, 5)`` in ``z``;
    ``g = -1`` with a zero gradient where ``w <= 0``."""
    n = k.shape[0]
    g = np.empty(n)
    dg = np.zeros((n, 5))
    dw = np.empty(5)
    dw1 = np.empty(5)
    dw2 = np.empty(5)
    sig_z = math.exp(z[4])
    for i in range(n):
        kk = k[i]
        w, w1, w2 = _z_parts(z, kk, dw, dw1, dw2, sig_z)
        if not w > 0.0:
            g[i] = -1.0
            continue
        g[i] = _g_with_gradient(kk, w, w1, w2, dw, dw1, dw2, dg[i])
    return g, dg


@njit(cache=True)
def svi_g_values(
    a: float, b: float, rho: float, m: float, sigma: float, k: FloatArray
) -> FloatArray:  # pragma: no cover - compiled
    """``g(k)`` of a raw SVI smile (GJ 2014, eq. 2.1), ``-1`` where ``w <= 0`` (no Jacobian)."""
    n = k.shape[0]
    g = np.empty(n)
    s2 = sigma * sigma
    for i in range(n):
        kk = k[i]
        y = kk - m
        r = math.sqrt(y * y + s2)
        w = a + b * (rho * y + r)
        if not w > 0.0:
            g[i] = -1.0
            continue
        w1 = b * (rho + y / r)
        w2 = b * s2 / (r * r * r)
        e = 1.0 - kk * w1 / (2.0 * w)
        g[i] = e * e - w1 * w1 / 4.0 * (1.0 / w + 0.25) + w2 / 2.0
    return g


@njit(cache=True)
def _al_eval(
    z: FloatArray,
    k: FloatArray,
    t: float,
    vb: FloatArray,
    va: FloatArray,
    vm: FloatArray,
    sw: FloatArray,
    lam: float,
    kg: FloatArray,
    g_margin: float,
    kc: FloatArray,
    wc: FloatArray,
    sc: FloatArray,
    theta: float,
    w_floor: float,
    mult: FloatArray,
    rho: float,
    jtj: FloatArray,
    jtr: FloatArray,
    cons: FloatArray,
    hub: float,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Augmented-Lagrangian merit ``Phi = f + sum (rho/2) max(0, mult/rho - c)**2`` at ``z``.

    Fills the Gauss-Newton ``J'J`` and ``J'R`` of the residual form and the constraint values
    ``cons`` (``g(kg) - g_margin``, the scaled minimum variance, ``sc (w(kc) - wc)/theta``).
    Returns ``(Phi, f)``.
    """
    jtj[:, :] = 0.0
    jtr[:] = 0.0
    dw = np.empty(5)
    dw1 = np.empty(5)
    dw2 = np.empty(5)
    row = np.empty(5)
    sig_z = math.exp(z[4])
    f = 0.0
    for i in range(k.shape[0]):
        w = _z_w(z, k[i], dw, sig_z)
        if w > 0.0:
            sig = math.sqrt(w / t)
            ds = 1.0 / (2.0 * sig * t)
        else:
            sig = 0.0
            ds = 0.0
        if sig < vb[i]:
            r1 = sig - vb[i]
        elif sig > va[i]:
            r1 = sig - va[i]
        else:
            r1 = 0.0
        wt = sw[i]
        # residuals R1 = wt r1 (pseudo-Huber: sign(e) sqrt(rho(e)), e = wt r1) and
        # R2 = wt lam (sig - mid); d R1 / d e = c1 (0 inside the band)
        e = wt * r1
        if r1 == 0.0:
            big_r1 = 0.0
            c1 = 0.0
        elif hub > 0.0:
            x2 = (e / hub) ** 2
            root = math.sqrt(1.0 + x2)
            rr = math.sqrt(2.0 * hub * hub * x2 / (root + 1.0))
            if rr > 0.0:
                big_r1 = math.copysign(rr, e)
                c1 = abs(e) / (root * rr)
            else:
                big_r1 = e
                c1 = 1.0
        else:
            big_r1 = e
            c1 = 1.0
        big_r2 = wt * lam * (sig - vm[i])
        f += big_r1 * big_r1 + big_r2 * big_r2
        for jj in range(5):
            row[jj] = wt * ds * dw[jj]
        for a_ in range(5):
            jtr[a_] += row[a_] * (c1 * big_r1 + lam * big_r2)
            for b_ in range(a_, 5):
                jtj[a_, b_] += row[a_] * row[b_] * (c1 * c1 + lam * lam)
    phi = f
    hr = math.sqrt(0.5 * rho)
    ng = kg.shape[0]
    nc = kc.shape[0]
    for i in range(ng + 1 + nc):
        if i < ng:
            kk = kg[i]
            # values first; the gradient row only where the penalty term is active
            w, w1, w2 = _z_values(z, kk, sig_z)
            if w > 0.0:
                e = 1.0 - kk * w1 / (2.0 * w)
                val = e * e - w1 * w1 / 4.0 * (1.0 / w + 0.25) + w2 / 2.0 - g_margin
                cons[i] = val
                if not mult[i] / rho - val > 0.0:
                    continue
                w, w1, w2 = _z_parts(z, kk, dw, dw1, dw2, sig_z)
                q1 = w1 / 2.0 * (1.0 / w + 0.25)
                q2 = w1 * w1 / (4.0 * w * w)
                for jj in range(5):
                    de = -kk / 2.0 * (dw1[jj] / w - w1 / (w * w) * dw[jj])
                    row[jj] = 2.0 * e * de - q1 * dw1[jj] + q2 * dw[jj] + 0.5 * dw2[jj]
            else:
                # w <= 0 here: the minimum-variance constraint pulls w up; g has no gradient
                val = -1.0 - g_margin
                for jj in range(5):
                    row[jj] = 0.0
        elif i == ng:
            # minimum variance a + sigma sqrt(p c) >= w_floor theta (p c >= 0 on the box)
            s = math.exp(z[4])
            pc = max(z[1] * z[2], 1e-300)
            sq = math.sqrt(pc)
            val = (z[0] + s * sq) / theta - w_floor
            row[0] = 1.0 / theta
            row[1] = s * z[2] / (2.0 * sq) / theta
            row[2] = s * z[1] / (2.0 * sq) / theta
            row[3] = 0.0
            row[4] = s * sq / theta
        else:
            j = i - ng - 1
            w = _z_w_value(z, kc[j], sig_z)
            val = sc[j] * (w - wc[j]) / theta
            cons[i] = val
            if not mult[i] / rho - val > 0.0:
                continue
            w = _z_w(z, kc[j], dw, sig_z)
            for jj in range(5):
                row[jj] = sc[j] * dw[jj] / theta
        cons[i] = val
        act = mult[i] / rho - val
        if act > 0.0:
            res = hr * act
            phi += res * res
            for a_ in range(5):
                jtr[a_] += -hr * row[a_] * res
                for b_ in range(a_, 5):
                    jtj[a_, b_] += hr * hr * row[a_] * row[b_]
    for a_ in range(5):
        for b_ in range(a_):
            jtj[a_, b_] = jtj[b_, a_]
    return phi, f


@njit(cache=True)
def _solve_damped(
    jtj: FloatArray, jtr: FloatArray, free: np.ndarray, nu: float
) -> tuple[FloatArray, bool]:  # pragma: no cover - compiled
    """Solve ``(J'J + nu diag(J'J)) d = -J'R`` over the free coordinates (Cholesky)."""
    n = 5
    a = np.zeros((n, n))
    rhs = np.zeros(n)
    for i in range(n):
        if free[i]:
            rhs[i] = -jtr[i]
            for j in range(n):
                if free[j]:
                    a[i, j] = jtj[i, j]
            a[i, i] += nu * max(jtj[i, i], 1e-12) + 1e-15
        else:
            a[i, i] = 1.0
    # Cholesky
    low = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            s = a[i, j]
            for q in range(j):
                s -= low[i, q] * low[j, q]
            if i == j:
                if s <= 0.0:
                    return rhs, False
                low[i, i] = math.sqrt(s)
            else:
                low[i, j] = s / low[j, j]
    y = np.zeros(n)
    for i in range(n):
        s = rhs[i]
        for q in range(i):
            s -= low[i, q] * y[q]
        y[i] = s / low[i, i]
    x = np.zeros(n)
    for i in range(n - 1, -1, -1):
        s = y[i]
        for q in range(i + 1, n):
            s -= low[q, i] * x[q]
        x[i] = s / low[i, i]
    for i in range(n):
        if not free[i]:
            x[i] = 0.0
    return x, True


@njit(cache=True)
def al_lm_fit(
    z0: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    k: FloatArray,
    t: float,
    vb: FloatArray,
    va: FloatArray,
    vm: FloatArray,
    sw: FloatArray,
    lam: float,
    kg: FloatArray,
    g_margin: float,
    kc: FloatArray,
    wc: FloatArray,
    sc: FloatArray,
    theta: float,
    w_floor: float,
    mult0: FloatArray,
    max_outer: int,
    max_inner: int,
    hub: float = 0.0,
) -> tuple[FloatArray, float, float, FloatArray, int, int, bool]:  # pragma: no cover
    """Minimise the bid/ask-aware implied-vol objective of one raw SVI smile under
    ``g(kg) >= g_margin``, the minimum-variance bound and ``sc (w(kc) - wc) >= 0``.

    Augmented Lagrangian (Nocedal & Wright 2006, section 17.4, bound-constrained form) whose
    subproblems are nonlinear least squares in the residual form, solved by a projected
    Levenberg-Marquardt iteration (Marquardt scaling; coordinates at a bound whose gradient
    points outwards are held). ``mult0`` are starting multipliers (warm start).

    Returns ``(z, f, max_violation, multipliers, outer, inner_total, converged)``.
    """
    ncons = kg.shape[0] + 1 + kc.shape[0]
    mult = mult0.copy()
    z = np.empty(5)
    for i in range(5):
        z[i] = min(max(z0[i], lo[i]), hi[i])
    jtj = np.empty((5, 5))
    jtr = np.empty(5)
    cons = np.empty(ncons)
    jtj_n = np.empty((5, 5))
    jtr_n = np.empty(5)
    cons_n = np.empty(ncons)
    free = np.ones(5, dtype=np.bool_)
    zn = np.empty(5)
    rho = 10.0
    prev_viol = np.inf
    inner_total = 0
    converged = False
    f = 0.0
    viol = np.inf
    n_outer = 0
    for _ in range(max_outer):
        n_outer += 1
        phi, f = _al_eval(
            z,
            k,
            t,
            vb,
            va,
            vm,
            sw,
            lam,
            kg,
            g_margin,
            kc,
            wc,
            sc,
            theta,
            w_floor,
            mult,
            rho,
            jtj,
            jtr,
            cons,
            hub,
        )
        nu = 1e-3
        growth = 2.0
        for _ in range(max_inner):
            inner_total += 1
            for i in range(5):
                free[i] = not ((z[i] <= lo[i] and jtr[i] > 0.0) or (z[i] >= hi[i] and jtr[i] < 0.0))
            step, ok = _solve_damped(jtj, jtr, free, nu)
            if not ok:
                nu *= 10.0
                if nu > 1e10:
                    break
                continue
            move = 0.0
            for i in range(5):
                zn[i] = min(max(z[i] + step[i], lo[i]), hi[i])
                move = max(move, abs(zn[i] - z[i]) / (1.0 + abs(z[i])))
            phin, fn = _al_eval(
                zn,
                k,
                t,
                vb,
                va,
                vm,
                sw,
                lam,
                kg,
                g_margin,
                kc,
                wc,
                sc,
                theta,
                w_floor,
                mult,
                rho,
                jtj_n,
                jtr_n,
                cons_n,
                hub,
            )
            # predicted decrease of the Gauss-Newton model (Nielsen's damping update)
            pred = 0.0
            for i in range(5):
                hd = 0.0
                for j in range(5):
                    hd += jtj[i, j] * step[j]
                pred -= 2.0 * jtr[i] * step[i] + hd * step[i]
            if phin <= phi:
                gain = phi - phin
                ratio = gain / pred if pred > 0.0 else 0.0
                z[:] = zn
                jtj[:, :] = jtj_n
                jtr[:] = jtr_n
                cons[:] = cons_n
                phi = phin
                f = fn
                nu = max(nu * max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3), 1e-9)
                growth = 2.0
                if gain <= 1e-12 + 1e-9 * phi or move <= 1e-10:
                    break
            else:
                nu *= growth
                growth *= 2.0
                if nu > 1e10 or move <= 1e-14:
                    break
        viol = 0.0
        comp = 0.0
        for i in range(ncons):
            viol = max(viol, -cons[i])
            newm = max(0.0, mult[i] - rho * cons[i])
            comp = max(comp, abs(newm - mult[i]) / rho)
            mult[i] = newm
        if viol <= 1e-10 and comp <= 1e-9:
            converged = True
            break
        if viol > 0.25 * prev_viol:
            rho = min(rho * 10.0, 1e12)
        prev_viol = viol
    return z, f, viol, mult, n_outer, inner_total, converged


@njit(cache=True)
def svi_g_refined_min(
    a: float, b: float, rho: float, m: float, sigma: float, k: FloatArray
) -> float:  # pragma: no cover - compiled
    """Smallest ``g`` of a raw SVI smile on the sorted grid ``k`` and on the refined sub-grids
    around its local minima below 0.05 (two nested 33-point levels, spacing / 16 then / 256):
    the minimum of :func:`volcal.svi.slice_fit._g_refined`'s values, without building the
    arrays. NaN when any value is NaN."""
    g = svi_g_values(a, b, rho, m, sigma, k)
    n = g.shape[0]
    out = np.inf
    for i in range(n):
        if g[i] != g[i]:
            return np.nan
        out = min(out, g[i])
    if n < 3:
        return out
    sub = np.empty(33)
    for i in range(1, n - 1):
        if not (g[i] <= g[i - 1] and g[i] <= g[i + 1] and g[i] < 0.05):
            continue
        lo = k[i - 1]
        hi = k[i + 1]
        for _level in range(2):
            for j in range(33):
                sub[j] = lo + (hi - lo) * (j / 32.0)
            gs = svi_g_values(a, b, rho, m, sigma, sub)
            best = 0
            for j in range(33):
                if gs[j] != gs[j]:
                    return np.nan
                out = min(out, gs[j])
                if gs[j] < gs[best]:
                    best = j
            best = min(max(best, 1), 31)
            lo = sub[best - 1]
            hi = sub[best + 1]
    return out


@njit(cache=True)
def calendar_min_values(
    a: float,
    b: float,
    rho: float,
    m: float,
    sigma: float,
    grid: FloatArray,
    nb: FloatArray,
    sign: FloatArray,
    k_lo: FloatArray,
    k_hi: FloatArray,
    theta: float,
) -> float:  # pragma: no cover - compiled
    """Smallest ``sign_j (w(k) - w_j(k)) / theta`` over the neighbours ``j`` (rows
    ``(a, b, rho, m, sigma)`` of ``nb``) and the points of ``grid`` in ``[k_lo_j, k_hi_j]``;
    ``inf`` when none. NaN when any value is NaN."""
    out = np.inf
    for j in range(nb.shape[0]):
        pa, pb, pr, pm, ps = nb[j, 0], nb[j, 1], nb[j, 2], nb[j, 3], nb[j, 4]
        for i in range(grid.shape[0]):
            kk = grid[i]
            if not (kk >= k_lo[j] and kk <= k_hi[j]):
                continue
            z = kk - m
            w = a + b * (rho * z + math.sqrt(z * z + sigma * sigma))
            x = kk - pm
            wp = pa + pb * (pr * x + math.sqrt(x * x + ps * ps))
            d = sign[j] * (w - wp) / theta
            if d != d:
                return np.nan
            out = min(out, d)
    return out


@njit(cache=True)
def merge_local_points(
    static: FloatArray, m: float, sigma: float, sinh_z: FloatArray
) -> FloatArray:  # pragma: no cover - compiled
    """The sorted union of the sorted ``static`` points and ``m + sigma sinh_z`` (increasing
    ``sinh_z``, ``sigma > 0``): a two-pointer merge, the same array as sorting both."""
    n1 = static.shape[0]
    n2 = sinh_z.shape[0]
    out = np.empty(n1 + n2)
    i = 0
    j = 0
    nxt = m + sigma * sinh_z[0] if n2 > 0 else 0.0
    for q in range(n1 + n2):
        if j < n2 and (i >= n1 or nxt < static[i]):
            out[q] = nxt
            j += 1
            if j < n2:
                nxt = m + sigma * sinh_z[j]
        else:
            out[q] = static[i]
            i += 1
    return out


@njit(cache=True)
def neighbour_grid(
    base: FloatArray, nb: FloatArray, k_lo: FloatArray, k_hi: FloatArray, sinh_z: FloatArray
) -> FloatArray:  # pragma: no cover - compiled
    """``base`` followed, per neighbour ``j`` (rows ``(a, b, rho, m, sigma)`` of ``nb``), by
    its points ``m_j + sigma_j sinh_z`` inside ``[k_lo_j, k_hi_j]`` and, when ``k_lo_j`` is
    finite, the two ends ``k_lo_j, k_hi_j`` (the constraint grid of a smile with calendar
    neighbours, in that order)."""
    nn = nb.shape[0]
    ns = sinh_z.shape[0]
    out = np.empty(base.shape[0] + nn * (ns + 2))
    q = 0
    for i in range(base.shape[0]):
        out[q] = base[i]
        q += 1
    for j in range(nn):
        for i in range(ns):
            p = nb[j, 3] + nb[j, 4] * sinh_z[i]
            if p >= k_lo[j] and p <= k_hi[j]:
                out[q] = p
                q += 1
        if math.isfinite(k_lo[j]):
            out[q] = k_lo[j]
            out[q + 1] = k_hi[j]
            q += 2
    return out[:q]


@njit(cache=True)
def slice_arrays(
    iv_bid: FloatArray,
    iv_ask: FloatArray,
    iv_mid: FloatArray,
    weight: FloatArray,
    t: float,
    shrink: float,
    n: int,
) -> FloatArray:  # pragma: no cover - compiled
    """Per-quote arrays of one smile's fit, rows ``(vb, va, vm, weight2, sqrt(weight2), wb,
    wa, wm, q)``: the band ``vb = bid + shrink spread``, ``va = ask - shrink spread`` and the
    mid ``vm`` (decimal vols), ``weight2 = weight**2 / n``, the same in total variance
    (``v**2 t``, ``t`` in years) and ``q = weight2 / (2 vm t)**2`` (element by element the
    same floating-point operations as the NumPy expressions they replace)."""
    size = iv_bid.shape[0]
    out = np.empty((9, size))
    for i in range(size):
        spread = iv_ask[i] - iv_bid[i]
        vb = iv_bid[i] + shrink * spread
        va = iv_ask[i] - shrink * spread
        vm = iv_mid[i]
        w2 = weight[i] * weight[i] / n
        d = 2.0 * vm * t
        out[0, i] = vb
        out[1, i] = va
        out[2, i] = vm
        out[3, i] = w2
        out[4, i] = math.sqrt(w2)
        out[5, i] = vb * vb * t
        out[6, i] = va * va * t
        out[7, i] = vm * vm * t
        out[8, i] = w2 / (d * d)
    return out


@njit(cache=True)
def svi_iv_loss(
    a: float,
    b: float,
    rho: float,
    m: float,
    sigma: float,
    k: FloatArray,
    t: float,
    vb: FloatArray,
    va: FloatArray,
    vm: FloatArray,
    weight2: FloatArray,
    lam2: float,
    hub: float,
) -> float:  # pragma: no cover - compiled
    """:func:`iv_loss` of the raw SVI smile ``w(k) = a + b (rho z + sqrt(z**2 + sigma**2))``,
    ``z = k - m`` (log-moneyness ``k``)."""
    size = k.shape[0]
    w = np.empty(size)
    s2 = sigma * sigma
    for i in range(size):
        z = k[i] - m
        w[i] = a + b * (rho * z + math.sqrt(z * z + s2))
    return iv_loss(w, t, vb, va, vm, weight2, lam2, hub)


@njit(cache=True)
def calendar_rows(
    pts: FloatArray,
    nb: FloatArray,
    sign: FloatArray,
    k_lo: FloatArray,
    k_hi: FloatArray,
    sig2: FloatArray,
    margin: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:  # pragma: no cover - compiled
    """Calendar rows ``sc (w(kc) - wc) >= 0`` at log-moneyness points ``pts`` against the
    neighbours ``nb`` (rows ``(a, b, rho, m, sigma)``, ``sig2 = sigma**2``) on their ranges
    ``[k_lo, k_hi]``: per ``sign > 0`` neighbour (in order) one row ``w >= w_j + margin`` per
    point; then one row per point covered by a ceiling (``sign <= 0``),
    ``w <= min_j w_j - margin`` (points whose minimum is not finite are left out)."""
    n = pts.shape[0]
    nn = nb.shape[0]
    kc = np.empty(n * (nn + 1))
    wc = np.empty(n * (nn + 1))
    sc = np.empty(n * (nn + 1))
    q = 0
    ceiling = np.full(n, np.inf)
    for j in range(nn):
        a, b, rho, m = nb[j, 0], nb[j, 1], nb[j, 2], nb[j, 3]
        for i in range(n):
            k = pts[i]
            if k >= k_lo[j] and k <= k_hi[j]:
                x = k - m
                w = a + b * (rho * x + math.sqrt(x * x + sig2[j]))
                if sign[j] > 0:
                    kc[q] = k
                    wc[q] = w + margin
                    sc[q] = 1.0
                    q += 1
                else:
                    c = ceiling[i]
                    if c != c or w != w:
                        ceiling[i] = np.nan
                    elif w < c:
                        ceiling[i] = w
    for i in range(n):
        if math.isfinite(ceiling[i]):
            kc[q] = pts[i]
            wc[q] = ceiling[i] - margin
            sc[q] = -1.0
            q += 1
    return kc[:q].copy(), wc[:q].copy(), sc[:q].copy()
