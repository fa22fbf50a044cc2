"""The daily job end to end (``volcal run``): failure isolation, exit codes, store, outputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.jobs_fakes import (  # noqa: F401  (fixture)
    ETH_TAPE,
    fake_models,
    no_margin_config,
    tape_chain,
)
from volcal.cli import EXIT_FAILURE, EXIT_OK, EXIT_WARNINGS, main
from volcal.jobs import standard_portfolios
from volcal.store import Store


def _run(tmp_path: Path, *extra: str) -> int:
    cfg = no_margin_config(tmp_path)
    return main(["run", "--config", str(cfg), "--out", str(tmp_path / "out"), "--quiet", *extra])


def _summary(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "summary.json").read_text())


@pytest.mark.usefixtures("fake_models")
def test_failing_model_is_recorded_and_the_others_stored(tmp_path: Path) -> None:
    code = _run(tmp_path, "--replay", str(ETH_TAPE), "--models", "svi", "heston")
    assert code == EXIT_FAILURE
    summary = _summary(tmp_path)
    models = summary["chains"][0]["models"]
    assert models["svi"]["status"] == "ok"
    assert models["heston"]["status"] == "failed"
    assert models["heston"]["error"] == "CalibrationError: fake failure on ETH"
    assert summary["run"]["status"] == "partial" and summary["run"]["exit_code"] == 1
    assert (tmp_path / "out" / "report.html").exists()
    with Store(tmp_path / "out" / "volcal.duckdb", read_only=True) as store:
        fits = store.fits().set_index("model")["status"].to_dict()
        assert fits == {"svi": "ok", "heston": "failed"}
        assert len(store.param_history("svi")) > 0
        run = store.runs().iloc[-1]
        assert run["status"] == "partial" and run["exit_code"] == 1
        assert "fake failure on ETH" in run["errors"]
        assert json.loads(run["sources"])[0]["sha256"]  # the tape's checksum is recorded


@pytest.mark.usefixtures("fake_models")
def test_warnings_exit_3_only_under_strict(tmp_path: Path) -> None:
    assert _run(tmp_path, "--replay", str(ETH_TAPE), "--models", "svi", "ssvi") == EXIT_OK
    assert _summary(tmp_path)["chains"][0]["models"]["ssvi"]["status"] == "warning"
    args = ("--replay", str(ETH_TAPE), "--models", "svi", "ssvi", "--strict")
    assert _run(tmp_path, *args) == EXIT_WARNINGS


@pytest.mark.usefixtures("fake_models")
def test_one_bad_tape_does_not_lose_the_other(tmp_path: Path) -> None:
    bad = tmp_path / "deribit-BTC-broken.jsonl.gz"
    bad.write_bytes(gzip.compress(b"this is not a tape\n"))
    code = _run(tmp_path, "--replay", str(bad), str(ETH_TAPE), "--models", "svi")
    assert code == EXIT_FAILURE
    chains = {c["source"]["path"]: c for c in _summary(tmp_path)["chains"]}
    assert chains[str(bad)]["status"] == "load_failed" and chains[str(bad)]["error"]
    assert chains[str(ETH_TAPE)]["status"] == "ok"
    with Store(tmp_path / "out" / "volcal.duckdb", read_only=True) as store:
        assert store.snapshots()["currency"].tolist() == ["ETH"]


@pytest.mark.usefixtures("fake_models")
def test_rerun_is_idempotent_and_failed_run_keeps_outputs(tmp_path: Path) -> None:
    args = ("--replay", str(ETH_TAPE), "--models", "svi")
    assert _run(tmp_path, *args) == EXIT_OK
    with Store(tmp_path / "out" / "volcal.duckdb", read_only=True) as store:
        first = store.counts()
    report = (tmp_path / "out" / "report.html").read_bytes()
    assert _run(tmp_path, *args) == EXIT_OK
    with Store(tmp_path / "out" / "volcal.duckdb", read_only=True) as store:
        second = store.counts()
    assert second["runs"] == first["runs"] + 1
    assert {k: v for k, v in second.items() if k != "runs"} == {
        k: v for k, v in first.items() if k != "runs"
    }
    # a run whose every input fails writes nothing: the earlier report and summary stay
    bad = tmp_path / "broken.jsonl.gz"
    bad.write_bytes(gzip.compress(b"junk\n"))
    summary = (tmp_path / "out" / "summary.json").read_bytes()
    assert _run(tmp_path, "--replay", str(bad), "--models", "svi") == EXIT_FAILURE
    assert (tmp_path / "out" / "summary.json").read_bytes() == summary
    assert len((tmp_path / "out" / "report.html").read_bytes()) == len(report)


@pytest.mark.usefixtures("fake_models")
def test_no_store_and_no_report(tmp_path: Path) -> None:
    args = ("--replay", str(ETH_TAPE), "--models", "svi", "--no-store", "--no-report")
    assert _run(tmp_path, *args) == EXIT_OK
    assert not (tmp_path / "out" / "volcal.duckdb").exists()
    assert not (tmp_path / "out" / "report.html").exists()
    assert _summary(tmp_path)["run"]["store"] is None


def test_standard_portfolios_pick_listed_usable_options() -> None:
    chain = tape_chain("ETH")
    books = standard_portfolios(chain)
    assert set(books) == {"short_straddle", "short_strangle", "risk_reversal"}
    q = chain.quotes.set_index("symbol")
    for book in books.values():
        assert (q.loc[book["symbol"], "filter_reason"] == "").all()
        assert q.loc[book["symbol"], "expiry"].nunique() == 1
    strangle = q.loc[books["short_strangle"]["symbol"]]
    assert strangle["call"].tolist() == [True, False]
    assert (strangle["k"].iloc[0] > 0) and (strangle["k"].iloc[1] < 0)


def test_default_run_on_one_tape_with_the_real_models(tmp_path: Path) -> None:
    """The real fits and margin (whatever this volcal provides) through the whole job."""
    from volcal.jobs import available_models

    out = tmp_path / "out"
    code = main(["run", "--replay", str(ETH_TAPE), "--out", str(out), "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    chain = summary["chains"][0]
    assert set(chain["models"]) == set(available_models())
    failed = {m: v["error"] for m, v in chain["models"].items() if v["status"] == "failed"}
    assert not failed
    assert code == EXIT_OK, summary["errors"]
    assert (out / "report.html").stat().st_size > 50_000


@pytest.mark.usefixtures("fake_models")
def test_run_from_a_snapshot_file_records_its_checksum(tmp_path: Path) -> None:
    from volcal.jobs import sha256_file

    snap = tape_chain("ETH").to_parquet(tmp_path / "eth.parquet")
    args = ("--snapshot", str(snap), "--currency", "eth", "--models", "svi", "--no-report")
    assert _run(tmp_path, *args) == EXIT_OK
    chain = _summary(tmp_path)["chains"][0]
    assert chain["underlying"] == "ETH" and chain["models"]["svi"]["status"] == "ok"
    assert chain["source"] == {"kind": "snapshot", "path": str(snap), "sha256": sha256_file(snap)}
    with Store(tmp_path / "out" / "volcal.duckdb", read_only=True) as store:
        assert store.snapshots()["source_sha256"].tolist() == [sha256_file(snap)]
