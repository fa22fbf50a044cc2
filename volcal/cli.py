"""The ``volcal`` command line: the imperative shell around the numerical core.

Exit codes: 0 success; 1 failure; 2 usage or configuration error; 3 completed with warnings
under ``--strict``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from volcal.errors import ConfigError, VolcalError

log = logging.getLogger("volcal")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_WARNINGS = 3


def _config_from_args(args: argparse.Namespace) -> Any:
    """The run's configuration: ``--config`` (or the defaults), then the flags on top."""
    from volcal.config import load_config

    cfg = load_config(args.config)
    source = None
    if args.replay:
        source = "replay"
    elif args.snapshot is not None:
        source = "snapshot"
    elif args.live:
        source = "live"
    elif args.data is not None:
        source = "tapes"
    return cfg.with_overrides(
        source=source,
        data=args.data,
        replay=list(args.replay) if args.replay else None,
        snapshot=args.snapshot,
        at=args.at,
        exchanges=args.exchange,
        currencies=[c.upper() for c in args.currency] if args.currency else None,
        models=args.models,
        out=args.out,
        store="" if args.no_store else args.store,
        report=False if args.no_report else None,
        strict=True if args.strict else None,
        portfolios=args.portfolio,
    )


def _print_result(result: Any) -> None:
    chain = result.chain
    if chain is None:
        print(f"\n{result.label}: FAILED to load: {result.error}")
        return
    table = chain.summary()
    print(
        f"\n{chain.exchange} {chain.underlying} as of {chain.as_of.isoformat()}: "
        f"{len(chain.quotes)} options, {len(table)} expiries"
    )
    with pd.option_context("display.width", 120, "display.max_rows", 100):
        shown = table.assign(
            expiry=table["expiry"].dt.strftime("%Y-%m-%d %H:%M"),
            days=table["t"] * 365.0,
        ).drop(columns=["t"])
        print(shown.to_string(index=False, float_format=lambda v: f"{v:,.4f}"))
    for m in result.models:
        rmse = m.summary.get("rmse_iv")
        detail = (
            m.error
            if m.status in ("failed", "skipped")
            else (f"rmse_iv {rmse:.4f}" if rmse is not None else "")
        )
        print(f"  {m.model:<7} {m.status:<8} {detail} ({m.elapsed_s:.2f} s)")
        for w in m.warnings:
            print(f"          warning: {w}")
    for w in result.warnings:
        print(f"  warning: {w}")
    for g in result.margins:
        print(f"  margin {g.portfolio}: {g.status} {g.error}")


@contextmanager
def _progress(enabled: bool, total: int, what: str) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on an interactive terminal; a no-op callback otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda _label: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=total)
        started = [False]

        def step(label: str) -> None:
            if started[0]:
                bar.advance(task)
            started[0] = True
            bar.update(task, description=f"{what}: {label}")

        yield step
        bar.update(task, completed=total)


def _cmd_run(args: argparse.Namespace) -> int:
    from volcal.jobs import plan_inputs, run_job

    cfg = _config_from_args(args)
    n_inputs = len(plan_inputs(cfg))
    with _progress(not args.quiet, n_inputs, "run") as step:
        outcome = run_job(cfg, command=" ".join(["volcal", *sys.argv[1:]]), progress=step)
    if not args.quiet:
        for result in outcome.results:
            _print_result(result)
        where = ", ".join(str(p) for p in outcome.written if p.suffix in (".html", ".json"))
        print(f"\nrun {outcome.run.run_id[:8]}: {outcome.run.status}; wrote {where or 'nothing'}")
        if outcome.store_error:
            print(f"store failed: {outcome.store_error}")
    if not outcome.written:
        log.error("nothing was written: every input failed")
    return int(outcome.exit_code)


def _cmd_backfill(args: argparse.Namespace) -> int:
    from volcal.backfill import backfill
    from volcal.config import load_config

    cfg = load_config(args.config).with_overrides(
        currencies=[c.upper() for c in args.currency] if args.currency else None,
        models=args.models,
        out=args.out,
        store=args.store,
    )
    store = cfg.store_path
    if store is None:
        raise ConfigError("backfill needs a store (--store PATH)")
    report = backfill(
        args.snapshots,
        start=getattr(args, "from"),
        end=args.to,
        store=store,
        currencies=cfg.currencies or None,
        models=cfg.models,
        fit=cfg.fit,
        scheduler=args.scheduler,
        n_workers=args.workers,
        progress=not args.quiet and sys.stderr.isatty(),
        command=" ".join(["volcal", *sys.argv[1:]]),
    )
    if not args.quiet:
        print(report.summary())
    return EXIT_FAILURE if report.failures else EXIT_OK


