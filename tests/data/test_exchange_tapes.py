"""Each exchange's replayed chain against hand-computed values.

The tapes are built by ``tests/data/make_tapes.py``: Deribit from real rows of the shared
history (snapshot 2026-04-30 22:04:22.288212 UTC), OKX / Bybit / Binance from the literal
payloads in that script (first response received 2026-03-20 12:00:00 UTC, each later
response 1 ms later; ``as_of`` is the receive time of the last quote response).
Year fractions are ACT/365F: seconds / 31 536 000.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volcal.data.exchanges import (
    afetch_chains,
    afetch_quotes,
    fetch_chain,
    fetch_quotes,
)
from volcal.data.tape import replay

YEAR_S = 365 * 86_400.0


def row(frame: pd.DataFrame, symbol: str) -> pd.Series:
    hit = frame[frame["symbol"] == symbol]
    assert len(hit) == 1, symbol
    return hit.iloc[0]


# ---- Deribit: coin-quoted inverse options, forward = underlying_price ---------------------


def test_deribit_hand_computed(tapes: Path) -> None:
    raw = fetch_quotes(replay(tapes / "deribit-BTC.jsonl.gz"), "BTC")
    assert raw.quote_unit == "coin" and raw.exchange == "deribit" and raw.underlying == "BTC"
    assert raw.as_of == pd.Timestamp("2026-04-30T22:04:22.288212Z")
    assert len(raw.frame) == 36 and raw.frame["expiry"].nunique() == 3
    r = row(raw.frame, "BTC-29MAY26-76000-C")
    assert r["expiry"] == pd.Timestamp("2026-05-29T08:00:00Z") and r["call"]
    assert (r["strike"], r["bid_coin"], r["ask_coin"]) == (76000.0, 0.0435, 0.0445)
    assert r["forward"] == r["usd_per_coin"] == 76285.8  # Deribit underlying_price
    assert r["exchange_iv_mark"] == pytest.approx(0.3808)  # mark_iv 38.08 (%)
    assert r["index_price"] == 76256.07 and r["open_interest"] == 1887.0
    put = row(raw.frame, "BTC-25SEP26-75000-P")
    assert not put["call"] and put["forward"] == 76842.87

    chain = raw.to_chain()
    q = chain.quotes.set_index("symbol")
    c = q.loc["BTC-29MAY26-76000-C"]
    # 2026-04-30 22:04:22.288212 -> 2026-05-29 08:00: 28 d 9 h 55 min 37.711788 s
    assert c["t"] == pytest.approx(2_454_937.711788 / YEAR_S, rel=1e-12)
    assert c["bid_usd"] == pytest.approx(3318.4323, rel=1e-12)  # 0.0435 * 76285.8
    assert c["ask_usd"] == pytest.approx(3394.7181, rel=1e-12)  # 0.0445 * 76285.8
    assert c["forward_source"] == "exchange" and c["discount"] == 1.0
    assert c["k"] == pytest.approx(math.log(76000 / 76285.8), rel=1e-12)
    # our Black-76 vol of Deribit's mark price is Deribit's own mark IV (Deribit computes it
    # a moment apart, so only to ~0.3 vol points on a 4-week option)
    assert c["iv_mark"] == pytest.approx(0.3808, abs=3e-3)
    assert np.nanmax(np.abs(q["iv_mark"] - q["exchange_iv_mark"])) < 0.02


@pytest.mark.realdata
def test_deribit_tape_matches_shared_history(tapes: Path, deribit_parquet: Path) -> None:
    """The tape carries the shared snapshot's values unchanged."""
    df = pd.read_parquet(
        deribit_parquet,
        columns=[
            "timestamp",
            "instrument_name",
            "bid_price",
            "ask_price",
            "mark_price",
            "underlying",
            "open_interest",
            "implied_volatility",
        ],
    )
    snap = df[df["timestamp"] == pd.Timestamp("2026-04-30T22:04:22.288212Z")]
    raw = fetch_quotes(replay(tapes / "deribit-BTC.jsonl.gz"), "BTC")
    merged = raw.frame.merge(snap, left_on="symbol", right_on="instrument_name")
    assert len(merged) == 36
    np.testing.assert_array_equal(merged["bid_coin"], merged["bid_price"])
    np.testing.assert_array_equal(merged["ask_coin"], merged["ask_price"])
    np.testing.assert_array_equal(merged["mark_coin"], merged["mark_price"])
    np.testing.assert_array_equal(merged["forward"], merged["underlying"])
    np.testing.assert_allclose(merged["exchange_iv_mark"], merged["implied_volatility"], atol=5e-5)


# ---- OKX: coin-quoted, forward = opt-summary fwdPx, contract 0.01 BTC ---------------------


