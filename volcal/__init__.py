"""volcal: crypto option chains to calibrated volatility surfaces and margin numbers.

The public API is re-exported here; see ``docs/`` for conventions and models.
"""

from volcal.black import BlackGreeks, black_greeks, black_price
from volcal.errors import (
    ChainValidationError,
    VolcalError,
    VolcalWarning,
)
from volcal.implied import IVStatus, implied_vol, implied_vol_scalar, implied_vol_with_status

__version__ = "0.1.0"

__all__ = [
    "BlackGreeks",
    "ChainValidationError",
    "IVStatus",
    "VolcalError",
    "VolcalWarning",
    "__version__",
    "black_greeks",
    "black_price",
    "implied_vol",
    "implied_vol_scalar",
    "implied_vol_with_status",
]
