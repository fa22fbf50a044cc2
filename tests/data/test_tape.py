"""Tapes: file format, atomic writes, request matching, replay through ccxt's own code."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from volcal.data.exchanges import fetch_quotes
from volcal.data.tape import (
    TAPE_FORMAT,
    Tape,
    TapeEntry,
    normalise_request,
    read_tape,
    replay,
)
from volcal.errors import ReplayError


def test_tape_file_is_gzip_json_lines_with_header(tapes: Path) -> None:
    with gzip.open(tapes / "deribit-BTC.jsonl.gz", "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == TAPE_FORMAT and header["exchange"] == "deribit"
    entries = [json.loads(line) for line in lines[1:]]
    assert [e["seq"] for e in entries] == [0, 1, 2]
    for e in entries:
        assert {"method", "url", "body", "status", "headers", "text", "received_ns"} <= set(e)
        json.loads(e["text"])  # the raw body text as ccxt received it


def test_tape_round_trip(tmp_path: Path, tapes: Path) -> None:
    tape = read_tape(tapes / "okx-BTC.jsonl.gz")
    out = tape.write(tmp_path / "copy.jsonl.gz")
    again = read_tape(out)
    assert again.header == tape.header
    assert again.entries == tape.entries
    assert out.read_bytes() == tape.to_bytes()  # deterministic bytes (gzip mtime 0)


def test_atomic_write_keeps_old_file_on_failure(
    tmp_path: Path, tapes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.jsonl.gz"
    tape = read_tape(tapes / "bybit-BTC.jsonl.gz")
    tape.write(path)
    before = path.read_bytes()
    bigger = Tape(header=dict(tape.header), entries=[*tape.entries, tape.entries[-1]])

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        bigger.write(path)
    assert path.read_bytes() == before  # the old tape is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl.gz"]  # no temp file left


def test_unreadable_tapes_raise_replay_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ReplayError, match="cannot read tape"):
        read_tape(bad)
    other = tmp_path / "other.jsonl.gz"
    other.write_bytes(gzip.compress(b'{"format": "something-else"}\n'))
    with pytest.raises(ReplayError, match="not a volcal tape"):
        read_tape(other)
    truncated = tmp_path / "cut.jsonl.gz"
    cut = b'{"format": "volcal-tape", "version": 1}\n{"seq": 0, "met'
    truncated.write_bytes(gzip.compress(cut))
    with pytest.raises(ReplayError, match="corrupt"):
        read_tape(truncated)


def test_matching_ignores_query_order_and_clocks() -> None:
    a = normalise_request("get", "https://x.io/api?b=2&a=1&timestamp=1700000000000", None)
    b = normalise_request("GET", "https://x.io/api?a=1&b=2&timestamp=1800000000000&nonce=5", None)
    assert a == b
    c = normalise_request("GET", "https://x.io/api?a=1&b=3", None)
    assert a != c
    j1 = normalise_request("POST", "https://x.io/rpc", '{"b": 1, "a": [1, 2], "nonce": 3}')
    j2 = normalise_request("POST", "https://x.io/rpc", '{"a": [1, 2], "b": 1, "nonce": 4}')
    assert j1 == j2


def test_request_not_on_tape_names_the_url(tapes: Path) -> None:
    ex = replay(tapes / "deribit-BTC.jsonl.gz")
    ex.load_markets()
    with pytest.raises(ReplayError, match=r"get_book_summary_by_currency\?currency=ETH"):
        ex.fetch_option_chain("ETH")


def test_replay_parses_through_ccxt(tapes: Path) -> None:
    ex = replay(tapes / "deribit-BTC.jsonl.gz")
    markets = ex.load_markets()  # ccxt's own fetch_markets on the recorded JSON
    m = markets["BTC/USD:BTC-260529-76000-C"]
    assert m["id"] == "BTC-29MAY26-76000-C"
    assert m["option"] and m["inverse"] and m["settle"] == "BTC"
    chain = ex.fetch_option_chain("BTC")
    assert chain["BTC/USD:BTC-260529-76000-C"]["bidPrice"] == 0.0435
    assert chain["BTC/USD:BTC-260529-76000-C"]["underlyingPrice"] == 76285.8


def test_served_entries_repeat_last_and_keep_order(tapes: Path) -> None:
    tape = read_tape(tapes / "deribit-BTC.jsonl.gz")
    book = tape.entries[2]
    first = replace(book, seq=2, text=book.text.replace('"bid_price":0.0435', '"bid_price":0.04'))
    tape2 = Tape(header=tape.header, entries=[*tape.entries[:2], first, replace(book, seq=3)])
    ex = replay(tape2)
    ex.load_markets()
    sym = "BTC/USD:BTC-260529-76000-C"
    assert ex.fetch_option_chain("BTC")[sym]["bidPrice"] == 0.04  # first entry first
    assert ex.fetch_option_chain("BTC")[sym]["bidPrice"] == 0.0435  # then the next
    assert ex.fetch_option_chain("BTC")[sym]["bidPrice"] == 0.0435  # then the last again


def test_recording_a_replay_reproduces_the_tape(tmp_path: Path, tapes: Path) -> None:
    for name in ("deribit", "okx", "bybit", "binance"):
        original = read_tape(tapes / f"{name}-BTC.jsonl.gz")
        raw = fetch_quotes(replay(original), "BTC", tape=tmp_path / f"{name}.jsonl.gz")
        again = read_tape(tmp_path / f"{name}.jsonl.gz")
        strip = [replace(e, seq=0) for e in again.entries]
        assert strip == [replace(e, seq=0) for e in original.entries]
        assert again.header["config"] == original.header["config"]
        assert raw.tape.path == tmp_path / f"{name}.jsonl.gz"


def test_tape_entry_json_round_trip_for_failures() -> None:
    e = TapeEntry(
        seq=3,
        method="GET",
        url="https://x.io/a",
        body=None,
        status=None,
        reason=None,
        headers={},
        text=None,
        received_ns=1_700_000_000_000_000_000,
        error="RequestTimeout",
        message="deribit GET https://x.io/a",
    )
    assert TapeEntry.from_json(json.loads(json.dumps(e.to_json()))) == e
