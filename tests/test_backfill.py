"""Backfill on Dask: per-snapshot failures recorded, results independent of the worker count."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.jobs_fakes import fake_models, tape_chain  # noqa: F401  (fixture)
from volcal.backfill import backfill, split_snapshots
from volcal.errors import ConfigError
from volcal.store import SNAPSHOT_TABLES, Store

START = "2026-01-14"
HOURS = (0, 6, 12)
BROKEN_HOUR = 18


def _deribit_rows(hours_after: float, *, broken: bool = False) -> pd.DataFrame:
    """The shipped ETH chain as Deribit flat snapshot rows, ``hours_after`` the tape's instant."""
    chain = tape_chain("ETH")
    q = chain.quotes
    frame = pd.DataFrame(
        {
            "timestamp": chain.as_of + pd.Timedelta(hours=hours_after),
            "instrument_name": q["symbol"],
            "currency": "ETH",
            "option_type": q["call"].map({True: "call", False: "put"}),
            "strike": q["strike"],
            "expiry_datetime": q["expiry"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "underlying": q["forward"],
            "bid_price": q["bid_coin"],
            "ask_price": q["ask_coin"],
            "mark_price": q["mark_coin"],
            "implied_volatility": q["iv_mark"],
            "open_interest": q["open_interest"],
            "index_price": q["index_price"],
        }
    )
    if broken:
        frame.loc[frame.index[3], "strike"] = -1.0  # invalid: the chain cannot be built
    return frame


@pytest.fixture(scope="module")
def snapshot_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parts = [_deribit_rows(h) for h in HOURS] + [_deribit_rows(BROKEN_HOUR, broken=True)]
    path = tmp_path_factory.mktemp("snapshots") / "deribit_synthetic.parquet"
    pd.concat(parts, ignore_index=True).to_parquet(path)
    return path


def _rows(store: Store) -> dict[str, pd.DataFrame]:
    out = {}
    for t in SNAPSHOT_TABLES:
        frame = store.table(t).drop(columns=["run_id"])
        if "elapsed_s" in frame.columns:  # wall time: the one column allowed to differ
            frame = frame.drop(columns=["elapsed_s"])
        if "exchange_fields" in frame.columns:
            frame["exchange_fields"] = frame["exchange_fields"].astype(str)
        keys = [c for c in frame.columns if frame[c].dtype != object][:6]
        out[t] = frame.sort_values(list(frame.columns[:3]) + keys).reset_index(drop=True)
    return out


def test_split_snapshots_by_currency_and_instant(snapshot_file: Path) -> None:
    frame = pd.read_parquet(snapshot_file)
    tasks = split_snapshots(frame)
    assert [(c, t.hour) for c, t, _ in tasks] == [("ETH", 6), ("ETH", 12), ("ETH", 18), ("ETH", 0)]
    lo = pd.Timestamp("2026-01-14T10:00Z")
    assert len(split_snapshots(frame, start=lo)) == 3
    assert split_snapshots(frame, currencies=["BTC"]) == []


@pytest.mark.usefixtures("fake_models")
def test_backfill_deterministic_across_workers_failures_recorded(
    tmp_path: Path, snapshot_file: Path
) -> None:
    reports = {}
    for n in (1, 2):
        reports[n] = backfill(
            snapshot_file,
            start=START,
            end="2026-01-15",
            store=tmp_path / f"w{n}.duckdb",
            models=["svi"],
            n_workers=n,
            processes=False,
        )
    for n, rep in reports.items():
        assert rep.n_tasks == 4 and rep.n_stored == 3 and rep.n_failed == 1, rep.summary()
        assert rep.failures[0]["as_of"].startswith("2026-01-15T00:00")
        assert "strike" in rep.failures[0]["error"]
        assert f"{rep.n_tasks} snapshots on {n} worker(s)" in rep.summary()
    with (
        Store(tmp_path / "w1.duckdb", read_only=True) as one,
        Store(tmp_path / "w2.duckdb", read_only=True) as two,
    ):
        a, b = _rows(one), _rows(two)
        run = one.runs().iloc[0]
        assert run["kind"] == "backfill" and run["status"] == "partial"
        assert run["n_snapshots"] == 4 and run["n_failed"] == 1
        assert "strike" in json.loads(run["errors"])[0]["message"]
    for t in SNAPSHOT_TABLES:
        pd.testing.assert_frame_equal(a[t], b[t], obj=t)
    assert len(a["snapshots"]) == 3 and len(a["fit_params"]) > 0


@pytest.mark.usefixtures("fake_models")
def test_backfill_rerun_replaces(tmp_path: Path, snapshot_file: Path) -> None:
    kwargs = dict(start="2026-01-14T05:00", end="2026-01-14T13:00", models=["svi"], n_workers=2,
                  processes=False, store=tmp_path / "h.duckdb")  # fmt: skip
    backfill(snapshot_file, **kwargs)  # type: ignore[arg-type]
    with Store(tmp_path / "h.duckdb", read_only=True) as store:
        first = store.counts()
    backfill(snapshot_file, **kwargs)  # type: ignore[arg-type]
    with Store(tmp_path / "h.duckdb", read_only=True) as store:
        second = store.counts()
    assert first["snapshots"] == 2  # 06:00 and 12:00
    assert {k: v for k, v in second.items() if k != "runs"} == {
        k: v for k, v in first.items() if k != "runs"
    }


def test_backfill_usage_errors(tmp_path: Path, snapshot_file: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        backfill(tmp_path / "none.parquet", start=START, end=START, store=tmp_path / "h.duckdb")
    with pytest.raises(ConfigError, match="before"):
        backfill(snapshot_file, start="2026-02-01", end="2026-01-01", store=tmp_path / "h.duckdb")
    with pytest.raises(ConfigError, match="no snapshots"):
        backfill(snapshot_file, start="2027-01-01", end="2027-01-02", store=tmp_path / "h.duckdb")
    with pytest.raises(ConfigError, match="not a date"):
        backfill(snapshot_file, start="soon", end="2027-01-02", store=tmp_path / "h.duckdb")


@pytest.mark.slow
@pytest.mark.realdata
def test_backfill_real_snapshots_with_svi(tmp_path: Path, deribit_parquet: Path) -> None:
    """Two days of the shared Deribit history (BTC and ETH) with the real SVI fit."""
    rep = backfill(
        deribit_parquet,
        start="2026-01-05",
        end="2026-01-06",
        store=tmp_path / "h.duckdb",
        models=["svi"],
        n_workers=2,
        processes=False,
    )
    assert rep.n_tasks >= 4 and rep.n_failed == 0, rep.summary()
    with Store(tmp_path / "h.duckdb", read_only=True) as store:
        fits = store.fits()
        assert (fits["status"] != "failed").all()
        assert fits["rmse_iv"].max() < 0.05
        atm = store.atm_vol_history("BTC", tenors_days=(30.0,))
        assert atm["atm_vol"].between(0.2, 1.5).all()


def test_worker_reads_its_snapshot_from_the_file_like_shipped_rows(snapshot_file: Path) -> None:
    """Local workers read their snapshot from the file (rows=None); remote ones get the rows:
    both give the same tables, and a missing instant is a recorded failure."""
    from volcal.backfill import _task
    from volcal.config import FitSettings, MarginSettings

    cur, when, rows = split_snapshots(pd.read_parquet(snapshot_file))[0]
    args = (cur, ("svi",), FitSettings(), MarginSettings(standard_portfolios=False))
    shipped = _task(rows, *args, str(snapshot_file), "sha")
    read = _task(None, *args, str(snapshot_file), "sha", when)
    assert shipped.tables is not None and read.tables is not None
    for name, frame in shipped.tables.tables.items():
        other = read.tables.tables[name]
        drop = [c for c in ("elapsed_s",) if c in frame.columns]
        pd.testing.assert_frame_equal(frame.drop(columns=drop), other.drop(columns=drop))
    missing = _task(None, *args, str(snapshot_file), "sha", when + pd.Timedelta(minutes=1))
    assert missing.tables is None and "KeyError" in missing.error
