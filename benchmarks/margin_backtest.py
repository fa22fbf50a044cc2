"""Margin: speed of full revaluation, and the backtest on the shared Deribit history.

Usage::

    /work/venv/bin/python benchmarks/margin_backtest.py speed
    /work/venv/bin/python benchmarks/margin_backtest.py backtest [--currency BTC ETH]
        [--random 100] [--step 1D] [--out /tmp/margin_backtest]

``speed``: 10,000 option positions x the 35 scenarios of the portfolio-margin grid, full
revaluation on an SVI surface (``volcal.svi.fit_svi`` of one real BTC chain) with the SSR
dynamic, vectorised (:func:`volcal.risk.revalue`), for a book on the listed instruments and
for 10,000 distinct instruments, beside a per-position loop; the fastest of repeated runs is
printed (the host is shared with other work).

``backtest``: :func:`volcal.risk.backtest.backtest_margin` over all snapshots (one evaluation
per ``step``, 21 days of warm-up, 1-day horizon, 99 %), for the standard books and ``--random``
random books per currency; prints coverage, Kupiec and average margin per method, writes the
records (CSV) and the figure ``docs/figures/margin_vs_loss.png`` (short straddle, BTC).

``report``: reprints the tables from the CSVs of ``--out``, with the tests beyond the pooled
Kupiec (:meth:`~volcal.risk.backtest.BacktestResult.dependence_tests`): Kupiec and
Christoffersen per book, pooled transition counts, the day-clustered coverage test.

``size``: how often the day-level coverage tests reject a correct 1 % margin when the books
of a day are dependent (beta-binomial, within-day correlation 0.10 and 0.27).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import pandas as pd

import volcal
from volcal.risk import (
    MarkSurface,
    Positions,
    SmileDynamics,
    VolShock,
    history_stats,
    pm_grid,
    resolve_positions,
    revalue,
)
from volcal.risk.backtest import (
    FHS_METHODS,
    SCALED_METHODS,
    BacktestResult,
    apply_confidence_scale,
    apply_fhs_scale,
    backtest_margin,
    betabinomial_coverage,
    day_clustered_coverage,
    kupiec_pof,
    null_rejection_rates,
    random_books,
    standard_books,
    svi_surface,
)

REPO = Path(__file__).resolve().parents[1]
PARQUET = REPO.parent / "shared" / "data" / "deribit" / "deribit_chains_2025-12_2026-04.parquet"


def _time(fn: object, repeats: int) -> float:
    """Fastest CPU time (``time.process_time``, one thread) of ``repeats`` runs, the least
    disturbed by other processes on a shared host; the median is printed beside it."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()  # type: ignore[operator]
        times.append(time.process_time() - t0)
    _time.median = float(np.median(times))  # type: ignore[attr-defined]
    return float(np.min(times))


