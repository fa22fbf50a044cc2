"""Heston fits of the shared Deribit snapshots: quote selection, parameter paths, jump check.

Used by ``tests/heston/test_heston_realdata.py`` and ``benchmarks/heston_realdata.py``.

Choices (measured, see ``docs/heston.md``):

* quotes: :meth:`HestonQuotes.from_frame` of the chain (rows that pass the chain filters,
  out-of-the-money, Deribit's mark in USD = coin mark x the expiry's forward, ``D = 1``, a tick
  of 0.0001 coin in USD);
* expiries closer than 7 days do not steer the fit (``min_t``): a diffusion cannot fit their
  smiles, and with them the fit trades the whole surface for the front: on 2026-01-22 09:26
  (first expiry 22.6 h) rmse_iv 2.3 / 2.1 vol points (BTC / ETH) instead of 1.9 / 1.25 and
  kappa 9.8 / 14.0 instead of 6.6 / 9.1; on 2026-01-25 21:19 (first expiry 10.7 h) BTC sigma
  10.3, kappa 32 at 3.6 vol points, ETH sigma at its bound 20, kappa 81 at 4.7 vol points;
* warm start: each snapshot starts from the previous snapshot's parameters (the first one from
  the data-driven start with the global stage); on the week below the warm and the cold paths
  reach the same parameters, the warm one in fewer iterations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from volcal.heston import HestonCalibrator, HestonFit, HestonParams, HestonQuotes

TICK_COIN = 1e-4
"""Deribit's premium tick for BTC and ETH options, coin."""
MIN_T = 7.0 / 365.0
"""Expiries closer than this (years) do not steer the real-data fits."""
WEEK = ("2026-01-19", "2026-01-26")
"""The week of consecutive snapshots whose parameter paths are checked (UTC, end exclusive)."""
DAILY_HOUR = 9
"""One snapshot a day: the first at or after 09:00 UTC (Deribit's snapshots are ~6 h apart)."""

# "No jump without a market reason": between consecutive fits a positive parameter may move by a
# factor of at most exp(0.5) (~1.65) and rho by 0.15, unless the fit changed for a reason of the
# data: the set of fitted expiries changed (one crossed MIN_T or expired) or the rmse moved by
# more than 30 % (the market's smile changed shape).
MAX_LOG_STEP = 0.5
MAX_RHO_STEP = 0.15
MATERIAL_RMSE_CHANGE = 0.3


def deribit_quotes(chain: object) -> HestonQuotes:
    """The Heston quotes of a Deribit chain (USD premiums, per-expiry forwards, one tick)."""
    return HestonQuotes.coerce(chain, tick_coin=TICK_COIN)


def calibrator(**settings: object) -> HestonCalibrator:
    """The real-data calibrator: ``min_t`` = 7 days, other settings as given."""
    options: dict[str, object] = {"min_t": MIN_T}
    options.update(settings)
    return HestonCalibrator(**options)  # type: ignore[arg-type]


def daily(chains: Sequence[object]) -> list[object]:
    """One chain per UTC day: the first with ``as_of`` at or after ``DAILY_HOUR``."""
    out, seen = [], set()
    for chain in chains:
        as_of = pd.Timestamp(chain.as_of)  # type: ignore[attr-defined]
        if as_of.hour >= DAILY_HOUR and as_of.date() not in seen:
            seen.add(as_of.date())
            out.append(chain)
    return out


def in_week(chains: Sequence[object]) -> list[object]:
    """The chains of :data:`WEEK`."""
    lo, hi = (pd.Timestamp(d, tz="UTC") for d in WEEK)
    return [c for c in chains if lo <= pd.Timestamp(c.as_of) < hi]  # type: ignore[attr-defined]


def fit_path(chains: Sequence[object], *, warm: bool = True, **settings: object) -> list[HestonFit]:
    """Fit consecutive chains; with ``warm`` each fit starts from the previous parameters
    (local fit only), the first from the data (global stage when poor)."""
    fits: list[HestonFit] = []
    for chain in chains:
        quotes = deribit_quotes(chain)
        if warm and fits:
            cal = calibrator(start=fits[-1].params, global_stage="never", **settings)
        else:
            cal = calibrator(**settings)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            fits.append(cal.fit(quotes))
    return fits


