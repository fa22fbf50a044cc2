"""Heston model parameters: a named, frozen, validated value.

The Heston (1993) model for the forward ``F_t`` of one expiry and its instantaneous variance
``v_t`` under the pricing measure:

    dF_t / F_t = sqrt(v_t) dW_t,
    dv_t = kappa (theta - v_t) dt + sigma sqrt(v_t) dZ_t,      d<W, Z>_t = rho dt.

Time is in years (ACT/365F); variances are per year (a variance of 0.36 is a 60 % vol).
QuantLib orders the same five numbers differently (``HestonModel.params()`` is
``theta, kappa, sigma, rho, v0``); :meth:`HestonParams.to_quantlib_order` and
:meth:`HestonParams.from_quantlib_order` are the only conversions, used at the QuantLib boundary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from volcal.errors import ParameterError

__all__ = ["HestonParams", "ParameterError"]


@dataclass(frozen=True)
class HestonParams:
    """Heston (1993) stochastic-volatility parameters.

    Parameters
    ----------
    v0:
        Initial instantaneous variance, per year (``>= 0``; ``sqrt(v0)`` is the spot vol).
    kappa:
        Mean-reversion speed of the variance, per year (``> 0``).
    theta:
        Long-run variance, per year (``> 0``).
    sigma:
        Volatility of variance ("vol of vol"), per sqrt(year) (``> 0``).
    rho:
        Correlation between the forward's and the variance's Brownian motions
        (``-1 < rho < 1``).

    All five must be finite. A calibrator varies all five by default (see
    :func:`volcal.heston.fit_heston`); crypto fits usually violate the Feller condition
    (:attr:`feller`), which is allowed.

    Raises
    ------
    ParameterError
        A parameter is outside its domain (also a ``ValueError``).
    """

    v0: float
    kappa: float
    theta: float
    sigma: float
    rho: float

    NAMES: ClassVar[tuple[str, ...]] = ("v0", "kappa", "theta", "sigma", "rho")
    """Field order used by :meth:`to_array` and by Jacobian columns."""

    def __post_init__(self) -> None:
        for name in self.NAMES:
            value = getattr(self, name)
            try:
                as_float = float(value)
            except (TypeError, ValueError):
                raise ParameterError(
                    f"HestonParams.{name} must be a real number, got {value!r}"
                ) from None
            object.__setattr__(self, name, as_float)
            if not math.isfinite(as_float):
                raise ParameterError(f"HestonParams.{name} must be finite, got {as_float!r}")
        if self.v0 < 0.0:
            raise ParameterError(f"HestonParams.v0 must be >= 0, got {self.v0!r}")
        for name in ("kappa", "theta", "sigma"):
            if getattr(self, name) <= 0.0:
                raise ParameterError(
                    f"HestonParams.{name} must be > 0, got {getattr(self, name)!r}"
                )
        if not -1.0 < self.rho < 1.0:
            raise ParameterError(f"HestonParams.rho must be in (-1, 1), got {self.rho!r}")

    # -- derived quantities ---------------------------------------------------------------
    @property
    def feller_ratio(self) -> float:
        """``2 kappa theta / sigma**2``; the Feller condition holds when it is ``>= 1``."""
        return 2.0 * self.kappa * self.theta / (self.sigma * self.sigma)

    @property
    def feller(self) -> bool:
        """True when ``2 kappa theta >= sigma**2`` (the variance never reaches 0)."""
        return self.feller_ratio >= 1.0

    def expected_total_variance(self, t: npt.ArrayLike) -> npt.NDArray[np.float64] | float:
        """Expected integrated variance ``E[int_0^t v_s ds]`` (a total variance ``w``).

        ``theta t + (v0 - theta) (1 - exp(-kappa t)) / kappa``; ``t`` in years. It is the
        total implied variance of a variance swap of maturity ``t``, and the control-variate
        variance of the fast pricer.
        """
        tt = np.asarray(t, dtype=np.float64)
        out = self.theta * tt - (self.v0 - self.theta) * np.expm1(-self.kappa * tt) / self.kappa
        return float(out) if out.ndim == 0 else out

    # -- conversions ----------------------------------------------------------------------
    def to_array(self) -> npt.NDArray[np.float64]:
        """``[v0, kappa, theta, sigma, rho]`` (the order of :attr:`NAMES`)."""
        return np.array([self.v0, self.kappa, self.theta, self.sigma, self.rho])

    @classmethod
    def from_array(cls, values: Sequence[float] | npt.NDArray[np.float64]) -> HestonParams:
        """Inverse of :meth:`to_array` (order ``v0, kappa, theta, sigma, rho``)."""
        if len(values) != 5:
            raise ParameterError(f"HestonParams needs 5 values, got {len(values)}")
        v0, kappa, theta, sigma, rho = (float(x) for x in values)
        return cls(v0=v0, kappa=kappa, theta=theta, sigma=sigma, rho=rho)

    def to_quantlib_order(self) -> tuple[float, float, float, float, float]:
        """``(theta, kappa, sigma, rho, v0)``: the order of QuantLib's ``HestonModel.params()``."""
        return (self.theta, self.kappa, self.sigma, self.rho, self.v0)

    @classmethod
    def from_quantlib_order(cls, values: Sequence[float]) -> HestonParams:
        """From QuantLib's ``HestonModel.params()`` order ``(theta, kappa, sigma, rho, v0)``."""
        if len(values) != 5:
            raise ParameterError(f"QuantLib Heston parameters are 5 numbers, got {len(values)}")
        theta, kappa, sigma, rho, v0 = (float(x) for x in values)
        return cls(v0=v0, kappa=kappa, theta=theta, sigma=sigma, rho=rho)

    def to_dict(self) -> dict[str, float]:
        """``{"v0": ..., "kappa": ..., "theta": ..., "sigma": ..., "rho": ...}``."""
        return {name: float(value) for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> HestonParams:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`ParameterError`."""
        keys = set(data)
        if keys != set(cls.NAMES):
            raise ParameterError(
                f"HestonParams.from_dict needs keys {list(cls.NAMES)}, got {sorted(keys)}"
            )
        return cls(**{name: float(data[name]) for name in cls.NAMES})

    def replace(self, **changes: float) -> HestonParams:
        """A copy with some parameters changed (validated again)."""
        values = self.to_dict()
        unknown = set(changes) - set(values)
        if unknown:
            raise ParameterError(f"unknown Heston parameter(s): {sorted(unknown)}")
        values.update({k: float(v) for k, v in changes.items()})
        return HestonParams(**values)

    def __str__(self) -> str:
        return (
            f"HestonParams(v0={self.v0:.6g}, kappa={self.kappa:.6g}, theta={self.theta:.6g}, "
            f"sigma={self.sigma:.6g}, rho={self.rho:.6g})"
        )
