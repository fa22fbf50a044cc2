"""The public API: every exported name resolves, the names the issues promise exist, and
``import volcal`` stays light (lazy loading)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import volcal

PROMISED = [
    # foundation (issue 2)
    "black_price", "black_greeks", "implied_vol", "implied_vol_with_status", "implied_vol_scalar",
    "OptionChain", "load_snapshot", "VolcalError", "VolcalWarning", "ChainValidationError",
    # exchange layer (issue 3)
    "fetch_chain", "afetch_chains", "replay",
    # surfaces (issue 4)
    "fit_svi", "fit_ssvi", "fit_essvi", "SviRaw", "SurfaceFit", "VolSurface",
    # Heston (issue 5)
    "HestonParams", "fit_heston", "HestonFit",
    # margin (issue 6)
    "margin", "calibrate_margin_params", "MarginReport", "MarginParams",
]  # fmt: skip


@pytest.mark.parametrize("name", sorted(volcal.__all__))
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(volcal, name) is not None


@pytest.mark.parametrize("name", PROMISED)
def test_promised_names_exist(name: str) -> None:
    assert name in volcal.__all__
    assert getattr(volcal, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = volcal.no_such_name  # type: ignore[attr-defined]


def test_import_is_light() -> None:
    code = (
        "import sys, volcal; "
        "heavy = [m for m in ('ccxt', 'QuantLib', 'numba', 'duckdb', 'scipy', 'matplotlib') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_are_also_builtins() -> None:
    assert issubclass(volcal.ChainValidationError, ValueError)
    assert issubclass(volcal.FetchError, ConnectionError)
    assert issubclass(volcal.UnknownInstrumentError, KeyError)
    assert issubclass(volcal.ConvergenceWarning, volcal.VolcalWarning)
