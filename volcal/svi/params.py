"""Raw SVI and SVI-JW parameters of one smile, and the butterfly function g(k).

Notation (``docs/conventions.md``): log-moneyness ``k = ln(K/F)``, total implied variance
``w = sigma_BS**2 t`` with ``t`` in years (ACT/365F).

Raw SVI (Gatheral 2004; Gatheral & Jacquier 2014, eq. 3.1)::

    w(k) = a + b (rho (k - m) + sqrt((k - m)**2 + sigma**2))

SVI-JW ("jump-wings", Gatheral 2004; Gatheral & Jacquier 2014, section 3.3) describes the same
smile by quantities a trader reads off it: ATM variance ``v_t``, ATM skew ``psi_t``, left and
right wing slopes ``p_t`` and ``c_t`` and minimum variance ``vt_t``.

The butterfly function (Gatheral & Jacquier 2014, eq. 2.1)::

    g(k) = (1 - k w'/(2w))**2 - w'**2/4 (1/w + 1/4) + w''/2

is proportional to the risk-neutral density of ``ln(S_T/F)``; a smile is free of butterfly
arbitrage iff ``g >= 0`` everywhere (and ``d_+(k) -> -inf`` as ``k -> inf``, which holds for
any SVI slice with ``w > 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from volcal.surface import butterfly_g

__all__ = ["SviJW", "SviRaw", "butterfly_g"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SviRaw:
    """Raw SVI parameters of one smile in total variance (Gatheral 2004).

    ``w(k) = a + b (rho (k - m) + sqrt((k - m)**2 + sigma**2))``, ``k = ln(K/F)``,
    ``w = sigma_BS**2 t``.

    Attributes
    ----------
    a:
        Level of total variance (dimensionless, any sign) with ``a + b sigma sqrt(1 - rho**2)
        >= 0`` so that the minimum total variance is non-negative.
    b:
        Wing-slope scale, ``b >= 0``; the asymptotic slopes of ``w`` are ``b (1 - rho)`` (left)
        and ``b (1 + rho)`` (right). Lee's moment formula requires both ``<= 2``; that bound is
        imposed by the calibrators, not by the parameter object.
    rho:
        Rotation (skew), ``-1 < rho < 1``.
    m:
        Horizontal translation in log-moneyness (any real).
    sigma:
        ATM curvature scale in log-moneyness, ``sigma > 0``.

    Raises
    ------
    ValueError
        When a parameter is non-finite or outside its domain.
    """

    a: float
    b: float
    rho: float
    m: float
    sigma: float

    def __post_init__(self) -> None:
        for name in ("a", "b", "rho", "m", "sigma"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"SviRaw.{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.b < 0:
            raise ValueError(f"SviRaw.b must be >= 0, got {self.b!r}")
        if not -1.0 < self.rho < 1.0:
            raise ValueError(f"SviRaw.rho must lie in (-1, 1), got {self.rho!r}")
        if self.sigma <= 0:
            raise ValueError(f"SviRaw.sigma must be > 0, got {self.sigma!r}")
        w_min = self.min_variance
        # relative tolerance: a + b sigma sqrt(1 - rho^2) is a difference of O(b sigma) terms
        if w_min < -1e-12 * max(1.0, abs(self.a), self.b * self.sigma):
            raise ValueError(
                f"SviRaw has negative minimum total variance a + b sigma sqrt(1 - rho^2) = "
                f"{w_min!r} (a={self.a!r}, b={self.b!r}, rho={self.rho!r}, sigma={self.sigma!r})"
            )

    # --- values ---------------------------------------------------------------------------
    @property
    def min_variance(self) -> float:
        """Minimum total variance ``a + b sigma sqrt(1 - rho**2)`` (at ``k* = m - rho sigma /
        sqrt(1 - rho**2)``)."""
        return self.a + self.b * self.sigma * math.sqrt(1.0 - self.rho * self.rho)

    @property
    def wing_slopes(self) -> tuple[float, float]:
        """Asymptotic slopes ``(b (1 - rho), b (1 + rho))`` of ``w`` for ``k -> -inf, +inf``."""
        return self.b * (1.0 - self.rho), self.b * (1.0 + self.rho)

    def total_variance(self, k: npt.ArrayLike) -> FloatArray:
        """Total implied variance ``w(k)`` (dimensionless) at log-moneyness ``k``."""
        x = np.asarray(k, dtype=float) - self.m
        return self.a + self.b * (self.rho * x + np.sqrt(x * x + self.sigma**2))

    def derivatives(self, k: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``(w, dw/dk, d2w/dk2)`` at log-moneyness ``k``, analytic.

        ``w' = b (rho + (k - m)/r)`` and ``w'' = b sigma**2 / r**3`` with
        ``r = sqrt((k - m)**2 + sigma**2)``; ``r**3`` is computed as ``r r**2`` (correctly
        rounded operations only, the same bits as the compiled surface kernels).
        """
        x = np.asarray(k, dtype=float) - self.m
        r2 = x * x + self.sigma**2
        r = np.sqrt(r2)
        w = self.a + self.b * (self.rho * x + r)
        w1 = self.b * (self.rho + x / r)
        w2 = self.b * self.sigma**2 / (r * r2)
        return w, w1, w2

    def g(self, k: npt.ArrayLike) -> FloatArray:
        """Butterfly function ``g(k)`` (Gatheral & Jacquier 2014, eq. 2.1); see
        :func:`butterfly_g`. The slice is free of butterfly arbitrage iff ``g >= 0``."""
        w, w1, w2 = self.derivatives(k)
        return butterfly_g(w, w1, w2, k)

    def implied_vol(self, k: npt.ArrayLike, t: float) -> FloatArray:
        """Black implied volatility ``sqrt(w(k)/t)`` (decimal) for expiry ``t`` in years."""
        return np.sqrt(np.maximum(self.total_variance(k), 0.0) / t)

    # --- conversions ----------------------------------------------------------------------
    def to_jw(self, t: float) -> SviJW:
        """SVI-JW parameters of this slice at expiry ``t`` (years).

        Gatheral & Jacquier (2014), section 3.3::

            v_t   = (a + b (-rho m + sqrt(m**2 + sigma**2))) / t
            psi_t = b / (2 sqrt(w_t)) (rho - m / sqrt(m**2 + sigma**2))
            p_t   = b (1 - rho) / sqrt(w_t)
            c_t   = b (1 + rho) / sqrt(w_t)
            vt_t  = (a + b sigma sqrt(1 - rho**2)) / t

        with ``w_t = v_t t`` the ATM total variance (must be > 0).
        """
        if not t > 0:
            raise ValueError(f"t must be > 0 years, got {t!r}")
        r0 = math.hypot(self.m, self.sigma)
        w_atm = self.a + self.b * (-self.rho * self.m + r0)
        if not w_atm > 0:
            raise ValueError(f"SVI-JW needs positive ATM total variance, got w(0)={w_atm!r}")
        sq = math.sqrt(w_atm)
        return SviJW(
            v=w_atm / t,
            psi=self.b / (2.0 * sq) * (self.rho - self.m / r0),
            p=self.b * (1.0 - self.rho) / sq,
            c=self.b * (1.0 + self.rho) / sq,
            v_min=self.min_variance / t,
            t=float(t),
        )

    @classmethod
    def from_jw(cls, jw: SviJW) -> SviRaw:
        """Raw SVI parameters of an SVI-JW slice (inverse of :meth:`to_jw`).

        Gatheral & Jacquier (2014), Lemma 3.2: ``b = sqrt(w_t)(c_t + p_t)/2``,
        ``rho = 1 - p_t sqrt(w_t)/b``, ``beta = rho - 2 psi_t sqrt(w_t)/b`` (which equals
        ``m / sqrt(m**2 + sigma**2)``). We write their ``m`` and ``sigma = alpha m`` in a form
        that stays finite as ``beta -> 0`` (``m -> 0``)::

            D     = 1 - rho beta - sqrt(1 - beta**2) sqrt(1 - rho**2)
            m     = (v_t - vt_t) t beta / (b D)
            sigma = (v_t - vt_t) t sqrt(1 - beta**2) / (b D)
            a     = vt_t t - b sigma sqrt(1 - rho**2)

        ``D = 0`` exactly when ``beta = rho``: the smile's minimum sits at ``k = 0`` and
        ``v_t = vt_t``, ``psi_t = 0``; SVI-JW then does not determine ``sigma``.

        Raises
        ------
        ValueError
            When ``b = 0`` (flat smile: ``m, sigma`` undetermined), ``|beta| > 1`` (no SVI
            slice has these JW values), or ``D`` vanishes.
        """
        t = jw.t
        w_atm = jw.v * t
        sq = math.sqrt(w_atm)
        b = sq * (jw.c + jw.p) / 2.0
        if not b > 0:
            raise ValueError(
                f"SVI-JW with p + c = {jw.p + jw.c!r} has b = 0: m, sigma undetermined"
            )
        rho = 1.0 - jw.p * sq / b
        beta = rho - 2.0 * jw.psi * sq / b
        if not -1.0 <= beta <= 1.0:
            raise ValueError(
                f"SVI-JW parameters admit no raw SVI slice: beta = {beta!r} outside [-1, 1]"
            )
        root_b = math.sqrt(max(0.0, 1.0 - beta * beta))
        root_r = math.sqrt(max(0.0, 1.0 - rho * rho))
        denom = 1.0 - rho * beta - root_b * root_r
        gap = (jw.v - jw.v_min) * t
        if denom <= 0.0 or gap <= 0.0:
            raise ValueError(
                "SVI-JW parameters with the smile minimum at k = 0 (v = v_min, psi = 0) do not "
                f"determine sigma (v - v_min = {jw.v - jw.v_min!r}, beta - rho = {beta - rho!r})"
            )
        m = gap * beta / (b * denom)
        sigma = gap * root_b / (b * denom)
        a = jw.v_min * t - b * sigma * root_r
        return cls(a=a, b=b, rho=rho, m=m, sigma=sigma)


