"""Heston calibration: ``HestonCalibrator`` (settings) -> ``HestonFit`` (an immutable result).

Objective
---------
``objective="iv"`` (default) minimises ``sum_i w_i (sigma_model_i - sigma_market_i)^2`` over the
used quotes, with ``sigma`` the Black-76 implied vol (decimal) of the model price on the quote's
own forward and discount. ``objective="price"`` minimises ``sum_i w_i (P_model_i - P_market_i)^2``
in price units.

Wing guard
----------
A quote does not steer the fit when its market premium is below ``max(tick, min_price)`` or its
normalised market vega ``phi(d1) = vega / (D F sqrt t)`` is below ``min_vega`` (it is still
priced and reported, with ``used == False``). For the ``iv`` objective the model's implied vol is
"floored": below the price ``P_floor = intrinsic + max(tick, min_price, 1e-10 D F)`` it is
continued linearly with the slope ``1/vega`` it has at ``P_floor``. The residual is then smooth
(C1) and finite even where a model price has no implied vol, so a wing whose model price falls
below a tick pulls with a bounded, price-like force instead of an exploding ``1/vega``.

Optimiser
---------
``engine="fast"`` runs volcal's projected Levenberg-Marquardt (:func:`levenberg_marquardt`,
box bounds, SciPy's termination tests and status codes) on the analytic Jacobian;
``engine="quantlib"`` runs SciPy ``least_squares`` (trust-region reflective, box bounds), which
``optimizer="trf"`` selects for the fast engine too. ``engine="fast"`` uses the
analytic Jacobian of the fast pricer (Cui et al. 2017) through
:class:`volcal.heston.pricer.FastHestonPricer`, which keeps each expiry's quadrature rule and
strike factors across iterations while they meet the pricer's accuracy criteria;
``engine="quantlib"`` prices with a QuantLib engine through
:class:`volcal.heston.quantlib_adapter.QuantLibHestonPricer` (QuantLib objects built once per
fit) and uses finite differences, or volcal's analytic Jacobian with ``ql_jacobian="fast"``.
With ``global_stage="auto"`` a fit that does not converge, or whose ``rmse_iv`` exceeds
``poor_fit_rmse_iv``, is followed by a seeded multi-start: ``n_candidates`` Sobol points in a
box around the data are screened by one objective evaluation each, local fits run from the best
``n_local_starts`` of them, and the best result of all wins. ``feller=True`` imposes
``2 kappa theta >= sigma^2`` by fitting ``zeta = sigma / sqrt(2 kappa theta)`` in ``(0, 1]``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import OptimizeResult, least_squares
from scipy.stats import qmc

from volcal.errors import CalibrationError, ConvergenceWarning
from volcal.heston import _kernels
from volcal.heston.params import HestonParams, ParameterError
from volcal.heston.pricer import FastHestonPricer, heston_price
from volcal.heston.quantlib_adapter import QL_ENGINES, QuantLibEngineName, QuantLibHestonPricer
from volcal.heston.quotes import HestonQuotes
from volcal.implied import _guess_table, implied_vol

__all__ = [
    "DEFAULT_BOUNDS",
    "HestonCalibrator",
    "HestonFit",
    "OptimiserReport",
    "fit_heston",
    "levenberg_marquardt",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Engine = Literal["fast", "quantlib"]
Objective = Literal["iv", "price"]
GlobalStage = Literal["auto", "always", "never"]
QuantLibJacobian = Literal["2-point", "3-point", "fast"]
Optimizer = Literal["auto", "lm", "trf"]

DEFAULT_BOUNDS: Mapping[str, tuple[float, float]] = {
    "v0": (1e-6, 25.0),
    "kappa": (1e-3, 100.0),
    "theta": (1e-6, 25.0),
    "sigma": (1e-3, 20.0),
    "rho": (-0.999, 0.999),
}
"""Box bounds of the optimiser (variances per year; a variance of 25 is a 500 % vol)."""

_NAMES = HestonParams.NAMES
_SIGMA = 3
_FELLER_ZETA_MIN = 1e-3
_FAILED_RESIDUAL = 1e3
_RECENT = 8


def _readonly(a: npt.ArrayLike, dtype: type = np.float64) -> npt.NDArray[Any]:
    out: npt.NDArray[Any] = np.array(a, dtype=dtype, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class OptimiserReport:
    """What the optimiser did (``converged`` is an optimistic view: check ``rmse_iv`` too).

    Attributes
    ----------
    converged:
        SciPy reported success (a tolerance was met) for the returned start.
    status:
        Status code of ``scipy.optimize.least_squares`` (also used by volcal's
        Levenberg-Marquardt): -1 improper input, 0 max evaluations, 1 gtol, 2 ftol, 3 xtol,
        4 ftol and xtol; -2 for :meth:`HestonCalibrator.fix`.
    message:
        SciPy's message, plus notes from the calibrator.
    iterations:
        Jacobian evaluations of the returned local fit (one per accepted trust-region step).
    n_fev:
        Objective evaluations, all starts included (finite-difference ones included).
    n_jev:
        Jacobian evaluations, all starts included.
    cost:
        ``0.5 * sum(r_i^2)`` at the solution (objective units).
    optimality:
        First-order optimality (gradient norm, infinity) at the solution.
    n_starts:
        Local fits run (1 without a global stage).
    elapsed_s:
        Wall time of the whole calibration, seconds.
    raw:
        The ``OptimizeResult`` of the returned local fit (SciPy's, or the same fields from
        :func:`levenberg_marquardt`; not serialised).
    """

    converged: bool
    status: int
    message: str
    iterations: int
    n_fev: int
    n_jev: int
    cost: float
    optimality: float
    n_starts: int
    elapsed_s: float = field(compare=False)
    raw: OptimizeResult | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """All fields but ``raw``."""
        return {
            "converged": self.converged,
            "status": self.status,
            "message": self.message,
            "iterations": self.iterations,
            "n_fev": self.n_fev,
            "n_jev": self.n_jev,
            "cost": self.cost,
            "optimality": self.optimality,
            "n_starts": self.n_starts,
            "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OptimiserReport:
        """Inverse of :meth:`to_dict` (``raw`` is None)."""
        return cls(
            converged=bool(data["converged"]),
            status=int(data["status"]),
            message=str(data["message"]),
            iterations=int(data["iterations"]),
            n_fev=int(data["n_fev"]),
            n_jev=int(data["n_jev"]),
            cost=float(data["cost"]),
            optimality=float(data["optimality"]),
            n_starts=int(data["n_starts"]),
            elapsed_s=float(data["elapsed_s"]),
        )


def _nan_list(a: FloatArray) -> list[float | None]:
    return [float(x) if np.isfinite(x) else None for x in a]


def _from_nan_list(a: list[float | None]) -> FloatArray:
    return np.array([np.nan if x is None else x for x in a], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class HestonFit:
    """An immutable Heston calibration result.

    Attributes
    ----------
    params:
        Fitted (or fixed) parameters.
    quotes:
        The quotes the fit saw (all of them, used or not).
    model_price:
        Model premium per quote (unit of ``quotes.price``).
    model_iv:
        Black-76 implied vol of ``model_price`` (decimal; NaN where none exists).
    residuals:
        Objective residual per quote, unweighted: vol (decimal) for ``objective="iv"`` (using
        the floored model vol, see the module docstring), price units for ``"price"``.
    used:
        True where the quote steered the fit (the wing guard's verdict).
    rmse_iv:
        Root mean square of ``model_iv - quotes.iv`` over the used quotes, decimal vol.
    engine, objective:
        As passed to the calibrator.
    settings:
        The calibrator settings (JSON-friendly).
    report:
        The optimiser report.
    """

    params: HestonParams
    quotes: HestonQuotes
    model_price: FloatArray
    model_iv: FloatArray
    residuals: FloatArray
    used: BoolArray
    rmse_iv: float
    engine: str
    objective: str
    settings: Mapping[str, Any]
    report: OptimiserReport

    SCHEMA: ClassVar[str] = "volcal.HestonFit"
    SCHEMA_VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        for name in ("model_price", "model_iv", "residuals"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))
        object.__setattr__(self, "used", _readonly(self.used, np.bool_))

    @property
    def iv_error(self) -> FloatArray:
        """``model_iv - quotes.iv`` per quote (decimal vol)."""
        return self.model_iv - self.quotes.iv

    @property
    def sse_iv_points(self) -> float:
        """Sum over used quotes of ``(100 * iv_error)^2`` (vol points squared)."""
        err = self.iv_error[self.used]
        return float(np.sum((100.0 * err) ** 2))

    @property
    def n_used(self) -> int:
        """Number of quotes that steered the fit."""
        return int(np.count_nonzero(self.used))

    def surface(self) -> Any:
        """The fitted :class:`volcal.heston.HestonSurface`, with the quotes' forwards
        (``volcal.surface.ForwardCurve`` through the per-expiry forwards) and expiries."""
        from volcal.heston.surface import HestonSurface
        from volcal.surface import ForwardCurve  # imported late: volcal.surface is downstream

        t, inverse = np.unique(self.quotes.t, return_inverse=True)
        forwards = np.bincount(inverse, weights=self.quotes.forward) / np.bincount(inverse)
        curve = ForwardCurve(t=tuple(t.tolist()), forwards=tuple(forwards.tolist()))
        return HestonSurface(self.params, forward_curve=curve, expiry_times=tuple(t.tolist()))

    def summary(self) -> str:
        """A text report: parameters, fit quality, wing guard and optimiser diagnostics."""
        p = self.params
        r = self.report
        lines = [
            "Heston calibration",
            "==================",
            f"engine: {self.engine}"
            + (f" ({self.settings.get('ql_engine')})" if self.engine == "quantlib" else "")
            + f"    objective: {self.objective}    quotes: {len(self.quotes)} "
            f"(used {self.n_used})",
            "",
            "parameter        value",
            f"v0         {p.v0:12.6g}   (spot vol {math.sqrt(p.v0):.4f})",
            f"kappa      {p.kappa:12.6g}",
            f"theta      {p.theta:12.6g}   (long-run vol {math.sqrt(p.theta):.4f})",
            f"sigma      {p.sigma:12.6g}",
            f"rho        {p.rho:12.6g}",
            f"Feller 2 kappa theta / sigma^2 = {p.feller_ratio:.4g} "
            f"({'holds' if p.feller else 'violated'}"
            f"{', imposed' if self.settings.get('feller') else ''})",
            "",
            f"rmse_iv  {100 * self.rmse_iv:.4f} vol points    "
            f"max |iv error| {100 * float(np.nanmax(np.abs(self.iv_error[self.used]))):.4f} "
            f"vol points (used quotes)",
            f"SSE      {self.sse_iv_points:.6g} vol points^2",
            "",
            f"optimiser: {'converged' if r.converged else 'NOT CONVERGED'} (status {r.status}) "
            f"- {r.message}",
            f"  iterations {r.iterations}, evaluations {r.n_fev} (+{r.n_jev} Jacobians), "
            f"starts {r.n_starts}, cost {r.cost:.6g}, optimality {r.optimality:.3g}, "
            f"time {r.elapsed_s:.3f} s",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict with ``schema`` and ``schema_version`` (NaN as None)."""
        return {
            "schema": self.SCHEMA,
            "schema_version": self.SCHEMA_VERSION,
            "params": self.params.to_dict(),
            "quotes": self.quotes.to_dict(),
            "model_price": _nan_list(self.model_price),
            "model_iv": _nan_list(self.model_iv),
            "residuals": _nan_list(self.residuals),
            "used": [bool(x) for x in self.used],
            "rmse_iv": self.rmse_iv,
            "engine": self.engine,
            "objective": self.objective,
            "settings": dict(self.settings),
            "report": self.report.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HestonFit:
        """Inverse of :meth:`to_dict`; checks the schema name and version."""
        if data.get("schema") != cls.SCHEMA:
            raise ParameterError(f"not a {cls.SCHEMA} dict: schema {data.get('schema')!r}")
        version = data.get("schema_version")
        if version != cls.SCHEMA_VERSION:
            raise ParameterError(
                f"{cls.SCHEMA} schema_version {version!r} is not supported "
                f"(this volcal reads version {cls.SCHEMA_VERSION})"
            )
        return cls(
            params=HestonParams.from_dict(data["params"]),
            quotes=HestonQuotes.from_dict(data["quotes"]),
            model_price=_from_nan_list(data["model_price"]),
            model_iv=_from_nan_list(data["model_iv"]),
            residuals=_from_nan_list(data["residuals"]),
            used=np.array(data["used"], dtype=np.bool_),
            rmse_iv=float(data["rmse_iv"]),
            engine=str(data["engine"]),
            objective=str(data["objective"]),
            settings=dict(data["settings"]),
            report=OptimiserReport.from_dict(data["report"]),
        )

    def __eq__(self, other: object) -> bool:
        """Equal values (the optimiser's wall time and raw result are ignored)."""
        if not isinstance(other, HestonFit):
            return NotImplemented
        mine, theirs = self.to_dict(), other.to_dict()
        for d in (mine, theirs):
            d["report"].pop("elapsed_s")
        return mine == theirs

    __hash__ = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------------
# objective
# ---------------------------------------------------------------------------------------------
class _Problem:
    """Residuals and Jacobian of one calibration (used quotes only), in free variables ``z``."""

    def __init__(
        self,
        quotes: HestonQuotes,
        used: BoolArray,
        *,
        engine: Engine,
        objective: Objective,
        ql_engine: QuantLibEngineName,
        ql_engine_options: Mapping[str, Any] | None,
        ql_jacobian: QuantLibJacobian = "2-point",
        fixed: Mapping[str, float],
        feller: bool,
        min_price: float,
    ) -> None:
        self.q = quotes.subset(used)
        self.engine = engine
        self.objective = objective
        self.fixed = dict(fixed)
        self.feller = feller
        self.free = [n for n in _NAMES if n not in self.fixed]
        q = self.q
        self.sqrt_w = np.sqrt(q.weight)
        self.ql_pricer: QuantLibHestonPricer | None = None
        self.fast_pricer: FastHestonPricer | None = None
        self.analytic_jacobian = engine == "fast" or ql_jacobian == "fast"
        self.ql_jacobian = ql_jacobian
        if self.analytic_jacobian:
            self.fast_pricer = FastHestonPricer(q.forward, q.strike, q.t, q.call, q.discount)
        if engine == "quantlib":
            self.ql_pricer = QuantLibHestonPricer(
                q.forward,
                q.strike,
                q.t,
                q.call,
                q.discount,
                engine=ql_engine,
                engine_options=dict(ql_engine_options or {}),
            )
        sign = np.where(q.call, 1.0, -1.0)
        intrinsic = q.discount * np.maximum(sign * (q.forward - q.strike), 0.0)
        floor = np.maximum.reduce(
            [q.tick, np.full(len(q), min_price), 1e-10 * q.discount * q.forward]
        )
        self.p_floor = intrinsic + floor
        self.iv_floor = np.asarray(
            implied_vol(self.p_floor, q.forward, q.strike, q.t, q.call, q.discount)
        )
        self.sqrt_t = np.sqrt(q.t)
        self.k = q.k
        self.vega_scale = q.discount * q.forward * self.sqrt_t / math.sqrt(2.0 * math.pi)
        self.vega_floor = self._vega(self.iv_floor)
        # contiguous inputs of the compiled iv residuals (_kernels.iv_residuals)
        self._c = {
            name: np.ascontiguousarray(a)
            for name, a in (
                ("forward", q.forward),
                ("strike", q.strike),
                ("t", q.t),
                ("discount", q.discount),
                ("iv", q.iv),
                ("sqrt_w", self.sqrt_w),
                ("p_floor", self.p_floor),
                ("iv_floor", self.iv_floor),
                ("vega_floor", self.vega_floor),
                ("vega_scale", self.vega_scale),
                ("sqrt_t", self.sqrt_t),
                ("k", self.k),
            )
        }
        self._call = np.ascontiguousarray(q.call)
        self._guess_table = _guess_table()
        self._no_jac = np.empty((len(q), 0))
        self.recent: dict[bytes, tuple[FloatArray, FloatArray | None]] = {}
        """Model prices and (``iv`` objective) unfloored model vols of the last few
        evaluations, by ``z.tobytes()`` (the fit reports them at the optimum)."""
        self.free_cols = [_NAMES.index(n) for n in self.free]
        self.all_free = self.free_cols == list(range(len(_NAMES)))
        self._cache_key: bytes | None = None
        self._cache: tuple[FloatArray, FloatArray | None] | None = None
        self.n_fev = 0
        self.n_jev = 0

    def _vega(self, vol: FloatArray) -> FloatArray:
        """Black-76 vega ``D F sqrt(t) phi(d1)`` at ``vol`` (> 0), price units per unit vol."""
        sv = vol * self.sqrt_t
        d1 = 0.5 * sv - self.k / sv
        out: FloatArray = self.vega_scale * np.exp(-0.5 * d1 * d1)
        return out

    # parameter transforms ---------------------------------------------------------------------
    def params_of(self, z: FloatArray) -> HestonParams:
        values = dict(self.fixed)
        values.update(zip(self.free, (float(x) for x in z), strict=True))
        if self.feller:
            values["sigma"] = values["sigma"] * math.sqrt(2.0 * values["kappa"] * values["theta"])
        return HestonParams(**values)

    def z_of(self, p: HestonParams) -> FloatArray:
        values = p.to_dict()
        if self.feller:
            values["sigma"] = min(1.0, p.sigma / math.sqrt(2.0 * p.kappa * p.theta))
        return np.array([values[n] for n in self.free])

    def bounds(self, box: Mapping[str, tuple[float, float]]) -> tuple[FloatArray, FloatArray]:
        lo, hi = [], []
        for n in self.free:
            a, b = box[n]
            if self.feller and n == "sigma":
                a, b = _FELLER_ZETA_MIN, 1.0
            lo.append(a)
            hi.append(b)
        return np.array(lo), np.array(hi)

    def _chain(self, p: HestonParams, grad: FloatArray) -> FloatArray:
        """Columns d/d(free z) from d/d(v0..rho) (applies the Feller transform)."""
        if not self.feller:
            return grad if self.all_free else grad[:, self.free_cols]
        g = grad.copy()
        ds = g[:, _SIGMA].copy()
        g[:, 1] += ds * p.sigma / (2.0 * p.kappa)
        g[:, 2] += ds * p.sigma / (2.0 * p.theta)
        g[:, _SIGMA] = ds * math.sqrt(2.0 * p.kappa * p.theta)
        return g[:, self.free_cols]

    # pricing ----------------------------------------------------------------------------------
    def prices(self, p: HestonParams, want_jac: bool) -> tuple[FloatArray, FloatArray | None]:
        if self.ql_pricer is not None:
            price = np.asarray(self.ql_pricer.price(p)).ravel()
            if want_jac and self.fast_pricer is not None:
                # QuantLib prices, volcal's analytic derivatives (ql_jacobian="fast")
                return price, self.fast_pricer.price_jacobian(p)[1]
            return price, None
        assert self.fast_pricer is not None
        if want_jac:
            return self.fast_pricer.price_jacobian(p)
        return self.fast_pricer.price(p).ravel(), None

    def _remember(self, key: bytes, price: FloatArray, vol: FloatArray | None) -> None:
        self.recent[key] = (price, vol)
        while len(self.recent) > _RECENT:
            del self.recent[next(iter(self.recent))]

    def _evaluate(self, z: FloatArray, want_jac: bool) -> tuple[FloatArray, FloatArray | None]:
        key = z.tobytes()
        cached = self._cache
        hit = self._cache_key == key and cached is not None
        if hit and cached is not None and (not want_jac or cached[1] is not None):
            return cached
        p = self.params_of(z)
        # with an analytic Jacobian it comes with the prices (cheaper than a second pass)
        price, dprice = self.prices(p, want_jac=want_jac or self.analytic_jacobian)
        self.n_fev += 1
        if self.objective == "iv":
            # floored model vol (module docstring), d vol / d price = 1 / vega; an unpriceable
            # quote (NaN: quadrature not resolved at extreme parameters) makes the point very
            # bad instead of crashing the optimiser
            c = self._c
            r, jac_iv, raw_vol = _kernels.iv_residuals(
                price,
                self._no_jac if dprice is None else np.ascontiguousarray(self._chain(p, dprice)),
                c["forward"],
                c["strike"],
                c["t"],
                self._call,
                c["discount"],
                c["iv"],
                c["sqrt_w"],
                c["p_floor"],
                c["iv_floor"],
                c["vega_floor"],
                c["vega_scale"],
                c["sqrt_t"],
                c["k"],
                self._guess_table,
                _FAILED_RESIDUAL,
                dprice is not None,
            )
            self._remember(key, price, raw_vol)
            self._cache_key, self._cache = key, (r, None if dprice is None else jac_iv)
            return self._cache
        self._remember(key, price, None)
        r = self.sqrt_w * (price - self.q.price)
        jac = None
        bad = ~np.isfinite(r)
        if dprice is not None:
            with np.errstate(invalid="ignore", over="ignore"):  # sanitised on the next line
                jac = self._chain(p, dprice) * self.sqrt_w[:, None]
            jac[bad | ~np.all(np.isfinite(jac), axis=1)] = 0.0
        # an unpriceable quote (NaN: quadrature not resolved at extreme parameters) makes the
        # point very bad instead of crashing the optimiser
        r = np.where(bad, _FAILED_RESIDUAL, r)
        self._cache_key, self._cache = key, (r, jac)
        return r, jac

    def residuals(self, z: FloatArray) -> FloatArray:
        return self._evaluate(np.asarray(z, dtype=np.float64), want_jac=False)[0]

    def residuals_jacobian(self, z: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Residuals and Jacobian in one pass (analytic Jacobian only; counts one evaluation;
        :meth:`HestonCalibrator._local` adds the Jacobians the optimiser used)."""
        r, jac = self._evaluate(np.asarray(z, dtype=np.float64), want_jac=True)
        assert jac is not None
        return r, jac

    def jacobian(self, z: FloatArray) -> FloatArray:
        self.n_jev += 1
        _, jac = self._evaluate(np.asarray(z, dtype=np.float64), want_jac=True)
        assert jac is not None
        return jac


# ---------------------------------------------------------------------------------------------
# Levenberg-Marquardt with box bounds (the fast engine's local optimiser)
# ---------------------------------------------------------------------------------------------
_LM_TAU = 1e-6
"""Initial damping relative to the column-scaled ``J^T J`` (Nielsen 1999 uses ``tau``; small:
the analytic Jacobian makes the Gauss-Newton step good from the start, and a rejected step
raises the damping geometrically)."""
_LM_ACCEPT = 1e-4
"""A step is accepted when the actual reduction of the cost is at least this fraction of the
reduction the linear model predicts."""

_LM_MAX_FACTOR = 4.0
"""Largest factor by which one step may scale a variable whose lower bound is positive."""
_LM_MAX_SHIFT = 0.25
"""Largest change in one step of any other variable, as a fraction of its box width."""

_LM_MESSAGES = {
    0: "The maximum number of function evaluations is exceeded.",
    1: "`gtol` termination condition is satisfied.",
    2: "`ftol` termination condition is satisfied.",
    3: "`xtol` termination condition is satisfied.",
    4: "Both `ftol` and `xtol` termination conditions are satisfied.",
}


def levenberg_marquardt(
    fun_jac: Callable[[FloatArray], tuple[FloatArray, FloatArray]],
    x0: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    *,
    ftol: float = 1e-12,
    xtol: float = 1e-12,
    gtol: float = 1e-12,
    max_nfev: int = 200,
) -> OptimizeResult:
    """Minimise ``0.5 ||r(x)||^2`` on the box ``lo <= x <= hi`` (projected Levenberg-Marquardt).

    ``fun_jac(x)`` returns the residuals and their Jacobian together (the fast Heston pricer
    computes both in one pass). Steps solve ``(J^T J + mu D^2) dx = -J^T r`` with ``D`` the
    running maximum of the Jacobian's column norms (Moré 1978), over the variables that are not
    held at a bound by the gradient; a step is shortened (direction kept) so that no variable with
    a positive lower bound changes by more than a factor 4 and no other by more than a quarter of
    its box width (far from the data a Gauss-Newton step can otherwise jump to a corner of the
    box, where the Heston pricer needs 100 times more nodes); the trial point is projected onto
    the box (Kanzow, Yamashita and Fukushima 2004). The damping ``mu`` follows Nielsen (1999):
    after an accepted step with gain ratio ``rho`` it is multiplied by
    ``max(1/3, 1 - (2 rho - 1)^3)``, after a rejected one by 2, 4, 8, ... The linear algebra of a
    step is compiled (:func:`volcal.heston._kernels.lm_trial`).

    Termination follows ``scipy.optimize.least_squares`` (same meaning of the tolerances and of
    the status codes): ``gtol`` on ``||g v||_inf`` (``v`` the Coleman-Li scaling, see
    :func:`volcal.heston._kernels.cl_gradient_norm`), ``ftol`` on an accepted step with
    ``dF < ftol F`` and a gain ratio above 0.25, ``xtol`` on ``||dx|| < xtol (xtol + ||x||)``
    (also before evaluating a trial step, which then is not taken); status 0 when ``max_nfev``
    evaluations are spent. Returns an ``OptimizeResult`` with the fields of ``least_squares``'
    result.
    """
    lo = np.ascontiguousarray(lo, dtype=np.float64)
    hi = np.ascontiguousarray(hi, dtype=np.float64)
    x = np.clip(np.asarray(x0, dtype=np.float64), lo, hi)
    r, jac = fun_jac(x)
    nfev = njev = 1
    cost = 0.5 * float(r @ r)
    g, a = _kernels.normal_equations(jac, r)
    scale2 = np.zeros(x.size)  # running maximum of the squared column norms
    mu = -1.0
    nu = 2.0
    status = 0
    while True:
        if _kernels.cl_gradient_norm(x, g, lo, hi) < gtol:
            status = 1
            break
        if nfev >= max_nfev:
            break
        diag = a.diagonal()
        scale2 = np.maximum(scale2, diag)
        d2 = np.where(scale2 > 0.0, scale2, 1.0)
        if mu < 0.0:
            mu = _LM_TAU * float(np.max(diag / d2))
        accepted = False
        first_trial = True
        while nfev < max_nfev and mu < 1e300:
            x_new, predicted, small_x, ok = _kernels.lm_trial(
                x, g, a, d2, mu, lo, hi, _LM_MAX_FACTOR, _LM_MAX_SHIFT, xtol
            )
            if not ok:
                mu *= nu
                nu *= 2.0
                continue
            if small_x and first_trial:
                # the undamped-so-far step is below xtol: x is converged to xtol without
                # evaluating x + dx (SciPy would evaluate it and stop on the same test)
                status = 3
                break
            r_new, jac_new = fun_jac(x_new)
            nfev += 1
            cost_new = 0.5 * float(r_new @ r_new)
            actual = cost - cost_new
            ratio = actual / predicted if predicted > 0.0 else -1.0
            if ratio > _LM_ACCEPT and actual > 0.0:
                small_f = actual < ftol * cost and ratio > 0.25
                x, r, jac, cost = x_new, r_new, jac_new, cost_new
                g, a = _kernels.normal_equations(jac, r)
                njev += 1
                mu *= max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
                nu = 2.0
                accepted = True
                status = 4 if small_f and small_x else 2 if small_f else 3 if small_x else 0
                break
            mu *= nu
            nu *= 2.0
            first_trial = False
            if small_x:  # no representable progress left
                status = 3
                break
        if status != 0 or not accepted:
            break
    optimality = _kernels.cl_gradient_norm(x, g, lo, hi)
    active = np.where(x <= lo, -1, np.where(x >= hi, 1, 0))
    return OptimizeResult(
        x=x,
        cost=cost,
        fun=r,
        jac=jac,
        grad=g,
        optimality=optimality,
        active_mask=active,
        nfev=nfev,
        njev=njev,
        status=status,
        message=_LM_MESSAGES[status],
        success=status > 0,
    )


# ---------------------------------------------------------------------------------------------
# calibrator
# ---------------------------------------------------------------------------------------------
def _initial_guess(quotes: HestonQuotes, used: BoolArray) -> HestonParams:
    """Start from the data: v0 and theta from near-the-money vols of the first and last expiry."""
    q = quotes.subset(used) if used.any() else quotes
    k = np.abs(q.k / np.sqrt(q.t))
    t_sorted = np.unique(q.t)

    def atm_var(t: float) -> float:
        sel = q.t == t
        i = np.flatnonzero(sel)[np.argmin(k[sel])]
        vol = q.iv[i] if np.isfinite(q.iv[i]) else 0.5
        return float(min(max(vol * vol, 1e-4), 16.0))

    v0 = atm_var(float(t_sorted[0]))
    theta = atm_var(float(t_sorted[-1]))
    return HestonParams(
        v0=v0, kappa=2.0, theta=theta, sigma=min(2.0 * math.sqrt(theta), 5.0), rho=-0.3
    )


class HestonCalibrator:
    """Settings of a Heston calibration; :meth:`fit` returns an immutable :class:`HestonFit`.

    Parameters
    ----------
    engine:
        ``"fast"`` (volcal's characteristic-function pricer, analytic Jacobian) or
        ``"quantlib"`` (a QuantLib engine; Jacobian see ``ql_jacobian``).
    objective:
        ``"iv"`` (implied-vol errors, decimal) or ``"price"`` (premium errors, price units).
    ql_engine:
        QuantLib engine for ``engine="quantlib"``: ``"analytic"``, ``"cos"`` or
        ``"exponential_fitting"``; ``ql_engine_options`` are passed to it
        (see :class:`volcal.heston.quantlib_adapter.QuantLibHestonPricer`).
    optimizer:
        Local optimiser: ``"lm"``, volcal's projected Levenberg-Marquardt
        (:func:`levenberg_marquardt`; needs the analytic Jacobian), or ``"trf"``, SciPy
        ``least_squares`` trust-region reflective with ``x_scale="jac"``. ``"auto"`` (default):
        ``"lm"`` for ``engine="fast"``, ``"trf"`` for ``engine="quantlib"``. Both stop on the
        same ``ftol``/``xtol``/``gtol`` tests and report SciPy's status codes.
    ql_jacobian:
        Jacobian for ``engine="quantlib"``: ``"2-point"`` (default) or ``"3-point"`` finite
        differences of the QuantLib prices (SciPy; the fit is then independent of volcal's
        pricer), or ``"fast"``: volcal's analytic Jacobian (:class:`FastHestonPricer`) with the
        QuantLib residuals. The optimum is where the QuantLib residuals are stationary, so
        ``"fast"`` reaches the same parameters (the two pricers agree to ~1e-15 ``F``) with one
        QuantLib pricing per iteration instead of six (about 4-5 times faster).
    start:
        Start parameters; default: from the data (ATM vols of the first and last expiry,
        ``kappa = 2``, ``sigma = 2 sqrt(theta)``, ``rho = -0.3``).
    bounds:
        Box bounds per parameter name (missing names take :data:`DEFAULT_BOUNDS`).
    fixed:
        Parameters held at a value (``{"kappa": 2.0}``), not fitted.
    feller:
        Impose ``2 kappa theta >= sigma^2`` (default False: crypto fits usually violate it).
    min_vega:
        Quotes with normalised market vega ``phi(d1)`` below this do not steer the fit.
    min_price:
        Quotes with market premium below ``max(min_price, tick)`` do not steer the fit (price
        units; the quotes' own ``tick`` applies as well).
    min_t:
        Quotes expiring in less than ``min_t`` years do not steer the fit (default 0). A
        diffusion cannot produce the smiles of crypto options a few days from expiry; on the
        shared Deribit data ``min_t = 7 / 365`` keeps the parameters away from their bounds
        (see ``docs/heston.md``).
    global_stage:
        ``"auto"``: multi-start only when the first fit is poor (not converged, or ``rmse_iv``
        above ``poor_fit_rmse_iv``); ``"always"``; ``"never"``.
    poor_fit_rmse_iv:
        Decimal vol; see ``global_stage``.
    n_candidates, n_local_starts:
        Sobol candidates screened and local fits run in the global stage.
    seed:
        Seed of the global stage (the calibration is deterministic given the seed).
    ftol, xtol, gtol, max_nfev:
        Termination tolerances of the local optimiser, as in ``scipy.optimize.least_squares``
        (``max_nfev`` per local fit).
    diff_step:
        Relative finite-difference step for ``engine="quantlib"`` (SciPy's default if None).
    """

    def __init__(
        self,
        *,
        engine: Engine = "fast",
        objective: Objective = "iv",
        ql_engine: QuantLibEngineName = "analytic",
        ql_engine_options: Mapping[str, Any] | None = None,
        ql_jacobian: QuantLibJacobian = "2-point",
        optimizer: Optimizer = "auto",
        start: HestonParams | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        fixed: Mapping[str, float] | None = None,
        feller: bool = False,
        min_vega: float = 1e-4,
        min_price: float = 0.0,
        min_t: float = 0.0,
        global_stage: GlobalStage = "auto",
        poor_fit_rmse_iv: float = 0.02,
        n_candidates: int = 64,
        n_local_starts: int = 4,
        seed: int = 0,
        ftol: float = 1e-12,
        xtol: float = 1e-12,
        gtol: float = 1e-12,
        max_nfev: int = 200,
        diff_step: float | None = None,
    ) -> None:
        self.engine = engine
        self.objective = objective
        self.ql_engine = ql_engine
        self.ql_engine_options = ql_engine_options
        self.ql_jacobian = ql_jacobian
        self.optimizer = optimizer
        self.start = start
        self.bounds = bounds
        self.fixed = fixed
        self.feller = feller
        self.min_vega = min_vega
        self.min_price = min_price
        self.min_t = min_t
        self.global_stage = global_stage
        self.poor_fit_rmse_iv = poor_fit_rmse_iv
        self.n_candidates = n_candidates
        self.n_local_starts = n_local_starts
        self.seed = seed
        self.ftol = ftol
        self.xtol = xtol
        self.gtol = gtol
        self.max_nfev = max_nfev
        self.diff_step = diff_step

    # -- settings -------------------------------------------------------------------------------
    def _check(self) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
        if self.engine not in ("fast", "quantlib"):
            raise ParameterError(f"engine must be 'fast' or 'quantlib', got {self.engine!r}")
        if self.objective not in ("iv", "price"):
            raise ParameterError(f"objective must be 'iv' or 'price', got {self.objective!r}")
        if self.ql_engine not in QL_ENGINES:
            raise ParameterError(f"ql_engine must be one of {QL_ENGINES}, got {self.ql_engine!r}")
        if self.ql_jacobian not in ("2-point", "3-point", "fast"):
            raise ParameterError(
                f"ql_jacobian must be '2-point', '3-point' or 'fast', got {self.ql_jacobian!r}"
            )
        if self.optimizer not in ("auto", "lm", "trf"):
            raise ParameterError(f"optimizer must be 'auto', 'lm' or 'trf', got {self.optimizer!r}")
        if self.optimizer == "lm" and self.engine == "quantlib" and self.ql_jacobian != "fast":
            raise ParameterError(
                "optimizer='lm' needs an analytic Jacobian: engine='fast' or ql_jacobian='fast'"
            )
        if self.global_stage not in ("auto", "always", "never"):
            raise ParameterError(f"global_stage must be auto/always/never: {self.global_stage!r}")
        box = dict(DEFAULT_BOUNDS)
        for name, (lo, hi) in (self.bounds or {}).items():
            if name not in box:
                raise ParameterError(f"unknown Heston parameter in bounds: {name!r}")
            if not lo < hi:
                raise ParameterError(f"bounds of {name} must satisfy lo < hi, got {(lo, hi)}")
            box[name] = (float(lo), float(hi))
        fixed = {n: float(v) for n, v in (self.fixed or {}).items()}
        unknown = set(fixed) - set(_NAMES)
        if unknown:
            raise ParameterError(f"unknown Heston parameter(s) in fixed: {sorted(unknown)}")
        if len(fixed) == len(_NAMES):
            raise ParameterError("all five Heston parameters are fixed: use fix() instead")
        if self.feller and ({"kappa", "theta", "sigma"} & set(fixed)):
            raise ParameterError("feller=True cannot be combined with fixed kappa, theta or sigma")
        return box, fixed

    def settings(self) -> dict[str, Any]:
        """The settings as a JSON-friendly dict (stored in each :class:`HestonFit`)."""
        return {
            "engine": self.engine,
            "objective": self.objective,
            "ql_engine": self.ql_engine,
            "ql_engine_options": dict(self.ql_engine_options or {}),
            "ql_jacobian": self.ql_jacobian,
            "optimizer": self.optimizer,
            "start": None if self.start is None else self.start.to_dict(),
            "bounds": {k: list(v) for k, v in (self.bounds or {}).items()},
            "fixed": dict(self.fixed or {}),
            "feller": self.feller,
            "min_vega": self.min_vega,
            "min_price": self.min_price,
            "min_t": self.min_t,
            "global_stage": self.global_stage,
            "poor_fit_rmse_iv": self.poor_fit_rmse_iv,
            "n_candidates": self.n_candidates,
            "n_local_starts": self.n_local_starts,
            "seed": self.seed,
            "ftol": self.ftol,
            "xtol": self.xtol,
            "gtol": self.gtol,
            "max_nfev": self.max_nfev,
            "diff_step": self.diff_step,
        }

    def guard(self, quotes: HestonQuotes) -> BoolArray:
        """The wing guard: True where a quote may steer the fit (see the module docstring)."""
        with np.errstate(invalid="ignore"):  # NaN market vols simply fail the test
            ok = np.isfinite(quotes.iv) & np.isfinite(quotes.price) & (quotes.weight > 0)
            ok &= quotes.price > np.maximum(quotes.tick, self.min_price)
            ok &= quotes.price > 0
            ok &= quotes.normalised_vega >= self.min_vega
            ok &= quotes.t >= self.min_t
        return np.asarray(ok)

    # -- fitting --------------------------------------------------------------------------------
    def _make_fit(
        self,
        params: HestonParams,
        quotes: HestonQuotes,
        used: BoolArray,
        report: OptimiserReport,
        problem: _Problem | None = None,
        z: FloatArray | None = None,
    ) -> HestonFit:
        q = quotes
        model_iv = None
        seen = None
        if problem is not None and z is not None and used.all():
            seen = problem.recent.get(np.asarray(z, dtype=np.float64).tobytes())
        if seen is not None:
            # every quote was fitted and the optimiser priced them at the optimum: its prices
            # (and implied vols) are the report (the fast pricer's held rules meet the same
            # accuracy criteria as fresh ones: prices equal to ~1e-15 F)
            price = seen[0]
            model_iv = seen[1]
        elif self.engine == "fast":
            price = np.asarray(
                heston_price(params, q.forward, q.strike, q.t, q.call, q.discount)
            ).ravel()
        elif problem is not None and used.all():
            # every quote was fitted: the problem's QuantLib objects price them all
            price = problem.prices(params, want_jac=False)[0]
        else:
            pricer = QuantLibHestonPricer(
                q.forward,
                q.strike,
                q.t,
                q.call,
                q.discount,
                engine=self.ql_engine,
                engine_options=dict(self.ql_engine_options or {}),
            )
            price = np.asarray(pricer.price(params)).ravel()
        if model_iv is None:
            model_iv = np.asarray(implied_vol(price, q.forward, q.strike, q.t, q.call, q.discount))
        residuals = model_iv - q.iv if self.objective == "iv" else price - q.price
        err = (model_iv - q.iv)[used]
        rmse = float(np.sqrt(np.mean(err * err))) if err.size else math.nan
        return HestonFit(
            params=params,
            quotes=q,
            model_price=price,
            model_iv=model_iv,
            residuals=residuals,
            used=used,
            rmse_iv=rmse,
            engine=self.engine,
            objective=self.objective,
            settings=self.settings(),
            report=report,
        )

    def fix(self, params: HestonParams, data: object) -> HestonFit:
        """A :class:`HestonFit` at given parameters, without fitting (e.g. yesterday's fit on
        today's quotes)."""
        self._check()
        quotes = HestonQuotes.coerce(data)
        used = self.guard(quotes)
        report = OptimiserReport(
            converged=False,
            status=-2,
            message="parameters fixed by the caller (no fit)",
            iterations=0,
            n_fev=0,
            n_jev=0,
            cost=math.nan,
            optimality=math.nan,
            n_starts=0,
            elapsed_s=0.0,
        )
        fit = self._make_fit(params, quotes, used, report)
        r = fit.residuals[used] * np.sqrt(quotes.weight[used])
        return replace(fit, report=replace(report, cost=0.5 * float(np.sum(r * r))))

    def _local(
        self, problem: _Problem, z0: FloatArray, lo: FloatArray, hi: FloatArray, max_nfev: int
    ) -> OptimizeResult:
        z0 = np.clip(z0, lo + 1e-12 * (hi - lo), hi - 1e-12 * (hi - lo))
        if self._optimizer() == "lm":
            res = levenberg_marquardt(
                problem.residuals_jacobian,
                z0,
                lo,
                hi,
                ftol=self.ftol,
                xtol=self.xtol,
                gtol=self.gtol,
                max_nfev=max_nfev,
            )
            problem.n_jev += int(res.njev)
            return res
        jac: Callable[[FloatArray], FloatArray] | str
        jac = problem.jacobian if problem.analytic_jacobian else problem.ql_jacobian
        return least_squares(
            problem.residuals,
            z0,
            jac=jac,
            bounds=(lo, hi),
            method="trf",
            x_scale="jac",
            ftol=self.ftol,
            xtol=self.xtol,
            gtol=self.gtol,
            max_nfev=max_nfev,
            diff_step=self.diff_step,
        )

    def _optimizer(self) -> Literal["lm", "trf"]:
        """The local optimiser: ``"auto"`` is ``"lm"`` for ``engine="fast"``, else ``"trf"``."""
        if self.optimizer == "auto":
            return "lm" if self.engine == "fast" else "trf"
        return self.optimizer

    def _rmse_iv(self, problem: _Problem, z: FloatArray) -> float:
        price, _ = problem.prices(problem.params_of(z), want_jac=False)
        q = problem.q
        vol = np.asarray(implied_vol(price, q.forward, q.strike, q.t, q.call, q.discount))
        err = vol - q.iv
        return float(np.sqrt(np.mean(err * err))) if np.all(np.isfinite(err)) else math.inf

    def _candidates(
        self, problem: _Problem, start: HestonParams, lo: FloatArray, hi: FloatArray
    ) -> FloatArray:
        """Sobol points in a box around the data (seeded), in free variables, clipped."""
        v_lo, v_hi = 0.25 * min(start.v0, start.theta), 4.0 * max(start.v0, start.theta)
        box = {
            "v0": (math.log(max(v_lo, 1e-6)), math.log(v_hi), True),
            "theta": (math.log(max(v_lo, 1e-6)), math.log(v_hi), True),
            "kappa": (math.log(0.2), math.log(20.0), True),
            "sigma": (math.log(0.1), math.log(5.0), True),
            "rho": (-0.9, 0.5, False),
        }
        if problem.feller:
            box["sigma"] = (math.log(0.05), 0.0, True)
        sampler = qmc.Sobol(d=len(problem.free), scramble=True, seed=self.seed)
        u = sampler.random(self.n_candidates)
        cols = []
        for j, name in enumerate(problem.free):
            a, b, log = box[name]
            x = a + (b - a) * u[:, j]
            cols.append(np.exp(x) if log else x)
        z = np.column_stack(cols)
        return np.clip(z, lo, hi)

    def fit(self, data: object) -> HestonFit:
        """Calibrate to ``data`` (``HestonQuotes``, a chain DataFrame, or an object with a
        ``.quotes`` DataFrame).

        Returns
        -------
        HestonFit
            The result. Non-convergence is a :class:`volcal.errors.ConvergenceWarning` and
            ``report.converged == False``, not an exception.

        Raises
        ------
        CalibrationError
            No quote passes the wing guard, or fewer used quotes than free parameters.
        """
        t_start = time.perf_counter()
        box, fixed = self._check()
        quotes = HestonQuotes.coerce(data)
        used = self.guard(quotes)
        n_free = len(_NAMES) - len(fixed)
        if used.sum() < n_free:
            raise CalibrationError(
                f"Heston fit needs at least {n_free} usable quotes, {int(used.sum())} of "
                f"{len(quotes)} pass the wing guard (min_vega={self.min_vega}, min_t={self.min_t}, "
                f"min_price={self.min_price}, ticks)"
            )
        start = self.start or _initial_guess(quotes, used)
        if fixed:
            start = start.replace(**fixed)
        problem = _Problem(
            quotes,
            used,
            engine=self.engine,
            objective=self.objective,
            ql_engine=self.ql_engine,
            ql_engine_options=self.ql_engine_options,
            ql_jacobian=self.ql_jacobian,
            fixed=fixed,
            feller=self.feller,
            min_price=self.min_price,
        )
        lo, hi = problem.bounds(box)
        z0 = problem.z_of(start)
        best = self._local(problem, z0, lo, hi, self.max_nfev)
        n_starts = 1
        notes = []
        need_global = self.global_stage == "always" or (
            self.global_stage == "auto"
            and (not best.success or self._rmse_iv(problem, best.x) > self.poor_fit_rmse_iv)
        )
        if need_global and self.n_local_starts > 0:
            cands = self._candidates(problem, start, lo, hi)
            costs = np.array([0.5 * float(np.sum(problem.residuals(z) ** 2)) for z in cands])
            for i in np.argsort(costs, kind="stable")[: self.n_local_starts]:
                res = self._local(problem, cands[i], lo, hi, self.max_nfev)
                n_starts += 1
                if res.cost < best.cost:
                    best = res
            notes.append(f"global stage: {n_starts - 1} starts from {len(cands)} candidates")
        params = problem.params_of(best.x)
        at_bound = [
            n
            for n, x, a, b in zip(problem.free, best.x, lo, hi, strict=True)
            if x <= a + 1e-9 * (b - a) or x >= b - 1e-9 * (b - a)
        ]
        if at_bound:
            notes.append(f"at bounds: {', '.join(at_bound)}")
        message = str(best.message) + ("; " + "; ".join(notes) if notes else "")
        report = OptimiserReport(
            converged=bool(best.success),
            status=int(best.status),
            message=message,
            iterations=int(best.njev or 0) if problem.analytic_jacobian else int(best.nfev),
            n_fev=problem.n_fev,
            n_jev=problem.n_jev,
            cost=float(best.cost),
            optimality=float(best.optimality),
            n_starts=n_starts,
            elapsed_s=time.perf_counter() - t_start,
            raw=best,
        )
        if not report.converged:
            warnings.warn(
                f"Heston calibration did not converge: {message}", ConvergenceWarning, stacklevel=2
            )
        fit = self._make_fit(params, quotes, used, report, problem, best.x)
        return replace(fit, report=replace(report, elapsed_s=time.perf_counter() - t_start))


def fit_heston(
    data: object,
    *,
    engine: Engine = "fast",
    objective: Objective = "iv",
    **settings: Any,
) -> HestonFit:
    """Calibrate the Heston model to option quotes (shortcut for :class:`HestonCalibrator`).

    Parameters
    ----------
    data:
        ``HestonQuotes``, a chain DataFrame (``docs/conventions.md``) or an object with a
        ``.quotes`` DataFrame (``volcal.OptionChain``).
    engine:
        ``"fast"`` or ``"quantlib"``.
    objective:
        ``"iv"`` or ``"price"``.
    **settings:
        Other :class:`HestonCalibrator` settings (``ql_engine``, ``start``, ``feller``, ...).

    Returns
    -------
    HestonFit
    """
    return HestonCalibrator(engine=engine, objective=objective, **settings).fit(data)
