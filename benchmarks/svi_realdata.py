"""Real-data acceptance run of the SVI surface over the shared Deribit history.

Usage::

    /work/venv/bin/python benchmarks/svi_realdata.py [--every N] [--currency BTC|ETH]

Fits every snapshot (or every N-th) of BTC and ETH with :func:`volcal.svi.fit_svi` on expiries
with ``t > 2 days`` and at least 6 two-sided OTM quotes, and prints: exceptions, degenerate
slices (fitted vols outside bid/ask for most quotes), the share of surfaces free of butterfly
and calendar arbitrage on the dense grid, the share of quotes inside bid/ask, the RMSE to mid
per tenor bucket (median, p95, max) and the time per chain.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "svi"))

from deribit_quotes import iter_chains, read_deribit  # noqa: E402

from volcal.svi import fit_svi  # noqa: E402

PARQUET = REPO.parent / "shared" / "data" / "deribit" / "deribit_chains_2025-12_2026-04.parquet"
BUCKETS = [
    (0.0, 7 / 365, "<=7d"),
    (7 / 365, 30 / 365, "7-30d"),
    (30 / 365, 90 / 365, "30-90d"),
    (90 / 365, 10.0, ">90d"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=int, default=1, help="fit every N-th snapshot")
    parser.add_argument("--currency", default=None)
    args = parser.parse_args()
    raw = read_deribit(PARQUET)
    if args.currency:
        raw = raw[raw["currency"] == args.currency]
    snaps = sorted(raw["snapshot_file"].unique())[:: args.every]
    rows, slices, errors = [], [], []
    inside_all: list[np.ndarray] = []
    start = time.perf_counter()
    for sid, ccy, _as_of, quotes in iter_chains(raw, snaps):
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = fit_svi(quotes)
        except Exception:
            errors.append((sid, ccy, traceback.format_exc(limit=3)))
            continue
        dt = time.perf_counter() - t0
        used = fit.quotes[fit.quotes["used"]]
        inside_all.append((used["outside_iv"] == 0.0).to_numpy())
        rows.append(
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
            }
        )
        for _, p in fit.params.iterrows():
            slices.append(
                {
                    "ccy": ccy,
                    "t": p["t"],
                    "rmse_iv": p["rmse_iv"],
                    "inside": p["inside"],
                    "converged": p["converged"],
                }
            )
    total = time.perf_counter() - start
    res = pd.DataFrame(rows)
    sl = pd.DataFrame(slices)
    print(f"chains fitted: {len(res)}, exceptions: {len(errors)}, total time {total:.1f} s")
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
    inside = np.concatenate(inside_all)
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
    print(
        f"time per chain: median {res['time_s'].median() * 1e3:.0f} ms, "
        f"p95 {res['time_s'].quantile(0.95) * 1e3:.0f} ms, max {res['time_s'].max():.2f} s"
    )


if __name__ == "__main__":
    main()
