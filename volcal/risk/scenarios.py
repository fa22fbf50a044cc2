"""Scenario grids and full revaluation of positions on a surface.

A scenario moves every forward by the same relative amount ``m`` (``F1 = F0 (1 + m)``), lets
the smile follow the forward by a :class:`~volcal.risk.dynamics.SmileDynamics`, then shocks
every vol *relatively* by a tenor-scaled amount, and lets ``dt`` years pass:

    sigma_1(K, t) = sigma_0(K (1+m)**-(1-SSR), t) * (1 + v * shock_v(DTE)),   v in {-1, 0, +1}
    shock_up(DTE) = up_30d * (30 / DTE)**p,   p = p_short below 30 days, p_long above

(the ``(30/DTE)**p`` shape of the exchanges' grids; ``DTE`` floored at ``min_dte`` days). The
option is repriced by Black-76 at ``F1``, ``t - dt`` (intrinsic at or past expiry) and the
shocked vol of its own expiry's smile.

**Units of the P&L.** Coin-settled (inverse) positions are valued in coin,
``value_coin = value_usd / F`` with ``F`` the instrument's forward; at expiry that is the USD
payoff divided by the settlement price. Their P&L is ``value_coin(scenario) - value_coin(now)``
in coin, and its USD amount is the coin P&L times the scenario's settlement (spot) price:
**P&L in coin = USD P&L / settlement price**, for every position. Linear positions have the
USD P&L ``value_usd(scenario) - value_usd(now)`` and the same identity gives their coin P&L.

Grids:

* :func:`pm_grid`: Deribit-portfolio-margin-like, ``n_points`` moves evenly over ``[-R, R]`` x
  vol up/same/down, plus extended moves (default -66 % .. +500 %) at unchanged vol whose losses
  count ``(R / |m|)**q`` (``q = 1`` the exchange's weighting: a linear position is charged the
  same as at ``R``, short convexity more);
* :func:`span_grid`: SPAN-like 16 scenarios, price 0, +-1/3, +-2/3, +-1 of ``R`` x vol up/down,
  plus +-3 ``R`` at unchanged vol counted at 35 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import ndtr

from volcal.risk._kernels import interpolate_tables, shocked_black
from volcal.risk.dynamics import SmileDynamics
from volcal.risk.positions import Positions
from volcal.risk.surfaces import MarginSurface

__all__ = [
    "DEFAULT_EXTENDED_MOVES",
    "ScenarioPnL",
    "ScenarioSet",
    "VolShock",
    "black_usd",
    "pm_grid",
    "revalue",
    "span_grid",
]

FloatArray = npt.NDArray[np.float64]

DEFAULT_EXTENDED_MOVES: tuple[float, ...] = (-0.66, -0.5, -0.33, 0.33, 0.5, 1.0, 2.0, 5.0)
"""Extended price moves of the portfolio-margin grid (relative), those beyond ``R`` used."""


@dataclass(frozen=True)
class VolShock:
    """Relative vol shocks by tenor: ``shock(DTE) = x_30d * (30 / DTE)**p``.

    Attributes
    ----------
    up_30d, down_30d:
        Relative up and down shocks of a 30-day option (0.5 = vol times 1.5 / times 0.5).
    p_short, p_long:
        Exponents for ``DTE < 30`` and ``DTE >= 30`` days.
    min_dte:
        ``DTE`` floor in days for the scaling (shorter options get the ``min_dte`` shock).
    max_down:
        Cap of the relative down shock (< 1 keeps vols positive).
    up_floor:
        Floor of the up-shocked vol (decimal, 0 = none).
    """

    up_30d: float
    down_30d: float
    p_short: float = 0.3
    p_long: float = 0.13
    min_dte: float = 1.0
    max_down: float = 0.9
    up_floor: float = 0.0

    def __post_init__(self) -> None:
        if not (self.up_30d >= 0 and self.down_30d >= 0 and 0 <= self.max_down < 1):
            raise ValueError(f"VolShock needs up_30d, down_30d >= 0 and 0 <= max_down < 1: {self}")
        if not (self.min_dte > 0):
            raise ValueError(f"VolShock needs min_dte > 0, got {self.min_dte}")

    def scale(self, dte: npt.ArrayLike) -> FloatArray:
        """``(30 / DTE)**p`` with the exponent of each side of 30 days."""
        d = np.maximum(np.asarray(dte, dtype=float), self.min_dte)
        p = np.where(d < 30.0, self.p_short, self.p_long)
        return np.asarray((30.0 / d) ** p)

    def up(self, dte: npt.ArrayLike) -> FloatArray:
        """Relative up shock at ``DTE`` days."""
        return np.asarray(self.up_30d * self.scale(dte))

    def down(self, dte: npt.ArrayLike) -> FloatArray:
        """Relative down shock at ``DTE`` days (capped at ``max_down``)."""
        return np.asarray(np.minimum(self.down_30d * self.scale(dte), self.max_down))

    def apply(self, vol: FloatArray, direction: FloatArray, dte: FloatArray) -> FloatArray:
        """Shocked vols; ``direction`` +1 up, 0 none, -1 down (broadcast)."""
        up = np.maximum(vol * (1.0 + self.up(dte)), self.up_floor)
        down = vol * (1.0 - self.down(dte))
        return np.asarray(np.where(direction > 0, up, np.where(direction < 0, down, vol)))

    def scaled(self, factor: float) -> VolShock:
        """The same shape with both shocks times ``factor`` (``down`` still capped)."""
        return VolShock(
            self.up_30d * factor,
            self.down_30d * factor,
            self.p_short,
            self.p_long,
            self.min_dte,
            self.max_down,
            self.up_floor,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)


@dataclass(frozen=True, eq=False)
class ScenarioSet:
    """Scenarios: forward move, vol-shock direction, loss weight, a common time step.

    Attributes
    ----------
    move:
        Relative forward moves ``F1/F0 - 1`` (> -1).
    vol:
        -1 (down shock), 0, +1 (up shock).
    weight:
        Multiplier of each scenario's loss in the margin (1, or ``R/|m|`` for extended moves,
        0.35 for SPAN's extreme moves).
    name:
        Label of each scenario, e.g. ``"pm:-8.0%:up"``.
    dt:
        Years that pass in every scenario (the margin horizon).
    """

    move: FloatArray
    vol: FloatArray
    weight: FloatArray
    name: tuple[str, ...]
    dt: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.name)
        for attr in ("move", "vol", "weight"):
            arr = np.asarray(getattr(self, attr), dtype=float)
            object.__setattr__(self, attr, arr)
            if arr.shape != (n,):
                raise ValueError(f"ScenarioSet.{attr} needs {n} values, has shape {arr.shape}")
        if np.any(self.move <= -1):
            raise ValueError("ScenarioSet: moves must be > -100 %")
        if self.dt < 0:
            raise ValueError(f"ScenarioSet: dt must be >= 0, got {self.dt}")

    def __len__(self) -> int:
        return len(self.name)

    def __add__(self, other: ScenarioSet) -> ScenarioSet:
        if self.dt != other.dt:
            raise ValueError("cannot join scenario sets with different dt")
        return ScenarioSet(
            np.concatenate([self.move, other.move]),
            np.concatenate([self.vol, other.vol]),
            np.concatenate([self.weight, other.weight]),
            self.name + other.name,
            self.dt,
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per scenario."""
        return pd.DataFrame(
            {"move": self.move, "vol": self.vol, "weight": self.weight}, index=list(self.name)
        )


