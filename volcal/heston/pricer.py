"""Fast, vectorised Heston prices of European options and their analytic Jacobian.

Notation as in :mod:`volcal.heston.params`; ``F`` forward, ``K`` strike, ``k = ln(K/F)``,
``t`` years (ACT/365F), ``D`` discount factor. All prices are Black-76-style "on the forward":
``price = D F c(k, t)`` where ``c`` is the undiscounted price in units of ``F``.

Characteristic function
-----------------------
For ``X = ln(F_t / F_0)`` and complex ``u``, ``phi(u) = E[exp(i u X)] = exp(psi(u))`` with the
"little trap" form of Albrecher, Mayer, Schoutens and Tistaert (2007, Wilmott, eqs. 2-3),
rewritten without divisions by ``sigma**2``:

    beta = kappa - rho sigma i u,     s = u^2 + i u,     d = sqrt(beta^2 + sigma^2 s)  (Re d >= 0)
    b = beta + d,    a = beta - d = -sigma^2 s / b,    E = 1 - exp(-d t),    Q = 2 d + a E
    D(u) = -s E / Q,
    C(u) = kappa theta (a t - 2 ln(Q / (2 d))) / sigma^2,     ln(Q/(2d)) = log1p(a E / (2 d))
    psi(u) = C(u) + v0 D(u).

Pricing formula
---------------
Lewis (2001) on the contour ``u = x - i/2`` (where ``s = x^2 + 1/4`` is real), with a
Black-Scholes control variate of total variance ``w`` (Andersen and Piterbarg, "Interest Rate
Modeling" vol. I, sec. 9.4; Lord and Kahl 2007 discuss the contour choice):

    c_H(k) = c_BS(k; w) + e^{k/2} / pi  int_0^inf Re[ e^{-i x k} (phi_BS(x) - phi_H(x)) ]
                                                  / (x^2 + 1/4) dx,

    phi_BS(x) = exp(-w (x^2 + 1/4) / 2),   w = E[int_0^t v ds] (the expected total variance).

The same correction holds for calls and puts (put-call parity holds for both models), so an
out-of-the-money option is never a difference of large numbers. The Black part is
:func:`volcal.black_price`.

Analytic Jacobian
-----------------
Cui, del Baño Rollin and Germano (2017, Eur. J. Oper. Res. 263, "Full and fast calibration of
the Heston stochastic volatility model", sec. 3) observe that the gradient of the price is the
same Fourier integral with ``phi`` replaced by ``phi * grad psi``, so the Jacobian reuses the
nodes, the ``exp(-i x k)`` factors and ``phi`` of one pricing pass. We differentiate the
``psi`` above directly (chain rule through ``beta, d, a, E, Q``); the control variate drops out
because ``c_H`` does not depend on ``w``.

Quadrature (measured, not guessed)
----------------------------------
Per expiry, ``|phi_H|`` and the local rate of change of ``psi`` are scanned on a geometric grid
of ``x`` (ratio 2^(1/2), 10 decades). The integral is truncated where an upper bound of the
remaining tail, ``e^{k_max/2}/pi * sum |phi_BS - phi_H| dx / x^2``, is below ``1e-14``; panels
of 16-point Gauss-Legendre rules are then laid so that each covers at most a phase budget of 20
radians of ``k_max + |psi'(x)|`` and at most a factor 16 in ``x``. Short expiries with a large
vol of vol (whose characteristic function decays only exponentially, at rate
``(v0 + kappa theta t) sqrt(1 - rho^2) / sigma``) thus get long domains and more nodes, while a
typical expiry uses 100-300 nodes. On a grid of 3744 options (random parameters with sigma up
to 5, v0 up to 4, rho in [-0.95, 0.5], t from 1 day to 3 years, strikes +-6 standard
deviations) prices agree with QuantLib's ``AnalyticHestonEngine`` (relative tolerance 1e-14)
to 1e-12 absolute (in units of F) and with a 4x finer rule to 5e-14; see ``docs/heston.md``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from volcal._lbr import black_price_kernel
from volcal.black import black_price
from volcal.errors import ParameterError
from volcal.heston import _kernels
from volcal.heston.params import HestonParams

__all__ = [
    "FastHestonPricer",
    "heston_cf",
    "heston_price",
    "heston_price_jacobian",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ComplexArray = npt.NDArray[np.complex128]


def heston_cf(params: HestonParams, u: npt.ArrayLike, t: npt.ArrayLike) -> ComplexArray | complex:
    """Characteristic function of ``ln(F_t / F_0)`` under the Heston model.

    Parameters
    ----------
    params:
        Heston parameters.
    u:
        Complex argument(s); ``E[exp(i u X)]`` is finite at least for ``-1 <= Im u <= 0``.
    t:
        Time(s) in years (ACT/365F), broadcast against ``u``.

    Returns
    -------
    complex or ndarray of complex
        ``E[exp(i u ln(F_t/F_0))]`` (Albrecher et al. 2007 "little trap" form).
    """
    uu, tt = np.broadcast_arrays(
        np.asarray(u, dtype=np.complex128), np.asarray(t, dtype=np.float64)
    )
    psi, _ = _kernels.log_cf_array(
        params.v0,
        params.kappa,
        params.theta,
        params.sigma,
        params.rho,
        np.ascontiguousarray(uu).ravel(),
        np.ascontiguousarray(tt).ravel(),
        False,
    )
    out = np.exp(psi).reshape(uu.shape)
    return complex(out) if out.ndim == 0 else out


def _normalised(
    p: HestonParams, k: FloatArray, t: FloatArray, call: npt.NDArray[np.bool_], jac: bool
) -> tuple[FloatArray, FloatArray | None]:
    """Undiscounted prices in units of F (and their gradients, shape (n, 5)) for ``t > 0``."""
    t_unique, inverse = np.unique(t, return_inverse=True)
    order = np.argsort(inverse, kind="stable").astype(np.int64)
    starts = np.searchsorted(inverse[order], np.arange(t_unique.size + 1)).astype(np.int64)
    w_unique = np.asarray(p.expected_total_variance(t_unique), dtype=np.float64)
    sums, _ = _kernels.lewis_corrections(
        p.v0,
        p.kappa,
        p.theta,
        p.sigma,
        p.rho,
        np.ascontiguousarray(k),
        t_unique,
        w_unique,
        order,
        starts,
        jac,
    )
    vol_cv = np.sqrt(w_unique / t_unique)[inverse]
    bs = np.asarray(black_price(1.0, np.exp(k), t, vol_cv, call), dtype=np.float64)
    price = bs + sums[:, 0]
    return price, (sums[:, 1:] if jac else None)


def _prepare(
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    call: npt.ArrayLike,
    discount: npt.ArrayLike,
) -> tuple[tuple[int, ...], FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_], FloatArray]:
    f, kk, tt, c, d = np.broadcast_arrays(
        np.asarray(forward, dtype=np.float64),
        np.asarray(strike, dtype=np.float64),
        np.asarray(t, dtype=np.float64),
        np.asarray(call, dtype=np.bool_),
        np.asarray(discount, dtype=np.float64),
    )
    return f.shape, f.ravel(), kk.ravel(), tt.ravel(), c.ravel(), d.ravel()


def _price_impl(
    params: HestonParams,
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    call: npt.ArrayLike,
    discount: npt.ArrayLike,
    jac: bool,
) -> tuple[tuple[int, ...], FloatArray, FloatArray | None]:
    shape, f, kk, tt, c, d = _prepare(forward, strike, t, call, discount)
    n = f.size
    price = np.full(n, np.nan)
    grad = np.full((n, 5), np.nan) if jac else None
    finite = np.isfinite(f) & np.isfinite(kk) & np.isfinite(tt) & np.isfinite(d)
    valid = finite & (f > 0) & (kk > 0) & (d > 0)
    expired = valid & (tt <= 0)
    live = valid & (tt > 0)
    if expired.any():
        sign = np.where(c[expired], 1.0, -1.0)
        price[expired] = d[expired] * np.maximum(sign * (f[expired] - kk[expired]), 0.0)
        if grad is not None:
            grad[expired] = 0.0
    if live.any():
        k_log = np.log(kk[live] / f[live])
        norm, ngrad = _normalised(params, k_log, tt[live], c[live], jac)
        scale = d[live] * f[live]
        price[live] = scale * norm
        if grad is not None and ngrad is not None:
            grad[live] = scale[:, None] * ngrad
    return shape, price, grad


def heston_price(
    params: HestonParams,
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    call: npt.ArrayLike,
    discount: npt.ArrayLike = 1.0,
) -> FloatArray | float:
    """Heston prices of European options, vectorised over all strikes and expiries at once.

    Parameters
    ----------
    params:
        Heston parameters (variances per year).
    forward, strike:
        Forward ``F`` of each option's expiry and strike ``K`` (same unit, > 0).
    t:
        Time to expiry in years (ACT/365F); any positive value (hours included). At
        ``t <= 0`` the price is the intrinsic value.
    call:
        True for calls, False for puts.
    discount:
        Discount factor ``D`` (1.0 for crypto premiums quoted on the forward).

    Returns
    -------
    float or ndarray
        ``D F c(ln(K/F), t)``, in the unit of ``forward`` times ``discount``; absolute error
        about 1e-14 ``D F`` (see the module docstring). NaN where an input is NaN or out of
        domain, or (not observed in testing) where the quadrature cannot be resolved.
    """
    shape, price, _ = _price_impl(params, forward, strike, t, call, discount, jac=False)
    out = price.reshape(shape)
    return float(out) if out.ndim == 0 else out


def heston_price_jacobian(
    params: HestonParams,
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    call: npt.ArrayLike,
    discount: npt.ArrayLike = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Heston prices and their analytic derivatives with respect to the five parameters.

    Inputs as for :func:`heston_price`. Costs about one pricing pass more than
    :func:`heston_price` (Cui et al. 2017).

    Returns
    -------
    price : ndarray, shape ``(n,)``
        As :func:`heston_price`, flattened (broadcast shape raveled).
    jacobian : ndarray, shape ``(n, 5)``
        ``d price / d(v0, kappa, theta, sigma, rho)`` (column order of
        :attr:`HestonParams.NAMES`); zero for expired options.
    """
    _, price, grad = _price_impl(params, forward, strike, t, call, discount, jac=True)
    assert grad is not None
    return price, grad


