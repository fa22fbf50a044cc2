"""Calibration of one raw SVI smile, free of butterfly (and calendar) arbitrage.

Method
------
1. **Quasi-explicit search** (Zeliade Systems 2009). For fixed ``(m, sigma)`` the smile is
   linear in ``(a, u, v)`` (see :mod:`volcal.svi._kernels`) and the bid/ask-aware objective in
   total variance is minimised exactly over a box (``-2 sigma <= a <= max w_ask``,
   ``u, v <= 2 sigma`` from Lee's bound ``b (1 +- rho) <= 2``). The outer problem in
   ``(m, ln sigma)`` is solved by a grid scan (squared distance: it only picks the basin)
   and a compiled Nelder-Mead on the exact implied-vol objective (or SciPy's bounded
   Nelder-Mead, ``SviSliceSettings.outer_search = "scipy"``). With the pseudo-Huber loss
   the inner problem is convex but not piecewise quadratic: a projected Newton iteration
   from the squared-distance solution solves it.
2. **Constrained polish, compiled** (:func:`volcal.svi._kernels.al_lm_fit`). The conditions
   of no static arbitrage are constraints of the problem, not post-checks: ``g(k) >= g_margin``
   (Gatheral & Jacquier 2014, eq. 2.1) on the constraint grid of :mod:`volcal.svi.grids`, grown
   by the exchange method against the dense check grid (with refined minima), the analytic
   minimum variance ``a + b sigma sqrt(1 - rho**2) >= w_floor theta`` (so ``w > 0``
   everywhere), Lee's wing bound ``b (1 +- rho) <= 2`` (a box) and, for calendar-freeness,
   ``w(k) <= w_j(k)`` against longer expiries' smiles on their quoted ``k`` ranges
   (``ceilings``; or ``w_lower <= w <= w_upper`` against ``lower``/``upper`` neighbours). An
   augmented Lagrangian whose subproblems are solved by a projected Levenberg-Marquardt
   iteration minimises the exact implied-vol objective in wing-slope coordinates
   ``z = (a, b (1 - rho), b (1 + rho), m, ln sigma)``, from the quasi-explicit optimum. With
   neighbours the smile is first fitted alone and the calendar constraints are added only
   when that fit violates them; when the quasi-explicit optimum itself crosses a ceiling,
   the constrained polish runs first (its result is kept unless it ends poorly). When the
   first polish ends poorly (objective above ``RESTART_FACTOR`` times the quasi-explicit
   optimum plus ``RESTART_FLOOR``: it started from a smile violating ``g >= 0`` and ended in
   a poor local minimum), the outer optima of the next ``RESTARTS`` grid cells are polished
   too and the best feasible fit is kept. Only if no feasible point is found does SciPy's
   SLSQP run on the same problem (fallback; it did not run in the full real-data runs of
   ``docs/svi.md``).

Objective (implied vol, decimal)::

    L = mean_i [rho_h(W_i dist(sigma_i, [b_i, a_i])) + W_i**2 lam**2 (sigma_i - iv_mid_i)**2]

with ``W_i = 1/max(iv_ask_i - iv_bid_i, spread_floor)`` (:mod:`volcal.svi.quotes`), the band
``[b_i, a_i]`` the quoted one shrunk by ``band_shrink`` of the spread on each side,
``lam = mid_weight`` small and ``rho_h(e) = 2 h**2 (sqrt(1 + (e/h)**2) - 1)`` the pseudo-Huber
cost with knee ``h = huber`` spreads (``e**2`` when ``huber = 0``): a fitted vol inside the
band costs almost nothing, outside it costs (linearly) its distance in units of the quote's
spread.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from volcal.errors import CalibrationError, ParameterError
from volcal.svi import _kernels
from volcal.svi.grids import CHECK_SIZES, CONSTRAINT_SIZES, _unit_points, k_range, slice_grid
from volcal.svi.params import SviRaw
from volcal.svi.quotes import SliceQuotes

__all__ = ["SliceFitResult", "SviSliceSettings", "fit_svi_slice"]

FloatArray = npt.NDArray[np.float64]

CALENDAR_MARGIN = 1e-6
"""Calendar constraints keep ``w`` this share of ``theta`` away from a neighbour's smile."""
AL_MAX_OUTER = 80
"""Outer (multiplier) iterations of the compiled augmented Lagrangian."""
AL_MAX_INNER = 100
"""Levenberg-Marquardt iterations per outer iteration."""
RESTARTS = 4
"""Further grid cells whose outer optima are polished when the first polish ends poorly."""
RESTART_FACTOR, RESTART_FLOOR = 2.0, 0.01
"""The first polish "ends poorly" when its objective exceeds ``RESTART_FACTOR`` times the
quasi-explicit (unconstrained) optimum plus ``RESTART_FLOOR`` (mean squared distance in
spreads: ~0.1 spread RMS outside the band)."""
OUTER_SEARCHES = ("compiled", "scipy")
_SINH_25 = np.sinh(np.linspace(-4.0, 4.0, 25))
"""Outer searches over ``(m, ln sigma)`` (:attr:`SviSliceSettings.outer_search`)."""
_EMPTY = np.empty(0)


