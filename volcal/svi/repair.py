"""Quote repair: the smallest change to mid prices that removes static arbitrage.

Per expiry, the quotes become normalised call prices ``c = C/(D F)`` against forward moneyness
``kappa = K/F`` (puts by put-call parity, ``C = P + D (F - K)``). Mid prices ``c_obs`` are moved
to ``c`` minimising the spread-weighted L1 distance

    sum_i |c_i - c_obs_i| / h_i,        h_i = (ask_i - bid_i) / (2 D F)   (half-spread)

subject to the conditions of no static arbitrage among the quotes (Carr & Madan 2005; the
calendar condition in forward moneyness as in Gatheral & Jacquier 2014, section 2):

* bounds: ``max(1 - kappa, 0) <= c <= 1``;
* vertical spreads: ``-1 <= (c_{j+1} - c_j)/(kappa_{j+1} - kappa_j) <= 0``;
* butterflies: slopes non-decreasing in ``kappa``, including the chord from ``(0, 1)`` (the
  price of a zero-strike call) to the first quote;
* calendar spreads: at every quote's ``kappa`` of an expiry, ``c`` must not exceed the next
  expiry's largest convex price function through its quotes (linear interpolation between
  its quotes, the chord from ``(0, 1)`` below its first quote, its last price beyond its last
  quote). At fixed ``kappa``, ``c`` is increasing in total variance ``w(k)``, ``k = ln kappa``,
  so this is "``w`` non-decreasing in ``t``" in price terms.

This is a linear programme (auxiliary ``u_i >= |c_i - c_obs_i|``) solved by SciPy's
``linprog(method="highs")``. Bid and ask move with their mid (the spread is kept).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import sparse
from scipy.optimize import linprog

from volcal.errors import CalibrationError
from volcal.implied import implied_vol
from volcal.svi.arbitrage import quote_arbitrage
from volcal.svi.quotes import quotes_frame

__all__ = ["RepairReport", "repair_quotes"]

FloatArray = npt.NDArray[np.float64]

MOVE_COLUMNS = [
    "symbol",
    "expiry",
    "strike",
    "call",
    "old_mid_usd",
    "new_mid_usd",
    "change_usd",
    "change_half_spreads",
    "bid_usd",
    "ask_usd",
    "within_bid_ask",
]


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_quotes` moved.

    Attributes
    ----------
    moves:
        One row per moved quote: ``symbol, expiry, strike, call``, ``old_mid_usd``,
        ``new_mid_usd``, ``change_usd``, ``change_half_spreads`` (change / half-spread),
        the original ``bid_usd, ask_usd`` and ``within_bid_ask`` (the new mid inside the
        original quote).
    n_quotes:
        Quotes taking part in the repair.
    objective:
        ``sum |change| / half_spread`` at the optimum.
    violations_before, violations_after:
        Violated vertical / butterfly / calendar spreads among the mids
        (:func:`volcal.svi.arbitrage.quote_arbitrage`, tolerance ``check_tol``) before and
        after the repair.
    success:
        True when HiGHS reported an optimal solution.
    message:
        HiGHS's message.
    """

    moves: pd.DataFrame
    n_quotes: int
    objective: float
    violations_before: int
    violations_after: int
    success: bool
    message: str
    check_tol: float = 1e-9
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_moved(self) -> int:
        """Number of quotes whose mid moved."""
        return len(self.moves)

    def summary(self) -> str:
        """One paragraph of text."""
        return (
            f"quote repair: {self.n_moved} of {self.n_quotes} mids moved "
            f"(sum |change|/half-spread = {self.objective:.4g}); violated spreads "
            f"{self.violations_before} -> {self.violations_after}; "
            f"{'optimal' if self.success else 'FAILED'}: {self.message}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form."""
        mv = self.moves.copy()
        mv["expiry"] = mv["expiry"].astype(str)
        return {
            "moves": mv.to_dict(orient="records"),
            "n_quotes": self.n_quotes,
            "objective": self.objective,
            "violations_before": self.violations_before,
            "violations_after": self.violations_after,
            "success": self.success,
            "message": self.message,
            "check_tol": self.check_tol,
            "settings": dict(self.settings),
        }


def _participants(q: pd.DataFrame, otm_only: bool) -> npt.NDArray[np.bool_]:
    n = len(q)
    ok = np.ones(n, dtype=bool)
    if "filter_reason" in q.columns:
        ok &= (q["filter_reason"].fillna("").astype(str) == "").to_numpy()
    bid = q["bid_usd"].to_numpy(dtype=float)
    ask = q["ask_usd"].to_numpy(dtype=float)
    t = q["t"].to_numpy(dtype=float)
    f = q["forward"].to_numpy(dtype=float)
    kk = q["strike"].to_numpy(dtype=float)
    ok &= np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask >= bid)
    ok &= np.isfinite(t) & (t > 0) & (f > 0) & (kk > 0)
    if otm_only:
        call = q["call"].to_numpy(dtype=bool)
        ok &= call == (kk >= f)
    return ok