def _cmd_fetch(args: argparse.Namespace) -> int:
    from volcal.data.exchanges import SUPPORTED_EXCHANGES, fetch_chain
    from volcal.data.tape import replay

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replay:
        chain = fetch_chain(replay(args.replay), args.currency)
        source = f"replayed {args.replay}"
    else:
        if args.exchange not in SUPPORTED_EXCHANGES:
            choices = ", ".join(SUPPORTED_EXCHANGES)
            raise ConfigError(f"unknown exchange {args.exchange!r}; choose one of {choices}")
        stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ")
        tape = out / f"{args.exchange}-{args.currency}-{stamp}.jsonl.gz"
        chain = fetch_chain(args.exchange, args.currency, tape=tape)
        source = f"live, tape {tape}"
    path = chain.to_parquet(
        out / f"chain_{chain.exchange}_{chain.underlying}_{chain.as_of:%Y%m%dT%H%M%SZ}.parquet"
    )
    log.info(
        "%s %s: %d options (%s) -> %s", chain.exchange, chain.underlying, len(chain), source, path
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="volcal", description="Crypto option chains to calibrated vol surfaces and margin."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="load chains, fit surfaces, margin, store the results and write the report"
    )
    run.add_argument("--config", default=None, help="volcal.toml (flags override it)")
    run.add_argument("--data", default=None, help="folder of tapes (default: data)")
    run.add_argument("--replay", nargs="*", default=None, help="tape files to replay")
    run.add_argument("--snapshot", default=None, help="snapshot file (Deribit/Tardis/volcal)")
    run.add_argument("--at", default=None, help="UTC time of the snapshot to use")
    run.add_argument("--live", action="store_true", help="fetch live through ccxt")
    run.add_argument("--exchange", nargs="*", default=None, help="exchanges, e.g. deribit")
    run.add_argument("--currency", nargs="*", default=None, help="currencies, e.g. BTC ETH")
    run.add_argument("--models", nargs="*", default=None, help="svi ssvi essvi heston")
    run.add_argument(
        "--portfolio", action="append", default=None, help="positions CSV (symbol, quantity)"
    )
    run.add_argument("--store", default=None, help="DuckDB history (default: OUT/volcal.duckdb)")
    run.add_argument("--no-store", action="store_true", help="do not write the history store")
    run.add_argument("--no-report", action="store_true", help="do not write report.html")
    run.add_argument("--out", default=None, help="output folder (default: out)")
    run.add_argument("--strict", action="store_true", help="exit 3 when there were warnings")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.set_defaults(func=_cmd_run)
    bf = sub.add_parser("backfill", help="recalibrate and store many snapshots with Dask")
    bf.add_argument("--snapshots", required=True, help="snapshot file (Deribit flat parquet)")
    bf.add_argument("--from", required=True, help="first UTC date/time (inclusive)")
    bf.add_argument(
        "--to", required=True, help="last UTC date/time (inclusive; a date = whole day)"
    )
    bf.add_argument("--scheduler", default="local", help="local or tcp://host:port")
    bf.add_argument("--workers", type=int, default=2, help="local cluster workers (default 2)")
    bf.add_argument("--config", default=None, help="volcal.toml (flags override it)")
    bf.add_argument("--currency", nargs="*", default=None, help="currencies (default: all)")
    bf.add_argument("--models", nargs="*", default=None, help="models (default: svi, essvi)")
    bf.add_argument("--store", default=None, help="DuckDB history (default: OUT/volcal.duckdb)")
    bf.add_argument("--out", default=None, help="output folder (default: out)")
    bf.add_argument("--quiet", action="store_true", help="print nothing but errors")
    bf.set_defaults(func=_cmd_backfill)
    fetch = sub.add_parser("fetch", help="fetch one chain live (recording a tape) or replay one")
    fetch.add_argument("--exchange", default="deribit", help="deribit, okx, bybit or binance")
    fetch.add_argument("--currency", default="BTC", help="underlying coin (default BTC)")
    fetch.add_argument("--replay", default=None, help="replay this tape instead of going live")
    fetch.add_argument("--out", default="out", help="folder for the tape and chain parquet")
    fetch.set_defaults(func=_cmd_fetch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    level = (
        logging.DEBUG
        if args.verbose
        else (logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # dask's cluster chatter and matplotlib's font cache notes
        for name in ("distributed", "matplotlib"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_USAGE
    except VolcalError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
