"""Real-data acceptance run of the SVI / SSVI / eSSVI surfaces over the shared Deribit history.

Usage::

    /work/venv/bin/python benchmarks/svi_realdata.py [--every N] [--currency BTC|ETH]
        [--models svi,ssvi,essvi] [--max-rel-spread X] [--repair]

Loads every snapshot (or every N-th) of BTC and ETH with :func:`volcal.load_snapshot` (default
quote filters unless ``--max-rel-spread`` is given), fits each model on expiries with
``t > 2 days`` and at least 6 two-sided OTM quotes, and prints per model: exceptions,
degenerate slices (fitted vols outside bid/ask for most quotes), the share of surfaces free of
butterfly and calendar arbitrage on the dense grid, the share of quotes inside bid/ask, the
RMSE to mid per tenor bucket (median, p95, max), the time per chain and, for raw SVI, how much
the surface's running envelope lifts the fitted smiles at their quotes. ``--repair`` fits the
chains after :func:`volcal.svi.repair_quotes`.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=int, default=1, help="fit every N-th snapshot")
    parser.add_argument("--currency", default=None)
    parser.add_argument("--models", default="svi,ssvi,essvi")
    parser.add_argument("--max-rel-spread", type=float, default=None)
    parser.add_argument("--repair", action="store_true")
    args = parser.parse_args()
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
                            "t": p["t"],
                            "rmse_iv": p["rmse_iv"],
                            "inside": p["inside"],
                            "converged": p["converged"],
                            "method": p.get("method", ""),
                        }
                    )
    total = time.perf_counter() - start
    print(
        f"{n_chains} chains ({', '.join(ccys)}; every {args.every}-th of {len(all_snaps)}: "
        f"{len(snaps)} snapshots), total {total:.0f} s"
        + (", quotes repaired first" if args.repair else "")
    )
    for m in models:
        o = out[m]
        inside = np.concatenate(o["inside"]) if o["inside"] else np.zeros(0)
        report(m, pd.DataFrame(o["rows"]), pd.DataFrame(o["slices"]), inside, o["errors"])


if __name__ == "__main__":
    main()
