"""The shipped synthetic Deribit tapes (``data/``) and their generator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volcal.data.exchanges import fetch_quotes
from volcal.data.synth import (
    BTC_MARKET,
    DEFAULT_AS_OF,
    deribit_expiries,
    deribit_tick,
    svi_total_variance,
    write_synthetic_deribit_tape,
)
from volcal.data.tape import read_tape, replay

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="module", params=["BTC", "ETH"])
def shipped(request: pytest.FixtureRequest) -> tuple[str, Path]:
    path = DATA / f"deribit-{request.param}-synthetic.jsonl.gz"
    assert path.exists(), f"{path} missing: run python -m volcal.data.synth --out data"
    return request.param, path


def test_shipped_tapes_are_labelled_and_small(shipped: tuple[str, Path]) -> None:
    cur, path = shipped
    tape = read_tape(path)
    assert tape.header["synthetic"] is True and tape.header["exchange"] == "deribit"
    assert tape.header["currency"] == cur and "seed" in tape.header
    assert path.stat().st_size < 1_500_000


def test_shipped_chain_is_realistic(shipped: tuple[str, Path]) -> None:
    cur, path = shipped
    raw = fetch_quotes(replay(path), cur)
    f = raw.frame
    assert raw.quote_unit == "coin" and len(f) > 300
    expiries = pd.DatetimeIndex(f["expiry"].unique())
    assert (expiries.hour == 8).all() and (expiries.minute == 0).all()
    days = (expiries - raw.as_of) / pd.Timedelta(days=1)
    assert raw.as_of == DEFAULT_AS_OF
    assert days.min() >= 1.0 and days.max() <= 365.0 and len(expiries) >= 10
    # premiums on Deribit's tick grid: 0.0001 up to 0.005, 0.0005 above
    for col in ("bid_coin", "ask_coin"):
        px = f[col].dropna().to_numpy()
        ticks = np.where(px <= 0.005, 0.0001, 0.0005)
        assert np.allclose(px / ticks, np.round(px / ticks), atol=1e-6)
    both = f["bid_coin"].notna() & f["ask_coin"].notna()
    assert (f.loc[both, "ask_coin"] > f.loc[both, "bid_coin"]).all()
    chain = raw.to_chain()
    q = chain.quotes
    ok = q["iv_bid"].notna() & q["iv_ask"].notna()
    spread = (q["iv_ask"] - q["iv_bid"])[ok]
    z = (q["k"].abs() / (q["iv_mark"] * np.sqrt(q["t"])))[ok]
    assert spread[z > 2].median() > 2 * spread[z < 0.5].median()  # wider in the wings
    # skew: OTM puts richer than equally far OTM calls
    slice_ = q[(q["t"] > 0.2) & (q["t"] < 0.5)]
    put_wing = slice_[(slice_["k"] < -0.2) & (slice_["k"] > -0.4)]["iv_mark"].mean()
    call_wing = slice_[(slice_["k"] > 0.2) & (slice_["k"] < 0.4)]["iv_mark"].mean()
    assert put_wing > call_wing
    assert (q["open_interest"] >= 0).all() and q["open_interest"].sum() > 0


def test_generator_is_seeded_and_reproduces_the_shipped_tape(tmp_path: Path) -> None:
    out = tmp_path / "btc.jsonl.gz"
    write_synthetic_deribit_tape("BTC", out)
    assert out.read_bytes() == (DATA / "deribit-BTC-synthetic.jsonl.gz").read_bytes()


def test_marks_are_the_svi_model() -> None:
    q = fetch_quotes(replay(DATA / "deribit-BTC-synthetic.jsonl.gz"), "BTC").to_chain().quotes
    for t in sorted(q["t"].unique())[::3]:
        s = q[q["t"] == t]
        a, b, rho, m, sig = BTC_MARKET.svi(float(t))
        w = svi_total_variance(s["k"].to_numpy(), a, b, rho, m, sig)
        model = np.sqrt(w / t)
        # marks carry 8 decimals, so far wings lose digits
        np.testing.assert_allclose(s["iv_mark"], model, atol=2e-3)
        atm = s["k"].abs() < 0.1
        np.testing.assert_allclose(s.loc[atm, "iv_mark"], model[atm.to_numpy()], atol=1e-5)


def test_expiry_set_and_ticks() -> None:
    exp = deribit_expiries(DEFAULT_AS_OF)
    kinds = [k for _, k in exp]
    assert kinds[:3] == ["daily"] * 3 and "quarterly" in kinds and "monthly" in kinds
    assert (exp[0][0] - DEFAULT_AS_OF) >= pd.Timedelta(days=1)
    assert (exp[-1][0] - DEFAULT_AS_OF) <= pd.Timedelta(days=365)
    assert deribit_tick(0.005) == 0.0001 and deribit_tick(0.0051) == 0.0005
    # SSVI-derived SVI slice: no butterfly arbitrage when eta (1 + |rho|) <= 2
    assert BTC_MARKET.eta * (1 + abs(BTC_MARKET.rho)) <= 2
    a, b, rho, _m, sig = BTC_MARKET.svi(0.25)
    assert b > 0 and abs(rho) < 1 and sig > 0 and a + b * sig * math.sqrt(1 - rho**2) >= 0
