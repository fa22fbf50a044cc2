"""The history store: one DuckDB file holding every run's chains, fits, checks and margins.

Schema version 1 (:data:`SCHEMA_VERSION`; ``schema_info`` holds it). Every per-snapshot
table carries the snapshot key ``(exchange, currency, as_of)`` and the ``run_id`` that wrote
it; ``as_of`` and ``expiry`` are ``TIMESTAMPTZ`` in UTC (microseconds).

============== ==================================================================================
table          one row per
============== ==================================================================================
runs           run of ``volcal run`` / ``volcal backfill``: ``run_id, kind, started_at,
               finished_at, status, exit_code, command, volcal_version, python_version,
               versions`` (JSON: numpy, scipy, pandas, duckdb, ...), ``config_hash, config``
               (JSON), ``sources`` (JSON: path and SHA-256 of each tape or snapshot file),
               ``n_snapshots, n_failed, errors, warnings`` (JSON lists)
snapshots      stored snapshot: key, ``run_id, source_kind, source_path, source_sha256,
               n_quotes, n_usable, n_expiries, status, warnings`` (JSON)
chains         quote: key, ``run_id`` and the chain columns of ``docs/conventions.md``
               (``symbol`` ... ``index_price``, ``filter_reason``) and ``exchange_fields``,
               a ``MAP(VARCHAR, DOUBLE)`` of the chain's ``exchange_*`` columns
term_structure (snapshot, model, expiry): ``model`` (``market`` = from mark IVs, or a model
               name), ``expiry, t, forward, atm_vol`` (decimal), ``atm_skew``
               (``d sigma / d k`` at ``k = 0``)
fits           (snapshot, model): ``status`` (ok, warning, failed, skipped), ``converged,
               rmse_iv, inside_share, n_used, elapsed_s, message, error, warnings`` (JSON),
               ``settings`` (JSON)
fit_params     (snapshot, model, expiry, param): ``value``; long format, ``expiry`` NULL for
               parameters of the whole surface (Heston). SVI rows per expiry: ``t, forward,
               a, b, rho, m, sigma`` (enough to rebuild the surface)
fit_diagnostics (snapshot, model, expiry, metric): ``value`` (e.g. ``rmse_iv``, ``n_quotes``,
               ``inside``, ``converged`` as 0/1, ``iterations``); ``expiry`` NULL = whole fit
arbitrage      check: ``model`` (``quotes`` for the raw-quote checks), ``check``
               (butterfly, calendar, quote_vertical, quote_butterfly, quote_calendar),
               ``expiry, t, value`` (``g_min``, ``dw_min`` or violation size), ``violated``,
               ``detail``
margin         (snapshot, portfolio, model, metric): ``value``, ``unit``, ``status``, ``error``
============== ==================================================================================

Writes are transactional and idempotent. :meth:`Store.write` stores a whole run in one
transaction: for each snapshot it deletes every row of that key, then inserts the new ones,
so rerunning the same ``(exchange, currency, as_of)`` replaces and never duplicates; a process
killed at any point leaves the file as it was before the run (DuckDB rolls the open
transaction back on the next open). Backfills commit one snapshot per transaction
(:meth:`Store.write_snapshot`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from volcal.errors import StoreError

__all__ = [
    "SCHEMA_VERSION",
    "RunRecord",
    "SnapshotTables",
    "Store",
    "package_versions",
]

SCHEMA_VERSION = 1
"""Version of the table layout below; a file with another version is refused."""

TEST_PAUSE_ENV = "VOLCAL_TEST_STORE_PAUSE"
"""Test hook: ``"SECONDS:PATH"`` makes a write touch PATH and sleep inside its transaction
(after the first snapshot's rows are inserted), so a test can kill the process mid-write."""

_KEY = "exchange VARCHAR NOT NULL, currency VARCHAR NOT NULL, as_of TIMESTAMPTZ NOT NULL, "
_KEY += "run_id VARCHAR NOT NULL"

CHAIN_COLUMNS: dict[str, str] = {
    "symbol": "VARCHAR",
    "expiry": "TIMESTAMPTZ",
    "t": "DOUBLE",
    "strike": "DOUBLE",
    "call": "BOOLEAN",
    "bid_coin": "DOUBLE",
    "ask_coin": "DOUBLE",
    "mark_coin": "DOUBLE",
    "bid_usd": "DOUBLE",
    "ask_usd": "DOUBLE",
    "mark_usd": "DOUBLE",
    "usd_per_coin": "DOUBLE",
    "forward": "DOUBLE",
    "forward_source": "VARCHAR",
    "discount": "DOUBLE",
    "k": "DOUBLE",
    "iv_bid": "DOUBLE",
    "iv_ask": "DOUBLE",
    "iv_mark": "DOUBLE",
    "bid_size": "DOUBLE",
    "ask_size": "DOUBLE",
    "open_interest": "DOUBLE",
    "contract_size": "DOUBLE",
    "index_price": "DOUBLE",
    "filter_reason": "VARCHAR",
    "exchange_fields": "MAP(VARCHAR, DOUBLE)",
}
"""Columns of the ``chains`` table after the key. ``exchange_fields`` holds the chain's
``exchange_*`` columns (what the exchange reports itself: ``exchange_iv_mark``,
``exchange_delta``, ...), in the chain's column order; query one with
``exchange_fields['exchange_iv_mark']``."""

TABLES: dict[str, str] = {
    "schema_info": "key VARCHAR NOT NULL, value VARCHAR",
    "runs": (
        "run_id VARCHAR NOT NULL, kind VARCHAR, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, "
        "status VARCHAR, exit_code INTEGER, command VARCHAR, volcal_version VARCHAR, "
        "python_version VARCHAR, versions VARCHAR, config_hash VARCHAR, config VARCHAR, "
        "sources VARCHAR, n_snapshots INTEGER, n_failed INTEGER, errors VARCHAR, "
        "warnings VARCHAR"
    ),
    "snapshots": (
        f"{_KEY}, source_kind VARCHAR, source_path VARCHAR, source_sha256 VARCHAR, "
        "n_quotes INTEGER, n_usable INTEGER, n_expiries INTEGER, status VARCHAR, warnings VARCHAR"
    ),
    "chains": f"{_KEY}, " + ", ".join(f'"{c}" {t}' for c, t in CHAIN_COLUMNS.items()),
    "term_structure": (
        f"{_KEY}, model VARCHAR, expiry TIMESTAMPTZ, t DOUBLE, forward DOUBLE, atm_vol DOUBLE, "
        "atm_skew DOUBLE"
    ),
    "fits": (
        f"{_KEY}, model VARCHAR, status VARCHAR, converged BOOLEAN, rmse_iv DOUBLE, "
        "inside_share DOUBLE, n_used INTEGER, elapsed_s DOUBLE, message VARCHAR, error VARCHAR, "
        "warnings VARCHAR, settings VARCHAR"
    ),
    "fit_params": f"{_KEY}, model VARCHAR, expiry TIMESTAMPTZ, param VARCHAR, value DOUBLE",
    "fit_diagnostics": f"{_KEY}, model VARCHAR, expiry TIMESTAMPTZ, metric VARCHAR, value DOUBLE",
    "arbitrage": (
        f'{_KEY}, model VARCHAR, "check" VARCHAR, expiry TIMESTAMPTZ, t DOUBLE, value DOUBLE, '
        "violated BOOLEAN, detail VARCHAR"
    ),
    "margin": (
        f"{_KEY}, portfolio VARCHAR, model VARCHAR, metric VARCHAR, value DOUBLE, unit VARCHAR, "
        "status VARCHAR, error VARCHAR"
    ),
}
"""``CREATE TABLE`` column lists of schema version 1."""

SNAPSHOT_TABLES: tuple[str, ...] = (
    "snapshots",
    "chains",
    "term_structure",
    "fits",
    "fit_params",
    "fit_diagnostics",
    "arbitrage",
    "margin",
)
"""Tables keyed by ``(exchange, currency, as_of)``: a rewrite of a key replaces its rows."""


def package_versions() -> dict[str, str]:
    """Versions of volcal and the packages its numbers depend on (``"absent"`` if missing)."""
    out: dict[str, str] = {"python": platform.python_version()}
    for name in (
        "volcal",
        "numpy",
        "scipy",
        "pandas",
        "pyarrow",
        "numba",
        "QuantLib",
        "ccxt",
        "duckdb",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _utc_us(when: object) -> pd.Timestamp:
    """A UTC timestamp rounded down to microseconds (DuckDB's TIMESTAMPTZ resolution)."""
    ts = pd.Timestamp(when)  # type: ignore[arg-type]
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("us")


@dataclass(frozen=True)
class RunRecord:
    """Metadata of one run (a row of ``runs``).

    Attributes
    ----------
    run_id:
        Unique id (the job uses a UUID4 hex).
    kind:
        ``"run"`` or ``"backfill"``.
    started_at, finished_at:
        UTC instants.
    status:
        ``ok``, ``warnings``, ``partial`` (some snapshots or models failed) or ``failed``.
    exit_code:
        The command's exit code.
    command:
        The command line.
    config, config_hash:
        The resolved configuration (plain dict) and its SHA-256.
    sources:
        ``{"path", "sha256", "kind"}`` per input file.
    n_snapshots, n_failed:
        Snapshots attempted and failed.
    errors, warnings:
        Plain dicts (``exchange, currency, model, message``).
    versions:
        :func:`package_versions`.
    """

    run_id: str
    kind: str = "run"
    started_at: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))
    finished_at: pd.Timestamp | None = None
    status: str = "ok"
    exit_code: int = 0
    command: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    sources: Sequence[Mapping[str, Any]] = ()
    n_snapshots: int = 0
    n_failed: int = 0
    errors: Sequence[Mapping[str, Any]] = ()
    warnings: Sequence[Mapping[str, Any]] = ()
    versions: Mapping[str, str] = field(default_factory=package_versions)

    def row(self) -> dict[str, Any]:
        """The ``runs`` row."""
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "started_at": _utc_us(self.started_at),
            "finished_at": None if self.finished_at is None else _utc_us(self.finished_at),
            "status": self.status,
            "exit_code": int(self.exit_code),
            "command": self.command,
            "volcal_version": self.versions.get("volcal", ""),
            "python_version": self.versions.get("python", ""),
            "versions": json.dumps(dict(self.versions), sort_keys=True),
            "config_hash": self.config_hash,
            "config": json.dumps(self.config, sort_keys=True, default=str),
            "sources": json.dumps(list(self.sources), default=str),
            "n_snapshots": int(self.n_snapshots),
            "n_failed": int(self.n_failed),
            "errors": json.dumps(list(self.errors), default=str),
            "warnings": json.dumps(list(self.warnings), default=str),
        }


