"""Backfill benchmark: recalibrate and store the shared snapshot history with 1 and 2 workers.

    python benchmarks/bench_backfill.py                       # all 481 snapshots x BTC, ETH
    python benchmarks/bench_backfill.py --to 2026-01-15       # a shorter range
    python benchmarks/bench_backfill.py --workers 2 --models svi,essvi,heston

Runs :func:`volcal.backfill.backfill` (the code behind ``volcal backfill``) on
``../shared/data/deribit/*.parquet`` into a fresh DuckDB store per run: a ``dask.distributed``
local cluster of N single-threaded worker processes, every (currency, instant) one task, SVI and
eSSVI fits by default (Heston with ``--models``), results written as they arrive. Prints, per
worker count: snapshots (currency x instant), wall time (reading the file to the last write,
cluster start-up included), snapshots per second, stored and failed snapshots, and checks that
the stored fit parameters are identical across worker counts (determinism).

The issue's target: all 481 snapshots x BTC, ETH, SVI + eSSVI in <= 3 minutes with 2 workers
on this 2-core machine.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from volcal.backfill import backfill
from volcal.store import Store

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "deribit"


def _params(store: Path) -> pd.DataFrame:
    """Stored fit parameters, in a canonical order (timing columns dropped)."""
    with Store(store, read_only=True) as db:
        frame = db.query("SELECT * FROM fit_params")
    frame = frame.drop(columns=[c for c in ("run_id",) if c in frame.columns])
    keys = [c for c in frame.columns if c != "value"]
    return frame.sort_values(keys).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--snapshots", type=Path, default=None, help="snapshot parquet file")
    ap.add_argument("--from", dest="start", default="2025-01-01")
    ap.add_argument("--to", dest="end", default="2027-01-01")
    ap.add_argument("--currency", nargs="*", default=["BTC", "ETH"])
    ap.add_argument("--models", default="svi,essvi")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = ap.parse_args(argv)

    path = args.snapshots
    if path is None:
        found = sorted(SHARED.glob("*.parquet"))
        if not found:
            print(f"no snapshot file under {SHARED}; pass --snapshots", file=sys.stderr)
            return 2
        path = found[0]
    logging.getLogger("distributed").setLevel(logging.ERROR)  # cluster shutdown chatter
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    rows = []
    params: dict[int, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(w) for w in args.workers.split(",")):
            store = Path(tmp) / f"backfill-{n}.duckdb"
            t0 = time.perf_counter()
            report = backfill(
                path,
                start=args.start,
                end=args.end,
                store=store,
                currencies=args.currency,
                models=models,
                n_workers=n,
                progress=sys.stderr.isatty(),
            )
            wall = time.perf_counter() - t0
            rows.append((n, report.n_tasks, wall, report.n_stored, report.n_failed))
            params[n] = _params(store)
            print(report.summary(), file=sys.stderr)
    print(
        f"\nbackfill of {path.name}: models {', '.join(models)}, "
        f"currencies {', '.join(args.currency)}, {args.start} .. {args.end}"
    )
    print(
        f"{'workers':>7} {'snapshots':>9} {'wall s':>8} {'snap/s':>7} {'stored':>6} {'failed':>6}"
    )
    for n, tasks, wall, stored, failed in rows:
        print(f"{n:>7} {tasks:>9} {wall:>8.1f} {tasks / wall:>7.2f} {stored:>6} {failed:>6}")
    ref = params[rows[0][0]]
    for n, frame in params.items():
        same = frame.equals(ref)
        print(f"stored parameters with {n} worker(s) identical to {rows[0][0]}: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
