"""Margin parameter calibration: synthetic histories with known answers, and the real data."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from volcal.risk import (
    NODES_DAYS,
    VEGA_BUCKETS_DAYS,
    HistoryStats,
    MarginParams,
    calibrate_margin_params,
    history_stats,
)

DAILY_VOL = 0.6 / math.sqrt(365.0)
SSR_TRUE = 1.5
SKEW = -0.3
P_SHORT, P_LONG, S30 = 0.3, 0.13, 0.05


def _synthetic_stats(days: int = 2000, per_day: int = 4, seed: int = 7) -> HistoryStats:
    """Snapshots every 6 h: GBM forward (60 % vol), ATM vols = mean-reverting log noise with
    daily std S30 (30/d)^p, plus SSR_TRUE * skew * (a slowly forgotten sum of d ln F)."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    times = pd.Timestamp("2020-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 24 / per_day, "h")
    dlf = rng.standard_normal(n) * DAILY_VOL / math.sqrt(per_day)
    lf = np.log(80_000.0) + np.cumsum(dlf)
    u = np.zeros(n)
    for i in range(1, n):
        u[i] = 0.98 * u[i - 1] + dlf[i]
    table: dict[str, object] = {"as_of": times, "spot": np.exp(lf)}
    common = rng.standard_normal(n)
    for d in NODES_DAYS:
        s = S30 * (30 / d) ** (P_SHORT if d < 30 else P_LONG) / math.sqrt(per_day)
        x = np.zeros(n)
        for i in range(1, n):
            x[i] = 0.98 * x[i - 1] + s * common[i]
        table[f"atm_{d}"] = 0.5 * np.exp(x) + SSR_TRUE * SKEW * u
        table[f"skew_{d}"] = np.full(n, SKEW)
        table[f"fwd_{d}"] = np.exp(lf + 0.01 * d / 365)
    for b in range(len(VEGA_BUCKETS_DAYS)):
        table[f"hs_vol_{b}"] = np.full(n, 0.004 + 0.001 * b)
    table["turnover"] = np.full(n, 0.05)
    return HistoryStats(pd.DataFrame(table), "SYN")


@pytest.fixture(scope="module")
def synthetic() -> HistoryStats:
    return _synthetic_stats()


def test_price_range_is_normal_expected_shortfall(synthetic: HistoryStats) -> None:
    p = calibrate_margin_params(synthetic, 0.99, "1D", ewma_lambda=0.999, stress_weight=0.0)
    # closed form: ES_0.99 of N(0, s) is s * phi(z_0.99) / 0.01 = 2.6652 s (z = 2.3263)
    z = 2.3263478740408408
    es = DAILY_VOL * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) / 0.01
    var = DAILY_VOL * z
    assert p.price_range == pytest.approx(math.exp(es) - 1, rel=0.10)  # the up tail is wider
    assert p.price_range_mm == pytest.approx(math.exp(var) - 1, rel=0.10)
    assert p.horizon_days == 1.0 and p.confidence == 0.99


def test_vol_shock_shape_recovered(synthetic: HistoryStats) -> None:
    # a stationary history: no stress floor and a long EWMA memory leave the historical ES
    p = calibrate_margin_params(synthetic, 0.99, "1D", ewma_lambda=0.999, stress_weight=0.0)
    assert p.vol_shock.p_short == pytest.approx(P_SHORT, abs=0.06)
    assert p.vol_shock.p_long == pytest.approx(P_LONG, abs=0.06)
    # 30-day shock: ES of the ln-vol change (~2.67 x 5 %), as a relative move
    assert p.vol_shock.up_30d == pytest.approx(math.exp(2.6652 * S30) - 1, rel=0.25)
    assert p.vol_shock_mm.up_30d < p.vol_shock.up_30d


def test_ssr_recovered(synthetic: HistoryStats) -> None:
    p = calibrate_margin_params(synthetic, 0.99, "1D")
    assert p.ssr == pytest.approx(SSR_TRUE, abs=0.06)
    assert p.half_spread_vol == pytest.approx((0.004, 0.005, 0.006, 0.007, 0.008))
    assert p.turnover == pytest.approx(0.05)


