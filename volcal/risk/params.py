"""Margin parameters, calibrated from a history of chains.

:func:`calibrate_margin_params` returns a frozen :class:`MarginParams`; each field's
provenance is in ``MarginParams.sources`` and the numbers behind it in ``diagnostics``.

* **Price scan range** ``R`` (relative move of the forward): horizon log-returns of the 30-day
  constant-maturity forward over the lookback, filtered historical simulation: each return is
  divided by the EWMA vol at its start (RiskMetrics, decay ``ewma_lambda`` per day) and
  multiplied by today's EWMA vol. ``R_ewma`` is the larger of the two tails' expected
  shortfall at ``confidence`` (as a relative move: ``1 - exp(-ES_down)``, ``exp(ES_up) - 1``).
  Anti-procyclicality: ``R = max(R_ewma, (1 - w) R_ewma + w R_stress)`` with ``R_stress`` the ES
  of the *unscaled* returns of the most volatile 30-day window and ``w = stress_weight`` (25 %
  as in EMIR RTS 153/2013 art. 28(1)(b)). The maintenance range uses VaR instead of ES.
* **Vol shocks**: horizon changes of ``ln sigma_ATM`` at the constant maturities, filtered
  historical simulation as for the range: each change is multiplied by
  ``sqrt(v_now / v_start)``, ``v`` the EWMA variance (decay ``ewma_lambda`` per day) of that
  maturity's ``ln sigma_ATM`` changes; ES of the up and down tails per maturity with the same
  floor ``max(x_ewma, (1 - w) x_ewma + w x_stress)``, ``x_stress`` the ES of the unscaled
  changes in the most volatile ``stress_window`` of the 30-day maturity's changes (one window
  for all maturities, so the term-structure shape stays one period's); fitted as
  ``shock(DTE) = x_30d (30/DTE)**p`` with one exponent below and one above 30 days (least
  squares in logs, exponents clipped to ``[0, 1]``); maintenance with VaR.
* **SSR**: ``sum(x y) / sum(x x)`` over consecutive snapshots and maturities 7-90 days, with
  ``y = d sigma_ATM`` and ``x = skew * d ln F`` (the regression of ATM vol changes on log
  forward changes, in units of the ATM skew; Bergomi 2016, ch. 9), clipped to ``[-1, 3]``.
* **Extended moves** (``extended_weighting="tail"``, the default): each extended move ``m``
  of the portfolio-margin grid counts its loss times ``min(1, P(move beyond m) / (1 -
  confidence))``, the probability from the EWMA-standardised horizon returns with a Hill
  power-law tail above their 90 % quantile (conditional EVT, McNeil and Frey 2000), scaled to
  today's EWMA vol lifted by the stress floor. ``"exchange"`` keeps the exchange's ``R/|m|``.
* **Confidence scale**: a multiplier of the risk margin ``max(scenario, greek)``: from
  filtered historical simulation of a pool of books (:mod:`volcal.risk.fhs`, the daily job's
  rule) or from past realised losses of margined books (:func:`confidence_scale`,
  split-conformal quantile of ``(loss - liquidity) / risk``); 1 as calibrated here.
* **Liquidity**: per vega bucket the median over the lookback of each snapshot's median
  half-spread in vol (two-sided out-of-the-money quotes), used when a position has no
  two-sided quote; ``spread_stress`` the ``confidence`` quantile of the ratio of the 30-day
  bucket's half-spread over the horizon (spreads widen when closing out); ``turnover`` the
  median of 24 h volume / open interest, which sets the size one day's trading absorbs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.risk.history import NODES_DAYS, VEGA_BUCKETS_DAYS, history_stats
from volcal.risk.scenarios import DEFAULT_EXTENDED_MOVES, VolShock

__all__ = [
    "MarginParams",
    "calibrate_margin_params",
    "confidence_scale",
    "deribit_pm_params",
    "hill_tail",
]

FloatArray = npt.NDArray[np.float64]
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class MarginParams:
    """Everything the margin calculation needs besides positions, surface and chain.

    Attributes
    ----------
    price_range:
        ``R`` of the initial-margin grids, relative forward move (0.1 = +-10 %), in (0, 1).
    price_range_mm:
        ``R`` of the maintenance-margin grids (<= ``price_range`` when calibrated).
    vol_shock, vol_shock_mm:
        Relative vol shocks by tenor for initial and maintenance margin.
    ssr:
        Skew stickiness ratio of the smile dynamic (1 sticky strike, 0 sticky moneyness).
    horizon_days:
        Margin period of risk (days); scenarios let this much time pass.
    confidence:
        Confidence level of the calibration (e.g. 0.99).
    half_spread_vol:
        Fallback half-spread in vol (decimal) per bucket of :data:`VEGA_BUCKETS_DAYS`.
    spread_stress:
        Multiplier of the close-out half-spread (>= 1).
    turnover:
        Fraction of open interest traded per day; the size ``turnover * OI`` closes at the
        half-spread, larger sizes cost ``sqrt(size / (turnover * OI))`` times more.
    future_half_spread:
        Relative half-spread of futures (fraction of price).
    extended_moves:
        Extended relative moves of the portfolio-margin grid (those beyond ``price_range``
        are used, at unchanged vol); ``()`` for none.
    extended_weight_exponent:
        ``q >= 0``: an extended move ``m`` counts its loss times ``(R / |m|)**q``. ``1`` (the
        default) is the exchange's ``R/|m|`` of issue 6; a coin-settled desk may prefer ``2``
        (see ``docs/margin.md``: on inverse books ``R/|m|`` makes the -66 % move set the
        margin of every short put); ``inf`` drops the extended moves.
    extended_weights:
        Explicit weight of each of ``extended_moves`` (same order; from
        :func:`calibrate_margin_params` with ``extended_weighting="tail"``: the move's tail
        probability over ``1 - confidence``, at most 1); None uses ``(R/|m|)**q``.
    confidence_scale:
        Multiplier ``c > 0`` of the risk margin: ``initial = c max(scenario, greek) +
        liquidity`` (maintenance likewise); 1 unless calibrated, by
        :func:`volcal.risk.fhs.fhs_confidence_scale` (simulated losses of a pool of books
        under filtered historical scenarios; the daily job) or by :func:`confidence_scale`
        (past realised losses of margined books; the backtest).
    hull_white:
        ``(a, b, c)`` of Hull & White's minimum-variance delta
        (:class:`volcal.risk.hull_white.HullWhiteDelta`, e.g. from
        :func:`~volcal.risk.hull_white.hull_white_from_chains`) for the delta add-on; None (the
        default) uses the surface-dynamic form ``delta + vega sigma_F`` with ``ssr``.
    currency:
        Coin the parameters were calibrated on ("" if not calibrated).
    as_of:
        Last instant of the data used (ISO string, "" if not calibrated).
    sources:
        Where each parameter comes from, by field name.
    diagnostics:
        Numbers behind the calibration (sample sizes, EWMA vols, per-tenor shocks, ...).
    """

    price_range: float
    price_range_mm: float
    vol_shock: VolShock
    vol_shock_mm: VolShock
    ssr: float = 1.0
    horizon_days: float = 1.0
    confidence: float = 0.99
    half_spread_vol: tuple[float, ...] = (0.013, 0.007, 0.0045, 0.0045, 0.004)
    spread_stress: float = 1.0
    turnover: float = 0.07
    future_half_spread: float = 1e-4
    extended_moves: tuple[float, ...] = DEFAULT_EXTENDED_MOVES
    extended_weight_exponent: float = 1.0
    extended_weights: tuple[float, ...] | None = None
    confidence_scale: float = 1.0
    hull_white: tuple[float, float, float] | None = None
    currency: str = ""
    as_of: str = ""
    sources: dict[str, str] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("price_range", "price_range_mm"):
            v = getattr(self, name)
            if not (0 < v < 1):
                raise ValueError(f"MarginParams.{name} must be in (0, 1), got {v}")
        if not np.isfinite(self.ssr):
            raise ValueError(f"MarginParams.ssr must be finite, got {self.ssr}")
        if len(self.half_spread_vol) != len(VEGA_BUCKETS_DAYS):
            raise ValueError(f"half_spread_vol needs {len(VEGA_BUCKETS_DAYS)} buckets")
        if not (self.horizon_days >= 0 and 0 < self.confidence < 1 and self.spread_stress >= 1):
            raise ValueError(
                "MarginParams needs horizon_days >= 0, 0 < confidence < 1, spread_stress >= 1"
            )
        if not (self.turnover > 0):
            raise ValueError(f"MarginParams.turnover must be > 0, got {self.turnover}")
        if not (self.extended_weight_exponent >= 0):
            raise ValueError(
                "MarginParams.extended_weight_exponent must be >= 0, got "
                f"{self.extended_weight_exponent}"
            )
        if self.extended_weights is not None and (
            len(self.extended_weights) != len(self.extended_moves)
            or any(not (0 <= w <= 1e6) for w in self.extended_weights)
        ):
            raise ValueError(
                "MarginParams.extended_weights needs one weight >= 0 per extended move: "
                f"{self.extended_weights} for {self.extended_moves}"
            )
        if not (self.confidence_scale > 0 and np.isfinite(self.confidence_scale)):
            raise ValueError(
                f"MarginParams.confidence_scale must be finite and > 0, got {self.confidence_scale}"
            )
        if any(not (m > -1 and np.isfinite(m)) for m in self.extended_moves):
            raise ValueError(f"MarginParams.extended_moves must be > -1: {self.extended_moves}")

    @property
    def horizon_years(self) -> float:
        """Horizon in years (ACT/365F)."""
        return self.horizon_days / 365.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with a schema version."""
        d = asdict(self)
        d["half_spread_vol"] = list(self.half_spread_vol)
        d["extended_moves"] = list(self.extended_moves)
        if self.extended_weights is not None:
            d["extended_weights"] = list(self.extended_weights)
        d["schema_version"] = SCHEMA_VERSION
        return json.loads(json.dumps(d, default=_jsonable))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarginParams:
        """Inverse of :meth:`to_dict`."""
        d = {k: v for k, v in data.items() if k != "schema_version"}
        d["vol_shock"] = VolShock(**d["vol_shock"])
        d["vol_shock_mm"] = VolShock(**d["vol_shock_mm"])
        d["half_spread_vol"] = tuple(d["half_spread_vol"])
        if d.get("hull_white") is not None:
            a, b, c = (float(x) for x in d["hull_white"])
            d["hull_white"] = (a, b, c)
        if "extended_moves" in d:
            d["extended_moves"] = tuple(float(x) for x in d["extended_moves"])
        if d.get("extended_weights") is not None:
            d["extended_weights"] = tuple(float(x) for x in d["extended_weights"])
        return cls(**d)

    def summary(self) -> str:
        """Text summary, one parameter per line with its source."""
        lines = [
            f"MarginParams {self.currency} as of {self.as_of or '-'} "
            f"(confidence {self.confidence:g}, horizon {self.horizon_days:g} d)"
        ]
        vs, vm = self.vol_shock, self.vol_shock_mm
        rows = [
            ("price_range", f"{self.price_range:.4f} (MM {self.price_range_mm:.4f})"),
            (
                "vol_shock",
                f"up {vs.up_30d:.3f} down {vs.down_30d:.3f} at 30d, p {vs.p_short:.2f}"
                f"/{vs.p_long:.2f} (MM up {vm.up_30d:.3f} down {vm.down_30d:.3f})",
            ),
            ("ssr", f"{self.ssr:.3f}"),
            ("half_spread_vol", ", ".join(f"{x:.4f}" for x in self.half_spread_vol)),
            ("spread_stress", f"{self.spread_stress:.3f}"),
            ("turnover", f"{self.turnover:.4f}"),
            ("future_half_spread", f"{self.future_half_spread:g}"),
            (
                "extended_weight_exponent",
                (
                    f"(R/|m|)^{self.extended_weight_exponent:g} on moves "
                    if self.extended_weights is None
                    else "tail-probability weights on moves "
                )
                + ", ".join(f"{m:+.0%}" for m in self.extended_moves),
            ),
            ("confidence_scale", f"{self.confidence_scale:.3f}"),
        ]
        for name, text in rows:
            lines.append(f"  {name:24s} {text:50s} [{self.sources.get(name, 'default')}]")
        return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def deribit_pm_params(horizon_days: float = 0.0) -> MarginParams:
    """The reference grid of issue 6 with the exchange's own parameters.

    +-16 % in 9 points; relative vol shocks up 0.5 / down 0.25 scaled by ``(30/DTE)**p``
    (``p`` = 0.30 under 30 days, 0.13 above); up-shocked vol at least 50 % (our reading of
    the "50 % floor"); sticky strike (``ssr = 1``). Maintenance = the same grid.
    """
    shock = VolShock(0.5, 0.25, p_short=0.30, p_long=0.13, up_floor=0.5)
    src = "Deribit portfolio margin parameters as given in issue 6"
    return MarginParams(
        price_range=0.16,
        price_range_mm=0.16,
        vol_shock=shock,
        vol_shock_mm=shock,
        ssr=1.0,
        horizon_days=horizon_days,
        sources={k: src for k in ("price_range", "vol_shock", "ssr")},
    )


