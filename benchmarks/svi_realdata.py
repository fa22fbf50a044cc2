"""Real-data acceptance run of the SVI / SSVI / eSSVI surfaces over the shared Deribit history.

Usage::

    /work/venv/bin/python benchmarks/svi_realdata.py [--every N] [--currency BTC|ETH]
        [--models svi,ssvi,essvi] [--max-rel-spread X] [--repair] [--bounds]

Loads every snapshot (or every N-th) of BTC and ETH with :func:`volcal.load_snapshot` (default
quote filters unless ``--max-rel-spread`` is given), fits each model on expiries with
``t > 2 days`` and at least 6 two-sided OTM quotes, and prints per model: exceptions,
degenerate slices (fitted vols outside bid/ask for most quotes), the share of surfaces free of
butterfly and calendar arbitrage on the dense grid, the share of quotes inside bid/ask, the
RMSE to mid per tenor bucket (median, p95, max), the time per chain and, for raw SVI, how much
the surface's running envelope lifts the fitted smiles at their quotes. ``--repair`` fits the
chains after :func:`volcal.svi.repair_quotes`. ``--bounds`` (with ``svi``) adds two bounds
on the share of quotes inside bid/ask: the best unconstrained raw SVI smile per slice found
by a count-oriented search (:func:`svi_count_bound`) and an arbitrage-free call-price curve
per expiry (:func:`price_curve_bound`, model-free).
"""

from __future__ import annotations

import argparse
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import volcal
from volcal.chain import QuoteFilters
from volcal.svi import fit_essvi, fit_ssvi, fit_svi, repair_quotes
from volcal.svi.surface_fit import prepare_slices

REPO = Path(__file__).resolve().parents[1]
PARQUET = REPO.parent / "shared" / "data" / "deribit" / "deribit_chains_2025-12_2026-04.parquet"
BUCKETS = [
    (0.0, 7 / 365, "<=7d"),
    (7 / 365, 30 / 365, "7-30d"),
    (30 / 365, 90 / 365, "30-90d"),
    (90 / 365, 10.0, ">90d"),
]
MODELS: dict[str, Callable[..., Any]] = {"svi": fit_svi, "ssvi": fit_ssvi, "essvi": fit_essvi}


def _envelope_lift(fit: Any) -> tuple[float, int]:
    """How much the running envelope of :class:`~volcal.svi.svi_surface.SviSurface` moves the
    fitted raw SVI smiles at their own quotes: (max lift in decimal vol, quotes lifted by more
    than 1e-6 vol)."""
    surf = fit.surface
    used = fit.quotes[fit.quotes["used"]]
    worst, n = 0.0, 0
    for i, (t, p) in enumerate(zip(surf.t, surf.params, strict=True)):
        k = used.loc[np.isclose(used["t"].to_numpy(dtype=float), t), "k"].to_numpy(dtype=float)
        if not k.size:
            continue
        own = np.sqrt(np.maximum(p.total_variance(k), 0.0) / t)
        env = np.sqrt(np.maximum(surf.envelope(k, i)[0], 0.0) / t)
        lift = env - own
        worst = max(worst, float(lift.max()))
        n += int(np.sum(lift > 1e-6))
    return worst, n


