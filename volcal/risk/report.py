"""``margin(positions, surface, chain, params) -> MarginReport``: the margin of a portfolio.

Components (USD amounts convert to coin at the current spot ``S0``; scenario losses are in the
account currency, coin for coin-settled books, see :mod:`volcal.risk.scenarios`):

* **scenario margin**: the worst weighted loss over the portfolio-margin-like grid and over the
  SPAN-like grid (:func:`~volcal.risk.scenarios.pm_grid`,
  :func:`~volcal.risk.scenarios.span_grid`),
  full revaluation on the surface under the SSR dynamic, ``horizon_days`` of time decay;
* **greek margin** ``G = delta + gamma + vega add-ons`` (USD):
  ``delta = |sum mv_delta F| R`` on the minimum-variance delta,
  ``gamma = 1/2 max(-sum eff_gamma F**2, 0) R**2`` (short effective gamma over the move),
  ``vega = sum over tenor buckets of max(-sum vega sigma up(DTE), sum vega sigma down(DTE), 0)``
  (no offset between buckets, so it charges term-structure twists the grids do not move);
* **liquidity add-on**: closing every position at the half-spread (the quote's, else the
  calibrated one in vol times vega; futures ``future_half_spread``), times ``spread_stress``,
  times ``max(1, sqrt(|q| / (turnover OI)))`` for sizes large against open interest.

``initial = c max(scenario, G) + liquidity`` with ``c = params.confidence_scale`` (1 unless
calibrated on past realised losses); ``maintenance`` is the same with the maintenance
range and shocks (``price_range_mm``, ``vol_shock_mm``). Deribit's standard margin and the
exchange-parameter grid (:func:`~volcal.risk.params.deribit_pm_params`) are reported beside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.risk.dynamics import SmileDynamics
from volcal.risk.greeks import position_greeks
from volcal.risk.history import VEGA_BUCKETS_DAYS
from volcal.risk.hull_white import HullWhiteDelta
from volcal.risk.params import MarginParams, deribit_pm_params
from volcal.risk.positions import Positions, resolve_positions
from volcal.risk.scenarios import ScenarioPnL, pm_grid, revalue, span_grid
from volcal.risk.standard import standard_margin
from volcal.risk.surfaces import MarginSurface

__all__ = ["MarginReport", "margin"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class MarginReport:
    """The margin of one portfolio at one instant.

    Attributes
    ----------
    as_of, underlying, spot:
        Instant, coin and spot (USD per coin) used for USD <-> coin.
    account_currency:
        ``"coin"`` (coin-settled book) or ``"usd"``.
    initial_margin_coin, initial_margin_usd, maintenance_margin_coin, maintenance_margin_usd:
        Totals.
    components:
        Total of each component in coin and USD (``{name: {"coin": x, "usd": y}}``):
        ``scenario_pm``, ``scenario_span``, ``scenario``, ``risk`` (``max(scenario, greek)``
        before the confidence scale), ``risk_mm``, ``delta_addon``, ``gamma_addon``,
        ``vega_addon``, ``greek``, ``liquidity_addon``, ``standard_initial``,
        ``standard_maintenance``, ``reference_pm``, and the ``_mm`` variants.
    positions:
        Per position: quantity, greeks (:func:`~volcal.risk.greeks.position_greeks`), each
        add-on (USD), its P&L in the worst scenario (coin) and its standard margin (coin).
    vega_buckets:
        Per tenor bucket: net vega (USD per 1.00 vol), vega add-on (USD).
    scenario_pnl:
        Scenario x position P&L in the account currency, with ``total``, ``weight`` and
        ``weighted_loss`` columns.
    worst_scenario:
        Name of the scenario that sets the scenario margin.
    params:
        The parameters used; ``dynamics`` the smile dynamic.
    """

    as_of: pd.Timestamp
    underlying: str
    spot: float
    account_currency: str
    initial_margin_coin: float
    initial_margin_usd: float
    maintenance_margin_coin: float
    maintenance_margin_usd: float
    components: dict[str, dict[str, float]]
    positions: pd.DataFrame
    vega_buckets: pd.DataFrame
    scenario_pnl: pd.DataFrame
    worst_scenario: str
    params: MarginParams
    dynamics: SmileDynamics

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tables as lists of records)."""
        return {
            "as_of": str(self.as_of),
            "underlying": self.underlying,
            "spot": self.spot,
            "account_currency": self.account_currency,
            "initial_margin_coin": self.initial_margin_coin,
            "initial_margin_usd": self.initial_margin_usd,
            "maintenance_margin_coin": self.maintenance_margin_coin,
            "maintenance_margin_usd": self.maintenance_margin_usd,
            "components": self.components,
            "worst_scenario": self.worst_scenario,
            "positions": self.positions.reset_index().to_dict(orient="records"),
            "vega_buckets": self.vega_buckets.reset_index().to_dict(orient="records"),
            "params": self.params.to_dict(),
            "dynamics": self.dynamics.to_dict(),
        }

    def summary(self) -> str:
        """A few lines of text."""
        c = self.components
        lines = [
            f"Margin {self.underlying} at {self.as_of} (spot {self.spot:,.2f}, "
            f"{self.dynamics.name}, R {self.params.price_range:.2%})",
            f"  {'initial':16s}{self.initial_margin_coin:12.6f} coin  "
            f"{self.initial_margin_usd:14,.2f} USD",
            f"  {'maintenance':16s}{self.maintenance_margin_coin:12.6f} coin  "
            f"{self.maintenance_margin_usd:14,.2f} USD",
        ]
        for name in (
            "scenario_pm",
            "scenario_span",
            "delta_addon",
            "gamma_addon",
            "vega_addon",
            "greek",
            "liquidity_addon",
            "standard_initial",
            "reference_pm",
        ):
            lines.append(f"  {name:16s}{c[name]['coin']:12.6f} coin  {c[name]['usd']:14,.2f} USD")
        lines.append(f"  worst scenario: {self.worst_scenario}")
        return "\n".join(lines)


