"""Heston stochastic-volatility model: parameters, fast pricer, QuantLib adapter, calibration.

See ``docs/heston.md``. QuantLib's global state is touched only in
:mod:`volcal.heston.quantlib_adapter`.
"""

from volcal.heston.calibrate import (
    DEFAULT_BOUNDS,
    HestonCalibrator,
    HestonFit,
    OptimiserReport,
    fit_heston,
)
from volcal.heston.params import HestonParams, ParameterError
from volcal.heston.pricer import (
    FastHestonPricer,
    heston_cf,
    heston_price,
    heston_price_jacobian,
)
from volcal.heston.quantlib_adapter import QL_ENGINES, QuantLibHestonPricer, quantlib_heston_price
from volcal.heston.quotes import HestonQuotes
from volcal.heston.surface import HestonSurface

__all__ = [
    "DEFAULT_BOUNDS",
    "QL_ENGINES",
    "FastHestonPricer",
    "HestonCalibrator",
    "HestonFit",
    "HestonParams",
    "HestonQuotes",
    "HestonSurface",
    "OptimiserReport",
    "ParameterError",
    "QuantLibHestonPricer",
    "fit_heston",
    "heston_cf",
    "heston_price",
    "heston_price_jacobian",
    "quantlib_heston_price",
]