@dataclass(frozen=True)
class SviSliceSettings:
    """Settings of :func:`fit_svi_slice`.

    Attributes
    ----------
    mid_weight:
        ``lam``, weight of the pull towards the mid vol relative to the distance outside the
        bid/ask band (dimensionless, >= 0).
    band_shrink:
        Share of the spread by which each side of the band is moved inwards in the objective
        (``[bid + f Δσ, ask - f Δσ]``, ``0 <= f < 0.5``): a least-squares fit leaves many quotes
        a hair outside the band it is penalised against; shrinking the band keeps those hairs
        inside the quoted one.
    g_margin:
        Lower bound imposed on ``g(k)`` on the constraint grid (keeps ``g >= 0`` between grid
        points).
    w_floor:
        Lower bound on ``w(k) / theta`` on the grid (``theta`` = market ATM total variance).
    uv_floor:
        Lower bound on ``b (1 +- rho) / 2`` in the inner search (keeps ``|rho| < 1``).
    grid_m, grid_sigma:
        Size of the starting grid of the outer search.
    maxiter:
        Iteration limit of Nelder-Mead.
    polish_maxiter:
        Iteration limit of each SLSQP run of the SciPy fallback.
    polish:
        Kept for stored settings; has no effect: every smile is now polished by the compiled
        constrained solver from the quasi-explicit optimum.
    huber:
        Knee ``h`` of the pseudo-Huber cost of a quote's distance outside its (shrunk) band,
        in units of the quote's spread (dimensionless, >= 0): ``e = W_i dist`` costs
        ``2 h**2 (sqrt(1 + (e/h)**2) - 1)``, quadratic within ``h`` spreads and linear
        (``2 h |e|``: "outside costs its distance") beyond; ``0`` restores ``e**2``. Used
        by both stages (quasi-explicit inner solve and constrained polish).
    outer_search:
        ``"compiled"`` (default): the compiled Nelder-Mead of :mod:`volcal.svi._kernels` over
        ``(m, ln sigma)``; ``"scipy"``: SciPy's bounded Nelder-Mead
        (``scipy.optimize.minimize``) on the same compiled objective, from the same start
        (see ``docs/svi.md`` for the measured difference).
    """

    mid_weight: float = 0.01
    band_shrink: float = 0.2
    g_margin: float = 1e-4
    w_floor: float = 1e-3
    uv_floor: float = 1e-4
    grid_m: int = 9
    grid_sigma: int = 7
    maxiter: int = 400
    polish_maxiter: int = 300
    polish: bool = False
    huber: float = 0.1
    outer_search: str = "compiled"

    def __post_init__(self) -> None:
        if self.outer_search not in OUTER_SEARCHES:
            raise ParameterError(
                f"outer_search must be one of {', '.join(OUTER_SEARCHES)}, "
                f"got {self.outer_search!r}"
            )
        if not self.huber >= 0.0:
            raise ParameterError(f"huber must be >= 0, got {self.huber!r}")
        if not 0.0 <= self.band_shrink < 0.5:
            raise ParameterError(f"band_shrink must be in [0, 0.5), got {self.band_shrink!r}")


@dataclass(frozen=True)
class SliceFitResult:
    """Result of one smile's calibration.

    Attributes
    ----------
    params:
        Fitted raw SVI parameters.
    objective:
        Final value of the objective ``L`` (dimensionless, spreads squared).
    converged:
        True when the optimiser met its criteria and the solution satisfies every constraint.
    iterations, nfev:
        Iterations and objective evaluations, summed over the stages.
    message:
        The last stage's optimiser message.
    method:
        ``"quasi-explicit"`` or ``"quasi-explicit+slsqp"``.
    constraint_min:
        Smallest value at the solution of the analytic constraints (minimum variance, wing
        bound) and of ``g`` on the dense check grid: >= 0 when feasible.
    """

    params: SviRaw
    objective: float
    converged: bool
    iterations: int
    nfev: int
    message: str
    method: str
    constraint_min: float


def _raw_from_auv(a: float, u: float, v: float, m: float, sigma: float) -> SviRaw:
    c = 0.5 * (u + v)
    d = 0.5 * (u - v)
    b = c / sigma
    rho = d / c if c > 0 else 0.0
    return SviRaw(a=a, b=b, rho=rho, m=m, sigma=sigma)