def test_stress_floor_and_as_of(synthetic: HistoryStats) -> None:
    calm = calibrate_margin_params(synthetic, stress_weight=0.0)
    floored = calibrate_margin_params(synthetic, stress_weight=1.0)
    assert floored.price_range >= calm.price_range
    d = floored.diagnostics
    assert floored.price_range == pytest.approx(max(d["R_es_ewma"], d["R_es_stress"]))
    cut = synthetic.table["as_of"].iloc[400]
    early = calibrate_margin_params(synthetic, as_of=cut)
    assert pd.Timestamp(early.as_of) < cut
    with pytest.raises(ValueError, match="horizon returns"):
        calibrate_margin_params(synthetic, as_of=synthetic.table["as_of"].iloc[20])


def test_params_round_trip_and_sources(synthetic: HistoryStats) -> None:
    p = calibrate_margin_params(synthetic)
    d = p.to_dict()
    json.dumps(d)
    q = MarginParams.from_dict(d)
    assert q.price_range == p.price_range and q.vol_shock == p.vol_shock and q.ssr == p.ssr
    for name in (
        "price_range",
        "price_range_mm",
        "vol_shock",
        "vol_shock_mm",
        "ssr",
        "half_spread_vol",
        "spread_stress",
        "turnover",
        "future_half_spread",
    ):
        assert p.sources[name]
    assert "price_range" in p.summary()
    with pytest.raises(ValueError):
        MarginParams(
            price_range=1.5, price_range_mm=0.1, vol_shock=p.vol_shock, vol_shock_mm=p.vol_shock
        )


@pytest.mark.realdata
def test_calibration_on_deribit_history(btc_chains) -> None:  # type: ignore[no-untyped-def]
    chains = btc_chains
    stats = history_stats(chains)
    assert len(stats) == len(chains)
    # the 30-day forward is within 2 % of spot and ATM vols are plausible for BTC
    t = stats.table
    assert np.all(np.abs(t["fwd_30"] / t["spot"] - 1) < 0.02)
    assert t["atm_30"].between(0.2, 1.5).all()
    p = calibrate_margin_params(stats)
    # BTC daily vol of 2-3 %: the 99 % ES of a day is several percent, below the 16 % of the
    # exchange's grid; maintenance (VaR) below initial (ES)
    assert 0.03 < p.price_range < 0.16
    assert p.price_range_mm <= p.price_range
    assert 0 < p.vol_shock.down_30d < p.vol_shock.up_30d < 1  # vol spikes up more than down
    assert -1 <= p.ssr <= 3
    assert p.currency == "BTC" and p.diagnostics["n_returns"] > 400


