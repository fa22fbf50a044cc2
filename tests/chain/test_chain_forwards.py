"""Forwards from put-call parity on synthetic quotes (prices from QuantLib's blackFormula)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volcal.chain import ParityForward, infer_forward, infer_forwards, parity_pairs
from volcal.errors import ChainValidationError

ql = pytest.importorskip("QuantLib")

F, D, T = 30_000.0, 0.98, 0.25
STRIKES = np.arange(20_000.0, 40_001.0, 1_000.0)


def prices(strikes: np.ndarray, vol: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    sd = vol * math.sqrt(T)
    c = np.array([ql.blackFormula(ql.Option.Call, k, F, sd, D) for k in strikes])
    p = np.array([ql.blackFormula(ql.Option.Put, k, F, sd, D) for k in strikes])
    return c, p


def test_exact_prices_give_exact_forward_and_discount() -> None:
    c, p = prices(STRIKES)
    fit = infer_forward(STRIKES, c, p)
    assert isinstance(fit, ParityForward)
    assert fit.forward == pytest.approx(F, rel=1e-12)
    assert fit.discount == pytest.approx(D, rel=1e-12)
    assert fit.n_pairs == len(STRIKES) and fit.method == "huber"
    assert fit.residual_usd < 1e-8


def test_noise_and_outliers() -> None:
    rng = np.random.default_rng(7)
    c, p = prices(STRIKES)
    half = 0.002 * F * np.ones_like(STRIKES)  # 60 USD half-spreads
    c_mid = c + rng.uniform(-1, 1, STRIKES.size) * half / 2
    p_mid = p + rng.uniform(-1, 1, STRIKES.size) * half / 2
    c_mid[3] += 2_000.0  # two stale pairs, far off parity
    p_mid[15] -= 1_500.0
    fit = infer_forward(STRIKES, c_mid, p_mid, price_error=2 * half)
    # noise of C - P is ~ +-60 USD per pair over 21 pairs: F within ~0.1 % (30 USD), D ~ 0.3 %
    assert fit.forward == pytest.approx(F, rel=1e-3)
    assert fit.discount == pytest.approx(D, rel=3e-3)
    plain_ls = np.polyfit(STRIKES, c_mid - p_mid, 1)
    ls_forward = -plain_ls[1] / plain_ls[0]
    assert abs(fit.forward - F) < abs(ls_forward - F)  # robust beats least squares


def test_scale_of_prices_moves_discount_not_forward() -> None:
    """Coin premiums converted at any reference price: only D absorbs the factor."""
    c, p = prices(STRIKES)
    spot = 29_500.0
    fit = infer_forward(STRIKES, c * spot / F, p * spot / F)
    assert fit.forward == pytest.approx(F, rel=1e-12)
    assert fit.discount == pytest.approx(D * spot / F, rel=1e-12)


def test_fixed_discount_and_few_pairs() -> None:
    c, p = prices(STRIKES)
    fixed = infer_forward(STRIKES, c, p, discount=D)
    assert fixed.method == "huber-fixed-discount" and fixed.discount == D
    assert fixed.forward == pytest.approx(F, rel=1e-12)
    one = infer_forward(STRIKES[10:11], c[10:11], p[10:11])  # D cannot be fitted: D = 1
    assert one.n_pairs == 1 and one.discount == 1.0
    assert one.forward == pytest.approx(STRIKES[10] + (c[10] - p[10]), rel=1e-14)


def test_errors() -> None:
    with pytest.raises(ChainValidationError, match="pair") as info:
        infer_forward([], [], [])
    assert info.value.field == "forward"
    with pytest.raises(ChainValidationError):
        infer_forward([1.0, np.nan], [np.nan, 1.0], [1.0, 1.0])
    with pytest.raises(ChainValidationError, match="discount"):
        infer_forward(STRIKES, *prices(STRIKES), discount=-1.0)


def test_pairs_and_per_expiry_table() -> None:
    c, p = prices(STRIKES)
    expiry = pd.Timestamp("2026-06-26T08:00Z")
    rows = pd.DataFrame(
        {
            "expiry": [expiry] * (2 * STRIKES.size),
            "strike": np.concatenate([STRIKES, STRIKES]),
            "call": [True] * STRIKES.size + [False] * STRIKES.size,
            "bid_usd": np.concatenate([c, p]) - 5.0,
            "ask_usd": np.concatenate([c, p]) + 5.0,
        }
    )
    rows.loc[0, "bid_usd"] = np.nan  # one-sided: its pair is dropped
    pairs = parity_pairs(rows)
    assert len(pairs) == STRIKES.size - 1
    assert (pairs["error_usd"] == 10.0).all()
    fits = infer_forwards(rows)
    assert list(fits) == [expiry]
    assert fits[expiry].expiry == expiry
    assert fits[expiry].forward == pytest.approx(F, rel=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    forward=st.floats(100.0, 200_000.0),
    discount=st.floats(0.9, 1.0),
    vol=st.floats(0.2, 1.5),
    t=st.floats(1 / 365, 2.0),
)
def test_property_exact_parity_prices_recover_forward_and_discount(
    forward: float, discount: float, vol: float, t: float
) -> None:
    sd = vol * math.sqrt(t)
    strikes = forward * np.exp(np.linspace(-2.0, 2.0, 11) * sd)
    c = np.array([ql.blackFormula(ql.Option.Call, k, forward, sd, discount) for k in strikes])
    p = np.array([ql.blackFormula(ql.Option.Put, k, forward, sd, discount) for k in strikes])
    fit = infer_forward(strikes, c, p)
    assert fit.forward == pytest.approx(forward, rel=1e-9)
    assert fit.discount == pytest.approx(discount, rel=1e-9)