def test_okx_hand_computed(tapes: Path) -> None:
    raw = fetch_quotes(replay(tapes / "okx-BTC.jsonl.gz"), "BTC")
    assert raw.quote_unit == "coin"
    assert raw.as_of == pd.Timestamp("2026-03-20T12:00:00.003Z")  # 4th response
    f = raw.frame
    assert len(f) == 8
    c = row(f, "BTC-USD-260327-80000-C")
    assert c["call"] and c["expiry"] == pd.Timestamp("2026-03-27T08:00Z")
    assert (c["bid_coin"], c["ask_coin"], c["mark_coin"]) == (0.0625, 0.0635, 0.063)
    assert c["forward"] == c["usd_per_coin"] == 85120.5
    assert c["contract_size"] == pytest.approx(0.01)  # ctVal 1 x ctMult 0.01
    assert (c["bid_size"], c["ask_size"]) == (25.0, 30.0)
    assert (c["exchange_iv_bid"], c["exchange_iv_ask"], c["exchange_iv_mark"]) == (0.48, 0.55, 0.52)
    assert c["exchange_delta"] == 0.55  # deltaBS, not OKX's coin-denominated delta (0.5)
    p = row(f, "BTC-USD-260327-90000-P")
    assert not p["call"] and math.isnan(p["bid_coin"]) and p["ask_coin"] == 0.0605
    assert math.isnan(p["exchange_iv_bid"])  # bidVol "0" = none
    assert row(f, "BTC-USD-260626-90000-P")["forward"] == 86400.0

    q = raw.to_chain().quotes.set_index("symbol")
    cc = q.loc["BTC-USD-260327-80000-C"]
    # 2026-03-20 12:00:00.003 -> 2026-03-27 08:00: 6 d 20 h - 3 ms = 590 399.997 s
    assert cc["t"] == pytest.approx(590_399.997 / YEAR_S, rel=1e-12)
    assert cc["bid_usd"] == pytest.approx(5320.03125, rel=1e-12)  # 0.0625 * 85120.5
    assert cc["ask_usd"] == pytest.approx(5405.15175, rel=1e-12)  # 0.0635 * 85120.5
    assert cc["forward_source"] == "exchange"


# ---- Bybit: USD(C)-quoted, forward = underlyingPrice, "0" = no quote ----------------------


def test_bybit_hand_computed(tapes: Path) -> None:
    raw = fetch_quotes(replay(tapes / "bybit-BTC.jsonl.gz"), "BTC")
    assert raw.quote_unit == "usd"
    assert raw.as_of == pd.Timestamp("2026-03-20T12:00:00.001Z")  # 2nd response
    f = raw.frame
    assert len(f) == 8 and "bid_coin" not in f.columns
    c = row(f, "BTC-27MAR26-80000-C")
    assert c["call"] and (c["bid_usd"], c["ask_usd"], c["mark_usd"]) == (5305.0, 5390.0, 5350.0)
    assert c["forward"] == c["usd_per_coin"] == 85110.0
    assert c["index_price"] == 84990.5 and c["contract_size"] == 1.0
    assert c["exchange_delta"] == 0.55
    p = row(f, "BTC-27MAR26-90000-P")
    assert not p["call"]
    assert math.isnan(p["bid_usd"]) and p["bid_size"] == 0.0  # bid1Price "0", bid1Size "0"
    assert math.isnan(p["exchange_iv_bid"]) and p["exchange_iv_ask"] == 0.61

    q = raw.to_chain().quotes.set_index("symbol")
    cc = q.loc["BTC-27MAR26-80000-C"]
    assert cc["t"] == pytest.approx(590_399.999 / YEAR_S, rel=1e-12)
    assert cc["bid_coin"] == pytest.approx(5305 / 85110, rel=1e-12)  # 0.062331101...
    assert q.loc["BTC-27MAR26-90000-P", "ask_coin"] == pytest.approx(5150 / 85110, rel=1e-12)
    assert q.loc["BTC-26JUN26-80000-P", "forward"] == 86390.0


# ---- Binance: USDT-quoted, no forward published -> put-call parity -------------------------


def test_binance_hand_computed(tapes: Path) -> None:
    raw = fetch_quotes(replay(tapes / "binance-BTC.jsonl.gz"), "BTC")
    assert raw.quote_unit == "usd"
    assert raw.as_of == pd.Timestamp("2026-03-20T12:00:00.002Z")  # 3rd response
    f = raw.frame
    assert len(f) == 8  # the ETH option on the same tickers is not a BTC option
    assert not f["symbol"].str.startswith("ETH").any()
    c = row(f, "BTC-260327-80000-C")
    assert c["call"] and (c["bid_usd"], c["ask_usd"], c["mark_usd"]) == (5300.0, 5400.0, 5350.0)
    assert math.isnan(c["forward"]) and c["usd_per_coin"] == c["index_price"] == 84985.5
    assert (c["exchange_iv_mark"], c["exchange_delta"]) == (0.52, 0.93)

    q = raw.to_chain().quotes.set_index("symbol")
    # mids: C - P = 5350 - 250 = 5100 = F - 80000 and 120 - 5020 = -4900 = F - 90000
    assert q.loc["BTC-260327-80000-C", "forward"] == pytest.approx(85100.0, rel=1e-9)
    # 10250 - 3850 = 6400 = F - 80000
    assert q.loc["BTC-260626-90000-P", "forward"] == pytest.approx(86400.0, rel=1e-9)
    assert (q["forward_source"] == "parity").all()
    assert q.loc["BTC-260327-80000-C", "discount"] == pytest.approx(1.0, abs=1e-9)
    assert q.loc["BTC-260327-80000-C", "bid_coin"] == pytest.approx(5300 / 84985.5, rel=1e-12)


