"""The daily job's steps as functions (the CLI is a thin layer over them).

Data flows one way: tape, snapshot or live fetch → chain → fits (SVI/SSVI/eSSVI, Heston) →
arbitrage checks → margin → store → report. Each step is isolated: a currency whose input
fails, or a model or portfolio that raises, is recorded as failed with its error and the others
go on (:func:`process_chain` never raises for a model's failure).

The model steps call volcal's fitting functions when this volcal provides them
(:func:`available_models`); their results are flattened into plain tables
(:class:`ModelResult`) so that the store, the report and the backfill's workers need nothing
but DataFrames.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from volcal.chain import OptionChain
from volcal.config import KNOWN_MODELS, FitSettings, JobConfig, MarginSettings
from volcal.errors import ConfigError

log = logging.getLogger("volcal.jobs")

__all__ = [
    "InputSpec",
    "JobOutcome",
    "MarginResult",
    "ModelResult",
    "SnapshotResult",
    "SourceInfo",
    "available_models",
    "load_input",
    "load_inputs",
    "plan_inputs",
    "process_chain",
    "run_job",
    "standard_portfolios",
]

TAPE_GLOB = "*.jsonl.gz"

EXCHANGE_TICK_COIN: dict[str, float] = {"deribit": 1e-4}
"""Premium tick in coin where the exchange quotes options in coin (Deribit: 0.0001 BTC/ETH)."""

SMILE_POINTS = 61
"""Points per fitted smile curve kept for the report."""
SKEW_STEP = 0.01
"""Half-width in ``k`` of the central difference giving a model's ATM skew."""