def _label(prefix: str, m: float, v: float) -> str:
    word = {1.0: "up", 0.0: "same", -1.0: "down"}[float(v)]
    return f"{prefix}:{m * 100:+.1f}%:{word}"


def pm_grid(
    price_range: float,
    *,
    n_points: int = 9,
    extended: Sequence[float] = DEFAULT_EXTENDED_MOVES,
    extended_weight_exponent: float = 1.0,
    extended_weights: Sequence[float] | None = None,
    dt: float = 0.0,
) -> ScenarioSet:
    """Deribit-portfolio-margin-like grid.

    Parameters
    ----------
    price_range:
        ``R``, relative (0.16 = +-16 %).
    n_points:
        Moves evenly spaced over ``[-R, R]`` (odd, to include 0).
    extended:
        Extended relative moves; those with ``|m| > R`` are used, vol unchanged, weight
        ``(R / |m|)**q``.
    extended_weight_exponent:
        ``q >= 0`` of the extended moves' weight: 1 is the exchange's ``R/|m|`` (issue 6), 2
        weights them by the square (``inf`` drops them, 0 counts them in full).
    extended_weights:
        Explicit weight of each move of ``extended`` (same order, e.g. its tail probability
        over ``1 - confidence``, see :func:`volcal.risk.params.calibrate_margin_params`);
        replaces ``(R/|m|)**q`` when given.
    dt:
        Time step (years).

    Returns
    -------
    ScenarioSet
        ``3 n_points`` regular scenarios then the extended ones (35 by default).
    """
    if not (0 < price_range < 1) or n_points < 2:
        raise ValueError(f"pm_grid needs 0 < price_range < 1 and n_points >= 2: {price_range}")
    if not extended_weight_exponent >= 0:
        raise ValueError(f"pm_grid needs extended_weight_exponent >= 0: {extended_weight_exponent}")
    moves = np.linspace(-price_range, price_range, n_points)
    mm, vv = np.meshgrid(moves, [1.0, 0.0, -1.0], indexing="ij")
    m, v = mm.ravel(), vv.ravel()
    names = [_label("pm", a, b) for a, b in zip(m, v, strict=True)]
    if extended_weights is not None and len(extended_weights) != len(extended):
        raise ValueError(
            f"pm_grid: {len(extended_weights)} extended_weights for {len(extended)} moves"
        )
    keep = [i for i, x in enumerate(extended) if abs(x) > price_range and x > -1]
    ext = np.array([extended[i] for i in keep], dtype=float)
    names += [_label("pm-ext", a, 0.0) for a in ext]
    if extended_weights is None:
        w_ext = (price_range / np.abs(ext)) ** extended_weight_exponent
    else:
        w_ext = np.array([float(extended_weights[i]) for i in keep], dtype=float)
        if np.any(~np.isfinite(w_ext) | (w_ext < 0)):
            raise ValueError(f"pm_grid: extended_weights must be >= 0: {extended_weights}")
    return ScenarioSet(
        np.concatenate([m, ext]),
        np.concatenate([v, np.zeros(ext.size)]),
        np.concatenate([np.ones(m.size), w_ext]),
        tuple(names),
        dt,
    )


