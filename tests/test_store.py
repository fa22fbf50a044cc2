"""The DuckDB history store: schema, idempotent replacement, atomicity, query helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from tests.jobs_fakes import NO_MARGIN, fake_models, tape_chain  # noqa: F401  (fixture)
from volcal.errors import StoreError
from volcal.jobs import MarginResult, SnapshotResult, process_chain
from volcal.store import SCHEMA_VERSION, SNAPSHOT_TABLES, TEST_PAUSE_ENV, RunRecord, Store


def _result(shift_hours: float = 0.0) -> SnapshotResult:
    """The shipped ETH chain (as_of moved by ``shift_hours``) through the fake svi model."""
    chain = tape_chain("ETH")
    if shift_hours:
        chain = replace(chain, as_of=chain.as_of + pd.Timedelta(hours=shift_hours))
    res = process_chain(chain, models=["svi"], margin=NO_MARGIN)
    res.margins.append(
        MarginResult(
            "book",
            "svi",
            "ok",
            metrics=pd.DataFrame(
                {"metric": ["initial_margin_usd"], "value": [1000.0 + shift_hours], "unit": "USD"}
            ),
        )
    )
    return res


def _snapshot_rows(store: Store) -> dict[str, pd.DataFrame]:
    out = {}
    for t in SNAPSHOT_TABLES:
        frame = store.table(t).drop(columns=["run_id"])
        if "exchange_fields" in frame.columns:  # MAP values: compare as text
            frame["exchange_fields"] = frame["exchange_fields"].astype(str)
        out[t] = frame.sort_values(list(frame.columns[:4])).reset_index(drop=True)
    return out


@pytest.mark.usefixtures("fake_models")
def test_schema_and_round_trip(tmp_path: Path) -> None:
    res = _result()
    with Store(tmp_path / "h.duckdb") as store:
        assert store.schema_version == SCHEMA_VERSION
        store.write(RunRecord("run-1", config={"a": 1}, config_hash="abc"), [res.to_tables()])
        counts = store.counts()
        assert counts["runs"] == 1 and counts["snapshots"] == 1
        assert counts["chains"] == len(res.chain.quotes)  # type: ignore[union-attr]
        assert counts["fits"] == 1 and counts["fit_params"] > 0 and counts["margin"] == 1
        # the stored chain is the chain, exchange_* columns included
        back = store.load_chain("deribit", "ETH", res.chain.as_of)  # type: ignore[union-attr]
        assert back.equals(res.chain)
        run = store.runs().iloc[0]
        assert run["config_hash"] == "abc" and run["volcal_version"] != ""
        with pytest.raises(StoreError, match="no stored chain"):
            store.load_chain("deribit", "ETH", "2020-01-01")


@pytest.mark.usefixtures("fake_models")
def test_rerun_replaces_and_never_duplicates(tmp_path: Path) -> None:
    a, b = _result(0.0), _result(1.0)
    with Store(tmp_path / "h.duckdb") as store:
        store.write(RunRecord("r1"), [a.to_tables()])
        once = store.counts()
        store.write(RunRecord("r2"), [a.to_tables()])
        twice = store.counts()
        assert {k: v for k, v in twice.items() if k != "runs"} == {
            k: v for k, v in once.items() if k != "runs"
        }
        assert twice["runs"] == 2
        assert set(store.table("chains")["run_id"]) == {"r2"}  # the rerun's rows replaced
        store.write(RunRecord("r3"), [b.to_tables()])
        assert store.counts()["snapshots"] == 2
        assert store.counts()["chains"] == 2 * once["chains"]


@pytest.mark.usefixtures("fake_models")
def test_query_helpers(tmp_path: Path) -> None:
    results = [_result(h) for h in (0.0, 24.0)]
    with Store(tmp_path / "h.duckdb") as store:
        store.write(RunRecord("r"), [r.to_tables() for r in results])
        long = store.param_history("svi", currency="ETH")
        assert list(long.columns) == [
            "exchange", "currency", "as_of", "model", "expiry", "param", "value"
        ]  # fmt: skip
        assert set(long["param"]) == {"t", "forward", "vol", "curv"}
        assert long["as_of"].nunique() == 2
        wide = store.param_history("svi", currency="ETH", wide=True)
        assert {"vol", "curv", "t"} <= set(wide.columns) and len(wide) == len(long) // 4
        later = store.param_history("svi", start=results[1].chain.as_of)  # type: ignore[union-attr]
        assert later["as_of"].nunique() == 1
        ts = store.term_structure_history("ETH")
        assert set(ts["model"]) == {"market"} and ts["atm_vol"].between(0.3, 1.5).all()
        assert len(store.term_structure_history("ETH", model="svi")) > 0
        atm = store.atm_vol_history("ETH", tenors_days=(30.0, 1000.0))
        assert len(atm) == 4
        assert atm[atm["tenor_days"] == 1000.0]["atm_vol"].isna().all()  # no extrapolation
        # linear in total variance between the stored expiries around 30 days
        g = ts[ts["as_of"] == ts["as_of"].min()]
        w = np.interp(30 / 365, g["t"], g["atm_vol"] ** 2 * g["t"])
        first = atm[(atm["tenor_days"] == 30.0)].iloc[0]["atm_vol"]
        assert first == pytest.approx(np.sqrt(w / (30 / 365)), rel=1e-12)
        m = store.margin_history(portfolio="book")
        assert list(m["value"]) == [1000.0, 1024.0]


def test_version_mismatch_and_foreign_files(tmp_path: Path) -> None:
    import duckdb

    path = tmp_path / "h.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE schema_info SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(path)
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE x (a INTEGER)")
    con.close()
    with pytest.raises(StoreError, match="not a volcal store"):
        Store(other, read_only=True)
    with pytest.raises(StoreError, match="not found"):
        Store(tmp_path / "missing.duckdb", read_only=True)


_WRITER = """
import sys
import pandas as pd
from volcal import OptionChain
from volcal.store import RunRecord, SnapshotTables, Store, _chain_frame