# ``warnings.catch_warnings`` swaps process-wide state: concurrent captures in threads (the
# backfill's thread workers) would restore each other's filters. One lock serialises them.
_WARNINGS_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class SourceInfo:
    """Where a chain came from: ``kind`` (tape, snapshot, live), file ``path`` and its SHA-256."""

    kind: str
    path: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain form."""
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256}


@dataclass(frozen=True)
class InputSpec:
    """One chain to load: ``exchange``/``currency`` (``exchange`` may be ``""`` for a snapshot
    until loaded), ``kind`` (tape, snapshot, live), the file ``path`` and the instant ``at``."""

    exchange: str
    currency: str
    kind: str
    path: Path | None = None
    at: str | None = None

    @property
    def label(self) -> str:
        """``"deribit BTC"``."""
        return f"{self.exchange or '?'} {self.currency}"


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plan_inputs(cfg: JobConfig) -> list[InputSpec]:
    """The chains a run loads, from the configuration (no chain is built yet).

    Raises
    ------
    ConfigError
        Nothing to load, a file that does not exist, or a snapshot/live run without currencies.
    """
    inp = cfg.input
    wanted = set(cfg.currencies)
    exchanges = set(cfg.exchanges)
    if inp.source == "snapshot":
        if not wanted:
            raise ConfigError("--snapshot needs --currency (e.g. --currency BTC ETH)")
        path = Path(str(inp.snapshot))
        if not path.exists():
            raise ConfigError(f"snapshot file not found: {path}")
        return [InputSpec("", c, "snapshot", path, inp.at) for c in sorted(wanted)]
    if inp.source == "live":
        if not wanted:
            raise ConfigError("a live run needs currencies (--currency BTC ETH)")
        from volcal.data.exchanges import SUPPORTED_EXCHANGES

        specs: list[InputSpec] = []
        for ex in cfg.exchanges or ("deribit",):
            if ex not in SUPPORTED_EXCHANGES:
                choices = ", ".join(SUPPORTED_EXCHANGES)
                raise ConfigError(f"unknown exchange {ex!r}; choose one of {choices}")
            specs.extend(InputSpec(ex, c, "live") for c in sorted(wanted))
        return specs

    from volcal.data.tape import read_tape

    if inp.source == "replay":
        paths = [Path(p) for p in inp.replay]
    else:
        data_dir = Path(inp.data)
        paths = sorted(data_dir.glob(TAPE_GLOB))
        if not paths:
            raise ConfigError(f"no tapes ({TAPE_GLOB}) in {data_dir}; pass --replay or --snapshot")
    specs = []
    for path in paths:
        if not path.exists():
            raise ConfigError(f"tape not found: {path}")
        try:
            header = read_tape(path).header
        except Exception as exc:  # unreadable: recorded when loading, not fatal here
            log.warning("cannot read the header of %s: %s", path, exc)
            header = {}
        currency = str(header.get("currency", "")).upper()
        exchange = str(header.get("exchange", "")).lower()
        if wanted and currency not in wanted:
            continue
        if exchanges and exchange not in exchanges:
            continue
        specs.append(InputSpec(exchange, currency, "tape", path))
    if not specs:
        raise ConfigError(
            f"no tape for currencies {sorted(wanted)} / exchanges {sorted(exchanges)} in "
            f"{[str(p) for p in paths]}"
        )
    return specs


def load_input(spec: InputSpec, *, tape_dir: Path | None = None) -> tuple[OptionChain, SourceInfo]:
    """Build the chain of one :class:`InputSpec`.

    Parameters
    ----------
    spec:
        What to load.
    tape_dir:
        Folder for the tape a live fetch records (default: ``tapes`` in the working folder).

    Raises
    ------
    VolcalError
        From the loaders (replay, validation, fetch); the job records it per currency.
    """
    if spec.kind == "snapshot":
        from volcal.data.snapshots import load_snapshot

        assert spec.path is not None
        got = load_snapshot(spec.path, spec.currency, spec.at)
        chain = got[-1] if isinstance(got, list) else got  # latest instant when no time given
        return chain, SourceInfo("snapshot", str(spec.path), sha256_file(spec.path))

    from volcal.data.exchanges import fetch_chain

    if spec.kind == "live":
        stamp = pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%SZ")
        tape = (tape_dir or Path("tapes")) / f"{spec.exchange}-{spec.currency}-{stamp}.jsonl.gz"
        chain = fetch_chain(spec.exchange, spec.currency, tape=tape)
        return chain, SourceInfo("live", str(tape), sha256_file(tape) if tape.exists() else None)

    from volcal.data.tape import replay as replay_tape

    assert spec.path is not None
    log.info("replaying %s (%s)", spec.path, spec.label)
    chain = fetch_chain(replay_tape(spec.path), spec.currency)
    return chain, SourceInfo("tape", str(spec.path), sha256_file(spec.path))


def load_inputs(
    *,
    data_dir: Path,
    replay: Sequence[str] | None = None,
    snapshot: str | None = None,
    currencies: Sequence[str] | None = None,
    at: str | None = None,
) -> list[OptionChain]:
    """Chains to process: replayed tapes, a snapshot file, or every tape in ``data_dir``.

    Parameters
    ----------
    data_dir:
        Folder searched for tapes (``*.jsonl.gz``) when neither ``replay`` nor ``snapshot`` is
        given (the shipped synthetic tapes in ``data/``).
    replay:
        Tape files; each is replayed through ccxt's own parsers (no network).
    snapshot:
        A snapshot file in a format :func:`volcal.load_snapshot` reads; needs ``currencies``
        and picks the instant at or just before ``at`` (the latest when ``at`` is None).
    currencies:
        Restrict to these underlyings (tapes) or load these (snapshot).

    Raises
    ------
    ConfigError
        Nothing to load, or a file that does not exist.
    """
    source = "snapshot" if snapshot is not None else ("replay" if replay else "tapes")
    cfg = JobConfig().with_overrides(
        source=source,
        data=str(data_dir),
        replay=list(replay or []),
        snapshot=snapshot,
        at=at,
        currencies=[c.upper() for c in currencies] if currencies else None,
    )
    return [load_input(spec)[0] for spec in plan_inputs(cfg)]


# ---------------------------------------------------------------------------------------------
# results as plain tables


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=list(columns), dtype=object)


PARAM_COLUMNS = ("expiry", "param", "value")
DIAG_COLUMNS = ("expiry", "metric", "value")
ARB_COLUMNS = ("check", "expiry", "t", "value", "violated", "detail")
CURVE_COLUMNS = ("expiry", "t", "k", "iv")
TERM_COLUMNS = ("expiry", "t", "forward", "atm_vol", "atm_skew")

_PER_EXPIRY_DIAGNOSTICS = frozenset(
    {"n_quotes", "rmse_iv", "inside", "objective", "converged", "iterations", "nfev"}
)


@dataclass(eq=False)
class ModelResult:
    """One model fitted to one chain, flattened.

    Attributes
    ----------
    model:
        ``"svi"``, ``"ssvi"``, ``"essvi"``, ``"heston"``.
    status:
        ``ok``; ``warning`` (converged with warnings: no convergence on some expiry, arbitrage
        in the fitted surface, numerical warnings); ``failed`` (raised: ``error``); ``skipped``
        (not available in this volcal).
    error:
        ``"ExceptionType: message"`` when failed.
    warnings:
        Messages of the warnings the fit issued.
    elapsed_s:
        Wall time of the fit and its post-processing, seconds.
    summary:
        ``rmse_iv`` (decimal vol), ``converged``, ``inside_share``, ``n_used``, ``message``,
        ``arbitrage_free`` (when known).
    params:
        Long: ``expiry`` (NaT for whole-surface parameters), ``param``, ``value``.
    diagnostics:
        Long: ``expiry`` (NaT = whole fit), ``metric``, ``value``.
    arbitrage:
        ``check, expiry, t, value, violated, detail`` for the fitted surface.
    quote_arbitrage:
        The same for the raw quotes (violated spreads), when the fit reports them.
    curves:
        The fitted smile per expiry on a grid: ``expiry, t, k, iv``.
    term:
        ``expiry, t, forward, atm_vol, atm_skew`` from the fitted surface.
    settings:
        The keyword arguments passed to the fit.
    fit:
        The fit object itself (None once dropped, e.g. before leaving a backfill worker).
    """

    model: str
    status: str
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    params: pd.DataFrame = field(default_factory=lambda: _empty(PARAM_COLUMNS))
    diagnostics: pd.DataFrame = field(default_factory=lambda: _empty(DIAG_COLUMNS))
    arbitrage: pd.DataFrame = field(default_factory=lambda: _empty(ARB_COLUMNS))
    quote_arbitrage: pd.DataFrame = field(default_factory=lambda: _empty(ARB_COLUMNS))
    curves: pd.DataFrame = field(default_factory=lambda: _empty(CURVE_COLUMNS))
    term: pd.DataFrame = field(default_factory=lambda: _empty(TERM_COLUMNS))
    settings: dict[str, Any] = field(default_factory=dict)
    fit: Any = None


@dataclass(eq=False)
class MarginResult:
    """Margin of one portfolio on one chain.

    ``metrics`` is long (``metric, value, unit``): the report's totals
    (``initial_margin_usd``, ...) and each component (``delta_addon_usd``, ...); ``detail``
    says which parameters were used and the worst scenario; ``standard`` marks the standard
    test books.
    """

    portfolio: str
    model: str
    status: str
    error: str = ""
    metrics: pd.DataFrame = field(default_factory=lambda: _empty(("metric", "value", "unit")))
    standard: bool = False
    detail: str = ""


@dataclass(eq=False)
class SnapshotResult:
    """Everything the job produced for one (exchange, currency) input.

    Attributes
    ----------
    spec, source:
        What was loaded and from where.
    chain:
        The chain (None when loading failed).
    status:
        ``ok``, ``warning``, ``failed`` (some model or margin failed) or ``load_failed``.
    error:
        The loading error when ``load_failed``.
    warnings:
        Snapshot-level warnings (e.g. arbitrage in the raw quotes).
    market_term:
        ATM vol and skew from the mark IVs: ``expiry, t, forward, atm_vol, atm_skew``.
    models, margins:
        Per model and portfolio.
    elapsed_s:
        Wall time.
    """

    spec: InputSpec
    source: SourceInfo
    chain: OptionChain | None = None
    status: str = "ok"
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    market_term: pd.DataFrame = field(default_factory=lambda: _empty(TERM_COLUMNS))
    models: list[ModelResult] = field(default_factory=list)
    margins: list[MarginResult] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def exchange(self) -> str:
        """Exchange id."""
        return self.chain.exchange if self.chain is not None else self.spec.exchange

    @property
    def currency(self) -> str:
        """Underlying coin."""
        return self.chain.underlying if self.chain is not None else self.spec.currency

    @property
    def label(self) -> str:
        """``"deribit BTC"``."""
        return f"{self.exchange} {self.currency}"

    def problems(self) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        """``(errors, warnings)`` as ``{exchange, currency, model, message}`` dicts."""
        errors: list[dict[str, str]] = []
        warns: list[dict[str, str]] = []
        head = {"exchange": self.exchange, "currency": self.currency}
        if self.error:
            errors.append({**head, "model": "", "message": self.error})
        warns.extend({**head, "model": "", "message": w} for w in self.warnings)
        for m in self.models:
            if m.status == "failed":
                errors.append({**head, "model": m.model, "message": m.error})
            warns.extend({**head, "model": m.model, "message": w} for w in m.warnings)
        for g in self.margins:
            if g.status == "failed":
                errors.append({**head, "model": f"margin:{g.portfolio}", "message": g.error})
        return errors, warns

    def without_fits(self) -> SnapshotResult:
        """The same result with the fit objects dropped (plain data only, picklable)."""
        for m in self.models:
            m.fit = None
        return self

    def to_tables(self) -> Any:
        """The rows of every per-snapshot store table (:class:`volcal.store.SnapshotTables`)."""
        from volcal.store import SnapshotTables, _chain_frame

        if self.chain is None:
            raise ValueError(f"{self.label}: no chain to store ({self.error})")
        chain = self.chain
        q = chain.quotes
        snap = {
            "source_kind": self.source.kind,
            "source_path": self.source.path,
            "source_sha256": self.source.sha256,
            "n_quotes": len(q),
            "n_usable": int((q["filter_reason"] == "").sum()),
            "n_expiries": len(chain.expiries),
            "status": self.status,
            "warnings": _json(self.warnings),
        }
        term = [self.market_term.assign(model="market")]
        fits_rows, params, diags, arbs = [], [], [], []
        quote_arb_done = False
        for m in self.models:
            s = m.summary
            fits_rows.append(
                {
                    "model": m.model,
                    "status": m.status,
                    "converged": s.get("converged"),
                    "rmse_iv": s.get("rmse_iv"),
                    "inside_share": s.get("inside_share"),
                    "n_used": s.get("n_used"),
                    "elapsed_s": m.elapsed_s,
                    "message": str(s.get("message", "")),
                    "error": m.error,
                    "warnings": _json(m.warnings),
                    "settings": _json(m.settings),
                }
            )
            params.append(m.params.assign(model=m.model))
            diags.append(m.diagnostics.assign(model=m.model))
            arbs.append(m.arbitrage.assign(model=m.model))
            if len(m.quote_arbitrage) and not quote_arb_done:
                arbs.append(m.quote_arbitrage.assign(model="quotes"))
                quote_arb_done = True
            term.append(m.term.assign(model=m.model))
        margin_rows = []
        for g in self.margins:
            if len(g.metrics):
                margin_rows.append(
                    g.metrics.assign(
                        portfolio=g.portfolio, model=g.model, status=g.status, error=g.error
                    )
                )
            else:
                margin_rows.append(
                    pd.DataFrame(
                        [
                            {
                                "portfolio": g.portfolio,
                                "model": g.model,
                                "metric": None,
                                "value": np.nan,
                                "unit": None,
                                "status": g.status,
                                "error": g.error,
                            }
                        ]
                    )
                )
        tables = {
            "chains": _chain_frame(q),
            "term_structure": _concat(term),
            "fits": pd.DataFrame(fits_rows),
            "fit_params": _concat(params),
            "fit_diagnostics": _concat(diags),
            "arbitrage": _concat(arbs),
            "margin": _concat(margin_rows),
        }
        return SnapshotTables(chain.exchange, chain.underlying, chain.as_of, snap, tables)

    def to_summary(self) -> dict[str, Any]:
        """The JSON-friendly summary of this result (``summary.json``)."""
        out: dict[str, Any] = {
            "exchange": self.exchange,
            "underlying": self.currency,
            "status": self.status,
            "source": self.source.to_dict(),
            "warnings": list(self.warnings),
        }
        if self.error:
            out["error"] = self.error
        if self.chain is None:
            return out
        table = self.chain.summary()
        out["as_of"] = self.chain.as_of.isoformat()
        out["options"] = len(self.chain.quotes)
        out["expiries"] = _records(table)
        out["models"] = {
            m.model: {
                "status": m.status,
                "error": m.error,
                "warnings": list(m.warnings),
                "elapsed_s": round(m.elapsed_s, 4),
                **{k: _plain(v) for k, v in m.summary.items()},
            }
            for m in self.models
        }
        out["margin"] = [
            {
                "portfolio": g.portfolio,
                "model": g.model,
                "status": g.status,
                "error": g.error,
                "metrics": {str(r.metric): _plain(r.value) for r in g.metrics.itertuples()},
            }
            for g in self.margins
        ]
        return out


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str, sort_keys=True)


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if np.isfinite(f) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    import json

    return list(json.loads(table.to_json(orient="records", date_format="iso")))


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    keep = [f for f in frames if len(f)]
    if not keep:
        return pd.DataFrame()
    return pd.concat(keep, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# models


def _fit_svi_family(model: str, chain: OptionChain, fit: FitSettings) -> Any:
    from volcal.svi import fit_essvi, fit_ssvi, fit_svi

    fitter = {"ssvi": fit_ssvi, "essvi": fit_essvi}.get(model, fit_svi)
    return fitter(
        chain, min_t=fit.min_t_days / 365.0, min_quotes=fit.min_quotes, weights=fit.weights
    )


def _fit_heston(chain: OptionChain, fit: FitSettings) -> Any:
    """Heston on the chain's out-of-the-money marks in USD; sub-tick wings do not steer it and
    expiries shorter than ``heston_min_t_days`` are priced but not fitted (docs/heston.md)."""
    from volcal.heston import HestonQuotes, fit_heston

    frame, weight_column = chain.quotes, None
    if fit.weights != "uniform":
        frame, weight_column = _with_heston_weights(frame, fit.weights), "heston_weight"
    quotes = HestonQuotes.coerce(
        frame, tick_coin=EXCHANGE_TICK_COIN.get(chain.exchange), weight_column=weight_column
    )
    engine: Literal["fast", "quantlib"] = "quantlib" if fit.heston_engine == "quantlib" else "fast"
    return fit_heston(quotes, engine=engine, min_t=fit.heston_min_t_days / 365.0)


def _with_heston_weights(quotes: pd.DataFrame, scheme: str) -> pd.DataFrame:
    """``quotes`` plus ``heston_weight``: the squared quote weights ``W_i^2`` of ``scheme``
    (:func:`volcal.svi.quotes.quote_weights`, per unit of vol, at the mark vol), since Heston's
    objective weights squared vol errors; scaled to mean 1. Quotes without the inputs (e.g.
    one-sided, so no ``iv_bid``/``iv_ask``) get the smallest weight of the chain."""
    from volcal.svi.quotes import quote_weights

    usable = (quotes["filter_reason"] == "").to_numpy()
    w = quote_weights(quotes, usable, scheme, vol_column="iv_mark")
    ok = np.isfinite(w) & (w > 0) & usable
    if not ok.any():
        return quotes.assign(heston_weight=1.0)
    w2 = np.where(ok, w, np.min(w[ok])) ** 2
    return quotes.assign(heston_weight=w2 / np.mean(w2[ok]))


MODEL_FITTERS: dict[str, Callable[[OptionChain, FitSettings], Any]] = {
    "svi": lambda chain, fit: _fit_svi_family("svi", chain, fit),
    "ssvi": lambda chain, fit: _fit_svi_family("ssvi", chain, fit),
    "essvi": lambda chain, fit: _fit_svi_family("essvi", chain, fit),
    "heston": _fit_heston,
}
"""How the job fits each model of :data:`volcal.config.KNOWN_MODELS`."""


def available_models() -> tuple[str, ...]:
    """The models the job fits, in :data:`KNOWN_MODELS` order."""
    return tuple(m for m in KNOWN_MODELS if m in MODEL_FITTERS)


def _fit_settings_record(model: str, fit: FitSettings) -> dict[str, Any]:
    """The settings a model's fit ran with, as stored with its result."""
    if model == "heston":
        return {
            "engine": fit.heston_engine,
            "min_t_days": fit.heston_min_t_days,
            "weights": fit.weights,
        }
    return {"min_t_days": fit.min_t_days, "min_quotes": fit.min_quotes, "weights": fit.weights}