# ---------------------------------------------------------------------------------------------
# calibration


def _tail(x: FloatArray, alpha: float) -> tuple[float, float, float, float]:
    """``(VaR_down, ES_down, VaR_up, ES_up)`` of a sample (as positive magnitudes)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (np.nan,) * 4
    q_lo, q_hi = np.quantile(x, [1 - alpha, alpha])
    es_lo = -float(np.mean(x[x <= q_lo]))
    es_hi = float(np.mean(x[x >= q_hi]))
    return -float(q_lo), es_lo, float(q_hi), es_hi


def _horizon_pairs(
    times: pd.Series, horizon: pd.Timedelta
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Indices ``(i, j)``: ``j`` the first snapshot at least ``horizon`` after ``i`` (within
    1.5 horizons)."""
    ns = pd.DatetimeIndex(times).as_unit("ns").asi8.astype(np.int64)
    h = horizon.value
    j = np.searchsorted(ns, ns + h, side="left")
    ok = j < ns.size
    i = np.nonzero(ok)[0]
    j = j[ok]
    keep = (ns[j] - ns[i]) <= 1.5 * h
    return i[keep], j[keep]


def _ewma_variance(logp: FloatArray, days: FloatArray, lam: float) -> FloatArray:
    """EWMA variance per day at each snapshot (uses returns up to and including it)."""
    r = np.diff(logp)
    dt = np.diff(days)
    ok = np.isfinite(r) & (dt > 0)
    seed = r[ok][:10] ** 2 / dt[ok][:10] if ok.any() else np.array([np.nan])
    v = np.empty(logp.size)
    v[0] = float(np.mean(seed))
    for n in range(1, logp.size):
        if ok[n - 1]:
            decay = lam ** dt[n - 1]
            v[n] = decay * v[n - 1] + (1 - decay) * r[n - 1] ** 2 / dt[n - 1]
        else:
            v[n] = v[n - 1]
    return v