def span_grid(
    price_range: float,
    *,
    extreme_multiple: float = 3.0,
    extreme_weight: float = 0.35,
    dt: float = 0.0,
) -> ScenarioSet:
    """SPAN-like 16 scenarios (CME SPAN's risk array).

    Price ``0, +-R/3, +-2R/3, +-R`` x vol up/down (14), then ``+-extreme_multiple R`` at
    unchanged vol with weight ``extreme_weight`` (moves below -99 % are clipped to -99 %).
    """
    if not (0 < price_range < 1):
        raise ValueError(f"span_grid needs 0 < price_range < 1, got {price_range}")
    fr = [0.0, 1 / 3, -1 / 3, 2 / 3, -2 / 3, 1.0, -1.0]
    m = np.repeat(np.array(fr) * price_range, 2)
    v = np.tile([1.0, -1.0], len(fr))
    ext = np.maximum(np.array([1.0, -1.0]) * extreme_multiple * price_range, -0.99)
    names = [_label("span", a, b) for a, b in zip(m, v, strict=True)]
    names += [_label("span-ext", a, 0.0) for a in ext]
    return ScenarioSet(
        np.concatenate([m, ext]),
        np.concatenate([v, [0.0, 0.0]]),
        np.concatenate([np.ones(m.size), [extreme_weight, extreme_weight]]),
        tuple(names),
        dt,
    )