# ---- the public entry points ---------------------------------------------------------------


def test_fetch_chain_returns_option_chain(tapes: Path) -> None:
    from volcal.chain import OptionChain

    chain = fetch_chain(replay(tapes / "okx-BTC.jsonl.gz"), "btc")
    assert isinstance(chain, OptionChain)
    assert chain.as_of == pd.Timestamp("2026-03-20T12:00:00.003Z")


def test_replay_is_deterministic(tapes: Path) -> None:
    a = fetch_quotes(replay(tapes / "deribit-BTC.jsonl.gz"), "BTC")
    b = fetch_quotes(replay(tapes / "deribit-BTC.jsonl.gz"), "BTC")
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.as_of == b.as_of


def test_replay_gives_the_live_chain(tmp_path: Path) -> None:
    """A fetch against a (synthetic) live exchange and the replay of its tape agree."""
    from volcal.data.exchanges import exchange_config
    from volcal.data.synth import BTC_MARKET, DEFAULT_AS_OF, synthetic_deribit_responder
    from volcal.data.tape import make_exchange, serve

    responder, _ = synthetic_deribit_responder([BTC_MARKET], DEFAULT_AS_OF, seed=7)
    live = make_exchange("deribit", exchange_config("deribit", "BTC"), asynchronous=False)
    serve(live, responder)
    path = tmp_path / "live.jsonl.gz"
    live_raw = fetch_quotes(live, "BTC", tape=path)
    replayed = fetch_quotes(replay(path), "BTC")
    pd.testing.assert_frame_equal(live_raw.frame, replayed.frame)
    assert live_raw.as_of == replayed.as_of
    pd.testing.assert_frame_equal(live_raw.to_chain().quotes, replayed.to_chain().quotes)


def test_async_replay_and_concurrent_fetches(tapes: Path) -> None:
    async def main() -> list[object]:
        deribit = replay(tapes / "deribit-BTC.jsonl.gz", asynchronous=True)
        okx = replay(tapes / "okx-BTC.jsonl.gz", asynchronous=True)
        bybit_sync = replay(tapes / "bybit-BTC.jsonl.gz")  # a sync instance runs in a thread
        try:
            single = await afetch_quotes(deribit, "BTC")
            chains = await afetch_chains([(okx, "BTC"), (deribit, "BTC"), (bybit_sync, "BTC")])
        finally:
            await deribit.close()
            await okx.close()
        return [single, *chains]

    single, okx_chain, deribit_chain, bybit_chain = asyncio.run(main())
    sync = fetch_quotes(replay(tapes / "deribit-BTC.jsonl.gz"), "BTC")
    pd.testing.assert_frame_equal(single.frame, sync.frame)  # type: ignore[attr-defined]
    assert okx_chain.exchange == "okx" and len(okx_chain.quotes) == 8  # type: ignore[attr-defined]
    assert deribit_chain.as_of == sync.as_of  # type: ignore[attr-defined]
    assert bybit_chain.exchange == "bybit"  # type: ignore[attr-defined]


def test_async_instance_in_sync_fetch(tapes: Path) -> None:
    ex = replay(tapes / "bybit-BTC.jsonl.gz", asynchronous=True)
    raw = fetch_quotes(ex, "BTC")  # run to completion with asyncio.run
    assert len(raw.frame) == 8
    asyncio.run(ex.close())


def test_afetch_chains_writes_one_tape_per_fetch(tmp_path: Path, tapes: Path) -> None:
    async def main() -> list[object]:
        return await afetch_chains(
            [
                (replay(tapes / "okx-BTC.jsonl.gz"), "BTC"),
                (replay(tapes / "binance-BTC.jsonl.gz"), "BTC"),
            ],
            tape_dir=tmp_path / "tapes",
        )

    chains = asyncio.run(main())
    assert [c.exchange for c in chains] == ["okx", "binance"]  # type: ignore[attr-defined]
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "tapes").glob("*.jsonl.gz"))
    assert names == ["binance", "okx"]


def test_unknown_exchange_name() -> None:
    with pytest.raises(ValueError, match="unsupported exchange 'kraken'"):
        fetch_quotes("kraken", "BTC")


def test_options_at_expiry_are_flagged_not_fatal(tapes: Path) -> None:
    """An option the exchange still lists at its expiry is kept, flagged by the filters."""
    raw = fetch_quotes(replay(tapes / "deribit-BTC.jsonl.gz"), "BTC")
    late = raw.frame.copy()
    late.loc[0, "expiry"] = raw.as_of - pd.Timedelta(minutes=1)
    from dataclasses import replace as dc_replace

    chain = dc_replace(raw, frame=late).to_chain()
    q = chain.quotes.set_index("symbol")
    assert "expired" in q.loc[late.loc[0, "symbol"], "filter_reason"]
    assert len(q) == 36