def _most_volatile_window(
    start_days: FloatArray, x: FloatArray, win: float
) -> npt.NDArray[np.bool_]:
    """Mask of the observations in the ``win``-day window (starting on a whole day of
    ``start_days``) where the standard deviation of ``x`` is largest; windows need 10 finite
    observations and to cover 80 % of ``win``. All observations when no window qualifies."""
    best, best_vol = np.ones(start_days.size, dtype=bool), -1.0
    ok = np.isfinite(x)
    for start in np.unique(np.floor(start_days)):
        sel = (start_days >= start) & (start_days < start + win) & ok
        if sel.sum() >= 10 and start_days[sel].max() - start >= 0.8 * win:
            v = float(np.std(x[sel]))
            if v > best_vol:
                best, best_vol = sel, v
    return best


def _floored(x_ewma: float, x_stress: float, w: float) -> float:
    """Anti-procyclicality floor ``max(x, (1 - w) x + w x_stress)`` (EMIR RTS 153/2013
    art. 28(1)(b)); the EWMA value alone when the stress value is not finite."""
    if not np.isfinite(x_stress):
        return x_ewma
    return max(x_ewma, (1 - w) * x_ewma + w * x_stress)


def _fit_shock_shape(dte: FloatArray, up: FloatArray, down: FloatArray) -> tuple[float, ...]:
    """Least squares of ``ln x = ln x30_side + p_s max(L, 0) + p_l min(L, 0)``,
    ``L = ln(30/DTE)``; returns ``(up_30, down_30, p_short, p_long)``."""
    rows, y = [], []
    for side, vals in ((0, up), (1, down)):
        for d, v in zip(dte, vals, strict=True):
            if np.isfinite(v) and v > 0:
                L = np.log(30.0 / d)
                rows.append([1.0 - side, float(side), max(L, 0.0), min(L, 0.0)])
                y.append(np.log(v))
    a, b = np.asarray(rows), np.asarray(y)
    coef = np.linalg.lstsq(a, b, rcond=None)[0]
    return (
        float(np.exp(coef[0])),
        float(np.exp(coef[1])),
        float(np.clip(coef[2], 0.0, 1.0)),
        float(np.clip(coef[3], 0.0, 1.0)),
    )