def report(
    model: str, res: pd.DataFrame, sl: pd.DataFrame, inside: np.ndarray, errors: list
) -> None:
    print(f"\n=== {model.upper()} ===")
    print(f"chains fitted: {len(res)}, exceptions: {len(errors)}")
    for sid, ccy, tb in errors[:5]:
        print(f"  EXCEPTION {sid} {ccy}:\n{tb}")
    if not len(res):
        return
    degenerate = sl[sl["inside"] < 0.5]
    print(
        f"slices: {len(sl)}, degenerate (inside < 50%): {len(degenerate)}, "
        f"not converged: {int((~sl['converged'].astype(bool)).sum())}"
    )
    for _, d in degenerate.head(10).iterrows():
        print(
            f"  degenerate: {d.get('ccy', '')} {d.get('snapshot', '')} expiry "
            f"{d.get('expiry', '')}: inside {d['inside']:.0%} of {d.get('n_quotes', '?')}, "
            f"rmse_iv {d['rmse_iv']:.4f}"
        )
    print(
        f"surfaces free of butterfly arbitrage: {res['butterfly_free'].mean():.1%}, "
        f"of calendar arbitrage: {res['calendar_free'].mean():.1%}, "
        f"of both: {(res['butterfly_free'] & res['calendar_free']).mean():.1%}"
    )
    print(f"min g over all surfaces: {res['g_min'].min():.3g}")
    if "method" in sl.columns:
        print(f"slices per method: {sl['method'].value_counts().to_dict()}")
    print(f"quotes inside bid/ask: {inside.mean():.2%} of {inside.size}")
    print("RMSE to mid (decimal vol) per tenor bucket: median / p95 / max")
    for lo, hi, name in BUCKETS:
        b = sl[(sl["t"] > lo) & (sl["t"] <= hi)]
        if len(b):
            r = b["rmse_iv"]
            print(
                f"  {name:>7} n={len(b):5d}  {r.median():.4f} / {r.quantile(0.95):.4f} / "
                f"{r.max():.4f}   inside {b['inside'].mean():.1%}"
            )
    if "lift_max" in res.columns and res["lift_max"].notna().any():
        print(
            "running envelope (safety net) lift of the fitted smiles at the quotes: max "
            f"{res['lift_max'].max():.2e} decimal vol, quotes lifted by > 1e-6 vol: "
            f"{int(res['lift_n'].sum())}"
        )
    print(
        f"time per chain: median {res['time_s'].median() * 1e3:.0f} ms, "
        f"p95 {res['time_s'].quantile(0.95) * 1e3:.0f} ms, max {res['time_s'].max():.2f} s"
    )


def _svi_inside(x: np.ndarray, k: np.ndarray, t: float, lo: np.ndarray, hi: np.ndarray) -> int:
    """Quotes inside bid/ask of the raw SVI smile ``x = (a, u, v, m, sigma)`` (``u, v = b sigma
    (1 +- rho)``)."""
    a, u, v, m, sg = x
    y = (k - m) / sg
    r = np.sqrt(y * y + 1.0)
    iv = np.sqrt(np.maximum(a + u * (r + y) / 2 + v * (r - y) / 2, 0.0) / t)
    return int(np.sum((iv >= lo) & (iv <= hi)))


def svi_count_bound(d: Any) -> int:
    """Most quotes of one slice inside bid/ask found for an *unconstrained* raw SVI smile (no
    butterfly, calendar or minimum-variance constraints) by a count-oriented search: on a
    21 x 17 grid of ``(m, sigma)`` the ``(a, u, v)`` minimising the L1 distance outside the
    bid/ask band in total variance (weights ``W_i / (2 iv_mid t)``; a linear programme,
    HiGHS), then the 3 best by that distance polished over all five parameters by
    Nelder-Mead on a smoothed L1 distance in spreads (knees 0.1, 0.01). A lower bound of the
    best possible count (a heuristic search), an upper bound of what the loss can reach."""
    from scipy.optimize import linprog, minimize

    k, t, lo, hi, n = d.k, d.t, d.iv_bid, d.iv_ask, d.k.size
    wb, wa = lo**2 * t, hi**2 * t
    cw = d.weight / (2 * d.iv_mid * t)
    span, sq = k[-1] - k[0], np.sqrt(d.atm_variance)
    best, cands = -1, []
    eye, zero = np.eye(n), np.zeros((n, n))
    for m in np.linspace(k[0] - 0.5 * span, k[-1] + 0.5 * span, 21):
        for sg in np.geomspace(max(1e-3, 0.02 * sq), max(2 * span, 4 * sq), 17):
            y = (k - m) / sg
            r = np.sqrt(y * y + 1)
            x = np.stack([np.ones(n), (r + y) / 2, (r - y) / 2], 1)
            res = linprog(
                np.concatenate([[0, 0, 0], cw, cw]),
                A_ub=np.block([[x, -eye, zero], [-x, zero, -eye]]),
                b_ub=np.concatenate([wa, -wb]),
                bounds=[(None, None), (0, 2 * sg), (0, 2 * sg)] + [(0, None)] * (2 * n),
                method="highs",
            )
            if res.status != 0:
                continue
            p = np.array([res.x[0], res.x[1], res.x[2], m, sg])
            cands.append((res.fun, p))
            best = max(best, _svi_inside(p, k, t, lo, hi))
    cands.sort(key=lambda c: c[0])
    for _, p0 in cands[:3]:
        x = p0.copy()
        for eps in (0.1, 0.01):

            def loss(z: np.ndarray, eps: float = eps) -> float:
                a, u, v, m, sg = z
                if sg <= 1e-5 or u < 0 or v < 0:
                    return 1e9
                y = (k - m) / sg
                r = np.sqrt(y * y + 1)
                iv = np.sqrt(np.maximum(a + u * (r + y) / 2 + v * (r - y) / 2, 1e-12) / t)
                dd = (np.maximum(lo - iv, 0) + np.maximum(iv - hi, 0)) * d.weight
                return float(np.sum(np.sqrt(dd * dd + eps * eps) - eps))

            opts = {"maxiter": 3000, "xatol": 1e-9, "fatol": 1e-12}
            x = minimize(loss, x, method="Nelder-Mead", options=opts).x
            best = max(best, _svi_inside(x, k, t, lo, hi))
    return best