RULE_BUDGET = 0.9
"""Panel cost of the rules :class:`FastHestonPricer` builds (the criterion is <= 1): the margin
lets a rule serve nearby parameters."""
REBUILD_RATIO = 1.25
""":class:`FastHestonPricer` replaces a held rule with more panels than this times a new one."""


DOMAIN_MARGIN = 0.02
"""Rules of :class:`FastHestonPricer` reach this fraction beyond the truncation point, so that
the small shifts of the scan grid (it scales with ``1 / (sqrt(w) + k_max)``) between nearby
parameters do not force a rebuild."""


class FastHestonPricer:
    """The fast Heston pricer for a fixed set of options, priced at many parameter sets.

    Built once for the options (e.g. the quotes of a calibration), then :meth:`price` or
    :meth:`price_jacobian` is called with parameters as often as needed. Per expiry it keeps
    the quadrature rule and the parameter-independent factors ``e^{k/2} weight e^{-i x k} /
    (pi (x^2 + 1/4))`` of every quote, so an evaluation costs the characteristic function at the
    nodes and a small matrix product. At each call a rule is reused only while it still meets
    the quadrature criteria of :func:`heston_price` at the new parameters (it reaches the
    truncation point of the tail bound and no panel exceeds the phase/growth budget; see
    :mod:`volcal.heston.pricer`); otherwise it is rebuilt, with panels at ``RULE_BUDGET`` of
    the budget so that it serves nearby parameters too. Prices therefore have the accuracy of
    :func:`heston_price` (they differ from it by rounding-level amounts, about 1e-15 ``F``,
    because the rules differ).

    The held rules are a cache: an instance is not thread-safe. The calibrators build one per
    fit.

    Parameters
    ----------
    forward, strike:
        Forward ``F`` of each option's expiry and strike ``K`` (same unit), broadcast together.
    t:
        Time to expiry in years (ACT/365F); ``t <= 0`` prices the intrinsic value.
    call:
        True for calls, False for puts.
    discount:
        Discount factor ``D`` (1.0 for crypto premiums quoted on the forward).
    """

    def __init__(
        self,
        forward: npt.ArrayLike,
        strike: npt.ArrayLike,
        t: npt.ArrayLike,
        call: npt.ArrayLike,
        discount: npt.ArrayLike = 1.0,
    ) -> None:
        shape, f, kk, tt, c, d = _prepare(forward, strike, t, call, discount)
        self.shape = shape
        n = f.size
        finite = np.isfinite(f) & np.isfinite(kk) & np.isfinite(tt) & np.isfinite(d)
        with np.errstate(invalid="ignore"):
            valid = finite & (f > 0) & (kk > 0) & (d > 0)
        expired = valid & (tt <= 0)
        live = valid & (tt > 0)
        self._n = n
        self._live = np.flatnonzero(live)
        self._all_live = bool(live.all())
        self._base = np.full(n, np.nan)
        sign = np.where(c[expired], 1.0, -1.0)
        self._base[expired] = d[expired] * np.maximum(sign * (f[expired] - kk[expired]), 0.0)
        self._expired = expired
        k = np.log(kk[live] / f[live])
        t_live = tt[live]
        self._k_exp = np.exp(k)
        self._ones = np.ones(k.size)
        self._t = t_live
        self._call = c[live]
        self._scale = d[live] * f[live]
        self._t_unique, inverse = np.unique(t_live, return_inverse=True)
        self._inverse = inverse
        order = np.argsort(inverse, kind="stable").astype(np.int64)
        self._order = order
        self._starts = np.searchsorted(inverse[order], np.arange(self._t_unique.size + 1)).astype(
            np.int64
        )
        self._k_sorted = np.ascontiguousarray(k[order])
        n_e = self._t_unique.size
        self._k_max = (
            np.maximum.reduceat(np.abs(self._k_sorted), self._starts[:-1])
            if k.size
            else np.zeros(0)
        )
        # the rules of all expiries, flat (see _kernels.update_rules); none held yet
        self._edges: FloatArray = np.empty(0)
        self._edge_off: IntArray = np.zeros(n_e + 1, dtype=np.int64)
        self._node_x: FloatArray = np.empty(0)
        self._node_off: IntArray = np.zeros(n_e + 1, dtype=np.int64)
        self._tab: FloatArray = np.empty(0)
        self._tab_off: IntArray = np.zeros(n_e + 1, dtype=np.int64)
        self.n_rebuilds = 0
        """Rules built so far (one per expiry and rebuild; diagnostics)."""

    def __len__(self) -> int:
        return self._n

    @property
    def n_nodes(self) -> npt.NDArray[np.int64]:
        """Quadrature nodes of the rule held per expiry (0 before the first call)."""
        return np.diff(self._node_off)

    def _update_rules(self, p: HestonParams, w_unique: FloatArray) -> npt.NDArray[np.bool_]:
        """Rebuild the rules that no longer fit ``p``; returns which expiries are resolved."""
        status, edges, edge_off, node_x, node_off, tab, tab_off = _kernels.update_rules(
            p.v0,
            p.kappa,
            p.theta,
            p.sigma,
            p.rho,
            self._t_unique,
            w_unique,
            self._k_max,
            self._k_sorted,
            self._starts,
            self._edges,
            self._edge_off,
            self._node_x,
            self._node_off,
            self._tab,
            self._tab_off,
            RULE_BUDGET,
            REBUILD_RATIO,
            DOMAIN_MARGIN,
        )
        self._edges, self._edge_off, self._node_x = edges, edge_off, node_x
        self._node_off, self._tab, self._tab_off = node_off, tab, tab_off
        self.n_rebuilds += int(np.count_nonzero(status == 1))
        return np.asarray(status != 2)

    def _evaluate(self, params: HestonParams, jac: bool) -> tuple[FloatArray, FloatArray | None]:
        p = params
        price = self._base.copy()
        grad = None
        if jac:
            grad = np.full((self._n, 5), np.nan)
            grad[self._expired] = 0.0
        if self._live.size == 0:
            return price, grad
        w_unique = np.asarray(p.expected_total_variance(self._t_unique), dtype=np.float64)
        resolved = self._update_rules(p, w_unique)
        sums = _kernels.table_corrections(
            p.v0,
            p.kappa,
            p.theta,
            p.sigma,
            p.rho,
            self._t_unique,
            w_unique,
            self._node_x,
            self._node_off,
            self._tab,
            self._tab_off,
            self._order,
            self._starts,
            resolved,
            jac,
        )
        vol_cv = np.sqrt(w_unique / self._t_unique)[self._inverse]
        # the control variate c_BS(k; w) (volcal.black_price's kernel, inputs prepared once)
        bs = black_price_kernel(self._ones, self._k_exp, self._t, vol_cv, self._call, self._ones)
        live_price = self._scale * (bs + sums[:, 0])
        if self._all_live:
            price = live_price
        else:
            price[self._live] = live_price
        if grad is not None:
            live_grad = self._scale[:, None] * sums[:, 1:]
            if self._all_live:
                grad = live_grad
            else:
                grad[self._live] = live_grad
        return price, grad

    def price(self, params: HestonParams) -> FloatArray:
        """Prices ``D F c`` at ``params`` (array of the broadcast input shape); NaN as for
        :func:`heston_price`."""
        if not isinstance(params, HestonParams):
            raise ParameterError(f"expected HestonParams, got {type(params).__name__}")
        price, _ = self._evaluate(params, jac=False)
        return price.reshape(self.shape)

    def price_jacobian(self, params: HestonParams) -> tuple[FloatArray, FloatArray]:
        """Prices (flattened, shape ``(n,)``) and ``d price / d(v0, kappa, theta, sigma, rho)``
        (shape ``(n, 5)``), as :func:`heston_price_jacobian`."""
        if not isinstance(params, HestonParams):
            raise ParameterError(f"expected HestonParams, got {type(params).__name__}")
        price, grad = self._evaluate(params, jac=True)
        assert grad is not None
        return price, grad