@dataclass(frozen=True)
class Step:
    """The change between two consecutive fits."""

    index: int
    log_change: dict[str, float]
    rho_change: float
    rmse_ratio: float
    expiries_changed: bool

    @property
    def explained(self) -> bool:
        """A market reason: different expiries fitted, or a material change of the rmse."""
        return self.expiries_changed or abs(math.log(self.rmse_ratio)) > math.log1p(
            MATERIAL_RMSE_CHANGE
        )

    @property
    def is_jump(self) -> bool:
        """Larger than the bounds (whether explained or not)."""
        big = max(abs(x) for x in self.log_change.values()) > MAX_LOG_STEP
        return big or abs(self.rho_change) > MAX_RHO_STEP


def fitted_expiries(fit: HestonFit) -> tuple[float, ...]:
    """Expiry times (years, rounded to the hour) of the quotes that steered the fit, shifted to
    the fit's first used expiry so that the same listed expiries compare equal a day later."""
    t = np.unique(np.round(fit.quotes.t[fit.used] * 8760.0)) / 8760.0
    return tuple(np.round((t - t[0]) * 365.0, 3).tolist())


def steps(fits: Sequence[HestonFit]) -> list[Step]:
    """Day-to-day changes of a parameter path."""
    out = []
    for i in range(1, len(fits)):
        a, b = fits[i - 1], fits[i]
        logs = {
            n: math.log(getattr(b.params, n) / getattr(a.params, n))
            for n in ("v0", "kappa", "theta", "sigma")
        }
        out.append(
            Step(
                index=i,
                log_change=logs,
                rho_change=b.params.rho - a.params.rho,
                rmse_ratio=b.rmse_iv / a.rmse_iv,
                expiries_changed=fitted_expiries(a) != fitted_expiries(b),
            )
        )
    return out


def unexplained_jumps(fits: Sequence[HestonFit]) -> list[Step]:
    """Steps larger than the bounds without a market reason (should be empty)."""
    return [s for s in steps(fits) if s.is_jump and not s.explained]


def at_bounds(params: HestonParams, rel: float = 1e-6) -> list[str]:
    """Names of parameters at the calibrator's default bounds."""
    from volcal.heston import DEFAULT_BOUNDS

    out = []
    for name, (lo, hi) in DEFAULT_BOUNDS.items():
        x = getattr(params, name)
        if x <= lo + rel * (hi - lo) or x >= hi - rel * (hi - lo):
            out.append(name)
    return out


def path_table(chains: Sequence[object], fits: Sequence[HestonFit]) -> str:
    """The parameter path as text: one row per snapshot."""
    lines = [
        f"{'as_of (UTC)':17} {'quotes':>6} {'used':>5} {'v0':>8} {'kappa':>8} {'theta':>8} "
        f"{'sigma':>7} {'rho':>7} {'rmse_iv':>8} {'iters':>5} {'ms':>6}  note "
        "(rmse_iv in vol points over the used quotes)"
    ]
    jumps = {s.index: s for s in steps(fits)}
    for i, (chain, fit) in enumerate(zip(chains, fits, strict=True)):
        p = fit.params
        step = jumps.get(i)
        note = ""
        if step is not None and step.is_jump:
            note = "jump: " + ("explained" if step.explained else "UNEXPLAINED")
        if step is not None and step.expiries_changed:
            note += (" " if note else "") + "expiries changed"
        lines.append(
            f"{pd.Timestamp(chain.as_of).strftime('%Y-%m-%d %H:%M'):17} "  # type: ignore[attr-defined]
            f"{len(fit.quotes):6d} {fit.n_used:5d} {p.v0:8.4f} {p.kappa:8.3f} {p.theta:8.4f} "
            f"{p.sigma:7.3f} {p.rho:+7.3f} {100 * fit.rmse_iv:8.3f} "
            f"{fit.report.iterations:5d} {1e3 * fit.report.elapsed_s:6.1f}  {note}"
        )
    return "\n".join(lines)