def hill_tail(x: FloatArray, tail_fraction: float = 0.1) -> tuple[float, float, float]:
    """Hill estimator of a power-law upper tail, ``P(X > x) = share (x / u)**-alpha`` for
    ``x >= u`` (Hill 1975; McNeil and Frey 2000 apply it to volatility-standardised returns).

    Parameters
    ----------
    x:
        Sample (NaNs ignored); the upper tail is fitted.
    tail_fraction:
        Share of the sample in the tail: ``k = max(5, round(tail_fraction n))`` largest values
        above the threshold ``u``, the ``(k+1)``-th largest.

    Returns
    -------
    (alpha, u, share)
        Tail index (clipped to ``[1, 10]``), threshold and ``k / n``; NaNs when fewer than
        ``k + 1`` finite values or ``u <= 0``.
    """
    v = np.sort(np.asarray(x, dtype=float)[np.isfinite(x)])[::-1]
    n = v.size
    k = max(5, round(tail_fraction * n))
    if n < k + 1 or v[k] <= 0:
        return float("nan"), float("nan"), float("nan")
    u = float(v[k])
    alpha = k / float(np.sum(np.log(v[:k] / u)))
    return float(np.clip(alpha, 1.0, 10.0)), u, k / n


def _tail_probability(x: float, fit: tuple[float, float, float], sample: FloatArray) -> float:
    """``P(X > x)``: the Hill tail beyond its threshold, the empirical share below it."""
    alpha, u, share = fit
    if not np.isfinite(alpha) or x <= u:
        ok = sample[np.isfinite(sample)]
        return float(np.mean(ok > x)) if ok.size else 1.0
    return float(share * (x / u) ** -alpha)


