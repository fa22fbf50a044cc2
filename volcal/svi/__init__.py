"""SVI smiles and surfaces: parameters, calibration, arbitrage checks.

See ``docs/svi.md``.
"""

from volcal.svi.arbitrage import ArbitrageReport, check_surface, quote_arbitrage
from volcal.svi.essvi import (
    EssviSurface,
    essvi_calendar_free,
    essvi_calendar_margin,
    essvi_segment_butterfly_free,
    fit_essvi,
)
from volcal.svi.params import SviJW, SviRaw, butterfly_g
from volcal.svi.quotes import (
    WEIGHT_SCHEMES,
    SliceQuotes,
    quote_weights,
    select_quotes,
    slices_from_quotes,
)
from volcal.svi.repair import RepairReport, repair_quotes
from volcal.svi.slice_fit import SliceFitResult, SviSliceSettings, fit_svi_slice
from volcal.svi.ssvi import SsviParams, SsviSettings, SsviSlice, SsviSurface, fit_ssvi
from volcal.svi.surface_fit import OptimizerReport, SurfaceFit, fit_svi
from volcal.svi.svi_surface import SviSurface

__all__ = [
    "WEIGHT_SCHEMES",
    "ArbitrageReport",
    "EssviSurface",
    "OptimizerReport",
    "RepairReport",
    "SliceFitResult",
    "SliceQuotes",
    "SsviParams",
    "SsviSettings",
    "SsviSlice",
    "SsviSurface",
    "SurfaceFit",
    "SviJW",
    "SviRaw",
    "SviSliceSettings",
    "SviSurface",
    "butterfly_g",
    "check_surface",
    "essvi_calendar_free",
    "essvi_calendar_margin",
    "essvi_segment_butterfly_free",
    "fit_essvi",
    "fit_ssvi",
    "fit_svi",
    "fit_svi_slice",
    "quote_arbitrage",
    "quote_weights",
    "repair_quotes",
    "select_quotes",
    "slices_from_quotes",
]
