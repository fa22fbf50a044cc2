"""Backtest statistics beyond the pooled Kupiec test: Christoffersen's independence and
conditional-coverage tests per book, Kupiec per book, and the day-clustered coverage test.

References are independent of the implementation: transition counts and likelihood ratios
written out by hand, chi-square p-values from ``scipy.stats.chi2``, the day-clustered test
against ``scipy.stats.ttest_1samp`` of the day shares, the beta-binomial test against
``scipy.stats.betabinom`` on a grid and its closed-form limits.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from volcal.risk.backtest import (
    BacktestResult,
    betabinomial_coverage,
    christoffersen,
    christoffersen_ind,
    day_clustered_coverage,
    kupiec_pof,
    null_rejection_rates,
    transition_counts,
)

# 12 days: exceedances on days 2, 3, 4 and 10
SEQ = [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0]


def test_transition_counts_by_hand() -> None:
    # pairs (t-1, t): 00 01 11 11 10 00 00 00 00 01 10
    assert transition_counts(SEQ) == (5, 2, 2, 2)
    assert transition_counts([True, True, True]) == (0, 0, 0, 2)
    assert transition_counts([1]) == (0, 0, 0, 0)
    assert transition_counts([]) == (0, 0, 0, 0)


def test_christoffersen_by_hand() -> None:
    # pi = 4/11, pi01 = 2/7, pi11 = 2/4:
    # LR_ind = -2 [7 ln(7/11) + 4 ln(4/11)] + 2 [5 ln(5/7) + 2 ln(2/7) + 2 ln(2/4) + 2 ln(2/4)]
    lr_ind = -2 * (7 * math.log(7 / 11) + 4 * math.log(4 / 11)) + 2 * (
        5 * math.log(5 / 7) + 2 * math.log(2 / 7) + 4 * math.log(0.5)
    )
    assert lr_ind == pytest.approx(0.499647341157477, rel=1e-12)  # mpmath, 30 digits
    # Kupiec, closed form: 4 exceedances in 12 days at p = 1 %
    lr_pof = -2 * (
        8 * math.log(0.99) + 4 * math.log(0.01) - 8 * math.log(8 / 12) - 4 * math.log(4 / 12)
    )
    assert lr_pof == pytest.approx(21.725826822485246, rel=1e-12)
    res = christoffersen(SEQ, 0.99)
    assert (res.n, res.exceedances) == (12, 4)
    assert (res.n00, res.n01, res.n10, res.n11) == (5, 2, 2, 2)
    assert res.lr_ind == pytest.approx(lr_ind, rel=1e-12)
    assert res.p_ind == pytest.approx(stats.chi2.sf(lr_ind, 1), rel=1e-12)
    assert res.lr_pof == pytest.approx(lr_pof, rel=1e-12)
    assert res.p_pof == pytest.approx(stats.chi2.sf(lr_pof, 1), rel=1e-12)
    assert res.lr_cc == pytest.approx(22.225474163642723, rel=1e-12)
    assert res.p_cc == pytest.approx(stats.chi2.sf(lr_pof + lr_ind, 2), rel=1e-12)
    assert christoffersen_ind(5, 2, 2, 2) == (res.lr_ind, res.p_ind)


def test_christoffersen_detects_clustering() -> None:
    n = 250
    clustered = np.zeros(n, dtype=bool)
    clustered[[100, 101, 102]] = True  # three in a row
    spread = np.zeros(n, dtype=bool)
    spread[[50, 150, 220]] = True
    c, s = christoffersen(clustered, 0.99), christoffersen(spread, 0.99)
    # same count, so the same Kupiec ratio
    assert c.lr_pof == s.lr_pof and c.p_pof > 0.05
    assert (c.n00, c.n01, c.n10, c.n11) == (245, 1, 1, 2)
    assert (s.n00, s.n01, s.n10, s.n11) == (243, 3, 3, 0)
    # by hand: clustered, pi = 3/249, pi01 = 1/246, pi11 = 2/3
    lr_c = -2 * (246 * math.log(246 / 249) + 3 * math.log(3 / 249)) + 2 * (
        245 * math.log(245 / 246) + math.log(1 / 246) + math.log(1 / 3) + 2 * math.log(2 / 3)
    )
    assert c.lr_ind == pytest.approx(lr_c, rel=1e-12)
    assert c.p_ind < 0.001 and c.p_cc < 0.01
    # spread: pi11 = 0, pi01 = 3/246
    lr_s = -2 * (246 * math.log(246 / 249) + 3 * math.log(3 / 249)) + 2 * (
        243 * math.log(243 / 246) + 3 * math.log(3 / 246) + 3 * math.log(1.0)
    )
    assert s.lr_ind == pytest.approx(lr_s, rel=1e-9, abs=1e-12)
    assert s.p_ind > 0.5 and s.p_cc > 0.05


def test_christoffersen_degenerate_sequences() -> None:
    none = christoffersen(np.zeros(86, dtype=bool), 0.99)
    assert none.lr_ind == 0.0 and none.p_ind == 1.0
    assert none.lr_cc == pytest.approx(-2 * 86 * math.log(0.99), rel=1e-12)
    last = christoffersen([0] * 85 + [1], 0.99)  # the only exceedance on the last day
    assert (last.n10, last.n11) == (0, 0)
    assert last.lr_ind == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        christoffersen_ind(-1, 0, 0, 0)


def test_kupiec_per_book_power_at_86_days() -> None:
    # one book over 86 days at 99 %: zero exceedances is never rejected (LR = 1.73,
    # p = 0.19); the 5 % region is 0..3 exceedances, so the test only sees too many
    lr0, p0 = kupiec_pof(0, 86, 0.99)
    assert lr0 == pytest.approx(-172 * math.log(0.99), rel=1e-12)
    assert p0 == pytest.approx(stats.chi2.sf(lr0, 1), rel=1e-12) and p0 > 0.05
    assert [kupiec_pof(x, 86, 0.99)[1] > 0.05 for x in range(6)] == [True] * 4 + [False] * 2


def _shares(days: int, books: int, hits: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Day labels and exceedances: ``hits[d]`` books exceed on day ``d``."""
    day = np.repeat(np.arange(days), books)
    exceed = np.zeros(days * books, dtype=bool)
    for d, k in hits.items():
        exceed[d * books : d * books + k] = True
    return day, exceed


