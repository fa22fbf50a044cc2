"""Extended SSVI (eSSVI, Hendriks & Martini 2019): one SSVI smile per expiry with its own
correlation, calibrated slice by slice (Corbetta, Cohort, Laachir & Martini 2019).

Each expiry ``t_i`` has an SSVI slice :class:`~volcal.svi.ssvi.SsviSlice` ``(theta_i, rho_i,
psi_i)`` with ``psi = theta phi`` and ``chi = rho psi`` (notation of :mod:`volcal.svi.ssvi`):
``w = (theta + chi k + R)/2``, ``R = sqrt(psi**2 k**2 + 2 chi theta k + theta**2)``; ``k =
ln(K/F)``, ``w = sigma**2 t`` (``t`` in years, ACT/365F).

**Ray coordinates.** Write ``u = psi + chi = psi (1 + rho)`` and ``v = psi - chi`` (twice the
asymptotic slopes of ``w`` for ``k -> +-inf``). On the ray ``k = x w`` through the origin the
slice's defining quadratic ``4 w**2 - 4 w (theta + chi k) - (psi**2 - chi**2) k**2 = 0`` gives
``w = 1/h(x)`` with

    h(x) = (2 - u x)(2 + v x) / (4 theta) = A - B x - C x**2 / 4,
    A = 1/theta,  B = chi/theta,  C = (psi**2 - chi**2)/theta,

for ``x`` in ``I = (-2/v, 2/u)`` (where ``h > 0``); every ray in ``I`` meets the smile once, rays
outside ``I`` lie below it, and beyond its crossing a ray lies above the smile (``w - w(x w)``
is concave in ``w``, negative at ``0``).

Constraints (imposed by :func:`fit_essvi`; every calibrated surface satisfies them):

* **butterfly**, per slice (Gatheral & Jacquier 2014, Theorem 4.2, sufficient):
  ``psi (1 + |rho|) < 4`` and ``psi**2 (1 + |rho|) <= 4 theta``; imposed through the box
  ``x = (rho, s, e)``: ``psi = s L/(1 + |rho|)``, ``theta = psi**2 (1 + |rho|)/4 + e``,
  ``|rho| <= 0.999``, ``0 < s <= 1``, ``e >= 0``, ``L = 4 (1 - 1e-6)``.
* **calendar**, between consecutive slices 1 -> 2, **necessary and sufficient**
  (:func:`essvi_calendar_free`; Hendriks & Martini 2019 state such a condition, Pasquazzi 2023
  corrects it in tangency cases; the form below is our own derivation in ray coordinates,
  tested against a dense-grid check of ``w_2 >= w_1``)::

      h_1(x) >= h_2(x)   for every x in [-2/v_2, 2/u_2]

  i.e. ``u_2 >= u_1`` and ``v_2 >= v_1`` (both wing slopes non-decreasing: the values at the
  two ends, where ``h_2 = 0``, are ``(1 - u_1/u_2)(1 + v_1/u_2)/theta_1`` and
  ``(1 + u_1/v_2)(1 - v_1/v_2)/theta_1``) and, when the quadratic ``h_1 - h_2`` is convex with
  its vertex inside the interval, a non-negative vertex value. *Proof.* ``w_2 >= w_1``
  everywhere iff the smile of 2 lies in the region above smile 1 iff every ray meets smile 2
  no closer to the origin than smile 1, i.e. ``1/h_2 >= 1/h_1`` on ``I_2`` and ``I_2`` inside
  ``I_1`` (a ray of ``I_2`` outside ``I_1`` meets smile 2 below smile 1); ``h_1 >= h_2 >= 0``
  on ``I_2`` gives both. It contains ``theta_2 >= theta_1`` (``x = 0``).
  The former sufficient condition (``psi_2 >= psi_1``, ``|chi_2 - chi_1| <= psi_2 - psi_1``,
  ``theta_2/theta_1 >= psi_2/psi_1``) implies this one.

Surface rules. Between two expiries ``A, B, C`` are linear in ``t`` (``h`` is linear in ``t``
at every ``x``: ``h_t = (1 - l) h_1 + l h_2``); each intermediate ``h_t`` is again a slice
(``C > 0``). Calendar: for ``t < t'`` on the segment ``h_t - h_t' = (l' - l)(h_1 - h_2)``,
which is ``>= 0`` wherever ``h_t' > 0`` (there ``h_2 > 0``, so ``h_1 >= h_2``, or ``h_1 > 0 >=
h_2``); so the N&S condition holds between any two times. Butterfly of intermediate slices:
``psi + |chi| < 4`` reads ``h(1/2) > 0`` and ``h(-1/2) > 0`` (linear in ``h``, so it holds on
the segment). The second condition ``psi (psi + |chi|) <= 4 theta``, i.e. ``u (u + v) <= 8
theta`` and ``v (u + v) <= 8 theta``, reads ``A u**2 + C <= 8``; with ``u = 2/r``, ``h(r) =
0``, this is ``(2 - C/2) r >= B``, i.e. (``h`` concave, ``h(0) > 0``) ``h(B/(2 - C/2)) >= 0``;
both wings together:

    C <= 4   and   F = A (2 - C/2)**2 - B**2 (2 - C/4) >= 0

(checked against :attr:`SsviSlice.butterfly_free` on 2e5 random slices). ``C`` is linear on a
segment, but ``F`` is a cubic in ``l`` which the end conditions do not keep non-negative (it
fails between ~20 % of random admissible pairs), so :func:`fit_essvi` imposes ``min_{l in [0,
1]} F(l) >= 0`` in closed form (:func:`essvi_segment_butterfly_free`) with the calendar
condition. Before the first expiry ``theta, psi, chi`` scale with
``t / t_1`` (``w`` scales with them); after the last, ``theta = theta_n t / t_n`` with ``psi,
chi`` constant (``dw/dtheta >= 0``).

Calibration (Corbetta et al. 2019, sequential from the shortest expiry): each slice is first
fitted alone in the butterfly box (a compiled Levenberg-Marquardt with analytic Jacobian, from
the previous slice and three other starts); if it violates the pair condition (calendar and
segment butterfly) against the previous slice, a quadratic penalty on it is increased over
three rounds, the point
is pulled back along the segment to the feasible anchor ``(theta_p + max(theta_0 - theta_p, 0),
rho_p, psi_p)`` by bisection, and a final feasible-step-only Levenberg-Marquardt run polishes
it. Every returned slice satisfies the conditions exactly (checked), so the surface is free of
static arbitrage at every ``t`` by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from volcal.errors import ParameterError
from volcal.surface import ForwardCurve
from volcal.svi.quotes import SliceQuotes
from volcal.svi.ssvi import (
    SsviSettings,
    SsviSlice,
    XssviSurfaceBase,
    _forward_curve,
    _local_scales,
    _slice_row,
    lm_damping,
    projected_lm_step,
)

__all__ = [
    "EssviSurface",
    "essvi_calendar_free",
    "essvi_calendar_margin",
    "essvi_segment_butterfly_free",
    "fit_essvi",
]

FloatArray = npt.NDArray[np.float64]


@njit(cache=True)
def _calendar_margin(
    th1: float, ps1: float, ch1: float, th2: float, ps2: float, ch2: float
) -> float:  # pragma: no cover - compiled
    """``theta_1 min_{x in [-2/v_2, 2/u_2]} (h_1(x) - h_2(x))`` (module docstring)."""
    u1 = ps1 + ch1
    v1 = ps1 - ch1
    u2 = ps2 + ch2
    v2 = ps2 - ch2
    # ends of I_2, where h_2 = 0: theta_1 h_1 = (2 - u_1 x)(2 + v_1 x)/4
    m = min((1.0 - u1 / u2) * (1.0 + v1 / u2), (1.0 + u1 / v2) * (1.0 - v1 / v2))
    # theta_1 (h_1 - h_2) = a + b x + g x**2
    r = th1 / th2
    a = 1.0 - r
    b = -ch1 + ch2 * r
    g = -0.25 * (ps1 * ps1 - ch1 * ch1) + 0.25 * (ps2 * ps2 - ch2 * ch2) * r
    if g > 0.0:
        xs = -b / (2.0 * g)
        if -2.0 / v2 < xs < 2.0 / u2:
            m = min(m, a - b * b / (4.0 * g))
    return m


@njit(cache=True)
def _segment_butterfly_margin(
    th1: float, ps1: float, ch1: float, th2: float, ps2: float, ch2: float
) -> float:  # pragma: no cover - compiled
    """``min_{l in [0, 1]} F(l) / max(A_1, A_2)`` with ``F = A (2 - C/2)**2 - B**2 (2 - C/4)``
    and ``(A, B, C)`` linear in ``l`` between the two slices (module docstring): the second
    butterfly condition of every interpolated slice holds iff this is ``>= 0`` (``C <= 4``
    holds at both ends, hence on the segment)."""
    a0 = 1.0 / th1
    a1 = 1.0 / th2 - a0
    b0 = ch1 / th1
    b1 = ch2 / th2 - b0
    c0 = (ps1 * ps1 - ch1 * ch1) / th1
    c1 = (ps2 * ps2 - ch2 * ch2) / th2 - c0
    p0 = 2.0 - 0.5 * c0
    p1 = -0.5 * c1
    q0 = 2.0 - 0.25 * c0
    q1 = -0.25 * c1
    # F(l) = k0 + k1 l + k2 l**2 + k3 l**3
    k0 = a0 * p0 * p0 - b0 * b0 * q0
    k1 = a1 * p0 * p0 + 2.0 * a0 * p0 * p1 - (b0 * b0 * q1 + 2.0 * b0 * b1 * q0)
    k2 = a0 * p1 * p1 + 2.0 * a1 * p0 * p1 - (2.0 * b0 * b1 * q1 + b1 * b1 * q0)
    k3 = a1 * p1 * p1 - b1 * b1 * q1
    m = min(k0, k0 + k1 + k2 + k3)
    # interior critical points: k1 + 2 k2 l + 3 k3 l**2 = 0
    qa, qb, qc = 3.0 * k3, 2.0 * k2, k1
    roots = np.empty(2)
    nr = 0
    if abs(qa) > 1e-300:
        disc = qb * qb - 4.0 * qa * qc
        if disc >= 0.0:
            sq = math.sqrt(disc)
            roots[0] = (-qb - sq) / (2.0 * qa)
            roots[1] = (-qb + sq) / (2.0 * qa)
            nr = 2
    elif abs(qb) > 1e-300:
        roots[0] = -qc / qb
        nr = 1
    for i in range(nr):
        x = roots[i]
        if 0.0 < x < 1.0:
            m = min(m, k0 + x * (k1 + x * (k2 + x * k3)))
    return m / max(a0, a0 + a1)


@njit(cache=True)
def _pair_margin(
    th1: float, ps1: float, ch1: float, th2: float, ps2: float, ch2: float
) -> float:  # pragma: no cover - compiled
    """Calendar margin and segment butterfly margin (allowing a relative round-off of
    ``1e-12``, as :attr:`SsviSlice.butterfly_free`) of a consecutive pair; ``>= 0`` iff
    both hold."""
    return min(
        _calendar_margin(th1, ps1, ch1, th2, ps2, ch2),
        _segment_butterfly_margin(th1, ps1, ch1, th2, ps2, ch2) + 1e-12,
    )


def essvi_segment_butterfly_free(s1: SsviSlice, s2: SsviSlice) -> bool:
    """Every slice interpolated between ``s1`` and ``s2`` by the surface rule (``1/theta``,
    ``chi/theta``, ``(psi**2 - chi**2)/theta`` linear) satisfies Gatheral & Jacquier's
    (2014, Theorem 4.2) butterfly conditions, given that ``s1`` and ``s2`` do (closed form,
    module docstring; to a relative round-off of ``1e-12``)."""
    m = _segment_butterfly_margin(
        s1.theta, s1.psi, s1.rho * s1.psi, s2.theta, s2.psi, s2.rho * s2.psi
    )
    return bool(m >= -1e-12)


def essvi_calendar_margin(s1: SsviSlice, s2: SsviSlice) -> float:
    """Calendar margin between slices ``s1`` (shorter) and ``s2`` (longer):
    ``theta_1 min (h_1 - h_2)`` over ``[-2/v_2, 2/u_2]`` (module docstring; dimensionless).
    ``>= 0`` iff ``w_2(k) >= w_1(k)`` for every ``k``."""
    return float(
        _calendar_margin(s1.theta, s1.psi, s1.rho * s1.psi, s2.theta, s2.psi, s2.rho * s2.psi)
    )


def essvi_calendar_free(s1: SsviSlice, s2: SsviSlice, rtol: float = 1e-12) -> bool:
    """The necessary and sufficient no-calendar-arbitrage condition between slices ``s1``
    (shorter) and ``s2`` (longer): ``h_1 >= h_2`` on ``[-2/v_2, 2/u_2]`` (module docstring),
    i.e. ``w_2(k) >= w_1(k)`` for every ``k``; to a margin of ``-rtol``."""
    return essvi_calendar_margin(s1, s2) >= -rtol


def _abc(slices: Sequence[SsviSlice]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Ray coefficients ``A = 1/theta, B = chi/theta, C = (psi**2 - chi**2)/theta``."""
    th = np.array([s.theta for s in slices])
    ps = np.array([s.psi for s in slices])
    ch = np.array([s.rho * s.psi for s in slices])
    return 1.0 / th, ch / th, (ps * ps - ch * ch) / th