def _bucket(dte: FloatArray) -> npt.NDArray[np.intp]:
    return np.asarray(np.searchsorted(np.asarray(VEGA_BUCKETS_DAYS), dte, side="left"))


def _greek_addons(
    g: pd.DataFrame, dte: FloatArray, params: MarginParams, mm: bool
) -> tuple[pd.DataFrame, dict[str, float], pd.DataFrame]:
    """Per-position add-ons, totals (USD) and the vega-bucket table."""
    R = params.price_range_mm if mm else params.price_range
    shock = params.vol_shock_mm if mm else params.vol_shock
    dd = g["dollar_delta"].to_numpy()
    dg = g["dollar_gamma"].to_numpy()
    vol = np.nan_to_num(g["vol"].to_numpy())
    vega = g["vega"].to_numpy()
    up = vega * vol * shock.up(dte)
    down = vega * vol * shock.down(dte)
    per = pd.DataFrame(
        {
            "delta_addon_usd": np.abs(dd) * R,
            "gamma_addon_usd": 0.5 * np.maximum(-dg, 0.0) * R * R,
            "vega_addon_usd": np.maximum(np.maximum(-up, down), 0.0),
        },
        index=g.index,
    )
    b = _bucket(dte)
    rows = []
    for i, hi in enumerate(VEGA_BUCKETS_DAYS):
        sel = b == i
        loss = max(-float(up[sel].sum()), float(down[sel].sum()), 0.0)
        rows.append({"bucket_days_max": hi, "vega": float(vega[sel].sum()), "vega_addon_usd": loss})
    buckets = pd.DataFrame(rows).set_index("bucket_days_max")
    totals = {
        "delta_addon": abs(float(dd.sum())) * R,
        "gamma_addon": 0.5 * max(-float(dg.sum()), 0.0) * R * R,
        "vega_addon": float(buckets["vega_addon_usd"].sum()),
    }
    totals["greek"] = totals["delta_addon"] + totals["gamma_addon"] + totals["vega_addon"]
    return per, totals, buckets


