"""Backtest of margin: coverage of realised losses, Kupiec's and Christoffersen's tests,
day-level coverage tests, capital efficiency.

At each evaluation instant the margin of every book is computed with parameters calibrated
only on snapshots strictly before it; the realised loss is the change of the same positions'
value at the marks of the first snapshot at least ``horizon`` later (coin-settled: coin marks;
inverse futures at the chain's forward of their expiry). An exceedance is a loss above the
initial margin.

Kupiec's proportion-of-failures test (Kupiec, "Techniques for verifying the accuracy of risk
measurement models", J. Derivatives 1995): with ``x`` exceedances in ``n`` days and expected
rate ``p = 1 - confidence``,
``LR = -2 [ (n-x) ln(1-p) + x ln p - (n-x) ln(1-x/n) - x ln(x/n) ]`` is chi-square(1) under
the null of correct coverage.

Pooled over books, Kupiec's test counts every book-day as an independent observation; the
books of one day share one market move, so :meth:`BacktestResult.dependence_tests` adds the
tests a risk team reads beside it: per book (one portfolio's time series, Kupiec's own use)
Kupiec and Christoffersen's (1998) independence and conditional-coverage tests
(:func:`christoffersen`), a coverage test with days as clusters
(:func:`day_clustered_coverage`) and a beta-binomial day-effect likelihood-ratio test
(:func:`betabinomial_coverage`).

Books are rules mapped to the listed instruments at each date (:func:`standard_books`,
:func:`random_books`), so the same kind of risk is margined every day.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit
from scipy.stats import betabinom, binom, chi2, norm
from scipy.stats import t as student_t

from volcal.risk.dynamics import SmileDynamics
from volcal.risk.fhs import fhs_confidence_scale, historical_scenarios, scenario_losses
from volcal.risk.history import HistoryStats, history_stats
from volcal.risk.params import MarginParams, calibrate_margin_params, confidence_scale
from volcal.risk.positions import INVERSE_FUTURE_FACE_USD, Positions, resolve_positions
from volcal.risk.report import margin
from volcal.risk.surfaces import MarginSurface, MarkSurface

__all__ = [
    "FHS_METHODS",
    "BacktestResult",
    "BetaBinomialCoverage",
    "BookRule",
    "ChristoffersenTest",
    "ClusteredCoverage",
    "apply_confidence_scale",
    "apply_fhs_scale",
    "backtest_margin",
    "betabinomial_coverage",
    "christoffersen",
    "christoffersen_ind",
    "day_clustered_coverage",
    "kupiec_pof",
    "null_rejection_rates",
    "random_books",
    "standard_books",
    "svi_surface",
    "transition_counts",
]

FloatArray = npt.NDArray[np.float64]

BookRule = Callable[[Any], pd.DataFrame]
"""A book: a function of the chain at the evaluation instant returning positions."""


def kupiec_pof(exceedances: int, n: int, confidence: float) -> tuple[float, float]:
    """Kupiec's proportion-of-failures likelihood ratio and its chi-square(1) p-value.

    Parameters
    ----------
    exceedances, n:
        Number of exceedances and of observations (``0 <= exceedances <= n``, ``n > 0``).
    confidence:
        Coverage the margin claims (0.99: expected exceedance rate 1 %).
    """
    if n <= 0 or not 0 <= exceedances <= n:
        raise ValueError(f"kupiec_pof needs 0 <= exceedances <= n, n > 0 (got {exceedances}, {n})")
    p = 1.0 - confidence
    x = exceedances
    ll0 = (n - x) * np.log1p(-p) + x * np.log(p)
    phat = x / n
    ll1 = (0.0 if x == n else (n - x) * np.log1p(-phat)) + (0.0 if x == 0 else x * np.log(phat))
    lr = float(max(-2.0 * (ll0 - ll1), 0.0))
    return lr, float(chi2.sf(lr, 1))


def transition_counts(exceed: npt.ArrayLike) -> tuple[int, int, int, int]:
    """Transition counts ``(n00, n01, n10, n11)`` of a 0/1 exceedance sequence.

    ``n_ij`` is the number of days ``t >= 1`` with ``I_{t-1} = i`` and ``I_t = j``; a sequence
    of ``T`` days has ``T - 1`` transitions.

    Parameters
    ----------
    exceed:
        Exceedance indicators in time order (bool or 0/1).
    """
    x = np.asarray(exceed, dtype=bool).ravel()
    if x.size < 2:
        return 0, 0, 0, 0
    prev, cur = x[:-1], x[1:]
    n11 = int(np.sum(prev & cur))
    n10 = int(np.sum(prev & ~cur))
    n01 = int(np.sum(~prev & cur))
    n00 = int(np.sum(~prev & ~cur))
    return n00, n01, n10, n11


def _xlogy(x: float, y: float) -> float:
    """``x ln y`` with ``0 ln 0 = 0`` (the likelihood's convention for empty cells)."""
    return 0.0 if x == 0 else float(x * np.log(y))


def christoffersen_ind(n00: int, n01: int, n10: int, n11: int) -> tuple[float, float]:
    """Christoffersen's (1998) independence likelihood ratio and its chi-square(1) p-value
    from the transition counts of an exceedance sequence.

    Under the alternative the exceedance indicator is a first-order Markov chain with
    ``pi01 = n01 / (n00 + n01)`` (exceedance after a day without) and
    ``pi11 = n11 / (n10 + n11)`` (exceedance after an exceedance); under the null of
    independence both equal ``pi = (n01 + n11) / (n00 + n01 + n10 + n11)``:

    ``LR_ind = -2 ln[(1 - pi)^(n00 + n10) pi^(n01 + n11)]
    + 2 ln[(1 - pi01)^n00 pi01^n01 (1 - pi11)^n10 pi11^n11]``,

    chi-square(1) under the null (``0 ln 0 = 0``; 0 when there is no exceedance, or no day
    without one, since then both models are the same).

    Christoffersen, "Evaluating interval forecasts", International Economic Review 39 (1998).
    """
    if min(n00, n01, n10, n11) < 0:
        raise ValueError(f"transition counts must be >= 0 (got {n00, n01, n10, n11})")
    n0, n1 = n00 + n01, n10 + n11
    total = n0 + n1
    if total == 0:
        return 0.0, 1.0
    pi = (n01 + n11) / total
    ll0 = _xlogy(n00 + n10, 1.0 - pi) + _xlogy(n01 + n11, pi)
    pi01 = n01 / n0 if n0 else 0.0
    pi11 = n11 / n1 if n1 else 0.0
    ll1 = _xlogy(n00, 1.0 - pi01) + _xlogy(n01, pi01) + _xlogy(n10, 1.0 - pi11) + _xlogy(n11, pi11)
    lr = float(max(-2.0 * (ll0 - ll1), 0.0))
    return lr, float(chi2.sf(lr, 1))


@dataclass(frozen=True)
class ChristoffersenTest:
    """Kupiec's and Christoffersen's tests on one exceedance sequence.

    Attributes
    ----------
    n, exceedances:
        Days and exceedances of the sequence.
    n00, n01, n10, n11:
        Transition counts (:func:`transition_counts`).
    lr_pof, p_pof:
        Kupiec's proportion of failures on the ``n`` days, chi-square(1).
    lr_ind, p_ind:
        Christoffersen's independence ratio (:func:`christoffersen_ind`), chi-square(1).
    lr_cc, p_cc:
        Conditional coverage ``LR_cc = LR_pof + LR_ind``, chi-square(2).
    """

    n: int
    exceedances: int
    n00: int
    n01: int
    n10: int
    n11: int
    lr_pof: float
    p_pof: float
    lr_ind: float
    p_ind: float
    lr_cc: float
    p_cc: float


def christoffersen(exceed: npt.ArrayLike, confidence: float) -> ChristoffersenTest:
    """Unconditional coverage, independence and conditional coverage of one exceedance
    sequence (Christoffersen 1998).

    ``LR_pof`` is Kupiec's ratio (:func:`kupiec_pof`) on all ``n`` days, ``LR_ind`` the
    Markov-chain independence ratio (:func:`christoffersen_ind`) on the ``n - 1``
    transitions, and ``LR_cc = LR_pof + LR_ind`` is compared with chi-square(2) (the usual
    form; Christoffersen's own ``LR_cc`` conditions ``LR_pof`` on the first day as well,
    which differs by one observation).

    Parameters
    ----------
    exceed:
        Exceedance indicators of one portfolio in time order.
    confidence:
        Coverage the margin claims (``p = 1 - confidence`` under the null).

    Notes
    -----
    The chi-square limits are asymptotic: on about 86 days at 99 % the expected number of
    exceedances is below one, so the tests have little power, and ``LR_ind`` is dominated by
    whether two exceedances happen on consecutive days.
    """
    x = np.asarray(exceed, dtype=bool).ravel()
    n = int(x.size)
    k = int(x.sum())
    lr_pof, p_pof = kupiec_pof(k, n, confidence)
    n00, n01, n10, n11 = transition_counts(x)
    lr_ind, p_ind = christoffersen_ind(n00, n01, n10, n11)
    lr_cc = lr_pof + lr_ind
    return ChristoffersenTest(
        n, k, n00, n01, n10, n11, lr_pof, p_pof, lr_ind, p_ind, lr_cc, float(chi2.sf(lr_cc, 2))
    )


def null_rejection_rates(
    n: int, confidence: float, level: float = 0.05, sims: int = 20_000, seed: int = 0
) -> dict[str, float]:
    """Share of one book's ``n``-day sequences that the per-book tests reject at ``level``
    when the margin is exactly right (i.i.d. exceedances with probability
    ``p = 1 - confidence``): the expected share of rejected books under the null, whatever
    the dependence between books.

    At small ``n p`` the tests are far from their nominal size: at ``n = 86``, ``p = 1 %``
    Kupiec rejects only 4 or more exceedances (``P = 1.1 %``), and no count of zero.

    Returns
    -------
    dict
        ``kupiec``: exact, ``sum over x of Binomial(n, p) pmf(x) 1[p_pof(x) < level]``;
        ``kupiec_mc``, ``ind``, ``cc``: Monte Carlo over ``sims`` simulated sequences (seeded),
        with ``kupiec_mc`` a check of the simulation against the exact value.
    """
    p = 1.0 - confidence
    xs = np.arange(n + 1)
    rejected = np.array([kupiec_pof(int(x), n, confidence)[1] < level for x in xs])
    exact = float(binom.pmf(xs, n, p)[rejected].sum())
    rng = np.random.default_rng(seed)
    draws = rng.random((sims, n)) < p
    counts: dict[tuple[int, ...], int] = {}
    for row in draws:
        key = (int(row.sum()), *transition_counts(row))
        counts[key] = counts.get(key, 0) + 1
    kup = ind = cc = 0
    for (x, n00, n01, n10, n11), k in counts.items():
        lr_pof, p_pof = kupiec_pof(x, n, confidence)
        lr_ind, p_ind = christoffersen_ind(n00, n01, n10, n11)
        kup += k * (p_pof < level)
        ind += k * (p_ind < level)
        cc += k * (float(chi2.sf(lr_pof + lr_ind, 2)) < level)
    return {"kupiec": exact, "kupiec_mc": kup / sims, "ind": ind / sims, "cc": cc / sims}


@dataclass(frozen=True)
class ClusteredCoverage:
    """Day-clustered coverage test (:func:`day_clustered_coverage`).

    Attributes
    ----------
    days:
        Number of days (clusters) ``D``.
    exceedance_days:
        Days with at least one exceedance.
    mean_share:
        Mean over days of the share of books exceeding, ``s_bar``.
    se:
        Its standard error from the day-level variance, ``sd(s_d) / sqrt(D)``.
    t_stat, p_value:
        ``(s_bar - p) / se`` and its two-sided p-value from Student's t with ``D - 1``
        degrees of freedom (NaN when ``se = 0``: no day differs from the others, e.g. no
        exceedance at all, and the data carry no estimate of the variance).
    """

    days: int
    exceedance_days: int
    mean_share: float
    se: float
    t_stat: float
    p_value: float


def _day_counts(
    day: npt.ArrayLike, exceed: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per day (sorted labels): the number of book-days exceeding and of book-days."""
    d = np.asarray(day).ravel()
    e = np.asarray(exceed, dtype=bool).ravel()
    if d.size != e.size or e.size == 0:
        raise ValueError("day and exceed must be non-empty and of the same length")
    _, inv = np.unique(d, return_inverse=True)
    return np.bincount(inv, weights=e).astype(np.int64), np.bincount(inv).astype(np.int64)


def day_clustered_coverage(
    day: npt.ArrayLike, exceed: npt.ArrayLike, confidence: float
) -> ClusteredCoverage:
    """Coverage test robust to dependence between the books of one day.

    Per day ``d`` the share of book-days exceeding, ``s_d = x_d / B_d``; under the null
    ``E[s_d] = p = 1 - confidence``. The test statistic is

    ``t = (s_bar - p) / (sd(s_d) / sqrt(D))``, ``s_bar = (1/D) sum_d s_d``,
    ``sd`` with ``D - 1`` in the denominator,

    Student-t with ``D - 1`` degrees of freedom (a one-sample t-test on the day shares). The
    standard error is the cluster-robust one with days as clusters: any correlation between
    the books of a day (one market move) stays inside ``s_d``; days are assumed independent
    of each other (with equal book counts it equals the CR1 cluster-robust standard error of
    the pooled exceedance rate). Unlike the pooled Kupiec test, whose variance
    ``p (1 - p) / (D B)`` assumes independent book-days, the effective sample size here is
    the number of days.

    Parameters
    ----------
    day:
        Cluster label of each book-day (the evaluation day).
    exceed:
        Exceedance indicator of each book-day.
    confidence:
        Claimed coverage.

    Notes
    -----
    With few exceedance days the day shares are far from normal (mostly zeros, a few large
    values) and the t approximation is rough; the standard error is then itself estimated
    from those few days and the test has little power. It is anti-conservative against
    "too few": the variance is estimated under the alternative and shrinks with the observed
    rate (a single exceedance in 86 days gives ``|t| ~ 90``); under a beta-binomial null with
    1 % exceedances, 108 books and 86 days it rejects 12 % (within-day correlation 0.10) to
    19 % (0.27) of samples at a nominal 5 % (``benchmarks/margin_backtest.py size``). Read it
    together with the number of exceedance days and :func:`betabinomial_coverage`.
    """
    x_day, b_day = _day_counts(day, exceed)
    shares = x_day / b_day
    days = int(x_day.size)
    mean = float(shares.mean())
    p = 1.0 - confidence
    se = float(shares.std(ddof=1) / np.sqrt(days)) if days > 1 else 0.0
    if se > 0:
        t_stat = (mean - p) / se
        pv = float(2.0 * student_t.sf(abs(t_stat), days - 1))
    else:
        t_stat, pv = float("nan"), float("nan")
    return ClusteredCoverage(days, int(np.sum(shares > 0)), mean, se, float(t_stat), pv)


@dataclass(frozen=True)
class BetaBinomialCoverage:
    """Likelihood-ratio coverage test with a beta-binomial day effect
    (:func:`betabinomial_coverage`).

    Attributes
    ----------
    days:
        Number of days ``D``.
    mu, rho:
        Maximum-likelihood exceedance probability and within-day correlation (``mu = 0``,
        ``rho`` NaN when there is no exceedance).
    rho_null:
        The within-day correlation that maximises the likelihood at ``mu = 1 - confidence``.
    lr, p_value:
        ``2 [l(mu, rho) - l(p, rho_null)]`` and its chi-square(1) p-value.
    """

    days: int
    mu: float
    rho: float
    rho_null: float
    lr: float
    p_value: float


def _betabinom_loglik(
    mu: float, rho: float, x: npt.NDArray[np.int64], b: npt.NDArray[np.int64], w: FloatArray
) -> float:
    """Weighted log-likelihood of day counts ``x`` of ``b`` books, beta-binomial with mean
    ``mu`` and intra-class correlation ``rho`` (binomial at ``rho = 0``)."""
    if rho <= 0.0:
        return float(np.sum(w * binom.logpmf(x, b, mu)))
    s = (1.0 - rho) / rho
    return float(np.sum(w * betabinom.logpmf(x, b, mu * s, (1.0 - mu) * s)))


def _argmax_1d(f: Callable[[float], float], lo: float, hi: float, n: int) -> tuple[float, float]:
    """Maximum of ``f`` on ``[lo, hi]``: the best of a grid of ``n`` points, refined by
    bounded Brent search between its neighbours."""
    grid = np.linspace(lo, hi, n)
    vals = np.array([f(float(v)) for v in grid])
    i = int(np.argmax(vals))
    a, c = grid[max(i - 1, 0)], grid[min(i + 1, n - 1)]
    res = minimize_scalar(lambda v: -f(float(v)), bounds=(a, c), method="bounded")
    if -float(res.fun) > vals[i]:
        return float(res.x), -float(res.fun)
    return float(grid[i]), float(vals[i])


def betabinomial_coverage(
    day: npt.ArrayLike, exceed: npt.ArrayLike, confidence: float
) -> BetaBinomialCoverage:
    """Coverage test with the books of a day dependent through a beta-binomial day effect,
    the dependence estimated under the null as well as under the alternative.

    Model: the number of exceedances on day ``d``, ``x_d`` of ``B_d`` books, is
    beta-binomial, ``x_d | q_d ~ Binomial(B_d, q_d)``, ``q_d ~ Beta`` with mean ``mu`` and
    intra-class correlation ``rho`` (``a = mu (1 - rho) / rho``, ``b = (1 - mu) (1 - rho) /
    rho``; ``rho = 0`` is the independent binomial of the pooled Kupiec test, ``rho -> 1``
    a day on which all books exceed or none); days independent. The test of
    ``mu = p = 1 - confidence`` is the profile likelihood ratio

    ``LR = 2 [max_{mu, rho} l(mu, rho) - max_rho l(p, rho)]``, chi-square(1),

    ``l = sum_d ln P(x_d | B_d, mu, rho)``. Unlike :func:`day_clustered_coverage`, whose
    variance is estimated from the observed day shares (and collapses when exceedances are
    rarer than ``p``: a single exceedance in 86 days gives ``|t| ~ 90``), the null
    hypothesis here is allowed its own dependence: zero exceedances on every day gives
    ``LR -> -2 D ln(1 - p)`` (``rho -> 1``), the Kupiec ratio of ``D`` independent days.

    Parameters
    ----------
    day:
        Cluster label of each book-day.
    exceed:
        Exceedance indicator of each book-day.
    confidence:
        Claimed coverage.

    Notes
    -----
    A parametric model (exchangeable books within a day); the chi-square limit is asymptotic
    in the number of days and ``rho`` may sit on its boundary, so read p-values near the
    level with care. Williams, "The analysis of binary responses from toxicological
    experiments involving reproduction and teratogenicity", Biometrics 31 (1975).
    """
    x_day, b_day = _day_counts(day, exceed)
    pairs, w = np.unique(np.stack([x_day, b_day], axis=1), axis=0, return_counts=True)
    x, b, wt = pairs[:, 0], pairs[:, 1], w.astype(float)
    p = 1.0 - confidence
    logit_lo, logit_hi = -14.0, 14.0  # rho in [8e-7, 1 - 8e-7]

    def profile(mu: float) -> tuple[float, float]:
        """``(rho, max_rho l(mu, rho))``, ``rho = 0`` included."""
        v, ll = _argmax_1d(
            lambda v: _betabinom_loglik(mu, float(expit(v)), x, b, wt), logit_lo, logit_hi, 57
        )
        ll0 = _betabinom_loglik(mu, 0.0, x, b, wt)
        return (0.0, ll0) if ll0 >= ll else (float(expit(v)), ll)

    rho0, l_null = profile(p)
    total, books = int(x_day.sum()), int(b_day.sum())
    if total in (0, books):
        mu_hat, rho_hat, l_hat = float(total / books), float("nan"), 0.0
    else:
        u, l_hat = _argmax_1d(lambda u: profile(float(expit(u)))[1], -21.0, 7.0, 57)
        mu_hat = float(expit(u))
        rho_hat = profile(mu_hat)[0]
    lr = float(max(2.0 * (l_hat - l_null), 0.0))
    return BetaBinomialCoverage(int(x_day.size), mu_hat, rho_hat, rho0, lr, float(chi2.sf(lr, 1)))


# ---------------------------------------------------------------------------------------------
# books


def _listed(chain: Any, min_days: float) -> pd.DataFrame:
    q = chain.quotes
    ok = np.isfinite(q["mark_coin"]) & (q["mark_coin"] > 0) & np.isfinite(q["iv_mark"])
    ok &= q["t"] * 365.0 > min_days
    return q[ok]


def _expiry_near(q: pd.DataFrame, days: float) -> pd.DataFrame:
    dte = q["t"] * 365.0
    e = q["expiry"].to_numpy()[int(np.argmin(np.abs(dte.to_numpy() - days)))]
    return q[q["expiry"] == e]


def _by_delta(s: pd.DataFrame, call: bool, target: float) -> str:
    """Symbol of the option of that type whose Black delta is nearest ``target``."""
    leg = s[s["call"] == call]
    f, k, t, v = (leg[c].to_numpy(dtype=float) for c in ("forward", "strike", "t", "iv_mark"))
    d1 = (np.log(f / k) + 0.5 * v * v * t) / (v * np.sqrt(t))
    delta = norm.cdf(d1) if call else norm.cdf(d1) - 1.0
    return str(leg["symbol"].iloc[int(np.argmin(np.abs(delta - target)))])


def _atm_strike(s: pd.DataFrame) -> float:
    both = s.groupby("strike")["call"].nunique()
    strikes = both[both == 2].index.to_numpy(dtype=float)
    f = float(s["forward"].median())
    return float(strikes[int(np.argmin(np.abs(strikes - f)))])


def _sym(s: pd.DataFrame, strike: float, call: bool) -> str:
    row = s[(s["strike"] == strike) & (s["call"] == call)]
    return str(row["symbol"].iloc[0])


def _book(symbols: Sequence[str], qty: Sequence[float]) -> pd.DataFrame:
    return pd.DataFrame({"symbol": list(symbols), "quantity": list(qty)})


def standard_books(days: float = 30.0, min_days: float = 3.0) -> dict[str, BookRule]:
    """The issue's test portfolios, one contract per leg, on the expiry nearest ``days``.

    short straddle (ATM), short strangle (25-delta), risk reversal (long 25-delta call, short
    25-delta put), long call butterfly (strikes nearest 0.9 F, ATM, 1.1 F), calendar (short
    ATM call at ``days``, long the same strike near ``3 days``), naked short wings (10-delta
    put and call), delta-hedged short straddle (hedged with the inverse future of the expiry
    on its minimum of Black delta), long options (long 25-delta strangle).
    """

    def near(chain: Any, d: float = days) -> pd.DataFrame:
        return _expiry_near(_listed(chain, min_days), d)

    def straddle(chain: Any) -> pd.DataFrame:
        s = near(chain)
        k = _atm_strike(s)
        return _book([_sym(s, k, True), _sym(s, k, False)], [-1, -1])

    def strangle(chain: Any) -> pd.DataFrame:
        s = near(chain)
        return _book([_by_delta(s, True, 0.25), _by_delta(s, False, -0.25)], [-1, -1])

    def risk_reversal(chain: Any) -> pd.DataFrame:
        s = near(chain)
        return _book([_by_delta(s, True, 0.25), _by_delta(s, False, -0.25)], [1, -1])

    def butterfly(chain: Any) -> pd.DataFrame:
        s = near(chain)
        calls = s[s["call"]]
        f = float(s["forward"].median())
        strikes = calls["strike"].to_numpy(dtype=float)
        k1, k3 = (float(strikes[np.argmin(np.abs(strikes - x * f))]) for x in (0.9, 1.1))
        k2 = _atm_strike(s)
        return _book([_sym(s, k1, True), _sym(s, k2, True), _sym(s, k3, True)], [1, -2, 1])

    def calendar(chain: Any) -> pd.DataFrame:
        s = near(chain)
        far = near(chain, 3 * days)
        k = _atm_strike(s)
        strikes = far[far["call"]]["strike"].to_numpy(dtype=float)
        kf = float(strikes[np.argmin(np.abs(strikes - k))])
        return _book([_sym(s, k, True), _sym(far, kf, True)], [-1, 1])

    def wings(chain: Any) -> pd.DataFrame:
        s = near(chain)
        return _book([_by_delta(s, True, 0.10), _by_delta(s, False, -0.10)], [-1, -1])

    def hedged(chain: Any) -> pd.DataFrame:
        s = near(chain)
        k = _atm_strike(s)
        legs = s[s["strike"] == k]
        f, t, v = (float(legs[c].iloc[0]) for c in ("forward", "t", "iv_mark"))
        d1 = (np.log(f / k) + 0.5 * v * v * t) / (v * np.sqrt(t))
        straddle_delta = -(2 * norm.cdf(d1) - 1.0)  # short one call and one put
        face = INVERSE_FUTURE_FACE_USD.get(str(chain.underlying).upper(), 10.0)
        code = str(legs["symbol"].iloc[0]).split("-")
        future = f"{code[0]}-{code[1]}"
        # an inverse future of face N has USD delta N/F per contract
        return _book(
            [_sym(s, k, True), _sym(s, k, False), future], [-1, -1, -straddle_delta * f / face]
        )

    def long_options(chain: Any) -> pd.DataFrame:
        s = near(chain)
        return _book([_by_delta(s, True, 0.25), _by_delta(s, False, -0.25)], [1, 1])

    return {
        "short_straddle": straddle,
        "short_strangle_25d": strangle,
        "risk_reversal": risk_reversal,
        "butterfly": butterfly,
        "calendar": calendar,
        "naked_short_wings": wings,
        "delta_hedged_short_gamma": hedged,
        "long_options": long_options,
    }


def random_books(n: int = 100, seed: int = 0, min_days: float = 3.0) -> dict[str, BookRule]:
    """``n`` random books of 1-4 legs: each leg a target expiry (3-180 days), type, Black delta
    (0.05-0.6 in absolute value) and signed quantity (0.5-3 contracts), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    books: dict[str, BookRule] = {}
    for b in range(n):
        m = int(rng.integers(1, 5))
        spec = [
            (
                float(rng.uniform(3, 180)),
                bool(rng.integers(0, 2)),
                float(rng.uniform(0.05, 0.6)),
                float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 3.0)),
            )
            for _ in range(m)
        ]

        def rule(chain: Any, spec: list[tuple[float, bool, float, float]] = spec) -> pd.DataFrame:
            listed = _listed(chain, min_days)
            legs: dict[str, float] = {}
            for days, call, delta, qty in spec:
                s = _expiry_near(listed, days)
                sym = _by_delta(s, call, delta if call else -delta)
                legs[sym] = legs.get(sym, 0.0) + qty
            return _book(list(legs), list(legs.values()))

        books[f"random_{b:03d}"] = rule
    return books