def speed(n: int = 10_000, repeats: int = 15) -> None:
    chain = volcal.load_snapshot(PARQUET, "BTC", at="2026-02-01")
    assert not isinstance(chain, list)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        surface = volcal.fit_svi(chain).surface
    q = chain.quotes[(chain.quotes["t"] > 2 / 365) & np.isfinite(chain.quotes["mark_coin"])]
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(q), n)
    book = pd.DataFrame({"symbol": q["symbol"].to_numpy()[idx], "quantity": rng.uniform(-5, 5, n)})
    listed = resolve_positions(book, chain)
    # worst case: 10,000 distinct instruments (strikes drawn continuously, listed expiries)
    tab = listed.table.copy()
    tab["strike"] = tab["strike"].to_numpy() * np.exp(rng.normal(0, 1e-3, n))
    distinct = Positions(tab, listed.as_of, listed.underlying, listed.spot)
    grid = pm_grid(0.09, dt=1 / 365)
    dyn, shock = SmileDynamics(1.7), VolShock(0.23, 0.18, 0.27, 0.57)
    print(
        f"positions {n}, scenarios {len(grid)}, surface SVI ({len(surface.t)} expiries), "
        f"CPU time (process_time), fastest (median) of {repeats} runs"
    )
    revalue(listed, surface, grid, dyn, shock)  # compile the numba kernels (cached on disk)
    for label, pos in ((f"{len(q)} listed instruments", listed), ("10,000 distinct", distinct)):
        vec = _time(lambda pos=pos: revalue(pos, surface, grid, dyn, shock), repeats)
        med = _time.median  # type: ignore[attr-defined]
        print(f"  vectorised revalue, {label:24s}: {vec * 1e3:8.1f} ms ({med * 1e3:.1f})")
    m = 100  # the loop is slow: time 100 positions and scale to n

    singles = [resolve_positions(book.iloc[[i]], chain) for i in range(m)]

    def loop() -> None:
        for one in singles:
            revalue(one, surface, grid, dyn, shock)

    print(f"  per-position loop (scaled to {n})     : {_time(loop, 3) / m * n * 1e3:8.1f} ms")
    old = _time(lambda: _numpy_revalue(distinct, surface, grid, dyn, shock), 5)
    print(f"  numpy reference path, 10,000 distinct   : {old * 1e3:8.1f} ms (no compiled kernel)")
    k = listed.table["strike"].to_numpy()
    t = listed.table["t"].to_numpy()
    sv = _time(lambda: surface.implied_vol(np.tile(k, (17, 1)), np.tile(t, (17, 1))), repeats)
    print(f"  of which: SVI implied_vol at 17 moves x {n} points: {sv * 1e3:.1f} ms")


METHODS = [
    "skew",
    "skew_raw",
    "skew_exchange_ext",
    "skew_exchange_ext_scaled",
    "skew_ext_sq",
    "skew_no_ext",
    "flat",
    "flat_raw",
    "flat_exchange_ext",
    "standard",
    "reference_pm",
]


def _numpy_revalue(
    pos: Positions, surface: object, grid: object, dyn: SmileDynamics, shock: VolShock
) -> np.ndarray:
    """The same unit values by plain NumPy (``black_usd`` and ``VolShock.apply`` on the
    tabulated smile): the path the compiled kernel replaced, timed for comparison."""
    from volcal.risk.scenarios import _surface_vols, black_usd

    tab = pos.table
    k, t = tab["strike"].to_numpy(dtype=float), tab["t"].to_numpy(dtype=float)
    call = tab["call"].to_numpy(dtype=bool)
    f = np.asarray(surface.forward(t))  # type: ignore[attr-defined]
    moves, inv = np.unique(grid.move, return_inverse=True)  # type: ignore[attr-defined]
    lookup = dyn.lookup_strike(k[None, :], moves[:, None])
    base = _surface_vols(surface, lookup, np.broadcast_to(t, lookup.shape), None)[inv]  # type: ignore[arg-type]
    vol = shock.apply(base, grid.vol[:, None], (t * 365.0)[None, :])  # type: ignore[attr-defined]
    f1 = f[None, :] * (1.0 + grid.move[:, None])  # type: ignore[attr-defined]
    return black_usd(f1, k[None, :], np.maximum(t - grid.dt, 0.0)[None, :], vol, call[None, :])  # type: ignore[attr-defined]


class SviCache:
    """The calibrated SVI surface of each snapshot (``volcal.fit_svi(chain).surface``), fitted
    once and pickled under ``out/svi_cache`` so that reruns and every method share it."""

    def __init__(self, root: Path, currency: str) -> None:
        self.root = root / "svi_cache"
        self.root.mkdir(parents=True, exist_ok=True)
        self.currency = currency
        self.fits = 0
        self.cpu = 0.0

    def __call__(self, chain: object) -> object:
        stamp = pd.Timestamp(chain.as_of).strftime("%Y%m%dT%H%M%S")  # type: ignore[attr-defined]
        path = self.root / f"{self.currency}_{stamp}.pkl"
        if path.exists():
            with path.open("rb") as fh:
                return pickle.load(fh)
        c0 = time.process_time()
        surface = svi_surface(chain)
        self.cpu += time.process_time() - c0
        self.fits += 1
        with path.open("wb") as fh:
            pickle.dump(surface, fh)
        return surface


