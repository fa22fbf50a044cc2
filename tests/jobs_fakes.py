"""Cheap stand-in models for the daily-job tests (store, report, pipeline, backfill).

They have the shape the job reads from real fits (``params`` per expiry, ``surface`` with
``total_variance(k, t)``, ``rmse_iv``, ``optimizer``), are deterministic, and take
milliseconds, so the job's plumbing is tested without depending on the SVI/Heston code.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from tests.conftest import REPO
from volcal import OptionChain
from volcal.config import MarginSettings
from volcal.errors import CalibrationError, ConvergenceWarning

DATA = REPO / "data"
ETH_TAPE = DATA / "deribit-ETH-synthetic.jsonl.gz"
BTC_TAPE = DATA / "deribit-BTC-synthetic.jsonl.gz"
NO_MARGIN = MarginSettings(standard_portfolios=False)
NO_MARGIN_TOML = "[margin]\nstandard_portfolios = false\n"


@functools.cache
def tape_chain(currency: str = "ETH") -> OptionChain:
    """The shipped synthetic chain of ``currency`` (replayed once per test process)."""
    from volcal.data.exchanges import fetch_chain
    from volcal.data.tape import replay

    tape = ETH_TAPE if currency == "ETH" else BTC_TAPE
    return fetch_chain(replay(tape), currency)


@dataclass(frozen=True)
class QuadraticSurface:
    """``w(k, t) = (vol^2 + curv k^2) t``: a symmetric smile, enough for plots and tables."""

    vol: float
    curv: float = 0.5

    def total_variance(self, k: npt.ArrayLike, t: npt.ArrayLike) -> npt.NDArray[np.float64]:
        kk, tt = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(t, dtype=float))
        return np.asarray((self.vol**2 + self.curv * kk**2) * tt)


@dataclass(frozen=True)
class FakeFit:
    """A fit-shaped value."""

    params: pd.DataFrame
    surface: QuadraticSurface
    rmse_iv: float
    inside_share: float
    optimizer: Any = field(
        default_factory=lambda: SimpleNamespace(converged=True, message="ok", iterations=3)
    )


def fit_quadratic(chain: OptionChain, *, min_t: float = 2 / 365, min_quotes: int = 6) -> FakeFit:
    """ATM vol = median usable mark IV within ``|k| < 0.1``; one row per expiry with t >= min_t."""
    q = chain.quotes
    near = q[(q["filter_reason"] == "") & (q["k"].abs() < 0.1)]["iv_mark"].dropna()
    vol = float(near.median())
    summary = chain.summary()
    summary = summary[summary["t"] >= min_t]
    params = pd.DataFrame(
        {
            "expiry": summary["expiry"].to_numpy(),
            "t": summary["t"].to_numpy(),
            "forward": summary["forward"].to_numpy(),
            "vol": vol,
            "curv": 0.5,
            "n_quotes": summary["n_usable"].to_numpy(),
            "rmse_iv": 0.01,
        }
    )
    return FakeFit(params, QuadraticSurface(vol), rmse_iv=0.01, inside_share=0.9)


def fit_with_warning(chain: OptionChain, **kwargs: Any) -> FakeFit:
    """Like :func:`fit_quadratic`, but warns that it did not converge."""
    warnings.warn("fake fit: not converged on one expiry", ConvergenceWarning, stacklevel=2)
    return fit_quadratic(chain, **kwargs)


def fit_failing(chain: OptionChain, **kwargs: Any) -> FakeFit:
    """Always raises."""
    raise CalibrationError(f"fake failure on {chain.underlying}")


def _settings(fit: Any) -> dict[str, Any]:
    return {"min_t": fit.min_t_days / 365.0, "min_quotes": fit.min_quotes}


FAKE_FITTERS: dict[str, Any] = {
    "svi": lambda chain, fit: fit_quadratic(chain, **_settings(fit)),
    "ssvi": lambda chain, fit: fit_with_warning(chain, **_settings(fit)),
    "essvi": lambda chain, fit: fit_with_warning(chain, **_settings(fit)),
    "heston": lambda chain, fit: fit_failing(chain),
}
"""svi -> quadratic, ssvi/essvi -> quadratic with a ConvergenceWarning, heston -> raises."""


def use_fake_models(mp: pytest.MonkeyPatch) -> None:
    """Swap the job's model fitters for :data:`FAKE_FITTERS`."""
    from volcal import jobs

    for model, fitter in FAKE_FITTERS.items():
        mp.setitem(jobs.MODEL_FITTERS, model, fitter)


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job with :data:`FAKE_FITTERS` instead of the real models."""
    use_fake_models(monkeypatch)


def no_margin_config(tmp_path: Path) -> Path:
    """A volcal.toml that turns the standard margin books off."""
    path = tmp_path / "volcal.toml"
    path.write_text(NO_MARGIN_TOML, encoding="utf-8")
    return path