def test_day_clustered_coverage_against_t_test() -> None:
    # every book exceeds on three days of 100: 3 % of 1,000 book-days. Pooled Kupiec
    # rejects (it counts 1,000 independent observations); the day-clustered test sees
    # three bad days out of 100 and does not
    day, exceed = _shares(100, 10, {0: 10, 1: 10, 2: 10})
    res = day_clustered_coverage(day, exceed, 0.99)
    assert kupiec_pof(30, 1000, 0.99)[1] < 1e-6
    s = np.r_[np.ones(3), np.zeros(97)]
    ref = stats.ttest_1samp(s, 0.01)
    # by hand: var = (3 (0.97)^2 + 97 (0.03)^2) / 99 = 2.91 / 99
    se = math.sqrt(2.91 / 99 / 100)
    assert res.se == pytest.approx(se, rel=1e-12)
    assert res.t_stat == pytest.approx((0.03 - 0.01) / se, rel=1e-12)
    assert res.t_stat == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert (res.days, res.exceedance_days, res.mean_share) == (100, 3, pytest.approx(0.03))
    assert res.p_value > 0.05
    # the same 3 % spread over 30 days (one book each): rejected
    day, exceed = _shares(100, 10, dict.fromkeys(range(30), 1))
    res2 = day_clustered_coverage(day, exceed, 0.99)
    ref2 = stats.ttest_1samp(np.r_[np.full(30, 0.1), np.zeros(70)], 0.01)
    assert res2.p_value == pytest.approx(ref2.pvalue, rel=1e-10) and res2.p_value < 0.001
    assert res2.exceedance_days == 30
    # unequal books per day: the share is per day, each day weighs the same
    day3 = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    ex3 = np.array([1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    res3 = day_clustered_coverage(day3, ex3, 0.99)
    assert res3.mean_share == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert res3.p_value == pytest.approx(stats.ttest_1samp([0.5, 0.5, 0.0], 0.01).pvalue)


def test_day_clustered_coverage_without_exceedances() -> None:
    day, exceed = _shares(50, 4, {})
    res = day_clustered_coverage(day, exceed, 0.99)
    assert (res.exceedance_days, res.mean_share, res.se) == (0, 0.0, 0.0)
    assert math.isnan(res.p_value)
    with pytest.raises(ValueError):
        day_clustered_coverage([1, 2], [True], 0.99)


def test_dependence_tests_of_records() -> None:
    t0 = pd.Timestamp("2026-01-01 08:00", tz="UTC")
    rows = []
    # book "a" in BTC exceeds on days 2, 3, 4 and 10 (SEQ); "a" in ETH never; "b" in BTC on
    # day 3 only; rows deliberately out of time order
    ex = {("BTC", "a"): SEQ, ("ETH", "a"): [0] * 12, ("BTC", "b"): [0, 0, 0, 1] + [0] * 8}
    for d in reversed(range(12)):
        for (cur, book), seq in ex.items():
            rows.append(
                {
                    "as_of": t0 + pd.Timedelta(days=d, minutes=5 * (cur == "ETH")),
                    "currency": cur,
                    "book": book,
                    "method": "m",
                    "exceed": bool(seq[d]),
                    "loss_coin": 0.0,
                    "margin_coin": 1.0,
                }
            )
    res = BacktestResult(pd.DataFrame(rows), 0.99)
    out = res.dependence_tests()
    assert len(out) == 1
    r = out.iloc[0]
    assert r["books"] == 3 and r["books_zero"] == 1
    # BTC a: (5, 2, 2, 2); ETH a: (11, 0, 0, 0); BTC b: 0001 then 8 zeros: (9, 1, 1, 0)
    assert (r["n00"], r["n01"], r["n10"], r["n11"]) == (25, 3, 3, 2)
    assert r["pi01"] == pytest.approx(3 / 28) and r["pi11"] == pytest.approx(2 / 5)
    assert (r["lr_ind_pooled"], r["p_ind_pooled"]) == christoffersen_ind(25, 3, 3, 2)
    # Kupiec per book: 4 in 12 is rejected, 0 and 1 in 12 are not
    assert r["kupiec_book_rejected"] == 1 and r["kupiec_book_share"] == pytest.approx(1 / 3)
    assert r["cc_rejected"] == 1 and r["ind_rejected"] == 0
    # days: the ETH rows five minutes later fall on the same calendar day
    assert r["days"] == 12 and r["exceedance_days"] == 4
    shares = np.zeros(12)
    shares[[2, 4, 10]] = 1 / 3
    shares[3] = 2 / 3
    ref = stats.ttest_1samp(shares, 0.01)
    assert r["day_mean_share"] == pytest.approx(shares.mean())
    assert r["day_p"] == pytest.approx(ref.pvalue, rel=1e-10)
    k = np.rint(shares * 3).astype(int)  # exceedances per day of 3 books
    bb = betabinomial_coverage(
        np.repeat(np.arange(12), 3), [i < k[d] for d in range(12) for i in range(3)], 0.99
    )
    assert (r["bb_lr"], r["bb_p"]) == pytest.approx((bb.lr, bb.p_value), rel=1e-9)
    by_cur = res.dependence_tests(("currency", "method")).set_index("currency")
    assert by_cur.loc["BTC", "books"] == 2 and by_cur.loc["ETH", "books"] == 1
    assert by_cur.loc["ETH", "exceedance_days"] == 0 and math.isnan(by_cur.loc["ETH", "day_p"])


def test_null_rejection_rates_of_per_book_tests() -> None:
    # Kupiec per book at 86 days rejects 4 or more exceedances: P = 1 - F_Bin(86, 1 %)(3)
    r = null_rejection_rates(86, 0.99, sims=20_000, seed=3)
    assert r["kupiec"] == pytest.approx(stats.binom.sf(3, 86, 0.01), rel=1e-12)
    assert r["kupiec"] == pytest.approx(0.0111, abs=1e-4)
    # the simulation reproduces the exact rate within 4 standard errors
    se = math.sqrt(r["kupiec"] * (1 - r["kupiec"]) / 20_000)
    assert abs(r["kupiec_mc"] - r["kupiec"]) < 4 * se
    # the tests are far below their nominal 5 % at n p = 0.86
    assert r["ind"] < 0.05 and r["cc"] < 0.05
    # 1,000 days at 99 %: Kupiec's 5 % region is 5..16 (Jorion), size near its nominal level
    r2 = null_rejection_rates(1000, 0.99, sims=2_000, seed=4)
    assert r2["kupiec"] == pytest.approx(
        stats.binom.cdf(4, 1000, 0.01) + stats.binom.sf(16, 1000, 0.01), rel=1e-12
    )
    assert 0.02 < r2["kupiec"] < 0.08


def _bb_loglik(counts: np.ndarray, books: int, mu: float, rho: float) -> float:
    """Beta-binomial log-likelihood by scipy (binomial at rho = 0)."""
    if rho == 0:
        return float(stats.binom.logpmf(counts, books, mu).sum())
    s = (1 - rho) / rho
    return float(stats.betabinom.logpmf(counts, books, mu * s, (1 - mu) * s).sum())


def test_betabinomial_coverage_limits() -> None:
    # no exceedance on any of 86 days: the null's best day effect is rho -> 1 (a day is all
    # or nothing), LR -> -2 D ln(1 - p), Kupiec's ratio of 86 independent days
    day, exceed = _shares(86, 108, {})
    r = betabinomial_coverage(day, exceed, 0.99)
    assert r.mu == 0.0 and r.rho_null > 0.999
    assert r.lr == pytest.approx(-172 * math.log(0.99), rel=1e-4)
    assert r.p_value > 0.05
    # exactly one exceedance of 10 books every day (no overdispersion): rho = 0 under both
    # hypotheses and the test is the pooled Kupiec test, closed form
    day, exceed = _shares(86, 10, dict.fromkeys(range(86), 1))
    r = betabinomial_coverage(day, exceed, 0.99)
    assert r.rho == 0.0 and r.rho_null == 0.0
    assert r.mu == pytest.approx(0.1, rel=1e-6)
    lr = -2 * (
        774 * math.log(0.99) + 86 * math.log(0.01) - 774 * math.log(0.9) - 86 * math.log(0.1)
    )
    assert r.lr == pytest.approx(lr, rel=1e-9)
    assert r.p_value == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-6)


def test_betabinomial_coverage_against_grid_and_clustering() -> None:
    # 48 days of 20 books; a few bad days with partial exceedances
    counts = np.r_[np.zeros(40, dtype=int), [3, 5, 0, 8, 1, 0, 10, 2]]
    hits = {d: int(k) for d, k in enumerate(counts) if k}
    day, exceed = _shares(48, 20, hits)
    r = betabinomial_coverage(day, exceed, 0.99)
    # the reported LR is the log-likelihood (scipy) at the reported estimates
    lr = 2 * (_bb_loglik(counts, 20, r.mu, r.rho) - _bb_loglik(counts, 20, 0.01, r.rho_null))
    assert r.lr == pytest.approx(lr, rel=1e-10)
    # and the estimates are at least as good as a dense grid's
    mus = stats.logistic.cdf(np.linspace(-8, 0, 161))
    rhos = np.r_[0.0, stats.logistic.cdf(np.linspace(-12, 12, 241))]
    null = max(_bb_loglik(counts, 20, 0.01, q) for q in rhos)
    full = max(_bb_loglik(counts, 20, m, q) for m in mus[::4] for q in rhos[::4])
    assert _bb_loglik(counts, 20, 0.01, r.rho_null) >= null - 1e-9
    assert _bb_loglik(counts, 20, r.mu, r.rho) >= full - 1e-9
    assert r.lr == pytest.approx(2 * (full - null), abs=0.05)
    assert r.p_value == pytest.approx(stats.chi2.sf(r.lr, 1), rel=1e-12)
    # all books on three days of 100 (3 %): the pooled Kupiec test rejects, the day effect
    # explains it; 3 % spread one book a day over 30 days: rejected
    day, exceed = _shares(100, 10, {0: 10, 1: 10, 2: 10})
    assert betabinomial_coverage(day, exceed, 0.99).p_value > 0.05
    day, exceed = _shares(100, 10, dict.fromkeys(range(30), 1))
    assert betabinomial_coverage(day, exceed, 0.99).p_value < 0.001