@dataclass(frozen=True, eq=False)
class EssviSurface(XssviSurfaceBase):
    """eSSVI surface: SSVI slices at the expiries, interpolated as in the module docstring
    (``1/theta``, ``chi/theta`` and ``(psi**2 - chi**2)/theta`` linear in ``t``).

    Free of calendar arbitrage at every ``t`` and of butterfly arbitrage at the expiries when
    every slice is :attr:`~SsviSlice.butterfly_free` and consecutive slices satisfy
    :func:`essvi_calendar_free` (:attr:`nodes_arbitrage_free`).

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
        """Every slice butterfly-free, every consecutive pair calendar-free
        (:func:`essvi_calendar_free`) and every slice interpolated between them butterfly-free
        (:func:`essvi_segment_butterfly_free`): then the surface is free of static arbitrage at
        every ``t``."""
        return all(s.butterfly_free for s in self.slices) and all(
            essvi_calendar_free(a, b) and essvi_segment_butterfly_free(a, b)
            for a, b in zip(self.slices[:-1], self.slices[1:], strict=True)
        )

    def curves(
        self, t: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        ts = self.expiries
        t = np.asarray(t, dtype=float)
        th_n = np.array([s.theta for s in self.slices])
        ps_n = np.array([s.psi for s in self.slices])
        ch_n = np.array([s.rho * s.psi for s in self.slices])
        theta = np.empty(t.shape)
        psi = np.empty(t.shape)
        chi = np.empty(t.shape)
        d_th = np.empty(t.shape)
        d_ps = np.empty(t.shape)
        d_ch = np.empty(t.shape)
        # before the first expiry: all three scale with t / t_1
        pre = t <= ts[0]
        f = t[pre] / ts[0]
        theta[pre], psi[pre], chi[pre] = th_n[0] * f, ps_n[0] * f, ch_n[0] * f
        d_th[pre], d_ps[pre], d_ch[pre] = th_n[0] / ts[0], ps_n[0] / ts[0], ch_n[0] / ts[0]
        # after the last: theta = theta_n t / t_n, psi and chi constant
        post = t > ts[-1]
        theta[post] = th_n[-1] * t[post] / ts[-1]
        psi[post], chi[post] = ps_n[-1], ch_n[-1]
        d_th[post], d_ps[post], d_ch[post] = th_n[-1] / ts[-1], 0.0, 0.0
        mid = ~pre & ~post
        if mid.any():
            a_n, b_n, c_n = _abc(self.slices)
            tm = t[mid]
            j = np.clip(np.searchsorted(ts, tm, side="right") - 1, 0, ts.size - 2)
            dt = ts[j + 1] - ts[j]
            a1 = (a_n[j + 1] - a_n[j]) / dt
            b1 = (b_n[j + 1] - b_n[j]) / dt
            c1 = (c_n[j + 1] - c_n[j]) / dt
            a = a_n[j] + a1 * (tm - ts[j])
            b = b_n[j] + b1 * (tm - ts[j])
            c = c_n[j] + c1 * (tm - ts[j])
            d = np.sqrt(b * b + a * c)
            d1 = (2.0 * b * b1 + a1 * c + a * c1) / (2.0 * d)
            theta[mid] = 1.0 / a
            chi[mid] = b / a
            psi[mid] = d / a
            d_th[mid] = -a1 / (a * a)
            d_ch[mid] = (b1 * a - b * a1) / (a * a)
            d_ps[mid] = (d1 * a - d * a1) / (a * a)
        return theta, psi, chi, d_th, d_ps, d_ch

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


# --- calibration (compiled) ------------------------------------------------------------------


@njit(cache=True)
def _unpack(x: FloatArray, cap: float, dj: FloatArray) -> tuple[float, float, float]:
    """``(theta, psi, chi)`` of box point ``x = (rho, s, e)``; ``dj`` receives the 3x3
    Jacobian ``d(theta, psi, chi)/d(rho, s, e)``."""  # pragma: no cover - compiled
    rho, s, e = x[0], x[1], x[2]
    sg = 1.0 if rho >= 0.0 else -1.0
    q = 1.0 + abs(rho)
    psi = s * cap / q
    dps_drho = -psi * sg / q
    dps_ds = cap / q
    theta = 0.25 * psi * psi * q + e
    dj[0, 0] = 0.5 * psi * q * dps_drho + 0.25 * psi * psi * sg
    dj[0, 1] = 0.5 * psi * q * dps_ds
    dj[0, 2] = 1.0
    dj[1, 0] = dps_drho
    dj[1, 1] = dps_ds
    dj[1, 2] = 0.0
    dj[2, 0] = psi + rho * dps_drho
    dj[2, 1] = rho * dps_ds
    dj[2, 2] = 0.0
    return theta, psi, rho * psi


@njit(cache=True)
def _margin_at(x: FloatArray, cap: float, prev: FloatArray) -> float:  # pragma: no cover
    dj = np.empty((3, 3))
    th, ps, ch = _unpack(x, cap, dj)
    return _pair_margin(prev[0], prev[1], prev[2], th, ps, ch)


@njit(cache=True)
def _residuals(
    x: FloatArray,
    k: FloatArray,
    t: float,
    vb: FloatArray,
    va: FloatArray,
    vm: FloatArray,
    sw: FloatArray,
    lam: float,
    eps: float,
    cap: float,
    prev: FloatArray,
    mu: float,
    r: FloatArray,
    jac: FloatArray,
    want_jac: bool,
) -> None:  # pragma: no cover - compiled
    """Residuals ``[sw dist(sigma, band), sw lam (sigma - mid), sqrt(mu) min(margin, 0)]`` of
    box point ``x`` (and their Jacobian when ``want_jac``); ``prev[3] > 0`` marks a previous
    slice ``prev[:3] = (theta, psi, chi)``."""
    n = k.size
    sqn = math.sqrt(n)
    dj = np.empty((3, 3))
    th, ps, ch = _unpack(x, cap, dj)
    for i in range(n):
        kk = k[i]
        rr = math.sqrt(ps * ps * kk * kk + 2.0 * ch * th * kk + th * th)
        w = 0.5 * (th + ch * kk + rr)
        if w < 1e-300:
            w = 1e-300
        sig = math.sqrt(w / t)
        if sig < vb[i]:
            dist = sig - vb[i]
        elif sig > va[i]:
            dist = sig - va[i]
        else:
            dist = 0.0
        # band term: sw dist, or with eps > 0 the pseudo-Huber form in spread units
        # z = W dist (W = sw sqrt(n)): rho(z) = 2 eps**2 (sqrt(1 + (z/eps)**2) - 1),
        # residual sign(z) sqrt(rho(z)) / sqrt(n) (quadratic near 0, linear beyond eps)
        fac = sw[i]
        if eps > 0.0 and dist != 0.0:
            z = sw[i] * dist * sqn
            root = math.sqrt(1.0 + (z / eps) ** 2)
            rho_z = 2.0 * eps * eps * (root - 1.0)
            rr_z = math.sqrt(rho_z) if rho_z > 0.0 else abs(z)
            r[i] = math.copysign(rr_z, z) / sqn
            # d r / d dist = sw z / (root rr_z) (-> sw as z -> 0)
            fac = sw[i] * abs(z) / (root * rr_z) if rr_z > 0.0 else sw[i]
        else:
            r[i] = sw[i] * dist
        r[n + i] = sw[i] * lam * (sig - vm[i])
        if want_jac:
            w_th = 0.5 * (1.0 + (ch * kk + th) / rr)
            w_ps = 0.5 * ps * kk * kk / rr
            w_ch = 0.5 * kk * (1.0 + th / rr)
            ds = 1.0 / (2.0 * sig * t)
            for j in range(3):
                dsig = ds * (w_th * dj[0, j] + w_ps * dj[1, j] + w_ch * dj[2, j])
                jac[i, j] = fac * dsig if dist != 0.0 else 0.0
                jac[n + i, j] = sw[i] * lam * dsig
    r[2 * n] = 0.0
    if want_jac:
        for j in range(3):
            jac[2 * n, j] = 0.0
    if prev[3] > 0.0 and mu > 0.0:
        m0 = _pair_margin(prev[0], prev[1], prev[2], th, ps, ch)
        if m0 < 0.0:
            sq = math.sqrt(mu)
            r[2 * n] = sq * m0
            if want_jac:
                xh = x.copy()
                for j in range(3):
                    h = 1e-7 * max(abs(x[j]), 1e-4)
                    xh[j] = x[j] + h
                    m1 = _margin_at(xh, cap, prev)
                    xh[j] = x[j]
                    jac[2 * n, j] = sq * (min(m1, 0.0) - m0) / h


@njit(cache=True)
def _lm(
    x0: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    k: FloatArray,
    t: float,
    vb: FloatArray,
    va: FloatArray,
    vm: FloatArray,
    sw: FloatArray,
    lam: float,
    eps: float,
    cap: float,
    prev: FloatArray,
    mu: float,
    feasible_only: bool,
    max_iter: int,
) -> tuple[FloatArray, float, int, bool]:  # pragma: no cover - compiled
    """Projected Levenberg-Marquardt (:func:`volcal.svi.ssvi.projected_lm_step`) on the box
    ``lo <= x <= hi``. With ``feasible_only`` a step is
    accepted only if it keeps the calendar margin ``>= 0``. Returns ``(x, cost, nfev,
    converged)``."""
    n = k.size
    m = 2 * n + 1
    r = np.empty(m)
    rn = np.empty(m)
    jac = np.empty((m, 3))
    dummy = np.empty((1, 3))
    x = np.minimum(np.maximum(x0, lo), hi)
    _residuals(x, k, t, vb, va, vm, sw, lam, eps, cap, prev, mu, r, jac, True)
    cost = float(r @ r)
    nfev = 1
    damp = 1e-3
    converged = False
    for _ in range(max_iter):
        xn, step = projected_lm_step(x, lo, hi, jac, r, damp)
        _residuals(xn, k, t, vb, va, vm, sw, lam, eps, cap, prev, mu, rn, dummy, False)
        nfev += 1
        cn = float(rn @ rn)
        ok = cn < cost
        if ok and feasible_only:
            ok = _margin_at(xn, cap, prev) >= 0.0
        damp, converged = lm_damping(ok, cost, cn, step, damp)
        if ok:
            x = xn
            cost = cn
            _residuals(x, k, t, vb, va, vm, sw, lam, eps, cap, prev, mu, r, jac, True)
        if converged:
            break
    return x, cost, nfev, converged


_MU_ROUNDS = (1e2, 1e5, 1e8)


class _SliceProblem:
    """Arrays of one expiry's bid/ask-aware least-squares problem in box coordinates
    ``x = (rho, s, e)`` (module docstring)."""

    def __init__(self, d: SliceQuotes, settings: SsviSettings) -> None:
        spread = d.iv_ask - d.iv_bid
        self.k = np.ascontiguousarray(d.k, dtype=float)
        self.t = float(d.t)
        self.vb = np.ascontiguousarray(d.iv_bid + settings.band_shrink * spread, dtype=float)
        self.va = np.ascontiguousarray(d.iv_ask - settings.band_shrink * spread, dtype=float)
        self.vm = np.ascontiguousarray(d.iv_mid, dtype=float)
        # each slice weighs as much as any other: mean over its quotes
        self.sw = np.ascontiguousarray(d.weight / math.sqrt(d.k.size), dtype=float)
        self.lam = float(settings.mid_weight)
        self.eps = float(settings.huber)
        self.cap = 4.0 * (1.0 - settings.psi_margin)
        self.lo = np.array([-0.999, 1e-9, 0.0])
        self.hi = np.array([0.999, 1.0, np.inf])
        self.max_iter = int(settings.max_nfev)

    def pack(self, theta: float, psi: float, chi: float) -> FloatArray:
        """The box point of ``(theta, psi, chi)``, projected onto the box."""
        rho = min(max(chi / psi, self.lo[0]), self.hi[0])
        q = 1.0 + abs(rho)
        s = min(max(psi * q / self.cap, self.lo[1]), 1.0)
        psi = s * self.cap / q
        return np.array([rho, s, max(theta - 0.25 * psi * psi * q, 0.0)])

    def unpack(self, x: FloatArray) -> tuple[float, float, float]:
        return _unpack(np.asarray(x, dtype=float), self.cap, np.empty((3, 3)))

    def slice(self, x: FloatArray) -> SsviSlice:
        th, ps, ch = self.unpack(x)
        return SsviSlice(theta=th, rho=ch / ps, psi=ps)

    def run(
        self, x0: FloatArray, prev: FloatArray, mu: float, feasible_only: bool = False
    ) -> tuple[FloatArray, float, int, bool]:
        x, cost, nfev, ok = _lm(
            np.asarray(x0, dtype=float),
            self.lo,
            self.hi,
            self.k,
            self.t,
            self.vb,
            self.va,
            self.vm,
            self.sw,
            self.lam,
            self.eps,
            self.cap,
            prev,
            mu,
            feasible_only,
            self.max_iter,
        )
        return x, float(cost), int(nfev), bool(ok)

    def margin(self, x: FloatArray, prev: FloatArray) -> float:
        return float(_margin_at(np.asarray(x, dtype=float), self.cap, prev))


_NO_PREV = np.zeros(4)


def _fit_one(
    d: SliceQuotes, prev: SsviSlice | None, settings: SsviSettings
) -> tuple[SsviSlice, bool, int, str]:
    """Best admissible slice for ``d`` given the previous one (module docstring)."""
    pb = _SliceProblem(d, settings)
    theta0 = max(d.atm_variance, 1e-8)
    starts = []
    if prev is not None:
        # the previous smile's shape at this expiry's ATM level
        scale = theta0 / prev.theta
        starts.append(
            pb.pack(theta0, prev.psi * math.sqrt(scale), prev.rho * prev.psi * math.sqrt(scale))
        )
    for rho in settings.rho_starts:
        psi0 = min(math.sqrt(theta0), 0.5 * pb.cap / (1.0 + abs(rho)))
        starts.append(pb.pack(theta0, psi0, rho * psi0))
    nfev = 0
    best: tuple[FloatArray, float, bool] | None = None
    for x0 in starts:
        x, cost, n, ok = pb.run(x0, _NO_PREV, 0.0)
        nfev += n
        if best is None or cost < best[1]:
            best = (x, cost, ok)
    assert best is not None
    if prev is None:
        return pb.slice(best[0]), best[2], nfev, "free slice"
    pv = np.array([prev.theta, prev.psi, prev.rho * prev.psi, 1.0])
    if pb.margin(best[0], pv) >= 0.0:
        return pb.slice(best[0]), best[2], nfev, "free slice"
    # feasible anchor: the previous smile lifted to at least this expiry's ATM level
    anchor = pb.pack(max(prev.theta, theta0), prev.psi, prev.rho * prev.psi)
    anchor[2] += max(prev.theta, theta0) - pb.unpack(anchor)[0]
    if pb.margin(anchor, pv) < 0.0:
        anchor = pb.pack(prev.theta, prev.psi, prev.rho * prev.psi)
        anchor[2] += prev.theta - pb.unpack(anchor)[0] + 1e-15 * prev.theta
    cands: list[tuple[FloatArray, float, bool]] = []
    for x0 in (best[0], anchor):
        x = x0
        for mu in _MU_ROUNDS:
            x, _, n, _ = pb.run(x, pv, mu)
            nfev += n
        # back along the segment to the anchor until feasible (bisection)
        if pb.margin(x, pv) < 0.0:
            lo_f, hi_f = 0.0, 1.0  # fraction of the way from x to the anchor
            for _ in range(60):
                mid = 0.5 * (lo_f + hi_f)
                if pb.margin(x + mid * (anchor - x), pv) >= 0.0:
                    hi_f = mid
                else:
                    lo_f = mid
            x = x + hi_f * (anchor - x)
            if pb.margin(x, pv) < 0.0:
                x = anchor.copy()
        x, cost, n, ok = pb.run(x, pv, 0.0, feasible_only=True)
        nfev += n
        cands.append((x, cost, ok))
    x, cost, ok = min(cands, key=lambda c: c[1])
    out = pb.slice(x)
    if not (  # pragma: no cover - guarded above
        essvi_calendar_free(prev, out, rtol=0.0) and essvi_segment_butterfly_free(prev, out)
    ):
        out = pb.slice(anchor)
    return out, ok, nfev, "calendar-constrained slice"


def calibrate_essvi(
    slices: Sequence[SliceQuotes], settings: SsviSettings
) -> tuple[list[SsviSlice], list[bool], int, str]:
    """Sequential (Corbetta et al. 2019) eSSVI calibration, shortest expiry first."""
    out: list[SsviSlice] = []
    ok: list[bool] = []
    nfev = 0
    n_con = 0
    prev: SsviSlice | None = None
    for d in slices:
        sl, success, n, message = _fit_one(d, prev, settings)
        out.append(sl)
        ok.append(success)
        nfev += n
        n_con += message.startswith("calendar")
        prev = sl
    return out, ok, nfev, f"{n_con} of {len(out)} slices calendar-constrained"


def fit_essvi(
    chain: Any,
    *,
    min_t: float = 2.0 / 365.0,
    min_quotes: int = 6,
    spread_floor: float = 0.005,
    weights: str = "vega_spread",
    settings: SsviSettings | None = None,
) -> Any:
    """Fit an eSSVI surface to a chain, slice by slice, free of static arbitrage.

    Parameters
    ----------
    chain, min_t, min_quotes, spread_floor, weights:
        The chain and the quote selection, as in :func:`volcal.svi.fit_svi`.
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
        When no expiry has enough usable quotes. Warns as :func:`volcal.svi.fit_svi`.
    """
    from volcal.svi.surface_fit import CalibratedSurface, fit_surface

    s = settings or SsviSettings()

    def calibrate(
        raw: Any, slices: list[SliceQuotes], k_bounds: tuple[float, float]
    ) -> CalibratedSurface:
        fitted, ok, nfev, message = calibrate_essvi(slices, s)
        surface = EssviSurface(
            tuple(d.t for d in slices), tuple(fitted), _forward_curve(raw, slices)
        )
        return CalibratedSurface(
            surface=surface,
            rows=[_slice_row(sv, c, "essvi-lm") for sv, c in zip(fitted, ok, strict=True)],
            local=_local_scales(fitted),
            converged=ok,
            iterations=nfev,
            nfev=nfev,
            message=message,
        )

    return fit_surface("essvi", chain, calibrate, s, min_t, min_quotes, spread_floor, weights)
