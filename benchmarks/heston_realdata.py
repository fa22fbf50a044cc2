"""Heston on the shared Deribit snapshots: engines side by side and one week of parameter paths.

Usage::

    /work/venv/bin/python benchmarks/heston_realdata.py [--currency BTC|ETH] [--all-snapshots]

For each currency:

1. one snapshot (2026-01-22 09:26 UTC) fitted by ``engine="fast"`` (volcal's
   Levenberg-Marquardt, and SciPy's trust region with ``optimizer="trf"``), by ``engine="quantlib"``
   (AnalyticHestonEngine, finite-difference Jacobian) and by ``engine="quantlib"`` with
   ``ql_jacobian="fast"``, from the same start: parameters, rmse_iv, evaluations, time, and
   the fit with every expiry steering (``min_t = 0``) for comparison;
2. the parameter path over the week 19-25 Jan 2026, one snapshot a day (09:xx UTC; every
   snapshot, about 6 h apart, with ``--all-snapshots``), warm-started from the previous fit,
   with the cold-started path's largest difference and iterations; steps larger than the
   bounds of ``tests/heston/deribit_heston.py`` are flagged, with their market reason.

Quote selection and settings as in ``tests/heston/deribit_heston.py`` (mark premiums in USD on
each expiry's forward, one tick 0.0001 coin, expiries under 7 days do not steer the fit).
Timings are wall time on a shared machine: indicative only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "heston"))

from deribit_heston import (  # noqa: E402
    WEEK,
    at_bounds,
    calibrator,
    daily,
    deribit_quotes,
    fit_path,
    path_table,
    unexplained_jumps,
)

import volcal  # noqa: E402
from volcal.heston import HestonFit  # noqa: E402

SHARED = Path(os.environ.get("VOLCAL_SHARED_DATA", REPO.parent / "shared" / "data"))
PARQUET = SHARED / "deribit" / "deribit_chains_2025-12_2026-04.parquet"
SNAPSHOT = pd.Timestamp("2026-01-22 09:30", tz="UTC")


def row(label: str, fit: HestonFit, seconds: float) -> str:
    p = fit.params
    bounds = at_bounds(p)
    return (
        f"  {label:38} v0 {p.v0:.6f} kappa {p.kappa:9.5f} theta {p.theta:.6f} "
        f"sigma {p.sigma:8.5f} rho {p.rho:+.5f}  rmse_iv {100 * fit.rmse_iv:.4f} vol pts "
        f"(used {fit.n_used}/{len(fit.quotes)})  evals {fit.report.n_fev}+{fit.report.n_jev}J "
        f"{seconds:6.2f} s{'  AT BOUNDS ' + ','.join(bounds) if bounds else ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--currency", choices=["BTC", "ETH"], default=None)
    parser.add_argument("--all-snapshots", action="store_true", help="every snapshot of the week")
    args = parser.parse_args()
    frame = pd.read_parquet(PARQUET)
    lo, hi = (pd.Timestamp(d, tz="UTC") for d in WEEK)
    for ccy in [args.currency] if args.currency else ["BTC", "ETH"]:
        stamps = pd.DatetimeIndex(frame.loc[frame["currency"] == ccy, "timestamp"].unique())
        stamps = stamps[(stamps >= lo) & (stamps < hi)].sort_values()
        chains = volcal.load_snapshot(frame, ccy, at=list(stamps))
        assert isinstance(chains, list)
        chain = [c for c in chains if c.as_of <= SNAPSHOT][-1]
        quotes = deribit_quotes(chain)
        print(
            f"{ccy} {chain.as_of:%Y-%m-%d %H:%M} UTC: {len(quotes)} OTM quotes, "
            f"{np.unique(quotes.t).size} expiries ({24 * 365 * quotes.t.min():.1f} h to "
            f"{quotes.t.max():.2f} y)"
        )
        fits = {}
        for label, settings in (
            ("fast", {}),
            ("fast, optimizer='trf'", {"optimizer": "trf"}),
            ("quantlib (2-point FD Jacobian)", {"engine": "quantlib"}),
            ("quantlib (ql_jacobian='fast')", {"engine": "quantlib", "ql_jacobian": "fast"}),
            ("fast, every expiry steering (min_t=0)", {"min_t": 0.0}),
        ):
            start = time.perf_counter()
            fit = calibrator(global_stage="never", **settings).fit(quotes)  # type: ignore[arg-type]
            fits[label] = fit
            print(row(label, fit, time.perf_counter() - start))
        ref = fits["fast"].params.to_array()
        for label in (
            "fast, optimizer='trf'",
            "quantlib (2-point FD Jacobian)",
            "quantlib (ql_jacobian='fast')",
        ):
            other = fits[label]
            rel = float(np.max(np.abs(other.params.to_array() / ref - 1.0)))
            cost = abs(other.report.cost / fits["fast"].report.cost - 1.0)
            print(f"  {label} vs fast: parameters {rel:.1e} relative, objective {cost:.1e}")
        print()

        path_chains = chains if args.all_snapshots else daily(chains)
        start = time.perf_counter()
        warm = fit_path(path_chains)
        t_warm = time.perf_counter() - start
        start = time.perf_counter()
        cold = fit_path(path_chains, warm=False)
        t_cold = time.perf_counter() - start
        print(
            f"{ccy} parameter path, week {WEEK[0]} .. {WEEK[1]} (exclusive), "
            f"{'every snapshot' if args.all_snapshots else 'daily'}, warm start:"
        )
        print(path_table(path_chains, warm))
        diff = max(
            float(np.max(np.abs(a.params.to_array() / b.params.to_array() - 1.0)))
            for a, b in zip(warm, cold, strict=True)
        )
        print(
            f"  warm: {sum(f.report.iterations for f in warm)} iterations, {t_warm:.2f} s; "
            f"cold: {sum(f.report.iterations for f in cold)} iterations, {t_cold:.2f} s; "
            f"largest warm/cold parameter difference {diff:.1e} relative"
        )
        jumps = unexplained_jumps(warm)
        print(f"  unexplained jumps: {len(jumps)}")
        print()


if __name__ == "__main__":
    main()
