"""Speed of the surface fits on one full Deribit chain, peers side by side.

Usage::

    /work/venv/bin/python benchmarks/bench_svi.py [--repeat N] [--snapshot I] [--currency BTC]

Prints median CPU times (``time.process_time``: one core, after a warm-up run that compiles
the Numba kernels) of:

* ``volcal.fit_svi`` (arbitrage-free raw SVI per expiry) and its three stages,
  ``volcal.fit_ssvi``,
  ``volcal.fit_essvi`` and ``volcal.svi.repair_quotes``;
* a plain per-expiry raw SVI least-squares fit to mid vols with
  ``scipy.optimize.least_squares`` (no constraints, no arbitrage checks): the naive peer;
* evaluating the fitted smiles at every quote with QuantLib's ``SviSmileSection`` and with
  ``SviRaw.implied_vol`` (vectorised NumPy).
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
    out = fn()  # warm-up (Numba compilation, caches)
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return statistics.median(times), out


def svi_stages(chain: Any) -> list[tuple[str, Callable[[], Any]]]:
    """The stages of ``fit_svi``, each timed alone: quote selection, the smiles (backward
    sweep with calendar ceilings), residuals + arbitrage report + assembly."""
    from volcal.svi.slice_fit import SviSliceSettings, fit_svi_slice
    from volcal.svi.surface_fit import assemble_fit, prepare_slices
    from volcal.svi.svi_surface import SviSurface

    raw, selected, slices, kb = prepare_slices(chain, 2.0 / 365.0, 6, 0.005)
    settings = SviSliceSettings()

    def smiles() -> list[Any]:
        out: list[Any] = []
        ceilings: list[Any] = []
        for d in reversed(slices):
            r = fit_svi_slice(d, settings=settings, k_bounds=kb, ceilings=ceilings)
            out.append(r)
            ceilings = [(r.params, float(d.k[0]), float(d.k[-1])), *ceilings]
        return out[::-1]

    res = smiles()

    def assemble() -> Any:
        surf = SviSurface.from_slices(
            [d.t for d in slices], [r.params for r in res], [d.forward for d in slices], None
        )
        rows = [{"method": r.method} for r in res]
        return assemble_fit(
            "svi", chain, raw, selected, slices, surf, rows,
            [(r.params.m, r.params.sigma) for r in res], kb,
            converged=[r.converged for r in res], iterations=0, nfev=0, message="",
            start=time.perf_counter(), settings={},
        )  # fmt: skip

    return [
        ("  fit_svi stage: quote selection", lambda: prepare_slices(chain, 2 / 365, 6, 0.005)),
        ("  fit_svi stage: smiles (all expiries)", smiles),
        ("  fit_svi stage: residuals+arbitrage report", assemble),
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--snapshot", type=int, default=240)
    parser.add_argument("--currency", default="BTC")
    parser.add_argument("--svi-only", action="store_true", help="time fit_svi and its stages")
    args = parser.parse_args()
    raw = pd.read_parquet(PARQUET)
    snaps = sorted(raw["snapshot_file"].unique())
    chain = volcal.load_snapshot(raw[raw["snapshot_file"] == snaps[args.snapshot]], args.currency)
    assert isinstance(chain, volcal.OptionChain)
    sel = select_quotes(chain.quotes)
    used = sel[sel["used"]]
    print(
        f"{args.currency} chain at {chain.as_of}: {len(chain.quotes)} quotes, "
        f"{len(used)} two-sided OTM quotes used on {used['expiry'].nunique()} expiries; "
        f"median of {args.repeat} runs"
    )
    warnings.simplefilter("ignore")
    rows = []
    for name, fn in (
        ("volcal.fit_svi (arbitrage-free)", lambda: fit_svi(chain)),
        *svi_stages(chain),
        ("volcal.fit_ssvi", lambda: fit_ssvi(chain)),
        ("volcal.fit_essvi", lambda: fit_essvi(chain)),
        ("volcal.svi.repair_quotes (LP)", lambda: repair_quotes(chain)),
        ("scipy least_squares raw SVI (naive)", lambda: naive_svi(chain)),
    ):
        if args.svi_only and not ("fit_svi" in name or "naive" in name):
            continue
        dt, out = timed(fn, args.repeat)
        extra = ""
        if hasattr(out, "inside_share"):
            extra = (
                f"inside {out.inside_share:6.1%}  rmse_iv {out.rmse_iv:.4f}  "
                f"arbitrage-free {out.arbitrage.arbitrage_free}"
            )
        elif name.startswith("scipy"):
            ins = []
            for (t, p), d in zip(out, slices_from_quotes(sel), strict=True):
                v = p.implied_vol(d.k, t)
                ins.append((v >= d.iv_bid) & (v <= d.iv_ask))
            g_min = min(float(np.min(p.g(np.linspace(-3, 3, 2001)))) for _, p in out)
            extra = f"inside {np.concatenate(ins).mean():6.1%}  min g {g_min:.3g}"
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
    for name, fn in () if args.svi_only else peers:
        dt, _ = timed(fn, args.repeat)
        rows.append((name, dt, ""))
    for name, dt, extra in rows:
        print(f"  {name:<44} {dt * 1e3:9.1f} ms   {extra}")


if __name__ == "__main__":
    main()
