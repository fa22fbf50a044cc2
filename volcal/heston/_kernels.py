"""Compiled (Numba) kernels of the fast Heston pricer; see :mod:`volcal.heston.pricer`.

Everything here works on plain floats and arrays; parameters arrive as five floats in the
order ``v0, kappa, theta, sigma, rho``. The formulas, the quadrature design and the references
are described in the docstring of :mod:`volcal.heston.pricer`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit
from numpy.polynomial.legendre import leggauss

from volcal._lbr import implied_vol_kernel

FloatArray = npt.NDArray[np.float64]

# Quadrature settings, chosen by measurement (docs/heston.md, tests/heston/test_pricer.py)
GL_NODES = 16
"""Gauss-Legendre nodes per panel."""
PHASE_PER_PANEL = 20.0
"""Largest phase (radians of ``k_max + |psi'|``) one panel may cover."""
PANEL_GROWTH = 16.0
"""Largest ratio of a panel's right to left end (panels are at most geometric)."""
SCAN_RATIO = 2.0**0.5
"""Ratio of consecutive points of the scan grid of ``|phi|``."""
SCAN_POINTS = 67
"""Scan intervals: 67 * log10(2**0.5) = 10 decades of ``x``."""
TAIL_TOL = 1e-14
"""Bound on the truncated tail of the Lewis integral, in units of ``F``."""
MAX_NODES = 1 << 16
"""Above this many nodes for one expiry the price is reported as NaN (not seen in tests)."""

_x, _w = leggauss(GL_NODES)
GL_X = np.ascontiguousarray(0.5 * (_x + 1.0))
GL_W = np.ascontiguousarray(0.5 * _w)
GL_HALF_X = np.ascontiguousarray(-_x[: GL_NODES // 2])
"""Positive Legendre nodes on [-1, 1] (descending): node r and GL_NODES-1-r are -+ these."""
_LOG_RATIO_COST = math.log(SCAN_RATIO) / math.log(PANEL_GROWTH)
_EXP_UNDERFLOW = -746.0
"""``exp(x) == 0.0`` in double precision below this."""


@njit(cache=True, inline="always")
def _cexpm1(z: complex) -> complex:
    """exp(z) - 1 without cancellation for small |z| (one expm1 and one sin/cos pair).

    With ``h = y/2``: ``Re = expm1(x) cos y - 2 sin(h)^2``, ``Im = e^x sin y``, where
    ``cos y = 1 - 2 sin(h)^2`` and ``sin y = 2 sin(h) cos(h)``.
    """
    em1 = math.expm1(z.real)
    hs = math.sin(0.5 * z.imag)
    hc = math.cos(0.5 * z.imag)
    two_hs2 = 2.0 * hs * hs
    return complex(em1 * (1.0 - two_hs2) - two_hs2, (em1 + 1.0) * 2.0 * hs * hc)


@njit(cache=True, inline="always")
def _cinv(z: complex) -> complex:
    """1 / z as conj(z) / |z|^2 (|z| is far from the float range limits here)."""
    x = z.real
    y = z.imag
    r = 1.0 / (x * x + y * y)
    return complex(x * r, -y * r)


@njit(cache=True, inline="always")
def _clog1p(z: complex) -> complex:
    """Principal log(1 + z) without cancellation for small |z|."""
    x = z.real
    y = z.imag
    return complex(0.5 * math.log1p(x * (2.0 + x) + y * y), math.atan2(y, 1.0 + x))


@njit(cache=True)
def log_cf(
    v0: float,
    kappa: float,
    theta: float,
    sigma: float,
    rho: float,
    u: complex,
    t: float,
    grad: npt.NDArray[np.complex128],
    want_grad: bool,
) -> complex:
    """psi(u) = ln E[exp(i u ln(F_t/F_0))]; fills ``grad[0:5]`` with d psi/d(v0..rho) if asked.

    Little-trap form (Albrecher et al. 2007) without divisions by sigma**2 of small numbers:
    beta = kappa - rho sigma i u, s = u^2 + i u, d = sqrt(beta^2 + sigma^2 s), b = beta + d,
    a = -sigma^2 s / b, E = 1 - exp(-d t), Q = 2 d + a E, D = -s E / Q,
    C = kappa theta (a t - 2 log1p(a E / (2 d))) / sigma^2, psi = C + v0 D.
    """
    iu = 1j * u
    s = u * u + iu
    sig2 = sigma * sigma
    beta = kappa - rho * sigma * iu
    d = np.sqrt(beta * beta + sig2 * s)
    inv_d = _cinv(d)
    b = beta + d
    inv_b = _cinv(b)
    a = -sig2 * s * inv_b
    big_e = -_cexpm1(-d * t)
    q = 2.0 * d + a * big_e
    inv_q = _cinv(q)
    dd = -s * big_e * inv_q
    lr = _clog1p(0.5 * a * big_e * inv_d)
    kts = kappa * theta / sig2
    cc = kts * (a * t - 2.0 * lr)
    if want_grad:
        e_minus = 1.0 - big_e
        grad[0] = dd
        grad[2] = cc * (1.0 / theta)
        for row in (1, 3, 4):
            if row == 1:  # kappa
                beta_p = complex(1.0, 0.0)
                sigma_p = 0.0
            elif row == 3:  # sigma
                beta_p = -rho * iu
                sigma_p = 1.0
            else:  # rho
                beta_p = -sigma * iu
                sigma_p = 0.0
            d_p = (beta * beta_p + sigma * sigma_p * s) * inv_d
            b_p = beta_p + d_p
            a_p = -(2.0 * sigma * sigma_p * s + a * b_p) * inv_b
            e_p = t * d_p * e_minus
            q_p = 2.0 * d_p + a_p * big_e + a * e_p
            dd_p = -(s * e_p + dd * q_p) * inv_q
            lr_p = (a_p * big_e + a * e_p - a * big_e * d_p * inv_d) * inv_q
            cc_p = kts * (a_p * t - 2.0 * lr_p)
            if row == 1:
                cc_p += cc * (1.0 / kappa)
            elif row == 3:
                cc_p -= cc * (2.0 / sigma)
            grad[row] = cc_p + v0 * dd_p
    return cc + v0 * dd


@njit(cache=True)
def log_cf_array(
    v0: float,
    kappa: float,
    theta: float,
    sigma: float,
    rho: float,
    u: npt.NDArray[np.complex128],
    t: FloatArray,
    want_grad: bool,
) -> tuple[npt.NDArray[np.complex128], npt.NDArray[np.complex128]]:
    """:func:`log_cf` over flat arrays; returns ``psi`` (n,) and the gradient (5, n)."""
    n = u.size
    psi = np.empty(n, dtype=np.complex128)
    grad = np.zeros((5, n), dtype=np.complex128)
    g = np.zeros(5, dtype=np.complex128)
    for i in range(n):
        psi[i] = log_cf(v0, kappa, theta, sigma, rho, u[i], t[i], g, want_grad)
        if want_grad:
            for j in range(5):
                grad[j, i] = g[j]
    return psi, grad


@njit(cache=True)
def scan_rule(
    v0: float,
    kappa: float,
    theta: float,
    sigma: float,
    rho: float,
    t: float,
    w: float,
    k_max: float,
) -> tuple[FloatArray, FloatArray, bool]:
    """Scan ``psi`` for one expiry: the truncation point and the cumulative panel cost.

    Returns ``(xs, cum, ok)``: scan points ``xs[0..j_end]`` (``xs[j_end]`` is where the
    integral is truncated) and the cumulative panel cost ``cum`` at those points (the first
    panel ``[0, xs[0]]`` costs 1; a rule is adequate when no panel costs more than 1). ``ok`` is
    False when the tail bound is not met within the scan range.

    The scan stops early once ``max(Re psi, log phi_BS) < -746``: from there on every term of
    the tail sum below is exactly 0 in double precision (``exp(-746) == 0``; ``|phi|`` keeps
    decaying), so the result is the same as that of the full scan.
    """
    sqrt_w = math.sqrt(w)
    x0 = 0.5 / (sqrt_w + k_max)
    m = SCAN_POINTS
    xs = np.empty(m + 1)
    re_psi = np.empty(m + 1)
    psis = np.empty(m + 1, dtype=np.complex128)
    g = np.zeros(5, dtype=np.complex128)
    for j in range(m + 1):
        xs[j] = x0 * SCAN_RATIO**j
        psis[j] = log_cf(v0, kappa, theta, sigma, rho, complex(xs[j], -0.5), t, g, False)
        re_psi[j] = max(psis[j].real, -0.5 * w * (xs[j] * xs[j] + 0.25))
        if re_psi[j] < _EXP_UNDERFLOW:
            m = j
            break
    # Upper bound of the tail beyond scan point j (left Riemann sum of a decreasing bound of
    # |phi_BS - phi_H| / x^2, plus |phi|/x beyond the last point), times e^{k_max/2}/pi.
    factor = math.exp(0.5 * k_max) / math.pi
    tail = 2.0 * math.exp(re_psi[m]) / xs[m]
    if tail * factor >= TAIL_TOL:
        return np.empty(0), np.empty(0), False
    j_end = 0
    for j in range(m - 1, -1, -1):
        tail += 2.0 * math.exp(re_psi[j]) * (xs[j + 1] - xs[j]) / (xs[j] * xs[j])
        if tail * factor >= TAIL_TOL:
            j_end = j + 1
            break
    # Cumulative panel cost at the scan points: the first panel [0, x0] costs 1; each scan
    # interval costs its phase / PHASE_PER_PANEL plus its share of the growth limit.
    cum = np.empty(j_end + 1)
    cum[0] = 1.0
    for j in range(j_end):
        dx = xs[j + 1] - xs[j]
        slope_h = abs(psis[j + 1] - psis[j]) / dx
        log_bs = -0.5 * w * (xs[j + 1] * xs[j + 1] + 0.25)
        slope_bs = w * xs[j + 1] if log_bs > -80.0 else 0.0
        rate = k_max + max(slope_h, slope_bs) + sqrt_w
        cum[j + 1] = cum[j] + dx * rate / PHASE_PER_PANEL + _LOG_RATIO_COST
    return xs[: j_end + 1].copy(), cum, True


@njit(cache=True)
def layout_rule(xs: FloatArray, cum: FloatArray, budget: float) -> tuple[FloatArray, bool]:
    """Panel edges on ``[0, xs[-1]]`` such that every panel costs at most ``budget``.

    Edge ``i`` sits where the cumulative cost ``cum`` (linear between scan points, see
    :func:`scan_rule`) reaches ``i * budget``. ``ok`` is False above :data:`MAX_NODES` nodes.
    """
    j_end = xs.size - 1
    n_panels = math.ceil(cum[j_end] / budget)
    if n_panels * GL_NODES > MAX_NODES:
        return np.empty(0), False
    edges = np.empty(n_panels + 1)
    edges[0] = 0.0
    edges[n_panels] = xs[j_end]
    j = 0
    for i in range(1, n_panels):
        level = i * budget
        if level <= cum[0]:
            edges[i] = xs[0] * level / cum[0]
            continue
        while j < j_end - 1 and cum[j + 1] < level:
            j += 1
        frac = (level - cum[j]) / (cum[j + 1] - cum[j])
        edges[i] = xs[j] + frac * (xs[j + 1] - xs[j])
    return edges, True


@njit(cache=True)
def rule_nodes(edges: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Nodes and weights of :data:`GL_NODES`-point Gauss-Legendre rules on each panel."""
    n_panels = edges.size - 1
    n = n_panels * GL_NODES
    x = np.empty(n)
    weight = np.empty(n)
    for i in range(n_panels):
        lo = edges[i]
        width = edges[i + 1] - lo
        for r in range(GL_NODES):
            x[i * GL_NODES + r] = lo + width * GL_X[r]
            weight[i * GL_NODES + r] = width * GL_W[r]
    return x, weight


@njit(cache=True)
def build_rule(
    v0: float,
    kappa: float,
    theta: float,
    sigma: float,
    rho: float,
    t: float,
    w: float,
    k_max: float,
) -> tuple[FloatArray, FloatArray, bool]:
    """Composite Gauss-Legendre nodes and weights for one expiry's Lewis integral.

    :func:`scan_rule`, then :func:`layout_rule` with a budget of one panel cost per panel.
    Returns ``(x, weight, ok)``; ``ok`` is False when the tail bound is not met within the
    scan range or more than :data:`MAX_NODES` nodes would be needed.
    """
    xs, cum, ok = scan_rule(v0, kappa, theta, sigma, rho, t, w, k_max)
    if not ok:
        return np.empty(0), np.empty(0), False
    edges, ok = layout_rule(xs, cum, 1.0)
    if not ok:
        return np.empty(0), np.empty(0), False
    x, weight = rule_nodes(edges)
    return x, weight, True


@njit(cache=True)
def max_panel_cost(edges: FloatArray, xs: FloatArray, cum: FloatArray) -> float:
    """Largest cost of a panel of ``edges`` under the cost function ``(xs, cum)``.

    The cumulative cost is ``cum[0] x / xs[0]`` on the first scan interval, linear between scan
    points and constant beyond ``xs[-1]`` (past the truncation point the integrand is below the
    tail tolerance). Returns ``inf`` when ``edges`` end before ``xs[-1]`` (too short a domain).
    """
    j_end = xs.size - 1
    if edges[edges.size - 1] < xs[j_end]:
        return math.inf
    worst = 0.0
    j = 0
    prev = 0.0
    for i in range(1, edges.size):
        x = edges[i]
        if x <= xs[0]:
            c = cum[0] * x / xs[0]
        elif x >= xs[j_end]:
            c = cum[j_end]
        else:
            while xs[j + 1] < x:
                j += 1
            c = cum[j] + (cum[j + 1] - cum[j]) * (x - xs[j]) / (xs[j + 1] - xs[j])
        worst = max(worst, c - prev)
        prev = c
    return worst


@njit(cache=True)
def lewis_corrections(
    v0: float,
    kappa: float,
    theta: float,
    sigma: float,
    rho: float,
    k: FloatArray,
    t_unique: FloatArray,
    w_unique: FloatArray,
    order: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    want_grad: bool,
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Heston-minus-Black corrections (column 0) and price gradients (columns 1-5).

    Quotes ``order[starts[e]:starts[e+1]]`` belong to expiry ``e`` (time ``t_unique[e]``,
    control-variate total variance ``w_unique[e]``). Results are undiscounted, in units of F.
    Also returns the number of quadrature nodes used per expiry (-1: unresolved, NaN rows).
    """
    n_q = k.size
    ncol = 6 if want_grad else 1
    out = np.empty((n_q, ncol))
    n_nodes = np.empty(t_unique.size, dtype=np.int64)
    g = np.zeros(5, dtype=np.complex128)
    for e in range(t_unique.size):
        t = t_unique[e]
        w = w_unique[e]
        k_max = 0.0
        for p in range(starts[e], starts[e + 1]):
            k_max = max(k_max, abs(k[order[p]]))
        x, weight, ok = build_rule(v0, kappa, theta, sigma, rho, t, w, k_max)
        if not ok:
            n_nodes[e] = -1
            for p in range(starts[e], starts[e + 1]):
                for c in range(ncol):
                    out[order[p], c] = np.nan
            continue
        nx = x.size
        n_nodes[e] = nx
        h = np.empty((nx, ncol), dtype=np.complex128)
        for i in range(nx):
            xi = x[i]
            s = xi * xi + 0.25
            psi = log_cf(v0, kappa, theta, sigma, rho, complex(xi, -0.5), t, g, want_grad)
            phi_h = np.exp(psi)
            scale = weight[i] / s
            h[i, 0] = (math.exp(-0.5 * w * s) - phi_h) * scale
            if want_grad:
                for c in range(5):
                    h[i, c + 1] = -phi_h * g[c] * scale
        # e^{-i x k} on the symmetric node pairs x = c -+ h g_r of each panel (centre c,
        # half-width h) from cos/sin of k c and k h g_r: 9 instead of 16 sin/cos pairs.
        n_pan = nx // GL_NODES
        half = GL_NODES // 2
        acc = np.empty(ncol)
        for p in range(starts[e], starts[e + 1]):
            qi = order[p]
            kq = k[qi]
            for c in range(ncol):
                acc[c] = 0.0
            for pan in range(n_pan):
                i0 = pan * GL_NODES
                i1 = i0 + GL_NODES - 1
                centre = 0.5 * (x[i0] + x[i1])
                hw = 0.5 * (x[i1] - x[i0]) / GL_HALF_X[0]
                c0 = math.cos(kq * centre)
                s0 = math.sin(kq * centre)
                for r in range(half):
                    ang = kq * hw * GL_HALF_X[r]
                    cr = math.cos(ang)
                    sr = math.sin(ang)
                    # left node x = centre - hw g: cos(kx), sin(kx)
                    cl = c0 * cr + s0 * sr
                    sl = s0 * cr - c0 * sr
                    # right node x = centre + hw g
                    cg = c0 * cr - s0 * sr
                    sg = s0 * cr + c0 * sr
                    il = i0 + r
                    ig = i1 - r
                    for c in range(ncol):
                        acc[c] += cl * h[il, c].real + sl * h[il, c].imag
                        acc[c] += cg * h[ig, c].real + sg * h[ig, c].imag
            pref = math.exp(0.5 * kq) / math.pi
            for c in range(ncol):
                out[qi, c] = acc[c] * pref
    return out, n_nodes


# -- reusable rules (FastHestonPricer) ---------------------------------------------------------
@njit(cache=True)
def check_rules(
    v0: float,
    kappa: float,
    theta: float,
    sigma: float,
    rho: float,
    t_unique: FloatArray,
    w_unique: FloatArray,
    k_max: FloatArray,
    edges: FloatArray,
    edge_off: npt.NDArray[np.int64],
    budget: float,
    rebuild_ratio: float,
) -> npt.NDArray[np.int64]:
    """Whether each expiry's held rule still meets the quadrature criteria at new parameters.

    Expiry ``e`` holds the panel edges ``edges[edge_off[e]:edge_off[e+1]]`` (none when the
    slice is empty). Status per expiry: 0 the held rule is adequate (it reaches the truncation
    point and no panel costs more than 1 at these parameters, see :func:`scan_rule`), 1 build
    a new rule (inadequate, missing, or more than ``rebuild_ratio`` times the panels a new rule
    with ``budget`` per panel would have), 2 unresolvable (the scan fails: NaN prices).
    """
    n_e = t_unique.size
    status = np.zeros(n_e, dtype=np.int64)
    for e in range(n_e):
        xs, cum, ok = scan_rule(v0, kappa, theta, sigma, rho, t_unique[e], w_unique[e], k_max[e])
        if not ok:
            status[e] = 2
            continue
        lo = edge_off[e]
        hi = edge_off[e + 1]
        if hi - lo < 2:
            status[e] = 1
            continue
        held = edges[lo:hi]
        fresh_panels = math.ceil(cum[cum.size - 1] / budget)
        if max_panel_cost(held, xs, cum) > 1.0 or hi - lo - 1 > rebuild_ratio * fresh_panels:
            status[e] = 1
    return status


@njit(cache=True)
def rule_tables(x: FloatArray, weight: FloatArray, k: FloatArray) -> FloatArray:
    """Flat ``(k.size, 2 x.size)`` table of :func:`fill_rule_tables`."""
    tab = np.empty(k.size * 2 * x.size)
    fill_rule_tables(x, weight, k, tab)
    return tab


@njit(cache=True)
def fill_rule_tables(x: FloatArray, weight: FloatArray, k: FloatArray, tab: FloatArray) -> None:
    """Fixed factors of the Lewis sum for quotes ``k`` (one expiry) on the nodes ``x``.

    Row ``j`` is ``[a_j | b_j]`` (length ``2 x.size``) with ``a_ji + i b_ji = e^{k_j/2} / pi *
    weight_i / (x_i^2 + 1/4) * e^{-i x_i k_j}``, so that the correction of quote ``j`` is
    ``sum_i a_ji Re h_i + b_ji Im h_i`` with ``h = phi_BS - phi_H`` (and ``-phi_H dpsi`` for the
    gradient). Returned flat, row-major ``(k.size, 2 x.size)``. ``e^{-i x k}`` on the symmetric
    node pairs of each panel comes from cos/sin of ``k c`` and ``k h g_r`` (centre ``c``,
    half-width ``h``), as in :func:`lewis_corrections`. Written into ``tab`` (length
    ``k.size * 2 * x.size``).
    """
    nx = x.size
    nq = k.size
    ws = np.empty(nx)
    for i in range(nx):
        ws[i] = weight[i] / (x[i] * x[i] + 0.25)
    n_pan = nx // GL_NODES
    half = GL_NODES // 2
    for j in range(nq):
        kq = k[j]
        pref = math.exp(0.5 * kq) / math.pi
        ra = j * 2 * nx
        rb = ra + nx
        for pan in range(n_pan):
            i0 = pan * GL_NODES
            i1 = i0 + GL_NODES - 1
            centre = 0.5 * (x[i0] + x[i1])
            hw = 0.5 * (x[i1] - x[i0]) / GL_HALF_X[0]
            c0 = math.cos(kq * centre)
            s0 = math.sin(kq * centre)
            for r in range(half):
                ang = kq * hw * GL_HALF_X[r]
                cr = math.cos(ang)
                sr = math.sin(ang)
                il = i0 + r
                ig = i1 - r
                tab[ra + il] = (c0 * cr + s0 * sr) * ws[il] * pref
                tab[rb + il] = (s0 * cr - c0 * sr) * ws[il] * pref
                tab[ra + ig] = (c0 * cr - s0 * sr) * ws[ig] * pref
                tab[rb + ig] = (s0 * cr + c0 * sr) * ws[ig] * pref


@njit(cache=True)
def update_rules(
    v0: float,
    kappa: float,
    theta: float,
    sigma: float,
    rho: float,
    t_unique: FloatArray,
    w_unique: FloatArray,
    k_max: FloatArray,
    k_sorted: FloatArray,
    starts: npt.NDArray[np.int64],
    edges: FloatArray,
    edge_off: npt.NDArray[np.int64],
    node_x: FloatArray,
    node_off: npt.NDArray[np.int64],
    tab: FloatArray,
    tab_off: npt.NDArray[np.int64],
    budget: float,
    rebuild_ratio: float,
    domain_margin: float,
) -> tuple[
    npt.NDArray[np.int64],
    FloatArray,
    npt.NDArray[np.int64],
    FloatArray,
    npt.NDArray[np.int64],
    FloatArray,
    npt.NDArray[np.int64],
]:
    """:func:`check_rules` and the rebuild of every inadequate rule, in one pass.

    The rules of all expiries are held flat: expiry ``e`` has the panel edges
    ``edges[edge_off[e]:edge_off[e+1]]``, the nodes ``node_x[node_off[e]:node_off[e+1]]`` and
    the factor table (:func:`fill_rule_tables`) of its quotes ``k_sorted[starts[e]:starts[e+1]]``
    in ``tab[tab_off[e]:tab_off[e+1]]``. A rule is rebuilt when :func:`check_rules` says so: on
    the scan at these parameters, extended by ``domain_margin`` of the domain at the cost rate
    of the last scan interval, with panels of cost ``budget``. Returns the status per expiry
    (0 kept, 1 rebuilt, 2 unresolvable: the old rule is kept and must not be used) and the new
    ``edges, edge_off, node_x, node_off, tab, tab_off``.
    """
    n_e = t_unique.size
    status = np.zeros(n_e, dtype=np.int64)
    new_edges = []
    for e in range(n_e):
        lo = edge_off[e]
        hi = edge_off[e + 1]
        held = edges[lo:hi]
        xs, cum, ok = scan_rule(v0, kappa, theta, sigma, rho, t_unique[e], w_unique[e], k_max[e])
        if not ok:
            status[e] = 2
            new_edges.append(held)
            continue
        if hi - lo >= 2:
            fresh_panels = math.ceil(cum[cum.size - 1] / budget)
            if max_panel_cost(held, xs, cum) <= 1.0 and hi - lo - 1 <= rebuild_ratio * fresh_panels:
                new_edges.append(held)
                continue
        # extend the domain by domain_margin at the cost rate of the last scan interval
        j_end = xs.size - 1
        end = xs[j_end] * (1.0 + domain_margin)
        if j_end >= 1:
            rate = (cum[j_end] - cum[j_end - 1]) / (xs[j_end] - xs[j_end - 1])
        else:
            rate = cum[0] / xs[0]
        xs_ext = np.empty(j_end + 2)
        cum_ext = np.empty(j_end + 2)
        xs_ext[: j_end + 1] = xs
        cum_ext[: j_end + 1] = cum
        xs_ext[j_end + 1] = end
        cum_ext[j_end + 1] = cum[j_end] + rate * (end - xs[j_end])
        fresh, ok = layout_rule(xs_ext, cum_ext, budget)
        if not ok:
            status[e] = 2
            new_edges.append(held)
            continue
        status[e] = 1
        new_edges.append(fresh)
    if not np.any(status == 1):  # nothing rebuilt: the held arrays stay as they are
        return status, edges, edge_off, node_x, node_off, tab, tab_off
    # sizes of the new flat arrays
    new_edge_off = np.zeros(n_e + 1, dtype=np.int64)
    new_node_off = np.zeros(n_e + 1, dtype=np.int64)
    new_tab_off = np.zeros(n_e + 1, dtype=np.int64)
    for e in range(n_e):
        n_edges = new_edges[e].size
        n_nodes = (n_edges - 1) * GL_NODES if n_edges >= 2 else 0
        nq = starts[e + 1] - starts[e]
        new_edge_off[e + 1] = new_edge_off[e] + n_edges
        new_node_off[e + 1] = new_node_off[e] + n_nodes
        new_tab_off[e + 1] = new_tab_off[e] + nq * 2 * n_nodes
    out_edges = np.empty(new_edge_off[n_e])
    out_nodes = np.empty(new_node_off[n_e])
    out_tab = np.empty(new_tab_off[n_e])
    for e in range(n_e):
        out_edges[new_edge_off[e] : new_edge_off[e + 1]] = new_edges[e]
        if status[e] == 1:
            x, weight = rule_nodes(new_edges[e])
            out_nodes[new_node_off[e] : new_node_off[e + 1]] = x
            fill_rule_tables(
                x,
                weight,
                k_sorted[starts[e] : starts[e + 1]],
                out_tab[new_tab_off[e] : new_tab_off[e + 1]],
            )
        else:
            out_nodes[new_node_off[e] : new_node_off[e + 1]] = node_x[node_off[e] : node_off[e + 1]]
            out_tab[new_tab_off[e] : new_tab_off[e + 1]] = tab[tab_off[e] : tab_off[e + 1]]
    return status, out_edges, new_edge_off, out_nodes, new_node_off, out_tab, new_tab_off


@njit(cache=True)
def table_corrections(
    v0: float,
    kappa: float,
    theta: float,
    sigma: float,
    rho: float,
    t_unique: FloatArray,
    w_unique: FloatArray,
    node_x: FloatArray,
    node_off: npt.NDArray[np.int64],
    tab: FloatArray,
    tab_off: npt.NDArray[np.int64],
    order: npt.NDArray[np.int64],
    starts: npt.NDArray[np.int64],
    resolved: npt.NDArray[np.bool_],
    want_grad: bool,
) -> FloatArray:
    """:func:`lewis_corrections` on held rules with precomputed factors (:func:`rule_tables`).

    Expiry ``e`` uses the nodes ``node_x[node_off[e]:node_off[e+1]]`` and the factors
    ``tab[tab_off[e]:tab_off[e+1]]`` (its quotes in the order of ``order[starts[e]:starts[e+1]]``);
    rows of expiries with ``resolved[e] == False`` are NaN. Returns the corrections (column 0)
    and the price gradients (columns 1-5), in units of F; per expiry the sum over nodes is one
    matrix product ``[a | b] @ [Re h ; Im h]``.
    """
    n_q = order.size
    ncol = 6 if want_grad else 1
    out = np.empty((n_q, ncol))
    g = np.zeros(5, dtype=np.complex128)
    for e in range(t_unique.size):
        if not resolved[e]:
            for p in range(starts[e], starts[e + 1]):
                for c in range(ncol):
                    out[order[p], c] = np.nan
            continue
        t = t_unique[e]
        w = w_unique[e]
        n0 = node_off[e]
        nx = node_off[e + 1] - n0
        h = np.empty((2 * nx, ncol))
        for i in range(nx):
            xi = node_x[n0 + i]
            psi = log_cf(v0, kappa, theta, sigma, rho, complex(xi, -0.5), t, g, want_grad)
            phi_h = np.exp(psi)
            h[i, 0] = math.exp(-0.5 * w * (xi * xi + 0.25)) - phi_h.real
            h[nx + i, 0] = -phi_h.imag
            if want_grad:
                for c in range(5):
                    dh = -phi_h * g[c]
                    h[i, c + 1] = dh.real
                    h[nx + i, c + 1] = dh.imag
        nq = starts[e + 1] - starts[e]
        mat = tab[tab_off[e] : tab_off[e + 1]].reshape((nq, 2 * nx))
        res = np.dot(mat, h)
        for j in range(nq):
            qi = order[starts[e] + j]
            for c in range(ncol):
                out[qi, c] = res[j, c]
    return out


# -- calibration residuals ---------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def iv_residuals(
    price: FloatArray,
    dprice: FloatArray,
    forward: FloatArray,
    strike: FloatArray,
    t: FloatArray,
    call: npt.NDArray[np.bool_],
    discount: FloatArray,
    iv_market: FloatArray,
    sqrt_w: FloatArray,
    p_floor: FloatArray,
    iv_floor: FloatArray,
    vega_floor: FloatArray,
    vega_scale: FloatArray,
    sqrt_t: FloatArray,
    k: FloatArray,
    guess_table: FloatArray,
    failed: float,
    want_jac: bool,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Residuals ``sqrt(w) (sigma_model - sigma_market)`` of the ``iv`` objective and their
    Jacobian ``sqrt(w) dprice / vega`` (rows of ``dprice``, any number of columns).

    ``sigma_model`` is the Black-76 implied vol of ``price`` (volcal's solver), floored below
    ``p_floor``: there it is ``iv_floor + (price - p_floor) / vega_floor`` (see
    :mod:`volcal.heston.calibrate`). Vega is ``vega_scale exp(-d1^2 / 2)`` with
    ``vega_scale = D F sqrt(t) / sqrt(2 pi)``, ``d1 = sigma sqrt(t) / 2 - k / (sigma sqrt(t))``,
    ``k = ln(K/F)``. A non-finite residual becomes ``failed`` with a zero Jacobian row; a
    Jacobian row with a non-finite entry becomes zero. Also returns the unfloored implied vols
    (NaN where none exists). ``dprice`` is ignored unless ``want_jac``.
    """
    vol, _ = implied_vol_kernel(price, forward, strike, t, call, discount, guess_table)
    n = price.size
    m = dprice.shape[1] if want_jac else 0
    r = np.empty(n)
    jac = np.empty((n, m))
    for i in range(n):
        v = vol[i]
        if price[i] >= p_floor[i] and v > 0.0:  # False for a NaN vol
            sv = v * sqrt_t[i]
            d1 = 0.5 * sv - k[i] / sv
            vega = vega_scale[i] * math.exp(-0.5 * d1 * d1)
        else:
            vega = vega_floor[i]
            v = iv_floor[i] + (price[i] - p_floor[i]) / vega
        ri = sqrt_w[i] * (v - iv_market[i])
        if not math.isfinite(ri):
            r[i] = failed
            for j in range(m):
                jac[i, j] = 0.0
            continue
        r[i] = ri
        if want_jac:
            scale = sqrt_w[i] / vega
            finite = True
            for j in range(m):
                x = dprice[i, j] * scale
                jac[i, j] = x
                finite = finite and math.isfinite(x)
            if not finite:
                for j in range(m):
                    jac[i, j] = 0.0
    return r, jac, vol


# -- Levenberg-Marquardt pieces (volcal.heston.calibrate.levenberg_marquardt) ------------------
@njit(cache=True)
def normal_equations(jac: FloatArray, r: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``g = J^T r`` and ``A = J^T J`` for a tall ``J`` (n, m)."""
    n, m = jac.shape
    g = np.zeros(m)
    a = np.zeros((m, m))
    for i in range(n):
        ri = r[i]
        for j in range(m):
            jj = jac[i, j]
            g[j] += jj * ri
            for c in range(j + 1):
                a[j, c] += jj * jac[i, c]
    for j in range(m):
        for c in range(j):
            a[c, j] = a[j, c]
    return g, a


@njit(cache=True)
def cl_gradient_norm(x: FloatArray, g: FloatArray, lo: FloatArray, hi: FloatArray) -> float:
    """``||g v||_inf`` with the Coleman-Li (1996) scaling ``v``: the distance to the bound the
    descent direction ``-g`` points at (1 where that bound is infinite), as in SciPy's ``trf``."""
    out = 0.0
    for j in range(x.size):
        v = 1.0
        if g[j] < 0.0 and math.isfinite(hi[j]):
            v = hi[j] - x[j]
        elif g[j] > 0.0 and math.isfinite(lo[j]):
            v = x[j] - lo[j]
        out = max(out, abs(g[j] * v))
    return out


@njit(cache=True)
def damped_step(
    a: FloatArray, g: FloatArray, d2: FloatArray, mu: float, free: npt.NDArray[np.bool_]
) -> tuple[FloatArray, bool]:
    """Solve ``(A + mu diag(d2)) dx = -g`` over the ``free`` variables (``dx = 0`` elsewhere) by
    Cholesky; ``ok`` is False when the damped matrix is not numerically positive definite."""
    m = g.size
    idx = np.flatnonzero(free)
    k = idx.size
    step = np.zeros(m)
    if k == 0:
        return step, True
    c = np.zeros((k, k))
    for p in range(k):
        for q in range(p + 1):
            c[p, q] = a[idx[p], idx[q]]
        c[p, p] += mu * d2[idx[p]]
    # in-place Cholesky c = L L^T (lower triangle)
    for p in range(k):
        s = c[p, p]
        for q in range(p):
            s -= c[p, q] * c[p, q]
        if not s > 0.0:
            return step, False
        c[p, p] = math.sqrt(s)
        for i in range(p + 1, k):
            s = c[i, p]
            for q in range(p):
                s -= c[i, q] * c[p, q]
            c[i, p] = s / c[p, p]
    y = np.empty(k)
    for p in range(k):
        s = -g[idx[p]]
        for q in range(p):
            s -= c[p, q] * y[q]
        y[p] = s / c[p, p]
    for p in range(k - 1, -1, -1):
        s = y[p]
        for q in range(p + 1, k):
            s -= c[q, p] * y[q]
        y[p] = s / c[p, p]
    for p in range(k):
        step[idx[p]] = y[p]
    return step, True


@njit(cache=True)
def lm_trial(
    x: FloatArray,
    g: FloatArray,
    a: FloatArray,
    d2: FloatArray,
    mu: float,
    lo: FloatArray,
    hi: FloatArray,
    max_factor: float,
    max_shift: float,
    xtol: float,
) -> tuple[FloatArray, float, bool, bool]:
    """One trial point of the projected Levenberg-Marquardt step (see
    :func:`volcal.heston.calibrate.levenberg_marquardt`).

    Variables at a bound with the gradient pushing outwards are held; the damped step
    (:func:`damped_step`) is shortened, direction kept, so that no variable with a positive lower
    bound changes by more than a factor ``max_factor`` and no other by more than ``max_shift``
    of its box width; the point is projected onto the box. Returns ``(x_new, predicted, small,
    ok)``: the reduction of ``0.5 |r|^2`` predicted by the linear model for ``x_new - x``,
    whether ``|x_new - x| < xtol (xtol + |x|)``, and False when the damped matrix is not
    positive definite or the step is not finite.
    """
    m = x.size
    free = np.empty(m, dtype=np.bool_)
    for j in range(m):
        free[j] = not ((x[j] <= lo[j] and g[j] > 0.0) or (x[j] >= hi[j] and g[j] < 0.0))
    step, ok = damped_step(a, g, d2, mu, free)
    x_new = x.copy()
    if not ok:
        return x_new, 0.0, False, False
    worst = 0.0
    for j in range(m):
        s = step[j]
        if not math.isfinite(s):
            return x_new, 0.0, False, False
        if lo[j] > 0.0 and x[j] > 0.0:
            limit = (max_factor - 1.0) * x[j] if s > 0.0 else (1.0 - 1.0 / max_factor) * x[j]
        else:
            limit = max_shift * (hi[j] - lo[j])
        if limit > 0.0 and math.isfinite(limit):
            worst = max(worst, abs(s) / limit)
    shrink = 1.0 / worst if worst > 1.0 else 1.0
    dx = np.empty(m)
    dx_norm2 = 0.0
    x_norm2 = 0.0
    for j in range(m):
        x_new[j] = min(max(x[j] + shrink * step[j], lo[j]), hi[j])
        dx[j] = x_new[j] - x[j]
        dx_norm2 += dx[j] * dx[j]
        x_norm2 += x[j] * x[j]
    predicted = 0.0
    for j in range(m):
        quad = 0.0
        for c in range(m):
            quad += a[j, c] * dx[c]
        predicted -= dx[j] * (g[j] + 0.5 * quad)
    small = math.sqrt(dx_norm2) < xtol * (xtol + math.sqrt(x_norm2))
    return x_new, predicted, small, True
