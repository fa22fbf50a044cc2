"""Extended SSVI (eSSVI, Hendriks & Martini 2019): one SSVI smile per expiry with its own
correlation, calibrated slice by slice (Corbetta, Cohort, Laachir & Martini 2019).

Each expiry ``t_i`` has an SSVI slice :class:`~volcal.svi.ssvi.SsviSlice` ``(theta_i, rho_i,
psi_i)`` with ``psi = theta phi`` and ``chi = rho psi`` (notation of :mod:`volcal.svi.ssvi`):
``w = (theta + chi k + R)/2``, ``R = sqrt(psi**2 k**2 + 2 chi theta k + theta**2)``.

Constraints (all imposed by :func:`fit_essvi` through a box-constrained reparametrisation):

* **butterfly**, per slice (GJ 2014, Theorem 4.2): ``psi (1 + |rho|) < 4`` and
  ``psi**2 (1 + |rho|) <= 4 theta``.
* **calendar**, between consecutive slices 1 -> 2 (sufficient):

      psi_2 >= psi_1,   |chi_2 - chi_1| <= psi_2 - psi_1,   theta_2 / theta_1 >= psi_2 / psi_1

  i.e. both asymptotic wing slopes ``psi (1 +- rho)/2`` non-decreasing and ``phi = psi/theta``
  non-increasing (Hendriks & Martini 2019 give the necessary and sufficient condition; this
  is the sufficient form used for sequential calibration by Corbetta et al. 2019).
  *Proof* (ours, also in ``docs/svi.md``): at fixed ``k``, ``w`` is the positive root of
  ``4 w**2 - 4 w (theta + chi k) - (psi**2 - chi**2) k**2``, so ``w_2 >= w_1`` iff
  ``H(k) = 4 w_1 (theta_2 - theta_1 + (chi_2 - chi_1) k) + (psi_2**2 - chi_2**2 - psi_1**2 +
  chi_1**2) k**2 >= 0``. ``w`` is non-decreasing in ``theta`` (``dw/dtheta in [0, 1]``), so
  take ``theta_2 = theta_1 psi_2/psi_1``; with ``chi_2 - chi_1 = delta (psi_2 - psi_1)``,
  ``|delta| <= 1``, and units ``theta_1 = psi_1 = 1`` one finds
  ``H / (psi_2 - psi_1) >= ((1 + R_1)**2 + k**2)/2 + delta k (1 + R_1) >= (1 + R_1 - |k|)**2/2
  >= 0``.

Surface rules (Corbetta et al. 2019, section 4): ``theta``, ``psi`` and ``chi`` are linear in
``t`` between expiries (so ``psi`` and ``chi`` are linear in ``theta``: every pair of
intermediate slices satisfies the calendar condition, and ``psi (psi + |chi|) <= 4 theta``
holds on the segment because ``psi + |chi|`` is convex and non-decreasing); before the first
expiry all three scale with ``t / t_1`` (constant ``rho`` and ``phi``); after the last,
``theta = theta_n t / t_n`` with ``psi, chi`` constant.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from volcal.errors import ParameterError
from volcal.surface import ForwardCurve
from volcal.svi.quotes import SliceQuotes
from volcal.svi.ssvi import (
    SsviSettings,
    SsviSlice,
    XssviSurfaceBase,
    _Quotes,
    _slice_row,
    _solve,
    _spot,
    _warn,
    xssvi_parts,
)

__all__ = ["EssviSurface", "essvi_calendar_free", "fit_essvi"]

FloatArray = npt.NDArray[np.float64]


def essvi_calendar_free(s1: SsviSlice, s2: SsviSlice, rtol: float = 1e-12) -> bool:
    """The sufficient no-calendar-arbitrage condition between slices ``s1`` (shorter) and
    ``s2`` (longer): ``psi_2 >= psi_1``, ``|rho_2 psi_2 - rho_1 psi_1| <= psi_2 - psi_1``,
    ``theta_2 psi_1 >= theta_1 psi_2`` (see the module docstring), to relative ``rtol``."""
    d = s2.psi - s1.psi
    tol = rtol * max(s1.psi, s2.psi)
    return (
        d >= -tol
        and abs(s2.rho * s2.psi - s1.rho * s1.psi) <= d + tol
        and s2.theta * s1.psi >= s1.theta * s2.psi * (1.0 - rtol)
    )


@dataclass(frozen=True, eq=False)
class EssviSurface(XssviSurfaceBase):
    """eSSVI surface: SSVI slices at the expiries, interpolated as in the module docstring.

    Free of static arbitrage when every slice is :attr:`~SsviSlice.butterfly_free` and
    consecutive slices satisfy :func:`essvi_calendar_free` (:attr:`nodes_arbitrage_free`).

    Attributes
    ----------
    t:
        Years to each calibrated expiry (ACT/365F), strictly increasing.
    slices:
        One :class:`~volcal.svi.ssvi.SsviSlice` per expiry.
    forward_curve:
        Forwards (:class:`~volcal.surface.ForwardCurve`).
    """

    t: tuple[float, ...]
    slices: tuple[SsviSlice, ...]
    forward_curve: ForwardCurve

    def __post_init__(self) -> None:
        ts = np.asarray(self.t, dtype=float)
        if ts.size == 0 or ts.size != len(self.slices):
            raise ParameterError("EssviSurface needs one slice per expiry (at least one)")
        if np.any(np.diff(ts) <= 0) or ts[0] <= 0:
            raise ParameterError(f"EssviSurface expiries must be positive and increasing: {ts}")

    @property
    def expiries(self) -> FloatArray:
        return np.asarray(self.t, dtype=float)

    @property
    def nodes_arbitrage_free(self) -> bool:
        """Every slice butterfly-free and every consecutive pair calendar-free."""
        return all(s.butterfly_free for s in self.slices) and all(
            essvi_calendar_free(a, b)
            for a, b in zip(self.slices[:-1], self.slices[1:], strict=True)
        )

    def curves(
        self, t: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        ts = self.expiries
        tn = np.concatenate([[0.0], ts])
        seg = np.clip(np.searchsorted(tn, t, side="right") - 1, 0, tn.size - 2)
        after = t > ts[-1]
        out: list[FloatArray] = []
        slopes: list[FloatArray] = []
        for name in ("theta", "psi", "chi"):
            if name == "chi":
                vals = np.array([s.rho * s.psi for s in self.slices])
            else:
                vals = np.array([getattr(s, name) for s in self.slices])
            vn = np.concatenate([[0.0], vals])
            slope = (vn[seg + 1] - vn[seg]) / (tn[seg + 1] - tn[seg])
            v = vn[seg] + slope * (t - tn[seg])
            if name == "theta":
                v = np.where(after, vals[-1] * t / ts[-1], v)
                slope = np.where(after, vals[-1] / ts[-1], slope)
            else:
                v = np.where(after, vals[-1], v)
                slope = np.where(after, 0.0, slope)
            out.append(v)
            slopes.append(slope)
        return out[0], out[1], out[2], slopes[0], slopes[1], slopes[2]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EssviSurface):
            return NotImplemented
        return (self.t, self.slices, self.forward_curve) == (
            other.t,
            other.slices,
            other.forward_curve,
        )

    def __hash__(self) -> int:
        return hash((self.t, self.slices, self.forward_curve))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form."""
        return {
            "t": list(self.t),
            "slices": [asdict(s) for s in self.slices],
            "forwards": list(self.forward_curve.forwards),
            "spot": self.forward_curve.spot,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EssviSurface:
        """Inverse of :meth:`to_dict`."""
        curve = ForwardCurve(tuple(data["t"]), tuple(data["forwards"]), data["spot"])
        return cls(tuple(data["t"]), tuple(SsviSlice(**s) for s in data["slices"]), curve)


# --- calibration ---------------------------------------------------------------------------


class _SliceFit:
    """One expiry's eSSVI fit in box coordinates (internal).

    Without a previous slice ``x = (rho, s, e)``: ``psi = s L/(1 + |rho|)``,
    ``theta = psi**2 (1 + |rho|)/4 + e``. With a previous slice ``p``, ``x = (delta, s, e)``:
    ``psi = psi_p + D``, ``chi = chi_p + delta D`` with ``D = s D_max(delta)`` (``D_max`` keeps
    ``psi + |chi| <= L``), ``theta = max(theta_p psi/psi_p, psi (psi + |chi|)/4) + e``. Every
    box point satisfies the butterfly and calendar conditions; ``L = 4 (1 - margin)``.
    """

    def __init__(self, d: SliceQuotes, prev: SsviSlice | None, settings: SsviSettings) -> None:
        self.q = _Quotes([d], settings)
        self.prev = prev
        self.cap = 4.0 * (1.0 - settings.psi_margin)
        if prev is None:
            self.lo = np.array([-0.999, 1e-6, 0.0])
            self.hi = np.array([0.999, 1.0, np.inf])
        else:
            self.lo = np.array([-1.0, 0.0, 0.0])
            self.hi = np.array([1.0, 1.0, np.inf])

    def d_max(self, delta: float) -> float:
        p = self.prev
        assert p is not None
        chi_p = p.rho * p.psi
        room = []
        if 1.0 + delta > 0:
            room.append((self.cap - p.psi - chi_p) / (1.0 + delta))
        if 1.0 - delta > 0:
            room.append((self.cap - p.psi + chi_p) / (1.0 - delta))
        return max(0.0, min(room)) if room else 0.0

    def unpack(self, x: FloatArray) -> tuple[float, float, float]:
        """``(theta, psi, chi)`` of box point ``x``."""
        if self.prev is None:
            rho, s, e = float(x[0]), float(x[1]), float(x[2])
            psi = s * self.cap / (1.0 + abs(rho))
            theta = psi * psi * (1.0 + abs(rho)) / 4.0 + e
            return theta, psi, rho * psi
        p = self.prev
        delta, s, e = float(x[0]), float(x[1]), float(x[2])
        dd = s * self.d_max(delta)
        psi = p.psi + dd
        chi = p.rho * p.psi + delta * dd
        # |chi| < psi holds: |chi_p| < psi_p and |delta| <= 1
        theta = max(p.theta * psi / p.psi, psi * (psi + abs(chi)) / 4.0) + e
        return theta, psi, chi

    def pack(self, theta: float, psi: float, chi: float) -> FloatArray:
        """A box point near ``(theta, psi, chi)`` (projection onto the admissible set)."""
        if self.prev is None:
            rho = min(max(chi / psi, -0.999), 0.999)
            q = 1.0 + abs(rho)
            s = min(max(psi * q / self.cap, 1e-6), 1.0)
            psi = s * self.cap / q
            return np.array([rho, s, max(theta - psi * psi * q / 4.0, 0.0)])
        p = self.prev
        dd = max(psi - p.psi, 0.0)
        delta = min(max((chi - p.rho * p.psi) / dd, -1.0), 1.0) if dd > 0 else 0.0
        dm = self.d_max(delta)
        s = min(dd / dm, 1.0) if dm > 0 else 0.0
        th0, _, _ = self.unpack(np.array([delta, s, 0.0]))
        return np.array([delta, s, max(theta - th0, 0.0)])

    def w(self, x: FloatArray) -> FloatArray:
        theta, psi, chi = self.unpack(x)
        return xssvi_parts(self.q.k, theta, psi, chi)[0]

    def residuals(self, x: FloatArray) -> FloatArray:
        return self.q.residuals(self.w(x))


def _fit_one(
    d: SliceQuotes, prev: SsviSlice | None, settings: SsviSettings
) -> tuple[SsviSlice, bool, int, str]:
    """Best admissible slice for ``d`` given the previous one: first the slice alone (only
    butterfly constraints); if that violates the calendar condition, the constrained fit from
    its projection and from a few other starts."""
    free = _SliceFit(d, None, settings)
    theta0 = max(d.atm_variance, 1e-8)
    starts = []
    for rho in settings.rho_starts:
        psi0 = min(2.0 * math.sqrt(theta0), 0.5 * free.cap / (1.0 + abs(rho)))
        starts.append(free.pack(theta0, psi0, rho * psi0))
    best_free, nfev = _solve(free.residuals, starts, free.lo, free.hi, settings.max_nfev)
    th, ps, ch = free.unpack(best_free.x)
    cand = SsviSlice(theta=th, rho=ch / ps, psi=ps)
    if prev is None or essvi_calendar_free(prev, cand, rtol=0.0):
        return cand, best_free.success, nfev, best_free.message
    con = _SliceFit(d, prev, settings)
    starts = [con.pack(th, ps, ch)]
    for delta in (-0.5, 0.0, 0.5):
        starts.append(np.array([delta, 0.05, max(theta0 - prev.theta * 1.0, 0.0)]))
    best, n2 = _solve(con.residuals, starts, con.lo, con.hi, settings.max_nfev)
    th, ps, ch = con.unpack(best.x)
    return SsviSlice(theta=th, rho=ch / ps, psi=ps), best.success, nfev + n2, best.message


def calibrate_essvi(
    slices: Sequence[SliceQuotes], settings: SsviSettings
) -> tuple[list[SsviSlice], list[bool], int, str]:
    """Sequential (Corbetta et al. 2019) eSSVI calibration, shortest expiry first."""
    out: list[SsviSlice] = []
    ok: list[bool] = []
    nfev = 0
    message = ""
    prev: SsviSlice | None = None
    for d in slices:
        sl, success, n, message = _fit_one(d, prev, settings)
        out.append(sl)
        ok.append(success)
        nfev += n
        prev = sl
    return out, ok, nfev, message


def fit_essvi(
    chain: Any,
    *,
    min_t: float = 2.0 / 365.0,
    min_quotes: int = 6,
    spread_floor: float = 0.005,
    settings: SsviSettings | None = None,
) -> Any:
    """Fit an eSSVI surface to a chain, slice by slice, free of static arbitrage.

    Parameters
    ----------
    chain:
        An ``OptionChain`` (anything with a ``.quotes`` DataFrame) or a quotes DataFrame with
        the columns of ``docs/conventions.md``.
    min_t, min_quotes, spread_floor:
        Quote selection (:func:`volcal.svi.quotes.select_quotes`).
    settings:
        :class:`~volcal.svi.ssvi.SsviSettings`.

    Returns
    -------
    SurfaceFit
        ``model = "essvi"``; ``surface`` is an :class:`EssviSurface`; ``params`` has one row
        per expiry with ``theta, rho, psi, phi`` and the equivalent raw SVI ``a, b, m, sigma``.

    Raises
    ------
    CalibrationError
        When no expiry has enough usable quotes.
    """
    from volcal.svi.surface_fit import assemble_fit, prepare_slices

    start = time.perf_counter()
    s = settings or SsviSettings()
    raw, selected, slices, k_bounds = prepare_slices(chain, min_t, min_quotes, spread_floor)
    fitted, ok, nfev, message = calibrate_essvi(slices, s)
    surface = EssviSurface(
        tuple(d.t for d in slices),
        tuple(fitted),
        ForwardCurve(tuple(d.t for d in slices), tuple(d.forward for d in slices), _spot(raw)),
    )
    rows = [_slice_row(sv, c, "essvi-trf") for sv, c in zip(fitted, ok, strict=True)]
    fit = assemble_fit(
        "essvi",
        chain,
        raw,
        selected,
        slices,
        surface,
        rows,
        [(p.m, p.sigma) for p in (x.to_raw() for x in fitted)],
        k_bounds,
        converged=ok,
        iterations=nfev,
        nfev=nfev,
        message=message,
        start=start,
        settings=asdict(s)
        | {"min_t": min_t, "min_quotes": min_quotes, "spread_floor": spread_floor},
    )
    _warn(fit)
    return fit
