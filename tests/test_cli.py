"""The command line: the README's main command on the shipped tapes, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import REPO
from volcal import OptionChain
from volcal.cli import EXIT_OK, EXIT_USAGE, main

DATA = REPO / "data"


def test_run_on_shipped_tapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--data", str(DATA), "--out", str(tmp_path)]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "deribit BTC" in printed and "deribit ETH" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {c["underlying"] for c in summary["chains"]} == {"BTC", "ETH"}
    for c in summary["chains"]:
        assert len(c["expiries"]) >= 5
        # synthetic tapes: ATM vols in a plausible crypto range, all expiries 08:00 UTC
        for e in c["expiries"]:
            assert 0.2 < e["atm_iv_mark"] < 1.5
            assert pd.Timestamp(e["expiry"]).hour == 8
    chain = OptionChain.read_parquet(tmp_path / "chain_deribit_BTC.parquet")
    assert chain.underlying == "BTC" and len(chain) > 100


def test_run_replay_one_currency(tmp_path: Path) -> None:
    tape = DATA / "deribit-ETH-synthetic.jsonl.gz"
    assert main(["run", "--replay", str(tape), "--out", str(tmp_path), "--quiet"]) == EXIT_OK
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [c["underlying"] for c in summary["chains"]] == ["ETH"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert main(["nonsense"]) == EXIT_USAGE
    assert main(["run", "--data", str(tmp_path), "--out", str(tmp_path)]) == EXIT_USAGE
    assert main(["run", "--snapshot", str(tmp_path / "missing.parquet")]) == EXIT_USAGE
    assert main(["fetch", "--exchange", "nasdaq", "--out", str(tmp_path)]) == EXIT_USAGE


def test_failed_run_keeps_earlier_outputs(tmp_path: Path) -> None:
    assert main(["run", "--data", str(DATA), "--out", str(tmp_path), "--quiet"]) == EXIT_OK
    before = (tmp_path / "summary.json").read_bytes()
    assert main(["run", "--replay", str(tmp_path / "nope.jsonl.gz"), "--out", str(tmp_path)]) != 0
    assert (tmp_path / "summary.json").read_bytes() == before


def test_fetch_replay_writes_the_replayed_chain(tmp_path: Path) -> None:
    from volcal import fetch_chain, replay

    tape = DATA / "deribit-ETH-synthetic.jsonl.gz"
    args = ["fetch", "--replay", str(tape), "--currency", "ETH", "--out", str(tmp_path)]
    assert main(args) == EXIT_OK
    (written,) = tmp_path.glob("chain_deribit_ETH_*.parquet")
    assert OptionChain.read_parquet(written).equals(fetch_chain(replay(tape), "ETH"))