@dataclass(frozen=True, eq=False)
class ScenarioPnL:
    """Full-revaluation results, positions x scenarios (quantities and sizes included).

    Attributes
    ----------
    scenarios:
        The scenario set.
    symbols:
        Position symbols (rows).
    value0_usd:
        Model value of each position now (USD; futures 0).
    value_usd:
        Model value under each scenario (USD), shape ``(positions, scenarios)``.
    pnl_coin, pnl_usd:
        P&L under each scenario (coin; USD = coin x the scenario's spot).
    spot0:
        Spot now (USD per coin).
    account_currency:
        ``"coin"`` or ``"usd"`` (see :attr:`Positions.account_currency`).
    """

    scenarios: ScenarioSet
    symbols: tuple[str, ...]
    value0_usd: FloatArray
    value_usd: FloatArray
    pnl_coin: FloatArray
    pnl_usd: FloatArray
    spot0: float
    account_currency: str = "coin"

    @property
    def pnl_account(self) -> FloatArray:
        """P&L in the account currency."""
        return self.pnl_coin if self.account_currency == "coin" else self.pnl_usd

    def weighted_loss(self) -> FloatArray:
        """Portfolio loss per scenario times its weight, in the account currency."""
        return np.asarray(-self.pnl_account.sum(axis=0) * self.scenarios.weight)

    def worst(self) -> tuple[str, float]:
        """``(scenario name, weighted loss)`` of the worst scenario (loss floored at 0)."""
        loss = self.weighted_loss()
        i = int(np.argmax(loss))
        return self.scenarios.name[i], max(float(loss[i]), 0.0)

    def to_frame(self, unit: str = "coin") -> pd.DataFrame:
        """P&L table, scenarios x positions (``unit`` ``"coin"`` or ``"usd"``)."""
        data = self.pnl_coin if unit == "coin" else self.pnl_usd
        return pd.DataFrame(data.T, index=list(self.scenarios.name), columns=list(self.symbols))


@dataclass(frozen=True, eq=False)
class _Legs:
    """Arrays of one portfolio, prepared once for repricing."""

    strike: FloatArray
    t: FloatArray
    call: npt.NDArray[np.bool_]
    size: FloatArray
    forward: FloatArray
    option: npt.NDArray[np.bool_]
    inverse: npt.NDArray[np.bool_]
    extra: dict[str, FloatArray] = field(default_factory=dict)


def _legs(positions: Positions, surface: MarginSurface) -> _Legs:
    tab = positions.table
    t = tab["t"].to_numpy(dtype=float)
    option = positions.is_option
    fwd = np.asarray(surface.forward(np.maximum(t, 0.0)), dtype=float)
    chain_fwd = tab["chain_forward"].to_numpy(dtype=float)
    fwd = np.where(~option & np.isfinite(chain_fwd), chain_fwd, fwd)
    if not np.all(np.isfinite(fwd) & (fwd > 0)):
        bad = tab["symbol"].to_numpy()[~(np.isfinite(fwd) & (fwd > 0))]
        raise ValueError(f"no forward for {list(bad)[:10]}")
    return _Legs(
        strike=tab["strike"].to_numpy(dtype=float),
        t=t,
        call=tab["call"].to_numpy(dtype=bool),
        size=positions.quantity * tab["contract_size"].to_numpy(dtype=float),
        forward=fwd,
        option=option,
        inverse=positions.is_inverse,
    )