def confidence_scale(
    scores: npt.ArrayLike, confidence: float = 0.99, *, min_scale: float = 1e-3
) -> float:
    """Multiplier of the risk margin so that past realised losses are covered at
    ``confidence`` (split-conformal quantile).

    ``scores`` are past book-days' ``(realised loss - liquidity add-on) / risk margin``
    (risk = ``max(scenario, greek)`` at scale 1); the margin ``c risk + liquidity`` covers a
    loss exactly when its score is ``<= c``. ``c`` is the ``ceil((n + 1) confidence)``-th
    smallest of the ``n`` scores: for exchangeable scores a new one is ``<= c`` with
    probability at least ``confidence`` (Vovk, Gammerman and Shafer 2005; Angelopoulos and
    Bates 2021, "A gentle introduction to conformal prediction", sec. 1).

    Returns
    -------
    float
        ``max(c, min_scale)``, or NaN when ``n < ceil((n + 1) confidence)`` (fewer than
        ``confidence / (1 - confidence)`` scores, 99 at 99 %): the caller keeps scale 1.
    """
    x = np.asarray(scores, dtype=float)
    x = np.sort(x[np.isfinite(x)])
    n = x.size
    k = int(np.ceil((n + 1) * confidence - 1e-9))
    if n == 0 or k > n:
        return float("nan")
    return float(max(x[k - 1], min_scale))