@dataclass(frozen=True, eq=False)
class SnapshotTables:
    """The rows of one snapshot for every per-snapshot table (built by the job).

    Attributes
    ----------
    exchange, currency, as_of:
        The key.
    snapshot:
        The ``snapshots`` row, without key and ``run_id``.
    tables:
        ``table name -> DataFrame`` with that table's columns minus key and ``run_id``
        (missing columns are stored as NULL). Tables absent from the mapping get no rows.
    """

    exchange: str
    currency: str
    as_of: pd.Timestamp
    snapshot: Mapping[str, Any]
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)


def _pause_hook() -> None:
    spec = os.environ.get(TEST_PAUSE_ENV)
    if not spec:
        return
    seconds, _, path = spec.partition(":")
    if path:
        Path(path).write_text(str(os.getpid()), encoding="utf-8")
    time.sleep(float(seconds))


class Store:
    """A DuckDB history file (created with the schema on first use).

    Parameters
    ----------
    path:
        The DuckDB file; its folder is created. ``":memory:"`` for an in-memory store.
    read_only:
        Open without write access (several readers may share the file; DuckDB allows one
        writing process at a time).
    threads:
        DuckDB worker threads (default: DuckDB's, one per core). A backfill writes from the
        process that also feeds its workers and uses 1: its many small inserts then cost
        about half the CPU, left to the fits.

    Raises
    ------
    StoreError
        The file cannot be opened (locked by another process, not a DuckDB file) or has
        another schema version.

    Examples
    --------
    >>> with Store("out/volcal.duckdb", read_only=True) as store:  # doctest: +SKIP
    ...     store.atm_vol_history("BTC", tenors_days=(30,))
    """

    def __init__(
        self, path: str | os.PathLike[str], *, read_only: bool = False, threads: int | None = None
    ) -> None:
        import duckdb

        self.path = str(path)
        if self.path != ":memory:" and not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if read_only and self.path != ":memory:" and not Path(self.path).exists():
            raise StoreError(f"store not found: {self.path}")
        try:
            self._con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        self._con.execute("SET TimeZone = 'UTC'")
        if threads is not None:
            if not (isinstance(threads, int) and threads >= 1):
                self._con.close()
                raise StoreError(f"threads must be a positive integer, got {threads!r}")
            self._con.execute(f"SET threads TO {threads}")
        self.read_only = read_only
        if not read_only:
            self._create()
        self._check_version()

    # life cycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection."""
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        with self._transaction():
            for name, columns in TABLES.items():
                self._con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
            got = self._con.execute(
                "SELECT value FROM schema_info WHERE key = 'schema_version'"
            ).fetchall()
            if not got:
                self._con.execute(
                    "INSERT INTO schema_info VALUES ('schema_version', ?), ('created_at', ?)",
                    [str(SCHEMA_VERSION), pd.Timestamp.now(tz="UTC").isoformat()],
                )

    def _check_version(self) -> None:
        try:
            got = self._con.execute(
                "SELECT value FROM schema_info WHERE key = 'schema_version'"
            ).fetchall()
        except Exception as exc:  # duckdb.CatalogException: not a volcal store
            raise StoreError(f"{self.path} is not a volcal store: {exc}") from exc
        version = int(got[0][0]) if got else None
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema version {version}; this volcal reads version "
                f"{SCHEMA_VERSION}"
            )

    @property
    def schema_version(self) -> int:
        """The file's schema version."""
        got = self._con.execute(
            "SELECT value FROM schema_info WHERE key = 'schema_version'"
        ).fetchone()
        return int(got[0]) if got else 0

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    # writing ---------------------------------------------------------------------------------

    def _insert(self, table: str, frame: pd.DataFrame) -> None:
        if frame is None or len(frame) == 0:
            return
        name = f"_volcal_{table}"
        self._con.register(name, frame)
        try:
            target = [c for c in frame.columns if not (table == "chains" and _is_extra(c))]
            select = [f'"{c}"' for c in target]
            extra = [c for c in frame.columns if table == "chains" and _is_extra(c)]
            if extra:
                keys = ", ".join(f"'{c}'" for c in extra)
                values = ", ".join(f'CAST("{c}" AS DOUBLE)' for c in extra)
                target.append("exchange_fields")
                select.append(f"MAP([{keys}], [{values}])")
            cols = ", ".join(f'"{c}"' for c in target)
            self._con.execute(
                f"INSERT INTO {table} ({cols}) SELECT {', '.join(select)} FROM {name}"
            )
        finally:
            self._con.unregister(name)

    def _upsert_run(self, run: RunRecord) -> None:
        self._con.execute("DELETE FROM runs WHERE run_id = ?", [run.run_id])
        self._insert("runs", pd.DataFrame([run.row()]))

    def _write_one(self, run_id: str, snap: SnapshotTables) -> None:
        self._write_many(run_id, [snap])

    def _write_many(self, run_id: str, snaps: Sequence[SnapshotTables]) -> None:
        """Replace the keys of ``snaps`` with their rows: one INSERT per table for all of them
        (inside the caller's transaction)."""
        where = "WHERE exchange = ? AND currency = ? AND as_of = ?"
        heads: list[dict[str, Any]] = []
        for snap in snaps:
            as_of = _utc_us(snap.as_of)
            key = [snap.exchange, snap.currency, as_of]
            # every write puts the key into ``snapshots`` in the same transaction as its
            # other rows, so a key absent there is absent everywhere: skip the big tables
            if self._con.execute(f"SELECT 1 FROM snapshots {where} LIMIT 1", key).fetchone():
                for table in SNAPSHOT_TABLES:
                    self._con.execute(f"DELETE FROM {table} {where}", key)
            heads.append(
                {"exchange": snap.exchange, "currency": snap.currency, "as_of": as_of}
                | {"run_id": run_id}
            )
        if len({(h["exchange"], h["currency"], h["as_of"]) for h in heads}) != len(heads):
            raise StoreError("the same (exchange, currency, as_of) twice in one write")
        self._insert(
            "snapshots",
            pd.DataFrame(
                [{**h, **dict(snap.snapshot)} for h, snap in zip(heads, snaps, strict=True)]
            ),
        )
        # frames with the same columns go in one INSERT (a chain's exchange_* columns become
        # its exchange_fields map: never pad one snapshot's map with another's keys)
        per_table: dict[tuple[str, tuple[str, ...]], list[pd.DataFrame]] = {}
        for head, snap in zip(heads, snaps, strict=True):
            for table, frame in snap.tables.items():
                if table not in SNAPSHOT_TABLES or table == "snapshots":
                    raise StoreError(f"unknown per-snapshot table {table!r}")
                if frame is None or len(frame) == 0:
                    continue
                f = frame.reset_index(drop=True)
                if "expiry" in f.columns:
                    f = f.assign(expiry=pd.to_datetime(f["expiry"], utc=True).dt.floor("us"))
                keyed = pd.DataFrame({k: [v] * len(f) for k, v in head.items()})
                keyed = pd.concat([keyed, f], axis=1)
                per_table.setdefault((table, tuple(keyed.columns)), []).append(keyed)
        for (table, _), frames in per_table.items():
            self._insert(table, frames[0] if len(frames) == 1 else pd.concat(frames))

    def write(self, run: RunRecord, snapshots: Sequence[SnapshotTables]) -> None:
        """Store a run and its snapshots in one transaction (all or nothing).

        Each snapshot replaces whatever the store held for its ``(exchange, currency,
        as_of)``; the run's row replaces a row with the same ``run_id``.

        Raises
        ------
        StoreError
            The write failed; the store is unchanged.
        """
        self._require_writable()
        import duckdb

        try:
            with self._transaction():
                for i, snap in enumerate(snapshots):
                    self._write_one(run.run_id, snap)
                    if i == 0:
                        _pause_hook()
                self._upsert_run(run)
        except duckdb.Error as exc:
            raise StoreError(f"writing run {run.run_id} to {self.path} failed: {exc}") from exc

    def write_snapshot(self, run_id: str, snapshot: SnapshotTables) -> None:
        """Store one snapshot in its own transaction (replacing the key's rows)."""
        self._require_writable()
        import duckdb

        try:
            with self._transaction():
                self._write_one(run_id, snapshot)
                _pause_hook()
        except duckdb.Error as exc:
            raise StoreError(
                f"writing {snapshot.exchange} {snapshot.currency} {snapshot.as_of} failed: {exc}"
            ) from exc

    def write_snapshots(self, run_id: str, snapshots: Sequence[SnapshotTables]) -> None:
        """Store several snapshots in one transaction (each replacing its key's rows): what a
        backfill writes as results arrive; cheaper per snapshot than :meth:`write_snapshot`."""
        if not snapshots:
            return
        self._require_writable()
        import duckdb

        try:
            with self._transaction():
                self._write_many(run_id, snapshots)
                _pause_hook()
        except duckdb.Error as exc:
            first = snapshots[0]
            raise StoreError(
                f"writing {len(snapshots)} snapshots ({first.exchange} {first.currency} "
                f"{first.as_of} ...) failed: {exc}"
            ) from exc

    def write_run(self, run: RunRecord) -> None:
        """Insert or replace one row of ``runs`` (its own transaction)."""
        self._require_writable()
        with self._transaction():
            self._upsert_run(run)

    def _require_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"store {self.path} is open read-only")

    # reading ---------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run SQL against the store and return a DataFrame (timestamps in UTC)."""
        return self._con.execute(sql, list(params or [])).df()

    def table(self, name: str) -> pd.DataFrame:
        """A whole table, in key order."""
        if name not in TABLES:
            raise StoreError(f"no table {name!r}; tables: {', '.join(TABLES)}")
        order = "run_id" if name == "runs" else ("key" if name == "schema_info" else "1")
        if name in SNAPSHOT_TABLES:
            order = "exchange, currency, as_of"
        return self.query(f"SELECT * FROM {name} ORDER BY {order}")

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {
            name: int(self._con.execute(f"SELECT count(*) FROM {name}").fetchone()[0])  # type: ignore[index]
            for name in TABLES
        }

    def runs(self) -> pd.DataFrame:
        """The ``runs`` table, oldest first."""
        return self.query("SELECT * FROM runs ORDER BY started_at, run_id")

    def snapshots(
        self, *, exchange: str | None = None, currency: str | None = None
    ) -> pd.DataFrame:
        """The stored snapshots, oldest first."""
        where, params = _where(exchange=exchange, currency=currency)
        return self.query(
            f"SELECT * FROM snapshots {where} ORDER BY as_of, exchange, currency", params
        )

    def load_chain(self, exchange: str, currency: str, as_of: object) -> Any:
        """The stored chain of one snapshot as a :class:`volcal.OptionChain`.

        Raises
        ------
        StoreError
            No such snapshot.
        """
        from volcal.chain import OptionChain

        q = self.query(
            "SELECT * EXCLUDE (run_id, currency, exchange_fields), "
            "map_keys(exchange_fields) AS _k, map_values(exchange_fields) AS _v FROM chains "
            "WHERE exchange = ? AND currency = ? AND as_of = ? ORDER BY expiry, strike, call",
            [exchange, currency, _utc_us(as_of)],
        )
        if len(q) == 0:
            raise StoreError(f"no stored chain for {exchange} {currency} at {as_of}")
        q.insert(2, "underlying", currency)
        keys = q["_k"].iloc[0]
        if keys is not None and len(keys):
            values = np.array([np.asarray(v, dtype=np.float64) for v in q["_v"]])
            for j, name in enumerate(keys):
                q[str(name)] = values[:, j]
        q = q.drop(columns=["_k", "_v"])
        q["as_of"] = pd.to_datetime(q["as_of"], utc=True).dt.as_unit("ns")
        return OptionChain.from_frame(q)

    def fits(self, *, model: str | None = None, currency: str | None = None) -> pd.DataFrame:
        """The ``fits`` table (status, rmse, errors per snapshot and model), oldest first."""
        where, params = _where(model=model, currency=currency)
        return self.query(f"SELECT * FROM fits {where} ORDER BY as_of, currency, model", params)

    def param_history(
        self,
        model: str,
        *,
        currency: str | None = None,
        exchange: str | None = None,
        param: str | None = None,
        start: object = None,
        end: object = None,
        wide: bool = False,
    ) -> pd.DataFrame:
        """Fitted parameters over time.

        Parameters
        ----------
        model:
            ``"svi"``, ``"heston"``, ...
        currency, exchange, param:
            Optional filters.
        start, end:
            Optional ``as_of`` bounds (inclusive; naive = UTC).
        wide:
            One column per parameter (index columns ``exchange, currency, as_of, expiry``)
            instead of the long ``param, value`` format.

        Returns
        -------
        pandas.DataFrame
            Long: ``exchange, currency, as_of, model, expiry, param, value`` sorted by
            ``as_of, expiry, param``; ``expiry`` is NaT for whole-surface parameters.
        """
        where, params = _where(
            model=model, currency=currency, exchange=exchange, param=param, start=start, end=end
        )
        out = self.query(
            "SELECT exchange, currency, as_of, model, expiry, param, value FROM fit_params "
            f"{where} ORDER BY exchange, currency, as_of, expiry NULLS FIRST, param",
            params,
        )
        if not wide:
            return out
        keys = ["exchange", "currency", "as_of", "expiry"]
        w = out.pivot_table(
            index=keys, columns="param", values="value", dropna=False, aggfunc="first"
        )
        w.columns.name = None
        return w.reset_index()

    def term_structure_history(
        self,
        currency: str,
        *,
        model: str = "market",
        exchange: str | None = None,
        start: object = None,
        end: object = None,
    ) -> pd.DataFrame:
        """ATM vol and skew per expiry over time.

        Returns
        -------
        pandas.DataFrame
            ``exchange, currency, as_of, model, expiry, t, days, forward, atm_vol, atm_skew``,
            sorted by ``as_of, t``; ``atm_vol`` decimal, ``atm_skew = d sigma / d k`` at the
            money, ``days = 365 t``.
        """
        where, params = _where(
            currency=currency, model=model, exchange=exchange, start=start, end=end
        )
        out = self.query(
            "SELECT exchange, currency, as_of, model, expiry, t, 365.0 * t AS days, forward, "
            f"atm_vol, atm_skew FROM term_structure {where} ORDER BY exchange, as_of, t",
            params,
        )
        return out

    def atm_vol_history(
        self,
        currency: str,
        *,
        tenors_days: Sequence[float] = (7.0, 30.0, 90.0),
        model: str = "market",
        exchange: str | None = None,
    ) -> pd.DataFrame:
        """ATM vol at constant tenors over time.

        Interpolated per snapshot linearly in total variance ``w = atm_vol^2 t`` between the
        stored expiries (no extrapolation: NaN outside the quoted range).

        Returns
        -------
        pandas.DataFrame
            ``exchange, currency, as_of, tenor_days, atm_vol``, sorted by ``as_of, tenor_days``.
        """
        ts = self.term_structure_history(currency, model=model, exchange=exchange)
        rows = []
        tenors = np.asarray(tenors_days, dtype=np.float64)
        for (ex, as_of), g in ts.groupby(["exchange", "as_of"], sort=True):
            g = g[np.isfinite(g["atm_vol"].to_numpy(dtype=float))]
            t = g["t"].to_numpy(dtype=float)
            w = g["atm_vol"].to_numpy(dtype=float) ** 2 * t
            tq = tenors / 365.0
            if t.size:
                wq = np.interp(tq, t, w, left=np.nan, right=np.nan)
            else:
                wq = np.full(tq.shape, np.nan)
            vol = np.full(tq.shape, np.nan)
            ok = np.isfinite(wq) & (wq >= 0)
            vol[ok] = np.sqrt(wq[ok] / tq[ok])
            for d, v in zip(tenors, vol, strict=True):
                rows.append(
                    {
                        "exchange": ex,
                        "currency": currency,
                        "as_of": as_of,
                        "tenor_days": float(d),
                        "atm_vol": float(v),
                    }
                )
        cols = ["exchange", "currency", "as_of", "tenor_days", "atm_vol"]
        return pd.DataFrame(rows, columns=cols)

    def margin_history(
        self,
        *,
        portfolio: str | None = None,
        currency: str | None = None,
        metric: str | None = None,
        model: str | None = None,
    ) -> pd.DataFrame:
        """Margin results over time.

        Returns
        -------
        pandas.DataFrame
            ``exchange, currency, as_of, portfolio, model, metric, value, unit, status, error``
            sorted by ``as_of, portfolio, metric``.
        """
        where, params = _where(portfolio=portfolio, currency=currency, metric=metric, model=model)
        return self.query(
            "SELECT exchange, currency, as_of, portfolio, model, metric, value, unit, status, "
            f"error FROM margin {where} ORDER BY as_of, exchange, currency, portfolio, metric",
            params,
        )


def _is_extra(column: str) -> bool:
    return column.startswith("exchange_") and column != "exchange_fields"


def _chain_frame(quotes: pd.DataFrame) -> pd.DataFrame:
    """The ``chains`` rows of a chain's quote table (its columns, ``exchange_*`` last)."""
    base = [c for c in CHAIN_COLUMNS if c != "exchange_fields" and c in quotes.columns]
    extra = [c for c in quotes.columns if _is_extra(c)]
    return quotes[base + extra]


def _where(**filters: Any) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in filters.items():
        if value is None:
            continue
        if key == "start":
            clauses.append("as_of >= ?")
            params.append(_utc_us(value))
        elif key == "end":
            clauses.append("as_of <= ?")
            params.append(_utc_us(value))
        else:
            clauses.append(f"{key} = ?")
            params.append(value)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params