@contextmanager
def _captured() -> Iterator[list[warnings.WarningMessage]]:
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _warning_text(w: warnings.WarningMessage) -> str:
    return f"{w.category.__name__}: {w.message}"


def _surface_of(fit: Any) -> Any:
    s = getattr(fit, "surface", None)
    if s is not None and not hasattr(s, "total_variance") and callable(s):
        s = s()
    return s if hasattr(s, "total_variance") else None


def _implied(surface: Any, k: np.ndarray, t: np.ndarray) -> np.ndarray:
    w = np.asarray(surface.total_variance(k, t), dtype=np.float64)
    out = np.full(w.shape, np.nan)
    ok = np.isfinite(w) & (w >= 0) & (t > 0)
    out[ok] = np.sqrt(w[ok] / np.broadcast_to(t, w.shape)[ok])
    return out


def _fit_expiries(
    fit: Any, chain: OptionChain, min_t: float
) -> list[tuple[pd.Timestamp, float, float]]:
    """(expiry, t, forward) the fitted surface is meant for: the fit's own expiries when it
    lists them, else the chain's expiries with ``t >= min_t``."""
    params = getattr(fit, "params", None)
    if isinstance(params, pd.DataFrame) and {"expiry", "t"} <= set(params.columns):
        fwd = params["forward"] if "forward" in params.columns else pd.Series(np.nan, params.index)
        return [
            (pd.Timestamp(e), float(t), float(f))
            for e, t, f in zip(params["expiry"], params["t"], fwd, strict=True)
        ]
    summary = chain.summary()
    keep = summary["t"] >= min_t
    return [
        (pd.Timestamp(e), float(t), float(f))
        for e, t, f in zip(
            summary.loc[keep, "expiry"],
            summary.loc[keep, "t"],
            summary.loc[keep, "forward"],
            strict=True,
        )
    ]


