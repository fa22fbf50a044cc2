"""Skew-aware margin: positions, smile dynamics, scenario grids, greeks add-ons, parameters
calibrated from history, and their backtest. See ``docs/margin.md``.

The package is callable: ``volcal.margin(positions, surface, chain, params)`` is
:func:`volcal.margin.margin` (so the issue's spelling works without the function shadowing the
package).
"""

import sys
import types
from typing import Any

from volcal.margin.backtest import BacktestResult, backtest_margin, kupiec_pof
from volcal.margin.dynamics import SmileDynamics
from volcal.margin.greeks import GREEK_COLUMNS, position_greeks
from volcal.margin.history import NODES_DAYS, VEGA_BUCKETS_DAYS, HistoryStats, history_stats
from volcal.margin.params import MarginParams, calibrate_margin_params, deribit_pm_params
from volcal.margin.positions import (
    INVERSE_FUTURE_FACE_USD,
    POSITION_COLUMNS,
    Positions,
    resolve_positions,
)
from volcal.margin.report import MarginReport, margin
from volcal.margin.scenarios import (
    DEFAULT_EXTENDED_MOVES,
    ScenarioPnL,
    ScenarioSet,
    VolShock,
    pm_grid,
    revalue,
    span_grid,
)
from volcal.margin.standard import standard_margin
from volcal.margin.surfaces import MarginSurface, MarkSurface, ParametricSmile, smile_derivatives

__all__ = [
    "DEFAULT_EXTENDED_MOVES",
    "GREEK_COLUMNS",
    "INVERSE_FUTURE_FACE_USD",
    "NODES_DAYS",
    "POSITION_COLUMNS",
    "VEGA_BUCKETS_DAYS",
    "BacktestResult",
    "HistoryStats",
    "MarginParams",
    "MarginReport",
    "MarginSurface",
    "MarkSurface",
    "ParametricSmile",
    "Positions",
    "ScenarioPnL",
    "ScenarioSet",
    "SmileDynamics",
    "VolShock",
    "backtest_margin",
    "calibrate_margin_params",
    "deribit_pm_params",
    "history_stats",
    "kupiec_pof",
    "margin",
    "pm_grid",
    "position_greeks",
    "resolve_positions",
    "revalue",
    "smile_derivatives",
    "span_grid",
    "standard_margin",
]


class _CallableModule(types.ModuleType):
    """The package module, callable as :func:`margin`."""

    def __call__(self, *args: Any, **kwargs: Any) -> MarginReport:
        return margin(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