def _liquidity(
    pos: Positions, g: pd.DataFrame, dte: FloatArray, params: MarginParams
) -> FloatArray:
    tab = pos.table
    qty = np.abs(pos.quantity)
    size = tab["contract_size"].to_numpy(dtype=float)
    bid = tab["bid_usd"].to_numpy(dtype=float)
    ask = tab["ask_usd"].to_numpy(dtype=float)
    quoted = np.isfinite(bid) & np.isfinite(ask) & (ask >= bid) & (bid > 0)
    unit_vega = np.divide(
        np.abs(g["vega"].to_numpy()), qty * size, out=np.zeros(len(pos)), where=qty * size > 0
    )
    hs_vol = np.asarray(params.half_spread_vol)[
        np.minimum(_bucket(dte), len(VEGA_BUCKETS_DAYS) - 1)
    ]
    half = np.where(quoted, 0.5 * (ask - bid), hs_vol * unit_vega)
    cost = qty * size * half
    oi = tab["open_interest"].to_numpy(dtype=float)
    absorb = np.maximum(params.turnover * np.nan_to_num(oi), 1.0)
    conc = np.maximum(1.0, np.sqrt(qty / absorb))
    fut = ~pos.is_option
    cost = np.where(
        fut,
        np.abs(g["delta"].to_numpy()) * g["forward"].to_numpy() * params.future_half_spread,
        cost * conc,
    )
    return np.asarray(cost * params.spread_stress)


def _scenario_part(
    pos: Positions, surface: MarginSurface, params: MarginParams, dyn: SmileDynamics, mm: bool
) -> tuple[ScenarioPnL, float, float]:
    R = params.price_range_mm if mm else params.price_range
    shock = params.vol_shock_mm if mm else params.vol_shock
    dt = params.horizon_years
    pm = pm_grid(
        R,
        extended=params.extended_moves,
        extended_weight_exponent=params.extended_weight_exponent,
        extended_weights=params.extended_weights,
        dt=dt,
    )
    grid = pm + span_grid(R, dt=dt)
    pnl = revalue(pos, surface, grid, dyn, shock)
    loss = pnl.weighted_loss()
    n_pm = len(pm)
    return pnl, max(float(loss[:n_pm].max()), 0.0), max(float(loss[n_pm:].max()), 0.0)