def _curves_and_term(
    surface: Any, chain: OptionChain, expiries: list[tuple[pd.Timestamp, float, float]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not expiries:
        return _empty(CURVE_COLUMNS), pd.DataFrame(columns=list(TERM_COLUMNS))
    q = chain.quotes
    k_all = q["k"].to_numpy(dtype=float)
    ok = (q["filter_reason"].to_numpy() == "") & np.isfinite(k_all)
    k_ok, expiry_ok = k_all[ok], pd.DatetimeIndex(q["expiry"]).asi8[ok]
    h = SKEW_STEP
    ks, ts = [], []
    for expiry, t, _ in expiries:
        kx = k_ok[expiry_ok == pd.Timestamp(expiry).as_unit("ns").value]
        lo, hi = (float(kx.min()), float(kx.max())) if kx.size else (-0.3, 0.3)
        pad = 0.05 * (hi - lo) + 1e-3
        # the smile grid, then the three points of the ATM vol and skew
        ks.append(np.concatenate([np.linspace(lo - pad, hi + pad, SMILE_POINTS), [-h, 0.0, h]]))
        ts.append(np.full(SMILE_POINTS + 3, t))
    iv = _implied(surface, np.concatenate(ks), np.concatenate(ts))
    iv = iv.reshape(len(expiries), SMILE_POINTS + 3)
    grid = np.stack(ks)[:, :SMILE_POINTS]
    n = SMILE_POINTS
    curves = pd.DataFrame(
        {
            "expiry": np.repeat(np.array([e for e, _, _ in expiries], dtype=object), n),
            "t": np.repeat([t for _, t, _ in expiries], n),
            "k": grid.ravel(),
            "iv": iv[:, :n].ravel(),
        }
    )
    curves["expiry"] = pd.to_datetime(curves["expiry"], utc=True)
    term = pd.DataFrame(
        {
            "expiry": pd.to_datetime([e for e, _, _ in expiries], utc=True),
            "t": [float(t) for _, t, _ in expiries],
            "forward": [float(f) for _, _, f in expiries],
            "atm_vol": iv[:, n + 1],
            "atm_skew": (iv[:, n + 2] - iv[:, n]) / (2 * h),
        },
        columns=list(TERM_COLUMNS),
    )
    return curves, term


def _arbitrage_rows(report: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(surface checks, raw-quote violations) of an arbitrage report with ``butterfly``,
    ``calendar`` and ``quote_violations`` tables."""
    rows = []
    bf = getattr(report, "butterfly", None)
    if isinstance(bf, pd.DataFrame):
        for r in bf.itertuples():
            g = float(getattr(r, "g_min", np.nan))
            rows.append(
                {
                    "check": "butterfly",
                    "expiry": pd.NaT,
                    "t": float(getattr(r, "t", np.nan)),
                    "value": g,
                    "violated": bool(g < 0),
                    "detail": f"k_at_min={getattr(r, 'k_at_min', np.nan):.4g}",
                }
            )
    cal = getattr(report, "calendar", None)
    if isinstance(cal, pd.DataFrame):
        for r in cal.itertuples():
            n = int(getattr(r, "n_violations", 0))
            rows.append(
                {
                    "check": "calendar",
                    "expiry": pd.NaT,
                    "t": float(getattr(r, "t1", np.nan)),
                    "value": float(getattr(r, "dw_min", np.nan)),
                    "violated": n > 0,
                    "detail": f"t0={getattr(r, 't0', np.nan):.5g} violations={n}",
                }
            )
    quotes = []
    qv = getattr(report, "quote_violations", None)
    if isinstance(qv, pd.DataFrame):
        for r in qv.itertuples():
            quotes.append(
                {
                    "check": f"quote_{getattr(r, 'kind', '')}",
                    "expiry": pd.to_datetime(getattr(r, "expiry", "NaT"), utc=True),
                    "t": np.nan,
                    "value": float(getattr(r, "amount", np.nan)),
                    "violated": True,
                    "detail": "strikes " + _strikes(getattr(r, "strikes", ())),
                }
            )
    return (
        pd.DataFrame(rows, columns=list(ARB_COLUMNS)),
        pd.DataFrame(quotes, columns=list(ARB_COLUMNS)),
    )


def _strikes(value: Any) -> str:
    try:
        return ", ".join(f"{float(x):g}" for x in value)
    except (TypeError, ValueError):
        return str(value)


def _numeric(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return None


def _per_expiry_from_quotes(fit: Any, chain: OptionChain) -> list[dict[str, Any]]:
    """``rmse_iv``, ``inside`` and ``n_quotes`` per expiry of a fit with one set of parameters for
    all expiries (Heston), from its per-quote model vols (``model_iv``, ``quotes.iv``,
    ``quotes.symbol``, ``used``); ``inside``: share of used quotes whose model vol lies within
    the chain's ``[iv_bid, iv_ask]``."""
    q = getattr(fit, "quotes", None)
    model_iv = getattr(fit, "model_iv", None)
    used = getattr(fit, "used", None)
    symbols = getattr(q, "symbol", None)
    if q is None or model_iv is None or used is None or symbols is None:
        return []
    if "symbol" not in chain.quotes:
        return []
    by_symbol = chain.quotes.drop_duplicates("symbol").set_index("symbol")
    frame = pd.DataFrame(
        {
            "symbol": list(symbols),
            "err": np.asarray(model_iv, dtype=np.float64) - np.asarray(q.iv, dtype=np.float64),
            "model_iv": np.asarray(model_iv, dtype=np.float64),
            "used": np.asarray(used, dtype=bool),
        }
    )
    frame = frame[frame["used"] & frame["symbol"].isin(by_symbol.index)]
    if frame.empty:
        return []
    chain_rows = by_symbol.loc[frame["symbol"]]
    frame["expiry"] = chain_rows["expiry"].to_numpy()
    lo = chain_rows["iv_bid"].to_numpy(dtype=float) if "iv_bid" in chain_rows else np.nan
    hi = chain_rows["iv_ask"].to_numpy(dtype=float) if "iv_ask" in chain_rows else np.nan
    frame["inside"] = (frame["model_iv"] >= lo) & (frame["model_iv"] <= hi)
    rows: list[dict[str, Any]] = []
    for expiry, grp in frame.groupby("expiry", sort=True):
        err = grp["err"].to_numpy()
        when = pd.Timestamp(expiry)  # type: ignore[arg-type]
        rows.append(
            {"expiry": when, "metric": "rmse_iv", "value": float(np.sqrt(np.nanmean(err**2)))}
        )
        rows.append({"expiry": when, "metric": "inside", "value": float(grp["inside"].mean())})
        rows.append({"expiry": when, "metric": "n_quotes", "value": float(len(grp))})
    return rows


def _flatten_fit(model: str, fit: Any, chain: OptionChain, min_t: float) -> ModelResult:
    """Plain tables from a fit object (SurfaceFit-like or HestonFit-like, by duck typing)."""
    res = ModelResult(model=model, status="ok", fit=fit)
    params_rows: list[dict[str, Any]] = []
    diag_rows: list[dict[str, Any]] = []
    p = getattr(fit, "params", None)
    if isinstance(p, pd.DataFrame) and "expiry" in p.columns:
        for r in p.to_dict(orient="records"):
            expiry = pd.Timestamp(r["expiry"])
            for name, value in r.items():
                v = _numeric(value)
                if name == "expiry" or v is None:
                    continue
                target = diag_rows if name in _PER_EXPIRY_DIAGNOSTICS else params_rows
                key = "metric" if target is diag_rows else "param"
                target.append({"expiry": expiry, key: str(name), "value": v})
    elif p is not None:
        diag_rows.extend(_per_expiry_from_quotes(fit, chain))
        plain = (
            p.to_dict()
            if hasattr(p, "to_dict")
            else ({f.name: getattr(p, f.name) for f in fields(p)} if is_dataclass(p) else {})
        )
        for name, value in plain.items():
            v = _numeric(value)
            if v is not None:
                params_rows.append({"expiry": pd.NaT, "param": str(name), "value": v})
        for extra in ("feller_ratio",):
            v = _numeric(getattr(p, extra, None))
            if v is not None:
                diag_rows.append({"expiry": pd.NaT, "metric": extra, "value": v})
    opt = getattr(fit, "optimizer", None) or getattr(fit, "report", None)
    converged = bool(getattr(opt, "converged", True)) if opt is not None else None
    summary: dict[str, Any] = {
        "rmse_iv": _numeric(getattr(fit, "rmse_iv", None)),
        "converged": converged,
        "inside_share": _numeric(getattr(fit, "inside_share", None)),
        "n_used": None,
        "message": str(getattr(opt, "message", "")) if opt is not None else "",
    }
    n_used = getattr(fit, "n_used", None)
    if n_used is None and isinstance(getattr(fit, "quotes", None), pd.DataFrame):
        fq = fit.quotes
        n_used = int(fq["used"].sum()) if "used" in fq.columns else len(fq)
    summary["n_used"] = None if n_used is None else int(n_used)
    for name in ("rmse_iv", "inside_share", "n_used"):
        if summary[name] is not None:
            diag_rows.append({"expiry": pd.NaT, "metric": name, "value": float(summary[name])})
    if opt is not None:
        for name in (
            "iterations",
            "nfev",
            "n_fev",
            "cost",
            "n_starts",
        ):  # no timings: deterministic
            v = _numeric(getattr(opt, name, None))
            if v is not None:
                diag_rows.append({"expiry": pd.NaT, "metric": name, "value": v})
    if converged is not None:
        diag_rows.append({"expiry": pd.NaT, "metric": "converged", "value": float(converged)})
    res.params = pd.DataFrame(params_rows, columns=list(PARAM_COLUMNS))
    res.diagnostics = pd.DataFrame(diag_rows, columns=list(DIAG_COLUMNS))
    report = getattr(fit, "arbitrage", None)
    if report is not None:
        res.arbitrage, res.quote_arbitrage = _arbitrage_rows(report)
        free = getattr(report, "arbitrage_free", None)
        if free is not None:
            summary["arbitrage_free"] = bool(free)
    res.summary = summary
    surface = _surface_of(fit)
    if surface is not None:
        res.curves, res.term = _curves_and_term(surface, chain, _fit_expiries(fit, chain, min_t))
    return res


def fit_model(chain: OptionChain, model: str, fit_settings: FitSettings) -> ModelResult:
    """Fit one model to one chain; never raises (a failure is a ``failed`` result).

    The status is ``warning`` when the fit issued warnings, did not converge or its surface has
    static arbitrage; ``skipped`` when this volcal has no fit function for the model.
    """
    start = time.perf_counter()
    fitter = MODEL_FITTERS.get(model)
    if fitter is None:
        return ModelResult(model=model, status="skipped", error=f"volcal has no model {model!r}")
    settings = _fit_settings_record(model, fit_settings)
    try:
        with _captured() as caught:
            fit = fitter(chain, fit_settings)
            res = _flatten_fit(model, fit, chain, fit_settings.min_t_days / 365.0)
    except Exception as exc:
        log.warning(
            "%s %s %s: failed: %s: %s",
            chain.exchange,
            chain.underlying,
            model,
            type(exc).__name__,
            exc,
        )
        return ModelResult(
            model=model,
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            elapsed_s=time.perf_counter() - start,
            settings=settings,
        )
    res.warnings = list(dict.fromkeys(_warning_text(w) for w in caught))
    res.settings = settings
    if res.summary.get("converged") is False and not any("Convergence" in w for w in res.warnings):
        res.warnings.append(f"not converged: {res.summary.get('message', '')}")
    if res.summary.get("arbitrage_free") is False and not any(
        "Arbitrage" in w for w in res.warnings
    ):
        res.warnings.append("static arbitrage in the fitted surface")
    if res.warnings:
        res.status = "warning"
    res.elapsed_s = time.perf_counter() - start
    rmse = res.summary.get("rmse_iv")
    log.info(
        "%s %s %s: %s, rmse_iv %s, %.2f s",
        chain.exchange,
        chain.underlying,
        model,
        res.status,
        "n/a" if rmse is None else f"{rmse:.4f}",
        res.elapsed_s,
    )
    return res


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v) for k, v in d.items()
    }


# ---------------------------------------------------------------------------------------------
# market term structure


def market_term(chain: OptionChain) -> pd.DataFrame:
    """ATM vol and skew per expiry from the usable out-of-the-money mark IVs.

    ``atm_vol`` is :meth:`OptionChain.summary`'s ``atm_iv_mark`` (linear in ``k`` between the
    quotes around the money); ``atm_skew`` the least-squares slope ``d iv / d k`` over the
    (up to) two quotes on each side of ``k = 0`` (NaN without a quote on both sides).
    """
    from volcal.chain.core import group_positions, otm_marks

    table = chain.summary()
    q = chain.quotes
    codes, expiries = pd.factorize(q["expiry"], sort=True)
    k_all, iv_all = otm_marks(q, q["filter_reason"].to_numpy() == "")
    skews = np.full(len(expiries), np.nan)
    for i, idx in enumerate(group_positions(codes, len(expiries))):
        k, iv = k_all[idx], iv_all[idx]
        ok = np.isfinite(k) & np.isfinite(iv)
        k, iv = k[ok], iv[ok]
        below, above = np.flatnonzero(k < 0), np.flatnonzero(k >= 0)
        if below.size and above.size:
            pick = np.concatenate(
                [below[np.argsort(-k[below])][:2], above[np.argsort(k[above])][:2]]
            )
            kk, vv = k[pick], iv[pick]
            if np.ptp(kk) > 0:
                skews[i] = float(np.polyfit(kk, vv, 1)[0])
    rows = [
        {
            "expiry": r["expiry"],
            "t": float(r["t"]),
            "forward": float(r["forward"]),
            "atm_vol": float(r["atm_iv_mark"]),
            "atm_skew": skew,
        }
        for r, skew in zip(table.to_dict(orient="records"), skews, strict=True)
    ]
    return pd.DataFrame(rows, columns=list(TERM_COLUMNS))


# ---------------------------------------------------------------------------------------------
# margin


def standard_portfolios(
    chain: OptionChain, *, target_days: float = 30.0
) -> dict[str, pd.DataFrame]:
    """Standard test books on the expiry nearest ``target_days``: one contract each.

    * ``short_straddle``: short the call and the put at the strike nearest the forward;
    * ``short_strangle``: short the ~25-delta put and call;
    * ``risk_reversal``: long the ~25-delta call, short the ~25-delta put.

    The 25-delta strikes are at ``k = s (s/2 ± 0.6745)`` with ``s = atm_vol sqrt(t)`` (Black-76
    delta 0.25 at the ATM vol), snapped to the nearest listed strike with a usable quote.

    Returns
    -------
    dict of str to DataFrame
        ``symbol, quantity`` per book; empty when the chain has no usable expiry.
    """
    term = chain.summary()
    term = term[np.isfinite(term["atm_iv_mark"]) & (term["n_usable"] > 0)]
    if len(term) == 0:
        return {}
    row = term.iloc[int(np.argmin(np.abs(term["t"].to_numpy() * 365.0 - target_days)))]
    q = chain.quotes
    q = q[(q["expiry"] == row["expiry"]) & (q["filter_reason"] == "")]
    s = float(row["atm_iv_mark"]) * float(np.sqrt(row["t"]))

    def nearest(k_target: float, call: bool) -> str | None:
        side = q[q["call"] == call]
        if len(side) == 0:
            return None
        return str(side["symbol"].iloc[int(np.argmin(np.abs(side["k"].to_numpy() - k_target)))])

    atm_c, atm_p = nearest(0.0, True), nearest(0.0, False)
    c25 = nearest(s * (s / 2 + 0.6745), True)
    p25 = nearest(s * (s / 2 - 0.6745), False)
    books: dict[str, list[tuple[str | None, float]]] = {
        "short_straddle": [(atm_c, -1.0), (atm_p, -1.0)],
        "short_strangle": [(c25, -1.0), (p25, -1.0)],
        "risk_reversal": [(c25, 1.0), (p25, -1.0)],
    }
    return {
        name: pd.DataFrame({"symbol": [s for s, _ in legs], "quantity": [q for _, q in legs]})
        for name, legs in books.items()
        if all(sym is not None for sym, _ in legs)
    }


def read_portfolio(path: str | Path) -> pd.DataFrame:
    """A positions CSV: columns ``symbol`` and ``quantity`` (contracts, negative = short).

    Raises
    ------
    ConfigError
        Missing file, missing columns or non-numeric quantities.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"portfolio file not found: {p}")
    frame = pd.read_csv(p)
    missing = [c for c in ("symbol", "quantity") if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"portfolio {p}: missing column(s) {missing} (have {list(frame.columns)})"
        )
    qty = pd.to_numeric(frame["quantity"], errors="coerce")
    if qty.isna().any():
        bad = frame.loc[qty.isna(), "symbol"].astype(str).tolist()[:5]
        raise ConfigError(f"portfolio {p}: quantity is not a number for {bad}")
    return pd.DataFrame({"symbol": frame["symbol"].astype(str), "quantity": qty.astype(float)})


MIN_MARGIN_HISTORY_DAYS = 30.0
"""Days of history (first instant to the margined chain) the job needs to calibrate margin
parameters; with less it margins on the reference grid.

Why 30: the stress floor of the range and the vol shocks is the most volatile 30-day window of
the history, so a shorter history has no such window and no anti-procyclicality floor; the
EWMA (decay 0.94 per day, memory about 17 days) is still dominated by its seed before that.
The tail needs enough horizon returns as well: at least ``max(20, 1 / (1 - confidence))``
(100 at 99 %, so that the 99 % tail has an observation beyond it), which one snapshot a day
reaches after 100 days and the shared six-hourly history after 25."""


def _min_returns(confidence: float) -> int:
    """Horizon returns the calibration needs at ``confidence`` (see
    :data:`MIN_MARGIN_HISTORY_DAYS`)."""
    return max(20, int(np.ceil(1.0 / (1.0 - confidence) - 1e-9)))


def _store_history(store: str | Path, chain: OptionChain) -> tuple[pd.DataFrame, str]:
    """Quotes of the stored snapshots of the chain's exchange and currency strictly before
    its instant (the ``chains`` columns :func:`volcal.risk.history_stats_from_quotes` needs),
    and a description. Checks the span first, so a short store loads nothing."""
    from volcal.store import Store

    path = Path(store)
    if not path.exists():
        return pd.DataFrame(), f"no store at {path}"
    key = [chain.exchange, chain.underlying, chain.as_of.to_pydatetime()]
    with Store(path, read_only=True) as st:
        head = st.query(
            "SELECT min(as_of) AS first, count(*) AS n FROM snapshots "
            "WHERE exchange = ? AND currency = ? AND as_of < ?",
            key,
        )
        n = int(head["n"].iloc[0])
        if n == 0:
            return pd.DataFrame(), f"the store {path} holds no earlier snapshot"
        first = pd.Timestamp(head["first"].iloc[0])
        span = (chain.as_of - first) / pd.Timedelta(days=1)
        desc = f"{n} stored snapshot(s) in {path} from {first:%Y-%m-%d %H:%M}"
        if span < MIN_MARGIN_HISTORY_DAYS:
            return pd.DataFrame(), desc
        q = st.query(
            "SELECT as_of, expiry, t, k, call, iv_mark, iv_bid, iv_ask, forward, open_interest, "
            "index_price, exchange_fields['exchange_volume'] AS exchange_volume FROM chains "
            "WHERE exchange = ? AND currency = ? AND as_of < ? ORDER BY as_of",
            key,
        )
    vol = q["exchange_volume"]
    if len(vol) and isinstance(vol.iloc[0], (list, np.ndarray)):  # older DuckDB: a list
        q["exchange_volume"] = [float(v[0]) if len(v) else np.nan for v in vol]
    q["exchange_volume"] = pd.to_numeric(q["exchange_volume"], errors="coerce")
    return q, desc


def _snapshot_history(snapshot: str | Path, chain: OptionChain) -> tuple[pd.DataFrame, str]:
    """Quotes of the snapshot file's instants of the chain's currency strictly before its
    instant, and a description."""
    from volcal.data.snapshots import load_snapshot

    got = load_snapshot(snapshot, chain.underlying)
    chains = [c for c in (got if isinstance(got, list) else [got]) if c.as_of < chain.as_of]
    if not chains:
        return pd.DataFrame(), f"the snapshot file {snapshot} holds no earlier instant"
    frames = [c.quotes.assign(as_of=c.as_of) for c in chains]
    desc = f"{len(chains)} earlier instant(s) of {snapshot} from {chains[0].as_of:%Y-%m-%d %H:%M}"
    return pd.concat(frames, ignore_index=True), desc


def _margin_params(
    settings: MarginSettings,
    chain: OptionChain | None = None,
    *,
    store: str | Path | None = None,
    snapshot: str | Path | None = None,
) -> tuple[Any, str]:
    """Margin parameters for one chain and where they come from (the origin string); see
    :func:`_margin_calibration` (which also returns the history statistics)."""
    params, origin, _ = _margin_calibration(settings, chain, store=store, snapshot=snapshot)
    return params, origin


def _margin_calibration(
    settings: MarginSettings,
    chain: OptionChain | None = None,
    *,
    store: str | Path | None = None,
    snapshot: str | Path | None = None,
) -> tuple[Any, str, Any]:
    """Margin parameters for one chain, where they come from (the origin string) and the
    history statistics they were calibrated on (None for the reference grid).

    Calibrated (:func:`volcal.risk.calibrate_margin_params` at the configured confidence and
    horizon) on the history before the chain plus the chain itself, when that history spans
    at least :data:`MIN_MARGIN_HISTORY_DAYS` days and gives enough horizon returns; the history
    is the ``store``'s snapshots of the chain's exchange and currency, else the ``snapshot``
    file's earlier instants (a file of many instants). Otherwise, or when the calibration
    fails, the exchange-style reference grid (:func:`volcal.risk.deribit_pm_params`) at the
    configured horizon, and the origin says why. Never raises.

    Parameters
    ----------
    settings:
        Confidence (e.g. 0.99) and horizon (days).
    chain:
        The chain to margin (None: the reference grid).
    store:
        DuckDB history store (may not exist yet).
    snapshot:
        Snapshot file the chain was loaded from.

    Returns
    -------
    tuple
        ``(MarginParams, origin, HistoryStats or None)``; the origin starts with
        ``calibrated`` or ``reference grid``.
    """
    from volcal.risk import (
        calibrate_margin_params,
        deribit_pm_params,
        history_stats,
        history_stats_from_quotes,
    )

    def fallback(why: str) -> tuple[Any, str, Any]:
        params = replace(
            deribit_pm_params(horizon_days=settings.horizon_days), confidence=settings.confidence
        )
        return params, f"reference grid deribit_pm_params, not calibrated: {why}", None

    if chain is None:
        return fallback("no chain")
    need = f"needs {MIN_MARGIN_HISTORY_DAYS:g} days"
    sources: list[tuple[str, str | Path]] = []
    if store is not None:
        sources.append(("store", store))
    if snapshot is not None:
        sources.append(("snapshot", snapshot))
    if not sources:
        return fallback(f"no history (no store, not a snapshot file; {need})")
    reasons = []
    for kind, where in sources:
        try:
            if kind == "store":
                quotes, desc = _store_history(where, chain)
            else:
                quotes, desc = _snapshot_history(where, chain)
        except Exception as exc:  # an unreadable history is a reason to fall back, not fatal
            reasons.append(f"{kind} history unreadable ({type(exc).__name__}: {exc})")
            continue
        if len(quotes) == 0:
            reasons.append(f"{desc} ({need})")
            continue
        first = pd.Timestamp(quotes["as_of"].min())
        span = (chain.as_of - first) / pd.Timedelta(days=1)
        if span < MIN_MARGIN_HISTORY_DAYS:
            reasons.append(f"{desc}: {span:.1f} days ({need})")
            continue
        try:
            past = history_stats_from_quotes(quotes, chain.underlying).table
            today = history_stats([chain]).table
            from volcal.risk import HistoryStats

            stats = HistoryStats(pd.concat([past, today], ignore_index=True), chain.underlying)
            params = calibrate_margin_params(
                stats, settings.confidence, pd.Timedelta(days=settings.horizon_days)
            )
        except Exception as exc:
            reasons.append(f"calibration on {desc} failed ({type(exc).__name__}: {exc})")
            continue
        n_ret = int(params.diagnostics["n_returns"])
        if n_ret < _min_returns(settings.confidence):
            reasons.append(
                f"{desc}: {n_ret} horizon returns (< {_min_returns(settings.confidence)} at "
                f"confidence {settings.confidence:g})"
            )
            continue
        origin = (
            f"calibrated on {desc} to {chain.as_of:%Y-%m-%d %H:%M} ({span:.1f} days, {n_ret} "
            f"{settings.horizon_days:g}-day returns, confidence {settings.confidence:g}): "
            f"R {params.price_range:.1%}, vol shock up/down at 30 d "
            f"{params.vol_shock.up_30d:.1%}/{params.vol_shock.down_30d:.1%}, SSR {params.ssr:.2f}"
        )
        return params, origin, stats
    return fallback("; ".join(reasons))


def _fhs_scaled_params(
    params: Any,
    stats: Any,
    books: Mapping[str, pd.DataFrame],
    surface: Any,
    chain: OptionChain,
    settings: MarginSettings,
) -> tuple[Any, str]:
    """The calibrated parameters with the FHS confidence scale (:mod:`volcal.risk.fhs`) of
    the books margined on this chain (their pooled simulated losses under the EWMA-rescaled
    historical scenarios of ``stats``, today's surface, the SSR dynamic), and a note. The
    parameters unchanged (scale 1) and the reason when no scale can be computed."""
    from volcal.risk import SmileDynamics, margin, resolve_positions
    from volcal.risk.fhs import fhs_confidence_scale, historical_scenarios, scenario_losses

    try:
        scen = historical_scenarios(stats, pd.Timedelta(days=settings.horizon_days), ssr=params.ssr)
    except ValueError as exc:
        return params, f"confidence scale 1 (no FHS scenarios: {exc})"
    dyn = SmileDynamics(params.ssr, source="params.ssr")
    losses, risks, liqs = [], [], []
    for name, pos in books.items():
        try:
            resolved = resolve_positions(pos, chain)
            rep = margin(resolved, surface, chain, params, reference=False)
            unit = "coin" if resolved.account_currency == "coin" else "usd"
            losses.append(scenario_losses(resolved, surface, scen, dyn))
        except Exception as exc:  # the book's own margin step reports the error in full
            log.warning(
                "%s %s: book %s left out of the FHS confidence scale: %s",
                chain.exchange,
                chain.underlying,
                name,
                exc,
            )
            continue
        risks.append(float(rep.components["risk"][unit]))
        liqs.append(float(rep.components["liquidity_addon"][unit]))
    c = fhs_confidence_scale(losses, risks, liqs, settings.confidence)
    if not np.isfinite(c):
        return params, "confidence scale 1 (no book with a positive risk margin)"
    how = (
        f"FHS: {settings.confidence:g} quantile of (loss - liquidity) / risk over {len(risks)} "
        f"book(s) x {len(scen)} EWMA-rescaled historical {settings.horizon_days:g}-day scenarios"
    )
    scaled = replace(
        params,
        confidence_scale=float(c),
        sources={**params.sources, "confidence_scale": how},
        diagnostics={**params.diagnostics, "fhs_scenarios": len(scen), "fhs_books": len(risks)},
    )
    return scaled, f"confidence scale {c:.3f} ({how})"


def _margin_metrics(report: Any) -> pd.DataFrame:
    if is_dataclass(report):
        items = {f.name: getattr(report, f.name) for f in fields(report)}
    else:
        items = {k: v for k, v in vars(report).items() if not k.startswith("_")}
    rows = []
    for name, value in items.items():
        v = _numeric(value)
        if v is None:
            continue
        unit = "USD" if name.endswith("_usd") else ("coin" if name.endswith("_coin") else "")
        rows.append({"metric": name, "value": v, "unit": unit})
    components = items.get("components")
    if isinstance(components, Mapping):
        for name, by_unit in components.items():
            if isinstance(by_unit, Mapping):
                for unit, value in by_unit.items():
                    v = _numeric(value)
                    if v is not None:
                        u = "USD" if str(unit).lower() == "usd" else str(unit)
                        rows.append(
                            {"metric": f"{name}_{str(unit).lower()}", "value": v, "unit": u}
                        )
    return pd.DataFrame(rows, columns=["metric", "value", "unit"])


def _params_metrics(params: Any, calibrated: bool) -> pd.DataFrame:
    """The parameters the margin used, as metric rows (stored with the margin results)."""
    rows = [
        ("params_calibrated", 1.0 if calibrated else 0.0, ""),
        ("params_price_range", float(params.price_range), "relative"),
        ("params_vol_shock_up_30d", float(params.vol_shock.up_30d), "relative"),
        ("params_vol_shock_down_30d", float(params.vol_shock.down_30d), "relative"),
        ("params_ssr", float(params.ssr), ""),
        ("params_confidence_scale", float(getattr(params, "confidence_scale", 1.0)), ""),
    ]
    return pd.DataFrame(rows, columns=["metric", "value", "unit"])


def margin_step(
    chain: OptionChain,
    models: Sequence[ModelResult],
    portfolios: Mapping[str, pd.DataFrame],
    settings: MarginSettings,
    *,
    standard: Sequence[str] = (),
    store: str | Path | None = None,
    snapshot: str | Path | None = None,
) -> list[MarginResult]:
    """Margin every portfolio on the first successfully fitted surface; never raises.

    Portfolios whose symbols are all of another underlying are skipped. The parameters are
    calibrated once per chain from the history in ``store`` or ``snapshot`` when it is long
    enough (:func:`_margin_params`), else the reference grid; each result's ``detail`` says
    which and why, and its metrics carry ``params_calibrated`` (1/0), ``params_price_range``,
    ``params_vol_shock_up_30d``, ``params_vol_shock_down_30d``, ``params_ssr`` and
    ``params_confidence_scale``. Calibrated parameters get the FHS confidence scale of the
    books margined on the chain (:func:`_fhs_scaled_params`, from the same history); the
    reference grid keeps scale 1.
    """
    prefix = f"{chain.underlying}-"
    books = {
        name: pos
        for name, pos in portfolios.items()
        if pos["symbol"].astype(str).str.upper().str.startswith(prefix).any()
    }
    if not books:
        return []
    from volcal.risk import margin

    fitted = [m for m in models if m.status in ("ok", "warning") and _surface_of(m.fit) is not None]
    params: Any = None
    origin = ""
    calibrated = False
    if fitted:
        with _captured():
            params, origin, stats = _margin_calibration(
                settings, chain, store=store, snapshot=snapshot
            )
            calibrated = origin.startswith("calibrated")
            if calibrated:
                params, note = _fhs_scaled_params(
                    params, stats, books, _surface_of(fitted[0].fit), chain, settings
                )
                origin += f"; {note}"
        log.info("%s %s margin parameters: %s", chain.exchange, chain.underlying, origin)
    out = []
    for name, pos in books.items():
        is_std = name in standard
        if not fitted:
            out.append(
                MarginResult(name, "", "failed", "no fitted surface to margin on", standard=is_std)
            )
            continue
        model = fitted[0]
        try:
            with _captured():
                report = margin(pos, _surface_of(model.fit), chain, params)
            metrics = pd.concat(
                [_margin_metrics(report), _params_metrics(params, calibrated)], ignore_index=True
            )
            detail = f"params: {origin}"
            worst = getattr(report, "worst_scenario", None)
            if worst:
                detail += f"; worst scenario: {worst}"
            out.append(
                MarginResult(
                    name, model.model, "ok", metrics=metrics, standard=is_std, detail=detail
                )
            )
        except Exception as exc:
            log.warning("%s %s margin %s failed: %s", chain.exchange, chain.underlying, name, exc)
            out.append(
                MarginResult(
                    name, model.model, "failed", f"{type(exc).__name__}: {exc}", standard=is_std
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# one chain, end to end


def process_chain(
    chain: OptionChain,
    *,
    models: Sequence[str],
    fit: FitSettings | None = None,
    margin: MarginSettings | None = None,
    portfolios: Mapping[str, pd.DataFrame] | None = None,
    spec: InputSpec | None = None,
    source: SourceInfo | None = None,
    keep_fits: bool = True,
    margin_store: str | Path | None = None,
    margin_snapshot: str | Path | None = None,
) -> SnapshotResult:
    """Fit every model to one chain, check arbitrage and margin the portfolios.

    Never raises for a model's or a portfolio's failure: each is recorded in the result.

    Parameters
    ----------
    chain:
        The chain.
    models:
        Model names (see :data:`volcal.config.KNOWN_MODELS`).
    fit, margin:
        Settings (defaults when None).
    portfolios:
        Name → positions (``symbol, quantity``); the standard books are added when
        ``margin.standard_portfolios``.
    spec, source:
        Where the chain came from (recorded).
    keep_fits:
        Keep the fit objects in the result (False for plain, picklable results).
    margin_store, margin_snapshot:
        History the margin parameters are calibrated from (see :func:`margin_step`).
    """
    start = time.perf_counter()
    fit = fit or FitSettings()
    margin = margin or MarginSettings()
    spec = spec or InputSpec(chain.exchange, chain.underlying, "memory")
    result = SnapshotResult(spec=spec, source=source or SourceInfo(spec.kind), chain=chain)
    try:
        with _captured():
            result.market_term = market_term(chain)
    except Exception as exc:
        result.warnings.append(f"market term structure failed: {type(exc).__name__}: {exc}")
    for name in models:
        log.info("%s %s: fitting %s", chain.exchange, chain.underlying, name)
        result.models.append(fit_model(chain, name, fit))
    for m in result.models:
        if len(m.quote_arbitrage):
            n = len(m.quote_arbitrage)
            result.warnings.append(f"static arbitrage in the quotes: {n} violated spread(s)")
            break
    books = dict(portfolios or {})
    std: list[str] = []
    if margin.standard_portfolios:
        try:
            for name, pos in standard_portfolios(chain).items():
                books.setdefault(name, pos)
                std.append(name)
        except Exception as exc:
            result.warnings.append(f"standard portfolios failed: {type(exc).__name__}: {exc}")
    result.margins = margin_step(
        chain,
        result.models,
        books,
        margin,
        standard=std,
        store=margin_store,
        snapshot=margin_snapshot,
    )
    failed = any(m.status == "failed" for m in result.models) or any(
        g.status == "failed" for g in result.margins
    )
    warned = (
        bool(result.warnings)
        or any(m.status == "warning" for m in result.models)
        or any(m.status == "skipped" for m in result.models)
    )
    result.status = "failed" if failed else ("warning" if warned else "ok")
    if not keep_fits:
        result.without_fits()
    result.elapsed_s = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------
# the whole run


@dataclass(eq=False)
class JobOutcome:
    """What :func:`run_job` did: ``results``, the ``run`` record, the ``exit_code`` and the
    files it wrote."""

    results: list[SnapshotResult]
    run: Any
    exit_code: int
    written: list[Path] = field(default_factory=list)
    store_error: str = ""


def resolve_models(cfg: JobConfig) -> tuple[str, ...]:
    """The models to fit: the configured ones, or every available one."""
    return cfg.models if cfg.models is not None else available_models()


def run_job(
    cfg: JobConfig,
    *,
    command: str = "",
    progress: Callable[[str], None] | None = None,
) -> JobOutcome:
    """Run the daily job: load → fit → margin → store → report and ``summary.json``.

    Parameters
    ----------
    cfg:
        The resolved configuration.
    command:
        The command line, recorded with the run.
    progress:
        Called with a short description before each input is processed.

    Returns
    -------
    JobOutcome
        ``exit_code`` 0 (success), 1 (some input, model, portfolio or the store failed) or 3
        (completed with warnings under ``cfg.strict``).

    Raises
    ------
    ConfigError
        Nothing to load, missing files, bad portfolios (before anything is written).
    """
    from volcal.cli import EXIT_FAILURE, EXIT_OK, EXIT_WARNINGS
    from volcal.store import RunRecord, Store

    started = pd.Timestamp.now(tz="UTC")
    run_id = uuid.uuid4().hex
    specs = plan_inputs(cfg)
    portfolios = {name: read_portfolio(path) for name, path in cfg.portfolios}
    models = resolve_models(cfg)
    out = Path(cfg.out)
    log.info("run %s: %d input(s), models %s", run_id[:8], len(specs), ", ".join(models) or "none")
    results: list[SnapshotResult] = []
    for spec in specs:
        if progress is not None:
            progress(spec.label)
        t0 = time.perf_counter()
        try:
            chain, source = load_input(spec, tape_dir=out / "tapes")
        except Exception as exc:
            log.error("%s: loading failed: %s: %s", spec.label, type(exc).__name__, exc)
            results.append(
                SnapshotResult(
                    spec=spec,
                    source=SourceInfo(spec.kind, str(spec.path) if spec.path else None),
                    status="load_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    elapsed_s=time.perf_counter() - t0,
                )
            )
            continue
        log.info("%s: %d options at %s", spec.label, len(chain), chain.as_of.isoformat())
        results.append(
            process_chain(
                chain,
                models=models,
                fit=cfg.fit,
                margin=cfg.margin,
                portfolios=portfolios,
                spec=spec,
                source=source,
                margin_store=cfg.store_path,
                margin_snapshot=spec.path if spec.kind == "snapshot" else None,
            )
        )
    errors: list[dict[str, str]] = []
    warns: list[dict[str, str]] = []
    for r in results:
        e, w = r.problems()
        errors.extend(e)
        warns.extend(w)
    stored = [r for r in results if r.chain is not None]
    n_failed = sum(r.chain is None for r in results)
    status = "failed" if not stored else ("partial" if errors else ("warnings" if warns else "ok"))
    exit_code = EXIT_FAILURE if errors else (EXIT_WARNINGS if cfg.strict and warns else EXIT_OK)
    run = RunRecord(
        run_id=run_id,
        kind="run",
        started_at=started,
        finished_at=pd.Timestamp.now(tz="UTC"),
        status=status,
        exit_code=exit_code,
        command=command,
        config=cfg.to_dict(),
        config_hash=cfg.config_hash(),
        sources=[r.source.to_dict() for r in results],
        n_snapshots=len(results),
        n_failed=n_failed,
        errors=errors,
        warnings=warns,
    )
    outcome = JobOutcome(results=results, run=run, exit_code=exit_code)
    store_path = cfg.store_path
    history: dict[str, Any] = {}
    if store_path is not None and stored:
        try:
            with Store(store_path) as store:
                store.write(run, [r.to_tables() for r in stored])
                from volcal.report import history_from_store

                history = history_from_store(store, sorted({r.currency for r in stored}))
            outcome.written.append(store_path)
            log.info("stored run %s in %s", run_id[:8], store_path)
        except Exception as exc:
            outcome.store_error = f"{type(exc).__name__}: {exc}"
            log.error("store %s: %s", store_path, outcome.store_error)
            errors.append(
                {"exchange": "", "currency": "", "model": "store", "message": outcome.store_error}
            )
            outcome.exit_code = EXIT_FAILURE
    if stored:
        outcome.written.extend(write_outputs(cfg, outcome, history))
    return outcome


def write_outputs(cfg: JobConfig, outcome: JobOutcome, history: Mapping[str, Any]) -> list[Path]:
    """Chain parquet files, ``summary.json`` and ``report.html`` (each written atomically)."""
    import json

    from volcal.report import atomic_write_text

    out = Path(cfg.out)
    written: list[Path] = []
    for r in outcome.results:
        if r.chain is not None:
            written.append(r.chain.to_parquet(out / f"chain_{r.exchange}_{r.currency}.parquet"))
    run = outcome.run
    summary = {
        "run": {
            "run_id": run.run_id,
            "status": run.status,
            "exit_code": outcome.exit_code,
            "started_at": run.started_at.isoformat(),
            "finished_at": run.finished_at.isoformat() if run.finished_at is not None else None,
            "config_hash": run.config_hash,
            "store": str(cfg.store_path) if cfg.store_path is not None else None,
            "store_error": outcome.store_error or None,
            "versions": dict(run.versions),
        },
        "chains": [r.to_summary() for r in outcome.results],
        "errors": list(run.errors)
        + ([{"model": "store", "message": outcome.store_error}] if outcome.store_error else []),
        "warnings": list(run.warnings),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    written.append(out / "summary.json")
    if cfg.report:
        from volcal.report import write_report

        written.append(write_report(out / "report.html", outcome.results, summary, history))
    return written
