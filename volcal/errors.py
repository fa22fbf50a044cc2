"""Exception and warning hierarchy of volcal.

Every exception volcal raises derives from :class:`VolcalError` *and* from the matching
built-in exception, so that callers' ``except ValueError`` keeps working. Every warning
derives from :class:`VolcalWarning`. Messages name the instrument, the field and the value.

Vectorised numerical routines (``implied_vol`` and friends) never raise for bad elements:
they return NaN plus a status code per element, and the caller decides what is fatal.
"""

from __future__ import annotations

__all__ = [
    "ArbitrageWarning",
    "CalibrationError",
    "ChainValidationError",
    "ConfigError",
    "ConvergenceWarning",
    "DataQualityWarning",
    "FetchError",
    "ImpliedVolError",
    "ParameterError",
    "PriceAboveMaximumError",
    "PriceBelowIntrinsicError",
    "ReplayError",
    "StoreError",
    "UnknownInstrumentError",
    "VolcalError",
    "VolcalWarning",
]


class VolcalError(Exception):
    """Base class of every error raised by volcal."""


class ChainValidationError(VolcalError, ValueError):
    """An option chain (or the raw data it is built from) is malformed.

    Parameters
    ----------
    message:
        What is wrong, naming the field and the offending values.
    instruments:
        Instrument names (symbols) that carry the problem, if known.
    field:
        The column or field that is wrong, if a single one.
    """

    def __init__(
        self, message: str, *, instruments: list[str] | None = None, field: str | None = None
    ) -> None:
        self.instruments = list(instruments or [])
        self.field = field
        if self.instruments:
            shown = ", ".join(self.instruments[:10])
            more = len(self.instruments) - 10
            if more > 0:
                shown += f" (and {more} more)"
            message = f"{message} [instruments: {shown}]"
        super().__init__(message)


class ImpliedVolError(VolcalError, ValueError):
    """No implied volatility exists for a single (scalar) option price."""


class PriceBelowIntrinsicError(ImpliedVolError):
    """The option price is below its intrinsic value (or below zero)."""


class PriceAboveMaximumError(ImpliedVolError):
    """The option price is at or above its no-arbitrage upper bound."""


class ParameterError(VolcalError, ValueError):
    """Model parameters are outside their domain (names the parameter and its value)."""


class CalibrationError(VolcalError, RuntimeError):
    """A model could not be calibrated at all (not merely: did not converge)."""


class FetchError(VolcalError, ConnectionError):
    """Fetching from an exchange failed after the allowed retries."""


class ReplayError(VolcalError, LookupError):
    """A replayed request is not on the tape (or the tape is unreadable)."""


class UnknownInstrumentError(VolcalError, KeyError):
    """An instrument (e.g. in a portfolio) is not in the chain."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class ConfigError(VolcalError, ValueError):
    """A configuration file or a command-line option is invalid."""


class StoreError(VolcalError, OSError):
    """The history store could not be read or written."""


class VolcalWarning(UserWarning):
    """Base class of every warning issued by volcal."""


class ConvergenceWarning(VolcalWarning):
    """An optimiser stopped without meeting its convergence criteria."""


class ArbitrageWarning(VolcalWarning):
    """Static arbitrage was found in quotes or in a fitted surface."""


class DataQualityWarning(VolcalWarning):
    """Input data is usable but suspicious (stale, wide, partially missing)."""