def margin(
    positions: pd.DataFrame | Positions,
    surface: MarginSurface,
    chain: object,
    params: MarginParams,
    *,
    dynamics: SmileDynamics | None = None,
    reference: bool = True,
) -> MarginReport:
    """Initial and maintenance margin of a portfolio, with every component.

    Parameters
    ----------
    positions:
        DataFrame with ``symbol`` and ``quantity`` (see :mod:`volcal.risk.positions`), or
        already resolved :class:`~volcal.risk.positions.Positions`.
    surface:
        Vol surface at the chain's instant (any :class:`~volcal.risk.surfaces.MarginSurface`,
        e.g. ``volcal.fit_svi(chain).surface``).
    chain:
        The :class:`volcal.OptionChain` (instruments, marks, quotes, open interest, spot).
    params:
        :class:`~volcal.risk.params.MarginParams` (calibrated or given).
    dynamics:
        Smile dynamic; default ``SmileDynamics(params.ssr)``.
    reference:
        Also compute the grid with the exchange's parameters (``components["reference_pm"]``).

    Returns
    -------
    MarginReport

    Raises
    ------
    UnknownInstrumentError
        A symbol is not in the chain (options) nor a future of its underlying.
    """
    pos = positions if isinstance(positions, Positions) else resolve_positions(positions, chain)
    dyn = dynamics or SmileDynamics(params.ssr, source="params.ssr")
    s0 = pos.spot
    acc = pos.account_currency

    def both(amount: float, unit: str) -> dict[str, float]:
        if unit == "usd":
            return {"coin": amount / s0, "usd": amount}
        return {"coin": amount, "usd": amount * s0}

    pnl, pm_loss, span_loss = _scenario_part(pos, surface, params, dyn, mm=False)
    _, pm_mm, span_mm = _scenario_part(pos, surface, params, dyn, mm=True)
    hw = (
        HullWhiteDelta(*params.hull_white, source="params.hull_white")
        if params.hull_white is not None
        else None
    )
    greeks = position_greeks(pos, surface, dyn, hull_white=hw)
    dte = pos.table["t"].to_numpy(dtype=float) * 365.0
    per, tot, buckets = _greek_addons(greeks, dte, params, mm=False)
    _, tot_mm, _ = _greek_addons(greeks, dte, params, mm=True)
    liq = _liquidity(pos, greeks, dte, params)
    liq_total = float(liq.sum())
    std = standard_margin(pos)

    scen = max(pm_loss, span_loss)
    scen_mm = max(pm_mm, span_mm)
    g_acc = tot["greek"] / s0 if acc == "coin" else tot["greek"]
    g_mm_acc = tot_mm["greek"] / s0 if acc == "coin" else tot_mm["greek"]
    liq_acc = liq_total / s0 if acc == "coin" else liq_total
    c = params.confidence_scale
    risk, risk_mm = max(scen, g_acc), max(scen_mm, g_mm_acc)
    im = c * risk + liq_acc
    mm = c * risk_mm + liq_acc
    comps = {
        "scenario_pm": both(pm_loss, acc),
        "scenario_span": both(span_loss, acc),
        "scenario": both(scen, acc),
        "scenario_mm": both(scen_mm, acc),
        "delta_addon": both(tot["delta_addon"], "usd"),
        "gamma_addon": both(tot["gamma_addon"], "usd"),
        "vega_addon": both(tot["vega_addon"], "usd"),
        "greek": both(tot["greek"], "usd"),
        "greek_mm": both(tot_mm["greek"], "usd"),
        "liquidity_addon": both(liq_total, "usd"),
        "risk": both(risk, acc),
        "risk_mm": both(risk_mm, acc),
        "standard_initial": both(float(std["standard_im_coin"].sum()), "coin"),
        "standard_maintenance": both(float(std["standard_mm_coin"].sum()), "coin"),
    }
    if reference:
        ref = deribit_pm_params(params.horizon_days)
        rp = revalue(
            pos,
            surface,
            pm_grid(ref.price_range, dt=ref.horizon_years),
            SmileDynamics.sticky_strike(),
            ref.vol_shock,
        )
        comps["reference_pm"] = both(max(float(rp.weighted_loss().max()), 0.0), acc)
    else:
        comps["reference_pm"] = {"coin": float("nan"), "usd": float("nan")}

    loss = pnl.weighted_loss()
    worst = int(np.argmax(loss))
    table = pnl.to_frame(acc if acc == "usd" else "coin")
    table["total"] = table.sum(axis=1)
    table["move"] = pnl.scenarios.move
    table["weight"] = pnl.scenarios.weight
    table["weighted_loss"] = loss
    per_pos = pd.concat(
        [pos.table.set_index(pos.table["symbol"].astype(str))[["quantity"]], greeks, per], axis=1
    )
    per_pos["liquidity_addon_usd"] = liq
    per_pos["worst_scenario_pnl"] = pnl.pnl_account[:, worst]
    per_pos["standard_im_coin"] = std["standard_im_coin"].to_numpy()
    per_pos["standard_mm_coin"] = std["standard_mm_coin"].to_numpy()
    im_coin = im if acc == "coin" else im / s0
    mm_coin = mm if acc == "coin" else mm / s0
    return MarginReport(
        as_of=pos.as_of,
        underlying=pos.underlying,
        spot=s0,
        account_currency=acc,
        initial_margin_coin=float(im_coin),
        initial_margin_usd=float(im_coin * s0),
        maintenance_margin_coin=float(mm_coin),
        maintenance_margin_usd=float(mm_coin * s0),
        components=comps,
        positions=per_pos,
        vega_buckets=buckets,
        scenario_pnl=table,
        worst_scenario=pnl.scenarios.name[worst],
        params=params,
        dynamics=dyn,
    )