def price_curve_bound(d: Any) -> int:
    """Quotes of one slice inside bid/ask for an arbitrage-free normalised call-price curve
    through them (model-free; no calendar): ``c_i = C/(D F)`` at ``kappa_i = K_i/F`` within
    ``[max(1 - kappa, 0), 1]``, slopes non-decreasing (convex), the first one above the chord
    from ``(0, 1)``, the last one <= 0; the L1 distance outside the Black-76 bid/ask band in
    units of its width is minimised (linear programme, HiGHS) and the quotes with zero
    distance counted."""
    from scipy.optimize import linprog
    from scipy.stats import norm

    k, t, n = d.k, d.t, d.k.size
    kap = np.exp(k)

    def call(v: np.ndarray) -> np.ndarray:
        s = v * np.sqrt(t)
        d1 = -k / s + s / 2
        return np.asarray(norm.cdf(d1) - kap * norm.cdf(d1 - s))

    lo, hi = call(d.iv_bid), call(d.iv_ask)
    width = np.maximum(hi - lo, 1e-12)
    rows, rhs = [], []

    def slope(i: int) -> np.ndarray:
        r = np.zeros(3 * n)
        h = kap[i + 1] - kap[i]
        r[i + 1], r[i] = 1 / h, -1 / h
        return r

    for i in range(n):
        r = np.zeros(3 * n)
        r[i], r[n + i] = 1, -1
        rows.append(r)
        rhs.append(hi[i])
        r = np.zeros(3 * n)
        r[i], r[2 * n + i] = -1, -1
        rows.append(r)
        rhs.append(-lo[i])
    chord = np.zeros(3 * n)
    chord[0] = 1 / kap[0]
    rows.append(chord - slope(0))
    rhs.append(1 / kap[0])
    for i in range(n - 2):
        rows.append(slope(i) - slope(i + 1))
        rhs.append(0.0)
    rows.append(slope(n - 2))
    rhs.append(0.0)
    res = linprog(
        np.concatenate([np.zeros(n), 1 / width, 1 / width]),
        A_ub=np.array(rows),
        b_ub=np.array(rhs),
        bounds=[(max(1 - kap[i], 0), 1) for i in range(n)] + [(0, None)] * (2 * n),
        method="highs",
    )
    slack = res.x[n : 2 * n] + res.x[2 * n :]
    return int(np.sum(slack <= 1e-12 * np.maximum(1.0, width)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=int, default=1, help="fit every N-th snapshot")
    parser.add_argument("--currency", default=None)
    parser.add_argument("--models", default="svi,ssvi,essvi")
    parser.add_argument("--max-rel-spread", type=float, default=None)
    parser.add_argument("--repair", action="store_true")
    parser.add_argument(
        "--bounds",
        action="store_true",
        help="with svi: also the count-oriented unconstrained raw SVI bound and the "
        "arbitrage-free price-curve bound of the share inside bid/ask (slow: ~1 min per chain)",
    )
    args = parser.parse_args()
    bounds = {"n": 0, "fit": 0, "svi": 0, "best": 0, "curve": 0}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    raw = pd.read_parquet(PARQUET)
    all_snaps = sorted(raw["snapshot_file"].unique())
    snaps = all_snaps[:: args.every]
    raw = raw[raw["snapshot_file"].isin(snaps)]
    filters = QuoteFilters(max_rel_spread=args.max_rel_spread) if args.max_rel_spread else None
    ccys = [args.currency] if args.currency else ["BTC", "ETH"]
    out: dict[str, dict[str, Any]] = {
        m: {"rows": [], "slices": [], "inside": [], "errors": []} for m in models
    }
    start = time.perf_counter()
    n_chains = 0
    for ccy in ccys:
        chains = volcal.load_snapshot(raw, ccy, filters=filters)
        chains = chains if isinstance(chains, list) else [chains]
        for chain in chains:
            n_chains += 1
            sid = str(chain.as_of)
            if args.repair:
                chain, _ = repair_quotes(chain)
            for m in models:
                t0 = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fit = MODELS[m](chain)
                except Exception:
                    out[m]["errors"].append((sid, ccy, traceback.format_exc(limit=3)))
                    continue
                dt = time.perf_counter() - t0
                lift_max, lift_n = _envelope_lift(fit) if m == "svi" else (np.nan, 0)
                used = fit.quotes[fit.quotes["used"]]
                out[m]["inside"].append((used["outside_iv"] == 0.0).to_numpy())
                out[m]["rows"].append(
                    {
                        "snapshot": sid,
                        "ccy": ccy,
                        "time_s": dt,
                        "butterfly_free": fit.arbitrage.butterfly_free,
                        "calendar_free": fit.arbitrage.calendar_free,
                        "g_min": fit.arbitrage.g_min,
                        "converged": fit.optimizer.converged,
                        "inside": fit.inside_share,
                        "rmse_iv": fit.rmse_iv,
                        "lift_max": lift_max,
                        "lift_n": lift_n,
                    }
                )
                for _, p in fit.params.iterrows():
                    out[m]["slices"].append(
                        {
                            "ccy": ccy,
                            "snapshot": sid,
                            "expiry": str(p["expiry"]),
                            "n_quotes": p.get("n_quotes", np.nan),
                            "t": p["t"],
                            "rmse_iv": p["rmse_iv"],
                            "inside": p["inside"],
                            "converged": p["converged"],
                            "method": p.get("method", ""),
                        }
                    )
                if m == "svi" and args.bounds:
                    _, _, slices, _ = prepare_slices(chain, 2.0 / 365.0, 6, 0.005)
                    for d, (_, p) in zip(slices, fit.params.iterrows(), strict=True):
                        n_fit = round(float(p["inside"]) * d.k.size)
                        n_svi = svi_count_bound(d)
                        bounds["n"] += d.k.size
                        bounds["fit"] += n_fit
                        bounds["svi"] += n_svi
                        bounds["best"] += max(n_fit, n_svi)
                        bounds["curve"] += price_curve_bound(d)
    total = time.perf_counter() - start
    print(
        f"{n_chains} chains ({', '.join(ccys)}; every {args.every}-th of {len(all_snaps)}: "
        f"{len(snaps)} snapshots), total {total:.0f} s"
        + (", quotes repaired first" if args.repair else "")
    )
    if bounds["n"]:
        n = bounds["n"]
        print(
            f"\nbounds on the share inside bid/ask ({n} quotes): arbitrage-free SVI fit "
            f"{bounds['fit'] / n:.2%}; best unconstrained raw SVI per slice (count-oriented "
            f"search) {bounds['svi'] / n:.2%}, per slice the better of the two "
            f"{bounds['best'] / n:.2%}; arbitrage-free call-price curve per expiry "
            f"(model-free) {bounds['curve'] / n:.2%}"
        )
    for m in models:
        o = out[m]
        inside = np.concatenate(o["inside"]) if o["inside"] else np.zeros(0)
        report(m, pd.DataFrame(o["rows"]), pd.DataFrame(o["slices"]), inside, o["errors"])


if __name__ == "__main__":
    main()
