"""The compiled arbitrage report and SVI surface evaluation against plain NumPy references.

The references below are written out here, straight from the definitions (the running
envelope and time rules of ``SviSurface``'s docstring, ``g`` of Gatheral & Jacquier 2014
eq. 2.1 via ``butterfly_g``, the spreads of ``quote_arbitrage``'s docstring), one expiry and
one time at a time; the compiled code must give the same numbers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from volcal.surface import ForwardCurve, SmileSurface, butterfly_g
from volcal.svi import (
    EssviSurface,
    SsviParams,
    SsviSlice,
    SsviSurface,
    SviRaw,
    SviSurface,
    check_surface,
    quote_arbitrage,
)
from volcal.svi.grids import CHECK_SIZES, slice_grid

# Gatheral & Jacquier (2014), Example 3.1: a raw SVI slice with butterfly arbitrage
GJ_31 = SviRaw(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)


def _smiles() -> tuple[list[float], list[SviRaw]]:
    """Four expiries whose smiles cross (so the running envelope takes over in places)."""
    ts = [0.05, 0.2, 0.5, 1.0]
    ps = [
        SviRaw(a=0.002, b=0.04, rho=-0.3, m=0.01, sigma=0.08),
        SviRaw(a=0.01, b=0.05, rho=-0.5, m=0.05, sigma=0.15),
        SviRaw(a=0.02, b=0.03, rho=0.4, m=-0.1, sigma=0.2),  # below the next-shorter on a side
        SviRaw(a=0.05, b=0.08, rho=-0.2, m=0.0, sigma=0.3),
    ]
    return ts, ps


def _envelope_ref(ps: list[SviRaw], i: int, k: npt.NDArray[np.float64]) -> tuple[np.ndarray, ...]:
    w, w1, w2 = ps[0].derivatives(k)
    for p in ps[1 : i + 1]:
        wj, w1j, w2j = p.derivatives(k)
        take = wj > w
        w, w1, w2 = np.where(take, wj, w), np.where(take, w1j, w1), np.where(take, w2j, w2)
    return w, w1, w2


def _surface_ref(
    ts: list[float], ps: list[SviRaw], k: float, t: float
) -> tuple[float, float, float, float]:
    """(w, w', w'', dw/dt) at one point by the rules of the SviSurface docstring."""
    if not (np.isfinite(t) and t > 0):
        return (np.nan,) * 4
    kk = np.array([k])
    n = len(ts)
    i = int(np.searchsorted(ts, t, side="right")) - 1
    if i in (-1, n - 1):
        j = 0 if i == -1 else n - 1
        a = _envelope_ref(ps, j, kk)
        s = t / ts[j]
        return float(a[0][0] * s), float(a[1][0] * s), float(a[2][0] * s), float(a[0][0] / ts[j])
    a = _envelope_ref(ps, i, kk)
    b = _envelope_ref(ps, i + 1, kk)
    dt = ts[i + 1] - ts[i]
    lam = (t - ts[i]) / dt
    return (
        float(a[0][0] + lam * (b[0][0] - a[0][0])),
        float(a[1][0] + lam * (b[1][0] - a[1][0])),
        float(a[2][0] + lam * (b[2][0] - a[2][0])),
        float((b[0][0] - a[0][0]) / dt),
    )


def test_svi_surface_derivatives_match_envelope_reference() -> None:
    ts, ps = _smiles()
    surf = SviSurface.from_slices(ts, ps, [100.0] * 4)
    rng = np.random.default_rng(3)
    k = rng.uniform(-2.0, 2.0, 400)
    t = np.concatenate(
        [
            rng.uniform(0.001, 1.5, 380),
            np.array(ts * 4),  # at the expiries
            [0.0, -0.1, np.nan, np.inf],  # no surface there: NaN
        ]
    )
    got = np.stack(surf.derivatives(k, t))
    want = np.array([_surface_ref(ts, ps, float(a), float(b)) for a, b in zip(k, t, strict=True)]).T
    np.testing.assert_array_equal(got, want)  # same operations: the same bits
    # broadcasting and scalar t
    g2 = surf.derivatives(k[:5, None], t[None, :7])
    assert g2[0].shape == (5, 7)
    np.testing.assert_array_equal(g2[0][2, 3], _surface_ref(ts, ps, k[2], t[3])[0])
    np.testing.assert_array_equal(surf.total_variance(k[:3], ts[2]), [
        _surface_ref(ts, ps, float(x), ts[2])[0] for x in k[:3]
    ])  # fmt: skip


def _grid(surface: SmileSurface, k_lo: float, k_hi: float, local: list[tuple[float, float]]):
    ts = surface.expiries
    times = np.sort(np.concatenate([ts, 0.5 * (ts[:-1] + ts[1:])]))
    parts = [slice_grid(k_lo, k_hi, 0.0, sizes=CHECK_SIZES)]
    for t in ts:
        theta = float(surface.total_variance(0.0, t))
        parts.append(np.sqrt(max(theta, 0.0)) * np.linspace(-8.0, 8.0, CHECK_SIZES[1]))
    for m, sigma in local:
        parts.append(m + sigma * np.sinh(np.linspace(-4.0, 4.0, CHECK_SIZES[1])))
    return times, np.unique(np.concatenate(parts))


def _report_ref(surface: SmileSurface, k_lo: float, k_hi: float, local: list[tuple[float, float]]):
    """Per time: (g_min, k at min); per interval: (dw_min, k at min, violations)."""
    times, k = _grid(surface, k_lo, k_hi, local)
    bf, cal, prev = [], [], None
    for t in times:
        w, w1, w2, _ = surface.derivatives(k, t)
        g = butterfly_g(w, w1, w2, k)
        g = np.where(np.isfinite(g), g, -np.inf)
        bf.append((g.min(), k[np.argmin(g)]))
        if prev is not None:
            dw = w - prev
            cal.append((dw[np.argmin(dw)], k[np.argmin(dw)], int(np.sum(dw < 0))))
        prev = w
    return times, bf, cal


def _check_against_reference(surface: SmileSurface, local: list[tuple[float, float]], rtol: float):
    rep = check_surface(surface, -1.5, 1.2, local)
    times, bf, cal = _report_ref(surface, -1.5, 1.2, local)
    np.testing.assert_array_equal(rep.butterfly["t"].to_numpy(), times)
    np.testing.assert_array_equal(rep.butterfly["at_expiry"], np.isin(times, surface.expiries))
    np.testing.assert_allclose(rep.butterfly["g_min"], [b[0] for b in bf], rtol=rtol, atol=0)
    np.testing.assert_array_equal(rep.butterfly["k_at_min"], [b[1] for b in bf])
    if not cal:
        assert len(rep.calendar) == 0
        return rep
    np.testing.assert_array_equal(rep.calendar["t0"], times[:-1])
    np.testing.assert_array_equal(rep.calendar["t1"], times[1:])
    np.testing.assert_allclose(rep.calendar["dw_min"], [c[0] for c in cal], rtol=0, atol=0)
    np.testing.assert_array_equal(rep.calendar["k_at_min"], [c[1] for c in cal])
    np.testing.assert_array_equal(rep.calendar["n_violations"], [c[2] for c in cal])
    return rep


def test_check_surface_svi_matches_reference() -> None:
    ts, ps = _smiles()
    surf = SviSurface.from_slices(ts, ps, [100.0] * 4)
    # the compiled grid computes g from the smiles' (w, w', w'') in its own order
    rep = _check_against_reference(surf, [(p.m, p.sigma) for p in ps], rtol=1e-12)
    assert rep.calendar_free  # the running envelope is calendar-free by construction


def test_check_surface_flags_gatheral_jacquier_example() -> None:
    surf = SviSurface.from_slices([1.0], [GJ_31], [100.0])
    rep = _check_against_reference(surf, [(GJ_31.m, GJ_31.sigma)], rtol=1e-12)
    assert not rep.butterfly_free and rep.g_min < 0.0
    # the reported point is one where the slice's own g (params.py) is negative
    k_min = float(rep.butterfly["k_at_min"].iloc[0])
    assert float(GJ_31.g(k_min)) == pytest.approx(rep.g_min, rel=1e-12)
    assert len(rep.calendar) == 0 and rep.calendar_free


def test_check_surface_ssvi_and_essvi_match_reference() -> None:
    ts = (0.1, 0.4, 1.0)
    curve = ForwardCurve(ts, (100.0,) * 3, None)
    ssvi = SsviSurface(ts, (0.01, 0.035, 0.08), SsviParams(rho=-0.4, eta=1.2, gamma=0.4), curve)
    _check_against_reference(ssvi, [], rtol=0)
    slices = (
        SsviSlice(theta=0.01, rho=-0.5, psi=0.08),
        SsviSlice(theta=0.035, rho=-0.4, psi=0.12),
        SsviSlice(theta=0.08, rho=-0.3, psi=0.16),
    )
    essvi = EssviSurface(ts, slices, curve)
    assert essvi.nodes_arbitrage_free
    rep = _check_against_reference(essvi, [(s.to_raw().m, s.to_raw().sigma) for s in slices], 0)
    assert rep.arbitrage_free


@dataclass(frozen=True)
class _Shrinking(SmileSurface):
    """A flat-smile surface whose total variance falls between two times, and is zero at the
    last one (no density there): calendar violations, and g = -inf (w <= 0) for the report."""

    ts: tuple[float, ...] = (0.2, 0.5, 1.0)
    levels: tuple[float, ...] = (0.04, 0.02, 0.0)

    @property
    def expiries(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.ts)

    def forward(self, t: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return np.full(np.shape(t), 100.0)

    def derivatives(self, k: npt.ArrayLike, t: npt.ArrayLike) -> tuple[np.ndarray, ...]:
        kk, tt = np.broadcast_arrays(np.asarray(k, float), np.asarray(t, float))
        w = np.interp(tt, self.ts, self.levels) * (1.0 + 0.1 * kk * kk)
        return w, 0.2 * kk * w / (1.0 + 0.1 * kk * kk), np.zeros_like(w), np.zeros_like(w)


def test_check_surface_generic_surface_reports_calendar_violations() -> None:
    rep = _check_against_reference(_Shrinking(), [], rtol=0)
    assert not rep.calendar_free
    assert (rep.calendar["n_violations"] > 0).all()
    assert rep.butterfly["g_min"].iloc[-1] == -np.inf
    assert not rep.butterfly_free


# --- raw-quote spreads ---------------------------------------------------------------------
def _chain(rows: list[tuple[str, float, bool, float]], forward: float = 100.0) -> pd.DataFrame:
    """Quotes from (expiry date, strike, call, mid) with a zero spread, D = 1."""
    df = pd.DataFrame(rows, columns=["expiry", "strike", "call", "mid"])
    df["expiry"] = pd.to_datetime(df["expiry"], utc=True)
    df["bid_usd"] = df["ask_usd"] = df.pop("mid")
    df["forward"] = forward
    df["discount"] = 1.0
    return df


def test_quote_arbitrage_hand_built_violations() -> None:
    # F = 100, so c = C/F and kappa = K/F; expiry 2 lies below expiry 1 at K = 90, 100, 110
    q = _chain(
        [
            ("2026-02-01", 90.0, True, 12.0),
            ("2026-02-01", 100.0, True, 13.0),  # vertical: call price rises with strike
            ("2026-02-01", 110.0, True, 2.0),
            ("2026-02-01", 120.0, True, 1.5),  # butterfly at (100, 110, 120): 11 then 0.5 drop
            ("2026-03-01", 90.0, True, 11.0),
            ("2026-03-01", 110.0, True, 1.0),  # calendar: K=100 interpolates to 6.0 < 13.0
        ]
    )
    out = quote_arbitrage(q)
    kinds = out["kind"].tolist()
    assert kinds == ["vertical", "vertical", "butterfly", "calendar", "calendar", "calendar"]
    # normalised by F = 100: slopes (13 - 12)/10 = +0.1 > 0; (2 - 13)/10 = -1.1 < -1
    assert out["strikes"].iloc[0] == (90.0, 100.0)
    assert out["amount"].iloc[0] == pytest.approx(0.01)
    assert out["strikes"].iloc[1] == (100.0, 110.0)
    assert out["amount"].iloc[1] == pytest.approx(0.1 * 0.1)  # (1.1 - 1) * dkappa
    # the slope falls from +0.1 to -1.1 at K = 100 (butterfly 90/100/110) and rises after
    assert out["strikes"].iloc[2] == (90.0, 100.0, 110.0)
    assert out["amount"].iloc[2] == pytest.approx(1.2 * 0.1)
    # calendar: shorter-expiry quotes above the longer expiry's linear interpolation
    # at kappa 0.9 (12 > 11), 1.0 (13 > 6), 1.1 (2 > 1), in units of F
    assert [s[0] for s in out["strikes"].iloc[3:]] == pytest.approx([0.9, 1.0, 1.1])
    assert out["amount"].iloc[3:].to_numpy() == pytest.approx([0.01, 0.07, 0.01])
    assert (out["expiry"].iloc[3:] == pd.Timestamp("2026-02-01", tz="UTC")).all()
    assert isinstance(out["expiry"].dtype, pd.DatetimeTZDtype)
    # puts enter through parity: the same prices as puts give the same violations
    puts = q.copy()
    puts["call"] = False
    puts["bid_usd"] = puts["ask_usd"] = q["bid_usd"] - (100.0 - q["strike"])
    pd.testing.assert_frame_equal(quote_arbitrage(puts), out, check_exact=False, rtol=1e-12)
    # a clean chain has none, and an empty frame keeps its columns
    clean = _chain([("2026-02-01", 90.0, True, 12.0), ("2026-02-01", 110.0, True, 3.0)])
    none = quote_arbitrage(clean)
    assert len(none) == 0 and list(none.columns) == ["kind", "expiry", "strikes", "amount"]


def _quote_arbitrage_ref(q: pd.DataFrame, tol: float = 1e-12) -> list[tuple]:
    """Per expiry, one strike at a time, as the docstring states it."""
    q = q[q["used"]] if "used" in q.columns else q
    q = q[~np.isnan(0.5 * (q["bid_usd"] + q["ask_usd"]))]
    out: list[tuple] = []
    curves = []
    for e in sorted(q["expiry"].unique()):
        g = q[q["expiry"] == e]
        mid = 0.5 * (g["bid_usd"] + g["ask_usd"])
        c = np.where(g["call"], mid, mid + g["discount"] * (g["forward"] - g["strike"]))
        c = c / (g["discount"] * g["forward"]).to_numpy()
        kap = (g["strike"] / g["forward"]).to_numpy()
        ok = np.isfinite(c) & np.isfinite(kap)
        df = pd.DataFrame({"K": g["strike"].to_numpy()[ok], "c": c[ok], "x": kap[ok]})
        df = df.groupby("K", sort=True).mean()
        ks, cs, xs = df.index.to_numpy(), df["c"].to_numpy(), df["x"].to_numpy()
        curves.append((e, xs, cs))
        rows = []
        for i in range(len(ks) - 1):
            s = (cs[i + 1] - cs[i]) / (xs[i + 1] - xs[i])
            if s > tol:
                rows.append((0, i, ("vertical", e, (ks[i], ks[i + 1]), cs[i + 1] - cs[i])))
            if s < -1 - tol:
                amt = -(s + 1) * (xs[i + 1] - xs[i])
                rows.append((1, i, ("vertical", e, (ks[i], ks[i + 1]), amt)))
        for i in range(len(ks) - 2):
            s0 = (cs[i + 1] - cs[i]) / (xs[i + 1] - xs[i])
            s1 = (cs[i + 2] - cs[i + 1]) / (xs[i + 2] - xs[i + 1])
            if s1 - s0 < -tol:
                amt = -(s1 - s0) * (xs[i + 1] - xs[i])
                rows.append((2, i, ("butterfly", e, (ks[i], ks[i + 1], ks[i + 2]), amt)))
        out += [r[2] for r in sorted(rows, key=lambda r: (r[0], r[1]))]
    for (e0, x0, c0), (_, x1, c1) in itertools.pairwise(curves):
        if len(x1) < 2:
            continue
        for x, cc in zip(x0, c0, strict=True):
            if x1[0] <= x <= x1[-1] and cc - np.interp(x, x1, c1) > tol:
                out.append(("calendar", e0, (x,), cc - np.interp(x, x1, c1)))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quote_arbitrage_matches_reference_on_noisy_chains(seed: int) -> None:
    rng = np.random.default_rng(seed)
    from tests.svi.synthetic import svi_quotes
    from volcal.svi import select_quotes

    smiles = [(t, SviRaw(a=0.01 * t, b=0.1, rho=-0.3, m=0.0, sigma=0.2)) for t in (0.1, 0.3, 0.6)]
    q = select_quotes(svi_quotes(smiles, n=15))
    noise = 1.0 + 0.1 * rng.standard_normal(len(q))
    q["bid_usd"] = q["bid_usd"] * noise
    q["ask_usd"] = q["ask_usd"] * noise
    if seed == 2:
        q["used"] = True  # calls and puts at every strike: means per strike
    if seed == 3:
        q = q.drop(columns=["used"])
    got = quote_arbitrage(q)
    want = _quote_arbitrage_ref(q)
    assert len(want) >= 3 and "butterfly" in {w[0] for w in want}
    assert len(got) == len(want)
    for row, w in zip(got.itertuples(index=False), want, strict=True):
        assert row.kind == w[0] and row.expiry == w[1]
        np.testing.assert_allclose(row.strikes, w[2], rtol=1e-12)
        assert row.amount == pytest.approx(w[3], rel=1e-9, abs=1e-15)