def calibrate_margin_params(
    history: Any,
    confidence: float = 0.99,
    horizon: pd.Timedelta | str | float = "1D",
    *,
    currency: str | None = None,
    as_of: object = None,
    lookback: pd.Timedelta | str | None = None,
    ewma_lambda: float = 0.94,
    stress_weight: float = 0.25,
    stress_window: pd.Timedelta | str = "30D",
    extended_weighting: str = "tail",
) -> MarginParams:
    """Calibrate margin parameters from a history of option chains.

    Parameters
    ----------
    history:
        Chains of one underlying (oldest first), a path or DataFrame that
        :func:`volcal.load_snapshot` reads (give ``currency``), or a :class:`HistoryStats`.
    confidence:
        Tail probability level of ES and VaR (0.99).
    horizon:
        Margin period of risk: a Timedelta, a pandas offset string, or days as a float.
    currency:
        Coin to load when ``history`` is a path or DataFrame.
    as_of:
        Use only snapshots strictly before this instant (default: all).
    lookback:
        Use only snapshots within this window before the last one (default: all).
    ewma_lambda:
        EWMA decay per day (RiskMetrics 0.94).
    stress_weight:
        Weight of the stressed range in the anti-procyclicality floor.
    stress_window:
        Length of the stress window (the most volatile such window of the lookback).
    extended_weighting:
        ``"tail"`` (default): each extended move's loss counts ``min(1, P / (1 -
        confidence))`` with ``P`` its probability over the horizon from a Hill tail of the
        EWMA-standardised returns (at today's EWMA vol times the stress floor's lift
        ``R / R_ewma``); ``"exchange"``: the exchange's ``R/|m|``.

    Returns
    -------
    MarginParams

    Raises
    ------
    ValueError
        When fewer than 20 horizon returns are available.
    """
    stats = history_stats(history, currency)
    if as_of is not None:
        stats = stats.before(as_of)
    tab = stats.table
    if lookback is not None and len(tab):
        start = tab["as_of"].iloc[-1] - pd.Timedelta(lookback)
        tab = tab[tab["as_of"] >= start].reset_index(drop=True)
    hz = (
        pd.Timedelta(days=float(horizon))
        if isinstance(horizon, (int, float))
        else pd.Timedelta(horizon)
    )
    h_days = hz / pd.Timedelta(days=1)
    alpha = confidence
    times = tab["as_of"]
    days = (
        (
            (
                pd.DatetimeIndex(times).as_unit("ns").asi8
                - pd.DatetimeIndex(times).as_unit("ns").asi8[0]
            )
            / 86_400e9
        ).astype(float)
        if len(tab)
        else np.zeros(0)
    )
    fwd = tab["fwd_30"].to_numpy(dtype=float) if len(tab) else np.zeros(0)
    fwd = np.where(np.isfinite(fwd), fwd, tab["spot"].to_numpy(dtype=float) if len(tab) else fwd)
    logp = np.log(fwd)
    i, j = _horizon_pairs(times, hz)
    if i.size < 20:
        raise ValueError(f"calibrate_margin_params: {i.size} horizon returns (< 20) in the history")
    span = days[j] - days[i]
    r = (logp[j] - logp[i]) * np.sqrt(h_days / span)
    var_day = _ewma_variance(logp, days, ewma_lambda)
    z = r / np.sqrt(var_day[i] * h_days)
    r_fhs = z * np.sqrt(var_day[-1] * h_days)
    var_lo, es_lo, var_hi, es_hi = _tail(r_fhs, alpha)
    R_es_ewma = max(1 - np.exp(-es_lo), np.exp(es_hi) - 1)
    R_var_ewma = max(1 - np.exp(-var_lo), np.exp(var_hi) - 1)
    # stress window: the most volatile stress_window of the lookback, unscaled returns
    win = pd.Timedelta(stress_window) / pd.Timedelta(days=1)
    best = _most_volatile_window(days[i], r, win)
    s_var_lo, s_es_lo, s_var_hi, s_es_hi = _tail(r[best], alpha)
    R_es_stress = max(1 - np.exp(-s_es_lo), np.exp(s_es_hi) - 1)
    R_var_stress = max(1 - np.exp(-s_var_lo), np.exp(s_var_hi) - 1)
    R_es = max(R_es_ewma, (1 - stress_weight) * R_es_ewma + stress_weight * R_es_stress)
    R_var = max(R_var_ewma, (1 - stress_weight) * R_var_ewma + stress_weight * R_var_stress)

    # extended moves: probability of each over the horizon (Hill tails of the standardised
    # returns, today's EWMA vol lifted by the stress floor), weight min(1, P / (1 - alpha))
    if extended_weighting not in ("tail", "exchange"):
        raise ValueError(
            f"extended_weighting must be 'tail' or 'exchange', got {extended_weighting!r}"
        )
    sd_now = float(np.sqrt(var_day[-1] * h_days)) * (R_es / R_es_ewma if R_es_ewma > 0 else 1.0)
    fit_dn, fit_up = hill_tail(-z), hill_tail(z)
    ext_moves: tuple[float, ...] = DEFAULT_EXTENDED_MOVES
    ext_prob = []
    for m in ext_moves:
        zm = float(np.log1p(m)) / sd_now
        ext_prob.append(
            _tail_probability(-zm, fit_dn, -z) if zm < 0 else _tail_probability(zm, fit_up, z)
        )
    ext_w = tuple(float(min(1.0, p / (1 - alpha))) for p in ext_prob)

    # vol shocks by tenor: filtered historical simulation of ln ATM vol changes (each change
    # scaled by today's EWMA vol of that node's changes over the EWMA vol at its start), with
    # the stress floor of the unscaled changes in the 30-day node's most volatile window
    dvs: dict[int, FloatArray] = {}
    z_vol: dict[int, FloatArray] = {}
    for d in NODES_DAYS:
        lv = np.log(tab[f"atm_{d}"].to_numpy(dtype=float))
        dvs[d] = (lv[j] - lv[i]) * np.sqrt(h_days / span)
        var_v = _ewma_variance(lv, days, ewma_lambda)
        scale = np.sqrt(
            np.divide(var_v[-1], var_v[i], out=np.full(i.size, np.nan), where=var_v[i] > 0)
        )
        z_vol[d] = np.where(dvs[d] == 0.0, 0.0, dvs[d] * scale)
    vol_best = _most_volatile_window(days[i], dvs[30], win)
    ups, downs, ups_var, downs_var, per_node = [], [], [], [], {}
    for d in NODES_DAYS:
        e = _tail(z_vol[d], alpha)
        s = _tail(dvs[d][vol_best], alpha)
        # per tail: max(x_ewma, (1 - w) x_ewma + w x_stress), as for the price range
        fl = [_floored(e[n], s[n], stress_weight) for n in range(4)]
        vl, el, vh, eh = fl
        ups.append(np.exp(eh) - 1)
        downs.append(1 - np.exp(-el))
        ups_var.append(np.exp(vh) - 1)
        downs_var.append(1 - np.exp(-vl))
        per_node[str(d)] = {
            "up_es": ups[-1],
            "down_es": downs[-1],
            "up_var": ups_var[-1],
            "down_var": downs_var[-1],
            "up_es_ewma": float(np.exp(e[3]) - 1),
            "down_es_ewma": float(1 - np.exp(-e[1])),
            "up_es_stress": float(np.exp(s[3]) - 1),
            "down_es_stress": float(1 - np.exp(-s[1])),
            "up_es_historical": float(np.exp(_tail(dvs[d], alpha)[3]) - 1),
            "n": int(np.isfinite(dvs[d]).sum()),
        }
    dte = np.asarray(NODES_DAYS, dtype=float)
    u30, d30, ps, pl = _fit_shock_shape(dte, np.asarray(ups), np.asarray(downs))
    u30m, d30m, psm, plm = _fit_shock_shape(dte, np.asarray(ups_var), np.asarray(downs_var))
    shock = VolShock(u30, min(d30, 0.9), ps, pl)
    shock_mm = VolShock(u30m, min(d30m, 0.9), psm, plm)

    # SSR from consecutive snapshots
    xs, ys, dl = [], [], []
    gap = np.diff(days)
    for d in (7, 14, 30, 60, 90):
        atm = tab[f"atm_{d}"].to_numpy(dtype=float)
        sk = tab[f"skew_{d}"].to_numpy(dtype=float)
        lf = np.log(tab[f"fwd_{d}"].to_numpy(dtype=float))
        dlf = np.diff(lf)
        x = sk[:-1] * dlf
        y = np.diff(atm)
        ok = np.isfinite(x) & np.isfinite(y) & (gap < 0.75)
        xs.append(x[ok])
        ys.append(y[ok])
        dl.append(dlf[ok])
    x, y = np.concatenate(xs), np.concatenate(ys)
    ssr_raw = float(np.sum(x * y) / np.sum(x * x)) if x.size else 1.0
    resid = y - ssr_raw * x
    r2 = float(1 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2)) if x.size > 1 else np.nan
    dlf_all = np.concatenate(dl)
    beta = float(np.sum(y * dlf_all) / np.sum(dlf_all**2)) if x.size else np.nan
    ssr = float(np.clip(ssr_raw, -1.0, 3.0))

    # liquidity
    hs = tuple(
        float(np.nanmedian(tab[f"hs_vol_{b}"])) if np.isfinite(tab[f"hs_vol_{b}"]).any() else dflt
        for b, dflt in enumerate(MarginParams.__dataclass_fields__["half_spread_vol"].default)  # type: ignore[arg-type]
    )
    hs30 = tab["hs_vol_1"].to_numpy(dtype=float)
    ratio = hs30[j] / hs30[i]
    ratio = ratio[np.isfinite(ratio)]
    spread_stress = float(max(1.0, np.quantile(ratio, alpha))) if ratio.size else 1.0
    turnover = float(np.nanmedian(tab["turnover"])) if np.isfinite(tab["turnover"]).any() else 0.07

    n_src = f"{len(tab)} snapshots {times.iloc[0]:%Y-%m-%d} .. {times.iloc[-1]:%Y-%m-%d}"
    sources = {
        "price_range": f"ES {alpha:g} of {i.size} {h_days:g}-day log-returns of the 30-day "
        f"forward, EWMA-scaled (lambda {ewma_lambda}), 25%-weighted stress floor; {n_src}",
        "price_range_mm": f"VaR {alpha:g}, same returns",
        "vol_shock": f"ES {alpha:g} of {h_days:g}-day changes of ln ATM vol at {NODES_DAYS} days, "
        f"EWMA-scaled per tenor (lambda {ewma_lambda}), {stress_weight:.0%}-weighted stress "
        "floor (30-day tenor's most volatile window), fitted x_30d (30/DTE)^p",
        "vol_shock_mm": f"VaR {alpha:g}, same changes, same scaling and floor",
        "ssr": f"regression of d ATM vol on skew * d ln F, {x.size} consecutive-snapshot "
        f"changes at 7-90 days (raw {ssr_raw:.3f}, R^2 {r2:.3f})",
        "half_spread_vol": "median of per-snapshot median half-spread in vol by vega bucket",
        "spread_stress": f"{alpha:g} quantile of the 30-day half-spread ratio over the horizon",
        "turnover": "median 24h volume / open interest",
        "future_half_spread": "assumed (no futures quotes in the chains)",
        "extended_weight_exponent": (
            f"tail probability over the horizon / {1 - alpha:g} (Hill tails of the "
            f"EWMA-standardised returns: alpha down {fit_dn[0]:.2f}, up {fit_up[0]:.2f})"
            if extended_weighting == "tail"
            else "issue 6 / exchange: extended moves weighted R/|m|"
        ),
        "confidence_scale": "1 (set by volcal.risk.fhs or confidence_scale())",
    }
    diagnostics = {
        "n_returns": int(i.size),
        "ewma_vol_annual_now": float(np.sqrt(var_day[-1] * 365.0)),
        "R_es_ewma": float(R_es_ewma),
        "R_es_stress": float(R_es_stress),
        "R_var_ewma": float(R_var_ewma),
        "R_var_stress": float(R_var_stress),
        "R_es_historical": float(
            max(1 - np.exp(-_tail(r, alpha)[1]), np.exp(_tail(r, alpha)[3]) - 1)
        ),
        "stress_window_start": str(times.iloc[int(np.argmax(best))]),
        "vol_shock_by_node": per_node,
        "ssr_raw": ssr_raw,
        "ssr_r2": r2,
        "spot_vol_beta": beta,
        "n_ssr_changes": int(x.size),
        "hill_down": fit_dn,
        "hill_up": fit_up,
        "extended_probability": {f"{m:+.2f}": p for m, p in zip(ext_moves, ext_prob, strict=True)},
        "extended_weights_tail": ext_w,
    }
    return MarginParams(
        price_range=float(min(R_es, 0.95)),
        price_range_mm=float(min(R_var, R_es, 0.95)),
        vol_shock=shock,
        vol_shock_mm=shock_mm,
        ssr=ssr,
        horizon_days=float(h_days),
        confidence=confidence,
        half_spread_vol=hs,
        spread_stress=spread_stress,
        turnover=turnover,
        extended_weights=ext_w if extended_weighting == "tail" else None,
        currency=stats.underlying,
        as_of=str(times.iloc[-1]),
        sources=sources,
        diagnostics=diagnostics,
    )


def with_changes(params: MarginParams, **changes: Any) -> MarginParams:
    """A copy with some fields changed (``dataclasses.replace``)."""
    return replace(params, **changes)
