"""Quote repair LP on hand-built dirty chains whose minimal repair is known by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volcal.black import black_price
from volcal.implied import implied_vol
from volcal.svi import quote_arbitrage, repair_quotes

AS_OF = pd.Timestamp("2026-01-05 08:00", tz="UTC")
F = 100.0


def _chain(rows: list[tuple[float, float, bool, float, float]]) -> pd.DataFrame:
    """Quotes from ``(t, strike, call, mid_usd, half_spread_usd)``."""
    out = []
    for t, strike, call, mid, half in rows:
        bid, ask = mid - half, mid + half
        out.append(
            {
                "symbol": f"X-{t}-{strike:g}-{'C' if call else 'P'}",
                "expiry": AS_OF + pd.Timedelta(seconds=round(t * 365 * 86400)),
                "t": t,
                "strike": strike,
                "call": call,
                "forward": F,
                "discount": 1.0,
                "k": np.log(strike / F),
                "bid_usd": bid,
                "ask_usd": ask,
                "iv_bid": float(implied_vol(bid, F, strike, t, call)),
                "iv_ask": float(implied_vol(ask, F, strike, t, call)),
                "filter_reason": "",
            }
        )
    df = pd.DataFrame(out)
    df["expiry"] = pd.to_datetime(df["expiry"], utc=True)
    return df


def _black(strike: float, t: float, call: bool, vol: float = 0.5) -> float:
    return float(black_price(F, strike, t, vol, call))


STRIKES = (80.0, 90.0, 100.0, 110.0, 120.0)


def _smile(t: float, bump: dict[float, float], half: dict[float, float]) -> list:
    # OTM quotes (puts below F, calls at and above) from a flat 50% smile, plus bumps
    return [
        (t, k, k >= F, _black(k, t, k >= F) + bump.get(k, 0.0), half.get(k, 0.05)) for k in STRIKES
    ]


def test_clean_chain_is_left_alone() -> None:
    q = _chain(_smile(0.25, {}, {}))
    fixed, rep = repair_quotes(q)
    assert rep.success
    assert rep.violations_before == 0
    assert rep.n_moved == 0
    pd.testing.assert_frame_equal(fixed, q)


def test_butterfly_violation_moves_the_cheapest_quote() -> None:
    # C(100) bumped by 1 USD: 2 C100 > C90 + C110 (convexity violated). Moving C100 down to
    # the chord costs V / h100; moving C90 or C110 costs 2V / h. With equal spreads the
    # middle quote moves, to exactly (C90 + C110)/2 (prices of the calls, by parity).
    t = 0.25
    q = _chain(_smile(t, {100.0: 1.0}, {}))
    c90 = _black(90.0, t, True)  # the put at 90 by parity: C = P + F - K
    c110 = _black(110.0, t, True)
    assert 2 * (_black(100.0, t, True) + 1.0) > c90 + c110
    fixed, rep = repair_quotes(q)
    assert rep.violations_before > 0
    assert rep.violations_after == 0
    assert rep.n_moved == 1
    mv = rep.moves.iloc[0]
    assert mv["strike"] == 100.0
    assert mv["new_mid_usd"] == pytest.approx(0.5 * (c90 + c110), abs=1e-7)
    assert mv["change_usd"] == pytest.approx(0.5 * (c90 + c110) - (_black(100, t, True) + 1.0))
    new_mid = 0.5 * (fixed["bid_usd"] + fixed["ask_usd"])
    assert float(new_mid[fixed["strike"] == 100.0].iloc[0]) == pytest.approx(mv["new_mid_usd"])
    assert quote_arbitrage(fixed, tol=1e-9).empty


def test_butterfly_weights_follow_the_spread() -> None:
    # the same violation, but the 100 quote is tight (h = 0.01) and the 110 call wide
    # (h = 0.5): moving C110 up by 2V costs 2V/0.5 = 4V, less than V/0.01 = 100V (C100) or
    # 2V/0.05 = 40V (the 90 put); V = C100 - (C90 + C110)/2
    t = 0.25
    q = _chain(_smile(t, {100.0: 1.0}, {100.0: 0.01, 110.0: 0.5}))
    c90, c110, c120 = (_black(k, t, True) for k in (90.0, 110.0, 120.0))
    c100 = _black(100.0, t, True) + 1.0
    v = c100 - 0.5 * (c90 + c110)
    assert v > 0
    # premise: C110 + 2V keeps the 110 butterfly and the vertical spreads
    assert c100 + c120 - 2 * (c110 + 2 * v) >= 0 and c110 + 2 * v <= c100
    _, rep = repair_quotes(q)
    assert rep.n_moved == 1
    mv = rep.moves.iloc[0]
    assert mv["strike"] == 110.0
    assert mv["change_usd"] == pytest.approx(2 * v, abs=1e-7)
    assert rep.objective == pytest.approx(2 * v / 0.5, rel=1e-6)
    assert rep.violations_after == 0


def test_vertical_violation() -> None:
    # C(120) quoted above C(110): the cheaper fix (wider spread at 120) moves C120 down to C110
    t = 0.25
    c110 = _black(110.0, t, True)
    bump = c110 - _black(120.0, t, True) + 0.2
    q = _chain(_smile(t, {120.0: bump}, {120.0: 0.2}))
    _, rep = repair_quotes(q)
    assert rep.violations_before > 0 and rep.violations_after == 0
    assert rep.n_moved == 1
    mv = rep.moves.iloc[0]
    assert mv["strike"] == 120.0
    assert mv["new_mid_usd"] == pytest.approx(c110, abs=1e-7)


def test_calendar_violation() -> None:
    # two expiries, same strikes and forward: the longer expiry's 110 call is 0.02 USD below
    # the shorter one's; its spread is the wider, so it moves up to exactly C_short(110)
    # (a move this small keeps the longer smile's butterflies, checked below)
    t1, t2 = 0.1, 0.11
    short = _smile(t1, {}, {})
    c_short = _black(110.0, t1, True)
    bump = c_short - _black(110.0, t2, True) - 0.02
    long = _smile(t2, {110.0: bump}, {110.0: 0.3})
    c100, c120 = _black(100.0, t2, True), _black(120.0, t2, True)
    assert c100 + c120 - 2 * c_short > 0
    q = _chain(short + long)
    _, rep = repair_quotes(q)
    assert rep.violations_before > 0 and rep.violations_after == 0
    assert rep.n_moved == 1
    mv = rep.moves.iloc[0]
    assert mv["strike"] == 110.0 and mv["expiry"] == q["expiry"].iloc[-1]
    assert mv["new_mid_usd"] == pytest.approx(c_short, abs=1e-7)
    assert mv["change_usd"] == pytest.approx(0.02, abs=1e-7)
