"""How the smile moves when the forward moves: sticky strike, sticky moneyness, SSR.

Bergomi's skew stickiness ratio (*Stochastic Volatility Modeling*, 2016, ch. 9) is the
regression coefficient of at-the-money vol changes on log-forward changes, in units of the
at-the-money skew: ``SSR = (d sigma_ATM / d ln F) / (d sigma / dk at k = 0)``. With it the smile
after a move ``F0 -> F1`` is

    sigma_new(K) = sigma_old(K * (F0 / F1)**(1 - SSR))            (before any vol shock)

so ``SSR = 1`` is sticky strike (each strike keeps its vol), ``SSR = 0`` sticky moneyness (each
``k = ln(K/F)`` keeps its vol), and ``SSR ~ 2`` what local-vol models imply for short maturities.

Writing ``a = 1 - SSR`` and ``s(k)`` for the smile in ``k = ln(K/F0)`` at fixed ``t``, the
derivatives of the vol of a fixed strike with respect to the forward, at ``F1 = F0``, are

    sigma_F  = -a s'(k) / F
    sigma_FF = (a**2 s''(k) + a s'(k)) / F**2

which the minimum-variance delta and the effective gamma use (:mod:`volcal.risk.greeks`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SmileDynamics"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SmileDynamics:
    """A smile dynamic given by its skew stickiness ratio.

    Attributes
    ----------
    ssr:
        Skew stickiness ratio (dimensionless, finite): 1 sticky strike, 0 sticky moneyness.
    name:
        Label for reports (``"sticky strike"``, ``"sticky moneyness"``, ``"SSR 1.35"``).
    source:
        Where the value comes from (given, or the estimate's description).
    """

    ssr: float
    name: str = ""
    source: str = "given"

    def __post_init__(self) -> None:
        if not np.isfinite(self.ssr):
            raise ValueError(f"SmileDynamics: ssr must be finite, got {self.ssr}")
        if not self.name:
            object.__setattr__(self, "name", f"SSR {self.ssr:.3g}")

    @classmethod
    def sticky_strike(cls) -> SmileDynamics:
        """Every strike keeps its vol (``SSR = 1``)."""
        return cls(1.0, "sticky strike")

    @classmethod
    def sticky_moneyness(cls) -> SmileDynamics:
        """Every log-moneyness keeps its vol (``SSR = 0``)."""
        return cls(0.0, "sticky moneyness")

    def lookup_strike(self, strike: npt.ArrayLike, move: npt.ArrayLike) -> FloatArray:
        """The strike whose old vol the new smile uses: ``K * (F0/F1)**(1 - SSR)``.

        Parameters
        ----------
        strike:
            Strikes ``K`` (USD).
        move:
            Relative forward move ``F1/F0 - 1`` (> -1).
        """
        ratio = 1.0 + np.asarray(move, dtype=float)
        return np.asarray(np.asarray(strike, dtype=float) * ratio ** (-(1.0 - self.ssr)))

    def vol_derivatives(
        self,
        forward: npt.ArrayLike,
        smile_slope: npt.ArrayLike,
        smile_curvature: npt.ArrayLike,
    ) -> tuple[FloatArray, FloatArray]:
        """``(d sigma/dF, d2 sigma/dF2)`` of a fixed strike's vol under this dynamic.

        Parameters
        ----------
        forward:
            ``F`` (USD per coin).
        smile_slope, smile_curvature:
            ``s'(k)`` and ``s''(k)``: derivatives of the smile in ``k`` at the strike.

        Returns
        -------
        tuple of ndarray
            ``sigma_F`` (per USD) and ``sigma_FF`` (per USD squared).
        """
        a = 1.0 - self.ssr
        f = np.asarray(forward, dtype=float)
        s1 = np.asarray(smile_slope, dtype=float)
        s2 = np.asarray(smile_curvature, dtype=float)
        return np.asarray(-a * s1 / f), np.asarray((a * a * s2 + a * s1) / (f * f))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)