chain = OptionChain.read_parquet(sys.argv[2])
snaps = [
    SnapshotTables("deribit", "ETH", chain.as_of + pd.Timedelta(hours=h), {"status": "ok"},
                   {"chains": _chain_frame(chain.quotes)})
    for h in (0, 1)
]
with Store(sys.argv[1]) as store:
    store.write(RunRecord("killed-run"), snaps)
"""


@pytest.mark.usefixtures("fake_models")
def test_killed_mid_write_leaves_store_as_before(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    with Store(path) as store:
        store.write(RunRecord("before"), [_result(0.0).to_tables()])
        before = _snapshot_rows(store)
        runs_before = store.runs()
    chain_file = tape_chain("ETH").to_parquet(tmp_path / "chain.parquet")
    marker = tmp_path / "inside-transaction"
    env = dict(os.environ, **{TEST_PAUSE_ENV: f"60:{marker}"})
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(chain_file)], cwd=REPO, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():  # the writer has deleted and re-inserted the first key
            assert proc.poll() is None, "writer exited before reaching the transaction"
            assert time.monotonic() < deadline, "writer never reached the transaction"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with Store(path, read_only=True) as store:
        after = _snapshot_rows(store)
        assert store.runs()["run_id"].tolist() == runs_before["run_id"].tolist()
    for table in SNAPSHOT_TABLES:
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    Store(path).close()
    with Store(path, read_only=True) as store, pytest.raises(StoreError, match="read-only"):
        store.write_run(RunRecord("x"))


@pytest.mark.usefixtures("fake_models")
def test_failed_model_and_snapshot_status_are_stored(tmp_path: Path) -> None:
    res = process_chain(tape_chain("ETH"), models=["svi", "heston"], margin=NO_MARGIN)
    assert res.status == "failed"
    with Store(tmp_path / "h.duckdb") as store:
        store.write(RunRecord("r"), [res.to_tables()])
        fits = store.fits().set_index("model")
        assert fits.loc["svi", "status"] == "ok"
        assert fits.loc["heston", "status"] == "failed"
        assert "CalibrationError: fake failure on ETH" in fits.loc["heston", "error"]
        assert store.snapshots()["status"].tolist() == ["failed"]


def test_thread_count_is_set_and_validated() -> None:
    with Store(":memory:", threads=1) as db:
        assert db.query("SELECT current_setting('threads') AS n")["n"].iloc[0] == 1
    with pytest.raises(StoreError, match="threads"):
        Store(":memory:", threads=0)


def test_batched_snapshot_write_equals_one_by_one() -> None:
    """``write_snapshots`` (one transaction, one INSERT per table) stores exactly what
    ``write_snapshot`` stores for each, and replaces keys like it."""
    snaps = [
        process_chain(tape_chain(cur), models=(), margin=NO_MARGIN).to_tables()
        for cur in ("ETH", "BTC")
    ]
    with Store(":memory:") as one, Store(":memory:") as many:
        for s in snaps:
            one.write_snapshot("r", s)
        many.write_snapshots("r", snaps)
        many.write_snapshots("r", snaps)  # replaces, never duplicates
        for table in SNAPSHOT_TABLES:
            a, b = one.table(table), many.table(table)
            assert len(a) > 0 or table in (
                "fits",
                "fit_params",
                "fit_diagnostics",
                "arbitrage",
                "margin",
                "term_structure",
            )
            pd.testing.assert_frame_equal(a, b)
    with Store(":memory:") as db, pytest.raises(StoreError, match="twice"):
        db.write_snapshots("r", [snaps[0], snaps[0]])
