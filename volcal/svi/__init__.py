"""SVI smiles and surfaces: parameters, calibration, arbitrage checks.

See ``docs/svi.md``.
"""

from volcal.svi.arbitrage import ArbitrageReport, check_surface, quote_arbitrage
from volcal.svi.params import SviJW, SviRaw, butterfly_g
from volcal.svi.quotes import SliceQuotes, select_quotes, slices_from_quotes
from volcal.svi.slice_fit import SliceFitResult, SviSliceSettings, fit_svi_slice
from volcal.svi.surface_fit import OptimizerReport, SurfaceFit, fit_svi
from volcal.svi.svi_surface import SviSurface

__all__ = [
    "ArbitrageReport",
    "OptimizerReport",
    "SliceFitResult",
    "SliceQuotes",
    "SurfaceFit",
    "SviJW",
    "SviRaw",
    "SviSliceSettings",
    "SviSurface",
    "butterfly_g",
    "check_surface",
    "fit_svi",
    "fit_svi_slice",
    "quote_arbitrage",
    "select_quotes",
    "slices_from_quotes",
]
