"""The ``volcal`` command line: the imperative shell around the numerical core.

Exit codes: 0 success; 1 failure; 2 usage or configuration error; 3 completed with warnings
under ``--strict``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from volcal.errors import ConfigError, VolcalError

log = logging.getLogger("volcal")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_WARNINGS = 3


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cmd_run(args: argparse.Namespace) -> int:
    from volcal.jobs import load_inputs

    chains = load_inputs(
        data_dir=Path(args.data),
        replay=args.replay,
        snapshot=args.snapshot,
        currencies=args.currency,
        at=args.at,
    )
    out = Path(args.out)
    summary: dict[str, Any] = {"chains": []}
    for chain in chains:
        table = chain.summary()
        if not args.quiet:
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
        summary["chains"].append(
            {
                "exchange": chain.exchange,
                "underlying": chain.underlying,
                "as_of": chain.as_of.isoformat(),
                "options": len(chain.quotes),
                "expiries": json.loads(table.to_json(orient="records", date_format="iso")),
            }
        )
        chain.to_parquet(out / f"chain_{chain.exchange}_{chain.underlying}.parquet")
    _atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    log.info("wrote %s", out / "summary.json")
    return EXIT_OK


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
    run = sub.add_parser("run", help="load (replay) chains, imply vols, summarise and store")
    run.add_argument("--data", default="data", help="folder of shipped tapes (default: data)")
    run.add_argument("--replay", nargs="*", default=None, help="tape files to replay")
    run.add_argument("--snapshot", default=None, help="snapshot file (Deribit/Tardis/volcal)")
    run.add_argument("--currency", nargs="*", default=None, help="currencies, e.g. BTC ETH")
    run.add_argument("--at", default=None, help="UTC time of the snapshot to use")
    run.add_argument("--out", default="out", help="output folder (default: out)")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.set_defaults(func=_cmd_run)
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
