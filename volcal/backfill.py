"""Backfill: recalibrate and store many stored snapshots in parallel with Dask.

``volcal backfill --snapshots FILE --from DATE --to DATE`` reads a snapshot file (Deribit flat
snapshots, e.g. ``shared/data/deribit/*.parquet``, or volcal chain parquet), splits it into one
task per ``(currency, instant)``, runs :func:`volcal.jobs.process_chain` on a
``dask.distributed`` cluster (a :class:`~dask.distributed.LocalCluster` by default, or an
existing scheduler by address) and writes the results to the store as they arrive, one
transaction per batch of arrived results (at most :data:`WRITE_BATCH` snapshots).

Determinism: every task is a pure function of its snapshot rows and the settings (the fits are
seeded), and each result replaces its own ``(exchange, currency, as_of)`` key, so the stored
rows do not depend on the number of workers or on the order results arrive in (timing columns
aside: ``fits.elapsed_s``). A snapshot that fails (bad data, a fit that raises, a worker that
dies) is recorded in the run's ``errors`` and in the report's ``failures``; the others go on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from volcal.config import FitSettings, MarginSettings
from volcal.errors import ConfigError

__all__ = ["BackfillReport", "backfill", "split_snapshots"]

log = logging.getLogger("volcal.backfill")

WRITE_BATCH = 32
"""Most snapshots a backfill writes in one transaction."""
WRITE_EVERY_S = 10.0
"""A backfill writes what has arrived at least this often (seconds)."""

BACKFILL_MODELS: tuple[str, ...] = ("svi", "ssvi", "essvi")
"""Models a backfill fits by default (those this volcal provides); Heston only on request."""


@dataclass
class BackfillReport:
    """What a backfill did.

    Attributes
    ----------
    run_id:
        The run's id in the store.
    n_tasks, n_stored, n_failed:
        Snapshots (one per currency and instant) attempted, stored and failed.
    failures:
        ``{"currency", "as_of", "error"}`` per failed snapshot (loading failed or the task
        raised), plus ``"model"`` for a model that failed on a stored snapshot.
    wall_s:
        Wall time from reading the file to the last write, seconds.
    n_workers, scheduler:
        The cluster used.
    """

    run_id: str
    n_tasks: int = 0
    n_stored: int = 0
    n_failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    wall_s: float = 0.0
    n_workers: int = 0
    scheduler: str = ""

    @property
    def snapshots_per_second(self) -> float:
        """Snapshots (currency × instant) processed per second of wall time."""
        return self.n_tasks / self.wall_s if self.wall_s > 0 else float("nan")

    def summary(self) -> str:
        """One paragraph of text."""
        lines = [
            f"backfill {self.run_id[:8]}: {self.n_tasks} snapshots on {self.n_workers} "
            f"worker(s) ({self.scheduler}) in {self.wall_s:.1f} s = "
            f"{self.snapshots_per_second:.2f} snapshots/s; stored {self.n_stored}, "
            f"failed {self.n_failed}"
        ]
        for f in self.failures[:20]:
            lines.append(
                f"  {f.get('currency', '')} {f.get('as_of', '')} {f.get('model', '')}: "
                f"{f.get('error', '')}"
            )
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more")
        return "\n".join(lines)


def _utc(value: object, *, end: bool = False) -> pd.Timestamp:
    text = str(value)
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise ConfigError(
            f"not a date or time: {value!r} (e.g. 2026-01-31 or 2026-01-31T12:00)"
        ) from None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if end and len(text) <= 10:  # a bare date: the whole day
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    return ts


def split_snapshots(
    frame: pd.DataFrame,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    currencies: Sequence[str] | None = None,
) -> list[tuple[str, pd.Timestamp, pd.DataFrame]]:
    """Split a many-snapshot frame into ``(currency, instant, rows)``, sorted by both.

    Parameters
    ----------
    frame:
        Deribit flat snapshots (``timestamp``, ``currency``, ...) or volcal chain frames
        (``as_of``, ``underlying``, ...).
    start, end:
        Inclusive bounds on the instant (UTC).
    currencies:
        Keep only these (upper case); None for all.

    Raises
    ------
    ConfigError
        A format that has no snapshot instants (e.g. Tardis tick data).
    """
    from volcal.data.snapshots import detect_format

    fmt = detect_format(frame)
    if fmt == "deribit":
        time_col, cur_col = "timestamp", "currency"
    elif fmt == "volcal":
        time_col, cur_col = "as_of", "underlying"
    else:
        raise ConfigError(
            f"backfill reads Deribit flat snapshots or volcal chain files, not {fmt} data"
        )
    when = pd.to_datetime(frame[time_col], utc=True)
    keep = pd.Series(True, index=frame.index)
    if start is not None:
        keep &= when >= start
    if end is not None:
        keep &= when <= end
    cur = frame[cur_col].astype(str).str.upper()
    if currencies:
        keep &= cur.isin([c.upper() for c in currencies])
    sub = frame[keep.to_numpy()]
    groups = sub.groupby([cur[keep], when[keep]], sort=True)
    return [(str(key[0]), pd.Timestamp(key[1]), rows) for key, rows in groups]  # type: ignore[arg-type]


@dataclass
class _TaskOutput:
    """What a worker sends back for one snapshot: the store's tables (built on the worker, so
    the writing process only writes) and the problems to record; ``tables`` is None when the
    snapshot could not be loaded (``error`` says why)."""

    tables: Any
    error: str = ""
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)


def _read_snapshots(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@lru_cache(maxsize=2)
def _file_groups(path: str, mtime_ns: int) -> dict[tuple[str, int], pd.DataFrame]:
    """Every snapshot of a file by ``(currency, instant in ns)``, read once per worker process
    (``mtime_ns`` keys the cache to the file's version)."""
    del mtime_ns
    return {(c, w.value): rows for c, w, rows in split_snapshots(_read_snapshots(Path(path)))}


def _task(
    rows: pd.DataFrame | None,
    currency: str,
    models: Sequence[str],
    fit: FitSettings,
    margin: MarginSettings,
    source_path: str,
    source_sha256: str,
    instant: pd.Timestamp | None = None,
) -> _TaskOutput:
    """One snapshot on a worker: build the chain, fit, margin, and the store's tables.

    ``rows`` are the snapshot's rows, or None to read them from ``source_path`` on the worker
    (the snapshot at ``instant``; local clusters, whose workers see the same file system).
    Never raises for bad data or a failing model: they are recorded in the result.
    """
    if rows is None:
        if instant is None:
            return _TaskOutput(tables=None, error="neither rows nor an instant to read them at")
        try:
            groups = _file_groups(source_path, Path(source_path).stat().st_mtime_ns)
            rows = groups[(currency, instant.value)]
        except Exception as exc:
            return _TaskOutput(tables=None, error=f"{type(exc).__name__}: {exc}")
    from volcal.data.snapshots import load_snapshot
    from volcal.jobs import InputSpec, SourceInfo, process_chain

    spec = InputSpec("", currency, "snapshot", Path(source_path))
    source = SourceInfo("snapshot", source_path, source_sha256)
    try:
        got = load_snapshot(rows, currency)
        chain = got[-1] if isinstance(got, list) else got
    except Exception as exc:
        return _TaskOutput(tables=None, error=f"{type(exc).__name__}: {exc}")
    result = process_chain(
        chain, models=models, fit=fit, margin=margin, spec=spec, source=source, keep_fits=False
    )
    if result.chain is None:
        return _TaskOutput(tables=None, error=result.error)
    errors, warns = result.problems()
    return _TaskOutput(tables=result.to_tables(), errors=errors, warnings=warns)


def backfill(
    snapshots: str | Path,
    *,
    start: object,
    end: object,
    store: str | Path,
    currencies: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    fit: FitSettings | None = None,
    margin: MarginSettings | None = None,
    scheduler: str = "local",
    n_workers: int = 2,
    processes: bool = True,
    progress: bool = False,
    command: str = "",
) -> BackfillReport:
    """Recalibrate and store every snapshot of a file between two instants.

    Parameters
    ----------
    snapshots:
        The snapshot file (parquet or CSV that :func:`volcal.load_snapshot` reads).
    start, end:
        Inclusive UTC bounds; a bare date as ``end`` includes that whole day.
    store:
        The DuckDB store written to (one transaction per batch of arrived results).
    currencies:
        Only these; None for every currency in the file.
    models:
        Models to fit; None for the available ones of :data:`BACKFILL_MODELS`.
    fit, margin:
        Settings (defaults when None; no standard margin books unless ``margin`` says so).
    scheduler:
        ``"local"`` for a new local cluster, or a scheduler address (``tcp://host:8786``).
    n_workers:
        Local-cluster workers, one thread each.
    processes:
        Local workers as processes (default) or threads in this process (cheaper to start;
        volcal serialises its warning capture between threads).
    progress:
        Show a rich progress bar.
    command:
        Recorded with the run.

    Returns
    -------
    BackfillReport

    Raises
    ------
    ConfigError
        Missing file, bad dates, unknown format, or nothing in the range.
    StoreError
        The store cannot be opened.
    """
    from dask.distributed import Client, LocalCluster, as_completed

    from volcal.jobs import available_models, sha256_file
    from volcal.store import RunRecord, Store

    t0 = time.perf_counter()
    path = Path(snapshots)
    if not path.exists():
        raise ConfigError(f"snapshot file not found: {path}")
    lo, hi = _utc(start), _utc(end, end=True)
    if hi < lo:
        raise ConfigError(f"--to {end} is before --from {start}")
    fit = fit or FitSettings()
    margin = margin or MarginSettings(standard_portfolios=False)
    if models is None:
        have = set(available_models())
        models = tuple(m for m in BACKFILL_MODELS if m in have)
    frame = _read_snapshots(path)
    tasks = split_snapshots(frame, start=lo, end=hi, currencies=currencies)
    del frame
    if not tasks:
        raise ConfigError(f"no snapshots in {path} between {lo} and {hi}")
    digest = sha256_file(path)
    run_id = uuid.uuid4().hex
    report = BackfillReport(run_id=run_id, n_tasks=len(tasks), scheduler=scheduler)
    settings = {
        "snapshots": str(path),
        "from": lo.isoformat(),
        "to": hi.isoformat(),
        "currencies": list(currencies or []),
        "models": list(models),
        "fit": fit.__dict__,
        "margin": margin.__dict__,
    }
    from volcal.config import JobConfig

    config_hash = JobConfig(models=tuple(models), fit=fit, margin=margin).config_hash()
    started = pd.Timestamp.now(tz="UTC")
    errors: list[dict[str, str]] = []
    warns: list[dict[str, str]] = []

    def record(status: str, exit_code: int) -> RunRecord:
        return RunRecord(
            run_id=run_id,
            kind="backfill",
            started_at=started,
            finished_at=pd.Timestamp.now(tz="UTC") if status != "running" else None,
            status=status,
            exit_code=exit_code,
            command=command,
            config=settings,
            config_hash=config_hash,
            sources=[{"kind": "snapshot", "path": str(path), "sha256": digest}],
            n_snapshots=len(tasks),
            n_failed=report.n_failed,
            errors=errors,
            warnings=warns,
        )

    local = scheduler == "local"
    if local:
        cluster: Any = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=":0",  # a free port: several backfills may run at once
        )
        client = Client(cluster)
    else:
        cluster = None
        client = Client(scheduler)
    try:
        report.n_workers = len(client.scheduler_info().get("workers", {})) or n_workers
        log.info(
            "backfill %s: %d snapshots on %d worker(s)", run_id[:8], len(tasks), report.n_workers
        )
        with Store(store, threads=1) as db:
            db.write_run(record("running", 0))
            futures = {}
            for cur, when, rows in tasks:
                # a local cluster's workers read the file themselves (once each): shipping
                # every snapshot's rows through this process's scheduler costs more than
                # the fits; remote workers get the rows
                fut = client.submit(
                    _task,
                    None if local else rows,
                    cur,
                    tuple(models),
                    fit,
                    margin,
                    str(path.resolve()),
                    digest,
                    when,
                    key=f"volcal-{cur}-{when.value}-{run_id[:8]}",
                    pure=False,
                )
                futures[fut] = (cur, when)
            bar = _bar(progress, len(tasks))
            done = 0
            # results are written in batches (one transaction and one INSERT per table for up
            # to WRITE_BATCH snapshots, or whatever arrived within WRITE_EVERY_S seconds): a
            # fifth of the writer's CPU per snapshot, left to the workers; a killed backfill
            # still keeps every batch written before
            ready: list[Any] = []
            last_write = time.perf_counter()

            def flush() -> None:
                nonlocal last_write
                if ready:
                    db.write_snapshots(run_id, ready)
                    report.n_stored += len(ready)
                    ready.clear()
                last_write = time.perf_counter()

            for batch in as_completed(list(futures)).batches():
                for fut in batch:
                    done += 1
                    cur, when = futures[fut]
                    try:
                        result = fut.result()
                    except Exception as exc:  # the task itself died (worker lost, ...)
                        result = None
                        err = f"{type(exc).__name__}: {exc}"
                    if result is None or result.tables is None:
                        err = result.error if result is not None else err
                        report.n_failed += 1
                        report.failures.append(
                            {"currency": cur, "as_of": when.isoformat(), "error": err}
                        )
                        errors.append(
                            {
                                "exchange": "",
                                "currency": cur,
                                "model": "",
                                "message": f"{when.isoformat()}: {err}",
                            }
                        )
                    else:
                        for item in result.errors:
                            report.failures.append(
                                {
                                    "currency": cur,
                                    "as_of": when.isoformat(),
                                    "model": item["model"],
                                    "error": item["message"],
                                }
                            )
                        errors.extend(result.errors)
                        warns.extend(result.warnings)
                        ready.append(result.tables)
                        if len(ready) >= WRITE_BATCH:
                            flush()
                    fut.release()
                if time.perf_counter() - last_write >= WRITE_EVERY_S:
                    flush()
                if bar is not None:
                    bar[0].update(bar[1], completed=done)
                elif done * 10 // len(tasks) > (done - len(batch)) * 10 // len(tasks):
                    log.info("backfill: %d/%d snapshots", done, len(tasks))
            flush()
            if bar is not None:
                bar[0].stop()
            report.wall_s = time.perf_counter() - t0
            status = "ok" if not errors else ("failed" if not report.n_stored else "partial")
            db.write_run(record(status, 1 if report.failures else 0))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    report.wall_s = time.perf_counter() - t0
    return report


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("backfill"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    bar.start()
    return bar, bar.add_task("backfill", total=total)
