"""volcal: crypto option chains to calibrated volatility surfaces and margin numbers.

The public API is re-exported here (see ``docs/``). Names load lazily on first use, so
``import volcal`` is quick and a command such as ``volcal --help`` does not pay for QuantLib,
SciPy or DuckDB. Importing volcal never imports ccxt: only the exchange functions of
:mod:`volcal.data` do, when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from volcal.errors import (
    ArbitrageWarning,
    CalibrationError,
    ChainValidationError,
    ConfigError,
    ConvergenceWarning,
    DataQualityWarning,
    FetchError,
    ImpliedVolError,
    ParameterError,
    PriceAboveMaximumError,
    PriceBelowIntrinsicError,
    ReplayError,
    StoreError,
    UnknownInstrumentError,
    VolcalError,
    VolcalWarning,
)

if TYPE_CHECKING:
    from volcal.backfill import (
        BackfillReport,
        backfill,
    )
    from volcal.black import (
        BlackGreeks,
        black_greeks,
        black_price,
    )
    from volcal.chain import (
        ChainSlice,
        OptionChain,
        ParityForward,
        QuoteFilters,
        filter_quotes,
        infer_forward,
        infer_forwards,
    )
    from volcal.config import (
        JobConfig,
        load_config,
    )
    from volcal.data.exchanges import (
        RetryPolicy,
        afetch_chain,
        afetch_chains,
        fetch_chain,
    )
    from volcal.data.snapshots import (
        load_snapshot,
    )
    from volcal.data.tape import (
        read_tape,
        replay,
    )
    from volcal.heston import (
        HestonCalibrator,
        HestonFit,
        HestonParams,
        HestonQuotes,
        HestonSurface,
        fit_heston,
        heston_price,
        heston_price_jacobian,
    )
    from volcal.implied import (
        IVStatus,
        implied_vol,
        implied_vol_scalar,
        implied_vol_with_status,
    )
    from volcal.jobs import (
        run_job,
    )
    from volcal.report import (
        write_report,
    )
    from volcal.risk import (
        MarginParams,
        MarginReport,
        MarkSurface,
        SmileDynamics,
        backtest_margin,
        calibrate_margin_params,
        deribit_pm_params,
        margin,
    )
    from volcal.store import (
        Store,
    )
    from volcal.surface import (
        ForwardCurve,
        VolSurface,
    )
    from volcal.svi import (
        ArbitrageReport,
        EssviSurface,
        OptimizerReport,
        RepairReport,
        SsviParams,
        SsviSettings,
        SsviSurface,
        SurfaceFit,
        SviJW,
        SviRaw,
        SviSliceSettings,
        SviSurface,
        butterfly_g,
        fit_svi,
        fit_svi_slice,
        repair_quotes,
    )
    from volcal.svi.essvi import (
        fit_essvi,
    )
    from volcal.svi.ssvi import (
        fit_ssvi,
    )

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "EssviSurface": "volcal.svi",
    "RepairReport": "volcal.svi",
    "SsviParams": "volcal.svi",
    "SsviSettings": "volcal.svi",
    "SsviSurface": "volcal.svi",
    "repair_quotes": "volcal.svi",
    "MarginParams": "volcal.risk",
    "MarginReport": "volcal.risk",
    "MarkSurface": "volcal.risk",
    "SmileDynamics": "volcal.risk",
    "backtest_margin": "volcal.risk",
    "calibrate_margin_params": "volcal.risk",
    "deribit_pm_params": "volcal.risk",
    "margin": "volcal.risk",
    "BlackGreeks": "volcal.black",
    "black_greeks": "volcal.black",
    "black_price": "volcal.black",
    "IVStatus": "volcal.implied",
    "implied_vol": "volcal.implied",
    "implied_vol_scalar": "volcal.implied",
    "implied_vol_with_status": "volcal.implied",
    "ChainSlice": "volcal.chain",
    "OptionChain": "volcal.chain",
    "ParityForward": "volcal.chain",
    "QuoteFilters": "volcal.chain",
    "filter_quotes": "volcal.chain",
    "infer_forward": "volcal.chain",
    "infer_forwards": "volcal.chain",
    "RetryPolicy": "volcal.data.exchanges",
    "afetch_chain": "volcal.data.exchanges",
    "afetch_chains": "volcal.data.exchanges",
    "fetch_chain": "volcal.data.exchanges",
    "load_snapshot": "volcal.data.snapshots",
    "read_tape": "volcal.data.tape",
    "replay": "volcal.data.tape",
    "ForwardCurve": "volcal.surface",
    "VolSurface": "volcal.surface",
    "ArbitrageReport": "volcal.svi",
    "OptimizerReport": "volcal.svi",
    "SurfaceFit": "volcal.svi",
    "SviJW": "volcal.svi",
    "SviRaw": "volcal.svi",
    "SviSliceSettings": "volcal.svi",
    "SviSurface": "volcal.svi",
    "butterfly_g": "volcal.svi",
    "fit_svi": "volcal.svi",
    "fit_svi_slice": "volcal.svi",
    "fit_ssvi": "volcal.svi.ssvi",
    "fit_essvi": "volcal.svi.essvi",
    "HestonCalibrator": "volcal.heston",
    "HestonFit": "volcal.heston",
    "HestonParams": "volcal.heston",
    "HestonQuotes": "volcal.heston",
    "HestonSurface": "volcal.heston",
    "fit_heston": "volcal.heston",
    "heston_price": "volcal.heston",
    "heston_price_jacobian": "volcal.heston",
    "JobConfig": "volcal.config",
    "load_config": "volcal.config",
    "Store": "volcal.store",
    "run_job": "volcal.jobs",
    "BackfillReport": "volcal.backfill",
    "backfill": "volcal.backfill",
    "write_report": "volcal.report",
}

__all__ = [
    "ArbitrageReport",
    "ArbitrageWarning",
    "BackfillReport",
    "BlackGreeks",
    "CalibrationError",
    "ChainSlice",
    "ChainValidationError",
    "ConfigError",
    "ConvergenceWarning",
    "DataQualityWarning",
    "EssviSurface",
    "FetchError",
    "ForwardCurve",
    "HestonCalibrator",
    "HestonFit",
    "HestonParams",
    "HestonQuotes",
    "HestonSurface",
    "IVStatus",
    "ImpliedVolError",
    "JobConfig",
    "MarginParams",
    "MarginReport",
    "MarkSurface",
    "OptimizerReport",
    "OptionChain",
    "ParameterError",
    "ParityForward",
    "PriceAboveMaximumError",
    "PriceBelowIntrinsicError",
    "QuoteFilters",
    "RepairReport",
    "ReplayError",
    "RetryPolicy",
    "SmileDynamics",
    "SsviParams",
    "SsviSettings",
    "SsviSurface",
    "Store",
    "StoreError",
    "SurfaceFit",
    "SviJW",
    "SviRaw",
    "SviSliceSettings",
    "SviSurface",
    "UnknownInstrumentError",
    "VolSurface",
    "VolcalError",
    "VolcalWarning",
    "__version__",
    "afetch_chain",
    "afetch_chains",
    "backfill",
    "backtest_margin",
    "black_greeks",
    "black_price",
    "butterfly_g",
    "calibrate_margin_params",
    "deribit_pm_params",
    "fetch_chain",
    "filter_quotes",
    "fit_essvi",
    "fit_heston",
    "fit_ssvi",
    "fit_svi",
    "fit_svi_slice",
    "heston_price",
    "heston_price_jacobian",
    "implied_vol",
    "implied_vol_scalar",
    "implied_vol_with_status",
    "infer_forward",
    "infer_forwards",
    "load_config",
    "load_snapshot",
    "margin",
    "read_tape",
    "repair_quotes",
    "replay",
    "run_job",
    "write_report",
]


def __getattr__(name: str) -> Any:
    """Import the public name ``name`` from its module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'volcal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
