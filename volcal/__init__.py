"""volcal: crypto option chains to calibrated volatility surfaces and margin numbers.

The public API is re-exported here; see ``docs/`` for conventions and models. Importing volcal
does not import ccxt: only the exchange functions in :mod:`volcal.data` do, when called.
"""

from volcal.black import BlackGreeks, black_greeks, black_price
from volcal.chain import (
    ChainSlice,
    OptionChain,
    ParityForward,
    QuoteFilters,
    filter_quotes,
    infer_forward,
    infer_forwards,
)
from volcal.data.exchanges import RetryPolicy, afetch_chain, afetch_chains, fetch_chain
from volcal.data.snapshots import load_snapshot
from volcal.data.tape import read_tape, replay
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
    UnknownInstrumentError,
    VolcalError,
    VolcalWarning,
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
from volcal.implied import IVStatus, implied_vol, implied_vol_scalar, implied_vol_with_status
from volcal.surface import ForwardCurve, VolSurface
from volcal.svi import (
    ArbitrageReport,
    OptimizerReport,
    SurfaceFit,
    SviJW,
    SviRaw,
    SviSliceSettings,
    SviSurface,
    butterfly_g,
    fit_svi,
    fit_svi_slice,
)

__version__ = "0.1.0"

__all__ = [
    "ArbitrageReport",
    "ArbitrageWarning",
    "BlackGreeks",
    "CalibrationError",
    "ChainSlice",
    "ChainValidationError",
    "ConfigError",
    "ConvergenceWarning",
    "DataQualityWarning",
    "FetchError",
    "ForwardCurve",
    "HestonCalibrator",
    "HestonFit",
    "HestonParams",
    "HestonQuotes",
    "HestonSurface",
    "IVStatus",
    "ImpliedVolError",
    "OptimizerReport",
    "OptionChain",
    "ParameterError",
    "ParityForward",
    "PriceAboveMaximumError",
    "PriceBelowIntrinsicError",
    "QuoteFilters",
    "ReplayError",
    "RetryPolicy",
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
    "black_greeks",
    "black_price",
    "butterfly_g",
    "fetch_chain",
    "filter_quotes",
    "fit_heston",
    "fit_svi",
    "fit_svi_slice",
    "heston_price",
    "heston_price_jacobian",
    "implied_vol",
    "implied_vol_scalar",
    "implied_vol_with_status",
    "infer_forward",
    "infer_forwards",
    "load_snapshot",
    "read_tape",
    "replay",
]