def black_usd(
    forward: FloatArray,
    strike: FloatArray,
    t: FloatArray,
    vol: FloatArray,
    call: npt.NDArray[np.bool_],
) -> FloatArray:
    """Black-76 prices (``D = 1``) by the textbook formula, broadcast; intrinsic at ``t <= 0``
    or ``vol <= 0``.

    ``call = F N(d1) - K N(d2)``, ``put = K N(-d2) - F N(-d1)``. About ten times faster than
    :func:`volcal.black_price`, whose normalised-Black kernel keeps a few ulps of *relative*
    accuracy in the far wings; here the absolute error is ~1e-16 F, all that P&L needs.
    """
    f, k, tt, v, c = np.broadcast_arrays(forward, strike, t, vol, call)
    live = (tt > 0) & (v > 0)
    sd = np.where(live, v * np.sqrt(np.where(live, tt, 1.0)), 1.0)
    d1 = np.log(f / k) / sd + 0.5 * sd
    d2 = d1 - sd
    sign = np.where(c, 1.0, -1.0)
    price = sign * (f * ndtr(sign * d1) - k * ndtr(sign * d2))
    intrinsic = np.maximum(sign * (f - k), 0.0)
    return np.asarray(np.where(live, np.maximum(price, 0.0), intrinsic))


TABLE_POINTS = 4096
"""Points per expiry of a tabulated smile (see :func:`_surface_vols`)."""


def _surface_vols(
    surface: MarginSurface, strike: FloatArray, t: FloatArray, tabulate: bool | None
) -> FloatArray:
    """Surface vols at ``(strike, t)`` (any shapes); optionally through a table of each
    expiry's smile.

    With few distinct expiries and many strikes (a large book under many moves), each
    expiry's smile is evaluated once on :data:`TABLE_POINTS` log-strikes spanning the needed
    range and interpolated linearly: the error is ``h**2/8 |sigma''|`` for spacing ``h`` (about
    4e-7 of vol for a 5-wide range and curvature 2). ``tabulate=None`` does so when it needs
    fewer surface evaluations than the direct call.
    """
    ts, back = np.unique(t, return_inverse=True)
    back = back.reshape(t.shape)
    if tabulate is None:
        tabulate = ts.size * TABLE_POINTS < strike.size
    if not tabulate:
        return np.asarray(surface.implied_vol(strike, t), dtype=float)
    x = np.log(strike)
    out = np.empty(strike.shape)
    lo = np.full(ts.size, np.inf)
    hi = np.full(ts.size, -np.inf)
    np.minimum.at(lo, back, x)
    np.maximum.at(hi, back, x)
    frac = np.linspace(0.0, 1.0, TABLE_POINTS)
    grid = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
    table = np.asarray(
        surface.implied_vol(np.exp(grid), np.broadcast_to(ts[:, None], grid.shape)), dtype=float
    )
    for i in range(ts.size):
        sel = back == i
        out[sel] = np.interp(x[sel], grid[i], table[i])
    return out


