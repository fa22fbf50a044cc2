"""The one place where volcal touches QuantLib's Heston machinery and its global state.

QuantLib prices with dates and a process-wide ``Settings.evaluationDate``. This adapter builds
its QuantLib objects against a fixed reference date, sets the evaluation date only inside
:func:`evaluation_date` (a context manager that always restores the caller's date, even on
errors), and converts parameters with :meth:`HestonParams.to_quantlib_order` (QuantLib's order
is ``theta, kappa, sigma, rho, v0``). Nothing else in volcal imports QuantLib for Heston.

Options are priced "on the forward": spot ``F``, zero rates and dividends, NPV times the
discount factor ``D``, which is exactly the Heston price with deterministic rates.

Hour-level times
----------------
QuantLib's ``Actual365Fixed`` measures whole days, while volcal's ``t`` is exact to the
nanosecond. The Heston model is invariant under a change of time scale: for ``lam > 0``,
the price at maturity ``t`` with ``(v0, kappa, theta, sigma, rho)`` equals the price at
``lam t`` with ``(v0, kappa, theta, sigma) / lam`` and the same ``rho`` (substitute
``s = lam u`` in the SDEs). Each distinct ``t`` therefore gets its own QuantLib model on a
whole number of days ``n = max(1, round(365 t))`` with parameters scaled by
``lam = n / (365 t)``; when ``365 t`` is a whole number ``lam == 1`` and nothing is scaled.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import QuantLib as ql

from volcal.heston.params import HestonParams, ParameterError

__all__ = [
    "QL_ENGINES",
    "QuantLibEngineName",
    "QuantLibHestonPricer",
    "evaluation_date",
    "quantlib_heston_price",
]

QuantLibEngineName = Literal["analytic", "cos", "exponential_fitting"]
QL_ENGINES: tuple[QuantLibEngineName, ...] = ("analytic", "cos", "exponential_fitting")
"""Selectable QuantLib engines: ``AnalyticHestonEngine``, ``COSHestonEngine``,
``ExponentialFittingHestonEngine``."""

_REFERENCE_DATE = ql.Date(1, ql.January, 2001)
_DAY_COUNTER = ql.Actual365Fixed()

FloatArray = npt.NDArray[np.float64]


@contextmanager
def evaluation_date(date: ql.Date = _REFERENCE_DATE) -> Iterator[ql.Date]:
    """Set QuantLib's global evaluation date for the ``with`` block, then restore it.

    Parameters
    ----------
    date:
        The evaluation date to use inside the block.

    Yields
    ------
    QuantLib.Date
        ``date``.
    """
    settings = ql.Settings.instance()
    previous = settings.evaluationDate
    settings.evaluationDate = date
    try:
        yield date
    finally:
        settings.evaluationDate = previous


def _make_engine(
    model: ql.HestonModel, engine: QuantLibEngineName, options: dict[str, Any]
) -> ql.PricingEngine:
    if engine == "analytic":
        rel = options.get("rel_tolerance")
        if rel is not None:
            return ql.AnalyticHestonEngine(
                model, float(rel), int(options.get("max_evaluations", 1_000_000))
            )
        return ql.AnalyticHestonEngine(model, int(options.get("integration_order", 144)))
    if engine == "cos":
        return ql.COSHestonEngine(model, float(options.get("L", 16)), int(options.get("N", 200)))
    if engine == "exponential_fitting":
        return ql.ExponentialFittingHestonEngine(model)
    raise ParameterError(f"unknown QuantLib Heston engine {engine!r}; choose one of {QL_ENGINES}")


class QuantLibHestonPricer:
    """Prices a fixed set of European options with a QuantLib Heston engine.

    Build once for a set of quotes, then call :meth:`price` with parameters as often as
    needed (e.g. inside an optimiser); QuantLib objects are reused and only the model
    parameters change.

    Parameters
    ----------
    forward, strike:
        Forward ``F`` of each option's expiry and strike ``K`` (> 0), broadcast together.
    t:
        Time to expiry in years (ACT/365F, > 0); hour-level times are handled exactly (see
        the module docstring).
    call:
        True for calls, False for puts.
    discount:
        Discount factor ``D`` per option (1.0 for crypto premiums on the forward).
    engine:
        ``"analytic"`` (``AnalyticHestonEngine``; Gauss-Laguerre of order 144 by default, or
        adaptive Gauss-Lobatto with ``engine_options={"rel_tolerance": 1e-14,
        "max_evaluations": 10**6}``), ``"cos"`` (``COSHestonEngine``, options ``L``, ``N``)
        or ``"exponential_fitting"`` (``ExponentialFittingHestonEngine``).
    engine_options:
        Engine settings, see ``engine``.
    """

    def __init__(
        self,
        forward: npt.ArrayLike,
        strike: npt.ArrayLike,
        t: npt.ArrayLike,
        call: npt.ArrayLike,
        discount: npt.ArrayLike = 1.0,
        *,
        engine: QuantLibEngineName = "analytic",
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        f, k, tt, c, d = np.broadcast_arrays(
            np.asarray(forward, dtype=np.float64),
            np.asarray(strike, dtype=np.float64),
            np.asarray(t, dtype=np.float64),
            np.asarray(call, dtype=np.bool_),
            np.asarray(discount, dtype=np.float64),
        )
        self.shape = f.shape
        f, k, tt, c, d = (a.ravel().copy() for a in (f, k, tt, c, d))
        if not (np.all(np.isfinite(f)) and np.all(f > 0) and np.all(np.isfinite(k))):
            raise ParameterError("QuantLibHestonPricer needs finite forwards > 0 and strikes")
        if not (np.all(k > 0) and np.all(np.isfinite(tt)) and np.all(tt > 0)):
            raise ParameterError("QuantLibHestonPricer needs strikes > 0 and times t > 0")
        if engine not in QL_ENGINES:
            raise ParameterError(
                f"unknown QuantLib Heston engine {engine!r}; choose one of {QL_ENGINES}"
            )
        self.engine: QuantLibEngineName = engine
        self._discount = d
        self._t_unique, inverse = np.unique(tt, return_inverse=True)
        days = np.maximum(1, np.rint(self._t_unique * 365.0)).astype(int)
        self._scale = days / (365.0 * self._t_unique)  # lam per expiry
        opts = dict(engine_options or {})
        zero = ql.YieldTermStructureHandle(ql.FlatForward(_REFERENCE_DATE, 0.0, _DAY_COUNTER))
        self._models: list[ql.HestonModel] = []
        self._options: list[ql.VanillaOption] = []
        self._keep: list[object] = [zero]  # keep SWIG proxies alive with the options
        with evaluation_date():
            engines = []
            for _ in range(self._t_unique.size):
                # placeholder parameters; every price() call sets the real ones
                process = ql.HestonProcess(
                    zero, zero, ql.QuoteHandle(ql.SimpleQuote(1.0)), 0.04, 1.0, 0.04, 0.5, 0.0
                )
                model = ql.HestonModel(process)
                self._models.append(model)
                engines.append(_make_engine(model, engine, opts))
            self._keep.extend(engines)
            for i in range(f.size):
                e = int(inverse[i])
                # spot = F with zero rates: scale the option to forward 1, strike K/F
                payoff = ql.PlainVanillaPayoff(
                    ql.Option.Call if c[i] else ql.Option.Put, float(k[i] / f[i])
                )
                option = ql.VanillaOption(
                    payoff, ql.EuropeanExercise(_REFERENCE_DATE + int(days[e]))
                )
                option.setPricingEngine(engines[e])
                self._options.append(option)
        self._forward = f

    def price(self, params: HestonParams) -> FloatArray:
        """Prices ``D F c`` at ``params`` (array of the broadcast input shape)."""
        with evaluation_date():
            for model, lam in zip(self._models, self._scale, strict=True):
                scaled = HestonParams(
                    v0=params.v0 / lam,
                    kappa=params.kappa / lam,
                    theta=params.theta / lam,
                    sigma=params.sigma / lam,
                    rho=params.rho,
                )
                model.setParams(ql.Array(list(scaled.to_quantlib_order())))
            npv = np.array([option.NPV() for option in self._options])
        return (self._discount * self._forward * npv).reshape(self.shape)


def quantlib_heston_price(
    params: HestonParams,
    forward: npt.ArrayLike,
    strike: npt.ArrayLike,
    t: npt.ArrayLike,
    call: npt.ArrayLike,
    discount: npt.ArrayLike = 1.0,
    *,
    engine: QuantLibEngineName = "analytic",
    engine_options: dict[str, Any] | None = None,
) -> FloatArray | float:
    """Heston prices from a QuantLib engine (one-shot form of :class:`QuantLibHestonPricer`).

    Inputs as for :func:`volcal.heston.heston_price` (``t > 0``); ``engine`` and
    ``engine_options`` as for :class:`QuantLibHestonPricer`.
    """
    pricer = QuantLibHestonPricer(
        forward, strike, t, call, discount, engine=engine, engine_options=engine_options
    )
    out = pricer.price(params)
    return float(out) if out.ndim == 0 else out
