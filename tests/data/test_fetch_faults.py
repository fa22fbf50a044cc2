"""Injected faults: each gets its documented behaviour, and the tape keeps every response.

Faults are injected through the replay layer: entries of the Deribit test tape are replaced
or preceded by failing ones, so ccxt's real error handling turns them into its exceptions
(HTTP 429 -> RateLimitExceeded, a transport timeout -> RequestTimeout, Deribit error 11051
-> OnMaintenance, -32602 -> BadRequest).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from volcal.data.exchanges import RetryPolicy, fetch_quotes
from volcal.data.tape import Tape, TapeEntry, read_tape, replay
from volcal.errors import ChainValidationError, FetchError, ReplayError

BOOK = 2  # entry of public/get_book_summary_by_currency on the Deribit tape


def deribit(tapes: Path) -> Tape:
    return read_tape(tapes / "deribit-BTC.jsonl.gz")


def with_entries(tape: Tape, at: int, *new: TapeEntry, drop: bool = False) -> Tape:
    """``tape`` with entries ``new`` inserted before entry ``at`` (or replacing it)."""
    entries = list(tape.entries)
    entries[at : at + (1 if drop else 0)] = list(new)
    renumbered = [replace(e, seq=i) for i, e in enumerate(entries)]
    return Tape(header=dict(tape.header), entries=renumbered)


def failure(like: TapeEntry, error: str = "RequestTimeout") -> TapeEntry:
    return replace(
        like,
        status=None,
        reason=None,
        headers={},
        text=None,
        error=error,
        message=f"deribit GET {like.url}",
    )


def http(like: TapeEntry, status: int, text: str, ctype: str = "application/json") -> TapeEntry:
    return replace(like, status=status, reason="", headers={"Content-Type": ctype}, text=text)


def book_rows(tape: Tape) -> list[dict[str, Any]]:
    return list(json.loads(tape.entries[BOOK].text or "")["result"])


def with_book(tape: Tape, rows: list[dict[str, Any]]) -> Tape:
    obj = json.loads(tape.entries[BOOK].text or "")
    obj["result"] = rows
    return with_entries(tape, BOOK, replace(tape.entries[BOOK], text=json.dumps(obj)), drop=True)


# ---- network-type failures: retried with backoff -------------------------------------------


def test_timeout_then_success_is_retried(tapes: Path, no_sleep: list[float]) -> None:
    tape = deribit(tapes)
    bad = with_entries(tape, BOOK, failure(tape.entries[BOOK]), failure(tape.entries[BOOK]))
    raw = fetch_quotes(replay(bad), "BTC")
    clean = fetch_quotes(replay(tape), "BTC")
    assert no_sleep == [0.5, 1.0]  # two timeouts, exponential backoff
    assert raw.frame.equals(clean.frame) and raw.as_of == clean.as_of


def test_http_429_then_success(tapes: Path, no_sleep: list[float]) -> None:
    tape = deribit(tapes)
    bad = with_entries(tape, BOOK, http(tape.entries[BOOK], 429, "Too Many Requests", "text/plain"))
    raw = fetch_quotes(replay(bad), "BTC")
    assert no_sleep == [0.5] and len(raw.frame) == 36


def test_maintenance_exhausts_retries_and_names_endpoint(
    tapes: Path, no_sleep: list[float]
) -> None:
    tape = deribit(tapes)
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "error": {"message": "system_maintenance", "code": 11051},
            "testnet": False,
        }
    )
    bad = with_entries(tape, BOOK, http(tape.entries[BOOK], 503, body), drop=True)
    policy = RetryPolicy(max_retries=3, base_delay_s=1.0, factor=3.0, max_delay_s=5.0)
    with pytest.raises(FetchError) as info:
        fetch_quotes(replay(bad), "BTC", retry=policy)
    msg = str(info.value)
    assert "deribit" in msg and "get_book_summary_by_currency" in msg
    assert "OnMaintenance" in msg and "after 4 attempts" in msg
    assert no_sleep == [1.0, 3.0, 5.0]  # bounded by max_delay_s
    assert isinstance(info.value, ConnectionError)


def test_exchange_error_is_not_retried(tapes: Path, no_sleep: list[float], tmp_path: Path) -> None:
    tape = deribit(tapes)
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "error": {
                "message": "Invalid params",
                "code": -32602,
                "data": {"reason": "invalid currency"},
            },
        }
    )
    bad = with_entries(tape, BOOK, http(tape.entries[BOOK], 400, body), drop=True)
    path = tmp_path / "t.jsonl.gz"
    with pytest.raises(FetchError, match=r"BadRequest.*not retried"):
        fetch_quotes(replay(bad), "BTC", tape=path)
    assert no_sleep == []
    recorded = read_tape(path)
    assert [e.status for e in recorded.entries] == [200, 200, 400]  # asked once, kept


def test_retry_with_fake_transport_raising_ccxt_errors(no_sleep: list[float]) -> None:
    """A fake exchange whose unified calls raise ccxt.RequestTimeout, then succeed."""
    import ccxt

    from volcal.data.synth import BTC_MARKET, DEFAULT_AS_OF, synthetic_deribit_responder
    from volcal.data.tape import make_exchange, serve

    responder, _ = synthetic_deribit_responder([BTC_MARKET], DEFAULT_AS_OF, seed=1)
    ex = make_exchange("deribit", {}, asynchronous=False)
    serve(ex, responder)
    real = ex.fetch_option_chain
    calls = {"n": 0}

    def flaky(code: str, params: dict[str, Any] | None = None) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ccxt.RequestTimeout("deribit GET .../get_book_summary_by_currency")
        return real(code)

    ex.fetch_option_chain = flaky
    raw = fetch_quotes(ex, "BTC")
    assert calls["n"] == 3 and no_sleep == [0.5, 1.0] and len(raw.frame) > 100

    calls["n"] = -10
    ex.markets = None
    with pytest.raises(FetchError, match="RequestTimeout") as info:
        fetch_quotes(ex, "BTC", retry=RetryPolicy(max_retries=2))
    assert isinstance(info.value.__cause__, ccxt.RequestTimeout)

    def refuse(code: str, params: dict[str, Any] | None = None) -> Any:
        calls["n"] += 1
        raise ccxt.ExchangeError("deribit: permission denied")

    ex.fetch_option_chain = refuse
    calls["n"] = 0
    with pytest.raises(FetchError, match="not retried"):
        fetch_quotes(ex, "BTC")
    assert calls["n"] == 1


# ---- malformed data: ChainValidationError, tape intact --------------------------------------


def test_truncated_json(tapes: Path, tmp_path: Path) -> None:
    tape = deribit(tapes)
    text = tape.entries[BOOK].text or ""
    cut = with_entries(
        tape, BOOK, replace(tape.entries[BOOK], text=text[: len(text) // 2]), drop=True
    )
    path = tmp_path / "cut.jsonl.gz"
    with pytest.raises(ChainValidationError, match="not valid JSON"):
        fetch_quotes(replay(cut), "BTC", retry=RetryPolicy(max_retries=0), tape=path)
    recorded = read_tape(path)  # the response that failed to parse is on the tape
    assert len(recorded.entries) == 3
    assert recorded.entries[BOOK].text == text[: len(text) // 2]


def test_field_with_wrong_type(tapes: Path) -> None:
    tape = deribit(tapes)
    rows = book_rows(tape)
    for r in rows:
        if r["instrument_name"] == "BTC-29MAY26-76000-C":
            r["bid_price"] = "zero point oh four"
        if r["instrument_name"] == "BTC-2MAY26-75000-P":
            r["underlying_price"] = True
    with pytest.raises(ChainValidationError) as info:
        fetch_quotes(replay(with_book(tape, rows)), "BTC")
    assert set(info.value.instruments) == {"BTC-29MAY26-76000-C", "BTC-2MAY26-75000-P"}
    assert "bid_price='zero point oh four'" in str(info.value)


def test_unparseable_instrument_name(tapes: Path) -> None:
    tape = deribit(tapes)
    rows = book_rows(tape)
    rows.append({**rows[0], "instrument_name": "BTC-31FOO26-??-X"})
    with pytest.raises(ChainValidationError, match="not a listed option market") as info:
        fetch_quotes(replay(with_book(tape, rows)), "BTC")
    assert info.value.instruments == ["BTC-31FOO26-??-X"]


def test_currency_without_options(tapes: Path) -> None:
    with pytest.raises(ChainValidationError, match="no option markets for ETH"):
        fetch_quotes(replay(deribit(tapes)), "ETH")
    with pytest.raises(ChainValidationError, match="no option markets for XRP"):
        fetch_quotes(replay(tapes / "bybit-BTC.jsonl.gz"), "XRP")


def test_empty_chain_is_an_error(tapes: Path) -> None:
    with pytest.raises(ChainValidationError, match="no option quotes"):
        fetch_quotes(replay(with_book(deribit(tapes), [])), "BTC")


def test_missing_forward(tapes: Path) -> None:
    tape = deribit(tapes)
    rows = book_rows(tape)
    rows[3]["underlying_price"] = None
    with pytest.raises(ChainValidationError, match="underlying_price") as info:
        fetch_quotes(replay(with_book(tape, rows)), "BTC")
    assert info.value.instruments == [rows[3]["instrument_name"]]


def test_request_not_on_tape_is_not_retried(tapes: Path, no_sleep: list[float]) -> None:
    tape = deribit(tapes)
    short = Tape(header=tape.header, entries=tape.entries[:2])
    with pytest.raises(ReplayError, match="get_book_summary_by_currency"):
        fetch_quotes(replay(short), "BTC")
    assert no_sleep == []


def test_tape_file_exists_from_the_start(
    tapes: Path, tmp_path: Path, no_sleep: list[float]
) -> None:
    """Even a fetch whose every request times out leaves a readable tape of what happened."""
    tape = deribit(tapes)
    dead = Tape(header=tape.header, entries=[failure(tape.entries[0])])
    path = tmp_path / "dead.jsonl.gz"
    with pytest.raises(FetchError, match="load_markets"):
        fetch_quotes(replay(dead), "BTC", tape=path, retry=RetryPolicy(max_retries=1))
    recorded = read_tape(path)
    assert [e.error for e in recorded.entries] == ["RequestTimeout", "RequestTimeout"]


def test_retry_policy_validation() -> None:
    assert RetryPolicy().delay(10) == 8.0
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        RetryPolicy(factor=0.5)
