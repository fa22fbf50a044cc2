"""Implied-vol benchmark: volcal against its peers, side by side in one run.

    python benchmarks/bench_implied_vol.py            # 1 000 000 options per set
    python benchmarks/bench_implied_vol.py --n 200000 --peer-n 20000

For each set ("normal": vol 0.1-1.5, t 1 day-2 y, strikes within +-3 sd; "hard": t 1 hour-7 days,
vol 0.05-5, strikes within +-8 sd, out-of-the-money premiums >= 1e-17 of the forward) it prints
CPU microseconds per option (median of repeats, one core, process time so that other load on
the machine does not count), the max relative vol error over the
options whose price determines the vol to 1e-12 (one ulp of price moves the vol < 1e-13), and
the failure count (NaN, or error > 1e-12 relative, among those).

Prices come from ``volcal.black_price`` (itself checked against 40-digit mpmath in the tests).
Pure-Python peers (py_lets_be_rational, vollib, QuantLib's blackFormulaImpliedStdDev called from
Python) run on a random subsample of ``--peer-n`` options: per-option time and error rates are
per option and comparable; their absolute failure counts are scaled to the full set.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

import volcal
from volcal.black import black_greeks

Arr = npt.NDArray[np.float64]


Set = tuple[Arr, Arr, Arr, Arr, npt.NDArray[np.bool_]]


def make_set(kind: str, n: int, seed: int = 2026) -> Set:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        t = np.exp(rng.uniform(np.log(1 / 365), np.log(2.0), n))
        vol = rng.uniform(0.1, 1.5, n)
        z = rng.uniform(-3.0, 3.0, n)
    else:
        t = np.exp(rng.uniform(np.log(1 / 8760), np.log(7 / 365), n))
        vol = np.exp(rng.uniform(np.log(0.05), np.log(5.0), n))
        z = rng.uniform(-8.0, 8.0, n)
    f = np.full(n, 100.0)
    k = f * np.exp(z * vol * np.sqrt(t))
    call = rng.random(n) < 0.5
    if kind == "hard":
        otm = np.asarray(volcal.black_price(f, k, t, vol, k > f))
        keep = otm >= 1e-17 * f
        f, k, t, vol, call = f[keep], k[keep], t[keep], vol[keep], call[keep]
    return f, k, t, vol, call


def naive_newton(price: Arr, f: Arr, k: Arr, t: Arr, call: npt.NDArray[np.bool_]) -> Arr:
    """Textbook vectorised Newton on the price, started at the inflection point of the price in
    vol, sqrt(2 |ln(F/K)| / t) (0.5 at the money), from where it converges monotonically."""
    from scipy.special import ndtr

    sign = np.where(call, 1.0, -1.0)
    sqrt_t = np.sqrt(t)
    vol = np.sqrt(2 * np.abs(np.log(f / k)) / t)
    vol = np.where(vol > 0, vol, 0.5)
    with np.errstate(all="ignore"):
        for _ in range(50):
            s = vol * sqrt_t
            d1 = np.log(f / k) / s + 0.5 * s
            d2 = d1 - s
            model = sign * (f * ndtr(sign * d1) - k * ndtr(sign * d2))
            vega = f * np.exp(-0.5 * d1 * d1) / np.sqrt(2 * np.pi) * sqrt_t
            step = (model - price) / vega
            vol = vol - step
            if np.all(np.abs(step) < 1e-15 * np.abs(vol)):
                break
    return vol


def timed(fn: Callable[[], Arr], repeats: int) -> tuple[float, Arr]:
    times = []
    out = fn()
    for _ in range(repeats):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return statistics.median(times), out


def run_set(
    kind: str,
    args: argparse.Namespace,
    peers: dict[str, Callable[[Arr, Arr, Arr, Arr, npt.NDArray[np.bool_]], Arr]],
    rng: np.random.Generator,
) -> None:
    """Time and score every method on one set and print its rows."""
    f, k, t, vol, call = make_set(kind, args.n)
    price = np.asarray(volcal.black_price(f, k, t, vol, call))
    vega = np.asarray(black_greeks(f, k, t, vol, call).vega)
    with np.errstate(divide="ignore"):
        informative = np.spacing(price) / vega / vol < 1e-13

    def row(name: str, idx: npt.NDArray[np.intp] | slice, seconds: float, got: Arr) -> None:
        n = len(got)
        inf = informative[idx]
        err = np.abs(got / vol[idx] - 1.0)
        bad = inf & ~(err <= 1e-12)
        max_err = float(np.nanmax(np.where(inf, err, 0.0))) if inf.any() else float("nan")
        if np.isnan(err[inf]).any():
            max_err = float("nan")
        fails = int(bad.sum())
        scale = price.size / n
        fails_s = f"{fails}" if scale == 1 else f"~{fails * scale:.0f}"
        print(
            f"{kind:<7} {name:<36} {n:>9} {seconds / n * 1e6:>10.3f} {max_err:>12.2e} {fails_s:>9}"
        )

    sec, got = timed(lambda: np.asarray(volcal.implied_vol(price, f, k, t, call)), args.repeats)
    row("volcal.implied_vol", slice(None), sec, got)
    sec, got = timed(lambda: naive_newton(price, f, k, t, call), max(1, args.repeats // 2))
    row("naive vectorised Newton (NumPy)", slice(None), sec, got)
    idx = rng.choice(price.size, size=min(args.peer_n, price.size), replace=False)
    for name, fn in peers.items():
        a = (price[idx], f[idx], k[idx], t[idx], call[idx])
        sec, got = timed(lambda fn=fn, a=a: fn(*a), 1)
        row(name, idx, sec, got)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000, help="options per set (volcal, Newton)")
    ap.add_argument("--peer-n", type=int, default=20_000, help="subsample for Python-loop peers")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core

    peers: dict[str, Callable[[Arr, Arr, Arr, Arr, npt.NDArray[np.bool_]], Arr]] = {}
    try:
        import py_lets_be_rational as plbr

        def run_plbr(p: Arr, f: Arr, k: Arr, t: Arr, c: npt.NDArray[np.bool_]) -> Arr:
            fn = plbr.implied_volatility_from_a_transformed_rational_guess
            return np.array([fn(*a, 1 if ci else -1) for *a, ci in zip(p, f, k, t, c, strict=True)])

        peers["py_lets_be_rational"] = run_plbr
    except ImportError:
        print("py_lets_be_rational not installed (pip install -e '.[bench]')", file=sys.stderr)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from vollib.black.implied_volatility import implied_volatility as vollib_iv

        def run_vollib(p: Arr, f: Arr, k: Arr, t: Arr, c: npt.NDArray[np.bool_]) -> Arr:
            out = np.empty(p.size)
            for i in range(p.size):
                try:
                    out[i] = vollib_iv(p[i], f[i], k[i], 0.0, t[i], "c" if c[i] else "p")
                except Exception:
                    out[i] = np.nan
            return out

        peers["vollib"] = run_vollib
    except ImportError:
        print("vollib not installed (pip install -e '.[bench]')", file=sys.stderr)
    import QuantLib as ql

    def run_ql(p: Arr, f: Arr, k: Arr, t: Arr, c: npt.NDArray[np.bool_]) -> Arr:
        out = np.empty(p.size)
        call, put = ql.Option.Call, ql.Option.Put
        for i in range(p.size):
            try:
                std = ql.blackFormulaImpliedStdDev(call if c[i] else put, k[i], f[i], p[i])
                out[i] = std / math.sqrt(t[i])
            except RuntimeError:
                out[i] = np.nan
        return out

    peers["QuantLib blackFormulaImpliedStdDev"] = run_ql

    rng = np.random.default_rng(7)
    header = (
        f"{'set':<7} {'method':<36} {'n':>9} {'us/option':>10} {'max rel err':>12} {'failures':>9}"
    )
    print(header)
    print("-" * len(header))
    for kind in ("normal", "hard"):
        run_set(kind, args, peers, rng)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
