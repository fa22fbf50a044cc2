"""Risk: skew-aware margin (positions, smile dynamics, scenario grids, greeks add-ons),
parameters calibrated from history, and their backtest. See ``docs/margin.md``.

``volcal.margin(positions, surface, chain, params)`` is :func:`volcal.risk.margin`.
"""

from volcal.risk.backtest import (
    BacktestResult,
    apply_confidence_scale,
    backtest_margin,
    betabinomial_coverage,
    christoffersen,
    day_clustered_coverage,
    kupiec_pof,
)
from volcal.risk.dynamics import SmileDynamics
from volcal.risk.fhs import (
    HistoricalScenarios,
    fhs_confidence_scale,
    historical_scenarios,
    scenario_losses,
)
from volcal.risk.greeks import GREEK_COLUMNS, position_greeks
from volcal.risk.history import (
    NODES_DAYS,
    VEGA_BUCKETS_DAYS,
    HistoryStats,
    history_stats,
    history_stats_from_quotes,
)
from volcal.risk.hull_white import HullWhiteDelta, fit_hull_white_delta, hull_white_from_chains
from volcal.risk.params import (
    MarginParams,
    calibrate_margin_params,
    confidence_scale,
    deribit_pm_params,
    hill_tail,
)
from volcal.risk.positions import (
    INVERSE_FUTURE_FACE_USD,
    POSITION_COLUMNS,
    Positions,
    resolve_positions,
)
from volcal.risk.report import MarginReport, margin
from volcal.risk.scenarios import (
    DEFAULT_EXTENDED_MOVES,
    ScenarioPnL,
    ScenarioSet,
    VolShock,
    pm_grid,
    revalue,
    span_grid,
)
from volcal.risk.standard import standard_margin
from volcal.risk.surfaces import MarginSurface, MarkSurface, ParametricSmile, smile_derivatives

__all__ = [
    "DEFAULT_EXTENDED_MOVES",
    "GREEK_COLUMNS",
    "INVERSE_FUTURE_FACE_USD",
    "NODES_DAYS",
    "POSITION_COLUMNS",
    "VEGA_BUCKETS_DAYS",
    "BacktestResult",
    "HistoricalScenarios",
    "HistoryStats",
    "HullWhiteDelta",
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
    "apply_confidence_scale",
    "backtest_margin",
    "betabinomial_coverage",
    "calibrate_margin_params",
    "christoffersen",
    "confidence_scale",
    "day_clustered_coverage",
    "deribit_pm_params",
    "fhs_confidence_scale",
    "fit_hull_white_delta",
    "hill_tail",
    "historical_scenarios",
    "history_stats",
    "history_stats_from_quotes",
    "hull_white_from_chains",
    "kupiec_pof",
    "margin",
    "pm_grid",
    "position_greeks",
    "resolve_positions",
    "revalue",
    "scenario_losses",
    "smile_derivatives",
    "span_grid",
    "standard_margin",
]