# ---------------------------------------------------------------------------------------------
# the backtest


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Backtest records and their summary.

    Attributes
    ----------
    records:
        One row per (instant, book, method): ``as_of``, ``book``, ``method``, ``margin_coin``,
        ``loss_coin`` (realised, positive = loss), ``exceed`` (loss > margin), ``horizon_days``.
    confidence:
        Claimed coverage.
    calibration_records:
        Records of the calibration-only books (``calibration_books`` of
        :func:`backtest_margin`), empty when the books calibrate themselves.
    fhs_scales:
        One row per (instant, model, pool): the FHS confidence scale
        (:func:`~volcal.risk.fhs.fhs_confidence_scale`) of the ``model`` (``"skew"``,
        ``"flat"``, ``"skew_compare"``) on the books of ``pool`` (``"calibration"`` or
        ``"test"``), with ``n_books`` and ``n_scenarios``.
    """

    records: pd.DataFrame
    confidence: float
    calibration_records: pd.DataFrame = field(default_factory=pd.DataFrame)
    fhs_scales: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self, by: Sequence[str] = ("method",)) -> pd.DataFrame:
        """Per group: ``n``, ``exceedances``, ``coverage``, Kupiec ``lr`` and ``p_value``,
        ``mean_excess_coin`` and ``es_excess_coin`` (mean of the excesses, and of the worst
        1 - confidence share of ``loss - margin``), ``avg_margin_coin``."""
        rows = []
        for key, g in self.records.groupby(list(by)):
            n = len(g)
            x = int(g["exceed"].sum())
            lr, pv = kupiec_pof(x, n, self.confidence)
            excess = (g["loss_coin"] - g["margin_coin"]).to_numpy()
            tail = np.sort(excess)[-max(1, int(np.ceil((1 - self.confidence) * n))) :]
            rows.append(
                {
                    **dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
                    "n": n,
                    "exceedances": x,
                    "coverage": 1 - x / n,
                    "kupiec_lr": lr,
                    "kupiec_p": pv,
                    "mean_excess_coin": float(excess[excess > 0].mean()) if x else 0.0,
                    "es_excess_coin": float(tail.mean()),
                    "avg_margin_coin": float(g["margin_coin"].mean()),
                }
            )
        return pd.DataFrame(rows)

    def dependence_tests(
        self, by: Sequence[str] = ("method",), level: float = 0.05
    ) -> pd.DataFrame:
        """Per group: tests that account for the time series of each book and for the
        dependence of the books of one day.

        Per book (a ``book``, and ``currency`` when the records have one) its exceedance
        sequence in ``as_of`` order is tested by :func:`christoffersen` (Kupiec on the
        book alone, independence, conditional coverage), and the books of the group are
        counted: ``books``, ``books_zero`` (no exceedance), ``kupiec_book_rejected``,
        ``ind_rejected``, ``cc_rejected`` (p-value below ``level``), and the shares of books
        rejected. The transition counts summed over the group's books, ``n00 .. n11``, give
        the pooled ``pi01 = n01 / (n00 + n01)`` and ``pi11 = n11 / (n10 + n11)`` and a pooled
        ``lr_ind_pooled`` / ``p_ind_pooled`` (which, like the pooled Kupiec test, treats the
        books as independent of each other).

        Per day (the calendar date of ``as_of``, UTC: the books of both coins on a date in
        one cluster when the group pools coins) :func:`day_clustered_coverage`:
        ``days``, ``exceedance_days``, ``day_mean_share``, ``day_se``, ``day_t``, ``day_p``;
        and :func:`betabinomial_coverage` (the day effect estimated under the null too):
        ``bb_mu``, ``bb_rho``, ``bb_rho_null``, ``bb_lr``, ``bb_p``.
        The pooled Kupiec test stays in :meth:`summary`.
        """
        rec = self.records
        book_keys = [c for c in ("currency", "book") if c in rec.columns]
        rows = []
        for key, g in rec.groupby(list(by)):
            g = g.sort_values("as_of", kind="stable")
            per_book = [
                christoffersen(b["exceed"].to_numpy(dtype=bool), self.confidence)
                for _, b in g.groupby(book_keys, sort=False)
            ]
            n00 = sum(t.n00 for t in per_book)
            n01 = sum(t.n01 for t in per_book)
            n10 = sum(t.n10 for t in per_book)
            n11 = sum(t.n11 for t in per_book)
            lr_pool, p_pool = christoffersen_ind(n00, n01, n10, n11)
            day = pd.to_datetime(g["as_of"], utc=True).dt.floor("D").to_numpy()
            ex = g["exceed"].to_numpy(dtype=bool)
            dc = day_clustered_coverage(day, ex, self.confidence)
            bb = betabinomial_coverage(day, ex, self.confidence)
            nb = len(per_book)
            kup = sum(t.p_pof < level for t in per_book)
            ind = sum(t.p_ind < level for t in per_book)
            cc = sum(t.p_cc < level for t in per_book)
            rows.append(
                {
                    **dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
                    "books": nb,
                    "books_zero": sum(t.exceedances == 0 for t in per_book),
                    "kupiec_book_rejected": kup,
                    "kupiec_book_share": kup / nb,
                    "ind_rejected": ind,
                    "ind_share": ind / nb,
                    "cc_rejected": cc,
                    "cc_share": cc / nb,
                    "n00": n00,
                    "n01": n01,
                    "n10": n10,
                    "n11": n11,
                    "pi01": n01 / (n00 + n01) if n00 + n01 else float("nan"),
                    "pi11": n11 / (n10 + n11) if n10 + n11 else float("nan"),
                    "lr_ind_pooled": lr_pool,
                    "p_ind_pooled": p_pool,
                    "days": dc.days,
                    "exceedance_days": dc.exceedance_days,
                    "day_mean_share": dc.mean_share,
                    "day_se": dc.se,
                    "day_t": dc.t_stat,
                    "day_p": dc.p_value,
                    "bb_mu": bb.mu,
                    "bb_rho": bb.rho,
                    "bb_rho_null": bb.rho_null,
                    "bb_lr": bb.lr,
                    "bb_p": bb.p_value,
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """Summary by method as records."""
        return {
            "confidence": self.confidence,
            "summary": self.summary().to_dict(orient="records"),
        }


def _risk_with_extended(rep: Any, weights: Callable[[FloatArray], FloatArray] | None) -> float:
    """Risk margin ``max(scenario, greek)`` of a report (coin, before the confidence scale)
    with the PM grid's extended moves re-weighted: ``weights(moves)`` gives their weights,
    ``None`` drops them (and the SPAN grid's extreme moves)."""
    tab = rep.scenario_pnl
    ext = tab.index.str.startswith("pm-ext:")
    loss = tab["weighted_loss"].to_numpy(dtype=float)
    if weights is None:
        loss = loss[~tab.index.str.contains("-ext:")]
    elif ext.any():
        loss = loss.copy()
        moves = tab["move"].to_numpy(dtype=float)[ext]
        loss[ext] = -tab["total"].to_numpy(dtype=float)[ext] * weights(moves)
    scen = max(float(loss.max()), 0.0) if loss.size else 0.0
    return max(scen, float(rep.components["greek"]["coin"]))


def _without_extended(rep: Any) -> float:
    """Initial margin of a report recomputed without the extended-move scenarios (coin, scale 1)."""
    return _risk_with_extended(rep, None) + float(rep.components["liquidity_addon"]["coin"])


def _reweighted_extended(rep: Any, exponent: float) -> float:
    """Initial margin of a report (coin, scale 1) with the PM grid's extended moves weighted
    ``(R/|m|)**exponent``."""
    R = float(rep.params.price_range)
    risk = _risk_with_extended(rep, lambda m: (R / np.abs(m)) ** exponent)
    return risk + float(rep.components["liquidity_addon"]["coin"])


SCALED_METHODS: dict[str, str] = {
    "skew": "skew_raw",
    "flat": "flat_raw",
    "skew_exchange_ext_scaled": "skew_exchange_ext",
}
"""Confidence-scaled method -> the unscaled method whose past scores calibrate it."""


def apply_confidence_scale(
    records: pd.DataFrame,
    base: str,
    name: str,
    confidence: float = 0.99,
    calibration: pd.DataFrame | None = None,
    min_history_days: float = 30.0,
    window_days: float | None = None,
    stress_weight: float = 0.25,
) -> pd.DataFrame:
    """Records of method ``name``: method ``base``'s margins with the risk part scaled at
    each instant by :func:`~volcal.risk.params.confidence_scale` of the scores ``(loss -
    liquidity) / risk`` of the book-days whose realised loss ended strictly before it.

    Parameters
    ----------
    records:
        Backtest records with ``as_of``, ``method``, ``risk_coin``, ``liquidity_coin``,
        ``loss_coin`` and ``loss_end`` (instant of the snapshot that realised the loss).
    base, name:
        Unscaled method and the name of the scaled one.
    confidence:
        Target coverage.
    calibration:
        Records whose scores calibrate the scale (default ``records`` itself: the same
        books' past).
    min_history_days:
        The scale stays 1 until the realised scores span this many days (30, as
        ``volcal.jobs.MIN_MARGIN_HISTORY_DAYS`` and the stress window): the books of one day
        share one market move, so a few calm days are few independent observations however
        many books they hold (a 5-day calibration gave 0.19 on BTC and 20 exceedances in
        the next two days, see ``docs/margin.md``).
    window_days:
        None (default): all past scores (an expanding window, which keeps the worst period
        seen). A number: the scores of the last ``window_days`` only, ``c_recent``, floored
        like the price range, ``max(c_recent, (1 - w) c_recent + w c_stress)`` with
        ``c_stress`` the largest ``c_recent`` of the instants so far and ``w =
        stress_weight`` (EMIR RTS 153/2013 art. 28(1)(b)).
    stress_weight:
        ``w`` of that floor.

    Returns
    -------
    pandas.DataFrame
        The scaled records (``scale`` the multiplier, 1 while fewer than
        ``confidence / (1 - confidence)`` past scores exist or they span less than
        ``min_history_days``).
    """
    cal = records if calibration is None else calibration
    cal = cal[(cal["method"] == base) & (cal["risk_coin"] > 0)]
    end = cal["loss_end"].to_numpy()
    order = np.argsort(end, kind="stable")
    end = end[order]
    scores = ((cal["loss_coin"] - cal["liquidity_coin"]) / cal["risk_coin"]).to_numpy(dtype=float)[
        order
    ]
    out = records[records["method"] == base].copy()
    scale = pd.Series(1.0, index=out.index)
    min_span = pd.Timedelta(days=min_history_days)
    c_stress = 0.0
    for t in np.sort(out["as_of"].unique()):
        n = int(np.searchsorted(end, t, side="left"))  # losses realised strictly before t
        if n == 0 or t - end[0] < min_span:
            continue
        if window_days is None:
            c = confidence_scale(scores[:n], confidence)
        else:
            n0 = int(np.searchsorted(end, t - pd.Timedelta(days=window_days), side="left"))
            c = confidence_scale(scores[n0:n], confidence)
            if np.isfinite(c):
                c_stress = max(c_stress, c)
                c = max(c, (1 - stress_weight) * c + stress_weight * c_stress)
        scale[out["as_of"] == t] = c if np.isfinite(c) else 1.0
    out["method"] = name
    out["scale"] = scale
    out["margin_coin"] = scale * out["risk_coin"] + out["liquidity_coin"]
    out["exceed"] = out["loss_coin"] > out["margin_coin"]
    return out


FHS_METHODS: dict[str, tuple[str, str]] = {
    "skew_fhs": ("skew_raw", "skew"),
    "flat_fhs": ("flat_raw", "flat"),
    "skew_compare_fhs": ("skew_compare_raw", "skew_compare"),
}
"""FHS-scaled method -> (the unscaled method, the model of its scale in ``fhs_scales``)."""


def apply_fhs_scale(
    records: pd.DataFrame, base: str, name: str, scales: pd.DataFrame, model: str, pool: str
) -> pd.DataFrame:
    """Records of method ``name``: method ``base``'s margins with the risk part times the FHS
    scale of ``model`` on ``pool`` at each instant (``fhs_scales`` of
    :class:`BacktestResult`; 1 where there is none, e.g. too short a history).

    The scale at an instant uses only statistics of snapshots strictly before it and the
    positions and surface of the instant (see :mod:`volcal.risk.fhs`).
    """
    out = records[records["method"] == base].copy()
    sel = scales[(scales["model"] == model) & (scales["pool"] == pool)]
    by_time = sel.set_index("as_of")["scale"]
    scale = out["as_of"].map(by_time).astype(float)
    out["scale"] = scale.where(np.isfinite(scale) & (scale > 0), 1.0)
    out["method"] = name
    out["margin_coin"] = out["scale"] * out["risk_coin"] + out["liquidity_coin"]
    out["exceed"] = out["loss_coin"] > out["margin_coin"]
    return out


def svi_surface(chain: Any) -> MarginSurface:
    """The calibrated raw-SVI surface of a chain (``volcal.fit_svi(chain).surface``), the
    backtest's default surface; the fit's warnings are silenced (they are kept on the fit)."""
    import warnings

    from volcal.svi import fit_svi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        surface: MarginSurface = fit_svi(chain).surface
    return surface


def _realised_loss(book: pd.DataFrame | Positions, chain0: Any, chain1: Any) -> float:
    """Coin loss of the book from chain0's to chain1's marks (NaN if an option is missing)."""
    pos = book if isinstance(book, Positions) else resolve_positions(book, chain0)
    tab = pos.table
    quotes1 = chain1.quotes
    q1 = quotes1[quotes1["symbol"].isin(tab["symbol"])].set_index("symbol")
    loss = 0.0
    for _, r in tab.iterrows():
        n = r["quantity"] * r["contract_size"]
        if r["kind"] == "option":
            if r["symbol"] not in q1.index:
                return float("nan")
            loss -= n * (float(q1.loc[r["symbol"], "mark_coin"]) - r["mark_coin"])
        else:
            f0 = r["chain_forward"]
            exp1 = chain1.quotes["expiry"] == r["expiry"]
            if not (np.isfinite(f0) and exp1.any()):
                return float("nan")
            f1 = float(chain1.quotes.loc[exp1, "forward"].median())
            loss -= n * (1 / f0 - 1 / f1) if r["settlement"] == "inverse" else n * (f1 - f0) / f1
    return float(loss)


def backtest_margin(
    history: Any,
    portfolios: Mapping[str, BookRule | pd.DataFrame],
    params_or_calibrator: MarginParams | Callable[[HistoryStats], MarginParams] | None = None,
    horizon: str | pd.Timedelta = "1D",
    *,
    currency: str | None = None,
    step: str | pd.Timedelta = "1D",
    warmup: str | pd.Timedelta = "21D",
    surface: Callable[[Any], MarginSurface] = svi_surface,
    flat_surface: Callable[[Any], MarginSurface] | None = None,
    compare_surface: Callable[[Any], MarginSurface] | None = None,
    confidence: float = 0.99,
    stats: HistoryStats | None = None,
    calibration_books: Mapping[str, BookRule | pd.DataFrame] | None = None,
    fhs: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BacktestResult:
    """Backtest margin on a history of chains.

    Parameters
    ----------
    history:
        Chains of one underlying oldest first, or a path / DataFrame with ``currency``.
    portfolios:
        Book name -> rule (chain -> positions) or a fixed positions DataFrame.
    params_or_calibrator:
        Fixed :class:`MarginParams`, or a function of the statistics strictly before the
        instant; default :func:`calibrate_margin_params` at ``confidence`` and ``horizon``
        (extended moves weighted by their tail probability).
    horizon:
        Margin period of risk; the realised loss is over the first snapshot at least this
        much later (skipped when that is more than 1.5 horizons away).
    step, warmup:
        Spacing of evaluation instants and the data kept for the first calibration.
    surface:
        Builds the surface from a chain (default: the calibrated SVI surface,
        :func:`svi_surface`; a chain whose fit raises is margined on its marks,
        :class:`~volcal.risk.surfaces.MarkSurface`, and the record's ``surface`` says so).
    flat_surface:
        Builds the flat-vol surface of the ``flat`` method (default: ATM marks, no skew).
    compare_surface:
        A second surface for the skew-aware margin (e.g. ``MarkSurface.from_chain``): adds
        ``skew_compare_raw`` and its scaled versions ``skew_compare`` (conformal) and
        ``skew_compare_fhs``.
    confidence:
        Claimed coverage (Kupiec's null) and target of the confidence scale.
    stats:
        Precomputed :func:`history_stats` of the same history (saves a pass).
    calibration_books:
        Books whose past realised losses calibrate the confidence scale (margined like the
        others, kept in ``calibration_records``); default: ``portfolios`` themselves (their
        own past).
    fhs:
        Also compute the FHS confidence scales (:mod:`volcal.risk.fhs`) and the ``*_fhs``
        methods.
    progress:
        Called with a line of text per evaluation instant.

    Returns
    -------
    BacktestResult
        Methods (all margins in coin; ``*_raw`` and the alternatives at confidence scale 1):

        * ``skew_raw``: the calibrated parameters, SSR dynamic, surface ``surface``;
        * ``skew``: ``skew_raw`` with its risk part times the confidence scale calibrated on
          the scores of book-days realised strictly before the instant
          (:func:`apply_confidence_scale`);
        * ``skew_exchange_ext``: ``skew_raw`` with the extended moves weighted ``R/|m|``
          (the exchange's weighting), ``skew_exchange_ext_scaled`` its confidence-scaled
          version; ``skew_ext_sq``: weighted ``(R/|m|)**2``; ``skew_no_ext``: without them;
        * ``flat_raw`` (the same parameters on a flat smile, sticky strike), ``flat`` its
          own confidence-scaled version, ``flat_exchange_ext`` with ``R/|m|``;
        * ``skew_fhs`` and ``flat_fhs``: ``skew_raw`` and ``flat_raw`` times the FHS scale of
          their own model (skew: the surface, SSR dynamic, vol changes net of it; flat: the
          flat smile, sticky strike, whole ATM vol changes) on the calibration books (the
          test books when there are none) at the instant (``fhs_scales``);
        * ``standard`` (Deribit standard initial margin), ``reference_pm`` (the grid with the
          exchange's parameters, issue 6).
    """
    if hasattr(history, "quotes") or not isinstance(history, Sequence):
        from volcal.risk.history import _as_chains

        chains = _as_chains(history, currency)
    else:
        chains = list(history)
    st = stats if stats is not None else history_stats(chains)
    hz = pd.Timedelta(horizon)
    calib: Callable[[HistoryStats], MarginParams]
    if isinstance(params_or_calibrator, MarginParams):
        fixed = params_or_calibrator

        def calib(_: HistoryStats) -> MarginParams:
            return fixed
    elif params_or_calibrator is None:

        def calib(s: HistoryStats) -> MarginParams:
            return calibrate_margin_params(s, confidence, hz)
    else:
        calib = params_or_calibrator
    flat = flat_surface or (lambda ch: MarkSurface.from_chain(ch, flat=True))
    all_books: dict[str, tuple[BookRule | pd.DataFrame, bool]] = {
        name: (rule, False) for name, rule in portfolios.items()
    }
    for name, rule in (calibration_books or {}).items():
        all_books[f"calibration:{name}"] = (rule, True)
    times = pd.DatetimeIndex([c.as_of for c in chains])
    start = times[0] + pd.Timedelta(warmup)
    records: list[dict[str, Any]] = []
    scale_rows: list[dict[str, Any]] = []
    next_time = start
    for i, ch in enumerate(chains):
        if times[i] < next_time:
            continue
        j = int(times.searchsorted(times[i] + hz, side="left"))
        if j >= len(chains) or times[j] - times[i] > 1.5 * hz:
            continue
        next_time = times[i] + pd.Timedelta(step)
        past = st.before(times[i])
        params = calib(past)
        try:
            surf = surface(ch)
            surf_name = type(surf).__name__
        except Exception as exc:  # a failed fit: margin on the marks, say so in the records
            surf = MarkSurface.from_chain(ch)
            surf_name = f"MarkSurface (fallback: {type(exc).__name__})"
        fsurf = flat(ch)
        csurf = compare_surface(ch) if compare_surface is not None else None
        dyn = SmileDynamics(params.ssr, source="params.ssr")
        sticky = SmileDynamics.sticky_strike()
        scen: dict[str, Any] = {}
        if fhs:
            try:
                scen["skew"] = historical_scenarios(past, hz, ssr=params.ssr)
                scen["flat"] = historical_scenarios(past, hz, ssr=None)
                scen["skew_compare"] = scen["skew"]
            except ValueError:
                scen = {}
        pools: dict[tuple[str, str], list[tuple[FloatArray, float, float]]] = {}
        R = float(params.price_range)

        def exchange(m: FloatArray, R: float = R) -> FloatArray:
            return np.asarray(R / np.abs(m))

        def square(m: FloatArray, R: float = R) -> FloatArray:
            return np.asarray((R / np.abs(m)) ** 2)

        for name, (rule, is_cal) in all_books.items():
            try:
                book = rule if isinstance(rule, pd.DataFrame) else rule(ch)
                pos = resolve_positions(book, ch)
                loss = _realised_loss(pos, ch, chains[j])
            except (KeyError, ValueError, IndexError):
                continue
            if not np.isfinite(loss):
                continue
            rep = margin(pos, surf, ch, params)
            rep_flat = margin(
                pos, fsurf, ch, params, dynamics=SmileDynamics.sticky_strike(), reference=False
            )
            horizon_days = (times[j] - times[i]) / pd.Timedelta(days=1)
            liq = float(rep.components["liquidity_addon"]["coin"])
            liq_f = float(rep_flat.components["liquidity_addon"]["coin"])
            risk_s = float(rep.components["risk"]["coin"])
            risk_f = float(rep_flat.components["risk"]["coin"])
            pool = "calibration" if is_cal else "test"
            models: list[tuple[str, MarginSurface, SmileDynamics, float, float]] = [
                ("skew", surf, dyn, risk_s, liq),
                ("flat", fsurf, sticky, risk_f, liq_f),
            ]
            rows: list[tuple[str, float, float]] = []
            if csurf is not None:
                rep_c = margin(pos, csurf, ch, params, reference=False)
                liq_c = float(rep_c.components["liquidity_addon"]["coin"])
                risk_c = float(rep_c.components["risk"]["coin"])
                rows.append(("skew_compare_raw", risk_c, liq_c))
                models.append(("skew_compare", csurf, dyn, risk_c, liq_c))
            for model, msurf, mdyn, mrisk, mliq in models:
                if model in scen:
                    pools.setdefault((model, pool), []).append(
                        (scenario_losses(pos, msurf, scen[model], mdyn), mrisk, mliq)
                    )
            rows += [
                ("skew_raw", risk_s, liq),
                ("skew_exchange_ext", _risk_with_extended(rep, exchange), liq),
                ("skew_ext_sq", _risk_with_extended(rep, square), liq),
                ("skew_no_ext", _risk_with_extended(rep, None), liq),
                ("flat_raw", float(rep_flat.components["risk"]["coin"]), liq_f),
                ("flat_exchange_ext", _risk_with_extended(rep_flat, exchange), liq_f),
                ("standard", float(rep.components["standard_initial"]["coin"]), 0.0),
                ("reference_pm", float(rep.components["reference_pm"]["coin"]), 0.0),
            ]
            for method, risk, lq in rows:
                value = risk + lq
                records.append(
                    {
                        "as_of": times[i],
                        "book": name,
                        "method": method,
                        "margin_coin": value,
                        "loss_coin": loss,
                        "exceed": bool(loss > value),
                        "horizon_days": horizon_days,
                        "risk_coin": risk,
                        "liquidity_coin": lq,
                        "loss_end": times[j],
                        "scale": 1.0,
                        "calibration": is_cal,
                        "surface": surf_name,
                    }
                )
        for (model, pool), items in pools.items():
            scale_rows.append(
                {
                    "as_of": times[i],
                    "model": model,
                    "pool": pool,
                    "scale": fhs_confidence_scale(
                        [x[0] for x in items],
                        [x[1] for x in items],
                        [x[2] for x in items],
                        confidence,
                    ),
                    "n_books": len(items),
                    "n_scenarios": len(scen[model]),
                }
            )
        if progress is not None:
            progress(f"{times[i]} done, {len(records)} records")
    rec = pd.DataFrame(records)
    scales = pd.DataFrame(
        scale_rows, columns=["as_of", "model", "pool", "scale", "n_books", "n_scenarios"]
    )
    if rec.empty:
        return BacktestResult(rec, confidence, fhs_scales=scales)
    test, cal = rec[~rec["calibration"]], rec[rec["calibration"]]
    cal_src = cal if calibration_books else test
    scaled_methods = dict(SCALED_METHODS)
    if compare_surface is not None:
        scaled_methods["skew_compare"] = "skew_compare_raw"
    scaled = [
        apply_confidence_scale(test, base, name, confidence, cal_src)
        for name, base in scaled_methods.items()
    ]
    fhs_pool = "calibration" if calibration_books else "test"
    if fhs:
        scaled += [
            apply_fhs_scale(test, base, name, scales, model, fhs_pool)
            for name, (base, model) in FHS_METHODS.items()
            if (test["method"] == base).any()
        ]
    cal_scaled = (
        [apply_confidence_scale(cal, b, n, confidence, cal) for n, b in scaled_methods.items()]
        if calibration_books
        else []
    )
    return BacktestResult(
        pd.concat([test, *scaled], ignore_index=True).drop(columns="calibration"),
        confidence,
        pd.concat([cal, *cal_scaled], ignore_index=True).drop(columns="calibration")
        if calibration_books
        else pd.DataFrame(),
        scales,
    )
