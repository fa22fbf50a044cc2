"""Speed of the surface fits on one full Deribit chain, peers side by side.

Usage::

    /work/venv/bin/python benchmarks/bench_svi.py [--repeat N] [--snapshot I] [--currency BTC]
        [--svi-only | --fits-only] [--every N]

Prints median CPU times (``time.process_time``: one core, after a warm-up run that compiles
the Numba kernels) of:

* ``volcal.fit_svi`` (arbitrage-free raw SVI per expiry), ``volcal.fit_ssvi`` and
  ``volcal.fit_essvi``, each with its stages timed alone (quote selection, calibration,
  residuals + arbitrage report + assembly, and of the last its dense-grid check and its
  raw-quote spread scan), and ``volcal.svi.repair_quotes``;
* a plain per-expiry raw SVI least-squares fit to mid vols with
  ``scipy.optimize.least_squares`` (no constraints, no arbitrage checks): the naive peer;
* evaluating the fitted smiles at every quote with QuantLib's ``SviSmileSection`` and with
  ``SviRaw.implied_vol`` (vectorised NumPy).

``--every N`` instead times the three fits (whole and by stage) and the naive peer on every
N-th snapshot of both coins and prints the median / p95 / max over those chains.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

import volcal
from volcal.svi import (
    SviRaw,
    fit_essvi,
    fit_ssvi,
    fit_svi,
    repair_quotes,
    select_quotes,
    slices_from_quotes,
)

REPO = Path(__file__).resolve().parents[1]
PARQUET = REPO.parent / "shared" / "data" / "deribit" / "deribit_chains_2025-12_2026-04.parquet"


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median CPU time (``time.process_time``, one core) of ``repeat`` runs after a warm-up."""
    dt, _, out = timed_min(fn, repeat)
    return dt, out