def _move_vols(
    surface: MarginSurface,
    strike: FloatArray,
    t: FloatArray,
    moves: FloatArray,
    dynamics: SmileDynamics,
    tabulate: bool | None,
) -> FloatArray:
    """Surface vols at the lookup strikes of every distinct move, shape ``(moves, n)``.

    The lookup strike is ``K`` times a factor of the move (``(1+m)**-(1-SSR)``), so in
    ``ln K`` each move shifts all strikes alike: with tables (see :func:`_surface_vols`),
    each expiry's smile is tabulated once over ``[min ln K + min shift, max ln K + max
    shift]`` and read by a compiled interpolation.
    """
    ts, row = np.unique(t, return_inverse=True)
    if tabulate is None:
        tabulate = ts.size * TABLE_POINTS < moves.size * strike.size
    if not tabulate:
        lookup = dynamics.lookup_strike(strike[None, :], moves[:, None])
        tt = np.broadcast_to(t, lookup.shape)
        return np.asarray(surface.implied_vol(lookup, tt), dtype=float)
    shift = np.log(dynamics.lookup_strike(np.ones(moves.size), moves))
    x = np.log(strike)
    lo = np.full(ts.size, np.inf)
    hi = np.full(ts.size, -np.inf)
    np.minimum.at(lo, row, x)
    np.maximum.at(hi, row, x)
    lo += float(shift.min())
    hi += float(shift.max())
    frac = np.linspace(0.0, 1.0, TABLE_POINTS)
    grid = lo[:, None] + (hi - lo)[:, None] * frac[None, :]
    table = np.ascontiguousarray(
        surface.implied_vol(np.exp(grid), np.broadcast_to(ts[:, None], grid.shape)), dtype=float
    )
    width = hi - lo
    inv_h = np.divide(TABLE_POINTS - 1.0, width, out=np.zeros(ts.size), where=width > 0)
    out = np.empty((moves.size, strike.size))
    interpolate_tables(x, shift, row.astype(np.int64), table, lo, inv_h, out)
    return out