@dataclass(frozen=True)
class SviJW:
    """SVI "jump-wings" parameters of one smile at expiry ``t`` (Gatheral 2004).

    Attributes
    ----------
    v:
        ATM implied variance ``w(0)/t`` (per year, > 0).
    psi:
        ATM skew ``d sigma_BS / dk`` at ``k = 0`` times ``sqrt(t)`` (dimensionless).
    p:
        Left wing slope of ``w`` divided by ``sqrt(w(0))`` (>= 0).
    c:
        Right wing slope of ``w`` divided by ``sqrt(w(0))`` (>= 0).
    v_min:
        Minimum implied variance ``min_k w(k)/t`` (per year, >= 0, <= v).
    t:
        Expiry in years (ACT/365F), > 0.
    """

    v: float
    psi: float
    p: float
    c: float
    v_min: float
    t: float

    def __post_init__(self) -> None:
        for name in ("v", "psi", "p", "c", "v_min", "t"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"SviJW.{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.t <= 0 or self.v <= 0:
            raise ValueError(f"SviJW needs t > 0 and v > 0, got t={self.t!r}, v={self.v!r}")
        if self.p < 0 or self.c < 0:
            raise ValueError(f"SviJW wing slopes must be >= 0, got p={self.p!r}, c={self.c!r}")
        if self.v_min < 0:
            raise ValueError(f"SviJW.v_min must be >= 0, got {self.v_min!r}")

    def to_raw(self) -> SviRaw:
        """Raw SVI parameters; see :meth:`SviRaw.from_jw`."""
        return SviRaw.from_jw(self)
