"""The daily job's steps as functions (the CLI is a thin layer over them).

Data flows one way: tape or snapshot → chain → (fits, margin: later) → store/report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from volcal.chain import OptionChain
from volcal.errors import ConfigError

log = logging.getLogger("volcal.jobs")

TAPE_GLOB = "*.jsonl.gz"


def load_inputs(
    *,
    data_dir: Path,
    replay: Sequence[str] | None = None,
    snapshot: str | None = None,
    currencies: Sequence[str] | None = None,
    at: str | None = None,
) -> list[OptionChain]:
    """Chains to process: replayed tapes, a snapshot file, or every tape in ``data_dir``.

    Parameters
    ----------
    data_dir:
        Folder searched for tapes (``*.jsonl.gz``) when neither ``replay`` nor ``snapshot`` is
        given (the shipped synthetic tapes in ``data/``).
    replay:
        Tape files; each is replayed through ccxt's own parsers (no network).
    snapshot:
        A snapshot file in a format :func:`volcal.load_snapshot` reads; needs ``currencies``
        and picks the instant at or just before ``at`` (the latest when ``at`` is None).
    currencies:
        Restrict to these underlyings (tapes) or load these (snapshot).

    Raises
    ------
    ConfigError
        Nothing to load, or a file that does not exist.
    """
    wanted = {c.upper() for c in currencies} if currencies else None
    if snapshot is not None:
        from volcal.data.snapshots import load_snapshot

        if not wanted:
            raise ConfigError("--snapshot needs --currency (e.g. --currency BTC ETH)")
        path = Path(snapshot)
        if not path.exists():
            raise ConfigError(f"snapshot file not found: {path}")
        chains: list[OptionChain] = []
        for cur in sorted(wanted):
            got = load_snapshot(path, cur, at)
            if isinstance(got, list):
                got = got[-1]  # the latest instant when no time is given
            chains.append(got)
        return chains

    from volcal.data.exchanges import fetch_chain
    from volcal.data.tape import read_tape
    from volcal.data.tape import replay as replay_tape

    if replay:
        paths = [Path(p) for p in replay]
    else:
        paths = sorted(data_dir.glob(TAPE_GLOB))
        if not paths:
            raise ConfigError(f"no tapes ({TAPE_GLOB}) in {data_dir}; pass --replay or --snapshot")
    chains = []
    for path in paths:
        if not path.exists():
            raise ConfigError(f"tape not found: {path}")
        header = read_tape(path).header
        currency = str(header.get("currency", "")).upper()
        if wanted and currency not in wanted:
            continue
        log.info("replaying %s (%s %s)", path, header.get("exchange"), currency)
        chains.append(fetch_chain(replay_tape(path), currency))
    if not chains:
        raise ConfigError(f"no tape for currencies {sorted(wanted or [])} in {paths}")
    return chains