def timed_min(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(median, minimum) CPU time of ``repeat`` runs after a warm-up, and the last result."""
    out = fn()  # warm-up (Numba compilation, caches)
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return statistics.median(times), min(times), out


def stages(chain: Any, model: str) -> list[tuple[str, Callable[[], Any]]]:
    """The stages of ``fit_svi`` / ``fit_ssvi`` / ``fit_essvi``, each timed alone, as the fits
    run them: quote selection (``_prepare``: selection arrays, mid implied vols, slices), the
    calibration (SVI: the smiles, backward sweep with calendar ceilings; SSVI / eSSVI: the
    compiled calibration), and residuals + arbitrage report + assembly of the ``SurfaceFit``
    (``assemble_fit``), with its two largest parts also timed alone: the dense-grid butterfly /
    calendar check (``check_surface``) and the raw-quote spreads (``quote_arbitrage``)."""
    from volcal.surface import ForwardCurve
    from volcal.svi.arbitrage import check_surface, quote_arbitrage
    from volcal.svi.essvi import EssviSurface, calibrate_essvi
    from volcal.svi.slice_fit import SviSliceSettings, fit_svi_slice
    from volcal.svi.ssvi import SsviSettings, SsviSurface, calibrate_ssvi
    from volcal.svi.surface_fit import _prepare, assemble_fit
    from volcal.svi.svi_surface import SviSurface

    raw, sel, slices, kb = _prepare(chain, 2.0 / 365.0, 6, 0.005)
    ts = tuple(d.t for d in slices)
    curve = ForwardCurve(ts, tuple(d.forward for d in slices), None)

    def calibrate() -> tuple[Any, list[tuple[float, float]]]:
        if model == "svi":
            settings = SviSliceSettings()
            out: list[Any] = []
            ceilings: list[Any] = []
            for d in reversed(slices):
                r = fit_svi_slice(d, settings=settings, k_bounds=kb, ceilings=ceilings)
                out.append(r)
                ceilings = [(r.params, float(d.k[0]), float(d.k[-1])), *ceilings]
            params = [r.params for r in out[::-1]]
            surf: Any = SviSurface.from_slices(ts, params, [d.forward for d in slices], None)
            return surf, [(p.m, p.sigma) for p in params]
        if model == "ssvi":
            theta, sp, _, _ = calibrate_ssvi(slices, SsviSettings())
            surf = SsviSurface(ts, tuple(float(x) for x in theta), sp, curve)
            return surf, [(q.m, q.sigma) for q in (x.to_raw() for x in surf.slices())]
        fitted, _, _, _ = calibrate_essvi(slices, SsviSettings())
        surf = EssviSurface(ts, tuple(fitted), curve)
        return surf, [(q.m, q.sigma) for q in (x.to_raw() for x in fitted)]

    surface, local = calibrate()

    def assemble() -> Any:
        rows = [{"method": model} for _ in slices]
        return assemble_fit(
            model, chain, raw, sel, slices, surface, rows, local, kb,
            converged=[True] * len(slices), iterations=0, nfev=0, message="",
            start=time.perf_counter(), settings={},
        )  # fmt: skip

    fit = assemble()
    label = f"  fit_{model} stage:"
    calib = "smiles (all expiries)" if model == "svi" else "calibration"
    return [
        (f"{label} quote selection", lambda: _prepare(chain, 2 / 365, 6, 0.005)),
        (f"{label} {calib}", calibrate),
        (f"{label} residuals+arbitrage report", assemble),
        (
            "    of which dense-grid check (check_surface)",
            lambda: check_surface(surface, kb[0], kb[1], local, None),
        ),
        ("    of which raw-quote spreads (quote_arbitrage)", lambda: quote_arbitrage(fit.quotes)),
    ]


def naive_svi(chain: Any) -> list[tuple[float, SviRaw]]:
    """Per-expiry unconstrained least squares of raw SVI to mid vols (the naive peer)."""
    sl = slices_from_quotes(select_quotes(chain.quotes))
    out = []
    for d in sl:
        theta = max(d.atm_variance, 1e-6)

        def res(x: np.ndarray, d: Any = d) -> np.ndarray:
            a, b, rho, m, sig = x
            w = a + b * (rho * (d.k - m) + np.sqrt((d.k - m) ** 2 + sig * sig))
            return np.sqrt(np.maximum(w, 1e-12) / d.t) - d.iv_mid

        x0 = np.array([0.5 * theta, 0.1, -0.2, 0.0, 0.1])
        lo = np.array([-1.0, 0.0, -0.999, -2.0, 1e-4])
        hi = np.array([1.0, 5.0, 0.999, 2.0, 5.0])
        r = least_squares(res, x0, bounds=(lo, hi), method="trf")
        a, b, rho, m, sig = r.x
        out.append(
            (
                d.t,
                SviRaw(a=max(a, -b * sig * math.sqrt(1 - rho * rho)), b=b, rho=rho, m=m, sigma=sig),
            )
        )
    return out


def sample(raw: pd.DataFrame, snaps: list[Any], every: int, repeat: int) -> None:
    """Whole-fit and stage times of the three fits, and the naive least-squares peer, over
    every ``every``-th snapshot, BTC and ETH: median, p95 and max over the chains of each
    one's median CPU time (``repeat`` runs)."""
    times: dict[str, list[float]] = {}
    n = 0
    for cur in ("BTC", "ETH"):
        for snap in snaps[::every]:
            chain = volcal.load_snapshot(raw[raw["snapshot_file"] == snap], cur)
            n += 1
            dt, _ = timed(lambda chain=chain: naive_svi(chain), repeat)
            times.setdefault("scipy least_squares raw SVI (naive peer)", []).append(dt)
            for model, fit in (("svi", fit_svi), ("ssvi", fit_ssvi), ("essvi", fit_essvi)):
                dt, _ = timed(lambda fit=fit, chain=chain: fit(chain), repeat)
                times.setdefault(f"volcal.fit_{model} (whole fit)", []).append(dt)
                for name, fn in stages(chain, model):
                    dt, _ = timed(fn, repeat)
                    times.setdefault(name, []).append(dt)
                if model != "svi":
                    a = times[f"  fit_{model} stage: quote selection"][-1]
                    b = times[f"  fit_{model} stage: residuals+arbitrage report"][-1]
                    times.setdefault(f"  fit_{model}: selection + report", []).append(a + b)
            a = times["  fit_svi stage: quote selection"][-1]
            b = times["  fit_svi stage: residuals+arbitrage report"][-1]
            times.setdefault("  fit_svi: selection + report", []).append(a + b)
    print(f"{n} chains (BTC + ETH, every {every}-th snapshot); CPU ms per chain, median of")
    print(f"{repeat} runs each: median / p95 / max over the chains")
    for name, v in times.items():
        q = np.percentile(np.asarray(v) * 1e3, [50, 95, 100])
        print(f"  {name:<48} {q[0]:7.2f} / {q[1]:7.2f} / {q[2]:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--snapshot", type=int, default=240)
    parser.add_argument("--currency", default="BTC")
    parser.add_argument("--svi-only", action="store_true", help="time fit_svi and its stages")
    parser.add_argument(
        "--fits-only", action="store_true", help="time the three fits and their stages only"
    )
    parser.add_argument(
        "--every",
        type=int,
        default=0,
        help="instead: stage times over every N-th snapshot, BTC and ETH (median / p95 / max)",
    )
    args = parser.parse_args()
    raw = pd.read_parquet(PARQUET)
    snaps = sorted(raw["snapshot_file"].unique())
    if args.every:
        warnings.simplefilter("ignore")
        sample(raw, snaps, args.every, args.repeat)
        return
    chain = volcal.load_snapshot(raw[raw["snapshot_file"] == snaps[args.snapshot]], args.currency)
    assert isinstance(chain, volcal.OptionChain)
    sel = select_quotes(chain.quotes)
    used = sel[sel["used"]]
    print(
        f"{args.currency} chain at {chain.as_of}: {len(chain.quotes)} quotes, "
        f"{len(used)} two-sided OTM quotes used on {used['expiry'].nunique()} expiries; "
        f"CPU ms, median (and minimum) of {args.repeat} runs"
    )
    warnings.simplefilter("ignore")
    rows = []
    svi_only = args.svi_only
    tagged: list[tuple[str, str, Callable[[], Any]]] = [
        ("svi", "volcal.fit_svi (arbitrage-free)", lambda: fit_svi(chain)),
        *(("svi", n, f) for n, f in stages(chain, "svi")),
        ("ssvi", "volcal.fit_ssvi", lambda: fit_ssvi(chain)),
        *(("ssvi", n, f) for n, f in ([] if svi_only else stages(chain, "ssvi"))),
        ("essvi", "volcal.fit_essvi", lambda: fit_essvi(chain)),
        *(("essvi", n, f) for n, f in ([] if svi_only else stages(chain, "essvi"))),
        ("repair", "volcal.svi.repair_quotes (LP)", lambda: repair_quotes(chain)),
        ("naive", "scipy least_squares raw SVI (naive)", lambda: naive_svi(chain)),
    ]
    for tag, name, fn in tagged:
        if svi_only and tag not in ("svi", "naive"):
            continue
        if args.fits_only and tag not in ("svi", "ssvi", "essvi"):
            continue
        dt, dt_min, out = timed_min(fn, args.repeat)
        extra = f"(min {dt_min * 1e3:6.1f})  "
        if hasattr(out, "inside_share"):
            extra += (
                f"inside {out.inside_share:6.1%}  rmse_iv {out.rmse_iv:.4f}  "
                f"arbitrage-free {out.arbitrage.arbitrage_free}"
            )
        elif name.startswith("scipy"):
            ins = []
            for (t, p), d in zip(out, slices_from_quotes(sel), strict=True):
                v = p.implied_vol(d.k, t)
                ins.append((v >= d.iv_bid) & (v <= d.iv_ask))
            g_min = min(float(np.min(p.g(np.linspace(-3, 3, 2001)))) for _, p in out)
            extra += f"inside {np.concatenate(ins).mean():6.1%}  min g {g_min:.3g}"
        rows.append((name, dt, extra))
    fit = fit_svi(chain)
    svi_params = list(fit.surface.params)  # type: ignore[attr-defined]
    ts = list(fit.surface.t)  # type: ignore[attr-defined]
    import QuantLib as ql

    strikes = [
        used[used["expiry"] == e]["strike"].to_numpy() for e in sorted(used["expiry"].unique())
    ]
    fwd = [float(f) for f in fit.params["forward"]]

    def eval_ql() -> float:
        s = 0.0
        for p, t, f, ks in zip(svi_params, ts, fwd, strikes, strict=True):
            sec = ql.SviSmileSection(t, f, [p.a, p.b, p.sigma, p.rho, p.m])
            for kk in ks:
                s += sec.volatility(float(kk))
        return s

    def eval_np() -> float:
        s = 0.0
        for p, t, f, ks in zip(svi_params, ts, fwd, strikes, strict=True):
            s += float(np.sum(p.implied_vol(np.log(ks / f), t)))
        return s

    peers = (
        ("QuantLib SviSmileSection vols at the quotes", eval_ql),
        ("SviRaw.implied_vol at the quotes (NumPy)", eval_np),
    )
    for name, fn in () if args.svi_only or args.fits_only else peers:
        dt, dt_min, _ = timed_min(fn, args.repeat)
        rows.append((name, dt, f"(min {dt_min * 1e3:6.1f})  "))
    for name, dt, extra in rows:
        print(f"  {name:<48} {dt * 1e3:7.1f} ms {extra}")


if __name__ == "__main__":
    main()