def backtest(
    currencies: list[str],
    n_random: int,
    n_calib: int,
    step: str,
    out: Path,
    compare_marks: bool = True,
    max_snapshots: int | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for cur in currencies:
        t0, c0 = time.perf_counter(), time.process_time()
        chains = volcal.load_snapshot(PARQUET, cur)
        assert isinstance(chains, list)
        if max_snapshots:
            chains = chains[:max_snapshots]
        st = history_stats(chains)
        books = standard_books() | random_books(n_random, seed=1)
        calib = random_books(n_calib, seed=2) if n_calib else None
        cache = SviCache(out, cur)
        res = backtest_margin(
            chains,
            books,
            stats=st,
            step=step,
            calibration_books=calib,
            surface=cache,  # type: ignore[arg-type]
            compare_surface=MarkSurface.from_chain if compare_marks else None,
        )
        rec = res.records.assign(currency=cur)
        rec.to_csv(out / f"records_{cur}.csv", index=False)
        res.calibration_records.assign(currency=cur).to_csv(
            out / f"calibration_{cur}.csv", index=False
        )
        res.fhs_scales.assign(currency=cur).to_csv(out / f"scales_{cur}.csv", index=False)
        print(f"{cur}: {cache.fits} SVI fits, {cache.cpu:.0f} s CPU", flush=True)
        print(
            f"{cur}: {rec['as_of'].nunique()} days, {rec['book'].nunique()} test books, "
            f"{n_calib} calibration books, {len(rec)} records, "
            f"{time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU",
            flush=True,
        )
    report(out)


def _ratios(summ: pd.DataFrame, piv: pd.DataFrame) -> pd.DataFrame:
    """Average-margin ratios of each method to the reference grid, flat-vol (conformal and
    FHS-scaled) and standard margins over the same book-days."""
    summ = summ.copy()
    summ["vs_reference"] = summ["method"].map(lambda m: piv[m].mean() / piv["reference_pm"].mean())
    for other in ("flat", "flat_fhs", "standard"):
        if other in piv.columns:
            summ[f"vs_{other}"] = summ["method"].map(
                lambda m, o=other: piv[m].mean() / piv[o].mean()
            )
    return summ


def _load(out: Path, prefix: str, dates: tuple[str, ...] = ("as_of", "loss_end")) -> pd.DataFrame:
    frames = [
        pd.read_csv(f, parse_dates=list(dates))
        for f in sorted(out.glob(f"{prefix}_*.csv"))
        if f.stat().st_size > 1
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def report(out: Path) -> None:
    records, scales = build_records(out)
    _print_report(records, scales)


def build_records(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All methods' records (the scaled ones recomputed from the unscaled) and the FHS
    scales of a backtest output folder."""
    raw = _load(out, "records")
    if raw.empty:
        sys.exit(f"no records in {out}")
    cal = _load(out, "calibration")
    # the confidence-scaled methods are recomputed here from the unscaled records (so the
    # report follows apply_confidence_scale's current defaults): calibrated on the separate
    # calibration books, on the test books' own past, and (diagnostic) without the 30-day
    # minimum history of scores
    scales = _load(out, "scales", dates=("as_of",))
    derived = set(SCALED_METHODS) | set(FHS_METHODS) | {"skew_compare"}
    raw = raw[~raw["method"].isin(list(derived))]
    conformal = dict(SCALED_METHODS)
    if (raw["method"] == "skew_compare_raw").any():
        conformal["skew_compare"] = "skew_compare_raw"
    scaled = []
    for cur, g in raw.groupby("currency"):
        c = cal[cal["currency"] == cur] if not cal.empty else None
        for name, base in conformal.items():
            if c is not None and len(c):
                scaled.append(apply_confidence_scale(g, base, name, 0.99, c))
            scaled.append(apply_confidence_scale(g, base, f"{name}_ownpast", 0.99))
        scaled.append(apply_confidence_scale(g, "skew_raw", "skew_ownpast_min0d", 0.99, None, 0.0))
        # FHS: the scale of each model on the calibration books, and on the test books of
        # the same instant (positions known at the instant; no realised loss is used)
        sc = scales[scales["currency"] == cur] if not scales.empty else scales
        if len(sc):
            for name, (base, model) in FHS_METHODS.items():
                if (g["method"] == base).any():
                    scaled.append(apply_fhs_scale(g, base, name, sc, model, "calibration"))
                    scaled.append(apply_fhs_scale(g, base, f"{name}_testpool", sc, model, "test"))
            # the flat-vol margin at the skew model's FHS scale (equal scale)
            scaled.append(
                apply_fhs_scale(g, "flat_raw", "flat_at_skew_fhs_scale", sc, "skew", "calibration")
            )
        # the flat-vol margin at the skew method's scale (same parameters, same multiplier)
        sk = apply_confidence_scale(
            g, "skew_raw", "x", 0.99, c if c is not None and len(c) else None
        )
        fl = g[g["method"] == "flat_raw"].copy()
        fl["scale"] = fl["as_of"].map(sk.groupby("as_of")["scale"].first())
        fl["margin_coin"] = fl["scale"] * fl["risk_coin"] + fl["liquidity_coin"]
        fl["exceed"] = fl["loss_coin"] > fl["margin_coin"]
        scaled.append(fl.assign(method="flat_at_skew_scale"))
    records = pd.concat([raw, *scaled], ignore_index=True)
    records["group"] = np.where(records["book"].str.startswith("random"), "random", "standard")
    return records, scales


def _print_report(records: pd.DataFrame, scales: pd.DataFrame) -> None:
    res = BacktestResult(records, 0.99)
    pd.set_option("display.width", 220)
    pd.set_option("display.max_columns", 20)
    pd.set_option("display.max_rows", 500)
    pd.set_option("display.float_format", lambda x: f"{x:.4g}")
    piv = records.pivot_table(
        index=["currency", "as_of", "book"], columns="method", values="margin_coin"
    )
    summ = _ratios(res.summary(("method",)), piv)
    print("\nAll books, by method (margin ratios: mean margin over the same book-days)")
    print(summ.to_string(index=False))
    # from the first instant at which the conformal scale is calibrated in every currency
    first = (
        records[(records["method"] == "skew") & (records["scale"] != 1.0)]
        .groupby("currency")["as_of"]
        .min()
    )
    if len(first) == records["currency"].nunique():
        since = first.max()
        late = records[records["as_of"] >= since]
        piv_l = late.pivot_table(
            index=["currency", "as_of", "book"], columns="method", values="margin_coin"
        )
        print(f"\nFrom {since} (conformal scale calibrated in every currency)")
        print(
            _ratios(BacktestResult(late, 0.99).summary(("method",)), piv_l).to_string(index=False)
        )
    if not scales.empty:
        print("\nFHS scales by currency, model and pool (per instant):")
        print(
            scales.groupby(["currency", "model", "pool"])["scale"]
            .agg(["min", "median", "mean", "max"])
            .to_string()
        )
        print(
            "FHS scenarios per instant:",
            scales["n_scenarios"].min(),
            "..",
            scales["n_scenarios"].max(),
        )
    print("\nBy currency, by method")
    print(res.summary(("currency", "method")).to_string(index=False))
    _print_dependence(res, records)
    print("\nBy group (standard / random books), by method")
    print(res.summary(("group", "method")).to_string(index=False))
    sel = records["method"].isin(
        ["skew", "skew_fhs", "skew_raw", "flat", "flat_fhs", "standard", "reference_pm"]
    )
    std = BacktestResult(records[(records["group"] == "standard") & sel], 0.99)
    print("\nStandard books, by book")
    print(std.summary(("book", "method")).to_string(index=False))
    for m in ("skew", "skew_ownpast", "skew_ownpast_min0d", "skew_fhs", "flat_fhs"):
        per = records[records["method"] == m].groupby(["currency", "as_of"])["scale"].first()
        if len(per):
            print(f"\nconfidence scale of {m} by currency (per instant):")
            print(per.groupby(level=0).agg(["min", "median", "mean", "max"]).to_string())
    ex = records[records["method"].isin(["skew", "skew_fhs", "flat_fhs", "skew_ownpast_min0d"])]
    ex = ex[ex["exceed"]].assign(day=lambda d: d["as_of"].dt.strftime("%Y-%m-%d"))
    ex = ex.groupby(["method", "currency", "day"]).size().rename("exceedances").reset_index()
    print("\nexceedances by day:")
    print(ex.to_string(index=False))
    _figure(records)


DEPENDENCE_METHODS = [
    "skew_fhs",
    "skew_fhs_testpool",
    "skew",
    "skew_ownpast",
    "skew_raw",
    "skew_compare_fhs",
    "flat_fhs",
    "flat_at_skew_fhs_scale",
    "flat",
    "reference_pm",
    "standard",
]


def _print_dependence(res: BacktestResult, records: pd.DataFrame) -> None:
    """Tests beyond the pooled Kupiec: per book (Kupiec on the book's own days,
    Christoffersen independence and conditional coverage, rejected at 5 %), the transition
    counts pooled over books, and the day-clustered coverage test (a day = a calendar date;
    pooled over coins, the books of both coins on a date form one cluster)."""
    sel = BacktestResult(records[records["method"].isin(DEPENDENCE_METHODS)], res.confidence)
    n_days = records.groupby("currency")["as_of"].nunique()
    for n in sorted(set(n_days)):
        region = [x for x in range(n + 1) if kupiec_pof(x, n, res.confidence)[1] > 0.05]
        print(
            f"\nKupiec per book at n = {n} days, 99 %: not rejected at 5 % for "
            f"{region[0]}..{region[-1]} exceedances (0 exceedances: p = "
            f"{kupiec_pof(0, n, res.confidence)[1]:.3f})"
        )
        size = null_rejection_rates(n, res.confidence)
        print(
            f"  share of books rejected at 5 % if the margin were exactly right (i.i.d. 1 %): "
            f"Kupiec {size['kupiec']:.4f} (exact), independence {size['ind']:.4f}, "
            f"conditional coverage {size['cc']:.4f} (Monte Carlo, 20,000 sequences)"
        )
    cols_book = [
        "books",
        "books_zero",
        "kupiec_book_rejected",
        "kupiec_book_share",
        "ind_rejected",
        "cc_rejected",
        "cc_share",
    ]
    cols_pool = ["n00", "n01", "n10", "n11", "pi01", "pi11", "p_ind_pooled"]
    cols_day = ["days", "exceedance_days", "day_mean_share", "day_se", "day_t", "day_p"]
    cols_bb = ["bb_mu", "bb_rho", "bb_rho_null", "bb_lr", "bb_p"]
    for by in (("method",), ("currency", "method")):
        dep = sel.dependence_tests(by)
        print(f"\nPer-book tests (rejected at 5 %), by {' and '.join(by)}")
        print(dep[[*by, *cols_book]].to_string(index=False))
        print(f"\nTransitions pooled over books (Christoffersen), by {' and '.join(by)}")
        print(dep[[*by, *cols_pool]].to_string(index=False))
        print(f"\nDay-clustered coverage (H0: mean day share = 1 %), by {' and '.join(by)}")
        print(dep[[*by, *cols_day]].to_string(index=False))
        print(f"\nBeta-binomial day effect, profile LR of mu = 1 %, by {' and '.join(by)}")
        print(dep[[*by, *cols_bb]].to_string(index=False))


def dependence_size(n_t: int = 20_000, n_bb: int = 400, days: int = 86, books: int = 108) -> None:
    """Size of the day-level coverage tests at 5 % under a beta-binomial null (1 %
    exceedances, within-day correlation ``rho``, ``books`` books a day, ``days`` days): the
    day-clustered t-test (``n_t`` samples) and the beta-binomial likelihood-ratio test
    (``n_bb`` samples, slower)."""
    from scipy import stats

    day = np.repeat(np.arange(days), books)
    for rho in (0.1, 0.27):
        s = (1 - rho) / rho
        rng = np.random.default_rng(7)
        rej_t = rej_low = rej_bb = 0
        for i in range(n_t):
            x = stats.betabinom.rvs(books, 0.01 * s, 0.99 * s, size=days, random_state=rng)
            ex = (np.arange(books)[None, :] < x[:, None]).ravel()
            dc = day_clustered_coverage(day, ex, 0.99)
            rej_t += bool(dc.p_value < 0.05)
            rej_low += bool(dc.p_value < 0.05 and dc.t_stat < 0)
            if i < n_bb:
                rej_bb += betabinomial_coverage(day, ex, 0.99).p_value < 0.05
        print(
            f"rho = {rho}: day-clustered t rejects {rej_t / n_t:.3f} (as too few: "
            f"{rej_low / n_t:.3f}) of {n_t}; beta-binomial LR rejects {rej_bb / n_bb:.3f} "
            f"of {n_bb}",
            flush=True,
        )


def _figure(records: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = records[(records["currency"] == "BTC") & (records["book"] == "short_straddle")]
    if r.empty:
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    loss = r[r["method"] == "skew"].set_index("as_of")["loss_coin"]
    ax.bar(loss.index, loss.to_numpy(), width=0.8, color="grey", label="realised 1-day loss")
    styles = {
        "skew_fhs": "C5",
        "skew": "C0",
        "skew_raw": "C4",
        "flat": "C2",
        "reference_pm": "C1",
        "standard": "C3",
    }
    for method, color in styles.items():
        m = r[r["method"] == method].set_index("as_of")["margin_coin"]
        ax.plot(m.index, m.to_numpy(), color=color, label=f"margin: {method}")
    ax.set_ylabel("BTC per straddle")
    ax.set_ylim(bottom=min(0.0, float(loss.min()) * 1.1))
    ax.set_title("Short 30-day ATM straddle (BTC): initial margin vs realised 1-day loss")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path = REPO / "docs" / "figures" / "margin_vs_loss.png"
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["speed", "backtest", "report", "size"])
    ap.add_argument("--currency", nargs="+", default=["BTC", "ETH"])
    ap.add_argument("--random", type=int, default=100)
    ap.add_argument("--calibration-random", type=int, default=20)
    ap.add_argument("--step", default="1D")
    ap.add_argument("--out", type=Path, default=Path("/tmp/margin_backtest"))
    ap.add_argument("--no-compare-marks", action="store_true", help="skip the MarkSurface row")
    ap.add_argument("--max-snapshots", type=int, default=None, help="first N snapshots only")
    a = ap.parse_args()
    if not PARQUET.exists():
        sys.exit(f"shared data not found: {PARQUET}")
    if a.what == "speed":
        speed()
    elif a.what == "report":
        report(a.out)
    elif a.what == "size":
        dependence_size()
    else:
        backtest(
            a.currency,
            a.random,
            a.calibration_random,
            a.step,
            a.out,
            not a.no_compare_marks,
            a.max_snapshots,
        )


if __name__ == "__main__":
    main()
