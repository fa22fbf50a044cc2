"""SSVI / eSSVI on samples of the shared Deribit history: fit quality, arbitrage, CPU time.

Usage::

    /work/venv/bin/python benchmarks/bench_essvi_sample.py [--every N] [--offset I]
        [--currency BTC|ETH] [--models essvi,ssvi] [--lam X] [--band-shrink F] [--huber H]
        [--free]

Fits every N-th snapshot (from snapshot ``I``) of BTC and ETH with :func:`volcal.fit_essvi` /
:func:`volcal.fit_ssvi` (settings ``SsviSettings(mid_weight=lam, band_shrink=F, huber=H)``) and
prints per model: exceptions, slices, degenerate slices (fitted vols inside bid/ask for fewer than
half of a slice's quotes), the share of quotes inside bid/ask, the share of surfaces free of
butterfly and calendar arbitrage (dense-grid report of the fit) and CPU times per chain
(``time.process_time``, one core): the whole ``fit_*`` call, and the calibration alone
(``calibrate_essvi`` / ``calibrate_ssvi`` on the prepared slices; median of 3 runs each).
``--free`` also fits every eSSVI slice alone (butterfly constraints only, no calendar
constraint) to separate the SSVI smile shape from the calendar constraint.
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import volcal
from volcal.svi.essvi import _fit_one, calibrate_essvi, fit_essvi
from volcal.svi.ssvi import SsviSettings, calibrate_ssvi, fit_ssvi
from volcal.svi.surface_fit import prepare_slices

REPO = Path(__file__).resolve().parents[1]
PARQUET = REPO.parent / "shared" / "data" / "deribit" / "deribit_chains_2025-12_2026-04.parquet"


def cpu(fn: Any, repeat: int = 3) -> tuple[float, Any]:
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return statistics.median(times), out


def inside_of(d: Any, w: np.ndarray) -> np.ndarray:
    sig = np.sqrt(np.maximum(w, 0.0) / d.t)
    return (sig >= d.iv_bid) & (sig <= d.iv_ask)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--currency", default=None)
    parser.add_argument("--models", default="essvi,ssvi")
    parser.add_argument("--lam", type=float, default=None)
    parser.add_argument("--band-shrink", type=float, default=None)
    parser.add_argument("--huber", type=float, default=None)
    parser.add_argument("--rho-starts", default=None, help="comma-separated starting rhos")
    parser.add_argument("--free", action="store_true")
    args = parser.parse_args()
    base = SsviSettings()
    settings = SsviSettings(
        mid_weight=base.mid_weight if args.lam is None else args.lam,
        band_shrink=base.band_shrink if args.band_shrink is None else args.band_shrink,
        huber=base.huber if args.huber is None else args.huber,
        rho_starts=base.rho_starts
        if args.rho_starts is None
        else tuple(float(r) for r in args.rho_starts.split(",")),
    )
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    raw = pd.read_parquet(PARQUET)
    snaps = sorted(raw["snapshot_file"].unique())[args.offset :: args.every]
    raw = raw[raw["snapshot_file"].isin(snaps)]
    ccys = [args.currency] if args.currency else ["BTC", "ETH"]
    warnings.simplefilter("ignore")
    fits = {"essvi": fit_essvi, "ssvi": fit_ssvi}
    acc: dict[str, dict[str, list[Any]]] = {
        m: {"inside": [], "slice_inside": [], "arb": [], "t_fit": [], "t_cal": [], "err": []}
        for m in models + (["free"] if args.free else [])
    }
    n_chains = 0
    for ccy in ccys:
        chains = volcal.load_snapshot(raw, ccy)
        chains = chains if isinstance(chains, list) else [chains]
        for chain in chains:
            n_chains += 1
            _, _, slices, _ = prepare_slices(chain, 2.0 / 365.0, 6, 0.005)
            for m in models:
                a = acc[m]
                try:
                    fits[m](chain, settings=settings)  # warm-up (compilation, caches)
                    t_fit, fit = cpu(lambda m=m, c=chain: fits[m](c, settings=settings))
                    cal = calibrate_essvi if m == "essvi" else calibrate_ssvi
                    t_cal, _ = cpu(lambda cal=cal, sl=slices: cal(sl, settings))
                except Exception:
                    a["err"].append((chain.as_of, ccy, traceback.format_exc(limit=3)))
                    continue
                used = fit.quotes[fit.quotes["used"]]
                a["inside"].append((used["outside_iv"] == 0.0).to_numpy())
                a["slice_inside"].extend(fit.params["inside"].tolist())
                a["arb"].append((fit.arbitrage.butterfly_free, fit.arbitrage.calendar_free))
                a["t_fit"].append(t_fit)
                a["t_cal"].append(t_cal)
            if args.free:
                for d in slices:
                    sl, *_ = _fit_one(d, None, settings)
                    ins = inside_of(d, sl.total_variance(d.k))
                    acc["free"]["inside"].append(ins)
                    acc["free"]["slice_inside"].append(float(ins.mean()))
    print(
        f"{n_chains} chains ({', '.join(ccys)}; snapshots {args.offset}::{args.every}); "
        f"settings lam={settings.mid_weight} band_shrink={settings.band_shrink} "
        f"huber={settings.huber}"
    )
    for m, a in acc.items():
        ins = np.concatenate(a["inside"]) if a["inside"] else np.zeros(0)
        si = np.asarray(a["slice_inside"])
        line = (
            f"{m:>6}: exceptions {len(a['err'])}, slices {si.size}, degenerate (inside < 50%) "
            f"{int((si < 0.5).sum())}, quotes inside bid/ask {ins.mean():.2%} of {ins.size}"
        )
        if a["arb"]:
            arb = np.asarray(a["arb"])
            line += (
                f"\n        surfaces butterfly-free {arb[:, 0].mean():.1%}, calendar-free "
                f"{arb[:, 1].mean():.1%}; CPU per chain: fit_{m} median "
                f"{np.median(a['t_fit']) * 1e3:.1f} ms (p95 "
                f"{np.quantile(a['t_fit'], 0.95) * 1e3:.1f}), calibration alone median "
                f"{np.median(a['t_cal']) * 1e3:.2f} ms (p95 "
                f"{np.quantile(a['t_cal'], 0.95) * 1e3:.2f}, max {np.max(a['t_cal']) * 1e3:.2f})"
            )
        print(line)
        for sid, ccy, tb in a["err"][:3]:
            print(f"  EXCEPTION {sid} {ccy}:\n{tb}")


if __name__ == "__main__":
    main()
