"""Confidence scale of the margin from filtered historical simulation (FHS).

The scenario grid (:func:`volcal.risk.margin`) stays the margin's structure; FHS only sets its
confidence: at an instant ``d`` a pool of books (today's positions on today's surface) is
repriced under the historical horizon scenarios available before ``d``, each rescaled to
today's volatility (Barone-Adesi, Giannopoulos and Vosper 1999; the construction of
Eurex Prisma's and LCH's filtered-historical-simulation margins):

* forward move ``m_i = exp(z_i sigma_now sqrt(h)) - 1``, ``z_i`` the ``i``-th horizon
  log-return of the 30-day forward divided by the EWMA vol at its start (RiskMetrics, decay
  ``ewma_lambda`` per day), ``sigma_now`` the EWMA vol of the last snapshot;
* the smile moves with the forward by the smile dynamic (SSR: the vol of strike ``K`` is read
  at ``K (1+m)**-(1-SSR)``), then every vol is multiplied by ``exp(x_i(DTE))``, ``x_i`` the
  horizon change of ``ln sigma_ATM`` at the constant maturities (7 .. 180 days, linear in DTE
  between them, flat outside) *not explained by the dynamic* (``ln sigma_ATM,1 - ln(sigma_ATM,0
  + SSR skew_0 ln(F_1/F_0))``: after the dynamic and the shock the scenario's ATM vol moves
  as it did), times ``sqrt(v_now / v_start)`` of that maturity's EWMA variance of ``ln
  sigma_ATM`` changes; ``skew_aware=False`` (a flat smile, no dynamic) uses the whole change;
* ``h`` (the horizon) passes.

Each book ``b`` and scenario ``i`` give a score ``(loss_bi - liquidity_b) / risk_b`` (``risk``
the margin's ``max(scenario, greek)`` at scale 1, as the conformal scores of
:func:`volcal.risk.backtest.apply_confidence_scale`), and the scale ``c`` is the
``confidence`` quantile of the pooled scores (the ``ceil(n confidence)``-th smallest of the
``n``): the margin ``c risk + liquidity`` then covers the simulated losses of the pool at
exactly ``confidence``, the pooled exceedance rate the backtest and Kupiec's test measure.
Nothing after ``d`` is used, and nothing needs realised losses of margined books, so the
scale follows the market's state from the first day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.risk.dynamics import SmileDynamics
from volcal.risk.history import NODES_DAYS, HistoryStats
from volcal.risk.params import _ewma_variance, _horizon_pairs
from volcal.risk.positions import Positions
from volcal.risk.scenarios import _legs, _move_vols, black_usd
from volcal.risk.surfaces import MarginSurface

__all__ = [
    "HistoricalScenarios",
    "fhs_confidence_scale",
    "historical_scenarios",
    "scenario_losses",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class HistoricalScenarios:
    """EWMA-rescaled historical horizon scenarios.

    Attributes
    ----------
    move:
        Relative forward move ``F1/F0 - 1`` of each scenario, shape ``(s,)``.
    dlog_vol:
        Change of ``ln sigma`` by constant maturity after the smile dynamic, shape
        ``(s, len(node_days))``.
    node_days:
        Constant maturities (days) of ``dlog_vol``'s columns.
    start, end:
        Instants of the snapshots each historical change runs between (UTC).
    dt:
        Years that pass in each scenario (the horizon, ACT/365F).
    ssr:
        Skew stickiness ratio the vol changes are net of (None: whole changes).
    """

    move: FloatArray
    dlog_vol: FloatArray
    node_days: FloatArray
    start: pd.DatetimeIndex
    end: pd.DatetimeIndex
    dt: float
    ssr: float | None

    def __len__(self) -> int:
        return int(self.move.size)


def _days(times: pd.Series) -> FloatArray:
    ns = pd.DatetimeIndex(times).as_unit("ns").asi8
    return np.asarray((ns - ns[0]) / 86_400e9, dtype=float)


def historical_scenarios(
    stats: HistoryStats,
    horizon: pd.Timedelta | str = "1D",
    *,
    ssr: float | None = None,
    ewma_lambda: float = 0.94,
) -> HistoricalScenarios:
    """The filtered historical scenarios of a history (see the module docstring).

    Parameters
    ----------
    stats:
        Per-snapshot statistics (:func:`volcal.risk.history_stats`), oldest first; every row
        is used (pass ``stats.before(d)`` for the scenarios available at ``d``).
    horizon:
        Margin period of risk: each scenario is the change from a snapshot to the first one at
        least ``horizon`` later (within 1.5 horizons), scaled to exactly ``horizon`` by
        ``sqrt(horizon / span)``.
    ssr:
        Skew stickiness ratio of the smile dynamic the scenarios will be applied with: the
        vol changes are net of what it explains (``SSR skew_0 ln(F1/F0)`` at the money). None:
        the whole change of ``ln sigma_ATM`` (a flat smile without dynamic).
    ewma_lambda:
        EWMA decay per day of the return and vol-change variances (RiskMetrics 0.94).

    Returns
    -------
    HistoricalScenarios

    Raises
    ------
    ValueError
        Fewer than 2 snapshots, or no scenario with a finite forward move.
    """
    tab = stats.table
    if len(tab) < 2:
        raise ValueError(f"historical_scenarios: {len(tab)} snapshot(s), need at least 2")
    hz = pd.Timedelta(horizon)
    h_days = hz / pd.Timedelta(days=1)
    times = tab["as_of"]
    days = _days(times)
    spot = tab["spot"].to_numpy(dtype=float)
    fwd = tab["fwd_30"].to_numpy(dtype=float)
    logp = np.log(np.where(np.isfinite(fwd), fwd, spot))
    i, j = _horizon_pairs(times, hz)
    span = days[j] - days[i]
    root = np.sqrt(h_days / np.where(span > 0, span, np.nan))
    r = (logp[j] - logp[i]) * root
    var_day = _ewma_variance(logp, days, ewma_lambda)
    z = r / np.sqrt(var_day[i] * h_days)
    move = np.expm1(z * np.sqrt(var_day[-1] * h_days))
    ok = np.isfinite(move)
    nodes = np.asarray(NODES_DAYS, dtype=float)
    dlog = np.full((i.size, nodes.size), np.nan)
    for col, d in enumerate(NODES_DAYS):
        atm = tab[f"atm_{d}"].to_numpy(dtype=float)
        lv = np.log(atm)
        change = lv[j] - lv[i]
        if ssr is not None:
            skew = tab[f"skew_{d}"].to_numpy(dtype=float)
            lf = np.log(tab[f"fwd_{d}"].to_numpy(dtype=float))
            moved = atm[i] + ssr * skew[i] * (lf[j] - lf[i])
            change = np.where(moved > 0, lv[j] - np.log(np.where(moved > 0, moved, 1.0)), np.nan)
        var_v = _ewma_variance(lv, days, ewma_lambda)
        ratio = np.divide(
            var_v[-1], var_v[i], out=np.full(i.size, np.nan), where=np.isfinite(var_v[i])
        )
        ratio = np.where(np.isfinite(ratio) & (var_v[i] > 0), ratio, 1.0)
        dlog[:, col] = change * root * np.sqrt(ratio)
    # maturities outside a snapshot's listed expiries: the nearest finite maturity's change
    for s in range(i.size):
        row = dlog[s]
        fin = np.isfinite(row)
        if not fin.any():
            dlog[s] = 0.0
        elif not fin.all():
            dlog[s] = np.interp(nodes, nodes[fin], row[fin])
    if not ok.any():
        raise ValueError("historical_scenarios: no horizon return with a finite forward move")
    return HistoricalScenarios(
        move=move[ok],
        dlog_vol=dlog[ok],
        node_days=nodes,
        start=pd.DatetimeIndex(times.to_numpy()[i[ok]]),
        end=pd.DatetimeIndex(times.to_numpy()[j[ok]]),
        dt=h_days / 365.0,
        ssr=ssr,
    )


def scenario_losses(
    positions: Positions,
    surface: MarginSurface,
    scenarios: HistoricalScenarios,
    dynamics: SmileDynamics,
) -> FloatArray:
    """Loss of a book under each historical scenario by full revaluation, shape ``(s,)``.

    In the account currency (coin when any position is coin-settled), positive = loss; units
    and settlement as :func:`volcal.risk.revalue`: coin P&L of inverse options ``q (V1/F1 -
    V0/F0)``, inverse futures ``q N (1/F0 - 1/F1)``, linear ``q (V1 - V0)`` USD (coin = USD /
    ``F1``). Options are valued by Black-76 at ``F0 (1+m)``, ``t - dt`` and the surface's vol
    at the dynamic's lookup strike times ``exp(dlog_vol)`` at the option's DTE.
    """
    legs = _legs(positions, surface)
    move = scenarios.move
    growth = 1.0 + move
    spot1 = positions.spot * growth
    coin_account = positions.account_currency == "coin"
    total = np.zeros(move.size)
    opt = legs.option
    if opt.any():
        k, t, call = legs.strike[opt], legs.t[opt], legs.call[opt]
        f0 = legs.forward[opt]
        moves, inv = np.unique(np.concatenate([[0.0], move]), return_inverse=True)
        base = _move_vols(surface, k, t, moves, dynamics, None)
        now = base[inv[0]]
        shifted = base[inv[1:]]
        dte = t * 365.0
        dl = np.stack([np.interp(dte, scenarios.node_days, row) for row in scenarios.dlog_vol])
        vol = shifted * np.exp(dl)
        v0 = black_usd(f0, k, t, now, call)
        f1 = f0[None, :] * growth[:, None]
        v1 = black_usd(f1, k[None, :], np.maximum(t - scenarios.dt, 0.0)[None, :], vol, call)
        size = legs.size[opt]
        inverse = legs.inverse[opt]
        coin = np.where(inverse[None, :], v1 / f1 - (v0 / f0)[None, :], (v1 - v0) / spot1[:, None])
        usd = np.where(inverse[None, :], coin * spot1[:, None], v1 - v0[None, :])
        total += ((coin if coin_account else usd) * size[None, :]).sum(axis=1)
    fut = ~opt
    if fut.any():
        f0 = legs.forward[fut][None, :]
        f1 = f0 * growth[:, None]
        size = legs.size[fut][None, :]
        inverse = legs.inverse[fut][None, :]
        coin = np.where(inverse, size * (1.0 / f0 - 1.0 / f1), size * (f1 - f0) / spot1[:, None])
        usd = np.where(inverse, coin * spot1[:, None], size * (f1 - f0))
        total += (coin if coin_account else usd).sum(axis=1)
    return np.asarray(-total)


def fhs_confidence_scale(
    losses: Sequence[npt.ArrayLike],
    risks: Sequence[float],
    liquidities: Sequence[float],
    confidence: float = 0.99,
    *,
    min_scale: float = 1e-3,
) -> float:
    """The confidence scale from simulated losses of a pool of books.

    Parameters
    ----------
    losses:
        Per book, its losses under the same historical scenarios (account currency).
    risks, liquidities:
        Per book, the margin's risk part ``max(scenario, greek)`` at scale 1 and its
        liquidity add-on (same currency). Books with ``risk <= 0`` are left out.
    confidence:
        Target coverage of the pooled simulated losses.
    min_scale:
        Floor of the result.

    Returns
    -------
    float
        The ``ceil(n confidence)``-th smallest pooled score ``(loss - liquidity) / risk``
        (``n`` finite scores; every book weighs the same when all have the same scenarios),
        at least ``min_scale``; NaN when there is no score.
    """
    if not (len(losses) == len(risks) == len(liquidities)):
        raise ValueError("fhs_confidence_scale: losses, risks and liquidities differ in length")
    if not 0 < confidence < 1:
        raise ValueError(f"fhs_confidence_scale: confidence must be in (0, 1), got {confidence}")
    parts = [
        (np.asarray(x, dtype=float) - lq) / r
        for x, r, lq in zip(losses, risks, liquidities, strict=True)
        if r > 0 and np.isfinite(r)
    ]
    if not parts:
        return float("nan")
    scores = np.concatenate(parts)
    scores = np.sort(scores[np.isfinite(scores)])
    n = scores.size
    if n == 0:
        return float("nan")
    k = max(1, int(np.ceil(n * confidence - 1e-9)))
    return float(max(scores[k - 1], min_scale))
