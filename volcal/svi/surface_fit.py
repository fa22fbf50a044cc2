"""Fitting whole surfaces: :class:`SurfaceFit` and :func:`fit_svi`."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from volcal.errors import ArbitrageWarning, CalibrationError, ConvergenceWarning
from volcal.surface import SmileSurface
from volcal.svi.arbitrage import ArbitrageReport, check_surface, quote_arbitrage
from volcal.svi.essvi import EssviSurface
from volcal.svi.grids import k_range
from volcal.svi.params import SviRaw
from volcal.svi.quotes import (
    QuoteSelection,
    SliceQuotes,
    quotes_frame,
    selected_frame,
    selection_arrays,
    selection_columns,
    slices_from_selection,
    with_columns,
)
from volcal.svi.slice_fit import SliceFitResult, SviSliceSettings, fit_svi_slice
from volcal.svi.ssvi import SsviSurface
from volcal.svi.svi_surface import SviSurface

__all__ = [
    "CalibratedSurface",
    "OptimizerReport",
    "SurfaceFit",
    "assemble_fit",
    "fit_surface",
    "fit_svi",
    "prepare_slices",
]

SCHEMA = "volcal.surface_fit/1"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OptimizerReport:
    """How the optimiser(s) of a fit ended.

    Attributes
    ----------
    converged:
        True when every stage met its criteria (and its solution satisfies the constraints).
    iterations, nfev:
        Totals over all stages and expiries.
    message:
        Short text; lists the expiries that did not converge.
    time_s:
        Wall-clock seconds of the fit.
    """

    converged: bool
    iterations: int
    nfev: int
    message: str
    time_s: float


@dataclass(frozen=True, eq=False)
class SurfaceFit:
    """An immutable calibrated surface with its diagnostics.

    Attributes
    ----------
    model:
        ``"svi"``, ``"ssvi"`` or ``"essvi"``.
    surface:
        The fitted :class:`~volcal.surface.VolSurface`.
    params:
        One row per expiry: ``expiry``, ``t``, ``forward``, the model's parameters, ``n_quotes``,
        ``rmse_iv``, ``inside``, ``method``, ``converged``.
    quotes:
        Every input quote with ``used``, ``excluded_reason``, ``iv_mid``, ``weight``,
        ``iv_fit`` (surface vol at the quote), ``residual_iv = iv_fit - iv_mid`` and
        ``outside_iv`` (signed distance outside ``[iv_bid, iv_ask]``, 0 inside); decimal vols.
    rmse_iv:
        Root-mean-square of ``residual_iv`` over used quotes (decimal vol).
    inside_share:
        Share of used quotes whose fitted vol lies in ``[iv_bid, iv_ask]``.
    optimizer:
        :class:`OptimizerReport`.
    arbitrage:
        :class:`~volcal.svi.arbitrage.ArbitrageReport` of the fitted surface and the quotes.
    settings:
        The calibrator's settings (plain dict).
    as_of, underlying, exchange:
        Chain metadata when known.
    """

    model: str
    surface: SmileSurface
    params: pd.DataFrame
    quotes: pd.DataFrame
    rmse_iv: float
    inside_share: float
    optimizer: OptimizerReport
    arbitrage: ArbitrageReport
    settings: dict[str, Any]
    as_of: str = ""
    underlying: str = ""
    exchange: str = ""

    def summary(self) -> str:
        """Text summary: fit quality per expiry, optimiser and arbitrage reports."""
        head = (
            f"{self.model.upper()} surface {self.underlying} {self.exchange} {self.as_of}\n"
            f"quotes used: {int(self.quotes['used'].sum())} of {len(self.quotes)}; "
            f"rmse_iv {self.rmse_iv:.4f}; inside bid/ask {self.inside_share:.1%}\n"
            f"optimizer: converged={self.optimizer.converged} iterations="
            f"{self.optimizer.iterations} nfev={self.optimizer.nfev} "
            f"time={self.optimizer.time_s:.3f}s {self.optimizer.message}\n"
        )
        cols = [
            c
            for c in ("expiry", "t", "n_quotes", "rmse_iv", "inside", "method")
            if c in self.params.columns
        ]
        return head + self.params[cols].to_string(index=False) + "\n" + self.arbitrage.summary()

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form for storage (``schema`` = ``volcal.surface_fit/1``)."""
        params = self.params.copy()
        params["expiry"] = params["expiry"].astype(str)
        q = self.quotes.copy()
        for col in q.columns:
            if isinstance(q[col].dtype, pd.DatetimeTZDtype):
                q[col] = q[col].astype(str)
        return {
            "schema": SCHEMA,
            "model": self.model,
            "as_of": self.as_of,
            "underlying": self.underlying,
            "exchange": self.exchange,
            "surface": _surface_to_dict(self.surface),
            "params": params.to_dict(orient="list"),
            "quotes": q.to_dict(orient="list"),
            "rmse_iv": self.rmse_iv,
            "inside_share": self.inside_share,
            "optimizer": asdict(self.optimizer),
            "arbitrage": self.arbitrage.to_dict(),
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SurfaceFit:
        """Inverse of :meth:`to_dict`."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"unknown SurfaceFit schema {data.get('schema')!r}, want {SCHEMA}")
        surface = _surface_from_dict(data["model"], data["surface"])
        params = pd.DataFrame(data["params"])
        params["expiry"] = pd.to_datetime(params["expiry"], utc=True)
        quotes = pd.DataFrame(data["quotes"])
        if "expiry" in quotes.columns:
            quotes["expiry"] = pd.to_datetime(quotes["expiry"], utc=True)
        return cls(
            model=data["model"],
            surface=surface,
            params=params,
            quotes=quotes,
            rmse_iv=float(data["rmse_iv"]),
            inside_share=float(data["inside_share"]),
            optimizer=OptimizerReport(**data["optimizer"]),
            arbitrage=ArbitrageReport.from_dict(data["arbitrage"]),
            settings=dict(data["settings"]),
            as_of=data["as_of"],
            underlying=data["underlying"],
            exchange=data["exchange"],
        )


def _surface_to_dict(surf: SmileSurface) -> dict[str, Any]:
    if isinstance(surf, SviSurface):
        return {
            "t": list(surf.t),
            "params": [asdict(p) for p in surf.params],
            "forwards": list(surf.forward_curve.forwards),
            "spot": surf.forward_curve.spot,
        }
    if isinstance(surf, (SsviSurface, EssviSurface)):
        return surf.to_dict()
    raise NotImplementedError(f"to_dict for {type(surf).__name__}")


def _surface_from_dict(model: str, s: dict[str, Any]) -> SmileSurface:
    if model == "svi":
        return SviSurface.from_slices(
            s["t"], [SviRaw(**p) for p in s["params"]], s["forwards"], s["spot"]
        )
    if model == "ssvi":
        return SsviSurface.from_dict(s)
    if model == "essvi":
        return EssviSurface.from_dict(s)
    raise ValueError(f"unknown surface model {model!r}")


def _residual_columns(quotes: pd.DataFrame, surface: SmileSurface) -> dict[str, FloatArray]:
    """``iv_fit``, ``residual_iv`` and ``outside_iv`` of the used quotes (NaN elsewhere)."""
    return _residual_arrays(
        quotes["used"].to_numpy(dtype=bool),
        quotes["k"].to_numpy(dtype=float),
        quotes["t"].to_numpy(dtype=float),
        quotes["iv_bid"].to_numpy(dtype=float),
        quotes["iv_ask"].to_numpy(dtype=float),
        quotes["iv_mid"].to_numpy(dtype=float),
        surface,
    )


def _residual_arrays(
    used: npt.NDArray[np.bool_],
    k: FloatArray,
    t: FloatArray,
    ivb: FloatArray,
    iva: FloatArray,
    iv_mid: FloatArray,
    surface: SmileSurface,
) -> dict[str, FloatArray]:
    """:func:`_residual_columns` on arrays (decimal vols; ``k = ln(K/F)``, ``t`` in years)."""
    iv_fit = np.full(used.size, np.nan)
    if used.any():
        tu = t[used]
        iv_fit[used] = np.sqrt(np.maximum(surface.total_variance(k[used], tu), 0.0) / tu)
    outside = np.where(iv_fit > iva, iv_fit - iva, np.where(iv_fit < ivb, iv_fit - ivb, 0.0))
    outside[~used] = np.nan
    return {"iv_fit": iv_fit, "residual_iv": iv_fit - iv_mid, "outside_iv": outside}


def _residuals(quotes: pd.DataFrame, surface: SmileSurface) -> pd.DataFrame:
    """``quotes`` with the columns of :func:`_residual_columns`."""
    return with_columns(quotes, _residual_columns(quotes, surface))


def _prepare(
    chain: Any, min_t: float, min_quotes: int, spread_floor: float, weights: str = "vega_spread"
) -> tuple[pd.DataFrame, QuoteSelection, list[SliceQuotes], tuple[float, float]]:
    """:func:`prepare_slices` with the selection as arrays (:class:`QuoteSelection`): the
    fits hand it to :func:`assemble_fit`, which builds the quotes table once."""
    raw = quotes_frame(chain)
    sel = selection_arrays(
        raw, min_t=min_t, min_quotes=min_quotes, spread_floor=spread_floor, weights=weights
    )
    slices = slices_from_selection(raw, sel)
    if not slices:
        reasons = pd.Series(sel.reason.astype(str)).value_counts().head(5).to_dict()
        raise CalibrationError(f"no expiry has {min_quotes} usable quotes; exclusions: {reasons}")
    lo, hi = np.inf, -np.inf
    for d in slices:
        a, b = k_range(d.k, d.atm_variance)
        lo, hi = min(lo, a), max(hi, b)
    return raw, sel, slices, (float(lo), float(hi))


def prepare_slices(
    chain: Any, min_t: float, min_quotes: int, spread_floor: float, weights: str = "vega_spread"
) -> tuple[pd.DataFrame, pd.DataFrame, list[SliceQuotes], tuple[float, float]]:
    """Select quotes (:func:`volcal.svi.quotes.select_quotes`, weighting scheme ``weights``)
    and split them by expiry.

    Returns
    -------
    tuple
        ``(raw quotes, selected quotes, slices, (k_lo, k_hi))``; ``k_lo, k_hi`` is the padded
        log-moneyness range of all expiries (:func:`volcal.svi.grids.k_range`).

    Raises
    ------
    CalibrationError
        When no expiry has enough usable quotes.
    """
    raw, sel, slices, k_bounds = _prepare(chain, min_t, min_quotes, spread_floor, weights)
    return raw, selected_frame(raw, sel), slices, k_bounds


def assemble_fit(
    model: str,
    chain: Any,
    raw: pd.DataFrame,
    selected: pd.DataFrame | QuoteSelection,
    slices: list[SliceQuotes],
    surface: SmileSurface,
    rows: list[dict[str, Any]],
    local: list[tuple[float, float]],
    k_bounds: tuple[float, float],
    *,
    converged: list[bool],
    iterations: int,
    nfev: int,
    message: str,
    start: float,
    settings: dict[str, Any],
) -> SurfaceFit:
    """Residuals, per-expiry table, arbitrage report and optimiser report of a fitted surface.

    ``rows`` holds each expiry's model parameters (and ``method``, ``converged``...);
    ``local`` the ``(m, sigma)`` scales of the smiles for the arbitrage grid. ``selected``
    is the table of :func:`prepare_slices` or, from the fits, the :class:`QuoteSelection` of
    ``raw`` (then the quotes table is built in one step).
    """
    if isinstance(selected, QuoteSelection):
        used = selected.used
        cols = _residual_arrays(
            used,
            selected.k,
            selected.t,
            selected.iv_bid,
            selected.iv_ask,
            selected.iv_mid,
            surface,
        )
        quotes = with_columns(raw, selection_columns(selected) | cols)
    else:
        used = selected["used"].to_numpy(dtype=bool)
        cols = _residual_columns(selected, surface)
        quotes = with_columns(selected, cols)
    resid = cols["residual_iv"]
    outside = cols["outside_iv"]
    # row positions of every slice's quotes, looked up at once
    sizes = [len(d.index) for d in slices]
    every = (
        quotes.index.get_indexer(slices[0].index.append([d.index for d in slices[1:]]))
        if slices
        else np.zeros(0, dtype=np.intp)
    )
    table = []
    for d, extra, ix in zip(slices, rows, np.split(every, np.cumsum(sizes)[:-1]), strict=True):
        table.append(
            {"expiry": d.expiry, "t": d.t, "forward": d.forward}
            | extra
            | {
                "n_quotes": int(d.k.size),
                "rmse_iv": float(np.sqrt(np.mean(resid[ix] ** 2))),
                "inside": float(np.mean(outside[ix] == 0.0)),
            }
        )
    params = pd.DataFrame(table)
    report = check_surface(surface, k_bounds[0], k_bounds[1], local, quote_arbitrage(quotes))
    bad = [str(d.expiry.date()) for d, ok in zip(slices, converged, strict=True) if not ok]
    if bad:
        message = f"not converged: {', '.join(bad)} ({message})"
    elif model == "svi":
        message = "all expiries converged"
    optimizer = OptimizerReport(
        converged=not bad,
        iterations=int(iterations),
        nfev=int(nfev),
        message=message,
        time_s=time.perf_counter() - start,
    )
    return SurfaceFit(
        model=model,
        surface=surface,
        params=params,
        quotes=quotes,
        rmse_iv=float(np.sqrt(np.mean(resid[used] ** 2))),
        inside_share=float(np.mean(outside[used] == 0.0)),
        optimizer=optimizer,
        arbitrage=report,
        settings=settings,
        as_of=str(getattr(chain, "as_of", "")),
        underlying=str(getattr(chain, "underlying", "")),
        exchange=str(getattr(chain, "exchange", "")),
    )


@dataclass(frozen=True)
class CalibratedSurface:
    """What a model's calibrator hands to :func:`fit_surface`.

    Attributes
    ----------
    surface:
        The fitted surface.
    rows:
        Each expiry's model parameters (and ``method``, ``converged``...), one dict a slice.
    local:
        The ``(m, sigma)`` scales of the smiles (raw SVI, ``k`` units) for the arbitrage grid.
    converged:
        Per expiry, whether its optimiser met its criteria.
    iterations, nfev:
        Totals over all stages and expiries.
    message:
        Optimiser message (prefixed with the expiries that did not converge).
    """

    surface: SmileSurface
    rows: list[dict[str, Any]]
    local: list[tuple[float, float]]
    converged: list[bool]
    iterations: int
    nfev: int
    message: str


Calibrator = Callable[[pd.DataFrame, list[SliceQuotes], tuple[float, float]], CalibratedSurface]


def fit_surface(
    model: str,
    chain: Any,
    calibrate: Calibrator,
    settings: Any,
    min_t: float,
    min_quotes: int,
    spread_floor: float,
    weights: str,
) -> SurfaceFit:
    """The front end shared by :func:`fit_svi`, :func:`~volcal.svi.ssvi.fit_ssvi` and
    :func:`~volcal.svi.essvi.fit_essvi`: quote selection, calibration, assembly, warnings.

    Parameters
    ----------
    model:
        ``"svi"``, ``"ssvi"`` or ``"essvi"`` (``SurfaceFit.model``; upper-cased in warnings).
    chain:
        As in :func:`fit_svi`.
    calibrate:
        ``calibrate(raw quotes, slices, (k_lo, k_hi))`` -> :class:`CalibratedSurface`; the
        slices are those of :func:`prepare_slices` (shortest expiry first), ``k_lo, k_hi``
        the padded log-moneyness range ``k = ln(K/F)`` of all expiries.
    settings:
        The model's settings (a dataclass), stored with the selection arguments as
        ``SurfaceFit.settings``.
    min_t, min_quotes, spread_floor, weights:
        Quote selection (``min_t`` in years ACT/365F, ``spread_floor`` in decimal vol), as in
        :func:`fit_svi`.

    Returns
    -------
    SurfaceFit
        Assembled by :func:`assemble_fit`.

    Raises
    ------
    CalibrationError
        When no expiry has enough usable quotes.

    Notes
    -----
    Warns :class:`~volcal.errors.ConvergenceWarning` when an optimiser did not converge and
    :class:`~volcal.errors.ArbitrageWarning` when the dense-grid check finds static arbitrage
    in the fitted surface; both point at the caller of the public ``fit_*`` function, which
    must call this one directly.
    """
    start = time.perf_counter()
    raw, selected, slices, k_bounds = _prepare(chain, min_t, min_quotes, spread_floor, weights)
    c = calibrate(raw, slices, k_bounds)
    fit = assemble_fit(
        model,
        chain,
        raw,
        selected,
        slices,
        c.surface,
        c.rows,
        c.local,
        k_bounds,
        converged=c.converged,
        iterations=c.iterations,
        nfev=c.nfev,
        message=c.message,
        start=start,
        settings=asdict(settings)
        | {
            "min_t": min_t,
            "min_quotes": min_quotes,
            "spread_floor": spread_floor,
            "weights": weights,
        },
    )
    name = model.upper()
    if not fit.optimizer.converged:
        warnings.warn(f"{name} fit: {fit.optimizer.message}", ConvergenceWarning, stacklevel=3)
    if not fit.arbitrage.arbitrage_free:
        warnings.warn(
            f"{name} surface has static arbitrage: {fit.arbitrage.summary()}",
            ArbitrageWarning,
            stacklevel=3,
        )
    return fit


def fit_svi(
    chain: Any,
    *,
    min_t: float = 2.0 / 365.0,
    min_quotes: int = 6,
    spread_floor: float = 0.005,
    weights: str = "vega_spread",
    settings: SviSliceSettings | None = None,
) -> SurfaceFit:
    """Fit a raw SVI smile per expiry, free of static arbitrage, to a chain's quotes.

    Parameters
    ----------
    chain:
        An ``OptionChain`` (anything with a ``.quotes`` DataFrame) or a quotes DataFrame with
        the columns of ``docs/conventions.md``.
    min_t, min_quotes, spread_floor, weights:
        Quote selection and weighting scheme (:func:`volcal.svi.quotes.select_quotes`:
        ``"vega_spread"``, ``"vega"`` or ``"uniform"``).
    settings:
        Per-smile calibration settings (:class:`~volcal.svi.slice_fit.SviSliceSettings`).

    Returns
    -------
    SurfaceFit
        Each smile is fitted by :func:`~volcal.svi.slice_fit.fit_svi_slice` under the
        butterfly constraints, from the longest expiry to the shortest, each under
        ``w(k) <= w_j(k)`` for every longer expiry ``j`` on ``j``'s quoted ``k`` range
        (calendar constraints in the calibration). The surface
        (:class:`~volcal.svi.svi_surface.SviSurface`) takes the running upper envelope of the
        smiles, which only lifts longer smiles' extrapolated wings outside their quotes: it
        is calendar-free by construction.

    Raises
    ------
    CalibrationError
        When no expiry has enough usable quotes.

    Warns
    -----
    ConvergenceWarning
        When a smile's optimiser did not converge.
    ArbitrageWarning
        When the dense-grid check finds static arbitrage in the fitted surface.
    """
    s = settings or SviSliceSettings()

    def calibrate(
        raw: pd.DataFrame, slices: list[SliceQuotes], k_bounds: tuple[float, float]
    ) -> CalibratedSurface:
        # longest expiry first; each shorter smile is fitted under w <= every longer smile on
        # that smile's quoted k range, where the longer smile is determined by its quotes.
        # Outside them the surface's running envelope lifts a longer smile's extrapolated
        # wing, so no quote is moved by it (calendar-free by calibration where it matters)
        results: list[SliceFitResult] = []
        ceilings: list[tuple[SviRaw, float, float]] = []
        for d in reversed(slices):
            r = fit_svi_slice(d, settings=s, k_bounds=k_bounds, ceilings=ceilings)
            results.append(r)
            ceilings = [(r.params, float(d.k[0]), float(d.k[-1])), *ceilings]
        results.reverse()
        spot: float | None = None
        if "index_price" in raw.columns and raw["index_price"].notna().any():
            spot = float(np.nanmedian(raw["index_price"].to_numpy(dtype=float)))
        surface = SviSurface.from_slices(
            [d.t for d in slices], [r.params for r in results], [d.forward for d in slices], spot
        )
        rows = [
            {
                "a": r.params.a,
                "b": r.params.b,
                "rho": r.params.rho,
                "m": r.params.m,
                "sigma": r.params.sigma,
                "objective": r.objective,
                "method": r.method,
                "converged": r.converged,
                "iterations": r.iterations,
                "message": r.message,
            }
            for r in results
        ]
        return CalibratedSurface(
            surface=surface,
            rows=rows,
            local=[(r.params.m, r.params.sigma) for r in results],
            converged=[r.converged for r in results],
            iterations=sum(r.iterations for r in results),
            nfev=sum(r.nfev for r in results),
            message="",
        )

    return fit_surface("svi", chain, calibrate, s, min_t, min_quotes, spread_floor, weights)