def option_values(
    surface: MarginSurface,
    strike: FloatArray,
    t: FloatArray,
    call: npt.NDArray[np.bool_],
    forward: FloatArray,
    move: FloatArray,
    vol_dir: FloatArray,
    dt: float | FloatArray,
    dynamics: SmileDynamics,
    shock: VolShock,
    tabulate: bool | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Black-76 USD values of unit options under scenarios, and the vols used.

    Shapes: option arrays ``(n,)``, scenario arrays ``(s,)`` (``dt``, years, a scalar or one
    per scenario); returns ``(s, n)`` arrays. The surface is evaluated once per distinct move
    (the vol shock and time step do not change the lookup strike); ``tabulate`` as in
    :func:`_surface_vols`. Black-76 and the shocks run in a compiled loop
    (:mod:`volcal.risk._kernels`), the same formulas as :func:`black_usd` and
    :meth:`VolShock.apply`.
    """
    strike = np.ascontiguousarray(strike, dtype=float)
    t = np.ascontiguousarray(t, dtype=float)
    move = np.asarray(move, dtype=float)
    moves, inv = np.unique(move, return_inverse=True)
    base = np.ascontiguousarray(_move_vols(surface, strike, t, moves, dynamics, tabulate))
    dte = t * 365.0
    s, n = move.size, strike.size
    value = np.empty((s, n))
    vol = np.empty((s, n))
    shocked_black(
        base,
        inv.ravel().astype(np.int64),
        1.0 + move,
        np.ascontiguousarray(vol_dir, dtype=float),
        np.ascontiguousarray(np.broadcast_to(np.asarray(dt, dtype=float), (s,))),
        np.ascontiguousarray(forward, dtype=float),
        strike,
        t,
        np.ascontiguousarray(call, dtype=np.bool_),
        np.ascontiguousarray(shock.up(dte), dtype=float),
        np.ascontiguousarray(shock.down(dte), dtype=float),
        float(shock.up_floor),
        value,
        vol,
    )
    return value, vol


def _unique_instruments(
    strike: FloatArray, t: FloatArray, call: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """``(first, back)``: index of one position per distinct ``(strike, t, call)`` and, per
    position, the index of its instrument in ``first``."""
    order = np.lexsort((strike, t, call))
    ks, ts, cs = strike[order], t[order], call[order]
    new = np.ones(order.size, dtype=bool)
    new[1:] = (ks[1:] != ks[:-1]) | (ts[1:] != ts[:-1]) | (cs[1:] != cs[:-1])
    gid = np.cumsum(new) - 1
    back = np.empty(order.size, dtype=np.intp)
    back[order] = gid
    return order[new], back


def revalue(
    positions: Positions,
    surface: MarginSurface,
    scenarios: ScenarioSet,
    dynamics: SmileDynamics,
    shock: VolShock,
    *,
    tabulate: bool | None = None,
) -> ScenarioPnL:
    """Reprice every position under every scenario (full revaluation).

    Parameters
    ----------
    positions:
        Resolved portfolio (:func:`~volcal.risk.positions.resolve_positions`).
    surface:
        Surface at the margin instant (:class:`~volcal.risk.surfaces.MarginSurface`);
        options are valued on its forward and vols, futures at the chain's forward of their
        expiry (the surface's forward when the chain has none).
    scenarios, dynamics, shock:
        What moves and how the smile follows.
    tabulate:
        Read the surface through per-expiry tables of its smile (``None``: when that needs
        fewer surface evaluations, i.e. many distinct strikes on few expiries).

    Returns
    -------
    ScenarioPnL
        Values and P&L, positions x scenarios (see the module docstring for units).
    """
    legs = _legs(positions, surface)
    n, s = len(positions), len(scenarios)
    move = scenarios.move
    growth = 1.0 + move
    spot1 = positions.spot * growth[None, :]
    value0 = np.zeros(n)
    value = np.empty((n, s))
    pnl_coin = np.empty((n, s))
    pnl_usd = np.empty((n, s))
    size = legs.size[:, None]
    opt = legs.option
    if opt.any():
        # reprice each distinct instrument once (a book holds many positions per instrument),
        # as unit values: USD value, coin P&L (value / F) and USD P&L; the first scenario
        # is "now" (no move, no shock, no time)
        ko, to, co = legs.strike[opt], legs.t[opt], legs.call[opt]
        first, back = _unique_instruments(ko, to, co)
        fu = legs.forward[opt][first]
        both = option_values(
            surface,
            ko[first],
            to[first],
            co[first],
            fu,
            np.concatenate([[0.0], move]),
            np.concatenate([[0.0], scenarios.vol]),
            np.concatenate([[0.0], np.full(s, scenarios.dt)]),
            dynamics,
            shock,
            tabulate,
        )[0]
        v0, v1 = both[0], both[1:].T
        unit_coin = v1 / (fu[:, None] * growth[None, :]) - (v0 / fu)[:, None]
        rows = np.nonzero(opt)[0]
        value0[rows] = v0[back]
        value[rows] = v1[back]
        inv = legs.inverse[rows]
        r_inv, r_lin = rows[inv], rows[~inv]
        if r_inv.size:
            pnl_coin[r_inv] = size[r_inv] * unit_coin[back[inv]]
            pnl_usd[r_inv] = pnl_coin[r_inv] * spot1
        if r_lin.size:
            pnl_usd[r_lin] = size[r_lin] * (v1[back[~inv]] - v0[back[~inv]][:, None])
            pnl_coin[r_lin] = pnl_usd[r_lin] / spot1
    fut = np.nonzero(~opt)[0]
    if fut.size:
        f0 = legs.forward[fut][:, None]
        f1 = f0 * growth[None, :]
        inverse = legs.inverse[fut][:, None]
        # inverse: face N USD is N/F0 coin of exposure: USD value N F1/F0, coin P&L
        # N (1/F0 - 1/F1); linear: USD value F1 - F0 per coin of size.
        value[fut] = np.where(inverse, f1 / f0, f1 - f0)
        value0[fut] = np.where(inverse[:, 0], 1.0, 0.0)
        coin = size[fut] * (1.0 / f0 - 1.0 / f1)
        usd = size[fut] * (f1 - f0)
        pnl_coin[fut] = np.where(inverse, coin, usd / spot1)
        pnl_usd[fut] = np.where(inverse, coin * spot1, usd)
    return ScenarioPnL(
        scenarios=scenarios,
        symbols=tuple(positions.table["symbol"].to_numpy(dtype=object).tolist()),
        value0_usd=legs.size * value0,
        value_usd=size * value,
        pnl_coin=pnl_coin,
        pnl_usd=pnl_usd,
        spot0=positions.spot,
        account_currency=positions.account_currency,
    )