def _two_regime_stats(c: float = 0.02, n1: int = 60, n: int = 121) -> HistoryStats:
    """Daily snapshots; every ATM vol's ln changes alternate in sign (negative on even
    days), magnitude ``c`` for the first ``n1`` changes and ``2c`` after."""
    times = pd.Timestamp("2021-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), "D")
    k = np.arange(n - 1)
    dv = np.where(k % 2 == 0, -1.0, 1.0) * np.where(k < n1, c, 2 * c)
    lv = np.log(0.5) + np.concatenate([[0.0], np.cumsum(dv)])
    lf = np.log(80_000.0) + 0.01 * np.sin(np.arange(n))
    table: dict[str, object] = {"as_of": times, "spot": np.exp(lf)}
    for d in NODES_DAYS:
        table[f"atm_{d}"] = np.exp(lv)
        table[f"skew_{d}"] = np.full(n, -0.3)
        table[f"fwd_{d}"] = np.exp(lf)
    for b in range(len(VEGA_BUCKETS_DAYS)):
        table[f"hs_vol_{b}"] = np.full(n, 0.005)
    table["turnover"] = np.full(n, 0.05)
    return HistoryStats(pd.DataFrame(table), "SYN")


def test_vol_shocks_ewma_scaled_hand_computation() -> None:
    """Filtered historical simulation of ln-vol changes, computed by hand.

    RiskMetrics EWMA (seeded with c^2, decay lam per day): v = c^2 through the calm regime;
    after m changes of size 2c, v = c^2 (lam^m + 4 (1 - lam^m)) = c^2 (4 - 3 lam^m). A change
    at the start of day k is scaled by sqrt(v_now / v_k), v_now = c^2 (4 - 3 lam^60).
    Down tail (negative changes on even days, m = 0, 2, 4, ...): every scaled regime-2
    change is larger than every calm one, so at 95 % the 6 smallest of 120 (np.quantile
    puts the 5 % point between the 6th and 7th) are m = 0, 2, ..., 10; up tail m = 1, ..., 11.
    """
    c, lam = 0.02, 0.94
    stats = _two_regime_stats(c)
    s_now = c * math.sqrt(4 - 3 * lam**60)

    def es(ms: list[int]) -> float:
        return float(np.mean([s_now * 2 * c / (c * math.sqrt(4 - 3 * lam**m)) for m in ms]))

    es_down = es([0, 2, 4, 6, 8, 10])
    es_up = es([1, 3, 5, 7, 9, 11])
    p = calibrate_margin_params(stats, 0.95, "1D", ewma_lambda=lam, stress_weight=0.0)
    node = p.diagnostics["vol_shock_by_node"]["30"]
    assert node["down_es"] == pytest.approx(1 - math.exp(-es_down), rel=1e-12)
    assert node["up_es"] == pytest.approx(math.exp(es_up) - 1, rel=1e-12)
    # unscaled, the historical ES would be the 2c changes: the EWMA scaling is what differs
    assert node["up_es_historical"] == pytest.approx(math.exp(2 * c) - 1, rel=1e-12)
    # stress window: any 30 days of the 2c regime, ES = 2c; floor max(E, 0.75 E + 0.25 S)
    w = 0.25
    q = calibrate_margin_params(stats, 0.95, "1D", ewma_lambda=lam, stress_weight=w)
    node = q.diagnostics["vol_shock_by_node"]["30"]
    assert node["down_es_stress"] == pytest.approx(1 - math.exp(-2 * c), rel=1e-12)
    floored = max(es_down, (1 - w) * es_down + w * 2 * c)
    assert node["down_es"] == pytest.approx(1 - math.exp(-floored), rel=1e-12)
    # identical nodes: the (30/DTE)^p fit is flat and returns the 30-day shock
    assert q.vol_shock.down_30d == pytest.approx(1 - math.exp(-floored), rel=1e-9)
    assert q.vol_shock.p_short == pytest.approx(0.0, abs=1e-9)


def test_vol_shocks_floor_binds_after_calm() -> None:
    """A calm present after a stressed past: the stress floor lifts the EWMA shock."""
    c = 0.02
    stats = _two_regime_stats(c)
    tab = stats.table.copy()
    # reverse time: stressed changes first, calm now
    for d in NODES_DAYS:
        tab[f"atm_{d}"] = tab[f"atm_{d}"].to_numpy()[::-1]
    rev = HistoryStats(tab, "SYN")
    calm = calibrate_margin_params(rev, 0.95, "1D", stress_weight=0.0)
    floored = calibrate_margin_params(rev, 0.95, "1D", stress_weight=0.25)
    e = -math.log(1 - calm.diagnostics["vol_shock_by_node"]["30"]["down_es"])
    assert e < 2 * c  # the EWMA has forgotten the 2c regime ...
    want = 0.75 * e + 0.25 * 2 * c  # ... and the floor brings a quarter of it back
    got = floored.diagnostics["vol_shock_by_node"]["30"]["down_es"]
    assert got == pytest.approx(1 - math.exp(-want), rel=1e-12)


def test_hill_tail_recovers_pareto_index() -> None:
    # exact Pareto(alpha = 3) above 1: P(X > x) = x**-3; the Hill estimator on the top 10 %
    # is unbiased for a pure power law with standard error alpha / sqrt(k) (k = 2000: 2.2 %)
    from volcal.risk.params import hill_tail

    rng = np.random.default_rng(3)
    x = rng.pareto(3.0, 20_000) + 1.0
    alpha, u, share = hill_tail(x, 0.1)
    assert alpha == pytest.approx(3.0, rel=0.07)  # 3 standard errors
    assert share == pytest.approx(0.1, abs=1e-4)
    # the fitted tail probability at 5 u against the true one: relative error ln(5) d_alpha,
    # within 3 standard errors ln(5) x 3 alpha / sqrt(k) = 0.32
    assert share * 5.0**-alpha == pytest.approx((5 * u) ** -3.0, rel=0.32)


def test_extended_weights_are_tail_probabilities(synthetic: HistoryStats) -> None:
    p = calibrate_margin_params(synthetic)
    d = p.diagnostics
    assert p.extended_weights is not None
    assert len(p.extended_weights) == len(p.extended_moves)
    # by hand from the diagnostics: a move m is ln(1+m) / sd standardised returns, sd today's
    # 1-day EWMA vol lifted by the stress floor's ratio R / R_ewma; P = share (x/u)^-alpha
    sd = d["ewma_vol_annual_now"] / math.sqrt(365.0) * p.price_range / d["R_es_ewma"]
    for m, w in zip(p.extended_moves, p.extended_weights, strict=True):
        alpha, u, share = d["hill_down"] if m < 0 else d["hill_up"]
        x = abs(math.log1p(m)) / sd
        assert x > u
        assert w == pytest.approx(min(1.0, share * (x / u) ** -alpha / 0.01), rel=1e-9)
    # a 60 % GBM has no 33 % day at 99 %: every extended move weighs far less than R/|m|
    assert all(
        w < p.price_range / abs(m) / 10
        for m, w in zip(p.extended_moves, p.extended_weights, strict=True)
    )
    ex = calibrate_margin_params(synthetic, extended_weighting="exchange")
    assert ex.extended_weights is None and ex.price_range == p.price_range
    with pytest.raises(ValueError, match="extended_weighting"):
        calibrate_margin_params(synthetic, extended_weighting="bogus")
    q = MarginParams.from_dict(p.to_dict())
    assert q.extended_weights == p.extended_weights


def test_calibration_uses_only_data_before_as_of(synthetic: HistoryStats) -> None:
    cut = synthetic.table["as_of"].iloc[1500]
    a = calibrate_margin_params(synthetic, as_of=cut)
    # the same history with everything from the cut on replaced by a crash: nothing changes
    tab = synthetic.table.copy()
    later = tab["as_of"] >= cut
    for c in tab.columns:
        if c != "as_of":
            tab.loc[later, c] = tab.loc[later, c].to_numpy() * 0.3
    b = calibrate_margin_params(HistoryStats(tab, synthetic.underlying), as_of=cut)
    assert a.to_dict() == b.to_dict()
    # and it differs from a calibration that sees the crash
    assert calibrate_margin_params(HistoryStats(tab, "SYN")).price_range > a.price_range


def test_confidence_scale_is_the_conformal_quantile() -> None:
    from volcal.risk.params import confidence_scale

    # n = 199 scores 1..199: the ceil(200 x 0.99) = 198-th smallest
    assert confidence_scale(np.arange(1.0, 200.0), 0.99) == 198.0
    # fewer than 99 scores: not enough for a 99 % quantile
    assert math.isnan(confidence_scale(np.arange(1.0, 99.0), 0.99))
    assert confidence_scale(np.arange(1.0, 100.0), 0.99) == 99.0
    # finite-sample guarantee (Angelopoulos and Bates 2021, thm. 1): for iid continuous scores
    # the coverage of a new score is exactly k / (n + 1) = 0.99 in expectation
    rng = np.random.default_rng(11)
    cov = []
    for _ in range(4000):
        s = rng.exponential(size=200)
        c = confidence_scale(s[:199], 0.99)
        cov.append(s[199] <= c)
    # binomial standard error sqrt(0.99 x 0.01 / 4000) = 0.0016
    assert np.mean(cov) == pytest.approx(0.99, abs=0.005)
