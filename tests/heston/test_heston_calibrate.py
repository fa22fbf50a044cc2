"""Heston calibration: reference problems (QuantLib DAX, Cui et al. 2017), synthetic
surfaces, the wing guard, and the calibrator contract (deterministic, immutable, serialisable).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import OptimizeResult, least_squares

from volcal.errors import CalibrationError, ChainValidationError, ConvergenceWarning
from volcal.heston import (
    HestonCalibrator,
    HestonFit,
    HestonParams,
    HestonQuotes,
    ParameterError,
    fit_heston,
    heston_price,
)
from volcal.heston.calibrate import Engine, Objective, levenberg_marquardt

EQUITY = HestonParams(v0=0.08, kappa=3.0, theta=0.10, sigma=0.25, rho=-0.8)
CRYPTO = HestonParams(v0=0.36, kappa=2.0, theta=0.45, sigma=1.5, rho=-0.15)


def synthetic(truth: HestonParams, forward: float = 100.0) -> HestonQuotes:
    """The benchmark surface of shared/data/reference/README.md: 10 expiries x 15 strikes,
    K = F exp(z sqrt(theta T)), z in [-2.5, 2.5], r = 0.02, q = 0; OTM options priced by the
    fast pricer (validated against QuantLib in test_heston_pricer.py)."""
    days = np.array([7, 14, 30, 60, 91, 122, 182, 273, 365, 730])
    t = np.repeat(days / 365.0, 15)
    z = np.tile(np.linspace(-2.5, 2.5, 15), 10)
    f = forward * np.exp(0.02 * t)
    d = np.exp(-0.02 * t)
    strike = f * np.exp(z * np.sqrt(truth.theta * t))
    call = strike >= f
    price = heston_price(truth, f, strike, t, call, d)
    return HestonQuotes.from_arrays(f, strike, t, call, price=price, discount=d)


# -- reference problems ------------------------------------------------------------------------
@pytest.mark.realdata
@pytest.mark.parametrize("engine", ["fast", "quantlib"])
def test_dax_calibration_matches_quantlib(
    dax_quotes: HestonQuotes, dax_start: HestonParams, engine: Engine
) -> None:
    # QuantLib test-suite testDAXCalibration (A. Sepp's DAX data, 5 July 2002): published
    # SSE 177.2 +- 1.0 (vol points squared); QuantLib 1.44's AnalyticHestonEngine reaches
    # 177.233 at v0 0.19566, kappa 15.663, theta 0.074591, sigma 3.3619, rho -0.51149.
    # Measured: that point is the global minimum of this objective (a 256-candidate,
    # 32-start search finds nothing lower), so "<= 177.2" holds to the published precision.
    fit = fit_heston(dax_quotes, engine=engine, start=dax_start, global_stage="never")
    sse = float(np.sum((100.0 * fit.iv_error) ** 2))
    assert fit.n_used == 104
    assert fit.report.converged
    assert abs(sse - 177.2) <= 1.0
    assert sse <= 177.2334  # no worse than QuantLib 1.44 (177.2333)
    assert round(sse, 1) <= 177.2
    p = fit.params
    np.testing.assert_allclose(
        [p.v0, p.kappa, p.theta, p.sigma, p.rho],
        [0.19566, 15.663, 0.074591, 3.3619, -0.51149],
        rtol=2e-4,
    )


@pytest.mark.realdata
@pytest.mark.parametrize("engine", ["fast", "quantlib"])
@pytest.mark.parametrize("objective", ["price", "iv"])
def test_cui_recovers_true_parameters(
    cui_quotes: HestonQuotes,
    cui_truth_and_start: tuple[HestonParams, HestonParams],
    engine: Engine,
    objective: Objective,
) -> None:
    # Cui, del Baño Rollin, Germano (2017): recover the truth from their start point
    truth, start = cui_truth_and_start
    fit = fit_heston(
        cui_quotes,
        engine=engine,
        objective=objective,
        start=start,
        global_stage="never",
        ftol=1e-10,
        xtol=1e-10,
        gtol=1e-10,
    )
    assert fit.report.converged
    np.testing.assert_allclose(fit.params.to_array(), truth.to_array(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("truth", "start"),
    [
        (EQUITY, HestonParams(v0=0.04, kappa=1.0, theta=0.05, sigma=0.5, rho=-0.3)),
        (CRYPTO, HestonParams(v0=0.2, kappa=1.0, theta=0.2, sigma=0.7, rho=-0.5)),
    ],
    ids=["equity", "crypto"],
)
def test_synthetic_surface_recovers_truth(truth: HestonParams, start: HestonParams) -> None:
    fit = fit_heston(synthetic(truth), start=start, global_stage="never")
    assert fit.report.converged
    np.testing.assert_allclose(fit.params.to_array(), truth.to_array(), rtol=0, atol=1e-8)
    assert fit.rmse_iv < 1e-10


@pytest.mark.parametrize("truth", [EQUITY, CRYPTO], ids=["equity", "crypto"])
def test_levenberg_marquardt_and_trust_region_agree(truth: HestonParams) -> None:
    # the fast engine's default optimiser (volcal's LM) against SciPy's trf, same residuals
    start = HestonParams(v0=0.2, kappa=1.0, theta=0.2, sigma=0.7, rho=-0.5)
    quotes = synthetic(truth)
    lm = fit_heston(quotes, start=start, global_stage="never")
    trf = fit_heston(quotes, start=start, global_stage="never", optimizer="trf")
    for fit in (lm, trf):
        assert fit.report.converged
        np.testing.assert_allclose(fit.params.to_array(), truth.to_array(), rtol=0, atol=1e-8)
    assert isinstance(lm.report.raw, OptimizeResult) and lm.report.raw.jac.shape == (150, 5)
    assert lm.report.n_fev < trf.report.n_fev  # measured: 7 vs 12 (equity), 6 vs 8 (crypto)
    with pytest.raises(ParameterError, match="optimizer"):
        fit_heston(quotes, optimizer="newton")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="analytic Jacobian"):
        fit_heston(quotes, engine="quantlib", optimizer="lm")


def _rosenbrock(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])
    jac = np.array([[-20.0 * x[0], 10.0], [-1.0, 0.0]])
    return r, jac


@pytest.mark.parametrize(
    ("lo", "hi"),
    [([-2.0, -2.0], [2.0, 2.0]), ([-2.0, -2.0], [0.5, 2.0]), ([1.2, -2.0], [3.0, 0.9])],
    ids=["interior", "upper-bound", "two-bounds"],
)
def test_levenberg_marquardt_matches_scipy_on_bounded_rosenbrock(
    lo: list[float], hi: list[float]
) -> None:
    # reference: SciPy least_squares (trf) on the same bounded problem
    low, high = np.array(lo), np.array(hi)
    x0 = np.clip(np.array([-1.2, 1.0]), low + 1e-3, high - 1e-3)
    ours = levenberg_marquardt(_rosenbrock, x0, low, high, max_nfev=500)
    ref = least_squares(
        lambda x: _rosenbrock(x)[0],
        x0,
        jac=lambda x: _rosenbrock(x)[1],
        bounds=(low, high),
        ftol=1e-15,
        xtol=1e-15,
        gtol=1e-15,
    )
    assert ours.success and ours.status in (1, 2, 3, 4)
    np.testing.assert_allclose(ours.x, ref.x, rtol=0, atol=1e-7)
    assert ours.cost <= ref.cost + 1e-14
    assert np.all(ours.x >= low) and np.all(ours.x <= high)


def test_global_stage_runs_when_the_local_fit_is_poor() -> None:
    # The analytic-Jacobian trust region recovers the truth from every start tried (corners
    # of the bounds included), so a poor local fit is forced with a tiny evaluation budget.
    poor = HestonParams(v0=2.0, kappa=40.0, theta=3.0, sigma=0.05, rho=0.9)
    quotes = synthetic(CRYPTO)
    with pytest.warns(ConvergenceWarning):
        local = fit_heston(quotes, start=poor, global_stage="never", max_nfev=4)
    with pytest.warns(ConvergenceWarning):
        best = fit_heston(quotes, start=poor, max_nfev=4, seed=7, n_local_starts=4)
    assert local.report.n_starts == 1 and best.report.n_starts == 5
    assert "global stage" in best.report.message
    assert best.rmse_iv < 0.25 * local.rmse_iv


# -- wing guard --------------------------------------------------------------------------------
def test_far_wings_at_one_tick_do_not_steer_the_fit() -> None:
    # 1-week wings 8 sd out quoted at one tick (0.0001 coin): far above the model's premium
    base = synthetic(CRYPTO, forward=90_000.0)
    t = 7 / 365.0
    f = 90_000.0 * math.exp(0.02 * t)
    sd = math.sqrt(CRYPTO.v0 * t)
    strike = f * np.exp(np.array([-8.0, -7.0, 7.0, 8.0]) * sd)
    call = strike >= f
    tick = 1e-4 * f
    wings = HestonQuotes.from_arrays(
        f, strike, t, call, price=tick, discount=math.exp(-0.02 * t), tick=tick
    )
    fields = ("forward", "strike", "t", "call", "discount", "price", "iv", "weight", "tick")
    quotes = HestonQuotes(
        **{n: np.concatenate([getattr(base, n), getattr(wings, n)]) for n in fields}  # type: ignore[arg-type]
    )
    fit = fit_heston(quotes, start=CRYPTO.replace(v0=0.3, sigma=1.2), global_stage="never")
    assert not fit.used[-4:].any() and fit.used[:-4].all()
    np.testing.assert_allclose(fit.params.to_array(), CRYPTO.to_array(), rtol=0, atol=1e-8)
    # without the guard the wings drag the fit away
    unguarded = fit_heston(
        dataclasses.replace(quotes, tick=np.zeros(len(quotes))),
        start=CRYPTO.replace(v0=0.3, sigma=1.2),
        global_stage="never",
        min_vega=0.0,
    )
    assert unguarded.used.all()
    assert np.max(np.abs(unguarded.params.to_array() - CRYPTO.to_array())) > 1e-3


# -- options -----------------------------------------------------------------------------------
def test_feller_constraint_and_fixed_parameters() -> None:
    quotes = synthetic(CRYPTO)  # the truth violates Feller (ratio 0.8)
    fit = fit_heston(quotes, feller=True, global_stage="never")
    assert fit.params.feller_ratio >= 1.0 - 1e-12
    assert fit.rmse_iv > 1e-4  # the constraint binds
    fixed = fit_heston(quotes, fixed={"kappa": 2.0}, global_stage="never")
    assert fixed.params.kappa == 2.0
    np.testing.assert_allclose(fixed.params.to_array(), CRYPTO.to_array(), atol=1e-8)
    with pytest.raises(ParameterError):
        fit_heston(quotes, feller=True, fixed={"sigma": 1.0})
    with pytest.raises(ParameterError):
        fit_heston(quotes, engine="gpu")  # type: ignore[arg-type]


def test_non_convergence_is_a_warning() -> None:
    with pytest.warns(ConvergenceWarning):
        fit = fit_heston(synthetic(EQUITY), max_nfev=2, global_stage="never")
    assert not fit.report.converged
    assert "NOT CONVERGED" in fit.summary()


def test_too_few_quotes_is_a_calibration_error() -> None:
    quotes = synthetic(EQUITY).subset(np.arange(3))
    with pytest.raises(CalibrationError):
        fit_heston(quotes)


# -- inputs ------------------------------------------------------------------------------------
def chain_frame(truth: HestonParams) -> pd.DataFrame:
    """A Deribit-like chain table (docs/conventions.md): calls and puts at every strike, USD
    premiums, undiscounted, one filtered row."""
    q = synthetic(truth, forward=90_000.0)
    rows = []
    for i in range(len(q)):
        for call in (True, False):
            price = float(heston_price(truth, q.forward[i], q.strike[i], q.t[i], call))
            rows.append(
                {
                    "symbol": f"BTC-{i}-{'C' if call else 'P'}",
                    "t": q.t[i],
                    "strike": q.strike[i],
                    "call": call,
                    "forward": q.forward[i],
                    "discount": 1.0,
                    "mark_usd": price,
                    "usd_per_coin": q.forward[i],
                    "filter_reason": "",
                }
            )
    frame = pd.DataFrame(rows)
    frame.loc[0, "filter_reason"] = "crossed market"
    frame.loc[1, "mark_usd"] = math.nan  # falls back to the mid
    frame["bid_usd"] = frame["mark_usd"] * 0.999
    frame["ask_usd"] = frame["mark_usd"] * 1.001
    frame.loc[1, ["bid_usd", "ask_usd"]] = [math.nan, math.nan]
    return frame


def test_quotes_from_chain_frame_and_chain_like_object() -> None:
    frame = chain_frame(CRYPTO)
    quotes = HestonQuotes.from_frame(frame, tick_coin=1e-4)
    # OTM only, the filtered row and the row without any premium dropped
    assert len(quotes) == 150 - 1
    assert np.all(
        np.where(quotes.call, quotes.strike >= quotes.forward, quotes.strike < quotes.forward)
    )
    np.testing.assert_allclose(quotes.tick, 1e-4 * quotes.forward)
    assert quotes.symbol is not None and "BTC-0-C" not in quotes.symbol

    class Chain:
        def __init__(self, quotes: pd.DataFrame) -> None:
            self.quotes = quotes

    fit = fit_heston(Chain(frame), global_stage="never")
    assert fit.quotes == HestonQuotes.coerce(frame)
    np.testing.assert_allclose(fit.params.to_array(), CRYPTO.to_array(), rtol=0, atol=1e-6)
    with pytest.raises(ChainValidationError):
        HestonQuotes.coerce(42)
    with pytest.raises(ChainValidationError, match="strike"):
        HestonQuotes.from_arrays(1.0, -1.0, 1.0, True, iv=0.5)


# -- contract ----------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["fast", "quantlib"])
def test_contract(engine: Engine) -> None:
    quotes = synthetic(EQUITY).subset(slice(0, None, 3))
    calibrator = HestonCalibrator(
        engine=engine,
        global_stage="always",
        n_candidates=8,
        n_local_starts=1,
        seed=3,
    )
    first = calibrator.fit(quotes)
    second = calibrator.fit(quotes)
    assert first == second  # deterministic under a seed; fitting twice = fitting once
    assert first.report.raw is not None and first.report.n_starts == 2
    # immutable
    with pytest.raises(AttributeError):
        first.rmse_iv = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        first.model_iv[0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        first.quotes.strike[0] = 0.0
    # serialisable, with a schema version
    data = json.loads(json.dumps(first.to_dict()))
    assert data["schema"] == "volcal.HestonFit" and data["schema_version"] == 1
    again = HestonFit.from_dict(data)
    assert again == first
    assert again.report.raw is None
    with pytest.raises(ParameterError, match="schema_version"):
        HestonFit.from_dict({**data, "schema_version": 99})
    # summary renders
    text = first.summary()
    assert "rmse_iv" in text and "kappa" in text and engine in text
    # fix(): the same result type at given parameters
    fixed = calibrator.fix(first.params, quotes)
    np.testing.assert_allclose(fixed.model_price, first.model_price, rtol=1e-12)
    assert fixed.report.status == -2 and fixed.rmse_iv == pytest.approx(first.rmse_iv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed.summary()
    # the surface of the fit reproduces its implied vols
    surface = fixed.surface()
    np.testing.assert_allclose(
        surface.implied_vol(quotes.strike, quotes.t), fixed.model_iv, rtol=0, atol=1e-9
    )