def _svi_parts(
    x: FloatArray, k: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(w, w', w'')`` on ``k`` and their Jacobians (``(n, 5)``) in ``(a, b, rho, m, sigma)``."""
    a, b, rho, m, sigma = x
    z = k - m
    r = np.sqrt(z * z + sigma * sigma)
    r3 = r**3
    s2 = sigma * sigma
    w = a + b * (rho * z + r)
    w1 = b * (rho + z / r)
    w2 = b * s2 / r3
    one = np.ones_like(k)
    zero = np.zeros_like(k)
    dw = np.stack([one, rho * z + r, b * z, -b * (rho + z / r), b * sigma / r], axis=1)
    dw1 = np.stack([zero, rho + z / r, b * one, -b * s2 / r3, -b * z * sigma / r3], axis=1)
    dw2 = np.stack(
        [
            zero,
            s2 / r3,
            zero,
            3.0 * b * s2 * z / r**5,
            b * (2.0 * sigma / r3 - 3.0 * sigma**3 / r**5),
        ],
        axis=1,
    )
    return w, w1, w2, dw, dw1, dw2


def _g_and_jac(
    x: FloatArray, k: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(g, dg/dx, w, dw/dx)`` on ``k``; ``g = -1`` (gradient 0) where ``w <= 0``, so that a
    constraint sees a violation rather than NaN (compiled kernels of :mod:`._kernels`)."""
    kk = np.ascontiguousarray(k, dtype=float)
    a, b, rho, m, sigma = (float(v) for v in x)
    g, dg = _kernels.svi_g_jac(a, b, rho, m, sigma, kk)
    w, dw = _kernels.svi_w_jac(a, b, rho, m, sigma, kk)
    return g, dg, w, dw


class _SliceProblem:
    """The data and constraints of one smile's fit (internal)."""

    def __init__(
        self,
        data: SliceQuotes,
        settings: SviSliceSettings,
        lower: SviRaw | None = None,
        upper: SviRaw | None = None,
        k_bounds: tuple[float, float] | None = None,
        ceilings: Sequence[tuple[SviRaw, float, float]] = (),
    ) -> None:
        self.data = data
        self.settings = settings
        inf = math.inf
        # (smile, sign, k_lo, k_hi): sign (w - w_p) >= 0 required for k_lo <= k <= k_hi
        self.neighbours: list[tuple[SviRaw, float, float, float]] = [
            (p, sign, -inf, inf) for p, sign in ((lower, 1.0), (upper, -1.0)) if p is not None
        ]
        self.neighbours += [(p, -1.0, lo, hi) for p, lo, hi in ceilings]
        # the neighbours as arrays for the compiled calendar check
        nbs = self.neighbours
        self._nb = np.array([[p.a, p.b, p.rho, p.m, p.sigma] for p, _, _, _ in nbs]).reshape(-1, 5)
        self._nb_sign = np.array([sign for _, sign, _, _ in nbs], dtype=float)
        self._nb_lo = np.array([lo for _, _, lo, _ in nbs], dtype=float)
        self._nb_hi = np.array([hi for _, _, _, hi in nbs], dtype=float)
        self._nb_sig2 = np.array([p.sigma**2 for p, _, _, _ in nbs], dtype=float)
        n = data.k.size
        t = data.t
        self.k = np.ascontiguousarray(data.k, dtype=float)
        # the band [vb, va] (vols), the mid vm, weight2 = weight**2 / n, sw = sqrt(weight2),
        # the same in total variance (wb, wa, wm) and q: d sigma / d w = 1 / (2 sigma t),
        # total-variance weights approximating vol distances (one compiled pass)
        (self.vb, self.va, self.vm, self.weight2, self.sw, self.wb, self.wa, self.wm, self.q) = (
            _kernels.slice_arrays(
                np.ascontiguousarray(data.iv_bid, dtype=float),
                np.ascontiguousarray(data.iv_ask, dtype=float),
                np.ascontiguousarray(data.iv_mid, dtype=float),
                np.ascontiguousarray(data.weight, dtype=float),
                float(t), float(settings.band_shrink), n,
            )
        )  # fmt: skip
        self.lam2 = settings.mid_weight**2
        # pseudo-Huber knee for the residual sqrt(weight2) dist = W dist / sqrt(n)
        self.hub = max(float(settings.huber), 0.0) / math.sqrt(n)
        self.theta = max(data.atm_variance, float(np.min(self.wm)))
        self.k_lo, self.k_hi = k_range(self.k, self.theta)
        if k_bounds is not None:
            self.k_lo, self.k_hi = min(self.k_lo, k_bounds[0]), max(self.k_hi, k_bounds[1])
        span = float(self.k[-1] - self.k[0])
        self.m_bounds = (float(self.k[0]) - span, float(self.k[-1]) + span)
        sq = math.sqrt(self.theta)
        self.sigma_bounds = (max(1e-4, 0.02 * sq), max(2.0 * span, 4.0 * sq))
        self.a_hi = float(np.max(self.wa))
        self._set_static_grids()

    def _set_static_grids(self) -> None:
        # the parts of the constraint and check grids that do not move with (m, sigma),
        # sorted once; grid() / dense_grid() merge the moving m + sigma sinh(z) points in
        self._grid_static = _static_grid(self.k_lo, self.k_hi, self.theta, CONSTRAINT_SIZES)
        self._dense_static = _static_grid(self.k_lo, self.k_hi, self.theta, CHECK_SIZES)
        self._zbox = _z_box(self)

    def without_neighbours(self) -> _SliceProblem:
        """The same problem without calendar constraints (shares the data arrays)."""
        out = copy.copy(self)
        out.neighbours = []
        out._nb = np.empty((0, 5))
        out._nb_sign = out._nb_lo = out._nb_hi = out._nb_sig2 = np.empty(0)
        return out

    # --- objective -----------------------------------------------------------------------
    def loss(self, x: FloatArray) -> float:
        a, b, rho, m, sigma = (float(v) for v in x)
        return float(
            _kernels.svi_iv_loss(
                a, b, rho, m, sigma, self.k, self.data.t, self.vb, self.va, self.vm,
                self.weight2, self.lam2, self.hub,
            )
        )  # fmt: skip

    def loss_grad(self, x: FloatArray) -> FloatArray:
        """Gradient of :meth:`loss` (the objective is C1: piecewise quadratic in the vols)."""
        w, _, _, dw, _, _ = _svi_parts(x, self.k)
        t = self.data.t
        sig = np.sqrt(np.maximum(w, 0.0) / t)
        dist = np.where(sig < self.vb, sig - self.vb, np.where(sig > self.va, sig - self.va, 0.0))
        # d rho(e) / d e = 2 e / sqrt(1 + (e/h)**2) for the pseudo-Huber, 2 e without
        shrink = 1.0 / np.sqrt(1.0 + self.weight2 * dist**2 / self.hub**2) if self.hub > 0 else 1.0
        dloss_dsig = 2.0 * self.weight2 * (shrink * dist + self.lam2 * (sig - self.vm))
        # d sigma / d w = 1 / (2 sigma t); zero where the fitted variance is not positive
        dsig_dw = np.where(sig > 0, 1.0 / (2.0 * np.where(sig > 0, sig, 1.0) * t), 0.0)
        return np.asarray((dloss_dsig * dsig_dw) @ dw)

    def residuals(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Residuals ``r`` with ``loss = r @ r`` and their Jacobian ``(2 n, 5)``:
        ``e = sqrt(weight2) dist(sigma, band)`` (pseudo-Huber: ``sign(e) sqrt(rho(e))``) and
        ``sqrt(weight2) lam (sigma - mid)``."""
        a, b, rho, m, sigma = (float(v) for v in x)
        w, dw = _kernels.svi_w_jac(a, b, rho, m, sigma, self.k)
        t = self.data.t
        sig = np.sqrt(np.maximum(w, 0.0) / t)
        below, above = sig < self.vb, sig > self.va
        dist = np.where(below, sig - self.vb, np.where(above, sig - self.va, 0.0))
        sw = np.sqrt(self.weight2)
        lam = math.sqrt(self.lam2)
        dsig = np.where(sig > 0, 1.0 / (2.0 * np.where(sig > 0, sig, 1.0) * t), 0.0)
        jac_sig = dsig[:, None] * dw
        e = sw * dist
        r1, d1 = e, (below | above) * 1.0
        if self.hub > 0:
            x2 = (e / self.hub) ** 2
            root = np.sqrt(1.0 + x2)
            rr = np.sqrt(2.0 * self.hub**2 * x2 / (root + 1.0))
            pos = rr > 0
            r1 = np.where(pos, np.copysign(rr, e), e)
            d1 = np.where(pos, np.abs(e) / (root * np.where(pos, rr, 1.0)), d1)
        r = np.concatenate([r1, sw * lam * (sig - self.vm)])
        jac = np.concatenate([(d1 * sw)[:, None] * jac_sig, (sw * lam)[:, None] * jac_sig], axis=0)
        return r, jac

    def bounds(self) -> list[tuple[float, float]]:
        """Box of the five raw parameters in the polish (``a >= -2 sigma_max`` is necessary
        for ``w >= 0`` given Lee's bound; positivity itself is a constraint)."""
        return [
            (-2.0 * self.sigma_bounds[1], self.a_hi),
            (0.0, 2.0),
            (-0.9999, 0.9999),
            self.m_bounds,
            self.sigma_bounds,
        ]

    def qe(self, m: float, sigma: float) -> tuple[float, float, float, float]:
        return _kernels.qe_objective(
            m,
            sigma,
            self.k,
            self.data.t,
            self.wb,
            self.wa,
            self.wm,
            self.q,
            self.vb,
            self.va,
            self.vm,
            self.weight2,
            self.lam2,
            self.a_hi,
            self.settings.uv_floor,
            self.hub,
        )

    # --- constraints ---------------------------------------------------------------------
    def grid(self, m: float, sigma: float) -> FloatArray:
        """Constraint grid: the slice's scales at ``(m, sigma)`` and its neighbours'."""
        base = _merge_local(self._grid_static, m, sigma, CONSTRAINT_SIZES)
        if not self.neighbours:
            return base
        return _kernels.neighbour_grid(base, self._nb, self._nb_lo, self._nb_hi, _SINH_25)

    def dense_grid(self, m: float, sigma: float) -> FloatArray:
        """The arbitrage report's dense grid (``CHECK_SIZES``) for this slice."""
        return _merge_local(self._dense_static, m, sigma, CHECK_SIZES)

    def active_constraints(self, x: FloatArray, pts: FloatArray) -> FloatArray:
        return self._active(x, pts)[0]

    def analytic_min(self, x: FloatArray) -> float:
        """Smallest of the analytic constraints of :meth:`_active` (minimum variance, Lee's
        bound), the same values without ``g``; NaN when any is NaN."""
        a, b, rho, _, sigma = x.tolist()
        root = math.sqrt(max(1.0 - rho * rho, 1e-300))
        wmin = (a + b * sigma * root) / self.theta - self.settings.w_floor
        v1, v2 = 2.0 - b * (1.0 - rho), 2.0 - b * (1.0 + rho)
        if wmin != wmin or v1 != v1 or v2 != v2:
            return math.nan
        return min(wmin, v1, v2)

    def _active(self, x: FloatArray, pts: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Constraints on the active points ``pts`` only: ``g(k) >= g_margin`` there, the
        analytic minimum of ``w`` (``a + b sigma sqrt(1 - rho**2) >= w_floor theta``, which
        keeps ``w > 0`` everywhere) and Lee's wing bound ``b (1 +- rho) <= 2``."""
        s = self.settings
        _, b, rho, _, sigma = x
        g, dg, _, _ = _g_and_jac(x, pts)
        root = math.sqrt(max(1.0 - rho * rho, 1e-300))
        wmin = (x[0] + b * sigma * root) / self.theta - s.w_floor
        dwmin = np.array([1.0, sigma * root, -b * sigma * rho / root, 0.0, b * root]) / self.theta
        slopes = np.array([b * (1.0 - rho), b * (1.0 + rho)])
        dslopes = np.array([[0.0, 1.0 - rho, -b, 0.0, 0.0], [0.0, 1.0 + rho, b, 0.0, 0.0]])
        vals = np.concatenate([g - s.g_margin, [wmin], 2.0 - slopes])
        jac = np.concatenate([dg, dwmin[None, :], -dslopes], axis=0)
        return vals, jac

    def calendar_min(self, x: FloatArray, grid: FloatArray) -> float:
        """Smallest calendar constraint value of :meth:`calendar` (no Jacobian; ``inf``
        without neighbours)."""
        a, b, rho, m, sigma = (float(v) for v in x)
        return float(
            _kernels.calendar_min_values(
                a, b, rho, m, sigma, np.ascontiguousarray(grid, dtype=float), self._nb,
                self._nb_sign, self._nb_lo, self._nb_hi, self.theta,
            )
        )  # fmt: skip

    def calendar(self, x: FloatArray, grid: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Calendar constraints against the neighbouring smiles only (values, Jacobian):
        ``+-(w - w_p)/theta >= 0`` on ``grid``. The wing slopes are not ordered: beyond the
        grid the surface's running envelope (:class:`~volcal.svi.svi_surface.SviSurface`)
        keeps ``w`` non-decreasing in ``t``."""
        parts = _svi_parts(x, grid)
        w, dw = parts[0], parts[3]
        vals: list[FloatArray] = []
        jacs: list[FloatArray] = []
        for p, sign, lo, hi in self.neighbours:
            sel = (grid >= lo) & (grid <= hi)
            vals.append(sign * (w[sel] - p.total_variance(grid[sel])) / self.theta)
            jacs.append(sign * dw[sel] / self.theta)
        if not vals:
            return np.empty(0), np.empty((0, 5))
        return np.concatenate(vals), np.concatenate(jacs, axis=0)


def fit_svi_slice(
    data: SliceQuotes,
    *,
    lower: SviRaw | None = None,
    upper: SviRaw | None = None,
    settings: SviSliceSettings | None = None,
    k_bounds: tuple[float, float] | None = None,
    ceilings: Sequence[tuple[SviRaw, float, float]] = (),
) -> SliceFitResult:
    """Fit one raw SVI smile to two-sided quotes, free of butterfly arbitrage.

    Parameters
    ----------
    data:
        The quotes of one expiry (:func:`volcal.svi.quotes.slices_from_quotes`).
    lower, upper:
        Fitted smiles of a shorter (``lower``) and a longer (``upper``) expiry, if any: the
        fit is then also constrained to lie between them, wing slopes included (no calendar
        spread arbitrage).
    settings:
        :class:`SviSliceSettings`; defaults when None.
    k_bounds:
        Log-moneyness range the no-arbitrage constraints must cover in addition to the
        slice's own padded quote range (a surface fit passes the range of all its expiries,
        the range its arbitrage report checks).
    ceilings:
        ``(smile, k_lo, k_hi)`` of longer expiries: the fit must stay below each of them for
        ``k_lo <= k <= k_hi`` (log-moneyness; :func:`~volcal.svi.surface_fit.fit_svi` passes
        the quoted range of each longer expiry, where that smile is determined by its quotes).

    Returns
    -------
    SliceFitResult

    Raises
    ------
    CalibrationError
        When the slice has fewer than 3 quotes (the inner problem is then singular).
    """
    s = settings or SviSliceSettings()
    if data.k.size < 3:
        raise CalibrationError(
            f"expiry {data.expiry}: {data.k.size} quotes, an SVI smile needs at least 3"
        )
    prob = _SliceProblem(data, s, lower, upper, k_bounds, ceilings)
    ms = _linspace(*prob.m_bounds, s.grid_m)
    sigmas = _geomspace(*prob.sigma_bounds, s.grid_sigma)
    args = (
        prob.k,
        data.t,
        prob.wb,
        prob.wa,
        prob.wm,
        prob.q,
        prob.vb,
        prob.va,
        prob.vm,
        prob.weight2,
        prob.lam2,
        prob.a_hi,
        s.uv_floor,
        prob.hub,
    )
    # the grid only picks the basin: scanned with the squared distance (exact active-set
    # solves, ~5x cheaper than the pseudo-Huber ones); Nelder-Mead then uses the exact loss
    table = _kernels.qe_grid(ms, sigmas, *args[:-1], 0.0)
    lo = np.array([prob.m_bounds[0], math.log(prob.sigma_bounds[0])])
    hi = np.array([prob.m_bounds[1], math.log(prob.sigma_bounds[1])])

    def outer(cell: int) -> tuple[FloatArray, float, int, int]:
        """Outer search from grid cell ``cell``: the smile at its optimum, the objective,
        iterations and evaluations."""
        ci, cj = np.unravel_index(cell, table.shape)
        start = np.array([ms[ci], math.log(sigmas[cj])])
        if s.outer_search == "scipy":
            m_opt, ls_opt, n_it, n_ev = _scipy_outer(start, lo, hi, args, s.maxiter)
        else:
            m_opt, ls_opt, _f, n_it, n_ev = _kernels.qe_nelder_mead(
                start, lo, hi, *args, s.maxiter, 1e-3, 1e-9
            )
        sigma_opt = math.exp(ls_opt)
        fun, a, u, v = prob.qe(m_opt, sigma_opt)
        p = _raw_from_auv(a, u, v, m_opt, sigma_opt)
        return np.array([p.a, p.b, p.rho, p.m, p.sigma]), float(fun), int(n_it), int(n_ev)

    cells = np.argsort(table, axis=None)
    x0, qe_fun, nit, nfev = outer(int(cells[0]))
    iterations = nit
    # when the quasi-explicit optimum already crosses a calendar ceiling, the fit without
    # the ceilings usually crosses it too and is then polished a second time under them:
    # polish under them at once, and keep that unless it ends poorly (the restart criterion
    # below; then the path below runs, its counts continuing from this attempt's)
    if prob.neighbours and not _feasible(prob, x0, check_g=False)[0]:
        direct = _al_polish(prob, x0, iterations, nfev)
        if direct is not None:
            if direct.objective <= RESTART_FACTOR * qe_fun + RESTART_FLOOR:
                return direct
            iterations, nfev = direct.iterations, direct.nfev
    # first without the calendar constraints (the usual case: they do not bind)
    alone = prob.without_neighbours() if prob.neighbours else prob
    res = _al_polish(alone, x0, iterations, nfev)
    # restarts: the polish starts from the quasi-explicit optimum, which may violate the
    # butterfly constraints; from there it can end in a poor local minimum far from it. Then
    # the next grid cells' outer optima are polished too and the best feasible fit is kept
    bad = res is None or res.objective > RESTART_FACTOR * qe_fun + RESTART_FLOOR
    for cell in cells[1 : 1 + RESTARTS] if bad else []:
        x_b, _, n_it, n_ev = outer(int(cell))
        its = res.iterations if res is not None else iterations
        evs = res.nfev if res is not None else nfev
        r_b = _al_polish(alone, x_b, its + n_it, evs + n_ev)
        if r_b is not None and (res is None or r_b.objective < res.objective):
            res = r_b
        elif r_b is not None and res is not None:
            res = replace(res, iterations=r_b.iterations, nfev=r_b.nfev)
        if res is not None and res.objective <= RESTART_FACTOR * qe_fun + RESTART_FLOOR:
            break
    if not prob.neighbours:
        if res is not None:
            return res
    elif res is not None:
        # then, if the calendar constraints are violated, under them from that smile and
        # from the neighbour-derived starts
        x1 = _x_of_params(res.params)
        # butterfly already checked on the same dense grid: only the calendar is new
        if _feasible(prob, x1, check_g=False)[0]:
            return res
        iterations, nfev = res.iterations, res.nfev
        for x in [x1, *_neighbour_starts(prob)]:
            res = _al_polish(prob, x, iterations, nfev)
            if res is not None:
                return res
    else:
        res = _al_polish(prob, x0, iterations, nfev)
        if res is not None:
            return res
    # the compiled solver found no feasible point: SciPy's SLSQP from the same start
    ok = _feasible(prob, x0)[0]
    return _polish(prob, x0, ok and nit < s.maxiter, iterations, nfev)


def _scipy_outer(
    start: FloatArray, lo: FloatArray, hi: FloatArray, args: tuple[Any, ...], maxiter: int
) -> tuple[float, float, int, int]:
    """The outer search over ``(m, ln sigma)`` by SciPy's bounded Nelder-Mead
    (``scipy.optimize.minimize``) on the compiled quasi-explicit objective, same start and
    tolerances as the compiled search. Returns ``(m, ln sigma, iterations, evaluations)``."""
    lo0, hi0, lo1, hi1 = float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])

    def fun(z: FloatArray) -> float:
        return float(_kernels._qe_value(float(z[0]), float(z[1]), lo0, hi0, lo1, hi1, *args))

    res = minimize(
        fun,
        start,
        method="Nelder-Mead",
        bounds=list(zip(lo, hi, strict=True)),
        options={"maxiter": maxiter, "xatol": 1e-3, "fatol": 1e-9},
    )
    return float(res.x[0]), float(res.x[1]), int(res.nit), int(res.nfev)


def _static_grid(k_lo: float, k_hi: float, theta: float, sizes: tuple[int, int]) -> FloatArray:
    """``slice_grid(k_lo, k_hi, theta, sizes=sizes)`` (the part without ``m, sigma``): its two
    parts are increasing, so they are merged (:func:`_kernels.merge_local_points` with
    ``m = 0``) instead of sorted; the same array."""
    if not (k_hi > k_lo and theta > 0.0 and math.isfinite(k_lo) and math.isfinite(k_hi)
            and math.isfinite(theta)):  # fmt: skip
        return slice_grid(k_lo, k_hi, theta, sizes=sizes)
    unit, z, _ = _unit_points(*sizes)
    uniform = k_lo + (k_hi - k_lo) * unit
    return _kernels.merge_local_points(uniform, 0.0, float(np.sqrt(theta) * 8.0), z)


def _merge_local(static: FloatArray, m: float, sigma: float, sizes: tuple[int, int]) -> FloatArray:
    """``slice_grid(k_lo, k_hi, theta, m, sigma, sizes)`` from its sorted static part
    (``slice_grid`` without ``m, sigma``): the points ``m + sigma sinh(z)`` (increasing) are
    merged in, giving the same sorted array without a full sort."""
    return _kernels.merge_local_points(static, float(m), float(sigma), _unit_points(*sizes)[2])


_ARANGE: dict[int, FloatArray] = {}


def _linspace(start: float, stop: float, num: int) -> FloatArray:
    """``np.linspace(start, stop, num)`` for finite floats, the same floating-point steps
    (``arange * step + start``, last point set to ``stop``) without its generic overhead."""
    base = _ARANGE.get(num)
    if base is None:
        base = _ARANGE[num] = np.arange(num, dtype=float)
    if num < 2:
        return np.linspace(start, stop, num)
    step = (stop - start) / (num - 1)
    if step == 0.0:
        return np.linspace(start, stop, num)
    y = base * step
    y += start
    y[-1] = stop
    return y


def _geomspace(start: float, stop: float, num: int) -> FloatArray:
    """``np.geomspace(start, stop, num)`` for positive finite floats: ``10**linspace(log10
    start, log10 stop)`` (the same ufuncs) with the end points set exactly."""
    if num < 2 or not (start > 0.0 and stop > 0.0):
        return np.geomspace(start, stop, num)
    y = _linspace(float(np.log10(start)), float(np.log10(stop)), num)
    out = np.power(10.0, y)
    out[0] = start
    out[-1] = stop
    return out


def _x_of_params(p: SviRaw) -> FloatArray:
    return np.array([p.a, p.b, p.rho, p.m, p.sigma])


def _neighbour_starts(prob: _SliceProblem) -> list[FloatArray]:
    """Starts that satisfy the calendar constraints: a shorter smile shifted up, or a longer
    one scaled down, to this slice's ATM level."""
    out = []
    for p, sign, _, _ in prob.neighbours[:2]:
        w0 = float(p.total_variance(0.0))
        if sign > 0:
            out.append(np.array([p.a + max(prob.theta - w0, 0.0), p.b, p.rho, p.m, p.sigma]))
        else:
            lam = min(prob.theta / w0, 1.0) if w0 > 0 else 1.0
            out.append(np.array([lam * p.a, lam * p.b, p.rho, p.m, p.sigma]))
    return out


def _z_box(prob: _SliceProblem) -> tuple[FloatArray, FloatArray]:
    """Box of ``z = (a, b (1 - rho), b (1 + rho), m, ln sigma)``: Lee's bound on the wing
    slopes and the search ranges of ``a``, ``m``, ``sigma`` (:meth:`_SliceProblem.bounds`)."""
    (a_lo, a_hi), _, _, (m_lo, m_hi), (s_lo, s_hi) = prob.bounds()
    lower = np.array([a_lo, 1e-8, 1e-8, m_lo, math.log(s_lo)])
    upper = np.array([a_hi, 2.0, 2.0, m_hi, math.log(s_hi)])
    return lower, upper


def _calendar_rows(
    prob: _SliceProblem, pts: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Calendar constraint rows ``sc (w(kc) - wc) >= 0`` of the compiled solver at ``pts``.

    A ``lower`` neighbour gives one row per point (``w >= w_lower + margin``); the ceilings
    (``upper`` and the longer expiries) are merged into one row per point, ``w <= min_j w_j -
    margin`` over the ceilings whose ``k`` range covers the point (the same feasible set as
    one row per ceiling and point, with fewer rows)."""
    return _kernels.calendar_rows(
        np.ascontiguousarray(pts, dtype=float), prob._nb, prob._nb_sign, prob._nb_lo,
        prob._nb_hi, prob._nb_sig2, CALENDAR_MARGIN * prob.theta,
    )  # fmt: skip


def _feasible(
    prob: _SliceProblem, x: FloatArray, check_g: bool = True
) -> tuple[bool, FloatArray, float]:
    """Constraint check of a candidate: minimum variance and Lee's bound (analytic), ``g >= 0``
    on the dense check grid with refined minima (skipped when ``check_g`` is False: already
    checked), the calendar conditions against the neighbours on the constraint grid. Returns
    ``(ok, new active points for g, min g on the dense grid)``."""
    g_min = math.inf
    ok = prob.analytic_min(x) >= -1e-12
    if check_g:
        a, b, rho, m, sigma = (float(v) for v in x)
        dense = prob.dense_grid(m, sigma)
        g_min = float(_kernels.svi_g_refined_min(a, b, rho, m, sigma, dense))
        ok = ok and g_min >= 0.0
    if ok and prob.neighbours:
        ok = prob.calendar_min(x, prob.grid(float(x[3]), float(x[4]))) >= -1e-9
    if ok or not check_g:
        return ok, np.empty(0), g_min
    # infeasible: the dense grid's values with the refined points, for the exchange step
    dense, g_dense = _g_refined(x, dense)
    order = np.argsort(dense)
    return False, _active_points(g_dense[order], dense[order], prob.settings.g_margin), g_min


def _al_polish(
    prob: _SliceProblem, x_qe: FloatArray, iterations: int, nfev: int
) -> SliceFitResult | None:
    """Constrained fit of the five raw parameters from the quasi-explicit optimum, compiled.

    :func:`volcal.svi._kernels.al_lm_fit` (augmented Lagrangian, Levenberg-Marquardt inner
    solves) minimises the exact implied-vol objective under ``g >= g_margin`` on the
    constraint grid, the minimum-variance bound and, against the neighbours, ``w`` ordered on
    their grids (margin ``CALENDAR_MARGIN theta``) with the wing slopes ordered by the box.
    The dense check grid is then scanned (:func:`_feasible`) and its low points of ``g`` join
    the constraint points (exchange method, at most 5 rounds). Returns None when no round
    ends feasible.
    """
    s = prob.settings
    lower, upper = prob._zbox
    a, b, rho, m, sigma = (float(v) for v in x_qe)
    z0 = np.clip(
        np.array([a, b * (1.0 - rho), b * (1.0 + rho), m, math.log(max(sigma, 1e-300))]),
        lower,
        upper,
    )
    kg = prob.grid(m, sigma)
    if prob.neighbours:
        kc, wc, sc = _calendar_rows(prob, np.unique(np.concatenate([kg, prob.k])))
    else:
        kc = wc = sc = _EMPTY
    sw = prob.sw
    lam = math.sqrt(prob.lam2)
    mult = np.zeros(kg.size + 1 + kc.size)
    outer_total = 0
    for _round in range(5):
        z, _f, _viol, mult, n_outer, n_inner, conv = _kernels.al_lm_fit(
            z0, lower, upper, prob.k, prob.data.t, prob.vb, prob.va, prob.vm, sw, lam,
            np.ascontiguousarray(kg), s.g_margin, kc, wc, sc, prob.theta, s.w_floor, mult,
            AL_MAX_OUTER, AL_MAX_INNER, prob.hub,
        )  # fmt: skip
        iterations += int(n_inner)
        nfev += 2 * int(n_inner)
        outer_total += int(n_outer)
        x = _x_of_z(z)
        ok, new_pts, g_min = _feasible(prob, x)
        if ok:
            cmin = min(prob.analytic_min(x), g_min)
            return SliceFitResult(
                params=SviRaw(*(float(v) for v in x)),
                objective=prob.loss(x),
                converged=bool(conv),
                iterations=iterations,
                nfev=nfev,
                message=(
                    "converged" if conv else "augmented Lagrangian stopped at its iteration limit"
                ),
                method="quasi-explicit+al-lm",
                constraint_min=cmin,
            )
        # exchange: the dense grid's low points of g, and for the calendar the constraint grid
        # at the new (m, sigma), join the constraint points (multipliers warm-started)
        grid_now = prob.grid(float(x[3]), float(x[4]))
        if new_pts.size == 0 and not prob.neighbours:
            new_pts = grid_now
        n_g = kg.size
        kg = np.concatenate([kg, new_pts])
        if prob.neighbours:
            kc_new, wc_new, sc_new = _calendar_rows(prob, grid_now)
            kc = np.concatenate([kc, kc_new])
            wc = np.concatenate([wc, wc_new])
            sc = np.concatenate([sc, sc_new])
        else:
            kc_new = _EMPTY
        mult = np.concatenate(
            [mult[:n_g], np.zeros(new_pts.size), mult[n_g:], np.zeros(kc_new.size)]
        )
        z0 = z
    return None


def _x_of_z(z: FloatArray) -> FloatArray:
    """Raw ``(a, b, rho, m, sigma)`` of polish coordinates ``z = (a, p, c, m, ln sigma)`` where
    ``p = b (1 - rho)`` and ``c = b (1 + rho)`` are the wing slopes: ``w`` is linear in
    ``(a, p, c)``, and Lee's bound is the box ``p, c <= 2``."""
    a, pl, cr, m, ls = z
    b = 0.5 * (pl + cr)
    return np.array([a, b, (cr - pl) / (pl + cr), m, math.exp(ls)])


def _dx_dz(z: FloatArray) -> FloatArray:
    _, pl, cr, _, ls = z
    tot = pl + cr
    out = np.zeros((5, 5))
    out[0, 0] = 1.0
    out[1, 1] = out[1, 2] = 0.5
    out[2, 1] = -2.0 * cr / tot**2
    out[2, 2] = 2.0 * pl / tot**2
    out[3, 3] = 1.0
    out[4, 4] = math.exp(ls)
    return out


def _g_refined(x: FloatArray, dense: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``g`` on the dense grid plus refined local minima: around every discrete local minimum
    of ``g`` below 0.05 two nested sub-grids (33 points each, spacing / 16 then / 256) locate
    a dip narrower than the grid. Returns ``(k, g)`` of the dense grid and the added points."""
    a, b, rho, m, sigma = (float(v) for v in x)
    kk = np.ascontiguousarray(dense, dtype=float)
    g = _kernels.svi_g_values(a, b, rho, m, sigma, kk)
    n = g.size
    if n < 3:
        return kk, g
    inner = np.flatnonzero((g[1:-1] <= g[:-2]) & (g[1:-1] <= g[2:])) + 1
    cand = inner[g[inner] < 0.05]
    if cand.size == 0:
        return kk, g
    ks, gs = [kk], [g]
    lo, hi = kk[cand - 1], kk[cand + 1]
    for _level in range(2):
        sub = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, 33)[None, :]
        gsub = _kernels.svi_g_values(a, b, rho, m, sigma, np.ascontiguousarray(sub.ravel()))
        gsub = gsub.reshape(sub.shape)
        ks.append(sub.ravel())
        gs.append(gsub.ravel())
        j = np.clip(np.argmin(gsub, axis=1), 1, 31)
        rows = np.arange(sub.shape[0])
        lo, hi = sub[rows, j - 1], sub[rows, j + 1]
    return np.concatenate(ks), np.concatenate(gs)


def _active_points(g: FloatArray, k: FloatArray, margin: float, limit: int = 12) -> FloatArray:
    """Points of a dense grid where the constraint ``g >= margin`` matters: the local minima
    of ``g`` below ``10 margin + 0.05`` and, where ``g < margin``, up to ``limit`` evenly
    spread points of each violated stretch."""
    n = g.size
    if n < 3:
        return k.copy()
    inner = (g[1:-1] <= g[:-2]) & (g[1:-1] <= g[2:])
    minima = np.flatnonzero(inner) + 1
    if g[0] <= g[1]:
        minima = np.concatenate([[0], minima])
    if g[-1] <= g[-2]:
        minima = np.concatenate([minima, [n - 1]])
    picks = [minima[g[minima] < 10.0 * margin + 0.05]]
    bad = np.flatnonzero(g < margin)
    if bad.size:
        picks.append(bad[np.unique(np.linspace(0, bad.size - 1, min(limit, bad.size)).astype(int))])
    idx = np.unique(np.concatenate(picks)) if picks else np.empty(0, dtype=int)
    return np.asarray(k[idx], dtype=float)


def _polish(
    prob: _SliceProblem, x_qe: FloatArray, qe_ok: bool, iterations: int, nfev: int
) -> SliceFitResult:
    """Local constrained fit over the five raw parameters from the quasi-explicit optimum.

    Coordinates ``z = (a, b (1 - rho), b (1 + rho), m, ln sigma)`` (:func:`_x_of_z`): ``w`` is
    linear in the first three and Lee's bound is a box. Solver: SciPy's SLSQP on the exact
    implied-vol objective with analytic gradients and constraint Jacobians. The semi-infinite
    constraint ``g(k) >= g_margin`` is imposed on an active set of points, grown between runs by the
    exchange method: after each run the dense check grid (:data:`volcal.svi.grids.CHECK_SIZES`)
    is scanned and its local minima of ``g`` below the margin join the set (at most 6 rounds
    per start). Starts: the quasi-explicit optimum, then (if no feasible point was reached)
    neighbour-derived starts and a nearly flat smile.
    """
    s = prob.settings
    (a_lo, a_hi), _, _, (m_lo, m_hi), (s_lo, s_hi) = prob.bounds()
    floor = 1e-8
    lower = np.array([a_lo, floor, floor, m_lo, math.log(s_lo)])
    upper = np.array([a_hi, 2.0, 2.0, m_hi, math.log(s_hi)])

    def z_of(x: FloatArray) -> FloatArray:
        a, b, rho, m, sigma = x
        z = np.array([a, b * (1.0 - rho), b * (1.0 + rho), m, math.log(max(sigma, 1e-300))])
        return np.clip(z, lower, upper)

    starts = [z_of(x_qe)]
    for p, sign, _, _ in prob.neighbours[:2]:
        # starts that satisfy that calendar constraint: a shorter smile shifted up, or a
        # longer one scaled down, to today's ATM level
        w0 = float(p.total_variance(0.0))
        if sign > 0:
            x_p = [p.a + max(prob.theta - w0, 0.0), p.b, p.rho, p.m, p.sigma]
        else:
            lam = min(prob.theta / w0, 1.0) if w0 > 0 else 1.0
            x_p = [lam * p.a, lam * p.b, p.rho, p.m, p.sigma]
        starts.append(z_of(np.array(x_p)))
    # last resort, feasible for the butterfly constraints: a nearly flat smile w ~ theta
    flat = np.array(
        [
            prob.theta,
            1e-4,
            1e-4,
            float(prob.k[np.argmin(np.abs(prob.k))]),
            0.5 * (math.log(s_lo) + math.log(s_hi)),
        ]
    )
    starts.append(np.clip(flat, lower, upper))

    def feasible(x: FloatArray) -> tuple[bool, FloatArray, FloatArray]:
        dense, g_dense = _g_refined(x, prob.dense_grid(float(x[3]), float(x[4])))
        order = np.argsort(dense)
        dense, g_dense = dense[order], g_dense[order]
        ok = float(np.min(prob.active_constraints(x, np.empty(0)))) >= -1e-12
        ok = ok and bool(np.all(g_dense >= 0.0))
        if ok and prob.neighbours:
            grid = prob.grid(float(x[3]), float(x[4]))
            ok = float(np.min(prob.calendar(x, grid)[0])) >= -1e-9
        return ok, dense, g_dense

    memo: dict[str, tuple[bytes, Any]] = {}

    def cached(key: str, z: FloatArray, fn: Any) -> Any:
        # SLSQP asks for values and derivatives at the same point in separate calls
        tag = z.tobytes()
        hit = memo.get(key)
        if hit is not None and hit[0] == tag:
            return hit[1]
        val = fn(z)
        memo[key] = (tag, val)
        return val

    def _loss_and_grad(z: FloatArray) -> tuple[float, FloatArray]:
        r, jac = prob.residuals(_x_of_z(z))
        return float(r @ r), np.asarray(2.0 * (r @ jac) @ _dx_dz(z))

    def loss(z: FloatArray) -> float:
        return float(cached("loss", z, _loss_and_grad)[0])

    def loss_grad(z: FloatArray) -> FloatArray:
        return np.asarray(cached("loss", z, _loss_and_grad)[1])

    zbounds = list(zip(lower, upper, strict=True))
    f_scale = max(prob.loss(x_qe), 1e-12)
    best: tuple[float, FloatArray, bool] | None = None
    if qe_ok:
        best = (prob.loss(x_qe), x_qe, True)
    for z in starts:
        x = _x_of_z(z)
        _, dense, g_dense = feasible(x)
        pts = _active_points(g_dense, dense, s.g_margin)
        ok, conv = False, False
        for _round in range(6):
            grid = prob.grid(float(x[3]), float(x[4])) if prob.neighbours else None

            def cons_eval(
                zz: FloatArray, pts: FloatArray = pts, grid: FloatArray | None = grid
            ) -> tuple[FloatArray, FloatArray]:
                xx = _x_of_z(zz)
                c, jc = prob._active(xx, pts)
                if grid is not None:
                    c2, jc2 = prob.calendar(xx, grid)
                    c, jc = np.concatenate([c, c2]), np.concatenate([jc, jc2], axis=0)
                return c, jc @ _dx_dz(zz)

            memo.pop("cons", None)

            def cons(zz: FloatArray, cons_eval: Any = cons_eval) -> tuple[FloatArray, FloatArray]:
                return cached("cons", zz, cons_eval)

            res = minimize(
                loss,
                z,
                jac=loss_grad,
                method="SLSQP",
                bounds=zbounds,
                constraints=[
                    {
                        "type": "ineq",
                        "fun": lambda zz, cons=cons: cons(zz)[0],
                        "jac": lambda zz, cons=cons: cons(zz)[1],
                    }
                ],
                # ftol is absolute in SLSQP: relative 1e-8 of the unconstrained optimum
                options={"maxiter": s.polish_maxiter, "ftol": 1e-8 * f_scale},
            )
            iterations += int(res.nit)
            nfev += int(res.nfev)
            z = np.clip(np.asarray(res.x, dtype=float), lower, upper)
            # SLSQP status 8 ("positive directional derivative for linesearch"): no descent
            # direction left at the working precision, i.e. stationary
            conv = bool(res.success) or int(res.status) == 8
            x = _x_of_z(z)
            ok, dense, g_dense = feasible(x)
            if ok:
                break
            pts = np.unique(np.concatenate([pts, _active_points(g_dense, dense, s.g_margin)]))
        if ok:
            score = prob.loss(x)
            if best is None or score < best[0]:
                best = (score, x, conv)
            break
    if best is None:
        # no start reached a feasible point: return the flat smile, flagged not converged
        x = _x_of_z(starts[-1])
        message, ok = "no feasible solution found", False
    else:
        _, x, ok = best
        message = "converged" if ok else "SLSQP stopped at its iteration limit"
    dense = prob.dense_grid(float(x[3]), float(x[4]))
    cmin = min(
        float(np.min(prob.active_constraints(x, np.empty(0)))),
        float(np.min(_g_refined(x, dense)[1])),
    )
    a, b, rho, m, sigma = (float(v) for v in x)
    return SliceFitResult(
        params=SviRaw(a=a, b=b, rho=rho, m=m, sigma=sigma),
        objective=prob.loss(x),
        converged=ok,
        iterations=iterations,
        nfev=nfev,
        message=message,
        method="quasi-explicit+slsqp",
        constraint_min=cmin,
    )
