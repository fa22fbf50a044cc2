"""fit_svi on synthetic chains: contract (deterministic, immutable, serialisable, summary)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.svi.synthetic import svi_quotes
from volcal.errors import CalibrationError
from volcal.surface import VolSurface
from volcal.svi import SurfaceFit, SviRaw, fit_svi

SMILES = [
    (0.05, SviRaw(a=0.002, b=0.02, rho=-0.2, m=0.0, sigma=0.05)),
    (0.25, SviRaw(a=0.01, b=0.06, rho=-0.3, m=0.02, sigma=0.15)),
    (1.0, SviRaw(a=0.04, b=0.12, rho=-0.35, m=0.05, sigma=0.3)),
]


@pytest.fixture(scope="module")
def fit() -> SurfaceFit:
    return fit_svi(svi_quotes(SMILES))


def test_fit_recovers_smiles(fit: SurfaceFit) -> None:
    assert fit.inside_share == 1.0
    assert fit.rmse_iv < 1e-6
    assert fit.optimizer.converged
    assert fit.arbitrage.arbitrage_free
    assert isinstance(fit.surface, VolSurface)
    assert list(fit.params["n_quotes"]) == [25, 25, 25]
    reasons = fit.quotes.loc[~fit.quotes["used"], "excluded_reason"].unique()
    assert list(reasons) == ["in the money (its out-of-the-money twin is used)"]


def test_deterministic_and_serialisable(fit: SurfaceFit) -> None:
    again = fit_svi(svi_quotes(SMILES))
    assert again.surface == fit.surface
    d = fit.to_dict()
    json.dumps(d, default=str)
    back = SurfaceFit.from_dict(d)
    assert back.surface == fit.surface
    assert back.rmse_iv == fit.rmse_iv
    assert back.arbitrage.arbitrage_free == fit.arbitrage.arbitrage_free
    np.testing.assert_array_equal(back.quotes["iv_fit"], fit.quotes["iv_fit"])
    assert "SVI surface" in fit.summary()


def test_immutable(fit: SurfaceFit) -> None:
    with pytest.raises(AttributeError):
        fit.rmse_iv = 0.0  # type: ignore[misc]


def test_no_usable_expiry() -> None:
    q = svi_quotes(SMILES)
    q["filter_reason"] = "stale"
    with pytest.raises(CalibrationError, match="no expiry"):
        fit_svi(q)