def repair_quotes(
    chain: Any,
    *,
    otm_only: bool = True,
    spread_floor: float = 1e-8,
    check_tol: float = 1e-9,
) -> tuple[Any, RepairReport]:
    """Move mid prices as little as possible (L1, in half-spreads) to remove static arbitrage.

    Parameters
    ----------
    chain:
        An ``OptionChain`` or a quotes DataFrame (columns of ``docs/conventions.md``:
        ``symbol, expiry, t, strike, call, forward, bid_usd, ask_usd`` and optionally
        ``discount``, ``filter_reason``, ``usd_per_coin``).
    otm_only:
        Repair the out-of-the-money quotes only (calls ``K >= F``, puts ``K < F``; the quotes
        the surfaces are fitted to), one per strike. With False every two-sided quote takes
        part; a call and a put at one strike then share one call price (parity).
    spread_floor:
        Floor on the half-spread in normalised price ``C/(D F)`` used in the weights.
    check_tol:
        Tolerance (normalised price) of the before/after violation counts.

    Returns
    -------
    (chain, RepairReport)
        The chain (same type as given) with ``bid_usd, ask_usd`` shifted by each quote's
        change of mid, coin prices and ``iv_bid, iv_ask`` recomputed; and the report.

    Raises
    ------
    CalibrationError
        When HiGHS finds no solution (it always exists: ``c = max(1 - kappa, 0)`` is
        feasible, so this signals a numerical failure).
    """
    q = quotes_frame(chain).copy()
    part = _participants(q, otm_only)
    idx = np.flatnonzero(part)
    sub = q.iloc[idx]
    f = sub["forward"].to_numpy(dtype=float)
    d = sub["discount"].to_numpy(dtype=float) if "discount" in sub.columns else np.ones(idx.size)
    kk = sub["strike"].to_numpy(dtype=float)
    call = sub["call"].to_numpy(dtype=bool)
    bid = sub["bid_usd"].to_numpy(dtype=float)
    ask = sub["ask_usd"].to_numpy(dtype=float)
    mid = 0.5 * (bid + ask)
    scale = d * f
    kappa = kk / f
    obs = np.where(call, mid, mid + d * (f - kk)) / scale
    half = np.maximum(0.5 * (ask - bid) / scale, spread_floor)
    # one price variable per (expiry, strike)
    expiry = sub["expiry"].to_numpy()
    keys = pd.MultiIndex.from_arrays([expiry, kk])
    var_of, uniq = pd.factorize(keys)
    nv = len(uniq)
    n = idx.size
    v_kappa = np.zeros(nv)
    v_kappa[var_of] = kappa
    v_expiry = np.asarray(uniq.get_level_values(0))
    v_t = np.zeros(nv)
    v_t[var_of] = sub["t"].to_numpy(dtype=float)

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rhs: list[float] = []

    def add(entries: list[tuple[int, float]], b: float) -> None:
        r = len(rhs)
        for c, v in entries:
            rows.append(r)
            cols.append(c)
            vals.append(v)
        rhs.append(b)

    # |c - obs| <= u  (u_i is variable nv + i)
    for i in range(n):
        add([(int(var_of[i]), 1.0), (nv + i, -1.0)], float(obs[i]))
        add([(int(var_of[i]), -1.0), (nv + i, -1.0)], float(-obs[i]))
    curves: list[tuple[float, FloatArray, npt.NDArray[np.int64]]] = []
    for e in pd.unique(v_expiry):
        js = np.flatnonzero(v_expiry == e)
        js = js[np.argsort(v_kappa[js])]
        x = v_kappa[js]
        curves.append((float(v_t[js[0]]), x, js))
        gaps = np.diff(x)
        for a in range(js.size - 1):
            j0, j1 = int(js[a]), int(js[a + 1])
            add([(j1, 1.0), (j0, -1.0)], 0.0)  # c non-increasing
            add([(j0, 1.0), (j1, -1.0)], float(gaps[a]))  # slope >= -1
        if js.size >= 2:
            # chord from (0, 1) to the first quote below the first slope
            j0, j1 = int(js[0]), int(js[1])
            add([(j0, 1.0 / x[0] + 1.0 / gaps[0]), (j1, -1.0 / gaps[0])], 1.0 / x[0])
        for a in range(1, js.size - 1):
            jm, j0, jp = int(js[a - 1]), int(js[a]), int(js[a + 1])
            g0, g1 = gaps[a - 1], gaps[a]
            # (c0 - cm)/g0 <= (cp - c0)/g1
            add([(j0, 1.0 / g0 + 1.0 / g1), (jm, -1.0 / g0), (jp, -1.0 / g1)], 0.0)
    curves.sort(key=lambda c: c[0])
    for (_, xa, ja), (_, xb, jb) in itertools.pairwise(curves):
        for xk, j in zip(xa, ja, strict=True):
            if xk <= xb[0]:
                lam = xk / xb[0]
                add([(int(j), 1.0), (int(jb[0]), -lam)], 1.0 - lam)
            elif xk >= xb[-1]:
                add([(int(j), 1.0), (int(jb[-1]), -1.0)], 0.0)
            else:
                hi = int(np.searchsorted(xb, xk))
                lam = (xk - xb[hi - 1]) / (xb[hi] - xb[hi - 1])
                add(
                    [(int(j), 1.0), (int(jb[hi - 1]), -(1.0 - lam)), (int(jb[hi]), -lam)],
                    0.0,
                )
    a_ub = sparse.csr_matrix((vals, (rows, cols)), shape=(len(rhs), nv + n))
    cost = np.concatenate([np.zeros(nv), 1.0 / half])
    bounds = [(max(1.0 - xk, 0.0), 1.0) for xk in v_kappa] + [(0.0, None)] * n
    res = linprog(
        cost,
        A_ub=a_ub,
        b_ub=np.asarray(rhs),
        bounds=bounds,
        method="highs",
        options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    )
    if res.x is None:
        raise CalibrationError(f"quote repair LP failed: {res.message}")
    c_new = np.asarray(res.x[:nv], dtype=float)[var_of]
    new_mid = np.where(call, c_new * scale, (c_new - 1.0 + kappa) * scale)
    change = new_mid - mid
    moved = np.abs(change) > 1e-12 * scale

    out = q.copy()
    if moved.any():
        rows_m = idx[moved]
        nb = bid[moved] + change[moved]
        na = ask[moved] + change[moved]
        neg = nb < 0
        na = np.where(neg, 2.0 * new_mid[moved], na)
        nb = np.where(neg, 0.0, nb)
        updates: dict[str, FloatArray] = {"bid_usd": nb, "ask_usd": na}
        if "usd_per_coin" in out.columns:
            upc = out["usd_per_coin"].to_numpy(dtype=float)[rows_m]
            updates |= {"bid_coin": nb / upc, "ask_coin": na / upc}
        tt = sub["t"].to_numpy(dtype=float)[moved]
        for name, val in (("iv_bid", nb), ("iv_ask", na)):
            updates[name] = np.asarray(
                implied_vol(val, f[moved], kk[moved], tt, call[moved], d[moved]), dtype=float
            )
        for name, val in updates.items():
            if name in out.columns:
                col = out[name].to_numpy(dtype=float, copy=True)
                col[rows_m] = val
                out[name] = col
    moves = pd.DataFrame(
        {
            "symbol": sub["symbol"].to_numpy()[moved]
            if "symbol" in sub.columns
            else idx[moved].astype(str),
            "expiry": sub["expiry"].to_numpy()[moved],
            "strike": kk[moved],
            "call": call[moved],
            "old_mid_usd": mid[moved],
            "new_mid_usd": new_mid[moved],
            "change_usd": change[moved],
            "change_half_spreads": change[moved] / (half[moved] * scale[moved]),
            "bid_usd": bid[moved],
            "ask_usd": ask[moved],
            "within_bid_ask": (new_mid[moved] >= bid[moved]) & (new_mid[moved] <= ask[moved]),
        },
        columns=MOVE_COLUMNS,
    )
    if len(moves):
        moves["expiry"] = pd.to_datetime(moves["expiry"], utc=True)
    before = quote_arbitrage(q.iloc[idx].assign(used=True), tol=check_tol)
    after = quote_arbitrage(out.iloc[idx].assign(used=True), tol=check_tol)
    report = RepairReport(
        moves=moves.reset_index(drop=True),
        n_quotes=int(n),
        objective=float(np.sum(np.abs(c_new - obs) / half)),
        violations_before=len(before),
        violations_after=len(after),
        success=bool(res.status == 0),
        message=str(res.message),
        check_tol=check_tol,
        settings={"otm_only": otm_only, "spread_floor": spread_floor},
    )
    if hasattr(chain, "with_quotes"):
        return chain.with_quotes(out), report
    return out, report
