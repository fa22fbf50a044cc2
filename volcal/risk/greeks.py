"""Skew-aware greeks of positions: Black-76 greeks plus minimum-variance delta and
effective gamma under a smile dynamic.

With ``V(F, sigma(F))`` the USD value of an option whose vol moves with the forward as the
dynamic says (:mod:`volcal.risk.dynamics`):

    delta_mv  = dV/dF   = delta + vega * sigma_F
    gamma_eff = d2V/dF2 = gamma + 2 vanna sigma_F + volga sigma_F**2 + vega sigma_FF

``delta_mv`` is the minimum-variance delta when the dynamic is the regression of vol changes on
forward changes (Hull & White, "Optimal delta hedging for options", J. Banking & Finance 2017,
fit the same correction ``vega * d sigma/dF`` as a quadratic in delta). Greeks are of the USD
value (``delta`` in coin, ``gamma`` per USD, ``vega`` USD per 1.00 of vol, ``theta`` USD per
year), times quantity and contract size; an inverse future of face ``N`` USD has USD value
``N F/F0``, so its delta is ``N/F0`` coin; a linear future of size ``c`` coin has delta ``c``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.black import black_greeks
from volcal.risk.dynamics import SmileDynamics
from volcal.risk.hull_white import HullWhiteDelta
from volcal.risk.positions import Positions
from volcal.risk.scenarios import _legs
from volcal.risk.surfaces import MarginSurface, smile_derivatives

__all__ = ["GREEK_COLUMNS", "position_greeks"]

FloatArray = npt.NDArray[np.float64]

GREEK_COLUMNS: tuple[str, ...] = (
    "forward",
    "vol",
    "sigma_F",
    "sigma_FF",
    "delta",
    "gamma",
    "vega",
    "vanna",
    "volga",
    "theta",
    "mv_delta",
    "eff_gamma",
    "dollar_delta",
    "dollar_gamma",
)
"""Columns of :func:`position_greeks`: ``forward`` (USD), ``vol`` (decimal), ``sigma_F`` (per
USD) and ``sigma_FF`` (per USD^2) of a unit; then position greeks (quantity x size):
``delta``/``mv_delta`` coin, ``gamma``/``eff_gamma`` coin per USD, ``vega``/``vanna``/``volga``
per 1.00 of vol, ``theta`` USD per year; ``dollar_delta = mv_delta F`` (USD per 100 % move),
``dollar_gamma = eff_gamma F**2`` (USD)."""


def position_greeks(
    positions: Positions,
    surface: MarginSurface,
    dynamics: SmileDynamics,
    *,
    hull_white: HullWhiteDelta | None = None,
) -> pd.DataFrame:
    """Greeks of every position, indexed by symbol (see :data:`GREEK_COLUMNS`).

    Parameters
    ----------
    positions:
        Resolved portfolio.
    surface:
        Surface at the margin instant; smile slope and curvature in ``k`` come from its
        analytic ``smile_derivatives`` when it has one, else central differences.
    dynamics:
        How the smile follows the forward.
    hull_white:
        When given, ``mv_delta`` is Hull & White's regression form
        ``delta + vega / (F sqrt(t)) (a + b d + c d**2)`` (:mod:`volcal.risk.hull_white`)
        instead of the dynamic's ``delta + vega sigma_F``; ``eff_gamma`` stays the dynamic's.

    Returns
    -------
    DataFrame
        One row per position; sum the rows for the portfolio.
    """
    legs = _legs(positions, surface)
    n = len(positions)
    out = {c: np.zeros(n) for c in GREEK_COLUMNS}
    out["forward"] = legs.forward.copy()
    opt = legs.option
    if opt.any():
        strike, t, call, fwd = legs.strike[opt], legs.t[opt], legs.call[opt], legs.forward[opt]
        vol, s1, s2 = smile_derivatives(surface, strike, t)
        sf, sff = dynamics.vol_derivatives(fwd, s1, s2)
        g = black_greeks(fwd, strike, t, vol, call)
        size = legs.size[opt]
        delta, gamma, vega = np.asarray(g.delta), np.asarray(g.gamma), np.asarray(g.vega)
        vanna, volga = np.asarray(g.vanna), np.asarray(g.volga)
        out["vol"][opt] = vol
        out["sigma_F"][opt] = sf
        out["sigma_FF"][opt] = sff
        out["delta"][opt] = size * delta
        out["gamma"][opt] = size * gamma
        out["vega"][opt] = size * vega
        out["vanna"][opt] = size * vanna
        out["volga"][opt] = size * volga
        out["theta"][opt] = size * np.asarray(g.theta)
        if hull_white is None:
            out["mv_delta"][opt] = size * (delta + vega * sf)
        else:
            out["mv_delta"][opt] = size * hull_white.delta(
                fwd, np.maximum(t, 1e-12), delta, vega, call
            )
        out["eff_gamma"][opt] = size * (gamma + 2 * vanna * sf + volga * sf**2 + vega * sff)
    fut = ~opt
    if fut.any():
        d = np.where(legs.inverse[fut], legs.size[fut] / legs.forward[fut], legs.size[fut])
        out["delta"][fut] = d
        out["mv_delta"][fut] = d
        out["vol"][fut] = np.nan
    out["dollar_delta"] = out["mv_delta"] * out["forward"]
    out["dollar_gamma"] = out["eff_gamma"] * out["forward"] ** 2
    return pd.DataFrame(out, index=pd.Index(positions.table["symbol"].astype(str), name="symbol"))
